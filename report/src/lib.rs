//! `kube-relay-report`: the HPA scaling report. It reads a Prometheus-compatible query API
//! (Prometheus or VictoriaMetrics) for one cluster over a time window and writes CSV tables
//! and PNG plots: each HPA over time (replicas desired, current, min, max; CPU utilisation
//! against its target; its scaling actions with the size chosen), and each step of an
//! experiment (replicas reached, time to reach them, CPU per pod, restarts), one plot panel
//! per step of a load matrix.
//!
//! # Layout
//! - [`cli`]: the command line into [`report::Options`].
//! - [`window`]: `--from`/`--to` (RFC 3339, Unix seconds, `30m` before now) and the
//!   resolution.
//! - [`query_api`]: the HTTP client of `/api/v1/query_range` and `/api/v1/query` and the
//!   parsing of their answers (errors name the query).
//! - [`queries`]: the PromQL, per family, for one cluster (pods tied to Deployments through
//!   their owners).
//! - [`column`]: series laid on the window's points.
//! - [`hpa`]: HPA timelines and their scaling actions (counter steps, new sizes).
//! - [`steps`]: steps found where the replicas asked of the scaled Deployments change, named
//!   from a kube-sim scenario file; what each Deployment did per step.
//! - [`csv`]: the tables as CSV.
//! - [`plot`]: the PNGs (plotters into a buffer, png to encode, ab_glyph for text).
//! - [`report`]: one run from queries to files.
//! - [`error`]: the error type.
//!
//! Times in the files: `time`/`start` are the query API's clock (RFC 3339); `*_s` durations
//! and CPU are in the cluster's time, the API's times `--speed` (for a simulator sped up).

pub mod cli;
pub mod column;
pub mod csv;
pub mod error;
pub mod hpa;
pub mod plot;
pub mod queries;
pub mod query_api;
pub mod report;
pub mod steps;
pub mod window;

pub use error::{Error, Result};
pub use report::{Options, Summary, run};
