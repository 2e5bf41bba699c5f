//! Q5_0 (`w = d·(q - 16)`, q in 0..32, 32 values per block, `d` f16) against 8-bit
//! activations: Q4_0's arithmetic ([`super::q4_0`]) with Q5_1's fifth bit per value
//! ([`super::q5_1`]).
//!
//! Group-block: `[d0..d7: f16][qh0..qh7: u32][4 × 32 bytes of nibbles as Q4_1's]` (176 bytes).

use super::{Packing, ROWS};

pub struct Q5_0;

const QS: usize = 16 + ROWS * 4;

impl Packing for Q5_0 {
    const STORED_BLOCK: usize = 22;
    const GROUP_BLOCK: usize = QS + ROWS * 16;
    const HAS_MIN: bool = false;
    const OFFSET: i32 = 16;

    fn pack_values(stored: &[u8], group_block: &mut [u8], r: usize) {
        super::q5_1::pack_five_bits(&stored[2..22], &mut group_block[16..], r);
    }

    fn value(group_block: &[u8], r: usize, j: usize) -> i32 {
        super::q5_1::five_bit_value(&group_block[16..], r, j)
    }
}

super::kernels_for!(Q5_0, |blk, u| {
    let qh = _mm256_loadu_si256(blk.add(16).cast());
    let [lo, hi] = super::q4_1::nibbles(blk.add(QS + 32 * u));
    [
        (_mm256_or_si256(lo, super::q5_1::fifth_bits(qh, u)), None),
        (
            _mm256_or_si256(hi, super::q5_1::fifth_bits(qh, u + 4)),
            None,
        ),
    ]
});
