//! [`LoraLlama`] as a [`TrainableModel`]: PEFT-named adapter weights, PEFT files in every
//! checkpoint, dropout masks from the trainer's per-step seeds.

use std::path::Path;

use candle_core::{Device, Tensor, Var};

use crate::error::Result;
use crate::lora::LoraLlama;
use crate::train::TrainableModel;

impl TrainableModel for LoraLlama {
    fn logits(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        LoraLlama::logits(self, input_ids, Some(attention_mask))
    }

    fn logits_at(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        positions: &Tensor,
    ) -> Result<Tensor> {
        self.model()
            .logits_at(input_ids, Some(attention_mask), positions)
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        LoraLlama::trainable(self)
    }

    fn device(&self) -> &Device {
        self.model().device()
    }

    /// adapter_config.json + adapter_model.safetensors, as PEFT writes them.
    fn save_adapter(&self, dir: &Path) -> Result<()> {
        self.save(dir)
    }

    fn set_dropout_seed(&self, seed: Option<u64>) {
        LoraLlama::set_dropout_seed(self, seed);
    }
}
