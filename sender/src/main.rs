//! `sender`: the binary (wiring lands with the watchers and the connection).
fn main() {}
