//! Matmul against a quantized (GGUF block) weight, `x·Wᵀ` with W (out, in).

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Result, Tensor};

const Q5_0_BLOCK: usize = 22;
const Q8_0_BLOCK: usize = 34;

/// Prepares `w` for the device's kernels. On the CPU, candle 0.11.1 runs Q4_1/Q5_0/Q5_1 through
/// scalar dot products while Q8_0 has SIMD and repacked kernels. A Q5_0 block (`d`, 32 values
/// `d * (q - 16)` with q in 0..32) is exactly a Q8_0 block with the same `d` and the integers
/// `q - 16`, so it is transcoded losslessly. Q4_1 and Q5_1 (`d * q + m`) have no exact Q8_0
/// form; running them as stored is 20x slower, so they are re-quantized to Q8_0, which moves
/// SmolLM2-135M's Q4_1 perplexity 1.7% from llama.cpp's (an exact fast path, Q8_0 integers plus
/// a block-minimum term, is the known fix: BENCHMARKS.md).
pub fn qmatmul(w: Arc<QTensor>) -> Result<QMatMul> {
    if w.device().is_cpu() && w.dtype() == GgmlDType::Q5_0 && w.shape().elem_count() > 0 {
        let q8 = q5_0_to_q8_0(&w.data()?);
        let t = candle_core::quantized::ggml_file::qtensor_from_ggml(
            GgmlDType::Q8_0,
            &q8,
            w.shape().dims().to_vec(),
            &w.device(),
        )?;
        return QMatMul::from_qtensor(t);
    }
    let offset_type = matches!(w.dtype(), GgmlDType::Q4_1 | GgmlDType::Q5_1);
    if w.device().is_cpu() && offset_type && w.shape().dims().last().is_some_and(|k| k % 32 == 0) {
        let requantized = QTensor::quantize(&w.dequantize(&w.device())?, GgmlDType::Q8_0)?;
        return QMatMul::from_qtensor(requantized);
    }
    QMatMul::from_arc(w)
}

/// Q5_0 blocks (`d: f16`, `qh: u32` high bits, 16 bytes of low nibbles) as Q8_0 blocks.
fn q5_0_to_q8_0(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() / Q5_0_BLOCK * Q8_0_BLOCK);
    for block in bytes.chunks_exact(Q5_0_BLOCK) {
        out.extend_from_slice(&block[..2]);
        let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
        let qs = &block[6..];
        // ggml's order: byte j's low nibble is value j, its high nibble value j + 16.
        for half in 0..2 {
            for (j, &b) in qs.iter().enumerate() {
                let i = j + 16 * half;
                let low = if half == 0 { b & 0xf } else { b >> 4 };
                let high = ((qh >> i) & 1) as u8;
                out.push(((low | (high << 4)) as i8 - 16) as u8);
            }
        }
    }
    out
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
    fn q5_0_transcodes_to_q8_0_exactly() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (37, 256), &dev)?;
        let q = Arc::new(QTensor::quantize(&w, GgmlDType::Q5_0)?);
        let QMatMul::QTensor(fast) = qmatmul(q.clone())? else {
            panic!("not kept quantized")
        };
        assert_eq!(fast.dtype(), GgmlDType::Q8_0);
        let (a, b) = (fast.dequantize(&dev)?, q.dequantize(&dev)?);
        let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "Q5_0 as Q8_0: max abs diff {diff}");
        Ok(())
    }

    #[test]
    fn k_quants_run_as_stored_and_offset_types_as_q8_0() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (37, 256), &dev)?;
        for (dtype, runs_as) in [
            (GgmlDType::Q4_1, GgmlDType::Q8_0),
            (GgmlDType::Q5_1, GgmlDType::Q8_0),
            (GgmlDType::Q4K, GgmlDType::Q4K),
        ] {
            let q = Arc::new(QTensor::quantize(&w, dtype)?);
            let QMatMul::QTensor(kept) = qmatmul(q)? else {
                panic!("{dtype:?} not kept quantized")
            };
            assert_eq!(kept.dtype(), runs_as, "{dtype:?}");
        }
        let x = Tensor::randn(0f32, 1.0, (5, 256), &dev)?;
        let half = forward(
            &qmatmul(Arc::new(QTensor::quantize(&w, GgmlDType::Q8_0)?))?,
            &x.to_dtype(DType::BF16)?,
        )?;
        assert_eq!((half.dims(), half.dtype()), (&[5, 37][..], DType::BF16));
        Ok(())
    }
}
