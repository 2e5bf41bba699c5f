//! `wick merge`: bake a PEFT LoRA adapter into its base model and write a Hugging Face model
//! directory (model.safetensors, config.json, tokenizer files) that transformers loads.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use wick::candle_core::DType;
use wick::io::ModelFiles;

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Base model: local directory, GGUF file (dequantized), or hub id `org/name[@revision]`.
    #[arg(long, short)]
    pub model: String,
    /// The PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Output directory; written as OUT.tmp and renamed when complete.
    #[arg(long, value_name = "OUT")]
    pub out: PathBuf,
    /// dtype of the written weights: f32, f16 or bf16 (the merge itself runs in f32).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Replace OUT when it exists and is not empty.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: MergeArgs) -> Result<()> {
    // Cheap checks first, before the model is read.
    let dtype: DType = wick::device::parse_dtype(&args.dtype)?;
    let config = args.adapter.join(wick::lora::CONFIG_FILE);
    if !config.is_file() {
        bail!(
            "--adapter {}: no {} there (expected a PEFT LoRA adapter directory)",
            args.adapter.display(),
            wick::lora::CONFIG_FILE
        );
    }
    let files = ModelFiles::resolve(&args.model)?;
    let report = wick::lora::merge_to_dir(&files, &args.adapter, &args.out, dtype, args.force)
        .with_context(|| {
            format!(
                "merging {} into {}",
                args.adapter.display(),
                files.describe()
            )
        })?;
    let extra = if report.extra_files.is_empty() {
        "no tokenizer files found to copy".to_string()
    } else {
        report.extra_files.join(", ")
    };
    eprintln!(
        "merged {} adapted modules; wrote {} ({} tensors, {:?}; {extra})",
        report.adapted_modules,
        report.out.display(),
        report.tensors,
        dtype
    );
    Ok(())
}
