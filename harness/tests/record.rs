//! `harness record` (the `malloc-recorder` preload) and the replay of what it writes:
//! threads are told apart, a child of `fork` writes a file of its own, and the trace
//! replays under glibc and every phase with its contents intact.

use assert_cmd::Command;
use harness::phases;
use harness::threaded_trace::ThreadedTrace;

fn record(dir: &std::path::Path, name: &str, command: &[&str]) -> (ThreadedTrace, String) {
    let out = dir.join(name);
    let output = Command::cargo_bin("harness")
        .unwrap()
        .args(["record", "--out"])
        .arg(&out)
        .arg("--")
        .args(command)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    (ThreadedTrace::parse(&text).unwrap(), stderr)
}

#[test]
fn threads_are_recorded_and_replayed() {
    phases::build_all().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bench_alloc = phases::bench_alloc_release();
    let bench_alloc = bench_alloc.to_str().unwrap();
    let (trace, _) = record(
        dir.path(),
        "threads.trc",
        &[
            bench_alloc,
            "xmalloc",
            "--threads",
            "2",
            "--iterations",
            "20",
        ],
    );
    // The main thread, a producer and a consumer: the consumer frees every block the
    // producer allocated.
    assert!(trace.threads >= 3, "{} threads", trace.threads);
    let remote_frees = trace
        .steps
        .iter()
        .filter(|s| s.call == harness::threaded_trace::Call::Free)
        .filter(|free| {
            trace
                .steps
                .iter()
                .rfind(|s| s.id == free.id && s.call != harness::threaded_trace::Call::Free)
                .is_some_and(|alloc| alloc.thread != free.thread)
        })
        .count();
    assert!(remote_frees >= 20 * 100, "{remote_frees} remote frees");
    let path = dir.path().join("threads.trc");
    let mut libs = vec![None];
    libs.extend(phases::PHASES.iter().map(|p| Some(p.lib_path())));
    for lib in libs {
        let mut replay = Command::new(phases::bench_alloc_release());
        if let Some(lib) = &lib {
            replay.env("LD_PRELOAD", lib);
        }
        let output = replay.arg("--trace").arg(&path).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{lib:?}: {stdout}");
        assert!(
            stdout.starts_with("trace threads.trc: ")
                && stdout.contains(" threads, ")
                && stdout.trim_end().ends_with("; ok"),
            "{lib:?}: {stdout}"
        );
    }
}

#[test]
fn each_process_writes_its_own_file() {
    let dir = tempfile::tempdir().unwrap();
    // sh forks, and the child runs `ls`: two processes (at least), each its own file.
    let (trace, summary) = record(
        dir.path(),
        "sh.trc",
        &["sh", "-c", "ls / > /dev/null; true"],
    );
    assert!(!trace.steps.is_empty());
    let processes: usize = summary
        .split(" processes recorded")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(processes >= 2, "{summary}");
}

#[test]
fn a_failing_command_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("false.trc");
    Command::cargo_bin("harness")
        .unwrap()
        .args(["record", "--out"])
        .arg(&out)
        .args(["--", "false"])
        .assert()
        .code(2);
    assert!(!out.exists());
}
