//! Integration tests of the `receiver` crate: one test binary, one module per area (each
//! module's own doc says what it covers). One binary links the crate's heavy dependencies
//! once instead of once per file.

mod abuse;
mod binary;
mod common;
mod exposition;
mod fan_in;
mod floods;
mod http_security;
mod limits;
mod prometheus;
mod remote_write;
mod remote_write_auth;
mod security;
mod sessions;
mod status_page;
