//! 8-bit values with a scale per 16 (`w = d_h·q`, q in -128..=127, h the half of the
//! 32-value block): the layout Q6_K transcodes to (its sub-blocks are 16 values, its 6-bit
//! values fit a byte). Against 8-bit activations: `Σ w·x = dx·(d_0·Σ_0 q·qx + d_1·Σ_1 q·qx)`.
//!
//! Stored block (wick's own, 36 bytes): `[d_0: f16][d_1: f16][32 × i8]`. Group-block:
//! `[d_0 of rows 0..8: f16][d_1 of rows 0..8: f16][vector t = 0..8: 8 lanes × 4 bytes]`
//! (288 bytes), the values as in Q8_0's group-block, the sign moved onto the activations the
//! same way (|q| ≤ 32 here, so `|w|·(sign(w)·x)` stays exact).

use super::{Packing, ROWS};

pub struct Q8Halves;

/// Bytes of one stored block.
pub const STORED_BLOCK: usize = 36;

impl Packing for Q8Halves {
    const STORED_BLOCK: usize = STORED_BLOCK;
    const GROUP_BLOCK: usize = 32 + ROWS * 32;
    const HAS_MIN: bool = false;
    const HALF_SCALES: bool = true;

    fn pack_values(stored: &[u8], group_block: &mut [u8], r: usize) {
        super::q8_0::pack_bytes(&stored[4..36], &mut group_block[32..], r);
    }

    fn value(group_block: &[u8], r: usize, j: usize) -> i32 {
        super::q8_0::byte_value(&group_block[32..], r, j)
    }
}

super::kernels_for!(Q8Halves, |blk, u| super::q8_0::signed_bytes(blk.add(32), u));
