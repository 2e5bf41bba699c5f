//! The op layer: each hot op has a fast path (`op`) that dispatches per device, and a
//! `op_reference` built from candle primitives that is the spec and the fallback.

pub mod attention;
pub mod cross_entropy;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod decode;
pub mod elementwise;
pub mod frozen_matmul;
pub mod grad;
pub mod layer_norm;
pub mod linear;
pub mod qmatmul;
pub mod quant_cpu;
pub mod rms_norm;
pub mod rope;
pub mod softmax;
pub mod swiglu;

#[cfg(test)]
mod test_util;
