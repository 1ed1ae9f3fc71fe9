//! `harness compare-traces`: how well allocators use memory on a folder of traces
//! (those `harness gen-traces` writes, or your own), against glibc's allocator, trace
//! by trace and then shape by shape.
//!
//! Utilization (the peak live payload over the peak footprint, read from the page
//! tables by `bench_alloc --trace`) does not depend on the machine's load: a replay
//! gives the same figure every time, to about a page (where the address space's layout
//! puts the heap moves the footprint by a page now and then: `hash_table` seed 4 under
//! phase 4, 87.2% in most runs, 87.3% in some). Times are not compared here (that is
//! `harness bench`'s work, with repetitions).
//!
//! Repeatable is not the same as representative. On traces of few large blocks the
//! figure is chaotic: one stray 48-byte block more, early on, moves glibc's
//! utilization of the generated `realloc_buffers` seed 605 from 75% to 54-71% and
//! phase 4's from 55% to 55-72% (see `trace::stray_block_at`). `--variants N` replays
//! N variants of each trace (the trace, and N - 1 with a stray block each, at its own
//! point) and compares the medians, showing each allocator's range beside them.

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

/// One trace's utilization (percent) under each allocator, glibc's first: over its
/// variants, the median and the lowest and highest; `None` when a replay failed or
/// timed out (`problems` says why).
pub struct Row {
    pub trace: String,
    pub shape: String,
    pub utilization: Vec<Option<Spread>>,
}

/// An allocator's utilization of one trace over its variants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

impl Spread {
    /// The median, lowest and highest of `values` (not empty).
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (&low, &high) = (sorted.first()?, sorted.last()?);
        let middle = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[middle]
        } else {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        };
        Some(Spread { median, low, high })
    }
}

/// Replays variants 0 to `variants - 1` of every trace under every contender (glibc's
/// first), calling `progress` after each replay. Returns the rows and a line per
/// failed replay.
pub fn measure(
    traces: &[PathBuf],
    contenders: &[Contender],
    variants: u32,
    mut progress: impl FnMut(&str),
) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for path in traces {
        let trace = path.file_name().map_or_else(
            || path.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        let mut utilization = Vec::new();
        for contender in contenders {
            let mut values = Vec::new();
            for variant in 0..variants {
                let args = vec![
                    "--trace".to_string(),
                    path.display().to_string(),
                    "--variant".to_string(),
                    variant.to_string(),
                ];
                let what = if variants == 1 {
                    format!("{trace} under {}", contender.name)
                } else {
                    format!("{trace} (variant {variant}) under {}", contender.name)
                };
                match run_bench_alloc(&args, contender, TIMEOUT) {
                    Outcome::Done(sample) => match sample.utilization {
                        Some(value) => values.push(value),
                        None => problems.push(format!("{what}: no utilization")),
                    },
                    Outcome::TimedOut => {
                        let limit = TIMEOUT.as_secs();
                        problems.push(format!("{what}: timed out ({limit} s)"));
                    }
                    Outcome::Failed(why) => problems.push(format!("{what}: {why}")),
                }
                progress(&what);
            }
            // Every variant or none: a median of some would compare unlike things.
            let complete = values.len() == variants as usize;
            utilization.push(Spread::of(&values).filter(|_| complete));
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
/// then the totals. `names` are the contenders' names, glibc's first; `variants`, how
/// many of each trace were replayed (their medians are compared).
pub fn render(names: &[String], rows: &[Row], variants: u32) -> String {
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
    if variants == 1 {
        out.push_str("Utilization (peak live payload / peak footprint), one replay each.\n\n");
    } else {
        out.push_str(&format!(
            "Utilization (peak live payload / peak footprint): the median over {variants} \
             variants of each trace (the trace, and {} with one stray 48-byte block each: \
             `bench_alloc --variant V`), the lowest and highest in brackets.\n\n",
            variants - 1
        ));
    }
    out.push_str(&header("trace"));
    for row in rows {
        out.push_str(&format!("| {} |", row.trace));
        for spread in &row.utilization {
            let median = show(spread.map(|s| s.median), 1);
            match spread {
                Some(s) if variants > 1 => {
                    out.push_str(&format!(" {median} ({:.1}-{:.1}) |", s.low, s.high));
                }
                _ => out.push_str(&format!(" {median} |")),
            }
        }
        out.push('\n');
    }

    let mut shapes: Vec<&str> = rows.iter().map(|row| row.shape.as_str()).collect();
    shapes.sort_unstable();
    shapes.dedup();
    // Per allocator: shapes whose means both it and glibc have (a shape with a failed
    // replay has none), and of those, the ones where its mean is under glibc's.
    let mut compared_shapes = vec![0usize; names.len()];
    let mut under_shapes = vec![0usize; names.len()];
    let mut under_traces = vec![0usize; names.len()];
    let mut wholly_under = vec![0usize; names.len()];
    let mut compared = vec![0usize; names.len()];
    let medians = |row: &Row, c: usize| row.utilization[c].map(|s| s.median);
    out.push_str(&format!(
        "\nBy shape: the mean {}utilization over its traces; in brackets, on how many of \
         them the allocator was under glibc.\n\n",
        if variants == 1 { "" } else { "median " }
    ));
    out.push_str(&header("shape"));
    for shape in shapes {
        let of_shape: Vec<&Row> = rows.iter().filter(|row| row.shape == shape).collect();
        out.push_str(&format!("| {shape} |"));
        let glibc_mean = mean(of_shape.iter().map(|row| medians(row, 0)));
        out.push_str(&format!(" {} |", show(glibc_mean, 2)));
        for c in 1..names.len() {
            let value = mean(of_shape.iter().map(|row| medians(row, c)));
            let (mut under, mut both) = (0, 0);
            for row in &of_shape {
                if let (Some(glibc), Some(ours)) = (row.utilization[0], row.utilization[c]) {
                    both += 1;
                    under += usize::from(ours.median < glibc.median);
                    wholly_under[c] += usize::from(ours.high < glibc.low);
                }
            }
            under_traces[c] += under;
            compared[c] += both;
            if let (Some(value), Some(glibc)) = (value, glibc_mean) {
                compared_shapes[c] += 1;
                under_shapes[c] += usize::from(value < glibc);
            }
            out.push_str(&format!(" {} ({under} of {both}) |", show(value, 2)));
        }
        out.push('\n');
    }
    out.push('\n');
    for (c, name) in names.iter().enumerate().skip(1) {
        out.push_str(&format!(
            "{name}: under glibc on {} of {} traces, and on {} of {} shapes (their means)",
            under_traces[c], compared[c], under_shapes[c], compared_shapes[c]
        ));
        if variants > 1 {
            out.push_str(&format!(
                "; every variant under every one of glibc's on {} traces",
                wholly_under[c]
            ));
        }
        out.push('\n');
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
        let one = |value: f64| Spread::of(&[value]);
        let row = |trace: &str, glibc: f64, ours: Option<f64>| Row {
            trace: trace.into(),
            shape: shape_of(Path::new(trace)),
            utilization: vec![one(glibc), ours.and_then(one)],
        };
        let rows = [
            row("a_1.rep", 90.0, Some(91.0)),
            row("a_2.rep", 90.0, Some(88.0)),
            row("b_1.rep", 50.0, Some(49.0)),
            row("c_1.rep", 70.0, None),
        ];
        let report = render(&["glibc".into(), "mine".into()], &rows, 1);
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
                .contains("mine: under glibc on 2 of 3 traces, and on 2 of 2 shapes (their means)"),
            "{report}"
        );
    }

    #[test]
    fn a_spread_is_the_median_and_the_extremes() {
        let spread = |values: &[f64]| Spread::of(values).map(|s| (s.median, s.low, s.high));
        assert_eq!(spread(&[55.0, 75.0, 54.0]), Some((55.0, 54.0, 75.0)));
        assert_eq!(spread(&[60.0, 50.0]), Some((55.0, 50.0, 60.0)));
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn with_variants_the_medians_are_compared_and_the_ranges_shown() {
        let row = |trace: &str, glibc: &[f64], ours: &[f64]| Row {
            trace: trace.into(),
            shape: shape_of(Path::new(trace)),
            utilization: vec![Spread::of(glibc), Spread::of(ours)],
        };
        let rows = [
            // A lucky first replay for glibc: under on the trace as written, not on
            // the median.
            row("r_1.rep", &[75.0, 55.0, 54.0], &[55.0, 56.0, 70.0]),
            // Under in every variant.
            row("r_2.rep", &[80.0, 81.0, 82.0], &[70.0, 71.0, 79.0]),
        ];
        let report = render(&["glibc".into(), "mine".into()], &rows, 3);
        assert!(report.contains("the median over 3 variants"), "{report}");
        assert!(
            report.contains("| r_1.rep | 55.0% (54.0-75.0) | 56.0% (55.0-70.0) |"),
            "{report}"
        );
        assert!(
            report.contains("| r | 68.00% | 63.50% (1 of 2) |"),
            "{report}"
        );
        assert!(
            report.contains(
                "mine: under glibc on 1 of 2 traces, and on 1 of 1 shapes (their means); \
                 every variant under every one of glibc's on 1 traces"
            ),
            "{report}"
        );
    }
}
