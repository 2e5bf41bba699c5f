//! Loading `tokenizer.json` with our own padding and truncation policy.
//!
//! Shipped tokenizer files often carry padding/truncation settings (all-MiniLM-L6-v2's pads
//! everything to 128 tokens). We always strip padding — batches are padded by the caller to the
//! longest sequence — and set truncation to the model's limit.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

/// `tokenizer.json` as shipped, for embedding models: no padding, truncation at `max_length`.
pub fn load_tokenizer(path: &Path, max_length: usize) -> Result<Tokenizer> {
    let tokenizer = read_tokenizer(path)?;
    with_length_policy(tokenizer, path, max_length)
}

/// `tokenizer.json` as shipped (its own padding and truncation settings kept).
pub fn read_tokenizer(path: &Path) -> Result<Tokenizer> {
    let json = std::fs::read(path).map_err(|e| Error::TokenizerLoad {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    tokenizer_from_json(path, &json)
}

/// A tokenizer from the bytes of a `tokenizer.json`; `path` is what error messages call it.
pub fn tokenizer_from_json(path: &Path, json: &[u8]) -> Result<Tokenizer> {
    Tokenizer::from_bytes(json).map_err(|e| Error::TokenizerLoad {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Strips padding and truncates at `max_length` (see the module comment).
pub fn with_length_policy(
    mut tokenizer: Tokenizer,
    path: &Path,
    max_length: usize,
) -> Result<Tokenizer> {
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| Error::TokenizerLoad {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(tokenizer)
}

/// Token ids of each text, with the tokenizer's special tokens added.
pub fn encode_all(tokenizer: &Tokenizer, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
    let encodings = tokenizer
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| Error::Tokenize(e.to_string()))?;
    Ok(encodings
        .into_iter()
        .map(|e| e.get_ids().to_vec())
        .collect())
}
