//! Frozen data never looks live (issue 15): the real `kube-sim`, `sender` and `receiver`
//! binaries, and Debian's Prometheus loading the shipped alert rules. The API server is
//! killed (-9) under a running sender: the link stays up (`relay_cluster_up` 1), but within
//! seconds the receiver serves the sender's `relay_sender_watch_up` and `relay_sender_api_up`
//! at 0, its status page says the data is frozen, and `KubeRelaySourceDown`'s expression is
//! true (the alert is pending). Started again on the same address, the API server is read
//! again: the gauges return to 1 and the alert clears.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kube_relay_testkit::process::ChildProcess;
use kube_relay_testkit::prometheus::{PrometheusConfig, free_loopback_addr};
use kube_relay_testkit::{Prometheus, exposition, http, wait_until};

const CLUSTER: &str = "frozen";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace root")
        .to_path_buf()
}

/// `kube-sim` serving the demo scenario on `api`, its kubeconfig written to `kubeconfig`.
async fn start_kube_sim(api: SocketAddr, kubeconfig: &Path) -> Result<ChildProcess> {
    let _ = std::fs::remove_file(kubeconfig);
    let sim = ChildProcess::spawn(
        "kube-sim",
        [
            "--listen",
            &api.to_string(),
            "--kubeconfig-out",
            &kubeconfig.display().to_string(),
            "--scenario",
            "demo",
        ],
        &[],
    )?;
    wait_until(
        "kube-sim's kubeconfig",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { Ok(kubeconfig.is_file().then_some(())) },
    )
    .await
    .with_context(|| sim.log())?;
    Ok(sim)
}

/// The source gauges the receiver serves for the cluster: (`relay_sender_api_up`, the lowest
/// `relay_sender_watch_up`, `relay_cluster_up`).
async fn source(http_addr: SocketAddr) -> Result<(Option<f64>, Option<f64>, Option<f64>)> {
    let r = http::get(http_addr, "/metrics", &[]).await?;
    ensure!(r.status == 200, "GET /metrics: {}", r.status);
    let samples = exposition::parse(r.text()?);
    let ours = [("cluster", CLUSTER)];
    let first = |name| {
        exposition::select(&samples, name, &ours)
            .next()
            .map(|s| s.value)
    };
    let watches = exposition::select(&samples, "relay_sender_watch_up", &ours)
        .map(|s| s.value)
        .reduce(f64::min);
    Ok((
        first("relay_sender_api_up"),
        watches,
        first("relay_cluster_up"),
    ))
}

async fn status_page(http_addr: SocketAddr) -> Result<String> {
    let r = http::get(http_addr, "/", &[]).await?;
    ensure!(r.status == 200, "GET /: {}", r.status);
    Ok(r.text()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_api_server_shows_as_frozen_data_within_seconds_and_recovers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let api = free_loopback_addr()?;
    let mut sim = start_kube_sim(api, &kubeconfig).await?;

    let (ingest, http_addr) = (free_loopback_addr()?, free_loopback_addr()?);
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
    let logs = |sim: &ChildProcess| {
        format!(
            "kube-sim log:\n{}\nsender log:\n{}\nreceiver log:\n{}",
            sim.log(),
            sender.log(),
            receiver.log()
        )
    };
    let prom = Prometheus::start_with(PrometheusConfig {
        rule_files: vec![root().join("prometheus/rules/kube-relay.yml")],
        honor_labels: true,
        ..PrometheusConfig::new(&[http_addr])
    })
    .await?;
    let pending = format!(
        r#"ALERTS{{alertname="KubeRelaySourceDown",alertstate="pending",cluster="{CLUSTER}"}}"#
    );

    // Live: the API server answers and every watch is established.
    wait_until(
        "the source read",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let (api_up, watches, link) = source(http_addr).await?;
            Ok((api_up == Some(1.0) && watches == Some(1.0) && link == Some(1.0)).then_some(()))
        },
    )
    .await
    .with_context(|| logs(&sim))?;
    assert!(
        status_page(http_addr)
            .await?
            .contains("API server answering")
    );

    sim.kill9().await?;
    let killed = Instant::now();
    wait_until(
        "the killed API server to show",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let (_, watches, _) = source(http_addr).await?;
            Ok((watches == Some(0.0)).then_some(()))
        },
    )
    .await
    .with_context(|| logs(&sim))?;
    println!(
        "FIGURE API server killed -9 -> relay_sender_watch_up 0 at the receiver: {:.2} s",
        killed.elapsed().as_secs_f64()
    );
    wait_until(
        "the probe to fail",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { Ok((source(http_addr).await?.0 == Some(0.0)).then_some(())) },
    )
    .await
    .with_context(|| logs(&sim))?;
    let (_, _, link) = source(http_addr).await?;
    assert_eq!(link, Some(1.0), "the link itself is fine");
    let page = status_page(http_addr).await?;
    assert!(
        page.contains("DOWN, data frozen: the API server does not answer; watch down:"),
        "{page}"
    );
    prom.wait_for(&pending, Duration::from_secs(30), |s| !s.is_empty())
        .await
        .with_context(|| logs(&sim))?;

    // The API server comes back on the same address (fresh state, as after a restore).
    let sim = start_kube_sim(api, &kubeconfig).await?;
    let restarted = Instant::now();
    wait_until(
        "the source read again",
        Duration::from_secs(90),
        Duration::from_millis(100),
        || async {
            let (api_up, watches, _) = source(http_addr).await?;
            Ok((api_up == Some(1.0) && watches == Some(1.0)).then_some(()))
        },
    )
    .await
    .with_context(|| logs(&sim))?;
    println!(
        "FIGURE API server back -> every watch up at the receiver: {:.2} s",
        restarted.elapsed().as_secs_f64()
    );
    prom.wait_for(&pending, Duration::from_secs(30), <[_]>::is_empty)
        .await
        .with_context(|| logs(&sim))?;
    assert!(
        status_page(http_addr)
            .await?
            .contains("API server answering")
    );
    Ok(())
}
