//! CSV writing (RFC 4180): the per-HPA and per-step tables as rows of text.
//!
//! Durations are in the cluster's seconds: seconds of the query API's clock times `--speed`
//! (1 on a real cluster; a simulator run at `--speed 10` lived ten simulated seconds per real
//! one). CPU is in millicores of the cluster's clock, the unit of `kubectl top`.

use std::fmt::Write as _;

use crate::hpa::HpaTimeline;
use crate::steps::StepRow;
use crate::window::{Window, rfc3339};

/// Columns of an HPA's table.
pub const HPA_HEADER: [&str; 12] = [
    "time",
    "elapsed_s",
    "desired",
    "current",
    "min",
    "max",
    "cpu_utilization_pct",
    "cpu_target_pct",
    "scaling_events",
    "direction",
    "new_size",
    "reason",
];

/// Columns of the step table.
pub const STEPS_HEADER: [&str; 13] = [
    "step_number",
    "step",
    "start",
    "start_s",
    "duration_s",
    "namespace",
    "deployment",
    "replicas_asked",
    "replicas_reached",
    "time_to_reach_s",
    "cpu_per_pod_mcores_mean",
    "cpu_per_pod_mcores_max",
    "restarts",
];

/// A table as CSV text: a header line, then one line per row.
pub fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut out = String::new();
    line(&mut out, header.iter().map(|h| (*h).to_owned()));
    for row in rows {
        line(&mut out, row);
    }
    out
}

fn line(out: &mut String, fields: impl IntoIterator<Item = String>) {
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if f.contains([',', '"', '\n', '\r']) {
            let _ = write!(out, "\"{}\"", f.replace('"', "\"\""));
        } else {
            out.push_str(&f);
        }
    }
    out.push_str("\r\n");
}

/// A number with at most `decimals` decimals and no trailing zeros; empty for `None`.
pub fn number(value: Option<f64>, decimals: usize) -> String {
    let Some(v) = value else {
        return String::new();
    };
    let text = format!("{v:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    if text == "-0" { "0".to_owned() } else { text }
}

/// One row per point of the window, the scaling actions on the point they were seen at.
pub fn hpa_rows(t: &HpaTimeline, window: &Window, speed: f64) -> Vec<Vec<String>> {
    (0..window.points())
        .map(|i| {
            let at = |c: &[Option<f64>]| number(c.get(i).copied().flatten(), 2);
            let events: Vec<_> = t.events.iter().filter(|e| e.index == i).collect();
            let joined = |f: &dyn Fn(&crate::hpa::ScalingEvent) -> String| {
                events.iter().map(|e| f(e)).collect::<Vec<_>>().join(";")
            };
            vec![
                rfc3339(window.time(i)),
                number(Some(i as f64 * window.resolution * speed), 3),
                at(&t.desired),
                at(&t.current),
                at(&t.min),
                at(&t.max),
                at(&t.utilization),
                at(&t.target),
                if events.is_empty() {
                    String::new()
                } else {
                    events.iter().map(|e| e.count).sum::<u32>().to_string()
                },
                joined(&|e| e.direction.clone()),
                joined(&|e| number(e.new_size, 0)),
                joined(&|e| e.reason.clone()),
            ]
        })
        .collect()
}

/// The step table's rows.
pub fn step_table_rows(rows: &[StepRow], window: &Window, speed: f64) -> Vec<Vec<String>> {
    let seconds = |points: usize| Some(points as f64 * window.resolution * speed);
    let mcores = |v: Option<f64>| v.map(|c| c / speed * 1000.0);
    rows.iter()
        .map(|r| {
            vec![
                r.number.to_string(),
                r.step.clone(),
                rfc3339(window.time(r.start)),
                number(seconds(r.start), 3),
                number(seconds(r.points), 3),
                r.deployment.namespace.clone(),
                r.deployment.name.clone(),
                number(r.asked, 0),
                number(r.reached, 0),
                number(r.points_to_reach.and_then(seconds), 3),
                number(mcores(r.cpu_mean), 1),
                number(mcores(r.cpu_max), 1),
                r.restarts.to_string(),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_needed() {
        let text = table(
            &["a", "b"],
            [
                vec!["1".to_owned(), "plain".to_owned()],
                vec!["x,y".to_owned(), "say \"hi\"\nthen".to_owned()],
            ],
        );
        assert_eq!(
            text,
            "a,b\r\n1,plain\r\n\"x,y\",\"say \"\"hi\"\"\nthen\"\r\n"
        );
    }

    #[test]
    fn numbers_lose_trailing_zeros() {
        assert_eq!(number(Some(2.0), 2), "2");
        assert_eq!(number(Some(47.256), 2), "47.26");
        assert_eq!(number(Some(0.4), 0), "0");
        assert_eq!(number(Some(-0.0001), 2), "0");
        assert_eq!(number(None, 2), "");
    }
}
