//! The metadata state machine: streams, topics and their partition counts.
//!
//! Owns the catalogue a cluster agrees on through the metadata VSR group, the
//! codec of its request bodies, and the snapshot bundle shard 0 hands to the
//! other shards at start-up. Pure: no I/O, no clock, no entropy; the same
//! requests in the same order give the same state and the same bytes.
//!
//! Must not touch client sessions (VSR's) or partition data (the partition
//! log's). `apply` validates a request completely before changing anything,
//! so a rejected request leaves the state as it was.
//!
//! As a `shoal_vsr::StateMachine`, every committed op gets a reply
//! (`MetadataReply`, decoded by `decode_reply`): a body that does not decode or
//! a request that is rejected is a committed op with an error reply, the same
//! on every replica, never a panic.

use std::collections::BTreeMap;

use shoal_vsr::Operation;
use shoal_vsr::StateMachine;
use shoal_vsr::header::checksum;
use shoal_vsr::state_machine::SnapshotError;

use crate::namespace::{Namespace, PARTITION_ID_MAX, STREAM_ID_MAX, TOPIC_ID_MAX};

pub const STREAMS_MAX: usize = 4096;
pub const TOPICS_PER_STREAM_MAX: usize = 4096;
/// Partitions of one topic; ids `0..partition_count` must fit the namespace.
pub const PARTITION_COUNT_MAX: u32 = 4096;
pub const NAME_SIZE_MAX_BYTES: usize = 255;

const _: () = assert!(PARTITION_COUNT_MAX - 1 <= PARTITION_ID_MAX);

/// Version 2 carries each topic's creation op after its partition count.
const SNAPSHOT_MAGIC: [u8; 8] = *b"shoalmd2";
/// Version 1 (no creation ops) is still read: its topics' creation op is
/// unknown, read as 0 (`Topic::created_op`).
const SNAPSHOT_MAGIC_V1: [u8; 8] = *b"shoalmd1";
const SNAPSHOT_CHECKSUM_SIZE_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub name: String,
    pub partition_count: u32,
    /// The metadata op that created the topic (0: unknown, from a version 1
    /// snapshot or an `apply` outside the replica). A replica that rejoined
    /// after losing its disk tells by it whether the topic's partition groups
    /// may have existed before the loss (`Replica::nack_floor`).
    pub created_op: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub name: String,
    pub topics: BTreeMap<u32, Topic>,
}

/// A request to the metadata group; the body of a metadata prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRequest {
    CreateStream {
        stream_id: u32,
        name: String,
    },
    DeleteStream {
        stream_id: u32,
    },
    CreateTopic {
        stream_id: u32,
        topic_id: u32,
        name: String,
        partition_count: u32,
    },
    DeleteTopic {
        stream_id: u32,
        topic_id: u32,
    },
    /// Read-only: whether the catalogue holds this partition (`apply`
    /// answers `Ok`, or why not: no such stream, topic or partition). Goes
    /// through the log, so its answer is linearizable: it sees every change
    /// acknowledged before it was sent.
    LookupPartition {
        stream_id: u32,
        topic_id: u32,
        partition_id: u32,
    },
}

/// Why `apply` rejected a request. Sent back to the client as the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("stream id {stream_id} is outside 1..={STREAM_ID_MAX}; choose another id")]
    StreamIdInvalid { stream_id: u32 },
    #[error("stream {stream_id} already exists; delete it first or choose another id")]
    StreamExists { stream_id: u32 },
    #[error("stream {stream_id} does not exist; create it first")]
    StreamNotFound { stream_id: u32 },
    #[error("a stream named {name:?} already exists; choose another name")]
    StreamNameExists { name: String },
    #[error("the cluster holds the maximum of {STREAMS_MAX} streams; delete one first")]
    StreamsFull,
    #[error("topic id {topic_id} exceeds {TOPIC_ID_MAX}; choose a smaller id")]
    TopicIdInvalid { topic_id: u32 },
    #[error("topic {topic_id} already exists in stream {stream_id}; delete it first or choose another id")]
    TopicExists { stream_id: u32, topic_id: u32 },
    #[error("topic {topic_id} does not exist in stream {stream_id}; create it first")]
    TopicNotFound { stream_id: u32, topic_id: u32 },
    #[error("stream {stream_id} already has a topic named {name:?}; choose another name")]
    TopicNameExists { stream_id: u32, name: String },
    #[error("stream {stream_id} holds the maximum of {TOPICS_PER_STREAM_MAX} topics; delete one first")]
    TopicsFull { stream_id: u32 },
    #[error("partition count {partition_count} is outside 1..={PARTITION_COUNT_MAX}")]
    PartitionCountInvalid { partition_count: u32 },
    #[error("name of {size_bytes} bytes is outside 1..={NAME_SIZE_MAX_BYTES} bytes")]
    NameInvalid { size_bytes: usize },
    #[error(
        "topic {topic_id} of stream {stream_id} has no partition {partition_id}; use an id below its partition count"
    )]
    PartitionNotFound { stream_id: u32, topic_id: u32, partition_id: u32 },
}

/// Why a request body or a snapshot bundle could not be decoded. Bad bytes
/// from the network or disk: drop them, never panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("operation {operation:?} is not a metadata request; route it to its partition")]
    NotMetadataOperation { operation: Operation },
    #[error("body is truncated at byte {at} (needs {needed} more bytes); drop the request")]
    Truncated { at: usize, needed: usize },
    #[error("body has {count} unexpected trailing bytes; drop the request")]
    TrailingBytes { count: usize },
    #[error("name at byte {at} is not UTF-8; drop the request")]
    NameNotUtf8 { at: usize },
    #[error("snapshot magic is wrong: not a shoal metadata snapshot (or a newer format); upgrade or rebuild it")]
    SnapshotMagic,
    #[error("snapshot checksum mismatch: the bundle is corrupt; shard 0 must send it again")]
    SnapshotChecksum,
    #[error("snapshot lists {count} entries, above the limit {max}")]
    SnapshotCount { count: u32, max: usize },
    #[error("snapshot ids are not strictly increasing at byte {at}; the bundle is not canonical")]
    SnapshotOrder { at: usize },
    #[error("reply tag {tag} is unknown: the replica runs another version; upgrade the client")]
    ReplyTag { tag: u8 },
    #[error("snapshot holds an invalid entry: {0}")]
    SnapshotInvalid(#[from] MetadataError),
}

/// The catalogue. `BTreeMap` so that iteration (and so every encoding) is ordered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataState {
    streams: BTreeMap<u32, Stream>,
}

fn check_name(name: &str) -> Result<(), MetadataError> {
    if name.is_empty() || name.len() > NAME_SIZE_MAX_BYTES {
        return Err(MetadataError::NameInvalid { size_bytes: name.len() });
    }
    Ok(())
}

impl MetadataState {
    pub fn new() -> MetadataState {
        MetadataState::default()
    }

    pub fn streams(&self) -> &BTreeMap<u32, Stream> {
        &self.streams
    }

    pub fn stream(&self, stream_id: u32) -> Option<&Stream> {
        self.streams.get(&stream_id)
    }

    pub fn topic(&self, stream_id: u32, topic_id: u32) -> Option<&Topic> {
        self.streams.get(&stream_id)?.topics.get(&topic_id)
    }

    /// Every partition group the cluster runs, sorted, with the op that
    /// created its topic (`Topic::created_op`).
    pub fn partitions_created(&self) -> Vec<(Namespace, u64)> {
        let mut out = Vec::new();
        for (stream_id, stream) in &self.streams {
            for (topic_id, topic) in &stream.topics {
                for partition_id in 0..topic.partition_count {
                    let namespace = Namespace::partition(*stream_id, *topic_id, partition_id)
                        .expect("apply admits only ids that fit the namespace");
                    out.push((namespace, topic.created_op));
                }
            }
        }
        out.sort();
        out
    }

    /// Every partition group the cluster runs, sorted: what shards host.
    pub fn partition_namespaces(&self) -> Vec<Namespace> {
        let mut out = Vec::new();
        for (stream_id, stream) in &self.streams {
            for (topic_id, topic) in &stream.topics {
                for partition_id in 0..topic.partition_count {
                    out.push(
                        Namespace::partition(*stream_id, *topic_id, partition_id)
                            .expect("apply admits only ids that fit the namespace"),
                    );
                }
            }
        }
        out.sort();
        out
    }

    /// Check `request` against the state without changing it.
    pub fn validate(&self, request: &MetadataRequest) -> Result<(), MetadataError> {
        match request {
            MetadataRequest::CreateStream { stream_id, name } => {
                let stream_id = *stream_id;
                if stream_id == 0 || stream_id > STREAM_ID_MAX {
                    return Err(MetadataError::StreamIdInvalid { stream_id });
                }
                check_name(name)?;
                if self.streams.contains_key(&stream_id) {
                    return Err(MetadataError::StreamExists { stream_id });
                }
                if self.streams.values().any(|s| s.name == *name) {
                    return Err(MetadataError::StreamNameExists { name: name.clone() });
                }
                if self.streams.len() >= STREAMS_MAX {
                    return Err(MetadataError::StreamsFull);
                }
            }
            MetadataRequest::DeleteStream { stream_id } => {
                if !self.streams.contains_key(stream_id) {
                    return Err(MetadataError::StreamNotFound { stream_id: *stream_id });
                }
            }
            MetadataRequest::CreateTopic { stream_id, topic_id, name, partition_count } => {
                let (stream_id, topic_id) = (*stream_id, *topic_id);
                let stream = self.streams.get(&stream_id).ok_or(MetadataError::StreamNotFound { stream_id })?;
                if topic_id > TOPIC_ID_MAX {
                    return Err(MetadataError::TopicIdInvalid { topic_id });
                }
                check_name(name)?;
                if *partition_count == 0 || *partition_count > PARTITION_COUNT_MAX {
                    return Err(MetadataError::PartitionCountInvalid { partition_count: *partition_count });
                }
                if stream.topics.contains_key(&topic_id) {
                    return Err(MetadataError::TopicExists { stream_id, topic_id });
                }
                if stream.topics.values().any(|t| t.name == *name) {
                    return Err(MetadataError::TopicNameExists { stream_id, name: name.clone() });
                }
                if stream.topics.len() >= TOPICS_PER_STREAM_MAX {
                    return Err(MetadataError::TopicsFull { stream_id });
                }
            }
            MetadataRequest::DeleteTopic { stream_id, topic_id } => {
                let stream_id = *stream_id;
                let stream = self.streams.get(&stream_id).ok_or(MetadataError::StreamNotFound { stream_id })?;
                if !stream.topics.contains_key(topic_id) {
                    return Err(MetadataError::TopicNotFound { stream_id, topic_id: *topic_id });
                }
            }
            MetadataRequest::LookupPartition { stream_id, topic_id, partition_id } => {
                let (stream_id, topic_id, partition_id) = (*stream_id, *topic_id, *partition_id);
                let stream = self.streams.get(&stream_id).ok_or(MetadataError::StreamNotFound { stream_id })?;
                let topic = stream.topics.get(&topic_id).ok_or(MetadataError::TopicNotFound { stream_id, topic_id })?;
                if partition_id >= topic.partition_count {
                    return Err(MetadataError::PartitionNotFound { stream_id, topic_id, partition_id });
                }
            }
        }
        Ok(())
    }

    /// Apply a committed request whose op is unknown (a topic it creates
    /// records creation op 0). A rejected request changes nothing.
    pub fn apply(&mut self, request: &MetadataRequest) -> Result<(), MetadataError> {
        self.apply_at(0, request)
    }

    /// Apply the committed request of op `op`. A rejected request changes nothing.
    pub fn apply_at(&mut self, op: u64, request: &MetadataRequest) -> Result<(), MetadataError> {
        self.validate(request)?;
        match request {
            MetadataRequest::CreateStream { stream_id, name } => {
                let previous = self.streams.insert(*stream_id, Stream { name: name.clone(), topics: BTreeMap::new() });
                assert!(previous.is_none());
            }
            MetadataRequest::DeleteStream { stream_id } => {
                let removed = self.streams.remove(stream_id);
                assert!(removed.is_some());
            }
            MetadataRequest::CreateTopic { stream_id, topic_id, name, partition_count } => {
                let stream = self.streams.get_mut(stream_id).expect("validated");
                let topic = Topic { name: name.clone(), partition_count: *partition_count, created_op: op };
                assert!(stream.topics.insert(*topic_id, topic).is_none());
                assert!(stream.topics.len() <= TOPICS_PER_STREAM_MAX);
            }
            MetadataRequest::DeleteTopic { stream_id, topic_id } => {
                let stream = self.streams.get_mut(stream_id).expect("validated");
                assert!(stream.topics.remove(topic_id).is_some());
            }
            MetadataRequest::LookupPartition { .. } => {}
        }
        debug_assert!(self.streams.len() <= STREAMS_MAX);
        Ok(())
    }

    /// The snapshot bundle: magic, streams and topics in id order, then a
    /// checksum of everything before it. Canonical: equal states give equal bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        put_u32(&mut out, self.streams.len() as u32);
        for (stream_id, stream) in &self.streams {
            put_u32(&mut out, *stream_id);
            put_name(&mut out, &stream.name);
            put_u32(&mut out, stream.topics.len() as u32);
            for (topic_id, topic) in &stream.topics {
                put_u32(&mut out, *topic_id);
                put_name(&mut out, &topic.name);
                put_u32(&mut out, topic.partition_count);
                out.extend_from_slice(&topic.created_op.to_le_bytes());
            }
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Decode and fully validate a snapshot bundle.
    pub fn decode(bytes: &[u8]) -> Result<MetadataState, CodecError> {
        let Some(content_size) = bytes.len().checked_sub(SNAPSHOT_CHECKSUM_SIZE_BYTES) else {
            return Err(CodecError::Truncated { at: bytes.len(), needed: SNAPSHOT_CHECKSUM_SIZE_BYTES - bytes.len() });
        };
        let (content, stored) = bytes.split_at(content_size);
        if checksum(content) != u128::from_le_bytes(stored.try_into().expect("16 bytes")) {
            return Err(CodecError::SnapshotChecksum);
        }
        let mut reader = Reader::new(content);
        let magic = reader.bytes(SNAPSHOT_MAGIC.len())?;
        let with_created_ops = if magic == SNAPSHOT_MAGIC {
            true
        } else if magic == SNAPSHOT_MAGIC_V1 {
            false
        } else {
            return Err(CodecError::SnapshotMagic);
        };
        let mut state = MetadataState::new();
        let stream_count = reader.count(STREAMS_MAX)?;
        let mut previous_stream = None;
        for _ in 0..stream_count {
            let at = reader.at;
            let stream_id = reader.u32()?;
            if previous_stream.is_some_and(|p| p >= stream_id) {
                return Err(CodecError::SnapshotOrder { at });
            }
            previous_stream = Some(stream_id);
            let name = reader.name()?;
            state.apply(&MetadataRequest::CreateStream { stream_id, name })?;
            let topic_count = reader.count(TOPICS_PER_STREAM_MAX)?;
            let mut previous_topic = None;
            for _ in 0..topic_count {
                let at = reader.at;
                let topic_id = reader.u32()?;
                if previous_topic.is_some_and(|p| p >= topic_id) {
                    return Err(CodecError::SnapshotOrder { at });
                }
                previous_topic = Some(topic_id);
                let name = reader.name()?;
                let partition_count = reader.u32()?;
                let created_op = if with_created_ops { reader.u64()? } else { 0 };
                state.apply_at(
                    created_op,
                    &MetadataRequest::CreateTopic { stream_id, topic_id, name, partition_count },
                )?;
            }
        }
        reader.finish()?;
        Ok(state)
    }
}

impl MetadataRequest {
    pub fn operation(&self) -> Operation {
        match self {
            MetadataRequest::CreateStream { .. } => Operation::CreateStream,
            MetadataRequest::DeleteStream { .. } => Operation::DeleteStream,
            MetadataRequest::CreateTopic { .. } => Operation::CreateTopic,
            MetadataRequest::DeleteTopic { .. } => Operation::DeleteTopic,
            MetadataRequest::LookupPartition { .. } => Operation::LookupPartition,
        }
    }

    /// The request body (the header's `operation` says which request it is).
    pub fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            MetadataRequest::CreateStream { stream_id, name } => {
                put_u32(&mut out, *stream_id);
                put_name(&mut out, name);
            }
            MetadataRequest::DeleteStream { stream_id } => put_u32(&mut out, *stream_id),
            MetadataRequest::CreateTopic { stream_id, topic_id, name, partition_count } => {
                put_u32(&mut out, *stream_id);
                put_u32(&mut out, *topic_id);
                put_name(&mut out, name);
                put_u32(&mut out, *partition_count);
            }
            MetadataRequest::DeleteTopic { stream_id, topic_id } => {
                put_u32(&mut out, *stream_id);
                put_u32(&mut out, *topic_id);
            }
            MetadataRequest::LookupPartition { stream_id, topic_id, partition_id } => {
                put_u32(&mut out, *stream_id);
                put_u32(&mut out, *topic_id);
                put_u32(&mut out, *partition_id);
            }
        }
        out
    }

    /// Decode a body. Only the shape is checked here; `apply` checks the meaning.
    pub fn decode_body(operation: Operation, body: &[u8]) -> Result<MetadataRequest, CodecError> {
        let mut reader = Reader::new(body);
        let request = match operation {
            Operation::CreateStream => MetadataRequest::CreateStream { stream_id: reader.u32()?, name: reader.name()? },
            Operation::DeleteStream => MetadataRequest::DeleteStream { stream_id: reader.u32()? },
            Operation::CreateTopic => MetadataRequest::CreateTopic {
                stream_id: reader.u32()?,
                topic_id: reader.u32()?,
                name: reader.name()?,
                partition_count: reader.u32()?,
            },
            Operation::DeleteTopic => {
                MetadataRequest::DeleteTopic { stream_id: reader.u32()?, topic_id: reader.u32()? }
            }
            Operation::LookupPartition => MetadataRequest::LookupPartition {
                stream_id: reader.u32()?,
                topic_id: reader.u32()?,
                partition_id: reader.u32()?,
            },
            Operation::Reserved
            | Operation::Root
            | Operation::Register
            | Operation::Noop
            | Operation::Packed
            | Operation::SendMessages
            | Operation::PollMessages => {
                return Err(CodecError::NotMetadataOperation { operation });
            }
        };
        reader.finish()?;
        Ok(request)
    }
}

/// The reply body of a committed metadata op. A request that does not decode
/// or that `apply` rejects is still a committed op: every replica gives it the
/// same error reply, and the state does not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataReply {
    Ok,
    Rejected(MetadataError),
    /// The body did not decode for its operation (a client bug).
    Malformed,
}

const REPLY_TAG_OK: u8 = 0;
const REPLY_TAG_REJECTED: u8 = 1;
const REPLY_TAG_MALFORMED: u8 = 2;

impl MetadataReply {
    /// `[tag u8]`, and for `Rejected` `[error tag u8][fields, little-endian]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            MetadataReply::Ok => out.push(REPLY_TAG_OK),
            MetadataReply::Malformed => out.push(REPLY_TAG_MALFORMED),
            MetadataReply::Rejected(error) => {
                out.push(REPLY_TAG_REJECTED);
                match error {
                    MetadataError::StreamIdInvalid { stream_id } => {
                        out.push(0);
                        put_u32(&mut out, *stream_id);
                    }
                    MetadataError::StreamExists { stream_id } => {
                        out.push(1);
                        put_u32(&mut out, *stream_id);
                    }
                    MetadataError::StreamNotFound { stream_id } => {
                        out.push(2);
                        put_u32(&mut out, *stream_id);
                    }
                    MetadataError::StreamNameExists { name } => {
                        out.push(3);
                        put_name(&mut out, name);
                    }
                    MetadataError::StreamsFull => out.push(4),
                    MetadataError::TopicIdInvalid { topic_id } => {
                        out.push(5);
                        put_u32(&mut out, *topic_id);
                    }
                    MetadataError::TopicExists { stream_id, topic_id } => {
                        out.push(6);
                        put_u32(&mut out, *stream_id);
                        put_u32(&mut out, *topic_id);
                    }
                    MetadataError::TopicNotFound { stream_id, topic_id } => {
                        out.push(7);
                        put_u32(&mut out, *stream_id);
                        put_u32(&mut out, *topic_id);
                    }
                    MetadataError::TopicNameExists { stream_id, name } => {
                        out.push(8);
                        put_u32(&mut out, *stream_id);
                        put_name(&mut out, name);
                    }
                    MetadataError::TopicsFull { stream_id } => {
                        out.push(9);
                        put_u32(&mut out, *stream_id);
                    }
                    MetadataError::PartitionCountInvalid { partition_count } => {
                        out.push(10);
                        put_u32(&mut out, *partition_count);
                    }
                    MetadataError::NameInvalid { size_bytes } => {
                        out.push(11);
                        out.extend_from_slice(&(*size_bytes as u64).to_le_bytes());
                    }
                    MetadataError::PartitionNotFound { stream_id, topic_id, partition_id } => {
                        out.push(12);
                        put_u32(&mut out, *stream_id);
                        put_u32(&mut out, *topic_id);
                        put_u32(&mut out, *partition_id);
                    }
                }
            }
        }
        out
    }
}

/// Decode a reply body written by `MetadataReply::encode`. Bad bytes from the
/// network are a typed error, never a panic.
pub fn decode_reply(bytes: &[u8]) -> Result<MetadataReply, CodecError> {
    let mut reader = Reader::new(bytes);
    let tag = reader.u8()?;
    let reply = match tag {
        REPLY_TAG_OK => MetadataReply::Ok,
        REPLY_TAG_MALFORMED => MetadataReply::Malformed,
        REPLY_TAG_REJECTED => {
            let error_tag = reader.u8()?;
            let error = match error_tag {
                0 => MetadataError::StreamIdInvalid { stream_id: reader.u32()? },
                1 => MetadataError::StreamExists { stream_id: reader.u32()? },
                2 => MetadataError::StreamNotFound { stream_id: reader.u32()? },
                3 => MetadataError::StreamNameExists { name: reader.name()? },
                4 => MetadataError::StreamsFull,
                5 => MetadataError::TopicIdInvalid { topic_id: reader.u32()? },
                6 => MetadataError::TopicExists { stream_id: reader.u32()?, topic_id: reader.u32()? },
                7 => MetadataError::TopicNotFound { stream_id: reader.u32()?, topic_id: reader.u32()? },
                8 => MetadataError::TopicNameExists { stream_id: reader.u32()?, name: reader.name()? },
                9 => MetadataError::TopicsFull { stream_id: reader.u32()? },
                10 => MetadataError::PartitionCountInvalid { partition_count: reader.u32()? },
                11 => {
                    let size_bytes = reader.u64()?;
                    MetadataError::NameInvalid {
                        size_bytes: usize::try_from(size_bytes).map_err(|_| CodecError::ReplyTag { tag: error_tag })?,
                    }
                }
                12 => MetadataError::PartitionNotFound {
                    stream_id: reader.u32()?,
                    topic_id: reader.u32()?,
                    partition_id: reader.u32()?,
                },
                tag => return Err(CodecError::ReplyTag { tag }),
            };
            MetadataReply::Rejected(error)
        }
        tag => return Err(CodecError::ReplyTag { tag }),
    };
    reader.finish()?;
    Ok(reply)
}

/// Map a snapshot decode error to the replica's error: a short bundle is
/// truncated; anything else (magic, checksum, order, content) means the bundle
/// is not one this version wrote whole, reported as a bad tag (its first byte).
fn snapshot_error(bytes: &[u8], error: CodecError) -> SnapshotError {
    match error {
        CodecError::Truncated { at, .. } => SnapshotError::Truncated { at_byte: at },
        _ => SnapshotError::BadTag { tag: bytes.first().copied().unwrap_or(0) },
    }
}

/// The metadata group's replicated state machine. Deterministic: the reply
/// and the new state depend only on the state and the committed body.
impl StateMachine for MetadataState {
    fn apply(&mut self, op: u64, operation: Operation, body: &[u8], _timestamp: u64) -> Vec<u8> {
        let reply = match MetadataRequest::decode_body(operation, body) {
            Ok(request) => match MetadataState::apply_at(self, op, &request) {
                Ok(()) => MetadataReply::Ok,
                Err(error) => MetadataReply::Rejected(error),
            },
            Err(_) => MetadataReply::Malformed,
        };
        reply.encode()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.encode()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        // Decode fully before replacing anything: a bad snapshot leaves the state.
        *self = MetadataState::decode(snapshot).map_err(|e| snapshot_error(snapshot, e))?;
        Ok(())
    }
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    // Names longer than the bound are rejected by `apply`; the codec still
    // carries up to u16::MAX bytes so that the rejection reaches the client.
    assert!(name.len() <= usize::from(u16::MAX), "name of {} bytes", name.len());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
}

/// A bounds-checked little-endian reader: every short read is a typed error.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], CodecError> {
        let remaining = self.bytes.len() - self.at;
        if remaining < len {
            return Err(CodecError::Truncated { at: self.at, needed: len - remaining });
        }
        let out = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4 bytes")))
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.bytes(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8 bytes")))
    }

    fn count(&mut self, max: usize) -> Result<u32, CodecError> {
        let count = self.u32()?;
        if count as usize > max {
            return Err(CodecError::SnapshotCount { count, max });
        }
        Ok(count)
    }

    fn name(&mut self) -> Result<String, CodecError> {
        let len = u16::from_le_bytes(self.bytes(2)?.try_into().expect("2 bytes"));
        let at = self.at;
        let bytes = self.bytes(usize::from(len))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::NameNotUtf8 { at })
    }

    fn finish(self) -> Result<(), CodecError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            count => Err(CodecError::TrailingBytes { count }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn create_stream(stream_id: u32, name: &str) -> MetadataRequest {
        MetadataRequest::CreateStream { stream_id, name: name.to_string() }
    }

    fn create_topic(stream_id: u32, topic_id: u32, name: &str, partition_count: u32) -> MetadataRequest {
        MetadataRequest::CreateTopic { stream_id, topic_id, name: name.to_string(), partition_count }
    }

    #[test]
    fn create_and_delete_streams_and_topics() {
        let mut state = MetadataState::new();
        state.apply(&create_stream(1, "orders")).unwrap();
        state.apply(&create_topic(1, 7, "eu", 3)).unwrap();
        assert_eq!(state.topic(1, 7).unwrap().partition_count, 3);
        assert_eq!(
            state.partition_namespaces(),
            (0..3).map(|p| Namespace::partition(1, 7, p).unwrap()).collect::<Vec<_>>()
        );
        state.apply(&MetadataRequest::DeleteTopic { stream_id: 1, topic_id: 7 }).unwrap();
        assert_eq!(state.topic(1, 7), None);
        state.apply(&MetadataRequest::DeleteStream { stream_id: 1 }).unwrap();
        assert_eq!(state, MetadataState::new());
    }

    #[test]
    fn every_rejection_is_typed_and_changes_nothing() {
        let mut state = MetadataState::new();
        state.apply(&create_stream(1, "orders")).unwrap();
        state.apply(&create_topic(1, 1, "eu", 2)).unwrap();
        let before = state.clone();
        let cases = [
            (create_stream(0, "x"), MetadataError::StreamIdInvalid { stream_id: 0 }),
            (create_stream(STREAM_ID_MAX + 1, "x"), MetadataError::StreamIdInvalid { stream_id: STREAM_ID_MAX + 1 }),
            (create_stream(1, "other"), MetadataError::StreamExists { stream_id: 1 }),
            (create_stream(2, "orders"), MetadataError::StreamNameExists { name: "orders".into() }),
            (create_stream(2, ""), MetadataError::NameInvalid { size_bytes: 0 }),
            (MetadataRequest::DeleteStream { stream_id: 9 }, MetadataError::StreamNotFound { stream_id: 9 }),
            (create_topic(9, 1, "t", 1), MetadataError::StreamNotFound { stream_id: 9 }),
            (create_topic(1, 1, "t", 1), MetadataError::TopicExists { stream_id: 1, topic_id: 1 }),
            (create_topic(1, 2, "eu", 1), MetadataError::TopicNameExists { stream_id: 1, name: "eu".into() }),
            (create_topic(1, 2, "t", 0), MetadataError::PartitionCountInvalid { partition_count: 0 }),
            (
                create_topic(1, 2, "t", PARTITION_COUNT_MAX + 1),
                MetadataError::PartitionCountInvalid { partition_count: PARTITION_COUNT_MAX + 1 },
            ),
            (create_topic(1, TOPIC_ID_MAX + 1, "t", 1), MetadataError::TopicIdInvalid { topic_id: TOPIC_ID_MAX + 1 }),
            (
                MetadataRequest::DeleteTopic { stream_id: 1, topic_id: 5 },
                MetadataError::TopicNotFound { stream_id: 1, topic_id: 5 },
            ),
        ];
        for (request, error) in cases {
            assert_eq!(state.apply(&request), Err(error), "{request:?}");
            assert_eq!(state, before);
        }
        let long = "x".repeat(NAME_SIZE_MAX_BYTES + 1);
        assert_eq!(
            state.apply(&create_stream(3, &long)),
            Err(MetadataError::NameInvalid { size_bytes: NAME_SIZE_MAX_BYTES + 1 })
        );
    }

    #[test]
    fn a_topic_remembers_the_op_that_created_it_through_a_snapshot() {
        let mut state = MetadataState::new();
        for (op, request) in [(3, create_stream(1, "orders")), (9, create_topic(1, 2, "eu", 2))] {
            let reply = StateMachine::apply(&mut state, op, request.operation(), &request.encode_body(), 0);
            assert_eq!(decode_reply(&reply), Ok(MetadataReply::Ok));
        }
        let eu = |partition| Namespace::partition(1, 2, partition).unwrap();
        assert_eq!(state.topic(1, 2).unwrap().created_op, 9);
        assert_eq!(state.partitions_created(), vec![(eu(0), 9), (eu(1), 9)]);
        let decoded = MetadataState::decode(&state.encode()).unwrap();
        assert_eq!(decoded.partitions_created(), vec![(eu(0), 9), (eu(1), 9)], "the snapshot carries it");
    }

    #[test]
    fn a_version_1_snapshot_reads_with_unknown_creation_ops() {
        // Written by hand as version 1 wrote it: no creation op after the
        // partition count.
        let mut content = SNAPSHOT_MAGIC_V1.to_vec();
        put_u32(&mut content, 1);
        put_u32(&mut content, 1);
        put_name(&mut content, "orders");
        put_u32(&mut content, 1);
        put_u32(&mut content, 2);
        put_name(&mut content, "eu");
        put_u32(&mut content, 3);
        let sum = checksum(&content);
        content.extend_from_slice(&sum.to_le_bytes());
        let state = MetadataState::decode(&content).unwrap();
        assert_eq!(state.topic(1, 2), Some(&Topic { name: "eu".into(), partition_count: 3, created_op: 0 }));
        assert_eq!(&state.encode()[..8], SNAPSHOT_MAGIC.as_slice(), "written back as version 2");
    }

    #[test]
    fn snapshot_detects_corruption_and_bad_magic() {
        let mut state = MetadataState::new();
        state.apply(&create_stream(4, "s")).unwrap();
        let mut bytes = state.encode();
        bytes[10] ^= 1;
        assert_eq!(MetadataState::decode(&bytes), Err(CodecError::SnapshotChecksum));
        assert!(matches!(MetadataState::decode(&[1, 2, 3]), Err(CodecError::Truncated { .. })));
        let mut content = b"notshoal".to_vec();
        content.extend_from_slice(&0u32.to_le_bytes());
        let sum = checksum(&content);
        content.extend_from_slice(&sum.to_le_bytes());
        assert_eq!(MetadataState::decode(&content), Err(CodecError::SnapshotMagic));
    }

    #[test]
    fn body_decode_rejects_partition_operations_and_trailing_bytes() {
        assert_eq!(
            MetadataRequest::decode_body(Operation::SendMessages, &[]),
            Err(CodecError::NotMetadataOperation { operation: Operation::SendMessages })
        );
        let mut body = MetadataRequest::DeleteStream { stream_id: 3 }.encode_body();
        body.push(0);
        assert_eq!(
            MetadataRequest::decode_body(Operation::DeleteStream, &body),
            Err(CodecError::TrailingBytes { count: 1 })
        );
        assert_eq!(
            MetadataRequest::decode_body(Operation::CreateStream, &[1, 0, 0]),
            Err(CodecError::Truncated { at: 0, needed: 1 })
        );
    }

    fn apply_sm(state: &mut MetadataState, request: &MetadataRequest) -> MetadataReply {
        let body = request.encode_body();
        let reply = StateMachine::apply(state, 1, request.operation(), &body, 0);
        decode_reply(&reply).expect("replies decode")
    }

    #[test]
    fn state_machine_replies_ok_rejected_and_malformed() {
        let mut state = MetadataState::new();
        assert_eq!(apply_sm(&mut state, &create_stream(1, "orders")), MetadataReply::Ok);
        assert_eq!(
            apply_sm(&mut state, &create_stream(1, "again")),
            MetadataReply::Rejected(MetadataError::StreamExists { stream_id: 1 })
        );
        let before = state.clone();
        let reply = StateMachine::apply(&mut state, 3, Operation::CreateStream, &[1, 2], 0);
        assert_eq!(decode_reply(&reply), Ok(MetadataReply::Malformed));
        let reply = StateMachine::apply(&mut state, 4, Operation::SendMessages, b"x", 0);
        assert_eq!(decode_reply(&reply), Ok(MetadataReply::Malformed));
        assert_eq!(state, before);
    }

    #[test]
    fn every_error_reply_round_trips() {
        let errors = [
            MetadataError::StreamIdInvalid { stream_id: 7 },
            MetadataError::StreamExists { stream_id: 1 },
            MetadataError::StreamNotFound { stream_id: 2 },
            MetadataError::StreamNameExists { name: "n".into() },
            MetadataError::StreamsFull,
            MetadataError::TopicIdInvalid { topic_id: 3 },
            MetadataError::TopicExists { stream_id: 1, topic_id: 2 },
            MetadataError::TopicNotFound { stream_id: 3, topic_id: 4 },
            MetadataError::TopicNameExists { stream_id: 5, name: "t".into() },
            MetadataError::TopicsFull { stream_id: 6 },
            MetadataError::PartitionCountInvalid { partition_count: 0 },
            MetadataError::NameInvalid { size_bytes: 300 },
        ];
        let mut tags = Vec::new();
        for error in errors {
            let bytes = MetadataReply::Rejected(error.clone()).encode();
            tags.push(bytes[1]);
            assert_eq!(decode_reply(&bytes), Ok(MetadataReply::Rejected(error)));
        }
        tags.dedup();
        assert_eq!(tags.len(), 12, "every error has its own tag");
        assert_eq!(decode_reply(&[9]), Err(CodecError::ReplyTag { tag: 9 }));
        assert_eq!(decode_reply(&[1, 99]), Err(CodecError::ReplyTag { tag: 99 }));
        assert_eq!(decode_reply(&[0, 0]), Err(CodecError::TrailingBytes { count: 1 }));
        assert!(matches!(decode_reply(&[]), Err(CodecError::Truncated { .. })));
    }

    #[test]
    fn state_machine_restore_rejects_bad_snapshots_and_keeps_state() {
        let mut state = MetadataState::new();
        apply_sm(&mut state, &create_stream(2, "s"));
        let snapshot = StateMachine::snapshot(&state);
        let mut restored = MetadataState::new();
        restored.restore(&snapshot).unwrap();
        assert_eq!(restored, state);
        let mut corrupt = snapshot.clone();
        corrupt[9] ^= 1;
        assert_eq!(restored.restore(&corrupt), Err(SnapshotError::BadTag { tag: b's' }));
        assert_eq!(restored.restore(&[1]), Err(SnapshotError::Truncated { at_byte: 1 }));
        assert_eq!(restored, state, "a failed restore changes nothing");
    }

    fn arb_request() -> impl Strategy<Value = MetadataRequest> {
        let id = 0u32..6;
        let name = "[a-c]{0,3}";
        prop_oneof![
            (id.clone(), name).prop_map(|(stream_id, name)| MetadataRequest::CreateStream { stream_id, name }),
            id.clone().prop_map(|stream_id| MetadataRequest::DeleteStream { stream_id }),
            (id.clone(), id.clone(), name, 0u32..5).prop_map(|(stream_id, topic_id, name, partition_count)| {
                MetadataRequest::CreateTopic { stream_id, topic_id, name, partition_count }
            }),
            (id.clone(), id).prop_map(|(stream_id, topic_id)| MetadataRequest::DeleteTopic { stream_id, topic_id }),
        ]
    }

    proptest! {
        #[test]
        fn request_body_round_trip(request in arb_request()) {
            let body = request.encode_body();
            prop_assert_eq!(MetadataRequest::decode_body(request.operation(), &body), Ok(request));
        }

        #[test]
        fn snapshot_round_trip_after_any_history(requests in prop::collection::vec(arb_request(), 0..40)) {
            let mut state = MetadataState::new();
            for request in &requests {
                let before = state.clone();
                if state.apply(request).is_err() {
                    prop_assert_eq!(&state, &before);
                }
            }
            let bytes = state.encode();
            let decoded = MetadataState::decode(&bytes).unwrap();
            prop_assert_eq!(&decoded, &state);
            prop_assert_eq!(decoded.encode(), bytes);
        }

        #[test]
        fn state_machine_replicas_agree_and_snapshots_round_trip(
            requests in prop::collection::vec(arb_request(), 0..40),
            garbage in prop::collection::vec(any::<u8>(), 0..12),
        ) {
            let mut a = MetadataState::new();
            let mut b = MetadataState::new();
            for (op, request) in requests.iter().enumerate() {
                let body = request.encode_body();
                let reply_a = StateMachine::apply(&mut a, op as u64, request.operation(), &body, 0);
                let reply_b = StateMachine::apply(&mut b, op as u64, request.operation(), &body, 0);
                prop_assert_eq!(&reply_a, &reply_b);
                // A well-formed body is applied or rejected, never malformed.
                let reply = decode_reply(&reply_a).expect("replies decode");
                prop_assert_ne!(reply, MetadataReply::Malformed);
                // A garbage body for the same operation is a committed error, never a panic.
                let reply_a = StateMachine::apply(&mut a, op as u64, request.operation(), &garbage, 0);
                let reply_b = StateMachine::apply(&mut b, op as u64, request.operation(), &garbage, 0);
                prop_assert_eq!(&reply_a, &reply_b);
                prop_assert!(decode_reply(&reply_a).is_ok());
            }
            let snapshot = StateMachine::snapshot(&a);
            prop_assert_eq!(&snapshot, &StateMachine::snapshot(&b));
            let mut restored = MetadataState::new();
            restored.restore(&snapshot).unwrap();
            prop_assert_eq!(&restored, &a);
            prop_assert_eq!(StateMachine::snapshot(&restored), snapshot);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), op in prop::sample::select(Operation::ALL)) {
            let _ = MetadataState::decode(&bytes);
            let _ = MetadataRequest::decode_body(op, &bytes);
        }
    }
}
