//! wick's own CPU kernels for `x·Wᵀ` against GGUF block-quantized weights: activations
//! quantized per block to 8 bits ([`acts`]), integer dot products, weights repacked once at
//! load so that one pass over the activations feeds several output rows, the kernel picked at
//! run time by CPU feature (AVX-VNNI, AVX2+FMA+F16C, else portable Rust).
//!
//! Work is split over rayon's pool by groups of output rows; each group runs every activation
//! row while its weights are in L1, two rows per pass in prefill.

pub mod acts;
pub mod q4_1;
pub mod q5_1;
pub mod q8_0;

use candle_core::quantized::GgmlDType;
use rayon::prelude::*;

use acts::{QuantizedActs, BLOCK};

/// Output rows per packed group: one pass over a block of activations feeds this many rows.
pub const ROWS: usize = 4;

/// One group's dot products with `C` activation rows (`row0..row0 + C`), as `[c][r]`.
pub type GroupKernel<const C: usize> = unsafe fn(&[u8], &QuantizedActs, usize) -> [[f32; ROWS]; C];

/// Block formats with a wick kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Q4_1,
    Q5_1,
    Q8_0,
}

impl Format {
    fn group_block(self) -> usize {
        match self {
            Format::Q4_1 => q4_1::GROUP_BLOCK,
            Format::Q5_1 => q5_1::GROUP_BLOCK,
            Format::Q8_0 => q8_0::GROUP_BLOCK,
        }
    }

    /// The best kernels this CPU runs, for one and for two activation rows per pass.
    fn kernels(self) -> (GroupKernel<1>, GroupKernel<2>) {
        match self {
            Format::Q4_1 => (q4_1::kernel(), q4_1::kernel()),
            Format::Q5_1 => (q5_1::kernel(), q5_1::kernel()),
            Format::Q8_0 => (q8_0::kernel(), q8_0::kernel()),
        }
    }

    fn portable(self) -> (GroupKernel<1>, GroupKernel<2>) {
        match self {
            Format::Q4_1 => (q4_1::group_portable, q4_1::group_portable),
            Format::Q5_1 => (q5_1::group_portable, q5_1::group_portable),
            Format::Q8_0 => (q8_0::group_portable, q8_0::group_portable),
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
    /// Repacks a stored (n, k) GGUF tensor, or None when wick has no kernel for its type or
    /// `k` is not whole blocks.
    pub fn pack(dtype: GgmlDType, stored: &[u8], n: usize, k: usize) -> Option<Self> {
        if !k.is_multiple_of(BLOCK) || n == 0 || k == 0 {
            return None;
        }
        let (format, data) = match dtype {
            GgmlDType::Q4_1 => (Format::Q4_1, q4_1::pack(stored, n, k)),
            GgmlDType::Q5_1 => (Format::Q5_1, q5_1::pack(stored, n, k)),
            GgmlDType::Q8_0 => (Format::Q8_0, q8_0::pack(stored, n, k)),
            _ => return None,
        };
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

    fn matmul_quantized(
        &self,
        acts: &QuantizedActs,
        (one, two): (GroupKernel<1>, GroupKernel<2>),
    ) -> Vec<f32> {
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
                        // SAFETY: group g alone writes columns 4g..4g+rows, in bounds for
                        // every row < m; `out` outlives the parallel loop.
                        unsafe { *dst.at(row * n + g * ROWS + r) = v };
                    }
                };
                let mut row = 0;
                while row + 2 <= m {
                    // SAFETY: the kernels were picked for this CPU; rows row, row+1 < m.
                    let vals = unsafe { two(group, acts, row) };
                    write(row, &vals[0]);
                    write(row + 1, &vals[1]);
                    row += 2;
                }
                if row < m {
                    // SAFETY: as above, row < m.
                    let vals = unsafe { one(group, acts, row) };
                    write(row, &vals[0]);
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
        for ((n, k, m), dtype) in cases
            .into_iter()
            .flat_map(|c| [GgmlDType::Q4_1, GgmlDType::Q5_1, GgmlDType::Q8_0].map(|t| (c, t)))
        {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let q = QTensor::quantize(&w, dtype)?;
            let packed = PackedWeight::pack(dtype, &q.data()?, n, k).expect("packs");
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
            // Against f32 math on the dequantized weight: only the activations' 8-bit
            // rounding differs.
            let wd = q.dequantize(&dev)?;
            let xt = Tensor::from_vec(x.clone(), (m, k), &dev)?;
            let exact: Vec<f32> = xt.matmul(&wd.t()?)?.flatten_all()?.to_vec1()?;
            let (d, i) = max_rel(&fast, &exact);
            assert!(
                d < 1e-2,
                "{n}x{k}, m={m}: vs dequantized max rel {d:e} at {i}: {} vs {}",
                fast[i],
                exact[i]
            );
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
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_1, GgmlDType::Q8_0] {
            let packed = PackedWeight::pack(dtype, &QTensor::quantize(&w, dtype)?.data()?, n, k)
                .expect("packs");
            let spec = packed.matmul_quantized(&acts, packed.format.portable());
            let kernels: [(&str, bool, (GroupKernel<1>, GroupKernel<2>)); 2] = match dtype {
                GgmlDType::Q4_1 => [
                    ("avx2", base, (q4_1::group_avx2, q4_1::group_avx2)),
                    ("avxvnni", vnni, (q4_1::group_avxvnni, q4_1::group_avxvnni)),
                ],
                GgmlDType::Q5_1 => [
                    ("avx2", base, (q5_1::group_avx2, q5_1::group_avx2)),
                    ("avxvnni", vnni, (q5_1::group_avxvnni, q5_1::group_avxvnni)),
                ],
                _ => [
                    ("avx2", base, (q8_0::group_avx2, q8_0::group_avx2)),
                    ("avxvnni", vnni, (q8_0::group_avxvnni, q8_0::group_avxvnni)),
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
        assert!(PackedWeight::pack(GgmlDType::Q4K, &[0; 144], 1, 256).is_none());
        assert!(PackedWeight::pack(GgmlDType::Q4_1, &[0; 20], 1, 16).is_none());
    }
}
