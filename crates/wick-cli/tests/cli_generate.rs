//! `wick generate` / `wick chat` argument handling, driven through the real binary. Bad flags
//! must fail with a one-line error naming the parameter before any model is loaded (the model
//! path `x` does not exist, so reaching the loader would give a different error).

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::process::Output;

fn wick(args: &[&str], stdin: &[u8]) -> Output {
    testkit::cli::run(env!("CARGO_BIN_EXE_wick"), args, stdin)
}

/// Runs a failing command and returns its one error line.
fn error_line(args: &[&str], stdin: &[u8]) -> String {
    let out = wick(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} should fail: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert_eq!(stderr.trim().lines().count(), 1, "one error line: {stderr}");
    stderr
}

#[test]
fn out_of_range_sampling_values_are_rejected_before_loading() {
    let cases: &[(&[&str], &str)] = &[
        (&["--top-p", "1.5"], "top_p"),
        (&["--top-p", "0"], "top_p"),
        (&["--temperature", "-1"], "temperature"),
        (&["--min-p", "2"], "min_p"),
        (&["--repeat-penalty", "0"], "repetition_penalty"),
        (&["--repetition-penalty", "-1"], "repetition_penalty"),
        (&["--frequency-penalty", "2.5"], "frequency_penalty"),
        (&["--presence-penalty", "nan"], "presence_penalty"),
        (&["--logit-bias", "12"], "logit_bias"),
        (&["--logit-bias", "12=lots"], "logit_bias"),
        (&["--max-tokens", "0"], "max_tokens"),
        (&["--stop", ""], "stop"),
    ];
    for (flags, name) in cases {
        for command in ["generate", "chat"] {
            let mut args = vec![command, "--model", "x"];
            args.extend_from_slice(flags);
            if command == "generate" {
                args.push("hi");
            }
            let err = error_line(&args, b"");
            assert!(err.contains(&format!("`{name}`")), "{args:?}: {err}");
            assert!(
                !err.contains("loading"),
                "{args:?} reached the loader: {err}"
            );
        }
    }
}

#[test]
fn negative_top_k_is_a_parse_error_naming_the_flag() {
    let out = wick(&["generate", "--model", "x", "--top-k", "-1", "hi"], b"");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--top-k"), "{stderr}");
}

#[test]
fn a_negative_or_too_large_seed_gets_one_clear_error() {
    for seed in ["-1", "-5", "18446744073709551616", "1.5", "x"] {
        for command in ["generate", "chat"] {
            let mut args = vec![command, "--model", "x", "--seed", seed];
            if command == "generate" {
                args.push("hi");
            }
            let out = wick(&args, b"");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?}: {stderr}");
            let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
            assert_eq!(errors.len(), 1, "{stderr}");
            let want = format!("--seed must be a non-negative integer below 2^64 (got {seed})");
            assert!(errors[0].contains(&want), "{args:?}: {stderr}");
            assert!(!stderr.contains("-- "), "no clap tip about `--`: {stderr}");
        }
    }
}

#[test]
fn system_needs_chat() {
    let out = wick(&["generate", "--model", "x", "--system", "s", "hi"], b"");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--chat"));
}

#[test]
fn an_empty_prompt_is_rejected_before_loading() {
    let err = error_line(&["generate", "--model", "x"], b"\n");
    assert!(err.contains("prompt is empty"), "{err}");
}

#[test]
fn valid_flags_reach_the_model_loader() {
    let flags = [
        "--temperature",
        "0.7",
        "--top-k",
        "40",
        "--top-p",
        "0.9",
        "--min-p",
        "0.05",
        "--repeat-penalty",
        "1.1",
        "--frequency-penalty",
        "-0.5",
        "--presence-penalty",
        "0.5",
        "--logit-bias",
        "7=-inf",
        "--seed",
        "1",
        "--max-tokens",
        "8",
        "--stop",
        "\n\n",
        "--dtype",
        "f32",
        "--device",
        "cpu",
    ];
    let mut args = vec!["generate", "--model", "x"];
    args.extend_from_slice(&flags);
    args.extend_from_slice(&["--chat", "--system", "Be brief.", "hi"]);
    let err = error_line(&args, b"");
    assert!(
        err.contains("x: file not found"),
        "the error names the model: {err}"
    );
    let mut args = vec!["chat", "--model", "x"];
    args.extend_from_slice(&flags);
    let err = error_line(&args, b"hello\n/exit\n");
    assert!(
        err.contains("x: file not found"),
        "the error names the model: {err}"
    );
}

#[test]
fn help_lists_every_flag() {
    for command in ["generate", "chat"] {
        let out = wick(&[command, "--help"], b"");
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in [
            "--model",
            "--temperature",
            "--top-k",
            "--top-p",
            "--min-p",
            "--repeat-penalty",
            "--frequency-penalty",
            "--presence-penalty",
            "--seed",
            "--max-tokens",
            "--stop",
            "--dtype",
            "--device",
            "--system",
            "--logit-bias",
            "--truncate-prompt",
        ] {
            assert!(help.contains(flag), "{command} --help lacks {flag}");
        }
    }
    let help = wick(&["generate", "--help"], b"");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--chat"));
}
