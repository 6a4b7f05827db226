//! Swarm seed 43244 (Liveness, session 13, tree 4225bd5; diagnosed in
//! session 15). View 1's primary (R1) lost its disk and came back
//! rejoining; the old primary of view 0 (R0) had been cut off the whole
//! safety phase. The only replica that could start a view change was R2,
//! a backup of view 1, and it did so only 1.9 s after the heal: prepares
//! R1 had sent long before (ops 834..1566, R2's head was 1868) kept
//! arriving late, each from "the primary of my view", and each reset R2's
//! normal timeout (400-600 ms). A backup now resets that timeout only on
//! evidence that the primary is alive now: a prepare above every op the
//! primary showed, or a commit heartbeat naming no op below one it showed.

use shoal_vsr::header::Command;

use crate::harness::{Cluster, Envelope, Sender, normal_in, register_clients, start_view_1_without_r0_then_heal};

#[test]
fn late_copies_of_a_dead_primarys_old_prepares_do_not_keep_its_backups_waiting() {
    let all = [0, 1, 2];
    let mut cluster = Cluster::new(3);
    register_clients(&mut cluster, 0, 4);
    cluster.run(&all, 5);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == 4), "ops 1-4 committed in view 0");
    let stale: Vec<Envelope> = cluster
        .sent
        .iter()
        .filter(|e| e.from == Sender::Replica(0) && e.command() == Command::Prepare && e.message.header.op == 2)
        .cloned()
        .collect();
    assert_eq!(stale.len(), 2, "op 2's prepare went to both backups");

    cluster.crash(0);
    let backups = [1, 2];
    // Every 30 ticks (300 ms, under the normal timeout's 400 ms) the network
    // hands each backup another late copy of op 2's prepare from view 0's
    // primary.
    let mut view_started = false;
    for round in 0..100 {
        if round % 3 == 0 {
            for envelope in &stale {
                cluster.redeliver_later(envelope.clone());
            }
        }
        view_started = cluster.run_until(&backups, 10, |c| {
            let view = c.replica(1).view();
            view >= 1 && backups.iter().all(|&r| normal_in(c, r, view))
        });
        if view_started {
            break;
        }
    }
    assert!(view_started, "the backups start a view without the dead primary despite its late prepares");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// The other side: a live primary's heartbeats keep counting even after a
/// late prepare of an older view, naming an op far above this view's head,
/// raised what the backup believes the primary holds (`primary_op`, which
/// drives repair). The timeout rule looks only at what this view's primary
/// itself has shown; judged by `primary_op`, the backup would start a view
/// change every normal timeout while its primary is alive and idle.
#[test]
fn a_late_old_view_prepare_above_the_head_does_not_silence_a_live_primary() {
    let all = [0, 1, 2];
    let mut cluster = Cluster::new(3);
    register_clients(&mut cluster, 0, 2);
    cluster.run(&all, 5);
    let old_view_prepare = cluster
        .sent
        .iter()
        .find(|e| e.from == Sender::Replica(0) && e.command() == Command::Prepare && e.to == 2)
        .cloned()
        .expect("view 0's primary sent R2 a prepare");

    start_view_1_without_r0_then_heal(&mut cluster);
    let head = cluster.replica(1).op();

    // A late copy of a view-0 prepare, re-sealed at an op far above the head.
    let mut late = old_view_prepare;
    let mut header = late.message.header;
    header.op = head + 10;
    header.set_checksums(&late.message.body);
    late.message = shoal_vsr::message::Message::new(header, late.message.body.clone());
    cluster.redeliver_later(late);
    cluster.deliver_all();

    // The primary is alive and idle: its heartbeats must keep R2 in view 1.
    cluster.run(&all, 300);
    assert!(all.iter().all(|&r| normal_in(&cluster, r, 1)), "no view change while view 1's primary is alive");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}
