//! The *base* for a receiver that lost the series table (`docs/protocol.md`, "Time and
//! history", item 5), and the tombstones that make it possible.
//!
//! Spooled delta batches name series by id. A receiver that restarted, or another one the
//! sender failed over to, does not know those ids, so before the spool can be replayed to it
//! the link sends a base: a snapshot (parts `first`..`last`) with the families and the
//! definitions, without values, of every series the spooled batches name but do not define
//! themselves ([`SeriesStore::begin_base`], [`SeriesStore::next_base_part`]). Live series are
//! described from their owners, walked in key order like a snapshot, one frame at a time.
//!
//! A series removed while its removal is not yet acknowledged must still be describable: its
//! family and label atoms stay as a *tombstone* from the moment its removal is recorded until
//! the batch carrying it leaves the spool (acknowledged or dropped:
//! [`SeriesStore::removals_sent`], [`SeriesStore::release_tombstones`]), or until a snapshot
//! makes the receiver's table whole again. Tombstones are bounded by a budget in bytes (their
//! definitions' encoded size, which the link counts inside the spool's bound): a removal that
//! would exceed it drops every tombstone and stops keeping them until the spool and the
//! pending removals are empty again (or a snapshot begins), and a base that needs a dropped
//! one is impossible ([`Undescribable`]): the link then supersedes the spool with a snapshot,
//! as a receiver without a base would need anyway.

use std::collections::{HashMap, VecDeque};
use std::ops::Bound;

use kube_relay_proto::{Batch, SeriesDef, SeriesId, SnapshotPart};
use tracing::warn;

use super::{Atom, BatchBuilder, Cursor, Item, Labels, Pending, SeriesStore, size};
use crate::family::Family;

/// Encoded size of a definition without value: what a tombstone costs against its budget.
pub(super) fn description_bytes<'a>(family: Family, values: impl Iterator<Item = &'a str>) -> u64 {
    let labels: usize = family
        .label_names()
        .iter()
        .zip(values)
        .map(|(name, value)| size::string(name) + size::string(value))
        .sum();
    (15 + labels) as u64
}

/// A removed series' definition.
#[derive(Debug)]
struct Tombstone {
    family: Family,
    labels: Box<[Atom]>,
    cost: u64,
}

/// Definitions of removed series, kept for a base. See the [module docs](self).
#[derive(Debug, Default)]
pub(super) struct Tombstones {
    /// Most bytes kept; 0 keeps none.
    budget: u64,
    by_id: HashMap<SeriesId, Tombstone>,
    /// Removals the link took, by the spool sequence number of the batch carrying them,
    /// oldest first.
    sent: VecDeque<(u64, Vec<SeriesId>)>,
    bytes: u64,
    /// False after the budget was exceeded: no tombstones are kept until the spool and the
    /// pending removals are empty.
    overflowed: bool,
}

impl Tombstones {
    /// True when a tombstone of `cost` bytes may be kept.
    fn admits(&self, cost: u64) -> bool {
        self.budget > 0 && !self.overflowed && self.bytes + cost <= self.budget
    }
}

/// Why a base cannot be built: series the spool names can no longer be described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undescribable {
    /// Series ids neither held nor kept as tombstones.
    pub missing: usize,
}

/// A base under way.
#[derive(Debug)]
pub(super) struct Base {
    /// The series to describe, sorted.
    ids: Vec<SeriesId>,
    /// Which of `ids` have gone out.
    described: Vec<bool>,
    /// Owners up to here have been walked; `None` once every owner has been.
    cursor: Option<Cursor>,
    first: bool,
    observed_at_ms: u64,
}

impl Base {
    /// Index of `id` in `ids` if it is still to be described.
    fn wants(&self, id: SeriesId) -> Option<usize> {
        let i = self.ids.binary_search(&id).ok()?;
        (!self.described[i]).then_some(i)
    }
}

impl SeriesStore {
    /// Keeps the definitions of removed series, up to `budget_bytes` of them, until their
    /// removal is acknowledged (see the [module docs](self)); 0 keeps none (the default).
    pub fn keep_tombstones(&mut self, budget_bytes: u64) {
        self.tombstones.budget = budget_bytes;
        if budget_bytes == 0 {
            self.clear_tombstones();
        }
    }

    /// Bytes of the tombstones kept (their definitions' encoded size).
    pub fn tombstone_bytes(&self) -> u64 {
        self.tombstones.bytes
    }

    /// Number of tombstones kept.
    pub fn tombstones(&self) -> usize {
        self.tombstones.by_id.len()
    }

    /// Keeps the definition of series `id` (just removed, its removal recorded) if the budget
    /// allows; stops keeping any when it does not.
    pub(super) fn entomb(&mut self, id: SeriesId, family: Family, labels: Labels<'_>) {
        if self.tombstones.budget == 0 || self.tombstones.overflowed {
            return;
        }
        let cost = description_bytes(family, labels.iter().map(|a| self.atoms.text(a)));
        if !self.tombstones.admits(cost) {
            warn!(
                tombstones = self.tombstones.by_id.len(),
                bytes = self.tombstones.bytes,
                budget = self.tombstones.budget,
                "too many removed series await acknowledgement to keep describing them: a \
                 receiver that lost the series table will get a snapshot instead of the spool"
            );
            self.clear_tombstones();
            self.tombstones.overflowed = true;
            return;
        }
        labels.iter().for_each(|a| self.atoms.retain(a));
        self.tombstones.bytes += cost;
        let labels = labels.iter().collect();
        self.tombstones.by_id.insert(
            id,
            Tombstone {
                family,
                labels,
                cost,
            },
        );
    }

    /// Records that the link spooled the removals `removals` in the batch with spool sequence
    /// number `spool_seq`: their tombstones go once that batch leaves the spool.
    pub fn removals_sent(&mut self, spool_seq: u64, removals: &[SeriesId]) {
        let kept: Vec<SeriesId> = removals
            .iter()
            .copied()
            .filter(|id| self.tombstones.by_id.contains_key(id))
            .collect();
        if !kept.is_empty() {
            self.tombstones.sent.push_back((spool_seq, kept));
        }
    }

    /// Forgets the tombstones of removals carried by batches before `spool_oldest`, the
    /// oldest batch still spooled (`None`: the spool is empty).
    pub fn release_tombstones(&mut self, spool_oldest: Option<u64>) {
        while let Some((seq, _)) = self.tombstones.sent.front() {
            if spool_oldest.is_some_and(|oldest| *seq >= oldest) {
                break;
            }
            let Some((_, ids)) = self.tombstones.sent.pop_front() else {
                break;
            };
            for id in ids {
                self.bury(id);
            }
        }
        if self.tombstones.overflowed
            && spool_oldest.is_none()
            && !self.pending.values().any(|p| matches!(p, Pending::Remove))
        {
            // Nothing left that a dropped tombstone could have described.
            self.tombstones.overflowed = false;
        }
    }

    fn bury(&mut self, id: SeriesId) {
        if let Some(t) = self.tombstones.by_id.remove(&id) {
            self.tombstones.bytes -= t.cost;
            t.labels.iter().for_each(|&a| self.atoms.release(a));
        }
    }

    /// Forgets every tombstone (a snapshot makes the receiver's table whole).
    pub(super) fn clear_tombstones(&mut self) {
        for (_, t) in std::mem::take(&mut self.tombstones.by_id) {
            t.labels.iter().for_each(|&a| self.atoms.release(a));
        }
        self.tombstones.sent.clear();
        self.tombstones.bytes = 0;
        self.tombstones.overflowed = false;
    }

    /// Starts a base describing the series `ids` (any order, duplicates allowed), every part
    /// stamped `observed_at_ms`.
    ///
    /// # Errors
    /// [`Undescribable`] when some of them are neither held nor kept as tombstones; no base
    /// is under way then.
    pub fn begin_base(
        &mut self,
        mut ids: Vec<SeriesId>,
        observed_at_ms: u64,
    ) -> Result<(), Undescribable> {
        ids.sort_unstable();
        ids.dedup();
        let mut found = vec![false; ids.len()];
        for owner in self.owners.values() {
            for s in owner.series() {
                if let Ok(i) = ids.binary_search(&s.id) {
                    found[i] = true;
                }
            }
        }
        let missing = ids
            .iter()
            .zip(&found)
            .filter(|(id, found)| !**found && !self.tombstones.by_id.contains_key(id))
            .count();
        if missing > 0 {
            self.base = None;
            return Err(Undescribable { missing });
        }
        let described = vec![false; ids.len()];
        self.base = Some(Box::new(Base {
            ids,
            described,
            cursor: Some(Cursor::START),
            first: true,
            observed_at_ms,
        }));
        Ok(())
    }

    /// The next part of the base begun with [`SeriesStore::begin_base`], estimated to encode
    /// within `max_frame_bytes`, or `Ok(None)` when none is under way. The first parts define
    /// every family, before any series; the part marked `last` ends the base. Series removed since the base
    /// began are described from their tombstones.
    ///
    /// # Errors
    /// [`Undescribable`] when a series to describe vanished meanwhile (its tombstone was
    /// dropped); the base is abandoned.
    pub fn next_base_part(
        &mut self,
        max_frame_bytes: usize,
    ) -> Result<Option<Batch>, Undescribable> {
        let Some(mut base) = self.base.take() else {
            return Ok(None);
        };
        let mut batch = BatchBuilder::new();
        let mut full = false;
        if let Some(Cursor::Families(from)) = base.cursor {
            let next = batch.define_families(from, max_frame_bytes);
            base.cursor = Some(Cursor::Families(next));
            full = next < Family::ALL.len();
        }
        if let Some(cursor) = base.cursor.filter(|_| !full) {
            let mut walked = None;
            for (k, owner) in self.owners.range((cursor.owners_from(), Bound::Unbounded)) {
                let items: Vec<(usize, Item)> = owner
                    .iter()
                    .filter_map(|(s, labels)| {
                        let i = base.wants(s.id)?;
                        Some((i, Item::Describe(self.series_def(s, labels))))
                    })
                    .collect();
                let size: usize = items.iter().map(|(_, item)| item.size()).sum();
                if batch.size + size > max_frame_bytes && !batch.is_empty_of_all() {
                    full = true;
                    break;
                }
                for (i, item) in items {
                    base.described[i] = true;
                    batch.push(item);
                }
                walked = Some(*k);
            }
            base.cursor = if full {
                walked.map(Cursor::After).or(Some(cursor))
            } else {
                None
            };
        }
        if !full {
            // Every owner walked: the rest are tombstones.
            for i in 0..base.ids.len() {
                if base.described[i] {
                    continue;
                }
                let id = base.ids[i];
                let Some(t) = self.tombstones.by_id.get(&id) else {
                    let missing = base.described.iter().filter(|d| !**d).count();
                    return Err(Undescribable { missing });
                };
                let item = Item::Describe(self.tombstone_def(id, t));
                if !batch.fits(&item, max_frame_bytes) && !batch.is_empty_of_all() {
                    full = true;
                    break;
                }
                base.described[i] = true;
                batch.push(item);
            }
        }
        let first = std::mem::replace(&mut base.first, false);
        let mut out = batch.finish(base.observed_at_ms);
        out.snapshot = Some(SnapshotPart { first, last: !full });
        if full {
            self.base = Some(base);
        }
        Ok(Some(out))
    }

    fn tombstone_def(&self, id: SeriesId, t: &Tombstone) -> SeriesDef {
        SeriesDef {
            id,
            family: t.family.id(),
            labels: t
                .family
                .label_names()
                .iter()
                .zip(t.labels.iter())
                .map(|(name, &atom)| ((*name).to_owned(), self.atoms.text(atom).to_owned()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use kube_relay_proto::{SenderMessage, frame::encode_payload};

    use super::*;
    use crate::series::{ObjectKey, ObjectKind, SeriesSet};

    fn pod_key(name: &str) -> ObjectKey {
        ObjectKey::new(ObjectKind::Pod, "default", name)
    }

    fn phases<'a>(pod: &'a str, phase: &str) -> SeriesSet<'a> {
        let mut set = SeriesSet::new();
        let prefix = ["default".into(), pod.into(), format!("uid-{pod}").into()];
        set.push_one_hot(
            Family::PodStatusPhase,
            &prefix,
            &["Pending", "Running", "Failed"],
            phase,
        );
        set
    }

    /// A store whose pods `names` were sent (their definitions taken as deltas).
    fn sent_store(names: &[String]) -> SeriesStore {
        let mut store = SeriesStore::new(1);
        store.keep_tombstones(1 << 20);
        for name in names {
            store.apply(&pod_key(name), &phases(name, "Pending"));
        }
        store.take_deltas(1 << 20);
        store
    }

    /// The ids of pod `pod`'s series.
    fn ids_of(store: &SeriesStore, pod: &str) -> Vec<SeriesId> {
        let mut ids = Vec::new();
        for owner in store.owners.values() {
            for (s, labels) in owner.iter() {
                if labels.get(1).map(|a| store.atoms.text(a)) == Some(pod) {
                    ids.push(s.id);
                }
            }
        }
        ids
    }

    fn all_parts(store: &mut SeriesStore, max: usize) -> Vec<Batch> {
        let mut parts = Vec::new();
        while let Some(part) = store.next_base_part(max).expect("describable") {
            parts.push(part);
        }
        parts
    }

    #[test]
    fn a_base_describes_exactly_the_named_series_without_values_in_marked_parts() {
        let names: Vec<String> = (0..60).map(|i| format!("pod-{i:02}")).collect();
        let mut store = sent_store(&names);
        let wanted: Vec<SeriesId> = names[..40].iter().flat_map(|n| ids_of(&store, n)).collect();
        let mut named = wanted.clone();
        named.extend(wanted.iter().take(10)); // named twice
        store.begin_base(named, 1234).expect("describable");
        let parts = all_parts(&mut store, 4096);
        assert!(parts.len() > 2, "split below the frame limit");
        for part in &parts {
            assert_eq!(part.observed_at_ms, 1234, "stamped as told");
            assert!(
                part.updates.is_empty() && part.removals.is_empty(),
                "no values"
            );
            let len = encode_payload(&SenderMessage::Batch(part.clone()))
                .expect("encode")
                .len();
            assert!(len <= 4096, "{len}");
        }
        let marks: Vec<SnapshotPart> = parts.iter().map(|p| p.snapshot.expect("marked")).collect();
        assert!(marks[0].first && !marks[0].last);
        assert!(marks[1..].iter().all(|m| !m.first));
        assert!(marks[marks.len() - 1].last);
        let families: usize = parts.iter().map(|p| p.families.len()).sum();
        assert_eq!(families, Family::ALL.len());
        let mut described: Vec<SeriesId> = parts
            .iter()
            .flat_map(|p| p.series.iter().map(|s| s.id))
            .collect();
        described.sort_unstable();
        let mut want = wanted;
        want.sort_unstable();
        assert_eq!(described, want);
        assert!(store.next_base_part(4096).expect("done").is_none());
    }

    #[test]
    fn a_series_removed_before_its_removal_is_acknowledged_is_described_from_its_tombstone() {
        let names = vec!["web".to_owned(), "db".to_owned()];
        let mut store = sent_store(&names);
        let db = ids_of(&store, "db");
        store.remove(&pod_key("db"));
        assert_eq!(store.tombstones(), 3);
        let removal = store.take_delta(1 << 20).expect("the removal");
        assert_eq!(removal.removals, db);
        store.removals_sent(7, &removal.removals);
        // The base runs while the removal is still spooled (batch 7 unacknowledged).
        store.release_tombstones(Some(7));
        store.begin_base(db.clone(), 1).expect("describable");
        let parts = all_parts(&mut store, 1 << 20);
        let labels: Vec<&str> = parts[0]
            .series
            .iter()
            .map(|s| s.labels[3].1.as_str())
            .collect();
        assert_eq!(labels, ["Pending", "Running", "Failed"]);
        assert!(parts[0].series.iter().all(|s| s.labels[1].1 == "db"));
        // Acknowledged: the definitions go, and so do their label values.
        store.release_tombstones(Some(8));
        assert_eq!((store.tombstones(), store.tombstone_bytes()), (0, 0));
        assert_eq!(
            store.begin_base(db, 1),
            Err(Undescribable { missing: 3 }),
            "nothing left to describe it with"
        );
        store.remove(&pod_key("web"));
        store.release_tombstones(None);
        store.take_deltas(1 << 20);
        store.release_tombstones(None);
        assert_eq!(
            store.tombstones(),
            3,
            "a removal stays describable until the link says which batch carries it"
        );
        store.begin_snapshot();
        assert_eq!(store.tombstones(), 0);
        assert_eq!(store.distinct_label_values(), 0, "every label freed");
    }

    #[test]
    fn series_removed_during_a_base_are_described_all_the_same() {
        let names: Vec<String> = (0..40).map(|i| format!("pod-{i:02}")).collect();
        let mut store = sent_store(&names);
        let named: Vec<SeriesId> = names.iter().flat_map(|n| ids_of(&store, n)).collect();
        store.begin_base(named.clone(), 1).expect("describable");
        let mut parts = Vec::new();
        // Past the families, to the first part with series.
        let first = loop {
            let part = store.next_base_part(2048).expect("ok").expect("a part");
            if !part.series.is_empty() {
                break part;
            }
            parts.push(part);
        };
        let sent: Vec<&str> = first
            .series
            .iter()
            .map(|s| s.labels[1].1.as_str())
            .collect();
        // One pod behind the cursor and one ahead of it go away.
        let behind = sent[0].to_owned();
        let ahead = names
            .iter()
            .find(|n| !sent.contains(&n.as_str()))
            .expect("a pod ahead")
            .clone();
        store.remove(&pod_key(&behind));
        store.remove(&pod_key(&ahead));
        parts.push(first);
        parts.extend(all_parts(&mut store, 2048));
        let mut described: Vec<SeriesId> = parts
            .iter()
            .flat_map(|p| p.series.iter().map(|s| s.id))
            .collect();
        described.sort_unstable();
        let mut want = named;
        want.sort_unstable();
        assert_eq!(described, want, "each once");
    }

    #[test]
    fn tombstones_beyond_the_budget_are_all_dropped_until_the_spool_is_empty() {
        let names: Vec<String> = (0..10).map(|i| format!("pod-{i:02}")).collect();
        let mut store = sent_store(&names);
        let one = description_bytes(
            Family::PodStatusPhase,
            ["default", "pod-00", "uid-pod-00", "Pending"].into_iter(),
        );
        // Room for two pods' three series each.
        store.keep_tombstones(6 * one);
        let lost = ids_of(&store, "pod-00");
        store.remove(&pod_key("pod-00"));
        store.remove(&pod_key("pod-01"));
        assert_eq!(store.tombstones(), 6);
        let kept = store.take_delta(1 << 20).expect("removals");
        store.removals_sent(1, &kept.removals);
        store.remove(&pod_key("pod-02"));
        assert_eq!(store.tombstones(), 0, "over the budget: none kept");
        store.remove(&pod_key("pod-03"));
        assert_eq!(store.tombstones(), 0, "and no more kept");
        assert!(
            store.begin_base(lost, 1).is_err(),
            "pod-00 went with the rest"
        );
        // Spool and pending removals empty: tombstones are kept again.
        store.take_deltas(1 << 20);
        store.release_tombstones(None);
        store.remove(&pod_key("pod-04"));
        assert_eq!(store.tombstones(), 3);
    }
}
