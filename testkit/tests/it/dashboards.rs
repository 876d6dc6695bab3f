//! Grafana cannot run here, so the dashboards are proven by doing what Grafana does with them:
//! every query of every panel, annotation and variable, with the variables and
//! `$__rate_interval` substituted, goes to a real Prometheus (Debian's 2.42).
//! - Statically: each dashboard is well formed (uids, schema version, the provisioned
//!   datasource referenced by its fixed uid everywhere, a `cluster` variable, no undefined
//!   variable), covers what the issue asks for, and names only catalogued metrics
//!   (`docs/metrics.md`); the alert rules are held to the same catalogue.
//! - Every query parses and evaluates on Prometheus 2.42.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kube_relay_testkit::Prometheus;
use serde_json::Value;

// --- reading the dashboards ------------------------------------------------------------

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace root")
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// `(file name, dashboard JSON)` for every file in `grafana/dashboards`.
fn dashboards() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(root().join("grafana/dashboards"))
        .expect("grafana/dashboards")
        .map(|e| e.expect("dir entry").path())
        .map(|path| {
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            assert!(
                name.ends_with(".json"),
                "only dashboards in grafana/dashboards: {name}"
            );
            let text = std::fs::read_to_string(&path).expect("read dashboard");
            let json =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
            (name, json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty());
    out
}

/// The alert rule files (`prometheus.yml` loads `rules/*.yml`), workspace-relative.
fn rule_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("prometheus/rules"))
        .expect("prometheus/rules")
        .map(|e| {
            let name = e.expect("dir entry").file_name();
            format!("prometheus/rules/{}", name.to_string_lossy())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    files
}

/// The uid of the provisioned Prometheus datasource.
fn datasource_uid() -> String {
    let provisioning: Value =
        serde_yaml::from_str(&read("grafana/provisioning/datasources/prometheus.yml"))
            .expect("datasource provisioning YAML");
    assert_eq!(provisioning["apiVersion"], 1);
    let source = &provisioning["datasources"][0];
    assert_eq!(source["type"], "prometheus");
    source["uid"].as_str().expect("a fixed uid").to_owned()
}

/// How Grafana runs a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A panel target over the dashboard's time range (`query_range`).
    Range,
    /// A panel target at the end of the time range (`query`).
    Instant,
    /// An annotation: a range query whose samples become events.
    Annotation,
    /// A `label_values(selector, label)` variable query.
    Variable,
}

/// One query of a dashboard.
#[derive(Debug, Clone)]
struct Query {
    dashboard: String,
    /// Panel title, annotation name or variable name.
    source: String,
    kind: Kind,
    expr: String,
}

fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            if panel["type"] == "row" {
                walk(&panel["panels"], out);
            } else {
                out.push(panel);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The Prometheus annotations (not Grafana's built-in one).
fn annotations(dashboard: &Value) -> Vec<&Value> {
    dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["builtIn"] != 1)
        .collect()
}

fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .collect()
}

fn variable_query(variable: &Value) -> &str {
    variable["query"]["query"]
        .as_str()
        .or_else(|| variable["query"].as_str())
        .expect("variable query")
}

fn queries(name: &str, dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for variable in variables(dashboard) {
        out.push(Query {
            dashboard: name.to_owned(),
            source: format!("variable {}", variable["name"]),
            kind: Kind::Variable,
            expr: variable_query(variable).to_owned(),
        });
    }
    for annotation in annotations(dashboard) {
        out.push(Query {
            dashboard: name.to_owned(),
            source: format!("annotation {}", annotation["name"]),
            kind: Kind::Annotation,
            expr: annotation["expr"]
                .as_str()
                .expect("annotation expr")
                .to_owned(),
        });
    }
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if target["hide"] == true {
                continue;
            }
            out.push(Query {
                dashboard: name.to_owned(),
                source: format!("panel {} / {}", panel["title"], target["refId"]),
                kind: if target["instant"] == true {
                    Kind::Instant
                } else {
                    Kind::Range
                },
                expr: target["expr"].as_str().expect("target expr").to_owned(),
            });
        }
    }
    out
}

/// `$name` references in `text`.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

/// Grafana's built-in variables the dashboards may use, with the values the tests give them.
const BUILTINS: [&str; 2] = ["__rate_interval", "__range"];

/// Replaces every `$name` by its value, longest names first.
fn substitute(expr: &str, values: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = expr.to_owned();
    for name in names {
        out = out.replace(&format!("${name}"), &values[name]);
    }
    assert!(!out.contains('$'), "unsubstituted variable in {out}");
    out
}

/// A `label_values(selector, label)` variable query as the PromQL Prometheus evaluates for
/// it: the distinct values of `label` among the series `selector` matches.
fn label_values_promql(query: &str) -> (String, String) {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("variable queries are label_values(selector, label): {query}"));
    let (selector, label) = inner
        .rsplit_once(',')
        .unwrap_or_else(|| panic!("label_values with a selector: {query}"));
    let label = label.trim().to_owned();
    (format!("group by ({label}) ({})", selector.trim()), label)
}

// --- the metric catalogue --------------------------------------------------------------

/// Metric names `docs/metrics.md` documents (every backticked `kube_`, `container_` or
/// `relay_` name).
fn catalogue() -> BTreeSet<String> {
    let text = read("docs/metrics.md");
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|code| code.split('{').next().unwrap_or_default().trim())
        .filter(|name| is_ours(name))
        .filter(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_owned)
        .collect()
}

fn is_ours(name: &str) -> bool {
    ["kube_", "container_", "relay_"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Metric names a PromQL expression uses (identifiers outside string literals with our
/// prefixes; label names never have them).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    let mut word = String::new();
    let mut in_string = None;
    while let Some(c) = chars.next() {
        if let Some(quote) = in_string {
            if c == '\\' {
                chars.next();
            } else if c == quote {
                in_string = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if is_ours(&word) {
            out.insert(std::mem::take(&mut word));
        }
        word.clear();
        if c == '"' || c == '\'' || c == '`' {
            in_string = Some(c);
        }
    }
    if is_ours(&word) {
        out.insert(word);
    }
    out
}

// --- static checks ---------------------------------------------------------------------

#[test]
fn dashboards_are_well_formed_and_use_the_provisioned_datasource() {
    let uid = datasource_uid();
    let datasource = serde_json::json!({"type": "prometheus", "uid": uid});
    let mut uids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for (name, dashboard) in dashboards() {
        let dash_uid = dashboard["uid"].as_str().expect("uid");
        assert!(
            !dash_uid.is_empty() && dash_uid.len() <= 40,
            "{name}: uid {dash_uid}"
        );
        assert!(uids.insert(dash_uid.to_owned()), "{name}: duplicate uid");
        assert!(
            titles.insert(dashboard["title"].to_string()),
            "{name}: duplicate title"
        );
        assert!(
            dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
            "{name}: schemaVersion"
        );
        assert!(
            dashboard["id"].is_null(),
            "{name}: provisioned dashboards carry no id"
        );

        let vars: Vec<&Value> = variables(&dashboard);
        let var_names: BTreeSet<String> = vars
            .iter()
            .map(|v| v["name"].as_str().expect("variable name").to_owned())
            .collect();
        assert!(var_names.contains("cluster"), "{name}: a cluster variable");
        for v in &vars {
            assert_eq!(v["type"], "query", "{name}: variable {}", v["name"]);
            assert_eq!(
                v["datasource"], datasource,
                "{name}: variable {}",
                v["name"]
            );
            let q = variable_query(v);
            assert!(q.starts_with("label_values("), "{name}: {q}");
            // a variable may only use the variables before it
            let position = vars
                .iter()
                .position(|w| w["name"] == v["name"])
                .unwrap_or(0);
            let earlier: BTreeSet<String> = vars[..position]
                .iter()
                .map(|w| w["name"].as_str().unwrap_or_default().to_owned())
                .collect();
            assert!(references(q).is_subset(&earlier), "{name}: {q}");
        }

        let mut ids = BTreeSet::new();
        let all_panels = panels(&dashboard);
        assert!(!all_panels.is_empty(), "{name}: panels");
        for panel in &all_panels {
            let title = &panel["title"];
            assert!(
                ids.insert(panel["id"].as_u64().expect("panel id")),
                "{name}: id of {title}"
            );
            assert_eq!(panel["datasource"], datasource, "{name}: panel {title}");
            let grid = &panel["gridPos"];
            let (x, w) = (
                grid["x"].as_u64().expect("x"),
                grid["w"].as_u64().expect("w"),
            );
            assert!(
                x + w <= 24 && grid["h"].as_u64().is_some(),
                "{name}: {title} fits"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: {title} has queries");
            let mut ref_ids = BTreeSet::new();
            for target in targets {
                assert_eq!(target["datasource"], datasource, "{name}: {title}");
                assert!(
                    ref_ids.insert(target["refId"].to_string()),
                    "{name}: {title} refIds"
                );
            }
        }
        for annotation in annotations(&dashboard) {
            assert_eq!(annotation["datasource"], datasource, "{name}: annotation");
        }

        let mut allowed = var_names.clone();
        allowed.extend(BUILTINS.iter().map(|b| b.to_string()));
        for query in queries(&name, &dashboard) {
            let used = references(&query.expr);
            assert!(
                used.is_subset(&allowed),
                "{name}: {} uses undefined variables {:?}",
                query.source,
                used.difference(&allowed).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn dashboards_cover_the_cluster_pods_hpas_and_the_relay() {
    let by_uid: BTreeMap<String, Value> = dashboards()
        .into_iter()
        .map(|(_, d)| (d["uid"].as_str().unwrap_or_default().to_owned(), d))
        .collect();
    let uses = |uid: &str, metric: &str| {
        let dashboard = by_uid.get(uid).unwrap_or_else(|| panic!("dashboard {uid}"));
        queries(uid, dashboard)
            .iter()
            .any(|q| q.kind != Kind::Variable && metric_names(&q.expr).contains(metric))
    };
    let titled = |uid: &str, title: &str| panels(&by_uid[uid]).iter().any(|p| p["title"] == title);
    // cluster overview: total active pods, pods by phase, unexpected status
    assert!(titled("kube-relay-cluster-overview", "Active pods"));
    assert!(titled("kube-relay-cluster-overview", "Pods by phase"));
    assert!(titled(
        "kube-relay-cluster-overview",
        "Pods in an unexpected status"
    ));
    // CPU and memory per pod
    assert!(uses(
        "kube-relay-pod-resources",
        "container_cpu_usage_seconds_total"
    ));
    assert!(uses(
        "kube-relay-pod-resources",
        "container_memory_working_set_bytes"
    ));
    // HPA: replicas, current vs target CPU
    for metric in [
        "kube_horizontalpodautoscaler_status_current_replicas",
        "kube_horizontalpodautoscaler_status_desired_replicas",
        "kube_horizontalpodautoscaler_spec_min_replicas",
        "kube_horizontalpodautoscaler_spec_max_replicas",
        "kube_horizontalpodautoscaler_status_target_metric",
        "kube_horizontalpodautoscaler_spec_target_metric",
    ] {
        assert!(
            uses("kube-relay-hpa", metric),
            "HPA dashboard shows {metric}"
        );
    }
    // relay health
    for metric in [
        "relay_cluster_up",
        "relay_receiver_connected_senders",
        "relay_receiver_last_update_timestamp_seconds",
    ] {
        assert!(
            uses("kube-relay-health", metric),
            "relay health shows {metric}"
        );
    }
}

#[test]
fn hpa_dashboard_marks_each_scaling_event_at_its_moment() {
    let (_, hpa) = dashboards()
        .into_iter()
        .find(|(_, d)| d["uid"] == "kube-relay-hpa")
        .expect("HPA dashboard");
    let annotations = annotations(&hpa);
    let scaling = annotations
        .iter()
        .find(|a| a["name"] == "Scaling events")
        .expect("a scaling events annotation");
    assert_eq!(scaling["enable"], true);
    // The value is the event's time in milliseconds: Grafana places the annotation there.
    assert_eq!(scaling["useValueForTime"], true);
    let expr = scaling["expr"].as_str().expect("expr");
    assert!(
        metric_names(expr)
            .contains("kube_horizontalpodautoscaler_last_scaling_event_timestamp_seconds")
            && expr.trim_end().ends_with("* 1000"),
        "{expr}"
    );
    assert!(
        scaling["titleFormat"]
            .as_str()
            .is_some_and(|t| t.contains("{{direction}}"))
    );
}

#[test]
fn dashboards_and_alert_rules_use_only_catalogued_metrics() {
    let catalogue = catalogue();
    assert!(
        catalogue.contains("kube_pod_status_phase") && catalogue.contains("relay_cluster_up"),
        "catalogue parsed: {catalogue:?}"
    );
    let mut unknown = BTreeSet::new();
    for (name, dashboard) in dashboards() {
        for query in queries(&name, &dashboard) {
            for metric in metric_names(&query.expr) {
                if !catalogue.contains(&metric) {
                    unknown.insert(format!("{name}: {} uses {metric}", query.source));
                }
            }
        }
    }
    for file in rule_files() {
        let rules: Value = serde_yaml::from_str(&read(&file)).expect("rules YAML");
        for group in rules["groups"].as_array().expect("groups") {
            for rule in group["rules"].as_array().expect("rules") {
                for metric in metric_names(rule["expr"].as_str().expect("expr")) {
                    if !catalogue.contains(&metric) {
                        unknown.insert(format!("alert {}: uses {metric}", rule["alert"]));
                    }
                }
            }
        }
    }
    assert!(unknown.is_empty(), "not in docs/metrics.md:\n{unknown:#?}");
}

#[test]
fn metric_names_skip_labels_and_strings() {
    assert_eq!(
        metric_names(
            r#"sum by (cluster) (rate(relay_receiver_bytes_received_total{job="kube_x", cluster=~"$cluster"}[1m])) / kube_pod_info"#
        ),
        BTreeSet::from([
            "relay_receiver_bytes_received_total".to_owned(),
            "kube_pod_info".to_owned()
        ])
    );
}

// --- against Prometheus ----------------------------------------------------------------

/// Values for a syntax check: any value of the right shape.
fn placeholder_values(dashboard: &Value) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = variables(dashboard)
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_owned(),
                "x".to_owned(),
            )
        })
        .collect();
    values.insert("__rate_interval".into(), "1m".into());
    values.insert("__range".into(), "1h".into());
    values
}

#[tokio::test]
async fn every_query_evaluates_on_prometheus() {
    let prometheus = Prometheus::start(&[]).await.expect("prometheus starts");
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, dashboard) in dashboards() {
        let values = placeholder_values(&dashboard);
        for query in queries(&name, &dashboard) {
            let expr = match query.kind {
                Kind::Variable => label_values_promql(&query.expr).0,
                _ => query.expr.clone(),
            };
            let expr = substitute(&expr, &values);
            count += 1;
            if let Err(e) = prometheus.query(&expr).await {
                failures.push(format!("{}: {}: {e:#}", query.dashboard, query.source));
            }
        }
    }
    assert!(count > 40, "{count} queries");
    assert!(
        failures.is_empty(),
        "queries Prometheus rejects:\n{}",
        failures.join("\n")
    );
}

// --- end to end: the HPA demo -----------------------------------------------------------

/// The cluster name the sender announces.
const CLUSTER: &str = "sim-demo";

/// Simulated seconds per real second: the demo's scale-up and its scale-down back to one
/// replica (about two simulated minutes) take about 30 s.
const SPEED: f64 = 4.0;

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Calls the Prometheus HTTP API and returns `data`.
async fn api(prometheus: &Prometheus, path_and_query: &str) -> Value {
    let response = kube_relay_testkit::http::get(prometheus.addr(), path_and_query, &[])
        .await
        .unwrap_or_else(|e| panic!("GET {path_and_query}: {e:#}"));
    let body: Value = serde_json::from_slice(&response.body).expect("JSON from Prometheus");
    assert_eq!(body["status"], "success", "GET {path_and_query}: {body}");
    body["data"].clone()
}

/// Resolves a dashboard's variables as Grafana does on load: each `label_values` query over
/// the time range, in order (later ones see earlier values); "All" where the variable has
/// it, else the first value.
async fn resolve_variables(
    prometheus: &Prometheus,
    name: &str,
    dashboard: &Value,
    start: f64,
    end: f64,
    range: &str,
) -> BTreeMap<String, String> {
    use kube_relay_testkit::http::encode_component;

    let mut values = BTreeMap::from([
        ("__rate_interval".to_owned(), "1m".to_owned()),
        ("__range".to_owned(), range.to_owned()),
    ]);
    for variable in variables(dashboard) {
        let var = variable["name"].as_str().expect("name").to_owned();
        let query = variable_query(variable);
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .expect("label_values");
        let (selector, label) = inner.rsplit_once(',').expect("selector and label");
        let selector = substitute(selector.trim(), &values);
        let found = api(
            prometheus,
            &format!(
                "/api/v1/label/{}/values?match[]={}&start={start}&end={end}",
                label.trim(),
                encode_component(&selector)
            ),
        )
        .await;
        let found: Vec<String> = found
            .as_array()
            .expect("label values")
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(
            !found.is_empty(),
            "{name}: variable {var} ({query}) has no values"
        );
        if var == "cluster" {
            assert_eq!(found, [CLUSTER], "{name}: the one relayed cluster");
        }
        let value = match variable["allValue"].as_str() {
            Some(all) if variable["includeAll"] == true => all.to_owned(),
            _ => found[0].clone(),
        };
        values.insert(var, value);
    }
    values
}

/// Seconds of a Grafana duration like `10s` or `1m`.
fn seconds(duration: &str) -> f64 {
    let (number, unit) = duration.split_at(duration.len() - 1);
    let n: f64 = number.parse().expect("duration number");
    match unit {
        "s" => n,
        "m" => n * 60.0,
        other => panic!("unit {other}"),
    }
}

/// The moment a Kubernetes Event says it happened, in Unix seconds.
fn event_second(event: &k8s_openapi::api::core::v1::Event) -> i64 {
    event
        .last_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .or_else(|| event.event_time.as_ref().map(|t| t.0.as_second()))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0.as_second()))
        .expect("an event time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_for_the_hpa_demo() {
    use std::time::Duration;

    use kube_relay_receiver::{Receiver, ReceiverConfig};
    use kube_relay_sender::{Config, Sender};
    use kube_relay_sim::{ClockMode, Scenario, Simulator};
    use kube_relay_testkit::prometheus::PrometheusConfig;
    use tokio_util::sync::CancellationToken;

    // host B: the receiver (remote-writing, so the remote-write panels have data), and
    // Prometheus scraping it every second with our alert rules
    let shutdown = CancellationToken::new();
    let backend = kube_relay_testkit::write_backend::WriteBackend::start(Vec::new())
        .await
        .expect("a remote-write backend");
    let state = tempfile::tempdir().expect("state dir");
    let receiver = Receiver::bind(ReceiverConfig {
        state_dir: Some(state.path().to_owned()),
        remote_write: vec![kube_relay_receiver::remote_write::Endpoint::new(
            backend.url(),
        )],
        ..ReceiverConfig::loopback()
    })
    .await
    .expect("receiver binds");
    let ingest = receiver.ingest_addr();
    let prometheus = Prometheus::start_with(PrometheusConfig {
        rule_files: rule_files().iter().map(|f| root().join(f)).collect(),
        ..PrometheusConfig::new(&[receiver.http_addr()])
    })
    .await
    .expect("prometheus starts");
    let receiver_task = tokio::spawn(receiver.run(shutdown.clone()));
    prometheus
        .wait_for_scrape(Duration::from_secs(30))
        .await
        .expect("prometheus scrapes the receiver");

    // host A: the simulated cluster playing the HPA demo, and the sender watching it
    let start = unix_now() - 1.0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim = Simulator::start(
        Scenario::builtin("demo").expect("the demo scenario"),
        listener,
        ClockMode::RealTime { speed: SPEED },
    )
    .await
    .expect("simulated cluster starts");
    let sim_events = sim.handle();
    let client = kube_relay_sender::kubeclient::plain_client(&sim.base_url()).expect("kube client");
    let config = Config {
        usage_interval: Duration::from_secs(1),
        ..Config::new(ingest.to_string())
    };
    let sender = Sender::new(config, client, CLUSTER).expect("sender");
    let sender_task = tokio::spawn(sender.run(shutdown.clone()));

    // the HPA scales up, then back down to its minimum, and Prometheus has seen it all
    let php = format!(
        r#"cluster="{CLUSTER}", namespace="default", horizontalpodautoscaler="php-apache""#
    );
    prometheus
        .wait_for(
            &format!(r#"kube_horizontalpodautoscaler_scaling_events_total{{{php}, direction="down"}} > 0"#),
            Duration::from_secs(90),
            |s| !s.is_empty(),
        )
        .await
        .expect("the HPA scaled down");
    prometheus
        .wait_for(
            &format!("kube_horizontalpodautoscaler_status_current_replicas{{{php}}} == 1"),
            Duration::from_secs(60),
            |s| !s.is_empty(),
        )
        .await
        .expect("back to one replica");
    let last_event = sim_events
        .scaling_events()
        .iter()
        .map(event_second)
        .max()
        .expect("scaling events");
    prometheus
        .wait_for(
            &format!(
                "max(kube_horizontalpodautoscaler_last_scaling_event_timestamp_seconds{{{php}}})"
            ),
            Duration::from_secs(30),
            |s| s.first().is_some_and(|s| s.value == last_event as f64),
        )
        .await
        .expect("the last scaling event reached Prometheus");
    let end = unix_now();
    let range = format!("{}s", (end - start).ceil());

    // every query of every panel, annotation and variable, as Grafana would run it
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut annotation_values = BTreeMap::new();
    for (name, dashboard) in dashboards() {
        let values = resolve_variables(&prometheus, &name, &dashboard, start, end, &range).await;
        let steps: BTreeMap<String, f64> = annotations(&dashboard)
            .iter()
            .map(|a| {
                let step = a["step"].as_str().map_or(60.0, seconds);
                (format!("annotation {}", a["name"]), step)
            })
            .collect();
        for query in queries(&name, &dashboard) {
            let expr = substitute(&query.expr, &values);
            ran += 1;
            let result = match query.kind {
                Kind::Variable => continue,
                Kind::Instant => prometheus.query(&expr).await.map(|s| s.len()),
                Kind::Range => prometheus
                    .query_range(&expr, start, end, 1.0)
                    .await
                    .map(|s| s.iter().filter(|s| !s.values.is_empty()).count()),
                Kind::Annotation => {
                    let step = steps[&query.source];
                    let grafana = prometheus.query_range(&expr, start, end, step).await;
                    // every scrape, to see each moment (sped-up time packs events closer
                    // together than Grafana's step)
                    let every_scrape = prometheus
                        .query_range(&expr, start, end, 1.0)
                        .await
                        .expect("annotation query");
                    annotation_values.insert(query.source.clone(), every_scrape);
                    grafana.map(|s| s.len())
                }
            };
            match result {
                Ok(0) => failures.push(format!(
                    "{}: {}: no data: {expr}",
                    query.dashboard, query.source
                )),
                Ok(_) => {}
                Err(e) => failures.push(format!("{}: {}: {e:#}", query.dashboard, query.source)),
            }
        }
    }
    assert!(ran > 50, "{ran} queries");
    assert!(
        failures.is_empty(),
        "dashboard queries without data or failing:\n{}",
        failures.join("\n")
    );

    // the scaling-event annotation marks exactly the rescale moments the simulator produced
    let events = sim_events.scaling_events();
    let produced: BTreeSet<i64> = events.iter().map(event_second).collect();
    let series = &annotation_values[r#"annotation "Scaling events""#];
    let mut marked = BTreeSet::new();
    let mut directions = BTreeSet::new();
    for s in series {
        directions.insert(s.metric.get("direction").cloned().unwrap_or_default());
        for (_, millis) in &s.values {
            assert_eq!(
                millis % 1000.0,
                0.0,
                "whole seconds, in milliseconds: {millis}"
            );
            marked.insert((millis / 1000.0) as i64);
        }
    }
    assert!(
        produced.len() >= 2,
        "the demo scales up and down: {events:?}"
    );
    assert_eq!(
        marked, produced,
        "annotation moments vs the simulator's SuccessfulRescale events"
    );
    assert_eq!(
        directions,
        BTreeSet::from(["down".to_owned(), "up".to_owned()])
    );

    // the alert rules evaluate without error on this data
    let rules = api(&prometheus, "/api/v1/rules").await;
    let mut evaluated = 0;
    for group in rules["groups"].as_array().expect("rule groups") {
        for rule in group["rules"].as_array().expect("rules") {
            evaluated += 1;
            assert_eq!(
                rule["health"], "ok",
                "alert {}: {}",
                rule["name"], rule["lastError"]
            );
        }
    }
    let defined = rule_files()
        .iter()
        .flat_map(|f| read(f).lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(evaluated, defined, "every alert rule is loaded");
    assert!(defined >= 19, "the rules files hold the alerts: {defined}");

    shutdown.cancel();
    sender_task
        .await
        .expect("sender task")
        .expect("sender stops cleanly");
    receiver_task
        .await
        .expect("receiver task")
        .expect("receiver stops cleanly");
    sim.shutdown().await;
}
