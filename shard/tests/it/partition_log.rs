//! The partition log over the in-memory `Io`: append, read, roll, reopen,
//! torn tail, corruption.

use std::path::{Path, PathBuf};

use shoal_shard::partition_log::{
    PartitionLog, PartitionLogConfig, PartitionLogError, RECORD_HEADER_SIZE_BYTES, segment_file_name,
};

use crate::mem_io::{MemIo, block_on};

const DIR: &str = "/data/partition-1-1-0";

fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

/// Small segments so tests roll: 3 records of 10 bytes per segment.
fn small() -> PartitionLogConfig {
    PartitionLogConfig { segment_size_max_bytes: 3 * (RECORD_HEADER_SIZE_BYTES as u64 + 10) }
}

fn message(i: u64) -> Vec<u8> {
    format!("message{i:03}").into_bytes()
}

fn open(io: &MemIo, config: PartitionLogConfig) -> Result<PartitionLog<MemIo>, PartitionLogError> {
    block_on(PartitionLog::open(io.clone(), &dir(), config))
}

fn append_range(log: &mut PartitionLog<MemIo>, range: std::ops::Range<u64>) -> u64 {
    let batch: Vec<Vec<u8>> = range.map(message).collect();
    block_on(log.append(&batch)).unwrap()
}

fn read_all(log: &PartitionLog<MemIo>) -> Vec<(u64, Vec<u8>)> {
    block_on(log.read(0, usize::MAX)).unwrap()
}

fn expected(range: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
    range.map(|i| (i, message(i))).collect()
}

fn segment(base: u64) -> PathBuf {
    Path::new(DIR).join(segment_file_name(base))
}

#[test]
fn append_returns_consecutive_offsets_and_read_returns_them() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    assert_eq!(log.next_offset(), 0);
    assert_eq!(append_range(&mut log, 0..5), 0);
    assert_eq!(append_range(&mut log, 5..7), 5);
    assert_eq!(log.next_offset(), 7);
    assert_eq!(read_all(&log), expected(0..7));
    assert_eq!(block_on(log.read(3, 2)).unwrap(), expected(3..5));
    assert_eq!(block_on(log.read(7, 10)).unwrap(), vec![]);
    assert_eq!(block_on(log.read(2, 0)).unwrap(), vec![]);
}

#[test]
fn segments_roll_at_the_size_bound_and_reads_cross_them() {
    let io = MemIo::default();
    let mut log = open(&io, small()).unwrap();
    append_range(&mut log, 0..4);
    append_range(&mut log, 4..8);
    assert_eq!(log.segment_count(), 3);
    assert_eq!(io.paths(), vec![segment(0), segment(3), segment(6)]);
    assert_eq!(block_on(log.read(2, 5)).unwrap(), expected(2..7));
    assert_eq!(read_all(&log), expected(0..8));
}

#[test]
fn reopen_rebuilds_the_index_from_disk() {
    let io = MemIo::default();
    let mut log = open(&io, small()).unwrap();
    append_range(&mut log, 0..8);
    block_on(log.sync()).unwrap();
    drop(log);
    let mut log = open(&io, small()).unwrap();
    assert_eq!(log.next_offset(), 8);
    assert_eq!(log.segment_count(), 3);
    assert_eq!(read_all(&log), expected(0..8));
    assert_eq!(append_range(&mut log, 8..10), 8);
    assert_eq!(read_all(&log), expected(0..10));
}

#[test]
fn torn_tail_is_truncated_and_appends_continue_after_it() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    append_range(&mut log, 0..4);
    drop(log);
    // A crash cut the last record in half.
    let mut bytes = io.file_bytes(&segment(0));
    let whole = bytes.len();
    bytes.truncate(whole - 5);
    io.set_file_bytes(&segment(0), bytes);
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    assert_eq!(log.next_offset(), 3);
    assert_eq!(read_all(&log), expected(0..3));
    assert_eq!(io.file_bytes(&segment(0)).len(), whole - (RECORD_HEADER_SIZE_BYTES + 10));
    assert_eq!(append_range(&mut log, 3..5), 3);
    drop(log);
    let log = open(&io, PartitionLogConfig::default()).unwrap();
    assert_eq!(read_all(&log), expected(0..5));
}

#[test]
fn zeroed_tail_from_a_lost_write_is_truncated() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    append_range(&mut log, 0..2);
    drop(log);
    let mut bytes = io.file_bytes(&segment(0));
    bytes.extend_from_slice(&[0; 100]);
    io.set_file_bytes(&segment(0), bytes);
    let log = open(&io, PartitionLogConfig::default()).unwrap();
    assert_eq!(read_all(&log), expected(0..2));
}

#[test]
fn corruption_before_a_valid_record_is_an_error_not_a_truncation() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    append_range(&mut log, 0..3);
    drop(log);
    let mut bytes = io.file_bytes(&segment(0));
    let record_size = RECORD_HEADER_SIZE_BYTES + 10;
    bytes[record_size + RECORD_HEADER_SIZE_BYTES] ^= 0xff; // payload of offset 1
    io.set_file_bytes(&segment(0), bytes.clone());
    match open(&io, PartitionLogConfig::default()) {
        Err(PartitionLogError::Corrupt { position, reason, .. }) => {
            assert_eq!(position, record_size as u64);
            assert_eq!(reason, "checksum mismatch");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Nothing was truncated: a repair can still read what is there.
    assert_eq!(io.file_bytes(&segment(0)), bytes);
}

#[test]
fn corruption_in_a_sealed_segment_is_an_error() {
    let io = MemIo::default();
    let mut log = open(&io, small()).unwrap();
    append_range(&mut log, 0..5);
    drop(log);
    let mut bytes = io.file_bytes(&segment(0));
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // the last record of a sealed segment: not a torn tail
    io.set_file_bytes(&segment(0), bytes);
    assert!(matches!(open(&io, small()), Err(PartitionLogError::Corrupt { .. })));
}

#[test]
fn read_detects_corruption_after_open() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    append_range(&mut log, 0..2);
    let mut bytes = io.file_bytes(&segment(0));
    bytes[RECORD_HEADER_SIZE_BYTES] ^= 1;
    io.set_file_bytes(&segment(0), bytes);
    assert!(matches!(block_on(log.read(0, 1)), Err(PartitionLogError::Corrupt { position: 0, .. })));
}

#[test]
fn a_missing_segment_is_a_gap_error() {
    let io = MemIo::default();
    let mut log = open(&io, small()).unwrap();
    append_range(&mut log, 0..8);
    drop(log);
    block_on(shoal_vsr::Io::remove(&io, &segment(3))).unwrap();
    assert!(matches!(
        open(&io, small()),
        Err(PartitionLogError::SegmentGap { base_offset: 6, expected_offset: 3, .. })
    ));
}

#[test]
fn bad_batches_are_typed_errors() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    assert!(matches!(block_on(log.append(&[])), Err(PartitionLogError::BatchSize { count: 0 })));
    let huge = vec![vec![0u8; shoal_shard::partition_log::RECORD_PAYLOAD_SIZE_MAX_BYTES + 1]];
    assert!(matches!(block_on(log.append(&huge)), Err(PartitionLogError::PayloadTooLarge { .. })));
    assert_eq!(log.next_offset(), 0);
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    let io = MemIo::default();
    let mut log = open(&io, small()).unwrap();
    append_range(&mut log, 0..1);
    let big = vec![7u8; 500];
    assert_eq!(block_on(log.append(std::slice::from_ref(&big))).unwrap(), 1);
    append_range(&mut log, 2..3);
    assert_eq!(log.segment_count(), 3);
    let records = read_all(&log);
    assert_eq!(records[1], (1, big));
    assert_eq!(records.len(), 3);
}

#[test]
fn a_failed_write_leaves_no_phantom_offsets() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    append_range(&mut log, 0..2);
    io.fail_next_writes(1);
    let batch: Vec<Vec<u8>> = (2..4).map(message).collect();
    assert!(matches!(block_on(log.append(&batch)), Err(PartitionLogError::Io { operation: "write", .. })));
    assert_eq!(log.next_offset(), 2);
    assert_eq!(read_all(&log), expected(0..2));
    // The next append takes the offsets the failed one could not.
    assert_eq!(append_range(&mut log, 2..4), 2);
    drop(log);
    let log = open(&io, PartitionLogConfig::default()).unwrap();
    assert_eq!(read_all(&log), expected(0..4));
}

proptest::proptest! {
    /// Any sequence of batches, with a reopen after any of them, reads back
    /// exactly as a plain vector of messages would.
    #[test]
    fn log_matches_a_vector_model(
        batches in proptest::collection::vec(
            (proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..60), 1..6), proptest::prelude::any::<bool>()),
            1..12,
        ),
        segment_size_max_bytes in 40u64..400,
    ) {
        let config = PartitionLogConfig { segment_size_max_bytes };
        let io = MemIo::default();
        let mut log = open(&io, config).unwrap();
        let mut model: Vec<Vec<u8>> = Vec::new();
        for (batch, reopen) in batches {
            let first = block_on(log.append(&batch)).unwrap();
            proptest::prop_assert_eq!(first, model.len() as u64);
            model.extend(batch);
            if reopen {
                block_on(log.sync()).unwrap();
                drop(log);
                log = open(&io, config).unwrap();
            }
        }
        proptest::prop_assert_eq!(log.next_offset(), model.len() as u64);
        let all: Vec<(u64, Vec<u8>)> = model.iter().cloned().enumerate().map(|(i, m)| (i as u64, m)).collect();
        proptest::prop_assert_eq!(read_all(&log), all.clone());
        let from = model.len() / 2;
        proptest::prop_assert_eq!(block_on(log.read(from as u64, 3)).unwrap(), all[from..(from + 3).min(all.len())].to_vec());
    }
}

#[test]
fn one_read_loads_at_most_the_byte_budget() {
    use shoal_shard::partition_log::{READ_SIZE_MAX_BYTES, RECORD_PAYLOAD_SIZE_MAX_BYTES};
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    let big = vec![vec![1u8; RECORD_PAYLOAD_SIZE_MAX_BYTES]; 20];
    block_on(log.append(&big)).unwrap();
    let records = block_on(log.read(0, 100)).unwrap();
    let record_size = (RECORD_HEADER_SIZE_BYTES + RECORD_PAYLOAD_SIZE_MAX_BYTES) as u64;
    assert_eq!(records.len() as u64, READ_SIZE_MAX_BYTES / record_size);
    assert_eq!(records.last().unwrap().0, records.len() as u64 - 1);
    // The rest comes with the next read.
    let rest = block_on(log.read(records.len() as u64, 100)).unwrap();
    assert_eq!(records.len() + rest.len(), 20);
}
