//! Rotary position embeddings in Hugging Face's rotate-half layout (the first and second halves
//! of each head are the two rotated components), with per-sequence positions.

use candle_core::{DType, Result, Tensor, D};

use super::grad::with_backward;

/// How the base frequencies are rescaled for longer contexts (computed into the inverse
/// frequencies once, so the per-step cost is the same for every kind).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.1: long wavelengths divided by `factor`, short ones kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// The `head_dim / 2` inverse frequencies `θ^(-2i/d)`, rescaled like transformers' rope init
/// functions (f32, as transformers computes them).
pub fn inv_freq(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Vec<f32> {
    let base: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / (theta as f32).powf(i as f32 / head_dim as f32))
        .collect();
    match *scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old_len,
        } => {
            let (factor, low, high, old_len) = (
                factor as f32,
                low_freq_factor as f32,
                high_freq_factor as f32,
                old_len as f32,
            );
            let (low_wavelen, high_wavelen) = (old_len / low, old_len / high);
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old_len / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// cos and sin of `positions[b, s] · inv_freq[i]`, each (batch, seq, head_dim / 2), computed in
/// f32 and then cast to `dtype`. `positions` is any numeric dtype.
pub fn cos_sin(inv_freq: &Tensor, positions: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
    let (b, s) = positions.dims2()?;
    let half = inv_freq.dim(0)?;
    let pos = positions.to_dtype(DType::F32)?.reshape((b, s, 1))?;
    let freqs = pos.broadcast_mul(&inv_freq.to_dtype(DType::F32)?.reshape((1, 1, half))?)?;
    Ok((freqs.cos()?.to_dtype(dtype)?, freqs.sin()?.to_dtype(dtype)?))
}

/// Fast path: candle's fused kernel for `x` (batch, heads, seq, head_dim) and cos/sin
/// (batch, seq, head_dim / 2). The kernel has no backward pass in candle 0.11.1; a tracked `x`
/// (LoRA training) gets one through [`with_backward`]: RoPE rotates each pair of features by
/// its angle, so the gradient is the rotation back, RoPE with −sin. Tracked cos/sin take the
/// differentiable reference.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (cos, sin) = (cos.contiguous()?, sin.contiguous()?);
    if !x.track_op() {
        return candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin);
    }
    if cos.track_op() || sin.track_op() {
        return rope_reference(x, &cos, &sin);
    }
    let y = candle_nn::rotary_emb::rope(&x.detach().contiguous()?, &cos, &sin)?;
    let back_sin = sin.neg()?;
    let backward = move |_: &Tensor, grad: &Tensor| {
        candle_nn::rotary_emb::rope(&grad.contiguous()?, &cos, &back_sin)
    };
    with_backward(x, y, Box::new(backward))
}

/// Reference: `x·cos + rotate_half(x)·sin` with cos/sin repeated over both halves.
pub fn rope_reference(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let full = |t: &Tensor| -> Result<Tensor> { Tensor::cat(&[t, t], D::Minus1)?.unsqueeze(1) };
    let (cos, sin) = (full(cos)?, full(sin)?);
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d - d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::max_diff;
    use candle_core::{Device, Var};

    fn setup(dev: &Device) -> Result<(Tensor, Tensor, Tensor)> {
        // (batch 3, heads 5, seq 7, head_dim 10), strided; per-sequence positions.
        let x = Tensor::randn(0f32, 1.0, (3, 7, 5, 10), dev)?.transpose(1, 2)?;
        let freqs = Tensor::new(inv_freq(10, 10000.0, &RopeScaling::None), dev)?;
        let pos = Tensor::new(
            &[
                [0u32, 1, 2, 3, 4, 5, 6],
                [9, 10, 11, 12, 13, 14, 15],
                [0, 0, 0, 1, 2, 3, 4],
            ],
            dev,
        )?;
        let (cos, sin) = cos_sin(&freqs, &pos, DType::F32)?;
        Ok((x, cos, sin))
    }

    #[test]
    fn fast_matches_reference_with_per_sequence_positions() -> Result<()> {
        let (x, cos, sin) = setup(&Device::Cpu)?;
        let diff = max_diff(&rope(&x, &cos, &sin)?, &rope_reference(&x, &cos, &sin)?)?;
        assert!(diff < 1e-6, "max abs diff {diff}");
        // One token per sequence (the decode step) takes another kernel branch.
        let x1 = x.narrow(2, 3, 1)?;
        let (c1, s1) = (cos.narrow(1, 3, 1)?, sin.narrow(1, 3, 1)?);
        let diff = max_diff(&rope(&x1, &c1, &s1)?, &rope_reference(&x1, &c1, &s1)?)?;
        assert!(diff < 1e-6, "decode max abs diff {diff}");
        Ok(())
    }

    #[test]
    fn fast_gradient_matches_the_reference_gradient() -> Result<()> {
        let (x, cos, sin) = setup(&Device::Cpu)?;
        let x = Var::from_tensor(&x)?;
        let up = Tensor::randn(0f32, 1.0, x.shape(), &Device::Cpu)?;
        let grad = |f: fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>| -> Result<Tensor> {
            let y = f(x.as_tensor(), &cos, &sin)?;
            let g = (y * &up)?.sum_all()?.backward()?;
            Ok(g.get(x.as_tensor()).expect("gradient").clone())
        };
        let diff = max_diff(&grad(rope)?, &grad(rope_reference)?)?;
        assert!(diff < 1e-5, "gradient max abs diff {diff}");
        Ok(())
    }

    #[test]
    fn position_zero_is_identity_and_gradients_flow() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1.0, (1, 2, 1, 8), &dev)?;
        let freqs = Tensor::new(inv_freq(8, 10000.0, &RopeScaling::None), &dev)?;
        let (cos, sin) = cos_sin(&freqs, &Tensor::new(&[[0u32]], &dev)?, DType::F32)?;
        let y = rope(x.as_tensor(), &cos, &sin)?;
        assert!(max_diff(&y, x.as_tensor())? < 1e-7);
        let grads = (y.sqr()?.sum_all()?).backward()?;
        assert!(grads.get(x.as_tensor()).is_some(), "no gradient reached x");
        Ok(())
    }

    #[test]
    fn scaled_inverse_frequencies() {
        let base = inv_freq(16, 10000.0, &RopeScaling::None);
        let lin = inv_freq(16, 10000.0, &RopeScaling::Linear { factor: 4.0 });
        assert!(base
            .iter()
            .zip(&lin)
            .all(|(b, l)| (b / 4.0 - l).abs() < 1e-9));
        let l3 = inv_freq(
            16,
            10000.0,
            &RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 32.0,
            },
        );
        // wavelengths 6.3 (kept), 19.9 (smoothed), ≥ 62.8 (divided by 8)
        assert_eq!(l3[0], base[0]);
        assert!(l3[1] < base[1] && l3[1] > base[1] / 8.0);
        assert!(l3[2..]
            .iter()
            .zip(&base[2..])
            .all(|(l, b)| (b / 8.0 - l).abs() < 1e-9));
    }
}
