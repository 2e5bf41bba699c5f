//! Llama-family config.json parsing: resolved defaults, both RoPE spellings (transformers 4.x
//! `rope_theta` + `rope_scaling`, 5.x `rope_parameters`), and one-line errors for bad input.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod llama_common;

use std::path::Path;

use llama_common::*;
use serde_json::{json, Value};
use wick::models::DecoderConfig;
use wick::ops::rope::RopeScaling;
use wick::Error;

fn base(model_type: &str) -> Value {
    json!({
        "model_type": model_type,
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    })
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn parse(v: Value) -> wick::Result<DecoderConfig> {
    DecoderConfig::from_value(v, Path::new("/models/m/config.json"))
}

fn err(v: Value) -> String {
    parse(v).expect_err("config should be refused").to_string()
}

#[test]
fn unknown_architecture_is_named_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, base("gpt_neox").to_string()).unwrap();
    let e = DecoderConfig::from_file(&path).expect_err("gpt_neox is not a Llama");
    assert!(
        matches!(&e, Error::UnsupportedArchitecture { model_type, .. } if model_type == "gpt_neox")
    );
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("unsupported architecture `gpt_neox`"), "{msg}");
    assert!(
        msg.contains("supported: llama, qwen2, mistral, qwen3, smollm3"),
        "{msg}"
    );
    // The same from a derived config (GGUF): the origin is named.
    let e = DecoderConfig::from_value(base("phi3"), Path::new("/m/model.gguf")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/m/model.gguf: unsupported architecture `phi3`"),
        "{e}"
    );
    let mut v = base("llama");
    v.as_object_mut().unwrap().remove("model_type");
    assert!(err(v).contains("missing field `model_type`"));
}

#[test]
fn unsupported_rope_scaling_type_is_named() {
    let yarn = json!({"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0});
    let msg = err(with(base("llama"), "rope_parameters", yarn));
    assert!(
        msg.starts_with("/models/m/config.json: invalid config:"),
        "{msg}"
    );
    assert!(
        msg.contains(
            "rope_scaling type `yarn` is unsupported (supported: default, linear, llama3)"
        ),
        "{msg}"
    );
    let dynamic = json!({"type": "dynamic", "factor": 2.0});
    assert!(err(with(base("llama"), "rope_scaling", dynamic)).contains("`dynamic`"));
    let no_factor = json!({"rope_type": "linear"});
    assert!(
        err(with(base("llama"), "rope_parameters", no_factor)).contains("needs a numeric `factor`")
    );
}

#[test]
fn other_bad_input_gets_one_line_errors() {
    let msg = err(with(base("llama"), "hidden_act", json!("gelu")));
    assert!(msg.contains("hidden_act `gelu` is unsupported"), "{msg}");
    let msg = err(with(base("llama"), "num_key_value_heads", json!(3)));
    assert!(
        msg.contains("not a multiple of num_key_value_heads 3"),
        "{msg}"
    );
    let msg = err(with(base("llama"), "partial_rotary_factor", json!(0.5)));
    assert!(msg.contains("partial_rotary_factor"), "{msg}");
    let msg = err(with(base("qwen2"), "vocab_size", json!("many")));
    assert!(
        msg.contains("/models/m/config.json") && !msg.contains('\n'),
        "{msg}"
    );
}

#[test]
fn transformers4_rope_spelling_and_defaults() {
    let v = with(base("llama"), "rope_theta", json!(500000.0));
    let v = with(v, "rope_scaling", json!({"type": "linear", "factor": 2.0}));
    let cfg = parse(v).unwrap();
    assert_eq!(cfg.layer_rope(0).unwrap().theta, 500000.0);
    assert_eq!(
        cfg.layer_rope(0).unwrap().scaling,
        RopeScaling::Linear { factor: 2.0 }
    );
    assert_eq!((cfg.num_key_value_heads, cfg.head_dim), (4, 16));
    assert!(!cfg.qkv_bias && !cfg.o_bias && !cfg.mlp_bias && !cfg.tie_word_embeddings);

    // llama3 without original_max_position_embeddings falls back to max_position_embeddings.
    let l3 = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0});
    let v = with(
        with(base("llama"), "rope_scaling", l3),
        "max_position_embeddings",
        json!(8192),
    );
    let cfg = parse(v).unwrap();
    assert_eq!(cfg.layer_rope(0).unwrap().theta, 10000.0);
    assert!(
        matches!(&cfg.layer_rope(0).unwrap().scaling, RopeScaling::Llama3 { original_max_position_embeddings, .. } if *original_max_position_embeddings == 8192.0)
    );

    let v = with(
        with(base("llama"), "attention_bias", json!(true)),
        "eos_token_id",
        json!([7, 9]),
    );
    let cfg = parse(v).unwrap();
    assert!(cfg.qkv_bias && cfg.o_bias);
    assert_eq!(cfg.eos_token_ids, vec![7, 9]);
}

#[test]
fn fixture_configs_resolve() {
    let llama = config("tiny_llama", "config.json");
    assert_eq!(
        (
            llama.num_attention_heads,
            llama.num_key_value_heads,
            llama.head_dim
        ),
        (4, 2, 16)
    );
    assert!(!llama.tie_word_embeddings && !llama.qkv_bias);
    assert_eq!(llama.layer_rope(0).unwrap().scaling, RopeScaling::None);
    let qwen = config("tiny_qwen2", "config.json");
    assert!(qwen.tie_word_embeddings && qwen.qkv_bias && !qwen.o_bias);
    assert_eq!(qwen.layer_rope(0).unwrap().theta, 1e6);
    assert_eq!(qwen.layer_windows(), vec![None, None]);
}

#[test]
fn sliding_windows_follow_transformers() {
    let mistral = with(base("mistral"), "sliding_window", json!(4096));
    assert_eq!(parse(mistral).unwrap().layer_windows(), vec![Some(4096); 2]);
    let qwen = with(base("qwen2"), "sliding_window", json!(64));
    assert_eq!(
        parse(qwen.clone()).unwrap().layer_windows(),
        vec![None, None]
    ); // use_sliding_window off
    let qwen = with(
        with(qwen, "use_sliding_window", json!(true)),
        "max_window_layers",
        json!(1),
    );
    assert_eq!(
        parse(qwen.clone()).unwrap().layer_windows(),
        vec![None, Some(64)]
    );
    let typed = with(
        qwen,
        "layer_types",
        json!(["sliding_attention", "full_attention"]),
    );
    assert_eq!(parse(typed).unwrap().layer_windows(), vec![Some(64), None]);
    assert_eq!(
        parse(base("llama")).unwrap().layer_windows(),
        vec![None, None]
    );
}

#[test]
fn missing_weights_name_the_tensor() {
    // The tied Qwen2 checkpoint has no lm_head: loaded as untied it must say so.
    let mut cfg = config("tiny_qwen2", "config.json");
    cfg.tie_word_embeddings = false;
    let source = std::sync::Arc::new(weights("tiny_qwen2"));
    let vb = wick::io::weights::WeightView::new(
        source,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    );
    let e = wick::models::DecoderModel::new(&cfg, &vb)
        .err()
        .expect("no lm_head");
    assert!(
        e.to_string().contains("tensor `lm_head.weight` not found"),
        "{e}"
    );
}

#[test]
fn bad_forward_inputs_are_refused_with_the_argument_named() {
    use candle_core::{DType, Device, Tensor};
    let m = model("tiny_llama");
    let dev = Device::Cpu;
    let ids = Tensor::new(&[[1u32, 2, 3]], &dev).unwrap();
    let flat_ids = Tensor::new(&[1u32, 2, 3], &dev).unwrap();
    let e = m.forward_uncached(&flat_ids, None).unwrap_err().to_string();
    assert!(
        e.contains("invalid argument `input_ids`") && e.contains("(batch, seq)"),
        "{e}"
    );
    let mask = Tensor::ones((1, 2), DType::U32, &dev).unwrap();
    let e = m
        .forward_uncached(&ids, Some(&mask))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`attention_mask`"), "{e}");
    let unknown = Tensor::new(&[[1u32, 256]], &dev).unwrap();
    assert!(
        m.forward_uncached(&unknown, None).is_err(),
        "token 256 of a 256-token vocabulary"
    );
    let mut small = m.new_cache(1, 4).unwrap();
    m.forward(&ids, None, &mut small).unwrap();
    let e = m.forward(&ids, None, &mut small).unwrap_err().to_string();
    assert!(e.contains("overflow the cache of 4"), "{e}");
    assert_eq!(small.len(), 3, "a refused step leaves the cache as it was");
    let mut wrong_batch = m.new_cache(2, 8).unwrap();
    let e = m
        .forward(&ids, None, &mut wrong_batch)
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch of 1 for a cache built for 2"), "{e}");
}

#[test]
fn model_and_cache_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<wick::models::DecoderModel>();
    send_sync::<wick::nn::KvCache>();
}
