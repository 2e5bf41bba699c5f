//! wick's own CPU kernels for `x·Wᵀ` against GGUF block-quantized weights: activations
//! quantized per block to 8 bits ([`acts`]), integer dot products, weights repacked once at
//! load so that one pass over the activations feeds several output rows, the kernel picked at
//! run time by CPU feature (AVX-VNNI, AVX2+FMA+F16C, else portable Rust).
//!
//! The packed layout puts [`ROWS`] output rows side by side, one per 32-bit lane of a 256-bit
//! vector: a group-block (one 32-value block of each of the 8 rows) starts with the rows' 8
//! f16 scales `d` (and, for types with a block minimum, their 8 f16 minimums `m`), then the
//! values as 8 vectors, vector t holding values 4t..4t+4 of every row ([`Packing`] says how a
//! type stores them). One byte dot product of vector t with the activation's values 4t..4t+4,
//! broadcast to every lane, gives each row's partial sum in its own lane: no horizontal sums,
//! and the scales apply to all 8 rows in one multiply.
//!
//! Work is split over rayon's pool by groups of output rows; each group runs every activation
//! row while its weights are in L1, [`PREFILL_ROWS`] rows per pass in prefill.

pub mod acts;
pub mod q4_0;
pub mod q4_1;
pub mod q5_0;
pub mod q5_1;
pub mod q8_0;
pub mod q8_halves;
pub mod transcode;

use candle_core::quantized::GgmlDType;
use half::f16;
use rayon::prelude::*;

use acts::{QuantizedActs, BLOCK};

/// Output rows per packed group: one per 32-bit lane of a 256-bit vector.
pub const ROWS: usize = 8;

/// Activation rows per kernel pass in prefill: each weight vector loaded feeds this many.
pub const PREFILL_ROWS: usize = 4;

/// One group's dot products with `C` activation rows (`row0..row0 + C`), as `[c][r]`.
pub type GroupKernel<const C: usize> = unsafe fn(&[u8], &QuantizedActs, usize) -> [[f32; ROWS]; C];

/// How one block type is packed; the portable kernel ([`group_portable`]) is written once
/// against it, the SIMD kernels per type.
pub trait Packing {
    /// Bytes of one stored GGUF block.
    const STORED_BLOCK: usize;
    /// Bytes of one group-block: scales, then the values of [`ROWS`] rows.
    const GROUP_BLOCK: usize;
    /// Whether blocks are `d·q + m` (else `d·q`); `m` is stored as f16 at bytes 16..32.
    const HAS_MIN: bool;
    /// Whether values 16..32 of a block have their own scale (stored like `m`, at bytes
    /// 16..32; `d` then scales values 0..16 only).
    const HALF_SCALES: bool = false;
    /// Blocks of `d·(q - OFFSET)` (Q4_0, Q5_0) keep q unsigned for the byte products and
    /// subtract `OFFSET·d·Σx` per block; 0 for the other types.
    const OFFSET: i32 = 0;
    /// Writes row `r`'s values (not its scales) from a stored block into a group-block.
    fn pack_values(stored: &[u8], group_block: &mut [u8], r: usize);
    /// The integer q of value `j` of row `r` in a group-block.
    fn value(group_block: &[u8], r: usize, j: usize) -> i32;
}

/// Repacks `n` rows of `k` values stored as blocks of `P`; a last partial group is padded
/// with zero rows (d = m = 0), whose outputs are never written.
fn pack<P: Packing>(stored: &[u8], n: usize, k: usize) -> Vec<u8> {
    let nb = k / BLOCK;
    let mut out = vec![0u8; n.div_ceil(ROWS) * nb * P::GROUP_BLOCK];
    for row in 0..n {
        let (g, r) = (row / ROWS, row % ROWS);
        for b in 0..nb {
            let src = &stored[(row * nb + b) * P::STORED_BLOCK..][..P::STORED_BLOCK];
            let dst = &mut out[(g * nb + b) * P::GROUP_BLOCK..][..P::GROUP_BLOCK];
            dst[2 * r..2 * r + 2].copy_from_slice(&src[0..2]);
            if P::HAS_MIN || P::HALF_SCALES {
                dst[16 + 2 * r..18 + 2 * r].copy_from_slice(&src[2..4]);
            }
            P::pack_values(src, dst, r);
        }
    }
    out
}

/// The specification, on a packed group of any type.
///
/// # Safety
/// Always safe; `unsafe` only to share [`GroupKernel`]'s type.
pub unsafe fn group_portable<P: Packing, const C: usize>(
    group: &[u8],
    acts: &QuantizedActs,
    row0: usize,
) -> [[f32; ROWS]; C] {
    let mut out = [[0f32; ROWS]; C];
    for (b, blk) in group.chunks_exact(P::GROUP_BLOCK).enumerate() {
        let half = |o: usize| f16::from_le_bytes([blk[o], blk[o + 1]]).to_f32();
        for (c, out) in out.iter_mut().enumerate() {
            let xq = &acts.row_qs(row0 + c)[b * BLOCK..][..BLOCK];
            let [dx, sx] = acts.row_scales(row0 + c)[b];
            for (r, out) in out.iter_mut().enumerate() {
                let dot = |js: std::ops::Range<usize>| {
                    js.map(|j| P::value(blk, r, j) * xq[j] as i32).sum::<i32>() as f32
                };
                if P::HALF_SCALES {
                    *out += dx * (half(2 * r) * dot(0..16) + half(16 + 2 * r) * dot(16..BLOCK));
                } else {
                    *out += half(2 * r) * dx * dot(0..BLOCK);
                }
                if P::HAS_MIN {
                    *out += half(16 + 2 * r) * sx;
                }
                if P::OFFSET != 0 {
                    *out -= P::OFFSET as f32 * half(2 * r) * sx;
                }
            }
        }
    }
    out
}

/// x86 kernels on the packed layout. `$load(blk, u)` gives vectors u and u + 4 (u in 0..4) of
/// a group-block as unsigned bytes plus the signs to move onto the activations (or None);
/// `$dot(acc, w, x)` adds the lane-wise 4-byte dot products of unsigned `w` and signed `x`.
#[cfg(target_arch = "x86_64")]
macro_rules! x86_group_kernel {
    ($name:ident, $features:literal, $p:ty, |$blk:ident, $u:ident| $load:expr,
     |$acc:ident, $w:ident, $x:ident| $dot:expr) => {
        /// # Safety
        /// The CPU must have the features named in `target_feature`; `group` holds whole
        /// group-blocks and `acts` rows `row0..row0 + C` with as many blocks.
        #[target_feature(enable = $features)]
        pub unsafe fn $name<const C: usize>(
            group: &[u8],
            acts: &$crate::ops::quant_cpu::acts::QuantizedActs,
            row0: usize,
        ) -> [[f32; $crate::ops::quant_cpu::ROWS]; C] {
            use std::arch::x86_64::*;
            use $crate::ops::quant_cpu::{acts::BLOCK, Packing, ROWS};
            const GB: usize = <$p as Packing>::GROUP_BLOCK;
            let nb = group.len() / GB;
            debug_assert!(acts.blocks == nb && row0 + C <= acts.rows);
            let mut acc = [_mm256_setzero_ps(); C];
            let mut mins = [_mm256_setzero_ps(); C];
            let xs: [*const i8; C] = std::array::from_fn(|c| acts.row_qs(row0 + c).as_ptr());
            let scales: [*const [f32; 2]; C] =
                std::array::from_fn(|c| acts.row_scales(row0 + c).as_ptr());
            // SAFETY: b < nb bounds every read: GB bytes of `group` per block, 32 activation
            // values and one scale pair per block of each row.
            unsafe {
                for b in 0..nb {
                    let $blk: *const u8 = group.as_ptr().add(b * GB);
                    // Values 16..32 (vectors 4..8) sum apart only where they have their own scale.
                    let half_scales = <$p as Packing>::HALF_SCALES;
                    let mut dots = [_mm256_setzero_si256(); C];
                    let mut dots_hi = [_mm256_setzero_si256(); C];
                    for $u in 0..4 {
                        let pair: [(__m256i, Option<__m256i>); 2] = $load;
                        for (t, (w, sign)) in [($u, pair[0]), ($u + 4, pair[1])] {
                            let sums = if half_scales && t >= 4 {
                                &mut dots_hi
                            } else {
                                &mut dots
                            };
                            for c in 0..C {
                                let x = _mm256_set1_epi32(
                                    xs[c].add(b * BLOCK + 4 * t).cast::<i32>().read_unaligned(),
                                );
                                let $x = match sign {
                                    Some(s) => _mm256_sign_epi8(x, s),
                                    None => x,
                                };
                                let ($acc, $w) = (sums[c], w);
                                sums[c] = $dot;
                            }
                        }
                    }
                    let d = _mm256_cvtph_ps(_mm_loadu_si128($blk.cast()));
                    // The minimums, or the scales of values 16..32.
                    let m = match <$p as Packing>::HAS_MIN || half_scales {
                        true => _mm256_cvtph_ps(_mm_loadu_si128($blk.add(16).cast())),
                        false => _mm256_setzero_ps(),
                    };
                    for c in 0..C {
                        let [dx, sx] = *scales[c].add(b);
                        let dx = _mm256_set1_ps(dx);
                        acc[c] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(dots[c]),
                            _mm256_mul_ps(d, dx),
                            acc[c],
                        );
                        if half_scales {
                            acc[c] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(dots_hi[c]),
                                _mm256_mul_ps(m, dx),
                                acc[c],
                            );
                        }
                        if <$p as Packing>::HAS_MIN {
                            mins[c] = _mm256_fmadd_ps(m, _mm256_set1_ps(sx), mins[c]);
                        }
                        // Σ d·sx, times -OFFSET at the end.
                        if <$p as Packing>::OFFSET != 0 {
                            mins[c] = _mm256_fmadd_ps(d, _mm256_set1_ps(sx), mins[c]);
                        }
                    }
                }
                let minus_offset = _mm256_set1_ps(-(<$p as Packing>::OFFSET as f32));
                let mut out = [[0f32; ROWS]; C];
                for c in 0..C {
                    let total = match <$p as Packing>::OFFSET {
                        0 => _mm256_add_ps(acc[c], mins[c]),
                        _ => _mm256_fmadd_ps(minus_offset, mins[c], acc[c]),
                    };
                    _mm256_storeu_ps(out[c].as_mut_ptr(), total);
                }
                out
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use x86_group_kernel;

/// Instantiates the AVX2 (`maddubs` + `madd`) and AVX-VNNI (`dpbusd`) kernels of a type and
/// `kernel()`, which picks the best one this CPU runs.
macro_rules! kernels_for {
    ($p:ty, |$blk:ident, $u:ident| $load:expr) => {
        #[cfg(target_arch = "x86_64")]
        $crate::ops::quant_cpu::x86_group_kernel!(
            group_avx2,
            "avx2,fma,f16c",
            $p,
            |$blk, $u| $load,
            |acc, w, x| _mm256_add_epi32(
                acc,
                _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
            )
        );
        #[cfg(target_arch = "x86_64")]
        $crate::ops::quant_cpu::x86_group_kernel!(
            group_avxvnni,
            "avx2,fma,f16c,avxvnni",
            $p,
            |$blk, $u| $load,
            |acc, w, x| _mm256_dpbusd_avx_epi32(acc, w, x)
        );

        /// The best kernel this CPU runs.
        pub fn kernel<const C: usize>() -> $crate::ops::quant_cpu::GroupKernel<C> {
            #[cfg(target_arch = "x86_64")]
            {
                let base = is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c");
                if base && is_x86_feature_detected!("avxvnni") {
                    return group_avxvnni::<C>;
                }
                if base {
                    return group_avx2::<C>;
                }
            }
            $crate::ops::quant_cpu::group_portable::<$p, C>
        }
    };
}
pub(crate) use kernels_for;

/// GGUF types these kernels run, as stored or transcoded ([`transcode`]): the ones
/// [`PackedWeight::from_gguf`] packs.
pub const GGUF_TYPES: [GgmlDType; 7] = [
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q4K,
    GgmlDType::Q6K,
];

/// Block formats with a wick kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    /// wick's own: see [`q8_halves`].
    Q8Halves,
}

/// [`pack`] for one type: (stored, n, k) to group-blocks.
type Packer = fn(&[u8], usize, usize) -> Vec<u8>;

/// A kernel for one activation row (decode) and one for [`PREFILL_ROWS`].
type KernelPair = (GroupKernel<1>, GroupKernel<PREFILL_ROWS>);

impl Format {
    fn group_block(self) -> usize {
        match self {
            Format::Q4_0 => q4_0::Q4_0::GROUP_BLOCK,
            Format::Q4_1 => q4_1::Q4_1::GROUP_BLOCK,
            Format::Q5_0 => q5_0::Q5_0::GROUP_BLOCK,
            Format::Q5_1 => q5_1::Q5_1::GROUP_BLOCK,
            Format::Q8_0 => q8_0::Q8_0::GROUP_BLOCK,
            Format::Q8Halves => q8_halves::Q8Halves::GROUP_BLOCK,
        }
    }

    /// Bytes of one stored block, and the function that packs them.
    fn stored_block_and_packer(self) -> (usize, Packer) {
        match self {
            Format::Q4_0 => (q4_0::Q4_0::STORED_BLOCK, pack::<q4_0::Q4_0>),
            Format::Q4_1 => (q4_1::Q4_1::STORED_BLOCK, pack::<q4_1::Q4_1>),
            Format::Q5_0 => (q5_0::Q5_0::STORED_BLOCK, pack::<q5_0::Q5_0>),
            Format::Q5_1 => (q5_1::Q5_1::STORED_BLOCK, pack::<q5_1::Q5_1>),
            Format::Q8_0 => (q8_0::Q8_0::STORED_BLOCK, pack::<q8_0::Q8_0>),
            Format::Q8Halves => (q8_halves::STORED_BLOCK, pack::<q8_halves::Q8Halves>),
        }
    }

    /// The best kernels this CPU runs.
    fn kernels(self) -> KernelPair {
        match self {
            Format::Q4_0 => (q4_0::kernel(), q4_0::kernel()),
            Format::Q4_1 => (q4_1::kernel(), q4_1::kernel()),
            Format::Q5_0 => (q5_0::kernel(), q5_0::kernel()),
            Format::Q5_1 => (q5_1::kernel(), q5_1::kernel()),
            Format::Q8_0 => (q8_0::kernel(), q8_0::kernel()),
            Format::Q8Halves => (q8_halves::kernel(), q8_halves::kernel()),
        }
    }

    fn portable(self) -> KernelPair {
        fn pair<P: Packing>() -> KernelPair {
            (group_portable::<P, 1>, group_portable::<P, PREFILL_ROWS>)
        }
        match self {
            Format::Q4_0 => pair::<q4_0::Q4_0>(),
            Format::Q4_1 => pair::<q4_1::Q4_1>(),
            Format::Q5_0 => pair::<q5_0::Q5_0>(),
            Format::Q5_1 => pair::<q5_1::Q5_1>(),
            Format::Q8_0 => pair::<q8_0::Q8_0>(),
            Format::Q8Halves => pair::<q8_halves::Q8Halves>(),
        }
    }
}

/// A weight of `n` rows by `k` values repacked for wick's kernels.
pub struct PackedWeight {
    format: Format,
    n: usize,
    k: usize,
    data: Vec<u8>,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeight({:?}, {}x{})", self.format, self.n, self.k)
    }
}

impl PackedWeight {
    /// Repacks a stored (n, k) GGUF tensor, transcoding its blocks where they run on
    /// another type's kernel ([`transcode`]), or None when no kernel here runs its type or
    /// `k` is not whole blocks.
    pub fn from_gguf(dtype: GgmlDType, stored: &[u8], n: usize, k: usize) -> Option<Self> {
        use transcode::*;
        let (format, stored) = match dtype {
            GgmlDType::Q4_1 => (Format::Q4_1, std::borrow::Cow::Borrowed(stored)),
            GgmlDType::Q5_1 => (Format::Q5_1, stored.into()),
            GgmlDType::Q8_0 => (Format::Q8_0, stored.into()),
            GgmlDType::Q4_0 => (Format::Q4_0, stored.into()),
            GgmlDType::Q5_0 => (Format::Q5_0, stored.into()),
            GgmlDType::Q4K => (Format::Q4_1, q4_k_as_q4_1(stored)?.into()),
            GgmlDType::Q6K => (Format::Q8Halves, q6_k_as_q8_halves(stored)?.into()),
            _ => return None,
        };
        Self::pack_as(format, &stored, n, k)
    }

    /// Repacks (n, k) values stored as blocks of `format`, or None when `k` is not whole
    /// blocks or `stored` is not `n` rows of them.
    pub fn pack_as(format: Format, stored: &[u8], n: usize, k: usize) -> Option<Self> {
        if !k.is_multiple_of(BLOCK) || n == 0 || k == 0 {
            return None;
        }
        let (stored_block, pack) = format.stored_block_and_packer();
        if stored.len() != n * k / BLOCK * stored_block {
            return None;
        }
        let data = pack(stored, n, k);
        Some(PackedWeight { format, n, k, data })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// (n, k): output rows by input values.
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// `x·Wᵀ` for `x` of `m` rows of `k` values: `m` rows of `n` outputs.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let acts = acts::quantize(x, self.k);
        self.matmul_quantized(&acts, self.format.kernels())
    }

    /// The same product through the portable kernel (the specification).
    pub fn matmul_reference(&self, x: &[f32]) -> Vec<f32> {
        let acts = acts::quantize_reference(x, self.k);
        self.matmul_quantized(&acts, self.format.portable())
    }

    fn matmul_quantized(&self, acts: &QuantizedActs, (one, many): KernelPair) -> Vec<f32> {
        let (n, m) = (self.n, acts.rows);
        let group_bytes = self.k / BLOCK * self.format.group_block();
        let mut out = vec![0f32; m * n];
        let dst = SharedOut(out.as_mut_ptr());
        let groups = n.div_ceil(ROWS);
        // Enough pieces to balance two to a few dozen threads, each at least a few groups.
        let min_len = (groups / (rayon::current_num_threads() * 8)).max(1);
        (0..groups)
            .into_par_iter()
            .with_min_len(min_len)
            .for_each(|g| {
                let group = &self.data[g * group_bytes..(g + 1) * group_bytes];
                let rows = (n - g * ROWS).min(ROWS);
                let write = |row: usize, vals: &[f32; ROWS]| {
                    for (r, &v) in vals[..rows].iter().enumerate() {
                        // SAFETY: group g alone writes columns 8g..8g+rows, in bounds for
                        // every row < m; `out` outlives the parallel loop.
                        unsafe { *dst.at(row * n + g * ROWS + r) = v };
                    }
                };
                let mut row = 0;
                while row + PREFILL_ROWS <= m {
                    // SAFETY: the kernels were picked for this CPU; rows row.. row+C < m.
                    let vals = unsafe { many(group, acts, row) };
                    for (c, vals) in vals.iter().enumerate() {
                        write(row + c, vals);
                    }
                    row += PREFILL_ROWS;
                }
                while row < m {
                    // SAFETY: as above, row < m.
                    let vals = unsafe { one(group, acts, row) };
                    write(row, &vals[0]);
                    row += 1;
                }
            });
        out
    }
}

/// The output buffer, written by disjoint columns from several threads.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every writer owns a disjoint set of indices (see matmul_quantized).
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `i` is in bounds and no other thread touches it.
    unsafe fn at(self, i: usize) -> *mut f32 {
        // SAFETY: per the contract.
        unsafe { self.0.add(i) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn max_rel(a: &[f32], b: &[f32]) -> (f32, usize) {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / scale)
            .enumerate()
            .fold(
                (0.0, 0),
                |(m, mi), (i, d)| if d > m { (d, i) } else { (m, mi) },
            )
    }

    /// Odd row counts (a padded last group) and odd activation-row counts (the one-row tail).
    #[test]
    fn fast_matches_reference_and_dequantized_product() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let cases = [(37, 256, 5), (4, 32, 1), (130, 576, 2), (9, 96, 3)];
        let types = [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ];
        // K-quants need rows of whole 256-value super-blocks.
        let fits = |&((_, k, _), t): &(_, GgmlDType)| k % t.block_size() == 0;
        for ((n, k, m), dtype) in cases
            .into_iter()
            .flat_map(|c| types.map(|t| (c, t)))
            .filter(fits)
        {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let q = QTensor::quantize(&w, dtype)?;
            let packed = PackedWeight::from_gguf(dtype, &q.data()?, n, k).expect("packs");
            let x: Vec<f32> = Tensor::randn(0f32, 1.0, (m, k), &dev)?
                .flatten_all()?
                .to_vec1()?;
            let (fast, spec) = (packed.matmul(&x), packed.matmul_reference(&x));
            let (d, i) = max_rel(&fast, &spec);
            assert!(
                d < 1e-5,
                "{n}x{k}, m={m}: fast vs reference max rel {d:e} at {i}: {} vs {}",
                fast[i],
                spec[i]
            );
            // Against f32 math on the dequantized weight: the activations' 8-bit rounding
            // differs by at most half a step per value, |Σ w·(x - dx·qx)| <= Σ |w|·dx/2; the
            // K-quants' sub-block scales also round to f16 (transcode), each weight by at most
            // 2⁻¹⁰ of the largest.
            let wd: Vec<f32> = q.dequantize(&dev)?.flatten_all()?.to_vec1()?;
            let w_max = wd.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
            let w_rounding = match dtype {
                GgmlDType::Q4K | GgmlDType::Q6K => w_max / 1024.0,
                _ => 0.0,
            };
            let scales = acts::quantize_reference(&x, k).scales;
            for (i, &got) in fast.iter().enumerate() {
                let (row, col) = (i / n, i % n);
                let (mut exact, mut bound) = (0f64, 0f64);
                for j in 0..k {
                    let (w, xj) = (wd[col * k + j] as f64, x[row * k + j] as f64);
                    exact += w * xj;
                    bound += w.abs() * scales[row * k / BLOCK + j / BLOCK][0] as f64 / 2.0
                        + xj.abs() * w_rounding;
                }
                assert!(
                    (got as f64 - exact).abs() <= bound * 1.001 + 1e-4,
                    "{dtype:?} {n}x{k}, m={m}, output {i}: {got} vs dequantized {exact} (bound {bound})"
                );
            }
        }
        Ok(())
    }

    /// Every x86 kernel this CPU can run, not only the one dispatch picks (an AVX-VNNI CPU
    /// would otherwise never run the AVX2 kernels).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_x86_kernel_this_cpu_runs_matches_the_portable_one() -> candle_core::Result<()> {
        let base = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let vnni = base && is_x86_feature_detected!("avxvnni");
        let (n, k, m) = (37, 256, 3);
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        let x: Vec<f32> = Tensor::randn(0f32, 1.0, (m, k), &dev)?
            .flatten_all()?
            .to_vec1()?;
        let acts = acts::quantize_reference(&x, k);
        let mut ran = 0;
        // One type per format.
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q6K,
        ] {
            let packed =
                PackedWeight::from_gguf(dtype, &QTensor::quantize(&w, dtype)?.data()?, n, k)
                    .expect("packs");
            let spec = packed.matmul_quantized(&acts, packed.format.portable());
            let kernels: [(&str, bool, KernelPair); 2] = match packed.format {
                Format::Q4_0 => [
                    ("avx2", base, (q4_0::group_avx2, q4_0::group_avx2)),
                    ("avxvnni", vnni, (q4_0::group_avxvnni, q4_0::group_avxvnni)),
                ],
                Format::Q5_0 => [
                    ("avx2", base, (q5_0::group_avx2, q5_0::group_avx2)),
                    ("avxvnni", vnni, (q5_0::group_avxvnni, q5_0::group_avxvnni)),
                ],
                Format::Q4_1 => [
                    ("avx2", base, (q4_1::group_avx2, q4_1::group_avx2)),
                    ("avxvnni", vnni, (q4_1::group_avxvnni, q4_1::group_avxvnni)),
                ],
                Format::Q5_1 => [
                    ("avx2", base, (q5_1::group_avx2, q5_1::group_avx2)),
                    ("avxvnni", vnni, (q5_1::group_avxvnni, q5_1::group_avxvnni)),
                ],
                Format::Q8_0 => [
                    ("avx2", base, (q8_0::group_avx2, q8_0::group_avx2)),
                    ("avxvnni", vnni, (q8_0::group_avxvnni, q8_0::group_avxvnni)),
                ],
                Format::Q8Halves => [
                    ("avx2", base, (q8_halves::group_avx2, q8_halves::group_avx2)),
                    (
                        "avxvnni",
                        vnni,
                        (q8_halves::group_avxvnni, q8_halves::group_avxvnni),
                    ),
                ],
            };
            for (name, _, pair) in kernels.into_iter().filter(|k| k.1) {
                let fast = packed.matmul_quantized(&acts, pair);
                let (d, i) = max_rel(&fast, &spec);
                assert!(d < 1e-5, "{dtype:?} {name}: max rel {d:e} at {i}");
                ran += 1;
            }
        }
        println!("x86 kernels checked: {ran}");
        Ok(())
    }

    #[test]
    fn types_without_a_kernel_are_not_packed() {
        assert!(PackedWeight::from_gguf(GgmlDType::Q5K, &[0; 176], 1, 256).is_none());
        assert!(PackedWeight::from_gguf(GgmlDType::Q4_1, &[0; 20], 1, 16).is_none());
    }
}
