//! The promises checker: what a replica's message promises must already be
//! durable on its disk at the instant the message is sent.
//!
//! A vote (start_view_change, do_view_change, start_view) promises the
//! sender will never again act in an older view; a do_view_change also
//! promises its log as of `log_view`, and a start_view that its log is the
//! view's canonical one (durable `log_view` = the view); a prepare_ok
//! promises the prepare it names survives a crash. If the promise lives only in memory, a crash right
//! after the send breaks it, and the peers that counted on it may lose
//! committed ops. So the check reads the simulated disk's *durable* bytes
//! (what would survive a power loss now), never the replica's memory.
//!
//! Owns the decoding of durable superblock, journal slot and checkpoint bytes
//! for that question. Pure: the cluster hands in bytes, this answers.

use shoal_vsr::checkpoint;
use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, Header};
use shoal_vsr::journal::{FILE_HEADER_SIZE_BYTES, JournalConfig, decode_file_snapshot_op};
use shoal_vsr::superblock;

/// What one outgoing message promises is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promise {
    /// start_view_change of `view`: the durable view is at least it.
    View { command: Command, view: u64 },
    /// do_view_change of `view` claiming its log is complete as of
    /// `log_view`; start_view of `view` (its log is that view's).
    ViewAndLogView { view: u64, log_view: u64 },
    /// prepare_ok of `op` whose prepare has checksum `checksum`.
    Prepare { op: u64, checksum: u128 },
}

impl Promise {
    /// The promise `header` makes, if its command makes one.
    pub fn of(header: &Header) -> Option<Promise> {
        match header.command {
            Command::StartViewChange => Some(Promise::View { command: header.command, view: header.view }),
            // The new primary's log is the view's canonical log: it must be
            // durable as the log of that view before any backup installs it.
            Command::StartView => Some(Promise::ViewAndLogView { view: header.view, log_view: header.view }),
            Command::DoViewChange => Some(Promise::ViewAndLogView { view: header.view, log_view: header.context }),
            // A prepare_ok carries the prepare's checksum in `parent`.
            Command::PrepareOk => Some(Promise::Prepare { op: header.op, checksum: header.parent }),
            _ => None,
        }
    }

    pub fn needs_superblock(&self) -> bool {
        !matches!(self, Promise::Prepare { .. })
    }
}

/// A view promise against the durable superblock file bytes. `Err` says
/// what is missing.
pub fn check_view(promise: Promise, superblock_bytes: Option<&[u8]>) -> Result<(), String> {
    let (view, log_view) = match promise {
        Promise::View { view, .. } => (view, None),
        Promise::ViewAndLogView { view, log_view } => (view, Some(log_view)),
        Promise::Prepare { .. } => unreachable!("a prepare promise is checked against the journal"),
    };
    let state = match superblock_bytes.map(superblock::decode_file) {
        None => return Err("no durable superblock file".to_string()),
        Some(Err(error)) => return Err(format!("durable superblock unreadable: {error}")),
        Some(Ok(None)) => return Err("no valid durable superblock copy".to_string()),
        Some(Ok(Some((_, state)))) => state,
    };
    if state.view < view {
        return Err(format!("durable superblock view is {}, the message promises view {view}", state.view));
    }
    if let Some(log_view) = log_view
        && state.log_view < log_view
    {
        return Err(format!(
            "durable superblock log_view is {}, the message claims log_view {log_view}",
            state.log_view
        ));
    }
    Ok(())
}

/// A prepare_ok promise: the durable journal holds a valid prepare `op`
/// with `checksum`, or `op` is at or below the durable checkpoint (or the
/// journal's durable `snapshot_op`, which never passes the checkpoint).
/// `journal` reads durable journal bytes `(offset, len)` (`None`: no file),
/// so a check copies one slot, not the whole file.
pub fn check_prepare(
    op: u64,
    checksum: u128,
    config: &JournalConfig,
    journal: impl Fn(u64, usize) -> Option<Vec<u8>>,
    checkpoint_bytes: impl FnOnce() -> Option<Vec<u8>>,
) -> Result<(), String> {
    let file_header = journal(0, FILE_HEADER_SIZE_BYTES as usize).unwrap_or_default();
    let snapshot_op = decode_file_snapshot_op(&file_header).unwrap_or(0);
    if op <= snapshot_op {
        return Ok(());
    }
    let found = durable_slot(&journal, config, op);
    if found.is_some_and(|header| header.op == op && header.checksum == checksum) {
        return Ok(());
    }
    let checkpoint_op = checkpoint_bytes().and_then(|bytes| checkpoint::decode(&bytes).ok()).map_or(0, |c| c.anchor.op);
    if op <= checkpoint_op {
        return Ok(());
    }
    let held = match found {
        Some(header) => format!("op {} with checksum {:#x}", header.op, header.checksum),
        None => "no valid prepare".to_string(),
    };
    Err(format!(
        "prepare_ok for op {op} (checksum {checksum:#x}) but the durable journal slot holds {held} \
         (durable snapshot_op {snapshot_op}, checkpoint op {checkpoint_op})"
    ))
}

/// The valid prepare header in `op`'s slot of the durable journal, body
/// checked, if there is one.
fn durable_slot(journal: &impl Fn(u64, usize) -> Option<Vec<u8>>, config: &JournalConfig, op: u64) -> Option<Header> {
    let offset = config.slot_offset(op);
    let header = Header::decode(&journal(offset, HEADER_SIZE_BYTES)?).ok()?;
    if header.command != Command::Prepare {
        return None;
    }
    let body = journal(offset + HEADER_SIZE_BYTES as u64, header.body_size_bytes())?;
    header.valid_body(&body).ok()?;
    Some(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_vsr::superblock::SUPERBLOCK_COPY_SIZE_BYTES;

    #[test]
    fn dvc_promises_view_and_log_view() {
        let mut header = Header::new(Command::DoViewChange, 1);
        header.view = 5;
        header.context = 4;
        assert_eq!(Promise::of(&header), Some(Promise::ViewAndLogView { view: 5, log_view: 4 }));
        assert_eq!(Promise::of(&Header::new(Command::Request, 1)), None);
        let mut start_view = Header::new(Command::StartView, 1);
        start_view.view = 6;
        assert_eq!(Promise::of(&start_view), Some(Promise::ViewAndLogView { view: 6, log_view: 6 }));
    }

    #[test]
    fn missing_or_short_superblock_breaks_a_view_promise() {
        let promise = Promise::View { command: Command::StartViewChange, view: 1 };
        assert!(check_view(promise, None).is_err());
        assert!(check_view(promise, Some(&vec![0; 2 * SUPERBLOCK_COPY_SIZE_BYTES as usize])).is_err());
    }

    #[test]
    fn prepare_ok_without_a_durable_slot_is_broken_unless_checkpointed() {
        let config = JournalConfig { slot_count: 8, message_size_max_bytes: 1024, cluster: 1, namespace: 2 };
        let journal = vec![0u8; config.file_size_bytes() as usize];
        let zeroed = |offset: u64, len: usize| Some(journal[offset as usize..offset as usize + len].to_vec());
        assert!(check_prepare(3, 7, &config, zeroed, || None).is_err());
        assert!(check_prepare(3, 7, &config, |_, _| None, || None).is_err());
    }
}
