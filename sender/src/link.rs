//! The connection to the receiver: handshake, snapshot, deltas, heartbeats, acks, replay,
//! reconnects.
//!
//! [`Link::run`] keeps one session at a time over any `AsyncRead + AsyncWrite` transport a
//! [`Connector`] opens (plain TCP or TLS, [`crate::transport`], [`crate::tls`]). A session:
//! 1. `Hello` (version, cluster, sender id, epoch, token, the oldest batch it could replay);
//!    `Reject` ends it (`UnsupportedVersion` is fatal; anything else, `Unauthorized`
//!    included, is logged and backs off), `Welcome` carries the heartbeat interval, which
//!    wins over ours;
//! 2. `Welcome{After{acked}}` when the receiver applied our latest snapshot and everything
//!    unacknowledged is still in the [`Spool`]: replay the spool after `acked`; otherwise a
//!    full snapshot, one frame at a time, from the [`SeriesStore`](crate::store::SeriesStore);
//!    a link built on a spool that already holds batches (a [`DiskSpool`](crate::spool::DiskSpool)
//!    reopened after a restart) offers them in its first `Hello` and, on `Welcome{After}`,
//!    replays those after `acked` before that snapshot (on `Snapshot` they are superseded);
//!    a spooled batch that does not decode ends any replay, and a snapshot follows that
//!    supersedes it and the batches after it (counted as superseded, not dropped);
//! 3. deltas: changes wait `flush_interval` to coalesce, then go as batches with consecutive
//!    sequence numbers, kept in the spool until acknowledged (each written to it before it
//!    is sent, [`Spool::pushed`]); while the spool is full, deltas wait up to
//!    `ack_patience` for acks to make room (changes keep coalescing meanwhile), and only
//!    then is the oldest batch dropped (see [`crate::spool`]);
//!    an ack of a seq not sent yet is ignored (and logged once);
//! 4. a heartbeat after one silent interval; no frame from the receiver within three
//!    intervals means a dead link;
//! 5. on shutdown: pending deltas, then `Goodbye`, within the shutdown bound.
//!
//! Between sessions the store keeps coalescing changes (bounded by the number of series), so
//! an outage costs no memory beyond the spool. Reconnects back off (800 ms → 30 s, jittered,
//! reset after a healthy session).

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
    Resume, SenderCodec, SenderMessage,
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
use crate::tls_failure::TlsFailure;
use crate::transport::Connector;

/// Default [`LinkConfig::ack_patience`]: a few of the receiver's ack intervals (100 ms).
pub const ACK_PATIENCE: Duration = Duration::from_millis(500);

/// What an operator should check when `e` is a refusal of our credentials or of the
/// receiver's certificate (retrying alone will not help until one side is fixed).
fn refusal_hint(e: &Error) -> Option<&'static str> {
    if let Error::Rejected {
        reason: kube_relay_proto::RejectReason::Unauthorized,
        ..
    } = e
    {
        return Some(
            "the receiver refused our token: --token / --token-file must match the \
             receiver's --token / --token-file",
        );
    }
    e.tls_failure().map(TlsFailure::hint)
}

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

type Conn<T> = Framed<CountingIo<T>, SenderCodec>;

/// The sender's side of the protocol. See the [module docs](self).
pub struct Link<C: Connector, S: Spool = MemorySpool> {
    config: LinkConfig,
    connector: C,
    shared: Arc<Shared>,
    spool: S,
    epoch: u64,
    /// Next sequence number to send in `epoch`.
    next_seq: u64,
    /// Seq of the last part of the latest snapshot, once fully sent.
    snapshot_done: Option<u64>,
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
    /// the store's epoch.
    pub fn with_spool(config: LinkConfig, connector: C, shared: Arc<Shared>, mut spool: S) -> Self {
        let epoch = shared.store().epoch();
        let restored = spool.newest();
        if restored.is_none() {
            spool.reset(epoch);
        }
        shared
            .stats
            .spooled_samples
            .store(spool.samples(), Ordering::Relaxed);
        Link {
            connector,
            shared,
            spool,
            epoch,
            next_seq: restored.map_or(1, |newest| newest.saturating_add(1)),
            snapshot_done: None,
            acked: 0,
            restored: restored.is_some(),
            warned_future_ack: false,
            backoff: Backoff::new(),
            frame_limit: config.max_frame_bytes,
            config,
        }
    }

    /// Keeps a session to the receiver until `shutdown`, reconnecting with backoff.
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
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let started = Instant::now();
            let sessions = self.shared.stats.sessions.load(Ordering::Relaxed);
            let result = self.connect_and_serve(shutdown, &mut first).await;
            self.shared.stats.connected.store(false, Ordering::Relaxed);
            let established = self.shared.stats.sessions.load(Ordering::Relaxed) != sessions;
            if let Err(e) = &result
                && !established
            {
                self.shared.stats.connect_error(e.kind());
            }
            match result {
                Ok(SessionEnd::Shutdown) => return Ok(()),
                Ok(SessionEnd::EpochChanged) => {
                    info!(epoch = self.epoch, "reconnecting under a new epoch");
                    continue;
                }
                Err(e) if e.is_fatal() => {
                    warn!(target = self.connector.target(), cause = %e, "giving up");
                    return Err(e);
                }
                Err(e) => {
                    if started.elapsed() >= HEALTHY_AFTER {
                        self.backoff.reset();
                    }
                    let delay = self.backoff.next_delay();
                    let retry_in_ms = delay.as_millis() as u64;
                    let target = self.connector.target();
                    // Refusals a retry alone will not cure: say what to check.
                    match refusal_hint(&e) {
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
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn connect_and_serve(
        &mut self,
        shutdown: &CancellationToken,
        first: &mut bool,
    ) -> Result<SessionEnd, Error> {
        let target = self.connector.target().to_owned();
        let io = tokio::select! {
            () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            io = timeout(self.config.connect_timeout, self.connector.connect()) => io,
        };
        let io = match io {
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
        self.session(&mut conn, shutdown, first).await
    }

    /// Starts a new epoch's numbering if the store renumbered its series.
    fn sync_epoch(&mut self) {
        let epoch = self.shared.store().epoch();
        if epoch != self.epoch {
            self.epoch = epoch;
            self.next_seq = 1;
            self.acked = 0;
            self.snapshot_done = None;
            self.restored = false;
            self.spool.reset(epoch);
            self.shared.stats.acked_seq.store(0, Ordering::Relaxed);
        }
    }

    async fn session<T>(
        &mut self,
        conn: &mut Conn<T>,
        shutdown: &CancellationToken,
        first: &mut bool,
    ) -> Result<SessionEnd, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        self.sync_epoch();
        let resume_from = if self.restored {
            self.spool.oldest()
        } else {
            self.snapshot_done
                .map(|_| self.spool.oldest().unwrap_or(self.next_seq))
        };
        let hello = SenderMessage::Hello(Hello {
            version: PROTOCOL_VERSION,
            cluster: self.config.cluster.clone(),
            sender_id: self.config.sender_id.clone(),
            epoch: self.epoch,
            token: self.config.token.clone(),
            resume_from,
            agent: concat!("kube-relay-sender/", env!("CARGO_PKG_VERSION")).to_owned(),
        });
        let bound = self.config.connect_timeout;
        let welcome = timeout(bound, async {
            conn.send(hello).await?;
            conn.next().await.transpose()
        })
        .await
        .map_err(|_| Error::Session(format!("no answer to the handshake within {bound:?}")))??;
        let welcome = match welcome {
            Some(ReceiverMessage::Welcome(w)) => w,
            Some(ReceiverMessage::Reject(r)) => {
                return Err(Error::Rejected {
                    reason: r.reason,
                    message: r.message,
                });
            }
            Some(other) => {
                return Err(Error::Session(format!(
                    "expected Welcome or Reject, got {other:?}"
                )));
            }
            None => {
                return Err(Error::Session(
                    "the receiver closed the connection during the handshake".to_owned(),
                ));
            }
        };
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

        // Resume or snapshot. A restarted sender's spool is replayed too (its batches name
        // series ids the receiver still holds for this epoch), then a snapshot follows.
        let replayable = |acked: u64| {
            (self.restored || self.snapshot_done.is_some_and(|done| acked >= done))
                && acked < self.next_seq
                && acked + 1 >= self.spool.oldest().unwrap_or(self.next_seq)
        };
        let replayed_all = match welcome.resume {
            Resume::After { acked } if replayable(acked) => {
                self.replay(conn, acked, heartbeat).await?
            }
            _ => false,
        };
        let mut snapshotting = self.restored || !replayed_all;
        if snapshotting {
            if replayed_all {
                // A restarted sender's batches: delivered (acks will tell), and the snapshot
                // that follows covers them: neither dropped nor superseded.
                self.spool.clear();
            }
            self.restored = false;
            let stats = &self.shared.stats;
            info!(
                cluster = %self.config.cluster,
                resume = ?welcome.resume,
                heartbeat_ms = heartbeat.as_millis() as u64,
                max_frame_bytes = self.frame_limit,
                "connected; sending a snapshot"
            );
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
            stats.spooled_samples.store(0, Ordering::Relaxed);
            self.snapshot_done = None;
            self.shared.store().begin_snapshot();
        }

        let mut last_heard = Instant::now();
        let mut last_sent = Instant::now();
        // Changes may have been signalled to the previous session and never flushed.
        let mut flush_at = Some(Instant::now());
        let mut flushing = false;
        // Set while deltas wait for acks to make room in a full spool.
        let mut room_wait: Option<Instant> = None;
        loop {
            let room = self.spool.bytes() == 0
                || self.spool.bytes() + self.frame_limit as u64 <= self.config.spool_max_bytes;
            if room {
                room_wait = None;
            } else if flushing && room_wait.is_none() {
                room_wait = Some(Instant::now() + self.config.ack_patience);
            }
            let may_send = room || room_wait.is_some_and(|at| Instant::now() >= at);
            let dead_at = last_heard + heartbeat * 3;
            let heartbeat_at = last_sent + heartbeat;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    self.goodbye(conn, snapshotting, heartbeat).await;
                    return Ok(SessionEnd::Shutdown);
                }
                msg = conn.next() => {
                    last_heard = Instant::now();
                    match msg {
                        Some(Ok(ReceiverMessage::Ack(ack))) if ack.epoch == self.epoch => {
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
                                self.snapshot_done = Some(seq);
                                self.shared.stats.snapshots_sent.fetch_add(1, Ordering::Relaxed);
                                debug!(seq, "snapshot sent");
                            }
                        }
                        None => snapshotting = false,
                    }
                }
                () = self.shared.changed(), if flush_at.is_none() && !snapshotting && !flushing => {
                    flush_at = Some(Instant::now() + self.config.flush_interval);
                }
                () = sleep_until(flush_at.unwrap_or(dead_at)), if flush_at.is_some() && !snapshotting && !flushing => {
                    flush_at = None;
                    if self.shared.store().epoch() != self.epoch {
                        self.goodbye(conn, true, heartbeat).await;
                        return Ok(SessionEnd::EpochChanged);
                    }
                    flushing = true;
                }
                // One batch per turn, so acks and heartbeats are read between batches of a
                // large backlog.
                () = sleep_until(room_wait.unwrap_or(dead_at)), if flushing && !snapshotting && !may_send => {}
                () = std::future::ready(()), if flushing && !snapshotting && may_send => {
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
                () = sleep_until(heartbeat_at), if flush_at.is_none() && !flushing => {
                    let sent_at_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    self.send(conn, SenderMessage::Heartbeat(Heartbeat { sent_at_ms }), heartbeat).await?;
                    last_sent = Instant::now();
                }
            }
        }
    }

    /// Replays the kept batches after `acked` (acknowledging what precedes), oldest first,
    /// unchanged; they stay in the spool until acknowledged. Returns whether all of them
    /// went: a batch that does not decode (a damaged spool) ends the replay, the batches
    /// already replayed are forgotten and that one and the rest are left in the spool, for
    /// the snapshot the session then sends to supersede (and count).
    async fn replay<T>(
        &mut self,
        conn: &mut Conn<T>,
        acked: u64,
        heartbeat: Duration,
    ) -> Result<bool, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        self.on_ack(acked);
        let replay = self.spool.replay(acked).await;
        info!(
            cluster = %self.config.cluster,
            acked,
            replay = replay.len(),
            restored = self.restored,
            heartbeat_ms = heartbeat.as_millis() as u64,
            "connected; resuming"
        );
        for (seq, payload) in replay {
            let msg: SenderMessage = match decode_payload(&payload) {
                Ok(msg) => msg,
                Err(e) => {
                    warn!(seq, cause = %e, "a spooled batch does not decode; replay ends, a snapshot follows");
                    self.spool.ack(seq - 1);
                    return Ok(false);
                }
            };
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
        self.spool.ack(seq);
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
        let seq = self.next_seq;
        self.next_seq += 1;
        batch.seq = seq;
        let samples = batch.changed_samples() as u64;
        let msg = SenderMessage::Batch(batch);
        let stats = &self.shared.stats;
        if delta {
            let payload = Bytes::from(encode_payload(&msg)?);
            let dropped = self.spool.push(seq, payload, samples);
            if dropped > 0 {
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
            // Written before it is sent: after a crash the spool holds every batch the
            // receiver may hold (the disk spool writes on its own thread).
            self.spool.pushed().await;
        }
        let written = self.send(conn, msg, heartbeat).await?;
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
