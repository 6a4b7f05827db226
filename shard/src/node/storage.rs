//! One group's storage on one replica: its journal, superblock and
//! checkpoint file in the data dir, and the execution of the replica's
//! storage actions against them.
//!
//! Every storage action is durable (written and fsynced) before `execute`
//! returns; an error means the replica must stop (fail-stop) and restart
//! from what the disk kept. For group commit, prepares are instead staged
//! as the replica asks (`stage_prepare`: from then on nothing promises
//! them), then written together, each run of adjacent slots with one write,
//! and made durable together: the node's flush writes them and runs one
//! fdatasync beside its other work (`begin_flush` / `end_flush`, the
//! journal's `write_prepares` and one `flush` step; a prepare's ring copy
//! rides with the next flush), and before any other storage action the
//! rest is flushed to the end (`commit_prepares`: `flush` steps until every
//! written prepare is durable with its ring copy). This module also
//! answers the ordering contract's question, "is what this message promises
//! durable?", from what its own completed writes made durable (never from
//! the replica's memory): a prepare written and not yet flushed is not.
//!
//! Generic over `Io`: the server runs it on the real disk, the simulator on
//! `SimDisk`, whose futures complete on first poll.
//!
//! # Damage beyond a file's own redundancy (`open_or_rejoin`)
//!
//! The superblock and the checkpoint each keep two copies, and the journal
//! two file-header copies; one damaged copy is survived locally. When every
//! copy is gone, the group's state on this replica is lost, but with 3 or
//! more replicas its peers hold it, so the replica must not refuse to start:
//! it formats the group's consensus files again (superblock, journal,
//! checkpoint; the partition log stays, it holds only committed messages and
//! every replayed one is compared with it) and starts *rejoining*
//! (`Replica::rejoin`'s protocol, README "rejoin"): it votes, acknowledges
//! and replies to nothing until it installed a start_view of a view at least
//! the newest a quorum of *other* replicas reports, then fetches the
//! checkpoint by state transfer and the ops above it by repair. Why this is
//! safe, per damage:
//!
//! - *Both superblock copies*: every promise of the group is lost (views
//!   voted for, the nack floor), exactly as with a wiped disk, and the wiped
//!   disk's argument holds: any view a quorum voted for (with this
//!   replica's lost vote or not) is reported by one of a quorum of other
//!   replicas, so the rejoiner never installs an older one; every committed
//!   op it may have acknowledged is at or below the highest head those
//!   answers report, which becomes its nack floor.
//! - *Both checkpoint copies* (or the journal file, or both its header
//!   copies) with a good superblock: the state is lost, the promises are
//!   not, and they are kept: the new superblock holds the old view,
//!   log_view, commit and nack floor (raised to the head the old view
//!   headers named, the newest op the lost journal may have acknowledged),
//!   so the rejoiner also never goes below a view it voted for.
//!
//! Crash safety of the format itself (story: sim `group_damage`, a crash
//! at every storage call of it): with a good superblock, its rejoining
//! state is written first, then the journal, then the checkpoint is
//! removed; a crash before the last step leaves a damaged checkpoint, or a
//! missing or half-created journal beside a rejoining superblock (a
//! rejoining group promised nothing its journal held), that the next start
//! finds and formats again, and once the rejoining superblock is durable no
//! start can vote. With a damaged
//! superblock, the journal and checkpoint go first and the superblock is
//! replaced last and atomically, so a crash before leaves the damaged
//! superblock to be found again. Operator errors (another cluster's files,
//! another version, a read error) are never taken for damage: they stop
//! the replica as before.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use shoal_vsr::checkpoint::CheckpointError;
use shoal_vsr::checkpoint::{self, checkpoint_path};
use shoal_vsr::header::{Command, Header};
use shoal_vsr::io::{Io, OpenMode};
use shoal_vsr::journal::{
    FlushInFlight, InstalledDrain, JournalConfig, JournalError, PrepareJournal, SettleFileError, SpareClear,
    SpareCleared, StagedDrain, journal_path,
};
use shoal_vsr::message::Message;
use shoal_vsr::replica::{Action, Checkpoint, Recovered};
use shoal_vsr::superblock::{Superblock, SuperblockError, SuperblockState, superblock_path};

/// `flush` steps that make a written prepare durable with its ring copy:
/// one for the prepare, one for the copy (see `PrepareJournal::flush`).
const PREPARE_FLUSHES_MAX: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("journal: {0}")]
    Journal(#[from] shoal_vsr::journal::JournalError),
    #[error("superblock: {0}")]
    Superblock(#[from] shoal_vsr::superblock::SuperblockError),
    #[error("{0}")]
    Checkpoint(#[from] shoal_vsr::checkpoint::CheckpointError),
    #[error(transparent)]
    Settle(#[from] SettleError),
    #[error(
        "group {namespace:#x} in {dir:?} has no superblock but holds {what}: it is not a new group; restore its \
         superblock or move the files aside, then restart the replica"
    )]
    NotNew { dir: PathBuf, namespace: u64, what: &'static str },
    #[error(
        "the journal just formatted does not read back empty (head {op_max:?}): check the disk, then restart the replica"
    )]
    FormattedNotEmpty { op_max: Option<u64> },
}

/// A start could not make a file it is about to trust durable.
#[derive(Debug, thiserror::Error)]
#[error(
    "settling {path:?} before trusting it: {operation} failed: {source}; what the start would read may be only in \
     the page cache, so it stops: check the disk, then restart the replica"
)]
pub struct SettleError {
    pub path: PathBuf,
    pub operation: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// The fewest replicas with which a group whose state this replica lost can
/// be rebuilt from peers: a rejoin needs a quorum of *other* replicas.
pub const REJOIN_REPLICAS_MIN: u8 = 3;
/// A quorum of `REJOIN_REPLICAS_MIN` replicas: the others (all but one)
/// must be at least that many.
const REJOIN_QUORUM: usize = REJOIN_REPLICAS_MIN as usize / 2 + 1;
const _: () = assert!(REJOIN_REPLICAS_MIN as usize > REJOIN_QUORUM);

/// Damage a group's storage could not survive locally (every copy of one of
/// its files): `open_or_rejoin` formats the group again and it rejoins.
#[derive(Debug, thiserror::Error)]
pub enum StorageDamage {
    #[error("both superblock copies are damaged, every promise of this group is lost: {0}")]
    Superblock(SuperblockError),
    #[error("both checkpoint copies are damaged (the superblock's promises are kept): {0}")]
    Checkpoint(CheckpointError),
    #[error("the journal is missing or both its header copies are damaged (the superblock's promises are kept): {0}")]
    Journal(JournalError),
}

impl StorageDamage {
    /// The damage `error` reports, if it is damage (`Err` gives it back).
    fn of(error: StorageError) -> Result<StorageDamage, StorageError> {
        match error {
            StorageError::Superblock(error @ SuperblockError::NoValidCopy) => Ok(StorageDamage::Superblock(error)),
            StorageError::Checkpoint(error @ CheckpointError::Corrupt { .. }) => Ok(StorageDamage::Checkpoint(error)),
            StorageError::Journal(error @ (JournalError::Missing { .. } | JournalError::FileHeaderCorrupt)) => {
                Ok(StorageDamage::Journal(error))
            }
            other => Err(other),
        }
    }

    /// The superblock survived: its promises are kept.
    pub fn keeps_promises(&self) -> bool {
        !matches!(self, StorageDamage::Superblock(_))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct StorageConfig {
    pub cluster: u128,
    pub namespace: u64,
    pub replica: u8,
    pub slot_count: u64,
    pub message_size_max_bytes: u32,
}

impl StorageConfig {
    pub fn journal(&self) -> JournalConfig {
        JournalConfig {
            slot_count: self.slot_count,
            message_size_max_bytes: self.message_size_max_bytes,
            cluster: self.cluster,
            namespace: self.namespace,
        }
    }
}

/// What an outgoing message promises is durable on the sender's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promise {
    /// A start_view_change: the durable view is at least `view`.
    View { view: u64 },
    /// A do_view_change (`log_view` from its context) or a start_view
    /// (`log_view == view`): the durable view and log_view are at least these.
    ViewAndLogView { view: u64, log_view: u64 },
    /// A prepare_ok: the prepare `op` with `checksum` survives a crash, and
    /// so does every op from `prefix_from` (the sender's commit point + 1)
    /// below it: a backup acknowledges the whole prefix, and the journal's
    /// gap rule relies on it (`PrepareJournal::open_above`).
    Prepare { op: u64, checksum: u128, prefix_from: u64 },
}
// A client reply promises nothing of the sender's own disk: it answers a
// committed op, durable on a quorum by the prepare_oks that committed it
// (each left its backup only once that prepare was durable there, which
// this contract asserts on the backup; the primary counts its own vote only
// once durable). Waiting for the primary's own fsync as well added its tail
// to every reply and no safety: with 3 replicas, the worst traced append
// waited 315 ms on it while both backups had answered by 146 ms (README,
// session 12). The simulator's AckedWritesDurable checker holds every
// accepted reply to the committed log.

impl Promise {
    /// The promise `header` makes, if its command makes one.
    pub fn of(header: &Header) -> Option<Promise> {
        match header.command {
            Command::StartViewChange => Some(Promise::View { view: header.view }),
            Command::StartView => Some(Promise::ViewAndLogView { view: header.view, log_view: header.view }),
            Command::DoViewChange => Some(Promise::ViewAndLogView { view: header.view, log_view: header.context }),
            // A prepare_ok carries the prepare's checksum in `parent`.
            Command::PrepareOk => {
                Some(Promise::Prepare { op: header.op, checksum: header.parent, prefix_from: header.commit + 1 })
            }
            _ => None,
        }
    }
}

pub struct GroupStorage<I: Io> {
    io: I,
    dir: PathBuf,
    config: StorageConfig,
    journal: PrepareJournal<I>,
    superblock: Superblock<I>,
    /// The prepares this storage knows are durable above the snapshot, by
    /// op: read back valid at open (after the journal synced itself), or
    /// written and fsynced since; dropped by a truncation or a drain. Kept
    /// here rather than read from the journal's index: the ordering contract
    /// is about what reached the disk, whatever the index makes of it.
    durable_prepares: BTreeMap<u64, u128>,
    /// Ops written to the journal and not yet durable with their ring copy,
    /// with the checksum of the last write: nothing may promise them until
    /// `flush_prepares` reports them.
    unsynced_ops: BTreeMap<u64, u128>,
    /// Every op from the journal's snapshot up to this one was durable when
    /// `check_below_prefix_durable` last looked, and nothing since made one
    /// of them not durable (a write lowers it, a truncation too): the check
    /// resumes above it, so an ok costs O(1) amortised, not a walk of the
    /// window.
    durable_through_hint: std::cell::Cell<u64>,
    /// Ops staged and not written yet (`stage_prepare` .. `write_staged`).
    /// With a flush's fsync in flight, the replica may stage a new write of
    /// an op that flush will report: the report is of the old write, and
    /// must not make the staged one count as durable.
    staged_unwritten: std::collections::BTreeSet<u64>,
    /// The op of the last checkpoint known durable whose compaction was
    /// staged (`stage_compaction`): until its install ends the journal still
    /// starts below it, but the checkpoint vouches for every op it covers.
    checkpoint_durable_op: u64,
}

impl<I: Io> std::fmt::Debug for GroupStorage<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupStorage")
            .field("dir", &self.dir)
            .field("namespace", &self.config.namespace)
            .field("snapshot_op", &self.journal.snapshot_op())
            .field("op_max", &self.journal.op_max())
            .finish()
    }
}

impl<I: Io> GroupStorage<I> {
    /// Storage over a journal and superblock just opened or formatted, with
    /// nothing written through it yet (an open then records what the
    /// journal holds durable).
    fn new(io: &I, dir: &Path, config: StorageConfig, journal: PrepareJournal<I>, superblock: Superblock<I>) -> Self {
        GroupStorage {
            io: io.clone(),
            dir: dir.to_path_buf(),
            config,
            journal,
            superblock,
            durable_prepares: BTreeMap::new(),
            unsynced_ops: BTreeMap::new(),
            durable_through_hint: std::cell::Cell::new(0),
            staged_unwritten: std::collections::BTreeSet::new(),
            checkpoint_durable_op: 0,
        }
    }

    /// Format a new replica's group storage in `dir` (a new cluster, or a
    /// group created since the last start).
    ///
    /// Crash-safe at every storage call, and safe to run again over what a
    /// crashed one left (the next start finds no superblock and formats
    /// again): a new, empty journal first, then the superblock, created
    /// atomically last (tmp, rename, fsync dir), so until it is durable the
    /// group reads as never formatted. Creating the journal, then the
    /// superblock in place, wedged a new cluster whose replicas crashed in
    /// between: the retry could not create the journal again ("already
    /// exists"), and a superblock file created but not yet written read as
    /// two damaged copies. What a format leaves before its superblock (an
    /// empty or half-created journal) is replaced; a journal with prepares
    /// or a snapshot, a checkpoint, or a superblock are never formatted
    /// over (`NotNew`).
    pub async fn format(io: &I, dir: &Path, config: StorageConfig) -> Result<GroupStorage<I>, StorageError> {
        create_group_dir(io, dir).await?;
        GroupStorage::check_new(io, dir, config).await?;
        GroupStorage::write_fresh(io, dir, config, SuperblockState::default()).await
    }

    /// The group's consensus files made anew in `dir` (which exists), in the
    /// crash-safe order of `format` and `format_rejoining`: an empty journal
    /// and no checkpoint first, then the superblock holding `state`, created
    /// atomically last.
    async fn write_fresh(
        io: &I,
        dir: &Path,
        config: StorageConfig,
        state: SuperblockState,
    ) -> Result<GroupStorage<I>, StorageError> {
        let journal = GroupStorage::reset_journal_and_checkpoint(io, dir, config).await?;
        let superblock = Superblock::replace(io, dir, config.cluster, config.namespace, config.replica, state).await?;
        Ok(GroupStorage::new(io, dir, config, journal, superblock))
    }

    /// A journal just formatted reads back empty; only a read error (or a
    /// write that went elsewhere) makes a new journal look otherwise. A
    /// rejoiner that started over a journal reading back prepares it never
    /// wrote would serve them after its next restart.
    ///
    /// Read-only, on what reads see: `create` fsynced every byte it wrote
    /// in this process, so the page cache holds what the device holds, and
    /// the journal `create` returned is used as it is (a writable open here
    /// cost two full recovery passes, the second from the device, for every
    /// new group: 80-140 ms per 64 KiB-slot partition journal, `shoal-bench
    /// open`).
    async fn check_formatted_empty(io: &I, dir: &Path, config: StorageConfig) -> Result<(), StorageError> {
        let (journal, _recovery) = PrepareJournal::open(io, dir, config.journal(), OpenMode::ReadOnly).await?;
        if journal.op_max().is_some() || journal.snapshot_op() != 0 {
            return Err(StorageError::FormattedNotEmpty { op_max: journal.op_max() });
        }
        Ok(())
    }

    /// `dir` holds nothing of the group but what a format cut short leaves
    /// before its superblock: no superblock, no checkpoint, and a journal
    /// that is missing, empty, or never fully created.
    async fn check_new(io: &I, dir: &Path, config: StorageConfig) -> Result<(), StorageError> {
        let superblock = superblock_path(dir, config.namespace);
        match io.open(&superblock, OpenMode::ReadOnly).await {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Ok(_) => return Err(SuperblockError::AlreadyExists { path: superblock }.into()),
            Err(source) => return Err(SuperblockError::Io { operation: "open", source }.into()),
        }
        let not_new = |what| StorageError::NotNew { dir: dir.to_path_buf(), namespace: config.namespace, what };
        match checkpoint::read_checkpoint(io, dir, config.namespace).await {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return Err(not_new("a checkpoint")),
        }
        match PrepareJournal::open(io, dir, config.journal(), OpenMode::ReadOnly).await {
            Err(JournalError::Missing { .. } | JournalError::ZeroFilled | JournalError::Truncated { .. }) => Ok(()),
            Ok((journal, _)) if journal.op_max().is_none() && journal.snapshot_op() == 0 => Ok(()),
            Ok(_) => Err(not_new("a journal with prepares")),
            Err(error) => Err(error.into()),
        }
    }

    /// Format a replica's storage again after its disk was lost, for a
    /// cluster that already exists: the replica must rejoin before it votes.
    ///
    /// Crash-safe at every storage call, and safe to run again after one
    /// (the operator's retry): a new journal and no checkpoint first, then
    /// the superblock, created already rejoining and atomically (tmp, rename,
    /// fsync dir). Until it is durable a start finds no superblock (the
    /// group is not formatted: the start fails); after, it rejoins. Creating
    /// the superblock first and marking it rejoining after left a voter of
    /// view 0 on a crash in between (`sim/tests/it/group_damage.rs`).
    pub async fn format_rejoining(io: &I, dir: &Path, config: StorageConfig) -> Result<GroupStorage<I>, StorageError> {
        create_group_dir(io, dir).await?;
        let state = SuperblockState { rejoining: true, ..SuperblockState::default() };
        GroupStorage::write_fresh(io, dir, config, state).await
    }

    /// Open after a crash: what the disk kept, as the replica needs it.
    pub async fn open(io: &I, dir: &Path, config: StorageConfig) -> Result<(GroupStorage<I>, Recovered), StorageError> {
        GroupStorage::open_inner(io, dir, config, true).await
    }

    /// Open after a crash as `open` does; but if a file of the group lost
    /// every copy (`StorageDamage`) and the cluster has at least
    /// `REJOIN_REPLICAS_MIN` replicas, format the group again, rejoining,
    /// and return the damage with it (module doc: why this is safe). The
    /// `Recovered` then holds the promises kept, `rejoining`, and nothing
    /// else: `Replica::open` starts it `Recovering`. With fewer replicas
    /// nobody could give the state back: the damage is the error.
    pub async fn open_or_rejoin(
        io: &I,
        dir: &Path,
        config: StorageConfig,
        replica_count: u8,
    ) -> Result<(GroupStorage<I>, Recovered, Option<StorageDamage>), StorageError> {
        let error = match GroupStorage::open(io, dir, config).await {
            Ok((storage, recovered)) => return Ok((storage, recovered, None)),
            Err(error) => error,
        };
        let damage = match StorageDamage::of(error) {
            Ok(damage) => damage,
            // A journal that a format for a rejoin began and a crash cut
            // short: a rejoining group promised nothing its journal held.
            Err(StorageError::Journal(error @ (JournalError::Truncated { .. } | JournalError::ZeroFilled)))
                if superblock_rejoining(io, dir, config).await =>
            {
                StorageDamage::Journal(error)
            }
            Err(error) => return Err(error),
        };
        if replica_count < REJOIN_REPLICAS_MIN {
            return Err(match damage {
                StorageDamage::Superblock(error) => error.into(),
                StorageDamage::Checkpoint(error) => error.into(),
                StorageDamage::Journal(error) => error.into(),
            });
        }
        tracing::error!(
            namespace = format_args!("{:#x}", config.namespace),
            replica = config.replica,
            "{damage}: formatting the group again; it rejoins and rebuilds from its peers"
        );
        let storage = GroupStorage::format_after_damage(io, dir, config, &damage).await?;
        shoal_vsr::marks::hit(if damage.keeps_promises() {
            shoal_vsr::marks::CHECKPOINT_LOST_REJOINED
        } else {
            shoal_vsr::marks::SUPERBLOCK_LOST_REJOINED
        });
        let state = storage.superblock.state().clone();
        assert!(state.rejoining && state.view_headers.is_empty(), "a formatted group rejoins with an empty log");
        let recovered = Recovered {
            durable: state.into(),
            checkpoint: None,
            entries: Vec::new(),
            faulty_ops: Vec::new(),
            faulty_headers: Vec::new(),
        };
        Ok((storage, recovered, Some(damage)))
    }

    /// Format the group's consensus files again after `damage`, rejoining,
    /// in the crash-safe order of the module doc.
    async fn format_after_damage(
        io: &I,
        dir: &Path,
        config: StorageConfig,
        damage: &StorageDamage,
    ) -> Result<GroupStorage<I>, StorageError> {
        if !damage.keeps_promises() {
            // The superblock is lost: made anew last, atomically; until it
            // is durable, the damaged one makes the next start format again.
            let state = SuperblockState { rejoining: true, ..SuperblockState::default() };
            return GroupStorage::write_fresh(io, dir, config, state).await;
        }
        let mut superblock =
            Superblock::open(io, dir, config.cluster, config.namespace, config.replica, OpenMode::ReadWrite).await?;
        let old = superblock.state().clone();
        // The lost journal may have acknowledged up to the head its log's
        // view headers named: nothing there may be nacked.
        let named_op_max = old.view_headers.iter().map(|header| header.op).max().unwrap_or(0);
        let state = SuperblockState {
            view_headers: Vec::new(),
            rejoining: true,
            nack_floor: old.nack_floor.max(named_op_max),
            ..old
        };
        // First: from here on no start of this replica can vote.
        superblock.write(state).await?;
        let journal = GroupStorage::reset_journal_and_checkpoint(io, dir, config).await?;
        Ok(GroupStorage::new(io, dir, config, journal, superblock))
    }

    /// A new, empty journal, then no checkpoint (in this order: a crash in
    /// between leaves the damaged checkpoint, which is found again; the
    /// other order would leave a drained journal with no checkpoint under
    /// it). Each step durable before the next; then the journal must read
    /// back empty (`check_formatted_empty`), before any superblock names
    /// it. Returns the journal `create` made, ready to write.
    async fn reset_journal_and_checkpoint(
        io: &I,
        dir: &Path,
        config: StorageConfig,
    ) -> Result<PrepareJournal<I>, StorageError> {
        let sync_dir = |operation: &'static str| async move {
            io.sync_dir(dir).await.map_err(|source| JournalError::Io { operation, source })
        };
        remove_if_present(io, &journal_path(dir, config.namespace))
            .await
            .map_err(|source| JournalError::Io { operation: "remove damaged", source })?;
        sync_dir("fsync dir after remove").await?;
        let journal = PrepareJournal::create(io, dir, config.journal()).await?;
        sync_dir("fsync dir after create").await?;
        remove_if_present(io, &checkpoint_path(dir, config.namespace))
            .await
            .map_err(|source| CheckpointError::Io { operation: "remove damaged", source })?;
        io.sync_dir(dir).await.map_err(|source| CheckpointError::Io { operation: "fsync dir", source })?;
        GroupStorage::check_formatted_empty(io, dir, config).await?;
        Ok(journal)
    }

    /// Open to look (a tool, or the simulator's fault injector picking a
    /// slot): no drain is finished here, so the restart that follows sees
    /// what it left out.
    pub async fn open_to_inspect(
        io: &I,
        dir: &Path,
        config: StorageConfig,
    ) -> Result<(GroupStorage<I>, Recovered), StorageError> {
        GroupStorage::open_inner(io, dir, config, false).await
    }

    async fn open_inner(
        io: &I,
        dir: &Path,
        config: StorageConfig,
        settle: bool,
    ) -> Result<(GroupStorage<I>, Recovered), StorageError> {
        settle_group_files(io, dir, config.namespace).await?;
        let superblock =
            Superblock::open(io, dir, config.cluster, config.namespace, config.replica, OpenMode::ReadWrite).await?;
        // What the superblock names bounds what this replica may have
        // acknowledged without a gap below it (journal doc, "An unknown
        // slot beyond a gap"), and so does a durable checkpoint: it covers
        // every op up to its anchor. A checkpoint restored from a peer
        // leaves the journal without those ops, and a prepare written above
        // it before the compaction is no prepare above a hole
        // (disk-rot-sharded seed 4747: op 5, whose ring copy's write went
        // elsewhere, sat above a journal that skipped 1..=4 under a durable
        // checkpoint at 4; recovery cut it as an uncopied tail and lost a
        // prepare the replica had acknowledged).
        let checkpoint = checkpoint::read_checkpoint(io, dir, config.namespace).await?;
        let state = superblock.state();
        let durable_log_op_max = state
            .view_headers
            .iter()
            .map(|header| header.op)
            .chain([state.commit])
            .chain(checkpoint.as_ref().map(|checkpoint| checkpoint.anchor.op))
            .max()
            .unwrap_or(0);
        let (mut journal, _recovery) =
            PrepareJournal::open_above(io, dir, config.journal(), OpenMode::ReadWrite, durable_log_op_max).await?;
        // A checkpoint durable past the journal's snapshot: finish the drain
        // that failed, and remember what it had to leave out as faulty.
        let mut faulty_ops = Vec::new();
        if let Some(checkpoint) = checkpoint.as_ref().filter(|_| settle) {
            faulty_ops = journal.settle_to_checkpoint(checkpoint.anchor.op, checkpoint.anchor.checksum).await?;
        }
        let scan = journal.scan().await?;
        faulty_ops.extend(scan.corrupt_ops);
        faulty_ops.sort_unstable();
        faulty_ops.dedup();
        // A header is kept only for an op still faulty after the settle.
        let faulty_headers =
            scan.corrupt_headers.into_iter().filter(|header| faulty_ops.binary_search(&header.op).is_ok()).collect();
        let recovered = Recovered {
            durable: superblock.state().clone().into(),
            checkpoint,
            entries: scan.entries,
            faulty_ops,
            faulty_headers,
        };
        let durable_prepares = recovered.entries.iter().map(|(header, _)| (header.op, header.checksum)).collect();
        let storage = GroupStorage { durable_prepares, ..GroupStorage::new(io, dir, config, journal, superblock) };
        Ok((storage, recovered))
    }

    pub fn journal(&self) -> &PrepareJournal<I> {
        &self.journal
    }

    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    /// Run one storage action to durability. Messages are not storage: the
    /// caller sends them.
    pub async fn execute(&mut self, action: &Action) -> Result<(), StorageError> {
        match action {
            Action::WritePrepare { message } => {
                self.write_prepare(message).await?;
                let durable = self.flush_prepares().await?;
                debug_assert!(durable.iter().any(|(op, _)| *op == message.header.op));
            }
            Action::TruncateLog { after_op } => {
                let after = (*after_op).max(self.journal.snapshot_op());
                // Forgotten before the truncation runs: a failed one may
                // have cleared some of the slots already.
                self.durable_prepares.retain(|op, _| *op <= after);
                self.unsynced_ops.retain(|op, _| *op <= after);
                self.lower_durable_through_hint(after);
                self.staged_unwritten.retain(|op| *op <= after);
                self.journal.truncate_after(after).await?;
            }
            Action::WriteSuperblock { state } => {
                let state = SuperblockState::from(state.clone());
                self.superblock.write(state).await?;
            }
            // The node's order, one step after the other (the node runs the
            // file's half beside itself and the partition log's sync).
            Action::Checkpoint { checkpoint } => {
                self.checkpoint_file_stager(checkpoint).await?;
                self.checkpoint_file_installer().await?;
                self.drain_to_checkpoint(checkpoint).await?;
            }
            Action::Send { .. } | Action::Reply { .. } => {
                unreachable!("a message is sent by the driver, not written by storage")
            }
        }
        Ok(())
    }

    /// A checkpoint's own file, off the commit path: written and fsynced in
    /// its tmp file by a future that borrows nothing of the storage, so it
    /// runs beside the node while the group goes on appending to the
    /// journal; `checkpoint_file_installer` then makes it the checkpoint.
    pub fn checkpoint_file_stager(
        &self,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<(), StorageError>> + 'static + use<I> {
        let (io, dir, namespace) = (self.io.clone(), self.dir.clone(), self.config.namespace);
        let checkpoint = checkpoint.clone();
        async move { Ok(checkpoint::stage_checkpoint(&io, &dir, namespace, &checkpoint).await?) }
    }

    /// The staged checkpoint file installed (rename, directory fsync), by a
    /// future that borrows nothing of the storage. Started only once the
    /// partition log holds every offset the checkpoint counts durably. The
    /// journal keeps the ops the checkpoint covers until
    /// `drain_to_checkpoint`; a restart in between finishes that drain from
    /// the durable checkpoint (`settle_to_checkpoint`), as after a crash
    /// between the two halves of `install_checkpoint`.
    pub fn checkpoint_file_installer(&self) -> impl Future<Output = Result<(), StorageError>> + 'static + use<I> {
        let (io, dir, namespace) = (self.io.clone(), self.dir.clone(), self.config.namespace);
        async move { Ok(checkpoint::install_staged_checkpoint(&io, &dir, namespace).await?) }
    }

    /// The second half of a checkpoint whose file `checkpoint_file_installer`
    /// made durable: the journal compacted to it (spare written and
    /// fsynced, then exchanged in) and the ops it covers forgotten, in a
    /// row. The node runs the same in two halves with its appends between
    /// (`stage_compaction`, `StagedDrain::install`, `end_compaction`).
    pub async fn drain_to_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), StorageError> {
        if let Some(staged) = self.stage_compaction(checkpoint).await? {
            let installed = staged.install().await;
            let released = self.end_compaction(checkpoint, installed)?;
            debug_assert!(released.is_empty(), "nothing is flushed between the halves of a drain");
        }
        Ok(())
    }

    /// The clear of the journal's spare, to run beside the node before the
    /// next compaction, when the spare is untrusted (after every start);
    /// `end_spare_clear` takes its outcome before any stage
    /// (`PrepareJournal::spare_clearer`).
    pub fn spare_clearer(&mut self) -> Option<SpareClear<I>> {
        self.journal.spare_clearer()
    }

    /// A `spare_clearer`'s clear ended (`PrepareJournal::end_spare_clear`).
    pub fn end_spare_clear(&mut self, cleared: &SpareCleared) {
        self.journal.end_spare_clear(cleared);
    }

    /// The journal's compaction to the durable `checkpoint`, first half:
    /// the spare written (page cache only) and the journal's file from now
    /// on (what its flushes make durable waits for `end_compaction`). `None`: nothing to compact (the ops it covers are
    /// forgotten at once then).
    pub async fn stage_compaction(&mut self, checkpoint: &Checkpoint) -> Result<Option<StagedDrain<I>>, StorageError> {
        let (op, checksum) = (checkpoint.anchor.op, checkpoint.anchor.checksum);
        let staged = self.journal.stage_drain_to(op, checksum).await?;
        self.checkpoint_durable_op = self.checkpoint_durable_op.max(op);
        if staged.is_none() {
            self.forget_prepares_under_checkpoint(op);
        }
        Ok(staged)
    }

    /// The compaction's install ended (`StagedDrain::install`): on success
    /// the spare is the journal, which forgets the ops `checkpoint` covers,
    /// and the prepares its window's flushes made durable may be promised:
    /// returned as `(op, checksum)`, ascending (as `end_flush` reports).
    ///
    /// A prepare of an op the checkpoint covers that was written or staged
    /// meanwhile (a backup's write the commit overtook, a repair under a
    /// restored checkpoint) is no longer the journal's: the checkpoint
    /// vouches for its op, no flush reports it, and the node drops it
    /// (`Node::finish_compaction`).
    pub fn end_compaction(
        &mut self,
        checkpoint: &Checkpoint,
        installed: InstalledDrain,
    ) -> Result<Vec<(u64, u128)>, StorageError> {
        let released = self.journal.end_drain(installed)?;
        let op = checkpoint.anchor.op;
        self.forget_prepares_under_checkpoint(op);
        self.unsynced_ops.retain(|unsynced, _| *unsynced > op);
        self.staged_unwritten.retain(|staged| *staged > op);
        debug_assert!(self.journal.snapshot_op() == op, "the compaction moved the journal to its checkpoint");
        Ok(self.report_durable(released))
    }

    /// The journal reported `ops` durable with their copy: those still
    /// unsynced in the version last written become durable, `(op,
    /// checksum)` ascending. An op staged again since and not yet written
    /// is not among them: what is durable is its old write, which no
    /// message may promise any more.
    fn report_durable(&mut self, ops: Vec<u64>) -> Vec<(u64, u128)> {
        let mut durable = Vec::new();
        for op in ops {
            if self.staged_unwritten.contains(&op) {
                shoal_vsr::marks::hit(shoal_vsr::marks::PREPARE_RESTAGED_DURING_FSYNC);
                continue;
            }
            if let Some(checksum) = self.unsynced_ops.remove(&op) {
                self.durable_prepares.insert(op, checksum);
                durable.push((op, checksum));
            }
        }
        durable.sort_unstable();
        durable
    }

    /// A compaction's window holds `op`: a flush made it durable in the
    /// spare alone, and it may be promised once the install ended.
    pub fn held_for_install(&self, op: u64) -> bool {
        self.journal.held_for_install(op)
    }

    /// The checkpoint at `op` is durable and the journal starts from it: it
    /// vouches for the ops it covers now (see `check_durable`).
    fn forget_prepares_under_checkpoint(&mut self, op: u64) {
        self.durable_prepares.retain(|durable, _| *durable > op);
    }

    /// Write a prepare into its slot, not yet durable: nothing may promise
    /// it until `flush_prepares` reports it.
    pub async fn write_prepare(&mut self, message: &Message) -> Result<(), StorageError> {
        self.stage_prepare(&message.header);
        self.write_staged(&[message]).await
    }

    /// Group commit, first half: `header`'s prepare will be written by the
    /// next `commit_prepares` and is from now on not durable (whatever its
    /// slot held is no longer promised, even if that write fails half way):
    /// nothing may promise it until the commit reports it.
    pub fn stage_prepare(&mut self, header: &Header) {
        self.lower_durable_through_hint(header.op.saturating_sub(1));
        self.durable_prepares.remove(&header.op);
        self.unsynced_ops.insert(header.op, header.checksum);
        self.staged_unwritten.insert(header.op);
    }

    /// Group commit, second half: write the staged prepares `messages` (in
    /// the order the replica asked; a later write of an op replaces an
    /// earlier one, as on the disk), each run of adjacent slots with one
    /// write, then flush until every prepare written so far is durable
    /// with its ring copy (`flush_prepares`: two fdatasyncs when anything
    /// new was written). Returns the prepares now durable with their copy,
    /// `(op, checksum)` ascending.
    pub async fn commit_prepares(&mut self, messages: &[&Message]) -> Result<Vec<(u64, u128)>, StorageError> {
        self.write_staged(messages).await?;
        self.flush_prepares().await
    }

    /// Write staged prepares: the last write of each op, ascending, with
    /// the journal's `write_prepares` (one write per run of adjacent slots).
    async fn write_staged(&mut self, messages: &[&Message]) -> Result<(), StorageError> {
        let mut last_write: BTreeMap<u64, &Message> = BTreeMap::new();
        for message in messages {
            last_write.insert(message.header.op, message);
        }
        for (op, message) in &last_write {
            let staged = self.unsynced_ops.get(op).copied();
            assert_eq!(
                staged,
                Some(message.header.checksum),
                "op {op} is staged as its last write before it is written"
            );
        }
        let messages: Vec<&Message> = last_write.values().copied().collect();
        // Written from here, even if the write fails half way (the node
        // stops then).
        for op in last_write.keys() {
            self.staged_unwritten.remove(op);
        }
        self.journal.write_messages(&messages).await?;
        Ok(())
    }

    /// Prepares written and not yet durable.
    pub fn unsynced_count(&self) -> usize {
        self.unsynced_ops.len()
    }

    /// Group commit: make every prepare written so far durable with its
    /// ring copy, with the journal's `flush` (one fdatasync each): the first
    /// makes the prepares durable, the second their ring copies (a copy is
    /// never durable before its prepare). Returns the prepares now durable,
    /// `(op, checksum)` ascending. A failure poisons the journal: the
    /// replica must stop.
    pub async fn flush_prepares(&mut self) -> Result<Vec<(u64, u128)>, StorageError> {
        let mut durable = Vec::new();
        for _ in 0..PREPARE_FLUSHES_MAX {
            if self.unsynced_ops.is_empty() {
                break;
            }
            durable.extend(self.flush_once().await?);
        }
        assert!(self.unsynced_ops.is_empty(), "{PREPARE_FLUSHES_MAX} flushes make every written prepare durable");
        durable.sort_unstable();
        Ok(durable)
    }

    /// One journal flush (one fdatasync): the prepares whose ring copy it
    /// made durable become durable here; those it made durable without
    /// their copy stay unsynced (nothing may promise them yet: a crash now
    /// leaves a prepare without its copy, which recovery may still take
    /// for torn). Returns the prepares now durable, ascending.
    async fn flush_once(&mut self) -> Result<Vec<(u64, u128)>, StorageError> {
        if self.unsynced_ops.is_empty() {
            return Ok(Vec::new());
        }
        let in_flight = self.journal.flush_begin().await?;
        let synced = in_flight.syncer().await;
        self.end_flush(in_flight, synced)
    }

    /// Group commit with the fsync overlapped (the node keeps handling
    /// frames while it runs): write the staged prepares `messages` as
    /// `commit_prepares` does, and the ring copies of those the previous
    /// flush made durable, then hand back the fsync to run. Until
    /// `end_flush` nothing else may change the journal (it asserts so);
    /// staging more prepares is fine (they are written by the next flush).
    pub async fn begin_flush(&mut self, messages: &[&Message]) -> Result<FlushInFlight<I::File>, StorageError> {
        self.write_staged(messages).await?;
        Ok(self.journal.flush_begin().await?)
    }

    /// The fsync of `begin_flush` ended with `synced`: the prepares it made
    /// durable with their ring copy, `(op, checksum)` ascending (as one
    /// flush of `flush_prepares`). An op staged again since and
    /// not yet written is not among them: the fsync made its old write
    /// durable, which no message may promise any more.
    pub fn end_flush(
        &mut self,
        in_flight: FlushInFlight<I::File>,
        synced: std::io::Result<()>,
    ) -> Result<Vec<(u64, u128)>, StorageError> {
        let ops = self.journal.flush_end(in_flight, synced)?;
        Ok(self.report_durable(ops))
    }

    /// A flush's fsync is running (`begin_flush` .. `end_flush`).
    pub fn flush_in_flight(&self) -> bool {
        self.journal.flush_in_flight()
    }

    /// The checksum of `op`'s last write while it is written and not yet
    /// durable with its ring copy.
    pub fn unsynced_checksum(&self, op: u64) -> Option<u128> {
        self.unsynced_ops.get(&op).copied()
    }

    /// Is `promise` durable, as far as this storage's own completed writes
    /// know? `Err` says what is missing. The superblock's state changes only
    /// once its write is fsynced, and a journal op counts only once synced.
    pub fn check_durable(&self, promise: Promise) -> Result<(), String> {
        let state = self.superblock.state();
        let prepare_durable = |op: u64| -> Option<u128> {
            if self.unsynced_ops.contains_key(&op) {
                return None;
            }
            self.durable_prepares.get(&op).copied()
        };
        match promise {
            Promise::View { view } if state.view >= view => Ok(()),
            Promise::View { view } => Err(format!("durable view is {}, the message promises view {view}", state.view)),
            Promise::ViewAndLogView { view, log_view } if state.view >= view && state.log_view >= log_view => Ok(()),
            Promise::ViewAndLogView { view, log_view } => Err(format!(
                "durable view/log_view are {}/{}, the message promises {view}/{log_view}",
                state.view, state.log_view
            )),
            // A checkpoint that covers the op vouches for it too.
            Promise::Prepare { op, .. } if op <= self.covered_op() => Ok(()),
            Promise::Prepare { op, checksum, prefix_from } => match prepare_durable(op) {
                Some(durable) if durable != checksum => {
                    Err(format!("the durable prepare at op {op} has another checksum"))
                }
                None => Err(format!("prepare op {op} is not durable in the journal")),
                // An ok of an op at or below the sender's commit point (telling
                // a new primary it is committed) has no prefix.
                Some(_) => match self.unsynced_ops.range(prefix_from.min(op)..op).next() {
                    Some((below, _)) => {
                        Err(format!("op {below}, below prepare op {op} in its prefix, is not durable yet"))
                    }
                    None if prefix_from <= op => self.check_below_prefix_durable(prefix_from),
                    None => Ok(()),
                },
            },
        }
    }

    /// Under an ok with a prefix, the sender's committed ops (below
    /// `prefix_from`) are durable too: in the journal, or under the
    /// checkpoint the journal starts from. A replica's commit may run ahead
    /// of both only through a checkpoint restored from a peer that is not
    /// durable yet; an ok sent then promised ops a crash takes back (disk-rot
    /// 224701, session 16: op 17 acknowledged above a restored checkpoint
    /// whose install then failed, and committed with another body in the
    /// next view).
    fn check_below_prefix_durable(&self, prefix_from: u64) -> Result<(), String> {
        let first = self.covered_op() + 1;
        let not_durable = |op: &u64| self.unsynced_ops.contains_key(op) || !self.durable_prepares.contains_key(op);
        let resume = self.durable_through_hint.get().max(first - 1) + 1;
        debug_assert_eq!((first..resume).find(not_durable), None, "the hint vouches only for durable ops");
        // Bounded by the window: each step is a distinct live op.
        for op in resume..prefix_from {
            if not_durable(&op) {
                return Err(format!(
                    "op {op}, below the prefix from op {prefix_from}, is neither durable in the journal nor under \
                     its checkpoint (op {})",
                    first - 1
                ));
            }
            self.durable_through_hint.set(op);
        }
        Ok(())
    }

    /// Every op up to here is under a durable checkpoint: the journal's
    /// snapshot, or the checkpoint a staged compaction moves it to.
    fn covered_op(&self) -> u64 {
        self.journal.snapshot_op().max(self.checkpoint_durable_op)
    }

    fn lower_durable_through_hint(&self, op: u64) {
        self.durable_through_hint.set(self.durable_through_hint.get().min(op));
    }
}

/// Create the dir a format writes the group's files into (the data dir),
/// durable in its parent before any file in it is: a dir entry only in the
/// page cache takes every file under it at the next power loss, the
/// superblock and journal included, synced or not. Before SimDisk modelled
/// directory entries, every format left the data dir so, and every power
/// loss would have wiped the replica (crash-loop seed 0, Agreement: a
/// replica restarted with an empty log, formatted its groups as new and
/// offered a canonical log ending at op 0 below its own commit 103).
async fn create_group_dir<I: Io>(io: &I, dir: &Path) -> Result<(), StorageError> {
    shoal_vsr::io::create_dir_durable(io, dir)
        .await
        .map_err(|source| JournalError::Io { operation: "create dir durably", source }.into())
}

/// The group's superblock reads and says it is rejoining.
async fn superblock_rejoining<I: Io>(io: &I, dir: &Path, config: StorageConfig) -> bool {
    let opened = Superblock::open(io, dir, config.cluster, config.namespace, config.replica, OpenMode::ReadOnly).await;
    opened.is_ok_and(|superblock| superblock.state().rejoining)
}

async fn remove_if_present<I: Io>(io: &I, path: &Path) -> std::io::Result<()> {
    match io.remove(path).await {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

/// Recovery never trusts the page cache: after a process crash the
/// superblock and checkpoint files may read back state a failed fsync never
/// made durable (Linux marks those pages clean), and a replica that acted on
/// it would forget it at the next power loss (a vote for a view it no longer
/// knows). Settle the group's own small files first; the journal settles
/// itself, and other groups' files are settled when those groups open (so
/// opening N groups settles each file once, not N times). A file that cannot
/// be read (missing on a first start, or a read error) is left to its own
/// open, which reports it. A write-back or fsync that failed stops the
/// start (`SettleError`): the bytes open would read may live only in the
/// page cache. The metadata handoff settles with this too.
pub async fn settle_group_files<I: Io>(io: &I, dir: &Path, namespace: u64) -> Result<(), SettleError> {
    for path in [superblock_path(dir, namespace), checkpoint_path(dir, namespace)] {
        match shoal_vsr::journal::settle_file(io, &path).await {
            Ok(()) | Err(SettleFileError::Unreadable { .. }) => {}
            Err(SettleFileError::NotDurable { operation, source }) => {
                return Err(SettleError { path, operation, source });
            }
        }
    }
    match io.sync_dir(dir).await {
        // A first start: nothing to settle yet.
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SettleError { path: dir.to_path_buf(), operation: "fsync dir", source }),
        Ok(()) => Ok(()),
    }
}
