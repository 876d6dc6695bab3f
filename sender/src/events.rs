//! The scaling ledger: HPA scaling actions counted exactly once, from `SuccessfulRescale`
//! Events.
//!
//! The HPA controller records each scaling action as an Event with reason
//! `SuccessfulRescale` and a message `New size: N; reason: ...`. The event recorder
//! aggregates repeats: one Event object (one uid) stands for `count` occurrences
//! (`series.count` for events.k8s.io-style events), and its count grows as repeats happen.
//! So each occurrence is counted once by keeping, per event uid, the count already added:
//! - a new uid adds its whole count;
//! - an update adds the increase of its count (never a decrease);
//! - a relist or a `410 Gone` re-delivering known events adds nothing;
//! - an event's deletion (the API server's TTL, about an hour) changes no counter.
//!
//! Direction comes from the message: `... above target` or `below Spec.MinReplicas` is
//! `up`; `... below target` (including `All metrics below target`) or
//! `above Spec.MaxReplicas` is `down`; otherwise the new size is compared with the HPA's
//! previous size from its latest event, and `unknown` is used when there is none.
//!
//! Across a sender restart: with a state directory the ledger (totals and the counts of the
//! events still known) is saved atomically and reloaded, so counting continues exactly. The
//! sender encodes it under its lock ([`ScalingLedger::unsaved`], memory only) and writes it
//! off the runtime ([`crate::state_file::StateWriter`]), then marks that version saved
//! ([`ScalingLedger::saved`]); changes made meanwhile keep it unsaved. Without one, the sender starts from zero and recounts the
//! events the API server still holds: actions older than the event TTL (one hour by default)
//! are not counted again, and Prometheus sees a counter reset.
//!
//! The latest action per direction also relays its new size and the reason the HPA
//! controller gave (`kube_horizontalpodautoscaler_last_scaling_event_replicas{reason}`),
//! what someone looking at a scaling event asks next; the latest by the event's own time,
//! as a relist delivers events in any order.
//!
//! A HPA's counters live as long as the HPA: they start at zero for both directions when it
//! is first seen ([`ScalingLedger::track_hpa`]), so Prometheus' `increase()` sees the first
//! scaling action, and go with it ([`ScalingLedger::forget_hpa`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use k8s_openapi::api::core::v1::Event;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::family::Family;
use crate::series::{ObjectKey, ObjectKind, SeriesSet};
use crate::state_file::write_atomically;

/// The Event reason of a scaling action.
pub const RESCALE_REASON: &str = "SuccessfulRescale";

/// Which way an HPA scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// More replicas.
    Up,
    /// Fewer replicas.
    Down,
    /// The message did not say and no previous size was known.
    Unknown,
}

impl Direction {
    /// The `direction` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Unknown => "unknown",
        }
    }
}

/// Counters of one HPA.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct HpaTotals {
    up: u64,
    down: u64,
    #[serde(default)]
    unknown: u64,
    last_up: Option<f64>,
    last_down: Option<f64>,
    #[serde(default)]
    last_unknown: Option<f64>,
    /// New size of the latest event, for messages that do not say the direction.
    last_size: Option<i64>,
    /// The latest action per direction: its new size and reason.
    #[serde(default)]
    latest_up: Option<Action>,
    #[serde(default)]
    latest_down: Option<Action>,
    #[serde(default)]
    latest_unknown: Option<Action>,
}

/// What the latest scaling action in one direction did and why, from its event's message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Action {
    /// The `N` of `New size: N`.
    size: i64,
    /// The text after `reason:`, at most [`MAX_REASON_BYTES`].
    reason: String,
}

/// Longest reason relayed as a label value: the HPA controller's reasons name a metric
/// and fit easily; a longer one is cut (at a character boundary).
pub const MAX_REASON_BYTES: usize = 256;

/// What the ledger remembers of one live event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SeenEvent {
    namespace: String,
    hpa: String,
    count: u64,
    direction: Direction,
}

/// The ledger's persisted form.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LedgerFile {
    version: u32,
    hpas: Vec<HpaRecord>,
    events: Vec<EventRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct HpaRecord {
    namespace: String,
    hpa: String,
    #[serde(flatten)]
    totals: HpaTotals,
}

#[derive(Debug, Serialize, Deserialize)]
struct EventRecord {
    uid: String,
    #[serde(flatten)]
    seen: SeenEvent,
}

/// Scaling actions per HPA, each event occurrence counted once. See the [module docs](self).
#[derive(Debug, Default)]
pub struct ScalingLedger {
    events: HashMap<String, SeenEvent>,
    totals: BTreeMap<(String, String), HpaTotals>,
    /// Bumped by every change.
    version: u64,
    /// The version last saved (or loaded).
    saved: u64,
}

/// The ledger encoded for its file, and the version it holds.
#[derive(Debug)]
pub struct UnsavedLedger {
    /// Pass to [`ScalingLedger::saved`] once `bytes` are durable.
    pub version: u64,
    /// The file's content.
    pub bytes: Vec<u8>,
}

/// The HPA an event is about, as (namespace, name), when it is a scaling action.
pub fn rescale_target(event: &Event) -> Option<(&str, &str)> {
    if event.reason.as_deref() != Some(RESCALE_REASON) {
        return None;
    }
    let obj = &event.involved_object;
    if obj.kind.as_deref() != Some("HorizontalPodAutoscaler") {
        return None;
    }
    let name = obj.name.as_deref()?;
    let namespace = obj
        .namespace
        .as_deref()
        .or(event.metadata.namespace.as_deref())
        .unwrap_or_default();
    Some((namespace, name))
}

/// How many occurrences an event stands for: `series.count`, else `count`, at least 1.
fn occurrences(event: &Event) -> u64 {
    let series = event.series.as_ref().and_then(|s| s.count);
    let count = series.or(event.count).unwrap_or(1);
    u64::try_from(count).unwrap_or(0).max(1)
}

/// The latest time the event says it happened, in Unix seconds.
fn event_time(event: &Event) -> Option<f64> {
    let micros = |t: &k8s_openapi::jiff::Timestamp| t.as_microsecond() as f64 / 1e6;
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| micros(&t.0))
        .or_else(|| event.last_timestamp.as_ref().map(|t| micros(&t.0)))
        .or_else(|| event.event_time.as_ref().map(|t| micros(&t.0)))
        .or_else(|| event.first_timestamp.as_ref().map(|t| micros(&t.0)))
        .or_else(|| {
            event
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| micros(&t.0))
        })
}

/// The `N` of `New size: N; reason: ...`.
pub fn new_size(message: &str) -> Option<i64> {
    let rest = message.split("New size:").nth(1)?;
    rest.split(';').next()?.trim().parse().ok()
}

/// The text after `reason:` in a rescale message (empty when there is none), cut to
/// [`MAX_REASON_BYTES`].
pub fn stated_reason(message: &str) -> &str {
    let reason = message.split_once("reason:").map_or("", |(_, r)| r).trim();
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// The direction a rescale message states, if it states one.
pub fn stated_direction(message: &str) -> Option<Direction> {
    let reason = message
        .split_once("reason:")
        .map_or(message, |(_, r)| r)
        .trim();
    if reason.contains("above Spec.MaxReplicas") {
        Some(Direction::Down)
    } else if reason.contains("below Spec.MinReplicas") {
        Some(Direction::Up)
    } else if reason.ends_with("below target") {
        Some(Direction::Down)
    } else if reason.ends_with("above target") {
        Some(Direction::Up)
    } else {
        None
    }
}

impl ScalingLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        ScalingLedger::default()
    }

    /// Counts an applied (added or modified) event. Returns the HPA whose counters changed,
    /// or `None` when the event is not a scaling action or adds nothing new.
    pub fn observe(&mut self, event: &Event) -> Option<(String, String)> {
        let (namespace, hpa) = rescale_target(event)?;
        let uid = event.metadata.uid.as_deref()?;
        let occurrences = occurrences(event);
        let added = match self.events.get_mut(uid) {
            Some(seen) if occurrences > seen.count => {
                let added = occurrences - seen.count;
                seen.count = occurrences;
                (added, seen.direction)
            }
            Some(_) => return None,
            None => {
                let message = event.message.as_deref().unwrap_or_default();
                let size = new_size(message);
                let totals = self
                    .totals
                    .entry((namespace.to_owned(), hpa.to_owned()))
                    .or_default();
                let compared = match (size, totals.last_size) {
                    (Some(new), Some(old)) if new > old => Direction::Up,
                    (Some(new), Some(old)) if new < old => Direction::Down,
                    _ => Direction::Unknown,
                };
                let direction = stated_direction(message).unwrap_or(compared);
                if size.is_some() {
                    totals.last_size = size;
                }
                self.events.insert(
                    uid.to_owned(),
                    SeenEvent {
                        namespace: namespace.to_owned(),
                        hpa: hpa.to_owned(),
                        count: occurrences,
                        direction,
                    },
                );
                (occurrences, direction)
            }
        };
        let (n, direction) = added;
        let totals = self
            .totals
            .entry((namespace.to_owned(), hpa.to_owned()))
            .or_default();
        let at = event_time(event);
        let (counter, last, latest) = match direction {
            Direction::Up => (&mut totals.up, &mut totals.last_up, &mut totals.latest_up),
            Direction::Down => (
                &mut totals.down,
                &mut totals.last_down,
                &mut totals.latest_down,
            ),
            Direction::Unknown => (
                &mut totals.unknown,
                &mut totals.last_unknown,
                &mut totals.latest_unknown,
            ),
        };
        *counter += n;
        // A relist delivers events in any order: an older event does not replace the
        // latest action.
        let newest = match (at, *last) {
            (Some(at), Some(last)) => at >= last,
            _ => true,
        };
        let message = event.message.as_deref().unwrap_or_default();
        if newest && let Some(size) = new_size(message) {
            *latest = Some(Action {
                size,
                reason: stated_reason(message).to_owned(),
            });
        }
        if let Some(at) = at {
            *last = Some(last.map_or(at, |l: f64| l.max(at)));
        }
        self.version += 1;
        Some((namespace.to_owned(), hpa.to_owned()))
    }

    /// An event was deleted (TTL expiry): forget its uid; no counter changes.
    pub fn forget_event(&mut self, uid: &str) {
        if self.events.remove(uid).is_some() {
            self.version += 1;
        }
    }

    /// After a relist: forget events for which `keep(uid, namespace)` is false (deleted while
    /// the watch was down).
    pub fn retain_events(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let before = self.events.len();
        self.events.retain(|uid, seen| keep(uid, &seen.namespace));
        if self.events.len() != before {
            self.version += 1;
        }
    }

    /// An HPA exists: start its counters at zero if it has none, so `up` and `down` are
    /// exported from the moment the HPA is seen and Prometheus' `increase()` sees its first
    /// scaling action (a counter born at 1 would hide it). Returns true when it had none.
    pub fn track_hpa(&mut self, namespace: &str, hpa: &str) -> bool {
        let key = (namespace.to_owned(), hpa.to_owned());
        if self.totals.contains_key(&key) {
            return false;
        }
        self.totals.insert(key, HpaTotals::default());
        self.version += 1;
        true
    }

    /// An HPA was deleted: its counters go with it.
    pub fn forget_hpa(&mut self, namespace: &str, hpa: &str) -> bool {
        let gone = self
            .totals
            .remove(&(namespace.to_owned(), hpa.to_owned()))
            .is_some();
        if gone {
            self.version += 1;
        }
        gone
    }

    /// Keeps only the counters of HPAs for which `exists(namespace, name)` holds (after the
    /// HPA watcher's first list, drops HPAs deleted while the sender was down).
    pub fn retain_hpas(
        &mut self,
        mut exists: impl FnMut(&str, &str) -> bool,
    ) -> Vec<(String, String)> {
        let gone: Vec<(String, String)> = self
            .totals
            .keys()
            .filter(|(ns, name)| !exists(ns, name))
            .cloned()
            .collect();
        for key in &gone {
            self.totals.remove(key);
        }
        if !gone.is_empty() {
            self.version += 1;
        }
        gone
    }

    /// HPAs with counters.
    pub fn hpas(&self) -> impl Iterator<Item = (&str, &str)> {
        self.totals.keys().map(|(ns, n)| (ns.as_str(), n.as_str()))
    }

    /// The total for one HPA and direction (0 when unknown).
    pub fn total(&self, namespace: &str, hpa: &str, direction: Direction) -> u64 {
        self.totals
            .get(&(namespace.to_owned(), hpa.to_owned()))
            .map_or(0, |t| match direction {
                Direction::Up => t.up,
                Direction::Down => t.down,
                Direction::Unknown => t.unknown,
            })
    }

    /// The store key and series of one HPA's counters (an empty set when it has none):
    /// `up` and `down` always, `unknown` once non-zero, and the time, new size and reason
    /// of the latest action per direction once known.
    pub fn series(&self, namespace: &str, hpa: &str) -> (ObjectKey, SeriesSet<'static>) {
        let key = ObjectKey::new(ObjectKind::ScalingEvents, namespace, hpa);
        let mut set = SeriesSet::new();
        if let Some(t) = self.totals.get(&(namespace.to_owned(), hpa.to_owned())) {
            for (direction, total, last, latest) in [
                (Direction::Up, t.up, t.last_up, &t.latest_up),
                (Direction::Down, t.down, t.last_down, &t.latest_down),
                (
                    Direction::Unknown,
                    t.unknown,
                    t.last_unknown,
                    &t.latest_unknown,
                ),
            ] {
                let labels = [
                    namespace.to_owned(),
                    hpa.to_owned(),
                    direction.as_str().to_owned(),
                ];
                if direction != Direction::Unknown || total > 0 {
                    set.push(Family::HpaScalingEvents, labels.clone(), total as f64);
                }
                if let Some(action) = latest {
                    let [namespace, hpa, direction] = labels.clone();
                    set.push(
                        Family::HpaLastScalingEventReplicas,
                        [namespace, hpa, direction, action.reason.clone()],
                        action.size as f64,
                    );
                }
                if let Some(last) = last {
                    set.push(Family::HpaLastScalingEventTimestamp, labels, last);
                }
            }
        }
        (key, set)
    }

    /// True when the ledger changed since it was last saved (or loaded).
    pub fn is_dirty(&self) -> bool {
        self.version != self.saved
    }

    /// Marks the current version saved (for callers that keep no state directory).
    pub fn mark_saved(&mut self) {
        self.saved = self.version;
    }

    /// The ledger encoded for its file when it changed since it was last saved, else `None`.
    /// Memory only: call it under the ledger's lock, write the bytes without it.
    ///
    /// # Errors
    /// [`Error::State`] naming `path` if the ledger cannot be encoded.
    pub fn unsaved(&self, path: &Path) -> Result<Option<UnsavedLedger>, Error> {
        if !self.is_dirty() {
            return Ok(None);
        }
        Ok(Some(UnsavedLedger {
            version: self.version,
            bytes: self.encode(path)?,
        }))
    }

    fn encode(&self, path: &Path) -> Result<Vec<u8>, Error> {
        let file = LedgerFile {
            version: 1,
            hpas: self
                .totals
                .iter()
                .map(|((namespace, hpa), totals)| HpaRecord {
                    namespace: namespace.clone(),
                    hpa: hpa.clone(),
                    totals: totals.clone(),
                })
                .collect(),
            events: self
                .events
                .iter()
                .map(|(uid, seen)| EventRecord {
                    uid: uid.clone(),
                    seen: seen.clone(),
                })
                .collect(),
        };
        serde_json::to_vec(&file).map_err(|e| Error::state(path, e))
    }

    /// `version` (from [`ScalingLedger::unsaved`]) is durable: unless the ledger changed
    /// since, it is no longer dirty.
    pub fn saved(&mut self, version: u64) {
        self.saved = self.saved.max(version);
    }

    /// Writes the ledger to `path` atomically, blocking the caller's thread
    /// ([`write_atomically`]). For tests and tools: the sender saves through a
    /// [`crate::state_file::StateWriter`].
    ///
    /// # Errors
    /// [`Error::State`] when the file cannot be written.
    pub fn save(&mut self, path: &Path) -> Result<(), Error> {
        write_atomically(path, &self.encode(path)?)?;
        self.mark_saved();
        Ok(())
    }

    /// Reads a ledger saved by [`ScalingLedger::save`]; a missing file is an empty ledger.
    ///
    /// # Errors
    /// [`Error::State`] when the file exists but cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::new()),
            Err(e) => return Err(Error::state(path, e)),
        };
        let file: LedgerFile = serde_json::from_slice(&bytes).map_err(|e| Error::state(path, e))?;
        Ok(ScalingLedger {
            events: file.events.into_iter().map(|r| (r.uid, r.seen)).collect(),
            totals: file
                .hpas
                .into_iter()
                .map(|r| ((r.namespace, r.hpa), r.totals))
                .collect(),
            version: 0,
            saved: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{rescale_event, with_series_count};

    const UP: &str =
        "New size: 4; reason: cpu resource utilization (percentage of request) above target";
    const DOWN: &str = "New size: 1; reason: All metrics below target";

    #[test]
    fn a_new_event_adds_its_count_once() {
        let mut ledger = ScalingLedger::new();
        let e = rescale_event("e1", "web", UP, 1, 1_000);
        assert_eq!(
            ledger.observe(&e),
            Some(("default".to_owned(), "web".to_owned()))
        );
        assert_eq!(ledger.observe(&e), None, "a re-delivery adds nothing");
        assert_eq!(ledger.total("default", "web", Direction::Up), 1);
        assert_eq!(ledger.total("default", "web", Direction::Down), 0);
    }

    #[test]
    fn a_growing_count_adds_only_the_increase() {
        let mut ledger = ScalingLedger::new();
        ledger.observe(&rescale_event("e1", "web", DOWN, 2, 1_000));
        ledger.observe(&rescale_event("e1", "web", DOWN, 5, 1_060));
        ledger.observe(&rescale_event("e1", "web", DOWN, 3, 1_070)); // stale copy
        assert_eq!(ledger.total("default", "web", Direction::Down), 5);
        let (_, set) = ledger.series("default", "web");
        assert_eq!(
            set.render(),
            [
                r#"kube_horizontalpodautoscaler_last_scaling_event_replicas{namespace="default",horizontalpodautoscaler="web",direction="down",reason="All metrics below target"} 1"#,
                r#"kube_horizontalpodautoscaler_last_scaling_event_timestamp_seconds{namespace="default",horizontalpodautoscaler="web",direction="down"} 1060"#,
                r#"kube_horizontalpodautoscaler_scaling_events_total{namespace="default",horizontalpodautoscaler="web",direction="down"} 5"#,
                r#"kube_horizontalpodautoscaler_scaling_events_total{namespace="default",horizontalpodautoscaler="web",direction="up"} 0"#,
            ]
        );
    }

    #[test]
    fn series_count_is_used_for_events_k8s_io_style_events() {
        let mut ledger = ScalingLedger::new();
        ledger.observe(&with_series_count(
            rescale_event("e1", "web", UP, 1, 1_000),
            3,
        ));
        assert_eq!(ledger.total("default", "web", Direction::Up), 3);
    }

    #[test]
    fn deletion_and_relist_change_no_counter() {
        let mut ledger = ScalingLedger::new();
        ledger.observe(&rescale_event("e1", "web", UP, 1, 1_000));
        ledger.observe(&rescale_event("e2", "web", DOWN, 1, 1_100));
        // A 410 relist re-delivers e2 only: e1 expired meanwhile.
        ledger.retain_events(|uid, _| uid == "e2");
        ledger.observe(&rescale_event("e2", "web", DOWN, 1, 1_100));
        ledger.forget_event("e2");
        assert_eq!(ledger.total("default", "web", Direction::Up), 1);
        assert_eq!(ledger.total("default", "web", Direction::Down), 1);
    }

    #[test]
    fn directions_follow_the_hpa_controller_messages() {
        let cases = [
            (UP, Some(Direction::Up)),
            (DOWN, Some(Direction::Down)),
            (
                "New size: 3; reason: pods metric requests_per_second below target",
                Some(Direction::Down),
            ),
            (
                "New size: 2; reason: external metric queue_depth(nil) above target",
                Some(Direction::Up),
            ),
            (
                "New size: 10; reason: Current number of replicas above Spec.MaxReplicas",
                Some(Direction::Down),
            ),
            (
                "New size: 2; reason: Current number of replicas below Spec.MinReplicas",
                Some(Direction::Up),
            ),
            ("New size: 2; reason: something new", None),
        ];
        for (message, expected) in cases {
            assert_eq!(stated_direction(message), expected, "{message}");
        }
        assert_eq!(new_size(UP), Some(4));
        assert_eq!(new_size("garbage"), None);
    }

    #[test]
    fn the_latest_action_per_direction_keeps_its_new_size_and_reason() {
        let mut ledger = ScalingLedger::new();
        ledger.observe(&rescale_event("e2", "web", UP, 1, 1_200));
        // Listed after e2 but older: it does not replace e2's size and reason.
        ledger.observe(&rescale_event(
            "e1",
            "web",
            "New size: 2; reason: memory resource utilization (percentage of request) above target",
            1,
            1_000,
        ));
        ledger.observe(&rescale_event("e3", "web", DOWN, 1, 1_300));
        ledger.observe(&rescale_event("e4", "web", "New size: x", 1, 1_400));
        let (_, set) = ledger.series("default", "web");
        let replicas: Vec<String> = set
            .render()
            .into_iter()
            .filter(|l| l.contains("_replicas{"))
            .collect();
        assert_eq!(
            replicas,
            [
                r#"kube_horizontalpodautoscaler_last_scaling_event_replicas{namespace="default",horizontalpodautoscaler="web",direction="down",reason="All metrics below target"} 1"#,
                r#"kube_horizontalpodautoscaler_last_scaling_event_replicas{namespace="default",horizontalpodautoscaler="web",direction="up",reason="cpu resource utilization (percentage of request) above target"} 4"#,
            ],
            "an event without a readable size relays no size"
        );
        let long = format!("New size: 3; reason: {}", "é".repeat(MAX_REASON_BYTES));
        assert_eq!(stated_reason(&long).len(), MAX_REASON_BYTES);
        assert_eq!(stated_reason("New size: 3"), "");
    }

    #[test]
    fn an_unstated_direction_compares_with_the_previous_size() {
        let mut ledger = ScalingLedger::new();
        ledger.observe(&rescale_event(
            "e0",
            "web",
            "New size: 2; reason: mystery",
            1,
            900,
        ));
        ledger.observe(&rescale_event("e1", "web", UP, 1, 1_000)); // size 4
        ledger.observe(&rescale_event(
            "e2",
            "web",
            "New size: 6; reason: mystery",
            1,
            1_100,
        ));
        ledger.observe(&rescale_event(
            "e3",
            "web",
            "New size: 3; reason: mystery",
            1,
            1_200,
        ));
        assert_eq!(ledger.total("default", "web", Direction::Unknown), 1);
        assert_eq!(ledger.total("default", "web", Direction::Up), 2);
        assert_eq!(ledger.total("default", "web", Direction::Down), 1);
    }

    #[test]
    fn other_events_are_ignored() {
        let mut ledger = ScalingLedger::new();
        let mut e = rescale_event("e1", "web", UP, 1, 1_000);
        e.reason = Some("FailedGetResourceMetric".to_owned());
        assert_eq!(ledger.observe(&e), None);
        let mut e = rescale_event("e2", "web", UP, 1, 1_000);
        e.involved_object.kind = Some("Deployment".to_owned());
        assert_eq!(ledger.observe(&e), None);
        let mut e = rescale_event("e3", "web", UP, 1, 1_000);
        e.metadata.uid = None;
        assert_eq!(ledger.observe(&e), None);
        assert_eq!(ledger.hpas().count(), 0);
    }

    #[test]
    fn a_saved_ledger_continues_exactly_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.json");
        let mut ledger = ScalingLedger::new();
        ledger.observe(&rescale_event("e1", "web", UP, 2, 1_000));
        assert!(ledger.is_dirty());
        ledger.save(&path).expect("save");
        assert!(!ledger.is_dirty());

        let mut restarted = ScalingLedger::load(&path).expect("load");
        // The API re-delivers e1 (one more occurrence since) and a new e2.
        restarted.observe(&rescale_event("e1", "web", UP, 3, 1_050));
        restarted.observe(&rescale_event("e2", "web", DOWN, 1, 1_100));
        assert_eq!(restarted.total("default", "web", Direction::Up), 3);
        assert_eq!(restarted.total("default", "web", Direction::Down), 1);
        let kept = restarted.series("default", "web").1.render();
        assert!(
            kept.iter()
                .any(|l| l.contains(r#"direction="up",reason="cpu"#)),
            "the latest action survives the restart: {kept:?}"
        );
        assert!(ScalingLedger::load(&dir.path().join("missing.json")).is_ok());
        std::fs::write(&path, b"{not json").expect("write");
        assert!(ScalingLedger::load(&path).is_err());
    }

    #[test]
    fn a_seen_hpa_starts_at_zero_both_ways_and_keeps_exact_counts() {
        let mut ledger = ScalingLedger::new();
        assert!(ledger.track_hpa("default", "web"));
        assert!(!ledger.track_hpa("default", "web"), "once");
        let (_, set) = ledger.series("default", "web");
        assert_eq!(
            set.render(),
            [
                r#"kube_horizontalpodautoscaler_scaling_events_total{namespace="default",horizontalpodautoscaler="web",direction="down"} 0"#,
                r#"kube_horizontalpodautoscaler_scaling_events_total{namespace="default",horizontalpodautoscaler="web",direction="up"} 0"#,
            ]
        );
        ledger.observe(&rescale_event("e1", "web", UP, 2, 1_000));
        assert!(
            !ledger.track_hpa("default", "web"),
            "an update keeps the counts"
        );
        assert_eq!(ledger.total("default", "web", Direction::Up), 2);
        assert!(ledger.forget_hpa("default", "web"));
        assert!(ledger.series("default", "web").1.is_empty());
        assert!(
            ledger.track_hpa("default", "web"),
            "a new HPA of that name starts at 0"
        );
        assert_eq!(ledger.total("default", "web", Direction::Up), 0);
    }

    #[test]
    fn counters_go_with_their_hpa() {
        let mut ledger = ScalingLedger::new();
        ledger.observe(&rescale_event("e1", "web", UP, 1, 1_000));
        ledger.observe(&rescale_event("e2", "api", UP, 1, 1_000));
        assert_eq!(
            ledger.retain_hpas(|_, name| name == "api"),
            [("default".to_owned(), "web".to_owned())]
        );
        assert!(ledger.forget_hpa("default", "api"));
        assert!(ledger.series("default", "api").1.is_empty());
        // Their events are still known: re-delivery does not resurrect old counts.
        ledger.observe(&rescale_event("e1", "web", UP, 1, 1_000));
        assert_eq!(ledger.total("default", "web", Direction::Up), 0);
    }
}
