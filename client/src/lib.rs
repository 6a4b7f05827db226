//! shoal-client: the client library of a shoal cluster.
//!
//! Owns the client half of the session protocol (`session`: register,
//! request numbers, retries, reply filtering, eviction — pure, no I/O, so the
//! simulator can run the very same code), one blocking TCP connection to a
//! replica speaking the server's wire format (`connection`), and `Client`,
//! which ties sessions and connections into calls: create a stream or topic,
//! append a message or a batch exactly once, read committed messages; and
//! `Producer`, which batches messages per partition by size and linger time,
//! as a Kafka producer does.
//!
//! Must not decide anything the replicas must agree on: the group decides
//! offsets, sessions and evictions; the client only follows the replies.
//! `Client::read` reads committed messages by offset from a chosen replica,
//! outside sessions and consensus (`shoal_shard::read`).

pub mod client;
pub mod connection;
pub mod producer;
pub mod session;

pub use client::{Client, ClientConfig, ClientError, READS_IN_FLIGHT_MAX};
pub use connection::{Connection, ConnectionError};
pub use producer::{BatchConfig, BatchConfigError, Batcher, Delivered, Producer};
pub use session::{ClientSession, Outcome, SessionConfig, SessionError};
pub use shoal_shard::message_batch::BatchReply;
pub use shoal_shard::read::{READ_MESSAGES_MAX, ReadAnswer, ReadError};
