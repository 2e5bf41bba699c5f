//! The request fields chat and text completions share: model, sampling, stopping, streaming.
//! Unset sampling fields fall back to the model's generation_config (as `wick generate` does),
//! so a request and the CLI with the same settings decode the same tokens.

use serde_json::{json, Value};
use wick::generate::{GenerationConfig, GenerationDefaults, SamplingParams};

use super::fields::{shown, wrong_type, ApiResult, Body};
use super::GenLimits;
use crate::error::ApiError;

#[derive(Debug, Clone, Default)]
pub struct GenParams {
    pub model: String,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: Option<u64>,
    /// As asked; None means "as many as fit, up to the server's limit".
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

impl GenParams {
    /// Takes the shared fields from `body`; `max_token_fields` are the names the budget may
    /// come under (chat accepts `max_completion_tokens` too).
    pub fn take(
        body: &mut Body,
        max_token_fields: &[&str],
        limits: &GenLimits,
    ) -> ApiResult<GenParams> {
        let mut p = GenParams {
            model: body.required_string("model")?,
            temperature: body.number("temperature", 0.0, 2.0)?,
            top_p: body.number("top_p", 0.0, 1.0)?,
            top_k: body.integer("top_k", 0)?.map(|k| k as usize),
            min_p: body.number("min_p", 0.0, 1.0)?,
            repetition_penalty: body.number("repetition_penalty", 0.0, 10.0)?,
            frequency_penalty: body.number("frequency_penalty", -2.0, 2.0)?,
            presence_penalty: body.number("presence_penalty", -2.0, 2.0)?,
            seed: body.integer("seed", 0)?,
            stream: body.bool("stream")?.unwrap_or(false),
            ..Default::default()
        };
        for name in max_token_fields {
            if let Some(n) = body.integer(name, 1)? {
                if n > limits.max_tokens as u64 {
                    return Err(ApiError::invalid(
                        *name,
                        format!(
                            "`{name}` is {n}; this server allows at most {}",
                            limits.max_tokens
                        ),
                    ));
                }
                p.max_tokens = Some(n as usize);
            }
        }
        if let Some(n) = body.integer("n", 1)? {
            if n != 1 {
                return Err(ApiError::unsupported(
                    "n",
                    format!("`n` = {n} is unsupported: this server returns one choice per request"),
                ));
            }
        }
        p.stop = take_stop(body)?;
        p.logit_bias = take_logit_bias(body, limits.vocab_size)?;
        p.include_usage = take_stream_options(body, p.stream)?;
        body.unsupported(
            "logprobs",
            &[json!(false)],
            "log probabilities are not returned",
        )?;
        body.unsupported(
            "top_logprobs",
            &[json!(0)],
            "log probabilities are not returned",
        )?;
        body.ignore(&["user", "metadata", "store", "service_tier"]);
        Ok(p)
    }

    /// The generation settings for a model with `defaults`; `max_tokens` is the budget the
    /// handler settled on.
    pub fn config(&self, defaults: &GenerationDefaults, max_tokens: usize) -> GenerationConfig {
        let base = defaults.sampling_params();
        let mut logit_bias = base.logit_bias.clone();
        logit_bias.extend(self.logit_bias.iter().copied());
        GenerationConfig {
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(base.temperature),
                top_k: self.top_k.unwrap_or(base.top_k),
                top_p: self.top_p.unwrap_or(base.top_p),
                min_p: self.min_p.unwrap_or(base.min_p),
                repetition_penalty: self.repetition_penalty.unwrap_or(base.repetition_penalty),
                frequency_penalty: self.frequency_penalty.unwrap_or(base.frequency_penalty),
                presence_penalty: self.presence_penalty.unwrap_or(base.presence_penalty),
                logit_bias,
                seed: self.seed.or(base.seed),
            },
            max_tokens: Some(max_tokens),
            stop: self.stop.clone(),
            eos_token_ids: defaults.eos_token_id.clone(),
            truncate_prompt: false,
        }
    }
}

/// `stop`: a string or a list of up to 4 strings.
fn take_stop(body: &mut Body) -> ApiResult<Vec<String>> {
    let stops = match body.take("stop") {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                other => Err(wrong_type(&format!("stop[{i}]"), "a string", &other)),
            })
            .collect::<ApiResult<Vec<_>>>()?,
        Some(other) => {
            return Err(wrong_type(
                "stop",
                "a string or an array of strings",
                &other,
            ))
        }
    };
    if stops.len() > 4 {
        return Err(ApiError::invalid(
            "stop",
            "at most 4 stop sequences are allowed",
        ));
    }
    if stops.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "stop sequences must not be empty",
        ));
    }
    Ok(stops)
}

/// `logit_bias`: {"<token id>": bias in -100..=100}, ids within the model's vocabulary.
fn take_logit_bias(body: &mut Body, vocab_size: usize) -> ApiResult<Vec<(u32, f32)>> {
    let map = match body.take("logit_bias") {
        None => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(other) => return Err(wrong_type("logit_bias", "an object", &other)),
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        let id: u32 = key.parse().map_err(|_| {
            ApiError::invalid(
                "logit_bias",
                format!("key `{}` is not a token id", shown(&key)),
            )
        })?;
        if id as usize >= vocab_size {
            return Err(ApiError::invalid(
                "logit_bias",
                format!(
                    "token id {id} is outside the model's vocabulary of {vocab_size} tokens \
                     (ids 0..={})",
                    vocab_size.saturating_sub(1)
                ),
            ));
        }
        let bias = value
            .as_f64()
            .filter(|b| (-100.0..=100.0).contains(b))
            .ok_or_else(|| {
                ApiError::invalid(
                    "logit_bias",
                    format!("the bias for token {id} must be a number in -100..=100"),
                )
            })?;
        out.push((id, bias as f32));
    }
    Ok(out)
}

/// `stream_options: {"include_usage": bool}`, only with `stream: true`.
fn take_stream_options(body: &mut Body, stream: bool) -> ApiResult<bool> {
    let Some(options) = body.take("stream_options") else {
        return Ok(false);
    };
    if !stream {
        return Err(ApiError::invalid(
            "stream_options",
            "`stream_options` is only allowed with `stream: true`",
        ));
    }
    let Value::Object(mut map) = options else {
        return Err(wrong_type("stream_options", "an object", &options));
    };
    let include = match map.remove("include_usage") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            return Err(wrong_type(
                "stream_options.include_usage",
                "a boolean",
                &other,
            ))
        }
    };
    if let Some(key) = map.keys().next() {
        return Err(ApiError::invalid(
            format!("stream_options.{}", shown(key)),
            format!("unrecognized stream option `{}`", shown(key)),
        ));
    }
    Ok(include)
}
