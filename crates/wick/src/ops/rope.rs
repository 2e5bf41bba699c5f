//! Rotary position embeddings in Hugging Face's rotate-half layout (the first and second halves
//! of each head are the two rotated components), with per-sequence positions.

use candle_core::{DType, Device, Result, Tensor, D};

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
    /// LongRoPE (Phi-3 / Phi-4-mini): frequency `i` divided by `short_factor[i]` while a sequence
    /// holds at most `original_max_position_embeddings` tokens and by `long_factor[i]` beyond
    /// (transformers' `_compute_longrope_parameters` and `longrope_frequency_update`). Its
    /// attention factor, on cos and sin either way, is [`Rotary::new`]'s `attention_factor`
    /// ([`RopeScaling::longrope_attention_factor`] unless the config sets one).
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        original_max_position_embeddings: usize,
    },
}

impl RopeScaling {
    /// LongRoPE's default `attention_factor` from `factor` (`max_position_embeddings /
    /// original_max_position_embeddings` when the config has none):
    /// `sqrt(1 + ln(factor) / ln(original))`, 1 for `factor <= 1`.
    pub fn longrope_attention_factor(factor: f64, original_max_position_embeddings: usize) -> f64 {
        if factor <= 1.0 {
            1.0
        } else {
            (1.0 + factor.ln() / (original_max_position_embeddings as f64).ln()).sqrt()
        }
    }

    /// Checks what the config cannot promise: LongRoPE needs one factor per frequency
    /// (`rotary_dim / 2`), each positive and finite. The message names the field.
    pub fn validate(&self, rotary_dim: usize) -> std::result::Result<(), String> {
        let RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_position_embeddings,
        } = self
        else {
            return Ok(());
        };
        for (name, factors) in [("short_factor", short_factor), ("long_factor", long_factor)] {
            if factors.len() != rotary_dim / 2 {
                return Err(format!(
                    "longrope `{name}` has {} entries; the rotary dimension {rotary_dim} needs {}",
                    factors.len(),
                    rotary_dim / 2
                ));
            }
            if let Some(bad) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
                return Err(format!(
                    "longrope `{name}` holds {bad}; factors must be positive"
                ));
            }
        }
        if *original_max_position_embeddings == 0 {
            return Err("longrope `original_max_position_embeddings` must be positive".into());
        }
        Ok(())
    }
}

/// The `head_dim / 2` inverse frequencies `θ^(-2i/d)`, rescaled like transformers' rope init
/// functions (f32, as transformers computes them). `head_dim` is the rotary dimension (smaller
/// than the head with a partial rotary factor). LongRoPE gives its short-sequence set here and
/// its long one from [`long_inv_freq`].
pub fn inv_freq(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Vec<f32> {
    let base: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / (theta as f32).powf(i as f32 / head_dim as f32))
        .collect();
    match *scaling {
        RopeScaling::None => base,
        RopeScaling::LongRope {
            ref short_factor, ..
        } => longrope_inv_freq(head_dim, theta, short_factor),
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

/// LongRoPE's inverse frequencies for sequences longer than `original_max_position_embeddings`;
/// None for every other scaling.
pub fn long_inv_freq(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Option<Vec<f32>> {
    match scaling {
        RopeScaling::LongRope { long_factor, .. } => {
            Some(longrope_inv_freq(head_dim, theta, long_factor))
        }
        _ => None,
    }
}

/// `1 / (factor_i · θ^(2i/d))` in f32, in transformers' order of operations.
fn longrope_inv_freq(dim: usize, theta: f64, factors: &[f64]) -> Vec<f32> {
    (0..dim)
        .step_by(2)
        .zip(factors)
        .map(|(i, &f)| 1.0 / (f as f32 * (theta as f32).powf(i as f32 / dim as f32)))
        .collect()
}

/// A model's rotary tables on its device: the inverse frequencies (two sets with LongRoPE, chosen
/// per sequence by its length) and the factor cos/sin are multiplied by.
#[derive(Debug, Clone)]
pub struct Rotary {
    /// (rotary_dim / 2) f32: the only set, or LongRoPE's short one.
    inv_freq: Tensor,
    /// LongRoPE: (2, rotary_dim / 2) short and long sets, and the longest sequence that still
    /// takes the short one.
    long: Option<(Tensor, usize)>,
    scale: f64,
}

impl Rotary {
    /// Tables for `rotary_dim` rotated features of each head (even; `head_dim` without a
    /// partial rotary factor), cos and sin multiplied by `attention_factor`. The caller has
    /// validated `scaling` ([`RopeScaling::validate`]).
    pub fn new(
        rotary_dim: usize,
        theta: f64,
        scaling: &RopeScaling,
        attention_factor: f64,
        device: &Device,
    ) -> Result<Self> {
        let short = Tensor::new(inv_freq(rotary_dim, theta, scaling), device)?;
        let long = match (long_inv_freq(rotary_dim, theta, scaling), scaling) {
            (
                Some(long),
                RopeScaling::LongRope {
                    original_max_position_embeddings,
                    ..
                },
            ) => {
                let both = Tensor::stack(&[&short, &Tensor::new(long, device)?], 0)?;
                Some((both, *original_max_position_embeddings))
            }
            _ => None,
        };
        Ok(Rotary {
            inv_freq: short,
            long,
            scale: attention_factor,
        })
    }

    /// The (rotary_dim / 2) inverse frequencies of a sequence of `len` tokens.
    pub fn inv_freq(&self, len: usize) -> Result<Tensor> {
        match &self.long {
            Some((both, short_max)) if len > *short_max => both.get(1),
            _ => Ok(self.inv_freq.clone()),
        }
    }

    /// LongRoPE: the longest sequence that still takes the short table (None: one table).
    pub fn long_threshold(&self) -> Option<usize> {
        self.long.as_ref().map(|(_, short_max)| *short_max)
    }

    /// Whether this is one table for every length with cos/sin unscaled (plain or linear /
    /// Llama 3 RoPE): what fused decode paths that take one `inv_freq` can run.
    pub fn is_plain(&self) -> bool {
        self.long.is_none() && self.scale == 1.0
    }

    /// The number of rotated features per head.
    pub fn dim(&self) -> usize {
        self.inv_freq.dims1().map_or(0, |h| 2 * h)
    }

    /// cos and sin (batch, seq, rotary_dim / 2) of `positions` (batch, seq), scaled by the
    /// attention factor. `seq_lens[b]` is sequence b's length once these tokens are in (its real
    /// tokens, padding excluded): LongRoPE picks its table by it, per sequence, so a sequence
    /// gets the same cos/sin in any batch.
    pub fn cos_sin(
        &self,
        positions: &Tensor,
        seq_lens: &[usize],
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let (cos, sin) = match &self.long {
            None => cos_sin(&self.inv_freq, positions, DType::F32)?,
            Some((both, short_max)) => {
                let pick: Vec<u32> = seq_lens
                    .iter()
                    .map(|&l| u32::from(l > *short_max))
                    .collect();
                let pick = Tensor::new(pick, both.device())?;
                cos_sin(&both.index_select(&pick, 0)?, positions, DType::F32)?
            }
        };
        if self.scale == 1.0 {
            return Ok((cos.to_dtype(dtype)?, sin.to_dtype(dtype)?));
        }
        Ok((
            (cos * self.scale)?.to_dtype(dtype)?,
            (sin * self.scale)?.to_dtype(dtype)?,
        ))
    }
}

/// cos and sin of `positions[b, s] · inv_freq[i]`, each (batch, seq, head_dim / 2), computed in
/// f32 and then cast to `dtype`. `positions` is any numeric dtype; `inv_freq` is (head_dim / 2)
/// for every sequence or (batch, head_dim / 2), one set per sequence.
pub fn cos_sin(inv_freq: &Tensor, positions: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
    let (b, s) = positions.dims2()?;
    let half = inv_freq.dim(D::Minus1)?;
    let rows = if inv_freq.rank() == 2 { b } else { 1 };
    let pos = positions.to_dtype(DType::F32)?.reshape((b, s, 1))?;
    let freqs = pos.broadcast_mul(&inv_freq.to_dtype(DType::F32)?.reshape((rows, 1, half))?)?;
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

    /// transformers 5.24's Phi3RotaryEmbedding for hidden 40, 4 heads, partial_rotary_factor
    /// 0.8 (rotary dim 8), θ 10000, longrope with the factors below, original length 16 and
    /// max_position_embeddings 64 (attention factor sqrt(1 + ln 4 / ln 16)); positions [3, 15]
    /// (a 16-token sequence: short factors) and [3, 16] (17 tokens: long factors).
    #[test]
    #[allow(clippy::excessive_precision)] // transformers' values as printed
    fn longrope_matches_transformers() -> Result<()> {
        let dev = Device::Cpu;
        let scaling = RopeScaling::LongRope {
            short_factor: vec![1.0, 1.25, 1.5, 2.0],
            long_factor: vec![1.0, 3.0, 9.0, 27.0],
            original_max_position_embeddings: 16,
        };
        scaling.validate(8).expect("valid");
        let factor = RopeScaling::longrope_attention_factor(64.0 / 16.0, 16);
        let rot = Rotary::new(8, 10000.0, &scaling, factor, &dev)?;
        #[allow(clippy::type_complexity)]
        let cases: [(u32, usize, [[f32; 4]; 2], [[f32; 4]; 2]); 2] = [
            (
                15,
                16,
                [
                    [-1.2124883, 1.1896412, 1.2244999, 1.2247435],
                    [-0.9304239, 0.44379589, 1.2186263, 1.2247105],
                ],
                [
                    [0.172836, 0.29112509, 0.024493264, 0.0018371167],
                    [0.79643679, 1.1415101, 0.12227047, 0.0091855014],
                ],
            ),
            (
                16,
                17,
                [
                    [-1.2124883, 1.2186263, 1.2247381, 1.2247449],
                    [-1.1728886, 1.0546489, 1.2245514, 1.2247447],
                ],
                [
                    [0.172836, 0.12227049, 0.0040824753, 0.00013608276],
                    [-0.35260811, 0.62266839, 0.021772096, 0.00072577468],
                ],
            ),
        ];
        for (last, len, want_cos, want_sin) in cases {
            let pos = Tensor::new(&[[3u32, last]], &dev)?;
            let (cos, sin) = rot.cos_sin(&pos, &[len], DType::F32)?;
            for (got, want, name) in [(cos, want_cos, "cos"), (sin, want_sin, "sin")] {
                let got = got.squeeze(0)?.to_vec2::<f32>()?;
                for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                    assert!((g - w).abs() < 2e-6, "{name} len {len}: {g} vs {w}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn longrope_picks_the_table_per_sequence() -> Result<()> {
        let dev = Device::Cpu;
        let scaling = RopeScaling::LongRope {
            short_factor: vec![1.0, 2.0, 4.0],
            long_factor: vec![1.5, 8.0, 64.0],
            original_max_position_embeddings: 4,
        };
        let rot = Rotary::new(6, 500.0, &scaling, 1.3, &dev)?;
        let pos = Tensor::new(&[[0u32, 1, 2, 3], [0, 1, 2, 3]], &dev)?;
        // The same positions in a 4-token and a 5-token sequence: only the second is long.
        let (cos, _) = rot.cos_sin(&pos, &[4, 5], DType::F32)?;
        let (short, _) = rot.cos_sin(&pos.narrow(0, 0, 1)?, &[4], DType::F32)?;
        let (long, _) = rot.cos_sin(&pos.narrow(0, 0, 1)?, &[5], DType::F32)?;
        assert!(max_diff(&cos.narrow(0, 0, 1)?, &short)? == 0.0);
        assert!(max_diff(&cos.narrow(0, 1, 1)?, &long)? == 0.0);
        assert!(
            max_diff(&short, &long)? > 1e-3,
            "the two tables should differ"
        );

        assert_eq!(rot.long_threshold(), Some(4));
        Ok(())
    }

    #[test]
    fn longrope_factor_lists_of_the_wrong_length_are_refused() {
        let scaling = RopeScaling::LongRope {
            short_factor: vec![1.0; 6],
            long_factor: vec![1.0; 5],
            original_max_position_embeddings: 4096,
        };
        let err = scaling.validate(12).expect_err("long_factor is one short");
        assert!(
            err.contains("`long_factor` has 5 entries") && err.contains("needs 6"),
            "{err}"
        );
        let zero = RopeScaling::LongRope {
            short_factor: vec![0.0; 6],
            long_factor: vec![1.0; 6],
            original_max_position_embeddings: 4096,
        };
        assert!(zero
            .validate(12)
            .expect_err("zero")
            .contains("short_factor"));
    }
}
