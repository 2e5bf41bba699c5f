//! [`crate::ops::decode::GraphDecoder`] on CUDA: one greedy decode step as ~9 launches per layer
//! (RMSNorm, fused q/k/v GEMM + bias, RoPE + cache append, GQA decode attention, o_proj GEMM with
//! the residual add fused, RMSNorm, fused gate/up GEMM, SwiGLU, down GEMM + residual), then the
//! final norm, LM head and an argmax that writes the next input token and advances the
//! positions on the device. All buffers are static, so the whole step is captured once as a
//! CUDA graph and replayed per token with no host work but the launch.

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{
    sys, CudaFunction, CudaGraph, CudaStream, LaunchConfig, PushKernelArg,
};
use candle_core::{DType, Storage, Tensor};

use super::blaslt::{BlasLt, Gemm};
use super::fused::addr_of;
use super::kernels::{func, gemv, row_threads, GEMV_MAX_ROWS};

/// Whether the (unfused) graph step uses the GEMV kernel for ≤ 8 rows instead of cuBLASLt:
/// no, cuBLASLt measured faster inside the graph at 1 and 8 rows.
const GRAPH_GEMV: bool = false;
use crate::error::{Error, Result};
use crate::ops::decode::DecoderWeights;

fn ptr(t: &Tensor) -> Result<u64> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        return Err(Error::Unsupported(
            "graph decode: a tensor is not on the GPU".into(),
        ));
    };
    if !layout.is_contiguous() {
        return Err(Error::Unsupported(
            "graph decode: non-contiguous tensor".into(),
        ));
    }
    Ok(addr_of(s, t.dtype(), layout.start_offset())?)
}

struct LayerPtrs {
    in_norm: u64,
    post_norm: u64,
    wqkv: u64,
    bqkv: Option<u64>,
    wo: u64,
    wgu: u64,
    wdown: u64,
    k_cache: u64,
    v_cache: u64,
}

struct Funcs {
    rms: CudaFunction,
    rope: CudaFunction,
    attn: CudaFunction,
    swiglu: CudaFunction,
    embed: CudaFunction,
    argmax: CudaFunction,
    gemv: CudaFunction,
    gemv_rms: CudaFunction,
    gemv_swiglu: CudaFunction,
}

pub struct CudaGraphDecoder {
    stream: Arc<CudaStream>,
    blas: Arc<BlasLt>,
    funcs: Funcs,
    dtype: DType,
    batch: usize,
    hidden: usize,
    inter: usize,
    vocab: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    max_len: usize,
    eps: f32,
    layers: Vec<LayerPtrs>,
    /// Static buffers (and the fused weights) the pointers below point into.
    _keep: Vec<Tensor>,
    ids: Tensor,
    filled: usize,
    p: Ptrs,
    graph: Option<CudaGraph>,
    use_graph: bool,
    /// One sequence: RMSNorm and SwiGLU fused into the GEMVs (6 launches a layer instead of 9);
    /// the fused GEMVs need 16-byte rows and operands. Opt-in (`WICK_DECODE_FUSED=1`): measured
    /// slower than cuBLASLt on an H100 (2.07 vs 1.40 ms/step, bench/gpu/NOTES.md v3).
    fused: bool,
}

struct Ptrs {
    ids: u64,
    pos: u64,
    len: u64,
    x: u64,
    hn: u64,
    qkv: u64,
    q: u64,
    attn: u64,
    gu: u64,
    act: u64,
    logits: u64,
    embed: u64,
    norm: u64,
    lm_head: u64,
    inv_freq: u64,
}

fn cuda_err(e: impl std::fmt::Debug) -> Error {
    Error::Unsupported(format!("CUDA graph decode: {e:?}"))
}

impl CudaGraphDecoder {
    pub fn new(
        w: &DecoderWeights,
        caches: &[(Tensor, Tensor)],
        filled: usize,
        next: &Tensor,
    ) -> Result<Self> {
        let dev = next.device().clone();
        let cuda = dev.as_cuda_device()?;
        let dtype = w.embed.dtype();
        let (vocab, hidden) = w.embed.dims2()?;
        let (heads, kv_heads, d) = (w.heads, w.kv_heads, w.head_dim);
        let batch = next.elem_count();
        let first = w.layers.first().ok_or_else(|| cuda_err("no layers"))?;
        let inter = first.gate.dim(0)?;
        if caches.len() != w.layers.len() {
            return Err(cuda_err("one (K, V) cache pair per layer expected"));
        }
        let (cb, ckv, max_len, cd) = caches[0].0.dims4()?;
        if cb != batch || ckv != kv_heads || cd != d || filled >= max_len {
            return Err(cuda_err(format!(
                "cache {:?} for batch {batch}, {kv_heads} kv heads of {d}, {filled} filled",
                caches[0].0.dims()
            )));
        }
        if d % 32 != 0 || d > 256 || heads % kv_heads != 0 || w.lm_head.dims2()? != (vocab, hidden)
        {
            return Err(cuda_err("unsupported head layout"));
        }
        let mut keep = Vec::new();
        let mut hold = |t: Tensor| -> Result<u64> {
            let p = ptr(&t)?;
            keep.push(t);
            Ok(p)
        };
        let mut layers = Vec::with_capacity(w.layers.len());
        for (l, (kc, vc)) in w.layers.iter().zip(caches) {
            let c = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(dtype)?.contiguous()?) };
            layers.push(LayerPtrs {
                in_norm: hold(c(&l.input_norm)?)?,
                post_norm: hold(c(&l.post_norm)?)?,
                wqkv: hold(Tensor::cat(&[&l.q, &l.k, &l.v], 0)?.to_dtype(dtype)?)?,
                bqkv: match &l.qkv_bias {
                    Some((bq, bk, bv)) => {
                        Some(hold(Tensor::cat(&[bq, bk, bv], 0)?.to_dtype(dtype)?)?)
                    }
                    None => None,
                },
                wo: hold(c(&l.o)?)?,
                wgu: hold(Tensor::cat(&[&l.gate, &l.up], 0)?.to_dtype(dtype)?)?,
                wdown: hold(c(&l.down)?)?,
                k_cache: hold(kc.clone())?,
                v_cache: hold(vc.clone())?,
            });
        }
        let zeros = |n: usize| Tensor::zeros(n, dtype, &dev);
        let qkv_w = (heads + 2 * kv_heads) * d;
        let ids = next.to_dtype(DType::U32)?.flatten_all()?.copy()?;
        let pos = Tensor::from_vec(vec![filled as u32; batch], batch, &dev)?;
        let len = Tensor::from_vec(vec![filled as u32 + 1; batch], batch, &dev)?;
        let p = Ptrs {
            ids: ptr(&ids)?,
            pos: hold(pos)?,
            len: hold(len)?,
            x: hold(zeros(batch * hidden)?)?,
            hn: hold(zeros(batch * hidden)?)?,
            qkv: hold(zeros(batch * qkv_w)?)?,
            q: hold(zeros(batch * heads * d)?)?,
            attn: hold(zeros(batch * heads * d)?)?,
            gu: hold(zeros(batch * 2 * inter)?)?,
            act: hold(zeros(batch * inter)?)?,
            logits: hold(zeros(batch * vocab)?)?,
            embed: hold(w.embed.to_dtype(dtype)?.contiguous()?)?,
            norm: hold(w.norm.to_dtype(dtype)?.contiguous()?)?,
            lm_head: hold(w.lm_head.to_dtype(dtype)?.contiguous()?)?,
            inv_freq: hold(w.inv_freq.to_dtype(DType::F32)?.contiguous()?)?,
        };
        let funcs = Funcs {
            rms: func(cuda, "rms_norm", dtype)?,
            rope: func(cuda, "rope_append", dtype)?,
            attn: func(cuda, "decode_attention", dtype)?,
            swiglu: func(cuda, "swiglu_halves", dtype)?,
            embed: func(cuda, "embed_rows", dtype)?,
            argmax: func(cuda, "argmax_advance", dtype)?,
            gemv: func(cuda, "gemv", dtype)?,
            gemv_rms: func(cuda, "gemv_rms", dtype)?,
            gemv_swiglu: func(cuda, "gemv_swiglu", dtype)?,
        };
        let stream = cuda.cuda_stream();
        let blas = BlasLt::for_stream(&stream)?;
        let mut this = CudaGraphDecoder {
            stream,
            blas,
            funcs,
            dtype,
            batch,
            hidden,
            inter,
            vocab,
            heads,
            kv_heads,
            d,
            max_len,
            eps: w.eps as f32,
            layers,
            _keep: keep,
            ids,
            filled,
            p,
            graph: None,
            use_graph: std::env::var("WICK_CUDA_GRAPH").map_or(true, |v| v != "0"),
            fused: false,
        };
        let elems = 16 / dtype.size_in_bytes();
        let aligned = this.layers.iter().all(|l| {
            [l.in_norm, l.post_norm, l.wqkv, l.wo, l.wgu, l.wdown]
                .iter()
                .all(|p| p % 16 == 0)
        }) && [this.p.x, this.p.norm, this.p.lm_head, this.p.gu]
            .iter()
            .all(|p| p % 16 == 0);
        this.fused = batch == 1
            && aligned
            && hidden % elems == 0
            && inter % elems == 0
            && std::env::var("WICK_DECODE_FUSED").is_ok_and(|v| v == "1");
        for g in this.gemms(&this.layers[0]) {
            this.blas.prepare(&g)?;
        }
        this.blas.prepare(&this.lm_head_gemm())?;
        dev.synchronize()?;
        Ok(this)
    }

    // One argument per GEMM operand; the `Gemm` it returns is the struct that groups them.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        n: usize,
        k: usize,
        x: u64,
        w: u64,
        bias: Option<u64>,
        acc: bool,
        d: u64,
    ) -> Gemm {
        Gemm {
            rows: self.batch,
            n,
            k,
            dtype: self.dtype,
            x,
            w,
            bias,
            accumulate: acc.then_some(d),
            d,
            tf32: false,
        }
    }

    /// The layer's four GEMMs: q/k/v, o (+residual), gate/up, down (+residual).
    fn gemms(&self, l: &LayerPtrs) -> [Gemm; 4] {
        let (h, i, p) = (self.hidden, self.inter, &self.p);
        let qkv_w = (self.heads + 2 * self.kv_heads) * self.d;
        [
            self.gemm(qkv_w, h, p.hn, l.wqkv, l.bqkv, false, p.qkv),
            self.gemm(h, self.heads * self.d, p.attn, l.wo, None, true, p.x),
            self.gemm(2 * i, h, p.hn, l.wgu, None, false, p.gu),
            self.gemm(h, i, p.act, l.wdown, None, true, p.x),
        ]
    }

    fn lm_head_gemm(&self) -> Gemm {
        self.gemm(
            self.vocab,
            self.hidden,
            self.p.hn,
            self.p.lm_head,
            None,
            false,
            self.p.logits,
        )
    }

    /// One GEMM: the GEMV kernel for decode-sized batches, cuBLASLt above.
    ///
    /// # Safety
    /// `g` addresses the static buffers and weights sized in `new`.
    unsafe fn matmul(&self, g: &Gemm) -> Result<()> {
        // SAFETY: per this function's contract.
        unsafe {
            // Captured in a graph, cuBLASLt beat the GEMV at 1 and 8 rows (NOTES.md v1-v3).
            if GRAPH_GEMV && g.rows <= GEMV_MAX_ROWS {
                gemv(&self.stream, &self.funcs.gemv, g)?;
            } else {
                self.blas.gemm(g)?;
            }
        }
        Ok(())
    }

    fn launch(&self, f: &CudaFunction, grid: (u32, u32), block: u32, args: &[Arg]) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: (grid.0, grid.1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::P(v) => b.arg(v),
                Arg::I(v) => b.arg(v),
                Arg::F(v) => b.arg(v),
            };
        }
        // SAFETY: every kernel's pointer arguments address the static buffers and weights held
        // in `_keep` (sizes set in `new` from the same dims passed here).
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }

    fn rms(&self, x: u64, w: u64, y: u64) -> Result<()> {
        let h = self.hidden;
        let args = [
            Arg::P(x),
            Arg::P(w),
            Arg::P(y),
            Arg::I(h as i32),
            Arg::F(self.eps),
        ];
        self.launch(
            &self.funcs.rms,
            (self.batch as u32, 1),
            row_threads(h),
            &args,
        )
    }

    /// A fused GEMV: `gemv_rms` (x normalised with `norm` on the fly) or `gemv_swiglu` (x = the
    /// SwiGLU of the gate/up halves of `x`).
    fn fused_gemv(&self, g: &Gemm, norm: Option<u64>) -> Result<()> {
        let (bias, c) = (g.bias.unwrap_or(0), g.accumulate.unwrap_or(0));
        let (rows, n, k) = (g.rows as i32, g.n as i32, g.k as i32);
        let mut args = vec![
            Arg::P(g.x),
            Arg::P(g.w),
            Arg::P(bias),
            Arg::P(c),
            Arg::P(g.d),
        ];
        args.extend([Arg::I(rows), Arg::I(n), Arg::I(k)]);
        let f = match norm {
            Some(nw) => {
                args.extend([Arg::P(nw), Arg::F(self.eps)]);
                &self.funcs.gemv_rms
            }
            None => &self.funcs.gemv_swiglu,
        };
        self.launch(f, (g.n.div_ceil(8) as u32, 1), 256, &args)
    }

    /// The one-sequence step: 6 launches a layer (see `fused`).
    fn enqueue_fused(&self) -> Result<()> {
        let (p, b) = (&self.p, self.batch as u32);
        let (h, d) = (self.hidden, self.d);
        let (heads, kvh) = (self.heads as i32, self.kv_heads as i32);
        let scale = 1.0 / (d as f32).sqrt();
        self.launch(
            &self.funcs.embed,
            (b, 1),
            row_threads(h),
            &[
                Arg::P(p.ids),
                Arg::P(p.embed),
                Arg::P(p.x),
                Arg::I(h as i32),
            ],
        )?;
        for l in &self.layers {
            let [mut qkv, o, mut gu, mut down] = self.gemms(l);
            qkv.x = p.x; // normalised inside the GEMV
            self.fused_gemv(&qkv, Some(l.in_norm))?;
            let rope = [
                Arg::P(p.qkv),
                Arg::P(p.q),
                Arg::P(l.k_cache),
                Arg::P(l.v_cache),
                Arg::P(p.pos),
                Arg::P(p.inv_freq),
                Arg::I(heads),
                Arg::I(kvh),
                Arg::I(d as i32),
                Arg::I(self.max_len as i32),
            ];
            self.launch(
                &self.funcs.rope,
                (b, (self.heads + self.kv_heads) as u32),
                (d / 2) as u32,
                &rope,
            )?;
            let attn = [
                Arg::P(p.q),
                Arg::P(l.k_cache),
                Arg::P(l.v_cache),
                Arg::P(p.attn),
                Arg::P(p.len),
                Arg::I(0),
                Arg::I(heads),
                Arg::I(kvh),
                Arg::I(d as i32),
                Arg::I(self.max_len as i32),
                Arg::F(scale),
            ];
            self.launch(&self.funcs.attn, (b, self.heads as u32), 128, &attn)?;
            // SAFETY: static buffers and weights sized for these shapes in `new`.
            unsafe { gemv(&self.stream, &self.funcs.gemv, &o)? };
            gu.x = p.x;
            self.fused_gemv(&gu, Some(l.post_norm))?;
            down.x = p.gu; // SwiGLU of the gate/up halves inside the GEMV
            self.fused_gemv(&down, None)?;
        }
        let mut head = self.lm_head_gemm();
        head.x = p.x;
        self.fused_gemv(&head, Some(p.norm))?;
        let args = [
            Arg::P(p.logits),
            Arg::P(p.ids),
            Arg::P(p.pos),
            Arg::P(p.len),
            Arg::I(self.vocab as i32),
        ];
        self.launch(&self.funcs.argmax, (b, 1), 1024, &args)
    }

    /// Enqueues one whole decode step on the stream.
    fn enqueue(&self) -> Result<()> {
        if self.fused {
            return self.enqueue_fused();
        }
        let (p, b) = (&self.p, self.batch as u32);
        let (h, i, d) = (self.hidden, self.inter, self.d);
        let (heads, kvh) = (self.heads as i32, self.kv_heads as i32);
        let scale = 1.0 / (d as f32).sqrt();
        self.launch(
            &self.funcs.embed,
            (b, 1),
            row_threads(h),
            &[
                Arg::P(p.ids),
                Arg::P(p.embed),
                Arg::P(p.x),
                Arg::I(h as i32),
            ],
        )?;
        for l in &self.layers {
            let [qkv, o, gu, down] = self.gemms(l);
            self.rms(p.x, l.in_norm, p.hn)?;
            // SAFETY (each gemm): static buffers and weights sized for these shapes in `new`.
            unsafe { self.matmul(&qkv)? };
            let rope = [
                Arg::P(p.qkv),
                Arg::P(p.q),
                Arg::P(l.k_cache),
                Arg::P(l.v_cache),
                Arg::P(p.pos),
                Arg::P(p.inv_freq),
                Arg::I(heads),
                Arg::I(kvh),
                Arg::I(d as i32),
                Arg::I(self.max_len as i32),
            ];
            self.launch(
                &self.funcs.rope,
                (b, (self.heads + self.kv_heads) as u32),
                (d / 2) as u32,
                &rope,
            )?;
            let attn = [
                Arg::P(p.q),
                Arg::P(l.k_cache),
                Arg::P(l.v_cache),
                Arg::P(p.attn),
                Arg::P(p.len),
                Arg::I(0),
                Arg::I(heads),
                Arg::I(kvh),
                Arg::I(d as i32),
                Arg::I(self.max_len as i32),
                Arg::F(scale),
            ];
            self.launch(&self.funcs.attn, (b, self.heads as u32), 128, &attn)?;
            unsafe { self.matmul(&o)? };
            self.rms(p.x, l.post_norm, p.hn)?;
            unsafe { self.matmul(&gu)? };
            let n = self.batch * i;
            let blocks = n.div_ceil(256).min(65_535) as u32;
            self.launch(
                &self.funcs.swiglu,
                (blocks, 1),
                256,
                &[
                    Arg::P(p.gu),
                    Arg::P(p.act),
                    Arg::I(self.batch as i32),
                    Arg::I(i as i32),
                ],
            )?;
            unsafe { self.matmul(&down)? };
        }
        self.rms(p.x, p.norm, p.hn)?;
        unsafe { self.matmul(&self.lm_head_gemm())? };
        let args = [
            Arg::P(p.logits),
            Arg::P(p.ids),
            Arg::P(p.pos),
            Arg::P(p.len),
            Arg::I(self.vocab as i32),
        ];
        self.launch(&self.funcs.argmax, (b, 1), 1024, &args)
    }

    pub fn step(&mut self) -> Result<()> {
        if self.remaining() == 0 {
            return Err(Error::InvalidArgument {
                name: "cache",
                message: format!("the KV cache of {} columns is full", self.max_len),
            });
        }
        self.filled += 1;
        if !self.use_graph {
            return self.enqueue();
        }
        if self.graph.is_none() {
            self.stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                .map_err(cuda_err)?;
            let recorded = self.enqueue();
            let graph = self
                .stream
                .end_capture(sys::CUgraphInstantiate_flags(0))
                .map_err(cuda_err)?;
            recorded?;
            self.graph = Some(graph.ok_or_else(|| cuda_err("empty graph"))?);
        }
        match &self.graph {
            Some(g) => g.launch().map_err(cuda_err),
            None => Err(cuda_err("no graph")),
        }
    }

    pub fn tokens(&self) -> Result<Vec<u32>> {
        Ok(self.ids.to_vec1::<u32>()?)
    }

    pub fn remaining(&self) -> usize {
        self.max_len - self.filled
    }
}

enum Arg {
    P(u64),
    I(i32),
    F(f32),
}
