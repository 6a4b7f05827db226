//! Where a simulated replica process keeps its data on its `SimDisk`.
//!
//! The node itself (group storage, the action driver, state data, hops)
//! is library code in `shoal_shard::node`, the same the server runs; the
//! simulator only gives it a disk and a world.

pub use shoal_shard::node::{GroupStorage, StorageConfig, StorageError};

/// The data dir of every simulated process (each has its own disk).
pub const DATA_DIR: &str = "/data";
