//! One sender connection, from `Hello` to close: handshake checks, batches into the store,
//! acks, heartbeat echo, idle and handshake timeouts.
//!
//! [`Session::run`] is generic over `AsyncRead + AsyncWrite`, so TLS wraps the TCP stream
//! without touching this code. Framing is hidden behind `Framed` with the proto crate's
//! [`ReceiverCodec`].
//!
//! # Before authentication
//! The `Hello` is the only message decoded before the peer is authenticated: the frame
//! limit stays at [`MAX_HANDSHAKE_FRAME_BYTES`] until the version and token checks pass
//! (constant time, [`token_matches`]), and the whole handshake (TLS included) must finish
//! within one deadline, so a peer trickling bytes cannot extend it. Anything else first, a
//! larger frame, or a wrong token closes the connection; bytes the peer pipelined after its
//! `Hello` are never decoded. Failures before authentication are logged through the
//! [`RefusalLog`] (rate-limited per peer IP); after it, every close is logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use kube_relay_proto::{
    Ack, Hello, MAX_HANDSHAKE_FRAME_BYTES, MAX_NAME_BYTES, PROTOCOL_VERSION, ReceiverCodec,
    ReceiverMessage, Reject, RejectReason, Resume, SenderMessage, Welcome, check_cluster_name,
    check_sender_id,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_util::codec::{Decoder, Encoder, Framed};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::remote_write::{self, RemoteWrite, Ticket};
use crate::security::{RefusalLog, token_matches};
use crate::store::{Applied, ApplyError, ClaimError, ConnId, Store};
use crate::tls::TLS_HANDSHAKE_RECORD;
use crate::{Error, ReceiverConfig, Result};

/// Longest wait between applying a batch and acknowledging it, while further frames are
/// already buffered; a batch with nothing behind it is acknowledged at once.
pub const ACK_INTERVAL: Duration = Duration::from_millis(100);

/// Capacity a connection's buffers start with, and its read buffer is brought back to once
/// drained. A snapshot's frames grow the read buffer to their size and tokio-util
/// starts both at 8 KiB: at 10,000 mostly idle senders that was 24 KiB each, more than the
/// series they hold (the fan-in bench).
const IDLE_BUFFER_BYTES: usize = 1024;

/// Label of `relay_receiver_decode_errors_total` for a TLS handshake on a plain-TCP port.
pub const UNEXPECTED_TLS: &str = "unexpected_tls";

/// Longest time spent writing a `Reject` to a peer before closing anyway.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// What every session shares: the store, the self-metrics, the limits and the shutdown
/// signal.
#[derive(Debug, Clone)]
pub struct Session {
    store: Store,
    metrics: Arc<Metrics>,
    config: Arc<ReceiverConfig>,
    refusals: Arc<RefusalLog>,
    shutdown: CancellationToken,
    remote_write: Option<Arc<RemoteWrite>>,
}

/// The proto codec plus the size of each decoded frame, for byte counters.
#[derive(Debug)]
struct CountingCodec(ReceiverCodec);

impl Decoder for CountingCodec {
    type Item = (SenderMessage, usize);
    type Error = kube_relay_proto::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        let before = src.len();
        Ok(self.0.decode(src)?.map(|m| (m, before - src.len())))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        let before = src.len();
        Ok(self.0.decode_eof(src)?.map(|m| (m, before - src.len())))
    }
}

impl Encoder<ReceiverMessage> for CountingCodec {
    type Error = kube_relay_proto::Error;

    fn encode(&mut self, msg: ReceiverMessage, dst: &mut BytesMut) -> Result<(), Self::Error> {
        self.0.encode(&msg, dst)
    }
}

type Conn<S> = Framed<S, CountingCodec>;

/// Why the data loop ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Goodbye,
    Eof,
    Replaced,
    Shutdown,
}

impl Session {
    /// Session settings shared by all connections; refusals before authentication are
    /// logged through `refusals`.
    pub fn new(
        store: Store,
        metrics: Arc<Metrics>,
        config: Arc<ReceiverConfig>,
        refusals: Arc<RefusalLog>,
        shutdown: CancellationToken,
    ) -> Self {
        Session {
            store,
            metrics,
            config,
            refusals,
            shutdown,
            remote_write: None,
        }
    }

    /// Hands every applied batch and heartbeat to `remote_write`, and acknowledges a batch
    /// only once its samples are in every remote-write queue.
    pub fn with_remote_write(mut self, remote_write: Option<Arc<RemoteWrite>>) -> Self {
        self.remote_write = remote_write;
        self
    }

    /// Serves one connection until the sender leaves, the link dies, a protocol error occurs
    /// or the receiver shuts down. The cluster is marked down when the session ends. The
    /// `Hello` must arrive within the handshake timeout from now.
    ///
    /// # Errors
    /// The reason the connection was closed by the receiver (timeouts, bad frames,
    /// violations, a refused handshake). It is already logged with the peer: at once after
    /// authentication, rate-limited before.
    pub async fn run<S>(&self, io: S, peer: SocketAddr) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let deadline = Instant::now() + self.config.handshake_timeout;
        self.run_admitted(io, peer, deadline, ()).await
    }

    /// [`Session::run`] for a connection admitted by the accept loop: the `Hello` must
    /// arrive by `handshake_deadline` (which may have started before a TLS handshake), and
    /// `handshake_slot` is dropped as soon as the peer is authenticated.
    ///
    /// # Errors
    /// As [`Session::run`].
    pub async fn run_admitted<S, G>(
        &self,
        io: S,
        peer: SocketAddr,
        handshake_deadline: Instant,
        handshake_slot: G,
    ) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut authenticated = false;
        let result = self
            .serve(
                io,
                peer,
                handshake_deadline,
                handshake_slot,
                &mut authenticated,
            )
            .await;
        if let Err(e) = &result {
            if authenticated {
                warn!(peer = %peer, kind = e.kind(), cause = %e, "closed sender connection");
            } else {
                self.refusals.refused(peer, e.kind(), e);
            }
        }
        result
    }

    async fn serve<S, G>(
        &self,
        io: S,
        peer: SocketAddr,
        handshake_deadline: Instant,
        handshake_slot: G,
        authenticated: &mut bool,
    ) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let codec = CountingCodec(ReceiverCodec::new(MAX_HANDSHAKE_FRAME_BYTES));
        // Small buffers from the start: tokio-util's 8 KiB default read buffer stayed with
        // many idle connections (heaptrack of the fan-in bench); a frame grows it as needed.
        let mut conn = Framed::with_capacity(io, codec, IDLE_BUFFER_BYTES);
        let Some((hello, hello_bytes)) = self.read_hello(&mut conn, handshake_deadline).await?
        else {
            debug!(peer = %peer, "connection closed before its hello");
            return Ok(());
        };
        self.authenticate(&mut conn, &hello).await?;
        *authenticated = true;
        drop(handshake_slot);
        self.check_hello(&mut conn, &hello).await?;

        let cancel = self.shutdown.child_token();
        let claim = match self.store.claim(&hello, Some(peer), cancel.clone()) {
            Ok(claim) => claim,
            Err(ClaimError::ClusterInUse { holder }) => {
                let message = format!(
                    "cluster {:?} is already reported by live sender {holder:?}",
                    hello.cluster
                );
                return Err(self
                    .reject(&mut conn, RejectReason::ClusterInUse, message)
                    .await);
            }
            Err(ClaimError::TooManyClusters { limit }) => {
                let message = format!(
                    "cluster {:?} is new and the receiver already holds its limit of {limit} \
                     clusters (--max-clusters; clusters whose sender left count until their TTL)",
                    hello.cluster
                );
                return Err(self.reject(&mut conn, RejectReason::Busy, message).await);
            }
        };
        self.store
            .count_frame(&hello.cluster, claim.conn, hello_bytes);
        let history_claim = self
            .remote_write
            .as_ref()
            .map(|rw| rw.claim(&hello.cluster));
        info!(
            peer = %peer,
            cluster = %hello.cluster,
            sender_id = %hello.sender_id,
            epoch = hello.epoch,
            agent = %hello.agent,
            resume = ?claim.resume,
            replaced = claim.replaced,
            "sender connected"
        );
        let welcome = ReceiverMessage::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            resume: claim.resume,
            heartbeat_interval_ms: u32::try_from(self.config.heartbeat_interval.as_millis())
                .unwrap_or(u32::MAX),
            max_frame_bytes: u32::try_from(self.config.max_frame_bytes).unwrap_or(u32::MAX),
        });
        let result = match self.send(&mut conn, welcome).await {
            Ok(()) => {
                conn.codec_mut()
                    .0
                    .set_max_frame_bytes(self.config.max_frame_bytes);
                let link = Link {
                    cluster: &hello.cluster,
                    epoch: hello.epoch,
                    id: claim.conn,
                    resume: claim.resume,
                };
                self.data_loop(&mut conn, link, &cancel).await
            }
            Err(e) => Err(e),
        };
        self.store.release(&hello.cluster, claim.conn);
        if let (Some(rw), Some(generation)) = (&self.remote_write, history_claim) {
            rw.release(&hello.cluster, generation);
        }
        // The sender was told why (see `refuse`): let it read that before the close, now
        // that the cluster is released and nothing waits on this connection.
        if let Err(Error::Protocol(e)) = &result
            && answer(e).is_some()
        {
            crate::farewell::linger(conn.get_mut()).await;
        }
        match result {
            Ok(end) => {
                info!(peer = %peer, cluster = %hello.cluster, end = ?end, "sender disconnected");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn read_hello<S>(
        &self,
        conn: &mut Conn<S>,
        deadline: Instant,
    ) -> Result<Option<(Hello, usize)>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let first = match timeout_at(deadline, conn.next()).await {
            Err(_) => {
                self.metrics.handshake_rejected("handshake_timeout");
                return Err(Error::HandshakeTimeout(self.config.handshake_timeout));
            }
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => {
                // A TLS ClientHello read as a frame header claims ~369 MB: say what it is.
                if matches!(e, kube_relay_proto::Error::FrameTooLarge { .. })
                    && conn.read_buffer().starts_with(&[TLS_HANDSHAKE_RECORD, 3])
                {
                    self.metrics.decode_error(UNEXPECTED_TLS);
                    // Plain bytes where the peer expects a TLS record make its TLS stack fail
                    // on a malformed record at once, which a TLS sender reports as a receiver
                    // without TLS (a reset would only say "connection reset").
                    let message = Error::UnexpectedTls.to_string();
                    farewell(conn, RejectReason::InvalidHello, message).await;
                    return Err(Error::UnexpectedTls);
                }
                self.count_bad_frame(&e);
                return Err(e.into());
            }
            Ok(Some(Ok(first))) => first,
        };
        match first {
            (SenderMessage::Hello(hello), bytes) => Ok(Some((hello, bytes))),
            (other, _) => {
                self.metrics.decode_error("violation");
                Err(kube_relay_proto::Error::Violation(format!(
                    "expected Hello as the first message, got {}",
                    message_name(&other)
                ))
                .into())
            }
        }
    }

    /// Version and token: the checks that make a peer trusted.
    async fn authenticate<S>(&self, conn: &mut Conn<S>, hello: &Hello) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let refusal = if hello.version != PROTOCOL_VERSION {
            Some((
                RejectReason::UnsupportedVersion {
                    supported: vec![PROTOCOL_VERSION],
                },
                format!(
                    "protocol version {} is not supported (this receiver speaks {PROTOCOL_VERSION})",
                    hello.version
                ),
            ))
        } else if !token_matches(self.config.token.as_deref(), hello.token.as_deref()) {
            let (kind, message) = if hello.token.is_some() {
                ("wrong_token", "wrong token")
            } else {
                ("no_token", "this receiver requires a token")
            };
            self.metrics.auth_failure(kind);
            Some((RejectReason::Unauthorized, message.to_owned()))
        } else {
            None
        };
        match refusal {
            Some((reason, message)) => Err(self.reject(conn, reason, message).await),
            None => Ok(()),
        }
    }

    /// Names and shutdown: everything else decided before the store is touched.
    async fn check_hello<S>(&self, conn: &mut Conn<S>, hello: &Hello) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let refusal = if let Err(problem) = check_cluster_name(&hello.cluster) {
            Some((RejectReason::InvalidHello, problem))
        } else if let Err(problem) = check_sender_id(&hello.sender_id) {
            Some((RejectReason::InvalidHello, problem))
        } else if hello.agent.len() > MAX_NAME_BYTES {
            Some((
                RejectReason::InvalidHello,
                format!("agent is longer than {MAX_NAME_BYTES} bytes"),
            ))
        } else if self.shutdown.is_cancelled() {
            Some((
                RejectReason::ShuttingDown,
                "the receiver is shutting down".to_owned(),
            ))
        } else {
            None
        };
        match refusal {
            Some((reason, message)) => Err(self.reject(conn, reason, message).await),
            None => Ok(()),
        }
    }

    async fn reject<S>(&self, conn: &mut Conn<S>, reason: RejectReason, message: String) -> Error
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let label = reason.as_label();
        self.metrics.handshake_rejected(label);
        let reject = ReceiverMessage::Reject(Reject {
            reason,
            message: message.clone(),
        });
        // Best effort: the peer may already be gone.
        let _ = timeout(REJECT_WRITE_TIMEOUT, conn.send(reject)).await;
        Error::Rejected {
            reason: label,
            message,
        }
    }

    async fn send<S>(&self, conn: &mut Conn<S>, msg: ReceiverMessage) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // A peer that stops reading cannot stall the session for longer than the idle timeout.
        match timeout(self.config.idle_timeout(), conn.send(msg)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Error::IdleTimeout(self.config.idle_timeout())),
        }
    }

    async fn data_loop<S>(
        &self,
        conn: &mut Conn<S>,
        link: Link<'_>,
        cancel: &CancellationToken,
    ) -> Result<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Link {
            cluster,
            epoch,
            id,
            resume,
        } = link;
        let idle = self.config.idle_timeout();
        let mut idle_deadline = Instant::now() + idle;
        // The encoder reserves what each message needs; acks and heartbeats are small.
        if conn.write_buffer().is_empty() {
            *conn.write_buffer_mut() = BytesMut::with_capacity(IDLE_BUFFER_BYTES);
        }
        // Highest contiguous applied seq not yet acknowledged, and when it must be.
        let mut pending_ack: Option<(u64, Instant)> = None;
        let mut epoch_acked = match resume {
            Resume::After { acked } => Some(acked),
            Resume::Snapshot => None,
        };
        // Samples of applied batches not yet known to be in every remote-write queue.
        let mut unwritten: Option<Ticket> = None;
        let end = loop {
            let ack_at = pending_ack.map(|(_, at)| at);
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    break if self.shutdown.is_cancelled() { End::Shutdown } else { End::Replaced };
                }
                () = sleep_until(ack_at.unwrap_or(idle_deadline)), if ack_at.is_some() => {
                    if let Some((seq, _)) = pending_ack.take() {
                        self.written(&mut unwritten).await;
                        self.send(conn, ack(epoch, seq)).await?;
                    }
                }
                () = sleep_until(idle_deadline) => {
                    self.metrics.idle_timeout();
                    return Err(Error::IdleTimeout(idle));
                }
                frame = conn.next() => {
                    let (msg, bytes) = match frame {
                        None => break End::Eof,
                        Some(Err(e)) => {
                            self.count_bad_frame(&e);
                            return Err(refuse(conn, e).await);
                        }
                        Some(Ok(frame)) => frame,
                    };
                    idle_deadline = Instant::now() + idle;
                    if conn.read_buffer().is_empty()
                        && conn.read_buffer().capacity() > 4 * IDLE_BUFFER_BYTES
                    {
                        *conn.read_buffer_mut() = BytesMut::with_capacity(IDLE_BUFFER_BYTES);
                    }
                    match msg {
                        SenderMessage::Batch(batch) => {
                            let applied = self.store.apply(cluster, id, &batch, bytes);
                            if let (Some(rw), Ok(applied)) = (&self.remote_write, &applied) {
                                let kind = match applied {
                                    Applied::Batch { .. } => Some(remote_write::Applied::Delta),
                                    Applied::Staged => Some(remote_write::Applied::Staged),
                                    Applied::SnapshotComplete { .. } => {
                                        Some(remote_write::Applied::SnapshotComplete)
                                    }
                                    Applied::Duplicate => None,
                                };
                                if let Some(kind) = kind
                                    && let Some(ticket) = rw.batch(cluster, &batch, kind).await
                                {
                                    unwritten = Some(ticket);
                                }
                            }
                            match applied {
                                Ok(Applied::Batch { acked: Some(seq) }) => {
                                    epoch_acked = Some(seq);
                                    // Acked as soon as nothing more is buffered to read:
                                    // one ack per burst of queued frames, no wait for a
                                    // lone batch (the fan-in bench measured every ack
                                    // 100 ms late at 1 batch/s per sender).
                                    let due = if conn.read_buffer().is_empty() {
                                        Instant::now()
                                    } else {
                                        pending_ack.map_or_else(
                                            || Instant::now() + ACK_INTERVAL,
                                            |(_, at)| at,
                                        )
                                    };
                                    pending_ack = Some((seq, due));
                                }
                                Ok(Applied::SnapshotComplete { acked }) => {
                                    epoch_acked = Some(acked);
                                    pending_ack = None;
                                    self.written(&mut unwritten).await;
                                    self.send(conn, ack(epoch, acked)).await?;
                                }
                                Ok(Applied::Duplicate) => {
                                    // The sender replays what it thinks unacked: re-ack.
                                    if let (None, Some(seq)) = (pending_ack, epoch_acked) {
                                        pending_ack = Some((seq, Instant::now() + ACK_INTERVAL));
                                    }
                                }
                                Ok(Applied::Staged | Applied::Batch { acked: None }) => {}
                                Err(ApplyError::Superseded) => break End::Replaced,
                                Err(e @ ApplyError::Violation(_)) => {
                                    self.metrics.decode_error("violation");
                                    let e = kube_relay_proto::Error::Violation(
                                        e.to_string().trim_start_matches("protocol violation: ").to_owned(),
                                    );
                                    return Err(refuse(conn, e).await);
                                }
                            }
                        }
                        SenderMessage::Heartbeat(hb) => {
                            self.store.count_frame(cluster, id, bytes);
                            if let Some(rw) = &self.remote_write
                                && let Some(ticket) = rw.heartbeat(cluster, hb.sent_at_ms).await
                            {
                                unwritten = Some(ticket);
                            }
                            self.send(conn, ReceiverMessage::Heartbeat(hb)).await?;
                        }
                        SenderMessage::Goodbye(goodbye) => {
                            self.store.count_frame(cluster, id, bytes);
                            info!(cluster = %cluster, reason = %goodbye.reason, "sender said goodbye");
                            break End::Goodbye;
                        }
                        SenderMessage::Hello(_) => {
                            self.metrics.decode_error("violation");
                            let e = kube_relay_proto::Error::Violation(
                                "a second Hello on an established session".to_owned(),
                            );
                            return Err(refuse(conn, e).await);
                        }
                    }
                }
            }
        };
        // Whatever was applied (and, with remote write, queued) is acknowledged before the
        // connection closes.
        if let Some((seq, _)) = pending_ack
            && timeout(REJECT_WRITE_TIMEOUT, self.written(&mut unwritten))
                .await
                .is_ok()
        {
            let _ = timeout(REJECT_WRITE_TIMEOUT, conn.send(ack(epoch, seq))).await;
        }
        Ok(end)
    }

    /// Waits until the samples of every batch applied so far are in every remote-write
    /// queue (at once without remote write).
    async fn written(&self, unwritten: &mut Option<Ticket>) {
        if let (Some(rw), Some(ticket)) = (&self.remote_write, unwritten.as_ref()) {
            rw.durable(ticket).await;
            *unwritten = None;
        }
    }
}

impl Session {
    /// Counts a frame that could not be read; a dropped socket is not a decode error.
    fn count_bad_frame(&self, e: &kube_relay_proto::Error) {
        if !matches!(e, kube_relay_proto::Error::Io(_)) {
            self.metrics.decode_error(e.kind());
        }
    }
}

/// What an established sender is told when `e` ends its session: a frame over the limit, a
/// broken protocol rule, a payload that does not decode. A socket error gets no answer: the
/// peer is gone.
fn answer(e: &kube_relay_proto::Error) -> Option<(RejectReason, String)> {
    use kube_relay_proto::Error as Wire;
    match e {
        Wire::Io(_) | Wire::TruncatedFrame { .. } | Wire::Encode(_) => None,
        Wire::FrameTooLarge { len, max } => Some((
            RejectReason::FrameTooLarge {
                limit: u32::try_from(*max).unwrap_or(u32::MAX),
            },
            format!("a frame of {len} bytes exceeds this receiver's --max-frame-bytes ({max})"),
        )),
        Wire::Decode { .. } | Wire::TrailingBytes { .. } | Wire::Violation(_) => {
            Some((RejectReason::ProtocolViolation, e.to_string()))
        }
    }
}

/// Tells an established sender why its session ends ([`answer`]) and returns the error to
/// log; the session lingers for the sender to read it once the cluster is released.
async fn refuse<S>(conn: &mut Conn<S>, e: kube_relay_proto::Error) -> Error
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some((reason, message)) = answer(&e) {
        let reject = ReceiverMessage::Reject(Reject { reason, message });
        let _ = timeout(REJECT_WRITE_TIMEOUT, conn.send(reject)).await;
    }
    e.into()
}

/// Writes `Reject{reason, message}` and lets the peer read it before the connection closes
/// (see [`crate::farewell`]).
async fn farewell<S>(conn: &mut Conn<S>, reason: RejectReason, message: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reject = ReceiverMessage::Reject(Reject { reason, message });
    if timeout(REJECT_WRITE_TIMEOUT, conn.send(reject))
        .await
        .is_ok()
    {
        crate::farewell::linger(conn.get_mut()).await;
    }
}

/// The established session a data loop serves.
#[derive(Debug, Clone, Copy)]
struct Link<'a> {
    cluster: &'a str,
    epoch: u64,
    id: ConnId,
    resume: Resume,
}

fn ack(epoch: u64, seq: u64) -> ReceiverMessage {
    ReceiverMessage::Ack(Ack { epoch, seq })
}

fn message_name(msg: &SenderMessage) -> &'static str {
    match msg {
        SenderMessage::Hello(_) => "Hello",
        SenderMessage::Batch(_) => "Batch",
        SenderMessage::Heartbeat(_) => "Heartbeat",
        SenderMessage::Goodbye(_) => "Goodbye",
    }
}
