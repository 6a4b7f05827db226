//! A partition log holds a bounded number of files open, however many
//! segments it rolled: the story of steady seed 1 (`OpenFiles`), where one
//! group of a 4 KiB-segment run held 13 files open after 0.7 s because
//! every sealed segment kept its handle (two, after a roll: the file and
//! its writer) for the life of the process.

use std::path::Path;

use shoal_shard::PartitionLog;
use shoal_shard::partition_log::{PartitionLogConfig, SEALED_SEGMENT_FILES_OPEN_MAX};
use shoal_sim::{SimIo, block_on_ready};

const DIR: &str = "/data/partition";
const SEGMENT_SIZE_MAX_BYTES: u64 = 256;
const MESSAGES: u64 = 300;

/// The active segment, the next one while a roll creates it, and the cache
/// of sealed ones.
const FILES_OPEN_MAX: u64 = 2 + SEALED_SEGMENT_FILES_OPEN_MAX as u64;

fn message(i: u64) -> Vec<u8> {
    format!("message-{i:04}").into_bytes()
}

fn open(io: &SimIo) -> PartitionLog<SimIo> {
    let config = PartitionLogConfig { segment_size_max_bytes: SEGMENT_SIZE_MAX_BYTES };
    block_on_ready(PartitionLog::open(io.clone(), Path::new(DIR), config)).expect("the partition log opens")
}

/// Read every offset from `from`, one record at a time, in `order`.
fn read_each(log: &PartitionLog<SimIo>, order: impl Iterator<Item = u64>) {
    for offset in order {
        let records = block_on_ready(log.read(offset, 1)).expect("a sealed segment reads back");
        assert_eq!(records, vec![(offset, message(offset))], "offset {offset}");
    }
}

#[test]
fn a_partition_log_holds_a_bounded_number_of_files_open_however_many_segments_it_rolls() {
    let io = SimIo::new(7);
    // As a process's RLIMIT_NOFILE: an open past it fails with EMFILE.
    io.disk().open_files_max = Some(FILES_OPEN_MAX);
    let mut log = open(&io);
    for i in 0..MESSAGES {
        assert_eq!(block_on_ready(log.append(&[message(i)])).expect("append"), i);
        if i % 7 == 0 {
            block_on_ready(log.sync()).expect("sync");
        }
    }
    block_on_ready(log.sync()).expect("sync");
    let segments = log.segment_count();
    assert!(segments > 20 * SEALED_SEGMENT_FILES_OPEN_MAX, "the story rolls many segments, not {segments}");
    // Forward, backward and jumping between far segments: the cache
    // evicts, and an evicted segment opens again when read.
    read_each(&log, 0..MESSAGES);
    read_each(&log, (0..MESSAGES).rev());
    read_each(&log, (0..MESSAGES).map(|i| if i % 2 == 0 { i / 2 } else { MESSAGES - 1 - i / 2 }));
    let (open_now, peak) = io.disk().open_files();
    assert!(peak <= FILES_OPEN_MAX, "peak {peak} open files over {segments} segments");
    assert!(open_now <= 1 + SEALED_SEGMENT_FILES_OPEN_MAX as u64, "{open_now} open after the reads");
    drop(log);
    assert_eq!(io.disk().open_files().0, 0, "a dropped log closes every file");

    // Recovery scans every sealed segment once, and keeps none of them open.
    let log = open(&io);
    assert_eq!((log.next_offset(), log.segment_count()), (MESSAGES, segments));
    assert_eq!(io.disk().open_files().0, 1, "only the active segment stays open after recovery");
    read_each(&log, (0..MESSAGES).rev());
    assert!(io.disk().open_files().1 <= FILES_OPEN_MAX);
    assert!(io.disk().open_files_refused().is_none());
}
