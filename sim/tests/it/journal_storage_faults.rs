//! The journal against the disk faults of issue 10: what a process crash
//! leaves in the page cache, fsync EIO as Linux does it, read errors, and
//! damage to a slot or to its header ring copy. Each test is one story.

use std::path::{Path, PathBuf};

use shoal_sim::disk::DiskFaults;
use shoal_sim::{SimIo, block_on_ready};
use shoal_vsr::header::Header;
use shoal_vsr::io::OpenMode;
use shoal_vsr::journal::conformance::{Chain, config};
use shoal_vsr::journal::{JournalConfig, JournalError, PrepareJournal, Recovery, journal_path};

const SLOT_COUNT: u64 = 16;
const DIR: &str = "/data/faults";

fn dir() -> &'static Path {
    Path::new(DIR)
}

/// The journal file these tests damage.
fn journal_file() -> PathBuf {
    journal_path(dir(), shoal_vsr::journal::conformance::NAMESPACE)
}

fn create(io: &SimIo) -> PrepareJournal<SimIo> {
    block_on_ready(PrepareJournal::create(io, dir(), config(SLOT_COUNT))).unwrap()
}

fn open(io: &SimIo) -> (PrepareJournal<SimIo>, Recovery) {
    block_on_ready(PrepareJournal::open(io, dir(), config(SLOT_COUNT), OpenMode::ReadWrite)).unwrap()
}

fn append(journal: &mut PrepareJournal<SimIo>, chain: &mut Chain, count: u64, sync: bool) {
    for _ in 0..count {
        let (header, body) = chain.next_prepare();
        block_on_ready(journal.append(&header, &body)).unwrap();
    }
    if sync {
        block_on_ready(journal.sync()).unwrap();
    }
}

/// Ops 1-6 appended and synced, then one flush per entry of `batch_sizes`
/// (an `append_batch` of that many fresh ops each), the first write of
/// flush `misdirected_flush` landing at `landing_offset` instead of where
/// it was meant. Returns the journal and every op the flushes reported
/// durable with its copy.
fn flushes_with_one_misdirected(
    io: &SimIo,
    batch_sizes: &[usize],
    misdirected_flush: usize,
    landing_offset: u64,
) -> (PrepareJournal<SimIo>, Vec<u64>) {
    let mut journal = create(io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 6, true);
    let mut acknowledged = Vec::new();
    for (flush, &ops) in batch_sizes.iter().enumerate() {
        if flush == misdirected_flush {
            io.disk().misdirect_next_write_to_landing(&journal_file(), landing_offset);
        }
        let prepares: Vec<_> = (0..ops).map(|_| chain.next_prepare()).collect();
        let batch: Vec<_> = prepares.iter().map(|(header, body)| (*header, body.as_slice())).collect();
        block_on_ready(journal.append_batch(&batch)).unwrap();
        acknowledged.extend(block_on_ready(journal.flush()).unwrap());
    }
    (journal, acknowledged)
}

/// The process dies; op 7 (acknowledged, its only copy lost) must come
/// back faulty, kept for repair, never cut off as a torn head: it lies
/// right above the named head (op 6), so no gap rule cuts it off either.
/// `repair_ops`: op 7, and op 8 where the landed write reached op 8's
/// header sector too (unknown: bytes no write of its slot leaves).
fn assert_op_7_faulty_after_a_process_crash(io: &SimIo, journal: PrepareJournal<SimIo>, repair_ops: &[u64]) {
    drop(journal);
    io.crash_process();
    let (journal, recovery) = open_above(io, 6);
    assert_eq!(recovery.torn_tail_truncated, Vec::<u64>::new(), "op 7 is not cut off as torn");
    assert_eq!(recovery.repair_ops, repair_ops);
    let corrupt_ops = block_on_ready(journal.scan()).unwrap().corrupt_ops;
    assert_eq!(corrupt_ops, repair_ops, "op 7 was acknowledged: it must read faulty");
}

/// A power loss that loses every write not yet synced, then a writable open.
fn reopen_after_power_loss(io: &SimIo) -> (PrepareJournal<SimIo>, Recovery) {
    io.disk().faults = DiskFaults { crash_lost_ppm: 1_000_000, ..DiskFaults::default() };
    io.power_loss();
    open(io)
}

/// Op 4 was written but never synced when the process died. The page cache
/// still holds it, so recovery sees it, and the replica would vouch for it
/// (prepare_ok, do_view_change). Whatever recovery reports must therefore be
/// durable: a power loss right after must not take it back.
#[test]
fn recovery_after_a_process_crash_reports_only_durable_prepares() {
    let io = SimIo::new(1);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 3, true);
    append(&mut journal, &mut chain, 1, false);
    drop(journal);
    io.crash_process();
    let (journal, recovery) = open(&io);
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3, 4], "the page cache kept op 4");
    drop(journal);
    let (_, recovery) = reopen_after_power_loss(&io);
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3, 4], "what recovery vouched for was durable");
}

/// fsync of op 4 failed: Linux marked its pages clean, so they read back
/// from the cache after a process crash although they never reached the
/// device, and an fsync at open has nothing to flush. Recovery must make
/// them durable before it reports op 4 (or not report it).
#[test]
fn a_prepare_whose_fsync_failed_is_made_durable_before_it_is_trusted() {
    let io = SimIo::new(2);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 3, true);
    append(&mut journal, &mut chain, 1, false);
    io.disk().fail_next_sync();
    assert!(block_on_ready(journal.sync()).is_err());
    assert!(journal.is_poisoned());
    drop(journal);
    io.crash_process();
    assert!(io.disk().stale_cached_bytes(&journal_file()) > 0, "the clean pages are still cached");
    let (journal, recovery) = open(&io);
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3, 4], "the open rewrote op 4 from the cache, durably");
    assert_eq!(io.disk().stale_cached_bytes(&journal_file()), 0, "nothing the device lacks is left to read");
    drop(journal);
    let (journal, recovery) = reopen_after_power_loss(&io);
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3, 4], "op 4 was rewritten and synced at the first open");
    assert!(block_on_ready(journal.scan()).unwrap().corrupt_ops.is_empty());
}

/// A truncation drops ops 4-5 (a view change): their copies are cleared
/// and synced, then their slots, and that second fsync fails. Linux marks
/// the zeroed pages clean, so after a process crash the slots read empty
/// while the device still holds both prepares. An open that trusted the
/// cache reported ops 1-3, the replica went on as if 4-5 were gone (it
/// votes, it tells a view change its log ends at 3), and the next power
/// loss brought them back under it (the journal's "Not covered yet": cleared
/// slots read back as cleared; the simulator's `check_page_cache_settled`
/// fails fsync-steps seeds 3, 12, 13, 24 and 65 more of the first 300
/// on what such opens read). The open now reads the device: 4-5 are back at once, valid with no
/// copy, as after a crash between the truncation's two fsyncs (which the
/// replica's recovery settles against its superblock), and a power loss
/// changes nothing the open reported.
#[test]
fn a_truncation_whose_slot_clear_failed_is_read_as_the_device_holds_it() {
    let io = SimIo::new(15);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 5, true);
    io.disk().fail_second_sync();
    let error = block_on_ready(journal.truncate_after(3)).expect_err("the slots' fsync fails");
    assert!(error.to_string().contains("fsync"), "{error}");
    assert!(journal.is_poisoned());
    drop(journal);
    io.crash_process();
    let (journal, recovery) = open(&io);
    assert_eq!(
        recovery.ops_recovered,
        vec![1, 2, 3, 4, 5],
        "the device still holds the dropped prepares, whatever the cache said"
    );
    assert_eq!(recovery.repair_ops, Vec::<u64>::new(), "valid without a copy: not faulty");
    drop(journal);
    let (_, after_power_loss) = reopen_after_power_loss(&io);
    assert_eq!(after_power_loss.ops_recovered, recovery.ops_recovered, "a power loss changes nothing reported");
}

/// A latent sector error under a slot fails every read of it. It is a
/// faulty slot (repair from peers), not a journal that cannot open; at the
/// head too, where it must not pass for a torn write.
#[test]
fn a_slot_read_error_is_faulty_not_a_failed_open() {
    let io = SimIo::new(3);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 5, true);
    drop(journal);
    let path = journal_file();
    for op in [3, 5] {
        io.disk().fail_sector_reads(&path, config(SLOT_COUNT).slot_offset(op)).unwrap();
    }
    let (journal, recovery) = open(&io);
    assert_eq!(
        recovery,
        Recovery { ops_recovered: vec![1, 2, 4], torn_tail_truncated: vec![], repair_ops: vec![3, 5] }
    );
    assert_eq!(journal.op_max(), Some(5));
    assert_eq!(block_on_ready(journal.scan()).unwrap().corrupt_ops, vec![3, 5]);
}

/// A rotten ring copy alone loses nothing: the prepare is valid, and
/// recovery writes the copy again, so a later rot of the prepare itself is
/// still told apart from a torn write.
#[test]
fn a_rotten_header_copy_is_rewritten_from_its_prepare() {
    let io = SimIo::new(4);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 5, true);
    drop(journal);
    let path = journal_file();
    let config = config(SLOT_COUNT);
    io.disk().poke(&path, config.header_copy_offset(5) + 40, &[0xFF; 4]).unwrap();
    let (journal, recovery) = open(&io);
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3, 4, 5]);
    drop(journal);
    io.disk().poke(&path, config.slot_offset(5) + 40, &[0xFF; 4]).unwrap();
    let (journal, recovery) = open(&io);
    assert_eq!(recovery.repair_ops, vec![5], "the rewritten copy still names op 5: faulty, not torn");
    assert_eq!(journal.op_max(), Some(5));
}

/// A misdirected prepare write: op 6's bytes land on another slot (here op
/// 2's), op 6's slot keeps what it had. The ring copy of op 6 is written
/// after the prepare is durable, so both damaged ops are faulty.
#[test]
fn a_misdirected_prepare_write_leaves_two_faulty_ops() {
    let io = SimIo::new(5);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 5, true);
    let config = config(SLOT_COUNT);
    let (header, body) = chain.next_prepare();
    block_on_ready(journal.append(&header, &body)).unwrap();
    block_on_ready(journal.sync()).unwrap();
    drop(journal);
    // Model the misdirection after the fact: slot 6 back to zeros, slot 2
    // overwritten with op 6's message.
    let path = journal_file();
    io.disk().poke(&path, config.slot_offset(6), &vec![0; 512]).unwrap();
    io.disk().poke(&path, config.slot_offset(2), &header.encode_message(&body)).unwrap();
    let (journal, recovery) = open(&io);
    assert_eq!(recovery.ops_recovered, vec![1, 3, 4, 5]);
    assert_eq!(recovery.repair_ops, vec![2, 6], "op 2 was overwritten, op 6 never landed");
    assert_eq!(journal.op_max(), Some(6));
    assert_eq!(block_on_ready(journal.scan()).unwrap().corrupt_ops, vec![2, 6]);
}

/// The checkpoint file keeps two copies on separate sectors: rot in one, or
/// a read error under one, still restarts the replica; both lost is a typed
/// error that tells the operator to state-transfer.
#[test]
fn a_rotten_checkpoint_copy_is_survived() {
    use shoal_vsr::checkpoint::{CheckpointError, checkpoint_path, read_checkpoint, write_checkpoint};
    let io = SimIo::new(6);
    block_on_ready(shoal_vsr::io::create_dir_durable(&io, dir())).unwrap();
    let (anchor, _) = Chain::new().next_prepare();
    let checkpoint = shoal_vsr::replica::Checkpoint { anchor, snapshot: vec![0x5A; 700] };
    block_on_ready(write_checkpoint(&io, dir(), 1, &checkpoint)).unwrap();
    let path = checkpoint_path(dir(), 1);
    let size_bytes = io.disk().contents(&path).unwrap().len() as u64;
    io.disk().corrupt_sector(&path, 300).unwrap();
    let read = block_on_ready(read_checkpoint(&io, dir(), 1)).unwrap().unwrap();
    assert_eq!((read.anchor, read.snapshot), (checkpoint.anchor, checkpoint.snapshot.clone()), "the second copy");
    io.disk().fail_sector_reads(&path, size_bytes / 2 + 10).unwrap();
    assert!(matches!(block_on_ready(read_checkpoint(&io, dir(), 1)), Err(CheckpointError::Corrupt { .. })));
    block_on_ready(write_checkpoint(&io, dir(), 1, &checkpoint)).unwrap();
    assert!(block_on_ready(read_checkpoint(&io, dir(), 1)).unwrap().is_some(), "a new checkpoint heals both");
}

/// disk-rot seed 38131, the disk state it left: replica 2 acknowledged op
/// 1 (its only op); a sector of op 1's slot rotted while the replica ran
/// (`rot_running`), the replica crashed, and while it was down the ring
/// copy of op 1 rotted too. Both copies invalid used to be truncated as a
/// torn tail above an empty head, erasing the acknowledged prepare. It
/// must be faulty: awaiting repair, counted in the head, not truncated.
#[test]
fn a_head_whose_prepare_and_ring_copy_both_rotted_is_faulty_not_torn() {
    let io = SimIo::new(7);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 1, true);
    assert!(journal.is_durable(1), "op 1 may be acknowledged");
    drop(journal);
    io.crash_process();
    let path = journal_file();
    let config = config(SLOT_COUNT);
    io.disk().corrupt_sector(&path, config.slot_offset(1) + 100).unwrap();
    io.disk().corrupt_sector(&path, config.header_copy_offset(1) + 10).unwrap();
    let (journal, recovery) = open(&io);
    assert_eq!(
        recovery,
        Recovery { ops_recovered: vec![], torn_tail_truncated: vec![], repair_ops: vec![1] },
        "op 1 may have been acknowledged: faulty, never torn"
    );
    assert_eq!(journal.op_max(), Some(1));
    assert_eq!(block_on_ready(journal.scan()).unwrap().corrupt_ops, vec![1]);
    drop(journal);
    let (_, recovery) = open(&io);
    assert_eq!(recovery.repair_ops, vec![1], "the first open cleared nothing: still faulty at the next");
}

/// The same two faults above a valid head: ops 1..=4 durable, op 5's slot
/// and ring copy both rotten. Op 5 may have been acknowledged (it was),
/// so the head is 5 and op 5 awaits repair.
#[test]
fn a_doubly_rotten_slot_above_the_valid_ops_extends_the_head() {
    let io = SimIo::new(8);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 5, true);
    drop(journal);
    let path = journal_file();
    let config = config(SLOT_COUNT);
    io.disk().corrupt_sector(&path, config.slot_offset(5)).unwrap();
    io.disk().corrupt_sector(&path, config.header_copy_offset(5) + 255).unwrap();
    let (journal, recovery) = open(&io);
    assert_eq!(
        recovery,
        Recovery { ops_recovered: vec![1, 2, 3, 4], torn_tail_truncated: vec![], repair_ops: vec![5] }
    );
    assert_eq!(journal.op_max(), Some(5));
}

/// Another shard replays the journal read-only while the owner has op 4
/// written but not synced. The reader may see op 4 (page cache), but it
/// must not make it durable: what survives a power loss is the owner's
/// business, not a side effect of someone reading. It used to fsync.
#[test]
fn a_read_only_open_does_not_change_what_the_disk_keeps() {
    let io = SimIo::new(9);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 3, true);
    append(&mut journal, &mut chain, 1, false);
    let path = journal_file();
    let durable_before = io.disk().contents_durable(&path).unwrap();
    let (reader, _) = block_on_ready(PrepareJournal::open(&io, dir(), config(SLOT_COUNT), OpenMode::ReadOnly)).unwrap();
    drop(reader);
    assert!(io.disk().contents_durable(&path).unwrap() == durable_before, "the read-only open synced the file");
    drop(journal);
    let (_, recovery) = reopen_after_power_loss(&io);
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3], "op 4 was never synced by its owner");
}

/// disk-rot seed 1120 (with misdirected writes on): op 17's prepare write
/// was misdirected, a checkpoint at op 16 then failed its drain on the
/// faulty op 17, the replica restarted and settled the journal to the
/// checkpoint, leaving op 17 out, and restarted `Recovering`. It crashed
/// again before it repaired op 17: the compacted file held no trace of op
/// 17, so the third life opened a clean journal, voted without the op it
/// had acknowledged, and the cluster committed another op 17. A settle
/// must carry the evidence: the next open still finds op 17 faulty.
#[test]
fn settling_to_a_checkpoint_keeps_a_left_out_op_faulty_across_a_crash() {
    let io = SimIo::new(10);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 6, true);
    drop(journal);
    let path = journal_file();
    let config = config(SLOT_COUNT);
    // Op 5's slot damaged, its ring copy intact; op 6's slot and copy both.
    io.disk().corrupt_sector(&path, config.slot_offset(5) + 20).unwrap();
    io.disk().corrupt_sector(&path, config.slot_offset(6) + 20).unwrap();
    io.disk().corrupt_sector(&path, config.header_copy_offset(6) + 20).unwrap();
    let (mut journal, recovery) = open(&io);
    assert_eq!(recovery.repair_ops, vec![5, 6]);
    let anchor = journal.header(4).unwrap().checksum;
    let left_out = block_on_ready(journal.settle_to_checkpoint(4, anchor)).unwrap();
    assert_eq!(left_out, vec![5, 6]);
    drop(journal);
    io.crash();
    let (journal, recovery) = open(&io);
    assert_eq!(journal.snapshot_op(), 4);
    assert_eq!(recovery.repair_ops, vec![5, 6], "the evidence of ops 5 and 6 survived the compaction");
    assert_eq!(block_on_ready(journal.scan()).unwrap().corrupt_ops, vec![5, 6]);
}

/// disk-rot seed 2393 (misdirected writes on): op 3 is faulty (its slot
/// damaged, its ring copy durable and intact); the replica repairs it, the
/// fsync fails (Linux drops the pages from the device's future, the cache
/// keeps them) and the process dies. The next open reads op 3 valid from
/// the cache with a matching ring copy: it must make it durable before it
/// reports it, or the replica acknowledges a prepare a power loss erases.
#[test]
fn a_repaired_prepare_whose_fsync_failed_is_made_durable_at_open() {
    let io = SimIo::new(11);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 3, true);
    let (header, body) = block_on_ready(journal.read(3)).unwrap();
    drop(journal);
    let path = journal_file();
    io.disk().poke(&path, config(SLOT_COUNT).slot_offset(3), &[0; 512]).unwrap();
    let (mut journal, recovery) = open(&io);
    assert_eq!(recovery.repair_ops, vec![3]);
    block_on_ready(journal.write_repair(&header, &body)).unwrap();
    op_3_fsync_fails_then_crash_then_power_loss(&io, journal);
}

/// The same story through `write_prepare`: op 3 is durable with its ring
/// copy, a misdirected write then damages its slot on the device (the
/// replica does not know), and the replica writes the same prepare again.
/// Its fsync fails and the process dies. The cache holds a valid op 3 whose
/// copy names it; only because the journal poisoned that copy (durably)
/// before the rewrite does the next open rewrite op 3 instead of trusting
/// the cache.
#[test]
fn a_rewrite_over_a_matching_ring_copy_is_not_trusted_from_the_cache() {
    let io = SimIo::new(12);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 3, true);
    let (header, body) = block_on_ready(journal.read(3)).unwrap();
    let path = journal_file();
    io.disk().poke(&path, config(SLOT_COUNT).slot_offset(3), &[0; 512]).unwrap();
    block_on_ready(journal.write_prepare(&header, &body)).unwrap();
    op_3_fsync_fails_then_crash_then_power_loss(&io, journal);
}

/// The end both rewrite stories share: the fsync of the rewritten op 3
/// fails and the process dies; the next open reports ops 1..=3 (the cache
/// holds op 3), and after a power loss the disk must still hold what that
/// open reported durable.
fn op_3_fsync_fails_then_crash_then_power_loss(io: &SimIo, mut journal: PrepareJournal<SimIo>) {
    io.disk().fail_next_sync();
    assert!(block_on_ready(journal.sync()).is_err());
    drop(journal);
    io.crash_process();
    let (journal, recovery) = open(io);
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3], "the cache holds the rewritten op 3");
    drop(journal);
    let (_, recovery) = reopen_after_power_loss(io);
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3], "what recovery reported was durable");
}

/// A compaction that leaves a faulty op out keeps its ring copy (the
/// evidence that it was written), and the journal must still treat that
/// copy as one that may name the op: the repair that follows poisons it
/// before it rewrites the slot. Here the faulty op is the head, above every
/// op the compaction carries; `unvouch_copies` reads copies only up to the
/// highest op the file may name, and that bound once counted the carried
/// ops alone: the repair then skipped the poison, its fsync failed, and the
/// next open trusted the cached op 6 that a power loss took back.
#[test]
fn a_repair_after_a_compaction_that_kept_a_faulty_head_is_not_trusted_from_the_cache() {
    let io = SimIo::new(14);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 6, true);
    let (header, body) = block_on_ready(journal.read(6)).unwrap();
    let anchor = block_on_ready(journal.read(2)).unwrap().0.checksum;
    let path = journal_file();
    io.disk().poke(&path, config(SLOT_COUNT).slot_offset(6), &[0; 512]).unwrap();
    let faulty = block_on_ready(journal.settle_to_checkpoint(2, anchor)).unwrap();
    assert_eq!(faulty, vec![6], "op 6 reads back corrupt and is left out, its ring copy kept");
    assert_eq!(journal.repair_ops(), vec![6]);
    block_on_ready(journal.write_repair(&header, &body)).unwrap();
    io.disk().fail_next_sync();
    assert!(block_on_ready(journal.sync()).is_err());
    drop(journal);
    io.crash_process();
    let (journal, recovery) = open(&io);
    assert_eq!(recovery.ops_recovered, vec![3, 4, 5, 6], "the cache holds the repaired op 6");
    drop(journal);
    let (_, recovery) = reopen_after_power_loss(&io);
    assert_eq!(recovery.ops_recovered, vec![3, 4, 5, 6], "what recovery reported was durable");
}

/// A writable open rewrites no prepare whose ring copy names it (a matching
/// copy proves the prepare's fsync succeeded): reopening a journal of
/// durable prepares writes the header ring, not the slots.
#[test]
fn a_writable_open_does_not_rewrite_prepares_its_ring_vouches_for() {
    let io = SimIo::new(13);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 12, true);
    drop(journal);
    io.crash();
    let (writes_before, bytes_before) = io.disk().writes();
    let (_, recovery) = open(&io);
    assert_eq!(recovery.ops_recovered, (1..=12).collect::<Vec<_>>());
    let (writes, bytes) = io.disk().writes();
    let ring_bytes = 12 * shoal_vsr::header::HEADER_SIZE_BYTES as u64;
    assert_eq!((writes - writes_before, bytes - bytes_before), (1, ring_bytes), "one write: the ring copies");
}

/// A latent sector error in one ring copy costs the copies in its sector
/// only (the chunk is read again copy by copy). Disk-rot seed 1814 (a read
/// EIO placed at op 3 of replica 0's journal, with 16 ops committed;
/// replica 0 then lost op 18, which it had acknowledged) fails without the
/// per-copy read and passes with it; this story does NOT reproduce that
/// seed (it passes without the fix too: with no compaction behind it, a
/// prepare whose ring copy is unreadable is kept), so how the whole-chunk
/// failure cut op 18 is not pinned yet.
#[test]
fn a_read_error_in_one_ring_copy_costs_that_copy_only() {
    let io = SimIo::new(9);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 5, true);
    assert!(journal.is_durable(5), "ops 1..=5 may be acknowledged");
    drop(journal);
    let path = journal_file();
    io.disk().fail_sector_reads(&path, config(SLOT_COUNT).header_copy_offset(3)).unwrap();
    let (journal, recovery) = open(&io);
    assert_eq!(recovery.torn_tail_truncated, Vec::<u64>::new(), "nothing acknowledged is cut as torn");
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3, 4, 5]);
    assert_eq!(journal.op_max(), Some(5));
}

/// `settle_file` with one unreadable sector (issue 10 review): a file of
/// four sectors, all durable as v1; sectors 2 and 3 rewritten as v2, whose
/// fsync fails (Linux drops them from the device, the page cache keeps
/// them); sector 0 gets a latent sector error; the process dies. The
/// restart settles the file and reads v2 in sectors 2 and 3, so it acts on
/// v2: a power loss after the settle must keep what it read. Skipping the
/// whole file for sector 0 left v2 in the page cache only, and the power
/// loss took it back to v1.
#[test]
fn settle_rewrites_every_readable_sector_around_an_unreadable_one() {
    use shoal_sim::disk::SECTOR_SIZE_BYTES;
    use shoal_vsr::io::{Io, IoFile};
    const SECTOR: usize = SECTOR_SIZE_BYTES as usize;
    let io = SimIo::new(7);
    let path = dir().join("settled");
    block_on_ready(io.create_dir_all(dir())).unwrap();
    let file = block_on_ready(io.open(&path, OpenMode::ReadWriteCreate)).unwrap();
    let (result, _) = block_on_ready(file.write_all_at(vec![1; 4 * SECTOR], 0));
    result.unwrap();
    block_on_ready(file.sync_data()).unwrap();
    for level in [Path::new("/"), Path::new("/data"), dir()] {
        block_on_ready(io.sync_dir(level)).unwrap();
    }
    let (result, _) = block_on_ready(file.write_all_at(vec![2; 2 * SECTOR], 2 * SECTOR as u64));
    result.unwrap();
    io.disk().fail_next_sync();
    assert!(block_on_ready(file.sync_data()).is_err(), "the v2 fsync fails");
    io.disk().fail_sector_reads(&path, 0).unwrap();
    io.crash_process();
    let _ = shoal_vsr::marks::take();

    // As `settle_group_files` does: an unreadable file is left to its open.
    let settled = block_on_ready(shoal_vsr::journal::settle_file(&io, &path));
    let read_at_restart = io.disk().contents(&path).unwrap();
    assert!(read_at_restart[2 * SECTOR..].iter().all(|&byte| byte == 2), "the restart reads v2");

    io.disk().faults = DiskFaults { crash_lost_ppm: 1_000_000, ..DiskFaults::default() };
    io.power_loss();
    let after = io.disk().contents(&path).unwrap();
    assert!(after[SECTOR..] == read_at_restart[SECTOR..], "what the restart read in sectors 1..4 is durable");
    settled.expect("one bad sector does not stop the settle");
    assert_eq!(shoal_vsr::marks::take().get(shoal_vsr::marks::SETTLE_SKIPPED_UNREADABLE_SECTOR), Some(&1));
}

/// Disk-rot seed 6214 (Recovery checker) found this. With group commit, op
/// 7's copy rides in the first write of the next batch (ops 8-9), in the
/// copies region just before slot 8; that write's fsync makes op 7 durable
/// with its copy, and the replica acknowledges it. That one write is
/// misdirected and lands over op 7's own slot: both pieces of evidence of
/// op 7 are gone, its prepare (overwritten) and its only copy (never where
/// it belongs). What landed on op 7's header sector is the carrier's first
/// sector, the entries it did not carry: zeros read as "never written", a
/// repair gap the replica could nack; filler reads as damage, so op 7 is
/// faulty, as op 8 (whose copy the next batch carried) is.
#[test]
fn a_misdirected_carrier_that_lands_on_the_op_it_carries_leaves_that_op_faulty() {
    let io = SimIo::new(6);
    let config = config(SLOT_COUNT);
    let path = journal_file();
    // Flush A: op 7's prepare. Flush B: ops 8-9, the first write carrying
    // op 7's copy, misdirected onto op 7's slot. Flush C: op 10, carrying
    // the copies of 8 and 9.
    let (journal, acknowledged) = flushes_with_one_misdirected(&io, &[1, 2, 1], 1, config.slot_offset(7));
    assert!(acknowledged.contains(&7), "op 7 was durable with its copy: {acknowledged:?}");
    let carried = config.carried_copy_offset(7, 1);
    let landed = io.disk().misdirected_ranges(&path).to_vec();
    assert_eq!(landed.len(), 2, "meant for, landed on: {landed:?}");
    let region = shoal_vsr::journal::COPIES_REGION_BYTES;
    assert_eq!(landed[0].0, carried + 256 - region, "the misdirected write was the one carrying op 7's copy");
    assert_eq!(landed[1].0, config.slot_offset(7), "and it landed on op 7's header");
    drop(journal);
    io.crash_process();
    let (journal, recovery) = open(&io);
    let corrupt_ops = block_on_ready(journal.scan()).unwrap().corrupt_ops;
    // Ops 8 and 9 rode in that one write (a prepare fills its one-page
    // slot, so the fresh batch joined), and op 10 carried their copies.
    assert_eq!(recovery.repair_ops, vec![7, 8, 9]);
    assert_eq!(corrupt_ops, vec![7, 8, 9], "op 7 was acknowledged: it must read faulty, not never written");
}

/// Disk-rot seed 13111 (Recovery checker) found this. Op 7's prepare write
/// is misdirected far away: its slot keeps what it had (empty), and only
/// its copy, carried by the next batch's write, says it was written. Then
/// the sector holding that copy fails to read. Two faults took the prepare
/// and its evidence; op 9 above it is intact. Op 7 was acknowledged, so
/// recovery must read it faulty, not as a repair gap the replica could nack.
#[test]
fn an_empty_slot_below_the_head_whose_copy_cannot_be_read_is_faulty() {
    let io = SimIo::new(13);
    let config = config(SLOT_COUNT);
    let path = journal_file();
    // Flush A: op 7, misdirected into the body sectors of slot 14 (never
    // written; a header landing on a slot header is the other story). Flush
    // B: op 8, carrying op 7's copy. Flush C: op 9, carrying op 8's.
    let (journal, acknowledged) = flushes_with_one_misdirected(&io, &[1, 1, 1], 0, config.slot_offset(14) + 512);
    assert!(acknowledged.contains(&7), "op 7 was durable with its copy: {acknowledged:?}");
    let landed = io.disk().misdirected_ranges(&path).to_vec();
    assert_eq!(landed[0].0, config.slot_offset(7), "op 7's own write went elsewhere");
    drop(journal);
    io.crash_process();
    io.disk().fail_sector_reads(&path, config.carried_copy_offset(7, 1)).unwrap();
    let (journal, recovery) = open(&io);
    assert_eq!(recovery.repair_ops, vec![7]);
    let corrupt_ops = block_on_ready(journal.scan()).unwrap().corrupt_ops;
    assert_eq!(corrupt_ops, vec![7], "op 7 was acknowledged: it must read faulty, not never written");
}

/// The carrier story again, with the crash right after the carrier's
/// fsync: no later batch names anything, so op 7 is the highest op the
/// disk could name, and nothing is left of it but what the misdirected
/// write put on its header sector. A torn write never puts filler (or
/// another slot's header) there, only a misdirected one does, and that
/// write may have carried the op's only copy: the slot reads unknown
/// (faulty, part of the head), never a torn tail to cut off.
#[test]
fn a_misdirected_carrier_over_its_own_op_at_the_head_leaves_that_op_unknown() {
    let io = SimIo::new(14);
    let config = config(SLOT_COUNT);
    // Flush A: op 7's prepare. Flush B: op 8, carrying op 7's copy,
    // misdirected onto op 7's slot. Then the process dies.
    let (journal, acknowledged) = flushes_with_one_misdirected(&io, &[1, 1], 1, config.slot_offset(7));
    assert!(acknowledged.contains(&7), "op 7 was durable with its copy: {acknowledged:?}");
    assert!(!acknowledged.contains(&8), "op 8's copy was never written");
    drop(journal);
    io.crash_process();
    let _ = shoal_vsr::marks::take();
    let (journal, recovery) = open_above(&io, 6);
    assert_eq!(recovery.torn_tail_truncated, Vec::<u64>::new(), "op 7 is not cut off as torn");
    assert_eq!(recovery.repair_ops, vec![7]);
    let corrupt_ops = block_on_ready(journal.scan()).unwrap().corrupt_ops;
    assert_eq!(corrupt_ops, vec![7], "op 7 was acknowledged: it must read faulty");
    assert!(shoal_vsr::marks::take().contains_key(shoal_vsr::marks::JOURNAL_SLOT_OVERWRITTEN_UNKNOWN));
}

/// Disk-rot seed 40812 (Recovery checker) found this. Op 8's write,
/// carrying op 7's copy, is misdirected into op 7's body (its header
/// intact), and the process dies before anything names op 8. Op 7's slot
/// then looks like a torn write of the head (valid header, bad body, no
/// copy), which is cut off; but a torn write leaves old bytes in a body,
/// never filler or a header: those sectors say a misdirected write landed
/// there, so op 7 reads unknown.
#[test]
fn a_misdirected_carrier_in_its_own_ops_body_at_the_head_leaves_that_op_unknown() {
    let io = SimIo::new(15);
    let config = config(SLOT_COUNT);
    let body_bytes = shoal_vsr::journal::conformance::body(7, 0).len();
    assert!(body_bytes > 256, "op 7's prepare reaches into the sector the carrier lands on");
    let (journal, acknowledged) = flushes_with_one_misdirected(&io, &[1, 1], 1, config.slot_offset(7) + 512);
    assert!(acknowledged.contains(&7), "op 7 was durable with its copy: {acknowledged:?}");
    // The carrier (op 8's region and page, two pages) ends a sector into
    // op 8's slot: op 8's padding lands on op 8's header.
    assert_op_7_faulty_after_a_process_crash(&io, journal, &[7, 8]);
}

/// Disk-rot seed 61823 (Recovery checker, session 14) found this. Op 8's
/// write, carrying op 7's copy, is misdirected to start two sectors before
/// op 7's header, so the sector it puts there is op 8's payload: no filler,
/// no header. The process dies before anything names op 8. A torn write
/// keeps or loses whole sectors of its own slot, so a header sector holds
/// zeros or a header of that slot, never other bytes: these are damage
/// (a misdirected write, or rot), and op 7, acknowledged with its only
/// copy in that very write, reads unknown, not as a torn head.
#[test]
fn a_misdirected_carrier_that_puts_payload_on_its_own_ops_header_leaves_that_op_unknown() {
    let io = SimIo::new(16);
    let config = config(SLOT_COUNT);
    let body_bytes = shoal_vsr::journal::conformance::body(8, 0).len();
    assert!(body_bytes > 256, "op 8's write has a payload-only sector: {body_bytes} body bytes");
    // The carrier is op 8's region (a page) then op 8's page: landing a
    // page and a sector before op 7's header puts op 8's second sector
    // (payload) on it.
    let region = shoal_vsr::journal::COPIES_REGION_BYTES;
    let landing = config.slot_offset(7) - region - 512;
    let (journal, acknowledged) = flushes_with_one_misdirected(&io, &[1, 1], 1, landing);
    assert!(acknowledged.contains(&7), "op 7 was durable with its copy: {acknowledged:?}");
    let path = journal_file();
    let landed = io.disk().misdirected_ranges(&path).to_vec();
    assert_eq!(landed[0].0 + region, config.slot_offset(8), "the carrier starts with op 8's region");
    let header_sector = io.disk().contents(&path).unwrap()[config.slot_offset(7) as usize..][..256].to_vec();
    assert!(header_sector.iter().any(|&b| b != 0), "payload, not zeros, on op 7's header sector");
    assert_op_7_faulty_after_a_process_crash(&io, journal, &[7]);
}

/// Disk-rot seeds 77896 and 79424 (the restart-loop verdict, session 14)
/// found this. Recovery found op 5 damaged: the replica counts it missing,
/// does not vouch for it, and repairs it from peers. Before that repair, a
/// checkpoint at op 3 compacts the journal. Op 5 reads corrupt again, which
/// is no news: the compaction keeps its evidence (it still reads faulty
/// after a restart) instead of failing, which stopped the replica at every
/// checkpoint below the op until the repair happened to come first.
#[test]
fn a_checkpoint_below_an_op_recovery_already_found_damaged_compacts_and_keeps_it_faulty() {
    let io = SimIo::new(17);
    let config = config(SLOT_COUNT);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 6, true);
    drop(journal);
    io.disk().poke(&journal_file(), config.slot_offset(5) + 256 + 1, &[0xFF]).unwrap();
    let (mut journal, recovery) = open(&io);
    assert_eq!(recovery.repair_ops, vec![5], "recovery found op 5 damaged");
    let anchor = journal.header(3).expect("op 3 is held").checksum;
    block_on_ready(journal.drain_to(3, anchor)).expect("a known-damaged op does not fail the compaction");
    assert_eq!(journal.snapshot_op(), 3);
    assert_eq!(journal.repair_ops(), vec![5], "op 5 still awaits its repair");
    drop(journal);
    let (journal, recovery) = open(&io);
    assert_eq!(recovery.repair_ops, vec![5], "the compacted file keeps op 5 faulty");
    assert_eq!(recovery.ops_recovered, vec![4, 6]);
    assert_eq!(journal.snapshot_op(), 3);
}

/// Ops 1-6 durable; op 7's prepare durable; op 8's write, carrying op 7's
/// copy, misdirected onto op 11's slot, four slots above. Then the
/// process dies. Op 8 was never acknowledged (its copy was never written),
/// and op 11's slot holds bytes no write of that slot leaves.
fn op_8_misdirected_far_above_the_head(io: &SimIo) {
    let config = config(SLOT_COUNT);
    // Landing on op 11's region: op 8's page lands on op 11's whole slot
    // (one page), nothing beyond it.
    let landing = config.slot_offset(11) - shoal_vsr::journal::COPIES_REGION_BYTES;
    let (journal, acknowledged) = flushes_with_one_misdirected(io, &[1, 1], 1, landing);
    assert_eq!(acknowledged, vec![7], "op 7 is acknowledged (ops 1-6 were before), op 8 is not");
    let header_sector = io.disk().contents(&journal_file()).unwrap()[config.slot_offset(11) as usize..][..256].to_vec();
    assert!(header_sector.iter().any(|&b| b != 0), "the misdirected write left bytes on op 11's header sector");
    drop(journal);
    io.crash_process();
}

fn open_above(io: &SimIo, durable_log_op_max: u64) -> (PrepareJournal<SimIo>, Recovery) {
    let config = config(SLOT_COUNT);
    block_on_ready(PrepareJournal::open_above(io, dir(), config, OpenMode::ReadWrite, durable_log_op_max)).unwrap()
}

/// Disk-rot seed 115705 (Liveness, session 14) found this. A misdirected
/// write far above the head made that slot unknown, so the replica's head
/// was uncertain and it restarted `Recovering`; with a second replica
/// `Recovering` too, no view could form. But op 8's slot, between the
/// named head (op 7) and op 11, reads empty: had op 11 been acknowledged,
/// op 8 would have been durable with its copy first, and no single fault
/// leaves that empty and unnamed. So, given a superblock that names no op
/// above 7, op 11 is cut off as torn and the head stays 7.
#[test]
fn an_unknown_slot_above_an_empty_one_over_the_named_head_is_cut_off_as_torn() {
    let io = SimIo::new(18);
    op_8_misdirected_far_above_the_head(&io);
    let _ = shoal_vsr::marks::take();
    let (journal, recovery) = open_above(&io, 6);
    assert_eq!(recovery.torn_tail_truncated, vec![11], "op 11 lies beyond a gap: {recovery:?}");
    assert_eq!(recovery.repair_ops, Vec::<u64>::new());
    assert_eq!(journal.op_max(), Some(7), "the head is the named one");
    assert_eq!(block_on_ready(journal.scan()).unwrap().corrupt_ops, Vec::<u64>::new());
    assert!(shoal_vsr::marks::take().contains_key(shoal_vsr::marks::JOURNAL_UNKNOWN_BEYOND_GAP_TORN));
    drop(journal);
    let (journal, recovery) = open_above(&io, 6);
    assert_eq!(recovery.torn_tail_truncated, Vec::<u64>::new(), "the first open cleared op 11's slot");
    assert_eq!(journal.op_max(), Some(7));
}

/// The same disk, but the superblock's view headers name ops up to 11: a
/// new primary counts its own copy of an op it holds while it still
/// repairs a body below it, so a gap below the view headers' top proves
/// nothing, and op 11 stays unknown (the head uncertain).
#[test]
fn an_unknown_slot_the_superblock_reaches_stays_unknown_above_a_gap() {
    let io = SimIo::new(19);
    op_8_misdirected_far_above_the_head(&io);
    let (journal, recovery) = open_above(&io, 11);
    assert_eq!(recovery.torn_tail_truncated, Vec::<u64>::new());
    assert_eq!(recovery.repair_ops, vec![8, 9, 10, 11]);
    assert_eq!(journal.op_max(), Some(11));
}

/// Without a superblock (`open`), nothing bounds what was acknowledged:
/// every unknown slot counts toward the head, as before the gap rule.
#[test]
fn an_open_without_a_superblock_keeps_an_unknown_slot_above_a_gap() {
    let io = SimIo::new(20);
    op_8_misdirected_far_above_the_head(&io);
    let (journal, recovery) = open(&io);
    assert_eq!(recovery.repair_ops, vec![8, 9, 10, 11]);
    assert_eq!(journal.op_max(), Some(11));
}

/// Swarm seed 61204 (Liveness, session 15) found this, on a single replica.
/// Its first life wrote ops 2 and 3 and crashed with op 2's write in
/// flight: op 3 came back valid with its ring copy, op 2 missing, so the
/// log stopped at op 1. The next life wrote new versions of ops 2 and 3
/// over them and crashed before op 3's new copy was durable (an fsync
/// EIO). The slot then held the new op 3 and its ring copy still named the
/// old one: ambiguous, so faulty, and a lone replica with a faulty op
/// above its head waits `Recovering` for a peer that does not exist. A
/// slot is now never rewritten while a copy names its op, whatever the
/// version: the copy is durably poisoned first, so the new prepare reads
/// valid (its copy to be rewritten) and the old version's copy cannot
/// contradict it.
#[test]
fn a_rewrite_with_another_version_poisons_the_old_versions_copy_first() {
    let io = SimIo::new(21);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 3, true);
    assert!(journal.is_durable(3), "op 3's prepare and ring copy are durable");
    let parent = journal.header(2).unwrap().checksum;
    let body = shoal_vsr::journal::conformance::body(3, 7);
    let rewritten = shoal_vsr::journal::conformance::prepare(3, parent, &body);
    assert_ne!(rewritten.checksum, journal.header(3).unwrap().checksum, "another version of op 3");
    block_on_ready(journal.write_prepare(&rewritten, &body)).unwrap();
    // One flush: the prepare is durable, its ring copy is not yet written.
    block_on_ready(journal.flush()).unwrap();
    assert!(!journal.is_durable(3));
    drop(journal);
    io.crash_process();
    let (journal, recovery) = open(&io);
    assert_eq!(
        recovery,
        Recovery { ops_recovered: vec![1, 2, 3], torn_tail_truncated: vec![], repair_ops: vec![] },
        "the new op 3 is durable and nothing names the old one"
    );
    assert_eq!(journal.header(3), Some(&rewritten));
}

/// A rotten prepare whose ring copy survives: the scan reports the op
/// faulty and hands up the copy's header, so the replica keeps the op in
/// its log without a body (disk-rot seed 115705, replica 2). With both
/// the prepare and its copy damaged (op 4, the head, so no later write
/// carried a copy of it), no header is known.
#[test]
fn a_rotten_prepare_whose_copy_survives_is_reported_with_its_header() {
    let io = SimIo::new(22);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 4, true);
    let header_3 = *journal.header(3).unwrap();
    drop(journal);
    let path = journal_file();
    let config = config(SLOT_COUNT);
    io.disk().corrupt_sector(&path, config.slot_offset(3)).unwrap();
    io.disk().corrupt_sector(&path, config.slot_offset(4)).unwrap();
    io.disk().corrupt_sector(&path, config.header_copy_offset(4) + 255).unwrap();
    let (journal, recovery) = open(&io);
    assert_eq!(recovery.repair_ops, vec![3, 4]);
    let scan = block_on_ready(journal.scan()).unwrap();
    assert_eq!(scan.corrupt_ops, vec![3, 4]);
    assert_eq!(scan.corrupt_headers, vec![header_3], "op 3's copy names it; op 4's copy rotted too");
}

/// A checkpoint at op 4 while ops 4 and 5 (the head) are both faulty: the
/// journal holds neither op 4's header nor op 5's parent, so the compacted file
/// used to record no snapshot checksum, and a repair of op 5 that chains
/// to nothing was taken. The checkpoint's anchor is the checksum of op 4:
/// the compacted file records it, and a repair must chain to it.
#[test]
fn a_compaction_records_the_checkpoints_anchor_when_the_journal_lost_it() {
    let io = SimIo::new(23);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 5, true);
    let (anchor, header_5) = (journal.header(4).unwrap().checksum, *journal.header(5).unwrap());
    let body_5 = block_on_ready(journal.read(5)).unwrap().1;
    drop(journal);
    let path = journal_file();
    let config = config(SLOT_COUNT);
    io.disk().corrupt_sector(&path, config.slot_offset(4)).unwrap();
    io.disk().corrupt_sector(&path, config.slot_offset(5)).unwrap();
    let (mut journal, recovery) = open(&io);
    assert_eq!(recovery.repair_ops, vec![4, 5]);
    block_on_ready(journal.drain_to(4, anchor)).unwrap();
    drop(journal);
    let (mut journal, recovery) = open(&io);
    assert_eq!(recovery.repair_ops, vec![5], "op 5 is still faulty after the compaction");
    let mut forged = header_5;
    forged.parent ^= 1;
    forged.set_checksums(&body_5);
    assert!(
        matches!(block_on_ready(journal.write_repair(&forged, &body_5)), Err(JournalError::ParentMismatch { op: 5 })),
        "a repair that does not chain to the checkpoint's anchor is refused"
    );
    block_on_ready(journal.write_repair(&header_5, &body_5)).expect("the true op 5 chains to the anchor");
}

/// What the device keeps of op 7, whose write was in flight with op 8's
/// when the power went (op 8's write is kept whole).
#[derive(Debug, Clone, Copy)]
enum Op7Kept {
    /// Its header sector only: the slot reads torn.
    HeaderSector,
    /// Nothing: the slot reads empty.
    Nothing,
}

/// Ops 1-6 durable with their copies, then fresh ops 7 and 8 written in
/// one flush whose fsync the power loss cut: op 8's sectors reached the
/// device, op 7's did not (or only its header sector). Neither op's copy
/// was ever written, so neither was acknowledged.
fn flush_of_ops_7_and_8_cut_keeping_op_8(io: &SimIo, op_7_kept: Op7Kept) {
    let mut journal = create(io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 6, true);
    let prepares: Vec<_> = (0..2).map(|_| chain.next_prepare()).collect();
    let batch: Vec<_> = prepares.iter().map(|(header, body)| (*header, body.as_slice())).collect();
    block_on_ready(journal.append_batch(&batch)).unwrap();
    let written = io.disk().contents(&journal_file()).unwrap();
    drop(journal);
    io.disk().faults = DiskFaults { crash_lost_ppm: 1_000_000, ..DiskFaults::crash_only() };
    io.power_loss();
    let config = config(SLOT_COUNT);
    let prepare_bytes = |op: u64| {
        let (header, _) = &prepares[(op - 7) as usize];
        let start = config.slot_offset(op) as usize;
        (start, &written[start..start + header.size as usize])
    };
    let (op_8_offset, op_8_bytes) = prepare_bytes(8);
    io.disk().poke(&journal_file(), op_8_offset as u64, op_8_bytes).unwrap();
    let (op_7_offset, op_7_bytes) = prepare_bytes(7);
    assert!(op_7_bytes.len() > 512, "op 7 spans two sectors, so its header sector alone is torn");
    if let Op7Kept::HeaderSector = op_7_kept {
        io.disk().poke(&journal_file(), op_7_offset as u64, &op_7_bytes[..512]).unwrap();
    }
}

/// Swarm seed 117597 (Liveness, session 16) found this, on a single
/// replica: one flush wrote fresh ops 16 and 17, and the process died
/// while its fsync ran; the device kept op 17 and tore op 16. Recovery
/// kept op 17 (valid; "crash between the fsyncs", its copy to be
/// rewritten) and so read op 16 as a hole *below* the head, to repair from
/// peers: a lone replica waited `Recovering` forever. But above the
/// superblock's bound an op is acknowledged only with every op below it
/// durable with its copy, so a hole no copy names, with nothing above it
/// but prepares no copy names, proves none of them was acknowledged: the
/// whole tail is torn, cut off, and the head is op 6.
#[test]
fn a_flush_cut_by_a_power_loss_that_kept_the_later_op_is_a_torn_tail() {
    // An empty slot has nothing to clear; a torn one is zeroed.
    for (seed, op_7_kept, cleared) in [(23, Op7Kept::HeaderSector, vec![7, 8]), (24, Op7Kept::Nothing, vec![8])] {
        let io = SimIo::new(seed);
        flush_of_ops_7_and_8_cut_keeping_op_8(&io, op_7_kept);
        let _ = shoal_vsr::marks::take();
        let (journal, recovery) = open_above(&io, 6);
        assert_eq!(
            recovery,
            Recovery { ops_recovered: (1..=6).collect(), torn_tail_truncated: cleared, repair_ops: vec![] },
            "{op_7_kept:?}: ops 7 and 8 were never acknowledged"
        );
        assert_eq!(journal.op_max(), Some(6));
        assert!(shoal_vsr::marks::take().contains_key(shoal_vsr::marks::JOURNAL_UNCOPIED_TAIL_TORN));
        drop(journal);
        let (journal, recovery) = open_above(&io, 6);
        assert_eq!(recovery.torn_tail_truncated, Vec::<u64>::new(), "{op_7_kept:?}: the first open cleared the tail");
        assert_eq!(journal.op_max(), Some(6));
    }
}

/// The same disk, but the superblock names op 8 (a view change installed
/// it): below that bound a hole proves nothing (a new primary counts its
/// own copy of an op while it repairs a body below it), so op 7 is a hole
/// to repair and op 8 stays.
#[test]
fn a_cut_flush_the_superblock_reaches_keeps_its_later_op_and_repairs_the_hole() {
    let io = SimIo::new(25);
    flush_of_ops_7_and_8_cut_keeping_op_8(&io, Op7Kept::HeaderSector);
    let (journal, recovery) = open_above(&io, 8);
    assert_eq!(recovery.repair_ops, vec![7]);
    assert_eq!(recovery.torn_tail_truncated, Vec::<u64>::new());
    assert_eq!(journal.op_max(), Some(8));
}

/// Op 8 was acknowledged (its prepare and copy durable), so op 7 was too;
/// then op 7's slot rotted. Its copy names it: faulty, never a torn tail,
/// and op 8 above it stays.
#[test]
fn a_rotten_op_below_an_acknowledged_one_is_repaired_not_cut_off() {
    let io = SimIo::new(26);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 8, true);
    assert!(journal.is_durable(8));
    let offset = config(SLOT_COUNT).slot_offset(7);
    drop(journal);
    io.disk().corrupt_sector(&journal_file(), offset).unwrap();
    io.crash_process();
    let (journal, recovery) = open_above(&io, 6);
    assert_eq!(recovery.torn_tail_truncated, Vec::<u64>::new());
    assert_eq!(recovery.repair_ops, vec![7]);
    assert_eq!(journal.op_max(), Some(8));
}

/// Ops 7 and 8 acknowledged; then op 7's prepare and ring copy are zeroed
/// (two faults: it reads as never written) and op 8's ring copy rots. Op
/// 8's copy place reads damaged, so a copy may have named it: the tail is
/// not cut off, op 8 (intact) is recovered and op 7 awaits repair.
#[test]
fn a_tail_whose_copy_place_is_damaged_is_not_cut_off_as_uncopied() {
    let io = SimIo::new(27);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 8, true);
    assert!(journal.is_durable(8));
    drop(journal);
    let config = config(SLOT_COUNT);
    io.disk().poke(&journal_file(), config.slot_offset(7), &[0; 1024]).unwrap();
    io.disk().poke(&journal_file(), config.header_copy_offset(7), &[0; 256]).unwrap();
    io.disk().corrupt_sector(&journal_file(), config.header_copy_offset(8)).unwrap();
    io.crash_process();
    let (journal, recovery) = open_above(&io, 6);
    assert_eq!(recovery.torn_tail_truncated, Vec::<u64>::new(), "{recovery:?}");
    assert_eq!(recovery.repair_ops, vec![7]);
    assert_eq!(journal.op_max(), Some(8));
}

/// A compaction's install must not trust its own fsync of the spare after
/// a mirrored fsync of it failed (fsyncgate: the failure drops what that
/// fsync covered from the device's future, the file's next fsync finds
/// nothing dirty and succeeds). Story of disk-rot seeds 2011, 743 and 2526
/// (session 19): the spare's file header, written by the stage, went with a
/// failed mirrored flush; the install's fsync then succeeded, the exchange
/// made that spare the journal, and the replica could not restart ("journal
/// file header is zero-filled", seed 2011) or had lost prepares it
/// acknowledged (743, 2526: `Promises`). Now the install refuses to
/// exchange, and the restart opens the old journal whole.
#[test]
fn a_failed_window_fsync_of_the_spare_stops_its_install_before_the_exchange() {
    let io = SimIo::new(7);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 4, true);
    let staged = block_on_ready(journal.stage_drain(2)).unwrap().expect("ops to compact");
    let spare = journal_file().with_extension("wal.tmp");
    // Op 5 goes to the spare (until session 24 to both files); the fsync
    // of the spare fails.
    append(&mut journal, &mut chain, 1, false);
    io.disk().fail_next_sync_of(&spare);
    assert!(block_on_ready(journal.flush()).is_err(), "the window's flush reports the spare's fsync failure");
    let installed = block_on_ready(staged.install());
    let ended = journal.end_drain(installed);
    assert!(ended.is_err(), "the install refused: {ended:?}");
    drop(journal);
    io.disk().crash_process();
    let (reopened, recovery) = open(&io);
    assert_eq!(reopened.snapshot_op(), 0, "the old journal, whole");
    for op in 1..=4 {
        assert!(recovery.ops_recovered.contains(&op), "acknowledged op {op} is back: {recovery:?}");
    }
}

/// Session 24: a compaction's window writes each op once, to the spare.
/// Op 5, appended and synced in the window, is durable in the spare alone:
/// the journal must not call it durable before the install (a power loss
/// before the exchange is durable recovers the retired file, which never
/// got it), and the install's end releases it.
#[test]
fn an_op_synced_in_a_compactions_window_is_acknowledged_only_at_its_install() {
    let io = SimIo::new(3);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 4, true);
    let staged = block_on_ready(journal.stage_drain(2)).unwrap().expect("ops to compact");
    append(&mut journal, &mut chain, 1, true);
    assert!(!journal.is_durable(5), "op 5 is durable in the spare alone");
    assert!(journal.held_for_install(5));
    // The directory still names the retired file, which never got op 5.
    let retired = io.disk().contents(&journal_file()).expect("the journal file");
    let (probe, recovery) = block_on_ready(PrepareJournal::open(&io, dir(), config(SLOT_COUNT), OpenMode::ReadOnly))
        .expect("the retired journal opens");
    assert_eq!((probe.snapshot_op(), recovery.ops_recovered.contains(&5)), (0, false), "op 5 is not in it");
    drop((probe, retired));
    let installed = block_on_ready(staged.install());
    assert_eq!(journal.end_drain(installed).unwrap(), vec![5], "the install releases op 5");
    assert!(journal.is_durable(5));
    drop(journal);
    io.disk().power_loss();
    let (reopened, recovery) = open(&io);
    assert_eq!(reopened.snapshot_op(), 2);
    assert_eq!(recovery.ops_recovered, vec![3, 4, 5], "every acknowledged op, from the compacted journal");
}

/// A power loss in the window, before the install: the retired file is the
/// journal, whole for every op acknowledged before the stage; what the
/// window synced was never acknowledged, and is gone.
#[test]
fn a_power_loss_in_a_compactions_window_recovers_the_retired_journal_whole() {
    let io = SimIo::new(5);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 4, true);
    let _staged = block_on_ready(journal.stage_drain(2)).unwrap().expect("ops to compact");
    append(&mut journal, &mut chain, 2, true);
    assert!(!journal.is_durable(5) && !journal.is_durable(6));
    drop(journal);
    io.disk().power_loss();
    let (reopened, recovery) = open(&io);
    assert_eq!(reopened.snapshot_op(), 0, "the exchange never happened");
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3, 4], "every acknowledged op, none of the window's");
}

/// A truncation in the window is durable on return in whichever file the
/// directory names: it clears the retired file too. Without that, a power
/// loss before the exchange brought op 4 back from the retired file, a
/// prepare the view change had dropped.
#[test]
fn a_truncation_in_a_compactions_window_clears_the_retired_journal_too() {
    let io = SimIo::new(9);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 4, true);
    let _staged = block_on_ready(journal.stage_drain(2)).unwrap().expect("ops to compact");
    block_on_ready(journal.truncate_after(3)).unwrap();
    drop(journal);
    io.disk().power_loss();
    let (reopened, recovery) = open(&io);
    assert_eq!(reopened.snapshot_op(), 0);
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3], "op 4 stays dropped");
}

/// An install that fails after the window wrote to the spare poisons the
/// journal: the retired file, which the directory still names, lacks what
/// the window wrote, and the index no longer says what either file holds.
#[test]
fn a_failed_install_after_window_writes_poisons_the_journal() {
    let io = SimIo::new(13);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 4, true);
    let staged = block_on_ready(journal.stage_drain(2)).unwrap().expect("ops to compact");
    append(&mut journal, &mut chain, 1, false);
    let spare = journal_file().with_extension("wal.tmp");
    io.disk().fail_next_sync_of(&spare);
    let installed = block_on_ready(staged.install());
    assert!(journal.end_drain(installed).is_err(), "the spare's fsync failed");
    assert!(journal.is_poisoned(), "the window wrote op 5 to the spare alone");
    drop(journal);
    io.disk().crash_process();
    let (reopened, recovery) = open(&io);
    assert_eq!(reopened.snapshot_op(), 0);
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3, 4], "every acknowledged op");
}

/// Disk-rot seed 348442 (`Promises`): a latent sector error took the
/// sector of op 18's ring copy (and op 19's, which shares it) while the
/// replica was down; the restart repaired op 18 and rewrote its copy with
/// a write smaller than the sector, which does not remap it, so the copy
/// was durable and named op 18 but no read could show it. The next
/// compaction copied the journal's ring byte for byte, read poison for the
/// unreadable entries, and the compacted file no longer vouched for ops the
/// replica had acknowledged. The stage now writes the copy of a durable op
/// it cannot read from the index (the same bytes the device holds).
#[test]
fn a_compaction_keeps_the_ring_copies_of_durable_ops_it_cannot_read() {
    let io = SimIo::new(11);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    let mut headers = Vec::new();
    for _ in 0..4 {
        let (header, body) = chain.next_prepare();
        block_on_ready(journal.append(&header, &body)).unwrap();
        headers.push(header);
    }
    block_on_ready(journal.sync()).unwrap();
    let config = config(SLOT_COUNT);
    for op in 3..=4 {
        assert!(journal.is_durable(op), "op {op} may be acknowledged");
        io.disk().fail_sector_reads(&journal_file(), config.header_copy_offset(op)).unwrap();
    }
    let staged = block_on_ready(journal.stage_drain(2)).unwrap().expect("ops to compact");
    let installed = block_on_ready(staged.install());
    journal.end_drain(installed).unwrap();
    for header in &headers[2..] {
        let copy = io
            .disk()
            .contents_durable_range(&journal_file(), config.header_copy_offset(header.op), 256)
            .expect("the compacted journal holds the ring");
        let copy = Header::decode(&copy);
        assert_eq!(copy.ok().map(|copy| copy.checksum), Some(header.checksum), "op {}'s durable copy", header.op);
    }
    drop(journal);
    io.disk().power_loss();
    let (_, recovery) = open(&io);
    assert_eq!(recovery.ops_recovered, vec![3, 4], "both acknowledged ops, from the compacted journal");
    assert_eq!(recovery.repair_ops, Vec::<u64>::new());
}

/// Append `batches` batches of two fresh ops, a flush each; returns their
/// headers in op order.
fn append_batches_of_two(journal: &mut PrepareJournal<SimIo>, batches: usize) -> Vec<Header> {
    let mut chain = Chain::new();
    let mut headers = Vec::new();
    for _ in 0..batches {
        let prepares: Vec<_> = (0..2).map(|_| chain.next_prepare()).collect();
        headers.extend(prepares.iter().map(|(header, _)| *header));
        let batch: Vec<_> = prepares.iter().map(|(header, body)| (*header, body.as_slice())).collect();
        block_on_ready(journal.append_batch(&batch)).unwrap();
        block_on_ready(journal.flush()).unwrap();
    }
    headers
}

/// One of `header`'s copy places holds it durably.
fn has_durable_copy(io: &SimIo, config: &JournalConfig, header: &Header) -> bool {
    config.header_copy_offsets(header.op).any(|offset| {
        let copy = io.disk().contents_durable_range(&journal_file(), offset, 256).unwrap();
        Header::decode(&copy).is_ok_and(|copy| copy.checksum == header.checksum)
    })
}

/// The carried-copies twin of disk-rot 348442: ops 1 and 2 are durable
/// with their copies carried in the region before op 3's slot (written with
/// op 3, never in the ring), and a latent sector error takes that region. A
/// compaction must still give the compacted journal a copy of op 2, which
/// it keeps live.
#[test]
fn a_compaction_keeps_a_carried_copy_of_a_durable_op_it_cannot_read() {
    let io = SimIo::new(13);
    let mut journal = create(&io);
    // Three batches of two fresh ops, a flush each: a batch's write carries
    // the copies the flush before made ready.
    let headers = append_batches_of_two(&mut journal, 3);
    let config = config(SLOT_COUNT);
    let carried_only: Vec<u64> = (1..=4)
        .filter(|&op| journal.is_durable(op))
        .filter(|&op| {
            let ring = io.disk().contents_durable_range(&journal_file(), config.header_copy_offset(op), 256).unwrap();
            Header::decode(&ring).map_or(true, |copy| copy.op != op)
        })
        .collect();
    assert!(!carried_only.is_empty(), "some durable op has its copy carried only");
    let op = carried_only[carried_only.len() - 1];
    for offset in config.header_copy_offsets(op).skip(1) {
        io.disk().fail_sector_reads(&journal_file(), offset).unwrap();
    }
    let staged = block_on_ready(journal.stage_drain(op - 1)).unwrap().expect("ops to compact");
    let installed = block_on_ready(staged.install());
    journal.end_drain(installed).unwrap();
    let named = has_durable_copy(&io, &config, &headers[(op - 1) as usize]);
    assert!(named, "durable op {op} has a durable copy in the compacted journal");
}

/// Disk-rot seeds 353521 and 354525 (`Promises`, found by a sweep of the
/// first fix of 348442): op 2 is durable with its copy carried in the
/// region before op 3's slot (written with op 3); a view change truncates
/// ops 3 and 4, so op 2 is the head. The compaction wrote zeros over the
/// carried-copies regions above the head (it took them for leftovers of
/// the spare's previous life) and so dropped the only copy of an op the
/// replica had acknowledged.
#[test]
fn a_compaction_keeps_a_durable_ops_copy_carried_by_a_truncated_write() {
    let io = SimIo::new(17);
    let mut journal = create(&io);
    let headers = append_batches_of_two(&mut journal, 2);
    let config = config(SLOT_COUNT);
    assert!(journal.is_durable(2), "op 2 may be acknowledged");
    let ring = io.disk().contents_durable_range(&journal_file(), config.header_copy_offset(2), 256).unwrap();
    assert!(Header::decode(&ring).is_err(), "op 2's copy is carried, not in the ring");
    block_on_ready(journal.truncate_after(2)).unwrap();
    let staged = block_on_ready(journal.stage_drain(1)).unwrap().expect("ops to compact");
    let installed = block_on_ready(staged.install());
    journal.end_drain(installed).unwrap();
    let named = has_durable_copy(&io, &config, &headers[1]);
    assert!(named, "durable op 2 has a durable copy in the compacted journal");
    drop(journal);
    io.disk().power_loss();
    let (_, recovery) = open(&io);
    assert_eq!(recovery.ops_recovered, vec![2]);
}

/// Open (session 21, `disk-rot-pages`, e.g. seeds 14, 92, 191: "journal
/// write header copies failed"): on a disk whose latent sector errors take
/// their whole 4 KiB page, as through Linux's page cache, a bad sector in
/// the header ring makes every open fail: recovery rewrites the ring copies
/// of the valid ops, 256 bytes each, and a write covering part of an
/// unreadable page fails with EIO, at this open and every later one. The
/// replica can never start again although every op is intact in its slot.
/// Fixed by format 5: a ring write that fails on an unreadable page is
/// made a write of the whole page, the rest as read, an unreadable copy of
/// a durable op rebuilt from the index, poison elsewhere (an invalid copy,
/// as it read before).
#[test]
fn an_unreadable_ring_page_does_not_stop_every_open() {
    let io = page_damaging_io(23);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 4, true);
    drop(journal);
    // In the ring entry of op 3: the ring's whole first page reads as EIO.
    let config = config(SLOT_COUNT);
    io.disk().fail_sector_reads(&journal_file(), config.header_copy_offset(3) + 10).unwrap();
    let opened = block_on_ready(PrepareJournal::open(&io, dir(), config, OpenMode::ReadWrite));
    let (_, recovery) = opened.expect("the journal opens; ops whose copies are unreadable are repaired, not a stop");
    assert!(recovery.ops_recovered.len() + recovery.repair_ops.len() >= 4, "{recovery:?}");
}

/// Open (session 21, `disk-rot-pages`, 22 of the 93 failing seeds of
/// 0..4500, e.g. seed 41: "journal clear torn slot failed"): op 4 was
/// written and never synced, so nothing was promised for it; the process
/// dies, and a latent sector error takes the page of op 4's slot header.
/// Recovery reads op 4 torn and clears its slot; a clear of the header
/// alone covered part of an unreadable page and failed with EIO, at this
/// open and every later one. The clear is a whole page now: no read, and
/// the write remaps the bad sector.
#[test]
fn a_torn_slot_on_an_unreadable_page_is_cleared() {
    let io = page_damaging_io(24);
    let mut journal = create(&io);
    let mut chain = Chain::new();
    append(&mut journal, &mut chain, 3, true);
    append(&mut journal, &mut chain, 1, false);
    drop(journal);
    io.disk().power_loss();
    let config = config(SLOT_COUNT);
    io.disk().fail_sector_reads(&journal_file(), config.slot_offset(4) + 512).unwrap();
    let (journal, recovery) = open(&io);
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3]);
    assert!(recovery.repair_ops.is_empty(), "op 4 was never acknowledged: {recovery:?}");
    assert_eq!(journal.op_max(), Some(3));
    drop(journal);
    let (_, recovery) = open(&io);
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3], "the next open finds the same log");
}

/// A disk whose latent sector errors take their whole 4 KiB page, as
/// through Linux's page cache.
fn page_damaging_io(seed: u64) -> SimIo {
    let io = SimIo::new(seed);
    io.disk().latent_error_page_bytes = shoal_sim::disk::LINUX_PAGE_SIZE_BYTES;
    io
}

/// Ops 1-4 appended and synced on `io`; the journal and the prepares.
fn four_synced_ops_on_a_page_damaging_disk(io: &SimIo) -> (PrepareJournal<SimIo>, Vec<(Header, Vec<u8>)>) {
    let mut journal = create(io);
    let mut chain = Chain::new();
    let prepares: Vec<_> = (0..4).map(|_| chain.next_prepare()).collect();
    for (header, body) in &prepares {
        block_on_ready(journal.append(header, body)).unwrap();
    }
    block_on_ready(journal.sync()).unwrap();
    (journal, prepares)
}

/// Restart loop (session 21, `disk-rot-pages`, e.g. seed 307: "journal
/// write prepare failed" at every repair): acknowledged op 2's slot page
/// holds a latent sector error, so recovery reads op 2 faulty (its ring
/// copy names it) and the replica repairs it from a peer. The repair wrote
/// op 2's header and body rounded up to sectors, part of the unreadable
/// page: EIO, the replica restarts, finds op 2 faulty again, and repairs
/// it again, for ever. A prepare write covers whole pages now.
#[test]
fn a_repair_over_an_unreadable_slot_page_succeeds() {
    let io = page_damaging_io(25);
    let (journal, prepares) = four_synced_ops_on_a_page_damaging_disk(&io);
    drop(journal);
    let config = config(SLOT_COUNT);
    io.disk().fail_sector_reads(&journal_file(), config.slot_offset(2) + 1024).unwrap();
    let (mut journal, recovery) = open(&io);
    assert_eq!(recovery.repair_ops, vec![2], "op 2 is faulty: its copy names it");
    let (header, body) = &prepares[1];
    block_on_ready(journal.write_repair(header, body)).expect("the repair's write needs no read of the bad page");
    block_on_ready(journal.sync()).unwrap();
    assert_eq!(block_on_ready(journal.read(2)).unwrap(), (*header, body.clone()));
    drop(journal);
    io.disk().power_loss();
    let (_, recovery) = open(&io);
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3, 4]);
    assert!(recovery.repair_ops.is_empty());
}

/// A ring write beside an unreadable sector keeps the durable copies that
/// sector held: op 2's ring copy shares its sector with op 3's, a latent
/// error takes that sector (its page, with page-sized damage), and the
/// truncation of op 4 clears op 4's entry in the same page. The write of
/// the whole page puts op 2's and op 3's headers back from the index (they
/// are durable: their copies are what their acknowledgements rest on), and
/// never poison, which would leave them no copy.
#[test]
fn a_ring_write_over_an_unreadable_page_keeps_the_durable_copies_in_it() {
    let io = page_damaging_io(26);
    let (mut journal, prepares) = four_synced_ops_on_a_page_damaging_disk(&io);
    let config = config(SLOT_COUNT);
    io.disk().fail_sector_reads(&journal_file(), config.header_copy_offset(2)).unwrap();
    let _ = shoal_vsr::marks::take();
    block_on_ready(journal.truncate_after(3)).expect("the truncation writes the ring page whole");
    assert!(shoal_vsr::marks::take().contains_key(shoal_vsr::marks::JOURNAL_WRITE_UNREADABLE_COPY_REBUILT));
    for (header, _) in &prepares[..3] {
        assert!(has_durable_copy(&io, &config, header), "op {} keeps a durable copy", header.op);
    }
    drop(journal);
    io.disk().power_loss();
    let (_, recovery) = open(&io);
    assert_eq!(recovery.ops_recovered, vec![1, 2, 3]);
}

/// Disk-rot-sharded seed 4747, as the journal saw it: a replica restored a
/// checkpoint at op 4 from a peer (its journal, still at snapshot 0, holds
/// none of ops 1..=4), then wrote and synced op 5, whose ring copy's write
/// went elsewhere (a misdirected write), and crashed before the compaction
/// to the checkpoint. Opened with the superblock's floor alone (0), ops
/// 1..=4 read as a hole and op 5 as an uncopied tail above it: cut as torn,
/// though the replica had acknowledged it. Opened with the durable
/// checkpoint as the floor, as `GroupStorage::open` now does, op 5 is kept
/// and its copy rewritten.
#[test]
fn a_prepare_above_a_restored_checkpoint_whose_copy_went_elsewhere_is_kept_when_the_checkpoint_is_the_floor() {
    let io = SimIo::new(11);
    let mut journal = create(&io);
    let body = shoal_vsr::journal::conformance::body(5, 0);
    let op_5 = shoal_vsr::journal::conformance::prepare(5, 0x44, &body);
    block_on_ready(journal.write_prepare(&op_5, &body)).unwrap();
    let landing = config(SLOT_COUNT).slot_offset(9) + 3 * 1024;
    io.disk().misdirect_next_write_to_landing(&journal_file(), landing);
    block_on_ready(journal.sync()).unwrap();
    assert!(journal.is_durable(5), "the replica may acknowledge op 5");
    drop(journal);
    io.crash();
    let open_above = |floor: u64| {
        block_on_ready(PrepareJournal::open_above(&io, dir(), config(SLOT_COUNT), OpenMode::ReadOnly, floor)).unwrap()
    };
    let (_, below) = open_above(0);
    assert!(!below.ops_recovered.contains(&5), "the superblock's floor alone cuts op 5: {below:?}");
    let (_, at_checkpoint) = open_above(4);
    assert!(at_checkpoint.ops_recovered.contains(&5), "the checkpoint as the floor keeps op 5: {at_checkpoint:?}");
}
