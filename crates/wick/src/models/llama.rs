//! The Llama decoder family: Llama, Qwen2 (q/k/v bias) and Mistral (sliding window).
//!
//! Weights use Hugging Face names and layout (`model.layers.0.self_attn.q_proj.weight`); a GGUF
//! source maps and un-permutes on its side and may keep weights quantized.
//!
//! Batches: `input_ids` is (batch, seq) u32 with an optional `attention_mask` (batch, seq) of 1
//! for real tokens and 0 for padding. Padding may sit anywhere; positions count real tokens only
//! and padded keys are masked, so each sequence gets the logits it would get alone. For
//! generation pad on the **left**: every sequence's last column is then a real token, which is
//! what [`LlamaModel::forward_last`] returns, and decode steps append one column to all.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::io::json::read_json;
use crate::io::weights::WeightView;
use crate::nn::{Embedding, KvCache, Linear, RmsNorm, Step};
use crate::ops::attention::sdpa_causal;
use crate::ops::decode::{DecoderWeights, LayerWeights};
use crate::ops::rope::{cos_sin, inv_freq, rope, RopeScaling};
use crate::ops::swiglu::swiglu;

mod batched_decode;

pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama", "qwen2", "mistral"];

/// The projections of a decoder layer (HF / PEFT module names), the ones LoRA can target.
pub const PROJECTIONS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// config.json as written by transformers (4.x `rope_theta` + `rope_scaling` or 5.x
/// `rope_parameters`); unknown keys are ignored.
#[derive(Deserialize)]
struct RawConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    partial_rotary_factor: Option<f64>,
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default = "default_act")]
    hidden_act: String,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    layer_types: Option<Vec<String>>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}

/// A validated Llama-family configuration with every default resolved.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2 always; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// o_proj carries a bias (Llama with `attention_bias`).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Sliding attention window of each layer (None: full attention).
    pub layer_windows: Vec<Option<usize>>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl LlamaConfig {
    /// Reads and validates a config.json, naming the file in every error.
    pub fn from_file(path: &Path) -> Result<Self> {
        let value: Value = read_json(path)?;
        Self::from_value(value, path)
    }

    /// Validates a parsed config; `origin` names its source in errors (a config.json, or the
    /// GGUF file a config was derived from).
    pub fn from_value(value: Value, origin: &Path) -> Result<Self> {
        let bad = |msg: String| Error::bad_config(origin, msg);
        let model_type = match value.get("model_type") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err(bad("`model_type` is not a string".into())),
            None => return Err(bad("missing field `model_type`".into())),
        };
        if !SUPPORTED_MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(Error::UnsupportedArchitecture {
                path: origin.to_path_buf(),
                model_type,
                supported: SUPPORTED_MODEL_TYPES.join(", "),
            });
        }
        let raw: RawConfig = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let heads = raw.num_attention_heads;
        if heads == 0 || raw.num_hidden_layers == 0 {
            return Err(bad(
                "num_attention_heads and num_hidden_layers must be positive".into(),
            ));
        }
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(bad(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )));
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if raw.hidden_size.is_multiple_of(heads) => raw.hidden_size / heads,
            None => {
                return Err(bad(format!(
                    "hidden_size {} is not divisible by num_attention_heads {heads}",
                    raw.hidden_size
                )))
            }
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(bad(format!(
                "head_dim {head_dim} must be even and positive"
            )));
        }
        if raw.hidden_act != "silu" {
            return Err(bad(format!(
                "hidden_act `{}` is unsupported (supported: silu)",
                raw.hidden_act
            )));
        }
        let max_pos = raw
            .max_position_embeddings
            .unwrap_or(match model_type.as_str() {
                "qwen2" => 32768,
                "mistral" => 131072,
                _ => 2048,
            });
        let (rope_theta, rope_scaling) = parse_rope(&raw, max_pos).map_err(bad)?;
        let layer_windows = layer_windows(&raw).map_err(bad)?;
        let llama = model_type == "llama";
        Ok(LlamaConfig {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings: max_pos,
            tie_word_embeddings: raw.tie_word_embeddings,
            qkv_bias: model_type == "qwen2" || (llama && raw.attention_bias),
            o_bias: llama && raw.attention_bias,
            mlp_bias: llama && raw.mlp_bias,
            layer_windows,
            bos_token_id: token_ids(raw.bos_token_id.as_ref()).first().copied(),
            eos_token_ids: token_ids(raw.eos_token_id.as_ref()),
            model_type,
        })
    }
}

/// `eos_token_id` may be a number, a list or null.
fn token_ids(v: Option<&Value>) -> Vec<u32> {
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

fn parse_rope(raw: &RawConfig, max_pos: usize) -> std::result::Result<(f64, RopeScaling), String> {
    // transformers 5 writes `rope_parameters`; 4.x wrote `rope_theta` and `rope_scaling`.
    let params = match (&raw.rope_parameters, &raw.rope_scaling) {
        (Some(p @ Value::Object(_)), _) => Some(p),
        (_, Some(p @ Value::Object(_))) => Some(p),
        (Some(Value::Null) | None, Some(Value::Null) | None) => None,
        _ => return Err("`rope_parameters` / `rope_scaling` is not an object".into()),
    };
    let field = |name: &str| params.and_then(|p| p.get(name));
    let num = |name: &str| field(name).and_then(Value::as_f64);
    if field("full_attention").is_some() || field("sliding_attention").is_some() {
        return Err("per-layer-type rope_parameters are unsupported".into());
    }
    let theta = num("rope_theta").or(raw.rope_theta).unwrap_or(10000.0);
    let partial = num("partial_rotary_factor").or(raw.partial_rotary_factor);
    if partial.is_some_and(|p| p != 1.0) {
        return Err(format!(
            "partial_rotary_factor {partial:?} is unsupported (supported: 1.0)"
        ));
    }
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
    Ok((theta, scaling))
}

/// Which layers use a sliding window, as transformers decides it: Mistral everywhere when
/// `sliding_window` is set; Qwen2 per `layer_types`, else from `use_sliding_window` and
/// `max_window_layers`; Llama never.
fn layer_windows(raw: &RawConfig) -> std::result::Result<Vec<Option<usize>>, String> {
    let n = raw.num_hidden_layers;
    let window = raw.sliding_window;
    Ok(match raw.model_type.as_str() {
        "mistral" => vec![window; n],
        "qwen2" => {
            let window = window.filter(|_| raw.use_sliding_window == Some(true));
            match &raw.layer_types {
                Some(types) if types.len() != n => {
                    return Err(format!(
                        "layer_types has {} entries for {n} layers",
                        types.len()
                    ))
                }
                Some(types) => types
                    .iter()
                    .map(|t| match t.as_str() {
                        "sliding_attention" => Ok(window),
                        "full_attention" => Ok(None),
                        other => Err(format!("layer type `{other}` is unsupported")),
                    })
                    .collect::<std::result::Result<_, _>>()?,
                None => {
                    let from = raw.max_window_layers.unwrap_or(28);
                    (0..n).map(|i| window.filter(|_| i >= from)).collect()
                }
            }
        }
        _ => vec![None; n],
    })
}

struct DecoderLayer {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    window: Option<usize>,
}

/// Per-forward inputs shared by every layer.
struct Context<'a> {
    cos: Tensor,
    sin: Tensor,
    full_bias: Option<Tensor>,
    window_bias: Option<Tensor>,
    step: &'a Step,
}

pub struct LlamaModel {
    cfg: LlamaConfig,
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    inv_freq: Tensor,
    dtype: DType,
    device: Device,
}

impl LlamaModel {
    /// Builds the model from `vb` at the checkpoint root (`model.…` and `lm_head.…`; a root
    /// without the `model.` prefix is accepted). Quantized weights stay quantized.
    pub fn new(cfg: &LlamaConfig, vb: &WeightView) -> Result<Self> {
        let body =
            if !vb.contains("model.embed_tokens.weight") && vb.contains("embed_tokens.weight") {
                vb.clone()
            } else {
                vb.pp("model")
            };
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let embed_tokens = Embedding::load(&body.pp("embed_tokens"), v, h)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::load(cfg, &body.pp("layers").pp(i.to_string()), i))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(&body.pp("norm"), h, cfg.rms_norm_eps)?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.as_linear()?
        } else {
            Linear::load(&vb.pp("lm_head"), h, v, false)?
        };
        let freqs = inv_freq(cfg.head_dim, cfg.rope_theta, &cfg.rope_scaling);
        let inv_freq = Tensor::new(freqs, vb.device())?;
        Ok(LlamaModel {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            inv_freq,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Every projection of every layer with its module path
    /// (`model.layers.0.self_attn.q_proj`, `model.layers.0.mlp.down_proj`), layer by layer in
    /// [`PROJECTIONS`] order: the modules LoRA attaches to.
    pub fn projections(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::with_capacity(self.layers.len() * PROJECTIONS.len());
        for (i, l) in self.layers.iter().enumerate() {
            let named = PROJECTIONS.iter().zip(l.projections());
            out.extend(named.map(|(n, p)| (module_path(i, n), p)));
        }
        out
    }

    /// [`LlamaModel::projections`], mutable (to attach, merge or remove adapters).
    pub fn projections_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::with_capacity(self.layers.len() * PROJECTIONS.len());
        for (i, l) in self.layers.iter_mut().enumerate() {
            let named = PROJECTIONS.iter().zip(l.projections_mut());
            out.extend(named.map(|(n, p)| (module_path(i, n), p)));
        }
        out
    }

    /// Every weight under its HF name as a float tensor (quantized ones dequantized), as
    /// `save_pretrained` would write them: the LM head is left out when tied to the
    /// embeddings. Adapters are not included (merge them first to bake them in).
    pub fn named_weights(&self) -> Result<Vec<(String, Tensor)>> {
        let embed = match &self.embed_tokens {
            Embedding::Dense(w) => w.clone(),
            Embedding::Quantized { table, .. } => table.dequantize(&self.device)?,
        };
        let mut out = vec![("model.embed_tokens.weight".to_string(), embed)];
        for (i, l) in self.layers.iter().enumerate() {
            for (name, norm) in [
                ("input_layernorm", &l.input_layernorm),
                ("post_attention_layernorm", &l.post_attention_layernorm),
            ] {
                let w = norm.weight().clone();
                out.push((format!("model.layers.{i}.{name}.weight"), w));
            }
            for (name, p) in PROJECTIONS.iter().zip(l.projections()) {
                let path = module_path(i, name);
                out.push((format!("{path}.weight"), p.dense_weight()?));
                if let Some(b) = p.bias() {
                    out.push((format!("{path}.bias"), b.clone()));
                }
            }
        }
        out.push(("model.norm.weight".to_string(), self.norm.weight().clone()));
        if !self.cfg.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), self.lm_head.dense_weight()?));
        }
        Ok(out)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weights the decode fast path ([`crate::ops::decode::GraphDecoder`]) runs on; None
    /// when this model needs the general path (quantized or adapted weights, sliding windows,
    /// o/mlp biases).
    pub fn decoder_weights(&self) -> Option<DecoderWeights> {
        let dense = |l: &Linear| -> Option<Tensor> {
            let unadapted = l.lora().is_none_or(|a| a.is_merged());
            l.weight().filter(|_| unadapted).cloned()
        };
        let Embedding::Dense(embed) = &self.embed_tokens else {
            return None;
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            if l.window.is_some() || l.o_proj.bias().is_some() || l.down_proj.bias().is_some() {
                return None;
            }
            let qkv_bias = match (l.q_proj.bias(), l.k_proj.bias(), l.v_proj.bias()) {
                (Some(q), Some(k), Some(v)) => Some((q.clone(), k.clone(), v.clone())),
                (None, None, None) => None,
                _ => return None,
            };
            layers.push(LayerWeights {
                input_norm: l.input_layernorm.weight().clone(),
                post_norm: l.post_attention_layernorm.weight().clone(),
                q: dense(&l.q_proj)?,
                k: dense(&l.k_proj)?,
                v: dense(&l.v_proj)?,
                qkv_bias,
                o: dense(&l.o_proj)?,
                gate: dense(&l.gate_proj)?,
                up: dense(&l.up_proj)?,
                down: dense(&l.down_proj)?,
            });
        }
        Some(DecoderWeights {
            embed: embed.clone(),
            layers,
            norm: self.norm.weight().clone(),
            lm_head: dense(&self.lm_head)?,
            inv_freq: self.inv_freq.clone(),
            heads: self.cfg.num_attention_heads,
            kv_heads: self.cfg.num_key_value_heads,
            head_dim: self.cfg.head_dim,
            eps: self.cfg.rms_norm_eps,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// An empty cache for `batch` sequences of up to `max_len` columns (prompt, padding and
    /// generated tokens), allocated once in the model's dtype on its device.
    pub fn new_cache(&self, batch: usize, max_len: usize) -> Result<KvCache> {
        KvCache::new(
            self.cfg.num_hidden_layers,
            batch,
            self.cfg.num_key_value_heads,
            self.cfg.head_dim,
            max_len,
            self.dtype,
            &self.device,
        )
    }

    /// Logits (batch, seq, vocab) for `input_ids` (batch, seq) appended after what `cache`
    /// holds (prefill when it is empty, a decode step for seq = 1). `attention_mask`
    /// (batch, seq), 1 real / 0 padding, covers only the new tokens; None means all real.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.run(input_ids, attention_mask, Some(cache), Rows::All)
    }

    /// Like [`LlamaModel::forward`] but only the last column's logits (batch, vocab): the next
    /// token of every sequence when padding is on the left. Skips the LM head elsewhere.
    pub fn forward_last(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        Ok(self
            .run(input_ids, attention_mask, Some(cache), Rows::Last)?
            .squeeze(1)?)
    }

    /// Logits (batch, seq, vocab) of a whole sequence without a cache; differentiable (the
    /// training and scoring path).
    pub fn forward_uncached(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.run(input_ids, attention_mask, None, Rows::All)
    }

    /// Logits (n, vocab) at the flat positions `positions` (u32, index `b · seq + t`) of a whole
    /// sequence without a cache; differentiable. Training needs logits only where a token is
    /// trained on, and the LM head over a 49k–150k vocabulary is the largest GEMM of a step.
    pub fn logits_at(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        positions: &Tensor,
    ) -> Result<Tensor> {
        self.run(input_ids, attention_mask, None, Rows::At(positions))
    }

    fn run(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        rows: Rows,
    ) -> Result<Tensor> {
        let (b, s) = match *input_ids.dims() {
            [b, s] if b > 0 && s > 0 => (b, s),
            ref d => {
                return Err(invalid(
                    "input_ids",
                    format!("expected (batch, seq), got {d:?}"),
                ))
            }
        };
        let mask = match attention_mask {
            None => None,
            Some(m) if m.dims() == [b, s] => {
                let m = m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                Some(m.iter().map(|&x| u8::from(x != 0.0)).collect::<Vec<_>>())
            }
            Some(m) => {
                let msg = format!("shape {:?} differs from input_ids {:?}", m.dims(), [b, s]);
                return Err(invalid("attention_mask", msg));
            }
        };
        let step = match cache.as_deref() {
            Some(c) if c.num_layers() != self.layers.len() => {
                let msg = format!(
                    "{} layers for a model with {}",
                    c.num_layers(),
                    self.layers.len()
                );
                return Err(invalid("cache", msg));
            }
            Some(c) => c.begin(b, s, mask.as_deref())?,
            None => Step::fresh(b, s, mask.as_deref()),
        };
        let (cos, sin) = cos_sin(&self.inv_freq, &step.positions(&self.device)?, self.dtype)?;
        // One mask per attention kind in use (all sliding layers share the configured window).
        let window = self.layers.iter().find_map(|l| l.window);
        let any_full = self.layers.iter().any(|l| l.window.is_none());
        let ctx = Context {
            cos,
            sin,
            full_bias: match any_full {
                true => step.attention_bias(None, &self.device)?,
                false => None,
            },
            window_bias: match window {
                Some(w) => step.attention_bias(Some(w), &self.device)?,
                None => None,
            },
            step: &step,
        };
        let mut x = self
            .embed_tokens
            .forward(&input_ids.to_dtype(DType::U32)?)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &ctx, cache.as_deref_mut().map(|c| (c, i)), &self.cfg)?;
        }
        if let Some(c) = cache {
            c.commit(step);
        }
        let x = match rows {
            Rows::All => x,
            Rows::Last => x.narrow(1, s - 1, 1)?,
            Rows::At(positions) => {
                let hidden = x.dim(2)?;
                x.reshape((b * s, hidden))?.index_select(positions, 0)?
            }
        };
        Ok(self.lm_head.forward(&self.norm.forward(&x)?)?)
    }
}

/// Which positions [`LlamaModel::run`] computes logits for.
enum Rows<'a> {
    All,
    /// The last column: (batch, 1, vocab).
    Last,
    /// Flat positions `b · seq + t`: (n, vocab).
    At(&'a Tensor),
}

/// `model.layers.{layer}.self_attn.q_proj` / `model.layers.{layer}.mlp.gate_proj`.
fn module_path(layer: usize, projection: &str) -> String {
    let block = match projection {
        "gate_proj" | "up_proj" | "down_proj" => "mlp",
        _ => "self_attn",
    };
    format!("model.layers.{layer}.{block}.{projection}")
}

fn invalid(name: &'static str, message: String) -> Error {
    Error::InvalidArgument { name, message }
}

impl DecoderLayer {
    fn load(cfg: &LlamaConfig, vb: &WeightView, index: usize) -> Result<Self> {
        let (h, hd, i) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
        let (q_out, kv_out) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let att = vb.pp("self_attn");
        let mlp = vb.pp("mlp");
        let eps = cfg.rms_norm_eps;
        Ok(DecoderLayer {
            q_proj: Linear::load(&att.pp("q_proj"), h, q_out, cfg.qkv_bias)?,
            k_proj: Linear::load(&att.pp("k_proj"), h, kv_out, cfg.qkv_bias)?,
            v_proj: Linear::load(&att.pp("v_proj"), h, kv_out, cfg.qkv_bias)?,
            o_proj: Linear::load(&att.pp("o_proj"), q_out, h, cfg.o_bias)?,
            gate_proj: Linear::load(&mlp.pp("gate_proj"), h, i, cfg.mlp_bias)?,
            up_proj: Linear::load(&mlp.pp("up_proj"), h, i, cfg.mlp_bias)?,
            down_proj: Linear::load(&mlp.pp("down_proj"), i, h, cfg.mlp_bias)?,
            input_layernorm: RmsNorm::load(&vb.pp("input_layernorm"), h, eps)?,
            post_attention_layernorm: RmsNorm::load(&vb.pp("post_attention_layernorm"), h, eps)?,
            window: cfg.layer_windows.get(index).copied().flatten(),
        })
    }

    /// The projections in [`PROJECTIONS`] order.
    fn projections(&self) -> [&Linear; 7] {
        [
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.o_proj,
            &self.gate_proj,
            &self.up_proj,
            &self.down_proj,
        ]
    }

    fn projections_mut(&mut self) -> [&mut Linear; 7] {
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
            &mut self.gate_proj,
            &mut self.up_proj,
            &mut self.down_proj,
        ]
    }

    fn forward(
        &self,
        x: &Tensor,
        ctx: &Context,
        cache: Option<(&mut KvCache, usize)>,
        cfg: &LlamaConfig,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (heads, kv_heads, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let h = self.input_layernorm.forward(x)?;
        // (b, s, heads·hd) -> (b, heads, s, hd); for s = 1 the transpose is free.
        let split = |t: Tensor, n: usize| t.reshape((b, s, n, hd))?.transpose(1, 2);
        let q = rope(&split(self.q_proj.forward(&h)?, heads)?, &ctx.cos, &ctx.sin)?;
        let k = rope(
            &split(self.k_proj.forward(&h)?, kv_heads)?,
            &ctx.cos,
            &ctx.sin,
        )?;
        let v = split(self.v_proj.forward(&h)?, kv_heads)?;
        let (k, v) = match cache {
            Some((c, layer)) => c.write(layer, ctx.step, &k, &v)?,
            None => (k, v),
        };
        let bias = if self.window.is_some() {
            ctx.window_bias.as_ref()
        } else {
            ctx.full_bias.as_ref()
        };
        // Every mask this model builds hides later keys (see `Step::attention_bias`).
        let attn = sdpa_causal(&q, &k, &v, bias, 1.0 / (hd as f64).sqrt())?;
        let attn = attn.transpose(1, 2)?.reshape((b, s, heads * hd))?;
        let x = (x + self.o_proj.forward(&attn)?)?;
        let h = self.post_attention_layernorm.forward(&x)?;
        let mlp = swiglu(&self.gate_proj.forward(&h)?, &self.up_proj.forward(&h)?)?;
        Ok((x + self.down_proj.forward(&mlp)?)?)
    }
}
