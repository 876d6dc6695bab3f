//! The simulated cluster as a deterministic state machine.
//!
//! [`Cluster`] holds the typed objects (the truth), the controllers' private state, and the
//! [`Store`] that serves them over HTTP. Time only moves in [`Cluster::advance_to`], in fixed
//! 100 ms ticks at absolute multiples of the tick, so the outcome does not depend on how the
//! caller slices time (one `advance(10 min)` equals six hundred `advance(1 s)`). Each tick runs,
//! in order: the scenario timeline (crashes, faults), the deployment and ReplicaSet
//! controllers, due pod transitions (scheduler and kubelet), once a second the kubelet's CPU
//! accounting, every metrics resolution a metrics-server scrape, every sync period the HPA
//! controller, event expiry, and finally the workload status updates. All randomness comes
//! from one seeded RNG consumed in that fixed order.
//!
//! The controllers live in sibling modules as further `impl Cluster` blocks: `workloads`
//! (deployments, ReplicaSets, scheduler, kubelet), `usage` (load accounting, metrics.k8s.io,
//! the kubelet's resource metrics) and `autoscaler` (the HPA controller).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, HorizontalPodAutoscalerStatus};
use k8s_openapi::api::core::v1::{Event, EventSource, Namespace, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::error::{Error, Result};
use crate::hpa;
use crate::load::LoadModel;
use crate::objects::{self, Template};
use crate::resources::{self, Kind};
use crate::scenario::{CrashAction, FaultKind, HpaControllerSpec, NodesSpec, Scenario};
use crate::store::{ObjKey, Store};
use crate::workloads::{DeploymentState, PodState, ReplicaSetState, Timing};

/// The simulation's tick: all state changes happen at multiples of it.
pub(crate) const TICK_MS: u64 = 100;

/// An API fault to inject (see [`crate::SimHandle::inject_fault`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Every open watch stream is cut (the connection is aborted mid-stream).
    DropWatches,
    /// The watch history and paged-list snapshots are compacted away, and watches are cut:
    /// clients that resume from an old resourceVersion get `410 Gone` and must relist.
    ExpireResourceVersions,
    /// The next `requests` API requests (optionally only for one resource, by plural name)
    /// fail with `500 InternalError`.
    Errors {
        /// How many requests fail.
        requests: u32,
        /// Only requests for this resource (`pods`, `events`, ...).
        resource: Option<String>,
    },
    /// The next `requests` API requests are answered after `delay`.
    Slow {
        /// How many requests are delayed.
        requests: u32,
        /// The delay.
        delay: Duration,
    },
}

/// What the HTTP layer must do to one request because of an injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultAction {
    Fail,
    Delay(Duration),
}

/// Pending request faults.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    errors: u32,
    errors_resource: Option<String>,
    slow: u32,
    slow_delay: Duration,
}

/// Simulator-wide settings derived from the scenario.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Readiness flips per second, and the namespace they happen in.
    pub churn: Option<(f64, Option<String>)>,
    pub jitter: f64,
    pub pod_events: bool,
    pub event_ttl_ms: u64,
    pub metrics_enabled: bool,
    pub resolution_ms: u64,
    pub hpa: HpaControllerSpec,
    pub bookmark_interval: Duration,
    pub nodes: NodesSpec,
}

/// One scheduled scenario action.
#[derive(Debug, Clone)]
enum Timed {
    Crash {
        namespace: String,
        deployment: Option<String>,
        pod: Option<String>,
        count: u32,
        action: CrashAction,
        restarts: u32,
    },
    Fault(Fault),
}

/// A node and the scheduler's/kubelet's bookkeeping for it.
#[derive(Debug)]
pub(crate) struct NodeState {
    pub node: Node,
    pub name: String,
    pub index: usize,
    pub pods: u32,
    pub cpu_requested: u64,
    pub next_ip: u32,
    /// Cumulative CPU seconds of the node's system processes.
    pub system_cpu_seconds: f64,
    /// Set once the node was deleted: the scheduler skips it and its kubelet is gone. (The
    /// entry stays so that node indices held by pods keep their meaning.)
    pub deleted: bool,
}

/// An HPA and the controller's memory of it.
#[derive(Debug)]
pub(crate) struct HpaState {
    pub obj: HorizontalPodAutoscaler,
    pub target: ObjKey,
    pub memory: hpa::Memory,
}

/// An event and when it expires.
#[derive(Debug)]
pub(crate) struct EventState {
    pub obj: Event,
    pub expires_ms: u64,
    pub dedup: DedupKey,
}

/// Identical events (same object, type, reason, message, source) are aggregated: the
/// existing event's `count` goes up, like client-go's event correlator does.
pub(crate) type DedupKey = (String, String, String, String, String);

/// The latest metrics-server sample of one pod.
#[derive(Debug, Clone)]
pub(crate) struct PodSample {
    pub container: String,
    pub timestamp_ms: u64,
    pub window_ms: u64,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

/// The cluster.
pub(crate) struct Cluster {
    pub store: Store,
    pub cfg: Config,
    /// Wall-clock milliseconds at simulation time zero.
    pub epoch_ms: i64,
    /// Simulation time: the last tick run.
    pub now_ms: u64,
    /// Where callers asked the clock to be (`now_ms` trails it by less than a tick).
    pub clock_ms: u64,
    pub rng: StdRng,
    pub namespaces: BTreeMap<String, Namespace>,
    pub nodes: Vec<NodeState>,
    pub deployments: BTreeMap<ObjKey, DeploymentState>,
    pub replicasets: BTreeMap<ObjKey, ReplicaSetState>,
    pub pods: BTreeMap<ObjKey, PodState>,
    pub hpas: BTreeMap<ObjKey, HpaState>,
    pub events: BTreeMap<ObjKey, EventState>,
    pub pod_metrics: BTreeMap<ObjKey, PodSample>,
    /// Pod transitions due: (sim ms, pod).
    pub agenda: BTreeSet<(u64, ObjKey)>,
    /// ReplicaSets whose status may have changed this tick.
    pub dirty_rs: BTreeSet<ObjKey>,
    event_expiry: BTreeSet<(u64, ObjKey)>,
    event_dedup: HashMap<DedupKey, ObjKey>,
    event_seq: u64,
    /// Fractional churn flips carried to the next tick.
    churn_carry: f64,
    timeline: Vec<(u64, Timed)>,
    next_timed: usize,
    pub faults: FaultState,
    /// Cancelled (and replaced) to cut every open watch.
    pub watch_drop: CancellationToken,
}

impl Cluster {
    /// The nodes not deleted (a deleted node's entry stays, see [`NodeState::deleted`]).
    pub(crate) fn live_nodes(&self) -> impl Iterator<Item = &NodeState> {
        self.nodes.iter().filter(|n| !n.deleted)
    }

    /// [`Cluster::live_nodes`], mutable.
    pub(crate) fn live_nodes_mut(&mut self) -> impl Iterator<Item = &mut NodeState> {
        self.nodes.iter_mut().filter(|n| !n.deleted)
    }

    /// Builds the cluster a scenario describes, at simulation time zero: namespaces, nodes,
    /// deployments (their ReplicaSets and Pending pods are created by the first tick),
    /// HPAs, and bulk workloads whose pods are already Running.
    pub(crate) fn new(scenario: &Scenario, epoch_ms: i64) -> Result<Self> {
        let spec = &scenario.spec;
        let cfg = Config {
            churn: spec
                .churn
                .as_ref()
                .map(|c| (c.ready_flips_per_second, c.namespace.clone())),
            jitter: spec.jitter,
            pod_events: spec.events.pod_events,
            event_ttl_ms: spec.events.ttl.ms(),
            metrics_enabled: spec.metrics.enabled,
            resolution_ms: spec.metrics.resolution.ms().max(TICK_MS),
            hpa: spec.hpa_controller.clone(),
            bookmark_interval: spec.api.bookmark_interval.0,
            nodes: spec.nodes.clone(),
        };
        let mut c = Cluster {
            store: Store::new(spec.api.watch_history),
            cfg,
            epoch_ms,
            now_ms: 0,
            clock_ms: 0,
            rng: StdRng::seed_from_u64(spec.seed),
            namespaces: BTreeMap::new(),
            nodes: Vec::new(),
            deployments: BTreeMap::new(),
            replicasets: BTreeMap::new(),
            pods: BTreeMap::new(),
            hpas: BTreeMap::new(),
            events: BTreeMap::new(),
            pod_metrics: BTreeMap::new(),
            agenda: BTreeSet::new(),
            dirty_rs: BTreeSet::new(),
            event_expiry: BTreeSet::new(),
            event_dedup: HashMap::new(),
            event_seq: 0,
            churn_carry: 0.0,
            timeline: Vec::new(),
            next_timed: 0,
            faults: FaultState::default(),
            watch_drop: CancellationToken::new(),
        };
        let created = c.now()?;
        let mut namespaces: Vec<String> =
            ["default", "kube-node-lease", "kube-public", "kube-system"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        namespaces.extend(spec.namespaces.iter().cloned());
        namespaces.extend(spec.deployments.iter().map(|d| d.namespace.clone()));
        if let Some(b) = &spec.bulk {
            namespaces.push(b.namespace.clone());
        }
        for ns in namespaces {
            c.ensure_namespace(&ns, &created)?;
        }
        for i in 0..spec.nodes.count as usize {
            let name = format!("{}-{}", spec.nodes.name_prefix, i + 1);
            let mut node = objects::node(&name, i, &spec.nodes, &created, &mut c.rng);
            c.store.upsert(&mut node)?;
            c.nodes.push(NodeState {
                node,
                name,
                index: i,
                pods: 0,
                cpu_requested: 0,
                next_ip: 2,
                system_cpu_seconds: 0.0,
                deleted: false,
            });
        }
        for d in &spec.deployments {
            let template = Template {
                container: d.container.clone().unwrap_or_else(|| d.name.clone()),
                image: d.image.clone(),
                port: d.port,
                labels: if d.labels.is_empty() {
                    BTreeMap::from([("app".to_string(), d.name.clone())])
                } else {
                    d.labels.clone()
                },
                requests: d.requests,
                limits: d.limits,
            };
            let timing = Timing {
                startup_ms: d.startup.ms(),
                readiness_ms: d.readiness.ms(),
                termination_ms: d.termination.ms(),
            };
            c.add_deployment(
                &d.namespace,
                &d.name,
                d.replicas,
                template,
                timing,
                LoadModel::from_spec(&d.load),
                false,
            )?;
        }
        if let Some(b) = &spec.bulk {
            for i in 0..b.deployments {
                let name = format!("{}-{:03}", b.name_prefix, i);
                let template = Template {
                    container: "app".to_string(),
                    image: b.image.clone(),
                    port: None,
                    labels: BTreeMap::from([("app".to_string(), name.clone())]),
                    requests: b.requests,
                    limits: Default::default(),
                };
                let timing = Timing {
                    startup_ms: 1000,
                    readiness_ms: 1000,
                    termination_ms: 1000,
                };
                let load = LoadModel::from_spec(&Default::default());
                c.add_deployment(
                    &b.namespace,
                    &name,
                    b.replicas,
                    template,
                    timing,
                    load,
                    true,
                )?;
            }
        }
        for h in &spec.hpas {
            c.add_hpa(h)?;
        }
        let mut timeline: Vec<(u64, Timed)> = Vec::new();
        for cr in &spec.crashes {
            timeline.push((
                cr.at.ms(),
                Timed::Crash {
                    namespace: cr.namespace.clone(),
                    deployment: cr.deployment.clone(),
                    pod: cr.pod.clone(),
                    count: cr.count,
                    action: cr.action,
                    restarts: cr.restarts,
                },
            ));
        }
        for f in &spec.faults {
            let fault = match f.kind {
                FaultKind::DropWatches => Fault::DropWatches,
                FaultKind::Expire => Fault::ExpireResourceVersions,
                FaultKind::Errors => Fault::Errors {
                    requests: f.requests,
                    resource: f.resource.clone(),
                },
                FaultKind::Slow => Fault::Slow {
                    requests: f.requests,
                    delay: f.delay.0,
                },
            };
            timeline.push((f.at.ms(), Timed::Fault(fault)));
        }
        timeline.sort_by_key(|(at, _)| *at);
        c.timeline = timeline;
        // Time zero: controllers create ReplicaSets and pods, bulk pods start Running.
        c.run_tick()?;
        Ok(c)
    }

    /// Wall-clock milliseconds of a simulation time.
    pub(crate) fn wall_ms(&self, sim_ms: u64) -> i64 {
        self.epoch_ms + i64::try_from(sim_ms).unwrap_or(i64::MAX / 2)
    }

    /// The current simulation time as a `Time`.
    pub(crate) fn now(&self) -> Result<Time> {
        objects::time(self.wall_ms(self.now_ms))
    }

    fn ensure_namespace(&mut self, name: &str, created: &Time) -> Result<()> {
        if self.namespaces.contains_key(name) {
            return Ok(());
        }
        let uid = objects::uid(&mut self.rng);
        let mut ns = objects::namespace(name, uid, created);
        self.store.upsert(&mut ns)?;
        self.namespaces.insert(name.to_string(), ns);
        Ok(())
    }

    /// Moves simulation time forward to `target_ms`, running every tick on the way.
    pub(crate) fn advance_to(&mut self, target_ms: u64) -> Result<()> {
        while self.now_ms + TICK_MS <= target_ms {
            self.now_ms += TICK_MS;
            self.run_tick()?;
        }
        Ok(())
    }

    /// The next tick boundary strictly after now.
    pub(crate) fn next_tick_ms(&self) -> u64 {
        self.now_ms + TICK_MS
    }

    fn every(&self, period_ms: u64) -> bool {
        period_ms > 0 && self.now_ms.is_multiple_of(period_ms)
    }

    fn run_tick(&mut self) -> Result<()> {
        self.run_timeline()?;
        self.deployment_controller()?;
        self.replicaset_controller()?;
        self.run_agenda()?;
        self.run_churn()?;
        if self.every(1000) {
            self.integrate_usage();
        }
        if self.now_ms > 0 && self.every(self.cfg.resolution_ms) {
            self.scrape_metrics();
        }
        if self.now_ms > 0 && self.every(self.cfg.hpa.sync_period.ms()) {
            self.hpa_controller()?;
        }
        self.expire_events()?;
        self.update_statuses()?;
        Ok(())
    }

    fn run_churn(&mut self) -> Result<()> {
        let Some((rate, namespace)) = self.cfg.churn.clone() else {
            return Ok(());
        };
        let due = rate * TICK_MS as f64 / 1000.0 + self.churn_carry;
        let n = due.floor();
        self.churn_carry = due - n;
        self.flip_readiness(n as usize, namespace.as_deref())
    }

    fn run_timeline(&mut self) -> Result<()> {
        while let Some((at, action)) = self.timeline.get(self.next_timed).cloned() {
            if at > self.now_ms {
                break;
            }
            self.next_timed += 1;
            match action {
                Timed::Fault(f) => self.inject_fault(f),
                Timed::Crash {
                    namespace,
                    deployment,
                    pod,
                    count,
                    action,
                    restarts,
                } => {
                    let victims = match (deployment, pod) {
                        (_, Some(p)) => vec![ObjKey::new(&namespace, &p)],
                        (Some(d), None) => {
                            self.pick_pods(&ObjKey::new(&namespace, &d), count as usize)
                        }
                        (None, None) => Vec::new(),
                    };
                    for key in victims {
                        info!(pod = %key, ?action, "scenario crash");
                        match action {
                            CrashAction::Crash => self.crash_pod(&key, restarts)?,
                            CrashAction::Fail => self.fail_pod(&key)?,
                            CrashAction::Delete => self.delete_pod(&key, None).map(|_| ())?,
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies a fault now.
    pub(crate) fn inject_fault(&mut self, fault: Fault) {
        info!(?fault, "injecting API fault");
        match fault {
            Fault::DropWatches => self.drop_watches(),
            Fault::ExpireResourceVersions => {
                self.store.compact();
                self.drop_watches();
            }
            Fault::Errors { requests, resource } => {
                self.faults.errors = requests;
                self.faults.errors_resource = resource;
            }
            Fault::Slow { requests, delay } => {
                self.faults.slow = requests;
                self.faults.slow_delay = delay;
            }
        }
    }

    fn drop_watches(&mut self) {
        let old = std::mem::take(&mut self.watch_drop);
        old.cancel();
    }

    /// Consumes a pending fault for a request to `resource`, if one applies.
    pub(crate) fn take_fault(&mut self, resource: &str) -> Option<FaultAction> {
        let f = &mut self.faults;
        if f.errors > 0 && f.errors_resource.as_deref().is_none_or(|r| r == resource) {
            f.errors -= 1;
            return Some(FaultAction::Fail);
        }
        if f.slow > 0 {
            f.slow -= 1;
            return Some(FaultAction::Delay(f.slow_delay));
        }
        None
    }

    /// Records an event (aggregating identical ones into `count`).
    pub(crate) fn record_event(
        &mut self,
        involved: ObjectReference,
        type_: &str,
        reason: &str,
        message: String,
        component: &str,
        host: Option<&str>,
    ) -> Result<()> {
        let now = self.now()?;
        let dedup: DedupKey = (
            involved.uid.clone().unwrap_or_default(),
            type_.to_string(),
            reason.to_string(),
            message.clone(),
            component.to_string(),
        );
        let expires_ms = self.now_ms + self.cfg.event_ttl_ms;
        if let Some(key) = self.event_dedup.get(&dedup).cloned()
            && let Some(state) = self.events.get_mut(&key)
        {
            self.event_expiry.remove(&(state.expires_ms, key.clone()));
            state.obj.count = Some(state.obj.count.unwrap_or(1) + 1);
            state.obj.last_timestamp = Some(now);
            state.expires_ms = expires_ms;
            self.store.upsert(&mut state.obj)?;
            self.event_expiry.insert((expires_ms, key));
            return Ok(());
        }
        let namespace = involved
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        self.event_seq += 1;
        let stamp = self.wall_ms(self.now_ms) as u64 * 1_000_000 + self.event_seq;
        let name = format!("{}.{:x}", involved.name.clone().unwrap_or_default(), stamp);
        let uid = objects::uid(&mut self.rng);
        let mut event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: Some(uid),
                creation_timestamp: Some(now.clone()),
                managed_fields: Some(vec![objects::managed(
                    component,
                    "v1",
                    &now,
                    None,
                    serde_json::json!({"f:count": {}, "f:firstTimestamp": {}, "f:involvedObject": {}, "f:lastTimestamp": {}, "f:message": {}, "f:reason": {}, "f:reportingComponent": {}, "f:source": {"f:component": {}}, "f:type": {}}),
                )]),
                ..ObjectMeta::default()
            },
            involved_object: involved,
            reason: Some(reason.to_string()),
            message: Some(message),
            source: Some(EventSource {
                component: Some(component.to_string()),
                host: host.map(str::to_string),
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            type_: Some(type_.to_string()),
            event_time: None,
            reporting_component: Some(component.to_string()),
            reporting_instance: Some(host.unwrap_or_default().to_string()),
            action: None,
            related: None,
            series: None,
        };
        self.store.upsert(&mut event)?;
        let key = ObjKey::new(&namespace, &name);
        self.event_expiry.insert((expires_ms, key.clone()));
        self.event_dedup.insert(dedup.clone(), key.clone());
        self.events.insert(
            key,
            EventState {
                obj: event,
                expires_ms,
                dedup,
            },
        );
        Ok(())
    }

    fn expire_events(&mut self) -> Result<()> {
        while let Some((at, key)) = self.event_expiry.first().cloned() {
            if at > self.now_ms {
                break;
            }
            self.event_expiry.pop_first();
            if let Some(mut state) = self.events.remove(&key) {
                self.event_dedup.remove(&state.dedup);
                self.store.delete(&mut state.obj)?;
                debug!(event = %key, "event expired");
            }
        }
        Ok(())
    }

    fn add_hpa(&mut self, h: &crate::scenario::HpaSpec) -> Result<()> {
        use k8s_openapi::api::autoscaling::v2::{
            CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscalerBehavior,
            HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget, ResourceMetricSource,
        };
        let now = self.now()?;
        let behavior = (h.scale_down_stabilization.is_some() || h.scale_up_stabilization.is_some())
            .then(|| {
                let to_rules = |s: Option<i32>, up: bool| {
                    let d = if up {
                        hpa::default_scale_up()
                    } else {
                        hpa::default_scale_down(0)
                    };
                    HPAScalingRules {
                        stabilization_window_seconds: if up { Some(s.unwrap_or(0)) } else { s },
                        select_policy: Some("Max".to_string()),
                        policies: Some(
                            d.policies
                                .iter()
                                .map(|p| match *p {
                                    hpa::Policy::Pods { value, period_s } => {
                                        k8s_openapi::api::autoscaling::v2::HPAScalingPolicy {
                                            type_: "Pods".to_string(),
                                            value,
                                            period_seconds: period_s,
                                        }
                                    }
                                    hpa::Policy::Percent { value, period_s } => {
                                        k8s_openapi::api::autoscaling::v2::HPAScalingPolicy {
                                            type_: "Percent".to_string(),
                                            value,
                                            period_seconds: period_s,
                                        }
                                    }
                                })
                                .collect(),
                        ),
                        tolerance: None,
                    }
                };
                let secs = |d: Option<crate::units::Dur>| {
                    d.map(|d| i32::try_from(d.0.as_secs()).unwrap_or(i32::MAX))
                };
                HorizontalPodAutoscalerBehavior {
                    scale_up: Some(to_rules(secs(h.scale_up_stabilization), true)),
                    scale_down: Some(to_rules(secs(h.scale_down_stabilization), false)),
                }
            });
        let uid = objects::uid(&mut self.rng);
        let mut obj = HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                name: Some(h.name.clone()),
                namespace: Some(h.namespace.clone()),
                uid: Some(uid),
                creation_timestamp: Some(now.clone()),
                generation: Some(1),
                managed_fields: Some(vec![objects::managed(
                    "kubectl-autoscale",
                    "autoscaling/v2",
                    &now,
                    None,
                    serde_json::json!({"f:spec": {"f:maxReplicas": {}, "f:metrics": {}, "f:minReplicas": {}, "f:scaleTargetRef": {}}}),
                )]),
                ..ObjectMeta::default()
            },
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".to_string()),
                    kind: "Deployment".to_string(),
                    name: h.target.clone(),
                },
                min_replicas: Some(i32::try_from(h.min).unwrap_or(i32::MAX)),
                max_replicas: i32::try_from(h.max).unwrap_or(i32::MAX),
                metrics: Some(vec![MetricSpec {
                    type_: "Resource".to_string(),
                    resource: Some(ResourceMetricSource {
                        name: "cpu".to_string(),
                        target: MetricTarget {
                            type_: "Utilization".to_string(),
                            average_utilization: Some(
                                i32::try_from(h.cpu_utilization).unwrap_or(i32::MAX),
                            ),
                            ..MetricTarget::default()
                        },
                    }),
                    ..MetricSpec::default()
                }]),
                behavior,
            }),
            status: Some(HorizontalPodAutoscalerStatus {
                desired_replicas: 0,
                current_replicas: Some(0),
                ..HorizontalPodAutoscalerStatus::default()
            }),
        };
        self.store.upsert(&mut obj)?;
        let key = ObjKey::new(&h.namespace, &h.name);
        self.hpas.insert(
            key,
            HpaState {
                obj,
                target: ObjKey::new(&h.namespace, &h.target),
                memory: hpa::Memory::default(),
            },
        );
        Ok(())
    }

    /// Deletes an HPA, as `kubectl delete hpa` does: it stops scaling its target (which keeps
    /// its current replicas); its events stay until their TTL.
    pub(crate) fn delete_hpa(&mut self, namespace: &str, name: &str) -> Result<()> {
        let key = ObjKey::new(namespace, name);
        let Some(mut h) = self.hpas.remove(&key) else {
            return Err(not_found("horizontalpodautoscaler", namespace, name));
        };
        h.obj.metadata.deletion_timestamp = Some(self.now()?);
        self.store.delete(&mut h.obj)?;
        debug!(hpa = %key, "hpa deleted");
        Ok(())
    }

    /// Deletes a node, as `kubectl delete node` does: the Node object goes, the pod garbage
    /// collector force-deletes the pods bound to it, and their ReplicaSets replace them on the
    /// remaining nodes.
    pub(crate) fn delete_node(&mut self, name: &str) -> Result<()> {
        let Some(index) = self.live_nodes().find(|n| n.name == name).map(|n| n.index) else {
            return Err(not_found("node", "", name));
        };
        self.nodes[index].deleted = true;
        let bound: Vec<ObjKey> = self
            .pods
            .iter()
            .filter(|(_, p)| p.node == Some(index))
            .map(|(k, _)| k.clone())
            .collect();
        for key in bound {
            self.remove_pod(&key)?;
        }
        let mut node = self.nodes[index].node.clone();
        node.metadata.deletion_timestamp = Some(self.now()?);
        self.store.delete(&mut node)?;
        debug!(node = name, "node deleted");
        Ok(())
    }

    /// Deletes a namespace. An empty one (no deployments, ReplicaSets, pods or HPAs) goes at
    /// once. One that still holds workloads turns `Terminating` and stays so: the simulator
    /// has no namespace controller to delete its contents (a real cluster with a stuck
    /// finalizer looks the same). Returns whether the namespace is gone.
    pub(crate) fn delete_namespace(&mut self, name: &str) -> Result<bool> {
        let Some(mut ns) = self.namespaces.get(name).cloned() else {
            return Err(not_found("namespace", "", name));
        };
        let holds = |key: &ObjKey| key.namespace == name;
        let occupied = self.deployments.keys().any(holds)
            || self.replicasets.keys().any(holds)
            || self.pods.keys().any(holds)
            || self.hpas.keys().any(holds);
        if ns.metadata.deletion_timestamp.is_none() {
            ns.metadata.deletion_timestamp = Some(self.now()?);
        }
        if occupied {
            if let Some(status) = ns.status.as_mut() {
                status.phase = Some("Terminating".to_string());
            }
            self.store.upsert(&mut ns)?;
            self.namespaces.insert(name.to_string(), ns);
            debug!(namespace = name, "namespace terminating (not empty)");
            return Ok(false);
        }
        self.namespaces.remove(name);
        self.store.delete(&mut ns)?;
        debug!(namespace = name, "namespace deleted");
        Ok(true)
    }

    /// Picks up to `n` running, non-terminating pods of a deployment (seeded choice).
    fn pick_pods(&mut self, deployment: &ObjKey, n: usize) -> Vec<ObjKey> {
        use rand::seq::SliceRandom;
        let mut candidates: Vec<ObjKey> = self
            .pods
            .iter()
            .filter(|(_, p)| &p.deployment == deployment && p.is_running() && !p.terminating())
            .map(|(k, _)| k.clone())
            .collect();
        candidates.shuffle(&mut self.rng);
        candidates.truncate(n);
        candidates
    }

    // ----- read-only truth for the handle -----

    /// All pods.
    pub(crate) fn pod_list(&self) -> Vec<Pod> {
        self.pods.values().map(|p| p.pod.clone()).collect()
    }

    /// Pods of a deployment in phase Running and not terminating.
    pub(crate) fn running_pods(&self, namespace: &str, deployment: &str) -> Vec<Pod> {
        let key = ObjKey::new(namespace, deployment);
        self.pods
            .values()
            .filter(|p| p.deployment == key && p.is_running() && !p.terminating())
            .map(|p| p.pod.clone())
            .collect()
    }

    /// A deployment.
    pub(crate) fn deployment(&self, namespace: &str, name: &str) -> Option<Deployment> {
        self.deployments
            .get(&ObjKey::new(namespace, name))
            .map(|d| d.obj.clone())
    }

    /// An HPA's status.
    pub(crate) fn hpa_status(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<HorizontalPodAutoscalerStatus> {
        self.hpas
            .get(&ObjKey::new(namespace, name))
            .and_then(|h| h.obj.status.clone())
    }

    /// All current events with a given reason, oldest first.
    pub(crate) fn events_with_reason(&self, reason: &str) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .events
            .values()
            .filter(|e| e.obj.reason.as_deref() == Some(reason))
            .map(|e| e.obj.clone())
            .collect();
        events.sort_by(|a, b| {
            (&a.first_timestamp, &a.metadata.name).cmp(&(&b.first_timestamp, &b.metadata.name))
        });
        events
    }

    /// Object counts per kind (for logs).
    pub(crate) fn summary(&self) -> String {
        Kind::ALL
            .iter()
            .map(|k| {
                format!(
                    "{}={}",
                    resources::for_kind(*k).plural,
                    self.store.count(*k)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Sets a deployment's load from now on.
    pub(crate) fn set_load(
        &mut self,
        namespace: &str,
        deployment: &str,
        clients: f64,
    ) -> Result<()> {
        let now = self.now_ms;
        let d = self
            .deployments
            .get_mut(&ObjKey::new(namespace, deployment))
            .ok_or_else(|| not_found("deployment", namespace, deployment))?;
        d.load.set_clients(now, clients);
        Ok(())
    }
}

/// [`Error::NotFound`] for an object.
pub(crate) fn not_found(kind: &'static str, namespace: &str, name: &str) -> Error {
    Error::NotFound {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}
