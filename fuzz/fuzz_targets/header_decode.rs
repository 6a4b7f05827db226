//! Header and message decode (`Header::decode`, `Header::decode_message`,
//! `Message::decode`): the first thing a replica does with bytes from a peer
//! or a journal slot.
//!
//! Random bytes never carry a valid body checksum (43M raw inputs never
//! reached the message round trip), so the first input byte picks a mode
//! (its value mod 3: raw, flips, edits):
//! - flips and edits: a header built field by field from the input over a
//!   fuzz-chosen body, sealed with the crate's own `set_checksums`. Checks:
//!   the message round-trips exactly. Flips mode: every single-bit flip of it
//!   is rejected with the error that names the damaged part (header or body
//!   checksum) or decodes to the same value. Edits mode: fuzz-chosen edits of the command,
//!   operation, version, size or any other header byte and of the body, with
//!   the header checksum (and optionally the body checksum) resealed, are
//!   judged against a model of what a valid header is: decode succeeds
//!   exactly when the model says so, and an error names a check that the
//!   model says fails.
//! - raw: the bytes as given, and again with the header checksum resealed;
//!   whatever decodes re-encodes to the same bytes.
#![no_main]

mod common;

use common::{Input, reseal_header};
use libfuzzer_sys::fuzz_target;
use shoal_vsr::Header;
use shoal_vsr::header::{
    Command, HEADER_SIZE_BYTES, HEADER_VERSION, HeaderError, MESSAGE_SIZE_MAX_BYTES, Operation, checksum,
};
use shoal_vsr::message::Message;

/// Largest body the structured modes build. Every single-bit flip of the
/// message is decoded, so the flip check costs `8 * (256 + body)` decodes;
/// 256 body bytes keep that at 4k decodes per input.
const BODY_SIZE_MAX_BYTES: usize = 256;
/// Most header edits one input applies before resealing.
const EDITS_MAX: usize = 4;
/// Offsets of the header fields the model judges (see `Header::encode`).
const OFFSET_CHECKSUM_BODY: usize = 16;
const OFFSET_SIZE: usize = 136;
const OFFSET_COMMAND: usize = 141;
const OFFSET_OPERATION: usize = 142;
const OFFSET_VERSION: usize = 143;
/// The header checksum is stored in bytes 0..16 and covers 16..256.
const CHECKSUM_SIZE_BYTES: usize = 16;

fn sealed(input: &mut Input<'_>) -> (Header, Vec<u8>) {
    let mut header = Header::new(Command::ALL[usize::from(input.byte()) % Command::ALL.len()], u128::from(input.u64()));
    header.operation = Operation::ALL[usize::from(input.byte()) % Operation::ALL.len()];
    header.parent = u128::from(input.u64()) << 64 | u128::from(input.u64());
    header.client = u128::from(input.u64());
    header.namespace = input.u64();
    header.view = input.u64();
    header.op = input.u64();
    header.commit = input.u64();
    header.timestamp = input.u64();
    header.request = input.u64();
    header.context = input.u64();
    header.replica = input.byte();
    // Reserved bytes are not checked by decode but must survive the round trip.
    let reserved_at = usize::from(input.byte()) % header.reserved.len();
    header.reserved[reserved_at] = input.byte();
    let body = input.bytes(BODY_SIZE_MAX_BYTES);
    header.set_checksums(&body);
    (header, body)
}

/// Decoding the sealed message gives back exactly what was sealed.
fn check_round_trip(header: &Header, body: &[u8], message: &[u8]) {
    assert_eq!(message.len(), HEADER_SIZE_BYTES + body.len());
    assert_eq!(Header::decode(message), Ok(*header));
    assert_eq!(Header::decode_message(message), Ok((*header, body)));
    let decoded = Message::decode(message).expect("a sealed message decodes");
    assert_eq!(decoded.encode(), message);
    assert_eq!(Message::new(*header, body), decoded);
}

/// Every single-bit flip is caught by the checksum that covers it, or (never
/// expected with a 128-bit checksum, but the only other correct answer)
/// decodes to the value that was sealed.
fn check_single_bit_flips(header: &Header, body: &[u8], message: &mut [u8]) {
    for bit in 0..message.len() * 8 {
        let at = bit / 8;
        message[at] ^= 1 << (bit % 8);
        match Header::decode_message(message) {
            Ok((decoded, decoded_body)) => {
                assert_eq!(decoded, *header, "bit {bit} flipped, header changed yet decoded");
                assert_eq!(decoded_body, body, "bit {bit} flipped, body changed yet decoded");
            }
            Err(error) => {
                let expected =
                    if at < HEADER_SIZE_BYTES { HeaderError::BadChecksum } else { HeaderError::BadBodyChecksum };
                assert_eq!(error, expected, "bit {bit} flipped");
            }
        }
        message[at] ^= 1 << (bit % 8);
    }
}

/// What a header must satisfy, written from `HeaderError`'s variants rather
/// than from `decode`: the checks that fail for these 256 bytes.
fn model_header_errors(bytes: &[u8]) -> Vec<HeaderError> {
    let mut errors = Vec::new();
    let stored = u128::from_le_bytes(bytes[..CHECKSUM_SIZE_BYTES].try_into().unwrap());
    if checksum(&bytes[CHECKSUM_SIZE_BYTES..HEADER_SIZE_BYTES]) != stored {
        errors.push(HeaderError::BadChecksum);
    }
    let size = u32::from_le_bytes(bytes[OFFSET_SIZE..OFFSET_SIZE + 4].try_into().unwrap());
    if (size as usize) < HEADER_SIZE_BYTES || size > MESSAGE_SIZE_MAX_BYTES {
        errors.push(HeaderError::WrongSize { size_bytes: size });
    }
    if bytes[OFFSET_VERSION] != HEADER_VERSION {
        errors.push(HeaderError::UnknownVersion { value: bytes[OFFSET_VERSION] });
    }
    if !Command::ALL.iter().any(|command| *command as u8 == bytes[OFFSET_COMMAND]) {
        errors.push(HeaderError::UnknownCommand { value: bytes[OFFSET_COMMAND] });
    }
    if !Operation::ALL.iter().any(|operation| *operation as u8 == bytes[OFFSET_OPERATION]) {
        errors.push(HeaderError::UnknownOperation { value: bytes[OFFSET_OPERATION] });
    }
    errors
}

/// Edit header fields and the body, reseal, and compare both decoders with
/// the model.
fn check_edited(message: &[u8], input: &mut Input<'_>) {
    let mut header_bytes: [u8; HEADER_SIZE_BYTES] = message[..HEADER_SIZE_BYTES].try_into().unwrap();
    let mut body = message[HEADER_SIZE_BYTES..].to_vec();
    for _ in 0..usize::from(input.byte()) % (EDITS_MAX + 1) {
        match input.byte() % 6 {
            // The checked one-byte fields: any value, most of them invalid.
            0 => header_bytes[OFFSET_COMMAND] = input.byte(),
            1 => header_bytes[OFFSET_OPERATION] = input.byte(),
            2 => header_bytes[OFFSET_VERSION] = input.byte(),
            // Size: near the bounds or anything.
            3 => {
                let size = match input.byte() % 4 {
                    0 => (HEADER_SIZE_BYTES as u32).wrapping_add(u32::from(input.byte())).wrapping_sub(128),
                    1 => MESSAGE_SIZE_MAX_BYTES.wrapping_add(u32::from(input.byte())).wrapping_sub(128),
                    2 => (HEADER_SIZE_BYTES + body.len()) as u32,
                    _ => input.u32(),
                };
                header_bytes[OFFSET_SIZE..OFFSET_SIZE + 4].copy_from_slice(&size.to_le_bytes());
            }
            // Any other byte the checksum covers (unchecked fields).
            4 => {
                let at = CHECKSUM_SIZE_BYTES + usize::from(input.byte()) % (HEADER_SIZE_BYTES - CHECKSUM_SIZE_BYTES);
                header_bytes[at] = input.byte();
            }
            // The body grows or shrinks.
            _ => {
                let len = usize::from(input.u16()) % (BODY_SIZE_MAX_BYTES + 1);
                body.resize(len, input.byte());
            }
        }
    }
    if input.bool() {
        header_bytes[OFFSET_CHECKSUM_BODY..OFFSET_CHECKSUM_BODY + 16].copy_from_slice(&checksum(&body).to_le_bytes());
    }
    if input.bool() {
        reseal_header(&mut header_bytes, 0);
    }
    let mut edited = header_bytes.to_vec();
    edited.extend_from_slice(&body);

    let header_errors = model_header_errors(&header_bytes);
    match Header::decode(&edited) {
        Ok(header) => {
            assert!(header_errors.is_empty(), "decoded a header the model rejects ({header_errors:?}): {header:?}");
            assert_eq!(header.encode(), header_bytes, "decode is not lossless");
        }
        Err(error) => {
            assert!(header_errors.contains(&error), "decode said {error:?}; the model says {header_errors:?}")
        }
    }
    let size = u32::from_le_bytes(header_bytes[OFFSET_SIZE..OFFSET_SIZE + 4].try_into().unwrap()) as usize;
    let stored_body_checksum =
        u128::from_le_bytes(header_bytes[OFFSET_CHECKSUM_BODY..OFFSET_CHECKSUM_BODY + 16].try_into().unwrap());
    let size_matches = size == edited.len();
    let body_matches = checksum(&body) == stored_body_checksum;
    match Header::decode_message(&edited) {
        Ok((header, decoded_body)) => {
            assert!(header_errors.is_empty() && size_matches && body_matches, "decode_message accepted a bad message");
            assert_eq!(decoded_body, &body[..]);
            assert_eq!(header.encode_message(decoded_body), edited);
        }
        Err(HeaderError::BodySizeMismatch { .. }) => assert!(header_errors.is_empty() && !size_matches),
        Err(HeaderError::BadBodyChecksum) => assert!(header_errors.is_empty() && size_matches && !body_matches),
        Err(error) => {
            assert!(header_errors.contains(&error), "decode_message said {error:?}; the model says {header_errors:?}")
        }
    }
}

/// The raw mode: arbitrary bytes never panic, and whatever decodes re-encodes
/// to the bytes it came from.
fn check_raw(data: &[u8]) {
    if let Ok(header) = Header::decode(data) {
        assert_eq!(&header.encode()[..], &data[..HEADER_SIZE_BYTES]);
        assert!(model_header_errors(data).is_empty());
    }
    if let Ok((header, body)) = Header::decode_message(data) {
        assert_eq!(header.size as usize, data.len());
        assert_eq!(header.encode_message(body), data);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mode = input.byte() % 3;
    if mode == 0 {
        let raw = input.0;
        check_raw(raw);
        if raw.len() >= HEADER_SIZE_BYTES {
            let mut resealed = raw.to_vec();
            reseal_header(&mut resealed, 0);
            check_raw(&resealed);
        }
        return;
    }
    let (header, body) = sealed(&mut input);
    let mut message = header.encode_message(&body);
    check_round_trip(&header, &body, &message);
    // The flips cost thousands of decodes and always reach the same code, so
    // only a third of the inputs pay for them; the rest explore edits.
    if mode == 1 {
        check_single_bit_flips(&header, &body, &mut message);
    } else {
        check_edited(&message, &mut input);
    }
});
