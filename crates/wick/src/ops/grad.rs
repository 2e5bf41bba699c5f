//! A backward pass for a fused forward kernel that has none.
//!
//! candle's fused CPU kernels (RoPE, softmax) have no backward pass in candle 0.11.1, so a
//! training graph used to take the composed references, whose intermediates (4–5 tensors the
//! size of the input per call) all stay alive until the backward pass. [`with_backward`] runs
//! the fused kernel outside the graph and records one node whose backward is the op's analytic
//! gradient: the graph keeps only the input and the output.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};

/// The gradient of the input from the output (`res`) and the output's gradient.
pub type Backward = Box<dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync>;

/// `forward`'s value (computed from `x` without tracking), differentiable in `x` through
/// `backward`. On devices other than the CPU the caller should take its reference instead:
/// the recorded node runs on the CPU only.
pub fn with_backward(x: &Tensor, forward: Tensor, backward: Backward) -> Result<Tensor> {
    if !matches!(x.device(), Device::Cpu) {
        candle_core::bail!("with_backward: the CPU only")
    }
    x.apply_op1(Recorded {
        value: Mutex::new(Some(forward.contiguous()?)),
        shape: forward.shape().clone(),
        backward,
    })
}

struct Recorded {
    /// Taken (and copied out) by the one forward call.
    value: Mutex<Option<Tensor>>,
    shape: Shape,
    backward: Backward,
}

impl CustomOp1 for Recorded {
    fn name(&self) -> &'static str {
        "recorded-forward"
    }

    fn cpu_fwd(&self, _x: &CpuStorage, _layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let value = self
            .value
            .lock()
            .map_err(|_| candle_core::Error::Msg("with_backward: poisoned lock".into()))?
            .take();
        let Some(value) = value else {
            candle_core::bail!("with_backward: the recorded value was already used")
        };
        let (storage, layout) = value.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else {
            candle_core::bail!("with_backward: the recorded value is not on the CPU")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("with_backward: the recorded value is not contiguous")
        };
        let copy = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(v[start..end].to_vec()),
            CpuStorage::F16(v) => CpuStorage::F16(v[start..end].to_vec()),
            CpuStorage::BF16(v) => CpuStorage::BF16(v[start..end].to_vec()),
            CpuStorage::F64(v) => CpuStorage::F64(v[start..end].to_vec()),
            _ => candle_core::bail!("with_backward: a float value is expected"),
        };
        Ok((copy, self.shape.clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some((self.backward)(res, grad_res)?))
    }
}
