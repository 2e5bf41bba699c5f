//! AdamW exactly as `torch.optim.AdamW` (single-tensor path): decoupled weight decay applied to
//! the parameter before the Adam update, per-step bias correction, and torch's global-norm
//! gradient clipping (`clip_grad_norm_`).

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    /// torch's betas and eps with transformers' default weight decay of 0.
    fn default() -> Self {
        AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moments of every trainable parameter, in the parameters' order.
pub struct AdamW {
    params: AdamWParams,
    names: Vec<String>,
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates taken so far (torch's `state["step"]`).
    t: u64,
}

impl AdamW {
    /// Zero moments for `vars` (named, e.g. by their PEFT keys). Parameters must be f32.
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let mut names = Vec::with_capacity(vars.len());
        let (mut m, mut v, mut vs) = (Vec::new(), Vec::new(), Vec::new());
        for (name, var) in vars {
            if var.dtype() != DType::F32 {
                return Err(Error::InvalidArgument {
                    name: "trainable",
                    message: format!(
                        "parameter `{name}` is {:?}; trainable parameters must be f32",
                        var.dtype()
                    ),
                });
            }
            m.push(var.as_tensor().zeros_like()?);
            v.push(var.as_tensor().zeros_like()?);
            names.push(name);
            vs.push(var);
        }
        Ok(AdamW {
            params,
            names,
            vars: vs,
            m,
            v,
            t: 0,
        })
    }

    pub fn steps_taken(&self) -> u64 {
        self.t
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// One update with `grads` (one per parameter, in order) at learning rate `lr`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        if grads.len() != self.vars.len() {
            return Err(Error::InvalidArgument {
                name: "grads",
                message: format!(
                    "{} gradients for {} parameters",
                    grads.len(),
                    self.vars.len()
                ),
            });
        }
        self.t += 1;
        let AdamWParams {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.params;
        let bc1 = 1.0 - beta1.powi(self.t as i32);
        let bc2_sqrt = (1.0 - beta2.powi(self.t as i32)).sqrt();
        let step_size = lr / bc1;
        #[cfg(feature = "cuda")]
        if self.vars.first().is_some_and(|v| v.device().is_cuda()) {
            let s = crate::ops::cuda::optim::AdamWStep {
                one_minus_beta1: (1.0 - beta1) as f32,
                beta2: beta2 as f32,
                one_minus_beta2: (1.0 - beta2) as f32,
                eps: eps as f32,
                decay: (1.0 - lr * weight_decay) as f32,
                step: step_size as f32,
                inv_bc2: (1.0 / bc2_sqrt) as f32,
            };
            for (i, g) in grads.iter().enumerate() {
                let g = g.to_dtype(DType::F32)?;
                crate::ops::cuda::optim::adamw_update(
                    self.vars[i].as_tensor(),
                    &g,
                    &self.m[i],
                    &self.v[i],
                    s,
                )?;
            }
            return Ok(());
        }
        for (i, g) in grads.iter().enumerate() {
            let g = g.to_dtype(DType::F32)?;
            let p = self.vars[i].as_tensor();
            let p = if weight_decay != 0.0 {
                p.affine(1.0 - lr * weight_decay, 0.0)?
            } else {
                p.clone()
            };
            // exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
            let m = (&self.m[i] + (&g - &self.m[i])?.affine(1.0 - beta1, 0.0)?)?;
            let v = (self.v[i].affine(beta2, 0.0)? + g.sqr()?.affine(1.0 - beta2, 0.0)?)?;
            let denom = ((v.sqrt()? / bc2_sqrt)? + eps)?;
            let p = (p - (m.div(&denom)?.affine(step_size, 0.0))?)?;
            self.vars[i].set(&p)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Moments as `m.{name}` / `v.{name}` tensors (for a checkpoint).
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, name) in self.names.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
            out.insert(format!("v.{name}"), self.v[i].clone());
        }
        out
    }

    /// Restores moments written by [`AdamW::state_tensors`] and the step count.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        t: u64,
        origin: &str,
    ) -> Result<()> {
        for (i, name) in self.names.iter().enumerate() {
            for (slot, prefix) in [(&mut self.m[i], "m"), (&mut self.v[i], "v")] {
                let key = format!("{prefix}.{name}");
                let loaded = tensors.get(&key).ok_or_else(|| Error::MissingTensor {
                    name: key.clone(),
                    location: origin.to_string(),
                })?;
                if loaded.dims() != slot.dims() {
                    return Err(Error::ShapeMismatch {
                        name: key,
                        location: origin.to_string(),
                        expected: slot.dims().to_vec(),
                        actual: loaded.dims().to_vec(),
                    });
                }
                *slot = loaded.to_dtype(DType::F32)?.to_device(slot.device())?;
            }
        }
        self.t = t;
        Ok(())
    }
}

/// The global L2 norm of `grads`, as torch's `clip_grad_norm_` computes it (before clipping).
/// Each gradient's sum of squares stays on its device; one read brings them all back.
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    if grads.is_empty() {
        return Ok(0.0);
    }
    let sums = grads
        .iter()
        .map(|g| g.to_dtype(DType::F32)?.sqr()?.sum_all()?.reshape(1))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let sums = Tensor::cat(&sums, 0)?.to_vec1::<f32>()?;
    Ok(sums.iter().map(|&s| s as f64).sum::<f64>().sqrt())
}

/// torch's `clip_grad_norm_(max_norm)`: scales every gradient by `max_norm / (norm + 1e-6)`
/// when that is below 1. Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        // torch multiplies by the f32 coefficient.
        let coef = coef as f32 as f64;
        for g in grads.iter_mut() {
            *g = g.affine(coef, 0.0)?;
        }
    }
    Ok(norm)
}
