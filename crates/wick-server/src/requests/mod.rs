//! Request bodies parsed and validated as pure functions, without a loaded model: **the stable
//! entry point for fuzz targets** (`fuzz/`), and the first thing every route handler calls.
//!
//! Each `parse_*` takes the raw body bytes (already within `--max-body-bytes`) and returns the
//! typed request or the one [`ApiError`] the client gets (400 naming the field). What needs the
//! model's facts takes them as a small struct ([`GenLimits`]: the server's token cap and the
//! vocabulary size); what needs the server's state (is this model name served, does the prompt
//! fit the context after tokenizing) is checked by the handler afterwards. These functions never
//! panic on any input; keep it that way (the fuzz targets hold them to it).

mod adapter;
mod chat;
mod completion;
mod embeddings;
mod fields;
mod params;

pub use adapter::{check_adapter_name, parse_adapter, AdapterRequest, MAX_ADAPTER_NAME};
pub use chat::{parse_chat, ChatRequest, CHAT_ROLES};
pub use completion::{parse_completion, CompletionRequest, DEFAULT_COMPLETION_TOKENS};
pub use embeddings::{parse_embeddings, EmbeddingsRequest, MAX_INPUTS};
pub use fields::{type_name, wrong_type, ApiResult, Body};
pub use params::GenParams;

pub use crate::error::ApiError;

/// What validating a chat or completion request needs to know about the server and its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenLimits {
    /// The server's `--max-tokens`: the most tokens one request may ask for.
    pub max_tokens: usize,
    /// Logits per step: every `logit_bias` token id must be below it.
    pub vocab_size: usize,
}
