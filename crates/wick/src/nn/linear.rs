//! Dense layer `y = x·Wᵀ + b` with HF weight layout (out_features, in_features). The weight is a
//! float tensor or a quantized one (GGUF blocks, run by candle's `QMatMul` without dequantizing).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor};

use crate::error::Result as WickResult;
use crate::io::weights::WeightView;
use crate::ops::{self, qmatmul::qmatmul};

/// The frozen base weight of a [`Linear`].
#[derive(Clone, Debug)]
pub enum LinearWeight {
    /// (out, in) in the model's float dtype.
    Dense(Tensor),
    /// (out, in) quantized; activations go through it in f32.
    Quantized(QMatMul),
}

/// A linear layer. A LoRA adapter will sit next to `weight` as one more optional field
/// (`y += scale·(x·Aᵀ)·Bᵀ`), so the base weight stays frozen whether dense or quantized.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
}

impl Linear {
    /// A dense layer from an (out, in) weight.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            weight: LinearWeight::Dense(weight),
            bias,
        }
    }

    /// A layer over a quantized (out, in) weight, prepared by `ops::qmatmul` (which may re-block
    /// it for a faster kernel). Float "quantized" tensors (F32/F16/BF16 in a GGUF) are
    /// dequantized to `dtype` instead: a plain GEMM is faster for them.
    pub fn from_qtensor(weight: QTensor, bias: Option<Tensor>, dtype: DType) -> Result<Self> {
        let weight = match weight.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                LinearWeight::Dense(weight.dequantize(&weight.device())?.to_dtype(dtype)?)
            }
            _ => LinearWeight::Quantized(qmatmul(std::sync::Arc::new(weight))?),
        };
        Ok(Linear { weight, bias })
    }

    /// A layer over an already built weight (e.g. a quantized embedding shared with the head).
    pub fn from_weight(weight: LinearWeight, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    /// Loads `{vb}.weight` (and `{vb}.bias` when `bias`) of shape (out, in), keeping the weight
    /// quantized when the source stores it so.
    pub fn load(vb: &WeightView, in_dim: usize, out_dim: usize, bias: bool) -> WickResult<Self> {
        let bias = if bias {
            Some(vb.get(&[out_dim], "bias")?)
        } else {
            None
        };
        if let Some(q) = vb.get_quantized(&[out_dim, in_dim], "weight")? {
            return Ok(Linear::from_qtensor(q, bias, vb.dtype())?);
        }
        Ok(Linear::new(vb.get(&[out_dim, in_dim], "weight")?, bias))
    }

    /// The dense (out, in) weight; None when it is quantized.
    pub fn weight(&self) -> Option<&Tensor> {
        match &self.weight {
            LinearWeight::Dense(w) => Some(w),
            LinearWeight::Quantized(_) => None,
        }
    }

    pub fn base(&self) -> &LinearWeight {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub fn is_quantized(&self) -> bool {
        matches!(self.weight, LinearWeight::Quantized(_))
    }

    /// (out_features, in_features).
    pub fn dims(&self) -> Result<(usize, usize)> {
        match &self.weight {
            LinearWeight::Dense(w) => w.dims2(),
            LinearWeight::Quantized(QMatMul::QTensor(q)) => q.shape().dims2(),
            LinearWeight::Quantized(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => w.dims2(),
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let Some(&in_dim) = dims.last() else {
            candle_core::bail!("Linear needs an input with at least one dimension")
        };
        let (out_dim, _) = self.dims()?;
        // Flatten leading dims so the matmul is one GEMM with a transposed right operand.
        let rows = x.elem_count() / in_dim;
        let x2 = x.reshape((rows, in_dim))?;
        let y = match &self.weight {
            LinearWeight::Dense(w) => x2.matmul(&w.t()?)?,
            LinearWeight::Quantized(q) => ops::qmatmul::forward(q, &x2)?,
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims.to_vec();
        out_dims.pop();
        out_dims.push(out_dim);
        y.reshape(out_dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn quantized_q8_0_is_close_to_dense() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.5, (48, 64), &dev)?;
        let b = Tensor::randn(0f32, 0.5, 48, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 64), &dev)?;
        let dense = Linear::new(w.clone(), Some(b.clone()));
        let q = Linear::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0)?, Some(b), DType::F32)?;
        assert!(q.is_quantized() && q.weight().is_none());
        assert_eq!(q.dims()?, (48, 64));
        let (yd, yq) = (dense.forward(&x)?, q.forward(&x)?);
        assert_eq!(yq.dims(), &[2, 3, 48]);
        let scale = yd.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let diff = (yd - yq)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        // Q8_0 quantizes weights and activations to 8 bits: ~1% of the output range.
        assert!(
            diff < 0.03 * scale,
            "max abs diff {diff} for outputs up to {scale}"
        );
        Ok(())
    }

    #[test]
    fn float_qtensors_become_dense() -> Result<()> {
        let w = Tensor::randn(0f32, 1.0, (4, 32), &Device::Cpu)?;
        let l = Linear::from_qtensor(QTensor::quantize(&w, GgmlDType::F16)?, None, DType::F32)?;
        assert!(!l.is_quantized());
        Ok(())
    }
}
