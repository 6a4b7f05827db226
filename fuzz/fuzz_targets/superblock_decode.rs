//! Superblock files built from the input through the real writer
//! (`Superblock::create` and fuzz-chosen monotonic `write`s with view headers
//! on a `shoal_sim::SimIo` disk), then fuzz-chosen damage to one copy or
//! both, optionally with the record checksums and view headers resealed so
//! decoding gets past them; then `superblock::decode_file`.
//!
//! Fails on a wrong answer: undamaged bytes decode to exactly the last state
//! written and its sequence; damage to one copy, unresealed, changes nothing;
//! whatever decodes from damaged bytes matches, field by field, the bytes of
//! a copy that holds that sequence, with no valid copy of a higher sequence.
#![no_main]

#[path = "common.rs"]
mod common;

use std::path::Path;

use common::{Input, header, mutate, reseal_header};
use libfuzzer_sys::fuzz_target;
use shoal_sim::{SimIo, block_on_ready};
use shoal_vsr::header::{HEADER_SIZE_BYTES, Header, checksum};
use shoal_vsr::superblock::{
    SUPERBLOCK_COPIES, SUPERBLOCK_COPY_SIZE_BYTES, SUPERBLOCK_MAGIC, SUPERBLOCK_VIEW_HEADERS_MAX, Superblock,
    SuperblockState, decode_file, superblock_copy_offset, superblock_file_size_bytes, superblock_path,
};

const DIR: &str = "/fuzz";
const CLUSTER: u128 = 0x5b;
const NAMESPACE: u64 = 9;
const WRITES_MAX: usize = 4;
const COPY_SIZE_BYTES: usize = SUPERBLOCK_COPY_SIZE_BYTES as usize;
// The copy layout, as documented in `superblock.rs`; the oracle reads the
// fields back by hand.
const SB_SEQUENCE: usize = 40;
const SB_VIEW: usize = 48;
const SB_LOG_VIEW: usize = 56;
const SB_COMMIT: usize = 64;
const SB_FLAGS: usize = 72;
const SB_CHECKSUM: usize = 80;
const SB_VIEW_HEADERS_COUNT: usize = 96;
const SB_VIEW_HEADERS: usize = 128;
const SB_ENCODED_BYTES: usize = SB_VIEW_HEADERS + SUPERBLOCK_VIEW_HEADERS_MAX * HEADER_SIZE_BYTES;

fn u64_at(copy: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(copy[at..at + 8].try_into().unwrap())
}

fn record_checksum(copy: &[u8]) -> u128 {
    let mut covered = copy[..SB_CHECKSUM].to_vec();
    covered.extend_from_slice(&copy[SB_CHECKSUM + 16..SB_ENCODED_BYTES]);
    checksum(&covered)
}

fn reseal(copy: &mut [u8]) {
    let count = u32::from_le_bytes(copy[SB_VIEW_HEADERS_COUNT..SB_VIEW_HEADERS_COUNT + 4].try_into().unwrap());
    for index in 0..(count as usize).min(SUPERBLOCK_VIEW_HEADERS_MAX) {
        reseal_header(copy, SB_VIEW_HEADERS + index * HEADER_SIZE_BYTES);
    }
    let sum = record_checksum(copy);
    copy[SB_CHECKSUM..SB_CHECKSUM + 16].copy_from_slice(&sum.to_le_bytes());
}

/// Does `copy` hold `state` at `sequence`, field by field?
fn holds(copy: &[u8], sequence: u64, state: &SuperblockState) -> bool {
    let count = u32::from_le_bytes(copy[SB_VIEW_HEADERS_COUNT..SB_VIEW_HEADERS_COUNT + 4].try_into().unwrap());
    u64_at(copy, SB_SEQUENCE) == sequence
        && u64_at(copy, SB_VIEW) == state.view
        && u64_at(copy, SB_LOG_VIEW) == state.log_view
        && u64_at(copy, SB_COMMIT) == state.commit
        && (u64_at(copy, SB_FLAGS) & 1 == 1) == state.rejoining
        && count as usize == state.view_headers.len()
        && state.view_headers.iter().enumerate().all(|(index, header)| {
            let at = SB_VIEW_HEADERS + index * HEADER_SIZE_BYTES;
            copy[at..at + HEADER_SIZE_BYTES] == header.encode()
        })
        && record_checksum(copy) == u128::from_le_bytes(copy[SB_CHECKSUM..SB_CHECKSUM + 16].try_into().unwrap())
}

async fn build(io: &SimIo, states: &[SuperblockState]) {
    let mut superblock = Superblock::create(io, Path::new(DIR), CLUSTER, NAMESPACE, 1).await.unwrap();
    for state in states {
        superblock.write(state.clone()).await.unwrap();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut states = Vec::new();
    let mut last = SuperblockState::default();
    for _ in 0..usize::from(input.byte()) % (WRITES_MAX + 1) {
        let view = last.view + u64::from(input.byte() % 4);
        let log_view = view - u64::from(input.byte()) % (view + 1);
        let commit = last.commit + u64::from(input.byte() % 4);
        let count = usize::from(input.byte()) % (SUPERBLOCK_VIEW_HEADERS_MAX + 1);
        let view_headers: Vec<Header> = (0..count).map(|_| header(&mut input, CLUSTER, 16).0).collect();
        last = SuperblockState {
            view,
            log_view,
            commit,
            view_headers,
            rejoining: input.bool(),
            nack_floor: last.nack_floor + u64::from(input.byte() % 4),
        };
        states.push(last.clone());
    }
    let io = SimIo::new(0);
    block_on_ready(build(&io, &states));
    let mut file = io.disk().contents(&superblock_path(Path::new(DIR), NAMESPACE)).expect("created");
    assert_eq!(file.len() as u64, superblock_file_size_bytes());
    let sequence_last = 1 + states.len() as u64;
    let decoded = decode_file(&file).expect("a written file decodes");
    assert_eq!(decoded, Some((sequence_last, last.clone())), "a written file decodes to another state");

    let resealed = input.bool();
    let both = input.bool();
    let mut changed = false;
    for copy in 0..SUPERBLOCK_COPIES as usize {
        if copy == 1 && !both {
            break;
        }
        let target = if both { copy } else { usize::from(input.byte() % 2) };
        let start = superblock_copy_offset(target as u64) as usize;
        let range = start..start + COPY_SIZE_BYTES;
        let mut region = file[range.clone()].to_vec();
        changed |= mutate(&mut region, &mut input, COPY_SIZE_BYTES);
        region.resize(COPY_SIZE_BYTES, 0);
        if resealed {
            reseal(&mut region);
        }
        file[range].copy_from_slice(&region);
    }
    // A short file: the copies it still holds whole are read.
    if input.byte() % 8 == 0 {
        let len = usize::from(input.u16()) % (file.len() + 1);
        file.truncate(len);
        changed = true;
    }
    if !changed {
        return;
    }
    // Every copy-sized position the reader looks at (the gap between the
    // two copies included), and how many of the written copies are whole.
    let copies: Vec<&[u8]> = file.chunks_exact(COPY_SIZE_BYTES).collect();
    let copies_whole = (0..SUPERBLOCK_COPIES)
        .filter(|&copy| superblock_copy_offset(copy) as usize + COPY_SIZE_BYTES <= file.len())
        .count();
    match decode_file(&file) {
        Ok(Some((sequence, state))) => {
            assert!(
                copies.iter().any(|copy| holds(copy, sequence, &state)),
                "decoded sequence {sequence} {state:?} is in no copy"
            );
            for copy in &copies {
                let valid = u64_at(copy, 0) == SUPERBLOCK_MAGIC
                    && record_checksum(copy)
                        == u128::from_le_bytes(copy[SB_CHECKSUM..SB_CHECKSUM + 16].try_into().unwrap());
                assert!(
                    !valid || u64_at(copy, SB_SEQUENCE) <= sequence,
                    "a valid copy of a higher sequence was passed over"
                );
            }
            if !resealed {
                assert_eq!((sequence, &state), (sequence_last, &last), "unresealed damage forged a state");
            }
        }
        Ok(None) => assert!(
            resealed || both || copies_whole < SUPERBLOCK_COPIES as usize,
            "one damaged copy lost the superblock"
        ),
        // A resealed copy can be valid yet hold a bad version, count or header.
        Err(error) => assert!(resealed, "unresealed damage is an error, not an invalid copy: {error}"),
    }
    if !resealed && !both && copies_whole == SUPERBLOCK_COPIES as usize {
        assert_eq!(decode_file(&file).unwrap(), Some((sequence_last, last)), "one damaged copy changed the state");
    }
});
