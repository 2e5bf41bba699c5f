//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`) and Gemma 4's BPE over raw UTF-8
//! (`tokenizer.ggml.model = "gemma4"`).
//!
//! `tokenizer.ggml.pre` names the pre-tokenizer split. Each name maps to llama.cpp's list of
//! regexes (src/llama-vocab.cpp, `llm_tokenizer_bpe`): every regex in turn splits each piece the
//! previous ones left, keeping matches and the text between them as separate pieces, which is
//! what a sequence of `Split(regex, Isolated)` does.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{Vocab as BpeVocab, BPE};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{DecoderWrapper, Model, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::Vocab;
use crate::error::{printable, Error, Result};

/// GPT-2's split (llama.cpp: `LLAMA_VOCAB_PRE_TYPE_GPT2`).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 3.5: Qwen 2's split with combining marks (`\p{M}`) kept inside words.
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DEEPSEEK_LLM_LETTERS: &str = "\\s?[A-Za-z\u{b5}\u{c0}-\u{d6}\u{d8}-\u{f6}\u{f8}-\u{1ba}\u{1bc}-\u{1bf}\u{1c4}-\u{293}\u{295}-\u{2af}\u{370}-\u{373}\u{376}\u{377}\u{37b}-\u{37d}\u{37f}\u{386}\u{388}-\u{38a}\u{38c}\u{38e}-\u{3a1}\u{3a3}-\u{3f5}\u{3f7}-\u{481}\u{48a}-\u{52f}\u{531}-\u{556}\u{10a0}-\u{10c5}\u{13a0}-\u{13f5}\u{13f8}-\u{13fd}\u{1c90}-\u{1cba}\u{1cbd}-\u{1cbf}\u{1d00}-\u{1d2b}\u{1d6b}-\u{1d77}\u{1d79}-\u{1d9a}\u{1e00}-\u{1f15}\u{1f18}-\u{1f1d}\u{1f20}-\u{1f45}\u{1f48}-\u{1f4d}\u{1f50}-\u{1f57}\u{1f59}\u{1f5b}\u{1f5d}\u{1f5f}-\u{1f7d}\u{1f80}-\u{1fb4}\u{1fb6}-\u{1fbc}\u{1fbe}\u{1fc2}-\u{1fc4}\u{1fc6}-\u{1fcc}\u{1fd0}-\u{1fd3}\u{1fd6}-\u{1fdb}\u{1fe0}-\u{1fec}\u{1ff2}-\u{1ff4}\u{1ff6}-\u{1ffc}\u{2102}\u{2107}\u{210a}-\u{2113}\u{2115}\u{2119}-\u{211d}\u{2124}\u{2126}\u{2128}\u{212a}-\u{212d}\u{212f}-\u{2134}\u{2139}\u{213c}-\u{213f}\u{2145}-\u{2149}\u{214e}\u{2183}\u{2184}\u{2c00}-\u{2c7b}\u{2c7e}-\u{2ce4}\u{2ceb}-\u{2cee}\u{2cf2}\u{2cf3}\u{a640}-\u{a66d}\u{a680}-\u{a69b}\u{a722}-\u{a76f}\u{a771}-\u{a787}\u{a78b}-\u{a78e}\u{ab70}-\u{abbf}\u{fb00}-\u{fb06}\u{fb13}-\u{fb17}\u{ff21}-\u{ff3a}\u{ff41}-\u{ff5a}\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+";

/// One of llama.cpp's pre-tokenizer types: the `tokenizer.ggml.pre` names that select it, its
/// regexes, and the two flags llama.cpp sets with it.
struct PreType {
    names: &'static [&'static str],
    regexes: &'static [&'static str],
    /// A piece that is itself a token is kept whole (HF `ignore_merges`).
    ignore_merges: bool,
    /// BOS is added by default (the file's `tokenizer.ggml.add_bos_token` still decides).
    add_bos: bool,
}

const PRE_TYPES: &[PreType] = &[
    PreType {
        names: &["default"],
        regexes: &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
        ignore_merges: false,
        add_bos: false,
    },
    PreType {
        names: &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "exaone4",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
        ],
        regexes: &[GPT2],
        ignore_merges: false,
        add_bos: false,
    },
    PreType {
        // Each digit on its own, then GPT-2's split.
        names: &[
            "starcoder",
            "refact",
            "command-r",
            "smollm",
            "codeshell",
            "exaone",
            "minerva-7b",
            "mellum2",
        ],
        regexes: &[r"\p{N}", GPT2],
        ignore_merges: false,
        add_bos: false,
    },
    PreType {
        names: &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ],
        regexes: &[LLAMA3],
        ignore_merges: true,
        add_bos: true,
    },
    PreType {
        names: &["dbrx", "smaug-bpe"],
        regexes: &[LLAMA3],
        ignore_merges: false,
        add_bos: false,
    },
    PreType {
        names: &[
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "megrez",
            "stablelm2",
            "hunyuan",
            "solar-open",
        ],
        regexes: &[QWEN2],
        ignore_merges: false,
        add_bos: false,
    },
    PreType {
        names: &["qwen35"],
        regexes: &[QWEN35],
        ignore_merges: false,
        add_bos: false,
    },
    PreType {
        names: &["deepseek-llm"],
        regexes: &[
            r"[\r\n]",
            DEEPSEEK_LLM_LETTERS,
            r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
            r"\s+$",
            r"[一-龥ࠀ-一가-퟿]+",
            r"\p{N}+",
        ],
        ignore_merges: false,
        add_bos: false,
    },
    PreType {
        names: &["deepseek-coder"],
        regexes: &[
            r"[\r\n]",
            r"\s?\p{L}+",
            r"\s?\p{P}+",
            r"[一-龥ࠀ-一가-퟿]+",
            r"\p{N}",
        ],
        ignore_merges: false,
        add_bos: false,
    },
    PreType {
        names: &["falcon"],
        regexes: &[
            r"[\p{P}\$\+<=>\^~\|`]+",
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
            r"[0-9][0-9][0-9]",
        ],
        ignore_merges: false,
        add_bos: false,
    },
];

fn pre_type(name: &str) -> Option<&'static PreType> {
    PRE_TYPES.iter().find(|p| p.names.contains(&name))
}

/// Whether llama.cpp adds BOS by default for this `tokenizer.ggml.pre`.
pub(super) fn default_add_bos(pre: &str) -> bool {
    pre_type(pre).is_some_and(|p| p.add_bos)
}

/// `tokenizer.ggml.pre`, `default` when the file has none (as llama.cpp does).
pub(super) fn pre_name<'a>(vocab: &Vocab<'a>) -> Result<&'a str> {
    Ok(vocab
        .file
        .opt("tokenizer.ggml.pre", crate::io::gguf::GgufFile::get_str)?
        .unwrap_or("default"))
}

fn split(regex: &str) -> std::result::Result<PreTokenizerWrapper, String> {
    Split::new(
        SplitPattern::Regex(regex.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map(Into::into)
    .map_err(|e| format!("pre-tokenizer regex `{regex}`: {e}"))
}

/// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre = name` (byte-level BPE).
pub(crate) fn pre_tokenizer(
    name: &str,
) -> Option<std::result::Result<PreTokenizerWrapper, String>> {
    let pre = pre_type(name)?;
    let built = (|| {
        let mut steps = pre
            .regexes
            .iter()
            .map(|r| split(r))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        steps.push(ByteLevel::new(false, true, false).into());
        Ok(Sequence::new(steps).into())
    })();
    Some(built)
}

/// `first second` as llama.cpp reads a merge: split at the first space after the first byte.
fn merges(vocab: &Vocab) -> Result<Vec<(String, String)>> {
    vocab
        .file
        .get_str_array("tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.bytes()
                .skip(1)
                .position(|b| b == b' ')
                .map(|pos| (m[..pos + 1].to_string(), m[pos + 2..].to_string()))
                .ok_or_else(|| vocab.load_err(format!("merge {i} `{m}` is not two tokens")))
        })
        .collect()
}

fn bpe_model(vocab: &Vocab, ignore_merges: bool, byte_fallback: bool) -> Result<BPE> {
    let ids: BpeVocab = vocab.token_ids();
    BPE::builder()
        .vocab_and_merges(ids, merges(vocab)?)
        .ignore_merges(ignore_merges)
        .byte_fallback(byte_fallback)
        .build()
        .map_err(|e| vocab.load_err(e.to_string()))
}

/// `tokenizer.ggml.model = "gpt2"`: byte-level BPE with the split `tokenizer.ggml.pre` names.
pub(super) fn byte_level(vocab: &Vocab) -> Result<Tokenizer> {
    let pre = pre_name(vocab)?;
    let Some(pre_type) = pre_type(pre) else {
        let known: Vec<&str> = PRE_TYPES
            .iter()
            .flat_map(|p| p.names.iter().copied())
            .collect();
        return Err(Error::Unsupported(format!(
            "{}: tokenizer.ggml.pre `{}` is not a pre-tokenizer wick knows (known: {})",
            vocab.file.path().display(),
            printable(pre),
            known.join(", ")
        )));
    };
    let pre_tokenizer = pre_tokenizer(pre)
        .unwrap_or_else(|| Err(format!("no pre-tokenizer `{pre}`")))
        .map_err(|e| vocab.load_err(e))?;
    let mut tokenizer = Tokenizer::new(bpe_model(vocab, pre_type.ignore_merges, false)?);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tokenizer)
}

/// `tokenizer.ggml.model = "gemma4"`: BPE over raw UTF-8 with spaces written as `▁`, the text
/// split only into runs of newlines and runs of everything else, and `<0xNN>` byte tokens for
/// what no token covers. llama.cpp uses this split whatever `tokenizer.ggml.pre` says, and keeps
/// a run of newlines that is itself a token whole; every other piece merges as usual.
///
/// `tokenizers`' BPE can keep whole pieces only for all pieces at once (`ignore_merges`), and
/// that is not the same: 6302 of Gemma 4's tokens (`<unused0>` as plain text, `▁YYYY`) are not
/// what merging their text gives. So we merge every piece, after checking that merging each
/// newline-run token gives that token (it does in Gemma 4's vocabulary); a vocabulary where it
/// does not is refused rather than tokenized differently.
pub(super) fn gemma4(vocab: &Vocab) -> Result<Tokenizer> {
    let model = bpe_model(vocab, false, true)?;
    let ids = vocab.token_ids();
    for token in &vocab.tokens {
        if token.is_empty() || token.bytes().any(|b| b != b'\n') {
            continue;
        }
        let id = ids[*token];
        let merged: Vec<u32> = model
            .tokenize(token)
            .map_err(|e| vocab.load_err(e.to_string()))?
            .iter()
            .map(|t| t.id)
            .collect();
        if merged != [id] {
            return Err(Error::Unsupported(format!(
                "{}: tokenizer.ggml.model `gemma4` whose token {id} ({} newlines) is not what \
                 its merges give ({merged:?}); wick cannot keep such runs whole",
                vocab.file.path().display(),
                token.len()
            )));
        }
    }
    let mut tokenizer = Tokenizer::new(model);
    let escape = Replace::new(" ", "\u{2581}").map_err(|e| vocab.load_err(e.to_string()))?;
    tokenizer
        .with_normalizer(Some(escape))
        .map_err(|e| vocab.load_err(e.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(split(r"[^\n]+|[\n]+").map_err(|e| vocab.load_err(e))?));
    tokenizer.with_decoder(Some(spm_decoder(vocab, false)?));
    Ok(tokenizer)
}

/// `▁` back to spaces, `<0xNN>` tokens back to bytes; `strip_prefix` drops the space that
/// `add_space_prefix` put before the text.
pub(super) fn spm_decoder(vocab: &Vocab, strip_prefix: bool) -> Result<DecoderSequence> {
    let unescape = tokenizers::decoders::DecoderWrapper::Replace(
        Replace::new("\u{2581}", " ").map_err(|e| vocab.load_err(e.to_string()))?,
    );
    let mut steps: Vec<DecoderWrapper> =
        vec![unescape, ByteFallback::new().into(), Fuse::new().into()];
    if strip_prefix {
        steps.push(tokenizers::decoders::strip::Strip::new(' ', 1, 0).into());
    }
    Ok(DecoderSequence::new(steps))
}
