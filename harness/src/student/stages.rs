//! `harness check`: a student's allocator, checked stage by stage.
//!
//! The stages of phase N are phase N's rubric (see [`checks::rubric`]) in catalogue
//! order: the same list the grader scores and the reference phases are tested
//! against, so there is no second copy to drift. The run stops at the first stage that
//! fails and says what was tried, what happened, how to repeat that one stage alone,
//! and which section of the book explains it ([`checks::Check::section`]).
//!
//! A submission is a Rust crate (a folder with `Cargo.toml`, built with `cargo build
//! --release`), a C folder (a `Makefile` that builds one `.so`), or a `.so` file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::checks::{self, Check, Subject, Verdict};
use crate::runner::{Outcome, Run};

/// What `harness check` was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submission {
    Crate(PathBuf),
    C(PathBuf),
    Lib(PathBuf),
}

/// How long `make` may take.
const MAKE_LIMIT: Duration = Duration::from_secs(300);

impl Submission {
    pub fn find(path: &Path) -> Result<Submission, String> {
        if path.is_file() {
            Ok(Submission::Lib(path.to_path_buf()))
        } else if path.join("Cargo.toml").is_file() {
            Ok(Submission::Crate(path.to_path_buf()))
        } else if path.join("Makefile").is_file() {
            Ok(Submission::C(path.to_path_buf()))
        } else if path.is_dir() {
            Err(format!(
                "{}: neither a crate (Cargo.toml) nor a C folder (Makefile); \
                 `harness new DIR` makes one",
                path.display()
            ))
        } else {
            Err(format!("{}: no such file or folder", path.display()))
        }
    }

    /// Builds the submission; returns its `.so`. `Err` holds the builder's complaint.
    pub fn build(&self, phase: u32) -> Result<PathBuf, String> {
        match self {
            Submission::Lib(lib) => Ok(lib.clone()),
            Submission::Crate(dir) => {
                // Absolute: Cargo reads a relative target folder from the crate's folder.
                let dir = dir
                    .canonicalize()
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
                crate::grade::batch::build(&dir, phase)
            }
            Submission::C(dir) => {
                let outcome = Run::new("make")
                    .arg("-C")
                    .arg(dir)
                    .timeout(MAKE_LIMIT)
                    .merge_stderr()
                    .run()
                    .map_err(|e| format!("cannot run make: {e}"))?;
                if !outcome.succeeded() {
                    return Err(format!(
                        "make failed ({outcome}):\n{}",
                        outcome.stdout_text()
                    ));
                }
                let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
                    .map_err(|e| format!("{}: {e}", dir.display()))?
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|path| path.extension().is_some_and(|ext| ext == "so"))
                    .collect();
                libs.sort();
                crate::grade::batch::pick(libs, phase).ok_or_else(|| {
                    format!(
                        "make built no single .so in {} (or several, none named for phase {phase})",
                        dir.display()
                    )
                })
            }
        }
    }

    /// The newest modification time among the submission's sources (its build
    /// output left out), for `--watch`.
    pub fn last_change(&self) -> Option<SystemTime> {
        fn newest(path: &Path) -> Option<SystemTime> {
            let meta = std::fs::metadata(path).ok()?;
            let own = meta.modified().ok();
            if !meta.is_dir() {
                return own;
            }
            let entries = std::fs::read_dir(path).ok()?;
            entries
                .filter_map(|entry| entry.ok())
                .filter(|entry| {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    name != "target" && !name.starts_with('.') && !name.ends_with(".so")
                })
                .filter_map(|entry| newest(&entry.path()))
                .chain(own)
                .max()
        }
        match self {
            Submission::Lib(path) | Submission::Crate(path) | Submission::C(path) => newest(path),
        }
    }
}

/// The stages of phase `phase`: its rubric, in catalogue order.
pub fn stages(phase: u32) -> Vec<&'static Check> {
    checks::rubric(phase).collect()
}

/// One stage's result, with every command the check ran.
pub struct Stage {
    /// 1-based, in the order of [`stages`].
    pub number: usize,
    pub check: &'static Check,
    pub verdict: Verdict,
    pub runs: Vec<(Run, Outcome)>,
}

impl Stage {
    /// The run to repeat: the last one made under the allocator being checked (a check
    /// may also run a program on glibc's malloc, to compare).
    pub fn run_under_test(&self) -> Option<&(Run, Outcome)> {
        let preloaded = self
            .runs
            .iter()
            .rev()
            .find(|(run, _)| run.preload.is_some());
        preloaded.or(self.runs.last())
    }
}

/// What to run.
pub struct Options {
    pub phase: u32,
    /// Only the stage with this check id.
    pub only: Option<String>,
    /// Leave out the checks that measure time (the tests do; shared machines are noisy).
    pub skip_timing: bool,
    /// Run every stage even after one fails (the reference phases' test).
    pub keep_going: bool,
}

/// Runs the stages of `options.phase` on `subject`, telling `progress` about each as
/// it ends. Stops after the first failure unless `keep_going`.
pub fn run(options: &Options, subject: &Subject, mut progress: impl FnMut(&Stage)) -> Vec<Stage> {
    let mut done = Vec::new();
    for (index, check) in stages(options.phase).into_iter().enumerate() {
        if options.only.as_deref().is_some_and(|only| only != check.id)
            || (options.skip_timing && check.timing)
        {
            continue;
        }
        let (verdict, runs) = crate::runner::recording(|| checks::run_check(check, subject));
        let stage = Stage {
            number: index + 1,
            check,
            verdict,
            runs,
        };
        progress(&stage);
        let failed = matches!(stage.verdict, Verdict::Fail(_));
        done.push(stage);
        if failed && !options.keep_going {
            break;
        }
    }
    done
}

/// One line per stage as it ends: `ok`, `skip` or `FAIL`, the id, and the note.
pub fn progress_line(stage: &Stage, total: usize) -> String {
    let (word, note) = match &stage.verdict {
        Verdict::Pass(note) => ("ok  ", note),
        Verdict::Skip(note) => ("skip", note),
        Verdict::Fail(_) => ("FAIL", &stage.check.title.to_string()),
    };
    let note: String = note.lines().next().unwrap_or("").chars().take(90).collect();
    format!(
        "stage {:>2}/{total} {word} {:<28} {note}",
        stage.number, stage.check.id
    )
}

/// The report of a failed stage: what was tried, what happened, how to repeat it
/// alone, where the book explains it. `again` is the `harness check` command line
/// that reruns this stage only.
pub fn explain(stage: &Stage, total: usize, again: &str) -> String {
    let Verdict::Fail(problem) = &stage.verdict else {
        return String::new();
    };
    let check = stage.check;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nstage {} of {total} failed: {} ({})",
        stage.number, check.id, check.title
    );
    let tried: Vec<String> = stage
        .runs
        .iter()
        .filter(|(run, _)| run.preload.is_some())
        .map(|(run, _)| short_command(run))
        .collect();
    let tried = if tried.is_empty() {
        "(no program was started)".to_string()
    } else {
        tried.join("; ")
    };
    let _ = writeln!(out, "  tried:     {tried}");
    let _ = writeln!(out, "  happened:  {problem}");
    if let Some((_, outcome)) = stage.run_under_test() {
        for line in outcome
            .stderr_text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(4)
        {
            let line: String = line.chars().take(200).collect();
            let _ = writeln!(out, "             | {line}");
        }
    }
    let _ = writeln!(out, "  alone:     {again}");
    if let Some((run, _)) = stage.run_under_test() {
        let _ = writeln!(out, "             {}", run.shell_command());
    }
    let _ = writeln!(out, "  read:      {}", check.section());
    out
}

/// A run in a few words: the program's file name and its arguments, long ones cut.
fn short_command(run: &Run) -> String {
    let program = Path::new(&run.program)
        .file_name()
        .map_or_else(|| run.program.to_string_lossy(), |n| n.to_string_lossy())
        .into_owned();
    let mut words = vec![program];
    for arg in &run.args {
        let arg = arg.to_string_lossy();
        let arg = if arg.len() > 40 || arg.contains('\n') {
            "...".to_string()
        } else {
            crate::runner::shell_quote(&arg)
        };
        words.push(arg);
    }
    words.join(" ")
}

/// Every stage of the book's phases as a Markdown table, with the points the grader
/// gives each and the section that explains it (the handout's table is this text).
pub fn markdown() -> String {
    let mut out =
        String::from("| stage | check | what it shows | since phase | points | explained in |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for (index, check) in checks::CATALOGUE.iter().enumerate() {
        let section = check.section();
        let timing = if check.timing { " (timing)" } else { "" };
        let _ = writeln!(
            out,
            "| {} | `{}` | {}{timing} | {} | {} | [{}]({}#{}) |",
            index + 1,
            check.id,
            check.title,
            check.since,
            check.points,
            section.heading,
            section.page,
            section.anchor()
        );
    }
    out.push('\n');
    let last = checks::CATALOGUE.iter().map(|c| c.since).max().unwrap_or(0);
    for phase in 1..=last {
        let stages = stages(phase);
        let points: u32 = stages.iter().map(|c| c.points).sum();
        let _ = writeln!(
            out,
            "`harness check --phase {phase}` runs {} stages, worth {points} points.",
            stages.len()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stages_of_a_phase_are_its_rubric_in_catalogue_order() {
        let ids: Vec<&str> = stages(2).iter().map(|c| c.id).collect();
        let rubric: Vec<&str> = checks::CATALOGUE
            .iter()
            .filter(|c| c.since <= 2)
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, rubric);
        assert_eq!(ids[0], "api/alignment");
    }

    /// Every section a check names is a heading of its page, so a failure never sends
    /// a student to a section that was renamed.
    #[test]
    fn every_check_names_a_heading_that_exists() {
        let src = crate::phases::workspace_root().join("docs/src");
        for check in checks::CATALOGUE {
            let section = check.section();
            let page = std::fs::read_to_string(src.join(section.page))
                .unwrap_or_else(|e| panic!("{}: {}: {e}", check.id, section.page));
            let found = page.lines().any(|line| {
                line.starts_with('#') && line.trim_start_matches('#').trim() == section.heading
            });
            assert!(
                found,
                "{}: no heading {:?} in {}",
                check.id, section.heading, section.page
            );
        }
    }

    #[test]
    fn anchors_are_mdbook_slugs() {
        let section = checks::Section {
            page: "ch03-mmap-debug.md",
            heading: "Catching bugs: guards, poison and a quarantine",
        };
        assert_eq!(
            section.anchor(),
            "catching-bugs-guards-poison-and-a-quarantine"
        );
    }
}
