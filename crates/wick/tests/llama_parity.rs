//! Golden parity of the shared decoder against transformers on the tiny random models of
//! fixtures/tiny_llama (GQA, untied head, llama3/linear RoPE variants), fixtures/tiny_qwen2
//! (q/k/v bias, tied embeddings), fixtures/tiny_qwen3 (q/k norms, head_dim 32 ≠ hidden / heads)
//! fixtures/tiny_smollm3 (4 layers, layer 3 NoPE), fixtures/tiny_phi3 (fused projections,
//! partial rotary, LongRoPE; its own checks in phi3_parity.rs), fixtures/tiny_gemma2 (soft-caps,
//! sliding and global layers alternating) and fixtures/tiny_gemma3 (q/k norms, five sliding
//! layers with a local RoPE base, one global with its own base and linear scaling; both Gemmas
//! with a window of 5 under the 12-token prompt): full-sequence logits, prefill + cached decode
//! steps, a left-padded batch of two lengths, sliding-window variants, and each model converted
//! to an F32 GGUF by llama.cpp's convert_hf_to_gguf.py (fixtures/*/model-f32.gguf). Gemma-only
//! config styles: gemma_parity.rs.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use llama_common::*;
use wick::io::gguf::GgufFile;
use wick::io::weights::WeightSource;
use wick::models::DecoderConfig;

const TOL: f32 = 1e-4;

/// The vocabulary of a fixture (256 for most, 328 for tiny_phi3's SentencePiece + added tokens).
fn vocab(case: &str) -> usize {
    config(case, "config.json").vocab_size
}

fn logits_match(case: &str) {
    let m = model(case);
    let e = Expected::load(case);
    let ids = e.ids("input_ids", &[1, PROMPT_LEN]);
    let want = flat(&e.f32("logits", &[1, PROMPT_LEN, vocab(case)]));

    let uncached = m.forward_uncached(&ids, None).unwrap();
    assert_eq!(uncached.dims(), &[1, PROMPT_LEN, vocab(case)]);
    check(
        &format!("{case} uncached logits"),
        &flat(&uncached),
        &want,
        TOL,
    );

    let mut cache = m.new_cache(1, 32).unwrap();
    let cached = m.forward(&ids, None, &mut cache).unwrap();
    check(
        &format!("{case} prefill logits"),
        &flat(&cached),
        &want,
        TOL,
    );
    assert_eq!(cache.len(), PROMPT_LEN);
}

#[test]
fn llama_logits_match_transformers() {
    logits_match("tiny_llama");
}

#[test]
fn qwen2_logits_match_transformers() {
    logits_match("tiny_qwen2");
}

#[test]
fn qwen3_logits_match_transformers() {
    logits_match("tiny_qwen3");
}

#[test]
fn smollm3_logits_match_transformers() {
    logits_match("tiny_smollm3");
}

#[test]
fn phi3_logits_match_transformers() {
    logits_match("tiny_phi3");
}

#[test]
fn gemma2_logits_match_transformers() {
    logits_match("tiny_gemma2");
}

#[test]
fn gemma3_logits_match_transformers() {
    logits_match("tiny_gemma3");
}

/// Prefill, then 8 one-token steps through the cache, each against transformers' cached step and
/// against our own full-sequence forward of the same tokens.
fn decode_matches(case: &str) {
    let m = model(case);
    let e = Expected::load(case);
    let total = PROMPT_LEN + DECODE_STEPS;
    let prompt = e.ids("input_ids", &[1, PROMPT_LEN]);
    let tokens = e.ids("decode_tokens", &[1, DECODE_STEPS + 1]);
    let want_steps = e.f32("decode_logits", &[DECODE_STEPS, vocab(case)]);
    let full_ids = e.ids("full_ids", &[1, total]);
    let full = m.forward_uncached(&full_ids, None).unwrap();
    let want_full = flat(&e.f32("full_logits", &[1, total, vocab(case)]));
    check(
        &format!("{case} full-sequence logits"),
        &flat(&full),
        &want_full,
        TOL,
    );

    let mut cache = m.new_cache(1, total).unwrap();
    let last = m.forward_last(&prompt, None, &mut cache).unwrap();
    assert_eq!(last.dims(), &[1, vocab(case)]);
    let want_last = e
        .f32("logits", &[1, PROMPT_LEN, vocab(case)])
        .narrow(1, PROMPT_LEN - 1, 1)
        .unwrap();
    check(
        &format!("{case} prefill last"),
        &flat(&last),
        &flat(&want_last),
        TOL,
    );
    for i in 0..DECODE_STEPS {
        let token = tokens.narrow(1, i, 1).unwrap();
        let step = m.forward(&token, None, &mut cache).unwrap();
        assert_eq!(step.dims(), &[1, 1, vocab(case)]);
        let hf = want_steps.narrow(0, i, 1).unwrap();
        check(
            &format!("{case} decode step {i} vs transformers"),
            &flat(&step),
            &flat(&hf),
            TOL,
        );
        // The full forward of the prefix so far: with LongRoPE (Phi-3) the rotary table
        // depends on the length, so only the prefix's own forward is the reference.
        let len = PROMPT_LEN + i + 1;
        let prefix = m.forward_uncached(&full_ids.narrow(1, 0, len).unwrap(), None);
        let ours = prefix.unwrap().narrow(1, len - 1, 1).unwrap();
        check(
            &format!("{case} decode step {i} vs full forward"),
            &flat(&step),
            &flat(&ours),
            TOL,
        );
    }
    assert_eq!(cache.len(), total);
}

#[test]
fn llama_prefill_and_8_decode_steps_match_full_forward() {
    decode_matches("tiny_llama");
}

#[test]
fn qwen2_prefill_and_8_decode_steps_match_full_forward() {
    decode_matches("tiny_qwen2");
}

#[test]
fn qwen3_prefill_and_8_decode_steps_match_full_forward() {
    decode_matches("tiny_qwen3");
}

#[test]
fn smollm3_prefill_and_8_decode_steps_match_full_forward() {
    decode_matches("tiny_smollm3");
}

/// The 12-token prompt grows to 20 tokens past original_max 16: the step to 17 tokens switches
/// LongRoPE to its long table (and recomputes the cache, nn/decoder/long_rope.rs).
#[test]
fn phi3_prefill_and_8_decode_steps_across_original_max_match_full_forward() {
    decode_matches("tiny_phi3");
}

#[test]
fn gemma2_prefill_and_8_decode_steps_match_full_forward() {
    decode_matches("tiny_gemma2");
}

#[test]
fn gemma3_prefill_and_8_decode_steps_match_full_forward() {
    decode_matches("tiny_gemma3");
}

/// Runs `prompt` alone through prefill + `steps` decode tokens; returns each step's logits.
fn single_run(m: &wick::models::DecoderModel, prompt: &Tensor, steps: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = m.new_cache(1, 32).unwrap();
    let mut out = vec![flat(&m.forward(prompt, None, &mut cache).unwrap())];
    for &t in steps {
        let ids = Tensor::new(&[[t]], &Device::Cpu).unwrap();
        out.push(flat(&m.forward(&ids, None, &mut cache).unwrap()));
    }
    out
}

/// A batch of two prompts of different lengths (left- or right-padded) equals two single runs,
/// in prefill and in three decode steps after it.
fn batch_matches(case: &str) {
    let m = model(case);
    let e = Expected::load(case);
    let long = e.ids("input_ids", &[1, PROMPT_LEN]);
    let short = e.ids("short_ids", &[1, SHORT_LEN]);
    let next = [[5u32, 17, 250], [99, 3, 42]];
    let alone = [
        single_run(&m, &long, &next[0]),
        single_run(&m, &short, &next[1]),
    ];
    let row = |t: &Tensor, b: usize, from: usize, len: usize| {
        flat(&t.get(b).unwrap().narrow(0, from, len).unwrap())
    };

    // Left padding (the generation layout), checked against transformers too.
    let ids = e.ids("batch_ids", &[2, PROMPT_LEN]);
    let mask = e.ids("batch_mask", &[2, PROMPT_LEN]);
    let pad = PROMPT_LEN - SHORT_LEN;
    let mut cache = m.new_cache(2, PROMPT_LEN + 3).unwrap();
    let got = m.forward(&ids, Some(&mask), &mut cache).unwrap();
    let hf = e.f32("batch_logits", &[2, PROMPT_LEN, vocab(case)]);
    check(
        &format!("{case} left-padded row 0 vs transformers"),
        &row(&got, 0, 0, PROMPT_LEN),
        &row(&hf, 0, 0, PROMPT_LEN),
        TOL,
    );
    check(
        &format!("{case} left-padded row 1 vs transformers"),
        &row(&got, 1, pad, SHORT_LEN),
        &row(&hf, 1, pad, SHORT_LEN),
        TOL,
    );
    check(
        &format!("{case} left-padded row 0 vs single"),
        &row(&got, 0, 0, PROMPT_LEN),
        &alone[0][0],
        TOL,
    );
    check(
        &format!("{case} left-padded row 1 vs single"),
        &row(&got, 1, pad, SHORT_LEN),
        &alone[1][0],
        TOL,
    );
    for i in 0..3 {
        let ids = Tensor::new(&[[next[0][i]], [next[1][i]]], &Device::Cpu).unwrap();
        let last = m.forward_last(&ids, None, &mut cache).unwrap();
        for (b, single) in alone.iter().enumerate() {
            let got = flat(&last.get(b).unwrap());
            check(
                &format!("{case} batched decode step {i} row {b}"),
                &got,
                &single[i + 1],
                TOL,
            );
        }
    }

    // Right padding works as well: padding is masked wherever it sits.
    let pad_ids = Tensor::zeros((1, pad), DType::U32, &Device::Cpu).unwrap();
    let right = Tensor::cat(
        &[
            long.clone(),
            Tensor::cat(&[short.clone(), pad_ids], 1).unwrap(),
        ],
        0,
    )
    .unwrap();
    let mut m_right = vec![1u32; 2 * PROMPT_LEN];
    m_right[PROMPT_LEN + SHORT_LEN..].fill(0);
    let m_right = Tensor::from_vec(m_right, (2, PROMPT_LEN), &Device::Cpu).unwrap();
    let got = m.forward_uncached(&right, Some(&m_right)).unwrap();
    check(
        &format!("{case} right-padded row 0"),
        &row(&got, 0, 0, PROMPT_LEN),
        &alone[0][0],
        TOL,
    );
    check(
        &format!("{case} right-padded row 1"),
        &row(&got, 1, 0, SHORT_LEN),
        &alone[1][0],
        TOL,
    );
}

#[test]
fn llama_padded_batch_of_two_lengths_equals_single_runs() {
    batch_matches("tiny_llama");
}

#[test]
fn qwen2_padded_batch_of_two_lengths_equals_single_runs() {
    batch_matches("tiny_qwen2");
}

#[test]
fn qwen3_padded_batch_of_two_lengths_equals_single_runs() {
    batch_matches("tiny_qwen3");
}

#[test]
fn smollm3_padded_batch_of_two_lengths_equals_single_runs() {
    batch_matches("tiny_smollm3");
}

#[test]
fn phi3_padded_batch_of_two_lengths_equals_single_runs() {
    batch_matches("tiny_phi3");
}

#[test]
fn gemma2_padded_batch_of_two_lengths_equals_single_runs() {
    batch_matches("tiny_gemma2");
}

#[test]
fn gemma3_padded_batch_of_two_lengths_equals_single_runs() {
    batch_matches("tiny_gemma3");
}

fn scaled_rope_matches(variant: &str) {
    let case = "tiny_llama";
    let cfg = config("tiny_llama", &format!("config_{variant}.json"));
    let m = model_from(&cfg, Arc::new(weights("tiny_llama")), DType::F32);
    let e = Expected::load("tiny_llama");
    let ids = e.ids("input_ids", &[1, PROMPT_LEN]);
    let got = m.forward_uncached(&ids, None).unwrap();
    let want = e.f32(&format!("logits_{variant}"), &[1, PROMPT_LEN, vocab(case)]);
    check(
        &format!("{variant} rope logits"),
        &flat(&got),
        &flat(&want),
        TOL,
    );
}

#[test]
fn llama3_rope_scaling_matches_transformers() {
    scaled_rope_matches("llama3");
}

#[test]
fn linear_rope_scaling_matches_transformers() {
    scaled_rope_matches("linear");
}

/// The weights of `case` under its `config_{variant}.json` with a sliding window of 5 (< the
/// prompt length) on `windows` layers: parity with transformers, and cached decode steps equal the
/// full forward under the window.
fn windowed_variant_matches(case: &str, variant: &str, windows: Vec<Option<usize>>) {
    let cfg = config(case, &format!("config_{variant}.json"));
    assert_eq!(cfg.layer_windows(), windows);
    let m = model_from(&cfg, Arc::new(weights(case)), DType::F32);
    let e = Expected::load(case);
    let ids = e.ids("input_ids", &[1, PROMPT_LEN]);
    let got = m.forward_uncached(&ids, None).unwrap();
    let want = e.f32(&format!("logits_{variant}"), &[1, PROMPT_LEN, vocab(case)]);
    check(
        &format!("{case} {variant} logits"),
        &flat(&got),
        &flat(&want),
        TOL,
    );

    let total = PROMPT_LEN + DECODE_STEPS;
    let full_ids = e.ids("full_ids", &[1, total]);
    let full = m.forward_uncached(&full_ids, None).unwrap();
    let mut cache = m.new_cache(1, total).unwrap();
    m.forward(&ids, None, &mut cache).unwrap();
    for i in 0..DECODE_STEPS {
        let step = m
            .forward(
                &full_ids.narrow(1, PROMPT_LEN + i, 1).unwrap(),
                None,
                &mut cache,
            )
            .unwrap();
        let want = full.narrow(1, PROMPT_LEN + i, 1).unwrap();
        check(
            &format!("{case} {variant} decode step {i} vs full forward"),
            &flat(&step),
            &flat(&want),
            TOL,
        );
    }
}

/// The Llama tensors loaded as a Mistral with a sliding window of 5 on both layers.
#[test]
fn mistral_sliding_window_matches_transformers_and_decodes() {
    windowed_variant_matches("tiny_llama", "mistral", vec![Some(5), Some(5)]);
}

/// Qwen3 with layer 1 sliding (`max_window_layers` 1) and layer 0 full.
#[test]
fn qwen3_mixed_sliding_and_full_layers_match_transformers_and_decode() {
    windowed_variant_matches("tiny_qwen3", "sliding", vec![None, Some(5)]);
}

/// SmolLM3 with the window on its NoPE layer (3) only, as SmolLM3Config places it.
#[test]
fn smollm3_sliding_nope_layer_matches_transformers_and_decodes() {
    windowed_variant_matches("tiny_smollm3", "sliding", vec![None, None, None, Some(5)]);
}

/// Phi-3's weights configured like Phi-3-mini-4k: plain RoPE, full rotary, one window for all.
#[test]
fn phi3_sliding_window_matches_transformers_and_decodes() {
    windowed_variant_matches("tiny_phi3", "window", vec![Some(5), Some(5)]);
}

/// SmolLM3's default `no_rope_layer_interval` 4 leaves layer 3 without RoPE; Qwen3 reads its own
/// `head_dim` and q/k norms.
#[test]
fn qwen3_and_smollm3_configs_resolve() {
    let smol = config("tiny_smollm3", "config.json");
    let ropes: Vec<bool> = (0..4).map(|i| smol.layer_rope(i).is_some()).collect();
    assert_eq!(ropes, [true, true, true, false]);
    assert!(smol.tie_word_embeddings && !smol.qk_norm);
    let qwen3 = config("tiny_qwen3", "config.json");
    assert_eq!((qwen3.head_dim, qwen3.hidden_size), (32, 64));
    assert!(qwen3.qk_norm && !qwen3.qkv_bias && !qwen3.tie_word_embeddings);
}

/// fixtures/<case>/model-f32.gguf, written from the same model by llama.cpp's own
/// convert_hf_to_gguf.py (llama.cpp's tensor names and metadata, q/k permuted for `llama`-style
/// RoPE where its converter does so), gives transformers' logits, and its config equals the
/// config.json one where it matters.
fn gguf_logits_match(case: &str) {
    let path = fixture_path(case, "model-f32.gguf");
    let file = GgufFile::open(&path).unwrap();
    let cfg = DecoderConfig::from_value(file.hf_config().unwrap(), &path).unwrap();
    let hf = config(case, "config.json");
    assert_eq!(
        (
            cfg.head_dim,
            cfg.num_key_value_heads,
            cfg.tie_word_embeddings
        ),
        (hf.head_dim, hf.num_key_value_heads, hf.tie_word_embeddings)
    );
    assert_eq!(
        cfg.attention_kinds, hf.attention_kinds,
        "{case}: RoPE / NoPE / windows"
    );
    assert_eq!(cfg.layer_kinds, hf.layer_kinds);
    assert_eq!(cfg.qk_norm, hf.qk_norm);
    assert_eq!(
        (cfg.attn_softcap, cfg.final_softcap, cfg.attn_scale),
        (hf.attn_softcap, hf.final_softcap, hf.attn_scale),
        "{case}: soft-caps and attention scale"
    );
    let source: Arc<dyn WeightSource> = Arc::new(file);
    let m = model_from(&cfg, source, DType::F32);
    let e = Expected::load(case);
    let ids = e.ids("input_ids", &[1, PROMPT_LEN]);
    let got = m.forward_uncached(&ids, None).unwrap();
    let want = e.f32("logits", &[1, PROMPT_LEN, vocab(case)]);
    check(
        &format!("{case} F32 GGUF logits"),
        &flat(&got),
        &flat(&want),
        TOL,
    );
}

/// `llama`: q/k rows permuted by the converter, un-permuted by wick.
#[test]
fn llama_gguf_from_llama_cpp_converter_matches_transformers() {
    gguf_logits_match("tiny_llama");
}

#[test]
fn qwen2_gguf_from_llama_cpp_converter_matches_transformers() {
    gguf_logits_match("tiny_qwen2");
}

#[test]
fn qwen3_gguf_from_llama_cpp_converter_matches_transformers() {
    gguf_logits_match("tiny_qwen3");
}

#[test]
fn smollm3_gguf_from_llama_cpp_converter_matches_transformers() {
    gguf_logits_match("tiny_smollm3");
}

/// attn_qkv / ffn_up (gate_up) kept fused, rope.dimension_count 12 of 16, LongRoPE from the
/// rope_factors_long / rope_factors_short tensors.
#[test]
fn phi3_gguf_from_llama_cpp_converter_matches_transformers() {
    gguf_logits_match("tiny_phi3");
}

#[test]
fn gemma2_gguf_from_llama_cpp_converter_matches_transformers() {
    gguf_logits_match("tiny_gemma2");
}

#[test]
fn gemma3_gguf_from_llama_cpp_converter_matches_transformers() {
    gguf_logits_match("tiny_gemma3");
}

/// A prompt fed in two chunks (7 then 5 tokens) through the cache gives the logits of one pass.
#[test]
fn chunked_prefill_equals_one_pass() {
    for case in [
        "tiny_llama",
        "tiny_qwen2",
        "tiny_qwen3",
        "tiny_smollm3",
        "tiny_phi3",
    ] {
        let m = model(case);
        let e = Expected::load(case);
        let ids = e.ids("input_ids", &[1, PROMPT_LEN]);
        let mut cache = m.new_cache(1, PROMPT_LEN).unwrap();
        let a = m
            .forward(&ids.narrow(1, 0, 7).unwrap(), None, &mut cache)
            .unwrap();
        let b = m
            .forward(&ids.narrow(1, 7, 5).unwrap(), None, &mut cache)
            .unwrap();
        let got = Tensor::cat(&[a, b], 1).unwrap();
        let want = e.f32("logits", &[1, PROMPT_LEN, vocab(case)]);
        check(
            &format!("{case} chunked prefill"),
            &flat(&got),
            &flat(&want),
            TOL,
        );
    }
}
