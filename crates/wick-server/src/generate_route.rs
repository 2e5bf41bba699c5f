//! What `/v1/chat/completions` and `/v1/completions` share once the prompt is tokenized: pick
//! the model or adapter, check the budget against the context, queue the request, and answer
//! with one JSON object or a stream of server-sent events ending with `[DONE]`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::wrappers::ReceiverStream;
use wick::generate::FinishReason;

use crate::error::ApiError;
use crate::generation::{GenEvent, GenSummary, Generator};
use crate::requests::{check_adapter_name, ApiResult, GenLimits, GenParams};
use crate::server::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

impl Kind {
    fn id_prefix(self) -> &'static str {
        match self {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        }
    }
}

/// The generator, or 503 when this server has no generation model.
pub fn generator(state: &AppState) -> ApiResult<&Generator> {
    state.generator.as_ref().ok_or_else(|| {
        ApiError::unavailable("this server has no generation model (start it with --model)")
    })
}

/// What `requests::parse_chat` / `parse_completion` check against on this server.
pub fn gen_limits(state: &AppState, gen: &Generator) -> GenLimits {
    GenLimits {
        max_tokens: state.limits.max_tokens,
        vocab_size: gen.vocab_size,
    }
}

/// None for the base model, Some(adapter) for an adapter name; an adapter not loaded yet is
/// looked up in the adapters folder and loaded (so a freshly trained one needs no restart),
/// if its name is one an adapter may have.
pub async fn resolve_adapter(state: &AppState, model: &str) -> ApiResult<Option<String>> {
    let gen = generator(state)?;
    if model == gen.name {
        return Ok(None);
    }
    if gen.has_adapter(model) {
        return Ok(Some(model.to_string()));
    }
    let usable = check_adapter_name(model).is_ok() && !state.is_model_name(model);
    if let Some(dir) = gen.adapter_paths.by_name(model).filter(|_| usable) {
        match gen.load_adapter(model, dir, false).await {
            Ok(()) => return Ok(Some(model.to_string())),
            // Another request loaded it first.
            Err(e) if e.code == Some("adapter_exists") => return Ok(Some(model.to_string())),
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::model_not_found(model, &state.model_names()))
}

/// Queues the request and answers it (JSON, or SSE when `params.stream`).
pub async fn respond(
    state: Arc<AppState>,
    kind: Kind,
    params: GenParams,
    prompt: Vec<u32>,
) -> ApiResult<Response> {
    let adapter = resolve_adapter(&state, &params.model).await?;
    let gen = generator(&state)?;
    let max_tokens = budget(gen, &params, prompt.len(), state.limits.max_tokens)?;
    let config = params.config(&gen.defaults, max_tokens);
    config.validate()?;
    let events = gen.submit(prompt, config, adapter)?;
    let reply = Reply {
        id: format!("{}-{}", kind.id_prefix(), next_id()),
        created: now_secs(),
        model: params.model.clone(),
        kind,
    };
    if params.stream {
        Ok(stream(state, reply, events, params.include_usage).into_response())
    } else {
        collect(&state, reply, events).await
    }
}

/// Tokens to generate: as asked if it fits, else the context's room (capped by the server).
fn budget(gen: &Generator, params: &GenParams, prompt: usize, limit: usize) -> ApiResult<usize> {
    let room = gen.context.saturating_sub(prompt);
    if room == 0 {
        return Err(ApiError::context_overflow(format!(
            "the prompt has {prompt} tokens; the model's context is {} tokens",
            gen.context
        )));
    }
    // `requests` has already held max_tokens to the server's limit.
    match params.max_tokens {
        Some(n) if n > room => Err(ApiError::context_overflow(format!(
            "the prompt ({prompt} tokens) plus max_tokens ({n}) exceed the model's context of {} \
             tokens",
            gen.context
        ))),
        Some(n) => Ok(n),
        None => Ok(room.min(limit)),
    }
}

struct Reply {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

impl Reply {
    fn chunk(&self, text: Option<&str>, finish: Option<FinishReason>, first: bool) -> Value {
        let finish = finish.map(finish_reason);
        let choice = match self.kind {
            Kind::Chat => {
                let delta = match (first, text) {
                    (true, _) => json!({"role": "assistant", "content": ""}),
                    (false, Some(t)) => json!({"content": t}),
                    (false, None) => json!({}),
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Completion => json!({
                "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish
            }),
        };
        json!({
            "id": self.id,
            "object": match self.kind {
                Kind::Chat => "chat.completion.chunk",
                Kind::Completion => "text_completion",
            },
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [choice],
        })
    }

    fn whole(&self, text: String, summary: &GenSummary) -> Value {
        let finish = finish_reason(summary.finish_reason);
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish,
            }),
            Kind::Completion => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": finish
            }),
        };
        json!({
            "id": self.id,
            "object": match self.kind {
                Kind::Chat => "chat.completion",
                Kind::Completion => "text_completion",
            },
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [choice],
            "usage": usage(summary),
        })
    }
}

fn usage(s: &GenSummary) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "total_tokens": s.prompt_tokens + s.completion_tokens,
    })
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

async fn collect(
    state: &AppState,
    reply: Reply,
    mut events: UnboundedReceiver<GenEvent>,
) -> ApiResult<Response> {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            GenEvent::Delta(piece) => text.push_str(&piece),
            GenEvent::Done(summary) => {
                state
                    .metrics
                    .add_generation_tokens(summary.prompt_tokens, summary.completion_tokens);
                return Ok(Json(reply.whole(text, &summary)).into_response());
            }
            GenEvent::Failed(message) => return Err(ApiError::internal(message)),
        }
    }
    Err(ApiError::unavailable("the generation engine stopped"))
}

/// Forwards engine events as SSE chunks. When the client goes away hyper drops the response
/// body, the channel to it closes, and this task ends at once (without waiting for the next
/// event, which a queued request would not get) and drops the engine's receiver: that cancels
/// the generation, queued or running.
fn stream(
    state: Arc<AppState>,
    reply: Reply,
    mut events: UnboundedReceiver<GenEvent>,
    include_usage: bool,
) -> Sse<ReceiverStream<Result<Event, Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        let send = |value: Value| {
            let tx = tx.clone();
            async move {
                tx.send(Ok(Event::default().data(value.to_string())))
                    .await
                    .is_ok()
            }
        };
        if reply.kind == Kind::Chat && !send(reply.chunk(None, None, true)).await {
            return;
        }
        loop {
            let event = tokio::select! {
                biased;
                () = tx.closed() => return,
                event = events.recv() => event,
            };
            let ok = match event {
                Some(GenEvent::Delta(piece)) => send(reply.chunk(Some(&piece), None, false)).await,
                Some(GenEvent::Done(summary)) => {
                    state
                        .metrics
                        .add_generation_tokens(summary.prompt_tokens, summary.completion_tokens);
                    let last = reply.chunk(None, Some(summary.finish_reason), false);
                    if send(last).await && include_usage {
                        let mut chunk = reply.chunk(None, None, false);
                        chunk["choices"] = json!([]);
                        chunk["usage"] = usage(&summary);
                        send(chunk).await;
                    }
                    break;
                }
                Some(GenEvent::Failed(message)) => {
                    send(ApiError::internal(message).body()).await;
                    break;
                }
                None => {
                    send(ApiError::unavailable("the generation engine stopped").body()).await;
                    break;
                }
            };
            if !ok {
                return;
            }
        }
        let _ = tx.send(Ok(Event::default().data("[DONE]"))).await;
    });
    Sse::new(ReceiverStream::new(rx))
}

fn next_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{n:06x}", now_secs())
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
