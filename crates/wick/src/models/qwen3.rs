//! Qwen3 on the shared decoder: Llama plus per-head RMSNorm of q and k (`self_attn.q_norm`,
//! `self_attn.k_norm`, over head_dim, before RoPE); `attention_bias` puts a bias on all four
//! attention projections; `head_dim` is its own field (not hidden / heads); sliding windows
//! as Qwen2 (`layer_types`, else `use_sliding_window` + `max_window_layers`).

use serde_json::Value;

use super::common::{kind_table, CommonConfig};
use super::Family;
use crate::nn::decoder::{AttentionKind, DecoderConfig};

pub const FAMILY: Family = Family {
    name: "qwen3",
    model_types: &["qwen3"],
    parse,
};

fn parse(value: &Value) -> Result<DecoderConfig, String> {
    let raw: CommonConfig = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    raw.require_act("silu")?;
    let max_pos = raw.max_position_embeddings.unwrap_or(32768);
    let rope = raw.rope(max_pos, raw.head_dim()?)?;
    // Qwen3Config: the window applies only with use_sliding_window; an absent `sliding_window`
    // defaults to 4096, an explicit null means none.
    let window = match (raw.use_sliding_window, value.get("sliding_window")) {
        (Some(true), None) => Some(4096),
        (Some(true), Some(_)) => raw.sliding_window,
        _ => None,
    };
    let sliding = raw.qwen_sliding_layers()?;
    let per_layer = sliding.iter().map(|&s| AttentionKind {
        window: window.filter(|_| s),
        rope: Some(rope.clone()),
    });
    let (kinds, layer_kinds) = kind_table(per_layer.collect());
    let mut cfg = raw.decoder(max_pos, kinds, layer_kinds)?;
    cfg.qk_norm = true;
    cfg.qkv_bias = raw.attention_bias;
    cfg.o_bias = raw.attention_bias;
    Ok(cfg)
}
