//! The router, shared state and middleware (API key, metrics), and starting/stopping the
//! server: models are loaded before the port opens; shutdown stops accepting, lets in-flight
//! requests (streams included) finish, then stops the engines.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use wick::candle_core::{DType, Device};
use wick::embed::Embedder;
use wick::generate::load::load_causal_lm;
use wick::io::ModelFiles;
use wick::tokenizers::Tokenizer;

use crate::embedding::EmbeddingService;
use crate::error::ApiError;
use crate::fields::{ApiResult, Body};
use crate::generation::{EngineOptions, Generator};
use crate::metrics::Metrics;
use crate::routes;

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
    /// Adapters loaded at start (each subfolder with adapter_config.json), and where unknown
    /// model names are looked up later.
    pub adapters_dir: Option<PathBuf>,
    pub device: Device,
    /// None keeps GGUF weights quantized (f32 otherwise), as `wick generate` does.
    pub dtype: Option<DType>,
    pub api_key: Option<String>,
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
            device: Device::Cpu,
            dtype: None,
            api_key: None,
            max_body_bytes: 2 * 1024 * 1024,
            max_tokens: 2048,
            max_running: 16,
            queue_size: 256,
            max_batch_tokens: 8192,
        }
    }
}

pub struct Limits {
    pub max_body_bytes: usize,
    pub max_tokens: usize,
}

pub struct AppState {
    pub generator: Option<Generator>,
    pub embedder: Option<EmbeddingService>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub api_key: Option<String>,
}

impl AppState {
    /// Loads the models and starts their engines (and any adapters in the adapters folder).
    pub async fn load(config: &ServerConfig) -> Result<Arc<AppState>> {
        if config.model.is_none() && config.embedding_model.is_none() {
            anyhow::bail!("nothing to serve: give --model and/or --embedding-model");
        }
        let metrics = Arc::new(Metrics::default());
        let generator = match &config.model {
            Some(m) => Some(start_generator(config, m, metrics.clone())?),
            None => None,
        };
        let embedder = match &config.embedding_model {
            Some(m) => Some(start_embedder(config, m, metrics.clone())?),
            None => None,
        };
        let state = AppState {
            generator,
            embedder,
            metrics,
            limits: Limits {
                max_body_bytes: config.max_body_bytes,
                max_tokens: config.max_tokens,
            },
            api_key: config.api_key.clone().filter(|k| !k.is_empty()),
        };
        if let (Some(gen), Some(dir)) = (&state.generator, &config.adapters_dir) {
            for (name, path) in adapter_dirs(dir)? {
                gen.load_adapter(&name, path.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            }
        }
        Ok(Arc::new(state))
    }

    /// Every model name a request may use.
    pub fn model_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(g) = &self.generator {
            names.push(g.name.clone());
            names.extend(g.adapter_names());
        }
        if let Some(e) = &self.embedder {
            names.push(e.name.clone());
        }
        names
    }
}

fn start_generator(config: &ServerConfig, model: &str, metrics: Arc<Metrics>) -> Result<Generator> {
    let files = ModelFiles::resolve(model)?;
    let loaded = load_causal_lm(&files, &config.device, config.dtype, None)
        .with_context(|| format!("loading model {}", files.describe()))?;
    let name = config
        .model_name
        .clone()
        .unwrap_or_else(|| default_name(model));
    let options = EngineOptions {
        max_running: config.max_running.max(1),
        queue_size: config.queue_size,
    };
    Ok(Generator::start(
        name,
        loaded,
        options,
        config.adapters_dir.clone(),
        metrics,
    )?)
}

fn start_embedder(
    config: &ServerConfig,
    model: &str,
    metrics: Arc<Metrics>,
) -> Result<EmbeddingService> {
    let files = ModelFiles::resolve(model)?;
    let dtype = config.dtype.unwrap_or(DType::F32);
    let embedder = Embedder::load(&files, &config.device, dtype, None)
        .with_context(|| format!("loading embedding model {}", files.describe()))?;
    let name = config
        .embedding_model_name
        .clone()
        .unwrap_or_else(|| default_name(model));
    Ok(EmbeddingService::start(
        name,
        embedder,
        config.max_batch_tokens,
        config.queue_size,
        metrics,
    )?)
}

/// `models/SmolLM2.Q4_1.gguf` → `SmolLM2.Q4_1`; `org/name` → `org/name`.
fn default_name(model: &str) -> String {
    let path = std::path::Path::new(model);
    if path.exists() {
        let stem = if path.is_file() {
            path.file_stem()
        } else {
            path.file_name()
        };
        if let Some(s) = stem.and_then(|s| s.to_str()) {
            return s.to_string();
        }
    }
    model.to_string()
}

/// Subfolders of `dir` holding an adapter_config.json, by folder name, sorted.
fn adapter_dirs(dir: &std::path::Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the adapters folder {}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string);
        if let Some(name) = name.filter(|_| path.join(wick::lora::CONFIG_FILE).is_file()) {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/embeddings", post(routes::embeddings::handle))
        .route("/v1/chat/completions", post(routes::chat::handle))
        .route("/v1/completions", post(routes::completions::handle))
        .route("/v1/models", get(routes::admin::models))
        .route("/v1/adapters", post(routes::admin::load_adapter))
        .route("/health", get(routes::admin::health))
        .route("/metrics", get(routes::admin::metrics))
        .fallback(|req: Request| async move { ApiError::not_found(req.uri().path()) })
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// 401 without the API key (when one is set); `/health` stays open for probes.
async fn authorize(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if req.uri().path() != "/health" && given != Some(key.as_str()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Counts every request by route and status with its time to the response head.
async fn record(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let response = next.run(req).await;
    let seconds = start.elapsed().as_secs_f64();
    state
        .metrics
        .observe_request(&route, response.status().as_u16(), seconds);
    response
}

/// The body as a JSON object; an oversized body gets 413 in OpenAI's error format.
pub fn read_body(state: &AppState, body: Result<Bytes, BytesRejection>) -> ApiResult<Body> {
    match body {
        Ok(bytes) => Body::parse(&bytes),
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::too_large(state.limits.max_body_bytes))
        }
        Err(r) => Err(ApiError::bad_json(r.body_text())),
    }
}

pub fn encode(tokenizer: &Tokenizer, text: &str, add_special_tokens: bool) -> ApiResult<Vec<u32>> {
    tokenizer
        .encode(text, add_special_tokens)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| ApiError::invalid("prompt", format!("tokenizing failed: {e}")))
}

/// Serves on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}

/// A server running on its own thread and runtime (for tests and embedding in programs).
pub struct ServerHandle {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl ServerHandle {
    /// Loads the models, binds `addr` (port 0 picks a free one) and starts serving.
    pub fn start(config: ServerConfig, addr: SocketAddr) -> Result<ServerHandle> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let started = async {
                    let state = AppState::load(&config).await?;
                    let listener = tokio::net::TcpListener::bind(addr).await?;
                    anyhow::Ok((state, listener))
                }
                .await;
                let (state, listener) = match started {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return Err(e);
                    }
                };
                let _ = ready_tx.send(Ok(listener.local_addr()?));
                serve(listener, state, async {
                    let _ = stopped.await;
                })
                .await
            })
        });
        match ready_rx.recv() {
            Ok(Ok(addr)) => Ok(ServerHandle {
                addr,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(message)) => anyhow::bail!(message),
            Err(_) => anyhow::bail!("the server thread ended before it started"),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, waits for in-flight requests, and joins the server thread.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}
