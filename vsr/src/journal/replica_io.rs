//! The journal calls the replica driver makes.
//!
//! The replica vouches for every prepare through the hash chain of its own
//! log (view headers, repair by checksum), so these calls do not re-check the
//! chain against neighbours the way `append` and `write_repair` do: after a
//! view change the journal may still hold a stale neighbour that the replica
//! has already dropped. They keep every other check: checksums, group, size,
//! the slot window (no live entry is ever evicted) and read-only mode.

use std::collections::BTreeMap;

use super::{JournalError, PrepareJournal, SlotState, StagedDrain, io_error};
use crate::header::Header;
use crate::io::Io;
use crate::message::Message;

/// Everything valid in the journal's live window, and the slots that are
/// corrupt below the head (as opposed to empty: never written, or cleared).
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub entries: Vec<(Header, Vec<u8>)>,
    pub corrupt_ops: Vec<u64>,
    /// The headers of corrupt ops whose copy names them and nothing in the
    /// slot contradicts it, ascending: the replica may keep them in its
    /// log, bodiless, so a damaged op does not cut its log short below
    /// valid prepares (disk-rot seed 115705, replica 2).
    pub corrupt_headers: Vec<Header>,
}

impl<I: Io> PrepareJournal<I> {
    /// Write a prepare into its slot, replacing whatever the slot held for
    /// the same op. Not durable until `sync`.
    pub async fn write_prepare(&mut self, header: &Header, body: &[u8]) -> Result<(), JournalError> {
        self.write_prepares(&[(header, body)]).await
    }

    /// Write prepares of ascending, distinct ops into their slots, each run
    /// of adjacent slots with one write (see `prepare_runs`): group commit
    /// writes what the replica asked for in one turn this way. Not durable
    /// until `sync`. Every prepare is checked before anything is written;
    /// a failed write leaves the prepares of the runs before it indexed,
    /// its own and later ones not (no phantom op), and the caller must stop
    /// (fail-stop), as after any failed storage call.
    pub async fn write_prepares(&mut self, prepares: &[(&Header, &[u8])]) -> Result<(), JournalError> {
        self.check_writable()?;
        for (header, body) in prepares {
            self.check_prepare(header, body)?;
        }
        self.write_checked_prepares(prepares).await
    }

    /// `write_prepares` of messages: a body verified when its message was
    /// built or decoded (`Message::valid_body`) is not hashed again; the
    /// rest is checked as there.
    pub async fn write_messages(&mut self, messages: &[&Message]) -> Result<(), JournalError> {
        self.check_writable()?;
        for message in messages {
            let valid_body = || match message.valid_body() {
                true => Ok(()),
                false => message.header.valid_body(&message.body),
            };
            self.check_prepare_with(&message.header, valid_body)?;
        }
        let prepares: Vec<(&Header, &[u8])> = messages.iter().map(|m| (&m.header, &m.body[..])).collect();
        self.write_checked_prepares(&prepares).await
    }

    /// The writes of `write_prepares`, every prepare's checksums, group and
    /// size checked.
    async fn write_checked_prepares(&mut self, prepares: &[(&Header, &[u8])]) -> Result<(), JournalError> {
        for (index, (header, _)) in prepares.iter().enumerate() {
            let op = header.op;
            if op <= self.snapshot_op || op > self.snapshot_op + self.config.slot_count {
                let slot = op % self.config.slot_count;
                return Err(JournalError::SlotCollision { op, slot, live_op: self.snapshot_op });
            }
            assert!(index == 0 || prepares[index - 1].0.op < op, "write_prepares takes ascending, distinct ops");
        }
        let headers: Vec<&Header> = prepares.iter().map(|(header, _)| *header).collect();
        self.unvouch_copies(&headers).await?;
        let carried = prepares.first().map_or_else(Vec::new, |(header, _)| self.copies_to_carry(header.op));
        let runs = super::prepare_runs(&self.config, &carried, self.file_op_written_max, prepares.iter().copied());
        let mut written = 0;
        for run in runs {
            let result = self.write_run(&run).await;
            // The index changes only after the write succeeded: no phantom op.
            result.map_err(io_error("write prepare"))?;
            if written == 0 {
                self.note_carried(&carried);
            }
            for header in &headers[written..written + run.count] {
                self.index_written(header);
            }
            written += run.count;
        }
        debug_assert_eq!(written, prepares.len());
        Ok(())
    }

    /// `header` was written to its slot: index it, and mark the ops between
    /// the old head and it that the journal does not hold as missing.
    fn index_written(&mut self, header: &Header) {
        let op = header.op;
        let head_before = self.op_head.unwrap_or(self.snapshot_op);
        for gap in head_before + 1..op {
            if !self.headers.contains_key(&gap) {
                self.missing.insert(gap);
            }
        }
        self.headers.insert(op, *header);
        self.note_written(op);
        self.missing.remove(&op);
        self.op_head = Some(head_before.max(op));
        debug_assert!(self.headers.len() as u64 <= self.config.slot_count);
    }

    /// Read every slot of the live window. `corrupt_ops` are the ops at or
    /// below the head that were written and then damaged (the header ring
    /// names them) or whose slot is invalid: the replica must not vouch for
    /// them and repairs them from peers.
    pub async fn scan(&self) -> Result<Scan, JournalError> {
        self.scan_ops(self.snapshot_op + 1, self.snapshot_op + self.config.slot_count).await
    }

    /// `scan`, of the slots of ops `first..=last` of the live window only.
    async fn scan_ops(&self, first: u64, last: u64) -> Result<Scan, JournalError> {
        let mut scan = Scan::default();
        let head = self.op_head.unwrap_or(self.snapshot_op);
        for state in self.slot_states_of(first, last).await {
            match state {
                SlotState::Empty => {}
                SlotState::Valid { header, .. } => {
                    let offset = self.config.slot_offset(header.op);
                    let (result, bytes) =
                        crate::io::read_exact_retrying(&*self.file, vec![0; header.size as usize], offset).await;
                    let body = &bytes[crate::header::HEADER_SIZE_BYTES..];
                    if result.is_err() || header.valid_body(body).is_err() {
                        // Read fine a moment ago: a read error or fresh rot
                        // makes it faulty, not a failed scan.
                        if header.op <= head {
                            scan.corrupt_ops.push(header.op);
                        }
                        continue;
                    }
                    scan.entries.push((header, body.to_vec()));
                }
                SlotState::Faulty { op, named } => {
                    if op <= head {
                        scan.corrupt_ops.push(op);
                        scan.corrupt_headers.extend(named);
                    }
                }
                SlotState::Torn { op } | SlotState::Unknown { op } | SlotState::EmptyCopyDamaged { op } => {
                    if op <= head {
                        scan.corrupt_ops.push(op);
                    }
                }
            }
        }
        scan.entries.sort_by_key(|(header, _)| header.op);
        scan.corrupt_ops.sort_unstable();
        scan.corrupt_headers.sort_by_key(|header| header.op);
        debug_assert!(scan.corrupt_headers.iter().all(|header| scan.corrupt_ops.contains(&header.op)));
        Ok(scan)
    }

    /// `drain`, also past the head: after a state transfer the checkpoint
    /// may be ahead of every op this journal holds, and then nothing is live.
    pub async fn drain_to(&mut self, through_op: u64, anchor_checksum: u128) -> Result<(), JournalError> {
        self.drain_to_inner(through_op, anchor_checksum, false).await.map(|_| ())
    }

    /// `drain_to`, first half: the compacted file written into the spare,
    /// which is the journal's file from now on (`stage_drain_keeping_faulty`).
    /// Only once the checkpoint is durable; the node runs the returned
    /// install beside its appends and hands its outcome to `end_drain`.
    /// `None`: nothing to compact.
    pub async fn stage_drain_to(
        &mut self,
        through_op: u64,
        anchor_checksum: u128,
    ) -> Result<Option<StagedDrain<I>>, JournalError> {
        self.stage_drain_to_inner(through_op, anchor_checksum, false).await.map(|(staged, _)| staged)
    }

    /// At open, a checkpoint may be durable while the journal was never
    /// drained to it (the drain failed on a corrupt live prepare and the
    /// replica stopped). Drain now, leaving the corrupt live prepares out,
    /// and return them: the caller reports them as faulty, so the replica
    /// restarts `Recovering` and repairs them from peers. Without this
    /// the replica wrote into slots the journal still counted live and
    /// stopped again, forever (disk-rot seed 10404).
    pub async fn settle_to_checkpoint(
        &mut self,
        through_op: u64,
        anchor_checksum: u128,
    ) -> Result<Vec<u64>, JournalError> {
        if through_op <= self.snapshot_op {
            return Ok(Vec::new());
        }
        self.drain_to_inner(through_op, anchor_checksum, true).await
    }

    async fn drain_to_inner(
        &mut self,
        through_op: u64,
        anchor_checksum: u128,
        skip_corrupt: bool,
    ) -> Result<Vec<u64>, JournalError> {
        let (staged, corrupt_live) = self.stage_drain_to_inner(through_op, anchor_checksum, skip_corrupt).await?;
        if let Some(staged) = staged {
            let installed = staged.install().await;
            let released = self.end_drain(installed)?;
            debug_assert!(released.is_empty(), "nothing is flushed between the halves of a drain");
        }
        Ok(corrupt_live)
    }

    async fn stage_drain_to_inner(
        &mut self,
        through_op: u64,
        anchor_checksum: u128,
        skip_corrupt: bool,
    ) -> Result<(Option<StagedDrain<I>>, Vec<u64>), JournalError> {
        // `drain` carries what the index holds, and recovery keeps a prepare
        // that does not chain onto its on-disk neighbour out of the index
        // (after a view change the neighbour may be a stale prepare the
        // replica already replaced in memory). The replica vouches for its
        // log by its own chain, so carry every valid prepare in the window.
        // Only ops past `through_op` are carried (and `through_op` itself
        // anchors the compacted file's snapshot checksum), and none is above
        // the head (recovery puts the head at the highest op the disk names,
        // writes raise it, `truncate_after` clears what it drops): reading
        // those slots, not the whole window, keeps a checkpoint's cost to the
        // live pipeline (the whole window was ~2 reads per slot: ~2,000
        // io_uring reads and ~10 ms per checkpoint of a 1024-slot journal).
        let scan = self.scan_ops(through_op, self.op_head.unwrap_or(self.snapshot_op)).await?;
        // A live prepare that reads back corrupt fails the drain (issue 9,
        // finding 2): left out, its slot would read as never written after a
        // restart, not as faulty, and the log would be cut below it while
        // the replica kept vouching for it. The old file stays as it is, so
        // the restart finds the damage and the cluster repairs it.
        // An op the journal already counts missing is no news: recovery
        // found it damaged, the replica does not vouch for it and repairs
        // it from peers, and the compacted file keeps its evidence like a
        // settle's. Failing the drain on it stopped the replica at every
        // checkpoint below it until the repair won the race (disk-rot
        // seeds 77896 and 79424: three stops in a row after the heal).
        let corrupt_live: Vec<u64> = scan.corrupt_ops.iter().copied().filter(|&op| op > through_op).collect();
        let newly_corrupt = corrupt_live.iter().find(|op| !self.missing.contains(op));
        if let (Some(&op), false) = (newly_corrupt, skip_corrupt) {
            return Err(JournalError::Corrupt { op });
        }
        for (header, _) in scan.entries {
            if header.op > self.snapshot_op {
                self.missing.remove(&header.op);
                self.headers.insert(header.op, header);
            }
        }
        // What the compacted file must still say about each left-out op:
        // the header its ring copy names, if it names one.
        let mut faulty = BTreeMap::new();
        for &op in &corrupt_live {
            self.headers.remove(&op);
            faulty.insert(op, self.ring_copy_naming(op).await);
        }
        if self.op_head.is_none_or(|head| head < through_op) {
            // Nothing at or below through_op needs carrying; extend the head
            // so that drain writes an empty live window after it.
            self.op_head = Some(through_op.max(self.snapshot_op));
            if through_op <= self.snapshot_op {
                return Ok((None, corrupt_live));
            }
        }
        let staged = self.stage_drain_keeping_faulty(through_op, Some(anchor_checksum), &faulty).await?;
        Ok((staged, corrupt_live))
    }

    /// The header a copy of `op`'s slot holds, if it is one of `op`: the
    /// ring's, else a carried one (the precedence recovery uses).
    async fn ring_copy_naming(&self, op: u64) -> Option<Header> {
        for offset in self.config.header_copy_offsets(op) {
            let (result, bytes) =
                crate::io::read_exact_retrying(&*self.file, vec![0; crate::header::HEADER_SIZE_BYTES], offset).await;
            let copy = result.ok().and_then(|()| self.decode_slot_header(op % self.config.slot_count, &bytes));
            if let Some(copy) = copy.filter(|header| header.op == op) {
                return Some(copy);
            }
        }
        None
    }
}
