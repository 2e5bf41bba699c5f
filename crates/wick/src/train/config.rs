//! The trainer's settings.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::train::optim::AdamWParams;
use crate::train::schedule::ScheduleKind;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Peak learning rate.
    pub lr: f64,
    pub schedule: ScheduleKind,
    pub warmup_steps: usize,
    /// Passes over the training batches (used when `max_steps` is None).
    pub epochs: usize,
    /// Optimizer steps to take; overrides `epochs`.
    pub max_steps: Option<usize>,
    /// Batches per optimizer step.
    pub grad_accum: usize,
    /// Global-norm gradient clipping (None: off).
    pub max_grad_norm: Option<f64>,
    pub adamw: AdamWParams,
    /// Seeds the batch order (and whatever else the caller derives from it).
    pub seed: u64,
    /// Shuffle the batch order every epoch (off: file order by length).
    pub shuffle: bool,
    /// Validate every N steps (and at the end) when there is validation data.
    pub eval_every: Option<usize>,
    /// Checkpoint every N steps (and at the end).
    pub save_every: Option<usize>,
    /// Stop once this many steps had a non-finite loss or gradient.
    pub max_nonfinite: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            lr: 2e-4,
            schedule: ScheduleKind::Cosine,
            warmup_steps: 0,
            epochs: 1,
            max_steps: None,
            grad_accum: 1,
            max_grad_norm: Some(1.0),
            adamw: AdamWParams::default(),
            seed: 0,
            shuffle: true,
            eval_every: None,
            save_every: None,
            max_nonfinite: 10,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let bad =
            |name: &'static str, message: String| Err(Error::InvalidArgument { name, message });
        if !self.lr.is_finite() || self.lr < 0.0 {
            return bad("lr", format!("{} is not a non-negative number", self.lr));
        }
        if self.grad_accum == 0 {
            return bad("grad_accum", "must be at least 1".into());
        }
        if self.max_steps == Some(0) || (self.max_steps.is_none() && self.epochs == 0) {
            return bad("max_steps", "there must be at least one step".into());
        }
        if self
            .max_grad_norm
            .is_some_and(|n| !n.is_finite() || n <= 0.0)
        {
            return bad("max_grad_norm", "must be positive".into());
        }
        let a = &self.adamw;
        if !(0.0..1.0).contains(&a.beta1) || !(0.0..1.0).contains(&a.beta2) {
            return bad(
                "betas",
                format!("({}, {}) must be in [0, 1)", a.beta1, a.beta2),
            );
        }
        if !a.eps.is_finite() || a.eps <= 0.0 || !a.weight_decay.is_finite() || a.weight_decay < 0.0
        {
            return bad(
                "eps",
                "eps must be positive and weight_decay non-negative".into(),
            );
        }
        if self.eval_every == Some(0) || self.save_every == Some(0) {
            return bad("eval_every", "intervals must be at least 1".into());
        }
        if self.max_nonfinite == 0 {
            return bad("max_nonfinite", "must be at least 1".into());
        }
        Ok(())
    }

    /// Optimizer steps for `n_batches` training batches.
    pub fn total_steps(&self, n_batches: usize) -> usize {
        self.max_steps
            .unwrap_or_else(|| (self.epochs * n_batches).div_ceil(self.grad_accum))
    }
}
