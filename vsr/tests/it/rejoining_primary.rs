//! Swarm seed 116 (Liveness, on the tree before the repair rotation): R2's
//! disk was wiped; R0 and R1 changed views one timeout at a time while cut
//! off, and after the heal both sat in view 5, whose primary is R2. A
//! rejoining replica takes no start_view_change and sends no do_view_change,
//! so view 5 could only end by a timeout (up to 1.4 s), past the bound. The
//! story: a replica changing to a view whose primary sends it a rejoin probe
//! moves on to the next view at once, and the cluster starts it.

use shoal_vsr::header::Command;
use shoal_vsr::replica::Status;

use crate::harness::{Cluster, Envelope, normal_in, register_clients};

#[test]
fn a_view_change_moves_past_a_rejoining_primary_at_its_first_probe() {
    let all = [0, 1, 2];
    let mut cluster = Cluster::new(3);
    register_clients(&mut cluster, 0, 2);
    cluster.run(&all, 5);
    assert!(normal_in(&cluster, 0, 0), "view 0 started");

    // R1 is cut off and times out into view 1, then view 2 (R2's view);
    // R0 (view 0's primary) joins view 2 when R1 reaches it again. R2 stays
    // cut off, its disk is lost, and it rejoins.
    cluster.cut(&[0], &[1, 2]);
    cluster.cut(&[1], &[2]);
    let reached = cluster.run_until(&[1], 2_000, |c| c.replica(1).view() >= 2);
    assert!(reached && cluster.replica(1).view() == 2, "R1 changes views to view 2 while cut off");
    cluster.heal();
    cluster.cut(&[2], &[0, 1]);
    let joined = cluster.run_until(&[0, 1], 30, |c| c.replica(0).view() == 2);
    assert!(joined, "R0 joins view 2");
    for r in [0, 1] {
        assert_eq!(cluster.replica(r).view(), 2);
        assert_eq!(cluster.status(r), Status::ViewChange, "R{r} waits for view 2's primary");
    }
    assert_eq!(cluster.replica(0).primary_index(2), 2, "view 2 is R2's");
    cluster.wipe_and_rejoin(2);
    cluster.drop_where(|_| true);

    // The network heals; R2 ticks until it probes. Its probe alone (no tick
    // of R0) moves R0 past view 2.
    cluster.heal();
    let probe_to_r0 = |e: &Envelope| e.between(2, 0) && e.command() == Command::RequestStartView;
    for _ in 0..100 {
        if cluster.pending(probe_to_r0) > 0 {
            break;
        }
        cluster.tick(2);
    }
    assert!(cluster.pending(probe_to_r0) > 0, "R2 sent a rejoin probe");
    let _ = shoal_vsr::marks::take();
    let delivered = cluster.deliver_where(probe_to_r0);
    assert!(delivered > 0, "R0 got the probe");
    assert_eq!(cluster.replica(0).view(), 3, "R0 left view 2 at the probe, not at its timeout");
    assert_eq!(cluster.status(0), Status::ViewChange);
    let marks = shoal_vsr::marks::take();
    assert!(marks.contains_key(shoal_vsr::marks::VIEW_CHANGE_SKIPPED_REJOINING_PRIMARY), "{marks:?}");

    // R0's start_view_change brings R1 along; view 3 (R0's) starts well
    // within one view-change timeout, and R2 rejoins it.
    let started = cluster.run_until(&all, 30, |c| normal_in(c, 0, 3) && normal_in(c, 1, 3));
    assert!(started, "view 3 starts within 30 ticks, less than one view-change timeout");
    let rejoined = cluster.run_until(&all, 1_000, |c| normal_in(c, 2, 3));
    assert!(rejoined, "R2 rejoins view 3");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}
