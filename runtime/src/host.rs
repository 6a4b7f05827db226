//! The server's world around the node: what `shoal-sim`'s `Cluster` is to
//! the simulated node, this is to the real one.
//!
//! Owns opening (or formatting) every VSR group of this replica from the data
//! dir, the TCP bus (replica listener, dials to higher replicas, client
//! listener), the queue of verified inbound frames, the timer that ticks the
//! replicas, creating a partition group when the metadata group commits its
//! topic, and the metrics the node's hooks feed. Everything between a frame
//! and the disk is the node's (`shoal_shard::node`), the same code the
//! simulator runs; nothing here decides protocol or storage.
//!
//! Today one shard (the thread it runs on) hosts every group; the other
//! shards of the process stay idle. Spreading groups over shards needs the
//! node to hop frames between threads (issue 11).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossfire::mpsc::{Array, bounded_blocking_async};
use crossfire::{AsyncRx, MTx};
use shoal_shard::handoff::metadata_journal_config;
use shoal_shard::lifecycle::ShutdownFlag;
use shoal_shard::metrics::FrameDrops;
use shoal_shard::node::{
    Group, GroupMachine, GroupStorage, METADATA_NAMESPACE, Node, NodeBus, NodeConfig, NodeHooks, NodeStop,
    StorageConfig, StorageError, action_name,
};
use shoal_shard::owner_table::{ReplicaOwnerTable, ShardCount, ShardId};
use shoal_vsr::io::Io;
use shoal_vsr::message::Message;
use shoal_vsr::replica::{Action, Committed, PIPELINE_PREPARES_MAX, Replica, ReplicaConfig, Source, Status};
use shoal_vsr::superblock::SuperblockError;

use crate::RealIo;
use crate::bus::net::{BusConfig, BusEvent, Listener, OnEvent, Ownership, dial_forever};
use crate::bus::{Backoff, BusMetrics, Expect, Frame, Outbox, Peer, SendDropped, replicas_to_dial};
use crate::metrics::{ServerMetrics, StorageLabels};

/// How often the replicas' timers tick; their timeouts count these.
pub const TICK_NS: u64 = 10_000_000;
/// Verified frames waiting for the node; past it, new frames are dropped
/// (counted) and VSR or the client retransmits.
pub const INBOUND_FRAMES_MAX: usize = 4096;
/// Frames handed to the node before the timer is checked again.
const FRAMES_PER_TURN_MAX: usize = 256;
/// Partition groups one replica hosts; a topic that would pass it is not
/// opened (logged), so a runaway catalogue cannot exhaust file descriptors.
pub const PARTITION_GROUPS_MAX: usize = 1024;

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub cluster: u128,
    pub replica: u8,
    pub replica_count: u8,
    /// Every replica's bus address, by index.
    pub replica_addresses: Vec<SocketAddr>,
    pub client_address: SocketAddr,
    pub data_dir: PathBuf,
    /// Partition groups' journal slots (the metadata group's are fixed).
    pub journal_slot_count: u64,
    pub message_size_max_bytes: u32,
    pub client_sessions_max: usize,
    /// How long a connection may stall mid-hello or mid-frame (`network.idle_timeout_ms`).
    pub idle_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot open group {namespace:#x} in {dir}: {error}; check the data dir and the disk")]
    Storage { namespace: u64, dir: PathBuf, error: StorageError },
    #[error("cannot open the partition log of group {namespace:#x}: {error}")]
    Partition { namespace: u64, error: String },
    #[error("group {namespace:#x}'s checkpoint is unreadable: {error}; restore the replica from a peer")]
    Checkpoint { namespace: u64, error: String },
    #[error("cannot listen on {address} ({what}): {source}; pick a free address")]
    Bind { what: &'static str, address: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Stopped(#[from] NodeStop),
}

/// Inbound frames, from the connections' callbacks to the node's loop.
type Inbound = (Peer, Frame);

/// Which connection each peer is on (all on this shard's thread): the
/// newest one; a replaced one's outbox is dropped by the `Connected` of its
/// successor.
#[derive(Debug, Default)]
struct Outboxes {
    replicas: BTreeMap<u8, Outbox>,
    clients: BTreeMap<u128, Outbox>,
}

/// The node's world in the server: sends go to sockets, hooks feed metrics.
struct World {
    outboxes: Rc<RefCell<Outboxes>>,
    metrics: Arc<ServerMetrics>,
    namespaces: Vec<u64>,
    storage_started: Option<Instant>,
    /// The metadata group committed: its catalogue may name new partitions.
    metadata_committed: bool,
}

impl NodeBus for World {
    fn send_to_replica(&mut self, _via: ShardId, to: u8, message: Message) {
        let mut outboxes = self.outboxes.borrow_mut();
        // No connection now: lost like any frame; VSR retransmits.
        if let Some(outbox) = outboxes.replicas.get(&to)
            && outbox.send(message.encode()) == Err(SendDropped::Closed)
        {
            outboxes.replicas.remove(&to);
        }
    }

    fn reply_to_client(&mut self, _via: ShardId, client: u128, message: Message) {
        let mut outboxes = self.outboxes.borrow_mut();
        // A client that went away retries on a new connection and gets the
        // cached reply then.
        if let Some(outbox) = outboxes.clients.get(&client)
            && outbox.send(message.encode()) == Err(SendDropped::Closed)
        {
            outboxes.clients.remove(&client);
        }
    }

    fn client_shard(&self, _client: u128) -> ShardId {
        ShardId::METADATA
    }
}

impl NodeHooks for World {
    fn before_storage(&mut self, _group: usize, _action: &Action) {
        self.storage_started = Some(Instant::now());
    }

    fn after_storage(
        &mut self,
        _group: usize,
        action: &Action,
        error: Option<&StorageError>,
    ) -> shoal_shard::node::Flow {
        if let (Some(started), None) = (self.storage_started.take(), error) {
            let labels = StorageLabels { action: action_name(action) };
            self.metrics.storage_latency_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        }
        shoal_shard::node::Flow::Continue
    }

    fn on_committed(&mut self, group: usize, committed: &[Committed]) {
        // One record per request: a packed op's first is at index 0.
        self.metrics.commits.inc_by(committed.iter().filter(|request| request.index == 0).count() as u64);
        if self.namespaces.get(group) == Some(&METADATA_NAMESPACE) {
            self.metadata_committed = true;
        }
    }

    fn on_view(&mut self, group: usize, view: u64, status: Status) {
        self.metrics.view_changes.inc();
        let namespace = self.namespaces.get(group).copied().unwrap_or_default();
        tracing::info!(namespace = format_args!("{namespace:#x}"), view, ?status, "view change");
    }

    fn on_committed_conflict(&mut self, group: usize, why: &str) {
        tracing::error!(group, why, "a peer offered a log contradicting committed ops (refused)");
    }
}

/// A group's journal geometry: the metadata group's is fixed (the start-up
/// handoff replays it with the same), partitions take the configured limits.
fn journal_geometry(config: &HostConfig, namespace: u64) -> (u64, u32) {
    if namespace == METADATA_NAMESPACE {
        let journal = metadata_journal_config(config.cluster);
        return (journal.slot_count, journal.message_size_max_bytes);
    }
    (config.journal_slot_count, config.message_size_max_bytes)
}

fn storage_config(config: &HostConfig, namespace: u64) -> StorageConfig {
    let (slot_count, message_size_max_bytes) = journal_geometry(config, namespace);
    StorageConfig { cluster: config.cluster, namespace, replica: config.replica, slot_count, message_size_max_bytes }
}

/// The server's pipeline depth per group, shallower than the deepest the
/// journal allows (`PIPELINE_PREPARES_MAX`): a prepare, not a request, costs
/// a journal write, so past this many in flight requests queue and leave
/// packed several to a prepare (`shoal_vsr::packed`). One client at a time
/// is unaffected (its request finds the pipeline empty). Measured with
/// `cargo xtask bench server --shards 1` (64 clients over 4 partitions, 16
/// per group): 1,327 msg/s at 16, 2,796 at 4 (README, Benchmarks).
pub const SERVER_PIPELINE_PREPARES_MAX: usize = 4;
const _: () = assert!(SERVER_PIPELINE_PREPARES_MAX <= PIPELINE_PREPARES_MAX);

fn replica_config(config: &HostConfig, namespace: u64, seed: u64) -> ReplicaConfig {
    let (journal_slot_count, message_size_max_bytes) = journal_geometry(config, namespace);
    ReplicaConfig {
        cluster: config.cluster,
        namespace,
        replica: config.replica,
        replica_count: config.replica_count,
        journal_slot_count,
        // Half the journal: a checkpoint drains well before the ring fills.
        checkpoint_interval_ops: journal_slot_count / 2,
        seed,
        client_sessions_max: config.client_sessions_max,
        message_size_max_bytes,
        pipeline_prepares_max: SERVER_PIPELINE_PREPARES_MAX,
    }
}

/// Open a group from its files, or format it when it has none yet (a new
/// cluster, or a topic created since the last start).
async fn open_group(io: &RealIo, config: &HostConfig, namespace: u64) -> Result<Group<RealIo>, HostError> {
    let dir = config.data_dir.as_path();
    let storage_error = |error| HostError::Storage { namespace, dir: dir.to_path_buf(), error };
    let machine = GroupMachine::open_in_cluster(io, dir, namespace, config.replica_count)
        .await
        .map_err(|error| HostError::Partition { namespace, error: error.to_string() })?;
    let seed = io.entropy_u64();
    let replica_config = replica_config(config, namespace, seed);
    match GroupStorage::open(io, dir, storage_config(config, namespace)).await {
        Ok((storage, recovered)) => {
            let replica = Replica::open(replica_config, machine, recovered)
                .map_err(|error| HostError::Checkpoint { namespace, error: error.to_string() })?;
            Ok(Group::new(namespace, ShardId::METADATA, storage, replica))
        }
        Err(StorageError::Superblock(SuperblockError::Missing { .. })) => {
            tracing::info!(namespace = format_args!("{namespace:#x}"), "formatting a new group");
            let storage =
                GroupStorage::format(io, dir, storage_config(config, namespace)).await.map_err(storage_error)?;
            Ok(Group::new(namespace, ShardId::METADATA, storage, Replica::new(replica_config, machine)))
        }
        Err(error) => Err(storage_error(error)),
    }
}

/// Partition namespaces the metadata group's catalogue names that `node`
/// does not host yet, in order.
fn new_partitions(node: &Node<RealIo>) -> Vec<u64> {
    let Some(metadata_group) = node.group_of(METADATA_NAMESPACE) else { return Vec::new() };
    let Some(metadata) = node.group(metadata_group).replica().state_machine().metadata() else { return Vec::new() };
    metadata
        .partition_namespaces()
        .into_iter()
        .map(|namespace| namespace.raw())
        .filter(|namespace| node.group_of(*namespace).is_none())
        .collect()
}

/// Run this replica until shutdown or until the node stops (a storage error:
/// the process exits and its supervisor restarts it from the disk).
pub async fn run(
    io: RealIo,
    config: HostConfig,
    shutdown: ShutdownFlag,
    metrics: Arc<ServerMetrics>,
    bus_metrics: Arc<BusMetrics>,
    drops: Arc<FrameDrops>,
) -> Result<(), HostError> {
    let metadata = open_group(&io, &config, METADATA_NAMESPACE).await?;
    let shard_count = ShardCount::new(1).expect("one shard");
    let owners = Arc::new(ReplicaOwnerTable::new(usize::from(config.replica_count), shard_count));
    let node_config = NodeConfig {
        cluster: config.cluster,
        replica: config.replica,
        replica_count: config.replica_count,
        shard_count,
        data_dir: config.data_dir.clone(),
    };
    // The catalogue recovered from disk names the partitions to open.
    let mut node = Node::new(io.clone(), node_config, vec![metadata], owners.clone(), drops.clone());
    open_new_partitions(&io, &config, &mut node).await?;

    let outboxes = Rc::new(RefCell::new(Outboxes::default()));
    let (inbound_tx, inbound_rx) = bounded_blocking_async::<Inbound>(INBOUND_FRAMES_MAX);
    let _bus = start_bus(&config, &bus_metrics, &owners, &outboxes, inbound_tx, &drops).await?;
    let mut world = World {
        outboxes,
        metrics: metrics.clone(),
        namespaces: namespaces(&node),
        storage_started: None,
        metadata_committed: false,
    };
    node.start(&mut world).await?;
    tracing::info!(replica = config.replica, groups = node.group_count(), "replica serving");
    serve(&io, &config, &shutdown, &mut node, &mut world, &inbound_rx).await
}

fn namespaces(node: &Node<RealIo>) -> Vec<u64> {
    (0..node.group_count()).map(|group| node.group(group).namespace()).collect()
}

async fn open_new_partitions(io: &RealIo, config: &HostConfig, node: &mut Node<RealIo>) -> Result<(), HostError> {
    for namespace in new_partitions(node) {
        if node.group_count() > PARTITION_GROUPS_MAX {
            tracing::error!(
                namespace = format_args!("{namespace:#x}"),
                "not opening the partition: this replica hosts {PARTITION_GROUPS_MAX} already"
            );
            break;
        }
        let group = open_group(io, config, namespace).await?;
        node.add_group(group);
    }
    Ok(())
}

/// The loop: frames to the node as they come, the timer every `TICK_NS`.
async fn serve(
    io: &RealIo,
    config: &HostConfig,
    shutdown: &ShutdownFlag,
    node: &mut Node<RealIo>,
    world: &mut World,
    inbound: &AsyncRx<Array<Inbound>>,
) -> Result<(), HostError> {
    let mut next_tick_ns = io.now_ns() + TICK_NS;
    while !shutdown.is_requested() {
        let wait_ns = next_tick_ns.saturating_sub(io.now_ns());
        if let Ok(Ok(first)) = compio::time::timeout(Duration::from_nanos(wait_ns), inbound.recv()).await {
            // Group commit: the prepares of every frame read in this turn
            // are flushed together at its end (the node holds what
            // promises them until then).
            node.begin_turn();
            deliver(node, world, first).await?;
            for _ in 1..FRAMES_PER_TURN_MAX {
                let Ok(next) = inbound.try_recv() else { break };
                deliver(node, world, next).await?;
            }
            node.end_turn(world).await?;
        }
        if std::mem::take(&mut world.metadata_committed) {
            open_new_partitions(io, config, node).await?;
            world.namespaces = namespaces(node);
        }
        let now_ns = io.now_ns();
        if now_ns >= next_tick_ns {
            node.tick(now_ns, world).await?;
            record_status(node, &world.metrics);
            next_tick_ns = now_ns + TICK_NS;
        }
    }
    tracing::info!("shutdown: the replica stops serving");
    Ok(())
}

async fn deliver(node: &mut Node<RealIo>, world: &mut World, (peer, frame): Inbound) -> Result<(), HostError> {
    let source = match peer {
        Peer::Replica(index) => Source::Replica(index),
        Peer::Client(id) => Source::Client(id),
    };
    let message = Message { header: frame.header, body: Rc::from(frame.body()) };
    node.on_frame(source, ShardId::METADATA, message, world).await?;
    Ok(())
}

fn record_status(node: &Node<RealIo>, metrics: &ServerMetrics) {
    for group in 0..node.group_count() {
        let g = node.group(group);
        let labels = ServerMetrics::group_labels(g.namespace());
        let replica = g.replica();
        metrics.group_view.get_or_create(&labels).set(replica.view() as i64);
        metrics.group_commit.get_or_create(&labels).set(replica.commit_min() as i64);
        metrics.group_normal.get_or_create(&labels).set(i64::from(replica.status() == Status::Normal));
    }
}

/// The bus tasks; they run until this is dropped.
struct Bus {
    _tasks: Vec<compio::runtime::JoinHandle<()>>,
}

async fn start_bus(
    config: &HostConfig,
    metrics: &Arc<BusMetrics>,
    owners: &Arc<ReplicaOwnerTable>,
    outboxes: &Rc<RefCell<Outboxes>>,
    inbound: MTx<Array<Inbound>>,
    drops: &Arc<FrameDrops>,
) -> Result<Bus, HostError> {
    let local = Peer::Replica(config.replica);
    let bus_config = BusConfig {
        message_size_max_bytes: config.message_size_max_bytes,
        idle_timeout: config.idle_timeout,
        ..BusConfig::new(config.cluster, local)
    };
    let ownership = Ownership { table: owners.clone(), shard: ShardId::METADATA };
    let on_event = on_event(outboxes.clone(), inbound, drops.clone());
    let replica_address = config.replica_addresses[usize::from(config.replica)];
    let bind = |what, address, expect| {
        let (bus_config, metrics) = (bus_config.clone(), metrics.clone());
        async move {
            Listener::bind(address, expect, bus_config, metrics).await.map_err(|source| HostError::Bind {
                what,
                address,
                source,
            })
        }
    };
    let replicas =
        bind("replica bus", replica_address, Expect::Inbound { local_replica: Some(config.replica), clients: false })
            .await?;
    let clients =
        bind("clients", config.client_address, Expect::Inbound { local_replica: None, clients: true }).await?;
    let mut tasks = Vec::new();
    {
        let (ownership, on_event) = (ownership.clone(), on_event.clone());
        tasks.push(compio::runtime::spawn(async move { replicas.serve(Some(ownership), on_event).await }));
    }
    {
        let on_event = on_event.clone();
        tasks.push(compio::runtime::spawn(async move { clients.serve(None, on_event).await }));
    }
    for remote in replicas_to_dial(config.replica, config.replica_count) {
        let address = config.replica_addresses[usize::from(remote)];
        let (bus_config, metrics, ownership, on_event) =
            (bus_config.clone(), metrics.clone(), ownership.clone(), on_event.clone());
        let seed = (u64::from(config.replica) << 8) | u64::from(remote);
        tasks.push(compio::runtime::spawn(async move {
            let mut backoff = Backoff::new(seed);
            dial_forever(address, remote, &bus_config, &metrics, Some(&ownership), &on_event, &mut backoff).await;
        }));
    }
    Ok(Bus { _tasks: tasks })
}

/// The connections' callback: remember each peer's outbox, queue frames.
fn on_event(outboxes: Rc<RefCell<Outboxes>>, inbound: MTx<Array<Inbound>>, drops: Arc<FrameDrops>) -> OnEvent {
    Rc::new(move |event| match event {
        BusEvent::Connected { peer, outbox } => {
            let mut outboxes = outboxes.borrow_mut();
            match peer {
                Peer::Replica(index) => outboxes.replicas.insert(index, outbox.clone()),
                Peer::Client(id) => outboxes.clients.insert(id, outbox.clone()),
            };
        }
        BusEvent::Frame { peer, frame, .. } => {
            if inbound.try_send((peer, frame)).is_err() {
                let variant = match peer {
                    Peer::Replica(_) => shoal_shard::frame::FrameVariant::Consensus,
                    Peer::Client(_) => shoal_shard::frame::FrameVariant::ClientForward,
                };
                drops.bump(variant, shoal_shard::metrics::DropReason::InboxFull);
            }
        }
        // Not forgotten here: a newer connection of the same peer may have
        // registered already, and this close must not remove it. A closed
        // outbox is dropped at the next send that fails on it.
        BusEvent::Closed { .. } => {}
    })
}
