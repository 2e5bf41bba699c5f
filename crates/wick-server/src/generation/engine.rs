//! The engine thread: owns the model, admits queued requests between decode steps (prefilling
//! each alone), then decodes every running sequence one token per step — one batched forward
//! per adapter group, each sequence attending over its own KV cache — and retires the ones that
//! finished. Sequences join and leave between steps (continuous batching). Every loop also
//! drops the queued requests whose clients have gone, and every step stops the running ones
//! whose clients have gone, so hung-up clients never hold the queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use wick::candle_core::{DType, Tensor};
use wick::generate::load::LoadedLm;
use wick::models::DecoderModel;
use wick::tokenizers::Tokenizer;

use super::adapters::AdapterSet;
use super::sequence::{Next, Sequence};
use super::{Command, GenRequest, LoadFailure};
use crate::metrics::{CancelStage, Metrics};

/// Prompts are fed in chunks so attention scores stay small (as `CachedDecoder` does).
const PREFILL_CHUNK: usize = 512;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Most sequences decoded together.
    pub max_running: usize,
    /// Most requests waiting for a place; more get 429.
    pub queue_size: usize,
}

pub(super) fn spawn(
    loaded: LoadedLm,
    options: EngineOptions,
    commands: Receiver<Command>,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("wick-generate".into())
        .spawn(move || {
            let LoadedLm {
                model, tokenizer, ..
            } = loaded;
            let mut engine = Engine {
                model: model.into_model(),
                adapters: AdapterSet::new(),
                options,
                queued,
                metrics,
            };
            engine.run(&tokenizer, commands);
        })
        .map(|_| ())
}

struct Engine {
    model: DecoderModel,
    adapters: AdapterSet,
    options: EngineOptions,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Engine {
    fn run(&mut self, tokenizer: &Tokenizer, commands: Receiver<Command>) {
        let mut waiting: VecDeque<GenRequest> = VecDeque::new();
        let mut running: Vec<Sequence<'_>> = Vec::new();
        loop {
            // Block only when there is nothing to do; otherwise take what has arrived.
            if running.is_empty() && waiting.is_empty() {
                match commands.recv() {
                    Ok(command) => self.handle(command, &mut waiting),
                    Err(_) => return, // every sender is gone: the server has shut down
                }
            }
            while let Ok(command) = commands.try_recv() {
                self.handle(command, &mut waiting);
            }
            self.drop_abandoned(&mut waiting);
            while running.len() < self.options.max_running {
                let Some(request) = waiting.pop_front() else {
                    break;
                };
                self.queued.fetch_sub(1, Ordering::SeqCst);
                if let Some(seq) = self.admit(tokenizer, request) {
                    running.push(seq);
                }
            }
            if !running.is_empty() {
                self.step(&mut running);
            }
            let cancelled = running.iter().filter(|s| s.was_cancelled()).count();
            self.metrics.add_cancelled(CancelStage::Running, cancelled);
            running.retain(|s| !s.is_finished());
        }
    }

    /// Removes the queued requests whose clients have gone (their receiver was dropped: the
    /// connection closed), every loop, so they never hold a place or get prefilled.
    fn drop_abandoned(&self, waiting: &mut VecDeque<GenRequest>) {
        let before = waiting.len();
        waiting.retain(|r| !r.events.is_closed());
        let gone = before - waiting.len();
        if gone > 0 {
            self.queued.fetch_sub(gone, Ordering::SeqCst);
            self.metrics.add_cancelled(CancelStage::Queued, gone);
        }
    }

    fn handle(&mut self, command: Command, waiting: &mut VecDeque<GenRequest>) {
        match command {
            Command::Generate(request) => waiting.push_back(request),
            Command::LoadAdapter {
                name,
                dir,
                replace,
                reply,
            } => {
                let result = if !replace && self.adapters.contains(&name) {
                    Err(LoadFailure::Exists)
                } else {
                    self.adapters
                        .load(&mut self.model, &name, &dir)
                        .map_err(|e| {
                            let at = dir.display();
                            LoadFailure::Failed(format!("loading adapter `{name}` from {at}: {e}"))
                        })
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Prefills a new sequence and samples its first token; None when it already ended.
    fn admit<'t>(&mut self, tokenizer: &'t Tokenizer, request: GenRequest) -> Option<Sequence<'t>> {
        let GenRequest {
            prompt,
            config,
            adapter,
            events,
        } = request;
        let context = self.model.config().max_position_embeddings;
        let budget = config.max_tokens.unwrap_or(context);
        let columns = (prompt.len() + budget).min(context);
        let cache = match self.model.new_cache(1, columns) {
            Ok(c) => c,
            Err(e) => {
                let _ = events.send(super::GenEvent::Failed(e.to_string()));
                return None;
            }
        };
        let started = Sequence::new(
            tokenizer,
            prompt,
            &config,
            adapter,
            cache,
            context,
            events.clone(),
        );
        let mut seq = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = events.send(super::GenEvent::Failed(e.to_string()));
                return None;
            }
        };
        let result = self
            .prefill(&mut seq)
            .and_then(|mut logits| seq.advance(&mut logits));
        match result {
            Ok(Next::Feed(id)) => {
                seq.set_pending(id);
                Some(seq)
            }
            Ok(Next::Done) => {
                if seq.was_cancelled() {
                    self.metrics.add_cancelled(CancelStage::Running, 1);
                }
                None
            }
            Err(e) => {
                seq.fail(e.to_string());
                None
            }
        }
    }

    fn prefill(&mut self, seq: &mut Sequence<'_>) -> wick::Result<Vec<f32>> {
        self.adapters
            .activate(&mut self.model, seq.adapter.as_deref())?;
        let device = self.model.device().clone();
        let prompt = seq.prompt().to_vec();
        let mut last = None;
        for chunk in prompt.chunks(PREFILL_CHUNK) {
            let ids = Tensor::new(chunk, &device)?.unsqueeze(0)?;
            last = Some(self.model.forward_last(&ids, None, &mut seq.cache)?);
        }
        let logits = last.ok_or_else(|| wick::Error::InvalidArgument {
            name: "prompt",
            message: "the prompt has no tokens".into(),
        })?;
        Ok(logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1()?)
    }

    /// One decode step for every running sequence, one batched forward per adapter group.
    fn step(&mut self, running: &mut [Sequence<'_>]) {
        for seq in running.iter_mut() {
            if !seq.is_finished() && seq.is_abandoned() {
                seq.cancel();
            }
        }
        let mut groups: Vec<Option<String>> = Vec::new();
        for seq in running.iter().filter(|s| !s.is_finished()) {
            if !groups.contains(&seq.adapter) {
                groups.push(seq.adapter.clone());
            }
        }
        for group in groups {
            let mut members: Vec<&mut Sequence<'_>> = running
                .iter_mut()
                .filter(|s| !s.is_finished() && s.adapter == group)
                .collect();
            self.metrics.observe_batch("generation", members.len());
            match self.decode(group.as_deref(), &mut members) {
                Ok(rows) => {
                    for (seq, mut logits) in members.into_iter().zip(rows) {
                        match seq.advance(&mut logits) {
                            Ok(Next::Feed(id)) => seq.set_pending(id),
                            Ok(Next::Done) => {}
                            Err(e) => seq.fail(e.to_string()),
                        }
                    }
                }
                Err(e) => {
                    for seq in members {
                        seq.fail(format!("decoding failed: {e}"));
                    }
                }
            }
        }
    }

    fn decode(
        &mut self,
        adapter: Option<&str>,
        members: &mut [&mut Sequence<'_>],
    ) -> wick::Result<Vec<Vec<f32>>> {
        self.adapters.activate(&mut self.model, adapter)?;
        let tokens: Vec<u32> = members.iter().map(|s| s.pending()).collect();
        let mut caches: Vec<&mut wick::nn::KvCache> =
            members.iter_mut().map(|s| &mut s.cache).collect();
        let logits = self.model.forward_decode(&tokens, &mut caches)?;
        Ok(logits.to_dtype(DType::F32)?.to_vec2()?)
    }
}
