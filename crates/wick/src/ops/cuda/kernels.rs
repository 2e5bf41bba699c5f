//! wick's own kernels (crates/wick-kernels, PTX compiled by nvcc at build time), loaded into
//! each device once (candle caches the module per device) and launched on its stream.

use candle_core::cuda_backend::cudarc::driver::CudaFunction;
use candle_core::cuda_backend::CudaDevice;
use candle_core::{DType, Result};

/// The most rows the GEMV kernel takes (decode batches); larger GEMMs go to cuBLASLt.
pub const GEMV_MAX_ROWS: usize = 8;

/// `name_f32` / `name_f16` / `name_bf16` for `dtype`, from the module its name belongs to.
pub fn func(dev: &CudaDevice, name: &str, dtype: DType) -> Result<CudaFunction> {
    let (module, ptx) = match name {
        "gemv" | "gemv_rms" | "gemv_swiglu" => ("wick_gemv", wick_kernels::GEMV),
        "ce_rows" | "ce_rows_backward" => ("wick_loss", wick_kernels::LOSS),
        "adamw_m" | "adamw_v" | "adamw_p" => ("wick_optim", wick_kernels::OPTIM),
        n if n.starts_with("flash_") => ("wick_attention", wick_kernels::ATTENTION),
        "add_rounded" | "gelu_erf" | "swiglu_backward" | "rms_norm_backward" | "merge_heads"
        | "layer_norm_rows" | "embed_layer_norm" | "masked_mean" => {
            ("wick_elementwise", wick_kernels::ELEMENTWISE)
        }
        _ => ("wick_fused", wick_kernels::FUSED),
    };
    let suffix = match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        d => candle_core::bail!("wick kernel {name}: unsupported dtype {d:?}"),
    };
    Ok(dev
        .get_or_load_custom_func(&format!("{name}_{suffix}"), module, ptx)?
        .into_cuda_function())
}

/// Threads per block for a row of `cols` elements: a multiple of 32, at most 1024.
pub fn row_threads(cols: usize) -> u32 {
    (cols.div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// Enqueues `g` (rows ≤ [`GEMV_MAX_ROWS`]) with the GEMV kernel `f` (from `func(.., "gemv", ..)`).
///
/// # Safety
/// As [`super::blaslt::BlasLt::gemm`]: every pointer addresses live device memory holding the
/// elements the shapes say, until the stream has run the kernel.
pub unsafe fn gemv(
    stream: &std::sync::Arc<candle_core::cuda_backend::cudarc::driver::CudaStream>,
    f: &CudaFunction,
    g: &super::blaslt::Gemm,
) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    if g.rows > GEMV_MAX_ROWS {
        candle_core::bail!("gemv: {} rows (at most {GEMV_MAX_ROWS})", g.rows)
    }
    const WARPS: usize = 8;
    let cfg = LaunchConfig {
        grid_dim: (g.n.div_ceil(WARPS) as u32, 1, 1),
        block_dim: (32 * WARPS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let (bias, c) = (g.bias.unwrap_or(0), g.accumulate.unwrap_or(0));
    let (rows, n, k) = (g.rows as i32, g.n as i32, g.k as i32);
    let mut b = stream.launch_builder(f);
    b.arg(&g.x)
        .arg(&g.w)
        .arg(&bias)
        .arg(&c)
        .arg(&g.d)
        .arg(&rows)
        .arg(&n)
        .arg(&k);
    // SAFETY: per this function's contract; a null bias / c is skipped by the kernel.
    unsafe { b.launch(cfg) }.map_err(|e| candle_core::Error::Cuda(Box::new(e)))?;
    Ok(())
}
