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

use minijinja::value::{Kwargs, Serde, ValueKind};
use minijinja::{Environment, ErrorKind, State, Value};
use serde::{Deserialize, Serialize};

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
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<Value, minijinja::Error> {
                Err(
                    minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
                        .with_source(Raised(message)),
                )
            },
        );
        env.add_function("strftime_now", |format: String| {
            strftime(&format, now_utc())
        });
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, rewrite_generation_tags(template))
            .map_err(|e| template_error(&e))?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
        })
    }

    /// The prompt text for `messages`; with `add_generation_prompt` it ends where the assistant's
    /// reply starts.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let given: usize = messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .sum();
        let fuel = BASE_FUEL.saturating_add((given as u64).saturating_mul(FUEL_PER_MESSAGE_BYTE));
        // The environment is a handful of Arcs: a clone per render carries this render's budget.
        let mut env = self.env.clone();
        env.set_fuel(Some(fuel));
        let template = env.get_template(NAME).map_err(|e| template_error(&e))?;
        let mut ctx = vec![
            ("messages", Value::from(Serde(messages))),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
        ];
        // Absent special tokens stay undefined, as in transformers.
        for (key, token) in [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
        ] {
            if let Some(token) = token {
                ctx.push((key, Value::from(token.as_str())));
            }
        }
        template
            .render(Value::from_pairs(ctx))
            .map_err(|e| render_error(&e, fuel))
    }
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

/// `{% generation %}` marks assistant text for training masks in transformers; as markup it
/// is a no-op, so it becomes `{% if true %}` (keeping its whitespace control) for minijinja.
fn rewrite_generation_tags(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        // The closing `%}` comes after the opening `{%` (in `{%}` they overlap).
        let Some(end) = tag[2..].find("%}").map(|i| i + 2) else {
            break;
        };
        let inner = &tag[2..end];
        let word = inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        let replaced = match word {
            "generation" => inner.replacen("generation", "if true", 1),
            "endgeneration" => inner.replacen("endgeneration", "endif", 1),
            _ => inner.to_string(),
        };
        out.push_str("{%");
        out.push_str(&replaced);
        out.push_str("%}");
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// transformers' `tojson`: Python `json.dumps` with `ensure_ascii=False` and no HTML escaping.
fn tojson(
    state: &State,
    value: &Value,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be a pair of strings",
            ))
        }
        // Python drops the space after ',' when indenting (the newline follows).
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let value = if sort_keys.unwrap_or(false) {
        sorted_keys(value)
    } else {
        value.clone()
    };
    let mut out = Charged {
        state,
        bytes: Vec::new(),
        uncharged: 0,
        out_of_fuel: None,
    };
    let formatter = PyFormatter {
        indent,
        item_sep: &item_sep,
        key_sep: &key_sep,
        level: 0,
        has_value: false,
    };
    let written = value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out, formatter,
    ));
    if let Some(e) = out.out_of_fuel.take() {
        return Err(e);
    }
    written.map_err(|e| minijinja::Error::new(ErrorKind::BadSerialization, e.to_string()))?;
    let json = String::from_utf8_lossy(&out.bytes);
    if !ensure_ascii.unwrap_or(false) {
        return Ok(Value::from(json.into_owned()));
    }
    // Non-ASCII only occurs inside JSON strings, where \uXXXX escapes are valid.
    let mut escaped = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            escaped.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                escaped.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    Ok(Value::from(escaped))
}

/// A buffer that charges the render's fuel as it fills, so a huge indent or value stops at the
/// budget instead of being built first.
struct Charged<'a, 'env> {
    state: &'a State<'a, 'env>,
    bytes: Vec<u8>,
    uncharged: usize,
    out_of_fuel: Option<minijinja::Error>,
}

impl std::io::Write for Charged<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.uncharged += buf.len();
        if self.uncharged >= 4096 {
            if let Err(e) = self.state.consume_fuel((self.uncharged / 64) as u64) {
                self.out_of_fuel = Some(e);
                return Err(std::io::Error::other("out of fuel"));
            }
            self.uncharged %= 64;
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A copy of `value` with every map's keys in sorted order (`sort_keys=True`).
fn sorted_keys(value: &Value) -> Value {
    match value.kind() {
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter().map(|it| it.collect()).unwrap_or_default();
            keys.sort();
            let pairs: Vec<(Value, Value)> = keys
                .into_iter()
                .map(|k| {
                    let v = value.get_item(&k).unwrap_or_default();
                    (k, sorted_keys(&v))
                })
                .collect();
            Value::from_pairs(pairs)
        }
        ValueKind::Seq => match value.try_iter() {
            Ok(items) => items.map(|v| sorted_keys(&v)).collect(),
            Err(_) => value.clone(),
        },
        _ => value.clone(),
    }
}

/// serde_json output in Python's `json.dumps` layout: configurable separators, and with an
/// indent one item per line (empty containers stay `[]` / `{}`).
struct PyFormatter<'a> {
    indent: Option<usize>,
    item_sep: &'a str,
    key_sep: &'a str,
    level: usize,
    has_value: bool,
}

type IoResult = std::io::Result<()>;

impl PyFormatter<'_> {
    fn newline<W: ?Sized + std::io::Write>(&self, w: &mut W) -> IoResult {
        if let Some(width) = self.indent {
            w.write_all(b"\n")?;
            // In pieces: the writer charges fuel as it goes, so a huge indent never is one
            // huge allocation.
            const SPACES: [u8; 64] = [b' '; 64];
            let mut left = width.saturating_mul(self.level);
            while left > 0 {
                let n = left.min(SPACES.len());
                w.write_all(&SPACES[..n])?;
                left -= n;
            }
        }
        Ok(())
    }

    fn open<W: ?Sized + std::io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> IoResult {
        self.level += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    fn close<W: ?Sized + std::io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> IoResult {
        self.level -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        w.write_all(bracket)
    }

    fn item<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> IoResult {
        if !first {
            w.write_all(self.item_sep.as_bytes())?;
        }
        self.newline(w)
    }
}

impl serde_json::ser::Formatter for PyFormatter<'_> {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> IoResult {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> IoResult {
        self.close(w, b"]")
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> IoResult {
        self.item(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> IoResult {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> IoResult {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> IoResult {
        self.close(w, b"}")
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> IoResult {
        self.item(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> IoResult {
        w.write_all(self.key_sep.as_bytes())
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> IoResult {
        self.has_value = true;
        Ok(())
    }
}

/// Seconds since the epoch, UTC (transformers uses local time; the crate has no time zone data).
fn now_utc() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The subset of `strftime` chat templates use (dates in system prompts).
pub fn strftime(format: &str, epoch_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = epoch_secs.div_euclid(86_400);
    let secs = epoch_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let month = MONTHS[(m - 1) as usize];
    let day = DAYS[weekday];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('-') => match chars.next() {
                Some('d') => out.push_str(&d.to_string()),
                Some('m') => out.push_str(&m.to_string()),
                Some(other) => out.extend(['%', '-', other]),
                None => out.push_str("%-"),
            },
            Some('B') => out.push_str(month),
            Some('b') => out.push_str(&month[..3]),
            Some('A') => out.push_str(day),
            Some('a') => out.push_str(&day[..3]),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('%') => out.push('%'),
            Some(other) => out.extend(['%', other]),
            None => out.push('%'),
        }
    }
    out
}

/// Howard Hinnant's days-to-civil conversion (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
