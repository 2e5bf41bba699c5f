//! SentencePiece-style vocabularies (`tokenizer.ggml.model = "llama"`: Llama 2, Phi-3, Mistral,
//! Gemma 1-3), tokenized as llama.cpp does (src/llama-vocab.cpp, `llm_tokenizer_spm`).
//!
//! llama.cpp writes spaces as `▁` (with one `▁` before the text when `add_space_prefix`, the
//! default), starts from single characters, and repeatedly joins the adjacent pair whose join
//! is a token with the highest score; characters no token covers become `<0xNN>` byte tokens.
//! That is BPE whose merge list is every (left, right) split of every token, ranked by the
//! joined token's score: we build exactly that list and hand it to `tokenizers`' BPE with
//! byte fallback. Two differences remain, neither reached by the vocabularies of llama.cpp's
//! suite: where two different joins have equal scores llama.cpp takes the leftmost, BPE the
//! earlier merge (which we order by token id); and llama.cpp can join a character that is no
//! token of its own, which a BPE merge cannot (no token of Llama 2's, Phi-3's or Baichuan's
//! vocabulary has such a character).

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::utils::Sequence as NormalizerSequence;
use tokenizers::{NormalizerWrapper, Tokenizer};

use super::bpe::spm_decoder;
use super::Vocab;
use candle_core::quantized::gguf_file::Value;

use crate::error::Result;
use crate::io::gguf::GgufFile;

/// `tokenizer.ggml.scores` as f32 (llama.cpp also accepts i32 scores).
pub(super) fn scores(vocab: &Vocab) -> Result<Vec<f32>> {
    let key = "tokenizer.ggml.scores";
    let values = vocab.file.get_array(key)?;
    if values.len() < vocab.tokens.len() {
        return Err(vocab.load_err(format!(
            "{key} has {} entries for {} tokens",
            values.len(),
            vocab.tokens.len()
        )));
    }
    values
        .iter()
        .take(vocab.tokens.len())
        .enumerate()
        .map(|(i, v)| match v {
            Value::F32(s) => Ok(*s),
            Value::F64(s) => Ok(*s as f32),
            Value::I32(s) => Ok(*s as f32),
            other => Err(vocab.load_err(format!("{key}[{i}] is not a number: {other:?}"))),
        })
        .collect()
}

/// Every (left, right) split of every token into two tokens, best-scored join first.
fn merges_by_score(vocab: &Vocab, scores: &[f32]) -> Vec<(String, String)> {
    let ids = vocab.token_ids();
    let mut ranked: Vec<(f32, u32, usize, &str)> = Vec::new();
    for (id, token) in vocab.tokens.iter().enumerate() {
        for (split, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(split);
            if ids.contains_key(left) && ids.contains_key(right) {
                ranked.push((scores[id], id as u32, split, token));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    ranked
        .into_iter()
        .map(|(_, _, split, token)| {
            let (l, r) = token.split_at(split);
            (l.to_string(), r.to_string())
        })
        .collect()
}

pub(super) fn sentencepiece(vocab: &Vocab) -> Result<Tokenizer> {
    let scores = scores(vocab)?;
    let merges = merges_by_score(vocab, &scores);
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab.token_ids(), merges)
        .byte_fallback(true);
    if let Some(unk) = vocab.unk_text()? {
        builder = builder.unk_token(unk.to_string());
    }
    let model = builder.build().map_err(|e| vocab.load_err(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(model);

    let add_space_prefix = add_space_prefix(vocab.file)?;
    let mut steps: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        steps.push(Prepend::new("\u{2581}".to_string()).into());
    }
    steps.push(
        Replace::new(" ", "\u{2581}")
            .map_err(|e| vocab.load_err(e.to_string()))?
            .into(),
    );
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(steps)))
        .map_err(|e| vocab.load_err(e.to_string()))?;
    tokenizer.with_decoder(Some(spm_decoder(vocab, add_space_prefix)?));
    Ok(tokenizer)
}

/// `tokenizer.ggml.add_space_prefix`, true when absent (llama.cpp's SPM default).
fn add_space_prefix(file: &GgufFile) -> Result<bool> {
    Ok(file
        .opt("tokenizer.ggml.add_space_prefix", GgufFile::get_bool)?
        .unwrap_or(true))
}
