//! Who may drive the server, checked before any route runs: the Host header must name this
//! server (DNS rebinding), a browser's `Origin` must be allowed by `--cors-origin` (then CORS,
//! preflights included, is answered for it), the API key if one is set (the Bearer scheme in
//! any case), and bodies must be JSON (forms and text/plain are what a page can send without a
//! preflight). 405s get OpenAI's JSON error with their `Allow` header.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The rules, fixed when the server binds (the Host rule depends on the bound address).
#[derive(Debug)]
pub struct AccessPolicy {
    hosts: HostRule,
    /// Allowed `Origin` values, lower-cased; `*` allows any.
    cors_origins: Vec<String>,
    api_key: Option<String>,
}

#[derive(Debug)]
enum HostRule {
    /// A non-loopback bind without `--allowed-hosts` (or `--allowed-hosts '*'`).
    Any,
    Only {
        /// Lower-cased names, `localhost` among them.
        names: Vec<String>,
        /// The bound address; on a non-loopback bind any IP literal (no DNS name, so no
        /// rebinding) is allowed too.
        bound: IpAddr,
        any_ip: bool,
    },
}

impl AccessPolicy {
    pub fn new(
        bound: SocketAddr,
        allowed_hosts: &[String],
        cors_origins: &[String],
        api_key: Option<String>,
    ) -> AccessPolicy {
        let loopback = bound.ip().is_loopback();
        let hosts =
            if allowed_hosts.iter().any(|h| h == "*") || (!loopback && allowed_hosts.is_empty()) {
                HostRule::Any
            } else {
                let mut names: Vec<String> = allowed_hosts
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect();
                names.push("localhost".into());
                HostRule::Only {
                    names,
                    bound: bound.ip(),
                    any_ip: !loopback,
                }
            };
        AccessPolicy {
            hosts,
            cors_origins: cors_origins
                .iter()
                .map(|o| o.to_ascii_lowercase())
                .collect(),
            api_key,
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let HostRule::Only {
            names,
            bound,
            any_ip,
        } = &self.hosts
        else {
            return true;
        };
        let Some(name) = host_name(host) else {
            return false;
        };
        match name.parse::<IpAddr>() {
            Ok(ip) => *any_ip || ip == *bound,
            Err(_) => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.cors_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }

    fn key_matches(&self, headers: &HeaderMap) -> bool {
        let Some(key) = &self.api_key else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        given.is_some_and(|g| same_bytes(g.as_bytes(), key.as_bytes()))
    }
}

/// The host part of a Host header value: `name`, `name:port`, `[v6]` or `[v6]:port`.
fn host_name(value: &str) -> Option<&str> {
    let port_ok = |p: &str| p.is_empty() || p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => "",
            a => a.strip_prefix(':')?,
        };
        return (port_ok(port) && inside.parse::<std::net::Ipv6Addr>().is_ok()).then_some(inside);
    }
    let (name, port) = value.split_once(':').unwrap_or((value, ""));
    (!name.is_empty() && port_ok(port)).then_some(name)
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares without stopping at the first difference (no timing hint about the key).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 403 for a Host that does not name this server; 400 when there is none to check.
pub async fn check_host(
    State(policy): State<Arc<AccessPolicy>>,
    req: Request,
    next: Next,
) -> Response {
    if matches!(policy.hosts, HostRule::Any) {
        return next.run(req).await;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or(""));
    match host {
        None => ApiError::bad_request(
            "missing_host",
            "the request has no Host header, so the server cannot check it names this server",
        )
        .into_response(),
        Some(h) if policy.host_allowed(h) => next.run(req).await,
        Some(h) => {
            let shown: String = h.chars().take(100).collect();
            ApiError::forbidden(
                None,
                "host_not_allowed",
                format!(
                    "the Host header `{shown}` does not name this server (a web page may be \
                     rebinding its DNS name to it); start the server with --allowed-hosts \
                     naming the hosts clients use"
                ),
            )
            .into_response()
        }
    }
}

/// Requests from web pages (with an `Origin`): 403 unless allowed; for allowed origins,
/// preflights are answered here and responses carry the CORS headers.
pub async fn check_origin(
    State(policy): State<Arc<AccessPolicy>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let text = origin.to_str().unwrap_or("");
    if !policy.origin_allowed(text) {
        let shown: String = text.chars().take(100).collect();
        return ApiError::forbidden(
            None,
            "origin_not_allowed",
            format!(
                "requests from web pages are refused (Origin `{shown}`); to allow this page, \
                 start the server with --cors-origin {shown}"
            ),
        )
        .into_response();
    }
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        let asked = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(HeaderValue::from_static("authorization, content-type"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Retry-After"),
    );
    response
}

/// 401 without the API key (when one is set); `/health` stays open for probes.
pub async fn authorize(
    State(policy): State<Arc<AccessPolicy>>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path() != "/health" && !policy.key_matches(req.headers()) {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}

/// 415 for a body that is not `application/json` (parameters such as charset are fine).
pub async fn require_json(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let has_body = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
        || headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        let given = headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("?"));
        let essence = given.map(|t| t.split(';').next().unwrap_or("").trim());
        if !essence.is_some_and(|e| e.eq_ignore_ascii_case("application/json")) {
            return ApiError::unsupported_media_type(given).into_response();
        }
    }
    next.run(req).await
}

/// axum's 405s have an empty body: give them OpenAI's error, keeping `Allow`.
pub async fn json_method_not_allowed(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(200).collect();
    let response = next.run(req).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let shown = allow.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("?");
    let mut out = ApiError::method_not_allowed(method.as_str(), &path, shown).into_response();
    if let Some(v) = allow {
        out.headers_mut().insert(header::ALLOW, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_split_into_their_name() {
        assert_eq!(host_name("localhost:8080"), Some("localhost"));
        assert_eq!(host_name("LocalHost"), Some("LocalHost"));
        assert_eq!(host_name("[::1]:8080"), Some("::1"));
        assert_eq!(host_name("[::1]"), Some("::1"));
        for bad in ["", ":80", "[::1", "[zz]:1", "a:b", "[::1]x", "a:1:2"] {
            assert_eq!(host_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn loopback_allows_only_its_address_and_localhost() {
        let p = AccessPolicy::new("127.0.0.1:80".parse().unwrap(), &[], &[], None);
        for ok in ["127.0.0.1:80", "127.0.0.1", "localhost:1", "LOCALHOST"] {
            assert!(p.host_allowed(ok), "{ok}");
        }
        for bad in [
            "127.0.0.2",
            "[::1]:80",
            "evil.example",
            "localhost.evil.example",
        ] {
            assert!(!p.host_allowed(bad), "{bad}");
        }
        let v6 = AccessPolicy::new("[::1]:80".parse().unwrap(), &[], &[], None);
        assert!(v6.host_allowed("[::1]:80") && !v6.host_allowed("127.0.0.1:80"));
    }

    #[test]
    fn non_loopback_allows_any_host_unless_listed() {
        let any = AccessPolicy::new("0.0.0.0:80".parse().unwrap(), &[], &[], None);
        assert!(any.host_allowed("whatever.example"));
        let listed = ["Wick.LAN".to_string()];
        let p = AccessPolicy::new("0.0.0.0:80".parse().unwrap(), &listed, &[], None);
        for ok in ["wick.lan:80", "localhost", "10.1.2.3:80", "[fe80::1]:80"] {
            assert!(p.host_allowed(ok), "{ok}");
        }
        assert!(!p.host_allowed("evil.example:80"));
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer k"), Some("k"));
        assert_eq!(bearer_token("bearer\tk "), Some("k"));
        for bad in ["Bearer", "Bearer ", "Bearerk", "Basic k", ""] {
            assert_eq!(bearer_token(bad), None, "{bad}");
        }
        assert!(
            same_bytes(b"abc", b"abc") && !same_bytes(b"abc", b"abd") && !same_bytes(b"a", b"ab")
        );
    }
}
