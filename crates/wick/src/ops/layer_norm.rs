//! LayerNorm over the last dimension (BERT).

use candle_core::{DType, Result, Tensor, D};

/// Fast path: wick's kernel on CUDA (one warp a row, rows up to 1024 wide), candle's fused
/// kernel elsewhere. Neither has a backward pass, so a graph that tracks gradients takes the
/// differentiable reference instead.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if x.track_op() || weight.track_op() || bias.track_op() {
        return layer_norm_reference(x, weight, bias, eps);
    }
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() && x.dim(D::Minus1)? <= 1024 {
        return super::cuda::elementwise::layer_norm(
            &x.contiguous()?,
            &weight.contiguous()?,
            &bias.contiguous()?,
            eps,
        );
    }
    candle_nn::ops::layer_norm(&x.contiguous()?, weight, bias, eps as f32)
}

/// Reference: mean/variance in f32, then scale and shift.
pub fn layer_norm_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed
        .to_dtype(dtype)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fast_matches_reference_on_odd_sizes_and_non_contiguous_input() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (5, 37, 3), &dev)?.transpose(1, 2)?; // (5, 3, 37) strided
        let w = Tensor::randn(1f32, 0.1, 37, &dev)?;
        let b = Tensor::randn(0f32, 0.1, 37, &dev)?;
        let fast = layer_norm(&x, &w, &b, 1e-12)?;
        let reference = layer_norm_reference(&x, &w, &b, 1e-12)?;
        let diff = (fast - reference)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max abs diff {diff}");
        Ok(())
    }
}
