//! `harness compare-traces`: how well allocators use memory on a folder of traces
//! (those `harness gen-traces` writes, or your own), against glibc's allocator, trace
//! by trace and then shape by shape.
//!
//! Utilization (the peak live payload over the peak footprint, read from the page
//! tables by `bench_alloc --trace`) does not depend on the machine's load, so one run
//! of each trace under each allocator is the measurement. It is exact to about a page:
//! where the address space's layout puts the heap moves the footprint by a page now and
//! then (seen on `hash_table` seed 4 under phase 4: 87.2% in most runs, 87.3% in some).
//! Times are not compared here (that is `harness bench`'s work, with repetitions).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bench::{Contender, Outcome, run_bench_alloc};

/// A replay's time limit: the slowest phase on the largest generated trace takes a
/// few seconds.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The traces in `dir` that `bench_alloc --trace` reads (`.rep` and `.trc`), by name.
pub fn traces_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut traces: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.is_file()
                && matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("rep" | "trc")
                )
        })
        .collect();
    traces.sort();
    Ok(traces)
}

/// The shape a trace belongs to: its file name without the extension and without a
/// trailing `_SEED` (`bimodal_3.rep` is `bimodal`); a name without one is its own shape.
pub fn shape_of(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
    match stem.rsplit_once('_') {
        Some((shape, seed)) if !seed.is_empty() && seed.bytes().all(|b| b.is_ascii_digit()) => {
            shape.to_string()
        }
        _ => stem.to_string(),
    }
}

/// One trace's utilization (percent) under each allocator, glibc's first; `None` when
/// the replay failed or timed out (`problems` says why).
pub struct Row {
    pub trace: String,
    pub shape: String,
    pub utilization: Vec<Option<f64>>,
}

/// Replays every trace under every contender (glibc's first), calling `progress` after
/// each replay. Returns the rows and a line per failed replay.
pub fn measure(
    traces: &[PathBuf],
    contenders: &[Contender],
    mut progress: impl FnMut(&str),
) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for path in traces {
        let trace = path.file_name().map_or_else(
            || path.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        let args = vec!["--trace".to_string(), path.display().to_string()];
        let mut utilization = Vec::new();
        for contender in contenders {
            let value = match run_bench_alloc(&args, contender, TIMEOUT) {
                Outcome::Done(sample) if sample.utilization.is_some() => sample.utilization,
                Outcome::Done(_) => {
                    problems.push(format!("{trace} under {}: no utilization", contender.name));
                    None
                }
                Outcome::TimedOut => {
                    let limit = TIMEOUT.as_secs();
                    problems.push(format!(
                        "{trace} under {}: timed out ({limit} s)",
                        contender.name
                    ));
                    None
                }
                Outcome::Failed(why) => {
                    problems.push(format!("{trace} under {}: {why}", contender.name));
                    None
                }
            };
            progress(&format!("{trace} under {}", contender.name));
            utilization.push(value);
        }
        rows.push(Row {
            shape: shape_of(path),
            trace,
            utilization,
        });
    }
    (rows, problems)
}

/// The report: a table of every trace, then one of every shape (the mean over its
/// traces, and on how many of them each allocator used memory less well than glibc),
/// then the totals. `names` are the contenders' names, glibc's first.
pub fn render(names: &[String], rows: &[Row]) -> String {
    let mut out = String::new();
    let header = |first: &str| {
        let mut line = format!("| {first} |");
        let mut rule = "|---|".to_string();
        for name in names {
            line.push_str(&format!(" {name} |"));
            rule.push_str("---:|");
        }
        format!("{line}\n{rule}\n")
    };
    out.push_str("Utilization (peak live payload / peak footprint), one replay each.\n\n");
    out.push_str(&header("trace"));
    for row in rows {
        out.push_str(&format!("| {} |", row.trace));
        for value in &row.utilization {
            out.push_str(&format!(" {} |", show(*value, 1)));
        }
        out.push('\n');
    }

    let mut shapes: Vec<&str> = rows.iter().map(|row| row.shape.as_str()).collect();
    shapes.sort_unstable();
    shapes.dedup();
    let shape_count = shapes.len();
    let mut under_shapes = vec![0usize; names.len()];
    let mut under_traces = vec![0usize; names.len()];
    let mut compared = vec![0usize; names.len()];
    out.push_str("\nBy shape: the mean utilization over its traces; in brackets, on how many of them the allocator was under glibc.\n\n");
    out.push_str(&header("shape"));
    for shape in shapes {
        let of_shape: Vec<&Row> = rows.iter().filter(|row| row.shape == shape).collect();
        out.push_str(&format!("| {shape} |"));
        let glibc_mean = mean(of_shape.iter().map(|row| row.utilization[0]));
        out.push_str(&format!(" {} |", show(glibc_mean, 2)));
        for c in 1..names.len() {
            let value = mean(of_shape.iter().map(|row| row.utilization[c]));
            let (under, both) = of_shape.iter().fold((0, 0), |(under, both), row| {
                match (row.utilization[0], row.utilization[c]) {
                    (Some(glibc), Some(ours)) => (under + usize::from(ours < glibc), both + 1),
                    _ => (under, both),
                }
            });
            under_traces[c] += under;
            compared[c] += both;
            if let (Some(value), Some(glibc)) = (value, glibc_mean)
                && value < glibc
            {
                under_shapes[c] += 1;
            }
            out.push_str(&format!(" {} ({under} of {both}) |", show(value, 2)));
        }
        out.push('\n');
    }
    out.push('\n');
    for (c, name) in names.iter().enumerate().skip(1) {
        out.push_str(&format!(
            "{name}: under glibc on {} of {} traces, and on {} of {shape_count} shapes (their means)\n",
            under_traces[c], compared[c], under_shapes[c]
        ));
    }
    out
}

/// The mean of the values present, `None` unless every one is: a shape whose replay
/// failed somewhere has no fair mean.
fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let values: Option<Vec<f64>> = values.collect();
    let values = values?;
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// A percentage with `decimals` places (bench_alloc prints one), or `-` for none.
fn show(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shape_is_the_name_without_its_seed() {
        assert_eq!(shape_of(Path::new("/t/bimodal_3.rep")), "bimodal");
        assert_eq!(shape_of(Path::new("around_1k_12.rep")), "around_1k");
        assert_eq!(shape_of(Path::new("git.trc")), "git");
        assert_eq!(shape_of(Path::new("around_1k.rep")), "around_1k");
    }

    #[test]
    fn the_report_counts_traces_and_shapes_under_glibc() {
        let row = |trace: &str, glibc: f64, ours: Option<f64>| Row {
            trace: trace.into(),
            shape: shape_of(Path::new(trace)),
            utilization: vec![Some(glibc), ours],
        };
        let rows = [
            row("a_1.rep", 90.0, Some(91.0)),
            row("a_2.rep", 90.0, Some(88.0)),
            row("b_1.rep", 50.0, Some(49.0)),
            row("c_1.rep", 70.0, None),
        ];
        let report = render(&["glibc".into(), "mine".into()], &rows);
        assert!(
            report.contains("| a | 90.00% | 89.50% (1 of 2) |"),
            "{report}"
        );
        assert!(
            report.contains("| b | 50.00% | 49.00% (1 of 1) |"),
            "{report}"
        );
        assert!(report.contains("| c | 70.00% | - (0 of 0) |"), "{report}");
        assert!(
            report
                .contains("mine: under glibc on 2 of 3 traces, and on 2 of 3 shapes (their means)"),
            "{report}"
        );
    }
}
