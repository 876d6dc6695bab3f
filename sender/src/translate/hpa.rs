//! HorizontalPodAutoscaler (autoscaling/v2) → series: info, replica bounds and counts, target
//! and current metric values, conditions.
//!
//! As kube-state-metrics: `spec.minReplicas` defaults to 1; a metric's name is the resource
//! name for `Resource`/`ContainerResource` metrics and `metric.name` otherwise; each target
//! or current value present gives one series with `metric_target_type` `utilization`
//! (percent), `average` or `value` (base units).

use std::borrow::Cow;

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, MetricSpec, MetricStatus, MetricTarget, MetricValueStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::family::Family;
use crate::quantity::parse_quantity;
use crate::series::{ObjectKey, ObjectKind, SeriesSet};
use crate::translate::pods::CONDITION_STATUSES;

/// The store key of an HPA, or `None` when it has no name.
pub fn hpa_key(hpa: &HorizontalPodAutoscaler) -> Option<ObjectKey> {
    let name = hpa.metadata.name.as_deref()?;
    let namespace = hpa.metadata.namespace.as_deref().unwrap_or_default();
    Some(ObjectKey::new(ObjectKind::Hpa, namespace, name))
}

/// Every series of an HPA. An HPA without a name yields nothing.
pub fn hpa_series(hpa: &HorizontalPodAutoscaler) -> SeriesSet<'_> {
    let mut set = SeriesSet::new();
    let Some(name) = hpa.metadata.name.as_deref() else {
        return set;
    };
    let namespace = hpa.metadata.namespace.as_deref().unwrap_or_default();
    let prefix: [Cow<'_, str>; 2] = [namespace.into(), name.into()];
    let with = |extra: &[&'static str]| -> Vec<Cow<'_, str>> {
        prefix
            .iter()
            .cloned()
            .chain(extra.iter().map(|s| Cow::Borrowed(*s)))
            .collect()
    };

    if let Some(spec) = hpa.spec.as_ref() {
        let target = &spec.scale_target_ref;
        set.push(
            Family::HpaInfo,
            prefix.iter().cloned().chain(
                [
                    target.api_version.as_deref().unwrap_or_default(),
                    target.kind.as_str(),
                    target.name.as_str(),
                ]
                .map(Cow::Borrowed),
            ),
            1.0,
        );
        set.push(
            Family::HpaSpecMinReplicas,
            with(&[]),
            f64::from(spec.min_replicas.unwrap_or(1)),
        );
        set.push(
            Family::HpaSpecMaxReplicas,
            with(&[]),
            f64::from(spec.max_replicas),
        );
        for metric in spec.metrics.iter().flatten() {
            let Some((metric_name, target)) = spec_target(metric) else {
                continue;
            };
            push_targets(
                &mut set,
                Family::HpaSpecTargetMetric,
                &prefix,
                metric_name,
                [
                    ("value", quantity(target.value.as_ref())),
                    ("average", quantity(target.average_value.as_ref())),
                    ("utilization", target.average_utilization.map(f64::from)),
                ],
            );
        }
    }

    if let Some(status) = hpa.status.as_ref() {
        set.push(
            Family::HpaStatusCurrentReplicas,
            with(&[]),
            f64::from(status.current_replicas.unwrap_or(0)),
        );
        set.push(
            Family::HpaStatusDesiredReplicas,
            with(&[]),
            f64::from(status.desired_replicas),
        );
        for metric in status.current_metrics.iter().flatten() {
            let Some((metric_name, current)) = status_current(metric) else {
                continue;
            };
            push_targets(
                &mut set,
                Family::HpaStatusTargetMetric,
                &prefix,
                metric_name,
                [
                    ("value", quantity(current.value.as_ref())),
                    ("average", quantity(current.average_value.as_ref())),
                    ("utilization", current.average_utilization.map(f64::from)),
                ],
            );
        }
        for condition in status.conditions.iter().flatten() {
            let status = match condition.status.as_str() {
                "True" => "true",
                "False" => "false",
                _ => "unknown",
            };
            let prefix = [
                prefix[0].clone(),
                prefix[1].clone(),
                Cow::Borrowed(condition.type_.as_str()),
            ];
            set.push_one_hot(
                Family::HpaStatusCondition,
                &prefix,
                &CONDITION_STATUSES,
                status,
            );
        }
    }
    set
}

fn quantity(q: Option<&Quantity>) -> Option<f64> {
    q.and_then(|q| parse_quantity(&q.0))
}

fn push_targets<'a>(
    set: &mut SeriesSet<'a>,
    family: Family,
    prefix: &[Cow<'a, str>; 2],
    metric_name: &'a str,
    values: [(&'static str, Option<f64>); 3],
) {
    for (target_type, value) in values {
        if let Some(value) = value {
            set.push(
                family,
                prefix
                    .iter()
                    .cloned()
                    .chain([Cow::Borrowed(metric_name), Cow::Borrowed(target_type)]),
                value,
            );
        }
    }
}

fn spec_target(metric: &MetricSpec) -> Option<(&str, &MetricTarget)> {
    if let Some(m) = &metric.resource {
        return Some((&m.name, &m.target));
    }
    if let Some(m) = &metric.container_resource {
        return Some((&m.name, &m.target));
    }
    if let Some(m) = &metric.pods {
        return Some((&m.metric.name, &m.target));
    }
    if let Some(m) = &metric.object {
        return Some((&m.metric.name, &m.target));
    }
    metric
        .external
        .as_ref()
        .map(|m| (m.metric.name.as_str(), &m.target))
}

fn status_current(metric: &MetricStatus) -> Option<(&str, &MetricValueStatus)> {
    if let Some(m) = &metric.resource {
        return Some((&m.name, &m.current));
    }
    if let Some(m) = &metric.container_resource {
        return Some((&m.name, &m.current));
    }
    if let Some(m) = &metric.pods {
        return Some((&m.metric.name, &m.current));
    }
    if let Some(m) = &metric.object {
        return Some((&m.metric.name, &m.current));
    }
    metric
        .external
        .as_ref()
        .map(|m| (m.metric.name.as_str(), &m.current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::hpa;

    #[test]
    fn a_new_hpa_without_status() {
        let h = hpa("web").bounds(None, 5).build();
        assert_eq!(
            hpa_series(&h).render(),
            [
                r#"kube_horizontalpodautoscaler_info{namespace="default",horizontalpodautoscaler="web",scaletargetref_api_version="apps/v1",scaletargetref_kind="Deployment",scaletargetref_name="web"} 1"#,
                r#"kube_horizontalpodautoscaler_spec_max_replicas{namespace="default",horizontalpodautoscaler="web"} 5"#,
                r#"kube_horizontalpodautoscaler_spec_min_replicas{namespace="default",horizontalpodautoscaler="web"} 1"#,
            ]
        );
    }

    #[test]
    fn a_scaling_hpa_with_metrics_and_conditions() {
        let h = hpa("web")
            .bounds(Some(2), 10)
            .replicas(3, 4)
            .cpu_utilization(50, Some(85))
            .pods_metric("requests_per_second", "100", "150500m")
            .condition("AbleToScale", "True")
            .condition("ScalingLimited", "False")
            .build();
        assert_eq!(
            hpa_series(&h).render(),
            [
                r#"kube_horizontalpodautoscaler_info{namespace="default",horizontalpodautoscaler="web",scaletargetref_api_version="apps/v1",scaletargetref_kind="Deployment",scaletargetref_name="web"} 1"#,
                r#"kube_horizontalpodautoscaler_spec_max_replicas{namespace="default",horizontalpodautoscaler="web"} 10"#,
                r#"kube_horizontalpodautoscaler_spec_min_replicas{namespace="default",horizontalpodautoscaler="web"} 2"#,
                r#"kube_horizontalpodautoscaler_spec_target_metric{namespace="default",horizontalpodautoscaler="web",metric_name="cpu",metric_target_type="utilization"} 50"#,
                r#"kube_horizontalpodautoscaler_spec_target_metric{namespace="default",horizontalpodautoscaler="web",metric_name="requests_per_second",metric_target_type="average"} 100"#,
                r#"kube_horizontalpodautoscaler_status_condition{namespace="default",horizontalpodautoscaler="web",condition="AbleToScale",status="false"} 0"#,
                r#"kube_horizontalpodautoscaler_status_condition{namespace="default",horizontalpodautoscaler="web",condition="AbleToScale",status="true"} 1"#,
                r#"kube_horizontalpodautoscaler_status_condition{namespace="default",horizontalpodautoscaler="web",condition="AbleToScale",status="unknown"} 0"#,
                r#"kube_horizontalpodautoscaler_status_condition{namespace="default",horizontalpodautoscaler="web",condition="ScalingLimited",status="false"} 1"#,
                r#"kube_horizontalpodautoscaler_status_condition{namespace="default",horizontalpodautoscaler="web",condition="ScalingLimited",status="true"} 0"#,
                r#"kube_horizontalpodautoscaler_status_condition{namespace="default",horizontalpodautoscaler="web",condition="ScalingLimited",status="unknown"} 0"#,
                r#"kube_horizontalpodautoscaler_status_current_replicas{namespace="default",horizontalpodautoscaler="web"} 3"#,
                r#"kube_horizontalpodautoscaler_status_desired_replicas{namespace="default",horizontalpodautoscaler="web"} 4"#,
                r#"kube_horizontalpodautoscaler_status_target_metric{namespace="default",horizontalpodautoscaler="web",metric_name="cpu",metric_target_type="average"} 0.12"#,
                r#"kube_horizontalpodautoscaler_status_target_metric{namespace="default",horizontalpodautoscaler="web",metric_name="cpu",metric_target_type="utilization"} 85"#,
                r#"kube_horizontalpodautoscaler_status_target_metric{namespace="default",horizontalpodautoscaler="web",metric_name="requests_per_second",metric_target_type="average"} 150.5"#,
            ]
        );
    }

    #[test]
    fn a_nameless_hpa_yields_nothing() {
        let mut h = hpa("x").build();
        h.metadata.name = None;
        assert!(hpa_series(&h).is_empty());
        assert_eq!(hpa_key(&h), None);
    }
}
