//! Device selection (`cpu`, `cuda[:N]`, `metal`) and dtype names.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// Parses a device name as given on the command line.
pub fn parse_device(spec: &str) -> Result<Device> {
    let (kind, ordinal) = match spec.split_once(':') {
        Some((k, n)) => {
            let n = n.parse::<usize>().map_err(|_| Error::InvalidArgument {
                name: "device",
                message: format!("`{spec}`: the ordinal after `:` must be a number"),
            })?;
            (k, n)
        }
        None => (spec, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda_device(ordinal),
        "metal" => metal_device(ordinal),
        _ => Err(Error::InvalidArgument {
            name: "device",
            message: format!("`{spec}` is not one of cpu, cuda[:N], metal"),
        }),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device> {
    crate::ops::cuda::open_device(ordinal)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> Result<Device> {
    Err(Error::Unsupported(
        "this wick was built without CUDA support; rebuild with `--features cuda`".into(),
    ))
}

#[cfg(feature = "metal")]
fn metal_device(ordinal: usize) -> Result<Device> {
    Ok(Device::new_metal(ordinal)?)
}

#[cfg(not(feature = "metal"))]
fn metal_device(_ordinal: usize) -> Result<Device> {
    Err(Error::Unsupported(
        "this wick was built without Metal support; rebuild with `--features metal` on macOS"
            .into(),
    ))
}

/// Parses `f32`, `f16` or `bf16`.
pub fn parse_dtype(spec: &str) -> Result<DType> {
    match spec {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => Err(Error::InvalidArgument {
            name: "dtype",
            message: format!("`{spec}` is not one of f32, f16, bf16"),
        }),
    }
}
