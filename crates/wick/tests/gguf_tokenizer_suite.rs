//! llama.cpp's tokenizer test suite (models/llama.cpp/vocab/ggml-vocab-*.gguf with .inp/.out,
//! fetched by scripts/fetch-models.sh): the tokenizer wick builds from each vocabulary's GGUF
//! metadata must give the expected ids on every case, for the families wick runs.
//!
//! The case format and how the ids were made: testkit::vocab_suite.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::path::{Path, PathBuf};

use testkit::vocab_suite::{gguf_path, read_cases, vocab_dir};
use wick::io::gguf::GgufFile;
use wick::io::gguf_tokenizer::tokenizer_from_gguf;
use wick::io::tokenizer::encode_text;

/// The vocabularies of the families wick runs: every case must pass.
const REQUIRED: &[&str] = &[
    "llama-spm",
    "llama-bpe",
    "qwen2",
    "qwen35",
    "phi-3",
    "gpt-2",
    "bert-bge",
    "gemma-4",
];

/// What went wrong on each failing case (empty when all pass).
fn failures(name: &str, gguf: &Path) -> wick::Result<(usize, Vec<String>)> {
    let file = GgufFile::open(gguf)?;
    let mut tokenizer = tokenizer_from_gguf(&file)?;
    tokenizer.set_encode_special_tokens(true);
    let cases = read_cases(gguf);
    let mut failed = Vec::new();
    for (i, (input, expected)) in cases.iter().enumerate() {
        let got = encode_text(&tokenizer, input, false)?;
        if &got != expected {
            failed.push(format!(
                "{name} case {i}: input {input:?}\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    Ok((cases.len(), failed))
}

#[test]
fn every_case_of_the_families_wick_runs() {
    let mut report = Vec::new();
    for name in REQUIRED {
        let (total, failed) = failures(name, &gguf_path(name)).unwrap();
        println!("{name}: {}/{total}", total - failed.len());
        report.extend(failed);
    }
    assert!(
        report.is_empty(),
        "{} failing cases:\n{}",
        report.len(),
        report.join("\n")
    );
}

/// Every other vocabulary in the folder: cases passing / total, or the error building it. Prints
/// the table the closing note quotes; asserts only that each vocabulary either builds or is
/// refused with an error naming its file.
#[test]
fn counts_for_the_other_vocabularies() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(vocab_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    names.sort();
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if REQUIRED.iter().any(|r| path == gguf_path(r)) {
            continue;
        }
        if !Path::new(&format!("{}.inp", path.display())).exists() {
            match GgufFile::open(&path).and_then(|f| tokenizer_from_gguf(&f)) {
                Ok(_) => println!("{name}: builds (no .inp/.out cases)"),
                Err(e) => println!("{name}: {e} (no .inp/.out cases)"),
            }
            continue;
        }
        match failures(&name, &path) {
            Ok((total, failed)) => {
                println!("{name}: {}/{total} cases", total - failed.len());
                for f in failed.iter().take(3) {
                    println!("    {f}");
                }
            }
            Err(e) => {
                let msg = e.to_string();
                println!("{name}: {msg}");
                assert!(msg.contains(&name), "error does not name the file: {msg}");
            }
        }
    }
}

/// A metadata-only GGUF with the given tokenizer keys and a five-token vocabulary (no merge
/// gives its `\n\n`).
fn tiny_vocab_gguf(model: &str, pre: Option<&str>) -> tempfile::NamedTempFile {
    use candle_core::quantized::gguf_file::{self, Value};
    let strings =
        |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
    let mut keys = vec![
        ("tokenizer.ggml.model", Value::String(model.to_string())),
        (
            "tokenizer.ggml.tokens",
            strings(&["a", "b", "ab", "\n", "\n\n"]),
        ),
        ("tokenizer.ggml.merges", strings(&["a b"])),
        (
            "tokenizer.ggml.scores",
            Value::Array(vec![Value::F32(0.0); 5]),
        ),
    ];
    if let Some(pre) = pre {
        keys.push(("tokenizer.ggml.pre", Value::String(pre.to_string())));
    }
    let refs: Vec<(&str, &Value)> = keys.iter().map(|(k, v)| (*k, v)).collect();
    let mut file = tempfile::Builder::new().suffix(".gguf").tempfile().unwrap();
    gguf_file::write(file.as_file_mut(), &refs, &[]).unwrap();
    file
}

#[test]
fn tokenizer_types_wick_cannot_build_are_named_with_the_file() {
    for (model, pre, named) in [
        ("rwkv", None, "`rwkv`"),
        ("t5", None, "`t5`"),
        ("plamo2", None, "`plamo2`"),
        ("gpt2", Some("no-such-pre"), "`no-such-pre`"),
        ("gemma4", None, "2 newlines"),
    ] {
        let f = tiny_vocab_gguf(model, pre);
        let err = tokenizer_from_gguf(&GgufFile::open(f.path()).unwrap()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, wick::Error::Unsupported(_)), "{text}");
        let file = f.path().display().to_string();
        assert!(text.contains(&file) && text.contains(named), "{text}");
        assert_eq!(text.lines().count(), 1, "one line: {text}");
    }
    // The same vocabulary with a type wick builds works (so the refusals above are the type's).
    let f = tiny_vocab_gguf("gpt2", Some("gpt-2"));
    let tokenizer = tokenizer_from_gguf(&GgufFile::open(f.path()).unwrap()).unwrap();
    assert_eq!(encode_text(&tokenizer, "ab", false).unwrap(), [2]);
}
