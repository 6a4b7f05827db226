//! A do_view_change sent before a disk wipe and delivered after the rejoin
//! (the "residual gap" of the rejoin design: no incarnation number tells
//! the new primary that its sender has since lost its disk).
//!
//! Why it is harmless: a replica sends a do_view_change for view v only once
//! a quorum (itself included) voted for v, and each of those voters holds a
//! durable view >= v. Its rejoin probe needs answers from a quorum of the
//! *other* replicas, which shares a member with the other q - 1 voters
//! ((q - 1) + q - (n - 1) = 1 for n = 2q - 1), so some answer reports a
//! view of at least v, and the rejoining replica installs no start_view
//! older than v. It
//! never acts in a view below the one its lost vote was for, so the stale
//! vote (a true statement of its log at the time) contradicts nothing it
//! did since.

use shoal_vsr::header::Command;
use shoal_vsr::replica::Status;

use crate::harness::{Cluster, Envelope, client, normal_in, register_clients};

fn is(envelope: &Envelope, command: Command) -> bool {
    envelope.command() == command
}

/// R2 votes for view 1 (its do_view_change to R1 is held in the network),
/// then loses its disk and rejoins while R0 (view 0's primary) still
/// answers it: R0 offers view 0's start_view, R1 reports view 1. R2 must
/// not take view 0. Then the held do_view_change reaches R1, which starts
/// view 1 from it; R2 installs view 1, and every committed op survives.
#[test]
fn a_do_view_change_sent_before_a_wipe_and_delivered_after_the_rejoin_is_harmless() {
    let all = [0, 1, 2];
    let mut cluster = Cluster::new(3);
    register_clients(&mut cluster, 0, 4);
    cluster.run(&all, 5);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == 4), "ops 1..4 committed everywhere");
    let committed: Vec<u128> = (1..=4).map(|op| cluster.replica(0).header(op).expect("R0 holds it").checksum).collect();

    // R0 is cut off; R1 and R2 vote for view 1. R2's do_view_change to R1
    // (and its retransmissions) is held in the network.
    cluster.cut(&[0], &[1, 2]);
    let mut held: Vec<Envelope> = Vec::new();
    let dvc_from_r2 = |e: &Envelope| e.between(2, 1) && is(e, Command::DoViewChange);
    for _ in 0..500 {
        for r in [1, 2] {
            cluster.tick(r);
        }
        cluster.deliver_where(|e| !dvc_from_r2(e));
        let mut index = 0;
        while index < cluster.queue.len() {
            if dvc_from_r2(&cluster.queue[index]) {
                held.push(cluster.queue.remove(index));
            } else {
                index += 1;
            }
        }
        if !held.is_empty() {
            break;
        }
    }
    assert!(!held.is_empty(), "R2 sent a do_view_change for view 1");
    assert_eq!(held[0].message.header.view, 1);
    assert_eq!(cluster.replica(1).view(), 1);
    assert_eq!(cluster.status(1), Status::ViewChange, "R1 waits for a second do_view_change");

    // R2's disk is lost. It rejoins; R0 reaches it again (and answers its
    // probe with view 0, and with view 0's start_view), R1 reports view 1.
    cluster.wipe_and_rejoin(2);
    cluster.heal();
    cluster.cut(&[0], &[1]);
    let start_views_from_r0 = cluster.sent.len();
    cluster.run(&[0, 2], 50);
    let offered_view_0 = cluster.sent[start_views_from_r0..]
        .iter()
        .any(|e| e.between(0, 2) && is(e, Command::StartView) && e.message.header.view == 0);
    assert!(offered_view_0, "R0 offered R2 view 0's start_view");
    assert!(
        cluster.status(2) == Status::Recovering || cluster.replica(2).view() >= 1,
        "R2 took view 0, older than the view its lost vote was for"
    );

    // The stale do_view_change arrives: R1 starts view 1 from its own log
    // and R2's pre-wipe one. R2 installs it.
    cluster.queue.extend(held);
    let started = cluster.run_until(&[1, 2], 500, |c| normal_in(c, 1, 1) && normal_in(c, 2, 1));
    assert!(started, "R1 starts view 1 with the stale vote, and R2 installs it");

    // Every replica converges on one history holding every committed op.
    cluster.heal();
    cluster.append(client(0), 1, 1, b"after-the-rejoin");
    let converged = cluster.run_until(&all, 2_000, |c| {
        let commit = c.replica(1).commit_min();
        commit >= 5 && all.iter().all(|&r| c.status(r) == Status::Normal && c.replica(r).commit_min() == commit)
    });
    assert!(converged, "the cluster converges after the heal");
    for r in all {
        for (index, checksum) in committed.iter().enumerate() {
            let op = index as u64 + 1;
            let held = cluster.replica(r).header(op).map(|h| h.checksum);
            assert!(held.is_none_or(|c| c == *checksum), "R{r} holds another op {op}");
        }
    }
    assert!(cluster.replied(client(0), 1), "the append after the rejoin committed");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}
