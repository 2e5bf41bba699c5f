//! `POST /v1/chat/completions`: messages rendered with the model's chat template.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;

use crate::error::ApiError;
use crate::generate_route::{gen_limits, generator, respond, Kind};
use crate::requests::{parse_chat, ApiResult};
use crate::server::{body_bytes, encode, AppState};

pub async fn handle(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let bytes = body_bytes(&state, body)?;
    let gen = generator(&state)?;
    let request = parse_chat(&bytes, &gen_limits(&state, gen))?;
    let template = gen.chat_template.as_ref().ok_or_else(|| {
        ApiError::unsupported(
            "messages",
            "the model has no chat template; use /v1/completions",
        )
    })?;
    let text = template
        .render(&request.messages, true)
        .map_err(|e| ApiError::invalid("messages", format!("the chat template failed: {e}")))?;
    // The template supplies any BOS itself (as `wick generate --chat` and transformers do).
    let prompt = encode(&gen.tokenizer, &text, false)?;
    respond(state.clone(), Kind::Chat, request.params, prompt).await
}
