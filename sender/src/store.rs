//! The derived state: every series the sender holds, and what the receiver has not seen yet.
//!
//! [`SeriesStore`] keeps, per owner ([`ObjectKey`]), the owner's current series: family,
//! label values and value, with an id per series assigned once per epoch. Replacing an
//! owner's [`SeriesSet`] yields exactly the changes: new series are *defined*, changed
//! values *updated*, vanished series *removed*; removing an owner removes all its series at
//! once. Changes wait in a pending map keyed by series id, so a series that changes ten times
//! between two flushes is sent once with its latest value ([`SeriesStore::take_deltas`]),
//! and a series defined and removed in between is never sent at all.
//!
//! A full snapshot ([`SeriesStore::begin_snapshot`], [`SeriesStore::next_snapshot_part`])
//! is produced one frame at a time, walking owners in key order, so a snapshot of 300,000
//! series never sits in memory whole. Changes made while a snapshot is under way are
//! recorded as deltas only for owners the snapshot has already passed; owners ahead of it
//! will be sent with their state at that time.
//!
//! Memory: label values are interned (one copy of a pod name or uid for all its series) and
//! a series costs 16 bytes plus 4 bytes per label value it does not share with its owner's
//! first series (see `owner`). No Kubernetes object is kept.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::ops::Bound;

use hashbrown::HashTable;

use kube_relay_proto::{Batch, FamilyDef, SeriesDef, SeriesId, SnapshotPart, Updates, Value};

use crate::family::Family;
use crate::series::{ObjectKey, ObjectKind, SeriesSet, render_sample};

mod base;
mod owner;

use base::Tombstones;
pub use base::Undescribable;
use owner::{Labels, Owner, OwnerBuilder, Stored};

/// An interned string.
type Atom = u32;

/// Reference-counted string interning: one copy of each distinct label value.
///
/// The table holds only atoms, found by the hash of the text their slot holds: a distinct
/// value costs its bytes, a 24-byte slot and ~5 bytes of table (a map from an `Arc<str>` to
/// its atom stored the text's pointer twice and an `Arc` header: ~25 MB more at 100,000
/// pods).
#[derive(Debug, Default)]
struct Interner {
    table: HashTable<Atom>,
    hasher: RandomState,
    slots: Vec<Slot>,
    free: Vec<Atom>,
}

#[derive(Debug)]
struct Slot {
    text: Option<Box<str>>,
    refs: u32,
}

impl Interner {
    fn slot_text(slots: &[Slot], atom: Atom) -> &str {
        slots[atom as usize].text.as_deref().unwrap_or_default()
    }

    /// The atom for `text`, with one more reference.
    fn acquire(&mut self, text: &str) -> Atom {
        let hash = self.hasher.hash_one(text);
        let Interner {
            table,
            hasher,
            slots,
            free,
        } = self;
        if let Some(&atom) = table.find(hash, |&a| Self::slot_text(slots, a) == text) {
            slots[atom as usize].refs += 1;
            return atom;
        }
        let slot = Slot {
            text: Some(Box::from(text)),
            refs: 1,
        };
        let atom = match free.pop() {
            Some(atom) => {
                slots[atom as usize] = slot;
                atom
            }
            None => {
                slots.push(slot);
                Atom::try_from(slots.len() - 1).expect("fewer than 2^32 distinct labels")
            }
        };
        table.insert_unique(hash, atom, |&a| hasher.hash_one(Self::slot_text(slots, a)));
        atom
    }

    /// One more reference to an atom already held.
    fn retain(&mut self, atom: Atom) {
        self.slots[atom as usize].refs += 1;
    }

    /// Drops one reference; the string is freed with its last one.
    fn release(&mut self, atom: Atom) {
        let slot = &mut self.slots[atom as usize];
        slot.refs -= 1;
        if slot.refs == 0 {
            if let Some(text) = slot.text.take() {
                let hash = self.hasher.hash_one(&*text);
                if let Ok(entry) = self.table.find_entry(hash, |&a| a == atom) {
                    entry.remove();
                }
            }
            self.free.push(atom);
        }
    }

    fn get(&self, text: &str) -> Option<Atom> {
        let hash = self.hasher.hash_one(text);
        self.table
            .find(hash, |&a| Self::slot_text(&self.slots, a) == text)
            .copied()
    }

    fn text(&self, atom: Atom) -> &str {
        Self::slot_text(&self.slots, atom)
    }

    fn len(&self) -> usize {
        self.table.len()
    }
}

/// An owner's key with interned parts. Ordered by atoms: arbitrary, but stable while the
/// owner exists, which is all the snapshot cursor needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    kind: ObjectKind,
    namespace: Atom,
    name: Atom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// A new series: send its definition and value.
    Define(Key),
    /// A known series changed value.
    Update(Key),
    /// A known series is gone.
    Remove,
}

/// Where a snapshot (or a base) under way has got to.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// No owner sent yet; the families from this index on are still to be defined (a part
    /// carries as many as fit: together they exceed the smallest frame limit).
    Families(usize),
    /// Every family and every owner up to and including this key has been sent.
    After(Key),
}

impl Cursor {
    /// Before anything was sent.
    const START: Cursor = Cursor::Families(0);

    /// Where owners start, once the families are defined.
    fn owners_from(self) -> Bound<Key> {
        match self {
            Cursor::Families(_) => Bound::Unbounded,
            Cursor::After(k) => Bound::Excluded(k),
        }
    }
}

/// Pending tables larger than this many slots are shrunk once drained.
const SHRINK_ABOVE: usize = 4096;

/// Upper bounds of encoded sizes (bincode varints take at most 5 bytes for a `u32`
/// and 9 for a `u64`), used to split batches below the frame limit.
mod size {
    /// Batch framing: message tag, seq, snapshot marker, four vector lengths.
    pub const BATCH: usize = 1 + 9 + 3 + 4 * 5;
    /// An update: id gap and tagged value.
    pub const UPDATE: usize = 5 + 10;
    /// A removal: one id.
    pub const REMOVAL: usize = 5;

    /// A string: length prefix and bytes.
    pub fn string(s: &str) -> usize {
        5 + s.len()
    }
}

/// The sender's derived state. See the [module docs](self).
#[derive(Debug)]
pub struct SeriesStore {
    epoch: u64,
    atoms: Interner,
    owners: BTreeMap<Key, Owner>,
    next_id: SeriesId,
    series: usize,
    pending: HashMap<SeriesId, Pending>,
    snapshot: Option<Cursor>,
    /// When the newest change was recorded (ms since the Unix epoch): the observation time
    /// of the next delta batch.
    changed_at_ms: u64,
    /// A change was recorded for the link by the current `apply` or `remove` (changes the
    /// link will not carry, such as those ahead of a snapshot's cursor, do not move
    /// `changed_at_ms`).
    recorded: bool,
    /// Definitions of removed series the link may still have to describe in a base.
    tombstones: Tombstones,
    /// A base under way ([`SeriesStore::begin_base`]).
    base: Option<Box<base::Base>>,
}

impl SeriesStore {
    /// An empty store for `epoch` (which names this run of series ids on the wire).
    pub fn new(epoch: u64) -> Self {
        SeriesStore {
            epoch,
            atoms: Interner::default(),
            owners: BTreeMap::new(),
            next_id: 0,
            series: 0,
            pending: HashMap::new(),
            snapshot: None,
            changed_at_ms: 0,
            recorded: false,
            tombstones: Tombstones::default(),
            base: None,
        }
    }

    /// The current epoch. It changes only when series ids run out and are renumbered
    /// ([`SeriesStore::apply`] then starts a new epoch, and the link must reconnect and send a
    /// snapshot).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of series held.
    pub fn len(&self) -> usize {
        self.series
    }

    /// True when no series is held.
    pub fn is_empty(&self) -> bool {
        self.series == 0
    }

    /// Number of owners (objects) holding series.
    pub fn owners(&self) -> usize {
        self.owners.len()
    }

    /// Number of distinct interned label values (for memory diagnostics).
    pub fn distinct_label_values(&self) -> usize {
        self.atoms.len()
    }

    /// Series whose change has not been taken by [`SeriesStore::take_deltas`] yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// True when a snapshot is under way.
    pub fn snapshot_in_progress(&self) -> bool {
        self.snapshot.is_some()
    }

    fn key_of(&mut self, key: &ObjectKey) -> Key {
        Key {
            kind: key.kind,
            namespace: self.atoms.acquire(&key.namespace),
            name: self.atoms.acquire(&key.name),
        }
    }

    fn find_key(&self, key: &ObjectKey) -> Option<Key> {
        Some(Key {
            kind: key.kind,
            namespace: self.atoms.get(&key.namespace)?,
            name: self.atoms.get(&key.name)?,
        })
    }

    /// True when changes to this owner must be recorded as deltas: no snapshot is under way,
    /// or the snapshot has already passed the owner.
    fn records(&self, key: Key) -> bool {
        match self.snapshot {
            None => true,
            Some(Cursor::Families(_)) => false,
            Some(Cursor::After(done)) => key <= done,
        }
    }

    fn allocate_id(&mut self) -> SeriesId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Replaces the series of the owner `key` with `set`: keeps the ids of series whose
    /// family and labels are unchanged, records value changes, defines new series and removes
    /// vanished ones. An empty set removes the owner. Returns true when anything changed.
    ///
    /// A sample repeated within `set` (same family and labels) is kept once, the first value
    /// winning.
    pub fn apply(&mut self, key: &ObjectKey, set: &SeriesSet<'_>) -> bool {
        let changed = self.apply_set(key, set);
        self.stamp();
        changed
    }

    /// Stamps the next delta batch with now if a change was recorded since the last stamp.
    fn stamp(&mut self) {
        if std::mem::take(&mut self.recorded) {
            self.changed_at_ms = now_ms();
        }
    }

    /// Records a change of series `id` for the next delta batch.
    fn record(&mut self, id: SeriesId, change: Pending) {
        self.recorded = true;
        match change {
            Pending::Update(_) => {
                self.pending.entry(id).or_insert(change);
            }
            Pending::Define(_) | Pending::Remove => {
                self.pending.insert(id, change);
            }
        }
    }

    fn apply_set(&mut self, key: &ObjectKey, set: &SeriesSet<'_>) -> bool {
        if set.is_empty() {
            return self.remove(key);
        }
        if self.id_space_left() < set.len() as u64 {
            self.renumber();
        }
        let existing = self.find_key(key).filter(|k| self.owners.contains_key(k));
        if let Some(k) = existing
            && let Some(changed) = self.update_in_place(k, set)
        {
            return changed;
        }
        let k = match existing {
            Some(k) => k,
            None => self.key_of(key),
        };
        let records = self.records(k);
        let old = self.owners.remove(&k).unwrap_or_default();

        // Intern the new labels.
        let mut new = OwnerBuilder::with_capacity(
            set.len(),
            set.samples().iter().map(|s| s.labels.len()).sum(),
        );
        let mut atoms = Vec::new();
        let mut matched = vec![false; old.series().len()];
        let mut changed = false;
        for sample in set.samples() {
            atoms.clear();
            atoms.extend(sample.labels.iter().map(|l| self.atoms.acquire(l)));
            // A duplicate within the new set: keep the first.
            if new.contains(sample.family, &atoms) {
                atoms.iter().for_each(|&a| self.atoms.release(a));
                continue;
            }
            let previous = old.iter().enumerate().find(|(i, (s, labels))| {
                !matched[*i] && s.family == sample.family && labels.is(&atoms)
            });
            let id = match previous {
                Some((i, (s, _))) => {
                    matched[i] = true;
                    if s.value.to_bits() != sample.value.to_bits() {
                        changed = true;
                        if records {
                            self.record(s.id, Pending::Update(k));
                        }
                    }
                    s.id
                }
                None => {
                    changed = true;
                    let id = self.allocate_id();
                    self.series += 1;
                    if records {
                        self.record(id, Pending::Define(k));
                    }
                    id
                }
            };
            let unkept = new.push(Stored::new(id, sample.family, sample.value), &atoms);
            unkept.iter().for_each(|&a| self.atoms.release(a));
        }
        for ((s, labels), _) in old.iter().zip(&matched).filter(|(_, m)| !**m) {
            changed = true;
            self.series -= 1;
            self.forget(s, labels, records);
        }
        old.atoms().iter().for_each(|&a| self.atoms.release(a));
        self.owners.insert(k, new.build());
        changed
    }

    /// The common case: the owner's series are the same (families and labels, in order) and
    /// only values may have changed. Updates them where they are, allocating nothing, and
    /// returns whether any value changed; `None` when the structure differs.
    fn update_in_place(&mut self, k: Key, set: &SeriesSet<'_>) -> Option<bool> {
        let records = self.records(k);
        let owner = self.owners.get(&k)?;
        if owner.series().len() != set.len() {
            return None;
        }
        let same = owner
            .iter()
            .zip(set.samples())
            .all(|((s, labels), sample)| {
                s.family == sample.family
                    && labels
                        .iter()
                        .zip(&sample.labels)
                        .all(|(atom, label)| self.atoms.text(atom) == label.as_ref())
            });
        if !same {
            return None;
        }
        let owner = self.owners.get_mut(&k)?;
        let mut changed = false;
        for (s, sample) in owner.series_mut().iter_mut().zip(set.samples()) {
            if s.value.to_bits() != sample.value.to_bits() {
                s.value = sample.value;
                changed = true;
                if records {
                    // `owner` borrows the owners: record by hand.
                    self.pending.entry(s.id).or_insert(Pending::Update(k));
                    self.recorded = true;
                }
            }
        }
        Some(changed)
    }

    /// Records that series `s` (with label atoms `labels`) is gone. A removal the link will
    /// send keeps the series' definition as a tombstone, for a base.
    fn forget(&mut self, s: &Stored, labels: Labels<'_>, records: bool) {
        match self.pending.entry(s.id) {
            Entry::Occupied(e) if matches!(e.get(), Pending::Define(_)) => {
                // Never sent: nothing to remove.
                e.remove();
                return;
            }
            Entry::Occupied(mut e) => {
                *e.get_mut() = Pending::Remove;
            }
            Entry::Vacant(e) => {
                if !records {
                    return;
                }
                e.insert(Pending::Remove);
            }
        }
        self.recorded = true;
        self.entomb(s.id, s.family, labels);
    }

    /// Removes the owner `key` and all its series. Returns true when it existed.
    pub fn remove(&mut self, key: &ObjectKey) -> bool {
        let Some(k) = self.find_key(key) else {
            return false;
        };
        let Some(owner) = self.owners.remove(&k) else {
            return false;
        };
        let records = self.records(k);
        for (s, labels) in owner.iter() {
            self.series -= 1;
            self.forget(s, labels, records);
        }
        owner.atoms().iter().for_each(|&a| self.atoms.release(a));
        self.atoms.release(k.namespace);
        self.atoms.release(k.name);
        self.stamp();
        true
    }

    /// Removes every owner of `kind` for which `keep(namespace, name)` is false, and returns
    /// their keys: how a relist ends (objects absent from the new list were deleted).
    pub fn retain(
        &mut self,
        kind: ObjectKind,
        mut keep: impl FnMut(&str, &str) -> bool,
    ) -> Vec<ObjectKey> {
        let doomed: Vec<ObjectKey> = self
            .owners
            .keys()
            .filter(|k| k.kind == kind)
            .map(|k| (self.atoms.text(k.namespace), self.atoms.text(k.name)))
            .filter(|(ns, name)| !keep(ns, name))
            .map(|(ns, name)| ObjectKey::new(kind, ns, name))
            .collect();
        for key in &doomed {
            self.remove(key);
        }
        doomed
    }

    /// Keys of every owner of `kind`.
    pub fn keys(&self, kind: ObjectKind) -> Vec<ObjectKey> {
        self.owners
            .keys()
            .filter(|k| k.kind == kind)
            .map(|k| ObjectKey::new(kind, self.atoms.text(k.namespace), self.atoms.text(k.name)))
            .collect()
    }

    /// The value of the series `family{labels}`, if held.
    pub fn value(&self, family: Family, labels: &[&str]) -> Option<f64> {
        let atoms: Option<Vec<Atom>> = labels.iter().map(|l| self.atoms.get(l)).collect();
        let atoms = atoms?;
        self.owners.values().find_map(|owner| {
            owner
                .iter()
                .find(|(s, labels)| s.family == family && labels.is(&atoms))
                .map(|(s, _)| s.value)
        })
    }

    /// Every series as a sorted exposition line (`name{labels} value`), for tests and
    /// diagnostics.
    pub fn render(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .owners
            .values()
            .flat_map(|owner| {
                owner.iter().map(|(s, labels)| {
                    render_sample(s.family, labels.iter().map(|a| self.atoms.text(a)), s.value)
                })
            })
            .collect();
        lines.sort();
        lines
    }

    /// Takes pending changes as one delta batch (sequence number left at 0 for the link to
    /// assign), estimated to encode within `max_frame_bytes`, or `None` when nothing is
    /// pending. A definition travels with its value. Call it until `None` to send everything;
    /// only one batch is ever materialised, so a backlog of 300,000 new series (the first
    /// list of a big cluster) costs one frame's worth of memory at a time.
    pub fn take_delta(&mut self, max_frame_bytes: usize) -> Option<Batch> {
        let mut batch = BatchBuilder::new();
        while batch.is_empty() && !self.pending.is_empty() {
            let mut taken = Vec::new();
            for (&id, &change) in &self.pending {
                let Some(item) = self.item(id, change) else {
                    // Its owner changed since: nothing to send.
                    taken.push(id);
                    continue;
                };
                if !batch.fits(&item, max_frame_bytes) && !batch.is_empty() {
                    break;
                }
                batch.push(item);
                taken.push(id);
            }
            for id in taken {
                self.pending.remove(&id);
            }
        }
        // A burst must not keep its table allocated.
        if self.pending.is_empty() && self.pending.capacity() > SHRINK_ABOVE {
            self.pending = HashMap::new();
        }
        (!batch.is_empty()).then(|| batch.finish(self.changed_at_ms))
    }

    /// Every pending change as delta batches (see [`SeriesStore::take_delta`]).
    pub fn take_deltas(&mut self, max_frame_bytes: usize) -> Vec<Batch> {
        std::iter::from_fn(|| self.take_delta(max_frame_bytes)).collect()
    }

    /// The batch item for a pending change, if its series still exists.
    fn item(&self, id: SeriesId, change: Pending) -> Option<Item> {
        match change {
            Pending::Remove => Some(Item::Remove(id)),
            Pending::Update(k) | Pending::Define(k) => {
                let (s, labels) = self.owners.get(&k)?.find(id)?;
                Some(if matches!(change, Pending::Define(_)) {
                    Item::Define(self.series_def(s, labels), s.value)
                } else {
                    Item::Update(id, s.value)
                })
            }
        }
    }

    fn series_def(&self, s: &Stored, labels: Labels<'_>) -> SeriesDef {
        SeriesDef {
            id: s.id,
            family: s.family.id(),
            labels: s
                .family
                .label_names()
                .iter()
                .zip(labels.iter())
                .map(|(name, atom)| ((*name).to_owned(), self.atoms.text(atom).to_owned()))
                .collect(),
        }
    }

    /// Starts a full snapshot: pending deltas are dropped (the snapshot carries current
    /// values), and from now on only owners the snapshot has passed record deltas.
    pub fn begin_snapshot(&mut self) {
        self.pending = HashMap::new();
        self.snapshot = Some(Cursor::START);
        // The receiver gets every current series from it: nothing removed before it needs
        // describing any more.
        self.base = None;
        self.clear_tombstones();
    }

    /// The next part of the snapshot begun with [`SeriesStore::begin_snapshot`], estimated
    /// to encode within `max_frame_bytes` (an owner is never split across parts), or `None`
    /// when no snapshot is under way. The first parts define every family, before any
    /// series; the part marked `last` ends the snapshot.
    pub fn next_snapshot_part(&mut self, max_frame_bytes: usize) -> Option<Batch> {
        let cursor = self.snapshot?;
        let first = matches!(cursor, Cursor::Families(0));
        let mut batch = BatchBuilder::new();
        if let Cursor::Families(from) = cursor {
            let next = batch.define_families(from, max_frame_bytes);
            if next < Family::ALL.len() {
                self.snapshot = Some(Cursor::Families(next));
                let mut out = batch.finish(now_ms());
                out.snapshot = Some(SnapshotPart { first, last: false });
                return Some(out);
            }
        }
        let mut last_key = None;
        let mut done = true;
        for (k, owner) in self.owners.range((cursor.owners_from(), Bound::Unbounded)) {
            let items: Vec<Item> = owner
                .iter()
                .map(|(s, labels)| Item::Define(self.series_def(s, labels), s.value))
                .collect();
            let size: usize = items.iter().map(Item::size).sum();
            if batch.size + size > max_frame_bytes && !batch.is_empty_of_all() {
                done = false;
                break;
            }
            items.into_iter().for_each(|item| batch.push(item));
            last_key = Some(*k);
        }
        self.snapshot = if done {
            None
        } else {
            // Nothing fitted beside the last families: owners from the start next time.
            Some(last_key.map_or(Cursor::Families(Family::ALL.len()), Cursor::After))
        };
        let mut out = batch.finish(now_ms());
        out.snapshot = Some(SnapshotPart { first, last: done });
        Some(out)
    }

    /// Ids left before the id space is exhausted.
    fn id_space_left(&self) -> u64 {
        u64::from(SeriesId::MAX) - u64::from(self.next_id)
    }

    /// Renumbers every series from 0 under a new epoch (series ids ran out). Pending changes
    /// are dropped: the link sees the new epoch and sends a snapshot.
    fn renumber(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.pending.clear();
        self.snapshot = None;
        self.base = None;
        self.clear_tombstones();
        let mut next = 0;
        for owner in self.owners.values_mut() {
            for s in owner.series_mut() {
                s.id = next;
                next += 1;
            }
        }
        self.next_id = next;
        tracing::info!(
            epoch = self.epoch,
            series = self.series,
            "series ids renumbered"
        );
    }

    #[cfg(test)]
    fn with_next_id(epoch: u64, next_id: SeriesId) -> Self {
        SeriesStore {
            next_id,
            ..SeriesStore::new(epoch)
        }
    }
}

/// One change headed for a batch.
enum Item {
    Define(SeriesDef, f64),
    /// A definition without a value (a base).
    Describe(SeriesDef),
    Update(SeriesId, f64),
    Remove(SeriesId),
}

impl Item {
    fn size(&self) -> usize {
        match self {
            Item::Define(def, _) => {
                15 + def
                    .labels
                    .iter()
                    .map(|(n, v)| size::string(n) + size::string(v))
                    .sum::<usize>()
                    + size::UPDATE
            }
            Item::Describe(def) => {
                15 + def
                    .labels
                    .iter()
                    .map(|(n, v)| size::string(n) + size::string(v))
                    .sum::<usize>()
            }
            Item::Update(..) => size::UPDATE,
            Item::Remove(_) => size::REMOVAL,
        }
    }
}

/// Now, in milliseconds since the Unix epoch (0 for a clock before 1970).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct BatchBuilder {
    families: Vec<FamilyDef>,
    series: Vec<SeriesDef>,
    updates: Vec<(SeriesId, Value)>,
    removals: Vec<SeriesId>,
    size: usize,
}

impl BatchBuilder {
    fn new() -> Self {
        BatchBuilder {
            families: Vec::new(),
            series: Vec::new(),
            updates: Vec::new(),
            removals: Vec::new(),
            size: size::BATCH,
        }
    }

    fn is_empty(&self) -> bool {
        self.series.is_empty() && self.updates.is_empty() && self.removals.is_empty()
    }

    /// Defines the families from index `from` on, as many as fit within `max` (at least
    /// one), for the first parts of a snapshot or a base; returns the index of the first
    /// left out (`Family::ALL.len()` when none is).
    fn define_families(&mut self, from: usize, max: usize) -> usize {
        let mut next = from;
        for family in Family::ALL.iter().skip(from) {
            let def = family.def();
            let size = 5 + size::string(&def.name) + size::string(&def.help) + 1;
            if self.size + size > max && !self.families.is_empty() {
                break;
            }
            self.size += size;
            self.families.push(def);
            next += 1;
        }
        next
    }

    /// True when nothing at all was added, families included.
    fn is_empty_of_all(&self) -> bool {
        self.is_empty() && self.families.is_empty()
    }

    fn fits(&self, item: &Item, max: usize) -> bool {
        self.size + item.size() <= max
    }

    fn push(&mut self, item: Item) {
        self.size += item.size();
        match item {
            Item::Define(def, value) => {
                self.updates.push((def.id, Value::from(value)));
                self.series.push(def);
            }
            Item::Describe(def) => self.series.push(def),
            Item::Update(id, value) => self.updates.push((id, Value::from(value))),
            Item::Remove(id) => self.removals.push(id),
        }
    }

    fn finish(mut self, observed_at_ms: u64) -> Batch {
        self.series.sort_unstable_by_key(|d| d.id);
        self.removals.sort_unstable();
        Batch {
            seq: 0,
            observed_at_ms,
            snapshot: None,
            families: self.families,
            series: self.series,
            updates: Updates::from_unsorted(self.updates),
            removals: self.removals,
        }
    }
}

#[cfg(test)]
mod tests {
    use kube_relay_proto::{SenderMessage, frame::encode_payload};

    use super::*;

    fn pod_key(name: &str) -> ObjectKey {
        ObjectKey::new(ObjectKind::Pod, "default", name)
    }

    /// A pod's phase series, one-hot.
    fn phases<'a>(pod: &'a str, phase: &str) -> SeriesSet<'a> {
        let mut set = SeriesSet::new();
        let prefix = ["default".into(), pod.into(), format!("uid-{pod}").into()];
        set.push_one_hot(
            Family::PodStatusPhase,
            &prefix,
            &["Pending", "Running", "Succeeded", "Failed", "Unknown"],
            phase,
        );
        set
    }

    fn delta(store: &mut SeriesStore) -> Batch {
        let mut batches = store.take_deltas(1 << 20);
        assert_eq!(batches.len(), 1, "{batches:?}");
        batches.remove(0)
    }

    /// The first part of the snapshot under way that carries series (the families come
    /// first, over as many parts as they need).
    fn first_part_with_series(store: &mut SeriesStore, max: usize) -> Batch {
        loop {
            let part = store.next_snapshot_part(max).expect("a part");
            if !part.series.is_empty() {
                return part;
            }
        }
    }

    fn values(batch: &Batch) -> Vec<(SeriesId, f64)> {
        batch
            .updates
            .iter()
            .map(|(id, v)| (*id, v.as_f64()))
            .collect()
    }

    #[test]
    fn a_new_object_defines_its_series_with_values() {
        let mut store = SeriesStore::new(1);
        assert!(store.apply(&pod_key("web"), &phases("web", "Pending")));
        let batch = delta(&mut store);
        assert_eq!(batch.series.len(), 5);
        assert_eq!(
            batch.series[0].labels,
            [
                ("namespace".to_owned(), "default".to_owned()),
                ("pod".to_owned(), "web".to_owned()),
                ("uid".to_owned(), "uid-web".to_owned()),
                ("phase".to_owned(), "Pending".to_owned()),
            ]
        );
        assert_eq!(
            values(&batch),
            [(0, 1.0), (1, 0.0), (2, 0.0), (3, 0.0), (4, 0.0)]
        );
        assert!(batch.removals.is_empty());
        assert!(store.take_deltas(1 << 20).is_empty(), "nothing left");
    }

    #[test]
    fn a_changed_object_sends_only_changed_values() {
        let mut store = SeriesStore::new(1);
        store.apply(&pod_key("web"), &phases("web", "Pending"));
        delta(&mut store);
        store.apply(&pod_key("web"), &phases("web", "Running"));
        let batch = delta(&mut store);
        assert!(batch.series.is_empty());
        assert_eq!(values(&batch), [(0, 0.0), (1, 1.0)]);
        assert!(
            !store.apply(&pod_key("web"), &phases("web", "Running")),
            "same set, no change"
        );
        assert!(store.take_deltas(1 << 20).is_empty());
    }

    #[test]
    fn changes_coalesce_to_the_latest_value() {
        let mut store = SeriesStore::new(1);
        store.apply(&pod_key("web"), &phases("web", "Pending"));
        delta(&mut store);
        store.apply(&pod_key("web"), &phases("web", "Running"));
        store.apply(&pod_key("web"), &phases("web", "Failed"));
        store.apply(&pod_key("web"), &phases("web", "Running"));
        let batch = delta(&mut store);
        assert_eq!(values(&batch), [(0, 0.0), (1, 1.0), (3, 0.0)]);
    }

    #[test]
    fn a_deleted_object_removes_all_its_series_at_once() {
        let mut store = SeriesStore::new(1);
        store.apply(&pod_key("web"), &phases("web", "Running"));
        store.apply(&pod_key("db"), &phases("db", "Running"));
        delta(&mut store);
        assert!(store.remove(&pod_key("web")));
        assert!(!store.remove(&pod_key("web")), "already gone");
        let batch = delta(&mut store);
        assert_eq!(batch.removals, [0, 1, 2, 3, 4]);
        assert!(batch.updates.is_empty());
        assert_eq!(store.len(), 5);
        assert_eq!(store.owners(), 1);
    }

    #[test]
    fn a_series_born_and_gone_between_flushes_is_never_sent() {
        let mut store = SeriesStore::new(1);
        store.apply(&pod_key("web"), &phases("web", "Running"));
        store.remove(&pod_key("web"));
        assert!(store.take_deltas(1 << 20).is_empty());
        assert!(store.is_empty());
        assert_eq!(store.distinct_label_values(), 0, "labels freed");
    }

    #[test]
    fn replacing_a_label_value_removes_the_old_series_and_defines_a_new_one() {
        let mut store = SeriesStore::new(1);
        let key = ObjectKey::new(ObjectKind::Pod, "default", "web");
        let waiting = |reason: &'static str| {
            let mut set = SeriesSet::new();
            set.push(
                Family::PodContainerStatusWaitingReason,
                ["default", "web", "u", "app", reason],
                1.0,
            );
            set
        };
        store.apply(&key, &waiting("ContainerCreating"));
        delta(&mut store);
        store.apply(&key, &waiting("CrashLoopBackOff"));
        let batch = delta(&mut store);
        assert_eq!(batch.removals, [0]);
        assert_eq!(batch.series.len(), 1);
        assert_eq!(batch.series[0].id, 1);
        assert_eq!(batch.series[0].labels[4].1, "CrashLoopBackOff");
        assert_eq!(
            store.render(),
            [
                r#"kube_pod_container_status_waiting_reason{namespace="default",pod="web",uid="u",container="app",reason="CrashLoopBackOff"} 1"#
            ]
        );
    }

    #[test]
    fn relist_keeps_listed_objects_and_removes_the_rest() {
        let mut store = SeriesStore::new(1);
        for pod in ["a", "b", "c"] {
            store.apply(&pod_key(pod), &phases(pod, "Running"));
        }
        store.apply(
            &ObjectKey::new(ObjectKind::PodUsage, "default", "b"),
            &phases("b", "Running"),
        );
        let removed = store.retain(ObjectKind::Pod, |_, name| name != "b");
        assert_eq!(removed, [pod_key("b")]);
        assert_eq!(store.keys(ObjectKind::Pod).len(), 2);
        assert_eq!(
            store.keys(ObjectKind::PodUsage).len(),
            1,
            "other kinds kept"
        );
    }

    #[test]
    fn value_reads_one_series() {
        let mut store = SeriesStore::new(1);
        store.apply(&pod_key("web"), &phases("web", "Running"));
        let running = ["default", "web", "uid-web", "Running"];
        assert_eq!(store.value(Family::PodStatusPhase, &running), Some(1.0));
        assert_eq!(store.value(Family::PodStatusReady, &running), None);
    }

    #[test]
    fn deltas_split_below_the_frame_limit_and_really_encode_within_it() {
        let mut store = SeriesStore::new(1);
        let names: Vec<String> = (0..200).map(|i| format!("pod-{i:04}")).collect();
        for name in &names {
            store.apply(&pod_key(name), &phases(name, "Pending"));
        }
        let limit = 4096;
        let batches = store.take_deltas(limit);
        assert!(batches.len() > 1);
        let defined: usize = batches.iter().map(|b| b.series.len()).sum();
        assert_eq!(defined, 1000);
        for batch in batches {
            // Every definition travels with its value.
            let ids: Vec<SeriesId> = batch.series.iter().map(|s| s.id).collect();
            let updated: Vec<SeriesId> = batch.updates.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, updated);
            let len = encode_payload(&SenderMessage::Batch(batch))
                .expect("encode")
                .len();
            assert!(len <= limit, "{len} > {limit}");
        }
    }

    #[test]
    fn a_snapshot_defines_families_and_every_series_in_parts() {
        let mut store = SeriesStore::new(1);
        let names: Vec<String> = (0..100).map(|i| format!("pod-{i:03}")).collect();
        for name in &names {
            store.apply(&pod_key(name), &phases(name, "Running"));
        }
        store.begin_snapshot();
        assert_eq!(store.pending(), 0, "the snapshot supersedes deltas");
        let mut parts = Vec::new();
        while let Some(part) = store.next_snapshot_part(8192) {
            let len = encode_payload(&SenderMessage::Batch(part.clone()))
                .expect("encode")
                .len();
            assert!(len <= 8192, "{len}");
            parts.push(part);
        }
        assert!(parts.len() > 2);
        let marks: Vec<_> = parts.iter().map(|p| p.snapshot.expect("marked")).collect();
        assert!(marks[0].first && !marks[0].last);
        assert!(
            marks[1..marks.len() - 1]
                .iter()
                .all(|m| !m.first && !m.last)
        );
        assert!(marks[marks.len() - 1].last);
        assert_eq!(parts[0].families.len(), Family::ALL.len());
        assert!(parts[1..].iter().all(|p| p.families.is_empty()));
        let mut ids: Vec<SeriesId> = parts
            .iter()
            .flat_map(|p| p.series.iter().map(|s| s.id))
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..500).collect::<Vec<_>>());
        assert!(!store.snapshot_in_progress());
    }

    #[test]
    fn at_the_smallest_frame_limit_the_families_spread_over_parts_and_every_part_fits() {
        let limit = 4096; // the least --max-frame-bytes; the families alone encode larger
        let mut store = SeriesStore::new(1);
        for name in ["a", "b", "c"] {
            store.apply(&pod_key(name), &phases(name, "Running"));
        }
        store.begin_snapshot();
        let mut parts = Vec::new();
        while let Some(part) = store.next_snapshot_part(limit) {
            let len = encode_payload(&SenderMessage::Batch(part.clone()))
                .expect("encode")
                .len();
            assert!(len <= limit, "{len} > {limit}");
            parts.push(part);
        }
        let families: usize = parts.iter().map(|p| p.families.len()).sum();
        assert_eq!(families, Family::ALL.len());
        let first_series = parts
            .iter()
            .position(|p| !p.series.is_empty())
            .expect("series");
        let last_families = parts
            .iter()
            .rposition(|p| !p.families.is_empty())
            .expect("families");
        assert!(last_families <= first_series, "families before any series");
        assert_eq!(parts.iter().map(|p| p.series.len()).sum::<usize>(), 15);
        assert!(parts[0].snapshot.is_some_and(|p| p.first));
        assert!(parts[parts.len() - 1].snapshot.is_some_and(|p| p.last));
    }

    #[test]
    fn an_empty_store_snapshots_as_one_part_with_families() {
        let mut store = SeriesStore::new(1);
        store.begin_snapshot();
        let part = store.next_snapshot_part(1 << 20).expect("one part");
        assert_eq!(
            part.snapshot,
            Some(SnapshotPart {
                first: true,
                last: true
            })
        );
        assert_eq!(part.families.len(), Family::ALL.len());
        assert!(store.next_snapshot_part(1 << 20).is_none());
    }

    #[test]
    fn changes_during_a_snapshot_become_deltas_only_behind_the_cursor() {
        let mut store = SeriesStore::new(1);
        let names: Vec<String> = (0..40).map(|i| format!("pod-{i:02}")).collect();
        for name in &names {
            store.apply(&pod_key(name), &phases(name, "Pending"));
        }
        store.begin_snapshot();
        let first = first_part_with_series(&mut store, 6000);
        assert!(!first.snapshot.expect("marked").last);
        let sent: Vec<String> = first.series.iter().map(|s| s.labels[1].1.clone()).collect();
        let behind = sent[0].clone();
        let ahead = names
            .iter()
            .find(|n| !sent.contains(n))
            .expect("a pod not yet sent")
            .clone();
        // Both change; one of them is also deleted and re-created.
        store.apply(&pod_key(&behind), &phases(&behind, "Running"));
        store.apply(&pod_key(&ahead), &phases(&ahead, "Running"));
        let mut rest = Vec::new();
        while let Some(part) = store.next_snapshot_part(6000) {
            rest.push(part);
        }
        // The pod ahead of the cursor went out with its new value in the snapshot...
        let ahead_running = rest
            .iter()
            .flat_map(|p| p.series.iter().map(move |s| (s, p)))
            .find(|(s, _)| s.labels[1].1 == ahead && s.labels[3].1 == "Running")
            .map(|(s, p)| {
                p.updates
                    .iter()
                    .find(|(id, _)| *id == s.id)
                    .map(|(_, v)| v.as_f64())
            });
        assert_eq!(ahead_running, Some(Some(1.0)));
        // ...and only the pod behind it is a delta.
        let batch = delta(&mut store);
        assert_eq!(batch.updates.len(), 2);
        assert!(batch.series.is_empty());
    }

    #[test]
    fn removals_during_a_snapshot_ahead_of_the_cursor_are_not_sent() {
        let mut store = SeriesStore::new(1);
        let names: Vec<String> = (0..40).map(|i| format!("pod-{i:02}")).collect();
        for name in &names {
            store.apply(&pod_key(name), &phases(name, "Pending"));
        }
        store.begin_snapshot();
        let first = first_part_with_series(&mut store, 6000);
        let sent: Vec<&str> = first
            .series
            .iter()
            .map(|s| s.labels[1].1.as_str())
            .collect();
        let ahead = names
            .iter()
            .find(|n| !sent.contains(&n.as_str()))
            .expect("unsent");
        store.remove(&pod_key(ahead));
        while store.next_snapshot_part(6000).is_some() {}
        assert!(store.take_deltas(1 << 20).is_empty());
    }

    #[test]
    fn running_out_of_ids_renumbers_under_a_new_epoch() {
        let mut store = SeriesStore::with_next_id(7, SeriesId::MAX - 6);
        store.apply(&pod_key("a"), &phases("a", "Running"));
        assert_eq!(store.epoch(), 7);
        store.apply(&pod_key("b"), &phases("b", "Running"));
        assert_eq!(store.epoch(), 8);
        store.begin_snapshot();
        let part = store.next_snapshot_part(1 << 20).expect("part");
        let mut ids: Vec<SeriesId> = part.series.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..10).collect::<Vec<_>>());
    }

    /// Lets the wall clock move on by a few milliseconds (stamps are in ms).
    fn tick() {
        std::thread::sleep(std::time::Duration::from_millis(15));
    }

    #[test]
    fn a_delta_carries_the_time_its_newest_change_was_recorded_not_when_it_is_taken() {
        let mut store = SeriesStore::new(1);
        store.apply(&pod_key("web"), &phases("web", "Pending"));
        store.take_deltas(1 << 20);
        let before = now_ms();
        store.apply(&pod_key("web"), &phases("web", "Running"));
        store.apply(&pod_key("db"), &phases("db", "Running"));
        let recorded = now_ms();
        tick();
        let batches = store.take_deltas(300);
        assert!(batches.len() > 1, "coalesced changes split over frames");
        for batch in &batches {
            assert!(
                (before..=recorded).contains(&batch.observed_at_ms),
                "{} not in {before}..={recorded}",
                batch.observed_at_ms
            );
        }
        // A removal is a change at its own time.
        tick();
        let removed_after = now_ms();
        store.remove(&pod_key("db"));
        tick();
        assert!(delta(&mut store).observed_at_ms >= removed_after);
    }

    #[test]
    fn changes_the_link_will_not_carry_do_not_move_the_time() {
        let mut store = SeriesStore::new(1);
        let names: Vec<String> = (0..40).map(|i| format!("pod-{i:02}")).collect();
        for name in &names {
            store.apply(&pod_key(name), &phases(name, "Pending"));
        }
        store.begin_snapshot();
        let first = first_part_with_series(&mut store, 6000);
        let behind = first.series[0].labels[1].1.clone();
        store.apply(&pod_key(&behind), &phases(&behind, "Running"));
        let recorded = now_ms();
        tick();
        // Owners ahead of the cursor go out in the snapshot itself, not in a delta.
        let ahead: Vec<&String> = names
            .iter()
            .filter(|n| !first.series.iter().any(|s| &s.labels[1].1 == *n))
            .collect();
        for name in &ahead {
            store.apply(&pod_key(name), &phases(name, "Failed"));
        }
        store.remove(&pod_key(ahead[0]));
        let mut parts = Vec::new();
        while let Some(part) = store.next_snapshot_part(6000) {
            parts.push(part);
        }
        let batch = delta(&mut store);
        assert_eq!(batch.updates.len(), 2, "only the pod behind the cursor");
        assert!(
            batch.observed_at_ms <= recorded,
            "{} > {recorded}",
            batch.observed_at_ms
        );
    }

    #[test]
    fn each_snapshot_part_carries_the_time_it_was_taken() {
        let mut store = SeriesStore::new(1);
        let names: Vec<String> = (0..40).map(|i| format!("pod-{i:02}")).collect();
        for name in &names {
            store.apply(&pod_key(name), &phases(name, "Pending"));
        }
        let applied = now_ms();
        tick();
        store.begin_snapshot();
        let first = first_part_with_series(&mut store, 6000);
        assert!(
            first.observed_at_ms > applied,
            "taken now, not when recorded"
        );
        tick();
        let second = store.next_snapshot_part(6000).expect("next part");
        assert!(second.observed_at_ms > first.observed_at_ms);
    }

    #[test]
    fn the_interner_finds_texts_by_hash_and_reuses_freed_atoms() {
        let mut atoms = Interner::default();
        let a = atoms.acquire("a");
        let b = atoms.acquire("b");
        assert_eq!(atoms.acquire("a"), a);
        atoms.release(a);
        assert_eq!(atoms.get("a"), Some(a), "one reference left");
        atoms.release(a);
        assert_eq!((atoms.get("a"), atoms.len()), (None, 1));
        let c = atoms.acquire("c");
        assert_eq!(c, a, "the freed atom is reused");
        assert_eq!((atoms.text(c), atoms.text(b)), ("c", "b"));
        assert_eq!((atoms.get("c"), atoms.get("b")), (Some(c), Some(b)));
        // Many more than the table's first capacity: found after every growth.
        let many: Vec<Atom> = (0..10_000)
            .map(|i| atoms.acquire(&format!("v{i}")))
            .collect();
        assert!((0..10_000).all(|i| atoms.get(&format!("v{i}")) == Some(many[i])));
    }

    #[test]
    fn interned_labels_are_shared_and_freed() {
        let mut store = SeriesStore::new(1);
        store.apply(&pod_key("web"), &phases("web", "Running"));
        // default, web, uid-web and five phases.
        assert_eq!(store.distinct_label_values(), 8);
        store.apply(&pod_key("db"), &phases("db", "Running"));
        assert_eq!(store.distinct_label_values(), 10);
        store.remove(&pod_key("web"));
        store.remove(&pod_key("db"));
        assert_eq!(store.distinct_label_values(), 0);
    }
}
