//! The one interface every benchmarked system implements.
//!
//! The workload (`workload.rs`) knows nothing of NATS, etcd or shoal: it
//! starts a `System`, appends through it one at a time and pipelined, reads
//! back, and stops it. Adding shoal's real driver is one more implementation
//! of this trait (today `shoal.rs` reports why it cannot run yet).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{BenchError, Unavailable};

/// Messages a read returned, in the system's log order.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// The index each message carries in its first 8 bytes (see `workload::payload`).
    pub indices: Vec<u64>,
    pub payload_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct StartSettings {
    /// Where the cluster keeps its data and logs; removed at stop.
    pub dir: PathBuf,
    /// Bound on waiting for the cluster to elect a leader and accept writes.
    pub timeout: Duration,
    /// Keep `dir` after stop (for a post-mortem of the servers' logs).
    pub keep_dir: bool,
}

pub trait System {
    /// What the table calls it, e.g. "NATS JetStream".
    fn name(&self) -> String;
    /// When an acknowledged message is durable, in the table's words.
    fn durability(&self) -> String;
    /// Make sure the server binary is present (installing it as root), and
    /// say which version will run; `Unavailable` gives the row without numbers.
    fn install(&mut self) -> Result<String, Unavailable>;
    /// Start a 3-node cluster and wait (bounded) until it accepts writes.
    fn start(&mut self, settings: &StartSettings) -> impl Future<Output = Result<(), BenchError>>;
    /// The version the running servers report (may add a build commit to `install`'s).
    fn version(&self) -> String;
    /// Server processes whose CPU the table charges to this system.
    fn server_pids(&self) -> Vec<u32>;
    /// Append one message and resolve once the system acknowledged it. The
    /// future owns what it needs, so many can be in flight on spawned tasks.
    fn append(&self, payload: Vec<u8>) -> impl Future<Output = Result<(), BenchError>> + Send + 'static;
    /// Append one message, the only one in flight (the one-at-a-time
    /// phase), by the system's shortest client path. By default `append`;
    /// a system whose `append` hands each message to another thread (a
    /// blocking client library behind a queue) overrides it, so the phase
    /// measures the system and not the hand-offs.
    fn append_alone(&mut self, payload: Vec<u8>) -> impl Future<Output = Result<(), BenchError>> {
        self.append(payload)
    }
    /// Whether `read` works; `Err(why)` skips the read phase (its row says why).
    fn supports_reads(&self) -> Result<(), String> {
        Ok(())
    }
    /// Read up to `count` messages following the ones already read, in log order.
    fn read(&mut self, count: usize) -> impl Future<Output = Result<ReadBatch, BenchError>>;
    /// Stop every server and remove its data. Also runs on drop, for errors and panics.
    fn stop(&mut self);
}
