//! The partition log over the in-memory `Io`: append, read, roll, reopen,
//! torn tail, corruption. `MemIo` loses nothing on reopen, so a crash's
//! effects (torn or lost unsynced writes, rot) are made by hand on the bytes;
//! what was synced is what the log's `sync` returned for.

use std::path::{Path, PathBuf};

use shoal_shard::partition_log::{
    PartitionLog, PartitionLogConfig, PartitionLogError, RECORD_HEADER_SIZE_BYTES, RecordBatch,
    SEGMENT_HEADER_SIZE_BYTES, SYNC_SLOT_SIZE_BYTES, Salvage, SalvageCut, segment_file_name,
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

/// Size of the record of `message(i)` (10-byte payload).
const RECORD_SIZE_BYTES: usize = RECORD_HEADER_SIZE_BYTES + 10;
/// Where a record's `len u32` sits in it (after the 16-byte checksum).
const RECORD_LEN_AT: usize = 16;

/// Byte position of the `index`-th `message` record in a segment.
fn record_at(index: usize) -> usize {
    SEGMENT_HEADER_SIZE_BYTES as usize + index * RECORD_SIZE_BYTES
}

fn flip_bit(io: &MemIo, path: &Path, bit: usize) {
    let mut bytes = io.file_bytes(path);
    bytes[bit / 8] ^= 1 << (bit % 8);
    io.set_file_bytes(path, bytes);
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
    assert_eq!(io.file_bytes(&segment(0)).len(), whole - RECORD_SIZE_BYTES);
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
    block_on(log.sync()).unwrap();
    drop(log);
    let mut bytes = io.file_bytes(&segment(0));
    bytes[record_at(1) + RECORD_HEADER_SIZE_BYTES] ^= 0xff; // payload of offset 1
    io.set_file_bytes(&segment(0), bytes.clone());
    match open(&io, PartitionLogConfig::default()) {
        Err(PartitionLogError::Corrupt { position, reason, .. }) => {
            assert_eq!(position, record_at(1) as u64);
            assert_eq!(reason, "checksum mismatch");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Nothing was truncated: a repair can still read what is there.
    assert_eq!(io.file_bytes(&segment(0)), bytes);
}

#[test]
fn a_flipped_bit_in_a_synced_length_is_corruption_not_a_torn_tail() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    append_range(&mut log, 0..3);
    block_on(log.sync()).unwrap();
    drop(log);
    let bytes = io.file_bytes(&segment(0));
    assert_eq!(bytes[record_at(1) + RECORD_LEN_AT], 10);
    flip_bit(&io, &segment(0), (record_at(1) + RECORD_LEN_AT) * 8); // length 10 -> 11
    // Before the sync marker, the look-ahead used the damaged length, missed
    // record 2, and open returned Ok with offset 0 only, truncating 1 and 2.
    match open(&io, PartitionLogConfig::default()) {
        Err(PartitionLogError::Corrupt { position, .. }) => assert_eq!(position, record_at(1) as u64),
        other => panic!("expected Corrupt at record 1, got {other:?}"),
    }
    let mut expected_bytes = bytes;
    expected_bytes[record_at(1) + RECORD_LEN_AT] = 11;
    assert_eq!(io.file_bytes(&segment(0)), expected_bytes, "nothing was truncated");
}

#[test]
fn a_hole_in_an_unsynced_batch_is_a_torn_tail_not_corruption() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    append_range(&mut log, 0..3);
    block_on(log.sync()).unwrap();
    append_range(&mut log, 3..6);
    drop(log);
    // Writeback persisted records 4 and 5 but not record 3's payload: a crash
    // before the sync. Nothing after offset 2 was promised.
    let mut bytes = io.file_bytes(&segment(0));
    let payload_3 = record_at(3) + RECORD_HEADER_SIZE_BYTES;
    bytes[payload_3..payload_3 + 10].fill(0);
    io.set_file_bytes(&segment(0), bytes);
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    assert_eq!(read_all(&log), expected(0..3));
    assert_eq!(
        io.file_bytes(&segment(0)).len(),
        record_at(3),
        "the torn batch is truncated, valid records after the hole too"
    );
    assert_eq!(append_range(&mut log, 3..5), 3);
    drop(log);
    assert_eq!(read_all(&open(&io, PartitionLogConfig::default()).unwrap()), expected(0..5));
}

#[test]
fn damage_in_synced_records_is_corruption_even_with_an_unsynced_tail() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    append_range(&mut log, 0..3);
    block_on(log.sync()).unwrap();
    append_range(&mut log, 3..4);
    drop(log);
    // Record 2 is the last synced one: nothing valid follows it once the
    // unsynced record 3 is torn away too, yet it was promised.
    let mut bytes = io.file_bytes(&segment(0));
    bytes[record_at(2) + RECORD_HEADER_SIZE_BYTES] ^= 1;
    bytes.truncate(record_at(3) + 5);
    io.set_file_bytes(&segment(0), bytes);
    assert!(matches!(
        open(&io, PartitionLogConfig::default()),
        Err(PartitionLogError::Corrupt { position, .. }) if position == record_at(2) as u64
    ));
}

#[test]
fn a_synced_record_cut_off_is_corruption() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    append_range(&mut log, 0..3);
    block_on(log.sync()).unwrap();
    drop(log);
    let mut bytes = io.file_bytes(&segment(0));
    bytes.truncate(record_at(2) + 3);
    io.set_file_bytes(&segment(0), bytes);
    assert!(matches!(open(&io, PartitionLogConfig::default()), Err(PartitionLogError::Corrupt { position: 0, .. })));
}

#[test]
fn a_torn_marker_write_leaves_one_whole_marker_in_each_slot() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    append_range(&mut log, 0..2);
    block_on(log.sync()).unwrap(); // marker 1 in both slots
    let slot = SYNC_SLOT_SIZE_BYTES as usize;
    let marker_1 = io.file_bytes(&segment(0))[..slot].to_vec();
    append_range(&mut log, 2..4);
    block_on(log.sync()).unwrap(); // marker 2 in both slots
    drop(log);
    // Writeback persisted only the second sector of marker 2's write.
    let mut bytes = io.file_bytes(&segment(0));
    bytes[..slot].copy_from_slice(&marker_1);
    io.set_file_bytes(&segment(0), bytes);
    let log = open(&io, PartitionLogConfig::default()).unwrap();
    assert_eq!(read_all(&log), expected(0..4));
    drop(log);
    // Recovery wrote a new marker covering what it kept: damage there is
    // corruption now, not a torn tail.
    flip_bit(&io, &segment(0), (record_at(3) + RECORD_HEADER_SIZE_BYTES) * 8);
    assert!(matches!(open(&io, PartitionLogConfig::default()), Err(PartitionLogError::Corrupt { .. })));
}

#[test]
fn rot_in_the_newest_slot_does_not_move_the_promise_back() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    append_range(&mut log, 0..2);
    block_on(log.sync()).unwrap();
    append_range(&mut log, 2..4);
    block_on(log.sync()).unwrap();
    drop(log);
    // Two faults the fuzzer combined: one slot rots, and so does record 3,
    // which only the newest marker covers. With one marker per slot, the
    // older marker took over and record 3 was dropped as a torn tail.
    let mut bytes = io.file_bytes(&segment(0));
    bytes[..SYNC_SLOT_SIZE_BYTES as usize].fill(0xa5);
    bytes[record_at(3) + RECORD_HEADER_SIZE_BYTES] ^= 1;
    io.set_file_bytes(&segment(0), bytes);
    assert!(matches!(
        open(&io, PartitionLogConfig::default()),
        Err(PartitionLogError::Corrupt { position, .. }) if position == record_at(3) as u64
    ));
}

#[test]
fn a_segment_with_records_but_no_readable_marker_is_corruption() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    append_range(&mut log, 0..2);
    block_on(log.sync()).unwrap();
    drop(log);
    let mut bytes = io.file_bytes(&segment(0));
    bytes[0] ^= 1;
    bytes[SYNC_SLOT_SIZE_BYTES as usize] ^= 1;
    io.set_file_bytes(&segment(0), bytes);
    assert!(matches!(open(&io, PartitionLogConfig::default()), Err(PartitionLogError::Corrupt { position: 0, .. })));
}

#[test]
fn a_torn_segment_creation_is_created_again() {
    let io = MemIo::default();
    let mut log = open(&io, small()).unwrap();
    append_range(&mut log, 0..3);
    append_range(&mut log, 3..4); // rolls: segment 3 is created
    drop(log);
    // The crash came during segment 3's creation: its slots never landed
    // (and so neither did its record, which is written after them).
    io.set_file_bytes(&segment(3), vec![0x5a; 700]);
    let mut log = open(&io, small()).unwrap();
    assert_eq!(read_all(&log), expected(0..3));
    assert_eq!(append_range(&mut log, 3..5), 3);
    drop(log);
    assert_eq!(read_all(&open(&io, small()).unwrap()), expected(0..5));
}

#[test]
fn a_sealed_segment_longer_than_its_seal_is_corruption() {
    let io = MemIo::default();
    let mut log = open(&io, small()).unwrap();
    append_range(&mut log, 0..5);
    drop(log);
    let mut bytes = io.file_bytes(&segment(0));
    bytes.extend_from_slice(&[0; 10]);
    io.set_file_bytes(&segment(0), bytes);
    assert!(matches!(open(&io, small()), Err(PartitionLogError::Corrupt { .. })));
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
    bytes[record_at(0) + RECORD_HEADER_SIZE_BYTES] ^= 1;
    io.set_file_bytes(&segment(0), bytes);
    match block_on(log.read(0, 1)) {
        Err(PartitionLogError::Corrupt { position, .. }) => assert_eq!(position, SEGMENT_HEADER_SIZE_BYTES),
        other => panic!("expected Corrupt, got {other:?}"),
    }
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
    assert!(matches!(block_on(log.append::<Vec<u8>>(&[])), Err(PartitionLogError::BatchSize { count: 0 })));
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

#[test]
fn a_record_batch_that_fits_goes_to_the_disk_in_one_write() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    let mut batch = RecordBatch::default();
    for offset in 0..5 {
        batch.push(offset, &message(offset));
    }
    let writes_before = io.writes_to(&segment(0)).len();
    assert_eq!(block_on(log.append_batch(&mut batch)).unwrap(), 0);
    let writes = io.writes_to(&segment(0));
    assert_eq!(writes[writes_before..], [(SEGMENT_HEADER_SIZE_BYTES, 5 * RECORD_SIZE_BYTES)]);
    assert_eq!(batch.len(), 5, "the batch is left to the caller");
    assert_eq!(read_all(&log), expected(0..5));
}

#[test]
fn a_record_batch_across_rolls_reads_back_with_the_checksums_push_returned() {
    let io = MemIo::default();
    let mut log = open(&io, small()).unwrap();
    append_range(&mut log, 0..2);
    let mut batch = RecordBatch::default();
    let sums: Vec<u128> = (2..10).map(|offset| batch.push(offset, &message(offset))).collect();
    assert_eq!(block_on(log.append_batch(&mut batch)).unwrap(), 2);
    // 3 records per segment: 0..3, 3..6, 6..9, 9..10.
    assert_eq!(log.segment_count(), 4);
    assert_eq!(log.active_base_offset(), 9);
    let records = block_on(log.read_records(2, usize::MAX, u64::MAX)).unwrap();
    let read: Vec<(u64, u128, Vec<u8>)> =
        records.iter_with_checksums().map(|(offset, sum, payload)| (offset, sum, payload.to_vec())).collect();
    let want: Vec<(u64, u128, Vec<u8>)> =
        (2..10).zip(sums).map(|(offset, sum)| (offset, sum, message(offset))).collect();
    assert_eq!(read, want);
    block_on(log.sync()).unwrap();
    drop(log);
    let log = open(&io, small()).unwrap();
    assert_eq!(read_all(&log), expected(0..10));
}

/// Up to 5 batches of up to 4 messages of up to 39 bytes, each synced.
fn synced_batches() -> impl proptest::strategy::Strategy<Value = Vec<Vec<Vec<u8>>>> {
    use proptest::collection::vec;
    vec(vec(vec(proptest::prelude::any::<u8>(), 0..40), 1..5), 1..6)
}

/// Append and sync each batch, then flip one bit of one file (picked by the
/// inputs). Returns what was written, by offset, and where the bit flipped.
fn synced_then_one_bit_flipped(
    io: &MemIo,
    config: PartitionLogConfig,
    batches: Vec<Vec<Vec<u8>>>,
    file_pick: usize,
    bit_pick: usize,
) -> (Vec<(u64, Vec<u8>)>, PathBuf, usize) {
    let mut log = open(io, config).unwrap();
    let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
    for batch in batches {
        let first = block_on(log.append(&batch)).unwrap();
        model.extend(batch.into_iter().enumerate().map(|(i, m)| (first + i as u64, m)));
        block_on(log.sync()).unwrap();
    }
    drop(log);
    let paths = io.paths();
    let path = paths[file_pick % paths.len()].clone();
    let bit = bit_pick % (io.file_bytes(&path).len() * 8);
    flip_bit(io, &path, bit);
    (model, path, bit)
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

fn open_salvaging(io: &MemIo, config: PartitionLogConfig) -> (PartitionLog<MemIo>, Option<Salvage>) {
    block_on(PartitionLog::open_salvaging(io.clone(), &dir(), config)).unwrap()
}

#[test]
fn salvage_keeps_the_prefix_before_damage_in_a_sealed_segment_and_cuts_the_rest() {
    let io = MemIo::default();
    let mut log = open(&io, small()).unwrap();
    append_range(&mut log, 0..8); // segments 0..3, 3..6, 6..8
    block_on(log.sync()).unwrap();
    drop(log);
    // Offset 4 (second record of the sealed segment 3..6) rots.
    flip_bit(&io, &segment(3), (record_at(1) + RECORD_HEADER_SIZE_BYTES) * 8);
    assert!(matches!(open(&io, small()), Err(PartitionLogError::Corrupt { .. })));
    let (mut log, salvage) = open_salvaging(&io, small());
    let salvage = salvage.expect("damage was cut");
    assert_eq!(salvage.first_lost_offset, 4);
    assert!(salvage.damage.contains("corrupt"), "{}", salvage.damage);
    let SalvageCut::Segment { segment: cut_segment, places } = &salvage.cut else { panic!("{:?}", salvage.cut) };
    assert_eq!(*cut_segment, segment(3));
    assert_eq!(places.len(), 1, "the marker covers the records: only they are suspect");
    assert_eq!(places[0].start, record_at(1) as u64, "from the record that failed its check");
    assert_eq!(read_all(&log), expected(0..4));
    assert!(!io.paths().contains(&segment(6)), "the segment after the damage was removed");
    // The log goes on from the cut, and opens plainly afterwards.
    append_range(&mut log, 4..7);
    block_on(log.sync()).unwrap();
    drop(log);
    assert_eq!(read_all(&open(&io, small()).unwrap()), expected(0..7));
}

#[test]
fn salvage_of_a_healthy_log_changes_nothing() {
    let io = MemIo::default();
    let mut log = open(&io, small()).unwrap();
    append_range(&mut log, 0..5);
    block_on(log.sync()).unwrap();
    drop(log);
    // Every open gives the active segment a new marker (same promise, next
    // sequence): the marker it read may live only in the page cache. The
    // sealed segments and every record stay as they were.
    let records_and_seals = || -> Vec<Vec<u8>> {
        let paths = io.paths();
        let active = paths.iter().max().expect("the log has segments").clone();
        let slots = 2 * SYNC_SLOT_SIZE_BYTES as usize;
        paths
            .iter()
            .map(|path| {
                let bytes = io.file_bytes(path);
                if *path == active { bytes[slots..].to_vec() } else { bytes }
            })
            .collect()
    };
    let before = records_and_seals();
    let (log, salvage) = open_salvaging(&io, small());
    assert_eq!(salvage, None);
    assert_eq!(read_all(&log), expected(0..5));
    assert_eq!(before, records_and_seals());
}

#[test]
fn salvage_mends_a_missing_segment_and_a_segment_without_markers() {
    let io = MemIo::default();
    let mut log = open(&io, small()).unwrap();
    append_range(&mut log, 0..8);
    block_on(log.sync()).unwrap();
    drop(log);
    block_on(shoal_vsr::Io::remove(&io, &segment(3))).unwrap();
    let (log, salvage) = open_salvaging(&io, small());
    let salvage = salvage.expect("the gap was cut");
    assert_eq!(salvage.first_lost_offset, 3);
    assert_eq!(salvage.cut, SalvageCut::Gap { expected_offset: 3 });
    assert_eq!(read_all(&log), expected(0..3));
    drop(log);
    // Both markers of the first segment rot: its records still prove
    // themselves (checksum and offset), so they are kept.
    let mut bytes = io.file_bytes(&segment(0));
    bytes[0] ^= 1;
    bytes[SYNC_SLOT_SIZE_BYTES as usize] ^= 1;
    io.set_file_bytes(&segment(0), bytes);
    assert!(open(&io, small()).is_err());
    let (log, salvage) = open_salvaging(&io, small());
    let salvage = salvage.expect("the markers' loss was mended");
    assert_eq!(salvage.first_lost_offset, 3);
    let slots = 0..SEGMENT_HEADER_SIZE_BYTES;
    assert_eq!(salvage.cut, SalvageCut::Segment { segment: segment(0), places: vec![slots] });
    assert_eq!(read_all(&log), expected(0..3));
}

proptest::proptest! {
    /// Flip any one bit anywhere in a synced log (records, sync slots, any
    /// segment): open either refuses with an error or returns every record
    /// intact. Never Ok with fewer or different records.
    #[test]
    fn one_flipped_bit_in_a_synced_log_is_never_silent_loss(
        batches in synced_batches(),
        segment_size_max_bytes in 60u64..400,
        file_pick in proptest::prelude::any::<usize>(),
        bit_pick in proptest::prelude::any::<usize>(),
    ) {
        let config = PartitionLogConfig { segment_size_max_bytes };
        let io = MemIo::default();
        let (model, path, bit) = synced_then_one_bit_flipped(&io, config, batches, file_pick, bit_pick);
        if let Ok(log) = open(&io, config) {
            proptest::prop_assert_eq!(read_all(&log), model, "Ok after flipping bit {} of {:?}", bit, path);
        }
    }

    /// Flip any one bit anywhere in a synced log, then salvage: the log
    /// opens, holds exactly a prefix of what was written (never a changed
    /// record), says where it was cut, and opens plainly afterwards.
    #[test]
    fn salvage_after_one_flipped_bit_keeps_an_exact_prefix(
        batches in synced_batches(),
        segment_size_max_bytes in 60u64..400,
        file_pick in proptest::prelude::any::<usize>(),
        bit_pick in proptest::prelude::any::<usize>(),
    ) {
        let config = PartitionLogConfig { segment_size_max_bytes };
        let io = MemIo::default();
        let (model, path, bit) = synced_then_one_bit_flipped(&io, config, batches, file_pick, bit_pick);
        let (log, salvage) = open_salvaging(&io, config);
        let kept = read_all(&log);
        proptest::prop_assert!(kept.len() <= model.len());
        proptest::prop_assert_eq!(&kept[..], &model[..kept.len()], "a kept record differs after bit {} of {:?}", bit, path);
        match salvage {
            Some(salvage) => {
                proptest::prop_assert_eq!(salvage.first_lost_offset, kept.len() as u64);
                // The simulator holds a cut to the damage it injected, by
                // bytes: the cut must name the flipped byte's place.
                let byte = (bit / 8) as u64;
                let named = matches!(
                    &salvage.cut,
                    SalvageCut::Segment { segment, places }
                        if *segment == path && places.iter().any(|place| place.contains(&byte))
                );
                proptest::prop_assert!(named, "bit {} of {:?} flipped, the salvage names {:?}", bit, path, salvage.cut);
            }
            None => proptest::prop_assert_eq!(kept.len(), model.len(), "records lost without a salvage report"),
        }
        drop(log);
        proptest::prop_assert_eq!(read_all(&open(&io, config).unwrap()), kept);
    }
}

/// On the simulated disk (pending writes lost, torn or applied at a crash):
/// a crash between any two storage calls of a sync, or of a roll, never
/// makes open refuse, never loses what an earlier sync returned for, and
/// keeps everything once the sync itself returned.
#[test]
fn a_crash_at_any_step_of_a_sync_or_roll_keeps_every_promise() {
    use shoal_sim::{SimIo, block_on_ready};
    /// Storage calls an append (with a roll) plus a sync takes, with room.
    const STEPS_MAX: u64 = 16;
    for seed in 0..24u64 {
        for steps in 0..STEPS_MAX {
            let io = SimIo::new(seed);
            let config = small();
            let mut log = block_on_ready(PartitionLog::open(io.clone(), &dir(), config)).unwrap();
            block_on_ready(log.append(&(0..2).map(message).collect::<Vec<_>>())).unwrap();
            block_on_ready(log.sync()).unwrap();
            io.disk().crash_after_steps(steps);
            // Two more records roll the segment (3 per segment), then a sync.
            let promised_all = block_on_ready(log.append(&(2..4).map(message).collect::<Vec<_>>())).is_ok()
                && block_on_ready(log.sync()).is_ok();
            drop(log);
            io.crash();
            let log = block_on_ready(PartitionLog::open(io.clone(), &dir(), config))
                .unwrap_or_else(|e| panic!("seed {seed} steps {steps}: a crash is not corruption: {e}"));
            let records = block_on_ready(log.read(0, usize::MAX)).unwrap();
            let want = if promised_all { 4 } else { 2 };
            assert!(records.len() >= want, "seed {seed} steps {steps}: {} records, {want} promised", records.len());
            assert_eq!(records, expected(0..records.len() as u64), "seed {seed} steps {steps}");
        }
    }
}

/// `sync` split for a checkpoint running beside the node (session 16): the
/// records and their marker are made durable by a future that owns what it
/// needs; `end_sync` turns its end into the promise.
#[test]
fn a_sync_run_beside_the_log_promises_what_was_appended_when_it_began() {
    use shoal_shard::partition_log::BeginSync;
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    assert!(matches!(log.begin_sync(), BeginSync::Nothing), "nothing appended, nothing to promise");
    append_range(&mut log, 0..3);
    let unsynced = log.unsynced_bytes();
    assert!(unsynced > 0);
    let BeginSync::Running(sync) = log.begin_sync() else { panic!("records to promise") };
    assert!(log.sync_in_flight());
    let syncs_before = io.sync_count();
    let ended = block_on(sync.run());
    assert!(ended.succeeded());
    assert_eq!(io.sync_count(), syncs_before + 2, "the records' fsync, then the marker's");
    assert_eq!(log.unsynced_bytes(), unsynced, "nothing is promised before end_sync");
    log.end_sync(ended).unwrap();
    assert!(!log.sync_in_flight());
    assert_eq!(log.unsynced_bytes(), 0);
    append_range(&mut log, 3..5);
    drop(log);
    assert_eq!(read_all(&open(&io, PartitionLogConfig::default()).unwrap()), expected(0..5));
}

/// A marker write that fails promises nothing: the records stay unpromised
/// and the next sync promises them.
#[test]
fn a_sync_beside_the_log_whose_marker_write_fails_promises_nothing() {
    use shoal_shard::partition_log::BeginSync;
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    append_range(&mut log, 0..3);
    let unsynced = log.unsynced_bytes();
    let BeginSync::Running(sync) = log.begin_sync() else { panic!("records to promise") };
    io.fail_next_writes(1);
    let ended = block_on(sync.run());
    assert!(!ended.succeeded());
    assert!(log.end_sync(ended).is_err());
    assert_eq!(log.unsynced_bytes(), unsynced, "still unpromised");
    block_on(log.sync()).unwrap();
    assert_eq!(log.unsynced_bytes(), 0);
}

/// Nothing is appended while a sync runs beside the log: its marker covers
/// the log as it was when it began, and a roll could seal the segment under
/// it. The node keeps what it applies in memory meanwhile.
#[test]
#[should_panic(expected = "nothing is appended while a sync runs beside the log")]
fn appending_while_a_sync_runs_beside_the_log_is_a_bug() {
    let io = MemIo::default();
    let mut log = open(&io, PartitionLogConfig::default()).unwrap();
    append_range(&mut log, 0..3);
    let _sync = log.begin_sync();
    append_range(&mut log, 3..4);
}
