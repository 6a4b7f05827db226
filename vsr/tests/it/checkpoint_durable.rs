//! A replica serves only a checkpoint that is durable on its own disk.
//!
//! Swarm seed 9620 (session 30, with the partition-sync fault drawn): R2
//! checkpointed at op 34 in memory and, 10 ms later, answered R1's catch-up
//! request with it; 4 ms after that the partition log sync of that very
//! checkpoint failed and R2 crashed, so the checkpoint never reached its
//! disk. R1 installed it (dropping its own journal's copy of ops up to 34)
//! and passed it on to R0. Offset 32, applied at one of those ops, then
//! lived only in R2's page cache: after the restarts every replica lacked
//! it. The simulator's checker called it liveness ("missing partition
//! offsets 32..33" on every replica); it is a lost committed write, and the
//! checker now says so (`check_no_committed_offset_held_nowhere`).
//!
//! The step-by-step version below uses the harness's state machine (its
//! snapshot holds every message, so nothing is lost here): it shows the
//! rule the loss broke, that the checkpoint goes to a lagging peer only
//! once the node has reported it durable.

use shoal_vsr::header::Command;

use crate::harness::{CHECKPOINT_INTERVAL_OPS, Cluster, Sender, client};

const APPENDS: u64 = CHECKPOINT_INTERVAL_OPS + 4;
/// Rounds a lagging replica has to ask for the checkpoint: many repair
/// timeouts.
const CATCH_UP_ROUNDS: usize = 200;

/// Who sent each checkpoint chunk so far, in order.
fn checkpoint_senders(cluster: &Cluster) -> Vec<Sender> {
    cluster
        .sent
        .iter()
        .filter(|envelope| envelope.command() == Command::Checkpoint)
        .map(|envelope| envelope.from)
        .collect()
}

#[test]
fn a_checkpoint_is_served_to_a_lagging_peer_only_once_it_is_durable() {
    let mut cluster = Cluster::new(3);
    cluster.register(client(0), 0);
    cluster.deliver_all();
    // R1 misses everything from here; R0's and R2's partition log syncs of
    // their next checkpoint run beside the node.
    cluster.cut(&[1], &[0, 2]);
    cluster.hold_checkpoints(0);
    cluster.hold_checkpoints(2);
    for request in 1..=APPENDS {
        cluster.append(client(0), 0, request, &[request as u8; 8]);
        cluster.deliver_all();
    }
    let checkpoint_op = cluster.replica(0).checkpoint_op();
    assert!(checkpoint_op >= CHECKPOINT_INTERVAL_OPS, "R0 checkpointed in memory");
    assert!(cluster.replica(2).checkpoint_op() >= CHECKPOINT_INTERVAL_OPS, "R2 too");
    assert_eq!(cluster.checkpoints_held.len(), 2, "neither checkpoint is on a disk");
    assert!(cluster.replica(1).commit_min() < checkpoint_op, "R1 needs a checkpoint to catch up");

    // R1 is back and asks both peers for the ops after its commit: they
    // hold them only in the checkpoint, which is on no disk yet.
    cluster.heal();
    cluster.run(&[0, 1, 2], CATCH_UP_ROUNDS);
    assert_eq!(checkpoint_senders(&cluster), [], "a checkpoint on no disk was served");
    assert!(cluster.replica(1).commit_min() < checkpoint_op, "R1 installed nothing");

    // R2's partition log sync fails: it crashes, its checkpoint never
    // reaches the disk, and it restarts from what the disk kept (the older
    // state and the journal that still holds every op).
    cluster.crash(2);
    cluster.restart(2);
    assert!(
        cluster.replica(2).checkpoint_op() < checkpoint_op || cluster.checkpoints_held.iter().any(|(r, _)| *r == 2)
    );

    // R0's checkpoint becomes durable: from now on it is served, and R1
    // catches up from it.
    cluster.release_checkpoints(0);
    let caught_up = cluster.run_until(&[0, 1, 2], CATCH_UP_ROUNDS, |c| c.replica(1).commit_min() >= checkpoint_op);
    assert!(caught_up, "R1 restored R0's durable checkpoint");
    assert!(cluster.replica(1).stats().state_transfers >= 1);
    let senders = checkpoint_senders(&cluster);
    assert!(!senders.is_empty());
    assert!(
        senders.iter().all(|from| *from == Sender::Replica(0)),
        "only R0's durable checkpoint was served: {senders:?}"
    );
    cluster.release_checkpoints(2);
    cluster.run(&[0, 1, 2], CATCH_UP_ROUNDS);
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}
