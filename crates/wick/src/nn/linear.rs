//! Dense layer `y = x·Wᵀ + b` with HF weight layout (out_features, in_features).

use candle_core::{Module, Result, Tensor};

use crate::error::Result as WickResult;
use crate::io::weights::WeightView;

#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    /// Loads `{vb}.weight` (and `{vb}.bias` when `bias`) of shape (out, in).
    pub fn load(vb: &WeightView, in_dim: usize, out_dim: usize, bias: bool) -> WickResult<Self> {
        let weight = vb.get(&[out_dim, in_dim], "weight")?;
        let bias = if bias {
            Some(vb.get(&[out_dim], "bias")?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Flatten leading dims so the matmul is one GEMM with a transposed right operand.
        let dims = x.dims();
        let Some(&in_dim) = dims.last() else {
            candle_core::bail!("Linear needs an input with at least one dimension")
        };
        let rows = x.elem_count() / in_dim;
        let y = x.reshape((rows, in_dim))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims.to_vec();
        out_dims.pop();
        out_dims.push(self.weight.dim(0)?);
        y.reshape(out_dims)
    }
}
