//! Swarm seed 837 (quiet-period checker, once the simulator's partition-log
//! reads took storage latency too): view 4's primary R1 held op 7's header
//! without its body; R0 held the body, R2 did not. R1 picked a random peer
//! for each repair request and asked R2 fourteen rounds in a row (the
//! random stream's low bits ran even), so after `PRIMARY_ABDICATE_TICKS` it
//! abdicated, and the healthy cluster changed its view. Repair requests
//! now go to the peers in turn: every peer is asked within
//! `replica_count - 1` rounds.

use std::collections::BTreeSet;

use shoal_vsr::header::Command;
use shoal_vsr::replica::REPAIR_TICKS;

use crate::harness::{Cluster, Sender, client, register_clients};

/// R4 misses op 5 (committed by R0..R3 while it was cut off) and no repair
/// answer ever arrives: in four consecutive repair rounds it asks each of
/// its four peers once.
#[test]
fn a_lagging_replica_asks_every_peer_in_turn_for_a_missing_body() {
    let all = [0, 1, 2, 3, 4];
    let mut cluster = Cluster::new(5);
    register_clients(&mut cluster, 0, 4);
    cluster.run(&all, 5);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == 4), "ops 1..4 committed everywhere");

    cluster.cut(&[4], &[0, 1, 2, 3]);
    cluster.append(client(0), 0, 1, b"while-r4-was-away");
    cluster.run(&[0, 1, 2, 3], 2);
    assert!(cluster.replied(client(0), 1), "op 5 committed without R4");
    cluster.heal();

    // Repair requests are lost, so R4 keeps asking; everything else flows.
    let sent_before = cluster.sent.len();
    let is_request = |e: &crate::harness::Envelope| e.command() == Command::RequestPrepare;
    for _ in 0..(4 * REPAIR_TICKS as usize + REPAIR_TICKS as usize) {
        for r in all {
            cluster.tick(r);
        }
        cluster.drop_where(is_request);
        cluster.deliver_all();
        cluster.drop_where(is_request);
    }
    let asked: Vec<u8> = cluster.sent[sent_before..]
        .iter()
        .filter(|e| e.from == Sender::Replica(4) && is_request(e) && e.message.header.op == 5)
        .map(|e| e.to)
        .collect();
    assert!(asked.len() >= 4, "R4 asked for op 5 in {} rounds: {asked:?}", asked.len());
    let first_four: BTreeSet<u8> = asked[..4].iter().copied().collect();
    assert_eq!(first_four, BTreeSet::from([0, 1, 2, 3]), "four rounds asked {asked:?}");
    assert!(!cluster.replica(4).has_body(5));
}
