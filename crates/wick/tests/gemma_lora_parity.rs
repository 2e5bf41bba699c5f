//! LoRA on the tiny Gemma 2 / Gemma 3 models against PEFT (fixtures/lora_peft, gen.py there):
//! PEFT's adapters load into wick with PEFT's logits and loss, and the step-0 gradients of every
//! lora_A / lora_B match within 1e-4 relative (f32), at PEFT's true step 0 (B = 0) and with B
//! random (rsLoRA). The reverse direction: a wick-saved adapter loads in PEFT with wick's logits,
//! and a merged directory loads in transformers with the adapter's logits (both with
//! WICK_PYTHON set, see fixtures/lora_peft/README.md).

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;
mod lora_common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use lora_common::*;
use testkit::paths::fixture;
use wick::io::safetensors::SafetensorsWeights;
use wick::io::weights::WeightView;
use wick::io::ModelFiles;
use wick::lora::{self, LoraConfig, TargetModules};
use wick::models::{DecoderConfig, DecoderModel};

const TOL: f32 = 1e-4;
const GEMMA_VOCAB: usize = 320;
const MODELS: [(&str, &str, usize); 2] =
    [("gemma2", "tiny_gemma2", 4), ("gemma3", "tiny_gemma3", 6)];

fn load(dir: &std::path::Path) -> DecoderModel {
    let cfg = DecoderConfig::from_file(&dir.join("config.json")).unwrap();
    let w = SafetensorsWeights::open(&[dir.join("model.safetensors")]).unwrap();
    DecoderModel::new(
        &cfg,
        &WeightView::new(Arc::new(w), DType::F32, &Device::Cpu),
    )
    .unwrap()
}

fn parity(model_name: &str, base: &str, layers: usize, case_name: &str) {
    let case = format!("{model_name}_{case_name}");
    let mut model = load(&fixture(base));
    let (cfg, params) = lora::load_adapter(&case_dir(&case).join("adapter"), &mut model).unwrap();
    assert_eq!(
        params.len(),
        7 * layers,
        "every projection of every layer is adapted"
    );
    assert_eq!((cfg.r, cfg.lora_alpha), (4, 8.0));

    let e = PeftCase::load(&case);
    let ids = e.i64("input_ids").to_dtype(DType::U32).unwrap();
    let logits = model.forward_uncached(&ids, None).unwrap();
    let want = e.f32("logits", &[BATCH, SEQ, GEMMA_VOCAB]);
    check_abs(&format!("{case} logits"), &flat(&logits), &flat(&want), TOL);
    let loss = causal_lm_loss(&logits, &e.i64("labels"));
    let (got_loss, want_loss) = (
        loss.to_scalar::<f32>().unwrap(),
        flat(&e.f32("loss", &[1]))[0],
    );
    println!("{case} loss: wick {got_loss:.7}, PEFT {want_loss:.7}");
    assert!((got_loss - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0));

    let grads = loss.backward().unwrap();
    let mut compared = 0;
    for (key, var) in params.named_vars() {
        let g = flat(
            grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no grad for {key}")),
        );
        let want = flat(&e.f32(&format!("grad.{key}"), var.dims()));
        if case_name == "step0" && key.contains("lora_A") {
            // B = 0, so dL/dA is exactly zero in both.
            assert!(
                want.iter().all(|&x| x == 0.0),
                "{case}: PEFT {key} grad not 0"
            );
            assert!(g.iter().all(|&x| x == 0.0), "{case}: wick {key} grad not 0");
            continue;
        }
        check_rel(&format!("{case} grad {key}"), &g, &want, TOL);
        compared += 1;
    }
    let expected = if case_name == "step0" {
        7 * layers
    } else {
        14 * layers
    };
    assert_eq!(compared, expected, "{case}: gradients compared");
}

#[test]
fn gemma_peft_adapters_give_peft_logits_loss_and_step0_grads() {
    for (name, base, layers) in MODELS {
        parity(name, base, layers, "step0");
        parity(name, base, layers, "random_b");
    }
}

fn ids() -> Tensor {
    Tensor::new(
        &[[2u32, 17, 40, 5, 99, 300, 7, 64, 128, 3, 11, 250]],
        &Device::Cpu,
    )
    .unwrap()
}

/// Sets every B to deterministic values so the adapter moves the logits (B = 0 would hide a
/// wrong A).
fn randomize_b(params: &lora::LoraParams) {
    for (i, m) in params.modules().iter().enumerate() {
        let (out, r) = m.b.dims2().unwrap();
        let values: Vec<f32> = (0..out * r)
            .map(|j| (j as f32 * 0.37 + i as f32).sin() * 0.2)
            .collect();
        m.b.set(&Tensor::from_vec(values, (out, r), &Device::Cpu).unwrap())
            .unwrap();
    }
}

/// A wick adapter (all linear layers, random B) saved, loaded in PEFT, gives wick's logits;
/// merged into a directory, transformers gives the same logits, and so does wick.
#[test]
fn wick_adapter_loads_in_peft_and_merges_with_the_same_logits() {
    for (name, base, layers) in MODELS {
        let mut model = load(&fixture(base));
        let cfg = LoraConfig::new(4, 8.0, TargetModules::all_linear());
        let params = lora::apply(&mut model, &cfg, 7).unwrap();
        assert_eq!(params.len(), 7 * layers);
        randomize_b(&params);
        let want = model.forward_uncached(&ids(), None).unwrap();
        let plain = load(&fixture(base)).forward_uncached(&ids(), None).unwrap();
        let moved = testkit::compare::diff(&flat(&want), &flat(&plain)).max_abs;
        assert!(
            moved > 1e-2,
            "{name}: the adapter barely changes the logits ({moved})"
        );

        let dir = tempfile::tempdir().unwrap();
        let adapter = dir.path().join("adapter");
        lora::save_adapter(&adapter, &cfg, &params).unwrap();
        let logits_file = dir.path().join("logits.safetensors");
        write_logits(&logits_file, &ids(), &want);
        let out = dir.path().join("merged");
        let files = ModelFiles::resolve(fixture(base).to_str().unwrap()).unwrap();
        let report = lora::merge_to_dir(&files, &adapter, &out, DType::F32, false).unwrap();
        assert_eq!(report.adapted_modules, 7 * layers);
        let merged = load(&out).forward_uncached(&ids(), None).unwrap();
        check_abs(
            &format!("{name} merged dir vs adapter"),
            &flat(&merged),
            &flat(&want),
            TOL,
        );
        if let Some(py) = python("PEFT loads the wick Gemma adapter") {
            let base_dir = fixture(base);
            run_checker(
                &py,
                "check_wick_adapter.py",
                &[&base_dir, &adapter, &logits_file],
                &[],
            );
            run_checker(&py, "check_merged.py", &[&out, &logits_file], &[]);
        }
    }
}
