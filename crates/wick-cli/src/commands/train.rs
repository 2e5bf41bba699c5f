//! `wick train`: LoRA fine-tuning on JSONL data, with periodic validation, crash-safe
//! checkpoints, `--resume`, `OUT/metrics.jsonl` and `OUT/loss.png`.
//!
//! Every option is a flag or a key of a TOML file given with `--config` (the flag's name with
//! underscores; flags win). The options of a fresh run are written to `OUT/train.toml`, which
//! `--resume OUT` reads back, so a resumed run needs no other flags (see [`run_dir`]).

mod run_dir;
mod settings;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use wick::candle_core::DType;
use wick::generate::load::{is_gguf, load_causal_lm, LoadedLm};
use wick::io::ModelFiles;
use wick::lora::{LoraConfig, LoraLlama, TargetModules};
use wick::train::checkpoint;
use wick::train::config::{
    DEFAULT_BATCH_SIZE, DEFAULT_EVAL_EVERY, DEFAULT_LORA_ALPHA, DEFAULT_LORA_DROPOUT,
    DEFAULT_LORA_R, DEFAULT_LORA_TARGETS, DEFAULT_MAX_LENGTH, DEFAULT_SAVE_EVERY,
};
use wick::train::data::split;
use wick::train::metrics::{train_losses, valid_losses};
use wick::train::plot::write_loss_png;
use wick::train::{
    length_sorted_batches, read_jsonl_with, tokenize, AdamWParams, Batch, DataOptions, DataReport,
    Event, JsonlData, Overflow, ScheduleKind, TokenizeOptions, TrainConfig, TrainableModel,
    Trainer,
};

use crate::args::parse_seed;

/// Runs candle's elementwise ops on the calling thread unless `CANDLE_NUM_THREADS` says
/// otherwise (GEMMs stay multi-threaded). candle splits every op over ≥ 64k elements across a
/// pool whose caller spin-waits for the other threads; a training step runs thousands of such
/// ops, and on a 2-core machine with other work running a 4-step run took 75 s with the pool
/// and 30 s without. Must run before the first candle op creates the pool.
fn serial_elementwise_ops() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Safe in edition 2021; no other thread is running yet.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

#[derive(Args, Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainArgs {
    /// TOML file with any of these options (keys: flag names with underscores); flags override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Base model: local directory, GGUF file, or hub id `org/name[@revision]`.
    #[arg(long, short)]
    pub model: Option<String>,
    /// cpu, cuda[:N] or metal [default: cpu].
    #[arg(long)]
    pub device: Option<String>,
    /// Base model dtype: f32, bf16 or f16 [default: f32]; adapter weights are always f32.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Keep a GGUF base quantized (QLoRA-style): each weight is dequantized on the fly in the
    /// forward and backward pass and dropped, so the f32 base is never held in memory.
    #[arg(long, conflicts_with = "dtype")]
    pub quantized_base: bool,
    /// Training data: JSONL of {"text"}, {"prompt","completion"} or {"messages"} objects.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Validation data (same shape as --data).
    #[arg(long, value_name = "FILE", conflicts_with = "valid_split")]
    pub valid: Option<PathBuf>,
    /// Hold out this fraction of --data for validation instead (seeded by --seed).
    #[arg(long, value_name = "FRACTION")]
    pub valid_split: Option<f64>,
    /// Keys of the data's JSON objects (and messages) to skip, comma-separated (e.g. `id,source`);
    /// any other unknown key is an error.
    #[arg(long, value_name = "KEYS")]
    pub ignore_fields: Option<String>,
    /// Output directory: checkpoints, metrics.jsonl, loss.png and the final adapter. A folder
    /// that already holds a run is refused (see --overwrite); other files in it are kept.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace the run already in --out (only wick's run files: train.toml, checkpoint-N,
    /// metrics.jsonl, loss.png, the adapter files).
    #[arg(long, conflicts_with = "resume")]
    #[serde(skip)]
    pub overwrite: bool,
    /// Continue a run from its newest checkpoint that verifies (DIR: a run folder, or a
    /// checkpoint-N inside one). Reads and writes only that run folder.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Longest example in tokens [default: 1024].
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Leave out examples longer than --max-length (default: truncate them).
    #[arg(long)]
    pub skip_long: bool,
    /// Train on every token, not only completions / assistant turns.
    #[arg(long)]
    pub train_on_all: bool,
    /// Examples per batch [default: 4].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Batches per optimizer step [default: 1].
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Passes over the data [default: 3].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Optimizer steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Peak learning rate [default: 1e-3].
    #[arg(long)]
    pub lr: Option<f64>,
    /// cosine, linear or constant (each after linear warmup) [default: cosine].
    #[arg(long)]
    pub schedule: Option<String>,
    /// Warmup steps [default: 0].
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// AdamW decoupled weight decay [default: 0].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// [default: 0.9]
    #[arg(long)]
    pub adam_beta1: Option<f64>,
    /// [default: 0.999]
    #[arg(long)]
    pub adam_beta2: Option<f64>,
    /// [default: 1e-8]
    #[arg(long)]
    pub adam_eps: Option<f64>,
    /// Clip the global gradient norm to this (0: off) [default: 1.0].
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    /// Seed of the data order, the validation split and the adapter init [default: 0].
    #[arg(long, allow_negative_numbers = true, value_parser = parse_seed)]
    pub seed: Option<u64>,
    /// Visit batches in length order every epoch instead of a seeded shuffle.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Validate every N steps (and at the end) [default: 50 when there is validation data].
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Checkpoint every N steps (and at the end) [default: 100].
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Stop after this many steps with a non-finite loss or gradient [default: 10].
    #[arg(long)]
    pub max_nonfinite: Option<usize>,
    /// LoRA rank [default: 16].
    #[arg(long)]
    pub lora_r: Option<usize>,
    /// LoRA alpha; adapters are scaled by alpha / rank [default: 32].
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// LoRA dropout [default: 0].
    #[arg(long)]
    pub lora_dropout: Option<f64>,
    /// Comma-separated module names to adapt (q_proj,v_proj,...), or all-linear: every linear
    /// projection of the decoder layers, as the model names them [default: all-linear].
    #[arg(long)]
    pub lora_targets: Option<String>,
}

/// LoRA settings for [`build_trainable`].
#[derive(Debug, Clone)]
pub struct LoraArgs {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<String>,
    pub seed: u64,
}

impl TrainArgs {
    /// Flags over `base` (a TOML file's options): a flag that is set wins.
    fn over(mut self, mut base: TrainArgs) -> TrainArgs {
        macro_rules! take {
            ($($f:ident),*) => { $( self.$f = self.$f.take().or(base.$f.take()); )* };
        }
        take!(
            model,
            device,
            dtype,
            data,
            valid,
            valid_split,
            ignore_fields,
            out,
            max_length,
            batch_size,
            grad_accum,
            epochs,
            max_steps,
            lr,
            schedule,
            warmup_steps,
            weight_decay,
            adam_beta1,
            adam_beta2,
            adam_eps,
            max_grad_norm,
            seed,
            eval_every,
            save_every,
            max_nonfinite,
            lora_r,
            lora_alpha,
            lora_dropout,
            lora_targets
        );
        self.skip_long |= base.skip_long;
        self.train_on_all |= base.train_on_all;
        self.quantized_base |= base.quantized_base;
        self.no_shuffle |= base.no_shuffle;
        self
    }

    fn train_config(&self, has_valid: bool) -> Result<TrainConfig> {
        let d = TrainConfig::default();
        let a = AdamWParams::default();
        let schedule: ScheduleKind = match &self.schedule {
            Some(s) => s.parse()?,
            None => d.schedule,
        };
        let cfg = TrainConfig {
            lr: self.lr.unwrap_or(d.lr),
            schedule,
            warmup_steps: self.warmup_steps.unwrap_or(d.warmup_steps),
            epochs: self.epochs.unwrap_or(d.epochs),
            max_steps: self.max_steps,
            grad_accum: self.grad_accum.unwrap_or(d.grad_accum),
            // 0 turns clipping off.
            max_grad_norm: self
                .max_grad_norm
                .map_or(d.max_grad_norm, |n| (n != 0.0).then_some(n)),
            adamw: AdamWParams {
                beta1: self.adam_beta1.unwrap_or(a.beta1),
                beta2: self.adam_beta2.unwrap_or(a.beta2),
                eps: self.adam_eps.unwrap_or(a.eps),
                weight_decay: self.weight_decay.unwrap_or(a.weight_decay),
            },
            seed: self.seed.unwrap_or(d.seed),
            shuffle: !self.no_shuffle,
            eval_every: self.eval_every.or(has_valid.then_some(DEFAULT_EVAL_EVERY)),
            save_every: Some(self.save_every.unwrap_or(DEFAULT_SAVE_EVERY)),
            max_nonfinite: self.max_nonfinite.unwrap_or(d.max_nonfinite),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn lora(&self) -> LoraArgs {
        LoraArgs {
            r: self.lora_r.unwrap_or(DEFAULT_LORA_R),
            alpha: self.lora_alpha.unwrap_or(DEFAULT_LORA_ALPHA),
            dropout: self.lora_dropout.unwrap_or(DEFAULT_LORA_DROPOUT),
            targets: self
                .lora_targets
                .as_deref()
                .unwrap_or(DEFAULT_LORA_TARGETS)
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            seed: self.seed.unwrap_or(0),
        }
    }
}

fn read_toml(path: &Path) -> Result<TrainArgs> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message().to_string();
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .map(|l| format!(":{l}"))
            .unwrap_or_default();
        anyhow::anyhow!("{}{line}: {msg}", path.display())
    })
}

/// What LoRA targets resolved to in a model: the adapted projections' names, and how many
/// modules carry an adapter.
pub type Adapted = (Vec<String>, usize);

/// Wraps the loaded base model in fresh LoRA adapters (A from `lora.seed`, B zero) as a
/// [`TrainableModel`], with what the targets resolved to in this model (the adapted
/// projections' names and the number of modules). On resume the trainer then loads the
/// checkpoint's adapter weights.
pub fn build_trainable(
    loaded: LoadedLm,
    lora: &LoraArgs,
) -> Result<(Box<dyn TrainableModel>, Adapted)> {
    let mut config = LoraConfig::new(lora.r, lora.alpha, TargetModules::from_names(&lora.targets));
    config.lora_dropout = lora.dropout;
    config.validate()?;
    let model = LoraLlama::new(loaded.model.into_model(), config, lora.seed)?;
    let adapted = (model.params().target_names(), model.params().len());
    Ok((Box::new(model), adapted))
}

pub fn run(args: TrainArgs) -> Result<()> {
    serial_elementwise_ops();
    // Options: flags, over --config, over OUT/train.toml when resuming.
    let mut args = match args.config.clone() {
        Some(path) => {
            let base = read_toml(&path)?;
            args.over(base)
        }
        None => args,
    };
    let resume = match &args.resume {
        Some(dir) => Some(run_dir::resume_target(dir)?),
        None => None,
    };
    if let Some(target) = &resume {
        if let Some(saved) = run_dir::saved_options(&target.run)? {
            args = args.over(saved);
        }
        // A resumed run writes only into its own folder.
        if let Some(out) = &args.out {
            if !run_dir::same_dir(out, &target.run) {
                bail!(
                    "--resume {} continues the run in {}; --out {} names another folder (drop --out)",
                    args.resume.as_deref().unwrap_or(&target.run).display(),
                    target.run.display(),
                    out.display()
                );
            }
        }
        args.out = Some(target.run.clone());
    }
    let Some(model_spec) = args.model.clone() else {
        bail!("--model is required (or `model` in the --config file)");
    };
    let Some(data_path) = args.data.clone() else {
        bail!("--data is required (or `data` in the --config file)");
    };
    let Some(out) = args.out.clone() else {
        bail!("--out is required (or `out` in the --config file)");
    };
    if args.valid.is_some() && args.valid_split.is_some() {
        bail!("give either --valid or --valid-split, not both");
    }
    let device = wick::device::parse_device(args.device.as_deref().unwrap_or("cpu"))?;
    let dtype = wick::device::parse_dtype(args.dtype.as_deref().unwrap_or("f32"))?;
    let has_valid = args.valid.is_some() || args.valid_split.is_some_and(|f| f > 0.0);
    let cfg = args.train_config(has_valid)?;
    let batch_size = args.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if resume.is_none() {
        run_dir::check_out(&out, args.overwrite)?;
    }
    let resume_from = match &resume {
        Some(target) => {
            let ckpt = match &target.checkpoint {
                // Asked for by name: a bad checkpoint is an error, not a fallback.
                Some(dir) => checkpoint::read(dir, &device)?,
                None => checkpoint::newest_readable(&target.run, &device, &mut |line| {
                    eprintln!("{line}")
                })?,
            };
            if !ckpt.verified {
                eprintln!(
                    "{} has no {} (written by an older wick): loaded unverified",
                    ckpt.dir.display(),
                    checkpoint::MANIFEST_FILE
                );
            }
            Some(ckpt)
        }
        None => None,
    };

    // Data files are checked before the model is loaded.
    let data_opts = DataOptions {
        ignore_fields: args
            .ignore_fields
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    };
    let train_data = read_jsonl_with(&data_path, &data_opts)?;
    let (train_data, valid_data) = match (&args.valid, args.valid_split) {
        (Some(v), _) => (train_data, Some(read_jsonl_with(v, &data_opts)?)),
        (None, Some(f)) if f > 0.0 => {
            let (t, v) = split(train_data, f, cfg.seed)?;
            (t, Some(v))
        }
        _ => (train_data, None),
    };

    let files = ModelFiles::resolve(&model_spec)?;
    let base_dtype = match args.quantized_base {
        true if !matches!(&files, ModelFiles::File(p) if is_gguf(p)) => bail!(
            "--quantized-base needs a GGUF model; {} is not one",
            files.describe()
        ),
        true if dtype != DType::F32 => bail!("--quantized-base computes in f32; drop --dtype"),
        true => None,
        false => Some(dtype),
    };
    let loaded = load_causal_lm(&files, &device, base_dtype, None)
        .with_context(|| format!("loading model {}", files.describe()))?;
    let eos = loaded.defaults.eos_token_id.first().copied();
    let opts = TokenizeOptions {
        max_length: args.max_length.unwrap_or(DEFAULT_MAX_LENGTH),
        overflow: if args.skip_long {
            Overflow::Skip
        } else {
            Overflow::Truncate
        },
        train_on_all: args.train_on_all,
        eos_token_id: eos,
    };
    let prepare = |data: &JsonlData| -> Result<(Vec<Batch>, DataReport)> {
        let (examples, report) = tokenize(
            data,
            &loaded.tokenizer,
            loaded.chat_template.as_ref(),
            &opts,
        )?;
        let batches = length_sorted_batches(&examples, batch_size, eos.unwrap_or(0));
        Ok((batches, report))
    };
    let (train, train_report) = prepare(&train_data)?;
    let (valid, valid_report) = match &valid_data {
        Some(v) => {
            let (batches, report) = prepare(v)?;
            (batches, Some(report))
        }
        None => (Vec::new(), None),
    };
    let base = match (args.quantized_base, is_gguf_files(&files)) {
        (true, _) => "kept quantized, dequantized on use".to_string(),
        (false, true) => format!("dequantized to {}", dtype.as_str()),
        (false, false) => format!("in {}", dtype.as_str()),
    };
    let (n_train, n_valid) = (train.len(), valid.len());

    let lora = args.lora();
    let (model, adapted) = build_trainable(loaded, &lora)?;
    let parameters: usize = model
        .trainable()
        .iter()
        .map(|(_, v)| v.as_tensor().elem_count())
        .sum();
    if args.overwrite {
        run_dir::clear_run(&out)?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut trainer = match resume_from {
        Some(ckpt) => {
            eprintln!("resuming from {}", ckpt.dir.display());
            Trainer::from_checkpoint(model.as_ref(), cfg, train, valid, ckpt)?
        }
        None => {
            run_dir::save_options(&args, &out)?;
            Trainer::new(model.as_ref(), cfg, train, valid)?
        }
    };
    let state = trainer.state();
    let block = settings::Settings {
        model: &files.describe(),
        base: &base,
        device: args.device.as_deref().unwrap_or("cpu"),
        train: (&train_data.path, &train_report, n_train),
        valid: valid_data
            .as_ref()
            .zip(valid_report.as_ref())
            .map(|(d, r)| (d.path.as_path(), r, n_valid)),
        batch_size,
        // On resume the numbers come from the checkpoint.
        config: &state.config,
        total_steps: state.total_steps,
        resumed_at: resume.as_ref().map(|_| state.step),
        lora: &lora,
        adapted,
        parameters,
        max_length: opts.max_length,
        skip_long: args.skip_long,
        train_on_all: args.train_on_all,
        out: &out,
    };
    eprint!("{}", block.render());
    let mut progress = Progress::new(trainer.state().step, trainer.state().total_steps);
    let result = trainer.run(Some(&out), &mut |event| progress.event(event));
    progress.finish();
    let history = &trainer.state().history;
    write_loss_png(
        &out.join("loss.png"),
        &format!("LoRA loss: {}", model_name(&model_spec)),
        &train_losses(history),
        &valid_losses(history),
    )?;
    result?;
    let last = |v: Vec<(usize, f64)>| {
        v.last()
            .map(|(_, l)| format!("{l:.4}"))
            .unwrap_or_else(|| "-".into())
    };
    eprintln!(
        "done: {} steps, train loss {}, validation loss {}; adapter, metrics.jsonl and loss.png in {}",
        trainer.state().step,
        last(train_losses(history)),
        last(valid_losses(history)),
        out.display()
    );
    Ok(())
}

/// A progress bar on a terminal, a plain line every few steps otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    start: Instant,
    tokens: u64,
    total: usize,
}

impl Progress {
    fn new(done: usize, total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("step {pos}/{len} [{bar:30}] {msg} eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_position(done as u64);
            bar.reset_eta();
            bar
        });
        Progress {
            bar,
            start: Instant::now(),
            tokens: 0,
            total,
        }
    }

    fn event(&mut self, event: &Event) {
        match event {
            Event::Step(r) => {
                self.tokens += r.tokens as u64;
                let rate = self.tokens as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
                let msg = if r.skipped {
                    format!("loss non-finite (skipped) lr {:.2e} {rate:.0} tok/s", r.lr)
                } else {
                    format!("loss {:.4} lr {:.2e} {rate:.0} tok/s", r.loss, r.lr)
                };
                match &self.bar {
                    Some(bar) => {
                        bar.set_position(r.step as u64);
                        bar.set_message(msg);
                    }
                    None if r.step % 10 == 0 || r.step == self.total || r.skipped => {
                        eprintln!("step {}/{}: {msg}", r.step, self.total)
                    }
                    None => {}
                }
            }
            Event::Valid { step, loss, tokens } => self.println(format!(
                "step {step}: validation loss {loss:.4} ({tokens} tokens)"
            )),
            Event::Checkpoint(path) => self.println(format!("saved {}", path.display())),
        }
    }

    fn println(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The model as a plot title names it: a local path's last component, a hub id as given.
fn model_name(spec: &str) -> String {
    let path = Path::new(spec);
    match path.file_name() {
        Some(name) if path.exists() => name.to_string_lossy().into_owned(),
        _ => spec.to_string(),
    }
}

fn is_gguf_files(files: &ModelFiles) -> bool {
    matches!(files, ModelFiles::File(p) if is_gguf(p))
}
