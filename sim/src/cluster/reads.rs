//! Reads through the node's read path (`Command::Read`): clients ask random
//! replicas for acknowledged offsets over the simulated network, the node
//! answers from its partition log outside consensus (the code the server
//! runs), and every answer is checked against what clients were told.
//!
//! Checked at every `ReadReply` a client receives:
//! - a message served at an acknowledged offset is the acknowledged one;
//! - an answer starts at the offset asked, and claims no offset at or past
//!   the committed end it names;
//! - every replica hosts every simulated partition, so "no such partition",
//!   "malformed" and "message too large" (simulated messages are small) are
//!   failures; "beyond the committed end" and "unavailable" are the
//!   legitimate answers of a replica that lags, restarted or was wiped.
//!
//! Draws come from a stream of their own (seeded from the run's seed), so
//! the reads add to a seed's schedule without reshuffling the fault draws.

use std::collections::BTreeMap;

use shoal_shard::read::{ReadAnswer, ReadRequest};

use super::*;

/// One in this many client ticks sends a read (when the client has none in
/// flight and its group has acknowledged appends).
const READ_EVERY_TICKS: u64 = 3;
/// Messages one simulated read asks for at most.
const READ_COUNT_MAX: u64 = 8;
/// A read unanswered this long is given up (lost on the network, or its
/// replica crashed); its answer, if it still comes, is checked all the same.
const READ_TIMEOUT_TICKS: u64 = CLIENT_RETRY_TICKS;
/// Salt for the reads' own random stream.
const READS_SEED_SALT: u64 = 0x5245_4144_5321;

#[derive(Debug, Clone, Copy)]
struct Probe {
    read_id: u64,
    offset: u64,
    sent_tick: u64,
}

/// The clients' reads and what their answers were checked against.
#[derive(Debug)]
pub(super) struct Reads {
    rng: ChaCha8Rng,
    next_read_id: u64,
    /// By client index: the read it waits for.
    in_flight: BTreeMap<u32, Probe>,
    /// By group: first offset of each acknowledged batch -> its index in
    /// the group's acks (built as acks arrive; acks are not in offset order).
    acked_batches: Vec<BTreeMap<u64, usize>>,
    /// By group: how many of its acks are in `acked_batches`.
    acks_indexed: Vec<usize>,
    /// Answers that carried messages, and messages checked against acks.
    pub(super) answers_with_messages: u64,
    pub(super) messages_checked: u64,
}

impl Reads {
    pub(super) fn new(seed: u64, group_count: usize) -> Reads {
        Reads {
            rng: ChaCha8Rng::seed_from_u64(seed ^ READS_SEED_SALT),
            next_read_id: 0,
            in_flight: BTreeMap::new(),
            acked_batches: vec![BTreeMap::new(); group_count],
            acks_indexed: vec![0; group_count],
            answers_with_messages: 0,
            messages_checked: 0,
        }
    }
}

impl Cluster {
    /// Maybe send client `index` a read of an acknowledged offset of its
    /// group to a random replica.
    pub(super) fn maybe_read(&mut self, index: u32) {
        let client = &self.clients[index as usize];
        let (group, id, ticks) = (client.group, client.id, client.ticks);
        let namespace = self.namespaces[group];
        let acks = self.checkers[group].acks();
        if namespace == METADATA_NAMESPACE || acks.is_empty() {
            return;
        }
        if self.reads.in_flight.get(&index).is_some_and(|p| ticks - p.sent_tick < READ_TIMEOUT_TICKS) {
            return;
        }
        let draw = self.reads.rng.next_u64();
        if !draw.is_multiple_of(READ_EVERY_TICKS) {
            return;
        }
        let ack = &acks[(self.reads.rng.next_u64() % acks.len() as u64) as usize];
        let offset = ack.offset + self.reads.rng.next_u64() % ack.messages.len() as u64;
        let count_max = 1 + self.reads.rng.next_u64() % READ_COUNT_MAX;
        let replica = (self.reads.rng.next_u64() % u64::from(self.config.replica_count)) as u8;
        self.reads.next_read_id += 1;
        let read_id = self.reads.next_read_id;
        let request = ReadRequest::new(offset, count_max as u32, MESSAGE_SIZE_MAX_BYTES).expect("within bounds");
        let message = request.message(CLUSTER_ID, id, namespace, read_id);
        self.reads.in_flight.insert(index, Probe { read_id, offset, sent_tick: ticks });
        self.record(None, "read", offset, u64::from(replica), String::new);
        self.send(Endpoint::Client(index), Endpoint::Replica(replica), message);
    }

    /// A `ReadReply` reached client `index`: check it (see the module doc).
    pub(super) fn on_read_reply(&mut self, index: u32, message: &Message) {
        let group = self.clients[index as usize].group;
        let header = message.header;
        let replica = header.replica;
        let label = self.group_label(group);
        let answer = match ReadAnswer::decode(&header, &message.body) {
            Ok(answer) => answer,
            Err(error) => {
                let detail = format!("replica {replica}{label}: a read answer does not decode: {error}");
                return self.checkers[group].fail(Checker::Linearizability, detail);
            }
        };
        let asked = self.reads.in_flight.get(&index).filter(|p| p.read_id == header.request).map(|p| p.offset);
        if asked.is_some() {
            self.reads.in_flight.remove(&index);
        }
        self.record(Some(replica), "read_answer", header.context, header.op, String::new);
        let (first_offset, messages) = match answer {
            ReadAnswer::Messages { first_offset, messages, .. } => (first_offset, messages),
            ReadAnswer::OffsetBeyondEnd { .. } | ReadAnswer::Unavailable { .. } => return,
            other => {
                let detail = format!("replica {replica}{label}: read {} answered {other:?}", header.request);
                return self.checkers[group].fail(Checker::Linearizability, detail);
            }
        };
        if let Some(offset) = asked.filter(|offset| *offset != first_offset) {
            let detail = format!("replica {replica}{label}: a read of offset {offset} answered from {first_offset}");
            return self.checkers[group].fail(Checker::Linearizability, detail);
        }
        self.reads.answers_with_messages += 1;
        self.index_acks(group);
        for (position, message) in messages.iter().enumerate() {
            let offset = first_offset + position as u64;
            let Some(acked) = self.acked_message(group, offset) else { continue };
            if acked == message.as_slice() {
                self.reads.messages_checked += 1;
            } else {
                let detail = format!(
                    "replica {replica}{label}: a read of acknowledged offset {offset} returned another message \
                     ({:?}, acknowledged {:?})",
                    String::from_utf8_lossy(message),
                    String::from_utf8_lossy(acked)
                );
                return self.checkers[group].fail(Checker::Linearizability, detail);
            }
        }
    }

    /// Bring the group's batch index up to its acks.
    fn index_acks(&mut self, group: usize) {
        let acks = self.checkers[group].acks();
        let (index, indexed) = (&mut self.reads.acked_batches[group], &mut self.reads.acks_indexed[group]);
        for (position, ack) in acks.iter().enumerate().skip(*indexed) {
            // Two batches acknowledged at one offset is the exactly-once
            // checker's to report; the first one stays the reference here.
            index.entry(ack.offset).or_insert(position);
        }
        *indexed = acks.len();
    }

    /// The acknowledged message at `offset` of `group`, if any.
    fn acked_message(&self, group: usize, offset: u64) -> Option<&[u8]> {
        let (_, &position) = self.reads.acked_batches[group].range(..=offset).next_back()?;
        let ack = &self.checkers[group].acks()[position];
        ack.messages.get((offset - ack.offset) as usize).map(Vec::as_slice)
    }
}
