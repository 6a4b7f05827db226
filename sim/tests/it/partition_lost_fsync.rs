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

/// Disk-rot seed 392 (and disk-rot-pages seed 392), found by the Recovery
/// check "what a start reads is on the device" once a format stopped
/// reopening its journal and the schedule moved; step by step. Records 1
/// and 2 were written and their fsync failed: Linux marked their pages
/// clean, the process crashed, the next life read them from the page
/// cache. Record 2's sector then failed its reads, so the open salvaged the
/// log: it kept the intact prefix (records 0 and 1) and wrote a marker
/// promising it, record 1 included, which only the page cache held. A power
/// loss then left a marker covering a record the device never got.
#[test]
fn a_salvage_rewrites_what_it_promises_that_only_the_page_cache_held() {
    use shoal_shard::partition_log::{SEGMENT_HEADER_SIZE_BYTES, segment_file_name};
    /// The mutations of one append and sync: the records' write, then their fsync.
    const RECORDS_FSYNC_MUTATION: u64 = 2;
    /// Records larger than a sector, so that a latent sector error in
    /// record 2's last sector spares records 0 and 1.
    const LARGE_PAYLOAD_SIZE_BYTES: usize = 600;
    let record_size_bytes = (RECORD_HEADER_SIZE_BYTES + LARGE_PAYLOAD_SIZE_BYTES) as u64;
    let config = PartitionLogConfig { segment_size_max_bytes: 3 * record_size_bytes };
    let append_and_sync = |log: &mut PartitionLog<SimIo>, offsets: std::ops::Range<u64>| {
        let records: Vec<Vec<u8>> = offsets.map(|offset| vec![offset as u8; LARGE_PAYLOAD_SIZE_BYTES]).collect();
        block_on_ready(log.append(&records)).map_err(|error| error.to_string())?;
        block_on_ready(log.sync()).map_err(|error| error.to_string())
    };
    let segment = dir().join(segment_file_name(0));
    let io = SimIo::new(392);
    let mut log = block_on_ready(PartitionLog::open(io.clone(), dir(), config)).expect("a new log");
    append_and_sync(&mut log, 0..1).expect("record 0 is promised");
    io.disk().arm_mutation_fault(RECORDS_FSYNC_MUTATION, MutationFault::Eio);
    assert!(append_and_sync(&mut log, 1..3).is_err(), "the records' fsync fails");
    drop(log);
    io.crash_process();
    assert!(io.disk().stale_cached_bytes(&segment) > 0, "records 1 and 2 are only in the page cache");
    let record_2_last_byte = SEGMENT_HEADER_SIZE_BYTES + 3 * record_size_bytes - 1;
    io.disk().fail_sector_reads(&segment, record_2_last_byte).expect("the segment exists");

    shoal_vsr::marks::take();
    let (log, salvage) = block_on_ready(PartitionLog::open_salvaging(io.clone(), dir(), config))
        .unwrap_or_else(|error| panic!("a salvage keeps the intact prefix: {error}"));
    let salvage = salvage.expect("record 2 cannot be read: the log is salvaged");
    assert_eq!(salvage.first_lost_offset, 2);
    let shoal_shard::SalvageCut::Segment { segment: cut, places } = &salvage.cut else { panic!("{:?}", salvage.cut) };
    assert_eq!(*cut, segment);
    assert!(
        places.iter().any(|place| place.contains(&record_2_last_byte)),
        "the unreadable sector is named: {places:?}"
    );
    assert_eq!(log.next_offset(), 2);
    assert_eq!(io.disk().stale_cached_bytes(&segment), 0, "what the salvage promised is on the device");
    let marks = shoal_vsr::marks::take();
    assert_eq!(marks.get(shoal_vsr::marks::PARTITION_SALVAGE_REWROTE_UNPROMISED), Some(&1), "{marks:?}");
    drop(log);
    io.disk().faults = DiskFaults { crash_lost_ppm: 1_000_000, ..DiskFaults::default() };
    io.power_loss();

    let log = block_on_ready(PartitionLog::open(io.clone(), dir(), config))
        .unwrap_or_else(|error| panic!("the salvage's marker promised only durable records: {error}"));
    assert_eq!(log.next_offset(), 2, "record 1, promised by the salvage, survives the power loss");
}
