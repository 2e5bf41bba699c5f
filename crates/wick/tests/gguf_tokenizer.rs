//! The tokenizer built from SmolLM2-135M-Instruct's GGUF metadata against the reference ids and
//! decodes stored by fixtures/smollm2_tokenizer/gen.py (transformers' own GGUF tokenizer).
//!
//! Where transformers and llama.cpp disagree (the file's `tokenizer.ggml.pre = "smollm"` means a
//! digit split that transformers 5.24 does not apply), the fixture stores the upstream ids too
//! (`ids_upstream`, SmolLM2's tokenizer.json / llama.cpp) and we must match those.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use serde::Deserialize;
use testkit::paths::{fixture, real_model};
use tokenizers::Tokenizer;
use wick::io::gguf::GgufFile;
use wick::io::gguf_tokenizer::{special_tokens, tokenizer_from_gguf};

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    decoded: String,
    ids_with_special: Option<Vec<u32>>,
    ids_upstream: Option<Vec<u32>>,
    decoded_upstream: Option<String>,
}

#[derive(Deserialize)]
struct Fixture {
    bos_token_id: u32,
    eos_token_id: u32,
    pad_token_id: u32,
    chat_template: String,
    cases: Vec<Case>,
}

fn fixture_cases() -> Fixture {
    let path = fixture("smollm2_tokenizer").join("cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn gguf() -> GgufFile {
    let dir = real_model("SmolLM2-135M-Instruct");
    GgufFile::open(dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap()
}

fn encode(tok: &Tokenizer, text: &str, special: bool) -> Vec<u32> {
    tok.encode(text, special).unwrap().get_ids().to_vec()
}

#[test]
fn encode_and_decode_match_reference_on_every_case() {
    let fx = fixture_cases();
    assert!(fx.cases.len() >= 200, "only {} cases", fx.cases.len());
    let tok = tokenizer_from_gguf(&gguf()).unwrap();

    let mut failures = Vec::new();
    let mut upstream_only = Vec::new();
    for case in &fx.cases {
        let expected = case.ids_upstream.as_ref().unwrap_or(&case.ids);
        if case.ids_upstream.is_some() {
            upstream_only.push(case.text.as_str());
        }
        let ours = encode(&tok, &case.text, false);
        if &ours != expected {
            failures.push(format!(
                "encode {:?}\n  ours:   {ours:?}\n  theirs: {expected:?}",
                case.text
            ));
        }
        let with_special = case.ids_with_special.as_ref().unwrap_or(expected);
        let ours = encode(&tok, &case.text, true);
        if &ours != with_special {
            failures.push(format!(
                "encode+special {:?}\n  ours:   {ours:?}\n  theirs: {with_special:?}",
                case.text
            ));
        }
        let mut decodes = vec![(&case.ids, &case.decoded)];
        if let (Some(ids), Some(text)) = (&case.ids_upstream, &case.decoded_upstream) {
            decodes.push((ids, text));
        }
        for (ids, theirs) in decodes {
            let ours = tok.decode(ids, false).unwrap();
            if &ours != theirs {
                failures.push(format!(
                    "decode {ids:?}\n  ours:   {ours:?}\n  theirs: {theirs:?}"
                ));
            }
        }
    }
    println!(
        "{} cases; {} follow the upstream digit split where transformers does not: {upstream_only:?}",
        fx.cases.len(),
        upstream_only.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches; first: {}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn special_tokens_and_chat_template_match_reference() {
    let fx = fixture_cases();
    let file = gguf();
    let special = special_tokens(&file).unwrap();
    assert_eq!(special.bos, Some(fx.bos_token_id));
    assert_eq!(special.eos, Some(fx.eos_token_id));
    assert_eq!(special.pad, Some(fx.pad_token_id));
    assert!(!special.add_bos && !special.add_eos);
    assert_eq!(
        file.chat_template().unwrap(),
        Some(fx.chat_template.as_str())
    );

    let tok = tokenizer_from_gguf(&file).unwrap();
    let ids = encode(&tok, "<|im_start|>user\nhi<|im_end|>", false);
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    // Control tokens are special: skipped on request.
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nhi");
}
