//! Loading `tokenizer.json` with our own padding and truncation policy.
//!
//! Shipped tokenizer files often carry padding/truncation settings (all-MiniLM-L6-v2's pads
//! everything to 128 tokens). We always strip padding — batches are padded by the caller to the
//! longest sequence — and set truncation to the model's limit.

use std::path::Path;

use tokenizers::processors::template::TemplateProcessing;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{printable, Error, Result};

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
///
/// The JSON syntax is checked first: tokenizers (0.23) panics instead of returning an error on
/// a syntax error inside some sections (`decoder`'s `expect("Helper")`), e.g. in a file cut
/// short by a download. Checking before it parses, rather than catching the panic, keeps the
/// error a normal one (no panic message on stderr) and works under any panic strategy.
pub fn tokenizer_from_json(path: &Path, json: &[u8]) -> Result<Tokenizer> {
    let load_err = |message: String| Error::TokenizerLoad {
        path: path.to_path_buf(),
        message,
    };
    // A full parse: a syntax-only pass (IgnoredAny) does not check escapes like `\uD800`.
    serde_json::from_slice::<serde_json::Value>(json)
        .map_err(|e| load_err(format!("invalid JSON: {e}")))?;
    let tokenizer = Tokenizer::from_bytes(json)
        .map_err(|e| load_err(printable(&e.to_string()).into_owned()))?;
    if let Some(post) = tokenizer.get_post_processor() {
        check_post_processor(post)
            .map_err(|e| load_err(format!("post_processor: {}", printable(&e))))?;
    }
    Ok(tokenizer)
}

/// What tokenizers checks when a `TemplateProcessing` is built in code but not when one is read
/// from JSON: every special token its templates name is defined (else encoding with special
/// tokens panics). Checked by building the same processor through its builder.
fn check_post_processor(post: &PostProcessorWrapper) -> std::result::Result<(), String> {
    match post {
        PostProcessorWrapper::Template(t) => TemplateProcessing::builder()
            .single(t.single.clone())
            .pair(t.get_pair().clone())
            .special_tokens(t.get_special_tokens().clone())
            .build()
            .map(|_| ())
            .map_err(|e| e.to_string()),
        PostProcessorWrapper::Sequence(seq) => {
            seq.as_ref().iter().try_for_each(check_post_processor)
        }
        _ => Ok(()),
    }
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

/// The tokenizer of a model: built from the metadata of a GGUF file, else the model's
/// `tokenizer.json` (a local directory or a hub repository) without the padding and truncation
/// it may carry, so that a text gives all of its tokens and nothing else.
pub fn model_tokenizer(files: &crate::io::ModelFiles) -> Result<Tokenizer> {
    match files {
        crate::io::ModelFiles::File(path) if crate::io::gguf::is_gguf(path) => {
            let file = crate::io::gguf::GgufFile::open(path)?;
            crate::io::gguf_tokenizer::tokenizer_from_gguf(&file)
        }
        crate::io::ModelFiles::File(path) => Err(Error::Unsupported(format!(
            "{}: a single-file model must be a .gguf; give a directory for a tokenizer.json",
            path.display()
        ))),
        _ => {
            let path = files.require("tokenizer.json")?;
            let mut tokenizer = read_tokenizer(&path)?;
            tokenizer.with_padding(None);
            tokenizer
                .with_truncation(None)
                .map_err(|e| Error::TokenizerLoad {
                    path,
                    message: e.to_string(),
                })?;
            Ok(tokenizer)
        }
    }
}

/// Token ids of `text` as given (no trimming); `add_special` adds what the tokenizer's post
/// processor adds (BOS, EOS, CLS/SEP, as the model says). Special-token text in `text` is
/// matched as the special token, as llama.cpp's `llama-tokenize` does by default.
pub fn encode_text(tokenizer: &Tokenizer, text: &str, add_special: bool) -> Result<Vec<u32>> {
    Ok(tokenizer
        .encode_fast(text, add_special)
        .map_err(|e| Error::Tokenize(e.to_string()))?
        .get_ids()
        .to_vec())
}

/// The text of `ids`, special tokens included; an id past the vocabulary is an error naming it.
pub fn decode_ids(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String> {
    let size = tokenizer.get_vocab_size(true);
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= size) {
        return Err(Error::Tokenize(format!(
            "token id {bad} is past the vocabulary ({size} tokens)"
        )));
    }
    tokenizer
        .decode(ids, false)
        .map_err(|e| Error::Tokenize(e.to_string()))
}
