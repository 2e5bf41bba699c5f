//! The decoder every causal-LM family shares: embedding, a stack of [`layer`] blocks (attention +
//! gated MLP, each with its norms), final norm, LM head. A family (models/llama.rs, qwen3.rs, …)
//! only turns its config.json into a [`DecoderConfig`]; everything that differs between
//! families is a field there (optional q/k norms, Gemma's (1 + w) norms and sandwich norms,
//! embedding scale, activation, attention scale, soft-capping, per-layer window and RoPE,
//! partial rotary, fused projections).
//!
//! Weights use Hugging Face names and layout (`model.layers.0.self_attn.q_proj.weight`); a GGUF
//! source maps and un-permutes on its side and may keep weights quantized.
//!
//! Batches: `input_ids` is (batch, seq) u32 with an optional `attention_mask` (batch, seq) of 1
//! for real tokens and 0 for padding. Padding may sit anywhere; positions count real tokens only
//! and padded keys are masked, so each sequence gets the logits it would get alone. For
//! generation pad on the **left**: every sequence's last column is then a real token, which is
//! what [`DecoderModel::forward_last`] returns, and decode steps append one column to all.

use candle_core::{DType, Device, Module, Tensor};

use crate::error::{Error, Result};
use crate::io::weights::WeightView;
use crate::nn::{Embedding, KvCache, Linear, RmsNorm, Step};
use crate::ops::decode::{DecoderWeights, LayerWeights};
use crate::ops::rope::{RopeScaling, Rotary};

mod batched;
mod layer;
mod long_rope;

use layer::DecoderLayer;

/// The gated MLP's activation: `down(act(gate(x)) * up(x))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu` (Llama, Qwen, Phi-3).
    Silu,
    /// `gelu_pytorch_tanh` (Gemma).
    GeluTanh,
}

/// Where the norms of a layer sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormLayout {
    /// `x + attn(input_layernorm(x))`, then `h + mlp(post_attention_layernorm(h))` (Llama).
    Pre,
    /// Gemma 2/3: `x + post_attention_layernorm(attn(input_layernorm(x)))`, then
    /// `h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))`.
    Sandwich,
}

/// Rotary embedding of one attention kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub scaling: RopeScaling,
    /// How many leading features of each head rotate (`head_dim` unless partial rotary).
    pub rotary_dim: usize,
    /// Multiplies cos and sin (LongRoPE / YaRN attention factor; 1.0 otherwise).
    pub attention_factor: f64,
}

/// What a layer's attention looks like: its sliding window (None: full attention) and its RoPE
/// (None: no positional rotation, SmolLM3's NoPE layers). Layers index a small table of these.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionKind {
    pub window: Option<usize>,
    pub rope: Option<Rope>,
}

/// A validated decoder configuration with every default resolved, as a family's parser makes
/// it from config.json (see models/). HF field names where HF has one.
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2 always; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// o_proj carries a bias.
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Per-head RMSNorm over head_dim of q and k (`self_attn.q_norm` / `k_norm`), before RoPE.
    pub qk_norm: bool,
    /// Every RMSNorm multiplies by `norm_offset + weight` (0 usually, 1 for Gemma).
    pub norm_offset: f64,
    pub norm_layout: NormLayout,
    /// Embeddings are multiplied by this, rounded to the model dtype (Gemma: sqrt(hidden)).
    pub embed_scale: Option<f64>,
    pub activation: Activation,
    /// Attention score scale (1/sqrt(head_dim) unless `query_pre_attn_scalar` says otherwise).
    pub attn_scale: f64,
    /// Attention scores become `tanh(s / c) * c` before masking (Gemma 2).
    pub attn_softcap: Option<f64>,
    /// Logits become `tanh(l / c) * c` (Gemma 2).
    pub final_softcap: Option<f64>,
    /// One `self_attn.qkv_proj` (q, k, v rows in that order) instead of three (Phi-3).
    pub fused_qkv: bool,
    /// One `mlp.gate_up_proj` (gate rows, then up rows) instead of two (Phi-3).
    pub fused_gate_up: bool,
    /// The attention kinds in use, indexed by `layer_kinds`.
    pub attention_kinds: Vec<AttentionKind>,
    /// Each layer's index into `attention_kinds` (`num_hidden_layers` entries).
    pub layer_kinds: Vec<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl DecoderConfig {
    /// The attention kind of layer `i`.
    pub fn layer_kind(&self, i: usize) -> Option<&AttentionKind> {
        self.attention_kinds.get(*self.layer_kinds.get(i)?)
    }

    /// Every layer's sliding window (None: full attention).
    pub fn layer_windows(&self) -> Vec<Option<usize>> {
        (0..self.num_hidden_layers)
            .map(|i| self.layer_kind(i).and_then(|k| k.window))
            .collect()
    }

    /// The RoPE of layer `i` (None for a NoPE layer).
    pub fn layer_rope(&self, i: usize) -> Option<&Rope> {
        self.layer_kind(i).and_then(|k| k.rope.as_ref())
    }

    /// The LoRA-targetable projections of every layer (HF / PEFT module names), in layer order.
    pub fn projection_names(&self) -> Vec<&'static str> {
        let mut names = if self.fused_qkv {
            vec!["qkv_proj"]
        } else {
            vec!["q_proj", "k_proj", "v_proj"]
        };
        names.push("o_proj");
        if self.fused_gate_up {
            names.push("gate_up_proj");
        } else {
            names.extend(["gate_proj", "up_proj"]);
        }
        names.push("down_proj");
        names
    }

    /// Checks what the model relies on (a family parser calls this last); errors name `origin`.
    pub fn validate(&self, origin: &std::path::Path) -> Result<()> {
        let bad = |msg: String| Err(Error::bad_config(origin, msg));
        let (heads, kv) = (self.num_attention_heads, self.num_key_value_heads);
        if heads == 0 || self.num_hidden_layers == 0 {
            return bad("num_attention_heads and num_hidden_layers must be positive".into());
        }
        if kv == 0 || !heads.is_multiple_of(kv) {
            return bad(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}"
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even and positive",
                self.head_dim
            ));
        }
        if self.layer_kinds.len() != self.num_hidden_layers
            || self
                .layer_kinds
                .iter()
                .any(|&k| k >= self.attention_kinds.len())
        {
            return bad("internal: layer_kinds do not match the layers".into());
        }
        for rope in self.attention_kinds.iter().filter_map(|k| k.rope.as_ref()) {
            let r = rope.rotary_dim;
            if r == 0 || !r.is_multiple_of(2) || r > self.head_dim {
                return bad(format!(
                    "rotary dimension {r} must be even, positive and at most head_dim {}",
                    self.head_dim
                ));
            }
        }
        Ok(())
    }
}

/// One attention kind's precomputed RoPE frequencies.
struct KindTables {
    window: Option<usize>,
    /// The rotary tables, when the kind rotates (LongRoPE: two, chosen per sequence by length).
    rope: Option<Rotary>,
}

/// Per-forward inputs of one attention kind, shared by its layers.
pub(crate) struct KindInputs {
    /// cos and sin (batch, seq, rotary_dim / 2), None for NoPE.
    pub rope: Option<(Tensor, Tensor)>,
    pub bias: Option<Tensor>,
}

pub struct DecoderModel {
    cfg: DecoderConfig,
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    kinds: Vec<KindTables>,
    dtype: DType,
    device: Device,
}

impl DecoderModel {
    /// Builds the model from `vb` at the checkpoint root (`model.…` and `lm_head.…`; a root
    /// without the `model.` prefix is accepted). Quantized weights stay quantized.
    pub fn new(cfg: &DecoderConfig, vb: &WeightView) -> Result<Self> {
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
        let norm = RmsNorm::load_offset(&body.pp("norm"), h, cfg.rms_norm_eps, cfg.norm_offset)?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.as_linear()?
        } else {
            Linear::load(&vb.pp("lm_head"), h, v, false)?
        };
        let kinds = cfg
            .attention_kinds
            .iter()
            .map(|k| -> Result<KindTables> {
                let rope = match &k.rope {
                    Some(r) => Some(Rotary::new(
                        r.rotary_dim,
                        r.theta,
                        &r.scaling,
                        r.attention_factor,
                        vb.device(),
                    )?),
                    None => None,
                };
                Ok(KindTables {
                    window: k.window,
                    rope,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DecoderModel {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            kinds,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// Every projection of every layer with its module path
    /// (`model.layers.0.self_attn.q_proj`, `model.layers.0.mlp.down_proj`), layer by layer in
    /// [`DecoderConfig::projection_names`] order: the modules LoRA attaches to.
    pub fn projections(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            out.extend(l.projections().map(|(n, p)| (module_path(i, n), p)));
        }
        out
    }

    /// [`DecoderModel::projections`], mutable (to attach, merge or remove adapters).
    pub fn projections_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            out.extend(l.projections_mut().map(|(n, p)| (module_path(i, n), p)));
        }
        out
    }

    /// The short projection names LoRA can target in this model (`q_proj`, …, `qkv_proj`).
    pub fn projection_names(&self) -> Vec<&'static str> {
        self.cfg.projection_names()
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
            for (name, norm) in l.norms() {
                let w = norm.weight().clone();
                out.push((format!("model.layers.{i}.{name}.weight"), w));
            }
            for (name, p) in l.projections() {
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
    /// when this model needs the general path: quantized or adapted weights, anything beyond a
    /// plain Llama/Qwen2 layer (q/k norms, Gemma norms or scales, soft-capping, GELU, fused
    /// projections, sliding windows, NoPE or partial or per-layer RoPE, o/mlp biases).
    pub fn decoder_weights(&self) -> Option<DecoderWeights> {
        let c = &self.cfg;
        let plain = !c.qk_norm
            && c.norm_offset == 0.0
            && c.norm_layout == NormLayout::Pre
            && c.embed_scale.is_none()
            && c.activation == Activation::Silu
            && c.attn_softcap.is_none()
            && c.final_softcap.is_none()
            && (c.attn_scale - 1.0 / (c.head_dim as f64).sqrt()).abs() < 1e-12
            && self.kinds.len() == 1;
        let kind = self.kinds.first()?;
        let rotary = kind.rope.as_ref()?;
        if !plain || kind.window.is_some() || !rotary.is_plain() || rotary.dim() != c.head_dim {
            return None;
        }
        let dense = |l: &Linear| -> Option<Tensor> {
            let unadapted = l.lora().is_none_or(|a| a.is_merged());
            l.weight().filter(|_| unadapted).cloned()
        };
        let Embedding::Dense(embed) = &self.embed_tokens else {
            return None;
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let p = l.split_projections()?;
            if p.o.bias().is_some() || p.down.bias().is_some() {
                return None;
            }
            let qkv_bias = match (p.q.bias(), p.k.bias(), p.v.bias()) {
                (Some(q), Some(k), Some(v)) => Some((q.clone(), k.clone(), v.clone())),
                (None, None, None) => None,
                _ => return None,
            };
            let (input_norm, post_norm) = l.pre_norms();
            layers.push(LayerWeights {
                input_norm: input_norm.weight().clone(),
                post_norm: post_norm.weight().clone(),
                q: dense(p.q)?,
                k: dense(p.k)?,
                v: dense(p.v)?,
                qkv_bias,
                o: dense(p.o)?,
                gate: dense(p.gate)?,
                up: dense(p.up)?,
                down: dense(p.down)?,
            });
        }
        Some(DecoderWeights {
            embed: embed.clone(),
            layers,
            norm: self.norm.weight().clone(),
            lm_head: dense(&self.lm_head)?,
            inv_freq: rotary.inv_freq(0).ok()?,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            eps: c.rms_norm_eps,
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

    /// Like [`DecoderModel::forward`] but only the last column's logits (batch, vocab): the
    /// next token of every sequence when padding is on the left. Skips the LM head elsewhere.
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

    /// Each attention kind's cos/sin at `positions` (batch, seq) and its mask for `step`.
    /// `seq_lens[b]` is sequence b's length once these tokens are in (LongRoPE picks its table
    /// by it).
    fn kind_inputs(
        &self,
        step: &Step,
        positions: &Tensor,
        seq_lens: &[usize],
    ) -> Result<Vec<KindInputs>> {
        self.kinds
            .iter()
            .map(|k| {
                let rope = match &k.rope {
                    Some(r) => Some(r.cos_sin(positions, seq_lens, self.dtype)?),
                    None => None,
                };
                let bias = step.attention_bias(k.window, &self.device)?;
                Ok(KindInputs { rope, bias })
            })
            .collect()
    }

    /// Token embeddings, scaled when the family says so.
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let x = self.embed_tokens.forward(ids)?;
        Ok(match self.cfg.embed_scale {
            // Scaled by the factor rounded to the model dtype, as transformers does.
            Some(s) => {
                x.broadcast_mul(&Tensor::new(s as f32, &self.device)?.to_dtype(x.dtype())?)?
            }
            None => x,
        })
    }

    /// Final norm, LM head and final soft-capping.
    fn head(&self, x: &Tensor) -> Result<Tensor> {
        let logits = self.lm_head.forward(&self.norm.forward(x)?)?;
        Ok(match self.cfg.final_softcap {
            Some(c) => ((logits / c)?.tanh()? * c)?,
            None => logits,
        })
    }

    fn run(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        rows: Rows,
    ) -> Result<Tensor> {
        self.run_with(input_ids, attention_mask, cache, rows, None)
    }

    /// [`DecoderModel::run`]; `table_lens` overrides the sequence lengths the rotary tables are
    /// chosen by (LongRoPE's refill of a cache, see long_rope.rs).
    fn run_with(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        rows: Rows,
        table_lens: Option<&[usize]>,
    ) -> Result<Tensor> {
        on_pool(&self.device, || {
            self.run_on_pool(input_ids, attention_mask, cache, rows, table_lens)
        })
    }

    fn run_on_pool(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        rows: Rows,
        table_lens: Option<&[usize]>,
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
        let input_ids = input_ids.to_dtype(DType::U32)?;
        if let Some(c) = cache.as_deref_mut() {
            if self.has_long_rope() {
                self.refill_if_crossing(c, &step.seq_lens())?;
                c.record_ids(&step, &input_ids.flatten_all()?.to_vec1::<u32>()?)?;
            }
        }
        let lens = table_lens.map_or_else(|| step.seq_lens(), <[usize]>::to_vec);
        let kinds = self.kind_inputs(&step, &step.positions(&self.device)?, &lens)?;
        let mut x = self.embed(&input_ids)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let kind = &kinds[layer.kind];
            x = layer.forward(
                &x,
                kind,
                &step,
                cache.as_deref_mut().map(|c| (c, i)),
                &self.cfg,
            )?;
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
        self.head(&x)
    }
}

/// Which positions [`DecoderModel::run`] computes logits for.
enum Rows<'a> {
    All,
    /// The last column: (batch, 1, vocab).
    Last,
    /// Flat positions `b · seq + t`: (n, vocab).
    At(&'a Tensor),
}

/// Runs `f` on a worker of rayon's pool when the model is on the CPU. Each kernel's parallel
/// loop then starts from a worker; started from outside the pool, every one of a decode step's
/// ~200 loops would wake the pool and put the caller to sleep (two context switches each,
/// measured as a quarter of decode time on 2 cores).
pub(super) fn on_pool<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    match device.is_cpu() && rayon::current_thread_index().is_none() {
        true => rayon::scope(|_| f()),
        false => f(),
    }
}

/// `model.layers.{layer}.self_attn.q_proj` / `model.layers.{layer}.mlp.gate_proj`.
fn module_path(layer: usize, projection: &str) -> String {
    let block = match projection {
        "gate_proj" | "up_proj" | "down_proj" | "gate_up_proj" => "mlp",
        _ => "self_attn",
    };
    format!("model.layers.{layer}.{block}.{projection}")
}

fn invalid(name: &'static str, message: String) -> Error {
    Error::InvalidArgument { name, message }
}
