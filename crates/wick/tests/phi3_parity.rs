//! What is Phi-3-specific on fixtures/tiny_phi3 (Phi-4-mini's shape: fused qkv_proj /
//! gate_up_proj, partial rotary 0.75, LongRoPE with original_max 16, tied embeddings); the
//! shared checks (logits, prefill + decode across original_max vs the full forward, padded batch,
//! the sliding-window variant, the F32 GGUF) run in llama_parity.rs. Here: the config (from
//! config.json and from the GGUF), bad LongRoPE configs, the GGUF on the long table, and decoding
//! two sequences of which one crosses original_max, in one padded cache and in per-sequence
//! caches, equal to two single runs.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use llama_common::*;
use wick::io::gguf::GgufFile;
use wick::models::{DecoderConfig, DecoderModel};
use wick::ops::rope::RopeScaling;

const CASE: &str = "tiny_phi3";
const VOCAB: usize = 328;
const TOL: f32 = 1e-4;
/// original_max_position_embeddings of the fixture: 16 tokens take the short factors, 17 the long.
const ORIGINAL_MAX: usize = 16;
const TOTAL: usize = PROMPT_LEN + DECODE_STEPS;

fn gguf_model() -> DecoderModel {
    let path = fixture_path(CASE, "model-f32.gguf");
    let file = GgufFile::open(&path).unwrap();
    let cfg = DecoderConfig::from_value(file.hf_config().unwrap(), &path).unwrap();
    model_from(&cfg, Arc::new(file), DType::F32)
}

#[test]
fn config_reads_fused_projections_partial_rotary_and_longrope() {
    let cfg = config(CASE, "config.json");
    assert!(cfg.fused_qkv && cfg.fused_gate_up && cfg.tie_word_embeddings);
    assert_eq!(cfg.head_dim, 16);
    let rope = cfg.layer_rope(0).unwrap();
    assert_eq!(rope.rotary_dim, 12);
    let want_factor = (1.0 + 4f64.ln() / 16f64.ln()).sqrt();
    assert!((rope.attention_factor - want_factor).abs() < 1e-12);
    let RopeScaling::LongRope {
        short_factor,
        long_factor,
        original_max_position_embeddings,
    } = &rope.scaling
    else {
        panic!("expected LongRoPE, got {:?}", rope.scaling);
    };
    assert_eq!(*original_max_position_embeddings, ORIGINAL_MAX);
    assert_eq!(short_factor, &[1.0, 1.1, 1.3, 1.6, 2.0, 2.5]);
    assert_eq!(long_factor, &[1.0, 1.5, 3.0, 6.0, 12.0, 24.0]);
    assert_eq!(cfg.layer_windows(), vec![None, None]);
    assert_eq!(
        cfg.projection_names(),
        ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    );

    let window = config(CASE, "config_window.json");
    assert_eq!(window.layer_windows(), vec![Some(5), Some(5)]);
    let rope = window.layer_rope(0).unwrap();
    assert_eq!((rope.rotary_dim, &rope.scaling), (16, &RopeScaling::None));

    // The GGUF's metadata and rope_factors tensors give back the same configuration.
    let path = fixture_path(CASE, "model-f32.gguf");
    let from_gguf =
        DecoderConfig::from_value(GgufFile::open(&path).unwrap().hf_config().unwrap(), &path)
            .unwrap();
    assert_eq!(from_gguf.attention_kinds, cfg.attention_kinds);
    assert!(from_gguf.fused_qkv && from_gguf.tie_word_embeddings);
}

#[test]
fn bad_longrope_config_is_refused_naming_the_field() {
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_path(CASE, "config.json")).unwrap())
            .unwrap();
    value["rope_parameters"]["long_factor"] = serde_json::json!([1.0, 2.0]);
    let err = DecoderConfig::from_value(value.clone(), std::path::Path::new("x/config.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("x/config.json") && err.contains("`long_factor` has 2 entries"),
        "{err}"
    );
    value["rope_parameters"]["rope_type"] = "dynamic".into();
    let err = DecoderConfig::from_value(value, std::path::Path::new("x/config.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`dynamic` is unsupported for phi3"), "{err}");
}

/// The GGUF on a sequence beyond original_max (llama_parity checks the 12-token prompt): the long
/// factors come from its rope_factors_long tensor.
#[test]
fn f32_gguf_from_llama_cpp_matches_transformers_on_the_long_table() {
    let e = Expected::load(CASE);
    let m = gguf_model();
    let got = m
        .forward_uncached(&e.ids("full_ids", &[1, TOTAL]), None)
        .unwrap();
    let want = e.f32("full_logits", &[1, TOTAL, VOCAB]);
    check("gguf 20-token logits", &flat(&got), &flat(&want), TOL);
}

/// The same 16 tokens in a 16-token and in a 20-token sequence get visibly different logits (short
/// vs long table), so a cache kept from before the threshold would fail llama_parity's decode test.
#[test]
fn short_and_long_tables_give_different_logits() {
    let m = model(CASE);
    let e = Expected::load(CASE);
    let full = e.ids("full_ids", &[1, TOTAL]);
    let long = m.forward_uncached(&full, None).unwrap();
    let prefix = m
        .forward_uncached(&full.narrow(1, 0, ORIGINAL_MAX).unwrap(), None)
        .unwrap();
    let d = testkit::compare::diff(
        &flat(&long.narrow(1, 0, ORIGINAL_MAX).unwrap()),
        &flat(&prefix),
    );
    println!(
        "16-token prefix: long vs short table max abs diff {:.3e}",
        d.max_abs
    );
    assert!(d.max_abs > 1e-2, "tables too close: {}", d.max_abs);
}

/// Runs `prompt` alone through prefill + `steps` decode tokens; returns each call's logits.
fn single_run(m: &DecoderModel, prompt: &Tensor, steps: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = m.new_cache(1, TOTAL).unwrap();
    let mut out = vec![flat(&m.forward(prompt, None, &mut cache).unwrap())];
    for &t in steps {
        let ids = Tensor::new(&[[t]], &Device::Cpu).unwrap();
        out.push(flat(&m.forward(&ids, None, &mut cache).unwrap()));
    }
    out
}

/// Steps after the prompts of the batch test: the 12-token one crosses original_max at its
/// 5th step, the 7-token one never does. LongRoPE's table is chosen per sequence.
const NEXT: [[u32; 6]; 2] = [[5, 17, 250, 3, 77, 301], [99, 3, 42, 8, 160, 12]];

/// A left-padded batch of the two prompts, decoded 6 steps: row 0 crosses original_max (and the
/// batch cache is recomputed), row 1 stays short; each row equals its single run.
#[test]
fn padded_batch_decoding_across_original_max_equals_two_single_runs() {
    let m = model(CASE);
    let e = Expected::load(CASE);
    let alone = [
        single_run(&m, &e.ids("input_ids", &[1, PROMPT_LEN]), &NEXT[0]),
        single_run(&m, &e.ids("short_ids", &[1, SHORT_LEN]), &NEXT[1]),
    ];
    let ids = e.ids("batch_ids", &[2, PROMPT_LEN]);
    let mask = e.ids("batch_mask", &[2, PROMPT_LEN]);
    let mut cache = m.new_cache(2, PROMPT_LEN + NEXT[0].len()).unwrap();
    m.forward(&ids, Some(&mask), &mut cache).unwrap();
    for i in 0..NEXT[0].len() {
        let ids = Tensor::new(&[[NEXT[0][i]], [NEXT[1][i]]], &Device::Cpu).unwrap();
        let last = m.forward_last(&ids, None, &mut cache).unwrap();
        for (b, single) in alone.iter().enumerate() {
            check(
                &format!("batched decode step {i} row {b}"),
                &flat(&last.get(b).unwrap()),
                &single[i + 1],
                TOL,
            );
        }
    }
}

/// Continuous batching (one cache per sequence, `forward_decode`): the same two sequences.
#[test]
fn per_sequence_cache_decode_equals_single_runs() {
    let m = model(CASE);
    let e = Expected::load(CASE);
    let prompts = [
        e.ids("input_ids", &[1, PROMPT_LEN]),
        e.ids("short_ids", &[1, SHORT_LEN]),
    ];
    let alone = [
        single_run(&m, &prompts[0], &NEXT[0]),
        single_run(&m, &prompts[1], &NEXT[1]),
    ];
    let mut caches: Vec<_> = prompts
        .iter()
        .map(|p| {
            let mut c = m.new_cache(1, TOTAL).unwrap();
            m.forward(p, None, &mut c).unwrap();
            c
        })
        .collect();
    for i in 0..NEXT[0].len() {
        let mut refs: Vec<_> = caches.iter_mut().collect();
        let got = m
            .forward_decode(&[NEXT[0][i], NEXT[1][i]], &mut refs)
            .unwrap();
        for (b, single) in alone.iter().enumerate() {
            check(
                &format!("per-sequence decode step {i} row {b}"),
                &flat(&got.get(b).unwrap()),
                &single[i + 1],
                TOL,
            );
        }
    }
}

/// The shapes of the real checkpoints (config.json as published, weights not needed):
/// Phi-4-mini-instruct (partial rotary 0.75 of head_dim 128, LongRoPE 4096 -> 131072 in the
/// older `rope_scaling` spelling) and Phi-3-mini-4k-instruct (full rotary, window 2047).
#[test]
fn published_phi4_mini_and_phi3_mini_configs_resolve() {
    let phi4 = serde_json::json!({
        "model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
        "num_hidden_layers": 32, "num_attention_heads": 24, "num_key_value_heads": 8,
        "vocab_size": 200064, "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096, "partial_rotary_factor": 0.75,
        "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": true,
        "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "rope_scaling": {"type": "longrope", "long_factor": vec![1.5; 48],
                         "short_factor": vec![1.0; 48]},
    });
    let cfg = DecoderConfig::from_value(phi4, std::path::Path::new("phi4/config.json")).unwrap();
    let rope = cfg.layer_rope(0).unwrap();
    assert_eq!((cfg.head_dim, rope.rotary_dim), (128, 96));
    let want = (1.0 + 32f64.ln() / 4096f64.ln()).sqrt();
    assert!((rope.attention_factor - want).abs() < 1e-12);
    assert!(matches!(
        rope.scaling,
        RopeScaling::LongRope {
            original_max_position_embeddings: 4096,
            ..
        }
    ));
    assert_eq!(cfg.layer_windows()[0], Some(262144));

    let phi3 = serde_json::json!({
        "model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "vocab_size": 32064, "max_position_embeddings": 4096,
        "original_max_position_embeddings": 4096, "rope_theta": 10000.0,
        "rope_scaling": null, "sliding_window": 2047, "tie_word_embeddings": false,
    });
    let cfg = DecoderConfig::from_value(phi3, std::path::Path::new("phi3/config.json")).unwrap();
    let rope = cfg.layer_rope(0).unwrap();
    assert_eq!((rope.rotary_dim, &rope.scaling), (96, &RopeScaling::None));
    assert_eq!(
        (cfg.rms_norm_eps, cfg.layer_windows()[0]),
        (1e-5, Some(2047))
    );
}

/// A phi3 config over weights without the fused projections (tiny_llama's separate q/k/v) is
/// refused naming the missing tensor.
#[test]
fn missing_fused_projection_is_named() {
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_path(CASE, "config.json")).unwrap())
            .unwrap();
    value["vocab_size"] = 256.into(); // tiny_llama's
    let cfg = DecoderConfig::from_value(value, std::path::Path::new("config.json")).unwrap();
    let view = wick::io::weights::WeightView::new(
        Arc::new(weights("tiny_llama")),
        DType::F32,
        &Device::Cpu,
    );
    let err = DecoderModel::new(&cfg, &view).err().expect("no qkv_proj");
    let msg = err.to_string();
    println!("{msg}");
    assert!(
        msg.contains("model.layers.0.self_attn.qkv_proj.weight") && msg.contains("tiny_llama"),
        "{msg}"
    );
}

/// Q8_0 weights (kept quantized, QMatMul, as a quantized GGUF loads) on the fused projections:
/// the 20-token logits stay close to transformers' f32 ones, and prefill + cached decode across
/// original_max equals the quantized model's own forward of each prefix.
#[test]
fn q8_0_fused_projections_stay_close_and_decode_across_original_max() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let source = Arc::new(Q8Source {
        inner: weights(CASE),
        quantized: AtomicUsize::new(0),
        dequantize: false,
    });
    let m = model_from(&config(CASE, "config.json"), source.clone(), DType::F32);
    // qkv, o, gate_up, down of both layers + the (tied) embedding table.
    assert_eq!(source.quantized.load(Ordering::SeqCst), 9);
    let e = Expected::load(CASE);
    let full_ids = e.ids("full_ids", &[1, TOTAL]);
    let got = flat(&m.forward_uncached(&full_ids, None).unwrap());
    let want = flat(&e.f32("full_logits", &[1, TOTAL, VOCAB]));
    let dense_source = Arc::new(Q8Source {
        inner: weights(CASE),
        quantized: AtomicUsize::new(0),
        dequantize: true,
    });
    let dense = model_from(&config(CASE, "config.json"), dense_source, DType::F32);
    let deq = flat(&dense.forward_uncached(&full_ids, None).unwrap());
    let d = testkit::compare::diff(&got, &want);
    let scale = want.iter().fold(0f32, |a, x| a.max(x.abs()));
    println!(
        "Q8_0 vs transformers f32: max abs diff {:.3e} (logits up to {scale:.2}); QMatMul vs dequantized dense {:.3e}; dequantized dense vs f32 {:.3e}",
        d.max_abs,
        testkit::compare::diff(&got, &deq).max_abs,
        testkit::compare::diff(&deq, &want).max_abs,
    );
    // tiny_llama / tiny_qwen2 drift 3-4% of the logit scale under Q8_0 (llama_quantized); a
    // mis-split fused projection would be off by the whole scale.
    assert!(d.max_abs < 0.1 * scale, "Q8_0 drifts {}", d.max_abs);
    let top1 = |v: &[f32]| -> Vec<usize> {
        v.chunks(VOCAB)
            .map(|r| (0..VOCAB).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
            .collect()
    };
    let agree = top1(&got)
        .iter()
        .zip(top1(&want))
        .filter(|(a, b)| **a == *b)
        .count();
    println!("Q8_0 top-1 agreement with f32: {agree}/{TOTAL}");
    assert!(agree * 10 >= TOTAL * 9, "top-1 agreement {agree}/{TOTAL}");

    let mut cache = m.new_cache(1, TOTAL).unwrap();
    m.forward(
        &full_ids.narrow(1, 0, PROMPT_LEN).unwrap(),
        None,
        &mut cache,
    )
    .unwrap();
    for len in PROMPT_LEN + 1..=TOTAL {
        let step = m
            .forward(&full_ids.narrow(1, len - 1, 1).unwrap(), None, &mut cache)
            .unwrap();
        let prefix = m
            .forward_uncached(&full_ids.narrow(1, 0, len).unwrap(), None)
            .unwrap();
        check(
            &format!("Q8_0 decode to {len} tokens vs its full forward"),
            &flat(&step),
            &flat(&prefix.narrow(1, len - 1, 1).unwrap()),
            TOL,
        );
    }
}
