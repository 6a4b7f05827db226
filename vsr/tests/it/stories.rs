//! Protocol stories from the safety review, each told step by step on the
//! hand-driven cluster of `harness`. Each one failed on the code the review
//! read (commit 7b4f50f) and passes on the fix.

use shoal_vsr::header::Command;
use shoal_vsr::replica::Status;

use crate::harness::{Cluster, Envelope, Sender, client, normal_in, register_clients};

fn is(envelope: &Envelope, command: Command) -> bool {
    envelope.command() == command
}

/// Finding 1: R0 (primary, view 0) and R1 are cut off from R2–R4; R0
/// prepares ops 13..20; R2–R4 move to view 2, commit other ops at 13..16 and
/// checkpoint at 16; R1 (still in view 0) asks R3 for op 13 and is answered
/// with that checkpoint; R0's retransmitted prepares reach R1. Before the
/// fix R1 restored the newer view's checkpoint, "acked" R0's op 13 (a
/// checksum it could not check) carrying commit 16, and R0 applied its own
/// stale 13..16 and replied to clients.
#[test]
fn a_deposed_primary_never_commits_through_a_backup_holding_a_newer_views_checkpoint() {
    let mut cluster = Cluster::new(5);
    let all = [0, 1, 2, 3, 4];
    register_clients(&mut cluster, 0, 12);
    cluster.run(&all, 10);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == 12), "ops 1..12 committed everywhere");

    // R0 and R1 on one side, R2–R4 on the other. R1 misses op 13.
    cluster.cut(&[0, 1], &[2, 3, 4]);
    for index in 0..8 {
        cluster.append(client(index), 0, 1, format!("deposed-{index}").as_bytes());
        cluster.deliver_where(|e| matches!(e.from, crate::harness::Sender::Client(_)));
        cluster.drop_where(|e| e.between(0, 1) && is(e, Command::Prepare) && e.message.header.op == 13);
        cluster.deliver_all();
    }
    assert_eq!(cluster.replica(0).op(), 20);
    assert_eq!(cluster.replica(0).commit_max(), 12, "no quorum on R0's side");

    // The majority elects view 2 (view 1's primary is R1, out of reach)
    // and commits its own ops 13..16, checkpointing at 16.
    assert!(cluster.run_until(&[2, 3, 4], 1_000, |c| normal_in(c, 2, 2)), "R2 becomes primary of view 2");
    for index in 8..12 {
        cluster.append(client(index), 2, 1, format!("majority-{index}").as_bytes());
        cluster.deliver_all();
    }
    cluster.run(&[2, 3, 4], 10);
    assert_eq!(cluster.replica(3).checkpoint_op(), 16, "R3 checkpointed the majority's op 16");

    // R1 now reaches R3 (and R0); R0 still reaches only R1.
    cluster.heal();
    cluster.cut(&[0], &[2, 3, 4]);
    cluster.cut(&[1], &[2, 4]);
    let asked_r3 = (0..200).any(|_| {
        cluster.tick(1);
        cluster.pending(|e| e.between(1, 3) && is(e, Command::RequestPrepare) && e.message.header.op <= 16) > 0
    });
    assert!(asked_r3, "R1's repair asks R3 for an op below R3's checkpoint");
    cluster.drop_where(|e| e.from == crate::harness::Sender::Replica(1) && !e.between(1, 3));
    cluster.deliver_where(|e| e.between(1, 3));
    assert!(cluster.pending(|e| e.between(3, 1) && is(e, Command::Checkpoint)) > 0, "R3 answers with its checkpoint");
    cluster.deliver_where(|e| e.between(3, 1));
    let r1 = cluster.replica(1);
    assert!(
        r1.view() >= 2 || r1.status() == Status::Recovering,
        "a view-0 backup that learns of view 2 stops taking part in view 0"
    );

    // R0 keeps retransmitting its pipeline to R1, and answers R1's probes
    // with view 0's start_view: R1 must take neither (view-churn seed 16828:
    // a start_view of its old view ending below the restored checkpoint).
    cluster.run(&[0, 1], 30);
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
    assert_eq!(
        cluster.replica(1).stats().committed_conflicts,
        0,
        "R1 was offered view 0's log after view 2's checkpoint"
    );
    assert!(cluster.replica(1).view() >= 2, "R1 learned from the checkpoint that view 0 is over");
    assert_eq!(cluster.replica(0).commit_max(), 12, "the deposed primary commits nothing");
    assert!((0..8).all(|index| !cluster.replied(client(index), 1)), "no client was told a deposed op committed");

    // Healed, everyone converges on the majority's history.
    cluster.heal();
    let converged = cluster.run_until(&all, 2_000, |c| {
        let commit = c.replica(2).commit_min();
        commit >= 16
            && all.iter().all(|&r| c.replica(r).status() == Status::Normal && c.replica(r).commit_min() == commit)
    });
    assert!(converged, "the cluster converges after the heal");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// Finding 1, the primary's side alone: a prepare_ok whose checksum is not
/// the primary's prepare never makes the primary adopt the backup's commit.
#[test]
fn a_prepare_ok_for_another_history_carries_no_commit() {
    let mut cluster = Cluster::new(3);
    register_clients(&mut cluster, 0, 2);
    cluster.cut(&[0], &[1, 2]);
    cluster.append(client(0), 0, 1, b"only-on-r0");
    cluster.deliver_all();
    assert_eq!(cluster.replica(0).op(), 3);
    // A forged ok from R1 for op 3 with a checksum R0 does not hold and a
    // commit point past it.
    let mut ok = shoal_vsr::header::Header::new(Command::PrepareOk, crate::harness::CLUSTER);
    ok.namespace = crate::harness::NAMESPACE;
    ok.replica = 1;
    ok.op = 3;
    ok.parent = 0xBAD;
    ok.commit = 3;
    ok.set_checksums(&[]);
    cluster.queue.push(Envelope {
        from: crate::harness::Sender::Replica(1),
        to: 0,
        message: shoal_vsr::message::Message::empty(ok),
    });
    cluster.heal();
    cluster.deliver_where(|e| e.between(1, 0) && is(e, Command::PrepareOk));
    assert_eq!(cluster.replica(0).commit_max(), 2, "a mismatched ok must not move the commit point");
}

/// Finding 3: the primary's disk is lost and the operator formats it again.
/// Before the fix the fresh replica started Normal as the primary of view 0
/// with an empty session table and told a registered client it was evicted.
#[test]
fn a_wiped_primary_rejoins_without_acting_as_primary_of_its_old_view() {
    let mut cluster = Cluster::new(3);
    let all = [0, 1, 2];
    register_clients(&mut cluster, 0, 2);
    cluster.append(client(0), 0, 1, b"before-wipe");
    cluster.deliver_all();
    assert!(cluster.replied(client(0), 1));

    cluster.wipe_and_rejoin(0);
    assert_eq!(cluster.status(0), Status::Recovering);
    cluster.append(client(0), 0, 2, b"after-wipe");
    cluster.deliver_all();
    let evicted = cluster.replies.iter().any(|(c, h)| *c == client(0) && h.command == Command::Eviction);
    assert!(!evicted, "a rejoining replica answers no client");
    assert!(!cluster.replied(client(0), 2));

    let rejoined = cluster.run_until(&all, 2_000, |c| {
        !c.replica(0).is_rejoining() && c.replica(0).status() == Status::Normal && c.replica(0).commit_min() >= 3
    });
    assert!(rejoined, "R0 rejoins through a newer view and catches up");
    assert!(cluster.replica(0).view() >= 1, "view 0's primary was lost with its disk; the cluster moved on");
    assert!(!cluster.disks[0].superblock.rejoining, "the rejoin is durable");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// Finding 3, the stale-input side: a wiped replica must not install a
/// start_view of a view older than the one a quorum reports, even one
/// delivered after it asked (a stale redelivery).
#[test]
fn a_rejoining_replica_ignores_a_stale_start_view() {
    let mut cluster = Cluster::new(3);
    let all = [0, 1, 2];
    register_clients(&mut cluster, 0, 2);
    // View 1 (R1 primary) starts; keep a copy of its start_view to R0.
    cluster.cut(&[0], &[1, 2]);
    assert!(cluster.run_until(&[1, 2], 1_000, |c| normal_in(c, 1, 1)));
    let stale = cluster
        .sent
        .iter()
        .find(|e| e.between(1, 0) && is(e, Command::StartView) && e.message.header.view == 1)
        .cloned()
        .expect("R1 sent R0 a start_view of view 1");
    // Then view 2 (R2 primary) while R1 is away.
    cluster.heal();
    cluster.cut(&[1], &[0, 2]);
    assert!(cluster.run_until(&[0, 2], 1_000, |c| normal_in(c, 2, 2) && c.replica(0).view() == 2));
    cluster.heal();
    cluster.queue.clear();

    cluster.wipe_and_rejoin(0);
    cluster.queue.push(stale.clone());
    cluster.deliver_where(|e| e.between(1, 0));
    assert!(cluster.replica(0).is_rejoining(), "an unasked-for old start_view is not enough");
    // Let the probes and their answers through, then the stale one again.
    cluster.run(&all, 12);
    cluster.queue.push(stale);
    cluster.deliver_where(|e| e.between(1, 0));
    assert!(cluster.replica(0).view() >= 2, "R0 joins no view older than the quorum's");
    let rejoined = cluster.run_until(&all, 1_000, |c| c.replica(0).status() == Status::Normal);
    assert!(rejoined && cluster.replica(0).view() >= 2);
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// Finding 5: timestamps never go back across a restart, even when the
/// clock of the next life starts lower than the last prepare's timestamp.
#[test]
fn timestamps_never_go_back_after_a_restart() {
    let mut cluster = Cluster::new(1);
    cluster.run(&[0], 100);
    register_clients(&mut cluster, 0, 1);
    cluster.append(client(0), 0, 1, b"first-life");
    cluster.deliver_all();
    let last = cluster.disks[0].journal.values().map(|(h, _)| h.timestamp).max().unwrap();
    assert!(last > 0);
    cluster.crash(0);
    cluster.rewind_clock();
    cluster.restart(0);
    cluster.run(&[0], 1);
    cluster.append(client(0), 0, 2, b"second-life");
    cluster.deliver_all();
    let timestamps: Vec<u64> = cluster.disks[0].journal.values().map(|(h, _)| h.timestamp).collect();
    assert!(timestamps.windows(2).all(|w| w[0] < w[1]), "timestamps by op must increase: {timestamps:?}");
}

/// Finding 4: sessions. Client A's request 1 is applied in its first
/// session; A is evicted (one session, client B registers), registers
/// again, and then a delayed copy of its old request 1 arrives. Request
/// numbers restart in a session, so before requests named their session the
/// copy passed for the new session's request 1 and was applied twice.
#[test]
fn a_delayed_request_of_an_evicted_session_is_not_applied_in_the_next_one() {
    let mut cluster = Cluster::with_sessions(1, 1);
    let (a, b) = (client(0), client(1));
    cluster.register(a, 0);
    cluster.deliver_all();
    cluster.append(a, 0, 1, b"x");
    let delayed = cluster.queue.last().cloned().expect("the request is queued");
    cluster.deliver_all();
    assert!(cluster.replied(a, 1));

    cluster.register(b, 0);
    cluster.deliver_all();
    cluster.append(a, 0, 2, b"y");
    cluster.deliver_all();
    let evicted = cluster.replies.iter().any(|(c, h)| *c == a && h.command == Command::Eviction);
    assert!(evicted, "B's register evicted A");
    cluster.register(a, 0);
    cluster.deliver_all();

    cluster.queue.push(delayed);
    cluster.deliver_all();
    let copies = cluster.replica(0).state_machine().messages.iter().filter(|m| m.as_slice() == b"x").count();
    assert_eq!(copies, 1, "request 1 of A's first session was applied {copies} times");
}

/// Found by the simulator (view-churn seed 1910 after the timeout change):
/// a replica that sat in a minority with the old primary holds that
/// primary's uncommitted view-0 prepares. When it becomes primary of a later
/// view and the canonical log (from a replica that checkpointed past them)
/// does not reach down to them, the old `install_log` kept those stale
/// entries below the gap and sent them out in its start_view as part of the
/// new view's log; a replica that had committed other ops there refused it
/// (and one that had not would have installed them).
#[test]
fn a_new_primary_does_not_ship_its_stale_minority_prepares_below_the_canonical_log() {
    let mut cluster = Cluster::new(5);
    let all = [0, 1, 2, 3, 4];
    register_clients(&mut cluster, 0, 12);
    cluster.run(&all, 10);

    // R0 (primary of view 0) and R2 in a minority: R2 takes R0's
    // uncommitted ops 13..20.
    cluster.cut(&[0, 2], &[1, 3, 4]);
    for index in 0..8 {
        cluster.append(client(index), 0, 1, format!("minority-{index}").as_bytes());
        cluster.deliver_all();
    }
    assert_eq!(cluster.replica(2).op(), 20);
    assert_eq!(cluster.replica(2).commit_min(), 12);

    // The majority starts view 1 (R1) and commits other ops 13..20.
    assert!(cluster.run_until(&[1, 3, 4], 1_000, |c| normal_in(c, 1, 1)));
    for index in 0..8 {
        cluster.append(client(index), 1, 1, format!("majority-{index}").as_bytes());
        cluster.deliver_all();
    }
    cluster.run(&[1, 3, 4], 10);
    assert_eq!(cluster.replica(4).commit_min(), 20, "R4 committed the majority's 13..20");
    assert_eq!(cluster.replica(4).checkpoint_op(), 16);

    // R4 drops out; R0 joins the majority, which commits on past a
    // checkpoint at 32.
    cluster.heal();
    cluster.cut(&[2], &[0, 1, 3, 4]);
    cluster.cut(&[4], &[0, 1, 2, 3]);
    assert!(
        cluster.run_until(&[0, 1, 3], 1_000, |c| c.replica(0).view() == 1 && c.replica(0).status() == Status::Normal)
    );
    let mut request = 2;
    while cluster.replica(3).checkpoint_op() < 32 {
        for index in 0..8 {
            cluster.append(client(index), 1, request, format!("more-{index}-{request}").as_bytes());
            cluster.deliver_all();
        }
        cluster.run(&[0, 1, 3], 2);
        request += 1;
        assert!(request < 10, "the majority reaches a checkpoint at 32");
    }

    // R1 is cut off; view 2's primary is R2, the replica with the stale
    // minority prepares.
    cluster.heal();
    cluster.cut(&[1], &[0, 2, 3, 4]);
    let started = cluster.run_until(&[0, 2, 3, 4], 2_000, |c| normal_in(c, 2, 2));
    assert!(started, "R2 starts view 2");
    cluster.run(&[0, 2, 3, 4], 20);
    let refusals: u64 = [0, 2, 3, 4].iter().map(|&r| cluster.replica(r).stats().committed_conflicts).sum();
    assert_eq!(refusals, 0, "no replica was offered a log contradicting its commits");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);

    cluster.heal();
    let converged = cluster.run_until(&all, 3_000, |c| {
        let commit = c.replica(2).commit_min();
        all.iter().all(|&r| c.replica(r).status() == Status::Normal && c.replica(r).commit_min() == commit)
    });
    assert!(converged, "the cluster converges");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// Found by the simulator (disk-rot seed 32984, liveness): the only durable
/// copies of uncommitted ops sit in one replica's journal above a slot that
/// rotted. View 1's primary R1 prepares ops 7 and 8 while R0 and R2 are
/// down; R2 comes back and installs R1's start_view (headers through 8, no
/// bodies); R1 crashes; the slot of op 5 rots on R1's disk. At restart the
/// hash chain from R1's view headers breaks at 5, and the old
/// `recover_log` dropped every prepare above it, 7 and 8 included, though
/// they were valid and still on its disk. View 2's canonical log (R2's)
/// names 7 and 8, nobody could repair their bodies, and the cluster
/// wedged at commit 6 forever.
#[test]
fn prepares_above_a_rotten_slot_repair_the_canonical_log_after_restart() {
    let all = [0, 1, 2];
    let mut cluster = only_r1_holds_7_and_8(Headers::ReachR2);

    // The slot of op 5 rots on R1's disk (other copies of 5 exist: R0's).
    cluster.rot(1, 5);
    assert!(cluster.disks[1].journal.contains_key(&7) && cluster.disks[1].journal.contains_key(&8));
    for r in all {
        cluster.restart(r);
    }
    assert_eq!(cluster.status(1), Status::Recovering, "a faulty journal restarts Recovering");
    assert!(cluster.replica(1).op() < 7, "R1's log ends below the broken chain: it cannot vouch for 6..8");

    // View 2 (R2 primary) starts from R2's log through 8; R1 installs it.
    // The bodies of 7 and 8 exist only on R1's disk: the cluster must find
    // them there and commit through 8.
    let converged = converge(&mut cluster, &all, 8);
    assert!(converged.is_ok(), "the cluster commits 7 and 8 from R1's journal: {converged:?}");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// The same story with no copy left anywhere: R1's disk is lost instead of
/// one slot. View 2's canonical log (R2's) still names 7 and 8, whose
/// bodies no replica holds, and without a way to truncate uncommitted ops
/// that no quorum can have committed (TigerBeetle's nacks in the view
/// change) the cluster wedged. 7 and 8 were never committed: only their
/// primary R1 held them. R0 and R2 both nack them (2 of 3, a nack quorum),
/// so view 2's log ends at 6. The simulator draws the same loss since a
/// wipe may take the only copy of an uncommitted prepare (view-churn seed
/// 31, and 1783 at the old wipe rate).
#[test]
fn uncommitted_ops_whose_only_copy_was_lost_are_truncated_by_the_view_change() {
    let all = [0, 1, 2];
    let mut cluster = only_r1_holds_7_and_8(Headers::ReachR2);
    cluster.restart(0);
    cluster.restart(2);
    cluster.wipe_and_rejoin(1);
    let converged = converge(&mut cluster, &all, 6);
    assert!(converged.is_ok(), "the cluster drops 7 and 8 and goes on: {converged:?}");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// The 5-replica form of the same loss, with no restart to force a view
/// change: R0 (view 0's primary) prepared 5 and 6 alone, restarted, and its
/// do_view_change made them part of view 1's log; view 1's primary R1
/// installed their headers, and R0's disk was lost before anyone repaired
/// their bodies. R1 keeps sending commit heartbeats, so no backup ever
/// times out: R1 must abdicate, and view 2's do_view_changes (four
/// replicas without the bodies, nack quorum 3 of 5) truncate 5 and 6.
#[test]
fn a_primary_waiting_on_lost_bodies_abdicates_and_five_replicas_truncate_them() {
    let all = [0, 1, 2, 3, 4];
    let mut cluster = Cluster::new(5);
    register_clients(&mut cluster, 0, 4);
    cluster.run(&all, 5);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == 4));

    // R0 prepares 5 and 6; no prepare leaves it.
    cluster.cut(&[0], &[1, 2, 3, 4]);
    for index in 0..2 {
        cluster.append(client(index), 0, 1, format!("only-on-r0-{index}").as_bytes());
        cluster.deliver_all();
    }
    assert_eq!(cluster.replica(0).op(), 6);
    let lost: Vec<u128> = [5, 6].iter().map(|op| cluster.disks[0].journal[op].0.checksum).collect();

    // R0 restarts (a restarted primary never resumes its view): view 1
    // among R0, R1 and R2, whose canonical log is R0's. Nothing R0 sends
    // but its votes arrives: no body of 5 or 6 leaves it.
    cluster.crash(0);
    cluster.restart(0);
    cluster.heal();
    cluster.cut(&[3, 4], &[0, 1, 2]);
    let r0_votes_only = |e: &Envelope| e.from == Sender::Replica(0) && is(e, Command::Prepare);
    let started = run_dropping_until(&mut cluster, &[0, 1, 2], 500, r0_votes_only, |c| normal_in(c, 1, 1));
    assert!(started, "R1 starts view 1");
    assert_eq!(cluster.replica(1).op(), 6, "view 1's log names R0's 5 and 6");
    assert!(!cluster.replica(1).has_body(5) && !cluster.replica(1).has_body(6));

    // R0's disk is lost.
    cluster.wipe_and_rejoin(0);
    cluster.heal();
    let _ = shoal_vsr::marks::take();
    let converged = converge(&mut cluster, &all, 4);
    assert!(converged.is_ok(), "the cluster drops 5 and 6 and goes on: {converged:?}");
    let marks = shoal_vsr::marks::take();
    assert!(marks.contains_key(shoal_vsr::marks::PRIMARY_ABDICATED), "{marks:?}");
    assert!(marks.contains_key(shoal_vsr::marks::VIEW_CHANGE_NACK_TRUNCATION), "{marks:?}");
    assert!(cluster.replica(1).view() >= 2, "view 1's primary handed over");
    for r in all {
        let held = [5, 6].iter().filter_map(|op| cluster.replica(r).header(*op)).any(|h| lost.contains(&h.checksum));
        assert!(!held, "replica {r} still holds a lost op");
    }

    // The clients retry: new ops 5 and 6 commit everywhere.
    let primary = (0..5).find(|&r| cluster.replica(r).is_primary()).expect("a primary");
    for index in 0..2 {
        cluster.append(client(index), primary, 1, format!("retried-{index}").as_bytes());
        cluster.deliver_all();
    }
    let converged = converge(&mut cluster, &all, 6);
    assert!(converged.is_ok(), "the retries commit: {converged:?}");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// How a backup loses the body of an op it acknowledged.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Loss {
    /// Its disk is wiped; it rejoins through view 1's start_view.
    Wipe,
    /// The op's journal slot rots; it restarts voting (its view headers
    /// name 5, its log's head), its nack floor raised to 5.
    Rot,
}

/// Op 5 is committed by R0 (view 0's primary) and R2, and the client is
/// told. R0 is cut off before anyone else learns it; view 1 (R1) takes R2's
/// log, and R2 acknowledges 5 again, but R1 never gets the body. Then R2
/// loses its copy of 5 (`loss`) and installs view 1's start_view: its
/// header of 5 has no body. When R1 abdicates, the do_view_changes of R1
/// and R2 both lack the body, and a naive nack (no body, so never
/// acknowledged) from each is 2 of 3 replicas: a nack quorum, which would
/// truncate a committed op. R2's nack floor (the head of the start_view
/// that ended its loss, or for a rotten slot the head its view headers
/// named at restart) keeps it from nacking 5; the view change waits
/// for R0, whose copy survives, and 5 stays.
fn a_backup_that_lost_an_acknowledged_op_does_not_nack_it(loss: Loss) {
    let all = [0, 1, 2];
    let mut cluster = Cluster::new(3);
    register_clients(&mut cluster, 0, 4);
    cluster.run(&all, 5);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == 4));

    // Op 5: R0 and R2 hold it, R0 commits it and replies.
    cluster.append(client(0), 0, 1, b"committed-by-r0-and-r2");
    cluster.deliver_where(|e| matches!(e.from, Sender::Client(_)));
    assert_eq!(cluster.drop_where(|e| e.between(0, 1) && is(e, Command::Prepare)), 1);
    cluster.deliver_all();
    assert_eq!(cluster.replica(0).commit_min(), 5);
    assert!(cluster.replied(client(0), 1), "the client was told op 5 committed");
    let committed = cluster.replica(0).header(5).expect("R0 holds 5").checksum;
    assert_eq!(cluster.replica(2).commit_max(), 4, "only R0 knows 5 committed");

    // View 1 (R1 primary) from R1 and R2; R2 never sends R1 the body.
    cluster.cut(&[0], &[1, 2]);
    let no_body_for_r1 = |e: &Envelope| e.between(2, 1) && is(e, Command::Prepare);
    let started = run_dropping_until(&mut cluster, &[1, 2], 500, no_body_for_r1, |c| {
        normal_in(c, 1, 1) && c.replica(2).view() == 1 && c.status(2) == Status::Normal
    });
    assert!(started, "R1 starts view 1 and R2 installs it");
    assert_eq!(cluster.replica(1).op(), 5);
    assert!(!cluster.replica(1).has_body(5));
    assert_eq!(cluster.replica(1).commit_max(), 4, "R1 does not know 5 committed");

    // R2 loses its copy of 5 and installs view 1's start_view again. R0
    // answers R2's rejoin probe (its view), and nothing else.
    match loss {
        Loss::Wipe => cluster.wipe_and_rejoin(2),
        Loss::Rot => {
            cluster.crash(2);
            cluster.rot(2, 5);
            cluster.restart(2);
        }
    }
    match loss {
        Loss::Wipe => assert_eq!(cluster.status(2), Status::Recovering),
        // Its view headers still name 5, its log's head: it knows how far it
        // acknowledged, so it votes at once, its floor already durable.
        Loss::Rot => {
            assert_eq!(cluster.status(2), Status::Normal);
            assert!(cluster.disks[2].superblock.nack_floor >= 5, "R2's nack floor is durable at restart");
        }
    }
    cluster.heal();
    cluster.cut(&[0], &[1]);
    let only_r0_answers =
        |e: &Envelope| no_body_for_r1(e) || e.from == Sender::Replica(0) && !is(e, Command::RejoinView);
    let sent_before = cluster.sent.len();
    let installed = run_dropping_until(&mut cluster, &[1, 2], 500, only_r0_answers, |c| {
        c.status(2) == Status::Normal && c.replica(2).view() >= 1
    });
    assert!(installed, "R2 installs view 1's start_view");
    assert!(!cluster.replica(2).has_body(5), "R2's copy of 5 is lost");
    assert!(cluster.disks[2].superblock.nack_floor >= 5, "R2's nack floor is durable");

    // R1 abdicates (it waits on 5's body); view changes come and go while
    // R0 stays cut off: none may truncate 5.
    cluster.heal();
    cluster.cut(&[0], &[1, 2]);
    cluster.run(&[1, 2], 400);
    assert!(cluster.replica(1).view() >= 2, "R1 abdicated");
    for r in [1, 2] {
        assert_eq!(cluster.replica(r).header(5).map(|h| h.checksum), Some(committed), "R{r} keeps op 5");
    }
    // The counterfactual, from the do_view_changes they sent: R1's nacks 5,
    // and R2's would too (no body) but for its floor.
    let dvcs: Vec<&Envelope> = cluster.sent[sent_before..].iter().filter(|e| is(e, Command::DoViewChange)).collect();
    let nack_states = |r: u8| {
        dvcs.iter().filter(move |e| e.from == Sender::Replica(r)).map(|e| {
            let nacks = e.message.header.do_view_change_nacks().expect("a do_view_change states its nacks");
            let headers = shoal_vsr::message::decode_headers(&e.message.body).expect("valid");
            let index = headers.iter().position(|h| h.op == 5).expect("names op 5");
            (nacks.floor, nacks.present & (1 << index) != 0)
        })
    };
    let r2: Vec<(u64, bool)> = nack_states(2).collect();
    assert!(!r2.is_empty() && r2.iter().all(|&(floor, present)| floor >= 5 && !present), "{r2:?}");
    assert!(nack_states(1).all(|(floor, present)| floor < 5 && !present), "R1 nacks 5");

    // Healed, R0's copy brings 5 back everywhere.
    cluster.heal();
    let converged = converge(&mut cluster, &all, 5);
    assert!(converged.is_ok(), "op 5 commits everywhere: {converged:?}");
    for r in all {
        assert_eq!(cluster.replica(r).header(5).map(|h| h.checksum), Some(committed));
    }
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

#[test]
fn a_wiped_backup_does_not_nack_an_op_it_acknowledged_before_the_wipe() {
    a_backup_that_lost_an_acknowledged_op_does_not_nack_it(Loss::Wipe);
}

#[test]
fn a_backup_does_not_nack_an_op_whose_slot_was_faulty() {
    a_backup_that_lost_an_acknowledged_op_does_not_nack_it(Loss::Rot);
}

/// Run `replicas` until `done`, losing every message `lost` matches.
fn run_dropping_until(
    cluster: &mut Cluster,
    replicas: &[u8],
    ticks_max: usize,
    lost: impl Fn(&Envelope) -> bool,
    mut done: impl FnMut(&Cluster) -> bool,
) -> bool {
    for _ in 0..ticks_max {
        if done(cluster) {
            return true;
        }
        for &r in replicas {
            cluster.tick(r);
        }
        cluster.drop_where(&lost);
        cluster.deliver_where(|e| !lost(e));
        cluster.drop_where(&lost);
    }
    done(cluster)
}

/// The other side of the same fix: prepares R1 kept aside are not vouched
/// for by R1 itself. When no other replica ever saw 7 and 8, view 2's log
/// ends at 6 and R1 must neither acknowledge nor bring back its own 7 and
/// 8: the new primary prepares new ops there, and R1 takes those.
#[test]
fn prepares_kept_aside_after_a_rot_are_not_vouched_for_without_a_canonical_header() {
    let all = [0, 1, 2];
    let mut cluster = only_r1_holds_7_and_8(Headers::StayOnR1);
    let lone: Vec<u128> = [7, 8].iter().map(|op| cluster.disks[1].journal[op].0.checksum).collect();
    cluster.rot(1, 5);
    for r in all {
        cluster.restart(r);
    }
    assert_eq!(cluster.status(1), Status::Recovering);
    let sent_before = cluster.sent.len();
    let converged = converge(&mut cluster, &all, 6);
    assert!(converged.is_ok(), "view 2's log ends at 6: {converged:?}");
    let vouched = cluster.sent[sent_before..].iter().any(|e| {
        e.from == crate::harness::Sender::Replica(1)
            && (is(e, Command::PrepareOk) && lone.contains(&e.message.header.parent)
                || is(e, Command::DoViewChange) && e.message.header.op >= 7)
    });
    assert!(!vouched, "R1 vouched for a prepare no canonical header named");

    // Clients 2 and 3 retry: the new view prepares them anew at 7 and 8.
    let primary = (0..3).find(|&r| cluster.replica(r).is_primary()).expect("a primary");
    for index in 2..4 {
        cluster.append(client(index), primary, 1, format!("only-on-r1-{index}").as_bytes());
        cluster.deliver_all();
    }
    let converged = converge(&mut cluster, &all, 8);
    assert!(converged.is_ok(), "the retries commit at 7 and 8: {converged:?}");
    for op in [7, 8] {
        let checksum = cluster.replica(1).header(op).expect("held").checksum;
        assert!(!lone.contains(&checksum), "R1 holds the new view's op {op}, not its own old one");
        assert_eq!(Some(checksum), cluster.replica(0).header(op).map(|h| h.checksum));
    }
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// Run until every replica is Normal with at least `commit` applied and
/// nothing left uncommitted in its log; on failure, a one-line state of
/// each replica.
fn converge(cluster: &mut Cluster, replicas: &[u8], commit: u64) -> Result<(), Vec<String>> {
    let done = cluster.run_until(replicas, 3_000, |c| {
        replicas.iter().all(|&r| {
            let replica = c.replica(r);
            replica.status() == Status::Normal && replica.commit_min() >= commit && replica.commit_min() == replica.op()
        })
    });
    if done {
        return Ok(());
    }
    Err(replicas
        .iter()
        .map(|&r| {
            let replica = cluster.replica(r);
            let (status, view, op, commit) = (replica.status(), replica.view(), replica.op(), replica.commit_min());
            format!("r{r}: {status:?} view {view} op {op} commit {commit}")
        })
        .collect())
}

/// Whether the headers of R1's lone ops 7 and 8 reach another replica.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Headers {
    /// R2 installs R1's start_view (headers through 8, no bodies).
    ReachR2,
    /// R2 stays down: only R1 ever knew 7 and 8.
    StayOnR1,
}

/// Ops 1..6 committed; ops 7 and 8 prepared by view 1's primary R1 alone;
/// with `Headers::ReachR2`, R2 installed R1's start_view (headers through 8,
/// no bodies of 5..8). Then every replica is down (R0 holds 1..6, R2 1..4
/// or the headers through 8). The queue is empty.
fn only_r1_holds_7_and_8(headers: Headers) -> Cluster {
    let mut cluster = Cluster::new(3);
    let all = [0, 1, 2];
    register_clients(&mut cluster, 0, 4);
    cluster.run(&all, 5);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == 4), "ops 1..4 committed everywhere");

    // R2 goes down in view 0. R0, view 0's primary, restarts: a restarted
    // primary never resumes its view, so R0 and R1 start view 1 (R1).
    cluster.crash(2);
    cluster.crash(0);
    cluster.restart(0);
    cluster.deliver_all();
    assert!(normal_in(&cluster, 1, 1), "R1 is view 1's primary");

    // Ops 5 and 6 are committed by R1 and R0; then R0 crashes, and R1 makes
    // ops 7 and 8 alone: its journal holds their only copies.
    for index in 0..2 {
        cluster.append(client(index), 1, 1, format!("committed-{index}").as_bytes());
        cluster.deliver_all();
    }
    cluster.run(&[0, 1], 2);
    assert_eq!(cluster.replica(0).commit_min(), 6, "R0 committed 5 and 6");
    cluster.crash(0);
    for index in 2..4 {
        cluster.append(client(index), 1, 1, format!("only-on-r1-{index}").as_bytes());
        cluster.deliver_all();
    }
    assert_eq!(cluster.replica(1).op(), 8);
    assert_eq!(cluster.replica(1).commit_max(), 6, "7 and 8 have no quorum");

    if headers == Headers::StayOnR1 {
        cluster.crash(1);
        cluster.queue.clear();
        return cluster;
    }
    // R2 restarts in view 0. R1's retransmitted prepares tell it of view 1;
    // it asks R1 for the start_view and installs it: headers through 8,
    // bodies of 5..8 still to repair. R1 crashes before serving any.
    cluster.restart(2);
    let retransmitted = (0..50).any(|_| {
        cluster.tick(1);
        cluster.pending(|e| e.between(1, 2) && is(e, Command::Prepare)) > 0
    });
    assert!(retransmitted, "R1 retransmits its unacknowledged prepares to R2");
    cluster.deliver_where(|e| e.between(1, 2) && is(e, Command::Prepare));
    cluster.deliver_where(|e| e.between(2, 1) && is(e, Command::RequestStartView));
    cluster.deliver_where(|e| e.between(1, 2) && is(e, Command::StartView));
    assert!(cluster.replica(2).view() == 1 && cluster.status(2) == Status::Normal, "R2 installed view 1");
    assert_eq!(cluster.replica(2).op(), 8, "R2's log of view 1 names 7 and 8");
    assert!(!cluster.replica(2).has_body(7) && !cluster.replica(2).has_body(8));
    cluster.crash(1);
    cluster.crash(2);
    cluster.queue.clear();
    cluster
}

/// Found by the simulator (swarm seed 7882): a client's register was
/// retried; the retry reached a primary and was committed only after the
/// client's first session had been evicted, so it opened a second session
/// the client never learned of (it ignores a register reply once
/// registered). The client's request of its first session was then dropped
/// as stale on every try, and it waited forever. It must be told it was
/// evicted, in the session its request names.
#[test]
fn a_request_of_a_session_replaced_by_a_late_register_retry_is_answered_evicted() {
    let mut cluster = Cluster::with_sessions(1, 1);
    let (a, b) = (client(0), client(1));
    cluster.register(a, 0);
    let register_retry = cluster.queue.last().cloned().expect("the register is queued");
    cluster.deliver_all();
    cluster.append(a, 0, 1, b"x");
    let request = cluster.queue.pop().expect("the request is queued");
    assert_eq!(request.message.header.context, 1, "A's session is its register's op");

    cluster.register(b, 0);
    cluster.deliver_all();
    cluster.queue.push(register_retry);
    cluster.deliver_all();
    assert_eq!(cluster.replica(0).commit_min(), 3, "the late retry registered A again, at op 3");

    cluster.queue.push(request);
    cluster.deliver_all();
    let eviction = cluster.replies.iter().find(|(c, h)| *c == a && h.command == Command::Eviction && h.request == 1);
    let (_, eviction) = eviction.expect("A's request of its first session is answered evicted, not dropped");
    assert_eq!(eviction.context, 1, "the eviction names the session that is gone");
    assert!(!cluster.replied(a, 1), "the request of a gone session is never applied");
}
