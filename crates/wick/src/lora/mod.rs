//! LoRA, PEFT-compatible: the `adapter_config.json` mirror ([`LoraConfig`]), attaching adapters
//! to a model's projections ([`apply`], [`load_adapter`]), merging them into the base weights
//! ([`merge`], [`unmerge`]), saving them as PEFT does ([`save_adapter`]) and writing a merged
//! model directory ([`merge_to_dir`], behind `wick merge`). [`LoraLlama`] bundles a model with
//! its adapters for a trainer.
//!
//! The adapters live inside the model's `nn::Linear` layers (`y = x·Wᵀ + b +
//! scale·(dropout(x)·Aᵀ)·Bᵀ`, base weight frozen, dense or quantized); [`LoraParams`] holds the
//! same A/B `Var`s for the optimizer. Training:
//!
//! ```text
//! let params = lora::apply(&mut model, &cfg, seed)?;   // A Kaiming-uniform, B = 0
//! params.set_dropout_seed(Some(step_seed));            // dropout on (if lora_dropout > 0)
//! let logits = model.forward_uncached(&ids, None)?;    // tracked graph
//! let grads = loss.backward()?;                        // grads.get(var) for params.vars()
//! lora::save_adapter(dir, &cfg, &params)?;              // PEFT's files
//! ```
//!
//! Gradients reach every adapter: the model's fused ops switch to differentiable references
//! when the graph is tracked, and a quantized base weight is dequantized on the fly in that case
//! (candle's `QMatMul` passes no gradient to its input).

pub mod adapter_io;
pub mod config;
pub mod export;
pub mod inject;
pub mod model;

pub use adapter_io::{load_adapter, save_adapter, CONFIG_FILE, WEIGHTS_FILE};
pub use config::{LoraConfig, TargetModules};
pub use export::{merge_to_dir, write_weights, MergeReport};
pub use inject::{apply, merge, peft_key, remove, unmerge, LoraModule, LoraParams};
pub use model::LoraLlama;
