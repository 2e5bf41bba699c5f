//! Q5_1 (`w = d·q + m`, q in 0..32, 32 values per block, `d`/`m` f16) against 8-bit
//! activations: Q4_1's arithmetic ([`super::q4_1`]) with a fifth bit per value, so the
//! unsigned weights still fit the byte products (31·127·2 < i16::MAX).
//!
//! Packed once at load in groups of [`ROWS`] output rows, block by block:
//! `[d0..d3: f16][m0..m3: f16][qh0..qh3: u32][qs row 0: 16 bytes]…[qs row 3]` (96 bytes per
//! group-block). As stored by ggml: bit j of `qh` is the fifth bit of value j, byte j of `qs`
//! holds value j (low nibble) and value j + 16 (high).

use half::f16;

use super::acts::{QuantizedActs, BLOCK};
use super::{GroupKernel, ROWS};

const STORED_BLOCK: usize = 24;
pub const GROUP_BLOCK: usize = 16 + ROWS * 4 + ROWS * 16;
const QS: usize = 16 + ROWS * 4;

/// Repacks `n` rows of `k` values stored as GGUF Q5_1 blocks; a last partial group is padded
/// with zero rows (d = m = 0), whose outputs are never written.
pub fn pack(stored: &[u8], n: usize, k: usize) -> Vec<u8> {
    let nb = k / BLOCK;
    let mut out = vec![0u8; n.div_ceil(ROWS) * nb * GROUP_BLOCK];
    for row in 0..n {
        let (g, r) = (row / ROWS, row % ROWS);
        for b in 0..nb {
            let src = &stored[(row * nb + b) * STORED_BLOCK..][..STORED_BLOCK];
            let dst = &mut out[(g * nb + b) * GROUP_BLOCK..][..GROUP_BLOCK];
            dst[2 * r..2 * r + 2].copy_from_slice(&src[0..2]);
            dst[8 + 2 * r..8 + 2 * r + 2].copy_from_slice(&src[2..4]);
            dst[16 + 4 * r..20 + 4 * r].copy_from_slice(&src[4..8]);
            dst[QS + 16 * r..QS + 16 + 16 * r].copy_from_slice(&src[8..24]);
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
                let qh = u32::from_le_bytes(blk[16 + 4 * r..20 + 4 * r].try_into().unwrap());
                let qs = &blk[QS + 16 * r..QS + 16 + 16 * r];
                let value = |j: usize| {
                    let nibble = if j < 16 { qs[j] & 0xf } else { qs[j - 16] >> 4 };
                    (nibble | (((qh >> j) & 1) << 4) as u8) as i32
                };
                let dot: i32 = (0..BLOCK).map(|j| value(j) * xq[j] as i32).sum();
                *out += half(2 * r) * dx * dot as f32 + half(8 + 2 * r) * sx;
            }
        }
    }
    out
}

/// Row `r`'s 32 values of a group-block: Q4_1's nibbles with bit j of `qh` as 16 on value j.
///
/// # Safety
/// AVX2; `blk` points at a whole group-block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn values(blk: *const u8, r: usize) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: per the contract, the group-block's bytes are readable.
    let (qh, low) = unsafe {
        (
            blk.add(16 + 4 * r).cast::<i32>().read_unaligned(),
            super::q4_1::nibbles(blk.add(QS + 16 * r)),
        )
    };
    // Byte i of the vector takes byte i / 8 of qh, then keeps bit i % 8 of it.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_or_si256(low, _mm256_and_si256(set, _mm256_set1_epi8(0x10)))
}

#[cfg(target_arch = "x86_64")]
use super::q4_1::x86_min_kernel;

#[cfg(target_arch = "x86_64")]
x86_min_kernel!(
    group_avx2,
    "avx2,fma,f16c",
    GROUP_BLOCK,
    |blk, r| values(blk, r),
    |w, x| _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
);
#[cfg(target_arch = "x86_64")]
x86_min_kernel!(
    group_avxvnni,
    "avx2,fma,f16c,avxvnni",
    GROUP_BLOCK,
    |blk, r| values(blk, r),
    |w, x| _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), w, x)
);
