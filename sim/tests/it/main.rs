//! Integration tests of the `sim` crate: one test binary, one module per area (each
//! module's own doc says what it covers). One binary links the crate's heavy dependencies
//! once instead of once per file.

mod api;
mod binary;
mod common;
mod deletion;
mod fault_states;
mod hpa;
mod kubectl;
mod lifecycle;
mod resource_versions;
mod scenario;
mod seed_scenarios;
mod watcher;
