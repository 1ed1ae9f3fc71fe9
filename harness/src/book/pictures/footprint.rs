//! The footprint chart: bytes over the operations of a trace, one line per series
//! (the live payload, then each phase's heap footprint).

use super::svg::{self, Style, Svg};

/// One line of the chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub colour: &'static str,
    /// Empty for a solid line.
    pub dash: &'static str,
    pub width: f64,
    /// `(operations done, bytes)`, in order of operations.
    pub points: Vec<(usize, usize)>,
}

/// A vertical line at an operation, with a label.
#[derive(Clone, Debug)]
pub struct Marker {
    pub ops: usize,
    pub label: String,
}

const WIDTH: f64 = 960.0;
const LEFT: f64 = 92.0;
const RIGHT: f64 = 930.0;
const PLOT_HEIGHT: f64 = 360.0;
/// The most grid lines on either axis.
const MOST_TICKS: usize = 8;
const MIB: f64 = 1024.0 * 1024.0;
const KIB: f64 = 1024.0;

/// Draws `series` over `x_label`'s operations, under a title and a few notes.
pub fn render(
    title: &str,
    notes: &[String],
    x_label: &str,
    series: &[Series],
    marker: Option<&Marker>,
) -> String {
    let top = 56.0 + 16.0 * notes.len() as f64 + 16.0;
    let bottom = top + PLOT_HEIGHT;
    let height = bottom + 56.0;
    let points = series.iter().flat_map(|s| s.points.iter());
    let max_ops = points.clone().map(|p| p.0).max().unwrap_or(0).max(1) as f64;
    let max_bytes = points.map(|p| p.1).max().unwrap_or(0).max(1) as f64;
    let unit = if max_bytes >= 2.0 * MIB {
        MIB
    } else if max_bytes >= 2.0 * KIB {
        KIB
    } else {
        1.0
    };
    let y_step = svg::tick_step(max_bytes, unit, MOST_TICKS);
    // Room above the highest line, so that it never runs along the frame.
    let y_max = (max_bytes * 1.04 / y_step).ceil() * y_step;
    let x_step = svg::tick_step(max_ops, 1.0, MOST_TICKS);
    let x_of = |ops: f64| LEFT + (RIGHT - LEFT) * ops / max_ops;
    let y_of = |bytes: f64| bottom - PLOT_HEIGHT * bytes / y_max;

    let mut svg = Svg::new(WIDTH, height, title);
    svg.text(24.0, 30.0, Style::new(17.0).bold(), title);
    for (i, note) in notes.iter().enumerate() {
        svg.text(
            24.0,
            52.0 + 16.0 * i as f64,
            Style::new(12.5).fill(svg::FAINT),
            note,
        );
    }
    // Grid and axes.
    let tick = Style::new(11.5).fill(svg::FAINT);
    let mut bytes = 0.0;
    while bytes <= y_max + 0.5 {
        let y = y_of(bytes);
        svg.line((LEFT, y), (RIGHT, y), svg::GRID, "");
        svg.text(LEFT - 8.0, y + 4.0, tick.end(), &svg::bytes(bytes as usize));
        bytes += y_step;
    }
    let mut ops = 0.0;
    while ops <= max_ops + 0.5 {
        let x = x_of(ops);
        svg.line((x, bottom), (x, bottom + 5.0), svg::FAINT, "");
        svg.text(x, bottom + 19.0, tick.middle(), &svg::grouped(ops as usize));
        ops += x_step;
    }
    svg.line((LEFT, bottom), (RIGHT, bottom), svg::INK, "");
    svg.line((LEFT, top), (LEFT, bottom), svg::INK, "");
    svg.text(
        (LEFT + RIGHT) / 2.0,
        bottom + 40.0,
        Style::new(12.5).middle(),
        x_label,
    );
    if let Some(marker) = marker {
        let x = x_of(marker.ops as f64);
        svg.line((x, top), (x, bottom), svg::INK, "stroke-dasharray=\"2 3\"");
        svg.text(x - 6.0, bottom - 8.0, Style::new(11.5).end(), &marker.label);
    }
    for s in series {
        let points: Vec<(f64, f64)> = (s.points.iter())
            .map(|&(ops, bytes)| (x_of(ops as f64), y_of(bytes as f64)))
            .collect();
        svg.polyline(&points, s.colour, s.width, s.dash);
    }
    // The legend, top left, over a white box.
    let rows = series.len() as f64;
    let widest = (series.iter())
        .map(|s| svg::text_width(&s.label, 12.0))
        .fold(0.0, f64::max);
    svg.rect(
        LEFT + 10.0,
        top + 8.0,
        widest + 64.0,
        18.0 * rows + 10.0,
        "#ffffff",
        "fill-opacity=\"0.9\" stroke=\"#dddddd\"",
    );
    for (i, s) in series.iter().enumerate() {
        let y = top + 24.0 + 18.0 * i as f64;
        svg.polyline(
            &[(LEFT + 18.0, y - 4.0), (LEFT + 48.0, y - 4.0)],
            s.colour,
            s.width,
            s.dash,
        );
        svg.text(LEFT + 56.0, y, Style::new(12.0), &s.label);
    }
    svg.finish()
}
