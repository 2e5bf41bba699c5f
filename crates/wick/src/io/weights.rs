//! Where model constructors get their tensors from: a `WeightSource` (safetensors files, a GGUF
//! file, ...) seen through a `WeightView` that tracks the name prefix, dtype and device.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// A set of named tensors. Names are Hugging Face names (`model.layers.0.self_attn.q_proj.weight`);
/// sources in other layouts (GGUF) map and un-permute on the way out.
pub trait WeightSource: Send + Sync {
    fn contains(&self, name: &str) -> bool;

    /// The tensor `name`, checked against `shape`, converted to `dtype` on `device`.
    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor>;

    /// The tensor in its stored quantized form, when the source keeps quantized weights and this
    /// one is quantized; Ok(None) otherwise (the caller then uses `tensor`).
    fn quantized(
        &self,
        _name: &str,
        _shape: &[usize],
        _device: &Device,
    ) -> Result<Option<QTensor>> {
        Ok(None)
    }
}

/// A view of the weights under a name prefix, used by model constructors
/// (`vb.pp("encoder").pp("layer.0").get(&[384, 384], "weight")`).
#[derive(Clone)]
pub struct WeightView {
    source: Arc<dyn WeightSource>,
    prefix: String,
    dtype: DType,
    device: Device,
    /// False when the user asked for a float dtype: quantized tensors are then dequantized.
    keep_quantized: bool,
}

impl WeightView {
    pub fn new(source: Arc<dyn WeightSource>, dtype: DType, device: &Device) -> Self {
        WeightView {
            source,
            prefix: String::new(),
            dtype,
            device: device.clone(),
            keep_quantized: true,
        }
    }

    /// A view that dequantizes every tensor to the view's dtype instead of handing out
    /// quantized ones (`--dtype f32` on a GGUF model).
    pub fn dequantized(mut self) -> Self {
        self.keep_quantized = false;
        self
    }

    /// Pushes one path component.
    pub fn pp(&self, name: impl AsRef<str>) -> Self {
        let mut next = self.clone();
        next.prefix = self.path(name.as_ref());
        next
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.source.contains(&self.path(name))
    }

    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        self.source
            .tensor(&self.path(name), shape, self.dtype, &self.device)
    }

    /// The quantized tensor when the source keeps it quantized (see `WeightSource::quantized`).
    pub fn get_quantized(&self, shape: &[usize], name: &str) -> Result<Option<QTensor>> {
        if !self.keep_quantized {
            return Ok(None);
        }
        self.source.quantized(&self.path(name), shape, &self.device)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}
