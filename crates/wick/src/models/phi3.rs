//! Phi-3 and Phi-4-mini (`model_type` phi3) on the shared decoder: Llama with one fused
//! `self_attn.qkv_proj` (q, k, v rows) and one fused `mlp.gate_up_proj` (gate rows, then up),
//! RoPE on the first `partial_rotary_factor · head_dim` features of each head (0.75 in
//! Phi-4-mini), LongRoPE scaling for the long-context checkpoints (short/long factor tables
//! chosen per sequence by its length against `original_max_position_embeddings`, cos/sin times
//! an attention factor) and one `sliding_window` for every layer when set (Phi-3-mini-4k).

use serde_json::Value;

use super::common::{parse_rope, CommonConfig};
use super::Family;
use crate::nn::decoder::{AttentionKind, DecoderConfig, Rope};
use crate::ops::rope::RopeScaling;

pub const FAMILY: Family = Family {
    name: "phi3",
    model_types: &["phi3"],
    parse,
};

fn parse(value: &Value) -> Result<DecoderConfig, String> {
    let mut raw: CommonConfig = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    raw.require_act("silu")?;
    if value.get("rms_norm_eps").is_none() {
        raw.rms_norm_eps = 1e-5; // Phi3Config's default (CommonConfig's is 1e-6)
    }
    let max_pos = raw.max_position_embeddings.unwrap_or(4096);
    let head_dim = raw.head_dim()?;
    let partial = raw.partial_rotary_factor()?;
    if !(partial > 0.0 && partial <= 1.0) {
        return Err(format!("partial_rotary_factor {partial} must be in (0, 1]"));
    }
    // transformers: int(head_dim * partial_rotary_factor); the epsilon keeps a ratio written
    // from a GGUF's rotary dimension (12 / 16) from rounding down.
    let rotary_dim = (head_dim as f64 * partial + 1e-9) as usize;
    let rope = rope(&raw, value, max_pos, rotary_dim)?;
    let kind = AttentionKind {
        window: raw.sliding_window.filter(|&w| w > 0),
        rope: Some(rope),
    };
    let layer_kinds = vec![0; raw.num_hidden_layers];
    let mut cfg = raw.decoder(max_pos, vec![kind], layer_kinds)?;
    cfg.fused_qkv = true;
    cfg.fused_gate_up = true;
    Ok(cfg)
}

/// Phi-3's RoPE: default or LongRoPE (`longrope`, and the older spellings `su` and `yarn` that
/// transformers' Phi3Config renames to it).
fn rope(
    raw: &CommonConfig,
    value: &Value,
    max_pos: usize,
    rotary_dim: usize,
) -> Result<Rope, String> {
    let params = raw.rope_params()?;
    let field = |name: &str| params.and_then(|p| p.get(name));
    let kind = field("rope_type")
        .or_else(|| field("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    match kind {
        "default" => parse_rope(params, raw.rope_theta, max_pos, rotary_dim),
        "longrope" | "su" | "yarn" => {
            let factors = |name: &str| -> Result<Vec<f64>, String> {
                let list = field(name).and_then(Value::as_array).ok_or_else(|| {
                    format!("rope type `{kind}` needs a `{name}` list of numbers")
                })?;
                list.iter()
                    .map(|f| {
                        f.as_f64()
                            .ok_or_else(|| format!("`{name}` holds {f}, not a number"))
                    })
                    .collect()
            };
            // Phi3Config gives its top-level `original_max_position_embeddings` priority.
            let original = value
                .get("original_max_position_embeddings")
                .or_else(|| field("original_max_position_embeddings"))
                .and_then(Value::as_u64)
                .unwrap_or(4096) as usize;
            let scaling = RopeScaling::LongRope {
                short_factor: factors("short_factor")?,
                long_factor: factors("long_factor")?,
                original_max_position_embeddings: original,
            };
            scaling.validate(rotary_dim)?;
            let factor = field("factor")
                .and_then(Value::as_f64)
                .unwrap_or(max_pos as f64 / original as f64);
            let attention_factor = match field("attention_factor").and_then(Value::as_f64) {
                Some(f) => f,
                None => RopeScaling::longrope_attention_factor(factor, original),
            };
            let theta = field("rope_theta")
                .and_then(Value::as_f64)
                .or(raw.rope_theta)
                .unwrap_or(10000.0);
            Ok(Rope {
                theta,
                scaling,
                rotary_dim,
                attention_factor,
            })
        }
        other => Err(format!(
            "rope_scaling type `{other}` is unsupported for phi3 (supported: default, longrope)"
        )),
    }
}
