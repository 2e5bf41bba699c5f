//! What only the Gemma family (models/gemma.rs) has, on fixtures/tiny_gemma2 and
//! fixtures/tiny_gemma3: transformers' logits from the config style of the released checkpoints
//! (`rope_theta`, `rope_local_base_freq`, no `layer_types`) and with query_pre_attn_scalar 24
//! (not head_dim 16); the llama.cpp-converted GGUF's norms (stored as `1 + w`) read back as HF's;
//! the config errors. The parity every family shares (logits, cached decode, padded batches,
//! F32 GGUF logits) is in llama_parity.rs; LoRA in lora_peft_parity.rs and lora_roundtrip.rs.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;

use std::sync::Arc;

use candle_core::DType;
use llama_common::{check, config, flat, model_from, weights, Expected, PROMPT_LEN};
use testkit::paths::fixture;
use wick::io::gguf::GgufFile;
use wick::io::weights::WeightSource;
use wick::models::{DecoderConfig, DecoderModel};

const TOL: f32 = 1e-4;
const VOCAB: usize = 320;
const CASES: [&str; 2] = ["tiny_gemma2", "tiny_gemma3"];

fn model_with(case: &str, config_file: &str) -> DecoderModel {
    model_from(
        &config(case, config_file),
        Arc::new(weights(case)),
        DType::F32,
    )
}

fn prompt_logits(m: &DecoderModel, e: &Expected) -> Vec<f32> {
    let ids = e.ids("input_ids", &[1, PROMPT_LEN]);
    let out = m.forward_uncached(&ids, None).unwrap();
    assert_eq!(out.dims(), &[1, PROMPT_LEN, VOCAB]);
    flat(&out)
}

#[test]
fn legacy_config_style_and_query_pre_attn_scalar_match_transformers() {
    for case in CASES {
        let e = Expected::load(case);
        let want = flat(&e.f32("logits", &[1, PROMPT_LEN, VOCAB]));
        let got = prompt_logits(&model_with(case, "config_legacy.json"), &e);
        check(
            &format!("{case} config_legacy.json logits"),
            &got,
            &want,
            TOL,
        );
        let qpas = flat(&e.f32("logits_qpas", &[1, PROMPT_LEN, VOCAB]));
        let got = prompt_logits(&model_with(case, "config_qpas.json"), &e);
        let what = format!("{case} query_pre_attn_scalar 24 logits");
        check(&what, &got, &qpas, TOL);
        let moved = testkit::compare::diff(&qpas, &want).max_abs;
        assert!(
            moved > 1e-3,
            "{case}: the scalar barely moves the logits ({moved})"
        );
    }
}

/// The GGUF holds `1 + w` for every norm (llama.cpp's converter adds 1); wick gives back HF's
/// weights, so merging or exporting from a GGUF writes what transformers expects. The logits of
/// the GGUF are checked in llama_parity.rs.
#[test]
fn llama_cpp_gguf_weights_read_back_as_the_hf_weights() {
    for case in CASES {
        let path = fixture(case).join("model-f32.gguf");
        let file = GgufFile::open(&path).unwrap();
        let cfg = DecoderConfig::from_value(file.hf_config().unwrap(), &path).unwrap();
        let source: Arc<dyn WeightSource> = Arc::new(file);
        let ours = model_from(&cfg, source, DType::F32)
            .named_weights()
            .unwrap();
        let theirs = model_with(case, "config.json").named_weights().unwrap();
        assert_eq!(ours.len(), theirs.len());
        let mut norms = 0;
        for ((name, a), (hf_name, b)) in ours.iter().zip(&theirs) {
            assert_eq!(name, hf_name);
            check(&format!("{case} GGUF {name}"), &flat(a), &flat(b), 1e-6);
            norms += usize::from(name.ends_with("norm.weight"));
        }
        assert!(
            norms > cfg.num_hidden_layers * 4,
            "{case}: {norms} norms compared"
        );
    }
}

fn config_error(case: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let path = fixture(case).join("config.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    let err = DecoderConfig::from_value(value, &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tiny_gemma"), "error names the file: {err}");
    err
}

/// What models/gemma.rs does not implement is refused, naming the file and the field.
#[test]
fn unsupported_gemma_configs_are_refused_by_name() {
    let err = config_error("tiny_gemma3", |v| v["model_type"] = "gemma3".into());
    assert!(
        err.contains("Gemma3ForConditionalGeneration") && err.contains("gemma3_text"),
        "{err}"
    );
    let err = config_error("tiny_gemma2", |v| v["hidden_activation"] = "gelu".into());
    assert!(
        err.contains("hidden_activation `gelu` is unsupported"),
        "{err}"
    );
    let err = config_error("tiny_gemma3", |v| {
        v["use_bidirectional_attention"] = true.into()
    });
    assert!(err.contains("use_bidirectional_attention"), "{err}");
    let err = config_error("tiny_gemma3", |v| v["attn_logit_softcapping"] = 50.0.into());
    assert!(err.contains("attn_logit_softcapping"), "{err}");
}

/// A Gemma checkpoint without one of its sandwich norms fails naming the tensor and the file.
#[test]
fn a_missing_gemma_tensor_is_named_with_the_file() {
    let hidden = "model.layers.1.pre_feedforward_layernorm.weight";
    let mut tensors = candle_core::safetensors::load(
        fixture("tiny_gemma2").join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(tensors.remove(hidden).is_some());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let source = Arc::new(wick::io::safetensors::SafetensorsWeights::open(&[file]).unwrap());
    let cfg = config("tiny_gemma2", "config.json");
    let view = wick::io::weights::WeightView::new(source, DType::F32, &candle_core::Device::Cpu);
    let err = DecoderModel::new(&cfg, &view).err().unwrap().to_string();
    assert!(
        err.contains(hidden) && err.contains("model.safetensors"),
        "{err}"
    );
}
