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
fn a_negative_seed_gets_one_clear_error() {
    let out = wick(&[
        "--model",
        "x",
        "--data",
        "absent.jsonl",
        "--out",
        "o",
        "--seed",
        "-1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("--seed must be a non-negative integer below 2^64 (got -1)"),
        "{stderr}"
    );
    assert!(!stderr.contains("-- "), "no clap tip about `--`: {stderr}");
}

#[test]
fn unknown_roles_and_fields_in_the_data_name_the_line_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(
        dir.path(),
        "chat.jsonl",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n\
         {\"messages\": [{\"role\": \"bot\", \"content\": \"b\"}]}\n",
    );
    let err = error_line(&["--model", "x", "--data", &data, "--out", "o"]);
    assert!(
        err.contains("chat.jsonl:2: messages[0]: role \"bot\" is not supported"),
        "{err}"
    );
    let data = write(
        dir.path(),
        "pc.jsonl",
        "{\"promt\": \"a\", \"completion\": \"b\"}\n",
    );
    let err = error_line(&["--model", "x", "--data", &data, "--out", "o"]);
    assert!(err.contains("pc.jsonl:1: unknown field \"promt\""), "{err}");
    // Named extra fields can be let through on purpose.
    let data = write(
        dir.path(),
        "extra.jsonl",
        "{\"id\": 7, \"text\": \"a\"}\n{\"id\": 8, \"text\": \"b\", \"src\": \"web\"}\n",
    );
    let err = error_line(&[
        "--model",
        "x",
        "--data",
        &data,
        "--out",
        "o",
        "--ignore-fields",
        "id",
    ]);
    assert!(
        err.contains("extra.jsonl:2: unknown field \"src\""),
        "{err}"
    );
}

#[test]
fn quantized_base_needs_a_gguf_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "train.jsonl", "{\"text\": \"a b c\"}\n");
    let tiny = testkit::paths::fixture("tiny_llama");
    let args = [
        "--model",
        tiny.to_str().unwrap(),
        "--data",
        &data,
        "--out",
        "o",
        "--quantized-base",
    ];
    let err = error_line(&args);
    assert!(
        err.contains("--quantized-base needs a GGUF model") && err.contains("tiny_llama"),
        "{err}"
    );
    let err = error_line(&[
        "--model",
        "x.gguf",
        "--data",
        &data,
        "--out",
        "o",
        "--quantized-base",
        "--dtype",
        "bf16",
    ]);
    assert!(
        err.contains("--dtype") && err.contains("--quantized-base"),
        "{err}"
    );
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
    // both, then trains on the one example left.
    let out = wick(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 examples") && stderr.contains("2 truncated"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 skipped with nothing to train"),
        "{stderr}"
    );
}

// ---- End to end on the real SmolLM2 with LoRA ----

fn smol() -> String {
    real_model("SmolLM2-135M-Instruct")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
        .to_str()
        .unwrap()
        .to_string()
}

fn chat_data(dir: &Path) -> String {
    let pairs = [
        ("Hello", "Hi there!"),
        ("How are you?", "Very well, thanks."),
        ("What is your name?", "I am wick."),
        ("What is the capital of France?", "Paris."),
        (
            "Tell me a joke.",
            "Why did the fox cross the river? To help the owl.",
        ),
        ("What is 2 + 2?", "4."),
        ("Goodbye", "See you soon."),
        ("What colour is the sky?", "Blue, on a clear day."),
        ("Do you like music?", "Yes, especially jazz."),
        ("Where do foxes live?", "At the edge of the forest."),
    ];
    let text: String = pairs
        .iter()
        .map(|(q, a)| {
            format!(
                "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{q}\"}}, {{\"role\": \"assistant\", \"content\": \"{a}\"}}]}}\n"
            )
        })
        .collect();
    write(dir, "chat.jsonl", &text)
}

fn e2e_args<'a>(model: &'a str, data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "--model",
        model,
        "--data",
        data,
        "--valid-split",
        "0.2",
        "--out",
        out,
        "--max-steps",
        "6",
        "--batch-size",
        "2",
        "--save-every",
        "2",
        "--eval-every",
        "3",
        "--lr",
        "1e-3",
        "--warmup-steps",
        "2",
        "--max-length",
        "64",
        "--seed",
        "3",
    ]
}

fn train_losses(out: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn cli_trains_and_writes_checkpoints_metrics_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = (smol(), chat_data(dir.path()));
    let out = dir.path().join("out");
    let run = wick(&e2e_args(&model, &data, out.to_str().unwrap()));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(train_losses(&out).len(), 6);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics.matches("\"kind\":\"valid\"").count(),
        3,
        "{metrics}"
    );
    let png = std::fs::read(out.join("loss.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    for step in [2, 4, 6] {
        let ckpt = out.join(format!("checkpoint-{step}"));
        for f in [
            "adapter_model.safetensors",
            "optimizer.safetensors",
            "trainer_state.json",
        ] {
            assert!(ckpt.join(f).is_file(), "{} lacks {f}", ckpt.display());
        }
    }
    assert!(out.join("adapter_model.safetensors").is_file());
    assert!(out.join("train.toml").is_file());
}

#[test]
fn cli_resume_after_sigkill_ends_with_the_same_losses() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = (smol(), chat_data(dir.path()));
    let reference = dir.path().join("reference");
    let run = wick(&e2e_args(&model, &data, reference.to_str().unwrap()));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let out = dir.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wick"))
        .arg("train")
        .args(e2e_args(&model, &data, out.to_str().unwrap()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !out
        .join("checkpoint-2")
        .join("trainer_state.json")
        .is_file()
    {
        assert!(started.elapsed().as_secs() < 300, "no checkpoint-2");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let resumed = wick(&["--resume", out.to_str().unwrap()]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let (got, want) = (train_losses(&out), train_losses(&reference));
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for ((gs, gl), (ws, wl)) in got.iter().zip(&want) {
        assert_eq!(gs, ws);
        assert!((gl - wl).abs() <= 1e-5, "step {gs}: {gl} vs {wl}");
    }
}
