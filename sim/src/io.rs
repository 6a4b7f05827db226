//! `SimIo`: the simulated implementation of `shoal_vsr::Io`.
//!
//! Owns nothing itself: it is a cheap `Clone` handle over a shared virtual
//! clock and seeded executor (`executor.rs`), a seeded entropy source, and one
//! replica's simulated disk (`disk.rs`). Storage futures never wait on
//! virtual time (the cluster driver, not the disk, models latency: a turn
//! of the node spans a storage latency), but a file's writes and fsyncs may
//! yield once before they touch the disk (a seeded draw), as a real one
//! returns to the event loop: so storage futures the node runs at once (the
//! flushes of several groups, `shoal_shard::node::join`) interleave their
//! disk operations in seeded orders, and the simulator checks that
//! overlapping code and not a sequential stand-in. Drive storage code from
//! outside a task with `block_on_ready`, which polls until done.
//!
//! Must not touch the wall clock, OS entropy, threads or the real file system.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use shoal_vsr::io::{BufResult, Io, IoFile, OpenMode};

use crate::disk::SimDisk;
use crate::executor::{Executor, SimTask, Sleep};

// Distinct streams per component so that, e.g., an extra disk fault decision
// does not shift the entropy the protocol sees.
const SEED_STREAM_ENTROPY: u64 = 0x656e_7472_6f70_7900;
const SEED_STREAM_EXECUTOR: u64 = 0x6578_6563_7574_6f72;
const SEED_STREAM_DISK: u64 = 0x6469_736b_0000_0000;
const SEED_STREAM_YIELD: u64 = 0x7969_656c_6400_0000;

/// In how many of 2^16 file writes and fsyncs the future yields once first.
const YIELD_PER_65536: u64 = 1 << 15;
/// Polls `block_on_ready` makes before it calls a future stuck: each
/// storage future yields at most once per disk operation, so only a
/// future waiting on something else (a `sleep`) comes near this.
pub const BLOCK_ON_POLLS_MAX: usize = 1 << 20;

/// Poll `future` with a no-op waker until it completes and return its
/// output. `SimIo` storage futures only yield (they wait on nothing), so a
/// future still pending after `BLOCK_ON_POLLS_MAX` polls waits on
/// something that never comes here (a `sleep` belongs inside a spawned
/// task): a bug, and a panic.
pub fn block_on_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..BLOCK_ON_POLLS_MAX {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
    panic!("block_on_ready: future still pending after {BLOCK_ON_POLLS_MAX} polls; SimIo storage futures only yield")
}

/// Seeded yields of storage futures (see the module doc): one stream per
/// replica, its own so a yield never shifts the entropy the protocol or the
/// disk's faults draw.
#[derive(Debug)]
struct Yields {
    rng: RefCell<ChaCha8Rng>,
}

impl Yields {
    fn new(seed: u64) -> Rc<Yields> {
        Rc::new(Yields { rng: RefCell::new(ChaCha8Rng::seed_from_u64(seed ^ SEED_STREAM_YIELD)) })
    }

    /// Yield once (wake at once, pending once) or not, by a seeded draw.
    async fn maybe(&self) {
        if self.rng.borrow_mut().next_u64() % (1 << 16) >= YIELD_PER_65536 {
            return;
        }
        shoal_shard::node::join::yield_once().await;
    }
}

/// The simulated `Io` of one replica (or one shard of one).
#[derive(Debug, Clone)]
pub struct SimIo {
    executor: Rc<Executor>,
    entropy: Rc<RefCell<ChaCha8Rng>>,
    disk: Rc<RefCell<SimDisk>>,
    yields: Rc<Yields>,
}

impl SimIo {
    /// A fresh simulation: its own clock, executor, entropy and disk.
    pub fn new(seed: u64) -> SimIo {
        SimIo {
            executor: Rc::new(Executor::new(seed ^ SEED_STREAM_EXECUTOR)),
            entropy: Rc::new(RefCell::new(ChaCha8Rng::seed_from_u64(seed ^ SEED_STREAM_ENTROPY))),
            disk: Rc::new(RefCell::new(SimDisk::new(seed ^ SEED_STREAM_DISK))),
            yields: Yields::new(seed),
        }
    }

    /// Another replica in the same simulation: same clock and executor, its
    /// own disk and entropy stream.
    pub fn with_new_disk(&self, seed: u64) -> SimIo {
        SimIo {
            executor: self.executor.clone(),
            entropy: Rc::new(RefCell::new(ChaCha8Rng::seed_from_u64(seed ^ SEED_STREAM_ENTROPY))),
            disk: Rc::new(RefCell::new(SimDisk::new(seed ^ SEED_STREAM_DISK))),
            yields: Yields::new(seed),
        }
    }

    pub fn executor(&self) -> &Rc<Executor> {
        &self.executor
    }

    /// The disk, for fault configuration, injection, crash and counters.
    pub fn disk(&self) -> std::cell::RefMut<'_, SimDisk> {
        self.disk.borrow_mut()
    }

    pub fn set_now_ns(&self, now_ns: u64) {
        self.executor.set_now_ns(now_ns);
    }

    pub fn advance_ns(&self, duration_ns: u64) {
        self.executor.set_now_ns(self.executor.now_ns() + duration_ns);
    }

    /// See `Executor::run_until`.
    pub fn run_until(&self, deadline_ns: u64) {
        self.executor.run_until(deadline_ns);
    }

    /// See `Executor::run_until_idle`.
    pub fn run_until_idle(&self, polls_max: u64) -> bool {
        self.executor.run_until_idle(polls_max)
    }

    /// Crash this replica's disk: a power loss, or a process crash with
    /// `DiskFaults::process_crash_ppm` (see `SimDisk::crash`).
    pub fn crash(&self) {
        self.disk.borrow_mut().crash();
    }

    /// Only the process dies; the page cache survives (`SimDisk::crash_process`).
    pub fn crash_process(&self) {
        self.disk.borrow_mut().crash_process();
    }

    /// The machine loses power (`SimDisk::power_loss`).
    pub fn power_loss(&self) {
        self.disk.borrow_mut().power_loss();
    }
}

/// An open file on a `SimDisk`. Invalid (EBADF) after a crash.
#[derive(Debug)]
pub struct SimFile {
    disk: Rc<RefCell<SimDisk>>,
    yields: Rc<Yields>,
    inode: u64,
    generation: u64,
    writable: bool,
}

fn read_only_error() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "file was opened read-only")
}

impl IoFile for SimFile {
    async fn read_exact_at(&self, mut buf: Vec<u8>, position: u64) -> BufResult<()> {
        let result = self.disk.borrow_mut().read(self.generation, self.inode, &mut buf, position);
        (result, buf)
    }

    async fn read_exact_uninit_at(&self, mut buf: Vec<u8>, len: usize, position: u64) -> BufResult<()> {
        // The simulated disk copies from its own bytes; zeroing first costs
        // the simulator nothing that matters and keeps one read path.
        buf.clear();
        buf.resize(len, 0);
        let result = self.disk.borrow_mut().read(self.generation, self.inode, &mut buf, position);
        (result, buf)
    }

    async fn write_all_at(&self, buf: Vec<u8>, position: u64) -> BufResult<()> {
        if !self.writable {
            return (Err(read_only_error()), buf);
        }
        self.yields.maybe().await;
        let result = self.disk.borrow_mut().write(self.generation, self.inode, &buf, position);
        (result, buf)
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.yields.maybe().await;
        self.disk.borrow_mut().sync_data(self.generation, self.inode)
    }

    async fn set_len(&self, size_bytes: u64) -> io::Result<()> {
        if !self.writable {
            return Err(read_only_error());
        }
        self.disk.borrow_mut().set_len(self.generation, self.inode, size_bytes)
    }

    async fn size_bytes(&self) -> io::Result<u64> {
        self.disk.borrow_mut().size_bytes(self.generation, self.inode)
    }
}

impl Io for SimIo {
    type File = SimFile;
    type Task = SimTask;

    fn now_ns(&self) -> u64 {
        self.executor.now_ns()
    }

    fn sleep(&self, duration_ns: u64) -> impl Future<Output = ()> {
        Sleep::new(self.executor.clone(), duration_ns)
    }

    fn entropy_u64(&self) -> u64 {
        self.entropy.borrow_mut().next_u64()
    }

    fn spawn<F>(&self, task: F) -> SimTask
    where
        F: Future<Output = ()> + 'static,
    {
        self.executor.spawn(task)
    }

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<SimFile> {
        let create = mode == OpenMode::ReadWriteCreate;
        let (inode, generation) = self.disk.borrow_mut().open(path, create)?;
        Ok(SimFile {
            disk: self.disk.clone(),
            yields: self.yields.clone(),
            inode,
            generation,
            writable: mode.writable(),
        })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.disk.borrow_mut().rename(from, to)
    }

    async fn exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        self.disk.borrow_mut().exchange(a, b)
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.disk.borrow_mut().remove(path)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.borrow_mut().sync_dir(dir)
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.disk.borrow_mut().list_dir(dir)
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.disk.borrow_mut().create_dir_all(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::DiskFaults;
    use std::cell::Cell;

    const DIR: &str = "/data";

    fn io_with_dir(seed: u64) -> SimIo {
        let io = SimIo::new(seed);
        block_on_ready(io.create_dir_all(Path::new(DIR))).unwrap();
        io
    }

    fn write(io: &SimIo, path: &str, data: &[u8], position: u64) -> SimFile {
        let file = block_on_ready(io.open(Path::new(path), OpenMode::ReadWriteCreate)).unwrap();
        let (result, _) = block_on_ready(file.write_all_at(data.to_vec(), position));
        result.unwrap();
        file
    }

    fn read_all(io: &SimIo, path: &str) -> io::Result<Vec<u8>> {
        let file = block_on_ready(io.open(Path::new(path), OpenMode::ReadOnly))?;
        let size = block_on_ready(file.size_bytes())?;
        let (result, buf) = block_on_ready(file.read_exact_at(vec![0; size as usize], 0));
        result.map(|()| buf)
    }

    fn no_crash_faults(io: &SimIo, lost_ppm: u32) {
        io.disk().faults = DiskFaults { crash_lost_ppm: lost_ppm, ..DiskFaults::default() };
    }

    #[test]
    fn reads_see_pending_writes_and_crash_loses_them() {
        let io = io_with_dir(1);
        let file = write(&io, "/data/a", b"durable", 0);
        block_on_ready(file.sync_data()).unwrap();
        block_on_ready(io.sync_dir(Path::new(DIR))).unwrap();
        let (result, _) = block_on_ready(file.write_all_at(b"PENDING".to_vec(), 0));
        result.unwrap();
        assert_eq!(read_all(&io, "/data/a").unwrap(), b"PENDING");
        no_crash_faults(&io, 1_000_000);
        io.crash();
        assert_eq!(read_all(&io, "/data/a").unwrap(), b"durable");
        // Handles from before the crash are dead.
        let (result, _) = block_on_ready(file.read_exact_at(vec![0; 1], 0));
        assert_eq!(result.unwrap_err().raw_os_error(), Some(9));
    }

    #[test]
    fn synced_writes_survive_crash() {
        let io = io_with_dir(2);
        let file = write(&io, "/data/a", b"hello", 0);
        block_on_ready(file.sync_data()).unwrap();
        block_on_ready(io.sync_dir(Path::new(DIR))).unwrap();
        io.disk().faults = DiskFaults { crash_lost_ppm: 1_000_000, ..DiskFaults::default() };
        io.crash();
        assert_eq!(read_all(&io, "/data/a").unwrap(), b"hello");
    }

    #[test]
    fn new_file_vanishes_without_dir_sync() {
        let io = io_with_dir(3);
        let file = write(&io, "/data/new", b"x", 0);
        block_on_ready(file.sync_data()).unwrap();
        io.crash();
        assert_eq!(read_all(&io, "/data/new").unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn rename_is_durable_only_after_dir_sync() {
        let io = io_with_dir(4);
        let old = write(&io, "/data/journal", b"old", 0);
        block_on_ready(old.sync_data()).unwrap();
        block_on_ready(io.sync_dir(Path::new(DIR))).unwrap();
        let tmp = write(&io, "/data/journal.tmp", b"new", 0);
        block_on_ready(tmp.sync_data()).unwrap();
        block_on_ready(io.rename(Path::new("/data/journal.tmp"), Path::new("/data/journal"))).unwrap();
        assert_eq!(read_all(&io, "/data/journal").unwrap(), b"new");
        io.crash();
        assert_eq!(read_all(&io, "/data/journal").unwrap(), b"old", "renamed-over file reappears");
        assert!(read_all(&io, "/data/journal.tmp").is_err(), "the unsynced tmp entry vanishes");

        let tmp = write(&io, "/data/journal.tmp", b"new", 0);
        block_on_ready(tmp.sync_data()).unwrap();
        block_on_ready(io.rename(Path::new("/data/journal.tmp"), Path::new("/data/journal"))).unwrap();
        block_on_ready(io.sync_dir(Path::new(DIR))).unwrap();
        io.crash();
        assert_eq!(read_all(&io, "/data/journal").unwrap(), b"new");
        assert_eq!(block_on_ready(io.list_dir(Path::new(DIR))).unwrap(), vec![PathBuf::from("/data/journal")]);
    }

    #[test]
    fn exchange_is_durable_only_after_dir_sync() {
        let io = io_with_dir(14);
        for (path, data) in [("/data/journal", b"old"), ("/data/journal.tmp", b"new")] {
            let file = write(&io, path, data, 0);
            block_on_ready(file.sync_data()).unwrap();
        }
        block_on_ready(io.sync_dir(Path::new(DIR))).unwrap();
        block_on_ready(io.exchange(Path::new("/data/journal.tmp"), Path::new("/data/journal"))).unwrap();
        assert_eq!(read_all(&io, "/data/journal").unwrap(), b"new");
        assert_eq!(read_all(&io, "/data/journal.tmp").unwrap(), b"old");
        io.power_loss();
        assert_eq!(read_all(&io, "/data/journal").unwrap(), b"old", "the exchange was not durable");
        assert_eq!(read_all(&io, "/data/journal.tmp").unwrap(), b"new");
        block_on_ready(io.exchange(Path::new("/data/journal.tmp"), Path::new("/data/journal"))).unwrap();
        block_on_ready(io.sync_dir(Path::new(DIR))).unwrap();
        io.power_loss();
        assert_eq!(read_all(&io, "/data/journal").unwrap(), b"new");
        assert_eq!(read_all(&io, "/data/journal.tmp").unwrap(), b"old");
        let missing = block_on_ready(io.exchange(Path::new("/data/journal"), Path::new("/data/none")));
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn torn_write_keeps_any_subset_of_sectors() {
        // Every seed tears (torn_ppm is 100%); the rule: whole 512-byte
        // sectors of the write, at least one, never all, in any pattern
        // (writeback order), not only a prefix.
        let mut patterns = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let io = io_with_dir(seed);
            let file = write(&io, "/data/a", &[0u8; 2048], 0);
            block_on_ready(file.sync_data()).unwrap();
            block_on_ready(io.sync_dir(Path::new(DIR))).unwrap();
            let (result, _) = block_on_ready(file.write_all_at(vec![0xAB; 2048], 0));
            result.unwrap();
            io.disk().faults = DiskFaults { crash_lost_ppm: 0, crash_torn_ppm: 1_000_000, ..DiskFaults::default() };
            io.crash();
            let bytes = read_all(&io, "/data/a").unwrap();
            let pattern: Vec<bool> = bytes
                .chunks(512)
                .map(|sector| {
                    assert!(sector.iter().all(|&b| b == sector[0]), "torn at sector boundaries only");
                    sector[0] == 0xAB
                })
                .collect();
            let kept = pattern.iter().filter(|&&kept| kept).count();
            assert!((1..4).contains(&kept), "torn: some but not all sectors");
            patterns.insert(pattern);
        }
        let prefixes = patterns.iter().filter(|p| p.windows(2).all(|w| w[0] || !w[1])).count();
        assert!(patterns.len() > prefixes, "some tear is not a prefix: {patterns:?}");
        assert!(SimIo::new(0).disk().counters().is_empty());
    }

    #[test]
    fn process_crash_keeps_the_page_cache_power_loss_does_not() {
        let io = io_with_dir(11);
        let file = write(&io, "/data/a", b"durable", 0);
        block_on_ready(file.sync_data()).unwrap();
        block_on_ready(io.sync_dir(Path::new(DIR))).unwrap();
        let (result, _) = block_on_ready(file.write_all_at(b"PENDING".to_vec(), 0));
        result.unwrap();
        write(&io, "/data/new", b"n", 0);
        no_crash_faults(&io, 1_000_000);
        io.crash_process();
        assert_eq!(read_all(&io, "/data/a").unwrap(), b"PENDING", "the page cache survives");
        assert_eq!(read_all(&io, "/data/new").unwrap(), b"n", "so do unsynced directory entries");
        let (result, _) = block_on_ready(file.read_exact_at(vec![0; 1], 0));
        assert_eq!(result.unwrap_err().raw_os_error(), Some(9), "the dead process's handles are gone");
        // Still pending, not durable: a power loss now takes it back.
        io.power_loss();
        assert_eq!(read_all(&io, "/data/a").unwrap(), b"durable");
        assert!(read_all(&io, "/data/new").is_err());
        // crash() draws between the two by process_crash_ppm.
        io.disk().faults = DiskFaults { process_crash_ppm: 500_000, ..DiskFaults::default() };
        for _ in 0..32 {
            io.crash();
        }
        let counters = io.disk().counters().clone();
        assert!(counters["crash_process"] > 1 && counters["crash"] > 1, "{counters:?}");
    }

    #[test]
    fn fsync_eio_drops_pending_writes_as_linux_does() {
        let io = io_with_dir(12);
        let file = write(&io, "/data/a", b"durable", 0);
        block_on_ready(file.sync_data()).unwrap();
        block_on_ready(io.sync_dir(Path::new(DIR))).unwrap();
        let (result, _) = block_on_ready(file.write_all_at(b"PENDING".to_vec(), 0));
        result.unwrap();
        io.disk().fail_next_sync();
        assert_eq!(block_on_ready(file.sync_data()).unwrap_err().raw_os_error(), Some(5));
        assert_eq!(read_all(&io, "/data/a").unwrap(), b"PENDING", "reads in this life still see the pages");
        // A retried fsync succeeds but makes nothing durable: the pages were
        // marked clean, not kept dirty.
        block_on_ready(file.sync_data()).unwrap();
        io.crash_process();
        assert_eq!(read_all(&io, "/data/a").unwrap(), b"PENDING", "the clean pages are still cached");
        io.power_loss();
        assert_eq!(read_all(&io, "/data/a").unwrap(), b"durable", "they never reached the device");
    }

    #[test]
    fn read_eio_is_sticky_until_rewritten_or_transient() {
        let io = io_with_dir(13);
        let file = write(&io, "/data/a", &[7u8; 1024], 0);
        io.disk().fail_sector_reads(Path::new("/data/a"), 700).unwrap();
        let (result, _) = block_on_ready(file.read_exact_at(vec![0; 10], 0));
        result.unwrap();
        for _ in 0..2 {
            let (result, _) = block_on_ready(file.read_exact_at(vec![0; 10], 600));
            assert_eq!(result.unwrap_err().raw_os_error(), Some(5), "sticky");
        }
        let (result, _) = block_on_ready(file.write_all_at(vec![9u8; 100], 512));
        result.unwrap();
        let (result, _) = block_on_ready(file.read_exact_at(vec![0; 10], 600));
        assert!(result.is_err(), "a partial write does not remap the sector");
        let (result, _) = block_on_ready(file.write_all_at(vec![9u8; 512], 512));
        result.unwrap();
        let (result, _) = block_on_ready(file.read_exact_at(vec![0; 10], 600));
        result.unwrap();
        io.disk().faults = DiskFaults { read_eio_ppm: 500_000, ..DiskFaults::default() };
        let outcomes: Vec<bool> =
            (0..32).map(|_| block_on_ready(file.read_exact_at(vec![0; 10], 0)).0.is_ok()).collect();
        assert!(outcomes.contains(&true) && outcomes.contains(&false), "transient: some reads fail, some succeed");
    }

    #[test]
    fn read_corruption_is_sticky_until_rewritten() {
        let io = io_with_dir(5);
        let file = write(&io, "/data/a", &[7u8; 1024], 0);
        io.disk().corrupt_sector(Path::new("/data/a"), 600).unwrap();
        let first = read_all(&io, "/data/a").unwrap();
        let second = read_all(&io, "/data/a").unwrap();
        assert_ne!(first, vec![7u8; 1024]);
        assert_ne!(first[600], 7, "rot lands on the byte asked for, anywhere in a sector");
        assert_eq!((first[600] ^ 7).count_ones(), 1, "one bit");
        assert_eq!(first, second, "the same bit stays flipped");
        assert_eq!(first[..512], [7u8; 512], "other sectors are clean");
        let (result, _) = block_on_ready(file.write_all_at(vec![7u8; 512], 512));
        result.unwrap();
        assert_eq!(read_all(&io, "/data/a").unwrap(), vec![7u8; 1024], "a rewrite heals the sector");
        assert_eq!(io.disk().counters()["read_corruption"], 1);
    }

    #[test]
    fn injected_write_and_sync_errors_are_eio_and_counted() {
        let io = io_with_dir(6);
        let file = write(&io, "/data/a", b"abc", 0);
        io.disk().fail_next_write();
        let (result, _) = block_on_ready(file.write_all_at(b"zzz".to_vec(), 0));
        assert_eq!(result.unwrap_err().raw_os_error(), Some(5));
        assert_eq!(read_all(&io, "/data/a").unwrap(), b"abc", "a failed write writes nothing");
        io.disk().fail_next_sync();
        assert_eq!(block_on_ready(file.sync_data()).unwrap_err().raw_os_error(), Some(5));
        io.disk().faults = DiskFaults { write_enospc_ppm: 1_000_000, ..DiskFaults::default() };
        let (result, _) = block_on_ready(file.write_all_at(b"zzz".to_vec(), 0));
        assert_eq!(result.unwrap_err().raw_os_error(), Some(28));
        let counters = io.disk().counters().clone();
        assert_eq!((counters["write_eio"], counters["sync_eio"], counters["write_enospc"]), (1, 1, 1));
    }

    #[test]
    fn misdirected_write_lands_elsewhere_sector_aligned() {
        let io = io_with_dir(7);
        let file = write(&io, "/data/a", &[0u8; 4096], 0);
        io.disk().faults = DiskFaults { misdirected_write_ppm: 1_000_000, ..DiskFaults::default() };
        let (result, _) = block_on_ready(file.write_all_at(vec![1u8; 512], 1024));
        result.unwrap();
        io.disk().faults = DiskFaults::default();
        let bytes = read_all(&io, "/data/a").unwrap();
        let start = bytes.iter().position(|&b| b == 1).expect("the write landed somewhere");
        assert_eq!(start % 512, 0);
        assert_ne!(start, 1024, "a misdirected write lands elsewhere");
        assert_eq!(bytes[1024..1536], [0u8; 512], "the intended range is untouched");
        assert_eq!(io.disk().counters()["misdirected_write"], 1);
    }

    /// A misdirected write lands inside the file: the device wrote wrong
    /// blocks, the file never grows (a journal near its end used to grow
    /// and then failed to open as `Truncated`). Armed for one file, it hits
    /// the next write to that file only, and remembers where it was meant.
    #[test]
    fn misdirected_write_never_extends_the_file() {
        let io = io_with_dir(9);
        let file = write(&io, "/data/a", &[0u8; 4096], 0);
        let other = write(&io, "/data/b", &[0u8; 1024], 0);
        for round in 0..64u64 {
            io.disk().misdirect_next_write_to(Path::new("/data/a"));
            let (result, _) = block_on_ready(other.write_all_at(vec![3u8; 512], 0));
            result.unwrap();
            let (result, _) = block_on_ready(file.write_all_at(vec![2u8; 1536], 4096 - 1536));
            result.unwrap();
            assert_eq!(read_all(&io, "/data/a").unwrap().len(), 4096, "round {round}: the file grew");
        }
        assert_eq!(io.disk().counters()["misdirected_write"], 64);
        assert_eq!(read_all(&io, "/data/b").unwrap()[..512], [3u8; 512], "only the armed file is misdirected");
        assert_eq!(io.disk().misdirected_ranges(Path::new("/data/a")).len(), 2 * 64, "meant for, landed on");
        assert_eq!(io.disk().misdirected_ranges(Path::new("/data/a"))[0], (4096 - 1536, 1536));
        // A write as long as the file has nowhere else to go.
        io.disk().misdirect_next_write_to(Path::new("/data/b"));
        let (result, _) = block_on_ready(other.write_all_at(vec![4u8; 1024], 0));
        result.unwrap();
        assert_eq!(read_all(&io, "/data/b").unwrap(), vec![4u8; 1024]);
    }

    #[test]
    fn crash_after_steps_halts_between_calls() {
        let io = io_with_dir(8);
        let file = write(&io, "/data/a", b"one", 0);
        io.disk().crash_after_steps(1);
        let (result, _) = block_on_ready(file.write_all_at(b"two".to_vec(), 0));
        result.unwrap();
        let (result, _) = block_on_ready(file.write_all_at(b"three".to_vec(), 0));
        assert!(result.is_err(), "the disk halted after one step");
        assert!(io.disk().is_halted());
        assert_eq!(read_all(&io, "/data/a").unwrap_err().kind(), io::ErrorKind::Other);
        io.crash();
        assert!(!io.disk().is_halted());
    }

    fn disk_after_ops(seed: u64) -> Vec<u8> {
        let io = io_with_dir(seed);
        io.disk().faults =
            DiskFaults { read_corruption_ppm: 100_000, misdirected_write_ppm: 100_000, ..DiskFaults::crash_only() };
        let file = write(&io, "/data/a", &[0u8; 8192], 0);
        block_on_ready(file.sync_data()).unwrap();
        block_on_ready(io.sync_dir(Path::new(DIR))).unwrap();
        for index in 0..16u64 {
            let (result, _) = block_on_ready(file.write_all_at(vec![index as u8 + 1; 1500], index * 500));
            result.unwrap();
        }
        io.crash();
        read_all(&io, "/data/a").unwrap()
    }

    #[test]
    fn same_seed_same_disk_bytes() {
        assert_eq!(disk_after_ops(42), disk_after_ops(42));
        assert!((0..8).any(|seed| disk_after_ops(seed) != disk_after_ops(42)), "seeds matter");
    }

    #[test]
    fn executor_orders_timers_and_catches_panics() {
        let io = SimIo::new(9);
        let log = Rc::new(RefCell::new(Vec::new()));
        for (name, delay_ns) in [("c", 300u64), ("a", 100), ("b", 200)] {
            let io2 = io.clone();
            let log = log.clone();
            drop(io.spawn(async move {
                io2.sleep(delay_ns).await;
                log.borrow_mut().push((name, io2.now_ns()));
            }));
        }
        let failing = io.spawn(async { panic!("shard exploded") });
        let done = Rc::new(Cell::new(None));
        let done2 = done.clone();
        let _joiner = io.spawn(async move { done2.set(Some(failing.await)) });
        assert!(io.run_until_idle(1_000));
        assert_eq!(*log.borrow(), vec![("a", 100), ("b", 200), ("c", 300)]);
        let failed = done.take().expect("joiner ran").unwrap_err();
        assert!(failed.reason.contains("shard exploded"));
        io.run_until(1_000);
        assert_eq!(io.now_ns(), 1_000);
        assert_ne!(io.entropy_u64(), io.entropy_u64());
        assert_eq!(SimIo::new(9).entropy_u64(), SimIo::new(9).entropy_u64());
    }

    fn interleaving(seed: u64) -> Vec<u32> {
        let io = SimIo::new(seed);
        let log = Rc::new(RefCell::new(Vec::new()));
        for task in 0..8u32 {
            let log = log.clone();
            drop(io.spawn(async move { log.borrow_mut().push(task) }));
        }
        assert!(io.run_until_idle(100));
        log.take()
    }

    #[test]
    fn ready_tasks_run_in_a_seed_chosen_order() {
        assert_eq!(interleaving(3), interleaving(3));
        assert!((0..8).any(|seed| interleaving(seed) != interleaving(3)), "seeds change the order");
        let mut order = interleaving(3);
        order.sort_unstable();
        assert_eq!(order, (0..8).collect::<Vec<_>>(), "every task ran once");
    }

    #[test]
    #[should_panic(expected = "pending")]
    fn block_on_ready_rejects_pending() {
        let io = SimIo::new(10);
        block_on_ready(io.sleep(5));
    }
}
