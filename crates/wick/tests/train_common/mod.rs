//! A tiny self-contained trainable model for the trainer tests (not a transformer: it only has
//! to be differentiable in a few named parameter tensors, like fixtures/train_adamw/gen.py's):
//!
//!     logits = dropout(tanh(embed[input_ids])) @ proj + bias
//!
//! Dropout (off unless `dropout` is set) draws its mask from the seed the trainer passes in
//! `set_dropout_seed`, as a LoRA model with dropout would.

#![allow(dead_code)]

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use wick::train::loss::IGNORE_INDEX;
use wick::train::{Batch, TrainableModel};

pub struct TinyModel {
    pub embed: Var,
    pub proj: Var,
    pub bias: Var,
    pub dropout: Option<f32>,
    seed: std::cell::Cell<Option<u64>>,
    device: Device,
}

impl TinyModel {
    pub fn from_tensors(embed: &Tensor, proj: &Tensor, bias: &Tensor) -> Self {
        let var = |t: &Tensor| Var::from_tensor(&t.to_dtype(DType::F32).unwrap()).unwrap();
        TinyModel {
            embed: var(embed),
            proj: var(proj),
            bias: var(bias),
            dropout: None,
            seed: std::cell::Cell::new(None),
            device: Device::Cpu,
        }
    }

    /// Deterministic weights from `seed`.
    pub fn seeded(vocab: usize, hidden: usize, seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut t = |n: usize, shape: (usize, usize), scale: f32| {
            let v: Vec<f32> = (0..n)
                .map(|_| scale * (rng.random::<f32>() * 2.0 - 1.0))
                .collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        let embed = t(vocab * hidden, (vocab, hidden), 1.0);
        let proj = t(hidden * vocab, (hidden, vocab), 1.0);
        let bias = t(vocab, (1, vocab), 0.3).reshape(vocab).unwrap();
        Self::from_tensors(&embed, &proj, &bias)
    }

    pub fn with_dropout(mut self, p: f32) -> Self {
        self.dropout = Some(p);
        self
    }

    pub fn values(&self) -> Vec<Vec<f32>> {
        [&self.embed, &self.proj, &self.bias]
            .iter()
            .map(|v| {
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
    }
}

impl TrainableModel for TinyModel {
    fn logits(&self, input_ids: &Tensor, _attention_mask: &Tensor) -> wick::Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        let hidden = self.embed.dims()[1];
        let h = self
            .embed
            .as_tensor()
            .index_select(&input_ids.flatten_all()?, 0)?
            .reshape((b, s, hidden))?
            .tanh()?;
        let h = match (self.dropout, self.seed.get()) {
            (Some(p), Some(seed)) => {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                let keep: Vec<f32> = (0..b * s * hidden)
                    .map(|_| {
                        if rng.random::<f32>() < p {
                            0.0
                        } else {
                            1.0 / (1.0 - p)
                        }
                    })
                    .collect();
                (h * Tensor::from_vec(keep, (b, s, hidden), &self.device)?)?
            }
            _ => h,
        };
        Ok(h.broadcast_matmul(self.proj.as_tensor())?
            .broadcast_add(self.bias.as_tensor())?)
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        vec![
            ("embed".into(), self.embed.clone()),
            ("proj".into(), self.proj.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn set_dropout_seed(&self, seed: Option<u64>) {
        self.seed.set(seed);
    }
}

/// `n` random batches of 1–3 rows and 3–9 columns with masked prompts and right padding.
pub fn random_batches(n: usize, vocab: usize, seed: u64) -> Vec<Batch> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let rows = rng.random_range(1..=3);
            let cols = rng.random_range(3..=9);
            let mut b = Batch {
                rows,
                cols,
                input_ids: vec![0; rows * cols],
                attention_mask: vec![0; rows * cols],
                labels: vec![IGNORE_INDEX; rows * cols],
            };
            for r in 0..rows {
                let len = rng.random_range(3..=cols);
                let prompt = rng.random_range(0..len - 1);
                for c in 0..len {
                    let id = rng.random_range(0..vocab as u32);
                    b.input_ids[r * cols + c] = id;
                    b.attention_mask[r * cols + c] = 1;
                    if c > prompt {
                        b.labels[r * cols + c] = id as i64;
                    }
                }
            }
            b
        })
        .collect()
}
