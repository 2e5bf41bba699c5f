//! Causal language-model cross-entropy as transformers computes it: the label of position `t`
//! is the token at `t + 1`, positions whose label is [`IGNORE_INDEX`] (prompt, padding) do not
//! count, and the loss is the mean over the counted tokens. Logits are needed only at counted
//! positions: [`trained_positions`] lists them for [`crate::train::TrainableModel::logits_at`].

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::ops::cross_entropy::cross_entropy_sum;

/// The label of a token that is not trained on (torch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// The positions trained on in a (rows, cols) batch of labels: the flat index `r · cols + c` of
/// every position whose next label (`c + 1`) counts, and that label as its target.
pub fn trained_positions(labels: &[i64], rows: usize, cols: usize) -> (Vec<u32>, Vec<u32>) {
    let (mut positions, mut targets) = (Vec::new(), Vec::new());
    for r in 0..rows {
        for c in 1..cols {
            let label = labels[r * cols + c];
            // IGNORE_INDEX and any other negative label are not trained on.
            if label >= 0 {
                positions.push((r * cols + c - 1) as u32);
                targets.push(label as u32);
            }
        }
    }
    (positions, targets)
}

/// The summed negative log-likelihood (a differentiable f32 scalar) of `logits` (n, vocab) at
/// trained positions against their `targets`.
pub fn nll_sum(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    if targets.is_empty() {
        return Ok(Tensor::zeros((), DType::F32, logits.device())?);
    }
    Ok(cross_entropy_sum(logits, targets)?)
}

/// The summed negative log-likelihood (a differentiable f32 scalar) of `logits` (rows, cols,
/// vocab) against the shifted `labels` (row-major rows × cols), and the number of counted tokens.
/// Divide by the token count of the whole (accumulated) batch to get transformers' loss.
pub fn causal_lm_nll_sum(logits: &Tensor, labels: &[i64]) -> Result<(Tensor, usize)> {
    let (rows, cols, vocab) = logits.dims3()?;
    if labels.len() != rows * cols {
        return Err(Error::InvalidArgument {
            name: "labels",
            message: format!(
                "{} labels for logits of shape {:?}",
                labels.len(),
                logits.dims()
            ),
        });
    }
    if let Some(bad) = labels.iter().find(|&&l| l >= vocab as i64) {
        return Err(Error::InvalidArgument {
            name: "labels",
            message: format!("label {bad} is outside the vocabulary of {vocab}"),
        });
    }
    let (positions, targets) = trained_positions(labels, rows, cols);
    let count = targets.len();
    if count == 0 {
        return Ok((Tensor::zeros((), DType::F32, logits.device())?, 0));
    }
    let positions = Tensor::from_vec(positions, count, logits.device())?;
    let picked = logits
        .reshape((rows * cols, vocab))?
        .index_select(&positions, 0)?;
    Ok((nll_sum(&picked, &targets)?, count))
}
