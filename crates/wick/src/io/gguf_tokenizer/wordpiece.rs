//! BERT's WordPiece (`tokenizer.ggml.model = "bert"`), as llama.cpp tokenizes it
//! (src/llama-vocab.cpp, `llm_tokenizer_wpm`).
//!
//! llama.cpp's converter writes a word-initial piece `the` as `▁the` and a continuation `##ing`
//! as `ing`; bracketed names (`[CLS]`, `[unused0]`) stay as they are. We undo that to get the
//! vocabulary `tokenizers`' WordPiece expects (`the`, `##ing`) with the same ids. The text is
//! normalized and split as llama.cpp does: accents stripped (NFD, marks dropped) and lowercase
//! unless the file says otherwise, control characters dropped, split at whitespace, each
//! punctuation mark, ASCII symbol and CJK ideograph a word of its own; then each word is the
//! longest pieces from its start, or `[UNK]` when some part of it matches no piece.

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::Vocab as Ids;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::Tokenizer;

use super::Vocab;
use crate::error::Result;
use crate::io::gguf::GgufFile;

const PHANTOM_SPACE: &str = "\u{2581}";

/// The HF spelling of a GGUF WordPiece token.
fn hf_piece(token: &str) -> String {
    if let Some(word) = token.strip_prefix(PHANTOM_SPACE) {
        word.to_string()
    } else if token.starts_with('[') && token.ends_with(']') {
        token.to_string()
    } else {
        format!("##{token}")
    }
}

pub(super) fn wordpiece(vocab: &Vocab) -> Result<Tokenizer> {
    let mut ids = Ids::new();
    for (id, token) in vocab.tokens.iter().enumerate() {
        // Two GGUF tokens with one HF spelling: the first id wins, as a lookup by text would.
        ids.entry(hf_piece(token)).or_insert(id as u32);
    }
    let unk = vocab.unk_text()?.unwrap_or("[UNK]");
    let model = WordPiece::builder()
        .vocab(ids)
        .unk_token(hf_piece(unk))
        .continuing_subword_prefix("##".to_string())
        // llama.cpp has no word-length limit.
        .max_input_chars_per_word(usize::MAX)
        .build()
        .map_err(|e| vocab.load_err(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(model);

    let flag = |key: &str| vocab.file.opt(key, GgufFile::get_bool);
    let lowercase = flag("tokenizer.ggml.normalizer.lowercase")?.unwrap_or(true);
    let strip_accents = flag("tokenizer.ggml.normalizer.strip_accents")?.unwrap_or(lowercase);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(
            true,
            true,
            Some(strip_accents),
            lowercase,
        )))
        .map_err(|e| vocab.load_err(e.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_decoder(Some(WordPieceDecoder::new("##".to_string(), true)));
    Ok(tokenizer)
}
