//! One group's storage on one replica: its journal, superblock and
//! checkpoint file in the data dir, and the execution of the replica's
//! storage actions against them.
//!
//! Every storage action is durable (written and fsynced) before `execute`
//! returns; an error means the replica must stop (fail-stop) and restart
//! from what the disk kept. For group commit, prepares are instead staged
//! as the replica asks (`stage_prepare`: from then on nothing promises
//! them), then written together, each run of adjacent slots with one write,
//! and made durable together (`commit_prepares`: the journal's
//! `write_prepares`, then its `flush` steps, one fdatasync each, until
//! every written prepare is durable with its ring copy). This module also
//! answers the ordering contract's question, "is what this message promises
//! durable?", from what its own completed writes made durable (never from
//! the replica's memory): a prepare written and not yet flushed is not.
//!
//! Generic over `Io`: the server runs it on the real disk, the simulator on
//! `SimDisk`, whose futures complete on first poll.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shoal_vsr::checkpoint::{self, checkpoint_path};
use shoal_vsr::header::{Command, Header};
use shoal_vsr::io::{Io, OpenMode};
use shoal_vsr::journal::{JournalConfig, PrepareJournal};
use shoal_vsr::message::Message;
use shoal_vsr::replica::{Action, Recovered};
use shoal_vsr::superblock::{Superblock, SuperblockState, superblock_path};

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
    /// A prepare_ok: the prepare `op` with `checksum` survives a crash.
    Prepare { op: u64, checksum: u128 },
    /// A client reply: the op it answers is durable here (in the journal or
    /// under the checkpoint), so a restart cannot take back what it told.
    Reply { op: u64 },
}

impl Promise {
    /// The promise `header` makes, if its command makes one.
    pub fn of(header: &Header) -> Option<Promise> {
        match header.command {
            Command::StartViewChange => Some(Promise::View { view: header.view }),
            Command::StartView => Some(Promise::ViewAndLogView { view: header.view, log_view: header.view }),
            Command::DoViewChange => Some(Promise::ViewAndLogView { view: header.view, log_view: header.context }),
            // A prepare_ok carries the prepare's checksum in `parent`.
            Command::PrepareOk => Some(Promise::Prepare { op: header.op, checksum: header.parent }),
            Command::Reply if header.op > 0 => Some(Promise::Reply { op: header.op }),
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
    /// Format a new replica's group storage in `dir`.
    pub async fn format(io: &I, dir: &Path, config: StorageConfig) -> Result<GroupStorage<I>, StorageError> {
        let journal = PrepareJournal::create(io, dir, config.journal()).await?;
        let superblock = Superblock::create(io, dir, config.cluster, config.namespace, config.replica).await?;
        Ok(GroupStorage {
            io: io.clone(),
            dir: dir.to_path_buf(),
            config,
            journal,
            superblock,
            durable_prepares: BTreeMap::new(),
            unsynced_ops: BTreeMap::new(),
        })
    }

    /// Format a replica's storage again after its disk was lost, for a
    /// cluster that already exists: the replica must rejoin before it votes.
    pub async fn format_rejoining(io: &I, dir: &Path, config: StorageConfig) -> Result<GroupStorage<I>, StorageError> {
        let mut storage = GroupStorage::format(io, dir, config).await?;
        // Durable before the replica runs: a crash before the rejoin
        // completes must restart it rejoining, never as a voter of view 0.
        let state = SuperblockState { rejoining: true, ..SuperblockState::default() };
        storage.superblock.write(state).await?;
        Ok(storage)
    }

    /// Open after a crash: what the disk kept, as the replica needs it.
    pub async fn open(io: &I, dir: &Path, config: StorageConfig) -> Result<(GroupStorage<I>, Recovered), StorageError> {
        GroupStorage::open_inner(io, dir, config, true).await
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
        settle_group_files(io, dir, config.namespace).await;
        let superblock =
            Superblock::open(io, dir, config.cluster, config.namespace, config.replica, OpenMode::ReadWrite).await?;
        let (mut journal, _recovery) = PrepareJournal::open(io, dir, config.journal(), OpenMode::ReadWrite).await?;
        let checkpoint = checkpoint::read_checkpoint(io, dir, config.namespace).await?;
        // A checkpoint durable past the journal's snapshot: finish the drain
        // that failed, and remember what it had to leave out as faulty.
        let mut settled_faulty = false;
        if let Some(checkpoint) = checkpoint.as_ref().filter(|_| settle) {
            let left_out = journal.settle_to_checkpoint(checkpoint.anchor.op, checkpoint.anchor.checksum).await?;
            settled_faulty = !left_out.is_empty();
        }
        let scan = journal.scan().await?;
        let recovered = Recovered {
            durable: superblock.state().clone().into(),
            checkpoint,
            entries: scan.entries,
            journal_faulty: settled_faulty || !scan.corrupt_ops.is_empty(),
        };
        let durable_prepares = recovered.entries.iter().map(|(header, _)| (header.op, header.checksum)).collect();
        let storage = GroupStorage {
            io: io.clone(),
            dir: dir.to_path_buf(),
            config,
            journal,
            superblock,
            durable_prepares,
            unsynced_ops: BTreeMap::new(),
        };
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
                self.journal.truncate_after(after).await?;
            }
            Action::WriteSuperblock { state } => {
                let state = SuperblockState::from(state.clone());
                self.superblock.write(state).await?;
            }
            Action::Checkpoint { checkpoint } => {
                checkpoint::write_checkpoint(&self.io, &self.dir, self.config.namespace, checkpoint).await?;
                // Only once the checkpoint is durable may the journal forget
                // the ops it covers.
                self.journal.drain_to(checkpoint.anchor.op, checkpoint.anchor.checksum).await?;
                // The checkpoint vouches for these now (see `check_durable`).
                self.durable_prepares.retain(|op, _| *op > checkpoint.anchor.op);
            }
            Action::Send { .. } | Action::Reply { .. } => {
                unreachable!("a message is sent by the driver, not written by storage")
            }
        }
        Ok(())
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
        self.durable_prepares.remove(&header.op);
        self.unsynced_ops.insert(header.op, header.checksum);
    }

    /// Group commit, second half: write the staged prepares `messages` (in
    /// the order the replica asked; a later write of an op replaces an
    /// earlier one, as on the disk), each run of adjacent slots with one
    /// write, then make them durable (`flush_prepares`).
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
        let prepares: Vec<(&Header, &[u8])> =
            last_write.values().map(|message| (&message.header, &message.body[..])).collect();
        self.journal.write_prepares(&prepares).await?;
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
            for op in self.journal.flush().await? {
                if let Some(checksum) = self.unsynced_ops.remove(&op) {
                    self.durable_prepares.insert(op, checksum);
                    durable.push((op, checksum));
                }
            }
        }
        assert!(self.unsynced_ops.is_empty(), "{PREPARE_FLUSHES_MAX} flushes make every written prepare durable");
        durable.sort_unstable();
        Ok(durable)
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
            Promise::Prepare { op, .. } if op <= self.journal.snapshot_op() => Ok(()),
            Promise::Prepare { op, checksum } => match prepare_durable(op) {
                Some(durable) if durable == checksum => Ok(()),
                Some(_) => Err(format!("the durable prepare at op {op} has another checksum")),
                None => Err(format!("prepare op {op} is not durable in the journal")),
            },
            Promise::Reply { op } if op <= self.journal.snapshot_op() || prepare_durable(op).is_some() => Ok(()),
            Promise::Reply { op } => Err(format!("replied op {op} is not durable in the journal")),
        }
    }
}

/// Recovery never trusts the page cache: after a process crash the
/// superblock and checkpoint files may read back state a failed fsync never
/// made durable (Linux marks those pages clean), and a replica that acted on
/// it would forget it at the next power loss (a vote for a view it no longer
/// knows). Settle the group's own small files first; the journal settles
/// itself, and other groups' files are settled when those groups open (so
/// opening N groups settles each file once, not N times). A file that cannot
/// be settled (missing on a first start, or a read error) is left to its own
/// open, which reports it. The metadata handoff settles with this too.
pub async fn settle_group_files<I: Io>(io: &I, dir: &Path, namespace: u64) {
    for path in [superblock_path(dir, namespace), checkpoint_path(dir, namespace)] {
        let _ = shoal_vsr::journal::settle_file(io, &path).await;
    }
    let _ = io.sync_dir(dir).await;
}
