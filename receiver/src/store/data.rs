//! One cluster's metric data: families, series and their values, and the copy a scrape
//! encodes.
//!
//! Lines are pre-rendered when they are defined: a family keeps the head its lines share
//! (`name{cluster="c"`), each series its labels (`,label="v"`), so a scrape only copies
//! them and appends values. A series keeps nothing else it does not need for every update:
//! at a million series held, every byte of a series is a megabyte of the receiver's memory
//! (the fan-in bench). Updates find their
//! series through [`IdIndex`]. Series and values live in copy-on-write [`Chunks`], so
//! [`ClusterData::view`] is a consistent copy taken in microseconds (see `chunks`);
//! values are kept apart from series because they change far more often.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex};

use kube_relay_proto::{Batch, FamilyDef, FamilyId, MetricKind, SeriesDef, SeriesId};

use super::chunks::Chunks;
use super::ids::{IdHasher, IdIndex};
use super::names::FamilyNames;
use super::scaling::{SCALING_EVENTS_FAMILY, ScalingEvent, record_increase};
use crate::exposition;

/// Most metric families one cluster may define (the catalogue has a few dozen).
pub const MAX_FAMILIES_PER_CLUSTER: usize = 10_000;

/// Families of the sender's own metrics: their changes are not changes from the cluster.
pub const SENDER_SELF_PREFIX: &str = "relay_sender_";

/// Family names the receiver uses for its own metrics; senders may not define them.
const RESERVED_PREFIXES: [&str; 3] = ["relay_receiver_", "relay_remote_write_", "relay_cluster_up"];

/// A batch broke a protocol rule; the text says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation(pub(crate) String);

/// A family definition refused because its name clashes with another family's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The refused family's name.
    pub(crate) family: String,
    /// Why, naming the family it clashes with.
    pub(crate) reason: String,
}

/// What applying a batch to the data did besides changing it.
#[derive(Debug, Default)]
pub(crate) struct DataApplied {
    /// Series definitions the series cap dropped.
    pub(crate) dropped: u64,
    /// Family definitions refused for a name clash.
    pub(crate) refused: Vec<Refusal>,
    /// True when the batch defined, changed or removed a series of the cluster's own (not
    /// one of the sender's `relay_sender_*` self-metrics).
    pub(crate) from_cluster: bool,
}

/// What applying to live data (not to a staged snapshot) also touches: the names every
/// cluster's families hold, and the scaling events log.
#[derive(Debug)]
pub(crate) struct Live<'a> {
    pub(crate) names: &'a Mutex<FamilyNames>,
    pub(crate) events: &'a mut Vec<ScalingEvent>,
}

/// Live metric data of one cluster.
#[derive(Debug, Default)]
pub(crate) struct ClusterData {
    families: HashMap<FamilyId, Family>,
    series: Chunks<Series>,
    values: Chunks<Sample>,
    free: Vec<u32>,
    ids: IdIndex,
    /// Labels of the series whose increases become scaling events, by slot (few: one
    /// family's), kept apart so the other series do not carry an empty field.
    tracked: HashMap<u32, Arc<[(String, String)]>>,
    /// Ids the series cap dropped, so their updates and removals are no violation; at most
    /// as many as the cap, after which `dropped_overflow` makes any unknown id tolerated.
    dropped: HashSet<SeriesId, BuildHasherDefault<IdHasher>>,
    dropped_overflow: bool,
    live: usize,
}

/// A metric family as defined by the sender.
#[derive(Debug)]
struct Family {
    name: Arc<str>,
    /// What every line of this family begins with: `name{cluster="c"` (`name_total` for a
    /// counter).
    head: Arc<str>,
    help: Arc<str>,
    kind: MetricKind,
    /// Slots of this family's series, in definition order (swap-removed).
    members: Chunks<u32>,
    tracks_scaling: bool,
    /// One of the sender's own metrics (`relay_sender_*`), not the cluster's.
    sender_self: bool,
    exposure: Exposure,
}

/// Whether a family's name is held in [`FamilyNames`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exposure {
    /// Defined in a snapshot being staged: the name is taken when the snapshot goes live.
    Pending,
    /// The name is held; the family is exposed.
    Exposed,
    /// The name clashed; the family's series are kept but never exposed.
    Refused,
}

/// One series slot: its family, its place among the family's members and its pre-rendered
/// labels, `None` while the slot is free.
#[derive(Debug, Clone)]
struct Series {
    family: FamilyId,
    pos: u32,
    /// `,label="value"` for each label, escaped: what follows the family's head.
    labels: Option<Arc<str>>,
}

/// One series' value; a series defined but not yet updated is not exposed. `tracked` (a
/// copy of "[`ClusterData::tracked`] holds the series") and `sender_self` (its family's) are kept here so
/// an update reads only this (one cache line).
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    value: f64,
    has_value: bool,
    tracked: bool,
    sender_self: bool,
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
    /// `name{cluster="c"`: each line is this, a series' labels, `}` and the value.
    pub(crate) head: Arc<str>,
    pub(crate) help: Arc<str>,
    pub(crate) kind: MetricKind,
    members: Chunks<u32>,
}

impl DataView {
    /// The family's series with a value: their labels (`,label="value"`, see
    /// [`FamilyView::head`]) and value, in definition order.
    pub(crate) fn samples<'a>(
        &'a self,
        family: &'a FamilyView,
    ) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        family.members.iter().filter_map(|&slot| {
            let sample = self.values.get(slot as usize)?;
            let labels = self.series.get(slot as usize)?.labels.as_deref()?;
            sample.has_value.then_some((labels, sample.value))
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
                .filter(|f| f.exposure == Exposure::Exposed && f.members.len() > 0)
                .map(|f| FamilyView {
                    name: f.name.clone(),
                    head: f.head.clone(),
                    help: f.help.clone(),
                    kind: f.kind,
                    members: f.members.clone(),
                })
                .collect(),
            series: self.series.clone(),
            values: self.values.clone(),
        }
    }

    /// Applies families, series, updates, removals. `live` is `None` while staging a
    /// snapshot: its families take their names when it goes live ([`ClusterData::publish`]),
    /// and its counters' increases are compared with the data it replaces then.
    pub(crate) fn apply(
        &mut self,
        cluster: &str,
        batch: &Batch,
        max_series: usize,
        mut live: Option<Live<'_>>,
    ) -> Result<DataApplied, Violation> {
        let mut applied = DataApplied::default();
        for def in &batch.families {
            let names = live.as_ref().map(|l| l.names);
            if let Some(refusal) = self.define_family(cluster, def, names)? {
                applied.refused.push(refusal);
            }
        }
        for def in &batch.series {
            match self.define_series(def, max_series)? {
                Some(sender_self) => applied.from_cluster |= !sender_self,
                None => applied.dropped += 1,
            }
        }
        let mut events = live.as_mut().map(|l| &mut *l.events);
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
                    applied.from_cluster |= !sample.sender_self;
                    if sample.tracked
                        && let Some(events) = events.as_deref_mut()
                        && let Some(labels) = self.tracked.get(&slot)
                    {
                        record_increase(events, cluster, labels, before, value);
                    }
                }
                None if self.dropped_overflow || self.dropped.contains(&id) => {}
                None => {
                    return Err(violation(format!("update for unknown series id {id}")));
                }
            }
        }
        for &id in &batch.removals {
            match self.remove_series(id) {
                Some(sender_self) => applied.from_cluster |= !sender_self,
                None if self.dropped.remove(&id) || self.dropped_overflow => {}
                None => return Err(violation(format!("removal of unknown series id {id}"))),
            }
        }
        Ok(applied)
    }

    /// Takes the names of the families defined while this data was staged, now that it is
    /// live; returns the definitions refused for a clash.
    pub(crate) fn publish(&mut self, cluster: &str, names: &Mutex<FamilyNames>) -> Vec<Refusal> {
        let mut names = lock(names);
        let mut refused = Vec::new();
        for family in self.families.values_mut() {
            if family.exposure == Exposure::Pending {
                family.exposure = match names.acquire(&family.name, family.kind, cluster) {
                    Ok(()) => Exposure::Exposed,
                    Err(reason) => {
                        refused.push(Refusal {
                            family: family.name.to_string(),
                            reason,
                        });
                        Exposure::Refused
                    }
                };
            }
        }
        refused
    }

    /// Gives back the names of the exposed families (the data is being replaced or removed).
    pub(crate) fn release_names(&mut self, names: &Mutex<FamilyNames>) {
        let mut names = lock(names);
        for family in self.families.values_mut() {
            if family.exposure == Exposure::Exposed {
                names.release(&family.name);
                family.exposure = Exposure::Pending;
            }
        }
    }

    /// Defines (or re-states) a family; `names` is `None` while staging. Returns the refusal
    /// when its name clashes with another family's.
    fn define_family(
        &mut self,
        cluster: &str,
        def: &FamilyDef,
        names: Option<&Mutex<FamilyNames>>,
    ) -> Result<Option<Refusal>, Violation> {
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
                let (exposure, refusal) = match names {
                    None => (Exposure::Pending, None),
                    Some(names) => match lock(names).acquire(&def.name, def.kind, cluster) {
                        Ok(()) => (Exposure::Exposed, None),
                        Err(reason) => (
                            Exposure::Refused,
                            Some(Refusal {
                                family: def.name.clone(),
                                reason,
                            }),
                        ),
                    },
                };
                let mut head = String::with_capacity(def.name.len() + cluster.len() + 20);
                exposition::render_head(&mut head, &def.name, def.kind, cluster);
                v.insert(Family {
                    name: def.name.as_str().into(),
                    head: head.into(),
                    help: def.help.as_str().into(),
                    kind: def.kind,
                    members: Chunks::default(),
                    tracks_scaling: def.kind == MetricKind::Counter
                        && def.name == SCALING_EVENTS_FAMILY,
                    sender_self: def.name.starts_with(SENDER_SELF_PREFIX),
                    exposure,
                });
                return Ok(refusal);
            }
        }
        Ok(None)
    }

    /// Defines (or redefines) a series; `None` when the cap dropped it, else whether its
    /// family is one of the sender's own.
    fn define_series(
        &mut self,
        def: &SeriesDef,
        max_series: usize,
    ) -> Result<Option<bool>, Violation> {
        def.validate().map_err(|e| violation(e.to_string()))?;
        let Some(family) = self.families.get(&def.family) else {
            return Err(violation(format!(
                "series {} names unknown family id {}",
                def.id, def.family
            )));
        };
        let mut labels =
            String::with_capacity(def.labels.iter().map(|(k, v)| k.len() + v.len() + 4).sum());
        exposition::render_labels(&mut labels, &def.labels);
        let tracked = family.tracks_scaling.then(|| def.labels.as_slice().into());
        let _ = self.remove_series(def.id);
        self.dropped.remove(&def.id);
        if self.live >= max_series {
            if self.dropped.len() < max_series {
                self.dropped.insert(def.id);
            } else {
                self.dropped_overflow = true;
            }
            return Ok(None);
        }
        let family = self
            .families
            .get_mut(&def.family)
            .ok_or_else(|| violation(format!("unknown family id {}", def.family)))?;
        let sender_self = family.sender_self;
        let sample = Sample {
            tracked: tracked.is_some(),
            sender_self,
            ..Sample::default()
        };
        let series = Series {
            family: def.family,
            pos: family.members.len() as u32,
            labels: Some(labels.into()),
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
        if let Some(tracked) = tracked {
            self.tracked.insert(slot, tracked);
        }
        self.ids.insert(def.id, slot);
        self.live += 1;
        Ok(Some(sender_self))
    }

    /// Records scaling events for tracked counters that grew between `old` (the state a
    /// snapshot replaced) and this data, matching series by their labels (one family is
    /// tracked, so its labels name a series).
    pub(crate) fn record_increases_since(
        &self,
        old: &ClusterData,
        cluster: &str,
        events: &mut Vec<ScalingEvent>,
    ) {
        let before: HashMap<&[(String, String)], f64> = old.tracked_series().collect();
        for (labels, value) in self.tracked_series() {
            if let Some(&was) = before.get(labels) {
                record_increase(events, cluster, labels, Some(was), value);
            }
        }
    }

    /// The valued series of the family named `name`, if defined: their rendered labels
    /// (`,label="value"`) and value.
    pub(crate) fn samples_named<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.families
            .values()
            .filter(move |f| *f.name == *name)
            .flat_map(|f| f.members.iter())
            .filter_map(|&slot| {
                let sample = self.values.get(slot as usize)?;
                let labels = self.series.get(slot as usize)?.labels.as_deref()?;
                sample.has_value.then_some((labels, sample.value))
            })
    }

    /// Labels and values of the valued series of the families whose increases are scaling
    /// events.
    fn tracked_series(&self) -> impl Iterator<Item = (&[(String, String)], f64)> {
        self.families
            .values()
            .filter(|f| f.tracks_scaling)
            .flat_map(|f| f.members.iter())
            .filter_map(|&slot| {
                let sample = self.values.get(slot as usize)?;
                let labels = self.tracked.get(&slot)?;
                sample.has_value.then_some((&**labels, sample.value))
            })
    }

    /// Removes a series; `None` when the id is unknown, else whether its family is one of
    /// the sender's own.
    fn remove_series(&mut self, id: SeriesId) -> Option<bool> {
        let slot = self.ids.remove(id)?;
        let series = self.series.get_mut(slot as usize)?;
        let (family, pos) = (series.family, series.pos as usize);
        series.labels = None;
        self.tracked.remove(&slot);
        let mut sender_self = false;
        if let Some(v) = self.values.get_mut(slot as usize) {
            sender_self = v.sender_self;
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
        Some(sender_self)
    }
}

fn violation(msg: String) -> Violation {
    Violation(msg)
}

fn lock(names: &Mutex<FamilyNames>) -> std::sync::MutexGuard<'_, FamilyNames> {
    // Plain bookkeeping: a panic elsewhere leaves it usable.
    names
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

    /// A snapshot of one family `name` with one series (no labels) valued 1.
    pub(crate) fn one_family_snapshot(name: &str, kind: MetricKind) -> Batch {
        Batch {
            families: vec![family(0, name, kind)],
            series: vec![series(0, 0, &[])],
            updates: updates(&[(0, 1.0)]),
            ..snapshot(1, 0)
        }
    }

    /// Applies `batch` to `data` as live data.
    fn apply_live(
        data: &mut ClusterData,
        names: &Mutex<FamilyNames>,
        batch: &Batch,
    ) -> DataApplied {
        let mut events = Vec::new();
        let live = Live {
            names,
            events: &mut events,
        };
        data.apply("c", batch, 10, Some(live)).expect("apply")
    }

    #[test]
    fn removal_keeps_the_other_members_reachable() {
        let mut data = ClusterData::default();
        data.apply("c", &snapshot(1, 4), 10, None).expect("apply");
        assert_eq!(data.remove_series(0), Some(false));
        assert_eq!(data.remove_series(2), Some(false));
        assert_eq!(data.remove_series(2), None);
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
        let names = Mutex::new(FamilyNames::default());
        let mut data = ClusterData::default();
        apply_live(&mut data, &names, &snapshot(1, 3));
        let view = data.view();
        let delta = Batch {
            seq: 2,
            series: vec![series(7, 0, &[("pod", "new")])],
            updates: updates(&[(1, 5.0), (7, 2.0)]),
            removals: vec![0],
            ..Batch::default()
        };
        apply_live(&mut data, &names, &delta);
        let lines = |view: &DataView| -> Vec<(String, f64)> {
            let family = &view.families[0];
            let mut lines: Vec<_> = view
                .samples(family)
                .map(|(labels, v)| (format!("{}{labels}}}", family.head), v))
                .collect();
            lines.sort_by(|a, b| a.0.cmp(&b.0));
            lines
        };
        let line = |pod: &str, v: f64| (format!("kube_pod_info{{cluster=\"c\",pod=\"{pod}\"}}"), v);
        assert_eq!(
            lines(&view),
            vec![line("p0", 1.0), line("p1", 1.0), line("p2", 1.0)]
        );
        assert_eq!(
            lines(&data.view()),
            vec![line("new", 2.0), line("p1", 5.0), line("p2", 1.0)]
        );
    }

    #[test]
    fn reserved_and_duplicate_family_names_are_violations() {
        let mut data = ClusterData::default();
        for reserved in [
            "relay_cluster_up",
            "relay_receiver_x",
            "relay_remote_write_shards",
        ] {
            let err = data
                .define_family("c", &family(0, reserved, MetricKind::Gauge), None)
                .expect_err("reserved");
            assert!(err.0.contains("reserved"), "{err:?}");
        }
        data.define_family("c", &family(0, "a", MetricKind::Gauge), None)
            .expect("a");
        assert!(
            data.define_family("c", &family(1, "a", MetricKind::Gauge), None)
                .is_err()
        );
        assert!(
            data.define_family("c", &family(0, "b", MetricKind::Gauge), None)
                .is_err()
        );
    }

    #[test]
    fn a_staged_family_takes_its_name_when_published() {
        let names = Mutex::new(FamilyNames::default());
        let mut other = ClusterData::default();
        apply_live(&mut other, &names, &snapshot(1, 1));
        let mut staged = ClusterData::default();
        let mut batch = snapshot(1, 2);
        batch.families[0].kind = MetricKind::Counter;
        let applied = staged.apply("c2", &batch, 10, None).expect("staged");
        assert!(applied.refused.is_empty(), "nothing decided while staged");
        let refused = staged.publish("c2", &names);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].family, "kube_pod_info");
        assert!(
            staged.view().families.is_empty(),
            "a refused family is not exposed"
        );
        assert_eq!(staged.live(), 2, "its series are kept for the sender's ids");
        other.release_names(&names);
        let mut again = ClusterData::default();
        again.apply("c2", &batch, 10, None).expect("staged");
        assert!(again.publish("c2", &names).is_empty());
        assert_eq!(again.view().families.len(), 1);
    }

    #[test]
    fn dropped_ids_are_remembered_up_to_the_cap() {
        let names = Mutex::new(FamilyNames::default());
        let mut data = ClusterData::default();
        let mut batch = snapshot(1, 25);
        batch.updates = updates(&[]);
        let applied = apply_live(&mut data, &names, &batch);
        assert_eq!(applied.dropped, 15);
        assert_eq!(data.dropped.len(), 10, "bounded by the cap");
        assert!(data.dropped_overflow);
        // Past the bound, updates for ids never seen are tolerated, not violations.
        let delta = Batch {
            seq: 2,
            updates: updates(&[(24, 1.0), (1_000, 1.0)]),
            removals: vec![23],
            ..Batch::default()
        };
        apply_live(&mut data, &names, &delta);
        assert_eq!(data.live(), 10);
    }
}
