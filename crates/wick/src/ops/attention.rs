//! Scaled dot-product attention over (batch, heads, seq, head_dim) tensors, with grouped-query
//! attention (fewer key/value heads than query heads) and scores/softmax in f32.

use candle_core::{DType, Result, Tensor};

use super::softmax::{softmax_last_dim, softmax_last_dim_reference};

/// `softmax(q·kᵀ·scale + bias)·v`.
///
/// `q` is (batch, heads, q_len, head_dim); `k` and `v` are (batch, kv_heads, k_len, head_dim)
/// with `heads` a multiple of `kv_heads` (query head `h` reads kv head `h / (heads / kv_heads)`,
/// as transformers' `repeat_kv`). `k`/`v` may be strided views (a narrowed KV cache): they are
/// not copied. `bias` holds 0 for visible positions and a large negative value for masked ones;
/// it broadcasts to (batch, 1, q_len, k_len) (or to (batch, heads, q_len, k_len) without GQA).
pub fn sdpa(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    attention(q, k, v, bias, false, scale, None)
}

/// [`sdpa`] for a causal decoder whose `bias` already masks every key after its query
/// (key j for query i when j > i + k_len − q_len): the fused kernel may then skip those keys'
/// tiles instead of adding the mask to them.
pub fn sdpa_causal(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    attention(q, k, v, bias, true, scale, None)
}

/// [`sdpa`] with Gemma 2's attention soft-capping: scores `s = q·kᵀ·scale` become
/// `tanh(s / cap) · cap` before `bias` is added. Composed of differentiable primitives.
pub fn sdpa_softcapped(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
    cap: f64,
) -> Result<Tensor> {
    attention(q, k, v, bias, false, scale, Some(cap))
}

fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    causal: bool,
    scale: f64,
    softcap: Option<f64>,
) -> Result<Tensor> {
    let (b, heads, q_len, d) = q.dims4()?;
    let (_, kv_heads, k_len, _) = k.dims4()?;
    v.dims4()?;
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        candle_core::bail!("sdpa: {heads} query heads are not a multiple of {kv_heads} kv heads")
    }
    #[cfg(feature = "cuda")]
    if q.device().is_cuda()
        && q_len == 1
        && bias.is_none()
        && softcap.is_none()
        && d % 32 == 0
        && d <= 256
        && !(q.track_op() || k.track_op() || v.track_op())
    {
        // One fused kernel over the cache views; falls through when their layout is unusual.
        if let Ok(out) = super::cuda::fused::decode_attention(&q.contiguous()?, k, v, scale) {
            return Ok(out);
        }
    }
    // Prompts, encoders and training: flash attention (scores never leave the chip),
    // differentiable in q, k and v.
    #[cfg(feature = "cuda")]
    if q.device().is_cuda() && q_len > 1 && matches!(d, 32 | 64 | 128) && softcap.is_none() {
        return super::cuda::flash::flash_attention(q, k, v, bias, causal, scale);
    }
    let _ = causal; // the composed path below applies the mask through `bias`
    let n_rep = heads / kv_heads;
    let (k, v) = (batched_view(k)?, batched_view(v)?);
    // Query heads sharing a kv head are adjacent, so grouping them into the row dimension is a
    // free reshape and K/V are never repeated.
    let q = q.contiguous()?.reshape((b, kv_heads, n_rep * q_len, d))?;
    let scores = (q.matmul(&k.t()?)?.to_dtype(DType::F32)? * scale)?;
    let scores = match softcap {
        Some(cap) => ((scores / cap)?.tanh()? * cap)?,
        None => scores,
    };
    let scores = match bias {
        None => scores,
        Some(bias) if n_rep == 1 => scores.broadcast_add(&bias.to_dtype(DType::F32)?)?,
        Some(bias) => {
            if bias.rank() != 4 || bias.dim(1)? != 1 {
                candle_core::bail!(
                    "sdpa: a GQA bias must be (batch, 1, q_len, k_len), got {:?}",
                    bias.shape()
                )
            }
            scores
                .reshape((b, kv_heads, n_rep, q_len, k_len))?
                .broadcast_add(&bias.to_dtype(DType::F32)?.unsqueeze(2)?)?
                .reshape((b, kv_heads, n_rep * q_len, k_len))?
        }
    };
    let probs = softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
    probs.matmul(&v)?.reshape((b, heads, q_len, d))
}

/// `t` itself when its (batch, heads) dims fold into one matmul batch stride (a KV cache view
/// does), else a contiguous copy (e.g. keys transposed straight out of a projection).
fn batched_view(t: &Tensor) -> Result<Tensor> {
    let (dims, stride) = (t.dims(), t.stride());
    let foldable = dims[0] == 1 || dims[1] == 1 || stride[0] == stride[1] * dims[1];
    // candle's CUDA matmul also needs each row's keys adjacent to the next row's (a cache view
    // has that; keys sliced out of a fused q/k/v projection don't).
    let rows_ok = (stride[3] == 1 || dims[3] == 1)
        && (!t.device().is_cuda() || stride[2] == dims[3] || dims[2] == 1);
    if foldable && rows_ok {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}

/// Reference: K/V repeated to every query head, plain matmuls, softmax in f32.
pub fn sdpa_reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let heads = q.dim(1)?;
    let repeat = |t: &Tensor| -> Result<Tensor> {
        let (b, kv_heads, len, d) = t.dims4()?;
        t.unsqueeze(2)?
            .broadcast_as((b, kv_heads, heads / kv_heads, len, d))?
            .reshape((b, heads, len, d))
    };
    let (k, v) = (repeat(k)?, repeat(v)?);
    let scores = (q.contiguous()?.matmul(&k.t()?)? * scale)?;
    let scores = match bias {
        Some(b) => scores.broadcast_add(&b.to_dtype(scores.dtype())?)?,
        None => scores,
    };
    softmax_last_dim_reference(&scores)?.matmul(&v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::max_diff;
    use candle_core::Device;

    fn mask_from(len: usize, masked: usize, dev: &Device) -> Result<Tensor> {
        Tensor::arange(0u32, len as u32, dev)?
            .ge(masked as u32)?
            .to_dtype(DType::F32)?
            .affine(-1e9, 0.0)
    }

    #[test]
    fn softcapped_scores_are_tanh_capped() -> Result<()> {
        let dev = Device::Cpu;
        let q = (Tensor::randn(0f32, 1.0, (1, 4, 5, 8), &dev)? * 4.0)?;
        let k = (Tensor::randn(0f32, 1.0, (1, 2, 5, 8), &dev)? * 4.0)?;
        let v = Tensor::randn(0f32, 1.0, (1, 2, 5, 8), &dev)?;
        let (scale, cap) = (0.3, 2.0);
        let got = sdpa_softcapped(&q, &k, &v, None, scale, cap)?;
        // Reference: K/V repeated, capped scores, softmax.
        let rep = |t: &Tensor| -> Result<Tensor> {
            t.unsqueeze(2)?
                .broadcast_as((1, 2, 2, 5, 8))?
                .reshape((1, 4, 5, 8))
        };
        let s = (q.matmul(&rep(&k)?.t()?)? * scale)?;
        let s = ((s / cap)?.tanh()? * cap)?;
        let want = softmax_last_dim_reference(&s)?.matmul(&rep(&v)?)?;
        let diff = max_diff(&got, &want)?;
        assert!(diff < 1e-5, "max abs diff {diff}");
        // And it differs from the uncapped attention on these large scores.
        let plain = sdpa(&q, &k, &v, None, scale)?;
        assert!(max_diff(&got, &plain)? > 1e-3);
        Ok(())
    }

    #[test]
    fn fast_matches_reference_with_padding_bias() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 3, 11, 8), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (2, 3, 11, 8), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (2, 3, 11, 8), &dev)?;
        let bias = mask_from(11, 9, &dev)?.reshape((1, 1, 1, 11))?;
        let fast = sdpa(&q, &k, &v, Some(&bias), 0.35)?;
        let reference = sdpa_reference(&q, &k, &v, Some(&bias), 0.35)?;
        let diff = max_diff(&fast, &reference)?;
        assert!(diff < 1e-5, "max abs diff {diff}");
        Ok(())
    }

    #[test]
    fn gqa_over_strided_cache_views_matches_reference() -> Result<()> {
        let dev = Device::Cpu;
        // 6 query heads over 2 kv heads; K/V are the first 11 of 16 cache slots; q is strided.
        let q = Tensor::randn(0f32, 1.0, (2, 5, 6, 8), &dev)?.transpose(1, 2)?;
        let cache_k = Tensor::randn(0f32, 1.0, (2, 2, 16, 8), &dev)?;
        let cache_v = Tensor::randn(0f32, 1.0, (2, 2, 16, 8), &dev)?;
        let (k, v) = (cache_k.narrow(2, 0, 11)?, cache_v.narrow(2, 0, 11)?);
        let bias = Tensor::stack(&[mask_from(11, 8, &dev)?, mask_from(11, 11, &dev)?], 0)?
            .reshape((2, 1, 1, 11))?
            .broadcast_as((2, 1, 5, 11))?
            .contiguous()?;
        for bias in [None, Some(&bias)] {
            let fast = sdpa(&q, &k, &v, bias, 0.3)?;
            let reference = sdpa_reference(&q, &k, &v, bias, 0.3)?;
            let diff = max_diff(&fast, &reference)?;
            assert!(diff < 1e-5, "max abs diff {diff}");
        }
        // One query token (decode) and a half-precision run.
        let q1 = q.narrow(2, 4, 1)?;
        let diff = max_diff(
            &sdpa(&q1, &k, &v, None, 0.3)?,
            &sdpa_reference(&q1, &k, &v, None, 0.3)?,
        )?;
        assert!(diff < 1e-5, "decode max abs diff {diff}");
        let half = |t: &Tensor| t.to_dtype(DType::F16);
        let h = sdpa(&half(&q1)?, &half(&k)?, &half(&v)?, None, 0.3)?;
        let diff = max_diff(&h, &sdpa_reference(&q1, &k, &v, None, 0.3)?)?;
        assert!(diff < 1e-2, "f16 max abs diff {diff}");
        Ok(())
    }
}
