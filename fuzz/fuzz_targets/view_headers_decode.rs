//! `decode_headers` (view change and repair header lists from the network) on
//! lists built from the input: fuzz-chosen headers over fuzz-chosen bodies,
//! sealed and encoded with `encode_headers`, then fuzz-chosen damage,
//! optionally with every whole header resealed so decoding gets past checksums.
//!
//! Fails on a wrong answer: an undamaged list decodes to exactly the headers
//! encoded; a damaged one either re-encodes to exactly the bytes it was
//! decoded from, or is an error naming the right cause (size, or the first
//! entry that does not decode on its own).
#![no_main]

#[path = "common.rs"]
mod common;

use common::{Input, header, mutate, reseal_header};
use libfuzzer_sys::fuzz_target;
use shoal_vsr::header::{HEADER_SIZE_BYTES, Header};
use shoal_vsr::message::{BodyError, decode_headers, encode_headers};

const HEADERS_MAX: usize = 16;
const LIST_SIZE_MAX_BYTES: usize = (HEADERS_MAX + 1) * HEADER_SIZE_BYTES;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let count = usize::from(input.byte()) % (HEADERS_MAX + 1);
    let headers: Vec<Header> = (0..count).map(|_| header(&mut input, 0x5ea1, 64).0).collect();
    let mut bytes = encode_headers(&headers);
    assert_eq!(bytes.len(), count * HEADER_SIZE_BYTES);
    assert_eq!(decode_headers(&bytes).expect("an encoded list decodes"), headers);

    let reseal = input.bool();
    if !mutate(&mut bytes, &mut input, LIST_SIZE_MAX_BYTES) {
        return;
    }
    if reseal {
        for at in (0..bytes.len()).step_by(HEADER_SIZE_BYTES) {
            reseal_header(&mut bytes, at);
        }
    }
    match decode_headers(&bytes) {
        Ok(decoded) => {
            assert_eq!(encode_headers(&decoded), bytes, "a decoded list re-encodes to other bytes");
            if !reseal {
                // Without resealing, no header can be forged: each decoded one was encoded.
                assert!(decoded.iter().all(|header| headers.contains(header)), "a forged header decoded");
            }
        }
        Err(BodyError::HeaderListSize { size_bytes }) => {
            assert_eq!(size_bytes, bytes.len());
            assert!(!size_bytes.is_multiple_of(HEADER_SIZE_BYTES));
        }
        Err(BodyError::HeaderListEntry { index, .. }) => {
            let chunks: Vec<&[u8]> = bytes.chunks_exact(HEADER_SIZE_BYTES).collect();
            assert!(chunks[..index].iter().all(|chunk| Header::decode(chunk).is_ok()));
            assert!(Header::decode(chunks[index]).is_err(), "entry {index} blamed but decodes");
        }
        Err(other) => panic!("a header list failed with {other:?}"),
    }
});
