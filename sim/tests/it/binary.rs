//! The `kube-sim` binary: serves a scenario, writes a kubeconfig and says how to use it,
//! and stops cleanly on SIGTERM.

use std::time::Duration;

use kube_relay_testkit::process::ChildProcess;
use kube_relay_testkit::{http, wait_until};

#[tokio::test]
async fn kube_sim_writes_a_kubeconfig_serves_the_api_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("sim.kubeconfig");
    let kubeconfig_arg = kubeconfig.to_str().expect("utf-8 path").to_string();
    let mut child = ChildProcess::spawn(
        "kube-sim",
        [
            "--listen",
            "127.0.0.1:0",
            "--scenario",
            "demo",
            "--speed",
            "5",
            "--kubeconfig-out",
            &kubeconfig_arg,
        ],
        &[("RUST_LOG", "info")],
    )
    .expect("kube-sim starts");
    let log = wait_until(
        "the kubeconfig path is printed",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let log = child.log();
            async move { Ok(log.contains("kubeconfig: ").then_some(log)) }
        },
    )
    .await
    .expect("startup output");
    assert!(
        log.contains(&format!("kubeconfig: {kubeconfig_arg}")),
        "{log}"
    );
    assert!(
        log.contains(&format!("KUBECONFIG={kubeconfig_arg} kubectl get pods -A")),
        "{log}"
    );

    let config = std::fs::read_to_string(&kubeconfig).expect("kubeconfig written");
    assert!(config.contains("current-context: kube-sim"), "{config}");
    let server = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: http://"))
        .expect("server line")
        .to_string();
    let addr: std::net::SocketAddr = server.parse().expect("server address");
    let r = http::get(addr, "/version", &[]).await.expect("version");
    assert_eq!(r.status, 200);
    assert!(r.text().expect("utf-8").contains("v1.35.0+kube-sim"));
    let r = http::get(addr, "/api/v1/namespaces/default/pods", &[])
        .await
        .expect("pods");
    let pods: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(pods["kind"], "PodList");

    let status = child.terminate().await.expect("terminates");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        child.log()
    );
    assert!(child.log().contains("simulated cluster stopped"));
}

#[tokio::test]
async fn kube_sim_rejects_a_bad_scenario_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "deployments:\n  - {name: web, image: nginx, replica: 3}\n",
    )
    .expect("write");
    let mut child = ChildProcess::spawn(
        "kube-sim",
        [
            "--listen",
            "127.0.0.1:0",
            "--scenario",
            path.to_str().expect("utf-8"),
        ],
        &[],
    )
    .expect("kube-sim starts");
    let status = wait_until(
        "kube-sim exits",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let s = child.try_status();
            async move { Ok(s) }
        },
    )
    .await
    .expect("exit");
    assert!(!status.success());
    let log = child.log();
    assert!(
        log.contains("deployments[0]") && log.contains("unknown field `replica`"),
        "{log}"
    );
}
