//! Drop-in fidelity: behaviour programs written for glibc's malloc rely on, checked
//! under every phase and, as the reference, under glibc itself (issue 10).

use harness::phases::{self, PHASES};
use harness::runner::{Ending, Outcome, Run};
use std::time::Duration;

fn alloc_probe() -> std::path::PathBuf {
    phases::target_dir().join("release").join("alloc_probe")
}

/// `alloc_probe probe` under `lib` (glibc's malloc when `None`).
fn probe(lib: Option<&std::path::Path>, probe: &str, env: &[(&str, &str)]) -> Outcome {
    phases::build_all().expect("the phases build");
    // No probe takes long; a hang (the fork scenario's failure) ends at this limit.
    let mut run = Run::new(alloc_probe())
        .arg(probe)
        .preload(lib)
        .timeout(Duration::from_secs(30));
    for (key, value) in env {
        run = run.env(key, value);
    }
    run.run().expect("alloc_probe starts")
}

/// The probe passes under glibc and under every phase.
fn passes_everywhere(name: &str, env: &[(&str, &str)]) {
    passes_from_phase(1, name, env);
}

/// The probe passes under glibc and under every phase from `first` on.
fn passes_from_phase(first: u32, name: &str, env: &[(&str, &str)]) {
    let reference = probe(None, name, env);
    assert!(
        reference.succeeded(),
        "under glibc: {reference}\n{}",
        reference.stdout_text()
    );
    for phase in PHASES.iter().filter(|phase| phase.number >= first) {
        let outcome = probe(Some(&phase.lib_path()), name, env);
        assert!(
            outcome.succeeded(),
            "phase {}: {outcome}\n{}",
            phase.number,
            outcome.stdout_text()
        );
    }
}

#[test]
fn posix_memalign_leaves_enomem_in_errno_as_glibc_does() {
    passes_everywhere("posix-memalign-errno", &[]);
}

/// glibc's tst-malloc-fork-deadlock: fork, getline and fflush(NULL) in threads for 3 s.
#[test]
fn fork_beside_stdio_never_hangs() {
    passes_everywhere("fork-stdio", &[]);
}

/// Every parameter glibc's mallopt accepts is accepted; M_PERTURB fills as glibc's.
#[test]
fn mallopt_accepts_what_glibc_accepts() {
    passes_everywhere("mallopt", &[]);
}

/// mallinfo2 and mallinfo give the allocator's own figures, not glibc's idle arena's.
#[test]
fn mallinfo_reports_the_allocators_figures() {
    passes_everywhere("mallinfo", &[]);
}

/// malloc_trim(0) gives the free top of the heap back at once. Phase 1 never gives
/// memory back (chapter 1's limitation), so its malloc_trim answers 0, truthfully.
#[test]
fn malloc_trim_gives_memory_back_from_phase_2() {
    passes_from_phase(2, "malloc-trim", &[]);
}

/// `tool args` under phase 3 with `env`.
fn phase3(tool: &str, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    phases::build_all().expect("the phases build");
    let mut run = Run::new(phases::target_dir().join("release").join(tool))
        .args(args)
        .preload(Some(&phases::phase(3).unwrap().lib_path()))
        .timeout(Duration::from_secs(60));
    for (key, value) in env {
        run = run.env(key, value);
    }
    run.run().expect("the tool starts")
}

fn last_stderr_line(outcome: &Outcome) -> String {
    let stderr = outcome.stderr_text();
    stderr.lines().last().unwrap_or("").to_string()
}

/// `MALLOC_DEBUG=checks`: the guards, quarantine and full checks without the log, so a
/// program that reads its own stderr is not disturbed; a fault is still reported.
#[test]
fn debug_checks_print_nothing_unless_they_find_a_fault() {
    let quiet = phase3(
        "bench_alloc",
        &["--small", "2000"],
        &[("MALLOC_DEBUG", "checks")],
    );
    assert!(quiet.succeeded(), "{quiet}");
    assert_eq!(quiet.stderr_text(), "", "nothing on stderr without a fault");
    let caught = phase3(
        "bench_alloc",
        &["--overflow"],
        &[("MALLOC_DEBUG", "checks")],
    );
    assert_eq!(caught.exit_code(), Some(3), "{caught}");
    assert_eq!(
        caught.stderr_text(),
        "error: heap corruption detected at 0x20: trailing canary overwritten (buffer overflow)\n"
    );
}

/// `MALLOC_DEBUG_LOG=FILE`: the log goes to the file, and stderr keeps only what the
/// program itself writes.
#[test]
fn the_debug_log_goes_to_the_file_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("malloc.log");
    let outcome = phase3(
        "bench_alloc",
        &["--small", "100"],
        &[
            ("MALLOC_DEBUG", "1"),
            ("MALLOC_DEBUG_SEED", "42"),
            ("MALLOC_DEBUG_LOG", log.to_str().unwrap()),
        ],
    );
    assert!(outcome.succeeded(), "{outcome}");
    assert!(
        !outcome.stderr_text().contains("[alloc]"),
        "{}",
        outcome.stderr_text()
    );
    let text = std::fs::read_to_string(&log).expect("the log file exists");
    assert!(
        text.lines().filter(|l| l.starts_with("[alloc] ")).count() >= 100,
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("[free ] ")), "{text}");
}

/// With the full check spaced out, damage done after the last periodic check is
/// reported by a last check when the program exits.
#[test]
fn a_last_check_at_exit_reports_damage_after_the_last_periodic_one() {
    let env = [
        ("MALLOC_DEBUG", "checks"),
        ("MALLOC_CHECK_EVERY", "1000000"),
    ];
    let outcome = phase3("alloc_probe", &["overflow-before-exit"], &env);
    assert_eq!(outcome.exit_code(), Some(3), "{outcome}");
    let line = last_stderr_line(&outcome);
    assert!(
        line.starts_with("error: heap corruption detected at 0x")
            && line.ends_with(": trailing canary overwritten (buffer overflow)"),
        "{line}"
    );
}

/// hardened_malloc's write_after_free_large_reuse. With the threshold fixed (so the new
/// block is a mapping too), the write through the dangling pointer lands in the new
/// block without the debug mode; with it, freed mappings stay reserved without
/// access, and the write faults.
#[test]
fn a_write_into_a_freed_large_block_faults_in_debug_mode() {
    let fixed = ("MALLOC_MMAP_THRESHOLD_", "131072");
    let caught = phase3(
        "alloc_probe",
        &["write-after-free-large-reuse"],
        &[fixed, ("MALLOC_DEBUG", "checks")],
    );
    assert_eq!(caught.ending, Ending::Signalled(libc::SIGSEGV), "{caught}");
    let unseen = phase3("alloc_probe", &["write-after-free-large-reuse"], &[fixed]);
    assert_eq!(unseen.exit_code(), Some(1), "{unseen}");
}
