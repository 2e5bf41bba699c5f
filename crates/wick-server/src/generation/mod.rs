//! Text generation behind the HTTP handlers: a bounded queue in front of one engine thread that
//! owns the model and decodes every running sequence together (continuous batching).

mod adapters;
mod engine;
mod sequence;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{mpsc::UnboundedReceiver, oneshot};
use wick::generate::load::LoadedLm;
use wick::generate::{FinishReason, GenerationConfig, GenerationDefaults};
use wick::io::chat_template::ChatTemplate;
use wick::tokenizers::Tokenizer;

use crate::adapter_paths::AdapterPaths;
use crate::error::ApiError;
use crate::metrics::Metrics;

pub use engine::EngineOptions;

/// What a running request hears from the engine.
#[derive(Debug)]
pub enum GenEvent {
    /// New completion text (whole characters, never part of a stop string).
    Delta(String),
    Done(GenSummary),
    Failed(String),
}

#[derive(Debug, Clone, Copy)]
pub struct GenSummary {
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub config: GenerationConfig,
    pub adapter: Option<String>,
    pub events: tokio::sync::mpsc::UnboundedSender<GenEvent>,
}

pub(crate) enum Command {
    Generate(GenRequest),
    LoadAdapter {
        name: String,
        dir: PathBuf,
        /// Re-point `name` if it is loaded (otherwise a loaded name is refused).
        replace: bool,
        reply: oneshot::Sender<Result<(), LoadFailure>>,
    },
}

/// Why the engine did not load an adapter.
pub(crate) enum LoadFailure {
    /// The name is loaded and the request did not ask to replace it.
    Exists,
    Failed(String),
}

/// The handlers' side of the engine.
pub struct Generator {
    pub name: String,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    pub defaults: GenerationDefaults,
    pub context: usize,
    /// Logits per step (what `logit_bias` ids must stay below).
    pub vocab_size: usize,
    /// Adapters loaded so far, by name, with the directory each came from.
    pub adapters: RwLock<BTreeMap<String, PathBuf>>,
    /// Where adapters may be read from (and where `"model": "<name>"` looks for one).
    pub adapter_paths: AdapterPaths,
    commands: Mutex<mpsc::Sender<Command>>,
    queued: Arc<AtomicUsize>,
    queue_limit: usize,
}

impl Generator {
    /// Starts the engine thread on `loaded`'s model.
    pub fn start(
        name: String,
        loaded: LoadedLm,
        options: EngineOptions,
        adapter_paths: AdapterPaths,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Generator> {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let generator = Generator {
            name,
            tokenizer: loaded.tokenizer.clone(),
            chat_template: loaded.chat_template.clone(),
            defaults: loaded.defaults.clone(),
            context: loaded.model.model().config().max_position_embeddings,
            vocab_size: loaded.model.model().config().vocab_size,
            adapters: RwLock::new(BTreeMap::new()),
            adapter_paths,
            commands: Mutex::new(tx),
            queued: queued.clone(),
            queue_limit: options.queue_size,
        };
        engine::spawn(loaded, options, rx, queued, metrics)?;
        Ok(generator)
    }

    /// Requests waiting for a place in the running batch.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Queues a generation; 429 when the queue is full. Events arrive on the returned receiver;
    /// dropping it cancels the generation.
    pub fn submit(
        &self,
        prompt: Vec<u32>,
        config: GenerationConfig,
        adapter: Option<String>,
    ) -> Result<UnboundedReceiver<GenEvent>, ApiError> {
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.queue_limit {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::busy("generation"));
        }
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        let request = GenRequest {
            prompt,
            config,
            adapter,
            events,
        };
        if self.send(Command::Generate(request)).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::unavailable("the generation engine has stopped"));
        }
        Ok(rx)
    }

    /// Loads adapter `name` from `dir` on the engine thread; a loaded name is replaced only
    /// with `replace` (else 409 `adapter_exists`). The engine decides, so two loads of one name
    /// cannot both pass the check.
    pub async fn load_adapter(
        &self,
        name: &str,
        dir: PathBuf,
        replace: bool,
    ) -> Result<(), ApiError> {
        let (reply, done) = oneshot::channel();
        let command = Command::LoadAdapter {
            name: name.to_string(),
            dir: dir.clone(),
            replace,
            reply,
        };
        self.send(command)
            .map_err(|_| ApiError::unavailable("the generation engine has stopped"))?;
        match done.await {
            Ok(Ok(())) => {
                let mut adapters = self.adapters.write().unwrap_or_else(|e| e.into_inner());
                adapters.insert(name.to_string(), dir);
                Ok(())
            }
            Ok(Err(LoadFailure::Exists)) => Err(ApiError::adapter_exists(name)),
            Ok(Err(LoadFailure::Failed(message))) => Err(ApiError::invalid("path", message)),
            Err(_) => Err(ApiError::unavailable("the generation engine has stopped")),
        }
    }

    pub fn adapter_names(&self) -> Vec<String> {
        let adapters = self.adapters.read().unwrap_or_else(|e| e.into_inner());
        adapters.keys().cloned().collect()
    }

    pub fn has_adapter(&self, name: &str) -> bool {
        let adapters = self.adapters.read().unwrap_or_else(|e| e.into_inner());
        adapters.contains_key(name)
    }

    fn send(&self, command: Command) -> Result<(), ()> {
        let tx = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        tx.send(command).map_err(|_| ())
    }
}
