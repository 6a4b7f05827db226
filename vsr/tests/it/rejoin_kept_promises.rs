//! A replica that lost its state but kept its superblock (both checkpoint
//! copies rotted) rejoins keeping its promises: it never installs a view
//! below the one it voted for. When it had voted for a view the cluster
//! never reached (it was cut off and kept timing out), the rejoin alone
//! would wait forever for a start_view of that view; it moves the cluster
//! up to it instead, as a `Recovering` replica does.

use shoal_vsr::header::Command;
use shoal_vsr::replica::Status;

use crate::harness::{Cluster, Sender, client, normal_in, register_clients};

/// R2 is cut off and votes for views 1, 2, 3 on its own (durable), while
/// R0 and R1 commit in view 0. R2 crashes; both its checkpoint copies rot;
/// it restarts rejoining with its superblock's view 3. R0 and R1 report
/// view 0 and R0 offers view 0's start_view: R2 must refuse it (it
/// promised view 3), move R0 and R1 up to view 3, install that view and
/// catch up with every committed op.
#[test]
fn a_replica_rejoining_above_the_cluster_view_moves_the_cluster_up_to_its_promise() {
    let all = [0, 1, 2];
    let mut cluster = Cluster::new(3);
    register_clients(&mut cluster, 0, 4);
    cluster.run(&all, 5);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == 4), "ops 1..4 committed everywhere");

    cluster.cut(&[2], &[0, 1]);
    assert!(cluster.run_until(&[2], 2_000, |c| c.replica(2).view() >= 3), "R2 voted its way to view 3 alone");
    let promised = cluster.replica(2).view();
    cluster.register(client(4), 0);
    cluster.run(&[0, 1], 5);
    assert!(normal_in(&cluster, 0, 0) && cluster.replica(0).commit_min() == 5, "R0 and R1 went on in view 0");

    cluster.crash(2);
    cluster.lose_state_keeping_promises(2);
    cluster.heal();
    let sent_before_restart = cluster.sent.len();
    cluster.restart(2);
    assert_eq!((cluster.status(2), cluster.replica(2).view()), (Status::Recovering, promised));
    assert!(cluster.replica(2).is_rejoining());

    let rejoined = cluster.run_until(&all, 2_000, |c| c.status(2) == Status::Normal);
    assert!(rejoined, "R2 rejoined (without moving the cluster up it waits forever)");
    let view = cluster.replica(2).view();
    assert!(view >= promised, "R2 installed view {view}, below the view {promised} it promised");
    let moved_up = cluster.sent[sent_before_restart..].iter().any(|e| {
        e.from == Sender::Replica(2) && e.command() == Command::StartViewChange && e.message.header.view == promised
    });
    assert!(moved_up, "R2 asked the cluster up to the view it promised");
    cluster.run(&all, 50);
    let commit = cluster.replica(0).commit_min();
    assert!(commit >= 5);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == commit), "R2 caught up");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}
