//! The usage poller: metrics.k8s.io cannot be watched, so PodMetrics are listed every
//! `--usage-interval` (or each kubelet's `/metrics/resource` fetched through the API
//! server's node proxy), turned into usage series by the [`UsageTracker`] and applied to the
//! store. Pods no longer reported lose their usage series.
//!
//! When the source does not answer (metrics-server absent: `404` on metrics.k8s.io, or
//! `503` from an unavailable APIService), one warning says so, `relay_sender_usage_available`
//! drops to 0, and everything else keeps working; the next successful poll logs the recovery.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::api::ListParams;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::UsageSource;
use crate::error::{Error, kube_error_kind};
use crate::series::{ObjectKey, ObjectKind};
use crate::shared::Shared;
use crate::usage::{PodUsageList, UsageTracker, parse_resource_metrics};
use crate::watch::WatchScope;

/// Kubelets fetched at once with `--usage-source kubelet`.
const KUBELET_CONCURRENCY: usize = 8;

/// The `resource` label of usage API errors.
const RESOURCE: &str = "podmetrics";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls the usage source. See the [module docs](self).
pub struct UsagePoller {
    client: Client,
    source: UsageSource,
    interval: Duration,
    scope: WatchScope,
    shared: Arc<Shared>,
    tracker: Arc<Mutex<UsageTracker>>,
    available: Option<bool>,
}

impl UsagePoller {
    /// A poller of `source` every `interval` for pods in `scope`.
    pub fn new(
        client: Client,
        source: UsageSource,
        interval: Duration,
        scope: WatchScope,
        shared: Arc<Shared>,
        tracker: Arc<Mutex<UsageTracker>>,
    ) -> Self {
        UsagePoller {
            client,
            source,
            interval,
            scope,
            shared,
            tracker,
            available: None,
        }
    }

    /// Polls until `shutdown`. With `--usage-source none` it only reports usage unavailable.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if self.source == UsageSource::None {
            self.shared
                .stats
                .usage_available
                .store(false, Ordering::Relaxed);
            return;
        }
        loop {
            self.poll_once().await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One poll: lists usage, applies it, records availability.
    pub async fn poll_once(&mut self) {
        let result = match self.source {
            UsageSource::MetricsApi => self.poll_metrics_api().await,
            UsageSource::Kubelet => self.poll_kubelets().await,
            UsageSource::None => return,
        };
        let available = result.is_ok();
        self.shared
            .stats
            .usage_available
            .store(available, Ordering::Relaxed);
        match (self.available, result) {
            (Some(false), Ok(pods)) => {
                info!(source = %self.source, pods, "usage metrics available again")
            }
            (None, Ok(pods)) => info!(source = %self.source, pods, "usage metrics available"),
            (Some(true) | None, Err(e)) => warn!(
                source = %self.source,
                cause = %e,
                "usage metrics unavailable (is metrics-server installed?); \
                 relay_sender_usage_available is 0, everything else keeps working"
            ),
            (_, Err(e)) => debug!(cause = %e, "usage still unavailable"),
            (_, Ok(pods)) => debug!(pods, "usage polled"),
        }
        self.available = Some(available);
    }

    async fn poll_metrics_api(&mut self) -> Result<usize, Error> {
        let mut params = ListParams::default();
        if let Some(selector) = &self.scope.selector {
            params = params.labels(selector);
        }
        let mut items = Vec::new();
        let scopes: Vec<Option<&str>> = if self.scope.namespaces.is_empty() {
            vec![None]
        } else {
            self.scope
                .namespaces
                .iter()
                .map(|n| Some(n.as_str()))
                .collect()
        };
        for ns in scopes {
            let path = match ns {
                Some(ns) => format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods"),
                None => "/apis/metrics.k8s.io/v1beta1/pods".to_owned(),
            };
            let request = kube::core::Request::new(path).list(&params).map_err(|e| {
                Error::kube(
                    "list metrics.k8s.io/v1beta1 pods",
                    kube::Error::BuildRequest(e),
                )
            })?;
            match self.client.request::<PodUsageList>(request).await {
                Ok(list) => items.extend(list.items),
                Err(e) => {
                    self.shared.stats.api_error(RESOURCE, kube_error_kind(&e));
                    return Err(Error::kube("list metrics.k8s.io/v1beta1 pods", e));
                }
            }
        }
        let mut tracker = lock(&self.tracker);
        tracker.begin_poll();
        let mut pods = 0;
        for pm in &items {
            if let Some((key, set)) = tracker.from_usage(pm) {
                pods += 1;
                self.shared.update(|s| s.apply(&key, &set));
            }
        }
        let scope = &self.scope;
        self.shared.update(|store| {
            !store
                .retain(ObjectKind::PodUsage, |ns, name| {
                    !scope.includes(ns) || tracker.listed(ns, name)
                })
                .is_empty()
        });
        tracker.end_poll();
        Ok(pods)
    }

    async fn poll_kubelets(&mut self) -> Result<usize, Error> {
        let nodes: Vec<String> = self
            .shared
            .store()
            .keys(ObjectKind::Node)
            .into_iter()
            .map(|k| k.name)
            .collect();
        let client = self.client.clone();
        let fetched: Vec<(String, Result<String, kube::Error>)> = futures::stream::iter(nodes)
            .map(|node| {
                let client = client.clone();
                async move {
                    let path = format!("/api/v1/nodes/{node}/proxy/metrics/resource");
                    let request = http::Request::get(path).body(Vec::new());
                    let result = match request {
                        Ok(request) => client.request_text(request).await,
                        Err(e) => Err(kube::Error::HttpError(e)),
                    };
                    (node, result)
                }
            })
            .buffer_unordered(KUBELET_CONCURRENCY)
            .collect()
            .await;
        let mut any_ok = fetched.is_empty();
        let mut last_error = None;
        let mut samples = Vec::new();
        for (node, result) in fetched {
            match result {
                Ok(text) => {
                    any_ok = true;
                    samples.extend(parse_resource_metrics(&text));
                }
                Err(e) => {
                    self.shared.stats.api_error(RESOURCE, kube_error_kind(&e));
                    debug!(node = %node, cause = %e, "kubelet resource metrics failed");
                    last_error = Some(Error::kube(
                        format!("get nodes/{node}/proxy/metrics/resource"),
                        e,
                    ));
                }
            }
        }
        if !any_ok && let Some(e) = last_error {
            return Err(e);
        }
        let tracker = lock(&self.tracker);
        samples.retain(|s| {
            self.scope.includes(&s.namespace)
                && (self.scope.selector.is_none() || tracker.knows_pod(&s.namespace, &s.pod))
        });
        let pods = tracker.from_kubelet(&samples);
        drop(tracker);
        let mut listed = HashSet::with_capacity(pods.len());
        for (key, set) in pods {
            listed.insert((key.namespace.clone(), key.name.clone()));
            self.shared.update(|s| s.apply(&key, &set));
        }
        self.retain(&listed);
        Ok(listed.len())
    }

    /// Removes usage series of pods (in scope) that the poll no longer reported.
    fn retain(&self, listed: &HashSet<(String, String)>) {
        let scope = &self.scope;
        self.shared.update(|store| {
            let removed: Vec<ObjectKey> = store.retain(ObjectKind::PodUsage, |ns, name| {
                !scope.includes(ns) || listed.contains(&(ns.to_owned(), name.to_owned()))
            });
            !removed.is_empty()
        });
    }
}
