//! One client session with one VSR group, without I/O.
//!
//! `ClientSession` is the client half of the session protocol: register,
//! number requests, send to the replica it believes is primary (to every
//! replica while no answer has named the view yet), retry to every replica
//! when no reply comes, keep only the reply that answers the request in
//! flight (in this session), follow the view the replies name, and give up the
//! session when the current view evicts it. It is a state machine fed with
//! ticks and messages; what it wants sent waits in `take_sends`, so the same
//! code runs over TCP (`crate::connection`) and inside a simulator.
//!
//! Exactly once: a request keeps its number and its session across retries, so
//! the group applies it at most once and resends the cached reply. After an
//! eviction the outcome of the request in flight is unknown (it may have
//! committed); it is reported as such and never sent again under the new
//! session, where it would get a new number and could apply twice.

use std::rc::Rc;

use shoal_vsr::header::{Command, Header, Operation, Refusal};
use shoal_vsr::message::Message;

/// Ticks a request waits for its reply before it is sent to every replica.
pub const RETRY_TIMEOUT_TICKS_DEFAULT: u64 = 20;
/// Ticks a replica must keep saying "no such partition" (asked again by
/// every retry broadcast meanwhile) before its answer counts toward
/// `PartitionMissing`. A replica that has not applied the topic's creation
/// yet says the same as one where it never happened, so a majority saying
/// it is only a suspicion: the client then asks the metadata group's
/// committed catalogue (`crate::Client`), which decides. This wait only
/// spares that lookup to a request sent right after its topic was created
/// (replicas open new groups within milliseconds). 0.5 s at the default
/// 10 ms tick.
pub const PARTITION_MISSING_WAIT_TICKS_DEFAULT: u64 = 50;
/// The most replicas a group has (VSR clusters here run 1, 3 or 5).
pub const REPLICA_COUNT_MAX: u8 = 5;
/// The longest a request waits after a "busy" refusal before it is sent
/// again; the wait doubles from 1 tick per refusal in a row up to this, and
/// a jitter draws it from its upper half, so refused clients do not return
/// in lockstep.
pub const BUSY_BACKOFF_TICKS_MAX: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    pub cluster: u128,
    /// Nonzero, unique per client process; replicas key sessions by it.
    pub client: u128,
    /// The group this session talks to.
    pub namespace: u64,
    pub replica_count: u8,
    pub retry_timeout_ticks: u64,
    /// See `PARTITION_MISSING_WAIT_TICKS_DEFAULT`; at least one retry
    /// timeout is waited whatever this says.
    pub partition_missing_wait_ticks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("client id 0 is reserved for replicas' own ops: give the client a nonzero id")]
    ClientIdZero,
    #[error("replica count {count} is outside 1..={REPLICA_COUNT_MAX}: pass the cluster's replica count")]
    ReplicaCountOutOfRange { count: u8 },
    #[error("retry timeout of 0 ticks would resend on every tick: use at least 1")]
    RetryTimeoutZero,
    #[error("request {request} is still in flight: wait for its outcome before sending another")]
    RequestInFlight { request: u64 },
    #[error("the session is not registered: call register and wait for Outcome::Registered")]
    NotRegistered,
    #[error("operation {operation:?} is reserved for the protocol: send a user operation")]
    ReservedOperation { operation: Operation },
}

/// What a message meant to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The register committed: requests may follow in `session`.
    Registered { session: u64 },
    /// The request committed as `op`; `body` is the state machine's reply.
    Reply { request: u64, op: u64, operation: Operation, body: Rc<[u8]> },
    /// The group evicted the session (too many clients for its session
    /// table). Request `request` may or may not have committed; the session
    /// must register again before it sends anything.
    Evicted { request: u64 },
    /// A majority of the replicas kept saying, for the partition-missing
    /// wait, that they run no group for this namespace. A suspicion, not a
    /// proof (they may lag behind the topic's creation): the request stays
    /// in flight until the caller either gives it up
    /// (`give_up_missing_partition`: the catalogue has no such partition)
    /// or keeps it (`keep_waiting_for_partition`: the catalogue has it).
    PartitionMissing { request: u64 },
}

/// A message for one replica of the group.
#[derive(Debug, Clone)]
pub struct Send {
    pub replica: u8,
    pub message: Message,
}

#[derive(Debug, Clone)]
struct InFlight {
    message: Message,
    sent_tick: u64,
    attempts: u64,
    /// "Busy" refusals in a row, and the tick the request goes out again
    /// (to the replica that refused it) after the backoff.
    busy_refusals: u32,
    busy_resend: Option<(u64, u8)>,
    /// By replica: the tick it first said it runs no group for the
    /// namespace, and whether it said so again a retry timeout later.
    missing_since: [Option<u64>; REPLICA_COUNT_MAX as usize],
    missing_confirmed: u8,
    /// `Outcome::PartitionMissing` was reported and the caller has not
    /// decided yet: it is not reported twice.
    missing_reported: bool,
}

#[derive(Debug)]
pub struct ClientSession {
    config: SessionConfig,
    /// The op of the register that opened the session; 0 before it.
    session: u64,
    registered: bool,
    /// The last request number used in this session (register uses 0).
    request: u64,
    in_flight: Option<InFlight>,
    /// The newest view a reply came from: its primary is tried first.
    /// Never decreases.
    view_guess: u64,
    /// Some answer of this group named its view (`view_guess` is learned,
    /// not the initial 0). Until then a request goes to every replica: a
    /// backup drops a request silently, so a first guess of view 0 in a
    /// group that had a view change (a new topic's groups often start
    /// with one) cost a whole retry timeout (200 ms by default) before the
    /// broadcast reached the primary.
    view_known: bool,
    now_tick: u64,
    /// At most `replica_count` messages: one request, sent to each replica
    /// at most once per tick.
    sends: Vec<Send>,
}

impl ClientSession {
    pub fn new(config: SessionConfig) -> Result<ClientSession, SessionError> {
        if config.client == 0 {
            return Err(SessionError::ClientIdZero);
        }
        if config.replica_count == 0 || config.replica_count > REPLICA_COUNT_MAX {
            return Err(SessionError::ReplicaCountOutOfRange { count: config.replica_count });
        }
        if config.retry_timeout_ticks == 0 {
            return Err(SessionError::RetryTimeoutZero);
        }
        Ok(ClientSession {
            config,
            session: 0,
            registered: false,
            request: 0,
            in_flight: None,
            view_guess: 0,
            view_known: false,
            now_tick: 0,
            sends: Vec::new(),
        })
    }

    /// How long a replica must keep saying "no such partition".
    fn partition_missing_wait_ticks(&self) -> u64 {
        self.config.partition_missing_wait_ticks.max(self.config.retry_timeout_ticks)
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn registered(&self) -> bool {
        self.registered
    }

    /// The op that registered the current session (0 before a register).
    pub fn session(&self) -> u64 {
        self.session
    }

    pub fn view_guess(&self) -> u64 {
        self.view_guess
    }

    /// The request number in flight, if any (0 is a register).
    pub fn in_flight(&self) -> Option<u64> {
        self.in_flight.as_ref().map(|f| f.message.header.request)
    }

    /// How many times the request in flight was sent (0 when idle).
    pub fn attempts(&self) -> u64 {
        self.in_flight.as_ref().map_or(0, |f| f.attempts)
    }

    /// The replica this session believes is primary.
    pub fn primary_guess(&self) -> u8 {
        (self.view_guess % u64::from(self.config.replica_count)) as u8
    }

    /// Open a session (again, after an eviction). Replies to the register
    /// of an older session are ignored.
    pub fn register(&mut self) -> Result<(), SessionError> {
        self.check_idle()?;
        self.registered = false;
        self.request = 0;
        let message = self.request_message(0, Operation::Register, Rc::from(Vec::new()));
        self.start(message);
        Ok(())
    }

    /// Send one request; returns its number. The reply comes back as
    /// `Outcome::Reply` with that number.
    pub fn submit(&mut self, operation: Operation, body: &[u8]) -> Result<u64, SessionError> {
        self.submit_shared(operation, Rc::from(body))
    }

    /// `submit` of a body already in a shared buffer: the request carries
    /// it as it is (a 1 MiB batch is not copied once more).
    pub fn submit_shared(&mut self, operation: Operation, body: Rc<[u8]>) -> Result<u64, SessionError> {
        self.check_idle()?;
        if !self.registered {
            return Err(SessionError::NotRegistered);
        }
        if operation.is_reserved() {
            return Err(SessionError::ReservedOperation { operation });
        }
        self.request += 1;
        let message = self.request_message(self.request, operation, body);
        self.start(message);
        Ok(self.request)
    }

    /// Advance time by one tick. A request unanswered for the retry timeout
    /// goes to every replica: the primary may have changed, and a backup
    /// forwards nothing, so only the broadcast reaches a new primary the
    /// client does not know yet.
    pub fn tick(&mut self) {
        self.now_tick += 1;
        let now_tick = self.now_tick;
        let Some(in_flight) = self.in_flight.as_mut() else { return };
        if let Some((at_tick, replica)) = in_flight.busy_resend
            && now_tick >= at_tick
        {
            // The backoff passed: the same request (same number) again.
            in_flight.busy_resend = None;
            in_flight.sent_tick = now_tick;
            in_flight.attempts += 1;
            let message = in_flight.message.clone();
            self.sends.push(Send { replica, message });
            return;
        }
        if in_flight.busy_resend.is_some() || now_tick - in_flight.sent_tick < self.config.retry_timeout_ticks {
            return;
        }
        in_flight.sent_tick = now_tick;
        in_flight.attempts += 1;
        let message = in_flight.message.clone();
        self.send_to_every_replica(&message);
    }

    /// Replace what waits to be sent with `message` to every replica: only
    /// the primary answers a request, and this reaches it whoever it is.
    fn send_to_every_replica(&mut self, message: &Message) {
        self.sends.clear();
        for replica in 0..self.config.replica_count {
            self.sends.push(Send { replica, message: message.clone() });
        }
    }

    /// The metadata group's committed catalogue has no such partition: the
    /// request in flight (reported as `Outcome::PartitionMissing`) ends, not
    /// applied anywhere (no replica runs a group for it). Returns its number.
    pub fn give_up_missing_partition(&mut self) -> Option<u64> {
        let in_flight = self.in_flight.take_if(|in_flight| in_flight.missing_reported)?;
        self.sends.clear();
        Some(in_flight.message.header.request)
    }

    /// The catalogue has the partition: the replicas that said otherwise lag
    /// behind its creation. The request stays in flight (the retry
    /// broadcast keeps asking) and their refusals are forgotten, so a
    /// majority must say it the whole wait again before the next report.
    pub fn keep_waiting_for_partition(&mut self) {
        let Some(in_flight) = self.in_flight.as_mut().filter(|in_flight| in_flight.missing_reported) else {
            return;
        };
        in_flight.missing_since = [None; REPLICA_COUNT_MAX as usize];
        in_flight.missing_confirmed = 0;
        in_flight.missing_reported = false;
    }

    /// What the session wants sent now, in order.
    pub fn take_sends(&mut self) -> Vec<Send> {
        debug_assert!(self.sends.len() <= usize::from(self.config.replica_count));
        std::mem::take(&mut self.sends)
    }

    /// A message from a replica. Anything that does not answer the request
    /// in flight (a duplicate, a reply to an earlier session, another group's
    /// or client's message) is ignored and changes nothing.
    pub fn on_message(&mut self, message: &Message) -> Option<Outcome> {
        let header = &message.header;
        if header.cluster != self.config.cluster
            || header.client != self.config.client
            || header.namespace != self.config.namespace
        {
            return None;
        }
        match header.command {
            Command::Reply => self.on_reply(message),
            Command::Eviction => self.on_eviction(header),
            Command::Refused => self.on_refused(header),
            _ => None,
        }
    }

    /// A replica refused the request in flight. Busy: back off (bounded,
    /// jittered) and send the same request to it again. No such group: ask
    /// the replicas that have not said so yet, keep asking (the retry
    /// broadcast), and report `PartitionMissing` once a majority said so
    /// again at least `partition_missing_wait_ticks` after they first did
    /// (a replica may only lag behind the topic's creation): the caller
    /// asks the catalogue and decides.
    fn on_refused(&mut self, header: &Header) -> Option<Outcome> {
        let replica_count = self.config.replica_count;
        let now_tick = self.now_tick;
        let client = self.config.client;
        let missing_wait_ticks = self.partition_missing_wait_ticks();
        let in_flight = self.in_flight.as_mut()?;
        if header.request != in_flight.message.header.request || header.replica >= replica_count {
            return None;
        }
        match Refusal::from_code(header.context)? {
            Refusal::Busy => {
                in_flight.busy_refusals = in_flight.busy_refusals.saturating_add(1);
                let wait = busy_backoff_ticks(client, header.request, in_flight.busy_refusals);
                in_flight.busy_resend = Some((now_tick + wait, header.replica));
                self.sends.clear();
                None
            }
            Refusal::PartitionMissing => {
                let replica = usize::from(header.replica);
                match in_flight.missing_since[replica] {
                    None => {
                        in_flight.missing_since[replica] = Some(now_tick);
                        // Ask the others at once: the one asked may be the
                        // only one that has not opened the group yet.
                        let message = in_flight.message.clone();
                        for other in (0..replica_count).filter(|r| in_flight.missing_since[usize::from(*r)].is_none()) {
                            if !self.sends.iter().any(|send| send.replica == other) {
                                self.sends.push(Send { replica: other, message: message.clone() });
                            }
                        }
                    }
                    // Said again the whole wait later (retry broadcasts
                    // asked again meanwhile): taken as no such partition.
                    // Not a proof: see `PARTITION_MISSING_WAIT_TICKS_DEFAULT`.
                    Some(since) if now_tick - since >= missing_wait_ticks => {
                        in_flight.missing_confirmed |= 1 << header.replica;
                    }
                    Some(_) => {}
                }
                if in_flight.missing_confirmed.count_ones() > u32::from(replica_count / 2)
                    && !in_flight.missing_reported
                {
                    in_flight.missing_reported = true;
                    return Some(Outcome::PartitionMissing { request: header.request });
                }
                None
            }
        }
    }

    fn on_reply(&mut self, message: &Message) -> Option<Outcome> {
        let header = &message.header;
        let in_flight = self.in_flight.as_ref()?;
        if header.request != in_flight.message.header.request {
            return None;
        }
        let registering = !self.registered;
        if registering != (header.operation == Operation::Register) {
            return None;
        }
        // A reply names the session it was applied in: one with the same
        // request number from an earlier session is not ours.
        if !registering && header.context != self.session {
            return None;
        }
        // A late reply to an earlier register: that session was evicted.
        if registering && header.context <= self.session {
            return None;
        }
        self.learn_view(header.view);
        self.in_flight = None;
        self.sends.clear();
        if registering {
            self.registered = true;
            self.session = header.context;
            return Some(Outcome::Registered { session: self.session });
        }
        Some(Outcome::Reply {
            request: header.request,
            op: header.op,
            operation: header.operation,
            body: Rc::from(&message.body[..]),
        })
    }

    fn on_eviction(&mut self, header: &Header) -> Option<Outcome> {
        let request = self.in_flight()?;
        // Only the current view may evict: a deposed primary answers from a
        // session table that may be older than the one this client registered
        // in, and must not end a live session.
        // An eviction names the session whose request it answers: that of an
        // older session (a delayed request of it) ends nothing live.
        if !self.registered
            || request != header.request
            || header.context != self.session
            || header.view < self.view_guess
        {
            return None;
        }
        self.learn_view(header.view);
        self.in_flight = None;
        self.sends.clear();
        self.registered = false;
        self.request = 0;
        Some(Outcome::Evicted { request })
    }

    /// An answer from a replica in `view`: its primary is tried first.
    fn learn_view(&mut self, view: u64) {
        self.view_guess = self.view_guess.max(view);
        self.view_known = true;
    }

    fn check_idle(&self) -> Result<(), SessionError> {
        match self.in_flight() {
            Some(request) => Err(SessionError::RequestInFlight { request }),
            None => Ok(()),
        }
    }

    fn request_message(&self, request: u64, operation: Operation, body: Rc<[u8]>) -> Message {
        let mut header = Header::new(Command::Request, self.config.cluster);
        header.namespace = self.config.namespace;
        header.client = self.config.client;
        header.request = request;
        header.operation = operation;
        // The session a request belongs to; the register opens one and so
        // names none.
        header.context = if operation == Operation::Register { 0 } else { self.session };
        Message::new(header, body)
    }

    fn start(&mut self, message: Message) {
        assert!(self.in_flight.is_none(), "a session has one request in flight");
        if self.view_known {
            self.sends.clear();
            self.sends.push(Send { replica: self.primary_guess(), message: message.clone() });
        } else {
            // No view learned yet: every replica, as the retry broadcast
            // would a retry timeout later.
            self.send_to_every_replica(&message);
        }
        self.in_flight = Some(InFlight {
            message,
            sent_tick: self.now_tick,
            attempts: 1,
            busy_refusals: 0,
            busy_resend: None,
            missing_since: [None; REPLICA_COUNT_MAX as usize],
            missing_confirmed: 0,
            missing_reported: false,
        });
    }
}

/// Ticks to wait after the `refusals`-th "busy" in a row: the upper half of
/// `min(2^(refusals-1), BUSY_BACKOFF_TICKS_MAX)`, drawn from a hash of the
/// client, the request and the count (the session has no entropy of its
/// own, and this keeps it deterministic for the simulator).
pub fn busy_backoff_ticks(client: u128, request: u64, refusals: u32) -> u64 {
    assert!(refusals >= 1);
    let ceiling = 1u64.checked_shl(refusals - 1).unwrap_or(u64::MAX).min(BUSY_BACKOFF_TICKS_MAX);
    let mut bytes = [0u8; 16 + 8 + 4];
    bytes[..16].copy_from_slice(&client.to_le_bytes());
    bytes[16..24].copy_from_slice(&request.to_le_bytes());
    bytes[24..].copy_from_slice(&refusals.to_le_bytes());
    let draw = shoal_vsr::header::checksum(&bytes) as u64;
    let floor = ceiling.div_ceil(2);
    let wait = floor + draw % (ceiling - floor + 1);
    debug_assert!((1..=BUSY_BACKOFF_TICKS_MAX).contains(&wait));
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: u128 = 7;
    const CLIENT: u128 = 0xc1;
    const NAMESPACE: u64 = (1 << 40) | (1 << 20);

    fn session(replica_count: u8) -> ClientSession {
        ClientSession::new(SessionConfig {
            cluster: CLUSTER,
            client: CLIENT,
            namespace: NAMESPACE,
            replica_count,
            retry_timeout_ticks: 3,
            partition_missing_wait_ticks: 3,
        })
        .unwrap()
    }

    /// A reply as a replica in `view` would send it.
    fn reply(view: u64, request: u64, operation: Operation, context: u64, op: u64, body: &[u8]) -> Message {
        let mut header = Header::new(Command::Reply, CLUSTER);
        header.namespace = NAMESPACE;
        header.client = CLIENT;
        header.view = view;
        header.request = request;
        header.operation = operation;
        header.context = context;
        header.op = op;
        Message::new(header, Rc::from(body))
    }

    fn eviction(view: u64, request: u64, session: u64) -> Message {
        let mut header = Header::new(Command::Eviction, CLUSTER);
        header.namespace = NAMESPACE;
        header.client = CLIENT;
        header.view = view;
        header.request = request;
        header.context = session;
        Message::empty(header)
    }

    fn registered(replica_count: u8, view: u64, session_op: u64) -> ClientSession {
        let mut s = session(replica_count);
        s.register().unwrap();
        s.take_sends();
        let outcome = s.on_message(&reply(view, 0, Operation::Register, session_op, session_op, &[]));
        assert_eq!(outcome, Some(Outcome::Registered { session: session_op }));
        s
    }

    #[test]
    fn config_errors_name_the_fix() {
        let base = SessionConfig {
            cluster: CLUSTER,
            client: CLIENT,
            namespace: NAMESPACE,
            replica_count: 3,
            retry_timeout_ticks: 1,
            partition_missing_wait_ticks: 1,
        };
        assert_eq!(ClientSession::new(SessionConfig { client: 0, ..base }).unwrap_err(), SessionError::ClientIdZero);
        assert_eq!(
            ClientSession::new(SessionConfig { replica_count: 6, ..base }).unwrap_err(),
            SessionError::ReplicaCountOutOfRange { count: 6 }
        );
        assert_eq!(
            ClientSession::new(SessionConfig { retry_timeout_ticks: 0, ..base }).unwrap_err(),
            SessionError::RetryTimeoutZero
        );
    }

    #[test]
    fn requests_go_to_the_primary_of_the_newest_view_seen_and_carry_the_session() {
        let mut s = registered(3, 4, 11);
        assert_eq!(s.primary_guess(), 1);
        let request = s.submit(Operation::SendMessages, b"m").unwrap();
        let sends = s.take_sends();
        assert_eq!(sends.len(), 1);
        assert_eq!(sends[0].replica, 1);
        let header = sends[0].message.header;
        assert_eq!((header.request, header.context, header.operation), (request, 11, Operation::SendMessages));
        assert!(header.valid_checksum());
    }

    #[test]
    fn a_session_that_knows_no_view_yet_registers_with_every_replica_at_once() {
        let mut s = session(3);
        s.register().unwrap();
        let asked: Vec<u8> = s.take_sends().iter().map(|send| send.replica).collect();
        assert_eq!(asked, [0, 1, 2], "view 0 is only a guess: a backup would drop the register silently");
        // The primary of view 4 answers; from then on only it is asked.
        let outcome = s.on_message(&reply(4, 0, Operation::Register, 9, 9, &[]));
        assert_eq!(outcome, Some(Outcome::Registered { session: 9 }));
        s.submit(Operation::SendMessages, b"m").unwrap();
        let asked: Vec<u8> = s.take_sends().iter().map(|send| send.replica).collect();
        assert_eq!(asked, [1]);
    }

    #[test]
    fn a_silent_request_is_resent_to_every_replica_after_the_timeout_with_the_same_number() {
        let mut s = registered(3, 0, 1);
        let request = s.submit(Operation::SendMessages, b"m").unwrap();
        s.take_sends();
        s.tick();
        s.tick();
        assert!(s.take_sends().is_empty(), "resent before the timeout");
        s.tick();
        let sends = s.take_sends();
        assert_eq!(sends.iter().map(|s| s.replica).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(sends.iter().all(|send| send.message.header.request == request));
        assert_eq!(s.attempts(), 2);
    }

    #[test]
    fn only_the_reply_to_the_request_in_flight_in_this_session_is_taken() {
        let mut s = registered(3, 0, 5);
        let request = s.submit(Operation::SendMessages, b"m").unwrap();
        // Another request number, another session, a register reply, another
        // client: all ignored, the request stays in flight.
        let ignored = [
            reply(0, request + 1, Operation::SendMessages, 5, 9, b"x"),
            reply(0, request, Operation::SendMessages, 4, 9, b"x"),
            reply(0, request, Operation::Register, 5, 9, b"x"),
        ];
        for message in &ignored {
            assert_eq!(s.on_message(message), None);
        }
        let mut foreign = reply(0, request, Operation::SendMessages, 5, 9, b"x");
        foreign.header.client = CLIENT + 1;
        assert_eq!(s.on_message(&foreign), None);
        assert_eq!(s.in_flight(), Some(request));
        let outcome = s.on_message(&reply(2, request, Operation::SendMessages, 5, 9, b"ok"));
        assert_eq!(
            outcome,
            Some(Outcome::Reply { request, op: 9, operation: Operation::SendMessages, body: Rc::from(&b"ok"[..]) })
        );
        assert_eq!(s.view_guess(), 2);
        // A duplicate of the same reply now answers nothing.
        assert_eq!(s.on_message(&reply(2, request, Operation::SendMessages, 5, 9, b"ok")), None);
    }

    #[test]
    fn eviction_by_the_current_view_ends_the_session_and_never_resends_the_request() {
        let mut s = registered(3, 3, 5);
        let request = s.submit(Operation::SendMessages, b"m").unwrap();
        // A deposed primary of an older view may not evict.
        assert_eq!(s.on_message(&eviction(2, request, 5)), None);
        // The eviction of an older session's request ends nothing live.
        assert_eq!(s.on_message(&eviction(3, request, 4)), None);
        assert_eq!(s.on_message(&eviction(3, request, 5)), Some(Outcome::Evicted { request }));
        assert!(!s.registered());
        assert_eq!(s.in_flight(), None);
        for _ in 0..10 {
            s.tick();
        }
        assert!(s.take_sends().is_empty(), "the evicted request was resent");
        assert_eq!(s.submit(Operation::SendMessages, b"n"), Err(SessionError::NotRegistered));
        // Registering again: a late reply to the old register is refused,
        // only a newer session is taken.
        s.register().unwrap();
        assert_eq!(s.on_message(&reply(3, 0, Operation::Register, 5, 5, &[])), None);
        assert_eq!(
            s.on_message(&reply(3, 0, Operation::Register, 20, 20, &[])),
            Some(Outcome::Registered { session: 20 })
        );
        assert_eq!(s.submit(Operation::SendMessages, b"n"), Ok(1));
    }

    fn refused(request: u64, replica: u8, reason: Refusal) -> Message {
        let mut header = Header::new(Command::Request, CLUSTER);
        (header.namespace, header.client, header.request) = (NAMESPACE, CLIENT, request);
        Message::empty(reason.header(&header, replica, 0))
    }

    #[test]
    fn busy_backs_off_within_its_bound_and_resends_the_same_request_to_the_refusing_replica() {
        let mut s = registered(3, 1, 5);
        let request = s.submit(Operation::SendMessages, b"m").unwrap();
        s.take_sends();
        let mut previous_wait = 0;
        for refusals in 1..=10u32 {
            assert_eq!(s.on_message(&refused(request, 1, Refusal::Busy)), None, "busy is no outcome");
            let mut waited = 0;
            let resent = loop {
                s.tick();
                waited += 1;
                let sends = s.take_sends();
                if !sends.is_empty() {
                    break sends;
                }
                assert!(waited <= BUSY_BACKOFF_TICKS_MAX, "the backoff is bounded");
            };
            assert_eq!(resent.len(), 1);
            assert_eq!(
                (resent[0].replica, resent[0].message.header.request),
                (1, request),
                "same request, same replica"
            );
            let ceiling = (1u64 << (refusals - 1)).min(BUSY_BACKOFF_TICKS_MAX);
            assert!(waited >= ceiling.div_ceil(2) && waited <= ceiling, "refusal {refusals}: waited {waited}");
            assert!(waited >= previous_wait || ceiling == BUSY_BACKOFF_TICKS_MAX);
            previous_wait = waited;
        }
        assert_eq!(s.in_flight(), Some(request));
    }

    #[test]
    fn the_backoff_jitters_between_clients() {
        let waits: std::collections::BTreeSet<u64> =
            (0..32u128).map(|client| busy_backoff_ticks(client + 1, 1, 7)).collect();
        assert!(waits.len() > 4, "refused clients must not return in lockstep: {waits:?}");
        assert!(waits.iter().all(|w| (32..=64).contains(w)));
    }

    #[test]
    fn a_majority_saying_twice_that_the_partition_is_missing_ends_the_request() {
        let mut s = registered(3, 0, 5);
        let request = s.submit(Operation::SendMessages, b"m").unwrap();
        s.take_sends();
        assert_eq!(s.on_message(&refused(request, 0, Refusal::PartitionMissing)), None, "one replica may lag");
        let asked: Vec<u8> = s.take_sends().iter().map(|send| send.replica).collect();
        assert_eq!(asked, [1, 2], "the others are asked at once");
        assert_eq!(s.on_message(&refused(request + 1, 1, Refusal::PartitionMissing)), None, "another request's");
        assert_eq!(s.on_message(&refused(request, 1, Refusal::PartitionMissing)), None);
        // Right after a topic is created, a majority may not have opened it
        // yet: the same answers again before a retry timeout prove nothing.
        assert_eq!(s.on_message(&refused(request, 0, Refusal::PartitionMissing)), None);
        for _ in 0..3 {
            s.tick();
        }
        let asked: Vec<u8> = s.take_sends().iter().map(|send| send.replica).collect();
        assert_eq!(asked, [0, 1, 2], "the retry broadcast asks everyone again");
        assert_eq!(s.on_message(&refused(request, 0, Refusal::PartitionMissing)), None, "one of three");
        assert_eq!(
            s.on_message(&refused(request, 1, Refusal::PartitionMissing)),
            Some(Outcome::PartitionMissing { request })
        );
        // A suspicion: the request stays until the caller decides, and is
        // not reported twice meanwhile.
        assert_eq!(s.in_flight(), Some(request));
        assert_eq!(s.on_message(&refused(request, 2, Refusal::PartitionMissing)), None, "reported once");
        assert_eq!(s.give_up_missing_partition(), Some(request));
        assert_eq!(s.in_flight(), None);
        assert!(s.take_sends().is_empty());
        assert_eq!(s.give_up_missing_partition(), None, "nothing left to give up");
    }

    #[test]
    fn a_partition_the_catalogue_has_keeps_its_request_until_the_group_answers() {
        let mut s = registered(3, 0, 5);
        s.config.partition_missing_wait_ticks = 6;
        let request = s.submit(Operation::SendMessages, b"m").unwrap();
        let say_missing_for_the_wait = |s: &mut ClientSession| {
            let mut outcomes = Vec::new();
            for _ in 0..2 {
                for replica in 0..3 {
                    outcomes.extend(s.on_message(&refused(request, replica, Refusal::PartitionMissing)));
                }
                for _ in 0..6 {
                    s.tick();
                }
            }
            outcomes
        };
        assert_eq!(say_missing_for_the_wait(&mut s), [Outcome::PartitionMissing { request }]);
        s.keep_waiting_for_partition();
        assert_eq!(s.in_flight(), Some(request), "kept");
        assert_eq!(s.give_up_missing_partition(), None, "no report to act on after keeping it");
        // The replicas still lag: after the whole wait again it is reported again.
        assert_eq!(say_missing_for_the_wait(&mut s), [Outcome::PartitionMissing { request }]);
        s.keep_waiting_for_partition();
        // They open the group: the request commits.
        let outcome = s.on_message(&reply(0, request, Operation::SendMessages, 5, 9, b"ok"));
        assert!(matches!(outcome, Some(Outcome::Reply { request: r, op: 9, .. }) if r == request), "{outcome:?}");
    }

    #[test]
    fn replicas_saying_missing_within_the_wait_are_asked_again_until_the_group_answers() {
        // A retry timeout of 3 ticks, a missing wait of 12: the old rule
        // (twice, a retry timeout apart) would have given up at tick 3.
        let mut s = registered(3, 0, 5);
        s.config.partition_missing_wait_ticks = 12;
        let request = s.submit(Operation::SendMessages, b"m").unwrap();
        s.take_sends();
        for replica in 0..3 {
            assert_eq!(s.on_message(&refused(request, replica, Refusal::PartitionMissing)), None);
        }
        let mut broadcasts = 0;
        for _ in 0..11 {
            s.tick();
            if !s.take_sends().is_empty() {
                broadcasts += 1;
            }
            // Every replica still lags behind the topic's creation.
            for replica in 0..3 {
                assert_eq!(
                    s.on_message(&refused(request, replica, Refusal::PartitionMissing)),
                    None,
                    "within the wait"
                );
            }
        }
        assert!(broadcasts >= 3, "the request keeps going out to every replica: {broadcasts} broadcasts");
        // The topic's creation reaches the replicas: the request commits.
        let outcome = s.on_message(&reply(0, request, Operation::SendMessages, 5, 9, b"ok"));
        assert!(matches!(outcome, Some(Outcome::Reply { request: r, op: 9, .. }) if r == request), "{outcome:?}");
    }

    #[test]
    fn a_majority_still_saying_missing_after_the_wait_ends_the_request() {
        let mut s = registered(3, 0, 5);
        s.config.partition_missing_wait_ticks = 12;
        let request = s.submit(Operation::SendMessages, b"m").unwrap();
        assert_eq!(s.on_message(&refused(request, 0, Refusal::PartitionMissing)), None);
        assert_eq!(s.on_message(&refused(request, 1, Refusal::PartitionMissing)), None);
        for _ in 0..12 {
            s.tick();
        }
        assert_eq!(s.on_message(&refused(request, 0, Refusal::PartitionMissing)), None, "one of three");
        assert_eq!(
            s.on_message(&refused(request, 1, Refusal::PartitionMissing)),
            Some(Outcome::PartitionMissing { request }),
            "a majority said it again the whole wait later"
        );
    }

    #[test]
    fn one_request_at_a_time_and_no_reserved_operations() {
        let mut s = registered(1, 0, 1);
        assert_eq!(s.submit(Operation::Noop, b""), Err(SessionError::ReservedOperation { operation: Operation::Noop }));
        let request = s.submit(Operation::SendMessages, b"m").unwrap();
        assert_eq!(s.submit(Operation::SendMessages, b"n"), Err(SessionError::RequestInFlight { request }));
        assert_eq!(s.register(), Err(SessionError::RequestInFlight { request }));
    }
}
