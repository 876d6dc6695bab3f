//! The durable on-disk queue of one remote-write URL: segment files written by one
//! dedicated thread, read back by another, deleted once delivered, bounded in bytes.
//!
//! # Format
//! A queue directory holds segments `<16 hex digits>.seg`, numbered upwards, and `cursor`.
//! A segment is a run of records `[u32 LE length][u32 LE crc32 of the payload][payload]`;
//! the payload's first byte is its type:
//! - `1` series: varint id, then the cluster and the encoded labels (varint length + bytes
//!   each). Ids are local to the segment's writer: a series is recorded once per segment,
//!   before its first sample there, so labels are not repeated per sample (as Prometheus'
//!   WAL does);
//! - `2` samples: varint count, then per sample a varint series id, the timestamp as a
//!   zig-zag varint delta from the previous one in the record, and the value's 8 bytes.
//!
//! A record that does not check out (a torn tail after `kill -9` during a write, a bad crc)
//! ends the segment: the writer truncates it there when it starts. Every start opens a new
//! segment, since series ids start afresh with each process.
//!
//! `cursor` holds `(segment, offset)` and a crc: every sample record ending at or before it
//! has been delivered (or dropped and counted). It is rewritten in place as deliveries
//! complete, so a restart re-sends at most the requests that were in flight.
//!
//! # Durability
//! A batch counts as queued once `write(2)` returned: it is in the page cache and survives a
//! `kill -9` of the receiver. The writer thread `fdatasync`s the open segment at most once a
//! second and when it closes a segment, so a power loss can lose about the last second.
//!
//! # Bounds
//! When the segments exceed the byte limit the oldest segment goes, read or not; its samples
//! not yet sent are counted as dropped (`reason="queue_full"`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::history::{Sample, Series};
use super::wire::put_varint;

const SERIES: u8 = 1;
const SAMPLES: u8 = 2;
const HEADER: usize = 8;
/// Largest record accepted when reading (a bigger length is a torn or corrupt tail).
const MAX_RECORD: usize = 64 << 20;
/// Most samples in one record (a bigger job is split).
const RECORD_SAMPLES: usize = 4096;

/// Bytes of one segment for a queue bounded by `max_bytes`: an eighth of it, within
/// [64 KiB, 64 MiB], so dropping the oldest segment frees a bounded share.
pub fn segment_bytes(max_bytes: u64) -> u64 {
    (max_bytes / 8).clamp(64 << 10, 64 << 20)
}

/// One batch of samples to queue, numbered so the session can wait for it.
#[derive(Debug)]
pub struct Job {
    /// Consecutive per queue, from 1.
    pub ticket: u64,
    /// The samples, shared by every URL's queue.
    pub samples: Arc<[Sample]>,
}

/// A segment's bookkeeping.
#[derive(Debug, Clone, Copy)]
struct Segment {
    no: u64,
    bytes: u64,
    samples: u64,
    /// Samples the reader has taken from it.
    read: u64,
}

/// What the writer and reader share.
#[derive(Debug, Default)]
struct State {
    segments: VecDeque<Segment>,
    /// Bytes of the newest segment that are written (the reader reads no further).
    head_len: u64,
    /// Set when the writer stopped.
    closed: bool,
}

/// Counters the queue keeps for the self-metrics.
#[derive(Debug)]
pub struct QueueStats {
    /// Bytes of all segments.
    pub bytes: AtomicU64,
    /// Samples dropped because the queue was full.
    pub dropped_full: AtomicU64,
    /// Newest sample timestamp written, ms.
    pub newest_written_ms: AtomicI64,
    /// Oldest sample timestamp written since start, ms (`i64::MAX` before the first).
    pub oldest_written_ms: AtomicI64,
    /// Failed writes (retried).
    pub write_errors: AtomicU64,
}

impl Default for QueueStats {
    fn default() -> Self {
        QueueStats {
            bytes: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            newest_written_ms: AtomicI64::new(0),
            oldest_written_ms: AtomicI64::new(i64::MAX),
            write_errors: AtomicU64::new(0),
        }
    }
}

/// The shared half of a queue: state, wake-ups, stats.
#[derive(Debug)]
pub struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    changed: Condvar,
    /// The stats.
    pub stats: QueueStats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Wakes the reader (new data, a completed delivery, shutdown).
    pub fn wake(&self) {
        self.changed.notify_all();
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn segment_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:016x}.seg"))
}

/// Opens the queue in `dir` (created if missing): checks existing segments, truncating a
/// torn tail and noting each series' last timestamp in `floors`, and starts the writer
/// thread, which takes [`Job`]s from `jobs` and publishes the last ticket written on the
/// returned `watch`.
///
/// # Errors
/// When the directory or a segment cannot be read or created.
pub fn open(
    dir: &Path,
    max_bytes: u64,
    jobs: mpsc::Receiver<Job>,
    name: String,
    floors: &mut Floors,
) -> io::Result<(
    Arc<Shared>,
    watch::Receiver<u64>,
    std::thread::JoinHandle<()>,
)> {
    std::fs::create_dir_all(dir)?;
    let mut found: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            u64::from_str_radix(name.strip_suffix(".seg")?, 16).ok()
        })
        .collect();
    found.sort_unstable();
    let mut segments = VecDeque::new();
    for no in &found {
        let path = segment_path(dir, *no);
        let (good, samples) = scan(&path, floors)?;
        let len = std::fs::metadata(&path)?.len();
        if good < len {
            warn!(segment = %path.display(), kept = good, cut = len - good, "remote-write queue: truncating a torn tail");
            OpenOptions::new().write(true).open(&path)?.set_len(good)?;
        }
        segments.push_back(Segment {
            no: *no,
            bytes: good,
            samples,
            read: 0,
        });
    }
    let head_no = found.last().map_or(1, |n| n + 1);
    let file = create_segment(dir, head_no)?;
    segments.push_back(Segment {
        no: head_no,
        bytes: 0,
        samples: 0,
        read: 0,
    });
    let backlog: u64 = segments.iter().map(|s| s.samples).sum();
    if backlog > 0 {
        info!(queue = %name, samples = backlog, segments = segments.len() - 1, "remote-write queue: resuming with samples on disk");
    }
    let shared = Arc::new(Shared {
        dir: dir.to_owned(),
        state: Mutex::new(State {
            segments,
            head_len: 0,
            closed: false,
        }),
        changed: Condvar::new(),
        stats: QueueStats::default(),
    });
    shared.stats.bytes.store(
        lock(&shared.state).segments.iter().map(|s| s.bytes).sum(),
        Ordering::Relaxed,
    );
    let (written_tx, written_rx) = watch::channel(0);
    let writer = Writer {
        shared: shared.clone(),
        file,
        no: head_no,
        len: 0,
        in_segment: HashSet::new(),
        buf: Vec::with_capacity(1 << 16),
        max_bytes,
        segment_bytes: segment_bytes(max_bytes),
        dirty: false,
        last_sync: Instant::now(),
        name: name.clone(),
    };
    let handle = std::thread::Builder::new()
        .name(format!("rw-queue-{}", short(&name)))
        .spawn(move || writer.run(jobs, written_tx))?;
    Ok((shared, written_rx, handle))
}

fn short(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect()
}

fn create_segment(dir: &Path, no: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, no))?;
    // The new name must survive a power loss as well as its data.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(file)
}

/// Last sample timestamp per series (encoded labels) found in a queue.
pub type Floors = HashMap<Box<[u8]>, i64>;

/// Length of the valid prefix of a segment and the samples in it; the last timestamp of
/// each series in it goes into `floors`.
fn scan(path: &Path, floors: &mut Floors) -> io::Result<(u64, u64)> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut off = 0;
    let mut samples = 0;
    let mut series: HashMap<u64, Box<[u8]>> = HashMap::new();
    while let Some((payload, next)) = record_at(&data, off) {
        match payload.first() {
            Some(&SAMPLES) => {
                samples += varint(&payload[1..]).map_or(0, |(n, _)| n);
                for (id, ts, _) in sample_entries(&payload[1..]) {
                    if let Some(labels) = series.get(&id) {
                        let last = floors.entry(labels.clone()).or_insert(ts);
                        *last = (*last).max(ts);
                    }
                }
            }
            Some(&SERIES) => {
                if let Some(s) = parse_series(&payload[1..]) {
                    series.insert(s.id, s.labels);
                }
            }
            _ => {}
        }
        off = next;
    }
    Ok((off as u64, samples))
}

/// `(series id, timestamp, value)` of a samples record's payload (after its type byte).
fn sample_entries(p: &[u8]) -> Vec<(u64, i64, f64)> {
    let Some((count, mut i)) = varint(p) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(count.min(RECORD_SAMPLES as u64) as usize);
    let mut ts = 0i64;
    for _ in 0..count {
        let Some((id, n)) = p.get(i..).and_then(varint) else {
            break;
        };
        i += n;
        let Some((zz, n)) = p.get(i..).and_then(varint) else {
            break;
        };
        i += n;
        let delta = ((zz >> 1) as i64) ^ -((zz & 1) as i64);
        ts = ts.wrapping_add(delta);
        let Some(v) = p.get(i..i + 8) else { break };
        i += 8;
        let mut bytes = [0; 8];
        bytes.copy_from_slice(v);
        out.push((id, ts, f64::from_le_bytes(bytes)));
    }
    out
}

/// The record at `off` of `data`: its payload and the offset after it, or `None` at the end
/// or at a torn or corrupt record.
fn record_at(data: &[u8], off: usize) -> Option<(&[u8], usize)> {
    let header = data.get(off..off + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let payload = data.get(off + HEADER..off + HEADER + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, off + HEADER + len))
}

/// A protobuf-style varint at the start of `b`: value and length.
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((v, i + 1));
        }
    }
    None
}

fn bytes_field(b: &[u8]) -> Option<(&[u8], usize)> {
    let (len, n) = varint(b)?;
    let len = usize::try_from(len).ok()?;
    Some((b.get(n..n + len)?, n + len))
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    no: u64,
    len: u64,
    in_segment: HashSet<u64>,
    buf: Vec<u8>,
    max_bytes: u64,
    segment_bytes: u64,
    dirty: bool,
    last_sync: Instant,
    name: String,
}

impl Writer {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>, written: watch::Sender<u64>) {
        let mut last_error: Option<Instant> = None;
        loop {
            let job = if self.dirty {
                // Sync within a second of the last write even when no job follows.
                match jobs.try_recv() {
                    Ok(job) => Some(job),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        if self.last_sync.elapsed() >= Duration::from_secs(1) {
                            self.sync();
                            jobs.blocking_recv()
                        } else {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            } else {
                jobs.blocking_recv()
            };
            let Some(job) = job else { break };
            loop {
                match self.write(&job.samples) {
                    Ok(()) => break,
                    Err(e) => {
                        self.shared
                            .stats
                            .write_errors
                            .fetch_add(1, Ordering::Relaxed);
                        if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            warn!(queue = %self.name, cause = %e, "failed to write to the remote-write queue; retrying every second (acknowledgements wait)");
                            last_error = Some(Instant::now());
                        }
                        let _ = self.file.set_len(self.len);
                        let _ = self.file.seek(SeekFrom::Start(self.len));
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
            let _ = written.send(job.ticket);
            if self.last_sync.elapsed() >= Duration::from_secs(1) {
                self.sync();
            }
        }
        self.sync();
        lock(&self.shared.state).closed = true;
        self.shared.wake();
    }

    fn sync(&mut self) {
        if self.dirty {
            let _ = self.file.sync_data();
            self.dirty = false;
        }
        self.last_sync = Instant::now();
    }

    fn write(&mut self, samples: &[Sample]) -> io::Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        if self.len >= self.segment_bytes {
            self.rotate()?;
        }
        self.buf.clear();
        let mut newest = i64::MIN;
        let mut oldest = i64::MAX;
        for chunk in samples.chunks(RECORD_SAMPLES) {
            for s in chunk {
                if self.in_segment.insert(s.series.id) {
                    series_record(&mut self.buf, &s.series);
                }
            }
            let start = self.buf.len();
            self.buf.extend_from_slice(&[0; HEADER]);
            self.buf.push(SAMPLES);
            put_varint(&mut self.buf, chunk.len() as u64);
            let mut prev = 0i64;
            for s in chunk {
                put_varint(&mut self.buf, s.series.id);
                let delta = s.timestamp_ms.wrapping_sub(prev);
                put_varint(&mut self.buf, ((delta << 1) ^ (delta >> 63)) as u64);
                prev = s.timestamp_ms;
                self.buf.extend_from_slice(&s.value.to_le_bytes());
                newest = newest.max(s.timestamp_ms);
                oldest = oldest.min(s.timestamp_ms);
            }
            seal(&mut self.buf, start);
        }
        self.file.write_all(&self.buf)?;
        self.len += self.buf.len() as u64;
        self.dirty = true;
        self.shared
            .stats
            .newest_written_ms
            .fetch_max(newest, Ordering::Relaxed);
        self.shared
            .stats
            .oldest_written_ms
            .fetch_min(oldest, Ordering::Relaxed);
        let mut dropped = 0;
        let mut removed = Vec::new();
        {
            let mut st = lock(&self.shared.state);
            st.head_len = self.len;
            if let Some(head) = st.segments.back_mut() {
                head.bytes = self.len;
                head.samples += samples.len() as u64;
            }
            let mut total: u64 = st.segments.iter().map(|s| s.bytes).sum();
            while total > self.max_bytes && st.segments.len() > 1 {
                if let Some(old) = st.segments.pop_front() {
                    total -= old.bytes;
                    dropped += old.samples.saturating_sub(old.read);
                    removed.push(old.no);
                }
            }
            self.shared.stats.bytes.store(total, Ordering::Relaxed);
        }
        self.shared.wake();
        if !removed.is_empty() {
            for no in &removed {
                let _ = std::fs::remove_file(segment_path(&self.shared.dir, *no));
            }
            self.shared
                .stats
                .dropped_full
                .fetch_add(dropped, Ordering::Relaxed);
            warn!(queue = %self.name, segments = removed.len(), samples = dropped, "remote-write queue full: dropped its oldest data");
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.sync();
        let no = self.no + 1;
        let file = create_segment(&self.shared.dir, no)?;
        self.file = file;
        self.no = no;
        self.len = 0;
        self.in_segment.clear();
        let mut st = lock(&self.shared.state);
        st.segments.push_back(Segment {
            no,
            bytes: 0,
            samples: 0,
            read: 0,
        });
        st.head_len = 0;
        Ok(())
    }
}

fn series_record(buf: &mut Vec<u8>, s: &Series) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    buf.push(SERIES);
    put_varint(buf, s.id);
    put_varint(buf, s.cluster.len() as u64);
    buf.extend_from_slice(s.cluster.as_bytes());
    put_varint(buf, s.labels.len() as u64);
    buf.extend_from_slice(&s.labels);
    seal(buf, start);
}

/// Fills in the header of the record starting at `start`.
fn seal(buf: &mut [u8], start: usize) {
    let payload = &buf[start + HEADER..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// A position in the queue: segment and byte offset.
pub type Position = (u64, u64);

/// Samples read from one record, with where the record ends.
#[derive(Debug)]
pub struct Chunk {
    /// Where the record ends: delivered up to here once these samples are.
    pub end: Position,
    /// The samples.
    pub samples: Vec<Sample>,
}

/// Reads the queue in order on its own thread (blocking file reads), from the cursor.
#[derive(Debug)]
pub struct Reader {
    shared: Arc<Shared>,
    pos: Position,
    /// Samples before this position are delivered (from the cursor at start).
    skip_until: Position,
    series: HashMap<u64, Arc<Series>>,
    file: Option<(u64, File)>,
    buf: Vec<u8>,
}

impl Reader {
    /// A reader starting at the persisted cursor (or the oldest segment).
    pub fn new(shared: Arc<Shared>) -> Self {
        let cursor = read_cursor(&shared.dir);
        let oldest = lock(&shared.state).segments.front().map_or(0, |s| s.no);
        let skip_until = cursor.unwrap_or((0, 0));
        Reader {
            shared,
            pos: (skip_until.0.max(oldest), 0),
            skip_until,
            series: HashMap::new(),
            file: None,
            buf: Vec::new(),
        }
    }

    /// The next records' samples (at most about `max_bytes` of records), blocking up to
    /// `wait` for data. Empty when none arrived; `None` once the writer stopped and
    /// everything was read.
    pub fn next(&mut self, max_bytes: u64, wait: Duration) -> Option<Vec<Chunk>> {
        let (seg, end, is_head) = {
            let mut st = lock(&self.shared.state);
            loop {
                // Dropped from under us: continue with the oldest segment left.
                let oldest = st.segments.front().map_or(self.pos.0, |s| s.no);
                if self.pos.0 < oldest {
                    self.pos = (oldest, 0);
                    self.series.clear();
                }
                let head = st.segments.back().map_or(self.pos.0, |s| s.no);
                if self.pos.0 < head {
                    let bytes = st
                        .segments
                        .iter()
                        .find(|s| s.no == self.pos.0)
                        .map(|s| s.bytes);
                    match bytes {
                        Some(bytes) if self.pos.1 < bytes => break (self.pos.0, bytes, false),
                        _ => {
                            // Finished (or a gap in the numbering): next segment.
                            self.pos = (self.pos.0 + 1, 0);
                            self.series.clear();
                            continue;
                        }
                    }
                }
                if self.pos.1 < st.head_len {
                    break (self.pos.0, st.head_len, true);
                }
                if st.closed {
                    return None;
                }
                let (guard, _) = self
                    .shared
                    .changed
                    .wait_timeout(st, wait)
                    .unwrap_or_else(|p| p.into_inner());
                st = guard;
                let ready =
                    st.segments.back().map_or(0, |s| s.no) > self.pos.0 || self.pos.1 < st.head_len;
                if !ready {
                    return Some(Vec::new());
                }
            }
        };
        let _ = is_head;
        let want = (end - self.pos.1).min(max_bytes.max(MAX_RECORD as u64 / 8));
        match self.read_at(seg, self.pos.1, want) {
            Ok(()) => {}
            Err(e) => {
                warn!(segment = seg, cause = %e, "failed to read the remote-write queue; skipping the segment");
                self.pos = (seg + 1, 0);
                self.series.clear();
                return Some(Vec::new());
            }
        }
        let mut chunks = Vec::new();
        let mut off = 0;
        let mut taken = 0;
        while let Some((payload, next)) = record_at(&self.buf, off) {
            let end_pos = (seg, self.pos.1 + next as u64);
            match payload.first() {
                Some(&SERIES) => {
                    if let Some(s) = parse_series(&payload[1..]) {
                        self.series.insert(s.id, Arc::new(s));
                    }
                }
                Some(&SAMPLES) => {
                    let samples = self.parse_samples(&payload[1..]);
                    if end_pos > self.skip_until {
                        taken += samples.len() as u64;
                        chunks.push(Chunk {
                            end: end_pos,
                            samples,
                        });
                    }
                }
                _ => {}
            }
            off = next;
        }
        if off == 0 && self.buf.len() as u64 >= want && want < end - self.pos.1 {
            // A record longer than what was read: read more next time.
        }
        if off == 0 && want == end - self.pos.1 {
            // Nothing valid in what remains of a finished segment: move on.
            if seg
                < lock(&self.shared.state)
                    .segments
                    .back()
                    .map_or(seg, |s| s.no)
            {
                self.pos = (seg + 1, 0);
                self.series.clear();
                return Some(chunks);
            }
        }
        self.pos.1 += off as u64;
        if taken > 0 {
            let mut st = lock(&self.shared.state);
            if let Some(s) = st.segments.iter_mut().find(|s| s.no == seg) {
                s.read += taken;
            }
        }
        Some(chunks)
    }

    fn read_at(&mut self, seg: u64, off: u64, len: u64) -> io::Result<()> {
        if self.file.as_ref().is_none_or(|(no, _)| *no != seg) {
            self.file = Some((seg, File::open(segment_path(&self.shared.dir, seg))?));
        }
        let Some((_, file)) = &self.file else {
            return Ok(());
        };
        self.buf.resize(len as usize, 0);
        let mut got = 0;
        while got < self.buf.len() {
            let n = file.read_at(&mut self.buf[got..], off + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        self.buf.truncate(got);
        Ok(())
    }

    fn parse_samples(&self, p: &[u8]) -> Vec<Sample> {
        sample_entries(p)
            .into_iter()
            .filter_map(|(id, timestamp_ms, value)| {
                Some(Sample {
                    series: self.series.get(&id)?.clone(),
                    timestamp_ms,
                    value,
                })
            })
            .collect()
    }
}

fn parse_series(p: &[u8]) -> Option<Series> {
    let (id, mut i) = varint(p)?;
    let (cluster, n) = bytes_field(&p[i..])?;
    i += n;
    let (labels, _) = bytes_field(&p[i..])?;
    Some(Series::new(
        id,
        Arc::from(std::str::from_utf8(cluster).ok()?),
        labels.into(),
    ))
}

/// Delivery bookkeeping: chunks handed out in queue order complete in any order; the
/// cursor is the end of the longest completed prefix.
#[derive(Debug, Default)]
pub struct Progress {
    inner: Mutex<ProgressInner>,
}

#[derive(Debug, Default)]
struct ProgressInner {
    next: u64,
    /// Chunk number → (end, samples not yet done).
    open: BTreeMap<u64, (Position, usize)>,
    /// End of the completed prefix, when it moved since last taken.
    done: Option<Position>,
}

impl Progress {
    /// Registers a chunk of `samples` ending at `end`; returns its number.
    pub fn start(&self, end: Position, samples: usize) -> u64 {
        let mut p = lock(&self.inner);
        let n = p.next;
        p.next += 1;
        p.open.insert(n, (end, samples));
        n
    }

    /// Marks `count` samples of chunk `n` done.
    pub fn finish(&self, n: u64, count: usize) {
        let mut p = lock(&self.inner);
        if let Some(entry) = p.open.get_mut(&n) {
            entry.1 = entry.1.saturating_sub(count);
        }
        while let Some(entry) = p.open.first_entry() {
            if entry.get().1 > 0 {
                break;
            }
            let (end, _) = entry.remove();
            p.done = Some(end);
        }
    }

    /// The new end of the completed prefix, if it moved.
    pub fn take_done(&self) -> Option<Position> {
        lock(&self.inner).done.take()
    }

    /// Samples handed out and not done.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner).open.values().map(|(_, n)| n).sum()
    }
}

/// Persists the cursor and deletes the segments entirely before it. Blocking: call it from
/// the reader's thread.
pub fn commit(shared: &Shared, pos: Position) {
    let mut buf = Vec::with_capacity(20);
    buf.extend_from_slice(&pos.0.to_le_bytes());
    buf.extend_from_slice(&pos.1.to_le_bytes());
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let path = shared.dir.join("cursor");
    let written = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .and_then(|f| f.write_all_at(&buf, 0));
    if let Err(e) = written {
        warn!(path = %path.display(), cause = %e, "failed to write the remote-write cursor");
    }
    let delivered: Vec<u64> = {
        let mut st = lock(&shared.state);
        let mut gone = Vec::new();
        while st.segments.len() > 1 && st.segments.front().is_some_and(|s| s.no < pos.0) {
            if let Some(s) = st.segments.pop_front() {
                gone.push(s.no);
            }
        }
        shared
            .stats
            .bytes
            .store(st.segments.iter().map(|s| s.bytes).sum(), Ordering::Relaxed);
        gone
    };
    for no in delivered {
        let _ = std::fs::remove_file(segment_path(&shared.dir, no));
    }
}

fn read_cursor(dir: &Path) -> Option<Position> {
    let data = std::fs::read(dir.join("cursor")).ok()?;
    let raw = data.get(..20)?;
    let crc = u32::from_le_bytes(raw[16..20].try_into().ok()?);
    if crc32fast::hash(&raw[..16]) != crc {
        return None;
    }
    Some((
        u64::from_le_bytes(raw[..8].try_into().ok()?),
        u64::from_le_bytes(raw[8..16].try_into().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(id: u64, name: &str) -> Arc<Series> {
        Arc::new(Series::new(
            id,
            Arc::from("c"),
            super::super::wire::encode_labels(name, "c", &[]).into_boxed_slice(),
        ))
    }

    fn samples(s: &Arc<Series>, from: i64, n: i64) -> Arc<[Sample]> {
        (from..from + n)
            .map(|t| Sample {
                series: s.clone(),
                timestamp_ms: t,
                value: t as f64,
            })
            .collect()
    }

    fn drain(reader: &mut Reader) -> Vec<Chunk> {
        let mut out = Vec::new();
        loop {
            match reader.next(1 << 20, Duration::from_millis(50)) {
                Some(c) if c.is_empty() => return out,
                Some(c) => out.extend(c),
                None => return out,
            }
        }
    }

    /// Waits (this is a plain thread) until the writer published `ticket`.
    fn wait_written(written: &watch::Receiver<u64>, ticket: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while *written.borrow() < ticket {
            assert!(
                Instant::now() < deadline,
                "the writer did not write ticket {ticket}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn send(tx: &mpsc::Sender<Job>, ticket: u64, samples: Arc<[Sample]>) {
        tx.blocking_send(Job { ticket, samples })
            .expect("writer alive");
    }

    #[test]
    fn samples_come_back_in_order_with_their_labels_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = series(1, "a");
        let (tx, rx) = mpsc::channel(4);
        let (shared, written, handle) =
            open(dir.path(), 1 << 20, rx, "q".into(), &mut Floors::new()).expect("open");
        send(&tx, 1, samples(&a, 100, 3));
        send(&tx, 2, samples(&a, 103, 2));
        wait_written(&written, 2);
        let mut reader = Reader::new(shared.clone());
        let chunks = drain(&mut reader);
        let got: Vec<i64> = chunks
            .iter()
            .flat_map(|c| c.samples.iter().map(|s| s.timestamp_ms))
            .collect();
        assert_eq!(got, vec![100, 101, 102, 103, 104]);
        assert_eq!(chunks[0].samples[0].series.labels, a.labels);
        // The first chunk is delivered; the second is not when the process dies.
        commit(&shared, chunks[0].end);
        drop(tx);
        handle.join().expect("writer");
        drop(reader);

        let (tx, rx) = mpsc::channel(4);
        let (shared, _written, handle) =
            open(dir.path(), 1 << 20, rx, "q".into(), &mut Floors::new()).expect("reopen");
        let mut reader = Reader::new(shared);
        let got: Vec<i64> = drain(&mut reader)
            .iter()
            .flat_map(|c| c.samples.iter().map(|s| s.timestamp_ms))
            .collect();
        assert_eq!(
            got,
            vec![103, 104],
            "only what was not delivered comes back"
        );
        drop(tx);
        handle.join().expect("writer");
    }

    #[test]
    fn reopening_finds_each_series_last_timestamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (series(1, "a"), series(2, "b"));
        let (tx, rx) = mpsc::channel(4);
        let (_s, written, handle) =
            open(dir.path(), 1 << 20, rx, "q".into(), &mut Floors::new()).expect("open");
        send(&tx, 1, samples(&a, 100, 3));
        send(&tx, 2, samples(&b, 50, 1));
        wait_written(&written, 2);
        drop(tx);
        handle.join().expect("writer");
        let (tx, rx) = mpsc::channel(4);
        let mut floors = Floors::new();
        let (_s, _w, handle) =
            open(dir.path(), 1 << 20, rx, "q".into(), &mut floors).expect("reopen");
        assert_eq!(floors.get(&a.labels), Some(&102));
        assert_eq!(floors.get(&b.labels), Some(&50));
        drop(tx);
        handle.join().expect("writer");
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = series(1, "a");
        let (tx, rx) = mpsc::channel(4);
        let (_shared, _w, handle) =
            open(dir.path(), 1 << 20, rx, "q".into(), &mut Floors::new()).expect("open");
        send(&tx, 1, samples(&a, 1, 10));
        drop(tx);
        handle.join().expect("writer");
        let seg = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new()
            .append(true)
            .open(&seg)
            .expect("open segment");
        f.write_all(&[40, 0, 0, 0, 1, 2]).expect("torn write");
        drop(f);
        let (tx, rx) = mpsc::channel(4);
        let (shared, _w, handle) =
            open(dir.path(), 1 << 20, rx, "q".into(), &mut Floors::new()).expect("reopen");
        let mut reader = Reader::new(shared);
        let n: usize = drain(&mut reader).iter().map(|c| c.samples.len()).sum();
        assert_eq!(n, 10);
        drop(tx);
        handle.join().expect("writer");
    }

    #[test]
    fn a_full_queue_drops_its_oldest_segment_and_counts_the_samples() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = series(1, "a");
        let (tx, rx) = mpsc::channel(4);
        let max = 256 << 10; // segments of 64 KiB
        let (shared, written, handle) =
            open(dir.path(), max, rx, "q".into(), &mut Floors::new()).expect("open");
        // ~12 bytes a sample: 40,000 samples are about 480 KiB, far over the bound.
        for i in 0..40 {
            send(&tx, i + 1, samples(&a, (i * 1000) as i64, 1000));
        }
        wait_written(&written, 40);
        let bytes = shared.stats.bytes.load(Ordering::Relaxed);
        assert!(bytes <= max, "{bytes} bytes kept");
        let dropped = shared.stats.dropped_full.load(Ordering::Relaxed);
        let mut reader = Reader::new(shared.clone());
        let kept: u64 = drain(&mut reader)
            .iter()
            .map(|c| c.samples.len() as u64)
            .sum();
        assert!(dropped > 0);
        assert_eq!(
            kept + dropped,
            40_000,
            "every sample is either kept or counted"
        );
        drop(tx);
        handle.join().expect("writer");
    }

    #[test]
    fn progress_moves_only_over_a_completed_prefix() {
        let p = Progress::default();
        let a = p.start((1, 10), 2);
        let b = p.start((1, 20), 1);
        p.finish(b, 1);
        assert_eq!(p.take_done(), None);
        p.finish(a, 2);
        assert_eq!(p.take_done(), Some((1, 20)));
        assert_eq!(p.in_flight(), 0);
    }
}
