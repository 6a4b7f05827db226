//! Faults inside a replica's own start: an EIO while the start settles the
//! files it is about to trust, and the stories behind the simulator's
//! faults during restarts (`shoal_sim::cluster`, `arm_restart_fault`).

use std::path::Path;

use shoal_shard::node::{GroupStorage, StorageConfig, StorageError};
use shoal_sim::disk::MutationFault;
use shoal_sim::{DiskFaults, SimIo, block_on_ready};
use shoal_vsr::header::Header;
use shoal_vsr::journal::conformance::{CLUSTER, NAMESPACE};
use shoal_vsr::replica::{Action, DurableState};
use shoal_vsr::superblock::{SuperblockError, superblock_path};

const SLOT_COUNT: u64 = 16;

fn dir() -> &'static Path {
    Path::new("/data/restart")
}

fn storage_config() -> StorageConfig {
    crate::fixtures::group_storage_config(SLOT_COUNT)
}

fn durable(view: u64, log_view: u64) -> DurableState {
    DurableState { view, log_view, commit: 0, view_headers: Vec::new(), rejoining: false, nack_floor: 0 }
}

/// Prepare headers of `view` for `ops`, as a view change installs them.
fn view_headers(view: u64, ops: std::ops::RangeInclusive<u64>) -> Vec<Header> {
    crate::fixtures::view_headers(CLUSTER, NAMESPACE, view, ops)
}

fn write_superblock(storage: &mut GroupStorage<SimIo>, state: DurableState) -> Result<(), StorageError> {
    block_on_ready(storage.execute(&Action::WriteSuperblock { state }))
}

/// Issue 10, finding 2 on the error path. A superblock write crashed at
/// copy B's fsync: copy B's new bytes live in the page cache only. The
/// process restarts (page cache kept); its settle rewrites the file as
/// read, and that fsync fails with EIO, which drops the rewritten pages
/// from the device's future again. Both copies now read the same newest
/// state, so open repairs nothing and the replica acts on view 2 while
/// copy B's durable bytes still hold view 1. Its next superblock write
/// tears copy A in a power loss, and open falls back to copy B: view 1,
/// below a view the replica voted for.
///
/// The settle's failure now stops the start (a typed error telling the
/// operator to check the disk and restart); the next start settles again.
#[test]
fn a_settle_whose_fsync_failed_stops_the_start_before_the_replica_trusts_the_page_cache() {
    let path = superblock_path(dir(), NAMESPACE);
    let io = SimIo::new(11);
    let mut storage = block_on_ready(GroupStorage::format(&io, dir(), storage_config())).unwrap();
    write_superblock(&mut storage, durable(1, 1)).unwrap();
    // View 2: copy A written and fsynced, copy B written, then the process
    // crashes at copy B's fsync (its 4th storage call).
    io.disk().crash_after_steps(3);
    assert!(write_superblock(&mut storage, durable(2, 1)).is_err(), "the crash stops the write at copy B's fsync");
    drop(storage);
    io.crash_process();
    // The restart: the settle's write-back is the first call that changes
    // the disk, its fsync the second, and that fsync fails.
    io.disk().arm_mutation_fault(2, MutationFault::Eio);
    let first_start = block_on_ready(GroupStorage::open(&io, dir(), storage_config()));
    assert!(!io.disk().mutation_fault_armed(), "the EIO landed in the settle");
    let (mut storage, recovered) = match first_start {
        Err(error) => {
            assert!(error.to_string().contains("check the disk, then restart"), "{error}");
            // The operator restarts it (the machine kept running).
            io.crash_process();
            block_on_ready(GroupStorage::open(&io, dir(), storage_config())).unwrap()
        }
        // Without the fix the start goes on over the page cache's bytes:
        // the story below then shows what that costs.
        Ok(opened) => opened,
    };
    assert_eq!(recovered.durable.view, 2, "the start acts on view 2");
    // View 3: the power fails with copy A's write in flight, and only its
    // first sector lands (the record's checksum no longer matches).
    io.disk().crash_after_steps(1);
    // Its view headers span sectors, so a tear that keeps only the first
    // sector leaves copy A invalid (the record's checksum is in sector 0).
    let view_3 = DurableState { commit: 7, view_headers: view_headers(3, 5..=7), ..durable(3, 3) };
    assert!(write_superblock(&mut storage, view_3).is_err(), "the fsync after copy A halts");
    let torn_sector = io.disk().contents(&path).unwrap()[..512].to_vec();
    drop(storage);
    io.disk().faults = DiskFaults { crash_lost_ppm: 1_000_000, ..DiskFaults::default() };
    io.power_loss();
    io.disk().poke(&path, 0, &torn_sector).unwrap();
    let (_, recovered) = block_on_ready(GroupStorage::open(&io, dir(), storage_config())).unwrap();
    assert_eq!(recovered.durable.view, 2, "copy B holds the view the replica acted on");
}

/// Storage calls a format takes at most; a larger crash point is no crash.
const FORMAT_STEPS_MAX: u64 = 200;
const REPLICA_COUNT: u8 = 3;

/// A brand-new group's format (a new cluster's first start, or a topic
/// created since) crashed after any storage call. The next start (the
/// server's `open_or_rejoin`, then a format when it finds no superblock)
/// must finish it: an empty group that votes from view 0, never one that
/// takes a half-made superblock for damage and rejoins (in a new cluster
/// whose replicas all crashed mid-format, nobody could answer it), and
/// never a format that fails on what the last one left ("already exists").
#[test]
fn a_new_group_format_crashed_at_any_step_is_finished_by_the_next_start() {
    for steps in 0..FORMAT_STEPS_MAX {
        let io = SimIo::new(steps);
        io.disk().faults = DiskFaults { process_crash_ppm: 500_000, ..DiskFaults::crash_only() };
        io.disk().crash_after_steps(steps);
        let first = block_on_ready(GroupStorage::format(&io, dir(), storage_config()));
        if !io.disk().is_halted() {
            drop(first.expect("an uninterrupted format finishes"));
            // Durable: a crash now (which also disarms the halt) keeps it.
            io.crash();
            let (_, recovered) = block_on_ready(GroupStorage::open(&io, dir(), storage_config())).unwrap();
            assert_eq!(recovered.durable, durable(0, 0), "a new group votes from view 0");
            assert!(steps > 0, "the format was crashed at some step first");
            return;
        }
        drop(first);
        io.crash();
        let start = block_on_ready(GroupStorage::open_or_rejoin(&io, dir(), storage_config(), REPLICA_COUNT));
        let recovered = match start {
            Ok((_, recovered, damage)) => {
                assert!(damage.is_none(), "crash after {steps} steps: a half-made format read as damage: {damage:?}");
                recovered
            }
            Err(StorageError::Superblock(SuperblockError::Missing { .. })) => {
                let retried = block_on_ready(GroupStorage::format(&io, dir(), storage_config()));
                drop(retried.unwrap_or_else(|error| panic!("crash after {steps} steps, the retry: {error}")));
                io.crash();
                block_on_ready(GroupStorage::open(&io, dir(), storage_config())).unwrap().1
            }
            Err(error) => panic!("crash after {steps} steps, the next start: {error}"),
        };
        assert_eq!(recovered.durable, durable(0, 0), "crash after {steps} steps");
        assert!(recovered.entries.is_empty() && recovered.checkpoint.is_none());
    }
    panic!("the format took more than {FORMAT_STEPS_MAX} storage calls");
}

/// A format never goes over a group that holds something: its superblock,
/// or (with the superblock gone) a journal with prepares.
#[test]
fn a_format_refuses_a_group_that_is_not_new() {
    let io = SimIo::new(5);
    let mut storage = block_on_ready(GroupStorage::format(&io, dir(), storage_config())).unwrap();
    let (header, body) = shoal_vsr::journal::conformance::Chain::new().next_prepare();
    let message = shoal_vsr::message::Message::new(header, std::rc::Rc::from(body));
    block_on_ready(storage.write_prepare(&message)).unwrap();
    block_on_ready(storage.flush_prepares()).unwrap();
    drop(storage);
    let again = block_on_ready(GroupStorage::format(&io, dir(), storage_config()));
    assert!(matches!(again, Err(StorageError::Superblock(SuperblockError::AlreadyExists { .. }))), "{again:?}");
    block_on_ready(shoal_vsr::io::Io::remove(&io, &superblock_path(dir(), NAMESPACE))).unwrap();
    let again = block_on_ready(GroupStorage::format(&io, dir(), storage_config()));
    assert!(matches!(again, Err(StorageError::NotNew { .. })), "{again:?}");
    assert!(again.unwrap_err().to_string().contains("restart the replica"));
}

/// swarm seed 915 (Liveness, 1 replica): a crash inside a new cluster's
/// first format stopped a partition log's creation after its first
/// segment was written and before the directory fsync; the process crash
/// kept the name in the page cache, the next open used the segment, and
/// the records synced into it were lost with its name at a later power
/// loss, while the checkpoint counted them. Whatever step the first open
/// stopped at, records synced after the next open survive a power loss.
#[test]
fn records_synced_after_a_crashed_first_open_survive_a_power_loss() {
    use shoal_shard::partition_log::{PartitionLog, PartitionLogConfig};
    let dir = Path::new("/data/restart/partition");
    for steps in 0..PARTITION_OPEN_STEPS_MAX {
        let io = SimIo::new(steps);
        io.disk().crash_after_steps(steps);
        let first = block_on_ready(PartitionLog::open(io.clone(), dir, PartitionLogConfig::default()));
        if !io.disk().is_halted() {
            drop(first.expect("an uninterrupted open finishes"));
            assert!(steps > 0, "the open was crashed at some step first");
            return;
        }
        drop(first);
        io.crash_process();
        let mut log = block_on_ready(PartitionLog::open(io.clone(), dir, PartitionLogConfig::default())).unwrap();
        block_on_ready(log.append(&[b"one".as_slice(), b"two".as_slice()])).unwrap();
        block_on_ready(log.sync()).unwrap();
        drop(log);
        io.disk().faults = DiskFaults { crash_lost_ppm: 1_000_000, ..DiskFaults::default() };
        io.power_loss();
        let log = block_on_ready(PartitionLog::open(io.clone(), dir, PartitionLogConfig::default()))
            .unwrap_or_else(|error| panic!("crash after {steps} steps: {error}"));
        assert_eq!(log.next_offset(), 2, "crash after {steps} steps: synced records were lost");
    }
    panic!("the first open took more than {PARTITION_OPEN_STEPS_MAX} storage calls");
}

/// Storage calls a partition log's first open takes at most.
const PARTITION_OPEN_STEPS_MAX: u64 = 40;
