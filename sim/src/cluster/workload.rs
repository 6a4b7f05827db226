//! The clients' workload: appends of batches of random sizes to a partition
//! group (and an admin client creating streams and topics in the metadata
//! group), retries, sessions, eviction. What a client was told is handed to
//! the checkers.

use shoal_shard::message_batch::{BatchReply, batch_size_bytes, encode_batch};
use shoal_vsr::journal::SECTOR_SIZE_BYTES;

use super::*;

/// The most messages a simulated client puts in one append. Half the
/// appends are a single message (the one-at-a-time path), the others a
/// batch of 2..=this.
pub const CLIENT_BATCH_MESSAGES_MAX: u64 = 8;

impl Cluster {
    pub(super) fn on_client_tick(&mut self, index: u32) {
        self.schedule(TICK_NS, Event::ClientTick(index));
        let group = self.clients[index as usize].group;
        let id = self.clients[index as usize].id;
        // Reads later in the run, after crashes, state transfers and view
        // changes, must still return what was acknowledged.
        let last_ack = self.checkers[group].acks().iter().rev().find(|a| a.client == id);
        if let Some((offset, messages)) = last_ack.map(|a| (a.offset, a.messages.clone())) {
            self.check_reads(group, offset, &messages);
        }
        self.maybe_read(index);
        let batch_draw = self.rng.next_u64();
        let now_ns = self.now_ns;
        let replica_count = self.config.replica_count;
        let safety = self.phase == Phase::Safety;
        let namespace = self.namespaces[self.clients[index as usize].group];
        let client = &mut self.clients[index as usize];
        client.ticks += 1;
        let mut sends: Vec<(Endpoint, Message)> = Vec::new();
        if let Some(in_flight) = &mut client.in_flight {
            if client.ticks - in_flight.sent_tick >= CLIENT_RETRY_TICKS {
                in_flight.sent_tick = client.ticks;
                let mut message =
                    client_request(client.id, namespace, in_flight.request, &in_flight.payload, in_flight.operation);
                if client.registered {
                    message = in_session(message, client.session);
                }
                for replica in 0..replica_count {
                    sends.push((Endpoint::Replica(replica), message.clone()));
                }
            }
        } else if !client.registered || safety {
            let mut messages = Vec::new();
            let (request, operation, payload) = if !client.registered {
                (0, Operation::Register, Vec::new())
            } else if namespace == METADATA_NAMESPACE {
                client.request += 1;
                let admin = metadata_request(index, client.request);
                (client.request, admin.operation(), admin.encode_body())
            } else {
                client.request += 1;
                messages = if large_append(self.config.large_append_ppm, batch_draw) {
                    vec![large_message(client, batch_draw)]
                } else {
                    batch_messages(client, batch_draw)
                };
                let body = encode_batch(&messages).expect("a simulated batch is within every bound");
                (client.request, Operation::SendMessages, body)
            };
            let mut message = client_request(client.id, namespace, request, &payload, operation);
            if client.registered {
                message = in_session(message, client.session);
            }
            client.in_flight =
                Some(InFlight { request, operation, payload, messages, invoked_ns: now_ns, sent_tick: client.ticks });
            let primary = (client.view_guess % u64::from(replica_count)) as u8;
            sends.push((Endpoint::Replica(primary), message));
        }
        for (to, message) in sends {
            self.send(Endpoint::Client(index), to, message);
        }
    }

    pub(super) fn on_client_message(&mut self, index: u32, message: Message) {
        let header = message.header;
        let now_ns = self.now_ns;
        let group = self.clients[index as usize].group;
        let client = &mut self.clients[index as usize];
        if header.command == Command::Eviction {
            return self.on_eviction(index, group, &header);
        }
        if header.command == Command::ReadReply {
            return self.on_read_reply(index, &message);
        }
        let Some(in_flight) = &client.in_flight else { return };
        if header.command != Command::Reply || header.request != in_flight.request {
            return;
        }
        let registering = !client.registered;
        if registering != (header.operation == Operation::Register) {
            return;
        }
        if !registering && header.context != client.session {
            // A reply to an older session's request of the same number.
            return;
        }
        if registering && header.context <= client.session {
            // A late reply to an earlier register: that session is gone.
            return;
        }
        client.view_guess = client.view_guess.max(header.view);
        let in_flight = client.in_flight.take().expect("checked above");
        if registering {
            client.registered = true;
            client.session = header.context;
            return;
        }
        if self.namespaces[group] == METADATA_NAMESPACE {
            return self.on_metadata_reply(index, group, &message);
        }
        let client = &self.clients[index as usize];
        let reply = BatchReply::decode(&message.body);
        let Some(reply) = reply.ok().filter(|r| r.count as usize == in_flight.messages.len()) else {
            let (id, count) = (client.id, in_flight.messages.len());
            return self.checkers[group].fail(
                Checker::Linearizability,
                format!("client {id} sent a batch of {count} and got the reply {:?}", &message.body[..]),
            );
        };
        let ack = Ack {
            client: client.id,
            request: in_flight.request,
            op: header.op,
            offset: reply.first_offset,
            messages: in_flight.messages,
            invoked_ns: in_flight.invoked_ns,
            acked_ns: now_ns,
        };
        self.record(None, "ack", header.op, reply.first_offset, String::new);
        let (offset, messages) = (ack.offset, ack.messages.clone());
        self.checkers[group].on_ack(ack);
        self.check_reads(group, offset, &messages);
    }

    /// The session is gone: the in-flight request's outcome is unknown (it
    /// may have committed before the eviction). The client never sends it
    /// again under a new session (that could apply it twice); it registers
    /// anew and goes on with new requests. The checker holds the eviction
    /// to having happened: some committed register must have evicted it.
    pub(super) fn on_eviction(&mut self, index: u32, group: usize, header: &Header) {
        let client = &mut self.clients[index as usize];
        // Of the session this client is in: the eviction of an older one (a
        // delayed request of it) ends nothing live.
        let current = client.registered
            && header.context == client.session
            && client.in_flight.as_ref().is_some_and(|f| f.request == header.request);
        // From a view older than one this client already had a reply from:
        // a deposed primary answering from its stale session table (view-churn
        // seed 16672, swarm seed 11155). Only the current view may evict.
        if !current || header.view < client.view_guess {
            return;
        }
        let id = client.id;
        client.in_flight = None;
        client.registered = false;
        client.request = 0;
        client.session_epoch += 1;
        self.record(None, "evicted", index.into(), header.request, String::new);
        self.checkers[group].on_eviction(id);
    }

    /// An admin client's reply: applied, or rejected with a typed error; both
    /// are outcomes the log chose (agreement already compares them across
    /// replicas). What was applied must be in every replica's catalogue at
    /// the end.
    pub(super) fn on_metadata_reply(&mut self, index: u32, group: usize, message: &Message) {
        let header = message.header;
        let request = metadata_request(index, header.request);
        match decode_reply(&message.body) {
            Ok(reply) if matches!(request, MetadataRequest::LookupPartition { .. }) => {
                self.check_lookup(index, group, &request, &reply);
            }
            Ok(MetadataReply::Ok) => self.metadata_applied.push(request),
            Ok(MetadataReply::Rejected(_)) => {}
            Ok(MetadataReply::Malformed) | Err(_) => {
                let detail = format!("admin client {index} got a malformed reply to request {}", header.request);
                self.checkers[group].fail(Checker::AckedWritesDurable, detail);
            }
        }
        self.record(None, "ack", header.op, 0, String::new);
    }

    /// A lookup goes through the log after the admin client's create of its
    /// topic was answered (one request in flight), so it must see that
    /// create: a topic acknowledged as created answers "found" for its
    /// partitions and "no such partition" past its count. (A create whose
    /// outcome the client never learned proves nothing either way.)
    fn check_lookup(&mut self, index: u32, group: usize, lookup: &MetadataRequest, reply: &MetadataReply) {
        let &MetadataRequest::LookupPartition { stream_id, topic_id, partition_id } = lookup else {
            unreachable!("called for lookups only")
        };
        let created = self.metadata_applied.iter().find_map(|applied| match applied {
            MetadataRequest::CreateTopic { stream_id: s, topic_id: t, partition_count, .. }
                if (*s, *t) == (stream_id, topic_id) =>
            {
                Some(*partition_count)
            }
            _ => None,
        });
        let Some(partition_count) = created else { return };
        let found = matches!(reply, MetadataReply::Ok);
        if found != (partition_id < partition_count) {
            let detail = format!(
                "admin client {index}: a lookup of partition {partition_id} of acknowledged topic {stream_id}/{topic_id} \
                 ({partition_count} partitions) answered {reply:?}"
            );
            self.checkers[group].fail(Checker::Linearizability, detail);
        }
    }
}

/// What admin client `client` asks the metadata group for its `request`-th
/// request: a stream, a topic in it, a lookup of one of the topic's
/// partitions (or of one past its count), and so on. Deterministic, so a
/// retry carries the same body.
pub(super) fn metadata_request(client: u32, request: u64) -> MetadataRequest {
    debug_assert!(request > 0, "request 0 is the register");
    let round = (request as u32).div_ceil(METADATA_REQUESTS_PER_ROUND);
    let stream_id = 1 + client * 1_000 + round;
    match request % u64::from(METADATA_REQUESTS_PER_ROUND) {
        1 => MetadataRequest::CreateStream { stream_id, name: format!("stream-{stream_id}") },
        2 => MetadataRequest::CreateTopic {
            stream_id,
            topic_id: 1,
            name: "events".into(),
            partition_count: ADMIN_TOPIC_PARTITIONS,
        },
        _ => MetadataRequest::LookupPartition {
            stream_id,
            topic_id: 1,
            partition_id: round % (ADMIN_TOPIC_PARTITIONS + 1),
        },
    }
}

/// An admin client's round: create a stream, create a topic, look up one
/// of its partitions.
const METADATA_REQUESTS_PER_ROUND: u32 = 3;
/// Partitions of each topic an admin client creates.
const ADMIN_TOPIC_PARTITIONS: u32 = 2;

/// The messages of a client's next append: one, or a batch of 2..=
/// `CLIENT_BATCH_MESSAGES_MAX`, each unique per (client, session epoch,
/// request, index) so the final-log check can tell every entry apart.
fn batch_messages(client: &Client, draw: u64) -> Vec<Vec<u8>> {
    let count = if draw.is_multiple_of(2) { 1 } else { 2 + (draw >> 1) % (CLIENT_BATCH_MESSAGES_MAX - 1) };
    (0..count)
        .map(|index| format!("c{}-s{}-r{}-m{index}", client.id, client.session_epoch, client.request).into_bytes())
        .collect()
}

/// Whether the append drawn `draw` is a large one. Uses bits of the
/// append's own draw that `batch_messages` ignores, so a run without large
/// appends keeps its schedule.
fn large_append(large_append_ppm: u32, draw: u64) -> bool {
    (draw >> 32) % 1_000_000 < u64::from(large_append_ppm)
}

/// One message padded so the append's body takes the sectors of a journal
/// slot but the first, up to the whole slot: the prepare's last sector is
/// the slot's last (`LARGE_APPEND_BODY_BYTES_MIN..=BATCH_BODY_BYTES_MAX`).
/// Unique per (client, session epoch, request) like every simulated message.
fn large_message(client: &Client, draw: u64) -> Vec<u8> {
    let mut message = format!("c{}-s{}-r{}-m0-large", client.id, client.session_epoch, client.request).into_bytes();
    let span = (BATCH_BODY_BYTES_MAX - LARGE_APPEND_BODY_BYTES_MIN + 1) as u64;
    let body_bytes = LARGE_APPEND_BODY_BYTES_MIN + ((draw >> 16) % span) as usize;
    let padding = body_bytes - batch_size_bytes([message.len()]);
    // Filler that differs per message, so a body sector swapped between
    // two slots never reads as the right message.
    message.extend((0..padding).map(|at| (client.request as usize + at) as u8));
    debug_assert_eq!(batch_size_bytes([message.len()]), body_bytes);
    message
}

/// The largest append body a simulated group accepts: its message size
/// limit minus the header.
const BATCH_BODY_BYTES_MAX: usize = MESSAGE_SIZE_MAX_BYTES as usize - HEADER_SIZE_BYTES;
/// The smallest body whose prepare reaches the last sector of its slot.
const LARGE_APPEND_BODY_BYTES_MIN: usize =
    MESSAGE_SIZE_MAX_BYTES as usize - SECTOR_SIZE_BYTES as usize - HEADER_SIZE_BYTES + 1;
const _: () = assert!(LARGE_APPEND_BODY_BYTES_MIN <= BATCH_BODY_BYTES_MAX);

pub(super) fn client_request(
    client: u128,
    namespace: u64,
    request: u64,
    payload: &[u8],
    operation: Operation,
) -> Message {
    let mut header = Header::new(Command::Request, CLUSTER_ID);
    header.namespace = namespace;
    header.client = client;
    header.request = request;
    header.operation = operation;
    Message::new(header, Rc::from(payload))
}

/// A request sent in the session its register opened (`Header::context`).
pub(super) fn in_session(message: Message, session: u64) -> Message {
    let mut header = message.header;
    header.context = session;
    Message::new(header, message.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_vsr::journal::JournalConfig;

    fn client(request: u64) -> Client {
        Client {
            id: 7,
            group: 0,
            registered: true,
            session_epoch: 2,
            session: 3,
            request,
            in_flight: None,
            view_guess: 0,
            ticks: 0,
        }
    }

    #[test]
    fn a_large_append_fills_the_last_sector_of_its_journal_slot_and_stays_within_the_limit() {
        let journal =
            JournalConfig { slot_count: 1, message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES, cluster: 1, namespace: 1 };
        let slot_bytes = journal.slot_size_bytes();
        let mut sizes = std::collections::BTreeSet::new();
        for draw in [0, 1, u64::MAX, 0x1234_5678_9abc_def0, 511 << 16, 512 << 16] {
            let message = large_message(&client(9), draw);
            let body = encode_batch(&[&message]).expect("within every bound");
            let prepare_bytes = (HEADER_SIZE_BYTES + body.len()) as u64;
            assert!(prepare_bytes <= u64::from(MESSAGE_SIZE_MAX_BYTES), "{prepare_bytes} bytes");
            assert_eq!(prepare_bytes.div_ceil(SECTOR_SIZE_BYTES) * SECTOR_SIZE_BYTES, slot_bytes);
            sizes.insert(body.len());
        }
        assert!(sizes.len() > 1, "the size is drawn, not fixed: {sizes:?}");
        assert_ne!(large_message(&client(9), 5), large_message(&client(10), 5), "unique per request");
    }

    #[test]
    fn large_appends_follow_their_rate() {
        assert!(!large_append(0, u64::MAX));
        assert!(large_append(1_000_000, 0));
        let draws = (0..10_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let large = draws.filter(|&draw| large_append(250_000, draw)).count();
        assert!((2_000..3_000).contains(&large), "{large} of 10000 at 25%");
    }
}
