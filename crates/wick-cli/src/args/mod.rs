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

/// `--seed`'s parser. The flag also takes negative numbers (`allow_negative_numbers`), so that
/// `--seed -1` reaches this message instead of clap's tip about `--`.
pub fn parse_seed(text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("--seed must be a non-negative integer below 2^64 (got {text})"))
}
