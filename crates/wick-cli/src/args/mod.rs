//! Arguments shared by several subcommands.

use anyhow::Result;
use clap::Args;
use wick::candle_core::{DType, Device};

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Local directory, local file, or hub id `org/name[@revision]`.
    #[arg(long, short)]
    pub model: String,
    /// cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, f16 or bf16 (default f32; a GGUF model stays quantized unless given).
    #[arg(long)]
    pub dtype: Option<String>,
}

impl ModelArgs {
    pub fn device(&self) -> Result<Device> {
        Ok(wick::device::parse_device(&self.device)?)
    }

    /// The dtype the user asked for, if any.
    pub fn dtype(&self) -> Result<Option<DType>> {
        Ok(match &self.dtype {
            Some(d) => Some(wick::device::parse_dtype(d)?),
            None => None,
        })
    }
}
