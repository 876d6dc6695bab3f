//! Remote write against vmagent: the same series, the same VictoriaMetrics, one run.
//!
//! ```text
//! cargo build --release -p kube-relay-receiver --bins
//! cargo bench -p kube-relay-testkit --bench remote_write        # 100,000 series, 20 s a phase
//! RW_SERIES=20000 RW_SECONDS=30 cargo bench -p kube-relay-testkit --bench remote_write
//! ```
//!
//! A load generator speaking the relay protocol (standing in for a sender) defines
//! `RW_SERIES` gauge series with kube-state-metrics-sized labels and changes every one of
//! them once a second, plus a probe series changed every 500 ms. Three phases, each against
//! a fresh release `receiver` process and the same VictoriaMetrics (Debian's 1.79):
//! - **kube-relay**: the receiver remote-writes every change itself (`--remote-write-url`);
//! - **vmagent**: the receiver without remote write; Debian's vmagent scrapes its
//!   `/metrics` every second (as the issue says) and remote-writes what it scrapes;
//! - **floor**: the probe written straight to VictoriaMetrics, to show its own delay
//!   before a sample is queryable.
//!
//! Figures, per phase over the measured window: samples delivered per second and per core
//! of the forwarding process (CPU from `/proc/<pid>/stat`: for kube-relay the receiver,
//! ingest included; for vmagent vmagent alone, and also with the receiver serving it),
//! compressed bytes per sample on the wire (each forwarder's own counter of request bytes
//! accepted), and freshness: from the probe change leaving the generator to the new value
//! answering an instant query on VictoriaMetrics (polled every 10 ms), p50 and p99.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use futures::{SinkExt, StreamExt};
use kube_relay_proto::{
    Batch, DEFAULT_MAX_FRAME_BYTES, FamilyDef, Hello, MetricKind, PROTOCOL_VERSION,
    ReceiverMessage, SenderCodec, SenderMessage, SeriesDef, SnapshotPart, Updates, Value,
};
use kube_relay_testkit::http::{self, encode_component};
use kube_relay_testkit::process::ChildProcess;
use kube_relay_testkit::prometheus::{free_loopback_addr, which};
use kube_relay_testkit::{VictoriaMetrics, exposition, wait_until};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

const PROBE: u32 = u32::MAX - 1;
const PROBE_EVERY: Duration = Duration::from_millis(500);
const WARMUP: Duration = Duration::from_secs(8);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// User plus system CPU seconds of a process (all its threads).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from after the command name (field 3 is [0]).
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

async fn counter(addr: SocketAddr, name: &str) -> Result<f64> {
    let r = http::get(addr, "/metrics", &[]).await?;
    let samples = exposition::parse(r.text()?);
    Ok(exposition::select(&samples, name, &[])
        .map(|s| s.value)
        .sum())
}

/// The relay protocol's side of a sender: a snapshot of `n` series, then every series
/// changed once a second and the probe every [`PROBE_EVERY`], stamped with the time sent.
struct Generator {
    probes: Arc<Mutex<Vec<(f64, Instant)>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
}

fn series_def(id: u32, family: u32) -> SeriesDef {
    SeriesDef {
        id,
        family,
        labels: vec![
            ("namespace".into(), format!("team-{}", id % 50)),
            ("pod".into(), format!("web-{id:07}-7d4b9c8f6d-x2k9p")),
            (
                "uid".into(),
                format!("3f6c2a1e-{id:08x}-4b1d-9e27-5a8c0d2f4e61"),
            ),
            ("container".into(), "app".into()),
        ],
    }
}

impl Generator {
    async fn start(ingest: SocketAddr, cluster: &str, n: u32) -> Result<Generator> {
        let stream = TcpStream::connect(ingest).await?;
        stream.set_nodelay(true)?;
        let mut conn = Framed::new(stream, SenderCodec::new(DEFAULT_MAX_FRAME_BYTES));
        conn.send(SenderMessage::Hello(Hello {
            version: PROTOCOL_VERSION,
            cluster: cluster.into(),
            sender_id: "bench".into(),
            epoch: 1,
            token: None,
            resume_from: None,
            agent: "remote-write-bench/0".into(),
        }))
        .await?;
        match conn.next().await {
            Some(Ok(ReceiverMessage::Welcome(_))) => {}
            other => bail!("expected a Welcome, got {other:?}"),
        }
        let families = vec![
            FamilyDef {
                id: 0,
                name: "bench_value".into(),
                help: "A value changed every second.".into(),
                kind: MetricKind::Gauge,
            },
            FamilyDef {
                id: 1,
                name: "bench_probe".into(),
                help: "Changed every 500 ms to measure freshness.".into(),
                kind: MetricKind::Gauge,
            },
        ];
        let mut seq = 0;
        let ids: Vec<u32> = (0..n).collect();
        let chunks: Vec<&[u32]> = ids.chunks(4000).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            seq += 1;
            let last = i + 1 == chunks.len();
            let mut series: Vec<SeriesDef> = chunk.iter().map(|&id| series_def(id, 0)).collect();
            let mut updates: Vec<(u32, Value)> =
                chunk.iter().map(|&id| (id, Value::Int(0))).collect();
            if last {
                series.push(SeriesDef {
                    id: PROBE,
                    family: 1,
                    labels: vec![],
                });
                updates.push((PROBE, Value::Int(0)));
            }
            conn.send(SenderMessage::Batch(Batch {
                seq,
                snapshot: Some(SnapshotPart {
                    first: i == 0,
                    last,
                }),
                families: if i == 0 { families.clone() } else { vec![] },
                series,
                updates: Updates::from_unsorted(updates),
                removals: vec![],
                observed_at_ms: now_ms(),
            }))
            .await?;
        }
        let (mut sink, mut acks) = conn.split();
        // Acks and heartbeats are read and dropped, so the receiver is never blocked.
        tokio::spawn(async move { while let Some(Ok(_)) = acks.next().await {} });
        let stop = CancellationToken::new();
        let probes = Arc::new(Mutex::new(Vec::new()));
        let (done, probe_log) = (stop.clone(), probes.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut probe = tokio::time::interval(PROBE_EVERY);
            let mut round: i64 = 0;
            loop {
                tokio::select! {
                    () = done.cancelled() => return Ok(()),
                    _ = tick.tick() => {
                        round += 1;
                        for chunk in ids.chunks(20_000) {
                            seq += 1;
                            let updates = chunk.iter().map(|&id| (id, Value::Int(round + i64::from(id % 7)))).collect();
                            sink.send(SenderMessage::Batch(Batch {
                                seq,
                                updates: Updates::from_unsorted(updates),
                                observed_at_ms: now_ms(),
                                ..Batch::default()
                            })).await?;
                        }
                    }
                    _ = probe.tick() => {
                        seq += 1;
                        let value = (seq % 1_000_000) as f64;
                        sink.send(SenderMessage::Batch(Batch {
                            seq,
                            updates: Updates::from_unsorted(vec![(PROBE, Value::from(value))]),
                            observed_at_ms: now_ms(),
                            ..Batch::default()
                        })).await?;
                        if let Ok(mut p) = probe_log.lock() {
                            p.push((value, Instant::now()));
                        }
                    }
                }
            }
        });
        Ok(Generator { probes, stop, task })
    }

    fn probes_since(&self, from: Instant) -> Vec<(f64, Instant)> {
        self.probes
            .lock()
            .map(|p| p.iter().copied().filter(|(_, at)| *at >= from).collect())
            .unwrap_or_default()
    }

    async fn stop(self) -> Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

/// Polls the probe's value on VictoriaMetrics every 10 ms; returns each value's first sight.
struct Watcher {
    seen: Arc<Mutex<Vec<(f64, Instant)>>>,
    stop: CancellationToken,
}

impl Watcher {
    fn start(vm: SocketAddr, query: &str) -> Watcher {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (log, done) = (seen.clone(), stop.clone());
        let path = format!("/api/v1/query?query={}", encode_component(query));
        tokio::spawn(async move {
            let mut last = f64::NAN;
            while !done.is_cancelled() {
                if let Ok(r) = http::get(vm, &path, &[]).await {
                    let value = serde_json::from_slice::<serde_json::Value>(&r.body)
                        .ok()
                        .and_then(|v| {
                            v["data"]["result"][0]["value"][1]
                                .as_str()
                                .map(str::to_owned)
                        })
                        .and_then(|v| v.parse::<f64>().ok());
                    if let Some(v) = value.filter(|v| *v != last) {
                        last = v;
                        if let Ok(mut s) = log.lock() {
                            s.push((v, Instant::now()));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Watcher { seen, stop }
    }

    /// Delays from each probe change to its first sight (changes never seen are left out
    /// and counted).
    fn delays(&self, probes: &[(f64, Instant)]) -> (Vec<Duration>, usize) {
        self.stop.cancel();
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        let mut delays = Vec::new();
        let mut unseen = 0;
        for (value, at) in probes {
            match seen.iter().find(|(v, _)| v == value) {
                Some((_, when)) => delays.push(when.saturating_duration_since(*at)),
                None => unseen += 1,
            }
        }
        delays.sort();
        (delays, unseen)
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

struct Figures {
    samples_per_second: f64,
    per_core: f64,
    per_core_with_receiver: f64,
    bytes_per_sample: f64,
    p50: Duration,
    p99: Duration,
    unseen: usize,
    probes: usize,
    /// kube-relay's shards at the end of the window (its queue's parallelism).
    shards: f64,
}

fn release_receiver() -> Result<PathBuf> {
    let path = kube_relay_testkit::process::bin_path("receiver")
        .context("build it first: cargo build --release -p kube-relay-receiver --bins")?;
    Ok(path)
}

async fn phase(vm: &VictoriaMetrics, relay: bool, n: u32, window: Duration) -> Result<Figures> {
    let state = tempfile::tempdir()?;
    let (ingest, http_addr) = (free_loopback_addr()?, free_loopback_addr()?);
    let mut args = vec![
        "--listen".to_owned(),
        ingest.to_string(),
        "--http-listen".to_owned(),
        http_addr.to_string(),
        "--max-series-per-cluster".to_owned(),
        (n + 10).to_string(),
    ];
    if relay {
        args.extend([
            "--state-dir".to_owned(),
            state.path().display().to_string(),
            "--remote-write-url".to_owned(),
            vm.write_url(),
        ]);
    }
    let receiver = ChildProcess::spawn_program("receiver", release_receiver()?, &args, &[])?;
    wait_until(
        "receiver up",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { Ok(http::get(http_addr, "/healthz", &[]).await.ok().map(|_| ())) },
    )
    .await?;
    let vmagent_dir = tempfile::tempdir()?;
    let vmagent_addr = free_loopback_addr()?;
    let vmagent = if relay {
        None
    } else {
        let binary = which("vmagent")
            .context("vmagent is not on PATH: apt-get install -y victoria-metrics")?;
        let config = vmagent_dir.path().join("scrape.yml");
        std::fs::write(
            &config,
            format!(
                "scrape_configs:\n  - job_name: kube-relay\n    scrape_interval: 1s\n    \
                 honor_labels: true\n    static_configs:\n      - targets: [\"{http_addr}\"]\n"
            ),
        )?;
        Some(ChildProcess::spawn_program(
            "vmagent",
            binary,
            [
                format!("-httpListenAddr={vmagent_addr}"),
                format!("-promscrape.config={}", config.display()),
                format!("-remoteWrite.url={}", vm.write_url()),
                format!(
                    "-remoteWrite.tmpDataPath={}",
                    vmagent_dir.path().join("queue").display()
                ),
                "-loggerLevel=ERROR".to_owned(),
            ],
            &[],
        )?)
    };
    // Each phase its own cluster, so a phase's probe query never finds the previous
    // phase's series (still within VictoriaMetrics' lookback).
    let cluster = if relay {
        "bench-relay"
    } else {
        "bench-vmagent"
    };
    let generator = Generator::start(ingest, cluster, n).await?;
    tokio::time::sleep(WARMUP).await;

    let receiver_pid = receiver.pid().context("receiver pid")?;
    let forwarder_pid = match &vmagent {
        Some(v) => v.pid().context("vmagent pid")?,
        None => receiver_pid,
    };
    let (sent_name, bytes_name, at) = if relay {
        (
            "relay_remote_write_samples_sent_total",
            "relay_remote_write_bytes_sent_total",
            http_addr,
        )
    } else {
        (
            "vmagent_remotewrite_block_size_rows_sum",
            "vmagent_remotewrite_block_size_bytes_sum",
            vmagent_addr,
        )
    };
    let watcher = Watcher::start(vm.addr(), &format!(r#"bench_probe{{cluster="{cluster}"}}"#));
    let started = Instant::now();
    let (cpu0, rcpu0) = (cpu_seconds(forwarder_pid)?, cpu_seconds(receiver_pid)?);
    let (sent0, bytes0) = (
        counter(at, sent_name).await?,
        counter(at, bytes_name).await?,
    );
    tokio::time::sleep(window).await;
    let (cpu1, rcpu1) = (cpu_seconds(forwarder_pid)?, cpu_seconds(receiver_pid)?);
    let (sent1, bytes1) = (
        counter(at, sent_name).await?,
        counter(at, bytes_name).await?,
    );
    let elapsed = started.elapsed().as_secs_f64();
    let shards = if relay {
        counter(http_addr, "relay_remote_write_shards").await?
    } else {
        0.0
    };
    // Let the last probes arrive before judging which were seen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let probes = generator.probes_since(started + Duration::from_millis(1));
    let probes: Vec<(f64, Instant)> = probes
        .into_iter()
        .filter(|(_, at)| at.duration_since(started) < window)
        .collect();
    let (delays, unseen) = watcher.delays(&probes);
    generator.stop().await?;
    drop(vmagent);
    drop(receiver);
    let samples = sent1 - sent0;
    ensure!(samples > 0.0, "nothing was delivered ({sent_name})");
    let cpu = cpu1 - cpu0;
    let with_receiver = if relay { cpu } else { cpu + (rcpu1 - rcpu0) };
    Ok(Figures {
        samples_per_second: samples / elapsed,
        per_core: samples / cpu.max(0.01),
        per_core_with_receiver: samples / with_receiver.max(0.01),
        bytes_per_sample: (bytes1 - bytes0) / samples,
        p50: quantile(&delays, 0.5),
        p99: quantile(&delays, 0.99),
        unseen,
        probes: probes.len(),
        shards,
    })
}

/// VictoriaMetrics' own floor: a probe written straight to it, then polled.
async fn floor(vm: &VictoriaMetrics, rounds: usize) -> Result<(Duration, Duration)> {
    use kube_relay_receiver::remote_write::wire;
    let watcher = Watcher::start(vm.addr(), r#"bench_floor{cluster="floor"}"#);
    let labels = wire::encode_labels("bench_floor", "floor", &[]);
    let mut probes = Vec::new();
    for i in 0..rounds {
        let value = (i + 1) as f64;
        let mut body = Vec::new();
        wire::append_series(
            &mut body,
            &labels,
            [(now_ms() as i64, value)].iter().copied(),
        );
        let compressed = wire::compress(&body)?;
        let at = Instant::now();
        post(vm.addr(), "/api/v1/write", &compressed).await?;
        probes.push((value, at));
        tokio::time::sleep(PROBE_EVERY).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (delays, _) = watcher.delays(&probes);
    Ok((quantile(&delays, 0.5), quantile(&delays, 0.99)))
}

async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Encoding: snappy\r\n\
         Content-Type: application/x-protobuf\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    ensure!(
        answer.starts_with(b"HTTP/1.1 204") || answer.starts_with(b"HTTP/1.0 204"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let n = env_or("RW_SERIES", 100_000) as u32;
    let window = Duration::from_secs(env_or("RW_SECONDS", 20));
    let vm = VictoriaMetrics::start_with(&["-search.disableCache"]).await?;
    println!(
        "remote write bench: {n} series changed every second, {} s per phase",
        window.as_secs()
    );
    let relay = phase(&vm, true, n, window).await?;
    let agent = phase(&vm, false, n, window).await?;
    let (floor50, floor99) = floor(&vm, 40).await?;
    println!(
        "FIGURE kube-relay's shards at the end of its window: {}",
        relay.shards
    );
    for (name, f) in [("kube-relay", &relay), ("vmagent", &agent)] {
        println!(
            "FIGURE {name:>10}: {:>9.0} samples/s delivered, {:>9.0} samples/s per core (with the receiver: {:>9.0}), \
             {:.2} bytes/sample, freshness p50 {:.0} ms p99 {:.0} ms ({} of {} probes never seen)",
            f.samples_per_second,
            f.per_core,
            f.per_core_with_receiver,
            f.bytes_per_sample,
            ms(f.p50),
            ms(f.p99),
            f.unseen,
            f.probes
        );
    }
    println!(
        "FIGURE      floor: a sample POSTed straight to VictoriaMetrics is queryable after p50 {:.0} ms, p99 {:.0} ms",
        ms(floor50),
        ms(floor99)
    );
    println!(
        "FIGURE ratios: samples/s per core {:.1}x vmagent's (kube-relay's receiver, ingest included, against vmagent alone; \
         {:.1}x against vmagent plus the receiver it scrapes), bytes/sample {:.2}x vmagent's",
        relay.per_core / agent.per_core,
        relay.per_core / agent.per_core_with_receiver,
        relay.bytes_per_sample / agent.bytes_per_sample
    );
    Ok(())
}
