//! `POST /v1/chat/completions`: messages rendered with the model's chat template.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};
use wick::io::chat_template::ChatMessage;

use crate::error::ApiError;
use crate::fields::{wrong_type, ApiResult, Body};
use crate::generate_route::{generator, respond, Kind};
use crate::params::GenParams;
use crate::server::{encode, read_body, AppState};

const ROLES: [&str; 4] = ["system", "developer", "user", "assistant"];

pub async fn handle(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let mut body = read_body(&state, body)?;
    let params = GenParams::take(&mut body, &["max_tokens", "max_completion_tokens"])?;
    let messages = take_messages(&mut body)?;
    for (name, why) in [
        ("tools", "tool calling is not implemented"),
        ("functions", "function calling is not implemented"),
        ("tool_choice", "tool calling is not implemented"),
        ("function_call", "function calling is not implemented"),
        ("audio", "audio output is not implemented"),
        ("prediction", "predicted outputs are not implemented"),
    ] {
        body.unsupported(name, &[json!("none"), json!([])], why)?;
    }
    body.unsupported(
        "response_format",
        &[json!({"type": "text"})],
        "only plain text responses are implemented",
    )?;
    body.unsupported("modalities", &[json!(["text"])], "only text is implemented")?;
    body.ignore(&["parallel_tool_calls"]);
    body.finish()?;

    let gen = generator(&state)?;
    let template = gen.chat_template.as_ref().ok_or_else(|| {
        ApiError::unsupported(
            "messages",
            "the model has no chat template; use /v1/completions",
        )
    })?;
    let text = template
        .render(&messages, true)
        .map_err(|e| ApiError::invalid("messages", format!("the chat template failed: {e}")))?;
    // The template supplies any BOS itself (as `wick generate --chat` and transformers do).
    let prompt = encode(&gen.tokenizer, &text, false)?;
    respond(state.clone(), Kind::Chat, params, prompt).await
}

fn take_messages(body: &mut Body) -> ApiResult<Vec<ChatMessage>> {
    let items = match body.take("messages") {
        None => return Err(ApiError::invalid("messages", "`messages` is required")),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::invalid(
                "messages",
                "`messages` must not be empty",
            ))
        }
        Some(Value::Array(items)) => items,
        Some(other) => return Err(wrong_type("messages", "an array", &other)),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| message(i, item))
        .collect()
}

fn message(i: usize, item: Value) -> ApiResult<ChatMessage> {
    let at = |field: &str| format!("messages[{i}].{field}");
    let Value::Object(mut map) = item else {
        return Err(wrong_type(&format!("messages[{i}]"), "an object", &item));
    };
    let role = match map.remove("role") {
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r,
        Some(Value::String(r)) => {
            return Err(ApiError::unsupported(
                at("role"),
                format!(
                    "role `{r}` is unsupported (supported: {})",
                    ROLES.join(", ")
                ),
            ))
        }
        Some(other) => return Err(wrong_type(&at("role"), "a string", &other)),
        None => return Err(ApiError::invalid(at("role"), "`role` is required")),
    };
    // OpenAI's newer name for the system role; chat templates know `system`.
    let role = if role == "developer" {
        "system".into()
    } else {
        role
    };
    let content = match map.remove("content") {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None if role == "assistant" => String::new(),
        Some(Value::Array(parts)) => text_parts(i, parts)?,
        Some(other) => return Err(wrong_type(&at("content"), "a string or an array", &other)),
        None => return Err(ApiError::invalid(at("content"), "`content` is required")),
    };
    map.remove("name");
    if let Some(key) = map.keys().next() {
        return Err(ApiError::unsupported(
            at(key),
            format!("message field `{key}` is unsupported"),
        ));
    }
    Ok(ChatMessage::new(role, content))
}

/// Content parts: only `{"type": "text", "text": ...}`, joined.
fn text_parts(i: usize, parts: Vec<Value>) -> ApiResult<String> {
    let mut text = String::new();
    for (j, part) in parts.into_iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match (part.get("type").and_then(Value::as_str), part.get("text")) {
            (Some("text"), Some(Value::String(t))) => text.push_str(t),
            (Some("text"), _) => {
                return Err(ApiError::invalid(at, "a text part needs a string `text`"))
            }
            (Some(other), _) => {
                return Err(ApiError::unsupported(
                    at,
                    format!("content part type `{other}` is unsupported (only text)"),
                ))
            }
            (None, _) => return Err(ApiError::invalid(at, "a content part needs a `type`")),
        }
    }
    Ok(text)
}
