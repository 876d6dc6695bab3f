//! One cluster's metric data: families, series and their values, and the copy a scrape
//! encodes.
//!
//! Series are pre-rendered when they are defined: each keeps its exposition prefix
//! (`name{cluster="c",label="v"}`), so a scrape only appends values. Updates find their
//! series through [`IdIndex`]. Series and values live in copy-on-write [`Chunks`], so
//! [`ClusterData::view`] is a consistent copy taken in microseconds (see `chunks`);
//! values are kept apart from series because they change far more often.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use kube_relay_proto::{Batch, FamilyDef, FamilyId, MetricKind, SeriesDef, SeriesId};

use super::chunks::Chunks;
use super::ids::{IdHasher, IdIndex};
use super::scaling::{SCALING_EVENTS_FAMILY, ScalingEvent, record_increase};
use crate::exposition;

/// Most metric families one cluster may define (the catalogue has a few dozen).
pub const MAX_FAMILIES_PER_CLUSTER: usize = 10_000;

/// Family names the receiver uses for its own metrics; senders may not define them.
const RESERVED_PREFIXES: [&str; 2] = ["relay_receiver_", "relay_cluster_up"];

/// A batch broke a protocol rule; the text says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation(pub(crate) String);

/// Live metric data of one cluster.
#[derive(Debug, Default)]
pub(crate) struct ClusterData {
    families: HashMap<FamilyId, Family>,
    series: Chunks<Series>,
    values: Chunks<Sample>,
    free: Vec<u32>,
    ids: IdIndex,
    dropped: HashSet<SeriesId, BuildHasherDefault<IdHasher>>,
    live: usize,
}

/// A metric family as defined by the sender.
#[derive(Debug)]
struct Family {
    name: Arc<str>,
    help: Arc<str>,
    kind: MetricKind,
    /// Slots of this family's series, in definition order (swap-removed).
    members: Chunks<u32>,
    tracks_scaling: bool,
}

/// One series slot: its pre-rendered exposition prefix, `None` while the slot is free.
#[derive(Debug, Clone)]
struct Series {
    family: FamilyId,
    pos: u32,
    /// `name{cluster="c",...}`, with `_total` for counters.
    prefix: Option<Arc<str>>,
    /// Labels kept only for series whose increases become scaling events.
    tracked: Option<Arc<[(String, String)]>>,
}

/// One series' value; a series defined but not yet updated is not exposed. `tracked` is a
/// copy of "[`Series::tracked`] is set", so an update reads only this (one cache line).
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    value: f64,
    has_value: bool,
    tracked: bool,
}

/// A consistent copy of one cluster's exposed data, encoded by a scrape without any lock.
#[derive(Debug)]
pub(crate) struct DataView {
    pub(crate) families: Vec<FamilyView>,
    series: Chunks<Series>,
    values: Chunks<Sample>,
}

/// A family in a [`DataView`].
#[derive(Debug)]
pub(crate) struct FamilyView {
    pub(crate) name: Arc<str>,
    pub(crate) help: Arc<str>,
    pub(crate) kind: MetricKind,
    members: Chunks<u32>,
}

impl DataView {
    /// The family's series with a value: prefix and value, in definition order.
    pub(crate) fn samples<'a>(
        &'a self,
        family: &'a FamilyView,
    ) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        family.members.iter().filter_map(|&slot| {
            let sample = self.values.get(slot as usize)?;
            let prefix = self.series.get(slot as usize)?.prefix.as_deref()?;
            sample.has_value.then_some((prefix, sample.value))
        })
    }
}

impl ClusterData {
    /// Series currently held.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// A copy of the families with series, for a scrape (one `Arc` clone per 1024 series).
    pub(crate) fn view(&self) -> DataView {
        DataView {
            families: self
                .families
                .values()
                .filter(|f| f.members.len() > 0)
                .map(|f| FamilyView {
                    name: f.name.clone(),
                    help: f.help.clone(),
                    kind: f.kind,
                    members: f.members.clone(),
                })
                .collect(),
            series: self.series.clone(),
            values: self.values.clone(),
        }
    }

    /// Applies families, series, updates, removals; returns how many series definitions
    /// the cap dropped. Increases of tracked counters go to `events` (`None` while staging
    /// a snapshot).
    pub(crate) fn apply(
        &mut self,
        cluster: &str,
        batch: &Batch,
        max_series: usize,
        mut events: Option<&mut Vec<ScalingEvent>>,
    ) -> Result<u64, Violation> {
        for def in &batch.families {
            self.define_family(def)?;
        }
        let mut dropped = 0;
        for def in &batch.series {
            if !self.define_series(cluster, def, max_series)? {
                dropped += 1;
            }
        }
        for &(id, value) in batch.updates.iter() {
            let value = value.as_f64();
            match self.ids.get(id) {
                Some(slot) => {
                    let Some(sample) = self.values.get_mut(slot as usize) else {
                        continue;
                    };
                    let before = sample.has_value.then_some(sample.value);
                    sample.value = value;
                    sample.has_value = true;
                    if sample.tracked
                        && let Some(events) = events.as_deref_mut()
                        && let Some(labels) = self
                            .series
                            .get(slot as usize)
                            .and_then(|s| s.tracked.as_deref())
                    {
                        record_increase(events, cluster, labels, before, value);
                    }
                }
                None if self.dropped.contains(&id) => {}
                None => {
                    return Err(violation(format!("update for unknown series id {id}")));
                }
            }
        }
        for &id in &batch.removals {
            if !self.remove_series(id) && !self.dropped.remove(&id) {
                return Err(violation(format!("removal of unknown series id {id}")));
            }
        }
        Ok(dropped)
    }

    fn define_family(&mut self, def: &FamilyDef) -> Result<(), Violation> {
        def.validate().map_err(|e| violation(e.to_string()))?;
        if RESERVED_PREFIXES.iter().any(|p| def.name.starts_with(p)) {
            return Err(violation(format!(
                "family name {:?} is reserved for the receiver's own metrics",
                def.name
            )));
        }
        if let Some((other, _)) = self
            .families
            .iter()
            .find(|(id, f)| **id != def.id && *f.name == *def.name)
        {
            return Err(violation(format!(
                "family {:?} defined twice (ids {other} and {})",
                def.name, def.id
            )));
        }
        let full = self.families.len() >= MAX_FAMILIES_PER_CLUSTER;
        match self.families.entry(def.id) {
            Entry::Vacant(_) if full => {
                return Err(violation(format!(
                    "more than {MAX_FAMILIES_PER_CLUSTER} families defined"
                )));
            }
            Entry::Occupied(mut o) => {
                let f = o.get_mut();
                if *f.name != *def.name || f.kind != def.kind {
                    return Err(violation(format!(
                        "family id {} redefined from {:?} to {:?}",
                        def.id, f.name, def.name
                    )));
                }
                if *f.help != *def.help {
                    f.help = def.help.as_str().into();
                }
            }
            Entry::Vacant(v) => {
                v.insert(Family {
                    name: def.name.as_str().into(),
                    help: def.help.as_str().into(),
                    kind: def.kind,
                    members: Chunks::default(),
                    tracks_scaling: def.kind == MetricKind::Counter
                        && def.name == SCALING_EVENTS_FAMILY,
                });
            }
        }
        Ok(())
    }

    /// Defines (or redefines) a series; false when the cap dropped it.
    fn define_series(
        &mut self,
        cluster: &str,
        def: &SeriesDef,
        max_series: usize,
    ) -> Result<bool, Violation> {
        def.validate().map_err(|e| violation(e.to_string()))?;
        let Some(family) = self.families.get(&def.family) else {
            return Err(violation(format!(
                "series {} names unknown family id {}",
                def.id, def.family
            )));
        };
        let mut prefix = String::with_capacity(64);
        exposition::render_prefix(&mut prefix, &family.name, family.kind, cluster, &def.labels);
        let tracked = family.tracks_scaling.then(|| def.labels.as_slice().into());
        self.remove_series(def.id);
        self.dropped.remove(&def.id);
        if self.live >= max_series {
            self.dropped.insert(def.id);
            return Ok(false);
        }
        let family = self
            .families
            .get_mut(&def.family)
            .ok_or_else(|| violation(format!("unknown family id {}", def.family)))?;
        let sample = Sample {
            tracked: tracked.is_some(),
            ..Sample::default()
        };
        let series = Series {
            family: def.family,
            pos: family.members.len() as u32,
            prefix: Some(prefix.into()),
            tracked,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(s) = self.series.get_mut(slot as usize) {
                    *s = series;
                }
                if let Some(v) = self.values.get_mut(slot as usize) {
                    *v = sample;
                }
                slot
            }
            None => {
                self.series.push(series);
                self.values.push(sample);
                (self.series.len() - 1) as u32
            }
        };
        family.members.push(slot);
        self.ids.insert(def.id, slot);
        self.live += 1;
        Ok(true)
    }

    /// Records scaling events for tracked counters that grew between `old` (the state a
    /// snapshot replaced) and this data, matching series by their labels.
    pub(crate) fn record_increases_since(
        &self,
        old: &ClusterData,
        cluster: &str,
        events: &mut Vec<ScalingEvent>,
    ) {
        let before: HashMap<&str, f64> = old
            .tracked_series()
            .map(|(s, v)| (s.prefix.as_deref().unwrap_or_default(), v))
            .collect();
        for (series, value) in self.tracked_series() {
            let prefix = series.prefix.as_deref().unwrap_or_default();
            if let (Some(&was), Some(labels)) = (before.get(prefix), &series.tracked) {
                record_increase(events, cluster, labels, Some(was), value);
            }
        }
    }

    /// Valued series of the families whose increases are scaling events.
    fn tracked_series(&self) -> impl Iterator<Item = (&Series, f64)> {
        self.families
            .values()
            .filter(|f| f.tracks_scaling)
            .flat_map(|f| f.members.iter())
            .filter_map(|&slot| {
                let sample = self.values.get(slot as usize)?;
                let series = self.series.get(slot as usize)?;
                sample.has_value.then_some((series, sample.value))
            })
    }

    /// Removes a series; false when the id is unknown.
    fn remove_series(&mut self, id: SeriesId) -> bool {
        let Some(slot) = self.ids.remove(id) else {
            return false;
        };
        let Some(series) = self.series.get_mut(slot as usize) else {
            return false;
        };
        let (family, pos) = (series.family, series.pos as usize);
        series.prefix = None;
        series.tracked = None;
        if let Some(v) = self.values.get_mut(slot as usize) {
            *v = Sample::default();
        }
        if let Some(f) = self.families.get_mut(&family) {
            f.members.swap_remove(pos);
            if let Some(&moved) = f.members.get(pos)
                && let Some(moved) = self.series.get_mut(moved as usize)
            {
                moved.pos = pos as u32;
            }
        }
        self.free.push(slot);
        self.live -= 1;
        true
    }
}

fn violation(msg: String) -> Violation {
    Violation(msg)
}

#[cfg(test)]
pub(crate) mod tests {
    use kube_relay_proto::{SnapshotPart, Updates, Value};

    use super::*;

    pub(crate) fn family(id: FamilyId, name: &str, kind: MetricKind) -> FamilyDef {
        FamilyDef {
            id,
            name: name.into(),
            help: format!("{name} help"),
            kind,
        }
    }

    pub(crate) fn series(id: SeriesId, family: FamilyId, labels: &[(&str, &str)]) -> SeriesDef {
        SeriesDef {
            id,
            family,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    pub(crate) fn updates(pairs: &[(SeriesId, f64)]) -> Updates {
        Updates::from_unsorted(pairs.iter().map(|&(id, v)| (id, Value::from(v))).collect())
    }

    /// A one-part snapshot of `n` `kube_pod_info` series, each valued 1.
    pub(crate) fn snapshot(seq: u64, n: u32) -> Batch {
        Batch {
            observed_at_ms: 0,
            seq,
            snapshot: Some(SnapshotPart {
                first: true,
                last: true,
            }),
            families: vec![family(0, "kube_pod_info", MetricKind::Gauge)],
            series: (0..n)
                .map(|i| series(i, 0, &[("pod", &format!("p{i}"))]))
                .collect(),
            updates: updates(&(0..n).map(|i| (i, 1.0)).collect::<Vec<_>>()),
            removals: vec![],
        }
    }

    #[test]
    fn removal_keeps_the_other_members_reachable() {
        let mut data = ClusterData::default();
        data.apply("c", &snapshot(1, 4), 10, None).expect("apply");
        assert!(data.remove_series(0));
        assert!(data.remove_series(2));
        assert_eq!(data.live, 2);
        let f = &data.families[&0];
        let mut ids: Vec<SeriesId> = f
            .members
            .iter()
            .map(|&slot| {
                (0..4)
                    .find(|&id| data.ids.get(id) == Some(slot))
                    .expect("slot in use")
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 3]);
        for (pos, &slot) in f.members.iter().enumerate() {
            let series = data.series.get(slot as usize).expect("slot");
            assert_eq!(series.pos as usize, pos);
        }
    }

    #[test]
    fn a_view_is_unchanged_by_later_applies() {
        let mut data = ClusterData::default();
        data.apply("c", &snapshot(1, 3), 10, None).expect("apply");
        let view = data.view();
        let delta = Batch {
            seq: 2,
            series: vec![series(7, 0, &[("pod", "new")])],
            updates: updates(&[(1, 5.0), (7, 2.0)]),
            removals: vec![0],
            ..Batch::default()
        };
        data.apply("c", &delta, 10, None).expect("delta");
        let before: Vec<(&str, f64)> = view.samples(&view.families[0]).collect();
        assert_eq!(
            before,
            vec![
                ("kube_pod_info{cluster=\"c\",pod=\"p0\"}", 1.0),
                ("kube_pod_info{cluster=\"c\",pod=\"p1\"}", 1.0),
                ("kube_pod_info{cluster=\"c\",pod=\"p2\"}", 1.0),
            ]
        );
        let now = data.view();
        let mut after: Vec<(&str, f64)> = now.samples(&now.families[0]).collect();
        after.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(
            after,
            vec![
                ("kube_pod_info{cluster=\"c\",pod=\"new\"}", 2.0),
                ("kube_pod_info{cluster=\"c\",pod=\"p1\"}", 5.0),
                ("kube_pod_info{cluster=\"c\",pod=\"p2\"}", 1.0),
            ]
        );
    }

    #[test]
    fn reserved_and_duplicate_family_names_are_violations() {
        let mut data = ClusterData::default();
        let err = data
            .define_family(&family(0, "relay_cluster_up", MetricKind::Gauge))
            .expect_err("reserved");
        assert!(err.0.contains("reserved"), "{err:?}");
        data.define_family(&family(0, "a", MetricKind::Gauge))
            .expect("a");
        assert!(
            data.define_family(&family(1, "a", MetricKind::Gauge))
                .is_err()
        );
        assert!(
            data.define_family(&family(0, "b", MetricKind::Gauge))
                .is_err()
        );
    }
}
