//! Client sessions: the replicated table that makes a retried request apply
//! exactly once.
//!
//! A client registers (an op of its own); every later request carries a
//! request number one above the last. The table is changed only by committed
//! ops, so every replica has the same table at the same op, and it is part of
//! every checkpoint: a new primary, or a whole cluster after a restart, still
//! knows which requests were applied and what they replied.
//!
//! Bounded: at most `CLIENT_SESSIONS_MAX` sessions; registering past that
//! evicts the session committed least recently (deterministic), and that
//! client gets an eviction instead of a reply.

use std::collections::BTreeMap;

use crate::header::{HEADER_SIZE_BYTES, Header};
use crate::state_machine::{SnapshotError, SnapshotReader, put_bytes_with_len};

pub const CLIENT_SESSIONS_MAX: usize = 64;

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSessions {
    sessions: BTreeMap<u128, Session>,
}

impl ClientSessions {
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

    /// Record a committed register; returns the client evicted to make room.
    pub fn register(&mut self, client: u128, op: u64, reply_header: Header, reply_body: Vec<u8>) -> Option<u128> {
        assert!(!self.sessions.contains_key(&client), "register of a client with a session");
        let evicted = if self.sessions.len() >= CLIENT_SESSIONS_MAX {
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
        assert!(self.sessions.len() <= CLIENT_SESSIONS_MAX);
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

    pub fn decode(reader: &mut SnapshotReader<'_>) -> Result<ClientSessions, SnapshotError> {
        let count = reader.u32()? as usize;
        let mut sessions = BTreeMap::new();
        for _ in 0..count.min(CLIENT_SESSIONS_MAX) {
            let client = reader.u128()?;
            let session_op = reader.u64()?;
            let request = reader.u64()?;
            let commit_op = reader.u64()?;
            let header_bytes = reader.take(HEADER_SIZE_BYTES)?;
            let reply_header = Header::decode(header_bytes).map_err(|_| SnapshotError::BadTag { tag: 0 })?;
            let reply_body = reader.bytes_with_len()?.to_vec();
            sessions.insert(client, Session { session_op, request, commit_op, reply_header, reply_body });
        }
        Ok(ClientSessions { sessions })
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
        let decoded = ClientSessions::decode(&mut SnapshotReader::new(&bytes)).unwrap();
        assert_eq!(decoded, sessions);
    }
}
