//! The benchmark report's two charts (`harness bench` writes them to `docs/src/bench/`):
//!
//! - `ratios.svg`: each workload a row, each allocator a marker at its time over glibc's
//!   on a logarithmic axis (1x is glibc; a timeout is an open marker at its lower bound,
//!   with an arrow);
//! - `threads.svg`: for each workload run at one thread and at one per processor, the
//!   throughput of each allocator at each thread count (logarithmic axis, as the
//!   allocators differ by orders of magnitude; a line that climbs scales).
//!
//! Drawn from the report's own medians, so the charts and the tables always agree.

use super::svg::{self, FAINT, GRID, INK, Style, Svg};
use crate::bench::{Cell, Ratio, Results};

/// One colour per allocator (Okabe and Ito's eight), in the report's order; after the
/// eighth, the colours repeat with square markers.
const COLOURS: &[&str] = &[
    INK, "#e69f00", "#56b4e9", "#009e73", "#d55e00", "#0072b2", "#cc79a7", "#f0e442",
];

/// `(file name, SVG)` for each chart.
pub fn draw(results: &Results) -> Vec<(&'static str, String)> {
    vec![
        ("ratios.svg", ratios(results)),
        ("threads.svg", threads(results)),
    ]
}

fn colour(c: usize) -> &'static str {
    COLOURS[c % COLOURS.len()]
}

/// A filled (or open) marker of allocator `c` at `(x, y)`.
fn marker(picture: &mut Svg, c: usize, x: f64, y: f64, open: bool) {
    let fill = if open { "#ffffff" } else { colour(c) };
    let stroke = format!("stroke=\"{}\" stroke-width=\"1.5\"", colour(c));
    if (c / COLOURS.len()).is_multiple_of(2) {
        // A circle, drawn as a rounded square so that `Svg` needs no circle.
        picture.rect(
            x - 4.0,
            y - 4.0,
            8.0,
            8.0,
            fill,
            &format!("rx=\"4\" {stroke}"),
        );
    } else {
        picture.rect(x - 4.0, y - 4.0, 8.0, 8.0, fill, &stroke);
    }
}

/// The legend: one marker and name per allocator, in rows from `(left, top)`; returns
/// the height it took.
fn legend(picture: &mut Svg, results: &Results, left: f64, top: f64, width: f64) -> f64 {
    let (mut x, mut y) = (left, top);
    for (c, contender) in results.contenders.iter().enumerate() {
        let w = 24.0 + svg::text_width(&contender.name, 12.0);
        if x + w > left + width {
            x = left;
            y += 18.0;
        }
        marker(picture, c, x + 5.0, y - 4.0, false);
        picture.text(x + 14.0, y, Style::new(12.0), &contender.name);
        x += w + 12.0;
    }
    y - top + 18.0
}

/// Powers of ten from `low` to `high` (both powers of ten).
fn decades(low: f64, high: f64) -> Vec<f64> {
    let mut all = vec![low];
    while *all.last().unwrap_or(&high) < high * 0.999 {
        all.push(all.last().copied().unwrap_or(high) * 10.0);
    }
    all
}

fn decade_label(value: f64, unit: &str) -> String {
    if value >= 1e6 {
        format!("{}M{unit}", value / 1e6)
    } else if value >= 1e3 {
        format!("{}k{unit}", value / 1e3)
    } else {
        format!("{value}{unit}")
    }
}

fn ratios(results: &Results) -> String {
    const WIDTH: f64 = 960.0;
    const LEFT: f64 = 250.0;
    // Room on the right for a group of timeouts drawn side by side from their bound.
    const RIGHT: f64 = 870.0;
    const ROW: f64 = 18.0;
    let mut picture = Svg::new(
        WIDTH,
        100.0,
        "Time ratio to glibc, per workload and allocator",
    );
    picture.text(
        20.0,
        28.0,
        Style::new(16.0).bold(),
        "Time vs glibc (log scale; right of 1x is slower)",
    );
    let legend_height = legend(&mut picture, results, 20.0, 52.0, WIDTH - 40.0);
    let top = 52.0 + legend_height + 16.0;
    let ratio_of = |w: usize, c: usize| match results.ratio(w, c) {
        Ratio::Measured(r) => Some((r, false)),
        Ratio::AtLeast(r) => Some((r, true)),
        Ratio::Unknown => None,
    };
    let all: Vec<f64> = (0..results.workloads.len())
        .flat_map(|w| (0..results.contenders.len()).filter_map(move |c| ratio_of(w, c)))
        .map(|(r, _)| r)
        .filter(|r| *r > 0.0)
        .collect();
    let low = 10f64.powf(all.iter().copied().fold(1.0, f64::min).log10().floor());
    let high = 10f64.powf(
        all.iter()
            .copied()
            .fold(1.0, f64::max)
            .log10()
            .ceil()
            .max(1.0),
    );
    let x_of = |r: f64| LEFT + (RIGHT - LEFT) * (r.ln() - low.ln()) / (high.ln() - low.ln());
    let bottom = top + ROW * results.workloads.len() as f64;
    for tick in decades(low, high) {
        let x = x_of(tick);
        let stroke = if tick == 1.0 { FAINT } else { GRID };
        picture.line((x, top - 6.0), (x, bottom), stroke, "");
        picture.text(
            x,
            bottom + 16.0,
            Style::new(11.0).middle().fill(FAINT),
            &decade_label(tick, "x"),
        );
    }
    for (w, workload) in results.workloads.iter().enumerate() {
        let y = top + ROW * w as f64 + ROW / 2.0;
        if w % 2 == 0 {
            picture.rect(20.0, y - ROW / 2.0, RIGHT - 20.0, ROW, "#f4f4f4", "");
        }
        picture.text(
            LEFT - 10.0,
            y + 4.0,
            Style::new(11.0).end(),
            &workload.label(),
        );
        // Timeouts at one time limit share one lower bound: drawn side by side from
        // it (further right is still "at least"), with one arrow after the group.
        let mut timeouts_at: Vec<(f64, usize)> = Vec::new();
        for c in 0..results.contenders.len() {
            let Some((r, timed_out)) = ratio_of(w, c) else {
                continue;
            };
            let mut x = x_of(r);
            if timed_out {
                match timeouts_at.iter_mut().find(|(at, _)| (*at - x).abs() < 1.0) {
                    Some((_, drawn)) => {
                        x += 11.0 * *drawn as f64;
                        *drawn += 1;
                    }
                    None => timeouts_at.push((x, 1)),
                }
            }
            marker(&mut picture, c, x, y, timed_out);
        }
        for (x, drawn) in timeouts_at {
            let end = x + 11.0 * (drawn - 1) as f64;
            picture.text(end + 6.0, y + 4.0, Style::new(11.0).fill(INK), "→");
        }
    }
    picture.text(
        LEFT,
        bottom + 36.0,
        Style::new(11.0).fill(FAINT),
        "open marker with an arrow: timed out, so at least this slow",
    );
    picture.set_height(bottom + 50.0);
    picture.finish()
}

fn threads(results: &Results) -> String {
    const WIDTH: f64 = 960.0;
    const PANEL_W: f64 = 440.0;
    const PANEL_H: f64 = 170.0;
    const COLUMNS: usize = 2;
    let mut families: Vec<(String, Vec<usize>)> = Vec::new();
    for (w, workload) in results.workloads.iter().enumerate() {
        if !workload.scales {
            continue;
        }
        match families.iter_mut().find(|(name, _)| *name == workload.name) {
            Some((_, cells)) => cells.push(w),
            None => families.push((workload.name.clone(), vec![w])),
        }
    }
    let mut picture = Svg::new(
        WIDTH,
        100.0,
        "Throughput against threads, per workload and allocator",
    );
    picture.text(
        20.0,
        28.0,
        Style::new(16.0).bold(),
        "Throughput (ops/s, log scale) at 1 thread and at one per processor",
    );
    let legend_height = legend(&mut picture, results, 20.0, 52.0, WIDTH - 40.0);
    let top = 52.0 + legend_height + 20.0;
    for (f, (name, cells)) in families.iter().enumerate() {
        let left = 70.0 + (f % COLUMNS) as f64 * (PANEL_W + 40.0);
        let panel_top = top + (f / COLUMNS) as f64 * (PANEL_H + 50.0);
        let bottom = panel_top + PANEL_H;
        let right = left + PANEL_W - 80.0;
        let rate = |w: usize, c: usize| match results.cell(w, c) {
            Cell::Done { ops_per_sec, .. } if ops_per_sec > 0.0 => Some(ops_per_sec),
            _ => None,
        };
        let rates: Vec<f64> = cells
            .iter()
            .flat_map(|&w| (0..results.contenders.len()).filter_map(move |c| rate(w, c)))
            .collect();
        picture.text(left, panel_top - 8.0, Style::new(13.0).bold(), name);
        if rates.is_empty() {
            continue;
        }
        let low = 10f64.powf(
            rates
                .iter()
                .copied()
                .fold(f64::MAX, f64::min)
                .log10()
                .floor(),
        );
        let high = 10f64.powf(rates.iter().copied().fold(0.0, f64::max).log10().ceil());
        let high = if high <= low { low * 10.0 } else { high };
        let y_of = |r: f64| bottom - PANEL_H * (r.ln() - low.ln()) / (high.ln() - low.ln());
        let counts: Vec<usize> = cells
            .iter()
            .map(|&w| results.workloads[w].threads)
            .collect();
        let most = counts.iter().copied().max().unwrap_or(1).max(2) as f64;
        let x_of = |t: usize| left + (right - left) * (t as f64 - 1.0) / (most - 1.0);
        for tick in decades(low, high) {
            let y = y_of(tick);
            picture.line((left, y), (right, y), GRID, "");
            picture.text(
                left - 6.0,
                y + 4.0,
                Style::new(10.0).end().fill(FAINT),
                &decade_label(tick, ""),
            );
        }
        for &t in &counts {
            picture.text(
                x_of(t),
                bottom + 14.0,
                Style::new(10.0).middle().fill(FAINT),
                &format!("{t} thread{}", if t == 1 { "" } else { "s" }),
            );
        }
        for c in 0..results.contenders.len() {
            let points: Vec<(f64, f64)> = cells
                .iter()
                .filter_map(|&w| Some((x_of(results.workloads[w].threads), y_of(rate(w, c)?))))
                .collect();
            if points.len() > 1 {
                picture.polyline(&points, colour(c), 1.5, "");
            }
            for &(x, y) in &points {
                marker(&mut picture, c, x, y, false);
            }
            let timed_out = cells.iter().any(|&w| results.cell(w, c) == Cell::TimedOut);
            if timed_out && points.len() < cells.len() {
                // Not on the chart at every count: say so at the right edge.
                let row = panel_top + 12.0 * c as f64;
                picture.text(
                    right + 8.0,
                    row + 4.0,
                    Style::new(9.0).fill(colour(c)),
                    "timeout",
                );
            }
        }
    }
    let rows = families.len().div_ceil(COLUMNS) as f64;
    picture.set_height(top + rows * (PANEL_H + 50.0) + 10.0);
    picture.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Outcome, Sample, Workload, contenders};
    use std::time::Duration;

    /// Three allocators time out on one workload: three open markers, side by side.
    #[test]
    fn timeouts_at_one_bound_are_all_visible() {
        let done = Outcome::Done(Sample {
            seconds: 1.0,
            ops_per_sec: 1000.0,
            peak_rss_kib: 1,
            utilization: None,
        });
        let contenders: Vec<_> = contenders().into_iter().take(4).collect();
        let mut row = vec![vec![Outcome::TimedOut]; contenders.len()];
        row[0] = vec![done];
        let results = Results {
            contenders,
            workloads: vec![Workload {
                name: "alloc-test".into(),
                threads: 1,
                args: Vec::new(),
                trace: false,
                scales: true,
            }],
            runs: vec![row],
            reps: 1,
            timeout: Duration::from_secs(20),
            command: String::new(),
            date: String::new(),
        };
        let svg = ratios(&results);
        let open: Vec<&str> = svg
            .lines()
            .filter(|l| l.starts_with("<rect") && l.contains("fill=\"#ffffff\" rx"))
            .collect();
        assert_eq!(open.len(), 3, "{svg}");
        let xs: std::collections::BTreeSet<&str> = open
            .iter()
            .map(|l| l.split("x=\"").nth(1).unwrap().split('"').next().unwrap())
            .collect();
        assert_eq!(
            xs.len(),
            3,
            "side by side, not on top of each other:\n{svg}"
        );
        assert_eq!(svg.matches('→').count(), 1, "one arrow after the group");
    }
}
