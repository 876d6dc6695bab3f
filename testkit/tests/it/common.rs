//! Shared by the end-to-end tests that relay a simulated cluster through the real `sender`
//! and `receiver` binaries (`faults`, `sender_restart`): the cluster on a manual clock that a
//! task moves in real time, its kubeconfig, the two binaries as child processes, and the pods
//! as the cluster has them and as the receiver serves them. Scenarios stay in the tests.
//!
//! Here and not in `kube-relay-testkit`'s library: the simulator's tests depend on the
//! testkit, so the testkit's library cannot depend on the simulator.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube_relay_sender::events::{Direction, stated_direction};
use kube_relay_sim::{ClockMode, RunningSim, Scenario, SimHandle, Simulator};
use kube_relay_testkit::exposition::{self, ExposedSample};
use kube_relay_testkit::http;
use kube_relay_testkit::process::ChildProcess;
use kube_relay_testkit::wait_until;

/// pod → (phase, ready).
pub type Pods = BTreeMap<String, (String, bool)>;

/// The simulated cluster; a task moves its clock in real time while churn is on.
pub struct Cluster {
    /// The running simulator.
    pub sim: RunningSim,
    /// Its handle (manual clock).
    pub handle: SimHandle,
    running: Arc<AtomicBool>,
    /// Cleared to end the task that moves the clock.
    alive: Arc<AtomicBool>,
    kubeconfig: tempfile::NamedTempFile,
}

impl Cluster {
    /// Starts the scenario `yaml` on a manual clock, lets 30 simulated seconds pass (every pod
    /// Running and Ready) and writes a kubeconfig for it. Churn is off.
    pub async fn start(yaml: &str) -> Result<Cluster> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let kubeconfig = tempfile::NamedTempFile::new()?;
        Cluster::start_on(yaml, listener, kubeconfig).await
    }

    async fn start_on(
        yaml: &str,
        listener: tokio::net::TcpListener,
        kubeconfig: tempfile::NamedTempFile,
    ) -> Result<Cluster> {
        let sim = Simulator::start(Scenario::from_yaml(yaml)?, listener, ClockMode::Manual).await?;
        let handle = sim.handle();
        handle.advance(Duration::from_secs(30))?;
        std::fs::write(kubeconfig.path(), sim.kubeconfig_yaml())?;
        let running = Arc::new(AtomicBool::new(false));
        let alive = Arc::new(AtomicBool::new(true));
        let (h, r, a) = (handle.clone(), running.clone(), alive.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            while a.load(Ordering::Relaxed) {
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
            alive,
            kubeconfig,
        })
    }

    /// Stops the simulator and starts the scenario `yaml` afresh on the same address (and
    /// kubeconfig): an API server restarted with fresh storage, at simulated second 30.
    pub async fn restart(self, yaml: &str) -> Result<Cluster> {
        let addr = self.sim.local_addr();
        let kubeconfig = self.kubeconfig;
        self.alive.store(false, Ordering::Relaxed);
        self.sim.shutdown().await;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        Cluster::start_on(yaml, listener, kubeconfig).await
    }

    /// Starts (`true`) or freezes (`false`) the clock moving in real time.
    pub fn churn(&self, on: bool) {
        self.running.store(on, Ordering::Relaxed);
    }

    /// Path of the kubeconfig file.
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig.path().display().to_string()
    }

    /// Every pod as the cluster has it.
    pub fn pods(&self) -> Pods {
        self.handle.pods().iter().map(pod_state).collect()
    }

    /// The `SuccessfulRescale` occurrences (the sum of the events' counts) per direction
    /// (`up`, `down`, `unknown`), as the sender's ledger classifies their messages.
    pub fn scaling_actions(&self) -> BTreeMap<String, i64> {
        let mut scaling = BTreeMap::new();
        for e in self.handle.scaling_events() {
            let n = e
                .series
                .as_ref()
                .and_then(|s| s.count)
                .or(e.count)
                .unwrap_or(1);
            let direction = match stated_direction(e.message.as_deref().unwrap_or_default()) {
                Some(Direction::Up) => "up",
                Some(Direction::Down) => "down",
                _ => "unknown",
            };
            *scaling.entry(direction.to_owned()).or_insert(0) += i64::from(n);
        }
        scaling
    }

    /// Stops the simulator.
    pub async fn shutdown(self) {
        self.alive.store(false, Ordering::Relaxed);
        self.sim.shutdown().await;
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

/// Every pod of `cluster` as the receiver serves it.
pub fn relayed_pods(samples: &[ExposedSample], cluster: &str) -> Pods {
    let ours = [("cluster", cluster)];
    let mut pods = Pods::new();
    for s in exposition::select(samples, "kube_pod_status_phase", &ours) {
        if s.value == 1.0 {
            pods.entry(s.label("pod").to_owned()).or_default().0 = s.label("phase").to_owned();
        }
    }
    for s in exposition::select(samples, "kube_pod_status_ready", &ours) {
        if s.label("condition") == "true" {
            pods.entry(s.label("pod").to_owned()).or_default().1 = s.value == 1.0;
        }
    }
    pods
}

/// `kube_horizontalpodautoscaler_scaling_events_total` of one HPA of `cluster` per
/// direction, as the receiver serves it (directions never seen left out).
pub fn relayed_scaling(
    samples: &[ExposedSample],
    cluster: &str,
    hpa: &str,
) -> BTreeMap<String, i64> {
    let labels = [("cluster", cluster), ("horizontalpodautoscaler", hpa)];
    exposition::select(
        samples,
        "kube_horizontalpodautoscaler_scaling_events_total",
        &labels,
    )
    .filter(|s| s.value > 0.0)
    .map(|s| (s.label("direction").to_owned(), s.value as i64))
    .collect()
}

/// How many pods differ between `a` and `b` (in one and not the other, or in another state).
pub fn differing_pods(a: &Pods, b: &Pods) -> usize {
    a.iter().filter(|(k, v)| b.get(*k) != Some(v)).count()
        + b.keys().filter(|k| !a.contains_key(*k)).count()
}

/// `GET /metrics` from the receiver's HTTP address, parsed.
pub async fn scrape(http_addr: SocketAddr) -> Result<Vec<ExposedSample>> {
    let r = http::get(http_addr, "/metrics", &[]).await?;
    ensure!(r.status == 200, "GET /metrics: {}", r.status);
    Ok(exposition::parse(r.text()?))
}

/// `relay_cluster_up` of `cluster`, if the receiver has it.
pub fn cluster_up(samples: &[ExposedSample], cluster: &str) -> Option<f64> {
    exposition::select(samples, "relay_cluster_up", &[("cluster", cluster)])
        .next()
        .map(|s| s.value)
}

/// The sum of every sample `name` carrying `labels` (0 when there is none).
pub fn sum(samples: &[ExposedSample], name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition::select(samples, name, labels)
        .map(|s| s.value)
        .sum()
}

/// The `receiver` binary on `ingest` and `http_addr`, expecting a heartbeat every `heartbeat`.
pub fn spawn_receiver(
    ingest: SocketAddr,
    http_addr: SocketAddr,
    heartbeat: &str,
) -> Result<ChildProcess> {
    ChildProcess::spawn(
        "receiver",
        [
            "--listen",
            &ingest.to_string(),
            "--http-listen",
            &http_addr.to_string(),
            "--heartbeat-interval",
            heartbeat,
        ],
        &[],
    )
}

/// The `sender` binary relaying `cluster` as `name` to `target` (no usage source), with
/// `extra` arguments.
pub fn spawn_sender(
    cluster: &Cluster,
    name: &str,
    target: SocketAddr,
    extra: &[&str],
) -> Result<ChildProcess> {
    let kubeconfig = cluster.kubeconfig();
    let target = target.to_string();
    let mut args = vec![
        "--kubeconfig",
        &kubeconfig,
        "--target",
        &target,
        "--cluster",
        name,
        "--usage-source",
        "none",
    ];
    args.extend_from_slice(extra);
    ChildProcess::spawn("sender", args, &[("NO_COLOR", "1")])
}

/// How many times the sender logged that its connection to the receiver failed.
pub fn link_failures(sender_log: &str) -> usize {
    sender_log
        .matches("connection to the receiver failed")
        .count()
}

/// Waits until the sender has logged more failed connections than the `before` it had: it
/// noticed a dead link.
pub async fn sender_notices_dead_link(
    sender: &ChildProcess,
    before: usize,
    timeout: Duration,
    every: Duration,
) -> Result<()> {
    wait_until(
        "the sender notices the dead link",
        timeout,
        every,
        || async { Ok((link_failures(&sender.log()) > before).then_some(())) },
    )
    .await
}

/// Both processes' logs, for an error's context.
pub fn logs(sender: &ChildProcess, receiver: &ChildProcess) -> String {
    format!("sender:\n{}\nreceiver:\n{}", sender.log(), receiver.log())
}
