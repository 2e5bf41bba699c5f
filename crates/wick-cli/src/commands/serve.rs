//! `wick serve`: the OpenAI-compatible HTTP server (crates/wick-server) on one port.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use wick_server::{AppState, ServerConfig};

/// Environment variable read for the API key when --api-key is not given.
const API_KEY_ENV: &str = "WICK_API_KEY";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Decoder for /v1/chat/completions and /v1/completions (GGUF file, directory or hub id).
    #[arg(long, short)]
    pub model: Option<String>,
    /// The name clients pass as "model" (default: the file or directory name).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Sentence-embedding model for /v1/embeddings (directory or hub id).
    #[arg(long)]
    pub embedding_model: Option<String>,
    #[arg(long)]
    pub embedding_model_name: Option<String>,
    /// Folder of LoRA adapters (one PEFT adapter per subfolder, served by folder name); new
    /// subfolders are picked up on first use, without a restart. POST /v1/adapters reads only
    /// from under it (a symlinked subfolder counts).
    #[arg(long, value_name = "DIR")]
    pub adapters: Option<PathBuf>,
    /// Let POST /v1/adapters load a `path` anywhere this process can read, not only under
    /// --adapters.
    #[arg(long)]
    pub allow_adapter_paths: bool,
    /// cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype f32, f16 or bf16 (default: GGUF weights stay quantized, f32 otherwise).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Address to bind; loopback by default.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` (also read from WICK_API_KEY, which keeps it out of
    /// the process list); /health stays open. An empty key is an error.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Host header names to accept (comma-separated; `*`: any). On loopback, `localhost` and
    /// the bound address are always accepted; on any other address, without this flag every
    /// Host is accepted (with a warning).
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Web page origin allowed to call the server (`http://host:port`; repeat or
    /// comma-separate; `*`: any). Other requests with an Origin header get 403.
    #[arg(long, value_name = "ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most tokens one request may generate.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: usize,
    /// Most sequences decoded together (continuous batching).
    #[arg(long, default_value_t = 16)]
    pub max_running: usize,
    /// Most requests waiting per model; more get 429 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub queue_size: usize,
    /// Token budget of one embedding batch across concurrent requests; 0 turns batching off.
    #[arg(long, default_value_t = 8192)]
    pub max_batch_tokens: usize,
}

pub fn run(args: ServeArgs) -> Result<()> {
    if args.model.is_none() && args.embedding_model.is_none() {
        bail!("nothing to serve: give --model and/or --embedding-model");
    }
    if args.max_running == 0 {
        bail!("--max-running must be at least 1");
    }
    let api_key = api_key(args.api_key)?;
    let config = ServerConfig {
        model: args.model,
        model_name: args.model_name,
        embedding_model: args.embedding_model,
        embedding_model_name: args.embedding_model_name,
        adapters_dir: args.adapters,
        allow_adapter_paths: args.allow_adapter_paths,
        device: wick::device::parse_device(&args.device)?,
        dtype: match &args.dtype {
            Some(d) => Some(wick::device::parse_dtype(d)?),
            None => None,
        },
        api_key,
        allowed_hosts: args.allowed_hosts,
        cors_origins: args.cors_origin,
        max_body_bytes: args.max_body_bytes,
        max_tokens: args.max_tokens,
        max_running: args.max_running,
        queue_size: args.queue_size,
        max_batch_tokens: args.max_batch_tokens,
    };
    let addr = SocketAddr::new(args.host, args.port);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let state = AppState::load(&config).await?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let bound = listener.local_addr()?;
        for warning in config.startup_warnings(bound) {
            eprintln!("wick serve: warning: {warning}");
        }
        eprintln!(
            "wick serve: listening on http://{bound} (models: {})",
            state.model_names().join(", ")
        );
        wick_server::serve(listener, state, shutdown_signal()).await?;
        eprintln!("wick serve: drained in-flight requests, exiting");
        Ok(())
    })
}

/// The key from --api-key, else WICK_API_KEY; an empty one (which would turn authentication
/// off) is an error naming where it came from.
fn api_key(flag: Option<String>) -> Result<Option<String>> {
    let (key, source) = match flag {
        Some(k) => (Some(k), "--api-key"),
        None => (std::env::var(API_KEY_ENV).ok(), API_KEY_ENV),
    };
    if key.as_deref() == Some("") {
        bail!(
            "{source} is empty: an empty API key would turn authentication off; give a \
             non-empty key, or leave {source} out to serve without one"
        );
    }
    Ok(key)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    eprintln!("wick serve: shutting down, draining in-flight requests");
}
