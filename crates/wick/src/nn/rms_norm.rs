//! RMSNorm layer (`input_layernorm`, `post_attention_layernorm`, `norm`).

use candle_core::{Result, Tensor};

use crate::error::Result as WickResult;
use crate::io::weights::WeightView;
use crate::ops::rms_norm::rms_norm;

#[derive(Clone, Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        RmsNorm { weight, eps }
    }

    /// Loads `{vb}.weight` of shape (dim).
    pub fn load(vb: &WeightView, dim: usize, eps: f64) -> WickResult<Self> {
        Ok(RmsNorm::new(vb.get(&[dim], "weight")?, eps))
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        rms_norm(x, &self.weight, self.eps)
    }
}
