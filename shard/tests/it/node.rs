//! The node over a non-simulated `Io` (`MemIo`): the same driver the
//! simulator runs, with a world that only records what happened, in order.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use shoal_shard::node::{
    CHECKPOINT_BESIDE_APPENDS_SLOTS_MAX, Flow, Group, GroupMachine, GroupStorage, Node, NodeBus, NodeConfig, NodeHooks,
    NodeStop, Promise, Routed, StorageConfig, StorageError, action_name, partition_dir,
};
use shoal_shard::{
    BatchReply, FrameDrops, Namespace, PartitionLogConfig, ReadAnswer, ReadRequest, ReplicaOwnerTable, ShardCount,
    ShardId, encode_batch,
};
use shoal_vsr::checkpoint::read_checkpoint;
use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, Header, Operation, Refusal};
use shoal_vsr::io::OpenMode;
use shoal_vsr::journal::PrepareJournal;
use shoal_vsr::message::Message;
use shoal_vsr::replica::{Action, Replica, ReplicaConfig, Source};

use crate::mem_io::{MemIo, block_on};

const CLUSTER: u128 = 7;
const REPLICA_COUNT: u8 = 2;
const CLIENT: u128 = 1_000;
/// As the simulator runs it: the replica needs room past the view headers and
/// the pipeline.
const JOURNAL_SLOT_COUNT: u64 = 64;
/// Rounds of message delivery before a test gives up: a register commits in a
/// handful.
const DELIVERY_ROUNDS_MAX: usize = 32;
/// As the simulator runs it: a checkpoint every 16 ops.
const CHECKPOINT_INTERVAL_OPS: u64 = 16;

fn namespace() -> u64 {
    Namespace::partition(1, 1, 1).expect("small ids fit").raw()
}

fn storage_config(replica: u8) -> StorageConfig {
    StorageConfig {
        cluster: CLUSTER,
        namespace: namespace(),
        replica,
        slot_count: JOURNAL_SLOT_COUNT,
        message_size_max_bytes: 4096,
    }
}

/// A single replica whose journal has `slot_count` slots and whose group
/// checkpoints every `interval` ops, registered as `CLIENT` (the session
/// returned).
fn one_replica(slot_count: u64, interval: u64) -> (Node<MemIo>, Recorder, u64) {
    one_replica_formatted_or_restarted(slot_count, interval, false)
}

/// `one_replica`, formatted and then stopped and started again before the
/// client registers (`restarted`): its journal comes from an open, which
/// knows nothing of the spare beside it, not from the format's `create`.
fn one_replica_formatted_or_restarted(slot_count: u64, interval: u64, restarted: bool) -> (Node<MemIo>, Recorder, u64) {
    let io = MemIo::default();
    let dir = Path::new("/data");
    let storage_config = StorageConfig { slot_count, ..storage_config(0) };
    let storage = block_on(GroupStorage::format(&io, dir, storage_config)).expect("format");
    let machine = block_on(GroupMachine::open(&io, dir, namespace(), PartitionLogConfig::default()))
        .expect("an empty partition log");
    let config =
        ReplicaConfig { journal_slot_count: slot_count, checkpoint_interval_ops: interval, ..replica_config(0, 1) };
    let mut world = Recorder::default();
    let mut node = if restarted {
        drop(storage);
        let (storage, recovered) = block_on(GroupStorage::open(&io, dir, storage_config)).expect("reopens");
        let replica = Replica::open(config, machine, recovered).expect("no checkpoint yet");
        let mut node = node_over(io, Group::new(namespace(), ShardId(0), storage, replica), 0, 1);
        block_on(node.start(&mut world)).expect("runs");
        node
    } else {
        node_over(io, Group::new(namespace(), ShardId(0), storage, Replica::new(config, machine)), 0, 1)
    };
    block_on(node.on_frame(Source::Client(CLIENT), ShardId(0), register(), &mut world)).expect("runs");
    complete_ended_flushes(&mut node, &mut world);
    let session = world.replies.pop().expect("registered").header.context;
    (node, world, session)
}

/// One append of `CLIENT` through a turn, and its journal flushes completed
/// (not a checkpoint running beside the node).
fn append_through_a_turn(node: &mut Node<MemIo>, world: &mut Recorder, session: u64, request: u64) {
    append_payload_through_a_turn(node, world, session, request, b"m");
}

/// `append_through_a_turn` of a message holding `payload`.
fn append_payload_through_a_turn(
    node: &mut Node<MemIo>,
    world: &mut Recorder,
    session: u64,
    request: u64,
    payload: &[u8],
) {
    node.begin_turn();
    let append = client_batch_request(CLIENT, session, request, &[payload]);
    block_on(node.on_frame(Source::Client(CLIENT), ShardId(0), append, world)).expect("runs");
    block_on(node.end_turn(world)).expect("runs");
    for _ in 0..DELIVERY_ROUNDS_MAX {
        if !node.group(0).flush_in_flight() {
            return;
        }
        block_on(node.complete_flushes(world)).expect("runs");
    }
    panic!("the journal's flushes kept running after {DELIVERY_ROUNDS_MAX} rounds");
}

/// Append one at a time until the group's checkpoint runs beside the node;
/// the next request's number.
fn append_until_a_checkpoint_runs(node: &mut Node<MemIo>, world: &mut Recorder, session: u64) -> u64 {
    for request in 1..=JOURNAL_SLOT_COUNT * 4 {
        append_through_a_turn(node, world, session, request);
        if node.group(0).checkpoint_in_flight() {
            return request + 1;
        }
    }
    panic!("no checkpoint started");
}

fn node(replica: u8) -> Node<MemIo> {
    node_of(replica, REPLICA_COUNT)
}

fn replica_config(replica: u8, replica_count: u8) -> ReplicaConfig {
    ReplicaConfig {
        cluster: CLUSTER,
        namespace: namespace(),
        replica,
        replica_count,
        journal_slot_count: JOURNAL_SLOT_COUNT,
        checkpoint_interval_ops: CHECKPOINT_INTERVAL_OPS,
        seed: u64::from(replica),
        client_sessions_max: 4,
        message_size_max_bytes: 4096,
        pipeline_prepares_max: shoal_vsr::replica::PIPELINE_PREPARES_MAX,
        checkpoint_chunks_per_answer_max: shoal_vsr::state_transfer::CHECKPOINT_CHUNKS_PER_ANSWER_MAX,
    }
}

/// A freshly formatted replica `replica` of a cluster of `replica_count`.
fn node_of(replica: u8, replica_count: u8) -> Node<MemIo> {
    let io = MemIo::default();
    let dir = Path::new("/data");
    let storage = block_on(GroupStorage::format(&io, dir, storage_config(replica))).expect("format");
    let machine = block_on(GroupMachine::open(&io, dir, namespace(), PartitionLogConfig::default()))
        .expect("an empty partition log");
    let replica_state = Replica::new(replica_config(replica, replica_count), machine);
    node_over(io, Group::new(namespace(), ShardId(0), storage, replica_state), replica, replica_count)
}

/// A node of one shard running `group`, connected to every peer.
fn node_over(io: MemIo, group: Group<MemIo>, replica: u8, replica_count: u8) -> Node<MemIo> {
    node_scrubbing(io, group, replica, replica_count, 0)
}

/// `node_over` whose groups read back `scrub_bytes_per_tick` of their
/// partition logs per tick.
fn node_scrubbing(
    io: MemIo,
    group: Group<MemIo>,
    replica: u8,
    replica_count: u8,
    scrub_bytes_per_tick: u64,
) -> Node<MemIo> {
    let shard_count = ShardCount::new(1).expect("one shard");
    let owners = Arc::new(ReplicaOwnerTable::new(usize::from(replica_count), shard_count));
    for peer in (0..replica_count).filter(|peer| *peer != replica) {
        owners.stamp(peer, ShardId(0)).expect("a fresh slot");
    }
    let config = NodeConfig {
        cluster: CLUSTER,
        replica,
        replica_count,
        shard_count,
        data_dir: "/data".into(),
        scrub_bytes_per_tick,
    };
    Node::new(io, config, vec![group], owners, Arc::new(FrameDrops::new()))
}

/// Records, in order, each storage completion and each message that left.
#[derive(Default)]
struct Recorder {
    events: Vec<String>,
    to_replicas: Vec<(u8, Message)>,
    replies: Vec<Message>,
    /// Stop the node after the first durable prepare (a crash right after a
    /// storage completion, as the simulator injects it).
    stop_after_durable: bool,
    /// Answer every random choice of the node with its first option (the
    /// simulator's seeds that favour one peer, at their extreme).
    draw_first: bool,
}

impl NodeBus for Recorder {
    fn send_to_replica(&mut self, _via: ShardId, to: u8, message: Message) {
        self.events.push(format!("send {:?} op {}", message.header.command, message.header.op));
        self.to_replicas.push((to, message));
    }

    fn reply_to_client(&mut self, _via: ShardId, _client: u128, message: Message) {
        self.events.push(format!("reply op {}", message.header.op));
        self.replies.push(message);
    }

    fn client_shard(&self, _client: u128) -> ShardId {
        ShardId(0)
    }
}

impl NodeHooks for Recorder {
    fn after_storage(&mut self, _group: usize, action: &Action, error: Option<&StorageError>) -> Flow {
        let op = match action {
            Action::WritePrepare { message } => message.header.op,
            _ => 0,
        };
        let outcome = if error.is_none() { "durable" } else { "failed" };
        self.events.push(format!("{outcome} {} op {op}", action_name(action)));
        if self.stop_after_durable && error.is_none() { Flow::Stop } else { Flow::Continue }
    }

    fn draw(&mut self, _bound: u64) -> Option<u64> {
        self.draw_first.then_some(0)
    }
}

fn register() -> Message {
    register_client(CLIENT)
}

fn register_client(client: u128) -> Message {
    let mut header = Header::new(Command::Request, CLUSTER);
    header.namespace = namespace();
    header.client = client;
    header.operation = Operation::Register;
    Message::new(header, Rc::from(&[][..]))
}

/// Request `request` of `CLIENT` in `session`: a `SendMessages` batch.
fn batch_request(session: u64, request: u64, messages: &[&[u8]]) -> Message {
    client_batch_request(CLIENT, session, request, messages)
}

fn client_batch_request(client: u128, session: u64, request: u64, messages: &[&[u8]]) -> Message {
    let mut header = Header::new(Command::Request, CLUSTER);
    header.namespace = namespace();
    header.client = client;
    header.operation = Operation::SendMessages;
    header.context = session;
    header.request = request;
    Message::new(header, Rc::from(encode_batch(messages).unwrap()))
}

/// Carry the replicas' messages to each other, completing every flush and
/// checkpoint whose fsync ended, until nothing is left to deliver.
fn deliver_all(nodes: &mut [Node<MemIo>], worlds: &mut [Recorder]) {
    deliver_completing(nodes, worlds, |_, _, _| false);
}

/// Some flush or checkpoint of `node` has ended and waits to be completed.
fn flush_ended(node: &mut Node<MemIo>) -> bool {
    // Work beside the node that yields (a spare's clear) wakes its poller
    // at once: poll again while it does, as a runtime would; a held fsync
    // wakes nobody.
    for _ in 0..BESIDE_YIELDS_MAX {
        let woken = Arc::new(Woken::default());
        let waker = std::task::Waker::from(woken.clone());
        if node.poll_flushes(&mut std::task::Context::from_waker(&waker)) {
            return true;
        }
        if !woken.0.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
    }
    panic!("work beside the node kept yielding after {BESIDE_YIELDS_MAX} polls");
}

/// Bound on the polls of work beside a node that keeps waking itself.
const BESIDE_YIELDS_MAX: usize = 10_000;

/// A waker that records whether it was woken.
#[derive(Default)]
struct Woken(std::sync::atomic::AtomicBool);

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Complete `node`'s flushes and checkpoints whose fsync ended, and those
/// their completions start, until none that ended is left (what a held
/// fsync keeps running goes on running): what a runner of the node does
/// each time it wakes (`poll_flushes`, `complete_flushes`).
fn complete_ended_flushes(node: &mut Node<MemIo>, world: &mut Recorder) {
    for _ in 0..DELIVERY_ROUNDS_MAX {
        if !flush_ended(node) {
            return;
        }
        block_on(node.complete_flushes(world)).expect("runs");
    }
    panic!("flushes kept ending after {DELIVERY_ROUNDS_MAX} rounds");
}

/// Three fresh replicas, `CLIENT` registered through replica 0 (its
/// session returned).
fn three_registered_replicas() -> (Vec<Node<MemIo>>, Vec<Recorder>, u64) {
    const REPLICAS: u8 = 3;
    let mut nodes: Vec<Node<MemIo>> = (0..REPLICAS).map(|r| node_of(r, REPLICAS)).collect();
    let mut worlds: Vec<Recorder> = (0..REPLICAS).map(|_| Recorder::default()).collect();
    block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), register(), &mut worlds[0])).expect("runs");
    deliver_all(&mut nodes, &mut worlds);
    let session = worlds[0].replies.pop().expect("the register was answered").header.context;
    (nodes, worlds, session)
}

fn position(events: &[String], event: &str) -> usize {
    events.iter().position(|e| e == event).unwrap_or_else(|| panic!("no `{event}` in {events:#?}"))
}

#[test]
fn prepare_ok_and_reply_leave_only_after_their_prepare_is_durable() {
    let mut nodes = [node(0), node(1)];
    let mut worlds = [Recorder::default(), Recorder::default()];
    block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), register(), &mut worlds[0])).expect("runs");
    deliver_all(&mut nodes, &mut worlds);
    let (primary, backup) = (&worlds[0].events, &worlds[1].events);
    assert!(position(backup, "durable write_prepare op 1") < position(backup, "send PrepareOk op 1"));
    assert!(position(primary, "durable write_prepare op 1") < position(primary, "reply op 1"));
    assert_eq!(nodes[0].group(0).replica().commit_min(), 1, "the register committed");
}

#[test]
fn a_batch_takes_one_op_and_dense_offsets_and_its_retry_is_answered_not_appended() {
    let mut nodes = [node(0), node(1)];
    let mut worlds = [Recorder::default(), Recorder::default()];
    block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), register(), &mut worlds[0])).expect("runs");
    deliver_all(&mut nodes, &mut worlds);
    let session = worlds[0].replies.pop().expect("the register was answered").header.context;
    let single = batch_request(session, 1, &[b"alone"]);
    block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), single, &mut worlds[0])).expect("runs");
    deliver_all(&mut nodes, &mut worlds);
    let batch = batch_request(session, 2, &[b"a", b"bb", b"ccc"]);
    block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), batch.clone(), &mut worlds[0])).expect("runs");
    deliver_all(&mut nodes, &mut worlds);
    let replies: Vec<(u64, BatchReply)> = std::mem::take(&mut worlds[0].replies)
        .iter()
        .map(|m| (m.header.op, BatchReply::decode(&m.body).expect("a batch reply")))
        .collect();
    assert_eq!(
        replies,
        [(2, BatchReply { first_offset: 0, count: 1 }), (3, BatchReply { first_offset: 1, count: 3 })],
        "one op per batch, each message its own offset"
    );
    // The client retries the batch (its reply was lost): the session answers.
    block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), batch, &mut worlds[0])).expect("runs");
    deliver_all(&mut nodes, &mut worlds);
    let resent = worlds[0].replies.pop().expect("the retry is answered");
    assert_eq!(resent.header.op, 3, "from the session's reply, not a new op");
    assert_eq!(BatchReply::decode(&resent.body).unwrap(), BatchReply { first_offset: 1, count: 3 });
    let want = [&b"alone"[..], b"a", b"bb", b"ccc"];
    for node in &nodes {
        let machine = node.group(0).replica().state_machine();
        assert_eq!(node.group(0).replica().op(), 3, "the retry took no op");
        let log = block_on(machine.read(0, 16));
        let messages: Vec<&[u8]> = log.iter().map(|(_, m)| m.as_slice()).collect();
        // The backup applies op 3 once a later message tells it op 3 committed.
        assert_eq!(messages, want[..messages.len()], "every message once, at its offset");
    }
    assert_eq!(block_on(nodes[0].group(0).replica().state_machine().read(0, 16)).len(), want.len());
}

/// A primary and a backup, with `CLIENT` and `CLIENT + 1` registered on
/// both: their sessions, in that order.
fn two_nodes_with_two_registered_clients() -> ([Node<MemIo>; 2], [Recorder; 2], Vec<u64>) {
    let mut nodes = [node(0), node(1)];
    let mut worlds = [Recorder::default(), Recorder::default()];
    let mut sessions = Vec::new();
    for client in [CLIENT, CLIENT + 1] {
        block_on(nodes[0].on_frame(Source::Client(client), ShardId(0), register_client(client), &mut worlds[0]))
            .expect("runs");
        deliver_all(&mut nodes, &mut worlds);
        sessions.push(worlds[0].replies.pop().expect("registered").header.context);
    }
    (nodes, worlds, sessions)
}

/// A batch that fills a whole journal slot of `storage_config`: two such
/// requests never fit one prepare, so each takes an op of its own.
fn slot_filling_message() -> Vec<u8> {
    let slot_size_bytes = storage_config(0).journal().slot_size_bytes() as usize;
    let overhead_bytes = encode_batch(&[b""]).expect("encodes").len();
    vec![b'x'; slot_size_bytes - HEADER_SIZE_BYTES - overhead_bytes]
}

/// Two clients' appends reach the primary in one turn: nothing is prepared
/// inside it, and at its end both leave packed in one op (one prepare, one
/// journal write, one quorum round), each answered from that op.
#[test]
fn requests_of_one_turn_share_one_packed_prepare() {
    let (mut nodes, mut worlds, sessions) = two_nodes_with_two_registered_clients();
    let syncs_before = nodes[0].io().sync_count();
    nodes[0].begin_turn();
    for (index, client) in [CLIENT, CLIENT + 1].into_iter().enumerate() {
        let request = client_batch_request(client, sessions[index], 1, &[b"m"]);
        block_on(nodes[0].on_frame(Source::Client(client), ShardId(0), request, &mut worlds[0])).expect("runs");
    }
    assert!(worlds[0].to_replicas.is_empty(), "nothing is prepared inside the turn");
    assert_eq!(nodes[0].group(0).replica().request_queue_len(), 2);
    assert_eq!(nodes[0].requests_held(), 2, "two requests queued");
    block_on(nodes[0].end_turn(&mut worlds[0])).expect("runs");
    let prepares: Vec<(u64, Operation)> =
        worlds[0].to_replicas.iter().map(|(_, m)| (m.header.op, m.header.operation)).collect();
    assert_eq!(prepares, [(3, Operation::Packed)], "one packed op for the turn's two requests");
    assert_eq!(nodes[0].requests_held(), 1, "one op prepared, not committed");
    complete_all_flushes(&mut nodes[0], &mut worlds[0]);
    assert_eq!(nodes[0].io().sync_count() - syncs_before, 2, "one group flush: the prepare, then its ring copy");
    deliver_all(&mut nodes, &mut worlds);
    let replies: Vec<(u128, u64)> = worlds[0].replies.iter().map(|m| (m.header.client, m.header.op)).collect();
    assert_eq!(replies, [(CLIENT, 3), (CLIENT + 1, 3)]);
    assert_eq!(nodes[0].group(0).replica().commit_min(), 3);
    assert_eq!(nodes[0].requests_held(), 0, "committed and answered");
}

/// Group commit, told step by step: two clients' appends that cannot share
/// a prepare (each fills a slot) reach the primary in one turn. Both
/// prepares leave for the backup at the turn's end, which starts its one
/// flush (two fdatasyncs: prepares, then their ring copies); nothing that
/// promises them leaves before the flush is completed, on the primary or
/// the backup.
#[test]
fn prepares_of_one_turn_are_flushed_together_and_nothing_promises_them_before() {
    let filling = slot_filling_message();
    let (mut nodes, mut worlds, sessions) = two_nodes_with_two_registered_clients();
    worlds[0].events.clear();
    let syncs_before = nodes[0].io().sync_count();
    nodes[0].begin_turn();
    for (index, client) in [CLIENT, CLIENT + 1].into_iter().enumerate() {
        let request = client_batch_request(client, sessions[index], 1, &[&filling]);
        block_on(nodes[0].on_frame(Source::Client(client), ShardId(0), request, &mut worlds[0])).expect("runs");
    }
    assert_eq!(nodes[0].io().sync_count(), syncs_before, "no fsync inside the turn");
    assert!(worlds[0].events.iter().all(|e| !e.starts_with("durable")), "{:?}", worlds[0].events);
    block_on(nodes[0].end_turn(&mut worlds[0])).expect("runs");
    let prepares: Vec<u64> = worlds[0].to_replicas.iter().map(|(_, m)| m.header.op).collect();
    assert_eq!(prepares, [3, 4], "both prepares left at the turn's end");
    assert_eq!(nodes[0].io().sync_count() - syncs_before, 1, "the turn's end started one fdatasync for both");
    complete_all_flushes(&mut nodes[0], &mut worlds[0]);
    assert_eq!(nodes[0].io().sync_count() - syncs_before, 2, "one group flush on the primary");
    assert!(worlds[0].replies.is_empty(), "no reply before a quorum");
    // The backup takes both prepares in one turn too: no prepare_ok before its flush.
    nodes[1].begin_turn();
    for (_, prepare) in std::mem::take(&mut worlds[0].to_replicas) {
        block_on(nodes[1].on_frame(Source::Replica(0), ShardId(0), prepare, &mut worlds[1])).expect("runs");
    }
    assert!(worlds[1].to_replicas.is_empty(), "prepare_oks wait for the flush: {:?}", worlds[1].events);
    let backup_syncs = nodes[1].io().sync_count();
    block_on(nodes[1].end_turn(&mut worlds[1])).expect("runs");
    assert!(worlds[1].to_replicas.is_empty(), "prepare_oks wait for its completion: {:?}", worlds[1].events);
    complete_all_flushes(&mut nodes[1], &mut worlds[1]);
    assert_eq!(nodes[1].io().sync_count() - backup_syncs, 2, "one group flush: prepares, then ring copies");
    let oks: Vec<(Command, u64)> = worlds[1].to_replicas.iter().map(|(_, m)| (m.header.command, m.header.op)).collect();
    assert_eq!(oks, [(Command::PrepareOk, 3), (Command::PrepareOk, 4)]);
    deliver_all(&mut nodes, &mut worlds);
    let primary = &worlds[0].events;
    assert!(position(primary, "durable write_prepare op 4") < position(primary, "reply op 3"));
    assert_eq!(nodes[0].group(0).replica().commit_min(), 4, "both appends committed");
}

/// Group commit writes a turn's fresh prepares that fill their slots with
/// one write (zeros over the carried-copies region between the two slots),
/// on the primary and on the backup, then their ring copies with one write
/// when nothing follows to carry them: two appends whose prepares fill
/// their slots (4096 bytes each) arrive in one turn.
#[test]
fn prepares_of_one_turn_are_written_with_one_write_then_their_ring_copies_with_one() {
    let slot_size_bytes = storage_config(0).journal().slot_size_bytes() as usize;
    let filling = slot_filling_message();
    let (mut nodes, mut worlds, sessions) = two_nodes_with_two_registered_clients();
    let journal = shoal_vsr::journal::journal_path(Path::new("/data"), namespace());
    let written_before = [nodes[0].io().writes_to(&journal).len(), nodes[1].io().writes_to(&journal).len()];
    nodes[0].begin_turn();
    for (index, client) in [CLIENT, CLIENT + 1].into_iter().enumerate() {
        let request = client_batch_request(client, sessions[index], 1, &[&filling]);
        block_on(nodes[0].on_frame(Source::Client(client), ShardId(0), request, &mut worlds[0])).expect("runs");
    }
    assert_eq!(nodes[0].io().writes_to(&journal).len(), written_before[0], "nothing is written inside the turn");
    block_on(nodes[0].end_turn(&mut worlds[0])).expect("runs");
    complete_all_flushes(&mut nodes[0], &mut worlds[0]);
    let prepares = std::mem::take(&mut worlds[0].to_replicas);
    let sizes: Vec<(u64, usize)> = prepares.iter().map(|(_, m)| (m.header.op, m.header.size as usize)).collect();
    assert_eq!(sizes, [(3, slot_size_bytes), (4, slot_size_bytes)], "two prepares that fill their slots");
    nodes[1].begin_turn();
    for (_, prepare) in prepares {
        block_on(nodes[1].on_frame(Source::Replica(0), ShardId(0), prepare, &mut worlds[1])).expect("runs");
    }
    block_on(nodes[1].end_turn(&mut worlds[1])).expect("runs");
    complete_all_flushes(&mut nodes[1], &mut worlds[1]);
    let config = storage_config(0).journal();
    let both_slots = 2 * slot_size_bytes + shoal_vsr::journal::COPIES_REGION_BYTES as usize;
    let expected = [(config.slot_offset(3), both_slots), (config.header_copy_offset(3), 2 * HEADER_SIZE_BYTES)];
    for (replica, node) in nodes.iter().enumerate() {
        let writes = &node.io().writes_to(&journal)[written_before[replica]..];
        assert_eq!(writes, expected, "replica {replica}: one write for both slots, one for their ring copies");
    }
    deliver_all(&mut nodes, &mut worlds);
    assert_eq!(nodes[0].group(0).replica().commit_min(), 4, "both appends committed");
}

/// The first append of client `CLIENT + index` (registered in `session`):
/// its prepare, sent by the primary (node 0) in a turn of its own.
fn prepare_of_one_append(nodes: &mut [Node<MemIo>], worlds: &mut [Recorder], index: u128, session: u64) -> Message {
    nodes[0].begin_turn();
    let append = client_batch_request(CLIENT + index, session, 1, &[b"m"]);
    block_on(nodes[0].on_frame(Source::Client(CLIENT + index), ShardId(0), append, &mut worlds[0])).expect("runs");
    block_on(nodes[0].end_turn(&mut worlds[0])).expect("runs");
    let (_, prepare) = worlds[0].to_replicas.pop().expect("the primary sent its prepare");
    assert_eq!(prepare.header.command, Command::Prepare);
    prepare
}

/// The ops of the prepare_oks `world` sent since the last look (every
/// message sent is put back, for `deliver_all`).
fn prepare_oks(world: &mut Recorder, seen: &mut usize) -> Vec<u64> {
    let sent = &world.to_replicas[*seen..];
    *seen = world.to_replicas.len();
    sent.iter().filter(|(_, m)| m.header.command == Command::PrepareOk).map(|(_, m)| m.header.op).collect()
}

/// Under load (a prepare arrives while the fsync of the one before runs), a
/// backup pays one fdatasync per flush: op 3's prepare is written and its
/// fsync runs; op 4's arrives meanwhile and is staged; op 3's fsync ends,
/// which makes it durable without its ring copy (no prepare_ok yet), and its
/// completion starts the next flush, which writes op 4's prepare and op 3's
/// ring copy with one write; one fdatasync then completes op 3 (its
/// prepare_ok leaves) and makes op 4 durable; one more finishes op 4.
/// Nothing promises a prepare before its ring copy is durable (`execute`
/// asserts it).
#[test]
fn a_loaded_backup_writes_each_flushs_ring_copies_with_the_next_flushs_prepares() {
    let (mut nodes, mut worlds, sessions) = two_nodes_with_two_registered_clients();
    let mut seen = 0;
    let journal = shoal_vsr::journal::journal_path(Path::new("/data"), namespace());
    let config = storage_config(1).journal();
    let first = prepare_of_one_append(&mut nodes, &mut worlds, 0, sessions[0]);
    assert_eq!(first.header.op, 3);
    nodes[1].io().hold_syncs(true);
    let (syncs, writes) = (nodes[1].io().sync_count(), nodes[1].io().writes_to(&journal).len());
    nodes[1].begin_turn();
    block_on(nodes[1].on_frame(Source::Replica(0), ShardId(0), first, &mut worlds[1])).expect("runs");
    block_on(nodes[1].end_turn(&mut worlds[1])).expect("runs");
    assert!(nodes[1].flushes_in_flight(), "op 3's fsync runs");
    assert_eq!(nodes[1].io().writes_to(&journal)[writes..], [(config.slot_offset(3), 4096)], "the prepare only");

    // Op 4 arrives while op 3's fsync runs: staged for the next flush.
    let second = prepare_of_one_append(&mut nodes, &mut worlds, 1, sessions[1]);
    assert_eq!(second.header.op, 4);
    nodes[1].begin_turn();
    block_on(nodes[1].on_frame(Source::Replica(0), ShardId(0), second, &mut worlds[1])).expect("runs");
    block_on(nodes[1].end_turn(&mut worlds[1])).expect("runs");
    assert_eq!(nodes[1].io().writes_to(&journal).len(), writes + 1, "op 4 is staged, not written");
    assert_eq!(nodes[1].group(0).prepares_unflushed(), 2);

    end_held_fsyncs(&mut nodes[1]);
    assert_eq!(nodes[1].io().sync_count() - syncs, 1, "op 3's fdatasync");
    let writes = nodes[1].io().writes_to(&journal).len();
    block_on(nodes[1].complete_flushes(&mut worlds[1])).expect("runs");
    assert_eq!(prepare_oks(&mut worlds[1], &mut seen), Vec::<u64>::new(), "op 3's ring copy is not durable yet");
    assert!(
        nodes[1].group(0).storage().check_durable(Promise::Prepare { op: 3, checksum: 0, prefix_from: 3 }).is_err()
    );
    assert!(nodes[1].flushes_in_flight(), "the completion started the next flush");
    let flush_writes = &nodes[1].io().writes_to(&journal)[writes..];
    // Op 4's write carries op 3's copy in the region (a page) before its
    // header: one contiguous write of whole pages (journal module doc,
    // "Carried copies", "Whole pages").
    let region = shoal_vsr::journal::COPIES_REGION_BYTES;
    assert_eq!(flush_writes, [(config.carried_copy_offset(3, 1) + HEADER_SIZE_BYTES as u64 - region, 2 * 4096)]);

    let syncs = nodes[1].io().sync_count();
    end_held_fsyncs(&mut nodes[1]);
    block_on(nodes[1].complete_flushes(&mut worlds[1])).expect("runs");
    assert_eq!(nodes[1].io().sync_count() - syncs, 1, "one fdatasync for op 4 and op 3's copy");
    assert_eq!(prepare_oks(&mut worlds[1], &mut seen), [3], "op 3 is durable with its copy: its prepare_ok leaves");
    assert_eq!(nodes[1].group(0).prepares_unflushed(), 1, "op 4 waits for its copy");

    let syncs = nodes[1].io().sync_count();
    nodes[1].io().hold_syncs(false);
    complete_all_flushes(&mut nodes[1], &mut worlds[1]);
    assert_eq!(nodes[1].io().sync_count() - syncs, 1, "nothing more waits: op 4's copy at once");
    assert_eq!(prepare_oks(&mut worlds[1], &mut seen), [4]);
    assert_eq!(nodes[1].group(0).prepares_unflushed(), 0);
    deliver_all(&mut nodes, &mut worlds);
    assert_eq!(nodes[0].group(0).replica().commit_min(), 4, "both appends committed");
}

/// Let `node`'s held fsyncs end (each is counted then), and hold the next.
fn end_held_fsyncs(node: &mut Node<MemIo>) {
    node.io().hold_syncs(false);
    assert!(flush_ended(node), "a held fsync ran");
    node.io().hold_syncs(true);
}

/// Ring copies a completed flush left are never forgotten, so the node
/// never waits idle with a promise held: a completion inside a turn the
/// caller opened (the simulator completes flushes while a turn is open)
/// leaves the copies' flush to that turn's end, which starts it; an event
/// outside any turn starts its group's flush before it returns.
#[test]
fn ring_copies_a_completion_leaves_are_flushed_at_the_turns_end_or_at_once_outside_one() {
    let (mut nodes, mut worlds, sessions) = two_nodes_with_two_registered_clients();
    let mut seen = 0;
    let first = prepare_of_one_append(&mut nodes, &mut worlds, 0, sessions[0]);
    nodes[1].begin_turn();
    block_on(nodes[1].on_frame(Source::Replica(0), ShardId(0), first, &mut worlds[1])).expect("runs");
    block_on(nodes[1].end_turn(&mut worlds[1])).expect("runs");
    nodes[1].begin_turn();
    block_on(nodes[1].complete_flushes(&mut worlds[1])).expect("runs");
    assert!(!nodes[1].flushes_in_flight(), "inside the turn, the copy waits for its end");
    assert_eq!(prepare_oks(&mut worlds[1], &mut seen), Vec::<u64>::new(), "op 3's ring copy is not durable yet");
    block_on(nodes[1].end_turn(&mut worlds[1])).expect("runs");
    assert!(nodes[1].flushes_in_flight(), "the turn's end started the flush of op 3's ring copy");
    complete_all_flushes(&mut nodes[1], &mut worlds[1]);
    assert_eq!(prepare_oks(&mut worlds[1], &mut seen), [3], "op 3's ring copy is durable");

    let second = prepare_of_one_append(&mut nodes, &mut worlds, 1, sessions[1]);
    let second_again = second.clone();
    // Op 4 arrives outside a turn: its flush starts before the event returns.
    block_on(nodes[1].on_frame(Source::Replica(0), ShardId(0), second, &mut worlds[1])).expect("runs");
    assert!(nodes[1].flushes_in_flight(), "outside a turn, the event started its flush");
    // The primary's retry of op 4 arrives outside a turn too, while it runs.
    block_on(nodes[1].on_frame(Source::Replica(0), ShardId(0), second_again, &mut worlds[1])).expect("runs");
    assert_eq!(prepare_oks(&mut worlds[1], &mut seen), Vec::<u64>::new(), "op 4 is not durable yet");
    complete_all_flushes(&mut nodes[1], &mut worlds[1]);
    assert_eq!(nodes[1].group(0).prepares_unflushed(), 0);
    assert_eq!(prepare_oks(&mut worlds[1], &mut seen), [4, 4], "op 4, and its retry");
    deliver_all(&mut nodes, &mut worlds);
    assert_eq!(nodes[0].group(0).replica().commit_min(), 4, "both appends committed");
}

/// A crash injected right after the first prepare of a group completes:
/// the world still learns that every prepare of the group reached the disk
/// (the flush ran for all of them). Before, it heard only of the first, and
/// the simulator's recovery checker kept counting on what a later write of
/// the group had replaced (session-churn seed 105, Recovery).
#[test]
fn a_stop_at_one_prepare_of_a_group_still_reports_every_prepare_written() {
    let filling = slot_filling_message();
    let (mut nodes, _worlds, sessions) = two_nodes_with_two_registered_clients();
    let mut world = Recorder { stop_after_durable: true, ..Recorder::default() };
    nodes[0].begin_turn();
    for (index, client) in [CLIENT, CLIENT + 1].into_iter().enumerate() {
        let request = client_batch_request(client, sessions[index], 1, &[&filling]);
        block_on(nodes[0].on_frame(Source::Client(client), ShardId(0), request, &mut world)).expect("runs");
    }
    block_on(nodes[0].end_turn(&mut world)).expect("the turn's end starts the group's flush");
    let stopped = completing_until_stopped(&mut nodes[0], &mut world);
    assert!(matches!(stopped, NodeStop::Halted), "{stopped:?}");
    let durable: Vec<&String> = world.events.iter().filter(|e| e.starts_with("durable")).collect();
    assert_eq!(durable, ["durable write_prepare op 3", "durable write_prepare op 4"]);
    assert!(world.replies.is_empty(), "a stopped node sends nothing more");
}

/// Complete `node`'s flushes until it stops; why it stopped.
fn completing_until_stopped(node: &mut Node<MemIo>, world: &mut Recorder) -> NodeStop {
    for _ in 0..DELIVERY_ROUNDS_MAX {
        assert!(node.flushes_in_flight(), "a flush runs until the node stops");
        if let Err(stopped) = block_on(node.complete_flushes(world)) {
            return stopped;
        }
    }
    panic!("the node kept running after {DELIVERY_ROUNDS_MAX} completions");
}

#[test]
fn storage_vouches_for_a_prepare_only_while_it_is_durable() {
    let mut nodes = [node(0), node(1)];
    let mut world = Recorder::default();
    block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), register(), &mut world)).expect("runs");
    let (_, prepare) = world.to_replicas.pop().expect("the primary broadcast its prepare");
    let checksum = prepare.header.checksum;
    let promise = Promise::Prepare { op: 1, checksum, prefix_from: 1 };
    let storage = nodes[1].group(0).storage();
    assert!(storage.check_durable(promise).is_err(), "not written on the backup yet");
    assert!(nodes[0].group(0).storage().check_durable(promise).is_err(), "written, its fsync not completed");
    complete_all_flushes(&mut nodes[0], &mut world);
    assert!(nodes[0].group(0).storage().check_durable(promise).is_ok(), "written and fsynced on the primary");
    let mut backup_world = Recorder::default();
    block_on(nodes[1].on_frame(Source::Replica(0), ShardId(0), prepare, &mut backup_world)).expect("runs");
    assert!(nodes[1].group(0).storage().check_durable(promise).is_err(), "its fsync not completed");
    complete_all_flushes(&mut nodes[1], &mut backup_world);
    assert!(nodes[1].group(0).storage().check_durable(promise).is_ok());
    let other = Promise::Prepare { op: 1, checksum: checksum ^ 1, prefix_from: 1 };
    assert!(nodes[1].group(0).storage().check_durable(other).is_err(), "another prepare at the same op");
}

#[test]
fn a_failed_prepare_write_stops_the_backup_before_it_acknowledges() {
    let mut nodes = [node(0), node(1)];
    let mut world = Recorder::default();
    block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), register(), &mut world)).expect("runs");
    let (_, prepare) = world.to_replicas.pop().expect("the primary broadcast its prepare");
    nodes[1].io().fail_next_writes(1);
    let mut backup_world = Recorder::default();
    let stopped = block_on(nodes[1].on_frame(Source::Replica(0), ShardId(0), prepare, &mut backup_world));
    assert!(matches!(stopped, Err(NodeStop::Storage { action: "write_prepare", .. })), "{stopped:?}");
    assert!(backup_world.to_replicas.is_empty(), "no prepare_ok after a failed write: {:?}", backup_world.events);
    assert_eq!(backup_world.events, ["failed write_prepare op 1"]);
}

/// A partition log with a rotten record: a lone replica refuses to open it
/// (nobody could give the records back), a replica with peers keeps the
/// intact prefix and opens, the way the server and the simulator both do.
#[test]
fn a_damaged_partition_log_is_refused_alone_and_salvaged_with_peers() {
    use shoal_shard::node::partition_dir;
    use shoal_shard::partition_log::{PartitionLog, PartitionLogConfig, SEGMENT_HEADER_SIZE_BYTES, segment_file_name};

    let io = MemIo::default();
    let data_dir = Path::new("/data");
    let dir = partition_dir(data_dir, namespace());
    let mut log = block_on(PartitionLog::open(io.clone(), &dir, PartitionLogConfig::default())).unwrap();
    let messages: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 32]).collect();
    block_on(log.append(&messages)).unwrap();
    block_on(log.sync()).unwrap();
    drop(log);
    let segment = dir.join(segment_file_name(0));
    let mut bytes = io.file_bytes(&segment);
    let bytes_len = bytes.len() as u64;
    // A byte inside the third record's payload.
    bytes[SEGMENT_HEADER_SIZE_BYTES as usize + 2 * (28 + 32) + 30] ^= 1;
    io.set_file_bytes(&segment, bytes);

    assert!(
        block_on(GroupMachine::open_in_cluster(&io, data_dir, namespace(), 1, PartitionLogConfig::default())).is_err()
    );
    let (machine, salvage) =
        block_on(GroupMachine::open_in_cluster(&io, data_dir, namespace(), 3, PartitionLogConfig::default()))
            .expect("salvaged");
    let salvage = salvage.expect("the open reports what it cut");
    assert_eq!(salvage.first_lost_offset, 2);
    let third_record = SEGMENT_HEADER_SIZE_BYTES + 2 * (28 + 32);
    let shoal_shard::SalvageCut::Segment { segment: cut, places } = &salvage.cut else { panic!("{:?}", salvage.cut) };
    assert_eq!(*cut, segment);
    assert_eq!(places.len(), 1, "the marker passed its check: only the records are suspect");
    assert_eq!(places[0], third_record..bytes_len, "from the damaged record on");
    let GroupMachine::Partition(partition) = machine else { panic!("a partition namespace") };
    assert_eq!(partition.log_next_offset(), 2, "the two records before the damage are kept");
}

/// A client's read, answered by `node` outside consensus.
fn read(node: &mut Node<MemIo>, world: &mut Recorder, namespace: u64, offset: u64, size_max: u32) -> ReadAnswer {
    let request = ReadRequest::new(offset, 16, size_max).expect("within bounds");
    let message = request.message(CLUSTER, CLIENT, namespace, offset + 100);
    block_on(node.on_frame(Source::Client(CLIENT), ShardId(0), message, world)).expect("runs");
    let reply = world.replies.pop().expect("every read is answered");
    assert_eq!(reply.header.request, offset + 100, "the reply echoes the read id");
    ReadAnswer::decode(&reply.header, &reply.body).expect("a well-formed answer")
}

/// Reads need no session and no consensus: any replica answers from its
/// partition log, and only below its own committed end. An op the primary
/// prepared but did not commit has no offset to read yet; a backup that has
/// not heard of a commit does not serve it either.
#[test]
fn a_read_serves_committed_offsets_only_from_any_replica() {
    let mut nodes = [node(0), node(1)];
    let mut worlds = [Recorder::default(), Recorder::default()];
    block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), register(), &mut worlds[0])).expect("runs");
    deliver_all(&mut nodes, &mut worlds);
    let session = worlds[0].replies.pop().expect("registered").header.context;
    let batch = batch_request(session, 1, &[b"a", b"bb", b"ccc"]);
    block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), batch, &mut worlds[0])).expect("runs");
    deliver_all(&mut nodes, &mut worlds);
    let size_max = 4096;
    let committed = ReadAnswer::Messages {
        first_offset: 0,
        committed_end: 3,
        messages: vec![b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()],
    };
    assert_eq!(read(&mut nodes[0], &mut worlds[0], namespace(), 0, size_max), committed);
    // The backup has the prepare but has not heard that it committed.
    assert_eq!(
        read(&mut nodes[1], &mut worlds[1], namespace(), 0, size_max),
        ReadAnswer::OffsetBeyondEnd { committed_end: 0 }
    );
    // A prepared, uncommitted append: the primary broadcasts it, the backup
    // acknowledges it, and nobody delivers the acknowledgement.
    let next = batch_request(session, 2, &[b"dddd"]);
    block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), next, &mut worlds[0])).expect("runs");
    for (_, message) in std::mem::take(&mut worlds[0].to_replicas) {
        block_on(nodes[1].on_frame(Source::Replica(0), ShardId(0), message, &mut worlds[1])).expect("runs");
    }
    assert_eq!(nodes[0].group(0).replica().op(), 3, "op 3 is prepared");
    assert_eq!(nodes[0].group(0).replica().commit_min(), 2, "and not committed");
    assert_eq!(
        read(&mut nodes[0], &mut worlds[0], namespace(), 3, size_max),
        ReadAnswer::OffsetBeyondEnd { committed_end: 3 }
    );
    // The backup learned of op 2's commit from the prepare of op 3.
    assert_eq!(read(&mut nodes[1], &mut worlds[1], namespace(), 0, size_max), committed);
    // The reply bound: header, batch count, and two entries.
    let two = (HEADER_SIZE_BYTES + 4 + (4 + 1) + (4 + 2)) as u32;
    let ReadAnswer::Messages { messages, .. } = read(&mut nodes[0], &mut worlds[0], namespace(), 0, two) else {
        panic!("messages")
    };
    assert_eq!(messages, [b"a".to_vec(), b"bb".to_vec()], "as many as fit the reader's bound");
    assert_eq!(
        read(&mut nodes[0], &mut worlds[0], namespace(), 2, (HEADER_SIZE_BYTES + 4 + 4 + 2) as u32),
        ReadAnswer::MessageTooLarge { offset: 2, size_bytes: 3 }
    );
    let other = Namespace::partition(9, 9, 9).unwrap().raw();
    assert_eq!(read(&mut nodes[0], &mut worlds[0], other, 0, size_max), ReadAnswer::PartitionMissing);
    assert_eq!(
        read(&mut nodes[0], &mut worlds[0], Namespace::METADATA.raw(), 0, size_max),
        ReadAnswer::PartitionMissing
    );
}

/// A request to a group this replica does not run is refused at once with
/// a typed answer (the client need not wait out its timeout), and counted
/// as no drop.
#[test]
fn a_request_to_a_missing_partition_is_refused_with_a_typed_answer() {
    let mut primary = node(0);
    let mut world = Recorder::default();
    let mut request = register();
    request.header.namespace = Namespace::partition(9, 9, 9).unwrap().raw();
    request.header.request = 7;
    let routed = block_on(primary.on_frame(Source::Client(CLIENT), ShardId(0), request, &mut world)).expect("runs");
    assert_eq!(routed, Routed::Delivered);
    let refusal = world.replies.pop().expect("refused, not dropped");
    assert_eq!((refusal.header.command, refusal.header.request), (Command::Refused, 7));
    assert_eq!(Refusal::from_code(refusal.header.context), Some(Refusal::PartitionMissing));
    assert!(world.to_replicas.is_empty(), "nothing was prepared");
}

/// The last of three replicas stops, the first record of its partition
/// log rots (the salvage keeps nothing), and it restarts: its checkpoint
/// counts offsets its log no longer holds. Its world's draws favour the
/// first candidate.
fn restart_the_last_with_a_rotten_partition_log(
    nodes: &mut Vec<Node<MemIo>>,
    worlds: &mut Vec<Recorder>,
) -> (Node<MemIo>, Recorder) {
    restart_the_last_with_a_rotten_partition_log_scrubbing(nodes, worlds, 0)
}

/// `restart_the_last_with_a_rotten_partition_log`, the restarted node
/// reading back `scrub_bytes_per_tick` of its partition log per tick.
fn restart_the_last_with_a_rotten_partition_log_scrubbing(
    nodes: &mut Vec<Node<MemIo>>,
    worlds: &mut Vec<Recorder>,
    scrub_bytes_per_tick: u64,
) -> (Node<MemIo>, Recorder) {
    restart_the_last_with_a_rotten_partition_log_as(nodes, worlds, scrub_bytes_per_tick, PartitionLogConfig::default())
}

/// `restart_the_last_with_a_rotten_partition_log_scrubbing`, the restarted
/// node's partition log opened with `log_config` (its segment size: where
/// a state-transfer fill's parts end).
fn restart_the_last_with_a_rotten_partition_log_as(
    nodes: &mut Vec<Node<MemIo>>,
    worlds: &mut Vec<Recorder>,
    scrub_bytes_per_tick: u64,
    log_config: PartitionLogConfig,
) -> (Node<MemIo>, Recorder) {
    use shoal_shard::node::partition_dir;
    use shoal_shard::partition_log::{SEGMENT_HEADER_SIZE_BYTES, segment_file_name};

    const REPLICAS: u8 = 3;
    assert_eq!(nodes.len(), usize::from(REPLICAS));
    let io = nodes[2].io().clone();
    drop(nodes.pop());
    worlds.pop();
    let data_dir = Path::new("/data");
    let segment = partition_dir(data_dir, namespace()).join(segment_file_name(0));
    let mut bytes = io.file_bytes(&segment);
    bytes[SEGMENT_HEADER_SIZE_BYTES as usize + 30] ^= 1;
    io.set_file_bytes(&segment, bytes);
    let (storage, recovered) =
        block_on(GroupStorage::open(&io, data_dir, storage_config(2))).expect("the journal opens");
    let (machine, _salvage) =
        block_on(GroupMachine::open_in_cluster(&io, data_dir, namespace(), REPLICAS, log_config)).expect("salvaged");
    let replica = Replica::open(replica_config(2, REPLICAS), machine, recovered).expect("the checkpoint reads");
    let group = Group::new(namespace(), ShardId(0), storage, replica);
    let mut restarted = node_scrubbing(io, group, 2, REPLICAS, scrub_bytes_per_tick);
    let mut world = Recorder { draw_first: true, ..Recorder::default() };
    block_on(restarted.start(&mut world)).expect("runs");
    (restarted, world)
}

/// Three replicas commit past a checkpoint; replica 2 loses its partition
/// log (its first record rots, so the salvage keeps nothing) and restarts:
/// its checkpoint counts offsets the log no longer holds, which it must
/// fetch from a peer. Its draws always favour the same peer (replica 0),
/// which holds nothing for it (its answers are lost). The next request must
/// go to the other peer, replica 1, and that one fills the gap: a replica
/// that kept asking a peer that brings nothing would wait as long as its
/// draws favour that peer (swarm seed 1329).
#[test]
fn a_replica_whose_state_data_request_brought_nothing_asks_another_peer_next() {
    let (mut nodes, mut worlds, session) = three_registered_replicas();
    let appends = CHECKPOINT_INTERVAL_OPS + 4;
    for request in 1..=appends {
        let message = format!("message-{request}");
        let append = batch_request(session, request, &[message.as_bytes()]);
        block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), append, &mut worlds[0])).expect("runs");
        deliver_all(&mut nodes, &mut worlds);
    }
    // A commit heartbeat tells the backups the last ops committed.
    for tick in 1..=shoal_vsr::replica::COMMIT_HEARTBEAT_TICKS {
        block_on(nodes[0].tick(tick * 10_000_000, &mut worlds[0])).expect("runs");
    }
    deliver_all(&mut nodes, &mut worlds);
    let committed = nodes[2].group(0).replica().commit_min();
    assert!(committed > CHECKPOINT_INTERVAL_OPS, "replica 2 committed past a checkpoint: {committed}");

    // Replica 2 stops; the first record of its partition log rots.
    let (mut restarted, mut world) = restart_the_last_with_a_rotten_partition_log(&mut nodes, &mut worlds);
    let missing = restarted.group(0).replica().state_machine().missing().expect("the salvage lost offsets");
    assert_eq!(missing.start, 0, "nothing of the log was kept");

    let asked = |world: &mut Recorder| -> Vec<u8> {
        std::mem::take(&mut world.to_replicas)
            .into_iter()
            .filter(|(_, m)| m.header.command == Command::RequestStateData)
            .map(|(to, m)| {
                assert_eq!(m.header.context, missing.start, "it asks from its first missing offset");
                to
            })
            .collect()
    };
    let tick_ns = 10_000_000;
    block_on(restarted.tick(tick_ns, &mut world)).expect("runs");
    assert_eq!(asked(&mut world), [0], "its draws favour replica 0");
    // Replica 0's answer is lost: nothing arrived. The next request goes to
    // replica 1, and the draw still favours the first candidate.
    block_on(restarted.tick(2 * tick_ns, &mut world)).expect("runs");
    assert_eq!(asked(&mut world), [1], "a peer that brought nothing is not asked again next");
    // Replica 1 answers; the gap fills from its log.
    let mut request_header = Header::new(Command::RequestStateData, CLUSTER);
    request_header.namespace = namespace();
    request_header.replica = 2;
    request_header.context = missing.start;
    request_header.request = missing.end - missing.start;
    block_on(nodes[1].on_frame(Source::Replica(2), ShardId(0), Message::empty(request_header), &mut worlds[1]))
        .expect("runs");
    let answers: Vec<Message> = std::mem::take(&mut worlds[1].to_replicas)
        .into_iter()
        .filter(|(to, m)| *to == 2 && m.header.command == Command::StateData)
        .map(|(_, m)| m)
        .collect();
    assert!(!answers.is_empty(), "replica 1 holds the missing offsets");
    for answer in answers {
        block_on(restarted.on_frame(Source::Replica(1), ShardId(0), answer, &mut world)).expect("runs");
    }
    let still_missing = restarted.group(0).replica().state_machine().missing();
    assert!(
        still_missing.as_ref().is_none_or(|range| range.start > missing.start),
        "the gap filled: {still_missing:?}"
    );
}

/// A gap of several batches fills at the pace of round trips, not ticks:
/// once the range it asked for has arrived, the replica asks the same peer
/// for the next one at once (swarm seed 35226: one batch of
/// `STATE_DATA_MESSAGES_MAX` per 10 ms tick left a gap of 9,000 offsets
/// open past the 2 s the liveness checker allows after a heal).
#[test]
fn a_replica_filling_a_long_gap_asks_the_next_batch_when_one_arrives() {
    use shoal_shard::node::STATE_DATA_MESSAGES_MAX;

    const MESSAGES_PER_APPEND: usize = 12;
    let (mut nodes, mut worlds) = (Vec::new(), Vec::new());
    three_replicas_past_a_checkpoint_in_batches_of(&mut nodes, &mut worlds, MESSAGES_PER_APPEND);

    let (mut restarted, mut world) = restart_the_last_with_a_rotten_partition_log(&mut nodes, &mut worlds);
    let missing = restarted.group(0).replica().state_machine().missing().expect("the salvage lost offsets");
    assert!(missing.end - missing.start > 2 * STATE_DATA_MESSAGES_MAX, "a gap of more than two batches: {missing:?}");

    // One tick: one request, to replica 0 (the draws favour it).
    block_on(restarted.tick(10_000_000, &mut world)).expect("runs");
    let mut requests_sent = 0;
    let mut rounds = 0;
    loop {
        let requests: Vec<Message> = std::mem::take(&mut world.to_replicas)
            .into_iter()
            .filter(|(to, m)| *to == 0 && m.header.command == Command::RequestStateData)
            .map(|(_, m)| m)
            .collect();
        if requests.is_empty() {
            break;
        }
        assert_eq!(requests.len(), 1, "one request in flight");
        requests_sent += 1;
        rounds += 1;
        assert!(rounds <= 100, "the gap keeps being asked for");
        block_on(nodes[0].on_frame(Source::Replica(2), ShardId(0), requests[0].clone(), &mut worlds[0])).expect("runs");
        let answers: Vec<Message> = std::mem::take(&mut worlds[0].to_replicas)
            .into_iter()
            .filter(|(to, m)| *to == 2 && m.header.command == Command::StateData)
            .map(|(_, m)| m)
            .collect();
        for answer in answers {
            block_on(restarted.on_frame(Source::Replica(0), ShardId(0), answer, &mut world)).expect("runs");
        }
    }
    assert_eq!(restarted.group(0).replica().state_machine().missing(), None, "the gap filled without another tick");
    let batches = (missing.end - missing.start).div_ceil(STATE_DATA_MESSAGES_MAX);
    assert_eq!(requests_sent, batches, "one request per batch, each sent when the one before arrived");
}

/// A refill on a slow disk leaves the node time every tick: once a tick's
/// fill parts have held the node `FILL_TICK_BUDGET_NS`, the rest waits for
/// the next tick, and over the refill it takes at most half the node's time
/// (swarm seed 7888, session 34: four parts per group per tick, each a
/// segment's appends and its roll's two fsyncs, held a rejoined replica's
/// process 130 ms of every 10 ms tick; seed 29189: one 30 ms part per
/// tick kept it busy from tick to tick). Here each fsync costs 4 ms and a
/// part ends at each 8 KiB segment roll: at most one part per tick.
#[test]
fn a_refill_on_a_slow_disk_takes_one_part_per_tick_past_its_time_budget() {
    const MESSAGES_PER_APPEND: usize = 4;
    const PADDING_BYTES: usize = 800;
    const SYNC_COST_NS: u64 = 4_000_000;
    let (mut nodes, mut worlds) = (Vec::new(), Vec::new());
    three_replicas_past_a_checkpoint_padded(&mut nodes, &mut worlds, MESSAGES_PER_APPEND, PADDING_BYTES);
    let small_segments = PartitionLogConfig { segment_size_max_bytes: 8 * 1024 };
    let (mut restarted, mut world) =
        restart_the_last_with_a_rotten_partition_log_as(&mut nodes, &mut worlds, 0, small_segments);
    assert!(restarted.group(0).replica().state_machine().missing().is_some(), "the salvage left a gap");
    restarted.io().set_sync_cost_ns(SYNC_COST_NS);
    shoal_vsr::marks::take();
    // Ticks ask for the gap and append the fill's parts; the answers come
    // between ticks. What each tick syncs is the parts it appended.
    let mut now_ns = 10 * TICK_NS;
    let mut syncs_per_tick = Vec::new();
    for _ in 0..64 {
        if restarted.group(0).replica().state_machine().missing().is_none() {
            break;
        }
        let syncs_before = restarted.io().sync_count();
        now_ns += TICK_NS;
        restarted.io().advance_ns(TICK_NS);
        block_on(restarted.tick(now_ns, &mut world)).expect("runs");
        syncs_per_tick.push(restarted.io().sync_count() - syncs_before);
        for (to, request) in std::mem::take(&mut world.to_replicas) {
            if request.header.command != Command::RequestStateData {
                continue;
            }
            let peer = usize::from(to);
            block_on(nodes[peer].on_frame(Source::Replica(2), ShardId(0), request, &mut worlds[peer])).expect("runs");
            for (to, answer) in std::mem::take(&mut worlds[peer].to_replicas) {
                if to == 2 && answer.header.command == Command::StateData {
                    block_on(restarted.on_frame(Source::Replica(peer as u8), ShardId(0), answer, &mut world))
                        .expect("runs");
                }
            }
        }
    }
    assert_eq!(restarted.group(0).replica().state_machine().missing(), None, "the refill ended: {syncs_per_tick:?}");
    let appending_ticks = syncs_per_tick.iter().filter(|&&syncs| syncs > 0).count();
    assert!(appending_ticks >= 3, "a refill of several ticks: {syncs_per_tick:?}");
    // One part per tick (at most one roll: the sealed records' fsync, the
    // sealing marker's, the new segment's), not four; the last part adds
    // the two that make the log durable (records, marker).
    let (last, before_last) = syncs_per_tick.split_last().expect("ticks ran");
    assert!(before_last.iter().all(|&syncs| syncs <= 3) && *last <= 3 + 2, "one part per tick: {syncs_per_tick:?}");
    let spent = shoal_vsr::marks::take().get(shoal_vsr::marks::FILL_TICK_BUDGET_SPENT).copied().unwrap_or(0);
    assert!(spent > 0, "the budget ended a tick's parts");
}

/// A state data answer that arrives once the gap is filled (the second
/// frame of an answer, a duplicate, or a peer's late answer) changes
/// nothing and costs no fsync. Found by the simulator (the swarm-90 shrink
/// with the scrubber off, session 34, Liveness: replica 2 one op behind its
/// primary for 0.66 s): every such answer ran a partition-log fsync inside
/// the node's turn (37 of them, 337 ms of replica 2's node on a slow disk),
/// while the group's compaction beside the node, and with it every
/// acknowledgement of the group, waited for the node.
#[test]
fn a_state_data_answer_after_the_gap_is_filled_costs_no_fsync() {
    let (mut nodes, mut worlds) = (Vec::new(), Vec::new());
    three_replicas_past_a_checkpoint(&mut nodes, &mut worlds);
    let (restarted, world) = restart_the_last_with_a_rotten_partition_log(&mut nodes, &mut worlds);
    nodes.push(restarted);
    worlds.push(world);
    assert!(nodes[2].group(0).replica().state_machine().missing().is_some(), "the salvage left a gap");
    // Fill the gap, keeping a copy of every state data answer R2 got.
    let answers = std::cell::RefCell::new(Vec::new());
    let mut now_ns = 10 * TICK_NS;
    for _ in 0..2 * shoal_vsr::replica::REPAIR_TICKS {
        now_ns += TICK_NS;
        for (node, world) in nodes.iter_mut().zip(worlds.iter_mut()) {
            block_on(node.tick(now_ns, world)).expect("runs");
        }
        deliver_completing(&mut nodes, &mut worlds, |_, to, message| {
            if to == 2 && message.header.command == Command::StateData {
                answers.borrow_mut().push(message.clone());
            }
            false
        });
    }
    assert_eq!(nodes[2].group(0).replica().state_machine().missing(), None, "the gap filled");
    let late_answer = answers.borrow().first().cloned().expect("R2 was answered");

    // A new append leaves R2's partition log written and not synced (the
    // journal is the write-ahead log).
    block_on(nodes[0].on_frame(Source::Client(CLIENT + 1), ShardId(0), register_client(CLIENT + 1), &mut worlds[0]))
        .expect("runs");
    deliver_all(&mut nodes, &mut worlds);
    let session = worlds[0].replies.pop().expect("registered").header.context;
    let append = client_batch_request(CLIENT + 1, session, 1, &[b"after-the-fill"]);
    block_on(nodes[0].on_frame(Source::Client(CLIENT + 1), ShardId(0), append, &mut worlds[0])).expect("runs");
    deliver_all(&mut nodes, &mut worlds);
    // The primary's commit heartbeat tells R2 the append committed.
    run_ticks(&mut nodes, &mut worlds, &mut now_ns, 2 * shoal_vsr::replica::REPAIR_TICKS);
    let commit = nodes[2].group(0).replica().commit_min();
    assert_eq!(nodes[0].group(0).replica().commit_min(), commit, "R2 applied the append");

    let syncs_before = nodes[2].io().sync_count();
    block_on(nodes[2].on_frame(Source::Replica(0), ShardId(0), late_answer, &mut worlds[2])).expect("runs");
    assert_eq!(nodes[2].io().sync_count(), syncs_before, "a late answer fsyncs nothing");
    assert_eq!(nodes[2].group(0).replica().state_machine().missing(), None);
    assert_eq!(nodes[2].group(0).replica().commit_min(), commit, "and changes nothing");
}

/// A replica refilling its partition log from peers (after a salvage or a
/// state transfer) does that first: its scrubber reads nothing until the
/// gap is filled, then goes on (swarm seed 90, session 33: a replica
/// refilling several groups lagged its primary past the simulator's bound
/// with the scrubber on, and kept up with it off).
#[test]
fn the_scrubber_waits_while_a_group_refills_its_log_from_peers() {
    const SCRUB_BYTES_PER_TICK: u64 = 64;
    const TICKS_LOST: u64 = 6;
    let (mut nodes, mut worlds) = (Vec::new(), Vec::new());
    three_replicas_past_a_checkpoint(&mut nodes, &mut worlds);
    let (restarted, world) =
        restart_the_last_with_a_rotten_partition_log_scrubbing(&mut nodes, &mut worlds, SCRUB_BYTES_PER_TICK);
    nodes.push(restarted);
    worlds.push(world);
    let refilling = |node: &Node<MemIo>| node.group(0).replica().state_machine().missing().is_some();
    assert!(refilling(&nodes[2]), "the salvage left a gap only peers can fill");
    shoal_vsr::marks::take();
    let mut now_ns = 10 * TICK_NS;
    // The peers' state data is lost for the first ticks, so the gap stays
    // open across ticks: the scrubber must not read meanwhile.
    for _ in 0..TICKS_LOST {
        let passes_before = nodes[2].group(0).scrub_passes_completed();
        now_ns += TICK_NS;
        for (node, world) in nodes.iter_mut().zip(worlds.iter_mut()) {
            block_on(node.tick(now_ns, world)).expect("runs");
        }
        deliver_completing(&mut nodes, &mut worlds, |_, to, message| {
            to == 2 && message.header.command == Command::StateData
        });
        assert!(refilling(&nodes[2]), "nothing arrived to fill the gap");
        assert_eq!(nodes[2].group(0).scrub_passes_completed(), passes_before, "no scrub while refilling");
    }
    let paused = shoal_vsr::marks::take().get(shoal_vsr::marks::PARTITION_SCRUB_PAUSED_FOR_FILL).copied();
    assert_eq!(paused, Some(TICKS_LOST), "the scrubber paused at every tick of the refill");
    // The answers arrive: the gap fills and the scrubber goes on.
    run_ticks(&mut nodes, &mut worlds, &mut now_ns, 2 * shoal_vsr::replica::REPAIR_TICKS);
    assert!(!refilling(&nodes[2]), "the gap filled");
    let passes_before = nodes[2].group(0).scrub_passes_completed();
    run_ticks(&mut nodes, &mut worlds, &mut now_ns, 64);
    assert!(nodes[2].group(0).scrub_passes_completed() > passes_before, "the scrubber went on once the log was whole");
}

/// Three replicas; the client registers and appends 4 messages more than
/// `CHECKPOINT_INTERVAL_OPS`, each committed everywhere (a commit heartbeat
/// tells the backups of the last ones), so every replica checkpointed once.
/// Returns the appended messages in order.
fn three_replicas_past_a_checkpoint(nodes: &mut Vec<Node<MemIo>>, worlds: &mut Vec<Recorder>) -> Vec<Vec<u8>> {
    three_replicas_past_a_checkpoint_in_batches_of(nodes, worlds, 1)
}

/// `three_replicas_past_a_checkpoint`, each append a batch of
/// `messages_per_append` messages (the first of each is `message-{request}`).
fn three_replicas_past_a_checkpoint_in_batches_of(
    nodes: &mut Vec<Node<MemIo>>,
    worlds: &mut Vec<Recorder>,
    messages_per_append: usize,
) -> Vec<Vec<u8>> {
    three_replicas_past_a_checkpoint_padded(nodes, worlds, messages_per_append, 0)
}

/// `three_replicas_past_a_checkpoint_in_batches_of`, each message padded
/// with `padding_bytes` bytes after its name.
fn three_replicas_past_a_checkpoint_padded(
    nodes: &mut Vec<Node<MemIo>>,
    worlds: &mut Vec<Recorder>,
    messages_per_append: usize,
    padding_bytes: usize,
) -> Vec<Vec<u8>> {
    const REPLICAS: u8 = 3;
    *nodes = (0..REPLICAS).map(|r| node_of(r, REPLICAS)).collect();
    *worlds = (0..REPLICAS).map(|_| Recorder::default()).collect();
    block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), register(), &mut worlds[0])).expect("runs");
    deliver_all(nodes, worlds);
    let session = worlds[0].replies.pop().expect("the register was answered").header.context;
    let mut messages = Vec::new();
    for request in 1..=CHECKPOINT_INTERVAL_OPS + 4 {
        let batch: Vec<Vec<u8>> = (0..messages_per_append)
            .map(|i| if i == 0 { format!("message-{request}") } else { format!("message-{request}-{i}") }.into_bytes())
            .map(|mut message| {
                message.resize(message.len() + padding_bytes, b'.');
                message
            })
            .collect();
        let slices: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let append = batch_request(session, request, &slices);
        block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), append, &mut worlds[0])).expect("runs");
        deliver_all(nodes, worlds);
        messages.extend(batch);
    }
    for tick in 1..=shoal_vsr::replica::COMMIT_HEARTBEAT_TICKS {
        block_on(nodes[0].tick(tick * TICK_NS, &mut worlds[0])).expect("runs");
    }
    deliver_all(nodes, worlds);
    for node in nodes.iter() {
        let replica = node.group(0).replica();
        assert_eq!(replica.commit_min(), CHECKPOINT_INTERVAL_OPS + 5, "every append committed everywhere");
        assert_eq!(replica.checkpoint_op(), CHECKPOINT_INTERVAL_OPS, "and checkpointed once");
    }
    messages
}

/// The node's clock in these stories: one replica tick per call.
const TICK_NS: u64 = 10_000_000;

/// Tick every node `ticks` times from `*now_ns`, delivering what they send
/// after each round.
fn run_ticks(nodes: &mut [Node<MemIo>], worlds: &mut [Recorder], now_ns: &mut u64, ticks: u64) {
    for _ in 0..ticks {
        *now_ns += TICK_NS;
        for (node, world) in nodes.iter_mut().zip(worlds.iter_mut()) {
            block_on(node.tick(*now_ns, world)).expect("runs");
        }
        deliver_all(nodes, worlds);
    }
}

/// Flip one byte inside each of the two copies of a group file: the
/// checkpoint's (each copy half the file) or the superblock's.
fn rot_both_copies(io: &MemIo, path: &Path, offsets: [usize; 2]) {
    let mut bytes = io.file_bytes(path);
    for offset in offsets {
        bytes[offset] ^= 0x10;
    }
    io.set_file_bytes(path, bytes);
}

/// Replica 2 of three restarts after `rot` damaged its disk, and must come
/// back through the cluster: it starts rejoining (it sends no prepare_ok,
/// vote or reply until a start_view of the cluster's view is installed),
/// then catches up by state transfer and repair to the very state its peers
/// hold, and serves the same partition messages.
/// `keeps_view`: its superblock survived, so it still honours the view it
/// promised; otherwise it forgot it (view 0) as a wiped replica does.
fn a_replica_restarts_through_its_peers_after(keeps_view: bool, rot: impl FnOnce(&MemIo, &Path)) {
    const REPLICAS: u8 = 3;
    let (mut nodes, mut worlds) = (Vec::new(), Vec::new());
    let messages = three_replicas_past_a_checkpoint(&mut nodes, &mut worlds);
    let view_before = nodes[2].group(0).replica().view();

    // Replica 2 stops; the damage happens while it is down.
    let io = nodes[2].io().clone();
    drop(nodes.pop());
    worlds.pop();
    let data_dir = Path::new("/data");
    rot(&io, data_dir);

    // It starts: the damaged group is formatted again, rejoining.
    let (storage, recovered, damage) =
        block_on(GroupStorage::open_or_rejoin(&io, data_dir, storage_config(2), REPLICAS)).expect("it starts");
    assert!(damage.is_some(), "the damage is reported");
    assert!(recovered.durable.rejoining && recovered.checkpoint.is_none() && recovered.entries.is_empty());
    assert_eq!(recovered.durable.view, if keeps_view { view_before } else { 0 });
    let (machine, _salvage) =
        block_on(GroupMachine::open_in_cluster(&io, data_dir, namespace(), REPLICAS, PartitionLogConfig::default()))
            .expect("opens");
    let replica = Replica::open(replica_config(2, REPLICAS), machine, recovered).expect("nothing to restore");
    assert_eq!(replica.status(), shoal_vsr::replica::Status::Recovering);
    nodes.push(node_over(io, Group::new(namespace(), ShardId(0), storage, replica), 2, REPLICAS));
    worlds.push(Recorder::default());
    block_on(nodes[2].start(&mut worlds[2])).expect("runs");

    // Its probes bring the view from a quorum of peers, then the start_view.
    let mut now_ns = 10 * TICK_NS;
    run_ticks(&mut nodes, &mut worlds, &mut now_ns, 4 * shoal_vsr::replica::VIEW_CHANGE_RETRY_TICKS);
    let events = &worlds[2].events;
    let installed = position(events, "durable write_superblock op 0");
    for vote in ["send PrepareOk", "send StartViewChange", "send DoViewChange", "reply"] {
        let early = events[..installed].iter().find(|e| e.starts_with(vote));
        assert!(early.is_none(), "{vote} before the rejoin: {events:#?}");
    }
    let (primary, rejoined) = (nodes[0].group(0).replica(), nodes[2].group(0).replica());
    assert!(!rejoined.is_rejoining(), "rejoined");
    assert_eq!(rejoined.status(), shoal_vsr::replica::Status::Normal);
    assert_eq!(rejoined.view(), primary.view());
    assert_eq!(rejoined.commit_min(), primary.commit_min(), "caught up through its peers");
    for op in primary.checkpoint_op() + 1..=primary.op() {
        assert_eq!(rejoined.header(op).map(|h| h.checksum), primary.header(op).map(|h| h.checksum));
    }
    assert!(rejoined.stats().state_transfers > 0, "the lost checkpoint came from a peer");
    // The partition log it kept agrees with what the cluster committed.
    let served = block_on(rejoined.state_machine().read(0, messages.len() + 1));
    let served: Vec<Vec<u8>> = served.into_iter().map(|(_, m)| m).collect();
    assert_eq!(served, messages);
}

/// Both checkpoint copies rot (swarm seed 37515; disk-rot seed 537 once the
/// simulator could rot the last copy): the replica used to refuse to start.
/// Its superblock is good, so it keeps its promises (the view it voted for,
/// its nack floor) while it rebuilds the rest from its peers.
#[test]
fn a_replica_whose_both_checkpoint_copies_rotted_rejoins_through_its_peers() {
    use shoal_vsr::checkpoint::checkpoint_path;
    a_replica_restarts_through_its_peers_after(true, |io, data_dir| {
        let path = checkpoint_path(data_dir, namespace());
        let copy_size_bytes = io.file_bytes(&path).len() / 2;
        rot_both_copies(io, &path, [100, copy_size_bytes + 100]);
        assert!(block_on(GroupStorage::open(io, data_dir, storage_config(2))).is_err(), "no copy is readable");
    });
}

/// Both superblock copies rot (disk-rot seed 115): every promise the replica
/// made is lost with them, exactly as with a wiped disk, and it rejoins.
#[test]
fn a_replica_whose_both_superblock_copies_rotted_rejoins_through_its_peers() {
    use shoal_vsr::superblock::{superblock_copy_offset, superblock_path};
    a_replica_restarts_through_its_peers_after(false, |io, data_dir| {
        let path = superblock_path(data_dir, namespace());
        let offsets = [superblock_copy_offset(0) as usize + 50, superblock_copy_offset(1) as usize + 50];
        rot_both_copies(io, &path, offsets);
        assert!(block_on(GroupStorage::open(io, data_dir, storage_config(2))).is_err(), "no copy is readable");
    });
}

/// Complete `node`'s flushes and checkpoints until none runs (none of its
/// fsyncs is held).
fn complete_all_flushes(node: &mut Node<MemIo>, world: &mut Recorder) {
    complete_ended_flushes(node, world);
    assert!(!node.flushes_in_flight(), "a flush or checkpoint still runs: its fsync is held");
}

/// Flushes beside the node, told step by step: while a flush's fsync
/// runs, the node goes on. The
/// primary takes a second append and sends its prepare at once; the backup
/// holds its prepare_ok until its own fsync ended; the primary counts the
/// backup's vote while its own fsync still runs, and replies only once that
/// fsync ended (with two replicas its own vote is part of every quorum). Nothing that promises a prepare leaves while the fsync that
/// makes it durable runs (the ordering contract; `execute` asserts it too).
#[test]
fn overlapped_flushes_hold_what_promises_a_running_fsync_and_count_votes_meanwhile() {
    let (mut nodes, mut worlds, sessions) = two_nodes_with_two_registered_clients();
    for node in &mut nodes {
        node.io().hold_syncs(true);
    }
    let mut seen = 0;
    // The primary's first append: its flush starts and its fsync runs.
    let first = prepare_of_one_append(&mut nodes, &mut worlds, 0, sessions[0]);
    assert_eq!(first.header.op, 3);
    assert!(nodes[0].flushes_in_flight(), "the primary's fsync of op 3 runs");
    let primary_syncs = nodes[0].io().sync_count();
    // A second append meanwhile, outside a turn: prepared and sent at once,
    // staged for the next flush (no second fsync beside the first).
    let append = client_batch_request(CLIENT + 1, sessions[1], 1, &[b"n"]);
    block_on(nodes[0].on_frame(Source::Client(CLIENT + 1), ShardId(0), append, &mut worlds[0])).expect("runs");
    let (_, second) = worlds[0].to_replicas.pop().expect("op 4's prepare left during op 3's fsync");
    assert_eq!((second.header.command, second.header.op), (Command::Prepare, 4));
    assert_eq!(nodes[0].group(0).prepares_unflushed(), 2, "op 3 in the running flush, op 4 staged");

    // The backup takes op 3; its fsync runs: no prepare_ok yet.
    block_on(nodes[1].on_frame(Source::Replica(0), ShardId(0), first, &mut worlds[1])).expect("runs");
    assert!(nodes[1].flushes_in_flight());
    // Polling a running fsync completes nothing: nothing it promises leaves.
    for _ in 0..2 {
        block_on(nodes[1].complete_flushes(&mut worlds[1])).expect("runs");
    }
    assert!(nodes[1].flushes_in_flight(), "the held fsync still runs");
    assert_eq!(prepare_oks(&mut worlds[1], &mut seen), Vec::<u64>::new(), "op 3 is not durable on the backup");
    // Even after op 3's own fsync ends, its ring copy needs one more.
    nodes[1].io().hold_syncs(false);
    block_on(nodes[1].complete_flushes(&mut worlds[1])).expect("runs");
    assert!(nodes[1].flushes_in_flight(), "the ring copy's flush started at the completion");
    assert_eq!(prepare_oks(&mut worlds[1], &mut seen), Vec::<u64>::new(), "op 3's ring copy is not durable yet");
    complete_all_flushes(&mut nodes[1], &mut worlds[1]);
    assert_eq!(prepare_oks(&mut worlds[1], &mut seen), [3], "op 3 durable with its copy: its prepare_ok leaves");

    // The primary counts the backup's vote while its own fsync runs.
    let (_, ok) = worlds[1].to_replicas.pop().expect("the backup's prepare_ok");
    seen -= 1;
    block_on(nodes[0].on_frame(Source::Replica(1), ShardId(0), ok, &mut worlds[0])).expect("runs");
    for _ in 0..2 {
        block_on(nodes[0].complete_flushes(&mut worlds[0])).expect("runs");
    }
    assert!(worlds[0].replies.is_empty(), "no reply before the primary's own copy is durable");
    assert_eq!(nodes[0].group(0).replica().commit_min(), 2);
    assert_eq!(nodes[0].io().sync_count(), primary_syncs, "the primary's fsync still runs");
    nodes[0].io().hold_syncs(false);
    complete_all_flushes(&mut nodes[0], &mut worlds[0]);
    assert_eq!(nodes[0].group(0).replica().commit_min(), 3, "op 3 committed once the primary's fsync ended");
    let primary = &worlds[0].events;
    assert!(position(primary, "durable write_prepare op 3") < position(primary, "reply op 3"));
    assert!(position(primary, "durable write_prepare op 4") > position(primary, "reply op 3"));
    block_on(nodes[1].on_frame(Source::Replica(0), ShardId(0), second, &mut worlds[1])).expect("runs");
    complete_all_flushes(&mut nodes[1], &mut worlds[1]);
    assert_eq!(prepare_oks(&mut worlds[1], &mut seen), [4]);
    deliver_all(&mut nodes, &mut worlds);
    complete_all_flushes(&mut nodes[0], &mut worlds[0]);
    assert_eq!(nodes[0].group(0).replica().commit_min(), 4, "both appends committed");
}

/// With three replicas a reply answers a committed op, and two backups'
/// durable votes commit it: the reply leaves while the primary's own fsync
/// of that op still runs. A reply promises nothing of the primary's disk
/// (`Promise`); waiting for it put the primary's fsync tail on every reply
/// (README, session 12: a traced append waited 315 ms on it while both
/// backups had answered by 146 ms). With two replicas the primary's vote
/// is part of every quorum, so there the reply still follows its fsync
/// (`overlapped_flushes_hold_what_promises_a_running_fsync_and_count_votes_meanwhile`).
#[test]
fn with_three_replicas_the_reply_leaves_on_the_backups_votes_while_the_primarys_fsync_runs() {
    let mut nodes = [node_of(0, 3), node_of(1, 3), node_of(2, 3)];
    let mut worlds = [Recorder::default(), Recorder::default(), Recorder::default()];
    block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), register(), &mut worlds[0])).expect("runs");
    deliver_all(&mut nodes, &mut worlds);
    let session = worlds[0].replies.pop().expect("the register was answered").header.context;
    nodes[0].io().hold_syncs(true);
    let prepare = prepare_of_one_append(&mut nodes, &mut worlds, 0, session);
    let op = prepare.header.op;
    assert!(nodes[0].flushes_in_flight(), "the primary's fsync of op {op} runs");
    for backup in 1..3 {
        let world = &mut worlds[backup];
        block_on(nodes[backup].on_frame(Source::Replica(0), ShardId(0), prepare.clone(), world)).expect("runs");
        complete_all_flushes(&mut nodes[backup], world);
    }
    for backup in 1..3u8 {
        for (to, message) in std::mem::take(&mut worlds[usize::from(backup)].to_replicas) {
            if to == 0 && message.header.command == Command::PrepareOk {
                block_on(nodes[0].on_frame(Source::Replica(backup), ShardId(0), message, &mut worlds[0]))
                    .expect("runs");
            }
        }
    }
    block_on(nodes[0].complete_flushes(&mut worlds[0])).expect("runs");
    assert!(nodes[0].flushes_in_flight(), "the primary's own fsync still runs");
    assert_eq!(nodes[0].group(0).replica().commit_min(), op, "the two backups' votes committed it");
    let replies: Vec<u64> = worlds[0].replies.iter().map(|m| m.header.op).collect();
    assert_eq!(replies, [op], "the reply left before the primary's own fsync ended");
    let durable_event = format!("durable write_prepare op {op}");
    assert!(!worlds[0].events.contains(&durable_event), "op {op} is not durable on the primary yet");
    nodes[0].io().hold_syncs(false);
    complete_all_flushes(&mut nodes[0], &mut worlds[0]);
    assert!(worlds[0].events.contains(&durable_event), "and then it is");
}

/// The guard `prepare_restaged_during_fsync`, which no sweep reaches (a
/// newer prepare of an op must arrive in the window of one fsync of the
/// old one's ring copy): op 3's first prepare is written and made
/// durable, and the fsync of its ring copy begins; a newer prepare of op 3
/// (another primary's) is staged while that fsync runs. The fsync's end
/// completes the old write, which promises nothing now: op 3 is not reported durable, no prepare_ok
/// for either checksum may leave, and only the next flushes, which write
/// the newer prepare, make it durable.
#[test]
fn a_prepare_staged_again_while_its_old_write_is_fsynced_is_not_durable_by_that_fsync() {
    // Two clusters that agree up to op 2 and put different appends at op 3.
    let (mut nodes, mut worlds, sessions) = two_nodes_with_two_registered_clients();
    let old = prepare_of_one_append(&mut nodes, &mut worlds, 0, sessions[0]);
    let (mut nodes, mut worlds, sessions) = two_nodes_with_two_registered_clients();
    let newer = prepare_of_one_append(&mut nodes, &mut worlds, 1, sessions[1]);
    assert_eq!((old.header.op, newer.header.op), (3, 3));
    assert_ne!(old.header.checksum, newer.header.checksum);
    let promise =
        |m: &Message| Promise::Prepare { op: m.header.op, checksum: m.header.checksum, prefix_from: m.header.op };

    let io = MemIo::default();
    let mut storage = block_on(GroupStorage::format(&io, Path::new("/data"), storage_config(1))).expect("format");
    // Ops 1 and 2, where the two clusters agree, durable first: an ok's
    // prefix takes the committed ops below it for durable.
    for op in 1..=2 {
        let (header, body) = block_on(nodes[0].group(0).storage().journal().read(op)).expect("in the journal");
        let message = Message::new(header, Rc::from(body));
        storage.stage_prepare(&message.header);
        block_on(storage.write_prepare(&message)).expect("writes");
    }
    block_on(storage.flush_prepares()).expect("ops 1 and 2 durable with their copies");
    storage.stage_prepare(&old.header);
    // The first flush makes the old prepare durable, its ring copy not yet.
    let in_flight = block_on(storage.begin_flush(&[&old])).expect("writes op 3");
    let synced = block_on(in_flight.syncer());
    assert!(storage.end_flush(in_flight, synced).expect("synced").is_empty(), "no ring copy yet");
    // The second writes its ring copy; the newer prepare arrives while that
    // fsync runs: staged, not written.
    let in_flight = block_on(storage.begin_flush(&[])).expect("writes op 3's ring copy");
    storage.stage_prepare(&newer.header);
    let synced = block_on(in_flight.syncer());
    shoal_vsr::marks::take();
    let durable = storage.end_flush(in_flight, synced).expect("the fsync succeeded");
    assert!(durable.is_empty(), "the old write's fsync reports nothing: {durable:?}");
    let marks = shoal_vsr::marks::take();
    assert_eq!(marks.get(shoal_vsr::marks::PREPARE_RESTAGED_DURING_FSYNC), Some(&1));
    assert!(storage.check_durable(promise(&old)).is_err(), "the old prepare is no longer promised");
    assert!(storage.check_durable(promise(&newer)).is_err(), "the newer one is not written yet");

    block_on(storage.write_prepare(&newer)).expect("writes op 3 again");
    let durable = block_on(storage.flush_prepares()).expect("syncs it with its ring copy");
    assert_eq!(durable, [(3, newer.header.checksum)]);
    assert_eq!(storage.check_durable(promise(&newer)), Ok(()));
    assert!(storage.check_durable(promise(&old)).is_err());
}

/// A prepare_ok promises its whole prefix (every op from the sender's
/// commit point + 1 up to it), not only its own prepare: the journal's gap
/// rule (`PrepareJournal::open_above`) cuts off an unknown slot above an
/// empty one, which is sound only if no acknowledged op ever sits above a
/// prefix op whose write was still in flight. Op 3 durable, op 2 staged
/// again (a repair's write, not yet flushed): an ok for op 3 from commit
/// point 1 waits for op 2's flush.
#[test]
fn a_prepare_ok_waits_for_every_op_of_its_prefix() {
    let (mut nodes, mut worlds, sessions) = two_nodes_with_two_registered_clients();
    let op_3 = prepare_of_one_append(&mut nodes, &mut worlds, 0, sessions[0]);
    let journal_op = |op: u64| {
        let (header, body) = block_on(nodes[0].group(0).storage().journal().read(op)).expect("in the journal");
        Message::new(header, Rc::from(body))
    };
    let (op_1, op_2) = (journal_op(1), journal_op(2));
    let io = MemIo::default();
    let mut storage = block_on(GroupStorage::format(&io, Path::new("/data"), storage_config(1))).expect("format");
    // Op 1, the sender's commit point, is durable too: an ok's prefix takes
    // the committed ops below it for durable (`check_durable`).
    for message in [&op_1, &op_2, &op_3] {
        storage.stage_prepare(&message.header);
        block_on(storage.write_prepare(message)).expect("writes");
    }
    block_on(storage.flush_prepares()).expect("ops 2 and 3 durable with their copies");
    let ok = |prefix_from| Promise::Prepare { op: 3, checksum: op_3.header.checksum, prefix_from };
    assert_eq!(storage.check_durable(ok(2)), Ok(()));

    storage.stage_prepare(&op_2.header);
    block_on(storage.write_prepare(&op_2)).expect("op 2 written again");
    // Its prefix starting at op 3 says op 2 is committed on the sender, and
    // committed ops below a prefix are promised durable too.
    let waits = storage.check_durable(ok(3)).expect_err("op 2, committed, is being written again");
    assert!(waits.contains("op 2"), "{waits}");
    assert_eq!(storage.check_durable(ok(9)), Ok(()), "an ok of an op below the commit point has no prefix");
    let waits = storage.check_durable(ok(2)).expect_err("op 2's write is not durable yet");
    assert!(waits.contains("op 2"), "{waits}");
    block_on(storage.flush_prepares()).expect("op 2 durable again");
    assert_eq!(storage.check_durable(ok(2)), Ok(()));
}

/// A checkpoint runs beside the node (session 16), told with one replica
/// whose partition log's fsyncs are held: the group goes on committing and
/// replying while the checkpoint's partition sync runs, what it applies
/// meanwhile waits in memory, and the checkpoint file is installed and the
/// journal compacted to it only once that sync ended. Before, the
/// partition log's two fsyncs, the file's and the directory's ran on the
/// commit path, and every checkpoint stalled the shard (`bench server`:
/// 6-15 ms per checkpoint on a fast disk, 35-150 ms on a slow one).
#[test]
fn a_checkpoint_runs_beside_the_commit_path_and_compacts_the_journal_at_its_end() {
    let (mut node, mut world, session) = one_replica(JOURNAL_SLOT_COUNT, CHECKPOINT_INTERVAL_OPS);
    let data_dir = Path::new("/data");
    node.io().hold_syncs_under(Some(&partition_dir(data_dir, namespace())));
    let next_request = append_until_a_checkpoint_runs(&mut node, &mut world, session);
    let checkpoint_op = node.group(0).replica().checkpoint_op();
    assert!(checkpoint_op >= CHECKPOINT_INTERVAL_OPS);
    assert_eq!(node.group(0).storage().journal().snapshot_op(), 0, "the journal keeps what it covers until its end");
    let io = node.io().clone();
    let installed = || block_on(read_checkpoint(&io, data_dir, namespace())).expect("readable");
    assert!(installed().is_none(), "no checkpoint file before the partition log holds what it counts");

    // The commit path goes on meanwhile.
    let replies_before = world.replies.len();
    for request in next_request..next_request + 5 {
        append_through_a_turn(&mut node, &mut world, session, request);
    }
    assert_eq!(world.replies.len(), replies_before + 5, "five more appends answered while it runs");
    let last_reply = world.replies.last().expect("replies").header.op;
    assert!(node.group(0).checkpoint_in_flight());
    assert!(node.group(0).replica().state_machine().pending_count() >= 5, "what it applied waits in memory");

    // The partition log's fsync ends: the checkpoint completes.
    node.io().hold_syncs_under(None);
    complete_all_flushes(&mut node, &mut world);
    assert!(!node.group(0).checkpoint_in_flight());
    assert_eq!(node.group(0).storage().journal().snapshot_op(), checkpoint_op, "the journal compacted to it");
    assert_eq!(installed().expect("installed").anchor.op, checkpoint_op);
    assert_eq!(node.group(0).replica().state_machine().pending_count(), 0, "and what waited is written");
    let events = &world.events;
    assert!(position(events, &format!("reply op {last_reply}")) < position(events, "durable checkpoint op 0"));
}

/// The journal's compaction is installed beside the commit path
/// (session 19), told with one replica whose compaction's directory fsync
/// is held: once the checkpoint is durable, the spare is written and takes
/// every journal write and fsync from then on (the retired file none: each
/// op is written once, session 24), the group goes on appending while the
/// spare's fsync, the exchange and the directory's fsync run, but answers
/// what it appended meanwhile only once the directory names the spare (a
/// crash before would recover the retired file, which lacks it); the spare
/// then is the journal and holds every op answered. Before session 19,
/// those two fsyncs and the exchange stalled the group at every
/// checkpoint; before session 24 every write and fsync of the window went
/// to both files (at batch 64 the journal reached 0.74 of a plain loop).
#[test]
fn a_compaction_is_installed_beside_the_commit_path_and_the_new_journal_holds_what_it_answered_meanwhile() {
    let (mut node, mut world, session) = one_replica(JOURNAL_SLOT_COUNT, CHECKPOINT_INTERVAL_OPS);
    let data_dir = Path::new("/data");
    node.io().hold_syncs_under(Some(&partition_dir(data_dir, namespace())));
    let next_request = append_until_a_checkpoint_runs(&mut node, &mut world, session);
    let checkpoint_op = node.group(0).replica().checkpoint_op();
    // The checkpoint file's install passes its directory fsync; the
    // compaction's waits.
    node.io().hold_dir_syncs_after(Some(1));
    node.io().hold_syncs_under(None);
    complete_ended_flushes(&mut node, &mut world);
    assert!(!node.group(0).checkpoint_in_flight(), "the checkpoint is durable");
    assert!(node.group(0).compaction_in_flight(), "its compaction is installed beside the node");
    assert_eq!(node.group(0).storage().journal().snapshot_op(), 0, "the journal keeps what it covers until then");

    // The commit path goes on meanwhile, into the spare alone; the reply
    // waits for the install (the session has one request in flight).
    shoal_vsr::marks::take();
    let replies_before = world.replies.len();
    let head_before = node.group(0).storage().journal().op_max().expect("ops");
    append_through_a_turn(&mut node, &mut world, session, next_request);
    assert_eq!(world.replies.len(), replies_before, "nothing appended in the window is answered before the install");
    assert_eq!(node.group(0).storage().journal().op_max(), Some(head_before + 1), "the append is written");
    assert!(node.group(0).storage().held_for_install(head_before + 1), "durable in the spare alone");
    let marks = shoal_vsr::marks::take();
    assert_eq!(marks.get(shoal_vsr::marks::COMPACTION_BESIDE_APPENDS), Some(&1));
    assert!(marks.get(shoal_vsr::marks::JOURNAL_WINDOW_WRITE).is_some_and(|&writes| writes >= 1));
    assert!(marks.get(shoal_vsr::marks::JOURNAL_WINDOW_ACK_HELD).is_some_and(|&flushes| flushes >= 1));
    assert!(node.group(0).compaction_in_flight());

    // The directory fsync ends: the spare is the journal, and the append
    // is answered.
    node.io().hold_dir_syncs_after(None);
    complete_all_flushes(&mut node, &mut world);
    assert_eq!(world.replies.len(), replies_before + 1, "the install's end answers it");
    let last_reply = world.replies.last().expect("replies").header.op;
    assert_eq!(last_reply, head_before + 1);
    assert!(!node.group(0).compaction_in_flight());
    assert_eq!(node.group(0).storage().journal().snapshot_op(), checkpoint_op, "the journal compacted to it");
    // What the file at the journal's path holds now, read as a restart would.
    let (reopened, recovery) =
        block_on(PrepareJournal::open(node.io(), data_dir, storage_config(0).journal(), OpenMode::ReadOnly))
            .expect("the compacted journal opens");
    assert_eq!(reopened.snapshot_op(), checkpoint_op);
    let answered: Vec<u64> = (checkpoint_op + 1..=last_reply).collect();
    assert!(
        answered.iter().all(|op| recovery.ops_recovered.contains(op)),
        "every op answered above the checkpoint is in the new journal: {:?}",
        recovery.ops_recovered
    );
    // And the commit path runs on the new journal.
    append_through_a_turn(&mut node, &mut world, session, next_request + 1);
    assert_eq!(world.replies.last().expect("replies").header.op, last_reply + 1);
}

/// A node's first checkpoint after its start clears the journal's spare
/// (whose history a new process does not know) in its work beside the node,
/// so that checkpoint's compaction stage clears nothing of it inline (on the
/// server's 64 MiB journals that inline clear stalled the shard 6.7-24 ms
/// per group). `MemIo` cannot exchange two files, so each compaction
/// renames the spare over the journal and leaves none: the next checkpoint
/// preallocates a new one beside the node too, never the stage.
#[test]
fn the_first_checkpoint_after_a_start_clears_the_spare_beside_the_node() {
    let (mut node, mut world, session) =
        one_replica_formatted_or_restarted(JOURNAL_SLOT_COUNT, CHECKPOINT_INTERVAL_OPS, true);
    shoal_vsr::marks::take();
    let mut request = append_until_a_checkpoint_runs(&mut node, &mut world, session);
    complete_all_flushes(&mut node, &mut world);
    let marks = shoal_vsr::marks::take();
    assert_eq!(marks.get(shoal_vsr::marks::COMPACTION_SPARE_CLEARED_BESIDE), Some(&1), "{marks:?}");
    assert_eq!(marks.get(shoal_vsr::marks::COMPACTION_SPARE_CLEARED_IN_PLACE), None, "{marks:?}");
    let first_checkpoint = node.group(0).replica().checkpoint_op();
    assert_eq!(node.group(0).storage().journal().snapshot_op(), first_checkpoint, "compacted");
    while node.group(0).replica().checkpoint_op() == first_checkpoint {
        append_through_a_turn(&mut node, &mut world, session, request);
        request += 1;
        complete_all_flushes(&mut node, &mut world);
    }
    let marks = shoal_vsr::marks::take();
    assert_eq!(marks.get(shoal_vsr::marks::CHECKPOINT_IN_BACKGROUND), Some(&1), "{marks:?}");
    assert_eq!(marks.get(shoal_vsr::marks::COMPACTION_SPARE_CLEARED_BESIDE), Some(&1), "{marks:?}");
    assert_eq!(marks.get(shoal_vsr::marks::COMPACTION_SPARE_CLEARED_IN_PLACE), None, "{marks:?}");
    assert!(node.group(0).storage().journal().snapshot_op() > first_checkpoint, "compacted again");
}

/// A group just formatted keeps the journal `create` made, which knows its
/// spare is zero-filled: its first checkpoint clears nothing, neither
/// beside the node nor in its stage (the format no longer reopens the
/// journal, which cost two recovery passes per new group).
#[test]
fn the_first_checkpoint_after_a_format_clears_no_spare() {
    let (mut node, mut world, session) = one_replica(JOURNAL_SLOT_COUNT, CHECKPOINT_INTERVAL_OPS);
    shoal_vsr::marks::take();
    let mut request = 1;
    while node.group(0).replica().checkpoint_op() == 0 {
        assert!(request <= JOURNAL_SLOT_COUNT * 4, "no checkpoint after {request} appends");
        append_through_a_turn(&mut node, &mut world, session, request);
        complete_all_flushes(&mut node, &mut world);
        request += 1;
    }
    complete_all_flushes(&mut node, &mut world);
    let marks = shoal_vsr::marks::take();
    assert_eq!(marks.get(shoal_vsr::marks::COMPACTION_SPARE_CLEARED_BESIDE), None, "{marks:?}");
    assert_eq!(marks.get(shoal_vsr::marks::COMPACTION_SPARE_CLEARED_IN_PLACE), None, "{marks:?}");
    assert_eq!(node.group(0).storage().journal().snapshot_op(), node.group(0).replica().checkpoint_op(), "compacted");
}

/// A prepare past the journal's window waits for the checkpoint running
/// beside the node: the replica counts its journal from its new checkpoint,
/// the journal's window moves only with the compaction at the checkpoint's
/// end. With the server's interval (976 of 1,024 slots) a group reaches it
/// 48 ops after a checkpoint begins; the simulator's ratio (16 of 64) never
/// does, so this story is what tests it (`checkpoint_finished_for_journal`).
#[test]
fn a_prepare_past_the_journals_window_waits_for_the_running_checkpoint() {
    const SLOT_COUNT: u64 = 128;
    const INTERVAL: u64 = 90;
    let (mut node, mut world, session) = one_replica(SLOT_COUNT, INTERVAL);
    node.io().hold_syncs_under(Some(&partition_dir(Path::new("/data"), namespace())));
    let mut request = append_until_a_checkpoint_runs(&mut node, &mut world, session);
    let checkpoint_op = node.group(0).replica().checkpoint_op();
    assert_eq!(node.group(0).storage().journal().snapshot_op(), 0);
    // Up to the end of the journal's window the appends go on.
    while node.group(0).replica().op() < SLOT_COUNT {
        append_through_a_turn(&mut node, &mut world, session, request);
        request += 1;
    }
    assert!(node.group(0).checkpoint_in_flight(), "still running at the window's end");
    assert_eq!(world.replies.last().expect("replies").header.op, SLOT_COUNT);
    // The fsync ends, but nobody polled the checkpoint since: the next
    // prepare, past the window, finishes it first.
    node.io().hold_syncs_under(None);
    shoal_vsr::marks::take();
    append_through_a_turn(&mut node, &mut world, session, request);
    let marks = shoal_vsr::marks::take();
    assert_eq!(marks.get(shoal_vsr::marks::CHECKPOINT_FINISHED_FOR_JOURNAL), Some(&1));
    assert!(!node.group(0).checkpoint_in_flight());
    assert_eq!(node.group(0).storage().journal().snapshot_op(), checkpoint_op);
    assert_eq!(world.replies.last().expect("replies").header.op, SLOT_COUNT + 1, "the append past it is answered");
}

/// The compaction at a checkpoint's end copies every op above the
/// checkpoint into the spare, on the commit path: what a group stages while
/// its checkpoint runs beside the node is bounded in bytes
/// (`CHECKPOINT_BESIDE_APPENDS_SLOTS_MAX` full slots), and the prepare past
/// the bound waits for the checkpoint's end. Unbounded, 1 MiB batches made
/// that copy cost more than the stall it took off (session 16).
#[test]
fn a_prepare_past_the_bytes_a_compaction_may_copy_waits_for_the_running_checkpoint() {
    const PAYLOAD_BYTES: usize = 3000;
    let (mut node, mut world, session) = one_replica(JOURNAL_SLOT_COUNT, CHECKPOINT_INTERVAL_OPS);
    node.io().hold_syncs_under(Some(&partition_dir(Path::new("/data"), namespace())));
    let request = append_until_a_checkpoint_runs(&mut node, &mut world, session);
    let payload = vec![7u8; PAYLOAD_BYTES];
    let prepare_bytes = (HEADER_SIZE_BYTES + encode_batch(&[payload.as_slice()]).unwrap().len()) as u64;
    let bound = CHECKPOINT_BESIDE_APPENDS_SLOTS_MAX * u64::from(storage_config(0).message_size_max_bytes);
    let fitting = bound / prepare_bytes;
    assert!(fitting >= 2, "the story stages a few prepares within the bound");
    for offset in 0..fitting {
        append_payload_through_a_turn(&mut node, &mut world, session, request + offset, &payload);
    }
    assert!(node.group(0).checkpoint_in_flight(), "{fitting} prepares of {prepare_bytes} bytes fit the bound");
    let replies = world.replies.len();
    // The sync ends but nobody polled the checkpoint since: the prepare past
    // the bound finishes it first.
    node.io().hold_syncs_under(None);
    shoal_vsr::marks::take();
    append_payload_through_a_turn(&mut node, &mut world, session, request + fitting, &payload);
    let marks = shoal_vsr::marks::take();
    assert_eq!(marks.get(shoal_vsr::marks::CHECKPOINT_FINISHED_FOR_COPY), Some(&1));
    assert!(!node.group(0).checkpoint_in_flight());
    assert_eq!(world.replies.len(), replies + 1, "and it is answered");
}

/// Deliver the replicas' messages, except those `dropped` says (from, to,
/// message), and complete the flushes and checkpoints whose fsync ended,
/// until nothing is left to deliver.
fn deliver_completing(
    nodes: &mut [Node<MemIo>],
    worlds: &mut [Recorder],
    dropped: impl Fn(usize, usize, &Message) -> bool,
) {
    assert_eq!(nodes.len(), worlds.len(), "one world per node");
    for _ in 0..DELIVERY_ROUNDS_MAX {
        let mut delivered = false;
        for from in 0..nodes.len() {
            for (to, message) in std::mem::take(&mut worlds[from].to_replicas) {
                let to = usize::from(to);
                if dropped(from, to, &message) {
                    continue;
                }
                let source = Source::Replica(from as u8);
                block_on(nodes[to].on_frame(source, ShardId(0), message, &mut worlds[to])).expect("runs");
                delivered = true;
            }
        }
        for (node, world) in nodes.iter_mut().zip(worlds.iter_mut()) {
            complete_ended_flushes(node, world);
        }
        if !delivered && worlds.iter().all(|w| w.to_replicas.is_empty()) {
            return;
        }
    }
    panic!("messages kept flowing after {DELIVERY_ROUNDS_MAX} rounds");
}

/// Disk-rot seeds 224694 and 224701 (session 16, Agreement): a backup
/// restored a checkpoint from a peer (a state transfer) beside the node,
/// acknowledged the next op with a prefix that starts above that
/// checkpoint, and crashed when the checkpoint's partition log sync failed:
/// after the restart the ops under the checkpoint were on no disk of it,
/// its acknowledged op sat above a gap and was dropped, and the next view
/// committed another op there. An ok's prefix starts just past the
/// sender's commit and takes the ops below for durable: in the journal, or
/// under the checkpoint the journal starts from. The ok now waits for the
/// restored checkpoint (`GroupStorage::check_durable`).
#[test]
fn a_backup_holds_its_ok_above_a_checkpoint_restored_beside_the_node_until_it_is_durable() {
    let (mut nodes, mut worlds, session) = three_registered_replicas();
    // R2 misses a checkpoint interval and more.
    for request in 1..=CHECKPOINT_INTERVAL_OPS + 4 {
        let append = client_batch_request(CLIENT, session, request, &[b"m"]);
        block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), append, &mut worlds[0])).expect("runs");
        deliver_completing(&mut nodes, &mut worlds, |from, to, _| from == 2 || to == 2);
    }
    assert_eq!(nodes[0].group(0).replica().checkpoint_op(), CHECKPOINT_INTERVAL_OPS);
    assert!(nodes[2].group(0).replica().commit_min() <= 1, "R2 holds the register at most");

    // R2 runs checkpoints beside its node, and the fsync of a staged
    // checkpoint file hangs there. The partition's state data would wait for
    // the checkpoint (its fill writes the log): R2 gets none in this story.
    let no_state_data =
        |_: usize, to: usize, message: &Message| to == 2 && message.header.command == Command::StateData;
    let staged_checkpoint =
        shoal_vsr::checkpoint::checkpoint_path(Path::new("/data"), namespace()).with_extension("tmp");
    nodes[2].io().hold_syncs_under(Some(&staged_checkpoint));
    let mut now_ns = 0;
    let mut restored = false;
    for _ in 0..4 * shoal_vsr::replica::COMMIT_HEARTBEAT_TICKS {
        now_ns += TICK_NS;
        for (node, world) in nodes.iter_mut().zip(worlds.iter_mut()) {
            block_on(node.tick(now_ns, world)).expect("runs");
        }
        deliver_completing(&mut nodes, &mut worlds, no_state_data);
        if nodes[2].group(0).checkpoint_in_flight() {
            restored = true;
            break;
        }
    }
    assert!(restored, "R2 restored R0's checkpoint, beside its node");
    let restored_op = nodes[2].group(0).replica().checkpoint_op();
    assert!(restored_op >= CHECKPOINT_INTERVAL_OPS);
    assert_eq!(nodes[2].group(0).storage().journal().snapshot_op(), 0, "its journal does not hold what it covers");

    // The next append reaches R2, which writes it durably: its ok waits.
    let append = client_batch_request(CLIENT, session, CHECKPOINT_INTERVAL_OPS + 5, &[b"m"]);
    block_on(nodes[0].on_frame(Source::Client(CLIENT), ShardId(0), append, &mut worlds[0])).expect("runs");
    for _ in 0..8 {
        now_ns += TICK_NS;
        block_on(nodes[2].tick(now_ns, &mut worlds[2])).expect("runs");
        deliver_completing(&mut nodes, &mut worlds, no_state_data);
    }
    let ok_above = |event: &String| {
        event
            .strip_prefix("send PrepareOk op ")
            .and_then(|op| op.parse::<u64>().ok())
            .is_some_and(|op| op > restored_op)
    };
    assert!(nodes[2].group(0).checkpoint_in_flight());
    assert!(nodes[2].group(0).replica().op() > restored_op, "R2 holds ops above the checkpoint");
    assert!(!worlds[2].events.iter().any(ok_above), "no ok above the restored checkpoint: {:#?}", worlds[2].events);

    // The checkpoint becomes durable: the oks leave.
    nodes[2].io().hold_syncs_under(None);
    deliver_completing(&mut nodes, &mut worlds, no_state_data);
    assert!(!nodes[2].group(0).checkpoint_in_flight());
    let events = &worlds[2].events;
    let installed = position(events, "durable checkpoint op 0");
    let first_ok = events.iter().position(ok_above).expect("the oks left");
    assert!(installed < first_ok, "after the checkpoint: {events:#?}");
}

/// A running replica's partition log takes damage nobody reads (a marker
/// write that landed on a record, a sector gone bad under a sealed
/// segment): the scrubber reads it back within its ticks and stops the
/// node, whose restart salvages the log and fetches the rest from peers
/// (partition-misdirect: 79 of 2,000 seeds ended with a replica missing an
/// acknowledged message before the scrubber). With the scrubber off the
/// damage stays unseen.
#[test]
fn the_scrubber_finds_damage_in_a_running_replicas_partition_log_and_stops_the_node() {
    use shoal_shard::node::partition_dir;
    use shoal_shard::partition_log::{SEGMENT_HEADER_SIZE_BYTES, segment_file_name};

    const SCRUB_BYTES_PER_TICK: u64 = 64;
    const TICKS_MAX: u64 = 64;
    for scrub_bytes_per_tick in [0, SCRUB_BYTES_PER_TICK] {
        let io = MemIo::default();
        let dir = Path::new("/data");
        let storage = block_on(GroupStorage::format(&io, dir, storage_config(0))).expect("format");
        let machine = block_on(GroupMachine::open(&io, dir, namespace(), PartitionLogConfig::default()))
            .expect("an empty partition log");
        let group = Group::new(namespace(), ShardId(0), storage, Replica::new(replica_config(0, 1), machine));
        let mut node = node_scrubbing(io.clone(), group, 0, 1, scrub_bytes_per_tick);
        let mut world = Recorder::default();
        block_on(node.on_frame(Source::Client(CLIENT), ShardId(0), register(), &mut world)).expect("runs");
        complete_ended_flushes(&mut node, &mut world);
        let session = world.replies.pop().expect("registered").header.context;
        for request in 1..=8 {
            append_payload_through_a_turn(&mut node, &mut world, session, request, &[request as u8; 40]);
        }
        // A byte of the last record's payload: a pass from the first
        // offset at a few records per tick reaches it.
        let segment = partition_dir(dir, namespace()).join(segment_file_name(0));
        let mut bytes = io.file_bytes(&segment);
        assert!(bytes.len() as u64 > SEGMENT_HEADER_SIZE_BYTES + 8 * 40, "the appends are in the log");
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        io.set_file_bytes(&segment, bytes);
        shoal_vsr::marks::take();
        let stopped = (1..=TICKS_MAX).find_map(|tick| block_on(node.tick(tick * TICK_NS, &mut world)).err());
        let marks = shoal_vsr::marks::take();
        if scrub_bytes_per_tick == 0 {
            assert!(stopped.is_none(), "no scrubber, nothing reads the damage: {stopped:?}");
            assert_eq!(marks.get(shoal_vsr::marks::PARTITION_SCRUB_FOUND_DAMAGE), None);
            continue;
        }
        let stop = stopped.expect("the scrubber reached the damaged record");
        assert!(matches!(stop, NodeStop::PartitionLog(_)), "{stop}");
        assert!(stop.to_string().contains("restarts from its disk"), "the operator is told what happens: {stop}");
        assert_eq!(marks.get(shoal_vsr::marks::PARTITION_SCRUB_FOUND_DAMAGE), Some(&1));
    }
}
