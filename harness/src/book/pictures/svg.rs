//! A few lines of SVG, written as text: the same numbers always give the same bytes.
//!
//! Coordinates are printed with at most one decimal, so floating-point noise never
//! reaches the file.

use std::fmt::Write as _;

/// The palette (Okabe and Ito's, readable with every common colour-vision deficiency).
pub const USED: &str = "#e69f00";
pub const FREE: &str = "#009e73";
/// The harness's own data in a trace's heap.
pub const HARNESS: &str = "#bbbbbb";
pub const INK: &str = "#222222";
pub const FAINT: &str = "#666666";
pub const GRID: &str = "#dddddd";
/// One colour per phase, in phase order (then round again).
pub const PHASE_COLOURS: &[&str] = &["#d55e00", "#0072b2", "#cc79a7", "#56b4e9", "#f0e442"];
/// One dash pattern per phase, so the lines differ in grey print too.
pub const PHASE_DASHES: &[&str] = &["", "8 4", "2 3", "12 3 2 3"];

/// Characters' average width as a share of the font size, to see whether a label fits.
const CHAR_WIDTH: f64 = 0.6;

pub fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * CHAR_WIDTH
}

/// An SVG document being written.
pub struct Svg {
    width: f64,
    height: f64,
    title: String,
    body: String,
}

impl Svg {
    /// A `width` by `height` picture on a white background; `title` is its tooltip and
    /// accessible name.
    pub fn new(width: f64, height: f64, title: &str) -> Svg {
        Svg {
            width,
            height,
            title: title.to_string(),
            body: String::new(),
        }
    }

    /// Sets the height, for a picture whose content says how tall it is.
    pub fn set_height(&mut self, height: f64) {
        self.height = height;
    }

    /// A rectangle; `extra` is more attributes (`stroke="…"`), or empty.
    pub fn rect(&mut self, x: f64, y: f64, width: f64, height: f64, fill: &str, extra: &str) {
        let _ = writeln!(
            self.body,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\"{}{extra}/>",
            num(x),
            num(y),
            num(width),
            num(height),
            if extra.is_empty() { "" } else { " " }
        );
    }

    /// Text at `(x, y)` (the baseline); `anchor` is `start`, `middle` or `end`.
    pub fn text(&mut self, x: f64, y: f64, style: Style, content: &str) {
        let weight = if style.bold {
            " font-weight=\"bold\""
        } else {
            ""
        };
        let _ = writeln!(
            self.body,
            "<text x=\"{}\" y=\"{}\" font-size=\"{}\" text-anchor=\"{}\" fill=\"{}\"{weight}>{}</text>",
            num(x),
            num(y),
            num(style.size),
            style.anchor,
            style.fill,
            escape(content)
        );
    }

    pub fn line(&mut self, from: (f64, f64), to: (f64, f64), stroke: &str, extra: &str) {
        let _ = writeln!(
            self.body,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{stroke}\"{}{extra}/>",
            num(from.0),
            num(from.1),
            num(to.0),
            num(to.1),
            if extra.is_empty() { "" } else { " " }
        );
    }

    /// A line through `points`, with a dash pattern unless `dash` is empty.
    pub fn polyline(&mut self, points: &[(f64, f64)], stroke: &str, width: f64, dash: &str) {
        let mut list = String::new();
        for (i, (x, y)) in points.iter().enumerate() {
            let _ = write!(
                list,
                "{}{},{}",
                if i == 0 { "" } else { " " },
                num(*x),
                num(*y)
            );
        }
        let dash = if dash.is_empty() {
            String::new()
        } else {
            format!(" stroke-dasharray=\"{dash}\"")
        };
        let _ = writeln!(
            self.body,
            "<polyline points=\"{list}\" fill=\"none\" stroke=\"{stroke}\" stroke-width=\"{}\" \
             stroke-linejoin=\"round\"{dash}/>",
            num(width)
        );
    }

    pub fn finish(self) -> String {
        let (w, h) = (num(self.width), num(self.height));
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"DejaVu Sans, Verdana, sans-serif\">\n\
             <title>{}</title>\n\
             <rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\n\
             {}</svg>\n",
            escape(&self.title),
            self.body
        )
    }
}

/// How a piece of text looks.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub size: f64,
    pub anchor: &'static str,
    pub fill: &'static str,
    pub bold: bool,
}

impl Style {
    pub const fn new(size: f64) -> Style {
        Style {
            size,
            anchor: "start",
            fill: INK,
            bold: false,
        }
    }
    pub const fn bold(self) -> Style {
        Style { bold: true, ..self }
    }
    pub const fn middle(self) -> Style {
        Style {
            anchor: "middle",
            ..self
        }
    }
    pub const fn end(self) -> Style {
        Style {
            anchor: "end",
            ..self
        }
    }
    pub const fn fill(self, fill: &'static str) -> Style {
        Style { fill, ..self }
    }
}

/// A coordinate with at most one decimal and no `-0`.
pub fn num(value: f64) -> String {
    let tenths = (value * 10.0).round() as i64;
    if tenths % 10 == 0 {
        format!("{}", tenths / 10)
    } else {
        format!(
            "{}{}.{}",
            if tenths < 0 { "-" } else { "" },
            (tenths / 10).abs(),
            (tenths % 10).abs()
        )
    }
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A byte count for a label: `224 B`, `1.5 KiB`, `8.36 MiB`.
pub fn bytes(n: usize) -> String {
    const KIB: f64 = 1024.0;
    let n_f = n as f64;
    if n < 1024 {
        format!("{n} B")
    } else if n_f < KIB * KIB {
        format!("{} KiB", trim(n_f / KIB, 1))
    } else {
        format!("{} MiB", trim(n_f / (KIB * KIB), 2))
    }
}

/// `value` with up to `decimals` decimals, trailing zeros dropped.
fn trim(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A whole number with thin groups of three (`2 661 754`), for readable byte counts.
pub fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

/// A round step for axis ticks: 1, 2 or 5 times a power of ten of `unit`, giving at most
/// `most` steps up to `max`.
pub fn tick_step(max: f64, unit: f64, most: usize) -> f64 {
    let mut step = unit;
    loop {
        for factor in [1.0, 2.0, 5.0] {
            if max / (step * factor) <= most as f64 {
                return step * factor;
            }
        }
        step *= 10.0;
    }
}
