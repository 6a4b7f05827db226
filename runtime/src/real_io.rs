//! `RealIo`: the real world behind `shoal_vsr::Io`, on one compio runtime per thread.
//!
//! Owns the choice of compio driver, the monotonic clock of one shard, its
//! entropy source, task spawning and positional file I/O with owned buffers.
//! Must not be shared across threads: every `RealIo` belongs to the thread whose
//! compio runtime created it (it is `!Send` by construction, through `Rc`).
//!
//! # Driver selection (io_uring, with polling as fallback)
//!
//! The root `Cargo.toml` enables compio's `polling` feature next to its default
//! `io-uring` one. With both, compio-driver 0.12 builds its *fusion* driver
//! (`compio_driver::sys::driver::fusion`): when no driver type is forced it
//! probes io_uring (`io_uring_setup` + `IORING_REGISTER_PROBE`) and checks that
//! every opcode it needs is supported; if the probe fails (the kernel is too
//! old, `kernel.io_uring_disabled` is set, or a seccomp filter rejects the
//! syscalls, as Docker's default profile does) or the ring cannot be created,
//! it builds the `polling` (epoll) driver instead and logs a warning. compio
//! itself reads no environment variable for this; `ProactorBuilder::driver_type`
//! forces one driver and then never falls back.
//!
//! `RealIo` exposes this as [`DriverChoice`]: `Auto` (the default: io_uring,
//! falling back to polling), `IoUring` (fail if io_uring is unavailable) and
//! `Polling`. The operator chooses with the environment variable
//! [`DRIVER_ENV_VAR`] (`auto`, `io_uring`, `polling`); [`build_runtime`] logs
//! which driver actually runs, and [`RealIo::driver_name`] reports it.
//!
//! # Entropy
//!
//! Each `RealIo` owns a SplitMix64 generator seeded once, at construction, from
//! the operating system: `std::hash::RandomState` draws its SipHash keys from
//! the OS (getrandom) the first time a thread uses it, and we hash the wall
//! clock, the process id and the thread id with it. Good enough for ids and
//! jitter; not a cryptographic source and never used as one.

use std::cell::Cell;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use compio::buf::{BufResult as CompioBufResult, IntoInner, IoBuf};
use compio::driver::{DriverType, ProactorBuilder};
use compio::io::AsyncReadAtExt;
use compio::runtime::{JoinError, JoinHandle, Runtime};
use shoal_vsr::io::{BufResult, Io, IoFile, OpenMode, TaskFailed};

/// Environment variable that selects the compio driver: `auto` (default),
/// `io_uring` or `polling`.
pub const DRIVER_ENV_VAR: &str = "SHOAL_IO_DRIVER";

/// A write at least this large yields to the runtime once before its
/// `pwrite` blocks the shard (see `RealFile::write_all_at`). A 1 MiB copy
/// into the page cache takes 0.3-1 ms on the development VM; below this size
/// the copy is shorter than what a yield's turn of the runtime costs.
pub const WRITE_YIELD_BYTES_MIN: usize = 64 * 1024;

/// Which compio driver a shard's runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriverChoice {
    /// io_uring when the kernel and any seccomp filter permit it, else polling.
    #[default]
    Auto,
    /// io_uring or nothing: building the runtime fails when it is not permitted.
    IoUring,
    /// The readiness-based polling (epoll) driver; file I/O runs on compio's
    /// blocking thread pool.
    Polling,
}

/// A driver name that is not one of `auto`, `io_uring`, `polling`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown I/O driver {given:?}: set {DRIVER_ENV_VAR} to `auto`, `io_uring` or `polling`")]
pub struct UnknownDriver {
    pub given: String,
}

impl std::str::FromStr for DriverChoice {
    type Err = UnknownDriver;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(DriverChoice::Auto),
            "io_uring" | "io-uring" | "iouring" | "uring" => Ok(DriverChoice::IoUring),
            "polling" | "poll" | "epoll" => Ok(DriverChoice::Polling),
            _ => Err(UnknownDriver { given: text.to_string() }),
        }
    }
}

impl DriverChoice {
    /// The choice in [`DRIVER_ENV_VAR`], `Auto` when it is unset.
    pub fn from_env() -> Result<DriverChoice, UnknownDriver> {
        match std::env::var(DRIVER_ENV_VAR) {
            Ok(text) => text.parse(),
            Err(_) => Ok(DriverChoice::Auto),
        }
    }
}

/// The compio runtime of one thread could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "io_uring was required ({DRIVER_ENV_VAR}=io_uring) but could not be set up: {source}; \
         allow io_uring (kernel.io_uring_disabled=0, seccomp profile) or set {DRIVER_ENV_VAR}=auto"
    )]
    IoUringUnavailable { source: io::Error },
    #[error("could not build the compio runtime with the {choice:?} driver: {source}")]
    Build { choice: DriverChoice, source: io::Error },
    #[error(transparent)]
    UnknownDriver(#[from] UnknownDriver),
}

/// Human-readable name of a compio driver type.
pub fn driver_name(driver: DriverType) -> &'static str {
    match driver {
        DriverType::IoUring => "io_uring",
        DriverType::Poll => "polling",
        DriverType::IOCP => "iocp",
    }
}

/// Build the compio runtime for the current thread with `choice`, logging the
/// driver that actually runs (under `Auto` compio may have fallen back).
pub fn build_runtime(choice: DriverChoice) -> Result<Runtime, RuntimeError> {
    let mut proactor = ProactorBuilder::new();
    match choice {
        DriverChoice::Auto => {}
        DriverChoice::IoUring => {
            proactor.driver_type(DriverType::IoUring);
        }
        DriverChoice::Polling => {
            proactor.driver_type(DriverType::Poll);
        }
    }
    let built = Runtime::builder().with_proactor(proactor).build();
    let runtime = match (choice, built) {
        (_, Ok(runtime)) => runtime,
        (DriverChoice::IoUring, Err(source)) => return Err(RuntimeError::IoUringUnavailable { source }),
        (DriverChoice::Auto, Err(error)) => {
            // compio already falls back when the probe fails; this second chance
            // covers a ring that probes fine but then fails to build in a way
            // compio does not treat as recoverable.
            tracing::warn!(%error, "io_uring runtime failed to build; falling back to the polling driver");
            let mut proactor = ProactorBuilder::new();
            proactor.driver_type(DriverType::Poll);
            Runtime::builder()
                .with_proactor(proactor)
                .build()
                .map_err(|source| RuntimeError::Build { choice: DriverChoice::Polling, source })?
        }
        (DriverChoice::Polling, Err(source)) => return Err(RuntimeError::Build { choice, source }),
    };
    let driver = runtime.driver_type();
    if choice == DriverChoice::Auto && driver != DriverType::IoUring {
        tracing::warn!(driver = driver_name(driver), "io_uring is not permitted here; using the fallback driver");
    } else {
        tracing::debug!(driver = driver_name(driver), ?choice, "compio runtime built");
    }
    Ok(runtime)
}

/// Per-shard real I/O. Cheap to clone (an `Rc`); `!Send`.
#[derive(Debug, Clone)]
pub struct RealIo {
    inner: Rc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start: Instant,
    entropy_state: Cell<u64>,
    driver: DriverType,
    /// Storage: `sync_data` calls of this shard's files that have begun and
    /// not finished (see `RealFile::sync_data`).
    syncs_running: Cell<usize>,
    /// Whether a lone fdatasync may run on the shard's own thread.
    inline_sync: Cell<bool>,
}

impl RealIo {
    /// A `RealIo` for the compio runtime running on this thread.
    ///
    /// Panics when called outside a compio runtime (`Runtime::block_on`).
    // No `Default`: a default value would hide that a runtime must be running.
    #[allow(clippy::new_without_default)]
    pub fn new() -> RealIo {
        let driver = Runtime::with_current(|runtime| runtime.driver_type());
        RealIo::with_seed(driver, os_entropy_seed())
    }

    fn with_seed(driver: DriverType, seed: u64) -> RealIo {
        RealIo {
            inner: Rc::new(Inner {
                start: Instant::now(),
                entropy_state: Cell::new(seed),
                driver,
                syncs_running: Cell::new(0),
                inline_sync: Cell::new(true),
            }),
        }
    }

    /// Whether an fdatasync that is the only one this shard runs may block
    /// the shard's thread instead of going through io_uring (on by default;
    /// see `RealFile::sync_data`). The server's serving loop chooses it
    /// before each flush starts: on only for a lone replica whose clients
    /// keep one request at a time in flight, never on a shard whose thread
    /// others depend on while it waits (the connection shard of a process
    /// with several shards: it reads and writes every socket).
    pub fn set_inline_sync(&self, allowed: bool) {
        self.inner.inline_sync.set(allowed);
    }

    /// The compio driver behind this runtime: `io_uring` or `polling`.
    pub fn driver_name(&self) -> &'static str {
        driver_name(self.inner.driver)
    }
}

/// Hash wall clock, pid and thread id with a `RandomState`, whose keys come
/// from the operating system's random source.
fn os_entropy_seed() -> u64 {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    let wall_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    hasher.write_u128(wall_ns);
    hasher.write_u32(std::process::id());
    hasher.write(format!("{:?}", std::thread::current().id()).as_bytes());
    hasher.finish()
}

/// SplitMix64: one add and a mixing function; full period over u64.
fn splitmix64(state: &Cell<u64>) -> u64 {
    let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
    state.set(next);
    let mut z = next;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A spawned compio task. Awaiting it joins the task; dropping it cancels the
/// task (compio's `JoinHandle` semantics), so keep it while the task must run.
#[derive(Debug)]
pub struct RealTask {
    handle: JoinHandle<()>,
}

impl Future for RealTask {
    type Output = Result<(), TaskFailed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.handle).poll(cx).map(|result| match result {
            Ok(()) => Ok(()),
            Err(JoinError::Cancelled) => Err(TaskFailed { reason: "cancelled".to_string() }),
            Err(JoinError::Panicked(payload)) => {
                Err(TaskFailed { reason: format!("panicked: {}", panic_message(payload.as_ref())) })
            }
        })
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// One open file of a `RealIo`.
///
/// Writes go to the page cache with a plain `pwrite` on the shard's own
/// thread; reads, `fdatasync` (unless it runs alone) and the rest go
/// through compio (io_uring).
/// Why: ext4 cannot take a buffered write without blocking (`IOCB_NOWAIT`
/// fails), so io_uring hands every one to an `iou-wrk` kernel thread: a
/// wake-up and two context switches per write, and on a busy 2-core
/// machine a wait for a core. A buffered write only copies into the page
/// cache (the preallocated journal needs no block allocation), which is
/// what that worker would do anyway; the device work is in `fdatasync`.
/// A write may still block the shard when the kernel throttles dirty pages
/// (`balance_dirty_pages`), as it would block the worker: the fdatasync per
/// batch bounds how much is dirty.
///
/// `fdatasync` is punted by io_uring to an `iou-wrk` thread too, always
/// (io_uring has no non-blocking fsync). When it is the only fsync the
/// shard has running, `sync_data` runs it on the shard's thread instead
/// (see there): the shard would only wait for it anyway, and the hop to the
/// worker and back cost about 30 µs per fsync on the 2-core development VM
/// (`cargo xtask bench journal --dir /dev/shm`), next to a 140–250 µs fsync.
#[derive(Debug)]
pub struct RealFile {
    file: compio::fs::File,
    /// The same open file description (a `dup` taken at open), for the
    /// synchronous page-cache writes and a lone fdatasync; `None` when
    /// opened read-only.
    writer: Option<std::fs::File>,
    mode: OpenMode,
    /// The shard's `RealIo` state: how many fsyncs run, and the policy.
    shared: Rc<Inner>,
}

/// Counts one running `sync_data` for as long as it lives (a cancelled
/// future still stops counting).
struct SyncRunning<'a>(&'a Cell<usize>);

impl<'a> SyncRunning<'a> {
    fn begin(count: &'a Cell<usize>) -> SyncRunning<'a> {
        count.set(count.get() + 1);
        SyncRunning(count)
    }
}

impl Drop for SyncRunning<'_> {
    fn drop(&mut self) {
        debug_assert!(self.0.get() > 0, "every running sync was counted");
        self.0.set(self.0.get() - 1);
    }
}

/// Wait for one round of the runtime: every task woken before this call
/// has run, and the driver has submitted what they queued (a socket write of
/// the prepare this shard broadcasts) before the caller blocks the thread.
/// `yield_once` is not enough: whoever polls the caller may poll it again in
/// the same pass (the node polls a flush's fsync when it starts it and again
/// while it waits), so its yield never reaches the runtime. A spawned task
/// goes to the back of the run queue, and its end wakes the caller only from
/// the runtime's own pass; the driver's poll (which submits) follows it.
async fn runtime_round() {
    // A cancelled or panicked marker task still means the runtime ran a pass.
    let _ = compio::runtime::spawn(async {}).await;
}

fn read_only_error() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "file was opened read-only")
}

impl RealFile {
    /// `posix_fadvise` on this file's descriptor, on the shard's thread:
    /// the writer's when there is one (the same open file description).
    fn fadvise(&self, offset: i64, len: i64, advice: nix::fcntl::PosixFadviseAdvice) -> nix::Result<()> {
        match self.writer.as_ref() {
            Some(writer) => nix::fcntl::posix_fadvise(writer, offset, len, advice),
            None => nix::fcntl::posix_fadvise(&self.file, offset, len, advice),
        }
    }
}

impl IoFile for RealFile {
    async fn read_exact_at(&self, buf: Vec<u8>, position: u64) -> BufResult<()> {
        let len = buf.len();
        if len == 0 {
            return (Ok(()), buf);
        }
        // compio reads into a buffer's whole capacity; slicing to 0..len makes
        // it fill exactly the caller's `len` bytes.
        let CompioBufResult(result, slice) = self.file.read_exact_at(buf.slice(0..len), position).await;
        let mut buf = slice.into_inner();
        if result.is_err() {
            // A failed read may have shortened the vector; give back the length
            // the caller asked for (contents unspecified, as in std).
            buf.resize(len, 0);
        }
        debug_assert_eq!(buf.len(), len);
        (result, buf)
    }

    async fn read_exact_uninit_at(&self, mut buf: Vec<u8>, len: usize, position: u64) -> BufResult<()> {
        buf.clear();
        if len == 0 {
            return (Ok(()), buf);
        }
        buf.reserve_exact(len);
        // An empty vector sliced to 0..len: compio reads into the spare
        // capacity and sets the length to what it filled, no zeroing first.
        let CompioBufResult(result, slice) = self.file.read_exact_at(buf.slice(0..len), position).await;
        let buf = slice.into_inner();
        debug_assert!(result.is_err() || buf.len() == len);
        (result, buf)
    }

    /// A plain `pwrite` on the shard's thread (see the type's doc). A large
    /// one first yields once, so that what the node already asked to send
    /// leaves before the copy blocks the thread: the replies a commit queued
    /// before the partition log's write of the same messages, the prepare a
    /// primary broadcasts before its own journal write of it (the writers
    /// are tasks of this runtime, which run when the node yields).
    async fn write_all_at(&self, buf: Vec<u8>, position: u64) -> BufResult<()> {
        if !self.mode.writable() {
            return (Err(read_only_error()), buf);
        }
        let Some(writer) = self.writer.as_ref() else { return (Err(read_only_error()), buf) };
        if buf.len() >= WRITE_YIELD_BYTES_MIN {
            shoal_shard::node::join::yield_once().await;
        }
        let result = std::os::unix::fs::FileExt::write_all_at(writer, &buf, position);
        (result, buf)
    }

    /// `pwritev` on the shard's thread, the parts as they are (a body is
    /// not copied into a joined buffer), with `write_all_at`'s yield before
    /// a large one; at most `IOV_MAX` parts a call, and a short write goes
    /// on from where it stopped.
    async fn write_all_parts_at(&self, parts: &[&[u8]], position: u64) -> io::Result<()> {
        let Some(writer) = self.writer.as_ref().filter(|_| self.mode.writable()) else {
            return Err(read_only_error());
        };
        if parts.iter().map(|part| part.len()).sum::<usize>() >= WRITE_YIELD_BYTES_MIN {
            shoal_shard::node::join::yield_once().await;
        }
        pwritev_all(writer, parts, position)
    }

    /// fdatasync. Alone, on the shard's thread; with others, through
    /// io_uring so that they overlap in the kernel (several groups of a
    /// shard flushing in one turn: the node joins their futures, and the
    /// device merges concurrent cache flushes).
    ///
    /// Alone means: after one round of the runtime (`runtime_round`), no
    /// other fsync of this shard has begun. The round lets the joined
    /// futures of the other groups reach their own `sync_data` first, and
    /// lets the runtime run the tasks the turn woke (the writer of a reply
    /// or of a prepare the primary broadcasts) and submit their socket
    /// writes: nothing that is already asked to leave waits behind the
    /// fsync. (A plain yield did not do it: the node polls a flush's fsync
    /// when it starts it and again while it waits, in one pass, so the
    /// yield never reached the runtime, and a primary's prepare left only
    /// after its own two fsyncs; session 34, read off `strace`.) What
    /// arrives meanwhile waits in the socket buffers, which is why the
    /// server allows it only while its node is lightly loaded
    /// (`set_inline_sync`).
    async fn sync_data(&self) -> io::Result<()> {
        let _running = SyncRunning::begin(&self.shared.syncs_running);
        if let (true, Some(writer)) = (self.shared.inline_sync.get(), self.writer.as_ref()) {
            runtime_round().await;
            if self.shared.syncs_running.get() == 1 {
                return writer.sync_data();
            }
        }
        self.file.sync_data().await
    }

    // sync_file_range has no safe wrapper in nix or std.
    #[allow(unsafe_code)]
    fn start_writeback(&self, position: u64, len_bytes: u64) {
        use std::os::fd::AsRawFd;
        let Some(writer) = self.writer.as_ref() else { return };
        let (Ok(offset), Ok(len)) = (i64::try_from(position), i64::try_from(len_bytes)) else { return };
        // SAFETY: a valid open descriptor this file owns; the call only
        // queues writeback of its pages and touches no memory of ours.
        let result = unsafe { libc::sync_file_range(writer.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
        // A hint: a failure (an old kernel, a file system without it) costs
        // only the head start; the next sync_data reports real errors.
        if result != 0 {
            tracing::trace!(error = %io::Error::last_os_error(), "sync_file_range hint refused");
        }
    }

    /// `posix_fadvise(POSIX_FADV_WILLNEED)`, on the shard's thread: it
    /// queues the reads and returns (it may wait for a free request slot,
    /// never for the data).
    fn prefetch(&self, position: u64, len_bytes: u64) {
        let (Ok(offset), Ok(len)) = (i64::try_from(position), i64::try_from(len_bytes)) else { return };
        // A hint: refused, the reads that follow only wait longer.
        if let Err(error) = self.fadvise(offset, len, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED) {
            tracing::trace!(%error, "posix_fadvise(WILLNEED) hint refused");
        }
    }

    /// `posix_fadvise(POSIX_FADV_DONTNEED)` over the whole file, on the
    /// shard's thread (no I/O: it drops clean pages and starts writeback of
    /// dirty ones, which stay). Best effort on Linux for a page someone
    /// holds (mapped, locked, under writeback); the files it is for are
    /// never mapped, and the caller has just fsynced them.
    async fn evict_clean_pages(&self) -> io::Result<()> {
        self.fadvise(0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED).map_err(io::Error::from)
    }

    async fn set_len(&self, size_bytes: u64) -> io::Result<()> {
        if !self.mode.writable() {
            return Err(read_only_error());
        }
        self.file.set_len(size_bytes).await
    }

    async fn size_bytes(&self) -> io::Result<u64> {
        // fstat inline (see `open`); a read-only file asks through compio.
        match &self.writer {
            Some(writer) => Ok(writer.metadata()?.len()),
            None => Ok(self.file.metadata().await?.len()),
        }
    }
}

/// Parts one `pwritev` takes at most (Linux's `IOV_MAX`).
const PWRITEV_PARTS_MAX: usize = 1024;

/// Write every byte of `parts` from `position`, with as few `pwritev`
/// calls as the kernel allows.
fn pwritev_all<'p>(file: &std::fs::File, parts: &[&'p [u8]], position: u64) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'p>> = Vec::with_capacity(parts.len());
    for part in parts.iter().copied().filter(|part| !<[u8]>::is_empty(part)) {
        slices.push(io::IoSlice::new(part));
    }
    let mut remaining = &mut slices[..];
    let mut at = position;
    while !remaining.is_empty() {
        let batch = remaining.len().min(PWRITEV_PARTS_MAX);
        let offset = i64::try_from(at).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past i64"))?;
        let written = match nix::sys::uio::pwritev(file, &remaining[..batch], offset) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "pwritev wrote nothing")),
            Ok(written) => written,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(io::Error::from(errno)),
        };
        at += written as u64;
        io::IoSlice::advance_slices(&mut remaining, written);
    }
    Ok(())
}

impl Io for RealIo {
    type File = RealFile;
    type Task = RealTask;

    fn now_ns(&self) -> u64 {
        // u64 nanoseconds last 584 years past the start of this RealIo.
        u64::try_from(self.inner.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    async fn sleep(&self, duration_ns: u64) {
        compio::time::sleep(Duration::from_nanos(duration_ns)).await;
    }

    fn entropy_u64(&self) -> u64 {
        splitmix64(&self.inner.entropy_state)
    }

    fn spawn<F>(&self, task: F) -> RealTask
    where
        F: Future<Output = ()> + 'static,
    {
        RealTask { handle: compio::runtime::spawn(task) }
    }

    /// Buffered I/O, deliberately without O_DIRECT: storage code never trusts
    /// the page cache at open instead (the journal fdatasyncs the file and its
    /// directory, and rewrites what it cannot vouch for before syncing; small
    /// files are settled the same way). See `shoal_vsr::journal`'s module doc
    /// for the choice. fdatasync works on a read-only descriptor on Linux, so
    /// a read-only open settles too.
    ///
    /// `openat` on the shard's own thread, like the writes: io_uring hands
    /// every open to an `iou-wrk` thread (an open may block), and on a busy
    /// 2-core machine that hop took 1.7 ms per open typically and up to
    /// 20 ms for a ring's first (a compaction's stage opens its spare
    /// twice); an open of a file in a cached directory takes microseconds.
    // compio has no safe way to adopt a std file.
    #[allow(unsafe_code)]
    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<RealFile> {
        use std::os::fd::{FromRawFd, IntoRawFd};
        let mut options = std::fs::OpenOptions::new();
        match mode {
            OpenMode::ReadWriteCreate => options.read(true).write(true).create(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::ReadOnly => options.read(true),
        };
        let opened = options.open(path)?;
        let writer = if mode.writable() { Some(opened.try_clone()?) } else { None };
        // SAFETY: the descriptor was just opened and is owned by nothing
        // else: `into_raw_fd` gave up `opened`'s ownership of it.
        let file = unsafe { compio::fs::File::from_raw_fd(opened.into_raw_fd()) };
        Ok(RealFile { file, writer, mode, shared: self.inner.clone() })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        compio::fs::rename(from, to).await
    }

    async fn exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        // renameat2(RENAME_EXCHANGE), Linux 3.15+ on ext4, xfs, btrfs, tmpfs.
        // compio has no async form; like `list_dir`, it is one metadata
        // syscall done inline (it never waits for the device: the directory
        // fsync that makes it durable is `sync_dir`, asynchronous).
        use nix::errno::Errno;
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => Ok(()),
            // EINVAL: the file system does not implement the flag; ENOSYS:
            // the kernel does not know renameat2 (or a seccomp filter says so).
            Err(Errno::EINVAL | Errno::ENOSYS) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("cannot exchange {} and {}: RENAME_EXCHANGE is not supported here", a.display(), b.display()),
            )),
            Err(errno) => Err(io::Error::from(errno)),
        }
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        compio::fs::remove_file(path).await
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // Opening a directory read-only and fsyncing it makes the directory
        // entries (creates, renames, removes) durable on Linux file systems.
        let dir = compio::fs::File::open(dir).await?;
        dir.sync_all().await
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        // compio has no async readdir; a directory listing is a short
        // metadata-only syscall sequence, done inline.
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                paths.push(entry.path());
            }
        }
        paths.sort();
        Ok(paths)
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        compio::fs::create_dir_all(dir).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_choice_parses_operator_spellings() {
        assert_eq!("auto".parse::<DriverChoice>().unwrap(), DriverChoice::Auto);
        assert_eq!("io_uring".parse::<DriverChoice>().unwrap(), DriverChoice::IoUring);
        assert_eq!("Polling".parse::<DriverChoice>().unwrap(), DriverChoice::Polling);
        let error = "kqueue".parse::<DriverChoice>().unwrap_err();
        assert!(error.to_string().contains(DRIVER_ENV_VAR), "{error}");
    }

    /// The round before a blocking fsync runs the tasks woken before it
    /// (a socket writer), even when its caller polls it twice in one pass,
    /// as the node polls a flush's fsync; a plain yield is ready at the
    /// second poll, before they ran.
    #[test]
    fn a_runtime_round_runs_the_woken_tasks_before_it_ends() {
        let runtime = build_runtime(DriverChoice::Auto).unwrap();
        runtime.block_on(async {
            let ran = Rc::new(Cell::new(false));
            let task_ran = ran.clone();
            let task = compio::runtime::spawn(async move { task_ran.set(true) });
            let mut round = std::pin::pin!(runtime_round());
            let mut yielded = std::pin::pin!(shoal_shard::node::join::yield_once());
            std::future::poll_fn(|cx| {
                assert!(round.as_mut().poll(cx).is_pending() && round.as_mut().poll(cx).is_pending());
                assert!(yielded.as_mut().poll(cx).is_pending() && yielded.as_mut().poll(cx).is_ready());
                assert!(!ran.get(), "nothing ran the task within this pass");
                Poll::Ready(())
            })
            .await;
            round.await;
            assert!(ran.get(), "the round ended after the woken task ran");
            task.await.unwrap();
        });
    }

    #[test]
    fn splitmix_from_one_seed_repeats_and_from_two_seeds_differs() {
        let a = Cell::new(7);
        let b = Cell::new(7);
        let c = Cell::new(8);
        let from_a: Vec<u64> = (0..4).map(|_| splitmix64(&a)).collect();
        let from_b: Vec<u64> = (0..4).map(|_| splitmix64(&b)).collect();
        let from_c: Vec<u64> = (0..4).map(|_| splitmix64(&c)).collect();
        assert_eq!(from_a, from_b);
        assert_ne!(from_a, from_c);
        assert_ne!(from_a[0], from_a[1]);
    }

    #[test]
    fn exchange_swaps_two_names() {
        let dir = std::env::temp_dir().join(format!("shoal-real-io-exchange-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, b"first").unwrap();
        std::fs::write(&b, b"second").unwrap();
        let runtime = build_runtime(DriverChoice::Auto).unwrap();
        let result = runtime.block_on(async { RealIo::new().exchange(&a, &b).await });
        match result {
            Ok(()) => {
                assert_eq!(std::fs::read(&a).unwrap(), b"second");
                assert_eq!(std::fs::read(&b).unwrap(), b"first");
            }
            Err(error) => assert_eq!(error.kind(), io::ErrorKind::Unsupported, "{error}"),
        }
        let missing = runtime.block_on(async { RealIo::new().exchange(&a, &dir.join("missing")).await });
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_modes_create_refuse_and_size_as_asked() {
        let dir = std::env::temp_dir().join(format!("shoal-real-io-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let runtime = build_runtime(DriverChoice::Auto).unwrap();
        runtime.block_on(async {
            let io = RealIo::new();
            let missing = io.open(&path, OpenMode::ReadWrite).await.map(|_| ()).unwrap_err();
            assert_eq!(missing.kind(), io::ErrorKind::NotFound);
            let created = io.open(&path, OpenMode::ReadWriteCreate).await.unwrap();
            let (result, _) = created.write_all_at(vec![5; 3_000], 1_000).await;
            result.unwrap();
            assert_eq!(created.size_bytes().await.unwrap(), 4_000);
            let read_only = io.open(&path, OpenMode::ReadOnly).await.unwrap();
            assert_eq!(read_only.size_bytes().await.unwrap(), 4_000);
            let (result, bytes) = read_only.read_exact_at(vec![0; 10], 3_990).await;
            result.unwrap();
            assert_eq!(bytes, vec![5; 10]);
            let (refused, _) = read_only.write_all_at(vec![1], 0).await;
            assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Parts are written as their concatenation: empty parts, more parts
    /// than one `pwritev` takes, a large part; a read-only file refuses.
    #[test]
    fn parts_are_written_as_their_concatenation() {
        let dir = std::env::temp_dir().join(format!("shoal-real-io-parts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let runtime = build_runtime(DriverChoice::Auto).unwrap();
        runtime.block_on(async {
            let io = RealIo::new();
            let file = io.open(&path, OpenMode::ReadWriteCreate).await.unwrap();
            let large = vec![0xAB; 3 * WRITE_YIELD_BYTES_MIN];
            let mut owned: Vec<Vec<u8>> = (0..PWRITEV_PARTS_MAX * 2 + 7).map(|i| vec![i as u8; i % 5]).collect();
            owned.push(large);
            let parts: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            let joined = parts.concat();
            file.write_all_parts_at(&parts, 4096).await.unwrap();
            let (result, read) = file.read_exact_at(vec![0; joined.len()], 4096).await;
            result.unwrap();
            assert!(read == joined, "the file holds the parts, joined, where they were written");
            assert_eq!(file.size_bytes().await.unwrap(), 4096 + joined.len() as u64);
            let read_only = io.open(&path, OpenMode::ReadOnly).await.unwrap();
            let refused = read_only.write_all_parts_at(&parts, 0).await.unwrap_err();
            assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_large_write_lets_woken_tasks_run_before_it_and_a_small_one_does_not() {
        let dir = std::env::temp_dir().join(format!("shoal-real-io-write-yield-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let runtime = build_runtime(DriverChoice::Auto).unwrap();
        let ran_before: Vec<bool> = runtime.block_on(async {
            let io = RealIo::new();
            let file = io.open(&path, OpenMode::ReadWriteCreate).await.unwrap();
            let mut ran_before = Vec::new();
            for size_bytes in [WRITE_YIELD_BYTES_MIN - 1, WRITE_YIELD_BYTES_MIN] {
                // A task woken before the write, as a socket writer is by a
                // reply the node queued.
                let ran = Rc::new(Cell::new(false));
                let flag = Rc::clone(&ran);
                let task = io.spawn(async move { flag.set(true) });
                let (result, _) = file.write_all_at(vec![1; size_bytes], 0).await;
                result.unwrap();
                ran_before.push(ran.get());
                task.await.unwrap();
            }
            ran_before
        });
        assert_eq!(ran_before, [false, true], "only a write of WRITE_YIELD_BYTES_MIN or more yields first");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_read_into_uninitialised_capacity_fills_exactly_what_was_asked() {
        let dir = std::env::temp_dir().join(format!("shoal-real-io-uninit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let runtime = build_runtime(DriverChoice::Auto).unwrap();
        runtime.block_on(async {
            let file = RealIo::new().open(&path, OpenMode::ReadOnly).await.unwrap();
            // A reused buffer with stale contents and a length of its own.
            let (result, buf) = file.read_exact_uninit_at(vec![7; 10], 65_536, 1_000).await;
            result.unwrap();
            assert_eq!(buf, bytes[1_000..66_536]);
            let (result, buf) = file.read_exact_uninit_at(buf, 3, 5).await;
            result.unwrap();
            assert_eq!(buf, bytes[5..8]);
            let (result, _) = file.read_exact_uninit_at(buf, 100, 69_950).await;
            assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn os_seeds_differ_between_calls() {
        // RandomState::new() bumps its keys on every call, so two seeds differ.
        assert_ne!(os_entropy_seed(), os_entropy_seed());
    }
}
