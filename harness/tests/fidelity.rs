//! Drop-in fidelity: behaviour programs written for glibc's malloc rely on, checked
//! under every phase and, as the reference, under glibc itself (issue 10).

use harness::phases::{self, PHASES};
use harness::runner::{Outcome, Run};
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
