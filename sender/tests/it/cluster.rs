//! The sender against the real simulated cluster (manual clock) and the real receiver: every
//! family appears, changes and disappears with its object; usage integrates PodMetrics into
//! a monotonic counter; without metrics-server the rest keeps working; deleted HPAs, nodes
//! and namespaces take their series with them (a namespace with workloads stays Terminating).

use crate::support;

use std::time::Duration;

use k8s_metrics::v1beta1::PodMetrics;
use kube::api::{Api, ListParams};
use kube_relay_sender::config::UsageSource;
use kube_relay_sender::kubeclient::plain_client;
use kube_relay_sender::quantity::parse_quantity;
use kube_relay_sim::Scenario;

use support::{Bed, value, values};

const DEMO: &str = include_str!("../../../sim/scenarios/demo.yaml");

fn demo() -> Scenario {
    Scenario::builtin("demo").expect("demo scenario")
}

/// Pod names of a deployment, as the simulated API serves them.
fn pods_of(bed: &Bed, deployment: &str) -> Vec<String> {
    bed.handle
        .pods()
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .filter(|n| n.starts_with(&format!("{deployment}-")))
        .collect()
}

/// Advances simulated time in `step`s (at most `max` in total) until `check` holds on the
/// receiver's `/metrics`, waiting a little real time after each step for the relay.
async fn advance_until<T>(
    bed: &Bed,
    step: Duration,
    max: Duration,
    what: &str,
    check: impl Fn(&str) -> Option<T>,
) -> T {
    let mut advanced = Duration::ZERO;
    loop {
        let text = bed.metrics().await;
        if let Some(v) = check(&text) {
            return v;
        }
        // Give the watchers a moment to deliver before moving time on.
        let settled = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                if let Some(v) = check(&bed.metrics().await) {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        if let Ok(v) = settled {
            return v;
        }
        assert!(
            advanced < max,
            "{what}: not seen within {max:?} of simulated time"
        );
        bed.advance(step);
        advanced += step;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_appears_changes_and_disappears_with_its_object() {
    let bed = Bed::start(demo()).await;
    let sender = bed.sender("demo", bed.config());
    let c = ("cluster", "demo");

    // At once: nodes, namespaces, pods with their spec, the HPA's spec.
    sender.wait_synced(7).await;
    let text = bed.metrics().await;
    assert_eq!(values(&text, "kube_node_info", &[c]).len(), 3);
    assert_eq!(
        value(
            &text,
            "kube_namespace_status_phase",
            &[c, ("namespace", "default"), ("phase", "Active")]
        ),
        Some(1.0)
    );
    for (family, labels) in [
        (
            "kube_node_status_capacity",
            vec![("resource", "cpu"), ("unit", "core")],
        ),
        (
            "kube_node_status_allocatable",
            vec![("resource", "memory"), ("unit", "byte")],
        ),
        (
            "kube_node_status_condition",
            vec![("condition", "Ready"), ("status", "true")],
        ),
        ("machine_cpu_cores", vec![]),
        ("machine_memory_bytes", vec![]),
    ] {
        let mut labels = labels;
        labels.push(c);
        let found = values(&text, family, &labels);
        assert_eq!(found.len(), 3, "{family} {labels:?} per node\n{text}");
    }
    assert_eq!(
        value(&text, "machine_cpu_cores", &[c]),
        value(
            &text,
            "kube_node_status_capacity",
            &[c, ("resource", "cpu"), ("unit", "core")]
        ),
        "machine_cpu_cores is the CPU capacity"
    );
    assert!(
        value(
            &text,
            "kube_namespace_created",
            &[c, ("namespace", "default")]
        )
        .is_some()
    );
    let php_deployment = [c, ("namespace", "default"), ("deployment", "php-apache")];
    assert_eq!(
        value(&text, "kube_deployment_spec_replicas", &php_deployment),
        Some(1.0)
    );
    assert!(
        value(
            &text,
            "kube_deployment_metadata_generation",
            &php_deployment
        )
        .is_some()
    );
    assert_eq!(
        values(
            &text,
            "kube_replicaset_owner",
            &[
                c,
                ("owner_kind", "Deployment"),
                ("owner_name", "php-apache")
            ]
        )
        .len(),
        1
    );
    let php = &pods_of(&bed, "php-apache")[0];
    let p = ("pod", php.as_str());
    assert!(value(&text, "kube_pod_created", &[c, p]).is_some());
    for (family, labels, expected) in [
        (
            "kube_pod_container_resource_requests",
            vec![("resource", "cpu"), ("unit", "core")],
            0.2,
        ),
        (
            "kube_pod_container_resource_limits",
            vec![("resource", "memory"), ("unit", "byte")],
            134_217_728.0,
        ),
        (
            "kube_pod_owner",
            vec![
                ("owner_kind", "ReplicaSet"),
                ("owner_is_controller", "true"),
            ],
            1.0,
        ),
        (
            "kube_pod_status_qos_class",
            vec![("qos_class", "Burstable")],
            1.0,
        ),
    ] {
        let mut labels = labels;
        labels.extend([c, p]);
        assert_eq!(
            value(&text, family, &labels),
            Some(expected),
            "{family} {labels:?}\n{text}"
        );
    }
    let hpa = [c, ("horizontalpodautoscaler", "php-apache")];
    assert_eq!(
        value(
            &text,
            "kube_horizontalpodautoscaler_spec_min_replicas",
            &hpa
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "kube_horizontalpodautoscaler_spec_max_replicas",
            &hpa
        ),
        Some(10.0)
    );
    assert_eq!(
        value(
            &text,
            "kube_horizontalpodautoscaler_spec_target_metric",
            &[
                hpa[0],
                hpa[1],
                ("metric_name", "cpu"),
                ("metric_target_type", "utilization")
            ]
        ),
        Some(50.0)
    );
    assert_eq!(
        value(
            &text,
            "kube_horizontalpodautoscaler_info",
            &[
                hpa[0],
                hpa[1],
                ("scaletargetref_kind", "Deployment"),
                ("scaletargetref_name", "php-apache")
            ]
        ),
        Some(1.0)
    );
    bed.wait_for("the sender's series count", |t| {
        value(t, "relay_sender_series", &[c]).filter(|n| *n > 50.0)
    })
    .await;

    // Pods become Running and Ready, usage appears, the HPA scales up under load.
    advance_until(
        &bed,
        Duration::from_secs(5),
        Duration::from_secs(120),
        "running, usage, scale-up",
        |t| {
            let running =
                value(t, "kube_pod_status_phase", &[c, p, ("phase", "Running")]) == Some(1.0);
            let ready =
                value(t, "kube_pod_status_ready", &[c, p, ("condition", "true")]) == Some(1.0);
            let container_running = value(t, "kube_pod_container_status_running", &[c, p])
                == Some(1.0)
                && value(
                    t,
                    "kube_pod_container_info",
                    &[
                        c,
                        p,
                        ("container", "php-apache"),
                        ("image_spec", "registry.k8s.io/hpa-example"),
                    ],
                ) == Some(1.0);
            let cpu = value(
                t,
                "container_cpu_usage_seconds_total",
                &[
                    c,
                    p,
                    ("container", "php-apache"),
                    ("image", "registry.k8s.io/hpa-example"),
                ],
            )
            .is_some();
            let memory =
                value(t, "container_memory_working_set_bytes", &[c, p]).is_some_and(|m| m > 0.0);
            let current = value(
                t,
                "kube_horizontalpodautoscaler_status_target_metric",
                &[
                    hpa[0],
                    hpa[1],
                    ("metric_name", "cpu"),
                    ("metric_target_type", "utilization"),
                ],
            )
            .is_some();
            let desired = value(
                t,
                "kube_horizontalpodautoscaler_status_desired_replicas",
                &hpa,
            )
            .is_some_and(|d| d > 1.0);
            let scaled = value(
                t,
                "kube_horizontalpodautoscaler_scaling_events_total",
                &[hpa[0], hpa[1], ("direction", "up")],
            )
            .is_some_and(|n| n >= 1.0);
            let when = value(
                t,
                "kube_horizontalpodautoscaler_last_scaling_event_timestamp_seconds",
                &[hpa[0], hpa[1], ("direction", "up")],
            )
            .is_some();
            let available = value(
                t,
                "kube_deployment_status_replicas_available",
                &[c, ("deployment", "php-apache")],
            )
            .is_some_and(|n| n >= 1.0);
            let scheduled = value(
                t,
                "kube_pod_status_scheduled",
                &[c, p, ("condition", "true")],
            ) == Some(1.0);
            let condition = value(
                t,
                "kube_horizontalpodautoscaler_status_condition",
                &[
                    hpa[0],
                    hpa[1],
                    ("condition", "AbleToScale"),
                    ("status", "true"),
                ],
            ) == Some(1.0);
            (running
                && ready
                && container_running
                && cpu
                && memory
                && current
                && desired
                && scaled
                && when
                && condition
                && available
                && scheduled)
                .then_some(())
        },
    )
    .await;
    let text = bed.metrics().await;
    assert_eq!(
        value(&text, "relay_sender_usage_available", &[c]),
        Some(1.0)
    );
    assert!(
        value(
            &text,
            "kube_horizontalpodautoscaler_status_current_replicas",
            &hpa
        )
        .is_some()
    );

    // A crash loop: restarts count, the waiting reason appears, then goes once running again.
    let echo = pods_of(&bed, "echo-server")[0].clone();
    let e = ("pod", echo.as_str());
    bed.handle.crash_pod("default", &echo, 2).expect("crash");
    advance_until(
        &bed,
        Duration::from_secs(1),
        Duration::from_secs(60),
        "crash loop",
        |t| {
            (value(
                t,
                "kube_pod_container_status_waiting_reason",
                &[c, e, ("reason", "CrashLoopBackOff")],
            ) == Some(1.0)
                && value(t, "kube_pod_container_status_restarts_total", &[c, e])
                    .is_some_and(|r| r >= 1.0)
                && value(t, "kube_pod_container_status_waiting", &[c, e]) == Some(1.0)
                && value(
                    t,
                    "kube_pod_container_status_last_terminated_exitcode",
                    &[c, e],
                )
                .is_some()
                && values(
                    t,
                    "kube_pod_container_status_last_terminated_reason",
                    &[c, e],
                )
                .len()
                    == 1)
                .then_some(())
        },
    )
    .await;
    advance_until(
        &bed,
        Duration::from_secs(5),
        Duration::from_secs(300),
        "recovered",
        |t| {
            (value(t, "kube_pod_container_status_running", &[c, e]) == Some(1.0)
                && values(t, "kube_pod_container_status_waiting_reason", &[c, e]).is_empty())
            .then_some(())
        },
    )
    .await;

    // A deleted pod takes all its series with it, usage included.
    let victim = pods_of(&bed, "php-apache")[0].clone();
    let v = ("pod", victim.as_str());
    advance_until(
        &bed,
        Duration::from_secs(5),
        Duration::from_secs(60),
        "victim usage",
        |t| value(t, "container_cpu_usage_seconds_total", &[c, v]),
    )
    .await;
    bed.handle.delete_pod("default", &victim).expect("delete");
    advance_until(
        &bed,
        Duration::from_secs(1),
        Duration::from_secs(30),
        "victim gone",
        |t| {
            let gone = !t.lines().any(|l| l.contains(&format!("pod=\"{victim}\"")));
            gone.then_some(())
        },
    )
    .await;

    // Load ends: the HPA scales down, counted as such.
    advance_until(
        &bed,
        Duration::from_secs(10),
        Duration::from_secs(600),
        "scale-down",
        |t| {
            value(
                t,
                "kube_horizontalpodautoscaler_scaling_events_total",
                &[hpa[0], hpa[1], ("direction", "down")],
            )
            .filter(|n| *n >= 1.0)
        },
    )
    .await;

    sender.stop().await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_counter_integrates_pod_metrics_and_never_decreases() {
    let bed = Bed::start(demo()).await;
    let sender = bed.sender("usage", bed.config());
    let c = ("cluster", "usage");
    let client = plain_client(&bed.sim.base_url()).expect("client");
    let api: Api<PodMetrics> = Api::namespaced(client, "default");
    let php = pods_of(&bed, "php-apache")[0].clone();

    // Our own integration of the PodMetrics samples, as docs/metrics.md defines it.
    let mut expected: Option<f64> = None;
    let mut last_at: Option<f64> = None;
    let mut seen = Vec::new();
    for _ in 0..12 {
        bed.advance(Duration::from_secs(15));
        let list = api
            .list(&ListParams::default())
            .await
            .expect("list podmetrics");
        let Some(pm) = list
            .items
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some(php.as_str()))
        else {
            continue;
        };
        let at = pm.timestamp.0.as_nanosecond() as f64 / 1e9;
        let rate = parse_quantity(&pm.containers[0].usage.cpu.0).expect("cpu quantity");
        expected = Some(match (expected, last_at) {
            (None, _) => rate * pm.window.as_secs_f64(),
            (Some(total), Some(prev)) if at > prev => total + rate * (at - prev),
            (Some(total), _) => total,
        });
        last_at = Some(at);
        let want = expected.expect("set");
        let got = bed
            .wait_for("counter follows the PodMetrics sample", |t| {
                value(
                    t,
                    "container_cpu_usage_seconds_total",
                    &[c, ("pod", php.as_str())],
                )
                .filter(|v| (v - want).abs() <= 1e-6 * want.max(1.0))
            })
            .await;
        seen.push(got);
    }
    assert!(seen.len() >= 8, "PodMetrics seen {} times", seen.len());
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "monotonic: {seen:?}");
    assert!(seen.last() > seen.first(), "increasing: {seen:?}");

    sender.stop().await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_metrics_server_usage_is_unavailable_and_the_rest_works() {
    let yaml = format!("{DEMO}\nmetrics: {{enabled: false}}\n");
    let bed = Bed::start(Scenario::from_yaml(&yaml).expect("scenario")).await;
    let sender = bed.sender("nometrics", bed.config());
    let c = ("cluster", "nometrics");
    bed.advance(Duration::from_secs(40));
    bed.wait_for("usage unavailable, pods there", |t| {
        (value(t, "relay_sender_usage_available", &[c]) == Some(0.0)
            && values(t, "kube_pod_info", &[c]).len() >= 3
            && value(
                t,
                "relay_sender_api_errors_total",
                &[c, ("resource", "podmetrics")],
            )
            .is_some())
        .then_some(())
    })
    .await;
    let text = bed.metrics().await;
    assert!(values(&text, "container_cpu_usage_seconds_total", &[c]).is_empty());
    sender.stop().await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_usage_is_relayed_from_the_node_proxy() {
    let bed = Bed::start(demo()).await;
    let mut config = bed.config();
    config.usage_source = UsageSource::Kubelet;
    let sender = bed.sender("kubelet", config);
    let c = ("cluster", "kubelet");
    bed.advance(Duration::from_secs(30));
    let php = pods_of(&bed, "php-apache")[0].clone();
    let node = bed
        .handle
        .pods()
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(php.as_str()))
        .and_then(|p| p.spec?.node_name)
        .expect("scheduled");
    let client = plain_client(&bed.sim.base_url()).expect("client");
    let request = http::Request::get(format!("/api/v1/nodes/{node}/proxy/metrics/resource"))
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(request).await.expect("kubelet metrics");
    let kubelet = kube_relay_sender::usage::parse_resource_metrics(&text)
        .into_iter()
        .find(|u| u.pod == php)
        .expect("pod in the kubelet's metrics");
    let cpu = kubelet.cpu_seconds.expect("cpu");
    bed.wait_for("the kubelet's counter relayed", |t| {
        (value(
            t,
            "container_cpu_usage_seconds_total",
            &[
                c,
                ("pod", php.as_str()),
                ("image", "registry.k8s.io/hpa-example"),
            ],
        ) == Some(cpu)
            && value(t, "relay_sender_usage_available", &[c]) == Some(1.0))
        .then_some(())
    })
    .await;
    sender.stop().await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_and_selector_filters_limit_what_is_watched() {
    let yaml = r#"
name: filters
seed: 5
nodes: {count: 1}
deployments:
  - {name: web, namespace: team-a, replicas: 2, image: nginx:1.25, labels: {app: web, tier: front}}
  - {name: cache, namespace: team-a, replicas: 1, image: redis:7, labels: {app: cache, tier: back}}
  - {name: other, namespace: team-b, replicas: 1, image: nginx:1.25}
"#;
    let bed = Bed::start(Scenario::from_yaml(yaml).expect("scenario")).await;
    let mut config = bed.config();
    config.namespaces = vec!["team-a".to_owned()];
    config.selector = Some("tier=front".to_owned());
    let sender = bed.sender("filtered", config);
    let c = ("cluster", "filtered");
    bed.advance(Duration::from_secs(40));
    let text = bed
        .wait_for("web pods with usage", |t| {
            (values(t, "kube_pod_info", &[c]).len() == 2
                && values(t, "container_cpu_usage_seconds_total", &[c]).len() == 2)
                .then(|| t.to_owned())
        })
        .await;
    assert!(values(&text, "kube_pod_info", &[c, ("namespace", "team-a")]).len() == 2);
    assert!(
        !text.contains("pod=\"cache-"),
        "selector excludes cache pods"
    );
    assert!(!text.contains("team-b"), "namespace filter excludes team-b");
    assert_eq!(
        value(
            &text,
            "kube_namespace_status_phase",
            &[c, ("namespace", "team-a"), ("phase", "Active")]
        ),
        Some(1.0)
    );
    sender.stop().await;
    bed.stop().await;
}

/// Two nodes, an empty namespace, and a deployment with an HPA in another namespace.
const DELETIONS: &str = r#"
seed: 5
jitter: 0
nodes: {count: 2, pods: 10}
namespaces: [spare]
deployments:
  - name: web
    namespace: shop
    replicas: 4
    image: nginx:1.27
    startup: 1s
    readiness: 1s
hpas:
  - {name: web, namespace: shop, target: web, min: 1, max: 6, cpu_utilization: 80}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_hpas_nodes_and_namespaces_take_their_series_with_them() {
    let bed = Bed::start(Scenario::from_yaml(DELETIONS).expect("scenario")).await;
    bed.advance(Duration::from_secs(10));
    let sender = bed.sender("gone", bed.config());
    let c = ("cluster", "gone");
    sender.wait_synced(7).await;

    // An HPA's scaling counters exist from the start, at zero both ways, so Prometheus'
    // increase() sees its first rescale.
    let hpa = [c, ("namespace", "shop"), ("horizontalpodautoscaler", "web")];
    let text = bed.metrics().await;
    for direction in ["up", "down"] {
        let mut labels = hpa.to_vec();
        labels.push(("direction", direction));
        assert_eq!(
            value(
                &text,
                "kube_horizontalpodautoscaler_scaling_events_total",
                &labels
            ),
            Some(0.0),
            "{direction}\n{text}"
        );
    }
    let hpa_series = |t: &str| {
        t.lines()
            .filter(|l| {
                l.starts_with("kube_horizontalpodautoscaler_")
                    && l.contains(r#"cluster="gone""#)
                    && l.contains(r#"horizontalpodautoscaler="web""#)
            })
            .count()
    };
    assert!(hpa_series(&text) >= 6, "{text}");

    // kubectl delete hpa: every series of it goes, its counters included.
    bed.handle.delete_hpa("shop", "web").expect("delete hpa");
    bed.wait_for("the HPA's series gone", |t| {
        (hpa_series(t) == 0).then_some(())
    })
    .await;

    // kubectl delete node: the node's series go, and so do its pods' (garbage-collected).
    let victim = bed
        .handle
        .pods()
        .into_iter()
        .find_map(|p| p.spec.and_then(|s| s.node_name))
        .expect("a scheduled pod");
    let node = ("node", victim.as_str());
    let text = bed.metrics().await;
    assert!(value(&text, "kube_node_info", &[c, node]).is_some());
    assert!(!values(&text, "kube_pod_info", &[c, node]).is_empty());
    bed.handle.delete_node(&victim).expect("delete node");
    bed.wait_for("the node and its pods gone", |t| {
        (value(t, "kube_node_info", &[c, node]).is_none()
            && values(t, "kube_pod_info", &[c, node]).is_empty())
        .then_some(())
    })
    .await;
    assert_eq!(
        values(&bed.metrics().await, "kube_node_info", &[c]).len(),
        1
    );

    // An empty namespace goes at once.
    let phase = |t: &str, ns: &str, phase: &str| {
        value(
            t,
            "kube_namespace_status_phase",
            &[c, ("namespace", ns), ("phase", phase)],
        )
    };
    assert!(bed.handle.delete_namespace("spare").expect("delete spare"));
    bed.wait_for("the empty namespace gone", |t| {
        (phase(t, "spare", "Active").is_none() && phase(t, "spare", "Terminating").is_none())
            .then_some(())
    })
    .await;

    // One with workloads stays Terminating, as kube-state-metrics would show it:
    // phase="Terminating" 1, phase="Active" 0.
    assert!(!bed.handle.delete_namespace("shop").expect("delete shop"));
    bed.wait_for("the busy namespace terminating", |t| {
        (phase(t, "shop", "Terminating") == Some(1.0) && phase(t, "shop", "Active") == Some(0.0))
            .then_some(())
    })
    .await;

    sender.stop().await;
    bed.stop().await;
}
