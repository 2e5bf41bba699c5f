//! AdamW, warmup schedules, clipping, gradient accumulation and the masked causal-LM loss
//! against torch + transformers (fixtures/train_adamw/gen.py), on the tiny self-contained model
//! of train_common (the same model gen.py builds in torch).

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod train_common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use testkit::compare::assert_close;
use testkit::paths::fixture;
use train_common::TinyModel;
use wick::train::loss::causal_lm_nll_sum;
use wick::train::TrainableModel;
use wick::train::{train_steps, AdamWParams, Batch, Schedule, ScheduleKind, TrainConfig, Trainer};

fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixture("train_adamw").join("expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn batches(e: &HashMap<String, Tensor>) -> Vec<Batch> {
    (0..)
        .map_while(|i| e.get(&format!("batch{i}.input_ids")).map(|ids| (i, ids)))
        .map(|(i, ids)| {
            let (rows, cols) = ids.dims2().unwrap();
            let ints = |t: &Tensor| -> Vec<i64> { t.flatten_all().unwrap().to_vec1().unwrap() };
            Batch {
                rows,
                cols,
                input_ids: ints(ids).iter().map(|&x| x as u32).collect(),
                attention_mask: ints(&e[&format!("batch{i}.attention_mask")])
                    .iter()
                    .map(|&x| x as u32)
                    .collect(),
                labels: ints(&e[&format!("batch{i}.labels")]),
            }
        })
        .collect()
}

fn model(e: &HashMap<String, Tensor>) -> TinyModel {
    TinyModel::from_tensors(&e["init.embed"], &e["init.proj"], &e["init.bias"])
}

/// The run's settings as gen.py's RUNS table has them.
fn config(run: &str) -> TrainConfig {
    let (schedule, warmup, steps, accum, lr, wd, clip) = match run {
        "a" => (ScheduleKind::Cosine, 2, 5, 1, 0.08, 0.01, Some(0.5)),
        "b" => (ScheduleKind::Linear, 1, 3, 2, 0.05, 0.1, None),
        "c" => (ScheduleKind::Constant, 2, 5, 1, 0.03, 0.0, Some(1.0)),
        _ => unreachable!(),
    };
    TrainConfig {
        lr,
        schedule,
        warmup_steps: warmup,
        max_steps: Some(steps),
        grad_accum: accum,
        max_grad_norm: clip,
        adamw: AdamWParams {
            weight_decay: wd,
            ..AdamWParams::default()
        },
        shuffle: false,
        ..TrainConfig::default()
    }
}

fn check_run(run: &str) {
    let e = expected();
    let m = model(&e);
    let mut trainer = Trainer::new(&m, config(run), batches(&e), Vec::new()).unwrap();
    let (mut losses, mut lrs, mut norms) = (Vec::new(), Vec::new(), Vec::new());
    while !trainer.is_done() {
        let r = trainer.step().unwrap();
        assert!(!r.skipped);
        losses.push(r.loss);
        lrs.push(r.lr as f32);
        norms.push(r.grad_norm.unwrap() as f32);
    }
    let want = |k: &str| f32s(&e[&format!("{run}.{k}")]);
    println!(
        "run {run}: losses {losses:?}\n  expected {:?}",
        want("losses")
    );
    assert_close(&format!("run {run} lr"), &lrs, &want("lrs"), 1e-9, 0.0);
    assert_close(
        &format!("run {run} loss"),
        &losses,
        &want("losses"),
        1e-5,
        0.0,
    );
    assert_close(
        &format!("run {run} grad norm"),
        &norms,
        &want("grad_norms"),
        1e-5,
        1e-5,
    );
    for (name, got) in ["embed", "proj", "bias"].iter().zip(m.values()) {
        let expected = f32s(&e[&format!("{run}.final.{name}")]);
        assert_close(
            &format!("run {run} final {name}"),
            &got,
            &expected,
            1e-5,
            0.0,
        );
    }
}

#[test]
fn cosine_warmup_with_clipping_and_weight_decay_matches_torch() {
    check_run("a");
}

#[test]
fn linear_warmup_with_gradient_accumulation_matches_torch() {
    check_run("b");
}

#[test]
fn constant_warmup_matches_torch() {
    check_run("c");
}

#[test]
fn train_steps_returns_the_same_losses() {
    let e = expected();
    let m = model(&e);
    let losses = train_steps(&m, batches(&e), &config("a")).unwrap();
    assert_close(
        "train_steps loss",
        &losses,
        &f32s(&e["a.losses"]),
        1e-5,
        0.0,
    );
}

#[test]
fn schedules_match_transformers() {
    let e = expected();
    for (name, kind) in [
        ("cosine", ScheduleKind::Cosine),
        ("linear", ScheduleKind::Linear),
        ("constant", ScheduleKind::Constant),
    ] {
        let s = Schedule {
            kind,
            lr: 1.0,
            warmup_steps: 3,
            total_steps: 10,
        };
        let got: Vec<f64> = (0..12).map(|i| s.lr_at(i)).collect();
        let want = f64s(&e[&format!("schedule.{name}")]);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-12, "{name} step {i}: {g} vs {w}");
        }
    }
}

#[test]
fn loss_ignores_masked_and_padded_tokens() {
    // Two rows, vocab 3; only row 0's last label and row 1's second label count.
    let logits = Tensor::new(
        &[
            [[1.0f32, 2.0, 3.0], [0.5, 0.5, 0.5], [2.0, 0.0, -1.0]],
            [[0.0, 1.0, 0.0], [3.0, 1.0, 2.0], [9.0, 9.0, 9.0]],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let labels = [-100, -100, 2, -100, 0, -100];
    let (sum, count) = causal_lm_nll_sum(&logits, &labels).unwrap();
    assert_eq!(count, 2);
    let lse = |xs: [f32; 3]| xs.iter().map(|x| x.exp()).sum::<f32>().ln();
    // Row 0 position 1 predicts label 2; row 1 position 0 predicts label 0.
    let want = (lse([0.5, 0.5, 0.5]) - 0.5) + (lse([0.0, 1.0, 0.0]) - 0.0);
    let got = sum.to_scalar::<f32>().unwrap();
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
}

/// The tiny model whose logits turn NaN from a given step on.
struct Poisoned {
    inner: TinyModel,
    calls: std::cell::Cell<usize>,
    poison_from: usize,
}

impl TrainableModel for Poisoned {
    fn logits(&self, ids: &Tensor, mask: &Tensor) -> wick::Result<Tensor> {
        let n = self.calls.get();
        self.calls.set(n + 1);
        let logits = self.inner.logits(ids, mask)?;
        Ok(if n >= self.poison_from {
            (logits * f64::NAN)?
        } else {
            logits
        })
    }
    fn trainable(&self) -> Vec<(String, candle_core::Var)> {
        self.inner.trainable()
    }
    fn device(&self) -> &Device {
        self.inner.device()
    }
}

#[test]
fn non_finite_losses_are_skipped_counted_and_stop_the_run() {
    let e = expected();
    let m = Poisoned {
        inner: model(&e),
        calls: std::cell::Cell::new(0),
        poison_from: 2,
    };
    let cfg = TrainConfig {
        max_steps: Some(50),
        max_nonfinite: 3,
        ..config("a")
    };
    let mut trainer = Trainer::new(&m, cfg, batches(&e), Vec::new()).unwrap();
    for _ in 0..2 {
        assert!(!trainer.step().unwrap().skipped);
    }
    let before = m.inner.values();
    let r = trainer.step().unwrap();
    assert!(r.skipped && r.loss.is_nan(), "{r:?}");
    assert_eq!(
        m.inner.values(),
        before,
        "a skipped step must not change the weights"
    );
    assert!(trainer.step().unwrap().skipped);
    let err = trainer.step().unwrap_err().to_string();
    assert!(err.contains("not finite in 3 steps"), "{err}");
    assert_eq!(trainer.state().nonfinite_steps, 3);
    assert_eq!(trainer.state().optimizer_steps, 2);
}

/// A frozen bf16 "base" (the embedding, a plain tensor) under an f32 trainable projection that
/// is cast to bf16 in the forward pass, as a LoRA adapter over a bf16 model is.
struct Bf16Base {
    embed: Tensor,
    proj: candle_core::Var,
}

impl TrainableModel for Bf16Base {
    fn logits(&self, ids: &Tensor, _mask: &Tensor) -> wick::Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let h = self.embed.index_select(&ids.flatten_all()?, 0)?;
        let h = h.reshape((b, s, self.embed.dims()[1]))?.tanh()?;
        Ok(h.broadcast_matmul(&self.proj.as_tensor().to_dtype(DType::BF16)?)?)
    }
    fn trainable(&self) -> Vec<(String, candle_core::Var)> {
        vec![("proj".into(), self.proj.clone())]
    }
    fn device(&self) -> &Device {
        self.embed.device()
    }
}

#[test]
fn bf16_base_with_f32_trainable_parameters_learns() {
    let e = expected();
    let m = Bf16Base {
        embed: e["init.embed"].to_dtype(DType::BF16).unwrap(),
        proj: candle_core::Var::from_tensor(&e["init.proj"]).unwrap(),
    };
    let cfg = TrainConfig {
        lr: 0.05,
        max_steps: Some(30),
        schedule: ScheduleKind::Constant,
        shuffle: false,
        ..TrainConfig::default()
    };
    let losses = train_steps(&m, batches(&e)[..1].to_vec(), &cfg).unwrap();
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(
        losses[29] < 0.7 * losses[0],
        "the loss should drop on a repeated batch: {losses:?}"
    );
    assert_eq!(m.proj.dtype(), DType::F32);
}
