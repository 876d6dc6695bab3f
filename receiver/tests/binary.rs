//! The `receiver` binary: help text, configuration errors, serving, graceful SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use kube_relay_testkit::process::ChildProcess;
use kube_relay_testkit::{http, wait_until};

const WAIT: Duration = Duration::from_secs(20);

/// Finds `field=ADDR` in the "receiver listening" log line.
fn logged_addr(log: &str, field: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("receiver listening"))?;
    let start = line.find(&format!("{field}="))? + field.len() + 1;
    line[start..].split_whitespace().next()?.parse().ok()
}

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
        "KUBE_RELAY_LISTEN",
        "KUBE_RELAY_HTTP_LISTEN",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[tokio::test]
async fn a_bad_setting_stops_the_start_with_a_clear_error() {
    let mut child = ChildProcess::spawn(
        "receiver",
        std::iter::empty::<&str>(),
        &[("KUBE_RELAY_TTL", "5 minutes")],
    )
    .expect("spawn");
    assert!(!exit_of(&mut child).await.success());
    let log = child.log();
    assert!(log.contains("ttl") && log.contains("5 minutes"), "{log}");
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
        log.contains("NO TOKEN CONFIGURED"),
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
