//! A `tokenizers::Tokenizer` built from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! `tokenizer.ggml.model` picks the algorithm:
//! - `gpt2`: byte-level BPE (Llama 3, Qwen 2/3, SmolLM, GPT-2, ...), split as
//!   `tokenizer.ggml.pre` says ([`bpe`]);
//! - `gemma4`: Gemma 4's BPE over raw UTF-8 ([`bpe`]);
//! - `llama`: SentencePiece-style scores with `<0xNN>` byte fallback (Llama 2, Phi-3, Gemma 1-3;
//!   [`spm`]);
//! - `bert`: WordPiece ([`wordpiece`]).
//!
//! Anything else (`t5`, `rwkv`, `plamo2`, ...) is refused with an error naming the file and the
//! type. Where the metadata leaves a choice, we follow llama.cpp (src/llama-vocab.cpp), which
//! defines what these keys mean: its defaults for missing special-token ids and `add_bos`, its
//! pre-tokenizer regexes, control tokens matched whole as special tokens, user-defined ones as
//! plain added tokens, and its per-model strip rules (Phi-3's special tokens eat the whitespace
//! after them).
//!
//! We do not use candle's `TokenizerFromGguf`: it maps unknown `pre` names (SmolLM's `smollm`
//! among them) silently to plain GPT-2 splitting, which drops the digit split SmolLM was trained
//! with, and it reports errors without naming the file.

mod bpe;
mod spm;
mod wordpiece;

use tokenizers::models::bpe::Vocab as Ids;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{printable, Error, Result};
use crate::io::gguf::GgufFile;

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const NORMAL: i64 = 1;
const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// The tokenizer families wick builds, by `tokenizer.ggml.model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `llama`: SentencePiece-style.
    Spm,
    /// `gpt2`: byte-level BPE.
    Bpe,
    /// `gemma4`: BPE over raw UTF-8.
    Gemma4,
    /// `bert`: WordPiece.
    WordPiece,
}

fn kind(file: &GgufFile) -> Result<Kind> {
    let model = file.get_str("tokenizer.ggml.model")?;
    Ok(match model {
        "llama" => Kind::Spm,
        "gpt2" => Kind::Bpe,
        "gemma4" => Kind::Gemma4,
        "bert" => Kind::WordPiece,
        other => {
            let what = match other {
                "t5" => " (Unigram, as T5 uses)",
                "rwkv" => " (RWKV's trie tokenizer)",
                _ => "",
            };
            return Err(Error::Unsupported(format!(
                "{}: tokenizer.ggml.model `{}`{what} is not a tokenizer type wick can build \
                 (supported: llama (SentencePiece), gpt2 (byte-level BPE), gemma4, bert (WordPiece))",
                file.path().display(),
                printable(other)
            )));
        }
    })
}

/// The token list and types of a file, with the file for error messages.
struct Vocab<'a> {
    file: &'a GgufFile,
    tokens: Vec<&'a str>,
    types: Vec<i64>,
}

impl<'a> Vocab<'a> {
    fn read(file: &'a GgufFile) -> Result<Self> {
        let tokens = file.get_str_array("tokenizer.ggml.tokens")?;
        let types = match file.opt("tokenizer.ggml.token_type", GgufFile::get_int_array)? {
            Some(types) => types,
            None => vec![NORMAL; tokens.len()],
        };
        let vocab = Self {
            file,
            tokens,
            types,
        };
        if vocab.types.len() != vocab.tokens.len() {
            return Err(vocab.load_err(format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                vocab.types.len(),
                vocab.tokens.len()
            )));
        }
        Ok(vocab)
    }

    /// Messages may quote tokens from the file: their control characters are escaped.
    fn load_err(&self, message: String) -> Error {
        Error::TokenizerLoad {
            path: self.file.path().to_path_buf(),
            message: printable(&message).into_owned(),
        }
    }

    /// Token text to id; for a text listed twice, the first id (as llama.cpp's lookup).
    fn token_ids(&self) -> Ids {
        let mut ids = Ids::with_capacity(self.tokens.len());
        for (i, t) in self.tokens.iter().enumerate() {
            ids.entry(t.to_string()).or_insert(i as u32);
        }
        ids
    }

    /// The text of the unknown token, when the file names one in range.
    fn unk_text(&self) -> Result<Option<&'a str>> {
        let unk = special_tokens(self.file)?.unk;
        Ok(unk.and_then(|id| self.tokens.get(id as usize).copied()))
    }
}

/// Special token ids and flags, as llama.cpp reads them: the file's keys, else llama.cpp's
/// defaults for the tokenizer type (SentencePiece: BOS 1, EOS 2, UNK 0; BERT: CLS 101 as BOS,
/// SEP 102, UNK 100; byte-level BPE: 11 for BOS and EOS). A default past the vocabulary is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GgufSpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub sep: Option<u32>,
    /// Whether encoding with special tokens prepends BOS / appends EOS / appends SEP.
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_sep: bool,
}

pub fn special_tokens(file: &GgufFile) -> Result<GgufSpecialTokens> {
    let kind = kind(file)?;
    let n_tokens = file.get_array("tokenizer.ggml.tokens")?.len();
    let pre = file.opt("tokenizer.ggml.pre", GgufFile::get_str)?;
    // (bos, eos, unk, sep, pad, add_bos, add_eos, add_sep) by llama.cpp's type defaults.
    let (bos, eos, unk, sep, pad, add_bos, add_eos, add_sep) = match kind {
        Kind::Spm => (Some(1), Some(2), Some(0), None, None, true, false, false),
        Kind::WordPiece => (
            Some(101),
            None,
            Some(100),
            Some(102),
            Some(0),
            true,
            false,
            true,
        ),
        Kind::Bpe => {
            let add_bos = bpe::default_add_bos(pre.unwrap_or("default"));
            (Some(11), Some(11), None, None, None, add_bos, false, false)
        }
        Kind::Gemma4 => (None, None, None, None, None, true, false, false),
    };
    // A default past the vocabulary is dropped; an id from the file past it keeps the default
    // (llama.cpp warns and does the same).
    let id = |key: &str, default: Option<u32>| -> Result<Option<u32>> {
        let default = default.filter(|&d| (d as usize) < n_tokens);
        Ok(match file.opt(key, GgufFile::get_u32)? {
            Some(id) if (id as usize) < n_tokens => Some(id),
            _ => default,
        })
    };
    let flag = |key: &str, default: bool| -> Result<bool> {
        Ok(file.opt(key, GgufFile::get_bool)?.unwrap_or(default))
    };
    let mut special = GgufSpecialTokens {
        bos: id("tokenizer.ggml.bos_token_id", bos)?,
        eos: id("tokenizer.ggml.eos_token_id", eos)?,
        unk: id("tokenizer.ggml.unknown_token_id", unk)?,
        pad: id("tokenizer.ggml.padding_token_id", pad)?,
        sep: id("tokenizer.ggml.seperator_token_id", sep)?,
        add_bos: flag("tokenizer.ggml.add_bos_token", add_bos)?,
        add_eos: flag("tokenizer.ggml.add_eos_token", add_eos)?,
        add_sep: flag("tokenizer.ggml.add_sep_token", add_sep)?,
    };
    match kind {
        // llama.cpp's WordPiece always frames the text as [CLS] ... [SEP] (and adds no EOS).
        Kind::WordPiece => {
            special.add_bos = true;
            special.add_sep = true;
            special.add_eos = false;
        }
        // ... and always adds BOS for Gemma 4.
        Kind::Gemma4 => special.add_bos = true,
        // Only WordPiece appends SEP.
        Kind::Spm | Kind::Bpe => special.add_sep = false,
    }
    Ok(special)
}

pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<Tokenizer> {
    let kind = kind(file)?;
    let vocab = Vocab::read(file)?;
    let mut tokenizer = match kind {
        Kind::Spm => spm::sentencepiece(&vocab)?,
        Kind::Bpe => bpe::byte_level(&vocab)?,
        Kind::Gemma4 => bpe::gemma4(&vocab)?,
        Kind::WordPiece => wordpiece::wordpiece(&vocab)?,
    };
    add_tokens(&mut tokenizer, &vocab)?;
    let special = special_tokens(file)?;
    if let Some(post) = post_processor(&tokenizer, &special).map_err(|e| vocab.load_err(e))? {
        tokenizer.with_post_processor(Some(post));
    }
    Ok(tokenizer)
}

/// Control and unknown-type tokens are matched whole in the input and can be skipped when
/// decoding; user-defined ones are matched whole but are ordinary text (llama.cpp's
/// `tokenizer_st_partition`). Strip flags follow llama.cpp's per-model rules.
fn add_tokens(tokenizer: &mut Tokenizer, vocab: &Vocab) -> Result<()> {
    let name = vocab
        .file
        .opt("general.name", GgufFile::get_str)?
        .unwrap_or("")
        .to_lowercase();
    let phi3 = name.contains("phi-3") || name.contains("phi3");
    let modern_bert = name.contains("modern-bert");
    let mut special = Vec::new();
    let mut plain = Vec::new();
    for (token, &ty) in vocab.tokens.iter().zip(&vocab.types) {
        let is_special = matches!(ty, CONTROL | UNKNOWN);
        if !is_special && ty != USER_DEFINED {
            continue;
        }
        let mut added = AddedToken::from(token.to_string(), is_special).normalized(false);
        // Phi-3: the special tokens, `</s>` among them, swallow the whitespace after them,
        // except `<unk>`, `<s>` and `<|endoftext|>`.
        if phi3 && !matches!(*token, "<unk>" | "<s>" | "<|endoftext|>") {
            added = added.rstrip(true);
        }
        if modern_bert && *token == "[MASK]" {
            added = added.lstrip(true);
        }
        if is_special {
            special.push(added);
        } else {
            plain.push(added);
        }
    }
    tokenizer
        .add_special_tokens(special)
        .map_err(|e| vocab.load_err(e.to_string()))?;
    tokenizer
        .add_tokens(plain)
        .map_err(|e| vocab.load_err(e.to_string()))?;
    Ok(())
}

/// BOS/EOS (BERT: CLS/SEP) around each sequence when the file asks for them.
fn post_processor(
    tokenizer: &Tokenizer,
    special: &GgufSpecialTokens,
) -> std::result::Result<Option<TemplateProcessing>, String> {
    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut specials = Vec::new();
    for (wanted, id, side, what) in [
        (special.add_bos, special.bos, &mut before, "bos"),
        (special.add_eos, special.eos, &mut after, "eos"),
    ] {
        if !wanted {
            continue;
        }
        let id = id.ok_or(format!(
            "add_{what}_token is set but {what}_token_id is not"
        ))?;
        push_token(tokenizer, id, what, side, &mut specials)?;
    }
    if special.add_sep {
        let id = special
            .sep
            .ok_or("a WordPiece vocabulary needs seperator_token_id")?;
        push_token(tokenizer, id, "sep", &mut after, &mut specials)?;
    }
    if specials.is_empty() {
        return Ok(None);
    }
    let seq = |s: &str| {
        let mut parts = before.clone();
        parts.push(s.to_string());
        parts.extend(after.iter().cloned());
        parts
    };
    let mut pair = seq("$A:0");
    pair.extend(seq("$B:1"));
    TemplateProcessing::builder()
        .try_single(seq("$0"))
        .and_then(|b| b.try_pair(pair))
        .map_err(|e| e.to_string())?
        .special_tokens(specials)
        .build()
        .map(Some)
        .map_err(|e| e.to_string())
}

fn push_token(
    tokenizer: &Tokenizer,
    id: u32,
    what: &str,
    side: &mut Vec<String>,
    specials: &mut Vec<(String, u32)>,
) -> std::result::Result<(), String> {
    let token = tokenizer
        .id_to_token(id)
        .ok_or(format!("{what}_token_id {id} is past the vocabulary"))?;
    side.push(token.clone());
    specials.push((token, id));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bpe::pre_tokenizer;
    use tokenizers::tokenizer::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    fn splits(pre: &str, input: &str) -> Vec<String> {
        let mut s = PreTokenizedString::from(input);
        pre_tokenizer(pre)
            .expect("known")
            .expect("builds")
            .pre_tokenize(&mut s)
            .expect("pre-tokenize");
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(s, _, _)| s.to_string())
            .collect()
    }

    #[test]
    fn digit_split_and_grouping_follow_llama_cpp() {
        // smollm: every digit alone, and whitespace before digits stays one piece.
        assert_eq!(splits("smollm", "a  123"), ["a", "ĠĠ", "1", "2", "3"]);
        assert_eq!(splits("gpt-2", "a  123"), ["a", "Ġ", "Ġ123"]);
        assert_eq!(splits("llama-bpe", "x 12345"), ["x", "Ġ", "123", "45"]);
        assert_eq!(splits("qwen2", "x 12"), ["x", "Ġ", "1", "2"]);
        // qwen35 keeps a combining mark inside its word; for qwen2 it is not a letter, so it
        // starts the next word as a prefix character.
        assert_eq!(splits("qwen35", "e\u{301}x"), ["eÌģx"]);
        assert_eq!(splits("qwen2", "e\u{301}x"), ["e", "Ìģx"]);
        assert!(pre_tokenizer("no-such-pre").is_none());
        // `gpt2` is not a name llama.cpp knows (it spells it `gpt-2`).
        assert!(pre_tokenizer("gpt2").is_none());
    }
}
