//! The exposition checked by Prometheus' own tools: `promtool check metrics` on the real
//! output of a receiver fed by two clusters, with label values that need escaping.

use crate::common;

use std::process::Stdio;

use common::{Running, TestSender, hello, phase, pod_families, restarts, values};
use kube_relay_proto::{Batch, SnapshotPart};
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
