//! Translators: pure functions from one Kubernetes object to its [`SeriesSet`], one module
//! per kind. Label sets follow `docs/metrics.md` exactly.
//!
//! [`SeriesSet`]: crate::series::SeriesSet

pub mod hpa;
pub mod namespaces;
pub mod nodes;
pub mod pods;
