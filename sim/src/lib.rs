//! A simulated Kubernetes cluster that `kubectl` and kube-rs accept as a real one.
//!
//! No Kubernetes runs where kube-relay is built and tested, so this crate is the ground its
//! sender tests and the README demo stand on. It serves the Kubernetes API over plain HTTP
//! on a listener the caller binds: discovery (`/api`, `/apis`, `/version`, group/version
//! resource lists including `metrics.k8s.io/v1beta1`), list and watch with
//! resourceVersions, bookmarks, `410 Gone`, `limit`/`continue` paging and label/field
//! selectors, Tables for `kubectl get`, the deployment scale subresource, pod deletion, and
//! the kubelet's `/metrics/resource` through the node proxy. Every object is a real
//! `k8s-openapi` (or `k8s-metrics`) type, serialized once when written, with
//! `managedFields` like a real control plane leaves them.
//!
//! Behind the API runs a deterministic state machine: deployments own ReplicaSets own pods
//! that go Pending → ContainerCreating → Running → Ready, crash into `CrashLoopBackOff`,
//! fail or get deleted and are replaced; a load model turns clients into CPU; metrics-server
//! turns CPU counters into PodMetrics; the HPA controller runs the real algorithm and emits
//! `SuccessfulRescale` events with the real wording. A [`Scenario`] (YAML) describes the
//! cluster and its timeline; [`ClockMode::Manual`] steps it exactly in tests, real time
//! (optionally sped up) drives the demo.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kube_relay_sim::{ClockMode, Scenario, Simulator};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let sim = Simulator::start(Scenario::builtin("demo")?, listener, ClockMode::Manual).await?;
//! let handle = sim.handle();
//! handle.advance(std::time::Duration::from_secs(120))?;
//! println!("{} scaling events; kubeconfig:\n{}", handle.scaling_events().len(), sim.kubeconfig_yaml());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # What it does not do
//! - Writes other than pod deletion and the deployment scale subresource (`GET`/`PUT`/
//!   `PATCH` with merge, strategic-merge, JSON or apply patches) answer `405`: the scenario
//!   and [`SimHandle`] shape the cluster, not API clients.
//! - JSON only (no protobuf, `406` when a client accepts nothing else); legacy discovery only
//!   (kubectl falls back from aggregated discovery); no OpenAPI documents, logs, exec,
//!   rolling updates, services or authentication.
//! - Timestamps are the simulation clock: wall-clock time at start plus simulated time. In
//!   [`ClockMode::Manual`] or at `speed > 1` they run ahead of the wall clock, so ages that
//!   clients compute themselves (`kubectl describe`) can read `<invalid>`.
//! - Memory: every object is held typed and serialized; 10,000 pods take about 230 MB, so
//!   memory benchmarks of a client should run the `kube-sim` binary out of process.
//!
//! # Layout
//! - [`scenario`]: the YAML format and the built-in scenarios (`sim/scenarios/*.yaml`).
//! - `sim`: [`Simulator`], [`RunningSim`], [`SimHandle`], [`ClockMode`].
//! - `cluster`: the state machine and its tick; `workloads` (deployments, ReplicaSets,
//!   scheduler, kubelet), `usage` (CPU accounting, metrics-server, kubelet metrics),
//!   `autoscaler` (the HPA controller) and `hpa` (the HPA algorithm, pure) extend it.
//! - `store`: objects, the global resourceVersion, per-kind watch history, list snapshots.
//! - `server`, `api`, `watch`, `table`, `resources`, `selector`: the HTTP API.
//! - `objects`, `load`, `units`: object builders, the load model, Kubernetes units.

mod api;
mod autoscaler;
mod cluster;
mod error;
mod hpa;
mod load;
mod objects;
mod resources;
pub mod scenario;
mod selector;
mod server;
mod sim;
mod store;
mod table;
mod units;
mod usage;
mod watch;
mod workloads;

pub use cluster::Fault;
pub use error::{Error, Result};
pub use scenario::Scenario;
pub use server::RequestRecord;
pub use sim::{ClockMode, RunningSim, SimHandle, Simulator};
