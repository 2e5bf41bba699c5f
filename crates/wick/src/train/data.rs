//! JSONL training data in three shapes, one object per line:
//!
//! - `{"text": "..."}`: plain language modelling, every token trained;
//! - `{"prompt": "...", "completion": "..."}`: only the completion trained by default;
//! - `{"messages": [{"role": "...", "content": "..."}, ...]}`: rendered with the model's chat
//!   template, only assistant turns trained by default.
//!
//! All lines of a file must have the same shape. Roles are those the server accepts
//! ([`ROLES`], `developer` read as `system`); any other key is an error (a typo such as
//! `"promt"` would otherwise be dropped in silence) unless [`DataOptions::ignore_fields`] names
//! it. Every problem is reported as `file:line: message` before any training starts.

use std::io::BufRead;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::io::chat_template::ChatMessage;

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Text(String),
    PromptCompletion { prompt: String, completion: String },
    Messages(Vec<ChatMessage>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Text,
    PromptCompletion,
    Messages,
}

impl Shape {
    pub fn describe(self) -> &'static str {
        match self {
            Shape::Text => r#"{"text"}"#,
            Shape::PromptCompletion => r#"{"prompt","completion"}"#,
            Shape::Messages => r#"{"messages"}"#,
        }
    }
}

impl Record {
    pub fn shape(&self) -> Shape {
        match self {
            Record::Text(_) => Shape::Text,
            Record::PromptCompletion { .. } => Shape::PromptCompletion,
            Record::Messages(_) => Shape::Messages,
        }
    }
}

/// A parsed data file: each record with its 1-based line number.
#[derive(Debug, Clone)]
pub struct JsonlData {
    pub path: std::path::PathBuf,
    pub records: Vec<(usize, Record)>,
}

impl JsonlData {
    pub fn shape(&self) -> Option<Shape> {
        self.records.first().map(|(_, r)| r.shape())
    }
}

/// The chat roles a `messages` line may use: the server's set (`developer` is OpenAI's newer
/// name for `system` and is read as it).
pub const ROLES: [&str; 4] = ["system", "developer", "user", "assistant"];

/// How lenient reading is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataOptions {
    /// Keys to skip wherever they appear (in a line's object and in each message), e.g.
    /// dataset columns such as `id` or `source`; any other unknown key is an error.
    pub ignore_fields: Vec<String>,
}

/// Reads and checks a JSONL file. Blank lines are skipped; a file with no records is an error.
pub fn read_jsonl(path: &Path) -> Result<JsonlData> {
    read_jsonl_with(path, &DataOptions::default())
}

/// [`read_jsonl`] with `opts`.
pub fn read_jsonl_with(path: &Path, opts: &DataOptions) -> Result<JsonlData> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingFile {
            path: path.to_path_buf(),
            hint: None,
        },
        _ => Error::io(path, e),
    })?;
    let mut records: Vec<(usize, Record)> = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| Error::bad_data(path, Some(n), e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = parse_line_with(&line, opts).map_err(|m| Error::bad_data(path, Some(n), m))?;
        if let Some((first_line, first)) = records.first() {
            if first.shape() != record.shape() {
                let message = format!(
                    "shape {} differs from line {first_line}'s {}; all lines must have the same shape",
                    record.shape().describe(),
                    first.shape().describe()
                );
                return Err(Error::bad_data(path, Some(n), message));
            }
        }
        records.push((n, record));
    }
    if records.is_empty() {
        return Err(Error::bad_data(
            path,
            None,
            "the dataset is empty (no JSON lines)",
        ));
    }
    Ok(JsonlData {
        path: path.to_path_buf(),
        records,
    })
}

/// One line to a record (strict: no unknown keys); the error is the message without the
/// location.
pub fn parse_line(line: &str) -> std::result::Result<Record, String> {
    parse_line_with(line, &DataOptions::default())
}

/// [`parse_line`] with `opts`.
pub fn parse_line_with(line: &str, opts: &DataOptions) -> std::result::Result<Record, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("expected a JSON object".into());
    };
    let (shape, keys): (Shape, &[&str]) = if obj.contains_key("messages") {
        (Shape::Messages, &["messages"])
    } else if obj.contains_key("prompt") || obj.contains_key("completion") {
        (Shape::PromptCompletion, &["prompt", "completion"])
    } else if obj.contains_key("text") {
        (Shape::Text, &["text"])
    } else {
        let keys: Vec<&str> = obj
            .keys()
            .map(String::as_str)
            .filter(|k| !opts.ignore_fields.iter().any(|i| i == k))
            .collect();
        return Err(format!(
            r#"expected {{"text"}}, {{"prompt","completion"}} or {{"messages"}}, found keys {keys:?}"#
        ));
    };
    only_keys(&obj, keys, &format!("a {} line", shape.describe()), opts)?;
    match shape {
        Shape::Messages => {
            let Some(Value::Array(list)) = obj.get("messages") else {
                return Err(r#"field "messages" is not an array"#.into());
            };
            if list.is_empty() {
                return Err(r#"field "messages" is empty"#.into());
            }
            let messages = list
                .iter()
                .enumerate()
                .map(|(i, m)| message(m, opts).map_err(|e| format!("messages[{i}]: {e}")))
                .collect::<std::result::Result<_, _>>()?;
            Ok(Record::Messages(messages))
        }
        Shape::PromptCompletion => Ok(Record::PromptCompletion {
            prompt: string_field(&obj, "prompt")?,
            completion: string_field(&obj, "completion")?,
        }),
        Shape::Text => Ok(Record::Text(string_field(&obj, "text")?)),
    }
}

fn message(m: &Value, opts: &DataOptions) -> std::result::Result<ChatMessage, String> {
    let Value::Object(m) = m else {
        return Err("not an object".into());
    };
    only_keys(m, &["role", "content"], "a message", opts)?;
    let role = string_field(m, "role")?;
    if !ROLES.contains(&role.as_str()) {
        return Err(format!(
            "role {role:?} is not supported (supported: {})",
            ROLES.join(", ")
        ));
    }
    let role = if role == "developer" {
        "system".to_string()
    } else {
        role
    };
    Ok(ChatMessage::new(role, string_field(m, "content")?))
}

/// An error naming the first key of `obj` that is neither in `allowed` nor ignored.
fn only_keys(
    obj: &Map<String, Value>,
    allowed: &[&str],
    what: &str,
    opts: &DataOptions,
) -> std::result::Result<(), String> {
    let unknown = obj
        .keys()
        .find(|k| !allowed.contains(&k.as_str()) && !opts.ignore_fields.contains(k));
    match unknown {
        Some(key) => Err(format!(
            "unknown field {key:?} ({what} has only {})",
            allowed
                .iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => Ok(()),
    }
}

fn string_field(obj: &Map<String, Value>, name: &str) -> std::result::Result<String, String> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("field \"{name}\" is not a string")),
        None => Err(format!("missing field \"{name}\"")),
    }
}

/// Splits off every `1/fraction`-th record (deterministically, by a seeded shuffle) as a
/// validation set. Returns (train, valid); valid is empty when `fraction` is 0.
pub fn split(data: JsonlData, fraction: f64, seed: u64) -> Result<(JsonlData, JsonlData)> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::InvalidArgument {
            name: "valid_split",
            message: format!("{fraction} is not in [0, 1)"),
        });
    }
    let n = data.records.len();
    let n_valid = (n as f64 * fraction).round() as usize;
    if fraction > 0.0 && (n_valid == 0 || n_valid == n) {
        return Err(Error::bad_data(
            &data.path,
            None,
            format!("{n} examples are too few to split off a validation fraction of {fraction}"),
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let mut is_valid = vec![false; n];
    for &i in &order[..n_valid] {
        is_valid[i] = true;
    }
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for (i, r) in data.records.into_iter().enumerate() {
        if is_valid[i] {
            valid.push(r);
        } else {
            train.push(r);
        }
    }
    let make = |records| JsonlData {
        path: data.path.clone(),
        records,
    };
    Ok((make(train), make(valid)))
}
