//! Watchers: one `kube::runtime::watcher` per kind (and per namespace when `--namespace` is
//! given), with kube's default backoff and bookmarks, merged into one stream of
//! [`Update`]s (kube's `multi_watcher` example), applied to the store as they come.
//!
//! Objects are translated the moment they arrive and dropped: no reflector store of whole
//! Pods, and Pods are decoded without their managed fields ([`crate::slim_pod`]). Relists follow kube-runtime's semantics: `Init` starts one (after a `410 Gone`, a
//! failed watch or at start, and, added here, after the API server refused a resumed watch's
//! resourceVersion as one it never issued: `504 Too large resource version`), `InitApply` objects are applied at once and remembered by
//! name, and `InitDone` deletes every object of that watcher's scope that the new list did
//! not contain. Every `Init` after a watcher's first counts as a watch restart.
//!
//! Deployments and ReplicaSets are watched for their replica counts and owners (the
//! kubernetes-mixin reaches a pod's Deployment through its ReplicaSet).
//!
//! Events are watched with the field selector `reason=SuccessfulRescale` (and filtered again
//! here) and feed the [`ScalingLedger`].
//!
//! Each watcher runs on a client of its own that records whether its watch is established
//! ([`crate::source`]); a watcher's errors mark it down too.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::stream::{BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Node, Pod};
use kube::Client;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::kube_error_kind;
use crate::events::{RESCALE_REASON, ScalingLedger, rescale_target};
use crate::series::{ObjectKey, ObjectKind};
use crate::shared::Shared;
use crate::slim_pod::{SlimPod, into_pod_event};
use crate::source;
use crate::translate::deployments::{
    deployment_key, deployment_series, replicaset_key, replicaset_series,
};
use crate::translate::hpa::{hpa_key, hpa_series};
use crate::translate::namespaces::{namespace_key, namespace_series};
use crate::translate::nodes::{node_key, node_series};
use crate::translate::pods::{pod_key, pod_series};
use crate::usage::UsageTracker;

/// A watched resource, also the `resource` label of the watch self-metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `pods`.
    Pods,
    /// `horizontalpodautoscalers`.
    Hpas,
    /// `nodes`.
    Nodes,
    /// `namespaces`.
    Namespaces,
    /// `events`.
    Events,
    /// `deployments`.
    Deployments,
    /// `replicasets`.
    ReplicaSets,
}

impl Resource {
    /// The plural resource name.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::Hpas => "horizontalpodautoscalers",
            Resource::Nodes => "nodes",
            Resource::Namespaces => "namespaces",
            Resource::Events => "events",
            Resource::Deployments => "deployments",
            Resource::ReplicaSets => "replicasets",
        }
    }
}

/// One watch event of any kind.
#[derive(Debug)]
pub enum Watched {
    /// A pod event.
    Pod(Box<Event<Pod>>),
    /// An HPA event.
    Hpa(Box<Event<HorizontalPodAutoscaler>>),
    /// A node event.
    Node(Box<Event<Node>>),
    /// A namespace event.
    Namespace(Box<Event<Namespace>>),
    /// A core/v1 Event event.
    Event(Box<Event<CoreEvent>>),
    /// A Deployment event.
    Deployment(Box<Event<Deployment>>),
    /// A ReplicaSet event.
    ReplicaSet(Box<Event<ReplicaSet>>),
}

/// What the merged stream yields.
#[derive(Debug)]
pub struct Update {
    /// Which resource.
    pub resource: Resource,
    /// The watcher's namespace, `None` when it watches all (or a cluster-scoped kind).
    pub scope: Option<String>,
    /// The event, or the watcher's error (the watcher retries by itself).
    pub event: Result<Watched, watcher::Error>,
}

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchScope {
    /// Namespaces; empty means all.
    pub namespaces: Vec<String>,
    /// Label selector for pods.
    pub selector: Option<String>,
}

impl WatchScope {
    fn scopes(&self) -> Vec<Option<String>> {
        if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().cloned().map(Some).collect()
        }
    }

    /// True when `namespace` is watched.
    pub fn includes(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }
}

fn stream<K>(
    api: Api<K>,
    config: watcher::Config,
    resource: Resource,
    scope: Option<String>,
    wrap: fn(Event<K>) -> Watched,
) -> BoxStream<'static, Update>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    relisting_watcher(api, config)
        .map(move |event| Update {
            resource,
            scope: scope.clone(),
            event: event.map(wrap),
        })
        .boxed()
}

/// kube's watcher with its default backoff, started afresh (a full relist) when the API
/// server refuses the resourceVersion it resumes from as one it never issued.
///
/// kube-runtime relists only after `410 Gone`. An API server restarted with fresh storage
/// (or after an etcd restore) answers a resume from any resourceVersion of its earlier life
/// with `504 Too large resource version`, on which kube's watcher would resume from the same
/// resourceVersion for ever, keeping objects that are gone and missing new ones. client-go's
/// reflector relists from scratch on that error; so does this.
fn relisting_watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> BoxStream<'static, Result<Event<K>, watcher::Error>>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let fresh = move || {
        watcher::watcher(api.clone(), config.clone())
            .default_backoff()
            .boxed()
    };
    futures::stream::unfold((fresh(), fresh), |(mut current, fresh)| async move {
        let item = current.next().await?;
        if let Err(e) = &item
            && resource_version_too_large(e)
        {
            warn!(cause = %e, "the API server never issued the resourceVersion the watch resumed from (restarted with fresh storage?): relisting");
            current = fresh();
        }
        Some((item, (current, fresh)))
    })
    .boxed()
}

/// Whether a watcher error is the API server refusing a resourceVersion it never issued:
/// `504` with the cause `ResourceVersionTooLarge` (or, from servers older than that cause,
/// the message), as client-go's `isTooLargeResourceVersionError` decides.
fn resource_version_too_large(e: &watcher::Error) -> bool {
    let status = match e {
        watcher::Error::WatchError(status) => status,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status,
        _ => return false,
    };
    status.code == 504
        && (status.details.as_ref().is_some_and(|d| {
            d.causes
                .iter()
                .any(|c| c.reason == "ResourceVersionTooLarge")
        }) || status.message.contains("Too large resource version"))
}

fn api<K>(client: &Client, scope: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Every watcher of the sender, merged, each on a client that records its health in
/// `shared.source` (see [`crate::source`]).
pub fn watch_all(
    client: &Client,
    scope: &WatchScope,
    shared: &Shared,
) -> SelectAll<BoxStream<'static, Update>> {
    let health = &shared.source;
    let watcher_client = |resource: Resource, ns: &Option<String>| {
        health.expect_watch(resource.as_str(), ns.clone());
        source::observed(client, Arc::clone(health), resource.as_str(), ns.clone())
    };
    let mut streams = Vec::new();
    for ns in scope.scopes() {
        let mut pods = watcher::Config::default();
        if let Some(selector) = &scope.selector {
            pods = pods.labels(selector);
        }
        streams.push(stream(
            api::<SlimPod>(&watcher_client(Resource::Pods, &ns), &ns),
            pods,
            Resource::Pods,
            ns.clone(),
            |e| Watched::Pod(Box::new(into_pod_event(e))),
        ));
        streams.push(stream(
            api::<HorizontalPodAutoscaler>(&watcher_client(Resource::Hpas, &ns), &ns),
            watcher::Config::default(),
            Resource::Hpas,
            ns.clone(),
            |e| Watched::Hpa(Box::new(e)),
        ));
        streams.push(stream(
            api::<Deployment>(&watcher_client(Resource::Deployments, &ns), &ns),
            watcher::Config::default(),
            Resource::Deployments,
            ns.clone(),
            |e| Watched::Deployment(Box::new(e)),
        ));
        streams.push(stream(
            api::<ReplicaSet>(&watcher_client(Resource::ReplicaSets, &ns), &ns),
            watcher::Config::default(),
            Resource::ReplicaSets,
            ns.clone(),
            |e| Watched::ReplicaSet(Box::new(e)),
        ));
        streams.push(stream(
            api::<CoreEvent>(&watcher_client(Resource::Events, &ns), &ns),
            watcher::Config::default().fields(&format!("reason={RESCALE_REASON}")),
            Resource::Events,
            ns.clone(),
            |e| Watched::Event(Box::new(e)),
        ));
        let namespaces = match &ns {
            Some(name) => watcher::Config::default().fields(&format!("metadata.name={name}")),
            None => watcher::Config::default(),
        };
        streams.push(stream(
            Api::<Namespace>::all(watcher_client(Resource::Namespaces, &ns)),
            namespaces,
            Resource::Namespaces,
            ns.clone(),
            |e| Watched::Namespace(Box::new(e)),
        ));
    }
    streams.push(stream(
        Api::<Node>::all(watcher_client(Resource::Nodes, &None)),
        watcher::Config::default(),
        Resource::Nodes,
        None,
        |e| Watched::Node(Box::new(e)),
    ));
    futures::stream::select_all(streams)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A relist in progress: what the new list contained so far.
#[derive(Debug, Default)]
struct Relist {
    /// (namespace, name) of listed objects; uids for events.
    seen: HashSet<(String, String)>,
}

/// Applies watch updates to the store, the usage tracker and the ledger.
pub struct Applier {
    shared: Arc<Shared>,
    usage: Arc<Mutex<UsageTracker>>,
    ledger: Arc<Mutex<ScalingLedger>>,
    relists: HashMap<(Resource, Option<String>), Relist>,
    inits: HashMap<(Resource, Option<String>), u64>,
    /// Watchers whose first list completed (for readiness).
    listed: HashSet<(Resource, Option<String>)>,
}

impl Applier {
    /// An applier writing to these shared parts.
    pub fn new(
        shared: Arc<Shared>,
        usage: Arc<Mutex<UsageTracker>>,
        ledger: Arc<Mutex<ScalingLedger>>,
    ) -> Self {
        Applier {
            shared,
            usage,
            ledger,
            relists: HashMap::new(),
            inits: HashMap::new(),
            listed: HashSet::new(),
        }
    }

    /// Applies watch updates until the stream ends or `shutdown`.
    pub async fn run(
        mut self,
        mut updates: impl Stream<Item = Update> + Unpin,
        shutdown: CancellationToken,
    ) {
        loop {
            let update = tokio::select! {
                () = shutdown.cancelled() => return,
                update = updates.next() => update,
            };
            match update {
                Some(update) => self.apply(update),
                None => return,
            }
        }
    }

    /// Applies one update.
    pub fn apply(&mut self, update: Update) {
        let Update {
            resource,
            scope,
            event,
        } = update;
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                let kind = watch_error_kind(&e);
                self.shared.stats.api_error(resource.as_str(), kind);
                self.shared
                    .source
                    .watch_failed(resource.as_str(), scope.as_deref());
                warn!(resource = resource.as_str(), kind, cause = %e, "watch failed; retrying with backoff");
                return;
            }
        };
        match event {
            Watched::Pod(e) => self.pods(*e, scope),
            Watched::Hpa(e) => self.hpas(*e, scope),
            Watched::Node(e) => self.generic(*e, resource, scope, ObjectKind::Node, |n| {
                Some((node_key(n)?, node_series(n)))
            }),
            Watched::Namespace(e) => {
                self.generic(*e, resource, scope, ObjectKind::Namespace, |n| {
                    Some((namespace_key(n)?, namespace_series(n)))
                })
            }
            Watched::Event(e) => self.events(*e, scope),
            Watched::Deployment(e) => {
                self.generic(*e, resource, scope, ObjectKind::Deployment, |d| {
                    Some((deployment_key(d)?, deployment_series(d)))
                })
            }
            Watched::ReplicaSet(e) => {
                self.generic(*e, resource, scope, ObjectKind::ReplicaSet, |rs| {
                    Some((replicaset_key(rs)?, replicaset_series(rs)))
                })
            }
        }
    }

    /// Starts a relist; counts it as a restart unless it is the watcher's first.
    fn init(&mut self, resource: Resource, scope: &Option<String>) {
        let key = (resource, scope.clone());
        let n = self.inits.entry(key.clone()).or_default();
        *n += 1;
        if *n > 1 {
            self.shared.stats.watch_restart(resource.as_str());
            info!(resource = resource.as_str(), scope = ?scope, "relisting");
        }
        self.relists.insert(key, Relist::default());
    }

    fn seen(&mut self, resource: Resource, scope: &Option<String>, ns: &str, name: &str) {
        if let Some(r) = self.relists.get_mut(&(resource, scope.clone())) {
            r.seen.insert((ns.to_owned(), name.to_owned()));
        }
    }

    fn take_relist(
        &mut self,
        resource: Resource,
        scope: &Option<String>,
    ) -> HashSet<(String, String)> {
        self.shared.stats.lists_done.fetch_add(1, Ordering::Relaxed);
        if self.listed.insert((resource, scope.clone())) {
            self.shared
                .stats
                .watchers_listed
                .fetch_add(1, Ordering::Relaxed);
        }
        self.relists
            .remove(&(resource, scope.clone()))
            .map(|r| r.seen)
            .unwrap_or_default()
    }

    /// Removes owners of `kind` in `scope` absent from `seen`; returns them.
    fn sweep(
        &self,
        kind: ObjectKind,
        scope: &Option<String>,
        seen: &HashSet<(String, String)>,
    ) -> Vec<ObjectKey> {
        let mut removed = Vec::new();
        self.shared.update(|store| {
            removed = store.retain(kind, |ns, name| {
                let in_scope = match (kind, scope) {
                    (_, None) => true,
                    (ObjectKind::Namespace, Some(s)) => name == s,
                    (_, Some(s)) => ns == s,
                };
                !in_scope || seen.contains(&(ns.to_owned(), name.to_owned()))
            });
            !removed.is_empty()
        });
        if !removed.is_empty() {
            debug!(
                kind = kind.as_str(),
                removed = removed.len(),
                "relist removed vanished objects"
            );
        }
        removed
    }

    fn generic<K>(
        &mut self,
        event: Event<K>,
        resource: Resource,
        scope: Option<String>,
        kind: ObjectKind,
        translate: impl Fn(&K) -> Option<(ObjectKey, crate::series::SeriesSet<'_>)>,
    ) {
        match event {
            Event::Init => self.init(resource, &scope),
            Event::InitApply(obj) | Event::Apply(obj) => {
                if let Some((key, set)) = translate(&obj) {
                    self.seen(resource, &scope, &key.namespace, &key.name);
                    self.shared.update(|s| s.apply(&key, &set));
                }
            }
            Event::Delete(obj) => {
                if let Some((key, _)) = translate(&obj) {
                    self.shared.update(|s| s.remove(&key));
                }
            }
            Event::InitDone => {
                let seen = self.take_relist(resource, &scope);
                self.sweep(kind, &scope, &seen);
            }
        }
    }

    fn pods(&mut self, event: Event<Pod>, scope: Option<String>) {
        let r = Resource::Pods;
        match event {
            Event::Init => self.init(r, &scope),
            Event::InitApply(pod) | Event::Apply(pod) => {
                let Some(key) = pod_key(&pod) else { return };
                self.seen(r, &scope, &key.namespace, &key.name);
                let images = pod
                    .spec
                    .iter()
                    .flat_map(|s| &s.containers)
                    .map(|c| (c.name.as_str(), c.image.as_deref().unwrap_or_default()));
                lock(&self.usage).set_images(&key.namespace, &key.name, images);
                let set = pod_series(&pod);
                self.shared.update(|s| s.apply(&key, &set));
            }
            Event::Delete(pod) => {
                if let Some(key) = pod_key(&pod) {
                    self.forget_pod(&key);
                }
            }
            Event::InitDone => {
                let seen = self.take_relist(r, &scope);
                for key in self.sweep(ObjectKind::Pod, &scope, &seen) {
                    self.forget_pod(&key);
                }
            }
        }
    }

    fn forget_pod(&self, key: &ObjectKey) {
        lock(&self.usage).forget_pod(&key.namespace, &key.name);
        let usage = ObjectKey::new(ObjectKind::PodUsage, &key.namespace, &key.name);
        self.shared.update(|s| s.remove(key) | s.remove(&usage));
    }

    fn hpas(&mut self, event: Event<HorizontalPodAutoscaler>, scope: Option<String>) {
        let r = Resource::Hpas;
        match event {
            Event::Init => self.init(r, &scope),
            Event::InitApply(hpa) | Event::Apply(hpa) => {
                let Some(key) = hpa_key(&hpa) else { return };
                self.seen(r, &scope, &key.namespace, &key.name);
                let set = hpa_series(&hpa);
                self.shared.update(|s| s.apply(&key, &set));
                // Scaling counters start at zero as soon as the HPA is seen.
                let mut ledger = lock(&self.ledger);
                if ledger.track_hpa(&key.namespace, &key.name) {
                    let (counters, set) = ledger.series(&key.namespace, &key.name);
                    drop(ledger);
                    self.shared.update(|s| s.apply(&counters, &set));
                }
            }
            Event::Delete(hpa) => {
                if let Some(key) = hpa_key(&hpa) {
                    self.forget_hpa(&key);
                }
            }
            Event::InitDone => {
                let seen = self.take_relist(r, &scope);
                for key in self.sweep(ObjectKind::Hpa, &scope, &seen) {
                    self.forget_hpa(&key);
                }
                // Counters of HPAs deleted while the sender was down (a persisted ledger).
                let gone = lock(&self.ledger).retain_hpas(|ns, name| {
                    scope.as_ref().is_some_and(|s| s != ns)
                        || seen.contains(&(ns.to_owned(), name.to_owned()))
                });
                for (ns, name) in gone {
                    let key = ObjectKey::new(ObjectKind::ScalingEvents, ns, name);
                    self.shared.update(|s| s.remove(&key));
                }
            }
        }
    }

    fn forget_hpa(&self, key: &ObjectKey) {
        lock(&self.ledger).forget_hpa(&key.namespace, &key.name);
        let counters = ObjectKey::new(ObjectKind::ScalingEvents, &key.namespace, &key.name);
        self.shared.update(|s| s.remove(key) | s.remove(&counters));
    }

    fn events(&mut self, event: Event<CoreEvent>, scope: Option<String>) {
        let r = Resource::Events;
        match event {
            Event::Init => self.init(r, &scope),
            Event::InitApply(e) | Event::Apply(e) => {
                if rescale_target(&e).is_none() {
                    return;
                }
                let uid = e.metadata.uid.clone().unwrap_or_default();
                let ns = e.metadata.namespace.clone().unwrap_or_default();
                self.seen(r, &scope, &ns, &uid);
                let mut ledger = lock(&self.ledger);
                if let Some((ns, hpa)) = ledger.observe(&e) {
                    let (key, set) = ledger.series(&ns, &hpa);
                    drop(ledger);
                    debug!(namespace = %ns, hpa = %hpa, "scaling action counted");
                    self.shared.update(|s| s.apply(&key, &set));
                }
            }
            Event::Delete(e) => {
                if let Some(uid) = e.metadata.uid.as_deref() {
                    lock(&self.ledger).forget_event(uid);
                }
            }
            Event::InitDone => {
                let seen = self.take_relist(r, &scope);
                lock(&self.ledger).retain_events(|uid, ns| {
                    scope.as_ref().is_some_and(|s| s != ns)
                        || seen.contains(&(ns.to_owned(), uid.to_owned()))
                });
            }
        }
    }
}

/// A short, bounded label for a watcher error.
pub fn watch_error_kind(e: &watcher::Error) -> &'static str {
    match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => kube_error_kind(e),
        watcher::Error::WatchError(status) => match status.code {
            410 => "gone",
            403 => "forbidden",
            401 => "unauthorized",
            500..=599 => "server_error",
            _ => "api_error",
        },
        watcher::Error::NoResourceVersion => "no_resource_version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::Family;
    use crate::fixtures::{pod, rescale_event};

    fn applier() -> (Applier, Arc<Shared>, Arc<Mutex<ScalingLedger>>) {
        let shared = Arc::new(Shared::new(1));
        let ledger = Arc::new(Mutex::new(ScalingLedger::new()));
        let applier = Applier::new(
            Arc::clone(&shared),
            Arc::new(Mutex::new(UsageTracker::new())),
            Arc::clone(&ledger),
        );
        (applier, shared, ledger)
    }

    fn pods(event: Event<Pod>, scope: Option<&str>) -> Update {
        Update {
            resource: Resource::Pods,
            scope: scope.map(str::to_owned),
            event: Ok(Watched::Pod(Box::new(event))),
        }
    }

    fn events(event: Event<CoreEvent>) -> Update {
        Update {
            resource: Resource::Events,
            scope: None,
            event: Ok(Watched::Event(Box::new(event))),
        }
    }

    fn pod_names(shared: &Shared) -> Vec<String> {
        shared
            .store()
            .keys(ObjectKind::Pod)
            .into_iter()
            .map(|k| k.name)
            .collect()
    }

    fn status(json: serde_json::Value) -> Box<kube::core::Status> {
        Box::new(serde_json::from_value(json).expect("a Status"))
    }

    #[test]
    fn a_resource_version_the_server_never_issued_is_recognised() {
        // What an API server restarted with fresh storage answers, in a watch and a list.
        let too_large = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Too large resource version: 5000, current: 120", "reason": "Timeout",
            "details": {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1},
            "code": 504
        });
        assert!(resource_version_too_large(&watcher::Error::WatchError(
            status(too_large.clone())
        )));
        assert!(resource_version_too_large(
            &watcher::Error::WatchStartFailed(kube::Error::Api(status(too_large)))
        ));
        // Servers older than the cause say it in the message only.
        let old_server = serde_json::json!({
            "status": "Failure", "message": "Too large resource version: 5000, current: 120",
            "reason": "Timeout", "code": 504
        });
        assert!(resource_version_too_large(&watcher::Error::WatchError(
            status(old_server)
        )));
        // Other timeouts and 410 Gone (which kube's watcher handles itself) are not it.
        let timeout = serde_json::json!({
            "status": "Failure", "message": "the server was unable to return a response in the time allotted",
            "reason": "Timeout", "code": 504
        });
        assert!(!resource_version_too_large(&watcher::Error::WatchError(
            status(timeout)
        )));
        let gone = serde_json::json!({
            "status": "Failure", "message": "too old resource version: 1 (40)",
            "reason": "Expired", "code": 410
        });
        assert!(!resource_version_too_large(&watcher::Error::WatchError(
            status(gone)
        )));
    }

    #[test]
    fn a_relist_deletes_what_the_new_list_lacks_and_counts_as_a_restart() {
        let (mut applier, shared, _) = applier();
        let running = |name: &str| pod(name).phase("Running").build();
        applier.apply(pods(Event::Init, None));
        applier.apply(pods(Event::InitApply(running("a")), None));
        applier.apply(pods(Event::InitApply(running("b")), None));
        applier.apply(pods(Event::InitDone, None));
        applier.apply(pods(Event::Apply(running("c")), None));
        assert_eq!(pod_names(&shared), ["a", "b", "c"]);
        assert_eq!(shared.stats.watch_restarts("pods"), 0, "the first list");

        // After a 410: b was deleted while the watch was down.
        applier.apply(pods(Event::Init, None));
        applier.apply(pods(Event::InitApply(running("a")), None));
        applier.apply(pods(Event::InitApply(running("c")), None));
        assert_eq!(
            pod_names(&shared).len(),
            3,
            "nothing removed before InitDone"
        );
        applier.apply(pods(Event::InitDone, None));
        assert_eq!(pod_names(&shared), ["a", "c"]);
        assert_eq!(shared.stats.watch_restarts("pods"), 1);
        assert_eq!(shared.stats.lists_done.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_namespaced_relist_only_sweeps_its_namespace() {
        let (mut applier, shared, _) = applier();
        let mut other = pod("x").phase("Running").build();
        other.metadata.namespace = Some("team-b".to_owned());
        applier.apply(pods(Event::Apply(other), Some("team-b")));
        applier.apply(pods(
            Event::Apply(pod("a").phase("Running").build()),
            Some("default"),
        ));
        applier.apply(pods(Event::Init, Some("default")));
        applier.apply(pods(Event::InitDone, Some("default")));
        assert_eq!(pod_names(&shared), ["x"]);
    }

    #[test]
    fn a_deleted_pod_takes_its_usage_series_along() {
        let (mut applier, shared, _) = applier();
        let p = pod("web").phase("Running").build();
        applier.apply(pods(Event::Apply(p.clone()), None));
        let mut usage = crate::series::SeriesSet::new();
        usage.push(
            Family::ContainerMemoryWorkingSetBytes,
            ["default", "web", "app", ""],
            1.0,
        );
        let usage_key = ObjectKey::new(ObjectKind::PodUsage, "default", "web");
        shared.update(|s| s.apply(&usage_key, &usage));
        applier.apply(pods(Event::Delete(p), None));
        assert!(shared.store().is_empty());
    }

    #[test]
    fn rescale_events_feed_the_ledger_and_relists_add_nothing() {
        let (mut applier, shared, ledger) = applier();
        let up =
            "New size: 3; reason: cpu resource utilization (percentage of request) above target";
        let e = rescale_event("e1", "web", up, 2, 1_000);
        applier.apply(events(Event::Init));
        applier.apply(events(Event::InitApply(e.clone())));
        applier.apply(events(Event::InitDone));
        applier.apply(events(Event::Init));
        applier.apply(events(Event::InitApply(e.clone())));
        applier.apply(events(Event::InitDone));
        let labels = ["default", "web", "up"];
        assert_eq!(
            shared.store().value(Family::HpaScalingEvents, &labels),
            Some(2.0)
        );
        // Deleted by TTL: the count stays.
        applier.apply(events(Event::Delete(e)));
        assert_eq!(
            shared.store().value(Family::HpaScalingEvents, &labels),
            Some(2.0)
        );
        assert_eq!(
            lock(&ledger).total("default", "web", crate::events::Direction::Up),
            2
        );
    }

    #[test]
    fn scaling_counters_start_at_zero_with_their_hpa_and_go_with_it() {
        let (mut applier, shared, _) = applier();
        let hpas = |event: Event<HorizontalPodAutoscaler>| Update {
            resource: Resource::Hpas,
            scope: None,
            event: Ok(Watched::Hpa(Box::new(event))),
        };
        let web = crate::fixtures::hpa("web").bounds(Some(1), 5).build();
        let value = |direction: &str| {
            shared
                .store()
                .value(Family::HpaScalingEvents, &["default", "web", direction])
        };
        applier.apply(hpas(Event::Apply(web.clone())));
        assert_eq!((value("up"), value("down")), (Some(0.0), Some(0.0)));

        let up =
            "New size: 3; reason: cpu resource utilization (percentage of request) above target";
        applier.apply(events(Event::Apply(rescale_event(
            "e1", "web", up, 1, 1_000,
        ))));
        applier.apply(hpas(Event::Apply(web.clone())));
        assert_eq!((value("up"), value("down")), (Some(1.0), Some(0.0)));

        applier.apply(hpas(Event::Delete(web)));
        assert_eq!((value("up"), value("down")), (None, None));
        assert!(shared.store().is_empty(), "every series of the HPA is gone");
    }

    #[test]
    fn watch_errors_are_counted_by_kind() {
        let (mut applier, shared, _) = applier();
        let status = kube::core::Status {
            code: 410,
            ..kube::core::Status::default()
        };
        applier.apply(Update {
            resource: Resource::Pods,
            scope: None,
            event: Err(watcher::Error::WatchError(Box::new(status))),
        });
        assert_eq!(shared.stats.api_errors("pods"), 1);
        let set = shared.stats.series(0, 0);
        assert!(set.render().contains(
            &r#"relay_sender_api_errors_total{resource="pods",kind="gone"} 1"#.to_owned()
        ));
    }
}
