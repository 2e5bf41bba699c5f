//! Shared by the server tests: the real models, a LoRA adapter that visibly changes the
//! model's output, JSON requests over real TCP, and reference generations from the library.

#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};

use serde_json::Value;
use testkit::greedy::greedy;
pub use testkit::greedy::Greedy;
use testkit::http::{request, Response};
use testkit::paths::{minilm, real_model};
use wick::candle_core::{DType, Device, Tensor};
use wick::generate::load::load_causal_lm;
use wick::io::chat_template::ChatMessage;
use wick::io::ModelFiles;
use wick::lora::{LoraConfig, TargetModules};

pub const MODEL_NAME: &str = "smollm2";
pub const EMBED_NAME: &str = "minilm";

pub fn gguf() -> PathBuf {
    real_model("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub fn embedding_model() -> PathBuf {
    minilm()
}

/// A rank-8 q/v adapter with non-zero B (a fresh one would equal the base model).
pub fn write_adapter(dir: &Path, phase: f64) {
    let files = ModelFiles::resolve(gguf().to_str().unwrap()).unwrap();
    let mut model = load_causal_lm(&files, &Device::Cpu, None, None)
        .unwrap()
        .model
        .into_model();
    let cfg = LoraConfig::new(8, 16.0, TargetModules::from_names(&["q_proj", "v_proj"]));
    let params = wick::lora::apply(&mut model, &cfg, 7).unwrap();
    for (name, var) in params.named_vars() {
        if name.contains("lora_B") {
            let n = var.elem_count();
            let pattern = Tensor::arange(0u32, n as u32, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .affine(0.37, phase)
                .unwrap()
                .sin()
                .unwrap()
                .affine(0.2, 0.0)
                .unwrap()
                .reshape(var.dims())
                .unwrap();
            var.set(&pattern).unwrap();
        }
    }
    wick::lora::save_adapter(dir, &cfg, &params).unwrap();
}

/// The server decodes sequences in batches and the library one at a time: the two round
/// differently (more so where candle's AVX-512 kernels take the batch), so their greedy texts
/// agree only up to the first step decided by less than this.
pub const NEAR_TIE: f32 = 0.1;

/// Greedy completion from the library itself (what `wick generate --chat --temperature 0`
/// prints) with each step's margin; compare other paths with [`Greedy::assert_matches`].
pub fn reference_chat(user: &str, max_tokens: usize, adapter: Option<&Path>) -> Greedy {
    let files = ModelFiles::resolve(gguf().to_str().unwrap()).unwrap();
    let mut lm = load_causal_lm(&files, &Device::Cpu, None, adapter).unwrap();
    let template = lm.chat_template.clone().unwrap();
    let text = template.render(&[ChatMessage::user(user)], true).unwrap();
    let ids = lm.tokenizer.encode(text, false).unwrap().get_ids().to_vec();
    let path = greedy(&mut lm, &ids, max_tokens, NEAR_TIE);
    println!(
        "reference {user:?} (adapter {adapter:?}): {:?}, {} of {} steps decided",
        path.text,
        path.decided,
        path.token_ids.len()
    );
    path
}

pub fn post(addr: &str, path: &str, key: Option<&str>, body: &Value) -> Response {
    raw_post(addr, path, key, body.to_string().as_bytes())
}

pub fn raw_post(addr: &str, path: &str, key: Option<&str>, body: &[u8]) -> Response {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    request(addr, "POST", path, &headers, body).unwrap()
}

pub fn get(addr: &str, path: &str, key: Option<&str>) -> Response {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    request(addr, "GET", path, &headers, b"").unwrap()
}

/// The assistant text of a non-streamed chat response (asserting it succeeded).
pub fn chat_text(r: &Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The value of one metric line (`name{labels} value`), 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The OpenAI-format error of a response that must have `status`: every field present and a
/// message that says something.
pub fn error_of(r: &Response, status: u16) -> Value {
    let start: String = r.text().chars().take(300).collect();
    assert_eq!(r.status, status, "{start}");
    let body = r.json();
    let err = body["error"].clone();
    for field in ["message", "type", "param", "code"] {
        assert!(err.get(field).is_some(), "error lacks `{field}`: {body}");
    }
    assert!(!err["message"].as_str().unwrap().is_empty());
    err
}
