//! Scaling events: the increases of the HPA scaling-events counter, kept for the status page.
//!
//! An increase is recorded when a delta raises a tracked counter, and when a snapshot
//! replaces a cluster's data with a higher value than the one it replaced (series matched by
//! labels), so increases that happened while the sender was away still show up. Once the
//! batch is applied, each new event is [described](describe) with the new size and reason
//! of its HPA's latest action in that direction, which the sender relays beside the counter
//! ([`LAST_ACTION_FAMILY`]); a sender that does not relay them leaves both unknown.

use std::collections::VecDeque;
use std::time::SystemTime;

use super::labels::label_value;

/// Family whose increases the status page lists as scaling events (counter, no `_total`).
pub const SCALING_EVENTS_FAMILY: &str = "kube_horizontalpodautoscaler_scaling_events";

/// Family holding the new size of each HPA's latest action per direction, its reason a
/// label.
pub const LAST_ACTION_FAMILY: &str = "kube_horizontalpodautoscaler_last_scaling_event_replicas";

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
    /// The HPA's new size after the action (`New size: N` of its event), when relayed.
    pub new_size: Option<f64>,
    /// The reason the HPA controller gave, when relayed.
    pub reason: Option<String>,
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
        new_size: None,
        reason: None,
    });
}

/// Fills in the new size and reason of `events` (all of one cluster) from the samples of
/// [`LAST_ACTION_FAMILY`] (rendered labels and value), matched by namespace, HPA and
/// direction.
pub(crate) fn describe<'a>(
    events: &mut [ScalingEvent],
    actions: impl Iterator<Item = (&'a str, f64)>,
) {
    if events.is_empty() {
        return;
    }
    for (labels, size) in actions {
        let label = |key| label_value(labels, key).unwrap_or_default();
        let (namespace, hpa, direction) = (
            label("namespace"),
            label("horizontalpodautoscaler"),
            label("direction"),
        );
        for event in events
            .iter_mut()
            .filter(|e| e.namespace == namespace && e.hpa == hpa && e.direction == direction)
        {
            event.new_size = Some(size);
            event.reason = Some(label("reason"));
        }
    }
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

    #[test]
    fn events_get_the_size_and_reason_of_their_direction() {
        let mut events = Vec::new();
        let labels = |direction: &str| {
            [
                ("namespace".to_owned(), "shop".to_owned()),
                ("horizontalpodautoscaler".to_owned(), "web".to_owned()),
                ("direction".to_owned(), direction.to_owned()),
            ]
        };
        record_increase(&mut events, "c", &labels("up"), Some(1.0), 2.0);
        record_increase(&mut events, "c", &labels("down"), Some(0.0), 1.0);
        let actions = [
            (
                r#",namespace="shop",horizontalpodautoscaler="web",direction="up",reason="cpu \"x\" above target""#,
                5.0,
            ),
            (
                r#",namespace="shop",horizontalpodautoscaler="api",direction="down",reason="All metrics below target""#,
                1.0,
            ),
        ];
        describe(&mut events, actions.into_iter());
        assert_eq!(events[0].new_size, Some(5.0));
        assert_eq!(events[0].reason.as_deref(), Some("cpu \"x\" above target"));
        assert_eq!((events[1].new_size, &events[1].reason), (None, &None));
    }
}
