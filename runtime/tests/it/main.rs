//! Integration tests of shoal-runtime: one binary, one module per area.
//!
//! Like the crate itself, these tests are the real world: wall-clock time and
//! threads are allowed here.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod bus;
mod cluster;
mod journal_conformance;
mod metrics;
mod process;
mod read;
mod real_io;
mod server;
mod server_config;
mod support;
mod wire;
