//! State shared by the sender's tasks: the [`SeriesStore`], a change signal for the link,
//! the counters behind the `relay_sender_*` self-metrics and the source's health.
//!
//! Locks are `std::sync::Mutex`es held only for synchronous work (never across an
//! `.await`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::family::Family;
use crate::series::{ObjectKey, ObjectKind, SeriesSet};
use crate::source::SourceHealth;
use crate::store::SeriesStore;

/// Counters of the sender's own behaviour (the `relay_sender_*` families) and of its traffic
/// (for tests and benchmarks).
#[derive(Debug, Default)]
pub struct Stats {
    /// Successful connections after the first.
    pub reconnects: AtomicU64,
    /// Successful handshakes.
    pub sessions: AtomicU64,
    /// Samples dropped from the spool because it was full.
    pub dropped_spool_full: AtomicU64,
    /// Samples of valid spooled batches discarded on reopen because they followed a
    /// corrupt record.
    pub dropped_spool_corrupt: AtomicU64,
    /// Batches replayed from the spool (after a reconnect or a restart).
    pub replayed_batches: AtomicU64,
    /// Samples of spooled batches a snapshot superseded.
    pub superseded_samples: AtomicU64,
    /// Delta batches taken into the spool while no session was up (replayed later).
    pub offline_batches: AtomicU64,
    /// Bases sent: a receiver without our series table got the spool on top of one.
    pub bases_sent: AtomicU64,
    /// Moves to the next receiver of `--target`.
    pub failovers: AtomicU64,
    /// Index in `targets` of the receiver the link uses.
    pub current_target: AtomicUsize,
    /// The receivers (`--target`), in failover order.
    targets: Mutex<Vec<String>>,
    /// Bytes written to the receiver (frames of every kind).
    pub bytes_sent: AtomicU64,
    /// Bytes of delta batches (not snapshots, handshakes or heartbeats).
    pub delta_bytes_sent: AtomicU64,
    /// Changed samples (updates and removals) carried by delta batches.
    pub delta_samples_sent: AtomicU64,
    /// Snapshots completed (last part sent).
    pub snapshots_sent: AtomicU64,
    /// Highest sequence number the receiver acknowledged in the current epoch.
    pub acked_seq: AtomicU64,
    /// Highest sequence number sent in the current epoch.
    pub sent_seq: AtomicU64,
    /// Samples in the spool (sent, unacknowledged).
    pub spooled_samples: AtomicU64,
    /// Lists (initial or relists) completed by the watchers (`InitDone`s).
    pub lists_done: AtomicU64,
    /// Watchers the sender runs (one per resource and namespace scope).
    pub watchers: AtomicU64,
    /// Watchers that completed their first list.
    pub watchers_listed: AtomicU64,
    /// True while a session is established.
    pub connected: AtomicBool,
    /// True when the usage source answered its last poll.
    pub usage_available: AtomicBool,
    watch_restarts: Mutex<BTreeMap<&'static str, u64>>,
    api_errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    connect_errors: Mutex<BTreeMap<&'static str, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain counters behind: keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Stats {
    /// Counts a relist of `resource`'s watch.
    pub fn watch_restart(&self, resource: &'static str) {
        *lock(&self.watch_restarts).entry(resource).or_default() += 1;
    }

    /// Counts an API error of `kind` for `resource`.
    pub fn api_error(&self, resource: &'static str, kind: &'static str) {
        *lock(&self.api_errors).entry((resource, kind)).or_default() += 1;
    }

    /// Counts a failed attempt to reach the receiver (before a session began), by the
    /// error's bounded kind.
    pub fn connect_error(&self, kind: &'static str) {
        *lock(&self.connect_errors).entry(kind).or_default() += 1;
    }

    /// True once every watcher has completed its first list (the sender relays the whole
    /// cluster): what `/readyz` answers. A later relist does not make it false.
    pub fn watches_synced(&self) -> bool {
        let watchers = self.watchers.load(Ordering::Relaxed);
        watchers > 0 && self.watchers_listed.load(Ordering::Relaxed) >= watchers
    }

    /// Records the receivers the link may use, in failover order (the first is current).
    pub fn set_targets(&self, targets: Vec<String>) {
        *lock(&self.targets) = targets;
        self.current_target.store(0, Ordering::Relaxed);
    }

    /// The receiver the link uses now (or tries to).
    pub fn current_target(&self) -> Option<String> {
        let current = self.current_target.load(Ordering::Relaxed);
        lock(&self.targets).get(current).cloned()
    }

    /// Failed attempts of `kind` so far.
    pub fn connect_errors(&self, kind: &str) -> u64 {
        lock(&self.connect_errors).get(kind).copied().unwrap_or(0)
    }

    /// Relists of `resource`'s watch so far.
    pub fn watch_restarts(&self, resource: &str) -> u64 {
        lock(&self.watch_restarts)
            .get(resource)
            .copied()
            .unwrap_or(0)
    }

    /// API errors of `resource` so far, all kinds.
    pub fn api_errors(&self, resource: &str) -> u64 {
        lock(&self.api_errors)
            .iter()
            .filter(|((r, _), _)| *r == resource)
            .map(|(_, n)| n)
            .sum()
    }

    /// The `relay_sender_*` series, given the store's pending count and size.
    pub fn series(&self, pending: usize, series: usize) -> SeriesSet<'static> {
        let mut set = SeriesSet::new();
        let none: [&str; 0] = [];
        for (resource, n) in lock(&self.watch_restarts).iter() {
            set.push(Family::SenderWatchRestarts, [*resource], *n as f64);
        }
        for ((resource, kind), n) in lock(&self.api_errors).iter() {
            set.push(Family::SenderApiErrors, [*resource, *kind], *n as f64);
        }
        for (kind, n) in lock(&self.connect_errors).iter() {
            set.push(Family::SenderConnectErrors, [*kind], *n as f64);
        }
        let spooled = self.spooled_samples.load(Ordering::Relaxed);
        set.push(
            Family::SenderQueueDepth,
            none,
            (pending as u64 + spooled) as f64,
        );
        set.push(
            Family::SenderDroppedUpdates,
            ["spool_full"],
            self.dropped_spool_full.load(Ordering::Relaxed) as f64,
        );
        set.push(
            Family::SenderDroppedUpdates,
            ["spool_corrupt"],
            self.dropped_spool_corrupt.load(Ordering::Relaxed) as f64,
        );
        set.push(
            Family::SenderSpoolReplayedBatches,
            none,
            self.replayed_batches.load(Ordering::Relaxed) as f64,
        );
        set.push(
            Family::SenderSpoolSupersededUpdates,
            none,
            self.superseded_samples.load(Ordering::Relaxed) as f64,
        );
        set.push(
            Family::SenderSpoolOfflineBatches,
            none,
            self.offline_batches.load(Ordering::Relaxed) as f64,
        );
        set.push(
            Family::SenderSpoolBases,
            none,
            self.bases_sent.load(Ordering::Relaxed) as f64,
        );
        let current = self.current_target.load(Ordering::Relaxed);
        for (i, target) in lock(&self.targets).iter().enumerate() {
            set.push(
                Family::SenderTarget,
                [target.clone()],
                f64::from(u8::from(i == current)),
            );
        }
        set.push(
            Family::SenderFailovers,
            none,
            self.failovers.load(Ordering::Relaxed) as f64,
        );
        set.push(
            Family::SenderReconnects,
            none,
            self.reconnects.load(Ordering::Relaxed) as f64,
        );
        set.push(
            Family::SenderUsageAvailable,
            none,
            f64::from(u8::from(self.usage_available.load(Ordering::Relaxed))),
        );
        set.push(Family::SenderSeries, none, series as f64);
        set
    }
}

/// The key of the sender's own series.
pub fn self_key() -> ObjectKey {
    ObjectKey::new(ObjectKind::SelfMetrics, "", "sender")
}

/// What every task of one sender shares.
#[derive(Debug)]
pub struct Shared {
    store: Mutex<SeriesStore>,
    changed: Notify,
    /// Self-metric counters.
    pub stats: Stats,
    /// Whether the API server answers and each watch is established.
    pub source: Arc<SourceHealth>,
}

impl Shared {
    /// Shared state around an empty store for `epoch`.
    pub fn new(epoch: u64) -> Self {
        Shared {
            store: Mutex::new(SeriesStore::new(epoch)),
            changed: Notify::new(),
            stats: Stats::default(),
            source: Arc::new(SourceHealth::default()),
        }
    }

    /// Locks the store. Do not hold the guard across an `.await`.
    pub fn store(&self) -> MutexGuard<'_, SeriesStore> {
        lock(&self.store)
    }

    /// Runs `f` on the store and wakes the link when it reports a change.
    pub fn update(&self, f: impl FnOnce(&mut SeriesStore) -> bool) -> bool {
        let changed = f(&mut self.store());
        if changed {
            self.changed.notify_one();
        }
        changed
    }

    /// Resolves after the next change (or at once if one happened since the last wait).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The `relay_sender_*` series: the counters' and the source's health, given the store.
    pub fn self_series(&self, store: &SeriesStore) -> SeriesSet<'static> {
        let mut set = self.stats.series(store.pending(), store.len());
        self.source.push_series(&mut set);
        set
    }

    /// Recomputes the self-metrics series from the counters and the source's health.
    pub fn refresh_self_metrics(&self) {
        self.update(|store| {
            let set = self.self_series(store);
            store.apply(&self_key(), &set)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_metrics_cover_the_catalogue() {
        let shared = Shared::new(1);
        shared.stats.watch_restart("pods");
        shared.stats.watch_restart("pods");
        shared.stats.api_error("pods", "gone");
        shared.stats.connect_error("tls_certificate");
        shared.stats.reconnects.store(3, Ordering::Relaxed);
        shared.stats.dropped_spool_full.store(12, Ordering::Relaxed);
        shared.stats.spooled_samples.store(4, Ordering::Relaxed);
        shared.source.expect_watch("pods", None);
        shared
            .stats
            .set_targets(vec!["a:9000".to_owned(), "b:9000".to_owned()]);
        shared.stats.current_target.store(1, Ordering::Relaxed);
        shared.stats.failovers.store(1, Ordering::Relaxed);
        shared.refresh_self_metrics();
        let lines = shared.store().render();
        assert_eq!(
            lines,
            [
                r#"relay_sender_api_errors_total{resource="pods",kind="gone"} 1"#,
                "relay_sender_api_up 0",
                r#"relay_sender_connect_errors_total{kind="tls_certificate"} 1"#,
                r#"relay_sender_dropped_updates_total{reason="spool_corrupt"} 0"#,
                r#"relay_sender_dropped_updates_total{reason="spool_full"} 12"#,
                "relay_sender_failovers_total 1",
                "relay_sender_queue_depth 4",
                "relay_sender_reconnects_total 3",
                "relay_sender_series 0",
                "relay_sender_spool_bases_total 0",
                "relay_sender_spool_offline_batches_total 0",
                "relay_sender_spool_replayed_batches_total 0",
                "relay_sender_spool_superseded_updates_total 0",
                r#"relay_sender_target{target="a:9000"} 0"#,
                r#"relay_sender_target{target="b:9000"} 1"#,
                "relay_sender_usage_available 0",
                r#"relay_sender_watch_restarts_total{resource="pods"} 2"#,
                r#"relay_sender_watch_up{resource="pods"} 0"#,
            ]
        );
        // The next refresh counts its own series and the pending ones.
        shared.refresh_self_metrics();
        assert_eq!(shared.store().value(Family::SenderSeries, &[]), Some(18.0));
        assert_eq!(shared.stats.watch_restarts("pods"), 2);
        assert_eq!(shared.stats.api_errors("pods"), 1);
    }
}
