//! The journal's behavioural test suite, generic over `Io`.
//!
//! `vsr` must not depend on the simulator, so the suite lives here as async
//! functions that assert; `shoal-sim`'s integration tests run it on `SimIo`
//! and the runtime crate runs it on the real disk. Each function takes an
//! empty directory of its own. Crash and fault-injection tests need a
//! simulated disk and live in `sim/tests/it`.

use std::path::Path;

use super::{JournalConfig, JournalError, PrepareJournal, Recovery, journal_path, journal_path_tmp};
use crate::header::{Command, HEADER_SIZE_BYTES, Header, Operation};
use crate::io::{Io, IoFile, OpenMode};

pub const CLUSTER: u128 = 0x5348_4f41_4c5f_5445_5354;
pub const NAMESPACE: u64 = 7 << 40 | 3 << 20 | 1;
pub const MESSAGE_SIZE_MAX_BYTES: u32 = 4096;

pub fn config(slot_count: u64) -> JournalConfig {
    JournalConfig { slot_count, message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES, cluster: CLUSTER, namespace: NAMESPACE }
}

/// A deterministic body for `op` whose length varies (0 ..= 1000 bytes) and
/// that differs per `variant` (to tell a re-prepared op from the original).
pub fn body(op: u64, variant: u8) -> Vec<u8> {
    let size_bytes = (op.wrapping_mul(37) % 1001) as usize;
    (0..size_bytes).map(|index| (index as u64 ^ op.wrapping_mul(131)) as u8 ^ variant).collect()
}

/// A prepare for `op` that chains to `parent`.
pub fn prepare(op: u64, parent: u128, body: &[u8]) -> Header {
    let mut header = Header::new(Command::Prepare, CLUSTER);
    header.namespace = NAMESPACE;
    header.operation = Operation::SendMessages;
    header.op = op;
    header.view = 1;
    header.parent = parent;
    header.set_checksums(body);
    header
}

/// Builds a hash chain of prepares.
#[derive(Debug, Clone)]
pub struct Chain {
    pub parent: u128,
    pub op_next: u64,
    pub variant: u8,
}

impl Chain {
    pub fn new() -> Chain {
        Chain { parent: 0xC0FFEE, op_next: 1, variant: 0 }
    }

    pub fn next_prepare(&mut self) -> (Header, Vec<u8>) {
        let body = body(self.op_next, self.variant);
        let header = prepare(self.op_next, self.parent, &body);
        self.parent = header.checksum;
        self.op_next += 1;
        (header, body)
    }
}

impl Default for Chain {
    fn default() -> Self {
        Chain::new()
    }
}

/// Append the next `count` prepares of `chain`, then `sync`.
pub async fn append_n<I: Io>(journal: &mut PrepareJournal<I>, chain: &mut Chain, count: u64) -> Vec<(Header, Vec<u8>)> {
    let mut out = Vec::new();
    for _ in 0..count {
        let (header, body) = chain.next_prepare();
        journal.append(&header, &body).await.expect("append");
        out.push((header, body));
    }
    journal.sync().await.expect("sync");
    out
}

/// Group commit as the node runs it: each op appended, then one `flush`,
/// so each append carries the copy of the op before it (module doc,
/// "Carried copies"). Returns what each flush reported durable.
async fn stream_n<I: Io>(journal: &mut PrepareJournal<I>, chain: &mut Chain, count: u64) -> Vec<Vec<u64>> {
    let mut reported = Vec::new();
    for _ in 0..count {
        let (header, body) = chain.next_prepare();
        journal.append_batch(&[(header, &body)]).await.expect("append");
        reported.push(journal.flush().await.expect("flush"));
    }
    reported
}

/// Read `length` bytes of the journal file at `offset`.
async fn read_at<I: Io>(io: &I, dir: &Path, offset: u64, length: usize) -> Vec<u8> {
    let file = io.open(&journal_path(dir, NAMESPACE), OpenMode::ReadOnly).await.expect("open for read");
    let (result, bytes) = crate::io::read_exact_retrying(&file, vec![0; length], offset).await;
    result.expect("read");
    bytes
}

async fn reopen<I: Io>(io: &I, dir: &Path, slot_count: u64) -> (PrepareJournal<I>, Recovery) {
    PrepareJournal::open(io, dir, config(slot_count), OpenMode::ReadWrite).await.expect("reopen")
}

/// XOR `mask` into the byte at `offset` of the journal file, durably.
pub async fn flip_byte<I: Io>(io: &I, dir: &Path, offset: u64, mask: u8) {
    let file = io.open(&journal_path(dir, NAMESPACE), OpenMode::ReadWrite).await.expect("open for flip");
    let (result, mut byte) = crate::io::read_exact_retrying(&file, vec![0], offset).await;
    result.expect("read for flip");
    byte[0] ^= mask;
    let (result, _) = file.write_all_at(byte, offset).await;
    result.expect("write flip");
    file.sync_data().await.expect("sync flip");
}

pub async fn append_read_reopen<I: Io>(io: &I, dir: &Path) {
    let mut journal = PrepareJournal::create(io, dir, config(16)).await.unwrap();
    assert_eq!(journal.op_max(), None);
    assert_eq!(journal.snapshot_op(), 0);
    let entries = append_n(&mut journal, &mut Chain::new(), 10).await;
    assert_eq!(journal.op_max(), Some(10));
    for (header, body) in &entries {
        assert_eq!(journal.read(header.op).await.unwrap(), (*header, body.clone()));
        assert_eq!(journal.header(header.op), Some(header));
    }
    drop(journal);
    let (journal, recovery) = reopen(io, dir, 16).await;
    assert_eq!(recovery, Recovery { ops_recovered: (1..=10).collect(), ..Recovery::default() });
    assert_eq!(journal.op_max(), Some(10));
    for (header, body) in &entries {
        assert_eq!(journal.read(header.op).await.unwrap(), (*header, body.clone()));
    }
    assert!(matches!(journal.read(11).await, Err(JournalError::NotFound { op: 11 })));
    assert!(matches!(PrepareJournal::create(io, dir, config(16)).await, Err(JournalError::AlreadyExists { .. })));
}

pub async fn append_rejects_bad_prepares<I: Io>(io: &I, dir: &Path) {
    let mut journal = PrepareJournal::create(io, dir, config(16)).await.unwrap();
    let mut chain = Chain::new();
    append_n(&mut journal, &mut chain, 3).await;
    let parent = chain.parent;

    let skipped = prepare(5, parent, b"x");
    assert!(matches!(journal.append(&skipped, b"x").await, Err(JournalError::OpOutOfOrder { op: 5, expected: 4 })));
    let forked = prepare(4, parent ^ 1, b"x");
    assert!(matches!(journal.append(&forked, b"x").await, Err(JournalError::ParentMismatch { op: 4 })));
    let mut foreign = prepare(4, parent, b"x");
    foreign.cluster ^= 1;
    foreign.set_checksums(b"x");
    assert!(matches!(journal.append(&foreign, b"x").await, Err(JournalError::WrongGroup { op: 4 })));
    let mut tampered = prepare(4, parent, b"x");
    tampered.view += 1;
    assert!(matches!(journal.append(&tampered, b"x").await, Err(JournalError::BadPrepare { op: 4, .. })));
    let wrong_body = prepare(4, parent, b"x");
    assert!(matches!(journal.append(&wrong_body, b"y").await, Err(JournalError::BadPrepare { op: 4, .. })));
    let big = vec![0u8; MESSAGE_SIZE_MAX_BYTES as usize];
    let too_large = prepare(4, parent, &big);
    assert!(matches!(journal.append(&too_large, &big).await, Err(JournalError::MessageTooLarge { op: 4, .. })));

    // Rejections changed nothing: the next valid prepare is still op 4.
    assert_eq!(journal.op_max(), Some(3));
    assert_eq!(journal.header(4), None);
    append_n(&mut journal, &mut chain, 1).await;
    assert_eq!(journal.op_max(), Some(4));
}

pub async fn slot_collision_requires_drain<I: Io>(io: &I, dir: &Path) {
    let mut journal = PrepareJournal::create(io, dir, config(8)).await.unwrap();
    let mut chain = Chain::new();
    append_n(&mut journal, &mut chain, 8).await;
    let (header, body) = chain.clone().next_prepare();
    assert!(matches!(
        journal.append(&header, &body).await,
        Err(JournalError::SlotCollision { op: 9, slot: 1, live_op: 1 })
    ));
    assert!(matches!(journal.drain(9).await, Err(JournalError::DrainBeyondHead { through_op: 9, .. })));
    journal.drain(4).await.unwrap();
    assert_eq!(journal.snapshot_op(), 4);
    assert_eq!(journal.header(4), None, "drained ops leave the index");
    let entries = append_n(&mut journal, &mut chain, 4).await;
    let (header, body) = chain.clone().next_prepare();
    assert!(matches!(journal.append(&header, &body).await, Err(JournalError::SlotCollision { op: 13, .. })));
    drop(journal);
    let (journal, recovery) = reopen(io, dir, 8).await;
    assert_eq!(journal.snapshot_op(), 4);
    assert_eq!(recovery.ops_recovered, (5..=12).collect::<Vec<_>>());
    assert!(recovery.repair_ops.is_empty() && recovery.torn_tail_truncated.is_empty());
    for (header, body) in &entries {
        assert_eq!(journal.read(header.op).await.unwrap(), (*header, body.clone()));
    }
}

pub async fn drain_everything_keeps_the_chain<I: Io>(io: &I, dir: &Path) {
    let mut journal = PrepareJournal::create(io, dir, config(8)).await.unwrap();
    let mut chain = Chain::new();
    append_n(&mut journal, &mut chain, 5).await;
    journal.drain(5).await.unwrap();
    journal.drain(3).await.unwrap(); // already checkpointed: no-op
    assert_eq!((journal.snapshot_op(), journal.op_max()), (5, None));
    drop(journal);
    let (mut journal, recovery) = reopen(io, dir, 8).await;
    assert_eq!(recovery, Recovery::default());
    assert_eq!((journal.snapshot_op(), journal.op_max()), (5, None));
    let forked = prepare(6, chain.parent ^ 1, b"fork");
    assert!(matches!(journal.append(&forked, b"fork").await, Err(JournalError::ParentMismatch { op: 6 })));
    append_n(&mut journal, &mut chain, 3).await;
    assert_eq!(journal.op_max(), Some(8));
}

pub async fn truncate_after_then_reopen<I: Io>(io: &I, dir: &Path) {
    let mut journal = PrepareJournal::create(io, dir, config(16)).await.unwrap();
    let mut chain = Chain::new();
    append_n(&mut journal, &mut chain, 6).await;
    journal.drain(2).await.unwrap();
    assert!(matches!(
        journal.truncate_after(1).await,
        Err(JournalError::TruncateBelowSnapshot { op: 1, snapshot_op: 2 })
    ));
    journal.truncate_after(3).await.unwrap();
    assert_eq!(journal.op_max(), Some(3));
    assert_eq!(journal.header(4), None);
    // A new view re-prepares op 4 with another body.
    let mut new_view = Chain { parent: journal.header(3).unwrap().checksum, op_next: 4, variant: 0x5A };
    let entries = append_n(&mut journal, &mut new_view, 1).await;
    drop(journal);
    let (journal, recovery) = reopen(io, dir, 16).await;
    assert_eq!(recovery, Recovery { ops_recovered: vec![3, 4], ..Recovery::default() });
    assert_eq!(journal.read(4).await.unwrap(), entries[0]);
}

pub async fn read_only_rejects_mutation<I: Io>(io: &I, dir: &Path) {
    let mut journal = PrepareJournal::create(io, dir, config(16)).await.unwrap();
    let mut chain = Chain::new();
    let entries = append_n(&mut journal, &mut chain, 4).await;
    drop(journal);
    let (mut reader, recovery) = PrepareJournal::open(io, dir, config(16), OpenMode::ReadOnly).await.unwrap();
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3, 4]);
    assert_eq!(reader.read(2).await.unwrap(), entries[1]);
    let (header, body) = chain.next_prepare();
    assert!(matches!(reader.append(&header, &body).await, Err(JournalError::ReadOnly)));
    assert!(matches!(reader.sync().await, Err(JournalError::ReadOnly)));
    assert!(matches!(reader.drain(2).await, Err(JournalError::ReadOnly)));
    assert!(matches!(reader.truncate_after(2).await, Err(JournalError::ReadOnly)));
    assert!(matches!(reader.write_repair(&header, &body).await, Err(JournalError::ReadOnly)));
    assert_eq!(reader.op_max(), Some(4));
}

pub async fn foreign_and_mismatched_files_are_rejected<I: Io>(io: &I, dir: &Path) {
    let journal = PrepareJournal::create(io, dir, config(16)).await.unwrap();
    drop(journal);
    let other_cluster = JournalConfig { cluster: CLUSTER + 1, ..config(16) };
    assert!(matches!(
        PrepareJournal::open(io, dir, other_cluster, OpenMode::ReadWrite).await,
        Err(JournalError::WrongCluster { .. })
    ));
    assert!(matches!(
        PrepareJournal::open(io, dir, config(32), OpenMode::ReadWrite).await,
        Err(JournalError::ConfigMismatch { field: "slot_count", expected: 32, found: 16 })
    ));
    let other_namespace = JournalConfig { namespace: NAMESPACE + 1, ..config(16) };
    assert!(matches!(
        PrepareJournal::open(io, dir, other_namespace, OpenMode::ReadWrite).await,
        Err(JournalError::Missing { .. })
    ));
    assert!(matches!(PrepareJournal::create(io, dir, config(0)).await, Err(JournalError::InvalidConfig { .. })));
    // Another group's journal under this group's file name.
    let other = dir.join("other");
    drop(PrepareJournal::create(io, &other, other_namespace).await.unwrap());
    let misplaced = dir.join("misplaced");
    io.create_dir_all(&misplaced).await.unwrap();
    io.rename(&journal_path(&other, NAMESPACE + 1), &journal_path(&misplaced, NAMESPACE)).await.unwrap();
    assert!(matches!(
        PrepareJournal::open(io, &misplaced, config(16), OpenMode::ReadWrite).await,
        Err(JournalError::WrongNamespace { expected: NAMESPACE, found }) if found == NAMESPACE + 1
    ));
}

/// A tmp file (the spare, or what a compaction that crashed before its
/// exchange left) is never read: open recovers from the journal alone and
/// keeps the tmp file as the next compaction's scratch file, which that
/// compaction rewrites whatever it held.
pub async fn stale_tmp_is_never_trusted<I: Io>(io: &I, dir: &Path) {
    let mut journal = PrepareJournal::create(io, dir, config(16)).await.unwrap();
    append_n(&mut journal, &mut Chain::new(), 3).await;
    drop(journal);
    let tmp = journal_path_tmp(dir, NAMESPACE);
    let file = io.open(&tmp, OpenMode::ReadWriteCreate).await.unwrap();
    file.set_len(0).await.unwrap();
    let (result, _) = file.write_all_at(vec![0xEE; 512], 0).await;
    result.unwrap();
    file.sync_data().await.unwrap();
    drop(file);
    let (_, recovery) = PrepareJournal::open(io, dir, config(16), OpenMode::ReadOnly).await.unwrap();
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3]);
    assert!(io.list_dir(dir).await.unwrap().contains(&tmp), "a read-only open touches nothing");
    let (mut journal, recovery) = reopen(io, dir, 16).await;
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3]);
    assert_eq!(io.list_dir(dir).await.unwrap(), vec![journal_path(dir, NAMESPACE), tmp.clone()]);
    journal.drain(1).await.unwrap();
    drop(journal);
    let (_, recovery) = reopen(io, dir, 16).await;
    assert_eq!(recovery.ops_recovered, vec![2, 3]);
}

/// The spare (the file the previous drain retired) still holds what it
/// held as the journal; a drain that reuses it must not let any of it come
/// back, such as the ops a view change truncated in between.
pub async fn recycled_spare_never_resurrects_prepares<I: Io>(io: &I, dir: &Path) {
    for (name, restart, cleared_beside) in
        [("same-life", false, false), ("restart", true, false), ("restart-cleared-beside", true, true)]
    {
        // With a restart in between, the spare's history is unknown and
        // the drain clears all of it (inline, or beforehand beside the
        // journal, as a node does); without, it clears what it knows of.
        let dir = dir.join(name);
        let mut journal = PrepareJournal::create(io, &dir, config(16)).await.unwrap();
        append_n(&mut journal, &mut Chain::new(), 5).await;
        journal.drain(2).await.unwrap(); // the spare now holds ops 1..=5
        if restart {
            drop(journal);
            journal = reopen(io, &dir, 16).await.0;
        }
        journal.truncate_after(3).await.unwrap(); // a view change drops 4 and 5
        crate::marks::take();
        if cleared_beside {
            let clear = journal.spare_clearer().expect("a new process does not trust its spare");
            assert!(journal.spare_clearer().is_none(), "one clear at a time");
            let cleared = clear.run().await;
            assert!(cleared.error().is_none(), "{:?}", cleared.error());
            journal.end_spare_clear(&cleared);
        }
        journal.drain(3).await.unwrap(); // back into the first file
        let marks = crate::marks::take();
        let inline = marks.contains_key(crate::marks::COMPACTION_SPARE_CLEARED_IN_PLACE);
        assert_eq!(inline, restart && !cleared_beside, "{name}: the stage clears an untrusted spare itself: {marks:?}");
        assert!(journal.spare_clearer().is_none(), "{name}: a spare this process compacted into is known");
        assert_eq!(journal.op_max(), None);
        drop(journal);
        let (journal, recovery) = reopen(io, &dir, 16).await;
        assert_eq!(recovery, Recovery::default(), "{name}: ops 4 and 5 stay dropped");
        assert_eq!(journal.snapshot_op(), 3);
    }
}

/// Each damaged file in its own subdirectory: a typed error, never a panic.
pub async fn damaged_files_give_typed_errors<I: Io>(io: &I, dir: &Path) {
    let file_size_bytes = config(16).file_size_bytes();

    let zeroed = dir.join("zeroed");
    io.create_dir_all(&zeroed).await.unwrap();
    let file = io.open(&journal_path(&zeroed, NAMESPACE), OpenMode::ReadWriteCreate).await.unwrap();
    file.set_len(file_size_bytes).await.unwrap();
    file.sync_data().await.unwrap();
    assert!(matches!(
        PrepareJournal::open(io, &zeroed, config(16), OpenMode::ReadWrite).await,
        Err(JournalError::ZeroFilled)
    ));

    let truncated = dir.join("truncated");
    drop(PrepareJournal::create(io, &truncated, config(16)).await.unwrap());
    let file = io.open(&journal_path(&truncated, NAMESPACE), OpenMode::ReadWrite).await.unwrap();
    file.set_len(file_size_bytes - 100).await.unwrap();
    assert!(matches!(
        PrepareJournal::open(io, &truncated, config(16), OpenMode::ReadWrite).await,
        Err(JournalError::Truncated { .. })
    ));
    file.set_len(100).await.unwrap();
    assert!(matches!(
        PrepareJournal::open(io, &truncated, config(16), OpenMode::ReadWrite).await,
        Err(JournalError::Truncated { size_bytes: 100, .. })
    ));

    // One copy of the file header damaged: the other one serves, and a
    // writable open rewrites the damaged one, so the next fault on the
    // other copy is survived too. Both damaged: a typed error.
    let flipped = dir.join("flipped");
    drop(PrepareJournal::create(io, &flipped, config(16)).await.unwrap());
    let second_copy = config(16).file_header_copy_offset();
    flip_byte(io, &flipped, 50, 0x10).await;
    let (journal, _) = PrepareJournal::open(io, &flipped, config(16), OpenMode::ReadWrite).await.unwrap();
    assert_eq!(journal.snapshot_op(), 0);
    drop(journal);
    flip_byte(io, &flipped, second_copy + 50, 0x10).await;
    drop(PrepareJournal::open(io, &flipped, config(16), OpenMode::ReadWrite).await.unwrap());
    flip_byte(io, &flipped, 50, 0x10).await;
    flip_byte(io, &flipped, second_copy + 60, 0x10).await;
    assert!(matches!(
        PrepareJournal::open(io, &flipped, config(16), OpenMode::ReadWrite).await,
        Err(JournalError::FileHeaderCorrupt)
    ));

    let foreign = dir.join("foreign");
    drop(PrepareJournal::create(io, &foreign, config(16)).await.unwrap());
    flip_byte(io, &foreign, 0, 0xFF).await;
    flip_byte(io, &foreign, second_copy, 0xFF).await;
    assert!(matches!(
        PrepareJournal::open(io, &foreign, config(16), OpenMode::ReadWrite).await,
        Err(JournalError::BadMagic)
    ));

    let missing = dir.join("missing");
    io.create_dir_all(&missing).await.unwrap();
    assert!(matches!(
        PrepareJournal::open(io, &missing, config(16), OpenMode::ReadWrite).await,
        Err(JournalError::Missing { .. })
    ));
}

pub async fn corrupt_middle_is_reported_for_repair<I: Io>(io: &I, dir: &Path) {
    let config = config(16);
    let mut journal = PrepareJournal::create(io, dir, config).await.unwrap();
    let entries = append_n(&mut journal, &mut Chain::new(), 6).await;
    drop(journal);
    // A header bit of op 3 and a body byte of op 5 (body length > 0).
    flip_byte(io, dir, config.slot_offset(3) + 100, 0x01).await;
    assert!(!entries[4].1.is_empty());
    flip_byte(io, dir, config.slot_offset(5) + 256, 0x80).await;
    let (mut journal, recovery) = reopen(io, dir, 16).await;
    assert_eq!(
        recovery,
        Recovery { ops_recovered: vec![1, 2, 4, 6], torn_tail_truncated: vec![], repair_ops: vec![3, 5] }
    );
    assert_eq!(journal.op_max(), Some(6));
    assert!(matches!(journal.read(3).await, Err(JournalError::NotFound { op: 3 })));
    // Repair from "peers": a forged op 3 is refused, the original accepted.
    let forged = prepare(3, 12345, b"forged");
    assert!(matches!(journal.write_repair(&forged, b"forged").await, Err(JournalError::ParentMismatch { op: 3 })));
    for index in [2usize, 4] {
        let (header, body) = &entries[index];
        journal.write_repair(header, body).await.unwrap();
    }
    journal.sync().await.unwrap();
    assert!(journal.repair_ops().is_empty());
    drop(journal);
    let (journal, recovery) = reopen(io, dir, 16).await;
    assert_eq!(recovery, Recovery { ops_recovered: (1..=6).collect(), ..Recovery::default() });
    assert_eq!(journal.read(5).await.unwrap(), entries[4]);
}

/// The head prepare was appended and synced (the replica may have
/// acknowledged it), then its sector rotted. Recovery must not take it for a
/// torn write: the header ring still names it, so it is faulty, kept in the
/// log for repair from peers, and reported by `scan` so the replica restarts
/// without vouching for it.
pub async fn rotten_head_is_faulty_not_torn<I: Io>(io: &I, dir: &Path) {
    let config = config(16);
    let mut journal = PrepareJournal::create(io, dir, config).await.unwrap();
    let mut chain = Chain::new();
    let entries = append_n(&mut journal, &mut chain, 5).await;
    drop(journal);
    flip_byte(io, dir, config.slot_offset(5) + 8, 0x04).await;
    let (mut journal, recovery) = reopen(io, dir, 16).await;
    assert_eq!(
        recovery,
        Recovery { ops_recovered: vec![1, 2, 3, 4], torn_tail_truncated: vec![], repair_ops: vec![5] }
    );
    assert_eq!(journal.op_max(), Some(5), "an acknowledged head is never cut off");
    assert_eq!(journal.scan().await.unwrap().corrupt_ops, vec![5]);
    // Repair from a peer: the original prepare is accepted and the log
    // continues after it.
    let (header, body) = &entries[4];
    journal.write_repair(header, body).await.unwrap();
    append_n(&mut journal, &mut chain, 1).await;
    drop(journal);
    let (journal, recovery) = reopen(io, dir, 16).await;
    assert_eq!(recovery, Recovery { ops_recovered: (1..=6).collect(), ..Recovery::default() });
    assert!(journal.scan().await.unwrap().corrupt_ops.is_empty());
}

/// Streamed one op per flush, each op's copy rides in the next op's write,
/// not in the ring; each op is reported durable one flush after its own,
/// once the write that carried its copy is fsynced. After a crash, the
/// last op (copy never written) reads as torn when its body is damaged,
/// and the op before it, whose slot rotted, as faulty: its carried copy
/// names it.
pub async fn carried_copies_tell_a_rotten_op_from_a_torn_head<I: Io>(io: &I, dir: &Path) {
    let config = config(16);
    let mut journal = PrepareJournal::create(io, dir, config).await.unwrap();
    let mut chain = Chain::new();
    let reported = stream_n(&mut journal, &mut chain, 6).await;
    assert_eq!(reported, vec![vec![], vec![1], vec![2], vec![3], vec![4], vec![5]]);
    assert!(journal.is_durable(5) && !journal.is_durable(6));
    drop(journal);
    for op in 1..=5 {
        let carried = read_at(io, dir, config.carried_copy_offset(op, 1), 256).await;
        assert_eq!(Header::decode(&carried).ok().map(|copy| copy.op), Some(op), "op {op} rides with op {}", op + 1);
        let ring = read_at(io, dir, config.header_copy_offset(op), 256).await;
        assert!(ring.iter().all(|&b| b == 0), "op {op}'s copy was carried, not written to the ring");
    }
    flip_byte(io, dir, config.slot_offset(5) + 8, 0x04).await;
    // Op 6 as a torn write leaves a prepare: its header sector kept, a body
    // byte wrong (a damaged header sector is damage, never a tear: it
    // would read unknown).
    flip_byte(io, dir, config.slot_offset(6) + HEADER_SIZE_BYTES as u64 + 8, 0x04).await;
    let (journal, recovery) = reopen(io, dir, 16).await;
    assert_eq!(
        recovery,
        Recovery { ops_recovered: vec![1, 2, 3, 4], torn_tail_truncated: vec![6], repair_ops: vec![5] }
    );
    assert_eq!(journal.op_max(), Some(5), "an acknowledged op is never cut off");
    drop(journal);
    // Recovery wrote every valid prepare's copy to the ring.
    let ring = read_at(io, dir, config.header_copy_offset(4), 256).await;
    assert_eq!(Header::decode(&ring).ok().map(|copy| copy.op), Some(4));
}

/// The head's copy was carried by a write that a truncation then dropped
/// (the carrier op, not the head). Both the head's slot and its carried
/// copy rot: no copy names it, but one of its copies is damaged, so it is
/// unknown (faulty, kept for repair), never a torn write to cut off. The
/// truncation cleared the dropped op's own carried copy, so it stays gone.
pub async fn a_rotten_head_and_its_rotten_carried_copy_are_unknown_not_torn<I: Io>(io: &I, dir: &Path) {
    let config = config(16);
    let mut journal = PrepareJournal::create(io, dir, config).await.unwrap();
    let mut chain = Chain::new();
    stream_n(&mut journal, &mut chain, 7).await;
    journal.sync().await.unwrap();
    journal.truncate_after(5).await.unwrap();
    drop(journal);
    let carried_six = read_at(io, dir, config.carried_copy_offset(6, 1), 256).await;
    assert!(carried_six.iter().all(|&b| b == 0), "the dropped op's carried copy is cleared");
    let (journal, recovery) = reopen(io, dir, 16).await;
    assert_eq!(recovery, Recovery { ops_recovered: (1..=5).collect(), ..Recovery::default() });
    drop(journal);
    // Reopen wrote op 5's copy to the ring; take that away again so the
    // carried one is the only evidence, then rot both slot and copy.
    let file = io.open(&journal_path(dir, NAMESPACE), OpenMode::ReadWrite).await.unwrap();
    let (result, _) = file.write_all_at(vec![0; 256], config.header_copy_offset(5)).await;
    result.unwrap();
    file.sync_data().await.unwrap();
    drop(file);
    flip_byte(io, dir, config.slot_offset(5) + 8, 0x04).await;
    flip_byte(io, dir, config.carried_copy_offset(5, 1) + 8, 0x04).await;
    let (journal, recovery) = reopen(io, dir, 16).await;
    assert_eq!(
        recovery,
        Recovery { ops_recovered: vec![1, 2, 3, 4], torn_tail_truncated: vec![], repair_ops: vec![5] }
    );
    assert_eq!(journal.op_max(), Some(5));
}

/// A truncation drops ops whose copies rode in later writes: every copy
/// of a dropped op is cleared before its slot, so a crash or damage
/// afterwards never makes a dropped op look faulty.
pub async fn truncation_clears_carried_copies<I: Io>(io: &I, dir: &Path) {
    let config = config(16);
    let mut journal = PrepareJournal::create(io, dir, config).await.unwrap();
    let mut chain = Chain::new();
    stream_n(&mut journal, &mut chain, 8).await;
    journal.sync().await.unwrap();
    journal.truncate_after(3).await.unwrap();
    drop(journal);
    for op in 4..=7 {
        let carried = read_at(io, dir, config.carried_copy_offset(op, 1), 256).await;
        assert!(carried.iter().all(|&b| b == 0), "op {op}'s carried copy is cleared");
    }
    let carried = read_at(io, dir, config.carried_copy_offset(3, 1), 256).await;
    assert_eq!(Header::decode(&carried).ok().map(|copy| copy.op), Some(3), "a kept op keeps its carried copy");
    let (mut journal, recovery) = reopen(io, dir, 16).await;
    assert_eq!(recovery, Recovery { ops_recovered: vec![1, 2, 3], ..Recovery::default() });
    // The log continues at op 4 with another history; nothing of the old
    // one comes back after another crash.
    let mut again = Chain { parent: journal.header(3).unwrap().checksum, op_next: 4, variant: 1 };
    stream_n(&mut journal, &mut again, 2).await;
    journal.sync().await.unwrap();
    drop(journal);
    let (journal, recovery) = reopen(io, dir, 16).await;
    assert_eq!(recovery, Recovery { ops_recovered: (1..=5).collect(), ..Recovery::default() });
    assert_eq!(journal.header(5).unwrap().parent, journal.header(4).unwrap().checksum);
}

/// A head prepare that was never fully written (its first sector landed,
/// the rest did not, and its header copy was never written) is a torn
/// write: nothing was promised for it, so recovery truncates it.
pub async fn torn_tail_is_truncated<I: Io>(io: &I, dir: &Path) {
    let config = config(16);
    let mut journal = PrepareJournal::create(io, dir, config).await.unwrap();
    let mut chain = Chain::new();
    append_n(&mut journal, &mut chain, 4).await;
    drop(journal);
    // Op 5's first sector only, as a crash mid-write leaves it.
    let torn_op = 5;
    let body = vec![0xAB; 900];
    let header = prepare(torn_op, chain.parent, &body);
    let message = header.encode_message(&body);
    let file = io.open(&journal_path(dir, NAMESPACE), OpenMode::ReadWrite).await.unwrap();
    let (result, _) = file.write_all_at(message[..512].to_vec(), config.slot_offset(torn_op)).await;
    result.unwrap();
    file.sync_data().await.unwrap();
    drop(file);
    let (mut journal, recovery) = reopen(io, dir, 16).await;
    assert_eq!(
        recovery,
        Recovery { ops_recovered: vec![1, 2, 3, 4], torn_tail_truncated: vec![5], repair_ops: vec![] }
    );
    assert_eq!(journal.op_max(), Some(4));
    assert!(journal.scan().await.unwrap().corrupt_ops.is_empty());
    // The log continues at op 5 (re-prepared from the primary).
    let mut again = Chain { parent: journal.header(4).unwrap().checksum, op_next: 5, variant: 1 };
    append_n(&mut journal, &mut again, 2).await;
    drop(journal);
    let (_, recovery) = reopen(io, dir, 16).await;
    assert_eq!(recovery, Recovery { ops_recovered: (1..=6).collect(), ..Recovery::default() });
}

/// A view change replaced ops 3 and 4 (view 1) with 3' and 4' (view 2);
/// the replica got 4' first (repair order is any order), made it durable,
/// and crashed before 3' arrived. On disk 4' does not chain onto the stale
/// op 3. Recovery must index 4' as scan returns it: durable, with its ring
/// copy, and canonical (the replica tells which side of a break is stale by
/// its view headers; the journal cannot). Swarm seeds 244, 281, 477 and 798
/// had the index mark the new op missing while scan returned it valid.
pub async fn chain_break_at_open_is_indexed_as_scan_sees_it<I: Io>(io: &I, dir: &Path) {
    let config = config(16);
    let mut journal = PrepareJournal::create(io, dir, config).await.unwrap();
    let mut chain = Chain::new();
    let old = append_n(&mut journal, &mut chain, 4).await;
    let mut new_view = Chain { parent: old[1].0.checksum, op_next: 3, variant: 0x77 };
    let (op3_new, _) = new_view.next_prepare();
    let (op4_new, body4_new) = new_view.next_prepare();
    assert_ne!(op4_new.parent, old[2].0.checksum, "4' does not chain onto the stale op 3");
    journal.write_prepare(&op4_new, &body4_new).await.unwrap();
    journal.sync().await.unwrap();
    assert!(journal.is_durable(4));
    drop(journal);
    let (journal, recovery) = reopen(io, dir, 16).await;
    assert_eq!(recovery, Recovery { ops_recovered: vec![1, 2, 3, 4], ..Recovery::default() });
    assert_eq!(journal.header(4), Some(&op4_new), "the durable 4' is indexed");
    assert!(journal.is_durable(4));
    assert_eq!(journal.header(3), Some(&old[2].0), "the stale op 3 is there until 3' replaces it");
    let scan = journal.scan().await.unwrap();
    for (header, _) in &scan.entries {
        assert_eq!(journal.header(header.op), Some(header), "index and scan agree on op {}", header.op);
    }
    assert!(scan.corrupt_ops.is_empty());
    assert_ne!(op3_new.checksum, old[2].0.checksum);
}

/// Run the whole suite, each case in its own subdirectory of `dir`.
/// Calls `$callback! { case, case, … }` with every case of the suite, so a
/// backend's test list cannot fall behind it.
#[macro_export]
macro_rules! journal_conformance_cases {
    ($callback:ident) => {
        $callback! {
            append_read_reopen,
            append_rejects_bad_prepares,
            slot_collision_requires_drain,
            drain_everything_keeps_the_chain,
            truncate_after_then_reopen,
            read_only_rejects_mutation,
            foreign_and_mismatched_files_are_rejected,
            damaged_files_give_typed_errors,
            corrupt_middle_is_reported_for_repair,
            rotten_head_is_faulty_not_torn,
            torn_tail_is_truncated,
            stale_tmp_is_never_trusted,
            recycled_spare_never_resurrects_prepares,
            chain_break_at_open_is_indexed_as_scan_sees_it,
            carried_copies_tell_a_rotten_op_from_a_torn_head,
            a_rotten_head_and_its_rotten_carried_copy_are_unknown_not_torn,
            truncation_clears_carried_copies,
        }
    };
}

pub async fn run_all<I: Io>(io: &I, dir: &Path) {
    macro_rules! run_each {
        ($($name:ident,)*) => {$(
            $name(io, &dir.join(stringify!($name))).await;
        )*};
    }
    journal_conformance_cases!(run_each);
}
