//! The CUDA side of the op layer (feature `cuda`): device set-up, and the kernels the ops
//! dispatch to when their inputs live on an NVIDIA GPU.

/// The `cpu_fwd` of a custom op of 1, 2 or 3 inputs that runs on CUDA only: an error naming it.
macro_rules! cuda_only_cpu_fwd {
    (@body $self:ident, $op:ident) => {
        candle_core::bail!("{} runs on CUDA only", candle_core::$op::name($self))
    };
    (1) => {
        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            cuda_only_cpu_fwd!(@body self, CustomOp1)
        }
    };
    (2) => {
        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            cuda_only_cpu_fwd!(@body self, CustomOp2)
        }
    };
    (3) => {
        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            cuda_only_cpu_fwd!(@body self, CustomOp3)
        }
    };
}

pub mod blaslt;
pub mod decode_graph;
pub mod elementwise;
pub mod flash;
pub mod fused;
pub mod kernels;
pub mod loss;
pub mod optim;

use candle_core::Device;
use cudarc::driver::sys;

use crate::error::{Error, Result};

/// Opens CUDA device `ordinal`. A binary built with dynamically loaded CUDA libraries panics
/// inside cudarc when the driver is missing; that becomes an error naming what is missing.
pub fn open_device(ordinal: usize) -> Result<Device> {
    let opened = std::panic::catch_unwind(|| Device::new_cuda(ordinal));
    let device = match opened {
        Ok(d) => d?,
        Err(_) => {
            return Err(Error::Unsupported(format!(
                "cannot open CUDA device {ordinal}: the NVIDIA driver or CUDA 13 libraries \
                 (libcuda, libcublas, libcublasLt, libcurand, libnvrtc) were not found; put them \
                 on LD_LIBRARY_PATH (scripts/gpu-run.sh does)"
            )))
        }
    };
    tune_device(&device)?;
    Ok(device)
}

/// Settings that matter for speed and cost nothing in correctness:
/// - wick drives each device from one stream, so cudarc's per-buffer event tracking (an event
///   record around every kernel's inputs and outputs) only adds launches;
/// - freed memory stays in the pool instead of going back to the driver at each synchronise
///   (what PyTorch's caching allocator does too), so steady-state steps allocate nothing new.
fn tune_device(device: &Device) -> Result<()> {
    let cuda = device.as_cuda_device()?;
    // SAFETY: wick launches all work on this device's single stream, so there is no
    // cross-stream use of a buffer for the events to order.
    unsafe { cuda.disable_event_tracking() };
    let stream = cuda.cuda_stream();
    let ctx = stream.context();
    ctx.bind_to_thread()
        .map_err(|e| Error::Unsupported(format!("binding the CUDA context: {e}")))?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold = u64::MAX;
    // SAFETY: valid out-pointer and device; RELEASE_THRESHOLD takes a u64.
    let r = unsafe {
        let r = sys::cuDeviceGetMemPool(&mut pool, ctx.cu_device());
        if r != sys::CUresult::CUDA_SUCCESS {
            r
        } else {
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut _,
            )
        }
    };
    if r != sys::CUresult::CUDA_SUCCESS {
        return Err(Error::Unsupported(format!(
            "configuring the CUDA memory pool: {r:?}"
        )));
    }
    Ok(())
}

/// The device memory pool (candle allocates through `cuMemAllocAsync` on it).
fn pool(device: &Device) -> Result<sys::CUmemoryPool> {
    let stream = device.as_cuda_device()?.cuda_stream();
    let ctx = stream.context();
    ctx.bind_to_thread()
        .map_err(|e| Error::Unsupported(format!("binding the CUDA context: {e}")))?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: a valid out-pointer and the context's own device.
    let r = unsafe { sys::cuDeviceGetMemPool(&mut pool, ctx.cu_device()) };
    if r != sys::CUresult::CUDA_SUCCESS {
        return Err(Error::Unsupported(format!("cuDeviceGetMemPool: {r:?}")));
    }
    Ok(pool)
}

fn pool_attribute(
    device: &Device,
    attr: sys::CUmemPool_attribute,
    set: Option<u64>,
) -> Result<u64> {
    let p = pool(device)?;
    let mut v = set.unwrap_or(0);
    // SAFETY: the used/reserved high-water attributes are u64 (and may only be reset to 0).
    let r = unsafe {
        match set {
            Some(_) => sys::cuMemPoolSetAttribute(p, attr, &mut v as *mut u64 as *mut _),
            None => sys::cuMemPoolGetAttribute(p, attr, &mut v as *mut u64 as *mut _),
        }
    };
    if r != sys::CUresult::CUDA_SUCCESS {
        return Err(Error::Unsupported(format!(
            "CUDA memory pool attribute: {r:?}"
        )));
    }
    Ok(v)
}

/// Peak bytes in use on `device` since the last [`reset_peak_memory`] (the pool's high-water
/// mark: PyTorch's `max_memory_allocated` counterpart).
pub fn peak_memory(device: &Device) -> Result<u64> {
    pool_attribute(
        device,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
        None,
    )
}

pub fn reset_peak_memory(device: &Device) -> Result<()> {
    pool_attribute(
        device,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
        Some(0),
    )
    .map(|_| ())
}
