//! Each HPA over the window: replicas (desired, current, min, max), CPU utilisation against
//! its target, and its scaling actions with the size each one chose.
//!
//! A scaling action is a step of `kube_horizontalpodautoscaler_scaling_events_total` (one
//! per `SuccessfulRescale` occurrence, by direction). Its *new size* and *reason* are those
//! of its Event, from `kube_horizontalpodautoscaler_last_scaling_event_replicas{direction,
//! reason}` (the latest action's `New size: N` and the controller's reason, relayed in the
//! same batch as the counter's step). From a sender without that family they are restated
//! from the other series: the size is the desired replicas the action set (the first change
//! of `status_desired_replicas` within `settle` points of the counter's step, the two may
//! land a scrape apart, else the value there), the reason the direction and the utilisation
//! against the target.

use std::collections::BTreeMap;

use crate::column::{Column, before, on_grid};
use crate::query_api::Series;
use crate::window::Window;

/// An HPA, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HpaKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl HpaKey {
    fn of(s: &Series) -> HpaKey {
        HpaKey {
            namespace: s.label("namespace").to_owned(),
            name: s.label("horizontalpodautoscaler").to_owned(),
        }
    }
}

/// One scaling action (or several in one point, `count` > 1).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingEvent {
    /// The point it was first seen at.
    pub index: usize,
    /// `up`, `down` or `unknown`, as the counter's label.
    pub direction: String,
    /// Occurrences counted at that point.
    pub count: u32,
    /// Replicas chosen (desired replicas after the action).
    pub new_size: Option<f64>,
    /// Restated reason: direction and utilisation against the target.
    pub reason: String,
}

/// What the query API answered for the HPA families.
#[derive(Debug, Default)]
pub struct HpaAnswers {
    /// `status_desired_replicas`.
    pub desired: Vec<Series>,
    /// `status_current_replicas`.
    pub current: Vec<Series>,
    /// `spec_min_replicas`.
    pub min: Vec<Series>,
    /// `spec_max_replicas`.
    pub max: Vec<Series>,
    /// CPU utilisation now (`status_target_metric`).
    pub utilization: Vec<Series>,
    /// CPU utilisation target (`spec_target_metric`).
    pub target: Vec<Series>,
    /// `scaling_events_total` by direction.
    pub events: Vec<Series>,
    /// `info` (the scale target).
    pub info: Vec<Series>,
    /// `last_scaling_event_replicas` by direction and reason.
    pub last_action: Vec<Series>,
}

/// One HPA over the window.
#[derive(Debug, Clone)]
pub struct HpaTimeline {
    /// Which HPA.
    pub key: HpaKey,
    /// The Deployment (or other kind) it scales, `Kind/name`.
    pub scale_target: Option<(String, String)>,
    /// Desired replicas.
    pub desired: Column,
    /// Current replicas.
    pub current: Column,
    /// Lower bound.
    pub min: Column,
    /// Upper bound.
    pub max: Column,
    /// CPU utilisation, percent of requests.
    pub utilization: Column,
    /// CPU utilisation target, percent.
    pub target: Column,
    /// Scaling actions, in order.
    pub events: Vec<ScalingEvent>,
    /// The latest action's new size per direction, one column per reason label:
    /// `(direction, reason, column)`.
    pub last_action: Vec<(String, String, Column)>,
}

/// Builds every HPA the answers name. `settle` is how many points after a counter step a
/// change of desired replicas still belongs to it.
pub fn timelines(window: &Window, answers: &HpaAnswers, settle: usize) -> Vec<HpaTimeline> {
    let grid = |list: &[Series]| -> BTreeMap<HpaKey, Column> {
        list.iter()
            .map(|s| (HpaKey::of(s), on_grid(window, s)))
            .collect()
    };
    let (desired, current, min, max) = (
        grid(&answers.desired),
        grid(&answers.current),
        grid(&answers.min),
        grid(&answers.max),
    );
    let (utilization, target) = (grid(&answers.utilization), grid(&answers.target));
    let mut keys: Vec<HpaKey> = desired
        .keys()
        .chain(current.keys())
        .chain(
            answers
                .events
                .iter()
                .map(HpaKey::of)
                .collect::<Vec<_>>()
                .iter(),
        )
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    let empty = vec![None; window.points()];
    let get = |m: &BTreeMap<HpaKey, Column>, k: &HpaKey| m.get(k).cloned().unwrap_or(empty.clone());
    keys.into_iter()
        .map(|key| {
            let scale_target = answers.info.iter().find(|s| HpaKey::of(s) == key).map(|s| {
                (
                    s.label("scaletargetref_kind").to_owned(),
                    s.label("scaletargetref_name").to_owned(),
                )
            });
            let mut t = HpaTimeline {
                desired: get(&desired, &key),
                current: get(&current, &key),
                min: get(&min, &key),
                max: get(&max, &key),
                utilization: get(&utilization, &key),
                target: get(&target, &key),
                scale_target,
                events: Vec::new(),
                last_action: answers
                    .last_action
                    .iter()
                    .filter(|s| HpaKey::of(s) == key)
                    .map(|s| {
                        (
                            s.label("direction").to_owned(),
                            s.label("reason").to_owned(),
                            on_grid(window, s),
                        )
                    })
                    .collect(),
                key,
            };
            let mut steps = Vec::new();
            for s in answers.events.iter().filter(|s| HpaKey::of(s) == t.key) {
                for (index, count) in counter_steps(&on_grid(window, s)) {
                    steps.push((index, s.label("direction").to_owned(), count));
                }
            }
            steps.sort();
            t.events = describe(&t, &steps, settle);
            t
        })
        .collect()
}

/// The points where a counter went up, and by how much. A counter first seen after the
/// window's first point started in the window (the sender creates it with the first
/// action), so its first value counts; one present from the first point counts only what it
/// gains. A decrease is a reset: the new value counts.
pub fn counter_steps(column: &[Option<f64>]) -> Vec<(usize, u32)> {
    let mut steps = Vec::new();
    let mut last: Option<f64> = None;
    for (i, v) in column.iter().enumerate() {
        let Some(v) = *v else { continue };
        let gained = match last {
            None if i == 0 => 0.0,
            None => v,
            Some(prev) if v < prev => v,
            Some(prev) => v - prev,
        };
        let n = gained.round();
        if n >= 1.0 {
            steps.push((i, n.min(f64::from(u32::MAX)) as u32));
        }
        last = Some(v);
    }
    steps
}

/// The new size and reason the Event of an action in `direction` first seen at `index`
/// gave: the `last_scaling_event_replicas` series of that direction present soonest from
/// `index` (within `settle` points), the most recently born one if several.
fn relayed(t: &HpaTimeline, direction: &str, index: usize, settle: usize) -> Option<(f64, String)> {
    t.last_action
        .iter()
        .filter(|(d, _, _)| d == direction)
        .filter_map(|(_, reason, column)| {
            let end = (index + settle + 1).min(column.len());
            let (at, value) = (index..end).find_map(|j| column[j].map(|v| (j, v)))?;
            let born = column.iter().position(Option::is_some).unwrap_or(0);
            Some((at, std::cmp::Reverse(born), value, reason))
        })
        .min_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
        .map(|(_, _, value, reason)| (value, reason.clone()))
}

fn describe(t: &HpaTimeline, steps: &[(usize, String, u32)], settle: usize) -> Vec<ScalingEvent> {
    steps
        .iter()
        .enumerate()
        .map(|(n, (index, direction, count))| {
            let index = *index;
            if let Some((size, reason)) = relayed(t, direction, index, settle) {
                return ScalingEvent {
                    index,
                    direction: direction.clone(),
                    count: *count,
                    new_size: Some(size),
                    reason,
                };
            }
            let next = steps
                .get(n + 1)
                .map_or(t.desired.len(), |s| s.0)
                .min(index + settle + 1)
                .max(index + 1)
                .min(t.desired.len());
            let previous = before(&t.desired, index);
            let changed = t.desired[index..next]
                .iter()
                .flatten()
                .find(|v| Some(**v) != previous)
                .copied();
            let new_size = changed
                .or(t.desired.get(index).copied().flatten())
                .or(previous);
            let utilization = t.utilization.get(index).copied().flatten();
            let target = t.target.get(index).copied().flatten();
            let reason = match (direction.as_str(), utilization, target) {
                ("up", Some(u), Some(g)) => format!("cpu utilization {u:.0}% above target {g:.0}%"),
                ("down", Some(u), Some(g)) => {
                    format!("cpu utilization {u:.0}% below target {g:.0}%")
                }
                (d, _, _) => format!("scaled {d}"),
            };
            ScalingEvent {
                index,
                direction: direction.clone(),
                count: *count,
                new_size,
                reason,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(points: usize) -> Window {
        Window {
            from: 0.0,
            to: (points - 1) as f64,
            resolution: 1.0,
        }
    }

    fn series(labels: &[(&str, &str)], values: &[Option<f64>]) -> Series {
        Series {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            points: values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i as f64, v)))
                .collect(),
        }
    }

    #[test]
    fn counter_steps_count_births_gains_and_resets() {
        let c = [
            None,
            Some(1.0),
            Some(1.0),
            Some(3.0),
            None,
            Some(3.0),
            Some(1.0),
        ];
        assert_eq!(counter_steps(&c), vec![(1, 1), (3, 2), (6, 1)]);
        // present from the first point: only what it gains
        assert_eq!(
            counter_steps(&[Some(5.0), Some(5.0), Some(6.0)]),
            vec![(2, 1)]
        );
    }

    #[test]
    fn the_new_size_is_the_desired_replicas_the_action_set_even_a_scrape_late() {
        let hpa = [("namespace", "echo"), ("horizontalpodautoscaler", "web")];
        let s = |v: &[Option<f64>]| series(&hpa, v);
        let answers = HpaAnswers {
            // up to 5 (the counter first), down to 3 (desired first), up to 4 (together)
            desired: vec![s(&[
                Some(2.0),
                Some(2.0),
                Some(5.0),
                Some(5.0),
                Some(3.0),
                Some(3.0),
                Some(4.0),
                Some(4.0),
            ])],
            utilization: vec![s(&[
                Some(40.0),
                Some(90.0),
                Some(60.0),
                Some(20.0),
                Some(20.0),
                Some(30.0),
                Some(70.0),
                Some(50.0),
            ])],
            target: vec![s(&[Some(50.0); 8])],
            events: vec![
                series(
                    &[hpa[0], hpa[1], ("direction", "up")],
                    &[
                        None,
                        Some(1.0),
                        Some(1.0),
                        Some(1.0),
                        Some(1.0),
                        Some(1.0),
                        Some(2.0),
                        Some(2.0),
                    ],
                ),
                series(
                    &[hpa[0], hpa[1], ("direction", "down")],
                    &[
                        None,
                        None,
                        None,
                        None,
                        None,
                        Some(1.0),
                        Some(1.0),
                        Some(1.0),
                    ],
                ),
            ],
            info: vec![series(
                &[
                    hpa[0],
                    hpa[1],
                    ("scaletargetref_kind", "Deployment"),
                    ("scaletargetref_name", "web"),
                ],
                &[Some(1.0)],
            )],
            ..HpaAnswers::default()
        };
        let t = timelines(&window(8), &answers, 2);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t[0].scale_target,
            Some(("Deployment".to_owned(), "web".to_owned()))
        );
        let got: Vec<_> = t[0]
            .events
            .iter()
            .map(|e| (e.index, e.direction.as_str(), e.new_size))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "up", Some(5.0)),
                (5, "down", Some(3.0)),
                (6, "up", Some(4.0))
            ]
        );
        assert_eq!(
            t[0].events[0].reason,
            "cpu utilization 90% above target 50%"
        );
        assert_eq!(
            t[0].events[1].reason,
            "cpu utilization 30% below target 50%"
        );
    }

    #[test]
    fn relayed_sizes_and_reasons_come_from_the_last_action_series() {
        let hpa = [("namespace", "echo"), ("horizontalpodautoscaler", "web")];
        let up = "cpu resource utilization (percentage of request) above target";
        let down = "All metrics below target";
        let answers = HpaAnswers {
            // desired says nothing useful here: the relayed series decide
            desired: vec![series(&hpa, &[Some(2.0); 6])],
            events: vec![
                series(
                    &[hpa[0], hpa[1], ("direction", "up")],
                    &[None, Some(1.0), Some(1.0), Some(2.0), Some(2.0), Some(2.0)],
                ),
                series(
                    &[hpa[0], hpa[1], ("direction", "down")],
                    &[None, None, None, None, Some(1.0), Some(1.0)],
                ),
            ],
            last_action: vec![
                series(
                    &[hpa[0], hpa[1], ("direction", "up"), ("reason", up)],
                    &[None, Some(5.0), Some(5.0), Some(7.0), Some(7.0), Some(7.0)],
                ),
                // the down series of an older reason, gone; the current one born at 4
                series(
                    &[hpa[0], hpa[1], ("direction", "down"), ("reason", "older")],
                    &[Some(1.0), Some(1.0), None, None, None, None],
                ),
                series(
                    &[hpa[0], hpa[1], ("direction", "down"), ("reason", down)],
                    &[None, None, None, None, Some(3.0), Some(3.0)],
                ),
            ],
            ..HpaAnswers::default()
        };
        let t = timelines(&window(6), &answers, 1);
        let got: Vec<_> = t[0]
            .events
            .iter()
            .map(|e| (e.index, e.new_size, e.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(1, Some(5.0), up), (3, Some(7.0), up), (4, Some(3.0), down)]
        );
    }
}
