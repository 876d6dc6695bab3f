//! The simulated cluster's state: the [`Cluster`] struct (the typed objects, which are the
//! truth, the controllers' private bookkeeping and the [`Store`] that serves them) and the
//! state types its parts share.
//!
//! The controllers live in their own modules as further `impl Cluster` blocks, each using
//! only this module and the controllers below it (see the crate's Layout): `recorder`
//! (events), `scheduler`, `kubelet`, `termination`, `agenda` (due pod transitions),
//! `replicaset`, `deployment`, `usage`, `autoscaler`; `cluster` builds the state from a
//! scenario and runs the tick.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::faults::FaultState;
use crate::hpa;
use crate::load::LoadModel;
use crate::objects::{self, Template};
use crate::pod::PodState;
use crate::scenario::{ConditionStatus, HpaControllerSpec, NodeConditionType, NodesSpec};
use crate::store::{ObjKey, Store};
use crate::timeline::Timeline;

/// The simulation's tick: all state changes happen at multiples of it.
pub(crate) const TICK_MS: u64 = 100;

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

/// A node and the scheduler's/kubelet's bookkeeping for it.
#[derive(Debug)]
pub(crate) struct NodeState {
    pub node: Node,
    pub name: String,
    pub index: usize,
    pub pods: u32,
    pub cpu_requested: u64,
    pub memory_requested: u64,
    pub next_ip: u32,
    /// The conditions the scenario changed from their healthy status, with when.
    pub conditions: BTreeMap<NodeConditionType, (ConditionStatus, u64)>,
    /// Cumulative CPU seconds of the node's system processes.
    pub system_cpu_seconds: f64,
    /// Set once the node was deleted: the scheduler skips it and its kubelet is gone. (The
    /// entry stays so that node indices held by pods keep their meaning.)
    pub deleted: bool,
}

impl NodeState {
    /// The status of one of the node's conditions.
    pub(crate) fn condition(&self, type_: NodeConditionType) -> ConditionStatus {
        self.conditions
            .get(&type_)
            .map(|(status, _)| *status)
            .unwrap_or(if type_ == NodeConditionType::Ready {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            })
    }

    /// The taints the node's conditions put on it: (key, effect).
    pub(crate) fn taints(&self) -> Vec<(&'static str, &'static str)> {
        let mut taints = Vec::new();
        match self.condition(NodeConditionType::Ready) {
            ConditionStatus::True => {}
            ConditionStatus::False => {
                taints.push(("node.kubernetes.io/not-ready", "NoSchedule"));
                taints.push(("node.kubernetes.io/not-ready", "NoExecute"));
            }
            ConditionStatus::Unknown => {
                taints.push(("node.kubernetes.io/unreachable", "NoSchedule"));
                taints.push(("node.kubernetes.io/unreachable", "NoExecute"));
            }
        }
        for (type_, key) in [
            (
                NodeConditionType::MemoryPressure,
                "node.kubernetes.io/memory-pressure",
            ),
            (
                NodeConditionType::DiskPressure,
                "node.kubernetes.io/disk-pressure",
            ),
            (
                NodeConditionType::PidPressure,
                "node.kubernetes.io/pid-pressure",
            ),
        ] {
            if self.condition(type_) == ConditionStatus::True {
                taints.push((key, "NoSchedule"));
            }
        }
        taints
    }

    /// The `NoSchedule` taints of the node (none of which the pods tolerate).
    pub(crate) fn no_schedule_taints(&self) -> Vec<&'static str> {
        self.taints()
            .into_iter()
            .filter(|(_, effect)| *effect == "NoSchedule")
            .map(|(key, _)| key)
            .collect()
    }

    /// Whether the node is Ready (its kubelet posts status and says it is healthy).
    pub(crate) fn ready(&self) -> bool {
        self.condition(NodeConditionType::Ready) == ConditionStatus::True
    }
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

/// Lifecycle delays of a deployment's pods.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub startup_ms: u64,
    pub readiness_ms: u64,
    pub termination_ms: u64,
}

/// A deployment and what its controller and load model need.
#[derive(Debug)]
pub(crate) struct DeploymentState {
    pub obj: Deployment,
    /// The current pod template (`spec.template`) and its `pod-template-hash`.
    pub template: Template,
    pub hash: String,
    pub timing: Timing,
    pub load: LoadModel,
    /// The ReplicaSet of the current template, once created (the others are old).
    pub rs: Option<ObjKey>,
    /// `deployment.kubernetes.io/revision`.
    pub revision: u64,
    /// When the rollout last made progress (a new ReplicaSet, more updated or available
    /// replicas): `progressDeadlineSeconds` counts from here.
    pub progress_ms: u64,
    /// Pods start out Running and Ready, without events (bulk workloads).
    pub instant: bool,
}

impl DeploymentState {
    /// `spec.replicas` (1 when unset, as the API defaults it).
    pub(crate) fn replicas(&self) -> i32 {
        self.obj.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
}

/// A ReplicaSet and its pods.
#[derive(Debug)]
pub(crate) struct ReplicaSetState {
    pub obj: ReplicaSet,
    pub deployment: ObjKey,
    /// The pod template its pods are made from, and its hash.
    pub template: Template,
    pub hash: String,
    pub pods: BTreeSet<ObjKey>,
}

impl ReplicaSetState {
    /// `spec.replicas`.
    pub(crate) fn spec_replicas(&self) -> i32 {
        self.obj.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
    }

    /// `status.availableReplicas`.
    pub(crate) fn available(&self) -> i32 {
        self.obj
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
    }
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
    /// Mixed into every uid (see [`objects::uid`]): random per run.
    pub uid_salt: u128,
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
    /// ReplicaSets whose status may have changed this tick (every change to a ReplicaSet's
    /// spec or to one of its pods marks it).
    pub dirty_rs: BTreeSet<ObjKey>,
    /// ReplicaSets marked dirty since the ReplicaSet controller last ran: the only ones it
    /// can find short of or over their replicas.
    pub rs_to_sync: BTreeSet<ObjKey>,
    /// When each event expires: (sim ms, event).
    pub event_expiry: BTreeSet<(u64, ObjKey)>,
    /// The current event for each aggregation key.
    pub event_dedup: HashMap<DedupKey, ObjKey>,
    /// Makes event names unique within one millisecond.
    pub event_seq: u64,
    /// Fractional churn flips carried to the next tick.
    pub churn_carry: f64,
    /// The scenario's scheduled actions.
    pub timeline: Timeline,
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

    /// Wall-clock milliseconds of a simulation time.
    pub(crate) fn wall_ms(&self, sim_ms: u64) -> i64 {
        objects::wall_ms(self.epoch_ms, sim_ms)
    }

    /// The current simulation time as a `Time`.
    pub(crate) fn now(&self) -> Result<Time> {
        objects::time(self.wall_ms(self.now_ms))
    }

    /// The ReplicaSets a deployment owns, oldest revision first.
    ///
    /// A Deployment names its ReplicaSets `<deployment>-<template hash>`, so only the keys
    /// with that prefix are looked at (each deployment's sync runs every tick; scanning
    /// every ReplicaSet for each was quadratic in deployments).
    pub(crate) fn replicasets_of(&self, deployment: &ObjKey) -> Vec<ObjKey> {
        let prefix = format!("{}-", deployment.name);
        let mut owned: Vec<(u64, ObjKey)> = self
            .replicasets
            .range(ObjKey::new(&deployment.namespace, &prefix)..)
            .take_while(|(k, _)| k.namespace == deployment.namespace && k.name.starts_with(&prefix))
            .filter(|(_, rs)| &rs.deployment == deployment)
            .map(|(k, rs)| (revision_of(&rs.obj.metadata), k.clone()))
            .collect();
        owned.sort();
        owned.into_iter().map(|(_, k)| k).collect()
    }

    /// A new object uid.
    pub(crate) fn new_uid(&mut self) -> String {
        objects::uid(&mut self.rng, self.uid_salt)
    }

    /// Whether the current tick is a multiple of `period_ms`.
    pub(crate) fn every(&self, period_ms: u64) -> bool {
        period_ms > 0 && self.now_ms.is_multiple_of(period_ms)
    }
}

/// The annotation holding a deployment's (and each of its ReplicaSets') revision.
pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";

/// The revision annotation of a deployment or ReplicaSet (0 when absent).
pub(crate) fn revision_of(meta: &ObjectMeta) -> u64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// [`Error::NotFound`] for an object.
pub(crate) fn not_found(kind: &'static str, namespace: &str, name: &str) -> Error {
    Error::NotFound {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// A controller owner reference to an object.
pub(crate) fn owner(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// An object reference (for events).
pub(crate) fn reference(api_version: &str, kind: &str, meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_string()),
        kind: Some(kind.to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}
