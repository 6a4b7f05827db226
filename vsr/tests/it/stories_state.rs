//! Protocol stories around checkpoints, state transfer and restarts, told
//! step by step on the hand-driven cluster of `harness`.

use shoal_vsr::header::Command;
use shoal_vsr::message::decode_headers;
use shoal_vsr::replica::Status;

use crate::harness::{Cluster, Sender, client, normal_in, register_clients};

/// Found by the simulator (view-churn seed 588, Agreement, once the peer
/// asked for state data was drawn from `Io` entropy instead of the seed).
/// R2 sat in a minority with view 0's primary and holds its uncommitted
/// ops 13..20 in its journal. The majority commits other ops there and
/// checkpoints at 32. R2 becomes primary of view 2; the canonical log (from
/// a replica past that checkpoint) starts at 32, so `install_log` drops the
/// stale 13..20 from memory as unvouched, below a gap, but they stay in the
/// journal (nothing truncates below the head). R2 crashes right after its
/// start_view. The old `recover_log` kept every journal entry below a gap
/// in the view headers, so R2 came back with the stale 13..20 in view 2's
/// log and sent them in its do_view_change for view 3 as that log: view
/// 3's primary, which had committed the majority's ops there, refused the
/// canonical log (a replica that had not would have installed them).
#[test]
fn a_restarted_primary_does_not_bring_back_stale_prepares_it_dropped_below_a_gap() {
    let mut cluster = Cluster::new(5);
    let all = [0, 1, 2, 3, 4];
    register_clients(&mut cluster, 0, 12);
    cluster.run(&all, 10);

    // R0 (primary of view 0) and R2 in a minority: R2 journals R0's
    // uncommitted ops 13..20.
    cluster.cut(&[0, 2], &[1, 3, 4]);
    for index in 0..8 {
        cluster.append(client(index), 0, 1, format!("minority-{index}").as_bytes());
        cluster.deliver_all();
    }
    assert_eq!(cluster.replica(2).op(), 20);
    assert_eq!(cluster.replica(2).commit_min(), 12);
    let stale: Vec<u128> = (13..=20).map(|op| cluster.replica(2).header(op).expect("held").checksum).collect();

    // The majority starts view 1 (R1), commits other ops 13.. and
    // checkpoints past them, at 32.
    assert!(cluster.run_until(&[1, 3, 4], 1_000, |c| normal_in(c, 1, 1)));
    let mut request = 1;
    while cluster.replica(3).checkpoint_op() < 32 {
        for index in 0..8 {
            cluster.append(client(index), 1, request, format!("majority-{index}-{request}").as_bytes());
            cluster.deliver_all();
        }
        cluster.run(&[1, 3, 4], 2);
        request += 1;
        assert!(request < 10, "the majority reaches a checkpoint at 32");
    }
    let committed = cluster.commits[3].clone();
    assert!((13..=20).all(|op| committed.get(&op) != Some(&stale[op as usize - 13])), "other ops at 13..20");

    // R1 is cut off; view 2's primary is R2. It starts the view from a
    // canonical log that begins at the checkpoint, and crashes right after
    // (its start_views are lost).
    cluster.heal();
    cluster.cut(&[1], &[0, 2, 3, 4]);
    let majority = [0, 2, 3, 4];
    let mut started = false;
    for _ in 0..2_000 {
        for &r in &majority {
            cluster.tick(r);
        }
        cluster.deliver_where(|e| !(e.from == Sender::Replica(2) && e.command() == Command::StartView));
        if normal_in(&cluster, 2, 2) {
            started = true;
            break;
        }
    }
    assert!(started, "R2 starts view 2");
    assert!((13..=20).all(|op| cluster.replica(2).header(op).is_none()), "the stale ops left R2's log");
    cluster.crash(2);
    cluster.drop_where(|e| e.from == Sender::Replica(2));

    // Restarted, R2 must not hold its stale ops as part of view 2's log.
    cluster.restart(2);
    assert_eq!(cluster.replica(2).log_view(), 2);
    for op in 13..=20 {
        let held = cluster.replica(2).header(op).map(|h| h.checksum);
        assert!(
            held.is_none() || held == committed.get(&op).copied(),
            "R2 brought back its stale op {op} into view 2's log after a restart"
        );
    }

    // The next view starts from R2's log (the only one of view 2) without
    // any replica being offered a log that contradicts its commits.
    let moved_on = cluster.run_until(&majority, 3_000, |c| {
        majority.iter().all(|&r| c.replica(r).view() >= 3 && c.replica(r).status() == Status::Normal)
    });
    assert!(moved_on, "the majority starts a later view");
    let shipped_stale = cluster.sent.iter().any(|e| {
        e.from == Sender::Replica(2)
            && e.command() == Command::DoViewChange
            && decode_headers(&e.message.body).is_ok_and(|headers| headers.iter().any(|h| stale.contains(&h.checksum)))
    });
    assert!(!shipped_stale, "R2's do_view_change named a stale op as part of view 2's log");
    let refusals: u64 = majority.iter().map(|&r| cluster.replica(r).stats().committed_conflicts).sum();
    assert_eq!(refusals, 0, "no replica was offered a log contradicting its commits");

    cluster.heal();
    let converged = cluster.run_until(&all, 3_000, |c| {
        let commit = c.replica(3).commit_min();
        all.iter().all(|&r| c.replica(r).status() == Status::Normal && c.replica(r).commit_min() == commit)
    });
    assert!(converged, "the cluster converges");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}
