//! Golden heap dumps: bench_alloc's demo under each registered phase, with the debug
//! log on and a fixed seed, snapshotted into the phase's golden folder (`golden/phaseN/`,
//! from the registry). The same demo runs on every phase, so
//! `diff golden/phase1/demo.snap golden/phase2/demo.snap` shows what a chapter changed.
//! A new phase's folder is made on its first run (`cargo insta review`).
//!
//! Review a change with `cargo insta review`; a golden file changes only on purpose.

use harness::phases::{self, Phase};
use harness::runner::Run;

fn demo_transcript(phase: Phase, debug: bool) -> String {
    phases::build_all().expect("the phases build");
    let lib = phase.lib_path();
    let outcome = Run::new(phases::bench_alloc_release())
        .preload(Some(&lib))
        .env("MALLOC_DEBUG", if debug { "1" } else { "0" })
        .env("MALLOC_DEBUG_SEED", "42")
        .merge_stderr()
        .run()
        .expect("bench_alloc starts");
    assert!(
        outcome.succeeded(),
        "the demo failed under {}: {outcome}\n{}",
        phase.package,
        outcome.stdout_text()
    );
    outcome.stdout_text()
}

fn snapshot(phase: Phase, name: &str, transcript: &str) {
    insta::with_settings!({
        snapshot_path => phases::workspace_root().join(phase.golden),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, transcript);
    });
}

/// The demo's first dump is an empty heap: nothing but the demo allocates before it,
/// so no toolchain or dependency update can change these files.
fn starts_empty(transcript: &str) {
    let first_dump = transcript.split("== 2.").next().unwrap_or("");
    assert!(
        first_dump.contains("[stats] in_use=0 free=0 fragmentation=0%")
            && !first_dump.contains("[BLOCK"),
        "something allocated before the demo's first call:\n{first_dump}"
    );
}

/// Runs `test` on each phase under test (every registered one, or the one
/// `HARNESS_PHASE` names), each in a thread of its own so that every phase's failure is
/// reported, not only the first.
fn on_each_phase(test: fn(Phase)) {
    let failed: Vec<&str> = std::thread::scope(|scope| {
        let runs: Vec<_> = (phases::under_test().into_iter())
            .map(|phase| (phase, scope.spawn(move || test(phase))))
            .collect();
        (runs.into_iter())
            .filter_map(|(phase, run)| run.join().is_err().then_some(phase.package))
            .collect()
    });
    assert!(failed.is_empty(), "failed under {failed:?} (see above)");
}

#[test]
fn each_phase_demo_with_debug_log() {
    on_each_phase(|phase| {
        let transcript = demo_transcript(phase, true);
        starts_empty(&transcript);
        snapshot(phase, "demo-debug", &transcript);
    });
}

#[test]
fn each_phase_demo_without_debug_log() {
    on_each_phase(|phase| {
        let transcript = demo_transcript(phase, false);
        assert!(
            !transcript.contains("[alloc]"),
            "the debug log is on under {} although MALLOC_DEBUG=0",
            phase.package
        );
        starts_empty(&transcript);
        snapshot(phase, "demo", &transcript);
    });
}

/// Step 8's 256 KiB block is a mapping of its own from phase 3 on: the dump lists it
/// after the brk heap's blocks as `[MMAP #1 …]` (262144 bytes: 64 whole pages; with the
/// debug mode's 24 bytes of guards, one page more).
#[test]
fn phase3_demo_shows_the_large_block_as_a_mapping() {
    let phase = phases::phase(3).expect("phase 3 is registered");
    for (debug, len) in [(true, 266_240), (false, 262_144)] {
        let transcript = demo_transcript(phase, debug);
        let step8 = transcript
            .split("== 8.")
            .nth(1)
            .and_then(|rest| rest.split("== 9.").next())
            .unwrap_or("");
        assert!(
            step8.contains(&format!("[MMAP #1 {len} USED]")),
            "step 8 shows no mapping of {len} bytes:\n{step8}"
        );
    }
}

/// Phase 4's dumps end with its bins: one `[BIN …]` line per size class that holds
/// free blocks, and in every dump of the demo they add up to the free blocks listed.
#[test]
fn phase4_demo_bins_add_up_to_the_free_blocks() {
    let phase = phases::phase(4).expect("phase 4 is registered");
    let field = |line: &str, name: &str| -> u64 {
        line.split(' ')
            .find_map(|word| word.strip_prefix(name))
            .and_then(|value| value.trim_end_matches(']').parse().ok())
            .unwrap_or(0)
    };
    for debug in [true, false] {
        let transcript = demo_transcript(phase, debug);
        // (In debug mode freed blocks wait in the quarantine, used: no bins may show.)
        assert!(
            debug || transcript.contains("[BIN "),
            "no bins in the dumps:\n{transcript}"
        );
        for dump in transcript.split("\n== ").filter(|d| d.contains("[stats]")) {
            let free: Vec<u64> = (dump.lines())
                .filter(|l| l.starts_with("[BLOCK ") && l.ends_with(" FREE]"))
                .filter_map(|l| l.split(' ').nth(2)?.parse().ok())
                .collect();
            let bins: Vec<&str> = dump.lines().filter(|l| l.starts_with("[BIN ")).collect();
            let binned_blocks: u64 = bins.iter().map(|l| field(l, "blocks=")).sum();
            let binned_bytes: u64 = bins.iter().map(|l| field(l, "bytes=")).sum();
            assert_eq!(
                (binned_blocks, binned_bytes),
                (free.len() as u64, free.iter().sum()),
                "the bins disagree with the free blocks in:\n{dump}"
            );
        }
    }
}

/// Phase 5 serves the demo's small blocks from pages of one size class each, listed
/// under the thread's heap; with the debug log on, every request goes to phase 4's heap
/// and the debug layer instead, so no page appears.
#[test]
fn phase5_demo_lists_pages_per_thread_heap() {
    let phase = phases::phase(5).expect("phase 5 is registered");
    let transcript = demo_transcript(phase, false);
    assert!(
        transcript.contains("[THREAD HEAP 1 owned by this thread]")
            && transcript.contains("[PAGE "),
        "the demo's small blocks are not in a thread's pages:\n{transcript}"
    );
    let debug = demo_transcript(phase, true);
    assert!(
        !debug.contains("[PAGE "),
        "pages are used in debug mode:\n{debug}"
    );
}

/// Phase 5's `malloc_stats()` shows, after the `[stats]` line, its pages (per class and
/// per thread heap) and phase 4's bins for the larger blocks phase 4 serves.
#[test]
fn phase5_malloc_stats_shows_pages_and_phase4s_bins() {
    phases::build_all().expect("the phases build");
    let phase = phases::phase(5).expect("phase 5 is registered");
    let dir = tempfile::tempdir().expect("a scratch folder");
    let trace = dir.path().join("stats.rep");
    // Four blocks of 3000 to 6000 bytes (phase 4's), two freed between live
    // neighbours so that they stay in its bins, and three small blocks (pages).
    let ops = "a 0 3000\na 1 4000\na 2 5000\na 3 6000\nf 0\nf 2\na 4 24\na 5 24\na 6 100\n";
    std::fs::write(&trace, format!("0\n7\n9\n1\n{ops}")).expect("the trace is written");
    let outcome = Run::new(phases::bench_alloc_release())
        .preload(Some(&phase.lib_path()))
        .arg("--trace")
        .arg(&trace)
        .args(["--stats-every", "100"])
        .merge_stderr()
        .run()
        .expect("bench_alloc starts");
    let text = outcome.stdout_text();
    assert!(outcome.succeeded(), "{outcome}\n{text}");
    let last = text
        .rsplit("malloc_stats]")
        .next()
        .expect("a malloc_stats section");
    // (bench_alloc allocates small blocks of its own too: no exact counts.)
    for wanted in [
        "[stats] in_use=",
        "[CLASS 32 pages=",
        "[CLASS 112 pages=",
        "[THREAD HEAP 1 owned pages=",
        "[POOL ",
    ] {
        assert!(last.contains(wanted), "no {wanted:?} in:\n{last}");
    }
    let bins = last.lines().filter(|l| l.starts_with("[BIN ")).count();
    assert!(bins >= 2, "not the two freed blocks' bins in:\n{last}");
}
