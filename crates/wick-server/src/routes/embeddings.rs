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
use crate::requests::{parse_embeddings, ApiResult};
use crate::server::{body_bytes, AppState};

pub async fn handle(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let request = parse_embeddings(&body_bytes(&state, body)?)?;
    let service = state.embedder.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "this server has no embedding model (start it with --embedding-model)",
        )
    })?;
    if request.model != service.name {
        return Err(ApiError::model_not_found(
            &request.model,
            &state.model_names(),
        ));
    }
    if let Some(d) = request.dimensions.filter(|&d| d != service.dim as u64) {
        return Err(ApiError::unsupported(
            "dimensions",
            format!(
                "`dimensions` = {d} is unsupported: this model's vectors have {}",
                service.dim
            ),
        ));
    }
    let out = service.embed(request.texts).await?;
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if request.base64 {
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
        "model": request.model,
        "usage": {"prompt_tokens": out.tokens, "total_tokens": out.tokens},
    })))
}
