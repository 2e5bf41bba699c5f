//! Greedy generation through wick with each step's margin, for tests that compare the greedy
//! text of two wick paths (an adapter against its merged model, the server against the library)
//! and must compare it only where it is decided (see [`crate::near_tie`]).

use wick::candle_core::Device;
use wick::generate::load::LoadedLm;
use wick::generate::sampler::SamplingParams;
use wick::generate::score::{continuation_logits, top2_margins};
use wick::generate::{generate, GenerationConfig};

use crate::near_tie::decided_prefix;

/// A greedy completion and how firmly each of its tokens was chosen.
#[derive(Debug, Clone)]
pub struct Greedy {
    pub token_ids: Vec<u32>,
    pub margins: Vec<f32>,
    pub text: String,
    /// Tokens before the first step with a margin under the near-tie threshold.
    pub decided: usize,
    /// The text of those tokens, as `wick generate` streams it: every other correct path of
    /// this model prints this first.
    pub decided_text: String,
}

/// Greedy `max_tokens` (stopping at the model's EOS) from `prompt`, the path scored in one
/// teacher-forced pass.
pub fn greedy(lm: &mut LoadedLm, prompt: &[u32], max_tokens: usize, near_tie: f32) -> Greedy {
    let mut config = GenerationConfig {
        sampling: SamplingParams::greedy(),
        max_tokens: Some(max_tokens),
        eos_token_ids: lm.defaults.eos_token_id.clone(),
        ..Default::default()
    };
    let out = generate(&mut lm.model, &lm.tokenizer, prompt, &config, |_| {}).expect("generates");
    let logits = continuation_logits(lm.model.model(), prompt, &out.token_ids, &Device::Cpu)
        .expect("scores the completion");
    let margins = top2_margins(&logits).expect("margins");
    let decided = decided_prefix(&margins, near_tie);
    config.max_tokens = Some(decided);
    let decided_text = if decided == 0 {
        String::new()
    } else {
        generate(&mut lm.model, &lm.tokenizer, prompt, &config, |_| {})
            .expect("generates")
            .text
    };
    Greedy {
        token_ids: out.token_ids,
        margins,
        text: out.text,
        decided,
        decided_text,
    }
}

impl Greedy {
    /// Asserts `actual` (another path's text for the same prompt) is this completion where it is
    /// decided: all of it when no step is a near-tie, else the text before the first near-tie.
    pub fn assert_matches(&self, what: &str, actual: &str) {
        if self.decided == self.token_ids.len() {
            assert_eq!(actual, self.text, "{what}");
        } else {
            assert!(
                actual.starts_with(&self.decided_text),
                "{what}: {actual:?} does not start with the decided {:?} (a near-tie at step {} \
                 of {:?}, margins {:?})",
                self.decided_text,
                self.decided,
                self.text,
                self.margins
            );
        }
    }
}
