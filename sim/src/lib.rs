//! shoal-sim: the simulated `Io` and the machinery that runs whole clusters
//! from one seed in one thread.
//!
//! Owns the virtual clock, the seeded executor, the simulated disk (durable and
//! pending bytes per file), network and shard-channel fault models, and the
//! invariant checkers.
//!
//! Must not touch the wall clock, OS entropy, threads or the real file system:
//! the same seed must take the same path on any machine.
