//! The health of the sender's source, the Kubernetes API, apart from the link's: a monitoring
//! tool must never show frozen data as live. As kube-state-metrics and the Prometheus
//! exporter guidelines separate "the exporter is up" from "what it exports from is
//! reachable", the sender exports `relay_sender_api_up` (the API server answers a probe) and
//! `relay_sender_watch_up{resource}` (that resource's watch is established), next to
//! `relay_cluster_up`, which the receiver exports for the link.
//!
//! A watch's health is read from its HTTP traffic, not guessed from its events: each watcher
//! gets its own client wrapping the sender's ([`observed`]), which marks the watch up when a
//! `watch=true` request is answered 2xx and down when any of its requests fails or is
//! refused; errors the watcher reports mid-stream mark it down too
//! ([`SourceHealth::watch_failed`]). So a killed API server shows within a second (the watch
//! stream ends, its restart is refused), and a recovered one as soon as the watch restarts,
//! even in a quiet cluster where no event follows. A hung or unreachable API server keeps a
//! watch open and silent: the [`probe`] (`GET /version` every [`PROBE_INTERVAL`], answered
//! within [`PROBE_TIMEOUT`]) catches that; it runs as a task of its own beside the watchers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::family::Family;
use crate::series::SeriesSet;

/// Time between two probes of the API server.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// Longest wait for the API server to answer a probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One watcher: its resource and its namespace (`None` for all or cluster-scoped).
type WatcherKey = (&'static str, Option<String>);

/// What the sender knows of its source (see the module docs).
#[derive(Debug, Default)]
pub struct SourceHealth {
    /// Per watcher: true while its watch is established.
    watches: Mutex<BTreeMap<WatcherKey, bool>>,
    api_up: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SourceHealth {
    /// Registers a watcher, down until its watch is established.
    pub fn expect_watch(&self, resource: &'static str, scope: Option<String>) {
        lock(&self.watches)
            .entry((resource, scope))
            .or_insert(false);
    }

    /// The watcher's watch request was answered 2xx: it receives changes again.
    pub fn watch_started(&self, resource: &'static str, scope: Option<&str>) {
        if self.set(resource, scope, true) {
            info!(resource, scope = ?scope, "watch established again; the resource is relayed live");
        }
    }

    /// The watcher failed (a refused or failed request, an error in its stream): until it
    /// restarts, the resource's relayed state is frozen.
    pub fn watch_failed(&self, resource: &'static str, scope: Option<&str>) {
        if self.set(resource, scope, false) {
            warn!(
                resource,
                scope = ?scope,
                "watch down; the resource's relayed state is frozen until it restarts \
                 (relay_sender_watch_up 0)"
            );
        }
    }

    /// Sets a watcher's state; true when it changed from up to down or back.
    fn set(&self, resource: &'static str, scope: Option<&str>, up: bool) -> bool {
        let mut watches = lock(&self.watches);
        let key = (resource, scope.map(str::to_owned));
        let before = watches.insert(key, up);
        before.is_some_and(|was| was != up)
    }

    /// Records a probe's outcome.
    pub fn api_answered(&self, up: bool, cause: Option<&dyn std::fmt::Display>) {
        let was = self.api_up.swap(up, Ordering::Relaxed);
        match (was, up, cause) {
            (true, false, Some(cause)) => warn!(
                cause = %cause,
                "the Kubernetes API server does not answer; relayed state may be frozen \
                 (relay_sender_api_up 0)"
            ),
            (false, true, _) => info!("the Kubernetes API server answers"),
            _ => {}
        }
    }

    /// True when the last probe was answered.
    pub fn api_up(&self) -> bool {
        self.api_up.load(Ordering::Relaxed)
    }

    /// Whether every watcher of `resource` is established (`None` if none is registered).
    pub fn watch_up(&self, resource: &str) -> Option<bool> {
        lock(&self.watches)
            .iter()
            .filter(|((r, _), _)| *r == resource)
            .map(|(_, up)| *up)
            .reduce(|a, b| a && b)
    }

    /// Appends `relay_sender_api_up` and `relay_sender_watch_up{resource}` (0 when any
    /// watcher of the resource is down) to `set`.
    pub fn push_series(&self, set: &mut SeriesSet<'static>) {
        let none: [&str; 0] = [];
        set.push(
            Family::SenderApiUp,
            none,
            f64::from(u8::from(self.api_up())),
        );
        let mut by_resource: BTreeMap<&'static str, bool> = BTreeMap::new();
        for ((resource, _), up) in lock(&self.watches).iter() {
            *by_resource.entry(resource).or_insert(true) &= *up;
        }
        for (resource, up) in by_resource {
            set.push(Family::SenderWatchUp, [resource], f64::from(u8::from(up)));
        }
    }
}

/// A client for one watcher: `client`'s requests, their outcome recorded in `health` for
/// (`resource`, `scope`). A `watch=true` request answered 2xx marks the watch up; any request
/// that fails or is answered otherwise marks it down; a list answered 2xx changes nothing (a
/// relist is under way, the watch follows).
pub fn observed(
    client: &Client,
    health: Arc<SourceHealth>,
    resource: &'static str,
    scope: Option<String>,
) -> Client {
    let inner = client.clone();
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let (inner, health, scope) = (inner.clone(), Arc::clone(&health), scope.clone());
        async move {
            let watch = request
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
            let response = inner.send(request).await;
            match &response {
                Ok(r) if r.status().is_success() => {
                    if watch {
                        health.watch_started(resource, scope.as_deref());
                    }
                }
                _ => health.watch_failed(resource, scope.as_deref()),
            }
            response
        }
    });
    Client::new(service, client.default_namespace())
}

/// Probes the API server (`GET /version`) every [`PROBE_INTERVAL`], at once first, recording
/// each outcome in `health`, until `stop`.
pub async fn probe(client: Client, health: Arc<SourceHealth>, stop: CancellationToken) {
    loop {
        let answer = tokio::select! {
            () = stop.cancelled() => return,
            answer = tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()) => answer,
        };
        match answer {
            Ok(Ok(_)) => health.api_answered(true, None),
            Ok(Err(e)) => health.api_answered(false, Some(&e)),
            Err(_) => health.api_answered(
                false,
                Some(&format!(
                    "no answer to GET /version within {PROBE_TIMEOUT:?}"
                )),
            ),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(health: &SourceHealth) -> Vec<String> {
        let mut set = SeriesSet::new();
        health.push_series(&mut set);
        set.render()
    }

    #[test]
    fn a_resource_is_up_only_while_every_watcher_of_it_is() {
        let health = SourceHealth::default();
        health.expect_watch("pods", Some("a".into()));
        health.expect_watch("pods", Some("b".into()));
        health.expect_watch("nodes", None);
        assert_eq!(
            rendered(&health),
            [
                "relay_sender_api_up 0",
                r#"relay_sender_watch_up{resource="nodes"} 0"#,
                r#"relay_sender_watch_up{resource="pods"} 0"#,
            ]
        );
        health.api_answered(true, None);
        health.watch_started("pods", Some("a"));
        health.watch_started("nodes", None);
        assert_eq!(
            health.watch_up("pods"),
            Some(false),
            "b is not watching yet"
        );
        health.watch_started("pods", Some("b"));
        assert_eq!(
            rendered(&health),
            [
                "relay_sender_api_up 1",
                r#"relay_sender_watch_up{resource="nodes"} 1"#,
                r#"relay_sender_watch_up{resource="pods"} 1"#,
            ]
        );
        health.watch_failed("pods", Some("a"));
        health.api_answered(false, Some(&"refused"));
        assert_eq!(health.watch_up("pods"), Some(false));
        assert_eq!(health.watch_up("nodes"), Some(true));
        assert_eq!(health.watch_up("events"), None);
        assert!(!health.api_up());
    }
}
