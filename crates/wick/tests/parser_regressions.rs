//! Inputs the fuzz targets (fuzz/, scripts/fuzz.sh) found crashing a parser or breaking the
//! one-clear-line rule for errors, each reduced to the few bytes that matter. Every test failed
//! before its fix; they run in the normal test suite on stable.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::path::Path;

use wick::candle_core::Device;
use wick::io::chat_template::ChatTemplate;
use wick::io::gguf::GgufFile;
use wick::io::tokenizer::tokenizer_from_json;
use wick::io::weights::WeightSource;
use wick::Error;

/// A metadata value in a test GGUF.
enum Meta<'a> {
    Str(&'a str),
    U32(u32),
}

/// A GGUF v3 file with the given metadata and tensors (name, dims, ggml type id, offset),
/// followed by `data_len` zero bytes of tensor data.
fn gguf_with(
    meta: &[(&str, Meta)],
    tensors: &[(&str, &[u64], u32, u64)],
    data_len: usize,
) -> Vec<u8> {
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    };
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (key, value) in meta {
        string(&mut out, key);
        match value {
            Meta::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, s);
            }
            Meta::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
        }
    }
    for (name, dims, ty, offset) in tensors {
        string(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(32) + data_len, 0);
    out
}

fn gguf(tensors: &[(&str, &[u64], u32, u64)], data_len: usize) -> Vec<u8> {
    gguf_with(&[], tensors, data_len)
}

fn assert_one_line(e: &Error, wanted: &str) {
    let text = e.to_string();
    assert!(!text.contains('\n'), "error spans lines: {text:?}");
    assert!(
        text.contains(wanted),
        "error does not show {wanted:?}: {text}"
    );
}

/// fuzz gguf_file: a tensor name with a newline (and a NUL) went into the error verbatim,
/// splitting it over lines (and letting a file put control characters on the user's terminal).
#[test]
fn gguf_tensor_names_in_errors_are_escaped() {
    // A type id candle does not know: the error names the tensor.
    let bytes = gguf(&[("blk.1.\0<x>\n", &[4], 1_715_208_192, 0)], 0);
    let err = GgufFile::from_bytes("hostile.gguf", bytes).err().unwrap();
    assert_one_line(&err, r"blk.1.\0<x>\n");
    // A tensor past the end of the file: the truncation error names it too.
    let bytes = gguf(&[("a\nb\u{1b}[31m", &[64], 0, 0)], 16);
    let err = GgufFile::from_bytes("hostile.gguf", bytes).err().unwrap();
    assert_one_line(&err, r"a\nb\u{1b}[31m");
}

/// fuzz tokenizer_json: tokenizers 0.23 panics (`expect("Helper")`) on a JSON syntax error
/// inside the `decoder` object, e.g. a tokenizer.json cut short there.
#[test]
fn tokenizer_json_with_a_syntax_error_in_the_decoder_is_an_error_not_a_panic() {
    let json = br#"{"version": "1.0", "decoder": {"type": "ByteLevel*, "add_prefix_space": true}}"#;
    let err = tokenizer_from_json(Path::new("models/x/tokenizer.json"), json)
        .err()
        .unwrap();
    assert!(matches!(err, Error::TokenizerLoad { .. }), "{err}");
    assert_one_line(&err, "models/x/tokenizer.json");
    assert_one_line(&err, "line 1 column");
}

/// fuzz chat_template: `{%}` (a tag whose `%}` overlaps its `{%`) panicked while rewriting
/// `{% generation %}` tags: `begin > end (2 > 1) when slicing`.
#[test]
fn a_tag_whose_end_overlaps_its_start_is_a_syntax_error_not_a_panic() {
    for template in ["{%}", "a {%} b", "{%-}", "{% if true %}x{%}{% endif %}"] {
        let result = std::panic::catch_unwind(|| ChatTemplate::new(template, None, None));
        let err = result
            .unwrap_or_else(|_| panic!("{template:?} panicked"))
            .err()
            .unwrap_or_else(|| panic!("{template:?} compiled"));
        assert!(
            matches!(
                err,
                Error::InvalidArgument {
                    name: "chat_template",
                    ..
                }
            ),
            "{template:?}: {err}"
        );
    }
}

/// fuzz tokenizer_json: a `TemplateProcessing` post-processor naming a special token its
/// `special_tokens` map lacks loads (tokenizers validates only through its builder), then
/// panics at the first encode with special tokens (`no entry found for key`).
#[test]
fn template_post_processor_with_an_undefined_special_token_is_refused_at_load() {
    let json = br#"{
        "version": "1.0",
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "Sequence", "processors": [{
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {}
        }]},
        "model": {"type": "WordLevel", "vocab": {"a": 0, "[UNK]": 1}, "unk_token": "[UNK]"}
    }"#;
    let path = Path::new("models/x/tokenizer.json");
    let result = std::panic::catch_unwind(|| {
        tokenizer_from_json(path, json).map(|t| t.encode("a a", true).map(|e| e.len()))
    });
    let err = match result {
        Err(_) => panic!("loading or encoding panicked"),
        Ok(Ok(encoded)) => panic!("loaded, and encoding gave {encoded:?}"),
        Ok(Err(e)) => e,
    };
    assert!(matches!(err, Error::TokenizerLoad { .. }), "{err}");
    assert_one_line(&err, "[CLS]");
}

/// fuzz tokenizer_json: a lone surrogate escape (`\uD800`) inside `decoder` is invalid JSON
/// that a syntax-only check (serde's IgnoredAny) let through, and tokenizers panicked on it as above.
#[test]
fn tokenizer_json_with_an_invalid_escape_in_the_decoder_is_an_error_not_a_panic() {
    for escape in [r"\uD800", r"\uD800\u0041", r"\uDC00"] {
        let json = format!(r#"{{"version": "1.0", "decoder": {{"type": "{escape}"}}}}"#);
        let result = std::panic::catch_unwind(|| {
            tokenizer_from_json(Path::new("models/x/tokenizer.json"), json.as_bytes()).err()
        });
        let err = result
            .unwrap_or_else(|_| panic!("{escape}: loading panicked"))
            .unwrap_or_else(|| panic!("{escape}: loaded"));
        assert!(matches!(err, Error::TokenizerLoad { .. }), "{err}");
        assert_one_line(&err, "invalid JSON");
    }
}

/// fuzz gguf_file: a quantized `attn_q` with 0 rows in a `llama` file passed the head-count
/// check (0 is a multiple of 2 x heads) and un-permuting its rows divided by zero.
#[test]
fn quantized_q_projection_with_no_rows_is_an_error_not_a_division_by_zero() {
    let meta = [
        ("general.architecture", Meta::Str("llama")),
        ("llama.attention.head_count", Meta::U32(2)),
    ];
    // Q4_0 (type 2), stored dims [32, 0]: HF shape [0, 32].
    let bytes = gguf_with(&meta, &[("blk.0.attn_q.weight", &[32, 0], 2, 0)], 32);
    let file = GgufFile::from_bytes("hostile.gguf", bytes).unwrap();
    let name = "model.layers.0.self_attn.q_proj.weight";
    let result = std::panic::catch_unwind(|| {
        file.quantized(name, &[0, 32], &Device::Cpu)
            .map(|q| q.is_some())
    });
    let err = result.expect("panicked").expect_err("loaded");
    assert_one_line(&err, "blk.0.attn_q.weight");
}

/// fuzz gguf_file / gguf_tokenizer: a tensor whose dims multiply past 2^64 overflowed the
/// element count when its extent was checked (a panic with overflow checks; without them a
/// wrapped, too-small size that passed the check). A shape that is not whole quantization
/// blocks opened too, its size rounded down.
#[test]
fn tensor_dims_whose_product_overflows_are_an_error() {
    let huge = 1u64 << 40;
    for dims in [&[huge, huge][..], &[huge, huge, huge], &[u64::MAX, 2]] {
        let bytes = gguf(&[("w", dims, 0, 0)], 64);
        let result = std::panic::catch_unwind(|| GgufFile::from_bytes("hostile.gguf", bytes).err());
        let err = result
            .unwrap_or_else(|_| panic!("{dims:?}: panicked"))
            .unwrap_or_else(|| panic!("{dims:?}: opened"));
        assert!(matches!(err, Error::BadGguf { .. }), "{dims:?}: {err}");
        assert_one_line(&err, "`w`");
    }
    // Not a whole number of quantization blocks: 33 elements of Q4_0 (32 per block).
    let bytes = gguf(&[("w", &[33], 2, 0)], 64);
    let err = GgufFile::from_bytes("hostile.gguf", bytes).err().unwrap();
    assert_one_line(&err, "whole Q4_0 blocks");
}

/// fuzz gguf_file: an empty tensor at an offset that is not 8-aligned was copied into an empty
/// `Vec<u8>`, whose dangling pointer is not aligned for candle's block types either; candle
/// then built a slice from it (undefined behaviour; with debug assertions an abort).
#[test]
fn empty_tensor_at_an_unaligned_offset_loads() {
    for (ty, dims) in [(0u32, [0u64]), (1, [0]), (2, [0]), (12, [0])] {
        let bytes = gguf(&[("e", &dims, ty, 1)], 64);
        let file = GgufFile::from_bytes("odd.gguf", bytes).unwrap();
        let q = file.qtensor("e", &Device::Cpu).unwrap();
        assert_eq!(q.shape().elem_count(), 0, "type {ty}");
    }
}
