//! Found by the simulator (partition-misdirect seed 1032, Liveness: a
//! replica stayed at commit 16 while the cluster committed 74). A replica
//! held ops 17..33 in its journal, never applied after a crash (its
//! partition fsync failed). Its peers had checkpointed at 32 and then could
//! serve neither those prepares (below their checkpoint) nor the checkpoint
//! (a damaged partition log left them a gap). A view change's start_view
//! named only the newest 32 headers, 42..73, so the replica's log had a gap
//! at 34..41 above its own 17..33: it could not vouch for them and dropped
//! them from its log. Repair then fetched 33..41 from the primary and asked
//! for 32 by checksum, which no peer could give: the only copy left was the
//! one it had dropped, still on its own disk. The entries a start_view
//! cannot vouch for are kept aside (`unchained`), as a restart keeps the
//! prepares it cannot chain, and adopted once a canonical child names them.

use std::rc::Rc;

use shoal_vsr::header::{Command, Header};
use shoal_vsr::message::{Message, encode_headers};
use shoal_vsr::replica::Status;

use crate::harness::{
    CHECKPOINT_INTERVAL_OPS, CLUSTER, Cluster, Envelope, NAMESPACE, Sender, client, normal_in, register_clients,
};

/// Appends through `primary` (client 0, its requests from `*request` on)
/// until `primary` has prepared `op`; every message delivered.
fn append_through(cluster: &mut Cluster, primary: u8, request: &mut u64, op: u64) {
    const APPENDS_MAX: u64 = 200;
    for _ in 0..APPENDS_MAX {
        if cluster.replica(primary).op() >= op {
            return;
        }
        *request += 1;
        cluster.append(client(0), primary, *request, format!("message-{request}").as_bytes());
        cluster.deliver_all();
    }
    panic!("R{primary} prepared only up to op {} of {op}", cluster.replica(primary).op());
}

#[test]
fn a_start_view_above_a_gap_keeps_the_prepares_below_it_for_repair() {
    let marks = replica_2_catches_up_from_its_own_journal(73);
    for mark in [shoal_vsr::marks::UNVOUCHED_PREPARE_KEPT_ASIDE, shoal_vsr::marks::UNCHAINED_PREPARE_ADOPTED] {
        assert!(marks.get(mark).is_some_and(|&hits| hits > 0), "{mark} was hit: {marks:?}");
    }
}

/// The same seed once the scrubber paused for refills (session 33): the
/// view reached op 80 (the most the peers' journals take above their
/// checkpoint at 32) before R2 came back, past its journal (checkpoint 16
/// plus 64 slots), so R2 could install no start_view at all and asked to
/// catch up; the peers could serve no checkpoint and had nothing else to
/// say. Now a peer that cannot serve its checkpoint sends its anchor, and
/// R2 commits its own journal's ops up to it (they chain from its commit
/// point to the anchor's checksum), checkpoints, and installs the view.
#[test]
fn a_peer_that_cannot_serve_its_checkpoint_sends_its_anchor_and_the_asker_commits_its_own_journal() {
    let marks = replica_2_catches_up_from_its_own_journal(80);
    let mark = shoal_vsr::marks::CHECKPOINT_ANCHOR_COMMITTED_OWN_JOURNAL;
    assert!(marks.get(mark).is_some_and(|&hits| hits > 0), "{mark} was hit: {marks:?}");
}

/// An anchor R2's log does not chain to (here: R1's checkpoint header with
/// another parent, as a stale or forged one would be) commits nothing:
/// the only proof the asker has is its own chain to the anchor's checksum.
#[test]
fn an_anchor_the_askers_log_does_not_chain_to_commits_nothing() {
    let mut cluster = replica_2_down_while_the_others_go_on(80);
    cluster.crash(0);
    cluster.restart(2);
    let anchor = *cluster.replica(1).header(32).expect("R1's checkpoint anchor");
    let mut forged = anchor;
    forged.parent ^= 1;
    forged.set_checksums(&[]);
    for (header, dropped) in [(forged, true), (anchor, false)] {
        let mut message = Header::new(Command::Headers, CLUSTER);
        message.namespace = NAMESPACE;
        message.replica = 1;
        message.view = cluster.replica(1).view();
        message.op = header.op;
        message.commit = cluster.replica(1).commit_min();
        let message = Message::new(message, Rc::from(encode_headers(&[header])));
        let before = cluster.replica(2).stats().drops.get("checkpoint_anchor_not_in_log").copied().unwrap_or(0);
        cluster.redeliver_later(Envelope { from: Sender::Replica(1), to: 2, message });
        cluster.deliver_where(|e| e.to == 2 && e.message.header.command == Command::Headers);
        let after = cluster.replica(2).stats().drops.get("checkpoint_anchor_not_in_log").copied().unwrap_or(0);
        if dropped {
            assert_eq!(after, before + 1, "the forged anchor is refused");
            assert_eq!(cluster.replica(2).commit_min(), CHECKPOINT_INTERVAL_OPS, "and commits nothing");
        } else {
            assert_eq!(cluster.replica(2).commit_min(), 32, "the true anchor commits R2's own 17..32");
        }
    }
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// The story of seed 1032, the view's head at `head_op`; returns the marks
/// hit while R2 caught up.
fn replica_2_catches_up_from_its_own_journal(head_op: u64) -> std::collections::BTreeMap<&'static str, u64> {
    let mut cluster = replica_2_down_while_the_others_go_on(head_op);
    caught_up_tail(&mut cluster, head_op, [1, 2])
}

/// Up to R2's crash and R0 and R1 going on to `head_op` (see the story).
fn replica_2_down_while_the_others_go_on(head_op: u64) -> Cluster {
    let mut cluster = Cluster::new(3);
    let all = [0, 1, 2];
    let mut request = 0;
    register_clients(&mut cluster, 0, 1);
    append_through(&mut cluster, 0, &mut request, 2 * CHECKPOINT_INTERVAL_OPS - 1);
    cluster.run(&all, 3);
    // R2's partition is behind the others (in the seed: its partition fsync
    // fails): it defers its checkpoint at 32 and stays checkpointed at 16.
    assert_eq!(cluster.replica(2).checkpoint_op(), CHECKPOINT_INTERVAL_OPS);
    cluster.withhold_checkpoints(2, true);
    append_through(&mut cluster, 0, &mut request, 33);
    cluster.run(&all, 3);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() >= 32), "ops 1..32 committed everywhere");
    assert_eq!(cluster.replica(0).checkpoint_op(), 32);
    assert_eq!(cluster.replica(1).checkpoint_op(), 32);
    assert_eq!(cluster.replica(2).checkpoint_op(), CHECKPOINT_INTERVAL_OPS, "R2 deferred its checkpoint");

    // R0's and R1's partition logs lose records after their checkpoint (in
    // the seed: a misdirected write, found by R1's scrubber; R0 installed
    // R1's checkpoint just before): a gap, so they serve no checkpoint and
    // defer the next ones.
    cluster.withhold_checkpoints(0, true);
    cluster.withhold_checkpoints(1, true);
    // R2 crashes: what it applied of 17..33 is gone, their prepares stay in
    // its journal. R0 and R1 go on to op 73.
    cluster.crash(2);
    append_through(&mut cluster, 0, &mut request, head_op);
    cluster.run(&[0, 1], 3);
    assert_eq!(cluster.replica(1).commit_min(), head_op);
    assert_eq!(cluster.replica(1).checkpoint_op(), 32, "R1 defers its checkpoints");
    assert!(cluster.disks[2].journal.contains_key(&17) && cluster.disks[2].journal.contains_key(&33));
    cluster
}

/// R0 goes down for good; R2 restarts (commit 16, ops 17..33 in its
/// journal) and starts view 1 with R1. With the head at 73 the start_view
/// names ops 42..73: 34..41 are missing on R2, so its 17..33 sit below a
/// gap. With the head past 79 it is past R2's journal. R2 must catch up.
fn caught_up_tail(cluster: &mut Cluster, head_op: u64, pair: [u8; 2]) -> std::collections::BTreeMap<&'static str, u64> {
    cluster.crash(0);
    cluster.restart(2);
    assert_eq!(cluster.replica(2).commit_min(), CHECKPOINT_INTERVAL_OPS);
    assert_eq!(cluster.replica(2).op(), 33);
    shoal_vsr::marks::take();
    let started = cluster.run_until(&pair, 3_000, |c| normal_in(c, 1, 1) && normal_in(c, 2, 1));
    assert!(started, "R1 and R2 start view 1");
    assert!(cluster.replica(1).is_primary());

    // R2 repairs 33..41 from R1 and its own 17..32 from what it kept aside:
    // nothing else holds them.
    let caught_up = cluster.run_until(&pair, 3_000, |c| c.replica(2).commit_min() >= head_op);
    assert!(
        caught_up,
        "R2 catches up to op {head_op} (stuck at commit {}, op {}, status {:?})",
        cluster.replica(2).commit_min(),
        cluster.replica(2).op(),
        cluster.replica(2).status()
    );
    assert_eq!(cluster.replica(2).status(), Status::Normal);
    let marks = shoal_vsr::marks::take();
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
    for op in 17..=head_op {
        assert_eq!(cluster.commits[2].get(&op), cluster.commits[1].get(&op), "R2 committed op {op} as R1 did");
    }
    marks
}
