//! Integration tests of the `testkit` crate: one test binary, one module per area (each
//! module's own doc says what it covers). One binary links the crate's heavy dependencies
//! once instead of once per file.

mod api_restart;
mod assets;
mod boundaries;
mod common;
mod dashboards;
mod demo_script;
mod deploy_tls;
mod faults;
mod frozen_source;
mod help_text;
mod kubernetes_alerts;
mod mixin_alerts;
mod netns_harness;
mod prometheus_runner;
mod public_dashboards;
mod public_proof;
mod relayed_state;
mod remote_write;
mod sender_restart;
mod walking_skeleton;
