//! `SimIo`: the simulated implementation of `shoal_vsr::Io`.
//!
//! Owns nothing itself: it is a cheap `Clone` handle over a virtual clock and
//! seeded executor (`executor.rs`), a seeded entropy source, and one
//! replica's simulated disk (`disk.rs`).
//!
//! Storage latency lives here, in virtual time (`StorageLatency`): with a
//! `LatencyProfile` set, a write, a set_len, an fsync, a directory fsync and
//! a read each complete only after a latency drawn from the replica's own
//! seeded stream (fast, normal or slow disk, with an occasional long tail).
//! The node's storage futures then really wait on the executor's timers,
//! so the flushes of several groups (`shoal_shard::node::join`) overlap in
//! virtual time, and a crash can land while a write or fsync is in flight
//! (`block_on_io`): a write reaches the page cache when it is issued and is
//! in flight until it completes (a crash then loses or tears it as any
//! pending write); an fsync makes the file durable only when it completes
//! (a crash before that leaves its writes pending, lost or torn). Without a
//! profile (unit tests, the shard world) every call completes at once.
//!
//! Writes and fsyncs may also yield once before they touch the disk (a
//! seeded draw), as a real one returns to the event loop. Drive storage code
//! from outside a task with `block_on_ready` (no latency: polls until done)
//! or `block_on_io` (jumps the executor's clock to each completion).
//!
//! Must not touch the wall clock, OS entropy, threads or the real file system.

use std::cell::{Cell, RefCell};
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
const SEED_STREAM_LATENCY: u64 = 0x6c61_7465_6e63_7900;

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

/// How fast a simulated disk is (`LatencyProfile::of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskSpeed {
    /// An NVMe drive: fsync in tens to hundreds of microseconds.
    Fast,
    /// A SATA SSD: fsync in a fraction of a millisecond to a few.
    Normal,
    /// A busy or spinning disk: fsync in milliseconds.
    Slow,
}

impl DiskSpeed {
    pub const ALL: [DiskSpeed; 3] = [DiskSpeed::Fast, DiskSpeed::Normal, DiskSpeed::Slow];
}

/// A storage call never takes longer than this in virtual time, long tail
/// included: far below a view-change timeout, so a slow disk slows a
/// replica down without looking like a dead one to its peers.
pub const STORAGE_LATENCY_MAX_NS: u64 = 50_000_000;
/// A long-tail call takes up to this many times its drawn latency.
pub const LATENCY_TAIL_FACTOR_MAX: u64 = 40;

/// Virtual-time latencies of one disk. Reads are short: what the node
/// reads (its journal at a restart, recently written partition messages)
/// is mostly in the page cache, and a restart reads a journal slot by slot
/// (a thousand reads). Each kind of call draws uniformly
/// from its range `[min, max]` ns, and one call in `tail_ppm` per million
/// is a long-tail call (2 to `LATENCY_TAIL_FACTOR_MAX` times as long,
/// capped at `STORAGE_LATENCY_MAX_NS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyProfile {
    pub write_ns: (u64, u64),
    pub sync_ns: (u64, u64),
    pub read_ns: (u64, u64),
    pub tail_ppm: u32,
}

impl LatencyProfile {
    pub fn of(speed: DiskSpeed) -> LatencyProfile {
        match speed {
            DiskSpeed::Fast => LatencyProfile {
                write_ns: (2_000, 20_000),
                sync_ns: (20_000, 200_000),
                read_ns: (1_000, 10_000),
                tail_ppm: 1_000,
            },
            DiskSpeed::Normal => LatencyProfile {
                write_ns: (10_000, 100_000),
                sync_ns: (200_000, 2_000_000),
                read_ns: (2_000, 50_000),
                tail_ppm: 2_000,
            },
            DiskSpeed::Slow => LatencyProfile {
                write_ns: (50_000, 500_000),
                sync_ns: (2_000_000, 12_000_000),
                read_ns: (5_000, 200_000),
                tail_ppm: 5_000,
            },
        }
    }

    /// The same disk without its long tail (the liveness phase: no faults).
    pub fn without_tail(self) -> LatencyProfile {
        LatencyProfile { tail_ppm: 0, ..self }
    }
}

const _: () = assert!(LATENCY_TAIL_FACTOR_MAX >= 2);

/// The kinds of storage call that take time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IoKind {
    Write,
    Sync,
    Read,
}

/// Storage calls of one disk now in flight, by kind (`SimIo::in_flight`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoInFlight {
    pub writes: u32,
    pub syncs: u32,
    pub reads: u32,
}

impl IoInFlight {
    pub fn any(&self) -> bool {
        self.writes + self.syncs + self.reads > 0
    }
}

/// The latency model of one disk: its profile (none: every call is
/// instant), its own seeded stream (a latency draw never shifts the
/// entropy the protocol or the disk's faults draw), and what is in flight.
#[derive(Debug)]
struct StorageLatency {
    executor: Rc<Executor>,
    profile: Cell<Option<LatencyProfile>>,
    /// Set while the simulator itself reads the disk (checkers): no time passes.
    suspended: Cell<bool>,
    rng: RefCell<ChaCha8Rng>,
    in_flight: Cell<IoInFlight>,
}

/// Counts one call in flight until it completes or is dropped (a crash
/// dropped the future that waited on it).
struct InFlightGuard<'a> {
    latency: &'a StorageLatency,
    kind: IoKind,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.latency.count(self.kind, false);
    }
}

impl StorageLatency {
    fn new(executor: Rc<Executor>, seed: u64) -> Rc<StorageLatency> {
        Rc::new(StorageLatency {
            executor,
            profile: Cell::new(None),
            suspended: Cell::new(false),
            rng: RefCell::new(ChaCha8Rng::seed_from_u64(seed ^ SEED_STREAM_LATENCY)),
            in_flight: Cell::new(IoInFlight::default()),
        })
    }

    fn count(&self, kind: IoKind, up: bool) {
        let mut in_flight = self.in_flight.get();
        let counter = match kind {
            IoKind::Write => &mut in_flight.writes,
            IoKind::Sync => &mut in_flight.syncs,
            IoKind::Read => &mut in_flight.reads,
        };
        if up {
            *counter += 1;
        } else {
            *counter = counter.checked_sub(1).expect("a call completes once");
        }
        self.in_flight.set(in_flight);
    }

    /// This call's latency, or `None` when calls are instant.
    fn draw(&self, kind: IoKind) -> Option<u64> {
        let profile = self.profile.get().filter(|_| !self.suspended.get())?;
        let (min_ns, max_ns) = match kind {
            IoKind::Write => profile.write_ns,
            IoKind::Sync => profile.sync_ns,
            IoKind::Read => profile.read_ns,
        };
        assert!(0 < min_ns && min_ns <= max_ns, "a latency range is positive and ordered");
        let mut rng = self.rng.borrow_mut();
        let mut latency_ns = min_ns + rng.next_u64() % (max_ns - min_ns + 1);
        if rng.next_u64() % u64::from(crate::disk::PPM_MAX) < u64::from(profile.tail_ppm) {
            latency_ns *= 2 + rng.next_u64() % (LATENCY_TAIL_FACTOR_MAX - 1);
        }
        Some(latency_ns.min(STORAGE_LATENCY_MAX_NS))
    }

    /// Wait out one call's latency in virtual time (at once without a
    /// profile). A sync issued while another is in flight is the overlap
    /// the real backend gets from the kernel: marked.
    async fn wait(&self, kind: IoKind) {
        let Some(latency_ns) = self.draw(kind) else { return };

        if kind == IoKind::Sync && self.in_flight.get().syncs > 0 {
            shoal_vsr::marks::hit(shoal_vsr::marks::FSYNCS_OVERLAPPED);
        }
        self.count(kind, true);
        let _guard = InFlightGuard { latency: self, kind };
        Sleep::new(self.executor.clone(), latency_ns).await;
    }
}

/// How `block_on_io` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Driven<T> {
    Done(T),
    /// The armed crash landed: the future was dropped at its `wait`-th wait
    /// on storage, with these calls in flight.
    Crashed(IoInFlight),
}

/// A waker that notes it was woken: `block_on_io` polls again at once
/// after a yield, and jumps the clock only when nothing woke.
#[derive(Debug, Default)]
struct Noted(std::sync::atomic::AtomicBool);

impl std::task::Wake for Noted {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Poll `future` to completion on `io`'s clock: whenever it waits on
/// storage (nothing woke it), jump the executor's virtual time to the next
/// timer, the earliest completion in flight. `crash_at_wait`: an armed
/// crash; each wait on storage counts it down, and the wait that takes it
/// to zero drops the future there, with its calls in flight (the caller
/// crashes the disk). A count left when the future completes stays armed.
///
/// Only storage latencies may be timers here: a future that waits with no
/// timer pending waits on something that never comes (a bug, a panic).
pub fn block_on_io<F: Future>(io: &SimIo, future: F, crash_at_wait: &mut Option<u32>) -> Driven<F::Output> {
    let noted = std::sync::Arc::new(Noted::default());
    let waker = Waker::from(noted.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    for _ in 0..BLOCK_ON_POLLS_MAX {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Driven::Done(output);
        }
        if noted.0.swap(false, std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        if let Some(count) = crash_at_wait {
            assert!(*count > 0, "an armed crash counts down from one or more");
            *count -= 1;
            if *count == 0 {
                *crash_at_wait = None;
                let in_flight = io.in_flight();
                assert!(in_flight.any(), "a future waits only on storage in flight");
                return Driven::Crashed(in_flight);
            }
        }
        assert!(
            io.executor.fire_next_timer(u64::MAX),
            "block_on_io: the future waits, but no storage call is in flight"
        );
    }
    panic!("block_on_io: future still pending after {BLOCK_ON_POLLS_MAX} polls")
}

/// `block_on_io` with nothing armed: storage code run to completion.
pub fn block_on_timed<F: Future>(io: &SimIo, future: F) -> F::Output {
    match block_on_io(io, future, &mut None) {
        Driven::Done(output) => output,
        Driven::Crashed(_) => unreachable!("nothing was armed"),
    }
}

/// The simulated `Io` of one replica (or one shard of one).
#[derive(Debug, Clone)]
pub struct SimIo {
    executor: Rc<Executor>,
    entropy: Rc<RefCell<ChaCha8Rng>>,
    disk: Rc<RefCell<SimDisk>>,
    yields: Rc<Yields>,
    latency: Rc<StorageLatency>,
}

impl SimIo {
    /// A fresh simulation: its own clock, executor, entropy and disk.
    pub fn new(seed: u64) -> SimIo {
        let executor = Rc::new(Executor::new(seed ^ SEED_STREAM_EXECUTOR));
        SimIo {
            latency: StorageLatency::new(executor.clone(), seed),
            executor,
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
            latency: StorageLatency::new(self.executor.clone(), seed),
        }
    }

    /// Give this disk latencies in virtual time (`None`: instant calls).
    pub fn set_latency(&self, profile: Option<LatencyProfile>) {
        self.latency.profile.set(profile);
    }

    pub fn latency(&self) -> Option<LatencyProfile> {
        self.latency.profile.get()
    }

    /// Storage calls of this disk now in flight.
    pub fn in_flight(&self) -> IoInFlight {
        self.latency.in_flight.get()
    }

    /// Run `f` (the simulator's own look at the disk: a checker's read)
    /// with instant storage calls, so looking takes no virtual time and
    /// draws no latency.
    pub fn instant<R>(&self, f: impl FnOnce() -> R) -> R {
        let was = self.latency.suspended.replace(true);
        let result = f();
        self.latency.suspended.set(was);
        result
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
    latency: Rc<StorageLatency>,
    inode: u64,
    generation: u64,
    writable: bool,
}

impl Drop for SimFile {
    fn drop(&mut self) {
        self.disk.borrow_mut().close(self.generation);
    }
}

fn read_only_error() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "file was opened read-only")
}

impl IoFile for SimFile {
    async fn read_exact_at(&self, mut buf: Vec<u8>, position: u64) -> BufResult<()> {
        self.latency.wait(IoKind::Read).await;
        let result = self.disk.borrow_mut().read(self.generation, self.inode, &mut buf, position);
        (result, buf)
    }

    async fn write_all_at(&self, buf: Vec<u8>, position: u64) -> BufResult<()> {
        if !self.writable {
            return (Err(read_only_error()), buf);
        }
        self.yields.maybe().await;
        // In the page cache at once, complete (and so known to the caller)
        // only after its latency: a crash in between loses or tears it.
        let result = self.disk.borrow_mut().write(self.generation, self.inode, &buf, position);
        self.latency.wait(IoKind::Write).await;
        (result, buf)
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.yields.maybe().await;
        // Covers what was issued before it began, and is durable only when
        // it completes: a crash in flight leaves the file's writes pending.
        let fence = self.disk.borrow().sync_fence(self.inode);
        self.latency.wait(IoKind::Sync).await;
        self.disk.borrow_mut().sync_data(self.generation, self.inode, fence)
    }

    async fn evict_clean_pages(&self) -> io::Result<()> {
        self.disk.borrow_mut().evict_clean_pages(self.generation, self.inode)
    }

    async fn set_len(&self, size_bytes: u64) -> io::Result<()> {
        if !self.writable {
            return Err(read_only_error());
        }
        let result = self.disk.borrow_mut().set_len(self.generation, self.inode, size_bytes);
        self.latency.wait(IoKind::Write).await;
        result
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
            latency: self.latency.clone(),
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
        self.latency.wait(IoKind::Sync).await;
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
#[allow(clippy::disallowed_methods)] // these tests pin the bare reads' faults, retries left out
mod tests {
    use super::*;
    use crate::disk::DiskFaults;
    use std::cell::Cell;

    const DIR: &str = "/data";

    fn io_with_dir(seed: u64) -> SimIo {
        let io = SimIo::new(seed);
        block_on_ready(io.create_dir_all(Path::new(DIR))).unwrap();
        // A data dir that exists durably, as the operator's format leaves it.
        block_on_ready(io.sync_dir(Path::new("/"))).unwrap();
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

    /// `evict_clean_pages` is `POSIX_FADV_DONTNEED`: the pages a failed
    /// fsync left readable go (reads then see the device), pending writes
    /// stay, and `stale_cached_bytes` counts exactly the former.
    #[test]
    fn evicting_clean_pages_drops_what_a_failed_fsync_left_and_keeps_pending_writes() {
        let io = io_with_dir(15);
        let file = write(&io, "/data/a", b"durable-durable", 0);
        block_on_ready(file.sync_data()).unwrap();
        block_on_ready(io.sync_dir(Path::new(DIR))).unwrap();
        let (result, _) = block_on_ready(file.write_all_at(b"LOST".to_vec(), 0));
        result.unwrap();
        io.disk().fail_next_sync();
        assert!(block_on_ready(file.sync_data()).is_err());
        let (result, _) = block_on_ready(file.write_all_at(b"NEW".to_vec(), 8));
        result.unwrap();
        assert_eq!(read_all(&io, "/data/a").unwrap(), b"LOSTble-NEWable");
        assert_eq!(io.disk().stale_cached_bytes(Path::new("/data/a")), 4, "the four bytes the failed fsync dropped");
        block_on_ready(file.evict_clean_pages()).unwrap();
        assert_eq!(read_all(&io, "/data/a").unwrap(), b"durable-NEWable", "the device's bytes, and the dirty ones");
        assert_eq!(io.disk().stale_cached_bytes(Path::new("/data/a")), 0);
        block_on_ready(file.sync_data()).unwrap();
        io.power_loss();
        assert_eq!(read_all(&io, "/data/a").unwrap(), b"durable-NEWable", "what was read is what survives");
    }

    /// `fail_second_sync` lets one fsync succeed, then fails the next fsync
    /// of that same file (the second step of a promise), not another
    /// file's, and only once; and what it failed on is lost at the next
    /// power loss and reported as a lost write.
    #[test]
    fn the_second_fsync_of_a_file_fails_after_its_first_succeeds() {
        let io = io_with_dir(14);
        let records = write(&io, "/data/segment", b"records", 0);
        io.disk().fail_second_sync();
        block_on_ready(records.sync_data()).unwrap();
        let other = write(&io, "/data/other", b"other", 0);
        block_on_ready(other.sync_data()).expect("another file's fsync is not the armed one");
        block_on_ready(io.sync_dir(Path::new(DIR))).unwrap();
        let (result, _) = block_on_ready(records.write_all_at(b"MARKER".to_vec(), 0));
        result.unwrap();
        assert_eq!(block_on_ready(records.sync_data()).unwrap_err().raw_os_error(), Some(5));
        assert_eq!(io.disk().counters()["sync_eio_second"], 1);
        block_on_ready(records.sync_data()).expect("it fails once");
        assert_eq!(read_all(&io, "/data/segment").unwrap(), b"MARKERs", "the page cache still holds the marker");
        assert_eq!(io.disk().take_lost_writes().into_keys().collect::<Vec<_>>(), vec![PathBuf::from("/data/segment")]);
        io.power_loss();
        assert_eq!(read_all(&io, "/data/segment").unwrap(), b"records", "the marker never reached the device");
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

    /// With a profile, a write and an fsync each take virtual time drawn
    /// from their ranges; `block_on_io` jumps the clock to each completion.
    #[test]
    fn storage_calls_take_virtual_time_with_a_profile() {
        let io = io_with_dir(20);
        let profile = LatencyProfile::of(DiskSpeed::Slow).without_tail();
        io.set_latency(Some(profile));
        let file = block_on_ready(io.open(Path::new("/data/a"), OpenMode::ReadWriteCreate)).unwrap();
        let before_ns = io.now_ns();
        let (result, _) = block_on_timed(&io, file.write_all_at(b"abc".to_vec(), 0));
        result.unwrap();
        let write_ns = io.now_ns() - before_ns;
        assert!((profile.write_ns.0..=profile.write_ns.1).contains(&write_ns), "write took {write_ns} ns");
        block_on_timed(&io, file.sync_data()).unwrap();
        let sync_ns = io.now_ns() - before_ns - write_ns;
        assert!((profile.sync_ns.0..=profile.sync_ns.1).contains(&sync_ns), "fsync took {sync_ns} ns");
        assert!(!io.in_flight().any(), "nothing left in flight");
        // Looking takes no time.
        let now_ns = io.now_ns();
        assert_eq!(io.instant(|| read_all(&io, "/data/a")).unwrap(), b"abc");
        assert_eq!(io.now_ns(), now_ns);
    }

    /// An armed crash lands at the named wait, with the call in flight: an
    /// fsync in flight made nothing durable, so a power loss loses or tears
    /// the write; two fsyncs of a join are in flight at once.
    #[test]
    fn a_crash_lands_with_an_fsync_in_flight() {
        let io = io_with_dir(21);
        io.set_latency(Some(LatencyProfile::of(DiskSpeed::Normal).without_tail()));
        let a = block_on_ready(io.open(Path::new("/data/a"), OpenMode::ReadWriteCreate)).unwrap();
        let b = block_on_ready(io.open(Path::new("/data/b"), OpenMode::ReadWriteCreate)).unwrap();
        block_on_timed(&io, io.sync_dir(Path::new(DIR))).unwrap();
        let _ = shoal_vsr::marks::take();
        async fn flush(file: &SimFile, byte: u8) {
            let (result, _) = file.write_all_at(vec![byte; 1024], 0).await;
            result.unwrap();
            file.sync_data().await.unwrap();
        }
        let joined = shoal_shard::node::join::join_in_order(vec![flush(&a, 1), flush(&b, 2)]);
        // Waits 1 and 2: the two writes; wait 3: both fsyncs in flight.
        let mut armed = Some(3);
        match block_on_io(&io, joined, &mut armed) {
            Driven::Crashed(in_flight) => assert_eq!(in_flight, IoInFlight { writes: 0, syncs: 2, reads: 0 }),
            Driven::Done(_) => panic!("the armed crash did not land"),
        }
        assert_eq!(armed, None, "a crash lands once");
        assert!(!io.in_flight().any(), "the dropped calls left nothing counted");
        assert_eq!(shoal_vsr::marks::take().get(shoal_vsr::marks::FSYNCS_OVERLAPPED), Some(&1));
        io.disk().faults = DiskFaults { crash_lost_ppm: 1_000_000, ..DiskFaults::default() };
        io.power_loss();
        assert_eq!(io.instant(|| read_all(&io, "/data/a")).unwrap(), b"", "the fsync in flight made nothing durable");
    }

    /// An fsync covers what was issued before it began: a write issued while
    /// it runs reads back at once but stays pending, so a power loss after
    /// that fsync returned still loses it (as on Linux); the next fsync
    /// covers it.
    #[test]
    fn a_write_issued_during_an_fsync_is_not_covered_by_it() {
        let io = io_with_dir(22);
        io.set_latency(Some(LatencyProfile::of(DiskSpeed::Normal).without_tail()));
        let file = block_on_ready(io.open(Path::new("/data/a"), OpenMode::ReadWriteCreate)).unwrap();
        block_on_timed(&io, io.sync_dir(Path::new(DIR))).unwrap();
        let (result, _) = block_on_timed(&io, file.write_all_at(vec![1; 512], 0));
        result.unwrap();
        let sync: std::pin::Pin<Box<dyn Future<Output = io::Result<()>>>> = Box::pin(file.sync_data());
        let during: std::pin::Pin<Box<dyn Future<Output = io::Result<()>>>> = Box::pin(async {
            // Issued once the fsync has begun and waits for its latency.
            io.sleep(1).await;
            let (result, _) = file.write_all_at(vec![2; 512], 512).await;
            result
        });
        for result in block_on_timed(&io, shoal_shard::node::join::join_in_order(vec![sync, during])).outputs {
            result.unwrap();
        }
        assert_eq!(io.instant(|| read_all(&io, "/data/a")).unwrap().len(), 1024, "reads see both writes");
        assert_eq!(io.disk().counters().get("sync_left_later_writes"), Some(&1));
        io.disk().faults = DiskFaults { crash_lost_ppm: 1_000_000, ..DiskFaults::default() };
        io.power_loss();
        assert_eq!(io.instant(|| read_all(&io, "/data/a")).unwrap(), vec![1; 512], "only the first write was covered");
    }

    #[test]
    #[should_panic(expected = "pending")]
    fn block_on_ready_rejects_pending() {
        let io = SimIo::new(10);
        block_on_ready(io.sleep(5));
    }
}
