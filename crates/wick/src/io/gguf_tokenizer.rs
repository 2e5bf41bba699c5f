//! A `tokenizers::Tokenizer` built from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! Supports byte-level BPE (`tokenizer.ggml.model = "gpt2"`, the Llama-3 / Qwen2 / SmolLM family).
//! Where the metadata leaves a choice, we follow llama.cpp, which defines what these keys mean:
//! `tokenizer.ggml.pre` picks the pre-tokenizer split, control tokens are matched whole as special
//! tokens, user-defined ones as plain added tokens, and no normalizer runs.
//!
//! We do not use candle's `TokenizerFromGguf`: it maps unknown `pre` names (SmolLM's `smollm`
//! among them) silently to plain GPT-2 splitting, which drops the digit split SmolLM was trained
//! with, and it reports errors without naming the file.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{printable, Error, Result};
use crate::io::gguf::GgufFile;

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// GPT-2's split, applied by `ByteLevel` itself when `use_regex` is on.
const GPT2_NAMES: &[&str] = &["default", "gpt2", "gpt-2", "mpt", "olmo", "jais"];
/// Each digit on its own, then GPT-2's split (llama.cpp: `\p{N}` before the GPT-2 regex).
const DIGITS_NAMES: &[&str] = &[
    "smollm",
    "starcoder",
    "refact",
    "command-r",
    "codeshell",
    "exaone",
    "minerva",
];
const LLAMA3_NAMES: &[&str] = &[
    "llama3",
    "llama-v3",
    "llama-bpe",
    "smaug-bpe",
    "falcon3",
    "dbrx",
    "lfm2",
];
const QWEN2_NAMES: &[&str] = &["qwen2", "deepseek-r1-qwen", "megrez"];

const LLAMA3_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Special token ids and flags from the metadata (each id only when the file sets it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GgufSpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    /// Whether encoding with special tokens prepends BOS / appends EOS.
    pub add_bos: bool,
    pub add_eos: bool,
}

pub fn special_tokens(file: &GgufFile) -> Result<GgufSpecialTokens> {
    let id = |key: &str| file.opt(key, GgufFile::get_u32);
    let flag = |key: &str| Ok::<_, Error>(file.opt(key, GgufFile::get_bool)?.unwrap_or(false));
    Ok(GgufSpecialTokens {
        bos: id("tokenizer.ggml.bos_token_id")?,
        eos: id("tokenizer.ggml.eos_token_id")?,
        unk: id("tokenizer.ggml.unknown_token_id")?,
        pad: id("tokenizer.ggml.padding_token_id")?,
        add_bos: flag("tokenizer.ggml.add_bos_token")?,
        add_eos: flag("tokenizer.ggml.add_eos_token")?,
    })
}

pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<Tokenizer> {
    // Messages may quote tokens from the file: escape their control characters.
    let load_err = |message: String| Error::TokenizerLoad {
        path: file.path().to_path_buf(),
        message: printable(&message).into_owned(),
    };
    let model = file.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(Error::Unsupported(format!(
            "{}: tokenizer.ggml.model `{}` (only byte-level BPE, `gpt2`, is supported)",
            file.path().display(),
            printable(model)
        )));
    }
    let tokens = file.get_str_array("tokenizer.ggml.tokens")?;
    let merges = file
        .get_str_array("tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| load_err(format!("merge {i} `{m}` is not two tokens")))
        })
        .collect::<Result<Vec<_>>>()?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let pre = file
        .opt("tokenizer.ggml.pre", GgufFile::get_str)?
        .unwrap_or("default");
    let pre_tokenizer = pre_tokenizer(pre).ok_or_else(|| {
        Error::Unsupported(format!(
            "{}: tokenizer.ggml.pre `{}` is not a pre-tokenizer wick knows (known: {})",
            file.path().display(),
            printable(pre),
            [GPT2_NAMES, DIGITS_NAMES, LLAMA3_NAMES, QWEN2_NAMES]
                .concat()
                .join(", ")
        ))
    })?;
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    // Control tokens are matched whole in the input and can be skipped when decoding;
    // user-defined ones are matched whole but are ordinary text.
    if file.has("tokenizer.ggml.token_type") {
        let types = file.get_int_array("tokenizer.ggml.token_type")?;
        if types.len() != tokens.len() {
            return Err(load_err(format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let added = |kind: i64, special: bool| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(&types)
                .filter(|(_, t)| **t == kind)
                .map(|(tok, _)| AddedToken::from(tok.to_string(), special).normalized(false))
                .collect()
        };
        tokenizer
            .add_special_tokens(added(CONTROL, true))
            .map_err(|e| load_err(e.to_string()))?;
        tokenizer
            .add_tokens(added(USER_DEFINED, false))
            .map_err(|e| load_err(e.to_string()))?;
    }

    let special = special_tokens(file)?;
    if let Some(post) = post_processor(&tokens, &special).map_err(load_err)? {
        tokenizer.with_post_processor(Some(post));
    }
    Ok(tokenizer)
}

/// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre = name`.
fn pre_tokenizer(name: &str) -> Option<PreTokenizerWrapper> {
    let split = |regex: &str| -> Option<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .ok()?;
        Some(
            Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into(),
        )
    };
    if GPT2_NAMES.contains(&name) {
        Some(ByteLevel::new(false, true, true).into())
    } else if DIGITS_NAMES.contains(&name) {
        Some(
            Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
        )
    } else if LLAMA3_NAMES.contains(&name) {
        split(LLAMA3_SPLIT)
    } else if QWEN2_NAMES.contains(&name) {
        split(QWEN2_SPLIT)
    } else {
        None
    }
}

/// BOS/EOS around each sequence when the file asks for them.
fn post_processor(
    tokens: &[&str],
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
        let token = tokens
            .get(id as usize)
            .ok_or(format!("{what}_token_id {id} is past the vocabulary"))?;
        side.push(token.to_string());
        specials.push((token.to_string(), id));
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::tokenizer::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    fn splits(pre: &str, input: &str) -> Vec<String> {
        let mut s = PreTokenizedString::from(input);
        pre_tokenizer(pre)
            .expect("known")
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
        assert_eq!(splits("gpt2", "a  123"), ["a", "Ġ", "Ġ123"]);
        assert_eq!(splits("llama3", "x 12345"), ["x", "Ġ", "123", "45"]);
        assert_eq!(splits("qwen2", "x 12"), ["x", "Ġ", "1", "2"]);
        assert!(pre_tokenizer("no-such-pre").is_none());
    }
}
