//! The replica snapshot from a checkpoint or a state transfer, built from the
//! input: `[u32 len][AppendLog snapshot][ClientSessions table]` with the real
//! encoders (fuzz-chosen messages, a table of fuzz-chosen capacity, clients,
//! requests and replies), then fuzz-chosen damage, optionally with the reply
//! headers resealed; decoded as `restore_checkpoint` does. Also the metadata
//! group's reply body, `shoal_shard::state_machine::decode_reply`, built from
//! every `MetadataReply` variant.
//!
//! Fails on a wrong answer: undamaged bytes decode to exactly what was
//! encoded; damaged bytes decode to values that re-encode to the bytes they
//! were decoded from (the session table: to the same length, as many
//! sessions as its count says, and the same table again), or to an error.
#![no_main]

#[path = "common.rs"]
mod common;

use common::{Input, header, mutate, reseal_header};
use libfuzzer_sys::fuzz_target;
use shoal_shard::state_machine::{MetadataError, MetadataReply, decode_reply};
use shoal_vsr::StateMachine;
use shoal_vsr::header::{Command, HEADER_SIZE_BYTES};
use shoal_vsr::sessions::ClientSessions;
use shoal_vsr::state_machine::{AppendLog, SnapshotReader};

const MESSAGES_MAX: usize = 8;
const MESSAGE_SIZE_MAX_BYTES: usize = 64;
const SESSIONS_CAPACITY_MAX: usize = 8;
const REPLY_BODY_SIZE_MAX_BYTES: usize = 32;
const SNAPSHOT_SIZE_MAX_BYTES: usize = 8192;
const NAME_SIZE_MAX_BYTES: usize = 300;
/// A session's fixed part before its reply header: client, session op, request, commit op.
const SESSION_HEAD_SIZE_BYTES: usize = 16 + 8 + 8 + 8;

fn sessions(input: &mut Input<'_>) -> ClientSessions {
    let capacity = 1 + usize::from(input.byte()) % SESSIONS_CAPACITY_MAX;
    let mut table = ClientSessions::with_capacity(capacity);
    let mut op = 1;
    for _ in 0..usize::from(input.byte()) % (2 * SESSIONS_CAPACITY_MAX + 1) {
        op += 1 + u64::from(input.byte() % 4);
        let client = u128::from(input.byte() % 16);
        let (mut reply, body) = header(input, 0x55, REPLY_BODY_SIZE_MAX_BYTES);
        reply.command = Command::Reply;
        reply.set_checksums(&body);
        match table.get(client) {
            None => {
                table.register(client, op, reply, body);
            }
            Some(session) => {
                let request = session.request + 1;
                table.record(client, request, op, reply, body);
            }
        }
    }
    table
}

fn check_snapshot(input: &mut Input<'_>) {
    let mut log = AppendLog::default();
    for _ in 0..usize::from(input.byte()) % (MESSAGES_MAX + 1) {
        log.messages.push(input.bytes(MESSAGE_SIZE_MAX_BYTES));
    }
    let table = sessions(input);
    let state = log.snapshot();
    let mut bytes = (state.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&state);
    let sessions_at = bytes.len();
    table.encode(&mut bytes);
    // Where each reply header sits, to reseal them after in-place damage.
    let mut headers_at = Vec::new();
    let mut at = sessions_at + 4;
    for client in 0..16u128 {
        if let Some(session) = table.get(client) {
            headers_at.push(at + SESSION_HEAD_SIZE_BYTES);
            at += SESSION_HEAD_SIZE_BYTES + HEADER_SIZE_BYTES + 4 + session.reply_body.len();
        }
    }
    assert_eq!(at, bytes.len());

    let (restored_log, restored_table) = decode(&bytes, table.capacity()).expect("an encoded snapshot decodes");
    assert_eq!(restored_log, log);
    assert_eq!(restored_table, table);

    let reseal = input.bool();
    if !mutate(&mut bytes, input, SNAPSHOT_SIZE_MAX_BYTES) {
        return;
    }
    if reseal {
        for at in &headers_at {
            reseal_header(&mut bytes, *at);
        }
    }
    let _ = decode(&bytes, table.capacity());
}

/// Decode as `Replica::restore_checkpoint` does, checking each part.
fn decode(bytes: &[u8], capacity: usize) -> Option<(AppendLog, ClientSessions)> {
    let mut reader = SnapshotReader::new(bytes);
    let state = reader.bytes_with_len().ok()?;
    let mut log = AppendLog::default();
    let restored = log.restore(state);
    if restored.is_ok() {
        // The state is length-delimited, but `restore` accepts bytes after its
        // messages; what it read must still be exactly what it re-encodes to.
        let encoded = log.snapshot();
        assert!(state.starts_with(&encoded), "a restored log re-encodes to other bytes");
    }
    let table_bytes = &bytes[4 + state.len()..];
    let count = table_bytes.get(..4).map(|count| u32::from_le_bytes(count.try_into().unwrap()) as usize);
    let table = ClientSessions::decode(&mut reader, capacity);
    if let Ok(table) = &table {
        assert_eq!(table.capacity(), capacity);
        assert!(table.len() <= capacity);
        // seeds/snapshot_decode/bug-duplicate-client-merged once decoded to
        // fewer sessions than its count (two sessions of one client merged);
        // the decoder now refuses such a table.
        assert_eq!(Some(table.len()), count, "a session table decoded to fewer sessions than its count");
        let mut encoded = Vec::new();
        table.encode(&mut encoded);
        let again = ClientSessions::decode(&mut SnapshotReader::new(&encoded), capacity).expect("re-encoded table");
        assert_eq!(&again, table);
        if reader.is_empty() && Some(table.len()) == count {
            // Sessions are encoded in client order; a table out of order
            // decodes to the same sessions, so only the length must match.
            assert_eq!(encoded.len(), table_bytes.len(), "a decoded table re-encodes to another length");
        }
    }
    Some((restored.ok().map(|()| log)?, table.ok()?))
}

fn metadata_error(input: &mut Input<'_>) -> MetadataError {
    let name = String::from_utf8_lossy(&input.bytes(NAME_SIZE_MAX_BYTES)).into_owned();
    match input.byte() % 12 {
        0 => MetadataError::StreamIdInvalid { stream_id: input.u32() },
        1 => MetadataError::StreamExists { stream_id: input.u32() },
        2 => MetadataError::StreamNotFound { stream_id: input.u32() },
        3 => MetadataError::StreamNameExists { name },
        4 => MetadataError::StreamsFull,
        5 => MetadataError::TopicIdInvalid { topic_id: input.u32() },
        6 => MetadataError::TopicExists { stream_id: input.u32(), topic_id: input.u32() },
        7 => MetadataError::TopicNotFound { stream_id: input.u32(), topic_id: input.u32() },
        8 => MetadataError::TopicNameExists { stream_id: input.u32(), name },
        9 => MetadataError::TopicsFull { stream_id: input.u32() },
        10 => MetadataError::PartitionCountInvalid { partition_count: input.u32() },
        _ => MetadataError::NameInvalid { size_bytes: input.u64() as usize },
    }
}

fn check_reply(input: &mut Input<'_>) {
    let reply = match input.byte() % 3 {
        0 => MetadataReply::Ok,
        1 => MetadataReply::Malformed,
        _ => MetadataReply::Rejected(metadata_error(input)),
    };
    let mut bytes = reply.encode();
    assert_eq!(decode_reply(&bytes).expect("an encoded reply decodes"), reply);
    if !mutate(&mut bytes, input, NAME_SIZE_MAX_BYTES + 64) {
        return;
    }
    if let Ok(decoded) = decode_reply(&bytes) {
        assert_eq!(decoded.encode(), bytes, "a decoded reply re-encodes to other bytes");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    if input.bool() { check_snapshot(&mut input) } else { check_reply(&mut input) }
});
