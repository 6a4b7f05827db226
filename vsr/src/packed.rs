//! Packed prepares: several clients' requests in one VSR op.
//!
//! A primary whose pipeline is full holds requests in its queue; when a slot
//! frees it packs the queued requests (in queue order, up to
//! `PREPARE_REQUESTS_MAX` of them and up to the group's message size for the
//! whole prepare) into one prepare of `Operation::Packed`. One journal write
//! and one quorum round then carry them all, so independent clients with one
//! request each in flight are no longer bounded by the pipeline's depth.
//!
//! A prepare of one request keeps the plain encoding (the request's client,
//! session, request number and operation in the prepare's header, its body
//! as the prepare's body); only a prepare of two or more is packed, and its
//! header says so (`Operation::Packed`, client, request and context zero).
//!
//! Packed body layout (little endian):
//!
//! ```text
//! [count u32][reserved u32 = 0]
//! count × ( [client u128][session u64][request u64][size u32][operation u8][reserved 3 = 0][body: size bytes] )
//! ```
//!
//! Each request keeps its own client, session (the register's op, as a lone
//! prepare carries in `Header::context`), request number and operation; the
//! replica applies them one by one in order through the session table, and
//! `(op, client)` names one request: a client appears at most once per
//! prepare. Owns the codec and nothing else; decoding never trusts its input
//! (a prepare's checksum only says the bytes are what some primary wrote).

use std::collections::BTreeSet;

use crate::header::{Header, Operation};

/// Requests one packed prepare carries at most. Bounds the replies one
/// commit produces and the decode work per prepare; as many as a full request
/// queue holds (`replica::REQUEST_QUEUE_MAX`), so one prepare can drain it.
pub const PREPARE_REQUESTS_MAX: usize = 64;
/// A packed body starts with the request count and a reserved word.
pub const PACKED_PREFIX_SIZE_BYTES: usize = 8;
/// Each packed request starts with this many bytes of its own header.
pub const PACKED_ENTRY_HEADER_SIZE_BYTES: usize = 40;

const ENTRY_CLIENT: usize = 0;
const ENTRY_SESSION: usize = 16;
const ENTRY_REQUEST: usize = 24;
const ENTRY_SIZE: usize = 32;
const ENTRY_OPERATION: usize = 36;
const ENTRY_RESERVED: usize = 37;

/// One client's request, as a prepare carries it (packed or alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedRequest<'a> {
    pub client: u128,
    /// The register's op of the session this request was sent in (0 for a
    /// register).
    pub session: u64,
    pub request: u64,
    pub operation: Operation,
    pub body: &'a [u8],
}

impl<'a> PackedRequest<'a> {
    /// The one request of a plain (not packed) prepare.
    pub fn of_plain(header: &Header, body: &'a [u8]) -> PackedRequest<'a> {
        debug_assert_ne!(header.operation, Operation::Packed);
        PackedRequest {
            client: header.client,
            session: header.context,
            request: header.request,
            operation: header.operation,
            body,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackedError {
    #[error(
        "packed prepare body is truncated at byte {offset} of {size_bytes}: a bug in the primary that packed it or a hostile peer; drop it (repair the slot from a peer)"
    )]
    Truncated { offset: usize, size_bytes: usize },
    #[error("packed prepare holds {count} requests, outside 2..={PREPARE_REQUESTS_MAX}; drop it")]
    CountOutOfRange { count: usize },
    #[error("packed prepare has reserved bytes set at byte {offset}: written by a newer or foreign primary; drop it")]
    ReservedNotZero { offset: usize },
    #[error("packed request {index} has unknown operation {value}: written by a newer or foreign primary; drop it")]
    UnknownOperation { index: usize, value: u8 },
    #[error(
        "packed request {index} has operation {operation:?}, which no client may send (only registers and user operations); drop it"
    )]
    ForbiddenOperation { index: usize, operation: Operation },
    #[error("packed request {index} names client 0, which no client has; drop it")]
    ClientZero { index: usize },
    #[error("packed prepare holds two requests of client {client}: a client has one request per prepare; drop it")]
    DuplicateClient { client: u128 },
    #[error("packed prepare has {extra_bytes} bytes after its last request; drop it")]
    TrailingBytes { extra_bytes: usize },
}

/// The size of a packed body holding requests with these body sizes.
pub fn packed_size_bytes(body_sizes: impl IntoIterator<Item = usize>) -> usize {
    PACKED_PREFIX_SIZE_BYTES + body_sizes.into_iter().map(|size| PACKED_ENTRY_HEADER_SIZE_BYTES + size).sum::<usize>()
}

/// Encode 2..=`PREPARE_REQUESTS_MAX` requests of distinct clients.
pub fn encode(requests: &[PackedRequest<'_>]) -> Vec<u8> {
    assert!((2..=PREPARE_REQUESTS_MAX).contains(&requests.len()), "a packed prepare holds 2..=max requests");
    let mut out = Vec::with_capacity(packed_size_bytes(requests.iter().map(|r| r.body.len())));
    out.extend_from_slice(&(requests.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for request in requests {
        assert!(packable(request.operation), "only registers and user operations are packed");
        assert_ne!(request.client, 0);
        out.extend_from_slice(&request.client.to_le_bytes());
        out.extend_from_slice(&request.session.to_le_bytes());
        out.extend_from_slice(&request.request.to_le_bytes());
        out.extend_from_slice(&u32::try_from(request.body.len()).expect("a body fits a message").to_le_bytes());
        out.push(request.operation as u8);
        out.extend_from_slice(&[0; PACKED_ENTRY_HEADER_SIZE_BYTES - ENTRY_RESERVED]);
        out.extend_from_slice(request.body);
    }
    debug_assert_eq!(decode(&out).as_deref(), Ok(requests));
    out
}

/// A request a client may send: what the primary prepares for it.
fn packable(operation: Operation) -> bool {
    operation == Operation::Register || !operation.is_reserved()
}

/// Decode a packed body, checking everything `encode` guarantees.
pub fn decode(body: &[u8]) -> Result<Vec<PackedRequest<'_>>, PackedError> {
    let size_bytes = body.len();
    let truncated = |offset: usize| PackedError::Truncated { offset, size_bytes };
    let prefix = body.get(..PACKED_PREFIX_SIZE_BYTES).ok_or(truncated(size_bytes))?;
    let count = u32::from_le_bytes(prefix[0..4].try_into().expect("4 bytes")) as usize;
    if prefix[4..8] != [0; 4] {
        return Err(PackedError::ReservedNotZero { offset: 4 });
    }
    if !(2..=PREPARE_REQUESTS_MAX).contains(&count) {
        return Err(PackedError::CountOutOfRange { count });
    }
    let mut requests = Vec::with_capacity(count);
    let mut clients = BTreeSet::new();
    let mut offset = PACKED_PREFIX_SIZE_BYTES;
    for index in 0..count {
        let entry = body.get(offset..offset + PACKED_ENTRY_HEADER_SIZE_BYTES).ok_or(truncated(offset))?;
        let u64_at = |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().expect("8 bytes"));
        let client = u128::from_le_bytes(entry[ENTRY_CLIENT..ENTRY_CLIENT + 16].try_into().expect("16 bytes"));
        let size = u32::from_le_bytes(entry[ENTRY_SIZE..ENTRY_SIZE + 4].try_into().expect("4 bytes")) as usize;
        let value = entry[ENTRY_OPERATION];
        let operation = Operation::from_u8(value).ok_or(PackedError::UnknownOperation { index, value })?;
        if let Some(at) = entry[ENTRY_RESERVED..].iter().position(|&byte| byte != 0) {
            return Err(PackedError::ReservedNotZero { offset: offset + ENTRY_RESERVED + at });
        }
        if !packable(operation) {
            return Err(PackedError::ForbiddenOperation { index, operation });
        }
        if client == 0 {
            return Err(PackedError::ClientZero { index });
        }
        if !clients.insert(client) {
            return Err(PackedError::DuplicateClient { client });
        }
        let body_start = offset + PACKED_ENTRY_HEADER_SIZE_BYTES;
        let request_body = body.get(body_start..body_start.saturating_add(size)).ok_or(truncated(body_start))?;
        requests.push(PackedRequest {
            client,
            session: u64_at(ENTRY_SESSION),
            request: u64_at(ENTRY_REQUEST),
            operation,
            body: request_body,
        });
        offset = body_start + size;
    }
    if offset != size_bytes {
        return Err(PackedError::TrailingBytes { extra_bytes: size_bytes - offset });
    }
    assert_eq!(requests.len(), count);
    Ok(requests)
}

/// The requests a prepare carries, in apply order: one for a plain prepare,
/// the packed ones for `Operation::Packed`.
pub fn requests_of<'a>(header: &Header, body: &'a [u8]) -> Result<Vec<PackedRequest<'a>>, PackedError> {
    if header.operation == Operation::Packed { decode(body) } else { Ok(vec![PackedRequest::of_plain(header, body)]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(client: u128, body: &[u8]) -> PackedRequest<'_> {
        PackedRequest { client, session: 7, request: 3, operation: Operation::SendMessages, body }
    }

    #[test]
    fn two_requests_round_trip() {
        let requests = [request(1, b"one"), PackedRequest { operation: Operation::Register, ..request(2, b"") }];
        let bytes = encode(&requests);
        assert_eq!(bytes.len(), packed_size_bytes([3, 0]));
        assert_eq!(decode(&bytes).unwrap(), requests);
    }

    #[test]
    fn a_client_twice_is_refused() {
        let mut bytes = encode(&[request(1, b"a"), request(2, b"b")]);
        let second = PACKED_PREFIX_SIZE_BYTES + PACKED_ENTRY_HEADER_SIZE_BYTES + 1;
        bytes[second..second + 16].copy_from_slice(&1u128.to_le_bytes());
        assert_eq!(decode(&bytes), Err(PackedError::DuplicateClient { client: 1 }));
    }

    #[test]
    fn one_request_or_a_reserved_operation_is_refused() {
        let mut bytes = encode(&[request(1, b"a"), request(2, b"b")]);
        bytes[0] = 1;
        assert_eq!(decode(&bytes), Err(PackedError::CountOutOfRange { count: 1 }));
        let mut bytes = encode(&[request(1, b"a"), request(2, b"b")]);
        bytes[PACKED_PREFIX_SIZE_BYTES + ENTRY_OPERATION] = Operation::Packed as u8;
        assert_eq!(decode(&bytes), Err(PackedError::ForbiddenOperation { index: 0, operation: Operation::Packed }));
    }

    fn arb_request() -> impl Strategy<Value = (u64, u64, bool, Vec<u8>)> {
        (any::<u64>(), any::<u64>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..64))
    }

    proptest! {
        #[test]
        fn round_trip_and_every_truncation_is_refused(
            raw in prop::collection::vec(arb_request(), 2..12),
            cut in any::<prop::sample::Index>(),
        ) {
            let requests: Vec<PackedRequest<'_>> = raw
                .iter()
                .enumerate()
                .map(|(i, (session, number, register, body))| PackedRequest {
                    client: i as u128 + 1,
                    session: *session,
                    request: *number,
                    operation: if *register { Operation::Register } else { Operation::SendMessages },
                    body,
                })
                .collect();
            let bytes = encode(&requests);
            prop_assert_eq!(decode(&bytes).unwrap(), requests);
            let cut = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..cut]).is_err(), "a body cut to {} of {} bytes decoded", cut, bytes.len());
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert_eq!(decode(&longer), Err(PackedError::TrailingBytes { extra_bytes: 1 }));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }
}
