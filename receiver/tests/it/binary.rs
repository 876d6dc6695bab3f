//! The `receiver` binary: help text, configuration errors, the start-up warning for each
//! exposure, serving, graceful SIGTERM.

use crate::common;

use std::time::Duration;

use common::{ChildReceiver, logged_addr};
use kube_relay_testkit::pki::Pki;
use kube_relay_testkit::process::ChildProcess;
use kube_relay_testkit::{http, wait_until};

const WAIT: Duration = Duration::from_secs(20);

async fn exit_of(child: &mut ChildProcess) -> std::process::ExitStatus {
    wait_until(
        "the receiver to exit",
        WAIT,
        Duration::from_millis(20),
        || {
            let status = child.try_status();
            async move { Ok(status) }
        },
    )
    .await
    .expect("exited")
}

#[tokio::test]
async fn help_teaches_every_option_with_its_default_and_env_var() {
    let mut child = ChildProcess::spawn("receiver", ["--help"], &[]).expect("spawn");
    assert!(exit_of(&mut child).await.success());
    let help = child.log();
    for needle in [
        "--listen",
        "[default: 0.0.0.0:9000]",
        "--http-listen",
        "[default: 0.0.0.0:9100]",
        "--ttl",
        "[default: 5m]",
        "--token-file",
        "--max-connections",
        "--max-frame-bytes",
        "--handshake-timeout",
        "--heartbeat-interval",
        "--max-series-per-cluster",
        "--log-format",
        "--config",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--http-tls-cert",
        "--http-tls-key",
        "--http-basic-auth-user",
        "--http-basic-auth-password-file",
        "--max-handshakes-per-ip",
        "KUBE_RELAY_RECEIVER_LISTEN",
        "KUBE_RELAY_RECEIVER_HTTP_LISTEN",
        "KUBE_RELAY_RECEIVER_TLS_CERT",
        "KUBE_RELAY_RECEIVER_TLS_CLIENT_CA",
        "KUBE_RELAY_RECEIVER_HTTP_BASIC_AUTH_PASSWORD_FILE",
        "KUBE_RELAY_TOKEN_FILE",
        "Security:",
        "flag > environment > config file > default",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[tokio::test]
async fn a_bad_setting_stops_the_start_naming_the_variable_once() {
    for (var, names) in [
        ("KUBE_RELAY_RECEIVER_TTL", "KUBE_RELAY_RECEIVER_TTL"),
        // The unsectioned name of before is refused with the name to use.
        ("KUBE_RELAY_TTL", "KUBE_RELAY_RECEIVER_TTL"),
    ] {
        let mut child = ChildProcess::spawn(
            "receiver",
            std::iter::empty::<&str>(),
            &[(var, "5 minutes and")],
        )
        .expect("spawn");
        assert_eq!(exit_of(&mut child).await.code(), Some(2), "{}", child.log());
        let log = child.log();
        assert!(log.contains(var) && log.contains(names), "{log}");
        assert_eq!(log.lines().count(), 1, "one line, said once: {log}");
    }
}

#[tokio::test]
async fn it_serves_until_sigterm_then_stops_cleanly() {
    let mut child = ChildProcess::spawn(
        "receiver",
        ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
        &[("RUST_LOG", "info"), ("KUBE_RELAY_LOG_FORMAT", "text")],
    )
    .expect("spawn");
    let http_addr = wait_until(
        "the listening log line",
        WAIT,
        Duration::from_millis(20),
        || {
            let addr = logged_addr(&child.log(), "http");
            async move { Ok(addr) }
        },
    )
    .await
    .expect("listening");
    let ready = wait_until("ready", WAIT, Duration::from_millis(20), || async move {
        Ok((http::get(http_addr, "/readyz", &[]).await?.status == 200).then_some(()))
    })
    .await;
    ready.expect("ready");
    assert_eq!(
        http::get(http_addr, "/healthz", &[])
            .await
            .expect("healthz")
            .status,
        200
    );
    let log = child.log();
    assert!(
        log.contains("NO TOKEN CONFIGURED AND NO TLS"),
        "loud warning expected:\n{log}"
    );

    let status = child.terminate().await.expect("terminate");
    assert!(status.success(), "exit status {status:?}:\n{}", child.log());
    let log = child.log();
    assert!(
        log.contains("SIGTERM received") && log.contains("receiver stopped"),
        "{log}"
    );
}

#[tokio::test]
async fn unusable_tls_settings_stop_the_start_with_a_clear_error() {
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--tls-cert",
                "/nonexistent/cert.pem",
                "--tls-key",
                "/nonexistent/key.pem",
            ],
            "/nonexistent/cert.pem",
        ),
        (&["--tls-cert", "/nonexistent/cert.pem"], "tls-key"),
        (
            &["--tls-client-ca", "/nonexistent/ca.pem"],
            "tls-client-ca requires",
        ),
    ];
    for (args, needle) in cases {
        let mut child = ChildProcess::spawn("receiver", args, &[]).expect("spawn");
        assert!(!exit_of(&mut child).await.success(), "{args:?}");
        let log = child.log();
        assert!(log.contains(needle), "{args:?}: {log}");
    }
}

#[tokio::test]
async fn each_exposure_gets_its_own_start_up_warning() {
    let pki = Pki::generate().expect("test PKI");
    let cert = pki.server.cert.to_str().expect("utf-8");
    let key = pki.server.key.to_str().expect("utf-8");
    let ca = pki.ca.to_str().expect("utf-8");
    let password = pki.dir().join("password");
    std::fs::write(&password, "pw\n").expect("write");
    let password = password.to_str().expect("utf-8");
    let tls = ["--tls-cert", cert, "--tls-key", key];
    let loud = "NO TOKEN CONFIGURED AND NO TLS";
    let clear_token = "the token and all data travel in clear";
    let mild = "TLS without a token or client certificates";
    let clear_password = "HTTP basic auth without TLS";
    let cases: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec![], Some(loud)),
        (vec!["--token", "t"], Some(clear_token)),
        (tls.to_vec(), Some(mild)),
        ([&tls[..], &["--token", "t"]].concat(), None),
        ([&tls[..], &["--tls-client-ca", ca]].concat(), None),
        (
            [
                &tls[..],
                &["--token", "t", "--http-basic-auth-user", "prom"],
                &["--http-basic-auth-password-file", password],
            ]
            .concat(),
            Some(clear_password),
        ),
    ];
    for (args, expected) in cases {
        let rx = ChildReceiver::start(&args).await.expect("receiver starts");
        let log = rx.child.log();
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
        match expected {
            Some(needle) => {
                assert_eq!(warnings.len(), 1, "{args:?}: exactly one warning:\n{log}");
                assert!(warnings[0].contains(needle), "{args:?}:\n{log}");
            }
            None => assert!(warnings.is_empty(), "{args:?}: no warning expected:\n{log}"),
        }
    }
}

#[tokio::test]
async fn settings_that_can_never_work_stop_the_start_naming_the_input_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8").to_owned()
    };
    let not_pem = path("notpem", "hello\n");
    let empty = path("empty.tok", " \n");
    let bare_config = path("receiver-config", "[receiver]\n");
    let a_file = path("state-is-a-file", "");
    let missing = dir.path().join("missing.tok");
    let missing = missing.to_str().expect("utf-8");
    let loopback = ["--listen=127.0.0.1:0", "--http-listen=127.0.0.1:0"];
    let same = ["--listen=127.0.0.1:9400", "--http-listen=127.0.0.1:9400"];
    for (args, needles, code) in [
        (
            [
                &loopback[..],
                &["--tls-cert", &not_pem, "--tls-key", &not_pem],
            ]
            .concat(),
            vec![&*not_pem, "-----BEGIN CERTIFICATE-----"],
            1,
        ),
        (
            [&loopback[..], &["--token-file", &empty]].concat(),
            vec![&*empty, "is empty"],
            2,
        ),
        (
            [&loopback[..], &["--token-file", missing]].concat(),
            vec![missing, "No such file"],
            2,
        ),
        (
            [&loopback[..], &["--state-dir", &a_file]].concat(),
            vec![&*a_file, "not a directory"],
            2,
        ),
        (
            [&loopback[..], &["--config", &bare_config]].concat(),
            vec![&*bare_config, ".toml", ".yaml"],
            2,
        ),
        (
            same.to_vec(),
            vec!["--listen 127.0.0.1:9400 and --http-listen 127.0.0.1:9400"],
            2,
        ),
    ] {
        let mut child = ChildProcess::spawn("receiver", &args, &[]).expect("spawn");
        let status = exit_of(&mut child).await;
        let log = child.log();
        assert_eq!(status.code(), Some(code), "{args:?}: {log}");
        for needle in &needles {
            assert!(log.contains(needle), "{args:?} lacks {needle}: {log}");
        }
        assert_eq!(
            log.matches(needles[0]).count(),
            1,
            "{args:?}: said once: {log}"
        );
    }
}
