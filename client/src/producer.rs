//! `Producer`: batching in front of `Client`, as a Kafka producer does.
//!
//! Messages sent to a partition wait in that partition's batch until the
//! batch is full (`batch_messages_max` messages or `batch_size_max_bytes`
//! encoded bytes) or its first message has waited `linger`; then the batch
//! goes out as one `append_batch` (one op, one fsync on each replica, one
//! reply for all of it). A batch is exactly once as a whole.
//!
//! The policy (`Batcher`) is pure and takes the time as an argument, so it is
//! tested without a clock or a server; `Producer` adds the clock and the
//! client. The client has one request in flight per partition (the session
//! rules), so a batch is sent, and waited for, when it is due: a caller that
//! sends steadily gets batches of `linger`'s worth of messages.
//!
//! Messages of one partition are sent in the order given; batches of one
//! partition go out in order, so offsets follow the send order.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_shard::message_batch::{
    BATCH_HEADER_SIZE_BYTES, BATCH_MESSAGE_OVERHEAD_BYTES, BATCH_MESSAGES_MAX, BATCH_SIZE_MAX_BYTES, BatchError,
    BatchReply,
};
use shoal_shard::namespace::Namespace;
use shoal_vsr::header::HEADER_SIZE_BYTES;

use crate::client::{Client, ClientError};

/// Default: messages per batch (Kafka's batch.size is in bytes; this and
/// the byte bound both apply).
pub const BATCH_MESSAGES_DEFAULT: usize = 1_000;
/// Default: encoded bytes per batch, the largest request.
pub const BATCH_SIZE_DEFAULT_BYTES: usize = BATCH_SIZE_MAX_BYTES;
/// Default: how long the first message of a batch waits for company.
pub const LINGER_DEFAULT: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// A batch goes out once it holds this many messages (1..=`BATCH_MESSAGES_MAX`).
    pub batch_messages_max: usize,
    /// ...or once one more message would take it past this many encoded
    /// bytes (at most one request's body).
    pub batch_size_max_bytes: usize,
    /// ...or once its first message has waited this long. Zero: every
    /// `send` goes out at once (one message per request).
    pub linger: Duration,
}

impl Default for BatchConfig {
    fn default() -> BatchConfig {
        BatchConfig {
            batch_messages_max: BATCH_MESSAGES_DEFAULT,
            batch_size_max_bytes: BATCH_SIZE_DEFAULT_BYTES,
            linger: LINGER_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchConfigError {
    #[error("batch_messages_max is {given}: set it within 1..={BATCH_MESSAGES_MAX}")]
    MessagesMax { given: usize },
    #[error("batch_size_max_bytes is {given}: set it within {min}..={max} (one request's body)")]
    SizeMax { given: usize, min: usize, max: usize },
}

impl BatchConfig {
    /// Check the settings against the batch codec's bounds and the client's
    /// largest request (`message_size_max_bytes`).
    pub fn validate(&self, message_size_max_bytes: u32) -> Result<(), BatchConfigError> {
        if self.batch_messages_max == 0 || self.batch_messages_max > BATCH_MESSAGES_MAX {
            return Err(BatchConfigError::MessagesMax { given: self.batch_messages_max });
        }
        let max = BATCH_SIZE_MAX_BYTES.min((message_size_max_bytes as usize).saturating_sub(HEADER_SIZE_BYTES));
        let min = BATCH_HEADER_SIZE_BYTES + BATCH_MESSAGE_OVERHEAD_BYTES;
        if self.batch_size_max_bytes < min || self.batch_size_max_bytes > max {
            return Err(BatchConfigError::SizeMax { given: self.batch_size_max_bytes, min, max });
        }
        Ok(())
    }
}

/// One partition's batch being filled.
#[derive(Debug)]
struct Pending {
    messages: Vec<Vec<u8>>,
    size_bytes: usize,
    /// When its first message arrived (the caller's clock).
    opened_at: Duration,
}

/// The batching policy, without a clock or a client: per partition, a batch
/// being filled, and which batches are due.
#[derive(Debug)]
pub struct Batcher {
    config: BatchConfig,
    pending: BTreeMap<Namespace, Pending>,
}

impl Batcher {
    pub fn new(config: BatchConfig) -> Batcher {
        assert!(config.batch_messages_max > 0, "validated: a batch holds a message");
        Batcher { config, pending: BTreeMap::new() }
    }

    /// Add `message` for `partition` at time `now`. Returns the batches that
    /// must go out first or now, in order: the partition's current batch if
    /// this message does not fit it, then the new one if it is full.
    pub fn push(&mut self, partition: Namespace, message: Vec<u8>, now: Duration) -> Vec<(Namespace, Vec<Vec<u8>>)> {
        let size_bytes = BATCH_MESSAGE_OVERHEAD_BYTES + message.len();
        let mut out = Vec::new();
        if let Some(pending) = self.pending.get(&partition)
            && pending.size_bytes + size_bytes > self.config.batch_size_max_bytes
        {
            out.extend(self.take(partition));
        }
        let pending = self.pending.entry(partition).or_insert_with(|| Pending {
            messages: Vec::new(),
            size_bytes: BATCH_HEADER_SIZE_BYTES,
            opened_at: now,
        });
        pending.messages.push(message);
        pending.size_bytes += size_bytes;
        let full = pending.messages.len() >= self.config.batch_messages_max
            || pending.size_bytes >= self.config.batch_size_max_bytes
            || self.config.linger.is_zero();
        if full {
            out.extend(self.take(partition));
        }
        debug_assert!(self.pending.values().all(|p| p.messages.len() < self.config.batch_messages_max));
        out
    }

    /// The batches whose first message has waited `linger` by `now`.
    pub fn due(&mut self, now: Duration) -> Vec<(Namespace, Vec<Vec<u8>>)> {
        let linger = self.config.linger;
        let due: Vec<Namespace> =
            self.pending.iter().filter(|(_, p)| now.saturating_sub(p.opened_at) >= linger).map(|(n, _)| *n).collect();
        due.into_iter().filter_map(|partition| self.take(partition)).collect()
    }

    /// Every batch, due or not (a flush).
    pub fn drain(&mut self) -> Vec<(Namespace, Vec<Vec<u8>>)> {
        std::mem::take(&mut self.pending).into_iter().map(|(n, p)| (n, p.messages)).collect()
    }

    /// How long until the next batch is due (`None`: nothing waits).
    pub fn next_due_in(&self, now: Duration) -> Option<Duration> {
        let opened = self.pending.values().map(|p| p.opened_at).min()?;
        Some((opened + self.config.linger).saturating_sub(now))
    }

    /// Messages waiting, over all partitions.
    pub fn waiting(&self) -> usize {
        self.pending.values().map(|p| p.messages.len()).sum()
    }

    fn take(&mut self, partition: Namespace) -> Option<(Namespace, Vec<Vec<u8>>)> {
        let pending = self.pending.remove(&partition)?;
        assert!(!pending.messages.is_empty(), "a pending batch holds a message");
        Some((partition, pending.messages))
    }
}

/// A batch the cluster acknowledged: its messages are at `reply.offsets()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: Namespace,
    pub reply: BatchReply,
}

/// `Client` with batching. See the module doc.
#[derive(Debug)]
pub struct Producer {
    client: Client,
    batcher: Batcher,
    #[allow(clippy::disallowed_types)] // the producer is the real world: linger is wall-clock time
    started: std::time::Instant,
}

impl Producer {
    pub fn new(client: Client, config: BatchConfig, message_size_max_bytes: u32) -> Result<Producer, ClientError> {
        config.validate(message_size_max_bytes)?;
        #[allow(clippy::disallowed_methods, clippy::disallowed_types)] // see `started`
        let started = std::time::Instant::now();
        Ok(Producer { client, batcher: Batcher::new(config), started })
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Queue `message` for `partition`; sends the batches that became due
    /// (full, or lingered long enough) and returns what they delivered. On
    /// an error, the batch that failed is not resent (its outcome is the
    /// error's: unknown after a timeout or an eviction).
    pub fn send(&mut self, partition: Namespace, message: &[u8]) -> Result<Vec<Delivered>, ClientError> {
        if BATCH_HEADER_SIZE_BYTES + BATCH_MESSAGE_OVERHEAD_BYTES + message.len() > BATCH_SIZE_MAX_BYTES {
            return Err(ClientError::Batch(BatchError::MessageTooLarge { index: 0, size_bytes: message.len() }));
        }
        let now = self.now();
        let mut ready = self.batcher.push(partition, message.to_vec(), now);
        ready.extend(self.batcher.due(now));
        self.deliver(ready)
    }

    /// Send the batches whose linger has passed.
    pub fn poll(&mut self) -> Result<Vec<Delivered>, ClientError> {
        let ready = self.batcher.due(self.now());
        self.deliver(ready)
    }

    /// Send every waiting batch now.
    pub fn flush(&mut self) -> Result<Vec<Delivered>, ClientError> {
        let ready = self.batcher.drain();
        self.deliver(ready)
    }

    /// How long until `poll` has a batch to send.
    pub fn next_due_in(&self) -> Option<Duration> {
        self.batcher.next_due_in(self.now())
    }

    pub fn waiting(&self) -> usize {
        self.batcher.waiting()
    }

    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    fn deliver(&mut self, ready: Vec<(Namespace, Vec<Vec<u8>>)>) -> Result<Vec<Delivered>, ClientError> {
        let mut delivered = Vec::with_capacity(ready.len());
        for (partition, messages) in ready {
            let reply = self.client.append_batch(partition, &messages)?;
            delivered.push(Delivered { partition, reply });
        }
        Ok(delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(id: u32) -> Namespace {
        Namespace::partition(1, 1, id).unwrap()
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn config(messages: usize, bytes: usize, linger_ms: u64) -> BatchConfig {
        BatchConfig { batch_messages_max: messages, batch_size_max_bytes: bytes, linger: ms(linger_ms) }
    }

    #[test]
    fn a_batch_goes_out_when_it_holds_batch_messages_max() {
        let mut batcher = Batcher::new(config(3, 1 << 20, 100));
        assert!(batcher.push(partition(0), b"a".to_vec(), ms(0)).is_empty());
        assert!(batcher.push(partition(0), b"b".to_vec(), ms(1)).is_empty());
        let out = batcher.push(partition(0), b"c".to_vec(), ms(2));
        assert_eq!(out, vec![(partition(0), vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()])]);
        assert_eq!(batcher.waiting(), 0);
    }

    #[test]
    fn a_message_that_does_not_fit_sends_the_batch_before_it() {
        // 4 (count) + 2 * (4 + 4) = 20 bytes: a third 4-byte message does not fit.
        let mut batcher = Batcher::new(config(100, 21, 100));
        batcher.push(partition(0), b"1111".to_vec(), ms(0));
        batcher.push(partition(0), b"2222".to_vec(), ms(0));
        let out = batcher.push(partition(0), b"3333".to_vec(), ms(0));
        assert_eq!(out, vec![(partition(0), vec![b"1111".to_vec(), b"2222".to_vec()])]);
        assert_eq!(batcher.waiting(), 1, "the third message opens the next batch");
    }

    #[test]
    fn linger_is_counted_from_the_first_message_per_partition() {
        let mut batcher = Batcher::new(config(100, 1 << 20, 10));
        batcher.push(partition(0), b"a".to_vec(), ms(0));
        batcher.push(partition(1), b"b".to_vec(), ms(6));
        assert_eq!(batcher.next_due_in(ms(6)), Some(ms(4)));
        assert!(batcher.due(ms(9)).is_empty());
        assert_eq!(batcher.due(ms(10)), vec![(partition(0), vec![b"a".to_vec()])]);
        assert_eq!(batcher.due(ms(16)), vec![(partition(1), vec![b"b".to_vec()])]);
        assert_eq!(batcher.next_due_in(ms(16)), None);
    }

    #[test]
    fn zero_linger_sends_every_message_alone() {
        let mut batcher = Batcher::new(config(100, 1 << 20, 0));
        assert_eq!(batcher.push(partition(0), b"a".to_vec(), ms(0)), vec![(partition(0), vec![b"a".to_vec()])]);
    }

    #[test]
    fn drain_takes_everything_in_partition_order() {
        let mut batcher = Batcher::new(config(100, 1 << 20, 100));
        batcher.push(partition(2), b"x".to_vec(), ms(0));
        batcher.push(partition(1), b"y".to_vec(), ms(0));
        let partitions: Vec<Namespace> = batcher.drain().into_iter().map(|(p, _)| p).collect();
        assert_eq!(partitions, vec![partition(1), partition(2)]);
        assert_eq!(batcher.waiting(), 0);
    }

    #[test]
    fn settings_outside_the_codec_bounds_are_refused() {
        assert!(BatchConfig::default().validate(shoal_vsr::header::MESSAGE_SIZE_MAX_BYTES).is_ok());
        assert!(matches!(config(0, 100, 1).validate(1 << 20), Err(BatchConfigError::MessagesMax { given: 0 })));
        let too_many = BATCH_MESSAGES_MAX + 1;
        assert!(matches!(config(too_many, 100, 1).validate(1 << 20), Err(BatchConfigError::MessagesMax { .. })));
        assert!(matches!(config(10, 4096, 1).validate(4096), Err(BatchConfigError::SizeMax { max: 3840, .. })));
    }
}
