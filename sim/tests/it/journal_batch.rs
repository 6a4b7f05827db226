//! `append_batch`: one write per contiguous run of slots, the same checks
//! as `append`, and no phantom ops when a write fails.

use std::path::Path;

use shoal_sim::{SimIo, block_on_ready};
use shoal_vsr::io::OpenMode;
use shoal_vsr::journal::conformance::{Chain, config};
use shoal_vsr::journal::{JournalError, PrepareJournal};

const SLOT_COUNT: u64 = 16;

fn prepares(chain: &mut Chain, count: usize) -> Vec<(shoal_vsr::Header, Vec<u8>)> {
    (0..count).map(|_| chain.next_prepare()).collect()
}

fn as_batch(prepares: &[(shoal_vsr::Header, Vec<u8>)]) -> Vec<(shoal_vsr::Header, &[u8])> {
    prepares.iter().map(|(h, b)| (*h, b.as_slice())).collect()
}

#[test]
fn a_batch_that_wraps_the_ring_recovers_whole() {
    let io = SimIo::new(1);
    let dir = Path::new("/data/batch");
    let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config(SLOT_COUNT))).unwrap();
    let mut chain = Chain::new();
    // Ops 1..=16: slots 1..=15 in one run, then op 16 in slot 0.
    let batch = prepares(&mut chain, 16);
    block_on_ready(journal.append_batch(&as_batch(&batch))).unwrap();
    block_on_ready(journal.sync()).unwrap();
    assert_eq!(journal.op_max(), Some(16));
    drop(journal);
    io.crash();
    let (journal, recovery) =
        block_on_ready(PrepareJournal::open(&io, dir, config(SLOT_COUNT), OpenMode::ReadWrite)).unwrap();
    assert_eq!(recovery.ops_recovered, (1..=16).collect::<Vec<_>>());
    for (header, body) in &batch {
        let (read_header, read_body) = block_on_ready(journal.read(header.op)).unwrap();
        assert_eq!(read_header, *header);
        assert_eq!(&read_body, body);
    }
}

#[test]
fn a_failed_batch_leaves_no_phantom_op_and_can_be_retried() {
    let io = SimIo::new(2);
    let dir = Path::new("/data/batch");
    let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config(SLOT_COUNT))).unwrap();
    let mut chain = Chain::new();
    let batch = prepares(&mut chain, 20);
    block_on_ready(journal.append_batch(&as_batch(&batch[..10]))).unwrap();
    // The second batch wraps (two writes); fail its first write.
    io.disk().fail_next_write();
    assert!(block_on_ready(journal.append_batch(&as_batch(&batch[10..16]))).is_err());
    assert_eq!(journal.op_max(), Some(10));
    assert!(journal.header(11).is_none());
    block_on_ready(journal.append_batch(&as_batch(&batch[10..16]))).unwrap();
    assert_eq!(journal.op_max(), Some(16));
}

#[test]
fn a_batch_is_checked_like_append() {
    let io = SimIo::new(3);
    let dir = Path::new("/data/batch");
    let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config(SLOT_COUNT))).unwrap();
    let mut chain = Chain::new();
    let batch = prepares(&mut chain, 4);
    // Out of order: starts at op 2.
    let error = block_on_ready(journal.append_batch(&as_batch(&batch[1..]))).unwrap_err();
    assert!(matches!(error, JournalError::OpOutOfOrder { op: 2, expected: 1 }), "{error}");
    // A broken chain inside the batch.
    let mut broken = batch.clone();
    broken.swap(1, 2);
    assert!(block_on_ready(journal.append_batch(&as_batch(&broken))).is_err());
    assert_eq!(journal.op_max(), None);
    // Past the ring: 17 ops into 16 slots.
    let long = prepares(&mut Chain::new(), 17);
    let error = block_on_ready(journal.append_batch(&as_batch(&long))).unwrap_err();
    assert!(matches!(error, JournalError::SlotCollision { op: 17, .. }), "{error}");
    assert_eq!(journal.op_max(), None);
}

/// The production geometry: 1 MiB slots (`MESSAGE_SIZE_MAX_BYTES`).
fn config_large(slot_count: u64) -> shoal_vsr::journal::JournalConfig {
    shoal_vsr::journal::JournalConfig {
        message_size_max_bytes: shoal_vsr::header::MESSAGE_SIZE_MAX_BYTES,
        ..config(slot_count)
    }
}

fn prepare_with_body(chain: &mut Chain, body: Vec<u8>) -> (shoal_vsr::Header, Vec<u8>) {
    let header = shoal_vsr::journal::conformance::prepare(chain.op_next, chain.parent, &body);
    chain.parent = header.checksum;
    chain.op_next += 1;
    (header, body)
}

#[test]
fn a_small_prepare_writes_one_page_not_a_slot() {
    let io = SimIo::new(4);
    let dir = Path::new("/data/small");
    let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config_large(4))).unwrap();
    assert_eq!(journal.config().slot_size_bytes(), 1 << 20);
    let mut chain = Chain::new();
    let (header, body) = prepare_with_body(&mut chain, vec![7; 100]);
    let before = io.disk().writes();
    block_on_ready(journal.append(&header, &body)).unwrap();
    let after_append = io.disk().writes();
    assert_eq!((after_append.0 - before.0, after_append.1 - before.1), (1, 4096), "356 bytes round up to one page");
    block_on_ready(journal.sync()).unwrap();
    let after_sync = io.disk().writes();
    assert_eq!((after_sync.0 - after_append.0, after_sync.1 - after_append.1), (1, 256), "the ring copy: one header");
    // A batch of small prepares: one page each, no slot padding.
    let batch: Vec<_> = (0..3).map(|_| prepare_with_body(&mut chain, vec![9; 100])).collect();
    block_on_ready(journal.append_batch(&as_batch(&batch))).unwrap();
    let after_batch = io.disk().writes();
    assert_eq!((after_batch.0 - after_sync.0, after_batch.1 - after_sync.1), (3, 3 * 4096));
    block_on_ready(journal.sync()).unwrap();
    drop(journal);
    io.crash();
    let (_, recovery) = block_on_ready(PrepareJournal::open(&io, dir, config_large(4), OpenMode::ReadWrite)).unwrap();
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3, 4]);
}

/// Slots are not adjacent (a carried-copies region lies between two), but
/// a fresh batch of full prepares is still one write: it covers the
/// regions between its slots with zeros (no region of a fresh op's slot
/// names a live op), and recovery reads every prepare back.
#[test]
fn a_fresh_batch_of_full_prepares_is_one_write() {
    let io = SimIo::new(5);
    let dir = Path::new("/data/full");
    let config = config(SLOT_COUNT);
    let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config)).unwrap();
    let mut chain = Chain::new();
    let body_size_bytes = config.message_size_max_bytes as usize - shoal_vsr::header::HEADER_SIZE_BYTES;
    let batch: Vec<_> = (0..4).map(|_| prepare_with_body(&mut chain, vec![3; body_size_bytes])).collect();
    let before = io.disk().writes();
    block_on_ready(journal.append_batch(&as_batch(&batch))).unwrap();
    let after = io.disk().writes();
    let regions = 3 * shoal_vsr::journal::COPIES_REGION_BYTES;
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 4 * config.slot_size_bytes() + regions));
    block_on_ready(journal.sync()).unwrap();
    drop(journal);
    io.crash();
    let (journal, recovery) = block_on_ready(PrepareJournal::open(&io, dir, config, OpenMode::ReadWrite)).unwrap();
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3, 4]);
    for (header, body) in &batch {
        assert_eq!(block_on_ready(journal.read(header.op)).unwrap(), (*header, body.clone()));
    }
}

/// Group commit: the first write of each batch carries the copies the
/// previous flush made ready, in the sectors just before its header, so
/// the flush writes nothing but its fsync, and each batch is reported
/// durable one flush after its own.
#[test]
fn a_streamed_batch_carries_the_previous_batchs_copies_in_its_first_write() {
    let io = SimIo::new(12);
    let dir = Path::new("/data/carried");
    let config = config(SLOT_COUNT);
    let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config)).unwrap();
    let mut chain = Chain::new();
    let first: Vec<_> = (0..3).map(|_| prepare_with_body(&mut chain, vec![5; 100])).collect();
    block_on_ready(journal.append_batch(&as_batch(&first))).unwrap();
    assert_eq!(block_on_ready(journal.flush()).unwrap(), Vec::<u64>::new());
    let second: Vec<_> = (0..3).map(|_| prepare_with_body(&mut chain, vec![6; 100])).collect();
    let before = io.disk().writes();
    block_on_ready(journal.append_batch(&as_batch(&second))).unwrap();
    let after_append = io.disk().writes();
    // One write: op 4's region (one page, with ops 1..=3's copies in
    // entries 3..1) and its page, then ops 5 and 6 with their regions
    // (filler): a 100-byte prepare fills a one-page slot, so they join.
    let page = 4096;
    assert_eq!((after_append.0 - before.0, after_append.1 - before.1), (1, 6 * page));
    assert_eq!(block_on_ready(journal.flush()).unwrap(), vec![1, 2, 3]);
    let after_flush = io.disk().writes();
    assert_eq!(after_flush, after_append, "the flush had no copy left to write");
    assert!(journal.is_durable(3) && !journal.is_durable(4));
    // A lone batch with nothing after it writes its copies to the ring.
    block_on_ready(journal.sync()).unwrap();
    assert!((1..=6).all(|op| journal.is_durable(op)));
    drop(journal);
    io.crash();
    let (_, recovery) = block_on_ready(PrepareJournal::open(&io, dir, config, OpenMode::ReadWrite)).unwrap();
    assert_eq!(recovery.ops_recovered, (1..=6).collect::<Vec<_>>());
}

#[test]
fn a_largest_message_fits_one_slot() {
    let io = SimIo::new(6);
    let dir = Path::new("/data/largest");
    let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config_large(2))).unwrap();
    let body_size_bytes = shoal_vsr::header::MESSAGE_SIZE_MAX_BYTES as usize - shoal_vsr::header::HEADER_SIZE_BYTES;
    let (header, body) = prepare_with_body(&mut Chain::new(), vec![5; body_size_bytes]);
    block_on_ready(journal.append(&header, &body)).unwrap();
    block_on_ready(journal.sync()).unwrap();
    assert_eq!(block_on_ready(journal.read(1)).unwrap(), (header, body));
}

/// `flush` is one fsync per batch: a batch is durable with its ring copy
/// (acknowledgeable) after the next batch's flush, never before.
#[test]
fn flush_acknowledges_each_batch_one_fsync_later() {
    let io = SimIo::new(7);
    let dir = Path::new("/data/flush");
    let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config(SLOT_COUNT))).unwrap();
    let mut chain = Chain::new();
    let first = prepares(&mut chain, 3);
    block_on_ready(journal.append_batch(&as_batch(&first))).unwrap();
    assert_eq!(block_on_ready(journal.flush()).unwrap(), Vec::<u64>::new(), "prepares durable, copies not yet");
    assert!(!journal.is_durable(1));
    let second = prepares(&mut chain, 2);
    block_on_ready(journal.append_batch(&as_batch(&second))).unwrap();
    assert_eq!(block_on_ready(journal.flush()).unwrap(), vec![1, 2, 3]);
    assert!(journal.is_durable(3) && !journal.is_durable(4));
    // A rewrite of a durable-prepare op waits for its own fsync again.
    block_on_ready(journal.write_prepare(&second[0].0, &second[0].1)).unwrap();
    assert_eq!(block_on_ready(journal.flush()).unwrap(), vec![5]);
    block_on_ready(journal.sync()).unwrap();
    assert!((1..=5).all(|op| journal.is_durable(op)));
    drop(journal);
    io.crash();
    let (_, recovery) =
        block_on_ready(PrepareJournal::open(&io, dir, config(SLOT_COUNT), OpenMode::ReadWrite)).unwrap();
    assert_eq!(recovery.ops_recovered, (1..=5).collect::<Vec<_>>());
}

/// A compaction into the spare writes the file header, the ring in one
/// write, the live prepares and a sector per stale slot; nothing sized by
/// the file.
#[test]
fn a_drain_into_the_spare_writes_little() {
    let io = SimIo::new(8);
    let dir = Path::new("/data/drain");
    let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config_large(8))).unwrap();
    let mut chain = Chain::new();
    for _ in 0..6 {
        let (header, body) = prepare_with_body(&mut chain, vec![1; 100]);
        block_on_ready(journal.append(&header, &body)).unwrap();
    }
    block_on_ready(journal.sync()).unwrap();
    let before = io.disk().writes();
    block_on_ready(journal.drain(4)).unwrap();
    let after = io.disk().writes();
    // The file header's two copies, ops 5 and 6 (one page each, op 6's
    // write with the carried-copies region before its slot), their two
    // ring copies in one write; the spare is fresh, nothing to clear.
    assert_eq!((after.0 - before.0, after.1 - before.1), (5, 2 * 4096 + 4096 + 2 * 4096 + 2 * 256));
    let (header, body) = prepare_with_body(&mut chain, vec![1; 100]);
    block_on_ready(journal.append(&header, &body)).unwrap();
    block_on_ready(journal.sync()).unwrap();
    let before = io.disk().writes();
    block_on_ready(journal.drain(6)).unwrap();
    let after = io.disk().writes();
    // Back into the first file, which held ops 1..=6: op 7 is carried, and
    // no stale slot above 6 needs clearing.
    assert_eq!((after.0 - before.0, after.1 - before.1), (4, 2 * 4096 + 4096 + 256));
    drop(journal);
    io.crash();
    let (_, recovery) = block_on_ready(PrepareJournal::open(&io, dir, config_large(8), OpenMode::ReadWrite)).unwrap();
    assert_eq!(recovery.ops_recovered, vec![7]);
}

/// Where the file system cannot exchange, a drain renames the tmp file over
/// the journal (the retired file is gone) and the next drain starts a
/// fresh tmp file: slower, the same log.
#[test]
fn a_drain_without_exchange_falls_back_to_rename() {
    let io = SimIo::new(9);
    io.disk().exchange_unsupported = true;
    let dir = Path::new("/data/rename");
    let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config(SLOT_COUNT))).unwrap();
    let mut chain = Chain::new();
    for through in [4, 8] {
        let batch = prepares(&mut chain, 6);
        block_on_ready(journal.append_batch(&as_batch(&batch))).unwrap();
        block_on_ready(journal.sync()).unwrap();
        block_on_ready(journal.drain(through)).unwrap();
        let listed = block_on_ready(shoal_vsr::io::Io::list_dir(&io, dir)).unwrap();
        assert_eq!(listed.len(), 1, "no spare survives a rename: {listed:?}");
    }
    drop(journal);
    io.crash();
    let (_, recovery) =
        block_on_ready(PrepareJournal::open(&io, dir, config(SLOT_COUNT), OpenMode::ReadWrite)).unwrap();
    assert_eq!(recovery.ops_recovered, (9..=12).collect::<Vec<_>>());
}

/// `write_prepares` (the node's group commit): ascending ops, gaps
/// allowed; each run of adjacent full slots is one write, a gap or a short
/// prepare ends a run, and a failed write indexes nothing of its run or
/// later ones.
#[test]
fn write_prepares_writes_each_prepare_once() {
    let io = SimIo::new(10);
    let dir = Path::new("/data/write-prepares");
    // Two-page slots: a short prepare (one page) does not fill its slot.
    let config = shoal_vsr::journal::JournalConfig { message_size_max_bytes: 8192, ..config(SLOT_COUNT) };
    let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config)).unwrap();
    let mut chain = Chain::new();
    let full_bytes = config.message_size_max_bytes as usize - shoal_vsr::header::HEADER_SIZE_BYTES;
    // Ops 1..=7; op 4 short, op 6 left out (a gap).
    let all: Vec<_> = (1..=7)
        .map(|op| prepare_with_body(&mut chain, vec![op as u8; if op == 4 { 10 } else { full_bytes }]))
        .collect();
    let chosen: Vec<(&shoal_vsr::Header, &[u8])> =
        all.iter().filter(|(h, _)| h.op != 6).map(|(h, b)| (h, b.as_slice())).collect();
    // A failed first write: nothing indexed, nothing promised.
    io.disk().fail_next_write();
    assert!(block_on_ready(journal.write_prepares(&chosen)).is_err());
    assert_eq!(journal.op_max(), None);
    let before = io.disk().writes();
    block_on_ready(journal.write_prepares(&chosen)).unwrap();
    let after = io.disk().writes();
    // Fresh ops 1..=4 one write (op 4 joins op 3, which fills its slot, and
    // is one page), filler over the regions of ops 2..=4; op 5 after the
    // short op 4 and op 7 after the gap each a write of its own.
    let slot = config.slot_size_bytes();
    let regions = 3 * shoal_vsr::journal::COPIES_REGION_BYTES;
    assert_eq!((after.0 - before.0, after.1 - before.1), (3, 5 * slot + 4096 + regions));
    assert_eq!(journal.op_max(), Some(7));
    assert_eq!(journal.repair_ops(), vec![6], "the gap is missing, not silently skipped");
    block_on_ready(journal.sync()).unwrap();
    drop(journal);
    io.crash();
    let (journal, recovery) = block_on_ready(PrepareJournal::open(&io, dir, config, OpenMode::ReadWrite)).unwrap();
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3, 4, 5, 7]);
    for (header, body) in all.iter().filter(|(h, _)| h.op != 6) {
        assert_eq!(block_on_ready(journal.read(header.op)).unwrap(), (*header, body.clone()));
    }
}

/// `write_messages` (what the node's storage calls): a message verified
/// when it was built is written and reads back; one whose body does not
/// match its header is refused before anything is written, whether or not
/// anything verified it, so the shortcut never lets a wrong body reach the
/// disk.
#[test]
fn write_messages_refuses_a_body_that_does_not_match_and_writes_verified_ones() {
    use shoal_vsr::message::Message;
    use std::rc::Rc;
    let io = SimIo::new(11);
    let dir = Path::new("/data/write-messages");
    let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config(SLOT_COUNT))).unwrap();
    let mut chain = Chain::new();
    let (first, first_body) = chain.next_prepare();
    let (second, second_body) = chain.next_prepare();
    let verified = Message::from_verified_frame(first, Rc::from(first_body.clone()));
    let wrong_body = Message::from_parts(second, Rc::from(b"not the body".to_vec()));
    let before = io.disk().writes();
    let refused = block_on_ready(journal.write_messages(&[&verified, &wrong_body]));
    assert!(matches!(refused, Err(JournalError::BadPrepare { op: 2, .. })), "{refused:?}");
    assert_eq!(io.disk().writes(), before, "nothing is written when one prepare is wrong");
    assert_eq!(journal.op_max(), None);
    let right_body = Message::from_parts(second, Rc::from(second_body.clone()));
    block_on_ready(journal.write_messages(&[&verified, &right_body])).unwrap();
    block_on_ready(journal.sync()).unwrap();
    assert_eq!(block_on_ready(journal.read(1)).unwrap(), (first, first_body));
    assert_eq!(block_on_ready(journal.read(2)).unwrap(), (second, second_body));
}

/// A drain carries its live prepares with one write each and their ring
/// copies with one write.
#[test]
fn a_drain_writes_each_carried_prepare_once() {
    let io = SimIo::new(11);
    let dir = Path::new("/data/drain-run");
    let config = config(SLOT_COUNT);
    let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config)).unwrap();
    let mut chain = Chain::new();
    let full_bytes = config.message_size_max_bytes as usize - shoal_vsr::header::HEADER_SIZE_BYTES;
    let batch: Vec<_> = (0..8).map(|_| prepare_with_body(&mut chain, vec![4; full_bytes])).collect();
    block_on_ready(journal.append_batch(&as_batch(&batch))).unwrap();
    block_on_ready(journal.sync()).unwrap();
    let before = io.disk().writes();
    block_on_ready(journal.drain(4)).unwrap();
    let after = io.disk().writes();
    // The file header's two copies, ops 5..=8 one write each (6..=8 with
    // the carried-copies region before their slot), their four ring copies
    // in one write; the spare is fresh, nothing to clear.
    let slot = config.slot_size_bytes();
    let region = shoal_vsr::journal::COPIES_REGION_BYTES;
    assert_eq!((after.0 - before.0, after.1 - before.1), (7, 2 * 4096 + 4 * slot + 3 * region + 4 * 256));
    drop(journal);
    io.crash();
    let (_, recovery) = block_on_ready(PrepareJournal::open(&io, dir, config, OpenMode::ReadWrite)).unwrap();
    assert_eq!(recovery.ops_recovered, vec![5, 6, 7, 8]);
}

/// Zeros over a carried-copies region are written only before a fresh op's
/// slot: a rewrite never joins. The story the rule prevents: ops 1..=3's
/// copies ride in op 4's region (their only copies: the ring never got
/// them), a view change drops ops 3..=5 and writes new ops 3 and 4 with
/// one batch; joined, that write would zero op 4's region. A second
/// truncation then makes op 2 the head, its prepare rots, and recovery,
/// with no copy naming it, would cut an acknowledged op 2 as a torn tail.
#[test]
fn a_rewritten_batch_never_zeroes_a_kept_ops_only_copy() {
    let io = SimIo::new(14);
    let dir = Path::new("/data/rewrite-keeps-copies");
    let config = config(SLOT_COUNT);
    let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config)).unwrap();
    let mut chain = Chain::new();
    let full_bytes = config.message_size_max_bytes as usize - shoal_vsr::header::HEADER_SIZE_BYTES;
    let first: Vec<_> = (0..3).map(|_| prepare_with_body(&mut chain, vec![1; full_bytes])).collect();
    block_on_ready(journal.append_batch(&as_batch(&first))).unwrap();
    assert_eq!(block_on_ready(journal.flush()).unwrap(), Vec::<u64>::new());
    let second: Vec<_> = (0..2).map(|_| prepare_with_body(&mut chain, vec![2; full_bytes])).collect();
    block_on_ready(journal.append_batch(&as_batch(&second))).unwrap();
    assert_eq!(block_on_ready(journal.flush()).unwrap(), vec![1, 2, 3], "carried with op 4, acknowledged");
    block_on_ready(journal.sync()).unwrap();
    block_on_ready(journal.truncate_after(2)).unwrap();
    let op_two = first[1].0.checksum;
    let three = shoal_vsr::journal::conformance::prepare(3, op_two, &vec![3; full_bytes]);
    let four = shoal_vsr::journal::conformance::prepare(4, three.checksum, &vec![4; full_bytes]);
    let rewrite = [(three, vec![3; full_bytes]), (four, vec![4; full_bytes])];
    let before = io.disk().writes();
    block_on_ready(journal.append_batch(&as_batch(&rewrite))).unwrap();
    let after = io.disk().writes();
    assert_eq!(after.0 - before.0, 2, "rewritten ops: one write each, op 4's region untouched");
    block_on_ready(journal.sync()).unwrap();
    block_on_ready(journal.truncate_after(2)).unwrap();
    let path = shoal_vsr::journal::journal_path(dir, config.namespace);
    io.disk().corrupt_sector(&path, config.slot_offset(2)).unwrap();
    drop(journal);
    io.crash();
    let (journal, recovery) = block_on_ready(PrepareJournal::open(&io, dir, config, OpenMode::ReadWrite)).unwrap();
    assert_eq!(recovery.torn_tail_truncated, Vec::<u64>::new(), "acknowledged op 2 is never cut as torn");
    assert_eq!(recovery.repair_ops, vec![2], "op 2 is faulty: its carried copy in op 4's region names it");
    assert_eq!(journal.op_max(), Some(2));
}
