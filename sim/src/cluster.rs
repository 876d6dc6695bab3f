//! The simulated cluster as a deterministic state machine: built from a scenario, moved by
//! ticks.
//!
//! Time only moves in [`Cluster::advance_to`], in fixed 100 ms ticks at absolute multiples of
//! the tick, so the outcome does not depend on how the caller slices time (one
//! `advance(10 min)` equals six hundred `advance(1 s)`). Each tick runs, in order: the
//! scenario timeline (crashes, faults), the deployment and ReplicaSet controllers, due pod
//! transitions (scheduler and kubelet), once a second the kubelet's CPU accounting, every
//! metrics resolution a metrics-server scrape, every sync period the HPA controller, event
//! expiry, and finally the workload status updates. All randomness comes from one seeded RNG
//! consumed in that fixed order.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerStatus;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::error::Result;
use crate::faults::{Fault, FaultAction, FaultState};
use crate::load::LoadModel;
use crate::objects::{self, Template};
use crate::resources::{self, Kind};
use crate::scenario::{CrashAction, Scenario, builtin_priority};
use crate::state::{Cluster, Config, NodeState, TICK_MS, Timing, not_found};
use crate::store::{ObjKey, Store};
use crate::timeline::{Timed, Timeline};

impl Cluster {
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
            uid_salt: rand::random(),
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
            rs_to_sync: BTreeSet::new(),
            event_expiry: BTreeSet::new(),
            event_dedup: HashMap::new(),
            event_seq: 0,
            churn_carry: 0.0,
            timeline: Timeline::default(),
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
            let mut node = objects::node(&name, i, &spec.nodes, &created, &mut c.rng, c.uid_salt);
            c.store.upsert(&mut node)?;
            c.nodes.push(NodeState {
                node,
                name,
                index: i,
                pods: 0,
                cpu_requested: 0,
                memory_requested: 0,
                next_ip: 2,
                conditions: BTreeMap::new(),
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
                priority: d.priority_class.as_ref().map(|class| {
                    let value = d.priority.or_else(|| builtin_priority(class)).unwrap_or(0);
                    (class.clone(), value)
                }),
                fault: d.fault,
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
                    priority: None,
                    fault: None,
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
        c.timeline = Timeline::from_spec(spec);
        // Time zero: controllers create ReplicaSets and pods, bulk pods start Running.
        c.run_tick()?;
        Ok(c)
    }

    fn ensure_namespace(&mut self, name: &str, created: &Time) -> Result<()> {
        if self.namespaces.contains_key(name) {
            return Ok(());
        }
        let uid = self.new_uid();
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
        let touched = self.update_replicaset_statuses()?;
        self.update_deployment_statuses(touched)?;
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
        while let Some(action) = self.timeline.next_due(self.now_ms) {
            match action {
                Timed::Fault(f) => self.inject_fault(f),
                Timed::Step(step) => self.run_step(&step)?,
                Timed::NodeCondition {
                    node,
                    condition,
                    status,
                } => {
                    info!(%node, condition = condition.as_str(), status = status.as_str(), "scenario node condition");
                    self.set_node_condition(&node, condition, status)?;
                }
                Timed::Rollout {
                    namespace,
                    deployment,
                    image,
                    fault,
                } => self.rollout(&namespace, &deployment, &image, fault)?,
                Timed::Crash {
                    namespace,
                    deployment,
                    pod,
                    count,
                    action,
                    restarts,
                    reason,
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
                            CrashAction::Crash => self.crash_pod(&key, restarts, reason)?,
                            CrashAction::Evict => self.fail_pod(&key)?,
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
            Fault::Errors { requests, resource } => self.faults.fail(requests, resource),
            Fault::Slow { requests, delay } => self.faults.delay(requests, delay),
        }
    }

    fn drop_watches(&mut self) {
        let old = std::mem::take(&mut self.watch_drop);
        old.cancel();
    }

    /// Consumes a pending fault for a request to `resource`, if one applies.
    pub(crate) fn take_fault(&mut self, resource: &str) -> Option<FaultAction> {
        self.faults.take(resource)
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
