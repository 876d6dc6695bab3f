//! The store: every cluster's state, each cluster behind a lock of its own, so neither
//! another cluster's ingest nor a scrape makes a cluster's ingest wait.
//!
//! A registry (a `RwLock`ed map, written only when a cluster is created or expires) maps
//! cluster names to their state, each in its own `std::sync::Mutex`. A batch locks only its
//! cluster. A scrape locks each cluster just long enough to take a view, a consistent copy
//! of its series made of shared copy-on-write chunks (about three thousand `Arc` clones per
//! million series), and encodes the views with no lock held; a batch applied meanwhile
//! copies the chunks it writes to (`cargo bench -p kube-relay-receiver --bench receiver --
//! stall` measures what a scrape costs ingest).
//! No lock is held across an `.await`; locks are taken registry → cluster → family names
//! or scaling log, never the other way.
//!
//! Everything a remote peer can make the store hold is bounded: clusters
//! ([`StoreLimits::max_clusters`], further `Hello`s refused), series per cluster (further
//! definitions dropped and counted), families per cluster (a protocol violation past
//! [`MAX_FAMILIES_PER_CLUSTER`]), and the indexes and logs that follow from those.
//!
//! A disconnected cluster reports `relay_cluster_up 0` at once and is removed by
//! [`Store::run_expiry`] once the TTL has passed, unless a sender resumes it first.
//!
//! # Layout
//! - `claims`: who holds a cluster, session memory for resumption, link state.
//! - `cluster`: one cluster's state: batch order, snapshot staging, counters, status.
//! - `data`: families, series and values; the view a scrape encodes.
//! - `encode`: the views of all clusters merged into one exposition.
//! - `names`: family names across clusters, so one cluster cannot corrupt or hide
//!   another's exposition.
//! - `scaling`: the recent increases of the HPA scaling-events counter.
//! - `summary`: pods, HPAs and source health of a cluster, for the status page.
//! - `labels`: label values read back from the pre-rendered series prefixes.
//! - `chunks`, `ids`: the copy-on-write vector and the series-id index.

mod chunks;
mod claims;
mod cluster;
mod data;
mod encode;
mod ids;
mod labels;
mod names;
mod scaling;
mod summary;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use kube_relay_proto::{Batch, Hello};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use self::claims::{Claim, ClaimError, ConnId, LinkState};
use self::cluster::ClusterState;
pub use self::cluster::{Applied, ApplyError, ClusterStatus};
pub use self::data::MAX_FAMILIES_PER_CLUSTER;
use self::names::FamilyNames;
use self::scaling::ScalingLog;
pub use self::scaling::{
    LAST_ACTION_FAMILY, SCALING_EVENTS_FAMILY, SCALING_EVENTS_KEPT, ScalingEvent,
};
pub use self::summary::{ClusterSummary, Detail, HpaSummary};
use crate::exposition::{Format, PageWriter, ReaderGone};

/// Default for [`StoreLimits::max_clusters`]: twice the fan-in goal of 10,000 senders, so
/// clusters whose senders left and that wait for their TTL do not lock out live ones.
pub const DEFAULT_MAX_CLUSTERS: usize = 20_000;

/// How much the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// How long a disconnected cluster's series stay.
    pub ttl: Duration,
    /// Most series one cluster may hold; further definitions are dropped and counted.
    pub max_series_per_cluster: usize,
    /// Most clusters held at once, connected or waiting for their TTL; a `Hello` for a new
    /// cluster beyond it is refused.
    pub max_clusters: usize,
}

/// The shared store. Cheap to clone (an `Arc`).
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

type Shared = Arc<Mutex<ClusterState>>;

#[derive(Debug)]
struct Inner {
    clusters: RwLock<BTreeMap<String, Shared>>,
    names: Mutex<FamilyNames>,
    scaling: Mutex<ScalingLog>,
    next_conn: AtomicU64,
    disconnected: Notify,
    limits: StoreLimits,
}

/// Locks `m`. A panic while holding a lock leaves consistent-enough data for a metrics
/// relay; keep serving rather than poisoning every later scrape.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store {
    /// An empty store keeping disconnected clusters for `ttl` and at most
    /// `max_series_per_cluster` series per cluster, [`DEFAULT_MAX_CLUSTERS`] clusters.
    pub fn new(ttl: Duration, max_series_per_cluster: usize) -> Self {
        Store::with_limits(StoreLimits {
            ttl,
            max_series_per_cluster,
            max_clusters: DEFAULT_MAX_CLUSTERS,
        })
    }

    /// An empty store with these limits.
    pub fn with_limits(limits: StoreLimits) -> Self {
        Store {
            inner: Arc::new(Inner {
                clusters: RwLock::new(BTreeMap::new()),
                names: Mutex::new(FamilyNames::default()),
                scaling: Mutex::new(ScalingLog::default()),
                next_conn: AtomicU64::new(1),
                disconnected: Notify::new(),
                limits,
            }),
        }
    }

    fn registry(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Shared>> {
        self.inner
            .clusters
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Shared>> {
        self.inner
            .clusters
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cluster's state, if it exists (the registry lock is released on return).
    fn cluster(&self, name: &str) -> Option<Shared> {
        self.registry().get(name).cloned()
    }

    /// Every cluster, in name order (the registry lock is released on return).
    fn all(&self) -> Vec<(String, Shared)> {
        self.registry()
            .iter()
            .map(|(name, cs)| (name.clone(), cs.clone()))
            .collect()
    }

    /// Registers a connection for `hello.cluster`, deciding where the sender resumes.
    ///
    /// `cancel` is cancelled if a later connection of the same sender replaces this one.
    ///
    /// # Errors
    /// [`ClaimError::ClusterInUse`] when another live sender holds the cluster,
    /// [`ClaimError::TooManyClusters`] when the cluster is new and the store holds
    /// [`StoreLimits::max_clusters`] already.
    pub fn claim(
        &self,
        hello: &Hello,
        peer: Option<SocketAddr>,
        cancel: CancellationToken,
    ) -> Result<Claim, ClaimError> {
        let conn = ConnId(self.inner.next_conn.fetch_add(1, Ordering::Relaxed));
        let shared = {
            let mut registry = self.registry_mut();
            let limit = self.inner.limits.max_clusters;
            if registry.len() >= limit && !registry.contains_key(&hello.cluster) {
                return Err(ClaimError::TooManyClusters { limit });
            }
            registry
                .entry(hello.cluster.clone())
                .or_insert_with(|| Arc::new(Mutex::new(ClusterState::new(hello))))
                .clone()
        };
        let mut cs = lock(&shared);
        let (resume, replaced) = cs.holder.claim(hello, conn, cancel, peer)?;
        cs.drop_staging();
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
        let shared = self.cluster(cluster).ok_or(ApplyError::Superseded)?;
        let mut events = Vec::new();
        let mut garbage = None;
        let result = {
            let mut cs = lock(&shared);
            if !cs.holder.holds(conn) {
                return Err(ApplyError::Superseded);
            }
            cs.count_frame(frame_bytes);
            cs.apply(
                cluster,
                batch,
                self.inner.limits.max_series_per_cluster,
                &self.inner.names,
                &mut events,
                &mut garbage,
            )
        };
        if !events.is_empty() {
            lock(&self.inner.scaling).extend(events);
        }
        // Free a replaced snapshot's memory outside the lock.
        drop(garbage);
        result
    }

    /// Counts a non-batch frame (hello, heartbeat, goodbye) received on `conn`.
    pub fn count_frame(&self, cluster: &str, conn: ConnId, frame_bytes: usize) {
        if let Some(shared) = self.cluster(cluster) {
            let mut cs = lock(&shared);
            if cs.holder.holds(conn) {
                cs.count_frame(frame_bytes);
            }
        }
    }

    /// Marks `cluster` down if `conn` still holds it: `relay_cluster_up` drops to 0 now and
    /// the series expire after the TTL.
    pub fn release(&self, cluster: &str, conn: ConnId) {
        let Some(shared) = self.cluster(cluster) else {
            return;
        };
        let released = {
            let mut cs = lock(&shared);
            let holds = cs.holder.holds(conn);
            if holds {
                cs.holder.release();
                cs.drop_staging();
            }
            holds
        };
        if released {
            self.inner.disconnected.notify_one();
        }
    }

    /// Removes clusters down for at least the TTL as of `now`; returns when the next one
    /// expires, if any is down.
    pub fn expire(&self, now: Instant) -> Option<Instant> {
        let ttl = self.inner.limits.ttl;
        let expired = |cs: &Shared| lock(cs).holder.expires_at(ttl).is_some_and(|at| at <= now);
        let candidates: Vec<String> = self
            .all()
            .into_iter()
            .filter(|(_, cs)| expired(cs))
            .map(|(name, _)| name)
            .collect();
        let mut removed = Vec::new();
        if !candidates.is_empty() {
            let mut registry = self.registry_mut();
            for name in candidates {
                // Claimed again since the candidates were picked: keep it.
                if registry.get(&name).is_some_and(&expired)
                    && let Some(cs) = registry.remove(&name)
                {
                    tracing::info!(cluster = %name, ttl = ?ttl, "cluster expired, series removed");
                    removed.push(cs);
                }
            }
        }
        // Give back their family names and free their memory outside the registry lock.
        for cs in &removed {
            lock(cs).release_names(&self.inner.names);
        }
        drop(removed);
        self.all()
            .iter()
            .filter_map(|(_, cs)| lock(cs).holder.expires_at(ttl))
            .min()
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
        self.all()
            .iter()
            .filter(|(_, cs)| lock(cs).holder.is_up())
            .count()
    }

    /// Status of every cluster, sorted by name.
    pub fn clusters(&self) -> Vec<ClusterStatus> {
        let now = Instant::now();
        self.all()
            .iter()
            .map(|(name, cs)| lock(cs).status(name, self.inner.limits.ttl, now))
            .collect()
    }

    /// The summary of every cluster, by name, for the status page: to the [`Detail`]
    /// `detail` asks for each (each cluster locked only while its view is taken).
    pub fn summaries(&self, detail: impl Fn(&str) -> Detail) -> BTreeMap<String, ClusterSummary> {
        let views: Vec<_> = self
            .all()
            .into_iter()
            .map(|(name, cs)| {
                let view = lock(&cs).view();
                (name, view)
            })
            .collect();
        views
            .into_iter()
            .map(|(name, view)| {
                let summary = summary::summarise(&view, detail(&name));
                (name, summary)
            })
            .collect()
    }

    /// The most recent scaling events, newest first.
    pub fn scaling_events(&self) -> Vec<ScalingEvent> {
        lock(&self.inner.scaling).newest_first()
    }

    /// Appends every cluster's series to `out` in `format` (no self-metrics, no `# EOF`).
    /// Each cluster is locked only while its view is taken, not while it is encoded.
    pub fn encode_series(&self, format: Format, out: &mut String) {
        out.push_str(&PageWriter::gather(0, |mut page| {
            self.write_series(format, &mut page)?;
            page.finish()
        }));
    }

    /// Writes every cluster's series in `format` to `out`, from views taken of each cluster
    /// at the start (no lock held while writing).
    ///
    /// # Errors
    /// [`ReaderGone`] when `out`'s reader went away; the page is left unfinished.
    pub fn write_series(&self, format: Format, out: &mut PageWriter<'_>) -> Result<(), ReaderGone> {
        let views: Vec<_> = self.all().iter().map(|(_, cs)| lock(cs).view()).collect();
        encode::encode(&views, format, out)
    }
}

#[cfg(test)]
mod tests {
    use kube_relay_proto::{
        FamilyDef, MetricKind, Resume, SeriesDef, SnapshotPart, Updates, Value,
    };

    use super::data::tests::{family, series, snapshot, updates};
    use super::ids::DENSE_IDS;
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

    fn one_family(seq: u64, name: &str, kind: MetricKind, pod: &str) -> Batch {
        Batch {
            observed_at_ms: 0,
            seq,
            snapshot: Some(SnapshotPart {
                first: true,
                last: true,
            }),
            families: vec![family(0, name, kind)],
            series: vec![series(0, 0, &[("pod", pod)])],
            updates: updates(&[(0, 1.0)]),
            removals: vec![],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_family_clashing_with_another_clusters_is_refused_until_the_name_is_free() {
        let store = Store::new(Duration::from_secs(60), 100);
        let a = connect(&store, "a", "s");
        store
            .apply(
                "a",
                a.conn,
                &one_family(1, "x_total", MetricKind::Gauge, "p"),
                0,
            )
            .expect("a");
        let b = connect(&store, "b", "s");
        store
            .apply(
                "b",
                b.conn,
                &one_family(1, "x", MetricKind::Counter, "q"),
                0,
            )
            .expect("b's snapshot is applied, its clashing family refused");
        let before = text(&store);
        assert_eq!(
            before,
            "# HELP x_total x_total help\n# TYPE x_total gauge\nx_total{cluster=\"a\",pod=\"p\"} 1\n"
        );
        // A delta defining another clashing family, and a family of the same kind as a's.
        let delta = Batch {
            seq: 2,
            families: vec![
                family(1, "x_total", MetricKind::Counter),
                family(2, "y", MetricKind::Gauge),
            ],
            series: vec![series(1, 2, &[("pod", "q")])],
            updates: updates(&[(0, 5.0), (1, 2.0)]),
            ..Batch::default()
        };
        let err = store
            .apply("b", b.conn, &delta, 0)
            .expect_err("counter x_total");
        assert!(err.to_string().contains("_total"), "{err}");
        let b = connect(&store, "b", "s");
        store
            .apply(
                "b",
                b.conn,
                &one_family(3, "x", MetricKind::Counter, "q"),
                0,
            )
            .expect("again");
        let status: Vec<u64> = store
            .clusters()
            .iter()
            .map(|c| c.families_refused)
            .collect();
        assert_eq!(status, vec![0, 2], "counted per refused definition");
        assert_eq!(text(&store), before, "a's series intact, b's never exposed");

        // Once a's data is gone, b's next snapshot takes the name.
        store.release("a", a.conn);
        tokio::time::advance(Duration::from_secs(60)).await;
        store.expire(Instant::now());
        store
            .apply(
                "b",
                b.conn,
                &one_family(4, "x", MetricKind::Counter, "q"),
                0,
            )
            .expect("b");
        assert_eq!(
            text(&store),
            "# HELP x_total x help\n# TYPE x_total counter\nx_total{cluster=\"b\",pod=\"q\"} 1\n"
        );
    }

    #[test]
    fn one_family_of_many_clusters_shares_a_header_whatever_its_help() {
        let store = Store::new(Duration::from_secs(60), 100);
        for (cluster, help) in [("b", "newer help"), ("a", "older help")] {
            let claim = connect(&store, cluster, "s");
            let mut batch = one_family(1, "up_ish", MetricKind::Gauge, cluster);
            batch.families[0].help = help.into();
            store.apply(cluster, claim.conn, &batch, 0).expect("apply");
        }
        assert_eq!(
            text(&store),
            "# HELP up_ish older help\n# TYPE up_ish gauge\n\
             up_ish{cluster=\"a\",pod=\"a\"} 1\nup_ish{cluster=\"b\",pod=\"b\"} 1\n"
        );
        assert!(store.clusters().iter().all(|c| c.families_refused == 0));
    }

    #[test]
    fn last_update_is_the_last_change_from_the_cluster_not_from_the_sender_itself() {
        let store = Store::new(Duration::from_secs(60), 100);
        let claim = connect(&store, "c1", "s");
        let last = || store.clusters()[0].last_update;
        let mut snap = one_family(1, "relay_sender_api_errors", MetricKind::Counter, "x");
        store.apply("c1", claim.conn, &snap, 0).expect("snapshot");
        assert_eq!(last(), None, "only the sender's self-metrics so far");
        let errors_grow = |seq| Batch {
            seq,
            updates: updates(&[(0, seq as f64)]),
            ..Batch::default()
        };
        store
            .apply("c1", claim.conn, &errors_grow(2), 0)
            .expect("delta");
        assert_eq!(last(), None);
        let pods = Batch {
            seq: 3,
            families: vec![family(1, "kube_pod_info", MetricKind::Gauge)],
            series: vec![series(1, 1, &[("pod", "p")])],
            updates: updates(&[(1, 1.0)]),
            ..Batch::default()
        };
        store.apply("c1", claim.conn, &pods, 0).expect("delta");
        let changed = last().expect("a change from the cluster");
        store
            .apply("c1", claim.conn, &errors_grow(4), 0)
            .expect("delta");
        assert_eq!(
            last(),
            Some(changed),
            "the sender's error counters are no update"
        );
        let gone = Batch {
            seq: 5,
            removals: vec![1],
            ..Batch::default()
        };
        store.apply("c1", claim.conn, &gone, 0).expect("delta");
        assert!(last() > Some(changed), "a removed pod is a change");
        // A snapshot carrying the cluster's series is its whole state: an update.
        snap.seq = 6;
        snap.families
            .push(family(1, "kube_pod_info", MetricKind::Gauge));
        snap.series.push(series(1, 1, &[("pod", "p")]));
        let before = last();
        store.apply("c1", claim.conn, &snap, 0).expect("snapshot");
        assert!(last() > before);
    }

    #[tokio::test(start_paused = true)]
    async fn new_clusters_beyond_the_limit_are_refused() {
        let store = Store::with_limits(StoreLimits {
            ttl: Duration::from_secs(60),
            max_series_per_cluster: 100,
            max_clusters: 2,
        });
        let a = connect(&store, "a", "s");
        connect(&store, "b", "s");
        // A known cluster is no new one; a new one is refused.
        let refused = store.claim(&hello("c", "s", 1), None, CancellationToken::new());
        assert_eq!(
            refused.expect_err("third cluster"),
            ClaimError::TooManyClusters { limit: 2 }
        );
        store.release("a", a.conn);
        let a = connect(&store, "a", "s");
        store.release("a", a.conn);
        tokio::time::advance(Duration::from_secs(60)).await;
        store.expire(Instant::now());
        connect(&store, "c", "s");
        assert_eq!(store.clusters().len(), 2);
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
