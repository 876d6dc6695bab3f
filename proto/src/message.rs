//! The messages of a session, in both directions.
//!
//! Bincode encodes enum variants by position: new variants and fields go at the end, and any
//! change that an older peer would misread bumps [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).

use serde::{Deserialize, Serialize};

use crate::metric::{FamilyDef, SeriesDef, SeriesId, Updates};

/// Everything a sender sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SenderMessage {
    /// First message of every connection.
    Hello(Hello),
    /// A sequence-numbered batch of metric changes.
    Batch(Batch),
    /// Keeps an idle link alive and proves the sender is there.
    Heartbeat(Heartbeat),
    /// The sender is closing the connection on purpose (for example on SIGTERM).
    Goodbye(Goodbye),
}

/// Everything a receiver sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReceiverMessage {
    /// The handshake succeeded.
    Welcome(Welcome),
    /// The handshake failed; the receiver closes the connection after sending this.
    Reject(Reject),
    /// Batches up to `seq` of `epoch` are applied.
    Ack(Ack),
    /// Answers a sender heartbeat, so the sender notices a dead link too.
    Heartbeat(Heartbeat),
}

/// Opens a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
    pub version: u16,
    /// Name of the cluster this sender reports, becomes the `cluster` label.
    pub cluster: String,
    /// Stable identity of this sender instance, so a reconnect is told apart from a second
    /// sender claiming the same cluster.
    pub sender_id: String,
    /// Changes whenever the sender's series ids start afresh (a restart without a durable
    /// spool). Sequence numbers count within an epoch.
    pub epoch: u64,
    /// Shared secret, when the receiver requires one.
    pub token: Option<String>,
    /// Oldest unacknowledged sequence number the sender can still replay within `epoch`, or
    /// `None` when it holds nothing to replay.
    pub resume_from: Option<u64>,
    /// Name and version of the sending software, for logs and the status page.
    pub agent: String,
}

/// Accepts a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The receiver's protocol version.
    pub version: u16,
    /// Where the sender should continue.
    pub resume: Resume,
    /// Heartbeat interval the receiver expects, in milliseconds. The receiver closes a
    /// connection silent for several intervals.
    pub heartbeat_interval_ms: u32,
    /// The receiver's data-frame limit in bytes (its `--max-frame-bytes`): the sender splits
    /// batches so no frame exceeds it.
    pub max_frame_bytes: u32,
}

/// Where a sender continues after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resume {
    /// The receiver holds no usable state for this epoch: send a full snapshot.
    Snapshot,
    /// The receiver applied every batch of this epoch up to and including `acked`: replay
    /// from `acked + 1`.
    After {
        /// Highest contiguous sequence number applied.
        acked: u64,
    },
}

/// Refuses a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// Machine-readable reason.
    pub reason: RejectReason,
    /// Human-readable explanation for the sender's log.
    pub message: String,
}

/// Why a receiver refused a session. Also a bounded metric label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The receiver speaks none of the sender's versions.
    UnsupportedVersion {
        /// Versions the receiver supports.
        supported: Vec<u16>,
    },
    /// Missing or wrong token.
    Unauthorized,
    /// Another live sender reports this cluster.
    ClusterInUse,
    /// The hello is malformed (bad cluster name, ...).
    InvalidHello,
    /// The receiver is at its connection or cluster limit.
    Busy,
    /// The receiver is shutting down.
    ShuttingDown,
    /// The receiver's port requires TLS and the sender spoke plain TCP.
    TlsRequired,
    /// A frame exceeded the receiver's limit (sent before closing the connection).
    FrameTooLarge {
        /// The receiver's limit in bytes.
        limit: u32,
    },
    /// The sender broke the protocol after the handshake (unknown series id, a gap in
    /// sequence numbers, a payload that does not decode); `message` says how.
    ProtocolViolation,
}

impl RejectReason {
    /// A short, bounded label, e.g. for `relay_receiver_handshakes_rejected_total{reason}`.
    pub fn as_label(&self) -> &'static str {
        match self {
            RejectReason::UnsupportedVersion { .. } => "unsupported_version",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::ClusterInUse => "cluster_in_use",
            RejectReason::InvalidHello => "invalid_hello",
            RejectReason::Busy => "busy",
            RejectReason::ShuttingDown => "shutting_down",
            RejectReason::TlsRequired => "tls_required",
            RejectReason::FrameTooLarge { .. } => "frame_too_large",
            RejectReason::ProtocolViolation => "protocol_violation",
        }
    }
}

/// A sequence-numbered group of metric changes, applied as a unit in this order: families,
/// series, updates, removals.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Batch {
    /// Sequence number within the sender's epoch; consecutive, starting at 1.
    pub seq: u64,
    /// Set when this batch is part of a full snapshot.
    pub snapshot: Option<SnapshotPart>,
    /// Families defined by this batch.
    pub families: Vec<FamilyDef>,
    /// Series defined by this batch (their values come in `updates`).
    pub series: Vec<SeriesDef>,
    /// New values.
    pub updates: Updates,
    /// Series that no longer exist (their object was deleted).
    pub removals: Vec<SeriesId>,
    /// When the sender observed the newest change in this batch (for a snapshot: when it
    /// took the snapshot), in milliseconds since the Unix epoch, by the sender's clock. The
    /// time every sample of the batch is stamped with downstream; kept in the disk spool, so
    /// a batch replayed after an outage still carries the time it happened.
    pub observed_at_ms: u64,
}

impl Batch {
    /// Number of samples this batch changes (updates plus removals).
    pub fn changed_samples(&self) -> usize {
        self.updates.len() + self.removals.len()
    }
}

/// Marks a batch as part of a snapshot. A snapshot replaces the cluster's whole state at
/// once when its last part arrives; series ids start afresh with its first part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPart {
    /// The first batch of the snapshot.
    pub first: bool,
    /// The last batch of the snapshot.
    pub last: bool,
}

/// Acknowledges batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The sender epoch acknowledged.
    pub epoch: u64,
    /// Highest contiguous sequence number applied.
    pub seq: u64,
}

/// A liveness probe; echoed back by the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender's clock when sent, in milliseconds since the Unix epoch (for round-trip time).
    pub sent_at_ms: u64,
}

/// Says why the sender is closing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye {
    /// Human-readable reason.
    pub reason: String,
}
