//! Golden parity of models/llama.rs against transformers on the tiny random models of
//! fixtures/tiny_llama (GQA, untied head, llama3/linear RoPE variants) and fixtures/tiny_qwen2
//! (q/k/v bias, tied embeddings): full-sequence logits, prefill + cached decode steps, and a
//! left-padded batch of two lengths.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use llama_common::*;

const TOL: f32 = 1e-4;

fn logits_match(case: &str) {
    let m = model(case);
    let e = Expected::load(case);
    let ids = e.ids("input_ids", &[1, PROMPT_LEN]);
    let want = flat(&e.f32("logits", &[1, PROMPT_LEN, VOCAB]));

    let uncached = m.forward_uncached(&ids, None).unwrap();
    assert_eq!(uncached.dims(), &[1, PROMPT_LEN, VOCAB]);
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

/// Prefill, then 8 one-token steps through the cache, each against transformers' cached step and
/// against our own full-sequence forward of the same tokens.
fn decode_matches(case: &str) {
    let m = model(case);
    let e = Expected::load(case);
    let total = PROMPT_LEN + DECODE_STEPS;
    let prompt = e.ids("input_ids", &[1, PROMPT_LEN]);
    let tokens = e.ids("decode_tokens", &[1, DECODE_STEPS + 1]);
    let want_steps = e.f32("decode_logits", &[DECODE_STEPS, VOCAB]);
    let full = m
        .forward_uncached(&e.ids("full_ids", &[1, total]), None)
        .unwrap();
    let want_full = flat(&e.f32("full_logits", &[1, total, VOCAB]));
    check(
        &format!("{case} full-sequence logits"),
        &flat(&full),
        &want_full,
        TOL,
    );

    let mut cache = m.new_cache(1, total).unwrap();
    let last = m.forward_last(&prompt, None, &mut cache).unwrap();
    assert_eq!(last.dims(), &[1, VOCAB]);
    let want_last = full.narrow(1, PROMPT_LEN - 1, 1).unwrap();
    check(
        &format!("{case} prefill last"),
        &flat(&last),
        &flat(&want_last),
        TOL,
    );
    for i in 0..DECODE_STEPS {
        let token = tokens.narrow(1, i, 1).unwrap();
        let step = m.forward(&token, None, &mut cache).unwrap();
        assert_eq!(step.dims(), &[1, 1, VOCAB]);
        let hf = want_steps.narrow(0, i, 1).unwrap();
        check(
            &format!("{case} decode step {i} vs transformers"),
            &flat(&step),
            &flat(&hf),
            TOL,
        );
        let ours = full.narrow(1, PROMPT_LEN + i, 1).unwrap();
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
    let hf = e.f32("batch_logits", &[2, PROMPT_LEN, VOCAB]);
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

fn scaled_rope_matches(variant: &str) {
    let cfg = config("tiny_llama", &format!("config_{variant}.json"));
    let m = model_from(&cfg, Arc::new(weights("tiny_llama")), DType::F32);
    let e = Expected::load("tiny_llama");
    let ids = e.ids("input_ids", &[1, PROMPT_LEN]);
    let got = m.forward_uncached(&ids, None).unwrap();
    let want = e.f32(&format!("logits_{variant}"), &[1, PROMPT_LEN, VOCAB]);
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

/// The Llama tensors loaded as a Mistral with a sliding window of 5 (< the prompt length):
/// parity with transformers, and cached decode steps equal the full forward under the window.
#[test]
fn mistral_sliding_window_matches_transformers_and_decodes() {
    let cfg = config("tiny_llama", "config_mistral.json");
    assert_eq!(cfg.layer_windows(), vec![Some(5), Some(5)]);
    let m = model_from(&cfg, Arc::new(weights("tiny_llama")), DType::F32);
    let e = Expected::load("tiny_llama");
    let ids = e.ids("input_ids", &[1, PROMPT_LEN]);
    let got = m.forward_uncached(&ids, None).unwrap();
    let want = e.f32("logits_mistral", &[1, PROMPT_LEN, VOCAB]);
    check("mistral logits", &flat(&got), &flat(&want), TOL);

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
            &format!("mistral decode step {i} vs full forward"),
            &flat(&step),
            &flat(&want),
            TOL,
        );
    }
}

/// A prompt fed in two chunks (7 then 5 tokens) through the cache gives the logits of one pass.
#[test]
fn chunked_prefill_equals_one_pass() {
    for case in ["tiny_llama", "tiny_qwen2"] {
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
        let want = e.f32("logits", &[1, PROMPT_LEN, VOCAB]);
        check(
            &format!("{case} chunked prefill"),
            &flat(&got),
            &flat(&want),
            TOL,
        );
    }
}
