//! Test support for the receiver's integration tests: a running receiver on loopback ports
//! (in this process, or the real binary as a child process), a test sender that speaks the
//! real protocol through `kube_relay_proto`'s codec over TCP or TLS (a client, not a mock of
//! anything), batch fixtures, and [`tls_files`] to use the certificates of `kube_relay_testkit::pki`.
#![allow(dead_code)] // helpers for the modules that need them; not every build uses all

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use kube_relay_proto::{
    Batch, DEFAULT_MAX_FRAME_BYTES, FamilyDef, Goodbye, Heartbeat, Hello, MetricKind,
    PROTOCOL_VERSION, ReceiverMessage, Reject, SenderCodec, SenderMessage, SeriesDef, SeriesId,
    SnapshotPart, Updates, Value, Welcome,
};
use kube_relay_receiver::TlsFiles;
use kube_relay_testkit::http;
use kube_relay_testkit::pki::CertKey;
use kube_relay_testkit::process::ChildProcess;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

/// The build profile of these tests and of the binaries they start, for printed figures.
pub const PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

/// How long a test waits for any single thing the receiver should do.
pub const WAIT: Duration = Duration::from_secs(10);

/// The real receiver in this test's runtime (shared with the sender's tests).
pub use kube_relay_testkit::receiver::RunningReceiver as Running;

/// A `Hello` for `cluster` from `sender_id`, epoch 1, no token.
pub fn hello(cluster: &str, sender_id: &str) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        cluster: cluster.into(),
        sender_id: sender_id.into(),
        epoch: 1,
        token: None,
        resume_from: None,
        agent: "receiver-tests/0".into(),
    }
}

/// A byte stream a test sender can speak over: TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The receiver's view of a test certificate and key.
pub fn tls_files(pair: &CertKey) -> TlsFiles {
    TlsFiles {
        cert: pair.cert.clone(),
        key: pair.key.clone(),
    }
}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// How a test client reaches a TLS port: whom it trusts, what it presents, which name it
/// checks.
#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts the CA in `ca`, presents `identity` if given, checks the name `127.0.0.1`.
    pub fn new(ca: &std::path::Path, identity: Option<&CertKey>) -> Self {
        TlsClient {
            config: kube_relay_testkit::tls::client_config(ca, identity).expect("client TLS"),
            server_name: kube_relay_testkit::tls::loopback_name(),
        }
    }

    /// Connects and completes the TLS handshake.
    pub async fn connect(&self, addr: SocketAddr) -> Result<BoxIo> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("failed to connect to {addr}"))?;
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .context("TLS handshake failed")?;
        Ok(Box::new(tls))
    }
}

/// A sender speaking the real protocol over TCP or TLS.
pub struct TestSender {
    conn: Framed<BoxIo, SenderCodec>,
    pub welcome: Welcome,
}

impl std::fmt::Debug for TestSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSender")
            .field("welcome", &self.welcome)
            .finish_non_exhaustive()
    }
}

impl TestSender {
    /// Connects and says `hello`; `Err` carries the `Reject` if the receiver refused.
    pub async fn connect(addr: SocketAddr, hello: Hello) -> Result<Result<TestSender, Reject>> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("failed to connect to {addr}"))?;
        TestSender::handshake(Box::new(stream), hello).await
    }

    /// Connects over TLS and says `hello`.
    pub async fn connect_tls(
        addr: SocketAddr,
        tls: &TlsClient,
        hello: Hello,
    ) -> Result<Result<TestSender, Reject>> {
        TestSender::handshake(tls.connect(addr).await?, hello).await
    }

    /// Connects over TLS, expecting a `Welcome`.
    pub async fn welcomed_tls(
        addr: SocketAddr,
        tls: &TlsClient,
        hello: Hello,
    ) -> Result<TestSender> {
        match TestSender::connect_tls(addr, tls, hello).await? {
            Ok(sender) => Ok(sender),
            Err(reject) => bail!("expected a Welcome, got {reject:?}"),
        }
    }

    /// Connects from loopback address `from` (see [`connect_from`]) and says `hello`.
    pub async fn connect_from(
        from: [u8; 4],
        addr: SocketAddr,
        hello: Hello,
    ) -> Result<Result<TestSender, Reject>> {
        TestSender::handshake(Box::new(connect_from(from, addr).await?), hello).await
    }

    /// Says `hello` on an open stream.
    pub async fn handshake(io: BoxIo, hello: Hello) -> Result<Result<TestSender, Reject>> {
        let mut conn = Framed::new(io, SenderCodec::new(DEFAULT_MAX_FRAME_BYTES));
        conn.send(SenderMessage::Hello(hello)).await?;
        match next(&mut conn).await? {
            Some(ReceiverMessage::Welcome(welcome)) => Ok(Ok(TestSender { conn, welcome })),
            Some(ReceiverMessage::Reject(reject)) => Ok(Err(reject)),
            other => bail!("expected Welcome or Reject, got {other:?}"),
        }
    }

    /// Connects, expecting a `Welcome`.
    pub async fn welcomed(addr: SocketAddr, hello: Hello) -> Result<TestSender> {
        match TestSender::connect(addr, hello).await? {
            Ok(sender) => Ok(sender),
            Err(reject) => bail!("expected a Welcome, got {reject:?}"),
        }
    }

    /// Sends a batch.
    pub async fn batch(&mut self, batch: Batch) -> Result<()> {
        Ok(self.conn.send(SenderMessage::Batch(batch)).await?)
    }

    /// Sends any message.
    pub async fn send(&mut self, msg: SenderMessage) -> Result<()> {
        Ok(self.conn.send(msg).await?)
    }

    /// Writes raw bytes on the connection, bypassing the codec.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.conn.get_mut().write_all(bytes).await?;
        self.conn.get_mut().flush().await?;
        Ok(())
    }

    /// Sends a heartbeat.
    pub async fn heartbeat(&mut self, sent_at_ms: u64) -> Result<()> {
        self.send(SenderMessage::Heartbeat(Heartbeat { sent_at_ms }))
            .await
    }

    /// Says goodbye.
    pub async fn goodbye(&mut self) -> Result<()> {
        self.send(SenderMessage::Goodbye(Goodbye {
            reason: "test done".into(),
        }))
        .await
    }

    /// The next message from the receiver (`None` on close).
    pub async fn recv(&mut self) -> Result<Option<ReceiverMessage>> {
        next(&mut self.conn).await
    }

    /// Waits for an `Ack` of at least `seq`, skipping heartbeats and lower acks.
    pub async fn ack_of(&mut self, seq: u64) -> Result<u64> {
        loop {
            match self.recv().await? {
                Some(ReceiverMessage::Ack(ack)) if ack.seq >= seq => return Ok(ack.seq),
                Some(ReceiverMessage::Ack(_) | ReceiverMessage::Heartbeat(_)) => {}
                other => bail!("waiting for Ack {seq}, got {other:?}"),
            }
        }
    }

    /// Reads until the receiver closes the connection (skipping acks and heartbeats).
    pub async fn closed(&mut self) -> Result<()> {
        loop {
            match tokio::time::timeout(WAIT, self.conn.next()).await {
                Err(_) => bail!("the receiver did not close the connection"),
                Ok(None | Some(Err(_))) => return Ok(()),
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// A framed connection, nothing sent yet.
pub async fn raw(addr: SocketAddr) -> Result<Framed<TcpStream, SenderCodec>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("failed to connect to {addr}"))?;
    Ok(Framed::new(
        stream,
        SenderCodec::new(DEFAULT_MAX_FRAME_BYTES),
    ))
}

async fn next<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Framed<S, SenderCodec>,
) -> Result<Option<ReceiverMessage>> {
    match tokio::time::timeout(WAIT, conn.next()).await {
        Err(_) => bail!("no message from the receiver within {WAIT:?}"),
        Ok(None) => Ok(None),
        Ok(Some(msg)) => Ok(Some(msg?)),
    }
}

/// Family 0: `kube_pod_status_phase` (gauge); family 1: `kube_pod_container_status_restarts`
/// (counter).
pub fn pod_families() -> Vec<FamilyDef> {
    vec![
        FamilyDef {
            id: 0,
            name: "kube_pod_status_phase".into(),
            help: "The pods current phase.".into(),
            kind: MetricKind::Gauge,
        },
        FamilyDef {
            id: 1,
            name: "kube_pod_container_status_restarts".into(),
            help: "The number of container restarts per container.".into(),
            kind: MetricKind::Counter,
        },
    ]
}

/// A phase series of family 0 for `pod`.
pub fn phase(id: SeriesId, pod: &str, phase: &str) -> SeriesDef {
    SeriesDef {
        id,
        family: 0,
        labels: vec![
            ("namespace".into(), "default".into()),
            ("pod".into(), pod.into()),
            ("phase".into(), phase.into()),
        ],
    }
}

/// A restarts series of family 1 for `pod`.
pub fn restarts(id: SeriesId, pod: &str) -> SeriesDef {
    SeriesDef {
        id,
        family: 1,
        labels: vec![
            ("namespace".into(), "default".into()),
            ("pod".into(), pod.into()),
            ("container".into(), "app".into()),
        ],
    }
}

/// Values for series ids.
pub fn values(pairs: &[(SeriesId, f64)]) -> Updates {
    Updates::from_unsorted(pairs.iter().map(|&(id, v)| (id, Value::from(v))).collect())
}

/// A one-part snapshot at `seq`: pod `web-1` Running (series 0) with 2 restarts (series 1).
pub fn small_snapshot(seq: u64) -> Batch {
    Batch {
        observed_at_ms: 0,
        seq,
        snapshot: Some(SnapshotPart {
            first: true,
            last: true,
        }),
        families: pod_families(),
        series: vec![phase(0, "web-1", "Running"), restarts(1, "web-1")],
        updates: values(&[(0, 1.0), (1, 2.0)]),
        removals: vec![],
    }
}

/// A one-part snapshot at `seq` with `n` phase series (ids `0..n`, value 1).
pub fn snapshot_of(seq: u64, n: u32) -> Batch {
    Batch {
        observed_at_ms: 0,
        seq,
        snapshot: Some(SnapshotPart {
            first: true,
            last: true,
        }),
        families: pod_families(),
        series: (0..n)
            .map(|i| phase(i, &format!("pod-{i}"), "Running"))
            .collect(),
        updates: values(&(0..n).map(|i| (i, 1.0)).collect::<Vec<_>>()),
        removals: vec![],
    }
}

/// A delta batch at `seq` setting `pairs`.
pub fn delta(seq: u64, pairs: &[(SeriesId, f64)]) -> Batch {
    Batch {
        seq,
        updates: values(pairs),
        ..Batch::default()
    }
}

/// Sample lookup in an exposition, shared by every crate's tests.
pub use kube_relay_testkit::exposition::{sample, sum};

/// A `Hello` carrying `token`.
pub fn hello_with_token(cluster: &str, sender_id: &str, token: Option<&str>) -> Hello {
    Hello {
        token: token.map(str::to_owned),
        ..hello(cluster, sender_id)
    }
}

/// Lines of an exposition that are samples of relayed (non-`relay_`) series.
pub fn relayed_series(exposition: &str) -> Vec<&str> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("relay_") && !l.is_empty())
        .collect()
}

/// Reads until EOF or an error (a reset also means closed); `Err` if still open after
/// [`WAIT`].
pub async fn wait_closed<S: AsyncRead + Unpin>(stream: &mut S) -> Result<()> {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Err(_) => bail!("the receiver did not close the connection within {WAIT:?}"),
            Ok(Ok(0) | Err(_)) => return Ok(()),
            Ok(Ok(_)) => {}
        }
    }
}

/// A minimal HTTP/1.0 GET over TLS: `(status, lower-cased headers, body)`.
pub async fn https_get(
    addr: SocketAddr,
    tls: &TlsClient,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, Vec<(String, String)>, String)> {
    let mut stream = tls.connect(addr).await?;
    let mut head = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    // A TLS peer closing without close_notify is an error after the body; keep what came.
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut raw)).await;
    let text = String::from_utf8(raw).context("response is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, body.to_owned()))
}

/// The real `receiver` binary as a child process, its addresses read from its log.
pub struct ChildReceiver {
    pub child: ChildProcess,
    pub ingest: SocketAddr,
    pub http: SocketAddr,
}

impl ChildReceiver {
    /// Starts `receiver` on loopback port 0 with extra `args` and waits until it is ready.
    pub async fn start(args: &[&str]) -> Result<ChildReceiver> {
        let mut all = vec!["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let child = ChildProcess::spawn(
            "receiver",
            &all,
            &[("RUST_LOG", "info"), ("KUBE_RELAY_LOG_FORMAT", "text")],
        )?;
        let (ingest, http) = kube_relay_testkit::wait_until(
            "the receiver's listening log line",
            WAIT,
            Duration::from_millis(20),
            || {
                let log = child.log();
                let addrs = logged_addr(&log, "ingest").zip(logged_addr(&log, "http"));
                async move { Ok(addrs) }
            },
        )
        .await
        .with_context(|| format!("receiver log:\n{}", child.log()))?;
        kube_relay_testkit::wait_until("ready", WAIT, Duration::from_millis(20), || async move {
            Ok((http::get(http, "/readyz", &[]).await?.status == 200).then_some(()))
        })
        .await?;
        Ok(ChildReceiver {
            child,
            ingest,
            http,
        })
    }

    /// The process' resident set size (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        proc_status_kib(self.child.pid().context("exited")?, "VmRSS:")
    }

    /// `GET /metrics` as Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        let r = http::get(self.http, "/metrics", &[]).await?;
        if r.status != 200 {
            bail!("GET /metrics answered {}", r.status);
        }
        Ok(r.text()?.to_owned())
    }
}

/// A `/proc/<pid>/status` field in KiB (e.g. `VmRSS:`, `VmHWM:`).
pub fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Finds `field=ADDR` in the "receiver listening" log line.
pub fn logged_addr(log: &str, field: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("receiver listening"))?;
    let start = line.find(&format!(" {field}="))? + field.len() + 2;
    line[start..].split_whitespace().next()?.parse().ok()
}

/// Captures this test binary's log lines (receiver at debug) for [`logged`]; idempotent.
pub fn capture_logs() {
    kube_relay_testkit::logs::capture("kube_relay_receiver=debug");
}

/// Everything logged since [`capture_logs`].
pub fn logged() -> String {
    kube_relay_testkit::logs::logged()
}

/// A TCP connection to `addr` from the loopback address `from` (any of 127.0.0.0/8), so a
/// test can play several peers.
pub async fn connect_from(from: [u8; 4], addr: SocketAddr) -> Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket
        .connect(addr)
        .await
        .with_context(|| format!("failed to connect to {addr} from {from:?}"))
}

/// A sender streaming full updates of `series` series, batch after batch, as fast as the
/// receiver takes them (acks are read when it stops).
pub struct Streamer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<(TestSender, u64)>,
}

impl Streamer {
    /// Connects from loopback address `from` as `cluster`, sends a snapshot and starts
    /// streaming.
    pub async fn start(
        ingest: SocketAddr,
        from: [u8; 4],
        cluster: &str,
        token: Option<&str>,
        series: u32,
    ) -> Result<Streamer> {
        let hello = hello_with_token(cluster, cluster, token);
        let mut sender = match TestSender::connect_from(from, ingest, hello).await? {
            Ok(sender) => sender,
            Err(reject) => bail!("streamer refused: {reject:?}"),
        };
        sender.batch(snapshot_of(1, series)).await?;
        sender.ack_of(1).await?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut seq = 1;
            let mut value = 0.0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                seq += 1;
                value += 1.0;
                let pairs: Vec<_> = (0..series).map(|id| (id, value)).collect();
                sender.batch(delta(seq, &pairs)).await.expect("stream");
            }
            (sender, seq)
        });
        Ok(Streamer { stop, task })
    }

    /// Stops streaming and waits for the ack of the last batch: proof the session stayed
    /// healthy. Returns that sequence number.
    pub async fn stop(self) -> Result<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut sender, last) = self.task.await?;
        sender.ack_of(last).await
    }
}

/// Updates applied for `cluster` so far, from the receiver's counter at `http`.
pub async fn updates_of(http_addr: SocketAddr, cluster: &str) -> Result<f64> {
    let r = http::get(http_addr, "/metrics", &[]).await?;
    let text = r.text()?;
    Ok(sample(
        text,
        &format!("relay_receiver_updates_received_total{{cluster=\"{cluster}\"}}"),
    )
    .unwrap_or(0.0))
}

/// Runs `work` and returns its output with `cluster`'s applied updates per second meanwhile.
pub async fn rate_during<T>(
    http_addr: SocketAddr,
    cluster: &str,
    work: impl std::future::Future<Output = T>,
) -> Result<(f64, T)> {
    let (before, started) = (
        updates_of(http_addr, cluster).await?,
        std::time::Instant::now(),
    );
    let out = work.await;
    let secs = started.elapsed().as_secs_f64();
    Ok(((updates_of(http_addr, cluster).await? - before) / secs, out))
}

/// Open file descriptors of process `pid`.
pub fn fd_count(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}
