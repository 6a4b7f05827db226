//! Metadata handoff at start-up: shard 0 replays the metadata catalogue and
//! hands the encoded snapshot bundle to every other shard.
//!
//! Owns the single-shot channel the bundle travels on, the reading (by shard 0
//! only, the one writer) and durable writing of the metadata snapshot file, and
//! the two waits: `broadcast_snapshot` (shard 0 waits until every peer took the
//! bundle) and `await_snapshot` (a peer waits for it). Both poll the shutdown
//! flag with `Io::sleep(HANDOFF_POLL_INTERVAL_NS)` between polls and give up at
//! a named deadline, so a shard 0 that dies first strands no peer: the peer
//! returns `HandoffError::ShutDown` (or `ShardZeroGone`) instead of waiting
//! forever. Knows nothing of routing, threads or compio.
//!
//! Invariant: only `ShardId::METADATA` opens the snapshot file for writing.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use shoal_vsr::{Io, IoFile, OpenMode};

use crate::lifecycle::ShutdownFlag;
use crate::owner_table::ShardId;
use crate::state_machine::{CodecError, MetadataState};

/// How long a handoff wait sleeps between looks at its channel and the flag.
pub const HANDOFF_POLL_INTERVAL_NS: u64 = 1_000_000;
/// How long either side of the handoff waits before giving up.
pub const HANDOFF_TIMEOUT_NS: u64 = 10_000_000_000;
/// The largest metadata snapshot file shard 0 reads into memory.
pub const METADATA_SNAPSHOT_SIZE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Why the handoff did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("shutdown was requested during the metadata handoff; the shard stops without serving")]
    ShutDown,
    #[error(
        "metadata handoff timed out after {waited_ns} ns; shard 0 is wedged or dead, restart the process"
    )]
    TimedOut { waited_ns: u64 },
    #[error(
        "shard 0 ended without sending the metadata snapshot; it failed during start-up, see its log"
    )]
    ShardZeroGone,
    #[error("shard {shard:?} ended before taking the metadata snapshot; it failed during start-up")]
    PeerGone { shard: ShardId },
    #[error(
        "shard {shard:?} tried to open the metadata snapshot for writing; only shard 0 owns it (a bug in the caller)"
    )]
    NotMetadataShard { shard: ShardId },
    #[error(
        "metadata snapshot {path:?}: {source}; check the data directory's permissions and disk"
    )]
    Storage {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "metadata snapshot is {size_bytes} bytes, above {max} bytes; the file is corrupt or not a snapshot"
    )]
    SnapshotTooLarge { size_bytes: u64, max: u64 },
    #[error("metadata snapshot is unreadable: {0}")]
    Codec(#[from] CodecError),
}

fn storage(path: &Path) -> impl FnOnce(io::Error) -> HandoffError + '_ {
    move |source| HandoffError::Storage {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
enum Slot<T> {
    Empty,
    Sent(T),
    Taken,
    SenderDropped,
    ReceiverDropped,
}

/// The sending half of a single-shot channel. `Send`, so the real runtime can
/// hand it to another thread.
#[derive(Debug)]
pub struct OneShotSender<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

/// The receiving half of a single-shot channel.
#[derive(Debug)]
pub struct OneShotReceiver<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

/// A channel that carries one value, once. Neither side ever blocks: both
/// look at the slot and the caller sleeps between looks.
pub fn oneshot<T>() -> (OneShotSender<T>, OneShotReceiver<T>) {
    let slot = Arc::new(Mutex::new(Slot::Empty));
    (
        OneShotSender { slot: slot.clone() },
        OneShotReceiver { slot },
    )
}

fn lock<T>(slot: &Mutex<Slot<T>>) -> std::sync::MutexGuard<'_, Slot<T>> {
    // A poisoned slot only means the other side panicked mid-update, which
    // cannot happen between these plain assignments; take it anyway.
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<T> OneShotSender<T> {
    /// Put the value in the slot; hands it back if the receiver is gone.
    pub fn send(&self, value: T) -> Result<(), T> {
        let mut slot = lock(&self.slot);
        match *slot {
            Slot::Empty => {
                *slot = Slot::Sent(value);
                Ok(())
            }
            Slot::ReceiverDropped => Err(value),
            Slot::Sent(_) | Slot::Taken | Slot::SenderDropped => {
                panic!("a single-shot channel carries one value")
            }
        }
    }

    /// True once the receiver took the value.
    pub fn is_taken(&self) -> bool {
        matches!(*lock(&self.slot), Slot::Taken)
    }

    pub fn is_receiver_dropped(&self) -> bool {
        matches!(*lock(&self.slot), Slot::ReceiverDropped)
    }
}

impl<T> Drop for OneShotSender<T> {
    fn drop(&mut self) {
        let mut slot = lock(&self.slot);
        if matches!(*slot, Slot::Empty) {
            *slot = Slot::SenderDropped;
        }
    }
}

/// What a look at the receiving slot found.
#[derive(Debug, PartialEq, Eq)]
pub enum TryRecv<T> {
    Value(T),
    Empty,
    SenderDropped,
}

impl<T> OneShotReceiver<T> {
    pub fn try_recv(&self) -> TryRecv<T> {
        let mut slot = lock(&self.slot);
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Sent(value) => TryRecv::Value(value),
            Slot::Empty => {
                *slot = Slot::Empty;
                TryRecv::Empty
            }
            Slot::SenderDropped => {
                *slot = Slot::SenderDropped;
                TryRecv::SenderDropped
            }
            Slot::Taken | Slot::ReceiverDropped => panic!("a single-shot channel is read once"),
        }
    }
}

impl<T> Drop for OneShotReceiver<T> {
    fn drop(&mut self) {
        let mut slot = lock(&self.slot);
        if matches!(*slot, Slot::Empty | Slot::Sent(_)) {
            *slot = Slot::ReceiverDropped;
        }
    }
}

/// Shard 0 opens the metadata snapshot (creating an empty one on first start)
/// and replays it. Any other shard gets `NotMetadataShard`: it never opens the
/// file for writing and receives the catalogue through the handoff instead.
pub async fn open_metadata<I: Io>(
    io: &I,
    path: &Path,
    shard: ShardId,
) -> Result<MetadataState, HandoffError> {
    if shard != ShardId::METADATA {
        return Err(HandoffError::NotMetadataShard { shard });
    }
    let file = io
        .open(path, OpenMode::ReadWriteCreate)
        .await
        .map_err(storage(path))?;
    let size_bytes = file.size_bytes().await.map_err(storage(path))?;
    if size_bytes == 0 {
        return Ok(MetadataState::new());
    }
    if size_bytes > METADATA_SNAPSHOT_SIZE_MAX_BYTES {
        return Err(HandoffError::SnapshotTooLarge {
            size_bytes,
            max: METADATA_SNAPSHOT_SIZE_MAX_BYTES,
        });
    }
    let (result, bytes) = file.read_exact_at(vec![0; size_bytes as usize], 0).await;
    result.map_err(storage(path))?;
    Ok(MetadataState::decode(&bytes)?)
}

/// Durably replace the snapshot at `path`: write a temporary file, fsync it,
/// rename over `path`, fsync the directory. A crash at any step leaves either
/// the old or the new snapshot, never a torn one.
pub async fn write_metadata<I: Io>(
    io: &I,
    path: &Path,
    shard: ShardId,
    state: &MetadataState,
) -> Result<(), HandoffError> {
    if shard != ShardId::METADATA {
        return Err(HandoffError::NotMetadataShard { shard });
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = io
        .open(&tmp, OpenMode::ReadWriteCreate)
        .await
        .map_err(storage(&tmp))?;
    file.set_len(0).await.map_err(storage(&tmp))?;
    let (result, _) = file.write_all_at(state.encode(), 0).await;
    result.map_err(storage(&tmp))?;
    file.sync_data().await.map_err(storage(&tmp))?;
    io.rename(&tmp, path).await.map_err(storage(path))?;
    io.sync_dir(dir).await.map_err(storage(dir))?;
    Ok(())
}

/// Shard 0: send `bundle` to every peer, then wait until each took it. Gives
/// up on shutdown, on a peer that ended first, or at `HANDOFF_TIMEOUT_NS`.
pub async fn broadcast_snapshot<I: Io>(
    io: &I,
    bundle: &[u8],
    peers: &[(ShardId, OneShotSender<Vec<u8>>)],
    shutdown: &ShutdownFlag,
) -> Result<(), HandoffError> {
    assert!(
        peers.iter().all(|(shard, _)| *shard != ShardId::METADATA),
        "shard 0 does not send to itself"
    );
    for (shard, sender) in peers {
        if sender.send(bundle.to_vec()).is_err() {
            return Err(HandoffError::PeerGone { shard: *shard });
        }
    }
    let start_ns = io.now_ns();
    loop {
        if shutdown.is_requested() {
            return Err(HandoffError::ShutDown);
        }
        if let Some((shard, _)) = peers.iter().find(|(_, s)| s.is_receiver_dropped()) {
            return Err(HandoffError::PeerGone { shard: *shard });
        }
        if peers.iter().all(|(_, sender)| sender.is_taken()) {
            return Ok(());
        }
        let waited_ns = io.now_ns() - start_ns;
        if waited_ns >= HANDOFF_TIMEOUT_NS {
            return Err(HandoffError::TimedOut { waited_ns });
        }
        io.sleep(HANDOFF_POLL_INTERVAL_NS).await;
    }
}

/// A peer shard: wait for shard 0's bundle and decode it. Returns `ShutDown`
/// as soon as the flag is seen, so a dead shard 0 strands nobody.
pub async fn await_snapshot<I: Io>(
    io: &I,
    receiver: &OneShotReceiver<Vec<u8>>,
    shutdown: &ShutdownFlag,
) -> Result<MetadataState, HandoffError> {
    let start_ns = io.now_ns();
    loop {
        // Shutdown first: a bundle that arrives after it is not served.
        if shutdown.is_requested() {
            return Err(HandoffError::ShutDown);
        }
        match receiver.try_recv() {
            TryRecv::Value(bundle) => return Ok(MetadataState::decode(&bundle)?),
            TryRecv::SenderDropped => return Err(HandoffError::ShardZeroGone),
            TryRecv::Empty => {}
        }
        let waited_ns = io.now_ns() - start_ns;
        if waited_ns >= HANDOFF_TIMEOUT_NS {
            return Err(HandoffError::TimedOut { waited_ns });
        }
        io.sleep(HANDOFF_POLL_INTERVAL_NS).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oneshot_carries_one_value_and_reports_drops() {
        let (tx, rx) = oneshot::<u32>();
        assert_eq!(rx.try_recv(), TryRecv::Empty);
        tx.send(7).unwrap();
        assert!(!tx.is_taken());
        assert_eq!(rx.try_recv(), TryRecv::Value(7));
        assert!(tx.is_taken());

        let (tx, rx) = oneshot::<u32>();
        drop(tx);
        assert_eq!(rx.try_recv(), TryRecv::SenderDropped);

        let (tx, rx) = oneshot::<u32>();
        drop(rx);
        assert!(tx.is_receiver_dropped());
        assert_eq!(tx.send(9), Err(9));
    }

    #[test]
    fn a_sent_but_untaken_value_is_dropped_with_the_receiver() {
        let (tx, rx) = oneshot::<u32>();
        tx.send(1).unwrap();
        drop(rx);
        assert!(tx.is_receiver_dropped());
        assert!(!tx.is_taken());
    }
}
