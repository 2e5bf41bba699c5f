//! LoRA on Phi-3's fused projections (PEFT target names `qkv_proj`, `gate_up_proj`, plus
//! `o_proj`, `down_proj`) against PEFT on fixtures/tiny_phi3 (sequences of 20 tokens: past
//! original_max 16, so the long LongRoPE table): PEFT's adapters load into wick with PEFT's
//! logits and loss, the step-0 A/B gradients match within 1e-4 relative (B = 0, and B random
//! with rsLoRA); a wick-written adapter loads in PEFT with wick's logits and `merge_to_dir`
//! writes a directory transformers loads with them (the Python halves with WICK_PYTHON set).

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;
mod lora_common;

use candle_core::{DType, Device, Tensor};
use lora_common::*;
use testkit::paths::fixture;
use wick::io::safetensors::SafetensorsWeights;
use wick::io::ModelFiles;
use wick::lora::{self, LoraConfig, TargetModules};

const CASE: &str = "tiny_phi3";
const VOCAB: usize = 328;
const SEQ: usize = 20;
const TOL: f32 = 1e-4;

struct Golden(SafetensorsWeights);

impl Golden {
    fn load(case: &str) -> Golden {
        let path = fixture(CASE).join(format!("lora_{case}/expected.safetensors"));
        Golden(SafetensorsWeights::open(&[path]).unwrap())
    }

    fn ids(&self, name: &str) -> Tensor {
        let t = self.0.load(name, &[BATCH, SEQ], DType::I64, &Device::Cpu);
        t.unwrap()
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Tensor {
        self.0.load(name, shape, DType::F32, &Device::Cpu).unwrap()
    }
}

fn parity(case: &str) {
    let mut model = llama_common::model(CASE);
    let adapter = fixture(CASE).join(format!("lora_{case}/adapter"));
    let (cfg, params) = lora::load_adapter(&adapter, &mut model).unwrap();
    assert_eq!(params.len(), 2 * 4, "qkv, o, gate_up, down of both layers");
    assert_eq!((cfg.r, cfg.lora_alpha), (4, 8.0));

    let e = Golden::load(case);
    let ids = e.ids("input_ids").to_dtype(DType::U32).unwrap();
    let logits = model.forward_uncached(&ids, None).unwrap();
    let want = e.f32("logits", &[BATCH, SEQ, VOCAB]);
    check_abs(&format!("{case} logits"), &flat(&logits), &flat(&want), TOL);
    let loss = causal_lm_loss(&logits, &e.ids("labels"));
    let want_loss = flat(&e.f32("loss", &[1]))[0];
    let got_loss = loss.to_scalar::<f32>().unwrap();
    println!("{case} loss: wick {got_loss:.7}, PEFT {want_loss:.7}");
    assert!((got_loss - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0));

    let grads = loss.backward().unwrap();
    let mut compared = 0;
    for (key, var) in params.named_vars() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{case}: no gradient reached {key}"));
        let (g, want) = (flat(g), flat(&e.f32(&format!("grad.{key}"), var.dims())));
        if case == "step0" && key.contains("lora_A") {
            // B = 0, so dL/dA = scale·Bᵀ(dL/dy)x is exactly zero in both.
            assert!(want.iter().all(|&x| x == 0.0), "PEFT {key} grad not 0");
            assert!(g.iter().all(|&x| x == 0.0), "wick {key} grad not 0");
            continue;
        }
        check_rel(&format!("{case} grad {key}"), &g, &want, TOL);
        compared += 1;
    }
    let want_compared = if case == "step0" { 8 } else { 16 };
    assert_eq!(compared, want_compared, "gradients compared");
}

#[test]
fn step0_peft_adapter_logits_and_grads_match() {
    parity("step0");
}

#[test]
fn random_b_rslora_logits_and_grads_match() {
    parity("random_b");
}

/// wick's own adapters on every linear layer of Phi-3 target the fused names; saved, they load
/// in PEFT (and merged, in transformers) with wick's logits.
#[test]
fn wick_adapter_loads_in_peft_and_merges_with_the_same_logits() {
    let cfg = LoraConfig::new(4, 8.0, TargetModules::all_linear());
    let mut model = llama_common::model(CASE);
    let params = lora::apply(&mut model, &cfg, 11).unwrap();
    let mut targets: Vec<String> = params
        .modules()
        .iter()
        .map(|m| m.path.rsplit('.').next().unwrap().to_string())
        .collect();
    targets.sort_unstable();
    targets.dedup();
    assert_eq!(targets, ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]);
    for (i, m) in params.modules().iter().enumerate() {
        let (out, r) = m.b.dims2().unwrap();
        let values: Vec<f32> = (0..out * r)
            .map(|j| (j as f32 * 0.37 + i as f32).sin() * 0.1)
            .collect();
        m.b.set(&Tensor::from_vec(values, (out, r), &Device::Cpu).unwrap())
            .unwrap();
    }
    let ids = Golden::load("step0")
        .ids("input_ids")
        .to_dtype(DType::U32)
        .unwrap();
    let want = model.forward_uncached(&ids, None).unwrap();
    let base = llama_common::model(CASE)
        .forward_uncached(&ids, None)
        .unwrap();
    let moved = testkit::compare::diff(&flat(&want), &flat(&base)).max_abs;
    assert!(moved > 1e-3, "the adapter changes the logits ({moved})");

    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("adapter");
    lora::save_adapter(&adapter, &cfg, &params).unwrap();
    let mut loaded = llama_common::model(CASE);
    lora::load_adapter(&adapter, &mut loaded).unwrap();
    let again = loaded.forward_uncached(&ids, None).unwrap();
    check_abs("wick reload", &flat(&again), &flat(&want), 0.0);

    let out = dir.path().join("merged");
    let files = ModelFiles::resolve(fixture(CASE).to_str().unwrap()).unwrap();
    let report = lora::merge_to_dir(&files, &adapter, &out, DType::F32, false).unwrap();
    assert_eq!(report.adapted_modules, 8);
    let merged = llama_common::model_from(
        &wick::models::DecoderConfig::from_file(&out.join("config.json")).unwrap(),
        std::sync::Arc::new(SafetensorsWeights::open(&[out.join("model.safetensors")]).unwrap()),
        DType::F32,
    );
    let got = merged.forward_uncached(&ids, None).unwrap();
    check_abs("merged dir vs adapter", &flat(&got), &flat(&want), TOL);

    let logits_file = dir.path().join("logits.safetensors");
    write_logits(&logits_file, &ids, &want);
    if let Some(py) = python("PEFT loads the wick phi3 adapter") {
        let base = fixture(CASE);
        run_checker(
            &py,
            "check_wick_adapter.py",
            &[&base, &adapter, &logits_file],
            &[],
        );
        run_checker(&py, "check_merged.py", &[&out, &logits_file], &[]);
    }
}
