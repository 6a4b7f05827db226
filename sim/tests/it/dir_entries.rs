//! Directory entries are durable only once their parent is fsynced (SimDisk
//! models this as Linux does): the stories of the dirs a replica creates,
//! the data dir a format makes and a partition's own dir.

use std::path::Path;
use std::rc::Rc;

use shoal_shard::node::GroupStorage;
use shoal_shard::partition_log::{PartitionLog, PartitionLogConfig};
use shoal_sim::{DiskFaults, SimIo, block_on_ready};
use shoal_vsr::journal::conformance::Chain;
use shoal_vsr::message::Message;

const SLOT_COUNT: u64 = 16;

/// A disk whose power loss keeps every pending write whole: what is lost
/// below is lost with a directory entry, not with a write.
fn disk(seed: u64) -> SimIo {
    let io = SimIo::new(seed);
    io.disk().faults = DiskFaults { crash_lost_ppm: 0, crash_torn_ppm: 0, ..DiskFaults::default() };
    io
}

/// Crash-loop seed 0 (and 112 more of its first 200 seeds), once SimDisk
/// stopped treating directories as durable when created: a new cluster's
/// format made the data dir with `create_dir_all` and never fsynced its
/// parent, so the first power loss took the data dir with every group's
/// superblock, journal and checkpoint in it. The next start found no
/// superblock, formatted the groups as new, and the replica came back with
/// an empty log below what it had committed (Agreement: "canonical log ends
/// at op 0 below commit_min 103").
#[test]
fn a_power_loss_after_a_new_groups_format_keeps_its_data_dir() {
    let io = disk(1);
    let dir = Path::new("/data");
    let config = crate::fixtures::group_storage_config(SLOT_COUNT);
    // 1. A new group is formatted: the data dir does not exist yet.
    let mut storage = block_on_ready(GroupStorage::format(&io, dir, config)).unwrap();
    // 2. It makes three prepares durable (and so may acknowledge them).
    let mut chain = Chain::new();
    for _ in 0..3 {
        let (header, body) = chain.next_prepare();
        block_on_ready(storage.write_prepare(&Message::new(header, Rc::from(body)))).unwrap();
    }
    assert_eq!(block_on_ready(storage.flush_prepares()).unwrap().len(), 3);
    drop(storage);
    // 3. The machine loses power.
    io.power_loss();
    // 4. The group is still there, with what it acknowledged.
    let (_, recovered) = block_on_ready(GroupStorage::open(&io, dir, config))
        .expect("a formatted group survives a power loss: its data dir's entry is durable");
    assert_eq!(recovered.entries.len(), 3, "the acknowledged prepares survive");
}

/// The partition log creates its own dir inside the data dir. Records it
/// synced there are promised (a checkpoint may count them), so the dir's
/// entry in the data dir must be durable first. Not found by the simulator:
/// in a replica, every checkpoint's own fsync of the data dir (and every
/// start's settle of it) makes the partition dir's entry durable no later
/// than the first checkpoint that counts its records, and until then the
/// journal replays them. The partition log must not lean on that.
#[test]
fn records_synced_into_a_new_partition_dir_survive_a_power_loss() {
    let io = disk(2);
    // 1. The data dir exists durably (the operator's format).
    block_on_ready(shoal_vsr::io::create_dir_durable(&io, Path::new("/data"))).unwrap();
    // 2. A partition's first open creates its dir; records are synced there.
    let dir = Path::new("/data/partition-1");
    let mut log = block_on_ready(PartitionLog::open(io.clone(), dir, PartitionLogConfig::default())).unwrap();
    block_on_ready(log.append(&[b"one".to_vec(), b"two".to_vec()])).unwrap();
    block_on_ready(log.sync()).unwrap();
    drop(log);
    // 3. The machine loses power.
    io.power_loss();
    // 4. The synced records are still there.
    let log = block_on_ready(PartitionLog::open(io.clone(), dir, PartitionLogConfig::default())).unwrap();
    let records = block_on_ready(log.read(0, 8)).unwrap();
    assert_eq!(records, vec![(0, b"one".to_vec()), (1, b"two".to_vec())], "synced records survive a power loss");
}
