//! A simulated Kubernetes cluster that `kubectl` and kube-rs accept as a real one.
//!
//! No Kubernetes runs where kube-relay is built and tested, so this crate is the ground its
//! sender tests and the README demo stand on. It serves the Kubernetes API over plain HTTP
//! on a listener the caller binds: discovery (`/api`, `/apis`, `/version`, group/version
//! resource lists including `metrics.k8s.io/v1beta1`), list and watch with
//! resourceVersions, bookmarks, `410 Gone` for forgotten ones and `504 Too large resource
//! version` for ones never issued (what a restart with fresh storage looks like to a client:
//! every object has a fresh uid too), `limit`/`continue` paging and label/field
//! selectors, Tables for `kubectl get`, the deployment scale subresource, pod deletion, and
//! the kubelet's `/metrics/resource` through the node proxy. Every object is a real
//! `k8s-openapi` (or `k8s-metrics`) type, serialized once when written, with
//! `managedFields` like a real control plane leaves them.
//!
//! Behind the API runs a deterministic state machine: deployments own ReplicaSets own pods
//! that go Pending → ContainerCreating → Running → Ready, crash into `CrashLoopBackOff`
//! (`Error` or `OOMKilled`), wait in `ErrImagePull`/`ImagePullBackOff`, stay Pending when no
//! node can allocate their requests, get evicted, deleted and replaced; deployments roll out
//! new ReplicaSets (25 % surge and unavailability, `ProgressDeadlineExceeded` when stuck);
//! nodes have capacity, allocatable and conditions (memory pressure, a lost kubelet) with
//! their taints. The `faults` scenario shows all of it. A load model turns clients into CPU; metrics-server
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
//! (`kube-sim --help` says the same to users.)
//! - Writes other than pod deletion and the deployment scale subresource (`GET`/`PUT`/
//!   `PATCH` with merge, strategic-merge, JSON or apply patches) answer `405` naming what is
//!   writable: the scenario and [`SimHandle`] shape the cluster, not API clients.
//! - No containers run: `pods/log`, `exec`, `attach` and `portforward` answer `404` saying
//!   so. No services, endpoints, configmaps, secrets or jobs; JSON only (no protobuf, `406`
//!   when a client accepts nothing else); legacy discovery only (kubectl falls back from
//!   aggregated discovery); no OpenAPI documents or authentication.
//! - Nodes do not evict pods: neither after a lost node's 300 s toleration (its pods stay,
//!   not Ready) nor under pressure by themselves (the scenario evicts: `action: evict`).
//!   No init containers, sidecars, jobs or DaemonSets; one container per pod.
//! - Timestamps are the simulation clock: wall-clock time at start plus simulated time. In
//!   [`ClockMode::Manual`] or at `speed > 1` they run ahead of the wall clock, so ages that
//!   clients compute themselves (`kubectl describe`) can read `<invalid>`.
//! - Memory: every object is held typed and serialized; 10,000 pods take about 230 MB and
//!   100,000 about 2.3 GB (2.7 GB with a 100,000-change watch history under churn), so
//!   memory benchmarks of a client should run the `kube-sim` binary out of process.
//!
//! # Layout
//! Modules form no cycles; each uses only the ones listed before it.
//! - Leaves: `units` (Kubernetes quantities and durations), `selector`, `resources` (the
//!   served resources and discovery), `error`, [`scenario`] (the YAML format and the built-in
//!   scenarios, `sim/scenarios/*.yaml`), `load` (the load model), `hpa` (the HPA algorithm,
//!   pure), `faults` (injectable API faults), `timeline` (the scenario's scheduled actions),
//!   [`telemetry`] (the binary's logging).
//! - `store`: objects, the global resourceVersion, per-kind watch history, list snapshots.
//! - `objects`: object builders; `pod`: a pod as the kubelet sees it and its rendered status.
//! - `state`: the `Cluster` struct and the state types its controllers share.
//! - The controllers, each an `impl Cluster` block using only `state` and the controllers
//!   before it: `recorder` (events), `scheduler`, `kubelet`, `nodes` (conditions and what
//!   they do to pods), `image_pull`, `termination` (pod deletion), `agenda` (due pod
//!   transitions), `replicaset`, `deployment_status`, `deployment` (rollouts), `usage` (CPU
//!   accounting, metrics-server, kubelet metrics), `autoscaler` (the HPA controller),
//!   `steps` (experiment steps).
//! - `cluster`: builds the state from a scenario and runs the tick.
//! - `shared` (the cluster behind its lock, shared with the HTTP side), then the HTTP API:
//!   `table`, `api`, `watch`, `server`.
//! - `sim`: [`Simulator`], [`RunningSim`], [`SimHandle`], [`ClockMode`].

mod agenda;
mod api;
mod autoscaler;
mod cluster;
mod deployment;
mod deployment_status;
mod error;
mod faults;
mod hpa;
mod image_pull;
mod kubelet;
mod load;
mod nodes;
mod objects;
mod pod;
mod recorder;
mod replicaset;
mod resources;
pub mod scenario;
mod scheduler;
mod selector;
mod server;
mod shared;
mod sim;
mod state;
mod steps;
mod store;
mod table;
pub mod telemetry;
mod termination;
mod timeline;
mod units;
mod usage;
mod watch;

pub use error::{Error, Result};
pub use faults::Fault;
pub use scenario::Scenario;
pub use shared::RequestRecord;
pub use sim::{ClockMode, RunningSim, SimHandle, Simulator};
