//! The CUDA fast paths of the op layer as candle custom ops (forward only: they are taken when
//! nothing tracks gradients; training runs the differentiable references).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

use super::blaslt::{BlasLt, Gemm};
use super::kernels::{func, gemv, row_threads, GEMV_MAX_ROWS};

pub(super) fn contiguous(l: &Layout, what: &str) -> Result<usize> {
    match l.contiguous_offsets() {
        Some((start, _)) => Ok(start),
        None => candle_core::bail!("{what}: contiguous input expected"),
    }
}

/// Device address of element `offset` of a storage.
fn addr<T: CudaDType>(s: &CudaStorage, offset: usize) -> Result<u64> {
    let slice = s.as_cuda_slice::<T>()?;
    let (ptr, _guard) = slice.device_ptr(slice.stream());
    Ok(ptr + (offset * std::mem::size_of::<T>()) as u64)
}

pub(super) fn addr_of(s: &CudaStorage, dtype: DType, offset: usize) -> Result<u64> {
    match dtype {
        DType::F32 => addr::<f32>(s, offset),
        DType::F16 => addr::<f16>(s, offset),
        DType::BF16 => addr::<bf16>(s, offset),
        DType::U32 => addr::<u32>(s, offset),
        d => candle_core::bail!("wick CUDA op: unsupported dtype {d:?}"),
    }
}

pub(super) fn alloc(
    dev: &candle_core::cuda_backend::CudaDevice,
    dtype: DType,
    n: usize,
) -> Result<CudaStorage> {
    // SAFETY: every kernel writing into these buffers writes each element.
    Ok(match dtype {
        DType::F32 => CudaStorage::wrap_cuda_slice(unsafe { dev.alloc::<f32>(n)? }, dev.clone()),
        DType::F16 => CudaStorage::wrap_cuda_slice(unsafe { dev.alloc::<f16>(n)? }, dev.clone()),
        DType::BF16 => CudaStorage::wrap_cuda_slice(unsafe { dev.alloc::<bf16>(n)? }, dev.clone()),
        d => candle_core::bail!("wick CUDA op: unsupported dtype {d:?}"),
    })
}

/// `x·Wᵀ (+ bias)` for contiguous 2-D `x` (rows × k) and `weight` (n × k) via cuBLASLt, the bias
/// fused into the GEMM epilogue.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) => x.apply_op3_no_bwd(weight, b, &LtLinear),
        None => x.apply_op2_no_bwd(weight, &LtLinear),
    }
}

/// `x·Wᵀ + bias + residual` with the residual added by the GEMM (its C operand, β = 1): no
/// separate pass over the output for a residual connection.
pub fn linear_add(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
) -> Result<Tensor> {
    x.apply_op3_no_bwd(weight, residual, &LtLinearAdd(bias.cloned()))
}

struct LtLinearAdd(Option<Tensor>);

impl CustomOp3 for LtLinearAdd {
    fn name(&self) -> &'static str {
        "wick-lt-linear-add"
    }
    cuda_only_cpu_fwd!(3);
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        rs: &CudaStorage,
        rl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let guard = self.0.as_ref().map(|b| b.storage_and_layout());
        let bias = match &guard {
            Some((s, l)) => match &**s {
                candle_core::Storage::Cuda(s) => Some((s, *l)),
                _ => candle_core::bail!("wick-lt-linear-add: the bias is not on the GPU"),
            },
            None => None,
        };
        LtLinear.run(xs, xl, ws, wl, bias, Some((rs, rl)))
    }
}

struct LtLinear;

impl LtLinear {
    fn run(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bias: Option<(&CudaStorage, &Layout)>,
        residual: Option<(&CudaStorage, &Layout)>,
    ) -> Result<(CudaStorage, Shape)> {
        let (rows, k) = xl.shape().dims2()?;
        let (n, k2) = wl.shape().dims2()?;
        let dtype = xs.dtype();
        if k != k2
            || ws.dtype() != dtype
            || bias.is_some_and(|(b, l)| b.dtype() != dtype || l.shape().elem_count() != n)
        {
            candle_core::bail!(
                "cuBLASLt linear: x {:?} {dtype:?}, weight {:?} {:?}",
                xl.shape(),
                wl.shape(),
                ws.dtype()
            )
        }
        if residual.is_some_and(|(r, l)| r.dtype() != dtype || l.shape().dims() != [rows, n]) {
            candle_core::bail!("cuBLASLt linear: residual must be ({rows}, {n}) {dtype:?}")
        }
        let dev = xs.device();
        let out = alloc(dev, dtype, rows * n)?;
        let blas = BlasLt::for_stream(&dev.cuda_stream())?;
        let bias = match bias {
            Some((b, l)) => Some(addr_of(b, dtype, contiguous(l, "bias")?)?),
            None => None,
        };
        let g = Gemm {
            rows,
            n,
            k,
            dtype,
            x: addr_of(xs, dtype, contiguous(xl, "x")?)?,
            w: addr_of(ws, dtype, contiguous(wl, "weight")?)?,
            bias,
            accumulate: match residual {
                Some((r, l)) => Some(addr_of(r, dtype, contiguous(l, "residual")?)?),
                None => None,
            },
            d: addr_of(&out, dtype, 0)?,
            tf32: false,
        };
        // SAFETY: shapes checked above; inputs are contiguous storages of this device kept alive
        // by the caller's tensors, the output was just allocated with rows·n elements.
        if rows <= GEMV_MAX_ROWS {
            // Decode-sized: a bandwidth-bound GEMV beats cuBLASLt's tiles at one to eight rows.
            unsafe { gemv(&dev.cuda_stream(), &func(dev, "gemv", dtype)?, &g)? };
        } else {
            unsafe { blas.gemm(&g)? };
        }
        Ok((out, Shape::from((rows, n))))
    }
}

impl CustomOp2 for LtLinear {
    fn name(&self) -> &'static str {
        "wick-lt-linear"
    }
    cuda_only_cpu_fwd!(2);
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.run(xs, xl, ws, wl, None, None)
    }
}

impl CustomOp3 for LtLinear {
    fn name(&self) -> &'static str {
        "wick-lt-linear-bias"
    }
    cuda_only_cpu_fwd!(3);
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.run(xs, xl, ws, wl, Some((bs, bl)), None)
    }
}

/// RMSNorm over the last dimension of a contiguous tensor with wick's kernel (one block a row).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.apply_op2_no_bwd(weight, &RmsNorm(eps as f32))
}

struct RmsNorm(f32);

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "wick-rms-norm"
    }
    cuda_only_cpu_fwd!(2);
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dtype = xs.dtype();
        let cols = xl.shape().dims().last().copied().unwrap_or(0);
        if cols == 0 || wl.shape().elem_count() != cols || ws.dtype() != dtype {
            candle_core::bail!("wick-rms-norm: x {:?}, weight {:?}", xl.shape(), wl.shape())
        }
        let rows = xl.shape().elem_count() / cols;
        let dev = xs.device();
        let out = alloc(dev, dtype, rows * cols)?;
        let (x, w, y) = (
            addr_of(xs, dtype, contiguous(xl, "x")?)?,
            addr_of(ws, dtype, contiguous(wl, "weight")?)?,
            addr_of(&out, dtype, 0)?,
        );
        let f = func(dev, "rms_norm", dtype)?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (row_threads(cols), 1, 1),
            shared_mem_bytes: 0,
        };
        let (cols_i, eps) = (cols as i32, self.0);
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&w).arg(&y).arg(&cols_i).arg(&eps);
        // SAFETY: x/y hold rows·cols elements and w cols, all of `dtype`, as the kernel reads.
        unsafe { b.launch(cfg) }.map_err(|e| candle_core::Error::Cuda(Box::new(e)))?;
        Ok((out, xl.shape().clone()))
    }
}

/// Attention of one query token per sequence over cached keys/values with grouped-query heads:
/// `q` (batch, heads, 1, d); `k`/`v` (batch, kv_heads, len, d) views of a KV cache (rows of `d`
/// contiguous, any sequence stride). One kernel launch; scores and softmax in f32.
pub fn decode_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    q.apply_op3_no_bwd(k, v, &DecodeAttention(scale as f32))
}

struct DecodeAttention(f32);

/// (batch, kv_heads, len, d) with unit inner stride and a uniform cache layout: returns the
/// cache's row capacity (max_len).
fn cache_capacity(l: &Layout) -> Result<usize> {
    let (b, kv, len, d) = l.shape().dims4()?;
    let s = l.stride();
    let max_len = if kv > 1 {
        s[1] / d
    } else if b > 1 {
        s[0] / d
    } else {
        len
    };
    let ok = s[3] == 1
        && (s[2] == d || len == 1)
        && (kv == 1 || s[1] == max_len * d)
        && (b == 1 || s[0] == kv * max_len * d)
        && max_len >= len;
    if !ok {
        candle_core::bail!(
            "decode attention: unsupported K/V layout {:?} strides {s:?}",
            l.shape()
        )
    }
    Ok(max_len)
}

impl CustomOp3 for DecodeAttention {
    fn name(&self) -> &'static str {
        "wick-decode-attention"
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
        let (b, heads, one, d) = ql.shape().dims4()?;
        let (kb, kv, len, kd) = kl.shape().dims4()?;
        let dtype = qs.dtype();
        if one != 1
            || kb != b
            || kd != d
            || vl.shape() != kl.shape()
            || kv == 0
            || heads % kv != 0
            || d % 32 != 0
            || d > 256
            || ks.dtype() != dtype
            || vs.dtype() != dtype
        {
            candle_core::bail!(
                "decode attention: q {:?}, k {:?}, v {:?}",
                ql.shape(),
                kl.shape(),
                vl.shape()
            )
        }
        let max_len = cache_capacity(kl)?;
        if cache_capacity(vl)? != max_len || vl.stride() != kl.stride() {
            candle_core::bail!("decode attention: K and V caches differ in layout")
        }
        let dev = qs.device();
        let out = alloc(dev, dtype, b * heads * d)?;
        let (qp, kp, vp, op) = (
            addr_of(qs, dtype, contiguous(ql, "q")?)?,
            addr_of(ks, dtype, kl.start_offset())?,
            addr_of(vs, dtype, vl.start_offset())?,
            addr_of(&out, dtype, 0)?,
        );
        let f = func(dev, "decode_attention", dtype)?;
        let cfg = LaunchConfig {
            grid_dim: (b as u32, heads as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let (null, n, h, kvh, di, ml, scale) = (
            0u64,
            len as i32,
            heads as i32,
            kv as i32,
            d as i32,
            max_len as i32,
            self.0,
        );
        let stream = dev.cuda_stream();
        let mut lb = stream.launch_builder(&f);
        lb.arg(&qp)
            .arg(&kp)
            .arg(&vp)
            .arg(&op)
            .arg(&null)
            .arg(&n)
            .arg(&h)
            .arg(&kvh)
            .arg(&di)
            .arg(&ml)
            .arg(&scale);
        // SAFETY: q holds b·heads·d contiguous elements, k/v hold b·kv·max_len·d from their start
        // offsets (layout checked), out b·heads·d; `null` selects the fixed length.
        unsafe { lb.launch(cfg) }.map_err(|e| candle_core::Error::Cuda(Box::new(e)))?;
        Ok((out, ql.shape().clone()))
    }
}
