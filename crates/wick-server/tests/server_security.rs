//! What a web page must not be able to make a browser do to a local server, and the answers
//! around authentication: bodies other than JSON get 415 (forms and text/plain need no CORS
//! preflight), a Host header naming another site gets 403 (DNS rebinding), a request with an
//! `Origin` gets 403 unless `cors_origins` allows it (and then CORS is answered properly), the
//! Bearer scheme is case-insensitive, 405s are OpenAI-format JSON with `Allow`, an empty API
//! key is refused at start. Real TCP on loopback, the real embedding model.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;

use common::*;
use serde_json::{json, Value};
use testkit::http::{raw, request, Response};
use wick_server::{ServerConfig, ServerHandle};

const KEY: &str = "sec-key";

struct Fixture {
    _server: ServerHandle,
    addr: String,
    port: u16,
}

fn config() -> ServerConfig {
    ServerConfig {
        embedding_model: Some(embedding_model().to_str().unwrap().into()),
        embedding_model_name: Some(EMBED_NAME.into()),
        api_key: Some(KEY.into()),
        ..Default::default()
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let server = ServerHandle::start(config(), SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        Fixture {
            addr: server.addr.to_string(),
            port: server.addr.port(),
            _server: server,
        }
    })
}

fn embed_body() -> Vec<u8> {
    json!({"model": EMBED_NAME, "input": "hello"})
        .to_string()
        .into_bytes()
}

/// POST /v1/embeddings with the key and `headers` added.
fn embed_with(addr: &str, headers: &[(&str, &str)]) -> Response {
    let auth = format!("Bearer {KEY}");
    let mut all = vec![("Authorization", auth.as_str())];
    all.extend_from_slice(headers);
    request(addr, "POST", "/v1/embeddings", &all, &embed_body()).unwrap()
}

#[test]
fn bodies_that_are_not_json_get_415() {
    let f = fixture();
    for content_type in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/jsonp",
        "",
    ] {
        let r = embed_with(&f.addr, &[("Content-Type", content_type)]);
        let err = error_of(&r, 415);
        assert_eq!(err["code"], "unsupported_media_type", "{content_type}");
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{err}"
        );
    }
    // No Content-Type at all.
    let body = embed_body();
    let head = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        f.addr,
        body.len()
    );
    let r = raw(&f.addr, &[head.as_bytes(), &body].concat()).unwrap();
    assert_eq!(error_of(&r, 415)["code"], "unsupported_media_type");
    // JSON with parameters, in any case, is fine.
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=\"utf-8\"",
    ] {
        let r = embed_with(&f.addr, &[("Content-Type", content_type)]);
        assert_eq!(r.status, 200, "{content_type}: {}", r.text());
    }
}

#[test]
fn a_host_header_naming_another_site_gets_403() {
    let f = fixture();
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{}", f.port),
        format!("127.0.0.1.evil.example:{}", f.port),
        format!("localhost.evil.example:{}", f.port),
        "127.0.0.2".to_string(),
    ] {
        let r = embed_with(&f.addr, &[("Host", &host)]);
        let err = error_of(&r, 403);
        assert_eq!(err["code"], "host_not_allowed", "{host}");
        assert!(err["message"].as_str().unwrap().contains("--allowed-hosts"));
        let r = request(&f.addr, "GET", "/health", &[("Host", &host)], b"").unwrap();
        assert_eq!(r.status, 403, "/health with Host {host}");
    }
    for host in [
        format!("127.0.0.1:{}", f.port),
        "127.0.0.1".to_string(),
        format!("localhost:{}", f.port),
        "LocalHost".to_string(),
    ] {
        let r = embed_with(&f.addr, &[("Host", &host)]);
        assert_eq!(r.status, 200, "Host {host}: {}", r.text());
    }
    // HTTP/1.0 may leave the Host header out; the server cannot check it then.
    let body = embed_body();
    let head = format!(
        "POST /v1/embeddings HTTP/1.0\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let r = raw(&f.addr, &[head.as_bytes(), &body].concat()).unwrap();
    assert_eq!(error_of(&r, 400)["code"], "missing_host");
}

#[test]
fn requests_from_web_pages_get_403_without_cors_origin() {
    let f = fixture();
    for origin in ["http://evil.example", "null", "http://localhost:3000"] {
        let r = embed_with(&f.addr, &[("Origin", origin)]);
        let err = error_of(&r, 403);
        assert_eq!(err["code"], "origin_not_allowed", "{origin}");
        assert!(err["message"].as_str().unwrap().contains("--cors-origin"));
        assert_eq!(r.header("access-control-allow-origin"), None);
        // The preflight a browser sends first is refused the same way.
        let r = request(
            &f.addr,
            "OPTIONS",
            "/v1/embeddings",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                ),
            ],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 403, "preflight from {origin}: {}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), None);
    }
    assert_eq!(embed_with(&f.addr, &[]).status, 200);
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let f = fixture();
    let accepted = [
        format!("bearer {KEY}"),
        format!("BEARER {KEY}"),
        format!("Bearer  {KEY}"),
    ];
    let refused = [
        format!("Basic {KEY}"),
        format!("Bearer{KEY}"),
        format!("Bearer {KEY}x"),
        "Bearer".to_string(),
    ];
    let cases = accepted.iter().map(|a| (a, true));
    for (auth, ok) in cases.chain(refused.iter().map(|a| (a, false))) {
        let r = request(
            &f.addr,
            "POST",
            "/v1/embeddings",
            &[("Authorization", auth)],
            &embed_body(),
        )
        .unwrap();
        if ok {
            assert_eq!(r.status, 200, "{auth}: {}", r.text());
        } else {
            assert_eq!(error_of(&r, 401)["code"], "invalid_api_key", "{auth}");
        }
    }
}

#[test]
fn a_wrong_method_gets_405_as_json_with_allow() {
    let f = fixture();
    let auth = format!("Bearer {KEY}");
    let cases = [
        ("GET", "/v1/embeddings", "POST"),
        ("DELETE", "/v1/models", "GET"),
        ("PUT", "/v1/chat/completions", "POST"),
    ];
    for (method, path, allowed) in cases {
        let r = request(&f.addr, method, path, &[("Authorization", &auth)], b"").unwrap();
        let err = error_of(&r, 405);
        assert_eq!(err["code"], "method_not_allowed");
        let message = err["message"].as_str().unwrap();
        assert!(
            message.contains(method) && message.contains(path),
            "{message}"
        );
        let allow = r.header("allow").unwrap_or_default();
        assert!(allow.contains(allowed), "{method} {path}: Allow: {allow}");
    }
}

#[test]
fn odd_embedding_inputs_get_200_or_400_never_500() {
    let f = fixture();
    let auth = format!("Bearer {KEY}");
    let long = "word ".repeat(50_000);
    let many: Vec<&str> = vec!["a b c"; 64];
    let ok: Vec<Value> = vec![
        json!("\u{0}"),
        json!(" "),
        json!("\u{1F600}\u{200B}\u{FEFF}"),
        json!(long),
        json!(many),
    ];
    for input in ok {
        let body = json!({"model": EMBED_NAME, "input": input});
        let r = request(
            &f.addr,
            "POST",
            "/v1/embeddings",
            &[("Authorization", &auth)],
            body.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        for item in v["data"].as_array().unwrap() {
            let vector = item["embedding"].as_array().unwrap();
            assert!(vector.iter().all(|x| x.as_f64().unwrap().is_finite()));
        }
    }
    let bad: Vec<(Value, &str)> = vec![
        (json!({"input": "x"}), "model"),
        (json!({"model": 5, "input": "x"}), "model"),
        (json!({"model": EMBED_NAME, "input": [null]}), "input[0]"),
        (json!({"model": EMBED_NAME, "input": [""]}), "input[0]"),
        (json!({"model": EMBED_NAME, "input": [[]]}), "input[0]"),
        (json!({"model": EMBED_NAME, "input": {"a": 1}}), "input"),
        (
            json!({"model": EMBED_NAME, "input": vec!["a"; 2049]}),
            "input",
        ),
        (
            json!({"model": EMBED_NAME, "input": "x", "dimensions": 0}),
            "dimensions",
        ),
        (
            json!({"model": EMBED_NAME, "input": "x", "dimensions": 1e300}),
            "dimensions",
        ),
        (
            json!({"model": EMBED_NAME, "input": "x", "dimensions": -1}),
            "dimensions",
        ),
        (
            json!({"model": EMBED_NAME, "input": "x", "encoding_format": 3}),
            "encoding_format",
        ),
        (
            json!({"model": EMBED_NAME, "input": "x", "encoding_format": "int8"}),
            "encoding_format",
        ),
    ];
    for (body, param) in bad {
        let r = request(
            &f.addr,
            "POST",
            "/v1/embeddings",
            &[("Authorization", &auth)],
            body.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(error_of(&r, 400)["param"], param, "{body}");
    }
}

#[test]
fn an_empty_api_key_is_refused_at_start() {
    let config = ServerConfig {
        api_key: Some(String::new()),
        ..config()
    };
    let err = ServerHandle::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .err()
        .expect("a server with an empty API key started");
    let message = format!("{err:#}");
    assert!(message.contains("API key is empty"), "{message}");
}

const APP: &str = "http://app.example:3000";

/// A loopback server that allows one web page and one extra host name.
fn open_fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = ServerConfig {
            cors_origins: vec![APP.into()],
            allowed_hosts: vec!["wick.internal".into()],
            ..config()
        };
        let server = ServerHandle::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        Fixture {
            addr: server.addr.to_string(),
            port: server.addr.port(),
            _server: server,
        }
    })
}

#[test]
fn an_allowed_origin_gets_cors_answers_and_preflights() {
    let f = open_fixture();
    let r = embed_with(&f.addr, &[("Origin", APP)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("vary"), Some("Origin"));
    // The preflight needs no key (browsers send none) and allows what the page asked for.
    let asked = "authorization, content-type, x-stainless-os";
    let r = request(
        &f.addr,
        "OPTIONS",
        "/v1/chat/completions",
        &[
            ("Origin", APP),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", asked),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert_eq!(r.header("access-control-allow-headers"), Some(asked));
    // Without the key the page gets a 401 it can read; other origins still get 403.
    let r = request(
        &f.addr,
        "POST",
        "/v1/embeddings",
        &[("Origin", APP)],
        &embed_body(),
    )
    .unwrap();
    assert_eq!(error_of(&r, 401)["code"], "invalid_api_key");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    for other in ["http://app.example:3001", "https://app.example:3000"] {
        let r = embed_with(&f.addr, &[("Origin", other)]);
        assert_eq!(error_of(&r, 403)["code"], "origin_not_allowed", "{other}");
    }
    // OPTIONS without an Origin is no preflight: a JSON 405.
    let auth = format!("Bearer {KEY}");
    let r = request(
        &f.addr,
        "OPTIONS",
        "/v1/embeddings",
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(error_of(&r, 405)["code"], "method_not_allowed");
}

#[test]
fn allowed_hosts_add_names_on_loopback() {
    let f = open_fixture();
    for host in [format!("wick.internal:{}", f.port), "WICK.internal".into()] {
        let r = embed_with(&f.addr, &[("Host", &host)]);
        assert_eq!(r.status, 200, "{host}: {}", r.text());
    }
    let r = embed_with(&f.addr, &[("Host", "evil.example")]);
    assert_eq!(error_of(&r, 403)["code"], "host_not_allowed");
}

#[test]
fn a_non_loopback_bind_checks_hosts_only_when_listed() {
    let listed = ServerConfig {
        allowed_hosts: vec!["wick.lan".into()],
        ..config()
    };
    let server = ServerHandle::start(listed, SocketAddr::from(([0, 0, 0, 0], 0))).unwrap();
    let addr = format!("127.0.0.1:{}", server.addr.port());
    for host in ["wick.lan:8080", "10.9.8.7", "[fe80::1]:80", "localhost"] {
        let r = embed_with(&addr, &[("Host", host)]);
        assert_eq!(r.status, 200, "{host}: {}", r.text());
    }
    let r = embed_with(&addr, &[("Host", "evil.example")]);
    assert_eq!(error_of(&r, 403)["code"], "host_not_allowed");
    server.shutdown().unwrap();

    let unlisted = ServerHandle::start(config(), SocketAddr::from(([0, 0, 0, 0], 0))).unwrap();
    let addr = format!("127.0.0.1:{}", unlisted.addr.port());
    let r = embed_with(&addr, &[("Host", "evil.example")]);
    assert_eq!(
        r.status, 200,
        "any Host on a non-loopback bind without --allowed-hosts"
    );
    // The Origin check still holds there.
    let r = embed_with(&addr, &[("Origin", "http://evil.example")]);
    assert_eq!(error_of(&r, 403)["code"], "origin_not_allowed");
}

#[test]
fn malformed_origins_and_hosts_are_refused_at_start() {
    let cases = [
        (
            vec!["http://app.example/".to_string()],
            vec![],
            "--cors-origin",
        ),
        (vec!["app.example".to_string()], vec![], "--cors-origin"),
        (
            vec![],
            vec!["http://wick.lan".to_string()],
            "--allowed-hosts",
        ),
        (vec![], vec![String::new()], "--allowed-hosts"),
    ];
    for (cors_origins, allowed_hosts, flag) in cases {
        let config = ServerConfig {
            cors_origins,
            allowed_hosts,
            ..config()
        };
        let err = ServerHandle::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .err()
            .expect("started with a malformed setting");
        assert!(format!("{err:#}").contains(flag), "{err:#}");
    }
}
