//! Shared helpers of the llama_* tests: the tiny fixtures written by fixtures/tiny_*/gen.py.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use testkit::paths::fixture;
use wick::io::safetensors::SafetensorsWeights;
use wick::io::weights::{WeightSource, WeightView};
use wick::models::{DecoderConfig, DecoderModel};

pub const PROMPT_LEN: usize = 12;
pub const SHORT_LEN: usize = 7;
pub const DECODE_STEPS: usize = 8;
pub const VOCAB: usize = 256;

pub fn weights(case: &str) -> SafetensorsWeights {
    SafetensorsWeights::open(&[fixture(case).join("model.safetensors")]).unwrap()
}

pub fn config(case: &str, file: &str) -> DecoderConfig {
    DecoderConfig::from_file(&fixture(case).join(file)).unwrap()
}

pub fn model_from(
    cfg: &DecoderConfig,
    source: Arc<dyn WeightSource>,
    dtype: DType,
) -> DecoderModel {
    DecoderModel::new(cfg, &WeightView::new(source, dtype, &Device::Cpu)).unwrap()
}

pub fn model(case: &str) -> DecoderModel {
    model_from(
        &config(case, "config.json"),
        Arc::new(weights(case)),
        DType::F32,
    )
}

/// The golden tensors of one fixture.
pub struct Expected(SafetensorsWeights);

impl Expected {
    pub fn load(case: &str) -> Expected {
        Expected(SafetensorsWeights::open(&[fixture(case).join("expected.safetensors")]).unwrap())
    }

    /// An int64 id tensor as u32.
    pub fn ids(&self, name: &str, shape: &[usize]) -> Tensor {
        let t = self.0.load(name, shape, DType::I64, &Device::Cpu).unwrap();
        t.to_dtype(DType::U32).unwrap()
    }

    pub fn f32(&self, name: &str, shape: &[usize]) -> Tensor {
        self.0.load(name, shape, DType::F32, &Device::Cpu).unwrap()
    }
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

pub fn fixture_path(case: &str, file: &str) -> std::path::PathBuf {
    Path::new(&fixture(case)).join(file)
}

/// Prints the max abs/rel difference and worst index, then asserts every element is within
/// `atol` (absolute).
pub fn check(what: &str, got: &[f32], want: &[f32], atol: f32) {
    let d = testkit::compare::diff(got, want);
    println!(
        "{what}: max abs diff {:.3e}, max rel diff {:.3e}, worst index {}",
        d.max_abs, d.max_rel, d.worst_index
    );
    testkit::compare::assert_close(what, got, want, atol, 0.0);
}

/// Serves every 2-D weight as Q8_0 (what a GGUF source does for quantized files), or with
/// `dequantize` the same Q8_0 values as dense f32 (a GGUF source asked for a float dtype).
pub struct Q8Source {
    pub inner: SafetensorsWeights,
    /// How many tensors were served quantized.
    pub quantized: AtomicUsize,
    pub dequantize: bool,
}

impl WeightSource for Q8Source {
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }

    fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> wick::Result<Tensor> {
        let w = self.inner.load(name, shape, DType::F32, device)?;
        let w = if self.dequantize && shape.len() == 2 {
            QTensor::quantize(&w, GgmlDType::Q8_0)?.dequantize(device)?
        } else {
            w
        };
        Ok(w.to_dtype(dtype)?)
    }

    fn quantized(
        &self,
        name: &str,
        shape: &[usize],
        device: &Device,
    ) -> wick::Result<Option<QTensor>> {
        if self.dequantize || shape.len() != 2 || !self.inner.contains(name) {
            return Ok(None);
        }
        let w = self.inner.load(name, shape, DType::F32, device)?;
        self.quantized.fetch_add(1, Ordering::SeqCst);
        Ok(Some(QTensor::quantize(&w, GgmlDType::Q8_0)?))
    }
}
