//! One decode step for several independent sequences at once, each with its own KV cache: the
//! entry point for continuous batching, where sequences join and leave between steps and so
//! cannot share the column layout of one batched cache.
//!
//! Everything position-free (embedding, norms, projections, MLP, LM head) runs on the stacked
//! (n, 1, hidden) activations; rotary embeddings take each sequence's own position, and
//! attention runs per sequence against its own cache.

use candle_core::{Module, Tensor};

use super::{invalid, DecoderLayer, LlamaConfig, LlamaModel};
use crate::error::Result;
use crate::nn::{KvCache, Step};
use crate::ops::attention::sdpa;
use crate::ops::rope::{cos_sin, rope};
use crate::ops::swiglu::swiglu;

/// Per-sequence attention inputs of one step.
struct SeqStep {
    step: Step,
    full_bias: Option<Tensor>,
    window_bias: Option<Tensor>,
}

impl LlamaModel {
    /// Next-token logits (n, vocab) after feeding `tokens[i]` to the sequence whose cache is
    /// `caches[i]` (a batch-1 cache, prefilled with [`LlamaModel::forward`]). Each row equals
    /// what a batch-1 `forward_last` on that sequence alone gives, up to float rounding.
    pub fn forward_decode(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let n = tokens.len();
        if n == 0 || caches.len() != n {
            let msg = format!(
                "{n} tokens for {} caches (need one each, n > 0)",
                caches.len()
            );
            return Err(invalid("caches", msg));
        }
        let window = self.layers.iter().find_map(|l| l.window);
        let any_full = self.layers.iter().any(|l| l.window.is_none());
        let mut seqs = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        for cache in caches.iter() {
            if cache.batch() != 1 || cache.num_layers() != self.layers.len() {
                let msg = format!(
                    "each cache must hold one sequence of {} layers (got batch {}, {} layers)",
                    self.layers.len(),
                    cache.batch(),
                    cache.num_layers()
                );
                return Err(invalid("caches", msg));
            }
            let step = cache.begin(1, 1, None)?;
            positions.push(cache.seq_lens()[0] as u32);
            let full_bias = match any_full {
                true => step.attention_bias(None, &self.device)?,
                false => None,
            };
            let window_bias = match window {
                Some(w) => step.attention_bias(Some(w), &self.device)?,
                None => None,
            };
            seqs.push(SeqStep {
                step,
                full_bias,
                window_bias,
            });
        }
        let positions = Tensor::from_vec(positions, (n, 1), &self.device)?;
        let (cos, sin) = cos_sin(&self.inv_freq, &positions, self.dtype)?;
        let ids = Tensor::from_vec(tokens.to_vec(), (n, 1), &self.device)?;
        let mut x = self.embed_tokens.forward(&ids)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward_decode(&x, &cos, &sin, &seqs, caches, i, &self.cfg)?;
        }
        for (cache, seq) in caches.iter_mut().zip(seqs) {
            cache.commit(seq.step);
        }
        let logits = self.lm_head.forward(&self.norm.forward(&x)?)?;
        Ok(logits.squeeze(1)?)
    }
}

impl DecoderLayer {
    /// [`DecoderLayer::forward`] for n sequences of one new token each (x is (n, 1, hidden)).
    #[allow(clippy::too_many_arguments)]
    fn forward_decode(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        seqs: &[SeqStep],
        caches: &mut [&mut KvCache],
        layer: usize,
        cfg: &LlamaConfig,
    ) -> Result<Tensor> {
        let n = seqs.len();
        let (heads, kv_heads, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let h = self.input_layernorm.forward(x)?;
        let split = |t: Tensor, heads: usize| t.reshape((n, 1, heads, hd))?.transpose(1, 2);
        let q = rope(&split(self.q_proj.forward(&h)?, heads)?, cos, sin)?;
        let k = rope(&split(self.k_proj.forward(&h)?, kv_heads)?, cos, sin)?;
        let v = split(self.v_proj.forward(&h)?, kv_heads)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut outs = Vec::with_capacity(n);
        for (i, (seq, cache)) in seqs.iter().zip(caches.iter_mut()).enumerate() {
            let (k_all, v_all) =
                cache.write(layer, &seq.step, &k.narrow(0, i, 1)?, &v.narrow(0, i, 1)?)?;
            let bias = match self.window {
                Some(_) => seq.window_bias.as_ref(),
                None => seq.full_bias.as_ref(),
            };
            outs.push(sdpa(&q.narrow(0, i, 1)?, &k_all, &v_all, bias, scale)?);
        }
        let attn = Tensor::cat(&outs, 0)?
            .transpose(1, 2)?
            .reshape((n, 1, heads * hd))?;
        let x = (x + self.o_proj.forward(&attn)?)?;
        let h = self.post_attention_layernorm.forward(&x)?;
        let mlp = swiglu(&self.gate_proj.forward(&h)?, &self.up_proj.forward(&h)?)?;
        Ok((x + self.down_proj.forward(&mlp)?)?)
    }
}
