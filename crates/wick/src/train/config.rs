//! The trainer's settings and the defaults of a run that names none.
//!
//! The defaults are chosen so that a first run on a small data set (a few hundred short chat
//! examples) learns it, as the tools people know do:
//!
//! - [`DEFAULT_EPOCHS`] = 3: transformers' `Trainer` and TRL's `SFTTrainer`
//!   (`num_train_epochs = 3`). One pass over 150 examples is 38 steps of 4, too few for a
//!   model to take in facts it has never seen.
//! - [`DEFAULT_LORA_TARGETS`] = `all-linear`: every linear projection of every decoder layer
//!   (never the LM head), resolved against the model's own projections when the adapters are
//!   attached. QLoRA (Dettmers et al., 2023) found adapters on all linear layers necessary to
//!   match full fine-tuning; PEFT spells it `target_modules="all-linear"`. Adapting only q/v
//!   (PEFT's default for Llama, and wick's before) leaves the MLP untouched.
//! - [`DEFAULT_LORA_R`] = 16, [`DEFAULT_LORA_ALPHA`] = 32 (scale alpha/r = 2): the rank and the
//!   alpha = 2r rule of thumb of LoRA fine-tuning guides (Unsloth's among them); mlx-lm uses
//!   rank 8.
//! - [`DEFAULT_LR`] = 1e-3, cosine decay to 0, no warmup. Measured, not copied: the 2e-4 of
//!   QLoRA (chosen there for 7B and 13B models) and of most LoRA guides leaves a small data
//!   set unlearned on a small model, and a first run is a small data set. On 150 made-up facts
//!   (30 facts, 5 phrasings each; SmolLM2-135M-Instruct, all other defaults) 2e-4 ended at a
//!   validation loss of 0.43 on held-out phrasings (from 2.21), and the tuned model, asked each
//!   fact greedily, stated 4 of the 30; 1e-3 ended at 0.033 and stated 28 of 30. Larger models
//!   may want less (2e-4 is the usual choice at 7B): `--lr`. Gradient clipping at norm 1 keeps
//!   the first steps safe without warmup. mlx-lm's 1e-5 goes with its adapter scale of 20 (ours is alpha / r = 2)
//!   and 1000 steps.
//! - [`DEFAULT_LORA_DROPOUT`] = 0 (PEFT's and mlx-lm's default); batch 4 (mlx-lm's default),
//!   gradient clipping at norm 1 (transformers'), no weight decay (TRL's).
//!
//! crates/wick-cli/tests/cli_train_defaults.rs checks that these defaults, given nothing but the
//! files, teach SmolLM2 made-up facts that the base model does not state.

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

/// Passes over the training data.
pub const DEFAULT_EPOCHS: usize = 3;
/// Peak learning rate.
pub const DEFAULT_LR: f64 = 1e-3;
/// Examples per batch.
pub const DEFAULT_BATCH_SIZE: usize = 4;
/// Longest example in tokens (longer ones are truncated unless skipped).
pub const DEFAULT_MAX_LENGTH: usize = 1024;
/// LoRA rank.
pub const DEFAULT_LORA_R: usize = 16;
/// LoRA alpha (the adapter's output is scaled by alpha / r).
pub const DEFAULT_LORA_ALPHA: f64 = 32.0;
pub const DEFAULT_LORA_DROPOUT: f64 = 0.0;
/// The modules to adapt: every linear projection of the model's decoder layers.
pub const DEFAULT_LORA_TARGETS: &str = "all-linear";
/// Validation interval in steps when there is validation data.
pub const DEFAULT_EVAL_EVERY: usize = 50;
/// Checkpoint interval in steps.
pub const DEFAULT_SAVE_EVERY: usize = 100;

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            lr: DEFAULT_LR,
            schedule: ScheduleKind::Cosine,
            warmup_steps: 0,
            epochs: DEFAULT_EPOCHS,
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
