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

use crate::harness::{Cluster, Envelope, Sender, normal_in, register_clients};

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
