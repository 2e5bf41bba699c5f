//! `wick merge` and `--adapter` driven through the real binary: the tiny PEFT fixture merged
//! gives PEFT's adapter logits; on the real SmolLM2 GGUF, generation with `--adapter` equals
//! generation from the merged directory up to the first near-tie, and (with WICK_PYTHON set to a python
//! with torch + transformers) transformers loads the merged directory, tokenizer included, with
//! wick's adapter logits.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use testkit::greedy::{greedy, Greedy};
use testkit::paths::{fixture, real_model};
use wick::candle_core::{DType, Device, Tensor};
use wick::generate::load::load_causal_lm;
use wick::io::safetensors::SafetensorsWeights;
use wick::io::weights::WeightView;
use wick::io::ModelFiles;
use wick::lora::{self, LoraConfig, TargetModules};
use wick::models::{DecoderConfig, DecoderModel};

/// An adapter merged into f32 weights and the same adapter unmerged differ by rounding (about
/// 1e-4 of a logit here): a step decided by less than this may go either way.
const NEAR_TIE: f32 = 1e-2;

fn wick(args: &[&str], stdin: &[u8]) -> Output {
    testkit::cli::run(env!("CARGO_BIN_EXE_wick"), args, stdin)
}

fn ok(args: &[&str]) -> Output {
    let out = wick(args, b"");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn error_line(args: &[&str]) -> String {
    let out = wick(args, b"");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} should fail");
    assert_eq!(stderr.trim().lines().count(), 1, "one error line: {stderr}");
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn load_dir(dir: &Path) -> DecoderModel {
    let cfg = DecoderConfig::from_file(&dir.join("config.json")).unwrap();
    let w = SafetensorsWeights::open(&[dir.join("model.safetensors")]).unwrap();
    DecoderModel::new(
        &cfg,
        &WeightView::new(Arc::new(w), DType::F32, &Device::Cpu),
    )
    .unwrap()
}

#[test]
fn merging_the_peft_fixture_gives_peft_adapter_logits() {
    let case = fixture("lora_peft").join("llama_random_b");
    let adapter = case.join("adapter");
    let base = fixture("tiny_llama");
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("merged");
    let args = [
        "merge",
        "--model",
        s(&base),
        "--adapter",
        s(&adapter),
        "--out",
        s(&out_dir),
    ];
    let out = ok(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("merged 14 adapted modules"), "{stderr}");

    let expected = SafetensorsWeights::open(&[case.join("expected.safetensors")]).unwrap();
    let ids = expected
        .load("input_ids", &[2, 12], DType::I64, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap();
    let want = expected
        .load("logits", &[2, 12, 256], DType::F32, &Device::Cpu)
        .unwrap();
    let got = load_dir(&out_dir).forward_uncached(&ids, None).unwrap();
    let diff = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    println!("merged vs PEFT adapter logits: max abs diff {diff:.3e}");
    assert!(diff < 1e-4, "max abs diff {diff}");

    let err = error_line(&args);
    assert!(err.contains("--force"), "{err}");
    let mut forced = args.to_vec();
    forced.push("--force");
    ok(&forced);

    let err = error_line(&[
        "merge",
        "--model",
        s(&base),
        "--adapter",
        s(&base),
        "--out",
        "x",
    ]);
    assert!(err.contains("adapter_config.json"), "{err}");
    let err = error_line(&[
        "merge",
        "--model",
        s(&base),
        "--adapter",
        s(&adapter),
        "--out",
        "x",
        "--dtype",
        "q4",
    ]);
    assert!(err.contains("dtype"), "{err}");
}

/// An adapter for SmolLM2 on q_proj and v_proj with B large enough to change greedy output.
fn smollm2_adapter(gguf: &Path, dir: &Path) {
    let file = wick::io::gguf::GgufFile::open(gguf).unwrap();
    let cfg = DecoderConfig::from_value(file.hf_config().unwrap(), gguf).unwrap();
    let view = WeightView::new(Arc::new(file), DType::F32, &Device::Cpu).dequantized();
    let mut model = DecoderModel::new(&cfg, &view).unwrap();
    let lcfg = LoraConfig::new(
        8,
        16.0,
        TargetModules::List(vec!["q_proj".into(), "v_proj".into()]),
    );
    let params = lora::apply(&mut model, &lcfg, 1).unwrap();
    for m in params.modules() {
        let n = m.b.elem_count();
        let values: Vec<f32> = (0..n)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.01)
            .collect();
        m.b.set(&Tensor::from_vec(values, m.b.dims(), &Device::Cpu).unwrap())
            .unwrap();
    }
    lora::save_adapter(dir, &lcfg, &params).unwrap();
}

#[test]
fn smollm2_generation_with_adapter_equals_the_merged_model() {
    let gguf = real_model("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let tmp = tempfile::tempdir().unwrap();
    let adapter = tmp.path().join("adapter");
    smollm2_adapter(&gguf, &adapter);
    let merged = tmp.path().join("merged");
    ok(&[
        "merge",
        "--model",
        s(&gguf),
        "--adapter",
        s(&adapter),
        "--out",
        s(&merged),
    ]);
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(merged.join(f).is_file(), "{f} missing");
    }
    let tok_cfg = std::fs::read_to_string(merged.join("tokenizer_config.json")).unwrap();
    assert!(tok_cfg.contains("chat_template") && tok_cfg.contains("eos_token"));

    let prompt = "The capital of France is";
    let gen = |model: &Path, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            s(model),
            "--temperature",
            "0",
            "--max-tokens",
            "12",
        ];
        args.extend_from_slice(extra);
        args.push(prompt);
        String::from_utf8(ok(&args).stdout).unwrap()
    };
    let with_adapter = gen(&gguf, &["--dtype", "f32", "--adapter", s(&adapter)]);
    let from_merged = gen(&merged, &[]);
    let base = gen(&gguf, &["--dtype", "f32"]);
    println!("base: {base:?}\nadapter: {with_adapter:?}\nmerged: {from_merged:?}");
    // Merging rounds differently from the unmerged adapter, so the two agree only up to the
    // first near-tie of the adapter's greedy path.
    let adapter_path = library_greedy(&gguf, Some(&adapter), prompt);
    let base_path = library_greedy(&gguf, None, prompt);
    for (what, text) in [
        ("--adapter", &with_adapter),
        ("the merged model", &from_merged),
    ] {
        assert!(
            text.starts_with(&adapter_path.decided_text),
            "{what} prints {text:?}, not the decided {:?}",
            adapter_path.decided_text
        );
    }
    assert!(base.starts_with(&base_path.decided_text), "{base:?}");
    let first_change = adapter_path
        .token_ids
        .iter()
        .zip(&base_path.token_ids)
        .position(|(a, b)| a != b);
    assert!(
        first_change.is_some_and(|i| i < adapter_path.decided.min(base_path.decided)),
        "the adapter changes a decided token: {:?} vs {:?}",
        adapter_path.token_ids,
        base_path.token_ids
    );
    // On the quantized base (adapter unmerged next to Q4_1 weights) and in chat.
    gen(&gguf, &["--adapter", s(&adapter)]);
    let chat = wick(
        &[
            "chat",
            "--model",
            s(&gguf),
            "--adapter",
            s(&adapter),
            "--max-tokens",
            "4",
            "--seed",
            "1",
        ],
        b"Hi\n",
    );
    assert!(
        chat.status.success(),
        "{}",
        String::from_utf8_lossy(&chat.stderr)
    );
    transformers_loads_merged(&gguf, &adapter, &merged, tmp.path());
    let err = error_line(&[
        "generate",
        "--model",
        s(&gguf),
        "--adapter",
        s(tmp.path()),
        "hi",
    ]);
    assert!(err.contains("adapter_config.json"), "{err}");
}

/// Greedy path of the f32 SmolLM2 (with `adapter` when given) for a plain prompt, as
/// `wick generate --temperature 0 --max-tokens 12` runs it.
fn library_greedy(gguf: &Path, adapter: Option<&Path>, prompt: &str) -> Greedy {
    let files = ModelFiles::resolve(s(gguf)).unwrap();
    let mut lm = load_causal_lm(&files, &Device::Cpu, Some(DType::F32), adapter).unwrap();
    let ids = lm
        .tokenizer
        .encode(prompt, true)
        .unwrap()
        .get_ids()
        .to_vec();
    let path = greedy(&mut lm, &ids, 12, NEAR_TIE);
    println!(
        "margins {:?} (adapter: {})",
        path.margins,
        adapter.is_some()
    );
    path
}

/// With WICK_PYTHON set: transformers loads the merged directory (weights and the tokenizer
/// written from GGUF metadata) and gives wick's adapter logits (dequantized base + adapter).
fn transformers_loads_merged(gguf: &Path, adapter: &Path, merged: &Path, tmp: &Path) {
    let Some(python) = std::env::var_os("WICK_PYTHON").filter(|p| !p.is_empty()) else {
        println!("skipped the transformers check of the merged SmolLM2: set WICK_PYTHON");
        return;
    };
    let file = wick::io::gguf::GgufFile::open(gguf).unwrap();
    let cfg = DecoderConfig::from_value(file.hf_config().unwrap(), gguf).unwrap();
    let view = WeightView::new(Arc::new(file), DType::F32, &Device::Cpu).dequantized();
    let mut model = DecoderModel::new(&cfg, &view).unwrap();
    lora::load_adapter(adapter, &mut model).unwrap();
    let ids = Tensor::new(
        &[[1u32, 504, 3575, 282, 4649, 314, 12, 4471, 9, 198]],
        &Device::Cpu,
    )
    .unwrap();
    let logits = model.forward_uncached(&ids, None).unwrap();
    let path = tmp.join("logits.safetensors");
    let tensors = std::collections::HashMap::from([
        ("input_ids".to_string(), ids.to_dtype(DType::I64).unwrap()),
        ("logits".to_string(), logits),
    ]);
    wick::candle_core::safetensors::save(&tensors, &path).unwrap();
    let script = fixture("lora_peft").join("check_merged.py");
    let out = Command::new(python)
        .args([s(&script), s(merged), s(&path), "1e-3"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "check_merged.py failed:\n{text}");
    println!("{}", text.trim());
}
