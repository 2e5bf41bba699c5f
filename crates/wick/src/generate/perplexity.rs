//! Perplexity of a text, by llama.cpp's method (`tools/perplexity/perplexity.cpp`), so the two
//! tools' figures compare on the same file:
//! - the whole text is tokenized once, with the tokenizer's special tokens (a BOS first when the
//!   model adds one);
//! - it is cut into `tokens.len() / ctx` chunks of `ctx` tokens (the tail is dropped; at least two
//!   chunks' worth of tokens are needed), each run from an empty cache;
//! - when the model adds a BOS, each chunk's first token is replaced by the BOS;
//! - only the second half of each chunk is scored: the logits at positions `ctx/2 .. ctx-2`
//!   predicting the tokens at `ctx/2+1 .. ctx-1` (`ctx - ctx/2 - 1` tokens per chunk);
//! - PPL = exp(mean NLL), and its error exp(mean) × sqrt((mean(NLL²) - mean²) / (n - 1)).

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// The result, as llama-perplexity prints it: `PPL = {ppl:.4} +/- {stderr:.5}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    pub ppl: f64,
    /// One standard error of `ppl`.
    pub stderr: f64,
    /// Mean negative log-likelihood per scored token (nats).
    pub mean_nll: f64,
    pub chunks: usize,
    /// Tokens scored in all.
    pub scored: usize,
}

impl std::fmt::Display for Perplexity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PPL = {:.4} +/- {:.5}", self.ppl, self.stderr)
    }
}

/// Perplexity of `tokens` (the whole text, tokenized with special tokens) in chunks of `ctx`.
/// `bos` is the token put first in each chunk (None when the model adds no BOS). `logits` runs
/// the model on one chunk from an empty cache and returns its logits (1 or no batch dim,
/// `ctx`, vocab); `on_chunk` hears (chunk index, running PPL) after each chunk.
pub fn perplexity(
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    mut logits: impl FnMut(&[u32]) -> Result<Tensor>,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<Perplexity> {
    if ctx < 4 {
        return Err(Error::InvalidArgument {
            name: "ctx",
            message: format!("a context of {ctx} tokens is too small (at least 4)"),
        });
    }
    if tokens.len() < 2 * ctx {
        return Err(Error::InvalidArgument {
            name: "ctx",
            message: format!(
                "the text has {} tokens; a context of {ctx} needs at least {} (two chunks)",
                tokens.len(),
                2 * ctx
            ),
        });
    }
    let chunks = tokens.len() / ctx;
    let first = ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    for c in 0..chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(bos) = bos {
            chunk[0] = bos;
        }
        let out = logits(&chunk)?;
        let out = if out.rank() == 3 {
            out.squeeze(0)?
        } else {
            out
        };
        if out.rank() != 2 || out.dim(0)? != ctx {
            return Err(Error::InvalidArgument {
                name: "logits",
                message: format!("expected ({ctx}, vocab) logits, got {:?}", out.dims()),
            });
        }
        let scored = out
            .narrow(0, first, ctx - 1 - first)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        for (i, row) in scored.iter().enumerate() {
            let target = chunk[first + i + 1] as usize;
            let v = -log_softmax_at(row, target).ok_or_else(|| Error::InvalidArgument {
                name: "tokens",
                message: format!("token id {target} is outside the vocab of {}", row.len()),
            })?;
            nll += v;
            nll2 += v * v;
        }
        count += scored.len();
        on_chunk(c, (nll / count as f64).exp());
    }
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    Ok(Perplexity {
        ppl,
        stderr: if var > 0.0 {
            (var / (count - 1) as f64).sqrt() * ppl
        } else {
            0.0
        },
        mean_nll: mean,
        chunks,
        scored: count,
    })
}

/// `log softmax(row)[target]`, computed as llama.cpp does: exps in f32 summed in f64.
fn log_softmax_at(row: &[f32], target: usize) -> Option<f64> {
    let logit = *row.get(target)?;
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&l| f64::from((l - max).exp())).sum();
    Some(f64::from(logit - max) - sum.ln())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A "model" whose logits at position p favour token (p + 1) % vocab by `p`-dependent
    /// margins, so every position's score is known in closed form.
    fn toy(chunk: &[u32]) -> Result<Tensor> {
        let vocab = 5;
        let rows: Vec<f32> = (0..chunk.len())
            .flat_map(|p| (0..vocab).map(move |v| if v == (p + 1) % vocab { 1.0 } else { 0.0 }))
            .collect();
        Ok(Tensor::from_vec(rows, (chunk.len(), vocab), &Device::Cpu)?)
    }

    #[test]
    fn scores_the_second_half_of_each_chunk_with_bos_first() -> Result<()> {
        // 2 chunks of 8 (+3 dropped): positions 4..=6 predict tokens 5..=7 of each chunk.
        let tokens: Vec<u32> = (0..19).map(|i| (i % 5) as u32).collect();
        let mut seen = Vec::new();
        let p = perplexity(
            &tokens,
            8,
            Some(4),
            |c| {
                seen.push(c.to_vec());
                toy(c)
            },
            |_, _| {},
        )?;
        assert_eq!(seen[0][0], 4);
        assert_eq!(seen[1], vec![4, 4, 0, 1, 2, 3, 4, 0]);
        assert_eq!((p.chunks, p.scored), (2, 6));
        // Chunk 0 tokens 5..=7 are 0,1,2; the toy favours (p+1)%5 = 0,1,2: all hits. Chunk 1
        // tokens 5..=7 are 3,4,0 against favoured 0,1,2: all misses.
        let e = std::f64::consts::E;
        let hit = -(e / (e + 4.0)).ln();
        let miss = -(1.0 / (e + 4.0)).ln();
        let mean = (hit + miss) / 2.0;
        assert!((p.mean_nll - mean).abs() < 1e-6, "{p:?}");
        let var = (hit * hit + miss * miss) / 2.0 - mean * mean;
        assert!((p.stderr - (var / 5.0).sqrt() * mean.exp()).abs() < 1e-6);
        assert_eq!(
            p.to_string(),
            format!("PPL = {:.4} +/- {:.5}", p.ppl, p.stderr)
        );
        Ok(())
    }

    #[test]
    fn too_short_a_text_is_refused() {
        let err = perplexity(&[1; 15], 8, None, toy, |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("15 tokens"), "{err}");
    }
}
