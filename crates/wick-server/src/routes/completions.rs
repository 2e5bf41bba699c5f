//! `POST /v1/completions`: a plain text prompt, tokenized as `wick generate` does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;

use crate::generate_route::{gen_limits, generator, respond, Kind};
use crate::requests::{parse_completion, ApiResult};
use crate::server::{body_bytes, encode, AppState};

pub async fn handle(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let bytes = body_bytes(&state, body)?;
    let gen = generator(&state)?;
    let request = parse_completion(&bytes, &gen_limits(&state, gen))?;
    let ids = encode(&gen.tokenizer, &request.prompt, true)?;
    respond(state.clone(), Kind::Completion, request.params, ids).await
}
