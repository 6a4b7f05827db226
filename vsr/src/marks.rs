//! Coverage marks: named counters at rare protocol paths (TigerBeetle's
//! `marks`, FoundationDB's `CODE_PROBE`), so a sweep can say which rare
//! paths its seeds reached and CI can fail when a required one never is.
//!
//! Owns the per-thread tally and nothing else. A mark only counts: it never
//! changes what the code does, so marks cannot make two runs of one seed
//! differ. The tally is thread-local because one simulated run is one thread
//! from start to end; a front end drains it with `take` when the run ends
//! (and once before it starts, to drop what an earlier run on this thread
//! left behind, e.g. after a panic).

use std::cell::RefCell;
use std::collections::BTreeMap;

thread_local! {
    static HITS: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Count one pass through the rare path `name`.
pub fn hit(name: &'static str) {
    HITS.with(|hits| *hits.borrow_mut().entry(name).or_insert(0) += 1);
}

/// Every mark hit on this thread since the last `take`, and reset the tally.
pub fn take() -> BTreeMap<&'static str, u64> {
    HITS.with(|hits| std::mem::take(&mut *hits.borrow_mut()))
}

/// `mark!("name")`: count one pass through a rare path (see `marks::hit`).
#[macro_export]
macro_rules! mark {
    ($name:literal) => {
        $crate::marks::hit($name)
    };
}

/// Every mark the vsr crate places, by name: a front end lists these so a
/// mark that was never hit still shows up (with 0) and a typo in a required
/// mark is caught.
pub const MARKS: &[&str] = &[
    // Buggify's sites, each counted when it fires: the one list of them
    // (`crate::buggify::sites`).
    crate::buggify::AHEAD_NOT_KEPT,
    crate::buggify::CHECKPOINT_ANSWER_ONE_CHUNK,
    crate::buggify::CHECKPOINT_FINISHED_EARLY,
    crate::buggify::FILL_PART_DEFERRED,
    crate::buggify::FILL_PART_ONE_MESSAGE,
    crate::buggify::JOURNAL_COPIES_NOT_CARRIED,
    crate::buggify::PACK_OF_ONE,
    crate::buggify::READ_ANSWER_SHORT,
    crate::buggify::READ_UNAVAILABLE,
    crate::buggify::REQUEST_REFUSED_BUSY,
    crate::buggify::STATE_DATA_ANSWER_SHORT,
    CHECKPOINT_ANCHOR_COMMITTED_OWN_JOURNAL,
    CHECKPOINT_ASSEMBLY_RESTARTED,
    CHECKPOINT_BESIDE_APPENDS,
    CHECKPOINT_BESIDE_PARTITION_SYNC,
    CHECKPOINT_DEFERRED,
    CHECKPOINT_DURABLE_FORGOTTEN,
    CHECKPOINT_FINISHED_FOR_COPY,
    CHECKPOINT_FINISHED_FOR_JOURNAL,
    CHECKPOINT_FINISHED_FOR_PENDING,
    CHECKPOINT_FROM_NEWER_VIEW,
    CHECKPOINT_IN_BACKGROUND,
    CHECKPOINT_IN_CHUNKS,
    CHECKPOINT_LOST_REJOINED,
    CHECKPOINT_NEXT_PIECE_ASKED,
    CHECKPOINT_NOT_DURABLE_UNSERVED,
    CHECKPOINT_OTHER_SNAPSHOT,
    CHECKPOINT_WITH_GAP_UNSERVED,
    COMPACTION_BESIDE_APPENDS,
    COMPACTION_COVERED_STAGED,
    COMPACTION_FINISHED_FOR_STORAGE,
    COMPACTION_RING_COPY_REBUILT,
    COMPACTION_SPARE_CLEARED_BESIDE,
    COMPACTION_SPARE_CLEARED_IN_PLACE,
    COMPACTION_SPARE_SYNC_FAILED,
    COPY_UNREADABLE,
    CRASH_DURING_RESTART,
    CRASH_FSYNC_IN_FLIGHT,
    CRASH_WRITE_IN_FLIGHT,
    DRAIN_CORRUPT,
    FAULTY_HEADER_KEPT_IN_LOG,
    FAULTY_JOURNAL_VOTES,
    FILL_TICK_BUDGET_SPENT,
    FLUSH_FINISHED_FOR_STORAGE,
    FRAME_DURING_FSYNC,
    FSYNCS_OVERLAPPED,
    GROUP_FLUSHES_OVERLAPPED,
    JOURNAL_CARRIED_COPY_NAMES_FAULTY,
    JOURNAL_COPIES_CARRIED,
    JOURNAL_OPEN_DEVICE_DIFFERED,
    JOURNAL_PREPARES_JOINED,
    JOURNAL_SLOT_OVERWRITTEN_UNKNOWN,
    JOURNAL_UNCOPIED_TAIL_TORN,
    JOURNAL_UNKNOWN_BEYOND_GAP_TORN,
    JOURNAL_WINDOW_ACK_HELD,
    JOURNAL_WINDOW_TRUNCATION,
    JOURNAL_WINDOW_WRITE,
    JOURNAL_WRITE_PAGE_COMPLETED,
    JOURNAL_WRITE_POISONED_UNREADABLE_PAGE_REST,
    JOURNAL_WRITE_UNREADABLE_COPY_REBUILT,
    METADATA_REPLAYED_AT_START,
    PARTITION_SALVAGE_EMPTIED_SEGMENT,
    PARTITION_SALVAGE_REWROTE_UNPROMISED,
    PARTITION_SALVAGED,
    PARTITION_SCRUB_FOUND_DAMAGE,
    PARTITION_SCRUB_PASS_COMPLETED,
    PARTITION_SCRUB_PAUSED_FOR_FILL,
    PARTITION_SEALED_SEGMENT_REOPENED,
    PREPARE_AHEAD_ADOPTED,
    PREPARE_KEPT_AHEAD_OF_PARENT,
    PREPARE_OK_DURING_OWN_FSYNC,
    PREPARE_PACKED_REQUESTS,
    PREPARE_RESTAGED_DURING_FSYNC,
    PRIMARY_ABDICATED,
    READ_BEYOND_END,
    READ_EIO_RETRIED,
    READ_SERVED_BY_BACKUP,
    READ_UNAVAILABLE,
    REFUSE_CONFLICTING_LOG,
    REJOIN_ABOVE_CLUSTER_VIEW,
    REJOIN_COMPLETED,
    REJOIN_PROBE_ANSWERED,
    REPAIR_BY_CHECKSUM,
    ROT_ONLY_COPY,
    SESSION_EVICTED,
    SETTLE_SKIPPED_UNREADABLE_SECTOR,
    SHARD_FRAME_CROSSED_IN,
    SHARD_FRAME_CROSSED_OUT,
    SHARD_FRAME_WAITED_IN_INBOX,
    STALE_HEARTBEAT_IGNORED,
    START_VIEW_PREDATES_COMMITS,
    STATE_DATA_AFTER_FILL_IGNORED,
    STATE_DATA_ASKED_ON_ARRIVAL,
    STATE_TRANSFER,
    STORAGE_ERROR_DURING_RESTART,
    SUPERBLOCK_COPY_REPAIRED,
    SUPERBLOCK_LOST_REJOINED,
    UNCHAINED_PREPARE_ADOPTED,
    UNVOUCHED_PREPARE_KEPT_ASIDE,
    VIEW_CHANGE_NACK_TRUNCATION,
    VIEW_CHANGE_SKIPPED_REJOINING_PRIMARY,
    VIEW_CHANGE_TRUNCATE,
];

/// A replica reached its checkpoint interval while its state machine could
/// not yet hold every op (a partition gap awaiting peers): it kept them in
/// its journal instead.
pub const CHECKPOINT_DEFERRED: &str = "checkpoint_deferred";
/// The node reported a checkpoint durable that the replica had already
/// forgotten (`CHECKPOINTS_NOT_DURABLE_MAX` newer ones were handed over).
pub const CHECKPOINT_DURABLE_FORGOTTEN: &str = "checkpoint_durable_forgotten";
/// A peer asked for ops only a checkpoint not yet durable here covers: no
/// answer (it asks again, or another peer answers).
pub const CHECKPOINT_NOT_DURABLE_UNSERVED: &str = "checkpoint_not_durable_unserved";
/// A peer's checkpoint anchor (sent instead of a checkpoint its state's
/// gap kept it from serving) let this replica commit the ops its own
/// journal held up to it.
pub const CHECKPOINT_ANCHOR_COMMITTED_OWN_JOURNAL: &str = "checkpoint_anchor_committed_own_journal";
/// A peer asked for this replica's checkpoint while its state lacked
/// messages a state transfer left to fetch: it got the anchor only.
pub const CHECKPOINT_WITH_GAP_UNSERVED: &str = "checkpoint_with_gap_unserved";
pub const CHECKPOINT_FROM_NEWER_VIEW: &str = "checkpoint_from_newer_view";
/// Placed by the node (`GroupStorage::open_or_rejoin`): both checkpoint
/// copies (or the journal file) of a group were lost, its superblock was
/// not; the group was formatted again and rejoins keeping its promises.
pub const CHECKPOINT_LOST_REJOINED: &str = "checkpoint_lost_rejoined";
/// Placed by the simulator (its restart): a crash landed among a start's
/// own storage calls (settle, superblock repair, journal open, the
/// operator's format), and the process was started again later.
pub const CRASH_DURING_RESTART: &str = "crash_during_restart";
/// Placed by the simulator (`shoal_sim::io::block_on_io`, and
/// `Cluster::crash_for` for a flush's fsync running beside the node): a
/// process crashed while an fsync of its disk was in flight, so the
/// fsync's writes were left pending, lost or torn.
pub const CRASH_FSYNC_IN_FLIGHT: &str = "crash_fsync_in_flight";
/// Placed by the simulator: a process crashed while a write was in flight
/// (issued, not yet completed), which the crash then kept, lost or tore.
pub const CRASH_WRITE_IN_FLIGHT: &str = "crash_write_in_flight";
/// A prepare write carried ready header copies in the region before its
/// slot (journal module doc, "Carried copies"), instead of `flush`
/// writing them to the ring.
pub const JOURNAL_COPIES_CARRIED: &str = "journal_copies_carried";
/// One write covered several fresh prepares that fill their slots, zeros
/// over the carried-copies regions between them (journal `prepare_runs`).
pub const JOURNAL_PREPARES_JOINED: &str = "journal_prepares_joined";
/// A journal write went to a staged compaction's spare alone, in its window
/// (the journal module doc, "What it costs").
pub const JOURNAL_WINDOW_WRITE: &str = "journal_window_write";
/// A truncation in a compaction's window cleared both files (the spare and
/// the retired one the directory still names).
pub const JOURNAL_WINDOW_TRUNCATION: &str = "journal_window_truncation";
/// A journal write covering part of a page failed with EIO and was made a
/// whole-page write (the rest of the page read first).
pub const JOURNAL_WRITE_PAGE_COMPLETED: &str = "journal_write_page_completed";
/// The rest of such a page could not be read (a latent error in the page)
/// and went out as poison: the write that would have failed for good.
pub const JOURNAL_WRITE_POISONED_UNREADABLE_PAGE_REST: &str = "journal_write_poisoned_unreadable_page_rest";
/// Such a write put a durable op's header back over its unreadable copy
/// place (from the index) instead of poison.
pub const JOURNAL_WRITE_UNREADABLE_COPY_REBUILT: &str = "journal_write_unreadable_copy_rebuilt";
/// A flush in a compaction's window made prepares durable in the spare
/// alone: their acknowledgement waited for the install's exchange.
pub const JOURNAL_WINDOW_ACK_HELD: &str = "journal_window_ack_held";

/// A replica gave up the checkpoint assembly it held after
/// `CHECKPOINT_OTHER_SNAPSHOT_REFUSED_MAX` chunks of other snapshots of it.
pub const CHECKPOINT_ASSEMBLY_RESTARTED: &str = "checkpoint_assembly_restarted";
/// A replica assembling a checkpoint got a chunk of another replica's
/// snapshot of the same checkpoint (`Replica::assemble_checkpoint`).
pub const CHECKPOINT_OTHER_SNAPSHOT: &str = "checkpoint_other_snapshot";
/// Placed by the node (`Node::start_checkpoint`): a checkpoint's partition
/// log sync and file began to run beside the node.
pub const CHECKPOINT_IN_BACKGROUND: &str = "checkpoint_in_background";
/// A prepare was staged while its group's checkpoint ran beside the node.
pub const CHECKPOINT_BESIDE_APPENDS: &str = "checkpoint_beside_appends";
/// A prepare past the journal's window waited for the group's checkpoint
/// running beside the node to end (its compaction moves the window).
pub const CHECKPOINT_FINISHED_FOR_JOURNAL: &str = "checkpoint_finished_for_journal";
/// The prepares a group staged while its checkpoint ran beside the node
/// reached the bytes its compaction may copy (`CHECKPOINT_BESIDE_APPENDS_SLOTS_MAX`
/// full slots); the next waited for the checkpoint's end.
pub const CHECKPOINT_FINISHED_FOR_COPY: &str = "checkpoint_finished_for_copy";
/// A group's applied messages reached their bound in memory while its
/// checkpoint ran beside the node, which then ended it to write them.
pub const CHECKPOINT_FINISHED_FOR_PENDING: &str = "checkpoint_finished_for_pending";
/// Placed by the node: a prepare was staged while its group's journal
/// compaction was being installed beside the node (its writes mirrored to
/// the spare).
pub const COMPACTION_BESIDE_APPENDS: &str = "compaction_beside_appends";
/// Placed by the node: a compaction's end dropped prepares the group had
/// staged or left awaiting a copy for ops its checkpoint covers.
pub const COMPACTION_COVERED_STAGED: &str = "compaction_covered_staged";
/// Another storage action (a truncation, a superblock write, the next
/// checkpoint) waited for the group's compaction to be installed.
pub const COMPACTION_FINISHED_FOR_STORAGE: &str = "compaction_finished_for_storage";
/// A compaction's stage wrote the ring copy of a durable op into the spare
/// from the index: the journal's ring entry did not name it (unreadable, or
/// the op's copy is carried in a region).
pub const COMPACTION_RING_COPY_REBUILT: &str = "compaction_ring_copy_rebuilt";
/// An untrusted spare was cleared beside the node, in the checkpoint's
/// background work, so the compaction's stage cleared nothing of it
/// (`PrepareJournal::spare_clearer`).
pub const COMPACTION_SPARE_CLEARED_BESIDE: &str = "compaction_spare_cleared_beside";
/// A compaction cleared an untrusted spare (written by an earlier process,
/// or a compaction into it failed) in place, keeping its blocks allocated.
pub const COMPACTION_SPARE_CLEARED_IN_PLACE: &str = "compaction_spare_cleared_in_place";
/// A compaction's install refused to exchange: a mirrored fsync of its
/// spare had failed (its own later fsync proves nothing then).
pub const COMPACTION_SPARE_SYNC_FAILED: &str = "compaction_spare_sync_failed";

/// A state data answer reached a group whose gap was already filled (a
/// second frame, a duplicate, a slower peer): ignored, with no fsync and no
/// wait for the group's checkpoint (session 34).
pub const STATE_DATA_AFTER_FILL_IGNORED: &str = "state_data_after_fill_ignored";
/// A replica filling a partition gap asked the next batch as soon as the
/// one it asked for arrived, not at the next tick.
pub const STATE_DATA_ASKED_ON_ARRIVAL: &str = "state_data_asked_on_arrival";

/// A restart kept a faulty op's header (from its journal copy) in the log
/// without a body: the log's chain reaches the valid prepares above it.
pub const FAULTY_HEADER_KEPT_IN_LOG: &str = "faulty_header_kept_in_log";

/// A backup took a commit heartbeat from its primary that named an op below
/// one the primary had already shown (a late copy) and did not count it as
/// a sign of life.
pub const STALE_HEARTBEAT_IGNORED: &str = "stale_heartbeat_ignored";
/// A replica dropped a start_view that ended below its commit point because
/// its committed op there was prepared in that view or a later one: the
/// start_view was sent when the view began (a late or repeated frame), and
/// its log is a prefix of the view's, no contradiction (swarm seed 11322).
pub const START_VIEW_PREDATES_COMMITS: &str = "start_view_predates_commits";

/// Recovery found a slot header a misdirected write put there (filler or
/// another slot's header) and nothing naming the slot's op: unknown, so
/// faulty and part of the head, never cut off as torn.
pub const JOURNAL_SLOT_OVERWRITTEN_UNKNOWN: &str = "journal_slot_overwritten_unknown";

/// Recovery found an unknown slot above a gap (a slot over the highest
/// named op that reads empty or torn): no acknowledged prepare can be
/// there, so it is cut off as torn and the replica's head stays certain.
pub const JOURNAL_UNKNOWN_BEYOND_GAP_TORN: &str = "journal_unknown_beyond_gap_torn";

/// Recovery cut off a tail above the superblock's bound that starts at a
/// hole no copy names and holds only prepares no copy names (a flush cut
/// by a crash that kept a later op): none of it was acknowledged.
pub const JOURNAL_UNCOPIED_TAIL_TORN: &str = "journal_uncopied_tail_torn";

/// A writable journal open read the device (its clean pages dropped)
/// and found another log than the page cache had shown: pages a failed
/// fsync left cached (a truncation's zeroed slots, a lost rewrite).
pub const JOURNAL_OPEN_DEVICE_DIFFERED: &str = "journal_open_device_differed";

/// Recovery found a damaged slot (or an emptied one) whose only evidence
/// is a carried copy: faulty, kept for repair, not cut off as torn.
pub const JOURNAL_CARRIED_COPY_NAMES_FAULTY: &str = "journal_carried_copy_names_faulty";

/// Placed by the storage driver, not here: a checkpoint's drain read a
/// corrupt live prepare and failed (the journal cannot tell a driver's
/// retry policy, so the driver that handles the error counts it).
pub const DRAIN_CORRUPT: &str = "drain_corrupt";
/// A replica restarted with faulty journal slots, all at or below its log's
/// head, and takes part in view changes instead of waiting `Recovering`.
pub const FAULTY_JOURNAL_VOTES: &str = "faulty_journal_votes";
/// A node's state-transfer fills used up their time: a tick's budget
/// (`FILL_TICK_BUDGET_NS`), or half the node's time over the stretch of
/// appending (`Node::fill_stretch`). The rest waits for a later tick.
pub const FILL_TICK_BUDGET_SPENT: &str = "fill_tick_budget_spent";
/// Placed by the simulator's storage latency (`shoal_sim::io`): an fsync
/// was issued while another fsync of the same disk was in flight (in
/// virtual time), as the kernel overlaps the node's group flushes.
pub const FSYNCS_OVERLAPPED: &str = "fsyncs_overlapped";
/// Placed by the node (`Node::start_flush`): a group's fsync began while
/// another flush or a checkpoint ran beside the node, so the overlapping
/// group commit is what ran.
pub const GROUP_FLUSHES_OVERLAPPED: &str = "group_flushes_overlapped";
/// Placed by the node (`Node::on_frame`, overlapped flushes): a frame
/// reached a group while the fsync of that group's flush was running, so
/// the node handled it beside the fsync instead of after it.
pub const FRAME_DURING_FSYNC: &str = "frame_during_fsync";
/// Placed by the node (`Node::on_frame`, overlapped flushes): a peer's
/// prepare_ok reached the primary for an op whose own fsync was still
/// running; the vote is counted now and the commit waits only for that
/// fsync (the contract: the primary's own vote counts once it is durable).
pub const PREPARE_OK_DURING_OWN_FSYNC: &str = "prepare_ok_during_own_fsync";
/// Placed by the node (`Node::commit_group`): a storage action other than
/// a prepare waited for the group's running flush to finish first
/// (storage runs in order).
pub const FLUSH_FINISHED_FOR_STORAGE: &str = "flush_finished_for_storage";
/// Placed by the node (`Node::start_checkpoint`): a checkpoint's staged file
/// and the partition log's sync ran interleaved (their I/O overlapped),
/// the checkpoint installed only after both.
pub const CHECKPOINT_BESIDE_PARTITION_SYNC: &str = "checkpoint_beside_partition_sync";
/// Placed by the node's storage (`GroupStorage::end_flush`): an op was
/// staged again (a newer prepare for it) while the fsync of its older write
/// ran; that fsync's report does not make the new one durable.
pub const PREPARE_RESTAGED_DURING_FSYNC: &str = "prepare_restaged_during_fsync";
/// A backup kept a prepare of its view that arrived ahead of the op it
/// chains to (`Replica::ahead`: repair answers from several peers arrive in
/// any order) instead of dropping it.
pub const PREPARE_KEPT_AHEAD_OF_PARENT: &str = "prepare_kept_ahead_of_parent";
/// A prepare kept ahead of its parent entered the log once the op below it
/// chained.
pub const PREPARE_AHEAD_ADOPTED: &str = "prepare_ahead_adopted";
/// A primary packed two or more queued requests into one prepare
/// (`crate::packed`).
pub const PREPARE_PACKED_REQUESTS: &str = "prepare_packed_requests";
/// A primary whose pipeline waited too long on a body it could not repair
/// started the next view (so nacks can truncate what was lost).
pub const PRIMARY_ABDICATED: &str = "primary_abdicated";
/// Placed by the simulator (its restart): the server's start-up replay of
/// the metadata group (`replay_metadata_group`) ran to its end before the
/// process's groups opened, and its catalogue was held to the metadata
/// replica's.
pub const METADATA_REPLAYED_AT_START: &str = "metadata_replayed_at_start";
/// Placed by the node (`GroupMachine::open_in_cluster`): a damaged
/// partition log was cut to its intact prefix, the rest to come from peers.
pub const PARTITION_SALVAGED: &str = "partition_salvaged";
/// Placed by the node's scrubber (`Node::scrub`): a record of a running
/// replica's partition log failed its check (or every read of it failed),
/// and the node stopped so its restart salvages the log and fetches the
/// rest from peers.
pub const PARTITION_SCRUB_FOUND_DAMAGE: &str = "partition_scrub_found_damage";
/// Placed by the node's scrubber: it read and checked a whole partition
/// log, from its first offset to the end it had then, and starts again.
pub const PARTITION_SCRUB_PASS_COMPLETED: &str = "partition_scrub_pass_completed";
/// The scrubber skipped a tick: a group of its node was refilling its
/// partition log from peers, which goes first.
pub const PARTITION_SCRUB_PAUSED_FOR_FILL: &str = "partition_scrub_paused_for_fill";
/// Placed by the partition log's salvage: a segment's sync slots could not
/// be read, so the salvage emptied the file before writing new slots (a
/// write covering part of an unreadable page fails).
pub const PARTITION_SALVAGE_EMPTIED_SEGMENT: &str = "partition_salvage_emptied_segment";
/// Placed by the partition log's salvage: the prefix it keeps reaches past
/// what the segment's marker promised, so it wrote those records again
/// (they may be only in the page cache, after a failed fsync) before its
/// fsync and the marker that promises them.
pub const PARTITION_SALVAGE_REWROTE_UNPROMISED: &str = "partition_salvage_rewrote_unpromised";
/// Placed by the partition log's read path: a read of a sealed segment
/// whose file was not among the `SEALED_SEGMENT_FILES_OPEN_MAX` kept open
/// opened it again.
pub const PARTITION_SEALED_SEGMENT_REOPENED: &str = "partition_sealed_segment_reopened";
/// Placed by the node's read path (`shoal_shard::node::read`): a client
/// read an offset at or past this replica's committed end (it lags, or the
/// offset is not committed yet) and was told so.
pub const READ_BEYOND_END: &str = "read_beyond_end";
/// Placed by the node's read path: a backup served committed messages.
pub const READ_SERVED_BY_BACKUP: &str = "read_served_by_backup";
/// Placed by the node's read path: a committed offset this replica's log
/// lacks (a state-transfer gap, a failed read) was answered "unavailable".
pub const READ_UNAVAILABLE: &str = "read_unavailable";
pub const REFUSE_CONFLICTING_LOG: &str = "refuse_conflicting_log";
/// A replica rejoining with its promises kept had voted for a view newer
/// than any a quorum of peers reported, and moves them up to it.
pub const REJOIN_ABOVE_CLUSTER_VIEW: &str = "rejoin_above_cluster_view";
pub const REJOIN_COMPLETED: &str = "rejoin_completed";
pub const REJOIN_PROBE_ANSWERED: &str = "rejoin_probe_answered";
pub const REPAIR_BY_CHECKSUM: &str = "repair_by_checksum";
/// A replica brought back a prepare it had kept aside (valid, but a faulty
/// slot broke its chain at restart, or a start_view left a gap above it)
/// once a canonical header named it.
pub const UNCHAINED_PREPARE_ADOPTED: &str = "unchained_prepare_adopted";
/// A start_view's log left a gap above a prepare this replica held, so it
/// could not vouch for it: the prepare left the log and was kept aside
/// (`unchained`) for repair to adopt by checksum, not dropped.
pub const UNVOUCHED_PREPARE_KEPT_ASIDE: &str = "unvouched_prepare_kept_aside";
pub const SESSION_EVICTED: &str = "session_evicted";
/// Placed by the simulator's shards (`sim::cluster::inboxes`): a frame read
/// on a connection one shard holds went through the bounded inbox of
/// another shard, whose node runs its group (`pump::dispatch`, then
/// `pump::deliver` on that shard).
pub const SHARD_FRAME_CROSSED_IN: &str = "shard_frame_crossed_in";
/// Placed by the simulator's shards: a frame a group sent (to a peer, or a
/// reply to a client) went out through the outbound inbox of another shard,
/// the one that holds the connection (the owner table's, for a peer).
pub const SHARD_FRAME_CROSSED_OUT: &str = "shard_frame_crossed_out";
/// Placed by the simulator's shards: a frame waited in its shard's inbox
/// because the shard's node was busy with its storage, and was taken later.
pub const SHARD_FRAME_WAITED_IN_INBOX: &str = "shard_frame_waited_in_inbox";
pub const STATE_TRANSFER: &str = "state_transfer";
/// A state transfer whose snapshot took more than one frame to arrive
/// (`state_transfer`): the assembly across answers.
pub const CHECKPOINT_IN_CHUNKS: &str = "checkpoint_in_chunks";
/// A state transfer's answer ended with bytes still missing, and the
/// receiver asked for the next piece from its first missing byte.
pub const CHECKPOINT_NEXT_PIECE_ASKED: &str = "checkpoint_next_piece_asked";
/// Placed by the simulator (its restart): an injected EIO failed one of a
/// start's storage calls, the start stopped with the typed error, and the
/// process was started again later.
pub const STORAGE_ERROR_DURING_RESTART: &str = "storage_error_during_restart";
/// Placed by the simulator (its fault model): a journal slot rotted on the
/// one replica that held its op, an op a nack quorum of peers can prove was
/// never committed, so a view change must truncate it.
pub const ROT_ONLY_COPY: &str = "rot_only_copy";
/// A storage read failed with EIO and passed on a retry
/// (`io::read_exact_retrying`): a transient device error, not damage.
pub const READ_EIO_RETRIED: &str = "read_eio_retried";
/// `journal::settle_file` met a sector that failed every read with EIO and
/// rewrote every other sector of the file around it.
pub const SETTLE_SKIPPED_UNREADABLE_SECTOR: &str = "settle_skipped_unreadable_sector";
/// A copy of a superblock or checkpoint failed every read with EIO (a
/// latent sector error) and counted as lost, as a rotten copy does.
pub const COPY_UNREADABLE: &str = "copy_unreadable";
/// A writable superblock open found a copy behind the newest one (a write
/// failed between its copies, or a copy was damaged) and rewrote it before
/// the replica acted on the newest state.
pub const SUPERBLOCK_COPY_REPAIRED: &str = "superblock_copy_repaired";
/// Placed by the node (`GroupStorage::open_or_rejoin`): both superblock
/// copies of a group were lost; it was formatted again and rejoins as a
/// wiped replica does.
pub const SUPERBLOCK_LOST_REJOINED: &str = "superblock_lost_rejoined";
/// A view change truncated uncommitted ops of the canonical log that a nack
/// quorum never acknowledged.
pub const VIEW_CHANGE_NACK_TRUNCATION: &str = "view_change_nack_truncation";
/// A replica changing to a view whose primary is rejoining (a rejoin probe
/// came from it) moved on to the next view at once instead of waiting out
/// its view-change timeout.
pub const VIEW_CHANGE_SKIPPED_REJOINING_PRIMARY: &str = "view_change_skipped_rejoining_primary";
pub const VIEW_CHANGE_TRUNCATE: &str = "view_change_truncate";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_count_per_name_and_take_drains() {
        let _ = take();
        hit(STATE_TRANSFER);
        mark!("state_transfer");
        hit(REPAIR_BY_CHECKSUM);
        let tally = take();
        assert_eq!(tally.get(STATE_TRANSFER), Some(&2));
        assert_eq!(tally.get(REPAIR_BY_CHECKSUM), Some(&1));
        assert_eq!(tally.len(), 2);
        assert!(take().is_empty(), "take resets the tally");
    }

    #[test]
    fn names_are_sorted_and_unique() {
        assert!(MARKS.windows(2).all(|w| w[0] < w[1]));
    }
}
