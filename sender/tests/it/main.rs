//! Integration tests of the `sender` crate: one test binary, one module per area (each
//! module's own doc says what it covers). One binary links the crate's heavy dependencies
//! once instead of once per file.

mod backfill;
mod binary;
mod cluster;
mod failover;
mod link;
mod logging;
mod own_port;
mod scaling;
mod spool_model;
mod spool_restart;
mod support;
mod tls;
