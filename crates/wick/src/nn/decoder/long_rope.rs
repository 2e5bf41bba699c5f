//! LongRoPE in a cached decoder. Its rotary table depends on the sequence length (short factors
//! up to `original_max_position_embeddings` tokens, long ones beyond), and a full forward of a
//! long sequence computes every position with the long table, in every layer. What the cache
//! holds for a sequence that was short is therefore stale once a step takes it past the
//! threshold: not only its layer-0 keys (a rotation would fix those) but every later layer's
//! keys and values, which depend on attention computed with the short table. So at that step
//! the cached columns are recomputed from their recorded token ids with the tables of the new
//! length (causal attention makes that exactly the full forward's keys and values), then the
//! step runs as usual: prefill + cached decode equals the full forward. transformers' generate()
//! does the same by dropping its cache at that step (Phi3ForCausalLM.prepare_inputs_for_generation).
//! It happens once per sequence (at token 4097 of Phi-3-mini-128k).

use candle_core::Tensor;

use super::{DecoderModel, Rows};
use crate::error::Result;
use crate::nn::KvCache;

impl DecoderModel {
    /// Whether some attention kind has LongRoPE's two tables (then the cache records token ids).
    pub(super) fn has_long_rope(&self) -> bool {
        self.kinds.iter().any(|k| {
            k.rope
                .as_ref()
                .is_some_and(|r| r.long_threshold().is_some())
        })
    }

    /// Recomputes everything `cache` holds, with the rotary tables of lengths `after`, when a
    /// step takes some sequence from the cache's length to `after[b]` across a LongRoPE
    /// threshold. Sequences that do not cross get back what they had (their table is the same
    /// at both lengths).
    pub(super) fn refill_if_crossing(&self, cache: &mut KvCache, after: &[usize]) -> Result<()> {
        let before = cache.seq_lens();
        let crosses = self
            .kinds
            .iter()
            .filter_map(|k| k.rope.as_ref()?.long_threshold())
            .any(|t| before.iter().zip(after).any(|(&b, &a)| b <= t && a > t));
        if cache.is_empty() || !crosses {
            return Ok(());
        }
        let (batch, len) = (cache.batch(), cache.len());
        let (ids, mask) = cache.history();
        let ids = Tensor::from_vec(ids, (batch, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (batch, len), &self.device)?;
        cache.reset();
        self.run_with(&ids, Some(&mask), Some(cache), Rows::Last, Some(after))?;
        Ok(())
    }
}
