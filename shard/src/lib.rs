//! shoal-shard: one replica process is N shards, one per pinned thread.
//!
//! Owns `ShardFrame`, the routers (`route_metadata`, `route_partition`,
//! `route_consensus_control`), the replica owner table, the shard pump, the
//! metadata handoff, shutdown, `frame_drops_total`, and the partition state
//! machine with its durable partition log.
//!
//! Must not touch compio, sockets or threads: it runs against `shoal_vsr::Io`,
//! so the simulator drives the very same code.
