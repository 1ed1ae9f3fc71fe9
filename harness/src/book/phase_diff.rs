//! What changed from one phase to the next, as a unified diff of the two phases' policy
//! sources ([`Phase::policy_sources`]), committed beside the chapter that explains it
//! (`docs/src/phase1-to-phase2.diff`). The phases whose chapter shows one say so in the
//! registry ([`Phase::diff_from_previous`]).
//!
//! `harness phase-diff --phase 2` writes it again; `tests/phase_diff.rs` fails when a
//! committed file is no longer what this makes. The diff is GNU diff's
//! (`LC_ALL=C diff -ruN OLD/src NEW/src`, paths relative to the workspace root) with the
//! modification times dropped from the `---` and `+++` lines, so that the file depends
//! only on the two crates' sources.

use std::path::PathBuf;
use std::process::Command;

use crate::phases::{self, Phase};

/// The committed diff from the phase before `to` to `to`, e.g.
/// `docs/src/phase1-to-phase2.diff`.
pub fn file_for(to: Phase) -> PathBuf {
    phases::workspace_root().join("docs/src").join(format!(
        "phase{}-to-phase{}.diff",
        to.number - 1,
        to.number
    ))
}

/// The phases whose chapter shows the diff from the phase before, each with that one.
pub fn shown() -> impl Iterator<Item = (Phase, Phase)> {
    (phases::PHASES.iter())
        .filter(|to| to.diff_from_previous)
        .filter_map(|to| Some((to.previous()?, *to)))
}

/// The diff of `from`'s sources to `to`'s. `Err` when `diff` cannot run or fails.
pub fn generate(from: Phase, to: Phase) -> Result<String, String> {
    let output = Command::new("diff")
        .arg("-ruN")
        .args([from.policy_sources(), to.policy_sources()])
        .current_dir(phases::workspace_root())
        .env("LC_ALL", "C")
        .env_remove("DIFF_OPTIONS")
        .output()
        .map_err(|e| format!("cannot run diff: {e}"))?;
    // diff exits 0 when the folders are the same, 1 when they differ, 2 on trouble.
    if !matches!(output.status.code(), Some(0 | 1)) {
        return Err(format!(
            "diff failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = String::from_utf8(output.stdout).map_err(|e| format!("diff output: {e}"))?;
    Ok(without_times(&text))
}

/// `text` with the tab and modification time cut from each file's `---` and `+++`
/// line. (A changed line of Rust cannot look like one: removed and added lines start
/// with a single `-` or `+` and then the line, which rustfmt never starts with `-- ` or
/// `++ `.)
fn without_times(text: &str) -> String {
    let mut result = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let header = line.starts_with("--- ") || line.starts_with("+++ ");
        match line.find('\t').filter(|_| header) {
            Some(tab) => {
                result.push_str(&line[..tab]);
                result.push('\n');
            }
            None => result.push_str(line),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_cut_from_file_headers_only() {
        let diff = "diff -ruN a/x.rs b/x.rs\n--- a/x.rs\t2024-01-01 00:00:00.0 +0000\n\
                    +++ b/x.rs\t2024-01-02 00:00:00.0 +0000\n@@ -1 +1 @@\n-\told\n+\tnew\n";
        assert_eq!(
            without_times(diff),
            "diff -ruN a/x.rs b/x.rs\n--- a/x.rs\n+++ b/x.rs\n@@ -1 +1 @@\n-\told\n+\tnew\n"
        );
    }

    #[test]
    fn each_diff_starts_from_the_phase_before() {
        let two = phases::phase(2).unwrap();
        assert!(shown().any(|pair| pair == (phases::phase(1).unwrap(), two)));
        assert!(shown().all(|(from, to)| from.number + 1 == to.number));
        assert!(file_for(two).ends_with("docs/src/phase1-to-phase2.diff"));
    }
}
