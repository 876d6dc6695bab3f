//! The status page at `/`, rendered by headless Chromium (Debian's `chromium`): one row per
//! cluster with its link, its source (frozen when the sender's watches are down), sender,
//! address, agent, last change, pods and series; pods per namespace and phase; each HPA's
//! replicas; the recent scaling events with the new size and reason.

use crate::common;

use std::time::Duration;

use common::{Running, TestSender, delta, hello, small_snapshot};
use kube_relay_proto::{Batch, FamilyDef, MetricKind, SeriesDef, SnapshotPart};

/// The DOM Chromium renders for `url`, or `None` when chromium is not installed.
async fn chromium_dom(url: &str) -> Option<String> {
    let profile = tempfile::tempdir().expect("profile dir");
    let run = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(60), run).await {
        Err(_) => panic!("chromium did not finish within 60 s"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Ok(Err(e)) => panic!("failed to run chromium: {e}"),
        Ok(Ok(out)) => out,
    };
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The text of each `<td>` in the row whose `data-cluster` is `cluster`.
fn row_cells(dom: &str, cluster: &str) -> Option<Vec<String>> {
    let start = dom.find(&format!("data-cluster=\"{cluster}\""))?;
    let row = &dom[start..start + dom[start..].find("</tr>")?];
    Some(
        row.split("<td")
            .skip(1)
            .map(|cell| {
                let body = &cell[cell.find('>').map_or(0, |i| i + 1)..];
                body[..body.find("</td>").unwrap_or(body.len())].to_owned()
            })
            .collect(),
    )
}

/// The latest scaling action up of the HPA `shop/checkout`: its new size is the value, its
/// reason a label (as the sender relays it).
fn last_action(id: u32, reason: &str) -> SeriesDef {
    SeriesDef {
        id,
        family: 14,
        labels: vec![
            ("namespace".into(), "shop".into()),
            ("horizontalpodautoscaler".into(), "checkout".into()),
            ("direction".into(), "up".into()),
            ("reason".into(), reason.into()),
        ],
    }
}

/// A phase series of a pod in namespace `shop`.
fn shop_pod(id: u32, pod: &str, phase: &str) -> SeriesDef {
    SeriesDef {
        id,
        family: 0,
        labels: vec![
            ("namespace".into(), "shop".into()),
            ("pod".into(), pod.into()),
            ("phase".into(), phase.into()),
        ],
    }
}

/// A scaling action up to 7 replicas, for a reason with markup in it (remote input): the
/// counter grows by 2 and the latest action is replaced.
fn scaling_delta() -> Batch {
    Batch {
        series: vec![last_action(18, "<b>memory</b> above target")],
        removals: vec![17],
        ..delta(2, &[(9, 6.0), (18, 7.0)])
    }
}

/// The text of each cell of each `<tr class="{class}">` in the table with id `table`.
fn table_rows(dom: &str, table: &str, class: &str) -> Vec<Vec<String>> {
    let Some(start) = dom.find(&format!("id=\"{table}\"")) else {
        return Vec::new();
    };
    let body = &dom[start..];
    let body = &body[..body.find("</table>").unwrap_or(body.len())];
    body.split(&format!("<tr class=\"{class}\">"))
        .skip(1)
        .map(|row| {
            let row = &row[..row.find("</tr>").unwrap_or(row.len())];
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let text = &cell[cell.find('>').map_or(0, |i| i + 1)..];
                    text[..text.find("</td>").unwrap_or(text.len())].to_owned()
                })
                .collect()
        })
        .collect()
}

fn scaling_snapshot() -> Batch {
    let mut batch = small_snapshot(1);
    let mut family = |id, name: &str| {
        batch.families.push(FamilyDef {
            id,
            name: name.into(),
            help: format!("{name}."),
            kind: if name.ends_with("_events") {
                MetricKind::Counter
            } else {
                MetricKind::Gauge
            },
        });
    };
    family(7, "kube_horizontalpodautoscaler_scaling_events");
    family(8, "kube_horizontalpodautoscaler_status_current_replicas");
    family(9, "kube_horizontalpodautoscaler_status_desired_replicas");
    family(10, "relay_sender_api_up");
    family(11, "relay_sender_watch_up");
    family(12, "kube_horizontalpodautoscaler_spec_min_replicas");
    family(13, "kube_horizontalpodautoscaler_spec_max_replicas");
    family(
        14,
        "kube_horizontalpodautoscaler_last_scaling_event_replicas",
    );
    let hpa = |id, family, direction: Option<&str>| {
        let mut labels = vec![
            ("namespace".into(), "shop".into()),
            ("horizontalpodautoscaler".into(), "checkout".into()),
        ];
        if let Some(direction) = direction {
            labels.push(("direction".into(), direction.into()));
        }
        SeriesDef { id, family, labels }
    };
    let watch = |id, resource: &str| SeriesDef {
        id,
        family: 11,
        labels: vec![("resource".into(), resource.into())],
    };
    batch.series.extend([
        hpa(9, 7, Some("up")),
        hpa(10, 8, None),
        hpa(11, 9, None),
        SeriesDef {
            id: 12,
            family: 10,
            labels: vec![],
        },
        watch(13, "pods"),
        watch(14, "nodes"),
        hpa(15, 12, None),
        hpa(16, 13, None),
        last_action(
            17,
            "cpu resource utilization (percentage of request) above target",
        ),
        shop_pod(19, "cart-1", "Pending"),
        shop_pod(20, "cart-2", "Running"),
    ]);
    // The API server answers, but the pods watch is down: pods are frozen.
    batch.updates = common::values(&[
        (0, 1.0),
        (1, 2.0),
        (9, 4.0),
        (10, 3.0),
        (11, 5.0),
        (12, 1.0),
        (13, 0.0),
        (14, 1.0),
        (15, 1.0),
        (16, 10.0),
        (17, 5.0),
        (19, 1.0),
        (20, 1.0),
    ]);
    batch.snapshot = Some(SnapshotPart {
        first: true,
        last: true,
    });
    batch
}

#[tokio::test]
async fn the_status_page_lists_each_cluster_and_recent_scaling_events() {
    let rx = Running::loopback().await.expect("receiver");
    let mut alpha = TestSender::welcomed(rx.ingest, hello("alpha", "host-a"))
        .await
        .expect("welcome");
    alpha.batch(scaling_snapshot()).await.expect("send");
    alpha.batch(scaling_delta()).await.expect("send");
    alpha.ack_of(2).await.expect("ack");
    let mut bravo = TestSender::welcomed(rx.ingest, hello("bravo", "host-b"))
        .await
        .expect("welcome");
    bravo.batch(small_snapshot(1)).await.expect("send");
    bravo.ack_of(1).await.expect("ack");
    bravo.goodbye().await.expect("goodbye");
    rx.metrics_until("bravo down", |t| {
        t.contains("relay_cluster_up{cluster=\"bravo\"} 0\n")
    })
    .await
    .expect("bravo down");

    let url = format!("http://{}/", rx.http);
    let Some(dom) = chromium_dom(&url).await else {
        kube_relay_testkit::skip("chromium is not installed (apt-get install chromium)");
        return;
    };
    assert!(dom.contains("<h1>kube-relay receiver</h1>"), "{dom}");

    assert!(
        dom.contains("2 cluster(s), 1 connected, <span class=\"down\">1 with a source down"),
        "{dom}"
    );
    let alpha = row_cells(&dom, "alpha").expect("a row for alpha");
    assert_eq!(alpha[0], "<a href=\"/?cluster=alpha\">alpha</a>");
    assert!(alpha[1].starts_with("up since "), "{alpha:?}");
    assert_eq!(alpha[2], "DOWN, data frozen: watch down: pods");
    assert_eq!(alpha[3], "host-a");
    assert!(
        alpha[4].starts_with("127.0.0.1:"),
        "the sender's address: {alpha:?}"
    );
    assert_eq!(alpha[5], "receiver-tests/0");
    assert!(alpha[6].contains(" ago)"), "last change shown: {alpha:?}");
    assert_eq!(alpha[7], "1 Pending, 2 Running");
    assert_eq!(alpha[8], "13");

    let bravo = row_cells(&dom, "bravo").expect("a row for bravo");
    assert!(
        bravo[1].starts_with("down since ") && bravo[1].contains("series expire in 4m"),
        "{bravo:?}"
    );
    assert_eq!(bravo[2], "unknown while the link is down");
    assert!(
        bravo[4].starts_with("127.0.0.1:"),
        "the last address: {bravo:?}"
    );
    assert_eq!(bravo[8], "2");

    let namespaces = table_rows(&dom, "namespaces", "namespace");
    assert!(
        namespaces.contains(&vec![
            "alpha".to_owned(),
            "default".into(),
            "1 Running".into(),
            "1".into()
        ]),
        "{namespaces:?}"
    );
    assert!(
        namespaces.contains(&vec![
            "alpha".to_owned(),
            "shop".into(),
            "1 Pending, 1 Running".into(),
            "2".into()
        ]),
        "{namespaces:?}"
    );
    assert_eq!(
        namespaces.len(),
        3,
        "bravo's pods are kept until they expire: {namespaces:?}"
    );

    let hpas = &dom[dom.find("id=\"hpas\"").expect("HPA table")..];
    let hpa = &hpas[hpas.find("<tr class=\"hpa\">").expect("one HPA")..];
    let hpa = &hpa[..hpa.find("</tr>").expect("row end")];
    for cell in [
        "<td>alpha</td>",
        "<td>shop</td>",
        "<td>checkout</td>",
        "<td class=\"current\">3</td>",
        "<td class=\"desired\">5</td>",
        "<td class=\"min\">1</td>",
        "<td class=\"max\">10</td>",
    ] {
        assert!(hpa.contains(cell), "{cell:?} missing from {hpa}");
    }

    let events = &dom[dom.find("id=\"events\"").expect("events table")..];
    let event = &events[events.find("<tr class=\"event\">").expect("one event")..];
    let event = &event[..event.find("</tr>").expect("row end")];
    for cell in [
        "<td>alpha</td>",
        "<td>shop</td>",
        "<td>checkout</td>",
        "<td class=\"direction\">up</td>",
        "<td class=\"new-size\">7</td>",
        "<td class=\"reason\">&lt;b&gt;memory&lt;/b&gt; above target</td>",
        "<td class=\"increase\">2</td>",
        "<td class=\"total\">6</td>",
    ] {
        assert!(event.contains(cell), "{cell:?} missing from {event}");
    }
}
