//! A tiny in-memory `Io` for the partition log tests ONLY: every storage call
//! completes at once, nothing is lost on "crash" (reopen sees every write).
//! Crash effects are made by hand with `file_bytes` / `set_file_bytes`. The
//! real test double with durable/pending bytes is `shoal_sim::SimIo`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use shoal_vsr::io::TaskFailed;
use shoal_vsr::{BufResult, Io, IoFile, OpenMode};

/// Polls before `block_on` gives up: every `MemIo` future is ready at once.
const POLLS_MAX: usize = 1000;

pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..POLLS_MAX {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
    panic!("future still pending after {POLLS_MAX} polls; MemIo never blocks");
}

type Bytes = Rc<RefCell<Vec<u8>>>;

#[derive(Debug, Clone, Default)]
pub struct MemIo {
    files: Rc<RefCell<BTreeMap<PathBuf, Bytes>>>,
    /// Fail this many upcoming writes with EIO (fault injection).
    write_failures: Rc<Cell<u32>>,
    /// File syncs so far, over every file.
    syncs: Rc<Cell<u64>>,
    /// While set, every fsync stays pending (an fsync in flight).
    syncs_held: Rc<Cell<bool>>,
    /// While set, the fsyncs of files under this dir stay pending too.
    syncs_held_under: Rc<RefCell<Option<PathBuf>>>,
    /// Every successful write so far: (path, position, length).
    writes: Rc<RefCell<Vec<(PathBuf, u64, usize)>>>,
    /// While set, the directory fsyncs this many more pass and the next
    /// ones stay pending until it is cleared.
    dir_syncs_passing: Rc<Cell<Option<u32>>>,
    /// The clock's cost of one file sync: `now_ns` is the syncs so far
    /// times this (0, the default: a clock that stands still), plus
    /// `advanced_ns`.
    sync_cost_ns: Rc<Cell<u64>>,
    /// Time the test let pass besides the syncs (`advance_ns`).
    advanced_ns: Rc<Cell<u64>>,
}

impl MemIo {
    /// Let every file sync from now on advance `now_ns` by `cost_ns` (a
    /// slow disk, for the node's time budgets); the clock counts every sync
    /// so far at the new cost.
    pub fn set_sync_cost_ns(&self, cost_ns: u64) {
        self.sync_cost_ns.set(cost_ns);
    }

    /// Let `ns` pass on the clock (a tick's worth between ticks).
    pub fn advance_ns(&self, ns: u64) {
        self.advanced_ns.set(self.advanced_ns.get() + ns);
    }

    /// Hold every fsync in flight (`true`) until released (`false`): it
    /// completes at its first poll after the release.
    pub fn hold_syncs(&self, held: bool) {
        self.syncs_held.set(held);
    }

    /// Hold the fsyncs of every file under `dir` in flight (`None`:
    /// release them) while the other files' fsyncs complete.
    pub fn hold_syncs_under(&self, dir: Option<&Path>) {
        *self.syncs_held_under.borrow_mut() = dir.map(Path::to_path_buf);
    }

    /// Let `passing` more directory fsyncs complete, then hold the next
    /// ones in flight (`None`: release them).
    pub fn hold_dir_syncs_after(&self, passing: Option<u32>) {
        self.dir_syncs_passing.set(passing);
    }

    pub fn file_bytes(&self, path: &Path) -> Vec<u8> {
        self.files.borrow()[path].borrow().clone()
    }

    pub fn set_file_bytes(&self, path: &Path, bytes: Vec<u8>) {
        *self.files.borrow()[path].borrow_mut() = bytes;
    }

    pub fn sync_count(&self) -> u64 {
        self.syncs.get()
    }

    /// The writes to `path` so far, as (position, length), in order.
    pub fn writes_to(&self, path: &Path) -> Vec<(u64, usize)> {
        self.writes.borrow().iter().filter(|(p, _, _)| p == path).map(|&(_, at, len)| (at, len)).collect()
    }

    pub fn fail_next_writes(&self, count: u32) {
        self.write_failures.set(count);
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.borrow().keys().cloned().collect()
    }
}

#[derive(Debug)]
pub struct MemFile {
    bytes: Bytes,
    writable: bool,
    write_failures: Rc<Cell<u32>>,
    syncs: Rc<Cell<u64>>,
    syncs_held: Rc<Cell<bool>>,
    syncs_held_under: Rc<RefCell<Option<PathBuf>>>,
    path: PathBuf,
    writes: Rc<RefCell<Vec<(PathBuf, u64, usize)>>>,
}

impl IoFile for MemFile {
    async fn read_exact_at(&self, mut buf: Vec<u8>, position: u64) -> BufResult<()> {
        let bytes = self.bytes.borrow();
        let start = position as usize;
        let Some(source) = bytes.get(start..start + buf.len()) else {
            return (Err(io::ErrorKind::UnexpectedEof.into()), buf);
        };
        buf.copy_from_slice(source);
        (Ok(()), buf)
    }

    async fn write_all_at(&self, buf: Vec<u8>, position: u64) -> BufResult<()> {
        if !self.writable {
            return (Err(io::ErrorKind::PermissionDenied.into()), buf);
        }
        if self.write_failures.get() > 0 {
            self.write_failures.set(self.write_failures.get() - 1);
            return (Err(io::Error::other("injected EIO")), buf);
        }
        let mut bytes = self.bytes.borrow_mut();
        let end = position as usize + buf.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[position as usize..end].copy_from_slice(&buf);
        self.writes.borrow_mut().push((self.path.clone(), position, buf.len()));
        (Ok(()), buf)
    }

    async fn sync_data(&self) -> io::Result<()> {
        let (held, held_under) = (self.syncs_held.clone(), self.syncs_held_under.clone());
        let waits = || held.get() || held_under.borrow().as_deref().is_some_and(|dir| self.path.starts_with(dir));
        std::future::poll_fn(|_| if waits() { Poll::Pending } else { Poll::Ready(()) }).await;
        self.syncs.set(self.syncs.get() + 1);
        Ok(())
    }

    /// No page cache here: what reads see is all there is.
    async fn evict_clean_pages(&self) -> io::Result<()> {
        Ok(())
    }

    async fn set_len(&self, size_bytes: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        self.bytes.borrow_mut().resize(size_bytes as usize, 0);
        Ok(())
    }

    async fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.bytes.borrow().len() as u64)
    }
}

impl Io for MemIo {
    type File = MemFile;
    type Task = std::future::Ready<Result<(), TaskFailed>>;

    fn now_ns(&self) -> u64 {
        self.advanced_ns.get() + self.syncs.get() * self.sync_cost_ns.get()
    }

    async fn sleep(&self, _duration_ns: u64) {}

    fn entropy_u64(&self) -> u64 {
        4 // fixed: these tests need no entropy
    }

    fn spawn<F>(&self, task: F) -> Self::Task
    where
        F: Future<Output = ()> + 'static,
    {
        block_on(task);
        std::future::ready(Ok(()))
    }

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<MemFile> {
        let mut files = self.files.borrow_mut();
        let bytes = match (files.get(path), mode) {
            (Some(bytes), _) => bytes.clone(),
            (None, OpenMode::ReadWriteCreate) => files.entry(path.to_path_buf()).or_default().clone(),
            (None, _) => return Err(io::ErrorKind::NotFound.into()),
        };
        Ok(MemFile {
            bytes,
            writable: mode.writable(),
            write_failures: self.write_failures.clone(),
            syncs: self.syncs.clone(),
            syncs_held: self.syncs_held.clone(),
            syncs_held_under: self.syncs_held_under.clone(),
            path: path.to_path_buf(),
            writes: self.writes.clone(),
        })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = self.files.borrow_mut();
        let bytes = files.remove(from).ok_or(io::Error::from(io::ErrorKind::NotFound))?;
        files.insert(to.to_path_buf(), bytes);
        Ok(())
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.files.borrow_mut().remove(path).map(|_| ()).ok_or(io::ErrorKind::NotFound.into())
    }

    async fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        let passing = self.dir_syncs_passing.clone();
        std::future::poll_fn(|_| match passing.get() {
            None => Poll::Ready(()),
            Some(0) => Poll::Pending,
            Some(left) => {
                passing.set(Some(left - 1));
                Poll::Ready(())
            }
        })
        .await;
        Ok(())
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(self.files.borrow().keys().filter(|p| p.parent() == Some(dir)).cloned().collect())
    }

    async fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}
