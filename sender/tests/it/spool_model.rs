//! The disk spool against a model: a queue of `(seq, bytes)` with the same bound.
//!
//! Operations: write a batch, ack a sequence number, overflow (a batch larger than the whole
//! bound), crash (the spool vanishes without any clean-up; optionally the last record is
//! torn, or garbage follows it) and reopen, and a clean reopen. After every reopen what the
//! spool holds must be exactly the model's queue: a contiguous run of what was written and
//! not acked, in order, byte for byte; nothing acked comes back after a clean reopen; dropped
//! samples equal the model's; a torn record is reported as exactly one corrupt record and
//! never panics. After a crash exactly the batches after the spool's durable trim point come
//! back (those acked or dropped since the trim point was last written, at most
//! `SYNC_INTERVAL` ago, come back too), and those beyond the bound are dropped again, counted
//! in the recovery.
//! A second property fills a segment's tail with arbitrary bytes and flips a random byte:
//! reopening never panics and keeps a gap-free prefix, and a second reopen finds it clean.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kube_relay_sender::spool::{DiskSpool, Spool};
use proptest::prelude::*;

const MAX_BYTES: u64 = 1_000;
const SEGMENT_BYTES: u64 = 300;
const SENDER: &str = "model-sender";
/// Record header (length, checksum) plus the payload prefix (seq, samples).
const RECORD_OVERHEAD: u64 = 24;

#[derive(Debug, Clone)]
enum Op {
    Write {
        len: usize,
        samples: u64,
    },
    /// Acks the kept batch at this fraction of the queue (or everything up to the newest).
    Ack {
        at: f64,
    },
    Overflow,
    Crash {
        tail: Tail,
    },
    Reopen,
}

#[derive(Debug, Clone, Copy)]
enum Tail {
    Intact,
    /// Cuts this fraction of the last record off.
    Torn(f64),
    /// Garbage bytes after the last record (a record whose write never completed).
    Garbage(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..300, 0u64..50).prop_map(|(len, samples)| Op::Write { len, samples }),
        3 => (0.0f64..1.0).prop_map(|at| Op::Ack { at }),
        1 => Just(Op::Overflow),
        2 => prop_oneof![
            Just(Tail::Intact),
            (0.01f64..0.99).prop_map(Tail::Torn),
            (1u8..40).prop_map(Tail::Garbage),
        ]
        .prop_map(|tail| Op::Crash { tail }),
        1 => Just(Op::Reopen),
    ]
}

/// The model: the kept batches, the drops, the last record written.
#[derive(Default)]
struct Model {
    queue: VecDeque<(u64, Bytes, u64)>,
    /// Everything written since the last batch larger than the bound: a crash brings back
    /// those after the spool's durable trim point.
    history: VecDeque<(u64, Bytes, u64)>,
    next_seq: u64,
    dropped: u64,
    /// Seq and record length of the newest record written, while it is still kept.
    last_record: Option<(u64, u64)>,
}

impl Model {
    fn bytes(&self) -> u64 {
        self.queue.iter().map(|(_, b, _)| b.len() as u64).sum()
    }

    fn push(&mut self, payload: Bytes, samples: u64) -> (u64, u64) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let len = payload.len() as u64;
        let mut dropped = 0;
        if len > MAX_BYTES {
            dropped = self.queue.iter().map(|(_, _, s)| s).sum::<u64>() + samples;
            self.queue.clear();
            self.history.clear();
            self.last_record = None;
        } else {
            while self.bytes() + len > MAX_BYTES {
                if let Some((_, _, s)) = self.queue.pop_front() {
                    dropped += s;
                }
            }
            self.queue.push_back((seq, payload.clone(), samples));
            self.history.push_back((seq, payload, samples));
            self.last_record = Some((seq, len + RECORD_OVERHEAD));
        }
        self.dropped += dropped;
        (seq, dropped)
    }

    fn ack(&mut self, seq: u64) {
        while self.queue.front().is_some_and(|(s, _, _)| *s <= seq) {
            self.queue.pop_front();
        }
        if self.queue.is_empty() {
            // Every segment went with it: nothing left to tear.
            self.last_record = None;
        }
    }
}

fn open(dir: &Path) -> (DiskSpool, kube_relay_sender::spool::disk::Recovery) {
    DiskSpool::open_with_segments(dir, MAX_BYTES, SEGMENT_BYTES, SENDER).expect("open")
}

fn newest_segment(dir: &Path) -> Option<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs.pop()
}

fn check(spool: &DiskSpool, model: &Model) -> Result<(), TestCaseError> {
    let kept = spool.after(0);
    let want: Vec<(u64, Bytes)> = model
        .queue
        .iter()
        .map(|(s, b, _)| (*s, b.clone()))
        .collect();
    prop_assert_eq!(&kept, &want);
    let samples: u64 = model.queue.iter().map(|(_, _, s)| s).sum();
    prop_assert_eq!(spool.samples(), samples);
    prop_assert_eq!(spool.bytes(), model.bytes());
    prop_assert_eq!(spool.oldest(), model.queue.front().map(|(s, _, _)| *s));
    prop_assert_eq!(spool.newest(), model.queue.back().map(|(s, _, _)| *s));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    #[test]
    fn the_disk_spool_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path());
        spool.reset(77);
        let mut model = Model::default();
        let mut spool_dropped = 0;
        let mut fill = 0u8;
        for op in ops {
            match op {
                Op::Write { len, samples } => {
                    fill = fill.wrapping_add(1);
                    let payload = Bytes::from(vec![fill; len]);
                    let (seq, dropped) = model.push(payload.clone(), samples);
                    let got = spool.push(seq, payload, samples);
                    prop_assert_eq!(got, dropped, "drops of batch {}", seq);
                    spool_dropped += got;
                }
                Op::Overflow => {
                    let payload = Bytes::from(vec![0xee; MAX_BYTES as usize + 1]);
                    let (seq, dropped) = model.push(payload.clone(), 9);
                    let got = spool.push(seq, payload, 9);
                    prop_assert_eq!(got, dropped);
                    spool_dropped += got;
                }
                Op::Ack { at } => {
                    let seq = if model.queue.is_empty() {
                        model.next_seq
                    } else {
                        let i = ((model.queue.len() as f64) * at) as usize;
                        model.queue.get(i).map_or(model.next_seq, |(s, _, _)| *s)
                    };
                    model.ack(seq);
                    spool.ack(seq);
                }
                Op::Crash { tail } => {
                    let durable = spool.durable_trim();
                    std::mem::forget(spool); // no clean-up of any kind
                    // Batches acked or dropped since the trim point was last written are back.
                    model.history.retain(|(s, _, _)| *s > durable);
                    model.queue = model.history.clone();
                    let mut expect_corrupt = 0;
                    match (tail, model.last_record, newest_segment(dir.path())) {
                        (Tail::Torn(frac), Some((seq, rec_len)), Some(seg)) => {
                            let cut = ((rec_len as f64 * frac) as u64).clamp(1, rec_len - 1);
                            let len = std::fs::metadata(&seg).expect("stat").len();
                            let f = std::fs::OpenOptions::new().write(true).open(&seg).expect("open");
                            f.set_len(len - cut).expect("truncate");
                            // The torn record is the newest kept batch: it is lost.
                            prop_assert_eq!(model.queue.back().map(|(s, _, _)| *s), Some(seq));
                            model.queue.pop_back();
                            model.history.pop_back();
                            model.last_record = None;
                            // The link numbers on from the newest kept batch.
                            model.next_seq = seq - 1;
                            expect_corrupt = 1;
                        }
                        (Tail::Garbage(n), _, Some(seg)) => {
                            use std::io::Write;
                            let mut f = std::fs::OpenOptions::new().append(true).open(&seg).expect("open");
                            // A length field promising more than is there, then junk.
                            let mut junk = 0xffff_u32.to_le_bytes().to_vec();
                            junk.extend(std::iter::repeat_n(n, usize::from(n)));
                            f.write_all(&junk).expect("append");
                            model.last_record = None;
                            expect_corrupt = 1;
                        }
                        _ => {}
                    }
                    // Back beyond the bound: dropped (again) on reopen.
                    let mut expect_dropped = 0;
                    while model.bytes() > MAX_BYTES {
                        if let Some((_, _, s)) = model.queue.pop_front() {
                            expect_dropped += s;
                        }
                    }
                    model.history = model.queue.clone();
                    let (reopened, recovery) = open(dir.path());
                    spool = reopened;
                    prop_assert_eq!(recovery.corrupt_records, expect_corrupt);
                    prop_assert_eq!(recovery.corrupt_samples, 0);
                    prop_assert_eq!(recovery.dropped_samples, expect_dropped);
                    check(&spool, &model)?;
                }
                Op::Reopen => {
                    drop(spool);
                    let (reopened, recovery) = open(dir.path());
                    spool = reopened;
                    prop_assert_eq!(recovery.corrupt_records, 0);
                    prop_assert_eq!(recovery.epoch.is_some(), !model.queue.is_empty());
                    model.history = model.queue.clone();
                    model.last_record = None;
                    check(&spool, &model)?;
                }
            }
            check(&spool, &model)?;
        }
        prop_assert_eq!(spool_dropped, model.dropped);
        // Whatever happened, a final reopen agrees too.
        drop(spool);
        let (spool, _) = open(dir.path());
        check(&spool, &model)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever bytes a segment holds after a valid prefix, reopening never panics and keeps
    /// a gap-free run that starts with the valid records.
    #[test]
    fn arbitrary_segment_bytes_never_panic(
        valid in 0usize..5,
        junk in proptest::collection::vec(any::<u8>(), 0..400),
        flip in proptest::option::of((0usize..2000, any::<u8>())),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path());
        spool.reset(5);
        for seq in 1..=valid as u64 {
            spool.push(seq, Bytes::from(vec![seq as u8; 40]), 2);
        }
        std::mem::forget(spool);
        if let Some(seg) = newest_segment(dir.path()) {
            let mut data = std::fs::read(&seg).expect("read");
            data.extend_from_slice(&junk);
            if let Some((at, byte)) = flip {
                let i = at % data.len();
                data[i] ^= byte;
            }
            std::fs::write(&seg, data).expect("write");
        }
        let (spool, recovery) = open(dir.path());
        let seqs: Vec<u64> = spool.after(0).iter().map(|(s, _)| *s).collect();
        prop_assert!(seqs.len() <= valid);
        prop_assert_eq!(seqs, (1..=recovery.batches as u64).collect::<Vec<_>>());
        // Reopening again finds the same, with nothing left to cut off.
        drop(spool);
        let (again, second) = open(dir.path());
        prop_assert_eq!(second.corrupt_records, 0);
        prop_assert_eq!(again.after(0).len(), recovery.batches);
    }
}
