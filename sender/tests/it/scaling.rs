//! Scaling actions against the real simulated HPA controller: each `SuccessfulRescale`
//! occurrence counted exactly once, across a watch `410 Gone` relist and across sender
//! restarts; with a state directory even after the events expired from the API. The new
//! size and reason of each action reach the receiver's status page.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube_relay_sender::events::{Direction, new_size, stated_direction, stated_reason};
use kube_relay_sim::{Fault, Scenario};

use support::{Bed, value};

const DEMO: &str = include_str!("../../../sim/scenarios/demo.yaml");

/// Watchers of a sender without namespace filter: pods, HPAs, events, namespaces, nodes,
/// Deployments, ReplicaSets.
const WATCHERS: u64 = 7;

/// Occurrences per direction in the events the API holds now.
fn occurrences(events: &[Event]) -> (f64, f64) {
    let mut up = 0.0;
    let mut down = 0.0;
    for e in events {
        let n = f64::from(
            e.series
                .as_ref()
                .and_then(|s| s.count)
                .or(e.count)
                .unwrap_or(1),
        );
        match stated_direction(e.message.as_deref().unwrap_or_default()) {
            Some(Direction::Down) => down += n,
            _ => up += n,
        }
    }
    (up, down)
}

/// The relayed totals for the demo's HPA.
fn totals(text: &str, cluster: &str) -> Option<(f64, f64)> {
    let labels = |d| {
        [
            ("cluster", cluster),
            ("horizontalpodautoscaler", "php-apache"),
            ("direction", d),
        ]
    };
    Some((
        value(
            text,
            "kube_horizontalpodautoscaler_scaling_events_total",
            &labels("up"),
        )?,
        value(
            text,
            "kube_horizontalpodautoscaler_scaling_events_total",
            &labels("down"),
        )?,
    ))
}

/// Runs the demo until it has scaled up and back down.
async fn scale_up_and_down(bed: &Bed) -> (f64, f64) {
    for _ in 0..60 {
        bed.advance(Duration::from_secs(10));
        let (up, down) = occurrences(&bed.handle.scaling_events());
        if up >= 1.0 && down >= 1.0 {
            return (up, down);
        }
    }
    panic!("the demo did not scale up and down within 10 simulated minutes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scaling_action_is_counted_once_across_a_410_and_restarts() {
    let bed = Bed::start(Scenario::builtin("demo").expect("demo")).await;
    let state = tempfile::tempdir().expect("state dir");
    let mut config = bed.config();
    config.state_dir = Some(state.path().to_owned());
    let sender = bed.sender("scaling", config.clone());

    let expected = scale_up_and_down(&bed).await;
    bed.wait_for("counts match the events", |t| {
        (totals(t, "scaling") == Some(expected)).then_some(())
    })
    .await;

    // The API forgets its watch history: every watch gets 410 Gone and relists, re-delivering
    // every event. Nothing is counted twice.
    bed.handle.inject_fault(Fault::ExpireResourceVersions);
    bed.advance(Duration::from_secs(1));
    bed.wait_for("the events watch relisted", |t| {
        value(
            t,
            "relay_sender_watch_restarts_total",
            &[("cluster", "scaling"), ("resource", "events")],
        )
        .filter(|n| *n >= 1.0)
    })
    .await;
    let text = bed.metrics().await;
    assert_eq!(totals(&text, "scaling"), Some(expected), "after the relist");

    // A restart with the state directory continues exactly.
    sender.stop().await;
    let sender = bed.sender("scaling", config.clone());
    sender.wait_sessions(1).await;
    bed.wait_for("restarted sender relayed its ledger", |t| {
        (value(
            t,
            "relay_sender_reconnects_total",
            &[("cluster", "scaling")],
        ) == Some(0.0)
            && totals(t, "scaling") == Some(expected))
        .then_some(())
    })
    .await;
    // Let the events watch list everything again; still no double count.
    bed.advance(Duration::from_secs(1));
    assert_eq!(occurrences(&bed.handle.scaling_events()), expected);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(totals(&bed.metrics().await, "scaling"), Some(expected));
    sender.stop().await;

    // A restart without a state directory recounts what the API still holds: the same here.
    let mut stateless = bed.config();
    stateless.state_dir = None;
    let sender = bed.sender("scaling", stateless);
    sender.wait_synced(WATCHERS).await;
    assert_eq!(
        totals(&bed.metrics().await, "scaling"),
        Some(expected),
        "recounted"
    );
    sender.stop().await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_state_dir_counts_survive_events_expiring_while_the_sender_is_down() {
    // Events live one minute here instead of an hour.
    let yaml = format!("{DEMO}\nevents: {{ttl: 60s}}\n");
    let bed = Bed::start(Scenario::from_yaml(&yaml).expect("scenario")).await;
    let state = tempfile::tempdir().expect("state dir");
    let mut config = bed.config();
    config.state_dir = Some(state.path().to_owned());
    let sender = bed.sender("ttl", config.clone());

    // Scale up, relay, stop the sender.
    let mut up = 0.0;
    for _ in 0..30 {
        bed.advance(Duration::from_secs(5));
        up = occurrences(&bed.handle.scaling_events()).0;
        if up >= 1.0 {
            break;
        }
    }
    assert!(up >= 1.0, "scaled up");
    let counted = bed
        .wait_for("up counted", |t| totals(t, "ttl").filter(|(u, _)| *u >= up))
        .await;
    sender.stop().await;

    // While it is down every scaling event expires.
    bed.advance(Duration::from_secs(180));
    let left = bed.handle.scaling_events();
    let (up_left, down_left) = occurrences(&left);

    // With the ledger, the count continues from what was counted plus what is new.
    let sender = bed.sender("ttl", config);
    sender.wait_synced(WATCHERS).await;
    let after = totals(&bed.metrics().await, "ttl").expect("relayed");
    assert!(after.1 >= down_left, "{after:?}");
    assert!(
        after.0 >= counted.0,
        "the count never goes back: {after:?} after {counted:?}"
    );
    assert!(
        after.0 > up_left,
        "more than the API still holds ({up_left}): expired events stay counted"
    );
    sender.stop().await;
    bed.stop().await;
}

/// The cells of each scaling event row of the receiver's status page: (cluster, direction,
/// new size, reason), as rendered.
fn event_rows(html: &str) -> Vec<(String, String, String, String)> {
    let cell = |row: &str, class: &str| {
        let start = row.find(&format!("<td class=\"{class}\">"))? + class.len() + 13;
        Some(row[start..start + row[start..].find("</td>")?].to_owned())
    };
    html.split("<tr class=\"event\">")
        .skip(1)
        .filter_map(|row| {
            let row = &row[..row.find("</tr>")?];
            // Seen, then cluster: the second plain cell.
            let cluster = row.split("<td>").nth(2)?.split("</td>").next()?.to_owned();
            Some((
                cluster,
                cell(row, "direction")?,
                cell(row, "new-size")?,
                cell(row, "reason")?,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_each_scaling_actions_new_size_and_reason() {
    let bed = Bed::start(Scenario::builtin("demo").expect("demo")).await;
    let sender = bed.sender("page", bed.config());
    sender.wait_synced(WATCHERS).await;
    let expected = scale_up_and_down(&bed).await;
    bed.wait_for("counts match the events", |t| {
        (totals(t, "page") == Some(expected)).then_some(())
    })
    .await;

    // What the HPA controller said, per direction: (new size, reason as the page shows it).
    let said = |direction: Direction| -> BTreeSet<(String, String)> {
        bed.handle
            .scaling_events()
            .iter()
            .filter_map(|e| {
                let message = e.message.as_deref()?;
                (stated_direction(message) == Some(direction)).then(|| {
                    (
                        new_size(message).map_or_else(|| "?".to_owned(), |n| n.to_string()),
                        kube_relay_receiver::status::escape(stated_reason(message)),
                    )
                })
            })
            .collect()
    };
    let response = kube_relay_testkit::http::get(bed.http, "/", &[])
        .await
        .expect("status page");
    let html = response.text().expect("utf-8").to_owned();
    let rows = event_rows(&html);
    for (direction, label) in [(Direction::Up, "up"), (Direction::Down, "down")] {
        let shown: Vec<_> = rows
            .iter()
            .filter(|(cluster, d, _, _)| cluster == "page" && d == label)
            .collect();
        assert!(!shown.is_empty(), "no {label} event on the page:\n{html}");
        let said = said(direction);
        for (_, _, size, reason) in shown {
            assert!(
                said.contains(&(size.clone(), reason.clone())),
                "{label} event shown with new size {size:?} and reason {reason:?}; the HPA \
                 controller said {said:?}"
            );
        }
    }
    sender.stop().await;
    bed.stop().await;
}
