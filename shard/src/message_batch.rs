//! The body of a `SendMessages` request: a batch of messages, and its reply.
//!
//! Owns the byte layout both ends agree on; knows nothing of offsets or
//! sessions (the partition state machine assigns offsets, VSR filters
//! retries). Pure: the client, the replicas and the fuzz targets share it.
//!
//! Body: `[count u32 LE]` then `count` times `[size u32 LE][bytes]`, nothing
//! after. A batch holds 1..=`BATCH_MESSAGES_MAX` messages, each at most
//! `RECORD_PAYLOAD_SIZE_MAX_BYTES` (what one partition-log record takes),
//! and fits one request (`BATCH_SIZE_MAX_BYTES`).
//!
//! Reply: `[first_offset u64 LE][count u32 LE]`: message `i` of the batch sits
//! at `first_offset + i`. `count == 0` is the group's refusal of a body that
//! is not a valid batch: nothing was appended, and the same refusal is the
//! committed reply on every replica (a committed op never panics a replica).
//! The first 8 bytes are the offset of the first message, as the reply to a
//! one-message append always was.

use std::rc::Rc;

use shoal_vsr::header::{HEADER_SIZE_BYTES, MESSAGE_SIZE_MAX_BYTES};

use crate::partition_log::{APPEND_MESSAGES_MAX, RECORD_PAYLOAD_SIZE_MAX_BYTES};

/// Messages one batch may carry. One batch is at most one partition-log
/// append, so its records are written together.
pub const BATCH_MESSAGES_MAX: usize = APPEND_MESSAGES_MAX;
/// The count in front of the batch.
pub const BATCH_HEADER_SIZE_BYTES: usize = 4;
/// The size in front of each message.
pub const BATCH_MESSAGE_OVERHEAD_BYTES: usize = 4;
/// A batch is the body of one request.
pub const BATCH_SIZE_MAX_BYTES: usize = MESSAGE_SIZE_MAX_BYTES as usize - HEADER_SIZE_BYTES;
/// `[first_offset u64][count u32]`.
pub const BATCH_REPLY_SIZE_BYTES: usize = 8 + 4;

const _: () = assert!(BATCH_MESSAGES_MAX <= APPEND_MESSAGES_MAX);
const _: () = assert!(BATCH_MESSAGES_MAX <= u32::MAX as usize);
const _: () = assert!(BATCH_HEADER_SIZE_BYTES + BATCH_MESSAGE_OVERHEAD_BYTES <= BATCH_SIZE_MAX_BYTES);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("a batch holds at least one message; send one or more")]
    Empty,
    #[error("a batch of {count} messages exceeds {BATCH_MESSAGES_MAX}; split it")]
    TooManyMessages { count: usize },
    #[error("a batch of {size_bytes} bytes exceeds {BATCH_SIZE_MAX_BYTES} (one request); split it")]
    TooLarge { size_bytes: usize },
    #[error("message {index} of the batch has {size_bytes} bytes, over {RECORD_PAYLOAD_SIZE_MAX_BYTES}")]
    MessageTooLarge { index: usize, size_bytes: usize },
    #[error("batch body is truncated at byte {at} (needs {needed} more bytes); drop the request")]
    Truncated { at: usize, needed: usize },
    #[error("batch body has {count} unexpected trailing bytes; drop the request")]
    TrailingBytes { count: usize },
    #[error(
        "a reply of {size_bytes} bytes is not a batch reply ({BATCH_REPLY_SIZE_BYTES}); the server runs another version"
    )]
    ReplySize { size_bytes: usize },
}

/// The encoded size of a batch of messages of these sizes.
pub fn batch_size_bytes(message_sizes: impl IntoIterator<Item = usize>) -> usize {
    message_sizes.into_iter().fold(BATCH_HEADER_SIZE_BYTES, |total, size| total + BATCH_MESSAGE_OVERHEAD_BYTES + size)
}

/// Encode `messages` as a `SendMessages` body, checking every bound the
/// replicas check, so a batch the client builds is never refused.
pub fn encode_batch<M: AsRef<[u8]>>(messages: &[M]) -> Result<Vec<u8>, BatchError> {
    let size_bytes = checked_batch_size_bytes(messages)?;
    let mut body = vec![0; size_bytes];
    encode_batch_into(messages, &mut body);
    Ok(body)
}

/// `encode_batch` straight into a shared buffer (a request's body): an
/// `Rc<[u8]>` made from a vector copies it, so the bytes are written where
/// they will stay. The buffer is zeroed at allocation, then filled.
pub fn encode_batch_shared<M: AsRef<[u8]>>(messages: &[M]) -> Result<Rc<[u8]>, BatchError> {
    let size_bytes = checked_batch_size_bytes(messages)?;
    let mut body: Rc<[u8]> = std::iter::repeat_n(0, size_bytes).collect();
    encode_batch_into(messages, Rc::get_mut(&mut body).expect("a new Rc has no other owner"));
    Ok(body)
}

/// The size of `messages` encoded, once every bound the replicas check holds.
fn checked_batch_size_bytes<M: AsRef<[u8]>>(messages: &[M]) -> Result<usize, BatchError> {
    if messages.is_empty() {
        return Err(BatchError::Empty);
    }
    if messages.len() > BATCH_MESSAGES_MAX {
        return Err(BatchError::TooManyMessages { count: messages.len() });
    }
    for (index, message) in messages.iter().enumerate() {
        let size_bytes = message.as_ref().len();
        if size_bytes > RECORD_PAYLOAD_SIZE_MAX_BYTES {
            return Err(BatchError::MessageTooLarge { index, size_bytes });
        }
    }
    let size_bytes = batch_size_bytes(messages.iter().map(|m| m.as_ref().len()));
    if size_bytes > BATCH_SIZE_MAX_BYTES {
        return Err(BatchError::TooLarge { size_bytes });
    }
    Ok(size_bytes)
}

/// Write the batch encoding of `messages` over all of `out`, which is
/// exactly its size.
fn encode_batch_into<M: AsRef<[u8]>>(messages: &[M], out: &mut [u8]) {
    let mut put = |at: &mut usize, bytes: &[u8]| {
        out[*at..*at + bytes.len()].copy_from_slice(bytes);
        *at += bytes.len();
    };
    let mut at = 0;
    put(&mut at, &(messages.len() as u32).to_le_bytes());
    for message in messages {
        let message = message.as_ref();
        put(&mut at, &(message.len() as u32).to_le_bytes());
        put(&mut at, message);
    }
    assert_eq!(at, out.len(), "the buffer is exactly the batch's size");
}

fn take<'a>(body: &'a [u8], at: &mut usize, size: usize) -> Result<&'a [u8], BatchError> {
    let available = body.len() - *at;
    if available < size {
        return Err(BatchError::Truncated { at: *at, needed: size - available });
    }
    let bytes = &body[*at..*at + size];
    *at += size;
    Ok(bytes)
}

fn take_u32(body: &[u8], at: &mut usize) -> Result<usize, BatchError> {
    let bytes = take(body, at, 4)?;
    Ok(u32::from_le_bytes(bytes.try_into().expect("took 4 bytes")) as usize)
}

/// Decode a `SendMessages` body into its messages (borrowed from `body`).
/// Bytes from the network: every bound is checked before anything is
/// allocated for it, and a bad body is an error, never a panic.
pub fn decode_batch(body: &[u8]) -> Result<Vec<&[u8]>, BatchError> {
    if body.len() > BATCH_SIZE_MAX_BYTES {
        return Err(BatchError::TooLarge { size_bytes: body.len() });
    }
    let mut at = 0;
    let count = take_u32(body, &mut at)?;
    if count == 0 {
        return Err(BatchError::Empty);
    }
    if count > BATCH_MESSAGES_MAX {
        return Err(BatchError::TooManyMessages { count });
    }
    let mut messages = Vec::with_capacity(count);
    for index in 0..count {
        let size_bytes = take_u32(body, &mut at)?;
        if size_bytes > RECORD_PAYLOAD_SIZE_MAX_BYTES {
            return Err(BatchError::MessageTooLarge { index, size_bytes });
        }
        messages.push(take(body, &mut at, size_bytes)?);
    }
    if at != body.len() {
        return Err(BatchError::TrailingBytes { count: body.len() - at });
    }
    debug_assert_eq!(messages.len(), count);
    Ok(messages)
}

/// Where a batch went: message `i` is at `first_offset + i`. `count == 0`:
/// the group refused the body (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchReply {
    pub first_offset: u64,
    pub count: u32,
}

impl BatchReply {
    pub fn encode(&self) -> [u8; BATCH_REPLY_SIZE_BYTES] {
        let mut out = [0u8; BATCH_REPLY_SIZE_BYTES];
        out[..8].copy_from_slice(&self.first_offset.to_le_bytes());
        out[8..].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<BatchReply, BatchError> {
        if bytes.len() != BATCH_REPLY_SIZE_BYTES {
            return Err(BatchError::ReplySize { size_bytes: bytes.len() });
        }
        let first_offset = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(bytes[8..].try_into().expect("4 bytes"));
        Ok(BatchReply { first_offset, count })
    }

    /// The group refused the body: nothing was appended.
    pub fn refused(&self) -> bool {
        self.count == 0
    }

    /// The offsets the batch's messages took.
    pub fn offsets(&self) -> std::ops::Range<u64> {
        self.first_offset..self.first_offset + u64::from(self.count)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn one_message_round_trips() {
        let body = encode_batch(&[b"hello"]).unwrap();
        assert_eq!(body.len(), batch_size_bytes([5]));
        assert_eq!(decode_batch(&body).unwrap(), vec![&b"hello"[..]]);
    }

    #[test]
    fn empty_and_oversized_batches_are_refused_on_both_ends() {
        assert_eq!(encode_batch::<&[u8]>(&[]), Err(BatchError::Empty));
        assert_eq!(decode_batch(&0u32.to_le_bytes()), Err(BatchError::Empty));
        let many = vec![&b""[..]; BATCH_MESSAGES_MAX + 1];
        assert_eq!(encode_batch(&many), Err(BatchError::TooManyMessages { count: BATCH_MESSAGES_MAX + 1 }));
        let count = (BATCH_MESSAGES_MAX as u32 + 1).to_le_bytes();
        assert_eq!(decode_batch(&count), Err(BatchError::TooManyMessages { count: BATCH_MESSAGES_MAX + 1 }));
        let big = vec![vec![0u8; BATCH_SIZE_MAX_BYTES / 2]; 2];
        assert!(matches!(encode_batch(&big), Err(BatchError::TooLarge { .. })));
    }

    #[test]
    fn a_size_past_the_end_is_truncated_not_allocated() {
        let mut body = 1u32.to_le_bytes().to_vec();
        body.extend_from_slice(&1000u32.to_le_bytes());
        body.extend_from_slice(b"abc");
        assert_eq!(decode_batch(&body), Err(BatchError::Truncated { at: 8, needed: 997 }));
        let mut huge = 1u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_batch(&huge), Err(BatchError::MessageTooLarge { index: 0, .. })));
    }

    #[test]
    fn reply_round_trips_and_starts_with_the_first_offset() {
        let reply = BatchReply { first_offset: 41, count: 3 };
        let bytes = reply.encode();
        assert_eq!(&bytes[..8], &41u64.to_le_bytes());
        assert_eq!(BatchReply::decode(&bytes), Ok(reply));
        assert_eq!(reply.offsets(), 41..44);
        assert!(!reply.refused());
        assert_eq!(BatchReply::decode(&bytes[..8]), Err(BatchError::ReplySize { size_bytes: 8 }));
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..64)) {
            let body = encode_batch(&messages).unwrap();
            prop_assert_eq!(body.len(), batch_size_bytes(messages.iter().map(Vec::len)));
            prop_assert_eq!(&*encode_batch_shared(&messages).unwrap(), body.as_slice(), "the shared encoding is the same bytes");
            let decoded = decode_batch(&body).unwrap();
            prop_assert_eq!(decoded.len(), messages.len());
            for (decoded, message) in decoded.iter().zip(&messages) {
                prop_assert_eq!(*decoded, message.as_slice());
            }
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly_and_what_decodes_encodes_back(body in prop::collection::vec(any::<u8>(), 0..96)) {
            if let Ok(messages) = decode_batch(&body) {
                prop_assert_eq!(encode_batch(&messages).unwrap(), body);
            }
        }

        #[test]
        fn a_cut_batch_never_decodes(messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 1..8), cut in any::<prop::sample::Index>()) {
            let body = encode_batch(&messages).unwrap();
            let cut = cut.index(body.len());
            prop_assert!(decode_batch(&body[..cut]).is_err());
            let mut longer = body.clone();
            longer.push(0);
            prop_assert_eq!(decode_batch(&longer), Err(BatchError::TrailingBytes { count: 1 }));
        }
    }
}
