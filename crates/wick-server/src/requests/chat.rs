//! `POST /v1/chat/completions`: the messages (text only) and the shared generation fields.

use serde_json::{json, Value};
use wick::io::chat_template::ChatMessage;

use super::fields::{shown, wrong_type, ApiResult, Body};
use super::params::GenParams;
use super::GenLimits;
use crate::error::ApiError;

/// Roles a message may have (`developer` is OpenAI's newer name for `system`).
pub const CHAT_ROLES: [&str; 4] = ["system", "developer", "user", "assistant"];

#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub params: GenParams,
    /// Never empty; `developer` already renamed to `system`.
    pub messages: Vec<ChatMessage>,
}

pub fn parse_chat(bytes: &[u8], limits: &GenLimits) -> ApiResult<ChatRequest> {
    let mut body = Body::parse(bytes)?;
    let params = GenParams::take(&mut body, &["max_tokens", "max_completion_tokens"], limits)?;
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
    Ok(ChatRequest { params, messages })
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
        Some(Value::String(r)) if CHAT_ROLES.contains(&r.as_str()) => r,
        Some(Value::String(r)) => {
            return Err(ApiError::unsupported(
                at("role"),
                format!(
                    "role `{}` is unsupported (supported: {})",
                    shown(&r),
                    CHAT_ROLES.join(", ")
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
            at(&shown(key)),
            format!("message field `{}` is unsupported", shown(key)),
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
                    format!(
                        "content part type `{}` is unsupported (only text)",
                        shown(other)
                    ),
                ))
            }
            (None, _) => return Err(ApiError::invalid(at, "a content part needs a `type`")),
        }
    }
    Ok(text)
}
