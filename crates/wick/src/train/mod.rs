//! Fine-tuning: JSONL data ([`data`], [`examples`], [`batch`]), the causal-LM loss ([`loss`]),
//! AdamW ([`optim`]), learning-rate schedules ([`schedule`]), atomic resumable checkpoints
//! ([`checkpoint`]) and the loop itself ([`trainer`]).
//!
//! The trainer works on anything implementing [`TrainableModel`]: a forward pass that is
//! differentiable with respect to a set of named f32 [`Var`]s (the LoRA parameters, keyed by
//! their PEFT names).

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod examples;
mod lora_model;
pub mod loss;
pub mod manifest;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod trainer;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};

use crate::error::{Error, Result};

pub use batch::{epoch_order, length_sorted_batches, Batch};
pub use data::{read_jsonl, read_jsonl_with, DataOptions, JsonlData, Record, Shape};
pub use examples::{tokenize, DataReport, Example, Overflow, TokenizeOptions};
pub use optim::{AdamW, AdamWParams};
pub use schedule::{Schedule, ScheduleKind};
pub use trainer::{train_steps, Event, StepReport, TrainConfig, Trainer};

/// File name of the trainable parameters inside a checkpoint (PEFT's name).
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// A model the trainer can fine-tune.
pub trait TrainableModel {
    /// Logits (batch, seq, vocab) of `input_ids` (batch, seq) u32 with `attention_mask`
    /// (batch, seq), 1 real / 0 padding; differentiable with respect to [`Self::trainable`].
    fn logits(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor>;

    /// Logits (n, vocab) at the flat positions `positions` (u32, index `b · seq + t`): training
    /// needs them only where a token is trained on. The default selects rows of
    /// [`Self::logits`]; models override it to skip the LM head elsewhere.
    fn logits_at(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        positions: &Tensor,
    ) -> Result<Tensor> {
        let logits = self.logits(input_ids, attention_mask)?;
        let (b, s, vocab) = logits.dims3()?;
        Ok(logits.reshape((b * s, vocab))?.index_select(positions, 0)?)
    }

    /// The trainable parameters (f32), named as they are saved, in a stable order.
    fn trainable(&self) -> Vec<(String, Var)>;

    fn device(&self) -> &Device;

    /// Called before every training forward pass with a seed derived from the run's seed, the
    /// step and the batch within it, and with `None` before validation. A model with dropout
    /// draws its masks from this seed (and turns dropout off on `None`), so a resumed run
    /// draws the same masks without any RNG state in the checkpoint.
    fn set_dropout_seed(&self, _seed: Option<u64>) {}

    /// Writes the adapter into `dir` (for LoRA: PEFT's adapter_config.json and
    /// adapter_model.safetensors). By default the trainable tensors go to [`ADAPTER_WEIGHTS`]
    /// under their names.
    fn save_adapter(&self, dir: &Path) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self
            .trainable()
            .into_iter()
            .map(|(name, var)| (name, var.as_tensor().clone()))
            .collect();
        save_tensors_atomic(&tensors, &dir.join(ADAPTER_WEIGHTS))
    }

    /// Sets the trainable parameters from an adapter written by [`Self::save_adapter`].
    fn load_adapter(&self, dir: &Path) -> Result<()> {
        let path = dir.join(ADAPTER_WEIGHTS);
        let tensors = load_tensors(&path, self.device())?;
        set_vars(&self.trainable(), &tensors, &path.display().to_string())
    }
}

/// Sets each named var from `tensors` (same name, same shape).
pub fn set_vars(
    vars: &[(String, Var)],
    tensors: &HashMap<String, Tensor>,
    origin: &str,
) -> Result<()> {
    for (name, var) in vars {
        let t = tensors.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.clone(),
            location: origin.to_string(),
        })?;
        if t.dims() != var.dims() {
            return Err(Error::ShapeMismatch {
                name: name.clone(),
                location: origin.to_string(),
                expected: var.dims().to_vec(),
                actual: t.dims().to_vec(),
            });
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// Saves tensors as safetensors through `path.tmp` + fsync + rename.
pub fn save_tensors_atomic(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    candle_core::safetensors::save(tensors, &tmp)?;
    let finish = || -> std::io::Result<()> {
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    finish().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Loads a safetensors file onto `device`, naming the file when it is missing or broken.
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            hint: None,
        });
    }
    candle_core::safetensors::load(path, device).map_err(|e| Error::BadSafetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
