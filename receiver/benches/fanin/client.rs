//! One simulated sender: the real protocol (`kube_relay_proto`'s codec and handshake,
//! optionally TLS and a token) over its own TCP connection from its own loopback source
//! address. It sends a snapshot, then a batch of changes every `batch_every`, and records for
//! every batch the time from its send to the receiver's ack. Told to cut its link, it drops
//! the connection at once and reconnects with a new epoch (so with a snapshot), as a
//! restarted sender would; a refused or lost connection is retried with jittered exponential
//! backoff and counted.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use kube_relay_proto::{
    DEFAULT_MAX_FRAME_BYTES, Heartbeat, Hello, PROTOCOL_VERSION, ReceiverMessage, Resume,
    SenderCodec, SenderMessage,
};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::workload;

/// What every client does, shared.
pub struct Plan {
    /// The receiver's sender port.
    pub ingest: SocketAddr,
    /// TLS connector and the name the receiver's certificate is checked against.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Token sent in `Hello`.
    pub token: Option<String>,
    /// Series per sender.
    pub series: u32,
    /// Series changed per steady batch.
    pub changes_per_batch: u32,
    /// Time between two steady batches of one sender.
    pub batch_every: Duration,
    /// Loopback source addresses the clients spread over (sender `i` uses `i % len`).
    pub sources: Vec<IpAddr>,
    /// Bounds connection attempts under way at once, for the initial ramp only.
    pub ramp: Semaphore,
}

/// What the orchestrator tells every client; clients watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Bumped to make every client cut its connection and reconnect at once.
    pub generation: u32,
    /// Clients close their connection and end.
    pub stop: bool,
}

/// Figures every client adds to.
#[derive(Default)]
pub struct Tally {
    /// Ack latencies of steady batches, in microseconds, since the last `take`.
    latencies: Mutex<Vec<u32>>,
    /// Per reconnect generation, each client's time from the cut to its snapshot acked.
    equal_after: Mutex<Vec<(u32, Duration)>>,
    /// Snapshots acked (clients whose cluster equals what they sent).
    pub snapshots_acked: AtomicU64,
    /// Handshakes answered with a `Reject`, by reason label.
    refusals: Mutex<Vec<(&'static str, u64)>>,
    /// Connections that failed or broke without a `Reject` (refused at accept, reset...).
    pub connection_failures: AtomicU64,
    /// Steady batches sent.
    pub batches_sent: AtomicU64,
    /// When the cut of each generation was ordered.
    cut_at: Mutex<Vec<(u32, Instant)>>,
    /// The last connection failure, to say what they were.
    last_failure: Mutex<Option<String>>,
}

impl Tally {
    /// The steady-batch latencies recorded since the last call, in microseconds.
    pub fn take_latencies(&self) -> Vec<u32> {
        std::mem::take(&mut *lock(&self.latencies))
    }

    /// Each client's time from the cut of `generation` to its snapshot acked.
    pub fn equal_after(&self, generation: u32) -> Vec<Duration> {
        lock(&self.equal_after)
            .iter()
            .filter(|(g, _)| *g == generation)
            .map(|(_, d)| *d)
            .collect()
    }

    /// Refusals by reason.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        lock(&self.refusals).clone()
    }

    /// Records that the cut of `generation` is ordered now.
    pub fn cut(&self, generation: u32) {
        lock(&self.cut_at).push((generation, Instant::now()));
    }

    /// The last connection failure seen, if any.
    pub fn last_failure(&self) -> Option<String> {
        lock(&self.last_failure).clone()
    }

    fn refused(&self, reason: &'static str) {
        let mut refusals = lock(&self.refusals);
        match refusals.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => refusals.push((reason, 1)),
        }
    }

    fn snapshot_acked(&self, generation: u32) {
        self.snapshots_acked.fetch_add(1, Ordering::Relaxed);
        let cut = lock(&self.cut_at)
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, at)| *at);
        if let Some(at) = cut {
            lock(&self.equal_after).push((generation, at.elapsed()));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How one connection ended.
enum End {
    Stop,
    Cut,
}

/// Why a connection attempt or session failed.
enum Failure {
    Refused(&'static str),
    Broken(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Broken(e)
    }
}

/// Runs client `id` until told to stop.
pub async fn run(
    plan: Arc<Plan>,
    tally: Arc<Tally>,
    id: usize,
    mut control: watch::Receiver<Control>,
) {
    let cluster = format!("fanin-{id:05}");
    let mut epoch = 1u64;
    let mut failures = 0u32;
    let mut ramping = true;
    // The generation whose snapshot this client last counted as acked: a connection that
    // breaks after its snapshot was acked must not count the cluster equal twice.
    let mut counted: Option<u32> = None;
    loop {
        let now = *control.borrow_and_update();
        if now.stop {
            return;
        }
        let result = session(
            &plan,
            &tally,
            id,
            &cluster,
            epoch,
            now.generation,
            ramping,
            &mut counted,
            &mut control,
        )
        .await;
        ramping = false;
        epoch += 1;
        match result {
            Ok(End::Stop) => return,
            Ok(End::Cut) => failures = 0,
            Err(failure) => {
                match failure {
                    Failure::Refused(reason) => tally.refused(reason),
                    Failure::Broken(e) => {
                        tally.connection_failures.fetch_add(1, Ordering::Relaxed);
                        *lock(&tally.last_failure) = Some(format!("{e:#}"));
                    }
                }
                failures += 1;
                // Full jitter over an exponential ceiling, 100 ms .. 5 s, as senders back off.
                let ceiling = 100u64 << failures.min(6);
                let wait = rand::rng().random_range(0..=ceiling.min(5000));
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    _ = control.changed() => {}
                }
            }
        }
    }
}

async fn connect(plan: &Plan, id: usize) -> Result<Box<dyn Io>> {
    let socket = if plan.ingest.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    let source = plan.sources[id % plan.sources.len()];
    socket
        .bind(SocketAddr::new(source, 0))
        .with_context(|| format!("failed to bind {source}"))?;
    let tcp = socket
        .connect(plan.ingest)
        .await
        .context("failed to connect")?;
    tcp.set_nodelay(true)?;
    Ok(match &plan.tls {
        None => Box::new(tcp),
        Some((connector, name)) => Box::new(
            connector
                .connect(name.clone(), tcp)
                .await
                .context("TLS handshake failed")?,
        ),
    })
}

#[allow(clippy::too_many_arguments)]
async fn session(
    plan: &Plan,
    tally: &Tally,
    id: usize,
    cluster: &str,
    epoch: u64,
    generation: u32,
    ramping: bool,
    counted: &mut Option<u32>,
    control: &mut watch::Receiver<Control>,
) -> Result<End, Failure> {
    let io = if ramping {
        let _slot = plan
            .ramp
            .acquire()
            .await
            .map_err(|e| Failure::Broken(e.into()))?;
        connect(plan, id).await?
    } else {
        connect(plan, id).await?
    };
    let (read, write) = tokio::io::split(io);
    let mut rx = FramedRead::new(read, SenderCodec::new(DEFAULT_MAX_FRAME_BYTES));
    let mut tx = FramedWrite::new(write, SenderCodec::new(DEFAULT_MAX_FRAME_BYTES));
    tx.send(SenderMessage::Hello(Hello {
        version: PROTOCOL_VERSION,
        cluster: cluster.to_owned(),
        sender_id: format!("fanin-{id}"),
        epoch,
        token: plan.token.clone(),
        resume_from: None,
        agent: "fanin-bench".into(),
    }))
    .await
    .context("failed to send Hello")?;
    let welcome = tokio::time::timeout(Duration::from_secs(30), rx.next())
        .await
        .context("no Welcome within 30 s")?;
    match welcome {
        Some(Ok(ReceiverMessage::Welcome(w))) if w.resume == Resume::Snapshot => {}
        Some(Ok(ReceiverMessage::Welcome(w))) => {
            return Err(anyhow::anyhow!("a new epoch was told to resume: {:?}", w.resume).into());
        }
        Some(Ok(ReceiverMessage::Reject(r))) => return Err(Failure::Refused(r.reason.as_label())),
        Some(Ok(other)) => return Err(anyhow::anyhow!("expected Welcome, got {other:?}").into()),
        Some(Err(e)) => return Err(anyhow::Error::from(e).context("handshake").into()),
        None => return Err(anyhow::anyhow!("closed during the handshake").into()),
    }

    let parts = workload::snapshot(id, plan.series, 1, now_ms());
    let snapshot_last = parts.len() as u64;
    for part in parts {
        tx.send(SenderMessage::Batch(part))
            .await
            .context("failed to send the snapshot")?;
    }
    let mut next_seq = snapshot_last + 1;
    let mut snapshot_acked = false;
    // Steady batches not yet acked: (seq, sent at).
    let mut in_flight: std::collections::VecDeque<(u64, Instant)> = Default::default();
    let mut cursor = 0u32;
    // Each sender starts at its own phase of the period, so load is spread as in a fleet.
    let phase = rand::rng().random_range(0..plan.batch_every.as_micros().max(1) as u64);
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_micros(phase),
        plan.batch_every,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(ReceiverMessage::Ack(ack))) if ack.epoch == epoch => {
                    if !snapshot_acked && ack.seq >= snapshot_last {
                        snapshot_acked = true;
                        if *counted != Some(generation) {
                            *counted = Some(generation);
                            tally.snapshot_acked(generation);
                        }
                    }
                    let mut acked = Vec::new();
                    while let Some(&(seq, at)) = in_flight.front() {
                        if seq > ack.seq {
                            break;
                        }
                        acked.push(at.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        in_flight.pop_front();
                    }
                    if !acked.is_empty() {
                        lock(&tally.latencies).extend(acked);
                    }
                }
                Some(Ok(ReceiverMessage::Ack(_) | ReceiverMessage::Heartbeat(_))) => {}
                Some(Ok(ReceiverMessage::Reject(r))) => return Err(Failure::Refused(r.reason.as_label())),
                Some(Ok(other)) => return Err(anyhow::anyhow!("unexpected {other:?}").into()),
                Some(Err(e)) => return Err(anyhow::Error::from(e).into()),
                None => return Err(anyhow::anyhow!("the receiver closed the connection").into()),
            },
            _ = ticker.tick() => {
                // Changes only once the snapshot is in (a sender streams deltas after it);
                // until then a heartbeat keeps the link alive.
                if snapshot_acked {
                    let batch = workload::changes(next_seq, plan.series, plan.changes_per_batch, &mut cursor, now_ms());
                    in_flight.push_back((next_seq, Instant::now()));
                    next_seq += 1;
                    tally.batches_sent.fetch_add(1, Ordering::Relaxed);
                    tx.send(SenderMessage::Batch(batch)).await.context("failed to send a batch")?;
                } else {
                    tx.send(SenderMessage::Heartbeat(Heartbeat { sent_at_ms: now_ms() }))
                        .await
                        .context("failed to send a heartbeat")?;
                }
            }
            changed = control.changed() => {
                let now = *control.borrow_and_update();
                if changed.is_err() || now.stop {
                    // Not a Goodbye: the receiver keeps the cluster until its TTL, which
                    // does not matter at the end of a run.
                    return Ok(End::Stop);
                }
                if now.generation != generation {
                    // Dropped without a goodbye: a link cut as the receiver sees it.
                    return Ok(End::Cut);
                }
            }
        }
    }
}

/// Fails when a steady state is not reached: not every snapshot acked in `within`.
pub async fn wait_snapshots(tally: &Tally, target: u64, within: Duration) -> Result<Duration> {
    let start = Instant::now();
    while tally.snapshots_acked.load(Ordering::Relaxed) < target {
        if start.elapsed() > within {
            bail!(
                "only {} of {target} snapshots acked within {within:?}",
                tally.snapshots_acked.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}
