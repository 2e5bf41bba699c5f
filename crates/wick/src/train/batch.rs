//! Padded batches of similar length, and the seeded order they are visited in.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::train::examples::Example;
use crate::train::loss::IGNORE_INDEX;

/// A right-padded (rows, cols) batch: token ids, attention mask (1 real, 0 padding) and labels
/// (the token id where it is trained, [`IGNORE_INDEX`] elsewhere), all row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub cols: usize,
    pub input_ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    pub labels: Vec<i64>,
}

impl Batch {
    pub fn from_examples(examples: &[&Example], pad_id: u32) -> Batch {
        let rows = examples.len();
        let cols = examples
            .iter()
            .map(|e| e.input_ids.len())
            .max()
            .unwrap_or(0);
        let mut b = Batch {
            rows,
            cols,
            input_ids: vec![pad_id; rows * cols],
            attention_mask: vec![0; rows * cols],
            labels: vec![IGNORE_INDEX; rows * cols],
        };
        for (r, e) in examples.iter().enumerate() {
            for (c, (&id, &trained)) in e.input_ids.iter().zip(&e.trained).enumerate() {
                let i = r * cols + c;
                b.input_ids[i] = id;
                b.attention_mask[i] = 1;
                if trained {
                    b.labels[i] = id as i64;
                }
            }
        }
        b
    }

    /// Tokens the loss counts (labels shifted left by one).
    pub fn target_count(&self) -> usize {
        (0..self.rows)
            .map(|r| {
                self.labels[r * self.cols..(r + 1) * self.cols]
                    .iter()
                    .skip(1)
                    .filter(|&&l| l >= 0)
                    .count()
            })
            .sum()
    }

    /// Real (non-padding) tokens.
    pub fn token_count(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m != 0).count()
    }

    /// (input_ids, attention_mask) as (rows, cols) u32 tensors on `device`.
    pub fn tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let shape = (self.rows, self.cols);
        Ok((
            Tensor::from_vec(self.input_ids.clone(), shape, device)?,
            Tensor::from_vec(self.attention_mask.clone(), shape, device)?,
        ))
    }
}

/// Sorts examples by length (ties keep file order) and cuts them into batches of `batch_size`,
/// so each batch pads little.
pub fn length_sorted_batches(examples: &[Example], batch_size: usize, pad_id: u32) -> Vec<Batch> {
    let mut order: Vec<&Example> = examples.iter().collect();
    order.sort_by_key(|e| e.input_ids.len());
    order
        .chunks(batch_size.max(1))
        .map(|chunk| Batch::from_examples(chunk, pad_id))
        .collect()
}

/// The order batches are visited in during `epoch`: a shuffle seeded by `seed` on the epoch's own
/// ChaCha stream (so any epoch's order can be recomputed on resume), or file order.
pub fn epoch_order(n_batches: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n_batches).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch);
        order.shuffle(&mut rng);
    }
    order
}
