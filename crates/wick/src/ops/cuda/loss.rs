//! Cross-entropy rows on CUDA (wick's `loss.cu`): the logits are read in their own dtype, once
//! forward and once backward, and the backward writes the one logits-sized gradient.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::CudaStorage;
use candle_core::{CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::fused::{addr_of, alloc, contiguous};
use super::kernels::func;

/// Per row of `logits` (n, vocab): `(logsumexp − logits[target], logsumexp)` as an (n, 2) f32
/// tensor, differentiable in `logits` through column 0. `targets` is (n) u32 on the same device.
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = logits.contiguous()?;
    if logits.track_op() {
        logits.apply_op2(targets, CeRows)
    } else {
        logits.apply_op2_no_bwd(targets, &CeRows)
    }
}

struct CeRows;

const THREADS: u32 = 1024;

impl CustomOp2 for CeRows {
    fn name(&self) -> &'static str {
        "wick-ce-rows"
    }

    cuda_only_cpu_fwd!(2);

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ts: &CudaStorage,
        tl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (rows, vocab) = xl.shape().dims2()?;
        if ts.dtype() != DType::U32 || tl.shape().elem_count() != rows {
            candle_core::bail!("wick-ce-rows: {:?} targets for {rows} rows", tl.shape())
        }
        let dev = xs.device();
        let dtype = xs.dtype();
        let out = alloc(dev, DType::F32, rows * 2)?;
        let (x, t, o) = (
            addr_of(xs, dtype, contiguous(xl, "logits")?)?,
            addr_of(ts, DType::U32, contiguous(tl, "targets")?)?,
            addr_of(&out, DType::F32, 0)?,
        );
        let f = func(dev, "ce_rows", dtype)?;
        let vocab_i = vocab as i32;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&t).arg(&o).arg(&vocab_i);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: x holds rows·vocab elements of `dtype`, t rows u32 (each < vocab, checked by
        // the caller), out rows·2 f32; the kernel writes every element of out.
        unsafe { b.launch(cfg) }.map_err(|e| candle_core::Error::Cuda(Box::new(e)))?;
        Ok((out, Shape::from((rows, 2))))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // (upstream gradient of each row's loss, its logsumexp): one small (n, 2) tensor.
        let gl = Tensor::cat(&[&grad_res.narrow(1, 0, 1)?, &res.narrow(1, 1, 1)?], 1)?
            .to_dtype(DType::F32)?
            .contiguous()?;
        let dx =
            logits
                .detach()
                .apply_op3_no_bwd(&targets.detach(), &gl.detach(), &CeRowsBackward)?;
        Ok((Some(dx), None))
    }
}

struct CeRowsBackward;

impl CustomOp3 for CeRowsBackward {
    fn name(&self) -> &'static str {
        "wick-ce-rows-backward"
    }

    cuda_only_cpu_fwd!(3);

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ts: &CudaStorage,
        tl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (rows, vocab) = xl.shape().dims2()?;
        if tl.shape().elem_count() != rows || gl.shape().dims() != [rows, 2] {
            candle_core::bail!(
                "wick-ce-rows-backward: shapes {:?} {:?}",
                tl.shape(),
                gl.shape()
            )
        }
        let dev = xs.device();
        let dtype = xs.dtype();
        let out = alloc(dev, dtype, rows * vocab)?;
        let (x, t, g, o) = (
            addr_of(xs, dtype, contiguous(xl, "logits")?)?,
            addr_of(ts, DType::U32, contiguous(tl, "targets")?)?,
            addr_of(gs, DType::F32, contiguous(gl, "gradient")?)?,
            addr_of(&out, dtype, 0)?,
        );
        let f = func(dev, "ce_rows_backward", dtype)?;
        let vocab_i = vocab as i32;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&t).arg(&g).arg(&o).arg(&vocab_i);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: as the forward; out holds rows·vocab elements, each written once.
        unsafe { b.launch(cfg) }.map_err(|e| candle_core::Error::Cuda(Box::new(e)))?;
        Ok((out, xl.shape().clone()))
    }
}
