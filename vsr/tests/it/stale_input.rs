//! Stale but well-formed input, table-driven over every handler: each
//! message of every command a replica sent in an older view (and prepares of
//! another history for the same ops) is delivered again, late, to every
//! replica. Nothing may change what was committed, no view may go back, no
//! canonical log may be refused, and the cluster must still converge.

use std::collections::BTreeSet;

use shoal_vsr::header::Command;
use shoal_vsr::replica::Status;

use crate::harness::{Cluster, Envelope, Sender, client};

const REPLICAS: [u8; 3] = [0, 1, 2];

/// Commands a replica sends to a replica; every one must be in the table.
const REPLICA_COMMANDS: [Command; 10] = [
    Command::Prepare,
    Command::PrepareOk,
    Command::Commit,
    Command::StartViewChange,
    Command::DoViewChange,
    Command::StartView,
    Command::RequestStartView,
    Command::RequestPrepare,
    Command::Checkpoint,
    Command::RejoinView,
];

/// A history with old views in it: view 0 commits ops 1..12; R0 is cut off
/// and prepares ops of its own (another history for the same ops) while
/// R1 and R2 start view 1 and commit past a checkpoint; R2 is wiped and
/// rejoins; then everything heals and converges.
fn history() -> Cluster {
    let mut cluster = Cluster::new(3);
    for index in 0..12 {
        cluster.register(client(index), 0);
        cluster.deliver_all();
    }
    cluster.run(&REPLICAS, 10);
    cluster.cut(&[0], &[1, 2]);
    for index in 0..6 {
        cluster.append(client(index), 0, 1, format!("deposed-{index}").as_bytes());
        cluster.deliver_all();
    }
    let started = cluster.run_until(&[1, 2], 1_000, |c| {
        c.replica(1).view() == 1 && c.replica(1).status() == Status::Normal && c.replica(1).is_primary()
    });
    assert!(started, "view 1 starts without R0");
    for request in 1..=3 {
        for index in 0..8 {
            cluster.append(client(index), 1, request, format!("v1-{index}-{request}").as_bytes());
            cluster.deliver_all();
        }
    }
    cluster.run(&[1, 2], 10);
    assert!(cluster.replica(2).checkpoint_op() >= 32, "a checkpoint past the deposed ops");
    cluster.heal();
    cluster.wipe_and_rejoin(2);
    let settled = cluster.run_until(&REPLICAS, 3_000, converged);
    assert!(settled, "the history converges");
    // Then view 1's primary is lost and view 2 (R2) takes over, so view
    // 1's start_views and do_view_changes are stale too.
    cluster.cut(&[1], &[0, 2]);
    let started = cluster.run_until(&[0, 2], 1_000, |c| {
        c.replica(2).view() >= 2 && c.replica(2).status() == Status::Normal && c.replica(2).is_primary()
    });
    assert!(started, "a later view starts without R1");
    let primary = (0..3).find(|&r| cluster.replica(r).is_primary() && r != 1).expect("a primary");
    for index in 0..4 {
        cluster.append(client(index), primary, 4, format!("v2-{index}").as_bytes());
        cluster.deliver_all();
    }
    cluster.heal();
    let settled = cluster.run_until(&REPLICAS, 3_000, converged);
    assert!(settled, "the history converges again");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
    cluster
}

fn check_progress(cluster: &Cluster, views: &mut [u64], commits: &mut [u64], late: &Envelope) {
    for (index, &r) in REPLICAS.iter().enumerate() {
        let replica = cluster.replica(r);
        let command = late.command();
        assert!(replica.view() >= views[index], "replica {r}'s view went back on a late {command:?}");
        assert!(replica.commit_min() >= commits[index], "replica {r}'s commit went back on a late {command:?}");
        assert_eq!(replica.stats().committed_conflicts, 0, "replica {r} was offered a conflicting log");
        views[index] = replica.view();
        commits[index] = replica.commit_min();
    }
}

fn converged(cluster: &Cluster) -> bool {
    let commit = cluster.replica(1).commit_min();
    REPLICAS.iter().all(|&r| {
        let replica = cluster.replica(r);
        replica.status() == Status::Normal && replica.commit_min() == commit && !replica.is_rejoining()
    })
}

#[test]
fn every_old_message_delivered_late_to_every_replica_changes_nothing_committed() {
    let mut cluster = history();
    let stale: Vec<Envelope> = cluster.sent.iter().filter(|e| matches!(e.from, Sender::Replica(_))).cloned().collect();
    let kinds: BTreeSet<u8> = stale.iter().map(|e| e.command() as u8).collect();
    for command in REPLICA_COMMANDS {
        assert!(kinds.contains(&(command as u8)), "the history has no {command:?} to replay");
    }
    let mut views: Vec<u64> = REPLICAS.iter().map(|&r| cluster.replica(r).view()).collect();
    let mut commits: Vec<u64> = REPLICAS.iter().map(|&r| cluster.replica(r).commit_min()).collect();
    for envelope in &stale {
        for to in REPLICAS {
            let Sender::Replica(from) = envelope.from else { continue };
            if from == to {
                continue;
            }
            cluster.queue.push(Envelope { from: envelope.from, to, message: envelope.message.clone() });
            // Delivered alone: its effect is this handler's, not a cascade's.
            let index = cluster.queue.len() - 1;
            let late = cluster.queue.remove(index);
            cluster.queue.insert(0, late);
            cluster.deliver_where(|e| e.to == to && e.from == Sender::Replica(from));
            check_progress(&cluster, &mut views, &mut commits, envelope);
        }
    }
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
    let settled = cluster.run_until(&REPLICAS, 3_000, converged);
    assert!(settled, "the cluster converges after the stale storm");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// A repair answered with a valid prepare of another view (another
/// checksum) for the same op: the deposed primary's ops 13..18, offered to
/// replicas that committed the majority's.
#[test]
fn a_prepare_of_another_history_for_a_committed_op_is_never_taken() {
    let mut cluster = history();
    let deposed: Vec<Envelope> = cluster
        .sent
        .iter()
        .filter(|e| {
            e.command() == Command::Prepare && e.message.header.view == 0 && (13..=18).contains(&e.message.header.op)
        })
        .cloned()
        .collect();
    assert!(!deposed.is_empty(), "R0 prepared ops of its own in view 0");
    let ops_before: Vec<Vec<(u64, u128)>> = REPLICAS
        .iter()
        .map(|&r| (13..=18).filter_map(|op| cluster.replica(r).header(op).map(|h| (op, h.checksum))).collect())
        .collect();
    for envelope in deposed {
        for to in [1, 2] {
            cluster.queue.insert(0, Envelope { from: Sender::Replica(0), to, message: envelope.message.clone() });
            cluster.deliver_where(|e| e.to == to && e.from == Sender::Replica(0));
        }
    }
    for (index, &r) in REPLICAS.iter().enumerate() {
        let ops: Vec<(u64, u128)> =
            (13..=18).filter_map(|op| cluster.replica(r).header(op).map(|h| (op, h.checksum))).collect();
        assert_eq!(ops, ops_before[index], "replica {r} took a prepare of another history");
    }
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}
