//! Nothing lost across a dead receiver or a cut link.
//!
//! A simulated cluster (in this test, manual clock) flaps pod readiness at a steady rate; the
//! real `sender` and `receiver` binaries relay it. After each fault the test freezes the
//! cluster and requires the receiver's state to equal the cluster's: every pod, its phase and
//! its readiness. Figures (update rate, detection and convergence times, drops) are printed
//! for the issue note; bounds asserted are the issue's, with margin for a loaded machine.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube_relay_sim::{ClockMode, RunningSim, Scenario, SimHandle, Simulator};
use kube_relay_testkit::exposition::{self, ExposedSample};
use kube_relay_testkit::netns::{self, HostB};
use kube_relay_testkit::process::ChildProcess;
use kube_relay_testkit::prometheus::free_loopback_addr;
use kube_relay_testkit::{http, wait_until};

/// 200 pods whose readiness flaps 350 times a second: about a thousand changed samples a
/// second on the wire.
const SCENARIO: &str = r#"
name: flapping
description: 200 pods with flapping readiness
seed: 7
nodes: {count: 4, cpu: "32", memory: 64Gi, pods: 110}
bulk: {deployments: 10, replicas: 20, namespace: flap}
churn: {ready_flips_per_second: 350, namespace: flap}
events: {pod_events: false}
metrics: {enabled: false}
api: {watch_history: 100000}
"#;

const CLUSTER: &str = "faults";

/// The simulated cluster and a task moving its clock in real time while `running`.
struct Cluster {
    sim: RunningSim,
    handle: SimHandle,
    running: Arc<AtomicBool>,
    kubeconfig: tempfile::NamedTempFile,
}

impl Cluster {
    async fn start() -> Result<Cluster> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sim =
            Simulator::start(Scenario::from_yaml(SCENARIO)?, listener, ClockMode::Manual).await?;
        let handle = sim.handle();
        handle.advance(Duration::from_secs(30))?; // every pod Running and Ready
        let kubeconfig = tempfile::NamedTempFile::new()?;
        std::fs::write(kubeconfig.path(), sim.kubeconfig_yaml())?;
        let running = Arc::new(AtomicBool::new(false));
        let (h, r) = (handle.clone(), running.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                if r.load(Ordering::Relaxed) && h.advance(Duration::from_millis(50)).is_err() {
                    return;
                }
            }
        });
        Ok(Cluster {
            sim,
            handle,
            running,
            kubeconfig,
        })
    }

    fn churn(&self, on: bool) {
        self.running.store(on, Ordering::Relaxed);
    }

    fn kubeconfig(&self) -> String {
        self.kubeconfig.path().display().to_string()
    }

    /// pod → (phase, ready) as the cluster has it.
    fn truth(&self) -> BTreeMap<String, (String, bool)> {
        self.handle.pods().iter().map(pod_state).collect()
    }
}

fn pod_state(p: &Pod) -> (String, (String, bool)) {
    let status = p.status.as_ref();
    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    (p.metadata.name.clone().unwrap_or_default(), (phase, ready))
}

/// pod → (phase, ready) as the receiver serves it.
fn relayed(samples: &[ExposedSample]) -> BTreeMap<String, (String, bool)> {
    let mut out: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let ours = [("cluster", CLUSTER)];
    for s in exposition::select(samples, "kube_pod_status_phase", &ours) {
        if s.value == 1.0 {
            out.entry(s.label("pod").to_owned()).or_default().0 = s.label("phase").to_owned();
        }
    }
    for s in exposition::select(samples, "kube_pod_status_ready", &ours) {
        if s.label("condition") == "true" {
            out.entry(s.label("pod").to_owned()).or_default().1 = s.value == 1.0;
        }
    }
    out
}

fn sum(samples: &[ExposedSample], name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition::select(samples, name, labels)
        .map(|s| s.value)
        .sum()
}

/// Where a test reads the receiver's `/metrics`: directly, or from inside host B.
#[derive(Clone, Copy)]
enum Scrape<'a> {
    Direct(SocketAddr),
    InHostB(&'a HostB, u16),
}

impl Scrape<'_> {
    async fn samples(&self) -> Result<Vec<ExposedSample>> {
        let text = match *self {
            Scrape::Direct(addr) => {
                let r = http::get(addr, "/metrics", &[]).await?;
                ensure!(r.status == 200, "GET /metrics: {}", r.status);
                r.text()?.to_owned()
            }
            Scrape::InHostB(host, port) => host.exec(&[
                "curl",
                "-fsS",
                "-m",
                "2",
                &format!("http://127.0.0.1:{port}/metrics"),
            ])?,
        };
        Ok(exposition::parse(&text))
    }

    async fn cluster_up(&self) -> Result<Option<f64>> {
        let s = self.samples().await?;
        Ok(
            exposition::select(&s, "relay_cluster_up", &[("cluster", CLUSTER)])
                .next()
                .map(|s| s.value),
        )
    }
}

/// Waits until the receiver's pods equal the cluster's (the cluster must be frozen).
async fn converged(cluster: &Cluster, scrape: Scrape<'_>, timeout: Duration) -> Result<()> {
    let truth = cluster.truth();
    ensure!(
        truth.len() == 200,
        "the scenario runs 200 pods, found {}",
        truth.len()
    );
    let last = std::sync::Mutex::new(0usize);
    wait_until(
        "receiver state equal to the cluster's",
        timeout,
        Duration::from_millis(50),
        || async {
            let got = relayed(&scrape.samples().await?);
            let differing = truth.iter().filter(|(k, v)| got.get(*k) != Some(v)).count()
                + got.keys().filter(|k| !truth.contains_key(*k)).count();
            if let Ok(mut l) = last.lock() {
                *l = differing;
            }
            Ok((differing == 0).then_some(()))
        },
    )
    .await
    .with_context(|| format!("{} pods still differ", last.lock().map(|l| *l).unwrap_or(0)))
}

/// Updates per second the receiver takes in from our cluster, over `window`.
async fn update_rate(scrape: Scrape<'_>, window: Duration) -> Result<f64> {
    let name = "relay_receiver_updates_received_total";
    let labels = [("cluster", CLUSTER)];
    let a = sum(&scrape.samples().await?, name, &labels);
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let b = sum(&scrape.samples().await?, name, &labels);
    Ok((b - a) / t.elapsed().as_secs_f64())
}

fn spawn_receiver(ingest: SocketAddr, http_addr: SocketAddr) -> Result<ChildProcess> {
    ChildProcess::spawn(
        "receiver",
        [
            "--listen",
            &ingest.to_string(),
            "--http-listen",
            &http_addr.to_string(),
            "--heartbeat-interval",
            "3s",
        ],
        &[],
    )
}

fn spawn_sender(cluster: &Cluster, target: SocketAddr) -> Result<ChildProcess> {
    ChildProcess::spawn(
        "sender",
        [
            "--kubeconfig",
            &cluster.kubeconfig(),
            "--target",
            &target.to_string(),
            "--cluster",
            CLUSTER,
            "--usage-source",
            "none",
        ],
        &[("NO_COLOR", "1")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_for_30s_loses_nothing() -> Result<()> {
    let cluster = Cluster::start().await?;
    let (ingest, http_addr) = (free_loopback_addr()?, free_loopback_addr()?);
    let scrape = Scrape::Direct(http_addr);
    let mut receiver = spawn_receiver(ingest, http_addr)?;
    let sender = spawn_sender(&cluster, ingest)?;
    let logs = |r: &ChildProcess| format!("sender:\n{}\nreceiver:\n{}", sender.log(), r.log());

    converged(&cluster, scrape, Duration::from_secs(60))
        .await
        .with_context(|| logs(&receiver))?;
    cluster.churn(true);
    let rate = update_rate(scrape, Duration::from_secs(3)).await?;
    println!("FIGURE receiver-kill: steady update rate {rate:.0} updates/s");
    ensure!(
        rate >= 500.0,
        "the scenario should churn about 1,000 updates/s, got {rate:.0}"
    );

    receiver.kill9().await?;
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await; // the outage the issue asks for
    let mut receiver = spawn_receiver(ingest, http_addr)?;
    wait_until(
        "sender reconnected",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async { Ok((scrape.cluster_up().await.ok().flatten() == Some(1.0)).then_some(())) },
    )
    .await
    .with_context(|| logs(&receiver))?;
    let reconnected = Instant::now();
    cluster.churn(false);
    converged(&cluster, scrape, Duration::from_secs(30))
        .await
        .with_context(|| logs(&receiver))?;
    let converge = reconnected.elapsed();
    let samples = scrape.samples().await?;
    let dropped = sum(
        &samples,
        "relay_sender_dropped_updates_total",
        &[("cluster", CLUSTER)],
    );
    println!(
        "FIGURE receiver-kill: down {:.1} s; state equal to the cluster's {:.3} s after reconnect; \
         sender drops {dropped}",
        (reconnected - down_at).as_secs_f64(),
        converge.as_secs_f64()
    );
    ensure!(
        converge <= Duration::from_secs(5),
        "converged only after {converge:?}"
    );
    ensure!(dropped == 0.0, "the sender dropped {dropped} updates");
    drop(receiver.kill9().await);
    drop(sender);
    cluster.sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_cut_for_60s_is_detected_and_loses_nothing() -> Result<()> {
    if let Some(why) = netns::unavailable() {
        eprintln!("SKIPPED: two-host tests need network namespaces: {why}");
        return Ok(());
    }
    let cluster = Cluster::start().await?;
    let host_b = HostB::create()?;
    let (ingest_port, http_port) = (9000, 9100);
    let receiver = host_b.spawn(
        "receiver",
        &[
            "--listen",
            &format!("0.0.0.0:{ingest_port}"),
            "--http-listen",
            &format!("0.0.0.0:{http_port}"),
            "--heartbeat-interval",
            "3s",
        ],
        &[],
    )?;
    let scrape = Scrape::InHostB(&host_b, http_port);
    let sender = spawn_sender(&cluster, host_b.addr(ingest_port))?;
    let logs = || format!("sender:\n{}\nreceiver:\n{}", sender.log(), receiver.log());
    converged(&cluster, scrape, Duration::from_secs(60))
        .await
        .with_context(logs)?;
    cluster.churn(true);

    host_b.cut()?;
    let cut_at = Instant::now();
    let failures_before = sender
        .log()
        .matches("connection to the receiver failed")
        .count();
    // Host B notices the dead sender by its missing heartbeats.
    wait_until(
        "receiver marks the cluster down",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { Ok((scrape.cluster_up().await? == Some(0.0)).then_some(())) },
    )
    .await
    .with_context(logs)?;
    let receiver_detect = cut_at.elapsed();
    // Host A notices the dead receiver by its missing heartbeat echoes.
    wait_until(
        "sender notices the dead link",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            Ok((sender
                .log()
                .matches("connection to the receiver failed")
                .count()
                > failures_before)
                .then_some(()))
        },
    )
    .await
    .with_context(logs)?;
    let sender_detect = cut_at.elapsed();
    println!(
        "FIGURE link-cut: dead peer detected by the receiver after {:.1} s, by the sender after {:.1} s",
        receiver_detect.as_secs_f64(),
        sender_detect.as_secs_f64()
    );
    ensure!(
        receiver_detect <= Duration::from_secs(15),
        "receiver: {receiver_detect:?}"
    );
    ensure!(
        sender_detect <= Duration::from_secs(15),
        "sender: {sender_detect:?}"
    );

    let remaining = Duration::from_secs(60).saturating_sub(cut_at.elapsed());
    tokio::time::sleep(remaining).await; // the 60 s outage the issue asks for
    host_b.restore()?;
    let restored = Instant::now();
    wait_until(
        "sender reconnected",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { Ok((scrape.cluster_up().await? == Some(1.0)).then_some(())) },
    )
    .await
    .with_context(logs)?;
    let reconnected = Instant::now();
    cluster.churn(false);
    converged(&cluster, scrape, Duration::from_secs(30))
        .await
        .with_context(logs)?;
    let samples = scrape.samples().await?;
    let dropped = sum(
        &samples,
        "relay_sender_dropped_updates_total",
        &[("cluster", CLUSTER)],
    );
    println!(
        "FIGURE link-cut: reconnected {:.1} s after the link came back; state equal {:.3} s after \
         reconnect; sender drops counted: {dropped}",
        (reconnected - restored).as_secs_f64(),
        reconnected.elapsed().as_secs_f64()
    );
    if dropped > 0.0 {
        // The spool bound was hit: the drops are counted, and the state still converged
        // because the sender resynchronised with a snapshot.
        println!("FIGURE link-cut: spool bound hit; {dropped} updates dropped and counted");
    }
    drop(receiver);
    drop(sender);
    cluster.sim.shutdown().await;
    Ok(())
}
