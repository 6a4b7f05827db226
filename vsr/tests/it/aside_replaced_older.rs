//! disk-rot-sharded seeds 19898 and 14011 (liveness, metadata group, op 1):
//! an uncommitted op whose only copy was lost stayed in every log, because
//! a prepare kept aside at a restart raised that replica's nack floor
//! although its log had replaced it, with a prepare of an *older* view.
//!
//! Seed 19898: view 1's primary R1 wrote its op 1 (B) alone, and a
//! misdirected write lost it (R1's journal names B faulty: R1 may have
//! acknowledged it and nacks nothing there). View 2's primary R2 wrote a
//! new op 1 (A) alone. View 3 started from R0 (which never saw B) and R1,
//! both of log_view 1 (R2's do_view_change, of log_view 2, came too late):
//! the canonical log names B, of view 1, at op 1. R2 installed view 3's
//! start_view: its log names B without a body, its slot 1 still holds A
//! (a start_view replaces a header in memory, not the slot). R2 restarted,
//! A no longer chained into the log and was kept aside, and the kept-aside
//! rule of `aside_superseded` (seed 6429) counts a prepare as replaced only
//! when the log names a *newer* view's prepare at its op: B is view 1's, A
//! view 2's, so A raised R2's floor to 1. Only R0 nacked B, one short of
//! the nack quorum; no replica held B's body, and every view waited on it.
//! Seed 14011 is the same with the roles turned: B of view 2 on R2 (rotted
//! later), A of view 3 on R0, view 4 from R1 and R2 names B, R0 installs
//! it and restarts.
//!
//! Before its restart R2 nacked B (its log names B without a body); the
//! restart learnt nothing new. What makes A a leftover is that the log of
//! a later view than A's replaced it, not which view made the prepare that
//! replaced it: the log of `log_view` names another prepare at A's op, and
//! A's view is older than `log_view`, so that view's log did not take A.
//!
//! The story, in a group that commits ops 1..4 first: op 5 plays the
//! seed's op 1; B is view 0's (R0), A view 1's (R1), and view 2 (primary
//! R2) starts from R0 and R2 and names B.

use shoal_vsr::header::Command;
use shoal_vsr::replica::Status;

use crate::harness::{Cluster, Envelope, Sender, client, normal_in, register_clients};

#[test]
fn a_prepare_kept_aside_that_an_older_views_prepare_replaced_does_not_stop_a_nack() {
    let all = [0, 1, 2];
    let mut cluster = Cluster::new(3);
    register_clients(&mut cluster, 0, 4);
    cluster.run(&all, 5);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == 4), "ops 1..4 committed everywhere");

    // View 0's primary R0 prepares op 5 (B) alone, then goes down, and its
    // slot of B rots (the header copy names B): B's only copy is lost.
    cluster.cut(&[0], &[1, 2]);
    cluster.append(client(0), 0, 1, b"b-in-view-0");
    cluster.deliver_all();
    let b = cluster.disks[0].journal.get(&5).expect("R0 wrote op 5 durably").0;
    cluster.crash(0);
    cluster.rot_body(0, 5);
    cluster.heal();

    // R1 starts view 1 with R2's do_view_change; R2 never gets the
    // start_view, so its log stays view 0's. R1 prepares a new op 5 (A)
    // that R2 never gets either, and goes down.
    let from_r1_to_r2 = |e: &Envelope| {
        e.from == Sender::Replica(1)
            && e.to == 2
            && matches!(e.message.header.command, Command::StartView | Command::Prepare)
    };
    for _ in 0..1_000 {
        if normal_in(&cluster, 1, 1) {
            break;
        }
        cluster.tick(1);
        cluster.tick(2);
        cluster.deliver_where(|e| !from_r1_to_r2(e));
        cluster.drop_where(from_r1_to_r2);
    }
    assert!(normal_in(&cluster, 1, 1), "R1 starts view 1");
    cluster.drop_where(from_r1_to_r2);
    cluster.append(client(1), 1, 1, b"a-in-view-1");
    cluster.deliver_where(|e| !from_r1_to_r2(e));
    let a = cluster.disks[1].journal.get(&5).expect("R1 wrote op 5 durably").0;
    assert_ne!(a.checksum, b.checksum);
    assert!(a.view > b.view);
    assert_eq!(cluster.replica(2).log_view(), 0, "R2 never installed view 1");
    assert_eq!(cluster.replica(2).op(), 4, "R2 never saw A");
    cluster.crash(1);
    cluster.drop_where(|_| true);

    // R0 comes back: its journal names B faulty, so it votes with a floor
    // at 5. View 2 (primary R2) starts from R0 and R2, both of log_view 0:
    // the canonical log is R0's, and names B at 5; nobody holds its body.
    cluster.restart(0);
    assert!(cluster.replica(0).nack_floor() >= 5, "R0 may have acknowledged B");
    let started = cluster.run_until(&[0, 2], 3_000, |c| normal_in(c, 0, 2) && normal_in(c, 2, 2));
    assert!(started, "R0 and R2 start view 2");
    assert_eq!(cluster.replica(2).header(5).map(|h| h.checksum), Some(b.checksum), "view 2's log names B");

    // R1 comes back and installs view 2's start_view (R2 does not tick, so
    // it waits on B's body without abdicating yet): R1's log names B at 5
    // without a body, its slot 5 still holds A. Right now it nacks B.
    cluster.restart(1);
    let joined = cluster.run_until(&[1], 1_000, |c| normal_in(c, 1, 2));
    assert!(joined, "R1 installs view 2's start_view");
    assert_eq!(cluster.replica(1).header(5).map(|h| h.checksum), Some(b.checksum), "R1's log names B");
    assert!(!cluster.replica(1).has_body(5), "R1 never got B's body");
    assert_eq!(cluster.disks[1].journal[&5].0.checksum, a.checksum, "R1's slot 5 still holds A");
    assert!(cluster.replica(1).do_view_change_nack_floor() < 5, "before its restart R1 nacks B");

    // R1 restarts: A no longer chains into its log (the view headers name
    // B there) and is kept aside. The log of view 2, newer than A's view,
    // replaced A: R1 still nacks B.
    cluster.crash(1);
    cluster.restart(1);
    assert_eq!(cluster.replica(1).log_view(), 2);
    assert!(!cluster.replica(1).has_body(5), "A is kept aside, outside the log");
    assert!(
        cluster.replica(1).do_view_change_nack_floor() < 5,
        "A, replaced by view 2's log, does not raise R1's floor: floor {}",
        cluster.replica(1).do_view_change_nack_floor()
    );

    // B was never committed: only R0 could have acknowledged it. R1 and R2
    // nack it, a nack quorum, and a view change (R2 abdicates, its
    // pipeline waiting on B) truncates it.
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
                "r{r}: {:?} view {} op {} commit {} op 5 body {} floor {}",
                replica.status(),
                replica.view(),
                replica.op(),
                replica.commit_min(),
                replica.has_body(5),
                replica.do_view_change_nack_floor()
            )
        })
        .collect();
    assert!(recovered, "a view forms without B: {states:?}");

    // The group goes on: a new op 5 commits everywhere.
    let primary = all.into_iter().find(|&r| cluster.replica(r).is_primary()).expect("a primary");
    cluster.append(client(2), primary, 1, b"after-the-wedge");
    let committed = cluster.run_until(&all, 2_000, |c| all.iter().all(|&r| c.replica(r).commit_min() == 5));
    assert!(committed, "op 5 commits on every replica");
    assert!(all.iter().all(|&r| cluster.replica(r).status() == Status::Normal));
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}
