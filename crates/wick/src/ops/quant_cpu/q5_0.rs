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
        group_block[16 + 4 * r..][..4].copy_from_slice(&stored[2..6]);
        for u in 0..4 {
            group_block[QS + 32 * u + 4 * r..][..4].copy_from_slice(&stored[6 + 4 * u..][..4]);
        }
    }

    fn value(group_block: &[u8], r: usize, j: usize) -> i32 {
        let q = &group_block[16 + 4 * r..];
        let qh = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
        let byte = group_block[QS + 32 * (j % 16 / 4) + 4 * r + j % 4];
        let nibble = if j < 16 { byte & 0xf } else { byte >> 4 };
        (nibble as u32 | ((qh >> j) & 1) << 4) as i32
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
