//! The metadata group's codecs, which read bytes from clients, peers and
//! shard 0: `decode_reply` (a client reads every committed metadata op's
//! reply with it), `MetadataRequest::decode_body` (a replica decodes every
//! committed metadata prepare) and `MetadataState::decode` (the snapshot
//! bundle shard 0 hands the other shards; `restore` on the state machine).
//!
//! The first input byte picks one; each builds a valid value from the input
//! with the crate's encoder (every reply and error variant, every request,
//! a catalogue grown through `apply`), checks the exact round trip, then
//! damages the bytes (`common::mutate`), for the snapshot optionally
//! resealing its trailing checksum. Checks on damaged bytes:
//! - whatever decodes is canonical: it re-encodes to exactly the bytes it
//!   came from (two byte strings never mean the same reply or request);
//! - a decoded snapshot is a catalogue `apply` could have built (each stream
//!   and topic admitted again from scratch) and re-encodes to its bytes;
//! - an unresealed damaged snapshot is refused (the checksum covers it all);
//! - `restore` of bytes that do not decode leaves the state as it was.
#![no_main]

mod common;

use common::{Input, mutate};
use libfuzzer_sys::fuzz_target;
use shoal_shard::state_machine::{
    CodecError, MetadataError, MetadataReply, MetadataRequest, MetadataState, decode_reply,
};
use shoal_vsr::header::checksum;
use shoal_vsr::{Operation, StateMachine};

/// Names up to this length; the codec carries longer ones (up to u16::MAX)
/// so that `NameInvalid` reaches the client, and 300 passes the 255 bound.
const NAME_SIZE_MAX_BYTES: usize = 300;
/// Requests applied to grow one snapshot's catalogue.
const REQUESTS_MAX: usize = 24;
/// Bound on the snapshot's size after damage.
const SNAPSHOT_SIZE_MAX_BYTES: usize = 8192;
/// The snapshot ends with a 16-byte checksum of everything before it.
const SNAPSHOT_CHECKSUM_SIZE_BYTES: usize = 16;
/// Small ids so that creates, deletes and duplicates meet.
const ID_RANGE: u32 = 6;

fn name(input: &mut Input<'_>) -> String {
    // Short names from a tiny alphabet collide, so name-exists rejections
    // occur; otherwise any bytes, made UTF-8.
    if input.bool() {
        let len = usize::from(input.byte() % 3);
        return (0..len).map(|_| char::from(b'a' + input.byte() % 3)).collect();
    }
    String::from_utf8_lossy(&input.bytes(NAME_SIZE_MAX_BYTES)).into_owned()
}

/// An id: mostly small, sometimes at or past the namespace bounds.
fn id(input: &mut Input<'_>) -> u32 {
    match input.byte() % 4 {
        0 => input.u32(),
        1 => (1 << 23) - 1 + u32::from(input.byte() % 3),
        _ => u32::from(input.byte()) % ID_RANGE,
    }
}

fn request(input: &mut Input<'_>) -> MetadataRequest {
    match input.byte() % 5 {
        0 => MetadataRequest::CreateStream { stream_id: id(input), name: name(input) },
        1 => MetadataRequest::DeleteStream { stream_id: id(input) },
        2 => MetadataRequest::CreateTopic {
            stream_id: id(input),
            topic_id: id(input),
            name: name(input),
            partition_count: match input.byte() % 3 {
                0 => input.u32(),
                _ => u32::from(input.byte() % 5),
            },
        },
        3 => MetadataRequest::DeleteTopic { stream_id: id(input), topic_id: id(input) },
        _ => MetadataRequest::LookupPartition { stream_id: id(input), topic_id: id(input), partition_id: id(input) },
    }
}

fn error(input: &mut Input<'_>) -> MetadataError {
    let stream_id = input.u32();
    let topic_id = input.u32();
    match input.byte() % 13 {
        0 => MetadataError::StreamIdInvalid { stream_id },
        1 => MetadataError::StreamExists { stream_id },
        2 => MetadataError::StreamNotFound { stream_id },
        3 => MetadataError::StreamNameExists { name: name(input) },
        4 => MetadataError::StreamsFull,
        5 => MetadataError::TopicIdInvalid { topic_id },
        6 => MetadataError::TopicExists { stream_id, topic_id },
        7 => MetadataError::TopicNotFound { stream_id, topic_id },
        8 => MetadataError::TopicNameExists { stream_id, name: name(input) },
        9 => MetadataError::TopicsFull { stream_id },
        10 => MetadataError::PartitionCountInvalid { partition_count: topic_id },
        11 => MetadataError::NameInvalid { size_bytes: input.u64() as usize },
        _ => MetadataError::PartitionNotFound { stream_id, topic_id, partition_id: input.u32() },
    }
}

fn check_reply(input: &mut Input<'_>) {
    let reply = match input.byte() % 3 {
        0 => MetadataReply::Ok,
        1 => MetadataReply::Malformed,
        _ => MetadataReply::Rejected(error(input)),
    };
    let mut bytes = reply.encode();
    assert_eq!(decode_reply(&bytes), Ok(reply.clone()), "reply round trip");
    mutate(&mut bytes, input, NAME_SIZE_MAX_BYTES + 16);
    if let Ok(decoded) = decode_reply(&bytes) {
        assert_eq!(decoded.encode(), bytes, "a reply decoded from bytes it would not write: {decoded:?}");
    }
}

fn check_request(input: &mut Input<'_>) {
    let request = request(input);
    let mut bytes = request.encode_body();
    assert_eq!(MetadataRequest::decode_body(request.operation(), &bytes), Ok(request.clone()), "request round trip");
    mutate(&mut bytes, input, NAME_SIZE_MAX_BYTES + 16);
    // Read under every operation: a body sent with the wrong operation must
    // either be refused or be canonical for the operation it decoded as.
    for operation in Operation::ALL {
        match MetadataRequest::decode_body(*operation, &bytes) {
            Ok(decoded) => {
                assert_eq!(decoded.operation(), *operation);
                assert_eq!(
                    decoded.encode_body(),
                    bytes,
                    "a request decoded from bytes it would not write: {decoded:?}"
                );
            }
            Err(CodecError::NotMetadataOperation { operation: refused }) => {
                assert_eq!(refused, *operation);
                assert!(
                    operation.is_reserved() || matches!(operation, Operation::SendMessages | Operation::PollMessages)
                );
            }
            Err(_) => {}
        }
    }
}

/// Rebuild `state` through `apply` alone: a decoded snapshot must hold only
/// what the state machine itself could have admitted.
fn rebuilt(state: &MetadataState) -> MetadataState {
    let mut again = MetadataState::new();
    for (stream_id, stream) in state.streams() {
        let create = MetadataRequest::CreateStream { stream_id: *stream_id, name: stream.name.clone() };
        again.apply(&create).unwrap_or_else(|error| panic!("decoded stream {stream_id} is not admissible: {error}"));
        for (topic_id, topic) in &stream.topics {
            let create = MetadataRequest::CreateTopic {
                stream_id: *stream_id,
                topic_id: *topic_id,
                name: topic.name.clone(),
                partition_count: topic.partition_count,
            };
            // At the op the snapshot says created it (snapshot v2 keeps it).
            again
                .apply_at(topic.created_op, &create)
                .unwrap_or_else(|error| panic!("decoded topic {topic_id} is not admissible: {error}"));
        }
    }
    again
}

/// The first snapshot format's magic (`shard::state_machine`): still read.
const SNAPSHOT_MAGIC_V1: &[u8] = b"shoalmd1";

fn check_snapshot(input: &mut Input<'_>) {
    let mut state = MetadataState::new();
    for _ in 0..usize::from(input.byte()) % (REQUESTS_MAX + 1) {
        let request = request(input);
        let before = state.clone();
        if state.apply(&request).is_err() {
            assert_eq!(state, before, "a rejected request changed the state");
        }
    }
    let original = state.encode();
    assert_eq!(MetadataState::decode(&original), Ok(state.clone()), "snapshot round trip");

    let mut bytes = original.clone();
    let changed = mutate(&mut bytes, input, SNAPSHOT_SIZE_MAX_BYTES);
    let resealed = input.bool() && bytes.len() >= SNAPSHOT_CHECKSUM_SIZE_BYTES;
    if resealed {
        let content_size_bytes = bytes.len() - SNAPSHOT_CHECKSUM_SIZE_BYTES;
        let sum = checksum(&bytes[..content_size_bytes]);
        bytes[content_size_bytes..].copy_from_slice(&sum.to_le_bytes());
    }
    let decoded = MetadataState::decode(&bytes);
    match &decoded {
        Ok(decoded) => {
            assert!(resealed || !changed, "a damaged, unresealed snapshot decoded");
            if bytes.starts_with(SNAPSHOT_MAGIC_V1) {
                // Version 1 (no creation ops) is read, never written: it
                // re-encodes as version 2, to the same catalogue.
                assert_eq!(MetadataState::decode(&decoded.encode()).as_ref(), Ok(decoded), "a v1 snapshot's rewrite");
            } else {
                assert_eq!(decoded.encode(), bytes, "a snapshot decoded from bytes it would not write");
            }
            assert_eq!(&rebuilt(decoded), decoded);
            if bytes == original {
                assert_eq!(decoded, &state);
            }
        }
        Err(_) => assert!(bytes != original, "the original snapshot was refused"),
    }

    // `restore` replaces the state only with a snapshot that decodes whole.
    let mut machine = state.clone();
    match StateMachine::restore(&mut machine, &bytes) {
        Ok(()) => assert_eq!(Ok(&machine), decoded.as_ref()),
        Err(_) => {
            assert!(decoded.is_err());
            assert_eq!(machine, state, "a refused snapshot changed the state");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    match input.byte() % 3 {
        0 => check_reply(&mut input),
        1 => check_request(&mut input),
        _ => check_snapshot(&mut input),
    }
});
