//! [`Receiver`]: binds both listeners, then runs the sender accept loop, the HTTP server
//! and the TTL expiry until shutdown, draining connections within a bound.
//!
//! # Admission
//! The accept loop only accepts and admits; everything slow (the TLS handshake, the `Hello`)
//! happens in the connection's own task under one handshake deadline. Two limits hold:
//! - `max_connections` connections in total (a semaphore); more are answered `Busy` (on a
//!   TLS port, closed) at once;
//! - [`ReceiverConfig::handshakes_per_ip_limit`] connections per IP address that have not
//!   authenticated yet, so one address opening thousands of idle or trickling connections
//!   cannot take every slot from the other senders.
//!
//! Refused connections are always counted (`relay_receiver_handshakes_rejected_total`,
//! `relay_receiver_auth_failures_total`) and logged through a rate-limited [`RefusalLog`],
//! whose summary of suppressed lines is written every [`REFUSAL_LOG_WINDOW`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use kube_relay_proto::{
    MAX_HANDSHAKE_FRAME_BYTES, ReceiverCodec, ReceiverMessage, Reject, RejectReason,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::http::{self, HttpApp};
use crate::metrics::Metrics;
use crate::remote_write::{self, RemoteWrite};
use crate::security::{REFUSAL_LOG_WINDOW, RefusalLog};
use crate::session::Session;
use crate::store::{Store, StoreLimits};
use crate::tls::{self, HandshakeFailure, TLS_HANDSHAKE_RECORD};
use crate::{Error, ReceiverConfig, Result};

/// Longest pause after failing accepts (for example when out of file descriptors).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Listen backlog of both listeners (the kernel caps it at `net.core.somaxconn`): room for a
/// connection burst to wait for the accept loop instead of being dropped by the kernel.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Label of `relay_receiver_handshakes_rejected_total` for a failed TLS handshake.
pub const REJECTED_TLS: &str = "tls";

/// Label of `relay_receiver_handshakes_rejected_total` for a connection refused because its
/// IP address already has `max_handshakes_per_ip` unauthenticated connections.
pub const REJECTED_PER_IP: &str = "per_ip_limit";

/// A receiver with both listeners bound, ready to [`run`](Receiver::run).
#[derive(Debug)]
pub struct Receiver {
    config: Arc<ReceiverConfig>,
    ingest: TcpListener,
    http: TcpListener,
    ingest_tls: Option<Arc<rustls::ServerConfig>>,
    http_tls: Option<Arc<rustls::ServerConfig>>,
    store: Store,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    remote_write: Option<Arc<RemoteWrite>>,
    /// Stops remote write's senders once the sessions have drained.
    remote_write_shutdown: CancellationToken,
}

impl Receiver {
    /// Loads the TLS files, then binds the sender listener (`config.listen`) and the HTTP
    /// listener (`config.http_listen`); port 0 picks a free port (see
    /// [`Receiver::ingest_addr`]).
    ///
    /// # Errors
    /// [`Error::Config`] for invalid limits, [`Error::Pem`], [`Error::Tls`] or
    /// [`Error::ClientCa`] for unusable TLS files, [`Error::Bind`] when an address cannot be
    /// bound; with remote write, its errors (unusable queue directory, TLS or secret files).
    pub async fn bind(config: ReceiverConfig) -> Result<Receiver> {
        config.validate()?;
        let store = Store::with_limits(StoreLimits {
            ttl: config.ttl,
            max_series_per_cluster: config.max_series_per_cluster,
            max_clusters: config.max_clusters,
        });
        let remote_write_shutdown = CancellationToken::new();
        let remote_write = match (&config.state_dir, config.remote_write.is_empty()) {
            (Some(state_dir), false) => Some(
                RemoteWrite::start(
                    remote_write::Options {
                        endpoints: config.remote_write.clone(),
                        state_dir: state_dir.clone(),
                        interval: config.remote_write_interval,
                        ttl: config.ttl,
                        max_series_per_cluster: config.max_series_per_cluster,
                    },
                    remote_write_shutdown.clone(),
                )
                .await?,
            ),
            _ => None,
        };
        let collectors = remote_write.iter().map(RemoteWrite::collector).collect();
        let metrics = Metrics::with_collectors(store.clone(), collectors);
        let ingest_tls = match &config.tls {
            Some(files) => Some(tls::server_config(
                "ingest",
                files,
                config.tls_client_ca.as_deref(),
                &[],
                Some(metrics.clone()),
            )?),
            None => None,
        };
        let http_tls = match &config.http_tls {
            Some(files) => Some(tls::server_config(
                "http",
                files,
                None,
                &[b"http/1.1"],
                Some(metrics.clone()),
            )?),
            None => None,
        };
        let ingest = bind("ingest", config.listen)?;
        let http = bind("http", config.http_listen)?;
        Ok(Receiver {
            config: Arc::new(config),
            ingest,
            http,
            ingest_tls,
            http_tls,
            store,
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            remote_write,
            remote_write_shutdown,
        })
    }

    /// Address senders connect to.
    pub fn ingest_addr(&self) -> SocketAddr {
        self.ingest.local_addr().unwrap_or(self.config.listen)
    }

    /// Address of `/metrics`, `/healthz`, `/readyz` and the status page.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.config.http_listen)
    }

    /// The store, for tests and embedding (cluster status, scaling events).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, closes sessions (acking
    /// what they applied) and waits at most `shutdown_timeout` for connections to finish.
    ///
    /// # Errors
    /// Currently none after a successful bind (TLS files are loaded by
    /// [`Receiver::bind`]).
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        self.warn_about_exposure();
        info!(
            ingest = %self.ingest_addr(),
            http = %self.http_addr(),
            tls = self.ingest_tls.is_some(),
            mutual_tls = self.config.tls_client_ca.is_some(),
            token = self.config.token.is_some(),
            http_tls = self.http_tls.is_some(),
            http_basic_auth = self.config.http_basic_auth.is_some(),
            ttl = ?self.config.ttl,
            max_connections = self.config.max_connections,
            max_handshakes_per_ip = self.config.handshakes_per_ip_limit(),
            max_frame_bytes = self.config.max_frame_bytes,
            "receiver listening"
        );
        let tracker = TaskTracker::new();
        let store = self.store.clone();
        let expiry_shutdown = shutdown.clone();
        tracker.spawn(async move { store.run_expiry(expiry_shutdown).await });

        let refusals = Arc::new(RefusalLog::default());
        tracker.spawn(summarize_refusals(refusals.clone(), shutdown.clone()));

        let mut app = HttpApp::new(self.store.clone(), self.metrics.clone(), self.ready.clone())
            .with_refusal_log(refusals.clone());
        if let Some(auth) = &self.config.http_basic_auth {
            app = app.with_basic_auth(auth.clone());
        }
        tracker.spawn(http::serve(
            self.http,
            app,
            self.http_tls.map(TlsAcceptor::from),
            tracker.clone(),
            shutdown.clone(),
        ));

        if let Some(rw) = &self.remote_write {
            let (rw, stop) = (rw.clone(), self.remote_write_shutdown.clone());
            tokio::spawn(async move { rw.run_expiry(stop).await });
        }
        let session = Session::new(
            self.store.clone(),
            self.metrics.clone(),
            self.config.clone(),
            refusals.clone(),
            shutdown.clone(),
        )
        .with_remote_write(self.remote_write.clone());
        let listener = Listener {
            listener: self.ingest,
            limit: Arc::new(Semaphore::new(self.config.max_connections)),
            handshakes: Arc::new(HandshakeSlots::new(self.config.handshakes_per_ip_limit())),
            tls: self.ingest_tls.map(TlsAcceptor::from),
            handshake_timeout: self.config.handshake_timeout,
            session,
            metrics: self.metrics.clone(),
            refusals,
            tracker: tracker.clone(),
        };
        tracker.spawn(listener.run(shutdown.clone()));
        self.ready.store(true, Ordering::Release);

        shutdown.cancelled().await;
        self.ready.store(false, Ordering::Release);
        tracker.close();
        info!(timeout = ?self.config.shutdown_timeout, "shutting down, draining connections");
        if tokio::time::timeout(self.config.shutdown_timeout, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = tracker.len(),
                "connections still open after the shutdown timeout; leaving them"
            );
        }
        // Remote write stops after the sessions: their last batches are queued by now.
        self.remote_write_shutdown.cancel();
        if let Some(rw) = &self.remote_write {
            rw.close().await;
        }
        info!("receiver stopped");
        Ok(())
    }

    /// One warning per exposure at start: who can report data, and what travels in clear.
    fn warn_about_exposure(&self) {
        let ingest = self.ingest_addr();
        let tls = self.ingest_tls.is_some();
        let token = self.config.token.is_some();
        let client_certs = self.config.tls_client_ca.is_some();
        match (tls, token, client_certs) {
            (false, false, _) => warn!(
                "NO TOKEN CONFIGURED AND NO TLS on {ingest}: any client that reaches it can \
                 report any cluster and overwrite its series, and everything travels in clear; \
                 fine for a lab only. Set --token or --token-file, and --tls-cert/--tls-key"
            ),
            (false, true, _) => warn!(
                "no TLS on {ingest}: the token and all data travel in clear, so anyone on the \
                 path can read the token and replay it; set --tls-cert and --tls-key"
            ),
            (true, false, false) => warn!(
                "TLS without a token or client certificates on {ingest}: traffic is \
                 encrypted, but any client that reaches it can report any cluster; set \
                 --token or --tls-client-ca"
            ),
            (true, _, _) => {}
        }
        if self.config.http_basic_auth.is_some() && self.http_tls.is_none() {
            warn!(
                http = %self.http_addr(),
                "HTTP basic auth without TLS: the password travels in clear; set \
                 --http-tls-cert and --http-tls-key"
            );
        }
    }
}

/// Binds `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as `TcpListener::bind` does).
fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| Error::Bind { what, addr, source })
}

/// Writes the refusal log's summary of suppressed lines once per window until shutdown.
async fn summarize_refusals(refusals: Arc<RefusalLog>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(REFUSAL_LOG_WINDOW);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => refusals.summarize(),
        }
    }
}

/// Counts unauthenticated connections per IP address against a limit.
#[derive(Debug)]
struct HandshakeSlots {
    limit: usize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One unauthenticated connection's place in [`HandshakeSlots`]; given back on drop.
#[derive(Debug)]
struct HandshakeSlot {
    slots: Arc<HandshakeSlots>,
    ip: IpAddr,
}

impl HandshakeSlots {
    fn new(limit: usize) -> Self {
        HandshakeSlots {
            limit,
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<HandshakeSlot> {
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        let taken = by_ip.entry(ip).or_insert(0);
        if *taken >= self.limit {
            return None;
        }
        *taken += 1;
        Some(HandshakeSlot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut by_ip = self.slots.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(taken) = by_ip.get_mut(&self.ip) {
            *taken = taken.saturating_sub(1);
            if *taken == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// The sender accept loop: admits connections (total cap, per-IP handshake cap) and spawns
/// one task each, which does the TLS handshake, if any, and runs the session.
struct Listener {
    listener: TcpListener,
    limit: Arc<Semaphore>,
    handshakes: Arc<HandshakeSlots>,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    session: Session,
    metrics: Arc<Metrics>,
    refusals: Arc<RefusalLog>,
    tracker: TaskTracker,
}

impl Listener {
    async fn run(self, shutdown: CancellationToken) {
        let at_limit = Refusal::new(
            RejectReason::Busy.as_label(),
            "the receiver is at its connection limit; retry later",
        );
        let per_ip = Refusal::new(
            REJECTED_PER_IP,
            "too many unauthenticated connections from this address; retry later",
        );
        let tls_required = Arc::new(reject_frame(
            RejectReason::TlsRequired,
            "this receiver's sender port requires TLS; the sender needs --tls-ca (the CA that \
             signed the receiver's certificate)",
        ));
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    backoff = Duration::from_millis(5);
                    accepted
                }
                Err(e) => {
                    error!(cause = %e, backoff = ?backoff, "failed to accept a sender connection");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                self.refuse_busy(stream, peer, &at_limit);
                continue;
            };
            let Some(slot) = self.handshakes.try_take(peer.ip()) else {
                self.refuse_busy(stream, peer, &per_ip);
                continue;
            };
            let conn = Connection {
                session: self.session.clone(),
                tls: self.tls.clone(),
                tls_required: tls_required.clone(),
                metrics: self.metrics.clone(),
                refusals: self.refusals.clone(),
                deadline: Instant::now() + self.handshake_timeout,
                handshake_timeout: self.handshake_timeout,
            };
            self.tracker.spawn(conn.run(stream, peer, permit, slot));
        }
    }

    /// Counts, logs (rate-limited) and answers a connection refused at admission: a `Busy`
    /// reject on plain TCP, a bare close on a TLS port (a plain frame would be noise there).
    /// The answer is written without waiting (a fresh socket's send buffer has room) and the
    /// socket closed at once, so a burst of refusals holds no descriptors and spawns no tasks.
    fn refuse_busy(&self, stream: TcpStream, peer: SocketAddr, refusal: &Refusal) {
        self.metrics.handshake_rejected(refusal.label);
        self.refusals.refused(peer, refusal.label, &refusal.why);
        if self.tls.is_none()
            && let Ok(mut std) = stream.into_std()
        {
            // Best effort: on a full buffer the peer just sees the close.
            let _ = std::io::Write::write(&mut std, &refusal.frame);
        }
    }
}

/// One admitted connection: TLS handshake (if configured), then the session.
struct Connection {
    session: Session,
    tls: Option<TlsAcceptor>,
    /// The `Reject{TlsRequired}` frame a plain-TCP peer gets on a TLS port.
    tls_required: Arc<BytesMut>,
    metrics: Arc<Metrics>,
    refusals: Arc<RefusalLog>,
    deadline: Instant,
    handshake_timeout: Duration,
}

impl Connection {
    async fn run(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        slot: HandshakeSlot,
    ) {
        let deadline = self.deadline;
        // Errors are logged by the session (rate-limited before authentication). Each branch
        // is boxed at its own size: inline, every connection's task would be as large as the
        // largest of them, a TLS session's (7.5 KiB a task, plain TCP too, in heaptrack of
        // the fan-in bench at 2,000 senders).
        let _ = match &self.tls {
            None => Box::pin(self.session.run_admitted(stream, peer, deadline, slot)).await,
            Some(acceptor) => match Box::pin(self.tls_handshake(acceptor, stream, peer)).await {
                Some(tls) => Box::pin(self.session.run_admitted(tls, peer, deadline, slot)).await,
                None => Ok(()),
            },
        };
        drop(permit);
    }

    /// Runs the TLS handshake by the deadline; `None` (counted and logged) when it fails.
    async fn tls_handshake(
        &self,
        acceptor: &TlsAcceptor,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        // A peek tells a TCP probe (connect, close) from a client, and plain bytes from TLS,
        // before rustls reads anything.
        let mut first = [0u8; 1];
        match timeout_at(self.deadline, stream.peek(&mut first)).await {
            Err(_) => {
                self.timed_out(peer);
                return None;
            }
            Ok(Ok(0) | Err(_)) => {
                debug!(peer = %peer, "connection closed before its TLS handshake");
                return None;
            }
            Ok(Ok(_)) => {}
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            self.tls_failed(
                peer,
                HandshakeFailure::NotTls,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("first byte {:#04x} is not a TLS handshake record", first[0]),
                ),
            );
            // A plain-TCP sender reads this as the answer to its Hello and can name the flag
            // it lacks; bounded by the handshake deadline.
            let mut stream = stream;
            let _ = timeout_at(self.deadline, async {
                if stream.write_all(&self.tls_required).await.is_ok() {
                    crate::farewell::linger(&mut stream).await;
                }
            })
            .await;
            return None;
        }
        match timeout_at(self.deadline, acceptor.accept(stream)).await {
            Err(_) => {
                self.timed_out(peer);
                None
            }
            Ok(Err(e)) => {
                self.tls_failed(peer, HandshakeFailure::classify(&e), e);
                None
            }
            Ok(Ok(tls)) => Some(tls),
        }
    }

    fn timed_out(&self, peer: SocketAddr) {
        self.metrics.handshake_rejected("handshake_timeout");
        let err = Error::HandshakeTimeout(self.handshake_timeout);
        self.refusals.refused(peer, err.kind(), &err);
    }

    fn tls_failed(&self, peer: SocketAddr, failure: HandshakeFailure, source: std::io::Error) {
        let kind = failure.as_label();
        self.metrics.handshake_rejected(REJECTED_TLS);
        self.metrics.auth_failure(kind);
        self.refusals
            .refused(peer, kind, &Error::TlsHandshake { kind, source });
    }
}

/// A refusal at admission: its metric label, its log text and its pre-encoded
/// `Reject{Busy}` frame.
struct Refusal {
    label: &'static str,
    why: &'static str,
    frame: BytesMut,
}

impl Refusal {
    fn new(label: &'static str, why: &'static str) -> Self {
        Refusal {
            label,
            why,
            frame: reject_frame(RejectReason::Busy, why),
        }
    }
}

/// A `Reject` frame, encoded once.
fn reject_frame(reason: RejectReason, message: &str) -> BytesMut {
    let mut frame = BytesMut::new();
    let reject = ReceiverMessage::Reject(Reject {
        reason,
        message: message.to_owned(),
    });
    // A short Reject always fits the handshake limit; an empty frame would only mean the
    // peer sees a bare close.
    let _ = ReceiverCodec::new(MAX_HANDSHAKE_FRAME_BYTES).encode(&reject, &mut frame);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_slots_are_capped_per_address_and_given_back_on_drop() {
        let slots = Arc::new(HandshakeSlots::new(2));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = slots.try_take(a).expect("first");
        let _second = slots.try_take(a).expect("second");
        assert!(slots.try_take(a).is_none(), "a third from one address");
        let _other = slots.try_take(b).expect("another address is not affected");
        drop(first);
        let _again = slots.try_take(a).expect("a slot came back");
        drop((_second, _other, _again));
        assert!(
            slots.by_ip.lock().expect("lock").is_empty(),
            "no entry is kept for addresses without connections"
        );
    }
}
