//! What llama.cpp's converter does per architecture, as data: the `general.architecture` it
//! writes, the HF `model_type` it came from, extra or renamed tensor names, whether it permuted
//! q/k, and the metadata keys beyond the common ones that map back to config.json fields.
//! A new family adds one row to [`GGUF_ARCHS`] (and, when needed, a small `config` function).

use candle_core::quantized::gguf_file::Value as GgufValue;
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
    /// llama.cpp's converter added this to every `*norm.weight` (1 for Gemma, whose RMSNorm
    /// scales by `1 + weight`); wick subtracts it on load, so weights keep HF's meaning.
    pub norm_shift: f32,
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

/// Gemma's sandwich norms: llama.cpp calls the pre-MLP norm `ffn_norm` (Llama's name for
/// post_attention_layernorm, which in Gemma follows attention).
const GEMMA_NORMS: &[(&str, &str)] = &[
    ("post_attention_layernorm", "post_attention_norm"),
    ("pre_feedforward_layernorm", "ffn_norm"),
    ("post_feedforward_layernorm", "post_ffw_norm"),
];

const GEMMA3_LAYER: &[(&str, &str)] = &[
    ("post_attention_layernorm", "post_attention_norm"),
    ("pre_feedforward_layernorm", "ffn_norm"),
    ("post_feedforward_layernorm", "post_ffw_norm"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
];

pub const GGUF_ARCHS: &[GgufArch] = &[
    GgufArch {
        arch: "llama",
        model_type: "llama",
        class: "LlamaForCausalLM",
        permuted_qk: true,
        norm_shift: 0.0,
        global: &[],
        layer: &[],
        config: llama_config,
    },
    GgufArch {
        arch: "qwen2",
        model_type: "qwen2",
        class: "Qwen2ForCausalLM",
        permuted_qk: false,
        norm_shift: 0.0,
        global: &[],
        layer: &[],
        config: no_extra,
    },
    GgufArch {
        arch: "qwen3",
        model_type: "qwen3",
        class: "Qwen3ForCausalLM",
        permuted_qk: false,
        norm_shift: 0.0,
        global: &[],
        layer: QK_NORM,
        config: no_extra,
    },
    GgufArch {
        arch: "smollm3",
        model_type: "smollm3",
        class: "SmolLM3ForCausalLM",
        permuted_qk: true,
        norm_shift: 0.0,
        global: &[],
        layer: &[],
        config: smollm3_config,
    },
    GgufArch {
        arch: "phi3",
        model_type: "phi3",
        class: "Phi3ForCausalLM",
        permuted_qk: false,
        norm_shift: 0.0,
        global: &[],
        layer: PHI3_FUSED,
        config: phi3_config,
    },
    GgufArch {
        arch: "gemma2",
        model_type: "gemma2",
        class: "Gemma2ForCausalLM",
        permuted_qk: false,
        norm_shift: 1.0,
        global: &[],
        layer: GEMMA_NORMS,
        config: gemma2_config,
    },
    GgufArch {
        arch: "gemma3",
        model_type: "gemma3_text",
        class: "Gemma3ForCausalLM",
        permuted_qk: false,
        norm_shift: 1.0,
        global: &[],
        layer: GEMMA3_LAYER,
        config: gemma3_config,
    },
];

/// Phi-3's fused projections: llama.cpp keeps `qkv_proj` whole and stores `gate_up_proj` (gate
/// rows, then up rows) under `ffn_up`.
const PHI3_FUSED: &[(&str, &str)] = &[
    ("self_attn.qkv_proj", "attn_qkv"),
    ("mlp.gate_up_proj", "ffn_up"),
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

/// Phi-3's converter writes the rotary width as `rope.dimension_count` (partial rotary), the
/// window as `attention.sliding_window` (0: none, Phi-4-mini) and LongRoPE as two tensors,
/// `rope_factors_long` / `rope_factors_short`, with `rope.scaling.original_context_length` and
/// `rope.scaling.attn_factor`.
fn phi3_config(file: &GgufFile, cfg: &mut ConfigFields) -> Result<()> {
    let key = |k: &str| format!("phi3.{k}");
    let heads = file.get_usize(&key("attention.head_count"))?;
    let hidden = file.get_usize(&key("embedding_length"))?;
    let head_dim = file
        .opt(&key("attention.key_length"), GgufFile::get_usize)?
        .unwrap_or(hidden / heads.max(1));
    if let Some(rot) = file.opt(&key("rope.dimension_count"), GgufFile::get_usize)? {
        cfg.insert(
            "partial_rotary_factor".into(),
            json!(rot as f64 / head_dim as f64),
        );
    }
    let window = file
        .opt(&key("attention.sliding_window"), GgufFile::get_usize)?
        .filter(|&w| w > 0);
    cfg.insert("sliding_window".into(), json!(window));
    let (Some(_), Some(_)) = (
        file.tensor_info("rope_factors_long.weight"),
        file.tensor_info("rope_factors_short.weight"),
    ) else {
        return Ok(());
    };
    let factors = |name: &str| -> Result<Vec<f64>> {
        let cpu = candle_core::Device::Cpu;
        let t = file.qtensor(name, &cpu)?.dequantize(&cpu)?.flatten_all()?;
        Ok(t.to_vec1::<f32>()?.into_iter().map(decimal).collect())
    };
    let max_pos = file.get_usize(&key("context_length"))?;
    let original = file
        .opt(
            &key("rope.scaling.original_context_length"),
            GgufFile::get_usize,
        )?
        .unwrap_or(max_pos);
    let mut rope = json!({
        "type": "longrope",
        "rope_type": "longrope",
        "long_factor": factors("rope_factors_long.weight")?,
        "short_factor": factors("rope_factors_short.weight")?,
    });
    // The converter stores the default factor rounded to f32; keep it only if it differs.
    if let Some(attn) = file.opt(&key("rope.scaling.attn_factor"), GgufFile::get_f32)? {
        let default = crate::ops::rope::RopeScaling::longrope_attention_factor(
            max_pos as f64 / original as f64,
            original,
        );
        if default as f32 != attn {
            rope["attention_factor"] = json!(decimal(attn));
        }
    }
    cfg.insert("original_max_position_embeddings".into(), original.into());
    cfg.insert("rope_scaling".into(), rope);
    Ok(())
}

/// What both Gemma rows share: GELU-tanh, and the attention scale llama.cpp uses instead of
/// storing `query_pre_attn_scalar`: 1/sqrt(head_dim), except for the 27B models (`big_layers`
/// blocks), which scale by 1/sqrt(hidden / heads) as Google's reference does.
fn gemma_common(file: &GgufFile, cfg: &mut ConfigFields, big_layers: usize) -> Result<()> {
    let arch = file.architecture()?;
    let key = |k: &str| format!("{arch}.{k}");
    cfg.insert("hidden_activation".into(), "gelu_pytorch_tanh".into());
    let layers = file.get_usize(&key("block_count"))?;
    let scalar = if layers == big_layers {
        file.get_usize(&key("embedding_length"))? / file.get_usize(&key("attention.head_count"))?
    } else {
        file.get_usize(&key("attention.key_length"))?
    };
    cfg.insert("query_pre_attn_scalar".into(), scalar.into());
    Ok(())
}

/// `layer_types` from `attention.sliding_window_pattern` as llama.cpp reads it: per-layer
/// booleans, or a period `n` (layer `i` slides unless `i % n == n - 1`; 0: every layer), or
/// `default` when absent.
fn gemma_layer_types(file: &GgufFile, default: usize) -> Result<Value> {
    let arch = file.architecture()?;
    let layers = file.get_usize(&format!("{arch}.block_count"))?;
    let key = format!("{arch}.attention.sliding_window_pattern");
    let period = |n: usize| (0..layers).map(|i| n == 0 || i % n < n - 1).collect();
    let bad = |msg: &str| Error::bad_config(file.path(), format!("metadata `{key}`: {msg}"));
    let sliding: Vec<bool> = match file.opt(&key, GgufFile::value)? {
        Some(GgufValue::Array(flags)) => flags
            .iter()
            .map(|f| match f {
                GgufValue::Bool(b) => Ok(*b),
                _ => Err(bad("expected booleans")),
            })
            .collect::<Result<_>>()?,
        Some(_) => period(file.get_usize(&key)?),
        None => period(default),
    };
    if sliding.len() != layers {
        return Err(bad(&format!(
            "{} entries for {layers} layers",
            sliding.len()
        )));
    }
    let name = |s: &bool| {
        if *s {
            "sliding_attention"
        } else {
            "full_attention"
        }
    };
    Ok(sliding.iter().map(name).collect::<Vec<_>>().into())
}

/// An optional f32 key as a config value (null when absent).
fn opt_decimal(file: &GgufFile, key: &str) -> Result<Value> {
    Ok(match file.opt(key, GgufFile::get_f32)? {
        Some(v) => decimal(v).into(),
        None => Value::Null,
    })
}

/// Gemma 2: soft-caps (llama.cpp's defaults 50 / 30 when absent), window (4096), every 2nd
/// layer global. One RoPE base for both layer kinds, as in transformers.
fn gemma2_config(file: &GgufFile, cfg: &mut ConfigFields) -> Result<()> {
    gemma_common(file, cfg, 46)?;
    let key = |k: &str| format!("gemma2.{k}");
    let cap = |k: &str, default: f32| -> Result<f64> {
        Ok(decimal(
            file.opt(&key(k), GgufFile::get_f32)?.unwrap_or(default),
        ))
    };
    cfg.insert(
        "attn_logit_softcapping".into(),
        cap("attn_logit_softcapping", 50.0)?.into(),
    );
    cfg.insert(
        "final_logit_softcapping".into(),
        cap("final_logit_softcapping", 30.0)?.into(),
    );
    let window = file.opt(&key("attention.sliding_window"), GgufFile::get_usize)?;
    cfg.insert("sliding_window".into(), window.unwrap_or(4096).into());
    cfg.insert("layer_types".into(), gemma_layer_types(file, 2)?);
    let base = file.opt(&key("rope.freq_base"), GgufFile::get_f32)?;
    let local = file.opt(&key("rope.freq_base_swa"), GgufFile::get_f32)?;
    if local.is_some_and(|l| Some(l) != base) {
        return Err(Error::Unsupported(format!(
            "{}: `gemma2.rope.freq_base_swa` differs from `gemma2.rope.freq_base` (Gemma 2 has \
             one RoPE base)",
            file.path().display()
        )));
    }
    Ok(())
}

/// Gemma 3: a window (and then five sliding layers in six, with the local base
/// `rope.freq_base_swa`, 10000 when absent) or, without one, global attention everywhere;
/// optional final soft-cap; `rope.freq_base` and the RoPE scaling are the global layers'.
fn gemma3_config(file: &GgufFile, cfg: &mut ConfigFields) -> Result<()> {
    gemma_common(file, cfg, 62)?;
    let key = |k: &str| format!("gemma3.{k}");
    cfg.insert("attn_logit_softcapping".into(), Value::Null);
    let capping = opt_decimal(file, &key("final_logit_softcapping"))?;
    cfg.insert("final_logit_softcapping".into(), capping);
    let window = file.opt(&key("attention.sliding_window"), GgufFile::get_usize)?;
    match window.filter(|&w| w > 0) {
        Some(w) => {
            cfg.insert("sliding_window".into(), w.into());
            cfg.insert("layer_types".into(), gemma_layer_types(file, 6)?);
            let local = file.opt(&key("rope.freq_base_swa"), GgufFile::get_f32)?;
            cfg.insert(
                "rope_local_base_freq".into(),
                decimal(local.unwrap_or(1e4)).into(),
            );
        }
        None => {
            let layers = file.get_usize(&key("block_count"))?;
            cfg.insert("sliding_window".into(), Value::Null);
            cfg.insert("layer_types".into(), vec!["full_attention"; layers].into());
        }
    }
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
