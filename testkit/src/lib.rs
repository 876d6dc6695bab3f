//! Test support shared by kube-relay's integration and end-to-end tests.
//!
//! One place for what several crates' tests need, so no test copies another's helpers:
//! - [`prometheus`]: starts Debian's real `prometheus` on loopback, scraping given targets,
//!   and queries its HTTP API;
//! - [`exposition`]: parse what a `/metrics` endpoint serves into samples;
//! - [`http`]: a minimal HTTP/1.0 client for loopback tests (no TLS, no redirects);
//! - [`wait`]: poll a condition until a deadline instead of sleeping;
//! - [`logs`]: the test binary's own log lines, for assertions on what a component logs;
//! - [`process`]: locate the workspace's binaries and run them as child processes that are
//!   killed when dropped;
//! - [`netns`]: a second host in a network namespace behind a veth link that can be cut or
//!   made lossy;
//! - [`proxy`]: a TCP proxy adding latency, stalling or resetting connections;
//! - [`pki`]: CAs, server and client certificates generated for TLS tests;
//! - [`victoria`]: starts Debian's real `victoria-metrics` on loopback as a remote-write
//!   backend, stops and restarts it, and exports its raw samples;
//! - [`write_backend`]: a scripted remote-write backend answering statuses on cue;
//! - [`mod@skip`]: a loud skip when a tool or permission is missing, a failure in CI;
//! - [`tls`]: the client side of the test PKI (what a sender trusts and presents);
//! - `receiver` (feature `receiver`): the real receiver running in the test's runtime.

pub mod exposition;
pub mod http;
pub mod logs;
pub mod netns;
pub mod pki;
pub mod process;
pub mod prometheus;
pub mod proxy;
#[cfg(feature = "receiver")]
pub mod receiver;
pub mod skip;
pub mod tls;
pub mod victoria;
pub mod wait;
pub mod write_backend;

pub use prometheus::Prometheus;
pub use skip::skip;
pub use victoria::VictoriaMetrics;
pub use wait::wait_until;
