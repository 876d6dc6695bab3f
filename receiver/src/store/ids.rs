//! Series id → slot index, and the cheap hasher for maps keyed by series id.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use kube_relay_proto::SeriesId;

/// Series id → slot. Senders number series densely from 0, so ids below [`DENSE_IDS`] are
/// looked up in a plain vector (4 bytes per id up to the highest id used); any larger id
/// goes to a hash map, so a sender with sparse ids costs memory per series, not per id.
#[derive(Debug, Default)]
pub(crate) struct IdIndex {
    /// `slot + 1` per id, 0 for none.
    dense: Vec<u32>,
    sparse: HashMap<SeriesId, u32, BuildHasherDefault<IdHasher>>,
}

/// Ids below this use [`IdIndex`]'s vector (at most 16 MiB of index per cluster).
pub(crate) const DENSE_IDS: SeriesId = 1 << 22;

impl IdIndex {
    pub(crate) fn get(&self, id: SeriesId) -> Option<u32> {
        match self.dense.get(id as usize) {
            Some(&v) => v.checked_sub(1),
            None if id < DENSE_IDS => None,
            None => self.sparse.get(&id).copied(),
        }
    }

    pub(crate) fn insert(&mut self, id: SeriesId, slot: u32) {
        if id < DENSE_IDS {
            let i = id as usize;
            if i >= self.dense.len() {
                self.dense.resize((i + 1).next_power_of_two(), 0);
            }
            self.dense[i] = slot + 1;
        } else {
            self.sparse.insert(id, slot);
        }
    }

    pub(crate) fn remove(&mut self, id: SeriesId) -> Option<u32> {
        if id < DENSE_IDS {
            let v = std::mem::take(self.dense.get_mut(id as usize)?);
            v.checked_sub(1)
        } else {
            self.sparse.remove(&id)
        }
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
}
