//! Attaching LoRA adapters to a model's projections, and merging them into the base weights.

use std::collections::BTreeSet;
use std::sync::Arc;

use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::lora::config::LoraConfig;
use crate::models::DecoderModel;
use crate::nn::linear::{LoraAdapter, LoraMode};

/// One adapted module: its path (`model.layers.0.self_attn.q_proj`) and its A (r, in) and
/// B (out, r) weights, shared with the adapter inside the model.
#[derive(Clone, Debug)]
pub struct LoraModule {
    pub path: String,
    pub a: Var,
    pub b: Var,
}

/// The trainable side of a model's adapters: one [`LoraModule`] per adapted projection, in
/// model order, and the switches they share (training mode for dropout, gradient tracking).
/// Updating a `Var` here (an optimizer step) updates the model.
#[derive(Clone, Debug)]
pub struct LoraParams {
    modules: Vec<LoraModule>,
    mode: Arc<LoraMode>,
}

/// PEFT's key for a module's `lora_A` / `lora_B` weight (`which` is 'A' or 'B'):
/// `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`.
pub fn peft_key(path: &str, which: char) -> String {
    format!("base_model.model.{path}.lora_{which}.weight")
}

impl LoraParams {
    pub fn modules(&self) -> &[LoraModule] {
        &self.modules
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Every trainable variable: A then B of each module, in model order.
    pub fn vars(&self) -> Vec<Var> {
        self.modules
            .iter()
            .flat_map(|m| [m.a.clone(), m.b.clone()])
            .collect()
    }

    /// Every trainable variable under its PEFT key, in the order of [`LoraParams::vars`].
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.modules
            .iter()
            .flat_map(|m| {
                [
                    (peft_key(&m.path, 'A'), m.a.clone()),
                    (peft_key(&m.path, 'B'), m.b.clone()),
                ]
            })
            .collect()
    }

    /// Training mode: dropout on (when the config has any). Off after `apply` / `load_adapter`.
    pub fn set_training(&self, on: bool) {
        self.mode.set_training(on);
    }

    /// `Some(seed)`: training mode with dropout masks drawn afresh from `seed` (one per step
    /// makes a resumed run draw the same masks); `None`: dropout off (evaluation).
    pub fn set_dropout_seed(&self, seed: Option<u64>) {
        self.mode.set_dropout_seed(seed);
    }

    /// With gradients off, adapters run as constants (generation); on after `apply`.
    pub fn set_requires_grad(&self, on: bool) {
        self.mode.set_requires_grad(on);
    }

    /// The short names of the adapted modules (`q_proj`, ...), sorted: the `target_modules`
    /// to record in a saved config.
    pub fn target_names(&self) -> Vec<String> {
        let names: BTreeSet<&str> = self
            .modules
            .iter()
            .filter_map(|m| m.path.rsplit('.').next())
            .collect();
        names.into_iter().map(String::from).collect()
    }
}

/// A module the config targets, found in the model.
pub(crate) struct Planned {
    pub index: usize,
    pub path: String,
    pub in_dim: usize,
    pub out_dim: usize,
}

fn matches(path: &str, target: &str) -> bool {
    path == target
        || path
            .strip_suffix(target)
            .is_some_and(|head| head.ends_with('.'))
}

/// The modules `cfg` targets, each checked: every target name matches some module, the rank
/// fits every targeted layer, and no targeted layer already carries an adapter. Nothing is
/// changed on error.
pub(crate) fn plan(model: &DecoderModel, cfg: &LoraConfig) -> Result<Vec<Planned>> {
    cfg.validate()?;
    let projections = model.projections();
    let names = model.projection_names();
    let targets = cfg.target_names(&names);
    for t in &targets {
        if !projections.iter().any(|(path, _)| matches(path, t)) {
            return Err(Error::InvalidArgument {
                name: "target_modules",
                message: format!(
                    "`{t}` matches no module of this model (its LoRA targets: {}, or all-linear)",
                    names.join(", ")
                ),
            });
        }
    }
    let mut planned = Vec::new();
    for (index, (path, linear)) in projections.iter().enumerate() {
        if !targets.iter().any(|t| matches(path, t)) {
            continue;
        }
        let (out_dim, in_dim) = linear.dims()?;
        if cfg.r > in_dim.min(out_dim) {
            return Err(Error::InvalidArgument {
                name: "r",
                message: format!(
                    "rank {} is larger than {path} ({in_dim} in, {out_dim} out) allows: at \
                     most {}",
                    cfg.r,
                    in_dim.min(out_dim)
                ),
            });
        }
        if linear.lora().is_some() {
            return Err(Error::InvalidArgument {
                name: "model",
                message: format!("{path} already carries a LoRA adapter"),
            });
        }
        planned.push(Planned {
            index,
            path: path.clone(),
            in_dim,
            out_dim,
        });
    }
    Ok(planned)
}

/// Attaches one adapter per planned module with the given (A, B) f32 tensors.
pub(crate) fn attach(
    model: &mut DecoderModel,
    cfg: &LoraConfig,
    seed: u64,
    planned: Vec<Planned>,
    weights: Vec<(Tensor, Tensor)>,
) -> Result<LoraParams> {
    let mode = Arc::new(LoraMode::new(seed));
    let mut projections = model.projections_mut();
    let mut modules = Vec::with_capacity(planned.len());
    for (p, (a, b)) in planned.into_iter().zip(weights) {
        let (a, b) = (Var::from_tensor(&a)?, Var::from_tensor(&b)?);
        let adapter = LoraAdapter::new(
            a.clone(),
            b.clone(),
            cfg.scaling(),
            cfg.lora_dropout as f32,
            mode.clone(),
        );
        let Some((_, linear)) = projections.get_mut(p.index) else {
            return Err(Error::Unsupported(format!("internal: {} moved", p.path)));
        };
        linear.set_lora(adapter)?;
        modules.push(LoraModule { path: p.path, a, b });
    }
    Ok(LoraParams { modules, mode })
}

/// Attaches fresh adapters to every projection `cfg` targets: A Kaiming-uniform as PEFT draws
/// it (`kaiming_uniform_(a=√5)`, bound 1/√in), B zero, so the model's output is unchanged until
/// B moves. Draws come from ChaCha8 seeded with `seed`; dropout draws use `seed` too.
/// Errors, before anything is attached, for a target the model lacks or a rank too large.
pub fn apply(model: &mut DecoderModel, cfg: &LoraConfig, seed: u64) -> Result<LoraParams> {
    let planned = plan(model, cfg)?;
    let device = model.device().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut weights = Vec::with_capacity(planned.len());
    for p in &planned {
        let bound = 1.0 / (p.in_dim as f32).sqrt();
        let a: Vec<f32> = (0..cfg.r * p.in_dim)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let a = Tensor::from_vec(a, (cfg.r, p.in_dim), &device)?;
        let b = Tensor::zeros((p.out_dim, cfg.r), DType::F32, &device)?;
        weights.push((a, b));
    }
    attach(model, cfg, seed.wrapping_add(1), planned, weights)
}

/// Adds every adapter into its (dense) base weight; forwards then cost nothing extra.
/// Errors for a quantized base (load with a float dtype to merge).
pub fn merge(model: &mut DecoderModel) -> Result<()> {
    for (path, linear) in model.projections_mut() {
        linear.merge_lora().map_err(|e| match e {
            Error::Unsupported(m) => Error::Unsupported(format!("{path}: {m}")),
            other => other,
        })?;
    }
    Ok(())
}

/// Undoes [`merge`]: subtracts every merged adapter from its base weight.
pub fn unmerge(model: &mut DecoderModel) -> Result<()> {
    for (_, linear) in model.projections_mut() {
        linear.unmerge_lora()?;
    }
    Ok(())
}

/// Takes every adapter off the model (unmerging merged ones), leaving the base model.
pub fn remove(model: &mut DecoderModel) -> Result<()> {
    for (_, linear) in model.projections_mut() {
        linear.take_lora()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn targets_match_whole_names_or_dotted_suffixes() {
        let path = "model.layers.0.self_attn.q_proj";
        assert!(matches(path, "q_proj"));
        assert!(matches(path, "self_attn.q_proj"));
        assert!(matches(path, path));
        assert!(!matches(path, "proj"));
        assert!(!matches(path, "_proj"));
        assert!(!matches("model.layers.0.mlp.up_proj", "p_proj"));
    }
}
