//! Who gets in, on real sockets with certificates generated at test time: TLS with a token
//! streams data; a wrong or missing token, a client that trusts another CA, a client
//! certificate from another CA under mutual TLS, and plain TCP on a TLS port (told
//! `Reject{TlsRequired}`) are all refused before any data frame is decoded (decode counters
//! unchanged, no series appear) and counted; a TLS client on a plain port gets plain bytes
//! back, so its TLS stack fails on a malformed record rather than a reset; refusals are logged with the peer, once per peer and kind per window. A renewed
//! certificate is served without a restart; unusable files keep the previous one.

use crate::common;

use bytes::BytesMut;
use common::{
    BoxIo, Running, TestSender, TlsClient, capture_logs, connect_from, delta, hello,
    hello_with_token, logged, relayed_series, sample, small_snapshot, sum, wait_closed,
};
use kube_relay_proto::{
    MAX_HANDSHAKE_FRAME_BYTES, ReceiverMessage, RejectReason, SenderCodec, SenderMessage,
};
use kube_relay_receiver::ReceiverConfig;
use kube_relay_testkit::pki::{Pki, swap_in};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Encoder;

const TOKEN: &str = "correct horse battery staple";

fn tls_config(pki: &Pki, mutual: bool) -> ReceiverConfig {
    ReceiverConfig {
        token: Some(TOKEN.into()),
        tls: Some(common::tls_files(&pki.server)),
        tls_client_ca: mutual.then(|| pki.ca.clone()),
        ..ReceiverConfig::loopback()
    }
}

/// What must stay untouched when a peer is refused before authentication: no frame was
/// decoded past the `Hello`, no frame counted, no series relayed.
fn assert_nothing_decoded(text: &str) {
    assert_eq!(
        sum(text, "relay_receiver_decode_errors_total", &[]),
        0.0,
        "{text}"
    );
    assert_eq!(
        sum(text, "relay_receiver_frames_received_total", &[]),
        0.0,
        "{text}"
    );
    assert!(relayed_series(text).is_empty(), "{text}");
}

fn auth_failures(text: &str, kind: &str) -> Option<f64> {
    sample(
        text,
        &format!("relay_receiver_auth_failures_total{{kind=\"{kind}\"}}"),
    )
}

fn ingest_tls_reloads(text: &str, result: &str) -> Option<f64> {
    sample(
        text,
        &format!(r#"relay_receiver_tls_reloads_total{{port="ingest",result="{result}"}}"#),
    )
}

fn rejected(text: &str, reason: &str) -> Option<f64> {
    sample(
        text,
        &format!("relay_receiver_handshakes_rejected_total{{reason=\"{reason}\"}}"),
    )
}

/// Encodes a `Hello` plus whatever follows it into one buffer, as a pipelining peer would.
fn pipelined(hello: kube_relay_proto::Hello, then: &[&[u8]]) -> Vec<u8> {
    let mut codec = SenderCodec::new(kube_relay_proto::DEFAULT_MAX_FRAME_BYTES);
    let mut buf = BytesMut::new();
    codec
        .encode(SenderMessage::Hello(hello), &mut buf)
        .expect("encode hello");
    let mut out = buf.to_vec();
    for part in then {
        out.extend_from_slice(part);
    }
    out
}

fn batch_frame() -> Vec<u8> {
    let mut codec = SenderCodec::new(kube_relay_proto::DEFAULT_MAX_FRAME_BYTES);
    let mut buf = BytesMut::new();
    codec
        .encode(SenderMessage::Batch(small_snapshot(1)), &mut buf)
        .expect("encode batch");
    buf.to_vec()
}

/// Writes `bytes` and returns the receiver's first message (a `Reject` is expected) and
/// whether it then closed.
async fn send_and_read_reply(mut io: BoxIo, bytes: &[u8]) -> Option<ReceiverMessage> {
    io.write_all(bytes).await.expect("write");
    io.flush().await.expect("flush");
    let mut framed = tokio_util::codec::Framed::new(io, SenderCodec::new(1 << 20));
    let reply = tokio::time::timeout(common::WAIT, futures::StreamExt::next(&mut framed))
        .await
        .expect("a reply in time")
        .and_then(Result::ok);
    let mut io = framed.into_inner();
    wait_closed(&mut io).await.expect("closed after the reply");
    reply
}

/// A fresh test PKI and a receiver using its server certificate (`mutual`: and requiring
/// client certificates from its CA).
async fn tls_receiver(mutual: bool) -> (Pki, Running) {
    let pki = Pki::generate().expect("test PKI");
    let rx = Running::start(tls_config(&pki, mutual))
        .await
        .expect("receiver");
    (pki, rx)
}

#[tokio::test]
async fn tls_with_a_token_streams_data_to_metrics() {
    let (pki, rx) = tls_receiver(false).await;
    let client = TlsClient::new(&pki.ca, None);
    let mut sender = TestSender::welcomed_tls(
        rx.ingest,
        &client,
        hello_with_token("prod", "a", Some(TOKEN)),
    )
    .await
    .expect("welcome over TLS");
    sender.batch(small_snapshot(1)).await.expect("send");
    sender.batch(delta(2, &[(1, 7.0)])).await.expect("send");
    assert_eq!(sender.ack_of(2).await.expect("ack"), 2);
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(
        sample(
            &text,
            r#"kube_pod_container_status_restarts_total{cluster="prod",namespace="default",pod="web-1",container="app"}"#
        ),
        Some(7.0),
        "{text}"
    );
    assert_eq!(sum(&text, "relay_receiver_auth_failures_total", &[]), 0.0);
    assert_eq!(
        sum(&text, "relay_receiver_handshakes_rejected_total", &[]),
        0.0
    );
}

#[tokio::test]
async fn wrong_and_missing_tokens_are_refused_before_any_data_frame_is_decoded() {
    let (pki, rx) = tls_receiver(false).await;
    let client = TlsClient::new(&pki.ca, None);
    let garbage: &[u8] = &[0, 0, 0, 8, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8];
    let batch = batch_frame();

    // A wrong token, with a garbage frame and a valid snapshot pipelined behind the Hello:
    // had either been decoded, a decode error or a series would show.
    let wrong = pipelined(
        hello_with_token("prod", "a", Some("correct horse battery stapler")),
        &[garbage, &batch],
    );
    let reply = send_and_read_reply(client.connect(rx.ingest).await.expect("tls"), &wrong).await;
    assert!(
        matches!(&reply, Some(ReceiverMessage::Reject(r)) if r.reason == RejectReason::Unauthorized),
        "{reply:?}"
    );
    // No token at all, a valid snapshot behind it.
    let missing = pipelined(hello("prod", "a"), &[&batch]);
    let reply = send_and_read_reply(client.connect(rx.ingest).await.expect("tls"), &missing).await;
    assert!(
        matches!(&reply, Some(ReceiverMessage::Reject(r)) if r.reason == RejectReason::Unauthorized),
        "{reply:?}"
    );

    let text = rx.metrics().await.expect("scrape");
    assert_eq!(auth_failures(&text, "wrong_token"), Some(1.0), "{text}");
    assert_eq!(auth_failures(&text, "no_token"), Some(1.0), "{text}");
    assert_eq!(rejected(&text, "unauthorized"), Some(2.0), "{text}");
    assert_nothing_decoded(&text);
    assert!(
        !text.contains("relay_cluster_up{cluster=\"prod\"}"),
        "a refused sender never claims its cluster:\n{text}"
    );
}

#[tokio::test]
async fn a_client_that_trusts_another_ca_fails_its_handshake_and_is_counted() {
    let (pki, rx) = tls_receiver(false).await;
    let wrong_ca = TlsClient::new(&pki.other_ca, None);
    let err = wrong_ca
        .connect(rx.ingest)
        .await
        .err()
        .expect("the client refuses a server certificate from an unknown CA");
    assert!(
        format!("{err:#}").contains("UnknownIssuer"),
        "the client says why: {err:#}"
    );
    let text = rx
        .metrics_until("the refusal counted", |t| {
            auth_failures(t, "tls_alert").is_some()
        })
        .await
        .expect("counted");
    assert_eq!(auth_failures(&text, "tls_alert"), Some(1.0), "{text}");
    assert_eq!(rejected(&text, "tls"), Some(1.0), "{text}");
    assert_nothing_decoded(&text);
}

/// Under mutual TLS 1.3 the client finishes its side of the handshake before the server has
/// checked its certificate, so the refusal shows as an alert or a close on the first read.
async fn refused_under_mutual_tls(client: &TlsClient, rx: &Running) {
    let io = match client.connect(rx.ingest).await {
        Ok(io) => io,
        Err(_) => return, // refused during the handshake already
    };
    let bytes = pipelined(
        hello_with_token("prod", "a", Some(TOKEN)),
        &[&batch_frame()],
    );
    let reply = send_and_read_reply(io, &bytes).await;
    assert!(
        reply.is_none(),
        "no protocol reply without a valid client certificate: {reply:?}"
    );
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_certificate_from_another_ca_and_a_missing_one() {
    let (pki, rx) = tls_receiver(true).await;

    refused_under_mutual_tls(&TlsClient::new(&pki.ca, Some(&pki.rogue_client)), &rx).await;
    refused_under_mutual_tls(&TlsClient::new(&pki.ca, None), &rx).await;
    let text = rx
        .metrics_until("both refusals counted", |t| {
            auth_failures(t, "client_certificate") == Some(2.0)
        })
        .await
        .expect("counted");
    assert_eq!(rejected(&text, "tls"), Some(2.0), "{text}");
    assert_nothing_decoded(&text);

    // The right certificate (and token) gets in and streams.
    let good = TlsClient::new(&pki.ca, Some(&pki.client));
    let mut sender =
        TestSender::welcomed_tls(rx.ingest, &good, hello_with_token("prod", "a", Some(TOKEN)))
            .await
            .expect("welcome with a valid client certificate");
    sender.batch(small_snapshot(1)).await.expect("send");
    sender.ack_of(1).await.expect("ack");
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(relayed_series(&text).len(), 2, "{text}");
}

#[tokio::test]
async fn plain_tcp_on_a_tls_port_is_refused_before_decode() {
    let (pki, rx) = tls_receiver(false).await;
    let tcp = tokio::net::TcpStream::connect(rx.ingest)
        .await
        .expect("connect");
    let bytes = pipelined(
        hello_with_token("prod", "a", Some(TOKEN)),
        &[&batch_frame()],
    );
    // The plain sender is told why, in plain framing, and can name the flag it lacks.
    let reply = send_and_read_reply(Box::new(tcp), &bytes).await;
    match &reply {
        Some(ReceiverMessage::Reject(r)) => {
            assert_eq!(r.reason, RejectReason::TlsRequired, "{r:?}");
            assert!(r.message.contains("--tls-ca"), "{r:?}");
        }
        other => panic!("expected Reject{{TlsRequired}}, got {other:?}"),
    }
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(auth_failures(&text, "not_tls"), Some(1.0), "{text}");
    assert_eq!(rejected(&text, "tls"), Some(1.0), "{text}");
    assert_nothing_decoded(&text);

    // A TCP probe that connects and leaves is not a failure.
    drop(
        tokio::net::TcpStream::connect(rx.ingest)
            .await
            .expect("connect"),
    );
    let client = TlsClient::new(&pki.ca, None);
    let _sender =
        TestSender::welcomed_tls(rx.ingest, &client, hello_with_token("ok", "b", Some(TOKEN)))
            .await
            .expect("a TLS sender still gets in");
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(
        sum(&text, "relay_receiver_auth_failures_total", &[]),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn a_tls_client_on_a_plain_port_is_told_apart_from_garbage() {
    capture_logs();
    let pki = Pki::generate().expect("test PKI");
    let rx = Running::start(ReceiverConfig {
        token: Some(TOKEN.into()),
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver");
    let socket = connect_from([127, 0, 0, 9], rx.ingest)
        .await
        .expect("connect");
    let connector = tokio_rustls::TlsConnector::from(TlsClient::new(&pki.ca, None).config);
    let name = kube_relay_testkit::tls::loopback_name();
    let err = connector
        .connect(name, socket)
        .await
        .expect_err("no TLS on a plain port");
    // The receiver answered in plain framing: the client's TLS stack read a record that is
    // no TLS (what a TLS sender reports as a receiver without TLS), not a reset.
    let rustls_error = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(rustls_error, Some(rustls::Error::InvalidMessage(_))),
        "{err:?}"
    );
    let text = rx
        .metrics_until("counted", |t| {
            sample(
                t,
                r#"relay_receiver_decode_errors_total{kind="unexpected_tls"}"#,
            )
            .is_some()
        })
        .await
        .expect("counted");
    assert_eq!(
        sum(&text, "relay_receiver_decode_errors_total", &[]),
        1.0,
        "{text}"
    );
    let log = logged();
    let line = log
        .lines()
        .find(|l| l.contains("peer=127.0.0.9:"))
        .unwrap_or_else(|| panic!("no line for the peer:\n{log}"));
    assert!(line.contains("but this port is plain TCP"), "{line}");
}

#[tokio::test]
async fn only_a_hello_within_the_handshake_limit_is_decoded_before_authentication() {
    let rx = Running::start(ReceiverConfig {
        token: Some(TOKEN.into()),
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver");
    // A Hello with the right token, padded past the handshake frame limit: refused from its
    // length prefix alone.
    let mut big = hello_with_token("prod", "a", Some(TOKEN));
    big.agent = "x".repeat(MAX_HANDSHAKE_FRAME_BYTES);
    let mut stream = tokio::net::TcpStream::connect(rx.ingest)
        .await
        .expect("connect");
    stream.write_all(&pipelined(big, &[])).await.expect("write");
    wait_closed(&mut stream).await.expect("closed");
    // A data frame in place of the Hello: refused, nothing applied.
    let mut stream = tokio::net::TcpStream::connect(rx.ingest)
        .await
        .expect("connect");
    stream.write_all(&batch_frame()).await.expect("write");
    wait_closed(&mut stream).await.expect("closed");

    let text = rx.metrics().await.expect("scrape");
    assert_eq!(
        sample(
            &text,
            r#"relay_receiver_decode_errors_total{kind="frame_too_large"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"relay_receiver_decode_errors_total{kind="violation"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(relayed_series(&text).is_empty(), "{text}");
    assert_eq!(sum(&text, "relay_receiver_frames_received_total", &[]), 0.0);
}

#[tokio::test]
async fn refusals_are_counted_every_time_but_logged_once_per_peer_and_kind() {
    capture_logs();
    let rx = Running::start(ReceiverConfig {
        token: Some(TOKEN.into()),
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver");
    let attempts = 30;
    for _ in 0..attempts {
        let stream = connect_from([127, 0, 0, 7], rx.ingest)
            .await
            .expect("connect");
        let bytes = pipelined(hello_with_token("prod", "a", Some("guess")), &[]);
        let reply = send_and_read_reply(Box::new(stream), &bytes).await;
        assert!(
            matches!(reply, Some(ReceiverMessage::Reject(_))),
            "{reply:?}"
        );
    }
    let stream = connect_from([127, 0, 0, 8], rx.ingest)
        .await
        .expect("connect");
    let reply = send_and_read_reply(Box::new(stream), &pipelined(hello("prod", "a"), &[])).await;
    assert!(
        matches!(reply, Some(ReceiverMessage::Reject(_))),
        "{reply:?}"
    );

    let text = rx.metrics().await.expect("scrape");
    assert_eq!(
        auth_failures(&text, "wrong_token"),
        Some(f64::from(attempts))
    );
    assert_eq!(auth_failures(&text, "no_token"), Some(1.0));
    assert_eq!(
        rejected(&text, "unauthorized"),
        Some(f64::from(attempts + 1))
    );

    let log = logged();
    let lines = |peer: &str| {
        log.lines()
            .filter(|l| l.contains("refused connection") && l.contains(peer))
            .collect::<Vec<_>>()
    };
    let from_7 = lines("peer=127.0.0.7:");
    assert_eq!(from_7.len(), 1, "one line for 30 refusals:\n{log}");
    assert!(
        from_7[0].contains("kind=\"unauthorized\"") && from_7[0].contains("wrong token"),
        "{}",
        from_7[0]
    );
    let from_8 = lines("peer=127.0.0.8:");
    assert_eq!(from_8.len(), 1, "{log}");
    assert!(from_8[0].contains("requires a token"), "{}", from_8[0]);
    assert!(
        !log.contains("guess"),
        "the presented token is never logged:\n{log}"
    );
}

#[tokio::test]
async fn stalled_tls_handshakes_block_no_one_and_end_at_the_handshake_timeout() {
    let pki = Pki::generate().expect("test PKI");
    let rx = Running::start(ReceiverConfig {
        handshake_timeout: std::time::Duration::from_secs(2),
        ..tls_config(&pki, false)
    })
    .await
    .expect("receiver");
    // Fifty clients stall: half send nothing, half the first bytes of a TLS record.
    let mut stalled = Vec::new();
    for i in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(rx.ingest)
            .await
            .expect("connect");
        if i % 2 == 1 {
            stream
                .write_all(&[0x16, 0x03, 0x01, 0x00, 0x50, 0x01])
                .await
                .expect("write");
        }
        stalled.push(stream);
    }
    // A real sender is served meanwhile: the handshakes run in their own tasks.
    let client = TlsClient::new(&pki.ca, None);
    let mut sender = TestSender::welcomed_tls(
        rx.ingest,
        &client,
        hello_with_token("prod", "a", Some(TOKEN)),
    )
    .await
    .expect("welcome while others stall");
    sender.batch(small_snapshot(1)).await.expect("send");
    sender.ack_of(1).await.expect("ack");
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(
        rejected(&text, "handshake_timeout"),
        None,
        "served before any stalled handshake ended:\n{text}"
    );
    for stream in &mut stalled {
        wait_closed(stream).await.expect("closed at the timeout");
    }
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(rejected(&text, "handshake_timeout"), Some(50.0), "{text}");
    assert_eq!(
        sum(&text, "relay_receiver_auth_failures_total", &[]),
        0.0,
        "{text}"
    );
}

#[tokio::test]
async fn a_trickled_hello_does_not_extend_the_handshake_deadline() {
    let rx = Running::start(ReceiverConfig {
        handshake_timeout: std::time::Duration::from_millis(300),
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver");
    let bytes = pipelined(hello("prod", "a"), &[]);
    let mut stream = tokio::net::TcpStream::connect(rx.ingest)
        .await
        .expect("connect");
    let started = std::time::Instant::now();
    // One byte every 50 ms: the whole Hello would take far longer than the deadline.
    let mut closed = false;
    for b in &bytes[..bytes.len() - 1] {
        if stream.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 64];
        let pause = std::time::Duration::from_millis(50);
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(pause, stream.read(&mut probe)).await {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "the connection outlived a Hello trickled over {:?}",
        started.elapsed()
    );
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(rejected(&text, "handshake_timeout"), Some(1.0), "{text}");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    capture_logs();
    let pki = Pki::generate().expect("test PKI");
    let files = common::tls_files(&pki.server);
    let live = kube_relay_receiver::tls::TlsFiles {
        cert: pki.dir().join("live.crt"),
        key: pki.dir().join("live.key"),
    };
    swap_in(&files.cert, &live.cert);
    swap_in(&files.key, &live.key);
    let rx = Running::start(ReceiverConfig {
        token: Some(TOKEN.into()),
        tls: Some(live.clone()),
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver");
    let old_ca = TlsClient::new(&pki.ca, None);
    let new_ca = TlsClient::new(&pki.other_ca, None);
    assert!(
        old_ca.connect(rx.ingest).await.is_ok(),
        "the first certificate"
    );
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(
        ingest_tls_reloads(&text, "failed"),
        Some(0.0),
        "exported at 0 from the start, so an alert sees the first failure: {text}"
    );

    // Renewal: a certificate from another CA, so the client can tell which one it got.
    swap_in(&pki.other_server.key, &live.key);
    swap_in(&pki.other_server.cert, &live.cert);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while new_ca.connect(rx.ingest).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        old_ca.connect(rx.ingest).await.is_err(),
        "the old certificate is gone"
    );
    let mut sender = TestSender::welcomed_tls(
        rx.ingest,
        &new_ca,
        hello_with_token("prod", "a", Some(TOKEN)),
    )
    .await
    .expect("a session over the renewed certificate");
    sender.batch(small_snapshot(1)).await.expect("send");

    // A broken renewal (not a certificate) is refused, logged, and the last good one stays.
    std::fs::write(pki.dir().join("broken.crt"), "not a certificate\n").expect("write");
    swap_in(&pki.dir().join("broken.crt"), &live.cert);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !logged().contains("certificate files changed but cannot be used") {
        assert!(
            std::time::Instant::now() < deadline,
            "the broken files were never looked at: {}",
            logged()
        );
        assert!(
            new_ca.connect(rx.ingest).await.is_ok(),
            "the last good certificate stays in use"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(logged().contains("live.crt"), "the log names the file");
    assert!(new_ca.connect(rx.ingest).await.is_ok(), "still served");
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(ingest_tls_reloads(&text, "loaded"), Some(1.0), "{text}");
    assert_eq!(ingest_tls_reloads(&text, "failed"), Some(1.0), "{text}");
}

#[tokio::test]
async fn a_rotated_client_ca_is_used_without_a_restart_and_a_broken_one_is_not() {
    capture_logs();
    let pki = Pki::generate().expect("test PKI");
    let live_ca = pki.dir().join("live-client-ca.crt");
    swap_in(&pki.ca, &live_ca);
    let rx = Running::start(ReceiverConfig {
        token: Some(TOKEN.into()),
        tls: Some(common::tls_files(&pki.server)),
        tls_client_ca: Some(live_ca.clone()),
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver");
    // Both trust the receiver; they differ in who signed their client certificate.
    let signed_by_ca = TlsClient::new(&pki.ca, Some(&pki.client));
    let signed_by_other_ca = TlsClient::new(&pki.ca, Some(&pki.rogue_client));
    let welcomed = |client: &TlsClient| {
        let client = client.clone();
        let addr = rx.ingest;
        async move {
            TestSender::welcomed_tls(addr, &client, hello_with_token("prod", "a", Some(TOKEN)))
                .await
                .is_ok()
        }
    };
    assert!(welcomed(&signed_by_ca).await, "the first client CA admits");
    assert!(!welcomed(&signed_by_other_ca).await, "and only it");

    // Rotation to the CA that signed the other certificate.
    swap_in(&pki.other_ca, &live_ca);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !welcomed(&signed_by_other_ca).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated client CA was never used"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !welcomed(&signed_by_ca).await,
        "the old client CA no longer admits"
    );

    // A broken CA file is refused, logged, and the last good one stays.
    std::fs::write(pki.dir().join("broken-ca.crt"), "not a certificate\n").expect("write");
    swap_in(&pki.dir().join("broken-ca.crt"), &live_ca);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !logged().contains("client CA files changed but cannot be used") {
        assert!(
            std::time::Instant::now() < deadline,
            "the broken CA file was never looked at: {}",
            logged()
        );
        assert!(
            welcomed(&signed_by_other_ca).await,
            "the last good client CA stays in use"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        logged().contains("live-client-ca.crt"),
        "the log names the file"
    );
    assert!(!welcomed(&signed_by_ca).await, "still the rotated CA");
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(ingest_tls_reloads(&text, "loaded"), Some(1.0), "{text}");
    assert_eq!(ingest_tls_reloads(&text, "failed"), Some(1.0), "{text}");
}
