//! The grader: any allocator `.so` against a phase's rubric, for points.
//!
//! ```text
//! harness grade --lib PATH.so --phase N [--json results.json]   one allocator
//! harness grade --dir SUBMISSIONS --phase N [--csv scores.csv]  a whole class
//! harness grade --list-checks [--phase N]                       the rubric, as a table
//! ```
//!
//! The checks are [`crate::checks::CATALOGUE`]'s, the same ones the test suite holds
//! the reference phases to, and from phase 2 on the malloc lab's performance index
//! ([`perf::TRACES`], the one check that earns points in proportion). Each runs its programs in processes of their own, under
//! the allocator's preload and a time limit, so a crash or a hang costs that one check
//! and its line says what happened ("crashed with SIGSEGV", "timed out after 30 s").
//!
//! Checks that do not measure time run a few at a time ([`Options::jobs`]); timing
//! checks then run alone, and one that fails runs again before it counts
//! ([`TIMING_ATTEMPTS`]). A check that cannot run on this machine (a program is not
//! installed) is skipped: it is left out of the maximum score and named in the report.
//!
//! - [`elf`]: is the file a shared object this machine can preload, exporting `malloc`?
//! - [`cli`]: the `harness grade` command line.
//! - [`batch`]: a folder of submissions (`.so` files, or crates to build), and the CSV.
//! - [`json`]: Gradescope's `results.json` (and Cargo's build messages).
//! - [`perf`]: the malloc lab's performance index on the trace suite, for partial points.

pub mod batch;
pub mod cli;
pub mod elf;
pub mod json;
pub mod perf;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::checks::{self, Check, Subject, Verdict};
use crate::phases;
use crate::runner::{Ending, Run};
use json::Json;

/// How many times a timing check may run (alone each time) before it counts as failed.
/// Each run of `perf/small-1m` is itself the best of up to three timings.
pub const TIMING_ATTEMPTS: u32 = 2;

/// What to grade, and how.
#[derive(Clone, Debug)]
pub struct Options {
    /// The rubric: every check with `since <= phase`.
    pub phase: u32,
    /// Only these checks: an entry selects the check with that id, or every check
    /// under it (`api` or `api/` selects `api/alignment`, `api/calloc`, ...). Empty:
    /// the whole rubric.
    pub only: Vec<String>,
    /// How many checks run at once (timing checks always run alone).
    pub jobs: usize,
    /// Leave the timing checks out (the test suite never asserts wall-clock time).
    pub skip_timing: bool,
}

impl Options {
    pub fn new(phase: u32) -> Options {
        Options {
            phase,
            only: Vec::new(),
            jobs: default_jobs(),
            skip_timing: false,
        }
    }

    /// The checks these options select, in rubric order.
    pub fn checks(&self) -> Vec<&'static Check> {
        rubric(self.phase)
            .into_iter()
            .filter(|check| !(self.skip_timing && check.timing))
            .filter(|check| self.only.is_empty() || self.only.iter().any(|o| selects(o, check.id)))
            .collect()
    }
}

/// The checks the grader runs for phase `phase`: the catalogue's rubric and the
/// grader's own partial-credit checks ([`perf::TRACES`]), grouped by the phase that
/// introduces them (catalogue order within a phase).
pub fn rubric(phase: u32) -> Vec<&'static Check> {
    let own = [&perf::TRACES].into_iter().filter(|c| c.since <= phase);
    let mut checks: Vec<&'static Check> = checks::rubric(phase).chain(own).collect();
    checks.sort_by_key(|check| check.since);
    checks
}

/// Two at a time on a two-core machine, at most four: the checks' programs start
/// threads of their own (eight in `threads/stress`), and a loaded machine makes the
/// time limits tighter than they are meant to be.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4))
}

fn selects(pattern: &str, id: &str) -> bool {
    let pattern = pattern.trim_end_matches('/');
    id == pattern
        || id
            .strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// One check's result.
#[derive(Clone)]
pub struct Graded {
    pub check: &'static Check,
    pub verdict: Verdict,
    /// Wall-clock time of the check, all attempts included.
    pub elapsed: Duration,
    /// How many times it ran (more than 1 only for a timing check that failed first).
    pub attempts: u32,
    /// Points earned by a passing check that scores in proportion ([`perf::TRACES`]);
    /// `None` for the usual all-or-nothing check.
    pub partial: Option<u32>,
}

impl std::fmt::Debug for Graded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graded")
            .field("check", &self.check.id)
            .field("verdict", &self.verdict)
            .field("elapsed", &self.elapsed)
            .field("attempts", &self.attempts)
            .field("partial", &self.partial)
            .finish()
    }
}

impl Graded {
    /// Points earned; `None` for a skipped check (it counts for nothing either way).
    pub fn earned(&self) -> Option<u32> {
        match self.verdict {
            Verdict::Pass(_) => Some(self.partial.unwrap_or(self.check.points)),
            Verdict::Fail(_) => Some(0),
            Verdict::Skip(_) => None,
        }
    }

    /// `pass`, `FAIL` or `skip`: failures stand out in a column.
    pub fn result_word(&self) -> &'static str {
        match self.verdict {
            Verdict::Pass(_) => "pass",
            Verdict::Fail(_) => "FAIL",
            Verdict::Skip(_) => "skip",
        }
    }

    /// What happened, for people: the check's own words, and for a timing check how
    /// it was run.
    pub fn note(&self) -> String {
        let (Verdict::Pass(text) | Verdict::Fail(text) | Verdict::Skip(text)) = &self.verdict;
        if self.check.timing {
            let times = if self.attempts == 1 {
                "1 attempt".to_string()
            } else {
                format!("{} attempts", self.attempts)
            };
            format!("{text} [timing: ran alone, {times}]")
        } else {
            text.clone()
        }
    }
}

/// Everything one grading produced.
#[derive(Clone, Debug)]
pub struct Report {
    /// The allocator as it was named (not the copy that may have been preloaded).
    pub lib: PathBuf,
    pub phase: u32,
    /// In catalogue order.
    pub results: Vec<Graded>,
    pub elapsed: Duration,
}

impl Report {
    pub fn score(&self) -> u32 {
        self.results.iter().filter_map(Graded::earned).sum()
    }

    /// The points of every check that ran: skipped checks are left out.
    pub fn max_score(&self) -> u32 {
        self.results
            .iter()
            .filter(|g| g.earned().is_some())
            .map(|g| g.check.points)
            .sum()
    }

    pub fn result(&self, id: &str) -> Option<&Graded> {
        self.results.iter().find(|g| g.check.id == id)
    }

    /// Ids of the checks with the given result word (`pass`, `FAIL`, `skip`).
    pub fn ids(&self, word: &str) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|g| g.result_word() == word)
            .map(|g| g.check.id)
            .collect()
    }

    /// One line under the table: the score, what failed, what was skipped.
    pub fn summary(&self) -> String {
        let failed = self.ids("FAIL");
        let skipped: Vec<&Graded> = self
            .results
            .iter()
            .filter(|g| g.earned().is_none())
            .collect();
        let mut line = format!("score: {}/{}", self.score(), self.max_score());
        let _ = write!(
            line,
            " ({} of {} checks passed",
            self.results.len() - failed.len() - skipped.len(),
            self.results.len() - skipped.len()
        );
        if !skipped.is_empty() {
            let points: u32 = skipped.iter().map(|g| g.check.points).sum();
            let names: Vec<&str> = skipped.iter().map(|g| g.check.id).collect();
            let _ = write!(
                line,
                "; skipped, and left out of the maximum: {} ({points} points)",
                names.join(", ")
            );
        }
        line.push(')');
        line
    }

    /// The table an instructor reads: one line per check, then the score.
    pub fn table(&self) -> String {
        let width = self
            .results
            .iter()
            .map(|g| g.check.id.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!(
            "{} on the phase {} rubric\n\n",
            self.lib.display(),
            self.phase
        );
        let _ = writeln!(out, "{:<width$}  points  result  what happened", "check");
        for graded in &self.results {
            let points = match graded.earned() {
                Some(earned) => format!("{earned}/{}", graded.check.points),
                None => format!("-/{}", graded.check.points),
            };
            let _ = writeln!(
                out,
                "{:<width$}  {points:>6}  {:<6}  {}",
                graded.check.id,
                graded.result_word(),
                graded.note()
            );
        }
        let _ = writeln!(out, "\n{}", self.summary());
        out
    }

    /// Gradescope's `results.json`: `score`, `max_score`, `output`, and one entry per
    /// check in `tests` (a skipped check has `max_score` 0 and says why it was skipped).
    pub fn gradescope(&self) -> Json {
        let tests = self.results.iter().map(|graded| {
            let (score, max_score) = match graded.earned() {
                Some(earned) => (earned, graded.check.points),
                None => (0, 0),
            };
            let mut fields = vec![
                (
                    "name",
                    Json::string(format!("{}: {}", graded.check.id, graded.check.title)),
                ),
                ("score", Json::Number(score.into())),
                ("max_score", Json::Number(max_score.into())),
            ];
            if graded.earned().is_some() {
                let passed = matches!(graded.verdict, Verdict::Pass(_));
                let status = if passed { "passed" } else { "failed" };
                fields.push(("status", Json::string(status)));
            }
            let output = match &graded.verdict {
                Verdict::Skip(_) => format!("skipped (not counted): {}", graded.note()),
                _ => graded.note(),
            };
            fields.push(("output", Json::string(output)));
            Json::object(fields)
        });
        Json::object([
            ("score", Json::Number(self.score().into())),
            ("max_score", Json::Number(self.max_score().into())),
            (
                "output",
                Json::string(format!(
                    "phase {} rubric, graded by mymalloc's harness: {}",
                    self.phase,
                    self.summary()
                )),
            ),
            ("tests", Json::Array(tests.collect())),
        ])
    }
}

/// The `results.json` for a submission that could not be graded at all, so that a
/// student on Gradescope sees why (the command still exits 2).
pub fn gradescope_refusal(options: &Options, problem: &str) -> Json {
    let max: u32 = options.checks().iter().map(|c| c.points).sum();
    Json::object([
        ("score", Json::Number(0.0)),
        ("max_score", Json::Number(max.into())),
        (
            "output",
            Json::string(format!("The allocator could not be graded: {problem}")),
        ),
        ("tests", Json::Array(Vec::new())),
    ])
}

/// Is `lib` an allocator that can be graded here? The problem, in one sentence, if not.
/// Checks the file (exists, ELF shared object of this machine, exports `malloc`), then
/// asks the dynamic loader to preload it once.
pub fn validate(lib: &Path, tools: &Path) -> Result<(), String> {
    if !lib.exists() {
        return Err(format!("{}: no such file", lib.display()));
    }
    if !lib.is_file() {
        return Err(format!("{}: not a file", lib.display()));
    }
    elf::check_allocator(lib).map_err(|problem| format!("{}: {problem}", lib.display()))?;
    let probe = tools.join("alloc_probe");
    if !probe.is_file() {
        return Err(format!(
            "the harness's tools are not built ({} is missing): run `cargo build --release -p harness`",
            probe.display()
        ));
    }
    let scratch = Scratch::new()?;
    let preloadable = preloadable_path(lib, &scratch.path)?;
    // `alloc_probe` without a probe name prints its usage: enough to load the library.
    let outcome = Run::new(&probe)
        .preload(Some(&preloadable))
        .timeout(LOAD_LIMIT)
        .run()
        .map_err(|e| format!("cannot run {}: {e}", probe.display()))?;
    let stderr = outcome.stderr_text();
    if let Some(refusal) = stderr.lines().find(|l| l.contains("cannot be preloaded")) {
        return Err(format!(
            "{}: the dynamic loader refuses to preload it: {}",
            lib.display(),
            refusal.trim()
        ));
    }
    // Every check would wait out its time limit: say it once instead.
    if let Ending::TimedOut(limit) = outcome.ending {
        return Err(format!(
            "{}: a program under it hangs before it starts (alloc_probe printed nothing in {} s)",
            lib.display(),
            limit.as_secs()
        ));
    }
    Ok(())
}

/// How long a trivial program may take to start under the library being validated.
const LOAD_LIMIT: Duration = Duration::from_secs(10);

/// `LD_PRELOAD` splits its value at spaces and colons, so a library whose path holds
/// one is preloaded from a copy in `scratch`. Relative paths are made absolute (checks
/// run in other folders).
fn preloadable_path(lib: &Path, scratch: &Path) -> Result<PathBuf, String> {
    let absolute = lib
        .canonicalize()
        .map_err(|e| format!("{}: {e}", lib.display()))?;
    let text = absolute.to_string_lossy();
    if !text.contains([' ', ':', '\t', '\n']) && absolute.to_str().is_some() {
        return Ok(absolute);
    }
    let copy = scratch.join("submission.so");
    std::fs::copy(&absolute, &copy)
        .map_err(|e| format!("cannot copy {} to {}: {e}", lib.display(), copy.display()))?;
    Ok(copy)
}

/// A folder for one grading, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> Result<Scratch, String> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "mymalloc-grade-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Grades `lib` (already [`validate`]d) with the tools in `tools`. `progress` hears
/// about each check as it finishes, from whichever thread ran it.
pub fn grade(
    lib: &Path,
    tools: &Path,
    options: &Options,
    progress: &(dyn Fn(&Graded) + Sync),
) -> Result<Report, String> {
    let started = Instant::now();
    let scratch = Scratch::new()?;
    let preloadable = preloadable_path(lib, &scratch.path)?;
    let selected = options.checks();
    // Each check gets a folder of its own (checks run side by side), made beforehand:
    // some checks run their programs in it without writing to it first.
    for check in &selected {
        let folder = scratch.path.join(check.id.replace('/', "-"));
        std::fs::create_dir_all(&folder)
            .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    }
    let subject_for = |check: &Check| Subject {
        lib: preloadable.clone(),
        tools: tools.to_path_buf(),
        scratch: scratch.path.join(check.id.replace('/', "-")),
    };
    let slots: Vec<Mutex<Option<Graded>>> = selected.iter().map(|_| Mutex::new(None)).collect();

    // Checks that do not measure time: `jobs` workers take them in catalogue order.
    let untimed: Vec<usize> = (0..selected.len())
        .filter(|&i| !selected[i].timing)
        .collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.clamp(1, untimed.len().max(1)) {
            scope.spawn(|| {
                while let Some(&index) = untimed.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let check = selected[index];
                    let graded = run_once(check, &subject_for(check));
                    progress(&graded);
                    store(&slots[index], graded);
                }
            });
        }
    });

    // Timing checks: alone, and a failure gets another attempt.
    for (index, check) in selected.iter().enumerate().filter(|(_, c)| c.timing) {
        let graded = run_timing(check, &subject_for(check));
        progress(&graded);
        store(&slots[index], graded);
    }

    let results = slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .ok_or_else(|| "a check did not report (its worker thread died)".to_string())
        })
        .collect::<Result<Vec<Graded>, String>>()?;
    Ok(Report {
        lib: lib.to_path_buf(),
        phase: options.phase,
        results,
        elapsed: started.elapsed(),
    })
}

fn store(slot: &Mutex<Option<Graded>>, graded: Graded) {
    *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(graded);
}

/// Runs a check: its verdict, and its partial points if it scores in proportion.
fn run_check(check: &'static Check, subject: &Subject) -> (Verdict, Option<u32>) {
    if std::ptr::eq(check, &perf::TRACES) {
        perf::grade(subject)
    } else {
        (checks::run_check(check, subject), None)
    }
}

fn run_once(check: &'static Check, subject: &Subject) -> Graded {
    let started = Instant::now();
    let (verdict, partial) = run_check(check, subject);
    Graded {
        check,
        verdict,
        elapsed: started.elapsed(),
        attempts: 1,
        partial,
    }
}

fn run_timing(check: &'static Check, subject: &Subject) -> Graded {
    let started = Instant::now();
    let mut attempts = 0;
    let (verdict, partial) = loop {
        attempts += 1;
        let (verdict, partial) = run_check(check, subject);
        if !matches!(verdict, Verdict::Fail(_)) || attempts >= TIMING_ATTEMPTS {
            break (verdict, partial);
        }
    };
    Graded {
        check,
        verdict,
        elapsed: started.elapsed(),
        attempts,
        partial,
    }
}

/// The catalogue as a Markdown table (the rubric in `docs/src/grading.md` is this
/// text): phase `Some(n)` lists phase n's rubric, `None` every check with the phase
/// that introduces it. Ends with the points each phase's rubric is worth.
pub fn checks_markdown(phase: Option<u32>) -> String {
    let listed: Vec<&Check> = match phase {
        Some(n) => rubric(n),
        None => rubric(phases::last().number),
    };
    let mut out = String::from("| check | what it shows | since phase | points |\n");
    out.push_str("|---|---|---|---|\n");
    for check in &listed {
        let timing = if check.timing { " (timing)" } else { "" };
        let _ = writeln!(
            out,
            "| `{}` | {}{timing} | {} | {} |",
            check.id, check.title, check.since, check.points
        );
    }
    out.push('\n');
    let phases: Vec<u32> = match phase {
        Some(n) => vec![n],
        None => phases::PHASES.iter().map(|p| p.number).collect(),
    };
    for n in phases {
        let checks = rubric(n);
        let points: u32 = checks.iter().map(|c| c.points).sum();
        let timing: u32 = checks.iter().filter(|c| c.timing).map(|c| c.points).sum();
        let _ = writeln!(
            out,
            "Phase {n} rubric: {} checks, {points} points ({timing} of them for timing).",
            checks.len()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_selects_whole_ids_or_whole_groups() {
        assert!(selects("api/calloc", "api/calloc"));
        assert!(selects("api", "api/calloc"));
        assert!(selects("api/", "api/calloc"));
        assert!(!selects("api/call", "api/calloc"));
        assert!(!selects("ap", "api/calloc"));
    }

    #[test]
    fn options_pick_the_rubric_and_can_leave_timing_out() {
        let mut options = Options::new(1);
        assert!(options.checks().iter().all(|c| c.since == 1));
        assert!(options.checks().iter().any(|c| c.timing));
        options.skip_timing = true;
        assert!(options.checks().iter().all(|c| !c.timing));
        options.only = vec!["misuse".into()];
        let ids: Vec<&str> = options.checks().iter().map(|c| c.id).collect();
        assert_eq!(ids, ["misuse/double-free", "misuse/invalid-free"]);
    }

    fn graded(id: &'static str, verdict: Verdict) -> Graded {
        let check = checks::CATALOGUE.iter().find(|c| c.id == id).unwrap();
        Graded {
            check,
            verdict,
            elapsed: Duration::ZERO,
            attempts: 1,
            partial: None,
        }
    }

    #[test]
    fn skipped_checks_leave_the_maximum_and_failed_ones_earn_nothing() {
        let report = Report {
            lib: "x.so".into(),
            phase: 1,
            results: vec![
                graded("api/alignment", Verdict::Pass("fine".into())),
                graded("api/calloc", Verdict::Fail("not zero".into())),
                graded("programs/git", Verdict::Skip("no git".into())),
            ],
            elapsed: Duration::ZERO,
        };
        let (alignment, calloc) = (5, 5);
        assert_eq!(report.score(), alignment);
        assert_eq!(report.max_score(), alignment + calloc);
        assert!(
            report
                .summary()
                .contains("skipped, and left out of the maximum: programs/git")
        );
        let json = report.gradescope();
        let tests = json.get("tests").and_then(Json::as_array).unwrap();
        assert_eq!(tests[2].get("max_score"), Some(&Json::Number(0.0)));
        assert_eq!(
            tests[1].get("status").and_then(Json::as_str),
            Some("failed")
        );
    }
}
