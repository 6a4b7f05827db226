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

/// Three replicas with frames of `FRAME_BYTES`: R2 misses everything after
/// the register (cut off), R0 and R1 commit 40 appends of `PAYLOAD_BYTES`,
/// past two checkpoints; the links stay cut. Returns R0's checkpoint op.
fn r2_behind_two_checkpoints() -> (Cluster, u64) {
    let mut cluster = Cluster::with_message_size_max(3, FRAME_BYTES);
    cluster.register(client(0), 0);
    cluster.deliver_all();
    cluster.cut(&[2], &[0, 1]);
    for request in 1..=40 {
        cluster.append(client(0), 0, request, &vec![request as u8; PAYLOAD_BYTES]);
        cluster.deliver_all();
    }
    let checkpoint_op = cluster.replica(0).checkpoint_op();
    (cluster, checkpoint_op)
}

#[test]
fn a_snapshot_larger_than_a_frame_arrives_in_chunks_and_the_lagging_replica_catches_up() {
    let (mut cluster, checkpoint_op) = r2_behind_two_checkpoints();
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

/// Swarm seed 1407 (session 16): snapshots of one checkpoint differ between
/// replicas (each session keeps the reply header its replica made, which
/// names it), and a replica's may change when it makes the checkpoint again
/// after a crash. R2 starts assembling R0's snapshot; R0 goes away before
/// the rest arrives, and R1 answers R2's requests for the rest with pieces
/// of its own snapshot of the same checkpoint. R2 dropped them as "older
/// than the assembly" and asked again, forever (490,000 answers in the
/// seed); now another snapshot of the same checkpoint restarts the
/// assembly, and R2 catches up from R1.
#[test]
fn a_checkpoint_assembly_whose_sender_went_away_restarts_from_another_replicas_snapshot() {
    let (mut cluster, checkpoint_op) = r2_behind_two_checkpoints();
    assert_eq!(cluster.replica(1).checkpoint_op(), checkpoint_op, "R0 and R1 hold the same checkpoint");

    // R2 hears only R0, and takes only the first chunk R0 sends it.
    cluster.heal();
    cluster.cut(&[2], &[1]);
    let from_r0 = |e: &crate::harness::Envelope| e.command() == Command::Checkpoint && e.between(0, 2);
    for _ in 0..200 {
        if cluster.pending(from_r0) > 0 {
            break;
        }
        cluster.tick(2);
        cluster.deliver_where(|e| !from_r0(e));
    }
    assert!(cluster.pending(from_r0) > 1, "R2 asked R0 for its checkpoint, which takes several chunks");
    let mut taken = 0;
    cluster.deliver_where(|e| {
        let first = from_r0(e) && taken == 0;
        taken += usize::from(first);
        first
    });
    let r0_chunk = cluster.sent.iter().rev().find(|e| from_r0(e)).map(|e| e.message.body.clone());
    let r0_chunk = CheckpointChunk::decode(&r0_chunk.expect("R0 sent a chunk")).expect("a valid chunk");
    assert!(r0_chunk.snapshot_size_bytes > u64::from(FRAME_BYTES), "one chunk is not the whole snapshot");
    cluster.drop_where(|e| e.between(0, 2) || e.between(2, 0));
    assert!(cluster.replica(2).commit_min() < checkpoint_op, "R2 holds a part of R0's snapshot only");

    // R0 goes away for good; R2 hears R1, whose snapshot is another one.
    cluster.heal();
    cluster.cut(&[2], &[0]);
    let caught_up = cluster.run_until(&[0, 1, 2], 1_000, |c| c.replica(2).commit_min() >= checkpoint_op);
    let r1_chunk = cluster
        .sent
        .iter()
        .find(|e| e.command() == Command::Checkpoint && e.between(1, 2))
        .map(|e| CheckpointChunk::decode(&e.message.body).expect("a valid chunk"))
        .expect("R1 answered R2 with its checkpoint");
    assert_eq!(r1_chunk.anchor.checksum, r0_chunk.anchor.checksum, "the same checkpoint");
    assert_ne!(r1_chunk.snapshot_checksum, r0_chunk.snapshot_checksum, "another replica's snapshot of it");
    assert!(caught_up, "R2 restored R1's snapshot of the checkpoint");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}
