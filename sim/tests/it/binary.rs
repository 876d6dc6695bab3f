//! The `kube-sim` binary: serves a scenario, writes a kubeconfig and says how to use it,
//! stops cleanly on SIGTERM, says in `--help` what it serves and what not, and colours its
//! log only on a terminal without `NO_COLOR`.

use std::time::Duration;

use kube_relay_testkit::process::{ChildProcess, bin_path};
use kube_relay_testkit::{http, wait_until};

const ESC: &str = "\x1b[";

/// Waits until kube-sim has logged that it started; returns its log.
async fn started(child: &ChildProcess) -> String {
    wait_until(
        "kube-sim started",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let log = child.log();
            async move { Ok(log.contains("simulated cluster started").then_some(log)) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", child.log()))
}

#[tokio::test]
async fn kube_sim_help_says_what_it_serves_and_what_not() {
    let out = std::process::Command::new(bin_path("kube-sim").expect("kube-sim built"))
        .arg("--help")
        .output()
        .expect("kube-sim --help runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "What it serves",
        "horizontalpodautoscalers",
        "metrics.k8s.io/v1beta1",
        "What it does not serve",
        "kubectl logs, exec, attach, port-forward",
        "kubectl create, apply, edit, patch",
        "kubectl get svc",
        "OpenAPI",
        "NO_COLOR",
        "Built-in scenarios",
    ] {
        assert!(
            help.contains(expected),
            "--help lacks {expected:?}:\n{help}"
        );
    }
    for name in kube_relay_sim::Scenario::builtin_names() {
        assert!(
            help.contains(&format!("  {name} ")),
            "--help lacks {name}:\n{help}"
        );
    }
}

#[tokio::test]
async fn an_unknown_scenario_stops_kube_sim_listing_the_builtins_once() {
    let out = std::process::Command::new(bin_path("kube-sim").expect("kube-sim built"))
        .args(["--listen", "127.0.0.1:0", "--scenario", "nosuch"])
        // A backtrace, had the error gone through anyhow's Debug, would show here.
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("kube-sim runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("kube-sim: ") && err.contains("`nosuch`"),
        "{err}"
    );
    for name in kube_relay_sim::Scenario::builtin_names() {
        assert!(err.contains(name), "{err} lacks {name}");
    }

    // A file that cannot be read: the OS's reason, said once.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(bin_path("kube-sim").expect("kube-sim built"))
        .args(["--listen", "127.0.0.1:0", "--scenario"])
        .arg(dir.path())
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("kube-sim runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(err.matches("Is a directory").count(), 1, "said once: {err}");
}

/// kube-sim on a pseudo-terminal (util-linux `script`), so stderr is a terminal.
fn on_a_terminal(no_color: &str, kubeconfig: &std::path::Path) -> ChildProcess {
    let sim = bin_path("kube-sim").expect("kube-sim built");
    let command = format!(
        "{} --listen 127.0.0.1:0 --kubeconfig-out {}",
        sim.display(),
        kubeconfig.display()
    );
    let env = [
        ("RUST_LOG", "info"),
        ("TERM", "xterm"),
        ("NO_COLOR", no_color),
    ];
    let args = [
        "--quiet",
        "--return",
        "--command",
        command.as_str(),
        "/dev/null",
    ];
    ChildProcess::spawn_program("kube-sim-on-a-tty", "script", args, &env).expect("script starts")
}

#[tokio::test]
async fn kube_sim_colours_its_log_only_on_a_terminal_without_no_color() {
    if kube_relay_testkit::prometheus::which("script").is_none() {
        kube_relay_testkit::skip("util-linux `script` is not installed; no pseudo-terminal test");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let out = kubeconfig.to_str().expect("utf-8 path");
    let file = ChildProcess::spawn(
        "kube-sim",
        ["--listen", "127.0.0.1:0", "--kubeconfig-out", out],
        &[],
    )
    .expect("kube-sim starts");
    let log = started(&file).await;
    assert!(!log.contains(ESC), "ANSI escapes in a log file:\n{log}");
    drop(file);

    let coloured = on_a_terminal("", &kubeconfig);
    let log = started(&coloured).await;
    assert!(log.contains(ESC), "a terminal gets colours:\n{log}");
    drop(coloured);

    let plain = on_a_terminal("1", &kubeconfig);
    let log = started(&plain).await;
    assert!(!log.contains(ESC), "NO_COLOR=1 on a terminal:\n{log:?}");
}

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
