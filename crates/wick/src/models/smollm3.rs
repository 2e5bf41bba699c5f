//! SmolLM3 on the shared decoder: Llama with NoPE layers. `no_rope_layers[i]` is 1 for a layer
//! that uses RoPE and 0 for one without; absent, every `no_rope_layer_interval`-th layer
//! (default 4) has none: `(i + 1) % interval != 0` uses RoPE (transformers 5.24's
//! SmolLM3Config). With `use_sliding_window`, the NoPE layers use the sliding window.

use serde::Deserialize;
use serde_json::Value;

use super::common::{kind_table, CommonConfig};
use super::Family;
use crate::nn::decoder::{AttentionKind, DecoderConfig};

pub const FAMILY: Family = Family {
    name: "smollm3",
    model_types: &["smollm3"],
    parse,
};

#[derive(Deserialize)]
struct NoRope {
    no_rope_layers: Option<Vec<u8>>,
    no_rope_layer_interval: Option<usize>,
}

fn parse(value: &Value) -> Result<DecoderConfig, String> {
    let raw: CommonConfig = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let extra: NoRope = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    raw.require_act("silu")?;
    let n = raw.num_hidden_layers;
    let max_pos = raw.max_position_embeddings.unwrap_or(32768);
    let rope = raw.rope(max_pos, raw.head_dim()?)?;
    let uses_rope: Vec<bool> = match extra.no_rope_layers {
        Some(l) if l.len() != n => {
            return Err(format!(
                "no_rope_layers has {} entries for {n} layers",
                l.len()
            ))
        }
        Some(l) => l.iter().map(|&r| r != 0).collect(),
        None => {
            let every = extra.no_rope_layer_interval.unwrap_or(4);
            if every == 0 {
                return Err("no_rope_layer_interval must be positive".into());
            }
            (0..n).map(|i| (i + 1) % every != 0).collect()
        }
    };
    let window = raw
        .sliding_window
        .filter(|_| raw.use_sliding_window == Some(true));
    let sliding = match raw.sliding_layers()? {
        Some(s) => s,
        None => uses_rope.iter().map(|&r| !r && window.is_some()).collect(),
    };
    let per_layer = uses_rope
        .iter()
        .zip(&sliding)
        .map(|(&r, &s)| AttentionKind {
            window: window.filter(|_| s),
            rope: r.then(|| rope.clone()),
        });
    let (kinds, layer_kinds) = kind_table(per_layer.collect());
    let mut cfg = raw.decoder(max_pos, kinds, layer_kinds)?;
    cfg.qkv_bias = raw.attention_bias;
    cfg.o_bias = raw.attention_bias;
    cfg.mlp_bias = raw.mlp_bias;
    cfg.tie_word_embeddings = raw.tie_word_embeddings.unwrap_or(true);
    Ok(cfg)
}
