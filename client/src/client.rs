//! `Client`: a blocking client of a whole cluster.
//!
//! One `ClientSession` per group it talks to (the metadata group for streams
//! and topics, one per partition it appends to), one lazily opened
//! `Connection` per replica, shared by all groups. Time is counted in ticks of
//! `ClientConfig::tick`: each tick waits for replies on every connection and
//! then lets every session retry.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use shoal_shard::message_batch::{BatchError, BatchReply, encode_batch_shared};
use shoal_shard::namespace::Namespace;
use shoal_shard::read::{READ_MESSAGES_MAX, ReadAnswer, ReadError, ReadRequest};
use shoal_shard::state_machine::{MetadataError, MetadataReply, MetadataRequest, decode_reply};
use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, MESSAGE_SIZE_MAX_BYTES, Operation};
use shoal_vsr::message::Message;

use crate::connection::Connection;
use crate::session::{
    ClientSession, Outcome, PARTITION_MISSING_WAIT_TICKS_DEFAULT, RETRY_TIMEOUT_TICKS_DEFAULT, SessionConfig,
    SessionError,
};

/// How long a read of a socket that `poll(2)` called ready may block: only
/// a spurious wake-up waits it out.
const READY_READ_WAIT: Duration = Duration::from_millis(1);
/// A tick: how long one round of waiting for replies lasts.
pub const TICK_DEFAULT: Duration = Duration::from_millis(10);
/// Ticks a request may take before `Client` gives up waiting (its outcome
/// is then unknown; resending it in the same session is still safe).
pub const REQUEST_TIMEOUT_TICKS_DEFAULT: u64 = 1_000;
/// Ticks to wait before dialing a replica whose connection failed.
pub const RECONNECT_DELAY_TICKS: u64 = 10;

/// Where `Client::new` draws a random client id from.
const ENTROPY_PATH: &str = "/dev/urandom";

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub cluster: u128,
    /// Unique per `Client` instance: the replicas key sessions by it, and a
    /// new `Client` reusing an id would start again at request 0 inside a
    /// session the cluster still holds (its requests would be taken for
    /// old ones and never answered). `0` (the default): `Client::new` draws
    /// a random 128-bit id.
    pub client: u128,
    /// Every replica's client address, by replica index.
    pub addresses: Vec<SocketAddr>,
    pub tick: Duration,
    pub retry_timeout_ticks: u64,
    /// How long a majority must keep saying "no such partition" before a
    /// request fails with `PartitionMissing` (`PARTITION_MISSING_WAIT_TICKS_DEFAULT`).
    pub partition_missing_wait_ticks: u64,
    pub request_timeout_ticks: u64,
    pub message_size_max_bytes: u32,
}

impl ClientConfig {
    /// A client of `cluster` whose replicas' client ports are `addresses`
    /// (by replica index), with a random client id drawn by `Client::new`.
    pub fn new(cluster: u128, addresses: Vec<SocketAddr>) -> ClientConfig {
        ClientConfig {
            cluster,
            client: 0,
            addresses,
            tick: TICK_DEFAULT,
            retry_timeout_ticks: RETRY_TIMEOUT_TICKS_DEFAULT,
            partition_missing_wait_ticks: PARTITION_MISSING_WAIT_TICKS_DEFAULT,
            request_timeout_ticks: REQUEST_TIMEOUT_TICKS_DEFAULT,
            message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES,
        }
    }

    /// Use `client` as the client id instead of a random one. Only for a
    /// caller that guarantees no other `Client` ever used it (see `client`).
    pub fn with_client_id(mut self, client: u128) -> ClientConfig {
        self.client = client;
        self
    }
}

/// A random nonzero 128-bit client id from the OS.
fn random_client_id() -> Result<u128, ClientError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let entropy_error = |source| ClientError::Entropy { path: ENTROPY_PATH, source };
    std::fs::File::open(ENTROPY_PATH).and_then(|mut file| file.read_exact(&mut bytes)).map_err(entropy_error)?;
    // Zero is reserved for replicas' own ops; 2^-128 odds, but never zero.
    Ok(u128::from_le_bytes(bytes).max(1))
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(
        "request {request} to group {namespace:#x} got no reply in {ticks} ticks: its outcome is unknown; \
         the cluster may have no quorum (check that a majority of replicas run)"
    )]
    TimedOut { namespace: u64, request: u64, ticks: u64 },
    #[error(
        "the group {namespace:#x} evicted this client's session while request {request} was in flight: \
         that request may or may not have been applied; the next call registers a new session"
    )]
    Evicted { namespace: u64, request: u64 },
    #[error(
        "partition {namespace:#x} does not exist: the metadata group's committed catalogue has no such partition \
         (request {request} was not applied): create the topic first, or check the stream, topic and partition ids"
    )]
    PartitionMissing { namespace: u64, request: u64 },
    #[error("the metadata group refused the change: {reason}")]
    Rejected { reason: MetadataError },
    #[error("the reply to request {request} is malformed ({detail}): the server and client versions differ")]
    MalformedReply { request: u64, detail: String },
    #[error("the batch cannot be sent: {0}")]
    Batch(#[from] BatchError),
    #[error(
        "the group refused request {request} as not a batch of messages (nothing was appended): \
         the server and client versions differ"
    )]
    BatchRefused { request: u64 },
    #[error("producer settings: {0}")]
    BatchConfig(#[from] crate::producer::BatchConfigError),
    #[error(
        "cannot draw a random client id from {path}: {source}; set ClientConfig::client (with_client_id) to an id \
         no other client uses"
    )]
    Entropy { path: &'static str, source: std::io::Error },
    #[error("read: {0}")]
    Read(#[from] ReadError),
    #[error("replica {replica} is not one of the {replica_count} replicas this client knows: pass an index below it")]
    UnknownReplica { replica: u8, replica_count: usize },
    #[error(
        "read {read_id} of group {namespace:#x} from replica {replica} got no answer in {ticks} ticks: \
         the replica may be down or unreachable (reads are safe to repeat, on it or another replica)"
    )]
    ReadTimedOut { namespace: u64, replica: u8, read_id: u64, ticks: u64 },
    #[error(
        "{in_flight} reads are in flight, the most one client keeps ({READS_IN_FLIGHT_MAX}): \
         take an answer (next_read_answer) before sending another"
    )]
    ReadsInFlightFull { in_flight: usize },
    #[error(
        "a request of {size_bytes} bytes (header included) exceeds message_size_max of {max_bytes} bytes, and \
         the replica would close the connection on it: split the batch, or raise message_size_max on every \
         replica and in the client"
    )]
    RequestTooLarge { size_bytes: usize, max_bytes: u32 },
}

#[derive(Debug)]
struct Link {
    connection: Option<Connection>,
    /// Ticks until the next dial when `connection` is `None`.
    redial_in_ticks: u64,
    /// The largest request the replica accepts, as the hello of its last
    /// connection said (kept across redials).
    replica_message_size_max_bytes: Option<u32>,
}

/// Reads one client keeps in flight at most (`send_read`).
pub const READS_IN_FLIGHT_MAX: usize = 64;

/// A read waiting for its answer.
#[derive(Debug)]
struct ReadInFlight {
    namespace: u64,
    replica: u8,
    read_id: u64,
    message: Message,
    answer: Option<Message>,
    /// Ticks since it was first sent (it times out at the request timeout).
    ticks_waited: u64,
    /// The tick (of `ticks_waited`) at which it is sent (again).
    send_at_tick: Option<u64>,
}

#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    links: Vec<Link>,
    sessions: BTreeMap<u64, ClientSession>,
    /// Outcomes that arrived for one group while the client waited on
    /// another (a partition's reply during the catalogue lookup made for
    /// it): kept until that group's wait takes them. One per session at
    /// most (a session has one request in flight).
    outcomes: BTreeMap<u64, Outcome>,
    /// The id of the last read sent: a reply pairs with its read by it.
    read_id: u64,
    /// In the order they were sent.
    reads: Vec<ReadInFlight>,
}

impl Client {
    /// No connection is opened until the first request needs one.
    pub fn new(mut config: ClientConfig) -> Result<Client, ClientError> {
        if config.client == 0 {
            config.client = random_client_id()?;
        }
        // Validate the shared settings once, through the session rules.
        ClientSession::new(session_config(&config, Namespace::METADATA.raw()))?;
        let links = config
            .addresses
            .iter()
            .map(|_| Link { connection: None, redial_in_ticks: 0, replica_message_size_max_bytes: None })
            .collect();
        Ok(Client {
            config,
            links,
            sessions: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            read_id: 0,
            reads: Vec::new(),
        })
    }

    /// This client's id (drawn at random unless the config named one).
    pub fn id(&self) -> u128 {
        self.config.client
    }

    pub fn create_stream(&mut self, stream_id: u32, name: &str) -> Result<(), ClientError> {
        self.metadata(MetadataRequest::CreateStream { stream_id, name: name.to_string() })
    }

    pub fn create_topic(
        &mut self,
        stream_id: u32,
        topic_id: u32,
        name: &str,
        partition_count: u32,
    ) -> Result<(), ClientError> {
        self.metadata(MetadataRequest::CreateTopic { stream_id, topic_id, name: name.to_string(), partition_count })
    }

    /// Append one message to a partition, exactly once; returns its offset.
    /// (A batch of one: see `append_batch`.)
    pub fn append(&mut self, partition: Namespace, message: &[u8]) -> Result<u64, ClientError> {
        Ok(self.append_batch(partition, &[message])?.first_offset)
    }

    /// Append a batch of messages to a partition in one request, exactly
    /// once for the whole batch (a retry is answered from the session, never
    /// appended again): message `i` lands at `first_offset + i`, and the
    /// reply's `count` is the batch's length. Bounds: `message_batch`.
    pub fn append_batch<M: AsRef<[u8]>>(
        &mut self,
        partition: Namespace,
        messages: &[M],
    ) -> Result<BatchReply, ClientError> {
        let body = encode_batch_shared(messages)?;
        let (request, reply) = self.request_shared(partition.raw(), Operation::SendMessages, body)?;
        let reply = BatchReply::decode(&reply)
            .map_err(|error| ClientError::MalformedReply { request, detail: error.to_string() })?;
        if reply.refused() {
            return Err(ClientError::BatchRefused { request });
        }
        if reply.count as usize != messages.len() {
            let detail = format!("{} offsets for a batch of {}", reply.count, messages.len());
            return Err(ClientError::MalformedReply { request, detail });
        }
        Ok(reply)
    }

    /// Read up to `count_max` committed messages of `partition` from
    /// `offset`, as replica `replica` holds them (no session, no consensus:
    /// any replica answers from its own partition log, and only offsets it
    /// knows committed). The answer is typed: messages (at least one; fewer
    /// than asked when the reply bound or the committed end cuts them), or
    /// why none (no such partition there, the offset is not committed there
    /// yet, the replica lacks it now, one message exceeds this client's
    /// `message_size_max_bytes`). A replica that lags answers
    /// `OffsetBeyondEnd` for what another already committed: ask again, or
    /// ask another.
    pub fn read(
        &mut self,
        partition: Namespace,
        replica: u8,
        offset: u64,
        count_max: u32,
    ) -> Result<ReadAnswer, ClientError> {
        let read_id = self.send_read(partition, replica, offset, count_max)?;
        let (answered, answer) = self.wait_read_answer(Some(read_id))?;
        debug_assert_eq!(answered, read_id);
        Ok(answer)
    }

    /// Start a read (as `read` does) without waiting for its answer, so a
    /// reader can keep several in flight (at most `READS_IN_FLIGHT_MAX`):
    /// one read at a time waits a round trip per reply, and the replica
    /// idles meanwhile. Returns the read's id; `next_read_answer` returns
    /// answers as they come.
    pub fn send_read(
        &mut self,
        partition: Namespace,
        replica: u8,
        offset: u64,
        count_max: u32,
    ) -> Result<u64, ClientError> {
        let replica_count = self.links.len();
        if usize::from(replica) >= replica_count {
            return Err(ClientError::UnknownReplica { replica, replica_count });
        }
        if self.reads.len() >= READS_IN_FLIGHT_MAX {
            return Err(ClientError::ReadsInFlightFull { in_flight: self.reads.len() });
        }
        let request = ReadRequest::new(offset, count_max.min(READ_MESSAGES_MAX), self.config.message_size_max_bytes)?;
        self.read_id += 1;
        let (namespace, read_id) = (partition.raw(), self.read_id);
        let message = request.message(self.config.cluster, self.config.client, namespace, read_id);
        let read =
            ReadInFlight { namespace, replica, read_id, message, answer: None, ticks_waited: 0, send_at_tick: Some(0) };
        self.reads.push(read);
        // Sent now, not at the next wait: the replica starts on it while
        // the caller sends more.
        self.send_due_reads();
        Ok(read_id)
    }

    /// Reads sent with `send_read` and not yet returned.
    pub fn reads_in_flight(&self) -> usize {
        self.reads.len()
    }

    /// Wait for the answer of a read in flight (the earliest sent of those
    /// answered) and return its id and answer. `ReadTimedOut` names a read
    /// that got no answer in the request timeout (it is no longer in flight).
    pub fn next_read_answer(&mut self) -> Result<(u64, ReadAnswer), ClientError> {
        assert!(!self.reads.is_empty(), "next_read_answer with no read in flight");
        self.wait_read_answer(None)
    }

    /// Send every read whose (re)send is due; a read is safe to repeat.
    fn send_due_reads(&mut self) {
        for index in 0..self.reads.len() {
            let read = &self.reads[index];
            if read.answer.is_some() || read.send_at_tick.is_none_or(|at| read.ticks_waited < at) {
                continue;
            }
            let (replica, message) = (read.replica, read.message.clone());
            let next = match self.connection(replica).map(|c| c.send(&message)) {
                Some(Ok(())) => self.config.retry_timeout_ticks,
                Some(Err(error)) => {
                    tracing::debug!(%error, "send failed");
                    self.drop_link(replica);
                    1
                }
                // Not connected (a redial waits): try on the next tick.
                None => 1,
            };
            let read = &mut self.reads[index];
            read.send_at_tick = Some(read.ticks_waited + next);
        }
    }

    /// Wait until read `want` (or, with `None`, any read) is answered, or a
    /// read times out.
    #[allow(clippy::disallowed_methods, clippy::disallowed_types)] // the client is the real world
    fn wait_read_answer(&mut self, want: Option<u64>) -> Result<(u64, ReadAnswer), ClientError> {
        let timeout_ticks = self.config.request_timeout_ticks;
        let mut tick_ends = std::time::Instant::now() + self.config.tick;
        loop {
            let answered = self.reads.iter().position(|r| r.answer.is_some() && want.is_none_or(|id| id == r.read_id));
            if let Some(index) = answered {
                let read = self.reads.remove(index);
                let reply = read.answer.expect("answered");
                return Ok((read.read_id, ReadAnswer::decode(&reply.header, &reply.body)?));
            }
            let timed_out = |r: &ReadInFlight| want.is_none_or(|id| id == r.read_id) && r.ticks_waited >= timeout_ticks;
            if let Some(index) = self.reads.iter().position(timed_out) {
                let read = self.reads.remove(index);
                return Err(ClientError::ReadTimedOut {
                    namespace: read.namespace,
                    replica: read.replica,
                    read_id: read.read_id,
                    ticks: timeout_ticks,
                });
            }
            self.send_due_reads();
            self.flush();
            let left = tick_ends.saturating_duration_since(std::time::Instant::now());
            // Replies for sessions keep flowing while a read waits.
            let _ = self.receive(0, left);
            if self.reads.iter().any(|r| r.answer.is_some() && want.is_none_or(|id| id == r.read_id)) {
                continue;
            }
            if std::time::Instant::now() < tick_ends {
                continue;
            }
            tick_ends = std::time::Instant::now() + self.config.tick;
            for read in &mut self.reads {
                read.ticks_waited += 1;
            }
            self.tick();
        }
    }

    /// Keep `message` if it answers a read in flight (a late answer to an
    /// earlier read, or from another replica, is dropped).
    fn on_read_reply(&mut self, message: Message) {
        let header = &message.header;
        if header.client != self.config.client {
            return;
        }
        let Some(read) = self.reads.iter_mut().find(|r| r.read_id == header.request) else { return };
        if header.namespace == read.namespace && header.replica == read.replica && read.answer.is_none() {
            read.answer = Some(message);
        }
    }

    fn metadata(&mut self, change: MetadataRequest) -> Result<(), ClientError> {
        let (request, body) = self.request(Namespace::METADATA.raw(), change.operation(), &change.encode_body())?;
        match decode_reply(&body) {
            Ok(MetadataReply::Ok) => Ok(()),
            Ok(MetadataReply::Rejected(reason)) => Err(ClientError::Rejected { reason }),
            Ok(MetadataReply::Malformed) => Err(ClientError::MalformedReply { request, detail: "malformed".into() }),
            Err(error) => Err(ClientError::MalformedReply { request, detail: error.to_string() }),
        }
    }

    /// Send one request to a group (registering a session first when there
    /// is none) and wait for its reply.
    pub fn request(
        &mut self,
        namespace: u64,
        operation: Operation,
        body: &[u8],
    ) -> Result<(u64, Rc<[u8]>), ClientError> {
        self.request_shared(namespace, operation, Rc::from(body))
    }

    /// `request` of a body already in a shared buffer (sent as it is).
    pub fn request_shared(
        &mut self,
        namespace: u64,
        operation: Operation,
        body: Rc<[u8]>,
    ) -> Result<(u64, Rc<[u8]>), ClientError> {
        let (size_bytes, max_bytes) = (HEADER_SIZE_BYTES + body.len(), self.message_size_max_bytes());
        if size_bytes > max_bytes as usize {
            return Err(ClientError::RequestTooLarge { size_bytes, max_bytes });
        }
        if !self.session(namespace).registered() {
            self.session(namespace).register()?;
            self.settle(namespace)?;
        }
        let request = self.session(namespace).submit_shared(operation, body)?;
        match self.settle(namespace)? {
            Outcome::Reply { request: replied, body, .. } => {
                debug_assert_eq!(replied, request);
                Ok((request, body))
            }
            Outcome::Registered { .. } | Outcome::Evicted { .. } | Outcome::PartitionMissing { .. } => {
                unreachable!("settle answers a submitted request with its reply or an error")
            }
        }
    }

    /// Wait for the outcome of `namespace`'s request in flight, within the
    /// request timeout. An eviction is an error. A majority saying the
    /// partition is missing is checked against the metadata group's
    /// committed catalogue (`partition_in_catalogue`): absent, the request
    /// ends as `PartitionMissing`; present, those replicas lag behind its
    /// creation and the request keeps waiting.
    fn settle(&mut self, namespace: u64) -> Result<Outcome, ClientError> {
        let mut ticks_left = self.config.request_timeout_ticks;
        loop {
            let (outcome, ticks) = self.wait(namespace, ticks_left)?;
            ticks_left -= ticks;
            match outcome {
                Outcome::Evicted { request } => return Err(ClientError::Evicted { namespace, request }),
                Outcome::PartitionMissing { request } => {
                    if self.partition_in_catalogue(namespace)? {
                        self.session(namespace).keep_waiting_for_partition();
                        continue;
                    }
                    match self.session(namespace).give_up_missing_partition() {
                        Some(ended) => {
                            debug_assert_eq!(ended, request);
                            return Err(ClientError::PartitionMissing { namespace, request });
                        }
                        // Answered while the catalogue was asked (its topic
                        // deleted since): the outcome waits in `outcomes`.
                        None => continue,
                    }
                }
                outcome => return Ok(outcome),
            }
        }
    }

    /// Whether the metadata group's committed catalogue holds partition
    /// `namespace`: a lookup through its log (linearizable: it sees every
    /// topic created before it was sent). A namespace that is no partition
    /// is not in it.
    fn partition_in_catalogue(&mut self, namespace: u64) -> Result<bool, ClientError> {
        let partition = Namespace(namespace);
        let (Some(stream_id), Some(topic_id), Some(partition_id)) =
            (partition.stream_id(), partition.topic_id(), partition.partition_id())
        else {
            return Ok(false);
        };
        let lookup = MetadataRequest::LookupPartition { stream_id, topic_id, partition_id };
        let (request, body) = self.request(Namespace::METADATA.raw(), lookup.operation(), &lookup.encode_body())?;
        match decode_reply(&body) {
            Ok(MetadataReply::Ok) => Ok(true),
            Ok(MetadataReply::Rejected(
                MetadataError::StreamNotFound { .. }
                | MetadataError::TopicNotFound { .. }
                | MetadataError::PartitionNotFound { .. },
            )) => Ok(false),
            Ok(reply) => Err(ClientError::MalformedReply { request, detail: format!("lookup answered {reply:?}") }),
            Err(error) => Err(ClientError::MalformedReply { request, detail: error.to_string() }),
        }
    }

    fn session(&mut self, namespace: u64) -> &mut ClientSession {
        let config = &self.config;
        self.sessions
            .entry(namespace)
            .or_insert_with(|| ClientSession::new(session_config(config, namespace)).expect("validated in Client::new"))
    }

    /// Tick until the group's request in flight has an outcome, at most
    /// `ticks_max` ticks; returns it and the ticks it took. A tick is a span
    /// of wall time, not a round of waiting: replies wake the wait at once,
    /// and a busy connection must not make timeouts pass faster.
    #[allow(clippy::disallowed_methods, clippy::disallowed_types)] // the client is the real world
    fn wait(&mut self, namespace: u64, ticks_max: u64) -> Result<(Outcome, u64), ClientError> {
        // Set aside while this client waited on another group.
        if let Some(outcome) = self.outcomes.remove(&namespace) {
            return Ok((outcome, 0));
        }
        let mut ticks = 0;
        let mut tick_ends = std::time::Instant::now() + self.config.tick;
        while ticks < ticks_max {
            self.flush();
            let left = tick_ends.saturating_duration_since(std::time::Instant::now());
            if let Some(outcome) = self.receive(namespace, left) {
                return Ok((outcome, ticks));
            }
            if std::time::Instant::now() < tick_ends {
                continue;
            }
            // The next tick ends a whole tick from now, not from when this one
            // should have ended: a thread starved of CPU must not replay the
            // ticks it missed in a loop of zero-timeout polls (64 client
            // threads on 2 cores did, and ate the cores the replicas needed).
            ticks += 1;
            tick_ends = std::time::Instant::now() + self.config.tick;
            self.tick();
        }
        let request = self.session(namespace).in_flight().unwrap_or(0);
        Err(ClientError::TimedOut { namespace, request, ticks: self.config.request_timeout_ticks })
    }

    /// One client tick: every session's timers, and the links' redial
    /// countdowns.
    fn tick(&mut self) {
        for session in self.sessions.values_mut() {
            session.tick();
        }
        for link in &mut self.links {
            link.redial_in_ticks = link.redial_in_ticks.saturating_sub(1);
        }
    }

    /// Send what every session asks for, dialing replicas as needed. A
    /// replica that cannot be reached is skipped: the retry broadcast goes
    /// to the others.
    fn flush(&mut self) {
        let sends: Vec<_> = self.sessions.values_mut().flat_map(|s| s.take_sends()).collect();
        for send in sends {
            let Some(connection) = self.connection(send.replica) else { continue };
            if let Err(error) = connection.send(&send.message) {
                tracing::debug!(%error, "send failed");
                self.drop_link(send.replica);
            }
        }
    }

    /// Wait at most `left` on every open connection at once; the outcome
    /// for `namespace` if one arrived (others' replies update their sessions).
    fn receive(&mut self, namespace: u64, left: Duration) -> Option<Outcome> {
        let open = self.links.iter().filter(|l| l.connection.is_some()).count();
        if open == 0 {
            // Nothing to wait on, yet a tick must still take its time, or
            // the request timeout would pass before any server is up.
            #[allow(clippy::disallowed_methods)] // the client is the real world: it blocks its caller
            std::thread::sleep(left);
            return None;
        }
        let ready = self.wait_readable(left);
        // Each ready socket has bytes (or its close) waiting, so this read
        // returns at once; `READY_READ_WAIT` only bounds a spurious wake-up.
        let wait = READY_READ_WAIT;
        let mut found = None;
        for (replica, _) in ready.iter().enumerate().filter(|(_, ready)| **ready) {
            let Some(connection) = self.links[replica].connection.as_mut() else { continue };
            let polled = connection.poll(wait);
            if let Some(limit) = connection.replica_message_size_max_bytes() {
                self.links[replica].replica_message_size_max_bytes = Some(limit);
            }
            let messages = match polled {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::debug!(%error, "connection lost");
                    self.drop_link(replica as u8);
                    continue;
                }
            };
            for message in messages {
                if message.header.command == Command::ReadReply {
                    self.on_read_reply(message);
                    continue;
                }
                let Some(session) = self.sessions.get_mut(&message.header.namespace) else { continue };
                let Some(outcome) = session.on_message(&message) else { continue };
                if message.header.namespace == namespace {
                    found = Some(outcome);
                } else {
                    // Another group's, waited on further up the stack.
                    self.outcomes.insert(message.header.namespace, outcome);
                }
            }
        }
        found
    }

    /// Which links have something to read, waiting at most `left` for the
    /// first of them (one `poll(2)` over all sockets: waiting on each
    /// in turn made every reply wait out the others' timeouts).
    fn wait_readable(&self, left: Duration) -> Vec<bool> {
        let buffered: Vec<bool> =
            self.links.iter().map(|l| l.connection.as_ref().is_some_and(Connection::has_buffered_bytes)).collect();
        let timeout = if buffered.iter().any(|&b| b) { Duration::ZERO } else { left };
        let timeout = poll_timeout(timeout);
        let mut sockets = Vec::with_capacity(self.links.len());
        let mut owners = Vec::with_capacity(self.links.len());
        for (index, link) in self.links.iter().enumerate() {
            if let Some(connection) = &link.connection {
                sockets.push(PollFd::new(connection.socket(), PollFlags::POLLIN));
                owners.push(index);
            }
        }
        let mut ready = buffered;
        // EINTR and other poll failures count as "nothing yet": the caller
        // ticks again, and a broken socket shows on its next read.
        if poll(&mut sockets, timeout).is_ok() {
            for (socket, &index) in sockets.iter().zip(&owners) {
                ready[index] |= socket.revents().is_some_and(|events| !events.is_empty());
            }
        }
        ready
    }

    /// The largest request this client sends: its own setting, or less
    /// where a replica's hello said it accepts less (a request past a
    /// replica's limit closes the connection it arrives on, and was resent
    /// until it timed out; now it is refused here, with what to change).
    fn message_size_max_bytes(&self) -> u32 {
        self.links
            .iter()
            .filter_map(|link| link.replica_message_size_max_bytes)
            .fold(self.config.message_size_max_bytes, u32::min)
    }

    fn connection(&mut self, replica: u8) -> Option<&mut Connection> {
        let config = &self.config;
        let link = self.links.get_mut(usize::from(replica))?;
        if link.connection.is_none() && link.redial_in_ticks == 0 {
            let address = config.addresses[usize::from(replica)];
            let timeout = config.tick.max(Duration::from_millis(100));
            match Connection::connect(
                address,
                replica,
                config.cluster,
                config.client,
                config.message_size_max_bytes,
                timeout,
            ) {
                Ok(connection) => link.connection = Some(connection),
                Err(error) => {
                    tracing::debug!(%error, "dial failed");
                    link.redial_in_ticks = RECONNECT_DELAY_TICKS;
                }
            }
        }
        link.connection.as_mut()
    }

    fn drop_link(&mut self, replica: u8) {
        let link = &mut self.links[usize::from(replica)];
        link.connection = None;
        link.redial_in_ticks = RECONNECT_DELAY_TICKS;
    }
}

/// `poll(2)`'s timeout for a wait of `left`: whole milliseconds, rounded
/// **up**. Rounded down, the last partial millisecond of every tick became
/// a zero timeout, and a waiting thread spun on `poll` until the tick ended
/// (64 waiting client threads spent most of two cores that way).
fn poll_timeout(left: Duration) -> PollTimeout {
    PollTimeout::try_from(left.as_nanos().div_ceil(NANOS_PER_MILLI)).unwrap_or(PollTimeout::MAX)
}

const NANOS_PER_MILLI: u128 = 1_000_000;

fn session_config(config: &ClientConfig, namespace: u64) -> SessionConfig {
    SessionConfig {
        cluster: config.cluster,
        client: config.client,
        namespace,
        replica_count: config.addresses.len().min(usize::from(u8::MAX)) as u8,
        retry_timeout_ticks: config.retry_timeout_ticks,
        partition_missing_wait_ticks: config.partition_missing_wait_ticks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_millisecond_waits_a_whole_one_not_zero() {
        assert_eq!(poll_timeout(Duration::ZERO), PollTimeout::ZERO);
        assert_eq!(poll_timeout(Duration::from_nanos(1)), PollTimeout::from(1u8));
        assert_eq!(poll_timeout(Duration::from_micros(999)), PollTimeout::from(1u8));
        assert_eq!(poll_timeout(Duration::from_micros(10_001)), PollTimeout::from(11u8));
        assert_eq!(poll_timeout(Duration::from_secs(u64::MAX)), PollTimeout::MAX);
    }
}
