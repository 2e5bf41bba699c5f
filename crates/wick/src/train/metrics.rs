//! `metrics.jsonl`: one JSON object per optimizer step and per validation.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::npy::write_atomic;

pub const METRICS_FILE: &str = "metrics.jsonl";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Metric {
    /// One optimizer step (1-based `step`); `loss` is None when it was not finite (step skipped).
    Train {
        step: usize,
        epoch: u64,
        loss: Option<f64>,
        lr: f64,
        grad_norm: Option<f64>,
        tokens: usize,
        skipped: bool,
    },
    /// Mean loss over the validation set's trained tokens after `step` steps.
    Valid {
        step: usize,
        loss: Option<f64>,
        tokens: usize,
    },
}

/// Appends one metric line.
pub fn append(path: &Path, metric: &Metric) -> Result<()> {
    let mut line = serde_json::to_string(metric).map_err(|e| Error::Training(e.to_string()))?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(line.as_bytes()).map_err(|e| Error::io(path, e))
}

/// Replaces the file with `history` (on resume: lines written after the checkpoint go).
pub fn rewrite(path: &Path, history: &[Metric]) -> Result<()> {
    let mut text = String::new();
    for m in history {
        text.push_str(&serde_json::to_string(m).map_err(|e| Error::Training(e.to_string()))?);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

pub fn train_losses(history: &[Metric]) -> Vec<(usize, f64)> {
    history
        .iter()
        .filter_map(|m| match m {
            Metric::Train {
                step,
                loss: Some(l),
                ..
            } => Some((*step, *l)),
            _ => None,
        })
        .collect()
}

pub fn valid_losses(history: &[Metric]) -> Vec<(usize, f64)> {
    history
        .iter()
        .filter_map(|m| match m {
            Metric::Valid {
                step,
                loss: Some(l),
                ..
            } => Some((*step, *l)),
            _ => None,
        })
        .collect()
}
