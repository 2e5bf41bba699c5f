//! `DecoderModel::forward_decode` (one step for several sequences, each with its own cache) gives
//! every sequence the logits it gets decoding alone, while sequences join and leave the batch
//! between steps, as the server's continuous batching does. Real SmolLM2, quantized and f32.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use candle_core::{DType, Device, Tensor};
use testkit::compare::diff;
use testkit::paths::real_model;
use wick::generate::load::load_causal_lm;
use wick::io::ModelFiles;
use wick::models::DecoderModel;
use wick::nn::KvCache;

fn load(dtype: Option<DType>) -> DecoderModel {
    let path = real_model("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let files = ModelFiles::resolve(path.to_str().unwrap()).unwrap();
    load_causal_lm(&files, &Device::Cpu, dtype, None)
        .unwrap()
        .model
        .into_model()
}

fn prefill(model: &DecoderModel, prompt: &[u32]) -> (KvCache, Vec<f32>) {
    let mut cache = model.new_cache(1, 64).unwrap();
    let ids = Tensor::new(prompt, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = model.forward_last(&ids, None, &mut cache).unwrap();
    (cache, logits.squeeze(0).unwrap().to_vec1().unwrap())
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding of each prompt alone: the logits of every decode step.
fn alone(model: &DecoderModel, prompt: &[u32], steps: usize) -> Vec<Vec<f32>> {
    let (mut cache, mut logits) = prefill(model, prompt);
    let mut out = Vec::new();
    for _ in 0..steps {
        let id = Tensor::new(&[[argmax(&logits)]], &Device::Cpu).unwrap();
        let next = model.forward_last(&id, None, &mut cache).unwrap();
        logits = next.squeeze(0).unwrap().to_vec1().unwrap();
        out.push(logits.clone());
    }
    out
}

/// `rel_tol` is relative to the largest logit magnitude seen (the scale of f32 rounding in
/// the lm_head's sums); 0 demands bit-identical logits.
fn check(dtype: Option<DType>, rel_tol: f32) {
    let model = load(dtype);
    let prompts: [&[u32]; 3] = [
        &[1, 504, 3458, 282],
        &[1, 22, 1135],
        &[1, 4300, 314, 253, 1345, 30],
    ];
    let steps = 6;
    let expected: Vec<_> = prompts.iter().map(|p| alone(&model, p, steps)).collect();

    // Sequence 0 runs steps 0..6, sequence 1 leaves after 3, sequence 2 joins at step 2.
    let spans = [(0, 6), (0, 3), (2, 6)];
    let mut state: Vec<Option<(KvCache, Vec<f32>, usize)>> = vec![None, None, None];
    let mut worst = 0f32;
    let mut scale = 0f32;
    for t in 0..steps {
        for (s, &(from, _)) in spans.iter().enumerate() {
            if t == from {
                let (cache, logits) = prefill(&model, prompts[s]);
                state[s] = Some((cache, logits, 0));
            }
        }
        let active: Vec<usize> = (0..3)
            .filter(|&s| t >= spans[s].0 && t < spans[s].1)
            .collect();
        let tokens: Vec<u32> = active
            .iter()
            .map(|&s| argmax(&state[s].as_ref().unwrap().1))
            .collect();
        let mut caches: Vec<&mut KvCache> = Vec::new();
        for (s, st) in state.iter_mut().enumerate() {
            if active.contains(&s) {
                caches.push(&mut st.as_mut().unwrap().0);
            }
        }
        let logits = model.forward_decode(&tokens, &mut caches).unwrap();
        assert_eq!(logits.dims2().unwrap().0, active.len());
        for (row, &s) in active.iter().enumerate() {
            let got: Vec<f32> = logits.get(row).unwrap().to_vec1().unwrap();
            let st = state[s].as_mut().unwrap();
            let want = &expected[s][st.2];
            let d = diff(&got, want);
            println!("{dtype:?} step {t} seq {s} (its step {}): {d:?}", st.2);
            worst = worst.max(d.max_abs);
            scale = want.iter().fold(scale, |m, x| m.max(x.abs()));
            assert_eq!(argmax(&got), argmax(want), "seq {s} step {t}");
            st.1 = got;
            st.2 += 1;
        }
    }
    let tol = rel_tol * scale;
    println!("{dtype:?}: worst max abs diff {worst:e}, largest |logit| {scale}, tolerance {tol:e}");
    assert!(worst <= tol, "{worst} > {tol}");
}

/// Quantized matmuls work row by row, so stacking sequences changes nothing: bit-identical.
#[test]
fn batched_decode_equals_decoding_alone_quantized() {
    check(None, 0.0);
}

/// Dense f32 GEMM blocks differently for 1 row and for n rows: rounding-level differences.
#[test]
fn batched_decode_equals_decoding_alone_f32() {
    check(Some(DType::F32), 1e-5);
}

#[test]
fn mismatched_tokens_and_caches_are_refused() {
    let model = load(None);
    let mut cache = model.new_cache(1, 8).unwrap();
    let err = model
        .forward_decode(&[1, 2], &mut [&mut cache])
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 tokens for 1 caches"), "{err}");
    let mut batched = model.new_cache(2, 8).unwrap();
    let err = model
        .forward_decode(&[1], &mut [&mut batched])
        .unwrap_err()
        .to_string();
    assert!(err.contains("one sequence"), "{err}");
}
