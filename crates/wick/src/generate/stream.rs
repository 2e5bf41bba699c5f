//! Incremental detokenization: generated ids in, valid text deltas out.
//!
//! A token can end in the middle of a UTF-8 character (byte-level BPE pieces, SentencePiece
//! byte-fallback tokens like `<0xE6>`), and some decoders change a token's text depending on its
//! neighbours (a leading space is stripped at the start of a sequence). So, as text-generation-
//! inference does, we decode a small window twice — up to the last emitted token and up to the new
//! one — and emit the difference once it no longer ends in U+FFFD, the replacement character the
//! decoders produce for an incomplete sequence. The window starts a few tokens into the prompt so
//! the first generated token decodes with its leading space.

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// Prompt tokens kept as left context for the first delta.
const PROMPT_CONTEXT: usize = 5;

pub struct IncrementalDecoder<'t> {
    tokenizer: &'t Tokenizer,
    ids: Vec<u32>,
    /// Start of the decode window.
    prefix_offset: usize,
    /// End of the text already emitted.
    read_offset: usize,
}

impl std::fmt::Debug for IncrementalDecoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncrementalDecoder")
            .field("ids", &self.ids)
            .field("prefix_offset", &self.prefix_offset)
            .field("read_offset", &self.read_offset)
            .finish()
    }
}

impl<'t> IncrementalDecoder<'t> {
    /// `prompt` is what precedes the generated tokens; only its last few ids are kept.
    pub fn new(tokenizer: &'t Tokenizer, prompt: &[u32]) -> Self {
        let ids = prompt[prompt.len().saturating_sub(PROMPT_CONTEXT)..].to_vec();
        let read_offset = ids.len();
        IncrementalDecoder {
            tokenizer,
            ids,
            prefix_offset: 0,
            read_offset,
        }
    }

    /// Adds a generated token; returns the new text, empty while a character is incomplete.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let (prefix, full) = self.decode_window()?;
        if full.len() <= prefix.len() || full.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(new_suffix(&prefix, &full))
    }

    /// The text not yet emitted, incomplete characters included (as U+FFFD).
    pub fn finish(&mut self) -> Result<String> {
        let (prefix, full) = self.decode_window()?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(new_suffix(&prefix, &full))
    }

    fn decode_window(&self) -> Result<(String, String)> {
        let prefix = self.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = self.decode(&self.ids[self.prefix_offset..])?;
        Ok((prefix, full))
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| Error::Tokenize(format!("decoding generated tokens: {e}")))
    }
}

/// `full` minus its start shared with `prefix`. Normally `prefix` is a prefix of `full`; if a
/// decoder rewrote earlier text we can only emit what follows the common part.
fn new_suffix(prefix: &str, full: &str) -> String {
    if let Some(rest) = full.strip_prefix(prefix) {
        return rest.to_string();
    }
    let common = prefix
        .char_indices()
        .zip(full.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(prefix.len().min(full.len()));
    full.get(common..).unwrap_or_default().to_string()
}
