//! wick-written adapters and merged models: save → load gives the same logits, the files are
//! PEFT's (keys, config), merge equals the unmerged adapter and unmerge restores the base, dropout
//! acts only in training mode, and `merge_to_dir` writes a model directory wick (and, with
//! WICK_PYTHON set, PEFT and transformers) load with the adapter's logits.
//!
//! The Python halves run only when WICK_PYTHON names a python with torch, transformers and peft
//! (`WICK_PYTHON=/root/refvenv/bin/python cargo test --test lora_roundtrip`); without it they
//! print that they were skipped and only the Rust-side assertions run.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;
mod lora_common;

use candle_core::{DType, Device, Tensor};
use lora_common::*;
use testkit::paths::fixture;
use wick::io::ModelFiles;
use wick::lora::{self, LoraConfig, LoraParams, TargetModules};
use wick::models::DecoderModel;

fn ids() -> Tensor {
    PeftCase::load("llama_step0")
        .i64("input_ids")
        .to_dtype(DType::U32)
        .unwrap()
}

/// Sets every B to seeded random values so the adapter changes the output.
fn randomize_b(params: &LoraParams, seed: u64) {
    for (i, m) in params.modules().iter().enumerate() {
        let (out, r) = m.b.dims2().unwrap();
        let n = (out * r) as f32;
        let values: Vec<f32> = (0..out * r)
            .map(|j| {
                ((j as f32 * 0.37 + i as f32 + seed as f32).sin() * 0.2) / (1.0 + j as f32 / n)
            })
            .collect();
        m.b.set(&Tensor::from_vec(values, (out, r), &Device::Cpu).unwrap())
            .unwrap();
    }
}

fn adapted(model_name: &str, cfg: &LoraConfig) -> (DecoderModel, LoraParams) {
    let mut model = llama_common::model(base_case(model_name));
    let params = lora::apply(&mut model, cfg, 11).unwrap();
    randomize_b(&params, 3);
    (model, params)
}

fn logits(model: &DecoderModel) -> Tensor {
    model.forward_uncached(&ids(), None).unwrap()
}

#[test]
fn saved_adapter_loads_back_with_the_same_logits_and_peft_files() {
    let mut cfg = LoraConfig::new(
        4,
        16.0,
        TargetModules::List(vec!["q_proj".into(), "mlp.down_proj".into()]),
    );
    cfg.use_rslora = true;
    let (model, params) = adapted("llama", &cfg);
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("adapter");
    lora::save_adapter(&adapter, &cfg, &params).unwrap();

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["peft_type"], "LORA");
    assert_eq!(json["task_type"], "CAUSAL_LM");
    assert_eq!(json["r"], 4);
    assert_eq!(json["use_rslora"], true);
    assert_eq!(
        json["target_modules"],
        serde_json::json!(["down_proj", "q_proj"])
    );
    let file = wick::io::safetensors::SafetensorsWeights::open(&[
        adapter.join("adapter_model.safetensors")
    ])
    .unwrap();
    let mut names: Vec<&str> = file.names().collect();
    names.sort_unstable();
    assert_eq!(names.len(), 8);
    assert_eq!(
        names[0],
        "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"
    );
    assert!(names.contains(&"base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"));
    let leftovers = adapter.read_dir().unwrap().filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp")
    });
    assert_eq!(leftovers.count(), 0, "no temporary files left");

    let mut loaded = llama_common::model("tiny_llama");
    let (cfg2, params2) = lora::load_adapter(&adapter, &mut loaded).unwrap();
    assert_eq!((cfg2.r, cfg2.use_rslora, params2.len()), (4, true, 4));
    assert_eq!(
        flat(&logits(&loaded)),
        flat(&logits(&model)),
        "same adapter, same logits"
    );
    let base = flat(&logits(&llama_common::model("tiny_llama")));
    let d = testkit::compare::diff(&flat(&logits(&model)), &base);
    assert!(
        d.max_abs > 1e-3,
        "the adapter changes the logits ({})",
        d.max_abs
    );
}

#[test]
fn merge_equals_the_unmerged_adapter_and_unmerge_restores_it() {
    for model_name in ["llama", "qwen2"] {
        let cfg = LoraConfig::new(4, 8.0, TargetModules::all_linear());
        let (mut model, _params) = adapted(model_name, &cfg);
        let want = flat(&logits(&model));
        let base_q = model.projections()[0].1.dense_weight().unwrap();
        lora::merge(&mut model).unwrap();
        check_abs(
            &format!("{model_name} merged vs adapter"),
            &flat(&logits(&model)),
            &want,
            1e-4,
        );
        let merged_q = model.projections()[0].1.dense_weight().unwrap();
        assert!(flat(&(merged_q - &base_q).unwrap().abs().unwrap())
            .iter()
            .any(|&x| x > 1e-4));
        lora::unmerge(&mut model).unwrap();
        check_abs(
            &format!("{model_name} unmerged vs adapter"),
            &flat(&logits(&model)),
            &want,
            1e-5,
        );
        let restored = model.projections()[0].1.dense_weight().unwrap();
        check_abs("restored q_proj", &flat(&restored), &flat(&base_q), 1e-6);
        lora::remove(&mut model).unwrap();
        let base = flat(&logits(&llama_common::model(base_case(model_name))));
        check_abs(
            &format!("{model_name} adapters removed vs base"),
            &flat(&logits(&model)),
            &base,
            1e-5,
        );
    }
}

#[test]
fn dropout_acts_only_in_training_mode_and_is_seeded() {
    let mut cfg = LoraConfig::new(4, 8.0, TargetModules::all_linear());
    let (plain, _) = adapted("llama", &cfg);
    cfg.lora_dropout = 0.5;
    let (model, params) = adapted("llama", &cfg);
    let want = flat(&logits(&plain));
    assert_eq!(
        flat(&logits(&model)),
        want,
        "no dropout outside training mode"
    );
    params.set_training(true);
    let (a, b) = (flat(&logits(&model)), flat(&logits(&model)));
    assert!(
        testkit::compare::diff(&a, &want).max_abs > 1e-4,
        "dropout changes the output"
    );
    assert_ne!(a, b, "each forward draws a new mask");
    let (again, params2) = adapted("llama", &cfg);
    params2.set_training(true);
    assert_eq!(flat(&logits(&again)), a, "same seed, same masks");
    params.set_training(false);
    assert_eq!(flat(&logits(&model)), want);
}

/// The reverse direction of lora_peft_parity: an adapter trained (here: set) by wick loads in
/// PEFT with wick's logits.
#[test]
fn wick_adapter_loads_in_peft_with_the_same_logits() {
    for model_name in ["llama", "qwen2"] {
        let cfg = LoraConfig::new(4, 8.0, TargetModules::all_linear());
        let (model, params) = adapted(model_name, &cfg);
        let dir = tempfile::tempdir().unwrap();
        let adapter = dir.path().join("adapter");
        lora::save_adapter(&adapter, &cfg, &params).unwrap();
        let logits_file = dir.path().join("logits.safetensors");
        write_logits(&logits_file, &ids(), &logits(&model));
        if let Some(py) = python("PEFT loads the wick adapter") {
            let base = fixture(base_case(model_name));
            run_checker(
                &py,
                "check_wick_adapter.py",
                &[&base, &adapter, &logits_file],
                &[],
            );
        }
    }
}

#[test]
fn merged_directory_has_the_adapter_logits() {
    for model_name in ["llama", "qwen2"] {
        let cfg = LoraConfig::new(4, 8.0, TargetModules::all_linear());
        let (model, params) = adapted(model_name, &cfg);
        let want = logits(&model);
        let dir = tempfile::tempdir().unwrap();
        let adapter = dir.path().join("adapter");
        lora::save_adapter(&adapter, &cfg, &params).unwrap();
        let out = dir.path().join("merged");
        let files = ModelFiles::resolve(fixture(base_case(model_name)).to_str().unwrap()).unwrap();
        let report = lora::merge_to_dir(&files, &adapter, &out, DType::F32, false).unwrap();
        assert_eq!(report.adapted_modules, 14);
        assert!(out.join("model.safetensors").is_file() && out.join("config.json").is_file());
        assert!(!dir.path().join("merged.tmp").exists());

        let merged = llama_common::model_from(
            &wick::models::DecoderConfig::from_file(&out.join("config.json")).unwrap(),
            std::sync::Arc::new(
                wick::io::safetensors::SafetensorsWeights::open(&[out.join("model.safetensors")])
                    .unwrap(),
            ),
            DType::F32,
        );
        check_abs(
            &format!("{model_name} merged dir vs adapter"),
            &flat(&logits(&merged)),
            &flat(&want),
            1e-4,
        );

        // A non-empty OUT is not replaced without force.
        let err = lora::merge_to_dir(&files, &adapter, &out, DType::F32, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        lora::merge_to_dir(&files, &adapter, &out, DType::F32, true).unwrap();

        let logits_file = dir.path().join("logits.safetensors");
        write_logits(&logits_file, &ids(), &want);
        if let Some(py) = python("transformers loads the merged directory") {
            run_checker(&py, "check_merged.py", &[&out, &logits_file], &[]);
        }
    }
}

/// `LoraLlama` as a trainer drives it: a few plain SGD steps on the adapters lower the loss,
/// per-step dropout seeds reproduce masks, `None` turns dropout off, and the saved adapter
/// reloads with the trained logits (in wick, and in PEFT with WICK_PYTHON set).
#[test]
fn lora_llama_dropout_seeds_and_a_few_sgd_steps() {
    let mut cfg = LoraConfig::new(4, 8.0, TargetModules::all_linear());
    cfg.lora_dropout = 0.1;
    let m = lora::LoraLlama::new(llama_common::model("tiny_llama"), cfg, 3).unwrap();
    let e = PeftCase::load("llama_step0");
    let (ids, labels) = (ids(), e.i64("labels"));
    let mask = Tensor::ones((BATCH, SEQ), DType::U32, &Device::Cpu).unwrap();
    let loss_at = |seed: Option<u64>| {
        m.set_dropout_seed(seed);
        causal_lm_loss(&m.logits(&ids, Some(&mask)).unwrap(), &labels)
    };
    let scalar = |t: &Tensor| t.to_scalar::<f32>().unwrap();
    let first = scalar(&loss_at(None));
    for step in 0..5 {
        let loss = loss_at(Some(step));
        let grads = loss.backward().unwrap();
        for (name, var) in m.trainable() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}"));
            var.set(&(var.as_tensor() - (g * 0.5).unwrap()).unwrap())
                .unwrap();
        }
    }
    let last = scalar(&loss_at(None));
    println!("loss {first:.4} -> {last:.4} after 5 SGD steps");
    assert!(last < first - 0.05, "loss {first} -> {last}");
    // With B trained, dropout shows: the same seed gives the same masks, another seed others.
    let (a, b) = (scalar(&loss_at(Some(5))), scalar(&loss_at(Some(5))));
    assert_eq!(a, b, "same seed, same masks");
    assert_ne!(a, scalar(&loss_at(Some(6))), "another seed, other masks");
    assert_eq!(scalar(&loss_at(None)), last, "None turns dropout off");
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path()).unwrap();
    let back =
        lora::LoraLlama::from_adapter(llama_common::model("tiny_llama"), dir.path()).unwrap();
    assert_eq!(back.config().lora_dropout, 0.1);
    let want = flat(&m.logits(&ids, None).unwrap());
    assert_eq!(flat(&back.logits(&ids, None).unwrap()), want);
    // The trained adapter (A and B both moved) in PEFT.
    let logits_file = dir.path().join("logits.safetensors");
    write_logits(&logits_file, &ids, &m.logits(&ids, None).unwrap());
    if let Some(py) = python("PEFT loads the trained adapter") {
        let base = fixture("tiny_llama");
        run_checker(
            &py,
            "check_wick_adapter.py",
            &[&base, dir.path(), &logits_file],
            &[],
        );
    }
}

/// A bf16 base with f32 adapters (as PEFT keeps them): close to the f32 run, f32 gradients.
#[test]
fn bf16_base_keeps_f32_adapters_and_gradients() {
    let cfg = LoraConfig::new(4, 8.0, TargetModules::all_linear());
    let (f32_model, _) = adapted("llama", &cfg);
    let mut model = llama_common::model_from(
        &llama_common::config("tiny_llama", "config.json"),
        std::sync::Arc::new(llama_common::weights("tiny_llama")),
        DType::BF16,
    );
    let want = flat(&logits(&f32_model));
    let params = lora::apply(&mut model, &cfg, 11).unwrap();
    randomize_b(&params, 3);
    let got = model.forward_uncached(&ids(), None).unwrap();
    assert_eq!(got.dtype(), DType::BF16);

    let d = testkit::compare::diff(&flat(&got), &want);
    println!("bf16 vs f32 logits: max abs diff {:.3e}", d.max_abs);
    assert!(d.max_abs < 0.25, "bf16 vs f32 max abs diff {}", d.max_abs);
    let labels = PeftCase::load("llama_step0").i64("labels");
    let grads = causal_lm_loss(&got.to_dtype(DType::F32).unwrap(), &labels)
        .backward()
        .unwrap();
    for (name, var) in params.named_vars() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!((var.dtype(), g.dtype()), (DType::F32, DType::F32), "{name}");
        assert!(flat(g).iter().any(|&x| x != 0.0), "{name}: zero gradient");
    }
}
