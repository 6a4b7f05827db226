//! Reads of committed partition messages by offset: the bodies of
//! `Command::Read` and `Command::ReadReply`.
//!
//! Owns the byte layout client and replica agree on, and nothing else: the
//! node serves a read from the partition log (`node::read`), the client
//! builds and checks them (`shoal-client`). Pure, so the client, the
//! replicas, the simulator and the fuzz targets share it.
//!
//! A read needs no consensus and no session: every offset below a replica's
//! committed end (`PartitionStateMachine::next_offset`, the messages of
//! committed ops) is the same message on every replica, so any replica that
//! holds it may serve it, and none serves an offset at or past its own
//! committed end (a prepared but uncommitted op has no offset yet).
//!
//! Request: header `Read`, `namespace` = the partition, `client` = the
//! connection's client id, `request` = a read id the reply echoes (reads are
//! not numbered by a session; the id only pairs a reply with its read), and
//! the body `[offset u64 LE][count_max u32 LE][size_max u32 LE]`:
//! `size_max` bounds the whole reply frame, header included (the reader's
//! frame limit; the server caps it at `READ_REPLY_SIZE_MAX_BYTES`),
//! `count_max` the messages (at most `READ_MESSAGES_MAX`).
//!
//! Reply: header `ReadReply` with the request's `namespace` and `request`,
//! `replica` = the replica that served it, `context` = the status code,
//! `op` = the first offset (or the offset asked), `commit` = the replica's
//! committed end. With messages the body is a batch (`message_batch`'s
//! layout, the same as the `SendMessages` that appended them): message `i`
//! is at `op + i`. A single message always fits a reply of the server's
//! `message_size_max` (its append carried it with the same overhead); one
//! that does not fit the reader's `size_max` is answered `MessageTooLarge`.

use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, Header, MESSAGE_SIZE_MAX_BYTES};
use shoal_vsr::message::Message;

use crate::message_batch::{
    BATCH_HEADER_SIZE_BYTES, BATCH_MESSAGE_OVERHEAD_BYTES, BATCH_MESSAGES_MAX, BATCH_SIZE_MAX_BYTES, BatchError,
    decode_batch, encode_batch,
};

/// `[offset u64][count_max u32][size_max u32]`.
pub const READ_REQUEST_SIZE_BYTES: usize = 8 + 4 + 4;
/// Messages one reply carries at most (one batch).
pub const READ_MESSAGES_MAX: u32 = BATCH_MESSAGES_MAX as u32;
/// The largest read reply, header included, whatever the reader asks: the
/// protocol's frame limit. Not the server's configured `message_size_max`,
/// which sizes its journal slots (and so its disk): replies go only to
/// clients, whose own frame limit is what they ask with (`size_max`), and
/// a large reply is what makes reads fast (one round trip per megabyte).
pub const READ_REPLY_SIZE_MAX_BYTES: u32 = MESSAGE_SIZE_MAX_BYTES;
/// The smallest reply bound a reader may name: a header and one empty message.
pub const READ_REPLY_SIZE_MIN_BYTES: u32 =
    (HEADER_SIZE_BYTES + BATCH_HEADER_SIZE_BYTES + BATCH_MESSAGE_OVERHEAD_BYTES) as u32;
/// `MessageTooLarge`'s body: `[size_bytes u32]`.
const TOO_LARGE_BODY_SIZE_BYTES: usize = 4;

const _: () = assert!(READ_REPLY_SIZE_MIN_BYTES <= MESSAGE_SIZE_MAX_BYTES);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(
        "a read request body is {READ_REQUEST_SIZE_BYTES} bytes, not {size_bytes}: the client runs another version"
    )]
    RequestSize { size_bytes: usize },
    #[error("a read asks for {count} messages: ask for 1..={READ_MESSAGES_MAX}")]
    CountOutOfRange { count: u32 },
    #[error(
        "a read bounds its reply to {size_bytes} bytes: name {READ_REPLY_SIZE_MIN_BYTES}..={MESSAGE_SIZE_MAX_BYTES} \
         (the client's frame limit)"
    )]
    SizeMaxOutOfRange { size_bytes: u32 },
    #[error("a read reply has status {value}, which this client does not know: the server runs another version")]
    UnknownStatus { value: u64 },
    #[error("a {command:?} is not a read reply")]
    NotAReadReply { command: Command },
    #[error("a read reply's messages are not a batch ({0}): the server runs another version")]
    Batch(#[from] BatchError),
    #[error("a read reply is inconsistent ({detail}): the server runs another version, or it is a bug")]
    Inconsistent { detail: String },
}

/// What a reader asks: up to `count_max` messages from `offset`, in a reply
/// of at most `size_max_bytes` (header included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    pub offset: u64,
    pub count_max: u32,
    pub size_max_bytes: u32,
}

impl ReadRequest {
    /// A request within the bounds; `Err` names the bound it breaks.
    pub fn new(offset: u64, count_max: u32, size_max_bytes: u32) -> Result<ReadRequest, ReadError> {
        if count_max == 0 || count_max > READ_MESSAGES_MAX {
            return Err(ReadError::CountOutOfRange { count: count_max });
        }
        if !(READ_REPLY_SIZE_MIN_BYTES..=MESSAGE_SIZE_MAX_BYTES).contains(&size_max_bytes) {
            return Err(ReadError::SizeMaxOutOfRange { size_bytes: size_max_bytes });
        }
        Ok(ReadRequest { offset, count_max, size_max_bytes })
    }

    pub fn encode(&self) -> [u8; READ_REQUEST_SIZE_BYTES] {
        let mut out = [0u8; READ_REQUEST_SIZE_BYTES];
        out[..8].copy_from_slice(&self.offset.to_le_bytes());
        out[8..12].copy_from_slice(&self.count_max.to_le_bytes());
        out[12..].copy_from_slice(&self.size_max_bytes.to_le_bytes());
        out
    }

    /// Bytes from the network: checked, never trusted.
    pub fn decode(body: &[u8]) -> Result<ReadRequest, ReadError> {
        if body.len() != READ_REQUEST_SIZE_BYTES {
            return Err(ReadError::RequestSize { size_bytes: body.len() });
        }
        let offset = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        let count_max = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        let size_max_bytes = u32::from_le_bytes(body[12..].try_into().expect("4 bytes"));
        ReadRequest::new(offset, count_max, size_max_bytes)
    }

    /// The `Read` frame for partition `namespace`, from `client`, paired
    /// with its reply by `read_id`.
    pub fn message(&self, cluster: u128, client: u128, namespace: u64, read_id: u64) -> Message {
        let mut header = Header::new(Command::Read, cluster);
        header.client = client;
        header.namespace = namespace;
        header.request = read_id;
        let body = self.encode();
        header.set_checksums(&body);
        Message::new(header, body.to_vec())
    }

    /// The batch bytes a reply to this request may carry.
    pub fn batch_size_max_bytes(&self) -> usize {
        let frame_max = self.size_max_bytes.min(READ_REPLY_SIZE_MAX_BYTES) as usize;
        frame_max.saturating_sub(HEADER_SIZE_BYTES)
    }
}

/// A replica's answer to a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAnswer {
    /// Committed messages: message `i` is at `first_offset + i`; at least
    /// one, and `first_offset + messages.len() <= committed_end`.
    Messages { first_offset: u64, committed_end: u64, messages: Vec<Vec<u8>> },
    /// This replica runs no group for the namespace: no such partition (or
    /// this replica has not opened it yet: ask another).
    PartitionMissing,
    /// The offset is at or past this replica's committed end: not
    /// committed yet (or this replica lags: ask another, or later).
    OffsetBeyondEnd { committed_end: u64 },
    /// The offset is committed but this replica cannot serve it now (its
    /// log lacks it after a state transfer, or a read failed): ask another.
    Unavailable { committed_end: u64 },
    /// The message at `offset` alone exceeds the reader's reply bound.
    MessageTooLarge { offset: u64, size_bytes: u32 },
    /// The request broke a bound (`ReadRequest::new`).
    Malformed,
}

// Status codes in the reply header's `context`.
const STATUS_MESSAGES: u64 = 1;
const STATUS_PARTITION_MISSING: u64 = 2;
const STATUS_OFFSET_BEYOND_END: u64 = 3;
const STATUS_UNAVAILABLE: u64 = 4;
const STATUS_MESSAGE_TOO_LARGE: u64 = 5;
const STATUS_MALFORMED: u64 = 6;

impl ReadAnswer {
    /// The encoded size of a `Messages` answer's frame with these messages.
    pub fn messages_frame_size_bytes(message_sizes: impl IntoIterator<Item = usize>) -> usize {
        HEADER_SIZE_BYTES + crate::message_batch::batch_size_bytes(message_sizes)
    }

    /// The `ReadReply` frame answering `read` (its namespace, client and
    /// read id), served by `replica`.
    pub fn reply(&self, read: &Header, replica: u8) -> Message {
        let mut header = reply_header(read, replica);
        let body = match self {
            ReadAnswer::Messages { first_offset, committed_end, messages } => {
                assert!(!messages.is_empty(), "a Messages answer carries at least one message");
                assert!(*first_offset + messages.len() as u64 <= *committed_end, "only committed offsets are served");
                header.context = STATUS_MESSAGES;
                header.op = *first_offset;
                header.commit = *committed_end;
                encode_batch(messages).expect("the server bounds a reply to one batch")
            }
            ReadAnswer::PartitionMissing => {
                header.context = STATUS_PARTITION_MISSING;
                Vec::new()
            }
            ReadAnswer::OffsetBeyondEnd { committed_end } => {
                header.context = STATUS_OFFSET_BEYOND_END;
                header.commit = *committed_end;
                Vec::new()
            }
            ReadAnswer::Unavailable { committed_end } => {
                header.context = STATUS_UNAVAILABLE;
                header.commit = *committed_end;
                Vec::new()
            }
            ReadAnswer::MessageTooLarge { offset, size_bytes } => {
                header.context = STATUS_MESSAGE_TOO_LARGE;
                header.op = *offset;
                size_bytes.to_le_bytes().to_vec()
            }
            ReadAnswer::Malformed => {
                header.context = STATUS_MALFORMED;
                Vec::new()
            }
        };
        header.set_checksums(&body);
        Message::new(header, body)
    }

    /// Decode a `ReadReply` (header and body already checksummed by the
    /// connection). Bytes from the network: every claim is checked.
    pub fn decode(header: &Header, body: &[u8]) -> Result<ReadAnswer, ReadError> {
        if header.command != Command::ReadReply {
            return Err(ReadError::NotAReadReply { command: header.command });
        }
        let no_body = |answer: ReadAnswer| {
            if body.is_empty() {
                Ok(answer)
            } else {
                Err(ReadError::Inconsistent { detail: format!("{} body bytes after {answer:?}", body.len()) })
            }
        };
        match header.context {
            STATUS_MESSAGES => {
                let messages = decode_batch(body)?;
                let end = header.op.checked_add(messages.len() as u64);
                if end.is_none_or(|end| end > header.commit) {
                    let detail = format!(
                        "{} messages from offset {} past the committed end {}",
                        messages.len(),
                        header.op,
                        header.commit
                    );
                    return Err(ReadError::Inconsistent { detail });
                }
                Ok(ReadAnswer::Messages {
                    first_offset: header.op,
                    committed_end: header.commit,
                    messages: messages.into_iter().map(<[u8]>::to_vec).collect(),
                })
            }
            STATUS_PARTITION_MISSING => no_body(ReadAnswer::PartitionMissing),
            STATUS_OFFSET_BEYOND_END => no_body(ReadAnswer::OffsetBeyondEnd { committed_end: header.commit }),
            STATUS_UNAVAILABLE => no_body(ReadAnswer::Unavailable { committed_end: header.commit }),
            STATUS_MESSAGE_TOO_LARGE => {
                let bytes: [u8; TOO_LARGE_BODY_SIZE_BYTES] = body.try_into().map_err(|_| ReadError::Inconsistent {
                    detail: format!("a MessageTooLarge body of {} bytes", body.len()),
                })?;
                Ok(ReadAnswer::MessageTooLarge { offset: header.op, size_bytes: u32::from_le_bytes(bytes) })
            }
            STATUS_MALFORMED => no_body(ReadAnswer::Malformed),
            value => Err(ReadError::UnknownStatus { value }),
        }
    }
}

/// The header of a reply to `read`, before its status and checksums.
fn reply_header(read: &Header, replica: u8) -> Header {
    let mut header = Header::new(Command::ReadReply, read.cluster);
    header.namespace = read.namespace;
    header.client = read.client;
    header.request = read.request;
    header.replica = replica;
    header
}

/// The wire bytes of the `ReadReply` answering `read` with `messages` (a
/// `Messages` answer from `first_offset`), encoded straight into the frame:
/// each message is copied once, from wherever the server read it (its
/// partition log's read buffer), with no batch, body or per-message buffer
/// in between. The same bytes as `ReadAnswer::Messages {..}.reply(..).encode()`.
pub fn messages_reply_frame<'a>(
    read: &Header,
    replica: u8,
    first_offset: u64,
    committed_end: u64,
    messages: impl Iterator<Item = &'a [u8]> + Clone,
) -> Vec<u8> {
    let (count, body_size_bytes) =
        messages.clone().fold((0usize, BATCH_HEADER_SIZE_BYTES), |(count, size), message| {
            (count + 1, size + BATCH_MESSAGE_OVERHEAD_BYTES + message.len())
        });
    assert!((1..=BATCH_MESSAGES_MAX).contains(&count), "a Messages answer carries 1..={BATCH_MESSAGES_MAX} messages");
    assert!(body_size_bytes <= BATCH_SIZE_MAX_BYTES, "the server bounds a reply to one batch");
    assert!(first_offset + count as u64 <= committed_end, "only committed offsets are served");
    let mut frame = Vec::with_capacity(HEADER_SIZE_BYTES + body_size_bytes);
    frame.extend_from_slice(&[0; HEADER_SIZE_BYTES]);
    frame.extend_from_slice(&(count as u32).to_le_bytes());
    for message in messages {
        frame.extend_from_slice(&(message.len() as u32).to_le_bytes());
        frame.extend_from_slice(message);
    }
    assert_eq!(frame.len(), HEADER_SIZE_BYTES + body_size_bytes);
    let mut header = reply_header(read, replica);
    header.context = STATUS_MESSAGES;
    header.op = first_offset;
    header.commit = committed_end;
    header.set_checksums(&frame[HEADER_SIZE_BYTES..]);
    frame[..HEADER_SIZE_BYTES].copy_from_slice(&header.encode());
    frame
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn arb_request() -> impl Strategy<Value = ReadRequest> {
        (any::<u64>(), 1..=READ_MESSAGES_MAX, READ_REPLY_SIZE_MIN_BYTES..=MESSAGE_SIZE_MAX_BYTES)
            .prop_map(|(offset, count_max, size_max)| ReadRequest::new(offset, count_max, size_max).unwrap())
    }

    fn arb_answer() -> impl Strategy<Value = ReadAnswer> {
        let messages =
            (0u64..u64::MAX / 2, 0u64..1000, prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..20))
                .prop_map(|(first_offset, slack, messages)| ReadAnswer::Messages {
                    first_offset,
                    committed_end: first_offset + messages.len() as u64 + slack,
                    messages,
                });
        prop_oneof![
            messages,
            Just(ReadAnswer::PartitionMissing),
            any::<u64>().prop_map(|committed_end| ReadAnswer::OffsetBeyondEnd { committed_end }),
            any::<u64>().prop_map(|committed_end| ReadAnswer::Unavailable { committed_end }),
            (any::<u64>(), any::<u32>())
                .prop_map(|(offset, size_bytes)| ReadAnswer::MessageTooLarge { offset, size_bytes }),
            Just(ReadAnswer::Malformed),
        ]
    }

    fn read_header(namespace: u64, read_id: u64) -> Header {
        ReadRequest::new(3, 10, READ_REPLY_SIZE_MIN_BYTES).unwrap().message(9, 77, namespace, read_id).header
    }

    proptest! {
        #[test]
        fn request_round_trips(request in arb_request()) {
            prop_assert_eq!(ReadRequest::decode(&request.encode()), Ok(request));
            let message = request.message(9, 77, 42, 5);
            let (header, body) = Header::decode_message(&message.encode()).map(|(h, b)| (h, b.to_vec())).unwrap();
            prop_assert_eq!(header.command, Command::Read);
            prop_assert_eq!((header.namespace, header.client, header.request), (42, 77, 5));
            prop_assert_eq!(ReadRequest::decode(&body), Ok(request));
        }

        #[test]
        fn answer_round_trips_through_the_wire(answer in arb_answer(), namespace in any::<u64>(), read_id in any::<u64>()) {
            let read = read_header(namespace, read_id);
            let reply = answer.reply(&read, 2);
            let bytes = reply.encode();
            let (header, body) = Header::decode_message(&bytes).unwrap();
            prop_assert_eq!((header.namespace, header.request, header.replica), (namespace, read_id, 2));
            prop_assert_eq!(ReadAnswer::decode(&header, body), Ok(answer));
        }

        #[test]
        fn a_frame_built_in_place_is_the_reply_encoded(answer in arb_answer(), namespace in any::<u64>()) {
            if let ReadAnswer::Messages { first_offset, committed_end, messages } = &answer {
                let read = read_header(namespace, 3);
                let frame = messages_reply_frame(
                    &read, 1, *first_offset, *committed_end, messages.iter().map(Vec::as_slice),
                );
                prop_assert_eq!(frame, answer.reply(&read, 1).encode());
            }
        }

        #[test]
        fn arbitrary_request_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(request) = ReadRequest::decode(&bytes) {
                prop_assert_eq!(request.encode().to_vec(), bytes);
            }
        }

        #[test]
        fn arbitrary_reply_fields_never_panic(
            status in 0u64..8,
            op in any::<u64>(),
            commit in any::<u64>(),
            body in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut header = Header::new(Command::ReadReply, 1);
            header.context = status;
            header.op = op;
            header.commit = commit;
            header.set_checksums(&body);
            if let Ok(ReadAnswer::Messages { first_offset, committed_end, messages }) = ReadAnswer::decode(&header, &body) {
                prop_assert!(!messages.is_empty());
                prop_assert!(first_offset + messages.len() as u64 <= committed_end);
            }
        }
    }

    #[test]
    fn bounds_are_typed_errors() {
        assert_eq!(ReadRequest::new(0, 0, 4096), Err(ReadError::CountOutOfRange { count: 0 }));
        let over = READ_MESSAGES_MAX + 1;
        assert_eq!(ReadRequest::new(0, over, 4096), Err(ReadError::CountOutOfRange { count: over }));
        let small = READ_REPLY_SIZE_MIN_BYTES - 1;
        assert_eq!(ReadRequest::new(0, 1, small), Err(ReadError::SizeMaxOutOfRange { size_bytes: small }));
        assert_eq!(ReadRequest::decode(&[0; 15]), Err(ReadError::RequestSize { size_bytes: 15 }));
    }

    #[test]
    fn a_reply_claiming_offsets_past_its_committed_end_is_refused() {
        let answer = ReadAnswer::Messages { first_offset: 5, committed_end: 7, messages: vec![vec![1], vec![2]] };
        let reply = answer.reply(&read_header(1, 1), 0);
        let mut header = reply.header;
        header.commit = 6;
        assert!(matches!(ReadAnswer::decode(&header, &reply.body), Err(ReadError::Inconsistent { .. })));
        let mut other = reply.header;
        other.command = Command::Reply;
        assert_eq!(ReadAnswer::decode(&other, &reply.body), Err(ReadError::NotAReadReply { command: Command::Reply }));
    }

    #[test]
    fn one_message_fits_a_reply_as_it_fit_its_append() {
        // The append that carried a message had a header and a batch of one;
        // the reply that returns it alone has exactly the same size.
        let sizes = [0usize, 1, 1000, 65_000];
        for size in sizes {
            let append = HEADER_SIZE_BYTES + crate::message_batch::batch_size_bytes([size]);
            assert_eq!(ReadAnswer::messages_frame_size_bytes([size]), append);
        }
    }
}
