//! The sender's disk spool across a `kill -9`, and its bound during a link cut (issue 7).
//!
//! The real `sender` and `receiver` binaries relay a simulated cluster (in this test, manual
//! clock) through a [`LinkProxy`] that can stall the link (bytes stop, nothing closes: what a
//! dead peer looks like). The cluster runs an HPA whose load the test sets, so it rescales
//! during the outages, and a small bulk of pods whose readiness flaps. After each fault the
//! test freezes the cluster and requires the receiver's state to equal the cluster's: every
//! pod's phase and readiness, the HPA's replicas, and
//! `kube_horizontalpodautoscaler_scaling_events_total` per direction equal to the
//! simulator's `SuccessfulRescale` occurrences (the sum of their counts).
//!
//! - A: the link stalls (the receiver keeps its state), the sender spools batches that are
//!   never acknowledged, is killed -9 and restarted on the same `--state-dir`: it replays
//!   the spool (`relay_sender_spool_replayed_batches_total` > 0), then sends a snapshot.
//! - B: as A, but the receiver is killed -9 and restarted while the sender is dead: the
//!   spool is superseded by a snapshot (`relay_sender_spool_superseded_updates_total` > 0).
//! - C: a 2 KiB spool and a stalled link: the bound is hit, and
//!   `relay_sender_dropped_updates_total{reason="spool_full"}` equals the sum the sender
//!   logged drop by drop.
//!
//! Figures are printed with a `FIGURE` prefix.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kube_relay_testkit::exposition::{self, ExposedSample};
use kube_relay_testkit::process::ChildProcess;
use kube_relay_testkit::prometheus::free_loopback_addr;
use kube_relay_testkit::proxy::LinkProxy;
use kube_relay_testkit::wait_until;

use common::{
    Cluster, Pods, cluster_up, differing_pods, link_failures, logs, relayed_pods, relayed_scaling,
    scrape, sender_notices_dead_link, spawn_receiver, spawn_sender, sum,
};

/// php-apache behind an HPA (load set by the test), and 20 pods whose readiness flaps.
const SCENARIO: &str = r#"
name: restart
description: an HPA that rescales on demand and flapping pods
seed: 9
nodes: {count: 3, cpu: "32", memory: 64Gi, pods: 110}
deployments:
  - name: php-apache
    namespace: default
    replicas: 1
    image: registry.k8s.io/hpa-example
    requests: {cpu: 200m, memory: 64Mi}
    startup: 1s
    readiness: 1s
    load:
      idle_cpu: 1m
      cpu_per_client: 60m
      memory: 24Mi
      curve: [{at: 0s, clients: 0}]
hpas:
  - name: php-apache
    namespace: default
    target: php-apache
    min: 1
    max: 10
    cpu_utilization: 50
    scale_down_stabilization: 10s
bulk: {deployments: 2, replicas: 10, namespace: flap}
churn: {ready_flips_per_second: 20, namespace: flap}
events: {pod_events: false}
api: {watch_history: 100000}
"#;

const HPA: &str = "php-apache";
const HEARTBEAT: &str = "1s";

/// What this scenario adds to the shared cluster: the HPA's load, and the HPA in the state.
impl Cluster {
    /// Sets php-apache's load and lets `secs` simulated seconds pass, 1 s at a time.
    fn load_for(&self, clients: f64, secs: u64) -> Result<()> {
        self.handle.set_load("default", HPA, clients)?;
        for _ in 0..secs {
            self.handle.advance(Duration::from_secs(1))?;
        }
        Ok(())
    }

    /// Everything the test compares, as the cluster has it.
    fn truth(&self) -> State {
        let pods = self.pods();
        let status = self.handle.hpa_status("default", HPA);
        let hpa = status.map(|s| (s.current_replicas.unwrap_or(0), s.desired_replicas));
        let scaling = self.scaling_actions();
        State { pods, hpa, scaling }
    }
}

/// What must be equal on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    /// pod → (phase, ready).
    pods: Pods,
    /// HPA (current, desired) replicas.
    hpa: Option<(i32, i32)>,
    /// direction → scaling actions.
    scaling: BTreeMap<String, i64>,
}

impl State {
    /// How many entries differ from `other`.
    fn differences(&self, other: &State) -> usize {
        differing_pods(&self.pods, &other.pods)
            + usize::from(self.hpa != other.hpa)
            + usize::from(self.scaling != other.scaling)
    }
}

/// The same, as the receiver serves it for `cluster`.
fn relayed(samples: &[ExposedSample], cluster: &str) -> State {
    let pods = relayed_pods(samples, cluster);
    let hpa_labels = [("cluster", cluster), ("horizontalpodautoscaler", HPA)];
    let replicas = |name| {
        exposition::select(samples, name, &hpa_labels)
            .next()
            .map(|s| s.value as i32)
    };
    let hpa = replicas("kube_horizontalpodautoscaler_status_current_replicas").zip(replicas(
        "kube_horizontalpodautoscaler_status_desired_replicas",
    ));
    let scaling = relayed_scaling(samples, cluster, HPA);
    State { pods, hpa, scaling }
}

/// The receiver process and where to reach it.
struct Receiver {
    process: ChildProcess,
    ingest: SocketAddr,
    http: SocketAddr,
}

impl Receiver {
    fn start(ingest: SocketAddr, http: SocketAddr) -> Result<Receiver> {
        let process = spawn_receiver(ingest, http, HEARTBEAT)?;
        Ok(Receiver {
            process,
            ingest,
            http,
        })
    }

    async fn samples(&self) -> Result<Vec<ExposedSample>> {
        scrape(self.http).await
    }

    /// A sender self-metric of `cluster`, summed over its series (0 when absent).
    async fn sender_metric(&self, cluster: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut all = vec![("cluster", cluster)];
        all.extend_from_slice(labels);
        self.samples().await.map_or(0.0, |s| sum(&s, name, &all))
    }

    async fn cluster_up(&self, cluster: &str) -> Option<f64> {
        cluster_up(&self.samples().await.ok()?, cluster)
    }

    async fn wait_up(&self, cluster: &str, timeout: Duration) -> Result<()> {
        wait_until(
            "the sender connected",
            timeout,
            Duration::from_millis(20),
            || async { Ok((self.cluster_up(cluster).await == Some(1.0)).then_some(())) },
        )
        .await
    }

    /// Waits until the receiver's state equals the cluster's (the cluster must be frozen).
    async fn converged(&self, cluster: &Cluster, name: &str, timeout: Duration) -> Result<()> {
        let truth = cluster.truth();
        ensure!(
            truth.pods.len() >= 21,
            "the scenario runs at least 21 pods, found {}",
            truth.pods.len()
        );
        let last = std::sync::Mutex::new(None);
        wait_until(
            "receiver state equal to the cluster's",
            timeout,
            Duration::from_millis(50),
            || async {
                let got = relayed(&self.samples().await?, name);
                let equal = got.differences(&truth) == 0;
                if let Ok(mut l) = last.lock() {
                    *l = Some(got);
                }
                Ok(equal.then_some(()))
            },
        )
        .await
        .with_context(|| {
            let got = last.lock().ok().and_then(|l| l.clone());
            format!(
                "cluster: hpa {:?} scaling {:?}; relayed: {:?}",
                truth.hpa,
                truth.scaling,
                got.map(|g| (g.differences(&truth), g.hpa, g.scaling))
            )
        })
    }
}

/// Bytes of records in the spool's segment files (headers excluded).
fn spooled_bytes(state: &Path) -> u64 {
    let Ok(dir) = std::fs::read_dir(state.join("spool")) else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len().saturating_sub(16))
        .sum()
}

/// A started bed: cluster, receiver, proxy, a state directory.
struct Bed {
    cluster: Cluster,
    receiver: Receiver,
    proxy: LinkProxy,
    state: tempfile::TempDir,
}

impl Bed {
    async fn start() -> Result<Bed> {
        let cluster = Cluster::start(SCENARIO).await?;
        let receiver = Receiver::start(free_loopback_addr()?, free_loopback_addr()?)?;
        let proxy = LinkProxy::start(receiver.ingest).await?;
        Ok(Bed {
            cluster,
            receiver,
            proxy,
            state: tempfile::tempdir()?,
        })
    }

    /// Starts a sender for cluster `name` through the proxy, on the bed's state directory.
    fn sender(&self, name: &str, extra: &[&str]) -> Result<ChildProcess> {
        let state = self.state.path().display().to_string();
        let mut args = vec!["--state-dir", &state];
        args.extend_from_slice(extra);
        spawn_sender(&self.cluster, name, self.proxy.addr(), &args)
    }

    /// Scales the HPA up once and relays it all: the state both sides start from.
    async fn scaled_and_converged(&self, name: &str, sender: &ChildProcess) -> Result<()> {
        self.receiver
            .wait_up(name, Duration::from_secs(30))
            .await
            .with_context(|| sender.log())?;
        self.cluster.load_for(10.0, 30)?;
        let truth = self.cluster.truth();
        ensure!(
            truth.scaling.get("up").is_some_and(|n| *n >= 1),
            "the HPA scaled up: {:?}",
            truth.scaling
        );
        self.receiver
            .converged(&self.cluster, name, Duration::from_secs(30))
            .await
            .with_context(|| sender.log())
    }

    /// Stalls the link, rescales during it, and waits until the sender has spooled
    /// unacknowledged batches and noticed the dead link. Returns the spooled bytes.
    async fn stall_and_spool(&self, sender: &ChildProcess) -> Result<u64> {
        let failures_before = link_failures(&sender.log());
        self.proxy.stall(true);
        // The HPA scales further up while the sender still believes the link alive.
        self.cluster.load_for(30.0, 20)?;
        let spooled = wait_until(
            "batches in the disk spool",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async {
                let n = spooled_bytes(self.state.path());
                Ok((n > 0).then_some(n))
            },
        )
        .await
        .with_context(|| sender.log())?;
        let (timeout, every) = (Duration::from_secs(15), Duration::from_millis(50));
        sender_notices_dead_link(sender, failures_before, timeout, every)
            .await
            .with_context(|| sender.log())?;
        Ok(spooled.max(spooled_bytes(self.state.path())))
    }

    /// Ends the stall: connections opened during it go (with the bytes they hold).
    fn heal(&self) {
        self.proxy.reset_all();
        self.proxy.stall(false);
    }

    /// Starts a sender, relays the scaled-up cluster, stalls the link until the sender has
    /// spooled and noticed, then kills the sender -9. Returns the spooled bytes.
    async fn spool_then_kill_sender(&self, name: &str) -> Result<u64> {
        let mut sender = self.sender(name, &[])?;
        self.scaled_and_converged(name, &sender).await?;
        let spooled = self.stall_and_spool(&sender).await?;
        sender.kill9().await?;
        Ok(spooled)
    }

    /// Waits until `sender` is connected and the receiver's state equals the cluster's (the
    /// cluster must be frozen). Returns when it was connected and how long convergence took
    /// from then.
    async fn reconnected_and_converged(
        &self,
        name: &str,
        sender: &ChildProcess,
    ) -> Result<(Instant, Duration)> {
        let both_logs = || logs(sender, &self.receiver.process);
        self.receiver
            .wait_up(name, Duration::from_secs(30))
            .await
            .with_context(both_logs)?;
        let reconnected = Instant::now();
        self.receiver
            .converged(&self.cluster, name, Duration::from_secs(30))
            .await
            .with_context(both_logs)?;
        Ok((reconnected, reconnected.elapsed()))
    }

    /// Waits until the sender self-metric `metric` of `name` (summed over the series with
    /// `labels`) reaches the receiver with a value for which `done` holds; returns it.
    async fn relayed_sender_metric(
        &self,
        name: &str,
        metric: &str,
        labels: &[(&str, &str)],
        done: impl Fn(f64) -> bool,
    ) -> Result<f64> {
        wait_until(
            &format!("{metric} relayed"),
            Duration::from_secs(10),
            Duration::from_millis(50),
            || async {
                let n = self.receiver.sender_metric(name, metric, labels).await;
                Ok(done(n).then_some(n))
            },
        )
        .await
    }

    /// The sender self-metric `metric` of `name` as the receiver has it now (0 when absent).
    async fn sender_counter(&self, name: &str, metric: &str) -> f64 {
        self.receiver.sender_metric(name, metric, &[]).await
    }

    /// Stops `sender`, then the simulated cluster.
    async fn stop(self, sender: ChildProcess) {
        drop(sender);
        self.cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_killed_while_the_link_is_down_replays_its_spool_after_restart() -> Result<()> {
    let name = "restart-a";
    let bed = Bed::start().await?;
    let spooled = bed.spool_then_kill_sender(name).await?;
    let killed_at = Instant::now();
    // While the sender is dead the load goes away and the HPA scales back down.
    bed.cluster.load_for(0.0, 40)?;
    let truth = bed.cluster.truth();
    ensure!(
        truth.scaling.get("down").is_some_and(|n| *n >= 1),
        "the HPA scaled down while the sender was dead: {:?}",
        truth.scaling
    );
    bed.heal();

    let sender = bed.sender(name, &[])?;
    let both_logs = || logs(&sender, &bed.receiver.process);
    let (reconnected, converge) = bed.reconnected_and_converged(name, &sender).await?;
    let replayed = bed
        .relayed_sender_metric(
            name,
            "relay_sender_spool_replayed_batches_total",
            &[],
            |n| n > 0.0,
        )
        .await
        .with_context(both_logs)?;
    let dropped = bed
        .sender_counter(name, "relay_sender_dropped_updates_total")
        .await;
    // The replayed batches were applied, not refused: one session, no protocol violation.
    let reconnects = bed
        .sender_counter(name, "relay_sender_reconnects_total")
        .await;
    let violations: f64 = exposition::select(
        &bed.receiver.samples().await?,
        "relay_receiver_decode_errors_total",
        &[("kind", "violation")],
    )
    .map(|s| s.value)
    .sum();
    ensure!(
        reconnects == 0.0 && violations == 0.0,
        "replay refused: {reconnects} reconnects, {violations} violations\n{}",
        both_logs()
    );
    println!(
        "FIGURE sender-restart A: {spooled} bytes spooled unacknowledged at the kill; \
         {replayed} batches replayed after restart; {dropped} drops; restarted {:.1} s after \
         the kill; state equal to the cluster's (pods, HPA replicas, scaling actions {:?}) \
         {:.3} s after reconnect",
        (reconnected - killed_at).as_secs_f64(),
        truth.scaling,
        converge.as_secs_f64()
    );
    ensure!(dropped == 0.0, "nothing may be dropped: {dropped}");
    bed.stop(sender).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_restarted_while_the_sender_is_dead_gets_a_snapshot_instead() -> Result<()> {
    let name = "restart-b";
    let mut bed = Bed::start().await?;
    let spooled = bed.spool_then_kill_sender(name).await?;
    bed.receiver.process.kill9().await?;
    bed.cluster.load_for(0.0, 40)?;
    bed.receiver = Receiver::start(bed.receiver.ingest, bed.receiver.http)?;
    bed.heal();

    let sender = bed.sender(name, &[])?;
    let (_, converge) = bed.reconnected_and_converged(name, &sender).await?;
    let superseded = bed
        .relayed_sender_metric(
            name,
            "relay_sender_spool_superseded_updates_total",
            &[],
            |n| n > 0.0,
        )
        .await
        .with_context(|| logs(&sender, &bed.receiver.process))?;
    let replayed = bed
        .sender_counter(name, "relay_sender_spool_replayed_batches_total")
        .await;
    let dropped = bed
        .sender_counter(name, "relay_sender_dropped_updates_total")
        .await;
    println!(
        "FIGURE sender-restart B: {spooled} bytes spooled; receiver lost its state: \
         {superseded} spooled samples superseded by a snapshot, {replayed} batches replayed, \
         {dropped} drops; state equal to the cluster's (scaling actions {:?}) {:.3} s after \
         reconnect",
        bed.cluster.truth().scaling,
        converge.as_secs_f64()
    );
    ensure!(replayed == 0.0, "nothing to replay into a fresh receiver");
    ensure!(dropped == 0.0, "superseded is not dropped: {dropped}");
    bed.stop(sender).await;
    Ok(())
}

/// Sum of the `dropped=N` fields of the sender's "spool full" warnings.
fn logged_drops(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("spool full"))
        .filter_map(|l| {
            let rest = l.split("dropped=").nth(1)?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_that_hits_the_spool_bound_counts_every_dropped_sample() -> Result<()> {
    let name = "restart-c";
    let bed = Bed::start().await?;
    let sender = bed.sender(name, &["--spool-max-bytes", "2048"])?;
    let both_logs = || logs(&sender, &bed.receiver.process);
    bed.scaled_and_converged(name, &sender).await?;

    // Readiness keeps flapping through a stall long enough for the sender to notice it
    // (3 heartbeats of 1 s) and to fail a reconnect.
    bed.cluster.churn(true);
    let failures_before = link_failures(&sender.log());
    bed.proxy.stall(true);
    let cut_at = Instant::now();
    let (timeout, every) = (Duration::from_secs(15), Duration::from_millis(50));
    sender_notices_dead_link(&sender, failures_before, timeout, every)
        .await
        .with_context(both_logs)?;
    let detected = cut_at.elapsed();
    let logged = logged_drops(&sender.log());
    ensure!(
        logged > 0,
        "the 2 KiB spool bound was hit:\n{}",
        sender.log()
    );
    bed.heal();
    let healed_at = Instant::now();
    bed.receiver
        .wait_up(name, Duration::from_secs(40))
        .await
        .with_context(both_logs)?;
    bed.cluster.churn(false);
    bed.receiver
        .converged(&bed.cluster, name, Duration::from_secs(30))
        .await
        .with_context(both_logs)?;
    let converge = healed_at.elapsed();
    // Drops stop with the link: what the sender logged is final. Its counter reaches the
    // receiver with its next self-metrics refresh.
    let logged = logged_drops(&sender.log());
    let counted = bed
        .relayed_sender_metric(
            name,
            "relay_sender_dropped_updates_total",
            &[("reason", "spool_full")],
            |n| n == logged as f64,
        )
        .await
        .with_context(|| format!("logged {logged}\n{}", both_logs()))?;
    println!(
        "FIGURE sender-restart C: 2048-byte spool, link stalled {:.1} s (dead link detected \
         after {:.1} s): {counted} samples dropped and counted, equal to the {logged} the \
         sender logged; state equal to the cluster's {:.3} s after the link came back",
        (healed_at - cut_at).as_secs_f64(),
        detected.as_secs_f64(),
        converge.as_secs_f64()
    );
    bed.stop(sender).await;
    Ok(())
}
