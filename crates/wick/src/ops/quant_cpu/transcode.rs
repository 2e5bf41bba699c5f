//! GGUF block types rewritten as blocks of a type with a kernel, once at load.
//!
//! - Q4_K (super-blocks of 256: eight 32-value sub-blocks `d·sc·q - dmin·mn`, 6-bit `sc`, `mn`)
//!   is eight Q4_1 blocks with `d' = d·sc`, `m' = -dmin·mn`. Those products are exact in f32
//!   (as ggml computes them) but rounded to f16 here: each value moves by at most 2⁻¹¹ of its
//!   block's range, far below the 8-bit rounding of the activations it meets.
//! - Q6_K (super-blocks of 256: sixteen 16-value sub-blocks `d·sc·(q - 32)`, 6-bit q, i8 sc)
//!   is eight [`q8_halves`](super::q8_halves) blocks with the values `q - 32` as bytes and
//!   `d·sc` per half (rounded to f16 as above).
//!
//! Each returns None where a scale would overflow f16 (the caller keeps candle's kernel).

use half::f16;

use super::q8_halves;

pub const Q4_K_BLOCK: usize = 144;
pub const Q6_K_BLOCK: usize = 210;

fn half(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `v` as f16 bytes, None where it overflows.
fn to_half(v: f32) -> Option<[u8; 2]> {
    let h = f16::from_f32(v);
    h.is_finite().then(|| h.to_le_bytes())
}

/// Sub-block j's 6-bit scale and minimum from a Q4_K block's 12 packed bytes.
fn q4_k_scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0xf) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// Q4_K super-blocks (`[d: f16][dmin: f16][scales: 12][qs: 128]`) as Q4_1 blocks
/// (`[d: f16][m: f16][qs: 16]`, byte i = value i | value i + 16 << 4).
pub fn q4_k_as_q4_1(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() / Q4_K_BLOCK * 8 * 20);
    for b in bytes.chunks_exact(Q4_K_BLOCK) {
        let (d, dmin) = (half(b, 0), half(b, 2));
        let (scales, qs) = (&b[4..16], &b[16..]);
        for j in 0..8 {
            let (sc, mn) = q4_k_scale_min(scales, j);
            out.extend_from_slice(&to_half(d * sc as f32)?);
            out.extend_from_slice(&to_half(-dmin * mn as f32)?);
            // Sub-blocks 2c and 2c + 1 are the low and high nibbles of qs[32c..32c + 32].
            let q = |v: usize| (qs[32 * (j / 2) + v] >> (4 * (j % 2))) & 0xf;
            out.extend((0..16).map(|i| q(i) | q(i + 16) << 4));
        }
    }
    Some(out)
}

/// Q6_K super-blocks (`[ql: 128][qh: 64][scales: 16 × i8][d: f16]`) as q8_halves blocks.
pub fn q6_k_as_q8_halves(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() / Q6_K_BLOCK * 8 * q8_halves::STORED_BLOCK);
    for b in bytes.chunks_exact(Q6_K_BLOCK) {
        let (ql, qh, scales, d) = (&b[..128], &b[128..192], &b[192..208], half(b, 208));
        // Value v: its 128-half n, position l in 0..32 and quarter s of that half select the
        // low or high nibble of ql[64n + l (+ 32)] and two bits of qh[32n + l].
        let value = |v: usize| {
            let (n, s, l) = (v / 128, v % 128 / 32, v % 32);
            let low = ql[64 * n + l + 32 * (s % 2)] >> (4 * (s / 2)) & 0xf;
            let high = qh[32 * n + l] >> (2 * s) & 3;
            (low | high << 4) as i8 - 32
        };
        for blk in 0..8 {
            for h in 0..2 {
                out.extend_from_slice(&to_half(d * scales[2 * blk + h] as i8 as f32)?);
            }
            out.extend((0..32).map(|i| value(32 * blk + i) as u8));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::PackedWeight;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// The packed weight's values, read back through the reference kernel: a row of the
    /// identity quantizes exactly (one value 127, scale 1/127), so `I·Wᵀ` is W.
    fn values_through_kernel(packed: &PackedWeight) -> Vec<f32> {
        let (n, k) = packed.dims();
        let identity: Vec<f32> = (0..k * k)
            .map(|i| if i / k == i % k { 1.0 } else { 0.0 })
            .collect();
        let wt = packed.matmul_reference(&identity);
        (0..n * k).map(|i| wt[(i % k) * n + i / k]).collect()
    }

    #[test]
    fn transcoded_blocks_hold_the_stored_values() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (n, k) = (37, 512);
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        // Within the f16 rounding of their sub-block scales.
        for (dtype, rel) in [
            (GgmlDType::Q4K, 1.0 / 1024.0),
            (GgmlDType::Q6K, 1.0 / 1024.0),
        ] {
            let q = QTensor::quantize(&w, dtype)?;
            let want: Vec<f32> = q.dequantize(&dev)?.flatten_all()?.to_vec1()?;
            let packed = PackedWeight::from_gguf(dtype, &q.data()?, n, k).expect("transcodes");
            let got = values_through_kernel(&packed);
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let (worst, at) = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .enumerate()
                .fold(
                    (0f32, 0),
                    |(m, mi), (i, d)| if d > m { (d, i) } else { (m, mi) },
                );
            // 1e-6: the kernel's own f32 rounding of d·(1/127)·(q·127).
            assert!(
                worst <= rel * scale + 1e-6 * scale,
                "{dtype:?} as {:?}: value {at} is {} where candle dequantizes {} (max |w| {scale})",
                packed.format(),
                got[at],
                want[at]
            );
        }
        Ok(())
    }
}
