//! Sampling as a chain of small logit processors over one sequence's logits.
//!
//! The chain runs in the order transformers' `generate()` and vLLM use:
//! repetition penalty → frequency/presence penalties → logit bias → temperature → top-k → top-p →
//! min-p → draw. Filters remove tokens by setting their logit to `-inf`, so each one sees the
//! survivors of the previous one (top-p and min-p measure probabilities after temperature).
//! Temperature 0 is greedy: the processed logits' argmax, ties going to the lowest id.
//! Draws use ChaCha20 (`rand_chacha`, value-stable across releases), so a seed gives the same
//! tokens on every run and platform for the same logits.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// User-facing sampling settings; [`SamplingParams::validate`] checks them before any work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Divides the logits; 0 means greedy decoding.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 turns the filter off.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (0 < p ≤ 1).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0 ≤ p ≤ 1).
    pub min_p: f32,
    /// transformers' repetition penalty over prompt and generated tokens; 1 turns it off.
    pub repetition_penalty: f32,
    /// OpenAI's: subtracts `count * frequency_penalty` for tokens generated so far (-2..=2).
    pub frequency_penalty: f32,
    /// OpenAI's: subtracts `presence_penalty` once from every token generated so far (-2..=2).
    pub presence_penalty: f32,
    /// Added to the logit of each token id; `-inf` bans a token.
    pub logit_bias: Vec<(u32, f32)>,
    /// Fixes the random draws; `None` picks a random seed (reported by [`Sampler::seed`]).
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    /// Plain sampling from the model's distribution (OpenAI's defaults).
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding with no penalties.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        check(
            "temperature",
            self.temperature,
            self.temperature >= 0.0,
            "must be ≥ 0 (0 = greedy)",
        )?;
        check(
            "top_p",
            self.top_p,
            self.top_p > 0.0 && self.top_p <= 1.0,
            "must be in (0, 1] (1 = off)",
        )?;
        check(
            "min_p",
            self.min_p,
            (0.0..=1.0).contains(&self.min_p),
            "must be in [0, 1] (0 = off)",
        )?;
        check(
            "repetition_penalty",
            self.repetition_penalty,
            self.repetition_penalty > 0.0,
            "must be > 0 (1 = off)",
        )?;
        for (name, v) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            check(
                name,
                v,
                (-2.0..=2.0).contains(&v),
                "must be in [-2, 2] (0 = off)",
            )?;
        }
        for &(id, bias) in &self.logit_bias {
            if bias.is_nan() || bias == f32::INFINITY {
                return Err(Error::InvalidArgument {
                    name: "logit_bias",
                    message: format!("bias {bias} for token {id} must be a number or -inf"),
                });
            }
        }
        Ok(())
    }
}

fn check(name: &'static str, value: f32, ok: bool, rule: &str) -> Result<()> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            name,
            message: format!("{rule}, got {value}"),
        })
    }
}

/// The tokens a processor may look at: the prompt and what has been generated after it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenHistory<'a> {
    pub prompt: &'a [u32],
    pub generated: &'a [u32],
}

/// One step of the chain; modifies the logits of one sequence in place.
pub trait LogitsProcessor: Send {
    fn process(&self, logits: &mut [f32], history: &TokenHistory<'_>) -> Result<()>;
}

/// transformers' `RepetitionPenaltyLogitsProcessor`: every distinct token of prompt + generated
/// has a positive logit divided and a negative one multiplied by the penalty, so a penalty > 1
/// always lowers the token (a negative logit is pushed further down, never up).
#[derive(Debug, Clone, Copy)]
pub struct RepetitionPenalty(pub f32);

impl LogitsProcessor for RepetitionPenalty {
    fn process(&self, logits: &mut [f32], history: &TokenHistory<'_>) -> Result<()> {
        let mut seen = vec![false; logits.len()];
        for &id in history.prompt.iter().chain(history.generated) {
            // Ids outside the logits cannot be penalised (a padded vocabulary is never smaller).
            if let Some(s) = seen.get_mut(id as usize) {
                *s = true;
            }
        }
        for (l, _) in logits.iter_mut().zip(&seen).filter(|(_, &s)| s) {
            *l = if *l < 0.0 { *l * self.0 } else { *l / self.0 };
        }
        Ok(())
    }
}

/// OpenAI's frequency and presence penalties over the generated tokens only (vLLM does the same):
/// `logit -= count * frequency + (count > 0) * presence`.
#[derive(Debug, Clone, Copy)]
pub struct FrequencyPresencePenalty {
    pub frequency: f32,
    pub presence: f32,
}

impl LogitsProcessor for FrequencyPresencePenalty {
    fn process(&self, logits: &mut [f32], history: &TokenHistory<'_>) -> Result<()> {
        let mut counts = std::collections::HashMap::<u32, u32>::new();
        for &id in history.generated {
            *counts.entry(id).or_default() += 1;
        }
        for (id, count) in counts {
            if let Some(l) = logits.get_mut(id as usize) {
                *l -= count as f32 * self.frequency + self.presence;
            }
        }
        Ok(())
    }
}

/// Adds a fixed bias to chosen token ids (an id outside the vocabulary is an error).
#[derive(Debug, Clone)]
pub struct LogitBias(pub Vec<(u32, f32)>);

impl LogitsProcessor for LogitBias {
    fn process(&self, logits: &mut [f32], _history: &TokenHistory<'_>) -> Result<()> {
        let vocab = logits.len();
        for &(id, bias) in &self.0 {
            let l = logits
                .get_mut(id as usize)
                .ok_or_else(|| Error::InvalidArgument {
                    name: "logit_bias",
                    message: format!("token id {id} is outside the vocabulary of {vocab} tokens"),
                })?;
            *l += bias;
        }
        Ok(())
    }
}

/// Divides logits by the temperature (> 0). A result that would overflow is clamped so a tiny
/// temperature degrades to greedy rather than to infinities.
#[derive(Debug, Clone, Copy)]
pub struct Temperature(pub f32);

impl LogitsProcessor for Temperature {
    fn process(&self, logits: &mut [f32], _history: &TokenHistory<'_>) -> Result<()> {
        for l in logits.iter_mut().filter(|l| l.is_finite()) {
            *l = (*l / self.0).clamp(f32::MIN, f32::MAX);
        }
        Ok(())
    }
}

/// Keeps exactly the `k` best tokens; ties at the boundary go to the lowest ids (llama.cpp keeps
/// exactly k too; transformers would keep every token tied with the k-th).
#[derive(Debug, Clone, Copy)]
pub struct TopK(pub usize);

impl LogitsProcessor for TopK {
    fn process(&self, logits: &mut [f32], _history: &TokenHistory<'_>) -> Result<()> {
        let mut ids = finite_ids(logits);
        if self.0 == 0 || ids.len() <= self.0 {
            return Ok(());
        }
        ids.select_nth_unstable_by(self.0 - 1, |&a, &b| rank(logits, a, b));
        for &i in &ids[self.0..] {
            logits[i] = f32::NEG_INFINITY;
        }
        Ok(())
    }
}

/// Nucleus filter: walking from the most likely token down, keeps tokens until their summed
/// probability reaches `p` (the token that crosses it is kept, as in transformers).
#[derive(Debug, Clone, Copy)]
pub struct TopP(pub f32);

impl LogitsProcessor for TopP {
    fn process(&self, logits: &mut [f32], _history: &TokenHistory<'_>) -> Result<()> {
        if self.0 >= 1.0 {
            return Ok(());
        }
        let mut ids = finite_ids(logits);
        let Some(max) = max_finite(logits) else {
            return Ok(());
        };
        let weight = |i: usize| f64::from(logits[i] - max).exp();
        let total: f64 = ids.iter().map(|&i| weight(i)).sum();
        // The nucleus is usually small: rank only the best `m` candidates (selection is linear),
        // widening until they hold enough mass, instead of sorting the whole vocabulary.
        let mut m = 64.min(ids.len());
        let keep = loop {
            if m < ids.len() {
                ids.select_nth_unstable_by(m - 1, |&a, &b| rank(logits, a, b));
            }
            ids[..m].sort_unstable_by(|&a, &b| rank(logits, a, b));
            let mut mass = 0.0;
            let crossed = ids[..m].iter().position(|&i| {
                mass += weight(i) / total;
                mass >= f64::from(self.0)
            });
            match crossed {
                Some(last) => break last + 1,
                None if m == ids.len() => break m, // rounding: keep everything
                None => m = (m * 4).min(ids.len()),
            }
        };
        for &i in &ids[keep..] {
            logits[i] = f32::NEG_INFINITY;
        }
        Ok(())
    }
}

/// Drops tokens whose probability is below `p` times the best token's (transformers/llama.cpp).
#[derive(Debug, Clone, Copy)]
pub struct MinP(pub f32);

impl LogitsProcessor for MinP {
    fn process(&self, logits: &mut [f32], _history: &TokenHistory<'_>) -> Result<()> {
        if self.0 <= 0.0 {
            return Ok(());
        }
        let Some(max) = max_finite(logits) else {
            return Ok(());
        };
        // p_i / p_max = exp(l_i - max); the best token always survives.
        for l in logits.iter_mut() {
            if f64::from(*l - max).exp() < f64::from(self.0) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }
}

/// Processor chain plus the seeded draw. One sampler per sequence.
pub struct Sampler {
    chain: Vec<Box<dyn LogitsProcessor>>,
    greedy: bool,
    rng: ChaCha20Rng,
    seed: u64,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("processors", &self.chain.len())
            .field("greedy", &self.greedy)
            .field("seed", &self.seed)
            .finish()
    }
}

impl Sampler {
    /// Validates `params` and builds the chain in the documented order, leaving out no-ops.
    pub fn new(params: &SamplingParams) -> Result<Self> {
        params.validate()?;
        let mut chain: Vec<Box<dyn LogitsProcessor>> = Vec::new();
        if params.repetition_penalty != 1.0 {
            chain.push(Box::new(RepetitionPenalty(params.repetition_penalty)));
        }
        if params.frequency_penalty != 0.0 || params.presence_penalty != 0.0 {
            chain.push(Box::new(FrequencyPresencePenalty {
                frequency: params.frequency_penalty,
                presence: params.presence_penalty,
            }));
        }
        if !params.logit_bias.is_empty() {
            chain.push(Box::new(LogitBias(params.logit_bias.clone())));
        }
        // The filters cannot change the argmax, so greedy decoding skips them.
        let greedy = params.temperature == 0.0;
        if !greedy {
            if params.temperature != 1.0 {
                chain.push(Box::new(Temperature(params.temperature)));
            }
            if params.top_k > 0 {
                chain.push(Box::new(TopK(params.top_k)));
            }
            if params.top_p < 1.0 {
                chain.push(Box::new(TopP(params.top_p)));
            }
            if params.min_p > 0.0 {
                chain.push(Box::new(MinP(params.min_p)));
            }
        }
        let seed = params.seed.unwrap_or_else(rand::random);
        Ok(Self::from_chain(chain, greedy, seed))
    }

    /// A custom chain (already validated by the caller); `greedy` takes the argmax at the end.
    pub fn from_chain(chain: Vec<Box<dyn LogitsProcessor>>, greedy: bool, seed: u64) -> Self {
        Sampler {
            chain,
            greedy,
            rng: ChaCha20Rng::seed_from_u64(seed),
            seed,
        }
    }

    /// The seed in use, so a run with a random seed can be repeated.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Runs the chain over `logits` (modified in place) and picks the next token.
    pub fn sample(&mut self, logits: &mut [f32], history: &TokenHistory<'_>) -> Result<u32> {
        if let Some(i) = logits
            .iter()
            .position(|l| l.is_nan() || *l == f32::INFINITY)
        {
            return Err(Error::InvalidArgument {
                name: "logits",
                message: format!("the model produced {} for token {i}", logits[i]),
            });
        }
        for p in &self.chain {
            p.process(logits, history)?;
        }
        let Some(max) = max_finite(logits) else {
            return Err(Error::InvalidArgument {
                name: "logit_bias",
                message: "no token is left to sample: every logit is -inf".into(),
            });
        };
        let id = if self.greedy {
            // First index holding the maximum: ties go to the lowest id.
            logits.iter().position(|&l| l == max).unwrap_or(0)
        } else {
            self.draw(logits, max)
        };
        Ok(id as u32)
    }

    /// Inverse-CDF draw over exp(l - max) in id order, accumulated in f64.
    fn draw(&mut self, logits: &[f32], max: f32) -> usize {
        let weight = |l: f32| f64::from(l - max).exp();
        let total: f64 = logits
            .iter()
            .filter(|l| l.is_finite())
            .map(|&l| weight(l))
            .sum();
        let target = self.rng.random::<f64>() * total;
        let mut acc = 0.0;
        let mut last = 0;
        for (i, &l) in logits.iter().enumerate().filter(|(_, l)| l.is_finite()) {
            acc += weight(l);
            last = i;
            if target < acc {
                return i;
            }
        }
        last // rounding left the target just past the sum
    }
}

fn finite_ids(logits: &[f32]) -> Vec<usize> {
    (0..logits.len())
        .filter(|&i| logits[i].is_finite())
        .collect()
}

/// Best first: higher logit, then lower id (a total order, so filters are deterministic).
fn rank(logits: &[f32], a: usize, b: usize) -> std::cmp::Ordering {
    logits[b].total_cmp(&logits[a]).then(a.cmp(&b))
}

fn max_finite(logits: &[f32]) -> Option<f32> {
    logits
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .reduce(f32::max)
}
