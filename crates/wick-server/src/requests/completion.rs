//! `POST /v1/completions`: one plain text prompt.

use serde_json::{json, Value};

use super::fields::{wrong_type, ApiResult, Body};
use super::params::GenParams;
use super::GenLimits;
use crate::error::ApiError;

/// OpenAI's default budget for this endpoint.
pub const DEFAULT_COMPLETION_TOKENS: usize = 16;

#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub params: GenParams,
    /// Never empty.
    pub prompt: String,
}

pub fn parse_completion(bytes: &[u8], limits: &GenLimits) -> ApiResult<CompletionRequest> {
    let mut body = Body::parse(bytes)?;
    let mut params = GenParams::take(&mut body, &["max_tokens"], limits)?;
    params.max_tokens = params
        .max_tokens
        .or(Some(DEFAULT_COMPLETION_TOKENS.min(limits.max_tokens)));
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
    Ok(CompletionRequest { params, prompt })
}
