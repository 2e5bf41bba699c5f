//! Shared helpers of the lora_* tests: the PEFT fixtures of fixtures/lora_peft, the causal-LM
//! loss transformers uses, gradient comparison, and the optional Python cross-checks.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor, D};
use testkit::paths::fixture;
use wick::io::safetensors::SafetensorsWeights;

pub const BATCH: usize = 2;
pub const SEQ: usize = 12;

/// Every model of fixtures/lora_peft (each has a tiny_* base fixture).
pub const MODELS: [&str; 7] = [
    "llama", "qwen2", "qwen3", "smollm3", "phi3", "gemma2", "gemma3",
];

/// The base fixture of a model name (`llama` -> tiny_llama).
pub fn base_case(model: &str) -> &'static str {
    match model {
        "llama" => "tiny_llama",
        "qwen2" => "tiny_qwen2",
        "qwen3" => "tiny_qwen3",
        "smollm3" => "tiny_smollm3",
        "phi3" => "tiny_phi3",
        "gemma2" => "tiny_gemma2",
        "gemma3" => "tiny_gemma3",
        other => panic!("no base fixture for {other}"),
    }
}

pub fn case_dir(case: &str) -> PathBuf {
    fixture("lora_peft").join(case)
}

/// expected.safetensors of one fixtures/lora_peft case.
pub struct PeftCase(pub SafetensorsWeights);

impl PeftCase {
    pub fn load(case: &str) -> PeftCase {
        PeftCase(SafetensorsWeights::open(&[case_dir(case).join("expected.safetensors")]).unwrap())
    }

    /// An int64 tensor in its stored shape ((BATCH, SEQ) for most cases; phi3's are longer).
    pub fn i64(&self, name: &str) -> Tensor {
        let shape = self.shape(name);
        self.0.load(name, &shape, DType::I64, &Device::Cpu).unwrap()
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.0.shape(name).unwrap().to_vec()
    }

    pub fn f32(&self, name: &str, shape: &[usize]) -> Tensor {
        self.0.load(name, shape, DType::F32, &Device::Cpu).unwrap()
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// transformers' causal-LM loss: logits[:, :-1] against labels[:, 1:], -100 ignored, mean over
/// the remaining tokens of the whole batch. Differentiable.
pub fn causal_lm_loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    let (b, s, v) = logits.dims3().unwrap();
    let logits = logits
        .narrow(1, 0, s - 1)
        .unwrap()
        .reshape((b * (s - 1), v))
        .unwrap();
    let labels: Vec<i64> = labels
        .to_dtype(DType::I64)
        .unwrap()
        .narrow(1, 1, s - 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let (rows, targets): (Vec<u32>, Vec<u32>) = labels
        .iter()
        .enumerate()
        .filter(|(_, &l)| l != -100)
        .map(|(i, &l)| (i as u32, l as u32))
        .unzip();
    let n = rows.len();
    let dev = logits.device();
    let rows = logits
        .index_select(&Tensor::new(rows, dev).unwrap(), 0)
        .unwrap();
    let logp = candle_nn::ops::log_softmax(&rows, D::Minus1).unwrap();
    let targets = Tensor::new(targets, dev).unwrap().reshape((n, 1)).unwrap();
    logp.gather(&targets, 1)
        .unwrap()
        .mean_all()
        .unwrap()
        .neg()
        .unwrap()
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Max abs difference relative to the largest expected magnitude; prints it with the worst
/// index and asserts it is within `tol`.
pub fn check_rel(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let d = testkit::compare::diff(got, want);
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let rel = d.max_abs / scale.max(1e-30);
    println!(
        "{what}: max abs diff {:.3e}, relative to max |expected| {scale:.3e}: {rel:.3e}",
        d.max_abs
    );
    assert!(
        rel <= tol,
        "{what}: max abs diff {:.3e} is {rel:.3e} of max |expected| {scale:.3e} (tol {tol:.0e}), \
         worst index {} (got {}, expected {})",
        d.max_abs,
        d.worst_index,
        got[d.worst_index],
        want[d.worst_index]
    );
}

pub fn check_abs(what: &str, got: &[f32], want: &[f32], atol: f32) {
    let d = testkit::compare::diff(got, want);
    println!(
        "{what}: max abs diff {:.3e}, max rel diff {:.3e}, worst index {}",
        d.max_abs, d.max_rel, d.worst_index
    );
    testkit::compare::assert_close(what, got, want, atol, 0.0);
}

/// The Python with torch + transformers + PEFT named by WICK_PYTHON (e.g.
/// /root/refvenv/bin/python); None (and a note on stdout) when unset, so CI without torch
/// runs only the Rust-side assertions.
pub fn python(what: &str) -> Option<PathBuf> {
    match std::env::var_os("WICK_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            println!("skipped the Python check ({what}): set WICK_PYTHON to a python with torch, transformers and peft");
            None
        }
    }
}

/// Writes `input_ids` (i64) and `logits` (f32) for the Python checkers.
pub fn write_logits(path: &Path, ids: &Tensor, logits: &Tensor) {
    let tensors: HashMap<String, Tensor> = HashMap::from([
        ("input_ids".to_string(), ids.to_dtype(DType::I64).unwrap()),
        (
            "logits".to_string(),
            logits.to_dtype(DType::F32).unwrap().contiguous().unwrap(),
        ),
    ]);
    candle_core::safetensors::save(&tensors, path).unwrap();
}

/// Runs `fixtures/lora_peft/{script}` with `args` under `python`; panics with its output on
/// failure, prints it otherwise.
pub fn run_checker(python: &Path, script: &str, args: &[&Path], extra: &[&str]) {
    let out = Command::new(python)
        .arg(fixture("lora_peft").join(script))
        .args(args)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    println!("{script}: {}", text.trim());
}
