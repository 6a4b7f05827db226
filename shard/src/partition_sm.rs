//! The partition state machine: what a partition's VSR group replicates,
//! over the durable `PartitionLog`.
//!
//! Owns the mapping from committed `SendMessages` ops (each a batch of
//! messages, `message_batch`) to partition offsets,
//! the bounded list of applied-but-not-yet-durable messages, and the logical
//! snapshot of a partition. Must not touch VSR internals (client sessions,
//! the journal) or the log's on-disk format (the partition log's).
//!
//! `StateMachine::apply` is sync but the log is async, so the work is split:
//! `apply` assigns the next offset and queues the message in memory;
//! `write_pending` (async) appends the queue to the log without a sync (the
//! driver calls it after commits: the journal is the write-ahead log, so the
//! commit path costs no partition fsync), and `persist` appends and syncs
//! it (the driver must call it before it makes a checkpoint durable, since
//! the checkpoint lets the journal forget the ops it covers).
//!
//! Invariants:
//! - Offsets are dense and assigned in commit order: the messages of a
//!   committed `SendMessages` batch get the next offsets, one each, in the
//!   batch's order, on every replica. So a durable record at offset k is the
//!   same message whichever replica wrote it. A body that is not a valid
//!   batch takes no offset (its reply says so, the same on every replica).
//! - The snapshot is the logical state only: the next offset and a chained
//!   checksum over the log record checksum (offset, length, bytes) of every
//!   message applied so far.
//!   The message bytes live in the log, not in the snapshot.
//! - A checkpoint is made durable only after `persist` has made every offset
//!   below its `next_offset` durable. So after a crash the log holds at least
//!   the checkpoint's offsets. With a state-transfer gap `persist` cannot,
//!   so `checkpoint_ready` is false and the replica defers its checkpoint
//!   (the journal keeps the ops) until the gap is filled; only a checkpoint
//!   restored from a peer names offsets this log lacks.
//! - Idempotent replay: after a restart the replica restores its checkpoint
//!   and re-applies the committed ops after it. An op whose offset is already
//!   in the log (`offset < log.next_offset()`) is not queued or appended
//!   again (each offset is in the log once), but it is compared: `apply` is
//!   sync and the log async, so `apply` keeps the record checksum of the message and the
//!   next `persist` (or a `read` of that offset) compares it with the log's
//!   record, failing with `PartitionSmError::ReplayMismatch`. A record that
//!   passed its own checksum yet differs from the committed op is a message
//!   of another log (a misdirected write, a directory from another partition)
//!   or a consensus bug: serving or extending such a log would hand clients
//!   data that was never committed there.
//! - A snapshot from a peer (state transfer) may name offsets this replica's
//!   log does not hold. Those are `missing()`: `persist` refuses to append past
//!   the hole (`PartitionSmError::Gap`) until the partition is repaired from a
//!   peer, rather than writing messages at the wrong offsets.
//! - Repair (`fill`) writes a peer's messages only once they are proven to be
//!   the committed ones: the chain at the gap's start (computed from this
//!   replica's own log) carried over the fetched messages must equal the
//!   snapshot's chain at the gap's end. The chain only commits to its end, so
//!   fetched batches are staged in memory (bounded) until the gap is whole,
//!   then checked together; a mismatch drops them all
//!   (`PartitionSmError::FillMismatch`). Checked ones are appended a part
//!   at a time (`fill_more`, `FILL_APPEND_BYTES_PER_CALL_MAX`), so that a
//!   large gap never holds the shard's thread for its whole write.
//!
//! Reads: a committed offset needs no consensus: read it with `read`,
//! straight from the log (readable once `write_pending`, which the driver
//! runs after every step, returns; durable once `persist` returns).
//! `PollMessages` through consensus does NOT return the message, even if it
//! is still pending: whether it is pending depends on when this replica
//! last wrote, so such a reply would differ between
//! replicas and between the first apply and a replay (client sessions keep
//! replies in the checkpoint, and the simulator checks reply agreement).
//! Instead it replies with the partition's `next_offset` at that op (u64 LE):
//! every offset below it is committed, and `read` serves it once written.

use std::ops::Range;
use std::path::Path;

use shoal_vsr::header::checksum;
use shoal_vsr::state_machine::{SnapshotError, SnapshotReader};
use shoal_vsr::{Io, Operation, StateMachine};

use crate::handoff::METADATA_JOURNAL_SLOT_COUNT;
use crate::message_batch::{BATCH_MESSAGES_MAX, BatchReply, decode_batch};
use crate::namespace::Namespace;
use crate::partition_log::{
    APPEND_BATCH_MESSAGES_MAX, BeginSync, PartitionLog, PartitionLogConfig, PartitionLogError,
    RECORD_PAYLOAD_SIZE_MAX_BYTES, RecordBatch, RecordsRead, Salvage, SyncEnded, record_checksum,
};

/// Applied messages awaiting `write_pending`. The driver writes after every
/// step's commits; one step commits at most the journal's live window of
/// ops, each a batch of up to `BATCH_MESSAGES_MAX` messages. Reaching it is
/// a driver bug (asserted).
pub const PARTITION_PENDING_MESSAGES_MAX: usize = PARTITION_STEP_OPS_MAX * BATCH_MESSAGES_MAX;
/// The most ops one step of a partition group commits: its journal's slots
/// (`METADATA_JOURNAL_SLOT_COUNT` is the server's default for every group).
const PARTITION_STEP_OPS_MAX: usize = METADATA_JOURNAL_SLOT_COUNT as usize;
const _: () = assert!(PARTITION_PENDING_MESSAGES_MAX <= APPEND_BATCH_MESSAGES_MAX);

/// Messages `fill` stages while a state-transfer gap is incomplete (they can
/// be checked only once the whole gap is there). A larger gap is refused.
pub const PARTITION_FILL_STAGED_MESSAGES_MAX: usize = 64 * 1024;
/// Bytes `fill` stages, likewise.
pub const PARTITION_FILL_STAGED_SIZE_MAX_BYTES: usize = 256 * 1024 * 1024;
/// Bytes of a checked fill one call appends (`fill`, then `fill_more` at
/// each of the node's ticks); a call also stops once the log rolled to a
/// new segment (a roll syncs the old one and creates the new one: fsyncs).
/// The node runs the fill on the shard's thread, between the work of every
/// group there: appending a whole gap (up to
/// `PARTITION_FILL_STAGED_SIZE_MAX_BYTES`) at once held them all. In the
/// simulator, whose segments are 16 KiB, one fill rolled 35 times (146
/// fsyncs, 184 ms held) and a primary of another group on that replica
/// sent no heartbeat for 430 ms (swarm seed 10006).
pub const FILL_APPEND_BYTES_PER_CALL_MAX: usize = 1024 * 1024;

/// The first byte of a partition snapshot; another value is another format.
/// 0x51: the chain runs over record checksums (`chain_next`); 0x50 ran
/// over checksums of the bare messages (no users to migrate).
const SNAPSHOT_TAG: u8 = 0x51;
/// `[tag u8][next_offset u64][chain u128]`.
pub const PARTITION_SNAPSHOT_SIZE_BYTES: usize = 1 + 8 + 16;

#[derive(Debug, thiserror::Error)]
pub enum PartitionSmError {
    #[error(transparent)]
    Log(#[from] PartitionLogError),
    #[error(
        "partition log ends at offset {log_next_offset} but the next message to persist has offset {pending_offset}: offsets {log_next_offset}..{pending_offset} came by state transfer and are not on this disk; repair the partition from a peer replica"
    )]
    Gap { log_next_offset: u64, pending_offset: u64 },
    #[error(
        "messages fetched for offsets {first_offset}..{end_offset} do not match the checksum chain of the restored checkpoint (or this replica's log below offset {first_offset} does not): nothing was written; fetch them from another peer, or repair the partition from a peer replica"
    )]
    FillMismatch { first_offset: u64, end_offset: u64 },
    #[error(
        "state-transfer gap {first_offset}..{end_offset} exceeds what can be checked in memory ({PARTITION_FILL_STAGED_MESSAGES_MAX} messages, {PARTITION_FILL_STAGED_SIZE_MAX_BYTES} bytes); copy the partition directory from a healthy replica"
    )]
    FillTooLarge { first_offset: u64, end_offset: u64 },
    #[error(
        "partition log holds at offset {offset} a message other than the committed one replayed there: this log is not this partition's history; repair the partition from a peer replica"
    )]
    ReplayMismatch { offset: u64 },
}

/// Fetched messages for a state-transfer gap, not yet checked.
#[derive(Debug)]
struct FillStaged {
    /// The gap's start: `log.next_offset()` when staging began.
    first_offset: u64,
    /// The chain after the last staged message (at the gap's start if none).
    chain: u128,
    messages: Vec<Vec<u8>>,
    size_bytes: usize,
    /// The staged messages matched the restored checkpoint's chain: only
    /// appending is left (`fill_more`), and nothing more is asked.
    checked: bool,
    /// Checked messages already in the log (a prefix).
    appended: usize,
}

/// One partition's replicated state: a `StateMachine` over a durable log.
pub struct PartitionStateMachine<I: Io> {
    namespace: Namespace,
    log: PartitionLog<I>,
    /// The offset the next applied `SendMessages` gets.
    next_offset: u64,
    /// Chained checksum over (offset, checksum of message) of every applied message.
    chain: u128,
    /// Applied messages not yet in the log, already encoded as the log's
    /// records (one copy of each message, from the committed body, and one
    /// hash: its record checksum, which the chain reuses): contiguous, and
    /// the last one is `next_offset - 1`. The buffer is reused from commit
    /// to commit (no allocation per message).
    pending: RecordBatch,
    /// Offsets replayed onto records already in the log, with the record
    /// checksum of the committed message there: compared with the log by
    /// `persist`. Sorted.
    replayed: Vec<(u64, u128)>,
    /// (offset, chain) where the restored checkpoint's offsets end: what a
    /// state-transfer gap, which ends there, must chain to.
    restored: Option<(u64, u128)>,
    /// Boxed: idle but for a state transfer, and it would double the size of
    /// every partition's machine.
    fill_staged: Option<Box<FillStaged>>,
}

impl<I: Io> std::fmt::Debug for PartitionStateMachine<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionStateMachine")
            .field("namespace", &self.namespace)
            .field("next_offset", &self.next_offset)
            .field("pending", &self.pending.len())
            .field("log", &self.log)
            .finish()
    }
}

/// The chain after the message whose log record (at its offset) has checksum
/// `record_checksum` (`partition_log::record_checksum`). The record checksum
/// covers the offset, the length and the bytes, so the chain commits to all
/// three; reusing it (rather than hashing the message on its own) hashes each
/// message once on the commit path, in the record the log writes.
fn chain_next(chain: u128, record_checksum: u128) -> u128 {
    let mut bytes = [0u8; 16 + 16];
    bytes[..16].copy_from_slice(&chain.to_le_bytes());
    bytes[16..].copy_from_slice(&record_checksum.to_le_bytes());
    checksum(&bytes)
}

impl<I: Io> PartitionStateMachine<I> {
    /// Open (or create) the partition's log in `dir`. The logical state starts
    /// empty (offset 0): the replica restores its checkpoint and replays.
    pub async fn open(io: I, dir: &Path, namespace: Namespace) -> Result<PartitionStateMachine<I>, PartitionLogError> {
        PartitionStateMachine::open_with_config(io, dir, namespace, PartitionLogConfig::default()).await
    }

    pub async fn open_with_config(
        io: I,
        dir: &Path,
        namespace: Namespace,
        config: PartitionLogConfig,
    ) -> Result<PartitionStateMachine<I>, PartitionLogError> {
        assert!(namespace.is_partition(), "{namespace:?} is not a partition");
        let log = PartitionLog::open(io, dir, config).await?;
        Ok(PartitionStateMachine::over(namespace, log))
    }

    /// Open for a replica whose peers hold the partition: a damaged log is
    /// cut to its intact prefix (`PartitionLog::open_salvaging`) instead of
    /// refused. Offsets cut that the checkpoint counts then show in
    /// `missing()` and are fetched from peers and proven by the chain
    /// (`fill`); offsets after it are applied again from the journal.
    pub async fn open_salvaging(
        io: I,
        dir: &Path,
        namespace: Namespace,
        config: PartitionLogConfig,
    ) -> Result<(PartitionStateMachine<I>, Option<Salvage>), PartitionLogError> {
        assert!(namespace.is_partition(), "{namespace:?} is not a partition");
        let (log, salvage) = PartitionLog::open_salvaging(io, dir, config).await?;
        Ok((PartitionStateMachine::over(namespace, log), salvage))
    }

    fn over(namespace: Namespace, log: PartitionLog<I>) -> PartitionStateMachine<I> {
        PartitionStateMachine {
            namespace,
            log,
            next_offset: 0,
            chain: 0,
            pending: RecordBatch::default(),
            replayed: Vec::new(),
            restored: None,
            fill_staged: None,
        }
    }

    /// Append every pending message to the log and sync it: what a
    /// checkpoint needs before it may become durable. On an error the
    /// messages the log did take stay out of the queue, the rest stay queued;
    /// a storage error is fatal for the replica (it restarts and replays).
    /// With a state-transfer gap, what the log holds below it is still
    /// synced before the `Gap` error returns.
    pub async fn persist(&mut self) -> Result<(), PartitionSmError> {
        let written = self.write_pending().await;
        if matches!(written, Ok(()) | Err(PartitionSmError::Gap { .. })) {
            self.log.sync().await?;
        }
        written
    }

    /// `persist` with its fsyncs beside the caller (a checkpoint off the
    /// commit path): the pending messages are written now, and the sync of
    /// the log is handed back to run (`PartitionLog::begin_sync`); until
    /// `end_persist`, `write_pending` keeps what is applied in memory. A gap
    /// is no error here: what the log holds below it is synced.
    pub async fn begin_persist(&mut self) -> Result<BeginSync<I::File>, PartitionSmError> {
        match self.write_pending().await {
            Ok(()) | Err(PartitionSmError::Gap { .. }) => Ok(self.log.begin_sync()),
            Err(error) => Err(error),
        }
    }

    /// The end of the sync `begin_persist` handed back.
    pub fn end_persist(&mut self, ended: SyncEnded) -> Result<(), PartitionSmError> {
        Ok(self.log.end_sync(ended)?)
    }

    /// Append every pending message to the log without syncing it: the
    /// commit path. The journal is the write-ahead log: until a checkpoint
    /// covers an op, the journal keeps it, and a restart replays it into
    /// the log, which may then hold all, some or none of its messages (an
    /// unsynced tail is cut at open, `PartitionLog::open`): held ones are
    /// compared (`replayed`), the others appended again. So nothing here
    /// needs to be durable before a reply; `persist` syncs before a
    /// checkpoint lets the journal forget the ops. Readable at once (reads
    /// see written records). Errors as in `persist`.
    pub async fn write_pending(&mut self) -> Result<(), PartitionSmError> {
        if self.log.sync_in_flight() {
            // The sync's marker covers the log as it was when it began.
            return Ok(());
        }
        self.check_replayed().await?;
        while let Some(first) = self.pending.first_offset() {
            let log_next_offset = self.log.next_offset();
            if log_next_offset < first {
                return Err(PartitionSmError::Gap { log_next_offset, pending_offset: first });
            }
            // A failed append may have written a prefix: those are in the log.
            let written = ((log_next_offset - first) as usize).min(self.pending.len());
            if written > 0 {
                self.pending.remove_first(written);
                continue;
            }
            // The records were encoded at apply: written as they are.
            let offset = self.log.append_batch(&mut self.pending).await?;
            assert_eq!(offset, first, "the log appends at the pending offset");
            self.pending.clear();
        }
        debug_assert!(self.pending.is_empty());
        Ok(())
    }

    /// Take messages a peer sent for the `missing()` range (after a state
    /// transfer), in order. Only an answer that starts exactly where the
    /// staged ones end is taken; a stale or repeated one is ignored (returns
    /// 0). Staged until the gap is whole, then checked against the restored
    /// checkpoint's chain and appended (see the module doc); durable once
    /// `persist` returns. Returns how many messages were taken.
    pub async fn fill(&mut self, first_offset: u64, messages: &[Vec<u8>]) -> Result<usize, PartitionSmError> {
        let Some(gap) = self.gap() else { return Ok(0) };
        if self.fill_staged.as_ref().is_some_and(|staged| staged.checked) {
            return Ok(0); // the whole gap is here and checked: appending
        }
        let Some((restored_offset, restored_chain)) = self.restored else {
            unreachable!("a gap opens only by restoring a checkpoint ahead of the log")
        };
        // A gap ends where the restored checkpoint's offsets end: offsets
        // applied after it are queued or in the log.
        assert_eq!(gap.end, restored_offset, "the gap ends at the restored checkpoint");
        if self.fill_staged.as_ref().is_some_and(|staged| staged.first_offset != gap.start) {
            self.fill_staged = None; // the log moved: start again
        }
        let staged_end = self.fill_staged.as_ref().map_or(gap.start, |s| s.first_offset + s.messages.len() as u64);
        if first_offset != staged_end {
            return Ok(0);
        }
        let count = messages.len().min((gap.end - staged_end) as usize);
        if count == 0 {
            return Ok(0);
        }
        if self.fill_staged.is_none() {
            let chain = self.log_chain(gap.start).await?;
            self.fill_staged = Some(Box::new(FillStaged {
                first_offset: gap.start,
                chain,
                messages: Vec::new(),
                size_bytes: 0,
                checked: false,
                appended: 0,
            }));
        }
        let staged = self.fill_staged.as_mut().expect("staging started above");
        for (index, message) in messages[..count].iter().enumerate() {
            if staged.messages.len() >= PARTITION_FILL_STAGED_MESSAGES_MAX
                || staged.size_bytes + message.len() > PARTITION_FILL_STAGED_SIZE_MAX_BYTES
            {
                self.fill_staged = None;
                return Err(PartitionSmError::FillTooLarge { first_offset: gap.start, end_offset: gap.end });
            }
            staged.chain = chain_next(staged.chain, record_checksum(staged_end + index as u64, message));
            staged.size_bytes += message.len();
            staged.messages.push(message.clone());
        }
        if staged.first_offset + (staged.messages.len() as u64) < gap.end {
            return Ok(count);
        }
        let mut staged = self.fill_staged.take().expect("staged above");
        if staged.chain != restored_chain {
            return Err(PartitionSmError::FillMismatch { first_offset: staged.first_offset, end_offset: gap.end });
        }
        staged.checked = true;
        self.fill_staged = Some(staged);
        self.fill_more().await?;
        Ok(count)
    }

    /// Append the next part of a checked fill: up to
    /// `FILL_APPEND_BYTES_PER_CALL_MAX` bytes (at least one message), and
    /// nothing after a roll to a new segment. Returns whether a checked fill
    /// is still appending (the node calls again at its next tick). Nothing
    /// to do without one. Not synced: the caller persists once the gap is
    /// filled; a crash before cuts the unsynced part and it is fetched again.
    pub async fn fill_more(&mut self) -> Result<bool, PartitionSmError> {
        let Some(staged) = self.fill_staged.as_mut().filter(|staged| staged.checked) else { return Ok(false) };
        assert_eq!(
            self.log.next_offset(),
            staged.first_offset + staged.appended as u64,
            "only the fill appends while a gap is open"
        );
        let segments_before = self.log.segment_count();
        let mut appended_bytes = 0;
        while staged.appended < staged.messages.len()
            && appended_bytes < FILL_APPEND_BYTES_PER_CALL_MAX
            && self.log.segment_count() == segments_before
        {
            // What the active segment takes in one write, or, once it is
            // full, a roll and what the new segment takes (never two rolls
            // in one call), within the call's bound. One write per message
            // cost a refill on the simulator's slow disk a write's latency
            // each (swarm seed 29189, session 35).
            let rest = &staged.messages[staged.appended..];
            let mut count = 0;
            let mut bytes = 0;
            let fitting = if shoal_vsr::buggify!(shoal_vsr::buggify::FILL_PART_ONE_MESSAGE) {
                1
            } else {
                self.log.messages_fitting_one_roll(rest)
            };
            for message in &rest[..fitting] {
                if count > 0 && appended_bytes + bytes + message.len() > FILL_APPEND_BYTES_PER_CALL_MAX {
                    break;
                }
                bytes += message.len();
                count += 1;
            }
            let offset = self.log.append(&rest[..count]).await?;
            assert_eq!(offset, staged.first_offset + staged.appended as u64, "the log appends where it ends");
            appended_bytes += bytes;
            staged.appended += count;
        }
        if staged.appended < staged.messages.len() {
            return Ok(true);
        }
        self.fill_staged = None;
        debug_assert!(self.gap().is_none(), "a checked fill ends the gap");
        Ok(false)
    }

    /// The chain over this replica's log up to `end_offset` (one full read of
    /// it, once per state transfer: records do not carry the chain).
    async fn log_chain(&self, end_offset: u64) -> Result<u128, PartitionSmError> {
        assert_eq!(self.log.first_offset(), 0, "the chain starts at offset 0: no retention yet");
        assert!(end_offset <= self.log.next_offset());
        let mut chain = 0;
        let mut offset = 0;
        while offset < end_offset {
            let records = self
                .log
                .read_records(offset, (end_offset - offset) as usize, crate::partition_log::READ_SIZE_MAX_BYTES)
                .await?;
            assert!(!records.is_empty(), "the log holds every offset below its end");
            for (record_offset, record_checksum, _) in records.iter_with_checksums() {
                debug_assert_eq!(record_offset, offset);
                chain = chain_next(chain, record_checksum);
                offset += 1;
            }
        }
        Ok(chain)
    }

    /// Compare every replayed op with the log's record at its offset.
    async fn check_replayed(&mut self) -> Result<(), PartitionSmError> {
        let mut index = 0;
        while let Some(&(first, _)) = self.replayed.get(index) {
            let records = self
                .log
                .read_records(first, self.replayed.len() - index, crate::partition_log::READ_SIZE_MAX_BYTES)
                .await?;
            assert!(!records.is_empty(), "a replayed offset is below the log's end, and the log never shrinks");
            for (offset, record_checksum, _) in records.iter_with_checksums() {
                match self.replayed.get(index) {
                    Some(&(expected, sum)) if expected == offset => {
                        if record_checksum != sum {
                            return Err(PartitionSmError::ReplayMismatch { offset });
                        }
                        index += 1;
                    }
                    _ => break, // the next replayed offset is further on
                }
            }
        }
        self.replayed.clear();
        Ok(())
    }

    /// Durable reads: up to `max_count` committed messages from `offset`,
    /// straight from the log (no consensus needed for a committed offset).
    /// A replayed offset not yet compared by `persist` is compared here, so a
    /// read never serves a message that differs from the committed one.
    pub async fn read(&self, offset: u64, max_count: usize) -> Result<Vec<(u64, Vec<u8>)>, PartitionSmError> {
        self.read_bounded(offset, max_count, crate::partition_log::READ_SIZE_MAX_BYTES).await
    }

    /// Like `read`, loading at most `size_max_bytes` of log records (at
    /// least one record): a client's read asks for one reply's worth.
    pub async fn read_bounded(
        &self,
        offset: u64,
        max_count: usize,
        size_max_bytes: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, PartitionSmError> {
        let records = self.read_records(offset, max_count, size_max_bytes).await?;
        Ok(records.iter().map(|(offset, message)| (offset, message.to_vec())).collect())
    }

    /// Like `read_bounded`, the messages left in the buffers the log read
    /// them into (`PartitionLog::read_records`): what a reply is built from.
    pub async fn read_records(
        &self,
        offset: u64,
        max_count: usize,
        size_max_bytes: u64,
    ) -> Result<RecordsRead, PartitionSmError> {
        let records = self.log.read_records(offset, max_count, size_max_bytes).await?;
        if !self.replayed.is_empty() {
            for (record_offset, record_checksum, _) in records.iter_with_checksums() {
                if let Ok(index) = self.replayed.binary_search_by_key(&record_offset, |&(offset, _)| offset)
                    && record_checksum != self.replayed[index].1
                {
                    return Err(PartitionSmError::ReplayMismatch { offset: record_offset });
                }
            }
        }
        Ok(records)
    }

    pub fn namespace(&self) -> Namespace {
        self.namespace
    }

    /// The offset the next applied message gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The offset the log appends next (written, maybe not yet synced).
    pub fn log_next_offset(&self) -> u64 {
        self.log.next_offset()
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The applied messages not yet written to the log, by offset (they
    /// wait while a checkpoint's sync runs beside the node).
    pub fn pending(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.pending.iter()
    }

    /// The offsets to ask a peer for: `missing`, unless a checked fill holds
    /// them all and is being appended.
    pub fn to_fetch(&self) -> Option<Range<u64>> {
        if self.fill_appending() {
            return None;
        }
        self.missing()
    }

    /// A checked state-transfer fill is being appended (`fill_more`).
    pub fn fill_appending(&self) -> bool {
        self.fill_staged.as_ref().is_some_and(|staged| staged.checked)
    }

    /// Offsets applied (or restored) that neither the log nor the pending
    /// queue holds. Staged (fetched, not yet checked) offsets are not
    /// missing: they are not asked for again. While a checked fill is
    /// appended, what it has yet to append is missing (the log lacks it),
    /// but nothing is to be fetched (`to_fetch`).
    pub fn missing(&self) -> Option<Range<u64>> {
        let gap = self.gap()?;
        let start = match &self.fill_staged {
            Some(staged) if staged.checked => gap.start,
            Some(staged) if staged.first_offset == gap.start => staged.first_offset + staged.messages.len() as u64,
            _ => gap.start,
        };
        debug_assert!(start < gap.end, "a staged gap is asked for no more once whole");
        Some(start..gap.end)
    }

    /// Offsets neither the log nor the pending queue holds.
    fn gap(&self) -> Option<Range<u64>> {
        let log_next_offset = self.log.next_offset();
        let covered_to = self.pending.first_offset().unwrap_or(self.next_offset);
        (log_next_offset < covered_to).then_some(log_next_offset..covered_to)
    }

    pub fn log(&self) -> &PartitionLog<I> {
        &self.log
    }

    /// Every message of a valid batch gets the next offset, in order; a body
    /// that is not a batch gets none. Deterministic: the reply is committed.
    fn send_batch(&mut self, body: &[u8]) -> BatchReply {
        let first_offset = self.next_offset;
        let Ok(messages) = decode_batch(body) else {
            return BatchReply { first_offset, count: 0 };
        };
        for message in &messages {
            self.send(message);
        }
        assert_eq!(self.next_offset - first_offset, messages.len() as u64, "one offset per message");
        BatchReply { first_offset, count: messages.len() as u32 }
    }

    fn send(&mut self, message: &[u8]) -> u64 {
        assert!(message.len() <= RECORD_PAYLOAD_SIZE_MAX_BYTES, "a committed body is bounded by the message size");
        let offset = self.next_offset;
        self.next_offset += 1;
        if offset >= self.log.next_offset() {
            assert!(
                self.pending.len() < PARTITION_PENDING_MESSAGES_MAX,
                "{} messages pending: the driver must persist after commits",
                self.pending.len()
            );
            let record_checksum = self.pending.push(offset, message);
            self.chain = chain_next(self.chain, record_checksum);
        } else {
            // Replay of an op whose message is already in the log: not written
            // again, but compared with it by the next persist (async).
            assert!(self.pending.is_empty(), "pending offsets are past the log");
            assert!(
                self.replayed.len() < PARTITION_PENDING_MESSAGES_MAX,
                "{} replayed messages unchecked: the driver must persist after commits",
                self.replayed.len()
            );
            debug_assert!(self.replayed.last().is_none_or(|(last, _)| *last < offset));
            let record_checksum = record_checksum(offset, message);
            self.chain = chain_next(self.chain, record_checksum);
            self.replayed.push((offset, record_checksum));
        }
        offset
    }
}

impl<I: Io> StateMachine for PartitionStateMachine<I> {
    /// `SendMessages`: the body is a batch (`message_batch`); the reply is a
    /// `BatchReply`, the first offset and the count (0: not a batch, nothing
    /// appended). `PollMessages`: the reply is the next offset (u64 LE), the
    /// committed high watermark; the messages themselves come from `read`
    /// (see the module doc for why). Other operations reply empty.
    fn apply(&mut self, _op: u64, operation: Operation, body: &[u8], _timestamp: u64) -> Vec<u8> {
        match operation {
            Operation::SendMessages => self.send_batch(body).encode().to_vec(),
            Operation::PollMessages => self.next_offset.to_le_bytes().to_vec(),
            _ => Vec::new(),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PARTITION_SNAPSHOT_SIZE_BYTES);
        out.push(SNAPSHOT_TAG);
        out.extend_from_slice(&self.next_offset.to_le_bytes());
        out.extend_from_slice(&self.chain.to_le_bytes());
        debug_assert_eq!(out.len(), PARTITION_SNAPSHOT_SIZE_BYTES);
        out
    }

    /// Replace the logical state. Pending messages at or past the snapshot's
    /// next offset are dropped (their ops are applied again); if the snapshot
    /// is ahead of this replica, the queue is dropped and the hole shows in
    /// `missing()`.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        let mut reader = SnapshotReader::new(snapshot);
        let tag = reader.take(1)?[0];
        if tag != SNAPSHOT_TAG {
            return Err(SnapshotError::BadTag { tag });
        }
        let next_offset = reader.u64()?;
        let chain = reader.u128()?;
        if !reader.is_empty() {
            // Trailing bytes: not a snapshot this version wrote.
            return Err(SnapshotError::BadTag { tag });
        }
        if next_offset > self.next_offset {
            self.pending.clear();
        } else {
            self.pending.truncate_from(next_offset);
        }
        // Replayed ops at or past the snapshot are applied (and compared) again.
        self.replayed.retain(|(offset, _)| *offset < next_offset);
        self.next_offset = next_offset;
        self.chain = chain;
        // Queued messages left over start where a gap (if any) ends, and the
        // chain there is the one already kept; otherwise a gap now ends at
        // this snapshot, whose chain is the one to check it against.
        if self.pending.is_empty() {
            self.restored = Some((next_offset, chain));
            self.fill_staged = None;
        }
        debug_assert!(self.pending.end_offset().is_none_or(|end| end == self.next_offset));
        Ok(())
    }

    /// A checkpoint of the current state may be made durable: the log can
    /// take every applied message (no gap before the pending ones). With a
    /// gap, the pending messages live only in memory, and the journal must
    /// keep their ops until a peer fills the gap (see `StateMachine`).
    fn checkpoint_ready(&self) -> bool {
        self.gap().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_offset_and_message() {
        let a = chain_next(0, record_checksum(0, b"m"));
        assert_ne!(a, chain_next(0, record_checksum(1, b"m")));
        assert_ne!(a, chain_next(0, record_checksum(0, b"n")));
        assert_ne!(a, chain_next(1, record_checksum(0, b"m")));
        assert_eq!(a, chain_next(0, record_checksum(0, b"m")));
    }
}
