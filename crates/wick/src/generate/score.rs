//! Scoring a continuation: the logits of the step that chose each of its tokens, from one
//! teacher-forced pass (what log-probs, perplexity and "how close was that greedy choice" need).

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::models::DecoderModel;

/// Logits (continuation.len(), vocab), row `i` being the model's scores for the token at
/// `continuation[i]` given `prompt` and `continuation[..i]`.
pub fn continuation_logits(
    model: &DecoderModel,
    prompt: &[u32],
    continuation: &[u32],
    device: &Device,
) -> Result<Tensor> {
    if prompt.is_empty() {
        return Err(Error::InvalidArgument {
            name: "prompt",
            message: "scoring a continuation needs at least one prompt token".into(),
        });
    }
    let ids: Vec<u32> = prompt.iter().chain(continuation).copied().collect();
    let input = Tensor::new(ids.as_slice(), device)?.unsqueeze(0)?;
    let logits = model.forward_uncached(&input, None)?.squeeze(0)?;
    Ok(logits.narrow(0, prompt.len() - 1, continuation.len())?)
}

/// Each row's lead of its best score over its second best: how firmly a greedy step chose.
pub fn top2_margins(logits: &Tensor) -> Result<Vec<f32>> {
    let rows = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
    Ok(rows
        .iter()
        .map(|row| {
            let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
            for &v in row {
                if v > first {
                    (second, first) = (first, v);
                } else if v > second {
                    second = v;
                }
            }
            first - second
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_are_the_lead_of_the_best_wherever_it_is() -> Result<()> {
        let rows = Tensor::new(
            &[[1f32, 3.0, 2.5], [3.0, 1.0, 2.0], [0.0, 1.0, 4.0]],
            &Device::Cpu,
        )?;
        assert_eq!(top2_margins(&rows)?, vec![0.5, 1.0, 3.0]);
        Ok(())
    }
}
