//! config.json fields every HF decoder shares, and the parsing helpers the family files use
//! (RoPE parameters in both transformers spellings, token ids, per-layer attention kinds).

use serde::Deserialize;
use serde_json::Value;

use crate::nn::decoder::{Activation, AttentionKind, DecoderConfig, NormLayout, Rope};
use crate::ops::rope::RopeScaling;

/// The fields most decoder configs share; unknown keys are ignored. A family reads this with
/// `serde_json::from_value` and then its own extra fields.
#[derive(Deserialize)]
pub struct CommonConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<Value>,
    pub rope_parameters: Option<Value>,
    pub partial_rotary_factor: Option<f64>,
    pub max_position_embeddings: Option<usize>,
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    /// `hidden_act` (Gemma writes `hidden_activation`; the family reads that itself).
    pub hidden_act: Option<String>,
    pub sliding_window: Option<usize>,
    pub use_sliding_window: Option<bool>,
    pub max_window_layers: Option<usize>,
    pub layer_types: Option<Vec<String>>,
    pub bos_token_id: Option<Value>,
    pub eos_token_id: Option<Value>,
}

fn default_eps() -> f64 {
    1e-6
}

impl CommonConfig {
    /// `head_dim`, or hidden_size / num_attention_heads when absent.
    pub fn head_dim(&self) -> Result<usize, String> {
        let heads = self.num_attention_heads.max(1);
        match self.head_dim {
            Some(d) => Ok(d),
            None if self.hidden_size.is_multiple_of(heads) => Ok(self.hidden_size / heads),
            None => Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {heads}",
                self.hidden_size
            )),
        }
    }

    /// The RoPE parameters object (5.x `rope_parameters`, else 4.x `rope_scaling`), if any.
    pub fn rope_params(&self) -> Result<Option<&Value>, String> {
        match (&self.rope_parameters, &self.rope_scaling) {
            (Some(p @ Value::Object(_)), _) => Ok(Some(p)),
            (_, Some(p @ Value::Object(_))) => Ok(Some(p)),
            (Some(Value::Null) | None, Some(Value::Null) | None) => Ok(None),
            _ => Err("`rope_parameters` / `rope_scaling` is not an object".into()),
        }
    }

    /// The single (not per-layer-type) RoPE of this config, over `rotary_dim` features.
    pub fn rope(&self, max_pos: usize, rotary_dim: usize) -> Result<Rope, String> {
        let params = self.rope_params()?;
        if params.is_some_and(|p| p.get("full_attention").is_some())
            || params.is_some_and(|p| p.get("sliding_attention").is_some())
        {
            return Err("per-layer-type rope_parameters are unsupported".into());
        }
        parse_rope(params, self.rope_theta, max_pos, rotary_dim)
    }

    /// The partial rotary factor (from the RoPE parameters or the top level), 1.0 if absent.
    pub fn partial_rotary_factor(&self) -> Result<f64, String> {
        let nested = self
            .rope_params()?
            .and_then(|p| p.get("partial_rotary_factor"))
            .and_then(Value::as_f64);
        Ok(nested.or(self.partial_rotary_factor).unwrap_or(1.0))
    }

    /// A Llama-shaped configuration from the common fields: separate projections, SiLU,
    /// pre-norms, plain RMSNorm, no q/k norms, 1/sqrt(head_dim) attention scale, no biases,
    /// no soft-capping, and `kinds` / `layer_kinds` as given. Families change what differs.
    pub fn decoder(
        &self,
        max_pos: usize,
        attention_kinds: Vec<AttentionKind>,
        layer_kinds: Vec<usize>,
    ) -> Result<DecoderConfig, String> {
        let heads = self.num_attention_heads;
        let head_dim = self.head_dim()?;
        Ok(DecoderConfig {
            model_type: self.model_type.clone(),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: self.num_key_value_heads.unwrap_or(heads),
            head_dim,
            rms_norm_eps: self.rms_norm_eps,
            max_position_embeddings: max_pos,
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
            norm_offset: 0.0,
            norm_layout: NormLayout::Pre,
            embed_scale: None,
            activation: Activation::Silu,
            attn_scale: 1.0 / (head_dim as f64).sqrt(),
            attn_softcap: None,
            final_softcap: None,
            fused_qkv: false,
            fused_gate_up: false,
            attention_kinds,
            layer_kinds,
            bos_token_id: token_ids(self.bos_token_id.as_ref()).first().copied(),
            eos_token_ids: token_ids(self.eos_token_id.as_ref()),
        })
    }

    /// Refuses a `hidden_act` other than `want` (absent means `want`).
    pub fn require_act(&self, want: &str) -> Result<(), String> {
        match self.hidden_act.as_deref() {
            None => Ok(()),
            Some(a) if a == want => Ok(()),
            Some(a) => Err(format!(
                "hidden_act `{a}` is unsupported (supported: {want})"
            )),
        }
    }

    /// Which layers slide in a Qwen2/Qwen3 config: `layer_types` when present, else every layer
    /// from `max_window_layers` (default 28) on.
    pub fn qwen_sliding_layers(&self) -> Result<Vec<bool>, String> {
        Ok(match self.sliding_layers()? {
            Some(sliding) => sliding,
            None => {
                let from = self.max_window_layers.unwrap_or(28);
                (0..self.num_hidden_layers).map(|i| i >= from).collect()
            }
        })
    }

    /// Each layer's type from `layer_types` (`full_attention` / `sliding_attention`), checked
    /// against the layer count; None when the config has no `layer_types`.
    pub fn sliding_layers(&self) -> Result<Option<Vec<bool>>, String> {
        let n = self.num_hidden_layers;
        let Some(types) = &self.layer_types else {
            return Ok(None);
        };
        if types.len() != n {
            return Err(format!(
                "layer_types has {} entries for {n} layers",
                types.len()
            ));
        }
        types
            .iter()
            .map(|t| match t.as_str() {
                "sliding_attention" => Ok(true),
                "full_attention" => Ok(false),
                other => Err(format!("layer type `{other}` is unsupported")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// One RoPE from a parameters object (`rope_type`/`type`, `rope_theta`, `factor`, …) with
/// `fallback_theta` (top-level `rope_theta`) and 10000 as defaults.
pub fn parse_rope(
    params: Option<&Value>,
    fallback_theta: Option<f64>,
    max_pos: usize,
    rotary_dim: usize,
) -> Result<Rope, String> {
    let field = |name: &str| params.and_then(|p| p.get(name));
    let num = |name: &str| field(name).and_then(Value::as_f64);
    let theta = num("rope_theta").or(fallback_theta).unwrap_or(10000.0);
    let kind = field("rope_type")
        .or_else(|| field("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let need = |name: &str| {
        num(name).ok_or_else(|| format!("rope type `{kind}` needs a numeric `{name}`"))
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: need("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: need("low_freq_factor")?,
            high_freq_factor: need("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")
                .unwrap_or(max_pos as f64),
        },
        other => {
            return Err(format!(
                "rope_scaling type `{other}` is unsupported (supported: default, linear, llama3)"
            ))
        }
    };
    Ok(Rope {
        theta,
        scaling,
        rotary_dim,
        attention_factor: 1.0,
    })
}

/// `eos_token_id` may be a number, a list or null.
pub fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| n as u32).into_iter().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|n| n.as_u64())
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Folds one attention kind per layer into a table of distinct kinds and each layer's index.
pub fn kind_table(per_layer: Vec<AttentionKind>) -> (Vec<AttentionKind>, Vec<usize>) {
    let mut table: Vec<AttentionKind> = Vec::new();
    let mut index = Vec::with_capacity(per_layer.len());
    for k in per_layer {
        match table.iter().position(|t| *t == k) {
            Some(i) => index.push(i),
            None => {
                index.push(table.len());
                table.push(k);
            }
        }
    }
    (table, index)
}
