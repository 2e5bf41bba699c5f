//! A tiny model a training run can use in seconds: the tiny_llama fixture's weights (vocab 256)
//! with a byte-level tokenizer (token i is byte i) and a plain chat template, written into a
//! temporary directory, plus helpers to run `wick` and read a run folder.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::Output;

use testkit::paths::fixture;

/// Writes the tiny chat model into `dir` and returns `dir`.
pub fn tiny_chat_model(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let base = fixture("tiny_llama");
    for f in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(base.join(f), dir.join(f)).unwrap();
    }
    let vocab: Vec<String> = (0..256).map(|b| format!("\"<0x{b:02X}>\": {b}")).collect();
    let tokenizer = format!(
        r#"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
  "normalizer": null, "pre_tokenizer": null, "post_processor": null,
  "decoder": {{"type": "ByteFallback"}},
  "model": {{"type": "BPE", "dropout": null, "unk_token": null,
    "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
    "byte_fallback": true, "ignore_merges": false, "vocab": {{{}}}, "merges": []}}}}"#,
        vocab.join(", ")
    );
    std::fs::write(dir.join("tokenizer.json"), tokenizer).unwrap();
    let template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}\
                    {% if add_generation_prompt %}<assistant>{% endif %}";
    let config = serde_json::json!({ "chat_template": template });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    dir.to_path_buf()
}

/// A small chat dataset.
pub fn chat_jsonl(path: &Path) -> PathBuf {
    let pairs = [
        ("Hello", "Hi there!"),
        ("How are you?", "Very well."),
        ("Your name?", "wick."),
        ("Capital of France?", "Paris."),
        ("2 + 2?", "4."),
        ("Goodbye", "See you."),
    ];
    let text: String = pairs
        .iter()
        .map(|(q, a)| {
            serde_json::json!({"messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

pub fn wick_in(cwd: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_wick"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("wick runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Runs `wick ARGS` in `cwd` and asserts it succeeded; returns its stderr.
pub fn ok_in(cwd: &Path, args: &[&str]) -> String {
    let out = wick_in(cwd, args);
    let err = stderr(&out);
    assert!(out.status.success(), "{args:?} failed: {err}");
    err
}

/// Runs `wick ARGS` in `cwd`, asserts it failed with exactly one `error:` line, returns it.
pub fn error_in(cwd: &Path, args: &[&str]) -> String {
    let out = wick_in(cwd, args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} should fail: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    lines[0].to_string()
}

/// The `wick train` arguments of a short run: 4 steps, a checkpoint every 2.
pub fn train_args<'a>(model: &'a str, data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        model,
        "--data",
        data,
        "--out",
        out,
        "--max-steps",
        "4",
        "--batch-size",
        "2",
        "--save-every",
        "2",
        "--lr",
        "1e-2",
        "--max-length",
        "48",
        "--seed",
        "5",
    ]
}

/// (step, loss) of every training step in `run/metrics.jsonl`.
pub fn train_losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

/// Every file under `dir` (relative path, bytes), sorted: a snapshot to compare against.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
