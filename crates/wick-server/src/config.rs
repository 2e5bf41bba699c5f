//! What `wick serve` can be told, checked before anything loads, and the warnings a start
//! with risky settings prints.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Result};
use wick::candle_core::{DType, Device};

/// Everything `wick serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Decoder for chat and completions (GGUF file, safetensors dir or hub id).
    pub model: Option<String>,
    /// The name clients use for it (default: the file or directory name).
    pub model_name: Option<String>,
    /// Sentence-embedding model (directory or hub id).
    pub embedding_model: Option<String>,
    pub embedding_model_name: Option<String>,
    /// Adapters loaded at start (each subfolder with adapter_config.json), where unknown
    /// model names are looked up later, and the only folder `POST /v1/adapters` reads from.
    pub adapters_dir: Option<PathBuf>,
    /// Let `POST /v1/adapters` read a `path` anywhere (not only under `adapters_dir`).
    pub allow_adapter_paths: bool,
    pub device: Device,
    /// None keeps GGUF weights quantized (f32 otherwise), as `wick generate` does.
    pub dtype: Option<DType>,
    /// Required as `Authorization: Bearer KEY`; `Some("")` is refused at start.
    pub api_key: Option<String>,
    /// Host header names accepted besides `localhost` and the bound address (`*`: any).
    /// Without any, a non-loopback bind accepts any Host (and says so in the warnings).
    pub allowed_hosts: Vec<String>,
    /// Web page origins (`scheme://host[:port]`, `null` or `*`) allowed to call the server;
    /// any other request with an `Origin` header gets 403.
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    /// Most tokens one request may generate.
    pub max_tokens: usize,
    /// Most sequences decoded together.
    pub max_running: usize,
    /// Most requests waiting per engine; more get 429.
    pub queue_size: usize,
    /// Token budget of one embedding batch; 0 embeds each request on its own.
    pub max_batch_tokens: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            model: None,
            model_name: None,
            embedding_model: None,
            embedding_model_name: None,
            adapters_dir: None,
            allow_adapter_paths: false,
            device: Device::Cpu,
            dtype: None,
            api_key: None,
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            max_body_bytes: 2 * 1024 * 1024,
            max_tokens: 2048,
            max_running: 16,
            queue_size: 256,
            max_batch_tokens: 8192,
        }
    }
}

impl ServerConfig {
    /// Refuses settings that would silently weaken the server (an empty API key turns
    /// authentication off) or that cannot match anything (an origin with a path).
    pub fn check(&self) -> Result<()> {
        if self.model.is_none() && self.embedding_model.is_none() {
            bail!("nothing to serve: give --model and/or --embedding-model");
        }
        if let Some(key) = &self.api_key {
            if key.is_empty() {
                bail!(
                    "the API key is empty (--api-key \"\" would turn authentication off): give a \
                     non-empty key, or none to serve without one"
                );
            }
            if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("the API key contains whitespace or control characters, which an Authorization header cannot carry");
            }
        }
        for host in &self.allowed_hosts {
            let plain = host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c));
            if host.is_empty() || !(plain || host == "*") {
                bail!(
                    "--allowed-hosts `{host}` is not a host name (give names like `wick.lan` or \
                     `10.0.0.5`, without scheme or path; `*` allows any)"
                );
            }
        }
        for origin in &self.cors_origins {
            check_origin(origin)?;
        }
        Ok(())
    }

    /// What the operator should know about a start on `bound` with these settings.
    pub fn startup_warnings(&self, bound: SocketAddr) -> Vec<String> {
        let mut out = Vec::new();
        let exposed = !bound.ip().is_loopback();
        if exposed && self.api_key.is_none() {
            out.push(format!(
                "listening on {bound}, which other machines can reach, without an API key: \
                 anyone who can connect can use the server (set --api-key or WICK_API_KEY)"
            ));
        }
        if exposed && self.allowed_hosts.is_empty() {
            out.push(
                "any Host header is accepted on a non-loopback address, so GET routes have no \
                 DNS-rebinding protection; name the host names clients use with --allowed-hosts"
                    .to_string(),
            );
        }
        if self.allowed_hosts.iter().any(|h| h == "*") {
            out.push("--allowed-hosts '*': any Host header is accepted".to_string());
        }
        if self.cors_origins.iter().any(|o| o == "*") {
            out.push("--cors-origin '*': any web page can call this server".to_string());
        }
        if self.allow_adapter_paths {
            out.push(
                "--allow-adapter-paths: clients can load adapters from any folder this process \
                 can read"
                    .to_string(),
            );
        }
        out
    }
}

/// `*`, `null` or `http(s)://host[:port]` exactly as a browser sends it (no path, no slash).
fn check_origin(origin: &str) -> Result<()> {
    if origin == "*" || origin == "null" {
        return Ok(());
    }
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let ok = rest.is_some_and(|r| {
        !r.is_empty()
            && r.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c))
    });
    if !ok {
        bail!(
            "--cors-origin `{origin}` is not an origin: give it as a browser sends it, \
             `http://host[:port]` or `https://host[:port]` with no path or trailing slash (or \
             `null`, or `*` for any page)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_what_browsers_send() {
        for ok in ["*", "null", "http://localhost:3000", "https://app.example"] {
            assert!(check_origin(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "localhost:3000",
            "http://app.example/",
            "https://a/b",
            "ftp://x",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }
}
