//! Q5_1 (`w = d·q + m`, q in 0..32, 32 values per block, `d`/`m` f16) against 8-bit
//! activations: Q4_1's arithmetic ([`super::q4_1`]) with a fifth bit per value; the unsigned
//! weights still fit the byte products (31·127·2 < i16::MAX).
//!
//! Group-block: `[d0..d7: f16][m0..m7: f16][qh0..qh7: u32][4 × 32 bytes of nibbles as Q4_1's]`
//! (192 bytes). As ggml stores it, bit j of row r's `qh` is the fifth bit of its value j.

use super::{Packing, ROWS};

pub struct Q5_1;

const QS: usize = 32 + ROWS * 4;

impl Packing for Q5_1 {
    const STORED_BLOCK: usize = 24;
    const GROUP_BLOCK: usize = QS + ROWS * 16;
    const HAS_MIN: bool = true;

    fn pack_values(stored: &[u8], group_block: &mut [u8], r: usize) {
        pack_five_bits(&stored[4..24], &mut group_block[32..], r);
    }

    fn value(group_block: &[u8], r: usize, j: usize) -> i32 {
        five_bit_value(&group_block[32..], r, j)
    }
}

/// Writes row `r`'s stored `qh` (4 bytes) and 16 nibble bytes into `[qh of 8 rows][4 × 32
/// nibble bytes]` at `out`.
pub(super) fn pack_five_bits(stored: &[u8], out: &mut [u8], r: usize) {
    out[4 * r..][..4].copy_from_slice(&stored[..4]);
    super::q4_1::pack_nibbles(&stored[4..20], &mut out[ROWS * 4..], r);
}

/// Value `j` of row `r` in a `[qh of 8 rows][nibbles]` run as [`pack_five_bits`] writes it.
pub(super) fn five_bit_value(packed: &[u8], r: usize, j: usize) -> i32 {
    let q = &packed[4 * r..];
    let qh = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
    let nibble = super::q4_1::nibble(&packed[ROWS * 4..], r, j);
    (nibble as u32 | ((qh >> j) & 1) << 4) as i32
}

/// 16 where value 4t + i of lane r (byte i of the lane) has its fifth bit set in `qh`.
///
/// # Safety
/// AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn fifth_bits(
    qh: std::arch::x86_64::__m256i,
    t: usize,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // Bits 4t..4t+4 of each lane are in its byte t / 2: copy that byte to the lane's 4 bytes
    // (the shuffle indexes within each 128-bit half, 4 lanes per half)...
    let lane_starts = _mm256_setr_epi8(
        0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12, 0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12,
        12, 12, 12,
    );
    let spread = _mm256_shuffle_epi8(
        qh,
        _mm256_add_epi8(lane_starts, _mm256_set1_epi8((t / 2) as i8)),
    );
    // ...then keep bit i of the low or high nibble in byte i.
    let bit = _mm256_set1_epi32(if t.is_multiple_of(2) {
        0x0804_0201
    } else {
        0x8040_2010u32 as i32
    });
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

super::kernels_for!(Q5_1, |blk, u| {
    let qh = _mm256_loadu_si256(blk.add(32).cast());
    let [lo, hi] = super::q4_1::nibbles(blk.add(QS + 32 * u));
    [
        (_mm256_or_si256(lo, fifth_bits(qh, u)), None),
        (_mm256_or_si256(hi, fifth_bits(qh, u + 4)), None),
    ]
});
