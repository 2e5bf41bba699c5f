//! Q4_1 (`w = d·q + m`, q in 0..16, 32 values per block, `d`/`m` f16) against 8-bit
//! activations: `Σ w·x = d·dx·Σ q·qx + m·sx` per block, integers inside the block.
//!
//! Packed once at load in groups of [`ROWS`] output rows, block by block, so one pass over the
//! activations feeds four rows and one F16C conversion yields all their scales:
//! `[d0..d3: f16][m0..m3: f16][qs row 0: 16 bytes]…[qs row 3]` (80 bytes per group-block).
//! ggml's nibble order is kept: byte j holds value j (low nibble) and value j + 16 (high).

use half::f16;

use super::acts::{QuantizedActs, BLOCK};
use super::{GroupKernel, ROWS};

const STORED_BLOCK: usize = 20;
pub const GROUP_BLOCK: usize = 16 + ROWS * 16;

/// Repacks `n` rows of `k` values stored as GGUF Q4_1 blocks; a last partial group is padded
/// with zero rows (d = m = 0), whose outputs are never written.
pub fn pack(stored: &[u8], n: usize, k: usize) -> Vec<u8> {
    let nb = k / BLOCK;
    let groups = n.div_ceil(ROWS);
    let mut out = vec![0u8; groups * nb * GROUP_BLOCK];
    for row in 0..n {
        let (g, r) = (row / ROWS, row % ROWS);
        for b in 0..nb {
            let src = &stored[(row * nb + b) * STORED_BLOCK..][..STORED_BLOCK];
            let dst = &mut out[(g * nb + b) * GROUP_BLOCK..][..GROUP_BLOCK];
            dst[2 * r..2 * r + 2].copy_from_slice(&src[0..2]);
            dst[8 + 2 * r..8 + 2 * r + 2].copy_from_slice(&src[2..4]);
            dst[16 + 16 * r..32 + 16 * r].copy_from_slice(&src[4..20]);
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
        let half = |o: usize| f16::from_le_bytes([blk[o], blk[o + 1]]).to_f32();
        for (c, out) in out.iter_mut().enumerate() {
            let xq = &acts.row_qs(row0 + c)[b * BLOCK..][..BLOCK];
            let [dx, sx] = acts.row_scales(row0 + c)[b];
            for (r, out) in out.iter_mut().enumerate() {
                let qs = &blk[16 + 16 * r..32 + 16 * r];
                let dot: i32 = (0..16)
                    .map(|j| {
                        (qs[j] & 0xf) as i32 * xq[j] as i32
                            + (qs[j] >> 4) as i32 * xq[j + 16] as i32
                    })
                    .sum();
                *out += half(2 * r) * dx * dot as f32 + half(8 + 2 * r) * sx;
            }
        }
    }
    out
}

/// x86 kernels for blocks with a minimum (Q4_1 here, Q5_1 in [`super::q5_1`]): the loop of
/// `group_portable`, with `$load` giving row `r`'s 32 unsigned values of the block at `blk` and
/// the 32-value integer dot product as AVX2 (`maddubs` + `madd`) or AVX-VNNI (`dpbusd`). The
/// group-block starts `[d0..d3: f16][m0..m3: f16]`.
#[cfg(target_arch = "x86_64")]
macro_rules! x86_min_kernel {
    ($name:ident, $features:literal, $group_block:expr, |$blk:ident, $r:ident| $load:expr,
     |$w:ident, $x:ident| $dot:expr) => {
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
            const GB: usize = $group_block;
            let nb = group.len() / GB;
            debug_assert!(acts.blocks == nb && row0 + C <= acts.rows);
            let mut acc = [[_mm256_setzero_ps(); ROWS]; C];
            let mut mins = [_mm_setzero_ps(); C];
            let xs: [*const i8; C] = std::array::from_fn(|c| acts.row_qs(row0 + c).as_ptr());
            let scales: [*const [f32; 2]; C] =
                std::array::from_fn(|c| acts.row_scales(row0 + c).as_ptr());
            // SAFETY: b < nb bounds every read: GB bytes of `group` per block, 32 activation
            // values and one scale pair per block of each row.
            unsafe {
                for b in 0..nb {
                    let $blk = group.as_ptr().add(b * GB);
                    let dm = _mm256_cvtph_ps(_mm_loadu_si128($blk.cast()));
                    let mut d = [0f32; 8];
                    _mm256_storeu_ps(d.as_mut_ptr(), dm);
                    let m = _mm256_extractf128_ps(dm, 1);
                    let w: [__m256i; ROWS] = std::array::from_fn(|$r| $load);
                    for c in 0..C {
                        let $x = _mm256_loadu_si256(xs[c].add(b * BLOCK).cast());
                        let [dx, sx] = *scales[c].add(b);
                        for r in 0..ROWS {
                            let $w = w[r];
                            let dot = $dot;
                            acc[c][r] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(dot),
                                _mm256_set1_ps(d[r] * dx),
                                acc[c][r],
                            );
                        }
                        mins[c] = _mm_fmadd_ps(m, _mm_set1_ps(sx), mins[c]);
                    }
                }
                let mut out = [[0f32; ROWS]; C];
                for c in 0..C {
                    let mut m = [0f32; 4];
                    _mm_storeu_ps(m.as_mut_ptr(), mins[c]);
                    for r in 0..ROWS {
                        let mut lanes = [0f32; 8];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[c][r]);
                        out[c][r] = lanes.iter().sum::<f32>() + m[r];
                    }
                }
                out
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86_min_kernel;

/// 32 values from 16 bytes of ggml nibbles: the low nibbles are values 0..16, the high 16..32.
///
/// # Safety
/// AVX2; 16 bytes readable at `qs`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn nibbles(qs: *const u8) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: per the contract, 16 readable bytes.
    let raw = unsafe { _mm_loadu_si128(qs.cast()) };
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw),
        _mm256_set1_epi8(0x0f),
    )
}

#[cfg(target_arch = "x86_64")]
x86_min_kernel!(
    group_avx2,
    "avx2,fma,f16c",
    GROUP_BLOCK,
    |blk, r| nibbles(blk.add(16 + 16 * r)),
    |w, x| _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
);
#[cfg(target_arch = "x86_64")]
x86_min_kernel!(
    group_avxvnni,
    "avx2,fma,f16c,avxvnni",
    GROUP_BLOCK,
    |blk, r| nibbles(blk.add(16 + 16 * r)),
    |w, x| _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), w, x)
);
