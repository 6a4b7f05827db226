//! A checkpoint larger than one frame reaches a lagging replica in chunks.
//!
//! Found by the simulator once it refused frames over the frame limit as the
//! server's connection decoder does (branch `frame-limit`, swarm/disk-rot
//! sweeps: a Checkpoint frame of 6.9 KiB against the simulated 4 KiB
//! `message_size_max`): a state transfer sent the whole snapshot in one
//! frame, so once a group's snapshot outgrew its message size, a replica
//! that fell behind the checkpoint could never catch up (the peer closes
//! the connection on the frame, every time it is sent).

use shoal_vsr::header::{Command, HEADER_SIZE_BYTES};
use shoal_vsr::message::{CHECKPOINT_CHUNK_PREFIX_BYTES, CheckpointChunk};
use shoal_vsr::replica::Status;

use crate::harness::{Cluster, client};

const FRAME_BYTES: u32 = 4096;
/// Each append's payload: 40 of them make a snapshot of about ten frames.
const PAYLOAD_BYTES: usize = 1000;

#[test]
fn a_snapshot_larger_than_a_frame_arrives_in_chunks_and_the_lagging_replica_catches_up() {
    let mut cluster = Cluster::with_message_size_max(3, FRAME_BYTES);
    cluster.register(client(0), 0);
    cluster.deliver_all();
    // R2 misses everything from here; R0 and R1 commit past two checkpoints.
    cluster.cut(&[2], &[0, 1]);
    for request in 1..=40 {
        cluster.append(client(0), 0, request, &vec![request as u8; PAYLOAD_BYTES]);
        cluster.deliver_all();
    }
    let checkpoint_op = cluster.replica(0).checkpoint_op();
    assert!(checkpoint_op >= 32, "R0 checkpointed past what R2 holds");
    assert!(cluster.replica(2).commit_min() <= 1, "R2 holds at most the register");

    cluster.heal();
    let caught_up = cluster.run_until(&[0, 1, 2], 1_000, |c| c.replica(2).commit_min() >= checkpoint_op);
    assert!(
        cluster.violations.is_empty(),
        "{} violations, first: {:?}",
        cluster.violations.len(),
        cluster.violations.first()
    );
    assert!(caught_up, "R2 restored the checkpoint from its chunks");
    assert!(cluster.replica(2).stats().state_transfers >= 1);
    assert_eq!(cluster.replica(2).status(), Status::Normal);

    // The snapshot took several frames, each within the limit, and more
    // than one answer (an answer carries a bounded number of chunks).
    let chunks: Vec<CheckpointChunk> = cluster
        .sent
        .iter()
        .filter(|envelope| envelope.command() == Command::Checkpoint)
        .map(|envelope| CheckpointChunk::decode(&envelope.message.body).expect("a valid chunk"))
        .collect();
    let snapshot_size_bytes = chunks[0].snapshot_size_bytes;
    assert!(snapshot_size_bytes > u64::from(FRAME_BYTES) * 6, "the snapshot spans many frames");
    assert!(
        chunks
            .iter()
            .all(|chunk| HEADER_SIZE_BYTES + CHECKPOINT_CHUNK_PREFIX_BYTES + chunk.bytes.len() <= FRAME_BYTES as usize)
    );
    assert!(chunks.iter().filter(|chunk| chunk.last_of_answer).count() >= 2, "more than one answer");

    // And R2 holds the same state: it commits what comes next with the others.
    cluster.append(client(0), 0, 41, b"after");
    cluster.deliver_all();
    let converged = cluster.run_until(&[0, 1, 2], 200, |c| c.replica(2).commit_min() == c.replica(0).commit_min());
    assert!(converged);
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}
