//! Softmax over the last dimension.

use candle_core::{DType, Result, Tensor, D};

use super::grad::with_backward;

/// Fast path: candle's fused last-dim softmax. It has no backward pass in candle 0.11.1; a
/// tracked `x` (LoRA training) gets one through [`with_backward`] (dx = y·(dy − Σ dy·y)).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() {
        return candle_nn::ops::softmax_last_dim(&x.contiguous()?);
    }
    let y = candle_nn::ops::softmax_last_dim(&x.detach().contiguous()?)?;
    let backward = |y: &Tensor, grad: &Tensor| {
        let dot = (grad * y)?.sum_keepdim(D::Minus1)?;
        y * grad.broadcast_sub(&dot)?
    };
    with_backward(x, y, Box::new(backward))
}

/// Reference: max-subtracted exp / sum, computed in f32.
pub fn softmax_last_dim_reference(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?;
    let e = shifted.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fast_matches_reference_including_masked_rows() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 4.0, (3, 7, 129), &dev)?;
        // A large negative bias like the attention mask uses.
        let mask = Tensor::arange(0u32, 129, &dev)?
            .ge(100u32)?
            .to_dtype(DType::F32)?
            .affine(-1e9, 0.0)?;
        let x = x.broadcast_add(&mask)?;
        let fast = softmax_last_dim(&x)?;
        let reference = softmax_last_dim_reference(&x)?;
        let diff = (fast - reference)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "max abs diff {diff}");
        Ok(())
    }

    #[test]
    fn fast_gradient_matches_the_reference_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = candle_core::Var::randn(0f32, 3.0, (4, 5, 33), &dev)?;
        let up = Tensor::randn(0f32, 1.0, (4, 5, 33), &dev)?;
        let grad = |f: fn(&Tensor) -> Result<Tensor>| -> Result<Tensor> {
            let g = (f(x.as_tensor())? * &up)?.sum_all()?.backward()?;
            Ok(g.get(x.as_tensor()).expect("gradient").clone())
        };
        let (fast, reference) = (grad(softmax_last_dim)?, grad(softmax_last_dim_reference)?);
        let diff = (fast - reference)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "gradient max abs diff {diff}");
        Ok(())
    }
}
