//! One cluster's state: who holds it ([`Holder`]), its live data, the staging area where a
//! snapshot is assembled before it replaces the live data at once, the order rules for
//! batches (sequence numbers, snapshot parts, duplicates) and the counters behind the
//! receiver's self-metrics.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use kube_relay_proto::{Batch, Hello};
use tokio::time::Instant;

use super::claims::{Holder, LinkState};
use super::data::{
    ClusterData, DataApplied, DataView, Live, MAX_FAMILIES_PER_CLUSTER, Refusal, Violation,
};
use super::names::FamilyNames;
use super::scaling::{self, LAST_ACTION_FAMILY, ScalingEvent};

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

impl From<Violation> for ApplyError {
    fn from(v: Violation) -> Self {
        ApplyError::Violation(v.0)
    }
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
    /// The address of the sender's last connection (also while the cluster is down).
    pub peer: Option<std::net::SocketAddr>,
    /// Last time a batch changed the cluster's own series (the sender's `relay_sender_*`
    /// self-metrics do not count; a snapshot does, being the cluster's whole state).
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
    /// Family definitions refused because their names clash with another family's.
    pub families_refused: u64,
}

/// One cluster's state (see the module docs).
#[derive(Debug)]
pub(crate) struct ClusterState {
    pub(crate) holder: Holder,
    data: ClusterData,
    staging: Option<Staging>,
    last_update: Option<SystemTime>,
    frames: u64,
    bytes: u64,
    updates: u64,
    duplicates: u64,
    series_dropped: u64,
    families_refused: u64,
    /// Names of refused families already logged (bounded by the family limit), so a
    /// sender re-sending its snapshot does not repeat the line.
    refusals_logged: HashSet<String>,
}

#[derive(Debug)]
struct Staging {
    data: ClusterData,
    next_seq: u64,
    /// A part carried series of the cluster's own, not only the sender's self-metrics.
    from_cluster: bool,
}

impl ClusterState {
    /// A cluster first seen in `hello`, with no data and no holder yet.
    pub(crate) fn new(hello: &Hello) -> Self {
        ClusterState {
            holder: Holder::new(hello),
            data: ClusterData::default(),
            staging: None,
            last_update: None,
            frames: 0,
            bytes: 0,
            updates: 0,
            duplicates: 0,
            series_dropped: 0,
            families_refused: 0,
            refusals_logged: HashSet::new(),
        }
    }

    /// Counts a frame of `bytes` received for this cluster.
    pub(crate) fn count_frame(&mut self, bytes: usize) {
        self.frames += 1;
        self.bytes += bytes as u64;
    }

    /// Drops a half-received snapshot (its connection ended or was replaced).
    pub(crate) fn drop_staging(&mut self) {
        self.staging = None;
    }

    /// Applies one batch in sequence. Increases of tracked counters are appended to
    /// `events`, with the new size and reason the applied data gives them; live data a
    /// snapshot replaced is moved to `garbage`, to be freed outside the lock. A violation
    /// forgets the session memory.
    pub(crate) fn apply(
        &mut self,
        cluster: &str,
        batch: &Batch,
        max_series: usize,
        names: &Mutex<FamilyNames>,
        events: &mut Vec<ScalingEvent>,
        garbage: &mut Option<ClusterData>,
    ) -> Result<Applied, ApplyError> {
        let before = events.len();
        let result = self.apply_in_order(cluster, batch, max_series, names, events, garbage);
        if let Some(new) = events.get_mut(before..) {
            scaling::describe(new, self.data.samples_named(LAST_ACTION_FAMILY));
        }
        if let Err(ApplyError::Violation(_)) = result {
            self.holder.acked = None;
            self.staging = None;
        }
        result
    }

    fn apply_in_order(
        &mut self,
        cluster: &str,
        batch: &Batch,
        max_series: usize,
        names: &Mutex<FamilyNames>,
        events: &mut Vec<ScalingEvent>,
        garbage: &mut Option<ClusterData>,
    ) -> Result<Applied, ApplyError> {
        let seq = batch.seq;
        if self.holder.acked.is_some_and(|acked| seq <= acked) {
            self.duplicates += 1;
            return Ok(Applied::Duplicate);
        }
        let snapshot = batch.snapshot;
        if snapshot.is_some_and(|p| p.first) {
            // A snapshot may follow any seq: re-base on it.
            self.staging = Some(Staging {
                data: ClusterData::default(),
                next_seq: seq,
                from_cluster: false,
            });
        } else {
            let expected = match (&self.staging, self.holder.acked) {
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
        match &mut self.staging {
            Some(staging) => {
                let applied = staging.data.apply(cluster, batch, max_series, None)?;
                staging.next_seq = seq.saturating_add(1);
                staging.from_cluster |= applied.from_cluster;
                self.count(cluster, applied);
                if snapshot.is_some_and(|p| p.last) {
                    if let Some(staging) = self.staging.take() {
                        if staging.from_cluster {
                            self.last_update = Some(SystemTime::now());
                        }
                        let mut old = std::mem::replace(&mut self.data, staging.data);
                        old.release_names(names);
                        let refused = self.data.publish(cluster, names);
                        self.count(
                            cluster,
                            DataApplied {
                                refused,
                                ..DataApplied::default()
                            },
                        );
                        self.data.record_increases_since(&old, cluster, events);
                        *garbage = Some(old);
                    }
                    self.holder.acked = Some(seq);
                    Ok(Applied::SnapshotComplete { acked: seq })
                } else {
                    Ok(Applied::Staged)
                }
            }
            None => {
                let live = Live { names, events };
                let applied = self.data.apply(cluster, batch, max_series, Some(live))?;
                if applied.from_cluster {
                    self.last_update = Some(SystemTime::now());
                }
                self.count(cluster, applied);
                self.holder.acked = Some(seq);
                Ok(Applied::Batch {
                    acked: self.holder.acked,
                })
            }
        }
    }

    /// Counts dropped series and refused families; logs each refused family once.
    fn count(&mut self, cluster: &str, applied: DataApplied) {
        self.series_dropped += applied.dropped;
        for Refusal { family, reason } in applied.refused {
            self.families_refused += 1;
            if self.refusals_logged.len() < MAX_FAMILIES_PER_CLUSTER
                && self.refusals_logged.insert(family.clone())
            {
                tracing::warn!(
                    cluster = %cluster,
                    family = %family,
                    reason = %reason,
                    "family refused: its series are not exposed (counted in \
                     relay_receiver_families_refused_total; logged once per family)"
                );
            }
        }
    }

    /// Gives back the names the live data holds (the cluster is being removed).
    pub(crate) fn release_names(&mut self, names: &Mutex<FamilyNames>) {
        self.data.release_names(names);
    }

    /// A copy of the live data for a scrape.
    pub(crate) fn view(&self) -> DataView {
        self.data.view()
    }

    /// The cluster as the status page and self-metrics show it.
    pub(crate) fn status(&self, name: &str, ttl: Duration, now: Instant) -> ClusterStatus {
        ClusterStatus {
            cluster: name.to_owned(),
            link: self.holder.link_state(ttl, now),
            sender_id: self.holder.sender_id.clone(),
            agent: self.holder.agent.clone(),
            peer: self.holder.peer,
            last_update: self.last_update,
            series: self.data.live(),
            frames: self.frames,
            bytes: self.bytes,
            updates: self.updates,
            duplicates: self.duplicates,
            series_dropped: self.series_dropped,
            families_refused: self.families_refused,
        }
    }
}

fn violation(msg: String) -> ApplyError {
    ApplyError::Violation(msg)
}
