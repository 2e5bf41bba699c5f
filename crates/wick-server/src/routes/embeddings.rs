//! `POST /v1/embeddings`: one vector per input text, as floats or base64 (little-endian f32,
//! what the official Python client asks for by default).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::fields::{wrong_type, ApiResult};
use crate::server::{read_body, AppState};

/// Most texts in one request (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

pub async fn handle(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let mut body = read_body(&state, body)?;
    let model = body.required_string("model")?;
    let texts = match body.take("input") {
        Some(Value::String(s)) if s.is_empty() => {
            return Err(ApiError::invalid(
                "input",
                "`input` must not be an empty string",
            ))
        }
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => texts(items)?,
        Some(other) => {
            return Err(wrong_type(
                "input",
                "a string or an array of strings",
                &other,
            ))
        }
        None => return Err(ApiError::invalid("input", "`input` is required")),
    };
    let base64 = match body.string("encoding_format")?.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("`encoding_format` is `{other}`; use `float` or `base64`"),
            ))
        }
    };
    let dimensions = body.integer("dimensions", 1)?;
    body.ignore(&["user"]);
    body.finish()?;

    let service = state.embedder.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "this server has no embedding model (start it with --embedding-model)",
        )
    })?;
    if model != service.name {
        return Err(ApiError::model_not_found(&model, &state.model_names()));
    }
    if let Some(d) = dimensions.filter(|&d| d as usize != service.dim) {
        return Err(ApiError::unsupported(
            "dimensions",
            format!(
                "`dimensions` = {d} is unsupported: this model's vectors have {}",
                service.dim
            ),
        ));
    }
    let out = service.embed(texts).await?;
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": out.tokens, "total_tokens": out.tokens},
    })))
}

fn texts(items: Vec<Value>) -> ApiResult<Vec<String>> {
    if items.is_empty() {
        return Err(ApiError::invalid("input", "`input` must not be empty"));
    }
    if items.len() > MAX_INPUTS {
        return Err(ApiError::invalid(
            "input",
            format!("{} inputs; at most {MAX_INPUTS} per request", items.len()),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) if s.is_empty() => Err(ApiError::invalid(
                format!("input[{i}]"),
                "inputs must not be empty strings",
            )),
            Value::String(s) => Ok(s),
            Value::Number(_) | Value::Array(_) => Err(ApiError::unsupported(
                format!("input[{i}]"),
                "inputs as token ids are unsupported; send text",
            )),
            other => Err(wrong_type(&format!("input[{i}]"), "a string", &other)),
        })
        .collect()
}
