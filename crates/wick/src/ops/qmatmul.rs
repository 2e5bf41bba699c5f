//! Matmul against a quantized (GGUF block) weight, `x·Wᵀ` with W (out, in).

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Result, Tensor};

use crate::ops::frozen_matmul::FrozenWeight;
use crate::ops::quant_cpu::{PackedWeight, GGUF_TYPES};

/// A quantized (out, in) weight prepared for the device's kernels.
#[derive(Clone, Debug)]
pub enum QWeight {
    /// candle's kernels: every GPU, and the CPU types wick has no kernel of its own for.
    Candle(QMatMul),
    /// wick's CPU kernels ([`quant_cpu`](crate::ops::quant_cpu)) on a repacked copy; `stored` is the tensor as loaded
    /// (for dequantizing: training, merging, exporting).
    Cpu {
        packed: Arc<PackedWeight>,
        stored: Arc<QTensor>,
    },
}

/// Prepares `w` for the device's kernels: on the CPU, wick's own kernels for the types in
/// [`GGUF_TYPES`]; candle's for the other types and on every GPU.
pub fn qmatmul(w: Arc<QTensor>) -> Result<QWeight> {
    let dims = w.shape().dims2().ok().filter(|_| w.device().is_cpu());
    let packed = match dims {
        Some((n, k)) if GGUF_TYPES.contains(&w.dtype()) => {
            PackedWeight::from_gguf(w.dtype(), &w.data()?, n, k)
        }
        _ => None,
    };
    Ok(match packed {
        Some(packed) => QWeight::Cpu {
            packed: Arc::new(packed),
            stored: w,
        },
        None => QWeight::Candle(QMatMul::from_arc(w)?),
    })
}

impl QWeight {
    /// (out, in).
    pub fn dims(&self) -> Result<(usize, usize)> {
        match self {
            QWeight::Candle(QMatMul::QTensor(q)) => q.shape().dims2(),
            QWeight::Candle(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => w.dims2(),
            QWeight::Cpu { packed, .. } => Ok(packed.dims()),
        }
    }

    /// The weight as a float (out, in) tensor.
    pub fn dequantize(&self) -> Result<Tensor> {
        match self {
            QWeight::Candle(QMatMul::QTensor(q)) | QWeight::Cpu { stored: q, .. } => {
                q.dequantize(&q.device())
            }
            QWeight::Candle(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => Ok(w.clone()),
        }
    }

    /// The same weight for [`frozen_matmul`](crate::ops::frozen_matmul), which dequantizes.
    pub fn frozen(&self) -> FrozenWeight {
        match self {
            QWeight::Candle(QMatMul::QTensor(q)) | QWeight::Cpu { stored: q, .. } => {
                FrozenWeight::Quantized(q.clone())
            }
            QWeight::Candle(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => {
                FrozenWeight::Dense(w.clone())
            }
        }
    }
}

/// `x·Wᵀ` for any-rank `x` (…, in) through a prepared weight; quantized kernels take f32
/// activations on every backend, so other dtypes round-trip through f32.
pub fn forward(w: &QWeight, x: &Tensor) -> Result<Tensor> {
    use candle_core::Module;
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?.contiguous()?;
    let y = match w {
        QWeight::Candle(q) => q.forward(&x32)?,
        QWeight::Cpu { packed, .. } => {
            let (n, k) = packed.dims();
            let mut dims = x32.dims().to_vec();
            match dims.last_mut() {
                Some(last) if *last == k => *last = n,
                _ => candle_core::bail!(
                    "quantized matmul: input {:?} for a ({n}, {k}) weight",
                    x32.dims()
                ),
            }
            let y = {
                let (storage, layout) = x32.storage_and_layout();
                let candle_core::Storage::Cpu(cpu) = &*storage else {
                    candle_core::bail!("quantized matmul: a CPU weight with a non-CPU input")
                };
                let xs = &cpu.as_slice::<f32>()?[layout.start_offset()..][..x32.elem_count()];
                packed.matmul(xs)
            };
            Tensor::from_vec(y, dims, &Device::Cpu)?
        }
    };
    y.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::quant_cpu::Format;
    use candle_core::quantized::GgmlDType;

    #[test]
    fn each_type_runs_on_the_expected_kernel() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (37, 256), &dev)?;
        for (dtype, wick_kernel) in [
            (GgmlDType::Q4_1, Some(Format::Q4_1)),
            (GgmlDType::Q8_0, Some(Format::Q8_0)),
            (GgmlDType::Q4_0, Some(Format::Q4_0)),
            (GgmlDType::Q5_0, Some(Format::Q5_0)),
            (GgmlDType::Q5_1, Some(Format::Q5_1)),
            (GgmlDType::Q4K, Some(Format::Q4_1)),
            (GgmlDType::Q6K, Some(Format::Q8Halves)),
            (GgmlDType::Q5K, None),
        ] {
            let q = Arc::new(QTensor::quantize(&w, dtype)?);
            match (qmatmul(q)?, wick_kernel) {
                (QWeight::Cpu { packed, stored }, Some(f)) => {
                    assert_eq!((packed.format(), stored.dtype()), (f, dtype))
                }
                (QWeight::Candle(QMatMul::QTensor(kept)), None) => assert_eq!(kept.dtype(), dtype),
                (other, _) => panic!("{dtype:?} prepared as {other:?}"),
            }
        }
        Ok(())
    }

    /// wick's Q4_1 kernel through `forward`: any-rank input, bf16 in and out, and the same
    /// product as candle's own (scalar, Q8_1-activation) Q4_1 kernel.
    #[test]
    fn q4_1_forward_matches_candles_kernel() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (37, 256), &dev)?;
        let q = Arc::new(QTensor::quantize(&w, GgmlDType::Q4_1)?);
        let x = Tensor::randn(0f32, 1.0, (2, 3, 256), &dev)?;
        let ours = forward(&qmatmul(q.clone())?, &x)?;
        let candles = forward(&QWeight::Candle(QMatMul::from_arc(q)?), &x)?;
        assert_eq!(ours.dims(), &[2, 3, 37]);
        let scale = candles.abs()?.max_all()?.to_scalar::<f32>()?;
        let diff = (ours - &candles)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            diff / scale < 1e-2,
            "wick vs candle Q4_1: max abs {diff}, scale {scale}"
        );
        let half = forward(
            &qmatmul(Arc::new(QTensor::quantize(&w, GgmlDType::Q4_1)?))?,
            &x.to_dtype(DType::BF16)?,
        )?;
        assert_eq!((half.dims(), half.dtype()), (&[2, 3, 37][..], DType::BF16));
        Ok(())
    }
}
