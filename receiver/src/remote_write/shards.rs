//! Sending one URL's queue: a reader thread routes samples by series hash to shards (tokio
//! tasks, one connection each) that batch, send and retry; the thread persists delivery
//! progress and changes the number of shards with the load.
//!
//! - **Order.** A series always goes to the same shard (`hash % shards`), a shard sends
//!   one request at a time and retries it until it is delivered or dropped, so a series'
//!   samples reach the backend in queue order. Resharding stops routing, lets every shard
//!   finish what it holds, then starts the new set.
//! - **Batches** hold at most `max_samples_per_send` samples and leave at the latest
//!   `batch_deadline` after their first sample.
//! - **Retries**: network errors, timeouts, 5xx and 429 are retried with exponential backoff
//!   (50 ms doubling to 5 s, with jitter), or after the backend's `Retry-After`. Any other
//!   4xx drops the batch, counted in `relay_remote_write_samples_dropped_total{reason=
//!   "http_4xx"}`, and the backend's message is logged (at most once per 10 s per URL).
//! - **Shards** double (up to `max_shards`) when the shards were busy sending more than 70%
//!   of a 10 s window while the reader waited for them, and halve (down to `min_shards`)
//!   when they were busy less than 20%.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::client::{Client, Outcome};
use super::history::Sample;
use super::queue::{self, Progress, Reader, Shared};
use super::wire;

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const RESHARD_WINDOW: Duration = Duration::from_secs(10);
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counters of one URL, read by the self-metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Samples the backend accepted.
    pub sent: AtomicU64,
    /// Samples sent again after a failed attempt.
    pub retried: AtomicU64,
    /// Samples dropped on a 4xx answer.
    pub dropped_4xx: AtomicU64,
    /// Compressed request bytes the backend accepted.
    pub bytes_sent: AtomicU64,
    /// Requests that failed and were retried.
    pub failed_requests: AtomicU64,
    /// Newest sample timestamp delivered, ms.
    pub highest_sent_ms: AtomicI64,
    /// Shards running.
    pub shards: AtomicUsize,
    /// Nanoseconds shards spent on delivered requests (for resharding).
    busy_ns: AtomicU64,
}

/// What the reader thread and the shards share.
#[derive(Debug)]
pub struct Sender {
    /// The URL as shown in logs and labels.
    pub url: String,
    client: Client,
    queue: Arc<Shared>,
    progress: Progress,
    /// Counters.
    pub stats: Arc<Stats>,
    max_samples: usize,
    batch_deadline: Duration,
    min_shards: usize,
    max_shards: usize,
    last_log: std::sync::Mutex<Option<Instant>>,
}

struct Item {
    sample: Sample,
    chunk: u64,
}

/// The reader thread's shards and its account of the current resharding window.
struct Routing {
    shards: (Vec<mpsc::Sender<Item>>, Vec<tokio::task::JoinHandle<()>>),
    window_start: Instant,
    busy_at_start: u64,
    /// Time the reader spent waiting for a shard with room.
    blocked: Duration,
}

impl Sender {
    /// A sender of `queue` through `client`.
    #[allow(
        clippy::too_many_arguments,
        reason = "one place builds it, from the settings"
    )]
    pub fn new(
        url: String,
        client: Client,
        queue: Arc<Shared>,
        stats: Arc<Stats>,
        max_samples: usize,
        batch_deadline: Duration,
        min_shards: usize,
        max_shards: usize,
    ) -> Arc<Self> {
        Arc::new(Sender {
            url,
            client,
            queue,
            progress: Progress::default(),
            stats,
            max_samples,
            batch_deadline,
            min_shards,
            max_shards,
            last_log: std::sync::Mutex::new(None),
        })
    }

    /// Runs the reader loop on the calling (dedicated) thread until `shutdown`, spawning
    /// shards on `runtime`.
    pub fn run_reader(
        self: Arc<Self>,
        runtime: tokio::runtime::Handle,
        shutdown: CancellationToken,
        stopped: Arc<AtomicBool>,
    ) {
        let mut reader = Reader::new(self.queue.clone());
        let mut routing = Routing {
            shards: self.spawn_shards(&runtime, self.min_shards, &shutdown),
            window_start: Instant::now(),
            busy_at_start: self.stats.busy_ns.load(Ordering::Relaxed),
            blocked: Duration::ZERO,
        };
        let mut routed: u64 = 0;
        'read: while !shutdown.is_cancelled() {
            self.commit();
            self.reshard_if_due(&mut routing, &runtime, &shutdown);
            let Some(chunks) = reader.next(1 << 20, Duration::from_millis(100)) else {
                break;
            };
            for chunk in chunks {
                tracing::debug!(url = %self.url, end = ?chunk.end, samples = chunk.samples.len(), "remote write: read a chunk");
                let id = self.progress.start(chunk.end, chunk.samples.len());
                if chunk.samples.is_empty() {
                    self.progress.finish(id, 0);
                }
                for sample in chunk.samples {
                    // A read can hold a megabyte of samples, minutes of work for shards
                    // far behind: the load is judged while routing it, not only between
                    // reads, or the shards would grow late exactly when they are needed
                    // (every 256 samples: reading the clock per sample costs a few %).
                    routed = routed.wrapping_add(1);
                    if routed.is_multiple_of(256) {
                        self.reshard_if_due(&mut routing, &runtime, &shutdown);
                    }
                    let n = routing.shards.0.len() as u64;
                    let shard = &routing.shards.0[(sample.series.hash % n) as usize];
                    // Only a full shard makes the reader wait, and only that wait is timed.
                    let item = match shard.try_send(Item { sample, chunk: id }) {
                        Ok(()) => continue,
                        Err(mpsc::error::TrySendError::Closed(_)) => break 'read,
                        Err(mpsc::error::TrySendError::Full(item)) => item,
                    };
                    let t = Instant::now();
                    if shard.blocking_send(item).is_err() {
                        break 'read;
                    }
                    routing.blocked += t.elapsed();
                }
            }
        }
        drop(routing.shards.0);
        for handle in routing.shards.1 {
            let _ = runtime.block_on(handle);
        }
        self.commit();
        stopped.store(true, Ordering::Release);
    }

    /// At the end of each [`RESHARD_WINDOW`], doubles the shards when they were busy more
    /// than 70% of it while the reader waited for them more than 10% of it, halves them
    /// when they were busy less than 20%. A change lets every shard finish what it holds
    /// (so a series' samples keep their order), persists the progress, and starts the new
    /// set.
    fn reshard_if_due(
        self: &Arc<Self>,
        routing: &mut Routing,
        runtime: &tokio::runtime::Handle,
        shutdown: &CancellationToken,
    ) {
        let window = routing.window_start.elapsed();
        if window < RESHARD_WINDOW {
            return;
        }
        let n = routing.shards.0.len();
        let busy = self.stats.busy_ns.load(Ordering::Relaxed) - routing.busy_at_start;
        let util = busy as f64 / (window.as_nanos() as f64 * n as f64);
        let waited = routing.blocked.as_secs_f64() / window.as_secs_f64();
        let want = if util > 0.7 && waited > 0.1 {
            (n * 2).min(self.max_shards)
        } else if util < 0.2 {
            (n / 2).max(self.min_shards)
        } else {
            n
        };
        if want != n {
            info!(url = %self.url, from = n, to = want, utilization = format!("{util:.2}"), "remote write: resharding");
            drop(std::mem::take(&mut routing.shards.0));
            for handle in std::mem::take(&mut routing.shards.1) {
                let _ = runtime.block_on(handle);
            }
            self.commit();
            routing.shards = self.spawn_shards(runtime, want, shutdown);
        }
        routing.window_start = Instant::now();
        routing.busy_at_start = self.stats.busy_ns.load(Ordering::Relaxed);
        routing.blocked = Duration::ZERO;
    }

    /// Persists the delivered prefix (and deletes delivered segments), if it moved.
    fn commit(&self) {
        if let Some(pos) = self.progress.take_done() {
            queue::commit(&self.queue, pos);
        }
    }

    fn spawn_shards(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        n: usize,
        shutdown: &CancellationToken,
    ) -> (Vec<mpsc::Sender<Item>>, Vec<tokio::task::JoinHandle<()>>) {
        self.stats.shards.store(n, Ordering::Relaxed);
        (0..n)
            .map(|_| {
                let (tx, rx) = mpsc::channel(self.max_samples * 2);
                let handle = runtime.spawn(self.clone().shard(rx, shutdown.clone()));
                (tx, handle)
            })
            .unzip()
    }

    async fn shard(self: Arc<Self>, mut rx: mpsc::Receiver<Item>, shutdown: CancellationToken) {
        let mut pending: Vec<Item> = Vec::with_capacity(self.max_samples);
        let mut deadline = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                item = rx.recv() => match item {
                    Some(item) => {
                        if pending.is_empty() {
                            deadline = tokio::time::Instant::now() + self.batch_deadline;
                        }
                        pending.push(item);
                        if pending.len() >= self.max_samples && !self.flush(&mut pending, &shutdown).await {
                            return;
                        }
                    }
                    None => {
                        let _ = self.flush(&mut pending, &shutdown).await;
                        return;
                    }
                },
                () = tokio::time::sleep_until(deadline), if !pending.is_empty() => {
                    if !self.flush(&mut pending, &shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sends `pending` (one request, or one per cluster with a tenant header); false when
    /// shutdown interrupted it (the samples stay in the queue for the next start).
    async fn flush(&self, pending: &mut Vec<Item>, shutdown: &CancellationToken) -> bool {
        if pending.is_empty() {
            return true;
        }
        // Series grouped, each series' samples in queue order.
        pending.sort_by(|a, b| {
            (
                self.client
                    .per_cluster()
                    .then_some(&a.sample.series.cluster),
                a.sample.series.id,
            )
                .cmp(&(
                    self.client
                        .per_cluster()
                        .then_some(&b.sample.series.cluster),
                    b.sample.series.id,
                ))
        });
        let mut start = 0;
        while start < pending.len() {
            let end = if self.client.per_cluster() {
                let cluster = &pending[start].sample.series.cluster;
                start
                    + pending[start..]
                        .iter()
                        .take_while(|i| &i.sample.series.cluster == cluster)
                        .count()
            } else {
                pending.len()
            };
            let group = &pending[start..end];
            let cluster = self
                .client
                .per_cluster()
                .then(|| group[0].sample.series.cluster.clone());
            if !self.deliver(group, cluster.as_deref(), shutdown).await {
                return false;
            }
            start = end;
        }
        // Completed chunks, counted once per chunk.
        let mut done: Vec<(u64, usize)> = Vec::new();
        for item in pending.iter() {
            match done.iter_mut().find(|(c, _)| *c == item.chunk) {
                Some(entry) => entry.1 += 1,
                None => done.push((item.chunk, 1)),
            }
        }
        for (chunk, count) in done {
            self.progress.finish(chunk, count);
        }
        pending.clear();
        self.queue.wake();
        true
    }

    async fn deliver(
        &self,
        group: &[Item],
        cluster: Option<&str>,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut body = Vec::with_capacity(group.len() * 24);
        let mut newest = i64::MIN;
        let mut i = 0;
        while i < group.len() {
            let series = &group[i].sample.series;
            let run = group[i..]
                .iter()
                .take_while(|it| it.sample.series.id == series.id)
                .count();
            let samples = group[i..i + run]
                .iter()
                .map(|it| (it.sample.timestamp_ms, it.sample.value));
            newest = newest.max(group[i + run - 1].sample.timestamp_ms);
            wire::append_series(&mut body, &series.labels, samples);
            i += run;
        }
        let body = match wire::compress(&body) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                self.log(|| warn!(url = %self.url, cause = %e, "failed to compress a remote-write request; dropped"));
                self.stats
                    .dropped_4xx
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                return true;
            }
        };
        let n = group.len() as u64;
        tracing::debug!(url = %self.url, samples = n, bytes = body.len(), "remote write: sending");
        let mut backoff = MIN_BACKOFF;
        loop {
            let started = Instant::now();
            let outcome = tokio::select! {
                biased;
                () = shutdown.cancelled() => return false,
                outcome = self.client.send(body.clone(), cluster) => outcome,
            };
            match outcome {
                Outcome::Delivered => {
                    self.stats.sent.fetch_add(n, Ordering::Relaxed);
                    self.stats
                        .bytes_sent
                        .fetch_add(body.len() as u64, Ordering::Relaxed);
                    self.stats
                        .highest_sent_ms
                        .fetch_max(newest, Ordering::Relaxed);
                    self.stats
                        .busy_ns
                        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    return true;
                }
                Outcome::Drop { status, message } => {
                    self.stats.dropped_4xx.fetch_add(n, Ordering::Relaxed);
                    self.log(|| warn!(url = %self.url, status, samples = n, backend_says = %message, "remote-write backend refused a batch; dropped, not retried"));
                    return true;
                }
                Outcome::Retry {
                    reason,
                    detail,
                    after,
                } => {
                    self.stats.retried.fetch_add(n, Ordering::Relaxed);
                    self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                    let wait = after.unwrap_or_else(|| jitter(backoff));
                    self.log(|| warn!(url = %self.url, reason, cause = %detail, retry_in = ?wait, "remote write failed; retrying"));
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Runs `log` at most once per [`LOG_EVERY`].
    fn log(&self, log: impl FnOnce()) {
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            *last = Some(Instant::now());
            log();
        }
    }
}

/// Between half and all of `d`, so shards retrying together spread out.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.5..=1.0))
}
