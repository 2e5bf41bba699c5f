//! RMSNorm layer (`input_layernorm`, `post_attention_layernorm`, `norm`, `q_norm`, …).

use candle_core::{DType, Result, Tensor};

use crate::error::Result as WickResult;
use crate::io::weights::WeightView;
use crate::ops::rms_norm::rms_norm;

#[derive(Clone, Debug)]
pub struct RmsNorm {
    /// The stored weight (HF's parameter).
    weight: Tensor,
    /// What the normalized input is multiplied by: `weight`, or `offset + weight` (Gemma).
    scale: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        RmsNorm {
            scale: weight.clone(),
            weight,
            eps,
        }
    }

    /// A norm multiplying by `offset + weight` (Gemma's `1 + weight`), the sum taken in f32
    /// and rounded once to the weight's dtype.
    pub fn with_offset(weight: Tensor, eps: f64, offset: f64) -> Result<Self> {
        if offset == 0.0 {
            return Ok(RmsNorm::new(weight, eps));
        }
        let scale = (weight.to_dtype(DType::F32)? + offset)?.to_dtype(weight.dtype())?;
        Ok(RmsNorm { weight, scale, eps })
    }

    /// Loads `{vb}.weight` of shape (dim).
    pub fn load(vb: &WeightView, dim: usize, eps: f64) -> WickResult<Self> {
        Ok(RmsNorm::new(vb.get(&[dim], "weight")?, eps))
    }

    /// Loads `{vb}.weight` of shape (dim) for a norm multiplying by `offset + weight`.
    pub fn load_offset(vb: &WeightView, dim: usize, eps: f64, offset: f64) -> WickResult<Self> {
        Ok(RmsNorm::with_offset(
            vb.get(&[dim], "weight")?,
            eps,
            offset,
        )?)
    }

    /// The stored weight (without any offset).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        rms_norm(x, &self.scale, self.eps)
    }
}
