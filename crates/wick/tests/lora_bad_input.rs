//! Bad LoRA input is refused before anything is attached (so before training starts), each with
//! a one-line error naming the module, key, file or setting at fault.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;
mod lora_common;

use std::path::Path;

use lora_common::*;
use wick::lora::{self, LoraConfig, TargetModules};
use wick::models::DecoderModel;

fn names(list: &[&str]) -> TargetModules {
    TargetModules::List(list.iter().map(|s| s.to_string()).collect())
}

fn no_adapters(model: &DecoderModel) -> bool {
    model.projections().iter().all(|(_, l)| l.lora().is_none())
}

fn apply_err(cfg: &LoraConfig) -> String {
    let mut model = llama_common::model("tiny_llama");
    let err = lora::apply(&mut model, cfg, 0).unwrap_err().to_string();
    assert!(
        no_adapters(&model),
        "nothing may be attached on error ({err})"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    println!("{err}");
    err
}

#[test]
fn a_target_module_the_model_lacks_is_named_with_the_model_modules() {
    let err = apply_err(&LoraConfig::new(4, 8.0, names(&["q_proj", "qkv_proj"])));
    assert!(
        err.contains("`qkv_proj`") && err.contains("target_modules"),
        "{err}"
    );
    assert!(
        err.contains("gate_proj") && err.contains("all-linear"),
        "lists the modules: {err}"
    );
    let err = apply_err(&LoraConfig::new(4, 8.0, names(&["lm_head"])));
    assert!(err.contains("`lm_head`"), "{err}");
}

#[test]
fn a_rank_larger_than_a_target_layer_is_refused() {
    // tiny_llama: hidden 64, k/v_proj 64 -> 32 (GQA): r = 40 fits q_proj but not k_proj.
    let err = apply_err(&LoraConfig::new(40, 8.0, TargetModules::all_linear()));
    assert!(
        err.contains("rank 40") && err.contains("k_proj") && err.contains("at most 32"),
        "{err}"
    );
    // Only q_proj targeted: 64 fits, 65 does not.
    let mut model = llama_common::model("tiny_llama");
    lora::apply(&mut model, &LoraConfig::new(64, 8.0, names(&["q_proj"])), 0).unwrap();
    let err = apply_err(&LoraConfig::new(65, 8.0, names(&["q_proj"])));
    assert!(err.contains("at most 64"), "{err}");
}

#[test]
fn bad_or_unsupported_settings_are_refused() {
    let mut cfg = LoraConfig::new(4, 8.0, TargetModules::all_linear());
    cfg.use_dora = true;
    assert!(apply_err(&cfg).contains("use_dora"));
    let cfg = LoraConfig::new(0, 8.0, TargetModules::all_linear());
    assert!(apply_err(&cfg).contains("`r`"));
    let mut cfg = LoraConfig::new(4, 8.0, TargetModules::all_linear());
    cfg.lora_dropout = 1.0;
    assert!(apply_err(&cfg).contains("lora_dropout"));
    let cfg = LoraConfig::new(4, 8.0, TargetModules::One(".*q_proj".into()));
    assert!(apply_err(&cfg).contains("regex"));
    let mut cfg = LoraConfig::new(4, 8.0, TargetModules::all_linear());
    cfg.modules_to_save = Some(vec!["lm_head".into()]);
    assert!(apply_err(&cfg).contains("modules_to_save"));
}

#[test]
fn a_second_adapter_on_the_same_layers_is_refused() {
    let mut model = llama_common::model("tiny_llama");
    let cfg = LoraConfig::new(4, 8.0, names(&["v_proj"]));
    lora::apply(&mut model, &cfg, 0).unwrap();
    let err = lora::apply(&mut model, &cfg, 0).unwrap_err().to_string();
    assert!(err.contains("already carries"), "{err}");
}

/// Copies the llama_step0 PEFT adapter into a temp dir, lets `edit` break it, and returns the
/// load error (the model must be left without adapters).
fn load_err(edit: impl FnOnce(&Path)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let src = case_dir("llama_step0").join("adapter");
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    edit(dir.path());
    let mut model = llama_common::model("tiny_llama");
    let err = lora::load_adapter(dir.path(), &mut model)
        .unwrap_err()
        .to_string();
    assert!(no_adapters(&model), "nothing attached on error ({err})");
    println!("{err}");
    err
}

/// Rewrites adapter_model.safetensors with `f` applied to its tensors.
fn rewrite_weights(
    dir: &Path,
    f: impl FnOnce(&mut std::collections::HashMap<String, candle_core::Tensor>),
) {
    let path = dir.join("adapter_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    f(&mut tensors);
    candle_core::safetensors::save(&tensors, &path).unwrap();
}

const KEY: &str = "base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight";

#[test]
fn broken_adapter_files_are_named() {
    let err = load_err(|d| std::fs::remove_file(d.join("adapter_config.json")).unwrap());
    assert!(err.contains("adapter_config.json"), "{err}");
    let err = load_err(|d| std::fs::remove_file(d.join("adapter_model.safetensors")).unwrap());
    assert!(err.contains("adapter_model.safetensors"), "{err}");
    let err = load_err(|d| {
        rewrite_weights(d, |t| {
            t.remove(KEY);
        })
    });
    assert!(err.contains(KEY) && err.contains("not found"), "{err}");
    let err = load_err(|d| {
        rewrite_weights(d, |t| {
            t.insert(
                KEY.into(),
                candle_core::Tensor::zeros(
                    (64, 4),
                    candle_core::DType::F32,
                    &candle_core::Device::Cpu,
                )
                .unwrap(),
            );
        })
    });
    assert!(err.contains(KEY) && err.contains("[32, 4]"), "{err}");
    let extra = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight";
    let err = load_err(|d| {
        rewrite_weights(d, |t| {
            let a = t["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].clone();
            t.insert(extra.into(), a);
        })
    });
    assert!(err.contains(extra) && err.contains("unexpected"), "{err}");
    let err = load_err(|d| {
        let p = d.join("adapter_config.json");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(
            &p,
            text.replace("\"use_dora\": false", "\"use_dora\": true"),
        )
        .unwrap();
    });
    assert!(
        err.contains("use_dora") && err.contains("adapter_config.json"),
        "{err}"
    );
    let err = load_err(|d| {
        let p = d.join("adapter_config.json");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("\"r\": 4", "\"r\": 40")).unwrap();
    });
    assert!(
        err.contains("rank 40") && err.contains("adapter_config.json"),
        "{err}"
    );
}

#[test]
fn merging_into_a_quantized_base_asks_for_a_float_dtype() {
    use std::sync::Arc;
    let e = candle_core::quantized::QTensor::quantize(
        &candle_core::Tensor::randn(0f32, 1.0, (32, 64), &candle_core::Device::Cpu).unwrap(),
        candle_core::quantized::GgmlDType::Q8_0,
    )
    .unwrap();
    let mut linear = wick::nn::Linear::from_qtensor(e, None, candle_core::DType::F32).unwrap();
    let mode = Arc::new(wick::nn::LoraMode::new(0));
    let a = candle_core::Var::zeros((2, 64), candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    let b = candle_core::Var::zeros((32, 2), candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    linear
        .set_lora(wick::nn::LoraAdapter::new(a, b, 1.0, 0.0, mode))
        .unwrap();
    let err = linear.merge_lora().unwrap_err().to_string();
    assert!(
        err.contains("quantized") && err.contains("--dtype f32"),
        "{err}"
    );
}
