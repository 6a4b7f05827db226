//! Metadata handoff at start-up: shard 0 replays the metadata catalogue and
//! hands the encoded snapshot bundle to every other shard.
//!
//! Owns the replay of the metadata VSR group's durable state
//! (`replay_metadata`: superblock, checkpoint file and prepare journal of
//! namespace `METADATA`, opened for writing by shard 0 only; any other shard
//! may replay read-only, which cannot mutate a byte), the single-shot channel
//! the bundle travels on, the reading and durable writing of a standalone
//! metadata snapshot file, and the two waits: `broadcast_snapshot` (shard 0 waits until every peer took the
//! bundle) and `await_snapshot` (a peer waits for it). Both poll the shutdown
//! flag with `Io::sleep(HANDOFF_POLL_INTERVAL_NS)` between polls and give up at
//! a named deadline, so a shard 0 that dies first strands no peer: the peer
//! returns `HandoffError::ShutDown` (or `ShardZeroGone`) instead of waiting
//! forever. Knows nothing of routing, threads or compio.
//!
//! Must not touch the VSR protocol: replay applies only what the superblock
//! says is committed and never writes a prepare or a superblock; repairing a
//! gap is the replica's job (from peers), so a gap is a typed error here.
//!
//! Invariant: only `ShardId::METADATA` opens the metadata WAL (or the snapshot
//! file) for writing.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use shoal_vsr::checkpoint::{CheckpointError, read_checkpoint};
use shoal_vsr::journal::{JournalConfig, JournalError, PrepareJournal, journal_path};
use shoal_vsr::sessions::{ClientSessions, RequestVerdict};
use shoal_vsr::state_machine::{SnapshotError, SnapshotReader};
use shoal_vsr::superblock::{Superblock, SuperblockError};
use shoal_vsr::{Command, Header, Io, IoFile, OpenMode, Operation};

use crate::lifecycle::ShutdownFlag;
use crate::namespace::Namespace;
use crate::owner_table::ShardId;
use crate::state_machine::{CodecError, MetadataRequest, MetadataState};

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
    #[error("metadata checkpoint in {dir:?}: {source}")]
    MetadataCheckpoint {
        dir: PathBuf,
        #[source]
        source: CheckpointError,
    },
    #[error(
        "metadata checkpoint snapshot is unreadable ({0}): this replica must state-transfer its metadata group from peers"
    )]
    MetadataCheckpointSnapshot(#[source] SnapshotError),
    #[error(
        "metadata group in {dir:?} is incomplete: {reason}; this replica must repair its metadata group from peers (or, if it never held data, remove the data directory)"
    )]
    MetadataIncomplete { dir: PathBuf, reason: &'static str },
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

/// What replaying the metadata group found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataReplay {
    pub state: MetadataState,
    /// The op of the checkpoint the state started from (0: none).
    pub checkpoint_op: u64,
    /// The last op applied: the superblock's commit (or the checkpoint's op
    /// when that is higher).
    pub commit: u64,
    /// Ops replayed from the journal: `commit - checkpoint_op`.
    pub ops_replayed: u64,
    /// Of those, metadata requests that changed the state.
    pub requests_applied: u64,
    /// Metadata requests the state machine rejected (or could not decode):
    /// skipped, exactly as the replica skipped them when they committed.
    pub requests_rejected: u64,
    /// Requests the client sessions filtered (a duplicate, or no session).
    pub requests_filtered: u64,
    /// Ops past the superblock's commit found in the journal: not applied.
    pub ops_uncommitted: u64,
    /// Torn slots after the journal head (cleared when writable).
    pub torn_tail_ops: u64,
    /// True when this call formatted an empty metadata group (first start).
    pub created: bool,
}

/// Shard 0 at start-up: open the metadata group in `dir` for writing (format
/// an empty one on first start), restore its checkpoint and apply the
/// committed prepares after it. Any other shard gets `NotMetadataShard`; it
/// receives the catalogue through the handoff (or replays read-only).
pub async fn replay_metadata<I: Io>(
    io: &I,
    dir: &Path,
    cluster: u128,
    replica: u8,
    shard: ShardId,
) -> Result<MetadataReplay, HandoffError> {
    if shard != ShardId::METADATA {
        return Err(HandoffError::NotMetadataShard { shard });
    }
    replay(io, dir, cluster, replica, OpenMode::ReadWrite).await
}

/// Replay the metadata group without opening anything for writing: usable
/// from any shard; the journal and superblock are open `ReadOnly`, so a torn
/// tail stays on disk and no call can mutate them. A missing group is an
/// error (only shard 0 formats).
pub async fn replay_metadata_read_only<I: Io>(
    io: &I,
    dir: &Path,
    cluster: u128,
    replica: u8,
) -> Result<MetadataReplay, HandoffError> {
    replay(io, dir, cluster, replica, OpenMode::ReadOnly).await
}

async fn replay<I: Io>(
    io: &I,
    dir: &Path,
    cluster: u128,
    replica: u8,
    mode: OpenMode,
) -> Result<MetadataReplay, HandoffError> {
    let namespace = Namespace::METADATA.raw();
    let config = metadata_journal_config(cluster);
    let superblock_error = |source| HandoffError::MetadataSuperblock { dir: dir.to_path_buf(), source };
    let journal_error = |source| HandoffError::MetadataJournal { dir: dir.to_path_buf(), source };
    let mut created = false;
    let superblock = match Superblock::<I>::open(io, dir, cluster, namespace, replica, mode).await {
        Ok(superblock) => superblock,
        Err(SuperblockError::Missing { .. }) if mode.writable() => {
            format_metadata_group(io, dir, config, replica).await?;
            created = true;
            Superblock::open(io, dir, cluster, namespace, replica, mode).await.map_err(superblock_error)?
        }
        Err(source) => return Err(superblock_error(source)),
    };
    let durable = superblock.state().clone();
    let checkpoint = read_checkpoint(io, dir, namespace)
        .await
        .map_err(|source| HandoffError::MetadataCheckpoint { dir: dir.to_path_buf(), source })?;
    let (journal, recovery) = PrepareJournal::open(io, dir, config, mode).await.map_err(journal_error)?;

    let mut state = MetadataState::new();
    let mut sessions = ClientSessions::default();
    let mut checkpoint_op = 0;
    let mut previous_checksum = None;
    if let Some(checkpoint) = &checkpoint {
        let anchor = &checkpoint.anchor;
        if anchor.cluster != cluster || anchor.namespace != namespace {
            return Err(HandoffError::MetadataCheckpoint {
                dir: dir.to_path_buf(),
                source: CheckpointError::Corrupt { reason: "its anchor belongs to another cluster or group" },
            });
        }
        // The replica's snapshot: [u32 len][state machine snapshot][sessions].
        let mut reader = SnapshotReader::new(&checkpoint.snapshot);
        let state_bytes = reader.bytes_with_len().map_err(HandoffError::MetadataCheckpointSnapshot)?;
        sessions = ClientSessions::decode(&mut reader, shoal_vsr::sessions::CLIENT_SESSIONS_MAX)
            .map_err(HandoffError::MetadataCheckpointSnapshot)?;
        state = MetadataState::decode(state_bytes)?;
        checkpoint_op = anchor.op;
        previous_checksum = Some(anchor.checksum);
    }
    // A checkpoint is of committed state, so it raises the trusted commit
    // (the superblock may lag it), as in the replica's own recovery.
    let commit = durable.commit.max(checkpoint_op);
    if journal.snapshot_op() > checkpoint_op {
        // The journal forgot ops that no checkpoint on disk covers.
        return Err(HandoffError::MetadataRepairNeeded {
            op: checkpoint_op + 1,
            commit,
            reason: "was drained from the journal but is not in the checkpoint",
        });
    }
    let mut replay = MetadataReplay {
        state: MetadataState::new(),
        checkpoint_op,
        commit,
        ops_replayed: 0,
        requests_applied: 0,
        requests_rejected: 0,
        requests_filtered: 0,
        ops_uncommitted: journal.op_max().map_or(0, |head| head.saturating_sub(commit)),
        torn_tail_ops: recovery.torn_tail_truncated.len() as u64,
        created,
    };
    let reply_header = Header::new(Command::Reply, cluster);
    for op in checkpoint_op + 1..=commit {
        let repair = |reason| HandoffError::MetadataRepairNeeded { op, commit, reason };
        let (header, body) = match journal.read(op).await {
            Ok(entry) => entry,
            Err(JournalError::NotFound { .. } | JournalError::Corrupt { .. }) => {
                return Err(repair("is missing or corrupt in the journal"));
            }
            Err(source) => return Err(journal_error(source)),
        };
        debug_assert_eq!(header.op, op);
        if previous_checksum.is_some_and(|checksum| checksum != header.parent) {
            return Err(repair("does not chain to the op before it"));
        }
        if durable.view_headers.iter().any(|view| view.op == op && view.checksum != header.checksum) {
            return Err(repair("differs from the superblock's view header (a stale prepare)"));
        }
        previous_checksum = Some(header.checksum);
        // Mirror the replica's apply: sessions filter, then the state machine.
        match header.operation {
            Operation::Register => {
                if sessions.classify(header.client, 0, true) == RequestVerdict::Prepare {
                    sessions.register(header.client, op, reply_header, op.to_le_bytes().to_vec());
                }
            }
            Operation::Root | Operation::Noop | Operation::Reserved => {}
            operation => {
                let fresh =
                    sessions.classify_request(header.client, header.context, header.request) == RequestVerdict::Prepare;
                if fresh {
                    let result = MetadataRequest::decode_body(operation, &body)
                        .map_err(|error| error.to_string())
                        .and_then(|request| state.apply(&request).map_err(|error| error.to_string()));
                    match result {
                        Ok(()) => replay.requests_applied += 1,
                        Err(error) => {
                            tracing::debug!(op, %error, "committed metadata request rejected on replay");
                            replay.requests_rejected += 1;
                        }
                    }
                    sessions.record(header.client, header.request, op, reply_header, Vec::new());
                } else {
                    replay.requests_filtered += 1;
                }
            }
        }
        replay.ops_replayed += 1;
    }
    assert_eq!(replay.ops_replayed, commit - checkpoint_op);
    replay.state = state;
    Ok(replay)
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
    Superblock::create(io, dir, config.cluster, namespace, replica)
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
    let (result, bytes) = file.read_exact_at(vec![0; size_bytes as usize], 0).await;
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
