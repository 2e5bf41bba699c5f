//! Prometheus text metrics: requests by route and status, latency histograms, tokens in and
//! out, queue depth and batch sizes. Plain counters under one mutex: a few updates per request.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, buckets: &[f64], value: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; buckets.len()];
        }
        for (c, b) in self.counts.iter_mut().zip(buckets) {
            if value <= *b {
                *c += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, label: &str, buckets: &[f64]) {
        for (c, b) in self.counts.iter().zip(buckets) {
            let _ = writeln!(out, "{name}_bucket{{{label},le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{label},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{label}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{label}}} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Tables {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    batches: BTreeMap<&'static str, Histogram>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    tables: Mutex<Tables>,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    embedding_tokens: AtomicU64,
    cancelled_queued: AtomicU64,
    cancelled_running: AtomicU64,
}

/// Where a generation was when its client left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStage {
    /// Waiting for a place: removed from the queue, never prefilled.
    Queued,
    /// Decoding: stopped at the next step.
    Running,
}

/// Queue depths read at render time (they live with the engines).
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueDepths {
    pub generation: usize,
    pub embedding: usize,
}

impl Metrics {
    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        *t.requests.entry((route.to_string(), status)).or_default() += 1;
        t.latency
            .entry(route.to_string())
            .or_default()
            .observe(&LATENCY_BUCKETS, seconds);
    }

    pub fn observe_batch(&self, engine: &'static str, size: usize) {
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        t.batches
            .entry(engine)
            .or_default()
            .observe(&BATCH_BUCKETS, size as f64);
    }

    pub fn add_generation_tokens(&self, prompt: usize, completion: usize) {
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion as u64, Ordering::Relaxed);
    }

    pub fn add_embedding_tokens(&self, tokens: usize) {
        self.embedding_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
    }

    pub fn add_cancelled(&self, stage: CancelStage, n: usize) {
        let counter = match stage {
            CancelStage::Queued => &self.cancelled_queued,
            CancelStage::Running => &self.cancelled_running,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn render(&self, queues: QueueDepths) -> String {
        let t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str("# HELP wick_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE wick_requests_total counter\n");
        for ((route, status), n) in &t.requests {
            let _ = writeln!(
                out,
                "wick_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP wick_request_duration_seconds Time to the response head.\n");
        out.push_str("# TYPE wick_request_duration_seconds histogram\n");
        for (route, h) in &t.latency {
            let label = format!("route=\"{route}\"");
            h.render(
                &mut out,
                "wick_request_duration_seconds",
                &label,
                &LATENCY_BUCKETS,
            );
        }
        out.push_str(
            "# HELP wick_batch_size Sequences per decode step / texts per embedding batch.\n",
        );
        out.push_str("# TYPE wick_batch_size histogram\n");
        for (engine, h) in &t.batches {
            let label = format!("engine=\"{engine}\"");
            h.render(&mut out, "wick_batch_size", &label, &BATCH_BUCKETS);
        }
        let counters = [
            (
                "wick_tokens_in_total",
                "kind=\"prompt\"",
                &self.prompt_tokens,
            ),
            (
                "wick_tokens_in_total",
                "kind=\"embedding\"",
                &self.embedding_tokens,
            ),
            (
                "wick_tokens_out_total",
                "kind=\"completion\"",
                &self.completion_tokens,
            ),
        ];
        out.push_str("# HELP wick_tokens_in_total Tokens read: prompts and embedding inputs.\n");
        out.push_str("# TYPE wick_tokens_in_total counter\n");
        out.push_str("# HELP wick_tokens_out_total Tokens generated.\n");
        out.push_str("# TYPE wick_tokens_out_total counter\n");
        for (name, label, n) in counters {
            let _ = writeln!(out, "{name}{{{label}}} {}", n.load(Ordering::Relaxed));
        }
        out.push_str(
            "# HELP wick_generations_cancelled_total Generations ended by a client leaving, by \
             where they were (queued: removed unstarted; running: stopped mid-decode).\n",
        );
        out.push_str("# TYPE wick_generations_cancelled_total counter\n");
        for (stage, n) in [
            ("queued", &self.cancelled_queued),
            ("running", &self.cancelled_running),
        ] {
            let _ = writeln!(
                out,
                "wick_generations_cancelled_total{{stage=\"{stage}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP wick_queue_depth Requests waiting for the engine.\n");
        out.push_str("# TYPE wick_queue_depth gauge\n");
        let _ = writeln!(
            out,
            "wick_queue_depth{{engine=\"generation\"}} {}",
            queues.generation
        );
        let _ = writeln!(
            out,
            "wick_queue_depth{{engine=\"embedding\"}} {}",
            queues.embedding
        );
        out
    }
}
