//! `wick tokenize` through the real binary, on llama.cpp's tokenizer test suite
//! (testkit::vocab_suite) and on bad input.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::process::Output;

use testkit::vocab_suite::{gguf_path, read_cases};
use wick::candle_core::quantized::gguf_file::{self, Value};

fn wick(args: &[&str], stdin: &[u8]) -> Output {
    testkit::cli::run(env!("CARGO_BIN_EXE_wick"), args, stdin)
}

/// stdout of a command that must succeed.
fn stdout(args: &[&str], stdin: &[u8]) -> String {
    let out = wick(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// The one error line of a command that must fail.
fn error_line(args: &[&str], stdin: &[u8]) -> String {
    let out = wick(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} should fail: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", out.stdout);
    assert_eq!(stderr.trim().lines().count(), 1, "one error line: {stderr}");
    stderr
}

fn ids(line: &str) -> Vec<u32> {
    assert!(line.ends_with('\n'), "one line: {line:?}");
    line.split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect()
}

fn tokenize(vocab: &str, flags: &[&str], text: &str) -> Vec<u32> {
    let model = gguf_path(vocab).to_str().unwrap().to_string();
    let mut args = vec!["tokenize", "--model", &model];
    args.extend_from_slice(flags);
    ids(&stdout(&args, text.as_bytes()))
}

/// stdin reaches the tokenizer verbatim: the suite's cases with leading or trailing whitespace,
/// only whitespace, or no text at all (23 of llama-spm's 46; one process each, so not all 46:
/// the library test gguf_tokenizer_suite runs every case of every vocabulary).
#[test]
fn suite_cases_with_edge_whitespace_through_stdin() {
    let vocab = "llama-spm";
    let cases = read_cases(&gguf_path(vocab));
    let mut checked = 0;
    for (i, (text, expected)) in cases.iter().enumerate() {
        if !text.is_empty() && text.trim() == text {
            continue;
        }
        let got = tokenize(vocab, &["--no-parse-special"], text);
        assert_eq!(&got, expected, "{vocab} case {i}: {text:?}");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} cases");
    println!("{vocab}: {checked}/{checked} whitespace-edge cases");
}

#[test]
fn add_special_adds_what_each_model_adds() {
    let text = "Hello world";
    for (vocab, before, after) in [
        ("llama-spm", vec![1], vec![]),      // <s>
        ("llama-bpe", vec![128000], vec![]), // <|begin_of_text|>
        ("bert-bge", vec![101], vec![102]),  // [CLS] ... [SEP]
        ("gpt-2", vec![], vec![]),           // GPT-2 adds nothing
    ] {
        let plain = tokenize(vocab, &[], text);
        let special = tokenize(vocab, &["--add-special"], text);
        let framed: Vec<u32> = before.iter().chain(&plain).chain(&after).copied().collect();
        assert_eq!(special, framed, "{vocab}");
    }
}

/// A model directory: its tokenizer.json, without the padding to 128 that all-MiniLM's carries.
#[test]
fn a_model_directory_uses_its_tokenizer_json() {
    let model = testkit::paths::minilm().to_str().unwrap().to_string();
    let out = stdout(
        &["tokenize", "--model", &model, "--add-special"],
        b"Hello world",
    );
    assert_eq!(ids(&out), [101, 7592, 2088, 102]);
    let out = stdout(&["tokenize", "--model", &model], b"Hello world");
    assert_eq!(ids(&out), [7592, 2088]);
}

#[test]
fn special_token_text_is_the_special_token_unless_no_parse_special() {
    let text = "<|im_start|>user";
    let parsed = tokenize("qwen2", &[], text);
    assert_eq!(parsed[0], 151644, "{parsed:?}"); // <|im_start|>
    let plain = tokenize("qwen2", &["--no-parse-special"], text);
    assert!(!plain.contains(&151644) && plain.len() > 2, "{plain:?}");
}

#[test]
fn text_decodes_ids_back_to_the_text() {
    // Byte-level BPE gives back every byte.
    let model = gguf_path("gpt-2").to_str().unwrap().to_string();
    for text in [
        "Hello world",
        " leading space\n\ttabs and 12345 ",
        "日本語 🦙",
    ] {
        let ids = stdout(&["tokenize", "--model", &model], text.as_bytes());
        let back = stdout(&["tokenize", "--model", &model, "--text"], ids.as_bytes());
        assert_eq!(back, text);
    }
    // SentencePiece: the space put before the text is taken off again.
    let model = gguf_path("llama-spm").to_str().unwrap().to_string();
    let ids = stdout(&["tokenize", "--model", &model], b"Hello world");
    let back = stdout(&["tokenize", "--model", &model, "--text"], ids.as_bytes());
    assert_eq!(back, "Hello world");
}

#[test]
fn bad_ids_and_bad_stdin_are_one_clear_error() {
    let model = gguf_path("llama-spm").to_str().unwrap().to_string();
    let err = error_line(&["tokenize", "--model", &model, "--text"], b"1 2 x3");
    assert!(err.contains("`x3`") && err.contains("word 3"), "{err}");
    let err = error_line(&["tokenize", "--model", &model, "--text"], b"1 99999999");
    assert!(err.contains("99999999") && err.contains("32000"), "{err}");
    let err = error_line(&["tokenize", "--model", &model], b"ok \xff");
    assert!(err.contains("UTF-8") && err.contains("offset 3"), "{err}");
}

/// A metadata-only GGUF whose tokenizer keys name a type wick cannot build.
fn gguf_with_tokenizer(model: &str, pre: &str) -> tempfile::NamedTempFile {
    let strings =
        |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
    let keys = [
        ("tokenizer.ggml.model", Value::String(model.to_string())),
        ("tokenizer.ggml.pre", Value::String(pre.to_string())),
        ("tokenizer.ggml.tokens", strings(&["a", "b", "ab"])),
        ("tokenizer.ggml.merges", strings(&["a b"])),
    ];
    let refs: Vec<(&str, &Value)> = keys.iter().map(|(k, v)| (*k, v)).collect();
    let mut file = tempfile::Builder::new().suffix(".gguf").tempfile().unwrap();
    gguf_file::write(file.as_file_mut(), &refs, &[]).unwrap();
    file
}

#[test]
fn tokenizer_type_wick_cannot_build_names_the_file_and_the_type() {
    for (model, pre, named) in [
        ("rwkv", "default", "`rwkv`"),
        ("gpt2", "no-such-pre", "`no-such-pre`"),
    ] {
        let f = gguf_with_tokenizer(model, pre);
        let path = f.path().to_str().unwrap();
        let err = error_line(&["tokenize", "--model", path], b"ab");
        assert!(err.contains(path) && err.contains(named), "{err}");
    }
}
