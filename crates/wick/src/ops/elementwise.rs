//! Small elementwise steps with a faster CUDA path: a cast, a cast-and-add, the head merge after
//! attention. Elsewhere (and for tracked or unaligned tensors) they are candle's own ops.

use candle_core::{DType, Result, Tensor};

/// `x.to_dtype(dtype)`; on CUDA between f32 and f16/bf16 one vectorised pass (candle's cast
/// kernel moves one element per thread). Not differentiable on that path: for values outside
/// the graph (detached inputs, gradients).
pub fn to_dtype(x: &Tensor, dtype: DType) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.dtype() != dtype
        && !x.track_op()
        && matches!(
            (x.dtype(), dtype),
            (DType::F32, DType::F16 | DType::BF16) | (DType::F16 | DType::BF16, DType::F32)
        )
        && super::cuda::elementwise::fits(x)
    {
        return super::cuda::elementwise::cast(x, dtype);
    }
    x.to_dtype(dtype)
}

/// `a + b.to_dtype(a.dtype())` for an f32 `b`: one pass on CUDA, as written elsewhere.
pub fn add_rounded(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if b.dtype() == DType::F32
        && a.shape() == b.shape()
        && !(a.track_op() || b.track_op())
        && super::cuda::elementwise::fits(a)
        && super::cuda::elementwise::fits(b)
    {
        return super::cuda::elementwise::add_rounded(a, b);
    }
    a + b.to_dtype(a.dtype())?
}

/// Attention output (b, heads, s, d) to (b, s, heads·d), the heads side by side again.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    #[cfg(feature = "cuda")]
    if !x.track_op()
        && (d * x.dtype().size_in_bytes()).is_multiple_of(16)
        && super::cuda::elementwise::fits(x)
    {
        return super::cuda::elementwise::merge_heads(x)?.reshape((b, s, h * d));
    }
    x.transpose(1, 2)?.reshape((b, s, h * d))
}
