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
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no route for {path}"),
            kind: "invalid_request_error",
            param: None,
            code: Some("unknown_url"),
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
