//! Softmax over the last dimension.

use candle_core::{DType, Result, Tensor, D};

/// Fast path: candle's fused last-dim softmax, which has no backward pass in candle 0.11.1, so a
/// graph that tracks gradients (LoRA training) takes the differentiable reference instead.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        return softmax_last_dim_reference(x);
    }
    candle_nn::ops::softmax_last_dim(&x.contiguous()?)
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
}
