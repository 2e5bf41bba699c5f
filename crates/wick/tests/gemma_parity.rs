//! What only the Gemma family (models/gemma.rs) has, against transformers on fixtures/tiny_gemma2
//! and fixtures/tiny_gemma3: the same logits from the config style of the released checkpoints
//! (`rope_theta`, `rope_local_base_freq`, no `layer_types`) and with query_pre_attn_scalar 24
//! (not head_dim 16), and from the F32 GGUF llama.cpp's own converter wrote (norm weights
//! shifted by +1, llama.cpp's tensor names, window / soft-cap / RoPE metadata). The parity every
//! family shares (logits, cached decode, padded batches) is in llama_parity.rs; LoRA in
//! lora_peft_parity.rs and lora_roundtrip.rs.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;

use std::sync::Arc;

use candle_core::DType;
use llama_common::{check, config, flat, model_from, weights, Expected, DECODE_STEPS, PROMPT_LEN};
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

/// The GGUF file's model and the config wick derived from its metadata.
fn gguf_model(case: &str) -> (DecoderModel, DecoderConfig) {
    let path = fixture(case).join("model-f32.gguf");
    let file = GgufFile::open(&path).unwrap();
    let cfg = DecoderConfig::from_value(file.hf_config().unwrap(), &path).unwrap();
    let source: Arc<dyn WeightSource> = Arc::new(file);
    (model_from(&cfg, source, DType::F32), cfg)
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

#[test]
fn llama_cpp_converted_f32_gguf_matches_transformers() {
    for case in CASES {
        let (m, cfg) = gguf_model(case);
        let hf = config(case, "config.json");
        // What llama.cpp's metadata gives back is the config.json model.
        assert_eq!(cfg.layer_windows(), hf.layer_windows(), "{case} windows");
        assert_eq!(
            cfg.attention_kinds, hf.attention_kinds,
            "{case} RoPE per kind"
        );
        assert_eq!(cfg.layer_kinds, hf.layer_kinds, "{case} layer kinds");
        assert_eq!(
            (
                cfg.attn_softcap,
                cfg.final_softcap,
                cfg.attn_scale,
                cfg.qk_norm
            ),
            (hf.attn_softcap, hf.final_softcap, hf.attn_scale, hf.qk_norm),
            "{case} soft-caps, attention scale, q/k norms"
        );
        let e = Expected::load(case);
        let want = flat(&e.f32("logits", &[1, PROMPT_LEN, VOCAB]));
        check(
            &format!("{case} GGUF F32 logits"),
            &prompt_logits(&m, &e),
            &want,
            TOL,
        );
        let total = PROMPT_LEN + DECODE_STEPS;
        let full = m
            .forward_uncached(&e.ids("full_ids", &[1, total]), None)
            .unwrap();
        let want = flat(&e.f32("full_logits", &[1, total, VOCAB]));
        check(
            &format!("{case} GGUF F32 full logits"),
            &flat(&full),
            &want,
            TOL,
        );
        // Merging writes HF weights: the norms are back to HF's (centred on 0) values.
        let hf_model = model_with(case, "config.json");
        let ours = m.named_weights().unwrap();
        let theirs = hf_model.named_weights().unwrap();
        assert_eq!(ours.len(), theirs.len());
        for ((name, a), (hf_name, b)) in ours.iter().zip(&theirs) {
            assert_eq!(name, hf_name);
            check(&format!("{case} GGUF {name}"), &flat(a), &flat(b), 1e-6);
        }
    }
}
