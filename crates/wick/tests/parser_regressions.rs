//! Inputs the fuzz targets (fuzz/, scripts/fuzz.sh) found crashing a parser or breaking the
//! one-clear-line rule for errors, each reduced to the few bytes that matter. Every test failed
//! before its fix; they run in the normal test suite on stable.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::path::Path;

use wick::io::chat_template::ChatTemplate;
use wick::io::gguf::GgufFile;
use wick::io::tokenizer::tokenizer_from_json;
use wick::Error;

/// A GGUF v3 file with no metadata and the given tensors (name, dims, ggml type id, offset).
fn gguf(tensors: &[(&str, &[u64], u32, u64)], data_len: usize) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend(0u64.to_le_bytes());
    for (name, dims, ty, offset) in tensors {
        out.extend((name.len() as u64).to_le_bytes());
        out.extend(name.as_bytes());
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
