//! shoal's place in the table, before it can fill it.
//!
//! `shoal-server` boots pinned shards but does not yet run VSR groups over a
//! TCP bus, so there is no replicated cluster to measure. This system says so
//! in the table instead of inventing numbers. When the server runs clusters,
//! this file gets a real driver (start 3 `shoal-server` processes in
//! `StartSettings::dir`, append through the client library, read by offset)
//! and the ratio columns fill in by themselves (`report::ratios_vs_shoal`).

use crate::error::{BenchError, Unavailable};
use crate::system::{ReadBatch, StartSettings, System};

pub const NOT_RUNNABLE_REASON: &str =
    "shoal-server does not run replicated VSR groups over TCP yet (the cluster work is in progress)";

#[derive(Debug)]
pub struct Shoal {
    pub shards_per_replica_count: usize,
}

impl System for Shoal {
    fn name(&self) -> String {
        let plural = if self.shards_per_replica_count == 1 { "" } else { "s" };
        format!("shoal (3 replicas, {} shard{plural} each)", self.shards_per_replica_count)
    }

    fn durability(&self) -> String {
        "fsync on a quorum before ack".to_owned()
    }

    fn install(&mut self) -> Result<String, Unavailable> {
        Err(Unavailable::NotRunnableYet { reason: NOT_RUNNABLE_REASON.to_owned() })
    }

    async fn start(&mut self, _settings: &StartSettings) -> Result<(), BenchError> {
        unreachable!("install() reports shoal as not runnable yet")
    }

    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    fn server_pids(&self) -> Vec<u32> {
        Vec::new()
    }

    fn append(&self, _payload: Vec<u8>) -> impl Future<Output = Result<(), BenchError>> + Send + 'static {
        // Never called (install() refuses), but an error is safer than a panic.
        std::future::ready(Err(BenchError::client("shoal", "append", NOT_RUNNABLE_REASON)))
    }

    async fn read(&mut self, _count: usize) -> Result<ReadBatch, BenchError> {
        unreachable!("install() reports shoal as not runnable yet")
    }

    fn stop(&mut self) {}
}
