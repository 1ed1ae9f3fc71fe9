//! `harness bench`: every phase against glibc (and jemalloc, mimalloc, tcmalloc where
//! installed) on the same workloads, in one run, written up as `docs/benchmarks.md`.
//!
//! Runs are interleaved (repetition by repetition, each workload under each allocator
//! in turn) so that a burst of load on a shared machine hits every allocator alike,
//! and the report gives medians and ratios to glibc from the same run. The report is
//! generated, never typed: the command that made it is at its top.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::phases;
use crate::runner::Run;

/// An allocator in the race.
#[derive(Clone, Debug)]
pub struct Contender {
    pub name: String,
    /// `None`: the C library's own allocator.
    pub lib: Option<PathBuf>,
    pub env: Vec<(String, String)>,
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
    let mut all = vec![Contender {
        name: "glibc".into(),
        lib: None,
        env: Vec::new(),
    }];
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

#[derive(Clone, Debug)]
pub struct Workload {
    pub name: String,
    pub args: Vec<String>,
    /// A trace replay, which reports utilization too.
    pub trace: bool,
}

pub fn workloads(quick: bool) -> Vec<Workload> {
    let small = if quick { "20000" } else { "1000000" };
    let mut list = vec![
        Workload {
            name: format!("small {small}"),
            args: vec!["--small".into(), small.into()],
            trace: false,
        },
        Workload {
            name: format!("threads 4 x small {small}"),
            args: vec![
                "--threads".into(),
                "4".into(),
                "--small".into(),
                small.into(),
            ],
            trace: false,
        },
    ];
    let traces = phases::workspace_root().join("harness/traces");
    for (name, _, _) in crate::trace::SUITE
        .iter()
        .take(if quick { 1 } else { usize::MAX })
    {
        let path = traces.join(format!("{name}.rep"));
        list.push(Workload {
            name: format!("trace {name}"),
            args: vec!["--trace".into(), path.to_string_lossy().into_owned()],
            trace: true,
        });
    }
    list
}

/// One run's numbers, as bench_alloc reported them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub peak_rss_kib: u64,
    pub utilization: Option<f64>,
}

/// Reads bench_alloc's report line: `…: 0.081 s, 24831273 ops/s; peak RSS 2304 KiB`
/// (small) or `… in 0.0016 s, 7339203 ops/s; …; utilization 51.8%; peak RSS 9420 KiB`
/// (trace).
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
}

/// `samples[workload][contender]`: every repetition's numbers; `None` for a run that
/// failed (crashed, timed out, or printed no numbers).
pub struct Results {
    pub contenders: Vec<Contender>,
    pub workloads: Vec<Workload>,
    pub samples: Vec<Vec<Vec<Option<Sample>>>>,
    pub failures: Vec<String>,
    pub reps: usize,
    pub command: String,
}

pub fn run(options: &Options, mut progress: impl FnMut(&str)) -> Result<Results, String> {
    phases::build_all()?;
    let contenders = contenders();
    let workloads = workloads(options.quick);
    let mut samples = vec![vec![Vec::new(); contenders.len()]; workloads.len()];
    let mut failures = Vec::new();
    let total = options.reps * workloads.len() * contenders.len();
    let mut done = 0;
    for rep in 0..options.reps {
        for (w, workload) in workloads.iter().enumerate() {
            for (c, contender) in contenders.iter().enumerate() {
                done += 1;
                progress(&format!(
                    "[{done}/{total}] rep {} {} on {}",
                    rep + 1,
                    workload.name,
                    contender.name
                ));
                let mut command = Run::new(phases::bench_alloc_release())
                    .args(&workload.args)
                    .preload(contender.lib.as_deref())
                    .timeout(Duration::from_secs(120));
                for (key, value) in &contender.env {
                    command = command.env(key, value);
                }
                let sample = match command.run() {
                    // The peak RSS is bench_alloc's own (VmHWM), not the runner's
                    // ru_maxrss, which Linux carries over from this process.
                    Ok(outcome) if outcome.succeeded() => parse_sample(&outcome.stdout_text()),
                    Ok(outcome) => {
                        failures.push(format!(
                            "{} on {}: {outcome}",
                            workload.name, contender.name
                        ));
                        None
                    }
                    Err(e) => {
                        failures.push(format!(
                            "{} on {}: cannot start bench_alloc: {e}",
                            workload.name, contender.name
                        ));
                        None
                    }
                };
                samples[w][c].push(sample);
            }
        }
    }
    let command = format!(
        "cargo run --release -p harness --bin harness -- bench --reps {}{}",
        options.reps,
        if options.quick { " --quick" } else { "" }
    );
    Ok(Results {
        contenders,
        workloads,
        samples,
        failures,
        reps: options.reps,
        command,
    })
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

impl Results {
    /// The median of one number over the successful repetitions.
    fn median_of(&self, w: usize, c: usize, pick: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        median(
            self.samples[w][c]
                .iter()
                .flatten()
                .filter_map(&pick)
                .collect(),
        )
    }

    fn seconds(&self, w: usize, c: usize) -> Option<f64> {
        self.median_of(w, c, |s| Some(s.seconds))
    }

    /// The Markdown report.
    pub fn render(&self, machine: &str) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Generated by `{}` (or `just bench`); do not edit by hand. Each workload ran {} time(s) \
             under each allocator, interleaved; the tables give medians, and ratios to glibc \
             from the same run.\n",
            self.command, self.reps
        );
        let _ = writeln!(md, "{machine}\n");
        let _ = writeln!(
            md,
            "How to read: *time vs glibc* is glibc's median rate divided by the allocator's \
             (2.00x = twice as slow); *peak RSS* is bench_alloc's peak resident memory (`VmHWM`); *utilization* is peak \
             live payload / peak footprint (CS:APP's measure, 100% is perfect; the footprint \
             comes from the resident set, exact to a few hundred KiB). The workloads are \
             `bench_alloc`'s: see `bench_alloc --help` and `harness/traces/`.\n"
        );
        for (w, workload) in self.workloads.iter().enumerate() {
            let _ = writeln!(
                md,
                "## {} (`bench_alloc {}`)\n",
                workload.name,
                display_args(&workload.args)
            );
            let utilization = if workload.trace { " utilization |" } else { "" };
            let _ = writeln!(
                md,
                "| allocator | time | ops/s | time vs glibc | peak RSS |{utilization}"
            );
            let _ = writeln!(
                md,
                "|---|---:|---:|---:|---:|{}",
                if workload.trace { "---:|" } else { "" }
            );
            // Ratios come from the rates, which bench_alloc prints in full; its times are
            // rounded to the millisecond.
            let reference = self.median_of(w, 0, |s| Some(s.ops_per_sec));
            for (c, contender) in self.contenders.iter().enumerate() {
                let Some(seconds) = self.seconds(w, c) else {
                    let _ = writeln!(
                        md,
                        "| {} | failed | | | |{}",
                        contender.name,
                        if workload.trace { " |" } else { "" }
                    );
                    continue;
                };
                let ops = self.median_of(w, c, |s| Some(s.ops_per_sec)).unwrap_or(0.0);
                let ratio = reference
                    .filter(|_| ops > 0.0)
                    .map_or("n/a".into(), |r| format!("{:.2}x", r / ops));
                let rss = self
                    .median_of(w, c, |s| Some(s.peak_rss_kib as f64))
                    .unwrap_or(0.0);
                let _ = write!(
                    md,
                    "| {} | {} | {} | {ratio} | {:.1} MiB |",
                    contender.name,
                    format_seconds(seconds),
                    format_rate(ops),
                    rss / 1024.0
                );
                if workload.trace {
                    let util = self.median_of(w, c, |s| s.utilization);
                    let _ = write!(
                        md,
                        " {} |",
                        util.map_or("n/a".into(), |u| format!("{u:.1}%"))
                    );
                }
                let _ = writeln!(md);
            }
            let _ = writeln!(md);
        }
        if !self.failures.is_empty() {
            let _ = writeln!(md, "## Runs that failed\n");
            for failure in &self.failures {
                let _ = writeln!(md, "- {failure}");
            }
            let _ = writeln!(md);
        }
        md
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
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
