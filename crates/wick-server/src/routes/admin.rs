//! `GET /v1/models`, `GET /health`, `GET /metrics` and `POST /v1/adapters` (hot-loading a
//! LoRA adapter by name).

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::fields::ApiResult;
use crate::generate_route::{generator, is_plain_name, now_secs};
use crate::metrics::QueueDepths;
use crate::server::{read_body, AppState};

pub async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let created = now_secs();
    let entry = |id: &str, owned_by: &str| json!({"id": id, "object": "model", "created": created, "owned_by": owned_by});
    let mut data = Vec::new();
    if let Some(gen) = &state.generator {
        data.push(entry(&gen.name, "wick"));
        for name in gen.adapter_names() {
            data.push(entry(&name, "wick-adapter"));
        }
    }
    if let Some(e) = &state.embedder {
        data.push(entry(&e.name, "wick"));
    }
    Json(json!({"object": "list", "data": data}))
}

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let queues = QueueDepths {
        generation: state.generator.as_ref().map_or(0, |g| g.queue_depth()),
        embedding: state.embedder.as_ref().map_or(0, |e| e.queue_depth()),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(queues),
    )
}

/// `{"name": "...", "path": "<adapter dir>"}`; `path` defaults to `<adapters dir>/<name>`.
pub async fn load_adapter(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let mut body = read_body(&state, body)?;
    let name = body.required_string("name")?;
    let path = body.string("path")?;
    body.finish()?;
    let gen = generator(&state)?;
    if !is_plain_name(&name) || name == gen.name {
        return Err(ApiError::invalid(
            "name",
            format!(
                "`{name}` cannot name an adapter (use a plain name other than the base model's)"
            ),
        ));
    }
    let dir = match (path, &gen.adapters_dir) {
        (Some(p), _) => PathBuf::from(p),
        (None, Some(dir)) => dir.join(&name),
        (None, None) => {
            return Err(ApiError::invalid(
                "path",
                "`path` is required (the server has no --adapters folder)",
            ))
        }
    };
    if !dir.join(wick::lora::CONFIG_FILE).is_file() {
        return Err(ApiError::invalid(
            "path",
            format!(
                "{} holds no {} (expected a PEFT LoRA adapter directory)",
                dir.display(),
                wick::lora::CONFIG_FILE
            ),
        ));
    }
    gen.load_adapter(&name, dir.clone()).await?;
    Ok(Json(json!({
        "id": name, "object": "model", "owned_by": "wick-adapter", "path": dir.display().to_string()
    })))
}
