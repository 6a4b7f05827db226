//! The durable, segmented log of one partition.
//!
//! Owns the on-disk record format, segment files, the offset index and crash
//! recovery of the messages a partition state machine appends once VSR has
//! committed them. Knows nothing of VSR or of shards; every effect goes
//! through `shoal_vsr::Io`, so the simulator can crash it between any two
//! steps.
//!
//! Layout (format version 2): a directory of segment files named
//! `{base_offset:020}.log`. Each segment is
//! `[sync slot 0: 512 bytes][sync slot 1: 512 bytes][record]*`.
//!
//! A record is `[checksum u128][len u32][offset u64][payload: len bytes]`
//! (little-endian), where `checksum` is `shoal_vsr::header::checksum` of
//! everything after it (length, offset and payload), so a record written to
//! the wrong place, or whose length was damaged, fails its check.
//!
//! A sync slot holds the segment's sync marker,
//! `[checksum u128][magic u32][version u16][0 u16][base_offset u64][sequence u64][synced_size_bytes u64]`
//! then zero padding, `checksum` covering the 32 bytes after it. The marker
//! says: every byte of this file below `synced_size_bytes` is whole records
//! that a `sync` returned for. Each marker is written to both slots in one
//! write, and each slot is one sector: a torn write leaves each slot either
//! the new marker or the previous one (both whole; the higher `sequence`
//! wins), and rot in one slot leaves the other with the newest marker. An
//! earlier draft wrote marker `n` to slot `n % 2` only; the fuzzer found that
//! rot in the newest slot then silently moved the promise back to the older
//! marker, and a damaged record only the newest covered was dropped as torn.
//! `SEGMENT_FORMAT_VERSION` is 2: the format before it (call it 1) carried no
//! version, had no sync slots and put `len` first; it had no users to migrate.
//!
//! Durability: `append` writes; `sync` fsyncs the records, then writes the
//! next sync marker and fsyncs again. Two fsyncs, in that order: a marker
//! that reached the disk before the records it covers would call a torn
//! write corruption (the replica would refuse to start), and a record synced
//! but not covered by a durable marker would be treated as a torn tail (a
//! damaged one would be dropped silently). A segment rolls when the next
//! record would take its records past `segment_size_max_bytes`: the old
//! segment is synced and sealed (its marker covers the whole file), the new
//! file is created with its first marker and the directory fsynced before
//! any record goes into it. So every segment but the last is durable, whole
//! and covered by its marker.
//!
//! Recovery (`open`) scans every segment and rebuilds the offset index. Why a
//! marker rather than looking ahead for a valid record after a bad one: a
//! look-ahead cannot tell the two cases that matter apart. A damaged length
//! sends it to the wrong place, so it misses the next record and calls
//! damage in synced data a torn tail (silent loss of acknowledged records);
//! and page-cache writeback may persist the later sectors of an unsynced
//! batch before its earlier ones, so a valid record after a hole is also
//! what a crash produces (a false alarm that stops the replica). Only knowing
//! where the last sync ended separates them:
//! - below the marker's `synced_size_bytes`, any invalid record, or a record
//!   crossing that boundary, is corruption: a typed error, nothing truncated;
//! - from there on (last segment only) the bytes were never promised: the
//!   first invalid record starts a torn tail, and it and everything after it
//!   (including valid records past a hole) is truncated;
//! - a sealed segment longer than its marker, a marker naming another base
//!   offset, or no readable marker in a segment holding records is corruption.
//!   A last segment no longer than its two slots and with no readable marker
//!   is a creation cut by a crash (no record is written into a segment before
//!   its slots are durable) and is created again.
//!
//! Recovery then syncs what it kept and writes a new marker covering it
//! (always: the marker it read may itself live only in the page cache, after
//! a failed fsync), so the index never names a record a later recovery could
//! drop.
//!
//! What this assumes: a sector write is atomic (whole or not at all), as the
//! simulator models it. A write torn inside both slots' sectors at once would
//! leave no marker, which `open` refuses (an error, never a silent loss). A
//! misdirected marker write (the device put it elsewhere and reported
//! success) leaves the older marker in place: records synced after it are
//! then read as an unpromised tail, and one of them also damaged would be
//! dropped; catching that needs the marker read back from the medium.
//! Corruption is a typed error: the replica must repair the partition from a
//! peer, never guess.
//!
//! Open files: only the active segment keeps its file open. A sealed one is
//! closed once sealed (or scanned at open) and opened again, read-only, when
//! read, through a cache of the `SEALED_SEGMENT_FILES_OPEN_MAX` most recently
//! read, so a log holds a bounded number of files however many segments it
//! has (the node's budget, `shoal_shard::node::GROUP_FILES_OPEN_MAX`).
//!
//! Damage a salvage (`open_salvaging`) cuts: the log is truncated at the first
//! record it cannot read or check, which frees every page past it. The
//! records it keeps past the old marker are written again before the fsync
//! and the new marker that promise them: they were read from the page
//! cache, which after a failed fsync holds pages the device never got. Unreadable
//! sync slots mean an unreadable first page (the page cache reads and writes
//! whole pages): the salvage empties that segment before writing new slots,
//! since a write covering part of an unreadable page fails.

use std::cell::RefCell;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use shoal_vsr::header::{MESSAGE_SIZE_MAX_BYTES, checksum};
use shoal_vsr::{Io, IoFile, OpenMode};

use crate::node::join::join_pair;

/// A segment rolls once the next record would take its records (sync slots
/// excluded) past this size.
pub const SEGMENT_SIZE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Sealed segments kept open for reads (the most recently read); the others
/// are opened again when read. Without a bound a long-lived partition held
/// every segment it ever wrote open, and a server ran into its open-file
/// limit after some hundreds of GiB.
pub const SEALED_SEGMENT_FILES_OPEN_MAX: usize = 2;
/// `[checksum u128][len u32][offset u64]`.
pub const RECORD_HEADER_SIZE_BYTES: usize = 16 + 4 + 8;
/// One message's payload, bounded like a VSR message.
pub const RECORD_PAYLOAD_SIZE_MAX_BYTES: usize = MESSAGE_SIZE_MAX_BYTES as usize;
/// Messages one `append` takes.
pub const APPEND_MESSAGES_MAX: usize = 4096;
/// Records one `RecordBatch` holds (what one `append_batch` writes).
pub const APPEND_BATCH_MESSAGES_MAX: usize = 4 * 1024 * 1024;
/// Records one `read` returns.
pub const READ_COUNT_MAX: usize = 4096;
/// Bytes one `read` loads (it returns at least one record, whatever its size).
pub const READ_SIZE_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// The on-disk format this code writes and reads (see the module doc).
pub const SEGMENT_FORMAT_VERSION: u16 = 2;
/// One sync slot: one sector, so a torn write of the two slots leaves each whole.
pub const SYNC_SLOT_SIZE_BYTES: u64 = 512;
/// The two sync slots at the start of every segment; records follow.
pub const SEGMENT_HEADER_SIZE_BYTES: u64 = 2 * SYNC_SLOT_SIZE_BYTES;
/// `[checksum u128][magic u32][version u16][0 u16][base_offset u64][sequence u64][synced_size_bytes u64]`.
const SYNC_MARKER_SIZE_BYTES: usize = 16 + 4 + 2 + 2 + 8 + 8 + 8;
/// "SHPL": a segment of a shoal partition log.
const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"SHPL");

const _: () = assert!(SYNC_MARKER_SIZE_BYTES as u64 <= SYNC_SLOT_SIZE_BYTES);

const SEGMENT_EXTENSION: &str = "log";
const SEGMENT_NAME_DIGITS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLogConfig {
    pub segment_size_max_bytes: u64,
}

impl Default for PartitionLogConfig {
    fn default() -> Self {
        PartitionLogConfig { segment_size_max_bytes: SEGMENT_SIZE_MAX_BYTES }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PartitionLogError {
    #[error("partition log I/O failed ({operation} {path}): {source}; check the disk, then restart the replica")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "partition log segment {path} is corrupt at byte {position} ({reason}); this is not a torn tail: repair the partition from a peer replica"
    )]
    Corrupt { path: PathBuf, position: u64, reason: &'static str },
    #[error(
        "file {path} in the partition log directory is not a segment ({{20 digits}}.log); move it out of the directory"
    )]
    SegmentName { path: PathBuf },
    #[error(
        "segment {path} starts at offset {base_offset} but the previous segment ends at {expected_offset}: a segment is missing; repair the partition from a peer replica"
    )]
    SegmentGap { path: PathBuf, base_offset: u64, expected_offset: u64 },
    #[error("append of {count} messages is outside 1..={APPEND_MESSAGES_MAX}; split the batch")]
    BatchSize { count: usize },
    #[error(
        "message of {size_bytes} bytes exceeds {RECORD_PAYLOAD_SIZE_MAX_BYTES}; the client must send smaller messages"
    )]
    PayloadTooLarge { size_bytes: usize },
    #[error("offset {offset} is before the first offset {first_offset} kept in this partition log")]
    OffsetBeforeStart { offset: u64, first_offset: u64 },
}

type Result<T> = std::result::Result<T, PartitionLogError>;

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PartitionLogError {
    let path = path.to_path_buf();
    move |source| PartitionLogError::Io { operation, path, source }
}

struct Segment<F> {
    base_offset: u64,
    path: PathBuf,
    /// The active segment's file, shared with a sync running beside the log
    /// (`begin_sync`). `None` for a sealed segment: its reads go through the
    /// log's bounded `SealedFiles`.
    file: Option<Rc<F>>,
    /// End of the valid records; the next record goes here.
    size_bytes: u64,
    /// End of what the durable sync marker covers: every record below it was
    /// promised durable. `SEGMENT_HEADER_SIZE_BYTES <= synced_size_bytes <= size_bytes`.
    synced_size_bytes: u64,
    /// Sequence of the newest durable marker.
    sync_sequence: u64,
    /// Byte position of each record; offset = base_offset + index.
    positions: Vec<u64>,
    /// An fsync of this file failed since the last promise: Linux marked the
    /// dirty pages clean, so the unpromised records must be written again
    /// before an fsync can make them durable.
    fsync_failed: bool,
    /// Writes below this were handed to the device's writeback
    /// (`hint_writeback`). Only a hint: it says nothing of durability.
    writeback_hinted_bytes: u64,
}

/// Unsynced bytes of a segment past which its writeback is started
/// (`IoFile::start_writeback`): the log is synced only before a checkpoint,
/// and tens of MiB of dirty pages made that fdatasync a stall of 100-200 ms
/// for the whole group (`bench server`, batches of 1000: p99 121 ms).
pub const WRITEBACK_HINT_BYTES: u64 = 256 * 1024;

impl<F: IoFile> Segment<F> {
    /// The file of the active segment (sealed ones hold none).
    fn active_file(&self) -> &Rc<F> {
        self.file.as_ref().expect("only the active segment is written or synced")
    }

    /// Start the writeback of what was written since the last hint, once it
    /// is `WRITEBACK_HINT_BYTES` or more.
    fn hint_writeback(&mut self) {
        let start = self.writeback_hinted_bytes.max(self.synced_size_bytes);
        if self.size_bytes >= start + WRITEBACK_HINT_BYTES {
            self.active_file().start_writeback(start, self.size_bytes - start);
            self.writeback_hinted_bytes = self.size_bytes;
        }
    }
}

impl<F> Segment<F> {
    fn next_offset(&self) -> u64 {
        self.base_offset + self.positions.len() as u64
    }

    fn record_end(&self, index: usize) -> u64 {
        self.positions.get(index + 1).copied().unwrap_or(self.size_bytes)
    }

    /// Bytes of records, sync slots excluded (what the size bound counts).
    fn records_size_bytes(&self) -> u64 {
        self.size_bytes - SEGMENT_HEADER_SIZE_BYTES
    }
}

/// What `PartitionLog::open_salvaging` cut from a damaged log: every offset
/// from `first_lost_offset` on is gone from this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvage {
    pub first_lost_offset: u64,
    /// Why `open` refused the log: the damage that was cut off.
    pub damage: String,
    /// Where the salvage found the log first stop being whole. Only rot, a
    /// read that fails, a bug, or a disk that lost synced writes can put a
    /// cut there; the simulator, which knows what it damaged and where,
    /// holds every other cut to be a durability bug.
    pub cut: SalvageCut,
}

/// Where a salvage found the first damage of a log, by file and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SalvageCut {
    /// `segment` is not whole: its bytes in `places` read back wrong or
    /// not at all. The records from the first that failed its check to
    /// the end of the file, and the sync slots when no marker covers
    /// exactly the records that passed theirs.
    Segment { segment: PathBuf, places: Vec<Range<u64>> },
    /// No segment starts at `expected_offset`, where the one before ended
    /// (a salvage that a crash stopped between its cut and its removals
    /// leaves this; the damage it cut was in an earlier segment).
    Gap { expected_offset: u64 },
    /// Every segment read back whole on the salvage's own pass: what made
    /// `open` refuse was a read that failed then and not again.
    Nothing,
}

/// Cut the log in `dir` after its longest intact prefix: walk the segments
/// in order, and at the first one that is not whole (a record that fails its
/// check or cannot be read, a marker that is missing or does not cover
/// exactly its records, a base offset that does not follow on) truncate it
/// to its valid records, give it a marker covering them, and remove every
/// later segment. Returns the offset after the prefix.
///
/// Crash-safe in any order of its steps: the truncated segment is durable
/// with its new marker before later segments are removed, and a crash
/// between leaves a gap that the next `open` refuses and the next salvage
/// finishes.
async fn salvage_prefix<I: Io>(io: &I, dir: &Path) -> Result<(u64, SalvageCut)> {
    let mut bases = Vec::new();
    for path in io.list_dir(dir).await.map_err(io_error("list_dir", dir))? {
        if path.extension().and_then(|e| e.to_str()) == Some(SEGMENT_EXTENSION)
            && let Some(base) = parse_segment_name(&path)
        {
            bases.push((base, path));
        }
    }
    bases.sort();
    let mut expected = bases.first().map_or(0, |(base, _)| *base);
    let mut cut_from = bases.len();
    let mut cut = SalvageCut::Nothing;
    for (index, (base_offset, path)) in bases.iter().enumerate() {
        if *base_offset != expected {
            cut_from = index;
            cut = SalvageCut::Gap { expected_offset: expected };
            break;
        }
        let file = io.open(path, OpenMode::ReadWrite).await.map_err(io_error("open", path))?;
        let file_size = file.size_bytes().await.map_err(io_error("size", path))?;
        let (count, end) = intact_records(&file, path, *base_offset, file_size).await;
        // `None`: the sync slots cannot be read.
        let marker = newest_marker(&file, path, file_size).await.ok();
        let whole = end == file_size
            && marker.flatten().is_some_and(|m| m.base_offset == *base_offset && m.synced_size_bytes == end);
        if whole {
            expected = base_offset + count;
            continue;
        }
        cut =
            SalvageCut::Segment { segment: path.clone(), places: damage_places(end, file_size, *base_offset, marker) };
        let sequence = marker.flatten().map_or(1, |m| m.sequence + 1);
        // Truncating at the first bad record frees every page past it, the
        // damaged one with them. But unreadable sync slots mean an
        // unreadable first page (the page cache reads and writes whole
        // pages), which no write of the slots alone may cover: every
        // record goes, and the file is emptied before the slots are
        // written again.
        let (count, end) = if marker.is_none() {
            shoal_vsr::marks::hit(shoal_vsr::marks::PARTITION_SALVAGE_EMPTIED_SEGMENT);
            file.set_len(0).await.map_err(io_error("truncate", path))?;
            (0, SEGMENT_HEADER_SIZE_BYTES)
        } else {
            (count, end)
        };
        file.set_len(end).await.map_err(io_error("truncate", path))?;
        // The records past what a marker promised were read from the page
        // cache, which after a failed fsync holds pages the device never got
        // (clean, so no fsync writes them): rewritten, they are dirty again
        // and the fsync below makes them durable before the new marker
        // promises them (disk-rot seed 392; story `partition_lost_fsync`).
        // Below a marker a record was durable before the marker was written.
        let promised_end = marker
            .flatten()
            .filter(|marker| marker.base_offset == *base_offset)
            .map_or(SEGMENT_HEADER_SIZE_BYTES, |marker| marker.synced_size_bytes.clamp(SEGMENT_HEADER_SIZE_BYTES, end));
        if end > promised_end {
            shoal_vsr::marks::hit(shoal_vsr::marks::PARTITION_SALVAGE_REWROTE_UNPROMISED);
            rewrite_range(&file, path, promised_end, end).await?;
        }
        let marker = SyncMarker { base_offset: *base_offset, sequence, synced_size_bytes: end };
        let (result, _) = file.write_all_at(marker.encode_slots(), 0).await;
        result.map_err(io_error("write", path))?;
        file.sync_data().await.map_err(io_error("sync", path))?;
        expected = base_offset + count;
        cut_from = index + 1;
        break;
    }
    for (_, path) in &bases[cut_from..] {
        io.remove(path).await.map_err(io_error("remove", path))?;
    }
    if cut_from < bases.len() {
        io.sync_dir(dir).await.map_err(io_error("sync_dir", dir))?;
    }
    Ok((expected, cut))
}

/// The bytes of a segment that is not whole where damage must lie: from
/// the first record that failed its check (at `records_end`) to the end of
/// the file, and the sync slots when they hold no marker of this segment
/// that reaches `records_end` (a rotten newest slot leaves the older
/// marker, which covers fewer records). A marker that promises more than
/// the records that passed points at those records, not at itself (it
/// passed its checksum). Empty when the file is shorter than its valid
/// marker promised and every record in it passed: no damage to bytes does
/// that, only a lost write.
fn damage_places(
    records_end: u64,
    file_size: u64,
    base_offset: u64,
    marker: Option<Option<SyncMarker>>,
) -> Vec<Range<u64>> {
    let slots_suspect = match marker.flatten() {
        None => true,
        Some(marker) => marker.base_offset != base_offset || marker.synced_size_bytes < records_end,
    };
    let mut places = Vec::with_capacity(2);
    if slots_suspect {
        places.push(0..SEGMENT_HEADER_SIZE_BYTES);
    }
    if records_end < file_size {
        places.push(records_end..file_size);
    }
    places
}

/// How many records from the sync slots on pass their checks, and where they
/// end (at least the end of the slots). A record that cannot be read ends
/// the prefix like one that fails its checksum.
async fn intact_records<F: IoFile>(file: &F, path: &Path, base_offset: u64, file_size: u64) -> (u64, u64) {
    let mut count = 0u64;
    let mut position = SEGMENT_HEADER_SIZE_BYTES;
    while position < file_size {
        match probe_record(file, path, position, file_size, base_offset + count).await {
            Ok(Ok(record_size)) => {
                position += record_size;
                count += 1;
            }
            Ok(Err(_)) | Err(_) => break,
        }
    }
    (count, position)
}

/// The newest whole marker of a segment file (`None` when neither slot
/// holds one); `Err` when the slots cannot be read.
async fn newest_marker<F: IoFile>(file: &F, path: &Path, file_size: u64) -> Result<Option<SyncMarker>> {
    if file_size < SEGMENT_HEADER_SIZE_BYTES {
        return Ok(None);
    }
    let slots = read_at(file, path, 0, SEGMENT_HEADER_SIZE_BYTES as usize).await?;
    Ok(slots.chunks_exact(SYNC_SLOT_SIZE_BYTES as usize).filter_map(SyncMarker::decode).max_by_key(|m| m.sequence))
}

/// Records read by `PartitionLog::read_records`: dense offsets from
/// `first_offset`, each record verified, left where the read put them
/// (whole records, one buffer per segment touched).
#[derive(Debug, Default)]
pub struct RecordsRead {
    first_offset: u64,
    count: usize,
    payload_bytes: usize,
    chunks: Vec<Vec<u8>>,
}

impl RecordsRead {
    pub fn first_offset(&self) -> u64 {
        self.first_offset
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The payload bytes of every record (headers excluded).
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// `(offset, payload)` of each record, in order, borrowed from the buffers.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + Clone + '_ {
        self.records().map(|(offset, record)| (offset, &record[RECORD_HEADER_SIZE_BYTES..]))
    }

    /// `(offset, record checksum, payload)` of each record, in order: the
    /// checksum `RecordBatch::push` returned when it was written (verified
    /// against the record's bytes by the read).
    pub fn iter_with_checksums(&self) -> impl Iterator<Item = (u64, u128, &[u8])> + '_ {
        self.records().map(|(offset, record)| (offset, stored_checksum(record), &record[RECORD_HEADER_SIZE_BYTES..]))
    }

    fn records(&self) -> impl Iterator<Item = (u64, &[u8])> + Clone + '_ {
        self.chunks.iter().flat_map(|chunk| RecordsOf { bytes: chunk }).zip(self.first_offset..).map(|(r, o)| (o, r))
    }
}

/// The whole records of a buffer of whole, verified records.
#[derive(Clone)]
struct RecordsOf<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for RecordsOf<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.bytes.is_empty() {
            return None;
        }
        // `read_records` checked every record of the buffer: a length that
        // runs past it is a bug here, not damage.
        let len = payload_len(&self.bytes[..RECORD_HEADER_SIZE_BYTES]);
        let (record, rest) = self.bytes.split_at(RECORD_HEADER_SIZE_BYTES + len);
        self.bytes = rest;
        Some(record)
    }
}

/// Records encoded for `PartitionLog::append_batch`, at consecutive offsets
/// from `first_offset`, back to back as the log writes them. The caller
/// builds it as messages are applied, so each message is copied once (from
/// the committed prepare's body into its record) and hashed once (its
/// record checksum, which `push` returns for the caller to reuse); the
/// buffer keeps its capacity from one append to the next.
#[derive(Debug, Default)]
pub struct RecordBatch {
    first_offset: u64,
    bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    ends: Vec<usize>,
}

impl RecordBatch {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The offset of the first record, if any.
    pub fn first_offset(&self) -> Option<u64> {
        (!self.is_empty()).then_some(self.first_offset)
    }

    /// The offset after the last record, if any.
    pub fn end_offset(&self) -> Option<u64> {
        (!self.is_empty()).then_some(self.first_offset + self.len() as u64)
    }

    /// Encode `payload` as the record for `offset`, which must follow the
    /// last record, and return the record's checksum.
    pub fn push(&mut self, offset: u64, payload: &[u8]) -> u128 {
        assert!(payload.len() <= RECORD_PAYLOAD_SIZE_MAX_BYTES, "the caller bounds a message by the message size");
        assert!(self.len() < APPEND_BATCH_MESSAGES_MAX, "the caller bounds a batch");
        if self.is_empty() {
            self.first_offset = offset;
        }
        assert_eq!(self.first_offset + self.len() as u64, offset, "a batch's offsets are consecutive");
        let sum = encode_record(&mut self.bytes, offset, payload);
        self.ends.push(self.bytes.len());
        sum
    }

    fn record_start(&self, index: usize) -> usize {
        if index == 0 { 0 } else { self.ends[index - 1] }
    }

    /// `(offset, payload)` of each record, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        (0..self.len()).map(|index| {
            let record = &self.bytes[self.record_start(index)..self.ends[index]];
            (self.first_offset + index as u64, &record[RECORD_HEADER_SIZE_BYTES..])
        })
    }

    /// Drop the first `count` records (the log took them).
    pub fn remove_first(&mut self, count: usize) {
        assert!(count <= self.len());
        if count == self.len() {
            self.clear();
            return;
        }
        if count == 0 {
            return;
        }
        let cut = self.ends[count - 1];
        self.bytes.drain(..cut);
        self.ends.drain(..count);
        self.ends.iter_mut().for_each(|end| *end -= cut);
        self.first_offset += count as u64;
    }

    /// Drop every record at or past `offset`.
    pub fn truncate_from(&mut self, offset: u64) {
        let keep = offset.saturating_sub(self.first_offset).min(self.len() as u64) as usize;
        if keep == 0 {
            self.clear();
            return;
        }
        self.bytes.truncate(self.ends[keep - 1]);
        self.ends.truncate(keep);
    }

    /// Empty, keeping the buffers' capacity for the next records.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// One partition's log. Single owner (the partition's shard); not shared.
/// The files of the sealed segments read most recently, at most
/// `SEALED_SEGMENT_FILES_OPEN_MAX`, least recently read first. A read holds
/// its own `Rc` while it runs, so an evicted file closes when its last read
/// ends.
struct SealedFiles<F> {
    by_recency: Vec<(u64, Rc<F>)>,
}

impl<F> Default for SealedFiles<F> {
    fn default() -> SealedFiles<F> {
        SealedFiles { by_recency: Vec::with_capacity(SEALED_SEGMENT_FILES_OPEN_MAX) }
    }
}

impl<F> SealedFiles<F> {
    /// The file of the segment at `base_offset`, now the most recent.
    fn get(&mut self, base_offset: u64) -> Option<Rc<F>> {
        let index = self.by_recency.iter().position(|(base, _)| *base == base_offset)?;
        let entry = self.by_recency.remove(index);
        let file = Rc::clone(&entry.1);
        self.by_recency.push(entry);
        Some(file)
    }

    /// Keep `file` as the most recent, closing the least recent past the
    /// bound. Two reads that missed together both open it: one is kept.
    fn insert(&mut self, base_offset: u64, file: Rc<F>) {
        self.by_recency.retain(|(base, _)| *base != base_offset);
        if self.by_recency.len() == SEALED_SEGMENT_FILES_OPEN_MAX {
            self.by_recency.remove(0);
        }
        self.by_recency.push((base_offset, file));
        debug_assert!(self.by_recency.len() <= SEALED_SEGMENT_FILES_OPEN_MAX);
    }
}

pub struct PartitionLog<I: Io> {
    io: I,
    dir: PathBuf,
    config: PartitionLogConfig,
    /// Sorted by base offset, contiguous; the last one is the active segment.
    segments: Vec<Segment<I::File>>,
    /// The sealed segments' files open for reads, bounded.
    sealed_files: RefCell<SealedFiles<I::File>>,
    /// A sync of the active segment runs beside the log (`begin_sync`):
    /// nothing is written to the log until `end_sync`.
    sync_in_flight: bool,
}

impl<I: Io> std::fmt::Debug for PartitionLog<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("first_offset", &self.first_offset())
            .field("next_offset", &self.next_offset())
            .finish()
    }
}

/// The file name of the segment starting at `base_offset`.
pub fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:0width$}.{SEGMENT_EXTENSION}", width = SEGMENT_NAME_DIGITS)
}

fn parse_segment_name(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    if stem.len() != SEGMENT_NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Append the record for `offset` to `out` and return its checksum.
fn encode_record(out: &mut Vec<u8>, offset: u64, payload: &[u8]) -> u128 {
    let start = out.len();
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(payload);
    let sum = checksum(&out[start + 16..]);
    out[start..start + 16].copy_from_slice(&sum.to_le_bytes());
    debug_assert_eq!(out.len() - start, RECORD_HEADER_SIZE_BYTES + payload.len());
    sum
}

/// The checksum the record for `offset` holding `payload` carries (what
/// `RecordBatch::push` returns), computed apart from any batch: for paths
/// off the append path (a replayed op, a fetched message).
pub fn record_checksum(offset: u64, payload: &[u8]) -> u128 {
    let mut record = Vec::with_capacity(RECORD_HEADER_SIZE_BYTES + payload.len());
    encode_record(&mut record, offset, payload)
}

fn stored_checksum(record: &[u8]) -> u128 {
    u128::from_le_bytes(record[0..16].try_into().expect("16 bytes"))
}

/// Why `bytes` is not the record for `offset`. `bytes` is exactly one record
/// (header plus the payload its length names).
fn check_record(bytes: &[u8], offset: u64) -> std::result::Result<(), &'static str> {
    debug_assert!(bytes.len() >= RECORD_HEADER_SIZE_BYTES);
    if checksum(&bytes[16..]) != stored_checksum(bytes) {
        return Err("checksum mismatch");
    }
    let stored_offset = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"));
    if stored_offset != offset {
        return Err("offset out of sequence");
    }
    Ok(())
}

fn payload_len(header: &[u8]) -> usize {
    u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize
}

/// The sync marker of one slot, as the module doc lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SyncMarker {
    base_offset: u64,
    sequence: u64,
    synced_size_bytes: u64,
}

impl SyncMarker {
    /// One whole slot (marker then zero padding), ready to write.
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; SYNC_SLOT_SIZE_BYTES as usize];
        out[16..20].copy_from_slice(&SEGMENT_MAGIC.to_le_bytes());
        out[20..22].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        out[24..32].copy_from_slice(&self.base_offset.to_le_bytes());
        out[32..40].copy_from_slice(&self.sequence.to_le_bytes());
        out[40..48].copy_from_slice(&self.synced_size_bytes.to_le_bytes());
        let sum = checksum(&out[16..SYNC_MARKER_SIZE_BYTES]);
        out[0..16].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// Both slots, each holding this marker: one write of two sectors.
    fn encode_slots(&self) -> Vec<u8> {
        let mut slots = self.encode();
        slots.extend_from_slice(&self.encode());
        debug_assert_eq!(slots.len() as u64, SEGMENT_HEADER_SIZE_BYTES);
        slots
    }

    /// The marker in `slot` (at least `SYNC_MARKER_SIZE_BYTES`), if it is whole
    /// and of this format. The padding after it is not checked: nothing reads it.
    fn decode(slot: &[u8]) -> Option<SyncMarker> {
        let bytes = &slot[..SYNC_MARKER_SIZE_BYTES];
        let stored = u128::from_le_bytes(bytes[0..16].try_into().expect("16 bytes"));
        let field = |range: std::ops::Range<usize>| u64::from_le_bytes(bytes[range].try_into().expect("8 bytes"));
        let valid = checksum(&bytes[16..]) == stored
            && bytes[16..20] == SEGMENT_MAGIC.to_le_bytes()
            && bytes[20..22] == SEGMENT_FORMAT_VERSION.to_le_bytes()
            && bytes[22..24] == [0, 0];
        valid.then(|| SyncMarker {
            base_offset: field(24..32),
            sequence: field(32..40),
            synced_size_bytes: field(40..48),
        })
    }
}

/// Write `start..end` of `file` again with what reads see there: pages a
/// failed fsync marked clean (read back from the page cache, never on the
/// device) become dirty, so the next fsync makes them durable before a
/// marker promises them (`sync_segment`, `salvage_prefix`).
async fn rewrite_range<F: IoFile>(file: &F, path: &Path, start: u64, end: u64) -> Result<()> {
    debug_assert!(start <= end);
    let bytes = read_at(file, path, start, (end - start) as usize).await?;
    let (result, _buf) = file.write_all_at(bytes, start).await;
    result.map_err(io_error("write", path))
}

async fn read_at<F: IoFile>(file: &F, path: &Path, position: u64, len: usize) -> Result<Vec<u8>> {
    let (result, buf) = shoal_vsr::io::read_exact_retrying(file, vec![0; len], position).await;
    result.map_err(io_error("read", path))?;
    Ok(buf)
}

/// Read and verify the record at `position` if it lies wholly inside
/// `size_bytes`; returns its total size.
async fn probe_record<F: IoFile>(
    file: &F,
    path: &Path,
    position: u64,
    size_bytes: u64,
    offset: u64,
) -> Result<std::result::Result<u64, &'static str>> {
    if size_bytes - position < RECORD_HEADER_SIZE_BYTES as u64 {
        return Ok(Err("short record header"));
    }
    let header = read_at(file, path, position, RECORD_HEADER_SIZE_BYTES).await?;
    let len = payload_len(&header);
    if len > RECORD_PAYLOAD_SIZE_MAX_BYTES {
        return Ok(Err("record length out of range"));
    }
    let record_size = (RECORD_HEADER_SIZE_BYTES + len) as u64;
    if size_bytes - position < record_size {
        return Ok(Err("short record payload"));
    }
    let record = read_at(file, path, position, record_size as usize).await?;
    Ok(check_record(&record, offset).map(|()| record_size))
}

/// Write the next sync marker, covering `segment.size_bytes`, and make it
/// durable. The caller has already made those records durable (see the module
/// doc for why the order matters).
async fn write_sync_marker<F: IoFile>(segment: &mut Segment<F>) -> Result<()> {
    assert!(segment.size_bytes >= segment.synced_size_bytes, "a marker never takes back a promise");
    let marker = SyncMarker {
        base_offset: segment.base_offset,
        sequence: segment.sync_sequence + 1,
        synced_size_bytes: segment.size_bytes,
    };
    let (result, _buf) = segment.active_file().write_all_at(marker.encode_slots(), 0).await;
    result.map_err(io_error("write", &segment.path))?;
    segment.active_file().sync_data().await.map_err(io_error("sync", &segment.path))?;
    // Only a durable marker is a promise.
    segment.sync_sequence = marker.sequence;
    segment.synced_size_bytes = marker.synced_size_bytes;
    Ok(())
}

/// What `PartitionLog::begin_sync` found to do.
pub enum BeginSync<F> {
    /// Every record is promised already.
    Nothing,
    /// An fsync failed since the last promise: call `sync`, which writes
    /// the unpromised records again before it syncs them.
    InPlace,
    /// Run it (`SyncInFlight::run`), then hand its end to `end_sync`.
    Running(SyncInFlight<F>),
}

/// A sync of the active segment that owns what it needs: the records'
/// fsync, then the marker's write and fsync.
pub struct SyncInFlight<F> {
    file: Rc<F>,
    path: PathBuf,
    marker: SyncMarker,
}

// By hand: a derived impl would demand `F: Debug` of every backend.
impl<F> std::fmt::Debug for SyncInFlight<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncInFlight").field("path", &self.path).field("marker", &self.marker).finish()
    }
}

impl<F> std::fmt::Debug for BeginSync<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BeginSync::Nothing => f.write_str("Nothing"),
            BeginSync::InPlace => f.write_str("InPlace"),
            BeginSync::Running(sync) => f.debug_tuple("Running").field(sync).finish(),
        }
    }
}

/// How a `SyncInFlight` ended, for `PartitionLog::end_sync`.
#[derive(Debug)]
pub struct SyncEnded {
    marker: SyncMarker,
    /// Whether an fsync failed (the records must be written again), and why.
    failure: Option<(bool, PartitionLogError)>,
}

impl SyncEnded {
    /// Both fsyncs and the marker's write succeeded: `end_sync` promises.
    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }
}

impl<F: IoFile> SyncInFlight<F> {
    pub async fn run(self) -> SyncEnded {
        let SyncInFlight { file, path, marker } = self;
        let failure = match file.sync_data().await {
            Err(error) => Some((true, io_error("sync", &path)(error))),
            Ok(()) => {
                let (result, _buf) = file.write_all_at(marker.encode_slots(), 0).await;
                match result {
                    Err(error) => Some((false, io_error("write", &path)(error))),
                    Ok(()) => file.sync_data().await.err().map(|error| (false, io_error("sync", &path)(error))),
                }
            }
        };
        SyncEnded { marker, failure }
    }
}

/// Make every record of `segment` durable and promised: records first, then
/// the marker that covers them.
async fn sync_segment<F: IoFile>(segment: &mut Segment<F>) -> Result<()> {
    if segment.fsync_failed && segment.size_bytes > segment.synced_size_bytes {
        // After a failed fsync the pages read back from the cache but are
        // clean: a retried fsync would promise records the device never got.
        rewrite_range(&**segment.active_file(), &segment.path, segment.synced_size_bytes, segment.size_bytes).await?;
    }
    if let Err(error) = segment.active_file().sync_data().await {
        segment.fsync_failed = true;
        return Err(io_error("sync", &segment.path)(error));
    }
    segment.fsync_failed = false;
    if segment.size_bytes > segment.synced_size_bytes {
        write_sync_marker(segment).await?;
    }
    debug_assert_eq!(segment.synced_size_bytes, segment.size_bytes);
    Ok(())
}

impl<I: Io> PartitionLog<I> {
    /// Open (or create) the log in `dir`, rebuilding the index and truncating
    /// a torn tail.
    pub async fn open(io: I, dir: &Path, config: PartitionLogConfig) -> Result<PartitionLog<I>> {
        assert!(config.segment_size_max_bytes > RECORD_HEADER_SIZE_BYTES as u64);
        // Its entry in the data dir durable before any record is synced
        // into it: a partition dir only in the page cache takes every
        // segment with it at the next power loss.
        shoal_vsr::io::create_dir_durable(&io, dir).await.map_err(io_error("create_dir_durable", dir))?;
        // Recovery never trusts the directory cache either: a process that
        // crashed between creating a segment and fsyncing the directory
        // left a name that lists here but is not durable, and records
        // appended and synced into it would vanish with it at the next power
        // loss while a checkpoint counts them (swarm seed 915: a crash inside
        // a new cluster's first format, then a 1-replica partition lost
        // offsets 0..263 for good).
        io.sync_dir(dir).await.map_err(io_error("sync_dir", dir))?;
        let mut bases = Vec::new();
        for path in io.list_dir(dir).await.map_err(io_error("list_dir", dir))? {
            if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXTENSION) {
                continue;
            }
            let base =
                parse_segment_name(&path).ok_or_else(|| PartitionLogError::SegmentName { path: path.clone() })?;
            bases.push((base, path));
        }
        bases.sort();
        let mut log = PartitionLog {
            io,
            dir: dir.to_path_buf(),
            config,
            segments: Vec::new(),
            sealed_files: RefCell::new(SealedFiles::default()),
            sync_in_flight: false,
        };
        if bases.is_empty() {
            log.create_segment(0).await?;
            return Ok(log);
        }
        let last = bases.len() - 1;
        for (index, (base_offset, path)) in bases.into_iter().enumerate() {
            if let Some(previous) = log.segments.last()
                && previous.next_offset() != base_offset
            {
                return Err(PartitionLogError::SegmentGap {
                    path,
                    base_offset,
                    expected_offset: previous.next_offset(),
                });
            }
            let segment = if index == last {
                log.recover_active(base_offset, path).await?
            } else {
                log.scan_sealed(base_offset, path).await?
            };
            log.segments.push(segment);
        }
        debug_assert!(log.segments.windows(2).all(|w| w[0].next_offset() == w[1].base_offset));
        debug_assert!(log.segments.iter().all(|s| s.synced_size_bytes == s.size_bytes));
        Ok(log)
    }

    /// Open like `open`; where `open` finds damage (a corrupt record or
    /// marker, a missing segment, a read error), keep the longest intact prefix of records
    /// and cut the rest: the damaged record, everything after it in its
    /// segment, and every later segment. Returns what was cut.
    ///
    /// For a replica whose peers hold the partition: offsets cut here that a
    /// checkpoint counts are `missing()` to the partition state machine,
    /// which fetches them and appends them only once the checksum chain the
    /// cluster agreed on proves them; offsets above the checkpoint are
    /// applied again from the journal. A replica with no peers must use
    /// `open` and stop on its error: nobody could give the offsets back.
    pub async fn open_salvaging(
        io: I,
        dir: &Path,
        config: PartitionLogConfig,
    ) -> Result<(PartitionLog<I>, Option<Salvage>)> {
        let damage = match PartitionLog::open(io.clone(), dir, config).await {
            Ok(log) => return Ok((log, None)),
            // A read error is a latent sector error (sticky on real disks):
            // the same damage as rot, and the same remedy.
            Err(
                error @ (PartitionLogError::Io { operation: "read", .. }
                | PartitionLogError::Corrupt { .. }
                | PartitionLogError::SegmentGap { .. }),
            ) => error.to_string(),
            Err(other) => return Err(other),
        };
        tracing::warn!(%damage, "partition log: keeping the intact prefix; the rest comes from peers");
        let (first_lost_offset, cut) = salvage_prefix(&io, dir).await?;
        let log = PartitionLog::open(io, dir, config).await?;
        assert_eq!(log.next_offset(), first_lost_offset, "salvage left a log that opens as it said");
        Ok((log, Some(Salvage { first_lost_offset, damage, cut })))
    }

    /// The newest readable sync marker of `file`, if any.
    async fn read_sync_marker(&self, file: &I::File, path: &Path, file_size: u64) -> Result<Option<SyncMarker>> {
        if file_size < SEGMENT_HEADER_SIZE_BYTES {
            return Ok(None);
        }
        let slots = read_at(file, path, 0, SEGMENT_HEADER_SIZE_BYTES as usize).await?;
        let newest = slots
            .chunks_exact(SYNC_SLOT_SIZE_BYTES as usize)
            .filter_map(SyncMarker::decode)
            .max_by_key(|marker| marker.sequence);
        Ok(newest)
    }

    /// Check a segment's marker against its name and size: the marker is what
    /// says which bytes were promised, so a wrong one is corruption.
    fn check_marker(path: &Path, base_offset: u64, marker: SyncMarker, file_size: u64) -> Result<()> {
        let corrupt = |reason| Err(PartitionLogError::Corrupt { path: path.to_path_buf(), position: 0, reason });
        if marker.base_offset != base_offset {
            return corrupt("sync marker names another base offset");
        }
        if marker.synced_size_bytes < SEGMENT_HEADER_SIZE_BYTES {
            return corrupt("sync marker ends inside the sync slots");
        }
        if marker.synced_size_bytes > file_size {
            return corrupt("file is shorter than its synced size: synced records are missing");
        }
        Ok(())
    }

    /// Scan records from the sync slots to `scan_end`. Every record below
    /// `synced_size_bytes` must be valid and the records must meet it exactly
    /// (corruption otherwise). Past it, the scan stops at the first invalid
    /// record: returns the index and where the valid records end.
    async fn scan_records(
        &self,
        file: &I::File,
        path: &Path,
        base_offset: u64,
        synced_size_bytes: u64,
        scan_end: u64,
    ) -> Result<(Vec<u64>, u64)> {
        let mut positions = Vec::new();
        let mut position = SEGMENT_HEADER_SIZE_BYTES;
        while position < scan_end {
            let offset = base_offset + positions.len() as u64;
            match probe_record(file, path, position, scan_end, offset).await? {
                Ok(record_size) => {
                    if position < synced_size_bytes && position + record_size > synced_size_bytes {
                        // Markers are written at record boundaries only.
                        return Err(PartitionLogError::Corrupt {
                            path: path.to_path_buf(),
                            position,
                            reason: "record crosses the synced size",
                        });
                    }
                    positions.push(position);
                    position += record_size;
                }
                Err(reason) if position < synced_size_bytes => {
                    return Err(PartitionLogError::Corrupt { path: path.to_path_buf(), position, reason });
                }
                Err(reason) => {
                    tracing::warn!(?path, position, reason, "partition log: torn tail past the last sync");
                    break;
                }
            }
        }
        assert!(position >= synced_size_bytes, "every synced record was scanned");
        Ok((positions, position))
    }

    /// A sealed segment: never written again, so opened read-only, and its
    /// marker must cover the whole file.
    async fn scan_sealed(&self, base_offset: u64, path: PathBuf) -> Result<Segment<I::File>> {
        let file = self.io.open(&path, OpenMode::ReadOnly).await.map_err(io_error("open", &path))?;
        let file_size = file.size_bytes().await.map_err(io_error("size", &path))?;
        let Some(marker) = self.read_sync_marker(&file, &path, file_size).await? else {
            return Err(PartitionLogError::Corrupt { path, position: 0, reason: "sealed segment has no sync marker" });
        };
        Self::check_marker(&path, base_offset, marker, file_size)?;
        if marker.synced_size_bytes != file_size {
            // A segment is sealed (marker = whole file) before the next exists.
            return Err(PartitionLogError::Corrupt {
                path,
                position: marker.synced_size_bytes,
                reason: "sealed segment is longer than its seal",
            });
        }
        let (positions, size_bytes) = self.scan_records(&file, &path, base_offset, file_size, file_size).await?;
        debug_assert_eq!(size_bytes, file_size);
        Ok(Segment {
            base_offset,
            path,
            // Closed once scanned: its reads open it again (`segment_file`).
            file: None,
            size_bytes,
            synced_size_bytes: size_bytes,
            sync_sequence: marker.sequence,
            positions,
            fsync_failed: false,
            writeback_hinted_bytes: size_bytes,
        })
    }

    /// The last segment: synced records must be whole; an unsynced tail is
    /// truncated at its first invalid record; what is kept is synced and
    /// covered by a new marker.
    async fn recover_active(&self, base_offset: u64, path: PathBuf) -> Result<Segment<I::File>> {
        let file = self.io.open(&path, OpenMode::ReadWrite).await.map_err(io_error("open", &path))?;
        // Never trust the page cache: what recovery reads must be on the disk.
        file.sync_data().await.map_err(io_error("sync", &path))?;
        let file_size = file.size_bytes().await.map_err(io_error("size", &path))?;
        let marker = match self.read_sync_marker(&file, &path, file_size).await? {
            Some(marker) => marker,
            None if file_size <= SEGMENT_HEADER_SIZE_BYTES => {
                // Creation was cut by a crash: the first record is written
                // only after both slots are durable, so nothing is lost.
                tracing::warn!(?path, "partition log: segment creation was torn; creating it again");
                return self.initialize_segment(base_offset, path, file).await;
            }
            None => {
                return Err(PartitionLogError::Corrupt { path, position: 0, reason: "segment has no sync marker" });
            }
        };
        Self::check_marker(&path, base_offset, marker, file_size)?;
        let (positions, size_bytes) =
            self.scan_records(&file, &path, base_offset, marker.synced_size_bytes, file_size).await?;
        if size_bytes < file_size {
            file.set_len(size_bytes).await.map_err(io_error("truncate", &path))?;
        }
        let mut segment = Segment {
            base_offset,
            path,
            file: Some(Rc::new(file)),
            size_bytes,
            synced_size_bytes: marker.synced_size_bytes,
            sync_sequence: marker.sequence,
            positions,
            // Records past the marker were read from the page cache: an
            // earlier process may have seen its fsync fail on them (pages
            // clean, never written), so rewrite them before promising them.
            fsync_failed: true,
            writeback_hinted_bytes: size_bytes,
        };
        if size_bytes < file_size || size_bytes > marker.synced_size_bytes {
            sync_segment(&mut segment).await?;
        }
        // The marker itself may be such a page: written, its fsync failed,
        // read back here. Trusted as it is, it stays off the device, and a
        // roll that finds nothing to promise seals the segment with it: the
        // next power loss leaves a sealed segment longer than its durable
        // marker, which a salvage cuts with every later segment (swarm seed
        // 18237; story `partition_lost_fsync`). So every open promises the
        // active segment again, with a marker of its own.
        if segment.sync_sequence == marker.sequence {
            write_sync_marker(&mut segment).await?;
        }
        Ok(segment)
    }

    /// Empty `file` and give it its first marker (in both slots), durably.
    async fn initialize_segment(&self, base_offset: u64, path: PathBuf, file: I::File) -> Result<Segment<I::File>> {
        // A stale file of that name (from a crash before its first record)
        // holds nothing durable that the index knows about.
        file.set_len(0).await.map_err(io_error("truncate", &path))?;
        let marker = SyncMarker { base_offset, sequence: 0, synced_size_bytes: SEGMENT_HEADER_SIZE_BYTES };
        let (result, _buf) = file.write_all_at(marker.encode_slots(), 0).await;
        result.map_err(io_error("write", &path))?;
        file.sync_data().await.map_err(io_error("sync", &path))?;
        Ok(Segment {
            base_offset,
            path,
            file: Some(Rc::new(file)),
            size_bytes: SEGMENT_HEADER_SIZE_BYTES,
            synced_size_bytes: SEGMENT_HEADER_SIZE_BYTES,
            sync_sequence: 0,
            positions: Vec::new(),
            fsync_failed: false,
            writeback_hinted_bytes: SEGMENT_HEADER_SIZE_BYTES,
        })
    }

    /// Create the segment at `base_offset` and make it durable: its first
    /// marker and its name. The two fsyncs (the file's, the directory's)
    /// run at once: a crash that kept the name but not the marker leaves a
    /// last segment of only its slots with no readable marker, which
    /// `open` creates again; one that kept the marker but not the name
    /// leaves the sealed segment last, full, and the next append rolls
    /// again. Both were possible before too (a file system may make a new
    /// name durable before any directory fsync), and no record goes into
    /// the segment before both ended. One fsync less on every roll.
    async fn create_segment(&mut self, base_offset: u64) -> Result<()> {
        debug_assert!(self.segments.last().is_none_or(|s| s.next_offset() == base_offset));
        let path = self.dir.join(segment_file_name(base_offset));
        let file = self.io.open(&path, OpenMode::ReadWriteCreate).await.map_err(io_error("create", &path))?;
        let (segment, dir_synced) =
            join_pair(self.initialize_segment(base_offset, path, file), self.io.sync_dir(&self.dir)).await;
        let segment = segment?;
        // The new name is durable only once the directory is fsynced.
        dir_synced.map_err(io_error("sync_dir", &self.dir))?;
        self.segments.push(segment);
        Ok(())
    }

    async fn roll(&mut self) -> Result<()> {
        let active = self.segments.last_mut().expect("a log always has an active segment");
        assert!(!active.positions.is_empty(), "rolling an empty segment");
        // A failed write may have left bytes past the last record: a sealed
        // segment must end exactly where its marker says.
        active.active_file().set_len(active.size_bytes).await.map_err(io_error("truncate", &active.path))?;
        // Seal: the old segment must be durable, whole and covered by its
        // marker before the next one exists, so recovery may treat only the
        // last segment's tail as torn.
        sync_segment(active).await?;
        // Sealed: its reads open it again through the bounded cache, so a
        // log holds a bounded number of files however many it rolled.
        active.file = None;
        let base_offset = active.next_offset();
        self.create_segment(base_offset).await
    }

    /// The file to read segment `index` from: the active segment's own, or
    /// a sealed one's from the cache, opened again (read-only) on a miss.
    async fn segment_file(&self, index: usize) -> Result<Rc<I::File>> {
        let segment = &self.segments[index];
        if let Some(file) = &segment.file {
            return Ok(Rc::clone(file));
        }
        if let Some(file) = self.sealed_files.borrow_mut().get(segment.base_offset) {
            return Ok(file);
        }
        shoal_vsr::marks::hit(shoal_vsr::marks::PARTITION_SEALED_SEGMENT_REOPENED);
        let file = self.io.open(&segment.path, OpenMode::ReadOnly).await.map_err(io_error("open", &segment.path))?;
        let file = Rc::new(file);
        self.sealed_files.borrow_mut().insert(segment.base_offset, Rc::clone(&file));
        Ok(file)
    }

    fn active(&self) -> &Segment<I::File> {
        self.segments.last().expect("a log always has an active segment")
    }

    /// Write `bytes[range]` of `batch` (whole records `first..end`) at the
    /// end of the active segment. The whole buffer goes to the write as it
    /// is (the common case: no segment rolls inside the batch); a part is
    /// copied out first (once per roll).
    async fn write_active(&mut self, batch: &mut RecordBatch, first: usize, end: usize) -> Result<()> {
        debug_assert!(first < end && end <= batch.len());
        let (start, stop) = (batch.record_start(first), batch.ends[end - 1]);
        let whole = start == 0 && stop == batch.bytes.len();
        let buf = if whole { std::mem::take(&mut batch.bytes) } else { batch.bytes[start..stop].to_vec() };
        let active = self.segments.last_mut().expect("active segment");
        let (result, buf) = active.active_file().write_all_at(buf, active.size_bytes).await;
        if whole {
            batch.bytes = buf;
        }
        result.map_err(io_error("write", &active.path))?;
        // Only a completed write extends the index: no phantom offsets.
        let at = active.size_bytes;
        active.positions.extend((first..end).map(|index| at + (batch.record_start(index) - start) as u64));
        active.size_bytes += (stop - start) as u64;
        active.hint_writeback();
        Ok(())
    }

    /// How many of `messages`, from the first, the log appends without a
    /// roll, or with one roll at most when the first one rolls (the rest
    /// then fill the new segment): what one append writes with at most one
    /// roll. Lets a caller that must not roll twice in one call (a
    /// state-transfer fill, one roll per part) append them in one call
    /// instead of one append each.
    pub fn messages_fitting_one_roll<M: AsRef<[u8]>>(&self, messages: &[M]) -> usize {
        let fitting = self.messages_fitting(self.active().records_size_bytes(), messages);
        if fitting > 0 { fitting } else { self.messages_fitting(0, messages) }
    }

    /// How many of `messages` a segment with `used_bytes` of records takes
    /// (the rule of `append_batch`: a segment takes at least one record).
    fn messages_fitting<M: AsRef<[u8]>>(&self, mut used_bytes: u64, messages: &[M]) -> usize {
        let mut fitting = 0;
        for message in messages.iter().take(APPEND_MESSAGES_MAX) {
            let record_size = (RECORD_HEADER_SIZE_BYTES + message.as_ref().len()) as u64;
            if used_bytes > 0 && used_bytes + record_size > self.config.segment_size_max_bytes {
                break;
            }
            used_bytes += record_size;
            fitting += 1;
        }
        fitting
    }

    /// Append `messages` as consecutive offsets and return the first one.
    /// Not durable until `sync`. On an error, the records written before it
    /// stay (see `next_offset`); treat a storage error as fatal for the
    /// replica and reopen, which re-derives the log from disk.
    pub async fn append<M: AsRef<[u8]>>(&mut self, messages: &[M]) -> Result<u64> {
        if messages.is_empty() || messages.len() > APPEND_MESSAGES_MAX {
            return Err(PartitionLogError::BatchSize { count: messages.len() });
        }
        if let Some(message) = messages.iter().map(AsRef::as_ref).find(|m| m.len() > RECORD_PAYLOAD_SIZE_MAX_BYTES) {
            return Err(PartitionLogError::PayloadTooLarge { size_bytes: message.len() });
        }
        let first_offset = self.next_offset();
        let mut batch = RecordBatch::default();
        for (i, message) in messages.iter().map(AsRef::as_ref).enumerate() {
            batch.push(first_offset + i as u64, message);
        }
        self.append_batch(&mut batch).await
    }

    /// Append the records of `batch`, which must start at `next_offset()`,
    /// and return the first offset. Not durable until `sync`. The batch is
    /// left as it was (the caller drops what the log took, also after an
    /// error: the records written before it stay, see `append`).
    pub async fn append_batch(&mut self, batch: &mut RecordBatch) -> Result<u64> {
        let Some(first_offset) = batch.first_offset() else {
            return Err(PartitionLogError::BatchSize { count: 0 });
        };
        assert_eq!(first_offset, self.next_offset(), "a batch is encoded for the offsets the log appends next");
        assert!(!self.sync_in_flight, "nothing is appended while a sync runs beside the log");
        let mut written = 0;
        while written < batch.len() {
            // The records that fit in the active segment from here.
            let used = self.active().records_size_bytes();
            let start = batch.record_start(written);
            let mut end = written;
            while end < batch.len() {
                let used_then = used + (batch.record_start(end) - start) as u64;
                let record_size = (batch.ends[end] - batch.record_start(end)) as u64;
                // A segment holds at least one record, even one larger than the max.
                if used_then > 0 && used_then + record_size > self.config.segment_size_max_bytes {
                    break;
                }
                end += 1;
            }
            if end == written {
                self.roll().await?;
                continue;
            }
            self.write_active(batch, written, end).await?;
            written = end;
        }
        assert_eq!(self.next_offset(), first_offset + batch.len() as u64);
        Ok(first_offset)
    }

    /// Up to `max_count` records from `offset` on (fewer at the end of the
    /// log or past `READ_SIZE_MAX_BYTES`), each verified against its checksum.
    pub async fn read(&self, offset: u64, max_count: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        self.read_bounded(offset, max_count, READ_SIZE_MAX_BYTES).await
    }

    /// Like `read`, loading at most `size_max_bytes` of records (record
    /// headers included; at least one record, whatever its size), capped at
    /// `READ_SIZE_MAX_BYTES`: a client's read asks for one reply's worth.
    /// Each record is its own allocation; a reader that only looks at them
    /// uses `read_records`.
    pub async fn read_bounded(
        &self,
        offset: u64,
        max_count: usize,
        size_max_bytes: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let records = self.read_records(offset, max_count, size_max_bytes).await?;
        Ok(records.iter().map(|(offset, payload)| (offset, payload.to_vec())).collect())
    }

    /// Like `read_bounded`, but the records stay in the buffers they were
    /// read into (one per segment touched): nothing is copied out, so a
    /// reply can be built straight from them.
    pub async fn read_records(&self, offset: u64, max_count: usize, size_max_bytes: u64) -> Result<RecordsRead> {
        let size_max_bytes = size_max_bytes.min(READ_SIZE_MAX_BYTES);
        let first_offset = self.first_offset();
        if offset < first_offset {
            return Err(PartitionLogError::OffsetBeforeStart { offset, first_offset });
        }
        let mut out = RecordsRead { first_offset: offset, count: 0, payload_bytes: 0, chunks: Vec::new() };
        let count_max = max_count.min(READ_COUNT_MAX);
        let mut offset = offset;
        let mut loaded_bytes = 0u64;
        let mut segment_index = self.segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1);
        while out.count < count_max && offset < self.next_offset() {
            let segment = &self.segments[segment_index];
            if offset >= segment.next_offset() {
                segment_index += 1;
                continue;
            }
            let first = (offset - segment.base_offset) as usize;
            let mut last = first; // exclusive
            while last < segment.positions.len() && out.count + (last - first) < count_max {
                let size = segment.record_end(last) - segment.positions[last];
                if (last > first || out.count > 0) && loaded_bytes + size > size_max_bytes {
                    break;
                }
                loaded_bytes += size;
                last += 1;
            }
            if last == first {
                break; // the byte budget is spent
            }
            let start = segment.positions[first];
            let end = segment.record_end(last - 1);
            // Every byte of it is overwritten by the read: no zeroing first.
            let file = self.segment_file(segment_index).await?;
            let (result, bytes) =
                shoal_vsr::io::read_exact_uninit_retrying(&*file, Vec::new(), (end - start) as usize, start).await;
            result.map_err(io_error("read", &segment.path))?;
            for index in first..last {
                let at = (segment.positions[index] - start) as usize;
                let record = &bytes[at..(segment.record_end(index) - start) as usize];
                check_record(record, segment.base_offset + index as u64).map_err(|reason| {
                    PartitionLogError::Corrupt {
                        path: segment.path.clone(),
                        position: segment.positions[index],
                        reason,
                    }
                })?;
                out.payload_bytes += record.len() - RECORD_HEADER_SIZE_BYTES;
            }
            out.count += last - first;
            out.chunks.push(bytes);
            offset = segment.base_offset + last as u64;
        }
        debug_assert_eq!(out.iter().count(), out.count);
        Ok(out)
    }

    /// Make every appended record durable.
    pub async fn sync(&mut self) -> Result<()> {
        assert!(!self.sync_in_flight, "one sync at a time");
        let active = self.segments.last_mut().expect("a log always has an active segment");
        // Nothing written since the last promise: no fsync to pay (the
        // driver syncs before every checkpoint, written or not).
        if !active.fsync_failed && active.size_bytes == active.synced_size_bytes {
            return Ok(());
        }
        sync_segment(active).await
    }

    /// `sync`, split so that its fsyncs run beside the log's owner (a
    /// checkpoint off the commit path): the records appended so far and
    /// then the marker that covers them, from a future that owns what it
    /// needs (`SyncInFlight::run`). Until `end_sync` nothing is appended
    /// (asserted): the marker it writes covers exactly the records of now,
    /// and a roll could not seal the segment under it. After a failed
    /// fsync the unpromised records must be written again first, which
    /// reads the log: that is `sync`'s work (`BeginSync::InPlace`).
    pub fn begin_sync(&mut self) -> BeginSync<I::File> {
        assert!(!self.sync_in_flight, "one sync at a time");
        let active = self.segments.last().expect("a log always has an active segment");
        if active.fsync_failed {
            return BeginSync::InPlace;
        }
        if active.size_bytes == active.synced_size_bytes {
            return BeginSync::Nothing;
        }
        self.sync_in_flight = true;
        BeginSync::Running(SyncInFlight {
            file: Rc::clone(active.active_file()),
            path: active.path.clone(),
            marker: SyncMarker {
                base_offset: active.base_offset,
                sequence: active.sync_sequence + 1,
                synced_size_bytes: active.size_bytes,
            },
        })
    }

    /// The end of a sync `begin_sync` started: its marker is the promise
    /// now, or, when an fsync failed, the records wait to be written again.
    pub fn end_sync(&mut self, ended: SyncEnded) -> Result<()> {
        assert!(self.sync_in_flight, "end_sync without begin_sync");
        self.sync_in_flight = false;
        let active = self.segments.last_mut().expect("a log always has an active segment");
        assert_eq!(active.base_offset, ended.marker.base_offset, "no segment rolls while a sync runs");
        assert_eq!(active.size_bytes, ended.marker.synced_size_bytes, "nothing is appended while a sync runs");
        match ended.failure {
            None => {
                active.fsync_failed = false;
                active.sync_sequence = ended.marker.sequence;
                active.synced_size_bytes = ended.marker.synced_size_bytes;
                Ok(())
            }
            Some((failed_fsync, error)) => {
                active.fsync_failed |= failed_fsync;
                Err(error)
            }
        }
    }

    /// A sync runs beside the log (`begin_sync`).
    pub fn sync_in_flight(&self) -> bool {
        self.sync_in_flight
    }

    /// Bytes appended and not yet promised by a sync.
    pub fn unsynced_bytes(&self) -> u64 {
        let active = self.active();
        active.size_bytes - active.synced_size_bytes
    }

    /// The offset the next appended message gets.
    pub fn next_offset(&self) -> u64 {
        self.active().next_offset()
    }

    /// The first offset this log holds (0 until retention exists).
    pub fn first_offset(&self) -> u64 {
        self.segments.first().expect("a log always has a segment").base_offset
    }

    /// The first offset of the active (last) segment: every offset below it
    /// is in a sealed segment, durable and promised.
    pub fn active_base_offset(&self) -> u64 {
        self.active().base_offset
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_by_offset_and_parse_back() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
        assert_eq!(parse_segment_name(Path::new("/d/00000000000000000042.log")), Some(42));
        assert_eq!(parse_segment_name(Path::new("/d/42.log")), None);
        assert_eq!(parse_segment_name(Path::new("/d/0000000000000000004x.log")), None);
        assert!(segment_file_name(9) < segment_file_name(10));
    }

    #[test]
    fn record_batch_keeps_offsets_and_records_through_removal_and_truncation() {
        let mut batch = RecordBatch::default();
        assert_eq!((batch.first_offset(), batch.end_offset()), (None, None));
        for (offset, message) in [(7u64, &b"ab"[..]), (8, b""), (9, b"cde"), (10, b"f")] {
            assert_eq!(batch.push(offset, message), record_checksum(offset, message));
        }
        let payloads = |batch: &RecordBatch| batch.iter().map(|(o, p)| (o, p.to_vec())).collect::<Vec<_>>();
        assert_eq!(payloads(&batch), [(7, b"ab".to_vec()), (8, vec![]), (9, b"cde".to_vec()), (10, b"f".to_vec())]);
        batch.remove_first(2);
        assert_eq!((batch.first_offset(), batch.end_offset()), (Some(9), Some(11)));
        assert_eq!(payloads(&batch), [(9, b"cde".to_vec()), (10, b"f".to_vec())]);
        // What is left is still the records for those offsets, byte for byte.
        let mut expected = Vec::new();
        encode_record(&mut expected, 9, b"cde");
        encode_record(&mut expected, 10, b"f");
        assert_eq!(batch.bytes, expected);
        batch.truncate_from(10);
        assert_eq!(payloads(&batch), [(9, b"cde".to_vec())]);
        batch.truncate_from(3);
        assert!(batch.is_empty());
        batch.push(20, b"x");
        assert_eq!((batch.first_offset(), batch.len()), (Some(20), 1));
    }

    #[test]
    #[should_panic(expected = "consecutive")]
    fn record_batch_refuses_a_gap() {
        let mut batch = RecordBatch::default();
        batch.push(3, b"a");
        batch.push(5, b"b");
    }

    #[test]
    fn record_checksum_covers_offset_and_payload() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, b"hello");
        assert_eq!(buf.len(), RECORD_HEADER_SIZE_BYTES + 5);
        assert_eq!(payload_len(&buf), 5);
        assert_eq!(check_record(&buf, 7), Ok(()));
        assert_eq!(check_record(&buf, 8), Err("offset out of sequence"));
        let mut flipped = buf.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(check_record(&flipped, 7), Err("checksum mismatch"));
        let mut moved = buf.clone();
        moved[20] ^= 1; // the stored offset
        assert_eq!(check_record(&moved, 7), Err("checksum mismatch"));
    }
}
