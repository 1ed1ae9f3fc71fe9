//! The `harness` command line: `harness`, `harness --help` and `harness help` list every
//! subcommand with one line each; every subcommand answers `-h` and `--help` with its
//! usage; an unknown subcommand or argument prints usage on stderr and exits 2.
//! The subcommands are read from `harness help` itself, so a new one is covered here
//! the day it is added.

use assert_cmd::Command;

fn harness(args: &[&str]) -> std::process::Output {
    Command::cargo_bin("harness")
        .expect("the harness binary")
        .args(args)
        .output()
        .expect("harness runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The subcommands `harness help` lists: the first word of each indented line.
fn subcommands() -> Vec<String> {
    let output = harness(&["help"]);
    (text(&output.stdout).lines())
        .filter(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next().map(String::from))
        .collect()
}

#[test]
fn no_arguments_help_and_dash_dash_help_list_every_subcommand_alike() {
    let listing = harness(&["help"]);
    assert!(listing.status.success());
    let listing = text(&listing.stdout);
    for args in [&[][..], &["--help"], &["-h"]] {
        let output = harness(args);
        assert!(output.status.success(), "harness {args:?}");
        assert_eq!(text(&output.stdout), listing, "harness {args:?}");
    }
    let names = subcommands();
    for expected in [
        "run",
        "demo",
        "phases",
        "bench",
        "grade",
        "pictures",
        "phase-diff",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing:\n{listing}"
        );
    }
    // One line each: a name, then a summary on the same line.
    for line in listing.lines().filter(|line| line.starts_with("  ")) {
        assert!(line.split_whitespace().count() > 2, "no summary: {line:?}");
    }
}

#[test]
fn every_subcommand_answers_help_with_its_usage() {
    for name in subcommands() {
        for flag in ["-h", "--help"] {
            let output = harness(&[&name, flag]);
            let stdout = text(&output.stdout);
            assert!(output.status.success(), "harness {name} {flag}: {output:?}");
            assert!(
                stdout.starts_with(&format!("usage: harness {name}")),
                "harness {name} {flag}:\n{stdout}"
            );
        }
        let output = harness(&["help", &name]);
        assert!(output.status.success());
        assert!(text(&output.stdout).starts_with(&format!("usage: harness {name}")));
    }
}

#[test]
fn every_subcommand_refuses_an_unknown_argument_with_its_usage() {
    for name in subcommands() {
        let output = harness(&[&name, "--no-such-option"]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "harness {name}: {stderr}");
        assert!(
            stderr.contains(&format!("usage: harness {name}")),
            "harness {name} --no-such-option:\n{stderr}"
        );
    }
}

#[test]
fn an_unknown_subcommand_prints_the_list_and_exits_2() {
    for args in [
        &["no-such-subcommand"][..],
        &["help", "no-such-subcommand"],
        &["--nope"],
    ] {
        let output = harness(args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "harness {args:?}: {stderr}");
        assert!(stderr.contains("usage: harness SUBCOMMAND"), "{stderr}");
        assert!(stderr.contains("  run "), "{stderr}");
    }
}

/// After `--`, `-h` belongs to the command being run, not to `harness run`.
#[test]
fn help_after_the_double_dash_belongs_to_the_command() {
    let output = harness(&["run", "--lib", "/no/such.so", "--", "ls", "--help"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/no/such.so does not exist"), "{stderr}");
}

#[test]
fn phases_lists_the_registry_for_people_and_for_scripts() {
    let listing = harness(&["phases"]);
    assert!(listing.status.success());
    let listing = text(&listing.stdout);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), harness::phases::PHASES.len(), "{listing}");
    for (line, phase) in lines.iter().zip(harness::phases::PHASES) {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(
            fields,
            [&phase.number.to_string(), phase.package, phase.title]
        );
    }
    let entry = harness(&["phases", "1"]);
    assert!(entry.status.success());
    assert_eq!(text(&entry.stdout), harness::phases::PHASES[0].describe());
    let missing = harness(&["phases", "99"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("no phase \"99\": the phases are 1, "));
}

#[test]
fn gen_traces_writes_each_shape_and_seed_as_the_library_generates_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().expect("a UTF-8 temporary path");
    let args = [
        "gen-traces",
        "--shapes",
        "pow2,fifo_window",
        "--seeds",
        "2",
        "--first-seed",
        "7",
        "--out",
        out,
    ];
    let output = harness(&args);
    assert!(output.status.success(), "{output:?}");
    let mut written: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "fifo_window_7.rep",
            "fifo_window_8.rep",
            "pow2_7.rep",
            "pow2_8.rep"
        ]
    );
    let shape = harness::generate::shape("pow2").unwrap();
    let file = std::fs::read_to_string(dir.path().join("pow2_8.rep")).unwrap();
    assert_eq!(file, shape.generate(8).to_text());
    let wrong = harness(&["gen-traces", "--shapes", "pow3", "--out", out]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(text(&wrong.stderr).contains("the shapes: fifo_window,steady_churn,"));
}
