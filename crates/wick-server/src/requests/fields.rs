//! Reading a JSON request body field by field, so every error names the field at fault (serde's
//! derive would report "invalid type at line 1 column 57").

use serde_json::{Map, Value};

use crate::error::ApiError;

pub type ApiResult<T> = Result<T, ApiError>;

/// A request body: a JSON object whose fields are taken one at a time; anything left over at
/// the end is an unrecognized argument.
#[derive(Debug)]
pub struct Body {
    fields: Map<String, Value>,
}

impl Body {
    pub fn parse(bytes: &[u8]) -> ApiResult<Body> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_json(format!("the body is not valid JSON: {e}")))?;
        match value {
            Value::Object(fields) => Ok(Body { fields }),
            other => Err(ApiError::bad_json(format!(
                "the body must be a JSON object, not {}",
                type_name(&other)
            ))),
        }
    }

    /// The field's value; JSON `null` counts as absent, as in OpenAI's API.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.fields.remove(name).filter(|v| !v.is_null())
    }

    pub fn string(&mut self, name: &str) -> ApiResult<Option<String>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(name, "a string", &other)),
        }
    }

    pub fn required_string(&mut self, name: &str) -> ApiResult<String> {
        self.string(name)?
            .ok_or_else(|| ApiError::invalid(name, format!("`{name}` is required")))
    }

    pub fn bool(&mut self, name: &str) -> ApiResult<Option<bool>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(wrong_type(name, "a boolean", &other)),
        }
    }

    /// A number within `min..=max`.
    pub fn number(&mut self, name: &str, min: f64, max: f64) -> ApiResult<Option<f32>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if !(min..=max).contains(&x) {
                    return Err(ApiError::invalid(
                        name,
                        format!("`{name}` is {x}; it must be between {min} and {max}"),
                    ));
                }
                Ok(Some(x as f32))
            }
            Some(other) => Err(wrong_type(name, "a number", &other)),
        }
    }

    /// A whole number of at least `min`.
    pub fn integer(&mut self, name: &str, min: u64) -> ApiResult<Option<u64>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(x) if x >= min => Ok(Some(x)),
                _ => Err(ApiError::invalid(
                    name,
                    format!("`{name}` is {n}; it must be an integer of at least {min}"),
                )),
            },
            Some(other) => Err(wrong_type(name, "an integer", &other)),
        }
    }

    /// Fails on a field OpenAI defines but wick does not implement, unless it holds `allowed`
    /// (its neutral value).
    pub fn unsupported(&mut self, name: &str, allowed: &[Value], why: &str) -> ApiResult<()> {
        match self.take(name) {
            Some(v) if !allowed.contains(&v) => Err(ApiError::unsupported(
                name,
                format!("`{name}` = {} is unsupported: {why}", shown(&v.to_string())),
            )),
            _ => Ok(()),
        }
    }

    /// Fields clients send that change nothing here (e.g. `user`).
    pub fn ignore(&mut self, names: &[&str]) {
        for n in names {
            self.fields.remove(*n);
        }
    }

    /// Errors on the first field nobody took.
    pub fn finish(self) -> ApiResult<()> {
        match self.fields.keys().next() {
            Some(name) => Err(ApiError::invalid(
                shown(name),
                format!("unrecognized request argument `{}`", shown(name)),
            )),
            None => Ok(()),
        }
    }
}

/// Longest piece of a client's string quoted back in an error.
const SHOWN_CHARS: usize = 40;

/// A client-supplied string as an error quotes it: at most [`SHOWN_CHARS`] characters, control
/// characters and backslashes escaped, `…` where it was cut. An error never echoes a megabyte
/// key back, nor puts a newline or a terminal escape into a log line.
pub fn shown(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().take(SHOWN_CHARS) {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if s.chars().nth(SHOWN_CHARS).is_some() {
        out.push('…');
    }
    out
}

pub fn wrong_type(name: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::invalid(
        name,
        format!("`{name}` must be {expected}, not {}", type_name(got)),
    )
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
