//! The PromQL the report runs, built for one cluster (and optionally one namespace).
//!
//! Every query keeps only the labels the report groups by (`max by (...)`), so a cluster
//! scraped through two receivers or two Prometheus jobs still gives one series per object.
//! Pods are tied to their Deployment the way dashboards do it: `kube_pod_owner` (pod →
//! ReplicaSet) joined with `kube_replicaset_owner` (ReplicaSet → Deployment).

/// The families read, with the labels kept.
pub mod family {
    /// HPA replicas the controller wants.
    pub const HPA_DESIRED: &str = "kube_horizontalpodautoscaler_status_desired_replicas";
    /// HPA replicas the target has.
    pub const HPA_CURRENT: &str = "kube_horizontalpodautoscaler_status_current_replicas";
    /// HPA lower bound.
    pub const HPA_MIN: &str = "kube_horizontalpodautoscaler_spec_min_replicas";
    /// HPA upper bound.
    pub const HPA_MAX: &str = "kube_horizontalpodautoscaler_spec_max_replicas";
    /// The metric the HPA reads now.
    pub const HPA_STATUS_METRIC: &str = "kube_horizontalpodautoscaler_status_target_metric";
    /// The metric's target.
    pub const HPA_SPEC_METRIC: &str = "kube_horizontalpodautoscaler_spec_target_metric";
    /// Scaling actions (`SuccessfulRescale` events), by direction.
    pub const HPA_SCALING_EVENTS: &str = "kube_horizontalpodautoscaler_scaling_events_total";
    /// The latest scaling action's new size, by direction and reason.
    pub const HPA_LAST_ACTION: &str = "kube_horizontalpodautoscaler_last_scaling_event_replicas";
    /// The HPA's scale target.
    pub const HPA_INFO: &str = "kube_horizontalpodautoscaler_info";
    /// Replicas a Deployment asks for.
    pub const DEPLOYMENT_SPEC: &str = "kube_deployment_spec_replicas";
    /// Replicas of a Deployment available.
    pub const DEPLOYMENT_AVAILABLE: &str = "kube_deployment_status_replicas_available";
}

/// The label matchers every query starts with.
#[derive(Debug, Clone)]
pub struct Selector {
    matchers: String,
}

impl Selector {
    /// `cluster="<cluster>"`, and `namespace="<namespace>"` when given.
    pub fn new(cluster: &str, namespace: Option<&str>) -> Selector {
        let mut matchers = format!("cluster=\"{}\"", escape(cluster));
        if let Some(ns) = namespace {
            matchers.push_str(&format!(", namespace=\"{}\"", escape(ns)));
        }
        Selector { matchers }
    }

    /// `name{<matchers>, <extra>}`.
    fn of(&self, name: &str, extra: &str) -> String {
        if extra.is_empty() {
            format!("{name}{{{}}}", self.matchers)
        } else {
            format!("{name}{{{}, {extra}}}", self.matchers)
        }
    }

    /// One HPA gauge, one series per HPA.
    pub fn hpa_gauge(&self, family: &str) -> String {
        format!(
            "max by (namespace, horizontalpodautoscaler) ({})",
            self.of(family, "")
        )
    }

    /// CPU utilisation the HPA reads (`status`) or aims at (`spec`), in percent.
    pub fn hpa_cpu_utilization(&self, family: &str) -> String {
        format!(
            "max by (namespace, horizontalpodautoscaler) ({})",
            self.of(
                family,
                r#"metric_name="cpu", metric_target_type="utilization""#
            )
        )
    }

    /// The scaling-action counters, one per HPA and direction.
    pub fn hpa_scaling_events(&self) -> String {
        format!(
            "max by (namespace, horizontalpodautoscaler, direction) ({})",
            self.of(family::HPA_SCALING_EVENTS, "")
        )
    }

    /// The latest action's new size, one series per HPA, direction and reason.
    pub fn hpa_last_actions(&self) -> String {
        format!(
            "max by (namespace, horizontalpodautoscaler, direction, reason) ({})",
            self.of(family::HPA_LAST_ACTION, "")
        )
    }

    /// Which Deployment each HPA scales.
    pub fn hpa_targets(&self) -> String {
        format!(
            "max by (namespace, horizontalpodautoscaler, scaletargetref_kind, scaletargetref_name) ({})",
            self.of(family::HPA_INFO, "")
        )
    }

    /// One Deployment gauge, one series per Deployment.
    pub fn deployment_gauge(&self, family: &str) -> String {
        format!("max by (namespace, deployment) ({})", self.of(family, ""))
    }

    /// `1` per pod owned (through its ReplicaSet) by a Deployment, labelled `deployment`.
    fn pod_deployment(&self) -> String {
        format!(
            r#"max by (namespace, pod, deployment) (label_replace({pods}, "replicaset", "$1", "owner_name", "(.*)") * on (namespace, replicaset) group_left (deployment) max by (namespace, replicaset, deployment) (label_replace({sets}, "deployment", "$1", "owner_name", "(.*)")))"#,
            pods = self.of("kube_pod_owner", r#"owner_kind="ReplicaSet""#),
            sets = self.of("kube_replicaset_owner", r#"owner_kind="Deployment""#),
        )
    }

    /// Mean CPU per pod of each Deployment, in CPU seconds per second of the query API's
    /// clock, over `rate_window` (a PromQL duration such as `30s`).
    pub fn cpu_per_pod(&self, rate_window: &str) -> String {
        format!(
            "avg by (namespace, deployment) (sum by (namespace, pod) (rate({}[{rate_window}])) * on (namespace, pod) group_left (deployment) {})",
            self.of("container_cpu_usage_seconds_total", ""),
            self.pod_deployment()
        )
    }

    /// Container restarts summed over each Deployment's current pods.
    pub fn restarts(&self) -> String {
        format!(
            "sum by (namespace, deployment) (sum by (namespace, pod) ({}) * on (namespace, pod) group_left (deployment) {})",
            self.of("kube_pod_container_status_restarts_total", ""),
            self.pod_deployment()
        )
    }
}

/// A label value inside double quotes.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A duration as PromQL writes it, in whole milliseconds (`1500ms`).
pub fn promql_duration(seconds: f64) -> String {
    format!("{}ms", (seconds * 1000.0).round().max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_grouped() {
        let s = Selector::new(r#"a"b\c"#, Some("echo"));
        assert_eq!(
            s.hpa_gauge(family::HPA_MIN),
            r#"max by (namespace, horizontalpodautoscaler) (kube_horizontalpodautoscaler_spec_min_replicas{cluster="a\"b\\c", namespace="echo"})"#
        );
        let s = Selector::new("prod", None);
        assert!(
            s.cpu_per_pod("30s")
                .contains(r#"rate(container_cpu_usage_seconds_total{cluster="prod"}[30s])"#)
        );
        assert_eq!(promql_duration(2.5), "2500ms");
    }
}
