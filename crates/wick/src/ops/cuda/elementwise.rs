//! Elementwise kernels of `elementwise.cu` as candle ops (no backward of their own: they serve
//! inference and the analytic backward passes). Each takes contiguous inputs whose first element
//! is 16-byte aligned, so the kernels move 16 bytes per load; callers fall back to candle's ops
//! when [`fits`] says no.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::{CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::fused::{addr_of, alloc, contiguous};
use super::kernels::func;

/// Whether `t` can go to these kernels: on CUDA, f32/f16/bf16, contiguous, 16-byte aligned.
pub fn fits(t: &Tensor) -> bool {
    t.device().is_cuda()
        && matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16)
        && t.layout()
            .contiguous_offsets()
            .is_some_and(|(start, _)| (start * t.dtype().size_in_bytes()).is_multiple_of(16))
}

fn start(l: &Layout, dtype: DType, what: &str) -> Result<usize> {
    match l.contiguous_offsets() {
        Some((s, _)) if (s * dtype.size_in_bytes()).is_multiple_of(16) => Ok(s),
        _ => candle_core::bail!("wick elementwise: {what} is not contiguous and 16-byte aligned"),
    }
}

fn suffix(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        d => candle_core::bail!("wick elementwise: unsupported dtype {d:?}"),
    })
}

fn grid(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n / 8).div_ceil(256).clamp(1, 4096) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn launch_err(e: candle_core::cuda_backend::cudarc::driver::DriverError) -> candle_core::Error {
    candle_core::Error::Cuda(Box::new(e))
}

/// `x` converted to `dtype` (f32 ↔ f16/bf16).
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    x.apply_op1_no_bwd(&Cast(dtype))
}

struct Cast(DType);

impl CustomOp1 for Cast {
    fn name(&self) -> &'static str {
        "wick-cast"
    }
    cuda_only_cpu_fwd!(1);
    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let (src, dst) = (xs.dtype(), self.0);
        let name = match (src, dst) {
            (DType::F32, DType::F16 | DType::BF16) => format!("cast_f32_{}", suffix(dst)?),
            (DType::F16 | DType::BF16, DType::F32) => format!("cast_{}_f32", suffix(src)?),
            _ => candle_core::bail!("wick-cast: {src:?} to {dst:?} unsupported"),
        };
        let n = xl.shape().elem_count();
        let dev = xs.device();
        let out = alloc(dev, dst, n)?;
        let (x, y) = (
            addr_of(xs, src, start(xl, src, "x")?)?,
            addr_of(&out, dst, 0)?,
        );
        let f =
            dev.get_or_load_custom_func(&name, "wick_elementwise", wick_kernels::ELEMENTWISE)?;
        let f = f.into_cuda_function();
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&y).arg(&n);
        // SAFETY: x holds n elements of src from an aligned start, y was allocated with n of dst.
        unsafe { b.launch(grid(n)) }.map_err(launch_err)?;
        Ok((out, xl.shape().clone()))
    }
}

/// `a + b.to_dtype(a.dtype())` for `a` in any float dtype and `b` in f32, one pass.
pub fn add_rounded(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.apply_op2_no_bwd(b, &AddRounded)
}

struct AddRounded;

impl CustomOp2 for AddRounded {
    fn name(&self) -> &'static str {
        "wick-add-rounded"
    }
    cuda_only_cpu_fwd!(2);
    fn cuda_fwd(
        &self,
        as_: &CudaStorage,
        al: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (dtype, n) = (as_.dtype(), al.shape().elem_count());
        if bs.dtype() != DType::F32 || bl.shape().elem_count() != n {
            candle_core::bail!(
                "wick-add-rounded: a {:?}, b {:?} {:?}",
                al.shape(),
                bl.shape(),
                bs.dtype()
            )
        }
        let dev = as_.device();
        let out = alloc(dev, dtype, n)?;
        let (a, b, y) = (
            addr_of(as_, dtype, start(al, dtype, "a")?)?,
            addr_of(bs, DType::F32, start(bl, DType::F32, "b")?)?,
            addr_of(&out, dtype, 0)?,
        );
        let f = func(dev, "add_rounded", dtype)?;
        let stream = dev.cuda_stream();
        let mut l = stream.launch_builder(&f);
        l.arg(&a).arg(&b).arg(&y).arg(&n);
        // SAFETY: a and y hold n elements of dtype, b n f32, all from aligned starts.
        unsafe { l.launch(grid(n)) }.map_err(launch_err)?;
        Ok((out, al.shape().clone()))
    }
}

/// The exact (erf) GELU, `x·Φ(x)`, computed in f32.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.apply_op1_no_bwd(&GeluErf)
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "wick-gelu-erf"
    }
    cuda_only_cpu_fwd!(1);
    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let (dtype, n) = (xs.dtype(), xl.shape().elem_count());
        let dev = xs.device();
        let out = alloc(dev, dtype, n)?;
        let (x, y) = (
            addr_of(xs, dtype, start(xl, dtype, "x")?)?,
            addr_of(&out, dtype, 0)?,
        );
        let f = func(dev, "gelu_erf", dtype)?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&y).arg(&n);
        // SAFETY: x and y hold n elements of dtype from aligned starts.
        unsafe { b.launch(grid(n)) }.map_err(launch_err)?;
        Ok((out, xl.shape().clone()))
    }
}

/// SwiGLU's input gradients `(d_gate, d_up)` from gate, up and the output's gradient `g`.
pub fn swiglu_backward(gate: &Tensor, up: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
    // One buffer: d_gate, then d_up from the next 8-element boundary (aligned for the kernel).
    let both = gate.apply_op3_no_bwd(up, g, &SwigluBackward)?;
    let n = gate.elem_count();
    let d_gate = both.narrow(0, 0, n)?.reshape(gate.shape())?;
    let d_up = both
        .narrow(0, n.next_multiple_of(8), n)?
        .reshape(gate.shape())?;
    Ok((d_gate, d_up))
}

struct SwigluBackward;

impl CustomOp3 for SwigluBackward {
    fn name(&self) -> &'static str {
        "wick-swiglu-backward"
    }
    cuda_only_cpu_fwd!(3);
    fn cuda_fwd(
        &self,
        gs: &CudaStorage,
        gl: &Layout,
        us: &CudaStorage,
        ul: &Layout,
        ds: &CudaStorage,
        dl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (dtype, n) = (gs.dtype(), gl.shape().elem_count());
        if us.dtype() != dtype
            || ds.dtype() != dtype
            || ul.shape() != gl.shape()
            || dl.shape() != gl.shape()
        {
            candle_core::bail!("wick-swiglu-backward: gate, up and gradient must match")
        }
        let dev = gs.device();
        let padded = n.next_multiple_of(8);
        let out = alloc(dev, dtype, padded + n)?;
        let (gate, up, g) = (
            addr_of(gs, dtype, start(gl, dtype, "gate")?)?,
            addr_of(us, dtype, start(ul, dtype, "up")?)?,
            addr_of(ds, dtype, start(dl, dtype, "gradient")?)?,
        );
        let (d_gate, d_up) = (addr_of(&out, dtype, 0)?, addr_of(&out, dtype, padded)?);
        let f = func(dev, "swiglu_backward", dtype)?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&gate)
            .arg(&up)
            .arg(&g)
            .arg(&d_gate)
            .arg(&d_up)
            .arg(&n);
        // SAFETY: inputs hold n elements each, out padded + n; the kernel writes d_gate's n and
        // d_up's n (the padding between them is never read).
        unsafe { b.launch(grid(n)) }.map_err(launch_err)?;
        Ok((out, Shape::from(padded + n)))
    }
}

/// RMSNorm's input gradient from x (rows × cols, last dim), the weight and the output's gradient.
pub fn rms_norm_backward(x: &Tensor, weight: &Tensor, g: &Tensor, eps: f64) -> Result<Tensor> {
    x.apply_op3_no_bwd(weight, g, &RmsNormBackward(eps as f32))
}

struct RmsNormBackward(f32);

impl CustomOp3 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "wick-rms-norm-backward"
    }
    cuda_only_cpu_fwd!(3);
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dtype = xs.dtype();
        let cols = xl.shape().dims().last().copied().unwrap_or(0);
        if cols == 0
            || wl.shape().elem_count() != cols
            || gl.shape() != xl.shape()
            || ws.dtype() != dtype
            || gs.dtype() != dtype
        {
            candle_core::bail!(
                "wick-rms-norm-backward: x {:?}, weight {:?}, grad {:?}",
                xl.shape(),
                wl.shape(),
                gl.shape()
            )
        }
        let rows = xl.shape().elem_count() / cols;
        let dev = xs.device();
        let out = alloc(dev, dtype, rows * cols)?;
        let (x, w, g, dx) = (
            addr_of(xs, dtype, contiguous(xl, "x")?)?,
            addr_of(ws, dtype, contiguous(wl, "weight")?)?,
            addr_of(gs, dtype, contiguous(gl, "gradient")?)?,
            addr_of(&out, dtype, 0)?,
        );
        let f = func(dev, "rms_norm_backward", dtype)?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (super::kernels::row_threads(cols).min(256), 1, 1),
            shared_mem_bytes: 0,
        };
        let (cols_i, eps) = (cols as i32, self.0);
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&w).arg(&g).arg(&dx).arg(&cols_i).arg(&eps);
        // SAFETY: x, g and dx hold rows·cols elements, w cols, all of dtype.
        unsafe { b.launch(cfg) }.map_err(launch_err)?;
        Ok((out, xl.shape().clone()))
    }
}

/// (b, h, s, d) -> (b, s, h, d) as a contiguous tensor (the heads merged back after attention).
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    x.apply_op1_no_bwd(&MergeHeads)
}

struct MergeHeads;

impl CustomOp1 for MergeHeads {
    fn name(&self) -> &'static str {
        "wick-merge-heads"
    }
    cuda_only_cpu_fwd!(1);
    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let dtype = xs.dtype();
        let (b, h, s, d) = xl.shape().dims4()?;
        if !(d * dtype.size_in_bytes()).is_multiple_of(16) {
            candle_core::bail!("wick-merge-heads: head dim {d} is not a multiple of 16 bytes")
        }
        let dev: &CudaDevice = xs.device();
        let out = alloc(dev, dtype, b * h * s * d)?;
        let (x, y) = (
            addr_of(xs, dtype, start(xl, dtype, "x")?)?,
            addr_of(&out, dtype, 0)?,
        );
        let f = func(dev, "merge_heads", dtype)?;
        let per_batch = h * s * d * dtype.size_in_bytes() / 16;
        let cfg = LaunchConfig {
            grid_dim: (per_batch.div_ceil(256).clamp(1, 1024) as u32, b as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (h_i, s_i, d_i) = (h as i32, s as i32, d as i32);
        let stream = dev.cuda_stream();
        let mut l = stream.launch_builder(&f);
        l.arg(&x).arg(&y).arg(&h_i).arg(&s_i).arg(&d_i);
        // SAFETY: x and y hold b·h·s·d elements; each output chunk is written once.
        unsafe { l.launch(cfg) }.map_err(launch_err)?;
        Ok((out, Shape::from((b, s, h, d))))
    }
}

/// The device address of a tensor held by an op (weights passed beside the op's inputs); the
/// guard keeps the storage readable until the launch.
fn held_addr(
    t: &Tensor,
    dtype: DType,
) -> Result<(
    u64,
    impl std::ops::Deref<Target = candle_core::Storage> + '_,
)> {
    let (guard, layout) = t.storage_and_layout();
    let start = contiguous(layout, "weight")?;
    let addr = match &*guard {
        candle_core::Storage::Cuda(s) if s.dtype() == dtype => addr_of(s, dtype, start)?,
        _ => candle_core::bail!("wick kernel: a weight is not {dtype:?} on the GPU"),
    };
    Ok((addr, guard))
}

/// Rows of 256 threads, 8 rows a block (one warp a row).
fn warp_rows(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(8) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// LayerNorm over the last dim (at most 1024) of a contiguous `x`, in f32, rounded once.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.apply_op3_no_bwd(weight, bias, &LayerNormRows(eps as f32))
}

struct LayerNormRows(f32);

impl CustomOp3 for LayerNormRows {
    fn name(&self) -> &'static str {
        "wick-layer-norm"
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
        let dtype = xs.dtype();
        let cols = xl.shape().dims().last().copied().unwrap_or(0);
        if cols == 0
            || cols > 1024
            || wl.shape().elem_count() != cols
            || bl.shape().elem_count() != cols
            || ws.dtype() != dtype
            || bs.dtype() != dtype
        {
            candle_core::bail!(
                "wick-layer-norm: x {:?}, weight {:?}",
                xl.shape(),
                wl.shape()
            )
        }
        let rows = xl.shape().elem_count() / cols;
        let dev = xs.device();
        let out = alloc(dev, dtype, rows * cols)?;
        let (x, w, b, y) = (
            addr_of(xs, dtype, contiguous(xl, "x")?)?,
            addr_of(ws, dtype, contiguous(wl, "weight")?)?,
            addr_of(bs, dtype, contiguous(bl, "bias")?)?,
            addr_of(&out, dtype, 0)?,
        );
        let f = func(dev, "layer_norm_rows", dtype)?;
        let (rows_i, cols_i, eps) = (rows as i32, cols as i32, self.0);
        let stream = dev.cuda_stream();
        let mut l = stream.launch_builder(&f);
        l.arg(&x)
            .arg(&w)
            .arg(&b)
            .arg(&y)
            .arg(&rows_i)
            .arg(&cols_i)
            .arg(&eps);
        // SAFETY: x and y hold rows·cols elements, w and b cols, all of dtype.
        unsafe { l.launch(warp_rows(rows)) }.map_err(launch_err)?;
        Ok((out, xl.shape().clone()))
    }
}

/// BERT's embeddings in one pass: `LayerNorm(word[ids] + position[0..seq] + token_type0)` for
/// `ids` (batch, seq) u32; `type0` is token type 0's row. Output (batch, seq, hidden).
pub struct EmbedLayerNorm {
    pub token_type0: Tensor,
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f32,
}

impl EmbedLayerNorm {
    pub fn forward(&self, ids: &Tensor, word: &Tensor, position: &Tensor) -> Result<Tensor> {
        ids.apply_op3_no_bwd(word, position, self)
    }
}

impl CustomOp3 for EmbedLayerNorm {
    fn name(&self) -> &'static str {
        "wick-embed-layer-norm"
    }
    cuda_only_cpu_fwd!(3);
    fn cuda_fwd(
        &self,
        is: &CudaStorage,
        il: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        ps: &CudaStorage,
        pl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (batch, seq) = il.shape().dims2()?;
        let (_, cols) = wl.shape().dims2()?;
        let (positions, pcols) = pl.shape().dims2()?;
        let dtype = ws.dtype();
        if is.dtype() != DType::U32
            || pcols != cols
            || seq > positions
            || cols > 1024
            || ps.dtype() != dtype
        {
            candle_core::bail!(
                "wick-embed-layer-norm: ids {:?}, word {:?}, position {:?}",
                il.shape(),
                wl.shape(),
                pl.shape()
            )
        }
        let rows = batch * seq;
        let dev = ws.device();
        let out = alloc(dev, dtype, rows * cols)?;
        let (t0, _g0) = held_addr(&self.token_type0, dtype)?;
        let (w, _g1) = held_addr(&self.weight, dtype)?;
        let (b, _g2) = held_addr(&self.bias, dtype)?;
        let (ids, word, pos, y) = (
            addr_of(is, DType::U32, contiguous(il, "ids")?)?,
            addr_of(ws, dtype, contiguous(wl, "word embeddings")?)?,
            addr_of(ps, dtype, contiguous(pl, "position embeddings")?)?,
            addr_of(&out, dtype, 0)?,
        );
        let f = func(dev, "embed_layer_norm", dtype)?;
        let (rows_i, seq_i, cols_i, eps) = (rows as i32, seq as i32, cols as i32, self.eps);
        let stream = dev.cuda_stream();
        let mut l = stream.launch_builder(&f);
        l.arg(&ids)
            .arg(&word)
            .arg(&pos)
            .arg(&t0)
            .arg(&w)
            .arg(&b)
            .arg(&y)
            .arg(&rows_i)
            .arg(&seq_i)
            .arg(&cols_i)
            .arg(&eps);
        // SAFETY: ids index rows of `word` (checked by the caller), positions < seq ≤ the
        // table's rows, every output row is written.
        unsafe { l.launch(warp_rows(rows)) }.map_err(launch_err)?;
        Ok((out, Shape::from((batch, seq, cols))))
    }
}

/// Mean of `hidden` (batch, seq, cols) over the positions where `mask` (batch, seq) u32 is
/// non-zero, in f32: (batch, cols).
pub fn masked_mean(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    hidden.apply_op2_no_bwd(mask, &MaskedMean)
}

struct MaskedMean;

impl CustomOp2 for MaskedMean {
    fn name(&self) -> &'static str {
        "wick-masked-mean"
    }
    cuda_only_cpu_fwd!(2);
    fn cuda_fwd(
        &self,
        hs: &CudaStorage,
        hl: &Layout,
        ms: &CudaStorage,
        ml: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (batch, seq, cols) = hl.shape().dims3()?;
        if ms.dtype() != DType::U32 || ml.shape().dims() != [batch, seq] {
            candle_core::bail!(
                "wick-masked-mean: hidden {:?}, mask {:?}",
                hl.shape(),
                ml.shape()
            )
        }
        let dtype = hs.dtype();
        let dev = hs.device();
        let out = alloc(dev, DType::F32, batch * cols)?;
        let (h, m, y) = (
            addr_of(hs, dtype, contiguous(hl, "hidden")?)?,
            addr_of(ms, DType::U32, contiguous(ml, "mask")?)?,
            addr_of(&out, DType::F32, 0)?,
        );
        let f = func(dev, "masked_mean", dtype)?;
        let cfg = LaunchConfig {
            grid_dim: (cols.div_ceil(128) as u32, batch as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let (seq_i, cols_i) = (seq as i32, cols as i32);
        let stream = dev.cuda_stream();
        let mut l = stream.launch_builder(&f);
        l.arg(&h).arg(&m).arg(&y).arg(&seq_i).arg(&cols_i);
        // SAFETY: h holds batch·seq·cols elements, the mask batch·seq, out batch·cols.
        unsafe { l.launch(cfg) }.map_err(launch_err)?;
        Ok((out, Shape::from((batch, cols))))
    }
}

/// Each row of an f32 matrix divided by its L2 norm (at least 1e-12).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    x.apply_op1_no_bwd(&L2Normalize)
}

struct L2Normalize;

impl CustomOp1 for L2Normalize {
    fn name(&self) -> &'static str {
        "wick-l2-normalize"
    }
    cuda_only_cpu_fwd!(1);
    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let (rows, cols) = xl.shape().dims2()?;
        if xs.dtype() != DType::F32 {
            candle_core::bail!("wick-l2-normalize: f32 rows expected")
        }
        let dev = xs.device();
        let out = alloc(dev, DType::F32, rows * cols)?;
        let (x, y) = (
            addr_of(xs, DType::F32, contiguous(xl, "x")?)?,
            addr_of(&out, DType::F32, 0)?,
        );
        let f = dev
            .get_or_load_custom_func(
                "l2_normalize_rows_f32",
                "wick_elementwise",
                wick_kernels::ELEMENTWISE,
            )?
            .into_cuda_function();
        let (rows_i, cols_i) = (rows as i32, cols as i32);
        let stream = dev.cuda_stream();
        let mut l = stream.launch_builder(&f);
        l.arg(&x).arg(&y).arg(&rows_i).arg(&cols_i);
        // SAFETY: x and y hold rows·cols f32.
        unsafe { l.launch(warp_rows(rows)) }.map_err(launch_err)?;
        Ok((out, xl.shape().clone()))
    }
}
