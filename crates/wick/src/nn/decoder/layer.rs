//! One decoder layer: attention (separate or fused q/k/v, optional per-head q/k norms, RoPE on
//! all or the first `rotary_dim` features or none, GQA, optional soft-capping) and a gated MLP
//! (separate or fused gate/up), with pre-norms or Gemma's sandwich norms.

use candle_core::{Module, Tensor, D};

use super::{Activation, DecoderConfig, KindInputs, NormLayout};
use crate::error::Result;
use crate::io::weights::WeightView;
use crate::nn::{KvCache, Linear, RmsNorm, Step};
use crate::ops::attention::{sdpa, sdpa_causal, sdpa_softcapped};
use crate::ops::rope::rope;
use crate::ops::swiglu::swiglu;

/// q, k, v as three projections or one.
enum Qkv {
    Split { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

/// gate and up as two projections or one.
enum GateUp {
    Split { gate: Linear, up: Linear },
    Fused(Linear),
}

/// The separate projections of a layer without fused ones (for the decode fast path).
pub(super) struct SplitProjections<'a> {
    pub q: &'a Linear,
    pub k: &'a Linear,
    pub v: &'a Linear,
    pub o: &'a Linear,
    pub gate: &'a Linear,
    pub up: &'a Linear,
    pub down: &'a Linear,
}

pub(super) struct DecoderLayer {
    qkv: Qkv,
    o_proj: Linear,
    gate_up: GateUp,
    down_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    /// Sandwich layout only.
    pre_feedforward_layernorm: Option<RmsNorm>,
    post_feedforward_layernorm: Option<RmsNorm>,
    /// Index into the model's attention kinds.
    pub kind: usize,
}

impl DecoderLayer {
    pub(super) fn load(cfg: &DecoderConfig, vb: &WeightView, index: usize) -> Result<Self> {
        let (h, hd, i) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
        let (q_out, kv_out) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let att = vb.pp("self_attn");
        let mlp = vb.pp("mlp");
        let (eps, off) = (cfg.rms_norm_eps, cfg.norm_offset);
        let norm = |name: &str, dim: usize| RmsNorm::load_offset(&vb.pp(name), dim, eps, off);
        let qkv = if cfg.fused_qkv {
            Qkv::Fused(Linear::load(
                &att.pp("qkv_proj"),
                h,
                q_out + 2 * kv_out,
                cfg.qkv_bias,
            )?)
        } else {
            Qkv::Split {
                q: Linear::load(&att.pp("q_proj"), h, q_out, cfg.qkv_bias)?,
                k: Linear::load(&att.pp("k_proj"), h, kv_out, cfg.qkv_bias)?,
                v: Linear::load(&att.pp("v_proj"), h, kv_out, cfg.qkv_bias)?,
            }
        };
        let gate_up = if cfg.fused_gate_up {
            GateUp::Fused(Linear::load(
                &mlp.pp("gate_up_proj"),
                h,
                2 * i,
                cfg.mlp_bias,
            )?)
        } else {
            GateUp::Split {
                gate: Linear::load(&mlp.pp("gate_proj"), h, i, cfg.mlp_bias)?,
                up: Linear::load(&mlp.pp("up_proj"), h, i, cfg.mlp_bias)?,
            }
        };
        let (q_norm, k_norm) = match cfg.qk_norm {
            true => (
                Some(RmsNorm::load_offset(&att.pp("q_norm"), hd, eps, off)?),
                Some(RmsNorm::load_offset(&att.pp("k_norm"), hd, eps, off)?),
            ),
            false => (None, None),
        };
        let sandwich = cfg.norm_layout == NormLayout::Sandwich;
        let kind = cfg.layer_kinds.get(index).copied().unwrap_or(0);
        Ok(DecoderLayer {
            qkv,
            o_proj: Linear::load(&att.pp("o_proj"), q_out, h, cfg.o_bias)?,
            gate_up,
            down_proj: Linear::load(&mlp.pp("down_proj"), i, h, cfg.mlp_bias)?,
            q_norm,
            k_norm,
            input_layernorm: norm("input_layernorm", h)?,
            post_attention_layernorm: norm("post_attention_layernorm", h)?,
            pre_feedforward_layernorm: sandwich
                .then(|| norm("pre_feedforward_layernorm", h))
                .transpose()?,
            post_feedforward_layernorm: sandwich
                .then(|| norm("post_feedforward_layernorm", h))
                .transpose()?,
            kind,
        })
    }

    /// The projections with their short names, in [`DecoderConfig::projection_names`] order.
    pub(super) fn projections(&self) -> impl Iterator<Item = (&'static str, &Linear)> {
        let mut out: Vec<(&'static str, &Linear)> = match &self.qkv {
            Qkv::Split { q, k, v } => vec![("q_proj", q), ("k_proj", k), ("v_proj", v)],
            Qkv::Fused(qkv) => vec![("qkv_proj", qkv)],
        };
        out.push(("o_proj", &self.o_proj));
        match &self.gate_up {
            GateUp::Split { gate, up } => out.extend([("gate_proj", gate), ("up_proj", up)]),
            GateUp::Fused(gu) => out.push(("gate_up_proj", gu)),
        }
        out.push(("down_proj", &self.down_proj));
        out.into_iter()
    }

    pub(super) fn projections_mut(&mut self) -> impl Iterator<Item = (&'static str, &mut Linear)> {
        let mut out: Vec<(&'static str, &mut Linear)> = match &mut self.qkv {
            Qkv::Split { q, k, v } => vec![("q_proj", q), ("k_proj", k), ("v_proj", v)],
            Qkv::Fused(qkv) => vec![("qkv_proj", qkv)],
        };
        out.push(("o_proj", &mut self.o_proj));
        match &mut self.gate_up {
            GateUp::Split { gate, up } => out.extend([("gate_proj", gate), ("up_proj", up)]),
            GateUp::Fused(gu) => out.push(("gate_up_proj", gu)),
        }
        out.push(("down_proj", &mut self.down_proj));
        out.into_iter()
    }

    pub(super) fn split_projections(&self) -> Option<SplitProjections<'_>> {
        match (&self.qkv, &self.gate_up) {
            (Qkv::Split { q, k, v }, GateUp::Split { gate, up }) => Some(SplitProjections {
                q,
                k,
                v,
                o: &self.o_proj,
                gate,
                up,
                down: &self.down_proj,
            }),
            _ => None,
        }
    }

    /// input_layernorm and post_attention_layernorm (the pre-attention and pre-MLP norms of
    /// the `Pre` layout).
    pub(super) fn pre_norms(&self) -> (&RmsNorm, &RmsNorm) {
        (&self.input_layernorm, &self.post_attention_layernorm)
    }

    /// Every norm under its HF name inside the layer.
    pub(super) fn norms(&self) -> Vec<(&'static str, &RmsNorm)> {
        let mut out = vec![
            ("input_layernorm", &self.input_layernorm),
            ("post_attention_layernorm", &self.post_attention_layernorm),
        ];
        let optional = [
            ("pre_feedforward_layernorm", &self.pre_feedforward_layernorm),
            (
                "post_feedforward_layernorm",
                &self.post_feedforward_layernorm,
            ),
            ("self_attn.q_norm", &self.q_norm),
            ("self_attn.k_norm", &self.k_norm),
        ];
        out.extend(
            optional
                .into_iter()
                .filter_map(|(n, w)| w.as_ref().map(|w| (n, w))),
        );
        out
    }

    /// q (b, heads, s, hd), k and v (b, kv_heads, s, hd) of normed input `h` (b, s, hidden),
    /// q/k normed and rotated.
    fn qkv(
        &self,
        h: &Tensor,
        rope_cs: Option<&(Tensor, Tensor)>,
        cfg: &DecoderConfig,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, s, _) = h.dims3()?;
        let (heads, kv_heads, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let (q, k, v) = match &self.qkv {
            Qkv::Split { q, k, v } => (q.forward(h)?, k.forward(h)?, v.forward(h)?),
            Qkv::Fused(qkv) => {
                let all = qkv.forward(h)?;
                let (qn, kvn) = (heads * hd, kv_heads * hd);
                (
                    all.narrow(D::Minus1, 0, qn)?,
                    all.narrow(D::Minus1, qn, kvn)?,
                    all.narrow(D::Minus1, qn + kvn, kvn)?,
                )
            }
        };
        // (b, s, n·hd) -> (b, s, n, hd): per-head norms work on the last dim here.
        let heads_of = |t: Tensor, n: usize, norm: &Option<RmsNorm>| -> Result<Tensor> {
            let t = t.reshape((b, s, n, hd))?;
            let t = match norm {
                Some(norm) => norm.forward(&t)?,
                None => t,
            };
            // -> (b, n, s, hd); for s = 1 the transpose is free.
            let t = t.transpose(1, 2)?;
            match rope_cs {
                Some((cos, sin)) => rotate(&t, cos, sin),
                None => Ok(t),
            }
        };
        let q = heads_of(q, heads, &self.q_norm)?;
        let k = heads_of(k, kv_heads, &self.k_norm)?;
        let v = v.reshape((b, s, kv_heads, hd))?.transpose(1, 2)?;
        Ok((q, k, v))
    }

    /// Attention over `keys` then o_proj, residual and MLP: the rest of the layer.
    fn finish(&self, x: &Tensor, attn: &Tensor, cfg: &DecoderConfig) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let attn = attn
            .transpose(1, 2)?
            .reshape((b, s, cfg.num_attention_heads * cfg.head_dim))?;
        let attn = self.o_proj.forward(&attn)?;
        let (x, h) = match (
            &self.pre_feedforward_layernorm,
            &self.post_feedforward_layernorm,
        ) {
            (Some(pre), Some(post)) => {
                let x = (x + self.post_attention_layernorm.forward(&attn)?)?;
                let h = pre.forward(&x)?;
                let out = post.forward(&self.mlp(&h, cfg)?)?;
                return Ok((x + out)?);
            }
            _ => {
                let x = (x + attn)?;
                let h = self.post_attention_layernorm.forward(&x)?;
                (x, h)
            }
        };
        Ok((x + self.mlp(&h, cfg)?)?)
    }

    fn mlp(&self, h: &Tensor, cfg: &DecoderConfig) -> Result<Tensor> {
        let (gate, up) = match &self.gate_up {
            GateUp::Split { gate, up } => (gate.forward(h)?, up.forward(h)?),
            GateUp::Fused(gu) => {
                let both = gu.forward(h)?;
                let i = cfg.intermediate_size;
                (both.narrow(D::Minus1, 0, i)?, both.narrow(D::Minus1, i, i)?)
            }
        };
        let act = match cfg.activation {
            Activation::Silu => swiglu(&gate, &up)?,
            Activation::GeluTanh => (gate.gelu()? * up)?,
        };
        Ok(self.down_proj.forward(&act)?)
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
        causal: bool,
        cfg: &DecoderConfig,
    ) -> Result<Tensor> {
        let scale = cfg.attn_scale;
        Ok(match (cfg.attn_softcap, causal) {
            (Some(cap), _) => sdpa_softcapped(q, k, v, bias, scale, cap)?,
            // Every mask the model builds hides later keys (see `Step::attention_bias`).
            (None, true) => sdpa_causal(q, k, v, bias, scale)?,
            (None, false) => sdpa(q, k, v, bias, scale)?,
        })
    }

    /// The layer on `x` (b, s, hidden). `rope_cs` is this layer's kind's cos/sin.
    pub(super) fn forward(
        &self,
        x: &Tensor,
        kind: &KindInputs,
        step: &Step,
        cache: Option<(&mut KvCache, usize)>,
        cfg: &DecoderConfig,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x)?;
        let (q, k, v) = self.qkv(&h, kind.rope.as_ref(), cfg)?;
        let (k, v) = match cache {
            Some((c, layer)) => c.write(layer, step, &k, &v)?,
            None => (k, v),
        };
        let attn = self.attention(&q, &k, &v, kind.bias.as_ref(), true, cfg)?;
        self.finish(x, &attn, cfg)
    }

    /// The layer for n sequences of one new token each (x is (n, 1, hidden)), each attending
    /// to its own cache with its own step and mask (`seqs`, in cache order).
    pub(super) fn forward_decode(
        &self,
        x: &Tensor,
        rope_cs: Option<&(Tensor, Tensor)>,
        seqs: &[(Option<&Tensor>, &Step)],
        caches: &mut [&mut KvCache],
        layer: usize,
        cfg: &DecoderConfig,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x)?;
        let (q, k, v) = self.qkv(&h, rope_cs, cfg)?;
        let mut outs = Vec::with_capacity(seqs.len());
        for (i, ((bias, step), cache)) in seqs.iter().zip(caches.iter_mut()).enumerate() {
            let (k_all, v_all) =
                cache.write(layer, step, &k.narrow(0, i, 1)?, &v.narrow(0, i, 1)?)?;
            let q = q.narrow(0, i, 1)?;
            outs.push(self.attention(&q, &k_all, &v_all, *bias, false, cfg)?);
        }
        self.finish(x, &Tensor::cat(&outs, 0)?, cfg)
    }
}

/// RoPE on the first `2 · cos.dim(-1)` features of each head of `x` (b, n, s, hd); the rest
/// pass through (partial rotary).
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let rot = 2 * cos.dim(D::Minus1)?;
    if rot == hd {
        return Ok(rope(x, cos, sin)?);
    }
    let head = rope(&x.narrow(D::Minus1, 0, rot)?, cos, sin)?;
    let pass = x.narrow(D::Minus1, rot, hd - rot)?;
    Ok(Tensor::cat(&[&head, &pass], D::Minus1)?)
}
