//! Swarm seed 4877 (Liveness): an op a quorum acknowledged, whose every copy
//! was later lost with two wiped disks, is never truncated. The survivors
//! cannot tell it from a committed op, and here it was one: the client had
//! its reply. Two lost disks of three is beyond the fault model, so waiting
//! for a body nobody holds is the only safe answer; the simulator's wipe
//! rule was what let it happen (`sim/src/cluster/loss.rs`), and this story
//! pins the protocol's side: the nack quorum must not shrink to the one
//! replica that never held the op.

use shoal_vsr::header::Command;
use shoal_vsr::replica::Status;

use crate::harness::{Cluster, Envelope, Sender, client, normal_in, register_clients};

#[test]
fn an_op_whose_two_acknowledgers_lost_their_disks_is_never_truncated() {
    let all = [0, 1, 2];
    let mut cluster = Cluster::new(3);
    register_clients(&mut cluster, 0, 4);
    cluster.run(&all, 5);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == 4), "ops 1..4 committed everywhere");

    // R0 (view 0's primary) prepares op 5; only R2 gets it and acknowledges:
    // R0 commits it and answers the client.
    cluster.cut(&[0], &[1]);
    cluster.append(client(0), 0, 1, b"acked-by-r0-and-r2");
    cluster.deliver_all();
    assert!(cluster.replied(client(0), 1), "op 5 committed and answered");
    let acked = cluster.disks[0].journal[&5].0.checksum;
    assert_eq!(cluster.replica(0).commit_min(), 5);
    assert_eq!(cluster.replica(2).commit_max(), 4, "R2 never learnt the commit");

    // R0 is cut off before anyone learns the commit. R1 and R2 change the
    // view; right after R2's do_view_change (holding op 5) leaves, R2's disk
    // is lost, and it rejoins.
    cluster.cut(&[0], &[1, 2]);
    let sent_before = cluster.sent.len();
    let dvc_sent = cluster.run_until(&[1, 2], 2_000, |c| {
        c.sent[sent_before..].iter().any(|e| e.from == Sender::Replica(2) && e.command() == Command::DoViewChange)
    });
    assert!(dvc_sent, "R2 sent its do_view_change");
    cluster.wipe_and_rejoin(2);

    // R0 reaches R2 for its rejoin probe only (the plot's bridge), so R2's
    // rejoin has a quorum of answers but never repairs op 5 from R0.
    cluster.heal();
    cluster.cut(&[0], &[1]);
    let probe_only = |e: &Envelope| {
        let probe = matches!(e.command(), Command::RequestStartView | Command::RejoinView);
        !(e.between(0, 2) || e.between(2, 0)) || probe
    };
    let mut started = false;
    for _ in 0..3_000 {
        started = normal_in(&cluster, 1, 1) && cluster.status(2) == Status::Normal;
        if started {
            break;
        }
        cluster.tick(1);
        cluster.tick(2);
        cluster.deliver_where(probe_only);
        cluster.drop_where(|e| !probe_only(e));
    }
    assert!(started, "R1 starts view 1 from R2's do_view_change, and R2 rejoins it");
    for r in [1, 2] {
        assert_eq!(cluster.replica(r).header(5).map(|h| h.checksum), Some(acked), "view 1's log holds op 5");
        assert!(!cluster.replica(r).has_body(5), "R{r} never got op 5's body");
    }

    // R0's disk is lost too: no copy of op 5 is left anywhere.
    cluster.wipe_and_rejoin(0);
    cluster.heal();
    let _ = shoal_vsr::marks::take();
    cluster.run(&all, 3_000);

    // R1 alone can nack op 5 (the two rejoined replicas may have
    // acknowledged it), one short of the nack quorum: every view change
    // keeps it, and nothing commits past it.
    let marks = shoal_vsr::marks::take();
    assert!(!marks.contains_key(shoal_vsr::marks::VIEW_CHANGE_NACK_TRUNCATION), "{marks:?}");
    assert!(cluster.replica(1).view() >= 2, "view 1's primary abdicated (it cannot repair op 5)");
    for r in all {
        let replica = cluster.replica(r);
        if replica.op() >= 5 {
            assert_eq!(replica.header(5).map(|h| h.checksum), Some(acked), "R{r} holds another op 5");
        }
        assert!(replica.commit_max() <= 5, "R{r} committed past the lost op");
    }
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}
