//! `wick embed`: texts in, vectors out, in input order.

use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use wick::candle_core::DType;
use wick::embed::{EmbedOptions, Embedder};
use wick::io::ModelFiles;

use crate::args::ModelArgs;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// One text per line.
    Lines,
    /// One JSON object per line with a string field `text`.
    Jsonl,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One JSON array of floats per input, one per line.
    Json,
    /// A float32 NumPy array (inputs × dim), written to --out.
    Npy,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Texts to embed; when none are given, they are read from stdin.
    pub texts: Vec<String>,
    /// How stdin is read.
    #[arg(long, value_enum, default_value = "lines")]
    pub input_format: InputFormat,
    #[arg(long, value_enum, default_value = "json")]
    pub format: OutputFormat,
    /// Output file (required for npy; json goes to stdout without it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// L2-normalise vectors (default: what the model's sentence-transformers files say).
    #[arg(long, overrides_with = "no_normalize")]
    pub normalize: bool,
    #[arg(long, overrides_with = "normalize")]
    pub no_normalize: bool,
    /// Truncate inputs to this many tokens (default: the model's max_seq_length).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Text put before every input, e.g. "query: ".
    #[arg(long, conflicts_with = "prompt_name")]
    pub prefix: Option<String>,
    /// A named prompt from the model's config_sentence_transformers.json (e.g. query).
    #[arg(long)]
    pub prompt_name: Option<String>,
}

/// Progress is shown once there is more than a moment's work.
const PROGRESS_THRESHOLD: usize = 256;

pub fn run(args: EmbedArgs) -> Result<()> {
    if args.format == OutputFormat::Npy && args.out.is_none() {
        bail!("--format npy needs --out FILE");
    }
    let texts = if args.texts.is_empty() {
        read_stdin(args.input_format)?
    } else {
        args.texts.clone()
    };

    let files = ModelFiles::resolve(&args.model.model)?;
    let embedder = Embedder::load(
        &files,
        &args.model.device()?,
        args.model.dtype()?.unwrap_or(DType::F32),
        args.max_length,
    )
    .with_context(|| format!("loading model {}", files.describe()))?;

    let prefix = match &args.prompt_name {
        Some(name) => Some(embedder.prompt(name)?.to_string()),
        None => args.prefix.clone(),
    };
    let opts = EmbedOptions {
        batch_size: args.batch_size,
        normalize: match (args.normalize, args.no_normalize) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        prefix,
    };

    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut progress = make_progress(refs.len());
    let start = Instant::now();
    let vectors = embedder.embed_with_progress(&refs, &opts, |done| progress.update(done))?;
    let secs = start.elapsed().as_secs_f64();
    progress.finish();

    match args.format {
        OutputFormat::Npy => {
            let out = args.out.as_deref().context("--out is required for npy")?;
            wick::io::npy::write_f32_matrix(out, &vectors, embedder.dim())?;
        }
        OutputFormat::Json => write_json(&vectors, args.out.as_deref())?,
    }
    eprintln!(
        "embedded {} texts in {:.2}s ({:.1} texts/s, dim {})",
        vectors.len(),
        secs,
        vectors.len() as f64 / secs.max(1e-9),
        embedder.dim()
    );
    Ok(())
}

fn read_stdin(format: InputFormat) -> Result<Vec<String>> {
    let stdin = std::io::stdin();
    let mut texts = Vec::new();
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        match format {
            InputFormat::Lines => texts.push(line),
            InputFormat::Jsonl => {
                if line.trim().is_empty() {
                    continue;
                }
                texts.push(text_field(&line).with_context(|| format!("stdin line {}", i + 1))?);
            }
        }
    }
    Ok(texts)
}

fn text_field(line: &str) -> Result<String> {
    let value: serde_json::Value = serde_json::from_str(line).context("invalid JSON")?;
    match value.get("text") {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => bail!("field `text` is not a string"),
        None => bail!("missing field `text`"),
    }
}

fn write_json(vectors: &[Vec<f32>], out: Option<&std::path::Path>) -> Result<()> {
    let mut buf = Vec::new();
    for v in vectors {
        serde_json::to_writer(&mut buf, v)?;
        buf.push(b'\n');
    }
    match out {
        Some(path) => wick::io::npy::write_atomic(path, &buf)?,
        None => {
            let mut w = BufWriter::new(std::io::stdout().lock());
            w.write_all(&buf)?;
            w.flush()?;
        }
    }
    Ok(())
}

/// A bar on a terminal; plain "embedded N/M" lines every 10% when stderr is a file or pipe.
enum Progress {
    Hidden,
    Bar(ProgressBar),
    Lines { total: usize, next: usize },
}

fn make_progress(total: usize) -> Progress {
    if total < PROGRESS_THRESHOLD {
        return Progress::Hidden;
    }
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} texts {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Progress::Bar(bar)
    } else {
        Progress::Lines {
            total,
            next: total / 10,
        }
    }
}

impl Progress {
    fn update(&mut self, done: usize) {
        match self {
            Progress::Hidden => {}
            Progress::Bar(bar) => bar.set_position(done as u64),
            Progress::Lines { total, next } => {
                if done >= *next || done == *total {
                    eprintln!("embedded {done}/{total}");
                    *next = done + (*total / 10).max(1);
                }
            }
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish();
        }
    }
}
