//! The durable, segmented log of one partition.
//!
//! Owns the on-disk record format, segment files, the offset index and crash
//! recovery of the messages a partition state machine appends once VSR has
//! committed them. Knows nothing of VSR or of shards; every effect goes
//! through `shoal_vsr::Io`, so the simulator can crash it between any two
//! steps.
//!
//! Layout: a directory of segment files named `{base_offset:020}.log`. Each
//! segment holds consecutive records
//! `[len u32][checksum u128][offset u64][payload: len bytes]` (little-endian),
//! where `checksum` is `shoal_vsr::header::checksum` of the offset and
//! payload bytes, so a record written to the wrong place fails its check.
//!
//! Durability: `append` writes; `sync` makes every appended record durable.
//! A segment rolls when the next record would take it past
//! `segment_size_max_bytes`: the old segment is fsynced, the new file is
//! created and the directory fsynced before any record goes into it. So every
//! segment but the last is durable and whole.
//!
//! Recovery (`open`) scans every segment and rebuilds the offset index. In the
//! last segment the first invalid record starts a torn tail (an unsynced
//! write cut by a crash) and is truncated away, unless a valid record follows
//! it, which a crash cannot produce: that is corruption in the middle, as is
//! any invalid record in an earlier segment. Corruption is a typed error: the
//! replica must repair the partition from a peer, never guess.

use std::io;
use std::path::{Path, PathBuf};

use shoal_vsr::header::{MESSAGE_SIZE_MAX_BYTES, checksum};
use shoal_vsr::{Io, IoFile, OpenMode};

/// A segment rolls once the next record would take it past this size.
pub const SEGMENT_SIZE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// `[len u32][checksum u128][offset u64]`.
pub const RECORD_HEADER_SIZE_BYTES: usize = 4 + 16 + 8;
/// One message's payload, bounded like a VSR message.
pub const RECORD_PAYLOAD_SIZE_MAX_BYTES: usize = MESSAGE_SIZE_MAX_BYTES as usize;
/// Messages one `append` takes.
pub const APPEND_MESSAGES_MAX: usize = 4096;
/// Records one `read` returns.
pub const READ_COUNT_MAX: usize = 4096;
/// Bytes one `read` loads (it returns at least one record, whatever its size).
pub const READ_SIZE_MAX_BYTES: u64 = 16 * 1024 * 1024;

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
    file: F,
    /// Bytes of valid records; the next record goes here.
    size_bytes: u64,
    /// Byte position of each record; offset = base_offset + index.
    positions: Vec<u64>,
}

impl<F> Segment<F> {
    fn next_offset(&self) -> u64 {
        self.base_offset + self.positions.len() as u64
    }

    fn record_end(&self, index: usize) -> u64 {
        self.positions.get(index + 1).copied().unwrap_or(self.size_bytes)
    }
}

/// One partition's log. Single owner (the partition's shard); not shared.
pub struct PartitionLog<I: Io> {
    io: I,
    dir: PathBuf,
    config: PartitionLogConfig,
    /// Sorted by base offset, contiguous; the last one is the active segment.
    segments: Vec<Segment<I::File>>,
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

fn encode_record(out: &mut Vec<u8>, offset: u64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(payload);
    let sum = checksum(&out[start + 20..]);
    out[start + 4..start + 20].copy_from_slice(&sum.to_le_bytes());
    debug_assert_eq!(out.len() - start, RECORD_HEADER_SIZE_BYTES + payload.len());
}

/// Why the record at the start of `bytes` is not the record for `offset`.
/// `bytes` is exactly one record (header plus the payload its length names).
fn check_record(bytes: &[u8], offset: u64) -> std::result::Result<(), &'static str> {
    debug_assert!(bytes.len() >= RECORD_HEADER_SIZE_BYTES);
    let stored = u128::from_le_bytes(bytes[4..20].try_into().expect("16 bytes"));
    if checksum(&bytes[20..]) != stored {
        return Err("checksum mismatch");
    }
    let stored_offset = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"));
    if stored_offset != offset {
        return Err("offset out of sequence");
    }
    Ok(())
}

fn payload_len(header: &[u8]) -> usize {
    u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize
}

async fn read_at<F: IoFile>(file: &F, path: &Path, position: u64, len: usize) -> Result<Vec<u8>> {
    let (result, buf) = file.read_exact_at(vec![0; len], position).await;
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

impl<I: Io> PartitionLog<I> {
    /// Open (or create) the log in `dir`, rebuilding the index and truncating
    /// a torn tail.
    pub async fn open(io: I, dir: &Path, config: PartitionLogConfig) -> Result<PartitionLog<I>> {
        assert!(config.segment_size_max_bytes > RECORD_HEADER_SIZE_BYTES as u64);
        io.create_dir_all(dir).await.map_err(io_error("create_dir_all", dir))?;
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
        let mut log = PartitionLog { io, dir: dir.to_path_buf(), config, segments: Vec::new() };
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
            let segment = log.scan_segment(base_offset, path, index == last).await?;
            log.segments.push(segment);
        }
        debug_assert!(log.segments.windows(2).all(|w| w[0].next_offset() == w[1].base_offset));
        Ok(log)
    }

    async fn scan_segment(&self, base_offset: u64, path: PathBuf, active: bool) -> Result<Segment<I::File>> {
        // Sealed segments are never written again: open them read-only.
        let mode = if active { OpenMode::ReadWrite } else { OpenMode::ReadOnly };
        let file = self.io.open(&path, mode).await.map_err(io_error("open", &path))?;
        let file_size = file.size_bytes().await.map_err(io_error("size", &path))?;
        let mut positions = Vec::new();
        let mut position = 0u64;
        while position < file_size {
            let offset = base_offset + positions.len() as u64;
            match probe_record(&file, &path, position, file_size, offset).await? {
                Ok(record_size) => {
                    positions.push(position);
                    position += record_size;
                }
                Err(reason) => {
                    if !active || self.valid_record_follows(&file, &path, position, file_size, offset).await? {
                        return Err(PartitionLogError::Corrupt { path, position, reason });
                    }
                    tracing::warn!(?path, position, reason, "partition log: truncating torn tail");
                    file.set_len(position).await.map_err(io_error("truncate", &path))?;
                    file.sync_data().await.map_err(io_error("sync", &path))?;
                    break;
                }
            }
        }
        debug_assert!(position <= file_size);
        Ok(Segment { base_offset, path, file, size_bytes: position, positions })
    }

    /// Whether the bad record at `position` (for `offset`) is followed by a
    /// valid record for `offset + 1`: then the bad one was corrupted in place
    /// rather than torn by a crash.
    async fn valid_record_follows(
        &self,
        file: &I::File,
        path: &Path,
        position: u64,
        file_size: u64,
        offset: u64,
    ) -> Result<bool> {
        if file_size - position < RECORD_HEADER_SIZE_BYTES as u64 {
            return Ok(false);
        }
        let header = read_at(file, path, position, RECORD_HEADER_SIZE_BYTES).await?;
        let len = payload_len(&header);
        if len > RECORD_PAYLOAD_SIZE_MAX_BYTES {
            return Ok(false);
        }
        let next = position + (RECORD_HEADER_SIZE_BYTES + len) as u64;
        if next >= file_size {
            return Ok(false);
        }
        Ok(probe_record(file, path, next, file_size, offset + 1).await?.is_ok())
    }

    async fn create_segment(&mut self, base_offset: u64) -> Result<()> {
        debug_assert!(self.segments.last().is_none_or(|s| s.next_offset() == base_offset));
        let path = self.dir.join(segment_file_name(base_offset));
        let file = self.io.open(&path, OpenMode::ReadWriteCreate).await.map_err(io_error("create", &path))?;
        // A stale file of that name (from a crash before its first record)
        // holds nothing durable that the index knows about.
        file.set_len(0).await.map_err(io_error("truncate", &path))?;
        file.sync_data().await.map_err(io_error("sync", &path))?;
        // The new name is durable only once the directory is fsynced.
        self.io.sync_dir(&self.dir).await.map_err(io_error("sync_dir", &self.dir))?;
        self.segments.push(Segment { base_offset, path, file, size_bytes: 0, positions: Vec::new() });
        Ok(())
    }

    async fn roll(&mut self) -> Result<()> {
        let active = self.active();
        assert!(!active.positions.is_empty(), "rolling an empty segment");
        // Seal: the old segment must be durable and whole before the next one
        // exists, so recovery may treat only the last segment's tail as torn.
        active.file.sync_data().await.map_err(io_error("sync", &active.path))?;
        let base_offset = active.next_offset();
        self.create_segment(base_offset).await
    }

    fn active(&self) -> &Segment<I::File> {
        self.segments.last().expect("a log always has an active segment")
    }

    async fn write_active(&mut self, buf: Vec<u8>, positions: &mut Vec<u64>) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let active = self.segments.last_mut().expect("active segment");
        let len = buf.len() as u64;
        let (result, _buf) = active.file.write_all_at(buf, active.size_bytes).await;
        result.map_err(io_error("write", &active.path))?;
        // Only a completed write extends the index: no phantom offsets.
        active.positions.append(positions);
        active.size_bytes += len;
        Ok(())
    }

    /// Append `messages` as consecutive offsets and return the first one.
    /// Not durable until `sync`. On an error, the records written before it
    /// stay (see `next_offset`); treat a storage error as fatal for the
    /// replica and reopen, which re-derives the log from disk.
    pub async fn append(&mut self, messages: &[Vec<u8>]) -> Result<u64> {
        if messages.is_empty() || messages.len() > APPEND_MESSAGES_MAX {
            return Err(PartitionLogError::BatchSize { count: messages.len() });
        }
        if let Some(message) = messages.iter().find(|m| m.len() > RECORD_PAYLOAD_SIZE_MAX_BYTES) {
            return Err(PartitionLogError::PayloadTooLarge { size_bytes: message.len() });
        }
        let first_offset = self.next_offset();
        let mut buf = Vec::new();
        let mut positions = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            let offset = first_offset + i as u64;
            let record_size = (RECORD_HEADER_SIZE_BYTES + message.len()) as u64;
            let used = self.active().size_bytes + buf.len() as u64;
            // A segment holds at least one record, even one larger than the max.
            if used > 0 && used + record_size > self.config.segment_size_max_bytes {
                self.write_active(std::mem::take(&mut buf), &mut positions).await?;
                self.roll().await?;
            }
            positions.push(self.active().size_bytes + buf.len() as u64);
            encode_record(&mut buf, offset, message);
        }
        self.write_active(buf, &mut positions).await?;
        assert_eq!(self.next_offset(), first_offset + messages.len() as u64);
        Ok(first_offset)
    }

    /// Up to `max_count` records from `offset` on (fewer at the end of the
    /// log or past `READ_SIZE_MAX_BYTES`), each verified against its checksum.
    pub async fn read(&self, offset: u64, max_count: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let first_offset = self.first_offset();
        if offset < first_offset {
            return Err(PartitionLogError::OffsetBeforeStart { offset, first_offset });
        }
        let mut out = Vec::new();
        let count_max = max_count.min(READ_COUNT_MAX);
        let mut offset = offset;
        let mut loaded_bytes = 0u64;
        let mut segment_index = self.segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1);
        while out.len() < count_max && offset < self.next_offset() {
            let segment = &self.segments[segment_index];
            if offset >= segment.next_offset() {
                segment_index += 1;
                continue;
            }
            let first = (offset - segment.base_offset) as usize;
            let mut last = first; // exclusive
            while last < segment.positions.len() && out.len() + (last - first) < count_max {
                let size = segment.record_end(last) - segment.positions[last];
                if (last > first || !out.is_empty()) && loaded_bytes + size > READ_SIZE_MAX_BYTES {
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
            let bytes = read_at(&segment.file, &segment.path, start, (end - start) as usize).await?;
            for index in first..last {
                let at = (segment.positions[index] - start) as usize;
                let record = &bytes[at..(segment.record_end(index) - start) as usize];
                let record_offset = segment.base_offset + index as u64;
                check_record(record, record_offset).map_err(|reason| PartitionLogError::Corrupt {
                    path: segment.path.clone(),
                    position: segment.positions[index],
                    reason,
                })?;
                out.push((record_offset, record[RECORD_HEADER_SIZE_BYTES..].to_vec()));
            }
            offset = segment.base_offset + last as u64;
        }
        debug_assert!(out.windows(2).all(|w| w[0].0 + 1 == w[1].0));
        Ok(out)
    }

    /// Make every appended record durable.
    pub async fn sync(&self) -> Result<()> {
        let active = self.active();
        active.file.sync_data().await.map_err(io_error("sync", &active.path))
    }

    /// The offset the next appended message gets.
    pub fn next_offset(&self) -> u64 {
        self.active().next_offset()
    }

    /// The first offset this log holds (0 until retention exists).
    pub fn first_offset(&self) -> u64 {
        self.segments.first().expect("a log always has a segment").base_offset
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
