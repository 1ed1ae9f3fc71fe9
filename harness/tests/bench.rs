//! The benchmark report generator, on a tiny run (`--quick`): every allocator gets a
//! row in every table and a column in the summary, glibc is the 1.00x reference, the
//! standard workloads run at one thread and at one per processor, traces report
//! utilization, the charts are written, and the report names the command that made it.

use assert_cmd::Command;

#[test]
fn a_quick_run_writes_a_complete_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("benchmarks.md");
    Command::cargo_bin("harness")
        .unwrap()
        .args(["bench", "--quick", "--out"])
        .arg(&out)
        .assert()
        .success();
    let report = std::fs::read_to_string(&out).unwrap();
    assert!(report.starts_with("# Benchmarks\n"), "{report}");
    assert!(
        report.contains("`cargo run --release -p harness --bin harness -- bench --reps 1 --quick`")
    );
    let workloads = harness::bench::workloads(true);
    let sections: Vec<&str> = report.split("\n## ").skip(1).collect();
    assert!(sections[0].starts_with("Summary: time"), "{}", sections[0]);
    assert!(
        sections[1].starts_with("Summary: peak RSS"),
        "{}",
        sections[1]
    );
    let tables = &sections[2..];
    assert_eq!(tables.len(), workloads.len(), "{report}");
    for (name, _) in harness::bench::STANDARD {
        for threads in [1, harness::bench::processors()] {
            let label = format!("{name}, {threads} thread");
            assert!(
                tables.iter().any(|t| t.starts_with(&label)),
                "no table for {label}"
            );
        }
    }
    let geomean = sections[0]
        .lines()
        .find(|l| l.starts_with("| **geometric mean** | 1.00x |"));
    assert!(geomean.is_some(), "{}", sections[0]);
    for table in tables {
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
    let traces: Vec<&&str> = tables.iter().filter(|t| t.starts_with("trace ")).collect();
    assert!(traces.len() >= 2, "a malloc-lab trace and a recorded one");
    for table in traces {
        assert!(table.contains("utilization"), "{table}");
    }
    assert!(!report.contains("Runs that failed"), "{report}");
    for chart in ["ratios.svg", "threads.svg"] {
        let svg = std::fs::read_to_string(dir.path().join("src/bench").join(chart)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("glibc"), "{chart}");
        assert!(report.contains(&format!("](src/bench/{chart})")), "{chart}");
    }
}

#[test]
fn only_runs_a_subset() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("benchmarks.md");
    Command::cargo_bin("harness")
        .unwrap()
        .args(["bench", "--quick", "--only", "cache-thrash,phase2", "--out"])
        .arg(&out)
        .assert()
        .success();
    let report = std::fs::read_to_string(&out).unwrap();
    let sections: Vec<&str> = report.split("\n## ").skip(1).collect();
    assert_eq!(
        sections.len(),
        2 + 2,
        "the two summaries and cache-thrash at two thread counts:\n{report}"
    );
    assert!(report.contains("| phase2-split-coalesce | "), "{report}");
    assert!(
        report.contains("| glibc | "),
        "glibc always runs:\n{report}"
    );
    assert!(!report.contains("phase1"), "{report}");
    assert!(report.contains("--only cache-thrash,phase2"), "{report}");
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["bench", "--reps", "0"][..],
        &["bench", "--only", "no-such-workload"],
        &["bench", "--timeout", "soon"],
    ] {
        Command::cargo_bin("harness")
            .unwrap()
            .args(args)
            .assert()
            .code(2);
    }
}

/// Repetition k of a trace replays its variant k, under every allocator alike, so that
/// the utilization in the report is a median over layouts, not one draw.
#[test]
fn each_repetition_of_a_trace_replays_its_own_variant() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("benchmarks.md");
    let output = Command::cargo_bin("harness")
        .unwrap()
        .args([
            "bench",
            "--quick",
            "--reps",
            "2",
            "--only",
            "trace random,phase2",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{progress}");
    for expected in [
        "rep 1 trace random, 1 thread (variant 0) on glibc",
        "rep 1 trace random, 1 thread (variant 0) on phase2-split-coalesce",
        "rep 2 trace random, 1 thread (variant 1) on glibc",
        "rep 2 trace random, 1 thread (variant 1) on phase2-split-coalesce",
    ] {
        assert!(
            progress.contains(expected),
            "no {expected:?} in\n{progress}"
        );
    }
}
