//! Learning-rate schedules, as transformers' `get_*_schedule_with_warmup` (a `LambdaLR`): the
//! learning rate of optimizer step `step` (0-based) is `lr · factor(step)`, so with warmup the
//! first step runs at 0.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Linear warmup, then half a cosine period down to 0 at the last step.
    Cosine,
    /// Linear warmup, then linear decay to 0 at the last step.
    Linear,
    /// Linear warmup, then constant.
    Constant,
}

impl std::str::FromStr for ScheduleKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cosine" => Ok(Self::Cosine),
            "linear" => Ok(Self::Linear),
            "constant" | "constant_with_warmup" => Ok(Self::Constant),
            other => Err(Error::InvalidArgument {
                name: "schedule",
                message: format!("`{other}` is not one of cosine, linear, constant"),
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    /// Peak learning rate.
    pub lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl Schedule {
    /// The multiplier of the peak learning rate at 0-based optimizer step `step`.
    pub fn factor(&self, step: usize) -> f64 {
        let (step, warmup, total) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        if step < warmup {
            return step / warmup.max(1.0);
        }
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => ((total - step) / (total - warmup).max(1.0)).max(0.0),
            ScheduleKind::Cosine => {
                // num_cycles = 0.5: half a period from 1 to 0.
                let progress = (step - warmup) / (total - warmup).max(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        }
    }

    /// The learning rate of 0-based optimizer step `step`.
    pub fn lr_at(&self, step: usize) -> f64 {
        self.lr * self.factor(step)
    }
}
