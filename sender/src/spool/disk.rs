//! [`DiskSpool`]: the [`Spool`] in a directory, so unacknowledged batches survive a sender
//! restart (`--spool-dir`, or `<state-dir>/spool`).
//!
//! # Layout
//! - `meta.json`: `{sender_id, epoch, trimmed}`. The batches on disk belong to `epoch` of
//!   `sender_id`; every batch up to `trimmed` was acknowledged (or dropped). Always written
//!   as temporary file + fsync + rename. The trim point moved by acks and drops is kept in
//!   memory and written at most once per [`SYNC_INTERVAL`] (by the next push or ack after
//!   it), at once before a segment is deleted and when a new epoch starts, and when the
//!   spool is dropped.
//! - `<first seq, 20 digits>.seg`: append-only segments. A 16-byte header (`KRSPOOL2`, the
//!   format version, and the epoch, little-endian), then records `[len u32][crc32 u32][payload]` (little-endian; the
//!   CRC-32 covers the payload), payload = `[seq u64][samples u64][encoded batch]`. A new
//!   segment starts once the active one holds `segment_bytes`; a segment is deleted as soon
//!   as every batch in it is trimmed.
//!
//! Sequence numbers pushed must be consecutive while batches are kept (the link numbers
//! them so): a record out of sequence on reopen counts as corruption.
//!
//! # Format versions
//! The magic names the format of the batches inside: `KRSPOOL2` holds protocol-2 batches,
//! each with its observation time (`Batch.observed_at_ms`), replayed with the time it
//! happened. `KRSPOOL1` segments (written by senders before protocol 2) hold batches without
//! it, which no receiver of protocol 2 accepts: on reopen they are discarded with a warning,
//! never decoded, and their unacknowledged samples are counted in
//! [`Recovery::superseded_samples`] (the snapshot the sender sends next carries every current
//! value). Any other header is not a spool segment of ours and is deleted.
//!
//! # Bound
//! `max_bytes` counts encoded batches, as [`MemorySpool`](super::MemorySpool) does; the
//! files hold at most that plus record headers plus the trimmed head of one segment. At the
//! bound the oldest batches are dropped and their samples returned to the caller (counted in
//! `relay_sender_dropped_updates_total{reason="spool_full"}`); a batch larger than the whole
//! bound is dropped together with everything older, so what is kept is always a contiguous
//! run of sequence numbers that can be replayed.
//!
//! # Threads
//! A `DiskSpool` does blocking file I/O on the caller's thread (`write`, meta files with
//! `fsync`, deletions, reads): the sender never calls it from the async runtime but runs it
//! on a thread of its own behind a [`ThreadedSpool`](super::ThreadedSpool), which the link
//! awaits without blocking. Its `fdatasync`s run on one more thread, the syncer below, so
//! appends never wait for them.
//!
//! # Durability (fsync policy)
//! Each record is written with one `write` call, no user-space buffer: a process crash
//! (`kill -9`, OOM, panic) loses nothing written (and the link sends a batch only once it is
//! written). A background thread holds the active segment and `fdatasync`s it within
//! [`SYNC_INTERVAL`] of a write (it wakes once per interval and syncs when something was
//! written since its last sync, so a write followed by silence is synced too), and syncs a
//! segment at once when it is sealed (rolled); a write waits for it only when [`SYNC_QUEUE`]
//! rolled segments are still queued (a hung disk). A failed sync is logged (at most once a
//! minute) and, for the active segment, retried on the next tick; it never fails the write. A
//! failed meta-file write is logged and redone at the next chance (the next push or ack a
//! [`SYNC_INTERVAL`] later, a segment deletion, or the drop), so a new epoch whose first
//! write failed is not lost. The spool syncs inline when it is dropped. A power cut or kernel crash can therefore lose the
//! records of the last second: batches written in that second are missing after reboot (the
//! receiver then answers `Snapshot` or the replay simply ends earlier). Any crash, a process
//! crash too, can lose the trim point of the last second: batches acknowledged or dropped in
//! it come back on reopen. Acknowledged ones are not replayed (the receiver resumes after
//! its ack) or are ignored and counted as duplicates; dropped ones are replayable again, or
//! dropped and counted again on reopen if they exceed the bound. A torn or corrupt tail is
//! found by its length and checksum on reopen, logged, counted in [`Recovery`] and cut off;
//! everything after it (even valid records of later segments) is discarded too, because a
//! replay must be gap-free. A missing or unreadable meta file leaves the epoch and trim
//! point unknown: every segment is discarded with a warning and its samples are counted in
//! [`Recovery::corrupt_samples`]. Nothing read from disk can make the sender panic.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::Spool;
use crate::error::Error;
use crate::state_file::write_atomically;

/// The meta file's name in the spool directory.
pub const META_FILE: &str = "meta.json";
/// Most time between a write and its `fdatasync`.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Rolled segments queued for the syncer thread before a roll waits for it.
pub const SYNC_QUEUE: usize = 4;
/// Least time between two warnings about failed syncs.
const SYNC_WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// First bytes of every segment file: the format version (see the [module docs](self)).
const SEGMENT_MAGIC: &[u8; 8] = b"KRSPOOL2";
/// First bytes of a segment of format 1 (protocol-1 batches, without observation time).
const SEGMENT_MAGIC_V1: &[u8; 8] = b"KRSPOOL1";
/// Magic plus epoch.
const SEGMENT_HEADER_BYTES: usize = 16;
/// Length and checksum.
const RECORD_HEADER_BYTES: usize = 8;
/// Sequence number and sample count ahead of the batch in a record's payload.
const PAYLOAD_PREFIX_BYTES: usize = 16;
/// A record claiming more than this is corrupt (a frame never exceeds the protocol ceiling).
const MAX_RECORD_BYTES: usize = kube_relay_proto::MAX_FRAME_BYTES_CEILING + PAYLOAD_PREFIX_BYTES;

/// The meta file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    sender_id: String,
    epoch: u64,
    trimmed: u64,
}

/// A kept batch: where its record lives.
#[derive(Debug)]
struct Entry {
    seq: u64,
    samples: u64,
    /// Encoded batch bytes (what the bound counts).
    len: u64,
    /// First seq of the segment holding it (its file name).
    segment: u64,
    /// Offset of the record in the segment.
    offset: u64,
    /// The batch itself when writing it failed (kept for this process only).
    memory: Option<Bytes>,
}

/// A segment file.
#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// File length.
    bytes: u64,
}

/// What [`DiskSpool::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The epoch the kept batches belong to (`None` when nothing usable was found).
    pub epoch: Option<u64>,
    /// Batches kept, ready for replay.
    pub batches: usize,
    /// Their samples.
    pub samples: u64,
    /// Records found torn or corrupt (bad length or checksum, or out of sequence); their
    /// samples cannot be known.
    pub corrupt_records: u64,
    /// Samples of valid records discarded because they followed a corrupt one, or because
    /// the meta file was missing or unreadable (every record counts then: the trim point is
    /// unknown).
    pub corrupt_samples: u64,
    /// Bytes cut off or deleted because of corruption.
    pub skipped_bytes: u64,
    /// Samples dropped because the kept batches exceeded `max_bytes` (a smaller bound than
    /// the previous run's).
    pub dropped_samples: u64,
    /// Unacknowledged samples of segments in an older format (written by a sender before
    /// protocol 2), discarded unread: the snapshot that follows supersedes them.
    pub superseded_samples: u64,
}

/// A [`Spool`] in a directory. See the [module docs](self).
#[derive(Debug)]
pub struct DiskSpool {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes of the bound set aside (see [`Spool::set_reserved`]).
    reserved: u64,
    segment_bytes: u64,
    meta: Meta,
    entries: VecDeque<Entry>,
    segments: VecDeque<Segment>,
    /// The newest segment, open for appending; `None` until the next write opens one.
    active: Option<File>,
    bytes: u64,
    samples: u64,
    /// Shared with the syncer thread: whether the active segment was written since its last
    /// sync, and how many syncs were done.
    sync: Arc<SyncState>,
    /// The thread that fdatasyncs the active segment (`None`: inline, on the next write
    /// after [`SYNC_INTERVAL`], when the thread could not be started or handed a segment).
    syncer: Option<Syncer>,
    /// When the active segment was last synced inline (without a syncer).
    last_sync: Instant,
    /// `meta.trimmed` as last written to the meta file.
    durable_trim: u64,
    /// The last write of the meta file failed: what it holds may be older than `meta`
    /// (an epoch, not only a trim point), so the next chance rewrites it.
    meta_failed: bool,
    /// When the meta file was last written.
    meta_written: Instant,
    write_errors: u64,
}

impl DiskSpool {
    /// Opens (or creates) the spool in `dir` for `sender_id`, bounded by `max_bytes` of
    /// encoded batches, with segments of about `max_bytes / 4` (64 KiB to 64 MiB).
    ///
    /// Batches of another sender id are discarded. See [`DiskSpool::open_with_segments`].
    ///
    /// # Errors
    /// [`Error::State`] when the directory or its files cannot be created, listed or read.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        sender_id: &str,
    ) -> Result<(DiskSpool, Recovery), Error> {
        let segment_bytes = (max_bytes / 4).clamp(64 << 10, 64 << 20);
        DiskSpool::open_with_segments(dir, max_bytes, segment_bytes, sender_id)
    }

    /// [`DiskSpool::open`] with segments rolled once they hold `segment_bytes`.
    ///
    /// # Errors
    /// [`Error::State`] when the directory or its files cannot be created, listed or read.
    pub fn open_with_segments(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        sender_id: &str,
    ) -> Result<(DiskSpool, Recovery), Error> {
        fs::create_dir_all(dir).map_err(|e| Error::state(dir, e))?;
        let stored = read_meta(dir);
        let sync = Arc::new(SyncState::default());
        let mut spool = DiskSpool {
            dir: dir.to_owned(),
            max_bytes,
            reserved: 0,
            segment_bytes: segment_bytes.max(1),
            meta: Meta {
                sender_id: sender_id.to_owned(),
                epoch: 0,
                trimmed: 0,
            },
            entries: VecDeque::new(),
            segments: VecDeque::new(),
            active: None,
            bytes: 0,
            samples: 0,
            sync: Arc::clone(&sync),
            syncer: Syncer::start(sync),
            last_sync: Instant::now(),
            durable_trim: 0,
            meta_failed: false,
            meta_written: Instant::now(),
            write_errors: 0,
        };
        let files = list_segments(dir)?;
        let mut recovery = Recovery::default();
        match stored {
            Some(meta) if meta.sender_id == sender_id => {
                spool.durable_trim = meta.trimmed;
                spool.meta = meta;
                spool.load(files, &mut recovery)?;
            }
            Some(_) => {
                warn!(dir = %dir.display(), "spool belongs to another sender id; discarded");
                for (_, path) in files {
                    remove(&path);
                }
                spool.write_meta();
            }
            None => {
                // Without the meta file (missing, or unreadable after a crash) neither the
                // trim point nor the epoch is known: the segments cannot be replayed. Their
                // samples are lost, and counted as such.
                let segments = files.len();
                for (_, path) in files {
                    discard_unreadable(&path, &mut recovery);
                    remove(&path);
                }
                if segments > 0 {
                    warn!(
                        file = %dir.join(META_FILE).display(),
                        segments,
                        lost_samples = recovery.corrupt_samples,
                        skipped_bytes = recovery.skipped_bytes,
                        "spool meta file missing or unreadable; its segments discarded"
                    );
                }
                spool.write_meta();
            }
        }
        if !spool.entries.is_empty() {
            recovery.epoch = Some(spool.meta.epoch);
            recovery.batches = spool.entries.len();
            recovery.samples = spool.samples;
            info!(
                dir = %dir.display(),
                epoch = spool.meta.epoch,
                batches = recovery.batches,
                samples = recovery.samples,
                bytes = spool.bytes,
                "spool reopened with unacknowledged batches"
            );
        }
        Ok((spool, recovery))
    }

    /// The sender id recorded in the spool in `dir`, if any (a sender without a state
    /// directory keeps its identity here).
    pub fn stored_sender_id(dir: &Path) -> Option<String> {
        read_meta(dir).map(|m| m.sender_id)
    }

    /// The epoch the kept batches belong to.
    pub fn epoch(&self) -> u64 {
        self.meta.epoch
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bound, in encoded batch bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The kept batches as `(seq, samples, encoded bytes)`, oldest first.
    pub fn kept(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.entries.iter().map(|e| (e.seq, e.samples, e.len))
    }

    /// The trim point as last written to the meta file: after a crash, kept batches after it
    /// come back on reopen (see the [module docs](self)).
    pub fn durable_trim(&self) -> u64 {
        self.durable_trim
    }

    /// Records that could not be written (their batches stayed in memory).
    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    /// `fdatasync`s of segment files done so far (by the syncer thread or inline).
    pub fn syncs(&self) -> u64 {
        self.sync.syncs.load(Ordering::Acquire)
    }

    /// Reads the segments, keeping the live records after the trim point.
    fn load(&mut self, files: Vec<(u64, PathBuf)>, rec: &mut Recovery) -> Result<(), Error> {
        let mut broken = false;
        let mut expected: Option<u64> = None;
        for (first_seq, path) in files {
            let data = fs::read(&path).map_err(|e| Error::state(&path, e))?;
            if broken {
                // Past a corruption: valid records here cannot be replayed without a gap.
                let (records, _) = parse_records(&data);
                let lost: u64 = records
                    .iter()
                    .filter(|r| r.seq > self.meta.trimmed)
                    .map(|r| r.samples)
                    .sum();
                rec.corrupt_samples += lost;
                rec.skipped_bytes += data.len() as u64;
                remove(&path);
                continue;
            }
            if data.len() < SEGMENT_HEADER_BYTES {
                // Created by a crash before its header was complete: holds no record.
                remove(&path);
                continue;
            }
            if &data[..8] == SEGMENT_MAGIC_V1 {
                // Batches of protocol 1: no receiver takes them now. Counted, never decoded.
                let (records, _) = parse_records(&data);
                let samples: u64 = records
                    .iter()
                    .filter(|r| r.seq > self.meta.trimmed)
                    .map(|r| r.samples)
                    .sum();
                rec.superseded_samples += samples;
                warn!(file = %path.display(), samples,
                      "spool segment written by an older sender (format 1, batches without \
                       observation time); discarded, the snapshot supersedes it");
                remove(&path);
                continue;
            }
            if &data[..8] != SEGMENT_MAGIC || le_u64(&data[8..16]) != Some(self.meta.epoch) {
                // An older epoch's segment whose deletion was interrupted, or garbage.
                warn!(file = %path.display(), "spool segment of another epoch; deleted");
                remove(&path);
                continue;
            }
            let (records, end) = parse_records(&data);
            let mut good_end = end;
            for r in records {
                if r.seq <= self.meta.trimmed {
                    continue;
                }
                if expected.is_some_and(|e| r.seq != e) {
                    // Out of sequence: treat as corruption from here on.
                    good_end = r.offset as usize;
                    break;
                }
                expected = Some(r.seq.saturating_add(1));
                self.bytes += r.len;
                self.samples += r.samples;
                self.entries.push_back(Entry {
                    seq: r.seq,
                    samples: r.samples,
                    len: r.len,
                    segment: first_seq,
                    offset: r.offset,
                    memory: None,
                });
            }
            if good_end < data.len() {
                broken = true;
                rec.corrupt_records += 1;
                let skipped = (data.len() - good_end) as u64;
                rec.skipped_bytes += skipped;
                // Records after the bad one in this file are lost with it; count the
                // valid ones we can still read.
                let tail = &data[good_end..];
                let mut pos = skip_one(tail, 0);
                while let Some(at) = pos {
                    match parse_one(tail, at) {
                        Some((r, next)) => {
                            if r.seq > self.meta.trimmed {
                                rec.corrupt_samples += r.samples;
                            }
                            pos = Some(next);
                        }
                        None => pos = skip_one(tail, at),
                    }
                }
                warn!(
                    file = %path.display(),
                    offset = good_end,
                    skipped_bytes = skipped,
                    "torn or corrupt record in the spool; cut off there"
                );
                truncate(&path, good_end as u64);
            }
            self.segments.push_back(Segment {
                first_seq,
                bytes: good_end as u64,
            });
        }
        // A smaller bound than the previous run's.
        let mut changed = false;
        while self.bytes > self.max_bytes {
            let Some(e) = self.pop_oldest() else { break };
            rec.dropped_samples += e.samples;
            self.meta.trimmed = e.seq;
            changed = true;
        }
        self.delete_dead_segments();
        if changed && self.meta_behind() {
            self.write_meta();
        }
        Ok(())
    }

    fn pop_oldest(&mut self) -> Option<Entry> {
        let e = self.entries.pop_front()?;
        self.bytes -= e.len;
        self.samples -= e.samples;
        Some(e)
    }

    /// Deletes the segments no kept batch lives in, writing the trim point first.
    fn delete_dead_segments(&mut self) {
        let live_from = self.entries.front().map(|e| e.segment);
        while let Some(seg) = self.segments.front() {
            if live_from.is_some_and(|first| seg.first_seq >= first) {
                break;
            }
            if self.meta_behind() {
                // Once its records are gone, the trim point must cover them.
                self.write_meta();
            }
            let Some(seg) = self.segments.front() else {
                break;
            };
            let is_active = self.segments.len() == 1;
            let path = self.segment_path(seg.first_seq);
            self.segments.pop_front();
            if is_active {
                self.active = None;
                self.sync.dirty.store(false, Ordering::Release);
                if let Some(syncer) = &self.syncer {
                    // Let the thread close it too; if its queue is full, the next roll will.
                    let _ = syncer.tx.try_send(None);
                }
            }
            remove(&path);
        }
    }

    fn segment_path(&self, first_seq: u64) -> PathBuf {
        self.dir.join(format!("{first_seq:020}.seg"))
    }

    /// Writes the meta file: temporary file, fsync, rename.
    fn write_meta(&mut self) {
        let path = self.dir.join(META_FILE);
        self.meta_written = Instant::now();
        let result = serde_json::to_vec(&self.meta)
            .map_err(|e| Error::state(&path, io::Error::other(e)))
            .and_then(|json| write_atomically(&path, &json));
        match result {
            Ok(()) => {
                self.durable_trim = self.meta.trimmed;
                self.meta_failed = false;
            }
            Err(e) => {
                self.meta_failed = true;
                self.write_errors += 1;
                warn!(file = %path.display(), cause = %e, "failed to write the spool's meta file");
            }
        }
    }

    /// True when the meta file may not hold `meta`: the trim point moved since it was
    /// written, or its last write failed.
    fn meta_behind(&self) -> bool {
        self.meta_failed || self.meta.trimmed != self.durable_trim
    }

    /// Writes a moved trim point if the meta file was last written [`SYNC_INTERVAL`] ago.
    fn persist_trim_lazily(&mut self) {
        if self.meta_behind() && self.meta_written.elapsed() >= SYNC_INTERVAL {
            self.write_meta();
        }
    }

    /// Appends one record; on failure the batch stays in memory.
    fn append(&mut self, seq: u64, payload: Bytes, samples: u64) {
        let len = payload.len() as u64;
        let mut record =
            Vec::with_capacity(RECORD_HEADER_BYTES + PAYLOAD_PREFIX_BYTES + payload.len());
        let body_len = PAYLOAD_PREFIX_BYTES + payload.len();
        record.extend_from_slice(&(body_len as u32).to_le_bytes());
        record.extend_from_slice(&[0; 4]);
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(&samples.to_le_bytes());
        record.extend_from_slice(&payload);
        let crc = crc32fast::hash(&record[RECORD_HEADER_BYTES..]);
        record[4..8].copy_from_slice(&crc.to_le_bytes());
        let written = self.write_record(seq, &record);
        let (segment, offset, memory) = match written {
            Ok((segment, offset)) => (segment, offset, None),
            Err(e) => {
                self.write_errors += 1;
                warn!(dir = %self.dir.display(), seq, cause = %e,
                      "failed to write a batch to the spool; kept in memory only");
                let segment = self.segments.back().map_or(seq, |s| s.first_seq);
                (segment, 0, Some(payload))
            }
        };
        self.bytes += len;
        self.samples += samples;
        self.entries.push_back(Entry {
            seq,
            samples,
            len,
            segment,
            offset,
            memory,
        });
    }

    fn write_record(&mut self, seq: u64, record: &[u8]) -> io::Result<(u64, u64)> {
        let full = self
            .segments
            .back()
            .is_none_or(|s| s.bytes >= self.segment_bytes);
        if self.active.is_none() || full {
            if let Some(old) = self.active.take()
                && self.syncer.is_none()
                && self.sync.dirty.swap(false, Ordering::AcqRel)
            {
                // Sealed: make it durable (the syncer does so itself when handed the next).
                self.sync.sync_file(&old);
                self.last_sync = Instant::now();
            }
            let path = self.segment_path(seq);
            let mut file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)?;
            let mut header = [0u8; SEGMENT_HEADER_BYTES];
            header[..8].copy_from_slice(SEGMENT_MAGIC);
            header[8..].copy_from_slice(&self.meta.epoch.to_le_bytes());
            file.write_all(&header)?;
            self.segments.push_back(Segment {
                first_seq: seq,
                bytes: SEGMENT_HEADER_BYTES as u64,
            });
            self.hand_over(&file);
            self.active = Some(file);
        }
        let (Some(file), Some(seg)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Err(io::Error::other("no active segment"));
        };
        let offset = seg.bytes;
        if let Err(e) = file.write_all(record) {
            // Do not leave half a record behind for later ones to follow.
            let _ = file.set_len(offset);
            self.active = None;
            return Err(e);
        }
        seg.bytes += record.len() as u64;
        let at = (seg.first_seq, offset);
        self.sync.dirty.store(true, Ordering::Release);
        if self.syncer.is_none() && self.last_sync.elapsed() >= SYNC_INTERVAL {
            // No syncer thread: sync here, on a write. The record is written either way.
            if self.sync.dirty.swap(false, Ordering::AcqRel) {
                self.sync.sync_file(file);
            }
            self.last_sync = Instant::now();
        }
        Ok(at)
    }

    /// Gives the syncer thread a handle to the new active segment (it seals and syncs the
    /// one it held). Without a syncer, or when it cannot be handed one, syncs stay inline.
    fn hand_over(&mut self, file: &File) {
        let Some(syncer) = &self.syncer else { return };
        let handed = match file.try_clone() {
            Ok(clone) => match syncer.tx.try_send(Some(clone)) {
                Ok(()) => true,
                Err(TrySendError::Full(clone)) => {
                    warn!(dir = %self.dir.display(), queued = SYNC_QUEUE,
                          "spool syncer is behind (slow disk); waiting for it");
                    syncer.tx.send(clone).is_ok()
                }
                Err(TrySendError::Disconnected(_)) => false,
            },
            Err(e) => {
                warn!(dir = %self.dir.display(), cause = %e,
                      "failed to hand a spool segment to the syncer; syncing inline");
                false
            }
        };
        if !handed {
            // The thread (if still running) keeps the old segment; stop it so it does not
            // consume the dirty flag of the new one.
            self.syncer = None;
        }
    }

    /// Reads the batch of `e` back: a slice of its segment, read once per `cache` (no copy).
    fn read(&self, e: &Entry, cache: &mut Option<(u64, Bytes)>) -> io::Result<Bytes> {
        if let Some(payload) = &e.memory {
            return Ok(payload.clone());
        }
        if cache.as_ref().is_none_or(|(seg, _)| *seg != e.segment) {
            let data = fs::read(self.segment_path(e.segment))?;
            *cache = Some((e.segment, Bytes::from(data)));
        }
        let data = cache.as_ref().map(|(_, d)| d.clone()).unwrap_or_default();
        match parse_one(&data, e.offset as usize) {
            Some((r, _)) if r.seq == e.seq => {
                Ok(data.slice(r.payload_start..r.payload_start + r.len as usize))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("record of batch {} is missing or corrupt", e.seq),
            )),
        }
    }

    /// Forgets every batch up to `seq`; the trim point is written as the module docs say.
    fn trim_through(&mut self, seq: u64) {
        if seq <= self.meta.trimmed {
            return;
        }
        self.meta.trimmed = seq;
        while self.entries.front().is_some_and(|e| e.seq <= seq) {
            self.pop_oldest();
        }
        self.delete_dead_segments();
        self.persist_trim_lazily();
    }
}

impl Spool for DiskSpool {
    fn push(&mut self, seq: u64, payload: Bytes, samples: u64) -> u64 {
        let len = payload.len() as u64;
        let bound = self.max_bytes.saturating_sub(self.reserved);
        if len > bound {
            // Cannot be kept: neither can anything older, or the run would have a gap.
            let dropped = self.samples + samples;
            self.entries.clear();
            self.bytes = 0;
            self.samples = 0;
            self.meta.trimmed = seq;
            self.delete_dead_segments();
            self.persist_trim_lazily();
            return dropped;
        }
        let mut dropped = 0;
        let mut last = None;
        while self.bytes + len > bound {
            match self.pop_oldest() {
                Some(e) => {
                    dropped += e.samples;
                    last = Some(e.seq);
                }
                None => break,
            }
        }
        if let Some(seq) = last {
            self.meta.trimmed = self.meta.trimmed.max(seq);
            self.delete_dead_segments();
        }
        self.persist_trim_lazily();
        self.append(seq, payload, samples);
        dropped
    }

    fn ack(&mut self, seq: u64) {
        self.trim_through(seq);
    }

    fn oldest(&self) -> Option<u64> {
        self.entries.front().map(|e| e.seq)
    }

    fn newest(&self) -> Option<u64> {
        self.entries.back().map(|e| e.seq)
    }

    /// Reads the segments holding the batches with blocking reads on the caller's thread (the
    /// link task): a one-time cost per reconnect or restart, bounded by `max_bytes` (a full
    /// 4 MiB spool reads back in milliseconds, `sender/README.md`). The batches returned are
    /// slices of the segments read, not copies: each segment's buffer lives until its last
    /// batch is dropped.
    fn after(&self, seq: u64) -> Vec<(u64, Bytes)> {
        let mut out = Vec::new();
        let mut cache = None;
        for e in self.entries.iter().filter(|e| e.seq > seq) {
            match self.read(e, &mut cache) {
                Ok(payload) => out.push((e.seq, payload)),
                Err(err) => {
                    // Replay what precedes it; the gap makes the receiver ask for a snapshot.
                    warn!(dir = %self.dir.display(), seq = e.seq, cause = %err,
                          "failed to read a spooled batch; replay stops there");
                    break;
                }
            }
        }
        out
    }

    fn clear(&mut self) {
        if let Some(newest) = self.newest() {
            self.trim_through(newest);
        }
    }

    fn reset(&mut self, epoch: u64) {
        self.entries.clear();
        self.bytes = 0;
        self.samples = 0;
        // The new epoch first: anything a failed or interrupted deletion leaves behind
        // carries the old epoch in its header, and is deleted on reopen.
        self.meta.epoch = epoch;
        self.meta.trimmed = 0;
        self.write_meta();
        self.delete_dead_segments();
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn samples(&self) -> u64 {
        self.samples
    }

    fn set_reserved(&mut self, bytes: u64) {
        self.reserved = bytes;
    }
}

impl Drop for DiskSpool {
    fn drop(&mut self) {
        if let Some(file) = &self.active
            && self.sync.dirty.swap(false, Ordering::AcqRel)
        {
            self.sync.sync_file(file);
        }
        if self.meta_behind() {
            self.write_meta();
        }
        // Dropping the syncer's sender ends its thread.
    }
}

/// What the spool and its syncer thread share.
#[derive(Debug, Default)]
struct SyncState {
    /// The active segment was written since its last sync.
    dirty: AtomicBool,
    /// Syncs done.
    syncs: AtomicU64,
    /// When a failed sync was last logged, and how many failed since.
    warned: Mutex<(Option<Instant>, u64)>,
}

impl SyncState {
    /// fdatasyncs `file`; on failure marks the spool dirty again (the next tick retries)
    /// and logs, at most once per [`SYNC_WARNING_INTERVAL`].
    fn sync_file(&self, file: &File) {
        match file.sync_data() {
            Ok(()) => {
                self.syncs.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => {
                self.dirty.store(true, Ordering::Release);
                self.warn(&e);
            }
        }
    }

    fn warn(&self, e: &io::Error) {
        let Ok(mut warned) = self.warned.lock() else {
            return;
        };
        let (last, failed) = &mut *warned;
        *failed += 1;
        if last.is_none_or(|at| at.elapsed() >= SYNC_WARNING_INTERVAL) {
            warn!(cause = %e, failed = *failed, "failed to fdatasync a spool segment");
            *last = Some(Instant::now());
            *failed = 0;
        }
    }
}

/// A thread that holds the active segment and fdatasyncs it, so a caller on an async
/// runtime never waits for the disk.
#[derive(Debug)]
struct Syncer {
    /// The new active segment on each roll (`None`: the active one was deleted); the thread
    /// syncs the one it held (sealed) and takes this one.
    tx: SyncSender<Option<File>>,
}

impl Syncer {
    fn start(state: Arc<SyncState>) -> Option<Syncer> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Option<File>>(SYNC_QUEUE);
        std::thread::Builder::new()
            .name("spool-sync".to_owned())
            .spawn(move || run_syncer(&rx, &state))
            .ok()?;
        Some(Syncer { tx })
    }
}

/// The syncer thread: wakes on each roll and at least once per [`SYNC_INTERVAL`], and syncs
/// the active segment when it was written since the last sync.
fn run_syncer(rx: &Receiver<Option<File>>, state: &SyncState) {
    let mut active: Option<File> = None;
    loop {
        match rx.recv_timeout(SYNC_INTERVAL) {
            Ok(next) => {
                let sealed = std::mem::replace(&mut active, next);
                if let Some(sealed) = sealed {
                    state.sync_file(&sealed);
                }
                if active.is_some() {
                    // Its header, and any record written before this hand-over whose dirty
                    // flag a sync of the sealed one may have consumed.
                    state.dirty.store(true, Ordering::Release);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if let Some(file) = &active
            && state.dirty.swap(false, Ordering::AcqRel)
        {
            state.sync_file(file);
        }
    }
}

/// One record read from a segment.
#[derive(Debug)]
struct Record {
    seq: u64,
    samples: u64,
    /// Encoded batch bytes.
    len: u64,
    offset: u64,
    payload_start: usize,
}

/// Parses one record at `pos`; `None` when it is torn or corrupt (or `pos` is the end).
fn parse_one(data: &[u8], pos: usize) -> Option<(Record, usize)> {
    let header = data.get(pos..pos + RECORD_HEADER_BYTES)?;
    let body_len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if !(PAYLOAD_PREFIX_BYTES..=MAX_RECORD_BYTES).contains(&body_len) {
        return None;
    }
    let start = pos + RECORD_HEADER_BYTES;
    let body = data.get(start..start + body_len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let seq = le_u64(&body[..8])?;
    let samples = le_u64(&body[8..16])?;
    Some((
        Record {
            seq,
            samples,
            len: (body_len - PAYLOAD_PREFIX_BYTES) as u64,
            offset: pos as u64,
            payload_start: start + PAYLOAD_PREFIX_BYTES,
        },
        start + body_len,
    ))
}

/// Where the record at `pos` ends by its length field, valid or not (`None` when the length
/// is implausible or runs past the end).
fn skip_one(data: &[u8], pos: usize) -> Option<usize> {
    let header = data.get(pos..pos + RECORD_HEADER_BYTES)?;
    let body_len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let end = pos + RECORD_HEADER_BYTES + body_len;
    ((PAYLOAD_PREFIX_BYTES..=MAX_RECORD_BYTES).contains(&body_len) && end <= data.len())
        .then_some(end)
}

/// The valid records of a segment after its header, and where they end.
fn parse_records(data: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES.min(data.len());
    while let Some((r, next)) = parse_one(data, pos) {
        records.push(r);
        pos = next;
    }
    (records, pos)
}

fn le_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?))
}

fn read_meta(dir: &Path) -> Option<Meta> {
    let path = dir.join(META_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(file = %path.display(), cause = %e, "failed to read the spool's meta file");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(meta) => Some(meta),
        Err(e) => {
            warn!(file = %path.display(), cause = %e, "corrupt spool meta file; spool discarded");
            None
        }
    }
}

/// Segment files in `dir`, oldest first.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::state(dir, e))? {
        let entry = entry.map_err(|e| Error::state(dir, e))?;
        let path = entry.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            out.push((first, path));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Counts the records of a segment discarded because the meta file is missing or unreadable.
fn discard_unreadable(path: &Path, rec: &mut Recovery) {
    let Ok(data) = fs::read(path) else { return };
    rec.skipped_bytes += data.len() as u64;
    if matches!(data.get(..8), Some(m) if m == SEGMENT_MAGIC || m == SEGMENT_MAGIC_V1) {
        let (records, _) = parse_records(&data);
        rec.corrupt_samples += records.iter().map(|r| r.samples).sum::<u64>();
    }
}

fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        warn!(file = %path.display(), cause = %e, "failed to delete a spool file");
    }
}

fn truncate(path: &Path, len: u64) {
    let result = OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len).and_then(|()| f.sync_data()));
    if let Err(e) = result {
        warn!(file = %path.display(), cause = %e, "failed to cut off a corrupt spool tail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    fn open(dir: &Path, max: u64) -> (DiskSpool, Recovery) {
        DiskSpool::open_with_segments(dir, max, 256, "s1").expect("open")
    }

    fn seqs(spool: &DiskSpool) -> Vec<u64> {
        spool.after(0).iter().map(|(s, _)| *s).collect()
    }

    fn newest_segment(dir: &Path) -> PathBuf {
        list_segments(dir)
            .expect("list")
            .pop()
            .expect("a segment")
            .1
    }

    #[test]
    fn batches_survive_a_reopen_and_acks_do_not_come_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, rec) = open(dir.path(), 10_000);
        assert_eq!(rec, Recovery::default());
        spool.reset(42);
        for seq in 1..=10 {
            assert_eq!(spool.push(seq, payload(100, seq as u8), 3), 0);
        }
        spool.ack(4);
        drop(spool);
        let (spool, rec) = open(dir.path(), 10_000);
        assert_eq!(rec.epoch, Some(42));
        assert_eq!((rec.batches, rec.samples, rec.corrupt_records), (6, 18, 0));
        assert_eq!(seqs(&spool), [5, 6, 7, 8, 9, 10]);
        assert_eq!(
            spool.after(8)[0].1,
            payload(100, 9),
            "payloads read back intact"
        );
        assert_eq!((spool.oldest(), spool.newest()), (Some(5), Some(10)));
        assert_eq!((spool.bytes(), spool.samples()), (600, 18));
    }

    #[test]
    fn acked_segments_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 10_000);
        spool.reset(1);
        for seq in 1..=12 {
            spool.push(seq, payload(100, 0), 1);
        }
        let before = list_segments(dir.path()).expect("list").len();
        assert!(before >= 4, "{before} segments of 256 bytes");
        spool.ack(12);
        assert_eq!(list_segments(dir.path()).expect("list").len(), 0);
        spool.push(13, payload(100, 0), 1);
        assert_eq!(seqs(&spool), [13]);
    }

    #[test]
    fn the_bound_drops_the_oldest_and_a_giant_drops_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 250);
        spool.reset(1);
        spool.push(1, payload(100, 1), 7);
        spool.push(2, payload(100, 2), 5);
        assert_eq!(spool.push(3, payload(100, 3), 1), 7);
        drop(spool);
        let (mut spool, _) = open(dir.path(), 250);
        assert_eq!(seqs(&spool), [2, 3], "the drop persisted");
        assert_eq!(spool.push(4, payload(300, 4), 2), 5 + 1 + 2);
        assert_eq!(spool.oldest(), None);
        drop(spool);
        let (spool, rec) = open(dir.path(), 250);
        assert_eq!((spool.oldest(), rec.batches), (None, 0));
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_counted_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 10_000);
        spool.reset(9);
        for seq in 1..=3 {
            spool.push(seq, payload(50, 0), 2);
        }
        std::mem::forget(spool); // a crash: no Drop
        let seg = newest_segment(dir.path());
        let len = fs::metadata(&seg).expect("stat").len();
        truncate(&seg, len - 10);
        let (spool, rec) = open(dir.path(), 10_000);
        assert_eq!(seqs(&spool), [1, 2]);
        assert_eq!(rec.corrupt_records, 1);
        drop(spool);
        let (spool, rec) = open(dir.path(), 10_000);
        assert_eq!(
            (seqs(&spool), rec.corrupt_records),
            (vec![1, 2], 0),
            "cut off for good"
        );
    }

    #[test]
    fn corruption_in_the_middle_discards_what_follows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 10_000);
        spool.reset(9);
        for seq in 1..=8 {
            spool.push(seq, payload(100, 0), 1);
        }
        drop(spool);
        // Flip a byte in the first record of the second segment.
        let files = list_segments(dir.path()).expect("list");
        let (_, second) = &files[1];
        let mut data = fs::read(second).expect("read");
        data[SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 20] ^= 0xff;
        fs::write(second, data).expect("write");
        let (spool, rec) = open(dir.path(), 10_000);
        let kept = seqs(&spool);
        assert_eq!(
            kept,
            (1..=kept.len() as u64).collect::<Vec<_>>(),
            "a prefix"
        );
        assert_eq!(rec.corrupt_records, 1);
        assert_eq!(
            kept.len() as u64 + 1 + rec.corrupt_samples,
            8,
            "every other record counted as lost"
        );
    }

    #[test]
    fn garbage_files_never_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(META_FILE), b"{not json").expect("write");
        fs::write(dir.path().join(format!("{:020}.seg", 1)), b"KRSPOOL1junk").expect("write");
        let (spool, rec) = open(dir.path(), 10_000);
        assert_eq!((spool.oldest(), rec.batches), (None, 0));
        fs::write(dir.path().join(format!("{:020}.seg", 5)), vec![0xff; 300]).expect("write");
        let (spool, _) = open(dir.path(), 10_000);
        assert_eq!(spool.oldest(), None);
    }

    #[test]
    fn a_record_claiming_the_last_sequence_number_does_not_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 10_000);
        spool.reset(1);
        spool.push(u64::MAX - 1, payload(10, 1), 1);
        spool.push(u64::MAX, payload(10, 2), 1);
        drop(spool);
        let (spool, rec) = open(dir.path(), 10_000);
        assert_eq!(
            (seqs(&spool), rec.corrupt_records),
            (vec![u64::MAX - 1, u64::MAX], 0)
        );
    }

    /// Polls `done` until it holds or a generous deadline passes.
    fn eventually(mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + 10 * SYNC_INTERVAL;
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        done()
    }

    #[test]
    fn a_write_followed_by_silence_is_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) =
            DiskSpool::open_with_segments(dir.path(), 10_000, 10_000, "s1").expect("open");
        spool.reset(1);
        spool.push(1, payload(10, 1), 1);
        // The new segment handed to the syncer is synced at once.
        assert!(
            eventually(|| spool.syncs() >= 1),
            "the new segment is synced"
        );
        std::thread::sleep(SYNC_INTERVAL + SYNC_INTERVAL / 2);
        let before = spool.syncs();
        // Same segment, then nothing else happens.
        spool.push(2, payload(10, 2), 1);
        assert!(
            eventually(|| spool.syncs() > before),
            "a write followed by silence is synced within about {SYNC_INTERVAL:?}"
        );
        assert!(!spool.sync.dirty.load(Ordering::Acquire));
    }

    #[test]
    fn an_empty_meta_file_discards_the_segments_and_counts_their_samples() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 10_000);
        spool.reset(7);
        for seq in 1..=4 {
            spool.push(seq, payload(100, 0), 3);
        }
        drop(spool);
        // A rename whose data never reached the disk before a power cut.
        File::create(dir.path().join(META_FILE)).expect("truncate meta");
        let (spool, rec) = open(dir.path(), 10_000);
        assert_eq!((spool.oldest(), rec.batches, rec.epoch), (None, 0, None));
        assert_eq!(rec.corrupt_samples, 12, "every discarded sample counted");
        assert!(rec.skipped_bytes > 0);
        assert!(list_segments(dir.path()).expect("list").is_empty());
        drop(spool);
        let (_, rec) = open(dir.path(), 10_000);
        assert_eq!(rec, Recovery::default(), "counted once");
    }

    #[test]
    fn the_trim_point_is_written_by_the_first_push_after_the_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) =
            DiskSpool::open_with_segments(dir.path(), 10_000, 10_000, "s1").expect("open");
        spool.reset(1);
        for seq in 1..=3 {
            spool.push(seq, payload(10, seq as u8), 1);
        }
        spool.ack(2); // one segment, still live: nothing deleted
        std::thread::sleep(SYNC_INTERVAL);
        spool.push(4, payload(10, 4), 1);
        assert_eq!(spool.durable_trim(), 2);
        std::mem::forget(spool); // a crash: no Drop
        let (spool, _) = open(dir.path(), 10_000);
        assert_eq!(seqs(&spool), [3, 4]);
    }

    #[test]
    fn segments_of_the_older_format_are_discarded_unread_and_counted_as_superseded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 10_000);
        spool.reset(5);
        for seq in 1..=6 {
            spool.push(seq, payload(100, seq as u8), 4);
        }
        spool.ack(2);
        drop(spool);
        // What a sender of protocol 1 left behind: the same records under `KRSPOOL1`.
        let files = list_segments(dir.path()).expect("list");
        assert!(files.len() > 1);
        for (_, path) in &files {
            let mut data = fs::read(path).expect("read");
            data[..8].copy_from_slice(SEGMENT_MAGIC_V1);
            fs::write(path, data).expect("write");
        }
        let (spool, rec) = open(dir.path(), 10_000);
        assert_eq!((spool.oldest(), rec.batches, rec.epoch), (None, 0, None));
        assert_eq!(
            rec.superseded_samples,
            4 * 4,
            "the unacknowledged batches 3 to 6"
        );
        assert_eq!((rec.corrupt_records, rec.corrupt_samples), (0, 0));
        assert!(list_segments(dir.path()).expect("list").is_empty());
        drop(spool);
        let (_, rec) = open(dir.path(), 10_000);
        assert_eq!(rec, Recovery::default(), "counted once");
    }

    #[test]
    fn new_segments_carry_the_format_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 10_000);
        spool.reset(5);
        spool.push(1, payload(10, 1), 1);
        let data = fs::read(newest_segment(dir.path())).expect("read");
        assert_eq!(&data[..8], b"KRSPOOL2");
    }

    #[test]
    fn another_sender_ids_spool_is_discarded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 10_000);
        spool.reset(3);
        spool.push(1, payload(10, 0), 1);
        drop(spool);
        assert_eq!(
            DiskSpool::stored_sender_id(dir.path()).as_deref(),
            Some("s1")
        );
        let (spool, rec) =
            DiskSpool::open_with_segments(dir.path(), 10_000, 256, "s2").expect("open");
        assert_eq!((spool.oldest(), rec.epoch), (None, None));
    }
}
