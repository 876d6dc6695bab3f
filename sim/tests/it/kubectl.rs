//! The real `kubectl` against the simulator, unchanged: every command the README and the
//! seed projects use (get pods/hpa/deploy/events, get -w, describe, top, delete, scale),
//! with their output checked, and the commands it does not serve failing with a reason
//! that says so.
//!
//! Skips (loudly) only when no `kubectl` binary is on PATH; `.ci/run` installs one.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube_relay_sim::{ClockMode, RunningSim, SimHandle};
use kube_relay_testkit::wait_until;

use common::start;

/// Real time, fast lifecycles and 1 s metrics so `kubectl top` has data within seconds.
/// 10 clients × 10m over 2 pods = 50m each = 50 % of the 100m request: the HPA holds 2.
const SCENARIO: &str = r#"
seed: 3
nodes: {count: 2}
deployments:
  - name: web
    namespace: default
    replicas: 2
    image: nginx:1.27
    port: 80
    requests: {cpu: 100m, memory: 64Mi}
    limits: {cpu: 200m, memory: 128Mi}
    startup: 500ms
    readiness: 500ms
    termination: 300ms
    load: {idle_cpu: 0, cpu_per_client: 10m, memory: 20Mi, noise: 0, curve: [{at: 0s, clients: 10}]}
  - {name: worker, namespace: jobs, replicas: 1, image: busybox:1.36, requests: {cpu: 50m}, startup: 500ms, readiness: 500ms}
hpas:
  - {name: web, namespace: default, target: web, min: 2, max: 6, cpu_utilization: 50}
metrics: {resolution: 1s}
hpa_controller: {sync_period: 1s}
"#;

fn find_kubectl() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubectl"))
            .find(|p| p.is_file())
    })
}

struct Kubectl {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(bin: PathBuf, sim: &RunningSim) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("kubeconfig"), sim.kubeconfig_yaml()).expect("kubeconfig");
        Kubectl { bin, dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs kubectl with the simulator's kubeconfig; returns stdout, panicking with stderr
    /// on failure.
    async fn run(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_run(args).await;
        assert!(ok, "kubectl {args:?} failed: {err}\n{out}");
        out
    }

    async fn try_run(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(self.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.path().join("cache"))
            .arg("--request-timeout=20s")
            .args(args)
            .env("HOME", self.path())
            .env_remove("KUBECONFIG");
        let output = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("join")
            .expect("kubectl runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// Splits kubectl's table output into rows of whitespace-separated cells.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// Collapses runs of whitespace, for output whose alignment depends on its content.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn running(handle: &SimHandle, ns: &str, deployment: &str, n: usize) {
    let h = handle.clone();
    let (ns, deployment) = (ns.to_string(), deployment.to_string());
    wait_until(
        "pods running and ready",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let pods = h.running_pods(&ns, &deployment);
            let ready = pods
                .iter()
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .count();
            async move { Ok((ready == n && pods.len() == n).then_some(())) }
        },
    )
    .await
    .expect("pods become ready");
}

#[tokio::test]
async fn kubectl_works_against_the_simulator_unchanged() {
    let Some(bin) = find_kubectl() else {
        kube_relay_testkit::skip(
            "kubectl is not on PATH; the kubectl compatibility test did not run",
        );
        return;
    };
    let (sim, handle) = start(SCENARIO, ClockMode::RealTime { speed: 1.0 }).await;
    let kubectl = Kubectl::new(bin, &sim);
    running(&handle, "default", "web", 2).await;
    running(&handle, "jobs", "worker", 1).await;

    // kubectl version: the server identifies itself.
    let out = kubectl.run(&["version"]).await;
    // Current kubectl prints `Server Version: v1.35.0+kube-sim`; Debian bookworm's 1.20
    // (what install-test-deps falls back to) the whole version.Info struct.
    let server = out
        .lines()
        .find(|l| l.starts_with("Server Version:"))
        .unwrap_or_default();
    assert!(server.contains("v1.35.0+kube-sim"), "{out}");

    // kubectl get pods -A
    let out = kubectl.run(&["get", "pods", "-A"]).await;
    let table = rows(&out);
    assert_eq!(
        table[0],
        ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{out}"
    );
    assert_eq!(table.len(), 4, "3 pods: {out}");
    for row in &table[1..] {
        assert_eq!(&row[2..5], ["1/1", "Running", "0"], "{out}");
    }
    let web_pods: Vec<String> = table[1..]
        .iter()
        .filter(|r| r[0] == "default")
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(web_pods.len(), 2);
    assert!(web_pods.iter().all(|p| p.starts_with("web-")));
    assert!(
        table[1..]
            .iter()
            .any(|r| r[0] == "jobs" && r[1].starts_with("worker-"))
    );

    // kubectl get hpa -A (after the HPA has seen two metrics windows)
    let kc = &kubectl;
    let out = wait_until(
        "the HPA reports utilization",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async move {
            let out = kc.run(&["get", "hpa", "-A"]).await;
            Ok(out.contains("cpu: 50%/50%").then_some(out))
        },
    )
    .await
    .expect("hpa targets");
    let table = rows(&out);
    assert_eq!(
        table[0],
        [
            "NAMESPACE",
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ]
    );
    assert_eq!(
        &table[1][..3],
        ["default", "web", "Deployment/web"],
        "{out}"
    );
    assert_eq!(&table[1][3..8], ["cpu:", "50%/50%", "2", "6", "2"], "{out}");

    // kubectl get deploy
    let out = kubectl.run(&["get", "deploy"]).await;
    let table = rows(&out);
    assert_eq!(
        table[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(table.len(), 2, "only the default namespace: {out}");
    assert_eq!(&table[1][..4], ["web", "2/2", "2", "2"]);

    // kubectl get events -A
    let out = kubectl.run(&["get", "events", "-A"]).await;
    let table = rows(&out);
    assert_eq!(
        table[0][..6],
        ["NAMESPACE", "LAST", "SEEN", "TYPE", "REASON", "OBJECT"]
    );
    assert!(
        out.contains("ScalingReplicaSet") && out.contains("deployment/web"),
        "{out}"
    );
    assert!(
        out.contains("SuccessfulCreate") && out.contains("Created pod: web-"),
        "{out}"
    );
    assert!(
        out.contains(&format!("Successfully assigned default/{}", web_pods[0])),
        "{out}"
    );

    // kubectl describe pod
    let pod = &web_pods[0];
    let out = kubectl.run(&["describe", "pod", pod]).await;
    let squashed = squash(&out);
    for expected in [
        format!("Name:             {pod}"),
        "Namespace:        default".to_string(),
        "Status:           Running".to_string(),
        "Controlled By:  ReplicaSet/web-".to_string(),
        "Image:          nginx:1.27".to_string(),
        "QoS Class:                   Burstable".to_string(),
        "Normal  Scheduled".to_string(),
        format!("Successfully assigned default/{pod} to sim-worker-"),
        "Started container web".to_string(),
    ] {
        assert!(
            squashed.contains(&squash(&expected)),
            "describe lacks {expected:?}:\n{out}"
        );
    }
    assert!(
        squashed.contains("Requests: cpu: 100m memory: 64Mi"),
        "{out}"
    );

    // kubectl top pods
    let out = wait_until(
        "metrics for every pod",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async move {
            let (ok, out, _) = kc.try_run(&["top", "pods"]).await;
            Ok((ok && rows(&out).len() == 3).then_some(out))
        },
    )
    .await
    .expect("top pods");
    let table = rows(&out);
    assert_eq!(table[0], ["NAME", "CPU(cores)", "MEMORY(bytes)"], "{out}");
    for row in &table[1..] {
        assert_eq!(row[1..], ["50m", "20Mi"], "{out}");
    }

    // kubectl delete pod: waits for the pod to go; its ReplicaSet replaces it.
    let out = kubectl.run(&["delete", "pod", pod]).await;
    assert_eq!(out.trim(), format!("pod \"{pod}\" deleted"));
    assert!(
        handle
            .pods()
            .iter()
            .all(|p| p.metadata.name.as_deref() != Some(pod))
    );
    running(&handle, "default", "web", 2).await;
    let out = kubectl.run(&["get", "pods"]).await;
    assert!(!out.contains(pod.as_str()), "{out}");
    assert_eq!(rows(&out).len(), 3, "a replacement took its place: {out}");

    // kubectl scale
    let out = kubectl
        .run(&["scale", "deploy/worker", "-n", "jobs", "--replicas=3"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/worker scaled");
    running(&handle, "jobs", "worker", 3).await;
    let out = kubectl
        .run(&["get", "deploy", "worker", "-n", "jobs"])
        .await;
    assert_eq!(&rows(&out)[1][..4], ["worker", "3/3", "3", "3"], "{out}");

    // kubectl get -w: watch events rendered as table rows until the request times out.
    let out = kubectl
        .run(&["get", "deploy", "-n", "jobs", "-w", "--request-timeout=2s"])
        .await;
    let table = rows(&out);
    assert_eq!(
        table[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{out}"
    );
    assert_eq!(&table[1][..4], ["worker", "3/3", "3", "3"], "{out}");

    // What kube-sim does not serve fails with a reason that says so.
    let web = handle.running_pods("default", "web");
    let pod = web[0].metadata.name.as_deref().expect("a pod name");
    let (ok, _, err) = kubectl.try_run(&["logs", pod]).await;
    assert!(!ok && err.contains("kube-sim runs no containers"), "{err}");
    let (ok, _, err) = kubectl
        .try_run(&["create", "deployment", "extra", "--image=nginx"])
        .await;
    assert!(
        !ok && err.contains("kube-sim serves no POST on deployments"),
        "{err}"
    );
    let (ok, _, err) = kubectl.try_run(&["delete", "deploy", "web"]).await;
    assert!(
        !ok && err.contains("kube-sim serves no DELETE on deployments/web"),
        "{err}"
    );
    // A watch from a resourceVersion the server never issued ends with the real answer
    // instead of hanging.
    let out = kubectl
        .run(&[
            "get",
            "--raw",
            "/api/v1/pods?watch=1&resourceVersion=99999999",
        ])
        .await;
    assert!(
        out.contains(r#""reason":"ResourceVersionTooLarge""#) && out.contains(r#""code":504"#),
        "{out}"
    );

    sim.shutdown().await;
}

#[tokio::test]
async fn kubectl_shows_the_fault_states_as_on_a_real_cluster() {
    let Some(bin) = find_kubectl() else {
        kube_relay_testkit::skip(
            "kubectl is not on PATH; the kubectl fault-state test did not run",
        );
        return;
    };
    let scenario = kube_relay_sim::Scenario::builtin("faults").expect("faults scenario");
    let (sim, handle) = common::start_scenario(scenario, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(100)).expect("advance");
    let kubectl = Kubectl::new(bin, &sim);

    let out = kubectl.run(&["get", "pods", "-A"]).await;
    let table = rows(&out);
    let status_of = |prefix: &str| -> Vec<(String, String)> {
        table[1..]
            .iter()
            .filter(|r| r[1].starts_with(prefix))
            .map(|r| (r[3].clone(), r[4].clone()))
            .collect()
    };
    // Crash-looping pods run, die and wait in turn; restarts only grow.
    let looping: Vec<(String, String)> = [status_of("checkout-"), status_of("worker-")].concat();
    for (status, restarts) in &looping {
        assert!(
            matches!(
                status.as_str(),
                "CrashLoopBackOff" | "OOMKilled" | "Error" | "Running"
            ),
            "{out}"
        );
        assert_ne!(restarts, "0", "{out}");
    }
    assert!(
        looping.iter().any(|(s, _)| s == "CrashLoopBackOff"),
        "{out}"
    );
    for (status, _) in status_of("reporting-") {
        assert!(
            matches!(status.as_str(), "ErrImagePull" | "ImagePullBackOff"),
            "{out}"
        );
    }
    assert_eq!(status_of("analytics-")[0].0, "Pending", "{out}");
    assert!(
        status_of("web-")
            .iter()
            .any(|(s, _)| s == "ContainerStatusUnknown"),
        "the evicted pod, as kubectl 1.22+ shows it: {out}"
    );
    let out = kubectl.run(&["get", "nodes"]).await;
    let nodes = rows(&out);
    assert!(
        nodes
            .iter()
            .any(|r| r[0] == "sim-worker-2" && r[1] == "NotReady"),
        "{out}"
    );
    let out = kubectl
        .run(&["get", "deploy", "-n", "shop", "frontend"])
        .await;
    assert_eq!(rows(&out)[0][..3], ["NAME", "READY", "UP-TO-DATE"], "{out}");
    sim.shutdown().await;
}
