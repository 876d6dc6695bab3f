//! The outgoing spool: batches sent but not yet acknowledged, kept for replay after a
//! reconnect (`Welcome{resume: After{acked}}`).
//!
//! Bounded in bytes, which also bounds what is in flight: the link holds new deltas back
//! while the spool is full and acks are due (changes keep coalescing in the store, latest
//! value per series), so on a healthy link nothing is ever dropped. Overflow policy, when acks
//! do not come: the *oldest* batches are dropped until the new one fits (a batch larger than
//! the whole bound is dropped itself, with everything older: what is kept stays a gap-free
//! run), and the samples they carried are counted
//! (`relay_sender_dropped_updates_total{reason="spool_full"}`). Nothing is lost while the
//! connection lives (those batches were already written); after a reconnect the sender can
//! only replay from its oldest kept batch, so when the receiver had not acknowledged the
//! dropped ones the sender sends a full snapshot instead.
//!
//! [`Spool`] is a trait: [`MemorySpool`] by default, [`DiskSpool`] (`--spool-dir`, or
//! `<state-dir>/spool`) when unacknowledged batches must survive a sender restart. A
//! `DiskSpool` does blocking file I/O, so the sender runs it on a thread of its own behind a
//! [`ThreadedSpool`]: the link's calls return at once, and the link awaits
//! [`Spool::pushed`] (the batch is written) before it sends a batch,
//! [`Spool::replay`] to read batches back, and [`Spool::close`] when it stops.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::future::BoxFuture;

pub mod disk;
pub mod threaded;

pub use disk::DiskSpool;
pub use threaded::ThreadedSpool;

/// A bounded store of unacknowledged batches, in sequence order.
///
/// The kept batches are always a gap-free run of sequence numbers (the link pushes them
/// consecutively), so whatever follows an ack can be replayed: room is made by dropping the
/// oldest, and a batch larger than the whole bound is dropped together with everything older.
pub trait Spool: Send {
    /// Keeps the encoded batch `payload` with sequence number `seq` (the one after the newest
    /// kept) carrying `samples` changed samples. Returns the number of samples dropped to
    /// make room, this batch's own included when it cannot be kept (see the module docs).
    fn push(&mut self, seq: u64, payload: Bytes, samples: u64) -> u64;

    /// Forgets every batch up to and including `seq`.
    fn ack(&mut self, seq: u64);

    /// Sequence number of the oldest kept batch.
    fn oldest(&self) -> Option<u64>;

    /// Sequence number of the newest kept batch.
    fn newest(&self) -> Option<u64>;

    /// The kept batches after `seq`, oldest first, for replay.
    fn after(&self, seq: u64) -> Vec<(u64, Bytes)>;

    /// Forgets everything (a snapshot supersedes it).
    fn clear(&mut self);

    /// Forgets everything and files what follows under a new `epoch` (whose sequence
    /// numbers start again). A durable spool records the epoch.
    fn reset(&mut self, epoch: u64) {
        let _ = epoch;
        self.clear();
    }

    /// Encoded bytes kept.
    fn bytes(&self) -> u64;

    /// Samples kept.
    fn samples(&self) -> u64;

    /// Sets aside `bytes` of the bound for what the batches need besides themselves (the
    /// store's tombstones, `crate::store`): from the next push on, batches are kept within
    /// the bound minus them.
    fn set_reserved(&mut self, bytes: u64);

    /// True when no batch is kept.
    fn is_empty(&self) -> bool {
        self.oldest().is_none()
    }

    /// Resolves once every batch pushed so far is where a crash of this process cannot lose
    /// it. The link awaits it before sending a batch, so a batch the receiver may hold is in
    /// the spool after a `kill -9`. Ready at once unless the spool writes on another thread.
    fn pushed(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }

    /// [`Spool::after`] without blocking the caller's thread, for the link's replay.
    fn replay(&self, seq: u64) -> BoxFuture<'static, Vec<(u64, Bytes)>> {
        Box::pin(std::future::ready(self.after(seq)))
    }

    /// Finishes what is pending (a durable spool syncs and records its trim point); the link
    /// awaits it when it stops. Ready at once unless the spool writes on another thread.
    fn close(&mut self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

impl<S: Spool + ?Sized> Spool for Box<S> {
    fn push(&mut self, seq: u64, payload: Bytes, samples: u64) -> u64 {
        (**self).push(seq, payload, samples)
    }

    fn ack(&mut self, seq: u64) {
        (**self).ack(seq);
    }

    fn oldest(&self) -> Option<u64> {
        (**self).oldest()
    }

    fn newest(&self) -> Option<u64> {
        (**self).newest()
    }

    fn after(&self, seq: u64) -> Vec<(u64, Bytes)> {
        (**self).after(seq)
    }

    fn clear(&mut self) {
        (**self).clear();
    }

    fn reset(&mut self, epoch: u64) {
        (**self).reset(epoch);
    }

    fn bytes(&self) -> u64 {
        (**self).bytes()
    }

    fn samples(&self) -> u64 {
        (**self).samples()
    }

    fn set_reserved(&mut self, bytes: u64) {
        (**self).set_reserved(bytes);
    }

    fn pushed(&self) -> BoxFuture<'static, ()> {
        (**self).pushed()
    }

    fn replay(&self, seq: u64) -> BoxFuture<'static, Vec<(u64, Bytes)>> {
        (**self).replay(seq)
    }

    fn close(&mut self) -> BoxFuture<'static, ()> {
        (**self).close()
    }
}

/// One kept batch: its seq, samples, encoded length and `T` (the batch itself, or nothing
/// where it lives elsewhere).
struct Kept<T> {
    seq: u64,
    samples: u64,
    len: u64,
    item: T,
}

/// The bookkeeping of the [`Spool`] contract: a gap-free run of batches bounded in bytes,
/// the oldest dropped to make room.
struct Run<T> {
    max_bytes: u64,
    /// Bytes of the bound set aside (see [`Spool::set_reserved`]).
    reserved: u64,
    kept: VecDeque<Kept<T>>,
    bytes: u64,
    samples: u64,
}

impl<T> Run<T> {
    fn new(max_bytes: u64) -> Self {
        Run {
            max_bytes,
            reserved: 0,
            kept: VecDeque::new(),
            bytes: 0,
            samples: 0,
        }
    }

    /// Keeps a batch of `len` bytes, returning the samples dropped (see [`Spool::push`]).
    fn push(&mut self, seq: u64, len: u64, samples: u64, item: T) -> u64 {
        let bound = self.max_bytes.saturating_sub(self.reserved);
        if len > bound {
            // Cannot be kept: neither can anything older, or the run would have a gap.
            let dropped = self.samples + samples;
            self.clear();
            return dropped;
        }
        let mut dropped = 0;
        while self.bytes + len > bound {
            match self.pop_oldest() {
                Some(e) => dropped += e.samples,
                None => break,
            }
        }
        self.bytes += len;
        self.samples += samples;
        self.kept.push_back(Kept {
            seq,
            samples,
            len,
            item,
        });
        dropped
    }

    fn pop_oldest(&mut self) -> Option<Kept<T>> {
        let e = self.kept.pop_front()?;
        self.bytes -= e.len;
        self.samples -= e.samples;
        Some(e)
    }

    fn ack(&mut self, seq: u64) {
        while self.kept.front().is_some_and(|e| e.seq <= seq) {
            self.pop_oldest();
        }
    }

    fn oldest(&self) -> Option<u64> {
        self.kept.front().map(|e| e.seq)
    }

    fn newest(&self) -> Option<u64> {
        self.kept.back().map(|e| e.seq)
    }

    fn clear(&mut self) {
        self.kept.clear();
        self.bytes = 0;
        self.samples = 0;
    }
}

/// An in-memory [`Spool`] bounded by `max_bytes` of encoded batches.
pub struct MemorySpool {
    run: Run<Bytes>,
}

impl MemorySpool {
    /// An empty spool holding at most `max_bytes` of encoded batches.
    pub fn new(max_bytes: u64) -> Self {
        MemorySpool {
            run: Run::new(max_bytes),
        }
    }
}

impl Spool for MemorySpool {
    fn push(&mut self, seq: u64, payload: Bytes, samples: u64) -> u64 {
        self.run.push(seq, payload.len() as u64, samples, payload)
    }

    fn ack(&mut self, seq: u64) {
        self.run.ack(seq);
    }

    fn oldest(&self) -> Option<u64> {
        self.run.oldest()
    }

    fn newest(&self) -> Option<u64> {
        self.run.newest()
    }

    fn after(&self, seq: u64) -> Vec<(u64, Bytes)> {
        self.run
            .kept
            .iter()
            .filter(|e| e.seq > seq)
            .map(|e| (e.seq, e.item.clone()))
            .collect()
    }

    fn clear(&mut self) {
        self.run.clear();
    }

    fn bytes(&self) -> u64 {
        self.run.bytes
    }

    fn samples(&self) -> u64 {
        self.run.samples
    }

    fn set_reserved(&mut self, bytes: u64) {
        self.run.reserved = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    #[test]
    fn acks_release_batches_in_order() {
        let mut spool = MemorySpool::new(1000);
        for seq in 1..=3 {
            assert_eq!(spool.push(seq, payload(100), 10), 0);
        }
        assert_eq!((spool.bytes(), spool.samples()), (300, 30));
        spool.ack(2);
        assert_eq!(spool.oldest(), Some(3));
        assert_eq!(spool.after(0).len(), 1);
        spool.ack(9);
        assert_eq!(
            (spool.bytes(), spool.samples(), spool.oldest()),
            (0, 0, None)
        );
    }

    #[test]
    fn overflow_drops_the_oldest_and_counts_their_samples() {
        let mut spool = MemorySpool::new(250);
        spool.push(1, payload(100), 7);
        spool.push(2, payload(100), 5);
        assert_eq!(spool.push(3, payload(100), 1), 7, "batch 1 dropped");
        assert_eq!(spool.oldest(), Some(2));
        assert_eq!(
            spool.push(4, payload(200), 2),
            5 + 1,
            "batches 2 and 3 dropped"
        );
        assert_eq!(
            spool.after(0).iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [4]
        );
        assert_eq!(
            spool.push(5, payload(300), 9),
            2 + 9,
            "too big to keep at all, and batch 4 with it (no gap)"
        );
        assert_eq!(
            (spool.bytes(), spool.samples(), spool.oldest()),
            (0, 0, None)
        );
        assert_eq!(spool.push(6, payload(100), 1), 0, "a fresh run");
        assert_eq!(spool.oldest(), Some(6));
    }

    #[test]
    fn a_reservation_shrinks_the_bound_from_the_next_push() {
        let mut spool = MemorySpool::new(300);
        spool.push(1, payload(100), 1);
        spool.push(2, payload(100), 2);
        spool.set_reserved(150);
        assert_eq!(spool.bytes(), 200, "nothing dropped until a push");
        assert_eq!(
            spool.push(3, payload(100), 4),
            1 + 2,
            "150 bytes left for batches"
        );
        assert_eq!(spool.oldest(), Some(3));
        assert_eq!(
            spool.push(4, payload(200), 8),
            4 + 8,
            "larger than what is left"
        );
        assert!(spool.is_empty());
        spool.set_reserved(0);
        assert_eq!(spool.push(5, payload(300), 1), 0);
    }

    #[test]
    fn replay_lists_what_follows_the_ack() {
        let mut spool = MemorySpool::new(1000);
        for seq in 5..=8 {
            spool.push(seq, payload(10), 1);
        }
        let seqs: Vec<u64> = spool.after(6).iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [7, 8]);
        spool.clear();
        assert_eq!(spool.oldest(), None);
    }
}
