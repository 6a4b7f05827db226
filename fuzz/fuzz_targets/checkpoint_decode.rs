//! Checkpoints from disk and from state transfer, built from the input: a
//! fuzz-chosen anchor header and snapshot, encoded with the real encoders
//! (`checkpoint::encode`, `checkpoint::encode_file`, `CheckpointChunk::encode`),
//! then fuzz-chosen damage. One mode reseals the copy's checksum and the
//! anchor's, so decoding gets past them.
//!
//! Fails on a wrong answer: undamaged bytes decode to exactly what was
//! encoded; a damaged copy or body decodes to a value that re-encodes to the
//! same bytes, or is an error; a damaged two-copy file read through
//! `read_checkpoint` yields the original checkpoint or an error (never a
//! forged one), and yields the original whenever one copy is untouched.
#![no_main]

#[path = "common.rs"]
mod common;

use std::path::Path;

use common::{Input, header, mutate, reseal_header};
use libfuzzer_sys::fuzz_target;
use shoal_sim::{SimIo, block_on_ready};
use shoal_vsr::checkpoint::{self, COPIES_COUNT, checkpoint_path, read_checkpoint};
use shoal_vsr::header::checksum;
use shoal_vsr::io::{Io, OpenMode};
use shoal_vsr::message::CheckpointChunk;
use shoal_vsr::replica::Checkpoint;

const SNAPSHOT_SIZE_MAX_BYTES: usize = 6000;
const DIR: &str = "/fuzz";
const NAMESPACE: u64 = 3;
/// `[u64 magic]` precedes the anchor header in a copy.
const ANCHOR_AT: usize = 8;
const COPY_CHECKSUM_SIZE_BYTES: usize = 16;

fn same(a: &Checkpoint, b: &Checkpoint) -> bool {
    a.anchor == b.anchor && a.snapshot == b.snapshot
}

fn check_copy(original: &Checkpoint, input: &mut Input<'_>) {
    let mut bytes = checkpoint::encode(original);
    let decoded = checkpoint::decode(&bytes).expect("an encoded copy decodes");
    assert!(same(&decoded, original));
    let reseal = input.bool();
    if !mutate(&mut bytes, input, SNAPSHOT_SIZE_MAX_BYTES + 512) {
        return;
    }
    if reseal && bytes.len() >= COPY_CHECKSUM_SIZE_BYTES {
        reseal_header(&mut bytes, ANCHOR_AT);
        let content_end = bytes.len() - COPY_CHECKSUM_SIZE_BYTES;
        let sum = checksum(&bytes[..content_end]);
        bytes[content_end..].copy_from_slice(&sum.to_le_bytes());
    }
    if let Ok(decoded) = checkpoint::decode(&bytes) {
        assert_eq!(checkpoint::encode(&decoded), bytes, "a decoded copy re-encodes to other bytes");
        assert!(reseal || same(&decoded, original), "a damaged copy decoded unresealed to another checkpoint");
    }
}

fn check_body(original: &Checkpoint, input: &mut Input<'_>) {
    // A chunk of the snapshot: a fuzz-chosen piece at a fuzz-chosen offset.
    let start = usize::from(input.byte()) * original.snapshot.len() / 256;
    let end = start + (original.snapshot.len() - start) * usize::from(input.byte()) / 255;
    let body = CheckpointChunk {
        anchor: original.anchor,
        snapshot_size_bytes: original.snapshot.len() as u64,
        snapshot_checksum: checksum(&original.snapshot),
        offset_bytes: start as u64,
        last_of_answer: input.bool(),
        bytes: original.snapshot[start..end].to_vec(),
    };
    let mut bytes = body.encode();
    assert_eq!(CheckpointChunk::decode(&bytes).expect("an encoded chunk decodes"), body);
    let reseal = input.bool();
    if !mutate(&mut bytes, input, SNAPSHOT_SIZE_MAX_BYTES + 512) {
        return;
    }
    if reseal {
        reseal_header(&mut bytes, 0);
    }
    if let Ok(decoded) = CheckpointChunk::decode(&bytes) {
        assert_eq!(decoded.encode(), bytes, "a decoded chunk re-encodes to other bytes");
        assert!(
            decoded.offset_bytes + decoded.bytes.len() as u64 <= decoded.snapshot_size_bytes,
            "a decoded chunk lies inside its snapshot"
        );
    }
}

async fn create_file(io: &SimIo) {
    io.create_dir_all(Path::new(DIR)).await.unwrap();
    io.open(&checkpoint_path(Path::new(DIR), NAMESPACE), OpenMode::ReadWriteCreate).await.unwrap();
}

fn check_file(original: &Checkpoint, input: &mut Input<'_>) {
    let mut file = checkpoint::encode_file(original);
    let region_size_bytes = file.len() / COPIES_COUNT as usize;
    // Damage confined to one copy, or anywhere (with the file's length).
    let confined = input.bool();
    let copy = usize::from(input.byte() % 2);
    let changed = if confined {
        let mut region = file[copy * region_size_bytes..(copy + 1) * region_size_bytes].to_vec();
        let changed = mutate(&mut region, input, region_size_bytes);
        region.resize(region_size_bytes, 0);
        file[copy * region_size_bytes..(copy + 1) * region_size_bytes].copy_from_slice(&region);
        changed
    } else {
        let size_max_bytes = file.len() + 64;
        mutate(&mut file, input, size_max_bytes)
    };
    let io = SimIo::new(0);
    block_on_ready(create_file(&io));
    let path = checkpoint_path(Path::new(DIR), NAMESPACE);
    io.disk().poke(&path, 0, &file).unwrap();
    match block_on_ready(read_checkpoint(&io, Path::new(DIR), NAMESPACE)) {
        Ok(Some(read)) => assert!(same(&read, original), "a damaged file read as another checkpoint"),
        Ok(None) => panic!("an existing checkpoint file read as none"),
        Err(error) => assert!(changed && !confined, "one damaged copy lost the checkpoint: {error}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (anchor, _) = header(&mut input, 0xc4e9, 0);
    let snapshot = input.bytes(SNAPSHOT_SIZE_MAX_BYTES);
    let original = Checkpoint { anchor, snapshot };
    match input.byte() % 3 {
        0 => check_copy(&original, &mut input),
        1 => check_body(&original, &mut input),
        _ => check_file(&original, &mut input),
    }
});
