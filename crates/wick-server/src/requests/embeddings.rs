//! `POST /v1/embeddings`: one or more texts, floats or base64.

use serde_json::Value;

use super::fields::{shown, wrong_type, ApiResult, Body};
use crate::error::ApiError;

/// Most texts in one request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

#[derive(Debug, Clone)]
pub struct EmbeddingsRequest {
    pub model: String,
    /// 1..=MAX_INPUTS texts, none empty.
    pub texts: Vec<String>,
    /// `encoding_format: "base64"` (little-endian f32), else floats.
    pub base64: bool,
    /// As asked (at least 1); the handler checks it against the model.
    pub dimensions: Option<u64>,
}

pub fn parse_embeddings(bytes: &[u8]) -> ApiResult<EmbeddingsRequest> {
    let mut body = Body::parse(bytes)?;
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
                format!(
                    "`encoding_format` is `{}`; use `float` or `base64`",
                    shown(other)
                ),
            ))
        }
    };
    let dimensions = body.integer("dimensions", 1)?;
    body.ignore(&["user"]);
    body.finish()?;
    Ok(EmbeddingsRequest {
        model,
        texts,
        base64,
        dimensions,
    })
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
