//! Pod → series: info, phase, readiness, scheduling, status reason, QoS class, owners,
//! creation and deletion times, containers (state, reasons, last termination) and their
//! resources.
//!
//! Follows kube-state-metrics' pod metrics: one-hot enums (every phase present, the actual
//! one at 1), empty owner labels for an unowned pod, per-container series from
//! `status.containerStatuses`, requests/limits from the spec with kube-state-metrics'
//! resource names and units ([`resource_label`]), and series that exist only while their
//! state does (a waiting reason while waiting, a last termination once there was one, a
//! deletion timestamp once deletion began, a status reason when one applies).

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::family::Family;
use crate::quantity::parse_quantity;
use crate::series::{ObjectKey, ObjectKind, SeriesSet};
use crate::translate::{resource_label, unix_seconds};

/// Pod phases, in kube-state-metrics' order.
pub const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];
/// QoS classes.
pub const QOS_CLASSES: [&str; 3] = ["BestEffort", "Burstable", "Guaranteed"];
/// Condition statuses as label values.
pub const CONDITION_STATUSES: [&str; 3] = ["true", "false", "unknown"];
/// The `kube_pod_status_reason` values kube-state-metrics names; any other `status.reason`
/// counts as `Other`.
pub const STATUS_REASONS: [&str; 8] = [
    "Evicted",
    "NodeAffinity",
    "NodeLost",
    "PreemptionByScheduler",
    "SchedulingGated",
    "Shutdown",
    "TerminationByKubelet",
    "UnexpectedAdmissionError",
];

/// What kube-state-metrics writes for a missing owner (empty: Prometheus treats the label
/// as absent, and the kubernetes-mixin selects bare pods with `owner_kind=""`).
const NONE: &str = "";

/// The store key of a pod, or `None` when it has no name.
pub fn pod_key(pod: &Pod) -> Option<ObjectKey> {
    let name = pod.metadata.name.as_deref()?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    Some(ObjectKey::new(ObjectKind::Pod, namespace, name))
}

fn bool_label(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// A condition status (`True`, `False`, anything else) as its label value.
pub fn condition_label(status: &str) -> &'static str {
    match status {
        "True" => "true",
        "False" => "false",
        _ => "unknown",
    }
}

/// Every series of a pod. A pod without a name yields nothing.
pub fn pod_series(pod: &Pod) -> SeriesSet<'_> {
    let mut set = SeriesSet::new();
    let Some(name) = pod.metadata.name.as_deref() else {
        return set;
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let prefix: [Cow<'_, str>; 3] = [namespace.into(), name.into(), uid.into()];
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let node = spec
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default();

    // kube_pod_info
    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    let controller = owners.iter().find(|o| o.controller == Some(true));
    set.push(
        Family::PodInfo,
        prefix.iter().cloned().chain(
            [
                status
                    .and_then(|s| s.host_ip.as_deref())
                    .unwrap_or_default(),
                status.and_then(|s| s.pod_ip.as_deref()).unwrap_or_default(),
                node,
                controller.map_or(NONE, |o| o.kind.as_str()),
                controller.map_or(NONE, |o| o.name.as_str()),
                spec.and_then(|s| s.priority_class_name.as_deref())
                    .unwrap_or_default(),
                bool_label(spec.and_then(|s| s.host_network).unwrap_or(false)),
            ]
            .map(Cow::Borrowed),
        ),
        1.0,
    );

    // kube_pod_status_phase, _ready, _qos_class
    if let Some(phase) = status.and_then(|s| s.phase.as_deref()) {
        set.push_one_hot(Family::PodStatusPhase, &prefix, &PHASES, phase);
    }
    let ready = status
        .and_then(|s| s.conditions.as_deref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    if let Some(ready) = ready {
        set.push_one_hot(
            Family::PodStatusReady,
            &prefix,
            &CONDITION_STATUSES,
            condition_label(&ready.status),
        );
    }
    if let Some(qos) = status.and_then(|s| s.qos_class.as_deref()) {
        set.push_one_hot(Family::PodStatusQosClass, &prefix, &QOS_CLASSES, qos);
    }
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    if let Some(scheduled) = conditions.iter().find(|c| c.type_ == "PodScheduled") {
        set.push_one_hot(
            Family::PodStatusScheduled,
            &prefix,
            &CONDITION_STATUSES,
            condition_label(&scheduled.status),
        );
    }
    for reason in status_reasons(pod) {
        set.push(
            Family::PodStatusReason,
            prefix.iter().cloned().chain([Cow::Borrowed(reason)]),
            1.0,
        );
    }

    // kube_pod_created, kube_pod_deletion_timestamp
    for (family, time) in [
        (Family::PodCreated, &pod.metadata.creation_timestamp),
        (
            Family::PodDeletionTimestamp,
            &pod.metadata.deletion_timestamp,
        ),
    ] {
        if let Some(seconds) = time.as_ref().map(unix_seconds) {
            set.push(family, prefix.iter().cloned(), seconds);
        }
    }

    // kube_pod_owner
    if owners.is_empty() {
        set.push(
            Family::PodOwner,
            prefix
                .iter()
                .cloned()
                .chain([NONE, NONE, NONE].map(Cow::Borrowed)),
            1.0,
        );
    }
    for owner in owners {
        set.push(
            Family::PodOwner,
            prefix.iter().cloned().chain([
                Cow::Borrowed(owner.kind.as_str()),
                Cow::Borrowed(owner.name.as_str()),
                Cow::Borrowed(bool_label(owner.controller == Some(true))),
            ]),
            1.0,
        );
    }

    // Container statuses.
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    for cs in status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
    {
        let image_spec = containers
            .iter()
            .find(|c| c.name == cs.name)
            .and_then(|c| c.image.as_deref())
            .unwrap_or_default();
        container_status_series(&mut set, &prefix, cs, image_spec);
    }

    // Requests and limits.
    for c in containers {
        let Some(resources) = c.resources.as_ref() else {
            continue;
        };
        for (family, amounts) in [
            (Family::PodContainerResourceRequests, &resources.requests),
            (Family::PodContainerResourceLimits, &resources.limits),
        ] {
            for (resource, quantity) in amounts.iter().flatten() {
                let Some(amount) = parse_quantity(&quantity.0) else {
                    continue;
                };
                let Some((resource, unit)) = resource_label(resource, false) else {
                    continue;
                };
                set.push(
                    family,
                    prefix.iter().cloned().chain([
                        Cow::Borrowed(c.name.as_str()),
                        Cow::Borrowed(node),
                        resource,
                        Cow::Borrowed(unit),
                    ]),
                    amount,
                );
            }
        }
    }
    set
}

fn container_status_series<'a>(
    set: &mut SeriesSet<'a>,
    prefix: &[Cow<'a, str>; 3],
    cs: &'a ContainerStatus,
    image_spec: &'a str,
) {
    let with_container = || {
        prefix
            .iter()
            .cloned()
            .chain([Cow::Borrowed(cs.name.as_str())])
    };
    set.push(
        Family::PodContainerInfo,
        with_container().chain(
            [
                image_spec,
                cs.image.as_str(),
                cs.image_id.as_str(),
                cs.container_id.as_deref().unwrap_or_default(),
            ]
            .map(Cow::Borrowed),
        ),
        1.0,
    );
    set.push(
        Family::PodContainerStatusRestarts,
        with_container(),
        f64::from(cs.restart_count),
    );
    let state = cs.state.as_ref();
    let waiting = state.and_then(|s| s.waiting.as_ref());
    for (family, on) in [
        (Family::PodContainerStatusReady, cs.ready),
        (
            Family::PodContainerStatusRunning,
            state.is_some_and(|s| s.running.is_some()),
        ),
        (
            Family::PodContainerStatusTerminated,
            state.is_some_and(|s| s.terminated.is_some()),
        ),
        (Family::PodContainerStatusWaiting, waiting.is_some()),
    ] {
        set.push(family, with_container(), f64::from(u8::from(on)));
    }
    if let Some(reason) = waiting
        .and_then(|w| w.reason.as_deref())
        .filter(|r| !r.is_empty())
    {
        set.push(
            Family::PodContainerStatusWaitingReason,
            with_container().chain([Cow::Borrowed(reason)]),
            1.0,
        );
    }
    // The termination before the current state: a crash loop's `Error` or `OOMKilled`.
    if let Some(last) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
        set.push(
            Family::PodContainerStatusLastTerminatedReason,
            with_container().chain([Cow::Borrowed(last.reason.as_deref().unwrap_or_default())]),
            1.0,
        );
        set.push(
            Family::PodContainerStatusLastTerminatedExitcode,
            with_container(),
            f64::from(last.exit_code),
        );
    }
}

/// The `kube_pod_status_reason` values that apply to a pod, as kube-state-metrics finds
/// them: each known reason named by `status.reason`, a condition's reason or a terminated
/// container's reason, then `Other` for an unknown `status.reason`.
fn status_reasons(pod: &Pod) -> impl Iterator<Item = &'static str> + '_ {
    let status = pod.status.as_ref();
    let applies = move |reason: &str| {
        let Some(status) = status else { return false };
        status.reason.as_deref() == Some(reason)
            || status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.reason.as_deref() == Some(reason))
            || status.container_statuses.iter().flatten().any(|cs| {
                cs.state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.reason.as_deref() == Some(reason))
            })
    };
    let other = status
        .and_then(|s| s.reason.as_deref())
        .is_some_and(|r| !r.is_empty() && !STATUS_REASONS.contains(&r));
    STATUS_REASONS
        .into_iter()
        .filter(move |r| applies(r))
        .chain(other.then_some("Other"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{container, pod};

    #[test]
    fn a_bare_pending_pod() {
        let p = pod("web").phase("Pending").build();
        assert_eq!(
            pod_series(&p).render(),
            [
                r#"kube_pod_info{namespace="default",pod="web",uid="uid-web",host_ip="",pod_ip="",node="",created_by_kind="",created_by_name="",priority_class="",host_network="false"} 1"#,
                r#"kube_pod_owner{namespace="default",pod="web",uid="uid-web",owner_kind="",owner_name="",owner_is_controller=""} 1"#,
                r#"kube_pod_status_phase{namespace="default",pod="web",uid="uid-web",phase="Failed"} 0"#,
                r#"kube_pod_status_phase{namespace="default",pod="web",uid="uid-web",phase="Pending"} 1"#,
                r#"kube_pod_status_phase{namespace="default",pod="web",uid="uid-web",phase="Running"} 0"#,
                r#"kube_pod_status_phase{namespace="default",pod="web",uid="uid-web",phase="Succeeded"} 0"#,
                r#"kube_pod_status_phase{namespace="default",pod="web",uid="uid-web",phase="Unknown"} 0"#,
            ]
        );
    }

    #[test]
    fn a_running_pod_with_an_owner_and_a_container() {
        let p = pod("web-1")
            .phase("Running")
            .scheduled("node-a", "10.0.0.1", "10.244.0.7")
            .ready("True")
            .qos("Burstable")
            .owner("ReplicaSet", "web-5d4f", true)
            .priority("high", false)
            .container(
                container("app", "nginx:1.25")
                    .requests(&[("cpu", "250m"), ("memory", "64Mi")])
                    .limits(&[("memory", "128Mi"), ("nvidia.com/gpu", "1")])
                    .running()
                    .ready(true)
                    .restarts(2),
            )
            .build();
        let lines = pod_series(&p).render();
        let expected = [
            r#"kube_pod_container_info{namespace="default",pod="web-1",uid="uid-web-1",container="app",image_spec="nginx:1.25",image="docker.io/library/nginx:1.25",image_id="docker.io/library/nginx:1.25@sha256:abc",container_id="containerd://app"} 1"#,
            r#"kube_pod_container_resource_limits{namespace="default",pod="web-1",uid="uid-web-1",container="app",node="node-a",resource="memory",unit="byte"} 134217728"#,
            r#"kube_pod_container_resource_limits{namespace="default",pod="web-1",uid="uid-web-1",container="app",node="node-a",resource="nvidia_com_gpu",unit="integer"} 1"#,
            r#"kube_pod_container_resource_requests{namespace="default",pod="web-1",uid="uid-web-1",container="app",node="node-a",resource="cpu",unit="core"} 0.25"#,
            r#"kube_pod_container_resource_requests{namespace="default",pod="web-1",uid="uid-web-1",container="app",node="node-a",resource="memory",unit="byte"} 67108864"#,
            r#"kube_pod_container_status_ready{namespace="default",pod="web-1",uid="uid-web-1",container="app"} 1"#,
            r#"kube_pod_container_status_restarts_total{namespace="default",pod="web-1",uid="uid-web-1",container="app"} 2"#,
            r#"kube_pod_container_status_running{namespace="default",pod="web-1",uid="uid-web-1",container="app"} 1"#,
            r#"kube_pod_container_status_terminated{namespace="default",pod="web-1",uid="uid-web-1",container="app"} 0"#,
            r#"kube_pod_container_status_waiting{namespace="default",pod="web-1",uid="uid-web-1",container="app"} 0"#,
            r#"kube_pod_info{namespace="default",pod="web-1",uid="uid-web-1",host_ip="10.0.0.1",pod_ip="10.244.0.7",node="node-a",created_by_kind="ReplicaSet",created_by_name="web-5d4f",priority_class="high",host_network="false"} 1"#,
            r#"kube_pod_owner{namespace="default",pod="web-1",uid="uid-web-1",owner_kind="ReplicaSet",owner_name="web-5d4f",owner_is_controller="true"} 1"#,
            r#"kube_pod_status_phase{namespace="default",pod="web-1",uid="uid-web-1",phase="Failed"} 0"#,
            r#"kube_pod_status_phase{namespace="default",pod="web-1",uid="uid-web-1",phase="Pending"} 0"#,
            r#"kube_pod_status_phase{namespace="default",pod="web-1",uid="uid-web-1",phase="Running"} 1"#,
            r#"kube_pod_status_phase{namespace="default",pod="web-1",uid="uid-web-1",phase="Succeeded"} 0"#,
            r#"kube_pod_status_phase{namespace="default",pod="web-1",uid="uid-web-1",phase="Unknown"} 0"#,
            r#"kube_pod_status_qos_class{namespace="default",pod="web-1",uid="uid-web-1",qos_class="BestEffort"} 0"#,
            r#"kube_pod_status_qos_class{namespace="default",pod="web-1",uid="uid-web-1",qos_class="Burstable"} 1"#,
            r#"kube_pod_status_qos_class{namespace="default",pod="web-1",uid="uid-web-1",qos_class="Guaranteed"} 0"#,
            r#"kube_pod_status_ready{namespace="default",pod="web-1",uid="uid-web-1",condition="false"} 0"#,
            r#"kube_pod_status_ready{namespace="default",pod="web-1",uid="uid-web-1",condition="true"} 1"#,
            r#"kube_pod_status_ready{namespace="default",pod="web-1",uid="uid-web-1",condition="unknown"} 0"#,
        ];
        assert_eq!(lines, expected);
    }

    #[test]
    fn a_waiting_container_reports_its_reason_only_while_waiting() {
        let waiting = pod("crash")
            .phase("Running")
            .container(container("app", "app:1").waiting("CrashLoopBackOff"))
            .build();
        let lines = pod_series(&waiting).render();
        assert!(lines.contains(
            &r#"kube_pod_container_status_waiting_reason{namespace="default",pod="crash",uid="uid-crash",container="app",reason="CrashLoopBackOff"} 1"#
                .to_owned()
        ));
        assert!(lines.contains(
            &r#"kube_pod_container_status_waiting{namespace="default",pod="crash",uid="uid-crash",container="app"} 1"#
                .to_owned()
        ));
        let terminated = pod("crash")
            .phase("Running")
            .container(container("app", "app:1").terminated("Error"))
            .build();
        let lines = pod_series(&terminated).render();
        assert!(!lines.iter().any(|l| l.contains("waiting_reason")));
        assert!(lines.contains(
            &r#"kube_pod_container_status_terminated{namespace="default",pod="crash",uid="uid-crash",container="app"} 1"#
                .to_owned()
        ));
    }

    #[test]
    fn non_controller_owners_are_listed_too() {
        let p = pod("job-x")
            .owner("Job", "nightly", false)
            .owner("Workflow", "wf", false)
            .build();
        let lines = pod_series(&p).render();
        let owners: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("kube_pod_owner"))
            .collect();
        assert_eq!(owners.len(), 2);
        assert!(
            owners[0]
                .contains(r#"owner_kind="Job",owner_name="nightly",owner_is_controller="false""#)
        );
        let info = lines
            .iter()
            .find(|l| l.starts_with("kube_pod_info"))
            .expect("info");
        assert!(info.contains(r#"created_by_kind="",created_by_name="""#));
    }

    #[test]
    fn unparseable_quantities_and_nameless_pods_are_skipped() {
        let p = pod("odd")
            .container(container("app", "app:1").requests(&[("cpu", "lots")]))
            .build();
        assert!(
            !pod_series(&p)
                .render()
                .iter()
                .any(|l| l.contains("resource_requests"))
        );
        let mut nameless = pod("x").build();
        nameless.metadata.name = None;
        assert!(pod_series(&nameless).is_empty());
        assert_eq!(pod_key(&nameless), None);
    }

    fn lines_of(p: &Pod, family: &str) -> Vec<String> {
        pod_series(p)
            .render()
            .into_iter()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .collect()
    }

    #[test]
    fn a_crash_looping_container_reports_its_last_termination() {
        let p = pod("oom")
            .phase("Running")
            .container(
                container("app", "app:1")
                    .waiting("CrashLoopBackOff")
                    .last_terminated("OOMKilled", 137)
                    .restarts(4),
            )
            .container(container("sidecar", "proxy:1").running())
            .build();
        assert_eq!(
            lines_of(&p, "kube_pod_container_status_last_terminated_reason"),
            [
                r#"kube_pod_container_status_last_terminated_reason{namespace="default",pod="oom",uid="uid-oom",container="app",reason="OOMKilled"} 1"#
            ]
        );
        assert_eq!(
            lines_of(&p, "kube_pod_container_status_last_terminated_exitcode"),
            [
                r#"kube_pod_container_status_last_terminated_exitcode{namespace="default",pod="oom",uid="uid-oom",container="app"} 137"#
            ]
        );
        assert_eq!(
            lines_of(&p, "kube_pod_container_status_waiting_reason"),
            [
                r#"kube_pod_container_status_waiting_reason{namespace="default",pod="oom",uid="uid-oom",container="app",reason="CrashLoopBackOff"} 1"#
            ]
        );
    }

    #[test]
    fn image_pull_failures_are_waiting_reasons() {
        for reason in ["ErrImagePull", "ImagePullBackOff", "ContainerCreating"] {
            let p = pod("pull")
                .phase("Pending")
                .container(container("app", "app:missing").waiting(reason))
                .build();
            assert_eq!(
                lines_of(&p, "kube_pod_container_status_waiting_reason"),
                [format!(
                    r#"kube_pod_container_status_waiting_reason{{namespace="default",pod="pull",uid="uid-pull",container="app",reason="{reason}"}} 1"#
                )]
            );
        }
    }

    #[test]
    fn scheduling_is_one_hot_and_absent_before_the_scheduler_saw_the_pod() {
        let unschedulable = pod("big")
            .phase("Pending")
            .condition("PodScheduled", "False", Some("Unschedulable"))
            .build();
        assert_eq!(
            lines_of(&unschedulable, "kube_pod_status_scheduled"),
            [
                r#"kube_pod_status_scheduled{namespace="default",pod="big",uid="uid-big",condition="false"} 1"#,
                r#"kube_pod_status_scheduled{namespace="default",pod="big",uid="uid-big",condition="true"} 0"#,
                r#"kube_pod_status_scheduled{namespace="default",pod="big",uid="uid-big",condition="unknown"} 0"#,
            ]
        );
        assert!(
            lines_of(
                &pod("new").phase("Pending").build(),
                "kube_pod_status_scheduled"
            )
            .is_empty()
        );
    }

    #[test]
    fn status_reasons_come_from_status_conditions_and_terminations() {
        let reasons = |p: &Pod| -> Vec<String> {
            lines_of(p, "kube_pod_status_reason")
                .iter()
                .map(|l| {
                    l.split("reason=\"")
                        .nth(1)
                        .unwrap_or_default()
                        .split('"')
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        };
        let evicted = pod("ev").phase("Failed").reason("Evicted").build();
        assert_eq!(
            lines_of(&evicted, "kube_pod_status_reason"),
            [
                r#"kube_pod_status_reason{namespace="default",pod="ev",uid="uid-ev",reason="Evicted"} 1"#
            ]
        );
        let by_condition = pod("c")
            .condition("DisruptionTarget", "True", Some("TerminationByKubelet"))
            .build();
        assert_eq!(reasons(&by_condition), ["TerminationByKubelet"]);
        let by_container = pod("s")
            .container(container("app", "app:1").terminated("Shutdown"))
            .build();
        assert_eq!(reasons(&by_container), ["Shutdown"]);
        let unknown = pod("u").reason("OutOfcpu").build();
        assert_eq!(reasons(&unknown), ["Other"]);
        assert!(reasons(&pod("fine").phase("Running").build()).is_empty());
    }

    #[test]
    fn creation_and_deletion_times_are_unix_seconds() {
        let p = pod("old")
            .created(1_700_000_000)
            .deleting(1_700_000_300)
            .build();
        assert_eq!(
            lines_of(&p, "kube_pod_created"),
            [r#"kube_pod_created{namespace="default",pod="old",uid="uid-old"} 1700000000"#]
        );
        assert_eq!(
            lines_of(&p, "kube_pod_deletion_timestamp"),
            [
                r#"kube_pod_deletion_timestamp{namespace="default",pod="old",uid="uid-old"} 1700000300"#
            ]
        );
        let alive = pod("alive").created(1_700_000_000).build();
        assert!(lines_of(&alive, "kube_pod_deletion_timestamp").is_empty());
    }

    #[test]
    fn container_resources_kube_state_metrics_ignores_are_skipped() {
        let p = pod("odd")
            .container(container("app", "app:1").requests(&[("pods", "1"), ("cpu", "1")]))
            .build();
        assert_eq!(
            lines_of(&p, "kube_pod_container_resource_requests").len(),
            1,
            "only cpu"
        );
    }
}
