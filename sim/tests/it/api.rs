//! The API surface the sender relies on, through kube-rs and raw HTTP: every kind it
//! watches, discovery, selectors, watch semantics, injected faults, metrics.k8s.io (and its
//! absence) and the kubelet's resource metrics.

use crate::common;

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_metrics::v1beta1::{NodeMetrics, PodMetrics};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube_relay_sim::{ClockMode, Fault};
use kube_relay_testkit::http;
use serde_json::Value;

use common::{client, start};

const SCENARIO: &str = r#"
seed: 8
jitter: 0
nodes: {count: 2}
deployments:
  - name: web
    namespace: shop
    replicas: 2
    image: nginx:1.27
    labels: {app: web, tier: front}
    requests: {cpu: 100m, memory: 64Mi}
    startup: 1s
    readiness: 1s
    load: {idle_cpu: 2m, cpu_per_client: 10m, memory: 30Mi, noise: 0, curve: [{at: 0s, clients: 4}]}
hpas:
  - {name: web, namespace: shop, target: web, min: 1, max: 4, cpu_utilization: 80}
events: {ttl: 2m}
api: {bookmark_interval: 200ms}
"#;

async fn get_json(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let r = http::get(addr, path, &[]).await.expect("request");
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

#[tokio::test]
async fn kube_reads_every_kind_the_sender_watches() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(40)).expect("advance");
    let c = client(&sim);

    let pods = Api::<Pod>::all(c.clone())
        .list(&ListParams::default())
        .await
        .expect("pods");
    assert_eq!(pods.items.len(), 2);
    let pod = &pods.items[0];
    let status = pod.status.clone().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.qos_class.as_deref(), Some("Burstable"));
    let cs = &status.container_statuses.expect("container statuses")[0];
    assert!(cs.ready && cs.started == Some(true) && cs.restart_count == 0);
    assert!(
        cs.container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("containerd://"))
    );
    assert!(
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| n.starts_with("sim-worker-"))
    );
    assert!(
        pod.metadata
            .managed_fields
            .as_ref()
            .is_some_and(|m| m.iter().any(|e| e.manager.as_deref() == Some("kubelet")))
    );

    // Owner chain Deployment → ReplicaSet → Pod, controller references all the way.
    let owner = &pod.metadata.owner_references.clone().expect("pod owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("ReplicaSet", Some(true))
    );
    let rs = Api::<ReplicaSet>::namespaced(c.clone(), "shop")
        .get(&owner.name)
        .await
        .expect("rs");
    assert_eq!(rs.metadata.uid.as_deref(), Some(owner.uid.as_str()));
    let rs_owner = &rs.metadata.owner_references.clone().expect("rs owner")[0];
    assert_eq!(rs_owner.kind, "Deployment");
    let deploy = Api::<Deployment>::namespaced(c.clone(), "shop")
        .get("web")
        .await
        .expect("deployment");
    assert_eq!(deploy.metadata.uid.as_deref(), Some(rs_owner.uid.as_str()));
    let ds = deploy.status.expect("deployment status");
    assert_eq!(
        (ds.replicas, ds.ready_replicas, ds.available_replicas),
        (Some(2), Some(2), Some(2))
    );

    let nodes = Api::<Node>::all(c.clone())
        .list(&ListParams::default())
        .await
        .expect("nodes");
    assert_eq!(nodes.items.len(), 2);
    let info = nodes.items[0]
        .status
        .clone()
        .and_then(|s| s.node_info)
        .expect("node info");
    assert_eq!(info.kubelet_version, "v1.35.0");
    assert!(info.container_runtime_version.starts_with("containerd://"));

    let namespaces = Api::<Namespace>::all(c.clone())
        .list(&ListParams::default())
        .await
        .expect("namespaces");
    let names: Vec<_> = namespaces
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert_eq!(
        names,
        [
            "default",
            "kube-node-lease",
            "kube-public",
            "kube-system",
            "shop"
        ]
    );

    let hpas = Api::<HorizontalPodAutoscaler>::all(c.clone())
        .list(&ListParams::default())
        .await
        .expect("hpas");
    assert_eq!(hpas.items[0].spec.as_ref().map(|s| s.max_replicas), Some(4));

    // metrics.k8s.io: 4 clients × 10m over 2 pods + 2m idle = 22m per pod.
    let metrics = Api::<PodMetrics>::all(c.clone())
        .list(&ListParams::default())
        .await
        .expect("pod metrics");
    assert_eq!(metrics.items.len(), 2);
    for m in &metrics.items {
        assert_eq!(m.window, Duration::from_secs(15));
        assert_eq!(m.containers[0].usage.cpu.0, "22000000n");
        assert_eq!(m.containers[0].usage.memory.0, "30720Ki");
    }
    let one = Api::<PodMetrics>::namespaced(c.clone(), "shop")
        .get(pod.metadata.name.as_deref().expect("name"))
        .await
        .expect("one pod's metrics");
    assert_eq!(one.metadata.name, pod.metadata.name);
    let node_metrics = Api::<NodeMetrics>::all(c.clone())
        .list(&ListParams::default())
        .await
        .expect("node metrics");
    assert_eq!(node_metrics.items.len(), 2);

    // Events by field selector, as the sender asks for scaling events.
    let events = Api::<Event>::all(c)
        .list(
            &ListParams::default()
                .fields("involvedObject.kind=Deployment,reason=ScalingReplicaSet"),
        )
        .await
        .expect("events");
    assert_eq!(events.items.len(), 1);
    assert_eq!(
        events.items[0]
            .message
            .as_deref()
            .map(|m| m.starts_with("Scaled up replica set web-")),
        Some(true)
    );
}

#[tokio::test]
async fn discovery_describes_the_served_groups() {
    let (sim, _handle) = start(SCENARIO, ClockMode::Manual).await;
    let addr = sim.local_addr();
    let (code, v) = get_json(addr, "/api").await;
    assert_eq!(
        (code, v["kind"].as_str(), v["versions"][0].as_str()),
        (200, Some("APIVersions"), Some("v1"))
    );
    let (_, v) = get_json(addr, "/apis").await;
    let groups: Vec<_> = v["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(
        groups,
        ["apps", "events.k8s.io", "autoscaling", "metrics.k8s.io"]
    );
    let (_, v) = get_json(addr, "/apis/metrics.k8s.io/v1beta1").await;
    assert_eq!(v["kind"], "APIResourceList");
    assert_eq!(v["resources"][0]["kind"], "PodMetrics");
    let (_, v) = get_json(addr, "/api/v1").await;
    let pods = v["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "pods")
        .cloned()
        .expect("pods");
    assert_eq!(
        (pods["namespaced"].as_bool(), pods["shortNames"][0].as_str()),
        (Some(true), Some("po"))
    );
    let (_, v) = get_json(addr, "/version").await;
    assert_eq!(
        (v["major"].as_str(), v["minor"].as_str()),
        (Some("1"), Some("35"))
    );
    let (code, v) = get_json(addr, "/apis/batch/v1").await;
    assert_eq!((code, v), (404, Value::Null));
    let (code, v) = get_json(addr, "/api/v1/namespaces/shop/widgets").await;
    assert_eq!((code, v["reason"].as_str()), (404, Some("NotFound")));
    let (code, v) = get_json(addr, "/api/v1/namespaces/shop/pods/nope").await;
    assert_eq!(
        (code, v["message"].as_str()),
        (404, Some("pods \"nope\" not found"))
    );
}

#[tokio::test]
async fn without_metrics_server_there_is_no_metrics_api_and_the_hpa_says_why() {
    let yaml = format!("{SCENARIO}\nmetrics: {{enabled: false}}\n");
    let (sim, handle) = start(&yaml, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(30)).expect("advance");
    let (_, v) = get_json(sim.local_addr(), "/apis").await;
    assert!(!v.to_string().contains("metrics.k8s.io"));
    let err = Api::<PodMetrics>::all(client(&sim))
        .list(&ListParams::default())
        .await
        .expect_err("no metrics API");
    assert!(err.to_string().contains("404"), "{err}");
    let status = handle.hpa_status("shop", "web").expect("status");
    let active = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "ScalingActive")
        .expect("ScalingActive");
    assert_eq!(
        (active.status.as_str(), active.reason.as_deref()),
        ("False", Some("FailedGetResourceMetric"))
    );
    assert!(
        active
            .message
            .unwrap_or_default()
            .contains("the server could not find the requested resource (get pods.metrics.k8s.io)")
    );
    assert!(
        !handle
            .events_with_reason("FailedGetResourceMetric")
            .is_empty()
    );
}

#[tokio::test]
async fn queries_tolerate_odd_strings_and_validate_selectors() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(5)).expect("advance");
    let addr = sim.local_addr();
    let (code, v) = get_json(addr, "/api/v1/pods?&limit=500").await;
    assert_eq!((code, v["items"].as_array().map(Vec::len)), (200, Some(2)));
    let (_, v) = get_json(
        addr,
        "/api/v1/namespaces/shop/pods?labelSelector=tier%20in%20(front,back),app%3Dweb",
    )
    .await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2));
    let (_, v) = get_json(addr, "/api/v1/pods?labelSelector=app!%3Dweb").await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(0));
    let node = handle.pods()[0]
        .spec
        .clone()
        .and_then(|s| s.node_name)
        .expect("scheduled");
    let (_, v) = get_json(
        addr,
        &format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"),
    )
    .await;
    let on_node = handle
        .pods()
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()))
        .count();
    assert_eq!(v["items"].as_array().map(Vec::len), Some(on_node));
    let (code, v) = get_json(addr, "/api/v1/pods?fieldSelector=spec.color%3Dblue").await;
    assert_eq!(
        (code, v["reason"].as_str(), v["message"].as_str()),
        (
            400,
            Some("BadRequest"),
            Some("field label not supported: spec.color")
        )
    );
    let (code, _) = get_json(addr, "/api/v1/pods?labelSelector=app%3D(x").await;
    assert_eq!(code, 400);
    // A token of another run of the simulator (or one long expired) is gone; garbage is not
    // a token at all.
    let (code, v) = get_json(addr, "/api/v1/pods?continue=1.9999.4").await;
    assert_eq!((code, v["reason"].as_str()), (410, Some("Expired")));
    let (code, _) = get_json(addr, "/api/v1/pods?continue=9999.4").await;
    assert_eq!(code, 400);
    // Tables for kubectl, plain lists for everyone else.
    let r = http::get(
        addr,
        "/api/v1/pods",
        &[(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )],
    )
    .await
    .expect("table");
    let t: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let r = http::get(
        addr,
        "/api/v1/pods",
        &[("Accept", "application/vnd.kubernetes.protobuf")],
    )
    .await
    .expect("protobuf only");
    assert_eq!(r.status, 406);
}

#[tokio::test]
async fn injected_faults_hit_resource_requests_only() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    let addr = sim.local_addr();
    handle.inject_fault(Fault::Errors {
        requests: 2,
        resource: Some("pods".into()),
    });
    let (code, _) = get_json(addr, "/api/v1/nodes").await;
    assert_eq!(code, 200, "other resources are unaffected");
    let (code, _) = get_json(addr, "/api").await;
    assert_eq!(code, 200, "discovery is unaffected");
    for _ in 0..2 {
        let (code, v) = get_json(addr, "/api/v1/pods").await;
        assert_eq!((code, v["reason"].as_str()), (500, Some("InternalError")));
    }
    let (code, _) = get_json(addr, "/api/v1/pods").await;
    assert_eq!(code, 200, "only the next 2 requests fail");

    handle.inject_fault(Fault::Slow {
        requests: 1,
        delay: Duration::from_millis(300),
    });
    let started = Instant::now();
    let (code, _) = get_json(addr, "/api/v1/pods").await;
    assert_eq!(code, 200);
    // A lower bound the server guarantees, not a performance figure.
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn watches_follow_the_api_servers_rules() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(10)).expect("advance");
    let pods: Api<Pod> = Api::namespaced(client(&sim), "shop");
    let list = pods.list(&ListParams::default()).await.expect("list");
    let rv = list.metadata.resource_version.expect("rv");

    // A field selector on status.phase: pods entering the selection arrive as ADDED,
    // pods leaving it as DELETED — never as MODIFIED from outside.
    let params = WatchParams::default()
        .fields("status.phase=Running")
        .disable_bookmarks()
        .timeout(20);
    let mut stream = pods.watch(&params, &rv).await.expect("watch").boxed();
    handle.scale_deployment("shop", "web", 3).expect("scale");
    handle.advance(Duration::from_secs(10)).expect("advance");
    let mut first_running = None;
    while first_running.is_none() {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await {
            Ok(Ok(Some(WatchEvent::Added(p)))) => first_running = p.metadata.name,
            Ok(Ok(Some(WatchEvent::Modified(p)))) => {
                assert!(
                    list.items
                        .iter()
                        .any(|l| l.metadata.name == p.metadata.name),
                    "MODIFIED only for pods already Running"
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let new_pod = first_running.expect("a new pod started running");
    assert!(
        list.items
            .iter()
            .all(|p| p.metadata.name.as_deref() != Some(new_pod.as_str()))
    );

    // timeoutSeconds ends the stream cleanly, after a last bookmark.
    let params = WatchParams::default().timeout(1);
    let mut stream = pods
        .watch(&params, &handle.resource_version().to_string())
        .await
        .expect("watch")
        .boxed();
    let mut last = None;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("stream ends")
        .expect("event")
    {
        last = Some(ev);
    }
    assert!(matches!(last, Some(WatchEvent::Bookmark(_))), "{last:?}");

    // Streaming lists (sendInitialEvents) end their initial events with a marked bookmark.
    let config = watcher::Config::default().streaming_lists();
    let mut w = watcher(pods.clone(), config).boxed();
    let mut initial = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.try_next())
            .await
            .expect("watcher answers")
            .expect("event")
        {
            Some(watcher::Event::Init) => {}
            Some(watcher::Event::InitApply(_)) => initial += 1,
            Some(watcher::Event::InitDone) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(initial, 3);
}

#[tokio::test]
async fn events_expire_after_their_ttl() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(10)).expect("advance");
    let events: Api<Event> = Api::all(client(&sim));
    let list = events.list(&ListParams::default()).await.expect("list");
    let created = list.items.len();
    assert!(created >= 10, "scheduling, pulling, starting: {created}");
    let rv = list.metadata.resource_version.expect("rv");
    let mut stream = events
        .watch(&WatchParams::default().disable_bookmarks().timeout(20), &rv)
        .await
        .expect("watch")
        .boxed();
    // TTL 2 m: everything created in the first 10 s is gone by 2 m 10 s.
    handle.advance(Duration::from_secs(125)).expect("advance");
    let mut deleted = 0;
    while deleted < created {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .expect("events")
            .expect("event")
        {
            Some(WatchEvent::Deleted(_)) => deleted += 1,
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(deleted, created);
    let remaining = events
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    assert!(
        remaining
            .iter()
            .all(|e| e.reason.as_deref() != Some("Scheduled")),
        "{remaining:?}"
    );
}

#[tokio::test]
async fn the_kubelet_resource_endpoint_serves_cumulative_usage() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(20)).expect("advance");
    let pod = handle.pods().remove(0);
    let node = pod.spec.and_then(|s| s.node_name).expect("scheduled");
    let name = pod.metadata.name.expect("name");
    let path = format!("/api/v1/nodes/{node}/proxy/metrics/resource");
    let sample = |text: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with("container_cpu_usage_seconds_total{")
                    && l.contains(&format!("pod=\"{name}\""))
            })
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("a sample for the pod")
    };
    let r = http::get(sim.local_addr(), &path, &[]).await.expect("get");
    assert_eq!(r.status, 200);
    let text = r.text().expect("utf-8").to_string();
    for family in [
        "container_memory_working_set_bytes",
        "node_cpu_usage_seconds_total",
        "pod_cpu_usage_seconds_total",
        "resource_scrape_error",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    let before = sample(&text);
    handle.advance(Duration::from_secs(10)).expect("advance");
    let r = http::get(sim.local_addr(), &path, &[]).await.expect("get");
    let after = sample(r.text().expect("utf-8"));
    // 22m for 10 s = 0.22 core-seconds more.
    assert!((after - before - 0.22).abs() < 1e-9, "{before} → {after}");
    let (code, _) = get_json(
        sim.local_addr(),
        "/api/v1/nodes/ghost/proxy/metrics/resource",
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn hostile_parameters_are_answered_not_fatal() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(5)).expect("advance");
    let addr = sim.local_addr();
    let (_, first) = get_json(addr, "/api/v1/pods?limit=1").await;
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("continue token")
        .to_string();
    let (snapshot, _) = token.rsplit_once('.').expect("token names an offset");
    let (code, v) = get_json(
        addr,
        &format!("/api/v1/pods?limit=5&continue={snapshot}.18446744073709551615"),
    )
    .await;
    assert_eq!((code, v["items"].as_array().map(Vec::len)), (200, Some(0)));
    let (code, _) = get_json(addr, "/api/v1/pods?limit=18446744073709551615").await;
    assert_eq!(code, 200);
    let r = http::request(
        addr,
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments/web/scale",
        &[("Content-Type", "application/merge-patch+json")],
        br#"{"spec":{"replicas":1000000000}}"#,
    )
    .await
    .expect("patch");
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let r = http::request(
        addr,
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments/web/scale",
        &[("Content-Type", "application/merge-patch+json")],
        b"{not json",
    )
    .await
    .expect("patch");
    assert_eq!(r.status, 400);
    let pod = handle.pods()[0].metadata.name.clone().expect("name");
    let r = http::request(
        addr,
        "DELETE",
        &format!("/api/v1/namespaces/shop/pods/{pod}?gracePeriodSeconds=9223372036854775807"),
        &[],
        b"",
    )
    .await
    .expect("delete");
    assert_eq!(r.status, 200);
    let r = http::request(
        addr,
        "DELETE",
        "/api/v1/namespaces/shop/pods/ghost",
        &[],
        b"",
    )
    .await
    .expect("delete");
    assert_eq!(r.status, 404);
    let r = http::request(addr, "POST", "/api/v1/namespaces/shop/pods", &[], b"{}")
        .await
        .expect("post");
    assert_eq!(r.status, 405);
    // The server still answers.
    let (code, _) = get_json(addr, "/api/v1/pods").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn scenario_timelines_inject_faults_and_crashes_on_time() {
    let yaml = format!(
        "{SCENARIO}\nfaults: [{{at: 10s, kind: errors, requests: 1, resource: pods}}]\ncrashes: [{{at: 12s, namespace: shop, deployment: web, action: crash}}]\n"
    );
    let (sim, handle) = start(&yaml, ClockMode::Manual).await;
    let addr = sim.local_addr();
    handle
        .advance(Duration::from_millis(9_900))
        .expect("advance");
    assert_eq!(get_json(addr, "/api/v1/pods").await.0, 200, "not yet");
    handle.advance(Duration::from_millis(100)).expect("advance");
    assert_eq!(get_json(addr, "/api/v1/pods").await.0, 500, "at 10 s");
    assert_eq!(
        get_json(addr, "/api/v1/pods").await.0,
        200,
        "for one request"
    );
    let restarts = |h: &kube_relay_sim::SimHandle| -> i32 {
        h.pods()
            .iter()
            .filter_map(|p| {
                p.status
                    .as_ref()?
                    .container_statuses
                    .as_ref()?
                    .first()
                    .map(|c| c.restart_count)
            })
            .sum()
    };
    handle
        .advance(Duration::from_millis(1_900))
        .expect("advance");
    assert_eq!(restarts(&handle), 0);
    handle.advance(Duration::from_secs(5)).expect("advance");
    assert_eq!(
        restarts(&handle),
        1,
        "one pod crashed at 12 s and was restarted"
    );
}
