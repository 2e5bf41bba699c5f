//! Matmul against a quantized (GGUF block) weight, `x·Wᵀ` with W (out, in).

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Result, Tensor};

/// Fast path: prepares `w` for the device's best kernel. On the CPU, candle 0.11.1 runs
/// Q4_1/Q5_0/Q5_1 through scalar dot products while Q8_0 has SIMD and repacked kernels (AVX,
/// VNNI, NEON), so those three are re-quantized once to Q8_0: an 8-bit grid over 4/5-bit
/// values, adding about 3% of one 4-bit step of error for roughly 3× faster decoding.
pub fn qmatmul(w: Arc<QTensor>) -> Result<QMatMul> {
    let slow_on_cpu = matches!(
        w.dtype(),
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
    );
    let device = w.device();
    if device.is_cpu() && slow_on_cpu && w.shape().dims().last().is_some_and(|k| k % 32 == 0) {
        let requantized = QTensor::quantize(&w.dequantize(&device)?, GgmlDType::Q8_0)?;
        return QMatMul::from_qtensor(requantized);
    }
    QMatMul::from_arc(w)
}

/// Reference: the weight run as stored.
pub fn qmatmul_reference(w: Arc<QTensor>) -> Result<QMatMul> {
    QMatMul::from_arc(w)
}

/// `x·Wᵀ` for any-rank `x` (…, in) through a prepared weight; quantized kernels take f32
/// activations on every backend, so other dtypes round-trip through f32.
pub fn forward(w: &QMatMul, x: &Tensor) -> Result<Tensor> {
    use candle_core::Module;
    let dtype = x.dtype();
    w.forward(&x.to_dtype(candle_core::DType::F32)?.contiguous()?)?
        .to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn requantized_q4_1_matches_stored_q4_1() -> Result<()> {
        let dev = Device::Cpu;
        // 37 outputs, 256 inputs (one Q4K super-block); x strided.
        let w = Tensor::randn(0f32, 1.0, (37, 256), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (256, 5), &dev)?.t()?;
        for dtype in [
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q4K,
        ] {
            let q = Arc::new(QTensor::quantize(&w, dtype)?);
            let fast = forward(&qmatmul(q.clone())?, &x)?;
            let reference = forward(&qmatmul_reference(q)?, &x)?;
            let scale = reference.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let diff = (fast - &reference)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(
                diff < 0.02 * scale,
                "{dtype:?}: max abs diff {diff} (scale {scale})"
            );
        }
        let half = forward(
            &qmatmul(Arc::new(QTensor::quantize(&w, GgmlDType::Q8_0)?))?,
            &x.to_dtype(DType::BF16)?,
        )?;
        assert_eq!((half.dims(), half.dtype()), (&[5, 37][..], DType::BF16));
        Ok(())
    }
}
