//! The report against a real run: a simulated cluster stepping its clients under an HPA,
//! sped up, relayed by a sender and a receiver, scraped by a real Prometheus (every 200 ms,
//! the cluster ten times faster than real time) or a real VictoriaMetrics (its own scraper,
//! every second, the cluster five times faster); then the report over the run's window. Its scaling actions must be the
//! simulator's `SuccessfulRescale` events (count, new sizes, reasons, order), its steps the
//! scenario's, and its PNGs must decode at the size asked.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Event;
use kube_relay_receiver::{Receiver, ReceiverConfig};
use kube_relay_report::query_api::QueryApi;
use kube_relay_report::report::Options;
use kube_relay_report::window::Window;
use kube_relay_sender::{Config, Sender};
use kube_relay_sim::{ClockMode, Scenario, Simulator};
use kube_relay_testkit::prometheus::{Prometheus, PrometheusConfig, which};
use kube_relay_testkit::skip::skip;
use kube_relay_testkit::victoria::VictoriaMetrics;
use kube_relay_testkit::wait_until;
use tokio_util::sync::CancellationToken;

const CLUSTER: &str = "report-e2e";

/// Echo servers behind an HPA (1 to 8, CPU 50 %), their clients stepped 10 → 60 → 10 → 0,
/// one simulated minute each.
const SCENARIO: &str = r#"
name: report-e2e
description: clients stepped under an HPA, for the report's test
seed: 5
nodes: {count: 2, cpu: "8", memory: 32Gi, pods: 110}
deployments:
  - name: echo-server
    namespace: echo
    replicas: 1
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    port: 8080
    requests: {cpu: 100m, memory: 32Mi}
    limits: {cpu: 300m, memory: 64Mi}
    startup: 1s
    readiness: 1s
    load:
      idle_cpu: 2m
      cpu_per_client: 8m
      memory: 16Mi
      noise: 0.02
      clients_from: [{deployment: echo-client}]
  - name: echo-client
    namespace: echo
    replicas: 0
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    requests: {cpu: 5m, memory: 16Mi}
    startup: 1s
    readiness: 1s
    load: {idle_cpu: 3m, cpu_per_client: 0, memory: 8Mi}
hpas:
  - {name: echo-server, namespace: echo, target: echo-server, min: 1, max: 8,
     cpu_utilization: 50, scale_down_stabilization: 20s}
steps:
  - {at: 0s, name: low, namespace: echo, scale: {echo-client: 10}}
  - {at: 60s, name: high, namespace: echo, scale: {echo-client: 60}}
  - {at: 120s, name: low-again, namespace: echo, scale: {echo-client: 10}}
  - {at: 180s, name: idle, namespace: echo, scale: {echo-client: 0}}
"#;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The `New size: N` and the reason of a `SuccessfulRescale` message
/// (`New size: 4; reason: cpu resource utilization (percentage of request) above target`).
fn size_and_reason(e: &Event) -> (u32, String) {
    let message = e.message.as_deref().unwrap_or_default();
    let parsed = message.strip_prefix("New size: ").and_then(|rest| {
        let (size, reason) = rest.split_once("; reason: ")?;
        Some((size.trim().parse().ok()?, reason.trim().to_owned()))
    });
    parsed.unwrap_or_else(|| panic!("a SuccessfulRescale message: {message:?}"))
}

/// How many times an Event happened.
fn occurrences(e: &Event) -> u32 {
    let n = e
        .series
        .as_ref()
        .and_then(|s| s.count)
        .or(e.count)
        .unwrap_or(1);
    u32::try_from(n).unwrap_or(1)
}

/// A CSV file (the report writes no quoted fields in these tables) as header → value maps.
fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).expect("the CSV file");
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .expect("a header")
        .split(',')
        .map(str::to_owned)
        .collect();
    lines
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            assert_eq!(fields.len(), header.len(), "{l}");
            header
                .iter()
                .cloned()
                .zip(fields.iter().map(|f| (*f).to_owned()))
                .collect()
        })
        .collect()
}

/// Width and height of a PNG, decoding every pixel.
fn png_size(path: &Path) -> (u32, u32) {
    let file = std::fs::File::open(path).expect("the PNG file");
    let mut reader = png::Decoder::new(file).read_info().expect("a PNG header");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("the PNG's pixels");
    // the plot is drawn, not blank: more than one colour
    let first = &pixels[..3];
    assert!(
        pixels[..info.buffer_size()].chunks(3).any(|p| p != first),
        "{} is one colour",
        path.display()
    );
    (info.width, info.height)
}

/// The query API a run is stored in.
enum Store {
    Prometheus(Prometheus),
    /// The server and the directory of its scrape config (kept while it runs).
    Victoria(
        VictoriaMetrics,
        #[allow(dead_code, reason = "held, not read")] tempfile::TempDir,
    ),
}

impl Store {
    fn url(&self) -> String {
        match self {
            Store::Prometheus(p) => format!("http://{}", p.addr()),
            Store::Victoria(v, _) => format!("http://{}", v.addr()),
        }
    }
}

/// Polls `query` through the report's own client until `ok` holds for its first value.
async fn wait_for_value(api: &QueryApi, what: &str, query: &str, ok: impl Fn(f64) -> bool) {
    wait_until(
        what,
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let (api, query) = (api.clone(), query.to_owned());
            let ok = &ok;
            async move {
                let series = api.instant(&query, unix_now()).await?;
                let value = series.first().and_then(|s| s.points.first()).map(|p| p.1);
                Ok(value.filter(|v| ok(*v)).map(|_| ()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e:#}"));
}

fn can_draw() -> bool {
    if kube_relay_report::plot::load_font(None).is_err() {
        skip("the report's plots need a TrueType font (Debian's fonts-dejavu-core)");
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_shows_what_the_simulated_hpa_did() {
    if which("prometheus").is_none() {
        skip("the report's end-to-end test needs Debian's `prometheus` binary");
        return;
    }
    if !can_draw() {
        return;
    }
    let receiver = Receiver::bind(ReceiverConfig::loopback())
        .await
        .expect("receiver binds");
    let prometheus = Prometheus::start_with(PrometheusConfig {
        interval: Duration::from_millis(200),
        ..PrometheusConfig::new(&[receiver.http_addr()])
    })
    .await
    .expect("prometheus starts");
    report_on_a_run(receiver, Store::Prometheus(prometheus), 10.0, 0.2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_reads_victoria_metrics_too() {
    if which("victoria-metrics").is_none() {
        skip("the report's VictoriaMetrics test needs Debian's `victoria-metrics` binary");
        return;
    }
    if !can_draw() {
        return;
    }
    let receiver = Receiver::bind(ReceiverConfig::loopback())
        .await
        .expect("receiver binds");
    let dir = tempfile::tempdir().expect("config dir");
    let config = dir.path().join("scrape.yml");
    std::fs::write(
        &config,
        format!(
            "scrape_configs:\n  - job_name: kube-relay\n    scrape_interval: 1s\n    static_configs: [{{targets: [\"{}\"]}}]\n",
            receiver.http_addr()
        ),
    )
    .expect("scrape config");
    let flag = format!("-promscrape.config={}", config.display());
    let vm = VictoriaMetrics::start_with(&[&flag])
        .await
        .expect("victoria-metrics starts");
    report_on_a_run(receiver, Store::Victoria(vm, dir), 5.0, 0.5).await;
}

/// Runs the scenario at `speed` with the receiver stored in `store`, then the report at
/// `resolution` seconds, and checks it against what the simulator did.
async fn report_on_a_run(receiver: Receiver, store: Store, speed: f64, resolution: f64) {
    let shutdown = CancellationToken::new();
    let ingest = receiver.ingest_addr();
    let receiver_task = tokio::spawn(receiver.run(shutdown.clone()));
    let api = QueryApi::new(&store.url(), Duration::from_secs(10), 64 << 20).expect("client");
    wait_for_value(&api, "the store scrapes the receiver", "max(up)", |v| {
        v == 1.0
    })
    .await;

    let from = unix_now() - 1.0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim = Simulator::start(
        Scenario::from_yaml(SCENARIO).expect("the scenario"),
        listener,
        ClockMode::RealTime { speed },
    )
    .await
    .expect("simulated cluster starts");
    let handle = sim.handle();
    let client = kube_relay_sender::kubeclient::plain_client(&sim.base_url()).expect("client");
    let config = Config {
        usage_interval: Duration::from_secs(1),
        ..Config::new(ingest.to_string())
    };
    let sender = Sender::new(config, client, CLUSTER).expect("sender");
    let sender_task = tokio::spawn(sender.run(shutdown.clone()));

    // the scenario ends (clients back to 0 at 180 s) and the HPA settles at its minimum
    wait_until(
        "the idle step and the HPA back at 1 replica",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || {
            let idle = handle
                .events_with_reason("ScenarioStep")
                .iter()
                .any(|e| e.message.as_deref().unwrap_or_default().contains(" idle"));
            let status = handle.hpa_status("echo", "echo-server");
            let settled =
                status.is_some_and(|s| s.desired_replicas == 1 && s.current_replicas == Some(1));
            async move { Ok((idle && settled).then_some(())) }
        },
    )
    .await
    .expect("the scenario ran");
    let events = {
        let mut events = handle.scaling_events();
        events.sort_by_key(|e| {
            e.first_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
                .or_else(|| e.event_time.as_ref().map(|t| t.0.as_millisecond()))
        });
        events
    };
    let total: u32 = events.iter().map(occurrences).sum();
    assert!(
        events.iter().any(|e| size_and_reason(e).0 > 1),
        "the HPA scaled up: {events:?}"
    );
    // the store has every action (a counter step per occurrence) and the final size
    let sel =
        format!(r#"cluster="{CLUSTER}", namespace="echo", horizontalpodautoscaler="echo-server""#);
    wait_for_value(
        &api,
        "every scaling action in the store",
        &format!("sum(kube_horizontalpodautoscaler_scaling_events_total{{{sel}}})"),
        |v| v == f64::from(total),
    )
    .await;
    wait_for_value(
        &api,
        "the final size in the store",
        &format!("max(kube_horizontalpodautoscaler_status_current_replicas{{{sel}}})"),
        |v| v == 1.0,
    )
    .await;
    let to = unix_now();

    let out = tempfile::tempdir().expect("output dir");
    let scenario_file = out.path().join("scenario.yaml");
    std::fs::write(&scenario_file, SCENARIO).expect("scenario file");
    let report_dir = out.path().join("report");
    let options = Options {
        prometheus: store.url(),
        cluster: CLUSTER.to_owned(),
        namespace: Some("echo".to_owned()),
        window: Window {
            from,
            to,
            resolution,
        },
        speed,
        rate_window: 30.0 / speed,
        settle: 10.0 / speed,
        scenario: Some(scenario_file),
        plot_deployments: Vec::new(),
        out: report_dir.clone(),
        font: None,
        size: (900, 600),
        timeout: Duration::from_secs(30),
        max_answer_bytes: 64 << 20,
    };
    let summary = kube_relay_report::run(&options).await.expect("the report");
    assert_eq!(summary.files.len(), 5, "{:?}", summary.files);
    println!(
        "FIGURE report from {}: {} scaling actions, {} steps, {} files over {:.1} s of run",
        match store {
            Store::Prometheus(_) => "Prometheus",
            Store::Victoria(..) => "VictoriaMetrics",
        },
        summary.scaling_events,
        summary.steps,
        summary.files.len(),
        to - from
    );

    // the scaling actions: as many, the same sizes, in the same order
    let rows = read_csv(&report_dir.join("hpa-echo-echo-server.csv"));
    let reported: Vec<(u32, String, String)> = rows
        .iter()
        .filter(|r| !r["scaling_events"].is_empty())
        .flat_map(|r| {
            let n: u32 = r["scaling_events"].parse().expect("a count");
            let size: u32 = r["new_size"].parse().expect("a size");
            std::iter::repeat_n(
                (size, r["reason"].clone(), r["direction"].clone()),
                n as usize,
            )
        })
        .collect();
    let mut expected: Vec<(u32, String)> = events
        .iter()
        .flat_map(|e| std::iter::repeat_n(size_and_reason(e), occurrences(e) as usize))
        .collect();
    let mut got: Vec<(u32, String)> = reported
        .iter()
        .map(|(size, reason, _)| (*size, reason.clone()))
        .collect();
    assert_eq!(summary.scaling_events, total);
    if events.iter().any(|e| occurrences(e) > 1) {
        // an Event repeated (same message, count > 1) no longer says when each occurrence
        // was: compare them as a multiset
        got.sort();
        expected.sort();
    }
    assert_eq!(got, expected, "new sizes and reasons in order");
    // each direction agrees with the size it moved from
    let mut previous = 1;
    for (size, _, direction) in &reported {
        let stated = if *size > previous { "up" } else { "down" };
        assert_eq!(direction, stated, "{reported:?}");
        previous = *size;
    }
    // min, max and the CPU target are the HPA's
    let last = rows.last().expect("rows");
    assert_eq!(
        (
            &*last["min"],
            &*last["max"],
            &*last["cpu_target_pct"],
            &*last["desired"]
        ),
        ("1", "8", "50", "1")
    );

    // the steps: the scenario's, in order, each with its clients
    let steps = read_csv(&report_dir.join("steps.csv"));
    let clients: Vec<(String, String)> = steps
        .iter()
        .filter(|r| r["deployment"] == "echo-client")
        .map(|r| (r["step"].clone(), r["replicas_asked"].clone()))
        .collect();
    let want = [
        ("low", "10"),
        ("high", "60"),
        ("low-again", "10"),
        ("idle", "0"),
    ];
    assert_eq!(
        clients,
        want.map(|(s, n)| (s.to_owned(), n.to_owned())).to_vec()
    );
    // the server's replicas under the high step exceed its minimum, and its pods used CPU
    let high = steps
        .iter()
        .find(|r| r["step"] == "high" && r["deployment"] == "echo-server")
        .expect("the server's row of the high step");
    let reached: u32 = high["replicas_reached"].parse().expect("replicas reached");
    assert!(reached > 1, "{high:?}");
    let cpu: f64 = high["cpu_per_pod_mcores_mean"]
        .parse()
        .expect("CPU per pod");
    assert!(cpu > 0.0, "{high:?}");

    // the plots decode, at the size asked (the step grid: at least 320 x 220 per panel)
    assert_eq!(
        png_size(&report_dir.join("hpa-echo-echo-server.png")),
        (900, 600)
    );
    assert_eq!(png_size(&report_dir.join("steps.png")), (900, 600));
    assert_eq!(png_size(&report_dir.join("timeline.png")), (900, 600));

    shutdown.cancel();
    let _ = sender_task.await;
    let _ = receiver_task.await;
    sim.shutdown().await;
}
