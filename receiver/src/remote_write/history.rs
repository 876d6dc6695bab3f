//! The history of every cluster as remote-write samples: what the store applies, turned
//! into samples at the time the sender observed it (docs/protocol.md, "Time and history").
//!
//! [`History`] keeps, per cluster, a table of its series beside the store's: each series'
//! labels pre-encoded for remote write ([`Series`]), its value and the timestamp of the last
//! sample written for it. The session feeds it exactly what the store applied (deltas,
//! staged snapshot parts, the snapshot swap, heartbeats), outside the store's lock, and gets
//! back the samples to queue:
//! - every update at its batch's `observed_at_ms` (a sample never goes before one already
//!   written for its series: it is moved to 1 ms after it, counted in `retimed`);
//! - every valued series again at each multiple of the interval of *cluster time* (the
//!   newest time the cluster's sender reported), with the value it had then;
//! - the staleness marker for a removal, for a series a snapshot no longer has, and for
//!   every series of a cluster that expired after the TTL;
//! - a completed snapshot writes every valued series at its time; the re-sends between the
//!   last known time and the snapshot are written only when the same session applied deltas
//!   before it (a replay: the stretch is known), never after a bare reconnect (the sender
//!   lost what happened, the stretch stays empty).
//!
//! Keeping its own table (rather than reading the store's) costs a second copy of each
//! series' labels, in the encoded form remote write needs, and leaves the store untouched
//! when remote write is off. The table follows the store's rules (series cap included), so
//! both hold the same series.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube_relay_proto::{Batch, FamilyId, MetricKind, SeriesId};
use tokio::time::Instant;

use super::wire;

/// Longest stretch of silent cluster time filled with re-sends in one step: a sender clock
/// jumping a day ahead must not write a day of samples for every series at once.
pub const MAX_FILL: Duration = Duration::from_secs(3600);

/// One series as remote write sees it. Shared (`Arc`) by the history, the queue and the
/// senders; its `id` is unique within the receiver process.
#[derive(Debug, PartialEq, Eq)]
pub struct Series {
    /// Process-unique reference (the on-disk queue names series by it).
    pub id: u64,
    /// The cluster (for a tenant header taken from it).
    pub cluster: Arc<str>,
    /// The `labels` field of a `TimeSeries`, sorted, `__name__` and `cluster` included.
    pub labels: Box<[u8]>,
    /// Hash of `labels`, which picks the shard.
    pub hash: u64,
}

impl Series {
    /// A series with a fresh `id`.
    pub fn new(id: u64, cluster: Arc<str>, labels: Box<[u8]>) -> Self {
        let mut h = DefaultHasher::new();
        labels.hash(&mut h);
        Series {
            id,
            cluster,
            labels,
            hash: h.finish(),
        }
    }
}

/// One sample to write.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Its series.
    pub series: Arc<Series>,
    /// Milliseconds since the Unix epoch, in cluster time.
    pub timestamp_ms: i64,
    /// The value (or the staleness marker).
    pub value: f64,
}

/// What the store did with a batch, as far as history is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A delta applied to the live state.
    Delta,
    /// A snapshot part staged (invisible until the last part).
    Staged,
    /// The snapshot's last part: the staged state replaced the live one.
    SnapshotComplete,
}

/// The history of every cluster (see the module docs). Cheap to share (`Arc`).
#[derive(Debug)]
pub struct History {
    interval_ms: i64,
    max_series: usize,
    next_id: AtomicU64,
    retimed: AtomicU64,
    skipped: AtomicU64,
    /// Last timestamp per series (encoded labels) in the queues a previous run left.
    floors: Mutex<HashMap<Box<[u8]>, i64>>,
    clusters: Mutex<HashMap<String, Arc<Mutex<ClusterHistory>>>>,
}

#[derive(Debug, Default)]
struct ClusterHistory {
    name: Arc<str>,
    live: Table,
    staging: Option<Staging>,
    /// Newest time the sender reported (batches and heartbeats), ms.
    time: Option<i64>,
    /// Since when no sender holds the cluster.
    down_since: Option<Instant>,
    /// Bumped by every claim, so a replaced connection's release changes nothing.
    generation: u64,
    /// A delta was applied since the last claim: the session replayed or streamed history,
    /// so a snapshot completing now follows known history.
    replayed: bool,
}

#[derive(Debug, Default)]
struct Staging {
    table: Table,
    time: i64,
}

/// Families and series of one state (live or staged).
#[derive(Debug, Default)]
struct Table {
    families: HashMap<FamilyId, (String, MetricKind)>,
    ids: HashMap<SeriesId, Entry, BuildHasherDefault<IdHasher>>,
    dropped: HashSet<SeriesId, BuildHasherDefault<IdHasher>>,
}

#[derive(Debug)]
struct Entry {
    series: Arc<Series>,
    value: f64,
    has_value: bool,
    /// Timestamp of the last sample written for the series (`i64::MIN`: none).
    last_ms: i64,
    /// `last_ms` comes from the queue a previous run left on disk: a sample at or before
    /// it was written then (a batch the sender replays because its ack was lost with the
    /// process), so it is skipped, not moved.
    restored: bool,
}

/// Fibonacci hashing for sender-chosen `u32` ids (as the store does).
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.0 = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl History {
    /// An empty history re-sending every `interval` of cluster time, holding at most
    /// `max_series` series per cluster (the store's cap).
    pub fn new(interval: Duration, max_series: usize) -> Self {
        History {
            interval_ms: i64::try_from(interval.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
            max_series,
            next_id: AtomicU64::new(1),
            retimed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            floors: Mutex::new(HashMap::new()),
            clusters: Mutex::new(HashMap::new()),
        }
    }

    /// Samples moved after a later sample of their series (a sender clock stepping back).
    pub fn retimed(&self) -> u64 {
        self.retimed.load(Ordering::Relaxed)
    }

    /// Samples not written because a previous run had queued them already.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// The last timestamp of each series (by encoded labels) in the queues a previous run
    /// left: a series defined again starts from it, and samples at or before it are
    /// skipped (the sender replays batches whose ack the previous run did not send).
    pub fn restore(&self, floors: HashMap<Box<[u8]>, i64>) {
        *lock(&self.floors) = floors;
    }

    fn floor(&self, labels: &[u8]) -> Option<i64> {
        lock(&self.floors).remove(labels)
    }

    fn count(&self, counts: &Counts) {
        self.retimed.fetch_add(counts.retimed, Ordering::Relaxed);
        self.skipped.fetch_add(counts.skipped, Ordering::Relaxed);
    }

    fn cluster(&self, name: &str) -> Arc<Mutex<ClusterHistory>> {
        lock(&self.clusters)
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(ClusterHistory {
                    name: Arc::from(name),
                    ..ClusterHistory::default()
                }))
            })
            .clone()
    }

    /// A connection took `cluster`: it is up, and a half-staged snapshot is void (as in the
    /// store). Returns the claim's generation for [`History::release`].
    pub fn claim(&self, cluster: &str) -> u64 {
        let c = self.cluster(cluster);
        let mut c = lock(&c);
        c.down_since = None;
        c.staging = None;
        c.generation += 1;
        c.replayed = false;
        c.generation
    }

    /// The connection of claim `generation` ended at `now`: unless a newer connection
    /// claimed `cluster` meanwhile, its time stands still until a sender returns, and it
    /// expires after the TTL.
    pub fn release(&self, cluster: &str, generation: u64, now: Instant) {
        let c = self.cluster(cluster);
        let mut c = lock(&c);
        if c.generation == generation {
            c.down_since = Some(now);
            c.staging = None;
        }
    }

    /// Turns a batch the store applied into samples, appended to `out`.
    pub fn apply(&self, cluster: &str, batch: &Batch, applied: Applied, out: &mut Vec<Sample>) {
        let t = i64::try_from(batch.observed_at_ms).unwrap_or(i64::MAX);
        let c = self.cluster(cluster);
        let mut c = lock(&c);
        let c = &mut *c;
        let ctx = Ctx {
            history: self,
            cluster: c.name.clone(),
        };
        match applied {
            Applied::Delta => {
                c.replayed = true;
                let before = c.time;
                ctx.advance(c, t, false, out);
                let mut counts = Counts::default();
                ctx.apply_defs(&mut c.live, batch, Some((t, &mut *out, &mut counts)));
                for &(id, value) in batch.updates.iter() {
                    if let Some(e) = c.live.ids.get_mut(&id) {
                        e.value = value.as_f64();
                        e.has_value = true;
                        push(out, e, t, e.value, &mut counts);
                    }
                }
                for id in &batch.removals {
                    if let Some(mut e) = c.live.ids.remove(id) {
                        if e.has_value {
                            push(out, &mut e, t, wire::stale_nan(), &mut counts);
                        }
                    } else {
                        c.live.dropped.remove(id);
                    }
                }
                // A batch exactly on a boundary: the series it did not change are re-sent
                // at that instant too.
                if before.is_some_and(|b| t > b) && t % self.interval_ms == 0 {
                    resend(&mut c.live, t, out);
                }
                self.count(&counts);
            }
            Applied::Staged | Applied::SnapshotComplete => {
                let staging = c.staging.get_or_insert_with(|| Staging {
                    table: Table::default(),
                    time: t,
                });
                if batch.snapshot.is_some_and(|p| p.first) {
                    *staging = Staging {
                        table: Table::default(),
                        time: t,
                    };
                }
                staging.time = staging.time.max(t);
                ctx.apply_defs(&mut staging.table, batch, None);
                for &(id, value) in batch.updates.iter() {
                    if let Some(e) = staging.table.ids.get_mut(&id) {
                        e.value = value.as_f64();
                        e.has_value = true;
                    }
                }
                for id in &batch.removals {
                    if staging.table.ids.remove(id).is_none() {
                        staging.table.dropped.remove(id);
                    }
                }
                if applied == Applied::SnapshotComplete
                    && let Some(staging) = c.staging.take()
                {
                    // After deltas of this session the stretch up to the snapshot is
                    // known (the sender replayed it): its re-sends are written first.
                    if c.replayed {
                        ctx.advance(c, staging.time, false, out);
                    }
                    ctx.swap(c, staging, out);
                }
            }
        }
    }

    /// A heartbeat stamped `sent_at_ms`: cluster time moves on, writing the re-sends due.
    pub fn heartbeat(&self, cluster: &str, sent_at_ms: u64, out: &mut Vec<Sample>) {
        let t = i64::try_from(sent_at_ms).unwrap_or(i64::MAX);
        let c = self.cluster(cluster);
        let mut c = lock(&c);
        let ctx = Ctx {
            history: self,
            cluster: c.name.clone(),
        };
        ctx.advance(&mut c, t, true, out);
    }

    /// Removes clusters down for at least `ttl` as of `now`, writing the staleness marker of
    /// each valued series at the cluster time it went away (its last time plus how long it
    /// has been down). Returns when the next one is due, if any cluster is down.
    pub fn expire(&self, now: Instant, ttl: Duration, out: &mut Vec<Sample>) -> Option<Instant> {
        let clusters: Vec<(String, Arc<Mutex<ClusterHistory>>)> = lock(&self.clusters)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut next: Option<Instant> = None;
        let mut expired = Vec::new();
        for (name, c) in clusters {
            let mut c = lock(&c);
            let Some(since) = c.down_since else { continue };
            if since + ttl > now {
                next = Some(next.map_or(since + ttl, |n| n.min(since + ttl)));
                continue;
            }
            let down_ms = i64::try_from(now.duration_since(since).as_millis()).unwrap_or(0);
            let t = c.time.map_or(0, |time| time.saturating_add(down_ms));
            let mut counts = Counts::default();
            for e in c.live.ids.values_mut() {
                if e.has_value {
                    push(out, e, t, wire::stale_nan(), &mut counts);
                }
            }
            self.count(&counts);
            expired.push(name);
        }
        let mut clusters = lock(&self.clusters);
        for name in expired {
            // Only if no sender claimed it meanwhile.
            if clusters
                .get(&name)
                .is_some_and(|c| lock(c).down_since.is_some_and(|s| s + ttl <= now))
            {
                clusters.remove(&name);
            }
        }
        next
    }

    /// Series held for `cluster` (live state), for tests and status.
    pub fn series(&self, cluster: &str) -> usize {
        lock(&self.clusters)
            .get(cluster)
            .map_or(0, |c| lock(c).live.ids.len())
    }
}

/// What the steps of one apply share.
struct Ctx<'a> {
    history: &'a History,
    cluster: Arc<str>,
}

impl Ctx<'_> {
    /// Moves cluster time to `t`, writing the re-sends of the boundaries passed (`t`
    /// included when `inclusive`; a batch at `t` writes its own changes first).
    fn advance(&self, c: &mut ClusterHistory, t: i64, inclusive: bool, out: &mut Vec<Sample>) {
        let Some(before) = c.time else {
            c.time = Some(t);
            return;
        };
        if t <= before {
            return;
        }
        c.time = Some(t);
        let step = self.history.interval_ms;
        let fill_from =
            before.max(t.saturating_sub(i64::try_from(MAX_FILL.as_millis()).unwrap_or(i64::MAX)));
        // First boundary strictly after `fill_from`.
        let mut b = (fill_from.div_euclid(step) + 1).saturating_mul(step);
        while b < t || (inclusive && b == t) {
            resend(&mut c.live, b, out);
            b = b.saturating_add(step);
        }
    }

    /// Families and series of `batch` into `table`. With `emit`, a redefined series whose
    /// labels changed gets its staleness marker.
    fn apply_defs(
        &self,
        table: &mut Table,
        batch: &Batch,
        mut emit: Option<(i64, &mut Vec<Sample>, &mut Counts)>,
    ) {
        for f in &batch.families {
            let name = match f.kind {
                MetricKind::Counter => format!("{}_total", f.name),
                MetricKind::Gauge => f.name.clone(),
            };
            table.families.insert(f.id, (name, f.kind));
        }
        for def in &batch.series {
            let Some((name, _)) = table.families.get(&def.family) else {
                continue;
            };
            let labels = wire::encode_labels(name, &self.cluster, &def.labels).into_boxed_slice();
            let old = table.ids.remove(&def.id);
            table.dropped.remove(&def.id);
            let (series, last_ms, restored) = match old {
                Some(old) if *old.series.labels == *labels => {
                    (old.series, old.last_ms, old.restored)
                }
                Some(mut old) => {
                    if let (true, Some((t, out, counts))) = (old.has_value, emit.as_mut()) {
                        push(out, &mut old, *t, wire::stale_nan(), counts);
                    }
                    let floor = self.history.floor(&labels);
                    (
                        self.new_series(labels),
                        floor.unwrap_or(i64::MIN),
                        floor.is_some(),
                    )
                }
                None => {
                    let floor = self.history.floor(&labels);
                    (
                        self.new_series(labels),
                        floor.unwrap_or(i64::MIN),
                        floor.is_some(),
                    )
                }
            };
            if table.ids.len() >= self.history.max_series {
                table.dropped.insert(def.id);
                continue;
            }
            table.ids.insert(
                def.id,
                Entry {
                    series,
                    value: 0.0,
                    has_value: false,
                    last_ms,
                    restored,
                },
            );
        }
    }

    fn new_series(&self, labels: Box<[u8]>) -> Arc<Series> {
        let id = self.history.next_id.fetch_add(1, Ordering::Relaxed);
        Arc::new(Series::new(id, self.cluster.clone(), labels))
    }

    /// A completed snapshot replaces the live table: its valued series are written at its
    /// time, series it no longer has get their staleness marker, and series it keeps (same
    /// labels) keep their identity and their last timestamp.
    fn swap(&self, c: &mut ClusterHistory, staging: Staging, out: &mut Vec<Sample>) {
        let t = staging.time;
        let mut old: HashMap<Box<[u8]>, Entry> = c
            .live
            .ids
            .drain()
            .map(|(_, e)| (e.series.labels.clone(), e))
            .collect();
        let mut table = staging.table;
        let mut counts = Counts::default();
        for e in table.ids.values_mut() {
            if let Some(prev) = old.remove(&e.series.labels) {
                e.series = prev.series;
                e.last_ms = prev.last_ms;
                e.restored = prev.restored;
            }
            if e.has_value {
                let value = e.value;
                push(out, e, t, value, &mut counts);
            }
        }
        for e in old.values_mut() {
            if e.has_value {
                push(out, e, t, wire::stale_nan(), &mut counts);
            }
        }
        self.history.count(&counts);
        c.live = table;
        c.time = Some(c.time.map_or(t, |time| time.max(t)));
    }
}

/// What [`push`] counts.
#[derive(Debug, Default)]
struct Counts {
    retimed: u64,
    skipped: u64,
}

/// Writes `value` for `e` at `t`, or 1 ms after its last sample if `t` is not later (or
/// nothing, when a previous run already wrote it).
fn push(out: &mut Vec<Sample>, e: &mut Entry, t: i64, value: f64, counts: &mut Counts) {
    if e.restored && t <= e.last_ms {
        counts.skipped += 1;
        return;
    }
    e.restored = false;
    let ts = if t > e.last_ms {
        t
    } else {
        counts.retimed += 1;
        e.last_ms.saturating_add(1)
    };
    e.last_ms = ts;
    out.push(Sample {
        series: e.series.clone(),
        timestamp_ms: ts,
        value,
    });
}

/// Every valued series without a sample at or after `b` gets its current value at `b`.
fn resend(table: &mut Table, b: i64, out: &mut Vec<Sample>) {
    for e in table.ids.values_mut() {
        if e.has_value && e.last_ms < b {
            e.last_ms = b;
            e.restored = false;
            out.push(Sample {
                series: e.series.clone(),
                timestamp_ms: b,
                value: e.value,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use kube_relay_proto::{FamilyDef, SeriesDef, SnapshotPart, Updates, Value};

    use super::*;

    const S: i64 = 1000;

    fn family() -> FamilyDef {
        FamilyDef {
            id: 0,
            name: "kube_hpa_replicas".into(),
            help: String::new(),
            kind: MetricKind::Gauge,
        }
    }

    fn def(id: SeriesId, pod: &str) -> SeriesDef {
        SeriesDef {
            id,
            family: 0,
            labels: vec![("pod".into(), pod.into())],
        }
    }

    fn updates(pairs: &[(SeriesId, f64)]) -> Updates {
        Updates::from_unsorted(pairs.iter().map(|&(id, v)| (id, Value::from(v))).collect())
    }

    fn snapshot(at: i64, defs: Vec<SeriesDef>, values: &[(SeriesId, f64)]) -> Batch {
        Batch {
            seq: 1,
            snapshot: Some(SnapshotPart {
                first: true,
                last: true,
            }),
            families: vec![family()],
            series: defs,
            updates: updates(values),
            removals: vec![],
            observed_at_ms: at as u64,
        }
    }

    fn delta(at: i64, values: &[(SeriesId, f64)], removals: Vec<SeriesId>) -> Batch {
        Batch {
            seq: 2,
            updates: updates(values),
            removals,
            observed_at_ms: at as u64,
            ..Batch::default()
        }
    }

    /// `(pod, timestamp, value)` of each sample; the staleness marker shows as `-1`.
    fn seen(samples: &[Sample]) -> Vec<(String, i64, f64)> {
        samples
            .iter()
            .map(|s| {
                let series = <wire::TimeSeries as prost::Message>::decode(&*s.series.labels)
                    .expect("labels decode");
                let pod = series
                    .labels
                    .iter()
                    .find(|l| l.name == "pod")
                    .map(|l| l.value.clone())
                    .unwrap_or_default();
                let v = if wire::is_stale_marker(s.value) {
                    -1.0
                } else {
                    s.value
                };
                (pod, s.timestamp_ms, v)
            })
            .collect()
    }

    #[test]
    fn changes_land_at_their_time_and_steady_series_are_re_sent_at_boundaries() {
        let h = History::new(Duration::from_secs(15), 100);
        let mut out = Vec::new();
        h.claim("c");
        h.apply(
            "c",
            &snapshot(
                10 * S,
                vec![def(0, "a"), def(1, "b")],
                &[(0, 2.0), (1, 5.0)],
            ),
            Applied::SnapshotComplete,
            &mut out,
        );
        let mut got = seen(&out);
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            got,
            vec![("a".into(), 10 * S, 2.0), ("b".into(), 10 * S, 5.0)]
        );
        out.clear();
        // 10 s → 47 s: boundaries 15, 30 and 45 pass with the old values, then the change.
        h.apply(
            "c",
            &delta(47 * S, &[(0, 6.0)], vec![]),
            Applied::Delta,
            &mut out,
        );
        let mut got = seen(&out);
        got.sort_by(|x, y| (x.1, &x.0).cmp(&(y.1, &y.0)));
        assert_eq!(
            got,
            vec![
                ("a".into(), 15 * S, 2.0),
                ("b".into(), 15 * S, 5.0),
                ("a".into(), 30 * S, 2.0),
                ("b".into(), 30 * S, 5.0),
                ("a".into(), 45 * S, 2.0),
                ("b".into(), 45 * S, 5.0),
                ("a".into(), 47 * S, 6.0),
            ]
        );
        out.clear();
        // A heartbeat at exactly 60 s re-sends both at 60 s.
        h.heartbeat("c", 60_000, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|s| s.timestamp_ms == 60 * S));
    }

    #[test]
    fn removals_snapshots_and_expiry_write_staleness_markers() {
        let h = History::new(Duration::from_secs(15), 100);
        let mut out = Vec::new();
        h.claim("c");
        h.apply(
            "c",
            &snapshot(
                S,
                vec![def(0, "a"), def(1, "b"), def(2, "c")],
                &[(0, 1.0), (1, 1.0), (2, 1.0)],
            ),
            Applied::SnapshotComplete,
            &mut out,
        );
        out.clear();
        h.apply("c", &delta(2 * S, &[], vec![0]), Applied::Delta, &mut out);
        assert_eq!(seen(&out), vec![("a".into(), 2 * S, -1.0)]);
        out.clear();
        // A new snapshot without "b": b goes stale; "c" keeps its identity.
        let c_id = h.cluster("c");
        let before = lock(&c_id).live.ids.get(&2).map(|e| e.series.id);
        h.apply(
            "c",
            &snapshot(3 * S, vec![def(7, "c")], &[(7, 4.0)]),
            Applied::SnapshotComplete,
            &mut out,
        );
        let mut got = seen(&out);
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            got,
            vec![("b".into(), 3 * S, -1.0), ("c".into(), 3 * S, 4.0)]
        );
        assert_eq!(lock(&c_id).live.ids.get(&7).map(|e| e.series.id), before);
        out.clear();
        let now = Instant::now();
        let g = h.claim("c");
        h.release("c", g - 1, now);
        assert_eq!(
            h.expire(
                now + Duration::from_secs(600),
                Duration::from_secs(60),
                &mut out
            ),
            None,
            "a replaced connection's release changes nothing"
        );
        h.release("c", g, now);
        assert!(
            h.expire(
                now + Duration::from_secs(59),
                Duration::from_secs(60),
                &mut out
            )
            .is_some()
        );
        assert!(out.is_empty());
        assert_eq!(
            h.expire(
                now + Duration::from_secs(60),
                Duration::from_secs(60),
                &mut out
            ),
            None
        );
        assert_eq!(seen(&out), vec![("c".into(), 63 * S, -1.0)]);
        assert_eq!(h.series("c"), 0);
    }

    #[test]
    fn a_sample_never_goes_before_the_last_one_of_its_series() {
        let h = History::new(Duration::from_secs(15), 100);
        let mut out = Vec::new();
        h.apply(
            "c",
            &snapshot(10 * S, vec![def(0, "a")], &[(0, 1.0)]),
            Applied::SnapshotComplete,
            &mut out,
        );
        out.clear();
        // Same millisecond, then a clock step back.
        h.apply(
            "c",
            &delta(10 * S, &[(0, 2.0)], vec![]),
            Applied::Delta,
            &mut out,
        );
        h.apply(
            "c",
            &delta(9 * S, &[(0, 3.0)], vec![]),
            Applied::Delta,
            &mut out,
        );
        assert_eq!(
            seen(&out),
            vec![("a".into(), 10 * S + 1, 2.0), ("a".into(), 10 * S + 2, 3.0)]
        );
        assert_eq!(h.retimed(), 2);
    }

    #[test]
    fn a_snapshot_fills_no_re_sends_and_staged_parts_write_nothing() {
        let h = History::new(Duration::from_secs(15), 100);
        let mut out = Vec::new();
        h.apply(
            "c",
            &snapshot(10 * S, vec![def(0, "a")], &[(0, 1.0)]),
            Applied::SnapshotComplete,
            &mut out,
        );
        out.clear();
        let mut first = snapshot(100 * S, vec![def(0, "a")], &[]);
        first.snapshot = Some(SnapshotPart {
            first: true,
            last: false,
        });
        h.apply("c", &first, Applied::Staged, &mut out);
        assert!(out.is_empty());
        let last = Batch {
            snapshot: Some(SnapshotPart {
                first: false,
                last: true,
            }),
            updates: updates(&[(0, 9.0)]),
            observed_at_ms: 101_000,
            ..Batch::default()
        };
        h.apply("c", &last, Applied::SnapshotComplete, &mut out);
        assert_eq!(seen(&out), vec![("a".into(), 101 * S, 9.0)]);
    }

    #[test]
    fn a_snapshot_after_a_replay_fills_the_re_sends_up_to_it() {
        let h = History::new(Duration::from_secs(15), 100);
        let mut out = Vec::new();
        h.claim("c");
        h.apply(
            "c",
            &snapshot(10 * S, vec![def(0, "a")], &[(0, 1.0)]),
            Applied::SnapshotComplete,
            &mut out,
        );
        h.claim("c");
        h.apply(
            "c",
            &delta(12 * S, &[(0, 2.0)], vec![]),
            Applied::Delta,
            &mut out,
        );
        out.clear();
        h.apply(
            "c",
            &snapshot(50 * S, vec![def(0, "a")], &[(0, 3.0)]),
            Applied::SnapshotComplete,
            &mut out,
        );
        assert_eq!(
            seen(&out),
            vec![
                ("a".into(), 15 * S, 2.0),
                ("a".into(), 30 * S, 2.0),
                ("a".into(), 45 * S, 2.0),
                ("a".into(), 50 * S, 3.0)
            ]
        );
    }

    #[test]
    fn a_base_without_values_writes_nothing_and_the_deltas_replay_at_their_times() {
        let h = History::new(Duration::from_secs(15), 100);
        let mut out = Vec::new();
        h.apply(
            "c",
            &snapshot(5 * S, vec![def(0, "a")], &[]),
            Applied::SnapshotComplete,
            &mut out,
        );
        assert!(out.is_empty());
        h.apply(
            "c",
            &delta(6 * S, &[(0, 2.0)], vec![]),
            Applied::Delta,
            &mut out,
        );
        h.apply(
            "c",
            &delta(20 * S, &[(0, 3.0)], vec![]),
            Applied::Delta,
            &mut out,
        );
        assert_eq!(
            seen(&out),
            vec![
                ("a".into(), 6 * S, 2.0),
                ("a".into(), 15 * S, 2.0),
                ("a".into(), 20 * S, 3.0)
            ]
        );
    }

    #[test]
    fn samples_a_previous_run_queued_are_not_queued_again() {
        let h = History::new(Duration::from_secs(15), 100);
        let labels = wire::encode_labels(
            "kube_hpa_replicas",
            "c",
            &[("pod".to_owned(), "a".to_owned())],
        );
        h.restore([(labels.into_boxed_slice(), 20 * S)].into_iter().collect());
        let mut out = Vec::new();
        h.claim("c");
        // A base (no values), then the replayed batches: those at or before 20 s were
        // written by the previous run.
        h.apply(
            "c",
            &snapshot(10 * S, vec![def(0, "a")], &[]),
            Applied::SnapshotComplete,
            &mut out,
        );
        h.apply(
            "c",
            &delta(12 * S, &[(0, 2.0)], vec![]),
            Applied::Delta,
            &mut out,
        );
        h.apply(
            "c",
            &delta(20 * S, &[(0, 3.0)], vec![]),
            Applied::Delta,
            &mut out,
        );
        h.apply(
            "c",
            &delta(21 * S, &[(0, 4.0)], vec![]),
            Applied::Delta,
            &mut out,
        );
        assert_eq!(seen(&out), vec![("a".into(), 21 * S, 4.0)]);
        assert_eq!(h.skipped(), 2);
        assert_eq!(h.retimed(), 0);
    }

    #[test]
    fn the_series_cap_is_the_stores() {
        let h = History::new(Duration::from_secs(15), 2);
        let mut out = Vec::new();
        h.apply(
            "c",
            &snapshot(
                S,
                vec![def(0, "a"), def(1, "b"), def(2, "c")],
                &[(0, 1.0), (1, 1.0), (2, 1.0)],
            ),
            Applied::SnapshotComplete,
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(h.series("c"), 2);
    }
}
