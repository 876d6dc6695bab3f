//! Pod → series: info, phase, readiness, QoS class, owners, containers and their resources.
//!
//! Follows kube-state-metrics' pod metrics: one-hot enums (every phase present, the actual
//! one at 1), `<none>` for an unowned pod, per-container series from
//! `status.containerStatuses`, and requests/limits from the spec with kube-state-metrics'
//! resource names and units (`cpu`/`core`, `memory`/`byte`, extended resources sanitised,
//! `integer`).

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::family::Family;
use crate::quantity::parse_quantity;
use crate::series::{ObjectKey, ObjectKind, SeriesSet};

/// Pod phases, in kube-state-metrics' order.
pub const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];
/// QoS classes.
pub const QOS_CLASSES: [&str; 3] = ["BestEffort", "Burstable", "Guaranteed"];
/// Condition statuses as label values.
pub const CONDITION_STATUSES: [&str; 3] = ["true", "false", "unknown"];

/// Placeholder kube-state-metrics uses for a missing owner.
const NONE: &str = "<none>";

/// The store key of a pod, or `None` when it has no name.
pub fn pod_key(pod: &Pod) -> Option<ObjectKey> {
    let name = pod.metadata.name.as_deref()?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    Some(ObjectKey::new(ObjectKind::Pod, namespace, name))
}

fn bool_label(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

fn condition_label(status: &str) -> &'static str {
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
                let (resource, unit) = resource_label(resource);
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
}

/// kube-state-metrics' `resource` and `unit` labels for a resource name.
fn resource_label(resource: &str) -> (Cow<'_, str>, &'static str) {
    match resource {
        "cpu" => (Cow::Borrowed("cpu"), "core"),
        "memory" => (Cow::Borrowed("memory"), "byte"),
        "storage" | "ephemeral-storage" => (sanitize(resource), "byte"),
        r if r.starts_with("hugepages-") || r.starts_with("attachable-volumes-") => {
            (sanitize(r), "byte")
        }
        r => (sanitize(r), "integer"),
    }
}

/// Replaces characters invalid in a Prometheus label name with `_` (kube-state-metrics'
/// `SanitizeLabelName`, applied to resource names such as `nvidia.com/gpu`).
fn sanitize(s: &str) -> Cow<'_, str> {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect(),
        )
    }
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
                r#"kube_pod_info{namespace="default",pod="web",uid="uid-web",host_ip="",pod_ip="",node="",created_by_kind="<none>",created_by_name="<none>",priority_class="",host_network="false"} 1"#,
                r#"kube_pod_owner{namespace="default",pod="web",uid="uid-web",owner_kind="<none>",owner_name="<none>",owner_is_controller="<none>"} 1"#,
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
        assert!(info.contains(r#"created_by_kind="<none>",created_by_name="<none>""#));
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

    #[test]
    fn resource_labels_follow_kube_state_metrics() {
        assert_eq!(resource_label("cpu"), (Cow::Borrowed("cpu"), "core"));
        assert_eq!(
            resource_label("ephemeral-storage"),
            (Cow::Owned("ephemeral_storage".to_owned()), "byte")
        );
        assert_eq!(
            resource_label("hugepages-2Mi"),
            (Cow::Owned("hugepages_2Mi".to_owned()), "byte")
        );
        assert_eq!(
            resource_label("example.com/foo"),
            (Cow::Owned("example_com_foo".to_owned()), "integer")
        );
    }
}
