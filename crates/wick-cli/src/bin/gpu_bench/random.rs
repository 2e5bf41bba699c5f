//! Random weights of the real shapes (Qwen2-0.5B, MiniLM-L6), generated once on the GPU and
//! handed to any device/dtype, so a CPU model and a GPU model share exactly the same weights.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use wick::candle_core::{DType, Device, Tensor};
use wick::io::weights::{WeightSource, WeightView};
use wick::models::bert::{BertConfig, BertModel};
use wick::models::{DecoderConfig, DecoderModel};

pub struct RandomWeights {
    gen_device: Device,
    cache: Mutex<HashMap<String, Tensor>>,
}

impl RandomWeights {
    pub fn new(gen_device: &Device) -> Arc<Self> {
        Arc::new(RandomWeights {
            gen_device: gen_device.clone(),
            cache: Mutex::new(HashMap::new()),
        })
    }
}

impl WeightSource for RandomWeights {
    fn contains(&self, name: &str) -> bool {
        !(name.starts_with("lm_head") || name.starts_with("bert."))
    }

    fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> wick::Result<Tensor> {
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| wick::Error::Unsupported("random weights: poisoned lock".into()))?;
        if !cache.contains_key(name) {
            // Norm scales near 1, everything else like HF's init (std 0.02).
            let norm = name.to_lowercase().contains("norm") && name.ends_with("weight");
            let (mean, std) = if norm { (1.0, 0.05) } else { (0.0, 0.02) };
            let t = Tensor::randn(mean as f32, std as f32, shape, &self.gen_device)?;
            cache.insert(name.to_string(), t);
        }
        let t = &cache[name];
        if t.dims() != shape {
            return Err(wick::Error::Unsupported(format!(
                "random weights: {name} asked as {shape:?} and {:?}",
                t.dims()
            )));
        }
        Ok(t.to_device(device)?.to_dtype(dtype)?)
    }
}

pub fn qwen2_05b_config() -> wick::Result<DecoderConfig> {
    let v = serde_json::json!({
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
        "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "max_position_embeddings": 32768, "tie_word_embeddings": true, "hidden_act": "silu"
    });
    DecoderConfig::from_value(v, Path::new("qwen2-0.5b-shaped"))
}

pub fn qwen2(src: &Arc<RandomWeights>, dtype: DType, dev: &Device) -> wick::Result<DecoderModel> {
    let vb = WeightView::new(src.clone(), dtype, dev);
    DecoderModel::new(&qwen2_05b_config()?, &vb)
}

pub fn minilm_config() -> wick::Result<BertConfig> {
    let v = serde_json::json!({
        "model_type": "bert", "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
        "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu",
        "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12
    });
    serde_json::from_value(v).map_err(|e| wick::Error::Unsupported(e.to_string()))
}

pub fn minilm(src: &Arc<RandomWeights>, dtype: DType, dev: &Device) -> wick::Result<BertModel> {
    let vb = WeightView::new(src.clone(), dtype, dev);
    BertModel::new(&minilm_config()?, &vb)
}
