//! GGUF tensor types candle 0.11.1 does not have: IQ4_NL and IQ4_XS (llama.cpp's 4-bit
//! non-linear types), read from their GGML block layouts.
//!
//! Both store 4-bit indices into one fixed table of 16 signed levels, times a scale:
//! - IQ4_NL, blocks of 32 values in 18 bytes: `d: f16`, then 16 bytes of nibbles; byte `j` holds
//!   value `j` in its low nibble and value `j + 16` in its high one. Value = `d * TABLE[nibble]`.
//! - IQ4_XS, super-blocks of 256 values in 136 bytes: `d: f16`, `scales_h: u16`, `scales_l:
//!   [u8; 4]`, then 8 sub-blocks of 32 values laid out as an IQ4_NL block's 16 nibble bytes.
//!   Sub-block `i` has a 6-bit scale `ls` (low 4 bits: nibble `i % 2` of `scales_l[i / 2]`; high
//!   2 bits: bits `2i, 2i+1` of `scales_h`), and its values are `d * (ls - 32) * TABLE[nibble]`.
//!
//! For matmuls these are transcoded once, at load, to Q8_0 (f16 scale + 32 i8 per block, a type
//! with fast kernels on every candle backend): the table's levels are integers in [-127, 113], so
//! an IQ4_NL block becomes a Q8_0 block with the same scale and the levels as its i8 values,
//! exactly. An IQ4_XS sub-block's scale `d * (ls - 32)` is rounded to f16 on the way, a relative
//! error of at most 2^-11 on the block (ggml's own IQ4_XS kernels are exact there). The cost is
//! memory: 8.5 bits per weight instead of 4.5 (IQ4_NL) or 4.25 (IQ4_XS).

use candle_core::quantized::GgmlDType;
use half::f16;

/// ggml's type ids for the two.
pub const IQ4_NL_ID: u32 = 20;
pub const IQ4_XS_ID: u32 = 23;

/// The 16 levels of IQ4_NL and IQ4_XS (ggml's `kvalues_iq4nl`).
const LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

const NL_BLOCK: usize = 18;
const XS_BLOCK: usize = 136;
const Q8_0_BLOCK: usize = 34;

/// The type a tensor is stored in: one candle knows, or one read here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredType {
    Ggml(GgmlDType),
    Iq4Nl,
    Iq4Xs,
}

impl StoredType {
    /// The type for a ggml id candle does not know, if it is one of ours.
    pub fn extra(type_id: u32) -> Option<Self> {
        match type_id {
            IQ4_NL_ID => Some(Self::Iq4Nl),
            IQ4_XS_ID => Some(Self::Iq4Xs),
            _ => None,
        }
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        match self {
            Self::Ggml(t) => t.block_size(),
            Self::Iq4Nl => 32,
            Self::Iq4Xs => 256,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            Self::Ggml(t) => t.type_size(),
            Self::Iq4Nl => NL_BLOCK,
            Self::Iq4Xs => XS_BLOCK,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            Self::Ggml(GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
        )
    }

    /// ggml's name for the type (`Q4_K`, `IQ4_XS`).
    pub fn name(self) -> String {
        match self {
            Self::Ggml(t) => {
                let debug = format!("{t:?}");
                // candle spells the K-quants `Q4K`; ggml spells them `Q4_K`.
                match debug.strip_suffix('K') {
                    Some(head) if head.len() == 2 => format!("{head}_K"),
                    _ => debug,
                }
            }
            Self::Iq4Nl => "IQ4_NL".into(),
            Self::Iq4Xs => "IQ4_XS".into(),
        }
    }
}

/// The 6-bit scale of sub-block `i` of an IQ4_XS super-block, minus 32.
fn xs_scale(block: &[u8], i: usize) -> i32 {
    let scales_h = u16::from_le_bytes([block[2], block[3]]);
    let low = (block[4 + i / 2] >> (4 * (i % 2))) & 0xf;
    let high = ((scales_h >> (2 * i)) & 3) as u8;
    i32::from(low | (high << 4)) - 32
}

/// 32 levels from 16 nibble bytes, in ggml's order (low nibbles first).
fn levels(nibbles: &[u8]) -> impl Iterator<Item = i8> + '_ {
    let low = nibbles.iter().map(|b| LEVELS[(b & 0xf) as usize]);
    let high = nibbles.iter().map(|b| LEVELS[(b >> 4) as usize]);
    low.chain(high)
}

fn f16_at(bytes: &[u8]) -> f32 {
    f16::from_le_bytes([bytes[0], bytes[1]]).to_f32()
}

/// The f32 values of whole blocks of `ty` (`bytes.len()` a multiple of its block bytes), as
/// ggml's `dequantize_row_iq4_nl` / `dequantize_row_iq4_xs` compute them; None for candle's types.
pub fn dequantize(ty: StoredType, bytes: &[u8]) -> Option<Vec<f32>> {
    let mut out = Vec::with_capacity(bytes.len() / ty.type_size() * ty.block_size());
    match ty {
        StoredType::Ggml(_) => return None,
        StoredType::Iq4Nl => {
            for block in bytes.chunks_exact(NL_BLOCK) {
                let d = f16_at(block);
                out.extend(levels(&block[2..]).map(|l| d * f32::from(l)));
            }
        }
        StoredType::Iq4Xs => {
            for block in bytes.chunks_exact(XS_BLOCK) {
                let d = f16_at(block);
                for (i, nibbles) in block[8..].chunks_exact(16).enumerate() {
                    let dl = d * xs_scale(block, i) as f32;
                    out.extend(levels(nibbles).map(|l| dl * f32::from(l)));
                }
            }
        }
    }
    Some(out)
}

/// The same values as Q8_0 blocks (see the module comment for the error); None for candle's
/// types.
pub fn to_q8_0(ty: StoredType, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() / ty.type_size() * ty.block_size() / 32 * 34);
    let mut push = |d: [u8; 2], nibbles: &[u8]| {
        out.extend_from_slice(&d);
        out.extend(levels(nibbles).map(|l| l as u8));
    };
    match ty {
        StoredType::Ggml(_) => return None,
        StoredType::Iq4Nl => {
            for block in bytes.chunks_exact(NL_BLOCK) {
                push([block[0], block[1]], &block[2..]);
            }
        }
        StoredType::Iq4Xs => {
            for block in bytes.chunks_exact(XS_BLOCK) {
                let d = f16_at(block);
                for (i, nibbles) in block[8..].chunks_exact(16).enumerate() {
                    let dl = f16::from_f32(d * xs_scale(block, i) as f32);
                    push(dl.to_le_bytes(), nibbles);
                }
            }
        }
    }
    debug_assert_eq!(out.len() % Q8_0_BLOCK, 0);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One IQ4_XS super-block with every nibble and distinct sub-block scales.
    fn xs_block() -> Vec<u8> {
        let mut b = vec![0u8; XS_BLOCK];
        b[..2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
        // Sub-block scales 0, 9, 18, ... 63 (ls), i.e. -32 .. 31 after the offset.
        let ls: Vec<u8> = (0..8).map(|i| (i * 9) as u8).collect();
        let mut h = 0u16;
        for (i, &s) in ls.iter().enumerate() {
            b[4 + i / 2] |= (s & 0xf) << (4 * (i % 2));
            h |= u16::from(s >> 4) << (2 * i);
        }
        b[2..4].copy_from_slice(&h.to_le_bytes());
        for (i, x) in b[8..].iter_mut().enumerate() {
            *x = (i * 37 % 256) as u8;
        }
        b
    }

    #[test]
    fn iq4_xs_sub_block_scales_and_nibble_order() {
        let b = xs_block();
        let v = dequantize(StoredType::Iq4Xs, &b).expect("ours");
        assert_eq!(v.len(), 256);
        let d = f16::from_f32(0.01).to_f32();
        for i in 0..8 {
            let dl = d * ((i * 9) as f32 - 32.0);
            let byte = b[8 + 16 * i + 3];
            assert_eq!(v[32 * i + 3], dl * f32::from(LEVELS[(byte & 0xf) as usize]));
            assert_eq!(v[32 * i + 19], dl * f32::from(LEVELS[(byte >> 4) as usize]));
        }
    }

    #[test]
    fn q8_0_transcoding_keeps_the_values() {
        let mut nl = vec![0u8; 2 * NL_BLOCK];
        nl[..2].copy_from_slice(&f16::from_f32(-0.37).to_le_bytes());
        nl[NL_BLOCK..NL_BLOCK + 2].copy_from_slice(&f16::from_f32(1.5e-3).to_le_bytes());
        for (i, x) in nl.iter_mut().enumerate() {
            if i % NL_BLOCK >= 2 {
                *x = (i * 53 % 256) as u8;
            }
        }
        for (ty, bytes, tol) in [
            (StoredType::Iq4Nl, nl, 0.0),
            (StoredType::Iq4Xs, xs_block(), 2f32.powi(-11)),
        ] {
            let exact = dequantize(ty, &bytes).expect("ours");
            let q8 = to_q8_0(ty, &bytes).expect("ours");
            assert_eq!(q8.len(), exact.len() / 32 * Q8_0_BLOCK);
            let got: Vec<f32> = q8
                .chunks_exact(Q8_0_BLOCK)
                .flat_map(|b| {
                    let d = f16_at(b);
                    b[2..].iter().map(move |&q| d * f32::from(q as i8))
                })
                .collect();
            for (i, (g, e)) in got.iter().zip(&exact).enumerate() {
                assert!(
                    (g - e).abs() <= tol * e.abs(),
                    "{ty:?} value {i}: {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn names_follow_ggml() {
        assert_eq!(StoredType::Ggml(GgmlDType::Q4K).name(), "Q4_K");
        assert_eq!(StoredType::Ggml(GgmlDType::Q8_0).name(), "Q8_0");
        assert_eq!(StoredType::Ggml(GgmlDType::BF16).name(), "BF16");
        assert_eq!(StoredType::Iq4Xs.name(), "IQ4_XS");
    }
}
