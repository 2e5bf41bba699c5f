//! Pure models: config mirrors of `config.json` and forward passes.
//!
//! Causal LMs share one decoder ([`crate::nn::decoder::DecoderModel`]); each family file here
//! turns its config.json into a [`DecoderConfig`] and registers itself in [`DECODER_FAMILIES`].
//! GGUF files of these families are mapped (tensor names, metadata) in io/gguf_arch.rs.

pub mod bert;
pub mod common;
pub mod gemma;
pub mod llama;
pub mod phi3;
pub mod qwen3;
pub mod smollm3;

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

pub use crate::nn::decoder::{DecoderConfig, DecoderModel};

use crate::error::{Error, Result};
use crate::io::json::read_json;

/// A decoder family: the `model_type`s it reads and its config parser (errors as a message;
/// the registry names the file).
pub struct Family {
    pub name: &'static str,
    pub model_types: &'static [&'static str],
    pub parse: fn(&Value) -> std::result::Result<DecoderConfig, String>,
}

/// Every decoder family wick runs, by config.json `model_type`.
pub const DECODER_FAMILIES: &[Family] = &[
    llama::FAMILY,
    qwen3::FAMILY,
    smollm3::FAMILY,
    phi3::FAMILY,
    gemma::FAMILY,
];

/// Every supported decoder `model_type`, comma-separated (for errors).
pub fn supported_model_types() -> String {
    let types: Vec<&str> = DECODER_FAMILIES
        .iter()
        .flat_map(|f| f.model_types.iter().copied())
        .collect();
    types.join(", ")
}

/// The family reading `model_type`, if any.
pub fn family_of(model_type: &str) -> Option<&'static Family> {
    DECODER_FAMILIES
        .iter()
        .find(|f| f.model_types.contains(&model_type))
}

impl DecoderConfig {
    /// Reads and validates a config.json, naming the file in every error.
    pub fn from_file(path: &Path) -> Result<Self> {
        let value: Value = read_json(path)?;
        Self::from_value(value, path)
    }

    /// Validates a parsed config through its family's parser; `origin` names its source in
    /// errors (a config.json, or the GGUF file a config was derived from).
    pub fn from_value(value: Value, origin: &Path) -> Result<Self> {
        let bad = |msg: String| Error::bad_config(origin, msg);
        let model_type = match value.get("model_type") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err(bad("`model_type` is not a string".into())),
            None => return Err(bad("missing field `model_type`".into())),
        };
        let Some(family) = family_of(&model_type) else {
            return Err(Error::UnsupportedArchitecture {
                path: origin.to_path_buf(),
                model_type,
                supported: supported_model_types(),
            });
        };
        let cfg = (family.parse)(&value).map_err(bad)?;
        cfg.validate(origin)?;
        Ok(cfg)
    }
}

/// The one field every HF config has, read first to pick the architecture.
#[derive(Deserialize)]
struct ModelType {
    model_type: Option<String>,
}

/// Reads `model_type` from a config.json, with an error naming the file if absent.
pub fn read_model_type(config_path: &Path) -> Result<String> {
    let t: ModelType = read_json(config_path)?;
    t.model_type
        .ok_or_else(|| Error::bad_config(config_path, "missing field `model_type`"))
}
