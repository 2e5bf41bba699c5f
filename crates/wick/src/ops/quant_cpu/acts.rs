//! Activations quantized per 32-value block to 8-bit integers, the form wick's integer dot
//! products take: `x ≈ d·q` with q in -127..=127, plus `s = d·Σq` for weight types with a
//! block offset (`w = d·q + m` contributes `m·s`). Scales stay in f32: they are per call, and
//! rounding them to f16 as ggml's Q8_1 does would only add error.

pub const BLOCK: usize = 32;

/// `rows` rows of `blocks` blocks each.
#[derive(Debug, Default)]
pub struct QuantizedActs {
    pub qs: Vec<i8>,
    /// Per block: (d, d·Σq).
    pub scales: Vec<[f32; 2]>,
    pub rows: usize,
    pub blocks: usize,
}

impl QuantizedActs {
    pub fn row_qs(&self, row: usize) -> &[i8] {
        &self.qs[row * self.blocks * BLOCK..(row + 1) * self.blocks * BLOCK]
    }

    pub fn row_scales(&self, row: usize) -> &[[f32; 2]] {
        &self.scales[row * self.blocks..(row + 1) * self.blocks]
    }
}

/// Quantizes `x` (rows of `k` values, `k` a multiple of [`BLOCK`]).
pub fn quantize(x: &[f32], k: usize) -> QuantizedActs {
    debug_assert!(k.is_multiple_of(BLOCK) && x.len().is_multiple_of(k));
    let mut out = QuantizedActs {
        qs: vec![0; x.len()],
        scales: vec![[0.0; 2]; x.len() / BLOCK],
        rows: x.len() / k.max(1),
        blocks: k / BLOCK,
    };
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected.
        unsafe { quantize_avx2(x, &mut out) };
        return out;
    }
    quantize_into(x, &mut out);
    out
}

/// The specification: one block at a time, round half to even (as the SIMD conversion does).
pub fn quantize_reference(x: &[f32], k: usize) -> QuantizedActs {
    let mut out = QuantizedActs {
        qs: vec![0; x.len()],
        scales: vec![[0.0; 2]; x.len() / BLOCK],
        rows: x.len() / k.max(1),
        blocks: k / BLOCK,
    };
    quantize_into(x, &mut out);
    out
}

fn quantize_into(x: &[f32], out: &mut QuantizedActs) {
    for ((block, qs), scale) in x
        .chunks_exact(BLOCK)
        .zip(out.qs.chunks_exact_mut(BLOCK))
        .zip(&mut out.scales)
    {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in qs.iter_mut().zip(block) {
            *q = (v * id).round_ties_even() as i8;
            sum += *q as i32;
        }
        *scale = [d, d * sum as f32];
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(x: &[f32], out: &mut QuantizedActs) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    for ((block, qs), scale) in x
        .chunks_exact(BLOCK)
        .zip(out.qs.chunks_exact_mut(BLOCK))
        .zip(&mut out.scales)
    {
        // SAFETY: each chunk holds 32 f32 (four 8-lane loads) and 32 i8 (one 32-byte store).
        unsafe {
            let p = block.as_ptr();
            let v = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(p.add(o)));
            let abs = v.map(|v| _mm256_andnot_ps(sign, v));
            let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_movehdup_ps(m));
            let d = _mm_cvtss_f32(m) / 127.0;
            let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
            // The default MXCSR rounding: to nearest, ties to even.
            let q = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, id)));
            let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let sum = _mm_add_epi32(
                _mm256_castsi256_si128(sum),
                _mm256_extracti128_si256(sum, 1),
            );
            let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b01_00_11_10));
            let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b10_11_00_01));
            // i32 → i16 → i8 packs work per 128-bit lane; the permute restores value order.
            let w01 = _mm256_packs_epi32(q[0], q[1]);
            let w23 = _mm256_packs_epi32(q[2], q[3]);
            let b = _mm256_packs_epi16(w01, w23);
            let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(qs.as_mut_ptr().cast(), b);
            *scale = [d, d * _mm_cvtsi128_si32(sum) as f32];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_quantization_is_the_reference_bit_for_bit() {
        let k = 96;
        let x: Vec<f32> = (0..5 * k)
            .map(|i| {
                ((i * 7919 % 1000) as f32 - 500.0) * 0.0137 * if i % 64 < 32 { 1.0 } else { 30.0 }
            })
            .chain([0.0; 96])
            .collect();
        let (fast, spec) = (quantize(&x, k), quantize_reference(&x, k));
        assert_eq!((fast.rows, fast.blocks), (6, 3));
        assert_eq!(fast.qs, spec.qs);
        for (i, (a, b)) in fast.scales.iter().zip(&spec.scales).enumerate() {
            assert!(
                (a[0] - b[0]).abs() <= 1e-7 * b[0].abs()
                    && (a[1] - b[1]).abs() <= 1e-6 * b[1].abs().max(1e-6),
                "block {i}: {a:?} vs {b:?}"
            );
        }
        // Dequantized, every value is within half a step of the input.
        for (i, (&v, &q)) in x.iter().zip(&spec.qs).enumerate() {
            let d = spec.scales[i / BLOCK][0];
            assert!(
                (v - d * q as f32).abs() <= 0.5 * d + 1e-6,
                "value {i}: {v} vs {}",
                d * q as f32
            );
        }
    }
}
