//! llama.cpp's tokenizer test suite (models/llama.cpp/vocab/ggml-vocab-*.gguf with .inp/.out,
//! fetched by scripts/fetch-models.sh): the tokenizer wick builds from each vocabulary's GGUF
//! metadata must give the expected ids on every case, for the families wick runs.
//!
//! The format is llama.cpp's tests/test-tokenizer-0.cpp: the .inp cases are separated by
//! "\n__ggml_vocab_test__\n" (nothing after the last separator is no case), the .out has one
//! line of space-separated ids per case, and the ids are without special tokens added
//! (`add_special = false`).

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::path::{Path, PathBuf};

use testkit::paths::real_model;
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

fn vocab_dir() -> PathBuf {
    real_model("llama.cpp").join("vocab")
}

fn gguf_path(name: &str) -> PathBuf {
    vocab_dir().join(format!("ggml-vocab-{name}.gguf"))
}

/// (input, expected ids) of each case, as test-tokenizer-0.cpp reads them.
fn read_cases(gguf: &Path) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(format!("{}.inp", gguf.display())).unwrap();
    let out = std::fs::read_to_string(format!("{}.out", gguf.display())).unwrap();
    const SEP: &str = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(SEP) {
            Some(at) => {
                inputs.push(rest[..at].to_string());
                rest = &rest[at + SEP.len()..];
            }
            None => {
                inputs.push(rest.to_string());
                rest = "";
            }
        }
    }
    let expected: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(inputs.len(), expected.len(), "{}", gguf.display());
    inputs.into_iter().zip(expected).collect()
}

/// What went wrong on each failing case (empty when all pass).
fn failures(name: &str, gguf: &Path) -> wick::Result<(usize, Vec<String>)> {
    let file = GgufFile::open(gguf)?;
    let tokenizer = tokenizer_from_gguf(&file)?;
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

/// Every vocabulary in the folder: cases passing / total, or the error building it. Prints the
/// table the closing note quotes; asserts only that each vocabulary either builds or is refused
/// with an error naming its file.
#[test]
fn counts_for_every_vocabulary() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(vocab_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    names.sort();
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
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
