//! Checkpoints: `OUT/checkpoint-{step}/` holding the adapter, `optimizer.safetensors` (AdamW
//! moments) and `trainer_state.json` (step, data position, seed, schedule, metrics so far).
//!
//! Written crash-safe: every file goes to a temporary name and is renamed, and the directory is
//! built as `checkpoint-{step}.tmp` and renamed last, so a kill at any point leaves either no
//! `checkpoint-{step}` or a complete one. Readers only consider `checkpoint-<digits>`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::npy::write_atomic;
use crate::train::optim::AdamW;
use crate::train::trainer::TrainerState;
use crate::train::{load_tensors, save_tensors_atomic, TrainableModel, ADAPTER_WEIGHTS};

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

/// The step of a complete checkpoint directory name (`checkpoint-<digits>`).
fn step_of(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("checkpoint-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Complete checkpoints under `out`, oldest first.
pub fn list(out: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(out) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(Error::io(out, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(out, e))?;
        let name = entry.file_name();
        if let Some(step) = name.to_str().and_then(step_of) {
            let path = entry.path();
            if path.join(STATE_FILE).is_file() {
                found.push((step, path));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The latest complete checkpoint under `out`, if any.
pub fn latest(out: &Path) -> Result<Option<PathBuf>> {
    Ok(list(out)?.pop().map(|(_, p)| p))
}

/// What `--resume DIR` means: DIR itself when it is a checkpoint, else its latest checkpoint.
pub fn resolve_resume(dir: &Path) -> Result<PathBuf> {
    if dir.join(STATE_FILE).is_file() {
        return Ok(dir.to_path_buf());
    }
    if !dir.is_dir() {
        return Err(Error::MissingFile {
            path: dir.to_path_buf(),
            hint: Some("--resume needs a training output directory or a checkpoint".into()),
        });
    }
    latest(dir)?.ok_or_else(|| Error::MissingFile {
        path: dir.join("checkpoint-N"),
        hint: Some("no complete checkpoint to resume from".into()),
    })
}

/// Reads a checkpoint's trainer state.
pub fn load_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::bad_config(&path, e.to_string()))
}

/// Restores the adapter weights and optimizer moments of a checkpoint.
pub fn load_weights(
    dir: &Path,
    model: &dyn TrainableModel,
    opt: &mut AdamW,
    optimizer_steps: u64,
) -> Result<()> {
    if !dir.join(ADAPTER_WEIGHTS).is_file() {
        return Err(Error::MissingFile {
            path: dir.join(ADAPTER_WEIGHTS),
            hint: None,
        });
    }
    model.load_adapter(dir)?;
    let path = dir.join(OPTIMIZER_FILE);
    let tensors = load_tensors(&path, model.device())?;
    opt.load_state(&tensors, optimizer_steps, &path.display().to_string())
}
