//! `harness bench`: every phase against glibc (and jemalloc, mimalloc, tcmalloc where
//! installed) on the same workloads, in one run, written up as `docs/benchmarks.md`
//! with two charts in `docs/src/bench/`.
//!
//! The workloads are `bench_alloc`'s: the standard allocator workloads ([`STANDARD`],
//! each at one thread and at one per processor), the small-block loop, the malloc-lab
//! traces of `harness/traces/`, and real programs' recorded traces
//! (`harness/traces/recorded/`, replayed with their own threads).
//!
//! Runs are interleaved (repetition by repetition, each workload under each allocator
//! in turn) so that a burst of load on a shared machine hits every allocator alike;
//! each cell of the report is the median of the repetitions, with the spread (fastest
//! over slowest) beside it so that a reader sees which ratios are noise. A ratio to
//! glibc is paired: the median, over the repetitions, of glibc's rate over the
//! allocator's in the same repetition, whose runs follow each other within seconds. A
//! ratio of medians would compare runs minutes apart, and a host whose load drifts
//! (glibc's `--small` went from 23 to 37 ms within an hour on 1 December 2026) moves it
//! by more than the differences it is there to show. A run that
//! exceeds the time limit is reported as a timeout (and not repeated); one that crashes
//! or reports broken blocks as failed, with the reason. The report is generated, never
//! typed: the command that made it is at its top.
//!
//! Repetition k of a trace replays its variant k (`bench_alloc --trace FILE --variant
//! k`: variant 0 is the trace as written, each other one has one stray 48-byte block
//! more), under every allocator alike. A replay's utilization is repeatable, but on a
//! trace whose heap holds a few large blocks it is one draw from a wide spread (see
//! `trace::stray_block_at`): on the generated `realloc_buffers` seed 605 glibc's is
//! 75.1% as written and 54.5% to 75.1% over eight variants. So the report's
//! utilization, a median over the repetitions, is a median over variants.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::phases;
use crate::runner::{Ending, Run};

/// The standard workloads (`bench_alloc NAME`, see its `workloads` module) and the
/// `--iterations` each runs with under `--quick`.
pub const STANDARD: &[(&str, usize)] = &[
    ("larson", 300),
    ("xmalloc", 40),
    ("cache-scratch", 2000),
    ("cache-thrash", 2000),
    ("mstress", 400),
    ("rptest", 1000),
    ("alloc-test", 500),
    ("malloc-large", 6),
    ("mleak", 4000),
];

/// Real programs' traces, in `harness/traces/recorded/`.
pub const RECORDED: &[&str] = &["gcc", "python3", "git"];

/// An allocator in the race.
#[derive(Clone, Debug)]
pub struct Contender {
    pub name: String,
    /// `None`: the C library's own allocator.
    pub lib: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

impl Contender {
    /// The C library's own allocator: no preload. The reference of every ratio.
    pub fn glibc() -> Contender {
        Contender {
            name: "glibc".into(),
            lib: None,
            env: Vec::new(),
        }
    }
}

/// Where Debian's packages put the well-known allocators (`libjemalloc2`,
/// `libmimalloc2.0`, `libtcmalloc-minimal4`).
const SYSTEM_ALLOCATORS: &[(&str, &str)] = &[
    ("jemalloc", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
    ("mimalloc", "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"),
    (
        "tcmalloc",
        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    ),
];

/// glibc first (the reference for ratios), then every phase, then each phase's debug
/// mode where it has one ([`phases::Phase::debug_mode`]), then what is installed.
pub fn contenders() -> Vec<Contender> {
    let mut all = vec![Contender::glibc()];
    for phase in phases::PHASES {
        all.push(Contender {
            name: phase.package.into(),
            lib: Some(phase.lib_path()),
            env: Vec::new(),
        });
    }
    // The debug modes, to show what they cost. The full heap check takes time in
    // proportion to the live blocks; run on every call (the default) it would take
    // hours here, so it runs every 1000th call, as the name says.
    for phase in phases::PHASES.iter().filter(|phase| phase.debug_mode) {
        all.push(Contender {
            name: format!("{} debug (check every 1000 calls)", phase.package),
            lib: Some(phase.lib_path()),
            env: [
                ("MALLOC_DEBUG", "1"),
                ("MALLOC_DEBUG_SEED", "42"),
                ("MALLOC_CHECK_EVERY", "1000"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .to_vec(),
        });
    }
    for (name, path) in SYSTEM_ALLOCATORS {
        if Path::new(path).is_file() {
            all.push(Contender {
                name: (*name).into(),
                lib: Some(path.into()),
                env: Vec::new(),
            });
        }
    }
    all
}

/// One cell's command: a workload at a thread count.
#[derive(Clone, Debug)]
pub struct Workload {
    /// What the workload is called (`larson`, `small`, `trace random`, `trace gcc`).
    pub name: String,
    pub threads: usize,
    pub args: Vec<String>,
    /// A trace replay, which reports utilization too.
    pub trace: bool,
    /// Run at one thread and at one per processor: drawn in the threads chart.
    pub scales: bool,
}

impl Workload {
    /// `larson, 2 threads`
    pub fn label(&self) -> String {
        let plural = if self.threads == 1 { "" } else { "s" };
        format!("{}, {} thread{plural}", self.name, self.threads)
    }
}

/// Which workloads a mean is taken over: the issues' goals are stated at one thread
/// and at more (one per processor, and the recorded traces' own thread counts).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threads {
    Any,
    One,
    More,
}

impl Threads {
    fn admits(self, workload: &Workload) -> bool {
        match self {
            Threads::Any => true,
            Threads::One => workload.threads == 1,
            Threads::More => workload.threads > 1,
        }
    }

    fn mean_label(self) -> &'static str {
        match self {
            Threads::Any => "geometric mean",
            Threads::One => "geometric mean, 1 thread",
            Threads::More => "geometric mean, 2+ threads",
        }
    }
}

/// The processors this machine has: the second thread count of the scaling workloads.
pub fn processors() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn workloads(quick: bool) -> Vec<Workload> {
    let mut counts = vec![1, processors()];
    counts.dedup();
    let mut list = Vec::new();
    let scaled = |name: &str, args: Vec<String>, list: &mut Vec<Workload>| {
        for &threads in &counts {
            let mut args = args.clone();
            args.extend(["--threads".to_string(), threads.to_string()]);
            list.push(Workload {
                name: name.to_string(),
                threads,
                args,
                trace: false,
                scales: true,
            });
        }
    };
    for (name, quick_iterations) in STANDARD {
        let mut args = vec![name.to_string()];
        if quick {
            args.extend(["--iterations".to_string(), quick_iterations.to_string()]);
        }
        scaled(name, args, &mut list);
    }
    let small = if quick { "20000" } else { "1000000" };
    scaled("small", vec!["--small".into(), small.into()], &mut list);
    let traces = phases::workspace_root().join("harness/traces");
    let lab = crate::trace::SUITE.iter().map(|(name, _, _)| *name);
    for name in lab.take(if quick { 1 } else { usize::MAX }) {
        let path = traces.join(format!("{name}.rep"));
        list.push(Workload {
            name: format!("trace {name}"),
            threads: 1,
            args: vec!["--trace".into(), path.to_string_lossy().into_owned()],
            trace: true,
            scales: false,
        });
    }
    // Quick runs replay python3's only: the one with threads.
    for name in RECORDED.iter().filter(|n| !quick || **n == "python3") {
        let path = traces.join(format!("recorded/{name}.trc"));
        let threads = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| {
                crate::threaded_trace::ThreadedTrace::parse(&text)
                    .ok()
                    .map(|t| t.threads)
            })
            .unwrap_or(1);
        list.push(Workload {
            name: format!("trace {name}"),
            threads,
            args: vec!["--trace".into(), path.to_string_lossy().into_owned()],
            trace: true,
            scales: false,
        });
    }
    list
}

/// One run's numbers, as bench_alloc reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub peak_rss_kib: u64,
    pub utilization: Option<f64>,
}

/// Reads bench_alloc's report line, e.g. `…: 0.081 s, 24831273 ops/s; peak RSS 2304 KiB`
/// (small), `… in 0.2113 s, 1893043 ops/s; peak RSS 6144 KiB; ok` (a workload) or
/// `… in 0.0016 s, 7339203 ops/s; …; utilization 51.8%; peak RSS 9420 KiB` (a trace).
pub fn parse_sample(stdout: &str) -> Option<Sample> {
    let line = stdout.lines().rev().find(|l| l.contains("ops/s"))?;
    let seconds_text = line.split(" s,").next()?.rsplit(' ').next()?;
    let ops_text = line.split(" ops/s").next()?.rsplit(' ').next()?;
    let after = |label: &str, end: &str| -> Option<f64> {
        line.split(label)
            .nth(1)?
            .split(end)
            .next()?
            .trim()
            .parse()
            .ok()
    };
    Some(Sample {
        seconds: seconds_text.parse().ok()?,
        ops_per_sec: ops_text.parse().ok()?,
        peak_rss_kib: after("peak RSS ", " KiB")? as u64,
        utilization: after("utilization ", "%"),
    })
}

pub struct Options {
    pub reps: usize,
    pub quick: bool,
    /// The time limit of one run.
    pub timeout: Duration,
    /// `--only`: names (or parts of names) of workloads and allocators to run; empty
    /// runs everything. glibc always runs: it is the reference.
    pub only: Vec<String>,
}

impl Options {
    pub fn new(quick: bool) -> Options {
        Options {
            reps: if quick { 1 } else { 3 },
            quick,
            timeout: Duration::from_secs(if quick { 10 } else { 20 }),
            only: Vec::new(),
        }
    }
}

/// How one run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Done(Sample),
    TimedOut,
    /// Crashed, exited with an error (a block lost its contents), or printed no numbers.
    Failed(String),
}

/// `runs[workload][contender]`: every repetition's outcome. A cell that timed out or
/// failed is not run again.
pub struct Results {
    pub contenders: Vec<Contender>,
    pub workloads: Vec<Workload>,
    pub runs: Vec<Vec<Vec<Outcome>>>,
    pub reps: usize,
    pub timeout: Duration,
    pub command: String,
    /// The date of the run (UTC), for chapters that quote the report.
    pub date: String,
}

/// Keeps the items whose name contains one of `patterns`, if any of them names one.
fn select<T>(items: Vec<T>, name: impl Fn(&T) -> String, patterns: &[String]) -> Vec<T> {
    let matching = |item: &T| patterns.iter().any(|p| name(item).contains(p.as_str()));
    if items.iter().any(matching) {
        items.into_iter().filter(matching).collect()
    } else {
        items
    }
}

pub fn run(options: &Options, mut progress: impl FnMut(&str)) -> Result<Results, String> {
    phases::build_all()?;
    let mut contenders = contenders();
    let mut workloads = workloads(options.quick);
    if !options.only.is_empty() {
        let known = |p: &String| {
            contenders.iter().any(|c| c.name.contains(p.as_str()))
                || workloads.iter().any(|w| w.label().contains(p.as_str()))
        };
        if let Some(unknown) = options.only.iter().find(|p| !known(p)) {
            return Err(format!("--only {unknown:?} names no workload or allocator"));
        }
        let glibc = contenders.remove(0);
        contenders = select(contenders, |c| c.name.clone(), &options.only);
        contenders.insert(0, glibc);
        workloads = select(workloads, Workload::label, &options.only);
    }
    let mut runs = vec![vec![Vec::new(); contenders.len()]; workloads.len()];
    let total = options.reps * workloads.len() * contenders.len();
    let started = Instant::now();
    let mut done = 0;
    for rep in 0..options.reps {
        for (w, workload) in workloads.iter().enumerate() {
            for (c, contender) in contenders.iter().enumerate() {
                done += 1;
                let cell: &mut Vec<Outcome> = &mut runs[w][c];
                if cell.iter().any(|o| !matches!(o, Outcome::Done(_))) {
                    continue;
                }
                let outcome = run_one(workload, contender, options.timeout, rep);
                let shown = match &outcome {
                    Outcome::Done(sample) => format_seconds(sample.seconds),
                    Outcome::TimedOut => "timeout".into(),
                    Outcome::Failed(why) => format!("FAILED: {why}"),
                };
                let variant = if workload.trace {
                    format!(" (variant {rep})")
                } else {
                    String::new()
                };
                progress(&format!(
                    "[{done}/{total} {:.0}s] rep {} {}{variant} on {}: {shown}",
                    started.elapsed().as_secs_f64(),
                    rep + 1,
                    workload.label(),
                    contender.name,
                ));
                cell.push(outcome);
            }
        }
    }
    let mut command = format!(
        "cargo run --release -p harness --bin harness -- bench --reps {}",
        options.reps
    );
    if options.quick {
        command.push_str(" --quick");
    }
    if !options.only.is_empty() {
        let _ = write!(command, " --only {}", options.only.join(","));
    }
    Ok(Results {
        contenders,
        workloads,
        runs,
        reps: options.reps,
        timeout: options.timeout,
        command,
        date: today(),
    })
}

/// Repetition `rep` of `workload` under `contender`: of a trace, its variant `rep`.
fn run_one(workload: &Workload, contender: &Contender, timeout: Duration, rep: usize) -> Outcome {
    if workload.trace {
        let mut args = workload.args.clone();
        args.extend(["--variant".to_string(), rep.to_string()]);
        return run_bench_alloc(&args, contender, timeout);
    }
    run_bench_alloc(&workload.args, contender, timeout)
}

/// One run of the release `bench_alloc` with `args` under `contender`, and its numbers.
pub fn run_bench_alloc(args: &[String], contender: &Contender, timeout: Duration) -> Outcome {
    let mut command = Run::new(phases::bench_alloc_release())
        .args(args)
        .preload(contender.lib.as_deref())
        .timeout(timeout);
    for (key, value) in &contender.env {
        command = command.env(key, value);
    }
    match command.run() {
        // The peak RSS is bench_alloc's own (VmHWM), not the runner's ru_maxrss, which
        // Linux carries over from this process.
        Ok(outcome) if outcome.succeeded() => match parse_sample(&outcome.stdout_text()) {
            Some(sample) => Outcome::Done(sample),
            None => Outcome::Failed("no numbers in its output".into()),
        },
        Ok(outcome) if matches!(outcome.ending, Ending::TimedOut(_)) => Outcome::TimedOut,
        Ok(outcome) => {
            let last = outcome
                .stdout_text()
                .lines()
                .rfind(|l| l.contains("FAILED"))
                .map(str::to_string);
            Outcome::Failed(last.unwrap_or_else(|| outcome.to_string()))
        }
        Err(e) => Outcome::Failed(format!("cannot start bench_alloc: {e}")),
    }
}

/// Today's date (UTC), from the system clock: `2026-11-30`.
fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// A cell's summary.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Done {
        seconds: f64,
        ops_per_sec: f64,
        /// Fastest rate over slowest, over the repetitions (1.00 = no spread).
        spread: f64,
        peak_rss_kib: f64,
        utilization: Option<f64>,
    },
    TimedOut,
    Failed,
    /// Not run (`--only`).
    Missing,
}

/// How an allocator's time compares with glibc's on one cell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ratio {
    Measured(f64),
    /// Timed out: slower than this (the time limit over glibc's time).
    AtLeast(f64),
    Unknown,
}

impl Ratio {
    pub fn show(self) -> String {
        match self {
            Ratio::Measured(r) => format!("{r:.2}x"),
            Ratio::AtLeast(r) => format!("> {r:.0}x"),
            Ratio::Unknown => "n/a".into(),
        }
    }
}

impl Results {
    pub fn cell(&self, w: usize, c: usize) -> Cell {
        let runs = &self.runs[w][c];
        if runs.contains(&Outcome::TimedOut) {
            return Cell::TimedOut;
        }
        if runs.iter().any(|o| matches!(o, Outcome::Failed(_))) {
            return Cell::Failed;
        }
        let samples: Vec<&Sample> = runs
            .iter()
            .filter_map(|o| match o {
                Outcome::Done(s) => Some(s),
                _ => None,
            })
            .collect();
        let pick = |f: &dyn Fn(&Sample) -> Option<f64>| {
            median(samples.iter().filter_map(|s| f(s)).collect())
        };
        let rates: Vec<f64> = samples.iter().map(|s| s.ops_per_sec).collect();
        let (Some(seconds), Some(ops_per_sec)) =
            (pick(&|s| Some(s.seconds)), pick(&|s| Some(s.ops_per_sec)))
        else {
            return Cell::Missing;
        };
        let fastest = rates.iter().copied().fold(f64::MIN, f64::max);
        let slowest = rates.iter().copied().fold(f64::MAX, f64::min);
        Cell::Done {
            seconds,
            ops_per_sec,
            spread: if slowest > 0.0 {
                fastest / slowest
            } else {
                1.0
            },
            peak_rss_kib: pick(&|s| Some(s.peak_rss_kib as f64)).unwrap_or(0.0),
            utilization: pick(&|s| s.utilization),
        }
    }

    /// The median, over the repetitions, of glibc's rate over the allocator's in the
    /// same repetition (2.00 = twice glibc's time; see the module's notes for why
    /// paired).
    pub fn ratio(&self, w: usize, c: usize) -> Ratio {
        let Cell::Done {
            seconds: reference_seconds,
            ..
        } = self.cell(w, 0)
        else {
            return Ratio::Unknown;
        };
        match self.cell(w, c) {
            Cell::Done { .. } => {
                // A cell holds its repetitions in order, and a done cell has only
                // finished runs: the i-th of each is repetition i.
                let paired = (self.runs[w][0].iter().zip(&self.runs[w][c]))
                    .filter_map(|pair| match pair {
                        (Outcome::Done(glibc), Outcome::Done(run)) if run.ops_per_sec > 0.0 => {
                            Some(glibc.ops_per_sec / run.ops_per_sec)
                        }
                        _ => None,
                    })
                    .collect();
                median(paired).map_or(Ratio::Unknown, Ratio::Measured)
            }
            Cell::TimedOut => {
                Ratio::AtLeast(self.timeout.as_secs_f64() / reference_seconds.max(1e-9))
            }
            _ => Ratio::Unknown,
        }
    }

    /// The geometric mean of an allocator's ratios over every workload; a timeout
    /// counts as its lower bound (so the mean is a lower bound too), a failed run is
    /// left out. Returns the mean, whether it is a lower bound, and how many cells
    /// were left out.
    pub fn geomean(&self, c: usize) -> (Option<f64>, bool, usize) {
        self.geomean_of(c, Threads::Any)
    }

    /// [`Results::geomean`] over the workloads that run on `threads`.
    pub fn geomean_of(&self, c: usize, threads: Threads) -> (Option<f64>, bool, usize) {
        let (mut log_sum, mut count, mut bound, mut left_out) = (0.0, 0, false, 0);
        for (w, workload) in self.workloads.iter().enumerate() {
            if !threads.admits(workload) {
                continue;
            }
            match self.ratio(w, c) {
                Ratio::Measured(r) => {
                    log_sum += r.ln();
                    count += 1;
                }
                Ratio::AtLeast(r) => {
                    log_sum += r.ln();
                    count += 1;
                    bound = true;
                }
                Ratio::Unknown => left_out += 1,
            }
        }
        let mean = (count > 0).then(|| (log_sum / count as f64).exp());
        (mean, bound, left_out)
    }

    /// An allocator's peak RSS over glibc's on one workload, where both ran.
    pub fn rss_ratio(&self, w: usize, c: usize) -> Option<f64> {
        match (self.cell(w, 0), self.cell(w, c)) {
            (
                Cell::Done {
                    peak_rss_kib: reference,
                    ..
                },
                Cell::Done { peak_rss_kib, .. },
            ) if reference > 0.0 => Some(peak_rss_kib / reference),
            _ => None,
        }
    }

    /// The geometric mean of an allocator's peak-RSS ratios over the workloads that
    /// run on `threads` and finished under both it and glibc, with how many did.
    pub fn rss_geomean_of(&self, c: usize, threads: Threads) -> Option<(f64, usize)> {
        let logs: Vec<f64> = (self.workloads.iter().enumerate())
            .filter(|(_, workload)| threads.admits(workload))
            .filter_map(|(w, _)| self.rss_ratio(w, c))
            .map(f64::ln)
            .collect();
        (!logs.is_empty()).then(|| {
            let mean = (logs.iter().sum::<f64>() / logs.len() as f64).exp();
            (mean, logs.len())
        })
    }

    pub fn show_geomean(&self, c: usize) -> String {
        self.show_geomean_of(c, Threads::Any)
    }

    fn show_geomean_of(&self, c: usize, threads: Threads) -> String {
        match self.geomean_of(c, threads) {
            (None, _, _) => "n/a".into(),
            (Some(mean), bound, left_out) => {
                let mut text = if bound {
                    format!("> {mean:.2}x")
                } else {
                    format!("{mean:.2}x")
                };
                if left_out > 0 {
                    let _ = write!(text, " ({left_out} failed left out)");
                }
                text
            }
        }
    }

    /// The Markdown report. `charts` is the folder of the charts, as the report links
    /// them (`src/bench`).
    pub fn render(&self, machine: &str, charts: &str) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Benchmarks\n");
        // mdBook includes the parts between anchors into the book's page
        // (docs/src/benchmarks.md), which links the charts from its own folder.
        let _ = writeln!(md, "<!-- ANCHOR: head -->");
        let _ = writeln!(
            md,
            "Generated by `{}` (or `just bench`) on {}; do not edit by hand. Each workload ran \
             {} time(s) under each allocator, interleaved; the tables give medians, and ratios \
             to glibc from the same run, paired repetition by repetition. A run that took longer than {} s was stopped and is \
             reported as a timeout (and not repeated).\n",
            self.command,
            self.date,
            self.reps,
            self.timeout.as_secs()
        );
        let _ = writeln!(md, "{machine}\n");
        let _ = writeln!(
            md,
            "How to read: *time vs glibc* is the median, over the repetitions, of glibc's rate \
             divided by the allocator's in the same repetition, whose runs follow each other \
             (2.00x = twice as slow; `> 40x`: timed out, so at least that); *spread* is the \
             fastest repetition's rate over the slowest's (1.00 = none; a ratio closer to 1.00x \
             than the spread is noise); *peak RSS* is bench_alloc's peak resident memory \
             (`VmHWM`); *utilization* is peak live payload / peak footprint (CS:APP's \
             measure, 100% is perfect; the footprint is the anonymous memory the replay \
             added, exact to the page), the median over the repetitions, repetition k \
             replaying variant k of the trace (`bench_alloc --variant`: the trace as written, \
             then with one stray 48-byte block, which moves where large blocks land). The workloads are `bench_alloc`'s (`bench_alloc --help`): the \
             standard allocator workloads, named after what they model (larson, xmalloc, \
             ...; each at 1 thread and at one per processor), the small-block loop, the \
             malloc-lab traces of `harness/traces/`, and real programs' recorded traces \
             (`harness/traces/recorded/`, replayed with their threads).\n"
        );
        let _ = writeln!(md, "<!-- ANCHOR_END: head -->\n");
        let _ = writeln!(
            md,
            "![Time ratio to glibc, per workload and allocator]({charts}/ratios.svg)\n"
        );
        let _ = writeln!(
            md,
            "![Throughput against threads, per workload and allocator]({charts}/threads.svg)\n"
        );
        let _ = writeln!(md, "<!-- ANCHOR: tables -->");
        self.render_summary(&mut md);
        for (w, workload) in self.workloads.iter().enumerate() {
            self.render_workload(&mut md, w, workload);
        }
        let failures: Vec<String> = self
            .workloads
            .iter()
            .enumerate()
            .flat_map(|(w, workload)| {
                self.contenders
                    .iter()
                    .enumerate()
                    .flat_map(move |(c, contender)| {
                        self.runs[w][c].iter().filter_map(move |o| match o {
                            Outcome::Failed(why) => {
                                Some(format!("{} on {}: {why}", workload.label(), contender.name))
                            }
                            _ => None,
                        })
                    })
            })
            .collect();
        if !failures.is_empty() {
            let _ = writeln!(md, "## Runs that failed\n");
            for failure in failures {
                let _ = writeln!(md, "- {failure}");
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(md, "<!-- ANCHOR_END: tables -->");
        md
    }

    fn render_summary(&self, md: &mut String) {
        let _ = writeln!(md, "## Summary: time vs glibc\n");
        let _ = writeln!(
            md,
            "Each cell is the allocator's time over glibc's, the median of the repetitions' ratios (its spread in brackets); \
             the last rows are geometric means over all workloads, over those at one thread \
             and over those on more.\n"
        );
        let names: Vec<&str> = self.contenders.iter().map(|c| c.name.as_str()).collect();
        let _ = writeln!(md, "| workload | {} |", names.join(" | "));
        let _ = writeln!(md, "|---|{}", "---:|".repeat(names.len()));
        for (w, workload) in self.workloads.iter().enumerate() {
            let cells: Vec<String> = (0..self.contenders.len())
                .map(|c| match (self.ratio(w, c), self.cell(w, c)) {
                    (ratio @ Ratio::Measured(_), Cell::Done { spread, .. }) => {
                        format!("{} ({spread:.2})", ratio.show())
                    }
                    (Ratio::AtLeast(r), _) => format!("timeout (> {r:.0}x)"),
                    (_, Cell::TimedOut) => "timeout".into(),
                    (_, Cell::Failed) => "failed".into(),
                    _ => "n/a".into(),
                })
                .collect();
            let _ = writeln!(md, "| {} | {} |", workload.label(), cells.join(" | "));
        }
        self.render_mean_rows(md, |c, threads| self.show_geomean_of(c, threads));
        let _ = writeln!(md);
        self.render_rss_summary(md, &names);
    }

    /// The peak resident memory of every run over glibc's, with the same three means.
    fn render_rss_summary(&self, md: &mut String, names: &[&str]) {
        let _ = writeln!(md, "## Summary: peak RSS vs glibc\n");
        let _ = writeln!(
            md,
            "Each cell is the allocator's median peak RSS over glibc's on the same workload \
             (1.00x = as much memory; timeouts and failures left out, `n/a`); the means are \
             geometric.\n"
        );
        let _ = writeln!(md, "| workload | {} |", names.join(" | "));
        let _ = writeln!(md, "|---|{}", "---:|".repeat(names.len()));
        for w in 0..self.workloads.len() {
            let cells: Vec<String> = (0..self.contenders.len())
                .map(|c| match self.rss_ratio(w, c) {
                    Some(ratio) => format!("{ratio:.2}x"),
                    None => "n/a".into(),
                })
                .collect();
            let label = self.workloads[w].label();
            let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
        }
        self.render_mean_rows(md, |c, threads| match self.rss_geomean_of(c, threads) {
            Some((mean, _)) => format!("{mean:.2}x"),
            None => "n/a".into(),
        });
        let _ = writeln!(md);
    }

    /// A summary table's last rows: one per [`Threads`] selection, each cell the mean
    /// that `cell(contender, threads)` shows.
    fn render_mean_rows(&self, md: &mut String, cell: impl Fn(usize, Threads) -> String) {
        for threads in [Threads::Any, Threads::One, Threads::More] {
            let means: Vec<String> = (0..self.contenders.len())
                .map(|c| cell(c, threads))
                .collect();
            let _ = writeln!(
                md,
                "| **{}** | {} |",
                threads.mean_label(),
                means.join(" | ")
            );
        }
    }

    fn render_workload(&self, md: &mut String, w: usize, workload: &Workload) {
        let _ = writeln!(
            md,
            "## {} (`bench_alloc {}`)\n",
            workload.label(),
            display_args(&workload.args)
        );
        let extra = if workload.trace { " utilization |" } else { "" };
        let _ = writeln!(
            md,
            "| allocator | time | ops/s | time vs glibc | spread | peak RSS |{extra}"
        );
        let _ = writeln!(
            md,
            "|---|---:|---:|---:|---:|---:|{}",
            if workload.trace { "---:|" } else { "" }
        );
        let blank = if workload.trace { " |" } else { "" };
        for (c, contender) in self.contenders.iter().enumerate() {
            match self.cell(w, c) {
                Cell::Done {
                    seconds,
                    ops_per_sec,
                    spread,
                    peak_rss_kib,
                    utilization,
                } => {
                    let _ = write!(
                        md,
                        "| {} | {} | {} | {} | {spread:.2} | {:.1} MiB |",
                        contender.name,
                        format_seconds(seconds),
                        format_rate(ops_per_sec),
                        self.ratio(w, c).show(),
                        peak_rss_kib / 1024.0
                    );
                    if workload.trace {
                        let shown = utilization.map_or("n/a".into(), |u| format!("{u:.1}%"));
                        let _ = write!(md, " {shown} |");
                    }
                    let _ = writeln!(md);
                }
                Cell::TimedOut => {
                    let _ = writeln!(
                        md,
                        "| {} | timeout (> {} s) | | {} | | |{blank}",
                        contender.name,
                        self.timeout.as_secs(),
                        self.ratio(w, c).show()
                    );
                }
                Cell::Failed => {
                    let _ = writeln!(md, "| {} | failed | | | | |{blank}", contender.name);
                }
                Cell::Missing => {
                    let _ = writeln!(md, "| {} | not run | | | | |{blank}", contender.name);
                }
            }
        }
        let _ = writeln!(md);
    }
}

fn display_args(args: &[String]) -> String {
    args.iter()
        .map(|a| match a.rfind("harness/traces/") {
            Some(i) => &a[i..],
            None => a.as_str(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn format_seconds(seconds: f64) -> String {
    if seconds < 0.1 {
        format!("{:.1} ms", seconds * 1000.0)
    } else {
        format!("{seconds:.2} s")
    }
}

fn format_rate(ops: f64) -> String {
    if ops >= 1e6 {
        format!("{:.1} M", ops / 1e6)
    } else {
        format!("{:.0} k", ops / 1e3)
    }
}

/// One line about the machine: processor, cores, memory, kernel, glibc.
pub fn describe_machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown processor".to_string(), |m| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or("?".to_string(), |kib| {
            format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let glibc = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) }
        .to_string_lossy()
        .into_owned();
    format!(
        "Machine: {model}, {cores} cores, {memory} memory, Linux {}, glibc {glibc}.",
        kernel.trim()
    )
}

unsafe extern "C" {
    fn gnu_get_libc_version() -> *const std::ffi::c_char;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_report_lines() {
        let small =
            parse_sample("small: 1000000 blocks of 1-64 B on 1 thread: 0.081 s, 24831273 ops/s; peak RSS 2304 KiB\n")
                .unwrap();
        assert_eq!(
            (
                small.seconds,
                small.ops_per_sec,
                small.utilization,
                small.peak_rss_kib
            ),
            (0.081, 24831273.0, None, 2304)
        );
        let trace = parse_sample(
            "trace random.rep: 39428 ops in 0.0027 s, 14803879 ops/s; peak payload 3078664 B; \
             peak footprint 3422401 B; utilization 90.0%; peak RSS 9420 KiB\n",
        )
        .unwrap();
        assert_eq!(
            (trace.seconds, trace.utilization, trace.peak_rss_kib),
            (0.0027, Some(90.0), 9420)
        );
        assert!(parse_sample("no numbers here").is_none());
    }

    #[test]
    fn reads_a_workload_line() {
        let sample = parse_sample(
            "larson: 2 threads, 820000 ops in 0.1532 s, 5352640 ops/s; peak RSS 14220 KiB; ok\n",
        )
        .unwrap();
        assert_eq!(
            (sample.seconds, sample.ops_per_sec, sample.peak_rss_kib),
            (0.1532, 5352640.0, 14220)
        );
    }

    fn sample(seconds: f64) -> Outcome {
        Outcome::Done(Sample {
            seconds,
            ops_per_sec: 1000.0 / seconds,
            peak_rss_kib: 1024,
            utilization: None,
        })
    }

    /// glibc and a phase on two workloads: the phase is twice as slow on one and times
    /// out on the other (or, in the second case, fails there).
    fn results(second: Outcome) -> Results {
        let workload = |name: &str| Workload {
            name: name.into(),
            threads: 1,
            args: vec![name.into()],
            trace: false,
            scales: true,
        };
        Results {
            contenders: contenders().into_iter().take(2).collect(),
            workloads: vec![workload("larson"), workload("mleak")],
            runs: vec![
                vec![
                    vec![sample(1.0), sample(1.1)],
                    vec![sample(2.0), sample(2.4)],
                ],
                vec![vec![sample(0.5)], vec![second]],
            ],
            reps: 2,
            timeout: Duration::from_secs(20),
            command: "harness bench".into(),
            date: "2026-11-30".into(),
        }
    }

    #[test]
    fn timeouts_are_lower_bounds_in_the_table_and_the_mean() {
        let results = results(Outcome::TimedOut);
        // Paired: repetition 1 at 1000 / 500, repetition 2 at 909.1 / 416.7; the median
        // of the two ratios is their mean.
        let Ratio::Measured(ratio) = results.ratio(0, 1) else {
            panic!("{:?}", results.ratio(0, 1));
        };
        assert!(
            (ratio - (2.0 + 909.091 / 416.667) / 2.0).abs() < 1e-3,
            "{ratio}"
        );
        assert_eq!(results.ratio(1, 1), Ratio::AtLeast(40.0));
        let report = results.render("Machine: test.", "src/bench");
        assert!(
            report.contains("| phase1-sbrk-freelist | timeout (> 20 s) | | > 40x | | |"),
            "{report}"
        );
        assert!(
            report.contains("| mleak, 1 thread | 1.00x (1.00) | timeout (> 40x) |"),
            "{report}"
        );
        // sqrt(2.091 * 40) = 9.15, a lower bound.
        assert!(
            report.contains("| **geometric mean** | 1.00x | > 9.15x |"),
            "{report}"
        );
        // Spread: fastest rate over slowest.
        assert!(
            report.contains("| larson, 1 thread | 1.00x (1.10) | 2.09x (1.20) |"),
            "{report}"
        );
        assert!(!report.contains("Runs that failed"));
    }

    #[test]
    fn ratios_pair_each_repetition_with_glibc_s_run_of_the_same_repetition() {
        let mut results = results(Outcome::TimedOut);
        // The phase is 1.1x glibc in every repetition but the second, where the machine
        // was busy for glibc's run alone. The medians of the times (3 s and 1.1 s) would
        // call the phase 2.7 times faster.
        results.runs[0] = vec![
            vec![sample(1.0), sample(3.0), sample(3.0)],
            vec![sample(1.1), sample(1.1), sample(3.3)],
        ];
        let Ratio::Measured(ratio) = results.ratio(0, 1) else {
            panic!("{:?}", results.ratio(0, 1));
        };
        assert!((ratio - 1.1).abs() < 1e-9, "{ratio}");
        assert_eq!(results.ratio(0, 0), Ratio::Measured(1.0));
    }

    #[test]
    fn means_at_one_thread_and_more_and_the_memory_summary() {
        let mut results = results(Outcome::TimedOut);
        results.workloads[1].threads = 2;
        // larson at 1 thread: the phase uses 3 MiB where glibc uses 1 MiB.
        for run in &mut results.runs[0][1] {
            if let Outcome::Done(sample) = run {
                sample.peak_rss_kib = 3072;
            }
        }
        let report = results.render("Machine: test.", "src/bench");
        assert!(report.contains("| mleak, 2 threads | 1.00x (1.00) | timeout (> 40x) |"));
        assert!(
            report.contains("| **geometric mean, 1 thread** | 1.00x | 2.09x |"),
            "{report}"
        );
        assert!(
            report.contains("| **geometric mean, 2+ threads** | 1.00x | > 40.00x |"),
            "{report}"
        );
        let memory = report
            .split("## Summary: peak RSS vs glibc")
            .nth(1)
            .expect("a memory summary");
        assert!(
            memory.contains("| larson, 1 thread | 1.00x | 3.00x |"),
            "{memory}"
        );
        // The timed-out run has no peak RSS: left out, not counted as glibc's.
        assert!(
            memory.contains("| mleak, 2 threads | 1.00x | n/a |"),
            "{memory}"
        );
        assert!(
            memory.contains("| **geometric mean, 1 thread** | 1.00x | 3.00x |"),
            "{memory}"
        );
        assert!(
            memory.contains("| **geometric mean, 2+ threads** | 1.00x | n/a |"),
            "{memory}"
        );
        let (mean, counted) = results.rss_geomean_of(1, Threads::Any).expect("a mean");
        assert!(
            (mean - 3.0).abs() < 1e-9 && counted == 1,
            "{mean} over {counted}"
        );
    }

    #[test]
    fn failures_are_listed_and_left_out_of_the_mean() {
        let results = results(Outcome::Failed("exit 1: FAILED: 3 blocks".into()));
        let report = results.render("Machine: test.", "src/bench");
        assert!(
            report.contains("| phase1-sbrk-freelist | failed | | | | |"),
            "{report}"
        );
        assert!(
            report.contains("| **geometric mean** | 1.00x | 2.09x (1 failed left out) |"),
            "{report}"
        );
        assert!(
            report.contains("- mleak, 1 thread on phase1-sbrk-freelist: exit 1: FAILED: 3 blocks"),
            "{report}"
        );
    }

    #[test]
    fn the_date_is_a_calendar_date() {
        let date = today();
        assert_eq!(date.len(), 10, "{date}");
        assert!(
            date.starts_with("20") && &date[4..5] == "-" && &date[7..8] == "-",
            "{date}"
        );
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
