//! Story (swarm seed 11322): a start_view that ends below a rejoining
//! replica's commit point because it was sent when its view began, not
//! because the view lost committed ops. The replica drops it as late; it
//! must not refuse it as a contradiction (the simulator's Agreement
//! checker counts every refusal as a safety violation somewhere).

use shoal_vsr::header::Command;
use shoal_vsr::replica::Status;

use crate::harness::{
    Cluster, JOURNAL_SLOT_COUNT, Sender, normal_in, register_clients, start_view_1_without_r0_then_heal,
};

/// View 1 starts (R1 primary) with the log at op 4; R0 and R1 then commit
/// past R2's journal window in view 1. R2 loses its state (both checkpoint
/// copies rot), rejoins, and catches up by state transfer: it installs a
/// checkpoint of ops prepared in view 1. A copy of view 1's first
/// start_view (op 4), delayed in the network, then reaches it.
#[test]
fn a_late_start_view_of_the_view_whose_checkpoint_a_rejoining_replica_installed_is_dropped_not_refused() {
    let all = [0, 1, 2];
    let mut cluster = Cluster::new(3);
    register_clients(&mut cluster, 0, 4);
    start_view_1_without_r0_then_heal(&mut cluster);
    let first_start_view = cluster
        .sent
        .iter()
        .find(|e| e.from == Sender::Replica(1) && e.command() == Command::StartView && e.message.header.view == 1)
        .expect("R1 sent view 1's start_view")
        .clone();
    let start_op = first_start_view.message.header.op;
    assert_eq!(start_op, 4, "view 1 began with the log of view 0");

    // Past R2's journal window, so that a start_view of now sends it to
    // state transfer before it installs any view.
    register_clients(&mut cluster, 1, JOURNAL_SLOT_COUNT as u32 + 8);
    cluster.run(&all, 10);
    let head = cluster.replica(1).op();
    let commits: Vec<u64> = all.iter().map(|&r| cluster.replica(r).commit_min()).collect();
    assert!(head > JOURNAL_SLOT_COUNT && commits.iter().all(|&c| c == head), "head {head}, commits {commits:?}");

    cluster.crash(2);
    cluster.lose_state_keeping_promises(2);
    cluster.restart(2);
    assert_eq!(cluster.status(2), Status::Recovering);
    // R2 learns view 1 from both peers' answers to its probes and catches
    // up by state transfer; the current start_views to it are lost, so it
    // has installed no view yet when the late one comes.
    let sent_before = cluster.sent.len();
    let mut ready = false;
    for _ in 0..2_000 {
        for r in all {
            cluster.tick(r);
        }
        cluster.drop_where(|e| e.to == 2 && e.command() == Command::StartView);
        cluster.deliver_where(|e| !(e.to == 2 && e.command() == Command::StartView));
        let answered = |from: u8, sent: &[crate::harness::Envelope]| {
            sent.iter().any(|e| e.between(from, 2) && e.command() == Command::RejoinView)
        };
        let sent = &cluster.sent[sent_before..];
        if answered(0, sent) && answered(1, sent) && cluster.replica(2).commit_min() > start_op {
            ready = true;
            break;
        }
    }
    assert!(ready, "R2 learned view 1 from a quorum and installed a checkpoint from view 1");
    assert_ne!(cluster.status(2), Status::Normal, "R2 has not installed view 1 yet");
    let commit_before = cluster.replica(2).commit_min();
    let anchor_view = cluster.replica(2).header(commit_before).map(|h| h.view);
    assert_eq!(anchor_view, Some(1), "the op at R2's commit point was prepared in view 1");

    let mut late = first_start_view;
    late.to = 2;
    cluster.redeliver_later(late);
    let delivered =
        cluster.deliver_where(|e| e.to == 2 && e.command() == Command::StartView && e.message.header.op == start_op);
    assert!(delivered >= 1);
    let stats = cluster.replica(2).stats();
    assert_eq!(stats.committed_conflicts, 0, "a late start_view of view 1 contradicts nothing R2 committed");
    assert!(
        stats.drops.get("start_view_predates_commits").copied().unwrap_or(0) >= 1,
        "{:?} status {:?} view {}",
        stats.drops,
        cluster.status(2),
        cluster.replica(2).view()
    );
    assert_eq!(cluster.replica(2).commit_min(), commit_before);

    let rejoined = cluster.run_until(&all, 2_000, |c| normal_in(c, 2, 1));
    assert!(rejoined, "R2 installs view 1 from a current start_view");
    cluster.run(&all, 20);
    let commit = cluster.replica(1).commit_min();
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == commit), "R2 caught up");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}
