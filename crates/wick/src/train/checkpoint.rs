//! Checkpoints: `OUT/checkpoint-{step}/` holding the adapter, `optimizer.safetensors` (AdamW
//! moments), `trainer_state.json` (step, data position, seed, schedule, metrics so far) and,
//! written last, `checkpoint.json` (each file's size and SHA-256, see [`manifest`]).
//!
//! Written crash-safe: every file goes to a temporary name and is renamed, and the directory is
//! built as `checkpoint-{step}.tmp` and renamed last, so a kill at any point leaves either no
//! `checkpoint-{step}` or a complete one. Readers only consider `checkpoint-<digits>`, and
//! [`read`] checks the manifest and parses every file before anything is used, so a checkpoint
//! damaged later (a full disk, a bad copy) is skipped by [`newest_readable`], not half-loaded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::io::npy::write_atomic;
pub use crate::train::manifest::MANIFEST_FILE;
use crate::train::manifest::{self, Verified};
use crate::train::optim::AdamW;
use crate::train::trainer::TrainerState;
use crate::train::{save_tensors_atomic, TrainableModel, ADAPTER_WEIGHTS};

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
/// Test hook: milliseconds to sleep between the files of a checkpoint, so a test can kill the
/// writer in the middle.
pub const PAUSE_ENV: &str = "WICK_CHECKPOINT_PAUSE_MS";

pub fn checkpoint_dir(out: &Path, step: usize) -> PathBuf {
    out.join(format!("checkpoint-{step}"))
}

/// Writes a checkpoint of `step` under `out` and returns its directory.
pub fn save(
    out: &Path,
    model: &dyn TrainableModel,
    opt: &AdamW,
    state: &TrainerState,
) -> Result<PathBuf> {
    let dir = checkpoint_dir(out, state.step);
    let tmp = out.join(format!("checkpoint-{}.tmp", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let pause = std::env::var(PAUSE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_millis);
    let pause = || {
        if let Some(d) = pause {
            std::thread::sleep(d);
        }
    };
    model.save_adapter(&tmp)?;
    pause();
    save_tensors_atomic(&opt.state_tensors(), &tmp.join(OPTIMIZER_FILE))?;
    pause();
    let json = serde_json::to_vec_pretty(state).map_err(|e| Error::Training(e.to_string()))?;
    write_atomic(&tmp.join(STATE_FILE), &json)?;
    pause();
    manifest::write(&tmp)?;
    sync_dir(&tmp);
    if dir.exists() {
        // Rewriting the same step (a resumed run saving again): the older copy goes first.
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    sync_dir(out);
    Ok(dir)
}

fn sync_dir(dir: &Path) {
    // Best effort: makes the renames durable on filesystems that support it.
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// The step of a checkpoint directory name (`checkpoint-<digits>`).
pub fn step_of(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("checkpoint-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every `checkpoint-<digits>` directory under `out`, complete or not, oldest first.
pub fn candidates(out: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(out) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(Error::io(out, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(out, e))?;
        let path = entry.path();
        if let Some(step) = entry.file_name().to_str().and_then(step_of) {
            if path.is_dir() {
                found.push((step, path));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Checkpoints under `out` that hold a trainer state, oldest first (not verified: see [`read`]).
pub fn list(out: &Path) -> Result<Vec<(usize, PathBuf)>> {
    Ok(candidates(out)?
        .into_iter()
        .filter(|(_, p)| p.join(STATE_FILE).is_file())
        .collect())
}

/// The latest checkpoint under `out` that holds a trainer state, if any.
pub fn latest(out: &Path) -> Result<Option<PathBuf>> {
    Ok(list(out)?.pop().map(|(_, p)| p))
}

/// A checkpoint read whole: its manifest checked and every file parsed.
#[derive(Debug)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: TrainerState,
    /// The AdamW moments (`m.NAME`, `v.NAME`).
    pub optimizer: HashMap<String, Tensor>,
    /// False for a checkpoint without a manifest (written before manifests existed).
    pub verified: bool,
}

/// Reads the checkpoint in `dir`: checks its manifest, then parses the trainer state, the adapter
/// and the optimizer state. Any problem is an [`Error::BadCheckpoint`] naming the file.
pub fn read(dir: &Path, device: &Device) -> Result<Checkpoint> {
    let bad = |message: String| Error::BadCheckpoint {
        path: dir.to_path_buf(),
        message,
    };
    let verified = manifest::verify(dir)? == Verified::Yes;
    let file = |name: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        match path.is_file() {
            true => Ok(path),
            false => Err(bad(format!("{name} is missing"))),
        }
    };
    let bytes = std::fs::read(file(STATE_FILE)?).map_err(|e| Error::io(dir.join(STATE_FILE), e))?;
    let state: TrainerState = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("{STATE_FILE} does not parse: {e}")))?;
    let tensors = |name: &str| {
        candle_core::safetensors::load(file(name)?, device)
            .map_err(|e| bad(format!("{name} does not parse: {e}")))
    };
    // Parsed here so a damaged adapter is caught before any weight is set; the model reads it
    // again through its own `load_adapter`.
    tensors(ADAPTER_WEIGHTS)?;
    let optimizer = tensors(OPTIMIZER_FILE)?;
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        state,
        optimizer,
        verified,
    })
}

/// The newest checkpoint under `out` that [`read`] accepts. Each newer one that fails is
/// reported through `on_skip` as `skipping checkpoint-N: WHY`; none at all is an error listing
/// why each was skipped.
pub fn newest_readable(
    out: &Path,
    device: &Device,
    on_skip: &mut dyn FnMut(&str),
) -> Result<Checkpoint> {
    let mut skipped = Vec::new();
    for (step, dir) in candidates(out)?.into_iter().rev() {
        match read(&dir, device) {
            Ok(c) => return Ok(c),
            Err(Error::BadCheckpoint { message, .. }) => {
                on_skip(&format!("skipping checkpoint-{step}: {message}"));
                skipped.push(format!("checkpoint-{step}: {message}"));
            }
            Err(e) => return Err(e),
        }
    }
    let message = match skipped.is_empty() {
        true => "no checkpoint to resume from (the run stopped before its first checkpoint; \
                 start it again with --out and --overwrite)"
            .to_string(),
        false => format!(
            "no usable checkpoint to resume from ({})",
            skipped.join("; ")
        ),
    };
    Err(Error::BadCheckpoint {
        path: out.to_path_buf(),
        message,
    })
}

/// Reads a checkpoint's trainer state.
pub fn load_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::bad_config(&path, e.to_string()))
}

/// Sets the model's adapter weights and the optimizer moments from `ckpt`.
pub fn load_weights(ckpt: &Checkpoint, model: &dyn TrainableModel, opt: &mut AdamW) -> Result<()> {
    model.load_adapter(&ckpt.dir)?;
    let origin = ckpt.dir.join(OPTIMIZER_FILE).display().to_string();
    opt.load_state(&ckpt.optimizer, ckpt.state.optimizer_steps, &origin)
}
