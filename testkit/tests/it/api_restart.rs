//! The API server restarted with fresh state under a running sender (issue 15): what an etcd
//! restore or a rebuilt control plane looks like to the relay.
//!
//! The real `sender` and `receiver` binaries relay a simulated cluster (manual clock). The
//! cluster's HPA scales up and down; then the simulator is stopped and the same scenario is
//! started afresh on the same address: every resourceVersion the sender holds is one the new
//! server never issued, and the new cluster replays the same seeded history (same pod names,
//! same scaling). The receiver must then hold exactly the new cluster's pods and HPA, and the
//! scaling-action counters must go on counting: the old cluster's actions plus the new one's,
//! each once.
//!
//! What used to go wrong: the simulator let a watch from a future resourceVersion hang
//! silently (the sender kept pods that no longer existed and missed new ones); kube's watcher
//! resumes from the same resourceVersion for ever on `504 Too large resource version`; and a
//! restarted simulator reissued the same uids, so the new cluster's scaling Events looked
//! already counted.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kube_relay_testkit::prometheus::free_loopback_addr;
use kube_relay_testkit::wait_until;
use kube_relay_testkit::{exposition, http};
use serde_json::Value;

use common::{
    Cluster, Pods, differing_pods, logs, relayed_pods, relayed_scaling, scrape, spawn_receiver,
    spawn_sender, sum,
};

/// php-apache behind an HPA whose load the test sets, and a small web tier.
const SCENARIO: &str = r#"
name: api-restart
description: an HPA that rescales on demand, and a few steady pods
seed: 21
nodes: {count: 2, cpu: "16", memory: 32Gi}
namespaces: [scratch]
deployments:
  - name: php-apache
    namespace: default
    replicas: 1
    image: registry.k8s.io/hpa-example
    requests: {cpu: 200m, memory: 64Mi}
    startup: 1s
    readiness: 1s
    load: {idle_cpu: 1m, cpu_per_client: 60m, memory: 24Mi, curve: [{at: 0s, clients: 0}]}
  - {name: web, namespace: shop, replicas: 4, image: nginx:1.27, startup: 1s, readiness: 1s}
hpas:
  - {name: php-apache, namespace: default, target: php-apache, min: 1, max: 10,
     cpu_utilization: 50, scale_down_stabilization: 10s}
api: {bookmark_interval: 1s}
"#;

const HPA: &str = "php-apache";
const NAME: &str = "api-restart";

/// What must be equal on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    /// pod → (phase, ready).
    pods: Pods,
    /// node → system UUID (the node's uid: a new cluster's nodes are new objects).
    nodes: BTreeMap<String, String>,
    /// Active namespaces.
    namespaces: BTreeSet<String>,
    /// deployment → spec.replicas.
    deployments: BTreeMap<String, i64>,
    /// The HPA's desired replicas.
    desired: Option<i32>,
    /// direction → scaling actions.
    scaling: BTreeMap<String, i64>,
}

/// Sets php-apache's load and lets `secs` simulated seconds pass, 1 s at a time.
fn load_for(cluster: &Cluster, clients: f64, secs: u64) -> Result<()> {
    cluster.handle.set_load("default", HPA, clients)?;
    for _ in 0..secs {
        cluster.handle.advance(Duration::from_secs(1))?;
    }
    Ok(())
}

/// The cluster's state, with `counted` scaling actions added (those of an earlier cluster).
async fn truth(cluster: &Cluster, counted: &BTreeMap<String, i64>) -> Result<State> {
    let mut scaling = cluster.scaling_actions();
    for (direction, n) in counted {
        *scaling.entry(direction.clone()).or_insert(0) += n;
    }
    let list = |path: &'static str| async move {
        let r = http::get(cluster.sim.local_addr(), path, &[]).await?;
        let list: Value = serde_json::from_slice(&r.body)?;
        Ok::<_, anyhow::Error>(list["items"].as_array().cloned().unwrap_or_default())
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let nodes = list("/api/v1/nodes")
        .await?
        .iter()
        .map(|n| {
            (
                text(&n["metadata"]["name"]),
                text(&n["status"]["nodeInfo"]["systemUUID"]),
            )
        })
        .collect();
    let namespaces = list("/api/v1/namespaces")
        .await?
        .iter()
        .map(|n| text(&n["metadata"]["name"]))
        .collect();
    let deployments = list("/apis/apps/v1/deployments")
        .await?
        .iter()
        .map(|d| {
            (
                text(&d["metadata"]["name"]),
                d["spec"]["replicas"].as_i64().unwrap_or(1),
            )
        })
        .collect();
    Ok(State {
        pods: cluster.pods(),
        nodes,
        namespaces,
        deployments,
        desired: cluster
            .handle
            .hpa_status("default", HPA)
            .map(|s| s.desired_replicas),
        scaling,
    })
}

/// The same, as the receiver serves it.
async fn relayed(http: std::net::SocketAddr) -> Result<State> {
    let samples = scrape(http).await?;
    let desired = exposition::select(
        &samples,
        "kube_horizontalpodautoscaler_status_desired_replicas",
        &[("cluster", NAME), ("horizontalpodautoscaler", HPA)],
    )
    .next()
    .map(|s| s.value as i32);
    let ours = [("cluster", NAME)];
    let nodes = exposition::select(&samples, "kube_node_info", &ours)
        .map(|s| {
            (
                s.label("node").to_owned(),
                s.label("system_uuid").to_owned(),
            )
        })
        .collect();
    let namespaces = exposition::select(&samples, "kube_namespace_status_phase", &ours)
        .filter(|s| s.label("phase") == "Active" && s.value == 1.0)
        .map(|s| s.label("namespace").to_owned())
        .collect();
    let deployments = exposition::select(&samples, "kube_deployment_spec_replicas", &ours)
        .map(|s| (s.label("deployment").to_owned(), s.value as i64))
        .collect();
    Ok(State {
        pods: relayed_pods(&samples, NAME),
        nodes,
        namespaces,
        deployments,
        desired,
        scaling: relayed_scaling(&samples, NAME, HPA),
    })
}

/// Waits until the receiver's state equals `want` (the cluster must be frozen).
async fn converged(http: std::net::SocketAddr, want: &State, timeout: Duration) -> Result<()> {
    let last = std::sync::Mutex::new(None);
    wait_until(
        "receiver state equal to the cluster's",
        timeout,
        Duration::from_millis(50),
        || async {
            let got = relayed(http).await?;
            let equal = &got == want;
            if let Ok(mut l) = last.lock() {
                *l = Some(got);
            }
            Ok(equal.then_some(()))
        },
    )
    .await
    .with_context(|| {
        let got = last.lock().ok().and_then(|l| l.clone());
        match got {
            Some(got) => format!(
                "{} pods differ; nodes {:?} (cluster {:?}); namespaces {:?} (cluster {:?}); \
                 deployments {:?} (cluster {:?}); HPA desired {:?} (cluster {:?}); scaling \
                 {:?} (cluster {:?})",
                differing_pods(&got.pods, &want.pods),
                got.nodes,
                want.nodes,
                got.namespaces,
                want.namespaces,
                got.deployments,
                want.deployments,
                got.desired,
                want.desired,
                got.scaling,
                want.scaling
            ),
            None => "nothing relayed".to_string(),
        }
    })
}

/// Every watched resource, as `relay_sender_watch_restarts_total` labels them.
const RESOURCES: [&str; 7] = [
    "pods",
    "horizontalpodautoscalers",
    "nodes",
    "namespaces",
    "events",
    "deployments",
    "replicasets",
];

/// `relay_sender_watch_restarts_total` per resource, as relayed.
async fn watch_restarts(http: std::net::SocketAddr) -> Result<BTreeMap<String, f64>> {
    let samples = scrape(http).await?;
    Ok(RESOURCES
        .iter()
        .map(|r| {
            let n = sum(
                &samples,
                "relay_sender_watch_restarts_total",
                &[("cluster", NAME), ("resource", r)],
            );
            (r.to_string(), n)
        })
        .collect())
}

/// Waits until every resource's watch restarts went up from `before`.
async fn relisted_all(http: std::net::SocketAddr, before: &BTreeMap<String, f64>) -> Result<()> {
    wait_until(
        "every watcher relisted",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let now = watch_restarts(http).await?;
            Ok(RESOURCES
                .iter()
                .all(|r| now.get(*r) > before.get(*r))
                .then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restarted_with_fresh_state_is_relayed_exactly() -> Result<()> {
    let cluster = Cluster::start(SCENARIO).await?;
    let (ingest, http) = (free_loopback_addr()?, free_loopback_addr()?);
    let receiver = spawn_receiver(ingest, http, "1s")?;
    let sender = spawn_sender(&cluster, NAME, ingest, &[])?;
    let both_logs = || logs(&sender, &receiver);
    let none = BTreeMap::new();

    // The first cluster scales up and back down, and all of it is relayed.
    converged(
        http,
        &truth(&cluster, &none).await?,
        Duration::from_secs(60),
    )
    .await
    .with_context(both_logs)?;
    load_for(&cluster, 10.0, 40)?;
    load_for(&cluster, 0.0, 40)?;
    // The old cluster moves on: a web pod replaced and two added, a node and an empty
    // namespace deleted (so every watcher has seen a change since its first list). After
    // the restart all of that is undone: the new cluster starts as the old one did.
    let web: Vec<String> = cluster
        .pods()
        .into_keys()
        .filter(|p| p.starts_with("web-"))
        .collect();
    cluster.handle.delete_pod("shop", &web[0])?;
    cluster.handle.scale_deployment("shop", "web", 6)?;
    cluster.handle.delete_node("sim-worker-2")?;
    ensure!(
        cluster.handle.delete_namespace("scratch")?,
        "an empty namespace goes at once"
    );
    cluster.handle.advance(Duration::from_secs(10))?;
    let first = truth(&cluster, &none).await?;
    ensure!(
        first.scaling.contains_key("up") && first.scaling.contains_key("down"),
        "the HPA scaled up and down: {:?}",
        first.scaling
    );
    converged(http, &first, Duration::from_secs(60))
        .await
        .with_context(both_logs)?;
    let old_rv = cluster.handle.resource_version();
    let restarts_before = watch_restarts(http).await?;

    // Restart with fresh state: the new cluster has its first 30 s behind it.
    let restarted = Instant::now();
    let cluster = cluster.restart(SCENARIO).await?;
    let new_rv = cluster.handle.resource_version();
    ensure!(
        new_rv < old_rv,
        "the new cluster starts behind the old one's resourceVersion ({new_rv} >= {old_rv})"
    );
    let renewed = differing_pods(&first.pods, &cluster.pods());
    ensure!(
        renewed >= 4,
        "the new cluster's pods differ from the old one's ({renewed} differ)"
    );
    // Every watcher relists (refused as too large) before the new cluster moves on: one
    // that resumed after the new cluster had passed its old resourceVersion could not be
    // told apart from a healthy resume, on a real API server as here.
    relisted_all(http, &restarts_before)
        .await
        .with_context(both_logs)?;
    converged(
        http,
        &truth(&cluster, &first.scaling).await?,
        Duration::from_secs(60),
    )
    .await
    .with_context(both_logs)?;
    let relisted = restarted.elapsed();

    // The new cluster replays the same seeded history: the same scaling, counted again.
    load_for(&cluster, 10.0, 40)?;
    load_for(&cluster, 0.0, 40)?;
    let second = truth(&cluster, &first.scaling).await?;
    ensure!(
        second.scaling != first.scaling,
        "the new cluster scaled too: {:?}",
        second.scaling
    );
    converged(http, &second, Duration::from_secs(60))
        .await
        .with_context(both_logs)?;
    println!(
        "FIGURE api-restart: resourceVersion {old_rv} before the restart, {new_rv} after; \
         receiver equal to the new cluster ({} pods, {renewed} differing from the old one's) \
         {:.1} s after the restart; scaling actions {:?} across both clusters",
        second.pods.len(),
        relisted.as_secs_f64(),
        second.scaling
    );
    drop(sender);
    cluster.shutdown().await;
    Ok(())
}
