//! llama.cpp's tokenizer test suite, fetched by scripts/fetch-models.sh into
//! models/llama.cpp/vocab: `ggml-vocab-NAME.gguf` with `.inp` (the texts) and `.out` (the ids).
//!
//! The format is that of llama.cpp's tests/test-tokenizer-0.cpp: the .inp cases are separated by
//! "\n__ggml_vocab_test__\n" (nothing after the last separator is no case), the .out has one
//! line of space-separated ids per case, and the ids are without special tokens added
//! (`add_special = false`) and with special-token text in the input read as plain text
//! (`parse_special = false`).

use std::path::{Path, PathBuf};

use crate::paths::real_model;

/// The folder of the suite (panics with the fix when it was not fetched).
pub fn vocab_dir() -> PathBuf {
    real_model("llama.cpp").join("vocab")
}

pub fn gguf_path(name: &str) -> PathBuf {
    vocab_dir().join(format!("ggml-vocab-{name}.gguf"))
}

/// (input, expected ids) of each case of the vocabulary at `gguf`.
pub fn read_cases(gguf: &Path) -> Vec<(String, Vec<u32>)> {
    let read = |ext: &str| {
        let path = format!("{}.{ext}", gguf.display());
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let (inp, out) = (read("inp"), read("out"));
    const SEP: &str = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        let (case, next) = rest.split_once(SEP).unwrap_or((rest, ""));
        inputs.push(case.to_string());
        rest = next;
    }
    let expected: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| {
                    t.parse()
                        .unwrap_or_else(|_| panic!("{}: id {t}", gguf.display()))
                })
                .collect()
        })
        .collect();
    assert_eq!(
        inputs.len(),
        expected.len(),
        "{}: cases in .inp and .out",
        gguf.display()
    );
    inputs.into_iter().zip(expected).collect()
}
