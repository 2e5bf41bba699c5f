//! `act(x·Wᵀ + b)`: a dense layer with its bias and activation fused into the GEMM epilogue.
//!
//! On the CPU the fast path calls the `gemm` crate with the output pre-filled with the bias
//! (`read_dst`), then applies the activation while the rows are still in cache; this saves two
//! full passes over the activations per layer. The fast path has no backward pass, so it is only
//! taken when no input tracks gradients; training goes through the differentiable reference.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    /// The exact (erf) GELU of BERT's `hidden_act: "gelu"`.
    GeluErf,
}

/// `act(x·Wᵀ + b)` for `x` (…, in), `weight` (out, in), `bias` (out).
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() && !tracks_grad(x, weight, bias) {
        return cuda_linear(x, weight, bias, act);
    }
    let fast = matches!(x.device(), Device::Cpu)
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && !tracks_grad(x, weight, bias);
    let Some(bias) = bias.filter(|_| fast) else {
        return linear_reference(x, weight, bias, act);
    };
    let dims = x.dims().to_vec();
    let Some((&in_dim, lead)) = dims.split_last() else {
        candle_core::bail!("linear needs an input with at least one dimension")
    };
    let rows = x.elem_count() / in_dim.max(1);
    let x2 = x.reshape((rows, in_dim))?.contiguous()?;
    let y = x2.apply_op3_no_bwd(
        &weight.contiguous()?,
        &bias.contiguous()?,
        &FusedLinear(act),
    )?;
    let mut out_dims = lead.to_vec();
    out_dims.push(weight.dim(0)?);
    y.reshape(out_dims)
}

/// `x·Wᵀ + b + residual` (a residual connection after a projection): on CUDA the GEMM adds
/// the residual itself when nothing tracks gradients; elsewhere [`linear`] and an add.
pub fn linear_add(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() && !tracks_grad(x, weight, bias) && !residual.track_op() {
        let dims = residual.dims().to_vec();
        let in_dim = x.dim(candle_core::D::Minus1)?;
        let x2 = x
            .reshape((x.elem_count() / in_dim.max(1), in_dim))?
            .contiguous()?;
        let r2 = residual
            .reshape((x2.dim(0)?, weight.dim(0)?))?
            .contiguous()?;
        let bias = bias.map(|b| b.contiguous()).transpose()?;
        let y = super::cuda::fused::linear_add(&x2, &weight.contiguous()?, bias.as_ref(), &r2)?;
        return y.reshape(dims);
    }
    linear(x, weight, bias, Activation::Identity)? + residual
}

/// `x·Wᵀ + b` for a frozen dense layer (no activation): cuBLASLt with the bias in the GEMM
/// epilogue on CUDA when nothing tracks gradients, otherwise candle's matmul and a broadcast add
/// (differentiable, and on the CPU the path the Llama layers have always taken).
pub fn linear_frozen(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() && !tracks_grad(x, weight, bias) {
        return cuda_linear(x, weight, bias, Activation::Identity);
    }
    let y = x.broadcast_matmul(&weight.t()?)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

fn tracks_grad(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> bool {
    x.track_op() || weight.track_op() || bias.is_some_and(|b| b.track_op())
}

/// cuBLASLt GEMM with a fused bias epilogue; the erf GELU runs after it (cuBLASLt's GELU
/// epilogue is the tanh approximation, which BERT does not use).
#[cfg(feature = "cuda")]
fn cuda_linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let Some((&in_dim, lead)) = dims.split_last() else {
        candle_core::bail!("linear needs an input with at least one dimension")
    };
    let rows = x.elem_count() / in_dim.max(1);
    let x2 = x.reshape((rows, in_dim))?.contiguous()?;
    let bias = bias.map(|b| b.contiguous()).transpose()?;
    let y = super::cuda::fused::linear(&x2, &weight.contiguous()?, bias.as_ref())?;
    let y = match act {
        Activation::Identity => y,
        Activation::GeluErf => super::cuda::elementwise::gelu_erf(&y)?,
    };
    let mut out_dims = lead.to_vec();
    out_dims.push(weight.dim(0)?);
    y.reshape(out_dims)
}

/// Reference: matmul, broadcast add, activation — differentiable candle primitives.
pub fn linear_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    let y = x.broadcast_matmul(&weight.t()?)?;
    let y = match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    match act {
        Activation::Identity => Ok(y),
        Activation::GeluErf => y.gelu_erf(),
    }
}

struct FusedLinear(Activation);

impl CustomOp3 for FusedLinear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) = (xs, ws, bs) else {
            candle_core::bail!("fused-linear: f32 inputs expected")
        };
        let (m, k) = xl.shape().dims2()?;
        let (n, k2) = wl.shape().dims2()?;
        if k != k2 || bl.shape().elem_count() != n {
            candle_core::bail!(
                "fused-linear: shapes {:?} {:?} {:?}",
                xl.shape(),
                wl.shape(),
                bl.shape()
            )
        }
        let (Some((x0, _)), Some((w0, _)), Some((b0, _))) = (
            xl.contiguous_offsets(),
            wl.contiguous_offsets(),
            bl.contiguous_offsets(),
        ) else {
            candle_core::bail!("fused-linear: contiguous inputs expected")
        };
        let (x, w, b) = (&x[x0..], &w[w0..], &b[b0..b0 + n]);

        let mut dst: Vec<f32> = Vec::with_capacity(m * n);
        for _ in 0..m {
            dst.extend_from_slice(b);
        }
        // SAFETY: dst is m×n, x is m×k and w is n×k, all row-major and at least that long.
        unsafe { gemm_x_wt(&mut dst, x, w, m, n, k, true) };
        if self.0 == Activation::GeluErf {
            dst.par_chunks_mut(n.max(1) * 16)
                .for_each(gelu_erf_in_place);
        }
        Ok((CpuStorage::F32(dst), Shape::from((m, n))))
    }
}

/// `dst (m×n) = x (m×k) · wᵀ` for `w` (n×k), plus `dst`'s own contents when `accumulate`, with
/// the gemm crate on candle's thread count.
///
/// # Safety
/// `dst` must hold m·n, `x` m·k and `w` n·k elements, all row-major.
pub(crate) unsafe fn gemm_x_wt(
    dst: &mut [f32],
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    debug_assert!(dst.len() >= m * n && x.len() >= m * k && w.len() >= n * k);
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller guarantees the lengths; w (n×k row-major) is read as the k×n matrix Wᵀ
    // through its strides.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// GELU over a slice, using AVX2+FMA when the CPU has them (the default x86-64 target only
/// assumes SSE2, so the vector version is compiled separately and picked at run time).
fn gelu_erf_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the required CPU features were just detected.
        unsafe { gelu_erf_avx2(xs) };
        return;
    }
    gelu_erf_portable(xs);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_erf_avx2(xs: &mut [f32]) {
    gelu_erf_portable(xs)
}

#[inline(always)]
fn gelu_erf_portable(xs: &mut [f32]) {
    for v in xs {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// erf as a branch-free rational minimax approximation on [-4, 4] (beyond which erf is ±1 in
/// f32), max abs error ≈ 3e-7; the form used by Eigen and XLA. Branch-free so loops vectorise.
#[inline(always)]
fn erf(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const BETA: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_474e-2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ALPHA.iter().fold(0.0f32, |acc, &c| acc.mul_add(x2, c));
    let q = BETA.iter().fold(0.0f32, |acc, &c| acc.mul_add(x2, c));
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::max_diff;

    #[test]
    fn fused_matches_reference_on_odd_sizes() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 7, 37), &dev)?;
        let w = Tensor::randn(0f32, 0.3, (53, 37), &dev)?;
        let b = Tensor::randn(0f32, 0.3, 53, &dev)?;
        for act in [Activation::Identity, Activation::GeluErf] {
            let fast = linear(&x, &w, Some(&b), act)?;
            let reference = linear_reference(&x, &w, Some(&b), act)?;
            assert_eq!(fast.dims(), &[3, 7, 53]);
            let d = max_diff(&fast, &reference)?;
            assert!(d < 1e-5, "{act:?}: max abs diff {d}");
        }
        Ok(())
    }

    #[test]
    fn non_contiguous_input_and_no_bias_use_the_right_path() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (37, 5), &dev)?.t()?; // (5, 37), strided
        let w = Tensor::randn(0f32, 0.3, (11, 37), &dev)?;
        let b = Tensor::randn(0f32, 0.3, 11, &dev)?;
        let d = max_diff(
            &linear(&x, &w, Some(&b), Activation::GeluErf)?,
            &linear_reference(&x, &w, Some(&b), Activation::GeluErf)?,
        )?;
        assert!(d < 1e-5, "strided: {d}");
        let d = max_diff(
            &linear(&x, &w, None, Activation::Identity)?,
            &linear_reference(&x, &w, None, Activation::Identity)?,
        )?;
        assert!(d < 1e-6, "no bias: {d}");
        Ok(())
    }

    #[test]
    fn erf_approximation_is_accurate() {
        let mut worst = (0.0f64, 0.0f32);
        for i in -60_000..60_000 {
            let x = i as f32 / 10_000.0;
            let exact = libm_erf(x as f64);
            let err = (erf(x) as f64 - exact).abs();
            if err > worst.0 {
                worst = (err, x);
            }
        }
        // A few f32 ulp (6e-8 at 1.0) near ±1.
        assert!(
            worst.0 < 5e-7,
            "max abs error {:.3e} at x = {}",
            worst.0,
            worst.1
        );
    }

    fn libm_erf(x: f64) -> f64 {
        extern "C" {
            fn erf(x: f64) -> f64;
        }
        // SAFETY: pure libm function.
        unsafe { erf(x) }
    }

    #[test]
    fn gradients_flow_when_inputs_are_variables() -> Result<()> {
        let dev = Device::Cpu;
        let x = candle_core::Var::randn(0f32, 1.0, (4, 6), &dev)?;
        let w = Tensor::randn(0f32, 0.3, (3, 6), &dev)?;
        let b = Tensor::randn(0f32, 0.3, 3, &dev)?;
        let y = linear(x.as_tensor(), &w, Some(&b), Activation::GeluErf)?;
        let grads = y.sum_all()?.backward()?;
        assert!(
            grads.get(x.as_tensor()).is_some(),
            "x must receive a gradient"
        );
        Ok(())
    }
}
