//! Golden heap dumps: bench_alloc's demo under each phase, with the debug log on and a
//! fixed seed, snapshotted into `golden/phaseN/`. The same demo runs on every phase, so
//! `diff golden/phase1/demo.snap golden/phase2/demo.snap` shows what a chapter changed.
//!
//! Review a change with `cargo insta review`; a golden file changes only on purpose.

use harness::phases;
use harness::runner::Run;

fn demo_transcript(number: u32, debug: bool) -> String {
    phases::build_all().expect("the phases build");
    let lib = phases::phase(number)
        .expect("the phase is registered")
        .lib_path();
    let outcome = Run::new(phases::bench_alloc_release())
        .preload(Some(&lib))
        .env("MALLOC_DEBUG", if debug { "1" } else { "0" })
        .env("MALLOC_DEBUG_SEED", "42")
        .merge_stderr()
        .run()
        .expect("bench_alloc starts");
    assert!(
        outcome.succeeded(),
        "the demo failed under phase {number}: {outcome}\n{}",
        outcome.stdout_text()
    );
    outcome.stdout_text()
}

fn snapshot(number: u32, name: &str, transcript: &str) {
    insta::with_settings!({
        snapshot_path => format!("../../golden/phase{number}"),
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

#[test]
fn phase1_demo_with_debug_log() {
    let transcript = demo_transcript(1, true);
    starts_empty(&transcript);
    snapshot(1, "demo-debug", &transcript);
}

#[test]
fn phase1_demo_without_debug_log() {
    let transcript = demo_transcript(1, false);
    assert!(
        !transcript.contains("[alloc]"),
        "the debug log is on although MALLOC_DEBUG=0"
    );
    starts_empty(&transcript);
    snapshot(1, "demo", &transcript);
}

#[test]
fn phase2_demo_with_debug_log() {
    let transcript = demo_transcript(2, true);
    starts_empty(&transcript);
    snapshot(2, "demo-debug", &transcript);
}

#[test]
fn phase2_demo_without_debug_log() {
    let transcript = demo_transcript(2, false);
    starts_empty(&transcript);
    snapshot(2, "demo", &transcript);
}

/// Step 8's 256 KiB block is a mapping of its own: the dump lists it after the brk
/// heap's blocks as `[MMAP #1 …]` (262144 bytes: 64 whole pages; with the debug
/// mode's 24 bytes of guards, one page more).
fn shows_the_large_block_as_a_mapping(transcript: &str, len: usize) {
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

#[test]
fn phase3_demo_with_debug_log() {
    let transcript = demo_transcript(3, true);
    starts_empty(&transcript);
    shows_the_large_block_as_a_mapping(&transcript, 266_240);
    snapshot(3, "demo-debug", &transcript);
}

#[test]
fn phase3_demo_without_debug_log() {
    let transcript = demo_transcript(3, false);
    starts_empty(&transcript);
    shows_the_large_block_as_a_mapping(&transcript, 262_144);
    snapshot(3, "demo", &transcript);
}

/// Phase 4's dump ends with its bins: one `[BIN …]` line per size class holding free
/// blocks, and they add up to the free blocks the dump lists.
fn bins_match_the_free_blocks(transcript: &str) {
    for dump in transcript.split("\n== ").filter(|d| d.contains("[stats]")) {
        let free_blocks: Vec<u64> = dump
            .lines()
            .filter(|l| l.starts_with("[BLOCK ") && l.ends_with(" FREE]"))
            .filter_map(|l| l.split(' ').nth(2)?.parse().ok())
            .collect();
        let field = |line: &str, name: &str| -> u64 {
            line.split(' ')
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.trim_end_matches(']').parse().ok())
                .unwrap_or(0)
        };
        let bins: Vec<&str> = dump.lines().filter(|l| l.starts_with("[BIN ")).collect();
        let binned_blocks: u64 = bins.iter().map(|l| field(l, "blocks=")).sum();
        let binned_bytes: u64 = bins.iter().map(|l| field(l, "bytes=")).sum();
        assert_eq!(
            (binned_blocks, binned_bytes),
            (free_blocks.len() as u64, free_blocks.iter().sum()),
            "the bins disagree with the free blocks in:\n{dump}"
        );
    }
}

#[test]
fn phase4_demo_with_debug_log() {
    let transcript = demo_transcript(4, true);
    starts_empty(&transcript);
    shows_the_large_block_as_a_mapping(&transcript, 266_240);
    bins_match_the_free_blocks(&transcript);
    snapshot(4, "demo-debug", &transcript);
}

#[test]
fn phase4_demo_without_debug_log() {
    let transcript = demo_transcript(4, false);
    starts_empty(&transcript);
    shows_the_large_block_as_a_mapping(&transcript, 262_144);
    bins_match_the_free_blocks(&transcript);
    assert!(transcript.contains("[BIN "), "no bins in the dump");
    snapshot(4, "demo", &transcript);
}

/// Phase 5 serves the demo's small blocks from pages of one size class each, listed
/// per thread heap; the 256 KiB block is still a mapping of its own. With the debug log
/// on, every request goes to phase 3's heap and its debug layer instead.
#[test]
fn phase5_demo_with_debug_log() {
    let transcript = demo_transcript(5, true);
    starts_empty(&transcript);
    shows_the_large_block_as_a_mapping(&transcript, 266_240);
    snapshot(5, "demo-debug", &transcript);
}

#[test]
fn phase5_demo_without_debug_log() {
    let transcript = demo_transcript(5, false);
    starts_empty(&transcript);
    shows_the_large_block_as_a_mapping(&transcript, 262_144);
    assert!(
        transcript.contains("[THREAD HEAP 1 owned by this thread]")
            && transcript.contains("[PAGE "),
        "the demo's small blocks are not in a thread's pages"
    );
    snapshot(5, "demo", &transcript);
}
