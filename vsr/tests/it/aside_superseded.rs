//! disk-rot-sharded seed 6429 (liveness): an uncommitted op whose only copy
//! was lost stayed in every log, because the one replica that could nack it
//! besides the one that never saw it stated a nack floor at that op.
//!
//! View 0's primary R0 wrote its op 13 (call it A) and nobody else got it.
//! View 2's primary R2 prepared a new op 13 (B) while both peers were down,
//! and its write of B went elsewhere (a misdirected write): after a restart
//! R2's journal named B faulty, so R2 may have acknowledged it and nacks
//! nothing there. R0 came back and installed view 2's start_view, whose log
//! names B at 13; it never got B's body, so slot 13 of its journal still
//! held A (a start_view replaces a header in memory, not the slot). R0
//! restarted: A no longer chained into the log (the view headers name B
//! there), so it was kept aside (`unchained`), and every prepare kept aside
//! raised R0's do_view_change nack floor to its op. R0 no longer nacked B,
//! though it never held it; only R1 (which never saw B) did, one short of
//! the nack quorum, and no replica held B's body: every view kept B and
//! waited on it.
//!
//! Before its restart R0 nacked B (its log names B without a body); the
//! restart learnt nothing new. A prepare kept aside at an op where the log
//! names a newer view's prepare is a leftover the log replaced, and says no
//! more about what this replica acknowledged than a replaced entry of the
//! log does: it does not raise the floor.
//!
//! The story, in a group that commits ops 1..4 first: op 5 plays the
//! seed's op 13, view 1's primary R1 plays R2 and R2 plays R1.

use shoal_vsr::header::Command;
use shoal_vsr::message::decode_headers;
use shoal_vsr::replica::Status;

use crate::harness::{Cluster, Sender, client, normal_in, register_clients};

#[test]
fn a_prepare_kept_aside_that_the_log_replaced_does_not_stop_a_nack() {
    let all = [0, 1, 2];
    let mut cluster = Cluster::new(3);
    register_clients(&mut cluster, 0, 4);
    cluster.run(&all, 5);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == 4), "ops 1..4 committed everywhere");

    // View 0's primary R0 prepares op 5 (A) alone: its prepares are lost.
    cluster.cut(&[0], &[1, 2]);
    cluster.append(client(0), 0, 1, b"a-in-view-0");
    cluster.deliver_all();
    let a = cluster.disks[0].journal.get(&5).expect("R0 wrote op 5 durably").0;
    assert_eq!(cluster.replica(1).op(), 4);
    assert_eq!(cluster.replica(2).op(), 4);

    // R0 goes down. R1 and R2 start view 1 (primary R1) at head 4.
    cluster.crash(0);
    let started = cluster.run_until(&[1, 2], 1_000, |c| normal_in(c, 1, 1) && normal_in(c, 2, 1));
    assert!(started, "R1 starts view 1 with R2");

    // R1 prepares a new op 5 (B); R2 never gets it.
    cluster.heal();
    cluster.cut(&[1], &[2]);
    cluster.append(client(1), 1, 1, b"b-in-view-1");
    cluster.deliver_all();
    let b = cluster.disks[1].journal.get(&5).expect("R1 wrote op 5 durably").0;
    assert_ne!(a.checksum, b.checksum);
    assert_eq!(cluster.replica(2).op(), 4, "R2 never saw B");

    // R0 comes back and installs view 1's start_view, whose log names B at
    // 5; B's body never reaches it, so its slot 5 still holds A.
    let is_prepare_from_r1 = |e: &crate::harness::Envelope| {
        e.from == Sender::Replica(1) && e.to == 0 && e.message.header.command == Command::Prepare
    };
    cluster.restart(0);
    for _ in 0..1_000 {
        if normal_in(&cluster, 0, 1) {
            break;
        }
        cluster.tick(0);
        cluster.tick(1);
        cluster.deliver_where(|e| !is_prepare_from_r1(e));
        cluster.drop_where(is_prepare_from_r1);
    }
    assert!(normal_in(&cluster, 0, 1), "R0 installs view 1's start_view");
    assert_eq!(cluster.replica(0).header(5).map(|h| h.checksum), Some(b.checksum), "R0's log names B");
    assert!(!cluster.replica(0).has_body(5), "R0 never got B's body");
    assert_eq!(cluster.disks[0].journal[&5].0.checksum, a.checksum, "R0's slot 5 still holds A");

    // Power loss on R0 and R1; R1's write of B went elsewhere: its journal
    // names B (the header copy) without the body, so R1 may have
    // acknowledged B and nacks nothing at 5. Nobody holds B's body now.
    cluster.crash(0);
    cluster.crash(1);
    cluster.rot_body(1, 5);
    cluster.heal();
    cluster.restart(0);
    cluster.restart(1);
    assert_eq!(cluster.replica(0).op(), 5);
    assert!(!cluster.replica(0).has_body(5), "A no longer chains into R0's log: kept aside");

    // B was never committed: only R1 could have acknowledged it. R0 and
    // R2 nack it, a nack quorum, and the view change truncates it.
    let sent_before = cluster.sent.len();
    let recovered = cluster.run_until(&all, 3_000, |c| {
        let view = c.replica(0).view();
        all.iter().all(|&r| normal_in(c, r, view))
            && all.iter().all(|&r| c.replica(r).header(5).is_none_or(|h| h.checksum != b.checksum))
    });
    let states: Vec<String> = all
        .iter()
        .map(|&r| {
            let replica = cluster.replica(r);
            format!(
                "r{r}: {:?} view {} op {} commit {} op 5 body {}",
                replica.status(),
                replica.view(),
                replica.op(),
                replica.commit_min(),
                replica.has_body(5)
            )
        })
        .collect();
    let r0_floors: Vec<u64> = cluster.sent[sent_before..]
        .iter()
        .filter(|e| e.from == Sender::Replica(0) && e.message.header.command == Command::DoViewChange)
        .filter(|e| decode_headers(&e.message.body).is_ok_and(|h| h.iter().any(|h| h.checksum == b.checksum)))
        .map(|e| e.message.header.do_view_change_nacks().expect("a do_view_change states its nacks").floor)
        .collect();
    assert!(recovered, "a view forms without B: {states:?}; R0's do_view_change floors {r0_floors:?}");
    assert!(r0_floors.iter().all(|&floor| floor < 5), "R0 nacks B, which it never held: floors {r0_floors:?}");

    // The group goes on: a new op 5 commits everywhere.
    let primary = all.into_iter().find(|&r| cluster.replica(r).is_primary()).expect("a primary");
    cluster.append(client(2), primary, 1, b"after-the-wedge");
    let committed = cluster.run_until(&all, 2_000, |c| all.iter().all(|&r| c.replica(r).commit_min() == 5));
    assert!(committed, "op 5 commits on every replica");
    assert!(all.iter().all(|&r| cluster.replica(r).status() == Status::Normal));
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}
