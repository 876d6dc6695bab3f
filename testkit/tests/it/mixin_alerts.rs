//! An opt-in proof, `#[ignore]`d: the kubernetes-mixin's alerts for crash loops, waiting
//! containers, HPA replica mismatch and maxed-out HPAs, Deployment replica mismatch and nodes
//! not ready, read from the user's own rendering of the mixin (`kubernetes-mixin-alerts.yaml`
//! in `$KUBE_RELAY_PUBLIC_PROOF_DIR`: see `public_proof` and docs/metrics.md; the repository
//! holds none of it), fire for the simulator's `faults` scenario and stay quiet for a healthy
//! cluster. Our own alerts for the same states are proven in CI by `kubernetes_alerts`.
//!
//! Their `for:` clauses run to an hour, so the rules are evaluated by `promtool test rules`
//! (Prometheus' own rule engine on a simulated clock) over what the relay actually served:
//! each cluster runs on a manual clock, one simulated minute at a time; after each minute the
//! test waits until the receiver shows the cluster's state as its API server lists it
//! (`relayed_state`) and records every series the alerts read, labelled as a scrape by job
//! `kube-relay` would label it. Those minutes become promtool's input series; the expected
//! alerts are the objects `faults` breaks by design (`sim/scenarios/faults.yaml`), with the
//! labels the relay gave their series, and nothing else. The alert names and severities are
//! the file's; the expected objects are what the mixin's alerts of those names are about.
//!
//! `KubeHpaReplicasMismatch` is held quiet for both: no simulated state keeps an HPA's desired
//! and current replicas apart for 15 minutes (in real clusters a quota or an admission webhook
//! refusing pods does).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use kube_relay_receiver::{Receiver, ReceiverConfig};
use kube_relay_sender::{Config, Sender};
use kube_relay_sim::{ClockMode, Scenario, Simulator};
use kube_relay_testkit::exposition::ExposedSample;
use kube_relay_testkit::prometheus::which;
use tokio_util::sync::CancellationToken;

use crate::public_proof;
use crate::relayed_state::{HEALTHY, wait_until_relayed};

/// The node the `faults` scenario loses (Ready Unknown from one minute on).
const LOST_NODE: &str = "sim-worker-2";
/// Images of the `faults` scenario that never pull: `reporting`'s, and the one `api` rolls
/// out to.
const NEVER_PULLED: [&str; 2] = [
    "registry.example.com/shop/reporting:3.0.0-rc1",
    "registry.example.com/shop/api:5.3.0",
];

/// Simulated minutes recorded: the longest `for:` (an hour) plus the longest window.
const MINUTES: u32 = 80;

/// Metric names the alert expressions read.
fn alert_metrics(rules: &str) -> BTreeSet<String> {
    rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("kube_"))
        .map(str::to_owned)
        .collect()
}

/// A series as promtool reads it: `name{label="value",...}`.
fn series_text(s: &ExposedSample, extra: &[(&str, &str)]) -> String {
    let mut labels = s.labels.clone();
    for (k, v) in extra {
        labels.insert((*k).to_owned(), (*v).to_owned());
    }
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{}{{{}}}", s.name, labels.join(","))
}

/// One relayed cluster's minutes: series text → value per recorded minute.
struct Recording {
    minutes: Vec<BTreeMap<String, f64>>,
    /// The labels of every recorded series, by series text.
    labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Pod names by Deployment, at the end.
    pods_of: BTreeMap<String, Vec<String>>,
    /// Deployments with a pod on each node, at the end.
    on_node: BTreeMap<String, BTreeSet<String>>,
    /// The image of each pod, at the end.
    image_of: BTreeMap<String, String>,
}

/// Runs `scenario` as cluster `cluster` for [`MINUTES`] simulated minutes through a real
/// sender and receiver, recording the series named in `metrics` after each minute.
async fn record(scenario: Scenario, cluster: &str, metrics: &BTreeSet<String>) -> Recording {
    let shutdown = CancellationToken::new();
    let receiver = Receiver::bind(ReceiverConfig::loopback())
        .await
        .expect("receiver binds");
    let (ingest, http): (SocketAddr, SocketAddr) = (receiver.ingest_addr(), receiver.http_addr());
    let receiver = tokio::spawn(receiver.run(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim = Simulator::start(scenario, listener, ClockMode::Manual)
        .await
        .expect("simulated cluster starts");
    let handle = sim.handle();
    let client = kube_relay_sender::kubeclient::plain_client(&sim.base_url()).expect("client");
    let api = client.clone();
    // the alerts read no usage series
    let config = Config {
        usage_source: kube_relay_sender::config::UsageSource::None,
        ..Config::new(ingest.to_string())
    };
    let sender = tokio::spawn(
        Sender::new(config, client, cluster)
            .expect("sender")
            .run(shutdown.clone()),
    );

    let instance = http.to_string();
    let extra = [("job", "kube-relay"), ("instance", instance.as_str())];
    let mut recording = Recording {
        minutes: Vec::new(),
        labels: BTreeMap::new(),
        pods_of: BTreeMap::new(),
        on_node: BTreeMap::new(),
        image_of: BTreeMap::new(),
    };
    for minute in 0..MINUTES {
        if minute > 0 {
            handle.advance(Duration::from_secs(60)).expect("advance");
        }
        let samples = wait_until_relayed(&api, http, cluster, &format!("minute {minute}")).await;
        let mut values = BTreeMap::new();
        for s in samples
            .iter()
            .filter(|s| s.label("cluster") == cluster && metrics.contains(&s.name))
        {
            let text = series_text(s, &extra);
            let mut labels = s.labels.clone();
            labels.extend(extra.map(|(k, v)| (k.to_owned(), v.to_owned())));
            recording.labels.insert(text.clone(), labels);
            values.insert(text, s.value);
        }
        recording.minutes.push(values);
    }
    for pod in handle.pods() {
        let name = pod.metadata.name.unwrap_or_default();
        let owner = name.rsplitn(3, '-').nth(2).unwrap_or_default().to_owned();
        let spec = pod.spec.unwrap_or_default();
        if let Some(image) = spec.containers.first().and_then(|c| c.image.clone()) {
            recording.image_of.insert(name.clone(), image);
        }
        if let Some(node) = spec.node_name {
            recording
                .on_node
                .entry(node)
                .or_default()
                .insert(owner.clone());
        }
        recording.pods_of.entry(owner).or_default().push(name);
    }

    shutdown.cancel();
    sender
        .await
        .expect("sender task")
        .expect("sender stops cleanly");
    receiver
        .await
        .expect("receiver task")
        .expect("receiver stops cleanly");
    sim.shutdown().await;
    recording
}

/// promtool's `values` for one series over the recorded minutes (`_` where it was absent).
fn values_line(recording: &Recording, series: &str) -> String {
    recording
        .minutes
        .iter()
        .map(|m| m.get(series).map_or("_".to_owned(), |v| format!("{v}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An expected alert: its name and the labels of the recorded series that make it fire,
/// chosen by metric name and label values.
struct Expect {
    alert: &'static str,
    metric: &'static str,
    labels: Vec<(&'static str, String)>,
}

/// The labels (plus the rule's) of the alert firing for the recorded series that matches
/// `expect`; exactly one series must.
fn expected_labels(
    recording: &Recording,
    expect: &Expect,
    severity: &str,
) -> BTreeMap<String, String> {
    let matching: Vec<&BTreeMap<String, String>> = recording
        .labels
        .iter()
        .filter(|(text, labels)| {
            text.starts_with(&format!("{}{{", expect.metric))
                && expect
                    .labels
                    .iter()
                    .all(|(k, v)| labels.get(*k).is_some_and(|l| l == v))
        })
        .map(|(_, labels)| labels)
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "{}: one {} series with {:?}, found {matching:?}",
        expect.alert,
        expect.metric,
        expect.labels
    );
    let mut labels = matching[0].clone();
    labels.insert("severity".to_owned(), severity.to_owned());
    labels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "opt-in proof: reads the kubernetes-mixin's alerts from $KUBE_RELAY_PUBLIC_PROOF_DIR (docs/metrics.md)"]
async fn mixin_alerts_fire_for_the_faults_scenario_and_stay_quiet_for_a_healthy_one() {
    let Some(promtool) = which("promtool") else {
        kube_relay_testkit::skip("promtool is not installed (Debian package prometheus)");
        return;
    };
    let rules_path = public_proof::file("kubernetes-mixin-alerts.yaml");
    let rules_text = std::fs::read_to_string(&rules_path).expect("alert rules");
    let rules: serde_yaml::Value = serde_yaml::from_str(&rules_text).expect("rules YAML");
    let severity: BTreeMap<String, String> = rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .map(|r| {
            (
                r["alert"].as_str().expect("alert").to_owned(),
                r["labels"]["severity"]
                    .as_str()
                    .expect("severity")
                    .to_owned(),
            )
        })
        .collect();
    let metrics = alert_metrics(&rules_text);

    let healthy = record(
        Scenario::from_yaml(HEALTHY).expect("scenario"),
        "healthy",
        &metrics,
    )
    .await;
    let faults = record(
        Scenario::builtin("faults").expect("the faults scenario"),
        "faults",
        &metrics,
    )
    .await;

    // what the faults scenario breaks, by object (sim/scenarios/faults.yaml says why)
    let in_ns = |namespace: &str, extra: Vec<(&'static str, String)>| {
        let mut labels = vec![
            ("cluster", "faults".to_owned()),
            ("namespace", namespace.to_owned()),
        ];
        labels.extend(extra);
        labels
    };
    let mut expected = vec![
        Expect {
            alert: "KubeHpaMaxedOut",
            metric: "kube_horizontalpodautoscaler_status_current_replicas",
            labels: in_ns("shop", vec![("horizontalpodautoscaler", "web".to_owned())]),
        },
        Expect {
            alert: "KubeNodeNotReady",
            metric: "kube_node_status_condition",
            labels: vec![
                ("cluster", "faults".to_owned()),
                ("node", LOST_NODE.to_owned()),
                ("condition", "Ready".to_owned()),
                ("status", "true".to_owned()),
            ],
        },
    ];
    // crash loops: every pod of the two crash-looping Deployments
    for deployment in ["checkout", "worker"] {
        for pod in &faults.pods_of[deployment] {
            expected.push(Expect {
                alert: "KubePodCrashLooping",
                metric: "kube_pod_container_status_waiting_reason",
                labels: in_ns(
                    "shop",
                    vec![
                        ("pod", pod.clone()),
                        ("reason", "CrashLoopBackOff".to_owned()),
                    ],
                ),
            });
        }
    }
    // waiting for an hour: every pod of an image that never pulls
    let pulling: Vec<&String> = faults
        .image_of
        .iter()
        .filter(|(_, image)| NEVER_PULLED.contains(&image.as_str()))
        .map(|(pod, _)| pod)
        .collect();
    assert!(
        pulling.len() >= 2,
        "reporting and the stuck api rollout: {pulling:?}"
    );
    for pod in pulling {
        expected.push(Expect {
            alert: "KubeContainerWaiting",
            metric: "kube_pod_container_status_waiting_reason",
            labels: in_ns(
                "shop",
                vec![
                    ("pod", pod.clone()),
                    ("reason", "ImagePullBackOff".to_owned()),
                ],
            ),
        });
    }
    // short of available replicas: the crash loops, the image that never pulls, the pod that
    // cannot be scheduled, the stuck rollout, and every Deployment with a pod on the lost node
    // (its pods are no longer Ready)
    let mut short: BTreeSet<(&str, String)> = [
        ("shop", "checkout"),
        ("shop", "worker"),
        ("shop", "reporting"),
        ("shop", "api"),
        ("batch", "analytics"),
    ]
    .map(|(ns, d)| (ns, d.to_owned()))
    .into();
    for deployment in faults.on_node.get(LOST_NODE).cloned().unwrap_or_default() {
        short.insert(("shop", deployment));
    }
    for (namespace, deployment) in short {
        expected.push(Expect {
            alert: "KubeDeploymentReplicasMismatch",
            metric: "kube_deployment_spec_replicas",
            labels: in_ns(namespace, vec![("deployment", deployment)]),
        });
    }

    // promtool's test: both clusters' minutes, every alert evaluated at the last minute
    let mut test = String::new();
    let _ = writeln!(test, "rule_files: [{:?}]", rules_path.display().to_string());
    test.push_str("evaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n");
    for recording in [&healthy, &faults] {
        for series in recording.labels.keys() {
            let _ = writeln!(
                test,
                "      - series: {series:?}\n        values: {:?}",
                values_line(recording, series)
            );
        }
    }
    test.push_str("    alert_rule_test:\n");
    let eval = format!("{}m", MINUTES - 1);
    for (alert, severity) in &severity {
        let _ = writeln!(
            test,
            "      - eval_time: {eval}\n        alertname: {alert}\n        exp_alerts:"
        );
        let mine: Vec<&Expect> = expected.iter().filter(|e| e.alert == alert).collect();
        if mine.is_empty() {
            test.push_str("          []\n");
        }
        for e in mine {
            let labels = expected_labels(&faults, e, severity);
            let labels: Vec<String> = labels
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__")
                .map(|(k, v)| format!("{k}: {v:?}"))
                .collect();
            let _ = writeln!(test, "          - exp_labels: {{{}}}", labels.join(", "));
        }
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let test_path = dir.path().join("mixin-alerts-test.yaml");
    std::fs::write(&test_path, &test).expect("write the promtool test");
    let output = std::process::Command::new(promtool)
        .args(["test", "rules"])
        .arg(&test_path)
        .output()
        .expect("promtool runs");
    let fired: BTreeSet<&str> = expected.iter().map(|e| e.alert).collect();
    println!(
        "FIGURE mixin alerts: {} of {} fire for the faults scenario ({}, {} alerts in all), none for the healthy one; {} input series over {MINUTES} simulated minutes",
        fired.len(),
        severity.len(),
        fired.iter().copied().collect::<Vec<_>>().join(", "),
        expected.len(),
        healthy.labels.len() + faults.labels.len()
    );
    assert!(
        output.status.success(),
        "promtool test rules failed:\n{}\n{}\ntest file kept at {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        dir.keep().join("mixin-alerts-test.yaml").display()
    );
}
