//! Superblock: the durable `(view, log_view, commit, view_headers)` of one VSR group.
//!
//! Owns the file `superblock-<namespace>` and its two-copy write protocol.
//! Knows nothing of the journal or the protocol's rules beyond monotonicity.
//!
//! Each write bumps a sequence number and writes copy A, fsyncs, then writes
//! copy B and fsyncs. A crash tears at most the copy being written, so the
//! other one is valid; `open` takes the valid copy with the highest sequence.
//! That needs both copies to hold the newest state before a write starts: a
//! write that failed between its copies leaves copy B behind, so a writable
//! `open` rewrites the lagging copies first.
//! The copies live in separate sectors so one torn sector cannot hit both,
//! a copy's size apart so one misdirected write cannot hit both either.

use std::io;
use std::path::{Path, PathBuf};

use crate::header::{HEADER_SIZE_BYTES, Header, checksum};
use crate::io::{Io, IoFile, OpenMode};

/// Copy A at 0, copy B one copy later; each holds the view headers too.
pub const SUPERBLOCK_COPY_SIZE_BYTES: u64 = 16 * 1024;
/// The most view headers a superblock holds (the replica's `VIEW_HEADERS_MAX`).
pub const SUPERBLOCK_VIEW_HEADERS_MAX: usize = 48;
pub const SUPERBLOCK_COPIES: u64 = 2;
/// Copy `i` starts at `i` strides: one copy's size of unused space between
/// two copies, so a misdirected write of one copy (the device puts it at a
/// wrong sector of the file) can land on at most one of them. Adjacent
/// copies let one copy-sized write straddle both, corrupting each (disk-rot
/// seed 366 with superblock misdirects: "both superblock copies are
/// invalid").
pub const SUPERBLOCK_COPY_STRIDE_BYTES: u64 = 2 * SUPERBLOCK_COPY_SIZE_BYTES;
/// A reader looks for a copy at every copy-sized position of the file
/// (the gaps included): files written before the stride hold copy B right
/// after copy A, and a misdirected copy in a gap is a genuine copy too.
const SUPERBLOCK_READ_POSITIONS: u64 = (SUPERBLOCK_COPIES - 1) * 2 + 1;
const _: () = assert!(SUPERBLOCK_COPY_STRIDE_BYTES >= 2 * SUPERBLOCK_COPY_SIZE_BYTES);

/// Where copy `index` is written.
pub fn superblock_copy_offset(index: u64) -> u64 {
    assert!(index < SUPERBLOCK_COPIES);
    index * SUPERBLOCK_COPY_STRIDE_BYTES
}

/// The size of a superblock file: the last copy's end.
pub fn superblock_file_size_bytes() -> u64 {
    superblock_copy_offset(SUPERBLOCK_COPIES - 1) + SUPERBLOCK_COPY_SIZE_BYTES
}
/// Sequences above the newest valid copy's that a torn copy can hold: a
/// write starts only once every copy holds the newest state (a writable
/// open repairs them first) and a failed write stops the replica, so only
/// the one write in flight can have left its sequence in a torn copy. A
/// copy claiming more is damage (a flipped bit), not a lost write.
pub const SUPERBLOCK_SEQUENCES_LOST_MAX: u64 = 1;

/// "SHOALSB\0", little-endian.
pub const SUPERBLOCK_MAGIC: u64 = u64::from_le_bytes(*b"SHOALSB\0");
pub const SUPERBLOCK_FORMAT_VERSION: u32 = 1;

const SB_MAGIC: usize = 0;
const SB_VERSION: usize = 8;
const SB_REPLICA: usize = 12;
const SB_CLUSTER: usize = 16;
const SB_NAMESPACE: usize = 32;
const SB_SEQUENCE: usize = 40;
const SB_VIEW: usize = 48;
const SB_LOG_VIEW: usize = 56;
const SB_COMMIT: usize = 64;
/// Bit 0: rejoining (see `SuperblockState::rejoining`). Older files hold 0.
const SB_FLAGS: usize = 72;
const SB_FLAG_REJOINING: u64 = 1;
const SB_CHECKSUM: usize = 80;
const SB_VIEW_HEADERS_COUNT: usize = 96;
/// See `SuperblockState::nack_floor`. Older files hold 0 (no floor).
const SB_NACK_FLOOR: usize = 104;
const SB_VIEW_HEADERS: usize = 128;
const SB_ENCODED_BYTES: usize = SB_VIEW_HEADERS + SUPERBLOCK_VIEW_HEADERS_MAX * HEADER_SIZE_BYTES;

const _: () = assert!(SB_ENCODED_BYTES as u64 <= SUPERBLOCK_COPY_SIZE_BYTES);

/// The checksum covers every byte of the record but its own 16.
fn record_checksum(bytes: &[u8]) -> u128 {
    let mut covered = Vec::with_capacity(SB_ENCODED_BYTES);
    covered.extend_from_slice(&bytes[..SB_CHECKSUM]);
    covered.extend_from_slice(&bytes[SB_CHECKSUM + 16..SB_ENCODED_BYTES]);
    checksum(&covered)
}

/// The durable VSR state of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuperblockState {
    pub view: u64,
    /// The view in which the log was last known to be complete (`<= view`).
    pub log_view: u64,
    pub commit: u64,
    /// The head of `log_view`'s log as installed by the view change: after a
    /// restart they name the ops this replica's log holds even where the
    /// journal lacks their bodies.
    pub view_headers: Vec<Header>,
    /// Formatted to rejoin an existing cluster and not yet rejoined: the
    /// replica must not vote (its old promises are lost with its old disk).
    pub rejoining: bool,
    /// The replica may have acknowledged prepares at or below this op that
    /// its disk no longer holds (it was wiped and rejoined, or its journal
    /// was faulty): a do_view_change may not nack them. Never goes down.
    pub nack_floor: u64,
}

/// The replica's durable promises are exactly what the superblock holds;
/// one conversion each way keeps the two in step when a field is added.
impl From<SuperblockState> for crate::replica::DurableState {
    fn from(state: SuperblockState) -> Self {
        let SuperblockState { view, log_view, commit, view_headers, rejoining, nack_floor } = state;
        crate::replica::DurableState { view, log_view, commit, view_headers, rejoining, nack_floor }
    }
}

impl From<crate::replica::DurableState> for SuperblockState {
    fn from(state: crate::replica::DurableState) -> Self {
        let crate::replica::DurableState { view, log_view, commit, view_headers, rejoining, nack_floor } = state;
        SuperblockState { view, log_view, commit, view_headers, rejoining, nack_floor }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SuperblockError {
    #[error("superblock {operation} failed: {source}; check the disk, then restart the replica")]
    Io { operation: &'static str, source: io::Error },
    #[error("superblock is open read-only: only the owning shard may write it")]
    ReadOnly,
    #[error("superblock {path} already exists: open it instead of creating it")]
    AlreadyExists { path: PathBuf },
    #[error("superblock {path} does not exist: create it (new replica) or restore it from a peer")]
    Missing { path: PathBuf },
    #[error(
        "both superblock copies are invalid (torn, zeroed, unreadable or not a shoal superblock): restore the replica \
         from peers"
    )]
    NoValidCopy,
    #[error("superblock format version {found} is not {SUPERBLOCK_FORMAT_VERSION}: run the matching shoal version")]
    UnsupportedVersion { found: u32 },
    #[error(
        "superblock belongs to cluster {found:#x}, namespace {found_namespace:#x}, replica {found_replica}: check the data directory"
    )]
    WrongOwner { found: u128, found_namespace: u64, found_replica: u8 },
    #[error("superblock state {state:?} is invalid: log_view must not exceed view")]
    InvalidState { state: SuperblockState },
}

fn io_error(operation: &'static str) -> impl FnOnce(io::Error) -> SuperblockError {
    move |source| SuperblockError::Io { operation, source }
}

/// The superblock file of `namespace` inside `dir`.
pub fn superblock_path(dir: &Path, namespace: u64) -> PathBuf {
    dir.join(format!("superblock-{namespace:016x}"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CopyRecord {
    cluster: u128,
    namespace: u64,
    replica: u8,
    sequence: u64,
    state: SuperblockState,
}

impl CopyRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; SUPERBLOCK_COPY_SIZE_BYTES as usize];
        out[SB_MAGIC..SB_MAGIC + 8].copy_from_slice(&SUPERBLOCK_MAGIC.to_le_bytes());
        out[SB_VERSION..SB_VERSION + 4].copy_from_slice(&SUPERBLOCK_FORMAT_VERSION.to_le_bytes());
        out[SB_REPLICA] = self.replica;
        out[SB_CLUSTER..SB_CLUSTER + 16].copy_from_slice(&self.cluster.to_le_bytes());
        out[SB_NAMESPACE..SB_NAMESPACE + 8].copy_from_slice(&self.namespace.to_le_bytes());
        out[SB_SEQUENCE..SB_SEQUENCE + 8].copy_from_slice(&self.sequence.to_le_bytes());
        out[SB_VIEW..SB_VIEW + 8].copy_from_slice(&self.state.view.to_le_bytes());
        out[SB_LOG_VIEW..SB_LOG_VIEW + 8].copy_from_slice(&self.state.log_view.to_le_bytes());
        out[SB_COMMIT..SB_COMMIT + 8].copy_from_slice(&self.state.commit.to_le_bytes());
        let flags = if self.state.rejoining { SB_FLAG_REJOINING } else { 0 };
        out[SB_FLAGS..SB_FLAGS + 8].copy_from_slice(&flags.to_le_bytes());
        out[SB_NACK_FLOOR..SB_NACK_FLOOR + 8].copy_from_slice(&self.state.nack_floor.to_le_bytes());
        assert!(self.state.view_headers.len() <= SUPERBLOCK_VIEW_HEADERS_MAX);
        out[SB_VIEW_HEADERS_COUNT..SB_VIEW_HEADERS_COUNT + 4]
            .copy_from_slice(&(self.state.view_headers.len() as u32).to_le_bytes());
        for (index, header) in self.state.view_headers.iter().enumerate() {
            let offset = SB_VIEW_HEADERS + index * HEADER_SIZE_BYTES;
            out[offset..offset + HEADER_SIZE_BYTES].copy_from_slice(&header.encode());
        }
        let sum = record_checksum(&out);
        out[SB_CHECKSUM..SB_CHECKSUM + 16].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// `None` for a torn, zeroed or foreign copy; an error for a valid copy
    /// of another version.
    fn decode(bytes: &[u8]) -> Result<Option<CopyRecord>, SuperblockError> {
        let bytes = &bytes[..SB_ENCODED_BYTES];
        let u64_at = |offset: usize| u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap());
        let u128_at = |offset: usize| u128::from_le_bytes(bytes[offset..offset + 16].try_into().unwrap());
        if u64_at(SB_MAGIC) != SUPERBLOCK_MAGIC || record_checksum(bytes) != u128_at(SB_CHECKSUM) {
            return Ok(None);
        }
        let version = u32::from_le_bytes(bytes[SB_VERSION..SB_VERSION + 4].try_into().unwrap());
        if version != SUPERBLOCK_FORMAT_VERSION {
            return Err(SuperblockError::UnsupportedVersion { found: version });
        }
        Ok(Some(CopyRecord {
            cluster: u128_at(SB_CLUSTER),
            namespace: u64_at(SB_NAMESPACE),
            replica: bytes[SB_REPLICA],
            sequence: u64_at(SB_SEQUENCE),
            state: SuperblockState {
                view: u64_at(SB_VIEW),
                log_view: u64_at(SB_LOG_VIEW),
                commit: u64_at(SB_COMMIT),
                view_headers: decode_view_headers(bytes)?,
                rejoining: u64_at(SB_FLAGS) & SB_FLAG_REJOINING != 0,
                nack_floor: u64_at(SB_NACK_FLOOR),
            },
        }))
    }
}

/// The sequence a copy's bytes claim when they start with the magic,
/// valid or not (a torn copy's first sector may hold a new record's).
fn claimed_sequence(bytes: &[u8]) -> Option<u64> {
    let u64_at = |offset: usize| u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap());
    (u64_at(SB_MAGIC) == SUPERBLOCK_MAGIC).then(|| u64_at(SB_SEQUENCE))
}

fn decode_view_headers(bytes: &[u8]) -> Result<Vec<Header>, SuperblockError> {
    let count =
        u32::from_le_bytes(bytes[SB_VIEW_HEADERS_COUNT..SB_VIEW_HEADERS_COUNT + 4].try_into().unwrap()) as usize;
    if count > SUPERBLOCK_VIEW_HEADERS_MAX {
        return Err(SuperblockError::NoValidCopy);
    }
    (0..count)
        .map(|index| {
            let offset = SB_VIEW_HEADERS + index * HEADER_SIZE_BYTES;
            Header::decode(&bytes[offset..offset + HEADER_SIZE_BYTES]).map_err(|_| SuperblockError::NoValidCopy)
        })
        .collect()
}

/// The state a superblock file's bytes hold: the valid copy with the highest
/// sequence, as `open` would take it, with that sequence. For checkers that
/// read a disk's durable bytes rather than the replica's memory; `None` when
/// neither copy is valid (torn, zeroed, foreign or a short file).
pub fn decode_file(bytes: &[u8]) -> Result<Option<(u64, SuperblockState)>, SuperblockError> {
    let mut best: Option<CopyRecord> = None;
    for position in 0..SUPERBLOCK_READ_POSITIONS {
        let offset = (position * SUPERBLOCK_COPY_SIZE_BYTES) as usize;
        let Some(copy_bytes) = bytes.get(offset..offset + SUPERBLOCK_COPY_SIZE_BYTES as usize) else { continue };
        if let Some(copy) = CopyRecord::decode(copy_bytes)?
            && best.as_ref().is_none_or(|best| copy.sequence > best.sequence)
        {
            best = Some(copy);
        }
    }
    Ok(best.map(|copy| (copy.sequence, copy.state)))
}

/// The durable VSR state of one group on one replica.
#[derive(Debug)]
pub struct Superblock<I: Io> {
    file: I::File,
    writable: bool,
    cluster: u128,
    namespace: u64,
    replica: u8,
    /// The sequence of the last durable write.
    sequence: u64,
    /// The next sequence to write. Advances even when a write fails, and
    /// open starts it above any sequence a torn copy shows (within
    /// `SUPERBLOCK_SEQUENCES_LOST_MAX`), so a sequence number names one
    /// state only, even one a torn write lost.
    sequence_next: u64,
    state: SuperblockState,
}

impl<I: Io> Superblock<I> {
    /// Create a superblock with the zero state; durable (file, copies and
    /// directory entry) when this returns Ok.
    pub async fn create(
        io: &I,
        dir: &Path,
        cluster: u128,
        namespace: u64,
        replica: u8,
    ) -> Result<Self, SuperblockError> {
        let path = superblock_path(dir, namespace);
        // The dir durable in its parent first: a file in a dir whose entry
        // is not durable vanishes with it at a power loss, synced or not.
        crate::io::create_dir_durable(io, dir).await.map_err(io_error("create_dir"))?;
        let file = io.open(&path, OpenMode::ReadWriteCreate).await.map_err(io_error("create"))?;
        if file.size_bytes().await.map_err(io_error("stat"))? != 0 {
            return Err(SuperblockError::AlreadyExists { path });
        }
        file.set_len(superblock_file_size_bytes()).await.map_err(io_error("set_len"))?;
        let mut superblock = Superblock::empty(file, cluster, namespace, replica);
        superblock.write(SuperblockState::default()).await?;
        io.sync_dir(dir).await.map_err(io_error("fsync dir"))?;
        Ok(superblock)
    }

    /// A writable superblock over a new, sized `file` that holds no state
    /// yet: its first `write` is sequence 1.
    fn empty(file: I::File, cluster: u128, namespace: u64, replica: u8) -> Self {
        Superblock {
            file,
            writable: true,
            cluster,
            namespace,
            replica,
            sequence: 0,
            sequence_next: 1,
            state: SuperblockState::default(),
        }
    }

    /// Replace a superblock file none of whose copies is valid (or create
    /// a missing one) with a new one holding `state`, atomically (tmp →
    /// fsync → rename → fsync dir): a crash at any step leaves the damaged
    /// file (or none), or the new one, never a half-written one (a missing
    /// superblock reads as a replica never formatted, which may vote in
    /// view 0; a half-written one as damage). Durable when this returns Ok.
    pub async fn replace(
        io: &I,
        dir: &Path,
        cluster: u128,
        namespace: u64,
        replica: u8,
        state: SuperblockState,
    ) -> Result<Self, SuperblockError> {
        let path = superblock_path(dir, namespace);
        let tmp = path.with_extension("tmp");
        {
            let file = io.open(&tmp, OpenMode::ReadWriteCreate).await.map_err(io_error("create tmp"))?;
            file.set_len(0).await.map_err(io_error("truncate tmp"))?;
            file.set_len(superblock_file_size_bytes()).await.map_err(io_error("set_len tmp"))?;
            let mut fresh: Superblock<I> = Superblock::empty(file, cluster, namespace, replica);
            fresh.write(state.clone()).await?;
        }
        io.rename(&tmp, &path).await.map_err(io_error("rename"))?;
        io.sync_dir(dir).await.map_err(io_error("fsync dir"))?;
        let superblock = Superblock::open(io, dir, cluster, namespace, replica, OpenMode::ReadWrite).await?;
        assert_eq!(superblock.state, state, "the replacement reads back as written");
        Ok(superblock)
    }

    /// Open the superblock and take the valid copy with the highest sequence.
    pub async fn open(
        io: &I,
        dir: &Path,
        cluster: u128,
        namespace: u64,
        replica: u8,
        mode: OpenMode,
    ) -> Result<Self, SuperblockError> {
        let path = superblock_path(dir, namespace);
        let file_mode = if mode.writable() { OpenMode::ReadWrite } else { OpenMode::ReadOnly };
        let file = match io.open(&path, file_mode).await {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(SuperblockError::Missing { path }),
            Err(error) => return Err(SuperblockError::Io { operation: "open", source: error }),
        };
        let size_bytes = file.size_bytes().await.map_err(io_error("stat"))?;
        let mut best: Option<CopyRecord> = None;
        // What each copy's offset holds, to find the copies a failed write
        // left behind the newest one.
        let mut at_copy: Vec<Option<CopyRecord>> = Vec::with_capacity(SUPERBLOCK_COPIES as usize);
        // The highest sequence any position claims, valid or not: a write
        // torn since may have used one above the newest valid copy's.
        let mut claimed_max: Option<u64> = None;
        let mut unreadable = false;
        for position in 0..SUPERBLOCK_READ_POSITIONS {
            let offset = position * SUPERBLOCK_COPY_SIZE_BYTES;
            if offset + SUPERBLOCK_COPY_SIZE_BYTES > size_bytes {
                continue;
            }
            let read = crate::io::read_copy(&file, SUPERBLOCK_COPY_SIZE_BYTES as usize, offset).await;
            let Some(bytes) = read.map_err(io_error("read"))? else {
                // Unreadable (EIO): lost, as a rotten copy is. What it held
                // is unknown, so a sequence a write may have used there is
                // never reused (below).
                unreadable = true;
                if (0..SUPERBLOCK_COPIES).any(|index| superblock_copy_offset(index) == offset) {
                    at_copy.push(None);
                }
                continue;
            };
            claimed_max = claimed_max.max(claimed_sequence(&bytes));
            let decoded = CopyRecord::decode(&bytes)?;
            if (0..SUPERBLOCK_COPIES).any(|index| superblock_copy_offset(index) == offset) {
                at_copy.push(decoded.clone());
            }
            if let Some(copy) = decoded
                && best.as_ref().is_none_or(|best| copy.sequence > best.sequence)
            {
                best = Some(copy);
            }
        }
        let mut copy = best.ok_or(SuperblockError::NoValidCopy)?;
        if unreadable {
            claimed_max = claimed_max.max(Some(copy.sequence + SUPERBLOCK_SEQUENCES_LOST_MAX));
        }
        if copy.cluster != cluster || copy.namespace != namespace || copy.replica != replica {
            return Err(SuperblockError::WrongOwner {
                found: copy.cluster,
                found_namespace: copy.namespace,
                found_replica: copy.replica,
            });
        }
        if copy.state.log_view > copy.state.view {
            return Err(SuperblockError::InvalidState { state: copy.state });
        }
        // Never reuse a sequence a torn write may have put on the disk
        // (it named another state); one further above is damage.
        let lost = claimed_max
            .filter(|claimed| *claimed > copy.sequence && *claimed - copy.sequence <= SUPERBLOCK_SEQUENCES_LOST_MAX);
        let mut sequence_next = lost.unwrap_or(copy.sequence) + 1;
        if mode.writable() && Self::copies_lag(&copy, &at_copy) {
            copy = CopyRecord { sequence: sequence_next, ..copy };
            sequence_next += 1;
            Self::repair_lagging_copies(&file, &copy, &at_copy).await?;
        }
        Ok(Superblock {
            file,
            writable: mode.writable(),
            cluster,
            namespace,
            replica,
            sequence: copy.sequence,
            sequence_next,
            state: copy.state,
        })
    }

    /// Some copy does not hold `newest` (`at_copy`: what each copy's offset
    /// decoded to, in copy order; a short file has fewer entries).
    fn copies_lag(newest: &CopyRecord, at_copy: &[Option<CopyRecord>]) -> bool {
        (0..SUPERBLOCK_COPIES as usize).any(|index| at_copy.get(index).is_none_or(|held| held.as_ref() != Some(newest)))
    }

    /// Write `newest` (the newest valid state, under a fresh sequence)
    /// into every copy, each fsynced before the next, before the replica
    /// acts on it: first the copies that did not hold its state, then
    /// those that did (so a crash in this repair tears at most one copy,
    /// and one that holds the state survives it). A write that failed
    /// after its first copy (an fsync EIO, a crash) leaves copy B a state
    /// behind; the next write tears copy A at worst, and open must then
    /// find `newest` in copy B, not the older state a replica may already
    /// have contradicted (crash-loop seed 230: a view-1 log_view only in
    /// copy A, copy A torn by the view-2 write, copy B's log_view 0 let the
    /// replica's do_view_change disown ops it had acknowledged). Every copy
    /// gets the fresh sequence, so each open starts with all copies equal
    /// and a later torn write loses at most one sequence
    /// (`SUPERBLOCK_SEQUENCES_LOST_MAX`).
    async fn repair_lagging_copies(
        file: &I::File,
        newest: &CopyRecord,
        at_copy: &[Option<CopyRecord>],
    ) -> Result<(), SuperblockError> {
        let bytes = newest.encode();
        let holds_state = |index: u64| {
            at_copy.get(index as usize).is_some_and(|held| held.as_ref().is_some_and(|held| held.state == newest.state))
        };
        let (holding, lagging): (Vec<u64>, Vec<u64>) = (0..SUPERBLOCK_COPIES).partition(|&index| holds_state(index));
        for &index in &lagging {
            crate::marks::hit(crate::marks::SUPERBLOCK_COPY_REPAIRED);
            Self::write_copy(file, &bytes, index, ("write lagging copy", "fsync lagging copy")).await?;
        }
        for index in holding {
            Self::write_copy(file, &bytes, index, ("write copy", "fsync copy")).await?;
        }
        Ok(())
    }

    /// Write `bytes` over copy `index` and fsync it before any other copy is
    /// touched: a crash can tear only the copy in flight. `operations` name
    /// the write and the fsync in an error.
    async fn write_copy(
        file: &I::File,
        bytes: &[u8],
        index: u64,
        operations: (&'static str, &'static str),
    ) -> Result<(), SuperblockError> {
        let (result, _) = file.write_all_at(bytes.to_vec(), superblock_copy_offset(index)).await;
        result.map_err(io_error(operations.0))?;
        file.sync_data().await.map_err(io_error(operations.1))
    }

    /// The last durable state.
    pub fn state(&self) -> &SuperblockState {
        &self.state
    }

    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Make `state` durable. The view and commit never go back.
    pub async fn write(&mut self, state: SuperblockState) -> Result<(), SuperblockError> {
        if !self.writable {
            return Err(SuperblockError::ReadOnly);
        }
        if state.log_view > state.view {
            return Err(SuperblockError::InvalidState { state });
        }
        assert!(state.view >= self.state.view, "view never goes back");
        assert!(state.commit >= self.state.commit, "commit never goes back");
        assert!(state.nack_floor >= self.state.nack_floor, "the nack floor never goes back");
        let copy = CopyRecord {
            cluster: self.cluster,
            namespace: self.namespace,
            replica: self.replica,
            sequence: self.sequence_next,
            state: state.clone(),
        };
        self.sequence_next += 1;
        let bytes = copy.encode();
        for index in 0..SUPERBLOCK_COPIES {
            Self::write_copy(&self.file, &bytes, index, ("write", "fsync")).await?;
        }
        self.sequence = copy.sequence;
        self.state = state;
        debug_assert!(self.sequence < self.sequence_next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn copy() -> impl Strategy<Value = CopyRecord> {
        (any::<u128>(), any::<u64>(), any::<u8>(), any::<[u64; 5]>(), any::<bool>()).prop_map(
            |(cluster, namespace, replica, words, rejoining)| CopyRecord {
                cluster,
                namespace,
                replica,
                sequence: words[0],
                state: SuperblockState {
                    view: words[1],
                    log_view: words[2],
                    commit: words[3],
                    view_headers: Vec::new(),
                    rejoining,
                    nack_floor: words[4],
                },
            },
        )
    }

    #[test]
    fn decode_file_takes_the_valid_copy_with_the_highest_sequence() {
        let record = |sequence, view| CopyRecord {
            cluster: 1,
            namespace: 2,
            replica: 0,
            sequence,
            state: SuperblockState { view, log_view: view, ..SuperblockState::default() },
        };
        let mut file = record(7, 3).encode();
        file.extend(record(8, 4).encode());
        assert_eq!(decode_file(&file).unwrap().map(|(seq, s)| (seq, s.view)), Some((8, 4)));
        // Copy B torn mid-write: copy A (older) is what survives.
        file[SUPERBLOCK_COPY_SIZE_BYTES as usize + SB_VIEW] ^= 1;
        assert_eq!(decode_file(&file).unwrap().map(|(seq, s)| (seq, s.view)), Some((7, 3)));
        file[SB_VIEW] ^= 1;
        assert_eq!(decode_file(&file).unwrap(), None);
        assert_eq!(decode_file(&[]).unwrap(), None);
    }

    proptest! {
        #[test]
        fn copy_round_trips(copy in copy()) {
            prop_assert_eq!(CopyRecord::decode(&copy.encode()).unwrap(), Some(copy.clone()));
        }

        #[test]
        fn copy_bit_flip_is_invalid(copy in copy(), bit in 0usize..SB_ENCODED_BYTES * 8) {
            let mut bytes = copy.encode();
            bytes[bit / 8] ^= 1 << (bit % 8);
            // A flip in the version field of a valid copy cannot be valid:
            // the checksum covers it.
            prop_assert!(matches!(CopyRecord::decode(&bytes), Ok(None)));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), SB_ENCODED_BYTES..SB_ENCODED_BYTES + 8)) {
            let _ = CopyRecord::decode(&bytes);
        }
    }
}
