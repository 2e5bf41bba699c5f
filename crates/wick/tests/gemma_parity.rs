//! Golden parity of the Gemma family (models/gemma.rs on the shared decoder) against
//! transformers on fixtures/tiny_gemma2 (soft-caps, sliding/global every other layer) and
//! fixtures/tiny_gemma3 (q/k norms, five sliding layers with a local RoPE base and one global with
//! its own base and linear scaling), both with a window of 5 under a 12-token prompt: logits
//! (also from the legacy config style and with query_pre_attn_scalar != head_dim), prefill +
//! cached decode against the full forward, a left-padded batch of two lengths against single
//! runs, and the llama.cpp-converted F32 GGUF against transformers.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use llama_common::{check, flat, weights, Expected, DECODE_STEPS, PROMPT_LEN, SHORT_LEN};
use testkit::paths::fixture;
use wick::io::gguf::GgufFile;
use wick::io::weights::{WeightSource, WeightView};
use wick::models::{DecoderConfig, DecoderModel};

const TOL: f32 = 1e-4;
const VOCAB: usize = 320;
const CASES: [&str; 2] = ["tiny_gemma2", "tiny_gemma3"];

fn model_with(case: &str, config: &str) -> DecoderModel {
    let cfg = DecoderConfig::from_file(&fixture(case).join(config)).unwrap();
    let source: Arc<dyn WeightSource> = Arc::new(weights(case));
    DecoderModel::new(&cfg, &WeightView::new(source, DType::F32, &Device::Cpu)).unwrap()
}

fn gguf_model(case: &str) -> DecoderModel {
    let path = fixture(case).join("model-f32.gguf");
    let file = GgufFile::open(&path).unwrap();
    let cfg = DecoderConfig::from_value(file.hf_config().unwrap(), &path).unwrap();
    let source: Arc<dyn WeightSource> = Arc::new(file);
    DecoderModel::new(&cfg, &WeightView::new(source, DType::F32, &Device::Cpu)).unwrap()
}

fn prompt_logits(m: &DecoderModel, e: &Expected) -> Vec<f32> {
    let ids = e.ids("input_ids", &[1, PROMPT_LEN]);
    let out = m.forward_uncached(&ids, None).unwrap();
    assert_eq!(out.dims(), &[1, PROMPT_LEN, VOCAB]);
    flat(&out)
}

#[test]
fn logits_match_transformers_for_every_config_style() {
    for case in CASES {
        let e = Expected::load(case);
        let want = flat(&e.f32("logits", &[1, PROMPT_LEN, VOCAB]));
        for config in ["config.json", "config_legacy.json"] {
            let got = prompt_logits(&model_with(case, config), &e);
            check(&format!("{case} {config} logits"), &got, &want, TOL);
        }
        let qpas = flat(&e.f32("logits_qpas", &[1, PROMPT_LEN, VOCAB]));
        let got = prompt_logits(&model_with(case, "config_qpas.json"), &e);
        check(
            &format!("{case} query_pre_attn_scalar 24 logits"),
            &got,
            &qpas,
            TOL,
        );
    }
}

#[test]
fn llama_cpp_converted_f32_gguf_matches_transformers() {
    for case in CASES {
        let e = Expected::load(case);
        let m = gguf_model(case);
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
    }
}

/// Prefill, then 8 cached one-token steps, each against transformers' cached step and against
/// our own full-sequence forward (the window of 5 slides inside the cache).
#[test]
fn prefill_and_8_cached_decode_steps_match_the_full_forward() {
    for case in CASES {
        let m = model_with(case, "config.json");
        let e = Expected::load(case);
        let total = PROMPT_LEN + DECODE_STEPS;
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

        let tokens = e.ids("decode_tokens", &[1, DECODE_STEPS + 1]);
        let want_steps = e.f32("decode_logits", &[DECODE_STEPS, VOCAB]);
        let mut cache = m.new_cache(1, total).unwrap();
        let prompt = e.ids("input_ids", &[1, PROMPT_LEN]);
        let last = m.forward_last(&prompt, None, &mut cache).unwrap();
        let want_last = full.narrow(1, PROMPT_LEN - 1, 1).unwrap();
        check(
            &format!("{case} prefill last"),
            &flat(&last),
            &flat(&want_last),
            TOL,
        );
        for i in 0..DECODE_STEPS {
            let step = m
                .forward(&tokens.narrow(1, i, 1).unwrap(), None, &mut cache)
                .unwrap();
            let hf = flat(&want_steps.narrow(0, i, 1).unwrap());
            check(
                &format!("{case} decode step {i} vs transformers"),
                &flat(&step),
                &hf,
                TOL,
            );
            let ours = flat(&full.narrow(1, PROMPT_LEN + i, 1).unwrap());
            check(
                &format!("{case} decode step {i} vs full forward"),
                &flat(&step),
                &ours,
                TOL,
            );
        }
    }
}

fn single_run(m: &DecoderModel, prompt: &Tensor, steps: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = m.new_cache(1, 32).unwrap();
    let mut out = vec![flat(&m.forward(prompt, None, &mut cache).unwrap())];
    for &t in steps {
        let ids = Tensor::new(&[[t]], &Device::Cpu).unwrap();
        out.push(flat(&m.forward(&ids, None, &mut cache).unwrap()));
    }
    out
}

/// A left-padded batch of a 12- and a 7-token prompt equals transformers' batch and two single
/// runs, in prefill and in three decode steps after it.
#[test]
fn batch_of_two_lengths_equals_two_single_runs() {
    for case in CASES {
        let m = model_with(case, "config.json");
        let e = Expected::load(case);
        let next = [[5u32, 17, 250], [99, 3, 42]];
        let alone = [
            single_run(&m, &e.ids("input_ids", &[1, PROMPT_LEN]), &next[0]),
            single_run(&m, &e.ids("short_ids", &[1, SHORT_LEN]), &next[1]),
        ];
        let row = |t: &Tensor, b: usize, from: usize, len: usize| {
            flat(&t.get(b).unwrap().narrow(0, from, len).unwrap())
        };
        let ids = e.ids("batch_ids", &[2, PROMPT_LEN]);
        let mask = e.ids("batch_mask", &[2, PROMPT_LEN]);
        let pad = PROMPT_LEN - SHORT_LEN;
        let mut cache = m.new_cache(2, PROMPT_LEN + 3).unwrap();
        let got = m.forward(&ids, Some(&mask), &mut cache).unwrap();
        let hf = e.f32("batch_logits", &[2, PROMPT_LEN, VOCAB]);
        for (b, from, len) in [(0, 0, PROMPT_LEN), (1, pad, SHORT_LEN)] {
            let what = format!("{case} left-padded row {b}");
            check(
                &format!("{what} vs transformers"),
                &row(&got, b, from, len),
                &row(&hf, b, from, len),
                TOL,
            );
            check(
                &format!("{what} vs single"),
                &row(&got, b, from, len),
                &alone[b][0],
                TOL,
            );
        }
        for i in 0..3 {
            let ids = Tensor::new(&[[next[0][i]], [next[1][i]]], &Device::Cpu).unwrap();
            let last = m.forward_last(&ids, None, &mut cache).unwrap();
            for (b, single) in alone.iter().enumerate() {
                let what = format!("{case} batched decode step {i} row {b}");
                check(&what, &flat(&last.get(b).unwrap()), &single[i + 1], TOL);
            }
        }
    }
}
