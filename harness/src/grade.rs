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
//! - [`rules`]: the gate (the allocator manages its own memory), each phase's core
//!   checks and the pass mark, the checks that look for races, and why each check asks
//!   what it asks.
//! - [`gradescope`]: `harness gradescope`, a complete Gradescope autograder.
//!
//! Every run of a check shares the check's time limit ([`Options::check_limit`]) and
//! a ceiling on what it may write ([`Options::output_limit`]), so a grade ends within
//! the rubric's total time limit ([`Options::time_limit`]) whatever the allocator does.
//! A run that crashes or hangs is named in the check's line with the command that
//! runs it again alone, and that command under gdb.

pub mod batch;
pub mod cli;
pub mod elf;
pub mod gradescope;
pub mod json;
pub mod perf;
pub mod rules;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::checks::{self, Check, Subject, Verdict};
use crate::phases;
use crate::runner::{self, Ending, Limits, Run, Trouble};
use json::Json;

/// How many times a timing check may run (alone each time) before it counts as failed.
/// Each run of `perf/small-1m` is itself the best of up to three timings.
pub const TIMING_ATTEMPTS: u32 = 2;

/// How long one check may take, all its runs together, unless told otherwise.
pub const CHECK_LIMIT: Duration = Duration::from_secs(180);

/// How many bytes a check's program may write to any one file (its output included).
pub const OUTPUT_LIMIT: u64 = 256 << 20;

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
    /// The time one check may take, all its runs together (a timing check's retry
    /// and a racy check's repetitions get a limit of their own each).
    pub check_limit: Duration,
    /// The most bytes a check's program may write to one file.
    pub output_limit: u64,
}

impl Options {
    pub fn new(phase: u32) -> Options {
        Options {
            phase,
            only: Vec::new(),
            jobs: default_jobs(),
            skip_timing: false,
            check_limit: CHECK_LIMIT,
            output_limit: OUTPUT_LIMIT,
        }
    }

    /// The longest a grade with these options can take: every check's limit, each
    /// run as often as it may be (timing retries, race repetitions), one after the
    /// other. Checks running side by side only make it shorter.
    pub fn time_limit(&self) -> Duration {
        self.checks()
            .iter()
            .map(|check| self.check_limit * runs_allowed(check))
            .sum()
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
    let gate = std::iter::once(&rules::OWN_MEMORY);
    let own = [&perf::TRACES].into_iter().filter(|c| c.since <= phase);
    let mut checks: Vec<&'static Check> = gate.chain(checks::rubric(phase)).chain(own).collect();
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
    /// The runs under the allocator that crashed or hung, to run again alone.
    pub troubles: Vec<Trouble>,
}

impl std::fmt::Debug for Graded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graded")
            .field("check", &self.check.id)
            .field("verdict", &self.verdict)
            .field("elapsed", &self.elapsed)
            .field("attempts", &self.attempts)
            .field("partial", &self.partial)
            .field("troubles", &self.troubles)
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

    /// `pass`, `part` (some of the points), `FAIL` or `skip`: failures stand out in
    /// a column.
    pub fn result_word(&self) -> &'static str {
        match self.verdict {
            Verdict::Pass(_) if self.partial.is_some_and(|p| p < self.check.points) => "part",
            Verdict::Pass(_) => "pass",
            Verdict::Fail(_) => "FAIL",
            Verdict::Skip(_) => "skip",
        }
    }

    /// What happened, for people: the check's own words, and for a timing or racy
    /// check how it was run.
    pub fn note(&self) -> String {
        let (Verdict::Pass(text) | Verdict::Fail(text) | Verdict::Skip(text)) = &self.verdict;
        let times = |n: u32, what: &str| {
            if n == 1 {
                format!("1 {what}")
            } else {
                format!("{n} {what}s")
            }
        };
        if self.check.timing {
            format!(
                "{text} [timing: ran alone, {}]",
                times(self.attempts, "attempt")
            )
        } else if rules::is_racy(self.check.id) {
            let how = match self.verdict {
                Verdict::Fail(_) => format!("failed on run {} of up to {RACE_RUNS}", self.attempts),
                _ => format!("{} passed", times(self.attempts, "run")),
            };
            format!("{text} [race check: {how}]")
        } else {
            text.clone()
        }
    }

    /// For a check that failed because a run crashed or hung: which run, the command
    /// that runs it again alone, and that command under gdb. Empty otherwise.
    pub fn reproduction(&self, lib: &Path, phase: u32) -> Vec<String> {
        if !matches!(self.verdict, Verdict::Fail(_)) {
            return Vec::new();
        }
        let Some(trouble) = self.troubles.first() else {
            return Vec::new();
        };
        let program = trouble
            .command
            .rsplit(" LD_PRELOAD=")
            .next()
            .and_then(|rest| rest.split_once(' ').map(|(_, command)| command))
            .unwrap_or(&trouble.command);
        let how = match trouble.ending {
            Ending::TimedOut(limit) => format!("hung (stopped after {} s)", runner::seconds(limit)),
            Ending::Signalled(signal) => format!("crashed with {}", runner::signal_name(signal)),
            Ending::Exited(code) => format!("exited with {code}"),
        };
        let mut lines = vec![format!("in the step `{program}`, which {how}")];
        if trouble.stdin_bytes > 0 {
            lines.push(format!(
                "it reads {} bytes the grader writes to its stdin: run the check again with \
                 `harness grade --lib {} --phase {phase} --only {}`",
                trouble.stdin_bytes,
                lib.display(),
                self.check.id
            ));
        }
        lines.push(format!("run it alone: {}", trouble.command));
        lines.push(format!("under gdb:    {}", trouble.gdb));
        lines
    }
}

/// How many times a check may run: timing checks are retried, racy checks repeated.
fn runs_allowed(check: &Check) -> u32 {
    if check.timing {
        TIMING_ATTEMPTS
    } else if rules::is_racy(check.id) {
        RACE_RUNS
    } else {
        1
    }
}

use rules::RACE_RUNS;

/// Everything one grading produced.
#[derive(Clone, Debug)]
pub struct Report {
    /// The allocator as it was named (not the copy that may have been preloaded).
    pub lib: PathBuf,
    pub phase: u32,
    /// In catalogue order.
    pub results: Vec<Graded>,
    pub elapsed: Duration,
    /// The functions of the family the library does not define, with what that
    /// causes ([`elf::FAMILY`]).
    pub missing: Vec<(&'static str, &'static str)>,
}

/// Why a score is not the sum of its points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ruling {
    /// The sum of the points stands.
    Points,
    /// The gate failed: the score is 0.
    Gate(String),
    /// Core checks failed (their ids): the score is at most one under the pass mark.
    Capped(Vec<&'static str>),
}

impl Report {
    /// The sum of the points earned, before the [`rules`].
    pub fn points(&self) -> u32 {
        self.results.iter().filter_map(Graded::earned).sum()
    }

    /// The score: the points, under the [`rules`] (the gate, the core checks).
    pub fn score(&self) -> u32 {
        match self.ruling() {
            Ruling::Points => self.points(),
            Ruling::Gate(_) => 0,
            Ruling::Capped(_) => self.points().min(self.pass_mark().saturating_sub(1)),
        }
    }

    /// The least score that passes: [`rules::PASS_PERCENT`] of the maximum.
    pub fn pass_mark(&self) -> u32 {
        (self.max_score() * rules::PASS_PERCENT).div_ceil(100)
    }

    pub fn passed(&self) -> bool {
        self.score() >= self.pass_mark()
    }

    pub fn ruling(&self) -> Ruling {
        let failed = |g: &&Graded| matches!(g.verdict, Verdict::Fail(_));
        if let Some(gate) = self
            .results
            .iter()
            .filter(failed)
            .find(|g| std::ptr::eq(g.check, &rules::OWN_MEMORY))
        {
            let (Verdict::Pass(why) | Verdict::Fail(why) | Verdict::Skip(why)) = &gate.verdict;
            return Ruling::Gate(why.clone());
        }
        let core: Vec<&'static str> = self
            .results
            .iter()
            .filter(failed)
            .filter(|g| rules::is_core(g.check.id).is_some())
            .map(|g| g.check.id)
            .collect();
        if core.is_empty() {
            Ruling::Points
        } else {
            Ruling::Capped(core)
        }
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
        let passed = if self.passed() {
            "passed"
        } else {
            "not passed"
        };
        let mut line = format!(
            "score: {}/{} ({passed}: the pass mark is {}",
            self.score(),
            self.max_score(),
            self.pass_mark()
        );
        match self.ruling() {
            Ruling::Points => {}
            Ruling::Gate(_) => line.push_str(
                "; 0 because api/own-memory failed: the blocks come from glibc's malloc, so no \
                 check graded your allocator",
            ),
            Ruling::Capped(core) => {
                let what: Vec<String> = core
                    .iter()
                    .map(|id| format!("{id} ({})", rules::is_core(id).unwrap_or("")))
                    .collect();
                let _ = write!(
                    line,
                    "; {} points, capped under the pass mark because a core check failed: {}",
                    self.points(),
                    what.join(", ")
                );
            }
        }
        let _ = write!(
            line,
            "; {} of {} checks passed",
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
        for line in self.missing_lines() {
            let _ = writeln!(out, "{line}");
        }
        if !self.missing.is_empty() {
            out.push('\n');
        }
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
                self.note_of(graded)
            );
            for line in graded.reproduction(&self.lib, self.phase) {
                let _ = writeln!(out, "{:width$}                  {line}", "");
            }
        }
        let _ = writeln!(out, "\n{}", self.summary());
        out
    }

    /// A check's note, and when it failed while the library lacks exports, which
    /// missing function explains it (or may).
    pub fn note_of(&self, graded: &Graded) -> String {
        let note = graded.note();
        if !matches!(graded.verdict, Verdict::Fail(_)) || self.missing.is_empty() {
            return note;
        }
        let named: &[&str] = match graded.check.id {
            "api/memalign" => &[
                "posix_memalign",
                "aligned_alloc",
                "memalign",
                "valloc",
                "pvalloc",
            ],
            "api/usable-size" => &["malloc_usable_size"],
            "api/realloc" => &["reallocarray"],
            _ => &[],
        };
        let missing: Vec<&(&str, &str)> = self
            .missing
            .iter()
            .filter(|(name, _)| named.contains(name))
            .collect();
        if let Some((_, consequence)) = missing.first() {
            let names: Vec<&str> = missing.iter().map(|(name, _)| *name).collect();
            return format!(
                "{note} -- the library does not export {}: {consequence}",
                names.join(", ")
            );
        }
        let others: Vec<&str> = self
            .missing
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| *name != "reallocarray")
            .collect();
        if others.is_empty() {
            note
        } else {
            format!(
                "{note} -- perhaps because the library does not export {} (glibc's runs instead; \
                 see the warnings)",
                others.join(", ")
            )
        }
    }

    /// "warning: the library does not export X: consequence", one line per function.
    pub fn missing_lines(&self) -> Vec<String> {
        self.missing
            .iter()
            .map(|(name, consequence)| {
                format!("warning: the library does not export {name}: {consequence}")
            })
            .collect()
    }

    /// Gradescope's `results.json`: `score`, `max_score`, `output`, and one entry per
    /// check in `tests` with `name`, `score`, `max_score`, `status`, `output`,
    /// `visibility` and `execution_time` (a skipped check has `max_score` 0 and says
    /// why it was skipped). When a rule changes the score, the sum of the tests'
    /// scores is not the total: the total `score` is what counts, and `output` says why.
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
                let status = if graded.result_word() == "pass" {
                    "passed"
                } else {
                    "failed"
                };
                fields.push(("status", Json::string(status)));
            }
            let mut output = match &graded.verdict {
                Verdict::Skip(_) => format!("skipped (not counted): {}", graded.note()),
                _ => self.note_of(graded),
            };
            for line in graded.reproduction(&self.lib, self.phase) {
                output.push('\n');
                output.push_str(&line);
            }
            fields.push(("output", Json::string(output)));
            fields.push(("visibility", Json::string("visible")));
            fields.push((
                "execution_time",
                Json::Number((graded.elapsed.as_secs_f64() * 10.0).round() / 10.0),
            ));
            Json::object(fields)
        });
        let mut output = format!(
            "phase {} rubric, graded by mymalloc's harness: {}",
            self.phase,
            self.summary()
        );
        for line in self.missing_lines() {
            output.push('\n');
            output.push_str(&line);
        }
        Json::object([
            ("score", Json::Number(self.score().into())),
            ("max_score", Json::Number(self.max_score().into())),
            ("output", Json::string(output)),
            ("visibility", Json::string("visible")),
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
    let limits = |started: Instant| {
        Limits::new(
            Some(started + options.check_limit),
            Some(options.output_limit),
        )
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
                    let graded = run_repeated(check, &subject_for(check), &limits);
                    progress(&graded);
                    store(&slots[index], graded);
                }
            });
        }
    });

    // Timing checks: alone, and a failure gets another attempt.
    for (index, check) in selected.iter().enumerate().filter(|(_, c)| c.timing) {
        let graded = run_repeated(check, &subject_for(check), &limits);
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
        missing: elf::missing_exports(lib),
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

/// Runs a check as often as it needs ([`runs_allowed`]), each run under limits of
/// its own (`limits` makes them from the run's start). A timing check stops at its
/// first success, a racy check at its first failure, and the last run's verdict
/// counts.
fn run_repeated(
    check: &'static Check,
    subject: &Subject,
    limits: &dyn Fn(Instant) -> Limits,
) -> Graded {
    let started = Instant::now();
    let mut attempts = 0;
    let mut troubles = Vec::new();
    let (verdict, partial) = loop {
        attempts += 1;
        let ((verdict, partial), more) =
            runner::with_limits(limits(Instant::now()), || run_check(check, subject));
        troubles.extend(more);
        let failed = matches!(verdict, Verdict::Fail(_));
        let again = if check.timing {
            failed
        } else {
            !failed && rules::is_racy(check.id)
        };
        if !again || attempts >= runs_allowed(check) {
            break (verdict, partial);
        }
    };
    Graded {
        check,
        verdict,
        elapsed: started.elapsed(),
        attempts,
        partial,
        troubles,
    }
}

/// The table of rules ([`rules::rules_markdown`]) with glibc's column measured here:
/// every non-timing check of the last phase's rubric run with glibc's own allocator
/// preloaded (libc.so.6 itself, which changes nothing).
pub fn rules_table(tools: &Path) -> Result<String, String> {
    let glibc = glibc_library()?;
    let mut options = Options::new(phases::last().number);
    options.skip_timing = true;
    let report = grade(&glibc, tools, &options, &|_| {})?;
    let verdicts: Vec<(&'static str, Option<Verdict>)> = rubric(options.phase)
        .into_iter()
        .map(|check| (check.id, report.result(check.id).map(|g| g.verdict.clone())))
        .collect();
    Ok(rules::rules_markdown(&verdicts))
}

/// The C library the harness itself runs on, found in its own memory map.
fn glibc_library() -> Result<PathBuf, String> {
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("cannot read /proc/self/maps: {e}"))?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))
        })
        .map(PathBuf::from)
        .ok_or_else(|| "cannot find the C library in /proc/self/maps".into())
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
            troubles: Vec::new(),
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
            missing: Vec::new(),
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
