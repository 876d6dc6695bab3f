//! The exposition checked by Prometheus' own tools: `promtool check metrics` on the real
//! output of a receiver fed by two clusters, with label values that need escaping, and with
//! families whose names clash across clusters.

use crate::common;

use std::process::Stdio;

use common::{
    Running, TestSender, capture_logs, hello, logged, phase, pod_families, restarts, sample,
    small_snapshot, values,
};
use kube_relay_proto::{Batch, FamilyDef, MetricKind, SeriesDef, SnapshotPart};
use kube_relay_testkit::http;
use tokio::io::AsyncWriteExt;

/// Runs `promtool check metrics` on `exposition`; returns its combined output, or `None`
/// when promtool is not installed.
async fn promtool_check(exposition: &str) -> Option<(bool, String)> {
    let mut child = match tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("failed to start promtool: {e}"),
    };
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(exposition.as_bytes())
        .await
        .expect("write to promtool");
    drop(stdin);
    let out = child.wait_with_output().await.expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

fn awkward_snapshot() -> Batch {
    let mut families = pod_families();
    families.push(kube_relay_proto::FamilyDef {
        id: 2,
        name: "container_memory_working_set_bytes".into(),
        help: "Working set \"bytes\" of a container\\pod.".into(),
        kind: kube_relay_proto::MetricKind::Gauge,
    });
    let mut tricky = phase(2, "odd\"pod\\with\nnewline", "Pending");
    tricky.labels[0].1 = "ns-é".into();
    Batch {
        observed_at_ms: 0,
        seq: 1,
        snapshot: Some(SnapshotPart {
            first: true,
            last: true,
        }),
        families,
        series: vec![
            phase(0, "web-1", "Running"),
            restarts(1, "web-1"),
            tricky,
            kube_relay_proto::SeriesDef {
                id: 3,
                family: 2,
                labels: vec![
                    ("namespace".into(), "default".into()),
                    ("pod".into(), "web-1".into()),
                    ("container".into(), "app".into()),
                ],
            },
        ],
        updates: values(&[(0, 1.0), (1, 3.0), (2, 0.0), (3, 12_345_678.5)]),
        removals: vec![],
    }
}

#[tokio::test]
async fn promtool_accepts_the_real_exposition() {
    let rx = Running::loopback().await.expect("receiver");
    let mut senders = Vec::new();
    for cluster in ["east", "west"] {
        let mut s = TestSender::welcomed(rx.ingest, hello(cluster, cluster))
            .await
            .expect("welcome");
        s.batch(awkward_snapshot()).await.expect("send");
        s.ack_of(1).await.expect("ack");
        senders.push(s);
    }
    senders[1].goodbye().await.expect("goodbye");
    rx.metrics_until("west down", |t| {
        t.contains("relay_cluster_up{cluster=\"west\"} 0\n")
    })
    .await
    .expect("west down");
    // Scrape twice so the scrape-duration histogram has observations.
    rx.metrics().await.expect("scrape");
    let text = rx.metrics().await.expect("scrape");
    assert!(
        text.contains(r#"pod="odd\"pod\\with\nnewline""#),
        "label values are escaped:\n{text}"
    );
    assert!(text.contains("cluster=\"east\"") && text.contains("cluster=\"west\""));

    let Some((ok, report)) = promtool_check(&text).await else {
        kube_relay_testkit::skip("promtool is not installed (apt-get install prometheus)");
        return;
    };
    assert!(
        ok,
        "promtool check metrics failed:\n{report}\n--- exposition ---\n{text}"
    );
    assert!(
        report.trim().is_empty(),
        "promtool lint findings:\n{report}"
    );

    // The OpenMetrics variant parses too: same samples, `# EOF` last.
    let om = http::get(
        rx.http,
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
    )
    .await
    .expect("scrape")
    .text()
    .expect("utf-8")
    .to_owned();
    assert!(om.ends_with("# EOF\n"));
    let samples = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("kube_") || l.starts_with("container_"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(samples(&om), samples(&text));
}

/// West's snapshot: a gauge named like east's restart counter's samples, east's phase gauge
/// as a counter, and a family of its own.
fn clashing_snapshot() -> Batch {
    let family = |id, name: &str, kind| FamilyDef {
        id,
        name: name.into(),
        help: format!("West's {name}."),
        kind,
    };
    let series = |id, family, pod: &str| SeriesDef {
        id,
        family,
        labels: vec![("pod".into(), pod.into())],
    };
    Batch {
        observed_at_ms: 0,
        seq: 1,
        snapshot: Some(SnapshotPart {
            first: true,
            last: true,
        }),
        families: vec![
            family(
                0,
                "kube_pod_container_status_restarts_total",
                MetricKind::Gauge,
            ),
            family(1, "kube_pod_status_phase", MetricKind::Counter),
            family(2, "kube_node_info", MetricKind::Gauge),
        ],
        series: vec![series(0, 0, "w"), series(1, 1, "w"), series(2, 2, "w")],
        updates: values(&[(0, 7.0), (1, 8.0), (2, 1.0)]),
        removals: vec![],
    }
}

#[tokio::test]
async fn a_cluster_whose_families_clash_with_another_clusters_cannot_break_the_exposition() {
    capture_logs();
    let rx = Running::loopback().await.expect("receiver");
    let mut east = TestSender::welcomed(rx.ingest, hello("east", "east"))
        .await
        .expect("welcome");
    east.batch(small_snapshot(1)).await.expect("send");
    east.ack_of(1).await.expect("ack");
    // West sends its snapshot twice (restarted: a new epoch): refused twice, logged once.
    for epoch in 1..=2 {
        let restarted = kube_relay_proto::Hello {
            epoch,
            ..hello("west", "west")
        };
        let mut west = TestSender::welcomed(rx.ingest, restarted)
            .await
            .expect("welcome");
        west.batch(clashing_snapshot()).await.expect("send");
        west.ack_of(1)
            .await
            .expect("west's snapshot is acknowledged");
        west.goodbye().await.expect("goodbye");
    }
    let text = rx.metrics().await.expect("scrape");

    let refused = r#"relay_receiver_families_refused_total{cluster="west"}"#;
    assert_eq!(sample(&text, refused), Some(4.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"relay_receiver_families_refused_total{cluster="east"}"#
        ),
        Some(0.0)
    );
    // East's series are intact, west's clashing ones are nowhere, its own family is there.
    for (series, value) in [
        (
            r#"kube_pod_container_status_restarts_total{cluster="east",namespace="default",pod="web-1",container="app"}"#,
            2.0,
        ),
        (
            r#"kube_pod_status_phase{cluster="east",namespace="default",pod="web-1",phase="Running"}"#,
            1.0,
        ),
        (r#"kube_node_info{cluster="west",pod="w"}"#, 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    assert!(!text.contains(r#"{cluster="west",pod="w"} 7"#), "{text}");
    assert!(!text.contains(r#"{cluster="west",pod="w"} 8"#), "{text}");
    let log = logged();
    let lines = |family: &str| {
        log.lines()
            .filter(|l| l.contains("family refused") && l.contains("cluster=west"))
            .filter(|l| l.contains(&format!("family={family} ")))
            .count()
    };
    assert_eq!(lines("kube_pod_status_phase"), 1, "{log}");
    assert_eq!(
        lines("kube_pod_container_status_restarts_total"),
        1,
        "{log}"
    );
    assert!(
        log.contains("would both write samples named \"kube_pod_container_status_restarts_total\""),
        "the reason names the clash:\n{log}"
    );

    let Some((ok, report)) = promtool_check(&text).await else {
        kube_relay_testkit::skip("promtool is not installed (apt-get install prometheus)");
        return;
    };
    assert!(
        ok && report.trim().is_empty(),
        "promtool check metrics:\n{report}\n--- exposition ---\n{text}"
    );
}
