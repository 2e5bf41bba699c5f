//! An RGB pixel buffer with the few primitives a line plot needs: dots, thick lines, filled and
//! outlined rectangles, and text in the built-in 5×7 font (horizontal or turned a quarter left).

use super::font::{self, ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH};

pub type Rgb = [u8; 3];

pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Canvas {
    /// A white canvas.
    pub fn new(width: usize, height: usize) -> Self {
        Canvas {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    /// Sets one pixel; points outside the canvas are ignored.
    pub fn put(&mut self, x: i64, y: i64, rgb: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&rgb);
        }
    }

    #[cfg(test)]
    pub fn get(&self, x: usize, y: usize) -> Rgb {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// A square of side 2r + 1 centred on (x, y).
    pub fn dot(&mut self, x: i64, y: i64, r: i64, rgb: Rgb) {
        self.fill((x - r, y - r), (x + r, y + r), rgb);
    }

    /// Fills the rectangle with corners `(x0, y0)` and `(x1, y1)`, both included.
    pub fn fill(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), rgb: Rgb) {
        for y in y0.min(y1)..=y0.max(y1) {
            for x in x0.min(x1)..=x0.max(x1) {
                self.put(x, y, rgb);
            }
        }
    }

    /// The one-pixel outline of the rectangle with corners `a` and `b`.
    pub fn frame(&mut self, a: (i64, i64), b: (i64, i64), rgb: Rgb) {
        self.fill(a, (b.0, a.1), rgb);
        self.fill((a.0, b.1), b, rgb);
        self.fill(a, (a.0, b.1), rgb);
        self.fill((b.0, a.1), b, rgb);
    }

    /// A line drawn with a square pen of side 2·pen + 1 (Bresenham).
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), pen: i64, rgb: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.dot(x, y, pen, rgb);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// `text` with its top-left corner at (x, y), each font pixel `scale` × `scale` pixels.
    pub fn text(&mut self, (x, y): (i64, i64), text: &str, scale: usize, rgb: Rgb) {
        self.glyphs(text, scale, rgb, |col, row| (x + col, y + row));
    }

    /// `text` turned a quarter left (reading upwards), its bounding box's top-left at (x, y).
    pub fn text_up(&mut self, (x, y): (i64, i64), text: &str, scale: usize, rgb: Rgb) {
        let len = text_width(text, scale) as i64;
        self.glyphs(text, scale, rgb, |col, row| (x + row, y + len - 1 - col));
    }

    /// Draws each lit font pixel of `text` at `at(col, row)` (in canvas pixels, unrotated).
    fn glyphs(&mut self, text: &str, scale: usize, rgb: Rgb, at: impl Fn(i64, i64) -> (i64, i64)) {
        let s = scale.max(1);
        for (i, c) in text.chars().enumerate() {
            for row in 0..GLYPH_HEIGHT * s {
                for col in 0..GLYPH_WIDTH * s {
                    if font::lit(c, col / s, row / s) {
                        let (px, py) = at(((i * ADVANCE * s) + col) as i64, row as i64);
                        self.put(px, py, rgb);
                    }
                }
            }
        }
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    font::text_width(text) * scale.max(1)
}

/// Height in pixels of a line of text drawn at `scale`.
pub fn text_height(scale: usize) -> usize {
    GLYPH_HEIGHT * scale.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INK: Rgb = [0, 0, 0];

    fn lit_pixels(c: &Canvas) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for y in 0..c.height {
            for x in 0..c.width {
                if c.get(x, y) == INK {
                    out.push((x, y));
                }
            }
        }
        out
    }

    #[test]
    fn text_draws_exactly_the_glyph_bits_scaled() {
        let mut c = Canvas::new(40, 20);
        c.text((3, 2), "L1", 2, INK);
        let mut want = Vec::new();
        for y in 0..20 {
            for x in 0..40 {
                let (fx, fy) = ((x as i64 - 3) / 2, (y as i64 - 2) / 2);
                if x < 3 || y < 2 || fy >= 7 {
                    continue;
                }
                let (ch, col) = ((fx / 6) as usize, (fx % 6) as usize);
                let c = ['L', '1'].get(ch).copied();
                if c.is_some_and(|c| font::lit(c, col, fy as usize)) {
                    want.push((x, y));
                }
            }
        }
        assert_eq!(lit_pixels(&c), want);
        // `L`: its left column (2 pixels wide at scale 2) runs the full height of 14 pixels.
        assert!((2..16).all(|y| c.get(3, y) == INK && c.get(4, y) == INK));
    }

    #[test]
    fn upward_text_is_the_horizontal_text_turned_a_quarter_left() {
        let (mut flat, mut up) = (Canvas::new(30, 30), Canvas::new(30, 30));
        flat.text((0, 0), "ab", 1, INK);
        up.text_up((0, 0), "ab", 1, INK);
        let w = text_width("ab", 1);
        let mut turned: Vec<(usize, usize)> = lit_pixels(&flat)
            .into_iter()
            .map(|(x, y)| (y, w - 1 - x))
            .collect();
        turned.sort_by_key(|&(x, y)| (y, x));
        assert_eq!(lit_pixels(&up), turned);
        assert!(!turned.is_empty());
    }

    #[test]
    fn drawing_off_the_canvas_is_clipped() {
        let mut c = Canvas::new(10, 10);
        c.line((-5, -5), (20, 20), 1, INK);
        c.text((8, 8), "W", 3, INK);
        assert_eq!(c.get(0, 0), INK);
        assert_eq!(c.get(9, 9), INK);
    }
}
