//! The promises checker: what a replica's message promises must already be
//! durable on its disk at the instant the message is sent.
//!
//! A vote (start_view_change, do_view_change, start_view) promises the
//! sender will never again act in an older view; a do_view_change also
//! promises its log as of `log_view` and that it nacks nothing at or below
//! its nack floor, and a start_view that its log is the view's canonical
//! one (durable `log_view` = the view); a prepare_ok promises the prepare
//! it names survives a crash *and is recovered as written, not torn*: its
//! slot and its header ring copy are both durable (the copy is what tells
//! recovery that damage to an acknowledged prepare is rot, not a torn
//! write). If the promise lives only in memory, a crash right after the
//! send breaks it, and the peers that counted on it may lose committed
//! ops. So the check reads the simulated disk's *durable* bytes (what would
//! survive a power loss now), never the replica's memory.
//!
//! Owns the decoding of durable superblock, journal slot, header ring and
//! checkpoint bytes for that question. Pure: the cluster hands in bytes,
//! this answers.

use shoal_vsr::checkpoint;
use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, Header};
use shoal_vsr::journal::{FILE_HEADER_SIZE_BYTES, JournalConfig, decode_file_snapshot_op};
use shoal_vsr::superblock;

/// In the reason `check` gives when a committed op below an ok's prefix is
/// on no durable slot, copy or checkpoint (see `check_prefix`): the caller
/// forgives it where a fault injected into that journal this life explains
/// it (recovery reads such an op faulty, not absent).
pub const COMMITTED_OP_NOT_DURABLE: &str = "takes for durable the sender's commit";

/// What one outgoing message promises is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promise {
    /// start_view_change of `view`: the durable view is at least it.
    View { command: Command, view: u64 },
    /// start_view of `view` (its log is that view's canonical log).
    ViewAndLogView { view: u64, log_view: u64 },
    /// do_view_change of `view` claiming its log is complete as of
    /// `log_view`, nacking nothing at or below `nack_floor` (0 when it
    /// states no nacks).
    DoViewChange { view: u64, log_view: u64, nack_floor: u64 },
    /// prepare_ok of `op` whose prepare has checksum `checksum`, sent with
    /// every op from `prefix_from` (the sender's commit point + 1) up to it
    /// held: those must be durable with their copies too (a backup
    /// acknowledges the whole prefix, and the journal's gap rule relies on
    /// it: `PrepareJournal::open_above`).
    Prepare { op: u64, checksum: u128, prefix_from: u64 },
}

impl Promise {
    /// The promise `header` makes, if its command makes one.
    pub fn of(header: &Header) -> Option<Promise> {
        match header.command {
            Command::StartViewChange => Some(Promise::View { command: header.command, view: header.view }),
            // The new primary's log is the view's canonical log: it must be
            // durable as the log of that view before any backup installs it.
            Command::StartView => Some(Promise::ViewAndLogView { view: header.view, log_view: header.view }),
            Command::DoViewChange => Some(Promise::DoViewChange {
                view: header.view,
                log_view: header.context,
                nack_floor: header.do_view_change_nacks().map_or(0, |nacks| nacks.floor),
            }),
            // A prepare_ok carries the prepare's checksum in `parent`.
            Command::PrepareOk => {
                Some(Promise::Prepare { op: header.op, checksum: header.parent, prefix_from: header.commit + 1 })
            }
            _ => None,
        }
    }

    pub fn needs_superblock(&self) -> bool {
        !matches!(self, Promise::Prepare { .. })
    }

    /// The journal byte ranges `(offset, len)` the promise rests on: a
    /// prepare's slot and its ring copy. A misdirected write meant for or
    /// landing on one of them is the disk's lie, not the sender's.
    pub fn journal_ranges(&self, config: &JournalConfig) -> Vec<(u64, u64)> {
        match *self {
            Promise::Prepare { op, prefix_from, .. } => prefix_ops(op, prefix_from, config)
                .flat_map(|op| {
                    std::iter::once((config.slot_offset(op), config.slot_size_bytes()))
                        .chain(config.header_copy_offsets(op).map(|offset| (offset, HEADER_SIZE_BYTES as u64)))
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The durable bytes of one group's files, as the checker reads them.
/// `journal` reads `(offset, len)` of the durable journal (`None`: no
/// file), so a check copies one slot, not the whole file.
pub struct DurableFiles<J, S, C>
where
    J: Fn(u64, usize) -> Option<Vec<u8>>,
    S: FnOnce() -> Option<Vec<u8>>,
    C: FnOnce() -> Option<Vec<u8>>,
{
    pub journal: J,
    pub superblock: S,
    pub checkpoint: C,
}

impl<J, S, C> std::fmt::Debug for DurableFiles<J, S, C>
where
    J: Fn(u64, usize) -> Option<Vec<u8>>,
    S: FnOnce() -> Option<Vec<u8>>,
    C: FnOnce() -> Option<Vec<u8>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableFiles").finish_non_exhaustive()
    }
}

/// Is `promise` durable in `files`? `Err` says what is missing.
pub fn check<J, S, C>(promise: Promise, config: &JournalConfig, files: DurableFiles<J, S, C>) -> Result<(), String>
where
    J: Fn(u64, usize) -> Option<Vec<u8>>,
    S: FnOnce() -> Option<Vec<u8>>,
    C: FnOnce() -> Option<Vec<u8>>,
{
    match promise {
        Promise::Prepare { op, checksum, prefix_from } => {
            // Every prepare_ok is checked here: the checkpoint file is read
            // only when a check needs it, and at most once.
            let mut checkpoint_file = Some(files.checkpoint);
            let mut checkpoint_op_read = None;
            let mut checkpoint_op = || {
                *checkpoint_op_read.get_or_insert_with(|| {
                    let bytes = checkpoint_file.take().and_then(|read| read());
                    bytes.and_then(|bytes| checkpoint::decode_file(&bytes).ok()).map_or(0, |c| c.anchor.op)
                })
            };
            check_prepare(op, checksum, config, &files.journal, &mut checkpoint_op)?;
            check_prefix(op, prefix_from, config, &files.journal, checkpoint_op)
        }
        Promise::DoViewChange { view, log_view, nack_floor } => {
            let superblock_bytes = (files.superblock)();
            let state = check_view(Promise::ViewAndLogView { view, log_view }, superblock_bytes.as_deref())?;
            check_nack_floor(nack_floor, state.nack_floor, config, &files.journal, files.checkpoint)
        }
        _ => check_view(promise, (files.superblock)().as_deref()).map(|_| ()),
    }
}

/// A view promise against the durable superblock file bytes; the durable
/// state when it holds. `Err` says what is missing.
pub fn check_view(promise: Promise, superblock_bytes: Option<&[u8]>) -> Result<superblock::SuperblockState, String> {
    let (view, log_view) = match promise {
        Promise::View { view, .. } => (view, None),
        Promise::ViewAndLogView { view, log_view } | Promise::DoViewChange { view, log_view, .. } => {
            (view, Some(log_view))
        }
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
    Ok(state)
}

/// A do_view_change's nack floor: "I nack nothing at or below it, I may have
/// acknowledged something there that I no longer hold". A crash must not
/// lower it, or the next do_view_change could nack an op this replica
/// acknowledged (and a committed op be truncated by nacks). It is the
/// durable superblock's floor, or the op of a prepare the replica kept aside
/// at restart (`Replica::do_view_change_nacks`), which a restart finds
/// again in the durable journal, or at most the durable checkpoint (ops it
/// covers are committed and held, never nacked).
fn check_nack_floor(
    nack_floor: u64,
    durable_floor: u64,
    config: &JournalConfig,
    journal: &impl Fn(u64, usize) -> Option<Vec<u8>>,
    checkpoint_bytes: impl FnOnce() -> Option<Vec<u8>>,
) -> Result<(), String> {
    if nack_floor <= durable_floor {
        return Ok(());
    }
    if durable_slot(journal, config, nack_floor).is_some_and(|header| header.op == nack_floor) {
        return Ok(());
    }
    if nack_floor <= durable_checkpoint_op(journal, checkpoint_bytes) {
        return Ok(());
    }
    Err(format!(
        "do_view_change states nack floor {nack_floor}, but the durable superblock's is {durable_floor}, no \
         durable prepare sits at op {nack_floor} and no durable checkpoint covers it"
    ))
}

/// The highest op the durable checkpoint or the durable journal's
/// `snapshot_op` (which never passes it) covers.
fn durable_checkpoint_op(
    journal: &impl Fn(u64, usize) -> Option<Vec<u8>>,
    checkpoint_bytes: impl FnOnce() -> Option<Vec<u8>>,
) -> u64 {
    let file_header = journal(0, FILE_HEADER_SIZE_BYTES as usize).unwrap_or_default();
    let snapshot_op = decode_file_snapshot_op(&file_header).unwrap_or(0);
    let checkpoint_op =
        checkpoint_bytes().and_then(|bytes| checkpoint::decode_file(&bytes).ok()).map_or(0, |c| c.anchor.op);
    snapshot_op.max(checkpoint_op)
}

/// A prepare_ok promise: the durable journal holds a valid prepare `op`
/// with `checksum` and the durable header ring holds its copy (else a later
/// rot of the slot would read back as a torn write and erase the promised
/// op), or `op` is at or below the durable checkpoint (or the journal's
/// durable `snapshot_op`, which never passes the checkpoint). `journal`
/// reads durable journal bytes `(offset, len)` (`None`: no file), so a
/// check copies one slot, not the whole file.
pub fn check_prepare(
    op: u64,
    checksum: u128,
    config: &JournalConfig,
    journal: impl Fn(u64, usize) -> Option<Vec<u8>>,
    checkpoint_op: impl FnOnce() -> u64,
) -> Result<(), String> {
    let file_header = journal(0, FILE_HEADER_SIZE_BYTES as usize).unwrap_or_default();
    let snapshot_op = decode_file_snapshot_op(&file_header).unwrap_or(0);
    if op <= snapshot_op {
        return Ok(());
    }
    let found = durable_slot(&journal, config, op);
    let slot_holds = found.is_some_and(|header| header.op == op && header.checksum == checksum);
    let copy = durable_copy(&journal, config, op);
    let copy_holds = copy.is_some_and(|header| header.op == op && header.checksum == checksum);
    if slot_holds && copy_holds {
        return Ok(());
    }
    let checkpoint_op = checkpoint_op();
    if op <= checkpoint_op {
        return Ok(());
    }
    let describe = |header: Option<Header>| match header {
        Some(header) => format!("op {} with checksum {:#x}", header.op, header.checksum),
        None => "no valid prepare header".to_string(),
    };
    let what = if slot_holds { "header ring copy" } else { "journal slot" };
    let held = if slot_holds { describe(copy) } else { describe(found) };
    Err(format!(
        "prepare_ok for op {op} (checksum {checksum:#x}) but the durable {what} holds {held} \
         (durable snapshot_op {snapshot_op}, checkpoint op {checkpoint_op})"
    ))
}

/// The ops of a prepare_ok's prefix, `op` last (always in it: an ok of an
/// op at or below the sender's commit point, telling a new primary it is
/// committed, has no prefix): at most a journal's worth (older ones are
/// checkpointed, or the replica could not hold them).
fn prefix_ops(op: u64, prefix_from: u64, config: &JournalConfig) -> impl Iterator<Item = u64> {
    prefix_from.min(op).max(op.saturating_sub(config.slot_count - 1))..=op
}

/// The prefix a prepare_ok promises below its own op: each op in it is
/// durable in its slot with a copy that names the same prepare (any
/// version: the replica's log may have moved on since), or checkpointed.
/// A prefix op with a write still in flight, acknowledged past, is what the
/// journal's gap rule could cut off after a crash. Below the prefix, the
/// sender's committed ops are durable the same way: an ok above a checkpoint
/// restored from a peer and not yet durable promised ops no disk of the
/// sender held (disk-rot 224701, session 16, seen only as Agreement 2 s
/// later until this check).
fn check_prefix(
    op: u64,
    prefix_from: u64,
    config: &JournalConfig,
    journal: &impl Fn(u64, usize) -> Option<Vec<u8>>,
    mut checkpoint_op: impl FnMut() -> u64,
) -> Result<(), String> {
    // What the durable snapshot and checkpoint cover, read only for an op
    // that is not durable with its copy.
    let mut covered_read = None;
    for below in prefix_ops(op, prefix_from, config).filter(|&below| below < op) {
        let slot = durable_slot(journal, config, below).filter(|header| header.op == below);
        let named = slot.zip(durable_copy(journal, config, below)).is_some_and(|(slot, copy)| slot == copy);
        if named {
            continue;
        }
        let covered = *covered_read.get_or_insert_with(|| {
            let file_header = journal(0, FILE_HEADER_SIZE_BYTES as usize).unwrap_or_default();
            decode_file_snapshot_op(&file_header).unwrap_or(0).max(checkpoint_op())
        });
        if below > covered {
            return Err(format!(
                "prepare_ok for op {op} promises every op from {prefix_from}, but op {below} is not durable with its \
                 copy (slot: {}, covered through {covered})",
                slot.map_or("no valid prepare".to_string(), |header| format!("checksum {:#x}", header.checksum))
            ));
        }
    }
    if prefix_from > op {
        // An ok of an op at or below the sender's commit point: no prefix.
        return Ok(());
    }
    let covered = match covered_read {
        Some(covered) => covered,
        None => {
            let file_header = journal(0, FILE_HEADER_SIZE_BYTES as usize).unwrap_or_default();
            decode_file_snapshot_op(&file_header).unwrap_or(0).max(checkpoint_op())
        }
    };
    let committed = (covered + 1).max(op.saturating_sub(config.slot_count - 1))..prefix_from;
    if let Some(below) = committed.into_iter().find(|&below| !durably_named(journal, config, below)) {
        return Err(format!(
            "prepare_ok for op {op} {COMMITTED_OP_NOT_DURABLE} through op {}, but no durable slot or copy names op \
             {below}, and no checkpoint covers it (covered through {covered})",
            prefix_from - 1
        ));
    }
    Ok(())
}

/// A durable slot holds a valid prepare of `op`, or a durable copy names
/// it. One of the two is enough for a committed op: the simulator rots
/// written slots and copies (the journal recovers either as faulty, never
/// as absent), and a committed op was written long before the ok.
fn durably_named(journal: &impl Fn(u64, usize) -> Option<Vec<u8>>, config: &JournalConfig, op: u64) -> bool {
    durable_slot(journal, config, op).is_some_and(|header| header.op == op)
        || durable_copy(journal, config, op).is_some()
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

/// The valid prepare header of `op` in a durable copy of `op`'s slot: the
/// header ring's, else one a later prepare write carried (the precedence
/// recovery uses: `JournalConfig::header_copy_offsets` lists the ring first).
fn durable_copy(journal: &impl Fn(u64, usize) -> Option<Vec<u8>>, config: &JournalConfig, op: u64) -> Option<Header> {
    config.header_copy_offsets(op).find_map(|offset| {
        let header = Header::decode(&journal(offset, HEADER_SIZE_BYTES)?).ok()?;
        (header.command == Command::Prepare && header.op == op).then_some(header)
    })
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
        assert_eq!(Promise::of(&header), Some(Promise::DoViewChange { view: 5, log_view: 4, nack_floor: 0 }));
        header.set_do_view_change_nacks(shoal_vsr::header::DoViewChangeNacks { floor: 3, present: 0 });
        assert_eq!(Promise::of(&header), Some(Promise::DoViewChange { view: 5, log_view: 4, nack_floor: 3 }));
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
        assert!(check_prepare(3, 7, &config, zeroed, || 0).is_err());
        assert!(check_prepare(3, 7, &config, |_, _| None, || 0).is_err());
    }
}
