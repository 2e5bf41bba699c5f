//! SwiGLU gate of the Llama MLP: `silu(gate) · up`.

use candle_core::{Result, Tensor};

/// Fast path: candle's fused silu (a differentiable core op on every backend) times `up`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}

/// Reference: `gate · sigmoid(gate) · up` from exp and arithmetic.
pub fn swiglu_reference(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let sigmoid = (gate.neg()?.exp()? + 1.0)?.recip()?;
    (gate * sigmoid)? * up
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn fast_matches_reference_on_odd_sizes_and_non_contiguous_input() -> Result<()> {
        let dev = Device::Cpu;
        let gate = Tensor::randn(0f32, 4.0, (3, 13, 5), &dev)?.transpose(1, 2)?;
        let up = Tensor::randn(0f32, 1.0, (3, 5, 13), &dev)?;
        let diff = (swiglu(&gate, &up)? - swiglu_reference(&gate, &up)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max abs diff {diff}");
        let half = swiglu(&gate.to_dtype(DType::BF16)?, &up.to_dtype(DType::BF16)?)?;
        assert_eq!(half.dtype(), DType::BF16);
        Ok(())
    }
}
