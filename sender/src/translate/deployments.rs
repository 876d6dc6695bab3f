//! Deployment → replica counts (spec and status), generations and conditions; ReplicaSet →
//! `kube_replicaset_owner`, which dashboards and the kubernetes-mixin join pods through to
//! reach their Deployment.
//!
//! As kube-state-metrics: `spec.replicas` only when set (the API server defaults it, so an
//! object without it is one that never reached a server); status counts default to 0;
//! condition reasons outside kube-state-metrics' list become `unknown` (a bounded label); a
//! ReplicaSet without owners has one series with empty owner labels.

use std::borrow::Cow;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};

use crate::family::Family;
use crate::series::{ObjectKey, ObjectKind, SeriesSet};
use crate::translate::pods::{CONDITION_STATUSES, condition_label};

/// Deployment condition reasons kept as they are; others are reported as `unknown`.
pub const CONDITION_REASONS: [&str; 11] = [
    "ReplicaSetUpdated",
    "ReplicaSetCreateError",
    "NewReplicaSetCreated",
    "FoundNewReplicaSet",
    "NewReplicaSetAvailable",
    "ProgressDeadlineExceeded",
    "DeploymentPaused",
    "DeploymentResumed",
    "MinimumReplicasAvailable",
    "MinimumReplicasUnavailable",
    "",
];

/// The store key of a Deployment, or `None` when it has no name.
pub fn deployment_key(d: &Deployment) -> Option<ObjectKey> {
    let name = d.metadata.name.as_deref()?;
    let namespace = d.metadata.namespace.as_deref().unwrap_or_default();
    Some(ObjectKey::new(ObjectKind::Deployment, namespace, name))
}

/// Every series of a Deployment. A Deployment without a name yields nothing.
pub fn deployment_series(d: &Deployment) -> SeriesSet<'_> {
    let mut set = SeriesSet::new();
    let Some(name) = d.metadata.name.as_deref() else {
        return set;
    };
    let namespace = d.metadata.namespace.as_deref().unwrap_or_default();
    let prefix: [Cow<'_, str>; 2] = [namespace.into(), name.into()];

    if let Some(replicas) = d.spec.as_ref().and_then(|s| s.replicas) {
        set.push(
            Family::DeploymentSpecReplicas,
            prefix.iter().cloned(),
            f64::from(replicas),
        );
    }
    if let Some(generation) = d.metadata.generation {
        set.push(
            Family::DeploymentMetadataGeneration,
            prefix.iter().cloned(),
            generation as f64,
        );
    }
    let status = d.status.as_ref();
    let count = |field: fn(&DeploymentStatus) -> Option<i32>| {
        f64::from(status.and_then(field).unwrap_or(0))
    };
    for (family, value) in [
        (Family::DeploymentStatusReplicas, count(|s| s.replicas)),
        (
            Family::DeploymentStatusReplicasReady,
            count(|s| s.ready_replicas),
        ),
        (
            Family::DeploymentStatusReplicasAvailable,
            count(|s| s.available_replicas),
        ),
        (
            Family::DeploymentStatusReplicasUnavailable,
            count(|s| s.unavailable_replicas),
        ),
        (
            Family::DeploymentStatusReplicasUpdated,
            count(|s| s.updated_replicas),
        ),
    ] {
        set.push(family, prefix.iter().cloned(), value);
    }
    set.push(
        Family::DeploymentStatusObservedGeneration,
        prefix.iter().cloned(),
        status.and_then(|s| s.observed_generation).unwrap_or(0) as f64,
    );
    for condition in status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
    {
        let reason = condition.reason.as_deref().unwrap_or_default();
        let reason = CONDITION_REASONS
            .iter()
            .find(|r| **r == reason)
            .copied()
            .unwrap_or("unknown");
        let prefix = [
            prefix[0].clone(),
            prefix[1].clone(),
            Cow::Borrowed(reason),
            Cow::Borrowed(condition.type_.as_str()),
        ];
        set.push_one_hot(
            Family::DeploymentStatusCondition,
            &prefix,
            &CONDITION_STATUSES,
            condition_label(&condition.status),
        );
    }
    set
}

/// The store key of a ReplicaSet, or `None` when it has no name.
pub fn replicaset_key(rs: &ReplicaSet) -> Option<ObjectKey> {
    let name = rs.metadata.name.as_deref()?;
    let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
    Some(ObjectKey::new(ObjectKind::ReplicaSet, namespace, name))
}

/// The series of a ReplicaSet: one `kube_replicaset_owner` per owner reference, or one with
/// empty owner labels. A ReplicaSet without a name yields nothing.
pub fn replicaset_series(rs: &ReplicaSet) -> SeriesSet<'_> {
    let mut set = SeriesSet::new();
    let Some(name) = rs.metadata.name.as_deref() else {
        return set;
    };
    let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
    let owners = rs.metadata.owner_references.as_deref().unwrap_or_default();
    if owners.is_empty() {
        set.push(Family::ReplicaSetOwner, [namespace, name, "", "", ""], 1.0);
    }
    for owner in owners {
        let controller = if owner.controller == Some(true) {
            "true"
        } else {
            "false"
        };
        set.push(
            Family::ReplicaSetOwner,
            [
                namespace,
                name,
                owner.kind.as_str(),
                owner.name.as_str(),
                controller,
            ],
            1.0,
        );
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{deployment, replicaset};

    #[test]
    fn a_rolling_deployment_reports_replicas_generations_and_conditions() {
        let d = deployment("web")
            .replicas(3)
            .generation(2, Some(1))
            .counts(4, 2, 2, 2, 1)
            .condition("Available", "False", "MinimumReplicasUnavailable")
            .condition("Progressing", "True", "SomethingNew")
            .build();
        assert_eq!(
            deployment_series(&d).render(),
            [
                r#"kube_deployment_metadata_generation{namespace="default",deployment="web"} 2"#,
                r#"kube_deployment_spec_replicas{namespace="default",deployment="web"} 3"#,
                r#"kube_deployment_status_condition{namespace="default",deployment="web",reason="MinimumReplicasUnavailable",condition="Available",status="false"} 1"#,
                r#"kube_deployment_status_condition{namespace="default",deployment="web",reason="MinimumReplicasUnavailable",condition="Available",status="true"} 0"#,
                r#"kube_deployment_status_condition{namespace="default",deployment="web",reason="MinimumReplicasUnavailable",condition="Available",status="unknown"} 0"#,
                r#"kube_deployment_status_condition{namespace="default",deployment="web",reason="unknown",condition="Progressing",status="false"} 0"#,
                r#"kube_deployment_status_condition{namespace="default",deployment="web",reason="unknown",condition="Progressing",status="true"} 1"#,
                r#"kube_deployment_status_condition{namespace="default",deployment="web",reason="unknown",condition="Progressing",status="unknown"} 0"#,
                r#"kube_deployment_status_observed_generation{namespace="default",deployment="web"} 1"#,
                r#"kube_deployment_status_replicas_available{namespace="default",deployment="web"} 2"#,
                r#"kube_deployment_status_replicas_ready{namespace="default",deployment="web"} 2"#,
                r#"kube_deployment_status_replicas_unavailable{namespace="default",deployment="web"} 1"#,
                r#"kube_deployment_status_replicas_updated{namespace="default",deployment="web"} 2"#,
                r#"kube_deployment_status_replicas{namespace="default",deployment="web"} 4"#,
            ]
        );
        assert_eq!(
            deployment_key(&d),
            Some(ObjectKey::new(ObjectKind::Deployment, "default", "web"))
        );
    }

    #[test]
    fn a_deployment_without_status_or_replicas_counts_zero_and_omits_the_spec() {
        let mut d = deployment("fresh").build();
        d.spec = None;
        d.status = None;
        d.metadata.generation = None;
        let lines = deployment_series(&d).render();
        assert!(!lines.iter().any(|l| l.contains("spec_replicas")));
        assert!(!lines.iter().any(|l| l.contains("metadata_generation")));
        assert!(!lines.iter().any(|l| l.contains("status_condition")));
        assert!(lines.contains(
            &r#"kube_deployment_status_replicas_available{namespace="default",deployment="fresh"} 0"#
                .to_owned()
        ));
        assert!(lines.contains(
            &r#"kube_deployment_status_observed_generation{namespace="default",deployment="fresh"} 0"#
                .to_owned()
        ));
        let mut nameless = deployment("x").build();
        nameless.metadata.name = None;
        assert!(deployment_series(&nameless).is_empty());
        assert_eq!(deployment_key(&nameless), None);
    }

    #[test]
    fn replicasets_name_their_owner_or_none() {
        assert_eq!(
            replicaset_series(&replicaset("web-5d4f", Some("web"))).render(),
            [
                r#"kube_replicaset_owner{namespace="default",replicaset="web-5d4f",owner_kind="Deployment",owner_name="web",owner_is_controller="true"} 1"#
            ]
        );
        assert_eq!(
            replicaset_series(&replicaset("bare", None)).render(),
            [
                r#"kube_replicaset_owner{namespace="default",replicaset="bare",owner_kind="",owner_name="",owner_is_controller=""} 1"#
            ]
        );
    }
}
