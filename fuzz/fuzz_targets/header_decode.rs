//! Header decode on arbitrary bytes: never panics; whatever decodes
//! re-encodes to the same bytes and decodes again to the same header.
//!
//! Random bytes almost never carry a valid checksum, so each input is also
//! tried "resealed" (its header checksum recomputed), which lets the fuzzer
//! reach the size, version, command and operation checks behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_vsr::header::checksum;
use shoal_vsr::{HEADER_SIZE_BYTES, Header};

fn check(data: &[u8]) {
    if let Ok(header) = Header::decode(data) {
        let encoded = header.encode();
        assert_eq!(&encoded[..], &data[..HEADER_SIZE_BYTES]);
        assert_eq!(Header::decode(&encoded), Ok(header));
        assert!(header.size as usize >= HEADER_SIZE_BYTES);
    }
    if let Ok((header, body)) = Header::decode_message(data) {
        assert_eq!(header.size as usize, data.len());
        assert_eq!(header.encode_message(body), data);
        assert_eq!(header.valid_body(body), Ok(()));
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= HEADER_SIZE_BYTES {
        let mut resealed = data.to_vec();
        let sum = checksum(&resealed[16..HEADER_SIZE_BYTES]);
        resealed[..16].copy_from_slice(&sum.to_le_bytes());
        check(&resealed);
    }
});
