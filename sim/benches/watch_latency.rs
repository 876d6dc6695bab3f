//! Watch delivery latency of the simulated API server at 1,000 changes per second.
//!
//! 1,000 running pods; a kube-rs watch on them; every millisecond one pod's readiness flips
//! through `SimHandle::set_pod_ready` (one API write each). The latency of a change is the
//! time from that call to the watch event reaching the client. Baseline, measured in the
//! same run on the same server: `GET /version` round trips through the same kube client.
//!
//! `cargo bench -p kube-relay-sim --bench watch_latency`

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube_relay_sim::{ClockMode, Scenario, Simulator};

const CHANGES: usize = 5_000;
const RATE_PER_SECOND: u64 = 1_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "{name:<38} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    (p50, p99)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let scenario = Scenario::from_yaml(
        "seed: 1\nnodes: {count: 10, cpu: \"64\"}\nbulk: {deployments: 10, replicas: 100}\n",
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim = Simulator::start(scenario, listener, ClockMode::Manual).await?;
    let handle = sim.handle();
    let client = kube::Client::try_from(kube::Config::new(sim.base_url().parse()?))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bulk");
    let names: Vec<String> = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();

    // Baseline: request round trips on the same server and client.
    for _ in 0..100 {
        client.apiserver_version().await?;
    }
    let mut baseline = Vec::new();
    for _ in 0..1_000 {
        let t = Instant::now();
        client.apiserver_version().await?;
        baseline.push(t.elapsed());
    }

    // Changes sent, per pod, oldest first; the watch task matches events to them.
    let sent: Arc<Mutex<HashMap<String, VecDeque<Instant>>>> = Arc::default();
    let rv = handle.resource_version().to_string();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(60), &rv)
        .await?
        .boxed();
    let matcher = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(CHANGES);
            while latencies.len() < CHANGES {
                match stream.try_next().await {
                    Ok(Some(WatchEvent::Modified(p))) => {
                        let now = Instant::now();
                        let name = p.metadata.name.unwrap_or_default();
                        let sent_at = sent
                            .lock()
                            .ok()
                            .and_then(|mut s| s.get_mut(&name).and_then(VecDeque::pop_front));
                        if let Some(t) = sent_at {
                            latencies.push(now - t);
                        }
                    }
                    Ok(Some(_)) => {}
                    other => panic!("watch ended early: {other:?}"),
                }
            }
            latencies
        })
    };
    let start = tokio::time::Instant::now();
    let mut ready = vec![true; names.len()];
    for i in 0..CHANGES {
        tokio::time::sleep_until(
            start + Duration::from_micros(i as u64 * 1_000_000 / RATE_PER_SECOND),
        )
        .await;
        let k = i % names.len();
        ready[k] = !ready[k];
        sent.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .entry(names[k].clone())
            .or_default()
            .push_back(Instant::now());
        handle.set_pod_ready("bulk", &names[k], ready[k])?;
    }
    let elapsed = start.elapsed();
    let latencies = matcher.await?;

    println!(
        "simulated API server, {} pods, {} changes in {:.2} s",
        names.len(),
        CHANGES,
        elapsed.as_secs_f64()
    );
    let (b50, b99) = report("baseline: GET /version round trip", baseline);
    let (w50, w99) = report("change → watch event (1k changes/s)", latencies);
    println!(
        "ratio watch/baseline: p50 {:.2}x  p99 {:.2}x",
        w50.as_secs_f64() / b50.as_secs_f64(),
        w99.as_secs_f64() / b99.as_secs_f64()
    );
    sim.shutdown().await;
    Ok(())
}
