//! The connection to the receiver: handshake, snapshot, deltas, heartbeats, acks, replay,
//! reconnects.
//!
//! [`Link::run`] keeps one session at a time over any `AsyncRead + AsyncWrite` transport a
//! [`Connector`] opens (plain TCP or TLS, [`crate::transport`], [`crate::tls`]). A session:
//! 1. `Hello` (version, cluster, sender id, epoch, token, the oldest batch it could replay);
//!    `Reject` ends it (`UnsupportedVersion` is fatal; anything else, `Unauthorized`
//!    included, is logged and backs off), `Welcome` carries the heartbeat interval, which
//!    wins over ours;
//! 2. `Welcome{After{acked}}` when the receiver holds our series table and everything
//!    unacknowledged is still in the [`Spool`]: replay the spool after `acked`. Otherwise,
//!    if the spool holds batches numbered by the current store, a *base* (the definitions
//!    the spool needs, [`crate::store`]) and the spool renumbered to follow it, then, once
//!    those are acknowledged, a full snapshot, one frame at a time, from the
//!    [`SeriesStore`](crate::store::SeriesStore); if not, the snapshot at once, which
//!    supersedes the spool (counted). A link built on a spool that already holds batches (a
//!    [`DiskSpool`](crate::spool::DiskSpool) reopened after a restart) offers them in its
//!    first `Hello` and, on `Welcome{After}`, replays those after `acked`, then the snapshot
//!    once they are acknowledged (on `Snapshot` they are superseded: they name the previous
//!    run's ids); a spooled batch that does not decode ends any replay, and a snapshot
//!    follows that supersedes it and the batches after it (counted as superseded, not
//!    dropped);
//! 3. deltas: changes wait `flush_interval` to coalesce, then go as batches with consecutive
//!    sequence numbers, kept in the spool until acknowledged (each written to it before it
//!    is sent, [`Spool::pushed`]); while the spool is full, deltas wait up to
//!    `ack_patience` for acks to make room (changes keep coalescing meanwhile), and only
//!    then is the oldest batch dropped (see [`crate::spool`]);
//!    an ack of a seq not sent yet is ignored (and logged once);
//! 4. a heartbeat after one silent interval, only when no batch waits; no frame from the
//!    receiver within three intervals means a dead link;
//! 5. on shutdown: pending deltas, then `Goodbye`, within the shutdown bound.
//!
//! Between sessions (while connecting and backing off) changes keep going into the spool
//! at the flush cadence, as if sent, each batch with the time of its changes, as long as a
//! receiver got our table in this epoch and the spool has room; a full spool stops that
//! (changes coalesce in the store, bounded by the number of series) rather than dropping
//! what cannot be acknowledged yet. Reconnects back off (800 ms → 30 s, jittered, reset
//! after a session in which the receiver acknowledged data, or that lasted 30 s).

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use kube_relay_proto::frame::{decode_payload, encode_payload};
use kube_relay_proto::{
    Batch, Goodbye, Heartbeat, Hello, MAX_HANDSHAKE_FRAME_BYTES, PROTOCOL_VERSION, ReceiverMessage,
    RejectReason, Resume, SenderCodec, SenderMessage, SeriesId, Welcome,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::{Backoff, HEALTHY_AFTER};
use crate::config::{Config, defaults};
use crate::error::Error;
use crate::shared::Shared;
use crate::spool::{MemorySpool, Spool};
use crate::transport::Connector;

/// Default [`LinkConfig::ack_patience`]: a few of the receiver's ack intervals (100 ms).
pub const ACK_PATIENCE: Duration = Duration::from_millis(500);

/// The frame limit of a session: our own, lowered to the receiver's (its `--max-frame-bytes`
/// from `Welcome`; 0 means it named none). Batches are split to fit it, so no frame the
/// receiver would refuse as too large is ever written.
pub fn frame_limit(ours: usize, receivers: u32) -> usize {
    match usize::try_from(receivers) {
        Ok(0) | Err(_) => ours,
        Ok(theirs) => ours.min(theirs),
    }
}

/// Counts bytes written through it.
struct CountingIo<T> {
    inner: T,
    written: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a session needs to know about this sender.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Cluster name.
    pub cluster: String,
    /// Stable sender identity.
    pub sender_id: String,
    /// Shared secret.
    pub token: Option<String>,
    /// Heartbeat interval if the receiver's `Welcome` names none (receivers always do).
    pub heartbeat_interval: Duration,
    /// How long changes coalesce before a delta batch.
    pub flush_interval: Duration,
    /// Largest frame payload this sender writes; the receiver's smaller limit (from its
    /// `Welcome`) lowers it for the session.
    pub max_frame_bytes: usize,
    /// Bound of connect + handshake.
    pub connect_timeout: Duration,
    /// Bound of the final flush and goodbye.
    pub shutdown_timeout: Duration,
    /// Spool bound in bytes.
    pub spool_max_bytes: u64,
    /// How long deltas wait for acknowledgements to make room in a full spool before the
    /// oldest batches are dropped to make it.
    pub ack_patience: Duration,
}

impl LinkConfig {
    /// The link settings of a sender configuration, for `cluster` and `sender_id`.
    pub fn from_config(config: &Config, cluster: String, sender_id: String) -> Self {
        LinkConfig {
            cluster,
            sender_id,
            token: config.token.clone(),
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            flush_interval: config.flush_interval,
            max_frame_bytes: defaults::MAX_FRAME_BYTES,
            connect_timeout: config.connect_timeout,
            shutdown_timeout: config.shutdown_timeout,
            spool_max_bytes: config.spool_max_bytes,
            ack_patience: ACK_PATIENCE,
        }
    }

    /// Defaults for `cluster` and `sender_id` (tests).
    pub fn new(cluster: impl Into<String>, sender_id: impl Into<String>) -> Self {
        LinkConfig {
            cluster: cluster.into(),
            sender_id: sender_id.into(),
            token: None,
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            flush_interval: defaults::FLUSH_INTERVAL,
            max_frame_bytes: defaults::MAX_FRAME_BYTES,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
            spool_max_bytes: defaults::SPOOL_MAX_BYTES,
            ack_patience: ACK_PATIENCE,
        }
    }
}

/// Why a session ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEnd {
    /// Shutdown requested: goodbye said.
    Shutdown,
    /// Series ids were renumbered: reconnect under the new epoch.
    EpochChanged,
}

/// How an attempt at a base ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Based {
    /// The base went out and the spool was replayed after it; a snapshot is owed.
    Sent,
    /// No base can be built: the spool is empty, of a previous run, damaged, or names
    /// series that can no longer be described. A snapshot supersedes the spool.
    Impossible,
    /// Shutdown requested during the base: goodbye said.
    Shutdown,
}

type Conn<T> = Framed<CountingIo<T>, SenderCodec>;

/// Connects through `connector`, sends `hello` and reads the answer, within
/// `connect_timeout` for the connection and again for the answer. Owns what it uses, so the
/// link can spool changes while it runs.
async fn handshake<C: Connector>(
    connector: Arc<C>,
    hello: Hello,
    connect_timeout: Duration,
) -> Result<(Conn<C::Io>, Welcome), Error> {
    let target = connector.target().to_owned();
    let io = match timeout(connect_timeout, connector.connect()).await {
        Ok(Ok(io)) => io,
        Ok(Err(source)) => return Err(Error::Connect { target, source }),
        Err(_) => {
            return Err(Error::Connect {
                target,
                source: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            });
        }
    };
    let io = CountingIo {
        inner: io,
        written: Arc::new(AtomicU64::new(0)),
    };
    let mut conn = Framed::new(io, SenderCodec::new(MAX_HANDSHAKE_FRAME_BYTES));
    let answer = timeout(connect_timeout, async {
        conn.send(SenderMessage::Hello(hello)).await?;
        conn.next().await.transpose()
    })
    .await
    .map_err(|_| {
        Error::Session(format!(
            "no answer to the handshake within {connect_timeout:?}"
        ))
    })??;
    match answer {
        Some(ReceiverMessage::Welcome(w)) => Ok((conn, w)),
        Some(ReceiverMessage::Reject(r)) => Err(Error::Rejected {
            reason: r.reason,
            message: r.message,
        }),
        Some(other) => Err(Error::Session(format!(
            "expected Welcome or Reject, got {other:?}"
        ))),
        None => Err(Error::Session(
            "the receiver closed the connection during the handshake".to_owned(),
        )),
    }
}

/// What the spooled batches name without defining it, and when the oldest was observed;
/// `None` when one does not decode (a damaged spool cannot be replayed whole).
fn named_in(spooled: &[(u64, Bytes)]) -> Option<(Vec<SeriesId>, u64)> {
    let mut defined: HashSet<SeriesId> = HashSet::new();
    let mut named = Vec::new();
    let mut oldest_ms = None;
    for (_, payload) in spooled {
        let Ok(SenderMessage::Batch(batch)) = decode_payload(payload) else {
            return None;
        };
        oldest_ms.get_or_insert(batch.observed_at_ms);
        defined.extend(batch.series.iter().map(|s| s.id));
        named.extend(
            batch
                .updates
                .iter()
                .map(|(id, _)| *id)
                .chain(batch.removals.iter().copied())
                .filter(|id| !defined.contains(id)),
        );
    }
    Some((named, oldest_ms.unwrap_or(0)))
}

/// The sender's side of the protocol. See the [module docs](self).
pub struct Link<C: Connector, S: Spool = MemorySpool> {
    config: LinkConfig,
    /// The receivers, in failover order (never empty).
    targets: Vec<Arc<C>>,
    /// Index of the one in use (see [`Link::fail_over`]).
    current: usize,
    shared: Arc<Shared>,
    spool: S,
    epoch: u64,
    /// Next sequence number on the wire in `epoch`.
    next_seq: u64,
    /// Spooled batch `s` goes on the wire as `s + renumbered`: a base renumbered the spool to
    /// follow it. 0 otherwise; back to 0 whenever the spool is empty.
    renumbered: u64,
    /// Wire seq of the last part of the latest snapshot or base fully sent: a receiver that
    /// acknowledged it holds our series table, and batches spooled after it can be replayed
    /// to it.
    table_done: Option<u64>,
    /// A snapshot must follow as soon as the spooled batches just replayed are acknowledged
    /// (after a restarted sender's replay, or a base).
    snapshot_owed: bool,
    /// Highest seq the receiver acknowledged in `epoch`.
    acked: u64,
    /// The spool came with batches of a previous run (a restarted sender): offered for
    /// replay at the first `Welcome`, then a snapshot follows.
    restored: bool,
    /// An ack of a batch not sent yet was logged (once per link).
    warned_future_ack: bool,
    backoff: Backoff,
    /// Largest frame payload of the current session: the smaller of ours and the
    /// receiver's (see [`frame_limit`]).
    frame_limit: usize,
    /// The receiver acknowledged data in the current (or last) session: it worked, so the
    /// reconnect backoff starts afresh.
    delivered: bool,
}

impl<C: Connector> Link<C, MemorySpool> {
    /// A link with an in-memory spool.
    pub fn new(config: LinkConfig, connector: C, shared: Arc<Shared>) -> Self {
        let spool = MemorySpool::new(config.spool_max_bytes);
        Link::with_spool(config, connector, shared, spool)
    }
}

impl<C: Connector, S: Spool> Link<C, S> {
    /// A link with the given spool.
    ///
    /// A spool that already holds batches (a [`DiskSpool`](crate::spool::DiskSpool)
    /// reopened after a restart) must hold them for the store's epoch: the link numbers on
    /// after the newest, offers them for replay in its first `Hello` and sends a snapshot
    /// after them (see `docs/protocol.md`, "Sender restarts"). An empty spool is reset to
    /// the store's epoch. The store keeps removed series' definitions within the spool's
    /// bound, for a base.
    pub fn with_spool(config: LinkConfig, connector: C, shared: Arc<Shared>, spool: S) -> Self {
        Link::build(config, vec![Arc::new(connector)], shared, spool)
    }

    /// A link to several receivers, in failover order (see [`Link::fail_over`]), with the
    /// given spool (as [`Link::with_spool`]).
    ///
    /// # Errors
    /// [`Error::Config`] when `targets` is empty.
    pub fn with_targets(
        config: LinkConfig,
        targets: Vec<C>,
        shared: Arc<Shared>,
        spool: S,
    ) -> Result<Self, Error> {
        if targets.is_empty() {
            return Err(Error::Config(
                "no receiver to connect to: give --target HOST:PORT".to_owned(),
            ));
        }
        let targets = targets.into_iter().map(Arc::new).collect();
        Ok(Link::build(config, targets, shared, spool))
    }

    fn build(config: LinkConfig, targets: Vec<Arc<C>>, shared: Arc<Shared>, mut spool: S) -> Self {
        let epoch = shared.store().epoch();
        let restored = spool.newest();
        if restored.is_none() {
            spool.reset(epoch);
        }
        shared.store().keep_tombstones(config.spool_max_bytes);
        let stats = &shared.stats;
        stats
            .spooled_samples
            .store(spool.samples(), Ordering::Relaxed);
        stats.set_targets(targets.iter().map(|t| t.target().to_owned()).collect());
        Link {
            targets,
            current: 0,
            shared,
            spool,
            epoch,
            next_seq: restored.map_or(1, |newest| newest.saturating_add(1)),
            renumbered: 0,
            table_done: None,
            snapshot_owed: false,
            acked: 0,
            restored: restored.is_some(),
            warned_future_ack: false,
            backoff: Backoff::new(),
            frame_limit: config.max_frame_bytes,
            delivered: false,
            config,
        }
    }

    /// Keeps a session to the receiver until `shutdown`, reconnecting with backoff, and
    /// spooling changes while no session is up.
    ///
    /// # Errors
    /// Only fatal ones: the receiver does not speak our protocol version.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        let result = self.run_sessions(&shutdown).await;
        // A disk spool's last sync and trim point, off the runtime.
        self.spool.close().await;
        result
    }

    async fn run_sessions(&mut self, shutdown: &CancellationToken) -> Result<(), Error> {
        let mut first = true;
        // Failures since the last session began or the last wait: once every target has
        // failed in a row, the link waits (backs off) before the next round.
        let mut failures = 0;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            self.sync_epoch();
            let started = Instant::now();
            self.delivered = false;
            let attempt = handshake(
                Arc::clone(&self.targets[self.current]),
                self.hello(),
                self.config.connect_timeout,
            );
            let result = match self.spooling_while(attempt, shutdown).await {
                None => return Ok(()),
                Some(Ok((mut conn, welcome))) => {
                    failures = 0;
                    self.session(&mut conn, welcome, shutdown, &mut first).await
                }
                Some(Err(e)) => {
                    self.shared.stats.connect_error(e.kind());
                    Err(e)
                }
            };
            self.shared.stats.connected.store(false, Ordering::Relaxed);
            match result {
                Ok(SessionEnd::Shutdown) => return Ok(()),
                Ok(SessionEnd::EpochChanged) => {
                    info!(epoch = self.epoch, "reconnecting under a new epoch");
                    continue;
                }
                Err(e) if e.is_fatal() => {
                    warn!(target = self.target(), cause = %e, "giving up");
                    return Err(e);
                }
                Err(e) => {
                    // A session the receiver acknowledged data in worked: the next wait
                    // starts from the first delay again (a receiver restart after a short
                    // session is not met with the backoff of earlier failures).
                    if self.delivered || started.elapsed() >= HEALTHY_AFTER {
                        self.backoff.reset();
                    }
                    failures += 1;
                    let failed = self.current;
                    let moved = self.fail_over(&e);
                    // The next receiver at once, until every one failed in a row.
                    let delay = if moved && failures < self.targets.len() {
                        Duration::ZERO
                    } else {
                        failures = 0;
                        self.backoff.next_delay()
                    };
                    let retry_in_ms = delay.as_millis() as u64;
                    let target = self.targets[failed].target();
                    // Refusals a retry alone will not cure: say what to check.
                    match e.hint() {
                        Some(hint) => error!(
                            target,
                            kind = e.kind(),
                            cause = %e,
                            hint,
                            retry_in_ms,
                            "the receiver cannot be trusted or refused us; retrying"
                        ),
                        None => warn!(
                            target,
                            kind = e.kind(),
                            cause = %e,
                            retry_in_ms,
                            "connection to the receiver failed"
                        ),
                    }
                    if moved {
                        info!(
                            from = target,
                            to = self.target(),
                            retry_in_ms,
                            "failing over to the next receiver"
                        );
                    }
                    if self.spooling_while(sleep(delay), shutdown).await.is_none() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Where the link connects now.
    fn target(&self) -> &str {
        self.targets[self.current].target()
    }

    /// Moves to the next receiver after `e` ended an attempt or a session there; returns
    /// whether it did. Every failure moves on but `Reject{ClusterInUse}`: another sender of
    /// this cluster is live at that receiver, and streaming to another one would make two
    /// receivers report one cluster; waiting for it to go is right. The link stays with a
    /// receiver until it fails (no return to the first): each move costs the new receiver a
    /// base and a snapshot, and a flapping receiver must not make every sender flap with it.
    fn fail_over(&mut self, e: &Error) -> bool {
        let taken = matches!(
            e,
            Error::Rejected {
                reason: RejectReason::ClusterInUse,
                ..
            }
        );
        if self.targets.len() < 2 || taken {
            return false;
        }
        self.current = (self.current + 1) % self.targets.len();
        let stats = &self.shared.stats;
        stats.failovers.fetch_add(1, Ordering::Relaxed);
        stats.current_target.store(self.current, Ordering::Relaxed);
        true
    }

    /// The `Hello` for the next session: the oldest spooled batch is offered for replay
    /// when a receiver could take it.
    fn hello(&self) -> Hello {
        let resume_from = if self.restored {
            self.spool.oldest()
        } else {
            self.table_done.map(|_| {
                self.spool
                    .oldest()
                    .map_or(self.next_seq, |oldest| oldest + self.renumbered)
            })
        };
        Hello {
            version: PROTOCOL_VERSION,
            cluster: self.config.cluster.clone(),
            sender_id: self.config.sender_id.clone(),
            epoch: self.epoch,
            token: self.config.token.clone(),
            resume_from,
            agent: concat!("kube-relay-sender/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    /// Runs `fut` (a connection attempt, or the wait before the next) to completion, while
    /// no session is up: changes are taken at the usual flush cadence into the spool, as if
    /// they were sent, so a later replay carries each at its own time (see
    /// [`Link::spool_offline`]). `None` on shutdown.
    async fn spooling_while<F: Future>(
        &mut self,
        fut: F,
        shutdown: &CancellationToken,
    ) -> Option<F::Output> {
        tokio::pin!(fut);
        let mut flush_at: Option<Instant> = None;
        loop {
            let at = flush_at;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                out = &mut fut => return Some(out),
                () = self.shared.changed(), if at.is_none() => {
                    flush_at = Some(Instant::now() + self.config.flush_interval);
                }
                () = sleep_until(at.unwrap_or_else(Instant::now)), if at.is_some() => {
                    flush_at = None;
                    self.spool_offline();
                }
            }
        }
    }

    /// True while batches taken now could be replayed later: a receiver got our series table
    /// in this epoch, and no snapshot is owed (a base and its replay need the spool as it is).
    fn keeps_history(&self) -> bool {
        self.table_done.is_some() && !self.snapshot_owed && !self.restored
    }

    /// Whether one more batch of up to a frame fits the spool's bound beside the tombstones
    /// (an empty spool always takes one).
    fn spool_has_room(&self) -> bool {
        let reserved = self.shared.store().tombstone_bytes();
        self.spool.is_empty()
            || self.spool.bytes() + reserved + self.frame_limit as u64
                <= self.config.spool_max_bytes
    }

    /// Takes pending changes into the spool while no session is up, numbered as if sent, as
    /// long as they fit: when the spool is full, changes coalesce in the store instead (the
    /// history kept is the outage's beginning, and the replay's last batch brings the rest
    /// at its newest time); nothing is dropped for want of an acknowledgement that cannot
    /// come.
    fn spool_offline(&mut self) {
        if !self.keeps_history() || self.shared.store().epoch() != self.epoch {
            return;
        }
        while self.spool_has_room() {
            // The last session's frame limit: the receiver that takes the replay is most
            // likely the same (a smaller one ends the replay, see `replay`).
            let batch = self.shared.store().take_delta(self.frame_limit);
            let Some(batch) = batch else { return };
            if let Err(e) = self.spool_batch(batch) {
                warn!(cause = %e, "failed to spool a batch");
                return;
            }
            self.shared
                .stats
                .offline_batches
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts a new epoch's numbering if the store renumbered its series.
    fn sync_epoch(&mut self) {
        let epoch = self.shared.store().epoch();
        if epoch != self.epoch {
            self.epoch = epoch;
            self.next_seq = 1;
            self.renumbered = 0;
            self.acked = 0;
            self.table_done = None;
            self.snapshot_owed = false;
            self.restored = false;
            self.spool.reset(epoch);
            self.shared.stats.acked_seq.store(0, Ordering::Relaxed);
        }
    }

    /// True when the spool can be replayed after `acked` to a receiver holding our table.
    fn replayable(&self, acked: u64) -> bool {
        let oldest = self
            .spool
            .oldest()
            .map_or(self.next_seq, |oldest| oldest + self.renumbered);
        (self.restored || self.table_done.is_some_and(|done| acked >= done))
            && acked < self.next_seq
            && acked + 1 >= oldest
    }

    async fn session<T>(
        &mut self,
        conn: &mut Conn<T>,
        welcome: Welcome,
        shutdown: &CancellationToken,
        first: &mut bool,
    ) -> Result<SessionEnd, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        self.frame_limit = frame_limit(self.config.max_frame_bytes, welcome.max_frame_bytes);
        conn.codec_mut().set_max_frame_bytes(self.frame_limit);
        let heartbeat = match welcome.heartbeat_interval_ms {
            0 => self.config.heartbeat_interval,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let stats = &self.shared.stats;
        // The handshake's bytes (later frames are counted as they are sent).
        stats.bytes_sent.fetch_add(
            conn.get_ref().written.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        stats.connected.store(true, Ordering::Relaxed);
        stats.sessions.fetch_add(1, Ordering::Relaxed);
        if !std::mem::take(first) {
            stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }

        // Resume (replay what the receiver lacks), or base (a receiver without our table gets
        // the spool on top of one), or a snapshot that supersedes the spool.
        let mut supersede = false;
        match welcome.resume {
            Resume::After { acked } if self.replayable(acked) => {
                self.on_ack(acked);
                if !self.replay(conn, acked, heartbeat).await? {
                    supersede = true;
                } else if std::mem::take(&mut self.restored) {
                    // A restarted sender's batches name the previous run's series ids: only a
                    // snapshot brings this run's.
                    self.snapshot_owed = true;
                }
            }
            _ => match self.send_base(conn, shutdown, heartbeat).await? {
                Based::Sent => {}
                Based::Impossible => supersede = true,
                Based::Shutdown => return Ok(SessionEnd::Shutdown),
            },
        }
        let mut snapshotting = false;
        if supersede {
            info!(
                cluster = %self.config.cluster,
                resume = ?welcome.resume,
                heartbeat_ms = heartbeat.as_millis() as u64,
                max_frame_bytes = self.frame_limit,
                "connected; sending a snapshot"
            );
            self.supersede_spool();
            self.shared.store().begin_snapshot();
            snapshotting = true;
        }

        let mut last_heard = Instant::now();
        let mut last_sent = Instant::now();
        // Changes may have been signalled to the previous session and never flushed.
        let mut flush_at = Some(Instant::now());
        let mut flushing = false;
        // Set while deltas wait for acks to make room in a full spool.
        let mut room_wait: Option<Instant> = None;
        loop {
            if self.snapshot_owed && self.spool.is_empty() {
                // The replay is acknowledged: now the present.
                self.snapshot_owed = false;
                self.table_done = None;
                self.shared.store().begin_snapshot();
                snapshotting = true;
                debug!("replay acknowledged; sending a snapshot");
            }
            let deltas = !snapshotting && !self.snapshot_owed;
            let room = self.spool_has_room();
            if room {
                room_wait = None;
            } else if flushing && room_wait.is_none() {
                room_wait = Some(Instant::now() + self.config.ack_patience);
            }
            let may_send = room || room_wait.is_some_and(|at| Instant::now() >= at);
            let dead_at = last_heard + heartbeat * 3;
            let heartbeat_at = last_sent + heartbeat;
            let batch_waiting = deltas && (flush_at.is_some() || flushing);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    self.goodbye(conn, !deltas, heartbeat).await;
                    return Ok(SessionEnd::Shutdown);
                }
                msg = conn.next() => {
                    last_heard = Instant::now();
                    match msg {
                        Some(Ok(ReceiverMessage::Ack(ack))) if ack.epoch == self.epoch => {
                            self.delivered = true;
                            self.on_ack(ack.seq);
                        }
                        Some(Ok(ReceiverMessage::Ack(_) | ReceiverMessage::Heartbeat(_))) => {}
                        Some(Ok(ReceiverMessage::Reject(r))) => {
                            return Err(Error::Rejected { reason: r.reason, message: r.message });
                        }
                        Some(Ok(ReceiverMessage::Welcome(_))) => {
                            return Err(Error::Session("unexpected Welcome mid-session".to_owned()));
                        }
                        Some(Err(e)) => return Err(e.into()),
                        None => return Err(Error::Session("the receiver closed the connection".to_owned())),
                    }
                }
                // The receiver acknowledges a snapshot only once it has it whole: no silence
                // verdict while one is being written (writes themselves time out).
                () = sleep_until(dead_at), if !snapshotting => {
                    return Err(Error::Session(format!(
                        "no frame from the receiver for {:?} (3 heartbeat intervals)", heartbeat * 3
                    )));
                }
                () = std::future::ready(()), if snapshotting => {
                    let part = self.shared.store().next_snapshot_part(self.frame_limit);
                    match part {
                        Some(batch) => {
                            let last = batch.snapshot.is_some_and(|p| p.last);
                            let seq = self.send_batch(conn, batch, false, heartbeat).await?;
                            last_sent = Instant::now();
                            if last {
                                snapshotting = false;
                                last_heard = Instant::now();
                                self.table_done = Some(seq);
                                self.shared.stats.snapshots_sent.fetch_add(1, Ordering::Relaxed);
                                debug!(seq, "snapshot sent");
                            }
                        }
                        None => snapshotting = false,
                    }
                }
                () = self.shared.changed(), if flush_at.is_none() && deltas && !flushing => {
                    flush_at = Some(Instant::now() + self.config.flush_interval);
                }
                () = sleep_until(flush_at.unwrap_or(dead_at)), if flush_at.is_some() && deltas && !flushing => {
                    flush_at = None;
                    if self.shared.store().epoch() != self.epoch {
                        self.goodbye(conn, true, heartbeat).await;
                        return Ok(SessionEnd::EpochChanged);
                    }
                    flushing = true;
                }
                // One batch per turn, so acks and heartbeats are read between batches of a
                // large backlog.
                () = sleep_until(room_wait.unwrap_or(dead_at)), if flushing && deltas && !may_send => {}
                () = std::future::ready(()), if flushing && deltas && may_send => {
                    let batch = self.shared.store().take_delta(self.frame_limit);
                    match batch {
                        Some(batch) => {
                            self.send_batch(conn, batch, true, heartbeat).await?;
                            last_sent = Instant::now();
                            room_wait = None;
                        }
                        None => flushing = false,
                    }
                }
                // Only with no batch waiting, so a heartbeat's time never runs ahead of a
                // batch that follows it (`docs/protocol.md`, "Time and history").
                () = sleep_until(heartbeat_at), if !batch_waiting => {
                    let sent_at_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    self.send(conn, SenderMessage::Heartbeat(Heartbeat { sent_at_ms }), heartbeat).await?;
                    last_sent = Instant::now();
                }
            }
        }
    }

    /// Counts the spooled samples as superseded by the snapshot that follows and forgets
    /// them.
    fn supersede_spool(&mut self) {
        self.restored = false;
        self.snapshot_owed = false;
        self.table_done = None;
        let stats = &self.shared.stats;
        let superseded = self.spool.samples();
        if superseded > 0 {
            stats
                .superseded_samples
                .fetch_add(superseded, Ordering::Relaxed);
            info!(
                oldest = self.spool.oldest(),
                newest = self.spool.newest(),
                samples = superseded,
                "unacknowledged batches superseded by the snapshot"
            );
        }
        self.spool.clear();
        self.renumbered = 0;
        stats.spooled_samples.store(0, Ordering::Relaxed);
    }

    /// Sends a receiver that lacks our series table a base and then the whole spool on top
    /// of it, renumbered to follow it (`docs/protocol.md`, "Time and history", item 5); the
    /// snapshot is owed once the replay is acknowledged.
    async fn send_base<T>(
        &mut self,
        conn: &mut Conn<T>,
        shutdown: &CancellationToken,
        heartbeat: Duration,
    ) -> Result<Based, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        if self.restored || self.spool.is_empty() {
            return Ok(Based::Impossible);
        }
        let Some((named, oldest_ms)) = named_in(&self.spool.replay(0).await) else {
            warn!("a spooled batch does not decode; a snapshot supersedes the spool");
            return Ok(Based::Impossible);
        };
        let begun = self.shared.store().begin_base(named, oldest_ms);
        if let Err(e) = begun {
            warn!(
                missing = e.missing,
                "the spool names removed series whose definitions were not kept; a snapshot \
                 supersedes it"
            );
            return Ok(Based::Impossible);
        }
        info!(
            cluster = %self.config.cluster,
            batches = self.spool.newest().zip(self.spool.oldest()).map_or(0, |(n, o)| n - o + 1),
            samples = self.spool.samples(),
            heartbeat_ms = heartbeat.as_millis() as u64,
            "connected to a receiver without our series table; sending a base and replaying the spool on it"
        );
        loop {
            if shutdown.is_cancelled() {
                self.goodbye(conn, true, heartbeat).await;
                return Ok(Based::Shutdown);
            }
            let part = self.shared.store().next_base_part(self.frame_limit);
            let batch = match part {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    return Err(Error::Session(
                        "the base was abandoned (series ids renumbered)".to_owned(),
                    ));
                }
                Err(e) => {
                    return Err(Error::Session(format!(
                        "{} series the base had to describe vanished",
                        e.missing
                    )));
                }
            };
            let last = batch.snapshot.is_some_and(|p| p.last);
            let seq = self.send_batch(conn, batch, false, heartbeat).await?;
            if last {
                self.table_done = Some(seq);
                self.shared.stats.bases_sent.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        let (Some(oldest), Some(newest)) = (self.spool.oldest(), self.spool.newest()) else {
            return Ok(Based::Impossible);
        };
        // The spool follows the base: batch `s` goes out as `s + renumbered`.
        self.renumbered = self.next_seq - oldest;
        self.next_seq = newest + self.renumbered + 1;
        self.snapshot_owed = true;
        if !self
            .replay(conn, oldest + self.renumbered - 1, heartbeat)
            .await?
        {
            self.snapshot_owed = false;
            return Ok(Based::Impossible);
        }
        Ok(Based::Sent)
    }

    /// Replays the kept batches after wire seq `after`, oldest first, unchanged but for their
    /// seq when the spool was renumbered; they stay in the spool until acknowledged. Returns
    /// whether all of them went: a batch that does not decode (a damaged spool), or that
    /// this session's receiver would refuse as too large (spooled for a receiver with a
    /// larger frame limit), ends the replay, the batches already replayed are forgotten and
    /// that one and the rest are left in the spool, for the snapshot the session then sends
    /// to supersede (and count).
    async fn replay<T>(
        &mut self,
        conn: &mut Conn<T>,
        after: u64,
        heartbeat: Duration,
    ) -> Result<bool, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let replay = self
            .spool
            .replay(after.saturating_sub(self.renumbered))
            .await;
        info!(
            cluster = %self.config.cluster,
            after,
            replay = replay.len(),
            restored = self.restored,
            renumbered = self.renumbered,
            heartbeat_ms = heartbeat.as_millis() as u64,
            "connected; replaying the spool"
        );
        for (seq, payload) in replay {
            // A renumbered seq may take a few more bytes than the spooled one.
            if payload.len() + 16 > self.frame_limit {
                warn!(
                    seq,
                    bytes = payload.len(),
                    frame_limit = self.frame_limit,
                    "a spooled batch exceeds this receiver's frame limit; replay ends, a snapshot follows"
                );
                self.spool.ack(seq - 1);
                return Ok(false);
            }
            let mut msg: SenderMessage = match decode_payload(&payload) {
                Ok(msg) => msg,
                Err(e) => {
                    warn!(seq, cause = %e, "a spooled batch does not decode; replay ends, a snapshot follows");
                    self.spool.ack(seq - 1);
                    return Ok(false);
                }
            };
            if let SenderMessage::Batch(batch) = &mut msg {
                batch.seq = seq + self.renumbered;
            }
            debug!(seq, "replaying");
            self.send(conn, msg, heartbeat).await?;
            self.shared
                .stats
                .replayed_batches
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(true)
    }

    fn on_ack(&mut self, seq: u64) {
        if seq >= self.next_seq {
            // Acknowledges what was never sent: trusting it would trim (and a disk spool
            // persist) batches not sent yet.
            if !std::mem::replace(&mut self.warned_future_ack, true) {
                warn!(
                    seq,
                    next_seq = self.next_seq,
                    epoch = self.epoch,
                    "ignoring an ack of a batch not sent yet (logged once)"
                );
            }
            return;
        }
        if seq > self.acked {
            self.acked = seq;
        }
        // Wire seqs before the spool's first (a base's parts) trim nothing.
        if let Some(spooled) = seq.checked_sub(self.renumbered) {
            self.spool.ack(spooled);
        }
        self.shared.store().release_tombstones(self.spool.oldest());
        let stats = &self.shared.stats;
        stats.acked_seq.store(self.acked, Ordering::Relaxed);
        stats
            .spooled_samples
            .store(self.spool.samples(), Ordering::Relaxed);
    }

    /// Sends every pending delta.
    async fn flush<T>(&mut self, conn: &mut Conn<T>, heartbeat: Duration) -> Result<(), Error>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let batch = self.shared.store().take_delta(self.frame_limit);
            match batch {
                Some(batch) => {
                    self.send_batch(conn, batch, true, heartbeat).await?;
                }
                None => return Ok(()),
            }
        }
    }

    /// Numbers a delta batch and keeps it in the spool until acknowledged (dropping the
    /// oldest to make room, counted); returns it as the message to send, with its seq and
    /// its changed samples.
    fn spool_batch(&mut self, mut batch: Batch) -> Result<(u64, SenderMessage, u64), Error> {
        if self.spool.is_empty() {
            self.renumbered = 0;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        batch.seq = seq;
        let spool_seq = seq - self.renumbered;
        let samples = batch.changed_samples() as u64;
        let reserved = {
            let mut store = self.shared.store();
            if !batch.removals.is_empty() {
                store.removals_sent(spool_seq, &batch.removals);
            }
            store.tombstone_bytes()
        };
        let msg = SenderMessage::Batch(batch);
        let payload = Bytes::from(encode_payload(&msg)?);
        self.spool.set_reserved(reserved);
        let dropped = self.spool.push(spool_seq, payload, samples);
        let stats = &self.shared.stats;
        if dropped > 0 {
            self.shared.store().release_tombstones(self.spool.oldest());
            stats
                .dropped_spool_full
                .fetch_add(dropped, Ordering::Relaxed);
            warn!(
                dropped,
                "spool full: dropped the oldest unacknowledged batches"
            );
        }
        stats
            .spooled_samples
            .store(self.spool.samples(), Ordering::Relaxed);
        Ok((seq, msg, samples))
    }

    /// Numbers, sends and (for deltas) spools a batch; returns its seq.
    async fn send_batch<T>(
        &mut self,
        conn: &mut Conn<T>,
        mut batch: Batch,
        delta: bool,
        heartbeat: Duration,
    ) -> Result<u64, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let (seq, msg, samples) = if delta {
            self.spool_batch(batch)?
        } else {
            let seq = self.next_seq;
            self.next_seq += 1;
            batch.seq = seq;
            let samples = batch.changed_samples() as u64;
            (seq, SenderMessage::Batch(batch), samples)
        };
        if delta {
            // Written before it is sent: after a crash the spool holds every batch the
            // receiver may hold (the disk spool writes on its own thread).
            self.spool.pushed().await;
        }
        let written = self.send(conn, msg, heartbeat).await?;
        let stats = &self.shared.stats;
        stats.sent_seq.store(seq, Ordering::Relaxed);
        if delta {
            stats.delta_bytes_sent.fetch_add(written, Ordering::Relaxed);
            stats
                .delta_samples_sent
                .fetch_add(samples, Ordering::Relaxed);
        }
        Ok(seq)
    }

    /// Writes one message and returns the bytes it took on the wire; a receiver that stops
    /// reading for three heartbeat intervals is a dead link.
    async fn send<T>(
        &self,
        conn: &mut Conn<T>,
        msg: SenderMessage,
        heartbeat: Duration,
    ) -> Result<u64, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let before = conn.get_ref().written.load(Ordering::Relaxed);
        timeout(heartbeat * 3, conn.send(msg))
            .await
            .map_err(|_| Error::Session("the receiver stopped reading".to_owned()))??;
        let written = conn.get_ref().written.load(Ordering::Relaxed) - before;
        self.shared
            .stats
            .bytes_sent
            .fetch_add(written, Ordering::Relaxed);
        Ok(written)
    }

    /// Flushes pending deltas (unless a snapshot is half sent) and says goodbye, within the
    /// shutdown bound.
    async fn goodbye<T>(&mut self, conn: &mut Conn<T>, skip_flush: bool, heartbeat: Duration)
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let bound = self.config.shutdown_timeout;
        let result = timeout(bound, async {
            if !skip_flush {
                self.flush(conn, heartbeat).await?;
            }
            let reason = "sender shutting down".to_owned();
            self.send(conn, SenderMessage::Goodbye(Goodbye { reason }), heartbeat)
                .await?;
            SinkExt::<SenderMessage>::close(conn).await?;
            Ok::<(), Error>(())
        })
        .await;
        match result {
            Ok(Ok(())) => info!(cluster = %self.config.cluster, "said goodbye"),
            Ok(Err(e)) => warn!(cause = %e, "failed to say goodbye"),
            Err(_) => warn!(?bound, "goodbye timed out"),
        }
    }
}
