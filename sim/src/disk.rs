//! The simulated disk of one replica: durable and pending bytes per file,
//! durable and pending directory entries, crash semantics and storage faults.
//!
//! Owns the byte-level model behind `SimIo`'s storage calls. Knows nothing of
//! the journal, the executor or the network; every call here takes effect at
//! once, and `SimIo` decides when (a write when it is issued, an fsync when
//! its latency in virtual time has passed: see `io.rs`).
//!
//! Model:
//! - Each file is an inode with `durable` bytes (what survives a crash) and
//!   `current` bytes (what reads see: durable plus every pending write and
//!   length change, in order). `sync_data` makes `current` durable.
//! - Directory entries (create, rename, remove) change the `current` namespace
//!   at once but the `durable` namespace only when `sync_dir(parent)` runs.
//!   A directory is an entry of its parent like a file: `create_dir_all`
//!   makes it exist at once, durable only once its parent is fsynced, as on
//!   Linux. A power loss takes back every entry not yet durable, and with a
//!   directory everything under it (its files vanish, durable or not: the
//!   directory they are in is gone). The root always exists.
//! - Two kinds of crash. `power_loss()` resets the namespace to its durable
//!   state and, for every pending write of a surviving file, lets the seed
//!   decide: lost, applied, or torn. Torn rule: the write is cut into 512-byte
//!   sectors counted from its own start offset; a torn write applies any
//!   subset of them that is neither empty nor all (writeback does not go in
//!   order), and loses the rest (a single-sector write is applied or lost,
//!   never torn). A pending length change is applied or lost. Pending
//!   operations are replayed in issue order, so a later surviving write wins
//!   over an earlier one. `crash_process()` kills only the process: the page
//!   cache survives, so every pending write and directory entry stays
//!   readable, and still pending (a later power loss can take it back).
//!   `crash()` draws one of the two from the disk's own seed and
//!   `DiskFaults::process_crash_ppm`, so a driver's existing crash path
//!   exercises both without a knob of its own.
//! - An fsync covers what was issued before it began (`sync_fence`): a
//!   write issued while it runs stays pending, as on Linux, so code that
//!   counts it durable when that fsync returns loses it in a crash.
//! - fsync EIO is Linux's: the pending writes of the file are dropped from
//!   the device's future (the kernel marks the pages clean), so no later
//!   fsync makes them durable, yet reads in this life (and after a process
//!   crash, from the page cache) still see them.
//! - Sticky read corruption marks a byte of a sector: every read through it
//!   sees one bit of that byte flipped (the same bit each time) until a write
//!   touches that sector. Marks survive crashes: they model the medium.
//! - Read EIO: transient (`read_eio_ppm`, per read) or sticky (a latent
//!   sector error, `fail_sector_reads`): every read through the sector fails
//!   until a write covers it (the drive remaps it).
//! - A misdirected write lands at another sector-aligned offset of the same
//!   file, leaving the intended range untouched. It lands wholly inside the
//!   file's current length (the device put the blocks at a wrong address);
//!   a write with nowhere else to fit lands as asked, and so does a write
//!   that extends the file (the file system grows it whatever the device
//!   does; an armed misdirect waits for a write within the file). `faults.misdirected_write_ppm` draws it per write, or a driver
//!   arms one for the next write to a named file (`misdirect_next_write_to`)
//!   so it can place it; the disk remembers each misdirected write's
//!   intended and landed ranges (`misdirected_ranges`): what a writer
//!   promised there is the disk's lie, not the writer's.
//! - `crash_after_steps(n)`: after `n` more storage calls the disk halts and
//!   every later call fails without effect, until the driver calls `crash()`.
//!   This lets a test stop a multi-step sequence between any two calls.
//! - `arm_mutation_fault(n, fault)`: the `n`-th call from now that changes
//!   the disk (write, length change, fsync, rename, exchange, remove,
//!   directory creation, directory fsync) halts the disk before it acts (a crash there, as
//!   `crash_after_steps`) or fails with EIO (an fsync EIO as above; any
//!   other call changes nothing). A driver places a fault among the few
//!   calls that matter (a restart's settle and repairs) rather than among
//!   its many reads.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// The unit of torn writes, misdirected writes and read corruption.
pub const SECTOR_SIZE_BYTES: u64 = 512;
/// Probabilities are parts per million.
pub const PPM_MAX: u32 = 1_000_000;
/// Intended ranges of misdirected writes remembered per file (the oldest
/// is forgotten first).
pub const MISDIRECTED_REMEMBERED_MAX: usize = 1024;

const EIO: i32 = 5;
const EBADF: i32 = 9;
const ENOSPC: i32 = 28;
const EMFILE: i32 = 24;

/// Fault probabilities, parts per million per call. Settable at run time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskFaults {
    pub write_eio_ppm: u32,
    pub write_enospc_ppm: u32,
    pub sync_eio_ppm: u32,
    pub sync_enospc_ppm: u32,
    /// Per read: mark one sector in the read range as corrupt (sticky).
    pub read_corruption_ppm: u32,
    pub misdirected_write_ppm: u32,
    /// At `crash()`, per pending write: the chance it is lost (else applied or torn).
    pub crash_lost_ppm: u32,
    /// At `crash()`, per pending write that is not lost: the chance it is torn.
    pub crash_torn_ppm: u32,
    /// Per read: it fails with EIO and returns nothing (transient).
    pub read_eio_ppm: u32,
    /// Per `crash()`: the chance it is a process crash (page cache kept)
    /// rather than a power loss.
    pub process_crash_ppm: u32,
}

impl DiskFaults {
    /// No injected faults, but a power loss still loses or tears pending
    /// writes half of the time: unsynced data is never promised. Every crash
    /// is a power loss (tests that want process crashes ask for them).
    pub fn crash_only() -> DiskFaults {
        DiskFaults { crash_lost_ppm: 500_000, crash_torn_ppm: 300_000, ..DiskFaults::default() }
    }

    /// What the cluster simulator runs with: as `crash_only`, and one crash in
    /// three is a process crash that keeps the page cache.
    pub fn cluster() -> DiskFaults {
        DiskFaults { process_crash_ppm: 333_333, ..DiskFaults::crash_only() }
    }
}

/// What an armed mutation fault does (`SimDisk::arm_mutation_fault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutationFault {
    /// The disk halts before the call acts: a crash there.
    Halt,
    /// The call fails with EIO.
    Eio,
}

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen { size_bytes: u64 },
}

impl Pending {
    /// The bytes this operation changes when it is lost: a write's own; a
    /// length change may move every byte past either length, so all of
    /// them from its new end on (the old end is not known here: the whole
    /// file, conservatively).
    fn range(&self) -> Range<u64> {
        match self {
            Pending::Write { offset, data } => *offset..offset + data.len() as u64,
            Pending::SetLen { .. } => 0..u64::MAX,
        }
    }
}

/// Byte ranges of one file that something happened to (lost writes,
/// `SimDisk::take_lost_writes`; failed reads, `take_failed_reads`; the
/// simulator's damage): merged where they touch, at most
/// `BYTE_RANGES_PER_FILE_MAX` of them; past that the whole file counts (an
/// excuse never gets narrower than the truth).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ByteRanges {
    ranges: Vec<Range<u64>>,
}

/// Ranges one file keeps apart before they become the whole file.
pub const BYTE_RANGES_PER_FILE_MAX: usize = 1024;

impl ByteRanges {
    pub fn add(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        self.ranges.retain(|kept| {
            let touches = kept.start <= end && start <= kept.end;
            if touches {
                start = start.min(kept.start);
                end = end.max(kept.end);
            }
            !touches
        });
        let at = self.ranges.partition_point(|kept| kept.start < start);
        self.ranges.insert(at, start..end);
        if self.ranges.len() > BYTE_RANGES_PER_FILE_MAX {
            self.ranges.clear();
            self.ranges.push(0..u64::MAX);
        }
    }

    /// Every range of `other` is here too.
    pub fn merge(&mut self, other: &ByteRanges) {
        for range in &other.ranges {
            self.add(range.clone());
        }
    }

    /// Some byte of these lies in `range`.
    pub fn overlaps(&self, range: &Range<u64>) -> bool {
        self.ranges.iter().any(|kept| kept.start < range.end && range.start < kept.end)
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[derive(Debug, Clone, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<Pending>,
    /// Pending operations ever made durable or dropped: `pending[0]` is
    /// the operation issued `pending_retired_total`-th on this inode, so
    /// `pending_retired_total + pending.len()` counts every one issued (an
    /// fsync's fence, `sync_fence`).
    pending_retired_total: u64,
    /// Sector index -> the bit (within the sector) every read flips, until
    /// a write touches the sector.
    corrupt_sectors: BTreeMap<u64, u64>,
    /// Sector indexes whose reads fail with EIO until a write covers them.
    eio_sectors: BTreeSet<u64>,
}

impl Inode {
    /// What reads would see with no clean page cached: the durable bytes
    /// with every pending write and length change applied in order.
    fn device_view_with_pending(&self) -> Vec<u8> {
        let mut bytes = self.durable.clone();
        for op in &self.pending {
            apply(&mut bytes, op);
        }
        bytes
    }
}

type InodeId = u64;

/// One replica's disk. Shared by every file the replica opens.
#[derive(Debug)]
pub struct SimDisk {
    rng: ChaCha8Rng,
    pub faults: DiskFaults,
    inodes: BTreeMap<InodeId, Inode>,
    inode_next: InodeId,
    namespace_current: BTreeMap<PathBuf, InodeId>,
    namespace_durable: BTreeMap<PathBuf, InodeId>,
    /// Directories that exist now (reads and creates see them)...
    dirs_current: BTreeSet<PathBuf>,
    /// ...and those whose entry in their parent is durable.
    dirs_durable: BTreeSet<PathBuf>,
    /// Bumped by every crash: file handles from before it fail with EBADF.
    generation: u64,
    steps: u64,
    halt_after_steps: Option<u64>,
    halted: bool,
    fail_next_write: Option<i32>,
    fail_next_sync: Option<i32>,
    /// The next fsync of this file fails with EIO (`fail_next_sync_of`).
    fail_next_sync_of: Option<InodeId>,
    /// The next fsync of a file whose path starts with this fails with EIO
    /// (`fail_next_sync_under`).
    fail_next_sync_under: Option<String>,
    /// `fail_second_sync`: armed (`Some(None)`) until an fsync succeeds,
    /// then the next fsync of that file fails (`Some(Some(inode))`).
    fail_second_sync: Option<Option<InodeId>>,
    /// Transient read errors armed by a driver: after this many more reads
    /// succeed, the next `.1` reads (of any file) fail with EIO.
    fail_reads_after: Option<(u64, u32)>,
    /// Reads so far (any outcome), for tests that place a fault at each.
    reads_total: u64,
    /// Calls that changed the disk (or tried to) so far.
    mutations: u64,
    /// An armed `arm_mutation_fault`: the mutation count it lands at.
    mutation_fault: Option<(u64, MutationFault)>,
    /// Set by `disarm_faults` at the heal: from then on arming a fault is
    /// a bug of the simulator (the liveness phase runs without faults).
    faults_off: bool,
    /// The next write to this inode is misdirected (armed by a driver),
    /// landing where the driver placed it or, `None`, where the seed says.
    misdirect_next: Option<(InodeId, Option<u64>)>,
    /// Per inode, the ranges `(offset, len)` misdirected writes were meant
    /// for and the ranges they landed on (bounded by
    /// `MISDIRECTED_REMEMBERED_MAX`).
    misdirected: BTreeMap<InodeId, Vec<(u64, u64)>>,
    /// Per inode, the `generation` (process life) of its last misdirected
    /// write.
    misdirected_generation: BTreeMap<InodeId, u64>,
    counters: BTreeMap<&'static str, u64>,
    /// Files that lost a write the program issued (dropped or torn at a
    /// power loss, or dropped by a failed fsync), by path, with the byte
    /// ranges of those writes (`take_lost_writes`).
    lost_writes: BTreeMap<PathBuf, ByteRanges>,
    /// Reads that failed with EIO (a latent sector error or a transient
    /// one), by the paths their file had then (`take_failed_reads`).
    failed_reads: BTreeMap<PathBuf, ByteRanges>,
    /// Successful writes and their bytes, for tests that pin what a storage
    /// call costs (e.g. the sectors one small prepare writes).
    writes_total: u64,
    write_bytes_total: u64,
    /// Model a file system without RENAME_EXCHANGE: `exchange` fails with
    /// `Unsupported` (callers fall back to `rename`).
    pub exchange_unsupported: bool,
    /// Handles open in this process life (`SimFile`s not yet dropped).
    open_files: u64,
    /// The most handles open at once, over every life.
    open_files_peak: u64,
    /// The process's limit on open files (Linux's `RLIMIT_NOFILE`): an open
    /// past it fails with EMFILE. `None`: no limit.
    pub open_files_max: Option<u64>,
    /// The first open the limit refused, kept for the checker that names it.
    open_files_refused: Option<PathBuf>,
    /// The unit of damage of a latent sector error as reads and writes see
    /// it (`RunConfig::storage_latent_error_page_bytes`); 0: one sector,
    /// `LINUX_PAGE_SIZE_BYTES`: the page, as through Linux's page cache.
    pub latent_error_page_bytes: u64,
}

/// Linux's page (and ext4's block) size: the unit a latent sector error
/// damages once the kernel reads and writes through its page cache (the
/// value of `SimDisk::latent_error_page_bytes` that models it).
pub const LINUX_PAGE_SIZE_BYTES: u64 = 4096;

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn halted_error() -> io::Error {
    io::Error::other("simulated crash: the disk halted; call crash() and reopen")
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The root (or the empty path of a relative one): it always exists.
fn is_root(dir: &Path) -> bool {
    dir.as_os_str().is_empty() || dir == Path::new("/")
}

fn apply(bytes: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write { offset, data } => {
            let start = *offset as usize;
            let end = start + data.len();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[start..end].copy_from_slice(data);
        }
        Pending::SetLen { size_bytes } => bytes.resize(*size_bytes as usize, 0),
    }
}

impl SimDisk {
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            rng: ChaCha8Rng::seed_from_u64(seed),
            faults: DiskFaults::crash_only(),
            inodes: BTreeMap::new(),
            inode_next: 1,
            namespace_current: BTreeMap::new(),
            namespace_durable: BTreeMap::new(),
            dirs_current: BTreeSet::new(),
            dirs_durable: BTreeSet::new(),
            generation: 0,
            steps: 0,
            halt_after_steps: None,
            halted: false,
            fail_next_write: None,
            fail_next_sync: None,
            fail_second_sync: None,
            fail_next_sync_of: None,
            fail_next_sync_under: None,
            fail_reads_after: None,
            reads_total: 0,
            mutations: 0,
            mutation_fault: None,
            faults_off: false,
            misdirect_next: None,
            misdirected: BTreeMap::new(),
            misdirected_generation: BTreeMap::new(),
            counters: BTreeMap::new(),
            lost_writes: BTreeMap::new(),
            failed_reads: BTreeMap::new(),
            writes_total: 0,
            write_bytes_total: 0,
            exchange_unsupported: false,
            open_files: 0,
            open_files_peak: 0,
            open_files_max: None,
            open_files_refused: None,
            latent_error_page_bytes: 0,
        }
    }

    // --- driver and test controls ------------------------------------------

    /// Injected faults so far, by kind.
    pub fn counters(&self) -> &BTreeMap<&'static str, u64> {
        &self.counters
    }

    /// Successful writes so far and the bytes they carried (not faults).
    pub fn writes(&self) -> (u64, u64) {
        (self.writes_total, self.write_bytes_total)
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Storage calls made so far (each open, read, write, sync, rename, …).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn is_halted(&self) -> bool {
        self.halted
    }

    /// Halt after `steps` more storage calls succeed: call number `steps + 1`
    /// and every later one fails without effect until `crash()`.
    pub fn crash_after_steps(&mut self, steps: u64) {
        self.assert_faults_on();
        self.halt_after_steps = Some(self.steps + steps);
        self.halted = false;
    }

    /// The `count`-th call from now that changes the disk (1: the next
    /// one) meets `fault` (see the module doc). One at a time: arming
    /// replaces an armed one; a crash disarms it.
    pub fn arm_mutation_fault(&mut self, count: u64, fault: MutationFault) {
        self.assert_faults_on();
        assert!(count > 0, "a mutation fault lands at the next mutation or later");
        self.mutation_fault = Some((self.mutations + count, fault));
    }

    /// Is a mutation fault armed and not yet landed?
    pub fn mutation_fault_armed(&self) -> bool {
        self.mutation_fault.is_some()
    }

    /// Drop an armed mutation fault that has not landed.
    pub fn disarm_mutation_fault(&mut self) {
        self.mutation_fault = None;
    }

    /// The next write fails with EIO and writes nothing.
    pub fn fail_next_write(&mut self) {
        self.assert_faults_on();
        self.fail_next_write = Some(EIO);
    }

    /// After `skip` more reads, the next `count` reads (of any file) fail
    /// with EIO and return nothing: a transient device error (the read after
    /// them succeeds). Lets a test fail each read of a sequence in turn.
    pub fn fail_reads_after(&mut self, skip: u64, count: u32) {
        self.assert_faults_on();
        self.fail_reads_after = (count > 0).then_some((skip, count));
    }

    /// Reads issued so far, whatever their outcome.
    pub fn reads(&self) -> u64 {
        self.reads_total
    }

    /// The next `sync_data` fails with EIO and makes nothing durable.
    pub fn fail_next_sync(&mut self) {
        self.assert_faults_on();
        self.fail_next_sync = Some(EIO);
    }

    /// The next fsync that succeeds arms a failure of the fsync after it on
    /// the same file: the second fsync of a storage action that promises in
    /// two steps (a partition segment's records, then the marker that
    /// promises them; a journal's prepare, then its copy; a superblock's
    /// two copies). A failure there leaves the first step durable and the
    /// second in the page cache only, which a process crash keeps readable
    /// (swarm seed 18237: a marker read back and trusted).
    pub fn fail_second_sync(&mut self) {
        self.assert_faults_on();
        self.fail_second_sync = Some(None);
    }

    /// The next fsync of a file whose path starts with `prefix` (as text:
    /// `/data/partition-` names every partition's files) fails with EIO, as
    /// `fail_next_sync` does: its writes stay readable in this life and are
    /// dropped from the device's future.
    pub fn fail_next_sync_under(&mut self, prefix: &str) {
        self.assert_faults_on();
        self.fail_next_sync_under = Some(prefix.to_string());
    }

    /// The next fsync of the file now at `path` fails with EIO (Linux's:
    /// what it covered is dropped from the device's future, reads in this
    /// life still see it). Not found: no-op.
    pub fn fail_next_sync_of(&mut self, path: &Path) {
        self.assert_faults_on();
        self.fail_next_sync_of = self.namespace_current.get(path).copied();
    }

    /// The next write to `path` (this life) lands at another sector of the
    /// file, if one can hold it (see the module doc). Not found: no-op.
    pub fn misdirect_next_write_to(&mut self, path: &Path) {
        self.assert_faults_on();
        self.misdirect_next = self.namespace_current.get(path).map(|&id| (id, None));
    }

    /// Take back a misdirected write armed and not landed yet (its
    /// placement rule no longer holds).
    pub fn disarm_misdirect(&mut self) {
        self.misdirect_next = None;
    }

    /// Take back every one-shot fault armed and not landed yet (a failed
    /// write, fsync or read, a mutation fault, a halt, a misdirected write):
    /// the faults are off from here, the liveness phase. A running replica
    /// is not restarted at the heal, so what was armed on its disk would
    /// otherwise land however late (a misdirect did: partition-misdirect
    /// seed 1969, on the marker the final read writes). Returns whether
    /// anything was armed.
    pub fn disarm_faults(&mut self) -> bool {
        let armed = self.disarm_process_faults() | self.fail_reads_after.take().is_some();
        self.faults_off = true;
        if armed {
            self.count("faults_disarmed_at_heal");
        }
        armed
    }

    /// A unit test's disk whose damage outlives the heal (one the node
    /// cannot get past): arming is allowed again.
    #[cfg(test)]
    pub(crate) fn allow_faults_after_heal(&mut self) {
        self.faults_off = false;
    }

    /// Take back the one-shot faults a process's end also ends (a crash of
    /// either kind, or the heal): a halt, a failed write or fsync, a
    /// mutation fault, a misdirected write. Returns whether any was armed.
    fn disarm_process_faults(&mut self) -> bool {
        // `|`, not `||`: every one is taken, armed or not.
        self.halt_after_steps.take().is_some()
            | self.fail_next_write.take().is_some()
            | self.fail_next_sync.take().is_some()
            | self.fail_next_sync_of.take().is_some()
            | self.fail_next_sync_under.take().is_some()
            | self.fail_second_sync.take().is_some()
            | self.mutation_fault.take().is_some()
            | self.misdirect_next.take().is_some()
    }

    /// Faults are armed only before the heal (`disarm_faults`).
    fn assert_faults_on(&self) {
        assert!(!self.faults_off, "a disk fault armed after the heal: the liveness phase runs without faults");
    }

    /// As `misdirect_next_write_to`, landing at `landing_offset` (a story
    /// test places the damage; the write must fit there and not be meant
    /// for it, else it lands as asked, as an unplaceable one does).
    pub fn misdirect_next_write_to_landing(&mut self, path: &Path, landing_offset: u64) {
        self.assert_faults_on();
        assert!(landing_offset.is_multiple_of(SECTOR_SIZE_BYTES), "a misdirected write lands on a sector");
        self.misdirect_next = self.namespace_current.get(path).map(|&id| (id, Some(landing_offset)));
    }

    /// The ranges `(offset, len)` of `path` a misdirected write was meant
    /// for or landed on, oldest first: what the writer believes is there
    /// may not be.
    pub fn misdirected_ranges(&self, path: &Path) -> &[(u64, u64)] {
        self.namespace_current.get(path).and_then(|id| self.misdirected.get(id)).map_or(&[], Vec::as_slice)
    }

    /// `misdirected_ranges` of the file the durable directory names at
    /// `path` (what a power loss would keep, and what the checkers read):
    /// after a rename or exchange whose directory fsync is still to come,
    /// another file than the one open at `path`.
    pub fn misdirected_ranges_durable(&self, path: &Path) -> &[(u64, u64)] {
        self.namespace_durable.get(path).and_then(|id| self.misdirected.get(id)).map_or(&[], Vec::as_slice)
    }

    /// `misdirected_this_life` of the file the durable directory names.
    pub fn misdirected_this_life_durable(&self, path: &Path) -> bool {
        self.namespace_durable
            .get(path)
            .and_then(|id| self.misdirected_generation.get(id))
            .is_some_and(|&generation| generation == self.generation)
    }

    /// A misdirected write is armed for the next write to `path` and has
    /// not landed yet (`misdirect_next_write_to`).
    pub fn misdirect_armed_for(&self, path: &Path) -> bool {
        self.namespace_current.get(path).is_some_and(|id| self.misdirect_next.is_some_and(|(armed, _)| armed == *id))
    }

    /// Some sector of `path` holds sticky damage (rot or a latent sector
    /// error) that no write has covered yet.
    pub fn holds_sector_damage(&self, path: &Path) -> bool {
        self.namespace_current.get(path).is_some_and(|id| {
            let inode = &self.inodes[id];
            !inode.corrupt_sectors.is_empty() || !inode.eio_sectors.is_empty()
        })
    }

    /// A write to `path` was misdirected since the last crash (in this
    /// process life). A driver that holds the device to one misdirected
    /// write per file per life asks this before arming another: what the
    /// first one damaged is repaired only by the next open.
    pub fn misdirected_this_life(&self, path: &Path) -> bool {
        self.namespace_current
            .get(path)
            .and_then(|id| self.misdirected_generation.get(id))
            .is_some_and(|&generation| generation == self.generation)
    }

    /// The disk is lost and replaced by an empty one: every file and
    /// directory is gone (the operator's format creates the data directory
    /// again).
    pub fn wipe(&mut self) {
        self.namespace_current.clear();
        self.namespace_durable.clear();
        self.dirs_current.clear();
        self.dirs_durable.clear();
        self.inodes.clear();
        self.misdirected.clear();
        self.misdirected_generation.clear();
        self.misdirect_next = None;
        self.new_process_life();
        self.count("wipe");
    }

    /// Rot the byte at `offset` of `path`: every read sees one of its bits
    /// flipped until a write touches its sector (sticky).
    pub fn corrupt_sector(&mut self, path: &Path, offset: u64) -> io::Result<()> {
        let id = *self.namespace_current.get(path).ok_or_else(|| os_error(2))?;
        let bit = (offset % SECTOR_SIZE_BYTES) * 8 + self.below(8);
        self.inodes
            .get_mut(&id)
            .expect("namespace names a live inode")
            .corrupt_sectors
            .insert(offset / SECTOR_SIZE_BYTES, bit);
        self.count("read_corruption");
        Ok(())
    }

    /// A latent sector error at `offset` of `path`: reads through its sector
    /// fail with EIO until a write covers the sector.
    pub fn fail_sector_reads(&mut self, path: &Path, offset: u64) -> io::Result<()> {
        let id = *self.namespace_current.get(path).ok_or_else(|| os_error(2))?;
        self.inodes.get_mut(&id).expect("namespace names a live inode").eio_sectors.insert(offset / SECTOR_SIZE_BYTES);
        self.count("read_eio_sticky");
        Ok(())
    }

    /// Overwrite bytes of a file, durably and at once, bypassing faults and
    /// steps: tests use it to plant bad input (bit flips, zero fill). The
    /// device's bytes change; a read sees the change except where a
    /// pending write (a dirty page, newer than the medium) covers it.
    pub fn poke(&mut self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        let id = *self.namespace_current.get(path).ok_or_else(|| os_error(2))?;
        let inode = self.inodes.get_mut(&id).expect("namespace names a live inode");
        let op = Pending::Write { offset, data: data.to_vec() };
        apply(&mut inode.current, &op);
        apply(&mut inode.durable, &op);
        // Replaying every pending operation in order restores what they
        // cover and leaves the rest of `current` as it was.
        for pending in &inode.pending {
            apply(&mut inode.current, pending);
        }
        Ok(())
    }

    /// Truncate a file durably and at once (tests: a truncated journal).
    pub fn poke_len(&mut self, path: &Path, size_bytes: u64) -> io::Result<()> {
        let id = *self.namespace_current.get(path).ok_or_else(|| os_error(2))?;
        let inode = self.inodes.get_mut(&id).expect("namespace names a live inode");
        let op = Pending::SetLen { size_bytes };
        apply(&mut inode.current, &op);
        apply(&mut inode.durable, &op);
        Ok(())
    }

    /// The inode `path` names now (checkers): a file replaced through a
    /// rename names another inode, one written in place the same.
    pub fn inode(&self, path: &Path) -> Option<u64> {
        self.namespace_current.get(path).copied()
    }

    /// The bytes a read would see now, corruption excluded (tests, checkers).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.namespace_current.get(path).map(|id| self.inodes[id].current.clone())
    }

    /// The length of `path` as reads see it (`contents`' length, without
    /// the copy).
    pub fn length_of(&self, path: &Path) -> Option<u64> {
        self.namespace_current.get(path).map(|id| self.inodes[id].current.len() as u64)
    }

    /// The bytes that would survive a crash if every pending write were lost.
    pub fn contents_durable(&self, path: &Path) -> Option<Vec<u8>> {
        self.namespace_durable.get(path).map(|id| self.inodes[id].durable.clone())
    }

    /// Up to `len` durable bytes of `path` from `offset` (fewer past the
    /// end): what a checker needs of one record, without copying the file.
    pub fn contents_durable_range(&self, path: &Path, offset: u64, len: usize) -> Option<Vec<u8>> {
        let durable = &self.inodes[self.namespace_durable.get(path)?].durable;
        let start = (offset as usize).min(durable.len());
        Some(durable[start..(start + len).min(durable.len())].to_vec())
    }

    /// The process died: a process crash or a power loss, drawn from
    /// `faults.process_crash_ppm` (see the module doc).
    pub fn crash(&mut self) {
        if self.chance(self.faults.process_crash_ppm) {
            self.crash_process();
        } else {
            self.power_loss();
        }
    }

    /// Only the process died: the page cache survives. Every pending write
    /// and directory entry stays visible to reads and stays pending (not
    /// durable); open handles die.
    pub fn crash_process(&mut self) {
        self.new_process_life();
        self.halted = false;
        self.disarm_process_faults();
        self.count("crash_process");
    }

    /// The machine lost power: drop or tear pending writes, restore the
    /// durable namespace (a directory whose entry was not durable is gone
    /// with everything under it), invalidate every open handle.
    pub fn power_loss(&mut self) {
        let reachable = |dirs: &BTreeSet<PathBuf>, path: &Path| {
            path.ancestors().skip(1).all(|ancestor| is_root(ancestor) || dirs.contains(ancestor))
        };
        let durable_dirs = std::mem::take(&mut self.dirs_durable);
        let lost_dirs = self.dirs_current.difference(&durable_dirs).count()
            + durable_dirs.iter().filter(|dir| !reachable(&durable_dirs, dir)).count();
        if lost_dirs > 0 {
            self.count("crash_lost_dir");
        }
        self.dirs_durable = durable_dirs.iter().filter(|dir| reachable(&durable_dirs, dir)).cloned().collect();
        self.dirs_current = self.dirs_durable.clone();
        let dirs = &self.dirs_durable;
        self.namespace_durable.retain(|path, _| reachable(dirs, path));
        self.namespace_current = self.namespace_durable.clone();
        let live: BTreeSet<InodeId> = self.namespace_durable.values().copied().collect();
        self.inodes.retain(|id, _| live.contains(id));
        let faults = self.faults;
        let ids: Vec<InodeId> = self.inodes.keys().copied().collect();
        for id in ids {
            let pending = std::mem::take(&mut self.inodes.get_mut(&id).unwrap().pending);
            self.inodes.get_mut(&id).unwrap().pending_retired_total += pending.len() as u64;
            let mut durable = std::mem::take(&mut self.inodes.get_mut(&id).unwrap().durable);
            let mut lost = Vec::new();
            for op in pending {
                if self.chance(faults.crash_lost_ppm) {
                    self.count("crash_lost_write");
                    lost.push(op.range());
                    continue;
                }
                match op {
                    Pending::Write { offset, data } => {
                        let sectors = (data.len() as u64).div_ceil(SECTOR_SIZE_BYTES);
                        if sectors > 1 && self.chance(faults.crash_torn_ppm) {
                            // Any subset of sectors but none or all: a random
                            // non-zero, non-full mask over the sectors.
                            let kept = self.torn_subset(sectors);
                            for sector in kept {
                                let start = (sector * SECTOR_SIZE_BYTES) as usize;
                                let end = (start + SECTOR_SIZE_BYTES as usize).min(data.len());
                                let part =
                                    Pending::Write { offset: offset + start as u64, data: data[start..end].to_vec() };
                                apply(&mut durable, &part);
                            }
                            self.count("crash_torn_write");
                            lost.push(offset..offset + data.len() as u64);
                        } else {
                            apply(&mut durable, &Pending::Write { offset, data });
                        }
                    }
                    set_len @ Pending::SetLen { .. } => apply(&mut durable, &set_len),
                }
            }
            let inode = self.inodes.get_mut(&id).unwrap();
            inode.current = durable.clone();
            inode.durable = durable;
            for range in lost {
                self.note_lost_write(id, range);
            }
        }
        self.new_process_life();
        self.halted = false;
        self.disarm_process_faults();
        self.count("crash");
    }

    /// The sectors a torn write keeps: a subset of `0..sectors`, never empty
    /// and never all of them, ascending.
    fn torn_subset(&mut self, sectors: u64) -> Vec<u64> {
        assert!(sectors > 1);
        loop {
            let kept: Vec<u64> = (0..sectors).filter(|_| self.rng.next_u64() & 1 == 1).collect();
            if !kept.is_empty() && (kept.len() as u64) < sectors {
                return kept;
            }
        }
    }

    // --- storage calls (used by SimIo and SimFile) ---------------------------

    /// Count one storage call; fail it when the disk is halted.
    fn step(&mut self) -> io::Result<()> {
        if self.halted {
            return Err(halted_error());
        }
        if let Some(limit) = self.halt_after_steps
            && self.steps >= limit
        {
            self.halted = true;
            self.count("crash_halt");
            return Err(halted_error());
        }
        self.steps += 1;
        Ok(())
    }

    /// Count one call that changes the disk (after `step`): an armed
    /// mutation fault lands here, a halt as `Err`, an EIO as `Ok(true)`
    /// (the caller fails the way its call fails).
    fn mutation(&mut self) -> io::Result<bool> {
        self.mutations += 1;
        let Some((at, fault)) = self.mutation_fault else { return Ok(false) };
        if at != self.mutations {
            debug_assert!(at > self.mutations, "an armed fault lands once");
            return Ok(false);
        }
        self.mutation_fault = None;
        match fault {
            MutationFault::Halt => {
                self.halted = true;
                self.count("crash_halt");
                Err(halted_error())
            }
            MutationFault::Eio => {
                self.count("mutation_eio");
                Ok(true)
            }
        }
    }

    /// What one latent sector error takes from reads and partial writes:
    /// its sector, or its whole page (`latent_error_page_bytes`).
    pub fn damage_unit_bytes(&self) -> u64 {
        self.latent_error_page_bytes.max(SECTOR_SIZE_BYTES)
    }

    /// The sectors a latent error in any of which fails an access to bytes
    /// `start..end`: theirs, or those of the pages they touch.
    fn damage_units(&self, start: u64, end: u64) -> std::ops::Range<u64> {
        let unit = self.damage_unit_bytes();
        (start / unit * unit) / SECTOR_SIZE_BYTES..end.div_ceil(unit) * unit / SECTOR_SIZE_BYTES
    }

    /// A write of `offset..end` over a latent error it cannot remap: with
    /// page-sized damage units, a page it covers only in part holds an
    /// unreadable sector, and the kernel must read that page first.
    fn write_needs_unreadable_page(&self, id: InodeId, offset: u64, end: u64) -> bool {
        let unit = self.damage_unit_bytes();
        if unit == SECTOR_SIZE_BYTES {
            return false;
        }
        let eio = &self.inodes[&id].eio_sectors;
        let partial_page_unreadable = |page: u64| {
            let (start, stop) = (page * unit, (page + 1) * unit);
            let covered = offset <= start && stop <= end;
            !covered && eio.range(start / SECTOR_SIZE_BYTES..stop / SECTOR_SIZE_BYTES).next().is_some()
        };
        partial_page_unreadable(offset / unit) || partial_page_unreadable((end - 1) / unit)
    }

    /// A crash or a wipe: the handles of the old life fail with EBADF and
    /// no longer count as open.
    fn new_process_life(&mut self) {
        self.generation += 1;
        self.open_files = 0;
    }

    /// Handles open now, and the most open at once so far.
    pub fn open_files(&self) -> (u64, u64) {
        (self.open_files, self.open_files_peak)
    }

    /// The first file whose open `open_files_max` refused, if any.
    pub fn open_files_refused(&self) -> Option<&Path> {
        self.open_files_refused.as_deref()
    }

    /// A handle of life `generation` was dropped.
    pub(crate) fn close(&mut self, generation: u64) {
        if generation == self.generation {
            self.open_files = self.open_files.checked_sub(1).expect("a close for every open");
        }
    }

    /// One more handle, or EMFILE past the process's limit.
    fn admit_open(&mut self, path: &Path) -> io::Result<()> {
        if self.open_files_max.is_some_and(|max| self.open_files >= max) {
            self.open_files_refused.get_or_insert_with(|| path.to_path_buf());
            self.count("open_files_refused");
            return Err(os_error(EMFILE));
        }
        self.open_files += 1;
        self.open_files_peak = self.open_files_peak.max(self.open_files);
        Ok(())
    }

    fn check_handle(&self, generation: u64, id: InodeId) -> io::Result<()> {
        if generation != self.generation || !self.inodes.contains_key(&id) {
            return Err(os_error(EBADF));
        }
        Ok(())
    }

    pub(crate) fn open(&mut self, path: &Path, create: bool) -> io::Result<(InodeId, u64)> {
        self.step()?;
        if let Some(&id) = self.namespace_current.get(path) {
            self.admit_open(path)?;
            return Ok((id, self.generation));
        }
        if !create {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display())));
        }
        let parent = parent_of(path);
        if !self.dir_exists(&parent) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("directory {} not found", parent.display())));
        }
        self.admit_open(path)?;
        let id = self.inode_next;
        self.inode_next += 1;
        self.inodes.insert(id, Inode::default());
        self.namespace_current.insert(path.to_path_buf(), id);
        Ok((id, self.generation))
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        is_root(dir) || self.dirs_current.contains(dir)
    }

    /// This read is one `fail_reads_after` armed to fail.
    fn armed_read_fails(&mut self) -> bool {
        match self.fail_reads_after {
            Some((0, count)) => {
                self.fail_reads_after = (count > 1).then_some((0, count - 1));
                true
            }
            Some((skip, count)) => {
                self.fail_reads_after = Some((skip - 1, count));
                false
            }
            None => false,
        }
    }

    pub(crate) fn read(&mut self, generation: u64, id: InodeId, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.step()?;
        self.check_handle(generation, id)?;
        self.reads_total += 1;
        let end = position + buf.len() as u64;
        if end > self.inodes[&id].current.len() as u64 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"));
        }
        if buf.is_empty() {
            return Ok(());
        }
        let sectors = position / SECTOR_SIZE_BYTES..end.div_ceil(SECTOR_SIZE_BYTES);
        if self.inodes[&id].eio_sectors.range(self.damage_units(position, end)).next().is_some()
            || self.armed_read_fails()
            || self.chance(self.faults.read_eio_ppm)
        {
            self.count("read_eio");
            self.note_failed_read(id, position..end);
            return Err(os_error(EIO));
        }
        if self.chance(self.faults.read_corruption_ppm) {
            let byte = position + self.below(end - position);
            let bit = (byte % SECTOR_SIZE_BYTES) * 8 + self.below(8);
            self.inodes.get_mut(&id).unwrap().corrupt_sectors.insert(byte / SECTOR_SIZE_BYTES, bit);
            self.count("read_corruption");
        }
        let inode = &self.inodes[&id];
        buf.copy_from_slice(&inode.current[position as usize..end as usize]);
        for (&sector, &bit) in inode.corrupt_sectors.range(sectors) {
            // The same bit of the sector flips on every read: sticky.
            let byte = sector * SECTOR_SIZE_BYTES + bit / 8;
            if (position..end).contains(&byte) && byte < inode.current.len() as u64 {
                buf[(byte - position) as usize] ^= 1 << (bit % 8);
            }
        }
        Ok(())
    }

    pub(crate) fn write(&mut self, generation: u64, id: InodeId, data: &[u8], position: u64) -> io::Result<()> {
        self.step()?;
        self.check_handle(generation, id)?;
        if self.mutation()? {
            self.count("write_eio");
            return Err(os_error(EIO));
        }
        if let Some(code) = self.fail_next_write.take() {
            self.count("write_eio");
            return Err(os_error(code));
        }
        if self.chance(self.faults.write_eio_ppm) {
            self.count("write_eio");
            return Err(os_error(EIO));
        }
        if self.chance(self.faults.write_enospc_ppm) {
            self.count("write_enospc");
            return Err(os_error(ENOSPC));
        }
        if !data.is_empty() && self.write_needs_unreadable_page(id, position, position + data.len() as u64) {
            self.count("write_eio_unreadable_page");
            return Err(os_error(EIO));
        }
        // A write that extends the file lands as asked: the file system
        // grows the file whatever the device does with the blocks, and a
        // file that never grew by it would read short where its writer
        // wrote (no device does that). An armed misdirect waits for a
        // write within the file (a segment's marker, not its appends).
        let within = position + data.len() as u64 <= self.inodes[&id].current.len() as u64;
        let armed = self.misdirect_next.filter(|(armed_id, _)| *armed_id == id && within);
        if armed.is_some() {
            self.misdirect_next = None;
        }
        let placed = armed.and_then(|(_, landing)| landing);
        let drawn = armed.is_none() && self.chance(self.faults.misdirected_write_ppm);
        let offset = if !data.is_empty() && (armed.is_some() || (drawn && within)) {
            self.misdirect(id, position, data.len() as u64, placed)
        } else {
            position
        };
        let inode = self.inodes.get_mut(&id).unwrap();
        if !data.is_empty() {
            let first = offset / SECTOR_SIZE_BYTES;
            let last = (offset + data.len() as u64 - 1) / SECTOR_SIZE_BYTES;
            let touched: Vec<u64> = inode.corrupt_sectors.range(first..=last).map(|(&sector, _)| sector).collect();
            for sector in touched {
                inode.corrupt_sectors.remove(&sector);
            }
            // A write over a whole sector lets the drive remap it: a sticky
            // EIO ends (a partial write would need a read-modify-write).
            let remapped: Vec<u64> = inode
                .eio_sectors
                .range(first..=last)
                .copied()
                .filter(|&sector| {
                    offset <= sector * SECTOR_SIZE_BYTES
                        && (sector + 1) * SECTOR_SIZE_BYTES <= offset + data.len() as u64
                })
                .collect();
            for sector in remapped {
                inode.eio_sectors.remove(&sector);
            }
        }
        let op = Pending::Write { offset, data: data.to_vec() };
        apply(&mut inode.current, &op);
        inode.pending.push(op);
        self.writes_total += 1;
        self.write_bytes_total += data.len() as u64;
        Ok(())
    }

    /// Where a misdirected write of `len` bytes meant for `position` lands:
    /// another sector-aligned offset where it fits inside the file, never
    /// the intended one (`placed`, when a driver chose it and it fits);
    /// `position` itself when there is no such offset.
    fn misdirect(&mut self, id: InodeId, position: u64, len: u64, placed: Option<u64>) -> u64 {
        let length = self.inodes[&id].current.len() as u64;
        if len > length {
            return position;
        }
        if let Some(landing) = placed {
            if landing == position || landing + len > length {
                return position;
            }
            self.remember_misdirected(id, position, landing, len);
            return landing;
        }
        // Sectors a write of `len` bytes may start at and stay in the file.
        let starts = (length - len) / SECTOR_SIZE_BYTES + 1;
        let intended = position.is_multiple_of(SECTOR_SIZE_BYTES).then_some(position / SECTOR_SIZE_BYTES);
        let candidates = starts - u64::from(intended.is_some_and(|sector| sector < starts));
        if candidates == 0 {
            return position;
        }
        let mut target = self.below(candidates);
        if intended.is_some_and(|sector| target >= sector) {
            target += 1; // skip the intended sector
        }
        debug_assert!(Some(target) != intended && target < starts);
        self.remember_misdirected(id, position, target * SECTOR_SIZE_BYTES, len);
        target * SECTOR_SIZE_BYTES
    }

    fn remember_misdirected(&mut self, id: InodeId, position: u64, landing: u64, len: u64) {
        let ranges = self.misdirected.entry(id).or_default();
        for range in [(position, len), (landing, len)] {
            if ranges.len() == MISDIRECTED_REMEMBERED_MAX {
                ranges.remove(0);
            }
            ranges.push(range);
        }
        self.misdirected_generation.insert(id, self.generation);
        self.count("misdirected_write");
    }

    pub(crate) fn set_len(&mut self, generation: u64, id: InodeId, size_bytes: u64) -> io::Result<()> {
        self.step()?;
        self.check_handle(generation, id)?;
        if self.mutation()? {
            return Err(os_error(EIO));
        }
        // Blocks wholly past the new end leave the file (the file system
        // frees them; a later extension gets fresh ones), and their damage
        // with them; a page-sized damage unit is a block.
        let unit = self.damage_unit_bytes();
        let first_freed = size_bytes.div_ceil(unit) * unit / SECTOR_SIZE_BYTES;
        let inode = self.inodes.get_mut(&id).unwrap();
        inode.corrupt_sectors.retain(|&sector, _| sector < first_freed);
        inode.eio_sectors.retain(|&sector| sector < first_freed);
        let op = Pending::SetLen { size_bytes };
        apply(&mut inode.current, &op);
        inode.pending.push(op);
        Ok(())
    }

    pub(crate) fn size_bytes(&mut self, generation: u64, id: InodeId) -> io::Result<u64> {
        self.step()?;
        self.check_handle(generation, id)?;
        Ok(self.inodes[&id].current.len() as u64)
    }

    /// The files the current namespace names under `dir` (any depth), in
    /// path order (checkers).
    pub fn files_under(&self, dir: &Path) -> Vec<PathBuf> {
        self.namespace_current.keys().filter(|path| path.starts_with(dir)).cloned().collect()
    }

    /// `posix_fadvise(POSIX_FADV_DONTNEED)`: the kernel drops the file's
    /// clean cached pages, so later reads come from the device. Dirty pages
    /// (pending writes) stay. What this is for: the pages a failed fsync
    /// marked clean, which reads still see and no fsync will write.
    /// Not a step of its own (a halted disk still refuses it): it changes
    /// nothing a crash keeps, so a crash right after it is one right before
    /// the next call.
    pub(crate) fn evict_clean_pages(&mut self, generation: u64, id: InodeId) -> io::Result<()> {
        if self.halted {
            return Err(halted_error());
        }
        self.check_handle(generation, id)?;
        let inode = self.inodes.get_mut(&id).unwrap();
        let seen = inode.device_view_with_pending();
        if seen != inode.current {
            inode.current = seen;
            self.count("stale_pages_evicted");
        }
        Ok(())
    }

    /// Bytes of the file at `path` that reads see and the device will
    /// never hold: pages a failed fsync marked clean (they differ from the
    /// durable bytes with every pending write applied). A start that trusts
    /// such a byte acts on what the next power loss takes back.
    pub fn stale_cached_bytes(&self, path: &Path) -> u64 {
        let Some((device, cached)) = self.device_and_cached(path) else { return 0 };
        let common = device.len().min(cached.len());
        let differing = device[..common].iter().zip(&cached[..common]).filter(|(a, b)| a != b).count();
        (differing + device.len().abs_diff(cached.len())) as u64
    }

    /// The first byte of the file at `path` that reads see and the device
    /// will never hold (`stale_cached_bytes`), if any: where a failed
    /// fsync's leftovers begin.
    pub fn first_stale_cached_offset(&self, path: &Path) -> Option<u64> {
        let (device, cached) = self.device_and_cached(path)?;
        let common = device.len().min(cached.len());
        let first = device[..common].iter().zip(&cached[..common]).position(|(a, b)| a != b);
        first.or((device.len() != cached.len()).then_some(common)).map(|offset| offset as u64)
    }

    /// What the device will hold of the file at `path` (durable bytes with
    /// every pending write applied) beside what reads see now.
    fn device_and_cached(&self, path: &Path) -> Option<(Vec<u8>, &[u8])> {
        let inode = self.namespace_current.get(path).map(|id| &self.inodes[id])?;
        Some((inode.device_view_with_pending(), &inode.current))
    }

    /// An fsync of `id` begins: the operations issued so far are the ones it
    /// covers (`sync_data`'s `fence`). Not a storage call of its own.
    pub(crate) fn sync_fence(&self, id: InodeId) -> u64 {
        self.inodes.get(&id).map_or(0, |inode| inode.pending_retired_total + inode.pending.len() as u64)
    }

    /// An fsync that began at `fence` (`sync_fence`) completes: what was
    /// issued before it began is durable. A write issued while it ran is not
    /// covered, as on Linux (the kernel flushes the dirty pages it found
    /// when the call started; later ones wait for the next fsync), so it
    /// stays pending and a crash may lose or tear it.
    pub(crate) fn sync_data(&mut self, generation: u64, id: InodeId, fence: u64) -> io::Result<()> {
        self.step()?;
        self.check_handle(generation, id)?;
        let covered = {
            let inode = &self.inodes[&id];
            fence.saturating_sub(inode.pending_retired_total).min(inode.pending.len() as u64) as usize
        };
        let under = self.fail_next_sync_under.as_ref().is_some_and(|prefix| {
            self.namespace_current
                .iter()
                .any(|(path, &named)| named == id && path.to_string_lossy().starts_with(prefix))
        });
        let targeted = under || self.fail_next_sync_of == Some(id);
        if under {
            self.fail_next_sync_under = None;
            self.count("sync_eio_under");
        } else if targeted {
            self.fail_next_sync_of = None;
        }
        let second = self.fail_second_sync == Some(Some(id));
        if second {
            self.fail_second_sync = None;
            self.count("sync_eio_second");
        }
        let eio = self.mutation()?
            || targeted
            || second
            || self.fail_next_sync.take().is_some()
            || self.chance(self.faults.sync_eio_ppm);
        if eio {
            self.count("sync_eio");
            self.drop_pending_writes(id, covered);
            return Err(os_error(EIO));
        }
        if self.chance(self.faults.sync_enospc_ppm) {
            self.count("sync_enospc");
            return Err(os_error(ENOSPC));
        }
        if covered < self.inodes[&id].pending.len() {
            self.count("sync_left_later_writes");
        }
        if self.fail_second_sync == Some(None) {
            self.fail_second_sync = Some(Some(id));
        }
        // Replay only what is pending: copying the whole file on every
        // fsync made the simulator quadratic in file size.
        let inode = self.inodes.get_mut(&id).unwrap();
        for op in inode.pending.drain(..covered) {
            apply(&mut inode.durable, &op);
        }
        inode.pending_retired_total += covered as u64;
        debug_assert!(!inode.pending.is_empty() || inode.durable.len() == inode.current.len());
        Ok(())
    }

    /// Record the paths that name `id` now as files that lost a write
    /// over `range` (bytes).
    fn note_lost_write(&mut self, id: InodeId, range: Range<u64>) {
        for path in self.paths_of(id) {
            self.lost_writes.entry(path).or_default().add(range.clone());
        }
    }

    /// The paths that name `id` now.
    fn paths_of(&self, id: InodeId) -> Vec<PathBuf> {
        self.namespace_current.iter().filter(|(_, inode)| **inode == id).map(|(path, _)| path.clone()).collect()
    }

    fn note_failed_read(&mut self, id: InodeId, range: Range<u64>) {
        for path in self.paths_of(id) {
            self.failed_reads.entry(path).or_default().add(range.clone());
        }
    }

    /// The byte ranges whose reads failed with EIO since the last call, by
    /// the paths their files had then.
    pub fn take_failed_reads(&mut self) -> BTreeMap<PathBuf, ByteRanges> {
        std::mem::take(&mut self.failed_reads)
    }

    /// The files that lost a write since the last call (at a power loss,
    /// dropped or torn; at a failed fsync, dropped), by the names they had
    /// then, with the byte ranges those writes covered. The simulator's
    /// start checks hold damage a file reports to what it lost.
    pub fn take_lost_writes(&mut self) -> BTreeMap<PathBuf, ByteRanges> {
        std::mem::take(&mut self.lost_writes)
    }

    /// What a failed fsync does on Linux: the kernel gave up on the dirty
    /// pages it was writing (the first `covered` pending operations) and
    /// marked them clean. They never reach the device (no later fsync
    /// retries them), but reads still see them from the page cache.
    /// Length changes are metadata and reach the device; the bytes a dropped
    /// write would have put past the old end read back as zeros there.
    fn drop_pending_writes(&mut self, id: InodeId, covered: usize) {
        let dropped: Vec<Range<u64>> = self.inodes[&id]
            .pending
            .iter()
            .take(covered)
            .filter(|op| matches!(op, Pending::Write { .. }))
            .map(Pending::range)
            .collect();
        for range in dropped {
            self.note_lost_write(id, range);
        }
        let inode = self.inodes.get_mut(&id).unwrap();
        for op in inode.pending.drain(..covered) {
            match op {
                Pending::Write { offset, data } => {
                    let end = (offset as usize + data.len()).max(inode.durable.len());
                    inode.durable.resize(end, 0);
                }
                set_len @ Pending::SetLen { .. } => apply(&mut inode.durable, &set_len),
            }
        }
        inode.pending_retired_total += covered as u64;
    }

    pub(crate) fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        if self.mutation()? {
            return Err(os_error(EIO));
        }
        let id = self
            .namespace_current
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} not found", from.display())))?;
        let replaced = self.namespace_current.insert(to.to_path_buf(), id);
        if let Some(replaced) = replaced {
            // Where a journal's compaction cannot exchange it renames its
            // spare over the journal (see `share_misdirected`).
            self.share_misdirected(replaced, id);
        }
        Ok(())
    }

    /// Swap two names. Like `rename`, it changes the current namespace at
    /// once and the durable one only at `sync_dir` (which copies every name
    /// of the directory, so both halves become durable together).
    pub(crate) fn exchange(&mut self, a: &Path, b: &Path) -> io::Result<()> {
        self.step()?;
        if self.mutation()? {
            return Err(os_error(EIO));
        }
        if self.exchange_unsupported {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "this simulated file system cannot exchange"));
        }
        let not_found = |path: &Path| io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()));
        let id_a = *self.namespace_current.get(a).ok_or_else(|| not_found(a))?;
        let id_b = *self.namespace_current.get(b).ok_or_else(|| not_found(b))?;
        self.namespace_current.insert(a.to_path_buf(), id_b);
        self.namespace_current.insert(b.to_path_buf(), id_a);
        self.share_misdirected(id_a, id_b);
        Ok(())
    }

    /// An exchange swaps in a file whose bytes were copied from the other
    /// (a journal's compacted spare, staged from the journal's page cache
    /// and mirroring its writes since): the damage a misdirected write did
    /// to one went into the other with the copy. So both remember every
    /// misdirected range of either (the older file's first), and its life,
    /// for the checkers and the fault placement that ask about the file at
    /// the journal's path. Exchange is only the journal's in this simulator.
    fn share_misdirected(&mut self, id_a: InodeId, id_b: InodeId) {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for range in [id_a, id_b].iter().flat_map(|id| self.misdirected.get(id).cloned().unwrap_or_default()) {
            if !ranges.contains(&range) {
                ranges.push(range);
            }
        }
        let excess = ranges.len().saturating_sub(MISDIRECTED_REMEMBERED_MAX);
        ranges.drain(..excess);
        let generation = [id_a, id_b].iter().filter_map(|id| self.misdirected_generation.get(id)).max().copied();
        for id in [id_a, id_b] {
            if !ranges.is_empty() {
                self.misdirected.insert(id, ranges.clone());
            }
            if let Some(generation) = generation {
                self.misdirected_generation.insert(id, generation);
            }
        }
    }

    pub(crate) fn remove(&mut self, path: &Path) -> io::Result<()> {
        self.step()?;
        if self.mutation()? {
            return Err(os_error(EIO));
        }
        self.namespace_current
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display())))
    }

    pub(crate) fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.step()?;
        if self.mutation()? {
            return Err(os_error(EIO));
        }
        if !self.dir_exists(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("directory {} not found", dir.display())));
        }
        let paths: BTreeSet<PathBuf> = self
            .namespace_current
            .keys()
            .chain(self.namespace_durable.keys())
            .filter(|path| parent_of(path) == dir)
            .cloned()
            .collect();
        for path in paths {
            match self.namespace_current.get(&path) {
                Some(id) => self.namespace_durable.insert(path, *id),
                None => self.namespace_durable.remove(&path),
            };
        }
        // Subdirectories are entries of `dir` too (none is ever removed).
        let subdirs: Vec<PathBuf> = self.dirs_current.iter().filter(|sub| parent_of(sub) == dir).cloned().collect();
        self.dirs_durable.extend(subdirs);
        Ok(())
    }

    pub(crate) fn list_dir(&mut self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.step()?;
        if !self.dir_exists(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("directory {} not found", dir.display())));
        }
        Ok(self.namespace_current.keys().filter(|path| parent_of(path) == dir).cloned().collect())
    }

    pub(crate) fn create_dir_all(&mut self, dir: &Path) -> io::Result<()> {
        self.step()?;
        // Creating a directory changes the disk; finding it there does not.
        if !self.dir_exists(dir) && self.mutation()? {
            return Err(os_error(EIO));
        }
        // Each directory it creates is an entry of its parent, durable only
        // once the parent is fsynced (`sync_dir`).
        for ancestor in dir.ancestors() {
            if !is_root(ancestor) {
                self.dirs_current.insert(ancestor.to_path_buf());
            }
        }
        Ok(())
    }

    // --- randomness ----------------------------------------------------------

    fn chance(&mut self, ppm: u32) -> bool {
        debug_assert!(ppm <= PPM_MAX);
        ppm > 0 && (self.rng.next_u64() % u64::from(PPM_MAX)) < u64::from(ppm)
    }

    fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.rng.next_u64() % bound
    }

    fn count(&mut self, kind: &'static str) {
        *self.counters.entry(kind).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_ranges_merge_where_they_touch_and_become_the_whole_file_past_their_bound() {
        let mut lost = ByteRanges::default();
        lost.add(100..200);
        lost.add(300..400);
        assert!(lost.overlaps(&(150..160)) && lost.overlaps(&(399..500)));
        assert!(!lost.overlaps(&(200..300)), "the gap between two writes was not lost");
        lost.add(200..300);
        assert_eq!(lost.ranges.len(), 1);
        assert_eq!(lost.ranges[0], 100..400, "touching ranges merge");
        let mut many = ByteRanges::default();
        for index in 0..=BYTE_RANGES_PER_FILE_MAX as u64 {
            many.add(index * 10..index * 10 + 1);
        }
        assert_eq!(many.ranges.len(), 1);
        assert_eq!(many.ranges[0], 0..u64::MAX, "past the bound the whole file counts as lost");
        assert!(many.overlaps(&(5..6)));
    }

    #[test]
    fn a_failed_fsync_and_a_power_loss_name_the_bytes_they_lost() {
        let mut disk = disk_with_data_dir();
        let path = Path::new("/data/file");
        let (id, generation) = disk.open(path, true).unwrap();
        disk.sync_dir(Path::new("/data")).unwrap();
        disk.write(generation, id, &[1; 512], 4096).unwrap();
        disk.fail_next_sync();
        let fence = disk.sync_fence(id);
        assert!(disk.sync_data(generation, id, fence).is_err());
        disk.write(generation, id, &[2; 100], 8192).unwrap();
        disk.faults.crash_lost_ppm = 1_000_000;
        disk.power_loss();
        let lost = disk.take_lost_writes();
        let ranges = &lost[path];
        assert!(ranges.overlaps(&(4096..4097)) && ranges.overlaps(&(8291..8292)));
        assert!(!ranges.overlaps(&(0..4096)) && !ranges.overlaps(&(4608..8192)));
    }

    #[test]
    fn a_failed_read_names_its_bytes() {
        let mut disk = disk_with_data_dir();
        let path = Path::new("/data/file");
        let (id, generation) = disk.open(path, true).unwrap();
        disk.write(generation, id, &[1; 4096], 0).unwrap();
        disk.fail_reads_after(0, 1);
        let mut buf = [0u8; 256];
        assert!(disk.read(generation, id, &mut buf, 512).is_err());
        assert!(disk.read(generation, id, &mut buf, 1024).is_ok(), "one read fails");
        let failed = disk.take_failed_reads();
        assert!(failed[path].overlaps(&(600..601)));
        assert!(!failed[path].overlaps(&(1024..1280)), "the read that succeeded is not named");
        assert!(disk.take_failed_reads().is_empty(), "taken once");
    }

    /// A disk whose `/data` is durable in its parent, as a format leaves it.
    fn disk_with_data_dir() -> SimDisk {
        let mut disk = SimDisk::new(3);
        disk.create_dir_all(Path::new("/data")).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        disk
    }

    /// An fsync that begins and completes with nothing issued in between.
    fn sync_all_issued(disk: &mut SimDisk, generation: u64, id: InodeId) {
        let fence = disk.sync_fence(id);
        disk.sync_data(generation, id, fence).unwrap();
    }

    /// `fail_next_sync_under` fails the next fsync of a file under the
    /// prefix only, once: an fsync of another file passes, the failed one
    /// leaves its write readable and off the device (`stale_cached_bytes`,
    /// from `first_stale_cached_offset`), and a process crash disarms it.
    #[test]
    fn a_sync_failure_armed_under_a_prefix_hits_only_a_file_under_it() {
        let mut disk = disk_with_data_dir();
        let journal = Path::new("/data/journal");
        let segment = Path::new("/data/partition-1/segment");
        disk.create_dir_all(Path::new("/data/partition-1")).unwrap();
        let (journal_id, generation) = disk.open(journal, true).unwrap();
        let (segment_id, _) = disk.open(segment, true).unwrap();
        disk.write(generation, segment_id, b"synced", 0).unwrap();
        sync_all_issued(&mut disk, generation, segment_id);
        disk.fail_next_sync_under("/data/partition-");
        disk.write(generation, journal_id, b"prepare", 0).unwrap();
        sync_all_issued(&mut disk, generation, journal_id);
        disk.write(generation, segment_id, b"records", 6).unwrap();
        let fence = disk.sync_fence(segment_id);
        assert!(disk.sync_data(generation, segment_id, fence).is_err(), "the segment's fsync fails");
        assert_eq!(disk.stale_cached_bytes(journal), 0);
        assert_eq!(disk.contents(segment).as_deref(), Some(&b"syncedrecords"[..]), "reads still see it");
        assert_eq!(disk.first_stale_cached_offset(segment), Some(6));
        assert_eq!(disk.first_stale_cached_offset(journal), None);
        let fence = disk.sync_fence(segment_id);
        disk.sync_data(generation, segment_id, fence).expect("armed once");
        assert_eq!(disk.stale_cached_bytes(segment), 7, "no later fsync writes the clean pages");
        assert_eq!(disk.counters()["sync_eio_under"], 1);

        disk.fail_next_sync_under("/data/partition-");
        disk.crash_process();
        let (segment_id, generation) = disk.open(segment, true).unwrap();
        let fence = disk.sync_fence(segment_id);
        disk.sync_data(generation, segment_id, fence).expect("a crash disarms it");
    }

    /// The heal takes back every armed one-shot fault of a disk whose
    /// process keeps running (swarm 0 and partition-fsync 1 had one armed
    /// at their heal): the writes, fsyncs and reads after it succeed, and
    /// a disk with nothing armed reports so.
    #[test]
    fn the_heal_disarms_every_fault_still_armed() {
        let mut disk = disk_with_data_dir();
        let path = Path::new("/data/file");
        let (id, generation) = disk.open(path, true).unwrap();
        assert!(!disk_with_data_dir().disarm_faults(), "a disk with nothing armed says so");
        disk.fail_next_write();
        disk.fail_next_sync();
        disk.fail_second_sync();
        disk.fail_next_sync_under("/data/");
        disk.fail_reads_after(0, 4);
        disk.misdirect_next_write_to(path);
        assert!(disk.disarm_faults(), "armed faults are reported");
        disk.write(generation, id, &[7; 512], 0).expect("the write lands");
        sync_all_issued(&mut disk, generation, id);
        sync_all_issued(&mut disk, generation, id);
        let mut buf = [0u8; 512];
        disk.read(generation, id, &mut buf, 0).expect("the read succeeds");
        assert_eq!(buf, [7; 512], "where it was meant to land");
        assert_eq!(disk.counters()["faults_disarmed_at_heal"], 1);
        let armed_after_heal = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| disk.fail_next_sync()));
        assert!(armed_after_heal.is_err(), "arming a fault after the heal fails loudly");
    }

    /// A directory is an entry of its parent: durable only once the parent
    /// is fsynced. A power loss before that takes it and every file in it
    /// (synced or not); a process crash keeps it (the page cache).
    #[test]
    fn a_directory_entry_is_durable_only_after_its_parent_is_fsynced() {
        let mut disk = SimDisk::new(4);
        disk.faults.crash_lost_ppm = 0;
        disk.create_dir_all(Path::new("/data/part")).unwrap();
        let path = Path::new("/data/part/segment");
        let (id, generation) = disk.open(path, true).unwrap();
        disk.write(generation, id, b"records", 0).unwrap();
        sync_all_issued(&mut disk, generation, id);
        disk.sync_dir(Path::new("/data/part")).unwrap();
        disk.crash_process();
        assert_eq!(disk.contents(path).as_deref(), Some(&b"records"[..]), "the page cache keeps the directories");
        disk.power_loss();
        assert_eq!(disk.contents(path), None, "neither /data nor /data/part was durable in its parent");
        assert!(disk.open(path, true).is_err(), "the directory is gone with its file");
        assert_eq!(disk.counters()["crash_lost_dir"], 1);

        disk.create_dir_all(Path::new("/data/part")).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        let (id, generation) = disk.open(path, true).unwrap();
        disk.write(generation, id, b"records", 0).unwrap();
        sync_all_issued(&mut disk, generation, id);
        disk.sync_dir(Path::new("/data/part")).unwrap();
        disk.power_loss();
        assert_eq!(disk.contents(path), None, "/data is durable, /data/part is not: the file went with it");
        assert!(disk.list_dir(Path::new("/data")).is_ok(), "/data survived");
        assert!(disk.list_dir(Path::new("/data/part")).is_err());

        disk.create_dir_all(Path::new("/data/part")).unwrap();
        disk.sync_dir(Path::new("/data")).unwrap();
        let (id, generation) = disk.open(path, true).unwrap();
        disk.write(generation, id, b"records", 0).unwrap();
        sync_all_issued(&mut disk, generation, id);
        disk.sync_dir(Path::new("/data/part")).unwrap();
        disk.power_loss();
        assert_eq!(disk.contents(path).as_deref(), Some(&b"records"[..]), "every entry on the path is durable");
    }

    /// The driver's rule "one misdirected write per file per life" needs to
    /// know whether this life already had one; a crash starts a new life.
    #[test]
    fn misdirected_this_life_ends_with_the_crash() {
        let mut disk = disk_with_data_dir();
        let path = Path::new("/data/a");
        let (id, generation) = disk.open(path, true).unwrap();
        disk.write(generation, id, &[0u8; 4096], 0).unwrap();
        sync_all_issued(&mut disk, generation, id);
        disk.sync_dir(Path::new("/data")).unwrap();
        assert!(!disk.misdirected_this_life(path));
        disk.write(generation, id, &[1u8; 512], 1024).unwrap();
        assert!(!disk.misdirected_this_life(path), "an ordinary write is no misdirected one");
        disk.misdirect_next_write_to(path);
        disk.write(generation, id, &[2u8; 512], 1024).unwrap();
        assert!(disk.misdirected_this_life(path));
        assert_eq!(disk.misdirected_ranges(path).len(), 2, "meant for, landed on");
        disk.crash();
        assert!(!disk.misdirected_this_life(path), "a new life");
        assert_eq!(disk.misdirected_ranges(path).len(), 2, "where it landed is remembered across lives");
    }

    /// A journal's compaction copies its bytes into the spare and swaps the
    /// two: what a misdirected write damaged in the journal is in the
    /// spare too, so the file at the journal's path still answers for it
    /// (disk-rot seed 322085, session 19: the checkers forgot the damage the
    /// compaction carried over and blamed the replica's promise).
    #[test]
    fn an_exchange_or_a_rename_over_carries_misdirected_ranges_to_both_names() {
        let mut disk = disk_with_data_dir();
        disk.faults.misdirected_write_ppm = 0;
        let (journal, spare) = (Path::new("/data/j"), Path::new("/data/j.tmp"));
        let (journal_id, generation) = disk.open(journal, true).unwrap();
        let (spare_id, _) = disk.open(spare, true).unwrap();
        for id in [journal_id, spare_id] {
            disk.write(generation, id, &[0u8; 8192], 0).unwrap();
        }
        disk.sync_dir(Path::new("/data")).unwrap();
        disk.misdirect_next_write_to(journal);
        disk.write(generation, journal_id, &[2u8; 512], 1024).unwrap();
        let damaged = disk.misdirected_ranges(journal).to_vec();
        assert_eq!(damaged.len(), 2, "meant for, landed on");
        assert!(disk.misdirected_ranges(spare).is_empty());
        disk.exchange(spare, journal).unwrap();
        assert_eq!(disk.misdirected_ranges(journal), damaged.as_slice(), "the copy at the journal's path");
        assert_eq!(disk.misdirected_ranges(spare), damaged.as_slice(), "the retired file");
        assert!(disk.misdirected_this_life(journal));
        // Until the directory fsync the durable name is still the old file,
        // which the checkers read: a misdirect that hits it now counts there.
        disk.write(generation, journal_id, &[3u8; 512], 2048).unwrap();
        disk.misdirect_next_write_to(spare);
        disk.write(generation, journal_id, &[4u8; 512], 3072).unwrap();
        assert_eq!(disk.misdirected_ranges_durable(journal).len(), 4, "the file the durable name still holds");
        assert_eq!(disk.misdirected_ranges(journal).len(), 2, "not the one open at the path");
        assert!(disk.misdirected_this_life_durable(journal));
        let (other_id, _) = disk.open(Path::new("/data/k"), true).unwrap();
        disk.write(generation, other_id, &[0u8; 4096], 0).unwrap();
        disk.rename(Path::new("/data/k"), journal).unwrap();
        assert_eq!(disk.misdirected_ranges(journal), damaged.as_slice(), "renamed over the journal");
    }

    /// The driver places no misdirected write on a file whose damage no
    /// write covered yet, and no rot on a file with one armed: each needs
    /// to see the other until it is gone.
    #[test]
    fn sector_damage_and_an_armed_misdirect_last_until_a_write_ends_them() {
        let mut disk = disk_with_data_dir();
        disk.faults.misdirected_write_ppm = 0;
        let path = Path::new("/data/a");
        let (id, generation) = disk.open(path, true).unwrap();
        disk.write(generation, id, &[0u8; 4096], 0).unwrap();
        sync_all_issued(&mut disk, generation, id);
        assert!(!disk.holds_sector_damage(path));
        disk.fail_sector_reads(path, 1024).unwrap();
        disk.corrupt_sector(path, 2048 + 7).unwrap();
        assert!(disk.holds_sector_damage(path));
        disk.write(generation, id, &[1u8; 512], 1024).unwrap();
        assert!(disk.holds_sector_damage(path), "the rotten sector is still there");
        disk.write(generation, id, &[1u8; 16], 2048).unwrap();
        assert!(!disk.holds_sector_damage(path), "a write covered both");
        assert!(!disk.misdirect_armed_for(path));
        disk.misdirect_next_write_to(path);
        assert!(disk.misdirect_armed_for(path));
        disk.write(generation, id, &[2u8; 512], 0).unwrap();
        assert!(!disk.misdirect_armed_for(path), "it landed");
    }
}
