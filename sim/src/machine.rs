//! The state machine of one simulated VSR group: the node's own
//! `GroupMachine` (a partition over its durable log, or the metadata group)
//! on the simulated disk.

/// A group's state machine as the simulator runs it.
pub type GroupMachine = shoal_shard::node::GroupMachine<crate::io::SimIo>;
