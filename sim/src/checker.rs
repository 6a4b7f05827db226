//! Invariant checkers, run continuously while a simulation runs.
//!
//! - agreement: the same op has the same checksum, and each of its requests
//!   (one, or several in a packed prepare: `(op, index)`) the same session
//!   outcome and reply, on every replica that commits it;
//! - commit monotonic: each replica (within one life) commits ops in order,
//!   and an op's requests in order, without gaps or steps back;
//! - exactly once: a client request is applied at one op only;
//! - acknowledged writes: every reply a client accepted names an op that is
//!   committed with that request (a reply names its op; the client finds its
//!   request in it, at most one per client per op), and at the end every replica's log holds
//!   every message of the acknowledged batch at its offset (the batch's
//!   first offset plus its index in the batch);
//! - final logs hold only invoked appends: every entry of every replica's
//!   partition log is a payload some client invoked (payloads are unique per
//!   client and request), and none appears twice;
//! - linearizability of the append log: a batch acknowledged before another
//!   was invoked has smaller offsets (all of them).
//!
//! Checkers only observe: they never change what the cluster does.

use std::collections::{BTreeMap, BTreeSet};

use shoal_shard::message_batch::BatchReply;
use shoal_vsr::header::{Command, Operation};
use shoal_vsr::message::{Message, decode_headers};
use shoal_vsr::replica::Committed;

use crate::run::Checker;
use crate::view_logs::ViewLogs;

#[derive(Debug, Clone, PartialEq, Eq)]
struct CommittedRecord {
    checksum: u128,
    client: u128,
    request: u64,
    applied: bool,
    reply: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub client: u128,
    pub request: u64,
    pub op: u64,
    /// The offset of the batch's first message.
    pub offset: u64,
    /// The batch: message `i` is at `offset + i`.
    pub messages: Vec<Vec<u8>>,
    pub invoked_ns: u64,
    pub acked_ns: u64,
}

impl Ack {
    /// The offset of the batch's last message.
    pub fn last_offset(&self) -> u64 {
        debug_assert!(!self.messages.is_empty(), "an acknowledged batch holds a message");
        self.offset + self.messages.len() as u64 - 1
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub checker: Checker,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Checkers {
    /// (op, index of the request in the op) → what was committed there.
    committed: BTreeMap<(u64, u32), CommittedRecord>,
    /// (client, session, request) → the op that applied it.
    applied_requests: BTreeMap<(u128, u64, u64), u64>,
    /// Clients some committed register evicted from the session table.
    evicted: BTreeSet<u128>,
    /// Per replica: the last (op, request index) committed in its current
    /// life; a restart's replayed op counts as wholly committed.
    last_commit: BTreeMap<u8, (u64, u32)>,
    acks: Vec<Ack>,
    /// (ack time, highest offset acknowledged up to then), in ack order.
    ack_frontier: Vec<(u64, u64)>,
    violation: Option<Violation>,
    /// Every message a client invoked an append of, with who invoked it.
    invoked: BTreeMap<Vec<u8>, (u128, u64)>,
    /// The logs replicas ship as some view's log (see `view_logs`).
    view_logs: ViewLogs,
}

impl Checkers {
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    pub fn fail(&mut self, checker: Checker, message: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation { checker, message });
        }
    }

    pub fn ops_committed(&self) -> u64 {
        self.committed.keys().next_back().map_or(0, |&(op, _)| op)
    }

    pub fn acks(&self) -> &[Ack] {
        &self.acks
    }

    /// A client invoked an append of the batch `messages` (its `request`-th
    /// request).
    pub fn on_invoke(&mut self, client: u128, request: u64, messages: Vec<Vec<u8>>) {
        for message in messages {
            if let Some((other_client, other_request)) = self.invoked.insert(message, (client, request)) {
                // The final-log check tells entries apart by payload alone.
                panic!(
                    "client {client} request {request} reuses a message of client {other_client} request {other_request}: \
                     payloads must be unique per (client, request, index in the batch)"
                );
            }
        }
    }

    /// A replica restarted: its next commit continues from what it replayed.
    pub fn on_restart(&mut self, replica: u8, commit_min: u64) {
        self.last_commit.insert(replica, (commit_min, u32::MAX));
    }

    /// `replica` reported a newer view (before the commits of that step).
    pub fn on_view(&mut self, replica: u8, view: u64) {
        self.view_logs.on_view(replica, view);
    }

    /// `replica` sends `message`: a do_view_change or start_view must carry
    /// the committed prepares as the log of its view.
    pub fn on_send(&mut self, replica: u8, message: &Message) {
        if !matches!(message.header.command, Command::DoViewChange | Command::StartView) {
            return;
        }
        // A malformed body is the receiver's to refuse, not a claim.
        let Ok(headers) = decode_headers(&message.body) else { return };
        if let Err(why) = self.view_logs.check(replica, &message.header, &headers) {
            self.fail(Checker::Agreement, why);
        }
    }

    pub fn on_committed(&mut self, replica: u8, records: &[Committed]) {
        self.view_logs.on_committed(replica, records);
        for record in records {
            let last = self.last_commit.get(&replica).copied().unwrap_or((0, u32::MAX));
            let here = (record.op, record.index);
            let next_in_op = record.op == last.0 && last.1 != u32::MAX && record.index == last.1 + 1;
            let next_op = record.op > last.0 && record.index == 0;
            if !(next_in_op || next_op) && record.op != 0 {
                // A state transfer may jump ahead, never back; an op's
                // requests apply from the first, one after another.
                self.fail(
                    Checker::CommitMonotonic,
                    format!(
                        "replica {replica} committed op {} request {} after op {} request {}",
                        record.op, record.index, last.0, last.1
                    ),
                );
            }
            self.last_commit.insert(replica, here);
            let mine = CommittedRecord {
                checksum: record.checksum,
                client: record.client,
                request: record.request,
                applied: record.applied,
                reply: record.reply.clone(),
            };
            match self.committed.get(&here) {
                Some(theirs) if *theirs != mine => {
                    let what = if theirs.checksum != mine.checksum { "checksum" } else { "outcome" };
                    let detail = format!(
                        "replica {replica} committed op {} (request {} of it) with a different {what} than a peer: \
                         (client {}, request {}, applied {}, reply {:?}) vs (client {}, request {}, applied {}, reply {:?})",
                        record.op,
                        record.index,
                        mine.client,
                        mine.request,
                        mine.applied,
                        mine.reply,
                        theirs.client,
                        theirs.request,
                        theirs.applied,
                        theirs.reply
                    );
                    self.fail(Checker::Agreement, detail);
                }
                Some(_) => {}
                None => {
                    self.committed.insert(here, mine);
                    if let Some(evicted) = record.evicted {
                        self.evicted.insert(evicted);
                    }
                    let counts = record.applied
                        && record.client != 0
                        && !matches!(record.operation, Operation::Register | Operation::Noop | Operation::Root);
                    if counts
                        && let Some(first) =
                            self.applied_requests.insert((record.client, record.session, record.request), record.op)
                    {
                        self.fail(
                            Checker::AckedWritesDurable,
                            format!(
                                "client {} request {} applied twice: ops {first} and {}",
                                record.client, record.request, record.op
                            ),
                        );
                    }
                }
            }
        }
    }

    /// A client was told its session is gone: only a full table, through a
    /// committed register, may do that. A session lost any other way (a
    /// stale session table at a new primary, a checkpoint without sessions)
    /// would let a retried request apply twice.
    pub fn on_eviction(&mut self, client: u128) {
        if !self.evicted.contains(&client) {
            self.fail(
                Checker::AckedWritesDurable,
                format!("client {client} was evicted, but no committed register evicted it: its session was lost"),
            );
        }
    }

    /// A client accepted a reply to an append.
    pub fn on_ack(&mut self, ack: Ack) {
        let mut in_op = self.committed.range((ack.op, 0)..=(ack.op, u32::MAX)).map(|(_, record)| record).peekable();
        let op_committed = in_op.peek().is_some();
        let mine = in_op.find(|record| record.client == ack.client);
        match mine {
            None if !op_committed => self.fail(
                Checker::AckedWritesDurable,
                format!("client {} got a reply for op {} that no replica committed", ack.client, ack.op),
            ),
            None => self.fail(
                Checker::AckedWritesDurable,
                format!("reply for op {} names client {}, but no request of it is in that op", ack.op, ack.client),
            ),
            Some(record) if record.request != ack.request => self.fail(
                Checker::AckedWritesDurable,
                format!("reply for op {} names client {} request {}, the log another", ack.op, ack.client, ack.request),
            ),
            Some(record)
                if record.reply
                    != BatchReply { first_offset: ack.offset, count: ack.messages.len() as u32 }.encode() =>
            {
                self.fail(
                    Checker::Linearizability,
                    format!(
                        "reply for op {} carries offsets {}..+{} the log does not",
                        ack.op,
                        ack.offset,
                        ack.messages.len()
                    ),
                )
            }
            Some(_) => {}
        }
        // Real-time order: everything acknowledged before this batch was
        // invoked must have smaller offsets than any of its messages.
        let before = self.ack_frontier.partition_point(|(acked_ns, _)| *acked_ns < ack.invoked_ns);
        if before > 0 {
            let (_, highest) = self.ack_frontier[before - 1];
            if highest >= ack.offset {
                let earlier = self.acks.iter().find(|a| (a.offset..=a.last_offset()).contains(&highest));
                let earlier = earlier.map_or(String::new(), |a| {
                    format!(" (client {} request {} op {}, acked at {} ns)", a.client, a.request, a.op, a.acked_ns)
                });
                self.fail(
                    Checker::Linearizability,
                    format!(
                        "append acknowledged at offset {} (client {} request {} op {}, invoked at {} ns) was invoked \
                         after an append at offset {highest} was acknowledged{earlier}",
                        ack.offset, ack.client, ack.request, ack.op, ack.invoked_ns
                    ),
                );
            }
        }
        let last = ack.last_offset();
        let highest = self.ack_frontier.last().map_or(last, |(_, h)| (*h).max(last));
        debug_assert!(self.ack_frontier.last().is_none_or(|(t, _)| *t <= ack.acked_ns));
        self.ack_frontier.push((ack.acked_ns, highest));
        self.acks.push(ack);
    }

    /// At the end: every message of every acknowledged batch is in a
    /// replica's log, once, at its offset; every entry is a message a client
    /// invoked, at most once.
    pub fn check_final_log(&mut self, replica: u8, messages: &[Vec<u8>]) {
        let mut failures = Vec::new();
        let mut seen: BTreeMap<&[u8], usize> = BTreeMap::new();
        for (offset, message) in messages.iter().enumerate() {
            if !self.invoked.contains_key(message) {
                failures.push(format!(
                    "replica {replica} holds at offset {offset} an entry no client appended: {:?}",
                    String::from_utf8_lossy(message)
                ));
            } else if let Some(first) = seen.insert(message, offset) {
                let (client, request) = self.invoked[message];
                failures.push(format!(
                    "replica {replica} holds the append of client {client} request {request} twice: offsets {first} and {offset}"
                ));
            }
        }
        for ack in &self.acks {
            for (index, message) in ack.messages.iter().enumerate() {
                let offset = ack.offset + index as u64;
                match messages.get(offset as usize) {
                    Some(payload) if payload == message => {}
                    _ => failures.push(format!(
                        "replica {replica} lost message {index} of the acknowledged batch of client {} request {} \
                         at offset {offset}",
                        ack.client, ack.request
                    )),
                }
            }
        }
        if let Some(first) = failures.into_iter().next() {
            self.fail(Checker::AckedWritesDurable, first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(op: u64, checksum: u128, client: u128, request: u64) -> Committed {
        Committed {
            op,
            checksum,
            index: 0,
            operation: Operation::SendMessages,
            client,
            request,
            applied: true,
            reply: BatchReply { first_offset: op - 1, count: 1 }.encode().to_vec(),
            session: 1,
            evicted: None,
        }
    }

    #[test]
    fn an_eviction_without_a_committed_register_evicting_the_client_fails() {
        let mut checkers = Checkers::default();
        let mut register = committed(1, 10, 6, 0);
        register.operation = Operation::Register;
        register.evicted = Some(5);
        checkers.on_committed(0, &[register]);
        checkers.on_eviction(5);
        assert!(checkers.violation().is_none(), "client 5 was evicted by op 1");
        checkers.on_eviction(7);
        assert_eq!(checkers.violation().unwrap().checker, Checker::AckedWritesDurable);
    }

    #[test]
    fn the_same_request_number_in_a_new_session_is_not_a_double_apply() {
        let mut checkers = Checkers::default();
        let mut second_session = committed(2, 12, 5, 1);
        second_session.session = 2;
        checkers.on_committed(0, &[committed(1, 10, 5, 1), second_session]);
        assert!(checkers.violation().is_none());
    }

    /// A packed op: two requests at op 1, each acknowledged to its own client.
    fn packed(checksum: u128, first_client: u128, second_client: u128) -> [Committed; 2] {
        let first = committed(1, checksum, first_client, 1);
        let mut second = committed(1, checksum, second_client, 1);
        second.index = 1;
        second.reply = BatchReply { first_offset: 1, count: 1 }.encode().to_vec();
        [first, second]
    }

    fn ack_of(client: u128, op: u64, offset: u64) -> Ack {
        Ack { client, request: 1, op, offset, messages: vec![vec![]], invoked_ns: 0, acked_ns: 1 }
    }

    #[test]
    fn each_request_of_a_packed_op_is_acknowledged_to_its_own_client() {
        let mut checkers = Checkers::default();
        checkers.on_committed(0, &packed(10, 5, 6));
        checkers.on_committed(1, &packed(10, 5, 6));
        checkers.on_ack(ack_of(6, 1, 1));
        checkers.on_ack(ack_of(5, 1, 0));
        assert_eq!(checkers.violation(), None);
        assert_eq!(checkers.ops_committed(), 1);
    }

    #[test]
    fn a_packed_reply_with_another_requests_offsets_fails() {
        let mut checkers = Checkers::default();
        checkers.on_committed(0, &packed(10, 5, 6));
        // Client 6 was told the offsets of client 5's request.
        checkers.on_ack(ack_of(6, 1, 0));
        assert_eq!(checkers.violation().unwrap().checker, Checker::Linearizability);
    }

    #[test]
    fn a_reply_for_a_client_absent_from_its_op_fails() {
        let mut checkers = Checkers::default();
        checkers.on_committed(0, &packed(10, 5, 6));
        checkers.on_ack(ack_of(7, 1, 0));
        assert_eq!(checkers.violation().unwrap().checker, Checker::AckedWritesDurable);
    }

    #[test]
    fn a_packed_op_whose_second_request_differs_across_replicas_fails_agreement() {
        let mut checkers = Checkers::default();
        checkers.on_committed(0, &packed(10, 5, 6));
        let [first, mut second] = packed(10, 5, 6);
        second.applied = false;
        checkers.on_committed(1, &[first, second]);
        assert_eq!(checkers.violation().unwrap().checker, Checker::Agreement);
    }

    #[test]
    fn requests_of_an_op_out_of_order_fail() {
        let mut checkers = Checkers::default();
        let [first, second] = packed(10, 5, 6);
        checkers.on_committed(0, &[second, first]);
        assert_eq!(checkers.violation().unwrap().checker, Checker::CommitMonotonic);
    }

    #[test]
    fn divergent_commit_fails_agreement() {
        let mut checkers = Checkers::default();
        checkers.on_committed(0, &[committed(1, 10, 5, 1)]);
        checkers.on_committed(1, &[committed(1, 11, 5, 1)]);
        assert_eq!(checkers.violation().unwrap().checker, Checker::Agreement);
    }

    #[test]
    fn double_apply_fails() {
        let mut checkers = Checkers::default();
        checkers.on_committed(0, &[committed(1, 10, 5, 1), committed(2, 12, 5, 1)]);
        assert_eq!(checkers.violation().unwrap().checker, Checker::AckedWritesDurable);
    }

    #[test]
    fn commit_going_back_fails() {
        let mut checkers = Checkers::default();
        checkers.on_committed(0, &[committed(1, 10, 5, 1), committed(2, 12, 5, 2)]);
        checkers.on_committed(0, &[committed(2, 12, 5, 2)]);
        assert_eq!(checkers.violation().unwrap().checker, Checker::CommitMonotonic);
    }

    #[test]
    fn stale_read_order_fails_linearizability() {
        let mut checkers = Checkers::default();
        checkers.on_committed(0, &[committed(1, 10, 5, 1), committed(2, 12, 6, 1)]);
        let ack = |client, op: u64, invoked_ns, acked_ns| Ack {
            client,
            request: 1,
            op,
            offset: op - 1,
            messages: vec![vec![]],
            invoked_ns,
            acked_ns,
        };
        checkers.on_ack(ack(6, 2, 0, 10));
        checkers.on_ack(ack(5, 1, 20, 30));
        assert_eq!(checkers.violation().unwrap().checker, Checker::Linearizability);
    }

    fn invoked(payloads: &[&[u8]]) -> Checkers {
        let mut checkers = Checkers::default();
        for (index, payload) in payloads.iter().enumerate() {
            checkers.on_invoke(5, index as u64 + 1, vec![payload.to_vec()]);
        }
        checkers
    }

    #[test]
    fn final_log_of_invoked_appends_passes() {
        let mut checkers = invoked(&[b"a", b"b", b"c"]);
        // An invoked but unacknowledged append may be missing.
        checkers.check_final_log(0, &[b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(checkers.violation(), None);
    }

    #[test]
    fn duplicate_entry_in_final_log_fails() {
        let mut checkers = invoked(&[b"a", b"b"]);
        checkers.check_final_log(0, &[b"a".to_vec(), b"b".to_vec(), b"a".to_vec()]);
        let violation = checkers.violation().unwrap();
        assert_eq!(violation.checker, Checker::AckedWritesDurable);
        assert!(violation.message.contains("twice: offsets 0 and 2"), "{}", violation.message);
    }

    #[test]
    fn entry_no_client_appended_fails() {
        let mut checkers = invoked(&[b"a", b"b"]);
        checkers.check_final_log(1, &[b"a".to_vec(), b"b".to_vec(), b"x".to_vec()]);
        let violation = checkers.violation().unwrap();
        assert_eq!(violation.checker, Checker::AckedWritesDurable);
        assert!(violation.message.contains("offset 2 an entry no client appended"), "{}", violation.message);
    }

    #[test]
    #[should_panic(expected = "payloads must be unique")]
    fn reused_payload_is_a_driver_bug() {
        invoked(&[b"a", b"a"]);
    }

    #[test]
    fn lost_acknowledged_append_fails() {
        let mut checkers = Checkers::default();
        checkers.on_committed(0, &[committed(1, 10, 5, 1)]);
        checkers.on_ack(Ack {
            client: 5,
            request: 1,
            op: 1,
            offset: 0,
            messages: vec![b"a".to_vec()],
            invoked_ns: 0,
            acked_ns: 1,
        });
        checkers.check_final_log(2, &[]);
        assert_eq!(checkers.violation().unwrap().checker, Checker::AckedWritesDurable);
    }
}
