//! shoal-sim: the simulated `Io` and the machinery that runs whole clusters
//! from one seed in one thread.
//!
//! Owns the virtual clock, the seeded executor, the simulated disk (durable and
//! pending bytes per file), network and shard-channel fault models, and the
//! invariant checkers.
//!
//! Must not touch the wall clock, OS entropy, threads or the real file system:
//! the same seed must take the same path on any machine.

pub mod checker;
pub mod cluster;
pub mod disk;
pub mod executor;
pub mod io;
pub mod network;
pub mod node;
pub mod run;

pub use disk::{DiskFaults, SimDisk};
pub use io::{SimIo, block_on_ready};

pub use run::{Checker, FaultMix, RunConfig, ScriptedFault, Target, RunOutcome, TimelineEvent, TimelineKind, TraceEvent, Verdict};

pub use cluster::run;
