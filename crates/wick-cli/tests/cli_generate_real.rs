//! `wick generate` and `wick chat` on the real SmolLM2-135M-Instruct GGUF, driven as a user would.
//!
//! Text is asserted only on f32 weights and only where the transformers reference
//! (fixtures/smollm2_generate) has no near-tie: `smollm2_generate::two_turn_chat_matches_transformers`
//! checks that this conversation has none, so every CPU must print these replies. The quantized
//! path's greedy text is not asserted: its first token for this prompt is a near-tie that
//! candle's AVX-512 VNNI and AVX2 kernels resolve differently (as llama.cpp's do).

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::process::Output;

use testkit::paths::{fixture, real_model};

fn gguf() -> String {
    let path = real_model("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    path.to_str().unwrap().to_string()
}

/// The reference replies of the two-turn chat (each greedy, stopped at EOS, 24 tokens at most).
fn reference_replies() -> Vec<String> {
    let path = fixture("smollm2_generate").join("expected.json");
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(exp["chat"]["max_tokens"], 24);
    exp["chat"]["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["reply"].as_str().unwrap().to_string())
        .collect()
}

fn wick(args: &[&str], stdin: &[u8]) -> Output {
    testkit::cli::run(env!("CARGO_BIN_EXE_wick"), args, stdin)
}

#[test]
fn generate_chat_answers_the_capital_of_france() {
    let model = gguf();
    let out = wick(
        &[
            "generate",
            "--model",
            &model,
            "--dtype",
            "f32",
            "--chat",
            "--temperature",
            "0",
            "--max-tokens",
            "24",
            "What is the capital of France?",
        ],
        b"",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    println!("stdout: {stdout}\nstderr: {stderr}");
    let reference = &reference_replies()[0];
    assert!(reference.contains("Paris"), "{reference}");
    assert_eq!(stdout.trim_end(), reference);
    // Only the completion on stdout; statistics on stderr.
    assert!(
        !stdout.contains("tok/s") && !stdout.contains("<|im_start|>"),
        "{stdout}"
    );
    assert!(
        stderr.contains("prefill") && stderr.contains("decode") && stderr.contains("prompt"),
        "{stderr}"
    );
}

#[test]
fn quantized_generation_with_a_seed_is_reproducible_and_stops_on_a_stop_string() {
    let model = gguf();
    let args = [
        "generate",
        "--model",
        &model,
        "--chat",
        "--temperature",
        "0.8",
        "--top-p",
        "0.9",
        "--seed",
        "7",
        "--max-tokens",
        "40",
        "--stop",
        ".",
        "Tell me about cats.",
    ];
    let a = wick(&args, b"");
    let b = wick(&args, b"");
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout, "same seed, same text");
    let text = String::from_utf8_lossy(&a.stdout);
    assert!(
        !text.contains('.'),
        "the stop string is never printed: {text:?}"
    );
}

#[test]
fn chat_reads_turns_from_stdin() {
    let model = gguf();
    let out = wick(
        &[
            "chat",
            "--model",
            &model,
            "--dtype",
            "f32",
            "--temperature",
            "0",
            "--max-tokens",
            "24",
        ],
        b"What is the capital of France?\nAnd of Italy?\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    let replies = reference_replies();
    assert!(
        replies[0].contains("Paris") && replies[1].contains("Rome"),
        "{replies:?}"
    );
    // The second reply names Rome only when the turn sees the history.
    assert_eq!(stdout, format!("{}\n{}\n", replies[0], replies[1]));
}

#[test]
fn prompt_longer_than_the_context_is_a_clear_error() {
    let model = gguf();
    let long = "word ".repeat(9000);
    let out = wick(
        &["generate", "--model", &model, "--max-tokens", "4", &long],
        b"",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("context"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
