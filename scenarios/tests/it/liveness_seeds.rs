//! Swarm seeds that once failed a liveness checker (or, at the end, the
//! recovery checker), replayed on this tree's
//! schedules. A behaviour change reshuffles every schedule (the repair
//! rotation that came after these fixes already did: the failing schedules
//! described below are no longer what these seeds draw), so these are plain
//! regression seeds now; each names the story or rule that pins its bug.

use shoal_sim::run::Verdict;

/// Swarm as it drew the seeds below (before session 18's lost-vote plot,
/// which swarm switches on in half its seeds): each keeps the schedule that
/// found its bug.
fn swarm_before_session_18(seed: u64) -> shoal_sim::RunConfig {
    let mut config = shoal_scenarios::catalog::swarm(seed);
    config.faults.plot_lost_vote_ppm = 0;
    config
}

fn assert_swarm_passes(seed: u64) {
    let outcome = shoal_sim::run(&swarm_before_session_18(seed));
    assert!(matches!(outcome.verdict, Verdict::Pass), "swarm seed {seed}: {:?}", outcome.verdict);
}

/// Swarm as this tree draws it (the lost-vote plot in half its seeds).
fn assert_swarm_as_drawn_now_passes(seed: u64) {
    let outcome = shoal_sim::run(&shoal_scenarios::catalog::swarm(seed));
    assert!(matches!(outcome.verdict, Verdict::Pass), "swarm seed {seed}: {:?}", outcome.verdict);
}

/// A config `shoal-sim shrink` wrote (JSON), run as saved.
fn assert_saved_config_passes(json: &str) {
    let config: shoal_sim::RunConfig = serde_json::from_str(json).expect("a saved RunConfig");
    let outcome = shoal_sim::run(&config);
    assert!(matches!(outcome.verdict, Verdict::Pass), "seed {} as saved: {:?}", config.seed, outcome.verdict);
}

fn assert_disk_rot_passes(seed: u64) {
    let outcome = shoal_sim::run(&shoal_scenarios::catalog::disk_rot(seed));
    assert!(matches!(outcome.verdict, Verdict::Pass), "disk-rot seed {seed}: {:?}", outcome.verdict);
}

/// A random wipe took the last copy of a committed op (R2, its other
/// holder, had been wiped by the wiped-acker plot): every view change kept
/// the op and nobody could repair it. Pinned by `sim/src/cluster/loss.rs`'s
/// stories and `vsr/tests/it/two_wiped_ackers.rs`.
#[test]
fn swarm_4877_a_wipe_never_takes_the_last_copy_of_a_committed_op() {
    assert_swarm_passes(4877);
}

/// A replica held part of a snapshot of checkpoint 17 from a peer that no
/// longer held it (it made the checkpoint again after a crash, with other
/// reply headers in its session table), and refused every other replica's
/// snapshot of the same checkpoint: 490,000 refused answers and no commit.
/// Found when checkpoints began to run beside the node (session 16), which
/// made a crash between a checkpoint and its install common. Pinned by the
/// story `a_checkpoint_assembly_whose_sender_went_away_restarts_from_another_replicas_snapshot`.
#[test]
fn swarm_1407_a_checkpoint_assembly_gives_way_to_another_replicas_snapshot() {
    assert_swarm_passes(1407);
}

/// Crash storms (fsync EIO, crashes right after a start_view_change) where
/// each restarted process spent 0.35-0.8 s opening 9 groups' storage: the
/// availability checker counted it as up meanwhile.
#[test]
fn swarm_4979_and_7667_a_process_still_opening_its_storage_is_not_up() {
    assert_swarm_passes(4979);
    assert_swarm_passes(7667);
}

/// The primaries of a 5-replica group's views 1, 2 and 3 crashed on
/// injected storage errors (one in its view change, one before its view
/// began), so the group went 2.97 s without a commit behind a connected
/// quorum: over the 2.9 s bound, which allows only two view changes. The
/// checker now grants one view change for each view entered with its
/// primary down (`shoal_sim::availability::AVAILABILITY_DOOMED_VIEW_TICKS`).
#[test]
fn swarm_2222_views_whose_primary_is_down_are_doomed_by_the_fault_not_the_protocol() {
    assert_swarm_passes(2222);
}

/// A single replica (session 15): its first life crashed with op 2's write
/// in flight and op 3 durable with its ring copy, so its log stopped at op
/// 1; the next life wrote new versions of ops 2 and 3 and crashed on an
/// fsync EIO before op 3's new copy was durable. The slot held the new op
/// 3 under a copy of the old one: faulty, and a lone replica with a faulty
/// op above its head waits `Recovering` for a peer that does not exist. A
/// rewrite now poisons a copy of its op in any version first; story:
/// `a_rewrite_with_another_version_poisons_the_old_versions_copy_first`.
#[test]
fn swarm_61204_a_lone_replica_rewriting_an_op_is_not_left_with_its_old_copy() {
    assert_swarm_passes(61204);
}

/// A single replica (session 16, fixed in session 17): one flush wrote
/// fresh ops 16 and 17 and the process died during its fsync; the device
/// kept op 17 and tore op 16. Recovery read op 16 as a hole below the head
/// to repair from peers, and a lone replica waited `Recovering` forever.
/// Neither op had a copy, so neither was acknowledged: the tail above the
/// superblock's bound is cut off as torn; story:
/// `a_flush_cut_by_a_power_loss_that_kept_the_later_op_is_a_torn_tail`.
/// Since the simulator runs the start-up metadata replay (session 17) this
/// seed's schedule is another one: the story carries the bug.
#[test]
fn swarm_117597_a_flush_cut_with_its_later_op_kept_is_a_torn_tail() {
    assert_swarm_passes(117597);
}

/// A server bug (session 17): a misdirected write took committed metadata
/// op 7 on replica 1, and at its restart the start-up metadata replay
/// refused (`MetadataRepairNeeded`), as it would at every later start,
/// while peers held op 7. A stated cluster of three now starts with the
/// committed prefix below the loss and repairs; story:
/// `shard/tests/it/metadata_replay.rs::a_committed_op_the_view_headers_replaced_is_a_repair_of_a_stale_prepare`.
#[test]
fn swarm_295_a_metadata_journal_that_lost_a_committed_op_still_starts() {
    assert_swarm_passes(295);
}

/// A real bug of the compaction beside the appends (session 19, found by
/// the first sweep of the tree that issues both mirrored fsyncs at once): a
/// mirrored flush's fsync of the spare failed, which drops what it covered
/// (the stage's writes, the file header among them) from the device; the
/// install's own fsync of the spare then succeeded with nothing left to
/// write, and the exchange made that spare the journal. Seed 2011 (Recovery)
/// could not restart: "journal file header is zero-filled"; 743 and 2526
/// (Promises) had acknowledged prepares the new journal never held. The
/// install now refuses after any failed mirrored fsync (`SpareSyncs`);
/// story `journal_storage_faults::a_failed_window_fsync_of_the_spare_stops_its_install_before_the_exchange`.
#[test]
fn disk_rot_2011_743_and_2526_a_failed_mirrored_fsync_stops_the_compactions_install() {
    for seed in [2011, 743, 2526] {
        assert_disk_rot_passes(seed);
    }
}

/// Session 20: a latent sector error under the ring copies of ops 18 and 19
/// of replica 0 (down); the restart repaired op 18 and rewrote its copy
/// with a 256-byte write, which does not remap the 512-byte sector, so the
/// durable copy could not be read. The next compaction copied the ring byte
/// for byte, read poison for ops 18-21 it could not read, and the replica's
/// new journal no longer vouched for ops it acknowledged (`Promises`). The
/// stage now writes a durable op's unreadable ring copy from the index;
/// story `journal_storage_faults::a_compaction_keeps_the_ring_copies_of_durable_ops_it_cannot_read`.
#[test]
fn disk_rot_348442_a_compaction_keeps_the_copies_of_acknowledged_ops_it_cannot_read() {
    assert_disk_rot_passes(348442);
}

/// Session 20, found by a sweep of the first fix of 348442 (2 of 50,000):
/// op 17 was durable with its copy carried in the region before op 18's
/// slot, written with op 18, which a view change then truncated; the
/// compaction wrote zeros over the regions above the head and dropped the
/// only copy of an op replica 2 had acknowledged (`Promises`). The stage
/// now gives every durable op whose ring entry does not name it a ring copy
/// from the index; story
/// `journal_storage_faults::a_compaction_keeps_a_durable_ops_copy_carried_by_a_truncated_write`.
#[test]
fn disk_rot_353521_and_354525_a_compaction_keeps_a_copy_carried_by_a_truncated_write() {
    for seed in [353521, 354525] {
        assert_disk_rot_passes(seed);
    }
}

/// A testbed artefact (session 19): a misdirected write damaged op 18's
/// ring copy in the journal; the compaction at the next checkpoint, staged
/// beside the appends, copied the journal's copy places byte for byte into
/// the spare, and after the exchange the checkers asked the spare, which
/// had no record of the misdirect, and blamed the replica's prepare_ok
/// (`Promises`). The simulated disk now carries a file's misdirected
/// ranges to the file exchanged with it. Seed 323267 the same with an ok's
/// prefix.
#[test]
fn disk_rot_322085_and_323267_a_compaction_carries_a_misdirects_damage_and_its_record() {
    assert_disk_rot_passes(322085);
    assert_disk_rot_passes(323267);
}

/// A testbed artefact (session 17): a read EIO aimed at op 2's ring copy
/// took the whole sector, which also held op 3's copy, and op 3's prepare
/// write had gone elsewhere (a misdirected write) in the same life: two
/// faults on op 3, which the fault model never places, and recovery lost
/// the acknowledged op unnamed (`Recovery`; the journal's documented
/// two-fault gap). Rot now spares a sector holding evidence of an op a
/// misdirected write touched.
#[test]
fn disk_rot_264061_rot_spares_a_sector_shared_with_a_misdirected_ops_evidence() {
    assert_disk_rot_passes(264061);
}

/// A testbed gap (session 15), not a replica bug: replica 1's disk was
/// wiped at 1.64 s, it restarted at 1.87 s and its storage opens ran on its
/// disk's clock to 3.23 s, past the heal at 2.0 s. The liveness bound ran
/// from the heal, which left it 0.77 s to transfer state for nine groups
/// and refill their partitions; it needed 0.82 s. The bound now runs from
/// when every replica serves, at the heal too.
#[test]
fn swarm_62015_the_liveness_bound_runs_from_when_a_replica_opening_at_the_heal_serves() {
    assert_swarm_passes(62015);
}

/// A replica promised op 4 in view 0; a view change that did not commit it
/// gave op 4 to another prepare, which the replica repaired into its slot.
/// That write was durable without its ring copy when the process crashed,
/// so it was never reported, and the recovery checker still held the view
/// 0 promise against a slot that rightly held the new prepare. The checker
/// now voids a promise when the replica stages another prepare of its op
/// (`Cluster::before_storage`). Seed 14860 is the same story at op 2.
#[test]
fn swarm_12846_and_14860_a_rewritten_op_voids_the_promise_of_the_prepare_it_replaces() {
    assert_swarm_passes(12846);
    assert_swarm_passes(14860);
}

/// A view change installed op 37's header from a replica whose slot for it
/// was faulty; no replica held its body, so the primary of view 4 repaired
/// in vain and abdicated after the heal, and view 5 truncated the op. The
/// quiet-period checker took that view change for churn in a healthy
/// cluster; a group whose primary waits on a body it lacks is now not
/// counted as settled (`Replica::pipeline_waits_on_body`).
#[test]
fn disk_rot_3684_a_primary_abdicating_over_a_lost_body_is_repair_not_churn() {
    assert_disk_rot_passes(3684);
}

/// Replica 0's flush of ops 8-9 also carried op 7's ring copy (in the
/// copies region before slot 8). That one write was misdirected: it landed
/// 14 KiB lower, over op 6's body and op 7's header. Op 7's prepare was
/// gone, and its only copy had never reached its place, yet op 7 had been
/// reported durable and acknowledged. Recovery read slot 7 as never
/// written (the write put zeros, entries it did not carry, on op 7's
/// header) and listed op 7 as missing, not faulty, so the replica could
/// nack an op it promised. Those entries are now filler, which reads as
/// damage on a slot header (journal module doc, "Filler, not zeros").
/// Found by disk-rot 4000..8000 on session 12's final tree (trace
/// 9777375eaa310486, `Recovery`); story:
/// `a_misdirected_carrier_that_lands_on_the_op_it_carries_leaves_that_op_faulty`.
#[test]
fn disk_rot_6214_a_misdirected_carrier_that_lands_on_its_own_op_is_faulty() {
    assert_disk_rot_passes(6214);
}

/// Replica 1 (the primary) had op 18's own prepare write misdirected far
/// away, so slot 18 kept its old, empty content; only op 18's copy, carried
/// by the next batch's write, said it was written, and op 18 was committed.
/// At the restart a latent read error hit the region holding that copy.
/// Recovery read an empty slot with no readable copy as never written, a
/// repair gap, though ops above it were intact. An empty slot whose copy
/// places are damaged now reads faulty below the head. Found by disk-rot
/// 10000..14000 on session 12's final tree (trace dddc238d8d234283,
/// `Recovery`); story:
/// `an_empty_slot_below_the_head_whose_copy_cannot_be_read_is_faulty`.
#[test]
fn disk_rot_13111_an_empty_slot_whose_copy_cannot_be_read_is_faulty() {
    assert_disk_rot_passes(13111);
}

/// Replica 1 acknowledged op 61 and lost it unnamed: a misdirected write
/// landed on op 61's slot header, nothing above op 61 was named when it
/// crashed, and no copy named op 61, so the slot read as a torn tail and
/// was cut off. A slot header holding filler or another slot's header is a
/// misdirected write's doing, never a tear's: the slot now reads unknown
/// (faulty) even at the head; with that rule alone turned off the seed
/// fails again. Found by disk-rot 14000..44000 after the filler fix
/// (Recovery); story:
/// `a_misdirected_carrier_over_its_own_op_at_the_head_leaves_that_op_unknown`.
#[test]
fn disk_rot_31505_a_misdirected_carrier_over_its_own_op_at_the_head_is_unknown() {
    assert_disk_rot_passes(31505);
}

/// Replica 2 acknowledged op 16 and lost it unnamed: op 17's write, which
/// carried op 16's copy, landed inside op 16's body, leaving op 16's header
/// valid and its body bad, with nothing above it: the picture of a torn
/// head, which is cut off. A body sector holding filler or a header is now
/// read as a misdirected landing (unknown, faulty). Found by disk-rot
/// 14000..44000 after the filler fix (Recovery); story:
/// `a_misdirected_carrier_in_its_own_ops_body_at_the_head_leaves_that_op_unknown`.
#[test]
fn disk_rot_40812_a_misdirected_carrier_in_its_own_ops_body_is_unknown() {
    assert_disk_rot_passes(40812);
}

/// Replica 0 acknowledged op 24 and lost it unnamed: op 25's write, which
/// carried op 24's only copy, landed six sectors before op 24's header
/// and put op 25's payload on it (no filler, no header), and the crash came
/// before anything named op 25: a torn head, cut off. A header sector that
/// holds neither zeros nor its slot's header is now damage (unknown,
/// faulty). Found by disk-rot 60000..64000 in session 14 (Recovery);
/// story: `a_misdirected_carrier_that_puts_payload_on_its_own_ops_header_leaves_that_op_unknown`.
#[test]
fn disk_rot_61823_a_carriers_payload_on_its_own_ops_header_is_unknown() {
    assert_disk_rot_passes(61823);
}

/// Replica 2 stopped itself three times in a row after the heal (the
/// restart-loop verdict, session 14): recovery found op 72 damaged, and
/// every checkpoint below it failed its compaction on op 72 before the
/// repair came. A compaction now carries an op the journal already counts
/// missing as faulty evidence; story:
/// `a_checkpoint_below_an_op_recovery_already_found_damaged_compacts_and_keeps_it_faulty`.
/// Seed 79424 failed the same way on op 68.
#[test]
fn disk_rot_77896_and_79424_a_checkpoint_below_a_known_damaged_op_does_not_stop_the_replica() {
    assert_disk_rot_passes(77896);
    assert_disk_rot_passes(79424);
}

/// Failed Liveness (session 14) since the header-sector rule (272a976).
/// Replica 1 (the rot replica) had a journal write misdirected at 1.64 s
/// and crashed right after a prepare write at 1.91 s; at the heal its
/// restart read the slot the misdirected write hit (op 119, its log's head
/// at op 92) as unknown, so its head was uncertain and it came back
/// `Recovering`. Replica 2, far behind (op 53 against 94, op 54 faulty
/// under valid 55..60), was `Recovering` too, and replica 0 alone could
/// not form a view. Ops 93..118 of replica 1 read empty: an acknowledged
/// op 119 needs them durable first, so op 119 is now cut off as torn
/// (journal doc, "An unknown slot beyond a gap"); story:
/// `an_unknown_slot_above_an_empty_one_over_the_named_head_is_cut_off_as_torn`.
#[test]
fn disk_rot_115705_an_unknown_slot_beyond_a_gap_does_not_park_the_replica() {
    assert_disk_rot_passes(115705);
}

/// Safety, not liveness (Agreement): a backup restored a checkpoint from a
/// peer beside its node and acknowledged the next op before that checkpoint
/// was durable; its install failed (a partition log fsync EIO), and after
/// the restart the acknowledged op sat above a gap, was dropped, and the
/// next view committed another op there (session 16, found by the fresh
/// sweep of disk-rot 220000..235000 once checkpoints ran beside the node).
/// Pinned by the story
/// `a_backup_holds_its_ok_above_a_checkpoint_restored_beside_the_node_until_it_is_durable`.
#[test]
fn disk_rot_224694_and_224701_an_ok_waits_for_a_restored_checkpoint() {
    assert_disk_rot_passes(224694);
    assert_disk_rot_passes(224701);
}

/// A testbed artefact (AckedWritesDurable, session 16): the final log check
/// completed a checkpoint still running beside the node so that what it
/// kept in memory reached the log, and that compaction, run after the end,
/// met a journal damaged earlier in the run and stopped the node; the check
/// then read an empty log. The check now reads the log and the messages the
/// group keeps in memory, with no storage call after the run.
#[test]
fn disk_rot_239443_the_final_log_check_runs_no_storage_call() {
    assert_disk_rot_passes(239443);
}

/// A testbed artefact (Recovery, session 18): the lost-vote plot rotted
/// both copies of the metadata group's checkpoint on its voter; at the
/// restart the server's start-up replay formatted the group to rejoin
/// (keeping the superblock, written in place), the group's own open then
/// found nothing to report, and the checker still held the promises the
/// lost files had made ("acknowledged op 5 before the crash and lost it
/// unnamed"). The simulator noticed only a replay that replaced the
/// superblock file; it now also notices one that set its rejoin flag.
/// Seeds 28 and 328 failed the same way.
#[test]
fn disk_rot_sharded_22_a_replay_that_rejoins_after_a_lost_checkpoint_voids_its_promises() {
    for seed in [22, 28, 328] {
        let outcome = shoal_sim::run(&shoal_scenarios::catalog::disk_rot_sharded(seed));
        assert!(matches!(outcome.verdict, Verdict::Pass), "disk-rot-sharded seed {seed}: {:?}", outcome.verdict);
    }
}

/// A protocol bug (Liveness, session 18): in group g0, view 0's primary R0
/// wrote op 13 alone; view 2's primary R2 (the rot replica) prepared
/// another op 13 while both peers were down, and its write went elsewhere
/// (a misdirected write), so no replica held that op's body and only R2
/// could have acknowledged it. R0 installed view 2's start_view naming the
/// new op 13 without its body, its slot 13 still holding view 0's, and
/// restarted: that leftover no longer chained into the log and was kept
/// aside, and a prepare kept aside raised R0's nack floor to its op. Only
/// R1 nacked the lost op, one short of the nack quorum, and every view
/// waited on its body. A prepare kept aside where the log names a newer
/// view's prepare no longer raises the floor; story
/// `a_prepare_kept_aside_that_the_log_replaced_does_not_stop_a_nack`.
#[test]
fn disk_rot_sharded_6429_a_replaced_prepare_kept_aside_does_not_stop_a_nack() {
    let outcome = shoal_sim::run(&shoal_scenarios::catalog::disk_rot_sharded(6429));
    assert!(matches!(outcome.verdict, Verdict::Pass), "disk-rot-sharded seed 6429: {:?}", outcome.verdict);
}

/// A testbed artefact (Recovery, session 18): the lost-vote plot rotted
/// both copies of group 0's checkpoint on its voter (R1) while it was down.
/// At its restart the group's open found the checkpoint lost and began the
/// format to rejoin: it wrote the rejoining superblock (promises kept),
/// made a new journal and removed the checkpoint, then the restart fault
/// armed for that start failed the new journal's fsync at open, and the
/// start stopped. The next start opened a rejoining group with an empty
/// journal and no checkpoint, nothing to report as damage, while the
/// checker still held the promises of the lost journal ("acknowledged op
/// 10 before the crash and lost it unnamed"). A rejoining replica promises
/// nothing its journal held (`Replica::open` makes it `Recovering`); the
/// simulator now voids the promises as soon as a stopped open's format
/// wrote the rejoining superblock. Seed 23113 failed the same way (a halt
/// there, on R2).
#[test]
fn disk_rot_sharded_11239_a_format_to_rejoin_that_a_fault_stopped_voids_its_promises() {
    for seed in [11239, 23113] {
        let outcome = shoal_sim::run(&shoal_scenarios::catalog::disk_rot_sharded(seed));
        assert!(matches!(outcome.verdict, Verdict::Pass), "disk-rot-sharded seed {seed}: {:?}", outcome.verdict);
    }
}

/// A testbed artefact (Recovery, session 18): two faults on one op's
/// evidence, which the fault model never places. On the rot replica R2,
/// op 1 of group 2 was written but its flush had not finished (its ring
/// copy rides with the next one) when running rot put a latent sector error
/// on op 1's slot; right after, a misdirected write was armed for group 2's
/// journal, and the next write there was op 1's ring copy, which went
/// elsewhere. The flush reported op 1 durable, R2 acknowledged it, crashed,
/// and its restart found neither the slot nor the copy ("acknowledged op 1
/// before the crash and lost it unnamed"). Running rot already refused an
/// op a landed misdirect touched; now a misdirect is not armed on a file
/// holding damage no write has covered, and running rot skips a file with
/// a misdirect armed and not yet landed.
#[test]
fn disk_rot_sharded_19255_a_misdirect_never_takes_the_other_copy_of_a_rotten_op() {
    let outcome = shoal_sim::run(&shoal_scenarios::catalog::disk_rot_sharded(19255));
    assert!(matches!(outcome.verdict, Verdict::Pass), "disk-rot-sharded seed 19255: {:?}", outcome.verdict);
}

/// The same protocol bug with an older view's prepare (Liveness, session
/// 18, metadata group g4, op 1). Seed 19898: view 1's primary R1 wrote op 1
/// alone and a misdirected write lost it (R1's journal names it faulty, so
/// R1 nacks nothing there); view 2's primary R2 wrote another op 1 alone;
/// view 3 started from R0 and R1 (both of log_view 1) and named view 1's
/// op 1, whose body nobody held. R2 installed view 3's start_view, its slot
/// 1 still holding view 2's op 1, and restarted: that leftover was kept
/// aside, and since the log's op 1 was of an *older* view (1 < 2) the rule
/// of seed 6429 counted it and raised R2's floor to 1. Only R0 nacked the
/// lost op. Seed 14011: view 2's op 1 on R2 (its only copy rotted later,
/// the fault model rightly judging that R0 and R1 nacked it), view 3's op 1
/// on R0, view 4 from R1 and R2 named view 2's; R0 installed it and
/// restarted; only R1 nacked. A prepare kept aside no longer raises the
/// floor where the log of a later view than its own names another prepare
/// at its op; story
/// `a_prepare_kept_aside_that_an_older_views_prepare_replaced_does_not_stop_a_nack`.
#[test]
fn disk_rot_sharded_19898_and_14011_a_prepare_kept_aside_that_an_older_views_prepare_replaced_does_not_stop_a_nack() {
    for seed in [19898, 14011] {
        let outcome = shoal_sim::run(&shoal_scenarios::catalog::disk_rot_sharded(seed));
        assert!(matches!(outcome.verdict, Verdict::Pass), "disk-rot-sharded seed {seed}: {:?}", outcome.verdict);
    }
}

/// Session 21: once simulated runs rolled partition segments (16 KiB; the
/// server's 64 MiB never rolled in a run), every process got an open-file
/// limit sized from its groups (`files_open_max`) and the `OpenFiles`
/// checker; 4 of swarm seeds 0..100 failed it on the old code (and, with
/// 4 KiB segments, 70 of steady 0..100): every sealed segment kept its
/// handles for the life of the process (swarm 10: 85 files for 9 groups;
/// swarm 16: 13 for one). Sealed segments now close once sealed or scanned
/// and reads go through a bounded cache; story
/// `partition_open_files::a_partition_log_holds_a_bounded_number_of_files_open_however_many_segments_it_rolls`.
#[test]
fn swarm_10_and_16_a_process_holds_a_bounded_number_of_files_open() {
    for seed in [10, 16] {
        assert_swarm_as_drawn_now_passes(seed);
    }
}

/// Replica 2 restored group 2's checkpoint at op 4 from a peer (its journal
/// held none of ops 1..=4) and wrote op 5 into that journal; op 5's ring
/// copy's write went elsewhere (a misdirected write), and the replica
/// crashed (another group's storage error) after the checkpoint's install,
/// before the compaction. Recovery took ops 1..=4 for a hole and cut op 5 as
/// an uncopied tail above it: an acknowledged prepare lost unnamed
/// (Recovery checker). Found by the sweep of session 25's spare clear
/// beside the node, whose longer checkpoint work made the window wide;
/// latent before. A durable checkpoint now counts as the floor of what the
/// replica may have acknowledged (`GroupStorage::open`).
#[test]
fn disk_rot_sharded_4747_a_durable_checkpoint_is_no_hole_below_the_prepares_above_it() {
    let outcome = shoal_sim::run(&shoal_scenarios::catalog::disk_rot_sharded(4747));
    assert!(matches!(outcome.verdict, Verdict::Pass), "disk-rot-sharded seed 4747: {:?}", outcome.verdict);
}

/// A primary held 76-184 ms per call by its disk (a rejoining replica's
/// state-transfer fills, each appending across the simulator's 16 KiB
/// segments with a sync per roll) ticked once per hold and so sent a commit
/// heartbeat once per five holds: none for 430 ms, and a backup of a
/// healthy group timed out (quiet-period checker). Pinned by
/// `vsr/tests/it/held_primary.rs` (`COMMIT_HEARTBEAT_NS`).
#[test]
fn swarm_10006_a_primary_held_by_its_disk_keeps_sending_heartbeats() {
    assert_swarm_as_drawn_now_passes(10006);
}

/// A replica rejoining after both checkpoint copies rotted installed view
/// 1's checkpoint at op 32 (prepared in view 1) by state transfer; a
/// clogged link then delivered view 1's first start_view (op 25), which it
/// refused as a log contradicting its commits (Agreement checker). Pinned
/// by `vsr/tests/it/stale_start_view.rs` (`start_view_predates_commits`).
#[test]
fn swarm_11322_a_late_start_view_of_the_view_a_checkpoint_came_from_is_dropped_not_refused() {
    assert_swarm_as_drawn_now_passes(11322);
}

/// The partition log trusted a sync marker it read back from the page
/// cache after that marker's fsync had failed; a roll then sealed the
/// segment with it, and a later power loss left a sealed segment longer
/// than its durable marker, which the salvage cut with every later segment
/// (the simulator's check: a salvage with no damage injected). Found first
/// as swarm 18237 under the bounded fill (Liveness: no replica held 31
/// offsets); the fsync-steps scenario, whose failed fsync lands on the
/// second step of a promise, finds it on the tree before the fix in seed
/// 290 (10 of seeds 0..3000). Pinned by
/// `sim/tests/it/partition_lost_fsync.rs`.
#[test]
fn fsync_steps_290_and_swarm_18237_a_marker_whose_fsync_failed_is_written_again_at_open() {
    let outcome = shoal_sim::run(&shoal_scenarios::catalog::fsync_steps(290));
    assert!(matches!(outcome.verdict, Verdict::Pass), "fsync-steps seed 290: {:?}", outcome.verdict);
    let second_sync_errors = outcome.faults_injected.get("storage_second_sync_error").copied().unwrap_or(0);
    assert!(second_sync_errors > 0, "the scenario fails the second fsync of some promise");
    assert_swarm_as_drawn_now_passes(18237);
}

/// A salvage promised records it had read from the page cache: records
/// whose fsync had failed (Linux marks those pages clean) sat before a
/// sector whose reads failed, and the salvage's new marker covered them
/// without writing them again. A power loss would have left a marker over
/// records the device never got. Found by the Recovery check "what a start
/// reads is on the device" in disk-rot and disk-rot-pages seed 392, once
/// formats stopped reopening their journals (a306722) and the schedule
/// moved; pinned by `sim/tests/it/partition_lost_fsync.rs`
/// (`a_salvage_rewrites_what_it_promises_that_only_the_page_cache_held`).
/// The scenario made for it, partition-fsync, failed 10 of seeds 0..2500
/// before the fix (283 first; since session 31's checkpoint fix moved its
/// schedule, 283 no longer reaches the salvage and 53 does). Since session
/// 35's refill writes (a segment's records in one write, a roll's two
/// last fsyncs at once) moved the schedules, seed 392 of disk-rot and
/// disk-rot-pages no longer reaches the salvage either (neither does any
/// seed of 0..1500 of either scenario); partition-fsync 53 and 157 do (20
/// of its seeds 0..2500).
#[test]
fn disk_rot_392_a_salvage_rewrites_what_it_promises_past_the_old_marker() {
    for config in [
        shoal_scenarios::catalog::partition_fsync(283),
        shoal_scenarios::catalog::disk_rot(392),
        shoal_scenarios::catalog::disk_rot_pages(392),
    ] {
        let outcome = shoal_sim::run(&config);
        assert!(
            matches!(outcome.verdict, Verdict::Pass),
            "{} seed {}: {:?}",
            config.scenario,
            config.seed,
            outcome.verdict
        );
    }
    for seed in [53, 157] {
        let outcome = shoal_sim::run(&shoal_scenarios::catalog::partition_fsync(seed));
        assert!(matches!(outcome.verdict, Verdict::Pass), "partition-fsync seed {seed}: {:?}", outcome.verdict);
        let rewrites = outcome.marks.get(shoal_vsr::marks::PARTITION_SALVAGE_REWROTE_UNPROMISED).copied();
        assert!(
            rewrites.unwrap_or(0) > 0,
            "seed {seed}: the salvage wrote the unpromised records again: {:?}",
            outcome.marks
        );
    }
}

/// Two replicas of five came back from a partition lacking 5,500 offsets
/// of a partition (large appends); the state-transfer fill appended one
/// part per 10 ms tick, and a part ends at each segment roll (16 KiB in
/// the simulator): about 25 offsets per tick, 1,900 still missing 2 s after
/// the heal (Liveness). Found by swarm 4000..8000 on the session-30 tree
/// (a306722 moved the schedule onto it); fixed by up to
/// `FILL_CALLS_PER_TICK_MAX` parts per tick.
#[test]
fn swarm_4088_a_large_fill_after_the_heal_is_appended_several_parts_per_tick() {
    assert_swarm_as_drawn_now_passes(4088);
}

/// Every replica lacked committed partition offset 32 after the heal: R2
/// served its checkpoint at op 34 by state transfer 4 ms before that
/// checkpoint's partition log sync failed, so it never reached R2's disk;
/// R1 installed it (dropping its journal's ops up to 34) and passed it to
/// R0. Found by swarm 8000..20000 once swarm drew the partition-sync fault
/// (cd9bb0c); reported as Liveness until the checker learned that an offset
/// every replica applied and none holds is a lost committed write (Safety,
/// `AckedWritesDurable`). Fixed by serving only a checkpoint the node
/// reported durable, and only while the state has no gap. Story:
/// `vsr/tests/it/checkpoint_durable.rs`.
#[test]
fn swarm_9620_a_checkpoint_is_served_only_once_durable() {
    let config = shoal_scenarios::catalog::swarm(9620);
    assert!(config.faults.storage_partition_sync_error_ppm > 0, "swarm 9620 draws the partition-sync fault");
    assert_swarm_as_drawn_now_passes(9620);
}

/// The config `shoal-sim shrink --seed 90 --scenario swarm` made in session
/// 33 (4 shards, 10 clients, the lost-vote plot only): after its rejoin,
/// replica 2 stayed 4 ops below its primary in group 1 for 0.66 s (quiet
/// period). Its repair round asked the two peers in turn for the ops after
/// its head; the answers came back in two batches, and it took only the
/// one that chained to its head, dropping the rest to ask again a round
/// later. Fixed by keeping a prepare of the view that arrives ahead of its
/// parent (`Replica::ahead`). Story: `vsr/tests/it/repair_ahead.rs`.
#[test]
fn swarm_90_shrunk_a_lagging_backup_keeps_repair_answers_that_arrive_ahead_of_their_parent() {
    assert_saved_config_passes(include_str!("configs/swarm-90-shrunk-repair-ahead.json"));
}

/// The same shrink with the scrubber off (session 34): after the fix above,
/// replica 2 still stayed 1 op below its primary in group 7 for 0.66 s.
/// Every state data answer that arrived for a group without a gap (a late
/// or second frame) ran a partition-log fsync inside the node's turn: 37 of
/// them, 337 ms of replica 2's node on its slow disk, while the group's
/// journal compaction beside the node (and every acknowledgement the group
/// held for its install) waited. Fixed by syncing only when the answer
/// closed the gap. Story: `shard/tests/it/node.rs`,
/// `a_state_data_answer_after_the_gap_is_filled_costs_no_fsync`.
#[test]
fn swarm_90_shrunk_a_late_state_data_answer_costs_no_fsync() {
    assert_saved_config_passes(include_str!("configs/swarm-90-shrunk-late-state-data.json"));
}

/// A rejoined replica of five (slow disk) refilled two partition groups of
/// one shard at four parts per group per tick, each part a segment's
/// appends and its roll's two fsyncs: calls of 130 ms in every 10 ms tick
/// on its process's clock. Its journal compactions beside the node took
/// 0.4 s, and the metadata group's acknowledgements waited for them
/// (quiet period: replica 3 two ops behind for 0.66 s). Found by swarm
/// 0..8000 once late state data answers stopped costing an fsync (their
/// time had moved this schedule); fixed by a node-wide fill budget per tick
/// (`FILL_CALLS_PER_TICK_MAX` parts and `FILL_TICK_BUDGET_NS`).
#[test]
fn swarm_7888_a_rejoined_replicas_refill_leaves_its_node_time_each_tick() {
    assert_swarm_as_drawn_now_passes(7888);
}

/// swarm-buggify seed 3522 (session 35, the sweep of buggify's first
/// version): a backup of five, four shards, changed its view in a quiet
/// period. Its shard 3 was taking three groups through their view
/// changes, each frame a durable step of 15 ms on a slow disk, and the
/// simulator served the shards' inboxes in the order their drains were
/// queued: shard 3 queued its next drain before shard 0's waiting drain
/// re-queued, every time, so group 1 on shard 0 got no heartbeat for
/// 0.9 s. A testbed bug (a server's shards are threads of their own);
/// fixed by keeping a waiting shard's place in line (`drain_place`).
#[test]
fn swarm_buggify_3522_a_shard_waiting_for_its_turn_keeps_its_place() {
    let outcome = shoal_sim::run(&shoal_scenarios::catalog::swarm_buggify(3522));
    assert!(matches!(outcome.verdict, Verdict::Pass), "swarm-buggify seed 3522: {:?}", outcome.verdict);
}
