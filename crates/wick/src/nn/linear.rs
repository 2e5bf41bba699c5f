//! Dense layer `y = x·Wᵀ + b` with HF weight layout (out_features, in_features). The weight is a
//! float tensor or a quantized one (GGUF blocks, run by `ops::qmatmul` without dequantizing).
//! A LoRA adapter may sit next to the frozen weight: `y += scale·(dropout(x)·Aᵀ)·Bᵀ`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Module, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result as WickResult};
use crate::io::weights::WeightView;
use crate::ops::frozen_matmul::{
    frozen_matmul, frozen_matmul_backward, frozen_matmul_untracked, FrozenWeight,
};
use crate::ops::grad::with_backward3;
use crate::ops::{
    self,
    qmatmul::{qmatmul, QWeight},
};

/// The frozen base weight of a [`Linear`].
#[derive(Clone, Debug)]
pub enum LinearWeight {
    /// (out, in) in the model's float dtype.
    Dense(Tensor),
    /// (out, in) quantized; activations go through it in f32.
    Quantized(QWeight),
}

/// Switches shared by every adapter of one model: training mode (dropout on) and the dropout
/// draws. Each forward through an adapter with dropout takes the next draw index, so a run is
/// reproducible from its seed as long as the forwards happen in the same order.
/// With `requires_grad` off (inference), adapters run as constants so the rest of the graph
/// stays on the fast untracked paths.
#[derive(Debug)]
pub struct LoraMode {
    training: AtomicBool,
    requires_grad: AtomicBool,
    seed: AtomicU64,
    draws: AtomicU64,
}

impl LoraMode {
    pub fn new(seed: u64) -> Self {
        LoraMode {
            training: AtomicBool::new(false),
            requires_grad: AtomicBool::new(true),
            seed: AtomicU64::new(seed),
            draws: AtomicU64::new(0),
        }
    }

    pub fn set_requires_grad(&self, on: bool) {
        self.requires_grad.store(on, Ordering::Relaxed);
    }

    pub fn requires_grad(&self) -> bool {
        self.requires_grad.load(Ordering::Relaxed)
    }

    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }

    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// `Some(seed)`: training mode with dropout masks drawn afresh from `seed` (a trainer passes
    /// one per step, so a resumed run draws the same masks); `None`: dropout off.
    pub fn set_dropout_seed(&self, seed: Option<u64>) {
        if let Some(seed) = seed {
            self.seed.store(seed, Ordering::Relaxed);
            self.draws.store(0, Ordering::Relaxed);
        }
        self.set_training(seed.is_some());
    }
}

/// A LoRA adapter: A (r, in) and B (out, r), kept in f32 as trainable `Var`s (PEFT keeps them
/// in f32 too), the scale (`alpha / r`, or `alpha / √r` with rsLoRA) and the dropout rate on its
/// input (applied only in training mode).
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
    pub dropout: f32,
    pub mode: Arc<LoraMode>,
    /// True once `scale·B·A` has been added into the base weight; the adapter then adds nothing.
    merged: bool,
}

impl LoraAdapter {
    pub fn new(a: Var, b: Var, scale: f64, dropout: f32, mode: Arc<LoraMode>) -> Self {
        LoraAdapter {
            a,
            b,
            scale,
            dropout,
            mode,
            merged: false,
        }
    }

    pub fn rank(&self) -> usize {
        self.a.dim(0).unwrap_or(0)
    }

    pub fn is_merged(&self) -> bool {
        self.merged
    }

    /// `scale·B·A`, (out, in) in f32, detached from the graph.
    pub fn delta(&self) -> Result<Tensor> {
        let (a, b) = (self.a.as_detached_tensor(), self.b.as_detached_tensor());
        b.matmul(&a)?.affine(self.scale, 0.0)
    }

    /// `scale·(dropout(x)·Aᵀ)·Bᵀ` for x (rows, in), in f32, with A and B as constants (a training
    /// adapter goes through [`Linear::forward_training`] instead).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        let x = match self.dropout_mask(&x)? {
            Some(mask) => (x * mask)?,
            None => x,
        };
        let (a, b) = (self.a.as_detached_tensor(), self.b.as_detached_tensor());
        x.matmul(&a.t()?)?.matmul(&b.t()?)?.affine(self.scale, 0.0)
    }

    /// Inverted dropout's mask for `x` (kept values scaled by 1 / (1 - p)), or None when dropout
    /// is off. Drawn from a seeded ChaCha8 stream on the host so every device gives the same mask.
    fn dropout_mask(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let p = self.dropout;
        if p <= 0.0 || !self.mode.is_training() {
            return Ok(None);
        }
        let draw = self.mode.draws.fetch_add(1, Ordering::Relaxed);
        let mut rng = ChaCha8Rng::seed_from_u64(self.mode.seed.load(Ordering::Relaxed));
        rng.set_stream(draw);
        let keep = 1.0 / (1.0 - p);
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
            .collect();
        Tensor::from_vec(mask, x.dims(), x.device()).map(Some)
    }
}

/// A linear layer: a frozen base weight (dense or quantized), an optional bias and an optional
/// LoRA adapter.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
    lora: Option<LoraAdapter>,
}

impl Linear {
    /// A dense layer from an (out, in) weight.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            weight: LinearWeight::Dense(weight),
            bias,
            lora: None,
        }
    }

    /// A layer over a quantized (out, in) weight, prepared by `ops::qmatmul` (which may re-block
    /// it for a faster kernel). Float "quantized" tensors (F32/F16/BF16 in a GGUF) are
    /// dequantized to `dtype` instead: a plain GEMM is faster for them.
    pub fn from_qtensor(weight: QTensor, bias: Option<Tensor>, dtype: DType) -> Result<Self> {
        let weight = match weight.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                LinearWeight::Dense(weight.dequantize(&weight.device())?.to_dtype(dtype)?)
            }
            _ => LinearWeight::Quantized(qmatmul(std::sync::Arc::new(weight))?),
        };
        Ok(Linear {
            weight,
            bias,
            lora: None,
        })
    }

    /// A layer over an already built weight (e.g. a quantized embedding shared with the head).
    pub fn from_weight(weight: LinearWeight, bias: Option<Tensor>) -> Self {
        Linear {
            weight,
            bias,
            lora: None,
        }
    }

    /// Loads `{vb}.weight` (and `{vb}.bias` when `bias`) of shape (out, in), keeping the weight
    /// quantized when the source stores it so.
    pub fn load(vb: &WeightView, in_dim: usize, out_dim: usize, bias: bool) -> WickResult<Self> {
        let bias = if bias {
            Some(vb.get(&[out_dim], "bias")?)
        } else {
            None
        };
        if let Some(q) = vb.get_quantized(&[out_dim, in_dim], "weight")? {
            return Ok(Linear::from_qtensor(q, bias, vb.dtype())?);
        }
        Ok(Linear::new(vb.get(&[out_dim, in_dim], "weight")?, bias))
    }

    /// The dense (out, in) weight; None when it is quantized.
    pub fn weight(&self) -> Option<&Tensor> {
        match &self.weight {
            LinearWeight::Dense(w) => Some(w),
            LinearWeight::Quantized(_) => None,
        }
    }

    pub fn base(&self) -> &LinearWeight {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub fn is_quantized(&self) -> bool {
        matches!(self.weight, LinearWeight::Quantized(_))
    }

    /// (out_features, in_features).
    pub fn dims(&self) -> Result<(usize, usize)> {
        match &self.weight {
            LinearWeight::Dense(w) => w.dims2(),
            LinearWeight::Quantized(q) => q.dims(),
        }
    }

    /// The base weight as a float (out, in) tensor, dequantizing a quantized one.
    pub fn dense_weight(&self) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Dense(w) => Ok(w.clone()),
            LinearWeight::Quantized(q) => q.dequantize(),
        }
    }

    pub fn lora(&self) -> Option<&LoraAdapter> {
        self.lora.as_ref()
    }

    /// Attaches `adapter`, replacing any other; its shapes must be A (r, in) and B (out, r).
    pub fn set_lora(&mut self, adapter: LoraAdapter) -> Result<()> {
        let (out_dim, in_dim) = self.dims()?;
        let (r, a_in) = adapter.a.dims2()?;
        let (b_out, b_r) = adapter.b.dims2()?;
        if a_in != in_dim || b_out != out_dim || b_r != r {
            candle_core::bail!(
                "LoRA A {:?} / B {:?} do not fit a ({out_dim}, {in_dim}) weight",
                adapter.a.dims(),
                adapter.b.dims()
            )
        }
        self.lora = Some(adapter);
        Ok(())
    }

    /// Removes the adapter (unmerging it first if it was merged).
    pub fn take_lora(&mut self) -> WickResult<Option<LoraAdapter>> {
        self.unmerge_lora()?;
        Ok(self.lora.take())
    }

    /// Adds `scale·B·A` into the dense base weight; the adapter then adds nothing until
    /// [`Linear::unmerge_lora`]. No-op without an adapter or when already merged.
    pub fn merge_lora(&mut self) -> WickResult<()> {
        self.shift_weight(true)
    }

    /// Subtracts what [`Linear::merge_lora`] added.
    pub fn unmerge_lora(&mut self) -> WickResult<()> {
        self.shift_weight(false)
    }

    fn shift_weight(&mut self, merge: bool) -> WickResult<()> {
        let Some(adapter) = self.lora.as_mut() else {
            return Ok(());
        };
        if adapter.merged == merge {
            return Ok(());
        }
        let LinearWeight::Dense(w) = &self.weight else {
            return Err(Error::Unsupported(
                "merging a LoRA adapter into a quantized weight; load the model with a float \
                 dtype (`--dtype f32`) to merge"
                    .into(),
            ));
        };
        let (delta, dtype) = (adapter.delta()?, w.dtype());
        let w32 = w.to_dtype(DType::F32)?;
        let shifted = if merge { w32 + delta } else { w32 - delta }?;
        self.weight = LinearWeight::Dense(shifted.to_dtype(dtype)?);
        adapter.merged = merge;
        Ok(())
    }

    /// `x·Wᵀ + bias + scale·(dropout(x)·Aᵀ)·Bᵀ` for x (rows, in) while `adapter` trains: the
    /// value computed outside the graph, recorded as one node over (x, A, B) whose backward
    /// gives A, B and (when it is tracked) x their gradients. The composed graph kept four
    /// output-sized tensors per projection alive until the backward pass (the base output, the
    /// adapter's f32 output, its scaled copy and the sum); this keeps one.
    fn forward_training(&self, x: &Tensor, adapter: &LoraAdapter) -> Result<Tensor> {
        let xd = x.detach();
        let frozen = match &self.weight {
            LinearWeight::Dense(w) => FrozenWeight::Dense(w.clone()),
            LinearWeight::Quantized(q) => q.frozen(),
        };
        let base = match (&self.weight, xd.device().is_cuda()) {
            // cuBLASLt with the bias in its epilogue.
            (LinearWeight::Dense(w), true) => {
                ops::linear::linear_frozen(&xd, w, self.bias.as_ref())?
            }
            _ => {
                let y = frozen_matmul_untracked(&xd, &frozen)?;
                match &self.bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                }
            }
        };
        let x32 = ops::elementwise::to_dtype(&xd, DType::F32)?;
        let mask = adapter.dropout_mask(&x32)?;
        let xin = match &mask {
            Some(m) => (&x32 * m)?,
            None => x32,
        };
        let (a, b) = (
            adapter.a.as_detached_tensor(),
            adapter.b.as_detached_tensor(),
        );
        let delta = xin
            .matmul(&a.t()?)?
            .matmul(&b.t()?)?
            .affine(adapter.scale, 0.0)?;
        let y = ops::elementwise::add_rounded(&base, &delta)?;
        drop(xin);
        let scale = adapter.scale;
        let backward = move |args: &[&Tensor], _: &Tensor, g: &Tensor| {
            lora_backward(args, g, &frozen, mask.as_ref(), scale)
        };
        with_backward3(
            x,
            adapter.a.as_tensor(),
            adapter.b.as_tensor(),
            y,
            Box::new(backward),
        )
    }

    /// `x·Wᵀ` for x (rows, in). When `x` is part of a tracked graph (an adapter below this layer
    /// is training) and the weight is frozen, [`frozen_matmul`] passes the gradient to `x` only.
    /// A quantized weight's kernels (wick's and candle's `QMatMul`, `apply_op1_no_bwd` in candle
    /// 0.11.1) pass no gradient to `x`, so when tracking it is dequantized on the fly there.
    fn base_forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Dense(w) if x.track_op() && !w.track_op() => {
                frozen_matmul(x, &FrozenWeight::Dense(w.clone()))
            }
            LinearWeight::Dense(w) => x.matmul(&w.t()?),
            LinearWeight::Quantized(q) if x.track_op() => frozen_matmul(x, &q.frozen()),
            LinearWeight::Quantized(q) => ops::qmatmul::forward(q, x),
        }
    }
}

/// Gradients of `y = x·Wᵀ + s·(m⊙x)·Aᵀ·Bᵀ` (m the dropout mask) for x, A and B from the
/// output's gradient g, with t = (m⊙x)·Aᵀ and u = g·B (both rows × r):
/// dB = s·gᵀ·t, dA = s·uᵀ·(m⊙x), dx = g·W + m⊙(s·u·A) — dx only when x is tracked.
fn lora_backward(
    args: &[&Tensor],
    g: &Tensor,
    weight: &FrozenWeight,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Vec<Option<Tensor>>> {
    let [x, a, b] = args else {
        candle_core::bail!("LoRA backward: {} inputs, 3 expected", args.len())
    };
    let (a, b) = (a.detach(), b.detach());
    let g32 = ops::elementwise::to_dtype(&g.detach(), DType::F32)?;
    let x32 = ops::elementwise::to_dtype(&x.detach(), DType::F32)?;
    let xin = match mask {
        Some(m) => (&x32 * m)?,
        None => x32,
    };
    let u = g32.matmul(&b)?;
    let db = g32.t()?.matmul(&xin.matmul(&a.t()?)?)?.affine(scale, 0.0)?;
    let da = u.t()?.matmul(&xin)?.affine(scale, 0.0)?;
    drop(xin);
    let dx = if x.track_op() {
        let through_a = u.matmul(&a)?.affine(scale, 0.0)?;
        let through_a = match mask {
            Some(m) => (through_a * m)?,
            None => through_a,
        };
        let base = frozen_matmul_backward(weight, &g.detach())?;
        Some(ops::elementwise::add_rounded(&base, &through_a)?.to_dtype(x.dtype())?)
    } else {
        None
    };
    Ok(vec![dx, Some(da), Some(db)])
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let Some(&in_dim) = dims.last() else {
            candle_core::bail!("Linear needs an input with at least one dimension")
        };
        let (out_dim, _) = self.dims()?;
        // Flatten leading dims so the matmul is one GEMM with a transposed right operand.
        let rows = x.elem_count() / in_dim;
        let x2 = x.reshape((rows, in_dim))?;
        if let Some(adapter) = self
            .lora
            .as_ref()
            .filter(|a| !a.merged && a.mode.requires_grad())
        {
            let mut out_dims = dims.to_vec();
            out_dims.pop();
            out_dims.push(out_dim);
            return self.forward_training(&x2, adapter)?.reshape(out_dims);
        }
        // Inference on a dense weight: cuBLASLt with the bias in its epilogue on CUDA. A tracked
        // input (an adapter below this layer is training) goes through `base_forward`, whose
        // frozen-weight matmul passes no gradient to the weight.
        let y = match &self.weight {
            LinearWeight::Dense(w) if !x2.track_op() => {
                ops::linear::linear_frozen(&x2, w, self.bias.as_ref())?
            }
            _ => {
                let y = self.base_forward(&x2)?;
                match &self.bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                }
            }
        };
        let y = match &self.lora {
            Some(adapter) if !adapter.merged => (y + adapter.forward(&x2)?.to_dtype(x.dtype())?)?,
            _ => y,
        };
        let mut out_dims = dims.to_vec();
        out_dims.pop();
        out_dims.push(out_dim);
        y.reshape(out_dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn quantized_q8_0_is_close_to_dense() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.5, (48, 64), &dev)?;
        let b = Tensor::randn(0f32, 0.5, 48, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 64), &dev)?;
        let dense = Linear::new(w.clone(), Some(b.clone()));
        let q = Linear::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0)?, Some(b), DType::F32)?;
        assert!(q.is_quantized() && q.weight().is_none());
        assert_eq!(q.dims()?, (48, 64));
        let (yd, yq) = (dense.forward(&x)?, q.forward(&x)?);
        assert_eq!(yq.dims(), &[2, 3, 48]);
        let scale = yd.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let diff = (yd - yq)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        // Q8_0 quantizes weights and activations to 8 bits: ~1% of the output range.
        assert!(
            diff < 0.03 * scale,
            "max abs diff {diff} for outputs up to {scale}"
        );
        Ok(())
    }

    #[test]
    fn float_qtensors_become_dense() -> Result<()> {
        let w = Tensor::randn(0f32, 1.0, (4, 32), &Device::Cpu)?;
        let l = Linear::from_qtensor(QTensor::quantize(&w, GgmlDType::F16)?, None, DType::F32)?;
        assert!(!l.is_quantized());
        Ok(())
    }

    fn max_abs(t: &Tensor) -> Result<f32> {
        t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    fn adapter(r: usize, in_dim: usize, out_dim: usize, b_std: f32) -> Result<LoraAdapter> {
        let dev = Device::Cpu;
        let a = Var::randn(0f32, 0.3, (r, in_dim), &dev)?;
        let b = if b_std > 0.0 {
            Var::randn(0f32, b_std, (out_dim, r), &dev)?
        } else {
            Var::zeros((out_dim, r), DType::F32, &dev)?
        };
        Ok(LoraAdapter::new(a, b, 2.0, 0.0, Arc::new(LoraMode::new(0))))
    }

    #[test]
    fn zero_b_adds_nothing_and_merge_equals_the_adapter() -> WickResult<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.5, (24, 40), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 40), &dev)?;
        let mut l = Linear::new(w.clone(), None);
        let base = l.forward(&x)?;
        l.set_lora(adapter(3, 40, 24, 0.0)?)?;
        assert_eq!(
            max_abs(&(l.forward(&x)? - &base)?)?,
            0.0,
            "B = 0 changes nothing"
        );
        l.set_lora(adapter(3, 40, 24, 0.5)?)?;
        let with = l.forward(&x)?;
        assert!(max_abs(&(&with - &base)?)? > 1e-3);
        l.merge_lora()?;
        assert!(l.lora().is_some_and(|a| a.is_merged()));
        assert!(max_abs(&(l.forward(&x)? - &with)?)? < 1e-5);
        l.unmerge_lora()?;
        assert!(max_abs(&(l.forward(&x)? - &with)?)? < 1e-5);
        assert!(max_abs(&(l.dense_weight()? - &w)?)? < 1e-6);
        assert!(
            l.set_lora(adapter(3, 24, 40, 0.5)?).is_err(),
            "shapes are checked"
        );
        Ok(())
    }

    #[test]
    fn a_quantized_base_passes_gradients_to_its_input() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.5, (32, 64), &dev)?;
        let q = QTensor::quantize(&w, GgmlDType::Q8_0)?;
        let deq = q.dequantize(&dev)?;
        let mut l = Linear::from_qtensor(q, None, DType::F32)?;
        l.set_lora(adapter(2, 64, 32, 0.5)?)?;
        let x = Var::randn(0f32, 1.0, (3, 64), &dev)?;
        let y = l.forward(x.as_tensor())?;
        let grads = y.sum_all()?.backward()?;
        let Some(g) = grads.get(x.as_tensor()) else {
            candle_core::bail!("no gradient reached x")
        };
        // d(sum y)/dx = 1·(W + scale·B·A) for every row.
        let lora = l.lora().map(|a| a.delta()).transpose()?;
        let full = match lora {
            Some(d) => (deq + d)?,
            None => deq,
        };
        let want = Tensor::ones((3, 32), DType::F32, &dev)?.matmul(&full)?;
        assert!(max_abs(&(g - want)?)? < 1e-4);
        Ok(())
    }
}
