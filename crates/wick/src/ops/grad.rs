//! A backward pass for a fused forward that has none.
//!
//! candle's fused kernels (RoPE, softmax, RMSNorm) have no backward pass in candle 0.11.1, and a
//! composed forward (a LoRA projection, SwiGLU) keeps every intermediate alive until the
//! backward pass. [`with_backward`] (and [`with_backward2`], [`with_backward3`] for ops of two
//! and three inputs) takes a forward value computed outside the graph and records one node whose
//! backward is the op's analytic gradient: the graph keeps only the inputs and the output.
//! The recorded node copies the value once (its forward must return fresh storage); that copy
//! is one pass over the output, where the composed graph kept several output-sized tensors.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// The gradient of the input from the output (`res`) and the output's gradient.
pub type Backward = Box<dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync>;

/// The gradient of each input (`None`: none needed) from the inputs, the output and the
/// output's gradient.
pub type BackwardN =
    Box<dyn Fn(&[&Tensor], &Tensor, &Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// `forward`'s value (computed from `x` without tracking), differentiable in `x` through
/// `backward`. Runs on the CPU and, with feature `cuda`, on CUDA devices.
pub fn with_backward(x: &Tensor, forward: Tensor, backward: Backward) -> Result<Tensor> {
    x.apply_op1(Recorded::new(forward, Grads::One(backward))?)
}

/// As [`with_backward`] for an op of two inputs.
pub fn with_backward2(
    a: &Tensor,
    b: &Tensor,
    forward: Tensor,
    backward: BackwardN,
) -> Result<Tensor> {
    a.apply_op2(b, Recorded::new(forward, Grads::Many(backward))?)
}

/// As [`with_backward`] for an op of three inputs.
pub fn with_backward3(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    forward: Tensor,
    backward: BackwardN,
) -> Result<Tensor> {
    a.apply_op3(b, c, Recorded::new(forward, Grads::Many(backward))?)
}

enum Grads {
    One(Backward),
    Many(BackwardN),
}

struct Recorded {
    /// Taken (and copied out) by the one forward call.
    value: Mutex<Option<Tensor>>,
    shape: Shape,
    backward: Grads,
}

impl Recorded {
    fn new(forward: Tensor, backward: Grads) -> Result<Self> {
        // A view that starts inside its storage is copied, so the forward can copy storage whole.
        let forward = match forward.layout().contiguous_offsets() {
            Some((0, _)) => forward,
            _ => forward.force_contiguous()?,
        };
        Ok(Recorded {
            shape: forward.shape().clone(),
            value: Mutex::new(Some(forward)),
            backward,
        })
    }

    fn take(&self) -> Result<Tensor> {
        let value = self
            .value
            .lock()
            .map_err(|_| candle_core::Error::Msg("with_backward: poisoned lock".into()))?
            .take();
        value.ok_or_else(|| candle_core::Error::Msg("with_backward: value already used".into()))
    }

    fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        let value = self.take()?;
        let (storage, layout) = value.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else {
            candle_core::bail!("with_backward: the recorded value is not on the CPU")
        };
        Ok((storage.try_clone(layout)?, self.shape.clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self) -> Result<(candle_core::CudaStorage, Shape)> {
        let value = self.take()?;
        let (storage, layout) = value.storage_and_layout();
        let candle_core::Storage::Cuda(storage) = &*storage else {
            candle_core::bail!("with_backward: the recorded value is not on a CUDA device")
        };
        Ok((storage.try_clone(layout)?, self.shape.clone()))
    }

    fn grads(&self, args: &[&Tensor], res: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        match &self.backward {
            Grads::One(f) => Ok(vec![Some(f(res, grad)?)]),
            Grads::Many(f) => {
                let g = f(args, res, grad)?;
                if g.len() != args.len() {
                    candle_core::bail!(
                        "with_backward: {} gradients for {} inputs",
                        g.len(),
                        args.len()
                    )
                }
                Ok(g)
            }
        }
    }
}

impl CustomOp1 for Recorded {
    fn name(&self) -> &'static str {
        "recorded-forward"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda()
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(self.grads(&[arg], res, grad_res)?.pop().flatten())
    }
}

impl CustomOp2 for Recorded {
    fn name(&self) -> &'static str {
        "recorded-forward-2"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda()
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let mut g = self.grads(&[a, b], res, grad_res)?.into_iter();
        Ok((g.next().flatten(), g.next().flatten()))
    }
}

impl CustomOp3 for Recorded {
    fn name(&self) -> &'static str {
        "recorded-forward-3"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda()
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut g = self.grads(&[a, b, c], res, grad_res)?.into_iter();
        Ok((g.next().flatten(), g.next().flatten(), g.next().flatten()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn recorded_value_and_gradients_of_three_inputs() -> Result<()> {
        let dev = Device::Cpu;
        let a = Var::new(&[1f32, 2.0, 3.0], &dev)?;
        let b = Var::new(&[4f32, 5.0, 6.0], &dev)?;
        let c = Var::new(&[0.5f32, 0.25, 2.0], &dev)?;
        // y = a·b + c, its value from detached inputs; dy/da = b, dy/db = a, dy/dc = 1.
        let value = ((a.as_detached_tensor() * b.as_detached_tensor())? + c.as_detached_tensor())?;
        let backward: BackwardN =
            Box::new(|args, _res, g| Ok(vec![Some((g * args[1])?), Some((g * args[0])?), None]));
        let y = with_backward3(a.as_tensor(), b.as_tensor(), c.as_tensor(), value, backward)?;
        assert_eq!(y.to_vec1::<f32>()?, vec![4.5, 10.25, 20.0]);
        let grads = (&y * 2.0)?.sum_all()?.backward()?;
        let get = |v: &Var| grads.get(v.as_tensor()).map(|g| g.to_vec1::<f32>());
        assert_eq!(get(&a).transpose()?, Some(vec![8.0, 10.0, 12.0]));
        assert_eq!(get(&b).transpose()?, Some(vec![2.0, 4.0, 6.0]));
        assert!(get(&c).is_none(), "no gradient was asked for c");
        Ok(())
    }

    #[test]
    fn a_view_inside_its_storage_is_recorded_whole() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::new(&[1f32, 2.0], &dev)?;
        let big = Tensor::arange(0f32, 6.0, &dev)?;
        let view = big.narrow(0, 3, 2)?; // starts at offset 3
        let y = with_backward(x.as_tensor(), view, Box::new(|_, g| Ok(g.clone())))?;
        assert_eq!(y.to_vec1::<f32>()?, vec![3.0, 4.0]);
        Ok(())
    }
}
