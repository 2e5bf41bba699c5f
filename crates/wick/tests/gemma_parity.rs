//! What only the Gemma family (models/gemma.rs) has, on fixtures/tiny_gemma2 and
//! fixtures/tiny_gemma3: transformers' logits from the config style of the released checkpoints
//! (`rope_theta`, `rope_local_base_freq`, no `layer_types`) and with query_pre_attn_scalar 24
//! (not head_dim 16); the llama.cpp-converted GGUF's norms (stored as `1 + w`) read back as HF's;
//! the config errors. The parity every family shares (logits, cached decode, padded batches,
//! F32 GGUF logits) is in llama_parity.rs; LoRA in lora_peft_parity.rs and lora_roundtrip.rs.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;

use std::sync::Arc;

use candle_core::quantized::gguf_file::{self, Value as GValue};
use candle_core::quantized::GgmlDType;
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

/// A metadata-only Gemma GGUF (one tiny token_embd for the vocab size) with `extra` keys.
fn gemma_gguf(arch: &str, layers: u32, extra: &[(&str, GValue)]) -> tempfile::NamedTempFile {
    let k = |s: &str| format!("{arch}.{s}");
    let mut meta: Vec<(String, GValue)> = vec![
        ("general.architecture".into(), GValue::String(arch.into())),
        (k("block_count"), GValue::U32(layers)),
        (k("embedding_length"), GValue::U32(64)),
        (k("feed_forward_length"), GValue::U32(128)),
        (k("attention.head_count"), GValue::U32(4)),
        (k("attention.head_count_kv"), GValue::U32(2)),
        (k("attention.key_length"), GValue::U32(32)),
        (k("attention.layer_norm_rms_epsilon"), GValue::F32(1e-6)),
        (k("context_length"), GValue::U32(128)),
    ];
    meta.extend(extra.iter().map(|(n, v)| (k(n), v.clone())));
    let embd = candle_core::Tensor::zeros((8, 64), DType::F32, &candle_core::Device::Cpu).unwrap();
    let embd = candle_core::quantized::QTensor::quantize(&embd, GgmlDType::F32).unwrap();
    let meta_refs: Vec<(&str, &GValue)> = meta.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let mut bytes = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &meta_refs, &[("token_embd.weight", &embd)]).unwrap();
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes.get_ref()).unwrap();
    f
}

fn gguf_config(f: &tempfile::NamedTempFile) -> wick::Result<DecoderConfig> {
    let file = GgufFile::open(f.path())?;
    DecoderConfig::from_value(file.hf_config()?, f.path())
}

/// The metadata llama.cpp reads for Gemma beyond what the tiny fixtures exercise: the sliding
/// pattern as per-layer flags or as a period, Gemma 3 without a window (all global), the 27B's
/// attention scale from hidden / heads, and a Gemma 2 file with two RoPE bases refused.
#[test]
fn gemma_gguf_metadata_maps_as_llama_cpp_reads_it() {
    let flags = GValue::Array([true, false, false].map(GValue::Bool).to_vec());
    let cfg = gguf_config(&gemma_gguf(
        "gemma3",
        3,
        &[
            ("attention.sliding_window", GValue::U32(7)),
            ("attention.sliding_window_pattern", flags),
            ("rope.freq_base", GValue::F32(1e6)),
            ("rope.freq_base_swa", GValue::F32(1e4)),
        ],
    ))
    .unwrap();
    assert_eq!(cfg.layer_windows(), vec![Some(7), None, None]);
    let bases: Vec<f64> = (0..3).map(|i| cfg.layer_rope(i).unwrap().theta).collect();
    assert_eq!(bases, vec![1e4, 1e6, 1e6]);
    assert!(cfg.qk_norm && cfg.attn_softcap.is_none() && cfg.final_softcap.is_none());
    assert!(
        (cfg.attn_scale - 1.0 / 32f64.sqrt()).abs() < 1e-12,
        "1/sqrt(head_dim)"
    );

    let cfg = gguf_config(&gemma_gguf(
        "gemma2",
        4,
        &[("attention.sliding_window_pattern", GValue::U32(4))],
    ))
    .unwrap();
    assert_eq!(
        cfg.layer_windows(),
        vec![Some(4096), Some(4096), Some(4096), None]
    );
    assert_eq!(
        (cfg.attn_softcap, cfg.final_softcap),
        (Some(50.0), Some(30.0))
    );

    let cfg = gguf_config(&gemma_gguf("gemma3", 62, &[])).unwrap();
    assert_eq!(
        cfg.layer_windows(),
        vec![None; 62],
        "no window: every layer global"
    );
    let want = 1.0 / 16f64.sqrt();
    assert!(
        (cfg.attn_scale - want).abs() < 1e-12,
        "27B: 1/sqrt(hidden 64 / heads 4)"
    );

    let two_bases = [
        ("rope.freq_base", GValue::F32(1e4)),
        ("rope.freq_base_swa", GValue::F32(1e6)),
    ];
    let err = gguf_config(&gemma_gguf("gemma2", 2, &two_bases))
        .unwrap_err()
        .to_string();
    assert!(err.contains("gemma2.rope.freq_base_swa"), "{err}");
}
