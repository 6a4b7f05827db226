//! Serving a client's read of committed partition messages (`Command::Read`).
//!
//! Owns the answer one replica gives from its own partition log, outside
//! consensus and sessions (the bodies are `crate::read`'s). The driver hands
//! a read here and sends the answer back like a reply.
//!
//! Invariant: an answer carries only offsets below this replica's committed
//! end (`PartitionStateMachine::next_offset`: only committed ops are applied,
//! so a prepared op that might still be truncated by a view change has no
//! offset yet), each message the one the log holds there, verified by the
//! record checksum and, for replayed offsets, against the committed op.

use shoal_vsr::header::Header;
use shoal_vsr::io::Io;
use shoal_vsr::marks;

use super::machine::GroupMachine;
use super::{Group, NodeStop};
use crate::message_batch::BATCH_MESSAGE_OVERHEAD_BYTES;
use crate::partition_log::RECORD_HEADER_SIZE_BYTES;
use crate::read::{READ_MESSAGES_MAX, ReadAnswer, ReadRequest, messages_reply_frame};

/// What a replica answers a read with.
#[derive(Debug)]
pub enum Served {
    /// Messages: the `ReadReply` frame, encoded straight from the log's
    /// read buffers (`crate::read::messages_reply_frame`).
    Frame(Vec<u8>),
    /// Every other answer (small: no messages).
    Answer(ReadAnswer),
}

/// Answer `read` (header and body of a client's `Read`) from `group`, the
/// group of its namespace on this replica (`replica`), if any. `Err` only
/// when writing the applied messages to the log fails: the node stops, as
/// it would at its next commit.
pub async fn answer<I: Io>(
    group: Option<&mut Group<I>>,
    replica: u8,
    read: &Header,
    body: &[u8],
) -> Result<Served, NodeStop> {
    let Ok(request) = ReadRequest::decode(body) else { return Ok(Served::Answer(ReadAnswer::Malformed)) };
    let Some(group) = group else { return Ok(Served::Answer(ReadAnswer::PartitionMissing)) };
    debug_assert_eq!(group.namespace(), read.namespace);
    if !matches!(group.replica().state_machine(), GroupMachine::Partition(_)) {
        return Ok(Served::Answer(ReadAnswer::PartitionMissing));
    }
    // Applied messages wait in memory until written (unsynced: the journal
    // is the WAL); a read of the tail right after its commit must find them
    // in the log.
    group.write_partition().await?;
    let is_primary = group.replica().is_primary();
    let GroupMachine::Partition(partition) = group.replica().state_machine() else {
        unreachable!("checked above");
    };
    let committed_end = partition.next_offset();
    if request.offset >= committed_end {
        marks::hit(marks::READ_BEYOND_END);
        return Ok(Served::Answer(ReadAnswer::OffsetBeyondEnd { committed_end }));
    }
    let log = partition.log();
    let outside_log = request.offset < log.first_offset() || request.offset >= log.next_offset();
    if outside_log || shoal_vsr::buggify!(shoal_vsr::buggify::READ_UNAVAILABLE) {
        // Committed, but a state transfer left it to be fetched from a peer
        // (the mark counts that path only; buggify's site counts its own).
        if outside_log {
            marks::hit(marks::READ_UNAVAILABLE);
        }
        return Ok(Served::Answer(ReadAnswer::Unavailable { committed_end }));
    }
    let mut count_max = u64::from(request.count_max.min(READ_MESSAGES_MAX)).min(committed_end - request.offset);
    if shoal_vsr::buggify!(shoal_vsr::buggify::READ_ANSWER_SHORT) {
        count_max = 1;
    }
    let batch_max_bytes = request.batch_size_max_bytes();
    // A log record is larger than its place in the reply's batch by the
    // difference of their per-message overheads: load that much more per
    // message (`fit` trims what does not fit the reply).
    let record_extra_bytes = (RECORD_HEADER_SIZE_BYTES - BATCH_MESSAGE_OVERHEAD_BYTES) as u64;
    let load_max_bytes = batch_max_bytes as u64 + count_max * record_extra_bytes;
    let records = match partition.read_records(request.offset, count_max as usize, load_max_bytes).await {
        Ok(records) => records,
        Err(error) => {
            tracing::warn!(namespace = format_args!("{:#x}", read.namespace), %error, "read of committed offsets failed");
            marks::hit(marks::READ_UNAVAILABLE);
            return Ok(Served::Answer(ReadAnswer::Unavailable { committed_end }));
        }
    };
    let count = match fit(request.offset, committed_end, records.iter(), batch_max_bytes) {
        Ok(count) => count,
        Err(answer) => return Ok(Served::Answer(answer)),
    };
    if !is_primary {
        marks::hit(marks::READ_SERVED_BY_BACKUP);
    }
    let messages = records.iter().take(count).map(|(_, message)| message);
    Ok(Served::Frame(messages_reply_frame(read, replica, request.offset, committed_end, messages)))
}

/// How many of the records read at `offset` fit `batch_max_bytes` (the
/// first ones; at least one), or the answer when none does (a lone one
/// over it is `MessageTooLarge`; none read at all, `Unavailable`).
fn fit<'a>(
    offset: u64,
    committed_end: u64,
    records: impl Iterator<Item = (u64, &'a [u8])>,
    batch_max_bytes: usize,
) -> Result<usize, ReadAnswer> {
    let mut size_bytes = crate::message_batch::batch_size_bytes([]);
    let mut count = 0;
    for (index, (record_offset, message)) in records.enumerate() {
        assert_eq!(record_offset, offset + index as u64, "the log reads densely from the offset asked");
        assert!(record_offset < committed_end, "only committed offsets are served");
        let entry_bytes = BATCH_MESSAGE_OVERHEAD_BYTES + message.len();
        if size_bytes + entry_bytes > batch_max_bytes {
            if count == 0 {
                return Err(ReadAnswer::MessageTooLarge { offset, size_bytes: message.len() as u32 });
            }
            break;
        }
        size_bytes += entry_bytes;
        count += 1;
    }
    if count == 0 {
        return Err(ReadAnswer::Unavailable { committed_end });
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_what_the_reply_bound_holds_and_refuses_a_lone_message_over_it() {
        let records: Vec<_> = (10..14).map(|offset| (offset, vec![offset as u8; 100])).collect();
        let iter = || records.iter().map(|(offset, message)| (*offset, message.as_slice()));
        // Batch header (4) + two entries of 104 bytes each.
        assert_eq!(fit(10, 20, iter(), 4 + 2 * 104), Ok(2));
        assert_eq!(fit(10, 20, iter(), 4 + 4 * 104), Ok(4));
        assert_eq!(fit(10, 20, iter(), 50), Err(ReadAnswer::MessageTooLarge { offset: 10, size_bytes: 100 }));
        assert_eq!(fit(10, 20, std::iter::empty(), 50), Err(ReadAnswer::Unavailable { committed_end: 20 }));
    }
}
