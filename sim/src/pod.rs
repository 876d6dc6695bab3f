//! A pod as the kubelet sees it: where it is in its life, its single container's state, and
//! how that renders into the `status` a real kubelet writes (conditions, container
//! statuses, IPs, QoS class, a failure's reason).

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, ObjectReference, Pod, PodCondition, PodIP, PodStatus,
};

use crate::error::Result;
use crate::objects;
use crate::scenario::{ExitReason, PodFault};
use crate::store::ObjKey;

/// Where a pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Unscheduled,
    Scheduled,
    Creating,
    Running,
    Crashed,
    BackOff,
    /// The image does not pull: waiting in `ErrImagePull` / `ImagePullBackOff`.
    ImagePull,
    Terminating,
    Failed,
}

/// The single container's state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ContainerView {
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
        message: Option<String>,
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
    pub ready_changed_ms: u64,
    pub ready_at_ms: Option<u64>,
    pub crash_at_ms: Option<u64>,
    pub crashes_left: u32,
    pub consecutive_crashes: u32,
    pub scheduled_ms: Option<u64>,
    pub unschedulable: Option<String>,
    pub started_ms: Option<u64>,
    pub sandbox_ms: Option<u64>,
    pub container: Option<ContainerView>,
    pub last_terminated: Option<ContainerView>,
    pub restarts: i32,
    pub container_id: Option<String>,
    pub image_id: String,
    pub pod_ip: Option<String>,
    pub phase: &'static str,
    /// `status.reason` and `status.message` of a failed pod.
    pub failure: Option<(&'static str, String)>,
    /// When the pod failed.
    pub failed_ms: Option<u64>,
    pub qos: &'static str,
    pub cpu_request_millis: u64,
    pub memory_request_bytes: u64,
    pub cpu_limit_millis: Option<u64>,
    /// What goes wrong with the pod (its ReplicaSet's template says).
    pub fault: Option<PodFault>,
    /// How a crash injected by the scenario terminates the container.
    pub crash_reason: ExitReason,
    /// Failed image pulls in a row (the pull back-off grows with them).
    pub pull_failures: u32,
    /// The pod's node is not Ready: the node lifecycle controller marked the pod not
    /// Ready and nothing makes it Ready until the node is back.
    pub node_not_ready: bool,
    /// Cumulative CPU seconds of the current container.
    pub cpu_seconds: f64,
    /// CPU rate (millicores) over the last accounting second.
    pub cpu_rate_millis: f64,
    pub memory_bytes: u64,
    /// The previous metrics-server sample: (sim ms, cpu seconds, container start).
    pub last_scrape: Option<(u64, f64, u64)>,
    /// Whether the pod counts against its node's capacity.
    pub on_node: bool,
    /// The readiness probe fails (set from outside): the pod does not become Ready.
    pub probe_failing: bool,
    pub events: bool,
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

    /// The pod's `Ready` condition: its container is ready and its node has not been
    /// found NotReady (the node lifecycle controller marks such pods not Ready).
    pub(crate) fn pod_ready(&self) -> bool {
        self.ready && !self.node_not_ready
    }

    /// Receives client traffic (Ready and not terminating).
    pub(crate) fn serving(&self) -> bool {
        self.pod_ready() && !self.terminating()
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
        self.started_ms
            .map(|_| (self.pod_ready(), self.ready_changed_ms))
    }

    /// When the kubelet started the pod (`status.startTime`).
    pub(crate) fn start_ms(&self) -> Option<u64> {
        self.started_ms
    }

    /// The phase.
    pub(crate) fn phase(&self) -> &'static str {
        self.phase
    }

    pub(crate) fn reference(&self) -> ObjectReference {
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

    pub(crate) fn container_reference(&self) -> ObjectReference {
        ObjectReference {
            field_path: Some(format!("spec.containers{{{}}}", self.container_name())),
            ..self.reference()
        }
    }

    /// Renders `status` from the kubelet's view (`epoch_ms`: the wall clock at simulation
    /// time zero).
    pub(crate) fn render(&self, epoch_ms: i64) -> Result<PodStatus> {
        let t = |ms: u64| objects::time(objects::wall_ms(epoch_ms, ms));
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
            // A pod on a lost node: the node lifecycle controller flips only `Ready`.
            let (ready_reason, ready_msg) = if self.node_not_ready {
                (None, None)
            } else {
                (reason, msg.clone())
            };
            conditions.push(cond(
                "Ready",
                self.pod_ready(),
                self.ready_changed_ms,
                ready_reason,
                ready_msg,
            )?);
            conditions.push(cond(
                "ContainersReady",
                self.ready,
                self.ready_changed_ms,
                reason,
                msg,
            )?);
            if let (Some(("Evicted", message)), Some(at)) = (&self.failure, self.failed_ms) {
                conditions.push(PodCondition {
                    type_: "DisruptionTarget".to_string(),
                    status: "True".to_string(),
                    last_transition_time: Some(t(at)?),
                    last_probe_time: None,
                    reason: Some("TerminationByKubelet".to_string()),
                    message: Some(message.clone()),
                    observed_generation: None,
                });
            }
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
                    message,
                    started_ms,
                    finished_ms,
                } => ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: *exit_code,
                        reason: Some(reason.clone()),
                        message: message.clone(),
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
            .filter(|_| self.started_ms.is_some())
            .map(objects::node_ip);
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
            reason: self.failure.as_ref().map(|f| f.0.to_string()),
            message: self.failure.as_ref().map(|f| f.1.clone()),
            ..PodStatus::default()
        })
    }
}
