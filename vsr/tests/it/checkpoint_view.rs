//! A checkpoint moves its receiver into a newer view (and parks it in
//! `Recovering` until that view's start_view) only if a newer view started:
//! the sender's log_view, not its view, which may be a view change that
//! never completes. Otherwise the receiver could not vote in the very view
//! change the cluster needs (disk-rot seeds 2262, 4199: one replica in
//! ViewChange, one Recovering with a faulty journal, and the third parked
//! in `Recovering` by the first's checkpoint: no quorum for any view).

use std::rc::Rc;

use shoal_vsr::header::checksum;
use shoal_vsr::header::{Command, Header};
use shoal_vsr::message::{CheckpointChunk, Message};
use shoal_vsr::replica::{Replica, Source, Status};
use shoal_vsr::state_machine::AppendLog;

use crate::harness::{CHECKPOINT_INTERVAL_OPS, CLUSTER, Cluster, NAMESPACE, client, config};

/// A checkpoint message from replica 0 in `view`, holding the log of
/// `log_view`.
fn checkpoint_message(cluster: &Cluster, view: u64, log_view: u64) -> Message {
    let checkpoint = cluster.disks[0].checkpoint.clone().expect("replica 0 checkpointed");
    let mut header = Header::new(Command::Checkpoint, CLUSTER);
    header.namespace = NAMESPACE;
    header.replica = 0;
    header.view = view;
    header.op = checkpoint.anchor.op;
    header.commit = checkpoint.anchor.op;
    header.context = log_view;
    let body = CheckpointChunk {
        anchor: checkpoint.anchor,
        snapshot_size_bytes: checkpoint.snapshot.len() as u64,
        snapshot_checksum: checksum(&checkpoint.snapshot),
        offset_bytes: 0,
        last_of_answer: true,
        bytes: checkpoint.snapshot,
    };
    Message::new(header, Rc::from(body.encode()))
}

fn cluster_past_a_checkpoint() -> Cluster {
    let mut cluster = Cluster::new(3);
    cluster.register(client(0), 0);
    cluster.deliver_all();
    for request in 1..=CHECKPOINT_INTERVAL_OPS + 2 {
        cluster.append(client(0), 0, request, b"m");
        cluster.deliver_all();
    }
    assert!(cluster.disks[0].checkpoint.is_some());
    cluster
}

#[test]
fn a_checkpoint_from_a_view_change_does_not_park_the_receiver() {
    let cluster = cluster_past_a_checkpoint();
    let mut lagging = Replica::new(config(2, 3, 1), AppendLog::default());
    assert_eq!(lagging.status(), Status::Normal);
    // The sender is in the view change to view 1; view 0 is the newest it
    // holds the log of, the same view as the receiver's.
    lagging.on_message(Source::Replica(0), checkpoint_message(&cluster, 1, 0));
    assert_eq!(lagging.commit_max(), cluster.disks[0].checkpoint.as_ref().unwrap().anchor.op, "restored");
    assert_eq!(lagging.view(), 0, "no view started past this replica's");
    assert_ne!(lagging.status(), Status::Recovering, "it can still vote in the view change");
}

#[test]
fn a_checkpoint_from_a_started_newer_view_moves_the_receiver_into_that_views_change() {
    let cluster = cluster_past_a_checkpoint();
    let mut lagging = Replica::new(config(2, 3, 1), AppendLog::default());
    lagging.on_message(Source::Replica(0), checkpoint_message(&cluster, 2, 1));
    assert_eq!(lagging.view(), 1, "the started view, not the sender's view change");
    // Acknowledging nothing of its old view, but a voter: Recovering took
    // its vote away (disk-rot seeds 1963, 5559).
    assert_eq!(lagging.status(), Status::ViewChange);
}
