//! Errors in OpenAI's wire format: `{"error": {"message", "type", "param", "code"}}` with the
//! HTTP status a client library maps to its exception classes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400: a request field is missing, mistyped or out of range; `param` names it.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: None,
        }
    }

    /// 400 for a valid OpenAI feature wick does not implement (never silently ignored).
    pub fn unsupported(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            code: Some("unsupported_parameter"),
            ..Self::invalid(param, message)
        }
    }

    /// 400 for a body that is not a JSON object.
    pub fn bad_json(message: impl Into<String>) -> Self {
        ApiError {
            param: None,
            code: Some("invalid_json"),
            ..Self::invalid("", message)
        }
    }

    pub fn model_not_found(name: &str, known: &[String]) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("the model `{name}` does not exist here (served: {known:?})"),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    pub fn context_overflow(message: impl Into<String>) -> Self {
        ApiError {
            code: Some("context_length_exceeded"),
            ..Self::invalid("messages", message)
        }
    }

    pub fn too_large(limit: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("the request body exceeds the server's limit of {limit} bytes"),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// 429 with `Retry-After`: the queue is full.
    pub fn busy(what: &str) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("the {what} queue is full; retry shortly"),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
        }
    }

    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong API key: send `Authorization: Bearer <key>`".into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    pub fn not_found(path: &str) -> Self {
        let path: String = path.chars().take(200).collect();
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no route for {path}"),
            kind: "invalid_request_error",
            param: None,
            code: Some("unknown_url"),
        }
    }

    /// 403: the request is understood but this server will not do it (`code` says which rule).
    pub fn forbidden(param: Option<&str>, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: Some(code),
        }
    }

    /// 409: an adapter of that name is loaded and the request did not ask to replace it.
    pub fn adapter_exists(name: &str) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            message: format!(
                "an adapter named `{name}` is already loaded; send \"replace\": true to load \
                 it again from the given path"
            ),
            kind: "invalid_request_error",
            param: Some("name".into()),
            code: Some("adapter_exists"),
        }
    }

    /// 415: a body that is not `application/json`.
    pub fn unsupported_media_type(got: Option<&str>) -> Self {
        let got = match got {
            Some(t) => format!("`{}`", t.chars().take(100).collect::<String>()),
            None => "none".into(),
        };
        ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!(
                "request bodies must be sent with `Content-Type: application/json` (got {got})"
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("unsupported_media_type"),
        }
    }

    /// 405 naming the method, the path and what the path allows.
    pub fn method_not_allowed(method: &str, path: &str, allow: &str) -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("{method} is not allowed on {path} (allowed: {allow})"),
            kind: "invalid_request_error",
            param: None,
            code: Some("method_not_allowed"),
        }
    }

    /// 400 for a request the server cannot check (e.g. no Host header).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some(code),
        }
    }

    /// 503: the server is not serving this kind of model, or is shutting down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Library errors from user input (a bad sampling value, a stop string) are the client's fault.
impl From<wick::Error> for ApiError {
    fn from(e: wick::Error) -> Self {
        match e {
            wick::Error::InvalidArgument { name, message } => ApiError::invalid(name, message),
            other => ApiError::internal(other.to_string()),
        }
    }
}
