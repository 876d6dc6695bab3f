//! The built-in `faults` scenario, read back through the API as a client sees it: crash
//! loops (OOMKilled and Error) with growing restarts, image pulls that fail, a pod no node
//! can fit, an evicted pod, priority classes, node capacity/allocatable, a node under memory
//! pressure and a lost node, a rollout that completes and one that gets stuck. The shapes
//! are those a real control plane writes (see `sim/scenarios/faults.yaml`).

use crate::common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use kube_relay_sim::{ClockMode, Scenario, SimHandle};

use common::{client, start_scenario};

/// The pods of a deployment (by name prefix) in a namespace.
fn pods_of(handle: &SimHandle, namespace: &str, deployment: &str) -> Vec<Pod> {
    handle
        .pods()
        .into_iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(&format!("{deployment}-")))
        })
        .collect()
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn condition<'a>(p: &'a Pod, type_: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn container(p: &Pod) -> k8s_openapi::api::core::v1::ContainerStatus {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first().cloned())
        .unwrap_or_default()
}

fn waiting_reason(p: &Pod) -> Option<String> {
    container(p).state?.waiting?.reason
}

fn node_condition(n: &Node, type_: &str) -> (String, String) {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_))
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
        .unwrap_or_default()
}

async fn node(api: &Api<Node>, name: &str) -> Node {
    api.get(name).await.expect("node")
}

async fn deployment(handle: &SimHandle, namespace: &str, name: &str) -> Deployment {
    handle.deployment(namespace, name).expect("deployment")
}

fn progressing(d: &Deployment) -> (String, String) {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Progressing"))
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
        .unwrap_or_default()
}

#[tokio::test]
async fn the_faults_scenario_reaches_every_state_a_real_cluster_shows() {
    let scenario = Scenario::builtin("faults").expect("faults scenario");
    let (sim, handle) = start_scenario(scenario, ClockMode::Manual).await;
    let c = client(&sim);
    let nodes: Api<Node> = Api::all(c.clone());

    // Capacity and allocatable: 4 CPUs and 16Gi, less what the kubelet reserves.
    let n1 = node(&nodes, "sim-worker-1").await;
    let status = n1.status.clone().expect("node status");
    let q = |m: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
             k: &str| {
        m.as_ref()
            .and_then(|m| m.get(k))
            .map(|q| q.0.clone())
            .unwrap_or_default()
    };
    assert_eq!(q(&status.capacity, "cpu"), "4");
    assert_eq!(q(&status.allocatable, "cpu"), "3800m");
    assert_eq!(q(&status.capacity, "memory"), "16Gi");
    assert_eq!(q(&status.allocatable, "memory"), "15872Mi");

    handle.advance(Duration::from_secs(45)).expect("advance");
    // Crash loop, OOMKilled: restarted again and again, last terminated OOMKilled/137.
    let checkout = pods_of(&handle, "shop", "checkout");
    assert_eq!(checkout.len(), 2);
    let early_restarts = container(&checkout[0]).restart_count;
    assert!(early_restarts >= 2, "restarts after 45 s: {early_restarts}");
    let last = container(&checkout[0])
        .last_state
        .and_then(|s| s.terminated)
        .expect("last terminated state");
    assert_eq!(
        (last.reason.as_deref(), last.exit_code),
        (Some("OOMKilled"), 137)
    );
    assert_eq!(phase(&checkout[0]), "Running");
    // Crash loop, Error: exit code 1.
    let worker = &pods_of(&handle, "shop", "worker")[0];
    let last = container(worker)
        .last_state
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!((last.reason.as_deref(), last.exit_code), (Some("Error"), 1));
    // An image that never pulls: Pending, waiting in ErrImagePull or ImagePullBackOff.
    let reporting = &pods_of(&handle, "shop", "reporting")[0];
    assert_eq!(phase(reporting), "Pending");
    let waiting = container(reporting)
        .state
        .and_then(|s| s.waiting)
        .expect("waiting");
    assert!(
        matches!(
            waiting.reason.as_deref(),
            Some("ErrImagePull" | "ImagePullBackOff")
        ),
        "{waiting:?}"
    );
    assert!(
        waiting
            .message
            .as_deref()
            .is_some_and(|m| m.contains("shop/reporting:3.0.0-rc1") && m.contains("not found")),
        "{waiting:?}"
    );
    assert_eq!(container(reporting).restart_count, 0);
    // A pod no node can fit: Pending, PodScheduled=False/Unschedulable, a FailedScheduling event.
    let analytics = &pods_of(&handle, "batch", "analytics")[0];
    assert_eq!(phase(analytics), "Pending");
    let scheduled = condition(analytics, "PodScheduled").expect("PodScheduled");
    assert_eq!(
        (scheduled.status.as_str(), scheduled.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
    assert!(
        scheduled
            .message
            .as_deref()
            .is_some_and(|m| m.contains("Insufficient cpu")),
        "{scheduled:?}"
    );
    assert!(!handle.events_with_reason("FailedScheduling").is_empty());
    // Priority classes.
    let agent = &pods_of(&handle, "kube-system", "node-agent")[0];
    let spec = agent.spec.clone().expect("spec");
    assert_eq!(
        (spec.priority_class_name.as_deref(), spec.priority),
        (Some("system-node-critical"), Some(2_000_001_000))
    );
    let frontend = &pods_of(&handle, "shop", "frontend")[0];
    let spec = frontend.spec.clone().expect("spec");
    assert_eq!(
        (spec.priority_class_name.as_deref(), spec.priority),
        (Some("high-priority"), Some(1000))
    );
    // Memory pressure on sim-worker-3: the condition and its taint.
    let n3 = node(&nodes, "sim-worker-3").await;
    assert_eq!(
        node_condition(&n3, "MemoryPressure"),
        (
            "True".to_string(),
            "KubeletHasInsufficientMemory".to_string()
        )
    );
    let taints = n3.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/memory-pressure" && t.effect == "NoSchedule"),
        "{taints:?}"
    );
    // An evicted web pod: Failed, Evicted, DisruptionTarget; replaced.
    let web = pods_of(&handle, "shop", "web");
    let evicted: Vec<&Pod> = web
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted"))
        .collect();
    assert_eq!(evicted.len(), 1, "one evicted web pod");
    assert_eq!(phase(evicted[0]), "Failed");
    let disruption = condition(evicted[0], "DisruptionTarget").expect("DisruptionTarget");
    assert_eq!(disruption.reason.as_deref(), Some("TerminationByKubelet"));
    assert!(
        web.iter().filter(|p| phase(p) == "Running").count() >= 2,
        "the ReplicaSet replaced it"
    );

    handle.advance(Duration::from_secs(50)).expect("advance"); // 95 s
    // sim-worker-2 is lost: every condition Unknown, NotReady, its pods not Ready.
    let n2 = node(&nodes, "sim-worker-2").await;
    for t in ["Ready", "MemoryPressure"] {
        assert_eq!(
            node_condition(&n2, t),
            ("Unknown".to_string(), "NodeStatusUnknown".to_string())
        );
    }
    let on_lost: Vec<Pod> = handle
        .pods()
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("sim-worker-2"))
        .filter(|p| phase(p) == "Running")
        .collect();
    assert!(!on_lost.is_empty(), "pods ran on sim-worker-2");
    for p in &on_lost {
        assert_eq!(
            condition(p, "Ready").map(|c| c.status.as_str()),
            Some("False")
        );
    }
    // The frontend rollout is under way: a second ReplicaSet, fewer updated than replicas.
    let d = deployment(&handle, "shop", "frontend").await;
    let generation = d.metadata.generation;
    assert_eq!(generation, Some(2));
    let rss: Api<ReplicaSet> = Api::namespaced(c.clone(), "shop");
    let frontend_rs: Vec<ReplicaSet> = rss
        .list(&ListParams::default().labels("app=frontend"))
        .await
        .expect("replicasets")
        .items;
    assert_eq!(frontend_rs.len(), 2, "old and new ReplicaSet");
    let status = d.status.clone().expect("status");
    assert!(
        status.updated_replicas.unwrap_or(0) < 4 || status.unavailable_replicas.unwrap_or(0) > 0,
        "mid-rollout: {status:?}"
    );
    let mid_restarts = container(&pods_of(&handle, "shop", "checkout")[0]).restart_count;

    handle.advance(Duration::from_secs(85)).expect("advance"); // 180 s
    // The rollout completed: all updated and available, the old ReplicaSet at 0.
    let d = deployment(&handle, "shop", "frontend").await;
    let status = d.status.clone().expect("status");
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.available_replicas,
            status.unavailable_replicas,
            status.observed_generation
        ),
        (Some(4), Some(4), Some(4), None, Some(2)),
        "{status:?}"
    );
    assert_eq!(
        progressing(&d),
        ("True".to_string(), "NewReplicaSetAvailable".to_string())
    );
    assert_eq!(
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("deployment.kubernetes.io/revision"))
            .map(String::as_str),
        Some("2")
    );
    let replicas: Vec<i32> = rss
        .list(&ListParams::default().labels("app=frontend"))
        .await
        .expect("replicasets")
        .items
        .iter()
        .map(|rs| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1))
        .collect();
    assert!(
        replicas.contains(&0) && replicas.contains(&4),
        "{replicas:?}"
    );
    // The api rollout is stuck on its image: updated pods wait, replicas are unavailable.
    let d = deployment(&handle, "shop", "api").await;
    let status = d.status.clone().expect("status");
    assert!(status.updated_replicas.unwrap_or(0) >= 1, "{status:?}");
    assert!(status.unavailable_replicas.unwrap_or(0) >= 1, "{status:?}");
    let new_api: Vec<Pod> = pods_of(&handle, "shop", "api")
        .into_iter()
        .filter(|p| container(p).image.ends_with("api:5.3.0"))
        .collect();
    assert!(!new_api.is_empty());
    assert!(new_api.iter().all(|p| {
        waiting_reason(p).is_some_and(|r| r.contains("ImagePull") || r == "ErrImagePull")
    }));
    assert_eq!(progressing(&d).0, "True", "within the progress deadline");
    // The pressure on sim-worker-3 passed; the crash loop went on.
    let n3 = node(&nodes, "sim-worker-3").await;
    assert_eq!(node_condition(&n3, "MemoryPressure").0, "False");
    assert!(n3.spec.and_then(|s| s.taints).is_none());
    let late_restarts = container(&pods_of(&handle, "shop", "checkout")[0]).restart_count;
    assert!(
        late_restarts > mid_restarts,
        "restarts grow: {mid_restarts} then {late_restarts}"
    );

    handle.advance(Duration::from_secs(600)).expect("advance"); // 13 min
    let d = deployment(&handle, "shop", "api").await;
    assert_eq!(
        progressing(&d),
        ("False".to_string(), "ProgressDeadlineExceeded".to_string()),
        "{:?}",
        d.status
    );
    // Events a real control plane records for these states.
    let events: Api<Event> = Api::all(c);
    let reasons: std::collections::BTreeSet<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in [
        "BackOff",
        "Failed",
        "Evicted",
        "FailedScheduling",
        "NodeNotReady",
        "NodeHasInsufficientMemory",
        "ScalingReplicaSet",
    ] {
        assert!(reasons.contains(reason), "no {reason} event: {reasons:?}");
    }
    sim.shutdown().await;
}
