//! Stop conditions: EOS token ids, a token budget, and stop strings matched on the decoded text.
//!
//! Stop strings are found in text, not tokens, so they match however the tokenizer splits them.
//! Text that could still be the start of a stop string is held back until the next piece shows
//! whether it is; a stop string (or any part of it) is therefore never emitted.

use serde::Serialize;

use crate::error::{Error, Result};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// A stop string appeared in the text.
    Stop,
    /// The token budget or the model's context ran out.
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Token-level conditions (EOS ids, budget) and the text-level stop strings.
#[derive(Debug, Clone)]
pub struct StopConditions {
    eos_token_ids: Vec<u32>,
    max_tokens: Option<usize>,
    strings: StopStrings,
}

impl StopConditions {
    pub fn new(eos_token_ids: &[u32], max_tokens: Option<usize>, stop: &[String]) -> Result<Self> {
        if max_tokens == Some(0) {
            return Err(Error::InvalidArgument {
                name: "max_tokens",
                message: "must be at least 1".into(),
            });
        }
        Ok(StopConditions {
            eos_token_ids: eos_token_ids.to_vec(),
            max_tokens,
            strings: StopStrings::new(stop)?,
        })
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_token_ids.contains(&id)
    }

    /// Whether `generated` tokens use up the budget.
    pub fn budget_spent(&self, generated: usize) -> bool {
        self.max_tokens.is_some_and(|m| generated >= m)
    }

    pub fn strings_mut(&mut self) -> &mut StopStrings {
        &mut self.strings
    }
}

/// What [`StopStrings::push`] allows out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopPush {
    /// Text that is safe to show: it is not, and cannot become, part of a stop string.
    pub emit: String,
    /// A stop string matched; `emit` holds the text before it and nothing more may follow.
    pub stopped: bool,
}

/// Matches stop strings across pieces of streamed text.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    held: String,
}

impl StopStrings {
    pub fn new(stops: &[String]) -> Result<Self> {
        if stops.iter().any(String::is_empty) {
            return Err(Error::InvalidArgument {
                name: "stop",
                message: "stop strings must not be empty".into(),
            });
        }
        Ok(StopStrings {
            stops: stops.to_vec(),
            held: String::new(),
        })
    }

    /// Adds newly decoded text and returns what may be emitted now.
    pub fn push(&mut self, text: &str) -> StopPush {
        self.held.push_str(text);
        // Earlier output never ends in a stop string's prefix (it was held back), so a match can
        // only start inside the held text.
        let first_match = self.stops.iter().filter_map(|s| self.held.find(s)).min();
        if let Some(pos) = first_match {
            self.held.truncate(pos);
            return StopPush {
                emit: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        let keep = self
            .stops
            .iter()
            .map(|s| longest_prefix_suffix(&self.held, s))
            .max()
            .unwrap_or(0);
        let rest = self.held.split_off(self.held.len() - keep);
        StopPush {
            emit: std::mem::replace(&mut self.held, rest),
            stopped: false,
        }
    }

    /// At the end of generation: the held-back text, which turned out not to be a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Length in bytes of the longest suffix of `text` that is a proper prefix of `stop`.
fn longest_prefix_suffix(text: &str, stop: &str) -> usize {
    stop.char_indices()
        .rev()
        .map(|(i, _)| i)
        .filter(|&len| len > 0) // not the empty prefix
        .find(|&len| text.ends_with(&stop[..len]))
        .unwrap_or(0)
}
