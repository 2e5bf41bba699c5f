//! The training loop: gradient accumulation over batches visited in a seeded order, global-norm
//! clipping, AdamW under a warmup schedule, non-finite losses skipped and counted, periodic
//! validation and checkpoints, exact resume.
//!
//! Loss normalisation follows transformers' Trainer with `num_items_in_batch`: the loss of an
//! optimizer step is the summed token NLL of its `grad_accum` batches divided by their total
//! count of trained tokens, so accumulation gives the same gradient as one big batch.

use std::path::{Path, PathBuf};

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::train::batch::{epoch_order, Batch};
use crate::train::checkpoint;
pub use crate::train::config::TrainConfig;
use crate::train::loss::{nll_sum, trained_positions};
use crate::train::metrics::{self, Metric, METRICS_FILE};
use crate::train::optim::{clip_grad_norm, global_norm, AdamW};
use crate::train::schedule::Schedule;
use crate::train::TrainableModel;

/// Everything needed to continue a run exactly (saved as trainer_state.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: usize,
    pub total_steps: usize,
    /// The epoch and the position in its batch order of the next batch.
    pub epoch: u64,
    pub batch_in_epoch: usize,
    /// The current epoch's batch order (recomputable from the seed; kept for inspection).
    pub epoch_order: Vec<usize>,
    pub n_train_batches: usize,
    /// SHA-256 of the training batches (ids and labels): resuming on other data is an error.
    #[serde(default)]
    pub data_sha256: String,
    pub optimizer_steps: u64,
    pub nonfinite_steps: usize,
    pub tokens_seen: u64,
    pub schedule: Schedule,
    pub config: TrainConfig,
    pub history: Vec<Metric>,
}

/// One optimizer step's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// 1-based step just completed.
    pub step: usize,
    pub total_steps: usize,
    pub epoch: u64,
    /// NaN when the step was skipped.
    pub loss: f32,
    pub lr: f64,
    pub grad_norm: Option<f64>,
    /// Real (non-padding) tokens processed.
    pub tokens: usize,
    pub skipped: bool,
}

/// What [`Trainer::run`] reports as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    Step(StepReport),
    Valid {
        step: usize,
        loss: f32,
        tokens: usize,
    },
    Checkpoint(PathBuf),
}

pub struct Trainer<'m> {
    model: &'m dyn TrainableModel,
    vars: Vec<Var>,
    cfg: TrainConfig,
    train: Vec<Batch>,
    valid: Vec<Batch>,
    opt: AdamW,
    state: TrainerState,
}

impl<'m> Trainer<'m> {
    /// A fresh run over `train` batches (and `valid` batches for validation, may be empty).
    pub fn new(
        model: &'m dyn TrainableModel,
        cfg: TrainConfig,
        train: Vec<Batch>,
        valid: Vec<Batch>,
    ) -> Result<Self> {
        cfg.validate()?;
        if train.iter().all(|b| b.target_count() == 0) {
            return Err(Error::InvalidArgument {
                name: "train",
                message: "no training batch has a trained token".into(),
            });
        }
        let named = model.trainable();
        if named.is_empty() {
            return Err(Error::InvalidArgument {
                name: "model",
                message: "the model has no trainable parameters".into(),
            });
        }
        let vars = named.iter().map(|(_, v)| v.clone()).collect();
        let opt = AdamW::new(named, cfg.adamw)?;
        let total_steps = cfg.total_steps(train.len());
        let state = TrainerState {
            step: 0,
            total_steps,
            epoch: 0,
            batch_in_epoch: 0,
            epoch_order: epoch_order(train.len(), cfg.seed, 0, cfg.shuffle),
            n_train_batches: train.len(),
            data_sha256: fingerprint(&train),
            optimizer_steps: 0,
            nonfinite_steps: 0,
            tokens_seen: 0,
            schedule: Schedule {
                kind: cfg.schedule,
                lr: cfg.lr,
                warmup_steps: cfg.warmup_steps,
                total_steps,
            },
            config: cfg.clone(),
            history: Vec::new(),
        };
        Ok(Trainer {
            model,
            vars,
            cfg,
            train,
            valid,
            opt,
            state,
        })
    }

    /// Continues from a checkpoint directory (read and verified by [`checkpoint::read`]).
    pub fn resume(
        model: &'m dyn TrainableModel,
        cfg: TrainConfig,
        train: Vec<Batch>,
        valid: Vec<Batch>,
        dir: &Path,
    ) -> Result<Self> {
        let ckpt = checkpoint::read(dir, model.device())?;
        Self::from_checkpoint(model, cfg, train, valid, ckpt)
    }

    /// Continues from a checkpoint already read. What decides the numbers (schedule, optimizer,
    /// accumulation, clipping, seed) comes from the checkpoint; `cfg` only sets the validation
    /// and checkpoint intervals and the non-finite limit.
    pub fn from_checkpoint(
        model: &'m dyn TrainableModel,
        cfg: TrainConfig,
        train: Vec<Batch>,
        valid: Vec<Batch>,
        ckpt: checkpoint::Checkpoint,
    ) -> Result<Self> {
        let state = &ckpt.state;
        if state.n_train_batches != train.len() || state.data_sha256 != fingerprint(&train) {
            return Err(Error::Training(format!(
                "{}: the checkpoint was made with other training data ({} batches, this run has {}); resume with the same data, --max-length and --batch-size",
                ckpt.dir.display(),
                state.n_train_batches,
                train.len()
            )));
        }
        let run_cfg = TrainConfig {
            eval_every: cfg.eval_every,
            save_every: cfg.save_every,
            max_nonfinite: cfg.max_nonfinite,
            ..state.config.clone()
        };
        let mut trainer = Trainer::new(model, run_cfg, train, valid)?;
        checkpoint::load_weights(&ckpt, model, &mut trainer.opt)?;
        trainer.state = ckpt.state;
        trainer.state.config = trainer.cfg.clone();
        Ok(trainer)
    }

    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    pub fn is_done(&self) -> bool {
        self.state.step >= self.state.total_steps
    }

    /// The next batch index in the visiting order, moving to the next epoch when one ends.
    fn next_batch(&mut self) -> usize {
        if self.state.batch_in_epoch >= self.train.len() {
            self.state.epoch += 1;
            self.state.batch_in_epoch = 0;
            self.state.epoch_order = epoch_order(
                self.train.len(),
                self.cfg.seed,
                self.state.epoch,
                self.cfg.shuffle,
            );
        }
        let b = self.state.epoch_order[self.state.batch_in_epoch];
        self.state.batch_in_epoch += 1;
        b
    }

    /// One optimizer step over the next `grad_accum` batches.
    pub fn step(&mut self) -> Result<StepReport> {
        let lr = self.state.schedule.lr_at(self.state.step);
        let window: Vec<usize> = (0..self.cfg.grad_accum)
            .map(|_| self.next_batch())
            .collect();
        let total_targets: usize = window.iter().map(|&b| self.train[b].target_count()).sum();
        let tokens: usize = window.iter().map(|&b| self.train[b].token_count()).sum();
        let mut grads: Vec<Option<Tensor>> = vec![None; self.vars.len()];
        let mut loss = 0f64;
        let mut finite = true;
        for (micro, &b) in window.iter().enumerate() {
            let batch = &self.train[b];
            if batch.target_count() == 0 {
                continue;
            }
            self.model
                .set_dropout_seed(Some(dropout_seed(self.cfg.seed, self.state.step, micro)));
            let (logits, targets) = self.trained_logits(batch)?;
            let nll = nll_sum(&logits, &targets)?;
            let part = (nll / total_targets as f64)?;
            let value = part.to_scalar::<f32>()?;
            if !value.is_finite() {
                finite = false;
                break;
            }
            loss += value as f64;
            let store = part.backward()?;
            for (slot, var) in grads.iter_mut().zip(&self.vars) {
                if let Some(g) = store.get(var.as_tensor()) {
                    *slot = Some(match slot.take() {
                        Some(acc) => (acc + g)?,
                        None => g.clone(),
                    });
                }
            }
        }
        let mut grad_norm = None;
        if finite {
            let mut grads = grads
                .into_iter()
                .zip(&self.vars)
                .map(|(g, v)| g.map_or_else(|| v.as_tensor().zeros_like(), Ok))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let norm = match self.cfg.max_grad_norm {
                Some(max) => clip_grad_norm(&mut grads, max)?,
                None => global_norm(&grads)?,
            };
            grad_norm = Some(norm);
            if norm.is_finite() {
                self.opt.step(&grads, lr)?;
            } else {
                finite = false;
            }
        }
        self.state.step += 1;
        self.state.optimizer_steps = self.opt.steps_taken();
        self.state.tokens_seen += tokens as u64;
        let report = StepReport {
            step: self.state.step,
            total_steps: self.state.total_steps,
            epoch: self.state.epoch,
            loss: if finite { loss as f32 } else { f32::NAN },
            lr,
            grad_norm: grad_norm.filter(|n| n.is_finite()),
            tokens,
            skipped: !finite,
        };
        self.state.history.push(Metric::Train {
            step: report.step,
            epoch: report.epoch,
            loss: finite.then_some(loss),
            lr,
            grad_norm: report.grad_norm,
            tokens,
            skipped: !finite,
        });
        if !finite {
            self.state.nonfinite_steps += 1;
            if self.state.nonfinite_steps >= self.cfg.max_nonfinite {
                return Err(Error::Training(format!(
                    "the loss or gradient was not finite in {} steps (last at step {}); lower the learning rate or check the data",
                    self.state.nonfinite_steps, self.state.step
                )));
            }
        }
        Ok(report)
    }

    /// Mean loss over every trained token of the validation batches (None without any).
    pub fn evaluate(&self) -> Result<Option<(f32, usize)>> {
        let (mut sum, mut count) = (0f64, 0usize);
        self.model.set_dropout_seed(None);
        for batch in &self.valid {
            if batch.target_count() == 0 {
                continue;
            }
            let (logits, targets) = self.trained_logits(batch)?;
            sum += nll_sum(&logits.detach(), &targets)?.to_scalar::<f32>()? as f64;
            count += targets.len();
        }
        Ok((count > 0).then(|| ((sum / count as f64) as f32, count)))
    }

    /// The logits at `batch`'s trained positions, and their targets.
    fn trained_logits(&self, batch: &Batch) -> Result<(Tensor, Vec<u32>)> {
        let device = self.model.device();
        let (ids, mask) = batch.tensors(device)?;
        let (positions, targets) = trained_positions(&batch.labels, batch.rows, batch.cols);
        let positions = Tensor::from_vec(positions, targets.len(), device)?;
        Ok((self.model.logits_at(&ids, &mask, &positions)?, targets))
    }

    fn validate_and_record(&mut self) -> Result<Option<Event>> {
        let Some((loss, tokens)) = self.evaluate()? else {
            return Ok(None);
        };
        let step = self.state.step;
        self.state.history.push(Metric::Valid {
            step,
            loss: loss.is_finite().then_some(loss as f64),
            tokens,
        });
        Ok(Some(Event::Valid { step, loss, tokens }))
    }

    pub fn save_checkpoint(&self, out: &Path) -> Result<PathBuf> {
        checkpoint::save(out, self.model, &self.opt, &self.state)
    }

    /// Trains to the end, validating before the first step, every `eval_every` steps and at the
    /// end. With `out`, appends to `out/metrics.jsonl` (rewritten from the
    /// checkpoint's history on resume), checkpoints every `save_every` steps and at the end, and
    /// writes the final adapter into `out` itself.
    pub fn run(&mut self, out: Option<&Path>, on_event: &mut dyn FnMut(&Event)) -> Result<()> {
        if let Some(out) = out {
            std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
            metrics::rewrite(&out.join(METRICS_FILE), &self.state.history)?;
        }
        let record = |out: Option<&Path>, m: Option<&Metric>| -> Result<()> {
            match (out, m) {
                (Some(out), Some(m)) => metrics::append(&out.join(METRICS_FILE), m),
                _ => Ok(()),
            }
        };
        let mut last_saved = None;
        let first_step = self.state.step;
        // The baseline every later validation loss is compared with (mlx-lm reports it too).
        if first_step == 0 && self.state.history.is_empty() {
            if let Some(ev) = self.validate_and_record()? {
                record(out, self.state.history.last())?;
                on_event(&ev);
            }
        }
        while !self.is_done() {
            let report = self.step()?;
            record(out, self.state.history.last())?;
            let step = report.step;
            on_event(&Event::Step(report));
            if self.cfg.eval_every.is_some_and(|n| step % n == 0) {
                if let Some(ev) = self.validate_and_record()? {
                    record(out, self.state.history.last())?;
                    on_event(&ev);
                }
            }
            if let (Some(out), Some(n)) = (out, self.cfg.save_every) {
                if step % n == 0 && !self.is_done() {
                    on_event(&Event::Checkpoint(self.save_checkpoint(out)?));
                    last_saved = Some(step);
                }
            }
        }
        let step = self.state.step;
        if !self
            .state
            .history
            .iter()
            .any(|m| matches!(m, Metric::Valid { step: s, .. } if *s == step))
        {
            if let Some(ev) = self.validate_and_record()? {
                record(out, self.state.history.last())?;
                on_event(&ev);
            }
        }
        if let Some(out) = out {
            // A run resumed from its final checkpoint has nothing new to save.
            if last_saved != Some(step) && step != first_step {
                on_event(&Event::Checkpoint(self.save_checkpoint(out)?));
            }
            self.model.save_adapter(out)?;
        }
        Ok(())
    }
}

/// The dropout seed of batch `micro` of 0-based step `step` (SplitMix64 of the three).
fn dropout_seed(seed: u64, step: usize, micro: usize) -> u64 {
    let mut z = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((micro as u64) << 48);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A digest of the batches' shapes, ids and labels.
fn fingerprint(batches: &[Batch]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for b in batches {
        h.update((b.rows as u64).to_le_bytes());
        h.update((b.cols as u64).to_le_bytes());
        for id in &b.input_ids {
            h.update(id.to_le_bytes());
        }
        for l in &b.labels {
            h.update(l.to_le_bytes());
        }
    }
    h.finalize().iter().map(|x| format!("{x:02x}")).collect()
}

/// Trains `batches` in the given order (no shuffle) for `cfg`'s steps and returns each step's
/// loss: the parity entry point (e.g. against PEFT + torch on a tiny model).
pub fn train_steps(
    model: &dyn TrainableModel,
    batches: Vec<Batch>,
    cfg: &TrainConfig,
) -> Result<Vec<f32>> {
    let cfg = TrainConfig {
        shuffle: false,
        ..cfg.clone()
    };
    let mut trainer = Trainer::new(model, cfg, batches, Vec::new())?;
    let mut losses = Vec::new();
    while !trainer.is_done() {
        losses.push(trainer.step()?.loss);
    }
    Ok(losses)
}
