//! The kube-relay receiver: accepts senders over TCP and serves their clusters' metrics to
//! Prometheus.
//!
//! Senders (one per cluster, identified by the cluster name and a sender id) connect to the
//! ingest listener (`:9000`) and speak the protocol of `kube_relay_proto`: a `Hello`
//! handshake, a snapshot, then deltas, heartbeats and acks. The receiver keeps each
//! cluster's series in one [`Store`] and encodes them at scrape time on `GET /metrics`
//! (`:9100`), every series labelled `cluster="<name>"`, in OpenMetrics or Prometheus text
//! by content negotiation, beside its own self-metrics. When a sender goes away its
//! `relay_cluster_up` drops to 0 at once and its series are removed after a TTL unless it
//! comes back; a returning sender resumes where its acks left off.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_relay_receiver::Error> {
//! use kube_relay_receiver::{Receiver, ReceiverConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! let receiver = Receiver::bind(ReceiverConfig::loopback()).await?;
//! println!("senders: {}, metrics: http://{}/metrics", receiver.ingest_addr(), receiver.http_addr());
//! let shutdown = CancellationToken::new();
//! receiver.run(shutdown).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: [`ReceiverConfig`] and its defaults, the command line ([`Cli`]) and the
//!   config file.
//! - [`server`]: [`Receiver`]: binds both listeners; the sender accept loop (connection cap,
//!   accept backoff) and shutdown.
//! - [`session`]: one connection: handshake checks (version, token, cluster name, cluster in
//!   use), batches into the store, acks, heartbeat echo, timeouts. Generic over
//!   `AsyncRead + AsyncWrite`.
//! - [`store`]: per-cluster state behind one mutex: pre-rendered series, snapshot staging,
//!   session memory for resumption, link state and TTL expiry, scaling events.
//! - [`exposition`]: OpenMetrics and Prometheus text encoding, content negotiation.
//! - [`metrics`]: the receiver's self-metrics in a prometheus-client registry.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, and the [`status`] page at `/`.
//! - [`telemetry`]: logging setup for the binary.

pub mod config;
pub mod error;
pub mod exposition;
pub mod http;
pub mod metrics;
pub mod security;
pub mod server;
pub mod session;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use config::{Cli, LogFormat, ReceiverConfig};
pub use error::{Error, Result};
pub use exposition::Format;
pub use security::BasicAuth;
pub use server::Receiver;
pub use store::Store;
pub use tls::TlsFiles;
