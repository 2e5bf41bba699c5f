//! The server's request bodies: every route's deserialisation and validation
//! (`wick_server::requests::parse_*`), as the handlers call them before touching a model.
//!
//! Input: `route \n body`, route one of `chat`, `completions`, `embeddings`, `adapters` (the
//! seeds are readable requests). Besides "no panic, hang or OOM": an error is a 4xx with a
//! short, non-empty message and field name free of control characters; an accepted request holds
//! the promises its type documents (token budget within the server's limit, logit_bias ids in
//! the vocabulary, at least one message, texts non-empty, a valid adapter name).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wick_server::requests::{
    check_adapter_name, parse_adapter, parse_chat, parse_completion, parse_embeddings, ApiError,
    GenLimits, GenParams, MAX_INPUTS,
};

/// SmolLM2's vocabulary and a small `--max-tokens`, so both limits are reachable.
const LIMITS: GenLimits = GenLimits {
    max_tokens: 512,
    vocab_size: 49152,
};

fn check_error(route: &str, e: &ApiError) {
    assert!(
        e.status.is_client_error(),
        "{route}: status {} for a bad body: {}",
        e.status,
        e.message
    );
    assert!(!e.message.trim().is_empty(), "{route}: empty error message");
    // Client strings are quoted short and escaped (requests::shown): no echoed megabytes, no
    // newlines or terminal escapes for a log line.
    assert!(
        e.message.len() <= 400,
        "{route}: {}-byte message",
        e.message.len()
    );
    assert!(
        !e.message.chars().any(char::is_control),
        "{route}: control character in {:?}",
        e.message
    );
    if let Some(param) = &e.param {
        assert!(param.len() <= 200, "{route}: {}-byte param", param.len());
        assert!(
            !param.chars().any(char::is_control),
            "{route}: param {param:?}"
        );
    }
}

fn check_params(route: &str, p: &GenParams) {
    if let Some(n) = p.max_tokens {
        assert!(
            (1..=LIMITS.max_tokens).contains(&n),
            "{route}: max_tokens {n}"
        );
    }
    for (id, bias) in &p.logit_bias {
        assert!(
            (*id as usize) < LIMITS.vocab_size,
            "{route}: logit_bias id {id}"
        );
        assert!(bias.is_finite(), "{route}: logit_bias {bias}");
    }
    for v in [p.temperature, p.top_p, p.min_p, p.repetition_penalty]
        .into_iter()
        .flatten()
    {
        assert!(v.is_finite() && v >= 0.0, "{route}: sampling value {v}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let (route, body) = (&data[..split], &data[split + 1..]);
    match route {
        b"chat" => match parse_chat(body, &LIMITS) {
            Ok(r) => {
                check_params("chat", &r.params);
                assert!(!r.messages.is_empty(), "chat: no messages accepted");
            }
            Err(e) => check_error("chat", &e),
        },
        b"completions" => match parse_completion(body, &LIMITS) {
            Ok(r) => {
                check_params("completions", &r.params);
                assert!(!r.prompt.is_empty(), "completions: empty prompt accepted");
            }
            Err(e) => check_error("completions", &e),
        },
        b"embeddings" => match parse_embeddings(body) {
            Ok(r) => {
                assert!(
                    (1..=MAX_INPUTS).contains(&r.texts.len()),
                    "embeddings: count"
                );
                assert!(
                    r.texts.iter().all(|t| !t.is_empty()),
                    "embeddings: empty text"
                );
                assert!(
                    r.dimensions.is_none_or(|d| d >= 1),
                    "embeddings: dimensions 0"
                );
            }
            Err(e) => check_error("embeddings", &e),
        },
        b"adapters" => match parse_adapter(body) {
            Ok(r) => {
                assert!(
                    check_adapter_name(&r.name).is_ok(),
                    "adapters: bad name kept"
                );
                assert!(
                    r.path.as_deref() != Some(""),
                    "adapters: empty path accepted"
                );
            }
            Err(e) => check_error("adapters", &e),
        },
        _ => {}
    }
});
