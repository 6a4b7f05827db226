//! State transfer in pieces: cutting a checkpoint's snapshot into chunks
//! that each fit one frame, and assembling the chunks of one snapshot on
//! the receiving side.
//!
//! Owns the chunk arithmetic and the assembly buffer, nothing of the
//! protocol: the replica decides which chunks to accept (anchor checks,
//! views) and what to do with a whole snapshot. Memory is bounded: an
//! assembly holds one snapshot of at most `CHECKPOINT_SNAPSHOT_SIZE_MAX_BYTES`,
//! and chunks never overlap, so it never holds more than that.

use std::collections::BTreeMap;

use crate::header::{Header, checksum};
use crate::message::{CheckpointChunk, checkpoint_chunk_bytes_max};

/// The largest snapshot a replica sends or assembles. A state machine's
/// own bound must fit under it (the metadata group's snapshot is bounded
/// by `shoal_shard::handoff::METADATA_SNAPSHOT_SIZE_MAX_BYTES`).
pub const CHECKPOINT_SNAPSHOT_SIZE_MAX_BYTES: u64 = 128 * 1024 * 1024;

/// Chunks of another replica's snapshot of the checkpoint being assembled
/// that a replica refuses, with no chunk of its own snapshot taken in
/// between, before it gives that assembly up and starts over from the
/// start of whichever snapshot comes (`Replica::assemble_checkpoint`).
/// Snapshots of one checkpoint differ between replicas, and the one an
/// assembly holds may be on no running replica any more (swarm 1407). Not
/// at the first refusal: two peers answering at once would make each
/// other's answers start over, forever.
pub const CHECKPOINT_OTHER_SNAPSHOT_REFUSED_MAX: u32 = 32;

/// Chunks one answer to a catch-up request carries: the receiver asks for
/// the next piece when the answer's last chunk arrives, so a large snapshot
/// streams without flooding the sender's bounded send queue.
pub const CHECKPOINT_CHUNKS_PER_ANSWER_MAX: usize = 4;

/// The chunks of `snapshot` (whose checksum is `snapshot_checksum`) that
/// answer a request for the bytes from `from_offset_bytes`, each at most
/// `checkpoint_chunk_bytes_max(message_size_max_bytes)` bytes, at most
/// `chunks_max` of them (`CHECKPOINT_CHUNKS_PER_ANSWER_MAX` on a server);
/// the last is flagged. An
/// offset at or past the end (the requester assembles another snapshot, or
/// none) starts from the beginning.
pub fn chunks_from(
    anchor: Header,
    snapshot: &[u8],
    snapshot_checksum: u128,
    from_offset_bytes: u64,
    message_size_max_bytes: u32,
    chunks_max: usize,
) -> Vec<CheckpointChunk> {
    assert!(snapshot.len() as u64 <= CHECKPOINT_SNAPSHOT_SIZE_MAX_BYTES, "a snapshot within the transfer bound");
    assert!((1..=CHECKPOINT_CHUNKS_PER_ANSWER_MAX).contains(&chunks_max), "an answer carries 1..=4 chunks");
    let chunk_bytes_max = checkpoint_chunk_bytes_max(message_size_max_bytes);
    let start = if from_offset_bytes < snapshot.len() as u64 { from_offset_bytes as usize } else { 0 };
    let mut chunks = Vec::new();
    let mut offset = start;
    loop {
        let end = (offset + chunk_bytes_max).min(snapshot.len());
        chunks.push(CheckpointChunk {
            anchor,
            snapshot_size_bytes: snapshot.len() as u64,
            snapshot_checksum,
            offset_bytes: offset as u64,
            last_of_answer: false,
            bytes: snapshot[offset..end].to_vec(),
        });
        offset = end;
        if offset >= snapshot.len() || chunks.len() == chunks_max {
            break;
        }
    }
    chunks.last_mut().expect("at least one chunk").last_of_answer = true;
    debug_assert!(chunks.len() <= chunks_max);
    chunks
}

/// Why a chunk was not taken into the assembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkRefused {
    /// The snapshot is larger than `CHECKPOINT_SNAPSHOT_SIZE_MAX_BYTES`.
    TooLarge,
    /// It overlaps a chunk already held at another offset (a sender that
    /// cuts differently, or a broken one): dropping it keeps the buffer
    /// within the snapshot's size.
    Overlaps,
}

/// The chunks received so far of one snapshot.
#[derive(Debug, Clone)]
pub struct CheckpointAssembly {
    pub anchor: Header,
    pub snapshot_size_bytes: u64,
    pub snapshot_checksum: u128,
    /// By offset; no two overlap. Invariant: their lengths sum to
    /// `held_bytes`, at most `snapshot_size_bytes`.
    chunks: BTreeMap<u64, Vec<u8>>,
    held_bytes: u64,
    /// Chunks taken in, for the coverage mark of a transfer in pieces.
    chunks_taken: u64,
}

impl CheckpointAssembly {
    /// An empty assembly of the snapshot `chunk` belongs to.
    pub fn of(chunk: &CheckpointChunk) -> Result<CheckpointAssembly, ChunkRefused> {
        if chunk.snapshot_size_bytes > CHECKPOINT_SNAPSHOT_SIZE_MAX_BYTES {
            return Err(ChunkRefused::TooLarge);
        }
        Ok(CheckpointAssembly {
            anchor: chunk.anchor,
            snapshot_size_bytes: chunk.snapshot_size_bytes,
            snapshot_checksum: chunk.snapshot_checksum,
            chunks: BTreeMap::new(),
            held_bytes: 0,
            chunks_taken: 0,
        })
    }

    /// Is `chunk` a piece of this assembly's snapshot?
    pub fn holds_pieces_of(&self, chunk: &CheckpointChunk) -> bool {
        self.anchor.checksum == chunk.anchor.checksum
            && self.snapshot_size_bytes == chunk.snapshot_size_bytes
            && self.snapshot_checksum == chunk.snapshot_checksum
    }

    /// Take `chunk` in (a duplicate of a held chunk changes nothing).
    /// Precondition: `holds_pieces_of(chunk)`; `CheckpointChunk::decode`
    /// checked that it lies inside the snapshot.
    pub fn take(&mut self, chunk: CheckpointChunk) -> Result<(), ChunkRefused> {
        assert!(self.holds_pieces_of(&chunk), "a chunk of another snapshot");
        let start = chunk.offset_bytes;
        let end = start + chunk.bytes.len() as u64;
        assert!(end <= self.snapshot_size_bytes, "decode keeps a chunk inside its snapshot");
        if self.chunks.get(&start).is_some_and(|held| held.len() == chunk.bytes.len()) {
            return Ok(());
        }
        let before_overlaps =
            self.chunks.range(..=start).next_back().is_some_and(|(&offset, bytes)| offset + bytes.len() as u64 > start);
        let after_overlaps = self.chunks.range(start..).next().is_some_and(|(&offset, _)| offset < end);
        if before_overlaps || after_overlaps {
            return Err(ChunkRefused::Overlaps);
        }
        self.held_bytes += chunk.bytes.len() as u64;
        self.chunks_taken += 1;
        self.chunks.insert(start, chunk.bytes);
        assert!(self.held_bytes <= self.snapshot_size_bytes, "chunks never overlap");
        Ok(())
    }

    /// The first byte not held yet: what the next request asks for.
    pub fn first_missing_offset(&self) -> u64 {
        let mut covered = 0;
        for (&offset, bytes) in &self.chunks {
            if offset > covered {
                break;
            }
            covered = offset + bytes.len() as u64;
        }
        covered
    }

    pub fn is_complete(&self) -> bool {
        self.held_bytes == self.snapshot_size_bytes
    }

    /// Chunks taken in so far.
    pub fn chunks_taken(&self) -> u64 {
        self.chunks_taken
    }

    /// The whole snapshot, once complete, if it matches its checksum; `None`
    /// if the bytes do not (a sender that lied about them: start over).
    pub fn into_snapshot(self) -> Option<Vec<u8>> {
        assert!(self.is_complete(), "only a complete assembly is a snapshot");
        let mut snapshot = Vec::with_capacity(self.snapshot_size_bytes as usize);
        for (offset, bytes) in self.chunks {
            assert_eq!(offset, snapshot.len() as u64, "complete and non-overlapping chunks are contiguous");
            snapshot.extend_from_slice(&bytes);
        }
        (checksum(&snapshot) == self.snapshot_checksum).then_some(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{Command, HEADER_SIZE_BYTES};
    use crate::message::CHECKPOINT_CHUNK_PREFIX_BYTES;

    const FRAME_BYTES: u32 = 4096;

    fn anchor() -> Header {
        let mut anchor = Header::new(Command::Prepare, 1);
        anchor.op = 9;
        anchor.set_checksums(&[]);
        anchor
    }

    fn snapshot(size_bytes: usize) -> Vec<u8> {
        (0..size_bytes).map(|index| (index * 7 % 251) as u8).collect()
    }

    #[test]
    fn every_chunk_fits_its_frame_and_an_answer_is_bounded() {
        let bytes = snapshot(10 * checkpoint_chunk_bytes_max(FRAME_BYTES) + 5);
        let chunks = chunks_from(anchor(), &bytes, checksum(&bytes), 0, FRAME_BYTES, CHECKPOINT_CHUNKS_PER_ANSWER_MAX);
        assert_eq!(chunks.len(), CHECKPOINT_CHUNKS_PER_ANSWER_MAX);
        for chunk in &chunks {
            assert!(HEADER_SIZE_BYTES + chunk.encode().len() <= FRAME_BYTES as usize);
        }
        assert_eq!(chunks.iter().filter(|chunk| chunk.last_of_answer).count(), 1);
        assert!(chunks.last().unwrap().last_of_answer);
        assert_eq!(CHECKPOINT_CHUNK_PREFIX_BYTES + chunks[0].bytes.len() + HEADER_SIZE_BYTES, FRAME_BYTES as usize);
    }

    #[test]
    fn answers_from_the_first_missing_byte_assemble_the_snapshot() {
        let bytes = snapshot(10 * checkpoint_chunk_bytes_max(FRAME_BYTES) + 5);
        let sum = checksum(&bytes);
        let first = chunks_from(anchor(), &bytes, sum, 0, FRAME_BYTES, CHECKPOINT_CHUNKS_PER_ANSWER_MAX);
        let mut assembly = CheckpointAssembly::of(&first[0]).unwrap();
        let mut answers = 0;
        let mut answer = first;
        while !assembly.is_complete() {
            answers += 1;
            assert!(answers <= 3, "each answer moves the assembly on");
            for chunk in answer {
                assert!(assembly.holds_pieces_of(&chunk));
                assembly.take(chunk).unwrap();
            }
            answer = chunks_from(
                anchor(),
                &bytes,
                sum,
                assembly.first_missing_offset(),
                FRAME_BYTES,
                CHECKPOINT_CHUNKS_PER_ANSWER_MAX,
            );
        }
        assert_eq!(assembly.chunks_taken(), 11);
        assert_eq!(assembly.into_snapshot(), Some(bytes));
    }

    #[test]
    fn lost_chunks_are_asked_for_again_and_duplicates_change_nothing() {
        let bytes = snapshot(3 * checkpoint_chunk_bytes_max(FRAME_BYTES));
        let sum = checksum(&bytes);
        let answer = chunks_from(anchor(), &bytes, sum, 0, FRAME_BYTES, CHECKPOINT_CHUNKS_PER_ANSWER_MAX);
        let mut assembly = CheckpointAssembly::of(&answer[0]).unwrap();
        // The first chunk is lost; the others arrive twice.
        for chunk in answer.iter().skip(1).chain(answer.iter().skip(1)) {
            assembly.take(chunk.clone()).unwrap();
        }
        assert!(!assembly.is_complete());
        assert_eq!(assembly.first_missing_offset(), 0);
        let again = chunks_from(anchor(), &bytes, sum, 0, FRAME_BYTES, CHECKPOINT_CHUNKS_PER_ANSWER_MAX);
        assembly.take(again[0].clone()).unwrap();
        assert!(assembly.is_complete());
        assert_eq!(assembly.into_snapshot(), Some(bytes));
    }

    #[test]
    fn an_overlapping_chunk_is_refused_and_a_lying_sender_yields_no_snapshot() {
        let bytes = snapshot(100);
        let sum = checksum(&bytes);
        let whole = chunks_from(anchor(), &bytes, sum, 0, FRAME_BYTES, CHECKPOINT_CHUNKS_PER_ANSWER_MAX).remove(0);
        let mut assembly = CheckpointAssembly::of(&whole).unwrap();
        let mut half = whole.clone();
        half.offset_bytes = 50;
        half.bytes = bytes[50..].to_vec();
        assembly.take(half).unwrap();
        assert_eq!(assembly.take(whole.clone()), Err(ChunkRefused::Overlaps));
        let mut lie = whole.clone();
        lie.bytes = vec![0; 50];
        lie.offset_bytes = 0;
        assembly.take(lie).unwrap();
        assert!(assembly.is_complete());
        assert_eq!(assembly.into_snapshot(), None);
        let mut huge = whole;
        huge.snapshot_size_bytes = CHECKPOINT_SNAPSHOT_SIZE_MAX_BYTES + 1;
        assert!(matches!(CheckpointAssembly::of(&huge), Err(ChunkRefused::TooLarge)));
    }

    #[test]
    fn an_empty_snapshot_is_one_empty_chunk() {
        let chunks = chunks_from(anchor(), &[], checksum(&[]), 0, FRAME_BYTES, CHECKPOINT_CHUNKS_PER_ANSWER_MAX);
        assert_eq!(chunks.len(), 1);
        let mut assembly = CheckpointAssembly::of(&chunks[0]).unwrap();
        assert!(assembly.is_complete());
        assembly.take(chunks[0].clone()).unwrap();
        assert_eq!(assembly.into_snapshot(), Some(Vec::new()));
    }
}
