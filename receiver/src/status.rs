//! The status page at `/`: server-rendered HTML, no scripts, what someone debugging on the
//! receiver's host looks for first. One row per cluster: the link (up since, or down and
//! when its series expire), the source (whether the sender's API server answers and its
//! watches are established: a cluster whose source is down shows frozen data), the sender,
//! its address and software, the last change from the cluster, pods per phase and series;
//! then each HPA's replicas and the recent scaling events, that is the recent increases of
//! `kube_horizontalpodautoscaler_scaling_events_total`. Every value is HTML-escaped; the
//! page refreshes itself every 10 s.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::{ClusterStatus, ClusterSummary, LinkState, ScalingEvent};

/// Renders the page from the clusters' status and summaries (by cluster name) and the
/// recent scaling events.
pub fn render(
    clusters: &[ClusterStatus],
    summaries: &BTreeMap<String, ClusterSummary>,
    events: &[ScalingEvent],
) -> String {
    let mut html = String::with_capacity(4096);
    html.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <title>kube-relay receiver</title><style>\
         body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
         .up{color:#060}.down{color:#a00;font-weight:bold}.unknown{color:#666}</style>\
         </head><body>\n<h1>kube-relay receiver</h1>\n",
    );
    let empty = ClusterSummary::default();
    let summary_of = |c: &ClusterStatus| summaries.get(&c.cluster).unwrap_or(&empty);
    let is_up = |c: &ClusterStatus| matches!(c.link, LinkState::Up { .. });
    let up = clusters.iter().filter(|c| is_up(c)).count();
    let frozen = clusters
        .iter()
        .filter(|c| is_up(c) && summary_of(c).source_down())
        .count();
    let _ = write!(
        html,
        "<p id=\"summary\">{} cluster(s), {up} connected",
        clusters.len()
    );
    if frozen > 0 {
        let _ = write!(
            html,
            ", <span class=\"down\">{frozen} with a source down (their data is frozen)</span>"
        );
    }
    html.push_str(". Metrics at <a href=\"/metrics\">/metrics</a>.</p>\n");
    html.push_str(
        "<h2>Clusters</h2>\n<table id=\"clusters\"><thead><tr><th>Cluster</th><th>Link</th>\
         <th>Source</th><th>Sender</th><th>Address</th><th>Agent</th><th>Last change</th>\
         <th>Pods</th><th>Series</th></tr></thead><tbody>\n",
    );
    let now = SystemTime::now();
    for c in clusters {
        let summary = summary_of(c);
        let (class, state) = match &c.link {
            LinkState::Up { since, .. } => ("up", format!("up since {}", rfc3339(*since))),
            LinkState::Down { since, expires_in } => (
                "down",
                format!(
                    "down since {} (series expire in {})",
                    rfc3339(*since),
                    humane(*expires_in)
                ),
            ),
        };
        let (source_class, source) = source_cell(is_up(c), summary);
        let last = c.last_update.map_or_else(
            || "never".to_owned(),
            |t| {
                format!(
                    "{} ({} ago)",
                    rfc3339(t),
                    humane(now.duration_since(t).unwrap_or_default())
                )
            },
        );
        let pods = if summary.pods.is_empty() {
            "none".to_owned()
        } else {
            summary
                .pods
                .iter()
                .map(|(phase, n)| format!("{n} {phase}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            html,
            "<tr class=\"cluster\" data-cluster=\"{name}\"><td class=\"name\">{name}</td>\
             <td class=\"state {class}\">{state}</td>\
             <td class=\"source {source_class}\">{source}</td>\
             <td class=\"sender\">{sender}</td><td class=\"address\">{address}</td>\
             <td class=\"agent\">{agent}</td><td class=\"last-update\">{last}</td>\
             <td class=\"pods\">{pods}</td><td class=\"series\">{series}</td></tr>",
            name = escape(&c.cluster),
            state = escape(&state),
            source = escape(&source),
            sender = escape(&c.sender_id),
            address = c
                .peer
                .map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
            agent = escape(&c.agent),
            last = escape(&last),
            pods = escape(&pods),
            series = c.series,
        );
    }
    if clusters.is_empty() {
        html.push_str("<tr><td colspan=\"9\">No sender has connected yet.</td></tr>\n");
    }
    html.push_str("</tbody></table>\n<h2>HorizontalPodAutoscalers</h2>\n");
    let hpas: Vec<_> = clusters
        .iter()
        .flat_map(|c| summary_of(c).hpas.iter().map(move |h| (c, h)))
        .collect();
    if hpas.is_empty() {
        html.push_str("<p id=\"no-hpas\">None relayed.</p>\n");
    } else {
        html.push_str(
            "<table id=\"hpas\"><thead><tr><th>Cluster</th><th>Namespace</th>\
             <th>HorizontalPodAutoscaler</th><th>Current replicas</th><th>Desired replicas</th>\
             <th>Min</th><th>Max</th></tr></thead><tbody>\n",
        );
        let number = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        for (c, h) in hpas {
            let _ = writeln!(
                html,
                "<tr class=\"hpa\"><td>{}</td><td>{}</td><td>{}</td><td class=\"current\">{}</td>\
                 <td class=\"desired\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(&c.cluster),
                escape(&h.namespace),
                escape(&h.name),
                number(h.current),
                number(h.desired),
                number(h.min),
                number(h.max),
            );
        }
        html.push_str("</tbody></table>\n");
    }
    html.push_str("<h2>Recent scaling events</h2>\n");
    if events.is_empty() {
        html.push_str("<p id=\"no-events\">None seen since the receiver started.</p>\n");
    } else {
        html.push_str(
            "<table id=\"events\"><thead><tr><th>Seen</th><th>Cluster</th><th>Namespace</th>\
             <th>HorizontalPodAutoscaler</th><th>Direction</th><th>Events</th><th>Total</th>\
             </tr></thead><tbody>\n",
        );
        for e in events {
            let _ = writeln!(
                html,
                "<tr class=\"event\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                rfc3339(e.at),
                escape(&e.cluster),
                escape(&e.namespace),
                escape(&e.hpa),
                escape(&e.direction),
                e.increase,
                e.total,
            );
        }
        html.push_str("</tbody></table>\n");
    }
    html.push_str("</body></html>\n");
    html
}

/// The source cell: its CSS class and text.
fn source_cell(link_up: bool, summary: &ClusterSummary) -> (&'static str, String) {
    if !link_up {
        return ("unknown", "unknown while the link is down".to_owned());
    }
    if summary.api_up.is_none() && summary.watches.is_empty() {
        return ("unknown", "not reported by this sender".to_owned());
    }
    if !summary.source_down() {
        return (
            "up",
            format!(
                "API server answering, {} watch(es) established",
                summary.watches.len()
            ),
        );
    }
    let mut text = String::from("DOWN, data frozen: ");
    if summary.api_up == Some(false) {
        text.push_str("the API server does not answer");
    }
    let down: Vec<&str> = summary.watches_down().collect();
    if !down.is_empty() {
        if summary.api_up == Some(false) {
            text.push_str("; ");
        }
        let _ = write!(text, "watch down: {}", down.join(", "));
    }
    ("down", text)
}

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `2026-11-23T16:07:00Z` (UTC, whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `45s`, `3m 20s`, `2h 5m`.
fn humane(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn everything_is_escaped() {
        let c = ClusterStatus {
            cluster: "c1".into(),
            link: LinkState::Up {
                since: UNIX_EPOCH,
                peer: None,
            },
            sender_id: "<script>alert(1)</script>".into(),
            agent: "a&b \"q\"".into(),
            peer: None,
            last_update: None,
            series: 7,
            frames: 0,
            bytes: 0,
            updates: 0,
            duplicates: 0,
            series_dropped: 0,
            families_refused: 0,
        };
        let html = render(&[c], &BTreeMap::new(), &[]);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("a&amp;b &quot;q&quot;"));
        assert!(html.contains("<td class=\"series\">7</td>"));
        assert!(html.contains("up since 1970-01-01T00:00:00Z"));
    }

    #[test]
    fn the_source_cell_says_when_the_data_is_frozen() {
        let mut summary = ClusterSummary {
            api_up: Some(true),
            watches: vec![("nodes".into(), true), ("pods".into(), true)],
            ..ClusterSummary::default()
        };
        assert_eq!(
            source_cell(true, &summary),
            ("up", "API server answering, 2 watch(es) established".into())
        );
        summary.watches[1].1 = false;
        assert_eq!(
            source_cell(true, &summary),
            ("down", "DOWN, data frozen: watch down: pods".into())
        );
        summary.api_up = Some(false);
        assert_eq!(
            source_cell(true, &summary).1,
            "DOWN, data frozen: the API server does not answer; watch down: pods"
        );
        assert_eq!(source_cell(false, &summary).0, "unknown");
        assert_eq!(
            source_cell(true, &ClusterSummary::default()).1,
            "not reported by this sender"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(humane(Duration::from_secs(45)), "45s");
        assert_eq!(humane(Duration::from_secs(200)), "3m 20s");
        assert_eq!(humane(Duration::from_secs(7500)), "2h 5m");
    }
}
