//! Messages between replicas and clients: a `Header` plus a body, and the
//! codecs of the bodies that VSR itself defines (header lists for view change
//! and repair, checkpoints for state transfer).
//!
//! Decoding never trusts its input: every body codec returns a typed error.

use std::rc::Rc;

use crate::header::{HEADER_SIZE_BYTES, Header, HeaderError};

/// A message as the replica sees it. The body is shared: a broadcast clones
/// the `Rc`, not the bytes.
#[derive(Debug, Clone)]
pub struct Message {
    pub header: Header,
    pub body: Rc<[u8]>,
    /// What `body` was found to match when this message was built (hashed
    /// by `new` or `decode`, or by the decoder that hands a frame to
    /// `from_verified_frame`); `None` if nothing checked it. The
    /// verified-ness travels with the buffer, so `valid_body` need not hash
    /// up to a MiB again.
    verified: Option<VerifiedBody>,
}

/// A body checked against a checksum: which checksum, and which buffer. The
/// bytes of an `Rc<[u8]>` cannot change; the field can be given another
/// buffer (a live one, so at another address) or the header another
/// checksum, and either no longer matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VerifiedBody {
    checksum_body: u128,
    body_address: usize,
}

impl VerifiedBody {
    fn of(checksum_body: u128, body: &Rc<[u8]>) -> VerifiedBody {
        VerifiedBody { checksum_body, body_address: Rc::as_ptr(body).cast::<u8>() as usize }
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
    pub fn new(mut header: Header, body: Rc<[u8]>) -> Message {
        header.set_checksums(&body);
        let verified = Some(VerifiedBody::of(header.checksum_body, &body));
        Message { header, body, verified }
    }

    /// Build a message over a body that arrived verified under
    /// `checksum_body` (a client's request becoming a prepare): the header
    /// is sealed without hashing the body again.
    pub fn with_verified_body(mut header: Header, body: Rc<[u8]>, checksum_body: u128) -> Message {
        header.set_checksums_known_body(body.len(), checksum_body);
        debug_assert!(header.valid_body(&body).is_ok(), "the body's checksum is the one it was verified under");
        let verified = Some(VerifiedBody::of(checksum_body, &body));
        Message { header, body, verified }
    }

    /// A message whose header and body a frame decoder has already checked
    /// (the header's checksum, then the body against the header): `admit`
    /// will not hash the body again.
    pub fn from_verified_frame(header: Header, body: Rc<[u8]>) -> Message {
        debug_assert!(header.valid_checksum() && header.valid_body(&body).is_ok(), "the decoder verified the frame");
        let verified = Some(VerifiedBody::of(header.checksum_body, &body));
        Message { header, body, verified }
    }

    /// A message from parts nothing has checked yet (a header and a body
    /// stored apart, a test's hand-made frame): `valid_body` hashes it.
    pub fn from_parts(header: Header, body: Rc<[u8]>) -> Message {
        Message { header, body, verified: None }
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

/// A checkpoint for state transfer: the header of the checkpoint op (the
/// anchor of the hash chain that continues after it) and the snapshot bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointBody {
    pub anchor: Header,
    pub snapshot: Vec<u8>,
}

impl CheckpointBody {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_SIZE_BYTES + self.snapshot.len());
        out.extend_from_slice(&self.anchor.encode());
        out.extend_from_slice(&self.snapshot);
        out
    }

    pub fn decode(body: &[u8]) -> Result<CheckpointBody, BodyError> {
        if body.len() < HEADER_SIZE_BYTES {
            return Err(BodyError::CheckpointTruncated);
        }
        let anchor = Header::decode(&body[..HEADER_SIZE_BYTES])
            .map_err(|source| BodyError::HeaderListEntry { index: 0, source })?;
        Ok(CheckpointBody { anchor, snapshot: body[HEADER_SIZE_BYTES..].to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Command;

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
        swapped.body = Rc::from(&b"bodz"[..]);
        assert!(!swapped.valid_body());
        // The same bytes in another buffer: hashed, and accepted.
        swapped.body = Rc::from(&b"body"[..]);
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

    #[test]
    fn checkpoint_round_trip_and_truncation() {
        let mut anchor = Header::new(Command::Prepare, 1);
        anchor.set_checksums(&[]);
        let body = CheckpointBody { anchor, snapshot: vec![1, 2, 3] };
        assert_eq!(CheckpointBody::decode(&body.encode()).unwrap(), body);
        assert_eq!(CheckpointBody::decode(&[0; 10]), Err(BodyError::CheckpointTruncated));
    }
}
