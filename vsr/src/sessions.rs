//! Client sessions: the replicated table that makes a retried request apply
//! exactly once.
//!
//! A client registers (an op of its own); every later request carries a
//! request number one above the last. The table is changed only by committed
//! ops, so every replica has the same table at the same op, and it is part of
//! every checkpoint: a new primary, or a whole cluster after a restart, still
//! knows which requests were applied and what they replied.
//!
//! Bounded: at most `capacity` sessions (a cluster-wide setting, the same on
//! every replica, default `CLIENT_SESSIONS_MAX`); registering past that
//! evicts the session committed least recently (deterministic), and that
//! client gets an eviction instead of a reply.
//!
//! What an evicted client does: the outcome of its in-flight request is
//! unknown (it may have committed before the eviction, its reply lost). It
//! must not send that request again under a new session — the new session
//! has no memory of the old one, so a replay could apply it twice. It
//! reports the request as indeterminate to its caller, registers again and
//! goes on with new requests. It believes an eviction only from a view at
//! least as new as the newest it had a reply from: a deposed primary still
//! answers from its stale table. And it takes a register reply only for a
//! session newer than its last (a late reply to an earlier register names a
//! session that is gone).

use std::collections::BTreeMap;

use crate::header::{HEADER_SIZE_BYTES, Header};
use crate::state_machine::{SnapshotError, SnapshotReader, put_bytes_with_len};

/// The default session table size.
pub const CLIENT_SESSIONS_MAX: usize = 64;
/// The largest table a replica accepts (setting or snapshot): bounds the
/// memory a corrupt or hostile snapshot can ask for.
pub const CLIENT_SESSIONS_LIMIT: usize = 1 << 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The op that registered this session.
    pub session_op: u64,
    /// The highest request number applied.
    pub request: u64,
    /// The op that applied `request`; orders eviction.
    pub commit_op: u64,
    /// The reply to `request`, resent verbatim on a retry.
    pub reply_header: Header,
    pub reply_body: Vec<u8>,
}

/// What the primary should do with an incoming request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestVerdict {
    /// New work: prepare it.
    Prepare,
    /// Already applied: resend the cached reply.
    ResendReply,
    /// Older than the last applied request, or too far ahead: drop it.
    Drop,
    /// No session: the client must register again.
    Evicted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSessions {
    sessions: BTreeMap<u128, Session>,
    capacity: usize,
}

impl Default for ClientSessions {
    fn default() -> ClientSessions {
        ClientSessions::with_capacity(CLIENT_SESSIONS_MAX)
    }
}

impl ClientSessions {
    pub fn with_capacity(capacity: usize) -> ClientSessions {
        assert!(
            (1..=CLIENT_SESSIONS_LIMIT).contains(&capacity),
            "client_sessions_max out of 1..={CLIENT_SESSIONS_LIMIT}"
        );
        ClientSessions { sessions: BTreeMap::new(), capacity }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn get(&self, client: u128) -> Option<&Session> {
        self.sessions.get(&client)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn classify(&self, client: u128, request: u64, registering: bool) -> RequestVerdict {
        match self.sessions.get(&client) {
            None if registering => RequestVerdict::Prepare,
            None => RequestVerdict::Evicted,
            Some(session) if registering => {
                // A retried register whose reply was lost.
                if session.request == 0 { RequestVerdict::ResendReply } else { RequestVerdict::Drop }
            }
            Some(session) if request == session.request => RequestVerdict::ResendReply,
            Some(session) if request == session.request + 1 => RequestVerdict::Prepare,
            Some(_) => RequestVerdict::Drop,
        }
    }

    /// A request (not a register) of `client` sent in the session that
    /// `session` (the register's op) opened. Request numbers restart in a
    /// new session, so a request of an older session — a retry or a stale
    /// prepare from before an eviction — is never applied as the new
    /// session's request of the same number. It is answered as evicted: the
    /// session it names is gone. The newer session may be one the client
    /// never learned of (a delayed retry of its own register, committed
    /// after its first session was evicted: swarm seed 7882); dropping the
    /// request would leave that client retrying it forever. The eviction
    /// names the old session (`Header::context`), so a client already in
    /// the newer session ignores it.
    pub fn classify_request(&self, client: u128, session: u64, request: u64) -> RequestVerdict {
        match self.sessions.get(&client) {
            Some(current) if session < current.session_op => RequestVerdict::Evicted,
            Some(current) if current.session_op != session => RequestVerdict::Drop,
            _ => self.classify(client, request, false),
        }
    }

    /// Record a committed register; returns the client evicted to make room.
    pub fn register(&mut self, client: u128, op: u64, reply_header: Header, reply_body: Vec<u8>) -> Option<u128> {
        assert!(!self.sessions.contains_key(&client), "register of a client with a session");
        let evicted = if self.sessions.len() >= self.capacity {
            let (&oldest, _) = self
                .sessions
                .iter()
                .min_by_key(|(client, session)| (session.commit_op, **client))
                .expect("full table is not empty");
            self.sessions.remove(&oldest);
            Some(oldest)
        } else {
            None
        };
        self.sessions.insert(client, Session { session_op: op, request: 0, commit_op: op, reply_header, reply_body });
        assert!(self.sessions.len() <= self.capacity);
        evicted
    }

    /// Record a committed request and its reply.
    pub fn record(&mut self, client: u128, request: u64, op: u64, reply_header: Header, reply_body: Vec<u8>) {
        let session = self.sessions.get_mut(&client).expect("committed request has a session");
        assert_eq!(request, session.request + 1, "requests apply in order, exactly once");
        assert!(op > session.commit_op);
        session.request = request;
        session.commit_op = op;
        session.reply_header = reply_header;
        session.reply_body = reply_body;
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.sessions.len() as u32).to_le_bytes());
        for (client, session) in &self.sessions {
            out.extend_from_slice(&client.to_le_bytes());
            out.extend_from_slice(&session.session_op.to_le_bytes());
            out.extend_from_slice(&session.request.to_le_bytes());
            out.extend_from_slice(&session.commit_op.to_le_bytes());
            out.extend_from_slice(&session.reply_header.encode());
            put_bytes_with_len(out, &session.reply_body);
        }
    }

    /// Decode a table into one of `capacity` sessions. More sessions than
    /// that is an error, never a silent truncation (which would evict
    /// clients differently on different replicas).
    pub fn decode(reader: &mut SnapshotReader<'_>, capacity: usize) -> Result<ClientSessions, SnapshotError> {
        let count = reader.u32()? as usize;
        if count > capacity {
            return Err(SnapshotError::TooManySessions { count, max: capacity });
        }
        let mut sessions = BTreeMap::new();
        for _ in 0..count {
            let client = reader.u128()?;
            let session_op = reader.u64()?;
            let request = reader.u64()?;
            let commit_op = reader.u64()?;
            let header_bytes = reader.take(HEADER_SIZE_BYTES)?;
            let reply_header = Header::decode(header_bytes).map_err(|_| SnapshotError::BadTag { tag: 0 })?;
            let reply_body = reader.bytes_with_len()?.to_vec();
            let session = Session { session_op, request, commit_op, reply_header, reply_body };
            if sessions.insert(client, session).is_some() {
                // Merging them would silently drop one: a corrupt table.
                return Err(SnapshotError::DuplicateSession { client });
            }
        }
        let mut table = ClientSessions::with_capacity(capacity);
        table.sessions = sessions;
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Command;

    fn reply() -> Header {
        let mut header = Header::new(Command::Reply, 1);
        header.set_checksums(&[]);
        header
    }

    #[test]
    fn retries_resend_and_new_requests_prepare() {
        let mut sessions = ClientSessions::default();
        assert_eq!(sessions.classify(7, 1, false), RequestVerdict::Evicted);
        assert_eq!(sessions.classify(7, 0, true), RequestVerdict::Prepare);
        sessions.register(7, 3, reply(), vec![]);
        assert_eq!(sessions.classify(7, 0, true), RequestVerdict::ResendReply);
        assert_eq!(sessions.classify(7, 1, false), RequestVerdict::Prepare);
        sessions.record(7, 1, 4, reply(), b"r1".to_vec());
        assert_eq!(sessions.classify(7, 1, false), RequestVerdict::ResendReply);
        assert_eq!(sessions.classify(7, 3, false), RequestVerdict::Drop);
        assert_eq!(sessions.classify(7, 0, false), RequestVerdict::Drop);
    }

    #[test]
    fn full_table_evicts_least_recently_committed() {
        let mut sessions = ClientSessions::default();
        for client in 0..CLIENT_SESSIONS_MAX as u128 {
            assert_eq!(sessions.register(client, 10 + client as u64, reply(), vec![]), None);
        }
        sessions.record(0, 1, 1000, reply(), vec![]);
        assert_eq!(sessions.register(999, 2000, reply(), vec![]), Some(1));
        assert_eq!(sessions.len(), CLIENT_SESSIONS_MAX);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut sessions = ClientSessions::default();
        sessions.register(7, 3, reply(), b"hi".to_vec());
        let mut bytes = Vec::new();
        sessions.encode(&mut bytes);
        let decoded = ClientSessions::decode(&mut SnapshotReader::new(&bytes), CLIENT_SESSIONS_MAX).unwrap();
        assert_eq!(decoded, sessions);
    }

    #[test]
    fn a_request_of_an_older_session_is_dropped_not_applied_in_the_new_one() {
        let mut sessions = ClientSessions::with_capacity(1);
        sessions.register(7, 3, reply(), vec![]);
        assert_eq!(sessions.classify_request(7, 3, 1), RequestVerdict::Prepare);
        sessions.register(8, 4, reply(), vec![]);
        assert_eq!(sessions.classify_request(7, 3, 1), RequestVerdict::Evicted);
        sessions.register(7, 5, reply(), vec![]);
        assert_eq!(sessions.classify_request(7, 3, 1), RequestVerdict::Evicted, "session 3 is gone");
        assert_eq!(sessions.classify_request(7, 6, 1), RequestVerdict::Drop, "no session 6 was ever opened");
        assert_eq!(sessions.classify_request(7, 5, 1), RequestVerdict::Prepare);
    }

    #[test]
    fn a_table_with_two_sessions_of_one_client_is_refused() {
        let mut sessions = ClientSessions::with_capacity(4);
        sessions.register(7, 1, reply(), vec![]);
        let mut bytes = Vec::new();
        sessions.encode(&mut bytes);
        // Count 2, then the same session twice (found by fuzz/snapshot_decode).
        let entry = bytes[4..].to_vec();
        bytes[..4].copy_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(&entry);
        let error = ClientSessions::decode(&mut SnapshotReader::new(&bytes), 4).unwrap_err();
        assert_eq!(error, SnapshotError::DuplicateSession { client: 7 });
    }

    #[test]
    fn a_small_table_evicts_at_its_own_capacity() {
        let mut sessions = ClientSessions::with_capacity(2);
        assert_eq!(sessions.register(1, 1, reply(), vec![]), None);
        assert_eq!(sessions.register(2, 2, reply(), vec![]), None);
        assert_eq!(sessions.register(3, 3, reply(), vec![]), Some(1));
        assert_eq!(sessions.classify(1, 1, false), RequestVerdict::Evicted);
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn a_snapshot_with_more_sessions_than_the_setting_is_refused() {
        let mut sessions = ClientSessions::with_capacity(3);
        for client in 0..3 {
            sessions.register(client, client as u64 + 1, reply(), vec![]);
        }
        let mut bytes = Vec::new();
        sessions.encode(&mut bytes);
        let error = ClientSessions::decode(&mut SnapshotReader::new(&bytes), 2).unwrap_err();
        assert_eq!(error, SnapshotError::TooManySessions { count: 3, max: 2 });
    }
}
