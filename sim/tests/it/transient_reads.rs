//! Transient read errors at restart (issue 10: "read EIO, sticky and
//! transient"). A read that fails with EIO once or twice and then succeeds
//! is a device hiccup, not damage: a restart must come back with exactly the
//! state it would have found without it. Before every storage read retried
//! (`shoal_vsr::io::read_exact_retrying`), one such error stopped a replica
//! for good ("partition log I/O failed ... cannot restart", or a journal
//! file header read) or made a synced slot faulty; swarm with 2,000 ppm of
//! transient read EIO failed 135 of seeds 0..400.
//!
//! Each story fails every read of one restart in turn.

use std::path::Path;

use shoal_shard::node::{GroupStorage, StorageConfig};
use shoal_shard::partition_log::{PartitionLog, PartitionLogConfig};
use shoal_sim::{SimIo, block_on_ready};
use shoal_vsr::io::READ_EIO_ATTEMPTS_MAX;
use shoal_vsr::replica::{DurableState, Recovered};

const SLOT_COUNT: u64 = 16;
const PREPARES_COUNT: u64 = 6;
const RECORDS_COUNT: usize = 40;
/// Small segments (2 KiB), so a restart reads several files.
const PARTITION_LOG_CONFIG: PartitionLogConfig = PartitionLogConfig { segment_size_max_bytes: 2048 };

fn group_dir() -> &'static Path {
    Path::new("/data/group")
}

fn partition_dir() -> &'static Path {
    Path::new("/data/partition")
}

fn storage_config() -> StorageConfig {
    crate::fixtures::group_storage_config(SLOT_COUNT)
}

/// A group with promises, six durable prepares and a checkpoint at op 1;
/// then the process dies (the page cache is kept, as after `kill -9`).
fn disk_with_a_group(seed: u64) -> SimIo {
    let io = SimIo::new(seed);
    let state =
        DurableState { view: 3, log_view: 3, commit: 1, view_headers: Vec::new(), rejoining: false, nack_floor: 1 };
    crate::fixtures::write_group(&io, group_dir(), SLOT_COUNT, state, PREPARES_COUNT);
    io.crash_process();
    io
}

/// What a restart must find: its promises, its checkpoint's op, its
/// journal's ops with their checksums, and its faulty ops.
type Essence = (DurableState, Option<u64>, Vec<(u64, u128)>, Vec<u64>);

/// What a restart must find, whatever hiccups it met on the way.
fn essence(recovered: &Recovered) -> Essence {
    let mut entries: Vec<(u64, u128)> =
        recovered.entries.iter().map(|(header, _)| (header.op, header.checksum)).collect();
    entries.sort_unstable();
    let checkpoint_op = recovered.checkpoint.as_ref().map(|checkpoint| checkpoint.anchor.op);
    (recovered.durable.clone(), checkpoint_op, entries, recovered.faulty_ops.clone())
}

#[test]
fn every_read_of_a_groups_restart_may_fail_transiently_and_it_recovers_the_same_state() {
    let io = disk_with_a_group(1);
    let reads_before = io.disk().reads();
    let (_, baseline) = block_on_ready(GroupStorage::open(&io, group_dir(), storage_config())).unwrap();
    let reads = io.disk().reads() - reads_before;
    assert!(reads >= 10, "a restart reads the superblock, journal and checkpoint ({reads} reads)");
    assert!(baseline.faulty_ops.is_empty() && baseline.entries.len() as u64 == PREPARES_COUNT - 1);
    for skip in 0..reads {
        let io = disk_with_a_group(1);
        io.disk().fail_reads_after(skip, READ_EIO_ATTEMPTS_MAX - 1);
        let (_, recovered) = block_on_ready(GroupStorage::open(&io, group_dir(), storage_config()))
            .unwrap_or_else(|error| panic!("read {skip} of the restart failed transiently, and it stopped: {error}"));
        assert_eq!(essence(&recovered), essence(&baseline), "read {skip} failed transiently");
        assert!(io.disk().counters()["read_eio"] >= 1, "read {skip}: the armed error landed");
    }
}

/// Forty records in segments of 2 KiB, synced; then the process dies.
fn disk_with_a_partition_log(seed: u64) -> (SimIo, Vec<Vec<u8>>) {
    let io = SimIo::new(seed);
    let mut log = block_on_ready(PartitionLog::open(io.clone(), partition_dir(), PARTITION_LOG_CONFIG)).unwrap();
    let records: Vec<Vec<u8>> = (0..RECORDS_COUNT).map(|i| format!("record {i:04} ").repeat(8).into_bytes()).collect();
    for chunk in records.chunks(4) {
        block_on_ready(log.append(chunk)).unwrap();
    }
    block_on_ready(log.sync()).unwrap();
    assert!(log.segment_count() >= 3, "the restart reads several segments");
    drop(log);
    io.crash_process();
    (io, records)
}

fn read_all(log: &PartitionLog<SimIo>) -> Vec<Vec<u8>> {
    let messages = block_on_ready(log.read(0, RECORDS_COUNT + 1)).unwrap();
    messages.into_iter().map(|(_, message)| message).collect()
}

#[test]
fn every_read_of_a_partition_logs_restart_may_fail_transiently_and_it_keeps_every_record() {
    let (io, records) = disk_with_a_partition_log(2);
    let reads_before = io.disk().reads();
    let log = block_on_ready(PartitionLog::open(io.clone(), partition_dir(), PARTITION_LOG_CONFIG)).unwrap();
    let reads = io.disk().reads() - reads_before;
    assert!(reads >= 3, "one read per segment at least ({reads} reads)");
    assert_eq!(read_all(&log), records);
    for skip in 0..reads {
        let (io, records) = disk_with_a_partition_log(2);
        io.disk().fail_reads_after(skip, READ_EIO_ATTEMPTS_MAX - 1);
        let log = block_on_ready(PartitionLog::open(io.clone(), partition_dir(), PARTITION_LOG_CONFIG))
            .unwrap_or_else(|error| panic!("read {skip} of the restart failed transiently, and it stopped: {error}"));
        assert_eq!(read_all(&log), records, "read {skip} failed transiently");
    }
}

/// The serving side: a read of committed records that fails transiently
/// is retried, not answered with nothing.
#[test]
fn a_read_of_committed_records_survives_a_transient_error() {
    let (io, records) = disk_with_a_partition_log(3);
    let log = block_on_ready(PartitionLog::open(io.clone(), partition_dir(), PARTITION_LOG_CONFIG)).unwrap();
    io.disk().fail_reads_after(0, READ_EIO_ATTEMPTS_MAX - 1);
    assert_eq!(read_all(&log), records);
    io.disk().fail_reads_after(0, READ_EIO_ATTEMPTS_MAX);
    assert!(block_on_ready(log.read(0, RECORDS_COUNT)).is_err(), "an error that outlasts the retries is reported");
}
