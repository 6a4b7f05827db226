//! Shard 0's metadata replay against the replica it replays: a real
//! metadata replica commits a history on `SimIo` (sessions evicted, requests
//! rejected and filtered, checkpoints taken), then the same disk is recovered
//! twice — by `replay_metadata_group` and by a replica restart (the
//! simulator's node storage + `Replica::open`) — and both must give the same
//! state, sessions and commit. A crash in the middle of a checkpoint drain
//! (after a process crash or a power loss) must leave both the same, and the
//! writable replay must finish the drain and settle a superblock whose fsync
//! failed as the restart does, while the read-only replay writes nothing.
//!
//! Every disk is built twice from the same seed (the build is deterministic),
//! so each recovery path starts from identical bytes.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use shoal_shard::handoff::{
    METADATA_JOURNAL_SLOT_COUNT, METADATA_MESSAGE_SIZE_MAX_BYTES, MetadataGroup, MetadataReplay,
    metadata_journal_config, replay_metadata, replay_metadata_group, replay_metadata_group_read_only,
};
use shoal_shard::node::{GroupStorage, StorageConfig};
use shoal_shard::{HandoffError, MetadataRequest, MetadataState, Namespace, ShardId};
use shoal_sim::node::DATA_DIR;
use shoal_sim::{SimIo, block_on_ready};
use shoal_vsr::checkpoint::{checkpoint_path, read_checkpoint};
use shoal_vsr::journal::{PrepareJournal, journal_path};
use shoal_vsr::replica::{Committed, root_header};
use shoal_vsr::superblock::{Superblock, SuperblockState, superblock_path};
use shoal_vsr::{Action, Command, Header, Message, OpenMode, Operation, Replica, ReplicaConfig, Source};

const CLUSTER: u128 = 0x6d65_7461;
/// Small, so a register of a third client evicts the least recently used.
const SESSIONS_MAX: usize = 2;
/// The live replica checkpoints often, so the history crosses several.
const LIVE_CHECKPOINT_INTERVAL_OPS: u64 = 16;
/// Storage calls a crash may land after, counted from the start of the
/// first checkpoint: past the checkpoint write and the whole drain.
const CRASH_STEPS_MAX: u64 = 40;
const CLIENT_A: u128 = 11;
const CLIENT_B: u128 = 12;
const CLIENT_C: u128 = 13;

fn dir() -> PathBuf {
    PathBuf::from(DATA_DIR)
}

fn group(replica_count: u8) -> MetadataGroup {
    MetadataGroup { client_sessions_max: SESSIONS_MAX, ..MetadataGroup::new(CLUSTER, 0, replica_count) }
}

/// The cluster's replica, spelled out here rather than taken from the
/// replay's `MetadataGroup::replica_config`: a replay that recovered with
/// other settings than the replica's must fail these tests.
fn replica_config(replica_count: u8) -> ReplicaConfig {
    ReplicaConfig {
        cluster: CLUSTER,
        namespace: Namespace::METADATA.raw(),
        replica: 0,
        replica_count,
        journal_slot_count: METADATA_JOURNAL_SLOT_COUNT,
        checkpoint_interval_ops: LIVE_CHECKPOINT_INTERVAL_OPS,
        seed: 0,
        client_sessions_max: SESSIONS_MAX,
        message_size_max_bytes: METADATA_MESSAGE_SIZE_MAX_BYTES,
        pipeline_prepares_max: shoal_vsr::replica::PIPELINE_PREPARES_MAX,
        checkpoint_chunks_per_answer_max: shoal_vsr::state_transfer::CHECKPOINT_CHUNKS_PER_ANSWER_MAX,
    }
}

fn storage_config() -> StorageConfig {
    StorageConfig {
        cluster: CLUSTER,
        namespace: Namespace::METADATA.raw(),
        replica: 0,
        slot_count: METADATA_JOURNAL_SLOT_COUNT,
        message_size_max_bytes: METADATA_MESSAGE_SIZE_MAX_BYTES,
    }
}

fn stream(stream_id: u32, name: &str) -> MetadataRequest {
    MetadataRequest::CreateStream { stream_id, name: name.into() }
}

/// A single metadata replica (its own quorum) on `SimIo`, driven as the
/// node drives it: storage actions in order, each durable before the next,
/// the primary's own copy counted once durable, fail-stop on an error.
struct Live {
    io: SimIo,
    storage: GroupStorage<SimIo>,
    replica: Replica<MetadataState>,
    committed: Vec<Committed>,
    /// Crash after this many storage calls, counted from the first checkpoint.
    crash_at_checkpoint_after_steps: Option<u64>,
    /// A storage action failed: the replica stopped, nothing more runs.
    stopped: bool,
}

impl Live {
    fn format(seed: u64, crash_at_checkpoint_after_steps: Option<u64>) -> Live {
        Live::format_with_pipeline(seed, crash_at_checkpoint_after_steps, shoal_vsr::replica::PIPELINE_PREPARES_MAX)
    }

    /// A live replica whose pipeline holds `pipeline_prepares_max` prepares:
    /// requests beyond it queue and are packed.
    fn format_with_pipeline(
        seed: u64,
        crash_at_checkpoint_after_steps: Option<u64>,
        pipeline_prepares_max: usize,
    ) -> Live {
        let io = SimIo::new(seed);
        let storage = block_on_ready(GroupStorage::format(&io, Path::new(DATA_DIR), storage_config()))
            .expect("a fresh disk formats");
        let config = ReplicaConfig { pipeline_prepares_max, ..replica_config(1) };
        let replica = Replica::new(config, MetadataState::new());
        Live { io, storage, replica, committed: Vec::new(), crash_at_checkpoint_after_steps, stopped: false }
    }

    /// Hand a request to the primary; its prepare waits for `run`.
    fn submit(&mut self, client: u128, session: u64, request: u64, operation: Operation, body: Vec<u8>) {
        if self.stopped {
            return;
        }
        let mut header = Header::new(Command::Request, CLUSTER);
        header.namespace = Namespace::METADATA.raw();
        header.client = client;
        header.context = session;
        header.request = request;
        header.operation = operation;
        self.replica.on_message(Source::Client(client), Message::new(header, Rc::from(body)));
    }

    fn register(&mut self, client: u128) {
        self.submit(client, 0, 0, Operation::Register, Vec::new());
    }

    fn request(&mut self, client: u128, request: u64, body: MetadataRequest) {
        let session = self.session_of(client);
        self.submit(client, session, request, body.operation(), body.encode_body());
    }

    /// The op that opened `client`'s latest session, as its register reply said.
    fn session_of(&self, client: u128) -> u64 {
        self.committed
            .iter()
            .rev()
            .find(|c| c.client == client && c.operation == Operation::Register)
            .map_or(0, |c| c.op)
    }

    /// Run the replica's actions to quiescence, or until one fails.
    fn run(&mut self) {
        while !self.stopped {
            let actions = self.replica.take_actions();
            if actions.is_empty() {
                break;
            }
            for action in &actions {
                if !self.execute(action) {
                    self.stopped = true;
                    break;
                }
            }
            self.committed.extend(self.replica.take_committed());
        }
    }

    fn execute(&mut self, action: &Action) -> bool {
        // One replica: nothing to send, and replies go nowhere here.
        if matches!(action, Action::Send { .. } | Action::Reply { .. }) {
            return true;
        }
        if matches!(action, Action::Checkpoint { .. })
            && let Some(steps) = self.crash_at_checkpoint_after_steps.take()
        {
            self.io.disk().crash_after_steps(steps);
        }
        if block_on_ready(self.storage.execute(action)).is_err() {
            return false;
        }
        if let Action::WritePrepare { message } = action {
            self.replica.on_prepare_durable(message.header.op, message.header.checksum);
        }
        true
    }
}

/// The story: three clients share two sessions. C's register evicts B while
/// B's next request is already prepared behind it, so that request commits
/// and is filtered (no session); one request is rejected by the state
/// machine; 40 ops cross two checkpoints of the live replica.
fn story(live: &mut Live) {
    live.register(CLIENT_A);
    live.run();
    live.register(CLIENT_B);
    live.run();
    live.request(CLIENT_B, 1, stream(1, "orders"));
    live.run();
    live.request(
        CLIENT_A,
        1,
        MetadataRequest::CreateTopic { stream_id: 1, topic_id: 1, name: "eu".into(), partition_count: 3 },
    );
    live.run();
    live.request(CLIENT_A, 2, stream(1, "dupe")); // rejected: stream 1 exists
    live.run();
    // B's last op (3) is older than A's (5): C's register evicts B. Both
    // are in the pipeline before either commits.
    live.register(CLIENT_C);
    live.request(CLIENT_B, 2, stream(2, "billing"));
    live.run();
    for request in 1..=33 {
        live.request(CLIENT_C, request, stream(100 + request as u32, &format!("s{request}")));
        live.run();
    }
}

fn built(seed: u64, crash_at_checkpoint_after_steps: Option<u64>) -> Live {
    let mut live = Live::format(seed, crash_at_checkpoint_after_steps);
    story(&mut live);
    live
}

/// What a restart recovers: the simulator node's open (settle, finish the
/// drain, scan) and `Replica::open` with the replay's own configuration.
struct Restarted {
    state: MetadataState,
    sessions: shoal_vsr::sessions::ClientSessions,
    commit: u64,
    /// The checkpoint on disk the restart started from.
    checkpoint_op: u64,
}

fn restart(io: &SimIo, replica_count: u8) -> Result<Restarted, String> {
    let (_storage, recovered) = block_on_ready(GroupStorage::open(io, Path::new(DATA_DIR), storage_config()))
        .map_err(|error| error.to_string())?;
    let checkpoint_op = recovered.checkpoint.as_ref().map_or(0, |checkpoint| checkpoint.anchor.op);
    let replica = Replica::open(replica_config(replica_count), MetadataState::new(), recovered)
        .map_err(|error| error.to_string())?;
    Ok(Restarted {
        state: replica.state_machine().clone(),
        sessions: replica.sessions().clone(),
        commit: replica.commit_min(),
        checkpoint_op,
    })
}

fn replay(io: &SimIo, replica_count: u8) -> Result<MetadataReplay, HandoffError> {
    block_on_ready(replay_metadata_group(io, &dir(), group(replica_count), ShardId::METADATA))
}

fn assert_same(replayed: &MetadataReplay, restarted: &Restarted, context: &str) {
    assert_eq!(replayed.state, restarted.state, "{context}: metadata state");
    assert_eq!(replayed.sessions, restarted.sessions, "{context}: client sessions");
    assert_eq!(replayed.commit, restarted.commit, "{context}: commit");
    assert_eq!(replayed.checkpoint_op, restarted.checkpoint_op, "{context}: checkpoint");
}

fn group_files() -> Vec<PathBuf> {
    let namespace = Namespace::METADATA.raw();
    vec![journal_path(&dir(), namespace), superblock_path(&dir(), namespace), checkpoint_path(&dir(), namespace)]
}

fn durable_files(io: &SimIo) -> Vec<Option<Vec<u8>>> {
    group_files().iter().map(|path| io.disk().contents_durable(path)).collect()
}

fn visible_files(io: &SimIo) -> Vec<Option<Vec<u8>>> {
    group_files().iter().map(|path| io.disk().contents(path)).collect()
}

fn journal_snapshot_op(io: &SimIo) -> u64 {
    let config = metadata_journal_config(CLUSTER);
    let (journal, _) = block_on_ready(PrepareJournal::open(io, &dir(), config, OpenMode::ReadOnly)).unwrap();
    journal.snapshot_op()
}

fn checkpoint_op_on_disk(io: &SimIo) -> u64 {
    let checkpoint = block_on_ready(read_checkpoint(io, &dir(), Namespace::METADATA.raw())).unwrap();
    checkpoint.map_or(0, |checkpoint| checkpoint.anchor.op)
}

#[test]
fn replay_and_restart_recover_the_state_the_replica_committed() {
    let live = built(1, None);
    assert!(!live.stopped);
    let evicted: Vec<u128> = live.committed.iter().filter_map(|c| c.evicted).collect();
    assert_eq!(evicted, [CLIENT_B], "C's register evicted B");
    let filtered = live.committed.iter().find(|c| c.client == CLIENT_B && c.request == 2).unwrap();
    assert!(!filtered.applied, "B's request behind the eviction committed without a session");
    assert_eq!(live.replica.commit_min(), 40);
    assert_eq!(live.replica.checkpoint_op(), 32);
    assert!(live.replica.state_machine().stream(2).is_none());

    // A single replica commits its whole durable journal at restart: both
    // paths end where the live replica was, sessions and replies included.
    let replayed = replay(&built(1, None).io, 1).unwrap();
    let restarted = restart(&built(1, None).io, 1).unwrap();
    assert_same(&replayed, &restarted, "one replica");
    assert_eq!(replayed.state, *live.replica.state_machine());
    assert_eq!(replayed.sessions, *live.replica.sessions());
    assert_eq!((replayed.checkpoint_op, replayed.commit, replayed.ops_replayed), (32, 40, 8));
    assert_eq!((replayed.requests_applied, replayed.requests_rejected, replayed.requests_filtered), (8, 0, 0));

    // A member of a larger cluster trusts only the checkpoint and the
    // superblock: both paths stop at the checkpoint, and agree.
    let replayed = replay(&built(1, None).io, 3).unwrap();
    let restarted = restart(&built(1, None).io, 3).unwrap();
    assert_same(&replayed, &restarted, "three replicas");
    assert_eq!((replayed.commit, replayed.ops_replayed, replayed.ops_uncommitted), (32, 0, 8));
}

#[test]
fn replay_counts_the_evicted_clients_request_as_filtered_as_the_replica_did() {
    // Stop the live replica before its first checkpoint: everything is
    // replayed from the journal, through the eviction.
    let mut live = Live::format(2, None);
    live.register(CLIENT_A);
    live.run();
    live.register(CLIENT_B);
    live.run();
    live.request(CLIENT_B, 1, stream(1, "orders"));
    live.run();
    live.request(CLIENT_A, 1, stream(1, "dupe"));
    live.run();
    live.register(CLIENT_C);
    live.request(CLIENT_B, 2, stream(2, "billing"));
    live.run();
    assert_eq!(live.replica.checkpoint_op(), 0);
    let replayed = replay(&live.io, 1).unwrap();
    assert_eq!((replayed.commit, replayed.ops_replayed), (6, 6));
    assert_eq!((replayed.requests_applied, replayed.requests_rejected, replayed.requests_filtered), (1, 1, 1));
    assert_eq!(replayed.state, *live.replica.state_machine());
    assert_eq!(replayed.sessions, *live.replica.sessions());
    assert!(replayed.sessions.get(CLIENT_B).is_none(), "B was evicted");
    assert!(replayed.state.stream(2).is_none(), "B's request after its eviction changed nothing");
}

/// The replay (the replica's own recovery) applies a packed op's requests
/// one by one, as the live replica did: same state, same sessions (a
/// register packed after another client's request evicts as it did live),
/// each request counted.
#[test]
fn replay_applies_the_requests_of_a_packed_prepare_as_the_live_replica_did() {
    let mut live = Live::format_with_pipeline(3, None, 1);
    for client in [CLIENT_A, CLIENT_B] {
        live.register(client);
        live.run();
    }
    // A's request fills the pipeline of one; B's request and C's register
    // queue behind it and leave together, in one packed prepare.
    live.request(CLIENT_A, 1, stream(1, "a"));
    live.request(CLIENT_B, 1, stream(2, "b"));
    live.register(CLIENT_C);
    live.run();
    let ops: Vec<(u64, u32, u128)> = live.committed.iter().map(|c| (c.op, c.index, c.client)).collect();
    assert_eq!(ops, [(1, 0, CLIENT_A), (2, 0, CLIENT_B), (3, 0, CLIENT_A), (4, 0, CLIENT_B), (4, 1, CLIENT_C)]);
    assert_eq!(live.committed[4].evicted, Some(CLIENT_A), "C's register evicted A, the least recent");
    let replayed = replay(&live.io, 1).unwrap();
    assert_eq!((replayed.commit, replayed.ops_replayed), (4, 4));
    assert_eq!((replayed.requests_applied, replayed.requests_rejected, replayed.requests_filtered), (2, 0, 0));
    assert_eq!(replayed.state, *live.replica.state_machine());
    assert_eq!(replayed.sessions, *live.replica.sessions());
    assert!(replayed.sessions.get(CLIENT_A).is_none() && replayed.sessions.get(CLIENT_C).is_some());
    assert!((1..=2).all(|stream_id| replayed.state.stream(stream_id).is_some()));
}

/// How the process died: a process crash keeps the page cache (unsynced
/// writes read back until a power loss), a power loss drops or tears them.
#[derive(Debug, Clone, Copy)]
enum Crash {
    Process,
    PowerLoss,
}

#[test]
fn a_crash_mid_drain_recovers_the_same_state_through_replay_and_restart() {
    let mut interrupted_drains = 0;
    for crash in [Crash::Process, Crash::PowerLoss] {
        for steps in 0..CRASH_STEPS_MAX {
            let seed = 100 + steps;
            let context = format!("{crash:?} after {steps} storage calls of the first checkpoint (seed {seed})");
            let crashed = || {
                let live = built(seed, Some(steps));
                assert!(live.stopped, "{context}: the crash stopped the replica");
                match crash {
                    Crash::Process => live.io.crash_process(),
                    Crash::PowerLoss => live.io.power_loss(),
                }
                live.io
            };
            // One twin disk per look: opening a journal fsyncs it, so even a
            // look changes what the next open of the same disk would find.
            let probe = crashed();
            let checkpoint_op = checkpoint_op_on_disk(&probe);
            let drain_interrupted = checkpoint_op > journal_snapshot_op(&probe);
            interrupted_drains += u32::from(drain_interrupted);

            // Read-only: the same state, and not one byte written.
            let for_read_only = crashed();
            let visible = visible_files(&for_read_only);
            let read_only = block_on_ready(replay_metadata_group_read_only(&for_read_only, &dir(), group(1)));
            assert_eq!(visible_files(&for_read_only), visible, "{context}: read-only replay wrote");

            let (for_replay, for_restart) = (crashed(), crashed());
            let replayed = replay(&for_replay, 1).unwrap_or_else(|error| panic!("{context}: replay failed: {error}"));
            let restarted =
                restart(&for_restart, 1).unwrap_or_else(|error| panic!("{context}: restart failed: {error}"));
            assert_same(&replayed, &restarted, &context);
            assert_eq!(read_only.unwrap().state, replayed.state, "{context}");
            // The replay left the disk as the restart did: the drain finished
            // at the checkpoint, the small files settled, nothing else written.
            assert_eq!(replayed.drain_settled, drain_interrupted, "{context}");
            assert_eq!(journal_snapshot_op(&for_replay), checkpoint_op, "{context}: drain finished");
            assert_eq!(durable_files(&for_replay), durable_files(&for_restart), "{context}: durable bytes differ");
            assert_eq!(visible_files(&for_replay), visible_files(&for_restart), "{context}: visible bytes differ");
        }
    }
    assert!(interrupted_drains > 0, "no crash landed between a durable checkpoint and the end of its drain");
}

#[test]
fn a_read_only_replay_of_a_shard_that_is_not_zero_never_settles() {
    let io = built(3, Some(8)).io;
    io.crash();
    let before = (visible_files(&io), durable_files(&io));
    let replayed = block_on_ready(replay_metadata_group_read_only(&io, Path::new(DATA_DIR), group(1))).unwrap();
    assert!(!replayed.drain_settled);
    assert_eq!((visible_files(&io), durable_files(&io)), before);
    assert!(matches!(
        block_on_ready(replay_metadata_group(&io, &dir(), group(1), ShardId(1))),
        Err(HandoffError::NotMetadataShard { .. })
    ));
}

/// Prepares of the metadata group for ops `1..=count`, each creating a
/// stream, chained from the group's root unless `break_chain_at` names an op
/// whose parent is made wrong.
fn chained_prepares(count: u64, break_chain_at: Option<u64>) -> Vec<(Header, Vec<u8>)> {
    let mut parent = root_header(CLUSTER, Namespace::METADATA.raw()).checksum;
    let mut register = Header::new(Command::Prepare, CLUSTER);
    register.namespace = Namespace::METADATA.raw();
    register.operation = Operation::Register;
    register.client = CLIENT_A;
    let mut out = Vec::new();
    for op in 1..=count {
        let mut header = register;
        header.op = op;
        header.parent = if break_chain_at == Some(op) { parent ^ 1 } else { parent };
        let body = if op == 1 {
            Vec::new()
        } else {
            let request = stream(op as u32, &format!("s{op}"));
            header.operation = request.operation();
            header.request = op - 1;
            header.context = 1;
            request.encode_body()
        };
        header.set_checksums(&body);
        parent = header.checksum;
        out.push((header, body));
    }
    out
}

/// A metadata group whose journal holds `prepares` and whose superblock
/// says `commit` with `view_headers`, written straight through the storage
/// calls (the replica would never write these disks).
fn plant_group(io: &SimIo, prepares: &[(Header, Vec<u8>)], commit: u64, view_headers: Vec<Header>) {
    // Prepares of view 0; a view change (view headers) installed view 1.
    let view = u64::from(!view_headers.is_empty());
    block_on_ready(async {
        let config = metadata_journal_config(CLUSTER);
        let mut journal = PrepareJournal::create(io, &dir(), config).await.unwrap();
        for (header, body) in prepares {
            journal.write_prepare(header, body).await.unwrap();
        }
        journal.sync().await.unwrap();
        let mut superblock = Superblock::create(io, &dir(), CLUSTER, Namespace::METADATA.raw(), 0).await.unwrap();
        let state = SuperblockState { view, log_view: view, commit, view_headers, rejoining: false, nack_floor: 0 };
        superblock.write(state).await.unwrap();
    });
}

#[test]
fn a_committed_op_that_does_not_chain_is_a_repair_not_a_panic() {
    // The replica asserts the chain of what it applies; the replay must
    // refuse such a disk with the operator's error before the replica sees it.
    let io = SimIo::new(4);
    plant_group(&io, &chained_prepares(4, Some(3)), 4, Vec::new());
    match replay(&io, 3) {
        Err(HandoffError::MetadataRepairNeeded { op: 3, commit: 4, reason }) => {
            assert!(reason.contains("does not chain"), "{reason}");
        }
        other => panic!("expected a repair of op 3, got {other:?}"),
    }
}

#[test]
fn a_committed_op_the_view_headers_replaced_is_a_repair_of_a_stale_prepare() {
    // The view change installed another op 2 than the journal holds: the
    // replica keeps the view header without a body and stops applying there.
    let io = SimIo::new(5);
    let prepares = chained_prepares(3, None);
    let mut replacement = prepares[1].0;
    replacement.timestamp += 1;
    replacement.set_checksums(&prepares[1].1);
    plant_group(&io, &prepares, 3, vec![replacement]);
    // A caller that does not state the cluster has no peer to count on.
    let unstated = block_on_ready(replay_metadata(&io, &dir(), CLUSTER, 0, ShardId::METADATA));
    match unstated {
        Err(HandoffError::MetadataRepairNeeded { op: 2, commit: 3, reason }) => {
            assert!(reason.contains("stale prepare"), "{reason}");
        }
        other => panic!("expected a repair of op 2, got {other:?}"),
    }
    // A stated cluster of three starts, the catalogue at the committed
    // prefix below op 2, and the metadata group repairs it from peers
    // (swarm seed 295: shard 0 refused every restart).
    let started = replay(&io, 3).expect("a replica with peers starts and repairs");
    assert_eq!((started.commit, started.repair_from), (1, Some(2)));
    // Uncommitted, the same log is no error: the committed prefix is whole.
    let io = SimIo::new(6);
    plant_group(&io, &prepares, 1, vec![replacement]);
    let replayed = replay(&io, 3).unwrap();
    assert_eq!((replayed.commit, replayed.requests_applied), (1, 0));
}

#[test]
fn a_superblock_whose_fsync_failed_is_settled_by_the_replay_as_by_a_restart() {
    // The superblock write's fsync fails (Linux then marks the pages clean
    // while reads still see them) and the process dies keeping its page
    // cache: a restart rewrites and syncs what it reads before trusting it,
    // and the writable replay must leave the same durable bytes.
    let crashed = || {
        let live = built(7, None);
        block_on_ready(async {
            let namespace = Namespace::METADATA.raw();
            let mut superblock =
                Superblock::open(&live.io, &dir(), CLUSTER, namespace, 0, OpenMode::ReadWrite).await.unwrap();
            let mut state = superblock.state().clone();
            state.view += 1;
            live.io.disk().fail_next_sync();
            superblock.write(state).await.unwrap_err();
        });
        live.io.crash_process();
        live.io
    };
    let (for_replay, for_restart) = (crashed(), crashed());
    let replayed = replay(&for_replay, 1).unwrap();
    let restarted = restart(&for_restart, 1).unwrap();
    assert_same(&replayed, &restarted, "fsync failed");
    assert_eq!(durable_files(&for_replay), durable_files(&for_restart), "durable bytes differ");
}

/// Both copies of the metadata group's checkpoint rot. A lone replica
/// cannot get them back: the replay refuses, as before, and formats
/// nothing. A member of a three-replica cluster is not stopped by it (the
/// server replays before it opens any group): the group is formatted again
/// to rejoin, keeping its superblock's promises, and shard 0 hands on the
/// empty catalogue of a rejoining group; a restart then sees the same.
#[test]
fn a_metadata_checkpoint_that_lost_both_copies_rejoins_in_a_cluster_and_stops_a_lone_replica() {
    let damaged = || {
        let live = built(1, None);
        let view = live.replica.view();
        let path = checkpoint_path(&dir(), Namespace::METADATA.raw());
        let size_bytes = live.io.disk().contents(&path).unwrap().len() as u64;
        live.io.disk().corrupt_sector(&path, 100).unwrap();
        live.io.disk().corrupt_sector(&path, size_bytes / 2 + 100).unwrap();
        (live, view)
    };
    let (lone, _) = damaged();
    let superblock = superblock_path(&dir(), Namespace::METADATA.raw());
    let before = lone.io.disk().contents(&superblock);
    assert!(matches!(replay(&lone.io, 1), Err(HandoffError::MetadataCheckpoint { .. })));
    assert!(lone.io.disk().contents(&superblock) == before, "nothing was formatted");

    let (member, view) = damaged();
    let replayed = replay(&member.io, 3).expect("a cluster member starts");
    assert_eq!(replayed.state, MetadataState::new(), "the catalogue comes back from peers");
    assert_eq!((replayed.checkpoint_op, replayed.commit), (0, 0));
    let (_storage, recovered) =
        block_on_ready(GroupStorage::open(&member.io, Path::new(DATA_DIR), storage_config())).expect("opens");
    assert!(recovered.durable.rejoining && recovered.checkpoint.is_none() && recovered.entries.is_empty());
    assert_eq!(recovered.durable.view, view, "the view it voted for is kept");
    let restarted = restart(&member.io, 3).unwrap();
    assert_same(&replayed, &restarted, "rejoining");
}

/// The replay reads the metadata journal as every group's open does
/// (`GroupStorage::open`: `PrepareJournal::open_above`, bounded by the
/// superblock): a slot damaged far above the head, beyond a gap, is a torn
/// tail there, not a faulty op. Before (session 16) the replay used the
/// journal's plain `open`, so on the same disk it reported a faulty journal
/// (the replica restarting `Recovering`) where a restart of the group
/// counted nothing lost.
#[test]
fn a_damaged_slot_beyond_a_gap_is_torn_for_the_replay_as_for_a_restart() {
    let damaged = || {
        let io = SimIo::new(5);
        plant_group(&io, &chained_prepares(4, None), 4, Vec::new());
        let path = journal_path(&dir(), Namespace::METADATA.raw());
        let offset = metadata_journal_config(CLUSTER).slot_offset(40);
        io.disk().poke(&path, offset, &[0xF5; 512]).unwrap();
        io
    };
    let io = damaged();
    let (_storage, recovered) =
        block_on_ready(GroupStorage::open(&io, Path::new(DATA_DIR), storage_config())).expect("opens");
    assert!(recovered.faulty_ops.is_empty(), "the node's open cuts the slot off: {:?}", recovered.faulty_ops);
    let replayed = replay(&damaged(), 3).expect("replays");
    assert!(!replayed.journal_faulty, "and so does the replay");
    assert_eq!(replayed.torn_tail_ops, 1);
    assert_eq!(replayed.commit, 4);
}

/// A caller-given journal geometry (the simulator replays its own small
/// journal) that leaves no checkpoint interval is refused with a typed
/// error before any file is touched, never a panic in the replica.
#[test]
fn a_metadata_journal_too_small_for_a_checkpoint_interval_is_refused() {
    let io = SimIo::new(41);
    let group = MetadataGroup { journal_slot_count: 32, ..group(3) };
    let refused = block_on_ready(replay_metadata_group(&io, &dir(), group, ShardId::METADATA));
    assert!(matches!(refused, Err(HandoffError::MetadataJournalSlotCount { slot_count: 32, .. })), "{refused:?}");
    assert!(io.disk().contents(&superblock_path(&dir(), Namespace::METADATA.raw())).is_none(), "nothing formatted");
}
