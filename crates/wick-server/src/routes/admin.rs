//! `GET /v1/models`, `GET /health`, `GET /metrics` and `POST /v1/adapters` (hot-loading a
//! LoRA adapter by name).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::generate_route::{generator, now_secs};
use crate::metrics::QueueDepths;
use crate::requests::{parse_adapter, ApiResult};
use crate::server::{body_bytes, AppState};

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

/// `{"name", "path"?, "replace"?}`: loads a PEFT adapter under `name` from `path` (relative to
/// the adapters folder; default `<adapters folder>/<name>`). Only from under that folder unless
/// the server allows any path; a loaded name only with `"replace": true`; never a model's name.
pub async fn load_adapter(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let request = parse_adapter(&body_bytes(&state, body)?)?;
    let gen = generator(&state)?;
    let name = &request.name;
    if state.is_model_name(name) {
        return Err(ApiError::invalid(
            "name",
            format!("`{name}` is the name of a served model; choose another adapter name"),
        ));
    }
    let dir = match &request.path {
        Some(p) => gen.adapter_paths.resolve(p)?,
        None if gen.adapter_paths.root().is_none() => {
            return Err(ApiError::invalid(
                "path",
                "`path` is required (the server has no --adapters folder)",
            ))
        }
        None => gen.adapter_paths.by_name(name).ok_or_else(|| {
            ApiError::invalid(
                "path",
                format!(
                    "the adapters folder has no adapter `{name}` (a subfolder holding {}); give \
                     `path` to load one from elsewhere in it",
                    wick::lora::CONFIG_FILE
                ),
            )
        })?,
    };
    gen.load_adapter(name, dir.clone(), request.replace).await?;
    Ok(Json(json!({
        "id": name, "object": "model", "owned_by": "wick-adapter", "path": dir.display().to_string()
    })))
}
