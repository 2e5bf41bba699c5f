//! Request bodies parsed and validated as pure functions, without a loaded model: **the stable
//! entry point for fuzz targets** (`fuzz/`), and the first thing every route handler calls.
//!
//! Each `parse_*` takes the raw body bytes (already within `--max-body-bytes`) and returns the
//! typed request or the one [`ApiError`] the client gets (400 naming the field). What needs the
//! model's facts takes them as a small struct ([`GenLimits`]: the server's token cap and the
//! vocabulary size); what needs the server's state (is this model name served, does the prompt
//! fit the context after tokenizing) is checked by the handler afterwards. These functions never
//! panic on any input; keep it that way (the fuzz targets hold them to it).

mod adapter;
mod chat;
mod completion;
mod embeddings;
mod fields;
mod params;

pub use adapter::{check_adapter_name, parse_adapter, AdapterRequest, MAX_ADAPTER_NAME};
pub use chat::{parse_chat, ChatRequest, CHAT_ROLES};
pub use completion::{parse_completion, CompletionRequest, DEFAULT_COMPLETION_TOKENS};
pub use embeddings::{parse_embeddings, EmbeddingsRequest, MAX_INPUTS};
pub use fields::{shown, type_name, wrong_type, ApiResult, Body};
pub use params::GenParams;

pub use crate::error::ApiError;

/// What validating a chat or completion request needs to know about the server and its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenLimits {
    /// The server's `--max-tokens`: the most tokens one request may ask for.
    pub max_tokens: usize,
    /// Logits per step: every `logit_bias` token id must be below it.
    pub vocab_size: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: GenLimits = GenLimits {
        max_tokens: 100,
        vocab_size: 1000,
    };

    #[test]
    fn well_formed_bodies_parse_into_their_requests() {
        let chat = br#"{"model": "m", "messages": [{"role": "developer", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_completion_tokens": 7, "logit_bias": {"999": -5}, "stream": true}"#;
        let c = parse_chat(chat, &LIMITS).unwrap();
        assert_eq!((c.params.max_tokens, c.params.stream), (Some(7), true));
        assert_eq!(c.params.logit_bias, vec![(999, -5.0)]);
        assert_eq!(c.messages.len(), 2);
        let p = parse_completion(br#"{"model": "m", "prompt": "x"}"#, &LIMITS).unwrap();
        assert_eq!(p.params.max_tokens, Some(DEFAULT_COMPLETION_TOKENS));
        let e = parse_embeddings(br#"{"model": "e", "input": ["a", "b"]}"#).unwrap();
        assert_eq!((e.texts.len(), e.base64), (2, false));
        let a = parse_adapter(br#"{"name": "x", "replace": true}"#).unwrap();
        assert_eq!((a.name.as_str(), a.path, a.replace), ("x", None, true));
    }

    #[test]
    fn model_facts_bound_what_a_request_may_ask() {
        let bias = br#"{"model": "m", "prompt": "x", "logit_bias": {"1000": 1}}"#;
        let err = parse_completion(bias, &LIMITS).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("logit_bias"));
        assert!(err.message.contains("1000"), "{}", err.message);
        let many = br#"{"model": "m", "prompt": "x", "max_tokens": 101}"#;
        let err = parse_completion(many, &LIMITS).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn any_bytes_get_an_error_not_a_panic() {
        let deep = "[".repeat(100_000);
        let inputs: [&[u8]; 8] = [
            b"",
            b"\xff\xfe",
            b"null",
            b"{\"model\": 1e999}",
            b"{\"messages\": {}}",
            b"{\"model\": \"m\", \"messages\": [{\"role\": \"user\"}]}",
            b"{\"model\": \"m\", \"prompt\": \"x\", \"logit_bias\": {\"-1\": 1}}",
            deep.as_bytes(),
        ];
        for bytes in inputs {
            assert!(parse_chat(bytes, &LIMITS).is_err());
            assert!(parse_completion(bytes, &LIMITS).is_err());
            assert!(parse_embeddings(bytes).is_err());
            assert!(parse_adapter(bytes).is_err());
        }
    }

    /// Found by the server_requests fuzz target: unknown keys were quoted back whole and raw.
    #[test]
    fn errors_quote_a_clients_strings_short_and_escaped() {
        let key = "k".repeat(100_000);
        let bodies = [
            format!(r#"{{"model": "m", "prompt": "x", "{key}": 1}}"#),
            format!(r#"{{"model": "m", "prompt": "x", "logprobs": ["{key}"]}}"#),
            format!(
                r#"{{"model": "m", "prompt": "x", "stream": true, "stream_options": {{"{key}": 1}}}}"#
            ),
        ];
        for body in &bodies {
            let err = parse_completion(body.as_bytes(), &LIMITS).unwrap_err();
            assert!(err.message.len() < 200, "{} bytes", err.message.len());
            assert!(err.param.as_ref().is_some_and(|p| p.len() < 100));
            assert!(err.message.contains('…'), "{}", err.message);
        }
        let role = br#"{"model": "m", "messages": [{"role": "a\nb\u001b[31m", "content": "x"}]}"#;
        let err = parse_chat(role, &LIMITS).unwrap_err();
        assert!(err.message.contains(r"a\nb\u{1b}[31m"), "{}", err.message);
        assert!(
            !err.message.chars().any(char::is_control),
            "{}",
            err.message
        );
    }
}
