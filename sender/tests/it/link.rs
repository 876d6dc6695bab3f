//! The link on real sockets: against the real receiver (`/metrics` shows what the store
//! holds, reconnects after a receiver restart, resumes without a snapshot after a cut), and
//! against a scripted peer speaking the receiver's side of the protocol where a test must
//! control acks and silence (spool overflow, dead link, rejections, goodbye). A refused token
//! is counted and retried; an unsupported protocol version is fatal.

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kube_relay_proto::{
    PROTOCOL_VERSION, ReceiverMessage, Reject, RejectReason, Resume, SenderMessage,
};
use kube_relay_receiver::ReceiverConfig;
use kube_relay_sender::Error;
use kube_relay_sender::link::{Link, LinkConfig};
use kube_relay_sender::shared::Shared;
use kube_relay_sender::transport::TcpConnector;
use kube_relay_testkit::proxy::LinkProxy;
use kube_relay_testkit::wait_until;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use support::{
    RunningReceiver, accept, ack, kept_or_dropped, metrics_text, next, next_batch, phases, pod_key,
    receive_snapshot, stop_link, value, welcome,
};

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

fn link_config(cluster: &str) -> LinkConfig {
    LinkConfig {
        flush_interval: Duration::from_millis(10),
        ..LinkConfig::new(cluster, format!("{cluster}-sender"))
    }
}

/// The address of a scripted peer's listener.
fn peer_addr(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().expect("listener address")
}

/// Starts a link with `config` and `shared` towards `target` (a receiver, a proxy or a
/// scripted peer); returns its shutdown token and task.
fn start_link(
    target: SocketAddr,
    config: LinkConfig,
    shared: &Arc<Shared>,
) -> (CancellationToken, JoinHandle<Result<(), Error>>) {
    let shutdown = CancellationToken::new();
    let link = Link::new(
        config,
        TcpConnector::new(target.to_string()),
        Arc::clone(shared),
    );
    (shutdown.clone(), tokio::spawn(link.run(shutdown)))
}

/// Waits until the receiver's `/metrics` has a line starting with `prefix` (and returns it),
/// or has none when `want` is false.
async fn wait_line(http: SocketAddr, prefix: &str, want: bool) -> Option<String> {
    wait_until(prefix, WAIT, POLL, || async {
        let text = metrics_text(http).await?;
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_owned);
        Ok(match (want, line) {
            (true, Some(line)) => Some(Some(line)),
            (false, None) => Some(None),
            _ => None,
        })
    })
    .await
    .expect("metrics line")
}

#[tokio::test]
async fn series_appear_change_and_disappear_at_the_receiver() {
    let rx = RunningReceiver::start(ReceiverConfig::loopback())
        .await
        .expect("receiver starts");
    let (ingest, http) = (rx.ingest, rx.http);
    let shared = Arc::new(Shared::new(7));
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Pending")));
    let (shutdown, running) = start_link(ingest, link_config("c1"), &shared);

    let running_line = r#"kube_pod_status_phase{cluster="c1",namespace="default",pod="web",uid="uid-web",phase="Running"}"#;
    let line = wait_line(http, running_line, true).await.expect("line");
    assert!(line.ends_with(" 0"), "{line}");

    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Running")));
    wait_line(http, &format!("{running_line} 1"), true).await;

    shared.update(|s| s.remove(&pod_key("web")));
    wait_line(http, running_line, false).await;

    stop_link(shutdown, running).await;
    assert_eq!(shared.stats.snapshots_sent.load(Ordering::Relaxed), 1);
    assert!(shared.stats.delta_samples_sent.load(Ordering::Relaxed) >= 3 + 2);
    rx.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn the_link_reconnects_after_the_receiver_restarts_and_sends_a_snapshot() {
    let rx = RunningReceiver::start(ReceiverConfig::loopback())
        .await
        .expect("receiver starts");
    let (ingest, http) = (rx.ingest, rx.http);
    let shared = Arc::new(Shared::new(1));
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Running")));
    let (shutdown, running) = start_link(ingest, link_config("c2"), &shared);
    let line = r#"kube_pod_status_phase{cluster="c2",namespace="default",pod="web",uid="uid-web",phase="Running"} 1"#;
    wait_line(http, line, true).await;

    // The receiver goes away (losing all state) and comes back on the same ports.
    rx.stop().await.expect("receiver stops");
    shared.update(|s| s.apply(&pod_key("db"), &phases("db", "Pending")));
    let rx = RunningReceiver::start(ReceiverConfig {
        listen: ingest,
        http_listen: http,
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver starts");
    let http = rx.http;
    wait_line(http, line, true).await;
    wait_line(
        http,
        r#"kube_pod_status_phase{cluster="c2",namespace="default",pod="db",uid="uid-db",phase="Pending"} 1"#,
        true,
    )
    .await;
    assert_eq!(shared.stats.reconnects.load(Ordering::Relaxed), 1);
    assert_eq!(shared.stats.snapshots_sent.load(Ordering::Relaxed), 2);

    stop_link(shutdown, running).await;
    rx.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn a_cut_link_resumes_from_the_acks_without_a_snapshot() {
    let rx = RunningReceiver::start(ReceiverConfig::loopback())
        .await
        .expect("receiver starts");
    let (ingest, http) = (rx.ingest, rx.http);
    let proxy = LinkProxy::start(ingest).await.expect("proxy");
    let shared = Arc::new(Shared::new(1));
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Pending")));
    let (shutdown, running) = start_link(proxy.addr(), link_config("c3"), &shared);
    let pending = r#"kube_pod_status_phase{cluster="c3",namespace="default",pod="web",uid="uid-web",phase="Pending"}"#;
    wait_line(http, &format!("{pending} 1"), true).await;

    proxy.reset_all();
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Running")));
    wait_line(http, &format!("{pending} 0"), true).await;
    wait_until("second session", WAIT, POLL, || async {
        Ok((shared.stats.sessions.load(Ordering::Relaxed) >= 2).then_some(()))
    })
    .await
    .expect("reconnected");
    assert_eq!(
        shared.stats.snapshots_sent.load(Ordering::Relaxed),
        1,
        "resumed, no second snapshot"
    );

    stop_link(shutdown, running).await;
    rx.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn a_full_spool_waits_for_acks_instead_of_dropping() {
    let rx = RunningReceiver::start(ReceiverConfig::loopback())
        .await
        .expect("receiver starts");
    let (ingest, http) = (rx.ingest, rx.http);
    let shared = Arc::new(Shared::new(1));
    let config = LinkConfig {
        spool_max_bytes: 64 << 10,
        max_frame_bytes: 16 << 10,
        ..link_config("c10")
    };
    let (shutdown, running) = start_link(ingest, config, &shared);
    wait_until("connected", WAIT, POLL, || async {
        Ok((shared.stats.snapshots_sent.load(Ordering::Relaxed) == 1).then_some(()))
    })
    .await
    .expect("snapshot sent");

    // A burst of about 400 KiB of definitions through a 64 KiB spool.
    let names: Vec<String> = (0..2000).map(|i| format!("pod-{i:04}")).collect();
    for name in &names {
        shared.update(|s| s.apply(&pod_key(name), &phases(name, "Running")));
    }
    wait_until("every series delivered", WAIT, POLL, || async {
        let text = metrics_text(http).await?;
        let n = text
            .lines()
            .filter(|l| l.starts_with(r#"kube_pod_status_phase{cluster="c10""#))
            .count();
        Ok((n == 6000).then_some(()))
    })
    .await
    .expect("delivered");
    assert_eq!(shared.stats.dropped_spool_full.load(Ordering::Relaxed), 0);
    assert!(
        shared.stats.delta_bytes_sent.load(Ordering::Relaxed) > 4 * (64 << 10),
        "the burst was several spools long"
    );

    stop_link(shutdown, running).await;
    rx.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn batches_are_split_to_the_receivers_frame_limit() {
    // The receiver takes frames of 64 KiB at most (its smallest setting) and says so in its
    // Welcome; the sender's own limit is 1 MiB. A snapshot and a burst of about 400 KiB each
    // must fit.
    let rx = RunningReceiver::start(ReceiverConfig {
        max_frame_bytes: kube_relay_receiver::config::MIN_MAX_FRAME_BYTES,
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver starts");
    let (ingest, http) = (rx.ingest, rx.http);
    let shared = Arc::new(Shared::new(1));
    let names: Vec<String> = (0..4000).map(|i| format!("pod-{i:04}")).collect();
    for name in &names[..2000] {
        shared.update(|s| s.apply(&pod_key(name), &phases(name, "Running")));
    }
    let (shutdown, running) = start_link(ingest, link_config("c12"), &shared);
    wait_line(
        http,
        r#"kube_pod_status_phase{cluster="c12",namespace="default",pod="pod-1999""#,
        true,
    )
    .await;
    for name in &names[2000..] {
        shared.update(|s| s.apply(&pod_key(name), &phases(name, "Running")));
    }
    wait_until("every series delivered", WAIT, POLL, || async {
        let text = metrics_text(http).await?;
        let n = text
            .lines()
            .filter(|l| l.starts_with(r#"kube_pod_status_phase{cluster="c12""#))
            .count();
        Ok((n == 12_000).then_some(()))
    })
    .await
    .expect("delivered");
    assert_eq!(
        shared.stats.sessions.load(Ordering::Relaxed),
        1,
        "one session: no frame was refused"
    );
    let text = rx.metrics().await.expect("scrape");
    assert!(
        !text.contains(r#"relay_receiver_decode_errors_total{kind="frame_too_large"}"#)
            || value(
                &text,
                "relay_receiver_decode_errors_total",
                &[("kind", "frame_too_large")]
            ) == Some(0.0),
        "{text}"
    );

    stop_link(shutdown, running).await;
    rx.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn a_session_the_receiver_acknowledged_resets_the_reconnect_backoff() {
    kube_relay_testkit::logs::capture("kube_relay_sender=info");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = peer_addr(&listener).to_string();
    let shared = Arc::new(Shared::new(1));
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Running")));
    let (shutdown, running) = start_link(peer_addr(&listener), link_config("c13"), &shared);
    // Three short sessions, each acknowledged, each ended by the receiver going away (a
    // restart): without the reset the waits would double, 0.8 s, 1.6 s, 3.2 s ceilings.
    for _ in 0..3 {
        let (mut conn, hello) = accept(&listener).await;
        welcome(&mut conn, Resume::Snapshot, 60_000).await;
        let (_, last) = receive_snapshot(&mut conn).await;
        ack(&mut conn, hello.epoch, last).await;
        wait_until("the ack is seen", WAIT, POLL, || async {
            Ok((shared.stats.acked_seq.load(Ordering::Relaxed) >= last).then_some(()))
        })
        .await
        .expect("acked");
        drop(conn);
    }
    let (mut fourth, _) = accept(&listener).await;
    welcome(&mut fourth, Resume::Snapshot, 60_000).await;
    let delays: Vec<u64> = kube_relay_testkit::logs::logged()
        .lines()
        .filter(|l| l.contains(&format!("target=\"{target}\"")))
        .filter_map(|l| {
            l.split("retry_in_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(delays.len(), 3, "one retry after each session: {delays:?}");
    let first = kube_relay_sender::backoff::INITIAL.as_millis() as u64;
    assert!(
        delays.iter().all(|d| *d <= first),
        "each wait is the first one again, at most {first} ms: {delays:?}"
    );
    stop_link(shutdown, running).await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_counted_and_retried_until_fixed() {
    let rx = RunningReceiver::start(ReceiverConfig {
        token: Some("right".to_owned()),
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver starts");
    let shared = Arc::new(Shared::new(1));
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Running")));
    let config = LinkConfig {
        token: Some("wrong".to_owned()),
        ..link_config("c4")
    };
    let (shutdown, running) = start_link(rx.ingest, config, &shared);
    // Refused, counted and retried (the operator may fix the receiver's token).
    wait_until("two refusals", WAIT, POLL, || async {
        Ok((shared.stats.connect_errors("unauthorized") >= 2).then_some(()))
    })
    .await
    .expect("retried");
    assert!(!running.is_finished(), "a refused token is not fatal");
    assert_eq!(shared.stats.sessions.load(Ordering::Relaxed), 0);
    let text = rx.metrics().await.expect("scrape");
    assert!(
        value(
            &text,
            "relay_receiver_auth_failures_total",
            &[("kind", "wrong_token")]
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );

    stop_link(shutdown, running).await;
    rx.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn an_unsupported_protocol_version_is_fatal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (_shutdown, running) = start_link(
        peer_addr(&listener),
        link_config("c11"),
        &Arc::new(Shared::new(1)),
    );
    let (mut conn, _) = accept(&listener).await;
    conn.send(ReceiverMessage::Reject(Reject {
        reason: RejectReason::UnsupportedVersion {
            supported: vec![PROTOCOL_VERSION + 1],
        },
        message: "speak v2".to_owned(),
    }))
    .await
    .expect("reject");
    let err = tokio::time::timeout(WAIT, running)
        .await
        .expect("gives up at once")
        .expect("join")
        .expect_err("fatal");
    assert!(
        matches!(
            &err,
            Error::Rejected {
                reason: RejectReason::UnsupportedVersion { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_fatal());
}

// --- against a scripted peer (support's) -------------------------------------------------

#[tokio::test]
async fn spool_overflow_counts_dropped_samples_exactly_and_forces_a_snapshot() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shared = Arc::new(Shared::new(1));
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Pending")));
    let config = LinkConfig {
        spool_max_bytes: 200,
        ack_patience: Duration::from_millis(1),
        ..link_config("c5")
    };
    let (shutdown, running) = start_link(peer_addr(&listener), config, &shared);

    let (mut conn, hello) = accept(&listener).await;
    assert_eq!(hello.resume_from, None, "nothing to replay yet");
    welcome(&mut conn, Resume::Snapshot, 60_000).await;
    let (_, snapshot_seq) = receive_snapshot(&mut conn).await;
    ack(&mut conn, hello.epoch, snapshot_seq).await;

    // Many delta batches, never acknowledged: the 200-byte spool must drop the oldest.
    let mut received = Vec::new();
    for i in 0..40 {
        let phase = if i % 2 == 0 { "Running" } else { "Pending" };
        shared.update(|s| s.apply(&pod_key("web"), &phases("web", phase)));
        let batch = next_batch(&mut conn).await;
        received.push((batch.seq, batch.changed_samples() as u64));
    }
    let sent: u64 = received.iter().map(|(_, n)| n).sum();
    kept_or_dropped(&shared, sent);

    // The link dies; the receiver only has the snapshot. The oldest batches are gone from
    // the spool, so the sender must send a snapshot again.
    drop(conn);
    let (mut conn, hello) = accept(&listener).await;
    let oldest = hello.resume_from.expect("something to replay");
    assert!(
        oldest > snapshot_seq + 1,
        "the oldest batches were dropped: {oldest}"
    );
    welcome(
        &mut conn,
        Resume::After {
            acked: snapshot_seq,
        },
        60_000,
    )
    .await;
    receive_snapshot(&mut conn).await;

    shutdown.cancel();
    loop {
        match next(&mut conn).await {
            SenderMessage::Goodbye(_) => break,
            SenderMessage::Batch(_) | SenderMessage::Heartbeat(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    running.await.expect("join").expect("clean shutdown");
}

#[tokio::test]
async fn unacknowledged_batches_are_replayed_after_a_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shared = Arc::new(Shared::new(1));
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Pending")));
    let (shutdown, running) = start_link(peer_addr(&listener), link_config("c6"), &shared);

    let (mut conn, hello) = accept(&listener).await;
    welcome(&mut conn, Resume::Snapshot, 60_000).await;
    let (_, snapshot_seq) = receive_snapshot(&mut conn).await;
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Running")));
    let first = next_batch(&mut conn).await;
    ack(&mut conn, hello.epoch, first.seq).await;
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Failed")));
    let second = next_batch(&mut conn).await;
    assert_eq!(second.seq, first.seq + 1);
    assert!(first.seq > snapshot_seq);
    // Wait until the ack is processed (the spool holds only the second batch).
    wait_until("ack applied", WAIT, POLL, || async {
        Ok((shared.stats.acked_seq.load(Ordering::Relaxed) == first.seq).then_some(()))
    })
    .await
    .expect("acked");
    // The cut comes a little later than the change (stamps are in milliseconds).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut_at = support::now_ms();
    drop(conn);

    let (mut conn, hello) = accept(&listener).await;
    assert_eq!(hello.resume_from, Some(second.seq));
    welcome(&mut conn, Resume::After { acked: first.seq }, 60_000).await;
    let replayed = next_batch(&mut conn).await;
    assert_eq!(replayed, second, "the unacknowledged batch, unchanged");
    assert!(
        replayed.observed_at_ms < cut_at,
        "replayed with the time of its change, {} < {cut_at}",
        replayed.observed_at_ms
    );

    stop_link(shutdown, running).await;
}

#[tokio::test]
async fn a_silent_receiver_is_a_dead_link_and_idle_senders_send_heartbeats() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shared = Arc::new(Shared::new(1));
    let (shutdown, running) = start_link(peer_addr(&listener), link_config("c7"), &shared);

    let (mut conn, _) = accept(&listener).await;
    welcome(&mut conn, Resume::Snapshot, 100).await;
    receive_snapshot(&mut conn).await;
    // Idle: heartbeats flow; we never answer.
    assert!(matches!(next(&mut conn).await, SenderMessage::Heartbeat(_)));
    // Three silent intervals later the sender gives up on this link and comes back.
    let (_conn2, hello) = accept(&listener).await;
    assert_eq!(hello.cluster, "c7");
    let _ = conn.next().await; // the old link is closed (EOF or reset)

    stop_link(shutdown, running).await;
}

#[tokio::test]
async fn a_cluster_in_use_rejection_backs_off_and_retries() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shared = Arc::new(Shared::new(1));
    let (shutdown, running) = start_link(peer_addr(&listener), link_config("c8"), &shared);

    let (mut conn, _) = accept(&listener).await;
    conn.send(ReceiverMessage::Reject(Reject {
        reason: RejectReason::ClusterInUse,
        message: "another sender holds c8".to_owned(),
    }))
    .await
    .expect("reject");
    drop(conn);
    let (mut conn, _) = accept(&listener).await;
    welcome(&mut conn, Resume::Snapshot, 60_000).await;
    receive_snapshot(&mut conn).await;
    assert_eq!(
        shared.stats.reconnects.load(Ordering::Relaxed),
        0,
        "first session"
    );

    stop_link(shutdown, running).await;
}

#[tokio::test]
async fn shutdown_flushes_pending_changes_then_says_goodbye() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shared = Arc::new(Shared::new(1));
    let config = LinkConfig {
        flush_interval: Duration::from_secs(3600),
        ..link_config("c9")
    };
    let (shutdown, running) = start_link(peer_addr(&listener), config, &shared);
    let (mut conn, _) = accept(&listener).await;
    welcome(&mut conn, Resume::Snapshot, 60_000).await;
    receive_snapshot(&mut conn).await;

    // A change waits for an hour-long flush interval; shutdown must send it anyway.
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Running")));
    wait_until("change pending", WAIT, POLL, || async {
        Ok((shared.store().pending() > 0).then_some(()))
    })
    .await
    .expect("pending");
    shutdown.cancel();
    let batch = next_batch(&mut conn).await;
    assert_eq!(batch.series.len(), 3);
    assert!(matches!(next(&mut conn).await, SenderMessage::Goodbye(_)));
    running.await.expect("join").expect("clean shutdown");
}

#[tokio::test]
async fn an_ack_of_a_batch_never_sent_is_ignored() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shared = Arc::new(Shared::new(1));
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Pending")));
    let (shutdown, running) = start_link(peer_addr(&listener), link_config("c9"), &shared);

    let (mut conn, hello) = accept(&listener).await;
    welcome(&mut conn, Resume::Snapshot, 60_000).await;
    let (_, snapshot_seq) = receive_snapshot(&mut conn).await;
    ack(&mut conn, hello.epoch, snapshot_seq).await;
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Running")));
    let delta = next_batch(&mut conn).await;
    // A broken (or hostile) receiver acknowledges the end of time, then the link is cut: the
    // link reads the ack before the end of the stream.
    ack(&mut conn, hello.epoch, u64::MAX).await;
    drop(conn);

    let (mut conn, hello) = accept(&listener).await;
    assert_eq!(
        hello.resume_from,
        Some(delta.seq),
        "the unacknowledged delta is still spooled"
    );
    assert_eq!(shared.stats.acked_seq.load(Ordering::Relaxed), snapshot_seq);
    welcome(
        &mut conn,
        Resume::After {
            acked: snapshot_seq,
        },
        60_000,
    )
    .await;
    assert_eq!(next_batch(&mut conn).await, delta, "replayed, no snapshot");

    stop_link(shutdown, running).await;
}
