//! `POST /v1/adapters`: `{"name", "path"?, "replace"?}`, and the rule for adapter names (also
//! applied to adapters looked up by a request's `model` and to the adapters folder's entries).

use super::fields::{ApiResult, Body};
use crate::error::ApiError;

/// Longest adapter name.
pub const MAX_ADAPTER_NAME: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterRequest {
    /// Passes [`check_adapter_name`]; whether a model already has it is the handler's check.
    pub name: String,
    /// Where to load from (default: `<adapters folder>/<name>`); the handler decides whether
    /// the server may read it.
    pub path: Option<String>,
    /// Re-point a loaded name; without it a loaded name is a conflict.
    pub replace: bool,
}

pub fn parse_adapter(bytes: &[u8]) -> ApiResult<AdapterRequest> {
    let mut body = Body::parse(bytes)?;
    let name = body.required_string("name")?;
    let path = body.string("path")?;
    let replace = body.bool("replace")?.unwrap_or(false);
    body.finish()?;
    check_adapter_name(&name).map_err(|why| ApiError::invalid("name", why))?;
    if path.as_deref() == Some("") {
        return Err(ApiError::invalid("path", "`path` must not be empty"));
    }
    Ok(AdapterRequest {
        name,
        path,
        replace,
    })
}

/// `[A-Za-z0-9._-]{1,64}`, not `.` or `..`: a name that is one safe path component, prints
/// as itself in logs and metrics, and fits in a model list. Err says why, quoting at most the
/// start of the name.
pub fn check_adapter_name(name: &str) -> Result<(), String> {
    let start: String = name.chars().take(MAX_ADAPTER_NAME).collect();
    let more = if start.len() < name.len() { "…" } else { "" };
    let shown = format!("{start:?}{more}");
    if name.is_empty() {
        return Err("an adapter name must not be empty".into());
    }
    if name.len() > MAX_ADAPTER_NAME {
        return Err(format!(
            "the adapter name {shown} has {} characters; at most {MAX_ADAPTER_NAME} are allowed",
            name.chars().count()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{shown} cannot name an adapter"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "the adapter name {shown} contains {c:?}; use only letters A-Z a-z, digits, `.`, \
             `_` and `-`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_safe_component() {
        for ok in [
            "a",
            "chat",
            "Ok.name_1-2",
            "...",
            ".hidden",
            &"z".repeat(64),
        ] {
            assert_eq!(check_adapter_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "sp ace",
            "ü",
            "x\u{0}",
            &"z".repeat(65),
        ] {
            assert!(check_adapter_name(bad).is_err(), "{bad:?}");
        }
    }
}
