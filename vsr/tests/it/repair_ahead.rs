//! Found by the simulator (the config `shoal-sim shrink --seed 90 --scenario
//! swarm` made in session 33; Liveness, quiet period: replica 2 stayed 4 ops
//! below its primary for 0.66 s after a rejoin). A backup a few ops behind
//! asks its peers in turn for the ops after its head (`repair_target`), so
//! the answers come back from two peers, in any order. It accepted only the
//! one that chained to its head (`op + 1`) and dropped the rest as
//! unvouched, then asked for them again a repair round later: one or two
//! ops per round, while the primary went on preparing. A prepare of the
//! current view that arrives ahead of its parent is now kept (`ahead`, at
//! most `AHEAD_PREPARES_MAX`) and enters the log, under the same rule, once
//! the op below it chains.

use shoal_vsr::header::Command;
use shoal_vsr::replica::REPAIR_TICKS;

use crate::harness::{Cluster, Envelope, Sender, client, register_clients};

/// Ops the primary commits while R2 is cut off: one repair round's worth.
const OPS_MISSED: u64 = 6;

/// R2 misses `OPS_MISSED` ops, learns it is behind, and sends one repair
/// round (held); the answers reach it highest op first, the worst order for
/// a replica that only takes the next op. Returns R2's head after them.
fn r2_head_after_one_round_answered_in_reverse() -> (u64, u64, Cluster) {
    let all = [0, 1, 2];
    let mut cluster = Cluster::new(3);
    register_clients(&mut cluster, 0, 1);
    cluster.run(&all, 5);
    let head_before = cluster.replica(2).op();
    assert_eq!(head_before, cluster.replica(0).op(), "R2 caught up before the cut");

    cluster.cut(&[2], &[0, 1]);
    for request in 1..=OPS_MISSED {
        cluster.append(client(0), 0, request, format!("missed-{request}").as_bytes());
        cluster.run(&[0, 1], 1);
        assert!(cluster.replied(client(0), request), "op committed without R2");
    }
    let primary_head = cluster.replica(0).op();
    assert_eq!(primary_head, head_before + OPS_MISSED);
    cluster.heal();

    // Run until R2 has sent a repair round for the ops after its head; hold
    // every prepare addressed to R2 meanwhile.
    let is_answer_to_r2 = |e: &Envelope| e.to == 2 && e.command() == Command::Prepare;
    let mut held: Vec<Envelope> = Vec::new();
    let sent_before = cluster.sent.len();
    let asked_round = |cluster: &Cluster| {
        cluster.sent[sent_before..]
            .iter()
            .filter(|e| e.from == Sender::Replica(2) && e.command() == Command::RequestPrepare)
            .count() as u64
            >= OPS_MISSED
    };
    for _ in 0..(4 * REPAIR_TICKS as usize) {
        if asked_round(&cluster) {
            break;
        }
        for r in [0, 1, 2] {
            cluster.tick(r);
        }
        held.extend(cluster.take_where(is_answer_to_r2));
        cluster.deliver_where(|e| !is_answer_to_r2(e));
        held.extend(cluster.take_where(is_answer_to_r2));
    }
    assert!(asked_round(&cluster), "R2 asked for the {OPS_MISSED} ops after its head");
    cluster.deliver_where(|e| e.to != 2 || e.command() == Command::RequestPrepare);
    held.extend(cluster.take_where(is_answer_to_r2));
    let answered: std::collections::BTreeSet<u64> =
        held.iter().map(|e| e.message.header.op).filter(|&op| op > head_before).collect();
    assert_eq!(answered.len() as u64, OPS_MISSED, "every missed op was answered: {answered:?}");

    // Highest op first.
    held.sort_by_key(|e| std::cmp::Reverse(e.message.header.op));
    for envelope in held {
        cluster.redeliver_later(envelope);
        cluster.deliver_where(is_answer_to_r2);
    }
    (cluster.replica(2).op(), primary_head, cluster)
}

#[test]
fn a_lagging_backup_takes_a_whole_repair_round_whatever_order_its_answers_arrive_in() {
    shoal_vsr::marks::take();
    let (r2_head, primary_head, mut cluster) = r2_head_after_one_round_answered_in_reverse();
    let marks = shoal_vsr::marks::take();
    assert_eq!(r2_head, primary_head, "one repair round brought R2 to the primary's head");
    for mark in [shoal_vsr::marks::PREPARE_KEPT_AHEAD_OF_PARENT, shoal_vsr::marks::PREPARE_AHEAD_ADOPTED] {
        assert!(marks.get(mark).is_some_and(|&hits| hits > 0), "{mark} was hit: {marks:?}");
    }
    // What R2 took from the round is what the primary committed.
    cluster.deliver_all();
    cluster.run(&[0, 1, 2], 2 * REPAIR_TICKS as usize);
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
    assert_eq!(cluster.replica(2).commit_min(), cluster.replica(0).commit_min());
    for op in 1..=primary_head {
        assert_eq!(cluster.commits[2].get(&op), cluster.commits[0].get(&op), "R2 committed op {op} as R0 did");
    }
}
