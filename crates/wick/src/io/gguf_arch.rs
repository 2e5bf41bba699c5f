//! What llama.cpp's converter does per architecture, as data: the `general.architecture` it
//! writes, the HF `model_type` it came from, extra or renamed tensor names, whether it permuted
//! q/k, and the metadata keys beyond the common ones that map back to config.json fields.
//! A new family adds one row to [`GGUF_ARCHS`] (and, when needed, a small `config` function).

use serde_json::{json, Map, Value};

use crate::error::{printable, Error, Result};
use crate::io::gguf::GgufFile;

/// A config.json field set by a [`GgufArch::config`] hook.
pub type ConfigFields = Map<String, Value>;

pub struct GgufArch {
    /// `general.architecture`.
    pub arch: &'static str,
    /// The config.json `model_type` and `architectures` entry to report.
    pub model_type: &'static str,
    pub class: &'static str,
    /// llama.cpp's converter permuted q/k rows for its interleaved RoPE (its `DecoderModel`
    /// converter and subclasses with `undo_permute`); wick un-permutes them on load.
    pub permuted_qk: bool,
    /// Whole-model tensors beyond [`GLOBAL`]: (HF name, llama.cpp name), without `.weight`.
    pub global: &'static [(&'static str, &'static str)],
    /// Layer tensors (inside `model.layers.{i}` / `blk.{i}`) beyond or instead of [`LAYER`]: a
    /// row here replaces any [`LAYER`] row with the same HF or llama.cpp name.
    pub layer: &'static [(&'static str, &'static str)],
    /// Adds the config.json fields only this architecture has (after the common ones).
    pub config: fn(&GgufFile, &mut ConfigFields) -> Result<()>,
}

/// HF names of whole-model tensors and their llama.cpp names (every architecture).
pub const GLOBAL: [(&str, &str); 3] = [
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("lm_head", "output"),
];

/// HF names inside `model.layers.{i}` and their llama.cpp names inside `blk.{i}` (every
/// architecture unless its own rows replace them).
pub const LAYER: [(&str, &str); 9] = [
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
    ("input_layernorm", "attn_norm"),
    ("post_attention_layernorm", "ffn_norm"),
];

const QK_NORM: &[(&str, &str)] = &[
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
];

pub const GGUF_ARCHS: &[GgufArch] = &[
    GgufArch {
        arch: "llama",
        model_type: "llama",
        class: "LlamaForCausalLM",
        permuted_qk: true,
        global: &[],
        layer: &[],
        config: llama_config,
    },
    GgufArch {
        arch: "qwen2",
        model_type: "qwen2",
        class: "Qwen2ForCausalLM",
        permuted_qk: false,
        global: &[],
        layer: &[],
        config: no_extra,
    },
    GgufArch {
        arch: "qwen3",
        model_type: "qwen3",
        class: "Qwen3ForCausalLM",
        permuted_qk: false,
        global: &[],
        layer: QK_NORM,
        config: no_extra,
    },
    GgufArch {
        arch: "smollm3",
        model_type: "smollm3",
        class: "SmolLM3ForCausalLM",
        permuted_qk: true,
        global: &[],
        layer: &[],
        config: smollm3_config,
    },
];

/// The row of `general.architecture` = `arch`.
pub fn gguf_arch(arch: &str) -> Option<&'static GgufArch> {
    GGUF_ARCHS.iter().find(|a| a.arch == arch)
}

/// Every supported `general.architecture`, comma-separated (for errors).
pub fn supported_archs() -> String {
    let names: Vec<&str> = GGUF_ARCHS.iter().map(|a| a.arch).collect();
    names.join(", ")
}

impl GgufArch {
    /// Whole-model (HF, llama.cpp) rows of this architecture.
    pub fn global_rows(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        GLOBAL.iter().chain(self.global).copied()
    }

    /// Layer (HF, llama.cpp) rows of this architecture: its own, then the shared ones it does
    /// not replace.
    pub fn layer_rows(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        let own = self.layer;
        let shared = LAYER
            .iter()
            .filter(move |(h, g)| !own.iter().any(|(oh, og)| oh == h || og == g));
        own.iter().chain(shared).copied()
    }
}

fn no_extra(_: &GgufFile, _: &mut ConfigFields) -> Result<()> {
    Ok(())
}

fn llama_config(file: &GgufFile, cfg: &mut ConfigFields) -> Result<()> {
    let bias = file.tensor_info("blk.0.attn_q.bias").is_some();
    cfg.insert("attention_bias".into(), bias.into());
    Ok(())
}

/// llama.cpp hard-codes SmolLM3's NoPE rule (every 4th layer without RoPE) instead of storing
/// it, so the GGUF holds no key for it.
fn smollm3_config(_: &GgufFile, cfg: &mut ConfigFields) -> Result<()> {
    cfg.insert("no_rope_layer_interval".into(), 4.into());
    Ok(())
}

impl GgufFile {
    /// This file's architecture row, or an error naming the file, the architecture and the
    /// supported ones.
    pub fn arch_row(&self) -> Result<&'static GgufArch> {
        let arch = self.architecture()?;
        gguf_arch(arch).ok_or_else(|| Error::UnsupportedArchitecture {
            path: self.path().to_path_buf(),
            model_type: printable(arch).into_owned(),
            supported: format!("{} (GGUF general.architecture)", supported_archs()),
        })
    }

    /// An HF `config.json` equivalent, so the family's config parser can read it: the common
    /// `<arch>.*` keys, then the architecture's own ([`GgufArch::config`]).
    pub fn hf_config(&self) -> Result<Value> {
        let row = self.arch_row()?;
        let arch = row.arch;
        let key = |k: &str| format!("{arch}.{k}");
        let heads = self.get_usize(&key("attention.head_count"))?;
        let kv_heads = self
            .opt(&key("attention.head_count_kv"), Self::get_usize)?
            .unwrap_or(heads);
        let vocab_size = match self.tensor_info("token_embd.weight") {
            Some(info) => info.shape.dims()[0],
            None => self.get_array("tokenizer.ggml.tokens")?.len(),
        };
        if self.tensor_info("rope_freqs.weight").is_some() {
            // Llama 3.1-style scaled RoPE: llama.cpp stores per-frequency factors we do not map.
            return Err(Error::Unsupported(format!(
                "{}: `rope_freqs.weight` (Llama 3.1-style RoPE scaling) is not supported",
                self.path().display()
            )));
        }
        let eps = self.get_f32(&key("attention.layer_norm_rms_epsilon"))?;
        let theta = self
            .opt(&key("rope.freq_base"), Self::get_f32)?
            .unwrap_or(1e4);
        let mut cfg = json!({
            "architectures": [row.class],
            "model_type": row.model_type,
            "hidden_act": "silu",
            "hidden_size": self.get_usize(&key("embedding_length"))?,
            "intermediate_size": self.get_usize(&key("feed_forward_length"))?,
            "num_hidden_layers": self.get_usize(&key("block_count"))?,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "rms_norm_eps": decimal(eps),
            "rope_theta": decimal(theta),
            "max_position_embeddings": self.get_usize(&key("context_length"))?,
            "vocab_size": vocab_size,
            "tie_word_embeddings": self.tensor_info("output.weight").is_none(),
        });
        let Value::Object(obj) = &mut cfg else {
            return Err(Error::bad_config(
                self.path(),
                "internal: config is not an object",
            ));
        };
        if let Some(head_dim) = self.opt(&key("attention.key_length"), Self::get_usize)? {
            obj.insert("head_dim".into(), head_dim.into());
        }
        for (name, gguf_key) in [
            ("bos_token_id", "tokenizer.ggml.bos_token_id"),
            ("eos_token_id", "tokenizer.ggml.eos_token_id"),
            ("pad_token_id", "tokenizer.ggml.padding_token_id"),
        ] {
            if let Some(id) = self.opt(gguf_key, Self::get_u32)? {
                obj.insert(name.into(), id.into());
            }
        }
        if let Some(kind) = self.opt(&key("rope.scaling.type"), Self::get_str)? {
            match kind {
                "none" => {}
                "linear" => {
                    let factor = decimal(self.get_f32(&key("rope.scaling.factor"))?);
                    obj.insert(
                        "rope_scaling".into(),
                        json!({"type": "linear", "rope_type": "linear", "factor": factor}),
                    );
                }
                other => {
                    return Err(Error::Unsupported(format!(
                        "{}: RoPE scaling `{}` ({}) is not supported",
                        self.path().display(),
                        printable(other),
                        key("rope.scaling.type")
                    )))
                }
            }
        }
        (row.config)(self, obj)?;
        Ok(cfg)
    }
}

/// An f32 metadata value as the shortest decimal that reads back to it (1e-5, not
/// 9.999999747378752e-6), as config.json would spell it.
pub fn decimal(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}
