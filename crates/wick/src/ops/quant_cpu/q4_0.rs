//! Q4_0 (`w = d·(q - 8)`, q in 0..16, 32 values per block, `d` f16) against 8-bit
//! activations: `Σ w·x = d·dx·Σ q·qx - 8·d·sx` per block, q kept unsigned for the byte
//! products ([`Packing::OFFSET`]).
//!
//! Group-block: `[d0..d7: f16][4 × 32 bytes of nibbles as Q4_1's]` (144 bytes, as few as
//! stored: 4.5 bits per weight).

use super::{Packing, ROWS};

pub struct Q4_0;

impl Packing for Q4_0 {
    const STORED_BLOCK: usize = 18;
    const GROUP_BLOCK: usize = 16 + ROWS * 16;
    const HAS_MIN: bool = false;
    const OFFSET: i32 = 8;

    fn pack_values(stored: &[u8], group_block: &mut [u8], r: usize) {
        super::q4_1::pack_nibbles(&stored[2..18], &mut group_block[16..], r);
    }

    fn value(group_block: &[u8], r: usize, j: usize) -> i32 {
        super::q4_1::nibble(&group_block[16..], r, j) as i32
    }
}

super::kernels_for!(Q4_0, |blk, u| {
    let [lo, hi] = super::q4_1::nibbles(blk.add(16 + 32 * u));
    [(lo, None), (hi, None)]
});
