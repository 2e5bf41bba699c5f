//! Text generation: the sampler chain, stop conditions, streaming detokenization and the loop
//! that drives a model through them.
//!
//! The loop is generic over [`LanguageModel`], a small trait a decoder model implements together
//! with its (caller-owned) KV cache, so this module never depends on a model's internals.

pub mod causal_lm;
pub mod config;
pub mod load;
pub mod perplexity;
pub mod sampler;
pub mod score;
pub mod stop;
pub mod stream;

use std::ops::ControlFlow;
use std::time::Instant;

use tokenizers::Tokenizer;

pub use config::GenerationDefaults;
pub use sampler::{Sampler, SamplingParams, TokenHistory};
pub use stop::{FinishReason, StopConditions, StopStrings};
pub use stream::IncrementalDecoder;

use crate::error::{Error, Result};

/// A decoder that turns tokens into next-token logits, keeping its own KV cache between calls.
pub trait LanguageModel {
    /// Logits (f32, one per vocabulary entry) for the last position after feeding `tokens` at
    /// positions `start_pos..start_pos + tokens.len()`; positions before `start_pos` are already
    /// in the cache.
    fn forward_last(&mut self, tokens: &[u32], start_pos: usize) -> Result<Vec<f32>>;
    /// The most positions the model can attend over.
    fn context_length(&self) -> usize;
    /// Empties the cache for a new sequence.
    fn reset(&mut self) -> Result<()>;
}

impl<M: LanguageModel + ?Sized> LanguageModel for Box<M> {
    fn forward_last(&mut self, tokens: &[u32], start_pos: usize) -> Result<Vec<f32>> {
        (**self).forward_last(tokens, start_pos)
    }
    fn context_length(&self) -> usize {
        (**self).context_length()
    }
    fn reset(&mut self) -> Result<()> {
        (**self).reset()
    }
}

/// Everything one generation call needs besides the model, tokenizer and prompt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    pub sampling: SamplingParams,
    /// Most tokens to generate; `None` runs until EOS, a stop string or the context is full.
    pub max_tokens: Option<usize>,
    /// Strings that end generation; they are never part of the output.
    pub stop: Vec<String>,
    /// Token ids that end generation (from generation_config.json or GGUF metadata).
    pub eos_token_ids: Vec<u32>,
    /// When the prompt does not fit the context, keep its last tokens instead of failing.
    pub truncate_prompt: bool,
}

impl GenerationConfig {
    /// Checks every user-supplied value; `generate` calls this before touching the model.
    pub fn validate(&self) -> Result<()> {
        self.sampling.validate()?;
        StopConditions::new(&self.eos_token_ids, self.max_tokens, &self.stop).map(|_| ())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOutput {
    /// Every sampled token, a final EOS token included.
    pub token_ids: Vec<u32>,
    /// The completion exactly as streamed: no EOS text, nothing from a stop string on.
    pub text: String,
    pub finish_reason: FinishReason,
    /// Prompt tokens fed to the model (after truncation).
    pub prompt_tokens: usize,
    /// Prompt tokens dropped from the start by `truncate_prompt`.
    pub truncated_tokens: usize,
    /// The sampler's seed, so a run with a random seed can be repeated.
    pub seed: u64,
    /// Time to run the prompt through the model.
    pub prefill_secs: f64,
    /// Time from the prompt's logits to the end: sampling, decode steps and detokenization.
    pub decode_secs: f64,
}

impl GenerationOutput {
    pub fn prefill_tokens_per_sec(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs.max(1e-9)
    }

    /// Tokens per second of the decode steps (the first token comes from the prefill logits).
    pub fn decode_tokens_per_sec(&self) -> f64 {
        self.token_ids.len().saturating_sub(1) as f64 / self.decode_secs.max(1e-9)
    }
}

/// Generates a completion of `prompt_ids`, calling `on_delta` with each new piece of text (always
/// whole UTF-8 characters, never part of a stop string).
///
/// The model is reset first and the prompt is fed in one call. The prompt must leave room for at
/// least one token in the context; otherwise this fails unless `truncate_prompt` is set, which
/// keeps the last `context - reserve` tokens, `reserve` being `max_tokens` (a quarter of the
/// context when unset), at most half the context.
pub fn generate<M: LanguageModel + ?Sized>(
    model: &mut M,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    config: &GenerationConfig,
    mut on_delta: impl FnMut(&str),
) -> Result<GenerationOutput> {
    generate_until(model, tokenizer, prompt_ids, config, |delta| {
        on_delta(delta);
        ControlFlow::Continue(())
    })
}

/// [`generate`] whose callback can end generation early (a closed pipe, a client that went away)
/// by returning `Break`; the output then ends with [`FinishReason::Cancelled`].
pub fn generate_until<M: LanguageModel + ?Sized>(
    model: &mut M,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    config: &GenerationConfig,
    mut on_delta: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<GenerationOutput> {
    config.validate()?;
    let mut sampler = Sampler::new(&config.sampling)?;
    let mut stop = StopConditions::new(&config.eos_token_ids, config.max_tokens, &config.stop)?;
    let context = model.context_length();
    let prompt = fit_prompt(prompt_ids, context, config)?;

    model.reset()?;
    let start = Instant::now();
    let mut logits = model.forward_last(prompt, 0)?;
    let prefill_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut decoder = IncrementalDecoder::new(tokenizer, prompt);
    let mut generated: Vec<u32> = Vec::new();
    let mut text = String::new();
    let mut cancelled = false;
    let mut emit = |piece: &str, text: &mut String| {
        if !piece.is_empty() && !cancelled {
            text.push_str(piece);
            cancelled = on_delta(piece).is_break();
        }
        cancelled
    };
    let mut finish_reason = loop {
        let history = TokenHistory {
            prompt,
            generated: &generated,
        };
        let id = sampler.sample(&mut logits, &history)?;
        generated.push(id);
        if stop.is_eos(id) {
            break FinishReason::Eos;
        }
        let piece = decoder.push(id)?;
        let out = stop.strings_mut().push(&piece);
        if emit(&out.emit, &mut text) {
            break FinishReason::Cancelled;
        }
        if out.stopped {
            break FinishReason::Stop;
        }
        if stop.budget_spent(generated.len()) || prompt.len() + generated.len() >= context {
            break FinishReason::Length;
        }
        logits = model.forward_last(&[id], prompt.len() + generated.len() - 1)?;
    };
    if matches!(finish_reason, FinishReason::Eos | FinishReason::Length) {
        // Incomplete characters and held-back text; a stop string may still complete here.
        let out = stop.strings_mut().push(&decoder.finish()?);
        emit(&out.emit, &mut text);
        if out.stopped {
            finish_reason = FinishReason::Stop;
        } else {
            emit(&stop.strings_mut().finish(), &mut text);
        }
    }
    Ok(GenerationOutput {
        token_ids: generated,
        text,
        finish_reason,
        prompt_tokens: prompt.len(),
        truncated_tokens: prompt_ids.len() - prompt.len(),
        seed: sampler.seed(),
        prefill_secs,
        decode_secs: start.elapsed().as_secs_f64(),
    })
}

/// The prompt itself when it leaves room to generate, else its tail (if allowed) or an error.
fn fit_prompt<'p>(
    prompt: &'p [u32],
    context: usize,
    config: &GenerationConfig,
) -> Result<&'p [u32]> {
    if prompt.is_empty() {
        return Err(Error::InvalidArgument {
            name: "prompt",
            message: "the prompt has no tokens".into(),
        });
    }
    if context < 2 {
        return Err(Error::InvalidArgument {
            name: "context_length",
            message: format!("a context of {context} tokens leaves no room to generate"),
        });
    }
    if prompt.len() < context {
        return Ok(prompt);
    }
    if !config.truncate_prompt {
        return Err(Error::InvalidArgument {
            name: "prompt",
            message: format!(
                "{} tokens do not fit the model's context of {context} tokens with room to \
                 generate; shorten it or allow truncation (truncate_prompt, --truncate-prompt)",
                prompt.len()
            ),
        });
    }
    let reserve = config
        .max_tokens
        .unwrap_or(context / 4)
        .clamp(1, context / 2);
    Ok(&prompt[prompt.len() - (context - reserve)..])
}
