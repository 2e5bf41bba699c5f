//! Flash-style attention on CUDA (`kernels/attention.cu`): forward with an online softmax over
//! K/V tiles in shared memory, backward by the FlashAttention-2 algorithm; the lq×lk scores never
//! reach global memory. f16/bf16 run on tensor cores (WMMA, f32 accumulation and softmax, P and
//! dS rounded to the input dtype before their products); f32 runs on CUDA cores in f32
//! throughout (`WICK_FLASH_FP32=1` sends f16/bf16 there too).
//!
//! The forward writes each query row's log-sum-exp (f32) next to the output; when any input
//! tracks gradients the op keeps it (in the op struct) for its backward, which recomputes the
//! probabilities from it instead of running the forward again.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute;
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};
use half::{bf16, f16};

use super::fused::addr_of;
use super::kernels::func;

const THREADS: u32 = 128;
/// Forward query rows per block (kernel constant).
const FWD_BQ: usize = 64;

/// Tile sizes of the kernels for head dim `d`: (forward BK, backward BQ, backward BK).
fn tiles(d: usize) -> Result<(usize, usize, usize)> {
    match d {
        32 | 64 => Ok((64, 64, 64)),
        128 => Ok((32, 32, 32)),
        _ => candle_core::bail!("flash attention: head dim {d} unsupported (32, 64 or 128)"),
    }
}

/// Whether the tensor-core kernels (f16/bf16; `WICK_FLASH_FP32=1` forces the CUDA-core ones).
fn use_tc(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
        && std::env::var("WICK_FLASH_FP32").map_or(true, |v| v != "1")
}

/// Tensor-core kernels: BQ = BK = 64 in both passes.
const TC_TILE: usize = 64;

fn fwd_tc_smem(d: usize) -> usize {
    3 * 64 * (d + 8) * 2 + 64 * 68 * 4 + 64 * 72 * 2 + 4 * 16 * 20 * 4
}

fn bwd_tc_smem(d: usize) -> usize {
    4 * 64 * (d + 8) * 2 + 2 * 64 * 68 * 4 + 2 * 64 * 72 * 2 + 2 * 64 * 4
}

/// 16-byte vector loads are safe: every address and stride is a multiple of 8 elements (16-bit).
fn vec_ok(addrs: &[u64], strides: &[i64]) -> i32 {
    i32::from(addrs.iter().all(|a| a % 16 == 0) && strides.iter().all(|s| s % 8 == 0))
}

fn fwd_smem(d: usize, bk: usize) -> usize {
    4 * (FWD_BQ * (d + 1) + bk * (d + 1) + bk * d + FWD_BQ * (bk + 1))
}

fn bwd_smem(d: usize, bq: usize, bk: usize) -> usize {
    4 * (2 * bk * (d + 1) + 2 * bq * (d + 1) + 2 * bq * (bk + 1) + 2 * bq)
}

/// `softmax(q·kᵀ·scale + bias, causal)·v` on CUDA, differentiable in q, k and v.
///
/// `q` is (batch, heads, lq, d); `k` and `v` are (batch, kv_heads, lk, d) with `heads` a multiple
/// of `kv_heads` (query head `h` reads kv head `h / (heads / kv_heads)`); d ∈ {32, 64, 128}; all
/// three of one dtype (f32, f16, bf16) on one CUDA device. They may be strided views (batch, head
/// and row strides go to the kernel); only a non-contiguous last dim is copied. `bias` is
/// additive, broadcastable to (batch, heads, lq, lk) with its head dim 1 or `heads` (in practice
/// (batch, 1, lq, lk) or a (batch, 1, 1, lk) key-padding mask), any float dtype. `causal` masks
/// key j for query i when j > i + (lk − lq). A query row whose keys are all masked gets
/// arbitrary output (zeros when masked by `causal`). Returns (batch, heads, lq, d) contiguous
/// in q's dtype. Unsupported shapes, dtypes and devices are errors, so callers can fall back.
pub fn flash_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    causal: bool,
    scale: f64,
) -> Result<Tensor> {
    let (b, heads, lq, d) = q.dims4()?;
    let (kb, kv_heads, lk, kd) = k.dims4()?;
    if v.dims4()? != (kb, kv_heads, lk, kd) || kb != b || kd != d {
        candle_core::bail!(
            "flash attention: q {:?}, k {:?}, v {:?}",
            q.shape(),
            k.shape(),
            v.shape()
        )
    }
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        candle_core::bail!("flash attention: {heads} heads not a multiple of {kv_heads} kv heads")
    }
    tiles(d)?;
    let dtype = q.dtype();
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        || k.dtype() != dtype
        || v.dtype() != dtype
    {
        candle_core::bail!(
            "flash attention: dtypes q {dtype:?}, k {:?}, v {:?}",
            k.dtype(),
            v.dtype()
        )
    }
    if !q.device().is_cuda()
        || !k.device().same_device(q.device())
        || !v.device().same_device(q.device())
    {
        candle_core::bail!("flash attention: q, k and v must be on one CUDA device")
    }
    if b == 0 || heads == 0 || lq == 0 || lk == 0 {
        return Tensor::zeros((b, heads, lq, d), dtype, q.device());
    }
    let (q, k, v) = (
        last_contiguous(q)?,
        last_contiguous(k)?,
        last_contiguous(v)?,
    );
    let bias = match bias {
        Some(t) => Some(Bias::new(t, (b, heads, lq, lk), q.device())?),
        None => None,
    };
    let track = q.track_op() || k.track_op() || v.track_op();
    let op = FlashAttention {
        bias,
        causal,
        scale: scale as f32,
        keep_lse: track,
        lse: Mutex::new(None),
    };
    if track {
        q.apply_op3(&k, &v, op)
    } else {
        q.apply_op3_no_bwd(&k, &v, &op)
    }
}

fn last_contiguous(t: &Tensor) -> Result<Tensor> {
    if t.stride()[3] == 1 || t.dim(3)? == 1 {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}

/// The bias as a contiguous f32 tensor of (bb, bh, bq, lk) with bb ∈ {1, batch}, bh ∈ {1, heads},
/// bq ∈ {1, lq}, and the element strides the kernels use (0 where broadcast).
struct Bias {
    t: Tensor,
    strides: [i64; 3],
}

impl Bias {
    fn new(
        bias: &Tensor,
        (b, heads, lq, lk): (usize, usize, usize, usize),
        dev: &candle_core::Device,
    ) -> Result<Self> {
        if bias.rank() > 4 {
            candle_core::bail!("flash attention: bias {:?} has rank > 4", bias.shape())
        }
        let mut dims = vec![1; 4 - bias.rank()];
        dims.extend_from_slice(bias.dims());
        let (bb, bh, bq, bk) = (dims[0], dims[1], dims[2], dims[3]);
        let ok = (bb == 1 || bb == b)
            && (bh == 1 || bh == heads)
            && (bq == 1 || bq == lq)
            && (bk == 1 || bk == lk);
        if !ok {
            candle_core::bail!(
                "flash attention: bias {:?} does not broadcast to ({b}, {heads}, {lq}, {lk})",
                bias.shape()
            )
        }
        let mut t = bias.reshape(dims)?;
        if bk != lk {
            t = t.broadcast_as((bb, bh, bq, lk))?;
        }
        let t = t.to_device(dev)?.to_dtype(DType::F32)?.contiguous()?;
        let stride = |n: usize, s: usize| if n == 1 { 0 } else { s as i64 };
        let strides = [
            stride(bb, bh * bq * lk),
            stride(bh, bq * lk),
            stride(bq, lk),
        ];
        Ok(Self { t, strides })
    }

    fn addr(&self) -> Result<u64> {
        let (s, l) = self.t.storage_and_layout();
        match &*s {
            Storage::Cuda(c) => addr_of(c, DType::F32, l.start_offset()),
            _ => candle_core::bail!("flash attention: bias is not on the CUDA device"),
        }
    }
}

struct FlashAttention {
    bias: Option<Bias>,
    causal: bool,
    scale: f32,
    /// Keep the forward's log-sum-exp for `bwd` (only when something tracks gradients).
    keep_lse: bool,
    lse: Mutex<Option<CudaStorage>>,
}

fn alloc(dev: &CudaDevice, dtype: DType, n: usize) -> Result<CudaStorage> {
    // SAFETY: every kernel writing into these buffers writes each element.
    Ok(match dtype {
        DType::F32 => CudaStorage::wrap_cuda_slice(unsafe { dev.alloc::<f32>(n)? }, dev.clone()),
        DType::F16 => CudaStorage::wrap_cuda_slice(unsafe { dev.alloc::<f16>(n)? }, dev.clone()),
        DType::BF16 => CudaStorage::wrap_cuda_slice(unsafe { dev.alloc::<bf16>(n)? }, dev.clone()),
        d => candle_core::bail!("flash attention: unsupported dtype {d:?}"),
    })
}

fn zeros_f32(dev: &CudaDevice, n: usize) -> Result<CudaStorage> {
    Ok(CudaStorage::wrap_cuda_slice(
        dev.alloc_zeros::<f32>(n)?,
        dev.clone(),
    ))
}

fn cuda_err(e: impl std::error::Error + Send + Sync + 'static) -> candle_core::Error {
    candle_core::Error::Cuda(Box::new(e))
}

fn kernel(dev: &CudaDevice, name: &str, dtype: DType, smem: usize) -> Result<CudaFunction> {
    let f = func(dev, name, dtype)?;
    if smem > 48 * 1024 {
        f.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )
        .map_err(cuda_err)?;
    }
    Ok(f)
}

/// (batch, head, row) element strides of a (batch, heads, len, d) layout with a unit last stride.
fn strides(l: &Layout) -> Result<[i64; 3]> {
    let s = l.stride();
    if s.len() != 4 || (s[3] != 1 && l.dims()[3] != 1) {
        candle_core::bail!("flash attention: last dim not contiguous ({s:?})")
    }
    Ok([s[0] as i64, s[1] as i64, s[2] as i64])
}

fn grid(n: usize) -> u32 {
    n.div_ceil(256).clamp(1, 65_535) as u32
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "wick-flash-attention"
    }

    cuda_only_cpu_fwd!(3);

    fn cuda_fwd(
        &self,
        qs: &CudaStorage,
        ql: &Layout,
        ks: &CudaStorage,
        kl: &Layout,
        vs: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (b, heads, lq, d) = ql.shape().dims4()?;
        let (_, kv_heads, lk, _) = kl.shape().dims4()?;
        let dtype = qs.dtype();
        let (bk, _, _) = tiles(d)?;
        let dev = qs.device();
        let out = alloc(dev, dtype, b * heads * lq * d)?;
        let lse = if self.keep_lse {
            Some(alloc(dev, DType::F32, b * heads * lq)?)
        } else {
            None
        };
        let [qsb, qsh, qsr] = strides(ql)?;
        let [ksb, ksh, ksr] = strides(kl)?;
        let [vsb, vsh, vsr] = strides(vl)?;
        let (bias, [bsb, bsh, bsr]) = match &self.bias {
            Some(bb) => (bb.addr()?, bb.strides),
            None => (0u64, [0i64; 3]),
        };
        let (qp, kp, vp, op) = (
            addr_of(qs, dtype, ql.start_offset())?,
            addr_of(ks, dtype, kl.start_offset())?,
            addr_of(vs, dtype, vl.start_offset())?,
            addr_of(&out, dtype, 0)?,
        );
        let lp = match &lse {
            Some(l) => addr_of(l, DType::F32, 0)?,
            None => 0u64,
        };
        let tc = use_tc(dtype);
        let (name, smem) = if tc {
            (format!("flash_fwd_tc_d{d}"), fwd_tc_smem(d))
        } else {
            (format!("flash_fwd_d{d}"), fwd_smem(d, bk))
        };
        let vec = vec_ok(
            &[qp, kp, vp],
            &[qsb, qsh, qsr, ksb, ksh, ksr, vsb, vsh, vsr],
        );
        let f = kernel(dev, &name, dtype, smem)?;
        let cfg = LaunchConfig {
            grid_dim: (lq.div_ceil(FWD_BQ) as u32, heads as u32, b as u32),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        let (h, kvh, lqi, lki) = (heads as i32, kv_heads as i32, lq as i32, lk as i32);
        let (scale, causal) = (self.scale, i32::from(self.causal));
        let stream = dev.cuda_stream();
        let mut lb = stream.launch_builder(&f);
        lb.arg(&qp).arg(&kp).arg(&vp).arg(&bias).arg(&op).arg(&lp);
        lb.arg(&h).arg(&kvh).arg(&lqi).arg(&lki);
        lb.arg(&qsb).arg(&qsh).arg(&qsr);
        lb.arg(&ksb).arg(&ksh).arg(&ksr);
        lb.arg(&vsb).arg(&vsh).arg(&vsr);
        lb.arg(&bsb).arg(&bsh).arg(&bsr);
        lb.arg(&scale).arg(&causal);
        if tc {
            lb.arg(&vec);
        }
        // SAFETY: q/k/v addresses plus the layout strides stay inside their storages (shapes
        // checked by `flash_attention`, the kernel reads rows < lq / lk only); out and lse were
        // just allocated with b·heads·lq·d and b·heads·lq elements, which the kernel writes;
        // the bias tensor (owned by this op) covers its strides.
        unsafe { lb.launch(cfg) }.map_err(cuda_err)?;
        if let Some(l) = lse {
            *self
                .lse
                .lock()
                .map_err(|_| candle_core::Error::Msg("lse lock".into()))? = Some(l);
        }
        Ok((out, Shape::from((b, heads, lq, d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let guard = self
            .lse
            .lock()
            .map_err(|_| candle_core::Error::Msg("lse lock".into()))?;
        let lse = match guard.as_ref() {
            Some(l) => l,
            None => candle_core::bail!("flash attention backward: no forward log-sum-exp kept"),
        };
        let (dq, dk, dv) = self.backward(q, k, v, res, &grad.contiguous()?, lse)?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// Device address of a CUDA tensor's first element and its (batch, head, row) strides.
fn tensor_addr(t: &Tensor) -> Result<(u64, [i64; 3])> {
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cuda(c) => Ok((addr_of(c, t.dtype(), l.start_offset())?, strides(l)?)),
        _ => candle_core::bail!("flash attention backward: tensor not on CUDA"),
    }
}

fn wrap(s: CudaStorage, shape: (usize, usize, usize, usize)) -> Tensor {
    Tensor::from_storage(Storage::Cuda(s), shape, BackpropOp::none(), false)
}

impl FlashAttention {
    /// (dq, dk, dv) for upstream `grad` (contiguous, like `res`, the forward's output).
    fn backward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
        lse: &CudaStorage,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, heads, lq, d) = q.dims4()?;
        let (_, kv_heads, lk, _) = k.dims4()?;
        let dtype = q.dtype();
        if grad.dtype() != dtype || res.dtype() != dtype || grad.dims4()? != (b, heads, lq, d) {
            candle_core::bail!("flash attention backward: gradient {:?}", grad.shape())
        }
        let tc = use_tc(dtype);
        let (_, bq, bk) = tiles(d)?;
        let bk = if tc { TC_TILE } else { bk };
        let dev = q.device().as_cuda_device()?;
        let stream = dev.cuda_stream();
        let (qp, [qsb, qsh, qsr]) = tensor_addr(q)?;
        let (kp, [ksb, ksh, ksr]) = tensor_addr(k)?;
        let (vp, [vsb, vsh, vsr]) = tensor_addr(v)?;
        let res = res.contiguous()?;
        let (op, _) = tensor_addr(&res)?;
        let (mut gp, _) = tensor_addr(grad)?;
        // The tensor-core kernel reads dO with 16-byte loads: a misaligned view gets copied.
        let aligned_grad;
        if gp % 16 != 0 {
            aligned_grad = grad.copy()?;
            gp = tensor_addr(&aligned_grad)?.0;
        }
        let lp = addr_of(lse, DType::F32, 0)?;
        let (bias, [bsb, bsh, bsr]) = match &self.bias {
            Some(bb) => (bb.addr()?, bb.strides),
            None => (0u64, [0i64; 3]),
        };
        let rows = b * heads * lq;

        // D_i = Σ_d dO·O.
        let dd = alloc(dev, DType::F32, rows)?;
        let ddp = addr_of(&dd, DType::F32, 0)?;
        let f = func(dev, "flash_bwd_prep", dtype)?;
        let (rows_i, d_i) = (rows as i32, d as i32);
        let mut lb = stream.launch_builder(&f);
        lb.arg(&op).arg(&gp).arg(&ddp).arg(&rows_i).arg(&d_i);
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(4) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: o and dO are contiguous rows × d of `dtype`; dd holds rows f32.
        unsafe { lb.launch(cfg) }.map_err(cuda_err)?;

        // Split each GQA group over several blocks when the key tiles alone leave SMs idle.
        let n_rep = heads / kv_heads;
        let blocks = lk.div_ceil(bk) * kv_heads * b;
        let want = 264usize.div_ceil(blocks.max(1));
        let hsplit = if want <= 1 {
            1
        } else {
            (1..=n_rep)
                .find(|s| n_rep.is_multiple_of(*s) && *s >= want)
                .unwrap_or(n_rep)
        };
        let nq = b * heads * lq * d;
        let nk = b * kv_heads * lk * d;
        let dq = zeros_f32(dev, nq)?;
        let dqp = addr_of(&dq, DType::F32, 0)?;
        let (dk, dv) = (alloc(dev, dtype, nk)?, alloc(dev, dtype, nk)?);
        let (dkp, dvp) = (addr_of(&dk, dtype, 0)?, addr_of(&dv, dtype, 0)?);
        let parts = if hsplit > 1 {
            Some((
                alloc(dev, DType::F32, nk * hsplit)?,
                alloc(dev, DType::F32, nk * hsplit)?,
            ))
        } else {
            None
        };
        let (pkp, pvp) = match &parts {
            Some((a, c)) => (addr_of(a, DType::F32, 0)?, addr_of(c, DType::F32, 0)?),
            None => (0u64, 0u64),
        };
        let (name, smem) = if tc {
            (format!("flash_bwd_tc_d{d}"), bwd_tc_smem(d))
        } else {
            (format!("flash_bwd_d{d}"), bwd_smem(d, bq, bk))
        };
        let vec = vec_ok(
            &[qp, kp, vp],
            &[qsb, qsh, qsr, ksb, ksh, ksr, vsb, vsh, vsr],
        );
        let f = kernel(dev, &name, dtype, smem)?;
        let cfg = LaunchConfig {
            grid_dim: (lk.div_ceil(bk) as u32, (kv_heads * hsplit) as u32, b as u32),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        let (h, kvh, hs, lqi, lki) = (
            heads as i32,
            kv_heads as i32,
            hsplit as i32,
            lq as i32,
            lk as i32,
        );
        let (scale, causal) = (self.scale, i32::from(self.causal));
        let mut lb = stream.launch_builder(&f);
        lb.arg(&qp)
            .arg(&kp)
            .arg(&vp)
            .arg(&gp)
            .arg(&lp)
            .arg(&ddp)
            .arg(&bias);
        lb.arg(&dqp).arg(&dkp).arg(&dvp).arg(&pkp).arg(&pvp);
        lb.arg(&h).arg(&kvh).arg(&hs).arg(&lqi).arg(&lki);
        lb.arg(&qsb).arg(&qsh).arg(&qsr);
        lb.arg(&ksb).arg(&ksh).arg(&ksr);
        lb.arg(&vsb).arg(&vsh).arg(&vsr);
        lb.arg(&bsb).arg(&bsh).arg(&bsr);
        lb.arg(&scale).arg(&causal);
        if tc {
            lb.arg(&vec);
        }
        // SAFETY: as the forward for q/k/v/bias; dO is contiguous (b, heads, lq, d), lse and dd
        // (b, heads, lq); dq (zeroed f32) and dk/dv (or the f32 partials, hsplit of them) were
        // allocated above with the element counts the kernel writes.
        unsafe { lb.launch(cfg) }.map_err(cuda_err)?;

        if parts.is_some() {
            let f = func(dev, "flash_bwd_reduce", dtype)?;
            let (n, total, s) = ((lk * d) as i64, nk as i64, hsplit as i32);
            for (src, dst) in [(pkp, dkp), (pvp, dvp)] {
                let mut lb = stream.launch_builder(&f);
                lb.arg(&src).arg(&dst).arg(&s).arg(&n).arg(&total);
                let cfg = LaunchConfig {
                    grid_dim: (grid(nk), 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: src holds nk·hsplit f32 partials, dst nk elements of `dtype`.
                unsafe { lb.launch(cfg) }.map_err(cuda_err)?;
            }
        }
        let dq = if dtype == DType::F32 {
            dq
        } else {
            let out = alloc(dev, dtype, nq)?;
            let outp = addr_of(&out, dtype, 0)?;
            let f = func(dev, "flash_cast", dtype)?;
            let n = nq as i64;
            let mut lb = stream.launch_builder(&f);
            lb.arg(&dqp).arg(&outp).arg(&n);
            let cfg = LaunchConfig {
                grid_dim: (grid(nq), 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: dq holds nq f32, out nq elements of `dtype`.
            unsafe { lb.launch(cfg) }.map_err(cuda_err)?;
            out
        };
        // Keep the partial buffers alive until the stream has used them (stream-ordered frees).
        drop(parts);
        Ok((
            wrap(dq, (b, heads, lq, d)),
            wrap(dk, (b, kv_heads, lk, d)),
            wrap(dv, (b, kv_heads, lk, d)),
        ))
    }
}
