//! The kube-relay wire protocol, shared by `sender` and `receiver`.
//!
//! A sender (beside a Kubernetes cluster) keeps one TCP connection to a receiver (beside
//! Prometheus) and streams *metrics*, not Kubernetes objects: metric families, series
//! (family + labels) and their values. The receiver stays generic: it never changes when the
//! sender learns a new metric.
//!
//! # Layout
//! - [`frame`]: [`FrameCodec`], a tokio-util codec turning bytes into messages: a 4-byte
//!   big-endian length prefix (capped by an explicit maximum) and a bincode payload decoded
//!   with an explicit size limit, so neither a lying length prefix nor a lying inner length
//!   can make a peer allocate more than the limits allow.
//! - [`message`]: the messages each side sends: the versioned `Hello` / `Welcome` / `Reject`
//!   handshake, sequence-numbered data [`Batch`]es, acks and heartbeats.
//! - [`metric`]: what a batch carries: [`FamilyDef`], [`SeriesDef`], compact [`Updates`]
//!   (sorted series ids sent as gaps, integral values as varints) and removals.
//! - [`names`]: the rule for cluster names and sender ids, checked by the receiver in the
//!   handshake and by the sender at start-up with the same function.
//! - `tls` (feature `tls`): the rustls plumbing both sides share: the crypto provider, PEM
//!   certificates and keys, a CA trust store, server names.
//! - `config` (feature `config`): the configuration layer both binaries share: flag >
//!   environment > file > default for every setting, one config file and one environment
//!   for both binaries, one duration grammar, one reader of secret files.
//!
//! # A session
//! ```text
//! sender                                   receiver
//!   Hello{version, cluster, sender_id, epoch, token, resume_from}  ─►
//!                                       ◄─  Welcome{resume, heartbeat} | Reject{reason}
//!   Batch{seq, snapshot: first..last}  ─►   (a full snapshot, applied atomically)
//!                                       ◄─  Ack{epoch, seq}          (highest contiguous seq)
//!   Batch{seq, deltas} ... Heartbeat   ─►
//!                                       ◄─  Ack / Heartbeat
//!   Goodbye                            ─►
//! ```
//! A batch is applied in a fixed order: families, then series definitions, then updates,
//! then removals. Series ids are scoped to one sender epoch and are reset by a snapshot.
//! Values are absolute (never increments), so replaying a batch is harmless.

#[cfg(feature = "config")]
pub mod config;
pub mod error;
pub mod frame;
pub mod message;
pub mod metric;
pub mod names;
#[cfg(feature = "tls")]
pub mod tls;

pub use error::{Error, Result};
pub use frame::{FrameCodec, ReceiverCodec, SenderCodec};
pub use message::{
    Ack, Batch, Goodbye, Heartbeat, Hello, ReceiverMessage, Reject, RejectReason, Resume,
    SenderMessage, SnapshotPart, Welcome,
};
pub use metric::{FamilyDef, FamilyId, MetricKind, SeriesDef, SeriesId, Updates, Value};
pub use names::{check_cluster_name, check_sender_id};

/// The protocol version this build speaks. A receiver rejects any other version with
/// [`RejectReason::UnsupportedVersion`], naming the versions it supports.
///
/// Version 2 added each batch's observation time ([`Batch::observed_at_ms`]), the
/// receiver's frame limit in [`Welcome`] and the post-handshake reject reasons. A version-1
/// sender is refused (its batches carry no time, so what it spooled could not be placed in
/// history); `docs/protocol.md` says why.
pub const PROTOCOL_VERSION: u16 = 2;

/// Default maximum frame payload length: 1 MiB. Senders split larger batches.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;

/// Hard ceiling for any configured frame length: 16 MiB.
pub const MAX_FRAME_BYTES_CEILING: usize = 16 << 20;

/// Length of the frame header: a big-endian `u32` payload length.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Maximum encoded size of a handshake frame (`Hello`, `Welcome`, `Reject`). A receiver
/// decodes nothing larger before the peer is authenticated.
pub const MAX_HANDSHAKE_FRAME_BYTES: usize = 4 << 10;

/// Longest accepted cluster name, sender id, token or label value, in bytes.
pub const MAX_NAME_BYTES: usize = 253;
