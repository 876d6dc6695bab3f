//! Freshness: how long from a change in the Kubernetes API to the receiver serving it.
//!
//! ```text
//! cargo bench -p kube-relay-testkit --bench freshness            # 10 s at 1,000 changes/s
//! FRESHNESS_SECONDS=30 FRESHNESS_RATE=2000 FRESHNESS_FLUSH_MS=5 cargo bench -p kube-relay-testkit --bench freshness
//! ```
//!
//! A simulated cluster (200 pods, real time) has one pod's readiness flipped every
//! millisecond. Three observers, in two phases of the same run (kubectl's CPU would
//! otherwise slow the relay down on a small machine):
//! - **watch** — a kube-rs watcher on the API itself: the floor any watch-based relay pays;
//! - **kube-relay** — sender → loopback TCP → receiver, observed in the receiver's store
//!   (what the next `GET /metrics` would serve), polled every ~0.5 ms on its own thread
//!   (these two see the same flips);
//! - **seed design** — `kubectl get pods -o json` in a loop, as the original description did,
//!   in a second phase of the same length.
//!
//! Each reports the latency from the API change to the first observation: p50, p99, max,
//! and kube-relay's ratios against both baselines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use kube_relay_receiver::{Format, Receiver, ReceiverConfig};
use kube_relay_sender::config::UsageSource;
use kube_relay_sender::kubeclient::plain_client;
use kube_relay_sender::{Config, Sender};
use kube_relay_sim::{ClockMode, Scenario, SimHandle, Simulator};
use kube_relay_testkit::exposition;
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "flap";
const SCENARIO: &str = r#"
name: freshness
description: 200 pods, readiness flipped by the benchmark
seed: 11
nodes: {count: 4, cpu: "32", memory: 64Gi, pods: 110}
bulk: {deployments: 10, replicas: 20, namespace: flap}
events: {pod_events: false}
metrics: {enabled: false}
api: {watch_history: 200000}
"#;

/// Flips not yet seen by an observer: pod → (wanted readiness, when the API changed).
type Pending = Arc<Mutex<HashMap<String, (bool, Instant)>>>;

#[derive(Default)]
struct Observer {
    pending: Pending,
    latencies: Arc<Mutex<Vec<Duration>>>,
}

impl Observer {
    fn expect(&self, pod: &str, ready: bool, at: Instant) {
        if let Ok(mut p) = self.pending.lock() {
            p.insert(pod.to_owned(), (ready, at));
        }
    }

    /// Records every pending flip that `seen` now shows.
    fn observe(&self, seen: &HashMap<String, bool>, now: Instant) {
        let (Ok(mut pending), Ok(mut lat)) = (self.pending.lock(), self.latencies.lock()) else {
            return;
        };
        pending.retain(|pod, (want, at)| {
            if seen.get(pod) == Some(want) {
                lat.push(now.saturating_duration_since(*at));
                false
            } else {
                true
            }
        });
    }

    fn busy(&self, pod: &str) -> bool {
        self.pending
            .lock()
            .map(|p| p.contains_key(pod))
            .unwrap_or(true)
    }

    fn report(&self, name: &str) -> Option<(Duration, Duration)> {
        let mut l = self.latencies.lock().ok()?.clone();
        if l.is_empty() {
            println!("{name:>12}: no observations");
            return None;
        }
        l.sort();
        let q = |f: f64| l[((l.len() as f64 * f) as usize).min(l.len() - 1)];
        let (p50, p99, max) = (q(0.5), q(0.99), l[l.len() - 1]);
        println!(
            "{name:>12}: n={:>6}  p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
            l.len(),
            ms(p50),
            ms(p99),
            ms(max)
        );
        Some((p50, p99))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let seconds: u64 = std::env::var("FRESHNESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rate: u64 = std::env::var("FRESHNESS_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim = Simulator::start(
        Scenario::from_yaml(SCENARIO)?,
        listener,
        ClockMode::RealTime { speed: 1.0 },
    )
    .await?;
    let cluster = sim.handle();
    let kubeconfig = tempfile::NamedTempFile::new()?;
    std::fs::write(kubeconfig.path(), sim.kubeconfig_yaml())?;
    let shutdown = CancellationToken::new();

    let receiver = Receiver::bind(ReceiverConfig::loopback()).await?;
    let store = receiver.store().clone();
    let ingest = receiver.ingest_addr();
    tokio::spawn(receiver.run(shutdown.clone()));

    let mut config = Config::new(ingest.to_string());
    config.usage_source = UsageSource::None;
    if let Some(ms) = std::env::var("FRESHNESS_FLUSH_MS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        config.flush_interval = Duration::from_millis(ms);
    }
    println!("sender flush interval: {:?}", config.flush_interval);
    let sender = Sender::new(config, plain_client(&sim.base_url())?, "freshness")?;
    tokio::spawn(sender.run(shutdown.clone()));

    // Wait for all 200 pods to be Ready in the cluster and at the receiver.
    let read_store = move || -> HashMap<String, bool> {
        let mut text = String::new();
        store.encode_series(Format::Text, &mut text);
        // Only the readiness lines are parsed, to keep the observer's own poll short.
        let ready_lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("kube_pod_status_ready{"))
            .collect();
        exposition::parse(&ready_lines.join("\n"))
            .into_iter()
            .filter(|s| s.name == "kube_pod_status_ready" && s.label("condition") == "true")
            .map(|s| (s.label("pod").to_owned(), s.value == 1.0))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = read_store();
        if seen.len() == 200 && seen.values().all(|r| *r) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "pods never all Ready at the receiver ({} seen)",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pods: Vec<String> = cluster
        .pods()
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();

    let relay = Arc::new(Observer::default());
    let watch = Arc::new(Observer::default());
    let seed = Arc::new(Observer::default());
    let mut state: HashMap<String, bool> = pods.iter().map(|p| (p.clone(), true)).collect();

    // Phase 1: the watch and kube-relay observe the same flips.
    let stop = CancellationToken::new();

    // kube-relay: the receiver's store, polled on a thread of its own.
    let relay_thread = {
        let (relay, stop) = (relay.clone(), stop.clone());
        std::thread::spawn(move || {
            let (started, mut polls) = (Instant::now(), 0u64);
            while !stop.is_cancelled() {
                let seen = read_store();
                relay.observe(&seen, Instant::now());
                polls += 1;
                // Leave the relay itself some CPU on a 2-core machine.
                std::thread::sleep(Duration::from_micros(500));
            }
            (polls, started.elapsed())
        })
    };
    // watch: a kube-rs watcher straight on the API.
    let watch_task = {
        let (watch, stop) = (watch.clone(), stop.clone());
        let client: Client = plain_client(&sim.base_url())?;
        tokio::spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, NAMESPACE);
            let stream = watcher::watcher(api, watcher::Config::default());
            futures::pin_mut!(stream);
            let mut seen = HashMap::new();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    ev = stream.try_next() => match ev {
                        Ok(Some(Event::Apply(p) | Event::InitApply(p))) => {
                            if let Some(n) = p.metadata.name.clone() {
                                seen.insert(n, ready(&p));
                                watch.observe(&seen, Instant::now());
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => return,
                    }
                }
            }
        })
    };
    let (flips, elapsed) = flip(
        &cluster,
        &pods,
        &mut state,
        rate,
        seconds,
        &[&relay, &watch],
    )
    .await?;
    // Let the observers catch up with the last flips.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let (relay_polls, relay_polled) = relay_thread
        .join()
        .map_err(|_| anyhow::anyhow!("store observer thread panicked"))?;
    let _ = watch_task.await;

    // Phase 2, alone so that kubectl's CPU does not slow the relay down: the seed design.
    let stop = CancellationToken::new();
    // seed design: kubectl polling.
    let seed_thread = {
        let (seed, stop) = (seed.clone(), stop.clone());
        let path = kubeconfig.path().to_owned();
        std::thread::spawn(move || -> Result<u64> {
            let mut polls = 0;
            while !stop.is_cancelled() {
                let out = std::process::Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(&path)
                    .args(["get", "pods", "-n", NAMESPACE, "-o", "json"])
                    .output()
                    .context("kubectl")?;
                let now = Instant::now();
                let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
                let seen: HashMap<String, bool> = list["items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|i| serde_json::from_value::<Pod>(i.clone()).ok())
                            .filter_map(|p| p.metadata.name.clone().map(|n| (n, ready(&p))))
                            .collect()
                    })
                    .unwrap_or_default();
                seed.observe(&seen, now);
                polls += 1;
            }
            Ok(polls)
        })
    };

    let (seed_flips, seed_elapsed) =
        flip(&cluster, &pods, &mut state, rate, seconds, &[&seed]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let polls = seed_thread
        .join()
        .map_err(|_| anyhow::anyhow!("kubectl thread panicked"))??;
    shutdown.cancel();

    println!(
        "seed phase: {seed_flips} flips in {:.1} s = {:.0} changes/s; {polls} kubectl polls",
        seed_elapsed.as_secs_f64(),
        seed_flips as f64 / seed_elapsed.as_secs_f64()
    );
    println!(
        "freshness: {flips} readiness flips in {:.1} s = {:.0} changes/s over 200 pods",
        elapsed.as_secs_f64(),
        flips as f64 / elapsed.as_secs_f64()
    );
    println!(
        "kube-relay observer: {relay_polls} store reads, one every {:.3} ms (the resolution of its figures)",
        ms(relay_polled) / relay_polls.max(1) as f64
    );
    let w = watch.report("watch");
    let r = relay.report("kube-relay");
    let s = seed.report("seed design");
    if let (Some((rp50, rp99)), Some((wp50, wp99))) = (r, w) {
        println!(
            "kube-relay vs a bare watch: p50 {:.2}x, p99 {:.2}x",
            ms(rp50) / ms(wp50),
            ms(rp99) / ms(wp99)
        );
    }
    if let (Some((rp50, rp99)), Some((sp50, sp99))) = (r, s) {
        println!(
            "seed design vs kube-relay: p50 {:.0}x slower, p99 {:.0}x slower",
            ms(sp50) / ms(rp50),
            ms(sp99) / ms(rp99)
        );
    }
    sim.shutdown().await;
    Ok(())
}

/// Flips one pod's readiness every 1/`rate` s for `seconds`, never a pod whose previous flip
/// one of `observers` has not seen yet (so every observation is unambiguous). Returns the
/// flips made and the time taken.
async fn flip(
    cluster: &SimHandle,
    pods: &[String],
    state: &mut HashMap<String, bool>,
    rate: u64,
    seconds: u64,
    observers: &[&Observer],
) -> Result<(u64, Duration)> {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = Instant::now();
    let (mut flips, mut i) = (0u64, 0usize);
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        for _ in 0..pods.len() {
            i = (i + 1) % pods.len();
            let pod = &pods[i];
            if observers.iter().any(|o| o.busy(pod)) {
                continue;
            }
            let want = !state.get(pod).copied().unwrap_or(true);
            let at = Instant::now();
            cluster.set_pod_ready(NAMESPACE, pod, want)?;
            state.insert(pod.clone(), want);
            for o in observers {
                o.expect(pod, want, at);
            }
            flips += 1;
            break;
        }
    }
    Ok((flips, started.elapsed()))
}
