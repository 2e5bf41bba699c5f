//! Times `Embedder::embed` over a JSON list of texts; driven by `bench/embed_cpu.py`.
//!
//! ```text
//! embed_bench --model DIR --texts FILE.json --batch-size N --warmup W --runs R [--vectors-out F.npy]
//! ```
//! Prints one JSON line: `{"batch_size","n_texts","runs_s","median_s","docs_per_s"}`. Only the
//! `embed` calls are timed (not process start, model load or file I/O), matching how the
//! harness times sentence-transformers in-process.

use std::error::Error;

// Model inference allocates and frees large activation buffers every layer; glibc malloc returns
// them to the OS and page-faults them back in each time, mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::time::Instant;

use wick::candle_core::{DType, Device};
use wick::embed::{EmbedOptions, Embedder};
use wick::io::ModelFiles;

struct Args {
    model: String,
    texts: PathBuf,
    batch_size: usize,
    warmup: usize,
    runs: usize,
    vectors_out: Option<PathBuf>,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut model = None;
    let mut texts = None;
    let (mut batch_size, mut warmup, mut runs) = (32, 1, 5);
    let mut vectors_out = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model = Some(value()?),
            "--texts" => texts = Some(PathBuf::from(value()?)),
            "--batch-size" => batch_size = value()?.parse()?,
            "--warmup" => warmup = value()?.parse()?,
            "--runs" => runs = value()?.parse()?,
            "--vectors-out" => vectors_out = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(Args {
        model: model.ok_or("--model is required")?,
        texts: texts.ok_or("--texts is required")?,
        batch_size,
        warmup,
        runs,
        vectors_out,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let owned: Vec<String> = serde_json::from_str(&std::fs::read_to_string(&args.texts)?)?;
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();

    let files = ModelFiles::resolve(&args.model)?;
    let embedder = Embedder::load(&files, &Device::Cpu, DType::F32, None)?;
    let opts = EmbedOptions {
        batch_size: args.batch_size,
        normalize: None,
        prefix: None,
    };

    let mut vectors = Vec::new();
    for _ in 0..args.warmup {
        vectors = embedder.embed(&texts, &opts)?;
    }
    let mut runs_s = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let start = Instant::now();
        vectors = embedder.embed(&texts, &opts)?;
        runs_s.push(start.elapsed().as_secs_f64());
    }

    let mut sorted = runs_s.clone();
    sorted.sort_by(f64::total_cmp);
    // Middle element, or the mean of the two middle ones for an even count.
    let n = sorted.len();
    let median_s = (sorted[(n - 1) / 2] + sorted[n / 2]) / 2.0;
    let line = serde_json::json!({
        "batch_size": args.batch_size,
        "n_texts": texts.len(),
        "runs_s": runs_s,
        "median_s": median_s,
        "docs_per_s": texts.len() as f64 / median_s,
    });
    println!("{line}");

    if let Some(path) = &args.vectors_out {
        wick::io::npy::write_f32_matrix(path, &vectors, embedder.dim())?;
    }
    Ok(())
}
