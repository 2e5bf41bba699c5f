//! Layers wick owns: the shared causal decoder, a Linear that holds a float or quantized weight and an optional LoRA adapter,
//! embeddings, RMSNorm, and the caller-owned KV cache.

pub mod decoder;
pub mod embedding;
pub mod kv_cache;
pub mod linear;
pub mod rms_norm;

pub use embedding::Embedding;
pub use kv_cache::{KvCache, Step};
pub use linear::{Linear, LinearWeight, LoraAdapter, LoraMode};
pub use rms_norm::RmsNorm;
