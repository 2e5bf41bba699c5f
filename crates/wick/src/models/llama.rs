//! The Llama family: Llama, Qwen2 (q/k/v bias) and Mistral (sliding window), on the shared
//! decoder ([`crate::nn::decoder`]). Only the config differs.

use serde_json::Value;

use super::common::{kind_table, CommonConfig};
use super::Family;
use crate::nn::decoder::{AttentionKind, DecoderConfig};

pub const FAMILY: Family = Family {
    name: "llama",
    model_types: &["llama", "qwen2", "mistral"],
    parse,
};

fn parse(value: &Value) -> Result<DecoderConfig, String> {
    let raw: CommonConfig = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    raw.require_act("silu")?;
    let partial = raw.partial_rotary_factor()?;
    if partial != 1.0 {
        return Err(format!(
            "partial_rotary_factor {partial} is unsupported (supported: 1.0)"
        ));
    }
    let model_type = raw.model_type.as_str();
    let max_pos = raw.max_position_embeddings.unwrap_or(match model_type {
        "qwen2" => 32768,
        "mistral" => 131072,
        _ => 2048,
    });
    let rope = raw.rope(max_pos, raw.head_dim()?)?;
    let kind = |window| AttentionKind {
        window,
        rope: Some(rope.clone()),
    };
    let (kinds, layer_kinds) = kind_table(layer_windows(&raw)?.into_iter().map(kind).collect());
    let mut cfg = raw.decoder(max_pos, kinds, layer_kinds)?;
    let llama = model_type == "llama";
    cfg.qkv_bias = model_type == "qwen2" || (llama && raw.attention_bias);
    cfg.o_bias = llama && raw.attention_bias;
    cfg.mlp_bias = llama && raw.mlp_bias;
    Ok(cfg)
}

/// Which layers use a sliding window, as transformers decides it: Mistral everywhere when
/// `sliding_window` is set; Qwen2 per `layer_types`, else from `use_sliding_window` and
/// `max_window_layers`; Llama never.
fn layer_windows(raw: &CommonConfig) -> Result<Vec<Option<usize>>, String> {
    let n = raw.num_hidden_layers;
    let window = raw.sliding_window;
    Ok(match raw.model_type.as_str() {
        "mistral" => vec![window; n],
        "qwen2" => {
            let window = window.filter(|_| raw.use_sliding_window == Some(true));
            let sliding = raw.qwen_sliding_layers()?;
            sliding.iter().map(|&s| window.filter(|_| s)).collect()
        }
        _ => vec![None; n],
    })
}
