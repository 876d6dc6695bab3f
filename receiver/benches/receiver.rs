//! Receiver benchmark: `/metrics` encode time at 10 k and 100 k series and at 1 M series in
//! 10,000 clusters of 100 (the fan-in bench's store; rendered whole, and served in pieces
//! through `respond_off_runtime` without a socket), ingest rate in
//! updates/s on one core (frame decode + apply), and the same figures for the baselines in
//! the same run: Pushgateway (Debian `prometheus-pushgateway`) serving the same 100 k series,
//! and the seed design (`shared/baselines/seed_receiver.py`, Python `prometheus_client`).
//!
//! Section `stall` measures whether a scrape stalls ingest: a sender streams one small batch
//! per millisecond (100 value changes and one series redefined, as pod churn does) into the
//! cluster that holds 100 k or 1 M series, and each batch's latency is taken from when it
//! was due to when its `Store::apply` returned; first with nobody scraping (the baseline,
//! same run), then while `/metrics` is fetched over HTTP in a loop.
//!
//! Run: `cargo bench -p kube-relay-receiver --bench receiver` (or only some sections:
//! `... -- stall`). A baseline that cannot be started (binary or Python module missing) is
//! reported as unavailable, never guessed.
//! Set `KUBE_RELAY_BASELINES` to the baselines folder if it is not `../shared/baselines`
//! beside the workspace.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use futures::SinkExt;
use kube_relay_proto::{
    Batch, DEFAULT_MAX_FRAME_BYTES, FamilyDef, Hello, MetricKind, PROTOCOL_VERSION, ReceiverCodec,
    SenderCodec, SenderMessage, SeriesDef, SnapshotPart, Updates, Value,
};
use kube_relay_receiver::http::HttpApp;
use kube_relay_receiver::metrics::Metrics;
use kube_relay_receiver::{Format, Receiver, ReceiverConfig, Store};
use kube_relay_testkit::{http, wait_until};
use tokio_util::codec::{Decoder, Encoder, Framed};
use tokio_util::sync::CancellationToken;

const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

fn families() -> Vec<FamilyDef> {
    vec![
        FamilyDef {
            id: 0,
            name: "kube_pod_status_phase".into(),
            help: "The pods current phase.".into(),
            kind: MetricKind::Gauge,
        },
        FamilyDef {
            id: 1,
            name: "container_memory_working_set_bytes".into(),
            help: "Current working set of the container in bytes.".into(),
            kind: MetricKind::Gauge,
        },
        FamilyDef {
            id: 2,
            name: "container_cpu_usage_seconds".into(),
            help: "Cumulative cpu time consumed in seconds.".into(),
            kind: MetricKind::Counter,
        },
    ]
}

/// `n` series shaped like the catalogue's: per pod five phase series, a memory gauge and a
/// cpu counter (7 series per pod). Returns definitions and initial values.
fn series(n: u32) -> (Vec<SeriesDef>, Vec<(u32, Value)>) {
    let mut defs = Vec::with_capacity(n as usize);
    let mut vals = Vec::with_capacity(n as usize);
    let mut id = 0;
    let mut pod = 0;
    while id < n {
        let ns = format!("team-{}", pod % 40);
        let name = format!("web-{pod}-7d9f8c6b5-x{:04x}", pod * 7919 % 65_536);
        let uid = format!("5f1c{pod:08x}-1b2c-4d3e-9f00-{pod:012x}");
        let base = [
            ("namespace".to_owned(), ns.clone()),
            ("pod".to_owned(), name.clone()),
            ("uid".to_owned(), uid.clone()),
        ];
        for (i, phase) in PHASES.iter().enumerate() {
            let mut labels = base.to_vec();
            labels.push(("phase".into(), (*phase).into()));
            defs.push(SeriesDef {
                id,
                family: 0,
                labels,
            });
            vals.push((id, Value::Int(i64::from(i == 1))));
            id += 1;
        }
        let container = [
            ("namespace".to_owned(), ns),
            ("pod".to_owned(), name),
            ("container".to_owned(), "app".to_owned()),
            (
                "image".to_owned(),
                "registry.example/shop/web:1.42.0".to_owned(),
            ),
        ];
        defs.push(SeriesDef {
            id,
            family: 1,
            labels: container.to_vec(),
        });
        vals.push((id, Value::Int(180_000_000 + i64::from(pod) * 4096)));
        id += 1;
        defs.push(SeriesDef {
            id,
            family: 2,
            labels: container.to_vec(),
        });
        vals.push((id, Value::Float(1234.5 + f64::from(pod) * 0.25)));
        id += 1;
        pod += 1;
    }
    defs.truncate(n as usize);
    vals.truncate(n as usize);
    (defs, vals)
}

/// The snapshot of `n` series, split so no frame exceeds the default limit.
fn snapshot_parts(n: u32, first_seq: u64) -> Vec<Batch> {
    let (defs, vals) = series(n);
    let chunk = 4000;
    let parts = defs.len().div_ceil(chunk).max(1);
    (0..parts)
        .map(|p| {
            let range = p * chunk..((p + 1) * chunk).min(defs.len());
            Batch {
                observed_at_ms: 0,
                seq: first_seq + p as u64,
                snapshot: Some(SnapshotPart {
                    first: p == 0,
                    last: p == parts - 1,
                }),
                families: if p == 0 { families() } else { Vec::new() },
                series: defs[range.clone()].to_vec(),
                updates: Updates::from_unsorted(vals[range].to_vec()),
                removals: Vec::new(),
            }
        })
        .collect()
}

fn hello(cluster: &str) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        cluster: cluster.into(),
        sender_id: "bench".into(),
        epoch: 1,
        token: None,
        resume_from: None,
        agent: "receiver-bench".into(),
    }
}

/// A store holding `n` series of one cluster.
fn filled_store(n: u32) -> Result<(Store, kube_relay_receiver::store::ConnId)> {
    let store = Store::new(Duration::from_secs(300), 10_000_000);
    let claim = store
        .claim(&hello("bench"), None, CancellationToken::new())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for part in snapshot_parts(n, 1) {
        store
            .apply("bench", claim.conn, &part, 0)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok((store, claim.conn))
}

/// A store holding `clusters` clusters of `per_cluster` series each, as the fan-in bench's
/// receiver holds them (10,000 senders x 100 series).
fn filled_clusters(clusters: u32, per_cluster: u32) -> Result<Store> {
    let store = Store::new(Duration::from_secs(300), 10_000_000);
    for c in 0..clusters {
        let name = format!("cluster-{c:05}");
        let claim = store
            .claim(&hello(&name), None, CancellationToken::new())
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for part in snapshot_parts(per_cluster, 1) {
            store
                .apply(&name, claim.conn, &part, 0)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok(store)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Median wall time of `f` over `runs` runs (after one warm-up), in seconds.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    std::hint::black_box(f());
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Encode time of the whole `/metrics` body (relayed series and self-metrics) of `store`.
fn bench_encode(store: Store, runs: usize) -> Result<(f64, f64, usize)> {
    let app = HttpApp::new(
        store.clone(),
        Metrics::new(store),
        Arc::new(AtomicBool::new(true)),
    );
    let len = app.render_metrics(Format::Text).len();
    let text = time(runs, || app.render_metrics(Format::Text));
    let om = time(runs, || app.render_metrics(Format::OpenMetrics));
    Ok((text, om, len))
}

/// Time of `GET /metrics` (Prometheus text) of `store` as served, without a socket: the
/// response from `respond_off_runtime` and its body's pieces taken as the render writes
/// them (on its own thread, at its lower priority); median time and bytes.
fn bench_streamed(rt: &tokio::runtime::Runtime, store: Store, runs: usize) -> Result<(f64, usize)> {
    use http_body_util::BodyExt;
    let app = HttpApp::new(
        store.clone(),
        Metrics::new(store),
        Arc::new(AtomicBool::new(true)),
    );
    let get = async || -> Result<usize> {
        let req = ::http::Request::get("/metrics").body(())?;
        let mut body = app.respond_off_runtime(&req).await.into_body();
        let mut len = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| anyhow::anyhow!("failed to read the page: {e}"))?;
            len += frame.into_data().map_or(0, |d| d.len());
        }
        Ok(len)
    };
    let len = rt.block_on(get())?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        rt.block_on(get())?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok((median(times), len))
}

/// Updates/s of frame decode + apply on this thread, with 100 k series and batches of
/// `per_batch` updates.
fn bench_ingest(per_batch: u32, batches: u64) -> Result<(f64, f64)> {
    let n = 100_000;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut wire = BytesMut::new();
    let mut enc = SenderCodec::new(DEFAULT_MAX_FRAME_BYTES);
    for b in 0..batches {
        let pairs = (0..per_batch)
            .map(|_| {
                let r = next();
                let id = (r % u64::from(n)) as u32;
                let v = if r & 3 == 0 {
                    Value::Float((r >> 20) as f64 / 1e3)
                } else {
                    Value::Int(((r >> 8) % 1_000_000) as i64)
                };
                (id, v)
            })
            .collect();
        let batch = Batch {
            seq: 26 + b, // after the 25-part snapshot
            updates: Updates::from_unsorted(pairs),
            ..Batch::default()
        };
        enc.encode(SenderMessage::Batch(batch), &mut wire)?;
    }
    let bytes_per_update = wire.len() as f64 / (batches * u64::from(per_batch)) as f64;
    let mut rates = Vec::new();
    for _ in 0..5 {
        let (store, conn) = filled_store(n)?;
        let mut buf = wire.clone();
        let mut dec = ReceiverCodec::new(DEFAULT_MAX_FRAME_BYTES);
        let mut updates = 0usize;
        let t = Instant::now();
        while let Some(msg) = dec.decode(&mut buf)? {
            let SenderMessage::Batch(batch) = msg else {
                bail!("unexpected message")
            };
            updates += batch.updates.len();
            store
                .apply("bench", conn, &batch, 0)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        rates.push(updates as f64 / t.elapsed().as_secs_f64());
    }
    Ok((median(rates), bytes_per_update))
}

/// Latency percentiles of the batches of one phase, and the longest `apply` call itself
/// (the rest of a batch's latency is waiting for a CPU or for the previous batch), in
/// seconds.
#[derive(Debug, Clone, Copy)]
struct Latencies {
    p50: f64,
    p99: f64,
    max: f64,
    count: usize,
    longest_call: f64,
}

impl Latencies {
    fn of(mut xs: Vec<f64>, longest_call: f64) -> Result<Latencies> {
        if xs.is_empty() {
            bail!("no applies measured");
        }
        xs.sort_by(f64::total_cmp);
        let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
        Ok(Latencies {
            p50: at(0.5),
            p99: at(0.99),
            max: xs[xs.len() - 1],
            count: xs.len(),
            longest_call,
        })
    }
}

impl std::fmt::Display for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:>7.3} ms, p99 {:>7.3} ms, max {:>7.3} ms ({} batches; longest apply call {:.3} ms)",
            self.p50 * 1e3,
            self.p99 * 1e3,
            self.max * 1e3,
            self.count,
            self.longest_call * 1e3
        )
    }
}

/// Applies one batch per millisecond to `cluster` for `duration` on a thread of its own:
/// 100 value changes and one series redefined (same labels, as a pod replaced under the
/// same name would be). Returns the batches' latencies (from when each was due to when its
/// apply returned) and the next seq.
fn stream_applies(
    store: &Store,
    conn: kube_relay_receiver::store::ConnId,
    defs: &[SeriesDef],
    mut seq: u64,
    duration: Duration,
) -> Result<(Latencies, u64)> {
    let n = defs.len() as u64;
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d ^ seq;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut latencies = Vec::with_capacity(duration.as_millis() as usize);
    let mut longest_call = 0.0_f64;
    let start = Instant::now();
    let mut tick = start;
    while start.elapsed() < duration {
        let churn = defs[(next() % n) as usize].clone();
        let mut pairs: Vec<(u32, Value)> = (0..100)
            .map(|_| {
                let r = next();
                ((r % n) as u32, Value::Int(((r >> 8) % 1_000_000) as i64))
            })
            .collect();
        pairs.push((churn.id, Value::Int(1)));
        let batch = Batch {
            seq,
            series: vec![churn],
            updates: Updates::from_unsorted(pairs),
            ..Batch::default()
        };
        let call = Instant::now();
        store
            .apply("bench", conn, &batch, 0)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        longest_call = longest_call.max(call.elapsed().as_secs_f64());
        // From when the batch was due, not when the apply started: batches that queued up
        // behind a stalled apply waited too (no coordinated omission).
        latencies.push(tick.elapsed().as_secs_f64());
        seq += 1;
        tick += Duration::from_millis(1);
        if let Some(wait) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok((Latencies::of(latencies, longest_call)?, seq))
}

/// Apply latency of a streaming sender on a receiver holding `n` series in its cluster,
/// idle and while `/metrics` is scraped in a loop; also the scrapes' median time.
async fn ingest_under_scrape(n: u32, phase: Duration) -> Result<(Latencies, Latencies, f64)> {
    let receiver = Receiver::bind(ReceiverConfig {
        max_series_per_cluster: 10_000_000,
        ..ReceiverConfig::loopback()
    })
    .await?;
    let http_addr = receiver.http_addr();
    let store = receiver.store().clone();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(receiver.run(shutdown.clone()));
    let claim = store
        .claim(&hello("bench"), None, CancellationToken::new())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let parts = snapshot_parts(n, 1);
    let seq = parts.len() as u64 + 1;
    for part in parts {
        store
            .apply("bench", claim.conn, &part, 0)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let defs = series(n).0;
    let conn = claim.conn;

    let applier = {
        let (store, defs) = (store.clone(), defs.clone());
        tokio::task::spawn_blocking(move || stream_applies(&store, conn, &defs, seq, phase))
    };
    let (idle, seq) = applier.await??;

    let scraping = CancellationToken::new();
    let scraper = {
        let scraping = scraping.clone();
        tokio::spawn(async move {
            let mut times = Vec::new();
            while !scraping.is_cancelled() {
                let t = Instant::now();
                let r = http::get(http_addr, "/metrics", &[]).await?;
                if r.status != 200 {
                    bail!("GET /metrics answered {}", r.status);
                }
                times.push(t.elapsed().as_secs_f64());
            }
            Ok(times)
        })
    };
    // Let the first scrape start before measuring.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let applier = {
        let (store, defs) = (store.clone(), defs);
        tokio::task::spawn_blocking(move || stream_applies(&store, conn, &defs, seq, phase))
    };
    let (busy, _) = applier.await??;
    scraping.cancel();
    let scrapes = scraper.await??;
    shutdown.cancel();
    let _ = task.await;
    Ok((idle, busy, median(scrapes)))
}

fn free_port() -> Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Median time of `GET /metrics` over HTTP/1.0, and the body size.
async fn scrape_time(addr: SocketAddr, runs: usize) -> Result<(f64, usize)> {
    let mut len = 0;
    let mut times = Vec::new();
    for i in 0..=runs {
        let t = Instant::now();
        let r = http::get(addr, "/metrics", &[]).await?;
        let dt = t.elapsed().as_secs_f64();
        if r.status != 200 {
            bail!("GET /metrics answered {}", r.status);
        }
        len = r.body.len();
        if i > 0 {
            times.push(dt);
        }
    }
    Ok((median(times), len))
}

/// Our receiver over real sockets: 100 k series sent by a protocol client, then scraped.
async fn ours_over_http(n: u32, runs: usize) -> Result<(f64, usize)> {
    let receiver = Receiver::bind(ReceiverConfig {
        max_series_per_cluster: 10_000_000,
        ..ReceiverConfig::loopback()
    })
    .await?;
    let (ingest, http_addr) = (receiver.ingest_addr(), receiver.http_addr());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(receiver.run(shutdown.clone()));
    let stream = tokio::net::TcpStream::connect(ingest).await?;
    let mut conn = Framed::new(stream, SenderCodec::new(DEFAULT_MAX_FRAME_BYTES));
    conn.send(SenderMessage::Hello(hello("bench"))).await?;
    let parts = snapshot_parts(n, 1);
    let last = parts.len() as u64;
    for part in parts {
        conn.send(SenderMessage::Batch(part)).await?;
    }
    let acked = async {
        use futures::StreamExt;
        while let Some(msg) = conn.next().await {
            if let kube_relay_proto::ReceiverMessage::Ack(a) = msg?
                && a.seq >= last
            {
                return Ok(());
            }
        }
        bail!("the receiver closed the connection before acking the snapshot")
    };
    tokio::time::timeout(Duration::from_secs(60), acked)
        .await
        .context("snapshot not acked within 60 s")??;
    let result = scrape_time(http_addr, runs).await;
    shutdown.cancel();
    let _ = task.await;
    result
}

/// Pushgateway holding the same series (pushed as text), scraped the same way.
async fn pushgateway(n: u32, runs: usize) -> Result<(f64, usize)> {
    let binary = ["prometheus-pushgateway", "pushgateway"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
        .context("prometheus-pushgateway is not installed")?;
    let port = free_port()?;
    let dir = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(binary)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!(
            "--persistence.file={}",
            dir.path().join("p").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    wait_until(
        "pushgateway up",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async move {
            Ok(http::get(addr, "/-/ready", &[])
                .await
                .ok()
                .filter(|r| r.status == 200))
        },
    )
    .await?;
    let (defs, vals) = series(n);
    let fams = families();
    let mut body = String::with_capacity(n as usize * 120);
    for fam in &fams {
        let sample = match fam.kind {
            MetricKind::Counter => format!("{}_total", fam.name),
            MetricKind::Gauge => fam.name.clone(),
        };
        body.push_str(&format!(
            "# HELP {sample} {}\n# TYPE {sample} {}\n",
            fam.help,
            if fam.kind == MetricKind::Counter {
                "counter"
            } else {
                "gauge"
            }
        ));
        for (def, (_, v)) in defs.iter().zip(&vals).filter(|(d, _)| d.family == fam.id) {
            body.push_str(&sample);
            body.push_str("{cluster=\"bench\"");
            for (k, val) in &def.labels {
                body.push_str(&format!(",{k}=\"{val}\""));
            }
            body.push_str(&format!("}} {}\n", v.as_f64()));
        }
    }
    let r = http::request(addr, "PUT", "/metrics/job/bench", &[], body.as_bytes()).await?;
    if r.status / 100 != 2 {
        bail!(
            "push answered {}: {}",
            r.status,
            r.text().unwrap_or_default()
        );
    }
    wait_until(
        "pushed series visible",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async move {
            let r = http::get(addr, "/metrics", &[]).await?;
            let lines = r
                .text()?
                .lines()
                .filter(|l| l.contains("cluster=\"bench\""))
                .count();
            Ok((lines >= n as usize).then_some(()))
        },
    )
    .await?;
    let result = scrape_time(addr, runs).await;
    let _ = child.kill().await;
    result
}

/// The seed design's ingest rate as printed by `seed_load.py`.
async fn seed_ingest() -> Result<f64> {
    let dir = std::env::var_os("KUBE_RELAY_BASELINES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/baselines")
        });
    let receiver = dir.join("seed_receiver.py");
    if !receiver.is_file() {
        bail!("{} not found", receiver.display());
    }
    let (port, http_port) = (free_port()?, free_port()?);
    let mut child = tokio::process::Command::new("python3")
        .arg(&receiver)
        .args([port.to_string(), http_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let started = wait_until(
        "seed receiver up",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async move { Ok(tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())) },
    )
    .await;
    if let Err(e) = started {
        let _ = child.kill().await;
        bail!("seed receiver did not start (is `prometheus_client` installed?): {e}");
    }
    let out = tokio::process::Command::new("python3")
        .arg(dir.join("seed_load.py"))
        .args(["1000", "100000", &port.to_string()])
        .output()
        .await?;
    let _ = child.kill().await;
    let text = String::from_utf8_lossy(&out.stdout);
    // "... in 1.234 s = 81,037 updates/s"
    let rate = text
        .rsplit('=')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .map(|s| s.replace(',', ""))
        .and_then(|s| s.parse::<f64>().ok())
        .with_context(|| format!("unexpected seed_load output: {text}"))?;
    Ok(rate)
}

fn main() -> Result<()> {
    // `cargo bench ... -- encode` runs only the sections named (encode, ingest, stall, http,
    // pushgateway, seed); `cargo bench` itself passes `--bench`.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want =
        |section: &str| filters.is_empty() || filters.iter().any(|f| section.contains(f.as_str()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "kube-relay receiver benchmark (medians; {} cores)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let mut encode_100k = 0.0;
    let sizes: &[(u32, usize)] = if want("encode") {
        &[(10_000, 21), (100_000, 9)]
    } else {
        &[]
    };
    for &(n, runs) in sizes {
        let (text, om, len) = bench_encode(filled_store(n)?.0, runs)?;
        println!(
            "encode /metrics, {n:>7} series: text {:>7.2} ms, OpenMetrics {:>7.2} ms ({:.1} MB)",
            text * 1e3,
            om * 1e3,
            len as f64 / 1e6
        );
        if n == 100_000 {
            encode_100k = text;
        }
    }
    if want("encode") {
        let (clusters, per_cluster) = (10_000, 100);
        let store = filled_clusters(clusters, per_cluster)?;
        let (text, om, len) = bench_encode(store.clone(), 5)?;
        println!(
            "encode /metrics, {clusters} clusters x {per_cluster} series (the fan-in bench's \
             store): text {:>7.2} ms, OpenMetrics {:>7.2} ms ({:.1} MB)",
            text * 1e3,
            om * 1e3,
            len as f64 / 1e6
        );
        let (streamed, len) = bench_streamed(&rt, store, 5)?;
        println!(
            "  the same served in pieces (text, no socket): {:>7.2} ms ({:.1} MB)",
            streamed * 1e3,
            len as f64 / 1e6
        );
    }

    let mut rate = f64::NAN;
    if want("ingest") {
        let (r, bytes) = bench_ingest(2000, 2000)?;
        rate = r;
        println!(
            "ingest, decode + apply on one core: {:.2} M updates/s ({bytes:.2} wire bytes/update)",
            rate / 1e6
        );
    }

    if want("stall") {
        for (n, phase) in [
            (100_000, Duration::from_secs(4)),
            (1_000_000, Duration::from_secs(8)),
        ] {
            let (idle, busy, scrape) = rt.block_on(ingest_under_scrape(n, phase))?;
            println!(
                "apply latency, streaming sender, {n:>7} series in its cluster:\n  \
                 no scrape:          {idle}\n  \
                 /metrics in a loop: {busy} (scrape median {:.1} ms)\n  \
                 ratio: p99 while scraping = {:.1} x p99 idle (target: p99 <= 10 ms at 1 M)",
                scrape * 1e3,
                busy.p99 / idle.p99
            );
        }
    }

    let mut ours_http = f64::NAN;
    if want("http") {
        let (t, len) = rt.block_on(ours_over_http(100_000, 9))?;
        ours_http = t;
        println!(
            "GET /metrics over HTTP, 100000 series, kube-relay receiver: {:.2} ms ({:.1} MB)",
            ours_http * 1e3,
            len as f64 / 1e6
        );
    }

    println!("\nbaselines, same run:");
    let pushgateway = if want("pushgateway") {
        rt.block_on(pushgateway(100_000, 9))
    } else {
        Err(anyhow::anyhow!("not selected"))
    };
    match pushgateway {
        Ok((pg, len)) => println!(
            "GET /metrics over HTTP, 100000 series, Pushgateway: {:.2} ms ({:.1} MB)\n  \
             ratio: receiver scrape = {:.3} x Pushgateway (target <= 0.2); \
             receiver encode alone = {:.3} x",
            pg * 1e3,
            len as f64 / 1e6,
            ours_http / pg,
            encode_100k / pg
        ),
        Err(e) => println!("Pushgateway baseline unavailable: {e:#}"),
    }
    let seed = if want("seed") {
        rt.block_on(seed_ingest())
    } else {
        Err(anyhow::anyhow!("not selected"))
    };
    match seed {
        Ok(seed) => println!(
            "seed design ingest: {:.0} updates/s\n  ratio: receiver ingest per core = {:.0} x seed (target >= 100)",
            seed,
            rate / seed
        ),
        Err(e) => println!("seed baseline unavailable: {e:#}"),
    }
    Ok(())
}
