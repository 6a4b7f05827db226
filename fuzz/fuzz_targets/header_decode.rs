//! Header decode on arbitrary bytes: never panics; whatever decodes
//! re-encodes to the same bytes and decodes again to the same header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_vsr::{HEADER_SIZE_BYTES, Header};

fuzz_target!(|data: &[u8]| {
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
});
