//! Q8_0 (`w = d·q`, q in -127..=127, 32 values per block, `d` f16) against 8-bit activations:
//! `Σ w·x = d·dx·Σ q·qx` per block.
//!
//! Group-block: `[d0..d7: f16][16 unused bytes][vector t = 0..8: 8 lanes × 4 bytes]` (272
//! bytes), lane r of vector t holding values 4t..4t+4 of row r. Both instruction sets
//! multiply unsigned by signed bytes, so the weight's sign moves onto the activation:
//! `|w|·(sign(w)·x)`, exact since both are within ±127.

use super::{Packing, ROWS};

pub struct Q8_0;

impl Packing for Q8_0 {
    const STORED_BLOCK: usize = 34;
    const GROUP_BLOCK: usize = 32 + ROWS * 32;
    const HAS_MIN: bool = false;

    fn pack_values(stored: &[u8], group_block: &mut [u8], r: usize) {
        pack_bytes(&stored[2..34], &mut group_block[32..], r);
    }

    fn value(group_block: &[u8], r: usize, j: usize) -> i32 {
        byte_value(&group_block[32..], r, j)
    }
}

/// Writes row `r`'s 32 signed bytes into the 8 vectors at `qs` (lane r of each).
pub(super) fn pack_bytes(stored_qs: &[u8], qs: &mut [u8], r: usize) {
    for t in 0..8 {
        qs[32 * t + 4 * r..][..4].copy_from_slice(&stored_qs[4 * t..][..4]);
    }
}

/// Value `j` of row `r` in the 8 vectors at `qs`.
pub(super) fn byte_value(qs: &[u8], r: usize, j: usize) -> i32 {
    qs[32 * (j / 4) + 4 * r + j % 4] as i8 as i32
}

/// Vectors u and u + 4 of the signed bytes at `qs`: |q| and the signs to move onto x.
///
/// # Safety
/// AVX2; 256 bytes readable at `qs`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn signed_bytes(
    qs: *const u8,
    u: usize,
) -> [(
    std::arch::x86_64::__m256i,
    Option<std::arch::x86_64::__m256i>,
); 2] {
    use std::arch::x86_64::*;
    // SAFETY: per the contract.
    let [lo, hi] = [u, u + 4].map(|t| unsafe { _mm256_loadu_si256(qs.add(32 * t).cast()) });
    [
        (_mm256_sign_epi8(lo, lo), Some(lo)),
        (_mm256_sign_epi8(hi, hi), Some(hi)),
    ]
}

super::kernels_for!(Q8_0, |blk, u| signed_bytes(blk.add(32), u));
