//! Model test of `PrepareJournal` on `SimIo`: random sequences of append,
//! sync, drain (at once, or staged and installed later with other calls
//! between, its spare mirroring them), truncate, injected errors, sticky
//! corruption, repair, crash
//! (now, or after any number of storage calls inside another operation, so
//! also between every step of drain) and reopen, checked against a reference
//! model:
//!
//! - every op whose append and a following sync returned Ok is recovered
//!   intact after every reopen (unless the test corrupted it);
//! - every op the journal calls durable (`is_durable`: it may be
//!   acknowledged) has a copy of its header in the file the durable
//!   directory names, also when a latent sector error hides the ring copy
//!   from reads (disk-rot seed 348442: a compaction replaced such copies
//!   with poison);
//! - no live entry is evicted from the index while the journal runs;
//! - the in-memory `snapshot_op` never exceeds the one in the durable file,
//!   and a reopen never recovers one beyond the highest drain attempted or
//!   below the last drain that returned Ok;
//! - no phantom ops: every recovered header is one the test appended;
//! - the same seed and steps give the same trace and the same disk bytes.
//!
//! Odd seeds damage whole 4 KiB pages (a latent sector error fails every
//! read of its page and every write covering the page in part), even seeds
//! single sectors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use shoal_sim::disk::LINUX_PAGE_SIZE_BYTES;
use shoal_sim::{DiskFaults, SimIo, block_on_ready};
use shoal_vsr::Header;
use shoal_vsr::header::HEADER_SIZE_BYTES;
use shoal_vsr::io::OpenMode;
use shoal_vsr::journal::conformance::{MESSAGE_SIZE_MAX_BYTES, body, config, prepare};
use shoal_vsr::journal::{JournalError, PrepareJournal, StagedDrain, decode_file_snapshot_op, journal_path};

const SLOT_COUNT: u64 = 8;
const ROOT_CHECKSUM: u128 = 0xC0FFEE;
const DIR: &str = "/data/r0";

#[derive(Debug, Clone)]
enum Inner {
    Append(u8),
    /// `append_batch` of this many prepares that fill their slots: carries
    /// ready copies and, fresh, is one write over the regions between.
    AppendFullBatch(u8),
    Sync,
    /// One step of group commit: the ops it reports durable are acked, and
    /// the next append carries the copies it made ready.
    Flush,
    Drain(u8),
    /// Stage a compaction (its spare written, mirroring every later write)
    /// and leave it for `InstallDrain`, as the node does.
    StageDrain(u8),
    /// Install the staged compaction (spare fsync, exchange, directory
    /// fsync) and end it.
    InstallDrain,
    TruncateAfter(u8),
}

#[derive(Debug, Clone)]
enum Step {
    Run(Inner),
    /// Crash after this many more storage calls made by the inner operation.
    CrashDuring(u8, Inner),
    Crash,
    Reopen,
    FailNextWrite,
    FailNextSync,
    Corrupt(u8),
    /// A latent sector error under a copy place of a live acknowledged op
    /// (its ring entry, or the entry of a carried-copies region after it;
    /// the sector holds other copies too): reads fail until a write covers
    /// the whole sector.
    FailCopyReads(u8, u8),
    /// A latent sector error in a sector of a live acknowledged op's
    /// prepare (its page, on odd seeds): it reads faulty until a repair
    /// writes it whole.
    FailSlotReads(u8, u8),
    Repair,
}

fn inner() -> impl Strategy<Value = Inner> {
    prop_oneof![
        6 => (1u8..4).prop_map(Inner::Append),
        3 => (1u8..5).prop_map(Inner::AppendFullBatch),
        3 => Just(Inner::Sync),
        3 => Just(Inner::Flush),
        2 => (0u8..SLOT_COUNT as u8).prop_map(Inner::Drain),
        2 => (0u8..SLOT_COUNT as u8).prop_map(Inner::StageDrain),
        2 => Just(Inner::InstallDrain),
        1 => (0u8..4).prop_map(Inner::TruncateAfter),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        20 => inner().prop_map(Step::Run),
        6 => (0u8..40, inner()).prop_map(|(steps, inner)| Step::CrashDuring(steps, inner)),
        3 => Just(Step::Crash),
        2 => Just(Step::Reopen),
        1 => Just(Step::FailNextWrite),
        1 => Just(Step::FailNextSync),
        1 => any::<u8>().prop_map(Step::Corrupt),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(op, place)| Step::FailCopyReads(op, place)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(op, sector)| Step::FailSlotReads(op, sector)),
        1 => Just(Step::Repair),
    ]
}

struct Harness {
    io: SimIo,
    dir: PathBuf,
    path: PathBuf,
    journal: Option<PrepareJournal<SimIo>>,
    /// A compaction staged and not yet installed, with its target.
    staged: Option<(StagedDrain<SimIo>, u64)>,
    /// Every prepare appended (latest version per op): the source of truth
    /// for contents, parents and phantom detection.
    appended: BTreeMap<u64, (Header, Vec<u8>)>,
    /// Checksums of every prepare ever appended, truncated ones included: with
    /// silent corruption a misdirected erase can resurrect one, but nothing
    /// the test never wrote may ever appear.
    ever_appended: BTreeSet<u128>,
    /// Ops whose append and a later sync returned Ok.
    acked: BTreeSet<u64>,
    /// Ops written since the last successful sync.
    unsynced: BTreeSet<u64>,
    /// The last drain target that returned Ok (or the recovered snapshot).
    snapshot_floor: u64,
    /// The highest drain target ever attempted.
    drain_attempt_max: u64,
    /// Ops whose slot the test corrupted: they may need repair.
    corrupted: BTreeSet<u64>,
    /// Ops of a failed `append_batch`: nothing was indexed, but the writes
    /// before the failed one reached the page cache, so a reopen may
    /// recover them (never promised, not phantoms either), even after an
    /// append of the op succeeded, until that append is durable (two
    /// unsynced versions: a crash may keep either). The model follows the
    /// journal for them until then.
    unpromised: BTreeSet<u64>,
    variant: u8,
    trace: Vec<String>,
    /// False when the disk may corrupt silently (misdirected writes, random
    /// read corruption): then acked ops may be lost and recovery may fail
    /// with a typed error, but there must still be no panic, no phantom op
    /// and no snapshot_op ahead of the durable one.
    strict: bool,
    /// The journal could not be recovered (only allowed when not strict).
    dead: bool,
}

impl Harness {
    fn new(seed: u64) -> Harness {
        Harness::with_faults(seed, DiskFaults::crash_only())
    }

    fn with_faults(seed: u64, faults: DiskFaults) -> Harness {
        let io = SimIo::new(seed);
        io.disk().faults = DiskFaults::default();
        // Odd seeds damage whole 4 KiB pages, as through Linux's page
        // cache: a latent error fails every read of its page and every
        // write covering the page in part (`write_pages`' fallback).
        if seed % 2 == 1 {
            io.disk().latent_error_page_bytes = LINUX_PAGE_SIZE_BYTES;
        }
        let dir = PathBuf::from(DIR);
        let journal = block_on_ready(PrepareJournal::create(&io, &dir, config(SLOT_COUNT))).expect("create");
        io.disk().faults = faults;
        Harness {
            path: journal_path(&dir, config(SLOT_COUNT).namespace),
            io,
            dir,
            journal: Some(journal),
            staged: None,
            appended: BTreeMap::new(),
            ever_appended: BTreeSet::new(),
            acked: BTreeSet::new(),
            unsynced: BTreeSet::new(),
            snapshot_floor: 0,
            drain_attempt_max: 0,
            corrupted: BTreeSet::new(),
            unpromised: BTreeSet::new(),
            variant: 0,
            trace: Vec::new(),
            strict: faults.misdirected_write_ppm == 0 && faults.read_corruption_ppm == 0,
            dead: false,
        }
    }

    fn journal(&mut self) -> &mut PrepareJournal<SimIo> {
        self.journal.as_mut().expect("journal is open")
    }

    fn run_inner(&mut self, inner: &Inner) {
        match *inner {
            Inner::Append(count) => {
                for _ in 0..count {
                    if !self.append_one() {
                        break;
                    }
                }
            }
            Inner::AppendFullBatch(count) => self.append_full_batch(count),
            Inner::Sync => {
                let result = block_on_ready(self.journal().sync());
                self.trace.push(format!("sync {result:?}"));
                // In a compaction's window a sync makes the ops durable in
                // the spare alone: acknowledged only at the install's end.
                if result.is_ok() && !self.journal().drain_in_flight() {
                    self.unpromised.retain(|op| !self.unsynced.contains(op));
                    self.acked.append(&mut self.unsynced);
                }
            }
            Inner::Flush => {
                let result = block_on_ready(self.journal().flush());
                self.trace.push(format!("flush {result:?}"));
                for op in result.unwrap_or_default() {
                    assert!(self.unsynced.remove(&op), "flush reported op {op}, which was not written since an ack");
                    self.unpromised.remove(&op);
                    self.acked.insert(op);
                }
            }
            Inner::Drain(back) => {
                let Some(through) = self.drain_target(back) else { return };
                let result = block_on_ready(self.journal().drain(through));
                self.trace.push(format!("drain {through} {result:?}"));
                self.drained(through, result.is_ok());
            }
            Inner::StageDrain(back) => {
                let Some(through) = self.drain_target(back) else { return };
                let result = block_on_ready(self.journal().stage_drain(through));
                self.trace.push(format!("stage drain {through} {:?}", result.as_ref().map(Option::is_some)));
                if let Ok(Some(staged)) = result {
                    assert!(self.journal().drain_in_flight());
                    self.staged = Some((staged, through));
                }
            }
            Inner::InstallDrain => {
                let Some((staged, through)) = self.staged.take() else { return };
                let installed = block_on_ready(staged.install());
                let result = self.journal().end_drain(installed);
                self.trace.push(format!("install drain {through} {result:?}"));
                assert!(!self.journal().drain_in_flight());
                for &op in result.as_deref().unwrap_or_default() {
                    assert!(op > through, "released op {op} is one the checkpoint covers");
                    assert!(
                        self.unsynced.remove(&op),
                        "the install released op {op}, which was not written since an ack"
                    );
                    self.unpromised.remove(&op);
                    self.acked.insert(op);
                }
                self.drained(through, result.is_ok());
            }
            Inner::TruncateAfter(back) => {
                // Never below a staged compaction's checkpoint (committed
                // ops are never truncated; the journal refuses it).
                let staged_through = self.staged.as_ref().map_or(0, |(_, through)| *through);
                let journal = self.journal();
                let Some(op_max) = journal.op_max() else { return };
                let op = op_max.saturating_sub(u64::from(back)).max(journal.snapshot_op()).max(staged_through);
                let result = block_on_ready(self.journal().truncate_after(op));
                self.trace.push(format!("truncate_after {op} {result:?}"));
                // Either way the suffix is no longer promised; on error its
                // erasure may or may not be durable, so keep its contents
                // as legitimate survivors.
                self.acked.retain(|&acked| acked <= op);
                self.unsynced.retain(|&unsynced| unsynced <= op);
                if result.is_ok() {
                    self.appended.retain(|&appended, _| appended <= op);
                    assert_eq!(self.journal().op_max(), (op > self.journal().snapshot_op()).then_some(op));
                }
            }
        }
    }

    /// The op a drain `back` ops below the head compacts through, counted
    /// as attempted; `None` while a compaction is staged or with no op.
    fn drain_target(&mut self, back: u8) -> Option<u64> {
        if self.staged.is_some() {
            return None;
        }
        let journal = self.journal();
        let through = journal.op_max()?.saturating_sub(u64::from(back)).max(journal.snapshot_op());
        self.drain_attempt_max = self.drain_attempt_max.max(through);
        Some(through)
    }

    /// A compaction through `through` ended, `ok` or not.
    fn drained(&mut self, through: u64, ok: bool) {
        if ok {
            assert_eq!(self.journal().snapshot_op(), through.max(self.snapshot_floor));
            self.snapshot_floor = self.snapshot_floor.max(through);
        }
    }

    /// The checksum the journal expects as `op`'s parent: its header of
    /// `op - 1`, or the checksum its compaction anchored the snapshot on
    /// (which may name a version of that op the model never saw durable:
    /// the parent of a surviving op of a failed batch).
    fn journal_parent(&mut self, op: u64) -> Option<u128> {
        let journal = self.journal();
        match journal.header(op - 1) {
            Some(previous) => Some(previous.checksum),
            None if op - 1 == journal.snapshot_op() && op > 1 => journal.snapshot_checksum(),
            None => None,
        }
    }

    /// Append the next op; returns false when the append was refused.
    fn append_one(&mut self) -> bool {
        let journal = self.journal();
        let snapshot_op = journal.snapshot_op();
        let op = journal.op_max().unwrap_or(snapshot_op) + 1;
        let op_max_before = journal.op_max();
        let parent_model = match op - 1 {
            0 => ROOT_CHECKSUM,
            previous => self.appended.get(&previous).map_or(ROOT_CHECKSUM, |(header, _)| header.checksum),
        };
        let parent = match self.journal_parent(op) {
            Some(previous) => {
                if self.strict && op - 1 > snapshot_op {
                    assert_eq!(previous, parent_model, "the journal head is not the model's");
                }
                previous
            }
            None => parent_model,
        };
        self.variant = self.variant.wrapping_add(1);
        let body = body(op, self.variant);
        let header = prepare(op, parent, &body);
        let result = block_on_ready(self.journal().append(&header, &body));
        self.trace.push(format!("append {op} {result:?}"));
        match result {
            Ok(()) => {
                self.acked.remove(&op);
                self.unsynced.insert(op);
                self.ever_appended.insert(header.checksum);
                self.appended.insert(op, (header, body));
                true
            }
            Err(JournalError::SlotCollision { .. }) => {
                assert!(op > snapshot_op + SLOT_COUNT, "slot collision inside the live window");
                false
            }
            Err(JournalError::Io { .. } | JournalError::Poisoned) => {
                // No phantom op: a failed append changes nothing in the index.
                assert_eq!(self.journal().op_max(), op_max_before, "failed append moved op_max");
                assert_eq!(self.journal().header(op), None, "failed append left a phantom header");
                if self.staged.is_some() {
                    // Mirrored to a staged compaction's spare: the write to
                    // one file may have landed before the other failed, so a
                    // reopen may recover it (never promised), as after a
                    // failed batch.
                    self.ever_appended.insert(header.checksum);
                    self.unpromised.insert(op);
                }
                false
            }
            // With silent corruption the model's copy of the drained snapshot
            // op may be a version the journal no longer chains to.
            Err(JournalError::ParentMismatch { .. }) if !self.strict => false,
            Err(error) => panic!("append {op} refused unexpectedly: {error}"),
        }
    }

    /// Append up to `count` prepares that fill their slots with one
    /// `append_batch` (as many as the window holds).
    fn append_full_batch(&mut self, count: u8) {
        let journal = self.journal();
        let snapshot_op = journal.snapshot_op();
        let first = journal.op_max().unwrap_or(snapshot_op) + 1;
        let op_max_before = journal.op_max();
        let last = (first + u64::from(count) - 1).min(snapshot_op + SLOT_COUNT);
        if last < first {
            return;
        }
        let model_parent = self.appended.get(&(first - 1)).map(|(header, _)| header.checksum);
        let mut parent = self.journal_parent(first);
        if self.strict && parent.is_some() && first - 1 > snapshot_op {
            assert_eq!(parent, model_parent, "the journal head is not the model's");
        }
        let mut batch = Vec::new();
        for op in first..=last {
            self.variant = self.variant.wrapping_add(1);
            let mut body = body(op, self.variant);
            body.resize(MESSAGE_SIZE_MAX_BYTES as usize - HEADER_SIZE_BYTES, self.variant);
            let header = prepare(op, parent.or(model_parent).unwrap_or(ROOT_CHECKSUM), &body);
            parent = Some(header.checksum);
            batch.push((header, body));
        }
        let prepares: Vec<(Header, &[u8])> = batch.iter().map(|(header, body)| (*header, body.as_slice())).collect();
        let result = block_on_ready(self.journal().append_batch(&prepares));
        self.trace.push(format!("append_batch {first}..={last} {result:?}"));
        match result {
            Ok(()) => {
                for (header, body) in batch {
                    self.acked.remove(&header.op);
                    self.unsynced.insert(header.op);
                    self.ever_appended.insert(header.checksum);
                    self.appended.insert(header.op, (header, body));
                }
            }
            Err(JournalError::Io { .. } | JournalError::Poisoned) => {
                // No phantom op: a failed batch indexes nothing.
                assert_eq!(self.journal().op_max(), op_max_before, "failed batch moved op_max");
                for (header, _) in batch {
                    self.ever_appended.insert(header.checksum);
                    self.unpromised.insert(header.op);
                }
            }
            Err(JournalError::ParentMismatch { .. }) if !self.strict => {}
            Err(error) => panic!("append_batch {first}..={last} refused unexpectedly: {error}"),
        }
    }

    /// Invariants while the journal runs (also right after a failed call).
    fn check_running(&mut self) {
        let durable = self.io.disk().contents_durable(&self.path).expect("the journal file is durable");
        let durable_snapshot_op = match decode_file_snapshot_op(&durable) {
            Ok(snapshot_op) => snapshot_op,
            Err(error) if !self.strict => {
                self.trace.push(format!("durable file header damaged: {error}"));
                return;
            }
            Err(error) => panic!("the durable file header is invalid: {error}"),
        };
        let journal = self.journal.as_ref().expect("journal is open");
        let snapshot_op = journal.snapshot_op();
        assert!(
            snapshot_op <= durable_snapshot_op,
            "in-memory snapshot_op {snapshot_op} exceeds the durable snapshot_op {durable_snapshot_op}"
        );
        if journal.is_poisoned() || !self.strict {
            return;
        }
        for &op in self.acked.range(snapshot_op + 1..) {
            if self.corrupted.contains(&op) {
                continue;
            }
            assert_eq!(journal.header(op), Some(&self.appended[&op].0), "live acked op {op} was evicted");
        }
        self.check_durable_copies(&durable);
    }

    /// Every op the journal calls durable has a copy of its header (ring
    /// or carried) in `durable`, the file the durable directory names.
    fn check_durable_copies(&self, durable: &[u8]) {
        let journal = self.journal.as_ref().expect("journal is open");
        let config = config(SLOT_COUNT);
        let head = journal.op_max().unwrap_or(0);
        for op in journal.snapshot_op() + 1..=head {
            let Some(header) = journal.header(op) else { continue };
            if !journal.is_durable(op) || self.corrupted.contains(&op) {
                continue;
            }
            let names_it = |offset: u64| {
                let start = offset as usize;
                durable
                    .get(start..start + HEADER_SIZE_BYTES)
                    .and_then(|bytes| Header::decode(bytes).ok())
                    .is_some_and(|copy| copy.checksum == header.checksum)
            };
            assert!(
                config.header_copy_offsets(op).any(names_it),
                "op {op} is durable but no copy of its header is durable; trace: {:#?}",
                self.trace
            );
        }
    }

    fn crash(&mut self) {
        self.staged = None;
        self.journal = None;
        self.io.crash();
        self.trace.push("crash".to_string());
        self.reopen();
    }

    fn reopen(&mut self) {
        self.staged = None;
        self.journal = None;
        // An injected one-shot I/O error may hit recovery itself (clearing a
        // torn slot): that is a typed error, and a retry must succeed.
        let mut attempts = 0;
        let (journal, recovery) = loop {
            match block_on_ready(PrepareJournal::open(&self.io, &self.dir, config(SLOT_COUNT), OpenMode::ReadWrite)) {
                Ok(opened) => break opened,
                Err(JournalError::Io { .. }) if attempts < 10 => attempts += 1,
                Err(error) if !self.strict => {
                    self.trace.push(format!("unrecoverable {error}"));
                    self.dead = true;
                    return;
                }
                Err(error) => panic!("journal must recover after a crash: {error}"),
            }
        };
        self.trace.push(format!("reopen {recovery:?}"));
        let snapshot_op = journal.snapshot_op();
        assert!(snapshot_op >= self.snapshot_floor, "recovered snapshot_op {snapshot_op} lost a durable drain");
        assert!(
            snapshot_op <= self.drain_attempt_max.max(self.snapshot_floor),
            "recovered snapshot_op {snapshot_op} beyond any drain attempted"
        );
        for &op in &recovery.ops_recovered {
            let recovered = journal.header(op).expect("recovered ops are indexed");
            assert!(
                self.ever_appended.contains(&recovered.checksum),
                "phantom op {op} recovered; trace: {:#?}",
                self.trace
            );
            if !self.strict || self.corrupted.contains(&op) || self.unpromised.contains(&op) {
                // Sticky corruption is a read overlay: once a rewrite clears
                // it and a crash loses the rewrite, the older (intact) version
                // is legitimately back. Follow the journal from here on.
                let recovered = *recovered;
                if self.appended.get(&op).is_none_or(|(known, _)| known.checksum != recovered.checksum) {
                    match block_on_ready(journal.read(op)) {
                        Ok(entry) => self.appended.insert(op, entry),
                        Err(_) => self.appended.remove(&op),
                    };
                }
                continue;
            }
            let (header, body) = self
                .appended
                .get(&op)
                .unwrap_or_else(|| panic!("truncated op {op} recovered; trace: {:#?}", self.trace));
            assert_eq!(
                journal.header(op),
                Some(header),
                "op {op} recovered with another header; trace: {:#?}",
                self.trace
            );
            if self.strict && !self.corrupted.contains(&op) {
                assert_eq!(&block_on_ready(journal.read(op)).expect("read recovered op"), &(*header, body.clone()));
            }
        }
        let recovered: BTreeSet<u64> = recovery.ops_recovered.iter().copied().collect();
        for &op in self.acked.range(snapshot_op + 1..) {
            if !self.strict || self.corrupted.contains(&op) {
                continue;
            }
            assert!(recovered.contains(&op), "acked op {op} lost: {recovery:?} snapshot_op {snapshot_op}");
        }
        self.unsynced.clear();
        self.snapshot_floor = snapshot_op;
        self.journal = Some(journal);
    }

    fn step(&mut self, step: &Step) {
        if self.dead {
            return;
        }
        match step {
            Step::Run(inner) => self.run_inner(inner),
            Step::CrashDuring(steps, inner) => {
                self.io.disk().crash_after_steps(u64::from(*steps));
                self.run_inner(inner);
                self.check_running();
                self.crash();
                return;
            }
            Step::Crash => {
                self.crash();
                return;
            }
            Step::Reopen => {
                self.reopen();
                return;
            }
            Step::FailNextWrite => self.io.disk().fail_next_write(),
            Step::FailNextSync => self.io.disk().fail_next_sync(),
            Step::Corrupt(pick) => {
                let snapshot_op = self.journal().snapshot_op();
                let live: Vec<u64> = self.acked.range(snapshot_op + 1..).copied().collect();
                if !live.is_empty() {
                    let op = live[*pick as usize % live.len()];
                    let offset = config(SLOT_COUNT).slot_offset(op) + 64;
                    self.io.disk().corrupt_sector(&self.path, offset).expect("journal exists");
                    self.corrupted.insert(op);
                    self.trace.push(format!("corrupt {op}"));
                }
            }
            Step::FailSlotReads(pick, sector) => {
                let snapshot_op = self.journal().snapshot_op();
                let live: Vec<u64> = self.acked.range(snapshot_op + 1..).copied().collect();
                if !live.is_empty() {
                    let op = live[*pick as usize % live.len()];
                    let used_bytes = (HEADER_SIZE_BYTES + self.appended[&op].1.len()) as u64;
                    let offset = config(SLOT_COUNT).slot_offset(op) + (u64::from(*sector) * 512) % used_bytes;
                    self.io.disk().fail_sector_reads(&self.path, offset).expect("journal exists");
                    self.corrupted.insert(op);
                    self.trace.push(format!("latent sector error in the slot of op {op} at {offset}"));
                }
            }
            Step::FailCopyReads(pick, place) => {
                let snapshot_op = self.journal().snapshot_op();
                let live: Vec<u64> = self.acked.range(snapshot_op + 1..).copied().collect();
                if !live.is_empty() {
                    let op = live[*pick as usize % live.len()];
                    let config = config(SLOT_COUNT);
                    let places: Vec<u64> = config.header_copy_offsets(op).collect();
                    let offset = places[*place as usize % places.len()];
                    self.io.disk().fail_sector_reads(&self.path, offset).expect("journal exists");
                    self.trace.push(format!("latent sector error under a copy place of op {op} at {offset}"));
                }
            }
            Step::Repair => {
                for op in self.journal().repair_ops() {
                    let Some((header, body)) = self.appended.get(&op).cloned() else { continue };
                    let result = block_on_ready(self.journal().write_repair(&header, &body));
                    self.trace.push(format!("repair {op} {result:?}"));
                    match result {
                        Ok(()) => {
                            self.unsynced.insert(op);
                        }
                        Err(JournalError::Io { .. } | JournalError::Poisoned) if self.staged.is_some() => {
                            // As a failed append's, beside a staged compaction.
                            self.ever_appended.insert(header.checksum);
                            self.unpromised.insert(op);
                        }
                        Err(JournalError::ParentMismatch { .. } | JournalError::Io { .. } | JournalError::Poisoned) => {
                        }
                        Err(error) => panic!("repair {op} refused unexpectedly: {error}"),
                    }
                }
            }
        }
        if self.dead {
            return;
        }
        self.check_running();
        if self.journal().is_poisoned() || self.io.disk().is_halted() {
            self.crash();
        }
    }
}

fn run(seed: u64, steps: &[Step]) -> (Vec<String>, Option<Vec<u8>>) {
    run_with(seed, DiskFaults::crash_only(), steps)
}

fn run_with(seed: u64, faults: DiskFaults, steps: &[Step]) -> (Vec<String>, Option<Vec<u8>>) {
    let mut harness = Harness::with_faults(seed, faults);
    for step in steps {
        harness.step(step);
    }
    // The end is a crash too: everything acked must survive it.
    if !harness.dead {
        harness.crash();
    }
    let bytes = harness.io.disk().contents(Path::new(&harness.path));
    (harness.trace, bytes)
}

proptest! {
    // Cases: proptest's default (256), or PROPTEST_CASES for a longer soak.
    #[test]
    fn journal_matches_model(seed in any::<u64>(), steps in prop::collection::vec(step(), 1..80)) {
        let first = run(seed, &steps);
        let second = run(seed, &steps);
        prop_assert_eq!(&first.0, &second.0, "same seed, same trace");
        prop_assert!(first.1 == second.1, "same seed, same disk bytes");
    }

    /// Random EIO / ENOSPC on writes and fsyncs: reported errors, so the
    /// full model must still hold.
    #[test]
    fn journal_matches_model_with_io_errors(seed in any::<u64>(), steps in prop::collection::vec(step(), 1..80)) {
        let faults = DiskFaults {
            write_eio_ppm: 20_000,
            write_enospc_ppm: 10_000,
            sync_eio_ppm: 20_000,
            sync_enospc_ppm: 5_000,
            ..DiskFaults::crash_only()
        };
        let first = run_with(seed, faults, &steps);
        let second = run_with(seed, faults, &steps);
        prop_assert_eq!(&first.0, &second.0, "same seed, same trace");
    }

    /// Silent corruption (misdirected writes, random sticky read corruption):
    /// no panic, no phantom op, snapshot_op never ahead of the durable one.
    #[test]
    fn journal_survives_silent_corruption(seed in any::<u64>(), steps in prop::collection::vec(step(), 1..80)) {
        let faults = DiskFaults {
            misdirected_write_ppm: 20_000,
            read_corruption_ppm: 5_000,
            ..DiskFaults::crash_only()
        };
        let first = run_with(seed, faults, &steps);
        let second = run_with(seed, faults, &steps);
        prop_assert_eq!(&first.0, &second.0, "same seed, same trace");
    }
}

/// Crash at every storage call of a drain, one run per call: the journal
/// recovers with either the old or the new snapshot_op and every acked op.
#[test]
fn crash_at_every_step_of_drain() {
    let mut outcomes = BTreeSet::new();
    for steps in 0..40u64 {
        let mut harness = Harness::new(steps);
        harness.run_inner(&Inner::Append(3));
        harness.run_inner(&Inner::Append(3));
        harness.run_inner(&Inner::Sync);
        harness.step(&Step::CrashDuring(steps as u8, Inner::Drain(2)));
        let snapshot_op = harness.journal().snapshot_op();
        assert!(snapshot_op == 0 || snapshot_op == 4, "snapshot_op {snapshot_op} after crash at step {steps}");
        outcomes.insert(snapshot_op);
        assert_eq!(harness.journal().op_max(), Some(6));
        // The journal keeps working.
        harness.run_inner(&Inner::Append(1));
        harness.run_inner(&Inner::Sync);
        harness.crash();
        assert_eq!(harness.journal().op_max(), Some(7));
    }
    assert_eq!(outcomes, BTreeSet::from([0, 4]), "crashes land both before and after the drain is durable");
}

#[test]
fn failed_append_leaves_no_phantom_op() {
    let mut harness = Harness::new(1);
    harness.run_inner(&Inner::Append(2));
    harness.io.disk().fail_next_write();
    harness.run_inner(&Inner::Append(1));
    assert_eq!(harness.journal().op_max(), Some(2));
    assert!(harness.trace.last().unwrap().starts_with("append 3 Err(Io"));
    harness.run_inner(&Inner::Append(1));
    harness.run_inner(&Inner::Sync);
    assert_eq!(harness.journal().op_max(), Some(3));
    harness.crash();
    assert_eq!(harness.journal().op_max(), Some(3));
}

#[test]
fn failed_sync_poisons_until_restart() {
    let mut harness = Harness::new(2);
    harness.run_inner(&Inner::Append(2));
    harness.io.disk().fail_next_sync();
    let result = block_on_ready(harness.journal().sync());
    assert!(matches!(result, Err(JournalError::Io { operation: "fsync", .. })));
    assert!(matches!(block_on_ready(harness.journal().sync()), Err(JournalError::Poisoned)));
    harness.crash();
    assert!(!harness.journal().is_poisoned());
}

/// The model must reach every interesting path, or its passing means little.
#[test]
fn model_reaches_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let steps = prop::collection::vec(step(), 40..80);
    let mut seen: BTreeMap<&'static str, u64> = BTreeMap::new();
    let kinds: [(&'static str, &'static str); 13] = [
        ("append ok", "Ok(())"),
        ("full batch ok", "append_batch"),
        ("slot collision", "SlotCollision"),
        ("append io error", "append"),
        ("drain ok", "drain"),
        ("drain failed", "drain"),
        ("torn tail truncated", "torn_tail_truncated: ["),
        ("repair reported", "repair_ops: ["),
        ("repair written", "repair"),
        ("truncate ok", "truncate_after"),
        ("sync poisoned", "sync Err"),
        ("recovered ops", "ops_recovered: ["),
        ("crash", "crash"),
    ];
    shoal_vsr::marks::take();
    // Repairs of a prepare whose slot page a latent error made unreadable
    // (odd seeds: page-sized damage), the write that failed for good before
    // format 5.
    let mut repairs_over_unreadable_pages = 0;
    for seed in 0..200u64 {
        let steps = steps.new_tree(&mut runner).unwrap().current();
        let (trace, _) = run(seed, &steps);
        let mut unreadable_slots = BTreeSet::new();
        for line in &trace {
            if let Some(op) = line.strip_prefix("latent sector error in the slot of op ") {
                unreadable_slots.insert(op.split(' ').next().unwrap().to_string());
            }
            let repaired = line.strip_prefix("repair ").filter(|rest| rest.ends_with("Ok(())"));
            if seed % 2 == 1 && repaired.is_some_and(|rest| unreadable_slots.contains(rest.split(' ').next().unwrap()))
            {
                repairs_over_unreadable_pages += 1;
            }
            for (kind, needle) in kinds {
                let hit = match kind {
                    "append ok" => line.starts_with("append") && line.ends_with("Ok(())"),
                    "full batch ok" => line.starts_with("append_batch") && line.ends_with("Ok(())"),
                    "append io error" => line.starts_with("append") && line.contains("Err(Io"),
                    "drain ok" => line.starts_with("drain") && line.ends_with("Ok(())"),
                    "drain failed" => line.starts_with("drain") && line.contains("Err("),
                    "repair reported" => line.starts_with("reopen") && !line.contains("repair_ops: []"),
                    "torn tail truncated" => line.starts_with("reopen") && !line.contains("torn_tail_truncated: []"),
                    "recovered ops" => line.starts_with("reopen") && !line.contains("ops_recovered: []"),
                    "repair written" => line.starts_with("repair") && line.ends_with("Ok(())"),
                    "truncate ok" => line.starts_with("truncate_after") && line.ends_with("Ok(())"),
                    _ => line.contains(needle),
                };
                if hit {
                    *seen.entry(kind).or_insert(0) += 1;
                }
            }
        }
    }
    let marks = shoal_vsr::marks::take();
    eprintln!("{seen:?} {marks:?}");
    // And the compaction's window: writes to the spare alone, flushes
    // whose acknowledgement waits for the install, truncations of both.
    let window_marks = [
        shoal_vsr::marks::JOURNAL_WINDOW_WRITE,
        shoal_vsr::marks::JOURNAL_WINDOW_ACK_HELD,
        shoal_vsr::marks::JOURNAL_WINDOW_TRUNCATION,
    ];
    for mark in [shoal_vsr::marks::JOURNAL_COPIES_CARRIED, shoal_vsr::marks::JOURNAL_PREPARES_JOINED]
        .into_iter()
        .chain(window_marks)
    {
        assert!(marks.get(mark).copied().unwrap_or(0) > 0, "the model never reached mark `{mark}`: {marks:?}");
    }
    for (kind, _) in kinds {
        assert!(seen.get(kind).copied().unwrap_or(0) > 0, "the model never reached `{kind}`: {seen:?}");
    }
    assert!(repairs_over_unreadable_pages > 0, "the model never repaired a prepare over an unreadable page");
}
