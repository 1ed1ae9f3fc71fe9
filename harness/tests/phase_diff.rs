//! The diff of phase 1's sources to phase 2's, committed beside chapter 2, is what the
//! sources make today.

use harness::book::phase_diff;
use harness::phases;

#[test]
fn committed_phase1_to_phase2_diff_matches_the_sources() {
    let (from, to) = (phases::phase(1).unwrap(), phases::phase(2).unwrap());
    let path = phase_diff::file_for(to);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let current = phase_diff::generate(from, to).expect("diff runs");
    assert!(
        committed == current,
        "{} is stale (or missing): run `cargo run --release -p harness --bin harness -- phase-diff --phase 2`",
        path.display()
    );
}
