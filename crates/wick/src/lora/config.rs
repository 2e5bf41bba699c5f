//! `adapter_config.json`: a serde mirror of PEFT's `LoraConfig`. Unknown keys are ignored on
//! read; settings wick does not implement (DoRA, bias training, fan-in-fan-out layout, per-layer
//! rank patterns, extra trainable modules) are rejected with a clear error rather than ignored.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::io::json::read_json;

/// PEFT's `target_modules`: module names matched as a whole name or a dotted suffix of a
/// module path (`q_proj`, `self_attn.q_proj`), or the string `all-linear` (every projection of
/// every decoder layer; never the LM head).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    /// `all-linear`; any other string is a PEFT regex, which wick does not support.
    One(String),
}

impl TargetModules {
    pub fn all_linear() -> Self {
        TargetModules::One("all-linear".into())
    }

    /// From CLI-style names: `all-linear`, or a list of module names.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Self {
        match names {
            [one] if one.as_ref() == "all-linear" => Self::all_linear(),
            _ => TargetModules::List(names.iter().map(|n| n.as_ref().to_string()).collect()),
        }
    }
}

/// PEFT's LoRA configuration, as written to `adapter_config.json`. Unset optional fields are
/// left out when writing, so PEFT applies its own defaults (e.g. `{}` for `rank_pattern`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoraConfig {
    #[serde(default = "lora_type")]
    pub peft_type: String,
    #[serde(default = "causal_lm")]
    pub task_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model_name_or_path: Option<String>,
    #[serde(default = "default_r")]
    pub r: usize,
    #[serde(default = "default_alpha")]
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    /// None (null) means PEFT's default for Llama/Qwen2/Mistral: q_proj and v_proj.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_modules: Option<TargetModules>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default = "bias_none")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub lora_bias: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers_to_transform: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers_pattern: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank_pattern: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha_pattern: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_modules: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainable_token_indices: Option<Value>,
    /// Settings that change the model's structure or forward (PEFT's layer replication,
    /// activated LoRA); read only to refuse them when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_replication: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alora_invocation_tokens: Option<Value>,
    /// Written as PEFT writes it (`true`: Kaiming-uniform A, zero B); read back but unused.
    #[serde(default = "init_true")]
    pub init_lora_weights: Value,
    #[serde(default)]
    pub inference_mode: bool,
}

fn lora_type() -> String {
    "LORA".into()
}
fn causal_lm() -> Option<String> {
    Some("CAUSAL_LM".into())
}
fn default_r() -> usize {
    8
}
fn default_alpha() -> f64 {
    8.0
}
fn bias_none() -> String {
    "none".into()
}
fn init_true() -> Value {
    Value::Bool(true)
}

impl LoraConfig {
    /// A config for `targets` with PEFT's defaults elsewhere (no dropout, no rsLoRA).
    pub fn new(r: usize, lora_alpha: f64, target_modules: TargetModules) -> Self {
        LoraConfig {
            peft_type: lora_type(),
            task_type: causal_lm(),
            base_model_name_or_path: None,
            r,
            lora_alpha,
            lora_dropout: 0.0,
            target_modules: Some(target_modules),
            use_rslora: false,
            bias: bias_none(),
            fan_in_fan_out: false,
            modules_to_save: None,
            use_dora: false,
            lora_bias: false,
            layers_to_transform: None,
            layers_pattern: None,
            rank_pattern: None,
            alpha_pattern: None,
            target_parameters: None,
            exclude_modules: None,
            trainable_token_indices: None,
            layer_replication: None,
            alora_invocation_tokens: None,
            init_lora_weights: init_true(),
            inference_mode: false,
        }
    }

    /// Reads and validates `adapter_config.json`, naming the file in errors.
    pub fn from_file(path: &Path) -> Result<Self> {
        let cfg: LoraConfig = read_json(path)?;
        cfg.validate().map_err(|e| match e {
            Error::InvalidArgument { name, message } => {
                Error::bad_config(path, format!("`{name}`: {message}"))
            }
            Error::Unsupported(m) => Error::Unsupported(format!("{}: {m}", path.display())),
            other => other,
        })?;
        Ok(cfg)
    }

    /// `lora_alpha / r`, or `lora_alpha / √r` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        let r = self.r as f64;
        if self.use_rslora {
            self.lora_alpha / r.sqrt()
        } else {
            self.lora_alpha / r
        }
    }

    /// Checks the settings on their own (the model-dependent checks happen in `lora::apply`).
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, message: String| Error::InvalidArgument { name, message };
        let unsupported = |what: &str| Err(Error::Unsupported(format!("LoRA {what}")));
        if self.peft_type != "LORA" {
            return Err(bad(
                "peft_type",
                format!("`{}` is not LORA", self.peft_type),
            ));
        }
        if let Some(t) = self.task_type.as_deref().filter(|t| *t != "CAUSAL_LM") {
            return Err(Error::Unsupported(format!(
                "LoRA task_type `{t}` (supported: CAUSAL_LM)"
            )));
        }
        if self.r == 0 {
            return Err(bad("r", "the rank must be at least 1".into()));
        }
        if !self.lora_alpha.is_finite() || self.lora_alpha <= 0.0 {
            return Err(bad(
                "lora_alpha",
                format!("{} is not a positive number", self.lora_alpha),
            ));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(bad(
                "lora_dropout",
                format!("{} is not in [0, 1)", self.lora_dropout),
            ));
        }
        if let Some(TargetModules::One(s)) = &self.target_modules {
            if s != "all-linear" {
                return Err(Error::Unsupported(format!(
                    "LoRA target_modules as a regex (`{s}`); give a list of module names or \
                     `all-linear`"
                )));
            }
        }
        if let Some(TargetModules::List(l)) = &self.target_modules {
            if l.is_empty() {
                return Err(bad("target_modules", "the list is empty".into()));
            }
        }
        if self.use_dora {
            return unsupported("with use_dora = true (DoRA)");
        }
        if self.bias != "none" {
            return unsupported(&format!("with bias = `{}` (supported: none)", self.bias));
        }
        if self.lora_bias {
            return unsupported("with lora_bias = true");
        }
        if self.fan_in_fan_out {
            return unsupported("with fan_in_fan_out = true (Conv1D layouts)");
        }
        if self.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return unsupported("with modules_to_save (fully trained extra modules)");
        }
        for (name, v) in [
            ("layers_to_transform", &self.layers_to_transform),
            ("layers_pattern", &self.layers_pattern),
            ("rank_pattern", &self.rank_pattern),
            ("alpha_pattern", &self.alpha_pattern),
            ("target_parameters", &self.target_parameters),
            ("exclude_modules", &self.exclude_modules),
            ("trainable_token_indices", &self.trainable_token_indices),
            ("layer_replication", &self.layer_replication),
            ("alora_invocation_tokens", &self.alora_invocation_tokens),
        ] {
            if !is_empty(v.as_ref()) {
                return unsupported(&format!("with {name} set"));
            }
        }
        Ok(())
    }

    /// The target names to match, `all-linear` expanded to every one of `projections` (the
    /// model's, [`crate::models::DecoderModel::projection_names`]).
    pub fn target_names(&self, projections: &[&str]) -> Vec<String> {
        match &self.target_modules {
            None => vec!["q_proj".into(), "v_proj".into()],
            Some(TargetModules::One(_)) => projections.iter().map(|p| p.to_string()).collect(),
            Some(TargetModules::List(l)) => l.clone(),
        }
    }
}

fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_peft_config_and_ignores_unknown_keys() -> Result<()> {
        let json = r#"{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8,
            "lora_dropout": 0.0, "target_modules": ["v_proj", "q_proj"], "use_rslora": true,
            "bias": "none", "fan_in_fan_out": false, "modules_to_save": null,
            "rank_pattern": {}, "alpha_pattern": {}, "use_dora": false, "revision": null,
            "megatron_core": "megatron.core", "auto_mapping": null}"#;
        let cfg: LoraConfig =
            serde_json::from_str(json).map_err(|e| Error::bad_config("inline", e.to_string()))?;
        cfg.validate()?;
        assert_eq!(
            cfg.target_names(&["q_proj", "v_proj"]),
            ["v_proj", "q_proj"]
        );
        assert!((cfg.scaling() - 4.0).abs() < 1e-12); // 8 / √4
        Ok(())
    }

    #[test]
    fn unsupported_settings_are_named() {
        let mut cfg = LoraConfig::new(4, 8.0, TargetModules::all_linear());
        cfg.use_dora = true;
        let err = cfg
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("use_dora"), "{err}");
        let mut cfg = LoraConfig::new(4, 8.0, TargetModules::One("q_.*".into()));
        let err = cfg
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("regex"), "{err}");
        cfg.target_modules = Some(TargetModules::all_linear());
        cfg.r = 0;
        let err = cfg
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("`r`"), "{err}");
    }
}
