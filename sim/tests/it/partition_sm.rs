//! The partition state machine on `SimIo`: apply queues, persist makes
//! durable, and after a crash restoring the checkpoint and replaying the
//! committed ops gives the same replies without writing any offset twice.

use std::path::Path;

use proptest::prelude::*;
use shoal_shard::partition_log::PartitionLogConfig;
use shoal_shard::{BatchReply, Namespace, PartitionSmError, PartitionStateMachine, encode_batch};
use shoal_sim::{SimIo, block_on_ready};
use shoal_vsr::{Operation, StateMachine};

const DIR: &str = "/data/r0/partition";

fn namespace() -> Namespace {
    Namespace::partition(3, 1, 0).unwrap()
}

/// Small segments, so that the longer tests also roll segments.
fn config() -> PartitionLogConfig {
    PartitionLogConfig { segment_size_max_bytes: 200 }
}

fn open(io: &SimIo) -> PartitionStateMachine<SimIo> {
    block_on_ready(PartitionStateMachine::open_with_config(io.clone(), Path::new(DIR), namespace(), config()))
        .expect("the partition log opens")
}

/// A batch of one message; returns its offset.
fn send(sm: &mut PartitionStateMachine<SimIo>, message: &[u8]) -> u64 {
    let reply = send_batch(sm, &[message]);
    assert_eq!(reply.count, 1, "a batch of one takes one offset");
    reply.first_offset
}

fn send_batch(sm: &mut PartitionStateMachine<SimIo>, messages: &[&[u8]]) -> BatchReply {
    let reply = sm.apply(0, Operation::SendMessages, &encode_batch(messages).unwrap(), 0);
    BatchReply::decode(&reply).expect("a SendMessages reply is a batch reply")
}

/// The `PollMessages` reply: the committed high watermark.
fn poll(sm: &mut PartitionStateMachine<SimIo>, offset: u64) -> u64 {
    let reply = sm.apply(0, Operation::PollMessages, &offset.to_le_bytes(), 0);
    u64::from_le_bytes(reply.try_into().expect("a poll reply is 8 bytes"))
}

fn read_all(sm: &PartitionStateMachine<SimIo>) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let batch = block_on_ready(sm.read(out.len() as u64, 64)).expect("the log reads back");
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

fn message(i: u64) -> Vec<u8> {
    format!("message-{i}").into_bytes()
}

fn expected(range: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
    range.map(|i| (i, message(i))).collect()
}

#[test]
fn apply_queues_persist_makes_durable_and_read_serves_the_log() {
    let io = SimIo::new(1);
    let mut sm = open(&io);
    for i in 0..3 {
        assert_eq!(send(&mut sm, &message(i)), i);
    }
    assert_eq!(sm.pending_count(), 3);
    assert_eq!(poll(&mut sm, 1), 3, "poll through consensus answers the high watermark");
    assert!(read_all(&sm).is_empty(), "nothing is in the log before persist");
    block_on_ready(sm.persist()).unwrap();
    assert_eq!(sm.pending_count(), 0);
    assert_eq!(sm.log_next_offset(), 3);
    assert_eq!(poll(&mut sm, 1), 3, "the reply does not depend on persist");
    assert_eq!(read_all(&sm), expected(0..3));
    assert_eq!(sm.apply(0, Operation::CreateStream, b"x", 0), Vec::<u8>::new());
    assert_eq!(sm.next_offset(), 3, "other operations change nothing");
}

#[test]
fn a_batch_takes_dense_offsets_in_order_and_a_bad_body_takes_none() {
    let io = SimIo::new(3);
    let mut sm = open(&io);
    assert_eq!(send(&mut sm, b"alone"), 0);
    let reply = send_batch(&mut sm, &[b"a", b"bb", b"", b"ccc"]);
    assert_eq!(reply, BatchReply { first_offset: 1, count: 4 });
    assert_eq!(reply.offsets(), 1..5);
    let refused = sm.apply(0, Operation::SendMessages, b"not a batch", 0);
    assert_eq!(BatchReply::decode(&refused).unwrap(), BatchReply { first_offset: 5, count: 0 });
    let empty = sm.apply(0, Operation::SendMessages, &0u32.to_le_bytes(), 0);
    assert!(BatchReply::decode(&empty).unwrap().refused(), "an empty batch is refused");
    assert_eq!(sm.next_offset(), 5, "a refused body takes no offset");
    assert_eq!(send(&mut sm, b"after"), 5);
    block_on_ready(sm.persist()).unwrap();
    let log: Vec<(u64, Vec<u8>)> = read_all(&sm);
    let want: Vec<(u64, Vec<u8>)> = [&b"alone"[..], b"a", b"bb", b"", b"ccc", b"after"]
        .iter()
        .enumerate()
        .map(|(i, m)| (i as u64, m.to_vec()))
        .collect();
    assert_eq!(log, want, "each message of the batch at its own offset, in batch order");
}

#[test]
fn replies_and_snapshots_do_not_depend_on_when_a_replica_persists() {
    let io_a = SimIo::new(7);
    let io_b = SimIo::new(8);
    let mut a = open(&io_a);
    let mut b = open(&io_b);
    for i in 0..10 {
        assert_eq!(send(&mut a, &message(i)), send(&mut b, &message(i)));
        if i % 3 == 0 {
            block_on_ready(a.persist()).unwrap();
        }
        for offset in [0, i, i + 1] {
            let body = offset.to_le_bytes();
            assert_eq!(
                a.apply(0, Operation::PollMessages, &body, 0),
                b.apply(0, Operation::PollMessages, &body, 0),
                "a poll reply is the same on every replica"
            );
        }
        assert_eq!(a.snapshot(), b.snapshot());
    }
    assert_ne!(a.pending_count(), b.pending_count(), "the replicas did persist at different times");
}

#[test]
fn crash_before_persist_loses_only_unpersisted_messages_and_replay_restores_them() {
    let io = SimIo::new(2);
    let mut sm = open(&io);
    for i in 0..3 {
        send(&mut sm, &message(i));
    }
    block_on_ready(sm.persist()).unwrap();
    let checkpoint = sm.snapshot();
    for i in 3..6 {
        send(&mut sm, &message(i));
    }
    let snapshot_before_crash = sm.snapshot();
    drop(sm);
    io.crash();

    let mut sm = open(&io);
    assert_eq!(read_all(&sm), expected(0..3), "the persisted messages survive, the rest are gone");
    sm.restore(&checkpoint).unwrap();
    for i in 3..6 {
        assert_eq!(send(&mut sm, &message(i)), i, "the replayed op gets the offset it got the first time");
    }
    assert_eq!(sm.snapshot(), snapshot_before_crash);
    block_on_ready(sm.persist()).unwrap();
    assert_eq!(read_all(&sm), expected(0..6));
}

/// The journal is the write-ahead log: on the commit path the driver only
/// writes the partition log (`write_pending`, no sync) and syncs it before a
/// checkpoint (`persist`). A crash then leaves the log holding all, some,
/// none, or a torn part of the messages written since the checkpoint; the
/// replica restores the checkpoint and replays the ops above it, and the log
/// must end exactly as if it had synced every step: no lost, duplicated or
/// different offset. Many seeds, so every outcome of the crash comes up.
#[test]
fn unsynced_writes_after_a_checkpoint_are_cut_or_compared_and_replay_completes_the_log() {
    let (mut kept_all, mut kept_some, mut kept_none) = (0, 0, 0);
    for seed in 0..200 {
        let io = SimIo::new(seed);
        io.disk().faults = shoal_sim::DiskFaults::crash_only();
        // One segment: a roll would sync what it seals.
        let one_segment = PartitionLogConfig { segment_size_max_bytes: 1 << 20 };
        let open = |io: &SimIo| {
            block_on_ready(PartitionStateMachine::open_with_config(
                io.clone(),
                Path::new(DIR),
                namespace(),
                one_segment,
            ))
            .expect("the partition log opens")
        };
        let mut sm = open(&io);
        for i in 0..4 {
            send(&mut sm, &message(i));
        }
        block_on_ready(sm.persist()).unwrap();
        let checkpoint = sm.snapshot();
        // Commits after the checkpoint, written step by step, never synced.
        for i in 4..10 {
            send(&mut sm, &message(i));
            block_on_ready(sm.write_pending()).unwrap();
            assert_eq!(sm.pending_count(), 0, "written: nothing waits in memory");
        }
        assert!(sm.log().unsynced_bytes() > 0, "the commit path did not sync");
        let snapshot_before_crash = sm.snapshot();
        drop(sm);
        io.crash();

        let mut sm = open(&io);
        let kept = sm.log_next_offset();
        assert!((4..=10).contains(&kept), "seed {seed}: the synced prefix survives, kept up to {kept}");
        assert_eq!(read_all(&sm), expected(0..kept), "seed {seed}: what is kept is an exact prefix");
        match kept {
            10 => kept_all += 1,
            4 => kept_none += 1,
            _ => kept_some += 1,
        }
        sm.restore(&checkpoint).unwrap();
        for i in 4..10 {
            assert_eq!(send(&mut sm, &message(i)), i, "seed {seed}: the replayed op gets its first offset");
        }
        assert_eq!(sm.snapshot(), snapshot_before_crash);
        // Kept offsets are compared with the replayed ops, lost ones written again.
        block_on_ready(sm.write_pending()).unwrap();
        assert_eq!(read_all(&sm), expected(0..10), "seed {seed}");
        block_on_ready(sm.persist()).unwrap();
        assert_eq!(sm.log().unsynced_bytes(), 0, "persist syncs what the commit path wrote");
    }
    assert!(kept_all > 0 && kept_some > 0 && kept_none > 0, "all {kept_all}, some {kept_some}, none {kept_none}");
}

#[test]
fn crash_after_persist_then_replay_does_not_duplicate() {
    let io = SimIo::new(3);
    let mut sm = open(&io);
    for i in 0..4 {
        send(&mut sm, &message(i));
    }
    block_on_ready(sm.persist()).unwrap();
    let checkpoint = sm.snapshot();
    for i in 4..9 {
        send(&mut sm, &message(i));
    }
    block_on_ready(sm.persist()).unwrap();
    let snapshot_before_crash = sm.snapshot();
    drop(sm);
    io.crash();

    let mut sm = open(&io);
    sm.restore(&checkpoint).unwrap();
    for i in 4..9 {
        assert_eq!(send(&mut sm, &message(i)), i);
    }
    assert_eq!(sm.pending_count(), 0, "every replayed offset is already durable");
    assert_eq!(sm.snapshot(), snapshot_before_crash);
    block_on_ready(sm.persist()).unwrap();
    assert_eq!(read_all(&sm), expected(0..9));
    assert!(sm.log().segment_count() > 1, "the test crossed segment rolls");

    // Without a checkpoint the replica replays from the first op: same result.
    drop(sm);
    io.crash();
    let mut sm = open(&io);
    for i in 0..9 {
        assert_eq!(send(&mut sm, &message(i)), i);
    }
    assert_eq!(sm.snapshot(), snapshot_before_crash);
    block_on_ready(sm.persist()).unwrap();
    assert_eq!(read_all(&sm), expected(0..9));
}

#[test]
fn snapshot_from_a_peer_ahead_of_the_log_is_a_gap_not_a_misplaced_write() {
    let io_a = SimIo::new(4);
    let mut a = open(&io_a);
    for i in 0..5 {
        send(&mut a, &message(i));
    }
    let io_b = SimIo::new(5);
    let mut b = open(&io_b);
    send(&mut b, &message(0));
    b.restore(&a.snapshot()).unwrap();
    assert_eq!(b.pending_count(), 0, "the queue below the peer's snapshot is dropped");
    assert_eq!(b.missing(), Some(0..5));
    assert_eq!(send(&mut b, &message(5)), 5);
    match block_on_ready(b.persist()) {
        Err(PartitionSmError::Gap { log_next_offset: 0, pending_offset: 5 }) => {}
        other => panic!("expected a gap, got {other:?}"),
    }
    assert!(read_all(&b).is_empty(), "nothing was written at the wrong offsets");
}

/// A partition with a state-transfer gap holds the messages applied after
/// it only in memory: no checkpoint may count them until a peer fills the
/// gap and they are persisted (disk-rot seed 3788 lost offsets 241..336 on
/// every replica when two replicas with gaps checkpointed past them).
#[test]
fn a_partition_with_a_gap_is_not_ready_for_a_checkpoint_until_filled() {
    let io_a = SimIo::new(4);
    let mut a = open(&io_a);
    for i in 0..5 {
        send(&mut a, &message(i));
    }
    block_on_ready(a.persist()).unwrap();
    let io_b = SimIo::new(5);
    let mut b = open(&io_b);
    assert!(b.checkpoint_ready(), "nothing applied, nothing to hold");
    b.restore(&a.snapshot()).unwrap();
    send(&mut b, &message(5));
    assert!(!b.checkpoint_ready(), "offset 5 is only in memory behind the gap 0..5");
    assert!(block_on_ready(b.persist()).is_err(), "and cannot be persisted");
    fill_all(&mut b, 0, &fetched(0..5));
    assert!(b.checkpoint_ready(), "filled: the log can take everything applied");
    block_on_ready(b.persist()).unwrap();
    assert_eq!(read_all(&b), expected(0..6));
}

fn fetched(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range.map(message).collect()
}

/// `fill`, then `fill_more` until a checked fill is all in the log, as the
/// node's ticks do. Returns what `fill` took.
fn fill_all(sm: &mut PartitionStateMachine<SimIo>, first_offset: u64, messages: &[Vec<u8>]) -> usize {
    let taken = block_on_ready(sm.fill(first_offset, messages)).unwrap();
    for _ in 0..=messages.len() {
        if !block_on_ready(sm.fill_more()).unwrap() {
            return taken;
        }
    }
    panic!("a checked fill appends at least one message per call");
}

#[test]
fn fill_writes_a_peers_messages_only_once_they_chain_to_the_checkpoint() {
    let io_a = SimIo::new(10);
    let mut a = open(&io_a);
    for i in 0..6 {
        send(&mut a, &message(i));
    }
    block_on_ready(a.persist()).unwrap();
    // B holds offsets 0..2 itself, then restores A's checkpoint at 6.
    let io_b = SimIo::new(11);
    let mut b = open(&io_b);
    for i in 0..2 {
        send(&mut b, &message(i));
    }
    block_on_ready(b.persist()).unwrap();
    b.restore(&a.snapshot()).unwrap();
    assert_eq!(b.missing(), Some(2..6));
    // Two batches: the first is staged, not written (it cannot be checked yet).
    assert_eq!(block_on_ready(b.fill(2, &fetched(2..4))).unwrap(), 2);
    assert_eq!(b.log_next_offset(), 2, "an unchecked batch is not in the log");
    assert_eq!(b.missing(), Some(4..6), "a staged batch is not asked for again");
    assert_eq!(block_on_ready(b.fill(2, &fetched(2..4))).unwrap(), 0, "a repeated answer is ignored");
    assert_eq!(fill_all(&mut b, 4, &fetched(4..9)), 2, "only the gap is taken");
    assert_eq!(b.missing(), None);
    block_on_ready(b.persist()).unwrap();
    assert_eq!(read_all(&b), expected(0..6));
    assert_eq!(b.snapshot(), a.snapshot());
}

/// Replica a applies and persists 40 messages; replica b restores a's
/// checkpoint and applies the 41st, so its log lacks offsets 0..40 (a
/// state transfer's gap). Seeds `seed` and `seed + 1`; b's `SimIo` too.
fn forty_behind(seed: u64) -> (PartitionStateMachine<SimIo>, PartitionStateMachine<SimIo>, SimIo) {
    let io_a = SimIo::new(seed);
    let mut a = open(&io_a);
    for i in 0..40 {
        send(&mut a, &message(i));
    }
    block_on_ready(a.persist()).unwrap();
    let io_b = SimIo::new(seed + 1);
    let mut b = open(&io_b);
    b.restore(&a.snapshot()).unwrap();
    send(&mut b, &message(40));
    (a, b, io_b)
}

/// A checked gap goes into the log a part per call, each part ending at the
/// first roll to a new segment (or at `FILL_APPEND_BYTES_PER_CALL_MAX`), so
/// a large gap never holds the node for its whole write; meanwhile nothing
/// is asked for again and nothing behind the gap is persisted.
#[test]
fn a_checked_fill_is_appended_a_part_per_call_each_ending_at_a_roll() {
    let (mut a, mut b, _io_b) = forty_behind(18);
    assert_eq!(b.missing(), Some(0..40));

    let segments_before = b.log().segment_count();
    assert_eq!(block_on_ready(b.fill(0, &fetched(0..40))).unwrap(), 40);
    let mut calls = 1;
    let mut segments = b.log().segment_count();
    assert!(segments <= segments_before + 1, "one roll at most per call");
    while b.fill_appending() {
        assert!(b.log_next_offset() < 40, "appending: the gap is not whole in the log yet");
        assert_eq!(b.to_fetch(), None, "a checked fill is not asked for again");
        assert_eq!(b.missing(), Some(b.log_next_offset()..40), "the log lacks what is still to append");
        assert!(block_on_ready(b.persist()).is_err(), "what was applied behind the gap waits");
        assert_eq!(block_on_ready(b.fill(b.log_next_offset(), &fetched(b.log_next_offset()..40))).unwrap(), 0);
        block_on_ready(b.fill_more()).unwrap();
        calls += 1;
        assert!(b.log().segment_count() <= segments + 1, "one roll at most per call");
        segments = b.log().segment_count();
        assert!(calls <= 40, "each call appends at least one message");
    }
    assert!(calls > 2, "40 messages over 200-byte segments take several calls ({calls})");
    block_on_ready(b.persist()).unwrap();
    assert_eq!(read_all(&b), expected(0..41));
    assert_eq!(b.snapshot(), {
        send(&mut a, &message(40));
        a.snapshot()
    });
}

#[test]
fn fill_rejects_messages_that_do_not_match_the_checkpoint_chain() {
    let io_a = SimIo::new(12);
    let mut a = open(&io_a);
    for i in 0..5 {
        send(&mut a, &message(i));
    }
    let io_b = SimIo::new(13);
    let mut b = open(&io_b);
    b.restore(&a.snapshot()).unwrap();
    let mut bad = fetched(0..5);
    bad[3][0] ^= 1; // one bit of one message, damaged at the peer or on the way
    // Before the check, fill wrote all five and the log served the bad one.
    match block_on_ready(b.fill(0, &bad)) {
        Err(PartitionSmError::FillMismatch { first_offset: 0, end_offset: 5 }) => {}
        other => panic!("expected FillMismatch, got {other:?}"),
    }
    assert_eq!(b.log_next_offset(), 0, "nothing was written");
    assert_eq!(b.missing(), Some(0..5), "the gap is still there to fetch again");
    // The right messages, from another peer, are taken.
    assert_eq!(fill_all(&mut b, 0, &fetched(0..5)), 5);
    block_on_ready(b.persist()).unwrap();
    assert_eq!(read_all(&b), expected(0..5));
}

#[test]
fn fill_rejects_a_gap_when_this_replicas_own_log_below_it_differs() {
    let io_a = SimIo::new(14);
    let mut a = open(&io_a);
    for i in 0..4 {
        send(&mut a, &message(i));
    }
    let io_b = SimIo::new(15);
    let mut b = open(&io_b);
    send(&mut b, b"not the committed message 0");
    block_on_ready(b.persist()).unwrap();
    b.restore(&a.snapshot()).unwrap();
    assert_eq!(b.missing(), Some(1..4));
    assert!(matches!(block_on_ready(b.fill(1, &fetched(1..4))), Err(PartitionSmError::FillMismatch { .. })));
    assert_eq!(b.log_next_offset(), 1);
}

#[test]
fn a_replayed_op_that_differs_from_the_logs_record_fails_loudly() {
    let io = SimIo::new(16);
    let mut sm = open(&io);
    for i in 0..3 {
        send(&mut sm, &message(i));
    }
    block_on_ready(sm.persist()).unwrap();
    drop(sm);
    io.crash();
    // The log's record at offset 1 is not the op the WAL replays there.
    let mut sm = open(&io);
    send(&mut sm, &message(0));
    send(&mut sm, b"message-X");
    send(&mut sm, &message(2));
    assert_eq!(sm.pending_count(), 0, "every replayed offset is already in the log");
    // Before the comparison, persist returned Ok and read served message-1.
    match block_on_ready(sm.read(1, 1)) {
        Err(PartitionSmError::ReplayMismatch { offset: 1 }) => {}
        other => panic!("expected ReplayMismatch from read, got {other:?}"),
    }
    assert_eq!(block_on_ready(sm.read(0, 1)).unwrap(), expected(0..1), "offsets that match are served");
    match block_on_ready(sm.persist()) {
        Err(PartitionSmError::ReplayMismatch { offset: 1 }) => {}
        other => panic!("expected ReplayMismatch from persist, got {other:?}"),
    }
}

#[test]
fn a_failed_persist_can_be_retried_without_duplicates() {
    let io = SimIo::new(9);
    let mut sm = open(&io);
    for i in 0..12 {
        send(&mut sm, &message(i));
    }
    io.disk().fail_next_write();
    assert!(block_on_ready(sm.persist()).is_err());
    assert_eq!(sm.pending_count() as u64 + sm.log_next_offset(), 12, "each offset is in the log or queued");
    io.disk().fail_next_sync();
    assert!(block_on_ready(sm.persist()).is_err());
    block_on_ready(sm.persist()).unwrap();
    assert_eq!(sm.pending_count(), 0);
    assert_eq!(read_all(&sm), expected(0..12));
    drop(sm);
    io.crash();
    assert_eq!(read_all(&open(&io)), expected(0..12), "the retried persist is durable");
}

#[test]
fn restore_rejects_bad_snapshots() {
    let io = SimIo::new(6);
    let mut sm = open(&io);
    let good = sm.snapshot();
    let mut bad_tag = good.clone();
    bad_tag[0] ^= 0xff;
    assert!(matches!(sm.restore(&bad_tag), Err(shoal_vsr::state_machine::SnapshotError::BadTag { .. })));
    assert!(matches!(sm.restore(&good[..10]), Err(shoal_vsr::state_machine::SnapshotError::Truncated { .. })));
    let mut long = good.clone();
    long.push(0);
    assert!(sm.restore(&long).is_err());
    sm.restore(&good).unwrap();
}

#[derive(Debug, Clone)]
enum Step {
    /// A batch of messages.
    Send(Vec<Vec<u8>>),
    /// A body that is most likely not a batch.
    Garbage(Vec<u8>),
    Poll(u64),
    Persist,
    /// Persist, then make a checkpoint durable (the driver's order).
    Checkpoint,
    /// Crash, after `steps_max` more storage calls of a persist if given.
    Crash {
        steps_max: Option<u64>,
    },
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 1..6).prop_map(Step::Send),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(Step::Garbage),
        1 => (0u64..64).prop_map(Step::Poll),
        2 => Just(Step::Persist),
        1 => Just(Step::Checkpoint),
        1 => prop::option::of(0u64..8).prop_map(|steps_max| Step::Crash { steps_max }),
    ]
}

/// One committed op as the WAL holds it, with the reply it got the first time.
struct Committed {
    operation: Operation,
    body: Vec<u8>,
    reply: Vec<u8>,
}

proptest! {
    #[test]
    fn random_apply_persist_crash_replay_matches_the_model(seed in any::<u64>(), steps in prop::collection::vec(arb_step(), 1..60)) {
        let io = SimIo::new(seed);
        let mut sm = open(&io);
        // The never-crashed twin: what every replica's logical state must be.
        let twin_io = SimIo::new(seed ^ 1);
        let mut twin = open(&twin_io);
        // The model: every committed op (the WAL), the messages in offset
        // order, the durable checkpoint (snapshot, ops it covers), and how
        // many offsets a successful persist vouched for.
        let mut wal: Vec<Committed> = Vec::new();
        let mut messages: Vec<Vec<u8>> = Vec::new();
        let mut checkpoint: Option<(Vec<u8>, usize)> = None;
        let mut persisted = 0usize;
        for step in steps {
            match step {
                Step::Send(batch) => {
                    let body = encode_batch(&batch).unwrap();
                    let reply = sm.apply(0, Operation::SendMessages, &body, 0);
                    let want = BatchReply { first_offset: messages.len() as u64, count: batch.len() as u32 };
                    prop_assert_eq!(&reply, &want.encode().to_vec());
                    prop_assert_eq!(&twin.apply(0, Operation::SendMessages, &body, 0), &reply);
                    messages.extend(batch);
                    wal.push(Committed { operation: Operation::SendMessages, body, reply });
                }
                Step::Garbage(body) => {
                    // Not a batch (or, rarely, one): committed all the same.
                    let reply = sm.apply(0, Operation::SendMessages, &body, 0);
                    prop_assert_eq!(&twin.apply(0, Operation::SendMessages, &body, 0), &reply);
                    let reply_decoded = BatchReply::decode(&reply).unwrap();
                    prop_assert_eq!(reply_decoded.first_offset, messages.len() as u64);
                    if let Ok(batch) = shoal_shard::decode_batch(&body) {
                        messages.extend(batch.into_iter().map(<[u8]>::to_vec));
                    }
                    prop_assert_eq!(reply_decoded.offsets().end, messages.len() as u64);
                    wal.push(Committed { operation: Operation::SendMessages, body, reply });
                }
                Step::Poll(offset) => {
                    let body = offset.to_le_bytes().to_vec();
                    let reply = sm.apply(0, Operation::PollMessages, &body, 0);
                    prop_assert_eq!(&reply, &(messages.len() as u64).to_le_bytes().to_vec());
                    prop_assert_eq!(&twin.apply(0, Operation::PollMessages, &body, 0), &reply);
                    wal.push(Committed { operation: Operation::PollMessages, body, reply });
                }
                Step::Persist => {
                    block_on_ready(sm.persist()).unwrap();
                    persisted = messages.len();
                }
                Step::Checkpoint => {
                    block_on_ready(sm.persist()).unwrap();
                    persisted = messages.len();
                    checkpoint = Some((sm.snapshot(), wal.len()));
                }
                Step::Crash { steps_max } => {
                    if let Some(steps_max) = steps_max {
                        io.disk().crash_after_steps(steps_max);
                        if block_on_ready(sm.persist()).is_ok() {
                            persisted = messages.len();
                        }
                    }
                    drop(sm);
                    io.crash();
                    sm = open(&io);
                    let log_next = sm.log_next_offset() as usize;
                    prop_assert!(log_next >= persisted, "persisted offset lost: log ends at {} < {}", log_next, persisted);
                    prop_assert!(log_next <= messages.len(), "the log holds an offset never applied");
                    let replay_from = match &checkpoint {
                        Some((snapshot, ops)) => {
                            sm.restore(snapshot).unwrap();
                            *ops
                        }
                        None => 0,
                    };
                    for committed in &wal[replay_from..] {
                        let reply = sm.apply(0, committed.operation, &committed.body, 0);
                        prop_assert_eq!(&reply, &committed.reply, "replay gives the first reply");
                    }
                    prop_assert_eq!(sm.pending_count(), messages.len() - log_next);
                    prop_assert_eq!(sm.missing(), None);
                }
            }
            prop_assert_eq!(sm.snapshot(), twin.snapshot());
        }
        block_on_ready(sm.persist()).unwrap();
        let log = read_all(&sm);
        let model: Vec<(u64, Vec<u8>)> = messages.into_iter().enumerate().map(|(i, m)| (i as u64, m)).collect();
        prop_assert_eq!(log, model, "each offset once, in order, with its message");
    }
}

fn open_salvaging(io: &SimIo) -> (PartitionStateMachine<SimIo>, Option<shoal_shard::Salvage>) {
    block_on_ready(PartitionStateMachine::open_salvaging(io.clone(), Path::new(DIR), namespace(), config()))
        .expect("a damaged log is salvaged, not refused")
}

/// The story of issue 10's finding 3 for the partition log: a replica's
/// sealed segment rots (or its sector fails to read) while it is down. A
/// plain open refuses the log; the salvaging open keeps the intact prefix,
/// the checkpoint then names the cut offsets as missing, a peer's messages
/// fill them once the chain proves them, and the replica serves every
/// committed message again.
#[test]
fn a_rotten_sealed_segment_is_cut_and_refilled_from_a_peer() {
    for damage in ["rot", "eio"] {
        let io_peer = SimIo::new(20);
        let mut peer = open(&io_peer);
        let io = SimIo::new(21);
        let mut sm = open(&io);
        for i in 0..12 {
            send(&mut peer, &message(i));
            send(&mut sm, &message(i));
        }
        block_on_ready(peer.persist()).unwrap();
        block_on_ready(sm.persist()).unwrap();
        let checkpoint = sm.snapshot();
        assert!(sm.log().segment_count() > 2, "the damage lands in a sealed segment");
        drop(sm);
        io.crash();
        // The second segment's first record goes bad on the disk.
        let second = {
            let listed = block_on_ready(shoal_vsr::Io::list_dir(&io, Path::new(DIR))).unwrap();
            let mut paths: Vec<_> = listed.into_iter().filter(|p| p.extension().is_some_and(|e| e == "log")).collect();
            paths.sort();
            paths[1].clone()
        };
        let record = shoal_shard::partition_log::SEGMENT_HEADER_SIZE_BYTES + 20;
        match damage {
            "rot" => io.disk().corrupt_sector(&second, record).unwrap(),
            _ => io.disk().fail_sector_reads(&second, record).unwrap(),
        }
        assert!(
            block_on_ready(PartitionStateMachine::open_with_config(io.clone(), Path::new(DIR), namespace(), config()))
                .is_err(),
            "{damage}: a plain open refuses the damaged log"
        );

        let (mut sm, salvage) = open_salvaging(&io);
        let cut = salvage.expect("the damage was cut").first_lost_offset;
        assert!(cut < 12, "{damage}: cut at {cut}");
        assert_eq!(read_all(&sm), expected(0..cut), "{damage}: the intact prefix is kept exactly");
        sm.restore(&checkpoint).unwrap();
        assert_eq!(sm.missing(), Some(cut..12), "{damage}: the checkpoint names what was cut");
        let answer = block_on_ready(peer.read(cut, 64)).unwrap();
        let messages: Vec<Vec<u8>> = answer.into_iter().map(|(_, m)| m).collect();
        fill_all(&mut sm, cut, &messages);
        assert_eq!(sm.missing(), None);
        block_on_ready(sm.persist()).unwrap();
        assert_eq!(read_all(&sm), expected(0..12), "{damage}: every committed message is served again");
        assert_eq!(sm.snapshot(), peer.snapshot());
    }
}

/// A refill on a slow disk (the story of swarm seed 29189, session 35: a
/// wiped replica refilled its whole log with the simulator's 16 KiB
/// segments, and 2 s after the heal still lacked 441 offsets). A fill part
/// wrote each message with its own write, and a roll ran its four fsyncs
/// one after another. Now the records a segment takes go in one write, and
/// the new segment's fsync runs beside its directory's. Fixed latencies, so
/// the virtual time is exact: 1 ms a write, 10 ms an fsync.
#[test]
fn a_refill_writes_each_segments_records_at_once_and_a_roll_overlaps_two_of_its_fsyncs() {
    const WRITE_NS: u64 = 1_000_000;
    const SYNC_NS: u64 = 10_000_000;
    let (_a, mut b, io_b) = forty_behind(20);
    io_b.set_latency(Some(shoal_sim::io::LatencyProfile {
        write_ns: (WRITE_NS, WRITE_NS),
        sync_ns: (SYNC_NS, SYNC_NS),
        read_ns: (1_000, 1_000),
        tail_ppm: 0,
    }));
    let (segments_before, writes_before, started_ns) =
        (b.log().segment_count(), io_b.disk().writes().0, shoal_vsr::Io::now_ns(&io_b));
    // The fetched gap is whole: `fill` checks it and appends the first part.
    on_clock(&io_b, b.fill(0, &fetched(0..40))).unwrap();
    let mut parts = 1;
    while b.fill_appending() {
        on_clock(&io_b, b.fill_more()).unwrap();
        parts += 1;
    }
    let rolls = b.log().segment_count() - segments_before;
    let writes = io_b.disk().writes().0 - writes_before;
    let elapsed_ns = shoal_vsr::Io::now_ns(&io_b) - started_ns;
    assert!(rolls >= 4 && parts >= rolls, "the story crosses rolls, one a part: {rolls} rolls in {parts} parts");
    // Per roll: the sealing marker, the new segment's marker and its first
    // records; one write more for the last segment's records. One write per
    // message was 40 writes besides the markers.
    assert!(writes <= 3 * rolls as u64 + 1, "{writes} writes for {rolls} rolls of 40 messages");
    // Per roll: the sealed records' fsync, the sealing marker's, then the new
    // segment's and its directory's at once: three fsyncs' time, not four
    // (the writes: two truncations, two markers, the records).
    let roll_ns_max = 3 * SYNC_NS + 5 * WRITE_NS;
    assert!(
        elapsed_ns <= rolls as u64 * roll_ns_max + 2 * WRITE_NS,
        "{elapsed_ns} ns for {rolls} rolls, over {roll_ns_max} ns a roll"
    );
    io_b.set_latency(None);
    block_on_ready(b.persist()).unwrap();
    assert_eq!(read_all(&b), expected(0..41));
}

/// Run `future` on `io`'s clock (its storage latencies pass in virtual
/// time); no crash is armed.
fn on_clock<F: std::future::Future>(io: &SimIo, future: F) -> F::Output {
    match shoal_sim::io::block_on_io(io, future, &mut None) {
        shoal_sim::io::Driven::Done(output) => output,
        _ => unreachable!("no crash was armed"),
    }
}
