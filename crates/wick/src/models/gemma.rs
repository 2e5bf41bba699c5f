//! Gemma 2 and Gemma 3 (text) on the shared decoder. What differs from Llama:
//! - every RMSNorm multiplies by `1 + weight` (the stored weight is centred on 0);
//! - embeddings are multiplied by sqrt(hidden_size) (rounded to the model dtype);
//! - sandwich norms: `post_attention_layernorm` after attention and `pre_/post_feedforward_layernorm`
//!   around the MLP, each before its residual add;
//! - a GELU-tanh gated MLP (`hidden_activation: gelu_pytorch_tanh`);
//! - attention scores scaled by `query_pre_attn_scalar ** -0.5` (not head_dim's);
//! - sliding-window and global layers interleaved (`layer_types`, else every 2nd layer global in
//!   Gemma 2, every `sliding_window_pattern`-th (6) in Gemma 3);
//! - Gemma 2: attention and final logits soft-capped, `tanh(x / c) * c` (50 and 30 by default);
//! - Gemma 3: per-head q/k norms, and a RoPE per layer type: local (`rope_local_base_freq`,
//!   10000) on sliding layers, global (`rope_theta`, 1e6, with `rope_scaling`) on full ones.
//!
//! Defaults are transformers 5.24's Gemma2Config / Gemma3TextConfig (head_dim 256, window 4096,
//! tied embeddings, bos 2, eos 1). The multimodal `gemma3` config (Gemma3ForConditionalGeneration)
//! is refused: only its text model is supported.

use serde::Deserialize;
use serde_json::Value;

use super::common::{kind_table, parse_rope, token_ids, CommonConfig};
use super::Family;
use crate::nn::decoder::{Activation, AttentionKind, DecoderConfig, NormLayout, Rope};

pub const FAMILY: Family = Family {
    name: "gemma",
    model_types: &["gemma2", "gemma3_text", "gemma3"],
    parse,
};

/// Gemma's own config.json fields (beyond [`CommonConfig`]).
#[derive(Deserialize)]
struct GemmaFields {
    hidden_activation: Option<String>,
    query_pre_attn_scalar: Option<f64>,
    sliding_window_pattern: Option<usize>,
    rope_local_base_freq: Option<f64>,
    use_bidirectional_attention: Option<bool>,
}

fn parse(value: &Value) -> Result<DecoderConfig, String> {
    let model_type = value
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if model_type == "gemma3" {
        return Err(
            "model_type `gemma3` is the multimodal Gemma3ForConditionalGeneration, which \
                    is unsupported; use a text-only checkpoint (model_type `gemma3_text`)"
                .into(),
        );
    }
    let gemma3 = model_type == "gemma3_text";
    let raw: CommonConfig = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let extra: GemmaFields = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let act = extra
        .hidden_activation
        .as_deref()
        .or(raw.hidden_act.as_deref());
    if let Some(a) = act.filter(|a| *a != "gelu_pytorch_tanh") {
        return Err(format!(
            "hidden_activation `{a}` is unsupported (supported: gelu_pytorch_tanh)"
        ));
    }
    if extra.use_bidirectional_attention == Some(true) {
        return Err("use_bidirectional_attention (EmbeddingGemma) is unsupported".into());
    }
    let n = raw.num_hidden_layers;
    let head_dim = raw.head_dim.unwrap_or(256);
    let max_pos = raw
        .max_position_embeddings
        .unwrap_or(if gemma3 { 131_072 } else { 8192 });

    // A key present as null turns the feature off; absent, the default applies.
    let opt_f64 = |key: &str, default: Option<f64>| match value.get(key) {
        None => Ok(default),
        Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("`{key}` is not a number")),
    };
    let window = match value.get("sliding_window") {
        None => Some(4096),
        Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or("`sliding_window` is not an integer")? as usize),
    };
    let sliding = match raw.sliding_layers()? {
        Some(s) => s,
        None => {
            let every = if gemma3 {
                extra.sliding_window_pattern.unwrap_or(6)
            } else {
                2
            };
            if every == 0 {
                return Err("sliding_window_pattern must be positive".into());
            }
            (0..n).map(|i| (i + 1) % every != 0).collect()
        }
    };
    let (local, global) = if gemma3 {
        gemma3_ropes(value, &raw, extra.rope_local_base_freq, max_pos, head_dim)?
    } else {
        let rope = raw.rope(max_pos, head_dim)?;
        (rope.clone(), rope)
    };
    let per_layer = sliding.iter().map(|&s| AttentionKind {
        window: window.filter(|_| s),
        rope: Some(if s { local.clone() } else { global.clone() }),
    });
    let (kinds, layer_kinds) = kind_table(per_layer.collect());

    let mut cfg = raw.decoder(max_pos, kinds, layer_kinds)?;
    cfg.head_dim = head_dim;
    cfg.norm_offset = 1.0;
    cfg.norm_layout = NormLayout::Sandwich;
    cfg.embed_scale = Some((raw.hidden_size as f64).sqrt());
    cfg.activation = Activation::GeluTanh;
    cfg.attn_scale = extra.query_pre_attn_scalar.unwrap_or(256.0).powf(-0.5);
    cfg.qk_norm = gemma3;
    cfg.qkv_bias = raw.attention_bias;
    cfg.o_bias = raw.attention_bias;
    cfg.attn_softcap = opt_f64("attn_logit_softcapping", (!gemma3).then_some(50.0))?;
    cfg.final_softcap = opt_f64("final_logit_softcapping", (!gemma3).then_some(30.0))?;
    if gemma3 && cfg.attn_softcap.is_some() {
        return Err("attn_logit_softcapping is not part of Gemma 3".into());
    }
    cfg.tie_word_embeddings = raw.tie_word_embeddings.unwrap_or(true);
    cfg.bos_token_id = token_ids(raw.bos_token_id.as_ref())
        .first()
        .copied()
        .or(Some(2));
    if raw.eos_token_id.is_none() {
        cfg.eos_token_ids = vec![1];
    }
    Ok(cfg)
}

/// Gemma 3's (local, global) RoPE: 5.x `rope_parameters` keyed by layer type, or the released
/// checkpoints' `rope_local_base_freq` + `rope_theta` + `rope_scaling` (on global layers only).
fn gemma3_ropes(
    value: &Value,
    raw: &CommonConfig,
    local_base: Option<f64>,
    max_pos: usize,
    head_dim: usize,
) -> Result<(Rope, Rope), String> {
    let per_type = raw
        .rope_parameters
        .as_ref()
        .filter(|p| p.get("full_attention").is_some() || p.get("sliding_attention").is_some());
    if let Some(p) = per_type {
        let local = parse_rope(
            p.get("sliding_attention"),
            local_base.or(Some(1e4)),
            max_pos,
            head_dim,
        );
        let global = parse_rope(
            p.get("full_attention"),
            raw.rope_theta.or(Some(1e6)),
            max_pos,
            head_dim,
        );
        return Ok((local?, global?));
    }
    if raw.rope_parameters.as_ref().is_some_and(|p| !p.is_null()) {
        return Err(
            "rope_parameters must be keyed by layer type (`sliding_attention`, \
                    `full_attention`) for gemma3_text"
                .into(),
        );
    }
    let scaling = value.get("rope_scaling").filter(|s| !s.is_null());
    let global = parse_rope(scaling, raw.rope_theta.or(Some(1e6)), max_pos, head_dim)?;
    // The scaling's own `rope_theta`, if any, is the global base; the local base stays its own.
    let local = parse_rope(None, local_base.or(Some(1e4)), max_pos, head_dim)?;
    Ok((local, global))
}
