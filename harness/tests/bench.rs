//! The benchmark report generator, on a tiny run: every allocator gets a row in every
//! table, glibc is the 1.00x reference, traces report utilization, and the report
//! names the command that made it.

use assert_cmd::Command;

#[test]
fn a_quick_run_writes_a_complete_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("benchmarks.md");
    Command::cargo_bin("harness")
        .unwrap()
        .args(["bench", "--quick", "--reps", "1", "--out"])
        .arg(&out)
        .assert()
        .success();
    let report = std::fs::read_to_string(&out).unwrap();
    assert!(report.starts_with("# Benchmarks\n"), "{report}");
    assert!(
        report.contains("`cargo run --release -p harness --bin harness -- bench --reps 1 --quick`")
    );
    let tables: Vec<&str> = report.split("\n## ").skip(1).collect();
    assert_eq!(tables.len(), 3, "small, threads and one trace:\n{report}");
    for table in &tables {
        assert!(
            table.contains("\n| glibc | ") && table.contains(" | 1.00x | "),
            "glibc is the reference:\n{table}"
        );
        for phase in harness::phases::PHASES {
            let row = table
                .lines()
                .find(|l| l.starts_with(&format!("| {} | ", phase.package)));
            let row = row.unwrap_or_else(|| panic!("no row for {} in:\n{table}", phase.package));
            assert!(!row.contains("failed"), "{row}");
        }
    }
    assert!(
        tables[2].starts_with("trace random") && tables[2].contains("utilization"),
        "{}",
        tables[2]
    );
    assert!(!report.contains("Runs that failed"), "{report}");
}

#[test]
fn bad_arguments_exit_2() {
    Command::cargo_bin("harness")
        .unwrap()
        .args(["bench", "--reps", "0"])
        .assert()
        .code(2);
}
