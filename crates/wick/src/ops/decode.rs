//! The decode fast path of the Llama family: one whole greedy decode step (embedding, every
//! layer, final norm, LM head, argmax) recorded once as a CUDA graph over static buffers and the
//! KV cache, then replayed per token. Models hand over their weights as [`DecoderWeights`];
//! whether the fast path exists is decided here (CUDA builds on a CUDA device), never in models.

use candle_core::Tensor;

use crate::error::{Error, Result};

/// One decoder layer's weights in Hugging Face layout (`weight` is out × in).
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub input_norm: Tensor,
    pub post_norm: Tensor,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    /// q/k/v biases (Qwen2), all three or none.
    pub qkv_bias: Option<(Tensor, Tensor, Tensor)>,
    pub o: Tensor,
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
}

/// What the decode step needs from a Llama-family model with dense, unadapted weights, full
/// attention and no o/mlp biases.
#[derive(Clone, Debug)]
pub struct DecoderWeights {
    pub embed: Tensor,
    pub layers: Vec<LayerWeights>,
    pub norm: Tensor,
    pub lm_head: Tensor,
    /// (head_dim / 2) rotary inverse frequencies, f32.
    pub inv_freq: Tensor,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f64,
}

/// A greedy decoder that replays a captured decode step. Create it after the prefill, with the
/// first generated token of each sequence; each [`GraphDecoder::step`] appends that token to the
/// cache and produces the next one.
pub struct GraphDecoder {
    #[cfg(feature = "cuda")]
    inner: super::cuda::decode_graph::CudaGraphDecoder,
}

impl GraphDecoder {
    /// `caches`: each layer's (K, V) cache buffers, (batch, kv_heads, max_len, head_dim), of
    /// which the first `filled` columns hold the prompt with no padding (a KV cache's
    /// `buffers(layer)` and `len()` when every sequence is as long as the cache). `next`
    /// (batch,) u32 on the model's device: the tokens to feed first.
    pub fn new(
        weights: &DecoderWeights,
        caches: &[(Tensor, Tensor)],
        filled: usize,
        next: &Tensor,
    ) -> Result<Self> {
        #[cfg(feature = "cuda")]
        if next.device().is_cuda() {
            let inner =
                super::cuda::decode_graph::CudaGraphDecoder::new(weights, caches, filled, next)?;
            return Ok(GraphDecoder { inner });
        }
        let _ = (weights, caches, filled, next);
        Err(Error::Unsupported(
            "the graph decode path needs a CUDA build and a CUDA device".into(),
        ))
    }

    /// Runs one decode step (capturing the graph on the first call, replaying it after).
    pub fn step(&mut self) -> Result<()> {
        #[cfg(feature = "cuda")]
        return self.inner.step();
        #[cfg(not(feature = "cuda"))]
        Err(Error::Unsupported(
            "no graph decode path in this build".into(),
        ))
    }

    /// The tokens the last step produced (one per sequence), read back to the host.
    pub fn tokens(&self) -> Result<Vec<u32>> {
        #[cfg(feature = "cuda")]
        return self.inner.tokens();
        #[cfg(not(feature = "cuda"))]
        Err(Error::Unsupported(
            "no graph decode path in this build".into(),
        ))
    }

    /// Steps still free in the cache.
    pub fn remaining(&self) -> usize {
        #[cfg(feature = "cuda")]
        return self.inner.remaining();
        #[cfg(not(feature = "cuda"))]
        0
    }
}
