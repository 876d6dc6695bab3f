//! The walking skeleton, end to end: simulated cluster → `sender` process → `receiver`
//! process → Debian's real Prometheus, asserted through the Prometheus HTTP API.
//!
//! The simulated cluster runs in this test (manual clock, so its state holds still while
//! Prometheus catches up); sender and receiver are the real binaries, configured only by
//! their flags, exactly as a user runs them.

use std::time::Duration;

use anyhow::{Context, Result};
use kube_relay_sim::{ClockMode, Scenario, Simulator};
use kube_relay_testkit::http;
use kube_relay_testkit::process::ChildProcess;
use kube_relay_testkit::prometheus::free_loopback_addr;
use kube_relay_testkit::{Prometheus, wait_until};

const CLUSTER: &str = "skeleton";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_state_reaches_prometheus_and_deleted_pods_vanish() -> Result<()> {
    // Host A: the cluster, settled (pods Running, the HPA synced).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim = Simulator::start(Scenario::builtin("demo")?, listener, ClockMode::Manual).await?;
    let cluster = sim.handle();
    cluster.advance(Duration::from_secs(15))?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, sim.kubeconfig_yaml())?;

    // Host B: the receiver, and Prometheus scraping it.
    let ingest = free_loopback_addr()?;
    let http_addr = free_loopback_addr()?;
    let receiver = ChildProcess::spawn(
        "receiver",
        [
            "--listen",
            &ingest.to_string(),
            "--http-listen",
            &http_addr.to_string(),
        ],
        &[],
    )?;
    wait_until(
        "receiver /readyz",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { Ok((http::get(http_addr, "/readyz", &[]).await?.status == 200).then_some(())) },
    )
    .await
    .with_context(|| receiver.log())?;

    let sender = ChildProcess::spawn(
        "sender",
        [
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--target",
            &ingest.to_string(),
            "--cluster",
            CLUSTER,
        ],
        &[],
    )?;
    let prom = Prometheus::start(&[http_addr]).await?;

    // Every Running pod of the simulated cluster, and no other, is Running in Prometheus.
    let running = cluster
        .pods()
        .iter()
        .filter(|p| phase(p) == "Running")
        .count();
    assert!(
        running >= 3,
        "the demo runs php-apache and two echo-servers: {running}"
    );
    let query = format!(r#"sum(kube_pod_status_phase{{cluster="{CLUSTER}",phase="Running"}})"#);
    prom.wait_for(&query, Duration::from_secs(60), |s| {
        s.first().is_some_and(|s| s.value == running as f64)
    })
    .await
    .with_context(|| {
        format!(
            "sender log:\n{}\nreceiver log:\n{}",
            sender.log(),
            receiver.log()
        )
    })?;

    // The four HPA gauges equal the simulated HPA.
    let hpa = cluster
        .hpa_status("default", "php-apache")
        .context("demo HPA")?;
    assert_eq!(
        hpa.current_replicas,
        Some(1),
        "the HPA has synced once: {hpa:?}"
    );
    let expected = [
        ("kube_horizontalpodautoscaler_spec_min_replicas", 1.0),
        ("kube_horizontalpodautoscaler_spec_max_replicas", 10.0),
        (
            "kube_horizontalpodautoscaler_status_current_replicas",
            f64::from(hpa.current_replicas.unwrap_or(0)),
        ),
        (
            "kube_horizontalpodautoscaler_status_desired_replicas",
            f64::from(hpa.desired_replicas),
        ),
    ];
    for (name, want) in expected {
        let q = format!(
            r#"{name}{{cluster="{CLUSTER}",namespace="default",horizontalpodautoscaler="php-apache"}}"#
        );
        let got = prom
            .wait_for(&q, Duration::from_secs(30), |s| s.len() == 1)
            .await?;
        assert_eq!(got[0].value, want, "{name}");
    }

    // Delete an echo-server pod: its series leave /metrics (the ReplicaSet replaces it with
    // a pod of another name and uid).
    let victim = cluster
        .pods()
        .into_iter()
        .find(|p| name(p).starts_with("echo-server-"))
        .context("an echo-server pod")?;
    let (victim_name, victim_uid) = (name(&victim), uid(&victim));
    let victim_label = format!(r#"pod="{victim_name}""#);
    let before = metrics(http_addr).await?;
    assert!(
        before.contains(&victim_label),
        "victim present before deletion"
    );
    cluster.delete_pod("default", &victim_name)?;
    cluster.advance(Duration::from_secs(1))?;
    wait_until(
        "deleted pod's series to vanish",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let text = metrics(http_addr).await?;
            Ok((!text.contains(&victim_label) && !text.contains(&victim_uid)).then_some(()))
        },
    )
    .await?;
    // ... and Prometheus no longer reports it either.
    let q = format!(r#"kube_pod_status_phase{{cluster="{CLUSTER}",pod="{victim_name}"}}"#);
    prom.wait_for(&q, Duration::from_secs(30), <[_]>::is_empty)
        .await?;

    drop(sender);
    drop(receiver);
    sim.shutdown().await;
    Ok(())
}

async fn metrics(addr: std::net::SocketAddr) -> Result<String> {
    let r = http::get(addr, "/metrics", &[]).await?;
    anyhow::ensure!(r.status == 200, "GET /metrics: {}", r.status);
    Ok(r.text()?.to_owned())
}

fn name(p: &k8s_openapi::api::core::v1::Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn uid(p: &k8s_openapi::api::core::v1::Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn phase(p: &k8s_openapi::api::core::v1::Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}
