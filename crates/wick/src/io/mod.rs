//! Everything that touches files: model resolution, hub cache, safetensors, tokenizers, chat
//! templates.

pub mod chat_template;
mod file_bytes;
pub mod gguf;
pub mod gguf_arch;
pub mod gguf_tokenizer;
pub mod gguf_weights;
pub mod hub;
pub mod json;
pub mod npy;
pub mod repo;
pub mod safetensors;
pub mod tokenizer;
pub mod weights;

pub use repo::ModelFiles;
