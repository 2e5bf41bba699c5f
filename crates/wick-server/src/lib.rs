//! wick-server: an OpenAI-compatible HTTP server (axum + tokio) over wick's public API.
//!
//! `POST /v1/embeddings`, `/v1/chat/completions` (SSE with `stream: true`), `/v1/completions`,
//! `/v1/adapters`; `GET /v1/models`, `/health`, `/metrics`. One engine thread owns the decoder
//! and decodes all running sequences together (continuous batching, grouped by LoRA adapter);
//! one worker owns the encoder and batches concurrent embedding requests by a token budget.
//! Bounded queues answer 429 with `Retry-After` when full.

mod access;
mod adapter_paths;
mod config;
mod embedding;
mod error;
mod generate_route;
mod generation;
mod metrics;
pub mod requests;
mod routes;
mod server;

pub use config::ServerConfig;
pub use error::ApiError;
pub use server::{router, serve, AppState, ServerHandle};
