//! shoal-runtime: the real world behind `shoal_vsr::Io`.
//!
//! Owns `RealIo` (one compio runtime per thread, io_uring with the polling
//! driver as fallback), thread pinning (nix + hwlocality), the shard bootstrap
//! and process lifecycle, crossfire channels, the TCP bus and the
//! `shoal-server` / `shoal-bench` binaries.
//!
//! This is the one crate allowed wall-clock time and threads.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod alloc_count;
pub mod bootstrap;
pub mod bus;
pub mod config;
pub mod data_dir;
pub mod host;
pub mod limits;
pub mod metrics;
pub mod pinning;
pub mod real_io;

pub use real_io::{DriverChoice, RealFile, RealIo, RealTask, build_runtime};
