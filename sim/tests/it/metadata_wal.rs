//! Shard 0's replay of the metadata WAL on `SimIo`: committed prepares only,
//! crashes between append and fsync, corruption as a typed error, the
//! checkpoint as a starting point, the read-only variant, and the handoff of
//! the replayed catalogue to the other shards.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use shoal_shard::handoff::{
    self, HandoffError, MetadataReplay, metadata_journal_config, replay_metadata, replay_metadata_read_only,
};
use shoal_shard::lifecycle::ShutdownFlag;
use shoal_shard::{MetadataRequest, MetadataState, Namespace, ShardId};
use shoal_sim::{SimIo, block_on_ready};
use shoal_vsr::checkpoint::write_checkpoint;
use shoal_vsr::journal::{PrepareJournal, journal_path};
use shoal_vsr::replica::{Checkpoint, root_header};
use shoal_vsr::sessions::ClientSessions;
use shoal_vsr::superblock::{Superblock, SuperblockState, superblock_path};
use shoal_vsr::{Command, HEADER_SIZE_BYTES, Header, Io, Operation};

const CLUSTER: u128 = 0x5eed;
const REPLICA: u8 = 0;
const CLIENT: u128 = 7;

fn dir() -> PathBuf {
    PathBuf::from("/data")
}

fn metadata() -> u64 {
    Namespace::METADATA.raw()
}

/// The parent of op 1: the root prepare of the group, which the replica's
/// recovery (and so the replay) checks the chain from.
fn root_checksum() -> u128 {
    root_header(CLUSTER, metadata()).checksum
}

fn create_stream(stream_id: u32, name: &str) -> MetadataRequest {
    MetadataRequest::CreateStream { stream_id, name: name.into() }
}

fn create_topic(stream_id: u32, topic_id: u32, name: &str, partition_count: u32) -> MetadataRequest {
    MetadataRequest::CreateTopic { stream_id, topic_id, name: name.into(), partition_count }
}

/// One committed-or-not op of the metadata log, as the primary prepared it.
#[derive(Debug, Clone)]
enum Op {
    Register,
    Request { request: u64, body: MetadataRequest },
}

/// Build hash-chained prepares for ops `first..`, the first naming `parent`.
fn prepares(first: u64, parent: u128, ops: &[Op]) -> Vec<(Header, Vec<u8>)> {
    let mut parent = parent;
    let mut out = Vec::new();
    // Requests name the session their register opened (its op).
    let mut session = 0;
    for (index, op) in ops.iter().enumerate() {
        let mut header = Header::new(Command::Prepare, CLUSTER);
        header.namespace = metadata();
        header.op = first + index as u64;
        header.parent = parent;
        header.client = CLIENT;
        let body = match op {
            Op::Register => {
                header.operation = Operation::Register;
                session = header.op;
                Vec::new()
            }
            Op::Request { request, body } => {
                header.operation = body.operation();
                header.request = *request;
                header.context = session;
                body.encode_body()
            }
        };
        header.set_checksums(&body);
        parent = header.checksum;
        out.push((header, body));
    }
    out
}

/// The standard history: a register, then five requests, one of them
/// rejected by validation (a second stream 1).
fn history() -> Vec<Op> {
    vec![
        Op::Register,
        Op::Request { request: 1, body: create_stream(1, "orders") },
        Op::Request { request: 2, body: create_topic(1, 1, "eu", 3) },
        Op::Request { request: 3, body: create_stream(1, "dupe") },
        Op::Request { request: 4, body: create_stream(2, "billing") },
        Op::Request { request: 5, body: create_topic(2, 5, "us", 2) },
    ]
}

/// The state the first `count` requests of `history()` produce, written
/// from op 1 on (a topic records the op that created it).
fn expected(requests: usize) -> MetadataState {
    let mut state = MetadataState::new();
    for (index, op) in history().iter().enumerate().take(requests + 1) {
        if let Op::Request { body, .. } = op {
            let _ = state.apply_at(1 + index as u64, body);
        }
    }
    state
}

/// Format the metadata group on `io`, append `entries` (fsynced when `sync`)
/// and make `commit` durable in the superblock.
fn write_group(io: &SimIo, entries: &[(Header, Vec<u8>)], commit: u64, sync: bool) {
    block_on_ready(async {
        let mut journal = PrepareJournal::create(io, &dir(), metadata_journal_config(CLUSTER)).await.unwrap();
        let mut superblock = Superblock::create(io, &dir(), CLUSTER, metadata(), REPLICA).await.unwrap();
        for (header, body) in entries {
            journal.append(header, body).await.unwrap();
        }
        if sync {
            journal.sync().await.unwrap();
        }
        superblock
            .write(SuperblockState {
                view: 0,
                log_view: 0,
                commit,
                view_headers: Vec::new(),
                rejoining: false,
                nack_floor: 0,
            })
            .await
            .unwrap();
    });
}

fn replay(io: &SimIo) -> Result<MetadataReplay, HandoffError> {
    block_on_ready(replay_metadata(io, &dir(), CLUSTER, REPLICA, ShardId::METADATA))
}

#[test]
fn replay_applies_the_committed_prepares_and_skips_rejected_requests() {
    let io = SimIo::new(1);
    write_group(&io, &prepares(1, root_checksum(), &history()), 6, true);
    let replayed = replay(&io).unwrap();
    assert_eq!(replayed.state, expected(5));
    assert_eq!(replayed.state.topic(2, 5).unwrap().partition_count, 2);
    assert_eq!(replayed.state.stream(1).unwrap().name, "orders", "the rejected duplicate changed nothing");
    assert_eq!((replayed.commit, replayed.ops_replayed, replayed.checkpoint_op), (6, 6, 0));
    assert_eq!((replayed.requests_applied, replayed.requests_rejected, replayed.requests_filtered), (4, 1, 0));
    assert!(!replayed.created);
    // Replay is repeatable: the second start sees the same state.
    assert_eq!(replay(&io).unwrap(), replayed);
}

#[test]
fn ops_past_the_superblock_commit_are_not_applied() {
    let io = SimIo::new(2);
    write_group(&io, &prepares(1, root_checksum(), &history()), 3, true);
    let replayed = replay(&io).unwrap();
    assert_eq!(replayed.state, expected(2));
    assert_eq!(replayed.state.stream(2), None, "op 5 is prepared, not committed");
    assert_eq!((replayed.commit, replayed.ops_replayed, replayed.ops_uncommitted), (3, 3, 3));
}

#[test]
fn a_fresh_data_dir_gets_an_empty_metadata_group() {
    let io = SimIo::new(3);
    let first = replay(&io).unwrap();
    assert!(first.created);
    assert_eq!(first.state, MetadataState::new());
    assert_eq!(first.commit, 0);
    let disk = io.disk();
    assert!(disk.contents_durable(&journal_path(&dir(), metadata())).is_some());
    assert!(disk.contents_durable(&superblock_path(&dir(), metadata())).is_some());
    drop(disk);
    io.crash();
    let second = replay(&io).unwrap();
    assert!(!second.created, "the format was durable");
    assert_eq!(second.state, MetadataState::new());
}

#[test]
fn a_format_that_crashed_before_the_superblock_is_formatted_again() {
    let io = SimIo::new(4);
    block_on_ready(PrepareJournal::create(&io, &dir(), metadata_journal_config(CLUSTER))).unwrap();
    io.crash();
    let replayed = replay(&io).unwrap();
    assert!(replayed.created);
    // A journal with prepares but no superblock is never reformatted.
    let io = SimIo::new(5);
    block_on_ready(async {
        let mut journal = PrepareJournal::create(&io, &dir(), metadata_journal_config(CLUSTER)).await.unwrap();
        let (header, body) = &prepares(1, root_checksum(), &history())[0];
        journal.append(header, body).await.unwrap();
        journal.sync().await.unwrap();
    });
    assert!(matches!(replay(&io), Err(HandoffError::MetadataIncomplete { .. })));
}

#[test]
fn a_crash_between_append_and_fsync_replays_the_durable_commit() {
    for seed in 0..16 {
        let io = SimIo::new(100 + seed);
        let entries = prepares(1, root_checksum(), &history());
        write_group(&io, &entries[..3], 3, true);
        // The primary appends ops 4..=6 and dies before their fsync (and so
        // before it could commit them).
        block_on_ready(async {
            let (mut journal, _) =
                PrepareJournal::open(&io, &dir(), metadata_journal_config(CLUSTER), shoal_vsr::OpenMode::ReadWrite)
                    .await
                    .unwrap();
            for (header, body) in &entries[3..] {
                journal.append(header, body).await.unwrap();
            }
        });
        io.crash();
        let replayed = replay(&io).unwrap_or_else(|error| panic!("seed {seed}: {error}"));
        assert_eq!(replayed.state, expected(2), "seed {seed}");
        assert_eq!(replayed.commit, 3);
        // The next start agrees: nothing about the crash is left to replay.
        assert_eq!(replay(&io).unwrap().state, expected(2), "seed {seed}");
    }
}

#[test]
fn a_corrupt_slot_in_the_committed_range_asks_for_repair() {
    let io = SimIo::new(6);
    write_group(&io, &prepares(1, root_checksum(), &history()), 5, true);
    let config = metadata_journal_config(CLUSTER);
    let path = journal_path(&dir(), metadata());
    // Flip a byte of op 2's body: its body checksum no longer matches.
    io.disk().poke(&path, config.slot_offset(2) + HEADER_SIZE_BYTES as u64 + 1, &[0xFF]).unwrap();
    match replay(&io) {
        Err(HandoffError::MetadataRepairNeeded { op, commit, .. }) => assert_eq!((op, commit), (2, 5)),
        other => panic!("expected MetadataRepairNeeded, got {other:?}"),
    }
    // A zeroed (lost) op in the middle is a gap: also a repair.
    let io = SimIo::new(7);
    write_group(&io, &prepares(1, root_checksum(), &history()), 5, true);
    io.disk().poke(&path, config.slot_offset(4), &[0; HEADER_SIZE_BYTES]).unwrap();
    assert!(matches!(replay(&io), Err(HandoffError::MetadataRepairNeeded { op: 4, .. })));
}

#[test]
fn a_torn_tail_past_the_commit_is_not_an_error() {
    let io = SimIo::new(8);
    write_group(&io, &prepares(1, root_checksum(), &history()), 5, true);
    let config = metadata_journal_config(CLUSTER);
    let path = journal_path(&dir(), metadata());
    // A torn write of op 6: its header sector kept, its body wrong (a
    // damaged header sector is damage, never a tear) and, since a ring copy
    // is written only after its prepare is durable, the ring never named it
    // (with the copy in place it would be faulty, not torn).
    io.disk().poke(&path, config.slot_offset(6) + HEADER_SIZE_BYTES as u64 + 1, &[0xFF]).unwrap();
    io.disk().poke(&path, config.header_copy_offset(6), &[0; HEADER_SIZE_BYTES]).unwrap();
    let replayed = replay(&io).unwrap();
    assert_eq!(replayed.state, expected(4));
    assert_eq!(replayed.torn_tail_ops, 1);
}

#[test]
fn a_corrupt_superblock_is_a_typed_error() {
    let io = SimIo::new(9);
    write_group(&io, &prepares(1, root_checksum(), &history()), 5, true);
    let path = superblock_path(&dir(), metadata());
    let size = io.disk().contents(&path).unwrap().len();
    io.disk().poke(&path, 0, &vec![0x5A; size]).unwrap();
    let error = replay(&io).unwrap_err();
    assert!(matches!(error, HandoffError::MetadataSuperblock { .. }), "{error:?}");
    assert!(error.to_string().contains("repair its metadata group from peers"), "{error}");
}

#[test]
fn only_shard_zero_replays_for_writing_and_read_only_replay_mutates_nothing() {
    let io = SimIo::new(10);
    for shard in [ShardId(1), ShardId(5)] {
        assert!(matches!(
            block_on_ready(replay_metadata(&io, &dir(), CLUSTER, REPLICA, shard)),
            Err(HandoffError::NotMetadataShard { .. })
        ));
    }
    assert!(io.disk().contents(&journal_path(&dir(), metadata())).is_none(), "a refused shard created nothing");
    // Read-only on a missing group: an error, and nothing is formatted.
    assert!(block_on_ready(replay_metadata_read_only(&io, &dir(), CLUSTER, REPLICA)).is_err());
    assert!(io.disk().contents(&superblock_path(&dir(), metadata())).is_none());

    write_group(&io, &prepares(1, root_checksum(), &history()), 5, true);
    let config = metadata_journal_config(CLUSTER);
    let path = journal_path(&dir(), metadata());
    // A torn write of op 6: its header sector kept, its body wrong (a
    // damaged header sector is damage, never a tear) and, since a ring copy
    // is written only after its prepare is durable, the ring never named it
    // (with the copy in place it would be faulty, not torn).
    io.disk().poke(&path, config.slot_offset(6) + HEADER_SIZE_BYTES as u64 + 1, &[0xFF]).unwrap();
    io.disk().poke(&path, config.header_copy_offset(6), &[0; HEADER_SIZE_BYTES]).unwrap();
    let before = io.disk().contents(&path).unwrap();
    let read_only = block_on_ready(replay_metadata_read_only(&io, &dir(), CLUSTER, REPLICA)).unwrap();
    assert_eq!(read_only.state, expected(4));
    assert_eq!(io.disk().contents(&path).unwrap(), before, "read-only replay left the torn tail on disk");
    let writable = replay(&io).unwrap();
    assert_eq!(writable.state, read_only.state);
    assert_ne!(io.disk().contents(&path).unwrap(), before, "shard 0 clears the torn tail");
}

#[test]
fn replay_starts_from_the_checkpoint_and_filters_duplicates_by_session() {
    let io = SimIo::new(11);
    let mut ops = history();
    // A retry of request 5 committed twice (e.g. across a failover): the
    // session table filters it, as the replica did.
    ops.push(Op::Request { request: 5, body: create_topic(2, 6, "retry", 1) });
    let entries = prepares(1, root_checksum(), &ops);
    write_group(&io, &entries, 7, true);
    // Checkpoint at op 3: the state and sessions after register + 2 requests.
    let mut reply = Header::new(Command::Reply, CLUSTER);
    reply.set_checksums(&[]);
    let mut sessions = ClientSessions::default();
    sessions.register(CLIENT, 1, reply, Vec::new());
    sessions.record(CLIENT, 1, 2, reply, Vec::new());
    sessions.record(CLIENT, 2, 3, reply, Vec::new());
    let state = expected(2).encode();
    let mut snapshot = (state.len() as u32).to_le_bytes().to_vec();
    snapshot.extend_from_slice(&state);
    sessions.encode(&mut snapshot);
    let checkpoint = Checkpoint { anchor: entries[2].0, snapshot };
    block_on_ready(async {
        write_checkpoint(&io, &dir(), metadata(), &checkpoint).await.unwrap();
        let (mut journal, _) =
            PrepareJournal::open(&io, &dir(), metadata_journal_config(CLUSTER), shoal_vsr::OpenMode::ReadWrite)
                .await
                .unwrap();
        journal.drain(3).await.unwrap();
    });
    let replayed = replay(&io).unwrap();
    assert_eq!(replayed.checkpoint_op, 3);
    assert_eq!(replayed.ops_replayed, 4);
    assert_eq!(replayed.state, expected(5));
    assert_eq!(replayed.state.topic(2, 6), None, "the duplicate request was filtered");
    assert_eq!((replayed.requests_applied, replayed.requests_rejected, replayed.requests_filtered), (2, 1, 1));

    // A journal drained past the checkpoint on disk has a gap nobody covers.
    let io = SimIo::new(12);
    write_group(&io, &entries, 7, true);
    block_on_ready(async {
        let (mut journal, _) =
            PrepareJournal::open(&io, &dir(), metadata_journal_config(CLUSTER), shoal_vsr::OpenMode::ReadWrite)
                .await
                .unwrap();
        journal.drain(3).await.unwrap();
    });
    assert!(matches!(replay(&io), Err(HandoffError::MetadataRepairNeeded { op: 1, .. })));
}

#[test]
fn shard_zero_replays_then_every_peer_receives_the_same_catalogue() {
    let io = SimIo::new(13);
    write_group(&io, &prepares(1, root_checksum(), &history()), 6, true);
    let shutdown = ShutdownFlag::new();
    let received = Rc::new(RefCell::new(Vec::new()));
    let mut peers = Vec::new();
    for shard in 1..4u16 {
        let (tx, rx) = handoff::oneshot();
        peers.push((ShardId(shard), tx));
        let (io2, flag, received) = (io.clone(), shutdown.clone(), received.clone());
        io.spawn(async move {
            let state = handoff::await_snapshot(&io2, &rx, &flag).await.unwrap();
            received.borrow_mut().push((shard, state));
        });
    }
    let replayed = Rc::new(RefCell::new(None));
    let (io2, flag, replayed2) = (io.clone(), shutdown.clone(), replayed.clone());
    io.spawn(async move {
        let replay = replay_metadata(&io2, Path::new("/data"), CLUSTER, REPLICA, ShardId::METADATA).await.unwrap();
        handoff::broadcast_snapshot(&io2, &replay.state.encode(), &peers, &flag).await.unwrap();
        *replayed2.borrow_mut() = Some(replay.state);
    });
    assert!(io.run_until_idle(10_000));
    let state = replayed.borrow().clone().expect("shard 0 finished the handoff");
    assert_eq!(state, expected(5));
    let mut received = received.borrow().clone();
    received.sort_by_key(|(shard, _)| *shard);
    assert_eq!(received, (1..4).map(|shard| (shard, state.clone())).collect::<Vec<_>>());
}

#[test]
fn a_peer_that_stopped_on_shutdown_is_a_shutdown_not_a_failed_peer() {
    // The race behind a SIGTERM during start-up: the peer saw the flag and
    // dropped its receiver before shard 0 finished replaying.
    let io = SimIo::new(14);
    let shutdown = ShutdownFlag::new();
    let (tx, rx) = handoff::oneshot::<Vec<u8>>();
    drop(rx);
    let peers = vec![(ShardId(1), tx)];
    let bundle = MetadataState::new().encode();
    assert!(matches!(
        block_on_ready(handoff::broadcast_snapshot(&io, &bundle, &peers, &shutdown)),
        Err(HandoffError::PeerGone { shard: ShardId(1) })
    ));
    let (tx, rx) = handoff::oneshot::<Vec<u8>>();
    drop(rx);
    let peers = vec![(ShardId(1), tx)];
    shutdown.request();
    assert!(matches!(
        block_on_ready(handoff::broadcast_snapshot(&io, &bundle, &peers, &shutdown)),
        Err(HandoffError::ShutDown)
    ));
}
