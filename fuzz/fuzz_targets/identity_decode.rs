//! `Identity::decode` (shoal-runtime's data directory identity, read from
//! disk by every start before anything else is trusted).
//!
//! An identity with fuzz-chosen fields is encoded by the crate and checked:
//! - exact round trip;
//! - every single-bit flip and every length other than 48 bytes is refused
//!   (magic, checksum or size), never decoded to another identity;
//! - fuzz-chosen byte edits with the checksum resealed: the magic decides
//!   (a changed magic is refused, an intact one decodes), and what decodes
//!   holds exactly the field bytes of the file; the two reserved bytes are
//!   the only ones decode may ignore (re-encoding zeroes them).
#![no_main]

mod common;

use common::Input;
use libfuzzer_sys::fuzz_target;
use shoal_runtime::data_dir::{IDENTITY_MAGIC, IDENTITY_SIZE_BYTES, Identity};
use shoal_vsr::header::checksum;

/// Layout (data_dir.rs): magic 0..8, format version 8..12, replica 12,
/// replica count 13, flags 14 (bit 0: rejoining; any other bit set is
/// refused), reserved 15, cluster 16..32, checksum 32..48 over 0..32.
const MAGIC_SIZE_BYTES: usize = 8;
const FLAGS_AT: usize = 14;
const FLAG_REJOINING: u8 = 1;
const RESERVED: std::ops::Range<usize> = 15..16;
const CHECKSUM_AT: usize = 32;
/// Most byte edits one input applies before resealing.
const EDITS_MAX: usize = 4;

fn reseal(bytes: &mut [u8]) {
    let sum = checksum(&bytes[..CHECKSUM_AT]);
    bytes[CHECKSUM_AT..].copy_from_slice(&sum.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let identity = Identity {
        format_version: input.u32(),
        cluster: u128::from(input.u64()) << 64 | u128::from(input.u64()),
        replica: input.byte(),
        replica_count: input.byte(),
        rejoining: input.bool(),
    };
    let encoded = identity.encode();
    assert_eq!(Identity::decode(&encoded), Ok(identity), "identity round trip");

    let mut bytes = encoded;
    for bit in 0..IDENTITY_SIZE_BYTES * 8 {
        bytes[bit / 8] ^= 1 << (bit % 8);
        assert!(Identity::decode(&bytes).is_err(), "bit {bit} flipped and still decoded");
        bytes[bit / 8] ^= 1 << (bit % 8);
    }
    // A short or long file (read_identity reads one byte past the layout).
    let cut = usize::from(input.byte()) % IDENTITY_SIZE_BYTES;
    assert_eq!(Identity::decode(&encoded[..cut]), Err("wrong size"));
    let mut long = encoded.to_vec();
    long.push(input.byte());
    assert_eq!(Identity::decode(&long), Err("wrong size"));

    let mut edited = encoded;
    for _ in 0..usize::from(input.byte()) % (EDITS_MAX + 1) {
        let at = usize::from(input.byte()) % CHECKSUM_AT;
        edited[at] = input.byte();
    }
    reseal(&mut edited);
    match Identity::decode(&edited) {
        Ok(decoded) => {
            assert_eq!(edited[..MAGIC_SIZE_BYTES], IDENTITY_MAGIC, "decoded without the magic");
            assert_eq!(edited[FLAGS_AT] & !FLAG_REJOINING, 0, "decoded with unknown flags");
            let mut expected = edited;
            expected[RESERVED].fill(0);
            reseal(&mut expected);
            assert_eq!(decoded.encode(), expected, "decoded fields differ from the file's");
        }
        Err("unknown flags") => {
            assert_ne!(edited[FLAGS_AT] & !FLAG_REJOINING, 0, "refused flags the format knows");
        }
        Err(reason) => {
            assert_ne!(
                edited[..MAGIC_SIZE_BYTES],
                IDENTITY_MAGIC,
                "a resealed identity with its magic refused: {reason}"
            );
        }
    }
});
