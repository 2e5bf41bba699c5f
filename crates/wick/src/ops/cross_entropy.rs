//! Summed cross-entropy `Σᵢ (logsumexp(xᵢ) − xᵢ[tᵢ])` of (n, vocab) logits against target ids:
//! the training loss, whose input is the largest tensor of a training step (vocab 49k–150k).
//!
//! The fast path reads the logits once forward and once backward and writes one gradient
//! tensor: no max/exp/sum/gather intermediates the size of the logits, which the composed
//! reference creates (and differentiates) one after another.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Fast path: a custom op with its own backward pass on the CPU and on CUDA (wick's kernel,
/// reading half-precision logits as they are); other devices use the reference.
/// `logits` (n, vocab) in any float dtype (computed in f32); returns an f32 scalar.
pub fn cross_entropy_sum(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    check(logits, targets)?;
    #[cfg(feature = "cuda")]
    if logits.device().is_cuda() && !targets.is_empty() {
        let ids = Tensor::from_vec(targets.to_vec(), targets.len(), logits.device())?;
        let rows = super::cuda::loss::cross_entropy_rows(logits, &ids)?;
        return rows.narrow(1, 0, 1)?.sum_all();
    }
    if !matches!(logits.device(), Device::Cpu) {
        return composed(logits, targets);
    }
    let x = logits.to_dtype(DType::F32)?.contiguous()?;
    x.apply_op1(CrossEntropySum {
        targets: Arc::new(targets.to_vec()),
        lse: Arc::new(OnceLock::new()),
    })
}

/// Reference: logsumexp (max-shifted) minus the gathered target logit, from candle primitives.
pub fn cross_entropy_sum_reference(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    check(logits, targets)?;
    composed(logits, targets)
}

/// The reference's arithmetic, for inputs already checked.
fn composed(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let x = logits.to_dtype(DType::F32)?.contiguous()?;
    let ids = Tensor::from_vec(targets.to_vec(), (targets.len(), 1), x.device())?;
    // The max only keeps exp in range; logsumexp's gradient does not depend on it.
    let max = x.max_keepdim(D::Minus1)?.detach();
    let lse = (x
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + max)?;
    (lse - x.gather(&ids, D::Minus1)?)?.sum_all()
}

fn check(logits: &Tensor, targets: &[u32]) -> Result<()> {
    let (n, vocab) = logits.dims2()?;
    if n != targets.len() {
        candle_core::bail!("cross_entropy: {} targets for {n} rows", targets.len())
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("cross_entropy: target {t} is outside the vocabulary of {vocab}")
    }
    Ok(())
}

struct CrossEntropySum {
    targets: Arc<Vec<u32>>,
    /// Each row's logsumexp, kept by the forward pass so the backward pass needs one exp per
    /// element and no second reduction.
    lse: Arc<OnceLock<Vec<f32>>>,
}

impl CrossEntropySum {
    fn rows<'a>(&self, storage: &'a CpuStorage, layout: &Layout) -> Result<(&'a [f32], usize)> {
        let (Some((start, end)), CpuStorage::F32(data)) = (layout.contiguous_offsets(), storage)
        else {
            candle_core::bail!("cross_entropy: expects contiguous f32 logits")
        };
        Ok((&data[start..end], layout.dims()[1]))
    }
}

impl CustomOp1 for CrossEntropySum {
    fn name(&self) -> &'static str {
        "cross-entropy-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, vocab) = self.rows(storage, layout)?;
        let lse: Vec<f32> = x.par_chunks(vocab).map(logsumexp).collect();
        let loss: f64 = lse
            .iter()
            .zip(x.chunks(vocab))
            .zip(self.targets.iter())
            .map(|((&l, row), &t)| (l - row[t as usize]) as f64)
            .sum();
        // A second forward of the same op value would recompute identical numbers.
        let _ = self.lse.set(lse);
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    /// d loss / d x = g · (softmax(x) − onehot(t)), g the incoming scalar gradient.
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = grad_res.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let Some(lse) = self.lse.get() else {
            candle_core::bail!("cross_entropy: backward before forward")
        };
        let (storage, layout) = arg.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else {
            candle_core::bail!("cross_entropy: the fast path runs on the CPU")
        };
        let (x, vocab) = self.rows(storage, layout)?;
        let mut grad = vec![0f32; x.len()];
        grad.par_chunks_mut(vocab)
            .zip(x.par_chunks(vocab))
            .zip(lse.par_iter().zip(self.targets.par_iter()))
            .for_each(|((out, row), (&l, &t))| {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = g * (v - l).exp();
                }
                out[t as usize] -= g;
            });
        Ok(Some(Tensor::from_vec(grad, arg.shape(), arg.device())?))
    }
}

/// `log Σ exp(row)`, shifted by the row's max.
fn logsumexp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
    max + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::max_diff;
    use candle_core::Var;

    fn loss_and_grad(
        f: fn(&Tensor, &[u32]) -> Result<Tensor>,
        x: &Var,
        t: &[u32],
    ) -> Result<(f32, Tensor)> {
        // Scaled so the incoming gradient is not 1.
        let loss = (f(x.as_tensor(), t)? * 0.25)?;
        let grads = loss.backward()?;
        let g = grads.get(x.as_tensor()).expect("gradient").clone();
        Ok((loss.to_scalar::<f32>()?, g))
    }

    #[test]
    fn fast_matches_reference_value_and_gradient_on_odd_sizes() -> Result<()> {
        let dev = Device::Cpu;
        for (n, vocab) in [(1, 1), (3, 7), (17, 1001), (5, 49_153)] {
            let x = Var::from_tensor(&(Tensor::randn(0f32, 3.0, (n, vocab), &dev)?))?;
            let t: Vec<u32> = (0..n).map(|i| ((i * 7919) % vocab) as u32).collect();
            let (fast, g_fast) = loss_and_grad(cross_entropy_sum, &x, &t)?;
            let (want, g_want) = loss_and_grad(cross_entropy_sum_reference, &x, &t)?;
            let rel = (fast - want).abs() / want.abs().max(1.0);
            assert!(rel < 1e-5, "{n}x{vocab}: loss {fast} vs {want}");
            let d = max_diff(&g_fast, &g_want)?;
            // Gradients are at most 0.25 here; both sides round exp differently in f32.
            assert!(d < 1e-5, "{n}x{vocab}: gradient max abs diff {d}");
        }
        Ok(())
    }

    #[test]
    fn non_contiguous_and_half_inputs_follow_the_reference() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (40, 6), &dev)?.t()?;
        let t = [0, 39, 7, 3, 12, 5];
        let d = max_diff(
            &cross_entropy_sum(&x, &t)?,
            &cross_entropy_sum_reference(&x, &t)?,
        )?;
        assert!(d < 1e-4, "non-contiguous: {d}");
        let h = x.to_dtype(DType::BF16)?;
        let d = max_diff(
            &cross_entropy_sum(&h, &t)?,
            &cross_entropy_sum_reference(&h, &t)?,
        )?;
        assert!(d < 1e-4, "bf16: {d}");
        Ok(())
    }

    #[test]
    fn bad_targets_are_errors() {
        let x = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).expect("zeros");
        let err = cross_entropy_sum(&x, &[0, 4]).unwrap_err().to_string();
        assert!(
            err.contains("target 4 is outside the vocabulary of 4"),
            "{err}"
        );
        let err = cross_entropy_sum(&x, &[0]).unwrap_err().to_string();
        assert!(err.contains("1 targets for 2 rows"), "{err}");
    }
}
