//! The server over real TCP on loopback with the real models: OpenAI-format answers that equal
//! the library's own generations and embeddings, streaming, continuous batching, adapters by
//! name (loaded at start and hot-loaded), auth, metrics, client disconnects, and bad input
//! that gets one clear error while the server keeps serving. One server for the whole file.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use testkit::compare::assert_close;
use testkit::http::{open, read_head};
use wick::candle_core::{DType, Device};
use wick::embed::{EmbedOptions, Embedder};
use wick::io::ModelFiles;
use wick_server::{ServerConfig, ServerHandle};

const KEY: &str = "test-key";
const BODY_LIMIT: usize = 64 * 1024;

struct Fixture {
    server: ServerHandle,
    addr: String,
    adapters: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let adapters = tempfile::tempdir().unwrap();
        write_adapter(&adapters.path().join("at-start"), 0.0);
        let config = ServerConfig {
            model: Some(gguf().to_str().unwrap().into()),
            model_name: Some(MODEL_NAME.into()),
            embedding_model: Some(embedding_model().to_str().unwrap().into()),
            embedding_model_name: Some(EMBED_NAME.into()),
            adapters_dir: Some(adapters.path().to_path_buf()),
            api_key: Some(KEY.into()),
            max_body_bytes: BODY_LIMIT,
            max_tokens: 256,
            ..Default::default()
        };
        let server = ServerHandle::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = server.addr.to_string();
        Fixture {
            server,
            addr,
            adapters,
        }
    })
}

fn chat_body(model: &str, user: &str, max_tokens: usize) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": user}],
        "temperature": 0,
        "max_tokens": max_tokens,
    })
}

#[test]
fn chat_equals_the_library_and_streaming_sends_the_same_text() {
    let f = fixture();
    let user = "What is the capital of France?";
    let expected = reference_chat(user, 24, None);
    let r = post(
        &f.addr,
        "/v1/chat/completions",
        Some(KEY),
        &chat_body(MODEL_NAME, user, 24),
    );
    let body = r.json();
    let answer = chat_text(&r);
    expected.assert_matches("chat", &answer);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], MODEL_NAME);
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5);
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );

    let mut streamed = chat_body(MODEL_NAME, user, 24);
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let r = post(&f.addr, "/v1/chat/completions", Some(KEY), &streamed);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let events = r.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    // The same request on the same server runs the same arithmetic: equal to the last byte.
    assert_eq!(text, answer, "streamed and not");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(finish.len(), 1, "one chunk carries the finish reason");
    assert_eq!(chunks.last().unwrap()["usage"], body["usage"]);
}

#[test]
fn completions_stop_strings_and_length() {
    let f = fixture();
    let body =
        json!({"model": MODEL_NAME, "prompt": "1, 2, 3, 4,", "max_tokens": 12, "temperature": 0});
    let r = post(&f.addr, "/v1/completions", Some(KEY), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    let text = v["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(text.starts_with(" 5, 6"), "{text:?}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 12);

    let mut with_stop = body.clone();
    with_stop["stop"] = json!(", 7");
    let r = post(&f.addr, "/v1/completions", Some(KEY), &with_stop);
    let v = r.json();
    assert_eq!(v["choices"][0]["text"], " 5, 6");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[test]
fn embeddings_equal_the_library_as_floats_and_base64() {
    let f = fixture();
    let texts = [
        "A man is eating food.",
        "Ein Mann isst.",
        "The quick brown fox jumps over the lazy dog again and again.",
    ];
    let files = ModelFiles::resolve(embedding_model().to_str().unwrap()).unwrap();
    let embedder = Embedder::load(&files, &Device::Cpu, DType::F32, None).unwrap();
    let opts = EmbedOptions {
        batch_size: 32,
        ..Default::default()
    };
    let expected = embedder.embed(&texts, &opts).unwrap();

    let r = post(
        &f.addr,
        "/v1/embeddings",
        Some(KEY),
        &json!({"model": EMBED_NAME, "input": texts}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["index"], i);
        let got: Vec<f32> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_close(&format!("embedding {i}"), &got, &expected[i], 1e-5, 1e-4);
    }
    let counts: usize = embedder.token_counts(&texts).unwrap().iter().sum();
    assert_eq!(v["usage"]["prompt_tokens"], counts);

    let r = post(
        &f.addr,
        "/v1/embeddings",
        Some(KEY),
        &json!({"model": EMBED_NAME, "input": texts[0], "encoding_format": "base64"}),
    );
    let v = r.json();
    let b64 = v["data"][0]["embedding"].as_str().unwrap();
    let bytes = decode_base64(b64);
    let got: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_close("base64 embedding", &got, &expected[0], 1e-5, 1e-4);
}

fn decode_base64(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = alphabet.iter().position(|&a| a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[test]
fn concurrent_chats_are_decoded_together_and_equal_sequential_ones() {
    let f = fixture();
    let prompts = [
        "Name a fruit.",
        "Count to five.",
        "What is 2+2?",
        "Say hello in French.",
    ];
    let sequential: Vec<String> = prompts
        .iter()
        .map(|p| {
            chat_text(&post(
                &f.addr,
                "/v1/chat/completions",
                Some(KEY),
                &chat_body(MODEL_NAME, p, 32),
            ))
        })
        .collect();
    let before = get(&f.addr, "/metrics", Some(KEY)).text();
    let concurrent: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                s.spawn(move || {
                    chat_text(&post(
                        &f.addr,
                        "/v1/chat/completions",
                        Some(KEY),
                        &chat_body(MODEL_NAME, p, 32),
                    ))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Batched decode rounds differently from one sequence at a time: compare where decided.
    for ((p, alone), together) in prompts.iter().zip(&sequential).zip(&concurrent) {
        let reference = reference_chat(p, 32, None);
        reference.assert_matches(&format!("{p:?} alone"), alone);
        reference.assert_matches(&format!("{p:?} batched"), together);
    }
    // Some decode steps ran more than one sequence: steps of size 1 grew less than all steps.
    let after = get(&f.addr, "/metrics", Some(KEY)).text();
    let series = |t: &str, le: &str| {
        metric(
            t,
            &format!("wick_batch_size_bucket{{engine=\"generation\",le=\"{le}\"}}"),
        )
    };
    let single = series(&after, "1") - series(&before, "1");
    let all = series(&after, "+Inf") - series(&before, "+Inf");
    assert!(
        all > single,
        "no multi-sequence decode step: {single} of {all} steps had one sequence"
    );
}

#[test]
fn adapters_by_name_at_start_and_hot_loaded_equal_the_library() {
    let f = fixture();
    let user = "Tell me about the sea.";
    let base = reference_chat(user, 20, None);
    let start_dir = f.adapters.path().join("at-start");
    let with_start = reference_chat(user, 20, Some(&start_dir));
    let first_change = base
        .token_ids
        .iter()
        .zip(&with_start.token_ids)
        .position(|(a, b)| a != b);
    assert!(
        first_change.is_some_and(|i| i < base.decided.min(with_start.decided)),
        "the test adapter must change a decided token"
    );

    // Dropped into the watched folder after start: found by name on first use.
    let dropped = f.adapters.path().join("dropped-later");
    write_adapter(&dropped, 1.0);
    let with_dropped = reference_chat(user, 20, Some(&dropped));
    // Loaded through the API from a path inside the folder (relative to it).
    let nested = f.adapters.path().join("runs").join("posted-source");
    write_adapter(&nested, 2.0);
    let r = post(
        &f.addr,
        "/v1/adapters",
        Some(KEY),
        &json!({"name": "posted", "path": "runs/posted-source"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let with_posted = reference_chat(user, 20, Some(&nested));

    // All four at once: each request decodes with its own adapter.
    let cases = [
        (MODEL_NAME, &base),
        ("at-start", &with_start),
        ("dropped-later", &with_dropped),
        ("posted", &with_posted),
    ];
    std::thread::scope(|s| {
        for (model, expected) in cases {
            s.spawn(move || {
                let r = post(
                    &f.addr,
                    "/v1/chat/completions",
                    Some(KEY),
                    &chat_body(model, user, 20),
                );
                expected.assert_matches(&format!("model {model}"), &chat_text(&r));
            });
        }
    });
    let models = get(&f.addr, "/v1/models", Some(KEY)).json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in [
        MODEL_NAME,
        EMBED_NAME,
        "at-start",
        "dropped-later",
        "posted",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let bad = post(
        &f.addr,
        "/v1/adapters",
        Some(KEY),
        &json!({"name": "nothing", "path": "nonexistent"}),
    );
    assert_eq!(error_of(&bad, 400)["param"], "path");
    let outside = post(
        &f.addr,
        "/v1/adapters",
        Some(KEY),
        &json!({"name": "nothing", "path": "/nonexistent"}),
    );
    assert_eq!(error_of(&outside, 403)["code"], "adapter_path_not_allowed");
}

#[test]
fn api_key_is_required_except_for_health() {
    let f = fixture();
    let body = json!({"model": EMBED_NAME, "input": "hi"});
    for key in [None, Some("wrong")] {
        let r = post(&f.addr, "/v1/embeddings", key, &body);
        assert_eq!(error_of(&r, 401)["code"], "invalid_api_key");
        assert_eq!(get(&f.addr, "/v1/models", key).status, 401);
    }
    assert_eq!(
        post(&f.addr, "/v1/embeddings", Some(KEY), &body).status,
        200
    );
    let health = get(&f.addr, "/health", None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
}

#[test]
fn bad_input_gets_one_clear_error_and_the_server_keeps_serving() {
    let f = fixture();
    let chat = "/v1/chat/completions";
    let ok = chat_body(MODEL_NAME, "Hi", 4);
    let with = |field: &str, value: Value| {
        let mut b = ok.clone();
        b[field] = value;
        b
    };
    let r = raw_post(
        &f.addr,
        chat,
        Some(KEY),
        b"{\"model\": \"smollm2\", \"messages\": [",
    );
    assert_eq!(error_of(&r, 400)["code"], "invalid_json");
    let r = raw_post(&f.addr, chat, Some(KEY), b"[1, 2]");
    assert_eq!(error_of(&r, 400)["code"], "invalid_json");

    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with("temperature", json!("hot")),
            "temperature",
            "must be a number",
        ),
        (
            with("temperature", json!(7)),
            "temperature",
            "between 0 and 2",
        ),
        (with("max_tokens", json!(-5)), "max_tokens", "at least 1"),
        (
            with("max_tokens", json!(100000)),
            "max_tokens",
            "at most 256",
        ),
        (with("n", json!(2)), "n", "unsupported"),
        (
            with("messages", json!("hello")),
            "messages",
            "must be an array",
        ),
        (with("messages", json!([])), "messages", "must not be empty"),
        (
            with("messages", json!([{"role": "user", "content": 5}])),
            "messages[0].content",
            "must be a string",
        ),
        (
            with("messages", json!([{"role": "wizard", "content": "x"}])),
            "messages[0].role",
            "unsupported",
        ),
        (with("stop", json!(["a", 3])), "stop[1]", "must be a string"),
        (
            with("tools", json!([{"type": "function"}])),
            "tools",
            "unsupported",
        ),
        (with("logprobs", json!(true)), "logprobs", "unsupported"),
        (
            with("stream_options", json!({"include_usage": true})),
            "stream_options",
            "only allowed with",
        ),
        (with("frobnicate", json!(1)), "frobnicate", "unrecognized"),
        (
            with("logit_bias", json!({"99999999": 1})),
            "logit_bias",
            "99999999",
        ),
    ];
    for (body, param, needle) in cases {
        let err = error_of(&post(&f.addr, chat, Some(KEY), &body), 400);
        assert_eq!(err["param"], param, "{err}");
        assert!(
            err["message"].as_str().unwrap().contains(needle),
            "{param}: {err}"
        );
    }
    let err = error_of(
        &post(&f.addr, chat, Some(KEY), &with("model", json!("gpt-7"))),
        404,
    );
    assert_eq!(
        (err["param"].as_str(), err["code"].as_str()),
        (Some("model"), Some("model_not_found"))
    );
    let err = error_of(
        &post(&f.addr, chat, Some(KEY), &with("model", json!("../etc"))),
        404,
    );
    assert_eq!(err["code"], "model_not_found");

    let long = "word ".repeat(12_000);
    let err = error_of(
        &post(
            &f.addr,
            chat,
            Some(KEY),
            &chat_body(MODEL_NAME, &long[..60_000], 4),
        ),
        400,
    );
    assert_eq!(err["code"], "context_length_exceeded");
    let huge = vec![b' '; BODY_LIMIT + 1];
    let err = error_of(&raw_post(&f.addr, chat, Some(KEY), &huge), 413);
    assert_eq!(err["code"], "request_too_large");

    let emb = "/v1/embeddings";
    let err = error_of(
        &post(
            &f.addr,
            emb,
            Some(KEY),
            &json!({"model": EMBED_NAME, "input": [1, 2]}),
        ),
        400,
    );
    assert_eq!(err["param"], "input[0]");
    let err = error_of(
        &post(
            &f.addr,
            emb,
            Some(KEY),
            &json!({"model": EMBED_NAME, "input": ""}),
        ),
        400,
    );
    assert_eq!(err["param"], "input");
    let err = error_of(
        &post(
            &f.addr,
            emb,
            Some(KEY),
            &json!({"model": EMBED_NAME, "input": "x", "dimensions": 3}),
        ),
        400,
    );
    assert_eq!(err["param"], "dimensions");
    let err = error_of(
        &post(
            &f.addr,
            emb,
            Some(KEY),
            &json!({"model": MODEL_NAME, "input": "x"}),
        ),
        404,
    );
    assert_eq!(err["param"], "model");
    let err = error_of(
        &post(
            &f.addr,
            "/v1/completions",
            Some(KEY),
            &json!({"model": MODEL_NAME, "prompt": [1, 2]}),
        ),
        400,
    );
    assert_eq!(err["param"], "prompt");
    assert_eq!(
        error_of(&get(&f.addr, "/v2/nothing", Some(KEY)), 404)["code"],
        "unknown_url"
    );

    // Still serving, and every rejection was counted by route and status.
    assert!(!chat_text(&post(&f.addr, chat, Some(KEY), &ok)).is_empty());
    let m = get(&f.addr, "/metrics", Some(KEY)).text();
    assert!(
        metric(
            &m,
            "wick_requests_total{route=\"/v1/chat/completions\",status=\"400\"}"
        ) >= 16.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "wick_requests_total{route=\"/v1/chat/completions\",status=\"413\"}"
        ) >= 1.0
    );
    assert!(metric(&m, "wick_tokens_out_total{kind=\"completion\"}") >= 1.0);
    assert!(m.contains(
        "wick_request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"+Inf\"}"
    ));
    assert!(m.contains("wick_queue_depth{engine=\"generation\"} "));
}

#[test]
fn a_client_that_hangs_up_cancels_its_generation() {
    let f = fixture();
    let cancelled = || {
        metric(
            &get(&f.addr, "/metrics", Some(KEY)).text(),
            "wick_generations_cancelled_total{stage=\"running\"}",
        )
    };
    let before = cancelled();
    let mut body = chat_body(MODEL_NAME, "Write a very long story about a dragon.", 256);
    body["stream"] = json!(true);
    body["temperature"] = json!(0.8);
    body["seed"] = json!(1);
    let auth = format!("Bearer {KEY}");
    let stream = open(
        &f.addr,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", &auth)],
        body.to_string().as_bytes(),
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let (status, _) = read_head(&mut reader).unwrap();
    assert_eq!(status, 200);
    let mut line = String::new();
    while !line.contains("\"content\":\"") || line.contains("\"content\":\"\"") {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    drop(reader); // hang up mid-stream
    let deadline = Instant::now() + Duration::from_secs(120);
    while cancelled() <= before {
        assert!(
            Instant::now() < deadline,
            "the generation was not cancelled"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = &f.server;
}
