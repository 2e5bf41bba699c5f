//! Q8_0 (`w = d·q`, q in -127..=127, 32 values per block, `d` f16) against 8-bit activations:
//! `Σ w·x = d·dx·Σ q·qx` per block.
//!
//! Packed in groups of [`ROWS`] output rows, block by block:
//! `[d0..d3: f16][qs row 0: 32 bytes]…[qs row 3]` (136 bytes per group-block).

use half::f16;

use super::acts::{QuantizedActs, BLOCK};
use super::{GroupKernel, ROWS};

const STORED_BLOCK: usize = 34;
pub const GROUP_BLOCK: usize = 2 * ROWS + ROWS * BLOCK;

/// Repacks `n` rows of `k` values stored as GGUF Q8_0 blocks; a last partial group is padded
/// with zero rows.
pub fn pack(stored: &[u8], n: usize, k: usize) -> Vec<u8> {
    let nb = k / BLOCK;
    let mut out = vec![0u8; n.div_ceil(ROWS) * nb * GROUP_BLOCK];
    for row in 0..n {
        let (g, r) = (row / ROWS, row % ROWS);
        for b in 0..nb {
            let src = &stored[(row * nb + b) * STORED_BLOCK..][..STORED_BLOCK];
            let dst = &mut out[(g * nb + b) * GROUP_BLOCK..][..GROUP_BLOCK];
            dst[2 * r..2 * r + 2].copy_from_slice(&src[0..2]);
            dst[2 * ROWS + BLOCK * r..][..BLOCK].copy_from_slice(&src[2..]);
        }
    }
    out
}

/// The best kernel this CPU runs.
pub fn kernel<const C: usize>() -> GroupKernel<C> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avxvnni")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return group_avxvnni::<C>;
        }
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return group_avx2::<C>;
        }
    }
    group_portable::<C>
}

/// The specification, on the packed group.
///
/// # Safety
/// Always safe; `unsafe` only to share [`GroupKernel`]'s type.
pub unsafe fn group_portable<const C: usize>(
    group: &[u8],
    acts: &QuantizedActs,
    row0: usize,
) -> [[f32; ROWS]; C] {
    let mut out = [[0f32; ROWS]; C];
    for (b, blk) in group.chunks_exact(GROUP_BLOCK).enumerate() {
        for (c, out) in out.iter_mut().enumerate() {
            let xq = &acts.row_qs(row0 + c)[b * BLOCK..][..BLOCK];
            let dx = acts.row_scales(row0 + c)[b][0];
            for (r, out) in out.iter_mut().enumerate() {
                let d = f16::from_le_bytes([blk[2 * r], blk[2 * r + 1]]).to_f32();
                let qs = &blk[2 * ROWS + BLOCK * r..][..BLOCK];
                let dot: i32 = qs
                    .iter()
                    .zip(xq)
                    .map(|(&w, &x)| w as i8 as i32 * x as i32)
                    .sum();
                *out += d * dx * dot as f32;
            }
        }
    }
    out
}

/// x86 kernels. Both instruction sets multiply unsigned by signed bytes, so the weight's sign
/// moves onto the activation: `|w|·(sign(w)·x)`, exact since both are within ±127.
#[cfg(target_arch = "x86_64")]
macro_rules! x86_group_kernel {
    ($name:ident, $features:literal, |$w:ident, $x:ident| $dot:expr) => {
        /// # Safety
        /// The CPU must have the features named in `target_feature`; `group` holds whole
        /// group-blocks and `acts` rows `row0..row0 + C` with as many blocks.
        #[target_feature(enable = $features)]
        pub unsafe fn $name<const C: usize>(
            group: &[u8],
            acts: &QuantizedActs,
            row0: usize,
        ) -> [[f32; ROWS]; C] {
            use std::arch::x86_64::*;
            let nb = group.len() / GROUP_BLOCK;
            debug_assert!(acts.blocks == nb && row0 + C <= acts.rows);
            let mut acc = [[_mm256_setzero_ps(); ROWS]; C];
            let xs: [*const i8; C] = std::array::from_fn(|c| acts.row_qs(row0 + c).as_ptr());
            let scales: [*const [f32; 2]; C] =
                std::array::from_fn(|c| acts.row_scales(row0 + c).as_ptr());
            // SAFETY: b < nb bounds every read: GROUP_BLOCK bytes of `group` per block, 32
            // activation values and one scale pair per block of each row.
            unsafe {
                for b in 0..nb {
                    let blk = group.as_ptr().add(b * GROUP_BLOCK);
                    let mut d = [0f32; 4];
                    _mm_storeu_ps(d.as_mut_ptr(), _mm_cvtph_ps(_mm_loadl_epi64(blk.cast())));
                    let w: [__m256i; ROWS] = std::array::from_fn(|r| {
                        _mm256_loadu_si256(blk.add(2 * ROWS + BLOCK * r).cast())
                    });
                    let wabs = w.map(|w| _mm256_sign_epi8(w, w));
                    for c in 0..C {
                        let x = _mm256_loadu_si256(xs[c].add(b * BLOCK).cast());
                        let dx = (*scales[c].add(b))[0];
                        for r in 0..ROWS {
                            let $w = wabs[r];
                            let $x = _mm256_sign_epi8(x, w[r]);
                            let dot = $dot;
                            acc[c][r] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(dot),
                                _mm256_set1_ps(d[r] * dx),
                                acc[c][r],
                            );
                        }
                    }
                }
                let mut out = [[0f32; ROWS]; C];
                for c in 0..C {
                    for r in 0..ROWS {
                        let mut lanes = [0f32; 8];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[c][r]);
                        out[c][r] = lanes.iter().sum::<f32>();
                    }
                }
                out
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
x86_group_kernel!(group_avx2, "avx2,fma,f16c", |w, x| _mm256_madd_epi16(
    _mm256_maddubs_epi16(w, x),
    _mm256_set1_epi16(1)
));
#[cfg(target_arch = "x86_64")]
x86_group_kernel!(group_avxvnni, "avx2,fma,f16c,avxvnni", |w, x| {
    _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), w, x)
});
