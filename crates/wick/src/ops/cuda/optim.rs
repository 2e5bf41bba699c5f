//! AdamW on CUDA (wick's `optim.cu`): the moments and the parameter updated in place, three
//! launches per parameter. The CPU optimizer composes the same arithmetic from tensor ops.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::CudaStorage;
use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor};

use super::fused::{addr_of, contiguous};
use super::kernels::func;

/// One AdamW step's scalars (see `optim.cu` for where each enters).
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    /// 1 − β1 and 1 − β2, each rounded from f64 as the CPU optimizer's tensor ops do.
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub eps: f32,
    /// 1 − lr·weight_decay.
    pub decay: f32,
    /// lr / (1 − β1ᵗ).
    pub step: f32,
    /// 1 / √(1 − β2ᵗ).
    pub inv_bc2: f32,
}

/// Updates `m`, `v` and then `p` (all f32, same shape as the f32 gradient `g`) in place.
pub fn adamw_update(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, s: AdamWStep) -> Result<()> {
    let g = g.contiguous()?;
    m.inplace_op2(&g, &Moment { second: false, s })?;
    v.inplace_op2(&g, &Moment { second: true, s })?;
    p.inplace_op3(m, v, &ParamStep(s))
}

fn grid(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 1024) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn launched(
    r: std::result::Result<(), candle_core::cuda_backend::cudarc::driver::DriverError>,
) -> Result<()> {
    r.map(|_| ())
        .map_err(|e| candle_core::Error::Cuda(Box::new(e)))
}

fn check(dst: &CudaStorage, dl: &Layout, src: &CudaStorage, sl: &Layout) -> Result<usize> {
    let n = dl.shape().elem_count();
    if dst.dtype() != DType::F32 || src.dtype() != DType::F32 || sl.shape().elem_count() != n {
        candle_core::bail!("wick AdamW: f32 tensors of one shape expected")
    }
    Ok(n)
}

/// The first (`second: false`) or second moment, from the gradient.
struct Moment {
    second: bool,
    s: AdamWStep,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "wick-adamw-moment"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<()> {
        candle_core::bail!("wick-adamw-moment runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        ms: &mut CudaStorage,
        ml: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<()> {
        let n = check(ms, ml, gs, gl)?;
        let (m, g) = (
            addr_of(ms, DType::F32, contiguous(ml, "moment")?)?,
            addr_of(gs, DType::F32, contiguous(gl, "gradient")?)?,
        );
        let n_i = n as i32;
        let (beta2, c1, c2) = (self.s.beta2, self.s.one_minus_beta1, self.s.one_minus_beta2);
        let dev = ms.device();
        let stream = dev.cuda_stream();
        let f = func(
            dev,
            if self.second { "adamw_v" } else { "adamw_m" },
            DType::F32,
        )?;
        let mut b = stream.launch_builder(&f);
        b.arg(&m).arg(&g);
        if self.second {
            b.arg(&beta2).arg(&c2);
        } else {
            b.arg(&c1);
        }
        b.arg(&n_i);
        // SAFETY: m and g each address n contiguous f32 (checked above).
        launched(unsafe { b.launch(grid(n)) }.map(|_| ()))
    }
}

struct ParamStep(AdamWStep);

impl InplaceOp3 for ParamStep {
    fn name(&self) -> &'static str {
        "wick-adamw-param"
    }

    fn cpu_fwd(
        &self,
        _: &mut CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<()> {
        candle_core::bail!("wick-adamw-param runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        ps: &mut CudaStorage,
        pl: &Layout,
        ms: &CudaStorage,
        ml: &Layout,
        vs: &CudaStorage,
        vl: &Layout,
    ) -> Result<()> {
        let n = check(ps, pl, ms, ml)?;
        check(ps, pl, vs, vl)?;
        let (p, m, v) = (
            addr_of(ps, DType::F32, contiguous(pl, "parameter")?)?,
            addr_of(ms, DType::F32, contiguous(ml, "first moment")?)?,
            addr_of(vs, DType::F32, contiguous(vl, "second moment")?)?,
        );
        let s = self.0;
        let n_i = n as i32;
        let dev = ps.device();
        let stream = dev.cuda_stream();
        let f = func(dev, "adamw_p", DType::F32)?;
        let mut b = stream.launch_builder(&f);
        b.arg(&p)
            .arg(&m)
            .arg(&v)
            .arg(&s.decay)
            .arg(&s.step)
            .arg(&s.inv_bc2)
            .arg(&s.eps)
            .arg(&n_i);
        // SAFETY: p, m and v each address n contiguous f32 (checked above).
        launched(unsafe { b.launch(grid(n)) }.map(|_| ()))
    }
}
