//! `loss.png`: training loss (blue) and validation loss (orange, with a dot per validation)
//! against the step, on light horizontal grid lines at each fifth of the loss range.
//!
//! Drawn without text so it needs no fonts, and encoded as an uncompressed PNG by hand so it
//! needs no image libraries: it cannot fail on a bare machine.

use std::path::Path;

use crate::error::Result;
use crate::io::npy::write_atomic;

const WIDTH: usize = 800;
const HEIGHT: usize = 480;
const MARGIN: usize = 30;
const TRAIN: [u8; 3] = [31, 119, 180];
const VALID: [u8; 3] = [255, 127, 14];
const GRID: [u8; 3] = [225, 225, 225];
const AXES: [u8; 3] = [90, 90, 90];

struct Canvas {
    pixels: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Canvas {
            pixels: vec![255; WIDTH * HEIGHT * 3],
        }
    }

    fn put(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < WIDTH && (y as usize) < HEIGHT {
            let i = (y as usize * WIDTH + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&rgb);
        }
    }

    fn dot(&mut self, x: i64, y: i64, r: i64, rgb: [u8; 3]) {
        for dy in -r..=r {
            for dx in -r..=r {
                self.put(x + dx, y + dy, rgb);
            }
        }
    }

    /// A line `width` pixels thick (Bresenham with a square pen).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), pen: i64, rgb: [u8; 3]) {
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
}

/// Draws the curves (each a list of (step, loss)) and writes `path` atomically.
pub fn write_loss_png(path: &Path, train: &[(usize, f64)], valid: &[(usize, f64)]) -> Result<()> {
    let mut c = Canvas::new();
    let points = || train.iter().chain(valid).filter(|(_, l)| l.is_finite());
    let (x_min, x_max) = points().fold((usize::MAX, 0), |(a, b), &(s, _)| (a.min(s), b.max(s)));
    let (y_min, y_max) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(_, l)| {
        (a.min(l), b.max(l))
    });
    let (left, right, top, bottom) = (MARGIN, WIDTH - MARGIN, MARGIN, HEIGHT - MARGIN);
    for i in 0..=4 {
        let y = (top + (bottom - top) * i / 4) as i64;
        c.line((left as i64, y), (right as i64, y), 0, GRID);
    }
    c.line(
        (left as i64, top as i64),
        (left as i64, bottom as i64),
        0,
        AXES,
    );
    c.line(
        (left as i64, bottom as i64),
        (right as i64, bottom as i64),
        0,
        AXES,
    );
    if x_min <= x_max && y_min.is_finite() {
        let pad = ((y_max - y_min) * 0.05).max(1e-6);
        let (y_lo, y_hi) = (y_min - pad, y_max + pad);
        let x_span = (x_max - x_min).max(1) as f64;
        let to_px = |(s, l): (usize, f64)| {
            let x = left as f64 + (s - x_min) as f64 / x_span * (right - left) as f64;
            let y = bottom as f64 - (l - y_lo) / (y_hi - y_lo) * (bottom - top) as f64;
            (x.round() as i64, y.round() as i64)
        };
        for (curve, rgb, marks) in [(train, TRAIN, false), (valid, VALID, true)] {
            let pts: Vec<(i64, i64)> = curve
                .iter()
                .filter(|(_, l)| l.is_finite())
                .map(|&p| to_px(p))
                .collect();
            for w in pts.windows(2) {
                c.line(w[0], w[1], 1, rgb);
            }
            for &(x, y) in &pts {
                c.dot(x, y, if marks || pts.len() == 1 { 3 } else { 1 }, rgb);
            }
        }
    }
    write_atomic(path, &encode_png(&c.pixels, WIDTH, HEIGHT))
}

/// An 8-bit RGB PNG with zlib "stored" (uncompressed) blocks.
fn encode_png(rgb: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut raw = Vec::with_capacity((width * 3 + 1) * height);
    for row in rgb.chunks(width * 3) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, RGB, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", &ihdr[..]), (b"IDAT", &z[..]), (b"IEND", &[][..])] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        let crc = crc32(&png[start..]);
        png.extend_from_slice(&crc.to_be_bytes());
    }
    png
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += x as u32;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }
}
