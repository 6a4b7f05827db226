//! A latent sector error as Linux's page cache sees it (the whole 4 KiB
//! page unreadable, a write over part of it failing with EIO) in a
//! partition segment: the salvage must leave a log that can be written
//! again, never one whose every restart fails (disk-rot-pages: a latent
//! error in a segment's sync slots made the salvage's own marker write
//! fail, and the replica stopped at every start).

use std::path::{Path, PathBuf};

use shoal_shard::PartitionLog;
use shoal_shard::partition_log::PartitionLogConfig;
use shoal_sim::disk::LINUX_PAGE_SIZE_BYTES;
use shoal_sim::{SimIo, block_on_ready};

const DIR: &str = "/data/partition";
const CONFIG: PartitionLogConfig = PartitionLogConfig { segment_size_max_bytes: 16 * 1024 };

fn message(i: u64) -> Vec<u8> {
    format!("{i:0200}").into_bytes()
}

fn first_segment() -> PathBuf {
    Path::new(DIR).join("00000000000000000000.log")
}

/// A log of `count` synced messages on a disk whose damage unit is a page.
fn written_log(count: u64) -> SimIo {
    let io = SimIo::new(11);
    io.disk().latent_error_page_bytes = LINUX_PAGE_SIZE_BYTES;
    let mut log = block_on_ready(PartitionLog::open(io.clone(), Path::new(DIR), CONFIG)).expect("opens");
    for i in 0..count {
        block_on_ready(log.append(&[message(i)])).expect("append");
    }
    block_on_ready(log.sync()).expect("sync");
    assert_eq!(log.segment_count(), 1, "the story keeps one segment");
    io
}

/// Salvage, append `more`, sync, and open again without salvaging: the
/// log must hold the kept prefix and the new messages, all readable.
fn salvage_then_write(io: &SimIo, more: u64) -> u64 {
    let (mut log, salvage) = block_on_ready(PartitionLog::open_salvaging(io.clone(), Path::new(DIR), CONFIG))
        .expect("a damaged segment is salvaged, not a refusal to start");
    let kept = salvage.expect("the damage is found").first_lost_offset;
    assert_eq!(log.next_offset(), kept);
    for i in kept..kept + more {
        block_on_ready(log.append(&[message(i)])).expect("an append after the salvage");
    }
    block_on_ready(log.sync()).expect("a sync after the salvage");
    drop(log);
    let log = block_on_ready(PartitionLog::open(io.clone(), Path::new(DIR), CONFIG)).expect("the salvaged log opens");
    assert_eq!(log.next_offset(), kept + more);
    let read = block_on_ready(log.read(0, (kept + more) as usize)).expect("every kept and new record reads");
    assert_eq!(read, (0..kept + more).map(|i| (i, message(i))).collect::<Vec<_>>());
    kept
}

#[test]
fn an_unreadable_sync_slots_page_is_emptied_so_the_salvaged_segment_can_be_written() {
    let io = written_log(40);
    // In the second sync slot: the first page (slots and the first
    // records) reads as EIO, and the slots' 1 KiB write would need it.
    io.disk().fail_sector_reads(&first_segment(), 600).expect("the segment exists");
    let kept = salvage_then_write(&io, 5);
    assert_eq!(kept, 0, "nothing of the segment is trusted once its slots are unreadable");
}

#[test]
fn an_unreadable_record_page_is_cut_at_its_first_record_and_freed() {
    let io = written_log(40);
    // Page 2 of the segment: the records that touch it are cut, and the
    // truncation frees the page, so the next append writes a fresh one.
    io.disk().fail_sector_reads(&first_segment(), 2 * LINUX_PAGE_SIZE_BYTES + 700).expect("the segment exists");
    let kept = salvage_then_write(&io, 5);
    assert!(kept > 0 && kept < 40, "the prefix before the damaged page stays: kept {kept}");
}
