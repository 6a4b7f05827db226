//! The state machine of one simulated VSR group: a partition (messages in a
//! durable partition log on the simulated disk) or the metadata group
//! (streams and topics).
//!
//! Owns only the dispatch; the machines themselves live in `shoal-shard`.

use std::ops::Range;

use shoal_shard::partition_sm::{PartitionSmError, PartitionStateMachine};
use shoal_shard::state_machine::MetadataState;
use shoal_vsr::state_machine::SnapshotError;
use shoal_vsr::{Operation, StateMachine};

use crate::io::{SimIo, block_on_ready};

#[derive(Debug)]
pub enum GroupMachine {
    Partition(PartitionStateMachine<SimIo>),
    Metadata(MetadataState),
}

impl GroupMachine {
    /// Applied messages not yet durable in the partition log.
    pub fn pending_count(&self) -> usize {
        match self {
            GroupMachine::Partition(partition) => partition.pending_count(),
            GroupMachine::Metadata(_) => 0,
        }
    }

    /// Partition offsets a state transfer counted but this disk lacks.
    pub fn missing(&self) -> Option<Range<u64>> {
        match self {
            GroupMachine::Partition(partition) => partition.missing(),
            GroupMachine::Metadata(_) => None,
        }
    }

    pub fn persist(&mut self) -> Result<(), PartitionSmError> {
        match self {
            GroupMachine::Partition(partition) => block_on_ready(partition.persist()),
            GroupMachine::Metadata(_) => Ok(()),
        }
    }

    /// Durable partition messages from `offset` (none for metadata).
    pub fn read(&self, offset: u64, count: usize) -> Vec<(u64, Vec<u8>)> {
        match self {
            GroupMachine::Partition(partition) => block_on_ready(partition.read(offset, count)).unwrap_or_default(),
            GroupMachine::Metadata(_) => Vec::new(),
        }
    }

    pub fn fill(&mut self, first_offset: u64, messages: &[Vec<u8>]) -> Result<usize, PartitionSmError> {
        match self {
            GroupMachine::Partition(partition) => block_on_ready(partition.fill(first_offset, messages)),
            GroupMachine::Metadata(_) => Ok(0),
        }
    }

    pub fn metadata(&self) -> Option<&MetadataState> {
        match self {
            GroupMachine::Partition(_) => None,
            GroupMachine::Metadata(metadata) => Some(metadata),
        }
    }
}

impl StateMachine for GroupMachine {
    fn apply(&mut self, op: u64, operation: Operation, body: &[u8], timestamp: u64) -> Vec<u8> {
        match self {
            GroupMachine::Partition(partition) => partition.apply(op, operation, body, timestamp),
            GroupMachine::Metadata(metadata) => StateMachine::apply(metadata, op, operation, body, timestamp),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        match self {
            GroupMachine::Partition(partition) => partition.snapshot(),
            GroupMachine::Metadata(metadata) => StateMachine::snapshot(metadata),
        }
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        match self {
            GroupMachine::Partition(partition) => partition.restore(snapshot),
            GroupMachine::Metadata(metadata) => StateMachine::restore(metadata, snapshot),
        }
    }
}
