//! shoal-sim: the simulated `Io` and the machinery that runs whole clusters
//! from one seed in one thread.
//!
//! Owns the virtual clock, the seeded executor, the simulated disk (durable and
//! pending bytes per file), network and shard-channel fault models, and the
//! invariant checkers.
//!
//! Must not touch the wall clock, OS entropy, threads or the real file system:
//! the same seed must take the same path on any machine.

pub mod availability;
pub mod checker;
pub mod choices;
pub mod cluster;
pub mod disk;
pub mod executor;
pub mod io;
pub mod machine;
pub mod network;
pub mod node;
pub mod promises;
pub mod quiet;
pub mod run;
pub mod shards;
pub mod view_logs;

pub use disk::{DiskFaults, SimDisk};
pub use io::{SimIo, block_on_ready};

pub use cluster::{CHECKPOINT_INTERVAL_OPS, CHECKPOINT_INTERVAL_OPS_LONGEST, PARTITION_SEGMENT_SIZE_MAX_BYTES};
pub use run::{
    AvailabilityWindow, Checker, FaultMix, HistoryEvent, HistoryKind, RunConfig, RunOutcome, ScriptedFault, Target,
    TimelineEvent, TimelineKind, TraceEvent, Verdict,
};
pub use shoal_vsr::replica::PIPELINE_PREPARES_MAX;
pub use shoal_vsr::sessions::CLIENT_SESSIONS_MAX;
pub use shoal_vsr::state_transfer::CHECKPOINT_CHUNKS_PER_ANSWER_MAX;

/// Run one seed to its verdict: the VSR cluster, and with more than one shard
/// per replica also the shard world (routing, handoff, lifecycle) from the
/// same seed. The first violation wins; the trace hash covers both.
pub fn run(config: &RunConfig) -> RunOutcome {
    let mut outcome = cluster::run(config);
    if config.shards_per_replica > 1 {
        let shards = shards::run_shard_world(&shards::ShardWorldConfig::from_run_config(config));
        outcome.trace_hash ^= shards.trace_hash.rotate_left(17);
        if outcome.verdict == Verdict::Pass && !shards.passed() {
            outcome.verdict = shards.verdict;
        }
    }
    outcome
}
pub use shards::{ShardFaults, ShardWorldConfig, ShardWorldCounters, ShardWorldOutcome, run_shard_world};
/// Every coverage mark the code under test places, hit or not.
pub use shoal_vsr::marks::MARKS as MARKS_KNOWN;
