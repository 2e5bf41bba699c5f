//! `generation_config.json`: EOS ids and the model author's default sampling settings.

use std::path::Path;

use serde::{Deserialize, Deserializer};

use super::sampler::SamplingParams;
use crate::error::Result;
use crate::io::json::read_json;

/// The fields of transformers' `GenerationConfig` that wick uses; unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GenerationDefaults {
    /// One id or a list (Llama 3 lists several); `null` or absent gives none.
    #[serde(deserialize_with = "one_or_many")]
    pub eos_token_id: Vec<u32>,
    pub bos_token_id: Option<u32>,
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub max_new_tokens: Option<usize>,
}

impl GenerationDefaults {
    pub fn from_file(path: &Path) -> Result<Self> {
        read_json(path)
    }

    /// The sampling transformers' `generate()` would use with this config: greedy unless
    /// `do_sample` is true, and then its defaults (temperature 1, top-k 50) for missing fields.
    pub fn sampling_params(&self) -> SamplingParams {
        let mut params = SamplingParams {
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            ..SamplingParams::greedy()
        };
        if self.do_sample == Some(true) {
            params.temperature = self.temperature.unwrap_or(1.0);
            params.top_k = self.top_k.unwrap_or(50);
            params.top_p = self.top_p.unwrap_or(1.0);
            params.min_p = self.min_p.unwrap_or(0.0);
        }
        params
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(id)) => vec![id],
        Some(OneOrMany::Many(ids)) => ids,
    })
}
