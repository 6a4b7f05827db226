//! Checkpoint file: the durable `Checkpoint` (anchor header + replica
//! snapshot) of one VSR group, `checkpoint-<namespace>` in the data dir.
//!
//! Owns the file format and its atomic replace (tmp → fsync → rename → fsync
//! dir). Knows nothing of the journal: the driver drains the journal only
//! after `write_checkpoint` returned Ok.
//!
//! Format of one copy: `[u64 magic][256-byte anchor header][u64 snapshot
//! len][snapshot][u128 checksum of everything before it]`. The snapshot is
//! the replica's (`[u32 len][state machine snapshot][client sessions]`).
//!
//! The file holds two identical copies, each zero-padded to a multiple of
//! `COPY_ALIGN_BYTES`, so no sector holds bytes of both: one rotten or
//! unreadable sector costs one copy, and the replica still restarts from the
//! other (a single copy made one bad sector stop the replica for good).
//! A file that is not two aligned copies is read as one copy (the format
//! before copies).

use std::io;
use std::path::{Path, PathBuf};

use crate::header::{HEADER_SIZE_BYTES, Header, checksum};
use crate::io::{Io, IoFile, OpenMode};
use crate::replica::Checkpoint;

pub const CHECKPOINT_MAGIC: u64 = 0x7368_6f61_6c63_6b70;
/// The largest checkpoint file a replica reads into memory.
pub const CHECKPOINT_SIZE_MAX_BYTES: u64 = 256 * 1024 * 1024;
const MAGIC_SIZE_BYTES: usize = 8;
const LEN_SIZE_BYTES: usize = 8;
const CHECKSUM_SIZE_BYTES: usize = 16;
const FIXED_SIZE_BYTES: usize = MAGIC_SIZE_BYTES + HEADER_SIZE_BYTES + LEN_SIZE_BYTES + CHECKSUM_SIZE_BYTES;
/// Each copy starts on its own sector (a sector is the unit of rot and EIO).
pub const COPY_ALIGN_BYTES: u64 = 4096;
/// Copies of the checkpoint in its file.
pub const COPIES_COUNT: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint file {operation} failed: {source}; check the disk, then restart the replica")]
    Io { operation: &'static str, source: io::Error },
    #[error("checkpoint file is corrupt ({reason}): state-transfer from a peer")]
    Corrupt { reason: &'static str },
}

fn io_error(operation: &'static str) -> impl FnOnce(io::Error) -> CheckpointError {
    move |source| CheckpointError::Io { operation, source }
}

/// The checkpoint file of `namespace` inside `dir`.
pub fn checkpoint_path(dir: &Path, namespace: u64) -> PathBuf {
    dir.join(format!("checkpoint-{namespace:016x}"))
}

pub fn encode(checkpoint: &Checkpoint) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FIXED_SIZE_BYTES + checkpoint.snapshot.len());
    bytes.extend_from_slice(&CHECKPOINT_MAGIC.to_le_bytes());
    bytes.extend_from_slice(&checkpoint.anchor.encode());
    bytes.extend_from_slice(&(checkpoint.snapshot.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&checkpoint.snapshot);
    let sum = checksum(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    debug_assert_eq!(bytes.len(), FIXED_SIZE_BYTES + checkpoint.snapshot.len());
    bytes
}

/// The whole file: `COPIES_COUNT` copies, each padded to `COPY_ALIGN_BYTES`.
pub fn encode_file(checkpoint: &Checkpoint) -> Vec<u8> {
    let mut copy = encode(checkpoint);
    let region_size_bytes = (copy.len() as u64).div_ceil(COPY_ALIGN_BYTES) * COPY_ALIGN_BYTES;
    copy.resize(region_size_bytes as usize, 0);
    let file = copy.repeat(COPIES_COUNT as usize);
    debug_assert!(decode_region(&file[..region_size_bytes as usize]).is_ok());
    file
}

/// Decode one padded copy: its length is in the copy, the rest is padding.
fn decode_region(region: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let len_at = MAGIC_SIZE_BYTES + HEADER_SIZE_BYTES;
    if region.len() < FIXED_SIZE_BYTES {
        return Err(CheckpointError::Corrupt { reason: "truncated" });
    }
    let len = u64::from_le_bytes(region[len_at..len_at + LEN_SIZE_BYTES].try_into().expect("8 bytes"));
    let end = len.checked_add(FIXED_SIZE_BYTES as u64).filter(|&end| end <= region.len() as u64);
    let Some(end) = end else { return Err(CheckpointError::Corrupt { reason: "snapshot length mismatch" }) };
    decode(&region[..end as usize])
}

/// Decode a whole checkpoint file as `read_checkpoint` reads it (either
/// copy, or the one copy of the format before copies), from its bytes: for
/// a reader that holds the file already (the simulator's checkers).
pub fn decode_file(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let size_bytes = bytes.len() as u64;
    if size_bytes == 0 || !size_bytes.is_multiple_of(COPIES_COUNT * COPY_ALIGN_BYTES) {
        return decode(bytes);
    }
    let region_size_bytes = (size_bytes / COPIES_COUNT) as usize;
    let mut first_error = None;
    for region in bytes.chunks_exact(region_size_bytes) {
        match decode_region(region) {
            Ok(checkpoint) => return Ok(checkpoint),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    Err(first_error.expect("COPIES_COUNT > 0"))
}

/// Decode one checkpoint copy; every malformed input is `Corrupt`, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    if bytes.len() < FIXED_SIZE_BYTES {
        return Err(CheckpointError::Corrupt { reason: "truncated" });
    }
    let (content, stored) = bytes.split_at(bytes.len() - CHECKSUM_SIZE_BYTES);
    if checksum(content) != u128::from_le_bytes(stored.try_into().expect("16 bytes")) {
        return Err(CheckpointError::Corrupt { reason: "checksum mismatch" });
    }
    if u64::from_le_bytes(content[..MAGIC_SIZE_BYTES].try_into().expect("8 bytes")) != CHECKPOINT_MAGIC {
        return Err(CheckpointError::Corrupt { reason: "bad magic" });
    }
    let anchor_end = MAGIC_SIZE_BYTES + HEADER_SIZE_BYTES;
    let anchor = Header::decode(&content[MAGIC_SIZE_BYTES..anchor_end])
        .map_err(|_| CheckpointError::Corrupt { reason: "anchor header invalid" })?;
    let len = u64::from_le_bytes(content[anchor_end..anchor_end + LEN_SIZE_BYTES].try_into().expect("8 bytes"));
    let snapshot = &content[anchor_end + LEN_SIZE_BYTES..];
    if len != snapshot.len() as u64 {
        return Err(CheckpointError::Corrupt { reason: "snapshot length mismatch" });
    }
    Ok(Checkpoint { anchor, snapshot: snapshot.to_vec() })
}

/// Durably replace the checkpoint of `namespace`: a crash at any step leaves
/// the old or the new file, never a torn one.
pub async fn write_checkpoint<I: Io>(
    io: &I,
    dir: &Path,
    namespace: u64,
    checkpoint: &Checkpoint,
) -> Result<(), CheckpointError> {
    stage_checkpoint(io, dir, namespace, checkpoint).await?;
    install_staged_checkpoint(io, dir, namespace).await
}

/// `write_checkpoint`'s first half: the new checkpoint written and fsynced
/// in the tmp file beside the current one, which it does not replace yet
/// (recovery never reads the tmp file). A caller may run it beside other
/// storage work that must be durable before the checkpoint is (the
/// partition log it counts), then install it.
pub async fn stage_checkpoint<I: Io>(
    io: &I,
    dir: &Path,
    namespace: u64,
    checkpoint: &Checkpoint,
) -> Result<(), CheckpointError> {
    let tmp = checkpoint_path(dir, namespace).with_extension("tmp");
    let file = io.open(&tmp, OpenMode::ReadWriteCreate).await.map_err(io_error("create tmp"))?;
    file.set_len(0).await.map_err(io_error("truncate tmp"))?;
    let (result, _) = file.write_all_at(encode_file(checkpoint), 0).await;
    result.map_err(io_error("write tmp"))?;
    file.sync_data().await.map_err(io_error("fsync tmp"))
}

/// `write_checkpoint`'s second half: the staged checkpoint replaces the
/// current one (rename, then the directory's fsync makes it durable).
pub async fn install_staged_checkpoint<I: Io>(io: &I, dir: &Path, namespace: u64) -> Result<(), CheckpointError> {
    let path = checkpoint_path(dir, namespace);
    io.rename(&path.with_extension("tmp"), &path).await.map_err(io_error("rename"))?;
    io.sync_dir(dir).await.map_err(io_error("fsync dir"))
}

/// Read the checkpoint of `namespace`; `None` when the group never checkpointed.
/// Opens the file read-only: safe from any shard.
pub async fn read_checkpoint<I: Io>(io: &I, dir: &Path, namespace: u64) -> Result<Option<Checkpoint>, CheckpointError> {
    let path = checkpoint_path(dir, namespace);
    let file = match io.open(&path, OpenMode::ReadOnly).await {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(CheckpointError::Io { operation: "open", source: error }),
    };
    let size_bytes = file.size_bytes().await.map_err(io_error("stat"))?;
    if size_bytes > CHECKPOINT_SIZE_MAX_BYTES {
        return Err(CheckpointError::Corrupt { reason: "larger than CHECKPOINT_SIZE_MAX_BYTES" });
    }
    if size_bytes < FIXED_SIZE_BYTES as u64 {
        return Err(CheckpointError::Corrupt { reason: "truncated" });
    }
    let region_size_bytes = size_bytes / COPIES_COUNT;
    if !size_bytes.is_multiple_of(COPIES_COUNT * COPY_ALIGN_BYTES) {
        // One copy: the format before copies.
        let (result, bytes) = crate::io::read_exact_retrying(&file, vec![0; size_bytes as usize], 0).await;
        result.map_err(io_error("read"))?;
        return decode(&bytes).map(Some);
    }
    // Each copy is read on its own, so a read error costs one copy only.
    let mut first_error = None;
    for copy in 0..COPIES_COUNT {
        let read = crate::io::read_copy(&file, region_size_bytes as usize, copy * region_size_bytes).await;
        // A copy that fails every read with EIO is lost as a rotten one is:
        // with both lost, the group rebuilds from its peers.
        let decoded = read.map_err(io_error("read")).and_then(|region| match region {
            Some(region) => decode_region(&region),
            None => Err(CheckpointError::Corrupt { reason: "unreadable (EIO)" }),
        });
        match decoded {
            Ok(checkpoint) => return Ok(Some(checkpoint)),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    Err(first_error.expect("COPIES_COUNT > 0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Command;
    use proptest::prelude::*;

    fn checkpoint(op: u64, snapshot: Vec<u8>) -> Checkpoint {
        let mut anchor = Header::new(Command::Prepare, 7);
        anchor.op = op;
        anchor.set_checksums(&[]);
        Checkpoint { anchor, snapshot }
    }

    proptest! {
        #[test]
        fn round_trips(op in any::<u64>(), snapshot in prop::collection::vec(any::<u8>(), 0..300)) {
            let checkpoint = checkpoint(op, snapshot);
            let decoded = decode(&encode(&checkpoint)).unwrap();
            prop_assert_eq!(decoded.anchor, checkpoint.anchor);
            prop_assert_eq!(decoded.snapshot, checkpoint.snapshot);
        }

        #[test]
        fn bit_flip_is_corrupt(snapshot in prop::collection::vec(any::<u8>(), 0..64), bit in 0usize..(FIXED_SIZE_BYTES * 8)) {
            let mut bytes = encode(&checkpoint(3, snapshot));
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            let corrupt = matches!(decode(&bytes), Err(CheckpointError::Corrupt { .. }));
            prop_assert!(corrupt);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
            let _ = decode_region(&bytes);
        }

        #[test]
        fn one_rotten_copy_is_survived(snapshot in prop::collection::vec(any::<u8>(), 0..5000), bit in any::<usize>()) {
            let checkpoint = checkpoint(9, snapshot);
            let mut file = encode_file(&checkpoint);
            prop_assert_eq!(file.len() as u64 % (COPIES_COUNT * COPY_ALIGN_BYTES), 0);
            let region = file.len() / COPIES_COUNT as usize;
            let bit = bit % (file.len() * 8);
            file[bit / 8] ^= 1 << (bit % 8);
            let copy = bit / 8 / region;
            let other = &file[(1 - copy) * region..(2 - copy) * region];
            prop_assert_eq!(&decode_region(other).unwrap().snapshot, &checkpoint.snapshot);
            // The whole file decodes too, from the copy that survived.
            prop_assert_eq!(decode_file(&file).unwrap(), checkpoint);
        }

        #[test]
        fn a_whole_file_decodes_and_both_copies_rotten_do_not(snapshot in prop::collection::vec(any::<u8>(), 0..5000)) {
            let checkpoint = checkpoint(9, snapshot);
            let mut file = encode_file(&checkpoint);
            prop_assert_eq!(decode_file(&file).unwrap(), checkpoint.clone());
            prop_assert!(decode(&file).is_err(), "a two-copy file is not one copy");
            let region = file.len() / COPIES_COUNT as usize;
            file[0] ^= 1;
            file[region] ^= 1;
            prop_assert!(decode_file(&file).is_err());
            // The format before copies: one copy, unpadded.
            prop_assert_eq!(decode_file(&encode(&checkpoint)).unwrap(), checkpoint);
        }
    }
}
