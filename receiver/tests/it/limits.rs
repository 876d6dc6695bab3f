//! Limits and bad input on real sockets: garbage and oversized frames close only the
//! offending connection (with a logged reason), idle and handshake timeouts, the connection
//! cap, the cluster cap, the series cap, and TTL expiry under a paused clock.

use crate::common;

use std::time::Duration;

use common::{
    Running, TestSender, capture_logs, delta, hello, logged, sample, small_snapshot, snapshot_of,
    wait_closed,
};
use kube_relay_proto::RejectReason;
use kube_relay_receiver::ReceiverConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn garbage_and_a_1_gib_length_prefix_close_only_their_connection_with_a_logged_reason() {
    capture_logs();
    let rx = Running::loopback().await.expect("receiver");
    let mut good = TestSender::welcomed(rx.ingest, hello("prod", "host-a"))
        .await
        .expect("welcome");
    good.batch(small_snapshot(1)).await.expect("send");
    good.ack_of(1).await.expect("ack");

    // Garbage: a small length prefix followed by bytes that are no message.
    let mut garbage = TcpStream::connect(rx.ingest).await.expect("connect");
    garbage
        .write_all(&[0, 0, 0, 8, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8])
        .await
        .expect("write");
    wait_closed(&mut garbage).await.expect("closed");

    // A length prefix announcing 1 GiB, sent after a valid handshake.
    let mut big = TestSender::welcomed(rx.ingest, hello("big", "host-b"))
        .await
        .expect("welcome");
    let mut oversized = TcpStream::connect(rx.ingest).await.expect("connect");
    oversized
        .write_all(&[0x40, 0, 0, 0, 1, 2, 3])
        .await
        .expect("write");
    wait_closed(&mut oversized).await.expect("closed");
    big.send_raw(&[0x40, 0, 0, 0]).await.expect("write");
    big.closed()
        .await
        .expect("oversized frame closes the session");
    // The receiver said why and now waits for the sender to leave (see farewell).
    drop(big);

    // The well-behaved sender kept streaming throughout.
    for seq in 2..=4 {
        good.batch(delta(seq, &[(1, seq as f64)]))
            .await
            .expect("send");
    }
    assert_eq!(good.ack_of(4).await.expect("ack"), 4);
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(
        sample(
            &text,
            r#"kube_pod_container_status_restarts_total{cluster="prod",namespace="default",pod="web-1",container="app"}"#
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"relay_receiver_decode_errors_total{kind="decode"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"relay_receiver_decode_errors_total{kind="frame_too_large"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        text.contains("relay_cluster_up{cluster=\"big\"} 0\n"),
        "{text}"
    );
    let log = kube_relay_testkit::wait_until(
        "the close logged",
        common::WAIT,
        Duration::from_millis(20),
        || async {
            let log = logged();
            Ok(log.contains("closed sender connection").then_some(log))
        },
    )
    .await
    .expect("logged");
    assert!(
        log.contains("closed sender connection")
            && log.contains("kind=\"frame_too_large\"")
            && log.contains("exceeds the limit of 4096 bytes")
            && log.contains("1073741824 bytes exceeds the limit of 1048576 bytes"),
        "the reasons are logged:\n{log}"
    );
    assert!(log.contains("kind=\"decode\""), "{log}");
}

#[tokio::test]
async fn a_silent_sender_is_closed_after_three_heartbeat_intervals_and_heartbeats_keep_it() {
    let config = ReceiverConfig {
        heartbeat_interval: Duration::from_millis(200),
        ..ReceiverConfig::loopback()
    };
    let rx = Running::start(config).await.expect("receiver");
    let mut alive = TestSender::welcomed(rx.ingest, hello("alive", "a"))
        .await
        .expect("welcome");
    let mut silent = TestSender::welcomed(rx.ingest, hello("silent", "s"))
        .await
        .expect("welcome");
    assert_eq!(silent.welcome.heartbeat_interval_ms, 200);
    let beating = tokio::spawn(async move {
        for i in 0..25 {
            alive.heartbeat(i).await.expect("heartbeat");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        alive
    });
    silent.closed().await.expect("silent sender closed");
    let mut alive = beating.await.expect("task");
    alive.heartbeat(99).await.expect("still open");
    let text = rx
        .metrics_until("silent down", |t| {
            t.contains("relay_cluster_up{cluster=\"silent\"} 0\n")
        })
        .await
        .expect("silent is down");
    assert!(
        text.contains("relay_cluster_up{cluster=\"alive\"} 1\n"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "relay_receiver_idle_timeouts_total"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_connection_without_hello_is_closed_after_the_handshake_timeout() {
    let config = ReceiverConfig {
        handshake_timeout: Duration::from_millis(100),
        ..ReceiverConfig::loopback()
    };
    let rx = Running::start(config).await.expect("receiver");
    let mut mute = TcpStream::connect(rx.ingest).await.expect("connect");
    wait_closed(&mut mute).await.expect("closed");
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(
        sample(
            &text,
            r#"relay_receiver_handshakes_rejected_total{reason="handshake_timeout"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn connections_past_the_cap_are_answered_busy() {
    let config = ReceiverConfig {
        max_connections: 2,
        ..ReceiverConfig::loopback()
    };
    let rx = Running::start(config).await.expect("receiver");
    let _a = TestSender::welcomed(rx.ingest, hello("a", "a"))
        .await
        .expect("a");
    let _b = TestSender::welcomed(rx.ingest, hello("b", "b"))
        .await
        .expect("b");
    let reject = TestSender::connect(rx.ingest, hello("c", "c"))
        .await
        .expect("io")
        .expect_err("busy");
    assert_eq!(reject.reason, RejectReason::Busy);
    drop(_a);
    // Once a slot frees up, a new sender gets in.
    kube_relay_testkit::wait_until(
        "a free slot",
        common::WAIT,
        Duration::from_millis(20),
        || async { Ok(TestSender::connect(rx.ingest, hello("c", "c")).await?.ok()) },
    )
    .await
    .expect("admitted after a slot freed");
}

#[tokio::test]
async fn senders_of_new_clusters_past_the_cluster_cap_are_answered_busy_with_the_reason() {
    let config = ReceiverConfig {
        max_clusters: 2,
        ttl: Duration::from_secs(300),
        ..ReceiverConfig::loopback()
    };
    let rx = Running::start(config).await.expect("receiver");
    let mut a = TestSender::welcomed(rx.ingest, hello("a", "a"))
        .await
        .expect("a");
    a.goodbye()
        .await
        .expect("a leaves; its cluster waits for the TTL");
    let _b = TestSender::welcomed(rx.ingest, hello("b", "b"))
        .await
        .expect("b");
    let reject = TestSender::connect(rx.ingest, hello("c", "c"))
        .await
        .expect("io")
        .expect_err("a third cluster");
    assert_eq!(reject.reason, RejectReason::Busy);
    assert!(
        reject
            .message
            .contains("limit of 2 clusters (--max-clusters"),
        "{}",
        reject.message
    );
    // A known cluster is no new one: a's sender comes back.
    TestSender::welcomed(rx.ingest, hello("a", "a"))
        .await
        .expect("a again");
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(
        sample(
            &text,
            r#"relay_receiver_handshakes_rejected_total{reason="busy"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn the_series_cap_drops_excess_definitions_and_counts_them() {
    let config = ReceiverConfig {
        max_series_per_cluster: 10,
        ..ReceiverConfig::loopback()
    };
    let rx = Running::start(config).await.expect("receiver");
    let mut sender = TestSender::welcomed(rx.ingest, hello("prod", "host-a"))
        .await
        .expect("welcome");
    sender.batch(snapshot_of(1, 25)).await.expect("send");
    sender.ack_of(1).await.expect("ack");
    // Updates of dropped series are ignored, not violations.
    sender
        .batch(delta(2, &[(3, 0.0), (20, 0.0)]))
        .await
        .expect("send");
    assert_eq!(sender.ack_of(2).await.expect("ack"), 2);
    let text = rx.metrics().await.expect("scrape");
    let relayed = text
        .lines()
        .filter(|l| l.starts_with("kube_pod_status_phase{"))
        .count();
    assert_eq!(relayed, 10, "{text}");
    assert_eq!(
        sample(&text, r#"relay_receiver_series{cluster="prod"}"#),
        Some(10.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"relay_receiver_series_dropped_total{cluster="prod"}"#
        ),
        Some(15.0)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_disconnected_cluster_is_down_at_once_and_expires_after_the_ttl() {
    let config = ReceiverConfig {
        ttl: Duration::from_secs(300),
        ..ReceiverConfig::loopback()
    };
    let rx = Running::start(config).await.expect("receiver");
    let mut gone = TestSender::welcomed(rx.ingest, hello("gone", "g"))
        .await
        .expect("welcome");
    gone.batch(small_snapshot(1)).await.expect("send");
    gone.ack_of(1).await.expect("ack");
    let mut stays = TestSender::welcomed(rx.ingest, hello("stays", "s"))
        .await
        .expect("welcome");
    stays.batch(small_snapshot(1)).await.expect("send");
    stays.ack_of(1).await.expect("ack");

    drop(gone); // the link drops without a goodbye
    let text = rx
        .metrics_until("gone down", |t| {
            t.contains("relay_cluster_up{cluster=\"gone\"} 0\n")
        })
        .await
        .expect("down at once");
    assert!(text.contains("cluster=\"gone\",namespace=\"default\",pod=\"web-1\""));

    // From here on, time moves only when the test says so.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(299)).await;
    settle().await;
    assert!(
        rx.store.clusters().iter().any(|c| c.cluster == "gone"),
        "kept until the TTL"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    settle().await;
    let clusters = rx.store.clusters();
    assert_eq!(clusters.len(), 1);
    assert_eq!(
        (clusters[0].cluster.as_str(), clusters[0].series),
        ("stays", 2)
    );
    let text = rx.metrics().await.expect("scrape");
    assert!(
        !text.contains("cluster=\"gone\""),
        "all of gone's series expired:\n{text}"
    );
    // "stays" was silent through the jump, so its link timed out at about 299 s; its own
    // TTL runs from then, so its series are still held (checked through the store, since a
    // paused clock may auto-advance while the test waits on a socket).
    drop(stays);
}

/// Lets spawned tasks run after a clock jump.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}
