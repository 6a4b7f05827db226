//! Metadata handoff at start-up: shard 0 replays the metadata catalogue and
//! hands the encoded snapshot bundle to every other shard.
//!
//! Owns the replay of the metadata VSR group's durable state
//! (`replay_metadata_group`: superblock, checkpoint file and prepare journal
//! of namespace `METADATA`, opened for writing by shard 0 only; any other
//! shard may replay read-only, which cannot mutate a byte), the single-shot
//! channel the bundle travels on, the reading and durable writing of a
//! standalone metadata snapshot file, and the two waits: `broadcast_snapshot`
//! (shard 0 waits until every peer took the bundle) and `await_snapshot` (a
//! peer waits for it). Both poll the shutdown flag with
//! `Io::sleep(HANDOFF_POLL_INTERVAL_NS)` between polls and give up at a named
//! deadline, so a shard 0 that dies first strands no peer: the peer returns
//! `HandoffError::ShutDown` (or `ShardZeroGone`) instead of waiting forever.
//! Knows nothing of routing, threads or compio.
//!
//! One apply path: a replay is the replica's own recovery. It reads the
//! durable state as a restart reads it (`Recovered`), lets `Replica::open`
//! with the metadata state machine apply what it may, and reads the state
//! back from the replica, so a replay and a restart cannot disagree. The
//! writable replay first does what a restart does before the replica runs
//! (settle the superblock and checkpoint files, finish an interrupted
//! checkpoint drain); it runs none of the replica's actions, so it never
//! writes a prepare or a superblock. Repairing a gap is the running replica's
//! job (from peers), so a gap in the committed prefix is a typed error here.
//!
//! Invariant: only `ShardId::METADATA` opens the metadata WAL (or the snapshot
//! file) for writing.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::collections::BTreeMap;

use shoal_vsr::checkpoint::{CheckpointError, read_checkpoint};
use shoal_vsr::journal::{CHECKPOINT_RESERVED_SLOTS, JournalConfig, JournalError, PrepareJournal, journal_path};

use crate::node::storage::settle_group_files;
use shoal_vsr::replica::{
    Checkpoint, Committed, DurableState, PIPELINE_PREPARES_MAX, Recovered, VIEW_HEADERS_MAX, root_header,
};
use shoal_vsr::sessions::{CLIENT_SESSIONS_LIMIT, CLIENT_SESSIONS_MAX, ClientSessions};
use shoal_vsr::state_machine::SnapshotError;
use shoal_vsr::superblock::{Superblock, SuperblockError, SuperblockState};
use shoal_vsr::{Header, Io, IoFile, OpenMode, Operation, Replica, ReplicaConfig};

use crate::lifecycle::ShutdownFlag;
use crate::namespace::Namespace;
use crate::owner_table::ShardId;
use crate::state_machine::{CodecError, MetadataReply, MetadataState, decode_reply};

/// How long a handoff wait sleeps between looks at its channel and the flag.
pub const HANDOFF_POLL_INTERVAL_NS: u64 = 1_000_000;
/// How long either side of the handoff waits before giving up.
pub const HANDOFF_TIMEOUT_NS: u64 = 10_000_000_000;
/// The largest metadata snapshot file shard 0 reads into memory.
pub const METADATA_SNAPSHOT_SIZE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Slots of the metadata group's journal: ops past the last checkpoint.
pub const METADATA_JOURNAL_SLOT_COUNT: u64 = 1024;
/// The largest metadata prepare (header + body): a request carries at most
/// two ids, a name of `NAME_SIZE_MAX_BYTES` and a partition count.
pub const METADATA_MESSAGE_SIZE_MAX_BYTES: u32 = 4096;

/// The checkpoint interval of the metadata replica a replay recovers. A
/// replay runs none of the replica's actions, so it never checkpoints; the
/// interval only has to fit the journal, as the replica asserts at start.
pub const METADATA_CHECKPOINT_INTERVAL_OPS: u64 = METADATA_JOURNAL_SLOT_COUNT / 2;
const _: () = assert!(METADATA_CHECKPOINT_INTERVAL_OPS + (VIEW_HEADERS_MAX as u64) < METADATA_JOURNAL_SLOT_COUNT);
const _: () = assert!(CHECKPOINT_RESERVED_SLOTS < METADATA_JOURNAL_SLOT_COUNT);

/// The geometry of the metadata group's journal. Fixed: a journal written
/// with another geometry is refused at open (`ConfigMismatch`).
pub fn metadata_journal_config(cluster: u128) -> JournalConfig {
    JournalConfig {
        slot_count: METADATA_JOURNAL_SLOT_COUNT,
        message_size_max_bytes: METADATA_MESSAGE_SIZE_MAX_BYTES,
        cluster,
        namespace: Namespace::METADATA.raw(),
    }
}

/// Why the handoff did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("shutdown was requested during the metadata handoff; the shard stops without serving")]
    ShutDown,
    #[error("metadata handoff timed out after {waited_ns} ns; shard 0 is wedged or dead, restart the process")]
    TimedOut { waited_ns: u64 },
    #[error("shard 0 ended without sending the metadata snapshot; it failed during start-up, see its log")]
    ShardZeroGone,
    #[error("shard {shard:?} ended before taking the metadata snapshot; it failed during start-up")]
    PeerGone { shard: ShardId },
    #[error(
        "shard {shard:?} tried to open the metadata snapshot for writing; only shard 0 owns it (a bug in the caller)"
    )]
    NotMetadataShard { shard: ShardId },
    #[error("metadata snapshot {path:?}: {source}; check the data directory's permissions and disk")]
    Storage {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("metadata snapshot is {size_bytes} bytes, above {max} bytes; the file is corrupt or not a snapshot")]
    SnapshotTooLarge { size_bytes: u64, max: u64 },
    #[error("metadata snapshot is unreadable: {0}")]
    Codec(#[from] CodecError),
    #[error(
        "metadata superblock in {dir:?}: {source}; if it is corrupt, this replica must repair its metadata group from peers"
    )]
    MetadataSuperblock {
        dir: PathBuf,
        #[source]
        source: SuperblockError,
    },
    #[error(
        "metadata journal in {dir:?}: {source}; if it is corrupt, this replica must repair its metadata group from peers"
    )]
    MetadataJournal {
        dir: PathBuf,
        #[source]
        source: JournalError,
    },
    #[error("metadata group: {0}")]
    MetadataSettle(#[from] crate::node::storage::SettleError),
    #[error("metadata checkpoint in {dir:?}: {source}")]
    MetadataCheckpoint {
        dir: PathBuf,
        #[source]
        source: CheckpointError,
    },
    #[error("metadata group in {dir:?} is damaged and formatting it to rejoin failed: {reason}; check the disk")]
    MetadataFormat { dir: PathBuf, reason: String },
    #[error(
        "metadata checkpoint snapshot is unreadable ({0}): this replica must state-transfer its metadata group from peers"
    )]
    MetadataCheckpointSnapshot(#[source] SnapshotError),
    #[error(
        "metadata group in {dir:?} is incomplete: {reason}; this replica must repair its metadata group from peers (or, if it never held data, remove the data directory)"
    )]
    MetadataIncomplete { dir: PathBuf, reason: &'static str },
    #[error(
        "metadata group settings are invalid (replica {replica} of replica_count {replica_count}, client_sessions_max {client_sessions_max}): the replica index must be below the replica count and client_sessions_max in 1..={limit}; fix the cluster settings"
    )]
    MetadataGroupConfig { replica: u8, replica_count: u8, client_sessions_max: usize, limit: usize },
    #[error(
        "the metadata journal's slot count {slot_count} leaves no checkpoint interval ({reserved} slots are a view \
         change's headers and a pipeline): give it more slots"
    )]
    MetadataJournalSlotCount { slot_count: u64, reserved: u64 },
    #[error(
        "committed metadata op {op} (commit {commit}) {reason}: this replica must repair its metadata group from peers before it serves"
    )]
    MetadataRepairNeeded { op: u64, commit: u64, reason: &'static str },
}

fn storage(path: &Path) -> impl FnOnce(io::Error) -> HandoffError + '_ {
    move |source| HandoffError::Storage { path: path.to_path_buf(), source }
}

#[derive(Debug)]
enum Slot<T> {
    Empty,
    Sent(T),
    Taken,
    SenderDropped,
    ReceiverDropped,
}

/// The sending half of a single-shot channel. `Send`, so the real runtime can
/// hand it to another thread.
#[derive(Debug)]
pub struct OneShotSender<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

/// The receiving half of a single-shot channel.
#[derive(Debug)]
pub struct OneShotReceiver<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

/// A channel that carries one value, once. Neither side ever blocks: both
/// look at the slot and the caller sleeps between looks.
pub fn oneshot<T>() -> (OneShotSender<T>, OneShotReceiver<T>) {
    let slot = Arc::new(Mutex::new(Slot::Empty));
    (OneShotSender { slot: slot.clone() }, OneShotReceiver { slot })
}

fn lock<T>(slot: &Mutex<Slot<T>>) -> std::sync::MutexGuard<'_, Slot<T>> {
    // A poisoned slot only means the other side panicked mid-update, which
    // cannot happen between these plain assignments; take it anyway.
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<T> OneShotSender<T> {
    /// Put the value in the slot; hands it back if the receiver is gone.
    pub fn send(&self, value: T) -> Result<(), T> {
        let mut slot = lock(&self.slot);
        match *slot {
            Slot::Empty => {
                *slot = Slot::Sent(value);
                Ok(())
            }
            Slot::ReceiverDropped => Err(value),
            Slot::Sent(_) | Slot::Taken | Slot::SenderDropped => {
                panic!("a single-shot channel carries one value")
            }
        }
    }

    /// True once the receiver took the value.
    pub fn is_taken(&self) -> bool {
        matches!(*lock(&self.slot), Slot::Taken)
    }

    pub fn is_receiver_dropped(&self) -> bool {
        matches!(*lock(&self.slot), Slot::ReceiverDropped)
    }
}

impl<T> Drop for OneShotSender<T> {
    fn drop(&mut self) {
        let mut slot = lock(&self.slot);
        if matches!(*slot, Slot::Empty) {
            *slot = Slot::SenderDropped;
        }
    }
}

/// What a look at the receiving slot found.
#[derive(Debug, PartialEq, Eq)]
pub enum TryRecv<T> {
    Value(T),
    Empty,
    SenderDropped,
}

impl<T> OneShotReceiver<T> {
    pub fn try_recv(&self) -> TryRecv<T> {
        let mut slot = lock(&self.slot);
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Sent(value) => TryRecv::Value(value),
            Slot::Empty => {
                *slot = Slot::Empty;
                TryRecv::Empty
            }
            Slot::SenderDropped => {
                *slot = Slot::SenderDropped;
                TryRecv::SenderDropped
            }
            Slot::Taken | Slot::ReceiverDropped => panic!("a single-shot channel is read once"),
        }
    }
}

impl<T> Drop for OneShotReceiver<T> {
    fn drop(&mut self) {
        let mut slot = lock(&self.slot);
        if matches!(*slot, Slot::Empty | Slot::Sent(_)) {
            *slot = Slot::ReceiverDropped;
        }
    }
}

/// Who this process is in the metadata group: everything the replica's own
/// recovery depends on besides the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataGroup {
    pub cluster: u128,
    pub replica: u8,
    /// With 1, the replica is its own quorum: at restart it commits every
    /// durable prepare that chains, not only what the superblock says.
    pub replica_count: u8,
    /// The session table's size, the same on every replica of the cluster:
    /// a smaller table evicts sessions at a register, and then filters the
    /// evicted clients' requests, so it changes what is applied.
    pub client_sessions_max: usize,
    /// The metadata journal's geometry: the server's is fixed
    /// (`METADATA_JOURNAL_SLOT_COUNT`, `METADATA_MESSAGE_SIZE_MAX_BYTES`);
    /// the simulator replays its own small journal with the same code.
    pub journal_slot_count: u64,
    pub message_size_max_bytes: u32,
}

/// The cluster size a caller that does not state it is replayed with: any
/// size above 1 recovers the same state (only a single replica commits from
/// its own journal at restart), and this one admits every replica index.
const REPLICA_COUNT_UNSTATED: u8 = u8::MAX;

impl MetadataGroup {
    pub fn new(cluster: u128, replica: u8, replica_count: u8) -> MetadataGroup {
        MetadataGroup {
            cluster,
            replica,
            replica_count,
            client_sessions_max: CLIENT_SESSIONS_MAX,
            journal_slot_count: METADATA_JOURNAL_SLOT_COUNT,
            message_size_max_bytes: METADATA_MESSAGE_SIZE_MAX_BYTES,
        }
    }

    /// The journal the group's files hold (`metadata_journal_config` for
    /// the server's geometry).
    pub fn journal_config(&self) -> JournalConfig {
        JournalConfig {
            slot_count: self.journal_slot_count,
            message_size_max_bytes: self.message_size_max_bytes,
            cluster: self.cluster,
            namespace: Namespace::METADATA.raw(),
        }
    }

    fn validate(&self) -> Result<(), HandoffError> {
        let valid =
            self.replica < self.replica_count && (1..=CLIENT_SESSIONS_LIMIT).contains(&self.client_sessions_max);
        if self.journal_slot_count <= CHECKPOINT_RESERVED_SLOTS {
            return Err(HandoffError::MetadataJournalSlotCount {
                slot_count: self.journal_slot_count,
                reserved: CHECKPOINT_RESERVED_SLOTS,
            });
        }
        if valid {
            return Ok(());
        }
        Err(HandoffError::MetadataGroupConfig {
            replica: self.replica,
            replica_count: self.replica_count,
            client_sessions_max: self.client_sessions_max,
            limit: CLIENT_SESSIONS_LIMIT,
        })
    }

    /// The configuration of the replica a replay recovers. A replay runs no
    /// action, so the checkpoint interval and the seed (timeout jitter) do not
    /// reach the recovered state; a running metadata replica picks its own.
    pub fn replica_config(&self) -> ReplicaConfig {
        ReplicaConfig {
            cluster: self.cluster,
            namespace: Namespace::METADATA.raw(),
            replica: self.replica,
            replica_count: self.replica_count,
            journal_slot_count: self.journal_slot_count,
            checkpoint_interval_ops: self
                .journal_config()
                .checkpoint_interval_ops_max()
                .min(METADATA_CHECKPOINT_INTERVAL_OPS),
            seed: 0,
            client_sessions_max: self.client_sessions_max,
            message_size_max_bytes: self.message_size_max_bytes,
            pipeline_prepares_max: PIPELINE_PREPARES_MAX,
            checkpoint_chunks_per_answer_max: shoal_vsr::state_transfer::CHECKPOINT_CHUNKS_PER_ANSWER_MAX,
        }
    }
}

/// What replaying the metadata group found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataReplay {
    pub state: MetadataState,
    /// The client sessions as the replica recovered them (the retry filter
    /// of the metadata group).
    pub sessions: ClientSessions,
    /// The op of the checkpoint the state started from (0: none).
    pub checkpoint_op: u64,
    /// The last op applied: the superblock's commit or the checkpoint's op,
    /// whichever is higher (with one replica: every durable op that chains).
    pub commit: u64,
    /// Ops replayed from the journal: `commit - checkpoint_op`.
    pub ops_replayed: u64,
    /// Of those, metadata requests that changed the state.
    pub requests_applied: u64,
    /// Metadata requests the state machine rejected (or could not decode):
    /// committed all the same, with an error reply, and the state unchanged.
    pub requests_rejected: u64,
    /// Requests the client sessions filtered (a duplicate, or no session).
    pub requests_filtered: u64,
    /// Ops the recovered log holds past `commit`: not applied.
    pub ops_uncommitted: u64,
    /// Torn slots after the journal head (cleared when writable).
    pub torn_tail_ops: u64,
    /// The journal lost prepares past the checkpoint (or a settled drain had
    /// to leave corrupt ones out): the replica restarts `Recovering` and
    /// repairs them from peers. The committed prefix above is complete.
    pub journal_faulty: bool,
    /// This replay finished a checkpoint drain that a crash interrupted, as a
    /// restart does (writable replay only).
    pub drain_settled: bool,
    /// True when this call formatted an empty metadata group (first start).
    pub created: bool,
    /// The committed op the state stops below because this replica lost it
    /// (missing, corrupt, or a stale prepare the view headers replaced), in
    /// a stated cluster of `REJOIN_REPLICAS_MIN` or more: the catalogue is
    /// the committed prefix before it, and the metadata replica repairs the
    /// rest from peers; the catalogue catches up as it commits. `None`: the
    /// state reaches every op the disk says is committed.
    pub repair_from: Option<u64>,
}

/// Shard 0 at start-up, for a caller that does not state the cluster size:
/// `replay_metadata_group` as a member of a cluster of several replicas.
pub async fn replay_metadata<I: Io>(
    io: &I,
    dir: &Path,
    cluster: u128,
    replica: u8,
    shard: ShardId,
) -> Result<MetadataReplay, HandoffError> {
    let group = MetadataGroup::new(cluster, replica, REPLICA_COUNT_UNSTATED);
    replay_metadata_group(io, dir, group, shard).await
}

/// Shard 0 at start-up: open the metadata group in `dir` for writing (format
/// an empty one on first start), settle it as a restart does, and recover
/// the metadata replica from it. Any other shard gets `NotMetadataShard`; it
/// receives the catalogue through the handoff (or replays read-only).
pub async fn replay_metadata_group<I: Io>(
    io: &I,
    dir: &Path,
    group: MetadataGroup,
    shard: ShardId,
) -> Result<MetadataReplay, HandoffError> {
    if shard != ShardId::METADATA {
        return Err(HandoffError::NotMetadataShard { shard });
    }
    match replay(io, dir, group, OpenMode::ReadWrite).await {
        // As every group's start does (`GroupStorage::open_or_rejoin`): a
        // metadata group that lost every copy of its superblock or
        // checkpoint, in a cluster that can give it back, is formatted
        // again and rejoins; this replica hands on the empty catalogue of a
        // rejoining group until its peers brought it up to date.
        Err(error) if error.is_damage() && rejoin_possible(group) => {
            tracing::warn!("{error}; the metadata group is formatted again and rejoins through its peers");
            let journal = group.journal_config();
            let config = crate::node::StorageConfig {
                cluster: group.cluster,
                namespace: Namespace::METADATA.raw(),
                replica: group.replica,
                slot_count: journal.slot_count,
                message_size_max_bytes: journal.message_size_max_bytes,
            };
            let opened = crate::node::GroupStorage::open_or_rejoin(io, dir, config, group.replica_count).await;
            let (_storage, recovered, _damage) = opened.map_err(|source| HandoffError::MetadataFormat {
                dir: dir.to_path_buf(),
                reason: source.to_string(),
            })?;
            assert!(recovered.durable.rejoining, "the damaged group was formatted to rejoin");
            replay(io, dir, group, OpenMode::ReadWrite).await
        }
        result => result,
    }
}

/// The cluster is stated and large enough to rebuild a group from peers.
fn rejoin_possible(group: MetadataGroup) -> bool {
    group.replica_count != REPLICA_COUNT_UNSTATED && group.replica_count >= crate::node::REJOIN_REPLICAS_MIN
}

impl HandoffError {
    /// Damage `GroupStorage::open_or_rejoin` formats again: every copy of
    /// the superblock or checkpoint, or the journal file, is lost.
    fn is_damage(&self) -> bool {
        matches!(
            self,
            HandoffError::MetadataSuperblock { source: SuperblockError::NoValidCopy, .. }
                | HandoffError::MetadataCheckpoint { source: CheckpointError::Corrupt { .. }, .. }
                | HandoffError::MetadataJournal {
                    source: JournalError::Missing { .. } | JournalError::FileHeaderCorrupt,
                    ..
                }
        )
    }
}

/// `replay_metadata_group_read_only` for a caller that does not state the
/// cluster size (see `replay_metadata`).
pub async fn replay_metadata_read_only<I: Io>(
    io: &I,
    dir: &Path,
    cluster: u128,
    replica: u8,
) -> Result<MetadataReplay, HandoffError> {
    let group = MetadataGroup::new(cluster, replica, REPLICA_COUNT_UNSTATED);
    replay_metadata_group_read_only(io, dir, group).await
}

/// Replay the metadata group without opening anything for writing: usable
/// from any shard. The journal and superblock are open `ReadOnly`, so a torn
/// tail stays on disk and no call can mutate them; nothing is settled, and an
/// interrupted drain stays interrupted (the replica ignores what its
/// checkpoint covers, so the state is the same). A missing group is an error
/// (only shard 0 formats).
pub async fn replay_metadata_group_read_only<I: Io>(
    io: &I,
    dir: &Path,
    group: MetadataGroup,
) -> Result<MetadataReplay, HandoffError> {
    replay(io, dir, group, OpenMode::ReadOnly).await
}

async fn replay<I: Io>(
    io: &I,
    dir: &Path,
    group: MetadataGroup,
    mode: OpenMode,
) -> Result<MetadataReplay, HandoffError> {
    group.validate()?;
    let (recovered, disk) = read_durable_state(io, dir, group, mode).await?;
    recover_replica(group, recovered, disk)
}

/// What reading the disk found besides what the replica needs.
struct DiskNotes {
    created: bool,
    torn_tail_ops: u64,
    drain_settled: bool,
}

/// Read the group's durable state as a restart reads it, settling it first
/// when writable (as a restart does before its replica runs).
async fn read_durable_state<I: Io>(
    io: &I,
    dir: &Path,
    group: MetadataGroup,
    mode: OpenMode,
) -> Result<(Recovered, DiskNotes), HandoffError> {
    if mode.writable() {
        // As a replica restart does: only this group's files.
        settle_group_files(io, dir, Namespace::METADATA.raw()).await?;
    }
    let (superblock, created) = open_superblock(io, dir, group, mode).await?;
    let checkpoint = read_metadata_checkpoint(io, dir, group.cluster).await?;
    let durable = DurableState::from(superblock.state().clone());
    // As every group's open does (`GroupStorage::open`): what the superblock
    // names bounds the journal's gap rule (journal doc, "An unknown slot
    // beyond a gap").
    let durable_log_op_max =
        durable.view_headers.iter().map(|header| header.op).chain([durable.commit]).max().unwrap_or(0);
    let journal =
        recover_journal(io, dir, group.journal_config(), mode, checkpoint.as_ref(), durable_log_op_max).await?;
    let checkpoint_op = checkpoint.as_ref().map_or(0, |checkpoint| checkpoint.anchor.op);
    if journal.snapshot_op > checkpoint_op {
        // The journal forgot ops that no checkpoint on disk covers.
        return Err(HandoffError::MetadataRepairNeeded {
            op: checkpoint_op + 1,
            commit: durable.commit.max(checkpoint_op),
            reason: "was drained from the journal but is not in the checkpoint",
        });
    }
    let notes = DiskNotes { created, torn_tail_ops: journal.torn_tail_ops, drain_settled: journal.drain_settled };
    let recovered = Recovered {
        durable,
        checkpoint,
        entries: journal.entries,
        faulty_ops: journal.faulty_ops,
        faulty_headers: journal.faulty_headers,
    };
    Ok((recovered, notes))
}

/// Let the replica's own recovery apply the committed prefix (the code a
/// restart runs, so a replay and a restart cannot disagree) and read the
/// metadata state back from it.
fn recover_replica(
    group: MetadataGroup,
    recovered: Recovered,
    disk: DiskNotes,
) -> Result<MetadataReplay, HandoffError> {
    let diagnosis = Diagnosis::of(&recovered);
    let checkpoint_op = recovered.checkpoint.as_ref().map_or(0, |checkpoint| checkpoint.anchor.op);
    let journal_faulty = recovered.journal_faulty();
    check_committed_chain(&recovered, root_header(group.cluster, Namespace::METADATA.raw()).checksum)?;
    let mut replica = Replica::open(group.replica_config(), MetadataState::new(), recovered)
        .map_err(HandoffError::MetadataCheckpointSnapshot)?;
    // What the recovered replica asks for next (a view change, a checkpoint,
    // replies) is for a running replica; a replay runs none of it, so it
    // never writes a prepare or a superblock and sends nothing.
    let _actions = replica.take_actions();
    let commit = replica.commit_min();
    let repair_from = (commit < diagnosis.trusted_commit).then_some(commit + 1);
    if let Some(op) = repair_from {
        // A lone replica (or a caller that does not state the cluster) has
        // no peer to repair from: the operator must. With peers the group
        // starts as every group does with a lost op (`Recovering`, repair
        // from peers: issue 10, "never refuses to start while peers hold
        // good copies"), and the catalogue is the committed prefix below the
        // loss (swarm seed 295, session 17: a misdirected write took
        // committed op 7, and shard 0 refused every restart).
        if !rejoin_possible(group) {
            return Err(diagnosis.repair_needed(op));
        }
        tracing::warn!(
            "{}; the catalogue is handed on at commit {commit} and the metadata group repairs from its peers",
            diagnosis.repair_needed(op)
        );
    }
    // `checkpoint_op` is the checkpoint on disk the state started from; a
    // single replica may take a newer one in memory as it commits at start.
    assert!(replica.checkpoint_op() >= checkpoint_op);
    let committed = replica.take_committed();
    let mut replay = MetadataReplay {
        state: replica.state_machine().clone(),
        sessions: replica.sessions().clone(),
        checkpoint_op,
        commit,
        ops_replayed: commit - checkpoint_op,
        requests_applied: 0,
        requests_rejected: 0,
        requests_filtered: 0,
        ops_uncommitted: replica.op() - commit,
        torn_tail_ops: disk.torn_tail_ops,
        journal_faulty,
        drain_settled: disk.drain_settled,
        created: disk.created,
        repair_from,
    };
    // One record per request; a packed op reports several, the first at index 0.
    let ops: Vec<u64> = committed.iter().filter(|request| request.index == 0).map(|request| request.op).collect();
    assert_eq!(ops.len() as u64, replay.ops_replayed, "a restart applies each op past the checkpoint once");
    assert!(ops.iter().zip(checkpoint_op + 1..).all(|(&op, expected)| op == expected));
    count_outcomes(&mut replay, &committed);
    Ok(replay)
}

/// Open the superblock; shard 0 formats a group that was never formatted.
async fn open_superblock<I: Io>(
    io: &I,
    dir: &Path,
    group: MetadataGroup,
    mode: OpenMode,
) -> Result<(Superblock<I>, bool), HandoffError> {
    let namespace = Namespace::METADATA.raw();
    let superblock_error = |source| HandoffError::MetadataSuperblock { dir: dir.to_path_buf(), source };
    match Superblock::<I>::open(io, dir, group.cluster, namespace, group.replica, mode).await {
        Ok(superblock) => Ok((superblock, false)),
        Err(SuperblockError::Missing { .. }) if mode.writable() => {
            format_metadata_group(io, dir, group.journal_config(), group.replica).await?;
            let superblock = Superblock::open(io, dir, group.cluster, namespace, group.replica, mode)
                .await
                .map_err(superblock_error)?;
            Ok((superblock, true))
        }
        Err(source) => Err(superblock_error(source)),
    }
}

async fn read_metadata_checkpoint<I: Io>(
    io: &I,
    dir: &Path,
    cluster: u128,
) -> Result<Option<Checkpoint>, HandoffError> {
    let checkpoint_error = |source| HandoffError::MetadataCheckpoint { dir: dir.to_path_buf(), source };
    let checkpoint = read_checkpoint(io, dir, Namespace::METADATA.raw()).await.map_err(checkpoint_error)?;
    if let Some(checkpoint) = &checkpoint
        && (checkpoint.anchor.cluster != cluster || checkpoint.anchor.namespace != Namespace::METADATA.raw())
    {
        return Err(checkpoint_error(CheckpointError::Corrupt {
            reason: "its anchor belongs to another cluster or group",
        }));
    }
    Ok(checkpoint)
}

/// What the journal gives the replica's recovery.
struct RecoveredJournal {
    entries: Vec<(Header, Vec<u8>)>,
    /// Ops lost past the checkpoint, ascending (`Recovered::faulty_ops`).
    faulty_ops: Vec<u64>,
    /// The headers the journal still knows of faulty ops
    /// (`Recovered::faulty_headers`).
    faulty_headers: Vec<Header>,
    torn_tail_ops: u64,
    drain_settled: bool,
    /// The journal forgets every op up to here.
    snapshot_op: u64,
}

/// Open the journal and read it as a restart does. Writable: first finish a
/// checkpoint drain that failed (a crash, or a corrupt live prepare that
/// stopped the replica), leaving the corrupt live prepares out and reporting
/// them faulty, exactly as the node does at open; without it the running
/// replica would write into slots the journal still counts live.
async fn recover_journal<I: Io>(
    io: &I,
    dir: &Path,
    config: JournalConfig,
    mode: OpenMode,
    checkpoint: Option<&Checkpoint>,
    durable_log_op_max: u64,
) -> Result<RecoveredJournal, HandoffError> {
    let journal_error = |source| HandoffError::MetadataJournal { dir: dir.to_path_buf(), source };
    let (mut journal, recovery) =
        PrepareJournal::open_above(io, dir, config, mode, durable_log_op_max).await.map_err(journal_error)?;
    let checkpoint_op = checkpoint.map_or(0, |checkpoint| checkpoint.anchor.op);
    let snapshot_op_before = journal.snapshot_op();
    let mut left_out = Vec::new();
    if let Some(checkpoint) = checkpoint.filter(|_| mode.writable()) {
        left_out = journal
            .settle_to_checkpoint(checkpoint.anchor.op, checkpoint.anchor.checksum)
            .await
            .map_err(journal_error)?;
        assert!(journal.snapshot_op() >= checkpoint_op, "a settled journal starts at the checkpoint");
    }
    let scan = journal.scan().await.map_err(journal_error)?;
    // Corrupt slots the checkpoint covers are no loss: a settled journal no
    // longer holds them, and a read-only one must count them the same way.
    let mut faulty_ops = left_out;
    faulty_ops.extend(scan.corrupt_ops.iter().copied().filter(|&op| op > checkpoint_op));
    faulty_ops.sort_unstable();
    faulty_ops.dedup();
    // A header is kept only for an op still faulty after the settle.
    let faulty_headers =
        scan.corrupt_headers.into_iter().filter(|header| faulty_ops.binary_search(&header.op).is_ok()).collect();
    Ok(RecoveredJournal {
        entries: scan.entries,
        faulty_ops,
        faulty_headers,
        torn_tail_ops: recovery.torn_tail_truncated.len() as u64,
        drain_settled: journal.snapshot_op() > snapshot_op_before,
        snapshot_op: journal.snapshot_op(),
    })
}

/// The replica asserts that every op it applies chains onto the op below it;
/// a committed prefix that does not is a disk it cannot trust, and a restart
/// would stop on that assertion. Refuse it first, with an error the operator
/// can act on, looking at the log as the replica merges it: a view header
/// wins over the journal's entry at its op, and applying stops at the first
/// op without its body. Deliberately not a full copy of the merge: where the
/// replica would drop an entry for other reasons (a prepare of an older view
/// above the view headers) it stops applying there, below the commit, so the
/// replay fails all the same; this check can only name a later op, never
/// turn a replay that succeeds into an error.
fn check_committed_chain(recovered: &Recovered, root_checksum: u128) -> Result<(), HandoffError> {
    let (checkpoint_op, mut below) = recovered
        .checkpoint
        .as_ref()
        .map_or((0, root_checksum), |checkpoint| (checkpoint.anchor.op, checkpoint.anchor.checksum));
    let trusted_commit = recovered.durable.commit.max(checkpoint_op);
    let journal: BTreeMap<u64, &Header> = recovered.entries.iter().map(|(header, _)| (header.op, header)).collect();
    for op in checkpoint_op + 1..=trusted_commit {
        let view_header = recovered.durable.view_headers.iter().find(|header| header.op == op);
        let Some(header) = view_header.or_else(|| journal.get(&op).copied()) else { return Ok(()) };
        if journal.get(&op).is_none_or(|entry| entry.checksum != header.checksum) {
            return Ok(()); // no body: the replica stops here; reported as a repair
        }
        if header.parent != below {
            return Err(HandoffError::MetadataRepairNeeded {
                op,
                commit: trusted_commit,
                reason: "does not chain to the op before it",
            });
        }
        below = header.checksum;
    }
    Ok(())
}

/// Why the replica could not apply an op it must: kept from the recovered
/// state before the replica takes it, for the error message only.
struct Diagnosis {
    trusted_commit: u64,
    view_headers: BTreeMap<u64, u128>,
    journal: BTreeMap<u64, u128>,
}

impl Diagnosis {
    fn of(recovered: &Recovered) -> Diagnosis {
        let checkpoint_op = recovered.checkpoint.as_ref().map_or(0, |checkpoint| checkpoint.anchor.op);
        Diagnosis {
            trusted_commit: recovered.durable.commit.max(checkpoint_op),
            view_headers: recovered.durable.view_headers.iter().map(|h| (h.op, h.checksum)).collect(),
            journal: recovered.entries.iter().map(|(h, _)| (h.op, h.checksum)).collect(),
        }
    }

    fn repair_needed(&self, op: u64) -> HandoffError {
        let stale = matches!(
            (self.view_headers.get(&op), self.journal.get(&op)),
            (Some(view), Some(journal)) if view != journal
        );
        let reason = if stale {
            "differs from the superblock's view header (a stale prepare)"
        } else {
            "is missing or corrupt in the journal"
        };
        HandoffError::MetadataRepairNeeded { op, commit: self.trusted_commit, reason }
    }
}

/// Sort what the replica applied into the replay's counts, by its own
/// verdicts: a request the sessions filtered is not applied; an applied one
/// changed the state only if the state machine replied Ok.
fn count_outcomes(replay: &mut MetadataReplay, committed: &[Committed]) {
    for op in committed {
        if matches!(
            op.operation,
            Operation::Register | Operation::Root | Operation::Noop | Operation::Reserved | Operation::Packed
        ) {
            continue;
        }
        if !op.applied {
            replay.requests_filtered += 1;
        } else if matches!(decode_reply(&op.reply), Ok(MetadataReply::Ok)) {
            replay.requests_applied += 1;
        } else {
            tracing::debug!(op = op.op, "committed metadata request rejected on replay");
            replay.requests_rejected += 1;
        }
    }
}

/// First start: create the journal, then the superblock. The superblock is
/// the mark that formatting finished, so a crash before it leaves a journal
/// with no ops (or a torn, never-initialised one) that the next start
/// formats again. Anything with data in it is never reformatted.
async fn format_metadata_group<I: Io>(
    io: &I,
    dir: &Path,
    config: JournalConfig,
    replica: u8,
) -> Result<(), HandoffError> {
    let namespace = config.namespace;
    let incomplete = |reason| HandoffError::MetadataIncomplete { dir: dir.to_path_buf(), reason };
    let journal_error = |source| HandoffError::MetadataJournal { dir: dir.to_path_buf(), source };
    match read_checkpoint(io, dir, namespace).await {
        Ok(None) => {}
        Ok(Some(_)) | Err(_) => {
            return Err(incomplete("a checkpoint exists but the superblock is missing"));
        }
    }
    let leftover = match PrepareJournal::open(io, dir, config, OpenMode::ReadOnly).await {
        Err(JournalError::Missing { .. }) => false,
        Err(JournalError::ZeroFilled | JournalError::Truncated { .. }) => true,
        Ok((journal, _)) if journal.op_max().is_none() && journal.snapshot_op() == 0 => true,
        Ok(_) => {
            return Err(incomplete("the journal holds prepares but the superblock is missing"));
        }
        Err(source) => return Err(journal_error(source)),
    };
    if leftover {
        let path = journal_path(dir, namespace);
        io.remove(&path).await.map_err(storage(&path))?;
    }
    PrepareJournal::create(io, dir, config).await.map_err(journal_error)?;
    // Atomically (tmp, rename): a superblock file created but not yet
    // written would read as two damaged copies, not as no format.
    Superblock::replace(io, dir, config.cluster, namespace, replica, SuperblockState::default())
        .await
        .map_err(|source| HandoffError::MetadataSuperblock { dir: dir.to_path_buf(), source })?;
    Ok(())
}

/// Shard 0 opens the metadata snapshot (creating an empty one on first start)
/// and replays it. Any other shard gets `NotMetadataShard`: it never opens the
/// file for writing and receives the catalogue through the handoff instead.
pub async fn open_metadata<I: Io>(io: &I, path: &Path, shard: ShardId) -> Result<MetadataState, HandoffError> {
    if shard != ShardId::METADATA {
        return Err(HandoffError::NotMetadataShard { shard });
    }
    let file = io.open(path, OpenMode::ReadWriteCreate).await.map_err(storage(path))?;
    let size_bytes = file.size_bytes().await.map_err(storage(path))?;
    if size_bytes == 0 {
        return Ok(MetadataState::new());
    }
    if size_bytes > METADATA_SNAPSHOT_SIZE_MAX_BYTES {
        return Err(HandoffError::SnapshotTooLarge { size_bytes, max: METADATA_SNAPSHOT_SIZE_MAX_BYTES });
    }
    let (result, bytes) = shoal_vsr::io::read_exact_retrying(&file, vec![0; size_bytes as usize], 0).await;
    result.map_err(storage(path))?;
    Ok(MetadataState::decode(&bytes)?)
}

/// Durably replace the snapshot at `path`: write a temporary file, fsync it,
/// rename over `path`, fsync the directory. A crash at any step leaves either
/// the old or the new snapshot, never a torn one.
pub async fn write_metadata<I: Io>(
    io: &I,
    path: &Path,
    shard: ShardId,
    state: &MetadataState,
) -> Result<(), HandoffError> {
    if shard != ShardId::METADATA {
        return Err(HandoffError::NotMetadataShard { shard });
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = io.open(&tmp, OpenMode::ReadWriteCreate).await.map_err(storage(&tmp))?;
    file.set_len(0).await.map_err(storage(&tmp))?;
    let (result, _) = file.write_all_at(state.encode(), 0).await;
    result.map_err(storage(&tmp))?;
    file.sync_data().await.map_err(storage(&tmp))?;
    io.rename(&tmp, path).await.map_err(storage(path))?;
    io.sync_dir(dir).await.map_err(storage(dir))?;
    Ok(())
}

/// Shard 0: send `bundle` to every peer, then wait until each took it. Gives
/// up on shutdown, on a peer that ended first, or at `HANDOFF_TIMEOUT_NS`.
pub async fn broadcast_snapshot<I: Io>(
    io: &I,
    bundle: &[u8],
    peers: &[(ShardId, OneShotSender<Vec<u8>>)],
    shutdown: &ShutdownFlag,
) -> Result<(), HandoffError> {
    assert!(peers.iter().all(|(shard, _)| *shard != ShardId::METADATA), "shard 0 does not send to itself");
    for (shard, sender) in peers {
        if sender.send(bundle.to_vec()).is_err() {
            // A peer that saw the shutdown flag first drops its receiver:
            // that is the shutdown, not a failed peer.
            if shutdown.is_requested() {
                return Err(HandoffError::ShutDown);
            }
            return Err(HandoffError::PeerGone { shard: *shard });
        }
    }
    let start_ns = io.now_ns();
    loop {
        if shutdown.is_requested() {
            return Err(HandoffError::ShutDown);
        }
        if let Some((shard, _)) = peers.iter().find(|(_, s)| s.is_receiver_dropped()) {
            // Look at the flag again: it may have been raised between the
            // look above and the peer dropping its receiver because of it.
            if shutdown.is_requested() {
                return Err(HandoffError::ShutDown);
            }
            return Err(HandoffError::PeerGone { shard: *shard });
        }
        if peers.iter().all(|(_, sender)| sender.is_taken()) {
            return Ok(());
        }
        let waited_ns = io.now_ns() - start_ns;
        if waited_ns >= HANDOFF_TIMEOUT_NS {
            return Err(HandoffError::TimedOut { waited_ns });
        }
        io.sleep(HANDOFF_POLL_INTERVAL_NS).await;
    }
}

/// A peer shard: wait for shard 0's bundle and decode it. Returns `ShutDown`
/// as soon as the flag is seen, so a dead shard 0 strands nobody.
pub async fn await_snapshot<I: Io>(
    io: &I,
    receiver: &OneShotReceiver<Vec<u8>>,
    shutdown: &ShutdownFlag,
) -> Result<MetadataState, HandoffError> {
    let start_ns = io.now_ns();
    loop {
        // Shutdown first: a bundle that arrives after it is not served.
        if shutdown.is_requested() {
            return Err(HandoffError::ShutDown);
        }
        match receiver.try_recv() {
            TryRecv::Value(bundle) => return Ok(MetadataState::decode(&bundle)?),
            TryRecv::SenderDropped => return Err(HandoffError::ShardZeroGone),
            TryRecv::Empty => {}
        }
        let waited_ns = io.now_ns() - start_ns;
        if waited_ns >= HANDOFF_TIMEOUT_NS {
            return Err(HandoffError::TimedOut { waited_ns });
        }
        io.sleep(HANDOFF_POLL_INTERVAL_NS).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oneshot_carries_one_value_and_reports_drops() {
        let (tx, rx) = oneshot::<u32>();
        assert_eq!(rx.try_recv(), TryRecv::Empty);
        tx.send(7).unwrap();
        assert!(!tx.is_taken());
        assert_eq!(rx.try_recv(), TryRecv::Value(7));
        assert!(tx.is_taken());

        let (tx, rx) = oneshot::<u32>();
        drop(tx);
        assert_eq!(rx.try_recv(), TryRecv::SenderDropped);

        let (tx, rx) = oneshot::<u32>();
        drop(rx);
        assert!(tx.is_receiver_dropped());
        assert_eq!(tx.send(9), Err(9));
    }

    #[test]
    fn a_sent_but_untaken_value_is_dropped_with_the_receiver() {
        let (tx, rx) = oneshot::<u32>();
        tx.send(1).unwrap();
        drop(rx);
        assert!(tx.is_receiver_dropped());
        assert!(!tx.is_taken());
    }
}
