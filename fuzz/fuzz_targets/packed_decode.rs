//! The packed-prepare codec (`shoal_vsr::packed`), which every replica runs
//! on every prepare it applies, repairs or recovers from its journal
//! (`requests_of`): a prepare's checksum only says some primary wrote the
//! bytes, so the decoder is the last line against a body that names two
//! requests of one client, a reserved operation, or bytes past its end.
//!
//! The first byte picks a mode:
//! - built (0): 2..=`PREPARE_REQUESTS_MAX` requests of distinct clients with
//!   fuzz-chosen sessions, request numbers, packable operations and bodies;
//!   `encode` then `decode` gives them back exactly, and so does
//!   `requests_of` under a `Packed` header, while a plain header yields its
//!   one request. Then the bytes are damaged (`common::mutate`) and judged;
//! - forged (1): the same build, then one structured edit of a field (the
//!   count, a client set to another's or to zero, an operation, a reserved
//!   byte, a size) before the judge;
//! - raw (2): the rest of the input as a body, judged.
//!
//! The judge is a model of a valid body written from the layout in the
//! module doc (`model`): `decode` succeeds exactly when the model says the
//! body is valid, and then to the model's requests, and re-encodes to the
//! same bytes (canonical); an error names a fault the bytes really have (the
//! count it read, a reserved byte that is set, a client that is there twice,
//! a truncation at a place the body really ends short).
#![no_main]

mod common;

use std::collections::BTreeSet;

use common::{Input, mutate};
use libfuzzer_sys::fuzz_target;
use shoal_vsr::header::{Command, Header, Operation};
use shoal_vsr::packed::{
    PACKED_ENTRY_HEADER_SIZE_BYTES, PACKED_PREFIX_SIZE_BYTES, PREPARE_REQUESTS_MAX, PackedError, PackedRequest, decode,
    encode, packed_size_bytes, requests_of,
};

/// Bytes of one built request's body.
const BODY_SIZE_MAX_BYTES: usize = 48;
/// Bound on a damaged or raw body.
const PACKED_SIZE_MAX_BYTES: usize = 8192;
/// The operations a client may send, so a primary may pack.
const PACKABLE: [Operation; 7] = [
    Operation::Register,
    Operation::CreateStream,
    Operation::DeleteStream,
    Operation::CreateTopic,
    Operation::DeleteTopic,
    Operation::SendMessages,
    Operation::PollMessages,
];

// Field offsets inside one entry, from the module doc's layout:
// [client u128][session u64][request u64][size u32][operation u8][reserved 3].
const CLIENT_AT: usize = 0;
const SESSION_AT: usize = 16;
const REQUEST_AT: usize = 24;
const SIZE_AT: usize = 32;
const OPERATION_AT: usize = 36;
const RESERVED_AT: usize = 37;

/// One request as the model reads it (owned, to compare with the decoder's).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelRequest {
    client: u128,
    session: u64,
    request: u64,
    operation: Operation,
    body: Vec<u8>,
}

impl ModelRequest {
    fn of(request: &PackedRequest<'_>) -> ModelRequest {
        ModelRequest {
            client: request.client,
            session: request.session,
            request: request.request,
            operation: request.operation,
            body: request.body.to_vec(),
        }
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn client_at(bytes: &[u8], entry: usize) -> u128 {
    u128::from_le_bytes(bytes[entry + CLIENT_AT..entry + CLIENT_AT + 16].try_into().unwrap())
}

/// Where each entry the body's sizes lay out starts, as far as whole entry
/// headers fit (bodies may still run short): a walk that trusts nothing but
/// the sizes, for judging errors.
fn entry_starts(bytes: &[u8], count: usize) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = PACKED_PREFIX_SIZE_BYTES;
    while starts.len() < count && at + PACKED_ENTRY_HEADER_SIZE_BYTES <= bytes.len() {
        starts.push(at);
        at = at + PACKED_ENTRY_HEADER_SIZE_BYTES + u32_at(bytes, at + SIZE_AT) as usize;
    }
    starts
}

fn packable(operation: Operation) -> bool {
    PACKABLE.contains(&operation)
}

/// The model: the requests of a valid packed body, or `None`.
fn model(bytes: &[u8]) -> Option<Vec<ModelRequest>> {
    if bytes.len() < PACKED_PREFIX_SIZE_BYTES || bytes[4..8] != [0; 4] {
        return None;
    }
    let count = u32_at(bytes, 0) as usize;
    if !(2..=PREPARE_REQUESTS_MAX).contains(&count) {
        return None;
    }
    let mut requests = Vec::new();
    let mut clients = BTreeSet::new();
    let mut at = PACKED_PREFIX_SIZE_BYTES;
    for _ in 0..count {
        if bytes.len() - at < PACKED_ENTRY_HEADER_SIZE_BYTES {
            return None;
        }
        let operation = Operation::from_u8(bytes[at + OPERATION_AT]).filter(|op| packable(*op))?;
        let client = client_at(bytes, at);
        if client == 0
            || !clients.insert(client)
            || bytes[at + RESERVED_AT..at + PACKED_ENTRY_HEADER_SIZE_BYTES] != [0; 3]
        {
            return None;
        }
        let size = u32_at(bytes, at + SIZE_AT) as usize;
        let body_at = at + PACKED_ENTRY_HEADER_SIZE_BYTES;
        if bytes.len() - body_at < size {
            return None;
        }
        requests.push(ModelRequest {
            client,
            session: u64_at(bytes, at + SESSION_AT),
            request: u64_at(bytes, at + REQUEST_AT),
            operation,
            body: bytes[body_at..body_at + size].to_vec(),
        });
        at = body_at + size;
    }
    (at == bytes.len()).then_some(requests)
}

/// The error names a fault these bytes really have.
fn justify(error: &PackedError, bytes: &[u8]) {
    let count = if bytes.len() >= 4 { u32_at(bytes, 0) as usize } else { 0 };
    let starts = entry_starts(bytes, count.min(PREPARE_REQUESTS_MAX));
    match *error {
        PackedError::Truncated { offset, size_bytes } => {
            assert_eq!(size_bytes, bytes.len());
            let prefix_short = bytes.len() < PACKED_PREFIX_SIZE_BYTES && offset == bytes.len();
            let entry_short = offset >= PACKED_PREFIX_SIZE_BYTES
                && offset + PACKED_ENTRY_HEADER_SIZE_BYTES > bytes.len()
                && (offset == PACKED_PREFIX_SIZE_BYTES
                    || starts
                        .iter()
                        .any(|&s| s + PACKED_ENTRY_HEADER_SIZE_BYTES + u32_at(bytes, s + SIZE_AT) as usize == offset));
            let body_short = starts.iter().any(|&s| {
                s + PACKED_ENTRY_HEADER_SIZE_BYTES == offset
                    && offset.saturating_add(u32_at(bytes, s + SIZE_AT) as usize) > bytes.len()
            });
            assert!(prefix_short || entry_short || body_short, "no truncation at {offset} of {} bytes", bytes.len());
        }
        PackedError::CountOutOfRange { count: named } => {
            assert_eq!(named, count);
            assert!(!(2..=PREPARE_REQUESTS_MAX).contains(&named));
        }
        PackedError::ReservedNotZero { offset } => {
            // The prefix's reserved word is named by its first byte; an
            // entry's reserved bytes by the byte that is set.
            let in_prefix = offset == 4 && bytes[4..8] != [0; 4];
            let in_entry = bytes[offset] != 0
                && starts.iter().any(|&s| (s + RESERVED_AT..s + PACKED_ENTRY_HEADER_SIZE_BYTES).contains(&offset));
            assert!(in_prefix || in_entry, "byte {offset} is not a reserved byte that is set");
        }
        PackedError::UnknownOperation { index, value } => {
            assert_eq!(bytes[starts[index] + OPERATION_AT], value);
            assert!(Operation::from_u8(value).is_none());
        }
        PackedError::ForbiddenOperation { index, operation } => {
            assert_eq!(bytes[starts[index] + OPERATION_AT], operation as u8);
            assert!(!packable(operation));
        }
        PackedError::ClientZero { index } => assert_eq!(client_at(bytes, starts[index]), 0),
        PackedError::DuplicateClient { client } => {
            let seen = starts.iter().filter(|&&s| client_at(bytes, s) == client).count();
            assert!(seen >= 2, "client {client} appears {seen} times");
        }
        PackedError::TrailingBytes { extra_bytes } => {
            assert!(extra_bytes > 0 && starts.len() == count);
            let last = *starts.last().expect("a count of at least two entries");
            let end = last + PACKED_ENTRY_HEADER_SIZE_BYTES + u32_at(bytes, last + SIZE_AT) as usize;
            assert_eq!(end + extra_bytes, bytes.len());
        }
    }
}

/// Decode `bytes` and hold the decoder to the model.
fn judge(bytes: &[u8]) {
    let decoded = decode(bytes);
    let expected = model(bytes);
    match (&decoded, &expected) {
        (Ok(requests), Some(expected)) => {
            let got: Vec<ModelRequest> = requests.iter().map(ModelRequest::of).collect();
            assert_eq!(&got, expected);
            assert_eq!(encode(requests), bytes, "a decoded body is canonical");
        }
        (Err(error), None) => justify(error, bytes),
        (Ok(requests), None) => panic!("decoded a body the model refuses: {requests:?}"),
        (Err(error), Some(_)) => panic!("refused a valid body: {error}"),
    }
}

fn build(input: &mut Input<'_>) -> Vec<ModelRequest> {
    let count = 2 + usize::from(input.byte()) % (PREPARE_REQUESTS_MAX - 1);
    let mut clients = BTreeSet::new();
    (0..count)
        .map(|_| {
            // Small ids collide often; a collision takes the next free id.
            let mut client = u128::from(input.u16()) + 1;
            while !clients.insert(client) {
                client += 1;
            }
            let session = u64::from(input.u16());
            let request = input.u64();
            let operation = PACKABLE[usize::from(input.byte()) % PACKABLE.len()];
            let body = input.bytes(BODY_SIZE_MAX_BYTES);
            ModelRequest { client, session, request, operation, body }
        })
        .collect()
}

fn packed_requests(requests: &[ModelRequest]) -> Vec<PackedRequest<'_>> {
    requests
        .iter()
        .map(|r| PackedRequest {
            client: r.client,
            session: r.session,
            request: r.request,
            operation: r.operation,
            body: &r.body,
        })
        .collect()
}

/// Built requests round-trip through `encode`, `decode` and `requests_of`.
fn round_trip(requests: &[ModelRequest]) -> Vec<u8> {
    let packed = packed_requests(requests);
    let bytes = encode(&packed);
    assert_eq!(bytes.len(), packed_size_bytes(requests.iter().map(|r| r.body.len())));
    assert_eq!(decode(&bytes).as_deref(), Ok(packed.as_slice()));
    assert_eq!(model(&bytes).as_deref(), Some(requests), "the model reads the encoder's layout");
    let mut header = Header::new(Command::Prepare, 1);
    header.operation = Operation::Packed;
    assert_eq!(requests_of(&header, &bytes).as_deref(), Ok(packed.as_slice()));
    // A plain prepare is its one request, whatever its body holds.
    let first = &requests[0];
    header.operation = first.operation;
    header.client = first.client;
    header.context = first.session;
    header.request = first.request;
    let plain = requests_of(&header, &bytes).expect("a plain prepare is one request");
    assert_eq!(plain, vec![PackedRequest { body: &bytes, ..packed[0] }]);
    bytes
}

/// One structured edit of a field a decoder must check.
fn forge(bytes: &mut [u8], requests: &[ModelRequest], input: &mut Input<'_>) {
    let starts = entry_starts(bytes, requests.len());
    let index = usize::from(input.byte()) % starts.len();
    let entry = starts[index];
    match input.byte() % 7 {
        0 => bytes[0..4].copy_from_slice(&u32::from(input.byte()).to_le_bytes()),
        1 => {
            // Another entry's client: a duplicate (unless it is itself).
            let other = starts[usize::from(input.byte()) % starts.len()];
            let client = client_at(bytes, other);
            bytes[entry..entry + 16].copy_from_slice(&client.to_le_bytes());
        }
        2 => bytes[entry..entry + 16].fill(0),
        3 => bytes[entry + OPERATION_AT] = input.byte(),
        4 => bytes[entry + RESERVED_AT + usize::from(input.byte()) % 3] = input.byte() | 1,
        5 => bytes[4 + usize::from(input.byte()) % 4] = input.byte() | 1,
        _ => {
            let size = u32_at(bytes, entry + SIZE_AT);
            let delta = u32::from(input.byte());
            let size = if input.bool() { size.wrapping_add(delta) } else { size.saturating_sub(delta) };
            bytes[entry + SIZE_AT..entry + SIZE_AT + 4].copy_from_slice(&size.to_le_bytes());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    match input.byte() % 3 {
        0 => {
            let requests = build(&mut input);
            let mut bytes = round_trip(&requests);
            if mutate(&mut bytes, &mut input, PACKED_SIZE_MAX_BYTES) {
                judge(&bytes);
            }
        }
        1 => {
            let requests = build(&mut input);
            let mut bytes = round_trip(&requests);
            forge(&mut bytes, &requests, &mut input);
            mutate(&mut bytes, &mut input, PACKED_SIZE_MAX_BYTES);
            judge(&bytes);
        }
        _ => {
            let bytes = input.take(PACKED_SIZE_MAX_BYTES);
            judge(&bytes);
        }
    }
});
