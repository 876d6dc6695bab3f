//! The deployment assets are proven with the real tools, even though Docker and Kubernetes
//! cannot run here:
//! - `docker-compose.yml` passes Debian's `docker-compose config -q`, and its services,
//!   ports, volumes, healthchecks and mounts agree with the Dockerfiles, `prometheus/` and
//!   `grafana/` (the paths the containers read are the paths the files are mounted at);
//! - `prometheus/` passes `promtool check config` and `promtool test rules`, and every alert
//!   is tested both firing and quiet;
//! - `kubectl kustomize k8s/` renders, and every rendered object deserialises strictly into
//!   its k8s-openapi type: a field the type does not know (a typo) fails the test;
//! - the sender's ClusterRole grants exactly the access the sender uses, with and without the
//!   `kubelet-usage` component;
//! - the Dockerfiles are multi-stage, build the workspace's real package and binary, and run
//!   as a non-root user; `.dockerignore` keeps what cargo needs.
//!
//! The tools come from Debian (`prometheus`, `docker-compose`) and kubectl; `.ci/run` installs
//! them. A missing tool fails the test with the command to install it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::Resource;
use kube_relay_proto::config::{self as layer, Section};
use kube_relay_receiver::{Receiver, ReceiverConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

// --- helpers ---------------------------------------------------------------------------

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace root")
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Runs `program args` in the workspace root and returns its stdout; panics with its output
/// when it fails or is missing.
fn run(program: &str, args: &[&str], install_hint: &str) -> String {
    run_in(&root(), program, args, &[], install_hint)
}

fn run_in(
    dir: &Path,
    program: &str,
    args: &[&str],
    env_remove: &[&str],
    install_hint: &str,
) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(dir);
    for var in env_remove {
        cmd.env_remove(var);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); install it: {install_hint}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed with {}:\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn yaml_docs(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).expect("valid YAML")
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

// --- docker-compose --------------------------------------------------------------------

const COMPOSE_HINT: &str = "apt-get install -y --no-install-recommends docker-compose";

/// The variables docker-compose.yml reads from the host or `.env`: unset while the file is
/// checked, so the defaults are what is checked.
const COMPOSE_SETTINGS: &[&str] = &[
    "KUBE_RELAY_TOKEN",
    "KUBE_RELAY_TOKEN_FILE",
    "KUBE_RELAY_RECEIVER_TLS_CERT",
    "KUBE_RELAY_RECEIVER_TLS_KEY",
    "KUBE_RELAY_RECEIVER_TLS_CLIENT_CA",
    "KUBE_RELAY_RECEIVER_TTL",
    "KUBE_RELAY_INGEST_PORT",
    "KUBE_RELAY_HTTP_PORT",
    "GRAFANA_ADMIN_PASSWORD",
];

/// The names of the receiver's variables compose passes through only when they are set
/// (no value in the file).
fn passed_through(environment: &Value) -> Vec<String> {
    environment
        .as_object()
        .expect("receiver environment")
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(k, _)| k.clone())
        .collect()
}

/// Whether `name` is a variable the receiver reads: loading it alone (with a value that need
/// not be valid for it) does not fail naming it as unknown or renamed.
fn receiver_reads(name: &str) -> bool {
    let env = vec![(OsString::from(name), OsString::from("x"))];
    !matches!(
        ReceiverConfig::load(["receiver"], env),
        Err(kube_relay_receiver::Error::Settings(
            layer::Error::UnknownVariable { .. } | layer::Error::Renamed { .. }
        ))
    )
}

/// The compose file as docker-compose itself normalises it.
fn compose_config() -> Value {
    let out = run_in(
        &root(),
        "docker-compose",
        &["-f", "docker-compose.yml", "config"],
        COMPOSE_SETTINGS,
        COMPOSE_HINT,
    );
    yaml(&out)
}

#[test]
fn compose_file_passes_docker_compose_config() {
    run_in(
        &root(),
        "docker-compose",
        &["-f", "docker-compose.yml", "config", "-q"],
        COMPOSE_SETTINGS,
        COMPOSE_HINT,
    );
}

#[test]
fn compose_runs_receiver_prometheus_and_grafana_with_healthchecks_and_restarts() {
    let config = compose_config();
    let services = config["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["receiver", "prometheus", "grafana"]),
        "host B runs exactly these"
    );
    for (name, service) in services {
        assert_eq!(
            service["restart"], "unless-stopped",
            "{name} restarts by itself"
        );
        let test = service["healthcheck"]["test"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has a healthcheck"));
        assert_eq!(
            test[0], "CMD",
            "{name}'s healthcheck runs without a shell wrapper"
        );
    }
    // Prometheus starts once the receiver is healthy, Grafana once Prometheus is.
    assert_eq!(
        config["services"]["prometheus"]["depends_on"]["receiver"]["condition"],
        "service_healthy"
    );
    assert_eq!(
        config["services"]["grafana"]["depends_on"]["prometheus"]["condition"],
        "service_healthy"
    );
    // Both data directories are named volumes.
    let volumes: BTreeSet<&str> = config["volumes"]
        .as_object()
        .expect("named volumes")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(volumes, BTreeSet::from(["prometheus-data", "grafana-data"]));
    for (service, volume, target) in [
        ("prometheus", "prometheus-data", "/prometheus"),
        ("grafana", "grafana-data", "/var/lib/grafana"),
    ] {
        assert_eq!(
            mount_source(&config, service, target).as_deref(),
            Some(volume),
            "{service} keeps {target} in volume {volume}"
        );
    }
}

/// The source of the mount at `target` in `service` (a volume name or a host path), from
/// the short (`source:target[:mode]`, as docker-compose 1.x prints it) or the long syntax.
fn mount_source(config: &Value, service: &str, target: &str) -> Option<String> {
    config["services"][service]["volumes"]
        .as_array()?
        .iter()
        .find_map(|m| match m {
            Value::String(short) => {
                let mut parts = short.split(':');
                let source = parts.next()?;
                (parts.next()? == target).then(|| source.to_owned())
            }
            long => (long["target"] == target).then(|| str_at(long, "/source").to_owned()),
        })
}

#[test]
fn compose_receiver_publishes_both_ports_and_takes_its_token_only_when_set() {
    let config = compose_config();
    let receiver = &config["services"]["receiver"];
    let ports: BTreeSet<(u64, u64)> = receiver["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["published"].as_u64().expect("published port"),
                p["target"].as_u64().expect("target port"),
            )
        })
        .collect();
    assert_eq!(ports, BTreeSet::from([(9000, 9000), (9100, 9100)]));
    let env = &receiver["environment"];
    assert_eq!(env["KUBE_RELAY_RECEIVER_LISTEN"], "0.0.0.0:9000");
    assert_eq!(env["KUBE_RELAY_RECEIVER_HTTP_LISTEN"], "0.0.0.0:9100");
    assert!(
        env["KUBE_RELAY_TOKEN"].is_null(),
        "without a token on the host, none is passed: {env}"
    );
    assert_eq!(
        str_at(receiver, "/build/dockerfile"),
        "receiver/Dockerfile",
        "compose builds the receiver image"
    );

    // With a token on the host (or in .env), the receiver gets it.
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(root())
        .env("KUBE_RELAY_TOKEN", "s3cret")
        .output()
        .expect("docker-compose runs");
    assert!(out.status.success());
    let with_token = yaml(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        with_token["services"]["receiver"]["environment"]["KUBE_RELAY_TOKEN"],
        "s3cret"
    );

    // Where node_exporter has 9100, KUBE_RELAY_HTTP_PORT moves the published port; inside
    // the compose network the receiver stays on 9100, where Prometheus scrapes it.
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(root())
        .env("KUBE_RELAY_HTTP_PORT", "9101")
        .env("KUBE_RELAY_INGEST_PORT", "9001")
        .output()
        .expect("docker-compose runs");
    assert!(out.status.success());
    let moved = yaml(&String::from_utf8_lossy(&out.stdout));
    let ports: BTreeSet<(u64, u64)> = moved["services"]["receiver"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["published"].as_u64().expect("published"),
                p["target"].as_u64().expect("target"),
            )
        })
        .collect();
    assert_eq!(ports, BTreeSet::from([(9001, 9000), (9101, 9100)]));
}

#[test]
fn compose_mounts_are_where_prometheus_and_grafana_read_them() {
    let config = compose_config();
    let root = root();
    let host_path = |service: &str, target: &str| -> PathBuf {
        let source = mount_source(&config, service, target)
            .unwrap_or_else(|| panic!("{service} mounts {target}"));
        let path = PathBuf::from(source);
        assert!(
            path.exists(),
            "{service} mounts {} which exists",
            path.display()
        );
        path
    };

    // Prometheus reads /etc/prometheus/prometheus.yml: this repository's prometheus/.
    assert_eq!(
        host_path("prometheus", "/etc/prometheus"),
        root.join("prometheus")
    );
    let command: Vec<&str> = config["services"]["prometheus"]["command"]
        .as_array()
        .expect("prometheus command")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect();
    assert!(command.contains(&"--config.file=/etc/prometheus/prometheus.yml"));
    assert!(command.contains(&"--storage.tsdb.path=/prometheus"));

    // Prometheus scrapes the receiver's HTTP port by its service name.
    let prometheus = yaml(&read("prometheus/prometheus.yml"));
    let relay_job = prometheus["scrape_configs"]
        .as_array()
        .expect("scrape configs")
        .iter()
        .find(|j| j["job_name"] == "kube-relay")
        .expect("a kube-relay job (dashboards and alerts select it)");
    assert_eq!(
        relay_job["static_configs"][0]["targets"][0],
        "receiver:9100"
    );

    // Grafana reads its provisioning from /etc/grafana/provisioning and the dashboards from
    // the path the dashboard provider names.
    assert_eq!(
        host_path("grafana", "/etc/grafana/provisioning"),
        root.join("grafana/provisioning")
    );
    let provider = yaml(&read("grafana/provisioning/dashboards/kube-relay.yml"));
    assert_eq!(provider["apiVersion"], 1);
    let dashboards_path = str_at(&provider, "/providers/0/options/path");
    assert_eq!(
        host_path("grafana", dashboards_path),
        root.join("grafana/dashboards")
    );
    let home = str_at(
        &config,
        "/services/grafana/environment/GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH",
    );
    let home_file = home
        .strip_prefix(&format!("{dashboards_path}/"))
        .expect("the home dashboard is a provisioned one");
    assert!(root.join("grafana/dashboards").join(home_file).is_file());

    // The datasource points at the prometheus service's port.
    let datasources = yaml(&read("grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(datasources["apiVersion"], 1);
    assert_eq!(
        str_at(&datasources, "/datasources/0/url"),
        "http://prometheus:9090"
    );
    assert!(!str_at(&datasources, "/datasources/0/uid").is_empty());
    let prometheus_ports = config["services"]["prometheus"]["ports"]
        .as_array()
        .expect("ports");
    assert!(prometheus_ports.iter().any(|p| p["target"] == 9090));
}

/// The `KUBE_RELAY_*` variables of `settings` as a process environment for `section`'s
/// binary (others, such as `RUST_LOG`, are left out); panics on a variable that is neither
/// the binary's (`KUBE_RELAY_<SECTION>_*`) nor shared. Loading them then refuses a name the
/// binary does not know.
fn relay_env(section: Section, settings: &BTreeMap<String, String>) -> Vec<(OsString, OsString)> {
    let prefix = format!("KUBE_RELAY_{}_", section.name().to_ascii_uppercase());
    settings
        .iter()
        .filter(|(name, _)| name.starts_with("KUBE_RELAY_"))
        .map(|(name, value)| {
            let shared = layer::SHARED_KEYS
                .iter()
                .any(|key| section.env_name(key) == *name);
            assert!(
                shared || name.starts_with(&prefix),
                "{name} is not a {} setting",
                section.name()
            );
            (OsString::from(name), OsString::from(value))
        })
        .collect()
}

/// `ENV` settings of a Dockerfile's last stage.
fn dockerfile_env(path: &str) -> BTreeMap<String, String> {
    instructions(&read(path))
        .into_iter()
        .filter(|(op, _)| op == "ENV")
        .flat_map(|(_, args)| {
            args.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn receiver_settings_in_compose_and_its_image_are_valid_receiver_flags() {
    let config = compose_config();
    let environment = &config["services"]["receiver"]["environment"];
    let mut settings = dockerfile_env("receiver/Dockerfile");
    for (key, value) in environment.as_object().expect("receiver environment") {
        if let Some(v) = value.as_str() {
            settings.insert(key.clone(), v.to_owned());
        }
    }
    // Passed through from the host only when set: each name must still be a setting (they
    // are checked one by one, as the token and the token file cannot be given together).
    let passed = passed_through(environment);
    for name in [
        "KUBE_RELAY_TOKEN",
        "KUBE_RELAY_TOKEN_FILE",
        "KUBE_RELAY_RECEIVER_TLS_CERT",
        "KUBE_RELAY_RECEIVER_TLS_KEY",
    ] {
        assert!(passed.contains(&name.to_owned()), "compose passes {name}");
    }
    for name in &passed {
        assert!(receiver_reads(name), "{name} is no receiver setting");
    }
    assert!(
        !receiver_reads("KUBE_RELAY_RECEIVER_TLS_CRT"),
        "the check can fail"
    );
    let env = relay_env(Section::Receiver, &settings);
    let receiver = ReceiverConfig::load(["receiver"], env.clone())
        .unwrap_or_else(|e| panic!("receiver with {env:?}: {e}"));
    assert_eq!(receiver.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(receiver.http_listen.to_string(), "0.0.0.0:9100");
    assert_eq!(receiver.ttl, std::time::Duration::from_secs(300));
}

#[test]
fn long_term_store_compose_writes_the_receiver_into_victoria_metrics() {
    let out = run_in(
        &root(),
        "docker-compose",
        &[
            "-f",
            "docker-compose.yml",
            "-f",
            "docker-compose.long-term-store.yml",
            "config",
        ],
        COMPOSE_SETTINGS,
        COMPOSE_HINT,
    );
    let config = yaml(&out);
    let env = &config["services"]["receiver"]["environment"];
    let url = str_at(env, "/KUBE_RELAY_RECEIVER_REMOTE_WRITE_URL");
    assert_eq!(url, "http://victoriametrics:8428/api/v1/write");
    assert!(
        mount_source(
            &config,
            "receiver",
            str_at(env, "/KUBE_RELAY_RECEIVER_STATE_DIR")
        )
        .is_some(),
        "the receiver's state directory (its remote-write queue) is a volume"
    );
    assert!(
        read("receiver/Dockerfile").contains("chown 10001:10001 /var/lib/kube-relay"),
        "the image's state directory is writable by the relay user"
    );
    let vm = &config["services"]["victoriametrics"];
    assert!(
        vm["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["target"] == 8428),
        "{vm:?}"
    );
    assert!(vm["healthcheck"]["test"].to_string().contains("/health"));
    assert_eq!(
        config["services"]["receiver"]["depends_on"]["victoriametrics"]["condition"],
        "service_healthy"
    );

    // Grafana gets both datasources; the Prometheus one is a copy kept identical.
    let datasources = mount_source(&config, "grafana", "/etc/grafana/provisioning/datasources")
        .expect("grafana's datasources mount");
    assert!(
        datasources.ends_with("grafana/long-term-store"),
        "{datasources}"
    );
    assert_eq!(
        read("grafana/long-term-store/prometheus.yml"),
        read("grafana/provisioning/datasources/prometheus.yml")
    );
    let vm_source = yaml(&read("grafana/long-term-store/victoriametrics.yml"));
    assert_eq!(
        str_at(&vm_source, "/datasources/0/url"),
        "http://victoriametrics:8428"
    );

    // The receiver's settings are still valid ones, and remote write is on.
    let mut settings = dockerfile_env("receiver/Dockerfile");
    for (key, value) in env.as_object().expect("receiver environment") {
        if let Some(v) = value.as_str() {
            settings.insert(key.clone(), v.to_owned());
        }
    }
    let env = relay_env(Section::Receiver, &settings);
    let receiver = ReceiverConfig::load(["receiver"], env.clone())
        .unwrap_or_else(|e| panic!("receiver with {env:?}: {e}"));
    assert_eq!(receiver.remote_write.len(), 1);
}

/// The first fenced block of `doc` whose first line is `first_line`, without the fences and
/// the block's indentation.
fn doc_block(doc: &str, first_line: &str) -> String {
    let mut lines = doc.lines().skip_while(|l| l.trim() != first_line);
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no block starting with {first_line:?}"));
    let indent = first.len() - first.trim_start().len();
    std::iter::once(first)
        .chain(lines.take_while(|l| !l.trim_start().starts_with("```")))
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_config_file_of_deploy_md_serves_both_binaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = doc_block(&read("docs/deploy.md"), "# kube-relay.toml")
        .replace("/etc/kube-relay/", &format!("{}/", dir.path().display()));
    std::fs::write(dir.path().join("token"), "s3cret\n").expect("token");
    let path = dir.path().join("kube-relay.toml");
    std::fs::write(&path, text).expect("write");
    let config = ["--config".to_owned(), path.display().to_string()];

    let sender = kube_relay_sender::Config::load(
        std::iter::once("sender".to_owned()).chain(config.clone()),
        std::iter::empty(),
    )
    .expect("the sender takes the file");
    assert_eq!(sender.targets, ["hostb:9000"]);
    assert_eq!(sender.token.as_deref(), Some("s3cret"));
    assert_eq!(sender.usage_interval, std::time::Duration::from_secs(30));

    let receiver = ReceiverConfig::load(
        std::iter::once("receiver".to_owned()).chain(config),
        std::iter::empty(),
    )
    .expect("the receiver takes the file");
    assert_eq!(receiver.token.as_deref(), Some("s3cret"));
    assert_eq!(receiver.ttl, std::time::Duration::from_secs(600));
    assert!(receiver.tls.is_some());
}

#[tokio::test]
async fn compose_healthcheck_passes_on_a_running_receiver_and_fails_without_one() {
    let config = compose_config();
    let test: Vec<&str> = config["services"]["receiver"]["healthcheck"]["test"]
        .as_array()
        .expect("healthcheck")
        .iter()
        .map(|a| a.as_str().expect("string"))
        .collect();
    assert_eq!(test[..3], ["CMD", "bash", "-c"]);
    assert!(test[3].contains("/dev/tcp/127.0.0.1/9100"), "{}", test[3]);

    let receiver = Receiver::bind(ReceiverConfig::loopback())
        .await
        .expect("receiver binds");
    let port = receiver.http_addr().port();
    let script = test[3].replace("/9100", &format!("/{port}"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(receiver.run(shutdown.clone()));
    let healthcheck = || {
        tokio::process::Command::new("bash")
            .args(["-c", &script])
            .stderr(std::process::Stdio::null())
            .status()
    };
    assert!(
        healthcheck().await.expect("bash runs").success(),
        "{script}"
    );

    shutdown.cancel();
    task.await.expect("receiver task").expect("clean shutdown");
    assert!(
        !healthcheck().await.expect("bash runs").success(),
        "no receiver, no health"
    );
}

// --- Prometheus ------------------------------------------------------------------------

const PROMTOOL_HINT: &str = "apt-get install -y prometheus";

#[test]
fn prometheus_config_and_its_rule_files_pass_promtool() {
    let out = run(
        "promtool",
        &["check", "config", "prometheus/prometheus.yml"],
        PROMTOOL_HINT,
    );
    assert!(out.contains("2 rule files found"), "{out}");
}

#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    let tests: Vec<String> = std::fs::read_dir(root().join("prometheus/tests"))
        .expect("prometheus/tests")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".test.yml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert!(!tests.is_empty());
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let out = run("promtool", &args, PROMTOOL_HINT);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The alerts the issues ask for, and the certificate reload alert, by rule file and name.
const ALERTS: [(&str, &[&str]); 2] = [
    (
        "prometheus/rules/kube-relay.yml",
        &[
            "KubeRelayReceiverDown",
            "KubeRelayClusterDisconnected",
            "KubeRelayClusterStale",
            "KubeRelaySourceDown",
            "KubeRelayClusterGone",
            "KubeRelayCertificateReloadFailed",
            "KubeRelayRemoteWriteBehind",
        ],
    ),
    (
        "prometheus/rules/kubernetes.yml",
        &[
            "KubePodCrashLooping",
            "KubeContainerOOMKilled",
            "KubeContainerWaiting",
            "KubePodNotScheduled",
            "KubePodNotReady",
            "KubeDeploymentReplicasMismatch",
            "KubeDeploymentRolloutStuck",
            "KubeHpaMaxedOut",
            "KubeHpaReplicasMismatch",
            "KubeHpaFlapping",
            "KubeNodeNotReady",
            "KubeNodeUnderPressure",
        ],
    ),
];

#[test]
fn every_alert_is_documented_and_tested_firing_and_quiet() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("prometheus/rules"))
        .expect("prometheus/rules")
        .map(|e| {
            format!(
                "prometheus/rules/{}",
                e.expect("dir entry").file_name().to_string_lossy()
            )
        })
        .collect();
    files.sort();
    let mut listed: Vec<&str> = ALERTS.iter().map(|(file, _)| *file).collect();
    listed.sort_unstable();
    assert_eq!(files, listed, "prometheus.yml loads every file in rules/");
    let mut names = BTreeSet::new();
    for (file, alerts) in ALERTS {
        let rules = yaml(&read(file));
        let mut in_file = BTreeSet::new();
        for group in rules["groups"].as_array().expect("groups") {
            for rule in group["rules"].as_array().expect("rules") {
                let name = str_at(rule, "/alert");
                in_file.insert(name.to_owned());
                let severity = str_at(rule, "/labels/severity");
                assert!(
                    ["critical", "warning", "info"].contains(&severity),
                    "{name}: severity {severity}"
                );
                for annotation in ["summary", "description"] {
                    assert!(
                        !str_at(rule, &format!("/annotations/{annotation}")).is_empty(),
                        "{name} has a {annotation}"
                    );
                }
                // alerts about a relayed cluster's objects say which cluster first
                if file.ends_with("kubernetes.yml") {
                    assert!(
                        str_at(rule, "/annotations/summary").starts_with("{{ $labels.cluster }}: "),
                        "{name}: the summary names the cluster"
                    );
                }
            }
        }
        assert_eq!(
            in_file,
            alerts.iter().map(|s| s.to_string()).collect(),
            "{file}"
        );
        names.extend(in_file);
    }

    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("prometheus/tests")).expect("tests dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for test in yaml(&text)["tests"].as_array().expect("tests") {
            for case in test["alert_rule_test"].as_array().into_iter().flatten() {
                let name = str_at(case, "/alertname").to_owned();
                match case["exp_alerts"].as_array() {
                    Some(alerts) if !alerts.is_empty() => firing.insert(name),
                    _ => quiet.insert(name),
                };
            }
        }
    }
    assert_eq!(firing, names, "every alert is shown firing");
    assert_eq!(quiet, names, "every alert is shown staying quiet");
}

// --- Kubernetes manifests --------------------------------------------------------------

const KUBECTL_HINT: &str =
    "kubectl (with its built-in kustomize) from the Kubernetes apt repository";

/// `kubectl kustomize <dir>` (a directory relative to the workspace root).
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = run_in(dir, "kubectl", &["kustomize", "."], &[], KUBECTL_HINT);
    yaml_docs(&out)
}

/// Renders `k8s/` plus the given components through a temporary overlay.
fn kustomize_with_components(components: &[&str]) -> Vec<Value> {
    std::fs::create_dir_all(root().join("target")).expect("target dir");
    let overlay = tempfile::Builder::new()
        .prefix("kustomize-overlay")
        .tempdir_in(root().join("target"))
        .expect("temporary overlay");
    // kustomize accepts relative paths only: the overlay sits in target/, next to k8s/.
    let k8s = Path::new("../..").join("k8s");
    let mut text = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\ncomponents:\n",
        k8s.display()
    );
    for c in components {
        text.push_str(&format!("  - {}\n", k8s.join(c).display()));
    }
    std::fs::write(overlay.path().join("kustomization.yaml"), text).expect("write overlay");
    kustomize(overlay.path())
}

/// Deserialises `doc` into `T` and fails when any field of `doc` does not survive the round
/// trip back to JSON: k8s-openapi's types skip unknown fields silently, so a typo'd field
/// name would otherwise vanish unnoticed.
fn strict<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut lost = Vec::new();
    compare("", doc, &back, &mut lost);
    if lost.is_empty() {
        Ok(typed)
    } else {
        Err(format!("not in the schema: {}", lost.join(", ")))
    }
}

fn compare(path: &str, original: &Value, back: &Value, lost: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(w) => compare(&here, value, w, lost),
                    None if value.is_null() => {}
                    None => lost.push(here),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                compare(&format!("{path}[{i}]"), v, w, lost);
            }
        }
        _ if original == back => {}
        _ => lost.push(format!("{path} ({original} became {back})")),
    }
}

/// One rendered object, typed.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Object {
    Namespace,
    ServiceAccount,
    ConfigMap(k8s_openapi::api::core::v1::ConfigMap),
    Service(k8s_openapi::api::core::v1::Service),
    ClusterRole(k8s_openapi::api::rbac::v1::ClusterRole),
    ClusterRoleBinding(k8s_openapi::api::rbac::v1::ClusterRoleBinding),
    RoleBinding,
    Deployment(k8s_openapi::api::apps::v1::Deployment),
    Job(k8s_openapi::api::batch::v1::Job),
    Hpa(k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler),
    ApiService(k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService),
}

/// Picks the k8s-openapi type by `apiVersion` and `kind` and deserialises strictly.
fn typed(doc: &Value) -> Result<Object, String> {
    use k8s_openapi::api::{apps, autoscaling, batch, core, rbac};
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration;

    fn is<T: Resource>(api_version: &str, kind: &str) -> bool {
        api_version == T::API_VERSION && kind == T::KIND
    }
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    Ok(match () {
        _ if is::<core::v1::Namespace>(api_version, kind) => {
            strict::<core::v1::Namespace>(doc)?;
            Object::Namespace
        }
        _ if is::<core::v1::ServiceAccount>(api_version, kind) => {
            strict::<core::v1::ServiceAccount>(doc)?;
            Object::ServiceAccount
        }
        _ if is::<core::v1::ConfigMap>(api_version, kind) => Object::ConfigMap(strict(doc)?),
        _ if is::<core::v1::Service>(api_version, kind) => Object::Service(strict(doc)?),
        _ if is::<rbac::v1::ClusterRole>(api_version, kind) => Object::ClusterRole(strict(doc)?),
        _ if is::<rbac::v1::ClusterRoleBinding>(api_version, kind) => {
            Object::ClusterRoleBinding(strict(doc)?)
        }
        _ if is::<rbac::v1::RoleBinding>(api_version, kind) => {
            strict::<rbac::v1::RoleBinding>(doc)?;
            Object::RoleBinding
        }
        _ if is::<apps::v1::Deployment>(api_version, kind) => Object::Deployment(strict(doc)?),
        _ if is::<batch::v1::Job>(api_version, kind) => Object::Job(strict(doc)?),
        _ if is::<autoscaling::v2::HorizontalPodAutoscaler>(api_version, kind) => {
            Object::Hpa(strict(doc)?)
        }
        _ if is::<apiregistration::v1::APIService>(api_version, kind) => {
            Object::ApiService(strict(doc)?)
        }
        _ => return Err(format!("no k8s-openapi type for {api_version} {kind}")),
    })
}

/// Every rendered object, typed, keyed by `Kind namespace/name`.
fn typed_objects(docs: &[Value]) -> BTreeMap<String, Object> {
    let mut objects = BTreeMap::new();
    let mut errors = Vec::new();
    for doc in docs {
        let key = format!(
            "{} {}/{}",
            doc["kind"].as_str().unwrap_or("?"),
            doc["metadata"]["namespace"].as_str().unwrap_or(""),
            doc["metadata"]["name"].as_str().unwrap_or("?")
        );
        match typed(doc) {
            Ok(object) => {
                assert!(
                    objects.insert(key.clone(), object).is_none(),
                    "duplicate {key}"
                );
            }
            Err(e) => errors.push(format!("{key}: {e}")),
        }
    }
    assert!(
        errors.is_empty(),
        "objects that are not Kubernetes objects:\n{}",
        errors.join("\n")
    );
    objects
}

#[test]
fn strict_parsing_rejects_a_typo_and_an_unknown_kind() {
    let good = yaml(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n",
    );
    assert!(matches!(typed(&good), Ok(Object::Deployment(_))));

    let mut typo = good.clone();
    let spec = typo["spec"].as_object_mut().expect("spec");
    let replicas = spec.remove("replicas").expect("replicas");
    spec.insert("replcas".into(), replicas);
    let err = typed(&typo).expect_err("a typo'd field is an error");
    assert!(err.contains(".spec.replcas"), "{err}");

    let mut deep_typo = good.clone();
    deep_typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always".into();
    let err = typed(&deep_typo).expect_err("a typo deep inside is an error");
    assert!(err.contains("containers[0].imagePullPolicyy"), "{err}");

    let mut wrong_kind = good;
    wrong_kind["kind"] = "Deploymnet".into();
    assert!(typed(&wrong_kind).is_err());
}

#[test]
fn kustomization_renders_only_strict_kubernetes_objects() {
    let objects = typed_objects(&kustomize(&root().join("k8s")));
    let keys: BTreeSet<&str> = objects
        .keys()
        .map(String::as_str)
        // generated names carry a content hash
        .filter(|k| !k.starts_with("ConfigMap "))
        .collect();
    let expected = BTreeSet::from([
        // metrics-server
        "ServiceAccount kube-system/metrics-server",
        "ClusterRole /system:aggregated-metrics-reader",
        "ClusterRole /system:metrics-server",
        "RoleBinding kube-system/metrics-server-auth-reader",
        "ClusterRoleBinding /metrics-server:system:auth-delegator",
        "ClusterRoleBinding /system:metrics-server",
        "Service kube-system/metrics-server",
        "Deployment kube-system/metrics-server",
        "APIService /v1beta1.metrics.k8s.io",
        // the HPA walkthrough
        "Deployment default/php-apache",
        "Service default/php-apache",
        "HorizontalPodAutoscaler default/php-apache",
        "Job default/load-generator",
        // the sender
        "Namespace /kube-relay",
        "ServiceAccount kube-relay/kube-relay-sender",
        "ClusterRole /kube-relay-sender",
        "ClusterRoleBinding /kube-relay-sender",
        "Deployment kube-relay/kube-relay-sender",
    ]);
    assert_eq!(keys, expected);
    let config_maps: Vec<&String> = objects
        .keys()
        .filter(|k| k.starts_with("ConfigMap "))
        .collect();
    assert_eq!(
        config_maps.len(),
        1,
        "the sender's generated ConfigMap: {config_maps:?}"
    );
}

#[test]
fn metrics_server_accepts_minikube_kubelet_certificates() {
    let objects = typed_objects(&kustomize(&root().join("k8s")));
    let Some(Object::Deployment(deployment)) = objects.get("Deployment kube-system/metrics-server")
    else {
        panic!("metrics-server Deployment");
    };
    let container = &deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
        .containers[0];
    let args = container.args.clone().unwrap_or_default();
    assert!(
        args.contains(&"--kubelet-insecure-tls".to_owned()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--cert-dir=/tmp".to_owned()),
        "upstream arguments are kept: {args:?}"
    );
    let Some(Object::ApiService(api)) = objects.get("APIService /v1beta1.metrics.k8s.io") else {
        panic!("metrics.k8s.io APIService");
    };
    let spec = api.spec.as_ref().expect("APIService spec");
    let service = spec.service.as_ref().expect("backed by a service");
    assert_eq!(
        (
            spec.group.as_deref(),
            service.name.as_deref(),
            service.namespace.as_deref()
        ),
        (
            Some("metrics.k8s.io"),
            Some("metrics-server"),
            Some("kube-system")
        )
    );
    assert!(objects.contains_key("Service kube-system/metrics-server"));
}

#[test]
fn demo_follows_the_hpa_walkthrough() {
    let objects = typed_objects(&kustomize(&root().join("k8s")));
    let Some(Object::Hpa(hpa)) = objects.get("HorizontalPodAutoscaler default/php-apache") else {
        panic!("php-apache HPA");
    };
    let spec = hpa.spec.as_ref().expect("HPA spec");
    assert_eq!(
        (
            spec.scale_target_ref.kind.as_str(),
            spec.scale_target_ref.name.as_str()
        ),
        ("Deployment", "php-apache")
    );
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 10));
    let metric = &spec.metrics.as_ref().expect("metrics")[0];
    let resource = metric.resource.as_ref().expect("a resource metric");
    assert_eq!(resource.name, "cpu");
    assert_eq!(resource.target.average_utilization, Some(50));

    let Some(Object::Deployment(web)) = objects.get("Deployment default/php-apache") else {
        panic!("php-apache Deployment");
    };
    let web_spec = web.spec.as_ref().expect("spec");
    assert_eq!(web_spec.replicas, None, "the HPA owns the replica count");
    let pod = web_spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("registry.k8s.io/hpa-example")
    );
    let requests = pod.containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests: utilization is relative to them");
    assert_eq!(requests["cpu"].0, "200m");
    let pod_labels = web_spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("pod labels");

    let Some(Object::Service(service)) = objects.get("Service default/php-apache") else {
        panic!("php-apache Service");
    };
    let selector = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .expect("selector");
    assert!(
        selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "the Service selects php-apache's pods"
    );

    let Some(Object::Job(job)) = objects.get("Job default/load-generator") else {
        panic!("load-generator Job");
    };
    let job_pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod");
    let script = job_pod.containers[0]
        .args
        .clone()
        .unwrap_or_default()
        .join("\n");
    assert!(script.contains("wget -q -O- http://php-apache"), "{script}");
    assert_eq!(job_pod.restart_policy.as_deref(), Some("Never"));
}

/// `(API group, resource, verb)`.
type Grant = (String, String, String);

/// The access the sender uses with `usage_source` (`metrics-api` or `kubelet`), from the
/// sender's own list ([`kube_relay_sender::required_access`]).
fn sender_access(usage_source: &str) -> BTreeSet<Grant> {
    use clap::ValueEnum;
    use kube_relay_sender::config::UsageSource;

    let usage = UsageSource::from_str(usage_source, false).expect("a usage source");
    kube_relay_sender::required_access(usage)
        .into_iter()
        .flat_map(|access| {
            access.verbs.iter().map(move |verb| {
                (
                    access.group.to_owned(),
                    access.resource.to_owned(),
                    (*verb).to_owned(),
                )
            })
        })
        .collect()
}

/// What the ClusterRoles bound to the sender Deployment's service account grant, and the
/// sender's configured usage source.
fn granted_to_sender(objects: &BTreeMap<String, Object>) -> (BTreeSet<Grant>, String) {
    let Some(Object::Deployment(sender)) = objects.get("Deployment kube-relay/kube-relay-sender")
    else {
        panic!("sender Deployment");
    };
    let pod = sender
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    let account = pod.service_account_name.clone().expect("a service account");
    let config_map_name = pod.containers[0]
        .env_from
        .as_ref()
        .and_then(|e| e[0].config_map_ref.as_ref())
        .map(|c| c.name.clone())
        .expect("settings from a ConfigMap");
    let Some(Object::ConfigMap(config_map)) =
        objects.get(&format!("ConfigMap kube-relay/{config_map_name}"))
    else {
        panic!("the sender's ConfigMap {config_map_name} is rendered");
    };
    let usage = config_map
        .data
        .as_ref()
        .and_then(|d| d.get("KUBE_RELAY_SENDER_USAGE_SOURCE").cloned())
        .expect("usage source set");

    let mut grants = BTreeSet::new();
    for object in objects.values() {
        let Object::ClusterRoleBinding(binding) = object else {
            continue;
        };
        let binds_sender = binding.subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount"
                && s.name == account
                && s.namespace.as_deref() == Some("kube-relay")
        });
        if !binds_sender {
            continue;
        }
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        let Some(Object::ClusterRole(role)) =
            objects.get(&format!("ClusterRole /{}", binding.role_ref.name))
        else {
            panic!("bound ClusterRole {} is rendered", binding.role_ref.name);
        };
        for rule in role.rules.iter().flatten() {
            assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        assert_ne!(verb, "*", "no wildcard verbs");
                        grants.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
    }
    (grants, usage)
}

#[test]
fn sender_cluster_role_grants_exactly_what_the_sender_uses() {
    let (granted, usage) = granted_to_sender(&typed_objects(&kustomize(&root().join("k8s"))));
    assert_eq!(usage, "metrics-api");
    assert_eq!(granted, sender_access("metrics-api"));
}

#[test]
fn kubelet_usage_component_swaps_metrics_api_for_node_proxy() {
    let (granted, usage) = granted_to_sender(&typed_objects(&kustomize_with_components(&[
        "sender/kubelet-usage",
    ])));
    assert_eq!(usage, "kubelet");
    assert_eq!(granted, sender_access("kubelet"));
}

#[test]
fn sender_deployment_runs_unprivileged_with_its_settings_from_the_config_map() {
    let objects = typed_objects(&kustomize(&root().join("k8s")));
    let Some(Object::Deployment(sender)) = objects.get("Deployment kube-relay/kube-relay-sender")
    else {
        panic!("sender Deployment");
    };
    let spec = sender.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(1), "one sender per cluster");
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate"),
        "the old sender leaves before the new one connects"
    );
    let pod = spec.template.spec.as_ref().expect("pod spec");
    let pod_security = pod.security_context.as_ref().expect("pod security context");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("kube-relay-sender:latest"));
    let security = container
        .security_context
        .as_ref()
        .expect("container security context");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));

    let config_map = objects
        .values()
        .find_map(|o| match o {
            Object::ConfigMap(c) => Some(c),
            _ => None,
        })
        .expect("the sender's ConfigMap");
    let data = config_map.data.clone().unwrap_or_default();
    for key in data.keys() {
        assert!(
            key.starts_with("KUBE_RELAY_") || key == "RUST_LOG",
            "{key} is a sender setting"
        );
    }
    for key in ["KUBE_RELAY_SENDER_TARGET", "KUBE_RELAY_SENDER_CLUSTER"] {
        assert!(data.contains_key(key), "{key} is set");
    }
}

#[test]
fn sender_serves_its_own_port_on_the_pod_ip_with_the_probes_on_it() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    let objects = typed_objects(&kustomize(&root().join("k8s")));
    let Some(Object::Deployment(sender)) = objects.get("Deployment kube-relay/kube-relay-sender")
    else {
        panic!("sender Deployment");
    };
    let container = &sender
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
        .containers[0];
    let port = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("a container port named metrics");
    let pod_ip = container
        .env
        .iter()
        .flatten()
        .find(|v| v.name == "POD_IP")
        .and_then(|v| v.value_from.as_ref()?.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(pod_ip, Some("status.podIP"), "POD_IP from the downward API");

    // The flags as the kubelet expands `$(POD_IP)`, for an IPv4 and an IPv6 pod.
    let (start, _) = sender_command_line(&objects);
    for ip in ["10.1.2.3", "fd00::7"] {
        let expanded = SenderStart {
            args: start
                .args
                .iter()
                .map(|a| a.replace("$(POD_IP)", ip))
                .collect(),
            env: start.env.clone(),
        };
        let config = expanded.config();
        let listen = config.http_listen.expect("--http-listen is set");
        let addr = kube_relay_sender::http::listen_addr(&listen)
            .unwrap_or_else(|| panic!("{listen} is an address and a port"));
        assert_eq!(addr.ip().to_string(), ip, "on the pod IP");
        assert_eq!(
            i32::from(addr.port()),
            port.container_port,
            "the metrics port is where the sender listens"
        );
    }
    for (probe, path) in [
        (container.liveness_probe.as_ref(), "/healthz"),
        (container.readiness_probe.as_ref(), "/readyz"),
    ] {
        let get = probe
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("an HTTP probe on {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("metrics".to_owned()));
    }
}

/// The sender's settings in the rendered manifests: the ConfigMap, the container's
/// arguments and its other environment variables (values from Secrets become `x`).
fn sender_command_line(objects: &BTreeMap<String, Object>) -> (SenderStart, Vec<String>) {
    let Some(Object::Deployment(sender)) = objects.get("Deployment kube-relay/kube-relay-sender")
    else {
        panic!("sender Deployment");
    };
    let container = &sender
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
        .containers[0];
    let mut settings = BTreeMap::new();
    for object in objects.values() {
        if let Object::ConfigMap(config_map) = object {
            settings.extend(config_map.data.clone().unwrap_or_default());
        }
    }
    for var in container.env.iter().flatten() {
        settings.insert(
            var.name.clone(),
            var.value.clone().unwrap_or_else(|| "x".into()),
        );
    }
    let mut args = vec!["sender".to_owned()];
    args.extend(container.args.clone().unwrap_or_default());
    let env = relay_env(Section::Sender, &settings);
    let mounts = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.clone())
        .collect();
    (SenderStart { args, env }, mounts)
}

/// The sender's arguments and `KUBE_RELAY_*` environment in the manifests.
#[derive(Debug)]
struct SenderStart {
    args: Vec<String>,
    env: Vec<(OsString, OsString)>,
}

impl SenderStart {
    fn config(&self) -> kube_relay_sender::Config {
        kube_relay_sender::Config::load(&self.args, self.env.clone())
            .unwrap_or_else(|e| panic!("sender {self:?}: {e}"))
    }
}

#[test]
fn sender_settings_in_the_manifests_are_valid_sender_flags() {
    use kube_relay_sender::config::UsageSource;

    let (start, mounts) = sender_command_line(&typed_objects(&kustomize(&root().join("k8s"))));
    let config = start.config();
    assert_eq!(config.targets, ["192.0.2.10:9000"]);
    assert_eq!(config.cluster.as_deref(), Some("minikube"));
    assert_eq!(config.usage_source, UsageSource::MetricsApi);
    assert!(
        config.token.is_some(),
        "the token comes from the Secret when it exists"
    );
    let state_dir = config.state_dir.expect("a state directory");
    assert!(
        mounts.iter().any(|m| Path::new(m) == state_dir),
        "the state directory {} is a mounted volume ({mounts:?}): the root filesystem is read-only",
        state_dir.display()
    );

    let (start, _) = sender_command_line(&typed_objects(&kustomize_with_components(&[
        "sender/kubelet-usage",
    ])));
    let config = start.config();
    assert_eq!(config.usage_source, UsageSource::Kubelet);
}

// --- Dockerfiles -----------------------------------------------------------------------

/// The workspace's packages: name, directory, and binary targets.
fn workspace_packages() -> Vec<(String, PathBuf, Vec<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = run(
        &cargo,
        &[
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ],
        "rustup",
    );
    let metadata: Value = serde_json::from_str(&out).expect("cargo metadata JSON");
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let dir = PathBuf::from(str_at(p, "/manifest_path"))
                .parent()
                .expect("package dir")
                .to_path_buf();
            let bins = p["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "bin"))
                })
                .map(|t| str_at(t, "/name").to_owned())
                .collect();
            (str_at(p, "/name").to_owned(), dir, bins)
        })
        .collect()
}

/// A Dockerfile's instructions with continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.starts_with('#') || trimmed.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (op, args) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((op.to_ascii_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    out
}

#[test]
fn dockerfiles_build_the_workspace_binary_in_stages_and_run_it_unprivileged() {
    let packages = workspace_packages();
    for (crate_dir, package, binary, ports) in [
        (
            "receiver",
            "kube-relay-receiver",
            "receiver",
            vec!["9000", "9100"],
        ),
        ("sender", "kube-relay-sender", "sender", vec![]),
    ] {
        let dockerfile = format!("{crate_dir}/Dockerfile");
        let steps = instructions(&read(&dockerfile));
        let (_, dir, bins) = packages
            .iter()
            .find(|(name, _, _)| name == package)
            .unwrap_or_else(|| panic!("{package} is a workspace package"));
        assert_eq!(dir, &root().join(crate_dir));
        assert!(
            bins.contains(&binary.to_owned()),
            "{package} builds bin {binary}"
        );

        let froms: Vec<&String> = steps
            .iter()
            .filter(|(op, _)| op == "FROM")
            .map(|(_, a)| a)
            .collect();
        assert_eq!(
            froms.len(),
            2,
            "{dockerfile}: a build stage and a runtime stage"
        );
        assert!(
            steps
                .iter()
                .any(|(op, a)| op == "ARG" && a == "RUST_IMAGE=rust:1-bookworm"),
            "{dockerfile} builds with rust:1-bookworm"
        );
        assert!(
            froms[0].starts_with("${RUST_IMAGE} AS build"),
            "{dockerfile}: {froms:?}"
        );
        let runtime_base = froms[1].split_whitespace().next().unwrap_or_default();
        assert!(
            [
                "debian:bookworm-slim",
                "gcr.io/distroless/cc-debian12:nonroot"
            ]
            .contains(&runtime_base),
            "{dockerfile}: small runtime image, got {runtime_base}"
        );

        let build = steps
            .iter()
            .find(|(op, a)| op == "RUN" && a.contains("cargo build"))
            .map(|(_, a)| a.as_str())
            .unwrap_or_else(|| panic!("{dockerfile} runs cargo build"));
        for flag in [
            "--release",
            "--locked",
            &format!("-p {package}"),
            &format!("--bin {binary}"),
        ] {
            assert!(
                build.contains(flag),
                "{dockerfile}: cargo build {flag}: {build}"
            );
        }
        assert!(build.contains(&format!("target/release/{binary} /out/{binary}")));

        let runtime: Vec<&(String, String)> = steps
            .iter()
            .skip_while(|(op, a)| !(op == "FROM" && a == froms[1]))
            .collect();
        assert!(
            runtime.iter().any(|(op, a)| op == "COPY"
                && a == &format!("--from=build /out/{binary} /usr/local/bin/{binary}")),
            "{dockerfile}: the runtime stage takes only the binary"
        );
        let user = runtime
            .iter()
            .rev()
            .find(|(op, _)| op == "USER")
            .map(|(_, a)| a.as_str())
            .unwrap_or_else(|| panic!("{dockerfile}: the runtime stage sets USER"));
        let uid = user.split(':').next().unwrap_or_default();
        assert!(
            uid.parse::<u32>().is_ok_and(|uid| uid >= 1000),
            "{dockerfile}: numeric non-root USER (Kubernetes runAsNonRoot checks it), got {user}"
        );
        assert!(runtime.iter().any(|(op, a)| op == "ENTRYPOINT"
            && a == &format!("[\"/usr/local/bin/{binary}\"]")));
        let exposed: Vec<&str> = runtime
            .iter()
            .filter(|(op, _)| op == "EXPOSE")
            .flat_map(|(_, a)| a.split_whitespace())
            .collect();
        assert_eq!(exposed, ports, "{dockerfile}: exposed ports");
    }
}

#[test]
fn sender_image_user_matches_the_deployment_security_context() {
    let steps = instructions(&read("sender/Dockerfile"));
    let user = steps
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, a)| a.clone())
        .expect("USER");
    let objects = typed_objects(&kustomize(&root().join("k8s")));
    let Some(Object::Deployment(sender)) = objects.get("Deployment kube-relay/kube-relay-sender")
    else {
        panic!("sender Deployment");
    };
    let pod_security = sender
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.security_context.as_ref())
        .expect("pod security context");
    assert_eq!(
        format!(
            "{}:{}",
            pod_security.run_as_user.expect("runAsUser"),
            pod_security.run_as_group.expect("runAsGroup")
        ),
        user
    );
}

#[test]
fn docker_build_context_keeps_what_cargo_needs_and_drops_build_output() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').trim_start_matches("**/").to_owned())
        .collect();
    let ignored = |path: &str| {
        patterns
            .iter()
            .any(|p| path == p || path.starts_with(&format!("{p}/")))
    };
    for needed in ["Cargo.toml", "Cargo.lock"] {
        assert!(!ignored(needed), ".dockerignore keeps {needed}");
    }
    for (name, dir, _) in workspace_packages() {
        let rel = dir
            .strip_prefix(root())
            .expect("package inside the workspace")
            .to_string_lossy()
            .into_owned();
        assert!(
            !ignored(&rel),
            ".dockerignore keeps workspace member {name} ({rel})"
        );
    }
    for dropped in ["target", ".git"] {
        assert!(ignored(dropped), ".dockerignore drops {dropped}");
    }
}
