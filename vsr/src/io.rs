//! The `Io` trait: every effect the protocol and storage code may have.
//!
//! Exactly two implementations exist: `shoal_runtime::RealIo` (compio, io_uring)
//! and `shoal_sim::SimIo` (virtual clock, simulated disk and network). Storage
//! calls take and give back owned buffers, the io_uring model: the kernel owns
//! the buffer while the operation is in flight, so the real backend never copies
//! and the simulator implements the same signatures.
//!
//! Static dispatch only: `I: Io` generics with associated types and `async fn`
//! in traits whose futures need not be `Send` (one thread per shard).
//!
//! Network and shard channels join this trait as further associated types; the
//! replica itself never awaits, it asks its driver for I/O and receives the
//! completion as a later event.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

/// The result of an owned-buffer operation: the outcome and the buffer, which
/// the caller gets back whatever happened.
pub type BufResult<T> = (io::Result<T>, Vec<u8>);

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read and write; create the file when it does not exist.
    ReadWriteCreate,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read only; the file must exist.
    ReadOnly,
}

impl OpenMode {
    pub fn writable(self) -> bool {
        !matches!(self, OpenMode::ReadOnly)
    }
}

/// A task failed instead of returning: it panicked or was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task failed: {reason}")]
pub struct TaskFailed {
    pub reason: String,
}

/// One open file. Positional I/O only: there is no cursor to get out of step.
pub trait IoFile: 'static {
    /// Fill `buf` completely from `position`; a short file is `UnexpectedEof`.
    fn read_exact_at(&self, buf: Vec<u8>, position: u64) -> impl Future<Output = BufResult<()>>;
    /// Read exactly `len` bytes from `position` into `buf`, which is
    /// cleared first (its capacity is reused, grown if short): on success
    /// `buf.len() == len`; on an error its contents are unspecified. Unlike
    /// `read_exact_at` the caller need not zero a buffer only for the read
    /// to overwrite it: a backend that can read into uninitialised capacity
    /// does (the read path's large buffers). This default zeroes.
    fn read_exact_uninit_at(&self, mut buf: Vec<u8>, len: usize, position: u64) -> impl Future<Output = BufResult<()>> {
        buf.clear();
        buf.resize(len, 0);
        #[allow(clippy::disallowed_methods)] // the default implementation; callers go through the retrying reads
        self.read_exact_at(buf, position)
    }
    /// Write all of `buf` at `position`. Not durable until `sync_data`.
    fn write_all_at(&self, buf: Vec<u8>, position: u64) -> impl Future<Output = BufResult<()>>;
    /// Write `parts`, one after another, from `position`: one write of
    /// their concatenation, which is what this default does (so a
    /// simulated disk tears, loses or misdirects it as that one write). A
    /// backend may hand the parts to the kernel as they are (`pwritev`),
    /// so that a large body is not copied into a joined buffer first.
    fn write_all_parts_at(&self, parts: &[&[u8]], position: u64) -> impl Future<Output = io::Result<()>> {
        let joined = parts.concat();
        async move { self.write_all_at(joined, position).await.0 }
    }
    /// Make every completed write durable (fdatasync).
    fn sync_data(&self) -> impl Future<Output = io::Result<()>>;
    /// Drop the file's clean cached pages, so later reads come from the
    /// device (Linux `posix_fadvise(POSIX_FADV_DONTNEED)`); dirty pages stay.
    /// After a failed fsync Linux marks the pages it could not write clean
    /// while reads keep seeing them, and no later fsync writes them: an
    /// open that fsyncs and then evicts reads what the device holds, not
    /// what a power loss would take back. Changes no durable byte.
    fn evict_clean_pages(&self) -> impl Future<Output = io::Result<()>>;
    /// Ask the device to start writing back `len_bytes` from `position`
    /// (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`), so a later
    /// `sync_data` has little left to wait for. A hint: it promises no
    /// durability, reports nothing and changes nothing a read or a crash
    /// sees, so a backend may ignore it (the simulator does: its disk has
    /// no writeback to start).
    fn start_writeback(&self, _position: u64, _len_bytes: u64) {}
    /// Ask the device to start reading `len_bytes` from `position` into the
    /// page cache (Linux `posix_fadvise(POSIX_FADV_WILLNEED)`), so that many
    /// small reads issued one after another find their pages already read,
    /// the device having served them side by side. A hint, like
    /// `start_writeback`: it changes nothing a read returns, reports
    /// nothing, and a backend may ignore it (the simulator does).
    fn prefetch(&self, _position: u64, _len_bytes: u64) {}
    /// Truncate or extend the file. Not durable until `sync_data`.
    fn set_len(&self, size_bytes: u64) -> impl Future<Output = io::Result<()>>;
    /// The current size, pending writes included.
    fn size_bytes(&self) -> impl Future<Output = io::Result<u64>>;
}

/// Clock, storage, entropy and tasks for one shard.
pub trait Io: Clone + 'static {
    type File: IoFile;
    /// A spawned task; awaiting it joins the task.
    type Task: Future<Output = Result<(), TaskFailed>> + 'static;

    // --- clock ---------------------------------------------------------------
    /// Monotonic time in nanoseconds. Virtual in the simulator.
    fn now_ns(&self) -> u64;
    /// Complete after `duration_ns`. The simulator jumps to the next event.
    fn sleep(&self, duration_ns: u64) -> impl Future<Output = ()>;

    // --- entropy -------------------------------------------------------------
    /// Ids and jitter. Seeded in the simulator, never OS entropy.
    fn entropy_u64(&self) -> u64;

    // --- tasks ---------------------------------------------------------------
    /// Spawn a `!Send` task on the current shard's executor.
    fn spawn<F>(&self, task: F) -> Self::Task
    where
        F: Future<Output = ()> + 'static;

    // --- storage -------------------------------------------------------------
    fn open(&self, path: &Path, mode: OpenMode) -> impl Future<Output = io::Result<Self::File>>;
    /// Atomically replace `to` with `from`. Durable only once the parent
    /// directory is fsynced with `sync_dir`.
    fn rename(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>>;
    /// Atomically swap the names `a` and `b` (both must exist, in the same
    /// directory): afterwards `a` names the file `b` named and the other way
    /// round. Durable only once the parent directory is fsynced with
    /// `sync_dir`; a crash before that leaves both names as they were, never
    /// one file under both names. `ErrorKind::Unsupported` where the file
    /// system cannot exchange (the caller then falls back to `rename`).
    ///
    /// Lets the journal recycle the file a compaction retires as the next
    /// compaction's scratch file, so its blocks stay allocated (see
    /// `journal`'s module doc).
    ///
    /// The default is a backend that cannot exchange (test doubles).
    fn exchange(&self, a: &Path, b: &Path) -> impl Future<Output = io::Result<()>> {
        let message = format!("cannot exchange {} and {}: this Io has no exchange", a.display(), b.display());
        async move { Err(io::Error::new(io::ErrorKind::Unsupported, message)) }
    }
    /// Remove a file. Durable only once the parent directory is fsynced.
    fn remove(&self, path: &Path) -> impl Future<Output = io::Result<()>>;
    /// fsync a directory, making creates, renames and removes in it durable.
    fn sync_dir(&self, dir: &Path) -> impl Future<Output = io::Result<()>>;
    /// The files directly inside `dir`, sorted by path.
    fn list_dir(&self, dir: &Path) -> impl Future<Output = io::Result<Vec<PathBuf>>>;
    /// Create `dir` and its parents. Like a file, a new directory is an
    /// entry of its parent, durable only once the parent is fsynced:
    /// `create_dir_durable` does both.
    fn create_dir_all(&self, dir: &Path) -> impl Future<Output = io::Result<()>>;
}

/// Create `dir` (if missing) and make its entry, and the entry of every
/// directory above it, durable.
///
/// On Linux a new directory survives a power loss only once its parent is
/// fsynced, and everything written into it before that, synced or not,
/// vanishes with it. Run by every start over a dir that already exists too:
/// a process that crashed after creating it left entries that may live only
/// in the page cache, and `create_dir_all` cannot say which levels it made.
/// So each level's parent is fsynced, top down: one directory fsync per
/// level, at a format or a partition's open, never on the commit path.
pub async fn create_dir_durable<I: Io>(io: &I, dir: &Path) -> io::Result<()> {
    io.create_dir_all(dir).await?;
    for parent in parents_top_down(dir) {
        io.sync_dir(parent).await?;
    }
    Ok(())
}

/// Return `Pending` once (waking the caller at once), then `Ready`: lets
/// a long piece of storage work that runs beside its node (a spare's clear)
/// give the node and the runtime's other tasks a turn between its writes.
pub async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

/// The directories whose fsync makes `dir`'s entry and every entry above it
/// durable: the parent of each level, top down (`.` for a relative dir's
/// first level). Shared with the server's data-dir format, which runs before
/// any `Io` exists.
pub fn parents_top_down(dir: &Path) -> Vec<&Path> {
    let levels: Vec<&Path> = dir.ancestors().filter(|level| level.parent().is_some()).collect();
    levels
        .into_iter()
        .rev()
        .map(|level| {
            let parent = level.parent().expect("filtered: not the root");
            if parent.as_os_str().is_empty() { Path::new(".") } else { parent }
        })
        .collect()
}

/// Attempts a read that fails with EIO gets (`read_exact_retrying`) before
/// its error is the caller's: a transient error (a controller timeout, a
/// path failover) passes on a retry, a latent sector error does not (it
/// lasts until a write covers the sector), and the caller then handles it
/// as damage of what it read. Three: with the simulator's transient rate
/// (`swarm`: up to 2,000 ppm per read) a read fails every attempt about once
/// in 10^8, so a transient error never passes for damage in a sweep.
pub const READ_EIO_ATTEMPTS_MAX: u32 = 3;

/// `EIO`: the device failed the read (or write). Any other error (a
/// permission, a missing file) is the operator's, never damage.
const EIO: i32 = 5;

/// Is `error` the device failing a read (EIO)?
pub fn is_media_error(error: &io::Error) -> bool {
    error.raw_os_error() == Some(EIO)
}

/// `IoFile::read_exact_at`, with a read that fails with EIO tried again, up
/// to `READ_EIO_ATTEMPTS_MAX` times in all (mark `read_eio_retried` when a
/// retry succeeds). Every storage read of the node goes through here or
/// `read_exact_uninit_retrying` (clippy's `disallowed-methods` bans the
/// bare calls), so no transient error stops a replica or damages a copy.
#[allow(clippy::disallowed_methods)] // the one caller of the bare read
pub async fn read_exact_retrying<F: IoFile>(file: &F, buf: Vec<u8>, position: u64) -> BufResult<()> {
    retrying_eio(buf, |buf| file.read_exact_at(buf, position)).await
}

/// `IoFile::read_exact_uninit_at` with `read_exact_retrying`'s retries.
#[allow(clippy::disallowed_methods)] // the one caller of the bare read
pub async fn read_exact_uninit_retrying<F: IoFile>(file: &F, buf: Vec<u8>, len: usize, position: u64) -> BufResult<()> {
    retrying_eio(buf, |buf| file.read_exact_uninit_at(buf, len, position)).await
}

async fn retrying_eio<R: Future<Output = BufResult<()>>>(
    mut buf: Vec<u8>,
    mut read: impl FnMut(Vec<u8>) -> R,
) -> BufResult<()> {
    for attempt in 1..=READ_EIO_ATTEMPTS_MAX {
        let (result, bytes) = read(buf).await;
        match result {
            Err(error) if is_media_error(&error) && attempt < READ_EIO_ATTEMPTS_MAX => buf = bytes,
            result => {
                if result.is_ok() && attempt > 1 {
                    crate::marks::hit(crate::marks::READ_EIO_RETRIED);
                }
                return (result, bytes);
            }
        }
    }
    unreachable!("the last attempt returns whatever it got")
}

/// Read `len` bytes at `position`: one copy of a file that keeps several.
/// `Ok(None)` when the read still fails with EIO after its retries
/// (`read_exact_retrying`): the copy is lost, as a rotten one is, and the
/// caller goes on with the others (mark `copy_unreadable`); any other error
/// is returned.
pub async fn read_copy<F: IoFile>(file: &F, len: usize, position: u64) -> io::Result<Option<Vec<u8>>> {
    match read_exact_retrying(file, vec![0; len], position).await {
        (Ok(()), bytes) => Ok(Some(bytes)),
        (Err(error), _) if is_media_error(&error) => {
            crate::marks::hit(crate::marks::COPY_UNREADABLE);
            Ok(None)
        }
        (Err(error), _) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parents_to_sync_run_top_down_to_the_dirs_own_parent() {
        let absolute: Vec<&Path> = parents_top_down(Path::new("/data/part-1/seg"));
        assert_eq!(absolute, [Path::new("/"), Path::new("/data"), Path::new("/data/part-1")]);
        let relative: Vec<&Path> = parents_top_down(Path::new("data/part-1"));
        assert_eq!(relative, [Path::new("."), Path::new("data")]);
        assert!(parents_top_down(Path::new("/")).is_empty());
    }
}
