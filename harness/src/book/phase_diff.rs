//! What changed from one phase to the next, as a unified diff committed beside the
//! chapter that explains it (`docs/src/phase1-to-phase2.diff`). The registry says, per
//! phase, which sources its chapter's diff compares ([`Phase::diff_from_previous`]):
//! phase 2 compares phase 1's whole `src/` folder with its own; phase 4, which composes
//! phases 2 and 3, compares its bins with phase 2's free list and its packages with
//! phase 3's, since a diff of whole folders would show the composed code as deleted.
//!
//! `harness phase-diff --phase N` writes it again; `tests/phase_diff.rs` fails when a
//! committed file is no longer what this makes. Each pair's part is GNU diff's
//! (`LC_ALL=C diff -ruN OLD NEW`, paths relative to the workspace root; for a pair of
//! files, that command line heads the part, as `diff -r` heads each file of a folder)
//! with the modification times dropped from the `---` and `+++` lines, so that the file
//! depends only on the sources.

use std::path::PathBuf;
use std::process::Command;

use crate::phases::{self, Compared, Phase};

/// The committed diff from the phase before `to` to `to`, e.g.
/// `docs/src/phase1-to-phase2.diff`.
pub fn file_for(to: Phase) -> PathBuf {
    phases::workspace_root().join("docs/src").join(format!(
        "phase{}-to-phase{}.diff",
        to.number - 1,
        to.number
    ))
}

/// The phases whose chapter shows a diff from the phase before.
pub fn shown() -> impl Iterator<Item = Phase> {
    (phases::PHASES.iter())
        .filter(|to| !to.diff_from_previous.is_empty() && to.previous().is_some())
        .copied()
}

/// The diff that `to`'s chapter shows: each pair of its registry entry's
/// [`Phase::diff_from_previous`] in turn. `Err` when `diff` cannot run or fails.
pub fn generate(to: Phase) -> Result<String, String> {
    let mut whole = String::new();
    for pair in to.diff_from_previous {
        whole.push_str(&generate_pair(pair)?);
    }
    Ok(whole)
}

/// The diff of one pair of files or folders.
fn generate_pair(pair: &Compared) -> Result<String, String> {
    let root = phases::workspace_root();
    for side in [pair.old, pair.new] {
        if !root.join(side).exists() {
            return Err(format!("{side} does not exist"));
        }
    }
    let output = Command::new("diff")
        .args(["-ruN", pair.old, pair.new])
        .current_dir(&root)
        .env("LC_ALL", "C")
        .env_remove("DIFF_OPTIONS")
        .output()
        .map_err(|e| format!("cannot run diff: {e}"))?;
    // diff exits 0 when the two are the same, 1 when they differ, 2 on trouble.
    if !matches!(output.status.code(), Some(0 | 1)) {
        return Err(format!(
            "diff failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = String::from_utf8(output.stdout).map_err(|e| format!("diff output: {e}"))?;
    // `diff -r` heads each file of two folders with its command line; two files get
    // the same heading here, so that every file's part of the whole starts alike.
    let heading = if root.join(pair.new).is_file() && !text.is_empty() {
        format!("diff -ruN {} {}\n", pair.old, pair.new)
    } else {
        String::new()
    };
    Ok(heading + &without_times(&text))
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
    fn each_diff_is_named_after_the_phase_before() {
        let two = phases::phase(2).unwrap();
        assert!(shown().any(|to| to == two));
        assert!(shown().all(|to| to.number > 1));
        assert!(file_for(two).ends_with("docs/src/phase1-to-phase2.diff"));
    }

    #[test]
    fn two_files_get_a_heading_like_two_folders_files() {
        let pair = Compared {
            old: "phases/phase1-sbrk-freelist/preload/src/lib.rs",
            new: "phases/phase2-split-coalesce/preload/src/lib.rs",
        };
        let diff = generate_pair(&pair).unwrap();
        assert!(
            diff.starts_with(&format!(
                "diff -ruN {old} {new}\n--- {old}\n+++ {new}\n@@ ",
                old = pair.old,
                new = pair.new
            )),
            "{diff}"
        );
        let same = Compared {
            old: pair.new,
            new: pair.new,
        };
        assert_eq!(generate_pair(&same), Ok(String::new()), "no heading alone");
        let missing = Compared {
            old: "phases/no-such-phase/src",
            new: pair.new,
        };
        assert!(generate_pair(&missing).is_err());
    }
}
