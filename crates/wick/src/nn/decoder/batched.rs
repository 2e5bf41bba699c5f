//! One decode step for several independent sequences at once, each with its own KV cache: the
//! entry point for continuous batching, where sequences join and leave between steps and so
//! cannot share the column layout of one batched cache.
//!
//! Everything position-free (embedding, norms, projections, MLP, LM head) runs on the stacked
//! (n, 1, hidden) activations; rotary embeddings take each sequence's own position, and
//! attention runs per sequence against its own cache.

use candle_core::Tensor;

use super::{invalid, DecoderModel};
use crate::error::Result;
use crate::nn::KvCache;

impl DecoderModel {
    /// Next-token logits (n, vocab) after feeding `tokens[i]` to the sequence whose cache is
    /// `caches[i]` (a batch-1 cache, prefilled with [`DecoderModel::forward`]). Each row equals
    /// what a batch-1 `forward_last` on that sequence alone gives, up to float rounding.
    pub fn forward_decode(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        super::on_pool(&self.device, || self.forward_decode_on_pool(tokens, caches))
    }

    fn forward_decode_on_pool(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
    ) -> Result<Tensor> {
        let n = tokens.len();
        if n == 0 || caches.len() != n {
            let msg = format!(
                "{n} tokens for {} caches (need one each, n > 0)",
                caches.len()
            );
            return Err(invalid("caches", msg));
        }
        let mut steps = Vec::with_capacity(n);
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
            steps.push(cache.begin(1, 1, None)?);
            positions.push(cache.seq_lens()[0] as u32);
        }
        let positions = Tensor::from_vec(positions, (n, 1), &self.device)?;
        let seq_lens: Vec<usize> = steps.iter().map(|s| s.seq_lens()[0]).collect();
        if self.has_long_rope() {
            // Planned steps stay valid: a refill gives the cache back its columns and positions.
            for ((cache, step), (&len, &token)) in caches
                .iter_mut()
                .zip(&steps)
                .zip(seq_lens.iter().zip(tokens))
            {
                self.refill_if_crossing(cache, &[len])?;
                cache.record_ids(step, &[token])?;
            }
        }
        // cos/sin of every kind at the n positions (rows are per sequence).
        let stacked = self.kind_inputs(&steps[0], &positions, &seq_lens)?;
        // Each sequence's mask per kind.
        let masks = steps
            .iter()
            .map(|s| {
                self.kinds
                    .iter()
                    .map(|k| s.attention_bias(k.window, &self.device))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let ids = Tensor::from_vec(tokens.to_vec(), (n, 1), &self.device)?;
        let mut x = self.embed(&ids)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let seqs: Vec<_> = masks
                .iter()
                .zip(&steps)
                .map(|(m, s)| (m[layer.kind].as_ref(), s))
                .collect();
            let rope = stacked[layer.kind].rope.as_ref();
            x = layer.forward_decode(&x, rope, &seqs, caches, i, &self.cfg)?;
        }
        for (cache, step) in caches.iter_mut().zip(steps) {
            cache.commit(step);
        }
        Ok(self.head(&x)?.squeeze(1)?)
    }
}
