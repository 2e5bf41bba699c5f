//! `wick perplexity`: the perplexity of a text file by llama.cpp's method (see
//! `wick::generate::perplexity`), printed as llama-perplexity prints it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use wick::candle_core::Tensor;
use wick::generate::load::load_causal_lm;
use wick::generate::perplexity::perplexity;
use wick::io::ModelFiles;

use crate::args::ModelArgs;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to score (UTF-8), tokenized whole.
    #[arg(long, short, value_name = "TEXT")]
    pub file: PathBuf,
    /// Tokens per chunk; the second half of each is scored (llama-perplexity's -c, default 512).
    #[arg(long, short = 'c', alias = "ctx-size", default_value_t = 512)]
    pub ctx: usize,
    /// A PEFT LoRA adapter directory to score with.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
}

pub fn run(args: PerplexityArgs) -> Result<()> {
    let device = args.model.device()?;
    let dtype = args.model.dtype()?;
    let text = read_text(&args.file)?;
    if let Some(dir) = &args.adapter {
        let config = dir.join(wick::lora::CONFIG_FILE);
        if !config.is_file() {
            bail!(
                "--adapter {}: no {} there (expected a PEFT LoRA adapter directory)",
                dir.display(),
                wick::lora::CONFIG_FILE
            );
        }
    }
    let files = ModelFiles::resolve(&args.model.model)?;
    let loaded = load_causal_lm(&files, &device, dtype, args.adapter.as_deref())
        .with_context(|| format!("loading model {}", files.describe()))?;
    let tokens = loaded
        .tokenizer
        .encode(text.as_str(), true)
        .map_err(|e| anyhow::anyhow!("tokenizing {}: {e}", args.file.display()))?
        .get_ids()
        .to_vec();
    // As llama.cpp: a BOS opens each chunk when the tokenizer puts one first.
    let bos = loaded
        .defaults
        .bos_token_id
        .filter(|b| tokens.first() == Some(b));
    let model = loaded.model.model();
    let limit = model.config().max_position_embeddings;
    if args.ctx > limit {
        bail!(
            "--ctx {} exceeds the model's context length {limit}",
            args.ctx
        );
    }
    eprintln!(
        "{}: {} tokens, {} chunks of {} (BOS first: {})",
        args.file.display(),
        tokens.len(),
        tokens.len() / args.ctx,
        args.ctx,
        if bos.is_some() { "yes" } else { "no" }
    );
    let start = Instant::now();
    let result = perplexity(
        &tokens,
        args.ctx,
        bos,
        |chunk| {
            let ids = Tensor::new(chunk, &device)?.unsqueeze(0)?;
            model.forward_uncached(&ids, None)
        },
        |i, ppl| eprint!("[{}]{ppl:.4},", i + 1),
    )
    .with_context(|| format!("scoring {}", args.file.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let evaluated = result.chunks * args.ctx;
    eprintln!(
        "\n{} tokens evaluated in {secs:.2} s ({:.1} tok/s), {} scored",
        evaluated,
        evaluated as f64 / secs.max(1e-9),
        result.scored
    );
    println!("{result}");
    Ok(())
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}
