//! Remote write: every cluster's history, as Prometheus remote-write 1.0 samples at the
//! time the sender observed them, to any number of URLs, each from its own durable queue.
//!
//! ```text
//! session ── batch ──► History ── samples ──► queue writer thread ──► segments on disk
//!    ▲                  (per cluster:                (one per URL)           │
//!    └── ack once every  cluster time, re-sends,                  reader thread (one per URL)
//!        queue wrote it  staleness markers)                                  │ hash(series)
//!                                                                 shards ── HTTP POST ──► backend
//! ```
//!
//! [`RemoteWrite`] is what the receiver holds when `--remote-write-url` is set. A session
//! hands it each batch the store applied ([`RemoteWrite::batch`]) and each heartbeat; the
//! [`History`] turns them into samples (see `history` for the rules), which are queued to
//! every URL. The session acknowledges a batch only after [`RemoteWrite::durable`] says
//! every queue wrote its samples, so an acknowledged batch survives a `kill -9` of the
//! receiver. `/metrics` never waits on any of this.
//!
//! # Layout
//! - [`wire`]: the protobuf messages, the direct encoder, snappy, the headers.
//! - [`history`]: per-cluster series tables turning batches into samples.
//! - [`queue`]: the on-disk queue (format, writer thread, reader, delivery cursor).
//! - [`shards`]: reader thread and shards: routing, batching, retries, resharding.
//! - [`client`]: the HTTP client of one URL and the verdict on each response.
//! - [`settings`]: one URL's settings.

pub mod client;
pub mod history;
pub mod queue;
pub mod settings;
pub mod shards;
pub mod wire;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_relay_proto::Batch;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use history::{Applied, History};
pub use settings::Endpoint;

use crate::{Error, Result};

/// Default interval of cluster time at which every live series is written again.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

/// Jobs waiting for a queue's writer thread (each a batch's samples).
const JOB_QUEUE: usize = 64;

/// Everything remote write needs from the receiver's configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// The URLs.
    pub endpoints: Vec<Endpoint>,
    /// Queues live in `<state_dir>/remote-write/`.
    pub state_dir: PathBuf,
    /// Re-send interval of cluster time.
    pub interval: Duration,
    /// The receiver's TTL for disconnected clusters.
    pub ttl: Duration,
    /// The store's series cap per cluster.
    pub max_series_per_cluster: usize,
}

/// Remote write to every configured URL. Shared by the sessions (`Arc`).
#[derive(Debug)]
pub struct RemoteWrite {
    history: History,
    urls: Vec<Url>,
    ttl: Duration,
}

#[derive(Debug)]
struct Url {
    display: String,
    jobs: Mutex<Option<mpsc::Sender<queue::Job>>>,
    next_ticket: Mutex<u64>,
    written: watch::Receiver<u64>,
    queue: Arc<queue::Shared>,
    stats: Arc<shards::Stats>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    reader_stopped: Arc<AtomicBool>,
}

/// Marks a batch's samples in every queue; see [`RemoteWrite::durable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket(Vec<u64>);

impl RemoteWrite {
    /// Opens every URL's queue (blocking file I/O, run on a blocking thread), builds the
    /// clients, and starts the writer and reader threads and the shards, which run until
    /// `shutdown`.
    ///
    /// # Errors
    /// [`Error::Config`] for bad settings, TLS or secret file errors from the client, and
    /// [`Error::Queue`] when a queue directory cannot be opened.
    pub async fn start(options: Options, shutdown: CancellationToken) -> Result<Arc<RemoteWrite>> {
        let runtime = tokio::runtime::Handle::current();
        let mut urls = Vec::with_capacity(options.endpoints.len());
        let mut floors = queue::Floors::new();
        for endpoint in &options.endpoints {
            let client = client::Client::new(endpoint)?;
            let shown = endpoint.display_url();
            let dir = queue_dir(&options.state_dir, &endpoint.url);
            let (tx, rx) = mpsc::channel(JOB_QUEUE);
            let (open_dir, name, max) = (dir.clone(), shown.clone(), endpoint.max_queue_bytes);
            let ((shared, written, writer), found) = tokio::task::spawn_blocking(move || {
                let mut found = queue::Floors::new();
                queue::open(&open_dir, max, rx, name, &mut found).map(|q| (q, found))
            })
            .await
            .map_err(|e| Error::Config(format!("remote-write queue start failed: {e}")))?
            .map_err(|source| Error::Queue {
                path: dir.clone(),
                source,
            })?;
            // A sample is queued to every URL at once: the newest found anywhere counts.
            for (labels, ts) in found {
                let last = floors.entry(labels).or_insert(ts);
                *last = (*last).max(ts);
            }
            let stats = Arc::new(shards::Stats::default());
            let sender = shards::Sender::new(
                shown.clone(),
                client,
                shared.clone(),
                stats.clone(),
                endpoint.max_samples_per_send,
                endpoint.batch_deadline,
                endpoint.min_shards,
                endpoint.max_shards,
            );
            let stopped = Arc::new(AtomicBool::new(false));
            let (rt, stop, flag) = (runtime.clone(), shutdown.clone(), stopped.clone());
            let reader = std::thread::Builder::new()
                .name("rw-reader".into())
                .spawn(move || sender.run_reader(rt, stop, flag))
                .map_err(|source| Error::Queue {
                    path: dir.clone(),
                    source,
                })?;
            info!(url = %shown, queue = %dir.to_string_lossy(), max_queue_bytes = endpoint.max_queue_bytes,
                  shards = format!("{}..{}", endpoint.min_shards, endpoint.max_shards), "remote write enabled");
            urls.push(Url {
                display: shown,
                jobs: Mutex::new(Some(tx)),
                next_ticket: Mutex::new(0),
                written,
                queue: shared,
                stats,
                threads: Mutex::new(vec![writer, reader]),
                reader_stopped: stopped,
            });
        }
        let history = History::new(options.interval, options.max_series_per_cluster);
        history.restore(floors);
        let rw = Arc::new(RemoteWrite {
            history,
            urls,
            ttl: options.ttl,
        });
        Ok(rw)
    }

    /// The history (for tests and status).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// A connection claimed `cluster`; the generation to release it with.
    pub fn claim(&self, cluster: &str) -> u64 {
        self.history.claim(cluster)
    }

    /// The connection of claim `generation` on `cluster` ended.
    pub fn release(&self, cluster: &str, generation: u64) {
        self.history.release(cluster, generation, Instant::now());
    }

    /// Queues the samples of a batch the store applied; the ticket to wait on before
    /// acknowledging it, or `None` when it wrote no sample.
    pub async fn batch(&self, cluster: &str, batch: &Batch, applied: Applied) -> Option<Ticket> {
        let mut samples = Vec::new();
        self.history.apply(cluster, batch, applied, &mut samples);
        self.enqueue(samples).await
    }

    /// Moves `cluster`'s time to a heartbeat's and queues the re-sends it makes due; the
    /// ticket, if it wrote any (the next acknowledgement waits for it too).
    pub async fn heartbeat(&self, cluster: &str, sent_at_ms: u64) -> Option<Ticket> {
        let mut samples = Vec::new();
        self.history.heartbeat(cluster, sent_at_ms, &mut samples);
        self.enqueue(samples).await
    }

    async fn enqueue(&self, samples: Vec<history::Sample>) -> Option<Ticket> {
        if samples.is_empty() {
            return None;
        }
        let samples: Arc<[history::Sample]> = samples.into();
        let mut tickets = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            let Some(tx) = url.jobs.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
                tickets.push(0);
                continue;
            };
            let Ok(permit) = tx.reserve().await else {
                tickets.push(0);
                continue;
            };
            // Tickets are taken and sent under one lock, so each queue sees them in order.
            let mut next = url.next_ticket.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            permit.send(queue::Job {
                ticket: *next,
                samples: samples.clone(),
            });
            tickets.push(*next);
        }
        Some(Ticket(tickets))
    }

    /// Waits until every queue wrote the samples of `ticket` (and so of every earlier one).
    pub async fn durable(&self, ticket: &Ticket) {
        for (url, &t) in self.urls.iter().zip(&ticket.0) {
            let mut written = url.written.clone();
            let _ = written.wait_for(|w| *w >= t).await;
        }
    }

    /// Writes the staleness markers of clusters that expired after the TTL, until
    /// `shutdown`.
    pub async fn run_expiry(&self, shutdown: CancellationToken) {
        loop {
            let mut samples = Vec::new();
            self.history.expire(Instant::now(), self.ttl, &mut samples);
            let _ = self.enqueue(samples).await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Closes the queues after the sessions ended: the writer threads write what they
    /// hold and sync, the reader threads (stopped by the shutdown signal) persist their
    /// cursors. Blocking joins run on a blocking thread.
    pub async fn close(&self) {
        let mut threads = Vec::new();
        for url in &self.urls {
            url.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
            url.queue.wake();
            threads.append(&mut url.threads.lock().unwrap_or_else(|p| p.into_inner()));
        }
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }

    /// A collector of the per-URL self-metrics.
    pub fn collector(self: &Arc<Self>) -> Box<dyn Collector> {
        Box::new(StatsCollector(self.clone()))
    }

    /// Whether every reader thread has stopped (after shutdown).
    pub fn stopped(&self) -> bool {
        self.urls
            .iter()
            .all(|u| u.reader_stopped.load(Ordering::Acquire))
    }
}

/// `<state_dir>/remote-write/<host and path, sanitised>-<crc32 of the URL>`: readable, and
/// distinct for distinct URLs.
pub fn queue_dir(state_dir: &Path, url: &str) -> PathBuf {
    let shown = settings::redact_url(url);
    let rest = shown.split_once("://").map_or(shown.as_str(), |(_, r)| r);
    let readable: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    state_dir.join("remote-write").join(format!(
        "{readable}-{:08x}",
        crc32fast::hash(url.as_bytes())
    ))
}

#[derive(Debug)]
struct StatsCollector(Arc<RemoteWrite>);

/// A per-URL metric: name, help, and how to read it.
type UrlMetric<T> = (&'static str, &'static str, fn(&Url) -> T);

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let urls = &self.0.urls;
        let counters: [UrlMetric<u64>; 4] = [
            (
                "relay_remote_write_samples_sent",
                "Samples the remote-write backend accepted.",
                |u| u.stats.sent.load(Ordering::Relaxed),
            ),
            (
                "relay_remote_write_samples_retried",
                "Samples sent again after a failed request (network error, timeout, 5xx, 429).",
                |u| u.stats.retried.load(Ordering::Relaxed),
            ),
            (
                "relay_remote_write_bytes_sent",
                "Compressed request bytes the remote-write backend accepted.",
                |u| u.stats.bytes_sent.load(Ordering::Relaxed),
            ),
            (
                "relay_remote_write_failed_requests",
                "Requests that failed and were retried.",
                |u| u.stats.failed_requests.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for u in urls {
                ConstCounter::new(value(u))
                    .encode(m.encode_family(&[("url", u.display.as_str())])?)?;
            }
        }
        let mut dropped = encoder.encode_descriptor(
            "relay_remote_write_samples_dropped",
            "Samples never delivered, by reason: queue_full (the on-disk queue hit its byte \
             limit and lost its oldest data), http_4xx (the backend refused the batch).",
            None,
            MetricType::Counter,
        )?;
        for u in urls {
            let full = u.queue.stats.dropped_full.load(Ordering::Relaxed);
            let refused = u.stats.dropped_4xx.load(Ordering::Relaxed);
            for (reason, v) in [("queue_full", full), ("http_4xx", refused)] {
                ConstCounter::new(v).encode(
                    dropped.encode_family(&[("url", u.display.as_str()), ("reason", reason)])?,
                )?;
            }
        }
        let skipped = ConstCounter::new(self.0.history.skipped());
        skipped.encode(encoder.encode_descriptor(
            "relay_remote_write_samples_replayed_skipped",
            "Samples not queued again because the queue a previous run left on disk already \
             held them (a sender replaying batches whose ack the killed receiver never sent).",
            None,
            MetricType::Counter,
        )?)?;
        let retimed = ConstCounter::new(self.0.history.retimed());
        retimed.encode(encoder.encode_descriptor(
            "relay_remote_write_samples_retimed",
            "Samples written 1 ms after their series' previous sample because they were \
             stamped at or before it (a sender clock stepping back).",
            None,
            MetricType::Counter,
        )?)?;
        let gauges: [UrlMetric<f64>; 3] = [
            (
                "relay_remote_write_queue_bytes",
                "Bytes of the URL's on-disk queue.",
                |u| u.queue.stats.bytes.load(Ordering::Relaxed) as f64,
            ),
            (
                "relay_remote_write_shards",
                "Parallel connections sending the URL's queue.",
                |u| u.stats.shards.load(Ordering::Relaxed) as f64,
            ),
            (
                "relay_remote_write_behind_seconds",
                "How far the newest sample delivered is behind the newest sample queued, in \
                 cluster time (0 when the queue is drained).",
                |u| {
                    let written = u.queue.stats.newest_written_ms.load(Ordering::Relaxed);
                    let sent = u.stats.highest_sent_ms.load(Ordering::Relaxed);
                    // Before the first delivery: behind by everything queued since start.
                    let since = if sent > 0 {
                        sent
                    } else {
                        u.queue.stats.oldest_written_ms.load(Ordering::Relaxed)
                    };
                    if written <= 0 || since >= written {
                        0.0
                    } else {
                        (written - since) as f64 / 1000.0
                    }
                },
            ),
        ];
        for (name, help, value) in gauges {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for u in urls {
                ConstGauge::new(value(u))
                    .encode(m.encode_family(&[("url", u.display.as_str())])?)?;
            }
        }
        Ok(())
    }
}
