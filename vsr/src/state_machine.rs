//! The `StateMachine` trait: what a VSR group replicates.
//!
//! A state machine sees only committed operations, in op order, exactly once
//! per op (client sessions filter retries before it). It must be deterministic:
//! same ops ⇒ same replies and same snapshot bytes on every replica.

use crate::header::Operation;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is truncated at byte {at_byte}: the checkpoint is corrupt, state-transfer from a peer")]
    Truncated { at_byte: usize },
    #[error("snapshot has a bad tag {tag}: written by another version; state-transfer from a peer")]
    BadTag { tag: u8 },
    #[error(
        "snapshot holds {count} client sessions, more than this replica's limit {max}: \
         every replica of a cluster must run with the same client_sessions_max"
    )]
    TooManySessions { count: usize, max: usize },
    #[error("snapshot holds two sessions of client {client}: the checkpoint is corrupt, state-transfer from a peer")]
    DuplicateSession { client: u128 },
}

pub trait StateMachine {
    /// Apply one committed operation and return the reply body.
    fn apply(&mut self, op: u64, operation: Operation, body: &[u8], timestamp: u64) -> Vec<u8>;
    /// All state, for checkpoints and state transfer.
    fn snapshot(&self) -> Vec<u8>;
    /// Replace all state with a snapshot taken by `snapshot`.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError>;
    /// Whether a checkpoint of the current state may be made durable now: a
    /// checkpoint lets the journal forget the ops it covers, so the state's
    /// own storage must be able to hold all of them first. A state machine
    /// whose durable data has a hole only peers can fill (a partition after
    /// a state transfer) answers false until it is filled; the replica then
    /// defers its checkpoint (its journal still holds the ops).
    fn checkpoint_ready(&self) -> bool {
        true
    }
}

/// A little-endian reader that turns running out of bytes into a typed error.
#[derive(Debug)]
pub struct SnapshotReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> SnapshotReader<'a> {
    pub fn new(bytes: &'a [u8]) -> SnapshotReader<'a> {
        SnapshotReader { bytes, position: 0 }
    }

    pub fn take(&mut self, count: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.position.checked_add(count).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(SnapshotError::Truncated { at_byte: self.position });
        };
        let out = &self.bytes[self.position..end];
        self.position = end;
        Ok(out)
    }

    pub fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    pub fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    pub fn u128(&mut self) -> Result<u128, SnapshotError> {
        Ok(u128::from_le_bytes(self.take(16)?.try_into().unwrap()))
    }

    pub fn bytes_with_len(&mut self) -> Result<&'a [u8], SnapshotError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    pub fn is_empty(&self) -> bool {
        self.position == self.bytes.len()
    }
}

pub fn put_bytes_with_len(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A replicated append-only log of opaque messages: the partition state
/// machine the simulator's clients write to. `SendMessages` appends the body
/// as one message and replies with its offset (u64 LE); `PollMessages` takes
/// an offset (u64 LE) and replies with that message, or nothing past the end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppendLog {
    pub messages: Vec<Vec<u8>>,
    /// Stands in for a partition whose durable log has a hole only peers
    /// can fill: while set, `checkpoint_ready` answers false, so the
    /// replica defers its checkpoints and serves none. Not part of the
    /// snapshot: a test sets it on a running replica.
    pub checkpoint_withheld: bool,
}

/// The largest number of messages one `AppendLog` holds; a bound on memory.
pub const APPEND_LOG_MESSAGES_MAX: usize = 1 << 20;

impl StateMachine for AppendLog {
    fn apply(&mut self, _op: u64, operation: Operation, body: &[u8], _timestamp: u64) -> Vec<u8> {
        match operation {
            Operation::SendMessages => {
                assert!(self.messages.len() < APPEND_LOG_MESSAGES_MAX, "append log is full");
                let offset = self.messages.len() as u64;
                self.messages.push(body.to_vec());
                offset.to_le_bytes().to_vec()
            }
            Operation::PollMessages => {
                let offset = body.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
                offset.and_then(|offset| self.messages.get(offset as usize)).cloned().unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.messages.len() as u64).to_le_bytes());
        for message in &self.messages {
            put_bytes_with_len(&mut out, message);
        }
        out
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        let mut reader = SnapshotReader::new(snapshot);
        let count = reader.u64()?;
        let mut messages = Vec::new();
        for _ in 0..count.min(APPEND_LOG_MESSAGES_MAX as u64) {
            messages.push(reader.bytes_with_len()?.to_vec());
        }
        self.messages = messages;
        Ok(())
    }

    fn checkpoint_ready(&self) -> bool {
        !self.checkpoint_withheld
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_log_snapshot_round_trip() {
        let mut log = AppendLog::default();
        assert_eq!(log.apply(1, Operation::SendMessages, b"a", 0), 0u64.to_le_bytes());
        assert_eq!(log.apply(2, Operation::SendMessages, b"bc", 0), 1u64.to_le_bytes());
        assert_eq!(log.apply(3, Operation::PollMessages, &1u64.to_le_bytes(), 0), b"bc");
        let mut restored = AppendLog::default();
        restored.restore(&log.snapshot()).unwrap();
        assert_eq!(restored, log);
        assert!(matches!(restored.restore(&[1, 0, 0, 0, 0, 0, 0, 0, 9]), Err(SnapshotError::Truncated { .. })));
    }
}
