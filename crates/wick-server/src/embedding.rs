//! Embeddings behind the HTTP handlers: one worker thread owns the encoder and batches
//! concurrent requests by a token budget — whatever queued while the previous batch ran is
//! embedded together, up to `max_batch_tokens` tokens. A budget of 0 turns batching off (one
//! request per forward pass), the baseline the load benchmark compares against.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use wick::embed::{EmbedOptions, Embedder};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Texts per forward pass inside a batch (the CLI's default `--batch-size`).
const FORWARD_BATCH: usize = 32;

pub struct EmbedOutput {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<EmbedOutput, String>>,
}

/// A job with its token count, waiting for a batch.
struct Counted {
    job: Job,
    counts: Vec<usize>,
}

pub struct EmbeddingService {
    pub name: String,
    pub dim: usize,
    jobs: Mutex<mpsc::Sender<Job>>,
    queued: Arc<AtomicUsize>,
    queue_limit: usize,
}

impl EmbeddingService {
    pub fn start(
        name: String,
        embedder: Embedder,
        max_batch_tokens: usize,
        queue_size: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<EmbeddingService> {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let service = EmbeddingService {
            name,
            dim: embedder.dim(),
            jobs: Mutex::new(tx),
            queued: queued.clone(),
            queue_limit: queue_size,
        };
        std::thread::Builder::new()
            .name("wick-embed".into())
            .spawn(move || worker(&embedder, max_batch_tokens, &rx, &queued, &metrics))?;
        Ok(service)
    }

    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub async fn embed(&self, texts: Vec<String>) -> Result<EmbedOutput, ApiError> {
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.queue_limit {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::busy("embedding"));
        }
        let (reply, done) = oneshot::channel();
        let sent = {
            let tx = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            tx.send(Job { texts, reply })
        };
        if sent.is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::unavailable("the embedding worker has stopped"));
        }
        match done.await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(message)) => Err(ApiError::internal(message)),
            Err(_) => Err(ApiError::unavailable("the embedding worker has stopped")),
        }
    }
}

fn worker(
    embedder: &Embedder,
    max_batch_tokens: usize,
    rx: &Receiver<Job>,
    queued: &AtomicUsize,
    metrics: &Metrics,
) {
    let count = |job: Job| -> Option<Counted> {
        queued.fetch_sub(1, Ordering::SeqCst);
        if job.reply.is_closed() {
            return None; // the client left while queued
        }
        let texts: Vec<&str> = job.texts.iter().map(String::as_str).collect();
        match embedder.token_counts(&texts) {
            Ok(counts) => Some(Counted { job, counts }),
            Err(e) => {
                let _ = job.reply.send(Err(e.to_string()));
                None
            }
        }
    };
    let mut carried: Option<Counted> = None;
    loop {
        let first = match carried.take() {
            Some(c) => c,
            None => match rx.recv() {
                Ok(job) => match count(job) {
                    Some(c) => c,
                    None => continue,
                },
                Err(_) => return, // the server has shut down
            },
        };
        let mut tokens: usize = first.counts.iter().sum();
        let mut batch = vec![first];
        if max_batch_tokens > 0 {
            loop {
                let next = match rx.try_recv() {
                    Ok(job) => match count(job) {
                        Some(c) => c,
                        None => continue,
                    },
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                };
                let more: usize = next.counts.iter().sum();
                if tokens + more > max_batch_tokens {
                    carried = Some(next);
                    break;
                }
                tokens += more;
                batch.push(next);
            }
        }
        run_batch(embedder, batch, tokens, metrics);
    }
}

/// Embeds every text of `batch` together and answers each job with its own vectors.
fn run_batch(embedder: &Embedder, batch: Vec<Counted>, tokens: usize, metrics: &Metrics) {
    let texts: Vec<&str> = batch
        .iter()
        .flat_map(|c| c.job.texts.iter().map(String::as_str))
        .collect();
    metrics.observe_batch("embedding", texts.len());
    let opts = EmbedOptions {
        batch_size: FORWARD_BATCH,
        ..Default::default()
    };
    match embedder.embed(&texts, &opts) {
        Ok(vectors) => {
            metrics.add_embedding_tokens(tokens);
            let mut vectors = vectors.into_iter();
            for c in batch {
                let own: Vec<Vec<f32>> = vectors.by_ref().take(c.job.texts.len()).collect();
                let out = EmbedOutput {
                    vectors: own,
                    tokens: c.counts.iter().sum(),
                };
                let _ = c.job.reply.send(Ok(out));
            }
        }
        Err(e) => {
            for c in batch {
                let _ = c.job.reply.send(Err(format!("embedding failed: {e}")));
            }
        }
    }
}
