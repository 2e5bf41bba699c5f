//! Token embedding table (vocab, hidden), float or quantized, that can double as a tied LM head.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Result, Tensor};

use super::linear::{Linear, LinearWeight};
use crate::error::Result as WickResult;
use crate::io::weights::WeightView;
use crate::ops::qmatmul::qmatmul;

#[derive(Clone, Debug)]
pub enum Embedding {
    Dense(Tensor),
    /// Rows are dequantized on lookup; `dtype` is what lookups return.
    Quantized {
        table: Arc<QTensor>,
        dtype: DType,
    },
}

impl Embedding {
    /// Loads `{vb}.weight` of shape (vocab, hidden), quantized when the source keeps it so.
    pub fn load(vb: &WeightView, vocab: usize, hidden: usize) -> WickResult<Self> {
        if let Some(q) = vb.get_quantized(&[vocab, hidden], "weight")? {
            if !matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) {
                return Ok(Embedding::Quantized {
                    table: Arc::new(q),
                    dtype: vb.dtype(),
                });
            }
            let w = q.dequantize(vb.device())?.to_dtype(vb.dtype())?;
            return Ok(Embedding::Dense(w));
        }
        Ok(Embedding::Dense(vb.get(&[vocab, hidden], "weight")?))
    }

    /// (ids dims..., hidden) for integer `ids`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Embedding::Dense(w) => {
                let mut dims = ids.dims().to_vec();
                dims.push(w.dim(1)?);
                w.index_select(&ids.flatten_all()?, 0)?.reshape(dims)
            }
            Embedding::Quantized { table, dtype } => table.embedding(ids)?.to_dtype(*dtype),
        }
    }

    /// The same table as an LM head (`tie_word_embeddings`), sharing the storage.
    pub fn as_linear(&self) -> Result<Linear> {
        Ok(match self {
            Embedding::Dense(w) => Linear::new(w.clone(), None),
            Embedding::Quantized { table, .. } => {
                Linear::from_weight(LinearWeight::Quantized(qmatmul(table.clone())?), None)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    #[test]
    fn quantized_lookup_and_tied_head_match_dense() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (10, 32), &dev)?;
        let dense = Embedding::Dense(w.clone());
        let quant = Embedding::Quantized {
            table: Arc::new(QTensor::quantize(&w, GgmlDType::Q8_0)?),
            dtype: DType::F32,
        };
        let ids = Tensor::new(&[[1u32, 7, 3], [0, 9, 9]], &dev)?;
        let (a, b) = (dense.forward(&ids)?, quant.forward(&ids)?);
        assert_eq!(a.dims(), &[2, 3, 32]);
        let diff = (a.clone() - b)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 0.05, "lookup max abs diff {diff}");
        let (ha, hb) = (
            dense.as_linear()?.forward(&a)?,
            quant.as_linear()?.forward(&a)?,
        );
        let diff = (ha - hb)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 0.5, "head max abs diff {diff}");
        Ok(())
    }
}
