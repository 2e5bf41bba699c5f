//! `wick perplexity` on the real SmolLM2-135M-Instruct GGUF, driven as a user would: the
//! `PPL = value +/- stderr` line (the figure itself is checked against PyTorch in
//! crates/wick/tests/perplexity_smollm2.rs), and bad input.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::process::Output;

use testkit::paths::{fixture, real_model};

fn gguf() -> String {
    let path = real_model("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    path.to_str().unwrap().to_string()
}

fn text() -> String {
    fixture("perplexity")
        .join("apache-2.0.txt")
        .to_str()
        .unwrap()
        .to_string()
}

fn wick(args: &[&str]) -> Output {
    testkit::cli::run(env!("CARGO_BIN_EXE_wick"), args, b"")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn prints_llama_cpp_style_ppl_close_to_pytorch() {
    let model = gguf();
    let text = text();
    let out = wick(&[
        "perplexity",
        "--model",
        &model,
        "--file",
        &text,
        "--ctx",
        "256",
        "--dtype",
        "f32",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let line = stdout.trim();
    let rest = line
        .strip_prefix("PPL = ")
        .unwrap_or_else(|| panic!("{line}"));
    let (ppl, err) = rest.split_once(" +/- ").unwrap();
    let (ppl, err): (f64, f64) = (ppl.parse().unwrap(), err.parse().unwrap());
    let exp: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("perplexity").join("expected.json")).unwrap(),
    )
    .unwrap();
    let want = exp["by_ctx"]["256"]["ppl"].as_f64().unwrap();
    let want_err = exp["by_ctx"]["256"]["stderr"].as_f64().unwrap();
    assert!((ppl / want - 1.0).abs() < 1e-3, "{line} vs PyTorch {want}");
    assert!(
        (err / want_err - 1.0).abs() < 1e-2,
        "{line} vs PyTorch +/- {want_err}"
    );
    assert!(stderr(&out).contains("8 chunks of 256"), "{}", stderr(&out));
}

#[test]
fn bad_input_gets_one_clear_error() {
    let model = gguf();
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "Only a few words.").unwrap();
    let binary = dir.path().join("binary.txt");
    std::fs::write(&binary, b"abc\xff\xfedef").unwrap();
    let missing = dir.path().join("missing.txt");
    let text = text();
    let cases: [(Vec<&str>, Vec<String>); 4] = [
        (
            vec!["--file", short.to_str().unwrap()],
            vec![
                "short.txt".into(),
                "tokens".into(),
                "needs at least 1024".into(),
            ],
        ),
        (
            vec!["--file", binary.to_str().unwrap()],
            vec!["binary.txt".into(), "not UTF-8".into(), "offset 3".into()],
        ),
        (
            vec!["--file", missing.to_str().unwrap()],
            vec!["missing.txt".into()],
        ),
        (
            vec!["--file", &text, "--ctx", "100000"],
            vec!["--ctx 100000".into(), "8192".into()],
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["perplexity", "--model", &model];
        args.extend(extra.iter().copied());
        let out = wick(&args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(
            err.trim()
                .lines()
                .filter(|l| l.starts_with("error"))
                .count(),
            1,
            "{err}"
        );
        for w in want {
            assert!(err.contains(&w), "{args:?}: no `{w}` in {err}");
        }
    }
}
