//! Workload controllers: Deployment → ReplicaSet → Pod, the scheduler and the kubelet.
//!
//! A pod goes `Pending` (unscheduled) → scheduled to the least-loaded node that fits
//! (`PodScheduled`) → `ContainerCreating` → `Running` → `Ready` after its readiness delay.
//! Crashes terminate the container (`Error`, exit 1); the kubelet restarts it at once the
//! first time and then with back-off (10 s doubling to 5 min: `CrashLoopBackOff`). Failed
//! pods stay `Failed` and deleted pods terminate gracefully; either way the ReplicaSet
//! creates a replacement. Every change is written to the store with `managedFields` as the
//! real writers (kube-controller-manager, kubelet) leave them.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, DeploymentStrategy,
    ReplicaSet, ReplicaSetSpec, ReplicaSetStatus, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, ObjectReference, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tracing::debug;

use crate::cluster::{Cluster, TICK_MS, not_found};
use crate::error::Result;
use crate::load::LoadModel;
use crate::objects::{self, Template};
use crate::store::ObjKey;

/// Longest termination grace period honoured (a year).
const MAX_GRACE_SECONDS: i64 = 365 * 24 * 3600;
/// Delay from creation to the scheduler binding a pod.
const SCHEDULE_DELAY_MS: u64 = 200;
/// Delay from binding to the kubelet's first status update.
const KUBELET_DELAY_MS: u64 = 300;
/// Retry interval for unschedulable pods.
const RESCHEDULE_MS: u64 = 5_000;
/// How long a crash-looping container runs before it crashes again.
const CRASH_AFTER_MS: u64 = 3_000;
/// How long the kubelet takes to notice a crash and restart the container.
const RESTART_DELAY_MS: u64 = 1_000;

/// The ReplicaSet controller deletes the lowest-ranked pods first: unscheduled, pending,
/// not ready, ready for less time, more restarts (newer pods break ties).
type DeletionRank = (bool, u8, bool, u64, i32);

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
    pub template: Template,
    pub timing: Timing,
    pub load: LoadModel,
    pub hash: String,
    pub rs: Option<ObjKey>,
    /// Pods start out Running and Ready, without events (bulk workloads).
    pub instant: bool,
}

impl DeploymentState {
    fn replicas(&self) -> i32 {
        self.obj.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
}

/// A ReplicaSet and its pods.
#[derive(Debug)]
pub(crate) struct ReplicaSetState {
    pub obj: ReplicaSet,
    pub deployment: ObjKey,
    pub pods: BTreeSet<ObjKey>,
}

/// Where a pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Unscheduled,
    Scheduled,
    Creating,
    Running,
    Crashed,
    BackOff,
    Terminating,
    Failed,
}

/// The single container's state.
#[derive(Debug, Clone, PartialEq)]
enum ContainerView {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_ms: u64,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        started_ms: u64,
        finished_ms: u64,
    },
}

/// A pod and the kubelet's view of it.
#[derive(Debug)]
pub(crate) struct PodState {
    pub pod: Pod,
    pub deployment: ObjKey,
    pub rs: ObjKey,
    pub stage: Stage,
    pub due_ms: Option<u64>,
    pub node: Option<usize>,
    pub ready: bool,
    ready_changed_ms: u64,
    pub ready_at_ms: Option<u64>,
    crash_at_ms: Option<u64>,
    crashes_left: u32,
    consecutive_crashes: u32,
    scheduled_ms: Option<u64>,
    unschedulable: Option<String>,
    started_ms: Option<u64>,
    sandbox_ms: Option<u64>,
    container: Option<ContainerView>,
    last_terminated: Option<ContainerView>,
    pub restarts: i32,
    container_id: Option<String>,
    image_id: String,
    pod_ip: Option<String>,
    phase: &'static str,
    failure: Option<(&'static str, &'static str)>,
    pub qos: &'static str,
    pub cpu_request_millis: u64,
    pub cpu_limit_millis: Option<u64>,
    /// Cumulative CPU seconds of the current container.
    pub cpu_seconds: f64,
    /// CPU rate (millicores) over the last accounting second.
    pub cpu_rate_millis: f64,
    pub memory_bytes: u64,
    /// The previous metrics-server sample: (sim ms, cpu seconds, container start).
    pub last_scrape: Option<(u64, f64, u64)>,
    /// Whether the pod counts against its node's capacity.
    on_node: bool,
    /// The readiness probe fails (set from outside): the pod does not become Ready.
    probe_failing: bool,
    events: bool,
}

impl PodState {
    /// Phase Running.
    pub(crate) fn is_running(&self) -> bool {
        self.phase == "Running"
    }

    /// Has a deletion timestamp.
    pub(crate) fn terminating(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    /// Counts toward its ReplicaSet's replicas.
    pub(crate) fn active(&self) -> bool {
        !self.terminating() && self.stage != Stage::Failed
    }

    /// Receives client traffic (Ready and not terminating).
    pub(crate) fn serving(&self) -> bool {
        self.ready && !self.terminating()
    }

    /// When the running container started, if one runs.
    pub(crate) fn container_started_ms(&self) -> Option<u64> {
        match self.container {
            Some(ContainerView::Running { started_ms }) => Some(started_ms),
            _ => None,
        }
    }

    /// The container's name.
    pub(crate) fn container_name(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone())
            .unwrap_or_default()
    }

    /// The container's image.
    pub(crate) fn image(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    }

    /// The node's name, once scheduled.
    pub(crate) fn node_name(&self) -> Option<&str> {
        self.pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
    }

    /// When the pod became Ready (for the HPA calculation): (status, last transition).
    pub(crate) fn ready_condition(&self) -> Option<(bool, u64)> {
        self.started_ms.map(|_| (self.ready, self.ready_changed_ms))
    }

    /// When the kubelet started the pod (`status.startTime`).
    pub(crate) fn start_ms(&self) -> Option<u64> {
        self.started_ms
    }

    /// The phase.
    pub(crate) fn phase(&self) -> &'static str {
        self.phase
    }

    fn reference(&self) -> ObjectReference {
        let m = &self.pod.metadata;
        ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Pod".to_string()),
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            field_path: None,
        }
    }

    fn container_reference(&self) -> ObjectReference {
        ObjectReference {
            field_path: Some(format!("spec.containers{{{}}}", self.container_name())),
            ..self.reference()
        }
    }

    /// Renders `status` from the kubelet's view.
    fn render(&self, c: &Cluster) -> Result<PodStatus> {
        let t = |ms: u64| objects::time(c.wall_ms(ms));
        let cond = |type_: &str, ok: bool, at: u64, reason: Option<&str>, msg: Option<String>| {
            Ok::<_, crate::error::Error>(PodCondition {
                type_: type_.to_string(),
                status: if ok { "True" } else { "False" }.to_string(),
                last_transition_time: Some(t(at)?),
                last_probe_time: None,
                reason: reason.map(str::to_string),
                message: msg,
                observed_generation: None,
            })
        };
        let name = self.container_name();
        let mut conditions = Vec::new();
        if let Some(started) = self.started_ms {
            conditions.push(cond(
                "PodReadyToStartContainers",
                self.sandbox_ms.is_some() && self.stage != Stage::Failed,
                self.sandbox_ms.unwrap_or(started),
                None,
                None,
            )?);
            conditions.push(cond("Initialized", true, started, None, None)?);
            let (reason, msg) = match (self.ready, self.stage) {
                (true, _) => (None, None),
                (false, Stage::Failed) => (Some("PodFailed"), None),
                (false, _) => (
                    Some("ContainersNotReady"),
                    Some(format!("containers with unready status: [{name}]")),
                ),
            };
            conditions.push(cond(
                "Ready",
                self.ready,
                self.ready_changed_ms,
                reason,
                msg.clone(),
            )?);
            conditions.push(cond(
                "ContainersReady",
                self.ready,
                self.ready_changed_ms,
                reason,
                msg,
            )?);
        }
        match (self.scheduled_ms, &self.unschedulable) {
            (Some(at), _) => conditions.push(cond("PodScheduled", true, at, None, None)?),
            (None, Some(msg)) => conditions.push(cond(
                "PodScheduled",
                false,
                self.ready_changed_ms,
                Some("Unschedulable"),
                Some(msg.clone()),
            )?),
            (None, None) => {}
        }
        let view = |v: &ContainerView| -> Result<ContainerState> {
            Ok(match v {
                ContainerView::Waiting { reason, message } => ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.clone()),
                        message: message.clone(),
                    }),
                    ..ContainerState::default()
                },
                ContainerView::Running { started_ms } => ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(t(*started_ms)?),
                    }),
                    ..ContainerState::default()
                },
                ContainerView::Terminated {
                    exit_code,
                    reason,
                    started_ms,
                    finished_ms,
                } => ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: *exit_code,
                        reason: Some(reason.clone()),
                        started_at: Some(t(*started_ms)?),
                        finished_at: Some(t(*finished_ms)?),
                        container_id: self.container_id.clone(),
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                },
            })
        };
        let container_statuses = match &self.container {
            None => None,
            Some(state) => Some(vec![ContainerStatus {
                name,
                image: self.image(),
                image_id: if self.container_id.is_some() {
                    self.image_id.clone()
                } else {
                    String::new()
                },
                container_id: self.container_id.clone(),
                ready: self.ready,
                started: Some(matches!(state, ContainerView::Running { .. })),
                restart_count: self.restarts,
                state: Some(view(state)?),
                last_state: Some(match &self.last_terminated {
                    Some(v) => view(v)?,
                    None => ContainerState::default(),
                }),
                ..ContainerStatus::default()
            }]),
        };
        let host_ip = self
            .node
            .and_then(|i| c.nodes.get(i))
            .filter(|_| self.started_ms.is_some())
            .map(|n| objects::node_ip(n.index));
        Ok(PodStatus {
            phase: Some(self.phase.to_string()),
            conditions: (!conditions.is_empty()).then_some(conditions),
            host_ip: host_ip.clone(),
            host_ips: host_ip.map(|ip| vec![HostIP { ip }]),
            pod_ip: self.pod_ip.clone(),
            pod_ips: self.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
            start_time: self.started_ms.map(t).transpose()?,
            container_statuses,
            qos_class: Some(self.qos.to_string()),
            reason: self.failure.map(|f| f.0.to_string()),
            message: self.failure.map(|f| f.1.to_string()),
            ..PodStatus::default()
        })
    }
}

fn owner(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn reference(api_version: &str, kind: &str, meta: &ObjectMeta) -> ObjectReference {
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

/// A deterministic `sha256:`-looking digest for an image.
fn image_digest(image: &str) -> String {
    let seed = image.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let repo = image.split(':').next().unwrap_or(image);
    format!("{repo}@sha256:{}", objects::hex(&mut rng, 64))
}

impl Cluster {
    /// Adds a deployment (its ReplicaSet follows on the next controller pass).
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site per kind of workload"
    )]
    pub(crate) fn add_deployment(
        &mut self,
        namespace: &str,
        name: &str,
        replicas: u32,
        template: Template,
        timing: Timing,
        load: LoadModel,
        instant: bool,
    ) -> Result<()> {
        let now = self.now()?;
        let hash = objects::pod_template_hash(&format!("{namespace}/{name}/{}", template.image));
        let uid = objects::uid(&mut self.rng);
        let mut obj = Deployment {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: Some(uid),
                generation: Some(1),
                creation_timestamp: Some(now.clone()),
                labels: Some(template.labels.clone()),
                annotations: Some(BTreeMap::from([(
                    "deployment.kubernetes.io/revision".to_string(),
                    "1".to_string(),
                )])),
                managed_fields: Some(vec![objects::managed(
                    "kubectl-create",
                    "apps/v1",
                    &now,
                    None,
                    json!({"f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {}}}),
                )]),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
                selector: LabelSelector {
                    match_labels: Some(template.labels.clone()),
                    match_expressions: None,
                },
                template: template.pod_template(None),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".to_string()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::String("25%".to_string())),
                        max_unavailable: Some(IntOrString::String("25%".to_string())),
                    }),
                }),
                revision_history_limit: Some(10),
                progress_deadline_seconds: Some(600),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus::default()),
        };
        self.store.upsert(&mut obj)?;
        self.deployments.insert(
            ObjKey::new(namespace, name),
            DeploymentState {
                obj,
                template,
                timing,
                load,
                hash,
                rs: None,
                instant,
            },
        );
        Ok(())
    }

    /// Sets a deployment's `spec.replicas` (the scale subresource). Returns the deployment.
    pub(crate) fn scale_deployment(
        &mut self,
        namespace: &str,
        name: &str,
        replicas: i32,
        manager: &str,
    ) -> Result<Deployment> {
        let now = self.now()?;
        let d = self
            .deployments
            .get_mut(&ObjKey::new(namespace, name))
            .ok_or_else(|| not_found("deployment", namespace, name))?;
        let spec = d.obj.spec.get_or_insert_with(Default::default);
        if spec.replicas != Some(replicas) {
            spec.replicas = Some(replicas);
            let meta = &mut d.obj.metadata;
            meta.generation = Some(meta.generation.unwrap_or(1) + 1);
            objects::touch_managed(
                meta,
                objects::managed(
                    manager,
                    "apps/v1",
                    &now,
                    Some("scale"),
                    json!({"f:spec": {"f:replicas": {}}}),
                ),
            );
            self.store.upsert(&mut d.obj)?;
        }
        Ok(d.obj.clone())
    }

    /// Keeps each deployment's ReplicaSet at the deployment's replica count.
    pub(crate) fn deployment_controller(&mut self) -> Result<()> {
        let keys: Vec<ObjKey> = self.deployments.keys().cloned().collect();
        for key in keys {
            let Some(d) = self.deployments.get(&key) else {
                continue;
            };
            let want = d.replicas();
            match d.rs.clone() {
                None => self.create_replicaset(&key, want)?,
                Some(rs_key) => {
                    let Some(rs) = self.replicasets.get(&rs_key) else {
                        continue;
                    };
                    let have = rs.obj.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                    if have != want {
                        self.resize_replicaset(&key, &rs_key, have, want)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn create_replicaset(&mut self, dkey: &ObjKey, replicas: i32) -> Result<()> {
        let now = self.now()?;
        let uid = objects::uid(&mut self.rng);
        let Some(d) = self.deployments.get(dkey) else {
            return Ok(());
        };
        let name = format!("{}-{}", dkey.name, d.hash);
        let mut labels = d.template.labels.clone();
        labels.insert("pod-template-hash".to_string(), d.hash.clone());
        let max_surge = (replicas + 3) / 4;
        let mut obj = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(dkey.namespace.clone()),
                uid: Some(uid),
                generation: Some(1),
                creation_timestamp: Some(now.clone()),
                labels: Some(labels.clone()),
                annotations: Some(BTreeMap::from([
                    (
                        "deployment.kubernetes.io/desired-replicas".to_string(),
                        replicas.to_string(),
                    ),
                    (
                        "deployment.kubernetes.io/max-replicas".to_string(),
                        (replicas + max_surge).to_string(),
                    ),
                    (
                        "deployment.kubernetes.io/revision".to_string(),
                        "1".to_string(),
                    ),
                ])),
                owner_references: Some(vec![owner("apps/v1", "Deployment", &d.obj.metadata)]),
                managed_fields: Some(vec![objects::managed(
                    "kube-controller-manager",
                    "apps/v1",
                    &now,
                    None,
                    json!({"f:metadata": {"f:annotations": {}, "f:labels": {}, "f:ownerReferences": {}}, "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {}}}),
                )]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(labels),
                    match_expressions: None,
                },
                template: Some(
                    d.template
                        .pod_template(Some(("pod-template-hash", d.hash.as_str()))),
                ),
                min_ready_seconds: None,
            }),
            status: Some(ReplicaSetStatus {
                replicas: 0,
                ..ReplicaSetStatus::default()
            }),
        };
        self.store.upsert(&mut obj)?;
        let rs_key = ObjKey::new(&dkey.namespace, &name);
        let dep_ref = reference("apps/v1", "Deployment", &d.obj.metadata);
        let instant = d.instant;
        if let Some(d) = self.deployments.get_mut(dkey) {
            d.rs = Some(rs_key.clone());
        }
        self.replicasets.insert(
            rs_key.clone(),
            ReplicaSetState {
                obj,
                deployment: dkey.clone(),
                pods: BTreeSet::new(),
            },
        );
        self.dirty_rs.insert(rs_key);
        if !instant {
            self.record_event(
                dep_ref,
                "Normal",
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {replicas}"),
                "deployment-controller",
                None,
            )?;
        }
        Ok(())
    }

    fn resize_replicaset(
        &mut self,
        dkey: &ObjKey,
        rs_key: &ObjKey,
        from: i32,
        to: i32,
    ) -> Result<()> {
        let now = self.now()?;
        let Some(rs) = self.replicasets.get_mut(rs_key) else {
            return Ok(());
        };
        let name = rs_key.name.clone();
        if let Some(spec) = rs.obj.spec.as_mut() {
            spec.replicas = Some(to);
        }
        let meta = &mut rs.obj.metadata;
        meta.generation = Some(meta.generation.unwrap_or(1) + 1);
        let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(
            "deployment.kubernetes.io/desired-replicas".to_string(),
            to.to_string(),
        );
        annotations.insert(
            "deployment.kubernetes.io/max-replicas".to_string(),
            (to + (to + 3) / 4).to_string(),
        );
        objects::touch_managed(
            meta,
            objects::managed(
                "kube-controller-manager",
                "apps/v1",
                &now,
                None,
                json!({"f:metadata": {"f:annotations": {}}, "f:spec": {"f:replicas": {}}}),
            ),
        );
        self.store.upsert(&mut rs.obj)?;
        self.dirty_rs.insert(rs_key.clone());
        let Some(d) = self.deployments.get(dkey) else {
            return Ok(());
        };
        let direction = if to > from { "up" } else { "down" };
        self.record_event(
            reference("apps/v1", "Deployment", &d.obj.metadata),
            "Normal",
            "ScalingReplicaSet",
            format!("Scaled {direction} replica set {name} from {from} to {to}"),
            "deployment-controller",
            None,
        )
    }

    /// Creates or deletes pods so each ReplicaSet has `spec.replicas` active pods.
    pub(crate) fn replicaset_controller(&mut self) -> Result<()> {
        let keys: Vec<ObjKey> = self.replicasets.keys().cloned().collect();
        for key in keys {
            let Some(rs) = self.replicasets.get(&key) else {
                continue;
            };
            let want = rs.obj.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let active: Vec<ObjKey> = rs
                .pods
                .iter()
                .filter(|p| self.pods.get(*p).is_some_and(PodState::active))
                .cloned()
                .collect();
            let have = i32::try_from(active.len()).unwrap_or(i32::MAX);
            if have < want {
                for _ in have..want {
                    self.create_pod(&key)?;
                }
            } else if have > want {
                let mut ranked: Vec<(ObjKey, DeletionRank)> = active
                    .iter()
                    .filter_map(|k| {
                        let p = self.pods.get(k)?;
                        let phase_rank = match p.phase {
                            "Pending" => 0,
                            "Running" => 2,
                            _ => 1,
                        };
                        // Real ranking: unscheduled, pending, not ready, ready for less
                        // time, more restarts, newer first.
                        let rank = (
                            p.node.is_some(),
                            phase_rank,
                            p.ready,
                            u64::MAX - p.ready_changed_ms,
                            -p.restarts,
                        );
                        Some((k.clone(), rank))
                    })
                    .collect();
                ranked.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)));
                for (victim, _) in ranked
                    .into_iter()
                    .take(usize::try_from(have - want).unwrap_or(0))
                {
                    self.delete_pod(&victim, None)?;
                    let Some(rs) = self.replicasets.get(&key) else {
                        continue;
                    };
                    self.record_event(
                        reference("apps/v1", "ReplicaSet", &rs.obj.metadata),
                        "Normal",
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", victim.name),
                        "replicaset-controller",
                        None,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn jitter(&mut self, ms: u64) -> u64 {
        let j = self.cfg.jitter;
        let f: f64 = if j > 0.0 {
            self.rng.random_range(1.0 - j..1.0 + j)
        } else {
            1.0
        };
        let ms = (ms as f64 * f) as u64;
        ms.div_ceil(TICK_MS).max(1) * TICK_MS
    }

    fn create_pod(&mut self, rs_key: &ObjKey) -> Result<()> {
        let now = self.now()?;
        let Some(rs) = self.replicasets.get(rs_key) else {
            return Ok(());
        };
        let Some(d) = self.deployments.get(&rs.deployment) else {
            return Ok(());
        };
        let dkey = rs.deployment.clone();
        let name = loop {
            let candidate = format!("{}-{}", rs_key.name, objects::name_suffix(&mut self.rng, 5));
            if !self
                .pods
                .contains_key(&ObjKey::new(&rs_key.namespace, &candidate))
            {
                break candidate;
            }
        };
        let mut labels = d.template.labels.clone();
        labels.insert("pod-template-hash".to_string(), d.hash.clone());
        let uid = objects::uid(&mut self.rng);
        let instant = d.instant;
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                generate_name: Some(format!("{}-", rs_key.name)),
                namespace: Some(rs_key.namespace.clone()),
                uid: Some(uid),
                generation: Some(1),
                creation_timestamp: Some(now.clone()),
                labels: Some(labels),
                owner_references: Some(vec![owner("apps/v1", "ReplicaSet", &rs.obj.metadata)]),
                managed_fields: Some(vec![objects::managed(
                    "kube-controller-manager",
                    "v1",
                    &now,
                    None,
                    json!({"f:metadata": {"f:generateName": {}, "f:labels": {}, "f:ownerReferences": {}}, "f:spec": {"f:containers": {}, "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:terminationGracePeriodSeconds": {}}}),
                )]),
                ..ObjectMeta::default()
            },
            spec: Some(d.template.pod_spec()),
            status: None,
        };
        let rs_ref = reference("apps/v1", "ReplicaSet", &rs.obj.metadata);
        let state = PodState {
            pod,
            deployment: dkey,
            rs: rs_key.clone(),
            stage: Stage::Unscheduled,
            due_ms: None,
            node: None,
            ready: false,
            ready_changed_ms: self.now_ms,
            ready_at_ms: None,
            crash_at_ms: None,
            crashes_left: 0,
            consecutive_crashes: 0,
            scheduled_ms: None,
            unschedulable: None,
            started_ms: None,
            sandbox_ms: None,
            container: None,
            last_terminated: None,
            restarts: 0,
            container_id: None,
            image_id: image_digest(&d.template.image),
            pod_ip: None,
            phase: "Pending",
            failure: None,
            qos: d.template.qos_class(),
            cpu_request_millis: d.template.cpu_request_millis(),
            cpu_limit_millis: d.template.limits.cpu.map(|c| c.0),
            cpu_seconds: 0.0,
            cpu_rate_millis: 0.0,
            memory_bytes: 0,
            last_scrape: None,
            on_node: false,
            probe_failing: false,
            events: self.cfg.pod_events && !instant,
        };
        let key = ObjKey::new(&rs_key.namespace, &name);
        self.pods.insert(key.clone(), state);
        if let Some(rs) = self.replicasets.get_mut(rs_key) {
            rs.pods.insert(key.clone());
        }
        self.dirty_rs.insert(rs_key.clone());
        if instant {
            if self.schedule(&key)? {
                self.kubelet_start(&key)?;
                self.container_start(&key)?;
                self.become_ready(&key)?;
            }
            self.write_pod(&key)?;
            return Ok(());
        }
        self.write_pod(&key)?;
        self.record_event(
            rs_ref,
            "Normal",
            "SuccessfulCreate",
            format!("Created pod: {name}"),
            "replicaset-controller",
            None,
        )?;
        let due = self.now_ms + SCHEDULE_DELAY_MS;
        self.set_due(&key, Some(due));
        Ok(())
    }

    /// Renders a pod's status and writes it to the store.
    pub(crate) fn write_pod(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now()?;
        let Some(p) = self.pods.get(key) else {
            return Ok(());
        };
        let status = p.render(self)?;
        let kubelet = p.started_ms.is_some();
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        p.pod.status = Some(status);
        if kubelet {
            objects::touch_managed(
                &mut p.pod.metadata,
                objects::managed(
                    "kubelet",
                    "v1",
                    &now,
                    Some("status"),
                    json!({"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:hostIP": {}, "f:phase": {}, "f:podIP": {}, "f:startTime": {}}}),
                ),
            );
        }
        self.store.upsert(&mut p.pod)?;
        self.dirty_rs.insert(p.rs.clone());
        Ok(())
    }

    fn set_due(&mut self, key: &ObjKey, due: Option<u64>) {
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        if let Some(old) = p.due_ms.take() {
            self.agenda.remove(&(old, key.clone()));
        }
        p.due_ms = due;
        if let Some(d) = due {
            self.agenda.insert((d, key.clone()));
        }
    }

    /// Runs every pod transition due by now.
    pub(crate) fn run_agenda(&mut self) -> Result<()> {
        while let Some((due, key)) = self.agenda.first().cloned() {
            if due > self.now_ms {
                break;
            }
            self.agenda.pop_first();
            let Some(p) = self.pods.get_mut(&key) else {
                continue;
            };
            if p.due_ms != Some(due) {
                continue;
            }
            p.due_ms = None;
            self.transition(&key)?;
        }
        Ok(())
    }

    fn transition(&mut self, key: &ObjKey) -> Result<()> {
        let Some(p) = self.pods.get(key) else {
            return Ok(());
        };
        match p.stage {
            Stage::Unscheduled => {
                if self.schedule(key)? {
                    let due = self.now_ms + KUBELET_DELAY_MS;
                    self.set_due(key, Some(due));
                } else {
                    let due = self.now_ms + RESCHEDULE_MS;
                    self.set_due(key, Some(due));
                }
                self.write_pod(key)
            }
            Stage::Scheduled => {
                let startup = self
                    .deployments
                    .get(&p.deployment)
                    .map(|d| d.timing.startup_ms)
                    .unwrap_or(1000);
                self.kubelet_start(key)?;
                let due = self.now_ms
                    + self.jitter(
                        startup
                            .saturating_sub(SCHEDULE_DELAY_MS + KUBELET_DELAY_MS)
                            .max(TICK_MS),
                    );
                self.set_due(key, Some(due));
                self.write_pod(key)
            }
            Stage::Creating | Stage::BackOff => {
                self.container_start(key)?;
                self.plan_running(key);
                self.write_pod(key)
            }
            Stage::Running => {
                let now = self.now_ms;
                if p.crash_at_ms.is_some_and(|t| t <= now) {
                    self.crash_now(key)?;
                } else if !p.ready && p.ready_at_ms.is_some_and(|t| t <= now) {
                    self.become_ready(key)?;
                    self.plan_running(key);
                    self.write_pod(key)?;
                } else {
                    self.plan_running(key);
                }
                Ok(())
            }
            Stage::Crashed => {
                let n = p.consecutive_crashes;
                if n <= 1 {
                    self.container_start(key)?;
                    self.plan_running(key);
                } else {
                    let backoff_s = (10u64 << (n - 2).min(5)).min(300);
                    let container = p.container_name();
                    let pod_name = key.name.clone();
                    let uid = p.pod.metadata.uid.clone().unwrap_or_default();
                    let events = p.events;
                    let reference = p.container_reference();
                    let host = p.node_name().map(str::to_string);
                    if let Some(p) = self.pods.get_mut(key) {
                        p.stage = Stage::BackOff;
                        p.container = Some(ContainerView::Waiting {
                            reason: "CrashLoopBackOff".to_string(),
                            message: Some(format!(
                                "back-off {backoff_s}s restarting failed container={container} pod={pod_name}_{}({uid})",
                                key.namespace
                            )),
                        });
                    }
                    let due = self.now_ms + backoff_s * 1000;
                    self.set_due(key, Some(due));
                    if events {
                        self.record_event(
                            reference,
                            "Warning",
                            "BackOff",
                            format!(
                                "Back-off restarting failed container {container} in pod {pod_name}_{}({uid})",
                                key.namespace
                            ),
                            "kubelet",
                            host.as_deref(),
                        )?;
                    }
                }
                self.write_pod(key)
            }
            Stage::Terminating => self.finish_termination(key),
            Stage::Failed => Ok(()),
        }
    }

    /// Binds a pod to a node; false (and an Unschedulable condition) when none fits.
    fn schedule(&mut self, key: &ObjKey) -> Result<bool> {
        let Some(p) = self.pods.get(key) else {
            return Ok(false);
        };
        let request = p.cpu_request_millis;
        let cap = u64::from(self.cfg.nodes.pods);
        let cpu = self.cfg.nodes.cpu.0;
        let mut too_many = 0;
        let mut no_cpu = 0;
        let mut best: Option<(u64, u32, usize)> = None;
        for n in self.live_nodes() {
            let full = u64::from(n.pods) >= cap;
            let short = n.cpu_requested + request > cpu;
            too_many += usize::from(full);
            no_cpu += usize::from(short);
            if full || short {
                continue;
            }
            let score = (n.cpu_requested * 1000 / cpu.max(1), n.pods, n.index);
            if best.is_none_or(|b| score < b) {
                best = Some(score);
            }
        }
        let Some((_, _, index)) = best else {
            let total = self.live_nodes().count();
            let mut reasons = Vec::new();
            if no_cpu > 0 {
                reasons.push(format!("{no_cpu} Insufficient cpu"));
            }
            if too_many > 0 {
                reasons.push(format!("{too_many} Too many pods"));
            }
            let msg = format!(
                "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} No preemption victims found for incoming pod.",
                reasons.join(", ")
            );
            let events = p.events;
            let reference = p.reference();
            let first = p.unschedulable.is_none();
            if let Some(p) = self.pods.get_mut(key) {
                p.unschedulable = Some(msg.clone());
            }
            if events && first {
                self.record_event(
                    reference,
                    "Warning",
                    "FailedScheduling",
                    msg,
                    "default-scheduler",
                    None,
                )?;
            }
            return Ok(false);
        };
        let now = self.now_ms;
        let node_name = self.nodes[index].name.clone();
        self.nodes[index].pods += 1;
        self.nodes[index].cpu_requested += request;
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(false);
        };
        p.node = Some(index);
        p.on_node = true;
        p.stage = Stage::Scheduled;
        p.scheduled_ms = Some(now);
        p.unschedulable = None;
        if let Some(spec) = p.pod.spec.as_mut() {
            spec.node_name = Some(node_name.clone());
        }
        let (events, reference) = (p.events, p.reference());
        debug!(pod = %key, node = %node_name, "scheduled");
        if events {
            self.record_event(
                reference,
                "Normal",
                "Scheduled",
                format!(
                    "Successfully assigned {}/{} to {node_name}",
                    key.namespace, key.name
                ),
                "default-scheduler",
                None,
            )?;
        }
        Ok(true)
    }

    /// The kubelet admits the pod: start time, sandbox, ContainerCreating.
    fn kubelet_start(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now_ms;
        let Some(p) = self.pods.get(key) else {
            return Ok(());
        };
        let Some(index) = p.node else { return Ok(()) };
        let ip = {
            let n = &mut self.nodes[index];
            let ip = format!("10.244.{}.{}", n.index, n.next_ip);
            n.next_ip = if n.next_ip >= 254 { 2 } else { n.next_ip + 1 };
            ip
        };
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        p.stage = Stage::Creating;
        p.started_ms = Some(now);
        p.sandbox_ms = Some(now);
        p.pod_ip = Some(ip);
        p.ready_changed_ms = now;
        p.container = Some(ContainerView::Waiting {
            reason: "ContainerCreating".to_string(),
            message: None,
        });
        let (events, reference, image, host) = (
            p.events,
            p.container_reference(),
            p.image(),
            p.node_name().map(str::to_string),
        );
        if events {
            self.record_event(
                reference,
                "Normal",
                "Pulling",
                format!("Pulling image \"{image}\""),
                "kubelet",
                host.as_deref(),
            )?;
        }
        Ok(())
    }

    /// A (new) container starts running.
    fn container_start(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now_ms;
        let container_id = format!("containerd://{}", objects::hex(&mut self.rng, 64));
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        let first = p.container_id.is_none();
        if !first {
            p.restarts += 1;
        }
        p.stage = Stage::Running;
        p.phase = "Running";
        p.container = Some(ContainerView::Running { started_ms: now });
        p.container_id = Some(container_id);
        p.cpu_seconds = 0.0;
        let (events, reference, image, container, host) = (
            p.events,
            p.container_reference(),
            p.image(),
            p.container_name(),
            p.node_name().map(str::to_string),
        );
        if events {
            let host = host.as_deref();
            if first {
                let pull_ms = now.saturating_sub(p.started_ms.unwrap_or(now));
                self.record_event(
                    reference.clone(),
                    "Normal",
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {} ({} including waiting). Image size: 73519512 bytes.",
                        crate::units::format_go_duration(std::time::Duration::from_millis(pull_ms)),
                        crate::units::format_go_duration(std::time::Duration::from_millis(pull_ms)),
                    ),
                    "kubelet",
                    host,
                )?;
            } else {
                self.record_event(
                    reference.clone(),
                    "Normal",
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                    "kubelet",
                    host,
                )?;
            }
            self.record_event(
                reference.clone(),
                "Normal",
                "Created",
                format!("Created container: {container}"),
                "kubelet",
                host,
            )?;
            self.record_event(
                reference,
                "Normal",
                "Started",
                format!("Started container {container}"),
                "kubelet",
                host,
            )?;
        }
        Ok(())
    }

    /// Schedules readiness and the next crash of a running container.
    fn plan_running(&mut self, key: &ObjKey) {
        let now = self.now_ms;
        let readiness = self
            .pods
            .get(key)
            .and_then(|p| self.deployments.get(&p.deployment))
            .map(|d| d.timing.readiness_ms)
            .unwrap_or(0);
        let jittered = if readiness > 0 {
            self.jitter(readiness)
        } else {
            0
        };
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        if p.stage != Stage::Running {
            return;
        }
        if !p.ready && p.ready_at_ms.is_none() {
            p.ready_at_ms = Some(now + jittered);
        }
        if p.crashes_left > 0 && p.crash_at_ms.is_none() {
            let started = p.container_started_ms().unwrap_or(now);
            p.crash_at_ms = Some(started + CRASH_AFTER_MS);
        }
        let mut due = p.crash_at_ms;
        if !p.ready {
            due = match (due, p.ready_at_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let due = due.map(|d| d.max(now + TICK_MS).div_ceil(TICK_MS) * TICK_MS);
        self.set_due(key, due);
    }

    fn become_ready(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now_ms;
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        if p.stage != Stage::Running || p.ready || p.probe_failing {
            return Ok(());
        }
        p.ready = true;
        p.ready_changed_ms = now;
        p.ready_at_ms = None;
        if p.crashes_left == 0 {
            p.consecutive_crashes = 0;
        }
        Ok(())
    }

    /// Makes a pod's readiness probe fail (`ready = false`) or pass again, as a flapping
    /// probe does: Ready changes at once and is written to the store.
    pub(crate) fn set_pod_ready(&mut self, key: &ObjKey, ready: bool) -> Result<()> {
        let now = self.now_ms;
        let Some(p) = self.pods.get_mut(key) else {
            return Err(not_found("pod", &key.namespace, &key.name));
        };
        p.probe_failing = !ready;
        if p.stage != Stage::Running || p.ready == ready {
            return Ok(());
        }
        p.ready = ready;
        p.ready_changed_ms = now;
        p.ready_at_ms = None;
        self.write_pod(key)
    }

    /// Flips the readiness of `n` random Running pods (in `namespace`, if given).
    pub(crate) fn flip_readiness(&mut self, n: usize, namespace: Option<&str>) -> Result<()> {
        use rand::seq::IndexedRandom;
        if n == 0 {
            return Ok(());
        }
        let candidates: Vec<ObjKey> = self
            .pods
            .iter()
            .filter(|(k, p)| {
                p.stage == Stage::Running
                    && !p.terminating()
                    && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let chosen: Vec<ObjKey> = candidates
            .choose_multiple(&mut self.rng, n)
            .cloned()
            .collect();
        for key in chosen {
            let ready = self.pods.get(&key).is_some_and(|p| p.ready);
            self.set_pod_ready(&key, !ready)?;
        }
        Ok(())
    }

    /// Makes a running container crash now and `restarts - 1` more times after restarts.
    pub(crate) fn crash_pod(&mut self, key: &ObjKey, restarts: u32) -> Result<()> {
        let Some(p) = self.pods.get_mut(key) else {
            return Err(not_found("pod", &key.namespace, &key.name));
        };
        p.crashes_left = restarts;
        if p.stage == Stage::Running {
            self.crash_now(key)?;
        }
        Ok(())
    }

    fn crash_now(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now_ms;
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        let started = p.container_started_ms().unwrap_or(now);
        let terminated = ContainerView::Terminated {
            exit_code: 1,
            reason: "Error".to_string(),
            started_ms: started,
            finished_ms: now,
        };
        p.container = Some(terminated.clone());
        p.last_terminated = Some(terminated);
        p.stage = Stage::Crashed;
        p.crashes_left = p.crashes_left.saturating_sub(1);
        p.consecutive_crashes += 1;
        p.crash_at_ms = None;
        p.ready_at_ms = None;
        p.last_scrape = None;
        if p.ready {
            p.ready = false;
            p.ready_changed_ms = now;
        }
        debug!(pod = %key, restarts = p.restarts, "container crashed");
        let due = now + RESTART_DELAY_MS;
        self.set_due(key, Some(due));
        self.pod_metrics.remove(key);
        self.write_pod(key)
    }

    /// The pod fails (evicted): phase Failed, containers terminated; it stays in the API.
    pub(crate) fn fail_pod(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now_ms;
        let Some(p) = self.pods.get_mut(key) else {
            return Err(not_found("pod", &key.namespace, &key.name));
        };
        if matches!(p.stage, Stage::Failed | Stage::Terminating) {
            return Ok(());
        }
        let started = p.container_started_ms().unwrap_or(now);
        if p.container.is_some() {
            p.container = Some(ContainerView::Terminated {
                exit_code: 137,
                reason: "ContainerStatusUnknown".to_string(),
                started_ms: started,
                finished_ms: now,
            });
        }
        p.stage = Stage::Failed;
        p.phase = "Failed";
        p.failure = Some((
            "Evicted",
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. ",
        ));
        if p.ready {
            p.ready = false;
            p.ready_changed_ms = now;
        }
        let (events, reference, host) =
            (p.events, p.reference(), p.node_name().map(str::to_string));
        self.release_node(key);
        self.set_due(key, None);
        self.pod_metrics.remove(key);
        self.write_pod(key)?;
        if events {
            self.record_event(
                reference,
                "Warning",
                "Evicted",
                "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. ".to_string(),
                "kubelet",
                host.as_deref(),
            )?;
        }
        Ok(())
    }

    fn release_node(&mut self, key: &ObjKey) {
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        if !p.on_node {
            return;
        }
        p.on_node = false;
        if let Some(n) = p.node.and_then(|i| self.nodes.get_mut(i)) {
            n.pods = n.pods.saturating_sub(1);
            n.cpu_requested = n.cpu_requested.saturating_sub(p.cpu_request_millis);
        }
    }

    /// Deletes a pod: gracefully (deletionTimestamp, then gone after its termination delay)
    /// unless `grace_seconds` is 0 or the pod never ran or already terminated. Returns the
    /// pod as it is after the call.
    pub(crate) fn delete_pod(&mut self, key: &ObjKey, grace_seconds: Option<i64>) -> Result<Pod> {
        let now_ms = self.now_ms;
        let now = self.now()?;
        let Some(p) = self.pods.get(key) else {
            return Err(not_found("pod", &key.namespace, &key.name));
        };
        let default_grace = p
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        let grace = grace_seconds
            .unwrap_or(default_grace)
            .clamp(0, MAX_GRACE_SECONDS);
        let immediate =
            grace == 0 || matches!(p.stage, Stage::Unscheduled | Stage::Failed) || p.node.is_none();
        if immediate {
            return self.remove_pod(key);
        }
        if p.terminating() {
            return Ok(p.pod.clone());
        }
        let termination = self
            .deployments
            .get(&p.deployment)
            .map(|d| d.timing.termination_ms)
            .unwrap_or(1000)
            .min(u64::try_from(grace).unwrap_or(30) * 1000);
        let deletion_at =
            objects::time(self.wall_ms(now_ms + u64::try_from(grace).unwrap_or(30) * 1000))?;
        let Some(p) = self.pods.get_mut(key) else {
            return Err(not_found("pod", &key.namespace, &key.name));
        };
        p.pod.metadata.deletion_timestamp = Some(deletion_at);
        p.pod.metadata.deletion_grace_period_seconds = Some(grace);
        p.stage = Stage::Terminating;
        p.crash_at_ms = None;
        let (events, reference, container, host) = (
            p.events,
            p.container_reference(),
            p.container_name(),
            p.node_name().map(str::to_string),
        );
        let _ = now;
        let due = now_ms + termination.max(TICK_MS).div_ceil(TICK_MS) * TICK_MS;
        self.set_due(key, Some(due));
        self.write_pod(key)?;
        if events {
            self.record_event(
                reference,
                "Normal",
                "Killing",
                format!("Stopping container {container}"),
                "kubelet",
                host.as_deref(),
            )?;
        }
        self.pods
            .get(key)
            .map(|p| p.pod.clone())
            .ok_or_else(|| not_found("pod", &key.namespace, &key.name))
    }

    fn finish_termination(&mut self, key: &ObjKey) -> Result<()> {
        let now = self.now_ms;
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        if let Some(started) = p.container_started_ms() {
            p.container = Some(ContainerView::Terminated {
                exit_code: 0,
                reason: "Completed".to_string(),
                started_ms: started,
                finished_ms: now,
            });
        }
        if p.ready {
            p.ready = false;
            p.ready_changed_ms = now;
        }
        self.write_pod(key)?;
        self.remove_pod(key).map(|_| ())
    }

    pub(crate) fn remove_pod(&mut self, key: &ObjKey) -> Result<Pod> {
        self.release_node(key);
        self.set_due(key, None);
        let Some(mut p) = self.pods.remove(key) else {
            return Err(not_found("pod", &key.namespace, &key.name));
        };
        self.pod_metrics.remove(key);
        if let Some(rs) = self.replicasets.get_mut(&p.rs) {
            rs.pods.remove(key);
        }
        self.dirty_rs.insert(p.rs.clone());
        if p.pod.metadata.deletion_timestamp.is_none() {
            p.pod.metadata.deletion_timestamp = Some(self.now()?);
            p.pod.metadata.deletion_grace_period_seconds = Some(0);
        }
        self.store.delete(&mut p.pod)?;
        debug!(pod = %key, "pod deleted");
        Ok(p.pod)
    }

    /// Rewrites the status of every ReplicaSet whose pods changed, and of their deployments.
    pub(crate) fn update_statuses(&mut self) -> Result<()> {
        let dirty = std::mem::take(&mut self.dirty_rs);
        let now = self.now()?;
        let mut deployments = BTreeSet::new();
        for key in dirty {
            let Some(rs) = self.replicasets.get(&key) else {
                continue;
            };
            let (mut replicas, mut ready, mut terminating) = (0, 0, 0);
            for p in rs.pods.iter().filter_map(|k| self.pods.get(k)) {
                if p.terminating() {
                    terminating += 1;
                } else if p.active() {
                    replicas += 1;
                    if p.ready {
                        ready += 1;
                    }
                }
            }
            let nz = |v: i32| (v != 0).then_some(v);
            let status = ReplicaSetStatus {
                replicas,
                fully_labeled_replicas: nz(replicas),
                ready_replicas: nz(ready),
                available_replicas: nz(ready),
                observed_generation: rs.obj.metadata.generation,
                terminating_replicas: Some(terminating),
                conditions: None,
            };
            deployments.insert(rs.deployment.clone());
            if rs.obj.status.as_ref() != Some(&status)
                && let Some(rs) = self.replicasets.get_mut(&key)
            {
                rs.obj.status = Some(status);
                objects::touch_managed(
                    &mut rs.obj.metadata,
                    objects::managed(
                        "kube-controller-manager",
                        "apps/v1",
                        &now,
                        Some("status"),
                        json!({"f:status": {"f:availableReplicas": {}, "f:fullyLabeledReplicas": {}, "f:observedGeneration": {}, "f:readyReplicas": {}, "f:replicas": {}}}),
                    ),
                );
                self.store.upsert(&mut rs.obj)?;
            }
        }
        for (key, d) in &self.deployments {
            let observed = d.obj.status.as_ref().and_then(|s| s.observed_generation);
            if observed != d.obj.metadata.generation {
                deployments.insert(key.clone());
            }
        }
        for key in deployments {
            self.update_deployment_status(&key, &now)?;
        }
        Ok(())
    }

    fn update_deployment_status(
        &mut self,
        key: &ObjKey,
        now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    ) -> Result<()> {
        let Some(d) = self.deployments.get(key) else {
            return Ok(());
        };
        let Some(rs_key) = d.rs.clone() else {
            return Ok(());
        };
        let Some(rs) = self.replicasets.get(&rs_key) else {
            return Ok(());
        };
        let rs_status = rs.obj.status.clone().unwrap_or_default();
        let want = d.replicas();
        let replicas = rs_status.replicas;
        let available = rs_status.available_replicas.unwrap_or(0);
        let ready = rs_status.ready_replicas.unwrap_or(0);
        let max_unavailable = want / 4;
        let old = d.obj.status.clone().unwrap_or_default();
        let old_conditions = old.conditions.clone().unwrap_or_default();
        let condition = |type_: &str, ok: bool, reason: &str, message: String| {
            let prev = old_conditions.iter().find(|c| c.type_ == type_);
            let status = if ok { "True" } else { "False" }.to_string();
            let same =
                prev.is_some_and(|p| p.status == status && p.reason.as_deref() == Some(reason));
            let transition = match prev {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => Some(now.clone()),
            };
            DeploymentCondition {
                type_: type_.to_string(),
                status,
                reason: Some(reason.to_string()),
                message: Some(message),
                last_update_time: if same {
                    prev.and_then(|p| p.last_update_time.clone())
                } else {
                    Some(now.clone())
                },
                last_transition_time: transition,
            }
        };
        let available_ok = available >= want - max_unavailable;
        let complete = available >= want && replicas == want;
        let conditions = vec![
            if available_ok {
                condition(
                    "Available",
                    true,
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".to_string(),
                )
            } else {
                condition(
                    "Available",
                    false,
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".to_string(),
                )
            },
            if complete
                || old_conditions.iter().any(|c| {
                    c.type_ == "Progressing"
                        && c.reason.as_deref() == Some("NewReplicaSetAvailable")
                })
            {
                condition(
                    "Progressing",
                    true,
                    "NewReplicaSetAvailable",
                    format!(
                        "ReplicaSet \"{}\" has successfully progressed.",
                        rs_key.name
                    ),
                )
            } else {
                condition(
                    "Progressing",
                    true,
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{}\" is progressing.", rs_key.name),
                )
            },
        ];
        let nz = |v: i32| (v != 0).then_some(v);
        let status = DeploymentStatus {
            replicas: nz(replicas),
            updated_replicas: nz(replicas),
            ready_replicas: nz(ready),
            available_replicas: nz(available),
            unavailable_replicas: nz((want - available).max(0)),
            observed_generation: d.obj.metadata.generation,
            terminating_replicas: rs_status.terminating_replicas,
            conditions: Some(conditions),
            collision_count: None,
        };
        if d.obj.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let Some(d) = self.deployments.get_mut(key) else {
            return Ok(());
        };
        d.obj.status = Some(status);
        objects::touch_managed(
            &mut d.obj.metadata,
            objects::managed(
                "kube-controller-manager",
                "apps/v1",
                now,
                Some("status"),
                json!({"f:status": {"f:availableReplicas": {}, "f:conditions": {}, "f:observedGeneration": {}, "f:readyReplicas": {}, "f:replicas": {}, "f:updatedReplicas": {}}}),
            ),
        );
        self.store.upsert(&mut d.obj)
    }
}
