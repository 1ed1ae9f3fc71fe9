//! The performance index of the CS:APP malloc lab, on the harness's trace suite
//! ([`crate::trace::SUITE`], the files in `harness/traces/`):
//!
//! ```text
//! P = w U + (1 - w) min(1, T / T_ref)        w = 0.6
//! ```
//!
//! - `U`, utilization: the mean over the traces of peak payload / peak footprint, as
//!   `bench_alloc --trace` measures them (each at most 1).
//! - `T`, throughput: every operation of the suite over the total replay time.
//! - `T_ref`: a quarter of glibc's throughput on the same traces, measured in the same
//!   grading run, so the index does not depend on how fast the grading machine is.
//!   (The lab itself compares with the C library's throughput; glibc is a tuned,
//!   multi-arena allocator, so a quarter of it is what a good free-list allocator
//!   reaches: the reference phase 2 saturates the term.)
//!
//! The check earns `round(P × points)`. As in the lab, a trace that fails (a crash,
//! NULL, a block that loses its contents) makes the whole index 0.
//!
//! Noise: a replay that takes under a second runs up to five times; its best
//! throughput and its median utilization count. The footprint behind utilization is
//! exact to the page (bench_alloc reads the page tables), so a malloc-lab trace's
//! utilization repeats to 0.1%; the median guards against an allocator whose layout
//! depends on addresses that change between runs. (An allocator whose `P` sits within
//! 0.005 of a rounding boundary can still earn a point more or less between runs.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bench::parse_sample;
use crate::checks::{Area, Check, Subject, Verdict};
use crate::runner::{Run, signal_name};
use crate::trace::{SUITE, Trace};

/// The weight of utilization in the index (the lab's choice).
pub const W: f64 = 0.6;
/// `T_ref` as a share of glibc's throughput measured alongside.
pub const REFERENCE_SHARE: f64 = 0.25;
/// Replays shorter than this are repeated (up to [`RUNS`] in all).
const SHORT: Duration = Duration::from_secs(1);
const RUNS: usize = 5;
/// One replay's time limit.
const LIMIT: Duration = Duration::from_secs(60);

/// The grader's own check: partial points, so it lives here rather than in the
/// catalogue of pass-or-fail checks (see [`super::rubric`]).
pub static TRACES: Check = Check {
    id: "perf/traces",
    title: "trace suite: P = 0.6 U + 0.4 min(1, T / T_ref), points in proportion",
    area: Area::Performance,
    since: 2,
    points: 10,
    timing: true,
    run: |subject| grade(subject).0,
};

/// One trace, replayed under one allocator.
#[derive(Clone, Debug)]
pub struct Replay {
    pub name: &'static str,
    pub ops: usize,
    /// Best of the runs.
    pub ops_per_sec: f64,
    /// Median of the runs, as a fraction (0.5 for 50%).
    pub utilization: f64,
}

/// The index and what it was computed from.
#[derive(Clone, Debug)]
pub struct Index {
    pub utilization: f64,
    pub throughput: f64,
    pub reference: f64,
    pub p: f64,
    pub replays: Vec<Replay>,
}

impl Index {
    pub fn from_replays(replays: Vec<Replay>, glibc: &[Replay]) -> Index {
        let utilization =
            replays.iter().map(|r| r.utilization.min(1.0)).sum::<f64>() / replays.len() as f64;
        let rate = throughput(&replays);
        let reference = REFERENCE_SHARE * throughput(glibc);
        let p = W * utilization + (1.0 - W) * (rate / reference).min(1.0);
        Index {
            utilization,
            throughput: rate,
            reference,
            p,
            replays,
        }
    }

    /// `round(P × points)`.
    pub fn points(&self, points: u32) -> u32 {
        (self.p * f64::from(points)).round() as u32
    }
}

/// Every operation over the total replay time.
fn throughput(replays: &[Replay]) -> f64 {
    let ops: usize = replays.iter().map(|r| r.ops).sum();
    let seconds: f64 = replays.iter().map(|r| r.ops as f64 / r.ops_per_sec).sum();
    ops as f64 / seconds
}

/// The verdict, and the points earned when the suite ran (`None` when it failed).
pub fn grade(subject: &Subject) -> (Verdict, Option<u32>) {
    match measure(subject) {
        Ok(index) => {
            let per_trace: Vec<String> = index
                .replays
                .iter()
                .map(|r| format!("{} {:.0}%", r.name, 100.0 * r.utilization))
                .collect();
            let note = format!(
                "P = {:.2}: U = {:.2} ({}), T = {:.0} ops/s, T_ref = {:.0} ops/s (glibc's / 4 here), \
                 T/T_ref = {:.2}",
                index.p,
                index.utilization,
                per_trace.join(", "),
                index.throughput,
                index.reference,
                index.throughput / index.reference
            );
            (Verdict::Pass(note), Some(index.points(TRACES.points)))
        }
        Err(problem) => (Verdict::Fail(problem), None),
    }
}

/// Replays the suite under the allocator and under glibc.
pub fn measure(subject: &Subject) -> Result<Index, String> {
    let files = suite_files(&subject.scratch)?;
    let bench = subject.tool("bench_alloc");
    let mut tested = Vec::new();
    let mut glibc = Vec::new();
    for (name, ops, path) in &files {
        tested.push(replay(&bench, Some(&subject.lib), name, *ops, path)?);
        glibc.push(
            replay(&bench, None, name, *ops, path)
                .map_err(|problem| format!("the reference run on glibc failed: {problem}"))?,
        );
    }
    Ok(Index::from_replays(tested, &glibc))
}

/// The suite's files with their operation counts: the committed ones in
/// `harness/traces/` (a test keeps them equal to the generator's output), or, for a
/// harness binary used outside the repository, the generator's output written into
/// `scratch`.
fn suite_files(scratch: &Path) -> Result<Vec<(&'static str, usize, PathBuf)>, String> {
    let committed = crate::phases::workspace_root()
        .join("harness")
        .join("traces");
    let mut files = Vec::new();
    for (name, _, make) in SUITE {
        let file = committed.join(format!("{name}.rep"));
        let read = std::fs::read_to_string(&file).ok();
        match read.as_deref().map(Trace::parse) {
            Some(Ok(trace)) => files.push((*name, trace.ops.len(), file)),
            _ => {
                let trace = make();
                let path = scratch.join(format!("{name}.rep"));
                std::fs::create_dir_all(scratch)
                    .and_then(|()| std::fs::write(&path, trace.to_text()))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                files.push((*name, trace.ops.len(), path));
            }
        }
    }
    Ok(files)
}

fn replay(
    bench: &Path,
    lib: Option<&PathBuf>,
    name: &'static str,
    ops: usize,
    path: &Path,
) -> Result<Replay, String> {
    let mut rates = Vec::new();
    let mut utilizations = Vec::new();
    while rates.len() < RUNS {
        // Through a shell that forks (no `exec`): on Linux a process's peak resident
        // set (`getrusage`'s `ru_maxrss`, which bench_alloc reads) starts from its
        // parent's when it is spawned, and the grader's own is larger than a trace's
        // footprint. A shell's fork child starts from the shell's, which is small.
        let outcome = Run::new("sh")
            .args(["-c", "\"$@\"; exit $?", "sh"])
            .arg(bench)
            .arg("--trace")
            .arg(path)
            .preload(lib.map(PathBuf::as_path))
            .timeout(LIMIT)
            .run()
            .map_err(|e| format!("could not start sh: {e}"))?;
        if !outcome.succeeded() {
            let how = match outcome.exit_code() {
                Some(code) if code > 128 => format!("crashed with {}", signal_name(code - 128)),
                _ => outcome.to_string(),
            };
            return Err(format!("trace {name}: bench_alloc --trace {how}"));
        }
        let stdout = outcome.stdout_text();
        let (rate, utilization) = parse_sample(&stdout)
            .and_then(|s| Some((s.ops_per_sec, s.utilization?)))
            .filter(|(rate, _)| *rate > 0.0)
            .ok_or_else(|| {
                format!("trace {name}: no throughput and utilization in bench_alloc's {stdout:?}")
            })?;
        rates.push(rate);
        utilizations.push(utilization / 100.0);
        if outcome.elapsed >= SHORT {
            break;
        }
    }
    utilizations.sort_by(f64::total_cmp);
    Ok(Replay {
        name,
        ops,
        ops_per_sec: rates.iter().copied().fold(0.0, f64::max),
        utilization: utilizations[utilizations.len() / 2],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(ops: usize, ops_per_sec: f64, utilization: f64) -> Replay {
        Replay {
            name: "t",
            ops,
            ops_per_sec,
            utilization,
        }
    }

    #[test]
    fn the_index_weighs_utilization_and_capped_throughput() {
        // glibc: 2000 ops in 2 ms, so T_ref = 250000 ops/s.
        let glibc = [replay(1000, 1e6, 0.9), replay(1000, 1e6, 0.9)];
        // Half of the reference throughput, utilization 0.5 and 0.7.
        let tested = vec![replay(1000, 125_000.0, 0.5), replay(1000, 125_000.0, 0.7)];
        let index = Index::from_replays(tested, &glibc);
        assert!((index.reference - 250_000.0).abs() < 1e-6);
        assert!(
            (index.p - (0.6 * 0.6 + 0.4 * 0.5)).abs() < 1e-9,
            "{index:?}"
        );
        assert_eq!(index.points(10), 6);
        // Faster than the reference: the throughput term saturates at 1.
        let fast = Index::from_replays(vec![replay(1000, 1e7, 1.5)], &glibc);
        assert!(
            (fast.p - 1.0).abs() < 1e-9,
            "utilization is capped at 1 too"
        );
    }

    #[test]
    fn throughput_is_total_operations_over_total_time() {
        // 1000 ops at 1000/s (1 s) and 1000 ops at 1e6/s (1 ms): 2000 ops in 1.001 s.
        let t = throughput(&[replay(1000, 1000.0, 1.0), replay(1000, 1e6, 1.0)]);
        assert!((t - 2000.0 / 1.001).abs() < 1e-6);
    }
}
