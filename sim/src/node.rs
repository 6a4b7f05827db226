//! One simulated replica's storage: its journal, superblock and checkpoint
//! file on its own `SimDisk`, and the execution of the replica's storage
//! actions against them.
//!
//! This is the driver side of the replica's contract: every storage action is
//! durable (written and fsynced) before the next action runs; an error stops
//! the replica (fail-stop) and the caller restarts it from what the disk kept.

use std::path::{Path, PathBuf};

use shoal_vsr::checkpoint;
use shoal_vsr::io::OpenMode;
use shoal_vsr::journal::{JournalConfig, PrepareJournal};
use shoal_vsr::replica::{Action, Checkpoint, DurableState, Recovered};
use shoal_vsr::superblock::{Superblock, SuperblockState};

use crate::io::{SimIo, block_on_ready};

pub const DATA_DIR: &str = "/data";

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
    fn journal(&self) -> JournalConfig {
        JournalConfig {
            slot_count: self.slot_count,
            message_size_max_bytes: self.message_size_max_bytes,
            cluster: self.cluster,
            namespace: self.namespace,
        }
    }
}

#[derive(Debug)]
pub struct NodeStorage {
    io: SimIo,
    config: StorageConfig,
    journal: PrepareJournal<SimIo>,
    superblock: Superblock<SimIo>,
}

fn dir() -> PathBuf {
    PathBuf::from(DATA_DIR)
}

impl NodeStorage {
    /// Format a new replica's disk.
    pub fn format(io: &SimIo, config: StorageConfig) -> Result<NodeStorage, StorageError> {
        let dir = dir();
        let journal = block_on_ready(PrepareJournal::create(io, &dir, config.journal()))?;
        let superblock =
            block_on_ready(Superblock::create(io, &dir, config.cluster, config.namespace, config.replica))?;
        Ok(NodeStorage { io: io.clone(), config, journal, superblock })
    }

    /// Format a replica's disk again after it was lost, for a cluster that
    /// already exists: the replica must rejoin before it votes.
    pub fn format_rejoining(io: &SimIo, config: StorageConfig) -> Result<NodeStorage, StorageError> {
        let mut storage = NodeStorage::format(io, config)?;
        // Durable before the replica runs: a crash before the rejoin
        // completes must restart it rejoining, never as a voter of view 0.
        let state = SuperblockState { rejoining: true, ..SuperblockState::default() };
        block_on_ready(storage.superblock.write(state))?;
        Ok(storage)
    }

    /// Open after a crash: what the disk kept, as the replica needs it.
    pub fn open(io: &SimIo, config: StorageConfig) -> Result<(NodeStorage, Recovered), StorageError> {
        NodeStorage::open_inner(io, config, true)
    }

    /// Open to look (the fault injector picking a slot to rot): no drain
    /// is finished here, so the restart that follows sees what it left out.
    pub fn open_to_inspect(io: &SimIo, config: StorageConfig) -> Result<(NodeStorage, Recovered), StorageError> {
        NodeStorage::open_inner(io, config, false)
    }

    fn open_inner(io: &SimIo, config: StorageConfig, settle: bool) -> Result<(NodeStorage, Recovered), StorageError> {
        let dir = dir();
        settle_small_files(io, &dir);
        let superblock = block_on_ready(Superblock::open(
            io,
            &dir,
            config.cluster,
            config.namespace,
            config.replica,
            OpenMode::ReadWrite,
        ))?;
        let (mut journal, _recovery) =
            block_on_ready(PrepareJournal::open(io, &dir, config.journal(), OpenMode::ReadWrite))?;
        let checkpoint = read_checkpoint(io, &dir, config.namespace)?;
        // A checkpoint durable past the journal's snapshot: finish the drain
        // that failed, and remember what it had to leave out as faulty.
        let mut settled_faulty = false;
        if let Some(checkpoint) = checkpoint.as_ref().filter(|_| settle) {
            let left_out =
                block_on_ready(journal.settle_to_checkpoint(checkpoint.anchor.op, checkpoint.anchor.checksum))?;
            settled_faulty = !left_out.is_empty();
        }
        let scan = block_on_ready(journal.scan())?;
        let state = superblock.state();
        let recovered = Recovered {
            durable: DurableState {
                view: state.view,
                log_view: state.log_view,
                commit: state.commit,
                view_headers: state.view_headers.clone(),
                rejoining: state.rejoining,
            },
            checkpoint,
            entries: scan.entries,
            journal_faulty: settled_faulty || !scan.corrupt_ops.is_empty(),
        };
        Ok((NodeStorage { io: io.clone(), config, journal, superblock }, recovered))
    }

    pub fn journal(&self) -> &PrepareJournal<SimIo> {
        &self.journal
    }

    /// Run one storage action to durability. Non-storage actions are ignored.
    pub fn execute(&mut self, action: &Action) -> Result<(), StorageError> {
        match action {
            Action::WritePrepare { message } => {
                block_on_ready(self.journal.write_prepare(&message.header, &message.body))?;
                block_on_ready(self.journal.sync())?;
            }
            Action::TruncateLog { after_op } => {
                let after = (*after_op).max(self.journal.snapshot_op());
                block_on_ready(self.journal.truncate_after(after))?;
            }
            Action::WriteSuperblock { state } => {
                let state = SuperblockState {
                    view: state.view,
                    log_view: state.log_view,
                    commit: state.commit,
                    view_headers: state.view_headers.clone(),
                    rejoining: state.rejoining,
                };
                block_on_ready(self.superblock.write(state))?;
            }
            Action::Checkpoint { checkpoint } => {
                write_checkpoint(&self.io, &dir(), self.config.namespace, checkpoint)?;
                // Only once the checkpoint is durable may the journal forget
                // the ops it covers.
                block_on_ready(self.journal.drain_to(checkpoint.anchor.op, checkpoint.anchor.checksum))?;
            }
            Action::Send { .. } | Action::Reply { .. } => {}
        }
        Ok(())
    }
}

/// Recovery never trusts the page cache: after a process crash the
/// superblock and checkpoint files may read back state a failed fsync never
/// made durable (Linux marks those pages clean), and a replica that acted on
/// it would forget it at the next power loss (a vote for a view it no longer
/// knows). Settle every small file first; the journal settles itself.
/// A file that cannot be settled (a read error) is left to its own open,
/// which reports it.
fn settle_small_files(io: &SimIo, dir: &Path) {
    let Ok(paths) = block_on_ready(shoal_vsr::io::Io::list_dir(io, dir)) else { return };
    for path in paths {
        let is_journal = path.extension().is_some_and(|extension| extension == "wal" || extension == "tmp");
        if !is_journal {
            let _ = block_on_ready(shoal_vsr::journal::settle_file(io, &path));
        }
    }
    let _ = block_on_ready(shoal_vsr::io::Io::sync_dir(io, dir));
}

fn write_checkpoint(io: &SimIo, dir: &Path, namespace: u64, checkpoint: &Checkpoint) -> Result<(), StorageError> {
    Ok(block_on_ready(checkpoint::write_checkpoint(io, dir, namespace, checkpoint))?)
}

fn read_checkpoint(io: &SimIo, dir: &Path, namespace: u64) -> Result<Option<Checkpoint>, StorageError> {
    Ok(block_on_ready(checkpoint::read_checkpoint(io, dir, namespace))?)
}
