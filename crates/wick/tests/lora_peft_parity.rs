//! LoRA parity with PEFT on the tiny random Llama (GQA, untied), Qwen2 (bias, tied), Qwen3 (q/k
//! norms, head_dim 32), SmolLM3 (4 layers, one NoPE), Phi-3 (fused qkv_proj / gate_up_proj,
//! partial rotary, LongRoPE), Gemma 2 (soft-caps, sandwich norms) and Gemma 3 (q/k norms,
//! per-layer RoPE) models of fixtures/lora_peft (gen.py there): each
//! PEFT-written adapter loads into wick and gives PEFT's
//! logits and loss; the step-0 gradients of every lora_A / lora_B match PEFT's within 1e-4
//! relative (f32), both at PEFT's true step 0 (B = 0: grad A is exactly zero) and with B random
//! (rsLoRA on, so both grads are non-zero).

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;
mod lora_common;

use lora_common::*;
use wick::lora;

const LOGITS_TOL: f32 = 1e-4;
const GRAD_TOL: f32 = 1e-4;

fn parity(model_name: &str, case_name: &str) {
    let case = format!("{model_name}_{case_name}");
    let mut model = llama_common::model(base_case(model_name));
    let per_layer = model.projection_names().len();
    let layers = model.config().num_hidden_layers;
    let (cfg, params) = lora::load_adapter(&case_dir(&case).join("adapter"), &mut model).unwrap();
    assert_eq!(
        params.len(),
        layers * per_layer,
        "every projection of every layer is adapted"
    );
    assert_eq!((cfg.r, cfg.lora_alpha), (4, 8.0));

    let e = PeftCase::load(&case);
    let ids = e
        .i64("input_ids")
        .to_dtype(candle_core::DType::U32)
        .unwrap();
    let labels = e.i64("labels");
    let logits = model.forward_uncached(&ids, None).unwrap();
    let want = e.f32("logits", &e.shape("logits"));
    check_abs(
        &format!("{case} logits"),
        &flat(&logits),
        &flat(&want),
        LOGITS_TOL,
    );
    let loss = causal_lm_loss(&logits, &labels);
    let want_loss = flat(&e.f32("loss", &[1]))[0];
    let got_loss = loss.to_scalar::<f32>().unwrap();
    println!("{case} loss: wick {got_loss:.7}, PEFT {want_loss:.7}");
    assert!((got_loss - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0));

    let grads = loss.backward().unwrap();
    let mut nonzero_a = 0;
    for (key, var) in params.named_vars() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{case}: no gradient reached {key}"));
        let expected_name = format!("grad.{key}");
        assert!(e.has(&expected_name), "{case}: PEFT has no {expected_name}");
        let want = e.f32(&expected_name, var.dims());
        let (g, want) = (flat(g), flat(&want));
        if case_name == "step0" && key.contains("lora_A") {
            // B = 0, so dL/dA = scale·Bᵀ(dL/dy)x is exactly zero in both.
            assert!(
                want.iter().all(|&x| x == 0.0),
                "{case}: PEFT {key} grad not 0"
            );
            assert!(g.iter().all(|&x| x == 0.0), "{case}: wick {key} grad not 0");
            continue;
        }
        if key.contains("lora_A") {
            nonzero_a += 1;
        }
        check_rel(&format!("{case} grad {key}"), &g, &want, GRAD_TOL);
    }
    if case_name == "random_b" {
        assert_eq!(nonzero_a, params.len(), "every A gradient was compared");
    }
}

#[test]
fn llama_step0_peft_adapter_logits_and_grads_match() {
    parity("llama", "step0");
}

#[test]
fn llama_random_b_rslora_logits_and_grads_match() {
    parity("llama", "random_b");
}

#[test]
fn qwen2_step0_peft_adapter_logits_and_grads_match() {
    parity("qwen2", "step0");
}

#[test]
fn qwen2_random_b_rslora_logits_and_grads_match() {
    parity("qwen2", "random_b");
}

#[test]
fn qwen3_step0_peft_adapter_logits_and_grads_match() {
    parity("qwen3", "step0");
}

#[test]
fn qwen3_random_b_rslora_logits_and_grads_match() {
    parity("qwen3", "random_b");
}

#[test]
fn smollm3_step0_peft_adapter_logits_and_grads_match() {
    parity("smollm3", "step0");
}

#[test]
fn smollm3_random_b_rslora_logits_and_grads_match() {
    parity("smollm3", "random_b");
}

/// Phi-3's fused projections: PEFT targets `qkv_proj` and `gate_up_proj` (plus o/down_proj),
/// on 20-token rows (past LongRoPE's original_max 16: the long table).
#[test]
fn phi3_step0_peft_adapter_logits_and_grads_match() {
    parity("phi3", "step0");
}

#[test]
fn phi3_random_b_rslora_logits_and_grads_match() {
    parity("phi3", "random_b");
}

#[test]
fn gemma2_step0_peft_adapter_logits_and_grads_match() {
    parity("gemma2", "step0");
}

#[test]
fn gemma2_random_b_rslora_logits_and_grads_match() {
    parity("gemma2", "random_b");
}

#[test]
fn gemma3_step0_peft_adapter_logits_and_grads_match() {
    parity("gemma3", "step0");
}

#[test]
fn gemma3_random_b_rslora_logits_and_grads_match() {
    parity("gemma3", "random_b");
}

/// wick's own init at step 0: with B = 0 the adapted model is the base model, grad A is exactly
/// zero and grad B is not.
#[test]
fn fresh_adapters_leave_the_base_model_unchanged_at_step_0() {
    for model_name in MODELS {
        let base = llama_common::model(base_case(model_name));
        let mut model = llama_common::model(base_case(model_name));
        let cfg = lora::LoraConfig::new(4, 8.0, lora::TargetModules::all_linear());
        let params = lora::apply(&mut model, &cfg, 7).unwrap();
        let per_layer = model.projection_names().len();
        assert_eq!(params.len(), per_layer * model.config().num_hidden_layers);
        let e = PeftCase::load(&format!("{model_name}_step0"));
        let ids = e
            .i64("input_ids")
            .to_dtype(candle_core::DType::U32)
            .unwrap();
        let want = flat(&base.forward_uncached(&ids, None).unwrap());
        let logits = model.forward_uncached(&ids, None).unwrap();
        // The adapters add exactly 0 (see nn::linear's unit test); the tracked graph runs the
        // differentiable reference ops instead of the fused ones, hence rounding-level noise.
        check_abs(
            &format!("{model_name} B = 0 vs base"),
            &flat(&logits),
            &want,
            1e-5,
        );
        let grads = causal_lm_loss(&logits, &e.i64("labels"))
            .backward()
            .unwrap();
        for m in params.modules() {
            let ga = flat(grads.get(m.a.as_tensor()).unwrap());
            let gb = flat(grads.get(m.b.as_tensor()).unwrap());
            assert!(ga.iter().all(|&x| x == 0.0), "{}: grad A not 0", m.path);
            assert!(gb.iter().any(|&x| x != 0.0), "{}: grad B is 0", m.path);
        }
    }
}
