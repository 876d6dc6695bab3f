//! A vector kept in fixed-size chunks behind `Arc`s, copied on write, so a scrape can take a
//! consistent copy of a cluster's series in microseconds and encode it without any lock.
//!
//! Cloning a [`Chunks`] clones one `Arc` per [`CHUNK`] elements. A writer that finds a chunk
//! shared (a scrape still reads it) copies that chunk first; every other chunk stays shared.
//! So a scrape of 1 M series costs ingest at most one copy of each chunk it touches while the
//! scrape runs, instead of waiting for the whole encode.

use std::sync::Arc;

/// Elements per chunk: small enough that copying one is a few microseconds, large enough
/// that a snapshot of 1 M elements is about a thousand `Arc` clones.
pub(crate) const CHUNK: usize = 1024;

/// A growable vector of `T` in copy-on-write chunks.
#[derive(Debug, Clone)]
pub(crate) struct Chunks<T> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T> Default for Chunks<T> {
    fn default() -> Self {
        Chunks {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone> Chunks<T> {
    /// Number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The element at `i`, if any.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    /// The element at `i` for writing (its chunk copied first if a snapshot shares it).
    #[inline]
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        let chunk = self.chunks.get_mut(i / CHUNK)?;
        if i % CHUNK >= chunk.len() {
            return None;
        }
        make_mut(chunk).get_mut(i % CHUNK)
    }

    /// Appends `value`.
    pub(crate) fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => make_mut(last).push(value),
            _ => {
                // Grown as a Vec grows (4, 8, ... up to CHUNK), not allocated at CHUNK: a
                // cluster of 100 series would otherwise hold 68 KiB of empty slots (series,
                // values, family members), 680 B per series held (the fan-in bench).
                self.chunks.push(Arc::new(vec![value]));
            }
        }
        self.len += 1;
    }

    /// Removes and returns the last element.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let last = self.chunks.last_mut()?;
        let value = make_mut(last).pop();
        if last.is_empty() {
            self.chunks.pop();
        }
        if value.is_some() {
            self.len -= 1;
        }
        value
    }

    /// Removes the element at `i`, moving the last one into its place; returns the removed
    /// element.
    pub(crate) fn swap_remove(&mut self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        let last = self.pop()?;
        if i == self.len {
            return Some(last);
        }
        self.get_mut(i).map(|slot| std::mem::replace(slot, last))
    }

    /// The elements in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter())
    }
}

/// The chunk, copied first (with its capacity, so pushes do not reallocate) if shared.
#[inline]
fn make_mut<T: Clone>(chunk: &mut Arc<Vec<T>>) -> &mut Vec<T> {
    if Arc::get_mut(chunk).is_none() {
        copy(chunk);
    }
    // Unique now: either it was, or `copy` replaced it with a fresh Arc.
    Arc::get_mut(chunk).unwrap_or_else(|| unreachable!("a fresh Arc is unique"))
}

#[cold]
fn copy<T: Clone>(chunk: &mut Arc<Vec<T>>) {
    let mut copy = Vec::with_capacity(chunk.capacity());
    copy.extend_from_slice(chunk);
    *chunk = Arc::new(copy);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_vec_across_chunk_boundaries() {
        let mut chunks = Chunks::default();
        let mut plain = Vec::new();
        for i in 0..(3 * CHUNK as u32 + 7) {
            chunks.push(i);
            plain.push(i);
        }
        for i in [0, 5, CHUNK, 2 * CHUNK + 3] {
            assert_eq!(chunks.swap_remove(i), Some(plain.swap_remove(i)));
        }
        for _ in 0..2 {
            let last = plain.len() - 1;
            assert_eq!(chunks.swap_remove(last), Some(plain.swap_remove(last)));
        }
        assert_eq!(chunks.swap_remove(plain.len()), None);
        if let Some(v) = chunks.get_mut(CHUNK + 1) {
            *v = 99;
        }
        plain[CHUNK + 1] = 99;
        assert_eq!(chunks.len(), plain.len());
        assert!(chunks.iter().eq(plain.iter()));
        assert_eq!(chunks.get(plain.len()), None);
        while let Some(v) = chunks.pop() {
            assert_eq!(Some(v), plain.pop());
        }
        assert_eq!(chunks.len(), 0);
    }

    #[test]
    fn a_small_vector_holds_about_what_it_stores() {
        let mut chunks = Chunks::default();
        for i in 0..100u32 {
            chunks.push(i);
        }
        let copied = {
            let _view = chunks.clone();
            if let Some(v) = chunks.get_mut(0) {
                *v = 1;
            }
            chunks.chunks[0].capacity()
        };
        chunks.push(100);
        assert!(
            copied < 2 * 100,
            "a copied chunk has capacity {copied} for 100 elements"
        );
        assert!(chunks.chunks[0].capacity() < 2 * 101);
        assert!(
            chunks
                .iter()
                .copied()
                .eq((0..101).map(|i| if i == 0 { 1 } else { i }))
        );
    }

    #[test]
    fn a_snapshot_keeps_its_values_and_only_written_chunks_are_copied() {
        let mut chunks = Chunks::default();
        for i in 0..(3 * CHUNK as u32) {
            chunks.push(i);
        }
        let snapshot = chunks.clone();
        if let Some(v) = chunks.get_mut(3) {
            *v = 7_000;
        }
        assert_eq!(chunks.swap_remove(CHUNK), Some(CHUNK as u32));
        assert_eq!(snapshot.get(3), Some(&3));
        assert!(snapshot.iter().copied().eq(0..(3 * CHUNK as u32)));
        assert_eq!(chunks.get(3), Some(&7_000));
        assert_eq!(chunks.get(CHUNK), Some(&(3 * CHUNK as u32 - 1)));
        assert!(!Arc::ptr_eq(&chunks.chunks[0], &snapshot.chunks[0]));
        assert!(!Arc::ptr_eq(&chunks.chunks[1], &snapshot.chunks[1]));
        assert!(!Arc::ptr_eq(&chunks.chunks[2], &snapshot.chunks[2]));
        let unshared = chunks.clone();
        drop(snapshot);
        if let Some(v) = chunks.get_mut(1) {
            *v = 1;
        }
        assert!(
            Arc::ptr_eq(&chunks.chunks[2], &unshared.chunks[2]),
            "untouched chunk shared"
        );
    }
}
