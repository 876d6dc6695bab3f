//! The metric catalogue: every family the sender can emit, defined once.
//!
//! Names and label sets follow `docs/metrics.md` (kube-state-metrics names where it has the
//! metric, cAdvisor names for usage). Counter families are named without `_total`; the
//! receiver's exposition adds it. A family's label *names* live here, so a stored series
//! keeps only its label *values*, in this order.

use kube_relay_proto::{FamilyDef, FamilyId, MetricKind};

/// Labels every pod series starts with.
const POD: [&str; 3] = ["namespace", "pod", "uid"];
/// Labels every per-container pod series starts with.
const CONTAINER: [&str; 4] = ["namespace", "pod", "uid", "container"];
/// Labels every HPA series starts with.
const HPA: [&str; 2] = ["namespace", "horizontalpodautoscaler"];
/// Labels every Deployment series starts with.
const DEPLOYMENT: [&str; 2] = ["namespace", "deployment"];

macro_rules! catalogue {
    ($( $(#[$doc:meta])* $variant:ident => ($name:literal, $kind:ident, $help:literal, [$($label:expr),* $(,)?]) ),* $(,)?) => {
        /// A metric family of the catalogue. The discriminant is the family's wire id.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Family {
            $( $(#[$doc])* $variant, )*
        }

        impl Family {
            /// Every family, in id order.
            pub const ALL: &'static [Family] = &[$(Family::$variant),*];

            /// The metric name (counters without `_total`).
            pub fn name(self) -> &'static str {
                match self { $(Family::$variant => $name,)* }
            }

            /// One line of help text.
            pub fn help(self) -> &'static str {
                match self { $(Family::$variant => $help,)* }
            }

            /// Gauge or counter.
            pub fn kind(self) -> MetricKind {
                match self { $(Family::$variant => MetricKind::$kind,)* }
            }

            /// The label names, in the order series of this family carry their values.
            pub fn label_names(self) -> &'static [&'static str] {
                match self { $(Family::$variant => {
                    const NAMES: &[&str] = &concat_labels!($($label),*);
                    NAMES
                })* }
            }
        }
    };
}

/// Flattens label groups (`&POD`, `&CONTAINER`, `&HPA`, `&["name", ..]`) into one array at
/// compile time.
macro_rules! concat_labels {
    ($($part:expr),*) => {{
        const PARTS: &[&[&str]] = &[$($part),*];
        const LEN: usize = {
            let mut n = 0;
            let mut i = 0;
            while i < PARTS.len() {
                n += PARTS[i].len();
                i += 1;
            }
            n
        };
        const OUT: [&str; LEN] = {
            let mut out = [""; LEN];
            let mut n = 0;
            let mut i = 0;
            while i < PARTS.len() {
                let mut j = 0;
                while j < PARTS[i].len() {
                    out[n] = PARTS[i][j];
                    n += 1;
                    j += 1;
                }
                i += 1;
            }
            out
        };
        OUT
    }};
}

catalogue! {
    // Pods.
    /// `kube_pod_info`.
    PodInfo => ("kube_pod_info", Gauge, "Information about pod.",
        [&POD, &["host_ip", "pod_ip", "node", "created_by_kind", "created_by_name", "priority_class", "host_network"]]),
    /// `kube_pod_status_phase`, one-hot over the five phases.
    PodStatusPhase => ("kube_pod_status_phase", Gauge, "The pods current phase.",
        [&POD, &["phase"]]),
    /// `kube_pod_status_ready`, one-hot over true/false/unknown.
    PodStatusReady => ("kube_pod_status_ready", Gauge, "Describes whether the pod is ready to serve requests.",
        [&POD, &["condition"]]),
    /// `kube_pod_status_qos_class`, one-hot over the three classes.
    PodStatusQosClass => ("kube_pod_status_qos_class", Gauge, "The pods current qosClass.",
        [&POD, &["qos_class"]]),
    /// `kube_pod_owner`.
    PodOwner => ("kube_pod_owner", Gauge, "Information about the Pod's owner.",
        [&POD, &["owner_kind", "owner_name", "owner_is_controller"]]),
    /// `kube_pod_container_info`.
    PodContainerInfo => ("kube_pod_container_info", Gauge, "Information about a container in a pod.",
        [&CONTAINER, &["image_spec", "image", "image_id", "container_id"]]),
    /// `kube_pod_container_status_restarts_total`.
    PodContainerStatusRestarts => ("kube_pod_container_status_restarts", Counter, "The number of container restarts per container.",
        [&CONTAINER]),
    /// `kube_pod_container_status_ready`.
    PodContainerStatusReady => ("kube_pod_container_status_ready", Gauge, "Describes whether the containers readiness check succeeded.",
        [&CONTAINER]),
    /// `kube_pod_container_status_running`.
    PodContainerStatusRunning => ("kube_pod_container_status_running", Gauge, "Describes whether the container is currently in running state.",
        [&CONTAINER]),
    /// `kube_pod_container_status_terminated`.
    PodContainerStatusTerminated => ("kube_pod_container_status_terminated", Gauge, "Describes whether the container is currently in terminated state.",
        [&CONTAINER]),
    /// `kube_pod_container_status_waiting`.
    PodContainerStatusWaiting => ("kube_pod_container_status_waiting", Gauge, "Describes whether the container is currently in waiting state.",
        [&CONTAINER]),
    /// `kube_pod_container_status_waiting_reason`, present only while waiting.
    PodContainerStatusWaitingReason => ("kube_pod_container_status_waiting_reason", Gauge, "Describes the reason the container is currently in waiting state.",
        [&CONTAINER, &["reason"]]),
    /// `kube_pod_container_resource_requests`.
    PodContainerResourceRequests => ("kube_pod_container_resource_requests", Gauge, "The number of requested request resource by a container.",
        [&CONTAINER, &["node", "resource", "unit"]]),
    /// `kube_pod_container_resource_limits`.
    PodContainerResourceLimits => ("kube_pod_container_resource_limits", Gauge, "The number of requested limit resource by a container.",
        [&CONTAINER, &["node", "resource", "unit"]]),

    // HorizontalPodAutoscalers.
    /// `kube_horizontalpodautoscaler_info`.
    HpaInfo => ("kube_horizontalpodautoscaler_info", Gauge, "Information about this autoscaler.",
        [&HPA, &["scaletargetref_api_version", "scaletargetref_kind", "scaletargetref_name"]]),
    /// `kube_horizontalpodautoscaler_spec_min_replicas`.
    HpaSpecMinReplicas => ("kube_horizontalpodautoscaler_spec_min_replicas", Gauge, "Lower limit for the number of pods that can be set by the autoscaler, default 1.",
        [&HPA]),
    /// `kube_horizontalpodautoscaler_spec_max_replicas`.
    HpaSpecMaxReplicas => ("kube_horizontalpodautoscaler_spec_max_replicas", Gauge, "Upper limit for the number of pods that can be set by the autoscaler; cannot be smaller than MinReplicas.",
        [&HPA]),
    /// `kube_horizontalpodautoscaler_status_current_replicas`.
    HpaStatusCurrentReplicas => ("kube_horizontalpodautoscaler_status_current_replicas", Gauge, "Current number of replicas of pods managed by this autoscaler.",
        [&HPA]),
    /// `kube_horizontalpodautoscaler_status_desired_replicas`.
    HpaStatusDesiredReplicas => ("kube_horizontalpodautoscaler_status_desired_replicas", Gauge, "Desired number of replicas of pods managed by this autoscaler.",
        [&HPA]),
    /// `kube_horizontalpodautoscaler_spec_target_metric`.
    HpaSpecTargetMetric => ("kube_horizontalpodautoscaler_spec_target_metric", Gauge, "The metric specifications used by this autoscaler when calculating the desired replica count.",
        [&HPA, &["metric_name", "metric_target_type"]]),
    /// `kube_horizontalpodautoscaler_status_target_metric`.
    HpaStatusTargetMetric => ("kube_horizontalpodautoscaler_status_target_metric", Gauge, "The current metric status used by this autoscaler when calculating the desired replica count.",
        [&HPA, &["metric_name", "metric_target_type"]]),
    /// `kube_horizontalpodautoscaler_status_condition`, one-hot over true/false/unknown.
    HpaStatusCondition => ("kube_horizontalpodautoscaler_status_condition", Gauge, "The condition of this autoscaler.",
        [&HPA, &["condition", "status"]]),
    /// `kube_horizontalpodautoscaler_scaling_events_total`.
    HpaScalingEvents => ("kube_horizontalpodautoscaler_scaling_events", Counter, "Scaling actions of this autoscaler (SuccessfulRescale events, each occurrence counted once).",
        [&HPA, &["direction"]]),
    /// `kube_horizontalpodautoscaler_last_scaling_event_timestamp_seconds`.
    HpaLastScalingEventTimestamp => ("kube_horizontalpodautoscaler_last_scaling_event_timestamp_seconds", Gauge, "Unix time of the latest scaling action of this autoscaler in this direction.",
        [&HPA, &["direction"]]),

    // Nodes and namespaces.
    /// `kube_node_info`.
    NodeInfo => ("kube_node_info", Gauge, "Information about a cluster node.",
        [&["node", "kernel_version", "os_image", "container_runtime_version", "kubelet_version", "kubeproxy_version", "provider_id", "pod_cidr", "system_uuid", "internal_ip"]]),
    /// `kube_namespace_status_phase`, one-hot over Active/Terminating.
    NamespaceStatusPhase => ("kube_namespace_status_phase", Gauge, "kubernetes namespace status phase.",
        [&["namespace", "phase"]]),

    // Usage.
    /// `container_cpu_usage_seconds_total`.
    ContainerCpuUsageSeconds => ("container_cpu_usage_seconds", Counter, "Cumulative cpu time consumed by the container in core-seconds (integrated from metrics.k8s.io, or relayed from the kubelet).",
        [&["namespace", "pod", "container", "image"]]),
    /// `container_memory_working_set_bytes`.
    ContainerMemoryWorkingSetBytes => ("container_memory_working_set_bytes", Gauge, "Current working set of the container in bytes.",
        [&["namespace", "pod", "container", "image"]]),

    // The sender itself.
    /// `relay_sender_watch_restarts_total`.
    SenderWatchRestarts => ("relay_sender_watch_restarts", Counter, "Times a watch had to relist (after an error, a 410 Gone or a timeout).",
        [&["resource"]]),
    /// `relay_sender_api_errors_total`.
    SenderApiErrors => ("relay_sender_api_errors", Counter, "Errors from the Kubernetes API, by resource and kind.",
        [&["resource", "kind"]]),
    /// `relay_sender_queue_depth`.
    SenderQueueDepth => ("relay_sender_queue_depth", Gauge, "Changed samples waiting to be sent (coalesced per series) plus unacknowledged batches' samples.",
        []),
    /// `relay_sender_dropped_updates_total`.
    SenderDroppedUpdates => ("relay_sender_dropped_updates", Counter, "Samples dropped from the outgoing spool, by reason.",
        [&["reason"]]),
    /// `relay_sender_reconnects_total`.
    SenderReconnects => ("relay_sender_reconnects", Counter, "Connections to the receiver after the first.",
        []),
    /// `relay_sender_usage_available`.
    SenderUsageAvailable => ("relay_sender_usage_available", Gauge, "1 when the configured usage source (metrics.k8s.io or the kubelet) answers, else 0.",
        []),
    /// `relay_sender_series`.
    SenderSeries => ("relay_sender_series", Gauge, "Series the sender currently holds.",
        []),
    /// `relay_sender_spool_replayed_batches_total`.
    SenderSpoolReplayedBatches => ("relay_sender_spool_replayed_batches", Counter, "Unacknowledged batches sent again from the spool after a reconnect or a restart.",
        []),
    /// `relay_sender_spool_superseded_updates_total`.
    SenderSpoolSupersededUpdates => ("relay_sender_spool_superseded_updates", Counter, "Samples of unacknowledged batches made redundant by a snapshot (not lost: the snapshot carries every current value).",
        []),
    /// `relay_sender_connect_errors_total`.
    SenderConnectErrors => ("relay_sender_connect_errors", Counter, "Attempts to reach the receiver that failed before a session began, by kind (connect, tls_certificate, tls_refused, tls, unauthorized, ...).",
        [&["kind"]]),
    /// `relay_sender_api_up`.
    SenderApiUp => ("relay_sender_api_up", Gauge, "1 while the Kubernetes API server answers the sender's probe (GET /version every 10 s, within 5 s), else 0: while 0 the relayed state may be frozen.",
        []),
    /// `relay_sender_watch_up`.
    SenderWatchUp => ("relay_sender_watch_up", Gauge, "1 while the sender's watch of this resource is established, 0 from its failure until it restarts: while 0 the resource's relayed state is frozen.",
        [&["resource"]]),

    // Appended, never inserted above: a family's wire id is its position, and a sender that
    // continues a spooled epoch after an upgrade replays batches whose series name old ids.

    // Pods: what users query when something is wrong.
    /// `kube_pod_created`.
    PodCreated => ("kube_pod_created", Gauge, "Unix creation timestamp",
        [&POD]),
    /// `kube_pod_deletion_timestamp`, present only once the pod is being deleted.
    PodDeletionTimestamp => ("kube_pod_deletion_timestamp", Gauge, "Unix deletion timestamp",
        [&POD]),
    /// `kube_pod_status_scheduled`, one-hot over true/false/unknown.
    PodStatusScheduled => ("kube_pod_status_scheduled", Gauge, "Describes the status of the scheduling process for the pod.",
        [&POD, &["condition"]]),
    /// `kube_pod_status_reason`, one series per reason that applies.
    PodStatusReason => ("kube_pod_status_reason", Gauge, "The pod status reasons",
        [&POD, &["reason"]]),
    /// `kube_pod_container_status_last_terminated_reason`.
    PodContainerStatusLastTerminatedReason => ("kube_pod_container_status_last_terminated_reason", Gauge, "Describes the last reason the container was in terminated state.",
        [&CONTAINER, &["reason"]]),
    /// `kube_pod_container_status_last_terminated_exitcode`.
    PodContainerStatusLastTerminatedExitcode => ("kube_pod_container_status_last_terminated_exitcode", Gauge, "Describes the exit code for the last container in terminated state.",
        [&CONTAINER]),

    // Nodes.
    /// `kube_node_status_capacity`.
    NodeStatusCapacity => ("kube_node_status_capacity", Gauge, "The capacity for different resources of a node.",
        [&["node", "resource", "unit"]]),
    /// `kube_node_status_allocatable`.
    NodeStatusAllocatable => ("kube_node_status_allocatable", Gauge, "The allocatable for different resources of a node that are available for scheduling.",
        [&["node", "resource", "unit"]]),
    /// `kube_node_status_condition`, one-hot over true/false/unknown per condition.
    NodeStatusCondition => ("kube_node_status_condition", Gauge, "The condition of a cluster node.",
        [&["node", "condition", "status"]]),
    /// `machine_cpu_cores` (cAdvisor's name), from the node's CPU capacity.
    MachineCpuCores => ("machine_cpu_cores", Gauge, "Number of logical CPU cores of the node (its status.capacity cpu).",
        [&["node"]]),
    /// `machine_memory_bytes` (cAdvisor's name), from the node's memory capacity.
    MachineMemoryBytes => ("machine_memory_bytes", Gauge, "Amount of memory installed on the node (its status.capacity memory).",
        [&["node"]]),

    // Deployments and their ReplicaSets.
    /// `kube_deployment_spec_replicas`.
    DeploymentSpecReplicas => ("kube_deployment_spec_replicas", Gauge, "Number of desired pods for a deployment.",
        [&DEPLOYMENT]),
    /// `kube_deployment_status_replicas`.
    DeploymentStatusReplicas => ("kube_deployment_status_replicas", Gauge, "The number of replicas per deployment.",
        [&DEPLOYMENT]),
    /// `kube_deployment_status_replicas_ready`.
    DeploymentStatusReplicasReady => ("kube_deployment_status_replicas_ready", Gauge, "The number of ready replicas per deployment.",
        [&DEPLOYMENT]),
    /// `kube_deployment_status_replicas_available`.
    DeploymentStatusReplicasAvailable => ("kube_deployment_status_replicas_available", Gauge, "The number of available replicas per deployment.",
        [&DEPLOYMENT]),
    /// `kube_deployment_status_replicas_unavailable`.
    DeploymentStatusReplicasUnavailable => ("kube_deployment_status_replicas_unavailable", Gauge, "The number of unavailable replicas per deployment.",
        [&DEPLOYMENT]),
    /// `kube_deployment_status_replicas_updated`.
    DeploymentStatusReplicasUpdated => ("kube_deployment_status_replicas_updated", Gauge, "The number of updated replicas per deployment.",
        [&DEPLOYMENT]),
    /// `kube_deployment_status_observed_generation`.
    DeploymentStatusObservedGeneration => ("kube_deployment_status_observed_generation", Gauge, "The generation observed by the deployment controller.",
        [&DEPLOYMENT]),
    /// `kube_deployment_metadata_generation`.
    DeploymentMetadataGeneration => ("kube_deployment_metadata_generation", Gauge, "Sequence number representing a specific generation of the desired state.",
        [&DEPLOYMENT]),
    /// `kube_deployment_status_condition`, one-hot over true/false/unknown per condition.
    DeploymentStatusCondition => ("kube_deployment_status_condition", Gauge, "The current status conditions of a deployment.",
        [&DEPLOYMENT, &["reason", "condition", "status"]]),
    /// `kube_replicaset_owner`.
    ReplicaSetOwner => ("kube_replicaset_owner", Gauge, "Information about the ReplicaSet's owner.",
        [&["namespace", "replicaset", "owner_kind", "owner_name", "owner_is_controller"]]),

    /// `kube_node_spec_unschedulable` (cordoned).
    NodeSpecUnschedulable => ("kube_node_spec_unschedulable", Gauge, "Whether a node can schedule new pods.",
        [&["node"]]),
    /// `kube_node_spec_taint`, one series per taint.
    NodeSpecTaint => ("kube_node_spec_taint", Gauge, "The taint of a cluster node.",
        [&["node", "key", "value", "effect"]]),

    // Namespaces.
    /// `kube_namespace_created`.
    NamespaceCreated => ("kube_namespace_created", Gauge, "Unix creation timestamp",
        [&["namespace"]]),

    // The sender's link.
    /// `relay_sender_spool_offline_batches_total`.
    SenderSpoolOfflineBatches => ("relay_sender_spool_offline_batches", Counter, "Delta batches taken into the spool while no receiver was connected, each with the time of its changes, for replay.",
        []),
    /// `relay_sender_spool_bases_total`.
    SenderSpoolBases => ("relay_sender_spool_bases", Counter, "Bases sent: a receiver without this sender's series table got the definitions the spool needs, then the spool, instead of losing it to a snapshot.",
        []),
    /// `relay_sender_target`.
    SenderTarget => ("relay_sender_target", Gauge, "1 for the receiver of --target the sender uses now (or tries to), 0 for the others.",
        [&["target"]]),
    /// `relay_sender_failovers_total`.
    SenderFailovers => ("relay_sender_failovers", Counter, "Moves to the next receiver of --target after the current one failed or refused the sender.",
        []),

    // Scaling actions, continued.
    /// `kube_horizontalpodautoscaler_last_scaling_event_replicas`: the latest action's new
    /// size, its reason a label (one series per HPA and direction).
    HpaLastScalingEventReplicas => ("kube_horizontalpodautoscaler_last_scaling_event_replicas", Gauge, "New size set by the latest scaling action of this autoscaler in this direction (the N of its event's \"New size: N\"), labelled with the reason the HPA controller gave.",
        [&HPA, &["direction", "reason"]]),
}

impl Family {
    /// The family's wire id (its position in [`Family::ALL`]).
    pub fn id(self) -> FamilyId {
        self as u8 as FamilyId
    }

    /// The family with this wire id, if any.
    pub fn from_id(id: FamilyId) -> Option<Family> {
        usize::try_from(id)
            .ok()
            .and_then(|i| Family::ALL.get(i))
            .copied()
    }

    /// The wire definition of this family.
    pub fn def(self) -> FamilyDef {
        FamilyDef {
            id: self.id(),
            name: self.name().to_owned(),
            help: self.help().to_owned(),
            kind: self.kind(),
        }
    }

    /// The name Prometheus exposes samples under (`_total` added to counters).
    pub fn sample_name(self) -> String {
        match self.kind() {
            MetricKind::Counter => format!("{}_total", self.name()),
            MetricKind::Gauge => self.name().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_valid_on_the_wire() {
        for (i, family) in Family::ALL.iter().enumerate() {
            assert_eq!(family.id() as usize, i);
            assert_eq!(Family::from_id(family.id()), Some(*family));
            family.def().validate().expect("valid family");
            for name in family.label_names() {
                kube_relay_proto::metric::validate_label_name(name).expect("valid label");
                assert_ne!(*name, "cluster", "{family:?} uses the reserved label");
            }
        }
        assert_eq!(Family::from_id(Family::ALL.len() as FamilyId), None);
    }

    #[test]
    fn label_groups_flatten_in_order() {
        assert_eq!(
            Family::PodStatusPhase.label_names(),
            ["namespace", "pod", "uid", "phase"]
        );
        assert_eq!(
            Family::PodContainerResourceRequests.label_names(),
            [
                "namespace",
                "pod",
                "uid",
                "container",
                "node",
                "resource",
                "unit"
            ]
        );
        assert_eq!(
            Family::HpaSpecMinReplicas.label_names(),
            ["namespace", "horizontalpodautoscaler"]
        );
        assert!(Family::SenderSeries.label_names().is_empty());
    }

    #[test]
    fn names_are_unique_and_counters_expose_total() {
        let mut names: Vec<_> = Family::ALL.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Family::ALL.len());
        assert_eq!(
            Family::PodContainerStatusRestarts.sample_name(),
            "kube_pod_container_status_restarts_total"
        );
        assert_eq!(
            Family::ContainerCpuUsageSeconds.sample_name(),
            "container_cpu_usage_seconds_total"
        );
        assert_eq!(Family::PodInfo.sample_name(), "kube_pod_info");
    }
}
