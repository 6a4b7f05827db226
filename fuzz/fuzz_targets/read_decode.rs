//! The read path's two network decoders (`shoal_shard::read`): the body of a
//! client's `Read` (`ReadRequest::decode`, run by every replica on every read)
//! and a replica's `ReadReply` (`ReadAnswer::decode`, run by the client).
//!
//! First byte picks a mode:
//! - request (even): a request built from the input, encoded, then damaged
//!   (`common::mutate`). Undamaged: exact round trip. Damaged: decodes
//!   exactly when a model of the bounds says so (16 bytes, count and size in
//!   range) and then re-encodes to the bytes it came from; a refusal names
//!   the bound the model says is broken.
//! - reply (odd): an answer of every variant built from the input, framed by
//!   `ReadAnswer::reply`. Undamaged: decodes to the same answer. Then the body
//!   is damaged and the header's status, first offset and committed end are
//!   optionally rewritten (the connection has already checked checksums, so a
//!   lying server is what this models): whatever decodes keeps the client's
//!   promises (a `Messages` answer holds 1..=`READ_MESSAGES_MAX` messages,
//!   all below the committed end) and re-encodes to the body it came from.
#![no_main]

mod common;

use common::{Input, mutate};
use libfuzzer_sys::fuzz_target;
use shoal_shard::read::{
    READ_MESSAGES_MAX, READ_REPLY_SIZE_MIN_BYTES, READ_REQUEST_SIZE_BYTES, ReadAnswer, ReadError, ReadRequest,
};
use shoal_vsr::header::MESSAGE_SIZE_MAX_BYTES;

/// Messages in one built answer.
const MESSAGES_MAX: usize = 12;
/// Bytes of one built message.
const BUILT_MESSAGE_SIZE_MAX_BYTES: usize = 48;
/// Bound on a body after damage.
const BODY_SIZE_MAX_BYTES: usize = 2048;
/// Status codes a reply header may carry, plus a few unknown ones.
const STATUS_VALUES_MAX: u8 = 9;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    if input.byte() % 2 == 0 {
        request(&mut input);
    } else {
        reply(&mut input);
    }
});

/// The bound the model says a request body breaks, if any.
fn model_request(body: &[u8]) -> Result<ReadRequest, &'static str> {
    if body.len() != READ_REQUEST_SIZE_BYTES {
        return Err("size");
    }
    let offset = u64::from_le_bytes(body[..8].try_into().unwrap());
    let count_max = u32::from_le_bytes(body[8..12].try_into().unwrap());
    let size_max_bytes = u32::from_le_bytes(body[12..].try_into().unwrap());
    if count_max == 0 || count_max > READ_MESSAGES_MAX {
        return Err("count");
    }
    if !(READ_REPLY_SIZE_MIN_BYTES..=MESSAGE_SIZE_MAX_BYTES).contains(&size_max_bytes) {
        return Err("size_max");
    }
    Ok(ReadRequest { offset, count_max, size_max_bytes })
}

fn request(input: &mut Input<'_>) {
    let offset = input.u64();
    let count_max = 1 + input.u32() % READ_MESSAGES_MAX;
    let span = MESSAGE_SIZE_MAX_BYTES - READ_REPLY_SIZE_MIN_BYTES + 1;
    let size_max_bytes = READ_REPLY_SIZE_MIN_BYTES + input.u32() % span;
    let built = ReadRequest::new(offset, count_max, size_max_bytes).expect("built within the bounds");
    let mut body = built.encode().to_vec();
    assert_eq!(ReadRequest::decode(&body), Ok(built));
    mutate(&mut body, input, 64);
    match (ReadRequest::decode(&body), model_request(&body)) {
        (Ok(decoded), Ok(expected)) => {
            assert_eq!(decoded, expected);
            assert_eq!(decoded.encode().to_vec(), body, "not canonical");
        }
        (Err(ReadError::RequestSize { size_bytes }), Err("size")) => assert_eq!(size_bytes, body.len()),
        (Err(ReadError::CountOutOfRange { .. }), Err("count")) => {}
        (Err(ReadError::SizeMaxOutOfRange { .. }), Err("size_max")) => {}
        (decoded, expected) => panic!("decode {decoded:?} but the model says {expected:?}"),
    }
}

fn answer(input: &mut Input<'_>) -> ReadAnswer {
    match input.byte() % 6 {
        0 => {
            let count = 1 + usize::from(input.byte()) % MESSAGES_MAX;
            let messages: Vec<Vec<u8>> = (0..count).map(|_| input.bytes(BUILT_MESSAGE_SIZE_MAX_BYTES)).collect();
            let first_offset = input.u64() / 2;
            let committed_end = first_offset + count as u64 + u64::from(input.u16());
            ReadAnswer::Messages { first_offset, committed_end, messages }
        }
        1 => ReadAnswer::PartitionMissing,
        2 => ReadAnswer::OffsetBeyondEnd { committed_end: input.u64() },
        3 => ReadAnswer::Unavailable { committed_end: input.u64() },
        4 => ReadAnswer::MessageTooLarge { offset: input.u64(), size_bytes: input.u32() },
        _ => ReadAnswer::Malformed,
    }
}

fn reply(input: &mut Input<'_>) {
    let read = ReadRequest::new(input.u64(), READ_MESSAGES_MAX, MESSAGE_SIZE_MAX_BYTES)
        .expect("within the bounds")
        .message(7, u128::from(input.u64()), input.u64(), input.u64())
        .header;
    let built = answer(input);
    let frame = built.reply(&read, input.byte());
    let mut header = frame.header;
    let mut body = frame.body.to_vec();
    assert_eq!(ReadAnswer::decode(&header, &body), Ok(built.clone()));
    mutate(&mut body, input, BODY_SIZE_MAX_BYTES);
    if input.bool() {
        header.context = u64::from(input.byte() % STATUS_VALUES_MAX);
    }
    if input.bool() {
        header.op = input.u64();
    }
    if input.bool() {
        header.commit = input.u64();
    }
    let Ok(decoded) = ReadAnswer::decode(&header, &body) else { return };
    if let ReadAnswer::Messages { first_offset, committed_end, messages } = &decoded {
        assert!((1..=READ_MESSAGES_MAX as usize).contains(&messages.len()));
        let end = first_offset.checked_add(messages.len() as u64).expect("a decoded answer's end fits");
        assert!(end <= *committed_end, "a decoded answer serves past the committed end");
    }
    let reencoded = decoded.reply(&read, header.replica);
    assert_eq!(reencoded.body.to_vec(), body, "a decoded answer does not re-encode to its body");
    assert_eq!(reencoded.header.context, header.context);
}
