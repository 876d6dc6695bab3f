//! Series id → slot index, and the cheap hasher for maps keyed by series id.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use kube_relay_proto::SeriesId;

/// Series id → slot. Senders number series densely from 0, so small ids are looked up in a
/// plain vector; any other id goes to a hash map. The vector only grows while at least a
/// quarter of it would be in use (and never past [`DENSE_IDS`]), so its memory follows the
/// number of series, whatever ids a sender picks: a sender defining series 0 and 4,000,000
/// costs two entries, not 16 MiB.
#[derive(Debug, Default)]
pub(crate) struct IdIndex {
    /// `slot + 1` per id, 0 for none.
    dense: Vec<u32>,
    /// Ids that did not fit the vector when they were inserted.
    sparse: HashMap<SeriesId, u32, BuildHasherDefault<IdHasher>>,
    len: usize,
}

/// Ids at or above this always use [`IdIndex`]'s map (at most 16 MiB of vector per cluster).
pub(crate) const DENSE_IDS: SeriesId = 1 << 22;

/// The vector may always grow to this many ids.
const DENSE_FLOOR: usize = 4096;

impl IdIndex {
    /// The slot of `id`, if it is defined.
    #[inline]
    pub(crate) fn get(&self, id: SeriesId) -> Option<u32> {
        match self.dense.get(id as usize) {
            Some(&v) if v > 0 => Some(v - 1),
            _ if self.sparse.is_empty() => None,
            _ => self.sparse.get(&id).copied(),
        }
    }

    /// Maps `id` (not currently defined) to `slot`.
    pub(crate) fn insert(&mut self, id: SeriesId, slot: u32) {
        let i = id as usize;
        let limit = (4 * (self.len + 1)).max(DENSE_FLOOR);
        if i < self.dense.len() {
            self.dense[i] = slot + 1;
        } else if id < DENSE_IDS && i < limit {
            self.dense.resize((i + 1).next_power_of_two(), 0);
            self.dense[i] = slot + 1;
        } else {
            self.sparse.insert(id, slot);
        }
        self.len += 1;
    }

    /// Forgets `id`; returns its slot.
    pub(crate) fn remove(&mut self, id: SeriesId) -> Option<u32> {
        let slot = match self.dense.get_mut(id as usize) {
            Some(v) if *v > 0 => std::mem::take(v).checked_sub(1),
            _ => self.sparse.remove(&id),
        };
        if slot.is_some() {
            self.len -= 1;
        }
        slot
    }

    /// Bytes of index held (for tests of the bound).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.dense.capacity() * 4 + self.sparse.capacity() * 8
    }
}

/// A fast hasher for `u32` series ids (Fibonacci hashing); ids come from the sender, but a
/// hostile sender can at worst slow down its own cluster's map.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_u32(&mut self, i: u32) {
        let x = (u64::from(i) ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_index_handles_dense_and_sparse_ids() {
        let mut index = IdIndex::default();
        for (id, slot) in [
            (0, 5),
            (7, 6),
            (DENSE_IDS - 1, 7),
            (DENSE_IDS, 8),
            (u32::MAX, 9),
        ] {
            assert_eq!(index.get(id), None);
            index.insert(id, slot);
            assert_eq!(index.get(id), Some(slot));
        }
        assert_eq!(index.get(1), None);
        assert_eq!(index.remove(7), Some(6));
        assert_eq!(index.remove(7), None);
        assert_eq!(index.remove(u32::MAX), Some(9));
        assert_eq!(index.get(u32::MAX), None);
        assert_eq!(index.get(DENSE_IDS), Some(8));
        assert_eq!(index.remove(123_456), None);
    }

    #[test]
    fn scattered_ids_cost_memory_per_series_not_per_id() {
        let mut index = IdIndex::default();
        for k in 0..100u32 {
            index.insert(k * 40_000, k);
        }
        assert!(index.bytes() < 64 * 1024, "{} bytes", index.bytes());
        for k in 0..100u32 {
            assert_eq!(index.get(k * 40_000), Some(k));
        }
        // Dense ids still land in the vector, also after the scattered ones.
        for id in 1..10_000u32 {
            index.insert(id, id);
        }
        assert!(index.sparse.len() < 100);
        assert_eq!(index.get(9_999), Some(9_999));
        assert_eq!(index.get(40_000), Some(1));
        assert_eq!(index.remove(40_000), Some(1));
        assert_eq!(index.get(40_000), None);
        assert_eq!(index.len, 100 + 9_999 - 1);
    }
}
