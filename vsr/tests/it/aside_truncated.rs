//! Found by the simulator once storage took time (disk-rot seed 397, after
//! the change that moved storage latency into `SimIo`; promises checker): a
//! replica restarted with a faulty slot kept the valid prepare above it
//! aside (`unchained`), then installed a start_view whose log ends below
//! both and truncated its journal there, which took the kept-aside
//! prepare's disk copy too. It still held that prepare in memory, and its
//! next do_view_change stated a nack floor at that op: a promise ("I may
//! have acknowledged it, so I nack nothing up to here") that nothing on its
//! disk kept. A truncation by a canonical log drops what was kept aside
//! above it: no canonical log of this view or a later one names it.

use shoal_vsr::header::Command;
use shoal_vsr::replica::Status;

use crate::harness::{Cluster, Sender, client, normal_in, register_clients};

#[test]
fn a_truncation_drops_the_prepares_kept_aside_above_it() {
    let mut cluster = Cluster::new(3);
    let all = [0, 1, 2];
    register_clients(&mut cluster, 0, 4);
    cluster.run(&all, 5);
    assert!(all.iter().all(|&r| cluster.replica(r).commit_min() == 4), "ops 1..4 committed everywhere");

    // View 0's primary R0 prepares 5, 6 and 7; only R1 gets them (R2 is cut
    // off, R1's prepare_oks are lost), so nothing commits past 4.
    cluster.cut(&[0], &[2]);
    cluster.cut(&[1], &[2]);
    for (index, request) in [(0, 1), (1, 1), (2, 1)] {
        cluster.append(client(index), 0, request, format!("uncommitted-{index}").as_bytes());
        cluster.deliver_where(|e| !(e.from == Sender::Replica(1) && e.message.header.command == Command::PrepareOk));
    }
    cluster.drop_where(|_| true);
    assert_eq!(cluster.replica(1).op(), 7);
    assert_eq!(cluster.replica(0).commit_min(), 4);

    // Power loss on R0 before its own writes of 5..7 were durable (a primary
    // sends a prepare while it writes it), and on R1 with 6 torn: 5 and 7
    // reached R1's disk, 6 did not (no ring copy: torn, not faulty).
    cluster.crash(0);
    cluster.crash(1);
    cluster.disks[0].journal.retain(|&op, _| op <= 4);
    assert!(cluster.disks[1].journal.remove(&6).is_some());

    // R0 and R2 start view 2 (view 1's primary R1 is down); its log ends
    // at 4 with log_view 2.
    cluster.heal();
    cluster.restart(0);
    let started = cluster.run_until(&[0, 2], 3_000, |c| {
        [0, 2].iter().all(|&r| c.replica(r).status() == Status::Normal && c.replica(r).view() >= 2)
    });
    assert!(started, "R0 and R2 start view 2");
    let view = cluster.replica(0).view();

    // R1 restarts: 5 chains onto 4, 7 does not (kept aside). It installs
    // view 2's start_view (head 4) and truncates its journal after 4, 7's
    // copy included.
    cluster.restart(1);
    let installed = cluster.run_until(&all, 3_000, |c| normal_in(c, 1, view));
    assert!(installed, "R1 installs view {view}");
    assert!(cluster.disks[1].journal.keys().all(|&op| op <= 4), "R1 truncated its journal after 4");

    // View 2's primary goes down: R1's do_view_change may state only a
    // nack floor its disk keeps.
    let primary = (0..3).find(|&r| cluster.replica(r).is_primary()).expect("a primary");
    assert_ne!(primary, 1);
    cluster.crash(primary);
    let survivors: Vec<u8> = all.iter().copied().filter(|&r| r != primary).collect();
    let sent_before = cluster.sent.len();
    let voted = cluster.run_until(&survivors, 3_000, |c| {
        c.sent[sent_before..]
            .iter()
            .any(|e| e.from == Sender::Replica(1) && e.message.header.command == Command::DoViewChange)
    });
    assert!(voted, "R1 sent a do_view_change");
    let disk = &cluster.disks[1];
    let kept = disk
        .superblock
        .nack_floor
        .max(disk.journal.keys().copied().max().unwrap_or(0))
        .max(disk.checkpoint.as_ref().map_or(0, |c| c.anchor.op));
    for envelope in &cluster.sent[sent_before..] {
        if envelope.from != Sender::Replica(1) || envelope.message.header.command != Command::DoViewChange {
            continue;
        }
        let floor = envelope.message.header.do_view_change_nacks().expect("a do_view_change states nacks").floor;
        assert!(floor <= kept, "R1's do_view_change states nack floor {floor}, its disk keeps only {kept}");
    }
}
