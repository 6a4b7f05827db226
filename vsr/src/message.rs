//! Messages between replicas and clients: a `Header` plus a body, and the
//! codecs of the bodies that VSR itself defines (header lists for view change
//! and repair, checkpoints for state transfer).
//!
//! Decoding never trusts its input: every body codec returns a typed error.

use std::rc::Rc;

use crate::header::{HEADER_SIZE_BYTES, Header, HeaderError};

/// A message's body: immutable bytes that every clone shares (a broadcast
/// clones the handle, not the bytes). Either an allocation of its own, or
/// the body of the received frame it came in, left inside that frame's
/// buffer (`in_frame`) so that receiving a 1 MiB prepare does not copy it
/// out. Reads as the `[u8]` it holds.
#[derive(Clone)]
pub struct Body(BodyBytes);

#[derive(Clone)]
enum BodyBytes {
    Own(Rc<[u8]>),
    InFrame { frame: Rc<Vec<u8>>, from: usize },
}

impl Body {
    /// The bytes of `frame` from `from` on: a received frame's body, after
    /// its header.
    pub fn in_frame(frame: Vec<u8>, from: usize) -> Body {
        assert!(from <= frame.len(), "a frame's body starts inside the frame");
        Body(BodyBytes::InFrame { frame: Rc::new(frame), from })
    }
}

impl std::ops::Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            BodyBytes::Own(bytes) => bytes,
            BodyBytes::InFrame { frame, from } => &frame[*from..],
        }
    }
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Rc<[u8]>> for Body {
    fn from(bytes: Rc<[u8]>) -> Body {
        Body(BodyBytes::Own(bytes))
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Body {
        Body(BodyBytes::Own(Rc::from(bytes)))
    }
}

impl From<&[u8]> for Body {
    fn from(bytes: &[u8]) -> Body {
        Body(BodyBytes::Own(Rc::from(bytes)))
    }
}

/// Equal bytes, wherever they live.
impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        **self == **other
    }
}

impl Eq for Body {}

/// As the bytes (a trace or an assertion prints the same either way).
impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

/// A message as the replica sees it. The body is shared: a broadcast clones
/// the handle, not the bytes.
#[derive(Debug, Clone)]
pub struct Message {
    pub header: Header,
    pub body: Body,
    /// What `body` was found to match when this message was built (hashed
    /// by `new` or `decode`, or by the decoder that hands a frame to
    /// `from_verified_frame`); `None` if nothing checked it. The
    /// verified-ness travels with the buffer, so `valid_body` need not hash
    /// up to a MiB again.
    verified: Option<VerifiedBody>,
}

/// A body checked against a checksum: which checksum, and which buffer. The
/// bytes of a `Body` cannot change; the field can be given another
/// buffer (a live one, so at another address) or the header another
/// checksum, and either no longer matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VerifiedBody {
    checksum_body: u128,
    body_address: usize,
}

impl VerifiedBody {
    fn of(checksum_body: u128, body: &Body) -> VerifiedBody {
        VerifiedBody { checksum_body, body_address: body.as_ptr() as usize }
    }
}

/// Equal header and body; how the body came to be trusted is not part of
/// the message.
impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.header == other.header && self.body == other.body
    }
}

impl Eq for Message {}

impl Message {
    /// Build a message, sealing the header's checksums over `body`.
    pub fn new(mut header: Header, body: impl Into<Body>) -> Message {
        let body = body.into();
        header.set_checksums(&body);
        let verified = Some(VerifiedBody::of(header.checksum_body, &body));
        Message { header, body, verified }
    }

    /// Build a message over a body that arrived verified under
    /// `checksum_body` (a client's request becoming a prepare): the header
    /// is sealed without hashing the body again.
    pub fn with_verified_body(mut header: Header, body: impl Into<Body>, checksum_body: u128) -> Message {
        let body = body.into();
        header.set_checksums_known_body(body.len(), checksum_body);
        debug_assert!(header.valid_body(&body).is_ok(), "the body's checksum is the one it was verified under");
        let verified = Some(VerifiedBody::of(checksum_body, &body));
        Message { header, body, verified }
    }

    /// A message whose header and body a frame decoder has already checked
    /// (the header's checksum, then the body against the header): `admit`
    /// will not hash the body again.
    pub fn from_verified_frame(header: Header, body: impl Into<Body>) -> Message {
        let body = body.into();
        debug_assert!(header.valid_checksum() && header.valid_body(&body).is_ok(), "the decoder verified the frame");
        let verified = Some(VerifiedBody::of(header.checksum_body, &body));
        Message { header, body, verified }
    }

    /// A message from parts nothing has checked yet (a header and a body
    /// stored apart, a test's hand-made frame): `valid_body` hashes it.
    pub fn from_parts(header: Header, body: impl Into<Body>) -> Message {
        Message { header, body: body.into(), verified: None }
    }

    pub fn empty(header: Header) -> Message {
        Message::new(header, Rc::from(Vec::new()))
    }

    /// Whether the body is the one the header names (size and checksum).
    /// Hashes the body only if it was not verified under the header's
    /// current `checksum_body` when the message was built.
    pub fn valid_body(&self) -> bool {
        if self.verified == Some(VerifiedBody::of(self.header.checksum_body, &self.body))
            && self.header.body_size_bytes() == self.body.len()
        {
            debug_assert!(self.header.valid_body(&self.body).is_ok());
            return true;
        }
        self.header.valid_body(&self.body).is_ok()
    }

    /// Wire bytes: header then body.
    pub fn encode(&self) -> Vec<u8> {
        self.header.encode_message(&self.body)
    }

    /// Decode and verify wire bytes.
    pub fn decode(bytes: &[u8]) -> Result<Message, HeaderError> {
        let (header, body) = Header::decode_message(bytes)?;
        Ok(Message::from_verified_frame(header, Rc::from(body)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("header list body is {size_bytes} bytes, not a multiple of 256: drop the message")]
    HeaderListSize { size_bytes: usize },
    #[error("header list entry {index} is invalid: {source}")]
    HeaderListEntry { index: usize, source: HeaderError },
    #[error("checkpoint body is truncated: drop the message")]
    CheckpointTruncated,
    #[error("checkpoint chunk has unknown flags {flags:#x}: the sender speaks a newer protocol")]
    CheckpointChunkFlags { flags: u64 },
    #[error(
        "checkpoint chunk of {size_bytes} bytes at offset {offset_bytes} lies outside its \
         {snapshot_size_bytes}-byte snapshot: drop the message"
    )]
    CheckpointChunkOutOfBounds { offset_bytes: u64, size_bytes: usize, snapshot_size_bytes: u64 },
}

/// Encode a list of headers (a view change suffix or a repair answer).
pub fn encode_headers(headers: &[Header]) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.len() * HEADER_SIZE_BYTES);
    for header in headers {
        out.extend_from_slice(&header.encode());
    }
    out
}

pub fn decode_headers(body: &[u8]) -> Result<Vec<Header>, BodyError> {
    if !body.len().is_multiple_of(HEADER_SIZE_BYTES) {
        return Err(BodyError::HeaderListSize { size_bytes: body.len() });
    }
    body.chunks_exact(HEADER_SIZE_BYTES)
        .enumerate()
        .map(|(index, chunk)| Header::decode(chunk).map_err(|source| BodyError::HeaderListEntry { index, source }))
        .collect()
}

/// Bytes a checkpoint chunk's body spends before its snapshot bytes: the
/// anchor header, the snapshot's size and checksum, the chunk's offset and
/// its flags.
pub const CHECKPOINT_CHUNK_PREFIX_BYTES: usize = HEADER_SIZE_BYTES + 8 + 16 + 8 + 8;

/// The flag of the last chunk of one answer: the receiver asks for the next
/// piece when it has it.
const CHUNK_FLAG_LAST_OF_ANSWER: u64 = 1;

/// One piece of a checkpoint for state transfer. A snapshot may be larger
/// than one frame (a metadata snapshot grows with the streams and topics;
/// a frame is at most the group's `message_size_max`), so the sender cuts
/// it into chunks, each a frame within that limit, and the receiver
/// assembles the chunks of one snapshot (the same anchor, size and
/// checksum) until it holds every byte, then checks the whole against the
/// checksum before it restores anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointChunk {
    /// The header of the checkpoint op: the anchor of the hash chain that
    /// continues after it.
    pub anchor: Header,
    pub snapshot_size_bytes: u64,
    pub snapshot_checksum: u128,
    /// Where `bytes` starts in the snapshot.
    pub offset_bytes: u64,
    /// The sender's answer ends with this chunk.
    pub last_of_answer: bool,
    pub bytes: Vec<u8>,
}

/// The snapshot bytes one chunk carries at most in a frame of
/// `message_size_max_bytes` (header included).
pub fn checkpoint_chunk_bytes_max(message_size_max_bytes: u32) -> usize {
    let frame = message_size_max_bytes as usize;
    assert!(frame > HEADER_SIZE_BYTES + CHECKPOINT_CHUNK_PREFIX_BYTES, "a frame carries a chunk prefix and a byte");
    frame - HEADER_SIZE_BYTES - CHECKPOINT_CHUNK_PREFIX_BYTES
}

impl CheckpointChunk {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHECKPOINT_CHUNK_PREFIX_BYTES + self.bytes.len());
        out.extend_from_slice(&self.anchor.encode());
        out.extend_from_slice(&self.snapshot_size_bytes.to_le_bytes());
        out.extend_from_slice(&self.snapshot_checksum.to_le_bytes());
        out.extend_from_slice(&self.offset_bytes.to_le_bytes());
        let flags = if self.last_of_answer { CHUNK_FLAG_LAST_OF_ANSWER } else { 0 };
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&self.bytes);
        debug_assert_eq!(out.len(), CHECKPOINT_CHUNK_PREFIX_BYTES + self.bytes.len());
        out
    }

    /// Decode and check that the chunk lies inside its snapshot.
    pub fn decode(body: &[u8]) -> Result<CheckpointChunk, BodyError> {
        if body.len() < CHECKPOINT_CHUNK_PREFIX_BYTES {
            return Err(BodyError::CheckpointTruncated);
        }
        let anchor = Header::decode(&body[..HEADER_SIZE_BYTES])
            .map_err(|source| BodyError::HeaderListEntry { index: 0, source })?;
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let snapshot_size_bytes = u64_at(HEADER_SIZE_BYTES);
        let snapshot_checksum =
            u128::from_le_bytes(body[HEADER_SIZE_BYTES + 8..HEADER_SIZE_BYTES + 24].try_into().expect("16 bytes"));
        let offset_bytes = u64_at(HEADER_SIZE_BYTES + 24);
        let flags = u64_at(HEADER_SIZE_BYTES + 32);
        if flags & !CHUNK_FLAG_LAST_OF_ANSWER != 0 {
            return Err(BodyError::CheckpointChunkFlags { flags });
        }
        let bytes = &body[CHECKPOINT_CHUNK_PREFIX_BYTES..];
        let end = offset_bytes.checked_add(bytes.len() as u64);
        if end.is_none_or(|end| end > snapshot_size_bytes) {
            return Err(BodyError::CheckpointChunkOutOfBounds {
                offset_bytes,
                size_bytes: bytes.len(),
                snapshot_size_bytes,
            });
        }
        Ok(CheckpointChunk {
            anchor,
            snapshot_size_bytes,
            snapshot_checksum,
            offset_bytes,
            last_of_answer: flags & CHUNK_FLAG_LAST_OF_ANSWER != 0,
            bytes: bytes.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Command;

    /// A received frame's body stays in the frame's buffer: the same bytes
    /// at the same address, shared by clones, equal to a copy of them, and
    /// a message over it is verified without hashing.
    #[test]
    fn a_body_in_its_frame_is_the_bytes_after_the_header_and_is_not_copied() {
        let mut header = Header::new(Command::Prepare, 1);
        header.set_checksums(b"the body");
        let frame = header.encode_message(b"the body");
        let frame_address = frame.as_ptr() as usize;
        let body = Body::in_frame(frame, HEADER_SIZE_BYTES);
        assert_eq!(&body[..], b"the body");
        assert_eq!(body.as_ptr() as usize, frame_address + HEADER_SIZE_BYTES, "not copied out of the frame");
        let shared = body.clone();
        assert_eq!(shared.as_ptr(), body.as_ptr(), "a clone shares the bytes");
        assert_eq!(body, Body::from(&b"the body"[..]), "equal to the same bytes elsewhere");
        assert_eq!(format!("{body:?}"), format!("{:?}", &b"the body"[..]), "prints as its bytes");
        let message = Message::from_verified_frame(header, body);
        assert!(message.valid_body());
        assert_eq!(Message::decode(&message.encode()).unwrap(), message);
    }

    #[test]
    fn header_list_round_trip_and_rejects_partial() {
        let mut a = Header::new(Command::Prepare, 1);
        a.op = 5;
        a.set_checksums(b"x");
        let mut b = Header::new(Command::Prepare, 1);
        b.op = 6;
        b.set_checksums(b"y");
        let bytes = encode_headers(&[a, b]);
        assert_eq!(decode_headers(&bytes).unwrap(), vec![a, b]);
        assert!(matches!(decode_headers(&bytes[..300]), Err(BodyError::HeaderListSize { .. })));
        let mut bad = bytes.clone();
        bad[300] ^= 1;
        assert!(matches!(decode_headers(&bad), Err(BodyError::HeaderListEntry { index: 1, .. })));
    }

    #[test]
    fn a_body_verified_at_build_stays_valid_only_with_its_buffer_and_checksum() {
        let message = Message::new(Header::new(Command::Request, 1), Rc::from(&b"body"[..]));
        assert!(message.valid_body());
        let decoded = Message::decode(&message.encode()).unwrap();
        assert!(decoded.valid_body());
        assert_eq!(decoded, message, "how a body came to be trusted is not part of the message");
        // Another buffer with other bytes: hashed, and refused.
        let mut swapped = message.clone();
        swapped.body = Body::from(&b"bodz"[..]);
        assert!(!swapped.valid_body());
        // The same bytes in another buffer: hashed, and accepted.
        swapped.body = Body::from(&b"body"[..]);
        assert!(swapped.valid_body());
        // A header naming another checksum no longer matches what was verified.
        let mut renamed = message.clone();
        renamed.header.checksum_body ^= 1;
        assert!(!renamed.valid_body());
        // Parts nothing checked are hashed.
        let unchecked = Message::from_parts(message.header, Rc::from(&b"bodz"[..]));
        assert!(!unchecked.valid_body());
        assert!(Message::from_parts(message.header, message.body.clone()).valid_body());
    }

    /// Three bytes at offset 4 of a snapshot of `snapshot_size_bytes`.
    fn chunk_of(snapshot_size_bytes: u64, last_of_answer: bool) -> CheckpointChunk {
        let mut anchor = Header::new(Command::Prepare, 1);
        anchor.set_checksums(&[]);
        CheckpointChunk {
            anchor,
            snapshot_size_bytes,
            snapshot_checksum: 7,
            offset_bytes: 4,
            last_of_answer,
            bytes: vec![1, 2, 3],
        }
    }

    #[test]
    fn checkpoint_chunk_round_trip_and_truncation() {
        let chunk = chunk_of(10, true);
        assert_eq!(CheckpointChunk::decode(&chunk.encode()).unwrap(), chunk);
        let first = CheckpointChunk { offset_bytes: 0, last_of_answer: false, ..chunk.clone() };
        assert_eq!(CheckpointChunk::decode(&first.encode()).unwrap(), first);
        assert_eq!(CheckpointChunk::decode(&[0; 10]), Err(BodyError::CheckpointTruncated));
    }

    #[test]
    fn a_checkpoint_chunk_outside_its_snapshot_or_with_unknown_flags_is_refused() {
        let chunk = chunk_of(6, false);
        assert!(matches!(
            CheckpointChunk::decode(&chunk.encode()),
            Err(BodyError::CheckpointChunkOutOfBounds { offset_bytes: 4, size_bytes: 3, snapshot_size_bytes: 6 })
        ));
        let overflowing = CheckpointChunk { offset_bytes: u64::MAX, snapshot_size_bytes: u64::MAX, ..chunk.clone() };
        assert!(matches!(
            CheckpointChunk::decode(&overflowing.encode()),
            Err(BodyError::CheckpointChunkOutOfBounds { .. })
        ));
        let mut flagged = CheckpointChunk { snapshot_size_bytes: 7, ..chunk }.encode();
        flagged[CHECKPOINT_CHUNK_PREFIX_BYTES - 8] |= 2;
        assert_eq!(CheckpointChunk::decode(&flagged), Err(BodyError::CheckpointChunkFlags { flags: 2 }));
    }

    #[test]
    fn a_chunk_of_the_largest_size_fills_its_frame() {
        let bytes = checkpoint_chunk_bytes_max(4096);
        assert_eq!(HEADER_SIZE_BYTES + CHECKPOINT_CHUNK_PREFIX_BYTES + bytes, 4096);
    }
}
