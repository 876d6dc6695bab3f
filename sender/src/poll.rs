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

use futures::{AsyncBufRead, AsyncBufReadExt, StreamExt};
use kube::Client;
use kube::api::ListParams;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::UsageSource;
use crate::error::{Error, kube_error_kind};
use crate::list_items::ListItems;
use crate::series::{ObjectKey, ObjectKind};
use crate::shared::Shared;
use crate::usage::{PodUsage, UsageTracker, parse_resource_metrics};
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

    /// Lists PodMetrics of every scope and applies each item as it is read from the body
    /// ([`ListItems`]): a list of 100,000 pods is never held whole. Usage series of pods
    /// the list did not report are removed only after every list was read to its end; a
    /// failed list leaves them (and the counters of pods it did not reach) as they were.
    async fn poll_metrics_api(&mut self) -> Result<usize, Error> {
        const ACTION: &str = "list metrics.k8s.io/v1beta1 pods";
        let mut params = ListParams::default();
        if let Some(selector) = &self.scope.selector {
            params = params.labels(selector);
        }
        let scopes: Vec<Option<String>> = if self.scope.namespaces.is_empty() {
            vec![None]
        } else {
            self.scope.namespaces.iter().cloned().map(Some).collect()
        };
        lock(&self.tracker).begin_poll();
        let mut pods = 0;
        for ns in scopes {
            let path = match ns {
                Some(ns) => format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods"),
                None => "/apis/metrics.k8s.io/v1beta1/pods".to_owned(),
            };
            let request = kube::core::Request::new(path)
                .list(&params)
                .map_err(|e| Error::kube(ACTION, kube::Error::BuildRequest(e)))?;
            pods += self.apply_usage_list(request).await.map_err(|e| {
                self.shared.stats.api_error(RESOURCE, kube_error_kind(&e));
                Error::kube(ACTION, e)
            })?;
        }
        let mut tracker = lock(&self.tracker);
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

    /// Sends one PodMetrics list request and applies its items, chunk by chunk; returns how
    /// many pods had usage.
    async fn apply_usage_list(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<usize, kube::Error> {
        let body = self.client.request_stream(request).await?;
        futures::pin_mut!(body);
        let mut items = ListItems::new();
        let mut pods = 0;
        loop {
            let chunk = body.fill_buf().await.map_err(kube::Error::ReadEvents)?;
            if chunk.is_empty() {
                break;
            }
            let read = chunk.len();
            // Both locks are taken for this chunk's items only, never across the next read.
            let mut tracker = lock(&self.tracker);
            items.push(chunk, |item| {
                let usage: PodUsage =
                    serde_json::from_slice(item).map_err(kube::Error::SerdeError)?;
                if let Some((key, set)) = tracker.from_usage(&usage) {
                    pods += 1;
                    self.shared.update(|s| s.apply(&key, &set));
                }
                Ok::<(), kube::Error>(())
            })?;
            drop(tracker);
            body.as_mut().consume(read);
        }
        items.finish()?;
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
