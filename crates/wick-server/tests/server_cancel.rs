//! Clients that hang up give their place back at once, wherever their request is: queued ones
//! leave the queue without being prefilled, running ones stop at the next decode step, streamed
//! or not. A server with one running place makes it visible: while a live stream holds that
//! place, requests queued behind it whose clients hang up must be cancelled from the queue (on a
//! server that only noticed them when their turn came, they would wait for the stream to end and
//! then be prefilled one by one). Counted by the server's own metrics; no timing.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use testkit::http::{open, read_head};
use wick_server::{ServerConfig, ServerHandle};

const STREAMED_DEAD: usize = 6;
const UNSTREAMED_DEAD: usize = 2;

fn body(max_tokens: usize, stream: bool) -> Vec<u8> {
    json!({
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "Write a very long story about a lighthouse."}],
        "max_tokens": max_tokens,
        "temperature": 0.9,
        "seed": 5,
        "stream": stream,
        // No end-of-text token (SmolLM2's 0 and 2), so the holder keeps its place until dropped.
        "logit_bias": {"0": -100, "2": -100},
    })
    .to_string()
    .into_bytes()
}

fn metrics(addr: &str) -> String {
    get(addr, "/metrics", None).text()
}

fn cancelled(addr: &str, stage: &str) -> f64 {
    metric(
        &metrics(addr),
        &format!("wick_generations_cancelled_total{{stage=\"{stage}\"}}"),
    )
}

fn queue_depth(addr: &str) -> f64 {
    metric(&metrics(addr), "wick_queue_depth{engine=\"generation\"}")
}

/// Waits (up to a generous safety limit, never a speed assertion) until `done`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool, status: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "gave up waiting: {what}; {}",
            status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Opens a streamed chat and reads up to its first `data:` line (the role chunk, which a queued
/// request gets at once) or its first content chunk.
fn open_stream(addr: &str, max_tokens: usize, until_content: bool) -> BufReader<TcpStream> {
    let stream = open(
        addr,
        "POST",
        "/v1/chat/completions",
        &[],
        &body(max_tokens, true),
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(read_head(&mut reader).unwrap().0, 200);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended early"
        );
        let content = line.contains("\"content\":\"") && !line.contains("\"content\":\"\"");
        if line.starts_with("data:") && (!until_content || content) {
            return reader;
        }
    }
}

#[test]
fn hung_up_requests_leave_the_queue_at_once_and_a_live_one_runs() {
    let config = ServerConfig {
        model: Some(gguf().to_str().unwrap().into()),
        model_name: Some(MODEL_NAME.into()),
        max_running: 1,
        queue_size: 64,
        ..Default::default()
    };
    let server = ServerHandle::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = server.addr.to_string();
    let status = || {
        format!(
            "queue depth {}, cancelled queued {}, running {}",
            queue_depth(&addr),
            cancelled(&addr, "queued"),
            cancelled(&addr, "running")
        )
    };

    // A live stream holds the only running place for far longer than this test needs.
    let holder = open_stream(&addr, 2000, true);
    // Non-streamed requests queue behind it; their clients then hang up.
    let unstreamed: Vec<TcpStream> = (0..UNSTREAMED_DEAD)
        .map(|_| {
            open(
                &addr,
                "POST",
                "/v1/chat/completions",
                &[],
                &body(200, false),
            )
            .unwrap()
        })
        .collect();
    wait_until(
        "the unstreamed requests are queued",
        || queue_depth(&addr) >= UNSTREAMED_DEAD as f64,
        status,
    );
    // Streamed ones queue too, and their clients hang up at the first chunk.
    let streamed: Vec<_> = (0..STREAMED_DEAD)
        .map(|_| open_stream(&addr, 200, false))
        .collect();
    assert!(queue_depth(&addr) >= 1.0, "{}", status());
    drop(unstreamed);
    drop(streamed);

    let dead = (STREAMED_DEAD + UNSTREAMED_DEAD) as f64;
    wait_until(
        "hung-up requests are cancelled while still queued",
        || cancelled(&addr, "queued") >= dead && queue_depth(&addr) == 0.0,
        status,
    );
    assert_eq!(cancelled(&addr, "running"), 0.0, "{}", status());

    // The holder hangs up mid-stream: cancelled at the next decode step.
    drop(holder);
    wait_until(
        "the running stream is cancelled",
        || cancelled(&addr, "running") >= 1.0,
        status,
    );

    // A live request now runs at once and in full; none of the dead was ever admitted.
    let live = json!({"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 3, "temperature": 0});
    let r = post(&addr, "/v1/completions", None, &live);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["completion_tokens"], 3);
    assert_eq!(cancelled(&addr, "queued"), dead, "{}", status());
    assert_eq!(cancelled(&addr, "running"), 1.0, "{}", status());
    let m = metrics(&addr);
    assert_eq!(
        metric(&m, "wick_tokens_out_total{kind=\"completion\"}"),
        3.0,
        "{m}"
    );

    // A running request that is not streamed is cancelled when its client hangs up too.
    let running = open(
        &addr,
        "POST",
        "/v1/chat/completions",
        &[],
        &body(2000, false),
    )
    .unwrap();
    let steps = |m: &str| metric(m, "wick_batch_size_count{engine=\"generation\"}");
    let before = steps(&metrics(&addr));
    wait_until(
        "the unstreamed request is decoding",
        || steps(&metrics(&addr)) > before + 2.0,
        status,
    );
    drop(running);
    wait_until(
        "the running unstreamed request is cancelled",
        || cancelled(&addr, "running") >= 2.0,
        status,
    );
    let m = metrics(&addr);
    assert_eq!(
        metric(&m, "wick_tokens_out_total{kind=\"completion\"}"),
        3.0,
        "{m}"
    );
    server.shutdown().unwrap();
}
