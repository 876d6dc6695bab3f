//! [`Receiver`]: binds both listeners, then runs the sender accept loop, the HTTP server
//! and the TTL expiry until shutdown, draining connections within a bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube_relay_proto::{
    MAX_HANDSHAKE_FRAME_BYTES, ReceiverCodec, ReceiverMessage, Reject, RejectReason,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::http::{self, HttpApp};
use crate::metrics::Metrics;
use crate::session::Session;
use crate::store::Store;
use crate::{Error, ReceiverConfig, Result};

/// Longest pause after failing accepts (for example when out of file descriptors).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A receiver with both listeners bound, ready to [`run`](Receiver::run).
#[derive(Debug)]
pub struct Receiver {
    config: Arc<ReceiverConfig>,
    ingest: TcpListener,
    http: TcpListener,
    store: Store,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

impl Receiver {
    /// Binds the sender listener (`config.listen`) and the HTTP listener
    /// (`config.http_listen`); port 0 picks a free port (see [`Receiver::ingest_addr`]).
    ///
    /// # Errors
    /// [`Error::Config`] for invalid limits, [`Error::Bind`] when an address cannot be bound.
    pub async fn bind(config: ReceiverConfig) -> Result<Receiver> {
        config.validate()?;
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { what, addr, source })
        };
        let ingest = bind("ingest", config.listen).await?;
        let http = bind("http", config.http_listen).await?;
        let store = Store::new(config.ttl, config.max_series_per_cluster);
        let metrics = Metrics::new(store.clone());
        Ok(Receiver {
            config: Arc::new(config),
            ingest,
            http,
            store,
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
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
    /// Currently none after a successful bind; the `Result` leaves room for listener setup
    /// that can fail (TLS).
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        if self.config.token.is_none() {
            warn!(
                "NO TOKEN CONFIGURED: any client that reaches {} can report any cluster; \
                 set --token or --token-file",
                self.ingest_addr()
            );
        }
        info!(
            ingest = %self.ingest_addr(),
            http = %self.http_addr(),
            ttl = ?self.config.ttl,
            max_connections = self.config.max_connections,
            max_frame_bytes = self.config.max_frame_bytes,
            "receiver listening"
        );
        let tracker = TaskTracker::new();
        let store = self.store.clone();
        let expiry_shutdown = shutdown.clone();
        tracker.spawn(async move { store.run_expiry(expiry_shutdown).await });

        let app = HttpApp::new(self.store.clone(), self.metrics.clone(), self.ready.clone());
        tracker.spawn(http::serve(
            self.http,
            app,
            tracker.clone(),
            shutdown.clone(),
        ));

        let session = Session::new(
            self.store.clone(),
            self.metrics.clone(),
            self.config.clone(),
            shutdown.clone(),
        );
        let listener = Listener {
            listener: self.ingest,
            limit: Arc::new(Semaphore::new(self.config.max_connections)),
            session,
            metrics: self.metrics.clone(),
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
        info!("receiver stopped");
        Ok(())
    }
}

/// The sender accept loop: caps connections with a semaphore and spawns one session each.
struct Listener {
    listener: TcpListener,
    limit: Arc<Semaphore>,
    session: Session,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
}

impl Listener {
    async fn run(self, shutdown: CancellationToken) {
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
            match self.limit.clone().try_acquire_owned() {
                Ok(permit) => {
                    let session = self.session.clone();
                    self.tracker.spawn(async move {
                        if let Err(e) = session.run(stream, peer).await {
                            warn!(peer = %peer, kind = e.kind(), cause = %e, "closed sender connection");
                        }
                        drop(permit);
                    });
                }
                Err(_) => {
                    self.metrics
                        .handshake_rejected(RejectReason::Busy.as_label());
                    warn!(peer = %peer, "rejected sender connection: at the connection limit");
                    self.tracker.spawn(reject_busy(stream));
                }
            }
        }
    }
}

/// Tells a peer the receiver is at its connection limit, then closes.
async fn reject_busy(stream: TcpStream) {
    use futures::SinkExt;
    let mut out = FramedWrite::new(stream, ReceiverCodec::new(MAX_HANDSHAKE_FRAME_BYTES));
    let reject = ReceiverMessage::Reject(Reject {
        reason: RejectReason::Busy,
        message: "the receiver is at its connection limit; retry later".into(),
    });
    let _ = tokio::time::timeout(Duration::from_secs(1), out.send(&reject)).await;
}
