//! State shared by the HTTP server, the watch streams, the real-time ticker and the
//! handles: the cluster behind one lock, a channel that moves with its resourceVersion,
//! shutdown, the task tracker and the log of recent requests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::Cluster;

/// Response bodies: complete or streamed (watches).
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// Requests remembered for [`crate::SimHandle::requests`].
const REQUEST_LOG: usize = 2000;

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path and query string, as sent.
    pub path: String,
    /// Response status code.
    pub status: u16,
    /// Whether the request was a watch.
    pub watch: bool,
}

/// State shared by the server, the watch streams, the ticker and the handles.
pub(crate) struct Shared {
    cluster: Mutex<Cluster>,
    rv_tx: watch::Sender<u64>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub addr: SocketAddr,
    requests: Mutex<VecDeque<RequestRecord>>,
}

impl Shared {
    pub(crate) fn new(cluster: Cluster, addr: SocketAddr) -> Self {
        let rv = cluster.store.rv();
        Shared {
            cluster: Mutex::new(cluster),
            rv_tx: watch::channel(rv).0,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            addr,
            requests: Mutex::new(VecDeque::new()),
        }
    }

    /// Locks the cluster (a poisoned lock is still usable: the state machine has no
    /// invariants a panic in a reader could break).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the cluster, then wakes watchers if it wrote anything.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Cluster) -> R) -> R {
        let mut cluster = self.lock();
        let r = f(&mut cluster);
        let rv = cluster.store.rv();
        drop(cluster);
        self.rv_tx.send_if_modified(|v| {
            let changed = *v != rv;
            *v = rv;
            changed
        });
        r
    }

    /// A receiver that changes whenever the store's resourceVersion moves.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.rv_tx.subscribe()
    }

    /// Waits until the store's resourceVersion reaches `rv`, at most `timeout` or until
    /// shutdown; whether it did.
    pub(crate) async fn wait_for_rv(&self, rv: u64, timeout: Duration) -> bool {
        let mut changes = self.subscribe();
        tokio::select! {
            reached = tokio::time::timeout(timeout, changes.wait_for(|v| *v >= rv)) => {
                reached.is_ok_and(|r| r.is_ok())
            }
            _ = self.shutdown.cancelled() => false,
        }
    }

    /// The requests served so far (the most recent ones).
    pub(crate) fn requests(&self) -> Vec<RequestRecord> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Remembers a served request (the most recent ones).
    pub(crate) fn log_request(&self, record: RequestRecord) {
        let mut log = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() >= REQUEST_LOG {
            log.pop_front();
        }
        log.push_back(record);
    }
}

/// A complete body.
pub(crate) fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}
