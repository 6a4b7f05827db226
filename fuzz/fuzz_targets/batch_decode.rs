//! The `SendMessages` batch codec (`shoal_shard::message_batch`), which every
//! replica runs on every committed append and the client on every reply:
//! a batch built from the input with `encode_batch` (1..=`MESSAGES_MAX`
//! messages of fuzz-chosen bytes) round-trips exactly, then is damaged
//! (`common::mutate`). Checks on damaged bytes:
//! - whatever decodes is canonical: it re-encodes to exactly the bytes it
//!   came from (two bodies never mean the same batch);
//! - a decoded batch is within every bound (1..=`BATCH_MESSAGES_MAX`
//!   messages, each within a record), so the partition state machine can
//!   take it.
//! The reply codec: `BatchReply::decode` accepts exactly 12 bytes and
//! re-encodes to them.
#![no_main]

mod common;

use common::{Input, mutate};
use libfuzzer_sys::fuzz_target;
use shoal_shard::message_batch::{BATCH_MESSAGES_MAX, BatchReply, decode_batch, encode_batch};
use shoal_shard::partition_log::RECORD_PAYLOAD_SIZE_MAX_BYTES;

/// Messages in one built batch: enough to cross counts and sizes.
const MESSAGES_MAX: usize = 16;
/// Bytes of one built message.
const MESSAGE_SIZE_MAX_BYTES: usize = 64;
/// Bound on the body's size after damage.
const BODY_SIZE_MAX_BYTES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    if input.bool() {
        let bytes = input.take(16);
        let decoded = BatchReply::decode(&bytes);
        assert_eq!(decoded.is_ok(), bytes.len() == 12);
        if let Ok(reply) = decoded {
            assert_eq!(reply.encode().to_vec(), bytes);
        }
        return;
    }
    let count = 1 + usize::from(input.byte()) % MESSAGES_MAX;
    let messages: Vec<Vec<u8>> = (0..count).map(|_| input.bytes(MESSAGE_SIZE_MAX_BYTES)).collect();
    let mut body = encode_batch(&messages).expect("a small batch is within every bound");
    let decoded = decode_batch(&body).expect("an encoded batch decodes");
    assert_eq!(decoded, messages.iter().map(Vec::as_slice).collect::<Vec<_>>());
    if !mutate(&mut body, &mut input, BODY_SIZE_MAX_BYTES) {
        return;
    }
    if let Ok(messages) = decode_batch(&body) {
        assert!((1..=BATCH_MESSAGES_MAX).contains(&messages.len()));
        assert!(messages.iter().all(|m| m.len() <= RECORD_PAYLOAD_SIZE_MAX_BYTES));
        assert_eq!(encode_batch(&messages).expect("a decoded batch encodes"), body, "not canonical");
    }
});
