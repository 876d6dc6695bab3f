//! History through remote write, end to end with real processes: the simulated cluster,
//! the `sender` and `receiver` binaries, and Debian's VictoriaMetrics as the store.
//!
//! The test drives the cluster itself and records, by the wall clock, when each change
//! happened; the store must then hold every change at that time (the sender's observation
//! time, give or take the watch's delivery), in order, and every series a sample at least
//! every re-send interval, through a 60 s link cut; and through a backend outage of two
//! minutes with the receiver killed (`kill -9`) for 30 s of it, every sample once; and with
//! two receivers, the one in use killed: the sender fails over and the store has no hole; and
//! a deleted pod's series end with a staleness marker.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use kube_relay_testkit::process::ChildProcess;
use kube_relay_testkit::prometheus::free_loopback_addr;
use kube_relay_testkit::proxy::LinkProxy;
use kube_relay_testkit::victoria::Exported;
use kube_relay_testkit::{VictoriaMetrics, wait_until};

use common::{Cluster, logs, spawn_sender};

/// An HPA `web` (2..10 replicas, 50 % CPU) over a deployment whose load the test sets.
const SCENARIO: &str = r#"
name: history
description: an HPA scaling under load
seed: 7
nodes: {count: 3, cpu: "16", memory: 32Gi}
deployments:
  - name: web
    namespace: shop
    replicas: 2
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    port: 8080
    requests: {cpu: 100m, memory: 32Mi}
    limits: {cpu: 300m, memory: 64Mi}
    startup: 1s
    readiness: 1s
    load:
      idle_cpu: 2m
      cpu_per_client: 8m
      memory: 16Mi
      memory_per_client: 256Ki
      noise: 0.0
      curve:
        - {at: 0s, clients: 10}
hpas:
  - name: web
    namespace: shop
    target: web
    min: 2
    max: 10
    cpu_utilization: 50
    scale_down_stabilization: 60s
events: {pod_events: false}
"#;

/// The receiver's re-send interval in these tests.
const RESEND: Duration = Duration::from_secs(5);
const RESEND_ARG: &str = "5s";
/// Heartbeat interval: a dead link is noticed after three.
const HEARTBEAT: &str = "1s";
/// How late after the wall-clock moment of a change its sample may be stamped: the watch
/// event's way to the sender and its flush, on a loaded machine.
const OBSERVED_WITHIN: i64 = 1000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A change the test made happen: between `after_ms` and `before_ms` (wall clock) the value
/// became `value`.
#[derive(Debug, Clone, Copy)]
struct Change {
    after_ms: i64,
    before_ms: i64,
    value: f64,
}

fn spawn_receiver(
    ingest: SocketAddr,
    http: SocketAddr,
    state: &str,
    url: &str,
) -> Result<ChildProcess> {
    ChildProcess::spawn(
        "receiver",
        [
            "--listen",
            &ingest.to_string(),
            "--http-listen",
            &http.to_string(),
            "--heartbeat-interval",
            HEARTBEAT,
            "--state-dir",
            state,
            "--remote-write-url",
            url,
            "--remote-write-interval",
            RESEND_ARG,
        ],
        &[],
    )
}

/// Moves the cluster's clock `speed` times faster than real time until dropped, recording
/// every change of the HPA's current replicas.
struct Driver {
    changes: Arc<Mutex<Vec<Change>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Driver {
    fn start(cluster: &Cluster, speed: u32) -> Driver {
        let handle = cluster.handle.clone();
        let changes = Arc::new(Mutex::new(Vec::new()));
        let record = changes.clone();
        let task = tokio::spawn(async move {
            let tick = Duration::from_millis(50);
            let mut last = None;
            loop {
                let after_ms = now_ms();
                if handle.advance(tick * speed).is_err() {
                    return;
                }
                let replicas = handle
                    .hpa_status("shop", "web")
                    .and_then(|s| s.current_replicas)
                    .map(f64::from);
                if replicas.is_some() && replicas != last {
                    if let (Some(value), Ok(mut r)) = (replicas, record.lock()) {
                        r.push(Change {
                            after_ms,
                            before_ms: now_ms(),
                            value,
                        });
                    }
                    last = replicas;
                }
                tokio::time::sleep(tick).await;
            }
        });
        Driver { changes, task }
    }

    fn changes(&self) -> Vec<Change> {
        self.changes.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Waits until the HPA's replicas reached `value`.
    async fn until(&self, value: f64, timeout: Duration) -> Result<()> {
        wait_until(
            &format!("the HPA at {value} replicas"),
            timeout,
            Duration::from_millis(50),
            || async {
                Ok(self
                    .changes()
                    .last()
                    .is_some_and(|c| c.value == value)
                    .then_some(()))
            },
        )
        .await
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn replicas_series<'a>(series: &'a [Exported], cluster: &str) -> Option<&'a Exported> {
    series.iter().find(|s| {
        s.label("__name__") == "kube_horizontalpodautoscaler_status_current_replicas"
            && s.label("cluster") == cluster
            && s.label("horizontalpodautoscaler") == "web"
    })
}

/// Every change at its own time: the first sample with the change's value after the
/// previous change must be stamped within `[after, before + OBSERVED_WITHIN]`; returns the
/// stamps' delays after `after` (for the figures).
fn changes_at_their_time(samples: &[(i64, f64)], changes: &[Change]) -> Result<Vec<i64>> {
    let mut delays = Vec::new();
    let mut from = 0;
    let mut prev: Option<f64> = None;
    for change in changes {
        let Some(pos) = samples[from..]
            .iter()
            .position(|(t, v)| *v == change.value && *t >= change.after_ms - 1)
        else {
            bail!(
                "no sample of {} from {} ms on: {samples:?}",
                change.value,
                change.after_ms
            );
        };
        let (t, _) = samples[from + pos];
        ensure!(
            t <= change.before_ms + OBSERVED_WITHIN,
            "the change to {} made between {} and {} is stamped {t}",
            change.value,
            change.after_ms,
            change.before_ms
        );
        // Nothing but the previous value before it (no value from the future).
        if let (Some(prev), Some((bad_t, bad_v))) = (
            prev,
            samples[from..from + pos]
                .iter()
                .find(|(_, v)| Some(*v) != prev),
        ) {
            bail!(
                "{bad_v} at {bad_t}, while the value was {prev:?} until the change to {}",
                change.value
            );
        }
        prev = Some(change.value);
        delays.push(t - change.after_ms);
        from += pos + 1;
    }
    Ok(delays)
}

/// The longest stretch between consecutive samples of any series of `cluster` in
/// `[from_ms, to_ms]`, ignoring series that ended (staleness marker) or began inside it.
fn longest_gap(series: &[Exported], from_ms: i64, to_ms: i64) -> (i64, String) {
    let mut worst = (0, String::new());
    for s in series {
        let inside: Vec<&(i64, f64)> = s
            .samples
            .iter()
            .filter(|(t, _)| (from_ms..=to_ms).contains(t))
            .collect();
        let alive_throughout = s.samples.first().is_some_and(|(t, _)| *t <= from_ms)
            && !s.samples.iter().any(|(t, v)| v.is_nan() && *t <= to_ms);
        if !alive_throughout {
            continue;
        }
        for w in inside.windows(2) {
            let gap = w[1].0 - w[0].0;
            if gap > worst.0 {
                worst = (gap, format!("{:?} at {}", s.metric, w[0].0));
            }
        }
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_steps_through_a_60s_link_cut_reach_the_store_at_their_own_times() -> Result<()> {
    let vm = match VictoriaMetrics::start().await {
        Ok(vm) => vm,
        Err(e) => {
            kube_relay_testkit::skip(&format!("needs VictoriaMetrics: {e:#}"));
            return Ok(());
        }
    };
    let cluster = Cluster::start(SCENARIO).await?;
    let state = tempfile::tempdir()?;
    let (ingest, http) = (free_loopback_addr()?, free_loopback_addr()?);
    let receiver = spawn_receiver(
        ingest,
        http,
        &state.path().display().to_string(),
        &vm.write_url(),
    )?;
    let link = LinkProxy::start(ingest).await?;
    let sender = spawn_sender(&cluster, "cut", link.addr(), &[])?;
    let driver = Driver::start(&cluster, 10);
    let both_logs = || logs(&sender, &receiver);
    wait_until(
        "the HPA in the store",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            Ok(replicas_series(&vm.export(r#"{cluster="cut"}"#).await?, "cut").map(|_| ()))
        },
    )
    .await
    .with_context(both_logs)?;

    // The link goes dead (bytes stop, nothing closes), then the load jumps and falls.
    link.stall(true);
    let cut_at = now_ms();
    cluster.handle.set_load("shop", "web", 100.0)?;
    driver
        .until(10.0, Duration::from_secs(40))
        .await
        .with_context(both_logs)?;
    cluster.handle.set_load("shop", "web", 10.0)?;
    driver
        .until(2.0, Duration::from_secs(40))
        .await
        .with_context(both_logs)?;
    let remaining = Duration::from_millis(u64::try_from(60_000 - (now_ms() - cut_at)).unwrap_or(0));
    tokio::time::sleep(remaining).await; // the 60 s outage the issue asks for
    link.reset_all();
    link.stall(false);
    let restored_at = now_ms();
    let during: Vec<Change> = driver
        .changes()
        .into_iter()
        .filter(|c| c.after_ms >= cut_at)
        .collect();
    let values: Vec<f64> = during.iter().map(|c| c.value).collect();
    println!("FIGURE remote-write link-cut: replicas during the cut {values:?}");
    ensure!(
        values.len() >= 3,
        "the HPA stepped during the cut: {values:?}"
    );

    // Everything the sender saw during the cut reaches the store, at its own time.
    let series = wait_until(
        "the cut's history in the store",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let all = vm.export(r#"{cluster="cut"}"#).await?;
            let done = replicas_series(&all, "cut")
                .is_some_and(|s| s.samples.last().is_some_and(|(t, _)| *t >= restored_at));
            Ok(done.then_some(all))
        },
    )
    .await
    .with_context(both_logs)?;
    let replicas = replicas_series(&series, "cut").context("replicas series")?;
    let delays = changes_at_their_time(&replicas.samples, &during)
        .with_context(|| format!("changes {during:?}"))
        .with_context(both_logs)?;
    println!(
        "FIGURE remote-write link-cut: {} replica changes, stamped {delays:?} ms after the moment they were made; \
         delivered {:.1} s after the link came back",
        during.len(),
        (now_ms() - restored_at) as f64 / 1000.0
    );
    let (gap, which) = longest_gap(&series, cut_at - 5_000, restored_at);
    println!(
        "FIGURE remote-write link-cut: longest gap between samples of a series across the cut {gap} ms"
    );
    ensure!(
        gap <= RESEND.as_millis() as i64,
        "a gap of {gap} ms in {which} (re-send interval {RESEND:?})"
    );
    drop(driver);
    drop(sender);
    drop(receiver);
    cluster.shutdown().await;
    Ok(())
}

/// `(pod, flips)` the flipper made: each readiness value set, with its wall-clock window.
type Flips = Arc<Mutex<Vec<Change>>>;

/// Flips one pod's readiness every `every` until dropped.
fn flip(cluster: &Cluster, pod: String, every: Duration) -> (Flips, tokio::task::JoinHandle<()>) {
    let handle = cluster.handle.clone();
    let flips: Flips = Arc::new(Mutex::new(Vec::new()));
    let record = flips.clone();
    let task = tokio::spawn(async move {
        let mut ready = false;
        loop {
            let after_ms = now_ms();
            if handle.set_pod_ready("shop", &pod, ready).is_err() {
                return;
            }
            if let Ok(mut r) = record.lock() {
                r.push(Change {
                    after_ms,
                    before_ms: now_ms(),
                    value: f64::from(u8::from(ready)),
                });
            }
            ready = !ready;
            tokio::time::sleep(every).await;
        }
    });
    (flips, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_2_minutes_and_a_receiver_killed_for_30s_repeat_and_reorder_nothing()
-> Result<()> {
    let mut vm = match VictoriaMetrics::start().await {
        Ok(vm) => vm,
        Err(e) => {
            kube_relay_testkit::skip(&format!("needs VictoriaMetrics: {e:#}"));
            return Ok(());
        }
    };
    let cluster = Cluster::start(SCENARIO).await?;
    cluster.churn(true);
    let state = tempfile::tempdir()?;
    let state_dir = state.path().display().to_string();
    let (ingest, http) = (free_loopback_addr()?, free_loopback_addr()?);
    let mut receiver = spawn_receiver(ingest, http, &state_dir, &vm.write_url())?;
    let sender = spawn_sender(&cluster, "outage", ingest, &[])?;
    let pod = cluster
        .handle
        .running_pods("shop", "web")
        .first()
        .and_then(|p| p.metadata.name.clone())
        .context("a running pod")?;
    let ready = |series: &[Exported]| -> Option<Vec<(i64, f64)>> {
        series
            .iter()
            .find(|s| {
                s.label("__name__") == "kube_pod_status_ready"
                    && s.label("pod") == pod
                    && s.label("condition") == "true"
            })
            .map(|s| s.samples.clone())
    };
    wait_until(
        "the pod in the store",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async { Ok(ready(&vm.export(r#"{cluster="outage"}"#).await?).map(|_| ())) },
    )
    .await
    .with_context(|| logs(&sender, &receiver))?;
    let (flips, flipper) = flip(&cluster, pod.clone(), Duration::from_millis(700));

    // The backend goes away for two minutes; 30 s in, the receiver is killed for 30 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    vm.stop().await?;
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    receiver.kill9().await?;
    let killed_ms = now_ms();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let mut receiver = spawn_receiver(ingest, http, &state_dir, &vm.write_url())?;
    let restarted_ms = now_ms();
    tokio::time::sleep(Duration::from_secs(120).saturating_sub(down_at.elapsed())).await;
    vm.restart().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    flipper.abort();
    let flips = flips.lock().map(|f| f.clone()).unwrap_or_default();
    let last_flip = flips.last().map_or(0, |f| f.before_ms);

    // Everything queued arrives; nothing twice, nothing out of order.
    let samples = wait_until(
        "the queues drained into the store",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async {
            let all = vm.export(r#"{cluster="outage"}"#).await?;
            Ok(ready(&all)
                .filter(|s| s.last().is_some_and(|(t, _)| *t >= last_flip))
                .map(|_| all))
        },
    )
    .await
    .with_context(|| logs(&sender, &receiver))?;
    let mut total = 0;
    for s in &samples {
        total += s.samples.len();
        if let Some(w) = s.samples.windows(2).find(|w| w[1].0 <= w[0].0) {
            bail!(
                "{:?}: samples at {} then {} (a repeat or out of order)",
                s.metric,
                w[0].0,
                w[1].0
            );
        }
    }
    let pod_samples = ready(&samples).context("the pod's readiness")?;
    // Every flip is in the store at its time: those the receiver saw before it was killed
    // and after it came back from its queue, those made while it was down from the sender's
    // spool replayed on a base into the restarted receiver, which had lost the series table
    // (docs/protocol.md, Time and history, item 5).
    let mut missing = Vec::new();
    for f in &flips {
        let found = pod_samples.iter().any(|(t, v)| {
            *v == f.value && *t >= f.after_ms - 1 && *t <= f.before_ms + OBSERVED_WITHIN
        });
        if !found {
            let near: Vec<&(i64, f64)> = pod_samples
                .iter()
                .filter(|(t, _)| (f.after_ms - 2000..f.before_ms + 2000).contains(t))
                .collect();
            missing.push(format!("{f:?} near {near:?}"));
        }
    }
    // And once: each flip changes the value, so the store's changes of value from the
    // first flip on are exactly the flips (a repeated or misplaced one adds a change).
    let first_flip = flips.first().map_or(0, |f| f.after_ms);
    let changes = pod_samples
        .windows(2)
        .filter(|w| w[1].0 >= first_flip - 1 && w[1].1 != w[0].1)
        .count();
    let inside = flips
        .iter()
        .filter(|f| f.before_ms >= killed_ms && f.after_ms <= restarted_ms)
        .count();
    let in_window = pod_samples
        .iter()
        .filter(|(t, _)| (killed_ms..restarted_ms).contains(t))
        .count();
    println!(
        "FIGURE remote-write outage: {} flips, {} samples in the store for the cluster; {} flips \
         missing; {changes} changes of the pod's readiness in the store; {inside} flips during \
         the receiver's downtime, {in_window} samples of the pod stamped in it",
        flips.len(),
        total,
        missing.len(),
    );
    ensure!(
        missing.is_empty(),
        "flips missing (killed at {killed_ms}, restarted at {restarted_ms}):\n{}",
        missing.join("\n")
    );
    ensure!(
        changes == flips.len(),
        "{} flips but {changes} changes of value in the store: {pod_samples:?}",
        flips.len()
    );
    drop(receiver.kill9().await);
    drop(sender);
    cluster.shutdown().await;
    Ok(())
}

/// Failover (issue 13 item 4) end to end: a sender with two receivers (`--target A,B`), both
/// remote-writing to one VictoriaMetrics. A's host dies while a pod's readiness flips: its
/// network goes silent (a proxy stops the bytes, no connection closes), so the sender keeps
/// sending into the void until it notices the dead peer (three heartbeat intervals), then
/// moves to B and gives it, on a base, what A never acknowledged, each change at its own
/// time; A's process is killed (`kill -9`). A comes back later (as an operator restarts it)
/// and drains its queue: what it had acknowledged but not yet written. Then every flip is
/// in the store at its own time: no hole. A batch A wrote to its queue but whose acknowledgement the kill lost reaches the
/// store twice (from A's queue and from B), at the same time with the same value: counted,
/// not a hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_under_a_sender_with_two_targets_leaves_no_hole_in_the_store()
-> Result<()> {
    let vm = match VictoriaMetrics::start().await {
        Ok(vm) => vm,
        Err(e) => {
            kube_relay_testkit::skip(&format!("needs VictoriaMetrics: {e:#}"));
            return Ok(());
        }
    };
    let cluster = Cluster::start(SCENARIO).await?;
    let (state_a, state_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let state_a = state_a.path().display().to_string();
    let state_b = state_b.path().display().to_string();
    let (ingest_a, http_a) = (free_loopback_addr()?, free_loopback_addr()?);
    let (ingest_b, http_b) = (free_loopback_addr()?, free_loopback_addr()?);
    let mut a = spawn_receiver(ingest_a, http_a, &state_a, &vm.write_url())?;
    let b = spawn_receiver(ingest_b, http_b, &state_b, &vm.write_url())?;
    let host_a = LinkProxy::start(ingest_a).await?;
    let target_b = ingest_b.to_string();
    let sender = spawn_sender(
        &cluster,
        "failover",
        host_a.addr(),
        &["--target", &target_b],
    )?;
    let pod = cluster
        .handle
        .running_pods("shop", "web")
        .first()
        .and_then(|p| p.metadata.name.clone())
        .context("a running pod")?;
    let ready = |series: &[Exported]| -> Option<Vec<(i64, f64)>> {
        series
            .iter()
            .find(|s| {
                s.label("__name__") == "kube_pod_status_ready"
                    && s.label("pod") == pod
                    && s.label("condition") == "true"
            })
            .map(|s| s.samples.clone())
    };
    wait_until(
        "the pod in the store",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async { Ok(ready(&vm.export(r#"{cluster="failover"}"#).await?).map(|_| ())) },
    )
    .await
    .with_context(|| logs(&sender, &a))?;
    let (flips, flipper) = flip(&cluster, pod.clone(), Duration::from_millis(300));

    // A's host dies mid-stream; B must take over.
    tokio::time::sleep(Duration::from_secs(5)).await;
    host_a.stall(true);
    let killed = Instant::now();
    let killed_ms = now_ms();
    wait_until(
        "the sender streaming to B",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let up = common::cluster_up(&common::scrape(http_b).await?, "failover");
            Ok((up == Some(1.0)).then_some(()))
        },
    )
    .await
    .with_context(|| logs(&sender, &b))?;
    let moved = killed.elapsed();
    a.kill9().await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A comes back and drains what it had acknowledged.
    let a = spawn_receiver(ingest_a, http_a, &state_a, &vm.write_url())?;
    host_a.stall(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    flipper.abort();
    let flips = flips.lock().map(|f| f.clone()).unwrap_or_default();
    let last_flip = flips.last().map_or(0, |f| f.before_ms);

    let samples = wait_until(
        "every flip in the store",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let all = vm.export(r#"{cluster="failover"}"#).await?;
            Ok(ready(&all)
                .filter(|s| s.last().is_some_and(|(t, _)| *t >= last_flip))
                .map(|_| all))
        },
    )
    .await
    .with_context(|| logs(&sender, &b))?;
    let pod_samples = ready(&samples).context("the pod's readiness")?;
    let mut missing = Vec::new();
    for f in &flips {
        let found = pod_samples.iter().any(|(t, v)| {
            *v == f.value && *t >= f.after_ms - 1 && *t <= f.before_ms + OBSERVED_WITHIN
        });
        if !found {
            let near: Vec<&(i64, f64)> = pod_samples
                .iter()
                .filter(|(t, _)| (f.after_ms - 2000..f.before_ms + 2000).contains(t))
                .collect();
            missing.push(format!("{f:?} near {near:?}"));
        }
    }
    let mut twice = 0;
    for s in &samples {
        for w in s.samples.windows(2) {
            ensure!(
                w[1].0 > w[0].0 || (w[1].0 == w[0].0 && w[1].1.to_bits() == w[0].1.to_bits()),
                "{:?}: {:?} then {:?}: two values at one time",
                s.metric,
                w[0],
                w[1]
            );
            twice += usize::from(w[1].0 == w[0].0);
        }
    }
    println!(
        "FIGURE remote-write failover: streaming to B {:.2} s after A went silent (dead peer \
         after 3 heartbeats of {HEARTBEAT}); {} flips, {} missing; {twice} samples written by \
         both receivers (acknowledged by A, the acknowledgement lost)",
        moved.as_secs_f64(),
        flips.len(),
        missing.len()
    );
    ensure!(
        missing.is_empty(),
        "flips missing (A killed at {killed_ms}):\n{}",
        missing.join("\n")
    );
    drop(a);
    drop(b);
    drop(sender);
    cluster.shutdown().await;
    Ok(())
}

/// A deleted pod (issue 13, "a deleted pod's series ends in the store"): once the API server
/// has removed it, every series of that pod ends in the store with a staleness marker,
/// stamped when the sender saw the pod go and followed by nothing; the pods still running
/// keep their series going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pods_series_end_in_the_store_with_a_staleness_marker() -> Result<()> {
    let vm = match VictoriaMetrics::start().await {
        Ok(vm) => vm,
        Err(e) => {
            kube_relay_testkit::skip(&format!("needs VictoriaMetrics: {e:#}"));
            return Ok(());
        }
    };
    let cluster = Cluster::start(SCENARIO).await?;
    let state = tempfile::tempdir()?;
    let (ingest, http) = (free_loopback_addr()?, free_loopback_addr()?);
    let receiver = spawn_receiver(
        ingest,
        http,
        &state.path().display().to_string(),
        &vm.write_url(),
    )?;
    let sender = spawn_sender(&cluster, "stale", ingest, &[])?;
    let running = cluster.handle.running_pods("shop", "web");
    let names: Vec<String> = running
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let [gone, kept, ..] = names.as_slice() else {
        bail!("two running pods, got {names:?}");
    };
    let of_pod = |series: &[Exported], pod: &str| -> Vec<Exported> {
        series
            .iter()
            .filter(|s| s.label("pod") == pod)
            .cloned()
            .collect()
    };
    let before = wait_until(
        "the pod's series in the store",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let all = vm.export(r#"{cluster="stale"}"#).await?;
            let n = of_pod(&all, gone).len();
            Ok((n >= 5).then_some(n))
        },
    )
    .await
    .with_context(|| logs(&sender, &receiver))?;

    let deleted_ms = now_ms();
    cluster.handle.delete_pod("shop", gone)?;
    // Past the grace period: the kubelet stops the pod and the API server removes it.
    cluster.handle.advance(Duration::from_secs(60))?;
    let removed_ms = now_ms();
    let ended = wait_until(
        "a staleness marker ending every series of the deleted pod",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let all = vm.export(r#"{cluster="stale"}"#).await?;
            let series = of_pod(&all, gone);
            let done = series.len() >= before
                && series
                    .iter()
                    .all(|s| s.samples.last().is_some_and(|(_, v)| v.is_nan()));
            Ok(done.then_some(all))
        },
    )
    .await
    .with_context(|| logs(&sender, &receiver))?;
    // The re-send interval passes: nothing may follow a marker.
    tokio::time::sleep(RESEND + Duration::from_secs(1)).await;
    let after = vm.export(r#"{cluster="stale"}"#).await?;
    let series = of_pod(&after, gone);
    let mut stamps = Vec::new();
    for s in &series {
        let Some(&(t, v)) = s.samples.last() else {
            bail!("{:?} has no sample", s.metric);
        };
        ensure!(
            v.is_nan(),
            "{:?} went on after its staleness marker: {:?}",
            s.metric,
            s.samples
        );
        ensure!(
            (deleted_ms - 1..=removed_ms + OBSERVED_WITHIN).contains(&t),
            "{:?} ends at {t}, the pod was deleted at {deleted_ms} and removed by {removed_ms}",
            s.metric
        );
        stamps.push(t - deleted_ms);
    }
    // The pod that stays is not ended (its phase and readiness series, whose label sets
    // never change while it runs).
    let kept_series: Vec<Exported> = of_pod(&after, kept)
        .into_iter()
        .filter(|s| {
            matches!(
                s.label("__name__"),
                "kube_pod_status_phase" | "kube_pod_status_ready"
            )
        })
        .collect();
    ensure!(!kept_series.is_empty(), "the kept pod {kept} in the store");
    for s in &kept_series {
        ensure!(
            s.samples.last().is_some_and(|(_, v)| !v.is_nan()),
            "{:?} of a running pod ended: {:?}",
            s.metric,
            s.samples
        );
    }
    println!(
        "FIGURE remote-write staleness: {} series of the deleted pod each end with a staleness marker, \
         stamped {:?} ms after the delete call; {} series of a running pod go on",
        series.len(),
        stamps.iter().min().zip(stamps.iter().max()),
        kept_series.len()
    );
    drop(ended);
    drop(sender);
    drop(receiver);
    cluster.shutdown().await;
    Ok(())
}
