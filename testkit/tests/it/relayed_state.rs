//! A simulated cluster's state as its API server lists it and as the receiver serves it, in
//! the fields alert rules about Kubernetes objects read (pod phase, readiness and scheduling,
//! container restarts, waiting and last-termination reasons, Deployment replicas and
//! conditions, HPA replicas, node conditions). The alert tests on a manual clock
//! (`kubernetes_alerts`, `mixin_alerts`) step the clock, then wait with
//! [`wait_until_relayed`] until the receiver shows what the API server lists, so every state
//! they step through is served before anything looks at it.
//!
//! Also the healthy scenario those tests hold quiet.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use kube_relay_testkit::exposition::ExposedSample;
use kube_relay_testkit::wait_until;

use crate::common::scrape;

/// A healthy cluster: every pod starts and stays Ready, the HPA has room, nodes are fine.
pub const HEALTHY: &str = r#"
name: healthy
seed: 21
nodes: {count: 2, cpu: "8", memory: 32Gi}
deployments:
  - {name: web, namespace: shop, replicas: 2, image: shop/web:1.0, requests: {cpu: 100m, memory: 64Mi}}
  - name: worker
    namespace: shop
    replicas: 1
    image: shop/worker:1.0
    requests: {cpu: 200m, memory: 64Mi}
    load: {cpu_per_client: 10m, curve: [{at: 0s, clients: 5}]}
hpas:
  - {name: worker, namespace: shop, target: worker, min: 1, max: 4, cpu_utilization: 50}
"#;

/// Node conditions the facts follow.
const NODE_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The cluster's state as its API server lists it, one fact per string.
pub async fn listed(client: &kube::Client) -> anyhow::Result<BTreeSet<String>> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::{Api, ListParams};

    let lp = ListParams::default();
    let mut facts = BTreeSet::new();
    for pod in Api::<Pod>::all(client.clone()).list(&lp).await? {
        let name = pod.metadata.name.unwrap_or_default();
        let status = pod.status.unwrap_or_default();
        facts.insert(format!(
            "pod {name} phase {}",
            status.phase.unwrap_or_default()
        ));
        for c in status.conditions.unwrap_or_default() {
            match (c.type_.as_str(), c.status.as_str()) {
                ("Ready", "True") => facts.insert(format!("pod {name} ready")),
                ("PodScheduled", "False") => facts.insert(format!("pod {name} unscheduled")),
                _ => false,
            };
        }
        for cs in status.container_statuses.unwrap_or_default() {
            let container = format!("pod {name} container {}", cs.name);
            facts.insert(format!("{container} restarts {}", cs.restart_count));
            if let Some(reason) = cs.state.and_then(|s| s.waiting).and_then(|w| w.reason) {
                facts.insert(format!("{container} waiting {reason}"));
            }
            let last = cs.last_state.and_then(|s| s.terminated);
            if let Some(reason) = last.and_then(|t| t.reason) {
                facts.insert(format!("{container} last terminated {reason}"));
            }
        }
    }
    for d in Api::<Deployment>::all(client.clone()).list(&lp).await? {
        let name = d.metadata.name.unwrap_or_default();
        let status = d.status.unwrap_or_default();
        facts.insert(format!(
            "deployment {name} spec {} available {} updated {} unavailable {}",
            d.spec.and_then(|s| s.replicas).unwrap_or_default(),
            status.available_replicas.unwrap_or(0),
            status.updated_replicas.unwrap_or(0),
            status.unavailable_replicas.unwrap_or(0)
        ));
        for c in status.conditions.unwrap_or_default() {
            if c.type_ == "Progressing" {
                facts.insert(format!(
                    "deployment {name} progressing {}",
                    c.status.to_lowercase()
                ));
            }
        }
    }
    for h in Api::<HorizontalPodAutoscaler>::all(client.clone())
        .list(&lp)
        .await?
    {
        let name = h.metadata.name.unwrap_or_default();
        let status = h.status.unwrap_or_default();
        facts.insert(format!(
            "hpa {name} current {} desired {}",
            status.current_replicas.unwrap_or(0),
            status.desired_replicas
        ));
    }
    for n in Api::<Node>::all(client.clone()).list(&lp).await? {
        let name = n.metadata.name.unwrap_or_default();
        let unschedulable = n.spec.and_then(|s| s.unschedulable).unwrap_or(false);
        facts.insert(format!(
            "node {name} unschedulable {}",
            u8::from(unschedulable)
        ));
        for c in n.status.and_then(|s| s.conditions).unwrap_or_default() {
            if NODE_CONDITIONS.contains(&c.type_.as_str()) {
                facts.insert(format!(
                    "node {name} {} {}",
                    c.type_,
                    c.status.to_lowercase()
                ));
            }
        }
    }
    Ok(facts)
}

/// The same facts as the receiver serves them for `cluster`.
pub fn relayed(samples: &[ExposedSample], cluster: &str) -> BTreeSet<String> {
    let ours: Vec<&ExposedSample> = samples
        .iter()
        .filter(|s| s.label("cluster") == cluster)
        .collect();
    let value = |name: &str, labels: &[(&str, &str)]| {
        ours.iter()
            .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
            .map_or(0.0, |s| s.value)
    };
    let mut facts = BTreeSet::new();
    for s in &ours {
        let pod = s.label("pod");
        let container = format!("pod {pod} container {}", s.label("container"));
        let set = s.value == 1.0;
        match s.name.as_str() {
            "kube_pod_status_phase" if set => {
                facts.insert(format!("pod {pod} phase {}", s.label("phase")));
            }
            "kube_pod_status_ready" if set && s.label("condition") == "true" => {
                facts.insert(format!("pod {pod} ready"));
            }
            "kube_pod_status_scheduled" if set && s.label("condition") == "false" => {
                facts.insert(format!("pod {pod} unscheduled"));
            }
            "kube_pod_container_status_restarts_total" => {
                facts.insert(format!("{container} restarts {}", s.value));
            }
            "kube_pod_container_status_waiting_reason" if set => {
                facts.insert(format!("{container} waiting {}", s.label("reason")));
            }
            "kube_pod_container_status_last_terminated_reason" if set => {
                facts.insert(format!("{container} last terminated {}", s.label("reason")));
            }
            "kube_deployment_status_observed_generation" => {
                let d = [
                    ("namespace", s.label("namespace")),
                    ("deployment", s.label("deployment")),
                ];
                facts.insert(format!(
                    "deployment {} spec {} available {} updated {} unavailable {}",
                    s.label("deployment"),
                    value("kube_deployment_spec_replicas", &d),
                    value("kube_deployment_status_replicas_available", &d),
                    value("kube_deployment_status_replicas_updated", &d),
                    value("kube_deployment_status_replicas_unavailable", &d)
                ));
            }
            "kube_deployment_status_condition" if set && s.label("condition") == "Progressing" => {
                facts.insert(format!(
                    "deployment {} progressing {}",
                    s.label("deployment"),
                    s.label("status")
                ));
            }
            "kube_horizontalpodautoscaler_status_desired_replicas" => {
                let h = [
                    ("namespace", s.label("namespace")),
                    (
                        "horizontalpodautoscaler",
                        s.label("horizontalpodautoscaler"),
                    ),
                ];
                facts.insert(format!(
                    "hpa {} current {} desired {}",
                    s.label("horizontalpodautoscaler"),
                    value("kube_horizontalpodautoscaler_status_current_replicas", &h),
                    s.value
                ));
            }
            "kube_node_spec_unschedulable" => {
                facts.insert(format!(
                    "node {} unschedulable {}",
                    s.label("node"),
                    s.value
                ));
            }
            "kube_node_status_condition"
                if set && NODE_CONDITIONS.contains(&s.label("condition")) =>
            {
                facts.insert(format!(
                    "node {} {} {}",
                    s.label("node"),
                    s.label("condition"),
                    s.label("status")
                ));
            }
            _ => {}
        }
    }
    facts
}

/// Waits until the receiver at `http` serves `cluster` as `client`'s API server lists it, and
/// returns that scrape. The cluster must hold still meanwhile (a manual clock).
pub async fn wait_until_relayed(
    client: &kube::Client,
    http: SocketAddr,
    cluster: &str,
    what: &str,
) -> Vec<ExposedSample> {
    let expected = listed(client)
        .await
        .unwrap_or_else(|e| panic!("{cluster}: list the simulated cluster: {e:#}"));
    let found = wait_until(
        &format!("{cluster}: the receiver shows {what}"),
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let expected = &expected;
            async move {
                let samples = scrape(http).await?;
                Ok((relayed(&samples, cluster) == *expected).then_some(samples))
            }
        },
    )
    .await;
    match found {
        Ok(samples) => samples,
        Err(e) => {
            let served = scrape(http)
                .await
                .map(|s| relayed(&s, cluster))
                .unwrap_or_default();
            panic!(
                "{e:#}\nlisted, not served: {:?}\nserved, not listed: {:?}",
                expected.difference(&served).collect::<Vec<_>>(),
                served.difference(&expected).collect::<Vec<_>>()
            )
        }
    }
}
