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
