//! The link over TLS against the real receiver, with certificates generated at test time:
//! TLS with a token streams series; a receiver whose certificate another CA signed (or that
//! is valid for another name) is refused, named in the error, counted and retried; mutual
//! TLS admits a client certificate from the receiver's CA only; a wrong token is refused,
//! counted and retried; leaving sends `close_notify`; unusable files are named at start-up;
//! a stalled TLS handshake ends at the connect timeout; a plain sender at a TLS receiver and a
//! TLS sender at a plain one are each told which side lacks TLS; the binary relays the simulated
//! cluster over TLS with a token file; a renewed CA and client certificate are used from the
//! next connection on, without a restart.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kube_relay_proto::{
    PROTOCOL_VERSION, ReceiverCodec, ReceiverMessage, Resume, SenderMessage, Welcome,
};
use kube_relay_receiver::{ReceiverConfig, TlsFiles};
use kube_relay_sender::Error;
use kube_relay_sender::config::Config;
use kube_relay_sender::link::{Link, LinkConfig};
use kube_relay_sender::shared::Shared;
use kube_relay_sender::tls::{LinkConnector, TlsConnector};
use kube_relay_sender::transport::Connector;
use kube_relay_sim::Scenario;
use kube_relay_testkit::pki::{CertKey, Pki, swap_in};
use kube_relay_testkit::process::ChildProcess;
use kube_relay_testkit::wait_until;
use tokio::net::TcpListener;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use support::{
    KubeSim, POLL, RunningReceiver, WAIT, metrics_text, phases, pod_key, stop_link, value,
};

const TOKEN: &str = "correct horse battery staple";

/// The receiver's view of a test certificate and key.
fn tls_files(pair: &CertKey) -> TlsFiles {
    TlsFiles {
        cert: pair.cert.clone(),
        key: pair.key.clone(),
    }
}

fn tls_receiver(pki: &Pki, mutual: bool) -> ReceiverConfig {
    ReceiverConfig {
        token: Some(TOKEN.to_owned()),
        tls: Some(tls_files(&pki.server)),
        tls_client_ca: mutual.then(|| pki.ca.clone()),
        ..ReceiverConfig::loopback()
    }
}

/// A test PKI and a receiver serving its server certificate (and requiring a client
/// certificate from its CA when `mutual`).
async fn start_tls_receiver(mutual: bool) -> (Pki, RunningReceiver) {
    let pki = Pki::generate().expect("test PKI");
    let rx = RunningReceiver::start(tls_receiver(&pki, mutual))
        .await
        .expect("receiver starts");
    (pki, rx)
}

fn connector(rx: &RunningReceiver, ca: &Path, identity: Option<&CertKey>) -> TlsConnector {
    TlsConnector::new(
        rx.ingest.to_string(),
        ca,
        identity.map(|f| (f.cert.as_path(), f.key.as_path())),
        None,
    )
    .expect("TLS connector")
}

fn link_config(cluster: &str, token: Option<&str>) -> LinkConfig {
    LinkConfig {
        flush_interval: Duration::from_millis(10),
        token: token.map(str::to_owned),
        ..LinkConfig::new(cluster, format!("{cluster}-sender"))
    }
}

/// A link from a store holding one pod's phases, running until the returned token fires.
fn start_link(
    cluster: &str,
    token: Option<&str>,
    connector: TlsConnector,
) -> (
    Arc<Shared>,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), Error>>,
) {
    let shared = Arc::new(Shared::new(1));
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Running")));
    let shutdown = CancellationToken::new();
    let link = Link::new(link_config(cluster, token), connector, Arc::clone(&shared));
    let task = tokio::spawn(link.run(shutdown.clone()));
    (shared, shutdown, task)
}

/// Starts a link for `cluster` through `connector` and requires that its attempts are
/// refused as `kind`, counted and retried, without a session; then stops it.
async fn refused_and_retried(
    cluster: &str,
    token: Option<&str>,
    connector: TlsConnector,
    kind: &str,
) {
    let (shared, shutdown, task) = start_link(cluster, token, connector);
    wait_connect_errors(&shared, kind, 2).await;
    assert!(
        !task.is_finished(),
        "{cluster}: a refusal is retried, not fatal"
    );
    assert_eq!(
        shared.stats.sessions.load(Ordering::Relaxed),
        0,
        "{cluster}"
    );
    stop_link(shutdown, task).await;
}

/// Waits until the sender has counted `n` failed attempts of `kind` (so it retried).
async fn wait_connect_errors(shared: &Arc<Shared>, kind: &str, n: u64) {
    wait_until(kind, WAIT, POLL, || async {
        Ok((shared.stats.connect_errors(kind) >= n).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

fn running_line(cluster: &str) -> String {
    format!(
        r#"kube_pod_status_phase{{cluster="{cluster}",namespace="default",pod="web",uid="uid-web",phase="Running"}} 1"#
    )
}

async fn wait_relayed(rx: &RunningReceiver, cluster: &str) {
    let line = running_line(cluster);
    let http = rx.http;
    wait_until("series relayed", WAIT, POLL, || {
        let line = line.clone();
        async move {
            Ok(metrics_text(http)
                .await?
                .lines()
                .any(|l| l == line)
                .then_some(()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// The receiver's `/metrics` once `ready` holds for it.
async fn metrics_when(rx: &RunningReceiver, ready: impl Fn(&str) -> bool) -> String {
    let (http, ready) = (rx.http, &ready);
    wait_until("receiver metrics", WAIT, POLL, || async move {
        let text = metrics_text(http).await?;
        Ok(ready(&text).then_some(text))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// `relay_cluster_up` of `cluster` in `text`, if the receiver has it.
fn cluster_up(text: &str, cluster: &str) -> Option<f64> {
    value(text, "relay_cluster_up", &[("cluster", cluster)])
}

fn auth_failures(text: &str, kind: &str) -> f64 {
    value(
        text,
        "relay_receiver_auth_failures_total",
        &[("kind", kind)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn tls_with_a_token_streams_series_to_the_receiver() {
    let (pki, rx) = start_tls_receiver(false).await;
    let (shared, shutdown, task) = start_link("tls-1", Some(TOKEN), connector(&rx, &pki.ca, None));
    wait_relayed(&rx, "tls-1").await;

    let text = rx.metrics().await.expect("scrape");
    assert_eq!(cluster_up(&text, "tls-1"), Some(1.0), "{text}");
    assert_eq!(auth_failures(&text, "wrong_token"), 0.0);
    assert_eq!(shared.stats.sessions.load(Ordering::Relaxed), 1);
    stop_link(shutdown, task).await;
    // Goodbye over TLS: the receiver marks the cluster down at once.
    let text = rx.metrics().await.expect("scrape");
    assert_eq!(cluster_up(&text, "tls-1"), Some(0.0), "{text}");
    rx.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn a_receiver_certificate_from_another_ca_is_refused_named_counted_and_retried() {
    let (pki, rx) = start_tls_receiver(false).await;

    // The error names the CA file and the server name.
    let wrong_ca = connector(&rx, &pki.other_ca, None);
    let err = wrong_ca.connect().await.expect_err("refused");
    let err = Error::Connect {
        target: rx.ingest.to_string(),
        source: err,
    };
    let text = err.to_string();
    assert!(
        text.contains("other-ca.crt")
            && text.contains("127.0.0.1")
            && text.contains("UnknownIssuer"),
        "{text}"
    );
    assert_eq!(err.kind(), "tls_certificate");
    assert!(!err.is_fatal(), "the operator may fix the receiver");

    // The link keeps retrying, counting each refusal, and never sends a Hello.
    refused_and_retried("tls-2", Some(TOKEN), wrong_ca, "tls_certificate").await;

    // A certificate valid for other names than the one checked is refused the same way.
    let wrong_name = TlsConnector::new(
        rx.ingest.to_string(),
        &pki.ca,
        None,
        Some("receiver.example"),
    )
    .expect("connector");
    let err = wrong_name.connect().await.expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("receiver.example") && text.contains("not valid for name"),
        "{text}"
    );
    assert_eq!(
        kube_relay_sender::tls_failure::failure_kind(&err),
        Some("tls_certificate")
    );

    // The receiver saw clients abort their handshakes; nothing was relayed.
    let text = metrics_when(&rx, |t| auth_failures(t, "tls_alert") >= 4.0).await;
    assert_eq!(cluster_up(&text, "tls-2"), None);
    rx.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn mutual_tls_admits_a_client_certificate_from_the_receivers_ca_only() {
    let (pki, rx) = start_tls_receiver(true).await;

    let (_, shutdown, task) = start_link(
        "mtls-ok",
        Some(TOKEN),
        connector(&rx, &pki.ca, Some(&pki.client)),
    );
    wait_relayed(&rx, "mtls-ok").await;
    stop_link(shutdown, task).await;

    for (cluster, identity) in [("mtls-none", None), ("mtls-rogue", Some(&pki.rogue_client))] {
        let connector = connector(&rx, &pki.ca, identity);
        refused_and_retried(cluster, Some(TOKEN), connector, "tls_refused").await;
    }
    let text = metrics_when(&rx, |t| auth_failures(t, "client_certificate") >= 4.0).await;
    assert_eq!(cluster_up(&text, "mtls-none"), None);
    assert_eq!(cluster_up(&text, "mtls-rogue"), None);
    rx.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn renewed_ca_and_client_certificate_files_are_used_from_the_next_connection() {
    let (pki, rx) = start_tls_receiver(true).await;
    // The sender starts with the wrong CA and a client certificate from another CA.
    let live_ca = pki.dir().join("live-ca.crt");
    let live = CertKey {
        cert: pki.dir().join("live-client.crt"),
        key: pki.dir().join("live-client.key"),
    };
    swap_in(&pki.other_ca, &live_ca);
    swap_in(&pki.rogue_client.cert, &live.cert);
    swap_in(&pki.rogue_client.key, &live.key);
    let renewing = connector(&rx, &live_ca, Some(&live));
    let err = renewing.connect().await.expect_err("the wrong CA");
    assert_eq!(
        kube_relay_sender::tls_failure::failure_kind(&err),
        Some("tls_certificate"),
        "{err}"
    );

    // Broken files are refused and the previous ones kept (still the wrong CA).
    std::fs::write(pki.dir().join("broken.crt"), "not a certificate\n").expect("write");
    swap_in(&pki.dir().join("broken.crt"), &live_ca);
    let err = renewing.connect().await.expect_err("still the wrong CA");
    assert_eq!(
        kube_relay_sender::tls_failure::failure_kind(&err),
        Some("tls_certificate"),
        "{err}"
    );

    // The operator fixes the files: the same connector, without a restart, gets in.
    swap_in(&pki.ca, &live_ca);
    swap_in(&pki.client.key, &live.key);
    swap_in(&pki.client.cert, &live.cert);
    let (_, shutdown, task) = start_link("renewed", Some(TOKEN), renewing);
    wait_relayed(&rx, "renewed").await;
    stop_link(shutdown, task).await;
    rx.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn a_plain_sender_at_a_tls_receiver_is_told_tls_is_required() {
    let (_pki, rx) = start_tls_receiver(false).await;
    let shared = Arc::new(Shared::new(1));
    shared.update(|s| s.apply(&pod_key("web"), &phases("web", "Running")));
    let shutdown = CancellationToken::new();
    let link = Link::new(
        link_config("plain-at-tls", Some(TOKEN)),
        kube_relay_sender::transport::TcpConnector::new(rx.ingest.to_string()),
        Arc::clone(&shared),
    );
    let task = tokio::spawn(link.run(shutdown.clone()));
    // The receiver's Reject was read: its reason is the label, not a reset.
    wait_connect_errors(&shared, "tls_required", 2).await;
    assert!(!task.is_finished(), "retried: the receiver may drop TLS");
    stop_link(shutdown, task).await;
    rx.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn a_tls_sender_at_a_plain_receiver_is_told_the_receiver_has_no_tls() {
    let pki = Pki::generate().expect("test PKI");
    let rx = RunningReceiver::start(ReceiverConfig {
        token: Some(TOKEN.to_owned()),
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver starts");
    let (shared, shutdown, task) =
        start_link("tls-at-plain", Some(TOKEN), connector(&rx, &pki.ca, None));
    wait_connect_errors(&shared, "tls_plain_receiver", 2).await;
    stop_link(shutdown, task).await;
    rx.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn a_wrong_token_over_tls_is_refused_counted_and_retried() {
    let (pki, rx) = start_tls_receiver(false).await;
    let wrong_token = Some("correct horse battery stapler");
    let connector = connector(&rx, &pki.ca, None);
    refused_and_retried("tls-token", wrong_token, connector, "unauthorized").await;
    let text = metrics_when(&rx, |t| auth_failures(t, "wrong_token") >= 2.0).await;
    assert_eq!(cluster_up(&text, "tls-token"), None);
    rx.stop().await.expect("receiver stops");
}

type PeerConn = Framed<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, ReceiverCodec>;

async fn next(conn: &mut PeerConn) -> Option<Result<SenderMessage, kube_relay_proto::Error>> {
    tokio::time::timeout(WAIT, conn.next())
        .await
        .expect("a message in time")
}

#[tokio::test]
async fn goodbye_ends_the_tls_session_with_close_notify() {
    let pki = Pki::generate().expect("test PKI");
    let server =
        kube_relay_receiver::tls::server_config("test", &tls_files(&pki.server), None, &[], None)
            .expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = listener.local_addr().expect("addr").to_string();
    let connector = TlsConnector::new(target, &pki.ca, None, None).expect("connector");
    let (_, shutdown, task) = start_link("tls-bye", None, connector);

    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("the sender connects")
        .expect("accept");
    let tls = tokio_rustls::TlsAcceptor::from(server)
        .accept(tcp)
        .await
        .expect("TLS handshake");
    let mut conn = Framed::new(tls, ReceiverCodec::new(1 << 20));
    assert!(matches!(
        next(&mut conn).await,
        Some(Ok(SenderMessage::Hello(_)))
    ));
    conn.send(ReceiverMessage::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        resume: Resume::Snapshot,
        heartbeat_interval_ms: 60_000,
        max_frame_bytes: kube_relay_proto::DEFAULT_MAX_FRAME_BYTES as u32,
    }))
    .await
    .expect("welcome");
    loop {
        match next(&mut conn).await {
            Some(Ok(SenderMessage::Batch(b))) if b.snapshot.is_some_and(|p| p.last) => break,
            Some(Ok(SenderMessage::Batch(_) | SenderMessage::Heartbeat(_))) => {}
            other => panic!("expected the snapshot, got {other:?}"),
        }
    }
    shutdown.cancel();
    assert!(matches!(
        next(&mut conn).await,
        Some(Ok(SenderMessage::Goodbye(_)))
    ));
    // A clean end of the TLS stream: without close_notify rustls reports an unexpected EOF.
    match next(&mut conn).await {
        None => {}
        other => panic!("expected close_notify and EOF, got {other:?}"),
    }
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops")
        .expect("join")
        .expect("clean exit");
}

#[tokio::test]
async fn unusable_tls_files_are_named_at_start_up() {
    let pki = Pki::generate().expect("test PKI");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |ca: &Path, cert: Option<&Path>, key: Option<&Path>| Config {
        tls_ca: Some(ca.to_owned()),
        tls_client_cert: cert.map(Path::to_owned),
        tls_client_key: key.map(Path::to_owned),
        ..Config::new("127.0.0.1:9000")
    };
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN NONSENSE-----\n").expect("write");
    let missing = dir.path().join("missing.pem");
    for (config, needle) in [
        (config(&missing, None, None), "missing.pem"),
        (config(&garbage, None, None), "garbage.pem"),
        (
            config(&pki.ca, Some(&pki.client.cert), Some(&garbage)),
            "garbage.pem",
        ),
        // A key that does not belong to the certificate.
        (
            config(&pki.ca, Some(&pki.client.cert), Some(&pki.rogue_client.key)),
            "rogue.key",
        ),
    ] {
        let err = TlsConnector::from_config(&config).expect_err("refused");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
        assert!(err.is_fatal(), "{err}");
    }
    assert!(
        TlsConnector::from_config(&Config::new("127.0.0.1:9000"))
            .expect("plain")
            .is_none()
    );
}

#[tokio::test]
async fn each_receiver_of_several_is_checked_against_its_own_name_unless_one_is_given() {
    let pki = Pki::generate().expect("test PKI");
    let config = Config {
        tls_ca: Some(pki.ca.clone()),
        targets: vec!["a.example:9000".to_owned(), "10.0.0.2:9000".to_owned()],
        ..Config::new("")
    };
    let names = |config: &Config| -> Vec<(String, String)> {
        kube_relay_sender::tls::connectors(config)
            .expect("connectors")
            .into_iter()
            .map(|c| match c {
                LinkConnector::Tls(tls) => (tls.target().to_owned(), tls.server_name()),
                LinkConnector::Plain(_) => panic!("TLS expected"),
            })
            .collect()
    };
    assert_eq!(
        names(&config),
        [
            ("a.example:9000".to_owned(), "a.example".to_owned()),
            ("10.0.0.2:9000".to_owned(), "10.0.0.2".to_owned())
        ]
    );
    let shared_name = Config {
        tls_server_name: Some("relay.example".to_owned()),
        ..config
    };
    assert!(
        names(&shared_name)
            .iter()
            .all(|(_, name)| name == "relay.example")
    );
}

/// The `sender` binary relaying the simulated cluster of `sim` to `target` over TLS, trusting
/// the CA in file `ca`, with `extra` arguments and environment `env`.
fn spawn_simulating_sender(
    sim: &KubeSim,
    target: &str,
    ca: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> ChildProcess {
    let mut args = vec![
        "--kubeconfig",
        sim.kubeconfig(),
        "--target",
        target,
        "--tls-ca",
        ca,
    ];
    args.extend_from_slice(extra);
    ChildProcess::spawn("sender", args, env).expect("sender starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_relays_over_tls_with_a_token_file_and_names_a_bad_ca_file() {
    let (pki, rx) = start_tls_receiver(false).await;
    let token_file = pki.dir().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let target = rx.ingest.to_string();
    let (ca, token_file) = (
        pki.ca.to_str().expect("utf8"),
        token_file.to_str().expect("utf8"),
    );
    let sim = KubeSim::start().await;
    let mut sender = spawn_simulating_sender(
        &sim,
        &target,
        ca,
        &["--token-file", token_file],
        &[("RUST_LOG", "info")],
    );
    let cluster = ("cluster", "kube-sim");
    let http = rx.http;
    wait_until("the simulated cluster over TLS", WAIT, POLL, || async {
        let text = metrics_text(http).await?;
        let up = value(&text, "relay_cluster_up", &[cluster]) == Some(1.0);
        let pods = value(&text, "kube_pod_info", &[cluster]).is_some();
        Ok((up && pods).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sender.log()));
    let status = sender.terminate().await.expect("terminate");
    assert!(status.success(), "{status:?}\n{}", sender.log());
    let log = sender.log();
    assert!(log.contains("the link to the receiver uses TLS"), "{log}");
    assert!(!log.contains("NO TLS"), "{log}");

    // A CA file that is not there stops the start-up, named, before any connection.
    let missing = pki.dir().join("no-such-ca.pem");
    let mut sender =
        spawn_simulating_sender(&sim, &target, missing.to_str().expect("utf8"), &[], &[]);
    let status = wait_until("exit", WAIT, POLL, || {
        let status = sender.try_status();
        async move { Ok(status) }
    })
    .await
    .expect("exits");
    assert!(!status.success());
    let log = sender.log();
    assert!(
        log.contains("no-such-ca.pem") && log.contains("CA certificate"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    rx.stop().await.expect("receiver stops");
}

#[tokio::test]
async fn a_receiver_that_stalls_the_tls_handshake_times_out_within_the_connect_timeout() {
    let pki = Pki::generate().expect("test PKI");
    // Accepts TCP connections and never answers the ClientHello.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = listener.local_addr().expect("addr").to_string();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let shared = Arc::new(Shared::new(1));
    let config = LinkConfig {
        connect_timeout: Duration::from_millis(200),
        ..link_config("tls-stall", None)
    };
    let connector = TlsConnector::new(target, &pki.ca, None, None).expect("connector");
    let shutdown = CancellationToken::new();
    let task =
        tokio::spawn(Link::new(config, connector, Arc::clone(&shared)).run(shutdown.clone()));
    // Each attempt ends at the connect timeout as a connect error, and is retried.
    wait_connect_errors(&shared, "connect", 2).await;
    assert_eq!(shared.stats.sessions.load(Ordering::Relaxed), 0);
    stop_link(shutdown, task).await;
    held.abort();
}

#[tokio::test]
async fn the_library_sender_connects_over_tls_when_its_config_names_a_ca() {
    let (pki, rx) = start_tls_receiver(false).await;
    let bed = support::Bed::start(Scenario::builtin("demo").expect("demo")).await;
    let mut config = bed.config();
    config.targets = vec![rx.ingest.to_string()];
    config.tls_ca = Some(pki.ca.clone());
    config.token = Some(TOKEN.to_owned());
    let sender = bed.sender("lib-tls", config);
    bed.advance(Duration::from_secs(30));

    // Only a TLS client with the token gets this far: the receiver has no plain port.
    let text = metrics_when(&rx, |t| {
        t.lines().any(|l| {
            l.starts_with("kube_pod_status_phase{cluster=\"lib-tls\"")
                && l.contains("phase=\"Running\"")
                && l.ends_with(" 1")
        })
    })
    .await;
    assert_eq!(cluster_up(&text, "lib-tls"), Some(1.0));
    assert_eq!(sender.shared.stats.connect_errors("tls_certificate"), 0);
    sender.stop().await;
    bed.stop().await;
    rx.stop().await.expect("receiver stops");
}
