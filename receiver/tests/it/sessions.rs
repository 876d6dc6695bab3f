//! Sessions on real sockets: handshake rules, snapshot and deltas reaching `/metrics` with
//! the `cluster` label, acks, duplicates, resumption, several clusters at once.

use crate::common;

use common::{Running, TestSender, delta, hello, sample, small_snapshot};
use kube_relay_proto::{Batch, ReceiverMessage, RejectReason, Resume};
use kube_relay_receiver::ReceiverConfig;
use kube_relay_testkit::http;

const PHASE_WEB1: &str =
    r#"kube_pod_status_phase{cluster="prod",namespace="default",pod="web-1",phase="Running"}"#;
const RESTARTS_WEB1: &str = r#"kube_pod_container_status_restarts_total{cluster="prod",namespace="default",pod="web-1",container="app"}"#;

#[tokio::test]
async fn a_snapshot_then_deltas_then_removals_reach_metrics_labelled_with_the_cluster() {
    let rx = Running::loopback().await.expect("receiver");
    let mut sender = TestSender::welcomed(rx.ingest, hello("prod", "host-a"))
        .await
        .expect("welcome");
    assert_eq!(sender.welcome.resume, Resume::Snapshot);
    assert_eq!(sender.welcome.heartbeat_interval_ms, 5000);

    sender.batch(small_snapshot(1)).await.expect("send");
    assert_eq!(sender.ack_of(1).await.expect("ack"), 1);
    let r = http::get(rx.http, "/metrics", &[]).await.expect("scrape");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text().expect("utf-8");
    assert_eq!(sample(text, PHASE_WEB1), Some(1.0), "{text}");
    assert_eq!(sample(text, RESTARTS_WEB1), Some(2.0), "{text}");
    assert!(text.contains("# TYPE kube_pod_container_status_restarts_total counter\n"));
    assert!(
        text.contains("relay_cluster_up{cluster=\"prod\"} 1\n"),
        "{text}"
    );

    sender.batch(delta(2, &[(1, 3.0)])).await.expect("send");
    let removal = Batch {
        seq: 3,
        removals: vec![0],
        ..Batch::default()
    };
    sender.batch(removal).await.expect("send");
    assert_eq!(sender.ack_of(3).await.expect("ack"), 3);
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(sample(&text, RESTARTS_WEB1), Some(3.0), "{text}");
    assert_eq!(
        sample(&text, PHASE_WEB1),
        None,
        "removed series must vanish:\n{text}"
    );
    assert!(
        text.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with("kube_"))
            .all(|l| l.contains("{cluster=\"prod\",")),
        "every relayed series carries the cluster label first:\n{text}"
    );
    rx.stop().await.expect("stop");
}

#[tokio::test]
async fn duplicates_are_ignored_counted_and_acked_again() {
    let rx = Running::loopback().await.expect("receiver");
    let mut sender = TestSender::welcomed(rx.ingest, hello("prod", "host-a"))
        .await
        .expect("welcome");
    sender.batch(small_snapshot(1)).await.expect("send");
    sender.batch(delta(2, &[(1, 5.0)])).await.expect("send");
    assert_eq!(sender.ack_of(2).await.expect("ack"), 2);
    // A replay of seq 2 with another value must not be applied.
    sender.batch(delta(2, &[(1, 99.0)])).await.expect("send");
    assert_eq!(sender.ack_of(2).await.expect("re-ack"), 2);
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(sample(&text, RESTARTS_WEB1), Some(5.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"relay_receiver_duplicate_batches_total{cluster="prod"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn the_handshake_refuses_bad_versions_names_and_a_second_sender_for_a_live_cluster() {
    let rx = Running::loopback().await.expect("receiver");

    // A version-1 sender (batches without observation times) is refused, naming both.
    let mut old = hello("prod", "host-a");
    old.version = 1;
    let reject = TestSender::connect(rx.ingest, old)
        .await
        .expect("io")
        .expect_err("version");
    assert_eq!(
        reject.reason,
        RejectReason::UnsupportedVersion {
            supported: vec![kube_relay_proto::PROTOCOL_VERSION]
        }
    );
    assert!(
        reject.message.contains("version 1") && reject.message.contains("speaks 2"),
        "{}",
        reject.message
    );

    let reject = TestSender::connect(rx.ingest, hello("bad name!", "host-a"))
        .await
        .expect("io")
        .expect_err("name");
    assert_eq!(reject.reason, RejectReason::InvalidHello);
    assert!(reject.message.contains("bad name!"), "{}", reject.message);

    let mut first = TestSender::welcomed(rx.ingest, hello("prod", "host-a"))
        .await
        .expect("welcome");
    first.batch(small_snapshot(1)).await.expect("send");
    first.ack_of(1).await.expect("ack");
    let reject = TestSender::connect(rx.ingest, hello("prod", "host-b"))
        .await
        .expect("io")
        .expect_err("in use");
    assert_eq!(reject.reason, RejectReason::ClusterInUse);
    assert!(reject.message.contains("host-a"), "{}", reject.message);

    let text = rx.metrics().await.expect("scrape");
    for reason in ["unsupported_version", "invalid_hello", "cluster_in_use"] {
        let line = format!("relay_receiver_handshakes_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &line), Some(1.0), "{line} in\n{text}");
    }
    // The first sender was not disturbed.
    first.batch(delta(2, &[(1, 4.0)])).await.expect("send");
    assert_eq!(first.ack_of(2).await.expect("ack"), 2);
}

#[tokio::test]
async fn the_same_sender_reconnecting_replaces_its_old_connection_and_resumes() {
    let rx = Running::loopback().await.expect("receiver");
    let mut first = TestSender::welcomed(rx.ingest, hello("prod", "host-a"))
        .await
        .expect("welcome");
    first.batch(small_snapshot(1)).await.expect("send");
    first.batch(delta(2, &[(1, 7.0)])).await.expect("send");
    first.ack_of(2).await.expect("ack");

    let mut again = hello("prod", "host-a");
    again.resume_from = Some(3);
    let mut second = TestSender::welcomed(rx.ingest, again)
        .await
        .expect("same sender is welcome");
    assert_eq!(second.welcome.resume, Resume::After { acked: 2 });
    first.closed().await.expect("old connection closed");
    // A replay of what was already applied is ignored and acknowledged again.
    second.batch(delta(2, &[(1, 99.0)])).await.expect("send");
    assert_eq!(second.ack_of(2).await.expect("re-ack"), 2);
    second.batch(delta(3, &[(1, 8.0)])).await.expect("send");
    assert_eq!(second.ack_of(3).await.expect("ack"), 3);
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(sample(&text, RESTARTS_WEB1), Some(8.0), "{text}");

    // A restarted sender (new epoch) must send a snapshot; the old state stays visible
    // until that snapshot lands.
    second.goodbye().await.expect("goodbye");
    second.closed().await.expect("closed");
    let mut restarted = hello("prod", "host-a");
    restarted.epoch = 2;
    let mut third = TestSender::welcomed(rx.ingest, restarted)
        .await
        .expect("welcome");
    assert_eq!(third.welcome.resume, Resume::Snapshot);
    assert_eq!(
        sample(&rx.metrics().await.expect("scrape"), RESTARTS_WEB1),
        Some(8.0)
    );
    third.batch(small_snapshot(1)).await.expect("send");
    assert_eq!(third.ack_of(1).await.expect("ack"), 1);
    assert_eq!(
        sample(&rx.metrics().await.expect("scrape"), RESTARTS_WEB1),
        Some(2.0)
    );
}

#[tokio::test]
async fn a_token_is_required_when_configured() {
    let config = ReceiverConfig {
        token: Some("s3cret".into()),
        ..ReceiverConfig::loopback()
    };
    let rx = Running::start(config).await.expect("receiver");
    let reject = TestSender::connect(rx.ingest, hello("prod", "host-a"))
        .await
        .expect("io")
        .expect_err("no token");
    assert_eq!(reject.reason, RejectReason::Unauthorized);
    let mut wrong = hello("prod", "host-a");
    wrong.token = Some("guess".into());
    let reject = TestSender::connect(rx.ingest, wrong)
        .await
        .expect("io")
        .expect_err("wrong token");
    assert_eq!(reject.reason, RejectReason::Unauthorized);
    let mut right = hello("prod", "host-a");
    right.token = Some("s3cret".into());
    TestSender::welcomed(rx.ingest, right)
        .await
        .expect("right token");
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(
        sample(
            &text,
            r#"relay_receiver_handshakes_rejected_total{reason="unauthorized"}"#
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn three_senders_with_different_clusters_share_one_exposition() {
    let rx = Running::loopback().await.expect("receiver");
    let mut senders = Vec::new();
    for (i, cluster) in ["alpha", "bravo", "charlie"].into_iter().enumerate() {
        let mut s = TestSender::welcomed(rx.ingest, hello(cluster, &format!("host-{i}")))
            .await
            .expect("welcome");
        s.batch(small_snapshot(1)).await.expect("send");
        s.batch(delta(2, &[(1, i as f64 * 10.0)]))
            .await
            .expect("send");
        s.ack_of(2).await.expect("ack");
        senders.push(s);
    }
    let text = rx.metrics().await.expect("scrape");
    for (i, cluster) in ["alpha", "bravo", "charlie"].into_iter().enumerate() {
        let line = RESTARTS_WEB1.replace("prod", cluster);
        assert_eq!(
            sample(&text, &line),
            Some(i as f64 * 10.0),
            "{line}\n{text}"
        );
        let up = format!("relay_cluster_up{{cluster=\"{cluster}\"}}");
        assert_eq!(sample(&text, &up), Some(1.0));
    }
    assert_eq!(
        text.matches("# TYPE kube_pod_status_phase gauge\n").count(),
        1,
        "a family is exposed once for all clusters:\n{text}"
    );
    assert_eq!(sample(&text, "relay_receiver_connected_senders"), Some(3.0));

    // One leaves: its cluster is down at once, the others stay up.
    senders[1].goodbye().await.expect("goodbye");
    let text = rx
        .metrics_until("bravo down", |t| {
            t.contains("relay_cluster_up{cluster=\"bravo\"} 0\n")
        })
        .await
        .expect("bravo down");
    assert!(text.contains("relay_cluster_up{cluster=\"alpha\"} 1\n"));
    assert!(
        sample(&text, &RESTARTS_WEB1.replace("prod", "bravo")).is_some(),
        "series stay until the TTL"
    );
    assert_eq!(sample(&text, "relay_receiver_connected_senders"), Some(2.0));
}

#[tokio::test]
async fn heartbeats_are_echoed() {
    let rx = Running::loopback().await.expect("receiver");
    let mut sender = TestSender::welcomed(rx.ingest, hello("prod", "host-a"))
        .await
        .expect("welcome");
    sender.heartbeat(42).await.expect("send");
    match sender.recv().await.expect("recv") {
        Some(ReceiverMessage::Heartbeat(hb)) => assert_eq!(hb.sent_at_ms, 42),
        other => panic!("expected the heartbeat back, got {other:?}"),
    }
}

#[tokio::test]
async fn openmetrics_is_served_when_prometheus_asks_for_it() {
    let rx = Running::loopback().await.expect("receiver");
    let mut sender = TestSender::welcomed(rx.ingest, hello("prod", "host-a"))
        .await
        .expect("welcome");
    sender.batch(small_snapshot(1)).await.expect("send");
    sender.ack_of(1).await.expect("ack");
    let accept = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let r = http::get(rx.http, "/metrics", &[("Accept", accept)])
        .await
        .expect("scrape");
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = r.text().expect("utf-8");
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE kube_pod_container_status_restarts counter\n"));
    assert_eq!(sample(text, RESTARTS_WEB1), Some(2.0));
}

#[tokio::test]
async fn shutdown_acks_what_was_applied_closes_sessions_and_stops_listening() {
    let rx = Running::loopback().await.expect("receiver");
    let ingest = rx.ingest;
    let mut sender = TestSender::welcomed(ingest, hello("prod", "host-a"))
        .await
        .expect("welcome");
    sender.batch(small_snapshot(1)).await.expect("send");
    sender.ack_of(1).await.expect("ack");
    sender.batch(delta(2, &[(1, 5.0)])).await.expect("send");
    sender.batch(delta(3, &[(1, 6.0)])).await.expect("send");
    sender.heartbeat(1).await.expect("send"); // echoed only once 2 and 3 are applied
    // A batch with nothing behind it is acked at once, so acks may come before the echo.
    let mut acked = 1;
    loop {
        match sender.recv().await.expect("recv") {
            Some(ReceiverMessage::Ack(ack)) => acked = acked.max(ack.seq),
            Some(ReceiverMessage::Heartbeat(_)) => break,
            other => panic!("expected acks and the heartbeat echo, got {other:?}"),
        }
    }
    rx.stop().await.expect("stops within its bound");
    if acked < 3 {
        acked = sender.ack_of(3).await.expect("final ack");
    }
    assert_eq!(
        acked, 3,
        "everything applied is acked before the connection closes"
    );
    sender.closed().await.expect("session closed");
    assert!(
        tokio::net::TcpStream::connect(ingest).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn a_frame_over_the_limit_is_answered_with_the_limit_before_the_close() {
    let limit = kube_relay_receiver::config::MIN_MAX_FRAME_BYTES;
    let rx = Running::start(ReceiverConfig {
        max_frame_bytes: limit,
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver");
    let mut sender = TestSender::welcomed(rx.ingest, hello("big", "a"))
        .await
        .expect("welcome");
    assert_eq!(
        sender.welcome.max_frame_bytes as usize, limit,
        "told up front"
    );
    // A header claiming 1 MiB, then the first 256 KiB of its payload, still unread when the
    // receiver answers: the answer must not be lost to a reset.
    let mut bytes = (1u32 << 20).to_be_bytes().to_vec();
    bytes.extend(vec![0u8; 256 << 10]);
    sender.send_raw(&bytes).await.expect("send");
    match sender.recv().await.expect("an answer") {
        Some(ReceiverMessage::Reject(r)) => {
            assert_eq!(
                r.reason,
                RejectReason::FrameTooLarge {
                    limit: u32::try_from(limit).expect("small")
                }
            );
            assert!(
                r.message.contains("--max-frame-bytes") && r.message.contains(&limit.to_string()),
                "{r:?}"
            );
        }
        other => panic!("expected Reject{{FrameTooLarge}}, got {other:?}"),
    }
    sender.closed().await.expect("then closed");
    rx.stop().await.expect("stop");
}

#[tokio::test]
async fn a_protocol_violation_is_answered_with_what_was_broken() {
    let rx = Running::loopback().await.expect("receiver");
    let mut sender = TestSender::welcomed(rx.ingest, hello("prod", "host-a"))
        .await
        .expect("welcome");
    sender.batch(small_snapshot(1)).await.expect("send");
    assert_eq!(sender.ack_of(1).await.expect("ack"), 1);
    sender.batch(delta(2, &[(999, 1.0)])).await.expect("send");
    loop {
        match sender.recv().await.expect("an answer") {
            Some(ReceiverMessage::Ack(_) | ReceiverMessage::Heartbeat(_)) => {}
            Some(ReceiverMessage::Reject(r)) => {
                assert_eq!(r.reason, RejectReason::ProtocolViolation, "{r:?}");
                assert!(r.message.contains("unknown series id 999"), "{r:?}");
                break;
            }
            other => panic!("expected Reject{{ProtocolViolation}}, got {other:?}"),
        }
    }
    sender.closed().await.expect("then closed");
    rx.stop().await.expect("stop");
}
