//! The Llama model over other weight forms: Q8_0-quantized weights run through QMatMul (a small
//! in-test `WeightSource` quantizes the fixture), half-precision dtypes, and trainable weights
//! (the uncached forward must carry gradients to every weight, for LoRA next).

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, Var};
use llama_common::*;
use wick::io::safetensors::SafetensorsWeights;
use wick::io::weights::WeightSource;

fn argmax_rows(t: &Tensor) -> Vec<u32> {
    t.reshape(((), VOCAB))
        .unwrap()
        .argmax(1)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn q8_round_trip(case: &str, expected_quantized: usize) {
    let e = Expected::load(case);
    let ids = e.ids("full_ids", &[1, PROMPT_LEN + DECODE_STEPS]);
    let want = e.f32("full_logits", &[1, PROMPT_LEN + DECODE_STEPS, VOCAB]);
    let source = |dequantize| {
        Arc::new(Q8Source {
            inner: weights(case),
            quantized: AtomicUsize::new(0),
            dequantize,
        })
    };
    let cfg = config(case, "config.json");
    let q8 = source(false);
    let m = model_from(&cfg, q8.clone(), DType::F32);
    assert_eq!(q8.quantized.load(Ordering::SeqCst), expected_quantized);
    let dense = model_from(&cfg, source(true), DType::F32);

    // Cached prefill + decode must also work on quantized weights.
    let mut cache = m.new_cache(1, PROMPT_LEN + DECODE_STEPS).unwrap();
    let prefill = m
        .forward(&ids.narrow(1, 0, PROMPT_LEN).unwrap(), None, &mut cache)
        .unwrap();
    let mut steps = vec![prefill];
    for i in PROMPT_LEN..PROMPT_LEN + DECODE_STEPS {
        steps.push(
            m.forward(&ids.narrow(1, i, 1).unwrap(), None, &mut cache)
                .unwrap(),
        );
    }
    let got = Tensor::cat(&steps, 1).unwrap();

    // QMatMul against a dense GEMM over the same dequantized values: only the 8-bit activations
    // of the quantized kernel differ.
    let reference = dense.forward_uncached(&ids, None).unwrap();
    let k = testkit::compare::diff(&flat(&got), &flat(&reference));
    let w = testkit::compare::diff(&flat(&reference), &flat(&want));
    println!(
        "{case} Q8_0 QMatMul vs dequantized dense: max abs diff {:.3e}; dequantized dense vs f32: {:.3e}",
        k.max_abs, w.max_abs
    );

    let d = testkit::compare::diff(&flat(&got), &flat(&want));
    let scale = flat(&want).iter().fold(0f32, |m, x| m.max(x.abs()));
    let (a, b) = (argmax_rows(&got), argmax_rows(&want));
    let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    println!(
        "{case} Q8_0: max abs diff {:.3e} (logits up to {scale:.2}), worst index {}, top-1 agreement {agree}/{}",
        d.max_abs,
        d.worst_index,
        a.len()
    );
    assert!(
        k.max_abs < 0.05 * scale,
        "QMatMul drifts {} from dense",
        k.max_abs
    );
    assert!(
        d.max_abs < 0.05 * scale,
        "Q8_0 logits drift {} (scale {scale})",
        d.max_abs
    );
    assert!(
        agree * 10 >= a.len() * 9,
        "top-1 tokens differ: {a:?} vs {b:?}"
    );
    // A flipped token is only acceptable at a near-tie of the f32 logits.
    let rows = want.reshape(((), VOCAB)).unwrap().to_vec2::<f32>().unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate().filter(|(_, (x, y))| x != y) {
        let margin = rows[i][*y as usize] - rows[i][*x as usize];
        println!("{case} Q8_0: position {i} picks {x} over {y}; f32 margin {margin:.3e}");
        assert!(
            margin < 2.0 * d.max_abs,
            "position {i}: token {x} vs {y} with f32 margin {margin}"
        );
    }
}

#[test]
fn llama_q8_0_weights_stay_close_to_f32() {
    // 7 projections × 2 layers + lm_head + embed_tokens.
    q8_round_trip("tiny_llama", 16);
}

#[test]
fn qwen2_q8_0_weights_stay_close_to_f32() {
    // The tied head reuses the quantized embedding table.
    q8_round_trip("tiny_qwen2", 15);
}

#[test]
fn half_precision_dtypes_run_close_to_f32() {
    let e = Expected::load("tiny_llama");
    let ids = e.ids("input_ids", &[1, PROMPT_LEN]);
    let want = flat(&e.f32("logits", &[1, PROMPT_LEN, VOCAB]));
    for dtype in [DType::BF16, DType::F16] {
        let m = model_from(
            &config("tiny_llama", "config.json"),
            Arc::new(weights("tiny_llama")),
            dtype,
        );
        let mut cache = m.new_cache(1, 16).unwrap();
        let got = m.forward(&ids, None, &mut cache).unwrap();
        assert_eq!(got.dtype(), dtype);
        let step = m
            .forward(
                &Tensor::new(&[[3u32]], &Device::Cpu).unwrap(),
                None,
                &mut cache,
            )
            .unwrap();
        assert_eq!(step.dims(), &[1, 1, VOCAB]);
        let d = testkit::compare::diff(&flat(&got), &want);
        println!(
            "{dtype:?}: max abs diff {:.3e}, worst index {}",
            d.max_abs, d.worst_index
        );
        assert!(d.max_abs < 0.25, "{dtype:?} logits drift {}", d.max_abs);
    }
}

/// Hands out every weight as a trainable `Var` and remembers them by name.
struct VarSource {
    inner: SafetensorsWeights,
    vars: Mutex<Vec<(String, Var)>>,
}

impl WeightSource for VarSource {
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }

    fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> wick::Result<Tensor> {
        let var = Var::from_tensor(&self.inner.load(name, shape, dtype, device)?)?;
        let t = var.as_tensor().clone();
        self.vars.lock().unwrap().push((name.to_string(), var));
        Ok(t)
    }
}

#[test]
fn uncached_forward_is_differentiable_and_matches_golden() {
    for case in ["tiny_llama", "tiny_qwen2"] {
        let source = Arc::new(VarSource {
            inner: weights(case),
            vars: Mutex::new(Vec::new()),
        });
        let m = model_from(&config(case, "config.json"), source.clone(), DType::F32);
        let e = Expected::load(case);
        let ids = e.ids("batch_ids", &[2, PROMPT_LEN]);
        let mask = e.ids("batch_mask", &[2, PROMPT_LEN]);
        // Tracked tensors take the reference ops: they must give the golden logits too.
        let logits = m.forward_uncached(&ids, Some(&mask)).unwrap();
        let want = e.f32("batch_logits", &[2, PROMPT_LEN, VOCAB]);
        let row0 = |t: &Tensor| flat(&t.get(0).unwrap());
        check(
            &format!("{case} tracked logits"),
            &row0(&logits),
            &row0(&want),
            1e-4,
        );

        let grads = logits
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .backward()
            .unwrap();
        let vars = source.vars.lock().unwrap();
        assert!(
            vars.len() >= 20,
            "{case}: only {} weights loaded",
            vars.len()
        );
        for (name, var) in vars.iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{case}: no gradient for {name}"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{case}: gradient of {name} is {norm}"
            );
        }
    }
}
