//! The state machine of one VSR group: a partition (messages in a durable
//! partition log) or the metadata group (streams and topics).
//!
//! Owns only the dispatch between the two; the machines themselves live in
//! `partition_sm` and `state_machine`. Generic over `Io`, so the server and
//! the simulator apply through the same code.

use std::ops::Range;
use std::path::Path;

use shoal_vsr::io::Io;
use shoal_vsr::state_machine::SnapshotError;
use shoal_vsr::{Operation, StateMachine};

use crate::namespace::Namespace;
use crate::partition_log::{BeginSync, PartitionLogConfig, PartitionLogError, Salvage, SyncEnded};
use crate::partition_sm::{PartitionSmError, PartitionStateMachine};
use crate::state_machine::MetadataState;

/// The metadata group's namespace (streams, topics, partition counts).
pub const METADATA_NAMESPACE: u64 = 1 << 63;

pub enum GroupMachine<I: Io> {
    // Boxed: a group holds one for its life, and the partition machine is
    // ten times the size of the metadata one.
    Partition(Box<PartitionStateMachine<I>>),
    Metadata(MetadataState),
}

// By hand: a derived impl would demand `I: Debug` of every backend.
impl<I: Io> std::fmt::Debug for GroupMachine<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupMachine::Partition(partition) => f.debug_tuple("Partition").field(partition).finish(),
            GroupMachine::Metadata(metadata) => f.debug_tuple("Metadata").field(metadata).finish(),
        }
    }
}

/// Where a partition group keeps its segmented log inside the data dir.
pub fn partition_dir(data_dir: &Path, namespace: u64) -> std::path::PathBuf {
    data_dir.join(format!("partition-{namespace:016x}"))
}

impl<I: Io> GroupMachine<I> {
    /// The machine of the group `namespace`, opened from what the disk holds.
    pub async fn open(
        io: &I,
        data_dir: &Path,
        namespace: u64,
        config: PartitionLogConfig,
    ) -> Result<GroupMachine<I>, PartitionLogError> {
        if namespace == METADATA_NAMESPACE {
            return Ok(GroupMachine::Metadata(MetadataState::new()));
        }
        let dir = partition_dir(data_dir, namespace);
        let machine = PartitionStateMachine::open_with_config(io.clone(), &dir, Namespace(namespace), config).await?;
        Ok(GroupMachine::Partition(Box::new(machine)))
    }

    /// Like `open`, for a replica of a cluster of `replica_count`: with
    /// peers, a damaged partition log is cut to its intact prefix instead of
    /// refused, and what was cut comes back from a peer, proven by the
    /// checksum chain (`PartitionLog::open_salvaging`). A single replica has
    /// nobody to ask, so it refuses as `open` does. Returns what a salvage
    /// cut, if one ran (logged here; the simulator checks it was injected).
    pub async fn open_in_cluster(
        io: &I,
        data_dir: &Path,
        namespace: u64,
        replica_count: u8,
        config: PartitionLogConfig,
    ) -> Result<(GroupMachine<I>, Option<Salvage>), PartitionLogError> {
        if namespace == METADATA_NAMESPACE || replica_count < 2 {
            return Ok((GroupMachine::open(io, data_dir, namespace, config).await?, None));
        }
        let dir = partition_dir(data_dir, namespace);
        let (machine, salvage) =
            PartitionStateMachine::open_salvaging(io.clone(), &dir, Namespace(namespace), config).await?;
        if let Some(salvage) = &salvage {
            shoal_vsr::marks::hit(shoal_vsr::marks::PARTITION_SALVAGED);
            tracing::warn!(
                namespace = format_args!("{namespace:#x}"),
                first_lost_offset = salvage.first_lost_offset,
                damage = %salvage.damage,
                "partition log damaged: kept the intact prefix, the rest is fetched from peers"
            );
        }
        Ok((GroupMachine::Partition(Box::new(machine)), salvage))
    }

    /// Applied messages not yet durable in the partition log.
    pub fn pending_count(&self) -> usize {
        match self {
            GroupMachine::Partition(partition) => partition.pending_count(),
            GroupMachine::Metadata(_) => 0,
        }
    }

    /// Applied partition messages not yet written to the log, by offset.
    pub fn pending(&self) -> Vec<(u64, Vec<u8>)> {
        match self {
            GroupMachine::Partition(partition) => partition.pending().map(|(o, m)| (o, m.to_vec())).collect(),
            GroupMachine::Metadata(_) => Vec::new(),
        }
    }

    /// Partition offsets a state transfer counted but this disk lacks.
    pub fn missing(&self) -> Option<Range<u64>> {
        match self {
            GroupMachine::Partition(partition) => partition.missing(),
            GroupMachine::Metadata(_) => None,
        }
    }

    /// The partition offsets to ask a peer for (`PartitionStateMachine::to_fetch`).
    pub fn to_fetch(&self) -> Option<Range<u64>> {
        match self {
            GroupMachine::Partition(partition) => partition.to_fetch(),
            GroupMachine::Metadata(_) => None,
        }
    }

    /// Append the applied messages to the partition log and sync it (before
    /// a checkpoint becomes durable).
    pub async fn persist(&mut self) -> Result<(), PartitionSmError> {
        match self {
            GroupMachine::Partition(partition) => partition.persist().await,
            GroupMachine::Metadata(_) => Ok(()),
        }
    }

    /// `persist` with the partition log's fsyncs handed back to run beside
    /// the caller (`PartitionStateMachine::begin_persist`).
    pub async fn begin_persist(&mut self) -> Result<BeginSync<I::File>, PartitionSmError> {
        match self {
            GroupMachine::Partition(partition) => partition.begin_persist().await,
            GroupMachine::Metadata(_) => Ok(BeginSync::Nothing),
        }
    }

    /// The end of the sync `begin_persist` handed back.
    pub fn end_persist(&mut self, ended: SyncEnded) -> Result<(), PartitionSmError> {
        match self {
            GroupMachine::Partition(partition) => partition.end_persist(ended),
            GroupMachine::Metadata(_) => unreachable!("the metadata group has no partition log to sync"),
        }
    }

    /// Append the applied messages to the partition log, no sync (the
    /// commit path: the journal is the write-ahead log).
    pub async fn write_pending(&mut self) -> Result<(), PartitionSmError> {
        match self {
            GroupMachine::Partition(partition) => partition.write_pending().await,
            GroupMachine::Metadata(_) => Ok(()),
        }
    }

    /// Durable partition messages from `offset` (none for metadata). A read
    /// error serves nothing: the asker retries another peer.
    pub async fn read(&self, offset: u64, count: usize) -> Vec<(u64, Vec<u8>)> {
        match self {
            GroupMachine::Partition(partition) => partition.read(offset, count).await.unwrap_or_default(),
            GroupMachine::Metadata(_) => Vec::new(),
        }
    }

    pub async fn fill(&mut self, first_offset: u64, messages: &[Vec<u8>]) -> Result<usize, PartitionSmError> {
        match self {
            GroupMachine::Partition(partition) => partition.fill(first_offset, messages).await,
            GroupMachine::Metadata(_) => Ok(0),
        }
    }

    /// `PartitionStateMachine::fill_more`: the next part of a checked fill.
    pub async fn fill_more(&mut self) -> Result<bool, PartitionSmError> {
        match self {
            GroupMachine::Partition(partition) => partition.fill_more().await,
            GroupMachine::Metadata(_) => Ok(false),
        }
    }

    /// A checked state-transfer fill is being appended.
    pub fn fill_appending(&self) -> bool {
        match self {
            GroupMachine::Partition(partition) => partition.fill_appending(),
            GroupMachine::Metadata(_) => false,
        }
    }

    pub fn metadata(&self) -> Option<&MetadataState> {
        match self {
            GroupMachine::Partition(_) => None,
            GroupMachine::Metadata(metadata) => Some(metadata),
        }
    }
}

impl<I: Io> StateMachine for GroupMachine<I> {
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

    fn checkpoint_ready(&self) -> bool {
        match self {
            GroupMachine::Partition(partition) => partition.checkpoint_ready(),
            GroupMachine::Metadata(metadata) => StateMachine::checkpoint_ready(metadata),
        }
    }
}
