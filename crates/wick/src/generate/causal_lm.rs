//! A Llama-family model together with its KV cache, as the generation loop sees it.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::generate::LanguageModel;
use crate::models::DecoderModel;
use crate::nn::kv_cache::KvCache;

/// First cache allocation; it doubles when a sequence outgrows it (up to the context length).
const INITIAL_CACHE: usize = 512;
/// Prompts are fed in chunks of this many tokens so attention scores stay small.
const PREFILL_CHUNK: usize = 512;

pub struct CachedDecoder {
    model: DecoderModel,
    cache: KvCache,
    context: usize,
}

impl CachedDecoder {
    /// `context` caps the sequence length (defaults to the config's max_position_embeddings).
    pub fn new(model: DecoderModel, context: Option<usize>) -> Result<Self> {
        let context = context
            .unwrap_or(model.config().max_position_embeddings)
            .max(1);
        let cache = model.new_cache(1, INITIAL_CACHE.min(context))?;
        Ok(CachedDecoder {
            model,
            cache,
            context,
        })
    }

    pub fn model(&self) -> &DecoderModel {
        &self.model
    }

    /// The model without its cache (e.g. to attach LoRA adapters for training).
    pub fn into_model(self) -> DecoderModel {
        self.model
    }

    fn ensure_room(&mut self, extra: usize) -> Result<()> {
        let needed = self.cache.len() + extra;
        if needed > self.context {
            return Err(Error::InvalidArgument {
                name: "tokens",
                message: format!("{needed} tokens exceed the context length {}", self.context),
            });
        }
        if needed > self.cache.max_len() {
            let grown = (self.cache.max_len() * 2).max(needed).min(self.context);
            self.cache.grow(grown)?;
        }
        Ok(())
    }
}

impl LanguageModel for CachedDecoder {
    fn forward_last(&mut self, tokens: &[u32], start_pos: usize) -> Result<Vec<f32>> {
        if start_pos != self.cache.len() {
            return Err(Error::InvalidArgument {
                name: "start_pos",
                message: format!(
                    "{start_pos} but the cache holds {} tokens (reset between sequences)",
                    self.cache.len()
                ),
            });
        }
        if tokens.is_empty() {
            return Err(Error::InvalidArgument {
                name: "tokens",
                message: "nothing to feed the model".into(),
            });
        }
        self.ensure_room(tokens.len())?;
        let device = self.model.device().clone();
        let mut last = None;
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            let ids = Tensor::new(chunk, &device)?.unsqueeze(0)?;
            last = Some(self.model.forward_last(&ids, None, &mut self.cache)?);
        }
        let logits = last.ok_or_else(|| Error::Unsupported("empty prompt".into()))?;
        Ok(logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1()?)
    }

    fn context_length(&self) -> usize {
        self.context
    }

    fn reset(&mut self) -> Result<()> {
        self.cache.reset();
        Ok(())
    }
}
