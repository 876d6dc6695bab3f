//! The kube-relay sender: watches a Kubernetes cluster and streams its state, as metrics, to
//! a kube-relay receiver.
//!
//! Objects arrive from watches, are translated at once into the series they stand for and
//! dropped; the [`SeriesStore`] keeps only those series and what the receiver has not seen
//! yet; the link sends a snapshot after every (re)connect and coalesced deltas after that.
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), kube_relay_sender::Error> {
//! use kube_relay_sender::{Config, Sender};
//! use tokio_util::sync::CancellationToken;
//!
//! let sender = Sender::new(Config::new("hostb:9000"), client, "prod-eu")?;
//! let shared = sender.shared(); // the store and counters, for tests and diagnostics
//! sender.run(CancellationToken::new()).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`translate`]: pure functions from one Kubernetes object to its [`SeriesSet`]: pods,
//!   HPAs, nodes, namespaces, with kube-state-metrics' names and labels ([`family`] is the
//!   catalogue, `docs/metrics.md` its documentation).
//! - [`events`]: the scaling ledger: HPA `SuccessfulRescale` Events counted exactly once per
//!   occurrence (by uid and count), persisted atomically in the state directory;
//!   [`state_file`]: atomic writes of small state files, and the thread that does them off
//!   the runtime.
//! - [`usage`]: CPU and memory per container from metrics.k8s.io (the CPU counter integrated
//!   from PodMetrics' rate and window) or relayed from the kubelet's `/metrics/resource`;
//!   [`list_items`]: the items of a list response one at a time as its body arrives (the
//!   PodMetrics list cannot be paged).
//! - [`store`]: the derived state. [`SeriesStore`] assigns series ids, diffs an object's new
//!   series set against its previous one, coalesces changes into delta batches and produces
//!   full snapshots, one frame at a time. No Kubernetes object is kept. Its `base` module
//!   keeps removed series' definitions (tombstones) until their removal is acknowledged and
//!   builds the *base* a receiver without our series table gets before the spool.
//! - [`watch`]: one kube-runtime watcher per kind merged into one stream, with relist
//!   semantics, Pods decoded without their managed fields ([`slim_pod`]); [`poll`]: the
//!   usage poller; [`shared`]: the store and the self-metric
//!   counters shared by the tasks; [`source`]: whether the API server answers and each
//!   watch is established (`relay_sender_api_up`, `relay_sender_watch_up`), read from the
//!   watchers' HTTP traffic and a probe.
//! - [`link`]: the connection: handshake, snapshot, deltas, acks, heartbeats, backoff,
//!   replay from the [`spool`] (changes keep going into it while no session is up), the
//!   base for a receiver without our series table, goodbye; generic over the [`transport`] (a `Connector`
//!   opens one per session; plain TCP there); [`tls`]: the TLS transport (`--tls-ca`,
//!   mutual TLS) and the start-up warnings; [`tls_failure`]: a TLS failure as a bounded
//!   label and a hint (a leaf, so [`error`] depends on no transport).
//! - [`spool`]: unacknowledged batches, in memory or on disk (`--spool-dir`,
//!   `<state-dir>/spool`): bounded, checksummed, surviving a restart, after which the sender
//!   continues the spooled epoch and replays them if the receiver still holds it.
//! - [`sender`]: [`Sender`] wires it all; [`config`]: the sender's settings (flags,
//!   `KUBE_RELAY_SENDER_*` environment, `[sender]` in the config file) through the layer
//!   both binaries share; [`target`]: the receivers' addresses (`--target`, several for
//!   failover), checked at start-up; [`kubeclient`]: kubectl-like access (a simulated
//!   cluster is reached the same way, through the kubeconfig `kube-sim` writes);
//!   [`access`]: the RBAC rules the sender needs; [`malloc`], [`telemetry`]: process set-up.
//!
//! [`SeriesSet`]: series::SeriesSet
//! [`SeriesStore`]: store::SeriesStore

pub mod access;
pub mod backoff;
pub mod config;
pub mod error;
pub mod events;
pub mod exposition;
pub mod family;
pub mod http;
pub mod kubeclient;
pub mod link;
pub mod list_items;
pub mod malloc;
pub mod poll;
pub mod process;
pub mod quantity;
pub mod selector;
pub mod sender;
pub mod series;
pub mod shared;
pub mod slim_pod;
pub mod source;
pub mod spool;
pub mod state_file;
pub mod store;
pub mod target;
pub mod telemetry;
pub mod tls;
pub mod tls_failure;
pub mod translate;
pub mod transport;
pub mod usage;
pub mod watch;

#[cfg(test)]
mod fixtures;

pub use access::{Access, required_access};
pub use config::Config;
pub use error::Error;
pub use sender::Sender;
