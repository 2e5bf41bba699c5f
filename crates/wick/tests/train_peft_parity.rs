//! Five AdamW steps of LoRA training on the tiny Llama, with prompt masking, padding, clipping,
//! weight decay and a cosine warmup, against PEFT + torch (fixtures/train_peft/gen.py): the
//! same adapter at the start, the losses of every step within 1e-4.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use testkit::compare::assert_close;
use testkit::paths::fixture;
use wick::io::safetensors::SafetensorsWeights;
use wick::io::weights::{WeightSource, WeightView};
use wick::lora::LoraLlama;
use wick::models::{DecoderConfig, DecoderModel};
use wick::train::{train_steps, AdamWParams, Batch, ScheduleKind, TrainConfig};

fn lora_model() -> LoraLlama {
    let base = fixture("tiny_llama");
    let cfg = DecoderConfig::from_file(&base.join("config.json")).unwrap();
    let weights: Arc<dyn WeightSource> =
        Arc::new(SafetensorsWeights::open(&[base.join("model.safetensors")]).unwrap());
    let model =
        DecoderModel::new(&cfg, &WeightView::new(weights, DType::F32, &Device::Cpu)).unwrap();
    let adapter = fixture("lora_peft").join("llama_random_b").join("adapter");
    LoraLlama::from_adapter(model, &adapter).unwrap()
}

#[test]
fn five_adamw_steps_with_prompt_masking_match_peft() {
    let e = candle_core::safetensors::load(
        fixture("train_peft").join("expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let ints = |t: &Tensor| -> Vec<i64> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let batches: Vec<Batch> = (0..3)
        .map(|k| {
            let ids = &e[&format!("batch{k}.input_ids")];
            let (rows, cols) = ids.dims2().unwrap();
            Batch {
                rows,
                cols,
                input_ids: ints(ids).iter().map(|&x| x as u32).collect(),
                attention_mask: ints(&e[&format!("batch{k}.attention_mask")])
                    .iter()
                    .map(|&x| x as u32)
                    .collect(),
                labels: ints(&e[&format!("batch{k}.labels")]),
            }
        })
        .collect();
    let cfg = TrainConfig {
        lr: 5e-3,
        schedule: ScheduleKind::Cosine,
        warmup_steps: 2,
        max_steps: Some(5),
        grad_accum: 1,
        max_grad_norm: Some(1.0),
        adamw: AdamWParams {
            weight_decay: 0.01,
            ..AdamWParams::default()
        },
        shuffle: false,
        ..TrainConfig::default()
    };
    let model = lora_model();
    let losses = train_steps(&model, batches, &cfg).unwrap();
    let want: Vec<f32> = e["losses"].to_dtype(DType::F32).unwrap().to_vec1().unwrap();
    let diff: Vec<f32> = losses
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .collect();
    println!("wick {losses:?}\nPEFT {want:?}\n|diff| {diff:?}");
    assert_close("LoRA training losses vs PEFT", &losses, &want, 1e-4, 0.0);
}
