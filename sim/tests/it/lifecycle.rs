//! Pods live like real ones: Pending → scheduled → ContainerCreating → Running → Ready;
//! crashes restart with back-off into CrashLoopBackOff; failed and deleted pods are replaced
//! by their ReplicaSet; pods that fit nowhere stay Pending as Unschedulable.

use crate::common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube_relay_sim::{ClockMode, SimHandle};

use common::start;

const SCENARIO: &str = r#"
seed: 21
jitter: 0
nodes: {count: 2, cpu: "1", pods: 4}
deployments:
  - name: app
    replicas: 1
    image: example.com/app:1.0
    requests: {cpu: 300m}
    startup: 2s
    readiness: 3s
"#;

/// A one-line summary of a pod: phase, scheduled node, container state, Ready, restarts.
fn summary(p: &Pod) -> String {
    let status = p.status.clone().unwrap_or_default();
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .map(|_| "node")
        .unwrap_or("-");
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|c| c.first())
        .map(|c| {
            let state = c.state.clone().unwrap_or_default();
            let s = if let Some(w) = state.waiting {
                w.reason.unwrap_or_default()
            } else if state.running.is_some() {
                "running".to_string()
            } else if let Some(t) = state.terminated {
                format!("terminated:{}", t.reason.unwrap_or_default())
            } else {
                "?".to_string()
            };
            format!("{s} ready={} restarts={}", c.ready, c.restart_count)
        })
        .unwrap_or_else(|| "no-container".to_string());
    format!("{} {node} {container}", status.phase.unwrap_or_default())
}

fn only_pod(handle: &SimHandle, prefix: &str) -> Pod {
    let mut pods: Vec<Pod> = handle
        .pods()
        .into_iter()
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    assert_eq!(pods.len(), 1, "{pods:?}");
    pods.remove(0)
}

#[tokio::test]
async fn a_pod_goes_from_pending_to_ready() {
    let (_sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    let mut seen = vec![summary(&only_pod(&handle, "app-"))];
    for _ in 0..60 {
        handle.advance(Duration::from_millis(100)).expect("advance");
        let s = summary(&only_pod(&handle, "app-"));
        if seen.last() != Some(&s) {
            seen.push(s);
        }
    }
    assert_eq!(
        seen,
        [
            "Pending - no-container",
            "Pending node no-container",
            "Pending node ContainerCreating ready=false restarts=0",
            "Running node running ready=false restarts=0",
            "Running node running ready=true restarts=0",
        ]
    );
    let pod = only_pod(&handle, "app-");
    let conditions: Vec<_> = pod
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    assert_eq!(
        conditions,
        [
            ("PodReadyToStartContainers".to_string(), "True".to_string()),
            ("Initialized".into(), "True".into()),
            ("Ready".into(), "True".into()),
            ("ContainersReady".into(), "True".into()),
            ("PodScheduled".into(), "True".into()),
        ]
    );
}

#[tokio::test]
async fn crashes_restart_with_back_off() {
    let (_sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(10)).expect("advance");
    let name = only_pod(&handle, "app-").metadata.name.expect("name");
    handle.crash_pod("default", &name, 3).expect("crash");
    let mut seen = vec![summary(&only_pod(&handle, "app-"))];
    for _ in 0..700 {
        handle.advance(Duration::from_millis(100)).expect("advance");
        let s = summary(&only_pod(&handle, "app-"));
        if seen.last() != Some(&s) {
            seen.push(s);
        }
    }
    // First restart at once, then 10 s and 20 s of back-off; the fourth run stays up.
    assert_eq!(
        seen,
        [
            "Running node terminated:Error ready=false restarts=0",
            "Running node running ready=false restarts=1",
            "Running node terminated:Error ready=false restarts=1",
            "Running node CrashLoopBackOff ready=false restarts=1",
            "Running node running ready=false restarts=2",
            "Running node terminated:Error ready=false restarts=2",
            "Running node CrashLoopBackOff ready=false restarts=2",
            "Running node running ready=false restarts=3",
            "Running node running ready=true restarts=3",
        ]
    );
    let pod = only_pod(&handle, "app-");
    let last = pod
        .status
        .and_then(|s| s.container_statuses)
        .expect("statuses")[0]
        .last_state
        .clone()
        .and_then(|s| s.terminated)
        .expect("last state");
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    let backoffs = handle.events_with_reason("BackOff");
    assert_eq!(backoffs.len(), 1, "identical events are aggregated");
    assert_eq!(backoffs[0].count, Some(2));
    assert_eq!(backoffs[0].type_.as_deref(), Some("Warning"));
}

#[tokio::test]
async fn failed_and_deleted_pods_are_replaced() {
    let (_sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(10)).expect("advance");
    let first = only_pod(&handle, "app-").metadata.name.expect("name");
    handle.fail_pod("default", &first).expect("fail");
    handle.advance(Duration::from_secs(10)).expect("advance");
    let pods = handle.pods();
    assert_eq!(pods.len(), 2, "the failed pod stays, a replacement runs");
    let failed = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(first.as_str()))
        .expect("failed pod");
    let status = failed.status.clone().expect("status");
    assert_eq!(
        (status.phase.as_deref(), status.reason.as_deref()),
        (Some("Failed"), Some("Evicted"))
    );
    let running = handle.running_pods("default", "app");
    assert_eq!(running.len(), 1);
    let second = running[0].metadata.name.clone().expect("name");
    assert_ne!(second, first);

    handle.delete_pod("default", &second).expect("delete");
    let terminating = handle
        .pods()
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(second.as_str()))
        .expect("still there");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    handle.advance(Duration::from_secs(10)).expect("advance");
    assert!(
        handle
            .pods()
            .iter()
            .all(|p| p.metadata.name.as_deref() != Some(second.as_str())),
        "gone after termination"
    );
    let running = handle.running_pods("default", "app");
    assert_eq!(running.len(), 1, "replaced again");
    assert_eq!(handle.events_with_reason("SuccessfulCreate").len(), 3);
}

#[tokio::test]
async fn pods_that_fit_nowhere_stay_pending() {
    let (_sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    // 2 nodes × 1 CPU hold 3 pods of 300m each; the other 2 cannot be scheduled.
    handle.scale_deployment("default", "app", 8).expect("scale");
    handle.advance(Duration::from_secs(20)).expect("advance");
    let pods = handle.pods();
    let pending: Vec<_> = pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
        .collect();
    assert_eq!(pods.len(), 8);
    assert_eq!(pending.len(), 2);
    let cond = pending[0]
        .status
        .clone()
        .and_then(|s| s.conditions)
        .expect("conditions")[0]
        .clone();
    assert_eq!(
        (
            cond.type_.as_str(),
            cond.status.as_str(),
            cond.reason.as_deref()
        ),
        ("PodScheduled", "False", Some("Unschedulable"))
    );
    let msg = cond.message.unwrap_or_default();
    assert!(
        msg.starts_with("0/2 nodes are available: 2 Insufficient cpu."),
        "{msg}"
    );
    handle
        .scale_deployment("default", "app", 2)
        .expect("scale down");
    handle.advance(Duration::from_secs(10)).expect("advance");
    assert_eq!(handle.running_pods("default", "app").len(), 2);
    assert!(
        handle
            .pods()
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()),
        "unscheduled pods go first"
    );
}

#[tokio::test]
async fn the_bulk_generator_starts_running_pods() {
    let yaml = "seed: 4\nnodes: {count: 10, cpu: \"64\", pods: 110}\nbulk: {deployments: 10, replicas: 100, requests: {cpu: 10m}}\nevents: {pod_events: false}\n";
    let (_sim, handle) = start(yaml, ClockMode::Manual).await;
    let pods = handle.pods();
    assert_eq!(pods.len(), 1000);
    assert!(
        pods.iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    );
    assert_eq!(handle.running_pods("bulk", "bulk-007").len(), 100);
    assert!(handle.events_with_reason("Scheduled").is_empty());
    handle.advance(Duration::from_secs(30)).expect("advance");
    assert_eq!(handle.pods().len(), 1000, "a steady state");
}

fn ready(handle: &SimHandle, name: &str) -> bool {
    handle
        .pods()
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .and_then(|p| p.status?.conditions)
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn a_failing_readiness_probe_keeps_a_pod_unready_until_it_passes() {
    let (_sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(10)).expect("advance");
    let name = only_pod(&handle, "app-").metadata.name.expect("name");
    assert!(ready(&handle, &name));
    handle
        .set_pod_ready("default", &name, false)
        .expect("probe fails");
    assert!(!ready(&handle, &name), "takes effect at once");
    handle.advance(Duration::from_secs(30)).expect("advance");
    assert!(
        !ready(&handle, &name),
        "stays unready while the probe fails"
    );
    let d = handle
        .deployment("default", "app")
        .and_then(|d| d.status)
        .expect("status");
    assert_eq!(
        d.ready_replicas, None,
        "the deployment counts it as not ready"
    );
    handle
        .set_pod_ready("default", &name, true)
        .expect("probe passes");
    assert!(ready(&handle, &name));
}

#[tokio::test]
async fn churn_flips_readiness_at_the_configured_rate() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{Api, WatchEvent, WatchParams};
    let yaml = "seed: 4\nnodes: {count: 10, cpu: \"64\"}\nbulk: {deployments: 10, replicas: 100}\nchurn: {ready_flips_per_second: 250, namespace: bulk}\n";
    let (sim, handle) = start(yaml, ClockMode::Manual).await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(common::client(&sim), "bulk");
    let rv = handle.resource_version().to_string();
    handle.advance(Duration::from_secs(2)).expect("advance");
    // The server ends this watch after 1 s; by then it has sent every change since `rv`.
    let mut stream = pods
        .watch(&WatchParams::default().disable_bookmarks().timeout(1), &rv)
        .await
        .expect("watch")
        .boxed();
    let mut modified = 0;
    while let Some(ev) = stream.try_next().await.expect("watch event") {
        match ev {
            WatchEvent::Modified(_) => modified += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(modified, 500, "250 flips per second for 2 seconds");
}
