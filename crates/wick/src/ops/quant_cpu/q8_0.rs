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
        for t in 0..8 {
            group_block[32 + 32 * t + 4 * r..][..4].copy_from_slice(&stored[2 + 4 * t..][..4]);
        }
    }

    fn value(group_block: &[u8], r: usize, j: usize) -> i32 {
        group_block[32 + 32 * (j / 4) + 4 * r + j % 4] as i8 as i32
    }
}

super::kernels_for!(Q8_0, |blk, u| {
    let [lo, hi] = [u, u + 4].map(|t| _mm256_loadu_si256(blk.add(32 + 32 * t).cast()));
    [
        (_mm256_sign_epi8(lo, lo), Some(lo)),
        (_mm256_sign_epi8(hi, hi), Some(hi)),
    ]
});
