//! Scaling events: the increases of the HPA scaling-events counter, kept for the status page.
//!
//! An increase is recorded when a delta raises a tracked counter, and when a snapshot
//! replaces a cluster's data with a higher value than the one it replaced (series matched by
//! labels), so increases that happened while the sender was away still show up.

use std::collections::VecDeque;
use std::time::SystemTime;

/// Family whose increases the status page lists as scaling events (counter, no `_total`).
pub const SCALING_EVENTS_FAMILY: &str = "kube_horizontalpodautoscaler_scaling_events";

/// How many recent scaling events the store keeps for the status page.
pub const SCALING_EVENTS_KEPT: usize = 50;

/// One recent increase of the scaling events counter.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingEvent {
    /// When the receiver saw it.
    pub at: SystemTime,
    /// Cluster it came from.
    pub cluster: String,
    /// The series' `namespace` label.
    pub namespace: String,
    /// The series' `horizontalpodautoscaler` label.
    pub hpa: String,
    /// The series' `direction` label (`up` or `down`).
    pub direction: String,
    /// How much the counter grew.
    pub increase: f64,
    /// The counter's new value.
    pub total: f64,
}

/// The most recent [`SCALING_EVENTS_KEPT`] events, oldest first.
#[derive(Debug, Default)]
pub(crate) struct ScalingLog {
    events: VecDeque<ScalingEvent>,
}

impl ScalingLog {
    /// Appends `events`, forgetting the oldest beyond the bound.
    pub(crate) fn extend(&mut self, events: Vec<ScalingEvent>) {
        for event in events {
            if self.events.len() == SCALING_EVENTS_KEPT {
                self.events.pop_front();
            }
            self.events.push_back(event);
        }
    }

    /// The events, newest first.
    pub(crate) fn newest_first(&self) -> Vec<ScalingEvent> {
        self.events.iter().rev().cloned().collect()
    }
}

/// Records an event in `events` if a tracked counter with `labels` grew from `before` to
/// `after` (a counter seen for the first time grew from 0).
pub(crate) fn record_increase(
    events: &mut Vec<ScalingEvent>,
    cluster: &str,
    labels: &[(String, String)],
    before: Option<f64>,
    after: f64,
) {
    let increase = after - before.unwrap_or(0.0);
    if increase.is_nan() || increase <= 0.0 {
        return;
    }
    let label = |name: &str| {
        labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    events.push(ScalingEvent {
        at: SystemTime::now(),
        cluster: cluster.to_owned(),
        namespace: label("namespace"),
        hpa: label("horizontalpodautoscaler"),
        direction: label("direction"),
        increase,
        total: after,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_events() {
        let mut log = ScalingLog::default();
        let mut events = Vec::new();
        let labels = [("horizontalpodautoscaler".to_owned(), "web".to_owned())];
        for total in 1..=(SCALING_EVENTS_KEPT + 3) {
            record_increase(&mut events, "c", &labels, None, total as f64);
        }
        record_increase(&mut events, "c", &labels, Some(5.0), 5.0);
        record_increase(&mut events, "c", &labels, Some(5.0), f64::NAN);
        log.extend(events);
        let kept = log.newest_first();
        assert_eq!(kept.len(), SCALING_EVENTS_KEPT);
        assert_eq!(kept[0].total, (SCALING_EVENTS_KEPT + 3) as f64);
        assert_eq!(kept[0].hpa, "web");
        assert_eq!(kept[0].direction, "");
    }
}
