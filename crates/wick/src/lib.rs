//! wick: local LoRA fine-tuning, text generation and sentence embeddings on Candle.
//!
//! Layers point down: `io` → `ops` → `nn` → `models` → `lora` → `embed`, `generate`, `train`.
//! See DESIGN.md in the repository for the principles.

pub mod device;
pub mod embed;
pub mod error;
pub mod generate;
pub mod io;
pub mod lora;
pub mod models;
pub mod nn;
pub mod ops;
pub mod train;

pub use error::{Error, Result};
// Re-exported so binaries and tests use the same candle and tokenizers as the library.
pub use candle_core;
pub use tokenizers;
