//! LoRA on a quantized (Q8_0) base: candle's QMatMul passes no gradient to its input, so the
//! tracked path dequantizes on the fly; an adapter on layer 0 must still get a gradient through
//! the quantized layers above it, close to the one over the same weights held dense (the same
//! Q8_0 values dequantized).

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;
mod lora_common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use lora_common::*;
use wick::lora::{self, LoraConfig, TargetModules};

/// Gradients of every adapter var (layer order) after one loss on the PEFT case's batch.
fn grads(model_name: &str, dequantize: bool) -> Vec<(String, Vec<f32>)> {
    let case = base_case(model_name);
    let cfg = llama_common::config(case, "config.json");
    let source = Arc::new(llama_common::Q8Source {
        inner: llama_common::weights(case),
        quantized: Default::default(),
        dequantize,
    });
    let mut model = llama_common::model_from(&cfg, source, DType::F32);
    assert_eq!(model.projections()[0].1.is_quantized(), !dequantize);
    let lcfg = LoraConfig::new(4, 8.0, TargetModules::all_linear());
    let params = lora::apply(&mut model, &lcfg, 5).unwrap();
    for m in params.modules() {
        // The same B in both runs: a fixed pattern.
        let n = m.b.elem_count();
        let values: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.03).collect();
        m.b.set(&Tensor::from_vec(values, m.b.dims(), &Device::Cpu).unwrap())
            .unwrap();
    }
    let e = PeftCase::load(&format!("{model_name}_step0"));
    let ids = e.i64("input_ids").to_dtype(DType::U32).unwrap();
    let logits = model.forward_uncached(&ids, None).unwrap();
    let g = causal_lm_loss(&logits, &e.i64("labels"))
        .backward()
        .unwrap();
    params
        .named_vars()
        .into_iter()
        .map(|(k, v)| {
            let grad = g
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {k}"));
            (k, flat(grad))
        })
        .collect()
}

fn quantized_base_passes_gradients(model_name: &str) {
    let quantized = grads(model_name, false);
    let dense = grads(model_name, true);
    for ((key, q), (_, d)) in quantized.iter().zip(&dense) {
        assert!(
            q.iter().any(|&x| x != 0.0),
            "{model_name}: zero gradient for {key}"
        );
        // Layer 0's q/k/v inputs are untracked (the normed embeddings), so those three run
        // through QMatMul, which also quantizes the activations to 8 bits: a few percent of
        // noise, against ~100% if gradients were blocked or the weight misread.
        let cos = testkit::compare::cosine(q, d);
        println!("{model_name} {key}: cosine {cos:.5}");
        assert!(
            cos > 0.995,
            "{model_name} {key}: cosine {cos} to the dense gradient"
        );
    }
    let layer0_a = quantized
        .iter()
        .find(|(k, _)| k.contains("layers.0.self_attn.q_proj.lora_A"))
        .unwrap();
    assert!(layer0_a.1.iter().any(|&x| x != 0.0));
}

#[test]
fn llama_q8_0_base_passes_gradients_to_layer_0_adapters() {
    quantized_base_passes_gradients("llama");
}

#[test]
fn qwen2_q8_0_base_passes_gradients_to_layer_0_adapters() {
    quantized_base_passes_gradients("qwen2");
}
