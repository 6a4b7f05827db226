//! `cargo xtask`: setup, test, ci, sim, bench.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
fn main() {}
