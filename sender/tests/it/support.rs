//! Test support for the sender's integration tests.
//!
//! - [`now_ms`]: the clock batches are stamped with; [`metrics_text`]: the receiver's
//!   `/metrics` as text;
//! - [`RunningReceiver`]: the real receiver in this process, for any configuration (TLS,
//!   tokens); [`phases`] and [`pod_key`]: a pod's series for link tests;
//! - [`Bed`]: the real simulated cluster (manual clock) and the real receiver, with senders
//!   started against them (optionally serving their own HTTP port), and [`value`] to read
//!   one sample of the receiver's `/metrics`;
//! - [`accept`], [`next`], [`next_batch`], [`welcome`], [`receive_snapshot`], [`ack`]: a
//!   scripted peer speaking the receiver's side of the protocol over plain TCP, for tests that
//!   decide what the receiver acknowledges and when it stays silent; [`kept_or_dropped`]: a
//!   full spool's bookkeeping against what such a peer received;
//! - [`KubeSim`]: the demo scenario in real time with its kubeconfig written to a file, for
//!   the `sender` binary (`--kubeconfig`), as a user runs it against `kube-sim`;
//! - [`Tap`]: a TCP relay between a sender and a real receiver that records every batch the
//!   sender sends, per connection, to check what went over the wire and in what order.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use kube_relay_proto::{
    Ack, Batch, Hello, PROTOCOL_VERSION, ReceiverCodec, ReceiverMessage, Resume, SenderMessage,
    Welcome,
};
use kube_relay_receiver::ReceiverConfig;
use kube_relay_sender::config::Config;
use kube_relay_sender::family::Family;
use kube_relay_sender::kubeclient::plain_client;
use kube_relay_sender::series::{ObjectKey, ObjectKind, SeriesSet};
use kube_relay_sender::shared::Shared;
use kube_relay_sender::{Error, Sender};
use kube_relay_sim::{ClockMode, RunningSim, Scenario, SimHandle, Simulator};
use kube_relay_testkit::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Framed};
use tokio_util::sync::CancellationToken;

/// How long a test waits for a condition.
pub const WAIT: Duration = Duration::from_secs(30);
/// How often it checks.
pub const POLL: Duration = Duration::from_millis(25);

/// The wall clock in milliseconds since the Unix epoch, as the sender stamps batches.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sample lookup in the receiver's `/metrics`, shared by every crate's tests.
pub use kube_relay_testkit::exposition::{value, values};

/// One pod's `kube_pod_status_phase` series, one-hot on `phase`.
pub fn phases(pod: &str, phase: &str) -> SeriesSet<'static> {
    let mut set = SeriesSet::new();
    for p in ["Pending", "Running", "Failed"] {
        set.push(
            Family::PodStatusPhase,
            [
                "default".to_owned(),
                pod.to_owned(),
                format!("uid-{pod}"),
                p.to_owned(),
            ],
            f64::from(u8::from(p == phase)),
        );
    }
    set
}

/// The store key of pod `default/{pod}`.
pub fn pod_key(pod: &str) -> ObjectKey {
    ObjectKey::new(ObjectKind::Pod, "default", pod)
}

/// The simulated cluster and the receiver.
pub struct Bed {
    /// The simulated cluster.
    pub sim: RunningSim,
    /// Its handle (manual clock).
    pub handle: SimHandle,
    /// The receiver's ingest address.
    pub ingest: SocketAddr,
    /// The receiver's HTTP address.
    pub http: SocketAddr,
    receiver: RunningReceiver,
}

/// A running sender.
pub struct Running {
    /// Its shared state.
    pub shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), Error>>,
}

impl Running {
    /// SIGTERM-like: flush, goodbye, stop.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("sender stops in time")
            .expect("join")
            .expect("clean exit");
    }

    /// Waits until every watcher has listed at least once since this sender started (`n`
    /// watchers) and the receiver has acknowledged everything sent after that.
    pub async fn wait_synced(&self, watchers: u64) {
        let shared = Arc::clone(&self.shared);
        wait_until("watchers listed", WAIT, POLL, || {
            let shared = Arc::clone(&shared);
            async move { Ok((shared.stats.lists_done.load(Relaxed) >= watchers).then_some(())) }
        })
        .await
        .expect("listed");
        // Changes from the lists reach the store at once; give the link one flush, then wait
        // for the receiver to acknowledge what was sent by then.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = self.shared.stats.sent_seq.load(Relaxed);
        let shared = Arc::clone(&self.shared);
        wait_until("acknowledged", WAIT, POLL, || {
            let shared = Arc::clone(&shared);
            async move {
                let acked = shared.stats.acked_seq.load(Relaxed);
                Ok((sent > 0 && acked >= sent).then_some(()))
            }
        })
        .await
        .expect("acknowledged");
    }

    /// Waits until the sender has had `n` sessions with the receiver.
    pub async fn wait_sessions(&self, n: u64) {
        let shared = Arc::clone(&self.shared);
        wait_until("sessions", WAIT, POLL, || {
            let shared = Arc::clone(&shared);
            async move {
                let s = shared
                    .stats
                    .sessions
                    .load(std::sync::atomic::Ordering::Relaxed);
                Ok((s >= n).then_some(()))
            }
        })
        .await
        .expect("connected");
    }
}

/// The built-in `demo` scenario running in real time in this process, and a kubeconfig file
/// for it (context `kube-sim`, so a sender started with it names its cluster `kube-sim`).
pub struct KubeSim {
    sim: RunningSim,
    path: String,
    _dir: tempfile::TempDir,
}

impl KubeSim {
    /// Starts the demo scenario on a loopback port and writes its kubeconfig.
    pub async fn start() -> KubeSim {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
        let scenario = Scenario::builtin("demo").expect("demo scenario");
        let sim = Simulator::start(scenario, listener, ClockMode::RealTime { speed: 1.0 })
            .await
            .expect("sim starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, sim.kubeconfig_yaml()).expect("write kubeconfig");
        let path = path.to_str().expect("utf-8 temp path").to_owned();
        KubeSim {
            sim,
            path,
            _dir: dir,
        }
    }

    /// The kubeconfig file, for `--kubeconfig`.
    pub fn kubeconfig(&self) -> &str {
        &self.path
    }

    /// Stops serving.
    pub async fn stop(self) {
        self.sim.shutdown().await;
    }
}

impl Bed {
    /// Starts `scenario` (manual clock) and a receiver on loopback.
    pub async fn start(scenario: Scenario) -> Bed {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
        let sim = Simulator::start(scenario, listener, ClockMode::Manual)
            .await
            .expect("sim starts");
        let handle = sim.handle();
        let receiver = RunningReceiver::start(ReceiverConfig::loopback())
            .await
            .expect("receiver starts");
        Bed {
            sim,
            handle,
            ingest: receiver.ingest,
            http: receiver.http,
            receiver,
        }
    }

    /// A sender configuration for this bed: fast flushes and usage polls.
    pub fn config(&self) -> Config {
        let mut config = Config::new(self.ingest.to_string());
        config.flush_interval = Duration::from_millis(10);
        config.usage_interval = Duration::from_secs(1);
        config
    }

    /// Starts a sender for cluster `cluster` with `config`.
    pub fn sender(&self, cluster: &str, config: Config) -> Running {
        let client = plain_client(&self.sim.base_url()).expect("client");
        let sender = Sender::new(config, client, cluster).expect("sender");
        let shared = sender.shared();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(sender.run(shutdown.clone()));
        Running {
            shared,
            shutdown,
            task,
        }
    }

    /// Starts a sender for cluster `cluster` with `config` that serves its own HTTP port
    /// (`--http-listen`) on a loopback port; returns where.
    pub async fn sender_with_http(&self, cluster: &str, config: Config) -> (Running, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = plain_client(&self.sim.base_url()).expect("client");
        let sender = Sender::new(config, client, cluster)
            .expect("sender")
            .with_http(listener);
        let shared = sender.shared();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(sender.run(shutdown.clone()));
        let running = Running {
            shared,
            shutdown,
            task,
        };
        (running, addr)
    }

    /// Advances simulated time.
    pub fn advance(&self, by: Duration) {
        self.handle.advance(by).expect("advance");
    }

    /// The receiver's `/metrics`.
    pub async fn metrics(&self) -> String {
        metrics_text(self.http).await.expect("metrics")
    }

    /// Waits until `check` returns `Some` on the receiver's `/metrics` text.
    pub async fn wait_for<T>(&self, what: &str, check: impl Fn(&str) -> Option<T>) -> T {
        let http = self.http;
        let check = &check;
        wait_until(what, WAIT, POLL, || async move {
            let text = metrics_text(http).await?;
            Ok(check(&text))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Stops the receiver and the simulated cluster.
    pub async fn stop(self) {
        self.receiver.stop().await.expect("receiver stops");
    }
}

/// The real receiver in this process, and its `/metrics` as text (shared with the
/// receiver's tests).
pub use kube_relay_testkit::receiver::{RunningReceiver, metrics_text};

/// How long the scripted peer waits for the sender to connect or to send a message.
pub const PEER_WAIT: Duration = Duration::from_secs(20);

/// The scripted peer's side of one connection.
pub type PeerConn = Framed<TcpStream, ReceiverCodec>;

/// Accepts the sender's next connection on `listener` and reads its `Hello`.
pub async fn accept(listener: &TcpListener) -> (PeerConn, Hello) {
    let (stream, _) = tokio::time::timeout(PEER_WAIT, listener.accept())
        .await
        .expect("the sender connects")
        .expect("accept");
    let mut conn = Framed::new(stream, ReceiverCodec::new(1 << 20));
    match next(&mut conn).await {
        SenderMessage::Hello(hello) => (conn, hello),
        other => panic!("expected Hello, got {other:?}"),
    }
}

/// The sender's next message.
pub async fn next(conn: &mut PeerConn) -> SenderMessage {
    tokio::time::timeout(PEER_WAIT, conn.next())
        .await
        .expect("a message in time")
        .expect("not closed")
        .expect("decodes")
}

/// The next batch, skipping heartbeats.
pub async fn next_batch(conn: &mut PeerConn) -> Batch {
    loop {
        match next(conn).await {
            SenderMessage::Batch(b) => return b,
            SenderMessage::Heartbeat(_) => {}
            other => panic!("expected a batch, got {other:?}"),
        }
    }
}

/// Welcomes the sender with `resume`, asking for a heartbeat every `heartbeat_ms`.
pub async fn welcome(conn: &mut PeerConn, resume: Resume, heartbeat_ms: u32) {
    welcome_with_limit(
        conn,
        resume,
        heartbeat_ms,
        kube_relay_proto::DEFAULT_MAX_FRAME_BYTES,
    )
    .await;
}

/// [`welcome`] from a receiver whose frame limit is `max_frame_bytes`.
pub async fn welcome_with_limit(
    conn: &mut PeerConn,
    resume: Resume,
    heartbeat_ms: u32,
    max_frame_bytes: usize,
) {
    conn.send(ReceiverMessage::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        resume,
        heartbeat_interval_ms: heartbeat_ms,
        max_frame_bytes: u32::try_from(max_frame_bytes).expect("a u32 limit"),
    }))
    .await
    .expect("welcome");
}

/// Receives a whole snapshot; returns the seq of its first and of its last part.
pub async fn receive_snapshot(conn: &mut PeerConn) -> (u64, u64) {
    let first = next_batch(conn).await;
    assert!(first.snapshot.is_some_and(|p| p.first), "{first:?}");
    let mut last = first.clone();
    while !last.snapshot.is_some_and(|p| p.last) {
        last = next_batch(conn).await;
        assert!(last.snapshot.is_some(), "deltas only after the snapshot");
    }
    (first.seq, last.seq)
}

/// Requires that the spool overflowed and that each of the `sent` unacknowledged samples is
/// either still in the spool or counted as dropped; returns how many are in the spool.
pub fn kept_or_dropped(shared: &Shared, sent: u64) -> u64 {
    let dropped = shared.stats.dropped_spool_full.load(Relaxed);
    let kept = shared.stats.spooled_samples.load(Relaxed);
    assert!(dropped > 0, "the spool overflowed");
    assert_eq!(
        dropped + kept,
        sent,
        "every unacknowledged sample is kept or counted"
    );
    kept
}

/// Acknowledges everything up to `seq` of `epoch`.
pub async fn ack(conn: &mut PeerConn, epoch: u64, seq: u64) {
    conn.send(ReceiverMessage::Ack(Ack { epoch, seq }))
        .await
        .expect("ack");
}

/// Cancels a link (or sender) task and requires that it stops cleanly within [`WAIT`].
pub async fn stop_link(shutdown: CancellationToken, task: JoinHandle<Result<(), Error>>) {
    shutdown.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the link stops in time")
        .expect("join")
        .expect("clean exit");
}

/// A relay from senders to a receiver (`upstream`) that records the batches each connection
/// carried. When either side closes, so does the other.
pub struct Tap {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<Vec<Batch>>>>,
    task: JoinHandle<()>,
}

impl Tap {
    /// Listens on loopback and relays every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tap");
        let addr = listener.local_addr().expect("tap address");
        let connections: Arc<Mutex<Vec<Vec<Batch>>>> = Arc::default();
        let task = tokio::spawn({
            let connections = Arc::clone(&connections);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let index = {
                        let mut all = connections.lock().expect("tap lock");
                        all.push(Vec::new());
                        all.len() - 1
                    };
                    tokio::spawn(Tap::relay(
                        client,
                        upstream,
                        index,
                        Arc::clone(&connections),
                    ));
                }
            }
        });
        Tap {
            addr,
            connections,
            task,
        }
    }

    async fn relay(
        client: TcpStream,
        upstream: SocketAddr,
        index: usize,
        connections: Arc<Mutex<Vec<Vec<Batch>>>>,
    ) {
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut server_rx, mut server_tx) = server.into_split();
        let down = async {
            let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
            let _ = client_tx.shutdown().await;
        };
        let up = async {
            let mut codec = ReceiverCodec::new(1 << 20);
            let mut pending = BytesMut::new();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match client_rx.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                while let Ok(Some(msg)) = codec.decode(&mut pending) {
                    if let SenderMessage::Batch(batch) = msg {
                        connections.lock().expect("tap lock")[index].push(batch);
                    }
                }
                if server_tx.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = server_tx.shutdown().await;
        };
        // Either side closing ends the relay (a stopped receiver must look gone).
        tokio::select! {
            () = down => {}
            () = up => {}
        }
    }

    /// Where senders connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The batches of every connection so far, oldest connection first.
    pub fn connections(&self) -> Vec<Vec<Batch>> {
        self.connections.lock().expect("tap lock").clone()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}
