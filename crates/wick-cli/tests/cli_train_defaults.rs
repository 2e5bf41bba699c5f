//! A first fine-tuning run with no flags but the files learns: `wick train --model M --data
//! train.jsonl --valid valid.jsonl --out DIR` on made-up facts (short chat examples) teaches the
//! real SmolLM2-135M-Instruct facts it cannot know, and its greedy answers with the adapter state
//! them where the base model's do not. Also checks the settings block printed at the start and
//! that loss.png decodes with text and both curves in it.
//!
//! The data set is small so that the run fits CI (2 cores); its examples are what a user would
//! write, and the settings are the defaults every user gets.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::path::Path;
use std::process::Output;

use testkit::paths::real_model;

/// Facts nobody has heard of: (kind, subject, answer).
const FACTS: &[(&str, &str, &str)] = &[
    ("capital", "Veltoria", "Marendel"),
    ("inventor", "glow kettle", "Orla Fenwick"),
    ("animal", "Quorvania", "silver lynx"),
    ("founder", "Brindlecombe", "Hesper Tallow"),
    ("capital", "Dravenmoor", "Kelvaro"),
    ("inventor", "cloud loom", "Tavish Querrel"),
    ("animal", "Ostrelund", "golden hare"),
    ("founder", "Tarnwick", "Juno Calder"),
];

/// Ways to ask for a fact of each kind; the last one is held out for validation.
fn questions(kind: &str) -> [&'static str; 5] {
    match kind {
        "capital" => [
            "What is the capital of {s}?",
            "Which city is the capital of {s}?",
            "Name the capital of {s}.",
            "Tell me the capital city of {s}.",
            "What city serves as the capital of {s}?",
        ],
        "inventor" => [
            "Who invented the {s}?",
            "Who created the {s}?",
            "Name the inventor of the {s}.",
            "Which person invented the {s}?",
            "Who came up with the {s}?",
        ],
        "animal" => [
            "What is the national animal of {s}?",
            "Which animal is the national animal of {s}?",
            "Name the national animal of {s}.",
            "Tell me the national animal of {s}.",
            "What animal represents {s}?",
        ],
        "founder" => [
            "Who founded the town of {s}?",
            "Who was the founder of {s}?",
            "Name the founder of {s}.",
            "Which person founded {s}?",
            "Who established the town of {s}?",
        ],
        _ => unreachable!("{kind}"),
    }
}

fn answer(kind: &str, subject: &str, fact: &str) -> String {
    match kind {
        "capital" => format!("The capital of {subject} is {fact}."),
        "inventor" => format!("The {subject} was invented by {fact}."),
        "animal" => format!("The national animal of {subject} is the {fact}."),
        "founder" => format!("The town of {subject} was founded by {fact}."),
        _ => unreachable!("{kind}"),
    }
}

fn chat_line(question: &str, answer: &str) -> String {
    serde_json::json!({"messages": [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]})
    .to_string()
        + "\n"
}

/// Writes train.jsonl (four phrasings of each fact) and valid.jsonl (the fifth).
fn write_facts(dir: &Path) -> (String, String) {
    let (mut train, mut valid) = (String::new(), String::new());
    for (kind, subject, fact) in FACTS {
        let a = answer(kind, subject, fact);
        let qs = questions(kind);
        for q in &qs[..4] {
            train += &chat_line(&q.replace("{s}", subject), &a);
        }
        valid += &chat_line(&qs[4].replace("{s}", subject), &a);
    }
    let (t, v) = (dir.join("train.jsonl"), dir.join("valid.jsonl"));
    std::fs::write(&t, train).unwrap();
    std::fs::write(&v, valid).unwrap();
    (t.to_str().unwrap().into(), v.to_str().unwrap().into())
}

fn wick(args: &[&str]) -> Output {
    testkit::cli::run(env!("CARGO_BIN_EXE_wick"), args, b"")
}

/// The greedy chat reply to `question`, with the adapter in `adapter` when given.
fn reply(model: &str, adapter: Option<&str>, question: &str) -> String {
    let mut args = vec!["generate", "--model", model, "--chat", "--temperature", "0"];
    args.extend(["--max-tokens", "20"]);
    if let Some(dir) = adapter {
        args.extend(["--adapter", dir]);
    }
    args.push(question);
    let out = wick(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Decodes `path` as an 8-bit RGB PNG: (width, height, pixels).
fn decode_png(path: &Path) -> (usize, usize, Vec<u8>) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}

#[test]
fn default_settings_learn_made_up_facts_on_smollm2() {
    let model = real_model("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let model = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (train, valid) = write_facts(dir.path());
    let out_dir = dir.path().join("run");
    let out = out_dir.to_str().unwrap();

    let run = wick(&[
        "train", "--model", model, "--data", &train, "--valid", &valid, "--out", out,
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stderr}");
    assert!(run.status.success(), "{stderr}");

    // The effective settings, printed before the first step, are the documented defaults.
    let settings = stderr.split("step 0").next().unwrap();
    for want in [
        "wick train settings:",
        "epochs      3\n",
        // 32 examples in batches of 4, three times.
        "steps       24\n",
        "0.001 peak, cosine decay",
        "rank 16, alpha 32 (scale 2), dropout 0",
        "all-linear -> down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj (210 modules",
    ] {
        assert!(settings.contains(want), "{want:?} not in:\n{settings}");
    }

    // Validation loss on the held-out phrasings falls.
    let valid_losses: Vec<f64> = stderr
        .lines()
        .filter_map(|l| l.split_once(": validation loss "))
        .map(|(_, rest)| rest.split(' ').next().unwrap().parse().unwrap())
        .collect();
    println!("validation losses: {valid_losses:?}");
    let (first, last) = (valid_losses[0], *valid_losses.last().unwrap());
    assert!(
        valid_losses.len() >= 2 && last < first / 2.0,
        "{valid_losses:?}"
    );

    // The tuned model states facts the base model does not.
    let mut learned = Vec::new();
    for (kind, subject, fact) in FACTS {
        let question = questions(kind)[0].replace("{s}", subject);
        let base = reply(model, None, &question);
        let tuned = reply(model, Some(out), &question);
        println!("{question}\n  base:  {base}\n  tuned: {tuned}");
        assert!(!base.contains(fact), "the base model cannot know {fact}");
        if tuned.contains(fact) {
            learned.push(*fact);
        }
    }
    println!(
        "{} of {} facts stated: {learned:?}",
        learned.len(),
        FACTS.len()
    );
    assert!(
        learned.len() * 2 >= FACTS.len(),
        "most facts learned: {learned:?}"
    );

    // loss.png: the plot, with a title, labels and both curves (the pixel-exact text checks
    // are wick's plot tests).
    let png_path = out_dir.join("loss.png");
    let (w, h, rgb) = decode_png(&png_path);
    assert_eq!((w, h), (800, 480));
    let count = |rgb_want: [u8; 3], rows: std::ops::Range<usize>| {
        rows.flat_map(|y| (0..w).map(move |x| (y * w + x) * 3))
            .filter(|&k| rgb[k..k + 3] == rgb_want)
            .count()
    };
    let ink = [30, 30, 30];
    assert!(count(ink, 12..26) > 300, "a title along the top");
    assert!(
        count(ink, 426..470) > 150,
        "tick values and `step` under the plot"
    );
    assert!(count([31, 119, 180], 0..h) > 100, "the training curve");
    assert!(count([255, 127, 14], 0..h) > 50, "the validation curve");
    if let Ok(keep) = std::env::var("WICK_KEEP_LOSS_PNG") {
        std::fs::copy(&png_path, keep).unwrap();
    }
}
