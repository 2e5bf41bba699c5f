use super::canvas::{text_height, text_width};
use super::*;

fn curve(points: &[(usize, f64)]) -> Vec<(usize, f64)> {
    points.to_vec()
}

/// Pixels of `rgb` inside the box with corners `a` and `b` (included).
fn count(c: &Canvas, (x0, y0): (i64, i64), (x1, y1): (i64, i64), rgb: Rgb) -> usize {
    let mut n = 0;
    for y in y0.max(0)..=y1.min(c.height as i64 - 1) {
        for x in x0.max(0)..=x1.min(c.width as i64 - 1) {
            n += usize::from(c.get(x as usize, y as usize) == rgb);
        }
    }
    n
}

#[test]
fn ticks_are_round_numbers_covering_the_range() {
    let cases: &[(f64, f64, bool, &[f64], f64)] = &[
        (0.0, 1.0, false, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0], 0.2),
        (1.63, 2.41, false, &[1.8, 2.0, 2.2, 2.4], 0.2),
        (1.5, 2.1, false, &[1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1], 0.1),
        (
            0.0,
            113.0,
            true,
            &[0.0, 20.0, 40.0, 60.0, 80.0, 100.0],
            20.0,
        ),
        (1.0, 3.0, true, &[1.0, 2.0, 3.0], 1.0),
        (1.96, 2.04, false, &[1.96, 1.98, 2.0, 2.02, 2.04], 0.02),
        (
            1000.0,
            9000.0,
            false,
            &[2000.0, 4000.0, 6000.0, 8000.0],
            2000.0,
        ),
    ];
    for &(lo, hi, integer, want, want_step) in cases {
        let (got, step) = nice_ticks(lo, hi, TICKS, integer);
        assert!(
            (step - want_step).abs() < 1e-12,
            "[{lo}, {hi}]: step {step}"
        );
        assert_eq!(got.len(), want.len(), "[{lo}, {hi}]: {got:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "[{lo}, {hi}]: {got:?}");
        }
        assert!(got.iter().all(|&t| t >= lo - 1e-9 && t <= hi + 1e-9));
    }
    // No range: one tick, never a loop without end.
    assert_eq!(nice_ticks(2.0, 2.0, TICKS, false).0, [2.0]);
    assert_eq!(nice_ticks(f64::NAN, 1.0, TICKS, false).0.len(), 1);
}

#[test]
fn tick_labels_have_the_decimals_the_spacing_needs() {
    assert_eq!(tick_label(0.6000000000000001, 0.2), "0.6");
    assert_eq!(tick_label(2.0, 0.5), "2.0");
    assert_eq!(tick_label(1.98, 0.02), "1.98");
    assert_eq!(tick_label(0.30000000000000004, 0.1), "0.3");
    assert_eq!(tick_label(40.0, 20.0), "40");
    assert_eq!(tick_label(-1e-17, 0.1), "0.0");
    assert_eq!(tick_label(-0.5, 0.5), "-0.5");
}

#[test]
fn title_axis_titles_ticks_and_legend_are_drawn() {
    let train = curve(&[(1, 2.4), (2, 2.1), (3, 1.9), (4, 1.7), (5, 1.65)]);
    let valid = curve(&[(0, 2.5), (5, 1.8)]);
    let (c, d) = draw("SmolLM2-135M-Instruct.Q4_1.gguf", &train, &valid);

    let (tx, ty, title) = &d.title;
    assert_eq!(title, "SmolLM2-135M-Instruct.Q4_1.gguf");
    let title_box = (
        (*tx, *ty),
        (
            *tx + text_width(title, SCALE) as i64,
            *ty + text_height(SCALE) as i64,
        ),
    );
    assert!(count(&c, title_box.0, title_box.1, INK) > 200, "title ink");
    assert!(
        (tx + text_width(title, SCALE) as i64 / 2 - WIDTH as i64 / 2).abs() <= 1,
        "centred"
    );

    let labels = |t: &[(f64, String)]| t.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>();
    assert_eq!(labels(&d.x_ticks), ["0", "1", "2", "3", "4", "5"]);
    // Losses 1.65..2.5, padded by 2% of 2.5 on each side: 1.6..2.55.
    assert_eq!(labels(&d.y_ticks), ["1.6", "1.8", "2.0", "2.2", "2.4"]);
    // Tick labels sit left of the loss axis and under the step axis.
    assert!(count(&c, (0, AREA.top), (AREA.left - 8, AREA.bottom), INK) > 100);
    assert!(
        count(
            &c,
            (AREA.left, AREA.bottom + 8),
            (AREA.right, HEIGHT as i64 - 1),
            INK
        ) > 100
    );

    let ((x0, y0), (x1, y1)) = d.legend.expect("a legend");
    assert!(x0 > AREA.left && x1 < AREA.right && y0 > AREA.top && y1 < AREA.bottom);
    let names: Vec<&str> = d.entries.iter().map(|e| e.0).collect();
    assert_eq!(names, ["train", "validation"]);
    for ((_, (sx, sy)), rgb) in d.entries.iter().zip([TRAIN, VALID]) {
        assert_eq!(c.get(*sx as usize + 2, *sy as usize), rgb, "swatch colour");
    }
    assert!(count(&c, (x0, y0), (x1, y1), INK) > 150, "legend text");
    assert!(count(&c, (x0, y0), (x1, y1), AXES) > 2 * ((x1 - x0) + (y1 - y0)) as usize - 8);

    // The curves: the first training point is a blue dot on the plot area's left-hand side at
    // step 1 of 0..5, and the last validation point an orange dot on its right edge.
    let span = (AREA.right - AREA.left) as f64;
    let x1_px = AREA.left + (span / 5.0).round() as i64;
    assert!(count(&c, (x1_px - 1, AREA.top), (x1_px + 1, AREA.bottom), TRAIN) > 0);
    assert!(
        count(
            &c,
            (AREA.right - 3, AREA.top),
            (AREA.right, AREA.bottom),
            VALID
        ) > 0
    );
}

#[test]
fn a_run_without_validation_has_a_one_entry_legend_and_no_data_says_so() {
    let (_, d) = draw("m", &curve(&[(1, 1.0), (2, 0.5)]), &[]);
    assert_eq!(d.entries.iter().map(|e| e.0).collect::<Vec<_>>(), ["train"]);
    let (c, d) = draw("m", &curve(&[(1, f64::NAN)]), &[]);
    assert!(d.legend.is_none() && d.x_ticks.is_empty());
    let mid = (
        (AREA.top + AREA.bottom) / 2,
        (AREA.top + AREA.bottom) / 2 + 14,
    );
    assert!(count(&c, (AREA.left, mid.0), (AREA.right, mid.1), INK) > 100);
}

#[test]
fn a_long_title_is_cut_to_the_width() {
    let long = "x".repeat(200);
    let (c, d) = draw(&long, &curve(&[(1, 1.0)]), &[]);
    assert!(d.title.2.ends_with("...") && d.title.2.len() < 200);
    assert!(text_width(&d.title.2, SCALE) <= WIDTH - 20);
    assert!(d.title.0 >= 0);
    let _ = c;
}

/// The decoded RGB pixels of the PNG at `path`, checked to be `WIDTH` × `HEIGHT` 8-bit RGB.
fn decode(path: &std::path::Path) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut reader = ::png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((info.width, info.height), (WIDTH as u32, HEIGHT as u32));
    assert_eq!(info.color_type, ::png::ColorType::Rgb);
    assert_eq!(info.bit_depth, ::png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    buf
}

/// The font pixels of `text` drawn at `at` that the decoded image gets wrong: a lit pixel not in
/// ink, or an unlit one inside a glyph not white.
fn misread(rgb: &[u8], at: (i64, i64), text: &str, up: bool) -> Vec<(i64, i64)> {
    use super::font::{lit, ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH};
    let len = text_width(text, SCALE) as i64;
    let mut wrong = Vec::new();
    for (i, ch) in text.chars().enumerate() {
        for row in 0..GLYPH_HEIGHT * SCALE {
            for col in 0..GLYPH_WIDTH * SCALE {
                let (u, v) = ((i * ADVANCE * SCALE + col) as i64, row as i64);
                let (x, y) = if up {
                    (at.0 + v, at.1 + len - 1 - u)
                } else {
                    (at.0 + u, at.1 + v)
                };
                let k = (y as usize * WIDTH + x as usize) * 3;
                let want = if lit(ch, col / SCALE, row / SCALE) {
                    INK
                } else {
                    [255, 255, 255]
                };
                if rgb[k..k + 3] != want {
                    wrong.push((x, y));
                }
            }
        }
    }
    wrong
}

#[test]
fn the_png_decodes_to_the_canvas_with_every_text_where_it_was_drawn() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("loss.png");
    let title = "LoRA loss: SmolLM2-135M-Instruct";
    let (train, valid) = (
        curve(&[(1, 2.0), (2, 1.5), (3, 1.2), (4, 0.9)]),
        curve(&[(0, 2.1), (4, 1.0)]),
    );
    write_loss_png(&path, title, &train, &valid).unwrap_or_else(|e| panic!("{e}"));
    let rgb = decode(&path);
    let (c, d) = draw(title, &train, &valid);
    assert!(rgb == c.pixels, "decoded pixels differ from the canvas");

    let texts: Vec<&str> = d.texts.iter().map(|t| t.1.as_str()).collect();
    for want in [
        title,
        "step",
        "loss",
        "train",
        "validation",
        "0",
        "4",
        "1.0",
        "2.0",
    ] {
        assert!(texts.contains(&want), "{want:?} not drawn: {texts:?}");
    }
    for (at, text, up) in &d.texts {
        let wrong = misread(&rgb, *at, text, *up);
        assert!(
            wrong.is_empty(),
            "{text:?} at {at:?}: {} of its pixels wrong, first at {:?}",
            wrong.len(),
            wrong.first()
        );
    }
    // Where each part is: the title centred on top, the axis titles outside the plot area
    // (step under it, loss left of it and upright), the legend labels inside its box.
    let find = |t: &str| {
        d.texts
            .iter()
            .find(|x| x.1 == t)
            .unwrap_or_else(|| panic!("{t}"))
    };
    assert!(find(title).0 .1 < AREA.top);
    assert!(find("step").0 .1 > AREA.bottom && !find("step").2);
    assert!(find("loss").0 .0 < AREA.left && find("loss").2);
    let ((x0, y0), (x1, y1)) = d.legend.unwrap_or_else(|| panic!("a legend"));
    for name in ["train", "validation"] {
        let (x, y) = find(name).0;
        assert!(x > x0 && x < x1 && y > y0 && y < y1, "{name} in the legend");
    }
    // The check can fail: text the image does not show is misread.
    assert!(!misread(&rgb, find("step").0, "stop", false).is_empty());
}
