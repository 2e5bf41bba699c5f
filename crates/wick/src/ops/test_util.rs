//! Helpers shared by the op conformance tests.

use candle_core::{DType, Result, Tensor};

/// Largest absolute elementwise difference, compared in f32.
pub fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()
}
