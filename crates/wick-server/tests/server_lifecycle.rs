//! Backpressure and shutdown with a deliberately small server (one running sequence, one
//! queue place): a full queue answers 429 with Retry-After, and shutting down lets an
//! in-flight stream finish before the server stops.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use testkit::http::{open, read_head};
use wick_server::{ServerConfig, ServerHandle};

fn small_server() -> ServerHandle {
    let config = ServerConfig {
        model: Some(gguf().to_str().unwrap().into()),
        model_name: Some(MODEL_NAME.into()),
        max_running: 1,
        queue_size: 1,
        ..Default::default()
    };
    ServerHandle::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap()
}

fn stream_body(max_tokens: usize) -> String {
    json!({
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
        "max_tokens": max_tokens,
        "temperature": 0.9,
        "seed": 3,
        "stream": true,
    })
    .to_string()
}

/// Reads SSE lines until the first one carrying content.
fn wait_for_content(reader: &mut impl BufRead) {
    let mut line = String::new();
    while !line.contains("\"content\":\"") || line.contains("\"content\":\"\"") {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended early"
        );
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn full_queue_gets_429_and_shutdown_drains_in_flight_streams() {
    let server = small_server();
    let addr = server.addr.to_string();

    // A occupies the only running place...
    let a = open(
        &addr,
        "POST",
        "/v1/chat/completions",
        &[],
        stream_body(200).as_bytes(),
    )
    .unwrap();
    let mut a = BufReader::new(a);
    assert_eq!(read_head(&mut a).unwrap().0, 200);
    wait_for_content(&mut a);
    // ...B takes the only queue place...
    let b_addr = addr.clone();
    let b = std::thread::spawn(move || {
        let body =
            json!({"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 3, "temperature": 0});
        post(&b_addr, "/v1/completions", None, &body)
    });
    wait_until("B is queued", || {
        metric(
            &get(&addr, "/metrics", None).text(),
            "wick_queue_depth{engine=\"generation\"}",
        ) >= 1.0
    });
    // ...so C is turned away with Retry-After.
    let c = post(
        &addr,
        "/v1/completions",
        None,
        &json!({"model": MODEL_NAME, "prompt": "Hi", "max_tokens": 3}),
    );
    assert_eq!(c.status, 429, "{}", c.text());
    assert_eq!(c.header("retry-after"), Some("1"));
    assert_eq!(c.json()["error"]["code"], "queue_full");

    // Hanging up A frees the place; B runs.
    drop(a);
    let b = b.join().unwrap();
    assert_eq!(b.status, 200, "{}", b.text());
    assert_eq!(b.json()["usage"]["completion_tokens"], 3);

    // A stream in flight when shutdown starts still ends with [DONE].
    let d = open(
        &addr,
        "POST",
        "/v1/chat/completions",
        &[],
        stream_body(40).as_bytes(),
    )
    .unwrap();
    let mut d = BufReader::new(d);
    assert_eq!(read_head(&mut d).unwrap().0, 200);
    wait_for_content(&mut d);
    let stopper = std::thread::spawn(move || server.shutdown());
    let mut rest = String::new();
    let mut line = String::new();
    while d.read_line(&mut line).unwrap() > 0 {
        rest.push_str(&line);
        line.clear();
    }
    assert!(rest.contains("\"finish_reason\":\"length\""), "{rest}");
    assert!(
        rest.trim_end().ends_with("data: [DONE]") || rest.contains("data: [DONE]"),
        "{rest}"
    );
    stopper.join().unwrap().unwrap();
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the port is closed after shutdown"
    );
}
