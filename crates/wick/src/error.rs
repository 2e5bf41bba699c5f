//! The library's one error type. Variants are structured so callers (CLI, server) can match on
//! them; each keeps its source and names the file, tensor or field at fault.

use std::borrow::Cow;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: file not found{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    MissingFile { path: PathBuf, hint: Option<String> },

    #[error("{path}: invalid config: {message}")]
    BadConfig { path: PathBuf, message: String },

    #[error("{path}: invalid safetensors file: {message}")]
    BadSafetensors { path: PathBuf, message: String },

    #[error("{path}: invalid GGUF file: {message}")]
    BadGguf { path: PathBuf, message: String },

    #[error("tensor `{name}` not found in {location}")]
    MissingTensor { name: String, location: String },

    #[error("tensor `{name}` in {location} has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        location: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },

    #[error("{path}: unsupported architecture `{model_type}` (supported: {supported})")]
    UnsupportedArchitecture {
        path: PathBuf,
        model_type: String,
        supported: String,
    },

    /// A training or validation data file at fault, with the 1-based line when there is one.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    BadData {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },

    /// A checkpoint folder that is incomplete or does not match its manifest; `message` names
    /// the file within it.
    #[error("{path}: {message}")]
    BadCheckpoint { path: PathBuf, message: String },

    /// Training cannot go on (too many non-finite losses, a checkpoint that does not fit the run).
    #[error("training stopped: {0}")]
    Training(String),

    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A model whose output is NaN or infinite (corrupt or overflowing weights), for `what`.
    #[error("{what}: the model produced NaN or infinite values (are its weights finite?)")]
    NonFiniteOutput { what: String },

    #[error("{path}: cannot load tokenizer: {message}")]
    TokenizerLoad { path: PathBuf, message: String },

    #[error("tokenization failed: {0}")]
    Tokenize(String),

    #[error("invalid argument `{name}`: {message}")]
    InvalidArgument { name: &'static str, message: String },

    #[error("model `{repo}`: {message}")]
    Hub { repo: String, message: String },

    #[error("download of {url} failed: {message}")]
    Download { url: String, message: String },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn bad_config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::BadConfig {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn bad_data(
        path: impl Into<PathBuf>,
        line: Option<usize>,
        message: impl Into<String>,
    ) -> Self {
        Error::BadData {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}

/// Text from a file (a tensor name, a metadata string) as it goes into an error message, with
/// control characters escaped (`\n`, `\0`, `\u{1b}`): the message stays one line, and a file
/// cannot put escape sequences on the user's terminal.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}
