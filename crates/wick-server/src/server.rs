//! The router, shared state and middleware (access rules, metrics), and starting/stopping the
//! server: settings are checked and models loaded before the port opens; shutdown stops
//! accepting, lets in-flight requests (streams included) finish, then stops the engines.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use wick::candle_core::DType;
use wick::embed::Embedder;
use wick::generate::load::load_causal_lm;
use wick::io::ModelFiles;
use wick::tokenizers::Tokenizer;

use crate::access::{self, AccessPolicy};
use crate::adapter_paths::AdapterPaths;
use crate::config::ServerConfig;
use crate::embedding::EmbeddingService;
use crate::error::ApiError;
use crate::generation::{EngineOptions, Generator};
use crate::metrics::Metrics;
use crate::requests::{check_adapter_name, ApiResult};
use crate::routes;

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
    pub allowed_hosts: Vec<String>,
    pub cors_origins: Vec<String>,
}

impl AppState {
    /// Loads the models and starts their engines (and any adapters in the adapters folder).
    pub async fn load(config: &ServerConfig) -> Result<Arc<AppState>> {
        config.check()?;
        let paths = AdapterPaths::new(config.adapters_dir.as_deref(), config.allow_adapter_paths)?;
        let metrics = Arc::new(Metrics::default());
        let generator = match &config.model {
            Some(m) => Some(start_generator(config, m, paths.clone(), metrics.clone())?),
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
            api_key: config.api_key.clone(),
            allowed_hosts: config.allowed_hosts.clone(),
            cors_origins: config.cors_origins.clone(),
        };
        if let (Some(gen), Some(dir)) = (&state.generator, paths.root()) {
            for (name, path) in adapter_dirs(dir)? {
                if state.is_model_name(&name) {
                    anyhow::bail!(
                        "the adapter folder {} is named like a served model; rename it (or the \
                         model, with --model-name / --embedding-model-name)",
                        path.display()
                    );
                }
                gen.load_adapter(&name, path.clone(), false)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            }
        }
        Ok(Arc::new(state))
    }

    /// The base model's or the embedding model's name (which no adapter may take).
    pub fn is_model_name(&self, name: &str) -> bool {
        self.generator.as_ref().is_some_and(|g| g.name == name)
            || self.embedder.as_ref().is_some_and(|e| e.name == name)
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

fn start_generator(
    config: &ServerConfig,
    model: &str,
    paths: AdapterPaths,
    metrics: Arc<Metrics>,
) -> Result<Generator> {
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
    Ok(Generator::start(name, loaded, options, paths, metrics)?)
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

/// Subfolders of `dir` holding an adapter_config.json, by folder name, sorted, resolved (an
/// entry may be the operator's symlink). A name clients could not use stops the start.
fn adapter_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the adapters folder {}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if !path.join(wick::lora::CONFIG_FILE).is_file() {
            continue;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().to_string());
        let name = name.unwrap_or_default();
        check_adapter_name(&name)
            .map_err(|why| anyhow::anyhow!("the adapter folder {}: {why}", path.display()))?;
        let resolved = path
            .canonicalize()
            .with_context(|| format!("resolving the adapter folder {}", path.display()))?;
        out.push((name, resolved));
    }
    out.sort();
    Ok(out)
}

/// The routes behind the access rules for a server bound to `bound`. Layers run outermost
/// first: metrics, Host, Origin/CORS, API key, JSON bodies, then the route (405s as JSON).
pub fn router(state: Arc<AppState>, bound: SocketAddr) -> Router {
    let policy = Arc::new(AccessPolicy::new(
        bound,
        &state.allowed_hosts,
        &state.cors_origins,
        state.api_key.clone(),
    ));
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
        .layer(middleware::from_fn(access::json_method_not_allowed))
        .layer(middleware::from_fn(access::require_json))
        .layer(middleware::from_fn_with_state(
            policy.clone(),
            access::authorize,
        ))
        .layer(middleware::from_fn_with_state(
            policy.clone(),
            access::check_origin,
        ))
        .layer(middleware::from_fn_with_state(policy, access::check_host))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
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

/// The body's bytes (for `requests::parse_*`); an oversized body gets 413 in OpenAI's format.
pub fn body_bytes(state: &AppState, body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    match body {
        Ok(bytes) => Ok(bytes),
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
    let bound = listener.local_addr().context("reading the bound address")?;
    axum::serve(listener, router(state, bound))
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
