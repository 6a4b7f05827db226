//! Swarm seed 6194 (liveness): two of three replicas restart with faulty
//! journal slots and the third is alone. In group 6 view 2 (primary R2)
//! held ops 1..9 on all three replicas; R0 restarted with op 9's slot
//! faulty, R2 with the slots of 4 and 7 faulty. Both parked themselves in
//! `Recovering`, which sends no vote and no do_view_change and waits for a
//! start_view; the healthy R1 climbed views 3..6 alone, and no view could
//! ever form.
//!
//! Yet neither lost anything its log does not name: every faulty op sat at
//! or below the head its view headers named, so each knew exactly how far
//! it may have acknowledged, and lacked only bodies. Such a replica may
//! vote, as TigerBeetle's replicas with faulty WAL slots below a certain
//! head do: its do_view_change names its log to the head, says it does not
//! hold the lost bodies, and nacks nothing up to the highest op its journal
//! named (its durable nack floor). Only a replica whose journal lost an op
//! above its log's head (it cannot say what it acknowledged there) must
//! wait for a start_view, as before.

use shoal_vsr::header::Command;
use shoal_vsr::message::decode_headers;
use shoal_vsr::replica::Status;

use crate::harness::{
    Cluster, Envelope, Sender, client, normal_in, register_clients, start_view_1_without_r0_then_heal,
};

fn is(envelope: &Envelope, command: Command) -> bool {
    envelope.message.header.command == command
}

/// Three replicas, all Normal in view 1 (primary R1), whose durable view
/// headers name ops 1..4: R1 started view 1 without R0, and R0 installed
/// its start_view when it came back.
fn all_normal_in_view_1_with_headers_through_4() -> Cluster {
    let all = [0, 1, 2];
    let mut cluster = Cluster::new(3);
    register_clients(&mut cluster, 0, 4);
    cluster.run(&all, 5);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == 4));

    start_view_1_without_r0_then_heal(&mut cluster);
    for r in all {
        let named: Vec<u64> = cluster.disks[r as usize].superblock.view_headers.iter().map(|h| h.op).collect();
        assert_eq!(named.first(), Some(&4), "R{r}'s durable view headers name its head");
        assert_eq!(cluster.replica(r).op(), 4);
    }
    cluster
}

#[test]
fn two_replicas_with_faulty_slots_below_their_head_vote_a_view_into_being() {
    let all = [0, 1, 2];
    let mut cluster = all_normal_in_view_1_with_headers_through_4();

    // View 1's primary R1 and the backup R0 crash; R1 comes back without
    // op 2's body, R0 without op 4's (its head). R2 is the only replica
    // with an intact journal.
    cluster.crash(1);
    cluster.crash(0);
    cluster.rot(1, 2);
    cluster.rot(0, 4);
    cluster.restart(1);
    cluster.restart(0);
    for r in [0, 1] {
        assert_eq!(cluster.replica(r).op(), 4, "R{r}'s view headers still name its head");
        assert!(!cluster.replica(r).has_body(if r == 0 { 4 } else { 2 }), "R{r} lost a body");
        assert!(cluster.replica(r).repairing_faulty_slots(), "R{r}'s disk is impaired until repaired");
    }

    // No view can form without one of R0 and R1: each must vote.
    let sent_before = cluster.sent.len();
    let started = cluster.run_until(&all, 2_000, |c| {
        let view = c.replica(2).view();
        view >= 2 && all.iter().all(|&r| normal_in(c, r, view))
    });
    let states: Vec<String> = all
        .iter()
        .map(|&r| {
            let replica = cluster.replica(r);
            format!(
                "r{r}: {:?} view {} op {} commit {}",
                replica.status(),
                replica.view(),
                replica.op(),
                replica.commit_min()
            )
        })
        .collect();
    assert!(started, "a view forms with the replicas whose slots are faulty: {states:?}");

    // They voted without vouching for what they lost: every do_view_change
    // of R0 says it lacks op 4's body and nacks nothing through 4; R1's
    // likewise for op 2.
    for (r, lost) in [(0u8, 4u64), (1, 2)] {
        let dvcs: Vec<&Envelope> = cluster.sent[sent_before..]
            .iter()
            .filter(|e| e.from == Sender::Replica(r) && is(e, Command::DoViewChange))
            .collect();
        for dvc in dvcs {
            let nacks = dvc.message.header.do_view_change_nacks().expect("a do_view_change states its nacks");
            assert!(nacks.floor >= 4, "R{r} nacks nothing it may have acknowledged: floor {}", nacks.floor);
            let headers = decode_headers(&dvc.message.body).expect("valid headers");
            if let Some(index) = headers.iter().position(|h| h.op == lost) {
                assert_eq!(nacks.present & (1 << index), 0, "R{r} claims op {lost}'s body it lost");
            }
        }
    }
    assert!(cluster.disks[0].superblock.nack_floor >= 4, "R0's floor is durable");

    // Repair brings the bodies back; a new request commits everywhere.
    let converged = cluster.run_until(&all, 2_000, |c| {
        all.iter().all(|&r| c.replica(r).status() == Status::Normal && (1..=4).all(|op| c.replica(r).has_body(op)))
    });
    assert!(converged, "the lost bodies are repaired from peers");
    assert!(all.iter().all(|&r| !cluster.replica(r).repairing_faulty_slots()));
    let primary = all.into_iter().find(|&r| cluster.replica(r).is_primary()).expect("a primary");
    cluster.append(client(0), primary, 1, b"after-the-wedge");
    let committed = cluster.run_until(&all, 2_000, |c| all.iter().all(|&r| c.replica(r).commit_min() == 5));
    assert!(committed, "op 5 commits on every replica");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// The other side: a faulty op above the log's head (the view headers end
/// at 4, the journal held an acknowledged 5 that rotted). The replica
/// cannot tell what it acknowledged there, so it must not vote; it waits
/// for a start_view, which a healthy quorum sends.
#[test]
fn a_replica_that_lost_an_op_above_its_log_head_does_not_vote() {
    let all = [0, 1, 2];
    let mut cluster = all_normal_in_view_1_with_headers_through_4();
    cluster.append(client(0), 1, 1, b"acked-by-r0");
    let acked = cluster.run_until(&all, 100, |c| c.disks[0].journal.contains_key(&5) && c.replica(1).commit_min() == 5);
    assert!(acked, "R0 holds op 5 and R1 committed it");

    cluster.crash(0);
    cluster.rot(0, 5);
    cluster.restart(0);
    assert_eq!(cluster.replica(0).op(), 4, "nothing names op 5 but the lost slot");
    assert_eq!(cluster.status(0), Status::Recovering);
    let sent_before = cluster.sent.len();
    let installed = cluster.run_until(&all, 1_000, |c| normal_in(c, 0, c.replica(1).view()));
    assert!(installed, "R0 installs a start_view");
    let voted =
        cluster.sent[sent_before..].iter().any(|e| e.from == Sender::Replica(0) && is(e, Command::DoViewChange));
    assert!(!voted, "R0 sent a do_view_change while it could not say what it acknowledged");
    let converged = cluster.run_until(&all, 2_000, |c| all.iter().all(|&r| c.replica(r).commit_min() == 5));
    assert!(converged, "op 5 is repaired and applied everywhere");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// Disk-rot seed 115705's replica 2 (session 15): a lost body below valid
/// prepares, above the view headers. R0 holds ops 5 and 6 past its view
/// headers (which end at 4); op 5's slot rots but its header copy survives.
/// The log used to stop at 4 (op 6 no longer chained to anything), the
/// journal named op 6 above that head, and R0 waited `Recovering`: with
/// R1 down, R2 could form no view. The journal now hands up op 5's header
/// from its copy: R0's log reaches 6 with op 5 bodiless, its head is
/// certain, and it votes, nacking nothing through 6.
#[test]
fn a_lost_body_whose_header_survives_keeps_the_log_whole_and_the_replica_votes() {
    let all = [0, 1, 2];
    let mut cluster = all_normal_in_view_1_with_headers_through_4();
    cluster.append(client(0), 1, 1, b"five");
    cluster.append(client(1), 1, 1, b"six");
    let acked = cluster.run_until(&all, 200, |c| c.disks[0].journal.contains_key(&6) && c.replica(1).commit_min() == 6);
    assert!(acked, "R0 holds ops 5 and 6 and R1 committed them");

    cluster.crash(0);
    cluster.rot_body(0, 5);
    cluster.restart(0);
    assert_eq!(cluster.replica(0).op(), 6, "op 5's header keeps the chain to op 6");
    assert!(!cluster.replica(0).has_body(5));
    assert_ne!(cluster.status(0), Status::Recovering, "R0's head is certain");

    cluster.crash(1);
    let sent_before = cluster.sent.len();
    let survivors = [0, 2];
    let started = cluster.run_until(&survivors, 2_000, |c| {
        let view = c.replica(2).view();
        view >= 2 && survivors.iter().all(|&r| normal_in(c, r, view))
    });
    assert!(started, "R0 and R2 form a view without R1");
    for envelope in &cluster.sent[sent_before..] {
        if envelope.from == Sender::Replica(0) && is(envelope, Command::DoViewChange) {
            let nacks = envelope.message.header.do_view_change_nacks().expect("a do_view_change states its nacks");
            assert!(nacks.floor >= 6, "R0 nacks nothing it may have acknowledged: floor {}", nacks.floor);
        }
    }
    cluster.restart(1);
    let converged = cluster.run_until(&all, 2_000, |c| all.iter().all(|&r| c.replica(r).commit_min() == 6));
    assert!(converged, "op 5 is repaired and every replica applies ops 5 and 6");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}
