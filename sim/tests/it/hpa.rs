//! The HPA controller follows the Kubernetes algorithm step by step under the manual clock,
//! and its `SuccessfulRescale` events read exactly like the real controller's.
//!
//! The scenario is built so the expected sequence can be derived by hand (no noise, no
//! jitter): one pod requesting 100m, target 50 %, every client costs 10m spread over the
//! Ready pods, metrics-server scrapes every 15 s and the HPA syncs right after it.
//! Pods take 0.2 s to schedule, 0.3 s for the kubelet, 0.5 s to start and 1 s to be Ready.

use crate::common;

use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{Api, ListParams};
use kube_relay_sim::{ClockMode, SimHandle};

use common::{client, start};

const SCENARIO: &str = r#"
seed: 1
jitter: 0
nodes: {count: 3, cpu: "8"}
deployments:
  - name: app
    namespace: default
    replicas: 1
    image: registry.k8s.io/hpa-example
    requests: {cpu: 100m}
    startup: 1s
    readiness: 1s
    load:
      idle_cpu: 0
      cpu_per_client: 10m
      noise: 0
      curve: [{at: 0s, clients: 0}, {at: 60s, clients: 35}, {at: 300s, clients: 0}]
hpas:
  - {name: app, target: app, min: 1, max: 10, cpu_utilization: 50, scale_down_stabilization: 60s}
"#;

const UP: &str = "cpu resource utilization (percentage of request) above target";

fn replicas(handle: &SimHandle) -> i32 {
    handle
        .deployment("default", "app")
        .and_then(|d| d.spec)
        .and_then(|s| s.replicas)
        .expect("deployment has replicas")
}

fn condition(handle: &SimHandle, type_: &str) -> (String, String) {
    let status = handle.hpa_status("default", "app").expect("hpa status");
    let c = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("condition {type_}"));
    (c.status, c.reason.unwrap_or_default())
}

#[tokio::test]
async fn hpa_scales_up_and_down_exactly_as_the_algorithm_predicts() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;

    // Step through 7 minutes, one HPA sync (15 s) at a time, recording the target's size.
    let mut trajectory = Vec::new();
    let mut checks = Vec::new();
    for step in 1..=28u64 {
        handle.advance(Duration::from_secs(15)).expect("advance");
        let t = step * 15;
        trajectory.push((t, replicas(&handle)));
        match t {
            // First sync: the pod has only one metrics sample, so no rate yet.
            15 => checks.push((t, condition(&handle, "ScalingActive"))),
            // 35 clients × 10m on one pod = 350m = 350 % → desired ceil(7 × 1) = 7, but the
            // default scale-up policy allows max(1 + 4 pods, 1 × 200 %) = 5 per 15 s.
            75 => checks.push((t, condition(&handle, "ScalingLimited"))),
            // Load gone at 300 s; 0 % from the 315 s sync on, but the 60 s scale-down
            // window still holds the recommendation of 7 made at 300 s.
            330 => checks.push((t, condition(&handle, "AbleToScale"))),
            _ => {}
        }
    }
    assert_eq!(
        checks,
        vec![
            (15, ("False".into(), "FailedGetResourceMetric".into())),
            (75, ("True".into(), "ScaleUpLimit".into())),
            (330, ("True".into(), "ScaleDownStabilized".into())),
        ]
    );
    // 90 s: the 4 new pods have no metrics yet; counted at 0 % the ratio flips below 1,
    //       so nothing changes.
    // 105 s: every pod at 70m = 70 % → ceil(1.4 × 5) = 7, within the next period's limit.
    // 120 s: the 2 newest pods lack metrics again → no change; 135 s on: 50 % each.
    // 300 s: the last window ends with one idle second: 47 % → within tolerance.
    // 360 s: the 7 recorded at 300 s left the window → 0 → clamped to min 1.
    let mut expected = Vec::new();
    for step in 1..=28u64 {
        let t = step * 15;
        let r = match t {
            ..75 => 1,
            75..105 => 5,
            105..360 => 7,
            _ => 1,
        };
        expected.push((t, r));
    }
    assert_eq!(trajectory, expected);

    let events: Vec<(String, i32)> = handle
        .scaling_events()
        .into_iter()
        .map(|e| (e.message.unwrap_or_default(), e.count.unwrap_or(0)))
        .collect();
    assert_eq!(
        events,
        vec![
            (format!("New size: 5; reason: {UP}"), 1),
            (format!("New size: 7; reason: {UP}"), 1),
            (
                "New size: 1; reason: All metrics below target".to_string(),
                1
            ),
        ]
    );

    // The same events through the API, as the sender reads them.
    let client = client(&sim);
    let core: Api<Event> = Api::namespaced(client.clone(), "default");
    let listed = core
        .list(&ListParams::default().fields("reason=SuccessfulRescale"))
        .await
        .expect("list events");
    assert_eq!(listed.items.len(), 3);
    let e = &listed.items[0];
    assert_eq!(e.type_.as_deref(), Some("Normal"));
    assert_eq!(
        e.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("horizontal-pod-autoscaler")
    );
    assert_eq!(
        e.involved_object.kind.as_deref(),
        Some("HorizontalPodAutoscaler")
    );
    assert_eq!(e.involved_object.name.as_deref(), Some("app"));
    assert_eq!(
        e.involved_object.api_version.as_deref(),
        Some("autoscaling/v2")
    );
    assert!(e.first_timestamp.is_some() && e.last_timestamp == e.first_timestamp);
    let hpa: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    let uid = hpa.get("app").await.expect("get hpa").metadata.uid;
    assert_eq!(e.involved_object.uid, uid);

    let v1: Api<EventV1> = Api::namespaced(client, "default");
    let listed = v1
        .list(&ListParams::default().fields("reason=SuccessfulRescale,regarding.name=app"))
        .await
        .expect("list events.k8s.io");
    let notes: Vec<_> = listed.items.iter().filter_map(|e| e.note.clone()).collect();
    assert_eq!(notes.len(), 3);
    assert_eq!(notes[2], "New size: 1; reason: All metrics below target");
    assert_eq!(
        listed.items[0].reporting_controller.as_deref(),
        Some("horizontal-pod-autoscaler")
    );
    assert_eq!(listed.items[0].deprecated_count, Some(1));
}

#[tokio::test]
async fn hpa_status_reports_the_current_utilization() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(150)).expect("advance");
    let status = handle.hpa_status("default", "app").expect("status");
    assert_eq!(status.current_replicas, Some(7));
    assert_eq!(status.desired_replicas, 7);
    let current = status.current_metrics.expect("metrics")[0]
        .resource
        .clone()
        .expect("resource metric")
        .current;
    assert_eq!(current.average_utilization, Some(50));
    assert_eq!(current.average_value.map(|q| q.0), Some("50m".to_string()));
    let (status, reason) = condition(&handle, "ScalingActive");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ValidMetricFound")
    );
    // Served through the API like the real object.
    let hpa: Api<HorizontalPodAutoscaler> = Api::namespaced(client(&sim), "default");
    let listed = hpa.list(&ListParams::default()).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    let served = listed.items[0].status.clone().expect("served status");
    assert_eq!(served.current_replicas, Some(7));
    assert!(
        listed.items[0].metadata.managed_fields.is_some(),
        "managedFields are present"
    );
}

#[tokio::test]
async fn the_same_seed_replays_the_same_cluster_with_new_uids() {
    let demo = kube_relay_sim::Scenario::builtin("demo").expect("demo");
    let run = |scenario: kube_relay_sim::Scenario| async move {
        let (_sim, handle) = common::start_scenario(scenario, ClockMode::Manual).await;
        handle.advance(Duration::from_secs(150)).expect("advance");
        let pods: Vec<_> = handle
            .pods()
            .into_iter()
            .map(|p| (p.metadata.name, p.status.map(|s| s.phase)))
            .collect();
        let events: Vec<_> = handle
            .scaling_events()
            .into_iter()
            .map(|e| e.message)
            .collect();
        let uids: Vec<_> = handle.pods().into_iter().map(|p| p.metadata.uid).collect();
        ((pods, events), uids)
    };
    let (a, a_uids) = run(demo.clone()).await;
    let (b, b_uids) = run(demo.clone()).await;
    assert_eq!(a, b);
    assert!(!a.1.is_empty(), "the demo scales within 150 s");
    // uids are never reused, not even by a replay: clients tell objects apart by them.
    assert!(a_uids.iter().all(|u| !b_uids.contains(u)));
    let (c, _) = run(demo.with_seed(99)).await;
    assert_ne!(a.0, c.0, "another seed names pods differently");
}
