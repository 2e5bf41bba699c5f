//! Q4_1 (`w = d·q + m`, q in 0..16, 32 values per block, `d`/`m` f16) against 8-bit
//! activations: `Σ w·x = d·dx·Σ q·qx + m·sx` per block, integers inside the block.
//!
//! Group-block: `[d0..d7: f16][m0..m7: f16][4 × 32 bytes]` (160 bytes). ggml stores byte j of
//! a block as value j (low nibble) and value j + 16 (high), so lane r of the u-th 32 bytes is
//! row r's stored bytes 4u..4u+4: its low nibbles are vector u (values 4u..4u+4), its high
//! nibbles vector u + 4.

use super::{Packing, ROWS};

pub struct Q4_1;

impl Packing for Q4_1 {
    const STORED_BLOCK: usize = 20;
    const GROUP_BLOCK: usize = 32 + ROWS * 16;
    const HAS_MIN: bool = true;

    fn pack_values(stored: &[u8], group_block: &mut [u8], r: usize) {
        pack_nibbles(&stored[4..20], &mut group_block[32..], r);
    }

    fn value(group_block: &[u8], r: usize, j: usize) -> i32 {
        nibble(&group_block[32..], r, j) as i32
    }
}

/// Writes row `r`'s 16 stored nibble bytes into the 4 × 32 bytes at `qs` (lane r of each).
pub(super) fn pack_nibbles(stored_qs: &[u8], qs: &mut [u8], r: usize) {
    for u in 0..4 {
        qs[32 * u + 4 * r..][..4].copy_from_slice(&stored_qs[4 * u..][..4]);
    }
}

/// Value `j` of row `r` in the 4 × 32 nibble bytes at `qs`.
pub(super) fn nibble(qs: &[u8], r: usize, j: usize) -> u8 {
    let byte = qs[32 * (j % 16 / 4) + 4 * r + j % 4];
    if j < 16 {
        byte & 0xf
    } else {
        byte >> 4
    }
}

/// Vectors u and u + 4 of 32 packed nibble bytes at `qs`.
///
/// # Safety
/// AVX2; 32 bytes readable at `qs`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn nibbles(qs: *const u8) -> [std::arch::x86_64::__m256i; 2] {
    use std::arch::x86_64::*;
    // SAFETY: per the contract.
    let raw = unsafe { _mm256_loadu_si256(qs.cast()) };
    let mask = _mm256_set1_epi8(0x0f);
    [
        _mm256_and_si256(raw, mask),
        _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask),
    ]
}

super::kernels_for!(Q4_1, |blk, u| {
    let [lo, hi] = nibbles(blk.add(32 + 32 * u));
    [(lo, None), (hi, None)]
});
