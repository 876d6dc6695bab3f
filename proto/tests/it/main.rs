//! Integration tests of the `proto` crate: one test binary, one module per area (each
//! module's own doc says what it covers). One binary links the crate's heavy dependencies
//! once instead of once per file.

mod wire;
