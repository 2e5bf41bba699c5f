//! Scaled dot-product attention over (batch, heads, seq, head_dim) tensors.

use candle_core::{Result, Tensor};

use super::softmax::{softmax_last_dim, softmax_last_dim_reference};

/// `softmax(q·kᵀ·scale + bias)·v`. `bias` broadcasts to (batch, heads, q_len, k_len) and holds 0
/// for visible positions and a large negative value for masked ones.
pub fn sdpa(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let scores = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * scale)?;
    let scores = match bias {
        Some(b) => scores.broadcast_add(b)?,
        None => scores,
    };
    softmax_last_dim(&scores)?.matmul(&v.contiguous()?)
}

pub fn sdpa_reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let scores = match bias {
        Some(b) => scores.broadcast_add(b)?,
        None => scores,
    };
    softmax_last_dim_reference(&scores)?.matmul(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn fast_matches_reference_with_padding_bias() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 3, 11, 8), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (2, 3, 11, 8), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (2, 3, 11, 8), &dev)?;
        let bias = Tensor::arange(0u32, 11, &dev)?
            .ge(9u32)?
            .to_dtype(DType::F32)?
            .affine(-1e9, 0.0)?
            .reshape((1, 1, 1, 11))?;
        let fast = sdpa(&q, &k, &v, Some(&bias), 0.35)?;
        let reference = sdpa_reference(&q, &k, &v, Some(&bias), 0.35)?;
        let diff = (fast - reference)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max abs diff {diff}");
        Ok(())
    }
}
