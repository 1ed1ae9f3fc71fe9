//! The heap map: one horizontal bar per heap, blocks in address order, left to right,
//! each as wide as its size (one scale for every bar, so heaps compare by length).
//!
//! Two exceptions to the scale, each marked in the picture: a block of more than four
//! fifths of its heap, and the harness's own data in a trace's heap, are drawn shortened (a box of
//! fixed width with a break mark and the true size); and phase 3's own mappings
//! (`[MMAP …]`) are boxes after the bar. When every bar has few blocks, each is drawn
//! with its size; when blocks are thinner than a pixel, each pixel column is split by
//! how its bytes are used instead (used at the bottom, free on top).

use std::collections::BTreeSet;

use super::dump::{Block, Dump};
use super::svg::{self, Style, Svg};

/// One heap to draw.
#[derive(Clone, Debug)]
pub struct Row {
    /// Names the heap (`phase 1 (phase1-sbrk-freelist)`).
    pub label: String,
    pub dump: Dump,
    /// Blocks, as `(offset, size)`, that hold the harness's own data rather than the
    /// workload's: drawn grey and shortened.
    pub harness: BTreeSet<(usize, usize)>,
    /// Mappings, as `(index, size)`, that hold the harness's own data: drawn grey.
    pub harness_mappings: BTreeSet<(usize, usize)>,
}

/// Bars with at most this many blocks are drawn block by block.
pub const DETAILED_MAX_BLOCKS: usize = 100;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 24.0;
const PLOT: f64 = WIDTH - 2.0 * LEFT;
const BAR: f64 = 44.0;
const ROW: f64 = 96.0;
/// The width of a shortened block or a mapping.
const SHORT: f64 = 84.0;
const MAPPING_GAP: f64 = 16.0;
/// How a mapping's box is outlined.
const DASHED: &str = "stroke=\"#222222\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"";
/// The longest the scale bar may be.
const SCALE_BAR_MAX: f64 = 180.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Used,
    Free,
    Harness,
}

impl Kind {
    fn colour(self) -> &'static str {
        match self {
            Kind::Used => svg::USED,
            Kind::Free => svg::FREE,
            Kind::Harness => svg::HARNESS,
        }
    }
    /// Text on this colour.
    fn ink(self) -> &'static str {
        match self {
            Kind::Free => "#ffffff",
            Kind::Used | Kind::Harness => svg::INK,
        }
    }
}

impl Row {
    fn kind(&self, block: &Block) -> Kind {
        if self.harness.contains(&(block.offset, block.size)) {
            Kind::Harness
        } else if block.used {
            Kind::Used
        } else {
            Kind::Free
        }
    }

    fn shortened(&self, block: &Block) -> bool {
        self.kind(block) == Kind::Harness || block.size > 4 * (self.dump.end() - block.size)
    }

    /// Bytes drawn to scale: the heap's extent less its shortened blocks.
    fn scaled_bytes(&self) -> usize {
        let short: usize = (self.dump.blocks.iter())
            .filter(|b| self.shortened(b))
            .map(|b| b.size)
            .sum();
        self.dump.end() - short
    }

    /// Pixels not on the scale: shortened blocks and mappings.
    fn fixed_width(&self) -> f64 {
        let short = self
            .dump
            .blocks
            .iter()
            .filter(|b| self.shortened(b))
            .count();
        let mappings = self.dump.mappings.len();
        let mut width = short as f64 * SHORT;
        if mappings > 0 {
            width += MAPPING_GAP + mappings as f64 * (SHORT + 4.0);
        }
        width
    }
}

/// The pixels per byte that fit every row in the picture's width.
pub fn scale(rows: &[Row]) -> f64 {
    rows.iter()
        .filter(|row| row.scaled_bytes() > 0)
        .map(|row| (PLOT - row.fixed_width()).max(PLOT / 4.0) / row.scaled_bytes() as f64)
        .fold(f64::INFINITY, f64::min)
}

/// Draws `rows` under a title and a few lines of notes.
pub fn render(title: &str, notes: &[String], rows: &[Row]) -> String {
    let scale = scale(rows);
    let detailed = rows
        .iter()
        .all(|row| row.dump.blocks.len() <= DETAILED_MAX_BLOCKS);
    let mut svg = Svg::new(WIDTH, 0.0, title);
    svg.text(LEFT, 30.0, Style::new(17.0).bold(), title);
    for (i, note) in notes.iter().enumerate() {
        let y = 52.0 + 16.0 * i as f64;
        svg.text(LEFT, y, Style::new(12.5).fill(svg::FAINT), note);
    }
    let legend_top = 56.0 + 16.0 * notes.len() as f64 + 18.0;
    let top = legend(&mut svg, legend_top, rows, detailed) + 22.0;
    let height = top + ROW * rows.len() as f64 + 40.0;
    svg.set_height(height);
    for (i, row) in rows.iter().enumerate() {
        draw_row(&mut svg, top + ROW * i as f64, row, scale, detailed);
    }
    if scale.is_finite() {
        scale_bar(&mut svg, height - 22.0, scale);
    }
    svg.finish()
}

/// The legend, from baseline `y`: the colours, then a line for each way of drawing
/// that the picture uses. Returns the last baseline.
fn legend(svg: &mut Svg, mut y: f64, rows: &[Row], detailed: bool) -> f64 {
    let any_block = |test: &dyn Fn(&Row, &Block) -> bool| {
        (rows.iter()).any(|row| row.dump.blocks.iter().any(|b| test(row, b)))
    };
    let any_harness = any_block(&|row, b| row.kind(b) == Kind::Harness)
        || rows.iter().any(|row| !row.harness_mappings.is_empty());
    let mut entries = vec![(Kind::Used, "used block"), (Kind::Free, "free block")];
    if any_harness {
        entries.push((
            Kind::Harness,
            "the harness's own data (the trace and its tables)",
        ));
    }
    let mut x = LEFT;
    for (kind, label) in entries {
        svg.rect(x, y - 11.0, 14.0, 14.0, kind.colour(), "");
        svg.text(x + 20.0, y, Style::new(12.5), label);
        x += 20.0 + svg::text_width(label, 12.5) + 18.0;
    }
    let faint = Style::new(12.5).fill(svg::FAINT);
    if any_block(&|row, b| row.shortened(b)) {
        y += 20.0;
        svg.rect(LEFT, y - 11.0, 30.0, 14.0, svg::USED, "");
        let white = "stroke-width=\"3\"";
        svg.line(
            (LEFT + 13.0, y + 3.0),
            (LEFT + 17.0, y - 11.0),
            "#ffffff",
            white,
        );
        let text = format!(
            "shortened: a block of more than four fifths of its heap{} \
             (not to scale; its size is written in it)",
            if any_harness {
                ", or the harness's data"
            } else {
                ""
            }
        );
        svg.text(LEFT + 38.0, y, faint, &text);
    }
    if rows.iter().any(|row| !row.dump.mappings.is_empty()) {
        y += 20.0;
        svg.rect(LEFT, y - 11.0, 30.0, 14.0, "#ffffff", DASHED);
        let text = "a block in a mapping of its own (mmap), after its heap (not to scale)";
        svg.text(LEFT + 38.0, y, faint, text);
    }
    if !detailed {
        y += 20.0;
        let text = "Blocks are thinner than a pixel here: each pixel column shows the share \
                    of its bytes in used blocks (from the bottom) and in free blocks (above).";
        svg.text(LEFT, y, faint, text);
    }
    y
}

fn draw_row(svg: &mut Svg, y0: f64, row: &Row, scale: f64, detailed: bool) {
    let stats = row.dump.stats;
    svg.text(LEFT, y0 + 14.0, Style::new(13.5).bold(), &row.label);
    svg.text(
        LEFT + PLOT,
        y0 + 14.0,
        Style::new(12.5).end().fill(svg::FAINT),
        &format!(
            "in_use={} free={} fragmentation={}%",
            stats.in_use, stats.free, stats.fragmentation_percent
        ),
    );
    let bar_top = y0 + 22.0;
    // Where each block goes: to scale, or shortened.
    let mut x = LEFT;
    let mut previous_end = 0;
    let mut scaled = Vec::new();
    let mut shortened = Vec::new();
    for block in &row.dump.blocks {
        x += block.offset.saturating_sub(previous_end) as f64 * scale;
        previous_end = block.end();
        if row.shortened(block) {
            shortened.push((x, *block));
            x += SHORT;
        } else {
            let width = block.size as f64 * scale;
            scaled.push((x, width, *block));
            x += width;
        }
    }
    let bar_end = x;
    if detailed {
        for &(x, width, block) in &scaled {
            draw_block(
                svg,
                (x, bar_top),
                width,
                row.kind(&block),
                &block.size.to_string(),
            );
        }
    } else {
        columns(svg, bar_top, row, &scaled);
    }
    for &(x, block) in &shortened {
        draw_block(
            svg,
            (x, bar_top),
            SHORT,
            row.kind(&block),
            &svg::bytes(block.size),
        );
        break_mark(svg, x + SHORT / 2.0, bar_top);
    }
    let mut x = bar_end + MAPPING_GAP;
    for mapping in &row.dump.mappings {
        let kind = if row
            .harness_mappings
            .contains(&(mapping.index, mapping.size))
        {
            Kind::Harness
        } else if mapping.used {
            Kind::Used
        } else {
            Kind::Free
        };
        svg.rect(x, bar_top, SHORT, BAR, kind.colour(), DASHED);
        let style = Style::new(11.0).middle().fill(kind.ink());
        svg.text(
            x + SHORT / 2.0,
            bar_top + 18.0,
            style,
            &format!("mmap #{}", mapping.index),
        );
        svg.text(
            x + SHORT / 2.0,
            bar_top + 33.0,
            style,
            &svg::bytes(mapping.size),
        );
        x += SHORT + 4.0;
    }
    let below = bar_top + BAR + 15.0;
    let faint = Style::new(11.5).fill(svg::FAINT);
    svg.text(LEFT, below, faint, "0x0");
    if row.dump.end() > 0 {
        let end = row.dump.end();
        let label = format!("{end:#x} ({})", svg::bytes(end));
        svg.text(bar_end.max(LEFT + 120.0), below, faint.end(), &label);
    }
}

/// One block, with `label` inside when it fits.
fn draw_block(svg: &mut Svg, (x, y): (f64, f64), width: f64, kind: Kind, label: &str) {
    svg.rect(
        x,
        y,
        width,
        BAR,
        kind.colour(),
        "stroke=\"#ffffff\" stroke-width=\"1\"",
    );
    if svg::text_width(label, 10.5) + 6.0 <= width {
        let style = Style::new(10.5).middle().fill(kind.ink());
        svg.text(x + width / 2.0, y + BAR / 2.0 + 4.0, style, label);
    }
}

/// Two slanted white strokes across a shortened block, as on a broken axis.
fn break_mark(svg: &mut Svg, x: f64, top: f64) {
    for dx in [-30.0, 26.0] {
        svg.line(
            (x + dx - 3.0, top + BAR),
            (x + dx + 3.0, top),
            "#ffffff",
            "stroke-width=\"3\"",
        );
    }
}

/// Blocks too thin to draw one by one: each pixel column's bytes, split by kind, as a
/// little stacked bar (used from the bottom, then the harness's data, free on top).
fn columns(svg: &mut Svg, top: f64, row: &Row, scaled: &[(f64, f64, Block)]) {
    let count = PLOT.ceil() as usize + 1;
    let mut cover = vec![[0.0f64; 3]; count];
    for &(x, width, block) in scaled {
        let slot = match row.kind(&block) {
            Kind::Used => 0,
            Kind::Harness => 1,
            Kind::Free => 2,
        };
        let (start, end) = (x - LEFT, x - LEFT + width);
        let mut column = start.floor().max(0.0) as usize;
        while (column as f64) < end && column < count {
            let overlap = end.min(column as f64 + 1.0) - start.max(column as f64);
            cover[column][slot] += overlap.max(0.0);
            column += 1;
        }
    }
    // Heights in tenths of a pixel, so that neighbouring columns that look the same
    // merge into one rectangle.
    let heights: Vec<[i64; 3]> = cover
        .iter()
        .map(|c| c.map(|share| (share.min(1.0) * BAR * 10.0).round() as i64))
        .collect();
    let mut column = 0;
    while column < count {
        let same = heights[column..]
            .iter()
            .take_while(|h| **h == heights[column])
            .count();
        let x = LEFT + column as f64;
        let mut bottom = top + BAR;
        for (slot, kind) in [Kind::Used, Kind::Harness, Kind::Free]
            .into_iter()
            .enumerate()
        {
            let height = heights[column][slot] as f64 / 10.0;
            if height > 0.0 {
                bottom -= height;
                svg.rect(x, bottom, same as f64, height, kind.colour(), "");
            }
        }
        column += same;
    }
}

/// A bar as long as a round number of bytes (a power of two), with its length.
fn scale_bar(svg: &mut Svg, y: f64, scale: f64) {
    let mut amount: usize = 1;
    while (amount * 2) as f64 * scale <= SCALE_BAR_MAX {
        amount *= 2;
    }
    let length = amount as f64 * scale;
    let ink = svg::INK;
    svg.line((LEFT, y), (LEFT + length, y), ink, "stroke-width=\"2\"");
    for x in [LEFT, LEFT + length] {
        svg.line((x, y - 5.0), (x, y + 5.0), ink, "stroke-width=\"2\"");
    }
    svg.text(
        LEFT + length + 8.0,
        y + 4.0,
        Style::new(12.0),
        &format!("{} on the scale of every bar", svg::bytes(amount)),
    );
}
