//! The `sender` binary: pointed at the simulated cluster's kubeconfig (as at `kube-sim`'s) it
//! relays it to a real receiver, SIGTERM flushes and says goodbye, a bad command line fails
//! clearly.

use crate::support;

use std::time::Duration;

use kube_relay_receiver::{Receiver, ReceiverConfig};
use kube_relay_testkit::process::ChildProcess;
use kube_relay_testkit::wait_until;
use tokio_util::sync::CancellationToken;

use support::{KubeSim, POLL, metrics_text, value, values};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_pod_phases_and_hpa_gauges_and_sigterm_says_goodbye() {
    let sim = KubeSim::start().await;
    let receiver = Receiver::bind(ReceiverConfig::loopback())
        .await
        .expect("bind");
    let (ingest, http) = (receiver.ingest_addr(), receiver.http_addr());
    let stop = CancellationToken::new();
    let task = tokio::spawn(receiver.run(stop.clone()));

    let target = ingest.to_string();
    let mut sender = ChildProcess::spawn(
        "sender",
        [
            "--kubeconfig",
            sim.kubeconfig(),
            "--target",
            target.as_str(),
        ],
        &[("RUST_LOG", "info")],
    )
    .expect("sender starts");
    let c = ("cluster", "kube-sim");
    let hpa = ("horizontalpodautoscaler", "php-apache");
    wait_until(
        "pods and HPA at the receiver",
        Duration::from_secs(60),
        POLL,
        || async {
            let t = metrics_text(http).await?;
            let phases = values(&t, "kube_pod_status_phase", &[c]).len();
            let gauges = [
                "kube_horizontalpodautoscaler_spec_min_replicas",
                "kube_horizontalpodautoscaler_spec_max_replicas",
                "kube_horizontalpodautoscaler_status_current_replicas",
                "kube_horizontalpodautoscaler_status_desired_replicas",
            ]
            .iter()
            .all(|g| value(&t, g, &[c, hpa]).is_some());
            Ok(
                (phases >= 15 && gauges && value(&t, "relay_cluster_up", &[c]) == Some(1.0))
                    .then_some(()),
            )
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sender.log()));

    // glibc's malloc runs with the footprint settings (the binary re-executed itself).
    let pid = sender.pid().expect("running");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let environ = String::from_utf8_lossy(&environ);
    for (name, value) in kube_relay_sender::malloc::TUNABLES {
        assert!(
            environ.contains(&format!("{name}={value}")),
            "{name} in {environ}"
        );
    }

    let status = sender.terminate().await.expect("terminate");
    assert!(status.success(), "exit {status:?}\n{}", sender.log());
    let log = sender.log();
    assert!(log.contains("said goodbye"), "{log}");
    // Goodbye: the cluster is down at once, its series kept until the TTL.
    let t = metrics_text(http).await.expect("metrics");
    assert_eq!(value(&t, "relay_cluster_up", &[c]), Some(0.0));

    stop.cancel();
    task.await.expect("join").expect("receiver stops");
    sim.stop().await;
}

#[tokio::test]
async fn a_missing_target_fails_with_a_clear_message() {
    let mut sender =
        ChildProcess::spawn("sender", std::iter::empty::<&str>(), &[]).expect("starts");
    let status = wait_until("exit", Duration::from_secs(30), POLL, || {
        let status = sender.try_status();
        async move { Ok(status) }
    })
    .await
    .expect("exits");
    assert!(!status.success());
    assert!(
        sender.log().contains("--target HOST:PORT"),
        "{}",
        sender.log()
    );
}

/// Runs the sender with `args` and `env` until it exits; returns its exit code and output.
async fn failed_start(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut sender = ChildProcess::spawn("sender", args, env).expect("starts");
    let status = wait_until("exit", Duration::from_secs(30), POLL, || {
        let status = sender.try_status();
        async move { Ok(status) }
    })
    .await
    .expect("exits");
    (status.code(), sender.log())
}

#[tokio::test]
async fn settings_that_can_never_work_stop_the_start_naming_the_input_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8").to_owned()
    };
    let empty = path("empty.tok", "\n");
    let a_file = path("state-is-a-file", "");
    let bare_config = path("sender-config", "[sender]\n");
    let not_pem = path("notpem", "hello\n");
    let missing = dir.path().join("missing.tok");
    let missing = missing.to_str().expect("utf-8");
    let target = "--target=127.0.0.1:1";
    for (args, env, needles, code) in [
        (
            vec![target, "--token-file", missing],
            vec![],
            vec![missing],
            2,
        ),
        (
            vec![target, "--token-file", &empty],
            vec![],
            vec![&*empty, "is empty"],
            2,
        ),
        (
            vec![target, "--state-dir", &a_file],
            vec![],
            vec![&*a_file, "not a directory"],
            2,
        ),
        (
            vec![target, "--selector", "==="],
            vec![],
            vec!["\"===\"", "label selector"],
            2,
        ),
        (
            vec![target, "--config", &bare_config],
            vec![],
            vec![&*bare_config, ".toml", ".yaml"],
            2,
        ),
        (
            vec![target],
            vec![("KUBE_RELAY_SENDER_USAGE_INTERVAL", "abc")],
            vec!["KUBE_RELAY_SENDER_USAGE_INTERVAL", "\"abc\""],
            2,
        ),
        (
            vec![],
            vec![("KUBE_RELAY_TARGET", "127.0.0.1:1")],
            vec!["KUBE_RELAY_TARGET", "KUBE_RELAY_SENDER_TARGET"],
            2,
        ),
        // Read once logging runs: the same, through the log.
        (
            vec![target, "--tls-ca", &not_pem],
            vec![],
            vec![&*not_pem, "-----BEGIN CERTIFICATE-----"],
            1,
        ),
    ] {
        let (status, log) = failed_start(&args, &env).await;
        assert_eq!(status, Some(code), "{args:?} {env:?}: {log}");
        for needle in &needles {
            assert!(
                log.contains(needle),
                "{args:?} {env:?} lacks {needle}: {log}"
            );
        }
        let lines = log.lines().filter(|l| l.contains(needles[0])).count();
        assert_eq!(lines, 1, "said once: {log}");
        assert_eq!(
            log.matches(needles[0]).count(),
            1,
            "{args:?}: the message does not repeat itself: {log}"
        );
    }
}
