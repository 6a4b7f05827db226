//! A partition log's promise after a failed fsync (issue 10, finding 2, in
//! the partition log): Linux marks the pages a failed fsync covered clean,
//! so the next process reads them from the page cache while the device
//! never got them, and no later fsync writes them.

use std::path::Path;

use shoal_shard::partition_log::{PartitionLog, PartitionLogConfig, RECORD_HEADER_SIZE_BYTES};
use shoal_sim::disk::MutationFault;
use shoal_sim::{DiskFaults, SimIo, block_on_ready};

const PAYLOAD_SIZE_BYTES: usize = 10;
/// Three records fit a segment; the fourth rolls it.
const RECORDS_PER_SEGMENT: u64 = 3;
/// Mutations of one record's append and sync: the record's write, its
/// fsync, the marker's write, the marker's fsync.
const MARKER_FSYNC_MUTATION: u64 = 4;

fn dir() -> &'static Path {
    Path::new("/data/partition-lost-fsync")
}

fn config() -> PartitionLogConfig {
    PartitionLogConfig {
        segment_size_max_bytes: RECORDS_PER_SEGMENT * (RECORD_HEADER_SIZE_BYTES + PAYLOAD_SIZE_BYTES) as u64,
    }
}

fn open(io: &SimIo) -> PartitionLog<SimIo> {
    block_on_ready(PartitionLog::open(io.clone(), dir(), config())).expect("the log opens")
}

fn record(offset: u64) -> Vec<u8> {
    vec![offset as u8; PAYLOAD_SIZE_BYTES]
}

fn append_and_sync(log: &mut PartitionLog<SimIo>, offsets: std::ops::Range<u64>) -> Result<(), String> {
    let records: Vec<Vec<u8>> = offsets.map(record).collect();
    block_on_ready(log.append(&records)).map_err(|error| error.to_string())?;
    block_on_ready(log.sync()).map_err(|error| error.to_string())
}

/// Swarm seed 18237 (branch `fill-chunks`), step by step. The marker that
/// promised record 2 failed its fsync, and the process crashed; the next
/// life read that marker from the page cache and trusted it, so the roll
/// that sealed the segment wrote no marker of its own (the segment looked
/// promised already) and the seal never reached the device. A power loss
/// then left a sealed segment longer than its durable marker: corruption
/// to `open`, and a salvage cut every record after it, synced ones
/// included (there, 140 offsets no replica held any more).
#[test]
fn a_segment_sealed_after_a_failed_marker_fsync_survives_a_power_loss() {
    let io = SimIo::new(18237);
    let mut log = open(&io);
    append_and_sync(&mut log, 0..2).expect("the first records are promised");
    io.disk().arm_mutation_fault(MARKER_FSYNC_MUTATION, MutationFault::Eio);
    let failed = append_and_sync(&mut log, 2..3);
    assert!(failed.is_err(), "the marker's fsync fails");
    drop(log);
    io.crash_process();

    let mut log = open(&io);
    assert_eq!(log.next_offset(), 3, "record 2's own fsync succeeded: it is on the device");
    append_and_sync(&mut log, 3..5).expect("the next records are promised");
    assert_eq!(log.segment_count(), 2, "record 3 rolled the first segment");
    drop(log);
    io.disk().faults = DiskFaults { crash_lost_ppm: 1_000_000, ..DiskFaults::default() };
    io.power_loss();

    let log = block_on_ready(PartitionLog::open(io.clone(), dir(), config()))
        .unwrap_or_else(|error| panic!("every record was promised by a sync that succeeded: {error}"));
    assert_eq!(log.next_offset(), 5, "no promised record is lost");
}
