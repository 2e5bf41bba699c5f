//! `wick embed` driven as a user would: real binary, real model, real files and pipes.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::process::Output;

use testkit::compare::cosine;
use testkit::paths::minilm;

fn wick(args: &[&str], stdin: Option<&[u8]>) -> Output {
    testkit::cli::run(env!("CARGO_BIN_EXE_wick"), args, stdin.unwrap_or_default())
}

fn model_arg() -> String {
    minilm().to_str().unwrap().to_string()
}

fn vectors(stdout: &[u8]) -> Vec<Vec<f32>> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON array"))
        .collect()
}

#[test]
fn texts_from_arguments_give_one_vector_each_in_order() {
    let out = wick(
        &[
            "embed",
            "--model",
            &model_arg(),
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "A man is eating food.",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = vectors(&out.stdout);
    assert_eq!(v.len(), 3);
    assert_eq!(v[0].len(), 384);
    assert!((cosine(&v[0], &v[1]) - 0.7553).abs() < 1e-4);
    assert_eq!(v[0], v[2]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("texts/s"), "throughput on stderr: {stderr}");
}

#[test]
fn ten_thousand_lines_from_stdin_with_progress() {
    let lines: Vec<String> = (0..10_000)
        .map(|i| format!("fox {} of {}", i * 31, i % 97))
        .collect();
    let input = lines.join("\n") + "\n";
    let out = wick(
        &["embed", "--model", &model_arg(), "--batch-size", "64"],
        Some(input.as_bytes()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v = vectors(&out.stdout);
    assert_eq!(v.len(), 10_000);
    assert!(v.iter().all(|x| x.len() == 384));
    // stderr is a pipe here, so progress comes as plain lines (a bar on a terminal).
    let progress_lines = stderr
        .lines()
        .filter(|l| l.starts_with("embedded ") && l.ends_with("/10000"));
    assert!(progress_lines.count() >= 10, "{stderr}");
    assert!(stderr.contains("embedded 10000/10000"), "{stderr}");
    // Spot-check order: line 1234 embedded alone gives the same vector.
    let single = wick(&["embed", "--model", &model_arg(), &lines[1234]], None);
    let alone = vectors(&single.stdout);
    assert!(cosine(&alone[0], &v[1234]) > 0.99999);
}

#[test]
fn jsonl_input_and_npy_output() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("vectors.npy");
    let input = "{\"text\": \"first\"}\n{\"text\": \"second\", \"id\": 2}\n{\"text\": \"\"}\n";
    let out = wick(
        &[
            "embed",
            "--model",
            &model_arg(),
            "--input-format",
            "jsonl",
            "--format",
            "npy",
            "--out",
            out_path.to_str().unwrap(),
        ],
        Some(input.as_bytes()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&out_path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'shape': (3, 384)") && header.contains("'<f4'"),
        "{header}"
    );
    assert_eq!((10 + header_len) % 64, 0, "npy header is 64-byte aligned");
    assert_eq!(bytes.len(), 10 + header_len + 3 * 384 * 4);
}

#[test]
fn malformed_jsonl_names_the_line() {
    let out = wick(
        &["embed", "--model", &model_arg(), "--input-format", "jsonl"],
        Some(b"{\"text\": \"ok\"}\n{\"txt\": \"no\"}\n"),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stdin line 2") && stderr.contains("missing field `text`"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one error line: {stderr}");
}

#[test]
#[cfg(not(feature = "cuda"))]
fn cuda_without_the_feature_is_a_clear_error() {
    let out = wick(
        &["embed", "--model", &model_arg(), "--device", "cuda:0", "x"],
        None,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without CUDA support"), "{stderr}");
}

#[test]
fn npy_without_out_is_rejected_before_loading() {
    let out = wick(
        &["embed", "--model", "/nonexistent", "--format", "npy", "x"],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format npy needs --out"));
}

#[test]
fn missing_model_path_is_named() {
    let out = wick(&["embed", "--model", "./no/such/model", "x"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("./no/such/model"), "{stderr}");
}

/// One error line, and no partial output on stdout.
fn failure_line(args: &[&str]) -> String {
    let out = wick(args, None);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!("{stderr}");
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert_eq!(stderr.trim().lines().count(), 1, "one error line: {stderr}");
    stderr
}

#[test]
fn a_gguf_file_as_embedding_model_is_refused_naming_it() {
    let gguf =
        testkit::paths::real_model("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let err = failure_line(&["embed", "--model", gguf.to_str().unwrap(), "x"]);
    assert!(
        err.contains("SmolLM2-135M-Instruct.Q4_1.gguf") && err.contains("GGUF"),
        "{err}"
    );
    assert!(!err.contains("file not found"), "{err}");
}

/// A copy of MiniLM whose first LayerNorm weight is NaN: every output is NaN.
fn minilm_with_nan_weights() -> tempfile::TempDir {
    use wick::candle_core::{safetensors, Device, Tensor};
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(minilm()).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() && entry.file_name() != "model.safetensors" {
            std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
        } else if entry.path().is_dir() {
            std::os::unix::fs::symlink(entry.path(), tmp.path().join(entry.file_name())).unwrap();
        }
    }
    let mut tensors = safetensors::load(minilm().join("model.safetensors"), &Device::Cpu).unwrap();
    let name = tensors
        .keys()
        .find(|k| k.ends_with("embeddings.LayerNorm.weight"))
        .unwrap()
        .clone();
    let n = tensors[&name].elem_count();
    tensors.insert(
        name,
        Tensor::from_vec(vec![f32::NAN; n], n, &Device::Cpu).unwrap(),
    );
    safetensors::save(&tensors, tmp.path().join("model.safetensors")).unwrap();
    tmp
}

#[test]
fn nan_weights_fail_instead_of_printing_null_vectors() {
    let model = minilm_with_nan_weights();
    let err = failure_line(&["embed", "--model", model.path().to_str().unwrap(), "a", "b"]);
    assert!(err.contains("NaN") && err.contains("text 0"), "{err}");
}
