//! Fan-in load generator: N simulated senders against the real `receiver` binary, run as a
//! separate process so its CPU and memory are its own.
//!
//! Each sender is a real protocol client (`kube_relay_proto`'s codec and handshake, with
//! `--tls` also TLS and a token) on one tokio runtime, from its own loopback source address
//! (the receiver limits handshakes per address, and fleets come from many). It sends a
//! snapshot of `--series` series, then every `--batch-every` a batch changing as many of
//! them as makes each change once per `--change-every`, and records each batch's time from
//! send to the receiver's ack. Reported, over a steady `--window`:
//! - ack latency p50 / p99 / max;
//! - the receiver's CPU (cores, utime + stime from /proc over the window), RSS at the end
//!   and the peak sampled every 50 ms, and its bytes per series held: (RSS now − RSS of the
//!   idle receiver before any sender) / series held, which counts each connection's buffers
//!   too (what an operator sees);
//! - series held, counted in the receiver's own `/metrics`;
//! - this generator's own CPU (it shares the machine with the receiver).
//!
//! `--scrape` then fetches `/metrics` back to back, first as Prometheus text, then as
//! OpenMetrics, a window each, while the senders stream: scrape times and the ack latency
//! during each (against the window before, nobody scraping, same run). The scraping client
//! runs on a thread of its own (Prometheus is another process), and then reads a page of the
//! same size from a plain socket for a sixth of the window: the floor of a scrape on this
//! machine, no render. `--pushgateway` pushes
//! the same series to Debian's `prometheus-pushgateway` and times its `/metrics` as the
//! baseline, or says why it could not.
//!
//! `--storm` then cuts every sender's connection at once; each reconnects immediately with a
//! new epoch (so with a full snapshot), retrying refusals with jittered backoff: time until
//! every cluster is equal again (every snapshot acked), the slowest sender's time, the
//! receiver's peak RSS, refusals by reason.
//!
//! Run: `cargo bench -p kube-relay-receiver --bench fanin -- --senders 10000 --series 100`
//! (`-- --help` lists every option). The load average at start and end is printed: on a
//! shared machine, report it beside the figures.

mod client;
mod procfs;
mod workload;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use kube_relay_testkit::{http, pki::Pki, wait_until};
use tokio::sync::{Semaphore, watch};

use client::{Control, Plan, Tally};

/// Fan-in load generator: simulated senders against the real receiver binary.
#[derive(Parser, Debug)]
#[command(name = "fanin")]
struct Args {
    /// Concurrent senders (one cluster each).
    #[arg(long, default_value_t = 1000)]
    senders: usize,
    /// Series per sender.
    #[arg(long, default_value_t = 100)]
    series: u32,
    /// Seconds between two changes of one series.
    #[arg(long, default_value_t = 10.0)]
    change_every: f64,
    /// Seconds between two batches of one sender (each carries series × batch-every /
    /// change-every changes).
    #[arg(long, default_value_t = 1.0)]
    batch_every: f64,
    /// Seconds of each measured window.
    #[arg(long, default_value_t = 60.0)]
    window: f64,
    /// TLS on the sender port (throw-away CA) and a token.
    #[arg(long)]
    tls: bool,
    /// After the steady window, scrape /metrics back to back (text, then OpenMetrics).
    #[arg(long)]
    scrape: bool,
    /// With --scrape: the same series in Pushgateway, scraped as the baseline.
    #[arg(long)]
    pushgateway: bool,
    /// After the steady window (and scrapes), cut every sender at once and time the
    /// reconnect storm.
    #[arg(long)]
    storm: bool,
    /// Loopback source addresses the senders spread over.
    #[arg(long, default_value_t = 100)]
    source_addresses: usize,
    /// Connection attempts under way at once while the senders first connect.
    #[arg(long, default_value_t = 256)]
    ramp: usize,
    /// Worker threads of the generator's runtime (the receiver needs the other core).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// An extra flag for the receiver (repeatable), e.g. `--receiver-arg=--heartbeat-interval=10s`.
    #[arg(long = "receiver-arg", allow_hyphen_values = true)]
    receiver_args: Vec<String>,
    /// A program the receiver runs under, with its arguments split at spaces (a profiler:
    /// `--receiver-wrapper "heaptrack -o /tmp/rx"`); figures are the receiver's own.
    #[arg(long)]
    receiver_wrapper: Option<String>,
    /// Another receiver binary to measure instead of this build's (an older build, for a
    /// before/after comparison on the same load).
    #[arg(long)]
    receiver: Option<std::path::PathBuf>,
    /// An environment variable for the receiver (repeatable), e.g. `MALLOC_ARENA_MAX=1`.
    #[arg(long = "receiver-env", value_parser = env_pair)]
    receiver_env: Vec<(String, String)>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.senders == 0 || args.series == 0 || args.batch_every <= 0.0 || args.window <= 0.0 {
        bail!("--senders, --series, --batch-every and --window must be positive");
    }
    if args.change_every < args.batch_every {
        bail!(
            "--change-every ({}) must be at least --batch-every ({}): a series changes at most \
             once per batch",
            args.change_every,
            args.batch_every
        );
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()?
        .block_on(run(args))
}

fn env_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

/// The process running `exe` among `pid` and its descendants (a wrapper may fork it).
fn find_exe(pid: u32, exe: &std::path::Path) -> Option<u32> {
    if std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe) {
        return Some(pid);
    }
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .find_map(|c| find_exe(c, exe))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Latency percentiles of microsecond samples, in milliseconds.
struct Latency {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    fn of(mut us: Vec<u32>) -> Latency {
        us.sort_unstable();
        let at = |q: f64| {
            us.get(((us.len() as f64 * q) as usize).min(us.len().saturating_sub(1)))
                .map_or(f64::NAN, |v| f64::from(*v) / 1000.0)
        };
        Latency {
            n: us.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: us.last().map_or(f64::NAN, |v| f64::from(*v) / 1000.0),
        }
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} batches)",
            self.p50, self.p99, self.max, self.n
        )
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The receiver binary of this build, as a child process killed when dropped.
struct ChildReceiver {
    child: tokio::process::Child,
    pid: u32,
    ingest: SocketAddr,
    http: SocketAddr,
    _pki: Option<Pki>,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ChildReceiver {
    async fn start(args: &Args, token: Option<&str>) -> Result<ChildReceiver> {
        let dir = tempfile::tempdir()?;
        let ingest: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let exe = args
            .receiver
            .as_deref()
            .unwrap_or(std::path::Path::new(env!("CARGO_BIN_EXE_receiver")))
            .canonicalize()
            .context("no receiver binary there")?;
        let wrapper: Vec<&str> = args
            .receiver_wrapper
            .as_deref()
            .map(|w| w.split_whitespace().collect())
            .unwrap_or_default();
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(rest).arg(&exe);
                cmd
            }
            None => tokio::process::Command::new(&exe),
        };
        cmd.envs(args.receiver_env.iter().cloned());
        cmd.arg("--listen")
            .arg(ingest.to_string())
            .arg("--http-listen")
            .arg(http.to_string())
            .arg("--max-connections")
            .arg((args.senders + 1024).to_string())
            .arg("--max-series-per-cluster")
            .arg(u64::from(args.series).max(500_000).to_string());
        let pki = if args.tls {
            let pki = Pki::generate()?;
            cmd.arg("--tls-cert").arg(&pki.server.cert);
            cmd.arg("--tls-key").arg(&pki.server.key);
            Some(pki)
        } else {
            None
        };
        if let Some(token) = token {
            cmd.env("KUBE_RELAY_TOKEN", token);
        }
        cmd.args(&args.receiver_args);
        let log = dir.path().join("receiver.log");
        let out = std::fs::File::create(&log)?;
        cmd.stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .kill_on_drop(true);
        let child = cmd.spawn().context("failed to start the receiver")?;
        let launched = child.id().context("the receiver exited at once")?;
        wait_until(
            "receiver ready",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async move {
                Ok(http::get(http, "/readyz", &[])
                    .await
                    .ok()
                    .filter(|r| r.status == 200))
            },
        )
        .await?;
        let pid = find_exe(launched, &exe).context("no receiver process under the wrapper")?;
        Ok(ChildReceiver {
            child,
            pid,
            ingest,
            http,
            _pki: pki,
            log,
            _dir: dir,
        })
    }

    /// Relayed series held (sample lines of the senders' clusters in `/metrics`) and the
    /// value of every sample of `self_metric` summed.
    async fn held_series(&self) -> Result<usize> {
        let r = http::get(self.http, "/metrics", &[]).await?;
        if r.status != 200 {
            bail!("GET /metrics answered {}", r.status);
        }
        Ok(r.text()?
            .lines()
            .filter(|l| {
                !l.starts_with('#') && !l.starts_with("relay_") && l.contains("{cluster=\"fanin-")
            })
            .count())
    }

    /// `(labels, value)` of every sample of `name` in the receiver's self-metrics.
    async fn self_metric(&self, name: &str) -> Result<Vec<(String, f64)>> {
        let r = http::get(self.http, "/metrics", &[]).await?;
        Ok(r.text()?
            .lines()
            .filter(|l| l.starts_with(name) && !l.contains("cluster=\"fanin-"))
            .filter_map(|l| {
                let (head, value) = l.rsplit_once(' ')?;
                Some((head[name.len()..].to_owned(), value.parse().ok()?))
            })
            .collect())
    }

    /// SIGTERM to the receiver (so a wrapping profiler writes its data), SIGKILL to whatever
    /// still runs after the shutdown timeout and a margin.
    async fn stop(mut self) -> Result<()> {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
        Ok(())
    }
}

/// Times `GET /metrics` back to back for `window`; the scrape times in seconds and the last
/// body's size. An OpenMetrics page must end with `# EOF` (a page streamed in pieces that
/// stopped early would not).
async fn scrape_loop(
    addr: SocketAddr,
    accept: &str,
    window: Duration,
) -> Result<(Vec<f64>, usize)> {
    let headers: &[(&str, &str)] = &[("Accept", accept)];
    let start = Instant::now();
    let mut times = Vec::new();
    let mut len = 0;
    while start.elapsed() < window {
        let t = Instant::now();
        let r = http::get(addr, "/metrics", headers).await?;
        times.push(t.elapsed().as_secs_f64());
        if r.status != 200 {
            bail!("GET /metrics answered {}", r.status);
        }
        if accept.starts_with("application/openmetrics-text") && !r.body.ends_with(b"# EOF\n") {
            bail!(
                "an OpenMetrics page of {} bytes without its # EOF",
                r.body.len()
            );
        }
        len = r.body.len();
    }
    Ok((times, len))
}

/// [`scrape_loop`] on a thread and runtime of its own, as Prometheus is a process of its
/// own: reading a 167 MB page on the generator's runtime (one worker) held up the simulated
/// senders' acks there, and the bench counted it as the receiver's ack latency.
async fn scrape_apart(
    addr: SocketAddr,
    accept: &'static str,
    window: Duration,
) -> Result<(Vec<f64>, usize)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("scraper".into())
        .spawn(move || {
            let scraped = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(scrape_loop(addr, accept, window)));
            let _ = tx.send(scraped);
        })?;
    rx.await
        .context("the scraper thread ended without a result")?
}

/// A plain socket answering every connection with `len` bytes after an HTTP/1.0 status
/// line, from a thread of its own: a scrape of that size with the same client and no
/// render, the floor of a scrape on this machine (loopback copies, the client's reading).
fn static_page_server(len: usize) -> Result<SocketAddr> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut page = b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\n".to_vec();
    page.extend(std::iter::repeat_n(b'x', len));
    std::thread::Builder::new()
        .name("static-page".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(&page);
            }
        })?;
    Ok(addr)
}

fn quantile(mut xs: Vec<f64>, q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() as f64 * q) as usize).min(xs.len() - 1)]
}

async fn run(args: Args) -> Result<()> {
    println!("fan-in: {args:?}");
    println!("load average at start: {}", load_average());
    // Each sender holds a socket here and one in the receiver, which inherits this limit.
    let needed = args.senders as u64 + 1024;
    let (limit, enough) = procfs::raise_open_files(needed);
    if enough {
        println!("open-files limit: {limit} (needed {needed}; the receiver inherits it)");
    } else {
        bail!(
            "{} senders need about {needed} open files but the limit is {limit} and cannot be \
             raised (hard limit; run as root or raise `ulimit -Hn`)",
            args.senders
        );
    }
    let token = args.tls.then(|| {
        use rand::Rng;
        let bytes: [u8; 18] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    });
    let receiver = ChildReceiver::start(&args, token.as_deref()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = procfs::status_bytes(receiver.pid, "VmRSS")?;
    println!(
        "receiver pid {}, idle RSS {:.1} MiB, log {}",
        receiver.pid,
        mib(idle_rss),
        receiver.log.display()
    );

    let tls = match &receiver._pki {
        Some(pki) => Some((
            tokio_rustls::TlsConnector::from(kube_relay_testkit::tls::client_config(
                &pki.ca, None,
            )?),
            kube_relay_testkit::tls::loopback_name(),
        )),
        None => None,
    };
    let changes_per_batch =
        ((f64::from(args.series) * args.batch_every / args.change_every).round() as u32).max(1);
    let sources = (0..args.source_addresses.max(1))
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 1 + (i / 250) as u8, (i % 250) as u8, 1)))
        .collect();
    let plan = Arc::new(Plan {
        ingest: receiver.ingest,
        tls,
        token,
        series: args.series,
        changes_per_batch,
        batch_every: Duration::from_secs_f64(args.batch_every),
        sources,
        ramp: Semaphore::new(args.ramp.max(1)),
    });
    let tally = Arc::new(Tally::default());
    let (control, watcher) = watch::channel(Control {
        generation: 0,
        stop: false,
    });
    let rss = procfs::RssSampler::start(receiver.pid);
    let me = std::process::id();

    let mut clients = Vec::with_capacity(args.senders);
    for id in 0..args.senders {
        clients.push(tokio::spawn(client::run(
            plan.clone(),
            tally.clone(),
            id,
            watcher.clone(),
        )));
    }
    let senders = args.senders as u64;
    let fill = client::wait_snapshots(&tally, senders, Duration::from_secs(900)).await?;
    println!(
        "{} senders connected and their snapshots acked in {:.1} s ({} at once at most); \
         receiver peak RSS {:.1} MiB",
        args.senders,
        fill.as_secs_f64(),
        args.ramp,
        mib(rss.take_peak())
    );
    // One batch period and a little more so every sender streams before the window opens.
    tokio::time::sleep(Duration::from_secs_f64(args.batch_every * 2.0 + 2.0)).await;
    let window = Duration::from_secs_f64(args.window);

    // Steady window.
    let _ = tally.take_latencies();
    let cpu = procfs::CpuWindow::start(receiver.pid)?;
    let own_cpu = procfs::CpuWindow::start(me)?;
    let sent0 = tally.batches_sent.load(Ordering::Relaxed);
    tokio::time::sleep(window).await;
    let steady = Latency::of(tally.take_latencies());
    let cores = cpu.cores()?;
    let own_cores = own_cpu.cores()?;
    let batches = tally.batches_sent.load(Ordering::Relaxed) - sent0;
    let end_rss = procfs::status_bytes(receiver.pid, "VmRSS")?;
    let peak_rss = rss.take_peak();
    let load_steady = load_average();
    let held = receiver.held_series().await?;
    let expected = args.senders * args.series as usize;
    println!();
    println!(
        "steady, {:.0} s: {} senders x {} series, {changes_per_batch} changes per batch every {} s ({:.0} batches/s, {:.0} changes/s){}",
        args.window,
        args.senders,
        args.series,
        args.batch_every,
        batches as f64 / args.window,
        batches as f64 * f64::from(changes_per_batch) / args.window,
        if args.tls {
            ", TLS + token"
        } else {
            ", plain TCP"
        }
    );
    println!("  ack latency: {steady}");
    println!(
        "  receiver: {cores:.3} cores, RSS {:.1} MiB at the end, {:.1} MiB peak",
        mib(end_rss),
        mib(peak_rss)
    );
    println!(
        "  series held: {held} of {expected}; {:.0} bytes of receiver memory per series held \
         ((RSS - idle {:.1} MiB) / held)",
        (end_rss.saturating_sub(idle_rss)) as f64 / held.max(1) as f64,
        mib(idle_rss)
    );
    println!("  generator: {own_cores:.3} cores; load average {load_steady}");
    if held != expected {
        println!("  WARNING: the receiver holds {held} series, not {expected}");
    }
    // The README's Measured rows: `ROW` lines, printed again together at the end.
    let mut rows = vec![format!(
        "| fan-in: {} senders x {} series, a change per series every {} s, {} | ack p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms; receiver {:.3} cores, RSS {:.0} MiB, {:.0} B per series \
         held (load {load_steady}) |",
        args.senders,
        args.series,
        args.change_every,
        if args.tls { "TLS + token" } else { "plain TCP" },
        steady.p50,
        steady.p99,
        steady.max,
        cores,
        mib(end_rss),
        (end_rss.saturating_sub(idle_rss)) as f64 / held.max(1) as f64,
    )];

    let mut scrape_row = Vec::new();
    let mut page_len = 0;
    if args.scrape {
        for (name, accept) in [
            ("text", "text/plain;version=0.0.4"),
            ("OpenMetrics", "application/openmetrics-text;version=1.0.0"),
        ] {
            let _ = tally.take_latencies();
            let cpu = procfs::CpuWindow::start(receiver.pid)?;
            let (times, len) = scrape_apart(receiver.http, accept, window).await?;
            page_len = len;
            let during = Latency::of(tally.take_latencies());
            println!();
            println!(
                "scrapes back to back, {name}, {:.0} s: {} scrapes of {:.1} MB, p50 {:.0} ms, max {:.0} ms",
                args.window,
                times.len(),
                len as f64 / 1e6,
                quantile(times.clone(), 0.5) * 1000.0,
                quantile(times.clone(), 1.0) * 1000.0
            );
            println!(
                "  ack latency meanwhile: {during} (nobody scraping: p99 {:.1} ms)",
                steady.p99
            );
            let peak = rss.take_peak();
            println!(
                "  receiver: {:.3} cores, peak RSS {:.1} MiB; load average {}",
                cpu.cores()?,
                mib(peak),
                load_average()
            );
            scrape_row.push(format!(
                "{name} {:.0} ms (max {:.0}, {:.0} MB), ack p99 meanwhile {:.1} ms, peak RSS {:.0} MiB",
                quantile(times.clone(), 0.5) * 1000.0,
                quantile(times, 1.0) * 1000.0,
                len as f64 / 1e6,
                during.p99,
                mib(peak)
            ));
        }
        // The same client reading a page of the same size from a plain socket, the senders
        // still streaming: what a scrape costs on this machine without any render.
        let floor_window = window.div_f64(6.0).max(Duration::from_secs(5));
        let (times, len) = scrape_apart(
            static_page_server(page_len)?,
            "text/plain;version=0.0.4",
            floor_window,
        )
        .await?;
        let floor = quantile(times.clone(), 0.5) * 1000.0;
        println!();
        println!(
            "floor: the same client reading {:.1} MB from a plain socket (no render), {:.0} s: \
             {} reads, p50 {floor:.0} ms, max {:.0} ms; load average {}",
            len as f64 / 1e6,
            floor_window.as_secs_f64(),
            times.len(),
            quantile(times, 1.0) * 1000.0,
            load_average()
        );
        scrape_row.push(format!(
            "floor, the same client reading as many bytes from a plain socket {floor:.0} ms"
        ));
    }

    if args.storm {
        let _ = rss.take_peak();
        let _ = tally.take_latencies();
        let failures0 = tally.connection_failures.load(Ordering::Relaxed);
        let cpu = procfs::CpuWindow::start(receiver.pid)?;
        tally.cut(1);
        let _ = control.send(Control {
            generation: 1,
            stop: false,
        });
        let start = Instant::now();
        let all = client::wait_snapshots(&tally, senders * 2, Duration::from_secs(900)).await;
        let elapsed = start.elapsed();
        let cores = cpu.cores()?;
        let times = tally.equal_after(1);
        let slowest = times.iter().max().copied().unwrap_or_default();
        let median = quantile(times.iter().map(Duration::as_secs_f64).collect(), 0.5);
        println!();
        match &all {
            Ok(_) => println!(
                "reconnect storm: all {} senders cut at once; every cluster equal again after {:.2} s",
                args.senders,
                elapsed.as_secs_f64()
            ),
            Err(e) => println!("reconnect storm: NOT every cluster equal again: {e:#}"),
        }
        println!(
            "  per sender, cut to snapshot acked: median {:.2} s, slowest {:.2} s ({} senders)",
            median,
            slowest.as_secs_f64(),
            times.len()
        );
        let refused = tally.refusals();
        println!(
            "  refusals seen by senders: {} ({}); connections failed or broken: {}",
            refused.iter().map(|(_, n)| n).sum::<u64>(),
            refused
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            tally.connection_failures.load(Ordering::Relaxed) - failures0
        );
        let peak = rss.take_peak();
        println!(
            "  receiver: peak RSS {:.1} MiB, {cores:.3} cores over the storm; load average {}",
            mib(peak),
            load_average()
        );
        rows.push(format!(
            "| reconnect storm: {} senders x {} series cut at once, each reconnecting with a \
             snapshot{} | {}; per sender median {median:.2} s, slowest {:.2} s; receiver peak \
             RSS {:.0} MiB; {} refusals ({}) (load {}) |",
            args.senders,
            args.series,
            if args.tls { ", TLS + token" } else { "" },
            match &all {
                Ok(_) => format!(
                    "every cluster equal again after {:.2} s",
                    elapsed.as_secs_f64()
                ),
                Err(_) => "NOT every cluster equal again".to_owned(),
            },
            slowest.as_secs_f64(),
            mib(peak),
            refused.iter().map(|(_, n)| n).sum::<u64>(),
            refused
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            load_average()
        ));
        if let Some(e) = tally.last_failure() {
            println!("  last connection failure: {e}");
        }
        let rejected = receiver
            .self_metric("relay_receiver_handshakes_rejected_total")
            .await?;
        println!("  receiver's count of refused handshakes: {rejected:?}");
        // Let the reconnected senders stream, then measure them as after the first fill.
        tokio::time::sleep(Duration::from_secs_f64(args.batch_every * 2.0 + 2.0)).await;
        let _ = tally.take_latencies();
        tokio::time::sleep(window.min(Duration::from_secs(30))).await;
        println!(
            "  ack latency after the storm: {}",
            Latency::of(tally.take_latencies())
        );
        let held = receiver.held_series().await?;
        println!("  series held after the storm: {held} of {expected}");
    }

    println!();
    println!(
        "receiver VmHWM (peak since start): {:.1} MiB",
        mib(procfs::status_bytes(receiver.pid, "VmHWM")?)
    );
    let _ = control.send(Control {
        generation: u32::MAX,
        stop: true,
    });
    for c in clients {
        let _ = c.await;
    }
    receiver.stop().await?;

    if args.scrape {
        let baseline = if args.pushgateway {
            println!();
            match pushgateway(&args, window).await {
                Ok((line, summary)) => {
                    println!("{line}");
                    summary
                }
                Err(e) => {
                    println!("Pushgateway baseline: did not cope: {e:#}");
                    format!("Pushgateway did not cope: {e:#}")
                }
            }
        } else {
            "—".to_owned()
        };
        rows.push(format!(
            "| `GET /metrics` of {expected} series from {} senders{}, back to back while they \
             stream | {} (nobody scraping: ack p99 {:.1} ms) | {baseline} |",
            args.senders,
            if args.tls { " (TLS)" } else { "" },
            scrape_row.join("; "),
            steady.p99
        ));
    }
    println!("load average at end: {}", load_average());
    println!();
    for row in rows {
        println!("ROW {row}");
    }
    Ok(())
}

/// Pushgateway holding the same series (each sender's pushed as its own group), scraped as
/// Prometheus text back to back for `window` (at least three scrapes).
async fn pushgateway(args: &Args, window: Duration) -> Result<(String, String)> {
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
        .context(
            "prometheus-pushgateway is not installed (apt-get install prometheus-pushgateway)",
        )?;
    let port = free_port()?;
    let mut child = tokio::process::Command::new(binary)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("pushgateway exited at once")?;
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
    let start = Instant::now();
    for id in 0..args.senders {
        let cluster = format!("fanin-{id:05}");
        let body = workload::as_text(id, args.series, &cluster);
        let r = http::request(
            addr,
            "PUT",
            &format!("/metrics/job/{cluster}"),
            &[],
            body.as_bytes(),
        )
        .await?;
        if r.status / 100 != 2 {
            bail!(
                "push of {cluster} answered {}: {}",
                r.status,
                r.text().unwrap_or_default()
            );
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!(
                "pushing took over 600 s ({id} of {} senders pushed)",
                args.senders
            );
        }
    }
    let pushed = start.elapsed();
    let (times, len) = scrape_loop(addr, "text/plain;version=0.0.4", window).await?;
    let rss = procfs::status_bytes(pid, "VmRSS")?;
    let _ = child.kill().await;
    let p50 = quantile(times.clone(), 0.5) * 1000.0;
    Ok((
        format!(
            "Pushgateway baseline (same series, same run): pushed in {:.1} s; {} scrapes of \
             {:.1} MB, p50 {p50:.0} ms, max {:.0} ms; RSS {:.1} MiB",
            pushed.as_secs_f64(),
            times.len(),
            len as f64 / 1e6,
            quantile(times, 1.0) * 1000.0,
            mib(rss)
        ),
        format!(
            "Pushgateway, same series: scrape {p50:.0} ms, RSS {:.0} MiB",
            mib(rss)
        ),
    ))
}
