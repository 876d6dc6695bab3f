//! Test support for the receiver's integration tests: a running receiver on loopback ports
//! and a test sender that speaks the real protocol through `kube_relay_proto`'s codec (a
//! client, not a mock of anything), plus batch fixtures.
#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use kube_relay_proto::{
    Batch, DEFAULT_MAX_FRAME_BYTES, FamilyDef, Goodbye, Heartbeat, Hello, MetricKind,
    PROTOCOL_VERSION, ReceiverMessage, Reject, SenderCodec, SenderMessage, SeriesDef, SeriesId,
    SnapshotPart, Updates, Value, Welcome,
};
use kube_relay_receiver::{Receiver, ReceiverConfig};
use kube_relay_testkit::http;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// How long a test waits for any single thing the receiver should do.
pub const WAIT: Duration = Duration::from_secs(10);

/// A receiver running in the test's runtime; shut down and awaited on [`Running::stop`],
/// cancelled when dropped.
pub struct Running {
    pub ingest: SocketAddr,
    pub http: SocketAddr,
    pub store: kube_relay_receiver::Store,
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<kube_relay_receiver::Result<()>>>,
}

impl Running {
    /// Binds a receiver with `config` (use [`ReceiverConfig::loopback`]) and runs it.
    pub async fn start(config: ReceiverConfig) -> Result<Running> {
        let receiver = Receiver::bind(config).await?;
        let (ingest, http) = (receiver.ingest_addr(), receiver.http_addr());
        let store = receiver.store().clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(receiver.run(shutdown.clone()));
        Ok(Running {
            ingest,
            http,
            store,
            shutdown,
            task: Some(task),
        })
    }

    /// A receiver with the test defaults.
    pub async fn loopback() -> Result<Running> {
        Running::start(ReceiverConfig::loopback()).await
    }

    /// `GET /metrics` as Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        let r = http::get(self.http, "/metrics", &[]).await?;
        if r.status != 200 {
            bail!("GET /metrics answered {}", r.status);
        }
        Ok(r.text()?.to_owned())
    }

    /// Polls `/metrics` until `pred` holds, returning that exposition.
    pub async fn metrics_until(&self, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
        kube_relay_testkit::wait_until(what, WAIT, Duration::from_millis(20), || async {
            let text = self.metrics().await?;
            Ok(pred(&text).then_some(text))
        })
        .await
    }

    /// Cancels the receiver and waits for it to stop.
    pub async fn stop(mut self) -> Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .context("receiver did not stop in time")???;
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

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

/// A sender speaking the real protocol over TCP.
#[derive(Debug)]
pub struct TestSender {
    conn: Framed<TcpStream, SenderCodec>,
    pub welcome: Welcome,
}

impl TestSender {
    /// Connects and says `hello`; `Err` carries the `Reject` if the receiver refused.
    pub async fn connect(addr: SocketAddr, hello: Hello) -> Result<Result<TestSender, Reject>> {
        let mut conn = raw(addr).await?;
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
        use tokio::io::AsyncWriteExt;
        self.conn.get_mut().write_all(bytes).await?;
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

async fn next(conn: &mut Framed<TcpStream, SenderCodec>) -> Result<Option<ReceiverMessage>> {
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

/// The value of the sample line starting with `prefix` (`name{labels}`), if present.
pub fn sample(exposition: &str, prefix: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(prefix)?.strip_prefix(' ')?;
        rest.parse().ok()
    })
}
