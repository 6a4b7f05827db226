//! The view-logs checker: a log a replica ships as the log of some view
//! never names, at a committed op, another prepare than the committed one.
//!
//! VSR's safety rests on it: once op k is committed in view w, the log of
//! every view from w on holds k's committed prepare (or none yet, on a
//! replica still repairing). A do_view_change of `log_view` L and a
//! start_view of view L claim to carry L's log, so each header they name
//! at an op committed in a view no newer than L must be the committed one.
//! An older log_view may legitimately hold another history there (a
//! deposed primary's uncommitted suffix), which the view change outranks.
//!
//! Agreement sees a wrong canonical log only if some replica ends up
//! committing it, or refuses it because it committed the op itself; this
//! check sees it the moment it leaves, on any replica, whether or not the
//! schedule then turns it into divergent commits (view-churn seed 588: a
//! restarted primary brought back stale prepares below a gap in its view
//! headers; the next primary had checkpointed past them, so Agreement saw
//! nothing).
//!
//! The view of a commit is taken from the committing replica's view as
//! last reported, which is never older than the view the op was committed
//! in (the node reports a view change before the commits of the same
//! step), so the check never claims more than the protocol promises.
//! Pure: the cluster feeds it, it answers.

use std::collections::BTreeMap;

use shoal_vsr::header::{Command, Header};
use shoal_vsr::replica::Committed;

#[derive(Debug, Default)]
pub struct ViewLogs {
    /// op → (committed checksum, the oldest view any replica committed it in).
    committed: BTreeMap<u64, (u128, u64)>,
    /// Each replica's view as last reported.
    views: BTreeMap<u8, u64>,
}

impl ViewLogs {
    pub fn on_view(&mut self, replica: u8, view: u64) {
        self.views.insert(replica, view);
    }

    /// `replica` committed `records` in its current view. A checksum that
    /// differs from an earlier commit is Agreement's to report; it is not
    /// recorded here.
    pub fn on_committed(&mut self, replica: u8, records: &[Committed]) {
        let view = self.views.get(&replica).copied().unwrap_or(0);
        for record in records {
            let entry = self.committed.entry(record.op).or_insert((record.checksum, view));
            if entry.0 == record.checksum {
                entry.1 = entry.1.min(view);
            }
        }
    }

    /// Check a do_view_change or start_view `header` carrying `headers`
    /// (its body). Other messages pass.
    pub fn check(&self, replica: u8, header: &Header, headers: &[Header]) -> Result<(), String> {
        let log_view = match header.command {
            Command::DoViewChange => header.context,
            Command::StartView => header.view,
            _ => return Ok(()),
        };
        for named in headers {
            let Some(&(checksum, view)) = self.committed.get(&named.op) else { continue };
            if view <= log_view && named.checksum != checksum {
                return Err(format!(
                    "replica {replica} sent {:?} (view {}) naming op {} with checksum {:#x} as the log of view \
                     {log_view}, but op {} was committed in view {view} with checksum {checksum:#x}",
                    header.command, header.view, named.op, named.checksum, named.op
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_vsr::header::Operation;

    fn committed(op: u64, checksum: u128) -> Committed {
        Committed {
            op,
            checksum,
            index: 0,
            operation: Operation::SendMessages,
            client: 1,
            request: op,
            applied: true,
            reply: Vec::new(),
            session: 1,
            evicted: None,
        }
    }

    fn prepare(op: u64, checksum: u128) -> Header {
        let mut header = Header::new(Command::Prepare, 1);
        header.op = op;
        header.checksum = checksum;
        header
    }

    fn dvc(view: u64, log_view: u64) -> Header {
        let mut header = Header::new(Command::DoViewChange, 1);
        header.view = view;
        header.context = log_view;
        header
    }

    #[test]
    fn a_log_of_a_view_at_or_after_the_commit_must_name_the_committed_prepare() {
        let mut logs = ViewLogs::default();
        logs.on_view(1, 1);
        logs.on_committed(1, &[committed(13, 0xAA)]);
        // A log of view 2 naming another prepare at 13: a violation.
        let error = logs.check(2, &dvc(3, 2), &[prepare(13, 0xBB)]).unwrap_err();
        assert!(error.contains("op 13"), "{error}");
        // The committed one, or none at 13: fine.
        assert!(logs.check(2, &dvc(3, 2), &[prepare(13, 0xAA), prepare(14, 0xCC)]).is_ok());
    }

    #[test]
    fn a_log_of_a_view_older_than_the_commit_may_hold_another_history() {
        let mut logs = ViewLogs::default();
        logs.on_view(1, 1);
        logs.on_committed(1, &[committed(13, 0xAA)]);
        // A deposed primary's view-0 log: outranked by the view change.
        assert!(logs.check(0, &dvc(2, 0), &[prepare(13, 0xBB)]).is_ok());
    }

    #[test]
    fn the_oldest_view_of_any_commit_counts() {
        let mut logs = ViewLogs::default();
        logs.on_view(1, 4);
        logs.on_committed(1, &[committed(13, 0xAA)]);
        logs.on_view(2, 1);
        logs.on_committed(2, &[committed(13, 0xAA)]);
        assert!(logs.check(3, &dvc(5, 2), &[prepare(13, 0xBB)]).is_err());
    }
}
