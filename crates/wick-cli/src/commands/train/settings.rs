//! The effective settings of a run, printed as one block on stderr before the first step: what
//! the defaults, `--config`, the flags and (on `--resume`) the checkpoint came to.

use std::fmt::Write;
use std::path::Path;

use wick::train::{DataReport, ScheduleKind, TrainConfig};

use super::LoraArgs;

/// Everything the block shows.
pub struct Settings<'a> {
    /// The model as given, and how its weights are held (`dequantized to f32`, ...).
    pub model: &'a str,
    pub base: &'a str,
    pub device: &'a str,
    pub train: (&'a Path, &'a DataReport, usize),
    pub valid: Option<(&'a Path, &'a DataReport, usize)>,
    pub batch_size: usize,
    pub config: &'a TrainConfig,
    pub total_steps: usize,
    /// Some(step) when resuming.
    pub resumed_at: Option<usize>,
    pub lora: &'a LoraArgs,
    /// What the targets resolved to in this model: its projection names and how many modules.
    pub adapted: (Vec<String>, usize),
    pub parameters: usize,
    pub max_length: usize,
    pub skip_long: bool,
    pub train_on_all: bool,
    pub out: &'a Path,
}

/// A float as a person would write it: 2e-4, 0.9, 32.
fn num(x: f64) -> String {
    if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e6) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

impl Settings<'_> {
    pub fn render(&self) -> String {
        let c = self.config;
        let mut rows: Vec<(&str, String)> = Vec::new();
        rows.push((
            "model",
            format!("{} ({}, on {})", self.model, self.base, self.device),
        ));
        let data = |(path, report, batches): (&Path, &DataReport, usize)| {
            format!("{}: {report}; {batches} batches", path.display())
        };
        let n_batches = self.train.2;
        rows.push(("data", data(self.train)));
        rows.push((
            "validation",
            match self.valid {
                Some(v) => data(v),
                None => "none (give --valid FILE or --valid-split FRACTION)".into(),
            },
        ));
        let epochs = match c.max_steps {
            None => format!("{}", c.epochs),
            Some(steps) => format!(
                "{:.2} (from --max-steps)",
                (steps * c.grad_accum) as f64 / n_batches.max(1) as f64
            ),
        };
        rows.push(("epochs", epochs));
        let steps = match self.resumed_at {
            Some(done) => format!("{} ({done} done, resuming)", self.total_steps),
            None => self.total_steps.to_string(),
        };
        rows.push(("steps", steps));
        rows.push((
            "batch",
            format!(
                "{} examples, {} batch{} per step",
                self.batch_size,
                c.grad_accum,
                if c.grad_accum == 1 { "" } else { "es" }
            ),
        ));
        let schedule = match c.schedule {
            ScheduleKind::Cosine => "cosine decay to 0",
            ScheduleKind::Linear => "linear decay to 0",
            ScheduleKind::Constant => "constant",
        };
        rows.push((
            "lr",
            format!(
                "{} peak, {schedule}, {} warmup steps",
                num(c.lr),
                c.warmup_steps
            ),
        ));
        let a = &c.adamw;
        rows.push((
            "optimizer",
            format!(
                "AdamW (betas {}, {}; eps {}; weight decay {}), gradient norm {}",
                num(a.beta1),
                num(a.beta2),
                num(a.eps),
                num(a.weight_decay),
                match c.max_grad_norm {
                    Some(n) => format!("clipped to {}", num(n)),
                    None => "not clipped".into(),
                }
            ),
        ));
        let l = self.lora;
        rows.push((
            "LoRA",
            format!(
                "rank {}, alpha {} (scale {}), dropout {}",
                l.r,
                num(l.alpha),
                num(l.alpha / l.r.max(1) as f64),
                num(l.dropout)
            ),
        ));
        let (names, modules) = &self.adapted;
        rows.push((
            "targets",
            format!(
                "{} -> {} ({modules} modules, {} trainable parameters)",
                l.targets.join(","),
                names.join(", "),
                self.parameters
            ),
        ));
        rows.push((
            "max length",
            format!(
                "{} tokens (longer examples {}); loss on {}",
                self.max_length,
                if self.skip_long {
                    "skipped"
                } else {
                    "truncated"
                },
                if self.train_on_all {
                    "every token"
                } else {
                    "completions and assistant turns"
                }
            ),
        ));
        rows.push(("seed", c.seed.to_string()));
        let every = |n: Option<usize>| match n {
            Some(n) => format!("every {n} steps and at the end"),
            None => "at the end".into(),
        };
        if self.valid.is_some() {
            rows.push(("validate", every(c.eval_every)));
        }
        rows.push(("checkpoint", every(c.save_every)));
        rows.push(("output", self.out.display().to_string()));

        let mut out = String::from("wick train settings:\n");
        for (key, value) in rows {
            let _ = writeln!(out, "  {key:<11} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_written() {
        assert_eq!(num(2e-4), "2e-4");
        assert_eq!(num(1e-8), "1e-8");
        assert_eq!(num(0.9), "0.9");
        assert_eq!(num(32.0), "32");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(0.001), "0.001");
    }
}
