//! Our alert rules for the relayed clusters (`prometheus/rules/kubernetes.yml`), end to end:
//! a real Prometheus (Debian's 2.42) scrapes a receiver that relays three simulated clusters
//! and evaluates the rules; they fire for exactly the objects the `faults` scenario breaks
//! (`sim/scenarios/faults.yaml`), for exactly the few the `demo` scenario shows on purpose (a
//! crash loop, a pod no node can take, a node under memory pressure), and for nothing in a
//! healthy cluster. As in a real cluster, a Deployment whose pods never become available
//! (crash loops from the start, an image that never pulls, no node) also passes its progress
//! deadline: its first rollout is stuck too.
//!
//! Prometheus keeps time by the wall clock and the alerts wait 10 to 15 minutes, so the run is
//! time-compressed: the clusters run on manual clocks stepped [`STEP`] at a time, one step
//! every [`HOLD`] of real time ([`SPEEDUP`]× real time), and Prometheus loads the rules with
//! every duration in them (`for:`, range selectors) divided by [`SPEEDUP`]. After each step the
//! test waits until the receiver serves every cluster as its API server lists it
//! (`relayed_state`), so each state the clocks step through is scraped, and evaluated, several
//! times. The file as shipped, with its real durations, is proven by the promtool unit tests
//! (`prometheus/tests/kubernetes.test.yml`, run by `assets`).
//!
//! Every query of the overview dashboard (`grafana/dashboards/cluster-overview.json`, with its
//! pending, failed, not-ready, restart and unexpected-status panels) returns data for
//! `faults`, and its alert table shows each cluster's firing alerts at the end.
//!
//! What `faults` cannot cause gets those unit tests only: an HPA whose current replicas stay
//! away from its desired ones (`KubeHpaReplicasMismatch`: a quota or an admission webhook
//! refusing pods does that), and one that rescales more than six times an hour
//! (`KubeHpaFlapping`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube_relay_receiver::{Receiver, ReceiverConfig};
use kube_relay_sender::{Config, Sender};
use kube_relay_sim::{ClockMode, Scenario, SimHandle, Simulator};
use kube_relay_testkit::Prometheus;
use kube_relay_testkit::prometheus::PrometheusConfig;
use tokio_util::sync::CancellationToken;

use crate::relayed_state::{HEALTHY, wait_until_relayed};

/// Simulated seconds per real second.
const SPEEDUP: u32 = 30;
/// Simulated time per clock step.
const STEP: Duration = Duration::from_secs(30);
/// Real time per clock step.
const HOLD: Duration = Duration::from_secs(1);
/// Simulated time run: every state of `faults` is reached by 2.5 minutes; the longest
/// `for:` (15 minutes) after a 5-minute look-back then ends by 17.5; a few minutes' margin.
const SIMULATED: Duration = Duration::from_secs(22 * 60);
/// Prometheus' scrape and evaluation interval: four per step.
const INTERVAL: Duration = Duration::from_millis(250);

/// The node the `faults` scenario loses (Ready Unknown from one minute on).
const LOST_NODE: &str = "sim-worker-2";
/// The node under memory pressure in both scenarios (`faults`: from 30 s to 150 s; `demo`:
/// from 40 s on).
const PRESSED_NODE: &str = "sim-worker-3";
/// Images of the `faults` scenario that never pull: `reporting`'s, and the one `api` rolls
/// out to.
const NEVER_PULLED: [&str; 2] = [
    "registry.example.com/shop/reporting:3.0.0-rc1",
    "registry.example.com/shop/api:5.3.0",
];

// --- time compression ----------------------------------------------------------------------

/// Milliseconds of a Prometheus duration (`90s`, `15m`, `1h30m`, `500ms`).
fn duration_ms(text: &str) -> Option<u64> {
    let mut total = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return None,
        };
        total += number * unit;
        rest = &rest[unit_len..];
    }
    (total > 0).then_some(total)
}

/// `text` (a Prometheus duration) divided by `factor`, in milliseconds; exact or a panic.
fn scaled(text: &str, factor: u32) -> String {
    let ms = duration_ms(text).unwrap_or_else(|| panic!("not a duration: {text:?}"));
    assert_eq!(
        ms % u64::from(factor),
        0,
        "{text} is not a multiple of {factor} ms"
    );
    format!("{}ms", ms / u64::from(factor))
}

/// A PromQL expression with every range (`[5m]`) and subquery (`[30m:1m]`) duration divided by
/// `factor`. Quoted strings are left alone; `offset`, `@` and `time()` (which a compressed
/// clock would misread) are refused.
fn scaled_expr(expr: &str, factor: u32) -> String {
    let mut out = String::new();
    let mut chars = expr.chars();
    let mut quote = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' {
                out.extend(chars.next());
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => {
                quote = Some(c);
                out.push(c);
            }
            '@' => panic!("`@` cannot be time-compressed: {expr}"),
            '[' => {
                let inside: String = chars.by_ref().take_while(|&c| c != ']').collect();
                let parts: Vec<String> = inside
                    .split(':')
                    .map(|p| {
                        if p.trim().is_empty() {
                            String::new()
                        } else {
                            scaled(p.trim(), factor)
                        }
                    })
                    .collect();
                out.push('[');
                out.push_str(&parts.join(":"));
                out.push(']');
            }
            _ => out.push(c),
        }
    }
    let words: Vec<&str> = out
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    assert!(
        !words.contains(&"offset") && !out.contains("time()"),
        "cannot be time-compressed: {expr}"
    );
    out
}

/// A rules file with every `for:` and every duration in every expression divided by `factor`.
fn time_compressed(rules: &str, factor: u32) -> String {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(rules).expect("rules YAML");
    for group in doc["groups"].as_sequence_mut().expect("groups").iter_mut() {
        for rule in group["rules"].as_sequence_mut().expect("rules").iter_mut() {
            let map = rule.as_mapping_mut().expect("a rule");
            if let Some(serde_yaml::Value::String(hold)) = map.get_mut("for") {
                *hold = scaled(hold, factor);
            }
            if let Some(serde_yaml::Value::String(expr)) = map.get_mut("expr") {
                *expr = scaled_expr(expr, factor);
            }
        }
    }
    serde_yaml::to_string(&doc).expect("rules YAML")
}

#[test]
fn time_compression_divides_every_duration_and_nothing_else() {
    assert_eq!(duration_ms("1h30m"), Some(5_400_000));
    assert_eq!(duration_ms("500ms"), Some(500));
    assert_eq!(duration_ms("5x"), None);
    assert_eq!(
        scaled_expr(
            r#"max_over_time(a{reason=~"[A-Z]+"}[5m]) > 0 and changes(b[1h:30s]) == 0"#,
            30
        ),
        r#"max_over_time(a{reason=~"[A-Z]+"}[10000ms]) > 0 and changes(b[120000ms:1000ms]) == 0"#
    );
    let rules = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: increase(x[15m]) > 2\n    for: 10m\n  - alert: B\n    expr: y == 1\n";
    let compressed: serde_yaml::Value =
        serde_yaml::from_str(&time_compressed(rules, 30)).expect("YAML");
    let a = &compressed["groups"][0]["rules"][0];
    assert_eq!(a["expr"], "increase(x[30000ms]) > 2");
    assert_eq!(a["for"], "20000ms");
    let b = &compressed["groups"][0]["rules"][1];
    assert_eq!(b["expr"], "y == 1");
    assert!(b.get("for").is_none());
}

#[test]
#[should_panic(expected = "cannot be time-compressed")]
fn time_compression_refuses_offsets() {
    scaled_expr("x offset 5m", 30);
}

#[test]
#[should_panic(expected = "cannot be time-compressed")]
fn time_compression_refuses_the_wall_clock() {
    scaled_expr("time() - x > 60", 30);
}

// --- the clusters ---------------------------------------------------------------------------

/// A simulated cluster on a manual clock and the sender relaying it.
struct Relayed {
    cluster: &'static str,
    handle: SimHandle,
    sim: kube_relay_sim::RunningSim,
    client: kube::Client,
    sender: tokio::task::JoinHandle<Result<(), kube_relay_sender::Error>>,
}

async fn relay(
    cluster: &'static str,
    scenario: Scenario,
    ingest: std::net::SocketAddr,
    shutdown: &CancellationToken,
) -> Relayed {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim = Simulator::start(scenario, listener, ClockMode::Manual)
        .await
        .expect("simulated cluster starts");
    let client = kube_relay_sender::kubeclient::plain_client(&sim.base_url()).expect("client");
    // the alerts read no usage series
    let config = Config {
        usage_source: kube_relay_sender::config::UsageSource::None,
        ..Config::new(ingest.to_string())
    };
    let sender = Sender::new(config, client.clone(), cluster).expect("sender");
    let sender = tokio::spawn(sender.run(shutdown.clone()));
    Relayed {
        cluster,
        handle: sim.handle(),
        sim,
        client,
        sender,
    }
}

// --- what must fire -----------------------------------------------------------------------

/// An alert as the test compares them: its name and labels (severity left to the unit tests).
type Alert = (String, BTreeMap<String, String>);

fn alert(name: &str, labels: &[(&str, &str)]) -> Alert {
    (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// A pod of the cluster at the end of the run.
struct PodAtEnd {
    namespace: String,
    name: String,
    /// The Deployment owning it (pod names are `<deployment>-<replicaset hash>-<suffix>`).
    deployment: String,
    container: String,
    image: String,
    node: String,
    phase: String,
}

fn pods_at_end(pods: Vec<Pod>) -> Vec<PodAtEnd> {
    pods.into_iter()
        .map(|pod| {
            let name = pod.metadata.name.unwrap_or_default();
            let spec = pod.spec.unwrap_or_default();
            let first = spec.containers.first();
            PodAtEnd {
                namespace: pod.metadata.namespace.unwrap_or_default(),
                deployment: name.rsplitn(3, '-').nth(2).unwrap_or_default().to_owned(),
                container: first.map(|c| c.name.clone()).unwrap_or_default(),
                image: first.and_then(|c| c.image.clone()).unwrap_or_default(),
                node: spec.node_name.unwrap_or_default(),
                phase: pod.status.and_then(|s| s.phase).unwrap_or_default(),
                name,
            }
        })
        .collect()
}

/// Alerts about pods and their Deployments.
struct Expect<'a> {
    cluster: &'a str,
    pods: &'a [PodAtEnd],
    alerts: BTreeSet<Alert>,
}

impl<'a> Expect<'a> {
    fn pods_of(&self, deployment: &str) -> Vec<&'a PodAtEnd> {
        let found: Vec<&'a PodAtEnd> = self
            .pods
            .iter()
            .filter(|p| p.deployment == deployment)
            .collect();
        assert!(
            !found.is_empty(),
            "{}: no pod of {deployment}",
            self.cluster
        );
        found
    }

    fn pod(&mut self, name: &str, p: &PodAtEnd) {
        let cluster = self.cluster;
        self.alerts.insert(alert(
            name,
            &[
                ("cluster", cluster),
                ("namespace", &p.namespace),
                ("pod", &p.name),
            ],
        ));
    }

    fn container(&mut self, name: &str, p: &PodAtEnd) {
        let cluster = self.cluster;
        self.alerts.insert(alert(
            name,
            &[
                ("cluster", cluster),
                ("namespace", &p.namespace),
                ("pod", &p.name),
                ("container", &p.container),
            ],
        ));
    }

    fn deployment(&mut self, name: &str, namespace: &str, deployment: &str) {
        let cluster = self.cluster;
        self.alerts.insert(alert(
            name,
            &[
                ("cluster", cluster),
                ("namespace", namespace),
                ("deployment", deployment),
            ],
        ));
    }
}

/// What `faults` breaks (sim/scenarios/faults.yaml says why), alert by alert.
fn expected_for_faults(pods: &[PodAtEnd]) -> BTreeSet<Alert> {
    let mut e = Expect {
        cluster: "faults",
        pods,
        alerts: BTreeSet::new(),
    };
    let crash_looping: Vec<&PodAtEnd> = ["checkout", "worker"]
        .iter()
        .flat_map(|d| e.pods_of(d))
        .collect();
    let oom_killed = e.pods_of("checkout");
    let never_pulled: Vec<&PodAtEnd> = pods
        .iter()
        .filter(|p| NEVER_PULLED.contains(&p.image.as_str()))
        .collect();
    assert!(
        never_pulled.len() >= 2,
        "reporting and the stuck api rollout: {:?}",
        never_pulled.iter().map(|p| &p.name).collect::<Vec<_>>()
    );
    let unschedulable = e.pods_of("analytics");
    let on_lost_node: Vec<&PodAtEnd> = pods
        .iter()
        .filter(|p| p.node == LOST_NODE && p.phase == "Running")
        .collect();

    for p in &crash_looping {
        e.container("KubePodCrashLooping", p);
    }
    for p in &oom_killed {
        e.container("KubeContainerOOMKilled", p);
    }
    for p in &never_pulled {
        e.container("KubeContainerWaiting", p);
    }
    for p in &unschedulable {
        e.pod("KubePodNotScheduled", p);
    }
    // not ready: the crash loops, the pods that never start, and every pod on the lost node
    for p in crash_looping
        .iter()
        .chain(&never_pulled)
        .chain(&unschedulable)
        .chain(&on_lost_node)
    {
        e.pod("KubePodNotReady", p);
    }
    // short of available replicas: the same pods' Deployments
    let short: BTreeSet<(String, String)> = crash_looping
        .iter()
        .chain(&never_pulled)
        .chain(&unschedulable)
        .chain(&on_lost_node)
        .map(|p| (p.namespace.clone(), p.deployment.clone()))
        .collect();
    for (namespace, deployment) in &short {
        e.deployment("KubeDeploymentReplicasMismatch", namespace, deployment);
    }
    let mut alerts = e.alerts;
    // past the progress deadline: the rollout to an image that never pulls, and the first
    // rollouts of the Deployments whose pods never became available
    for (namespace, deployment) in [
        ("shop", "api"),
        ("shop", "checkout"),
        ("shop", "reporting"),
        ("batch", "analytics"),
    ] {
        alerts.insert(rollout_stuck("faults", namespace, deployment));
    }
    alerts.insert(alert(
        "KubeHpaMaxedOut",
        &[
            ("cluster", "faults"),
            ("namespace", "shop"),
            ("horizontalpodautoscaler", "web"),
        ],
    ));
    alerts.insert(alert(
        "KubeNodeNotReady",
        &[("cluster", "faults"), ("node", LOST_NODE)],
    ));
    alerts.insert(pressure("faults"));
    alerts
}

/// What the demo shows on purpose (sim/scenarios/demo.yaml): a crash loop, a pod no node can
/// take (both Deployments past their progress deadline), a node under memory pressure.
fn expected_for_demo(pods: &[PodAtEnd]) -> BTreeSet<Alert> {
    let mut e = Expect {
        cluster: "demo",
        pods,
        alerts: BTreeSet::new(),
    };
    for p in e.pods_of("queue-worker") {
        e.container("KubePodCrashLooping", p);
        e.pod("KubePodNotReady", p);
    }
    for p in e.pods_of("nightly-report") {
        e.pod("KubePodNotScheduled", p);
        e.pod("KubePodNotReady", p);
    }
    e.deployment("KubeDeploymentReplicasMismatch", "default", "queue-worker");
    e.deployment("KubeDeploymentReplicasMismatch", "batch", "nightly-report");
    let mut alerts = e.alerts;
    alerts.insert(rollout_stuck("demo", "default", "queue-worker"));
    alerts.insert(rollout_stuck("demo", "batch", "nightly-report"));
    alerts.insert(pressure("demo"));
    alerts
}

/// A Deployment whose rollout passed its progress deadline (10 simulated minutes).
fn rollout_stuck(cluster: &str, namespace: &str, deployment: &str) -> Alert {
    alert(
        "KubeDeploymentRolloutStuck",
        &[
            ("cluster", cluster),
            ("namespace", namespace),
            ("deployment", deployment),
            ("reason", "ProgressDeadlineExceeded"),
        ],
    )
}

fn pressure(cluster: &str) -> Alert {
    alert(
        "KubeNodeUnderPressure",
        &[
            ("cluster", cluster),
            ("node", PRESSED_NODE),
            ("condition", "MemoryPressure"),
        ],
    )
}

/// The alerts of an `ALERTS` query result, as compared (target labels and severity left out).
fn alerts_of(samples: &[kube_relay_testkit::prometheus::Sample]) -> BTreeSet<Alert> {
    samples
        .iter()
        .map(|s| {
            let labels = s
                .metric
                .iter()
                .filter(|(k, _)| {
                    ![
                        "__name__",
                        "alertname",
                        "alertstate",
                        "severity",
                        "job",
                        "instance",
                    ]
                    .contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (s.label("alertname").to_owned(), labels)
        })
        .collect()
}

fn show(alerts: &BTreeSet<Alert>) -> String {
    alerts
        .iter()
        .map(|(name, labels)| format!("  {name} {labels:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// --- the test -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_alerts_fire_for_exactly_the_broken_objects() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace root")
        .to_path_buf();
    let rules = std::fs::read_to_string(root.join("prometheus/rules/kubernetes.yml"))
        .expect("prometheus/rules/kubernetes.yml");
    let dir = tempfile::tempdir().expect("temporary directory");
    let compressed = dir.path().join("kubernetes.yml");
    std::fs::write(&compressed, time_compressed(&rules, SPEEDUP)).expect("write the rules");

    // host B: the receiver, and Prometheus scraping it as prometheus/prometheus.yml does
    let shutdown = CancellationToken::new();
    let receiver = Receiver::bind(ReceiverConfig::loopback())
        .await
        .expect("receiver binds");
    let (ingest, http) = (receiver.ingest_addr(), receiver.http_addr());
    let receiver = tokio::spawn(receiver.run(shutdown.clone()));
    let prometheus = Prometheus::start_with(PrometheusConfig {
        interval: INTERVAL,
        rule_files: vec![compressed],
        honor_labels: true,
        ..PrometheusConfig::new(&[http])
    })
    .await
    .expect("prometheus starts");
    prometheus
        .wait_for_scrape(Duration::from_secs(30))
        .await
        .expect("prometheus scrapes the receiver");

    // host A, three times over
    let mut clusters = Vec::new();
    for (cluster, scenario) in [
        ("faults", Scenario::builtin("faults")),
        ("demo", Scenario::builtin("demo")),
        ("healthy", Scenario::from_yaml(HEALTHY)),
    ] {
        let scenario = scenario.expect("scenario");
        clusters.push(relay(cluster, scenario, ingest, &shutdown).await);
    }

    // the clocks run SPEEDUP times faster than real time, one step per HOLD; each step is
    // served before the next (the wait is part of the step's HOLD when the machine keeps up)
    let began = Instant::now();
    let steps = SIMULATED.as_secs() / STEP.as_secs();
    let mut late_steps = 0;
    for step in 0..=steps {
        if step > 0 {
            for c in &clusters {
                c.handle.advance(STEP).expect("advance");
            }
        }
        let when = format!("{}s", step * STEP.as_secs());
        for c in &clusters {
            wait_until_relayed(&c.client, http, c.cluster, &when).await;
        }
        let due = began + HOLD * u32::try_from(step + 1).expect("few steps");
        if Instant::now() > due {
            late_steps += 1;
        }
        tokio::time::sleep_until(due.into()).await;
    }
    let run = began.elapsed();

    // every rule group has evaluated the last state: each has an alert firing at the end
    // (faults), whose ALERTS sample is written at every evaluation
    let last_step = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
        - HOLD.as_secs_f64();
    prometheus
        .wait_for(
            r#"min(timestamp(ALERTS{alertstate="firing", cluster="faults"}))"#,
            Duration::from_secs(30),
            |s| s.first().is_some_and(|s| s.value > last_step),
        )
        .await
        .expect("the rules evaluated the last step");

    let window = run.as_secs() + 10;
    let ever = alerts_of(
        &prometheus
            .query(&format!(
                r#"max_over_time(ALERTS{{alertstate="firing"}}[{window}s])"#
            ))
            .await
            .expect("query ALERTS"),
    );
    let at_end = alerts_of(
        &prometheus
            .query(r#"ALERTS{alertstate="firing"}"#)
            .await
            .expect("query ALERTS"),
    );

    let mut expected = BTreeSet::new();
    for c in &clusters {
        let pods = pods_at_end(c.handle.pods());
        expected.extend(match c.cluster {
            "faults" => expected_for_faults(&pods),
            "demo" => expected_for_demo(&pods),
            _ => BTreeSet::new(),
        });
    }
    // the memory pressure of `faults` passed at 150 s: its alert resolved
    let mut expected_at_end = expected.clone();
    expected_at_end.remove(&pressure("faults"));

    for cluster in ["faults", "demo", "healthy"] {
        let names: BTreeSet<&str> = ever
            .iter()
            .filter(|(_, l)| l.get("cluster").is_some_and(|c| c == cluster))
            .map(|(n, _)| n.as_str())
            .collect();
        println!(
            "FIGURE kubernetes alerts: {cluster}: {} alerts fired ({} kinds: {})",
            ever.iter()
                .filter(|(_, l)| l.get("cluster").is_some_and(|c| c == cluster))
                .count(),
            names.len(),
            names.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    println!(
        "FIGURE kubernetes alerts: {} simulated minutes in {:.1} s on real Prometheus ({SPEEDUP}x, {} of {} steps late)",
        SIMULATED.as_secs() / 60,
        run.as_secs_f64(),
        late_steps,
        steps + 1
    );
    assert_eq!(
        ever,
        expected,
        "alerts that fired vs expected\nfired, not expected:\n{}\nexpected, not fired:\n{}",
        show(&ever.difference(&expected).cloned().collect()),
        show(&expected.difference(&ever).cloned().collect())
    );
    assert_eq!(
        at_end,
        expected_at_end,
        "alerts firing at the end vs expected\nfiring, not expected:\n{}\nexpected, not firing:\n{}",
        show(&at_end.difference(&expected_at_end).cloned().collect()),
        show(&expected_at_end.difference(&at_end).cloned().collect())
    );

    // every query of the overview dashboard returns data for `faults` (its variables: this
    // cluster, every namespace, the whole run, a rate window of four scrapes)
    let overview: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana/dashboards/cluster-overview.json"))
            .expect("grafana/dashboards/cluster-overview.json"),
    )
    .expect("dashboard JSON");
    let panels = overview["panels"].as_array().expect("panels");
    let mut empty = Vec::new();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .expect("a query")
                .replace("$__range", &format!("{window}s"))
                .replace("$__rate_interval", "1s")
                .replace("$cluster", "faults")
                .replace("$namespace", ".*");
            let found = prometheus.query(&expr).await.expect("an overview query");
            if found.is_empty() {
                empty.push(format!("{}: {expr}", panel["title"]));
            }
        }
    }
    assert!(
        empty.is_empty(),
        "overview panels without data for faults:\n{}",
        empty.join("\n")
    );

    // its alert table lists each cluster's firing alerts, and no other
    let table = panels
        .iter()
        .find(|p| p["title"] == "Alerts about this cluster")
        .expect("the overview's alert table");
    let table_expr = table["targets"][0]["expr"].as_str().expect("its query");
    for cluster in ["faults", "demo", "healthy"] {
        let rows = prometheus
            .query(&table_expr.replace("$cluster", cluster))
            .await
            .expect("the alert table's query");
        let firing = rows
            .iter()
            .filter(|r| r.label("alertstate") == "firing")
            .count();
        let expected = expected_at_end
            .iter()
            .filter(|(_, l)| l.get("cluster").is_some_and(|c| c == cluster))
            .count();
        assert_eq!(
            firing, expected,
            "{cluster}: firing rows of the alert table"
        );
    }

    shutdown.cancel();
    for c in clusters {
        c.sender
            .await
            .expect("sender task")
            .expect("sender stops cleanly");
        c.sim.shutdown().await;
    }
    receiver
        .await
        .expect("receiver task")
        .expect("receiver stops cleanly");
}
