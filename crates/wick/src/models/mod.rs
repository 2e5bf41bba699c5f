//! Pure models: config mirrors of `config.json` and forward passes.

pub mod bert;
pub mod llama;

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::io::json::read_json;

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
