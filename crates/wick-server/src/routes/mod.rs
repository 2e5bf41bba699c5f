//! One file per endpoint family.

pub mod admin;
pub mod chat;
pub mod completions;
pub mod embeddings;
