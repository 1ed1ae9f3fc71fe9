//! Each diff of one phase's sources to the next, committed beside the chapter that
//! shows it (the registry's `diff_from_previous` says what it compares), is what the
//! sources make today.

use harness::book::phase_diff;

#[test]
fn committed_phase_diffs_match_the_sources() {
    let mut checked = 0;
    for to in phase_diff::shown() {
        let path = phase_diff::file_for(to);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let current = phase_diff::generate(to).expect("diff runs");
        assert!(
            committed == current,
            "{} is stale (or missing): run `cargo run --release -p harness --bin harness -- phase-diff --phase {}`",
            path.display(),
            to.number
        );
        checked += 1;
    }
    assert!(checked > 0, "no phase's chapter shows a diff");
}
