//! Chat templates: the model's jinja `chat_template` (tokenizer_config.json or GGUF metadata)
//! rendered with minijinja the way transformers' `apply_chat_template` renders it.
//!
//! transformers compiles templates with `trim_blocks`, `lstrip_blocks` and loop controls, adds
//! `raise_exception`, `strftime_now` and a `tojson` that does not HTML-escape, and passes
//! `messages`, `add_generation_prompt`, `tools=None`, `documents=None` and the special tokens.
//! Python string methods (`.strip()`, `.startswith()`, ...) come from minijinja-contrib's pycompat.
//!
//! A template comes from a model file, so it is untrusted: every render gets a work budget
//! (minijinja's fuel: one unit per instruction and per 64 bytes of data it creates or writes)
//! that grows with the messages. A template that loops endlessly, or builds far more data than
//! the conversation holds, stops with an error instead of hanging or exhausting memory; minijinja
//! itself bounds recursion (500 calls) and nesting (150 levels).

mod json;
mod python;
mod rewrite;
mod strftime;

use minijinja::value::Serde;
use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

pub use self::strftime::strftime;
use crate::error::{Error, Result};

const NAME: &str = "chat_template";

/// The work budget of a render (in fuel, see the module comment) before the messages' share:
/// about 64 MB of data or a million instructions, a thousand times what real templates need
/// for a short chat.
const BASE_FUEL: u64 = 1_000_000;
/// Fuel per byte of the messages: a template may create 64 bytes of data for each byte it is
/// given (real ones create a few), so long conversations are never cut off.
const FUEL_PER_MESSAGE_BYTE: u64 = 1;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A compiled chat template plus the special tokens it may reference.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// The instant `strftime_now` formats (seconds since the epoch, UTC); `None` reads the clock.
    now: Option<i64>,
}

/// Everything a render gets besides the messages: the other arguments of transformers'
/// `apply_chat_template`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderOptions {
    /// End the prompt where the assistant's reply starts.
    pub add_generation_prompt: bool,
    /// Tool definitions (OpenAI-style JSON schemas: `{"type": "function", "function": {...}}`);
    /// `None` renders as transformers' `tools=None`.
    pub tools: Option<Vec<serde_json::Value>>,
    /// Retrieval documents (`{"title": ..., "text": ...}` objects); `None` is `documents=None`.
    pub documents: Option<Vec<serde_json::Value>>,
    /// Further template variables (`enable_thinking`, `reasoning_effort`, `date_string`, ...):
    /// transformers' extra keyword arguments. Like those, they override the special tokens.
    pub variables: serde_json::Map<String, serde_json::Value>,
}

impl RenderOptions {
    /// Only `add_generation_prompt` set.
    pub fn generation_prompt(add_generation_prompt: bool) -> Self {
        RenderOptions {
            add_generation_prompt,
            ..Default::default()
        }
    }
}

/// Marks an error raised by the template's own `raise_exception` (a problem with the messages,
/// not with the template).
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

impl ChatTemplate {
    /// Compiles `template`; a syntax error is reported here, not at the first render.
    pub fn new(
        template: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| template_error(&e))?,
        );
        python::install(&mut env);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<Value, minijinja::Error> {
                Err(
                    minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
                        .with_source(Raised(message)),
                )
            },
        );
        env.add_filter("tojson", json::tojson);
        env.add_template_owned(NAME, rewrite::rewrite(template))
            .map_err(|e| template_error(&e))?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
            now: None,
        })
    }

    /// Makes `strftime_now` format this instant (seconds since the epoch, UTC) instead of the
    /// current time: for reproducible prompts and tests.
    pub fn with_fixed_time(mut self, epoch_secs: i64) -> Self {
        self.now = Some(epoch_secs);
        self
    }

    /// The prompt text for `messages`; with `add_generation_prompt` it ends where the assistant's
    /// reply starts.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with(
            messages,
            &RenderOptions::generation_prompt(add_generation_prompt),
        )
    }

    /// The prompt text for `messages` (anything that serializes to JSON objects: [`ChatMessage`]s
    /// or OpenAI-style messages with `tool_calls`, `tool_call_id`, `reasoning_content`, content
    /// parts, ...) with tools, documents and further variables, as transformers'
    /// `apply_chat_template` renders them: keys whose value is null are dropped, and a message's
    /// reasoning (`reasoning_content`, `thinking` or `reasoning`) is also given as
    /// `reasoning_content` and `thinking`.
    pub fn render_with<M: Serialize>(
        &self,
        messages: &[M],
        options: &RenderOptions,
    ) -> Result<String> {
        let messages = messages
            .iter()
            .enumerate()
            .map(|(i, m)| normalize_message(i, m))
            .collect::<Result<Vec<_>>>()?;
        let given = serde_json::to_string(&messages).map_or(0, |s| s.len())
            + serde_json::to_string(&options.tools).map_or(0, |s| s.len())
            + serde_json::to_string(&options.documents).map_or(0, |s| s.len());
        let fuel = BASE_FUEL.saturating_add((given as u64).saturating_mul(FUEL_PER_MESSAGE_BYTE));
        // The environment is a handful of Arcs: a clone per render carries this render's budget
        // and clock.
        let mut env = self.env.clone();
        env.set_fuel(Some(fuel));
        let now = self.now;
        env.add_function("strftime_now", move |format: String| {
            strftime(&format, now.unwrap_or_else(strftime::now_utc))
        });
        let template = env.get_template(NAME).map_err(|e| template_error(&e))?;
        let mut ctx: Vec<(String, Value)> = Vec::new();
        // Absent special tokens stay undefined, as in transformers.
        for (key, token) in [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
        ] {
            if let Some(token) = token {
                ctx.push((key.into(), Value::from(token.as_str())));
            }
        }
        for (key, value) in &options.variables {
            ctx.retain(|(k, _)| k != key);
            ctx.push((key.clone(), Value::from(Serde(value))));
        }
        ctx.extend([
            ("messages".into(), Value::from(Serde(&messages))),
            (
                "add_generation_prompt".into(),
                Value::from(options.add_generation_prompt),
            ),
            ("tools".into(), Value::from(Serde(&options.tools))),
            ("documents".into(), Value::from(Serde(&options.documents))),
        ]);
        template
            .render(Value::from_pairs(ctx))
            .map_err(|e| render_error(&e, fuel))
    }
}

/// A message as transformers hands it to the template (`_normalize_chat_messages` and
/// `_alias_reasoning_fields`).
fn normalize_message<M: Serialize>(i: usize, message: &M) -> Result<serde_json::Value> {
    let bad = |why: String| Error::InvalidArgument {
        name: "messages",
        message: format!("message {i}: {why}"),
    };
    let value = serde_json::to_value(message).map_err(|e| bad(e.to_string()))?;
    let serde_json::Value::Object(fields) = value else {
        return Err(bad(format!("a message must be a JSON object, got {value}")));
    };
    let fields: serde_json::Map<String, serde_json::Value> =
        fields.into_iter().filter(|(_, v)| !v.is_null()).collect();
    let reasoning = ["reasoning_content", "thinking", "reasoning"]
        .iter()
        .find_map(|k| fields.get(*k))
        .cloned();
    let Some(reasoning) = reasoning else {
        return Ok(serde_json::Value::Object(fields));
    };
    // Python's `{"thinking": reasoning, **message, "reasoning_content": reasoning}`, key order
    // included.
    let mut aliased = serde_json::Map::new();
    if !fields.contains_key("thinking") {
        aliased.insert("thinking".into(), reasoning.clone());
    }
    aliased.extend(fields);
    aliased.insert("reasoning_content".into(), reasoning);
    Ok(serde_json::Value::Object(aliased))
}

fn template_error(e: &minijinja::Error) -> Error {
    Error::InvalidArgument {
        name: "chat_template",
        message: e.to_string(),
    }
}

fn render_error(e: &minijinja::Error, fuel: u64) -> Error {
    if e.kind() == ErrorKind::OutOfFuel {
        return Error::InvalidArgument {
            name: "chat_template",
            message: format!(
                "rendering stopped: the template used up its work budget ({fuel} steps for these \
                 messages) — it loops without end or builds far more text than the messages hold"
            ),
        };
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(Raised(message)) = s.downcast_ref::<Raised>() {
            return Error::InvalidArgument {
                name: "messages",
                message: format!("the chat template rejected them: {message}"),
            };
        }
        source = s.source();
    }
    template_error(e)
}
