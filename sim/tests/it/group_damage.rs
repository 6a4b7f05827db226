//! A group whose superblock or checkpoint lost both copies is formatted
//! again, rejoining (`GroupStorage::open_or_rejoin`). That format is itself
//! a multi-step sequence on the disk; a crash may stop it between any two
//! storage calls. Whatever it leaves, no start may see a replica that can
//! vote over a half-formatted disk (a plain open either finds damage or a
//! rejoining superblock), and the next start finishes the format with the
//! promises it must keep.

use std::path::Path;
use std::rc::Rc;

use shoal_shard::node::{GroupStorage, StorageConfig, StorageDamage, StorageError};
use shoal_sim::disk::DiskFaults;
use shoal_sim::{SimIo, block_on_ready};
use shoal_vsr::checkpoint::{checkpoint_path, write_checkpoint};
use shoal_vsr::journal::conformance::{Chain, NAMESPACE};
use shoal_vsr::message::Message;
use shoal_vsr::replica::{Action, Checkpoint, DurableState, Recovered};
use shoal_vsr::superblock::{superblock_copy_offset, superblock_path};

const SLOT_COUNT: u64 = 16;
const REPLICA_COUNT: u8 = 3;
/// Storage calls the format takes at most; a larger crash point is no crash.
const FORMAT_STEPS_MAX: u64 = 200;
/// The promises the damaged disk's superblock holds.
const VIEW: u64 = 5;
const NACK_FLOOR: u64 = 2;

fn dir() -> &'static Path {
    Path::new("/data/damage")
}

fn storage_config() -> StorageConfig {
    crate::fixtures::group_storage_config(SLOT_COUNT)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    Checkpoint,
    Superblock,
}

/// A replica's group with promises (view 5, nack floor 2), three durable
/// prepares and a checkpoint, then `lost`'s both copies rot.
fn damaged_disk(seed: u64, lost: Lost) -> SimIo {
    damaged_disk_by(seed, lost, false)
}

/// As `damaged_disk`; with `eio`, `lost`'s both copies get latent sector
/// errors (every read fails with EIO) instead of rot.
fn damaged_disk_by(seed: u64, lost: Lost, eio: bool) -> SimIo {
    let io = SimIo::new(seed);
    let mut storage = block_on_ready(GroupStorage::format(&io, dir(), storage_config())).unwrap();
    let state = DurableState {
        view: VIEW,
        log_view: VIEW - 1,
        commit: 0,
        view_headers: Vec::new(),
        rejoining: false,
        nack_floor: NACK_FLOOR,
    };
    block_on_ready(storage.execute(&Action::WriteSuperblock { state })).unwrap();
    let mut chain = Chain::new();
    for _ in 0..3 {
        let (header, body) = chain.next_prepare();
        block_on_ready(storage.write_prepare(&Message::new(header, Rc::from(body)))).unwrap();
    }
    block_on_ready(storage.flush_prepares()).unwrap();
    drop(storage);
    let (anchor, _) = Chain::new().next_prepare();
    let checkpoint = Checkpoint { anchor, snapshot: vec![0x5A; 700] };
    block_on_ready(write_checkpoint(&io, dir(), NAMESPACE, &checkpoint)).unwrap();
    let damage = |path: &Path, offset: u64| {
        let mut disk = io.disk();
        if eio { disk.fail_sector_reads(path, offset) } else { disk.corrupt_sector(path, offset) }.unwrap();
    };
    match lost {
        Lost::Checkpoint => {
            let path = checkpoint_path(dir(), NAMESPACE);
            let size_bytes = io.disk().contents(&path).unwrap().len() as u64;
            damage(&path, 100);
            damage(&path, size_bytes / 2 + 100);
        }
        Lost::Superblock => {
            let path = superblock_path(dir(), NAMESPACE);
            damage(&path, superblock_copy_offset(0) + 60);
            damage(&path, superblock_copy_offset(1) + 60);
        }
    }
    io
}

/// What a finished format must hold: rejoining, nothing of the old state,
/// and the promises of a good superblock.
fn assert_formatted(recovered: &Recovered, lost: Lost) {
    assert!(recovered.durable.rejoining, "a formatted group rejoins");
    assert!(recovered.checkpoint.is_none() && recovered.entries.is_empty() && !recovered.journal_faulty());
    assert!(recovered.durable.view_headers.is_empty());
    match lost {
        Lost::Checkpoint => {
            assert_eq!(recovered.durable.view, VIEW, "the view it voted for is kept");
            assert!(recovered.durable.nack_floor >= NACK_FLOOR, "the nack floor never goes down");
        }
        Lost::Superblock => assert_eq!((recovered.durable.view, recovered.durable.nack_floor), (0, 0)),
    }
}

/// The damage `open_or_rejoin` formats again (with enough replicas).
fn is_damage(error: &StorageError) -> bool {
    use shoal_vsr::checkpoint::CheckpointError;
    use shoal_vsr::journal::JournalError;
    use shoal_vsr::superblock::SuperblockError;
    matches!(
        error,
        StorageError::Superblock(SuperblockError::NoValidCopy)
            | StorageError::Checkpoint(CheckpointError::Corrupt { .. })
            | StorageError::Journal(JournalError::Missing { .. })
    )
}

fn a_format_crashed_at_any_step_is_finished_by_the_next_start(lost: Lost) {
    for steps in 0..FORMAT_STEPS_MAX {
        let io = damaged_disk(steps, lost);
        io.disk().faults = DiskFaults { process_crash_ppm: 500_000, ..DiskFaults::crash_only() };
        io.disk().crash_after_steps(steps);
        let first = block_on_ready(GroupStorage::open_or_rejoin(&io, dir(), storage_config(), REPLICA_COUNT));
        if !io.disk().is_halted() {
            let (_, recovered, damage) = first.expect("an uninterrupted format finishes");
            assert_eq!(damage.as_ref().map(StorageDamage::keeps_promises), Some(lost == Lost::Checkpoint));
            assert_formatted(&recovered, lost);
            assert!(steps > 0, "the format was crashed at some step first");
            return;
        }
        drop(first);
        io.crash();
        // A plain open now finds damage (which the next start formats
        // again, below) or a group that rejoins: never a voter.
        if let Ok((_, recovered)) = block_on_ready(GroupStorage::open(&io, dir(), storage_config())) {
            assert!(recovered.durable.rejoining, "crash after {steps} steps: {recovered:?}");
        }
        let (_, recovered, _) = block_on_ready(GroupStorage::open_or_rejoin(&io, dir(), storage_config(), 3))
            .unwrap_or_else(|error| panic!("crash after {steps} steps, the next start: {error}"));
        assert_formatted(&recovered, lost);
    }
    panic!("the format took more than {FORMAT_STEPS_MAX} storage calls");
}

#[test]
fn a_checkpoint_format_crashed_at_any_step_is_finished_by_the_next_start() {
    a_format_crashed_at_any_step_is_finished_by_the_next_start(Lost::Checkpoint);
}

#[test]
fn a_superblock_format_crashed_at_any_step_is_finished_by_the_next_start() {
    a_format_crashed_at_any_step_is_finished_by_the_next_start(Lost::Superblock);
}

/// A lone replica (or two) has nobody to rebuild from: the damage stays the
/// error that stops it, and nothing on its disk is formatted.
#[test]
fn without_a_quorum_of_peers_the_damage_stops_the_replica() {
    for replica_count in [1, 2] {
        let io = damaged_disk(9, Lost::Checkpoint);
        let before = io.disk().contents(&superblock_path(dir(), NAMESPACE));
        let opened = block_on_ready(GroupStorage::open_or_rejoin(&io, dir(), storage_config(), replica_count));
        assert!(matches!(opened, Err(ref error) if is_damage(error)), "{replica_count} replicas: {opened:?}");
        assert_eq!(io.disk().contents(&superblock_path(dir(), NAMESPACE)), before, "nothing was formatted");
    }
}

/// The operator's format of a lost disk (`GroupStorage::format_rejoining`)
/// crashed after any storage call: no start may find a group that votes
/// (every open either fails or rejoins), and the operator's retry of the
/// format finishes it, rejoining.
#[test]
fn a_rejoining_format_crashed_at_any_step_never_leaves_a_voter() {
    for steps in 0..FORMAT_STEPS_MAX {
        let io = SimIo::new(steps);
        io.disk().faults = DiskFaults { process_crash_ppm: 500_000, ..DiskFaults::crash_only() };
        io.disk().crash_after_steps(steps);
        let first = block_on_ready(GroupStorage::format_rejoining(&io, dir(), storage_config()));
        if !io.disk().is_halted() {
            drop(first.expect("an uninterrupted format finishes"));
            // Durable: a crash now (which also disarms the halt) keeps it.
            io.crash();
            let (_, recovered) = block_on_ready(GroupStorage::open(&io, dir(), storage_config())).unwrap();
            assert!(recovered.durable.rejoining, "a formatted lost disk rejoins");
            assert!(steps > 0, "the format was crashed at some step first");
            return;
        }
        drop(first);
        io.crash();
        for start in 0..2 {
            let opened = if start == 0 {
                block_on_ready(GroupStorage::open(&io, dir(), storage_config())).map(|(_, recovered)| recovered)
            } else {
                block_on_ready(GroupStorage::open_or_rejoin(&io, dir(), storage_config(), REPLICA_COUNT))
                    .map(|(_, recovered, _)| recovered)
            };
            if let Ok(recovered) = opened {
                assert!(recovered.durable.rejoining, "crash after {steps} steps, start {start}: a voter of view 0");
            }
        }
        let retried = block_on_ready(GroupStorage::format_rejoining(&io, dir(), storage_config()))
            .unwrap_or_else(|error| panic!("crash after {steps} steps, the operator's retry: {error}"));
        drop(retried);
        let (_, recovered) = block_on_ready(GroupStorage::open(&io, dir(), storage_config())).unwrap();
        assert!(recovered.durable.rejoining, "crash after {steps} steps: the retried format rejoins");
    }
    panic!("the format took more than {FORMAT_STEPS_MAX} storage calls");
}

/// Issue 10: a read error (EIO) on both copies of a superblock or checkpoint
/// stopped the replica for good ("superblock read failed: check the disk"),
/// though its peers hold the group's state: a latent sector error lasts
/// until a write covers it, so every restart failed the same way. Both
/// copies unreadable is the same loss as both rotten: the group is
/// formatted again and rejoins; alone, the replica stops with the damage.
#[test]
fn both_copies_unreadable_rebuild_from_peers_as_both_rotten_do() {
    for lost in [Lost::Checkpoint, Lost::Superblock] {
        let io = damaged_disk_by(3, lost, true);
        let opened = block_on_ready(GroupStorage::open_or_rejoin(&io, dir(), storage_config(), REPLICA_COUNT));
        let (_, recovered, damage) = opened.unwrap_or_else(|error| panic!("{lost:?} unreadable: {error}"));
        assert_eq!(damage.as_ref().map(StorageDamage::keeps_promises), Some(lost == Lost::Checkpoint));
        assert_formatted(&recovered, lost);
        let alone = damaged_disk_by(3, lost, true);
        let opened = block_on_ready(GroupStorage::open_or_rejoin(&alone, dir(), storage_config(), 1));
        assert!(matches!(opened, Err(ref error) if is_damage(error)), "{lost:?} alone: {opened:?}");
    }
}

/// One superblock copy with a latent sector error: the other copy holds
/// every promise, so the start goes on, and its writable open rewrites the
/// unreadable copy (the write remaps the sector). Before, the one EIO
/// stopped the replica at every start.
#[test]
fn one_unreadable_superblock_copy_falls_back_to_the_other_and_is_rewritten() {
    let io = SimIo::new(4);
    let mut storage = block_on_ready(GroupStorage::format(&io, dir(), storage_config())).unwrap();
    let state = DurableState {
        view: VIEW,
        log_view: VIEW,
        commit: 0,
        view_headers: Vec::new(),
        rejoining: false,
        nack_floor: 0,
    };
    block_on_ready(storage.execute(&Action::WriteSuperblock { state })).unwrap();
    drop(storage);
    let path = superblock_path(dir(), NAMESPACE);
    io.disk().fail_sector_reads(&path, superblock_copy_offset(0) + 60).unwrap();
    let _ = shoal_vsr::marks::take();
    let (_, recovered) =
        block_on_ready(GroupStorage::open(&io, dir(), storage_config())).expect("one readable copy is enough");
    assert_eq!(recovered.durable.view, VIEW, "the other copy's promises");
    assert!(shoal_vsr::marks::take().contains_key(shoal_vsr::marks::COPY_UNREADABLE));
    let file = block_on_ready(shoal_vsr::io::Io::open(&io, &path, shoal_vsr::io::OpenMode::ReadOnly)).unwrap();
    let size_bytes = io.disk().contents(&path).unwrap().len();
    let (result, _) = block_on_ready(shoal_vsr::io::read_exact_retrying(&file, vec![0; size_bytes], 0));
    result.expect("the open rewrote the unreadable copy");
}
