//! Bad model files for the decoder families, each refused with one clear line naming the file
//! and the thing at fault: a safetensors checkpoint whose config.json names a known architecture
//! but lacks one of its tensors, the same for a GGUF (llama.cpp's name given too), and a GGUF of
//! an architecture wick does not run.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use testkit::paths::fixture;
use wick::generate::load::load_causal_lm;
use wick::io::gguf::GgufFile;
use wick::io::safetensors::SafetensorsWeights;
use wick::io::weights::{WeightSource, WeightView};
use wick::io::ModelFiles;
use wick::models::{DecoderConfig, DecoderModel};
use wick::Error;

/// Loads a decoder from a config and a weight source the way every command does.
fn build(cfg: &DecoderConfig, source: Arc<dyn WeightSource>) -> wick::Result<DecoderModel> {
    DecoderModel::new(cfg, &WeightView::new(source, DType::F32, &Device::Cpu))
}

fn one_line(err: &Error) -> String {
    let text = err.to_string();
    assert!(!text.contains('\n'), "not one line: {text}");
    text
}

/// `case`'s safetensors checkpoint copied to a temp dir without `drop`.
fn safetensors_without(case: &str, drop: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture(case);
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let st = SafetensorsWeights::open(&[src.join("model.safetensors")]).unwrap();
    let all = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(st.contains(drop), "{case} has no {drop}");
    let kept: HashMap<String, Tensor> = all.into_iter().filter(|(k, _)| k != drop).collect();
    candle_core::safetensors::save(&kept, dir.path().join("model.safetensors")).unwrap();
    dir
}

#[test]
fn safetensors_model_missing_a_tensor_of_its_architecture_names_file_and_tensor() {
    // Qwen3's per-head k norm, SmolLM3's MLP of the NoPE layer, Llama's untied head.
    for (case, drop) in [
        ("tiny_qwen3", "model.layers.1.self_attn.k_norm.weight"),
        ("tiny_smollm3", "model.layers.3.mlp.up_proj.weight"),
        ("tiny_llama", "lm_head.weight"),
    ] {
        let dir = safetensors_without(case, drop);
        let files = ModelFiles::resolve(dir.path().to_str().unwrap()).unwrap();
        let cfg = DecoderConfig::from_file(&files.require("config.json").unwrap()).unwrap();
        let weights = SafetensorsWeights::open_model(&files).unwrap();
        let err = build(&cfg, Arc::new(weights))
            .err()
            .expect("a tensor is missing");
        let text = one_line(&err);
        println!("{case}: {text}");
        assert!(matches!(err, Error::MissingTensor { .. }), "{text}");
        let file = dir.path().join("model.safetensors");
        assert!(
            text.contains(&format!("tensor `{drop}` not found"))
                && text.contains(&file.display().to_string()),
            "{text}"
        );
    }
}

/// Rewrites a GGUF with `metadata` overrides and without the tensor `drop` (llama.cpp name).
fn rewrite_gguf(src: &Path, out: &Path, drop: Option<&str>, arch: Option<&str>) {
    let mut reader = std::fs::File::open(src).unwrap();
    let content = gguf_file::Content::read(&mut reader).unwrap();
    let mut metadata: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(a) = arch {
        for (k, v) in metadata.iter_mut() {
            if k == "general.architecture" {
                *v = gguf_file::Value::String(a.into());
            }
        }
    }
    let mut tensors = Vec::new();
    for name in content.tensor_infos.keys() {
        if Some(name.as_str()) != drop {
            let t = content.tensor(&mut reader, name, &Device::Cpu).unwrap();
            tensors.push((name.clone(), t));
        }
    }
    let meta: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tens: Vec<(&str, &candle_core::quantized::QTensor)> =
        tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut f = std::fs::File::create(out).unwrap();
    gguf_file::write(&mut f, &meta, &tens).unwrap();
}

#[test]
fn gguf_missing_a_tensor_of_its_architecture_names_file_and_both_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qwen3-no-q-norm.gguf");
    let src = fixture("tiny_qwen3").join("model-f32.gguf");
    rewrite_gguf(&src, &path, Some("blk.0.attn_q_norm.weight"), None);
    let file = GgufFile::open(&path).unwrap();
    let cfg = DecoderConfig::from_value(file.hf_config().unwrap(), &path).unwrap();
    let err = build(&cfg, Arc::new(file))
        .err()
        .expect("q_norm is missing");
    let text = one_line(&err);
    println!("{text}");
    assert!(matches!(err, Error::MissingTensor { .. }), "{text}");
    assert!(
        text.contains("model.layers.0.self_attn.q_norm.weight")
            && text.contains("blk.0.attn_q_norm.weight")
            && text.contains(&path.display().to_string()),
        "{text}"
    );
}

#[test]
fn gguf_of_an_unsupported_architecture_names_file_and_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mamba.gguf");
    let src = fixture("tiny_qwen3").join("model-f32.gguf");
    rewrite_gguf(&src, &path, None, Some("mamba"));
    let files = ModelFiles::resolve(path.to_str().unwrap()).unwrap();
    // The generation / serving / training entry point.
    let err = load_causal_lm(&files, &Device::Cpu, None, None)
        .err()
        .expect("mamba is not a decoder wick runs");
    let text = one_line(&err);
    println!("{text}");
    assert!(
        matches!(&err, Error::UnsupportedArchitecture { model_type, .. } if model_type == "mamba"),
        "{text}"
    );
    assert!(
        text.starts_with(&format!(
            "{}: unsupported architecture `mamba`",
            path.display()
        )) && text.contains("qwen3")
            && text.contains("smollm3"),
        "{text}"
    );
}
