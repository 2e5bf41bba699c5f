//! RMSNorm over the last dimension (Llama family): `x / sqrt(mean(x²) + eps) · weight`.

use candle_core::{DType, Result, Tensor, D};

use super::grad::with_backward;

/// Fast path: wick's kernel on CUDA (rounding as the reference does), candle's fused kernel
/// elsewhere. Neither has a backward pass in candle 0.11.1, so a tracked `x` (LoRA training)
/// gets the analytic one through [`with_backward`]; a tracked weight takes the reference.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if weight.track_op() {
        return rms_norm_reference(x, weight, eps);
    }
    let y = rms_norm_untracked(&x.detach(), weight, eps)?;
    if !x.track_op() {
        return Ok(y);
    }
    let (xd, w) = (x.detach(), weight.clone());
    let backward = move |_: &Tensor, g: &Tensor| rms_norm_backward(&xd, &w, eps, g);
    with_backward(x, y, Box::new(backward))
}

fn rms_norm_untracked(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        return super::cuda::fused::rms_norm(&x.contiguous()?, &weight.contiguous()?, eps);
    }
    candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32)
}

/// d/dx of `n·w` with `n = x·r`, `r = 1/sqrt(mean(x²) + eps)`, in f32:
/// `r·(gn − n·mean(gn·n))` where `gn = g·w`.
fn rms_norm_backward(x: &Tensor, weight: &Tensor, eps: f64, g: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() && weight.dtype() == x.dtype() {
        let g = g.detach().to_dtype(x.dtype())?.contiguous()?;
        return super::cuda::elementwise::rms_norm_backward(
            &x.contiguous()?,
            &weight.contiguous()?,
            &g,
            eps,
        );
    }
    let x32 = x.to_dtype(DType::F32)?;
    let r = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?
        .sqrt()?
        .recip()?;
    let n = x32.broadcast_mul(&r)?;
    let gn = g
        .to_dtype(DType::F32)?
        .broadcast_mul(&weight.to_dtype(DType::F32)?)?;
    let dot = (&gn * &n)?.mean_keepdim(D::Minus1)?;
    (gn - n.broadcast_mul(&dot)?)?
        .broadcast_mul(&r)?
        .to_dtype(x.dtype())
}

/// Reference, as transformers computes it: normalise in f32, cast back, then scale.
pub fn rms_norm_reference(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = x.broadcast_div(&(ms + eps)?.sqrt()?)?;
    normed.to_dtype(dtype)?.broadcast_mul(weight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::max_diff;
    use candle_core::{Device, Var};

    #[test]
    fn fast_matches_reference_on_odd_sizes_and_non_contiguous_input() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (5, 37, 3), &dev)?.transpose(1, 2)?; // (5, 3, 37) strided
        let w = Tensor::randn(1f32, 0.1, 37, &dev)?;
        let diff = max_diff(&rms_norm(&x, &w, 1e-5)?, &rms_norm_reference(&x, &w, 1e-5)?)?;
        assert!(diff < 1e-5, "f32 max abs diff {diff}");
        for dtype in [DType::F16, DType::BF16] {
            let (xd, wd) = (x.to_dtype(dtype)?, w.to_dtype(dtype)?);
            let diff = max_diff(&rms_norm(&xd, &wd, 1e-5)?, &rms_norm(&x, &w, 1e-5)?)?;
            assert!(diff < 5e-2, "{dtype:?} max abs diff {diff}");
        }
        Ok(())
    }

    #[test]
    fn analytic_gradient_matches_the_reference_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, (3, 5, 37), &dev)?)?;
        let w = Tensor::randn(1f32, 0.3, 37, &dev)?;
        let up = Tensor::randn(0f32, 1.0, (3, 5, 37), &dev)?;
        let grad = |f: fn(&Tensor, &Tensor, f64) -> Result<Tensor>| -> Result<Tensor> {
            let y = f(x.as_tensor(), &w, 1e-6)?;
            let g = (y * &up)?.sum_all()?.backward()?;
            Ok(g.get(x.as_tensor()).expect("gradient").clone())
        };
        let diff = max_diff(&grad(rms_norm)?, &grad(rms_norm_reference)?)?;
        assert!(diff < 1e-5, "max abs gradient diff {diff}");
        Ok(())
    }

    #[test]
    fn gradients_flow_when_tracked() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::new(&[[1f32, -2.0, 3.0], [0.5, 0.25, -1.0]], &dev)?;
        let w = Tensor::new(&[1f32, 2.0, 3.0], &dev)?;
        let y = rms_norm(x.as_tensor(), &w, 1e-6)?;
        let grads = y.sum_all()?.backward()?;
        let g = grads
            .get(x.as_tensor())
            .map(|g| g.abs()?.sum_all()?.to_scalar::<f32>());
        assert!(matches!(g, Some(Ok(v)) if v > 0.0), "no gradient reached x");
        Ok(())
    }
}
