//! The store: every cluster's state in one place, behind one `std::sync::Mutex` that is never
//! held across an `.await`.
//!
//! Per cluster (`ClusterState`) it keeps the live metric data (families, series, values), a
//! staging area where a snapshot is assembled before it replaces the live data at once, the
//! session memory that lets a reconnecting sender resume (sender id, epoch, highest acked
//! seq), the link state (which connection holds the cluster, or since when it is down) and
//! the counters behind the receiver's self-metrics.
//!
//! Series are pre-rendered when they are defined: each keeps its exposition prefix
//! (`name{cluster="c",label="v"}`), so a scrape only appends values. Updates find their
//! series through a hash map keyed by series id with a cheap integer hash.
//!
//! A disconnected cluster reports `relay_cluster_up 0` at once and is removed by
//! [`Store::run_expiry`] once the TTL has passed, unless a sender resumes it first.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use kube_relay_proto::{
    Batch, FamilyDef, FamilyId, Hello, MetricKind, Resume, SeriesDef, SeriesId,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::exposition::{self, Format};

/// Family whose increases the status page lists as scaling events (counter, no `_total`).
pub const SCALING_EVENTS_FAMILY: &str = "kube_horizontalpodautoscaler_scaling_events";

/// How many recent scaling events the store keeps for the status page.
pub const SCALING_EVENTS_KEPT: usize = 50;

/// Most metric families one cluster may define (the catalogue has a few dozen).
pub const MAX_FAMILIES_PER_CLUSTER: usize = 10_000;

/// Family names the receiver uses for its own metrics; senders may not define them.
const RESERVED_PREFIXES: [&str; 2] = ["relay_receiver_", "relay_cluster_up"];

/// Identifies one accepted connection, so a replaced connection cannot touch the state of
/// the connection that replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

/// Why the store refused a `Hello` (the session turns it into a `Reject`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    /// Another live connection with a different sender id holds the cluster.
    ClusterInUse {
        /// The sender id holding it.
        holder: String,
    },
}

/// A successful claim of a cluster by a connection.
#[derive(Debug)]
pub struct Claim {
    /// The connection's identity in the store.
    pub conn: ConnId,
    /// Where the sender continues.
    pub resume: Resume,
    /// True when this claim replaced a live connection of the same sender.
    pub replaced: bool,
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The batch was applied; `acked` is now the highest contiguous applied seq.
    Batch {
        /// Highest contiguous applied seq.
        acked: Option<u64>,
    },
    /// A snapshot part was staged (not yet visible, not acked).
    Staged,
    /// A snapshot's last part arrived and the snapshot replaced the live state; ack at once.
    SnapshotComplete {
        /// The last part's seq, now acked.
        acked: u64,
    },
    /// The batch had already been applied (`seq <= acked`) and was ignored.
    Duplicate,
}

/// Why a batch could not be applied. The connection is closed; for [`ApplyError::Violation`]
/// the session memory is forgotten, so the sender's next `Hello` is answered `Snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The batch breaks a protocol rule.
    #[error("protocol violation: {0}")]
    Violation(String),
    /// This connection no longer holds the cluster (the same sender reconnected).
    #[error("failed to apply: the connection was replaced by a newer one of the same sender")]
    Superseded,
}

/// One recent increase of the scaling events counter.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingEvent {
    /// When the receiver saw it.
    pub at: SystemTime,
    /// Cluster it came from.
    pub cluster: String,
    /// The series' `namespace` label.
    pub namespace: String,
    /// The series' `horizontalpodautoscaler` label.
    pub hpa: String,
    /// The series' `direction` label (`up` or `down`).
    pub direction: String,
    /// How much the counter grew.
    pub increase: f64,
    /// The counter's new value.
    pub total: f64,
}

/// Whether a cluster has a live sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// A sender is connected.
    Up {
        /// Since when (wall clock).
        since: SystemTime,
        /// The sender's address.
        peer: Option<SocketAddr>,
    },
    /// No sender is connected; the cluster's series expire at `expires_in` from now.
    Down {
        /// Since when (wall clock).
        since: SystemTime,
        /// Time left before the series are removed.
        expires_in: Duration,
    },
}

/// What the status page and self-metrics show about one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterStatus {
    /// Cluster name.
    pub cluster: String,
    /// Link state.
    pub link: LinkState,
    /// Sender id of the last sender.
    pub sender_id: String,
    /// The sender's software (`Hello::agent`).
    pub agent: String,
    /// Last time a batch was applied.
    pub last_update: Option<SystemTime>,
    /// Series currently exposed.
    pub series: usize,
    /// Frames received (all connections of this cluster).
    pub frames: u64,
    /// Payload and header bytes received.
    pub bytes: u64,
    /// Samples changed (updates plus removals) received.
    pub updates: u64,
    /// Batches ignored as duplicates.
    pub duplicates: u64,
    /// Series definitions dropped by the series cap.
    pub series_dropped: u64,
}

/// The shared store. Cheap to clone (an `Arc`).
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    disconnected: Notify,
    ttl: Duration,
    max_series_per_cluster: usize,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) clusters: BTreeMap<String, ClusterState>,
    next_conn: u64,
    events: VecDeque<ScalingEvent>,
}

/// One cluster's state (see the module docs).
#[derive(Debug)]
pub(crate) struct ClusterState {
    pub(crate) data: ClusterData,
    staging: Option<Staging>,
    sender_id: String,
    epoch: u64,
    acked: Option<u64>,
    agent: String,
    link: Link,
    last_update: Option<SystemTime>,
    frames: u64,
    bytes: u64,
    updates: u64,
    duplicates: u64,
    series_dropped: u64,
}

#[derive(Debug)]
struct Staging {
    data: ClusterData,
    next_seq: u64,
}

#[derive(Debug)]
enum Link {
    Up {
        conn: ConnId,
        cancel: CancellationToken,
        since: SystemTime,
        peer: Option<SocketAddr>,
    },
    Down {
        since: SystemTime,
        at: Instant,
    },
}

/// Live metric data of one cluster.
#[derive(Debug, Default)]
pub(crate) struct ClusterData {
    pub(crate) families: HashMap<FamilyId, Family>,
    pub(crate) slots: Vec<Slot>,
    free: Vec<u32>,
    ids: IdIndex,
    dropped: HashSet<SeriesId, BuildHasherDefault<IdHasher>>,
    live: usize,
}

/// A metric family as defined by the sender.
#[derive(Debug)]
pub(crate) struct Family {
    pub(crate) name: String,
    pub(crate) help: String,
    pub(crate) kind: MetricKind,
    /// Slots of this family's series, in definition order (swap-removed).
    pub(crate) members: Vec<u32>,
    tracks_scaling: bool,
}

/// One series: its pre-rendered exposition prefix and its value.
#[derive(Debug)]
pub(crate) struct Slot {
    family: FamilyId,
    pos: u32,
    /// `name{cluster="c",...}`, with `_total` for counters.
    pub(crate) prefix: Box<str>,
    pub(crate) value: f64,
    pub(crate) has_value: bool,
    /// Labels kept only for series whose increases become scaling events.
    tracked: Option<Box<[(String, String)]>>,
}

/// Series id → slot. Senders number series densely from 0, so ids below [`DENSE_IDS`] are
/// looked up in a plain vector (4 bytes per id up to the highest id used); any larger id
/// goes to a hash map, so a sender with sparse ids costs memory per series, not per id.
#[derive(Debug, Default)]
struct IdIndex {
    /// `slot + 1` per id, 0 for none.
    dense: Vec<u32>,
    sparse: HashMap<SeriesId, u32, BuildHasherDefault<IdHasher>>,
}

/// Ids below this use [`IdIndex`]'s vector (at most 16 MiB of index per cluster).
const DENSE_IDS: SeriesId = 1 << 22;

impl IdIndex {
    fn get(&self, id: SeriesId) -> Option<u32> {
        match self.dense.get(id as usize) {
            Some(&v) => v.checked_sub(1),
            None if id < DENSE_IDS => None,
            None => self.sparse.get(&id).copied(),
        }
    }

    fn insert(&mut self, id: SeriesId, slot: u32) {
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

    fn remove(&mut self, id: SeriesId) -> Option<u32> {
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

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves consistent-enough data for a metrics relay;
    // keep serving rather than poisoning every later scrape.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store {
    /// An empty store keeping disconnected clusters for `ttl` and at most
    /// `max_series_per_cluster` series per cluster.
    pub fn new(ttl: Duration, max_series_per_cluster: usize) -> Self {
        Store {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                disconnected: Notify::new(),
                ttl,
                max_series_per_cluster,
            }),
        }
    }

    /// Registers a connection for `hello.cluster`, deciding where the sender resumes.
    ///
    /// `cancel` is cancelled if a later connection of the same sender replaces this one.
    ///
    /// # Errors
    /// [`ClaimError::ClusterInUse`] when another live sender holds the cluster.
    pub fn claim(
        &self,
        hello: &Hello,
        peer: Option<SocketAddr>,
        cancel: CancellationToken,
    ) -> Result<Claim, ClaimError> {
        let mut state = lock(&self.inner.state);
        state.next_conn += 1;
        let conn = ConnId(state.next_conn);
        let link = Link::Up {
            conn,
            cancel,
            since: SystemTime::now(),
            peer,
        };
        let cs = state
            .clusters
            .entry(hello.cluster.clone())
            .or_insert_with(|| ClusterState::new(hello));
        let mut replaced = false;
        if let Link::Up { cancel: old, .. } = &cs.link {
            if cs.sender_id != hello.sender_id {
                return Err(ClaimError::ClusterInUse {
                    holder: cs.sender_id.clone(),
                });
            }
            old.cancel();
            replaced = true;
        }
        let resume = match cs.acked {
            Some(acked)
                if cs.sender_id == hello.sender_id
                    && cs.epoch == hello.epoch
                    && hello
                        .resume_from
                        .is_none_or(|from| acked.saturating_add(1) >= from) =>
            {
                Resume::After { acked }
            }
            _ => {
                cs.sender_id.clone_from(&hello.sender_id);
                cs.epoch = hello.epoch;
                cs.acked = None;
                Resume::Snapshot
            }
        };
        cs.staging = None;
        cs.agent.clone_from(&hello.agent);
        cs.link = link;
        Ok(Claim {
            conn,
            resume,
            replaced,
        })
    }

    /// Applies one batch received on `conn` for `cluster`; `frame_bytes` is its size on the
    /// wire (counted even for duplicates).
    ///
    /// # Errors
    /// [`ApplyError::Violation`] when the batch breaks a protocol rule (the session memory is
    /// then forgotten), [`ApplyError::Superseded`] when `conn` no longer holds the cluster.
    pub fn apply(
        &self,
        cluster: &str,
        conn: ConnId,
        batch: &Batch,
        frame_bytes: usize,
    ) -> Result<Applied, ApplyError> {
        let max_series = self.inner.max_series_per_cluster;
        let mut garbage = None;
        let result = {
            let mut guard = lock(&self.inner.state);
            let state = &mut *guard;
            let cs = state
                .clusters
                .get_mut(cluster)
                .filter(|cs| cs.holds(conn))
                .ok_or(ApplyError::Superseded)?;
            cs.frames += 1;
            cs.bytes += frame_bytes as u64;
            let result = cs.apply(cluster, batch, max_series, &mut state.events, &mut garbage);
            if let Err(ApplyError::Violation(_)) = result {
                cs.forget_session();
            }
            result
        };
        // Free a replaced snapshot's memory outside the lock.
        drop(garbage);
        result
    }

    /// Counts a non-batch frame (hello, heartbeat, goodbye) received on `conn`.
    pub fn count_frame(&self, cluster: &str, conn: ConnId, frame_bytes: usize) {
        let mut state = lock(&self.inner.state);
        if let Some(cs) = state.clusters.get_mut(cluster).filter(|cs| cs.holds(conn)) {
            cs.frames += 1;
            cs.bytes += frame_bytes as u64;
        }
    }

    /// Marks `cluster` down if `conn` still holds it: `relay_cluster_up` drops to 0 now and
    /// the series expire after the TTL.
    pub fn release(&self, cluster: &str, conn: ConnId) {
        let mut state = lock(&self.inner.state);
        if let Some(cs) = state.clusters.get_mut(cluster).filter(|cs| cs.holds(conn)) {
            cs.link = Link::Down {
                since: SystemTime::now(),
                at: Instant::now(),
            };
            cs.staging = None;
            drop(state);
            self.inner.disconnected.notify_one();
        }
    }

    /// Removes clusters down for at least the TTL as of `now`; returns when the next one
    /// expires, if any is down.
    pub fn expire(&self, now: Instant) -> Option<Instant> {
        let ttl = self.inner.ttl;
        let mut removed = Vec::new();
        let next = {
            let mut state = lock(&self.inner.state);
            let expired: Vec<String> = state
                .clusters
                .iter()
                .filter(|(_, cs)| matches!(cs.link, Link::Down { at, .. } if at + ttl <= now))
                .map(|(name, _)| name.clone())
                .collect();
            for name in expired {
                if let Some(cs) = state.clusters.remove(&name) {
                    tracing::info!(cluster = %name, ttl = ?ttl, "cluster expired, series removed");
                    removed.push(cs);
                }
            }
            state
                .clusters
                .values()
                .filter_map(|cs| match cs.link {
                    Link::Down { at, .. } => Some(at + ttl),
                    Link::Up { .. } => None,
                })
                .min()
        };
        drop(removed);
        next
    }

    /// Removes expired clusters until `shutdown` is cancelled, sleeping with `tokio::time`
    /// until the next expiry or the next disconnect.
    pub async fn run_expiry(&self, shutdown: CancellationToken) {
        loop {
            let next = self.expire(Instant::now());
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sleep => {}
                () = self.inner.disconnected.notified() => {}
            }
        }
    }

    /// Number of clusters with a connected sender.
    pub fn connected_senders(&self) -> usize {
        lock(&self.inner.state)
            .clusters
            .values()
            .filter(|cs| matches!(cs.link, Link::Up { .. }))
            .count()
    }

    /// Status of every cluster, sorted by name.
    pub fn clusters(&self) -> Vec<ClusterStatus> {
        let now = Instant::now();
        let ttl = self.inner.ttl;
        let state = lock(&self.inner.state);
        state
            .clusters
            .iter()
            .map(|(name, cs)| ClusterStatus {
                cluster: name.clone(),
                link: match &cs.link {
                    Link::Up { since, peer, .. } => LinkState::Up {
                        since: *since,
                        peer: *peer,
                    },
                    Link::Down { since, at } => LinkState::Down {
                        since: *since,
                        expires_in: (*at + ttl).saturating_duration_since(now),
                    },
                },
                sender_id: cs.sender_id.clone(),
                agent: cs.agent.clone(),
                last_update: cs.last_update,
                series: cs.data.live,
                frames: cs.frames,
                bytes: cs.bytes,
                updates: cs.updates,
                duplicates: cs.duplicates,
                series_dropped: cs.series_dropped,
            })
            .collect()
    }

    /// The most recent scaling events, newest first.
    pub fn scaling_events(&self) -> Vec<ScalingEvent> {
        lock(&self.inner.state)
            .events
            .iter()
            .rev()
            .cloned()
            .collect()
    }

    /// Appends every cluster's series to `out` in `format` (no self-metrics, no `# EOF`).
    pub fn encode_series(&self, format: Format, out: &mut String) {
        let state = lock(&self.inner.state);
        exposition::encode_clusters(&state, format, out);
    }
}

impl ClusterState {
    fn new(hello: &Hello) -> Self {
        ClusterState {
            data: ClusterData::default(),
            staging: None,
            sender_id: hello.sender_id.clone(),
            epoch: hello.epoch,
            acked: None,
            agent: hello.agent.clone(),
            link: Link::Down {
                since: SystemTime::now(),
                at: Instant::now(),
            },
            last_update: None,
            frames: 0,
            bytes: 0,
            updates: 0,
            duplicates: 0,
            series_dropped: 0,
        }
    }

    fn holds(&self, conn: ConnId) -> bool {
        matches!(self.link, Link::Up { conn: c, .. } if c == conn)
    }

    fn forget_session(&mut self) {
        self.acked = None;
        self.staging = None;
    }

    fn apply(
        &mut self,
        cluster: &str,
        batch: &Batch,
        max_series: usize,
        events: &mut VecDeque<ScalingEvent>,
        garbage: &mut Option<ClusterData>,
    ) -> Result<Applied, ApplyError> {
        let seq = batch.seq;
        if self.acked.is_some_and(|acked| seq <= acked) {
            self.duplicates += 1;
            return Ok(Applied::Duplicate);
        }
        let snapshot = batch.snapshot;
        if snapshot.is_some_and(|p| p.first) {
            // A snapshot may follow any seq: re-base on it.
            self.staging = Some(Staging {
                data: ClusterData::default(),
                next_seq: seq,
            });
        } else {
            let expected = match (&self.staging, self.acked) {
                (Some(staging), _) => staging.next_seq,
                (None, Some(acked)) => acked.saturating_add(1),
                (None, None) => {
                    return Err(violation(format!(
                        "batch {seq} arrived before the snapshot the receiver asked for"
                    )));
                }
            };
            if seq < expected {
                self.duplicates += 1;
                return Ok(Applied::Duplicate);
            }
            if seq > expected {
                return Err(violation(format!(
                    "gap in sequence numbers: expected {expected}, got {seq}"
                )));
            }
            match (snapshot.is_some(), self.staging.is_some()) {
                (true, false) => {
                    return Err(violation(format!(
                        "snapshot part {seq} without the snapshot's first part"
                    )));
                }
                (false, true) => {
                    return Err(violation(format!(
                        "delta batch {seq} in the middle of a snapshot"
                    )));
                }
                _ => {}
            }
        }
        self.updates += batch.changed_samples() as u64;
        self.last_update = Some(SystemTime::now());
        match &mut self.staging {
            Some(staging) => {
                let dropped = staging.data.apply(cluster, batch, max_series, None)?;
                self.series_dropped += dropped;
                staging.next_seq = seq.saturating_add(1);
                if snapshot.is_some_and(|p| p.last) {
                    if let Some(staging) = self.staging.take() {
                        let old = std::mem::replace(&mut self.data, staging.data);
                        self.data.record_increases_since(&old, cluster, events);
                        *garbage = Some(old);
                    }
                    self.acked = Some(seq);
                    Ok(Applied::SnapshotComplete { acked: seq })
                } else {
                    Ok(Applied::Staged)
                }
            }
            None => {
                let dropped = self.data.apply(cluster, batch, max_series, Some(events))?;
                self.series_dropped += dropped;
                self.acked = Some(seq);
                Ok(Applied::Batch { acked: self.acked })
            }
        }
    }
}

fn violation(msg: String) -> ApplyError {
    ApplyError::Violation(msg)
}

impl ClusterData {
    /// Applies families, series, updates, removals; returns how many series definitions
    /// the cap dropped. `events` is `None` while staging a snapshot.
    fn apply(
        &mut self,
        cluster: &str,
        batch: &Batch,
        max_series: usize,
        mut events: Option<&mut VecDeque<ScalingEvent>>,
    ) -> Result<u64, ApplyError> {
        for def in &batch.families {
            self.define_family(def)?;
        }
        let mut dropped = 0;
        for def in &batch.series {
            if !self.define_series(cluster, def, max_series)? {
                dropped += 1;
            }
        }
        for &(id, value) in batch.updates.iter() {
            let value = value.as_f64();
            match self.ids.get(id) {
                Some(slot) => {
                    let slot = &mut self.slots[slot as usize];
                    let before = slot.has_value.then_some(slot.value);
                    slot.value = value;
                    slot.has_value = true;
                    if let (Some(labels), Some(events)) = (&slot.tracked, events.as_deref_mut()) {
                        record_increase(events, cluster, labels, before, value);
                    }
                }
                None if self.dropped.contains(&id) => {}
                None => {
                    return Err(violation(format!("update for unknown series id {id}")));
                }
            }
        }
        for &id in &batch.removals {
            if !self.remove_series(id) && !self.dropped.remove(&id) {
                return Err(violation(format!("removal of unknown series id {id}")));
            }
        }
        Ok(dropped)
    }

    fn define_family(&mut self, def: &FamilyDef) -> Result<(), ApplyError> {
        def.validate().map_err(|e| violation(e.to_string()))?;
        if RESERVED_PREFIXES.iter().any(|p| def.name.starts_with(p)) {
            return Err(violation(format!(
                "family name {:?} is reserved for the receiver's own metrics",
                def.name
            )));
        }
        if let Some((other, _)) = self
            .families
            .iter()
            .find(|(id, f)| **id != def.id && f.name == def.name)
        {
            return Err(violation(format!(
                "family {:?} defined twice (ids {other} and {})",
                def.name, def.id
            )));
        }
        let full = self.families.len() >= MAX_FAMILIES_PER_CLUSTER;
        match self.families.entry(def.id) {
            Entry::Vacant(_) if full => {
                return Err(violation(format!(
                    "more than {MAX_FAMILIES_PER_CLUSTER} families defined"
                )));
            }
            Entry::Occupied(mut o) => {
                let f = o.get_mut();
                if f.name != def.name || f.kind != def.kind {
                    return Err(violation(format!(
                        "family id {} redefined from {:?} to {:?}",
                        def.id, f.name, def.name
                    )));
                }
                f.help.clone_from(&def.help);
            }
            Entry::Vacant(v) => {
                v.insert(Family {
                    name: def.name.clone(),
                    help: def.help.clone(),
                    kind: def.kind,
                    members: Vec::new(),
                    tracks_scaling: def.kind == MetricKind::Counter
                        && def.name == SCALING_EVENTS_FAMILY,
                });
            }
        }
        Ok(())
    }

    /// Defines (or redefines) a series; false when the cap dropped it.
    fn define_series(
        &mut self,
        cluster: &str,
        def: &SeriesDef,
        max_series: usize,
    ) -> Result<bool, ApplyError> {
        def.validate().map_err(|e| violation(e.to_string()))?;
        let Some(family) = self.families.get(&def.family) else {
            return Err(violation(format!(
                "series {} names unknown family id {}",
                def.id, def.family
            )));
        };
        let mut prefix = String::with_capacity(64);
        exposition::render_prefix(&mut prefix, &family.name, family.kind, cluster, &def.labels);
        let tracked = family
            .tracks_scaling
            .then(|| def.labels.clone().into_boxed_slice());
        self.remove_series(def.id);
        self.dropped.remove(&def.id);
        if self.live >= max_series {
            self.dropped.insert(def.id);
            return Ok(false);
        }
        let family = self
            .families
            .get_mut(&def.family)
            .ok_or_else(|| violation(format!("unknown family id {}", def.family)))?;
        let slot = Slot {
            family: def.family,
            pos: family.members.len() as u32,
            prefix: prefix.into_boxed_str(),
            value: 0.0,
            has_value: false,
            tracked,
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        family.members.push(index);
        self.ids.insert(def.id, index);
        self.live += 1;
        Ok(true)
    }

    /// Records scaling events for tracked counters that grew between `old` (the state a
    /// snapshot replaced) and this data, matching series by their labels.
    fn record_increases_since(
        &self,
        old: &ClusterData,
        cluster: &str,
        events: &mut VecDeque<ScalingEvent>,
    ) {
        let before: HashMap<&str, f64> =
            old.tracked_slots().map(|s| (&*s.prefix, s.value)).collect();
        for slot in self.tracked_slots() {
            if let (Some(&was), Some(labels)) = (before.get(&*slot.prefix), &slot.tracked) {
                record_increase(events, cluster, labels, Some(was), slot.value);
            }
        }
    }

    /// Valued series of the families whose increases are scaling events.
    fn tracked_slots(&self) -> impl Iterator<Item = &Slot> {
        self.families
            .values()
            .filter(|f| f.tracks_scaling)
            .flat_map(|f| f.members.iter())
            .map(|&slot| &self.slots[slot as usize])
            .filter(|s| s.has_value)
    }

    /// Removes a series; false when the id is unknown.
    fn remove_series(&mut self, id: SeriesId) -> bool {
        let Some(index) = self.ids.remove(id) else {
            return false;
        };
        let slot = &mut self.slots[index as usize];
        let (family, pos) = (slot.family, slot.pos as usize);
        slot.prefix = Box::from("");
        slot.tracked = None;
        slot.has_value = false;
        if let Some(f) = self.families.get_mut(&family) {
            f.members.swap_remove(pos);
            if let Some(&moved) = f.members.get(pos) {
                self.slots[moved as usize].pos = pos as u32;
            }
        }
        self.free.push(index);
        self.live -= 1;
        true
    }
}

fn record_increase(
    events: &mut VecDeque<ScalingEvent>,
    cluster: &str,
    labels: &[(String, String)],
    before: Option<f64>,
    after: f64,
) {
    let increase = after - before.unwrap_or(0.0);
    if increase.is_nan() || increase <= 0.0 {
        return;
    }
    let label = |name: &str| {
        labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if events.len() == SCALING_EVENTS_KEPT {
        events.pop_front();
    }
    events.push_back(ScalingEvent {
        at: SystemTime::now(),
        cluster: cluster.to_owned(),
        namespace: label("namespace"),
        hpa: label("horizontalpodautoscaler"),
        direction: label("direction"),
        increase,
        total: after,
    });
}

#[cfg(test)]
mod tests {
    use kube_relay_proto::{SnapshotPart, Updates, Value};

    use super::*;

    fn hello(cluster: &str, sender: &str, epoch: u64) -> Hello {
        Hello {
            version: kube_relay_proto::PROTOCOL_VERSION,
            cluster: cluster.into(),
            sender_id: sender.into(),
            epoch,
            token: None,
            resume_from: None,
            agent: "test/0".into(),
        }
    }

    fn family(id: FamilyId, name: &str, kind: MetricKind) -> FamilyDef {
        FamilyDef {
            id,
            name: name.into(),
            help: format!("{name} help"),
            kind,
        }
    }

    fn series(id: SeriesId, family: FamilyId, labels: &[(&str, &str)]) -> SeriesDef {
        SeriesDef {
            id,
            family,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn updates(pairs: &[(SeriesId, f64)]) -> Updates {
        Updates::from_unsorted(pairs.iter().map(|&(id, v)| (id, Value::from(v))).collect())
    }

    fn snapshot(seq: u64, n: u32) -> Batch {
        Batch {
            observed_at_ms: 0,
            seq,
            snapshot: Some(SnapshotPart {
                first: true,
                last: true,
            }),
            families: vec![family(0, "kube_pod_info", MetricKind::Gauge)],
            series: (0..n)
                .map(|i| series(i, 0, &[("pod", &format!("p{i}"))]))
                .collect(),
            updates: updates(&(0..n).map(|i| (i, 1.0)).collect::<Vec<_>>()),
            removals: vec![],
        }
    }

    fn text(store: &Store) -> String {
        let mut out = String::new();
        store.encode_series(Format::Text, &mut out);
        out
    }

    fn connect(store: &Store, cluster: &str, sender: &str) -> Claim {
        store
            .claim(&hello(cluster, sender, 1), None, CancellationToken::new())
            .expect("claim")
    }

    #[test]
    fn a_snapshot_then_deltas_then_removals_change_the_exposition() {
        let store = Store::new(Duration::from_secs(60), 100);
        let claim = connect(&store, "c1", "s");
        assert_eq!(claim.resume, Resume::Snapshot);
        let applied = store
            .apply("c1", claim.conn, &snapshot(1, 2), 10)
            .expect("snapshot");
        assert_eq!(applied, Applied::SnapshotComplete { acked: 1 });
        assert_eq!(
            text(&store),
            "# HELP kube_pod_info kube_pod_info help\n# TYPE kube_pod_info gauge\n\
             kube_pod_info{cluster=\"c1\",pod=\"p0\"} 1\nkube_pod_info{cluster=\"c1\",pod=\"p1\"} 1\n"
        );
        let delta = Batch {
            seq: 2,
            updates: updates(&[(1, 0.5)]),
            removals: vec![0],
            ..Batch::default()
        };
        assert_eq!(
            store.apply("c1", claim.conn, &delta, 10),
            Ok(Applied::Batch { acked: Some(2) })
        );
        assert_eq!(
            text(&store),
            "# HELP kube_pod_info kube_pod_info help\n# TYPE kube_pod_info gauge\n\
             kube_pod_info{cluster=\"c1\",pod=\"p1\"} 0.5\n"
        );
    }

    #[test]
    fn duplicates_are_ignored_and_gaps_are_violations() {
        let store = Store::new(Duration::from_secs(60), 100);
        let claim = connect(&store, "c1", "s");
        store
            .apply("c1", claim.conn, &snapshot(5, 1), 0)
            .expect("snapshot");
        let delta = |seq| Batch {
            seq,
            updates: updates(&[(0, 2.0)]),
            ..Batch::default()
        };
        assert_eq!(
            store.apply("c1", claim.conn, &delta(5), 0),
            Ok(Applied::Duplicate)
        );
        assert_eq!(
            store.apply("c1", claim.conn, &delta(6), 0),
            Ok(Applied::Batch { acked: Some(6) })
        );
        let err = store
            .apply("c1", claim.conn, &delta(8), 0)
            .expect_err("gap");
        assert!(err.to_string().contains("expected 7, got 8"), "{err}");
        assert_eq!(store.clusters()[0].duplicates, 1);
    }

    #[test]
    fn a_snapshot_is_invisible_until_its_last_part() {
        let store = Store::new(Duration::from_secs(60), 100);
        let claim = connect(&store, "c1", "s");
        let mut first = snapshot(1, 1);
        first.snapshot = Some(SnapshotPart {
            first: true,
            last: false,
        });
        assert_eq!(
            store.apply("c1", claim.conn, &first, 0),
            Ok(Applied::Staged)
        );
        assert_eq!(text(&store), "");
        let last = Batch {
            seq: 2,
            snapshot: Some(SnapshotPart {
                first: false,
                last: true,
            }),
            series: vec![series(1, 0, &[("pod", "q")])],
            updates: updates(&[(1, 3.0)]),
            ..Batch::default()
        };
        assert_eq!(
            store.apply("c1", claim.conn, &last, 0),
            Ok(Applied::SnapshotComplete { acked: 2 })
        );
        assert!(text(&store).contains("pod=\"q\"} 3\n"));
        assert!(text(&store).contains("pod=\"p0\"} 1\n"));
    }

    #[test]
    fn an_unknown_series_id_is_a_violation_that_forces_a_snapshot() {
        let store = Store::new(Duration::from_secs(60), 100);
        let claim = connect(&store, "c1", "s");
        store
            .apply("c1", claim.conn, &snapshot(1, 1), 0)
            .expect("snapshot");
        let bad = Batch {
            seq: 2,
            updates: updates(&[(42, 1.0)]),
            ..Batch::default()
        };
        let err = store
            .apply("c1", claim.conn, &bad, 0)
            .expect_err("unknown id");
        assert!(err.to_string().contains("unknown series id 42"), "{err}");
        store.release("c1", claim.conn);
        let again = connect(&store, "c1", "s");
        assert_eq!(again.resume, Resume::Snapshot);
    }

    #[test]
    fn the_same_sender_resumes_and_another_sender_is_refused_while_live() {
        let store = Store::new(Duration::from_secs(60), 100);
        let first_cancel = CancellationToken::new();
        let first = store
            .claim(&hello("c1", "s", 1), None, first_cancel.clone())
            .expect("claim");
        store
            .apply("c1", first.conn, &snapshot(3, 1), 0)
            .expect("snapshot");

        let other = store.claim(&hello("c1", "intruder", 1), None, CancellationToken::new());
        assert_eq!(
            other.expect_err("in use"),
            ClaimError::ClusterInUse { holder: "s".into() }
        );

        let mut again = hello("c1", "s", 1);
        again.resume_from = Some(4);
        let second = store
            .claim(&again, None, CancellationToken::new())
            .expect("same sender");
        assert!(second.replaced);
        assert!(first_cancel.is_cancelled());
        assert_eq!(second.resume, Resume::After { acked: 3 });
        let stale = Batch {
            seq: 4,
            ..Batch::default()
        };
        assert_eq!(
            store.apply("c1", first.conn, &stale, 0),
            Err(ApplyError::Superseded)
        );

        // A new epoch, or a gap the sender cannot replay, means a fresh snapshot.
        store.release("c1", second.conn);
        assert_eq!(
            connect(&store, "c1", "s").resume,
            Resume::After { acked: 3 }
        );
        let mut gap = hello("c1", "s", 1);
        gap.resume_from = Some(9);
        let claim = store
            .claim(&gap, None, CancellationToken::new())
            .expect("claim");
        assert_eq!(claim.resume, Resume::Snapshot);
        let claim = store
            .claim(&hello("c1", "s", 2), None, CancellationToken::new())
            .expect("claim");
        assert_eq!(claim.resume, Resume::Snapshot);
    }

    #[test]
    fn the_series_cap_drops_and_counts_definitions_and_ignores_their_updates() {
        let store = Store::new(Duration::from_secs(60), 3);
        let claim = connect(&store, "c1", "s");
        store
            .apply("c1", claim.conn, &snapshot(1, 5), 0)
            .expect("snapshot");
        let status = &store.clusters()[0];
        assert_eq!(status.series, 3);
        assert_eq!(status.series_dropped, 2);
        let delta = Batch {
            seq: 2,
            updates: updates(&[(4, 9.0)]),
            removals: vec![0],
            ..Batch::default()
        };
        store
            .apply("c1", claim.conn, &delta, 0)
            .expect("update of a dropped series");
        assert_eq!(store.clusters()[0].series, 2);
    }

    #[test]
    fn removal_keeps_the_other_members_reachable() {
        let mut data = ClusterData::default();
        data.apply("c", &snapshot(1, 4), 10, None).expect("apply");
        assert!(data.remove_series(0));
        assert!(data.remove_series(2));
        assert_eq!(data.live, 2);
        let f = &data.families[&0];
        let mut ids: Vec<SeriesId> = f
            .members
            .iter()
            .map(|&slot| {
                (0..4)
                    .find(|&id| data.ids.get(id) == Some(slot))
                    .expect("slot in use")
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 3]);
        for (pos, &slot) in f.members.iter().enumerate() {
            assert_eq!(data.slots[slot as usize].pos as usize, pos);
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn arb_batch() -> impl Strategy<Value = Batch> {
            let seq = prop_oneof![0..6u64, Just(u64::MAX - 1), Just(u64::MAX)];
            let id = prop_oneof![0..6u32, Just(DENSE_IDS), Just(u32::MAX)];
            let fam = (
                0..3u32,
                prop_oneof![
                    Just("a"),
                    Just("b_total"),
                    Just("relay_cluster_up"),
                    Just("9x")
                ],
                any::<bool>(),
            )
                .prop_map(|(id, name, counter)| FamilyDef {
                    id,
                    name: name.into(),
                    help: "h\\\n\"".into(),
                    kind: if counter {
                        MetricKind::Counter
                    } else {
                        MetricKind::Gauge
                    },
                });
            let labels = proptest::collection::vec(
                (
                    prop_oneof![Just("pod"), Just("ns"), Just("cluster"), Just("__x")],
                    "[a\"\\\\\n]{0,3}",
                ),
                0..3,
            );
            let series = (id.clone(), 0..4u32, labels).prop_map(|(id, family, labels)| SeriesDef {
                id,
                family,
                labels: labels.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            });
            let value = prop_oneof![
                any::<i64>().prop_map(Value::Int),
                any::<f64>().prop_map(Value::Float)
            ];
            (
                seq,
                proptest::option::of((any::<bool>(), any::<bool>())),
                proptest::collection::vec(fam, 0..3),
                proptest::collection::vec(series, 0..4),
                proptest::collection::vec((id.clone(), value), 0..4),
                proptest::collection::vec(id, 0..2),
            )
                .prop_map(|(seq, snap, families, series, updates, removals)| Batch {
                    observed_at_ms: 0,
                    seq,
                    snapshot: snap.map(|(first, last)| SnapshotPart { first, last }),
                    families,
                    series,
                    updates: Updates::from_unsorted(updates),
                    removals,
                })
        }

        proptest! {
            /// Whatever a sender sends, the store neither panics nor exposes a malformed line.
            #[test]
            fn any_batches_leave_a_well_formed_exposition(
                batches in proptest::collection::vec(arb_batch(), 1..12),
            ) {
                let store = Store::new(Duration::from_secs(60), 4);
                let mut claim = connect(&store, "c", "s");
                for batch in &batches {
                    if store.apply("c", claim.conn, batch, 0).is_err() {
                        store.release("c", claim.conn);
                        claim = connect(&store, "c", "s");
                    }
                    let status = &store.clusters()[0];
                    prop_assert!(status.series <= 4);
                    for line in text(&store).lines().filter(|l| !l.starts_with('#')) {
                        let (series, value) = line.rsplit_once(' ').expect("name and value");
                        prop_assert!(series.contains("{cluster=\"c\""), "{line}");
                        prop_assert!(series.ends_with('}'), "{line}");
                        prop_assert!(!series.contains('\n'), "{line}");
                        prop_assert!(
                            value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
                            "{line}"
                        );
                    }
                }
            }
        }
    }

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
    fn reserved_and_duplicate_family_names_are_violations() {
        let mut data = ClusterData::default();
        let err = data
            .define_family(&family(0, "relay_cluster_up", MetricKind::Gauge))
            .expect_err("reserved");
        assert!(err.to_string().contains("reserved"), "{err}");
        data.define_family(&family(0, "a", MetricKind::Gauge))
            .expect("a");
        assert!(
            data.define_family(&family(1, "a", MetricKind::Gauge))
                .is_err()
        );
        assert!(
            data.define_family(&family(0, "b", MetricKind::Gauge))
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_cluster_expires_after_the_ttl() {
        let store = Store::new(Duration::from_secs(60), 100);
        let claim = connect(&store, "c1", "s");
        store
            .apply("c1", claim.conn, &snapshot(1, 1), 0)
            .expect("snapshot");
        store.release("c1", claim.conn);
        assert!(matches!(store.clusters()[0].link, LinkState::Down { .. }));
        let next = store.expire(Instant::now()).expect("one expiry pending");
        assert_eq!(next - Instant::now(), Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(store.expire(Instant::now()).is_some());
        assert_eq!(store.clusters().len(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(store.expire(Instant::now()), None);
        assert!(store.clusters().is_empty());
        assert_eq!(text(&store), "");
    }

    #[test]
    fn increases_of_the_scaling_counter_become_events() {
        let store = Store::new(Duration::from_secs(60), 100);
        let claim = connect(&store, "c1", "s");
        let snap = Batch {
            observed_at_ms: 0,
            seq: 1,
            snapshot: Some(SnapshotPart {
                first: true,
                last: true,
            }),
            families: vec![family(0, SCALING_EVENTS_FAMILY, MetricKind::Counter)],
            series: vec![series(
                0,
                0,
                &[
                    ("namespace", "shop"),
                    ("horizontalpodautoscaler", "web"),
                    ("direction", "up"),
                ],
            )],
            updates: updates(&[(0, 2.0)]),
            removals: vec![],
        };
        store.apply("c1", claim.conn, &snap, 0).expect("snapshot");
        assert!(
            store.scaling_events().is_empty(),
            "snapshots are not events"
        );
        for (seq, v) in [(2, 2.0), (3, 4.0)] {
            let delta = Batch {
                seq,
                updates: updates(&[(0, v)]),
                ..Batch::default()
            };
            store.apply("c1", claim.conn, &delta, 0).expect("delta");
        }
        let events = store.scaling_events();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].hpa.as_str(), events[0].direction.as_str()),
            ("web", "up")
        );
        assert_eq!((events[0].increase, events[0].total), (2.0, 4.0));

        // Increases that happened while the sender was away show up when its next snapshot
        // replaces the state (series matched by labels, whatever their new ids).
        let mut later = snap.clone();
        later.seq = 10;
        later.series[0].id = 5;
        later.updates = updates(&[(5, 7.0)]);
        store.apply("c1", claim.conn, &later, 0).expect("snapshot");
        let events = store.scaling_events();
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].increase, events[0].total), (3.0, 7.0));
        assert!(text(&store).contains(
            "kube_horizontalpodautoscaler_scaling_events_total{cluster=\"c1\",namespace=\"shop\""
        ));
    }
}
