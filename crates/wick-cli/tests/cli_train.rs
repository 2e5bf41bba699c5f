//! `wick train` input checking, driven through the real binary: bad data and bad options fail
//! with one error line naming the file, line or option before any training starts. Data
//! errors come before the model is loaded (the model `x` does not exist, so reaching the loader
//! would give a different error); length checks need the tokenizer and use the real SmolLM2.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::path::Path;
use std::process::{Command, Output};

use testkit::paths::real_model;

fn wick(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wick"))
        .arg("train")
        .args(args)
        .output()
        .expect("wick runs")
}

fn error_line(args: &[&str]) -> String {
    let out = wick(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} should fail: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    errors[0].to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn malformed_jsonl_is_reported_with_its_line_before_loading_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(
        dir.path(),
        "train.jsonl",
        "{\"text\": \"a\"}\n{\"text\": \"b\"\n",
    );
    let out = dir.path().join("out");
    let err = error_line(&[
        "--model",
        "x",
        "--data",
        &data,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("train.jsonl:2: invalid JSON"), "{err}");
    assert!(
        !out.exists(),
        "nothing is written before the data is checked"
    );

    let data = write(
        dir.path(),
        "pc.jsonl",
        "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"q\"}\n",
    );
    let err = error_line(&[
        "--model",
        "x",
        "--data",
        &data,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("pc.jsonl:2: missing field \"completion\""),
        "{err}"
    );
}

#[test]
fn empty_dataset_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "train.jsonl", "\n\n");
    let err = error_line(&["--model", "x", "--data", &data, "--out", "o"]);
    assert!(err.contains("train.jsonl: the dataset is empty"), "{err}");
    let good = write(dir.path(), "good.jsonl", "{\"text\": \"a\"}\n");
    let err = error_line(&[
        "--model", "x", "--data", &good, "--valid", &data, "--out", "o",
    ]);
    assert!(err.contains("train.jsonl: the dataset is empty"), "{err}");
}

#[test]
fn bad_options_are_rejected_before_reading_anything() {
    let cases: &[(&[&str], &str)] = &[
        (&["--schedule", "wavy"], "schedule"),
        (&["--grad-accum", "0"], "grad_accum"),
        (&["--lr=-1"], "lr"),
        (&["--batch-size", "0"], "batch-size"),
        (&["--dtype", "f8"], "f8"),
        (&["--max-grad-norm=-2"], "max_grad_norm"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["--model", "x", "--data", "absent.jsonl", "--out", "o"];
        args.extend_from_slice(extra);
        let err = error_line(&args);
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(
            !err.contains("absent.jsonl"),
            "{extra:?} is checked before the data: {err}"
        );
    }
    let err = error_line(&["--data", "absent.jsonl", "--out", "o"]);
    assert!(err.contains("--model is required"), "{err}");
}

#[test]
fn config_file_supplies_options_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.jsonl", "not json\n");
    let cfg = write(
        dir.path(),
        "train.toml",
        &format!(
            "model = \"x\"\ndata = \"{bad}\"\nout = \"o\"\nlr = 1e-4\nschedule = \"linear\"\n"
        ),
    );
    let err = error_line(&["--config", &cfg]);
    assert!(
        err.contains("bad.jsonl:1: invalid JSON"),
        "the file's data is read: {err}"
    );
    let err = error_line(&["--config", &cfg, "--schedule", "wavy"]);
    assert!(err.contains("wavy"), "the flag wins over the file: {err}");
    let typo = write(
        dir.path(),
        "typo.toml",
        "model = \"x\"\nlearning_rate = 1.0\n",
    );
    let err = error_line(&["--config", &typo]);
    assert!(
        err.contains("typo.toml:2") && err.contains("learning_rate"),
        "{err}"
    );
}

#[test]
fn too_long_examples_are_counted_and_all_skipped_is_an_error() {
    let model = real_model("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let dir = tempfile::tempdir().unwrap();
    let long = "word ".repeat(50);
    let data = write(
        dir.path(),
        "train.jsonl",
        &format!("{{\"prompt\": \"{long}\", \"completion\": \" a\"}}\n{{\"prompt\": \"Q\", \"completion\": \"{long}\"}}\n"),
    );
    let out = dir.path().join("out");
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--data",
        &data,
        "--out",
        out.to_str().unwrap(),
        "--max-length",
        "8",
    ];
    let err = error_line(&[&args[..], &["--skip-long"]].concat());
    assert!(err.contains("train.jsonl: no usable examples"), "{err}");
    assert!(err.contains("2 skipped as too long"), "{err}");
    // Truncating keeps the second example (its completion starts within 8 tokens) and counts
    // both; training then stops at the model wrapper, which is not wired yet.
    let out = wick(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 examples") && stderr.contains("2 truncated"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 skipped with nothing to train"),
        "{stderr}"
    );
}
