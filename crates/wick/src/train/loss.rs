//! Causal language-model cross-entropy as transformers computes it: the label of position `t`
//! is the token at `t + 1`, positions whose label is [`IGNORE_INDEX`] (prompt, padding) do not
//! count, and the loss is the mean over the counted tokens.

use candle_core::{DType, Device, Tensor, D};

use crate::error::{Error, Result};

/// The label of a token that is not trained on (torch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Shifted targets of a (rows, cols) batch of labels: (target ids, weights), both
/// rows × (cols − 1), with 0 / 0.0 where the label is ignored; and the number of counted tokens.
pub fn shifted_targets(labels: &[i64], rows: usize, cols: usize) -> (Vec<u32>, Vec<f32>, usize) {
    let n = rows * cols.saturating_sub(1);
    let (mut ids, mut weights) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut count = 0;
    for r in 0..rows {
        for c in 1..cols {
            let label = labels[r * cols + c];
            if label == IGNORE_INDEX || label < 0 {
                ids.push(0);
                weights.push(0.0);
            } else {
                ids.push(label as u32);
                weights.push(1.0);
                count += 1;
            }
        }
    }
    (ids, weights, count)
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
    let device = logits.device();
    if cols < 2 {
        return Ok((Tensor::zeros((), DType::F32, device)?, 0));
    }
    let (ids, weights, count) = shifted_targets(labels, rows, cols);
    let n = rows * (cols - 1);
    let x = logits
        .narrow(1, 0, cols - 1)?
        .to_dtype(DType::F32)?
        .reshape((n, vocab))?
        .contiguous()?;
    let nll = token_nll(&x, &ids, device)?;
    let weights = Tensor::from_vec(weights, n, device)?;
    Ok(((nll * weights)?.sum_all()?, count))
}

/// −log softmax(x)[target] per row of `x` (n, vocab), as logsumexp − picked logit.
fn token_nll(x: &Tensor, targets: &[u32], device: &Device) -> Result<Tensor> {
    let n = targets.len();
    let targets = Tensor::from_vec(targets.to_vec(), (n, 1), device)?;
    // The max only keeps exp in range; logsumexp's gradient does not depend on it.
    let max = x.max_keepdim(D::Minus1)?.detach();
    let lse = (x
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + max)?;
    let picked = x.gather(&targets, D::Minus1)?;
    Ok((lse - picked)?.squeeze(D::Minus1)?)
}
