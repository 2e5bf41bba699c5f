//! `POST /v1/completions`: a plain text prompt, tokenized as `wick generate` does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::fields::{wrong_type, ApiResult};
use crate::generate_route::{generator, respond, Kind};
use crate::params::GenParams;
use crate::server::{encode, read_body, AppState};

/// OpenAI's default budget for this endpoint.
const DEFAULT_MAX_TOKENS: usize = 16;

pub async fn handle(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let mut body = read_body(&state, body)?;
    let mut params = GenParams::take(&mut body, &["max_tokens"])?;
    params.max_tokens = params.max_tokens.or(Some(DEFAULT_MAX_TOKENS));
    let prompt = match body.take("prompt") {
        Some(Value::String(s)) => s,
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => s.clone(),
            [Value::String(_), ..] => {
                return Err(ApiError::unsupported(
                    "prompt",
                    "several prompts in one request are unsupported; send one per request",
                ))
            }
            _ => {
                return Err(ApiError::unsupported(
                    "prompt",
                    "prompts as token ids are unsupported; send text",
                ))
            }
        },
        Some(other) => return Err(wrong_type("prompt", "a string", &other)),
        None => return Err(ApiError::invalid("prompt", "`prompt` is required")),
    };
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
    }
    body.unsupported(
        "echo",
        &[json!(false)],
        "echoing the prompt is not implemented",
    )?;
    body.unsupported(
        "suffix",
        &[json!("")],
        "insertion (suffix) is not implemented",
    )?;
    body.unsupported("best_of", &[json!(1)], "best_of > 1 is not implemented")?;
    body.finish()?;
    let gen = generator(&state)?;
    let ids = encode(&gen.tokenizer, &prompt, true)?;
    respond(state.clone(), Kind::Completion, params, ids).await
}
