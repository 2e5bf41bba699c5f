//! A Llama-family model with LoRA adapters attached, as one value: what a trainer needs
//! (differentiable logits, the named trainable variables, dropout control, PEFT saving).

use std::path::Path;

use candle_core::{Tensor, Var};

use crate::error::Result;
use crate::lora::adapter_io::{load_adapter, save_adapter};
use crate::lora::config::LoraConfig;
use crate::lora::inject::{apply, LoraParams};
use crate::models::DecoderModel;

pub struct LoraLlama {
    model: DecoderModel,
    config: LoraConfig,
    params: LoraParams,
}

impl LoraLlama {
    /// Fresh adapters on `model` (A Kaiming-uniform from `seed`, B zero); errors before
    /// anything is attached for a target the model lacks or a rank too large.
    pub fn new(mut model: DecoderModel, config: LoraConfig, seed: u64) -> Result<Self> {
        let params = apply(&mut model, &config, seed)?;
        Ok(LoraLlama {
            model,
            config,
            params,
        })
    }

    /// The PEFT adapter in `dir` attached to `model` (config and weights from the files).
    pub fn from_adapter(mut model: DecoderModel, dir: &Path) -> Result<Self> {
        let (config, params) = load_adapter(dir, &mut model)?;
        Ok(LoraLlama {
            model,
            config,
            params,
        })
    }

    pub fn model(&self) -> &DecoderModel {
        &self.model
    }

    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    pub fn params(&self) -> &LoraParams {
        &self.params
    }

    /// Logits (batch, seq, vocab), differentiable with respect to [`LoraLlama::trainable`];
    /// `attention_mask` (batch, seq) is 1 for real tokens, 0 for padding.
    pub fn logits(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        self.model.forward_uncached(input_ids, attention_mask)
    }

    /// Every A and B under its PEFT key (`base_model.model.model.layers.0.self_attn.q_proj.
    /// lora_A.weight`), in model order.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.params.named_vars()
    }

    /// `Some(seed)`: dropout on with masks drawn from `seed`; `None`: off.
    pub fn set_dropout_seed(&self, seed: Option<u64>) {
        self.params.set_dropout_seed(seed);
    }

    /// Writes PEFT's adapter_config.json + adapter_model.safetensors into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_adapter(dir, &self.config, &self.params)
    }

    pub fn into_parts(self) -> (DecoderModel, LoraConfig, LoraParams) {
        (self.model, self.config, self.params)
    }
}
