//! Messages between replicas and clients: a `Header` plus a body, and the
//! codecs of the bodies that VSR itself defines (header lists for view change
//! and repair, checkpoints for state transfer).
//!
//! Decoding never trusts its input: every body codec returns a typed error.

use std::rc::Rc;

use crate::header::{HEADER_SIZE_BYTES, Header, HeaderError};

/// A message as the replica sees it. The body is shared: a broadcast clones
/// the `Rc`, not the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub body: Rc<[u8]>,
}

impl Message {
    /// Build a message, sealing the header's checksums over `body`.
    pub fn new(mut header: Header, body: Rc<[u8]>) -> Message {
        header.set_checksums(&body);
        Message { header, body }
    }

    /// Build a message over a body that arrived verified under
    /// `checksum_body` (a client's request becoming a prepare): the header
    /// is sealed without hashing the body again.
    pub fn with_verified_body(mut header: Header, body: Rc<[u8]>, checksum_body: u128) -> Message {
        header.set_checksums_known_body(body.len(), checksum_body);
        debug_assert!(header.valid_body(&body).is_ok(), "the body's checksum is the one it was verified under");
        Message { header, body }
    }

    pub fn empty(header: Header) -> Message {
        Message::new(header, Rc::from(Vec::new()))
    }

    /// Wire bytes: header then body.
    pub fn encode(&self) -> Vec<u8> {
        self.header.encode_message(&self.body)
    }

    /// Decode and verify wire bytes.
    pub fn decode(bytes: &[u8]) -> Result<Message, HeaderError> {
        let (header, body) = Header::decode_message(bytes)?;
        Ok(Message { header, body: Rc::from(body) })
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
    fn checkpoint_round_trip_and_truncation() {
        let mut anchor = Header::new(Command::Prepare, 1);
        anchor.set_checksums(&[]);
        let body = CheckpointBody { anchor, snapshot: vec![1, 2, 3] };
        assert_eq!(CheckpointBody::decode(&body.encode()).unwrap(), body);
        assert_eq!(CheckpointBody::decode(&[0; 10]), Err(BodyError::CheckpointTruncated));
    }
}
