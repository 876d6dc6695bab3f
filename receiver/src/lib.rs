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
//! With `--remote-write-url` the receiver also writes every change, at the time the sender
//! observed it, to Prometheus remote-write backends (VictoriaMetrics, Mimir, Thanos
//! Receive, Prometheus), each from its own queue on disk, so history survives link cuts and
//! restarts (docs/protocol.md, "Time and history").
//!
//! Nobody is let in by accident: the ingest port can require TLS and client certificates,
//! the sender's token is checked in constant time before anything but its `Hello` is
//! decoded, unauthenticated connections are capped per address and bounded by one
//! handshake deadline, and every refusal is counted and logged (rate-limited) with the peer.
//! `/metrics` can be served over TLS behind basic auth. Plain TCP without a token still
//! works for a lab, with a loud warning at start.
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
//! - [`config`]: [`ReceiverConfig`] and its defaults; [`Cli`], the schema of the flags, the
//!   `KUBE_RELAY_RECEIVER_*` environment and `[receiver]` in the config file, resolved by the
//!   layer both binaries share (`kube_relay_proto::config`).
//! - [`server`]: [`Receiver`]: binds both listeners; the sender accept loop (connection cap,
//!   per-address handshake cap, accept backoff), the TLS handshake in each connection's
//!   task, start-up warnings, shutdown.
//! - [`farewell`]: a `Reject` the peer gets to read before the connection closes.
//! - [`session`]: one connection: handshake checks (version, token, cluster name, cluster in
//!   use), batches into the store, acks, heartbeat echo, timeouts. Generic over
//!   `AsyncRead + AsyncWrite`, so it runs the same over TCP and TLS.
//! - [`tls`]: rustls server configurations from PEM files, reloaded when they change;
//!   handshake failures as bounded labels. (The client side tests dial with lives in
//!   `kube_relay_testkit::tls`; the sender builds its own.)
//! - [`security`]: constant-time secret comparison, HTTP basic auth, the rate-limited log
//!   of refused connections.
//! - [`store`]: per-cluster state, each cluster behind its own lock: pre-rendered series,
//!   snapshot staging, session memory for resumption, link state and TTL expiry, scaling
//!   events, and the encoding of every cluster's series from copy-on-write views, so a
//!   scrape does not stall ingest.
//! - [`exposition`]: the OpenMetrics and Prometheus text writers and content negotiation
//!   (a leaf: pure functions over strings).
//! - [`metrics`]: the receiver's self-metrics in a prometheus-client registry.
//! - [`remote_write`]: with `--remote-write-url`, every cluster's history as Prometheus
//!   remote-write samples at their observation time, from a durable on-disk queue per URL
//!   (its own Layout section lists its parts); sessions acknowledge a batch once every
//!   queue holds its samples.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, and the [`status`] page at `/`, over
//!   plain HTTP or TLS, optionally behind basic auth.
//! - [`page`]: a page rendered on a thread of its own, at lower priority, and streamed to
//!   the client in pieces as it is written (`/metrics` at a million series is 167 MB).
//! - [`telemetry`]: logging setup for the binary.

pub mod config;
pub mod error;
pub mod exposition;
pub mod farewell;
pub mod http;
pub mod metrics;
pub mod page;
pub mod remote_write;
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
