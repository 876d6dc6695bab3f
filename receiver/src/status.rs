//! The status page at `/`: server-rendered HTML, no scripts, what someone debugging on the
//! receiver's host looks for first. One row per cluster: the link (up since, or down and
//! when its series expire), the source (whether the sender's API server answers and its
//! watches are established: a cluster whose source is down shows frozen data), the sender,
//! its address and software, the last change from the cluster, pods per phase and series;
//! then pods per namespace and phase, each HPA's replicas (current, desired, min, max), and
//! the recent scaling events (the recent increases of
//! `kube_horizontalpodautoscaler_scaling_events_total`) with the HPA's new size and the
//! reason the HPA controller gave. Every value is HTML-escaped (cluster names, sender ids,
//! namespaces and reasons are remote input); the page refreshes itself every 10 s.
//!
//! The page stays small however many clusters there are: it shows [`CLUSTERS_PER_PAGE`]
//! clusters at a time (`/?page=N`, or one cluster with `/?cluster=NAME`), the namespace
//! and HPA tables at most [`MAX_ROWS`] rows each, and the store keeps at most
//! [`SCALING_EVENTS_KEPT`](crate::store::SCALING_EVENTS_KEPT) events; what is left out is
//! said on an "N more" line. The summary line counts every cluster, and only the clusters
//! shown have their pods and HPAs read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::{ClusterStatus, ClusterSummary, Detail, LinkState, ScalingEvent, Store};

/// Clusters shown per page.
pub const CLUSTERS_PER_PAGE: usize = 100;

/// Most rows of the namespace table and of the HPA table on one page.
pub const MAX_ROWS: usize = 200;

/// Longest reason shown; a longer one is cut with an ellipsis.
const MAX_REASON_CHARS: usize = 200;

/// Which clusters a request asks for, from the query string of `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// `page=N`: the page of clusters, counted from 1 (0 and nonsense read as 1).
    pub page: usize,
    /// `cluster=NAME`: only this cluster.
    pub cluster: Option<String>,
}

impl PageRequest {
    /// Reads `page` and `cluster` from a query string; anything else is ignored.
    pub fn parse(query: Option<&str>) -> PageRequest {
        let mut request = PageRequest {
            page: 1,
            cluster: None,
        };
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("page", n)) => request.page = n.parse().unwrap_or(1).max(1),
                Some(("cluster", name)) if !name.is_empty() => {
                    request.cluster = Some(name.to_owned());
                }
                _ => {}
            }
        }
        request
    }
}

/// Renders the page `query` asks for from the store.
pub fn page(store: &Store, query: Option<&str>) -> String {
    let request = PageRequest::parse(query);
    let clusters = store.clusters();
    let shown = Selection::of(&clusters, &request);
    let names: BTreeSet<&str> = clusters[shown.range.clone()]
        .iter()
        .map(|c| c.cluster.as_str())
        .collect();
    let summaries = store.summaries(|name| {
        if names.contains(name) {
            Detail::Full
        } else {
            Detail::Source
        }
    });
    render(&clusters, &summaries, &store.scaling_events(), &request)
}

/// The clusters a request shows: a range of the clusters sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selection {
    range: std::ops::Range<usize>,
    /// The page shown (from 1) and how many there are.
    page: usize,
    pages: usize,
}

impl Selection {
    fn of(clusters: &[ClusterStatus], request: &PageRequest) -> Selection {
        let pages = clusters.len().div_ceil(CLUSTERS_PER_PAGE).max(1);
        if let Some(name) = &request.cluster {
            let range = match clusters.binary_search_by(|c| c.cluster.as_str().cmp(name)) {
                Ok(i) => i..i + 1,
                Err(_) => 0..0,
            };
            let page = range.start / CLUSTERS_PER_PAGE + 1;
            return Selection { range, page, pages };
        }
        let page = request.page.clamp(1, pages);
        let start = (page - 1) * CLUSTERS_PER_PAGE;
        Selection {
            range: start..clusters.len().min(start + CLUSTERS_PER_PAGE),
            page,
            pages,
        }
    }
}

/// Renders the page from every cluster's status (sorted by name), their summaries (by
/// cluster name: [`Detail::Full`] for the clusters `request` selects, at least
/// [`Detail::Source`] for the others) and the recent scaling events.
pub fn render(
    clusters: &[ClusterStatus],
    summaries: &BTreeMap<String, ClusterSummary>,
    events: &[ScalingEvent],
    request: &PageRequest,
) -> String {
    let mut html = String::with_capacity(16 * 1024);
    html.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <title>kube-relay receiver</title><style>\
         body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
         .up{color:#060}.down{color:#a00;font-weight:bold}.unknown{color:#666}\
         .more{font-style:italic}</style>\
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

    let selection = Selection::of(clusters, request);
    let shown = &clusters[selection.range.clone()];
    pagination(&mut html, clusters.len(), &selection, request);

    html.push_str(
        "<h2>Clusters</h2>\n<table id=\"clusters\"><thead><tr><th>Cluster</th><th>Link</th>\
         <th>Source</th><th>Sender</th><th>Address</th><th>Agent</th><th>Last change</th>\
         <th>Pods</th><th>Series</th></tr></thead><tbody>\n",
    );
    let now = SystemTime::now();
    for c in shown {
        cluster_row(&mut html, c, summary_of(c), now);
    }
    match (&request.cluster, clusters.is_empty()) {
        (Some(name), _) if shown.is_empty() => {
            let _ = writeln!(
                html,
                "<tr><td colspan=\"9\">No cluster named {}.</td></tr>",
                escape(name)
            );
        }
        (_, true) => {
            html.push_str("<tr><td colspan=\"9\">No sender has connected yet.</td></tr>\n")
        }
        _ => {}
    }
    html.push_str("</tbody></table>\n");

    namespaces_table(&mut html, shown, &summary_of);
    hpas_table(&mut html, shown, &summary_of);
    let events: Vec<&ScalingEvent> = events
        .iter()
        .filter(|e| {
            request
                .cluster
                .as_ref()
                .is_none_or(|name| e.cluster == *name)
        })
        .collect();
    events_table(&mut html, &events);
    html.push_str("</body></html>\n");
    html
}

/// "Clusters 101–200 of 20000", with links to the neighbouring pages.
fn pagination(html: &mut String, total: usize, selection: &Selection, request: &PageRequest) {
    if request.cluster.is_some() {
        let _ = writeln!(
            html,
            "<p id=\"pages\">One cluster shown; <a href=\"/?page={}\">all clusters</a>.</p>",
            selection.page
        );
        return;
    }
    if selection.pages <= 1 {
        return;
    }
    let _ = write!(
        html,
        "<p id=\"pages\">Clusters {}–{} of {total} ({CLUSTERS_PER_PAGE} per page, page {} of {})",
        selection.range.start + 1,
        selection.range.end,
        selection.page,
        selection.pages
    );
    if selection.page > 1 {
        let _ = write!(
            html,
            " <a rel=\"prev\" href=\"/?page={}\">previous</a>",
            selection.page - 1
        );
    }
    if selection.page < selection.pages {
        let _ = write!(
            html,
            " <a rel=\"next\" href=\"/?page={}\">next</a>",
            selection.page + 1
        );
    }
    html.push_str("</p>\n");
}

fn cluster_row(html: &mut String, c: &ClusterStatus, summary: &ClusterSummary, now: SystemTime) {
    let is_up = matches!(c.link, LinkState::Up { .. });
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
    let (source_class, source) = source_cell(is_up, summary);
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
    let per_phase = summary.pods_per_phase();
    let pods = if per_phase.is_empty() {
        "none".to_owned()
    } else {
        phases_text(per_phase.iter().map(|(phase, n)| (*phase, *n)))
    };
    let _ = writeln!(
        html,
        "<tr class=\"cluster\" data-cluster=\"{name}\"><td class=\"name\">\
         <a href=\"/?cluster={name}\">{name}</a></td>\
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

/// `2 Running, 1 Pending`.
fn phases_text<'a>(phases: impl Iterator<Item = (&'a str, u64)>) -> String {
    phases
        .map(|(phase, n)| format!("{n} {phase}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The "N more" row closing a capped table.
fn more_row(html: &mut String, columns: usize, more: usize, what: &str) {
    if more > 0 {
        let _ = writeln!(
            html,
            "<tr class=\"more\"><td colspan=\"{columns}\">{more} more {what} not shown \
             (at most {MAX_ROWS} rows per table; open one cluster with /?cluster=NAME)</td></tr>"
        );
    }
}

fn namespaces_table<'a>(
    html: &mut String,
    shown: &'a [ClusterStatus],
    summary_of: &impl Fn(&'a ClusterStatus) -> &'a ClusterSummary,
) {
    html.push_str("<h2>Pods by namespace</h2>\n");
    let mut rows = shown.iter().flat_map(|c| {
        summary_of(c)
            .pods
            .iter()
            .map(move |(ns, phases)| (c, ns, phases))
    });
    let Some(first) = rows.next() else {
        html.push_str("<p id=\"no-pods\">None relayed.</p>\n");
        return;
    };
    html.push_str(
        "<table id=\"namespaces\"><thead><tr><th>Cluster</th><th>Namespace</th>\
         <th>Pods</th><th>Total</th></tr></thead><tbody>\n",
    );
    let mut more = 0;
    for (i, (c, namespace, phases)) in std::iter::once(first).chain(rows).enumerate() {
        if i >= MAX_ROWS {
            more += 1;
            continue;
        }
        let _ = writeln!(
            html,
            "<tr class=\"namespace\"><td>{}</td><td>{}</td><td class=\"phases\">{}</td>\
             <td class=\"total\">{}</td></tr>",
            escape(&c.cluster),
            escape(namespace),
            escape(&phases_text(phases.iter().map(|(p, n)| (p.as_str(), *n)))),
            phases.values().sum::<u64>(),
        );
    }
    more_row(html, 4, more, "namespaces");
    html.push_str("</tbody></table>\n");
}

fn hpas_table<'a>(
    html: &mut String,
    shown: &'a [ClusterStatus],
    summary_of: &impl Fn(&'a ClusterStatus) -> &'a ClusterSummary,
) {
    html.push_str("<h2>HorizontalPodAutoscalers</h2>\n");
    let mut rows = shown
        .iter()
        .flat_map(|c| summary_of(c).hpas.iter().map(move |h| (c, h)));
    let Some(first) = rows.next() else {
        html.push_str("<p id=\"no-hpas\">None relayed.</p>\n");
        return;
    };
    html.push_str(
        "<table id=\"hpas\"><thead><tr><th>Cluster</th><th>Namespace</th>\
         <th>HorizontalPodAutoscaler</th><th>Current replicas</th><th>Desired replicas</th>\
         <th>Min</th><th>Max</th></tr></thead><tbody>\n",
    );
    let mut more = 0;
    for (i, (c, h)) in std::iter::once(first).chain(rows).enumerate() {
        if i >= MAX_ROWS {
            more += 1;
            continue;
        }
        let _ = writeln!(
            html,
            "<tr class=\"hpa\"><td>{}</td><td>{}</td><td>{}</td><td class=\"current\">{}</td>\
             <td class=\"desired\">{}</td><td class=\"min\">{}</td><td class=\"max\">{}</td></tr>",
            escape(&c.cluster),
            escape(&h.namespace),
            escape(&h.name),
            number(h.current),
            number(h.desired),
            number(h.min),
            number(h.max),
        );
    }
    more_row(html, 7, more, "HPAs");
    html.push_str("</tbody></table>\n");
}

fn events_table(html: &mut String, events: &[&ScalingEvent]) {
    html.push_str("<h2>Recent scaling events</h2>\n");
    if events.is_empty() {
        html.push_str("<p id=\"no-events\">None seen since the receiver started.</p>\n");
        return;
    }
    html.push_str(
        "<table id=\"events\"><thead><tr><th>Seen</th><th>Cluster</th><th>Namespace</th>\
         <th>HorizontalPodAutoscaler</th><th>Direction</th><th>New size</th><th>Reason</th>\
         <th>Events</th><th>Total</th></tr></thead><tbody>\n",
    );
    for e in events {
        let reason = e.reason.as_deref().map_or_else(
            || "not relayed".to_owned(),
            |r| match r.char_indices().nth(MAX_REASON_CHARS) {
                Some((cut, _)) => format!("{}…", &r[..cut]),
                None if r.is_empty() => "not given".to_owned(),
                None => r.to_owned(),
            },
        );
        let _ = writeln!(
            html,
            "<tr class=\"event\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"direction\">{}</td><td class=\"new-size\">{}</td>\
             <td class=\"reason\">{}</td><td class=\"increase\">{}</td>\
             <td class=\"total\">{}</td></tr>",
            rfc3339(e.at),
            escape(&e.cluster),
            escape(&e.namespace),
            escape(&e.hpa),
            escape(&e.direction),
            number(e.new_size),
            escape(&reason),
            e.increase,
            e.total,
        );
    }
    html.push_str("</tbody></table>\n");
}

/// A relayed number, `?` when absent.
fn number(v: Option<f64>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| v.to_string())
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

    fn status(cluster: &str) -> ClusterStatus {
        ClusterStatus {
            cluster: cluster.into(),
            link: LinkState::Up {
                since: UNIX_EPOCH,
                peer: None,
            },
            sender_id: "s".into(),
            agent: "a".into(),
            peer: None,
            last_update: None,
            series: 7,
            frames: 0,
            bytes: 0,
            updates: 0,
            duplicates: 0,
            series_dropped: 0,
            families_refused: 0,
        }
    }

    fn event(cluster: &str, reason: Option<&str>) -> ScalingEvent {
        ScalingEvent {
            at: UNIX_EPOCH,
            cluster: cluster.into(),
            namespace: "<ns>".into(),
            hpa: "web".into(),
            direction: "up".into(),
            increase: 1.0,
            total: 3.0,
            new_size: Some(4.0),
            reason: reason.map(str::to_owned),
        }
    }

    #[test]
    fn everything_is_escaped() {
        let c = ClusterStatus {
            sender_id: "<script>alert(1)</script>".into(),
            agent: "a&b \"q\"".into(),
            ..status("c1")
        };
        let summary = ClusterSummary {
            pods: BTreeMap::from([(
                "<b>ns</b>".to_owned(),
                BTreeMap::from([("Running".to_owned(), 2)]),
            )]),
            ..ClusterSummary::default()
        };
        let summaries = BTreeMap::from([("c1".to_owned(), summary)]);
        let events = [event(
            "c1",
            Some("<img src=x onerror=alert(1)> above target"),
        )];
        let html = render(&[c], &summaries, &events, &PageRequest::parse(None));
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{html}"
        );
        assert!(!html.contains("<b>ns"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("a&amp;b &quot;q&quot;"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt; above target"));
        assert!(html.contains("<td class=\"series\">7</td>"));
        assert!(html.contains("up since 1970-01-01T00:00:00Z"));
        assert!(
            html.contains("<td class=\"phases\">2 Running</td>"),
            "{html}"
        );
        assert!(html.contains("<td class=\"new-size\">4</td>"), "{html}");
    }

    #[test]
    fn twenty_thousand_clusters_make_a_small_page() {
        let clusters: Vec<ClusterStatus> =
            (0..20_000).map(|i| status(&format!("c{i:05}"))).collect();
        let busy = ClusterSummary {
            pods: (0..5)
                .map(|n| {
                    let phases = BTreeMap::from([("Running".to_owned(), 3)]);
                    (format!("ns{n}"), phases)
                })
                .collect(),
            hpas: (0..5)
                .map(|n| crate::store::HpaSummary {
                    namespace: "ns".into(),
                    name: format!("hpa{n}"),
                    ..Default::default()
                })
                .collect(),
            ..ClusterSummary::default()
        };
        let summaries: BTreeMap<String, ClusterSummary> = clusters
            .iter()
            .map(|c| (c.cluster.clone(), busy.clone()))
            .collect();
        let events: Vec<ScalingEvent> = (0..crate::store::SCALING_EVENTS_KEPT)
            .map(|_| event("c00000", Some(&"long reason ".repeat(100))))
            .collect();

        let first = render(&clusters, &summaries, &events, &PageRequest::parse(None));
        assert!(first.len() < 256 * 1024, "{} bytes", first.len());
        assert_eq!(
            first.matches("<tr class=\"cluster\"").count(),
            CLUSTERS_PER_PAGE
        );
        assert!(first.contains("Clusters 1–100 of 20000"), "pagination said");
        assert!(first.contains("href=\"/?page=2\">next</a>"));
        assert_eq!(first.matches("<tr class=\"namespace\"").count(), MAX_ROWS);
        assert!(
            first.contains(">300 more namespaces not shown"),
            "the cap said"
        );
        assert!(first.contains(">300 more HPAs not shown"), "the cap said");
        assert!(first.contains("long reason long reason"));
        assert!(!first.contains(&"long reason ".repeat(20)), "reasons cut");

        let last = render(
            &clusters,
            &summaries,
            &events,
            &PageRequest::parse(Some("page=999")),
        );
        assert!(
            last.contains("data-cluster=\"c19999\""),
            "clamped to the last page"
        );
        assert!(last.contains("rel=\"prev\" href=\"/?page=199\""));
        assert!(!last.contains("rel=\"next\""));

        let one = render(
            &clusters,
            &summaries,
            &events,
            &PageRequest::parse(Some("cluster=c12345")),
        );
        assert_eq!(one.matches("<tr class=\"cluster\"").count(), 1);
        assert!(one.contains("data-cluster=\"c12345\""));
        assert!(one.contains("<p id=\"no-events\">"), "only its own events");
        let missing = render(
            &clusters,
            &summaries,
            &events,
            &PageRequest::parse(Some("cluster=%3Cx%3E<x>")),
        );
        assert!(
            missing.contains("No cluster named %3Cx%3E&lt;x&gt;."),
            "{missing}"
        );
    }

    #[test]
    fn queries_are_read_leniently() {
        let parse = |q| PageRequest::parse(Some(q));
        assert_eq!(parse("page=3").page, 3);
        assert_eq!(parse("page=0").page, 1);
        assert_eq!(parse("page=x&cluster=alpha").page, 1);
        assert_eq!(parse("cluster=alpha").cluster.as_deref(), Some("alpha"));
        assert_eq!(parse("cluster=").cluster, None);
        assert_eq!(PageRequest::parse(None).page, 1);
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
