//! `x · Wᵀ` for a frozen weight W (out, in): the base projections under a LoRA adapter.
//!
//! candle's matmul backward always computes the gradient of both operands. For a frozen weight
//! that is one wasted GEMM per layer (a third of a training step's FLOPs) and a weight-sized
//! gradient that stays in the gradient store until the step ends (the 49k×576 LM head alone is
//! 113 MB). This op's backward returns only `grad · W`. A quantized weight stays quantized: it
//! is dequantized for the forward GEMM and again for the backward one, then dropped, so a
//! QLoRA-style run never holds the whole base in f32.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};

use super::grad::with_backward;
use super::linear::gemm_x_wt;

/// A frozen (out, in) weight.
#[derive(Clone)]
pub enum FrozenWeight {
    Dense(Tensor),
    /// Dequantized on use.
    Quantized(Arc<QTensor>),
}

impl FrozenWeight {
    fn float(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        match self {
            FrozenWeight::Dense(w) => w.to_dtype(dtype),
            FrozenWeight::Quantized(q) => q.dequantize(device)?.to_dtype(dtype),
        }
    }
}

/// Fast path: `x` (rows, in) times the frozen weight's transpose, differentiable in `x` only.
/// On the CPU in f32 a custom op with wick's GEMM; elsewhere (CUDA: cuBLASLt, half precision)
/// the untracked GEMM recorded through [`with_backward`] with `grad · W` as its backward.
pub fn frozen_matmul(x: &Tensor, w: &FrozenWeight) -> Result<Tensor> {
    if !x.track_op() {
        return frozen_matmul_reference(x, w);
    }
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(FrozenMatmul(w.clone()));
    }
    let y = frozen_matmul_untracked(x, w)?;
    let w = w.clone();
    let backward = move |_: &Tensor, g: &Tensor| frozen_matmul_backward(&w, g);
    with_backward(x, y, Box::new(backward))
}

/// `x · Wᵀ` outside the graph (a forward recorded elsewhere): on the CPU in f32 wick's GEMM
/// (candle's matmul runs on one thread while `wick train` keeps candle's pool off), a quantized
/// weight dequantized for the GEMM; on CUDA cuBLASLt.
pub fn frozen_matmul_untracked(x: &Tensor, w: &FrozenWeight) -> Result<Tensor> {
    let x = x.detach();
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1_no_bwd(&FrozenMatmul(w.clone()));
    }
    let wf = w.float(x.dtype(), x.device())?;
    super::linear::linear_frozen(&x, &wf, None)
}

/// `grad · W`: the input gradient of `x · Wᵀ`.
pub fn frozen_matmul_backward(w: &FrozenWeight, grad: &Tensor) -> Result<Tensor> {
    grad.matmul(&w.float(grad.dtype(), grad.device())?)
}

/// Reference: candle's matmul against the (dequantized) weight.
pub fn frozen_matmul_reference(x: &Tensor, w: &FrozenWeight) -> Result<Tensor> {
    x.matmul(&w.float(x.dtype(), x.device())?.t()?)
}

struct FrozenMatmul(FrozenWeight);

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), Some((x0, x1))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("frozen-matmul: contiguous f32 input expected")
        };
        let (m, k) = layout.shape().dims2()?;
        let w = self.0.float(DType::F32, &Device::Cpu)?.contiguous()?;
        let (n, k2) = w.dims2()?;
        if k != k2 {
            candle_core::bail!("frozen-matmul: input {:?} for a weight ({n}, {k2})", (m, k))
        }
        let (w_storage, w_layout) = w.storage_and_layout();
        let (candle_core::Storage::Cpu(CpuStorage::F32(ws)), Some((w0, w1))) =
            (&*w_storage, w_layout.contiguous_offsets())
        else {
            candle_core::bail!("frozen-matmul: the weight is not f32 on the CPU")
        };
        let mut dst = vec![0f32; m * n];
        // SAFETY: dst is m×n, x is m×k, w is n×k (shapes checked above), all row-major.
        unsafe { gemm_x_wt(&mut dst, &x[x0..x1], &ws[w0..w1], m, n, k, false) };
        Ok((CpuStorage::F32(dst), Shape::from((m, n))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            frozen_matmul_backward(&self.0, grad_res)?.to_dtype(arg.dtype())?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::max_diff;
    use candle_core::quantized::GgmlDType;
    use candle_core::Var;

    /// Output and input gradient of `f`, with a non-trivial upstream gradient.
    fn run(
        f: fn(&Tensor, &FrozenWeight) -> Result<Tensor>,
        x: &Var,
        w: &FrozenWeight,
        up: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let y = f(x.as_tensor(), w)?;
        let grads = (&y * up)?.sum_all()?.backward()?;
        Ok((y, grads.get(x.as_tensor()).expect("gradient").clone()))
    }

    #[test]
    fn fast_matches_reference_and_passes_no_weight_gradient() -> Result<()> {
        let dev = Device::Cpu;
        for (m, k, n) in [(1, 1, 1), (7, 13, 5), (33, 576, 192)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (m, k), &dev)?)?;
            let dense = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let w = FrozenWeight::Dense(dense.clone());
            let up = Tensor::randn(0f32, 1.0, (m, n), &dev)?;
            let (y, g) = run(frozen_matmul, &x, &w, &up)?;
            let (y_ref, g_ref) = run(frozen_matmul_reference, &x, &w, &up)?;
            assert!(max_diff(&y, &y_ref)? < 1e-4, "{m}x{k}x{n} output");
            assert!(max_diff(&g, &g_ref)? < 1e-4, "{m}x{k}x{n} gradient");
            let grads = frozen_matmul(x.as_tensor(), &w)?.sum_all()?.backward()?;
            assert!(
                grads.get(&dense).is_none(),
                "a frozen weight got a gradient"
            );
        }
        Ok(())
    }

    #[test]
    fn quantized_weight_is_dequantized_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        let dense = Tensor::randn(0f32, 1.0, (64, 64), &dev)?;
        let q = Arc::new(QTensor::quantize(&dense, GgmlDType::Q4_1)?);
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (9, 64), &dev)?)?;
        let up = Tensor::randn(0f32, 1.0, (9, 64), &dev)?;
        let (y, g) = run(frozen_matmul, &x, &FrozenWeight::Quantized(q.clone()), &up)?;
        let deq = FrozenWeight::Dense(q.dequantize(&dev)?);
        let (y_ref, g_ref) = run(frozen_matmul_reference, &x, &deq, &up)?;
        assert!(max_diff(&y, &y_ref)? < 1e-4);
        assert!(max_diff(&g, &g_ref)? < 1e-4);
        Ok(())
    }

    #[test]
    fn non_contiguous_input_and_untracked_input() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (12, 8), &dev)?)?;
        let xt = x.as_tensor().t()?;
        let w = FrozenWeight::Dense(Tensor::randn(0f32, 1.0, (3, 12), &dev)?);
        let d = max_diff(&frozen_matmul(&xt, &w)?, &frozen_matmul_reference(&xt, &w)?)?;
        assert!(d < 1e-5, "{d}");
        let plain = Tensor::randn(0f32, 1.0, (4, 12), &dev)?;
        assert_eq!(frozen_matmul(&plain, &w)?.dims(), [4, 3]);
        Ok(())
    }
}
