//! BERT-family encoder (BERT, MiniLM). XLM-RoBERTa / E5 differ only in position ids (offset by
//! `pad_token_id + 1`) and will plug in through `position_offset`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::io::json::read_json;
use crate::io::weights::WeightView;
use crate::nn::Linear;
use crate::ops::attention::sdpa;
use crate::ops::layer_norm::layer_norm;
use crate::ops::linear::{linear, Activation};

pub const SUPPORTED_MODEL_TYPES: &[&str] = &["bert"];

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_pos_type() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Reads and validates a config.json, naming the file in every error.
    pub fn from_file(path: &Path) -> Result<Self> {
        let model_type = super::read_model_type(path)?;
        if !SUPPORTED_MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(Error::UnsupportedArchitecture {
                path: path.to_path_buf(),
                model_type,
                supported: SUPPORTED_MODEL_TYPES.join(", "),
            });
        }
        let cfg: BertConfig = read_json(path)?;
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(Error::bad_config(
                path,
                format!(
                    "hidden_size {} is not divisible by num_attention_heads {}",
                    cfg.hidden_size, cfg.num_attention_heads
                ),
            ));
        }
        if cfg.hidden_act != "gelu" {
            return Err(Error::bad_config(
                path,
                format!(
                    "hidden_act `{}` is unsupported (supported: gelu)",
                    cfg.hidden_act
                ),
            ));
        }
        if cfg.position_embedding_type != "absolute" {
            return Err(Error::bad_config(
                path,
                format!(
                    "position_embedding_type `{}` is unsupported (supported: absolute)",
                    cfg.position_embedding_type
                ),
            ));
        }
        Ok(cfg)
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(vb: &WeightView, dim: usize, eps: f64) -> Result<Self> {
        // Old BERT checkpoints name these gamma/beta.
        let (w, b) = if vb.contains("gamma") {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(LayerNorm {
            weight: vb.get(&[dim], w)?,
            bias: vb.get(&[dim], b)?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

struct Layer {
    /// q, k and v projections fused into one (3·hidden, hidden) GEMM.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: LayerNorm,
}

pub struct BertModel {
    cfg: BertConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    device: Device,
}

impl BertModel {
    /// `vb` points at the encoder root; a `bert.` prefix is detected and skipped.
    pub fn new(cfg: &BertConfig, vb: &WeightView) -> Result<Self> {
        let vb = if vb.contains("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb.clone()
        };
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let e = vb.pp("embeddings");
        let embeddings = Embeddings {
            word: e
                .pp("word_embeddings")
                .get(&[cfg.vocab_size, h], "weight")?,
            position: e
                .pp("position_embeddings")
                .get(&[cfg.max_position_embeddings, h], "weight")?,
            token_type: e
                .pp("token_type_embeddings")
                .get(&[cfg.type_vocab_size, h], "weight")?,
            norm: LayerNorm::load(&e.pp("LayerNorm"), h, eps)?,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(cfg, &vb.pp("encoder.layer").pp(i.to_string())))
            .collect::<Result<Vec<_>>>()?;
        Ok(BertModel {
            cfg: cfg.clone(),
            embeddings,
            layers,
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Last hidden states (batch, seq, hidden) for right-padded `input_ids` (batch, seq) with
    /// `attention_mask` (batch, seq) of 1 for real tokens and 0 for padding.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        if seq > self.cfg.max_position_embeddings {
            return Err(Error::InvalidArgument {
                name: "input_ids",
                message: format!(
                    "{seq} tokens exceed the model's {} positions",
                    self.cfg.max_position_embeddings
                ),
            });
        }
        let mut x = self.embed(input_ids, batch, seq)?;

        // 0 where visible, a large negative number at padding, broadcast over heads and queries;
        // kept in f32: attention adds it to f32 scores on every path.
        let bias = attention_mask
            .to_dtype(DType::F32)?
            .affine(1e9, -1e9)?
            .reshape((batch, 1, 1, seq))?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias, &self.cfg)?;
        }
        Ok(x)
    }

    /// word + position + token type 0 embeddings, then LayerNorm: one kernel on CUDA, candle
    /// ops elsewhere.
    fn embed(&self, input_ids: &Tensor, batch: usize, seq: usize) -> Result<Tensor> {
        let e = &self.embeddings;
        #[cfg(feature = "cuda")]
        if self.device.is_cuda() && self.cfg.hidden_size <= 1024 && input_ids.dtype() == DType::U32
        {
            let fused = crate::ops::cuda::elementwise::EmbedLayerNorm {
                token_type0: e.token_type.get(0)?,
                weight: e.norm.weight.clone(),
                bias: e.norm.bias.clone(),
                eps: e.norm.eps as f32,
            };
            return Ok(fused.forward(&input_ids.contiguous()?, &e.word, &e.position)?);
        }
        let words = e
            .word
            .embedding(&input_ids.flatten_all()?)?
            .reshape((batch, seq, ()))?;
        // Token type 0 for every token: single-segment inputs.
        let x = words
            .broadcast_add(&e.position.narrow(0, 0, seq)?)?
            .broadcast_add(&e.token_type.narrow(0, 0, 1)?)?;
        Ok(e.norm.forward(&x)?)
    }
}

impl Layer {
    fn load(cfg: &BertConfig, vb: &WeightView) -> Result<Self> {
        let h = cfg.hidden_size;
        let att = vb.pp("attention");
        let s = att.pp("self");
        let weight = |name: &str| s.pp(name).get(&[h, h], "weight");
        let bias = |name: &str| s.pp(name).get(&[h], "bias");
        let qkv_w = Tensor::cat(&[weight("query")?, weight("key")?, weight("value")?], 0)?;
        let qkv_b = Tensor::cat(&[bias("query")?, bias("key")?, bias("value")?], 0)?;
        let eps = cfg.layer_norm_eps;
        Ok(Layer {
            qkv: Linear::new(qkv_w, Some(qkv_b)),
            attn_out: Linear::load(&att.pp("output.dense"), h, h, true)?,
            attn_norm: LayerNorm::load(&att.pp("output.LayerNorm"), h, eps)?,
            ffn_in: Linear::load(&vb.pp("intermediate.dense"), h, cfg.intermediate_size, true)?,
            ffn_out: Linear::load(&vb.pp("output.dense"), cfg.intermediate_size, h, true)?,
            ffn_norm: LayerNorm::load(&vb.pp("output.LayerNorm"), h, eps)?,
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor, cfg: &BertConfig) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (heads, hd) = (cfg.num_attention_heads, cfg.head_dim());
        // (b, s, 3, heads, hd) -> three (b, heads, s, hd)
        let qkv = dense(&self.qkv, x, Activation::Identity)?.reshape((b, s, 3, heads, hd))?;
        let part = |i: usize| qkv.narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2);
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let ctx = sdpa(&q, &k, &v, Some(bias), 1.0 / (hd as f64).sqrt())?;
        let ctx = crate::ops::elementwise::merge_heads(&ctx)?;
        let x = self
            .attn_norm
            .forward(&dense_add(&self.attn_out, &ctx, x)?)?;
        let ffn = dense(&self.ffn_in, &x, Activation::GeluErf)?;
        Ok(self
            .ffn_norm
            .forward(&dense_add(&self.ffn_out, &ffn, &x)?)?)
    }
}

/// `l(x) + residual`, the residual added inside the GEMM where the device can.
fn dense_add(l: &Linear, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
    crate::ops::linear::linear_add(x, float_weight(l)?, l.bias(), residual)
}

fn dense(l: &Linear, x: &Tensor, act: Activation) -> candle_core::Result<Tensor> {
    linear(x, float_weight(l)?, l.bias(), act)
}

/// BERT weights come from safetensors and are never quantized.
fn float_weight(l: &Linear) -> candle_core::Result<&Tensor> {
    match l.weight() {
        Some(w) => Ok(w),
        None => candle_core::bail!("BERT layers need float weights"),
    }
}
