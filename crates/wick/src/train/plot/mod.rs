//! `loss.png`: training loss (blue line) and validation loss (orange, a dot per validation)
//! against the optimizer step, with a title naming the model, tick values on both axes, axis
//! titles (step, loss), grid lines at the ticks and a legend.
//!
//! Everything is drawn here, text included (a built-in 5×7 bitmap font, [`font`]), and encoded
//! by hand ([`png`]), so writing the plot needs no font file or image library and cannot fail
//! on a bare machine.

mod canvas;
mod font;
mod png;

use std::path::Path;

use crate::error::Result;
use crate::io::npy::write_atomic;
use canvas::{text_height, text_width, Canvas, Rgb};

const WIDTH: usize = 800;
const HEIGHT: usize = 480;
/// Every text is drawn with each font pixel 2 × 2 (characters 10 × 14 pixels).
const SCALE: usize = 2;
const TRAIN: Rgb = [31, 119, 180];
const VALID: Rgb = [255, 127, 14];
const GRID: Rgb = [228, 228, 228];
const AXES: Rgb = [90, 90, 90];
const INK: Rgb = [30, 30, 30];
/// About this many ticks on each axis.
const TICKS: usize = 6;

/// The plot area (inside the axes) in pixels, edges included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Area {
    pub left: i64,
    pub right: i64,
    pub top: i64,
    pub bottom: i64,
}

const AREA: Area = Area {
    left: 96,
    right: WIDTH as i64 - 24,
    top: 44,
    bottom: HEIGHT as i64 - 64,
};

/// Where the parts of a drawn plot went (what the tests look at).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Drawn {
    pub title: (i64, i64, String),
    /// Each tick's value and its label, along the step axis then the loss axis.
    pub x_ticks: Vec<(f64, String)>,
    pub y_ticks: Vec<(f64, String)>,
    /// The legend's box (corners) and each entry's label with the top-left of its swatch.
    pub legend: Option<((i64, i64), (i64, i64))>,
    pub entries: Vec<(&'static str, (i64, i64))>,
    /// Every text drawn: its top-left corner, the text, and whether it reads upwards.
    pub texts: Vec<((i64, i64), String, bool)>,
}

impl Drawn {
    /// Draws `text` at `at` (reading upwards when `up`) and records it.
    fn text(&mut self, c: &mut Canvas, at: (i64, i64), text: &str, up: bool) {
        if up {
            c.text_up(at, text, SCALE, INK);
        } else {
            c.text(at, text, SCALE, INK);
        }
        self.texts.push((at, text.to_string(), up));
    }
}

/// Draws the curves (each a list of (step, loss); non-finite losses are left out) under
/// `title` and writes `path` atomically.
pub fn write_loss_png(
    path: &Path,
    title: &str,
    train: &[(usize, f64)],
    valid: &[(usize, f64)],
) -> Result<()> {
    let (canvas, _) = draw(title, train, valid);
    write_atomic(
        path,
        &png::encode_png(&canvas.pixels, canvas.width, canvas.height),
    )
}

pub(crate) fn draw(title: &str, train: &[(usize, f64)], valid: &[(usize, f64)]) -> (Canvas, Drawn) {
    let mut c = Canvas::new(WIDTH, HEIGHT);
    let a = AREA;
    let title = fit(title, WIDTH - 20);
    let title_at = ((WIDTH - text_width(&title, SCALE)) as i64 / 2, 12);

    let finite = |curve: &[(usize, f64)]| -> Vec<(usize, f64)> {
        curve
            .iter()
            .copied()
            .filter(|(_, l)| l.is_finite())
            .collect()
    };
    let (train, valid) = (finite(train), finite(valid));
    let all = || train.iter().chain(&valid);
    let mut drawn = Drawn {
        title: (title_at.0, title_at.1, title.clone()),
        x_ticks: Vec::new(),
        y_ticks: Vec::new(),
        legend: None,
        entries: Vec::new(),
        texts: Vec::new(),
    };
    drawn.text(&mut c, title_at, &title, false);
    let y_title = "loss";
    let mid = (a.top + a.bottom) / 2 - text_width(y_title, SCALE) as i64 / 2;
    drawn.text(&mut c, (12, mid), y_title, true);
    let x_title = "step";
    let centre = (a.left + a.right) / 2 - text_width(x_title, SCALE) as i64 / 2;
    drawn.text(&mut c, (centre, a.bottom + 36), x_title, false);
    if all().next().is_none() {
        let msg = "no finite loss to plot";
        let at = (
            (a.left + a.right) / 2 - text_width(msg, SCALE) as i64 / 2,
            (a.top + a.bottom) / 2,
        );
        drawn.text(&mut c, at, msg, false);
        axes(&mut c);
        return (c, drawn);
    }
    let x_lo = all().map(|p| p.0).min().unwrap_or(0) as f64;
    let x_hi = (all().map(|p| p.0).max().unwrap_or(0) as f64).max(x_lo + 1.0);
    let y_min = all().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let y_max = all().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let pad = ((y_max - y_min) * 0.05).max(y_max.abs() * 0.02).max(1e-3);
    let (y_lo, y_hi) = (y_min - pad, y_max + pad);
    let px =
        |s: f64| a.left + ((s - x_lo) / (x_hi - x_lo) * (a.right - a.left) as f64).round() as i64;
    let py =
        |l: f64| a.bottom - ((l - y_lo) / (y_hi - y_lo) * (a.bottom - a.top) as f64).round() as i64;

    let (x_ticks, x_step) = nice_ticks(x_lo, x_hi, TICKS, true);
    for &v in &x_ticks {
        let (x, label) = (px(v), tick_label(v, x_step));
        c.line((x, a.top), (x, a.bottom), 0, GRID);
        c.line((x, a.bottom), (x, a.bottom + 5), 0, AXES);
        let w = text_width(&label, SCALE) as i64;
        drawn.text(&mut c, (x - w / 2, a.bottom + 10), &label, false);
        drawn.x_ticks.push((v, label));
    }
    let (y_ticks, y_step) = nice_ticks(y_lo, y_hi, TICKS, false);
    for &v in &y_ticks {
        let (y, label) = (py(v), tick_label(v, y_step));
        c.line((a.left, y), (a.right, y), 0, GRID);
        c.line((a.left - 5, y), (a.left, y), 0, AXES);
        let (w, h) = (text_width(&label, SCALE) as i64, text_height(SCALE) as i64);
        drawn.text(&mut c, (a.left - 10 - w, y - h / 2), &label, false);
        drawn.y_ticks.push((v, label));
    }
    axes(&mut c);

    for (curve, rgb, marks) in [(&train, TRAIN, false), (&valid, VALID, true)] {
        let pts: Vec<(i64, i64)> = curve.iter().map(|&(s, l)| (px(s as f64), py(l))).collect();
        for w in pts.windows(2) {
            c.line(w[0], w[1], 1, rgb);
        }
        for &(x, y) in &pts {
            c.dot(x, y, if marks || pts.len() == 1 { 3 } else { 1 }, rgb);
        }
    }
    legend(&mut c, &mut drawn, !train.is_empty(), !valid.is_empty());
    (c, drawn)
}

/// The two axis lines, drawn over the grid.
fn axes(c: &mut Canvas) {
    let a = AREA;
    c.line((a.left, a.top), (a.left, a.bottom), 0, AXES);
    c.line((a.left, a.bottom), (a.right, a.bottom), 0, AXES);
}

/// A boxed legend in the top-right corner of the plot area: a swatch and a name per curve.
fn legend(c: &mut Canvas, drawn: &mut Drawn, train: bool, valid: bool) {
    let entries: Vec<(&'static str, Rgb, bool)> = [
        (train, ("train", TRAIN, false)),
        (valid, ("validation", VALID, true)),
    ]
    .into_iter()
    .filter_map(|(shown, e)| shown.then_some(e))
    .collect();
    let (pad, swatch, line_h) = (8i64, 28i64, text_height(SCALE) as i64 + 8);
    let text_w = entries
        .iter()
        .map(|(name, ..)| text_width(name, SCALE) as i64)
        .max()
        .unwrap_or(0);
    let (w, h) = (
        pad * 3 + swatch + text_w,
        pad + line_h * entries.len() as i64,
    );
    let (x0, y0) = (AREA.right - 12 - w, AREA.top + 12);
    c.fill((x0, y0), (x0 + w, y0 + h), [255, 255, 255]);
    c.frame((x0, y0), (x0 + w, y0 + h), AXES);
    for (i, (name, rgb, marks)) in entries.into_iter().enumerate() {
        let top = y0 + pad + line_h * i as i64;
        let y = top + text_height(SCALE) as i64 / 2;
        c.line((x0 + pad, y), (x0 + pad + swatch, y), 1, rgb);
        if marks {
            c.dot(x0 + pad + swatch / 2, y, 3, rgb);
        }
        drawn.text(c, (x0 + pad * 2 + swatch, top), name, false);
        drawn.entries.push((name, (x0 + pad, y)));
    }
    drawn.legend = Some(((x0, y0), (x0 + w, y0 + h)));
}

/// `text` cut to fit `width` pixels (ending in `...` when cut).
fn fit(text: &str, width: usize) -> String {
    if text_width(text, SCALE) <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().collect();
    while !out.is_empty() && text_width(&format!("{out}..."), SCALE) > width {
        out.pop();
    }
    format!("{out}...")
}

/// Tick values inside [lo, hi], about `target` of them, spaced by 1, 2 or 5 times a power of
/// ten (whole numbers when `integer`), and that spacing.
pub(crate) fn nice_ticks(lo: f64, hi: f64, target: usize, integer: bool) -> (Vec<f64>, f64) {
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return (vec![lo], 1.0);
    }
    let raw = (hi - lo) / target.saturating_sub(1).max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let m = raw / mag;
    let mut step = mag
        * if m < 1.5 {
            1.0
        } else if m < 3.0 {
            2.0
        } else if m < 7.0 {
            5.0
        } else {
            10.0
        };
    if integer {
        step = step.max(1.0).round();
    }
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    let ticks = (first..=last).map(|k| k as f64 * step).collect();
    (ticks, step)
}

/// `v` printed with as many decimals as a tick spacing of `step` needs (0.2 → 1, 0.05 → 2).
pub(crate) fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step > 0.0 && step.is_finite() {
        (-(step.log10() + 1e-9).floor()).max(0.0) as usize
    } else {
        0
    };
    let s = format!("{v:.decimals$}");
    // -0.0 prints as "-0": a tick at zero reads "0".
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

#[cfg(test)]
mod tests;
