//! `bench_alloc --ops`: a few calls named on the command line, then one heap dump (the
//! book's small examples). Malformed or inconsistent operations are refused before the
//! first call.

use assert_cmd::Command;
use harness::phases;
use harness::runner::Run;
use predicates::prelude::*;

fn bench_alloc(ops: &str) -> assert_cmd::assert::Assert {
    Command::cargo_bin("bench_alloc")
        .unwrap()
        .args(["--ops", ops])
        .assert()
}

#[test]
fn malformed_or_inconsistent_ops_are_refused() {
    for (ops, complaint) in [
        ("a 0", "cannot read \"a 0\""),
        ("a 0 64 1", "cannot read"),
        ("a 16 64", "cannot read"),
        ("a 0 64,, f 0", "cannot read \"\""),
        ("x 0 1", "cannot read"),
        ("f 0", "block 0 is freed but not allocated"),
        ("a 0 64, f 0, f 0", "block 0 is freed but not allocated"),
        ("r 1 10", "block 1 is resized before it was allocated"),
        (
            "a 2 8, a 2 8",
            "block 2 is allocated again before it was freed",
        ),
    ] {
        bench_alloc(ops)
            .code(2)
            .stderr(predicate::str::contains(complaint));
    }
    Command::cargo_bin("bench_alloc")
        .unwrap()
        .args(["--ops", "a 0 1", "--small", "10"])
        .assert()
        .code(2);
}

#[test]
fn on_glibc_the_calls_run_and_there_is_no_heap_to_show() {
    bench_alloc("a 0 64, r 0 1000, a 1 5, f 0, f 1")
        .success()
        .stdout(predicate::str::contains("no heap_dump()"));
}

/// The heap holds the operations' blocks and nothing else: phase 2 splits the freed
/// 128-byte block for the 32 (the chapter's seed exercise, extended).
#[test]
fn the_dump_shows_only_the_calls_blocks_phase2() {
    phases::build_all().expect("the phases build");
    let outcome = Run::new(phases::bench_alloc_release())
        .args(["--ops", "a 0 64, a 1 16, a 2 128, a 3 16, f 0, f 2, a 4 32"])
        .preload(Some(&phases::phase(2).unwrap().lib_path()))
        .run()
        .expect("bench_alloc starts");
    assert!(outcome.succeeded(), "{outcome}");
    assert_eq!(
        String::from_utf8_lossy(&outcome.stderr),
        "[BLOCK 0x8 80 FREE]\n[BLOCK 0x58 32 USED]\n[BLOCK 0x78 48 USED]\n\
         [BLOCK 0xa8 96 FREE]\n[BLOCK 0x108 32 USED]\n\
         [stats] in_use=112 free=176 fragmentation=45%\n"
    );
}
