//! The server's world around the node: what `shoal-sim`'s `Cluster` is to
//! the simulated node, this is to the real one.
//!
//! Owns opening (or formatting) every VSR group of this replica from the data
//! dir, the TCP bus (replica listener, dials to higher replicas, client
//! listener), the bounded inboxes between shards, the timer that ticks the
//! replicas, opening a partition group when the metadata group commits its
//! topic, and the metrics the node's hooks feed. Everything between a frame
//! and the disk is the node's (`shoal_shard::node`), the same code the
//! simulator runs; nothing here decides protocol or storage.
//!
//! One `Node` per shard thread (`run` on every shard): shard 0 holds the
//! metadata group, and each partition group lives on the shard its namespace
//! hashes to (`route_partition`).
//!
//! The rule for connections (`connection_shard`): **every shard holds
//! connections**. The connection between replicas `a` and `b` lives on
//! shard `(a + b) % shards` at both ends (the dialer dials from that shard;
//! the acceptor hands it there), so a cluster's pairs spread over the
//! shards and one pair's frames always cross the same two threads; a
//! client's connection lives on shard `id % shards`, so `client_shard` is a
//! pure function and replies need no table. Shard 0 (`ACCEPT_SHARD`) runs
//! both listeners: it reads each connection's hello (bounded by the idle
//! timeout), then runs it itself or hands the socket to its shard's bounded
//! queue (`HANDOFFS_MAX`; a full one closes it, counted in
//! `bus_handoffs_dropped`). The owner table records the shard of each peer
//! replica's connection (stamped at its hello, CAS), and the node sends
//! through it.
//!
//! A frame read on a connection is routed, in the connection's callback on
//! the shard that holds it, by the node's own `route_inbound`, and hops
//! into its shard's bounded inbox (`try_send`; a full inbox drops it,
//! counted in `frame_drops_total` of the connection's shard, and VSR or the
//! client retransmits). A frame a group sends to a connection another shard
//! holds (to a peer, or a reply to a client) hops into that shard's
//! outbound inbox, which a task of its own drains into the sockets' send
//! queues, so it never waits behind that shard's storage.
//!
//! The catalogue: when the metadata group commits, shard 0 publishes the
//! partition namespaces it names (`Catalogue`, bounded by
//! `PARTITION_GROUPS_MAX`); every shard checks its version once per loop
//! turn and opens (or formats) the groups that hash to it. At start-up the
//! connections open only once every shard opened the groups of the
//! catalogue shard 0 recovered, so no shard still starting refuses a
//! client's request for a partition it is about to host.
//!
//! A data dir formatted with `--rejoin` (`data_dir::Identity::rejoining`)
//! replaces a lost disk of an existing cluster: every group that may have
//! existed before the loss starts rejoining when this replica formats it
//! (`GroupStorage::format_rejoining`, `Replica::rejoin`), the metadata group
//! before the start-up replay and each partition group when the catalogue
//! it catches up on names it. The flag stays in the dir, so no restart can
//! forget it. A topic created above the metadata group's `nack_floor` once
//! its rejoin completed was committed after the loss, so its groups are
//! formatted new, as on every other replica (`formats_rejoining`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossfire::mpsc::{Array, bounded_blocking_async};
use crossfire::{AsyncRx, BlockingTxTrait, MTx, TrySendError};
use shoal_shard::PartitionLogConfig;
use shoal_shard::frame::FrameVariant;
use shoal_shard::handoff::metadata_journal_config;
use shoal_shard::lifecycle::ShutdownFlag;
use shoal_shard::metrics::{DropReason, FrameDrops};
use shoal_shard::namespace::Namespace;
use shoal_shard::node::{
    Group, GroupMachine, GroupStorage, METADATA_NAMESPACE, Node, NodeBus, NodeConfig, NodeHooks, NodeStop,
    StorageConfig, StorageError, action_name, route_inbound,
};
pub use shoal_shard::owner_table::connection_shard;
use shoal_shard::owner_table::{ReplicaOwnerTable, ShardCount, ShardId};
use shoal_shard::router::route_partition;
use shoal_vsr::header::{HEADER_SIZE_BYTES, Header};
use shoal_vsr::io::Io;
use shoal_vsr::message::{Body, Message};
use shoal_vsr::replica::{Action, Committed, PIPELINE_PREPARES_MAX, Replica, ReplicaConfig, Source, Status};
use shoal_vsr::superblock::SuperblockError;

use crate::RealIo;
use crate::bus::net::{Accepted, BusConfig, BusEvent, Listener, OnEvent, Ownership, dial_forever};
use crate::bus::{Backoff, BusMetrics, Expect, Frame, OutFrame, Outbox, Peer, SendDropped, replicas_to_dial};
use crate::metrics::{ConnectionLabels, ServerMetrics, StorageLabels};

/// How often the replicas' timers tick; their timeouts count these (and a
/// primary's heartbeat also its clock: `shoal_vsr::replica::COMMIT_HEARTBEAT_NS`).
pub const TICK_NS: u64 = shoal_vsr::replica::TICK_NS;
/// The bounds of a shard's two inboxes, shared with the simulator's shards.
pub use shoal_shard::channel::{INBOUND_FRAMES_MAX, OUTBOUND_FRAMES_MAX};
/// Accepted connections waiting for the shard they belong to; past it a
/// new one is closed (counted in `bus_handoffs_dropped`) and its peer
/// reconnects.
pub const HANDOFFS_MAX: usize = 64;
/// How often a starting shard checks whether the others are ready.
const READY_POLL_NS: u64 = 1_000_000;
/// Frames handed to the node before the timer is checked again.
const FRAMES_PER_TURN_MAX: usize = 256;
/// A group's flush may block the shard's thread with its fdatasync
/// (`RealFile::sync_data`) only in a cluster of one replica, and only while
/// the node holds no more than this many requests (`Node::requests_held`:
/// ops prepared and not committed, and requests queued, all groups
/// together): one request at a time. Then the thread would only wait for
/// the fsync anyway, and the hop to io_uring's worker is most of the gap to
/// the raw fsync (session 34, `--replica-counts 1 --clients 1`: 2.63-2.80k
/// msg/s through the worker, 2.97-3.26k inline). With more in flight the
/// node must go on taking frames while the fsync runs. With peers it stays
/// off: three replicas one at a time measured the same either way
/// (1.49-1.59k msg/s), and a backup cannot tell its load from its own
/// pipeline (its commit point lags the primary's), so under load it blocked
/// and cost throughput (3 producers x 60: 74-82k msg/s against 88-92k).
const INLINE_SYNC_REQUESTS_HELD_MAX: u64 = 1;
/// ... and only after this many choices in a row found it so: a few clients
/// whose requests alternate leave one op in flight now and then, and an
/// fsync that blocks then makes the next request wait for it (2 producers
/// x 60 on one replica lost 10-30 % of their throughput without this).
const INLINE_SYNC_CALM_CHOICES_MIN: u32 = 64;
/// Partition groups one replica hosts; a topic that would pass it is not
/// opened (logged), so a runaway catalogue cannot exhaust file descriptors.
pub const PARTITION_GROUPS_MAX: usize = 1024;
/// The shard that runs the listeners and places what they accept (see the
/// module doc): the metadata shard, which every process has.
pub const ACCEPT_SHARD: ShardId = ShardId::METADATA;

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
    /// Partition groups' checkpoint interval (`limits.checkpoint_interval_ops`;
    /// the metadata group's follows its fixed journal).
    pub checkpoint_interval_ops: u64,
    pub message_size_max_bytes: u32,
    /// Partition groups' pipeline depth (`limits.pipeline_prepares_max`;
    /// the metadata group's is fixed).
    pub pipeline_prepares_max: usize,
    pub client_sessions_max: usize,
    /// How long a connection may stall mid-hello or mid-frame (`network.idle_timeout_ms`).
    pub idle_timeout: Duration,
    /// The data dir was formatted with `--rejoin`: every group formatted in
    /// it starts by rejoining (`open_group`).
    pub rejoining: bool,
    /// Bytes of partition log each shard reads back and checks per second
    /// (`limits.scrub_bytes_per_second`; 0: off).
    pub scrub_bytes_per_second: u64,
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

/// A frame read on a connection of shard `ShardId`, for the node of the
/// shard that handles it.
type Inbound = (Peer, ShardId, Frame);

/// A frame a group on another shard sends through the sockets a shard holds: to a peer replica, or a reply to a client. Encoded, so it
/// crosses threads (a `Message` body is an `Rc`).
#[derive(Debug)]
enum Outbound {
    Replica(u8, OutFrame),
    Client(u128, OutFrame),
}

/// The frame of the message this shard last sent to a replica, so that the
/// same message to the next replica is not encoded again: a primary sends
/// each prepare to every backup in a row, and each encoding copied the whole
/// body (up to `MESSAGE_SIZE_MAX_BYTES`). One slot, since that fan-out is
/// consecutive; it keeps one frame alive per shard until the next send.
#[derive(Debug, Default)]
struct LastEncoded {
    /// The message's header and its body's address and length: a `Body`'s
    /// bytes never change, and an equal header names an equal body anyway
    /// (its checksum), so an equal key means equal wire bytes.
    key: Option<(Header, usize, usize)>,
    frame: OutFrame,
}

impl LastEncoded {
    fn frame(&mut self, message: &Message) -> OutFrame {
        let key = (message.header, message.body.as_ptr() as usize, message.body.len());
        if self.key != Some(key) {
            self.frame = OutFrame::new(message.encode());
            self.key = Some(key);
        }
        debug_assert_eq!(self.frame.len(), HEADER_SIZE_BYTES + message.body.len());
        self.frame.clone()
    }
}

/// A partition group the catalogue names, and how this replica starts it
/// if it has no files for it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Hosted {
    namespace: u64,
    /// Formatted rejoining rather than new (`formats_rejoining`).
    rejoin_if_new: bool,
}

/// The partition groups the metadata group's catalogue names, as shard 0
/// last published them; every shard opens those that hash to it.
#[derive(Debug, Default)]
struct Catalogue {
    namespaces: Mutex<Vec<Hosted>>,
    /// Bumped at every change; 0 until the first publication.
    version: AtomicU64,
}

impl Catalogue {
    /// Publish `namespaces` (ascending, at most `PARTITION_GROUPS_MAX`).
    fn publish(&self, namespaces: Vec<Hosted>) {
        assert!(namespaces.len() <= PARTITION_GROUPS_MAX, "the catalogue is bounded");
        debug_assert!(namespaces.is_sorted(), "published in order");
        let mut current = self.namespaces.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *current != namespaces || self.version.load(Ordering::Acquire) == 0 {
            *current = namespaces;
            self.version.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The namespaces, if they changed since version `seen` (updated).
    fn changed_since(&self, seen: &mut u64) -> Option<Vec<Hosted>> {
        if self.version.load(Ordering::Acquire) == *seen {
            return None;
        }
        let current = self.namespaces.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *seen = self.version.load(Ordering::Acquire);
        Some(current.clone())
    }
}

/// What every shard of one process shares: the owner table, the drop
/// counters, the metrics, every shard's inbox and the catalogue. Built once
/// before the shard threads start; each shard takes its own receiver.
pub struct Process {
    config: HostConfig,
    shard_count: ShardCount,
    owners: Arc<ReplicaOwnerTable>,
    /// Indexed by shard: the frames dropped on that shard (a shard counts
    /// what its connections' callback could not hop, and what others could
    /// not hop into its outbound inbox).
    drops: Vec<Arc<FrameDrops>>,
    metrics: Arc<ServerMetrics>,
    bus_metrics: Arc<BusMetrics>,
    /// Indexed by shard: the sending end of its node's inbox.
    inboxes: Vec<MTx<Array<Inbound>>>,
    /// Indexed by shard: the receiving end, taken once by that shard.
    receivers: Mutex<Vec<Option<AsyncRx<Array<Inbound>>>>>,
    /// Indexed by shard: frames for the sockets that shard holds.
    outbound: Vec<MTx<Array<Outbound>>>,
    outbound_receivers: Mutex<Vec<Option<AsyncRx<Array<Outbound>>>>>,
    /// Indexed by shard: connections accepted for it (`connection_shard`).
    handoffs: Vec<MTx<Array<Accepted>>>,
    handoff_receivers: Mutex<Vec<Option<AsyncRx<Array<Accepted>>>>>,
    catalogue: Catalogue,
    /// Shards that opened the groups of the catalogue published at start-up.
    shards_ready: AtomicUsize,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process").field("replica", &self.config.replica).field("shards", &self.shard_count).finish()
    }
}

impl Process {
    pub fn new(
        config: HostConfig,
        shard_count: ShardCount,
        metrics: Arc<ServerMetrics>,
        bus_metrics: Arc<BusMetrics>,
    ) -> Process {
        let owners = Arc::new(ReplicaOwnerTable::new(usize::from(config.replica_count), shard_count));
        let (inboxes, receivers): (Vec<_>, Vec<_>) = shard_count
            .shards()
            .map(|_| {
                let (sender, receiver) = bounded_blocking_async::<Inbound>(INBOUND_FRAMES_MAX);
                (sender, Some(receiver))
            })
            .unzip();
        let (outbound, outbound_receivers): (Vec<_>, Vec<_>) = shard_count
            .shards()
            .map(|_| {
                let (sender, receiver) = bounded_blocking_async::<Outbound>(OUTBOUND_FRAMES_MAX);
                (sender, Some(receiver))
            })
            .unzip();
        let (handoffs, handoff_receivers): (Vec<_>, Vec<_>) = shard_count
            .shards()
            .map(|_| {
                let (sender, receiver) = bounded_blocking_async::<Accepted>(HANDOFFS_MAX);
                (sender, Some(receiver))
            })
            .unzip();
        let drops = shard_count.shards().map(|_| Arc::new(FrameDrops::new())).collect();
        Process {
            config,
            shard_count,
            owners,
            drops,
            metrics,
            bus_metrics,
            inboxes,
            receivers: Mutex::new(receivers),
            outbound,
            outbound_receivers: Mutex::new(outbound_receivers),
            handoffs,
            handoff_receivers: Mutex::new(handoff_receivers),
            catalogue: Catalogue::default(),
            shards_ready: AtomicUsize::new(0),
        }
    }

    /// What `GET /metrics` encodes for the whole process.
    pub fn registry(&self) -> prometheus_client::registry::Registry {
        crate::metrics::registry(&self.metrics, self.bus_metrics.clone(), self.drops.clone())
    }

    fn take_receiver(&self, shard: ShardId) -> AsyncRx<Array<Inbound>> {
        let mut receivers = self.receivers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        receivers[shard.index()].take().expect("each shard runs once and takes its inbox once")
    }

    fn take_outbound_receiver(&self, shard: ShardId) -> AsyncRx<Array<Outbound>> {
        let mut receivers = self.outbound_receivers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        receivers[shard.index()].take().expect("each shard takes its outbound inbox once")
    }

    fn take_handoff_receiver(&self, shard: ShardId) -> AsyncRx<Array<Accepted>> {
        let mut receivers = self.handoff_receivers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        receivers[shard.index()].take().expect("each shard takes its accepted connections' queue once")
    }

    /// The shard that holds the connection to `peer` in this process.
    fn connection_shard(&self, peer: Peer) -> ShardId {
        connection_shard(self.config.replica, peer, self.shard_count)
    }

    /// The shard a group of `namespace` runs on.
    fn shard_of(&self, namespace: u64) -> ShardId {
        if namespace == METADATA_NAMESPACE {
            return ShardId::METADATA;
        }
        route_partition(Namespace(namespace), self.shard_count)
    }
}

/// Which connection each peer of one shard is on: the newest one; a replaced one's outbox is dropped by the
/// `Connected` of its successor.
#[derive(Debug, Default)]
struct Outboxes {
    replicas: BTreeMap<u8, Outbox>,
    clients: BTreeMap<u128, Outbox>,
}

impl Outboxes {
    fn send(&mut self, outbound: Outbound) {
        match outbound {
            // No connection now: lost like any frame; VSR retransmits.
            Outbound::Replica(to, bytes) => {
                if let Some(outbox) = self.replicas.get(&to)
                    && outbox.send(bytes) == Err(SendDropped::Closed)
                {
                    self.replicas.remove(&to);
                }
            }
            // A client that went away retries on a new connection and gets
            // the cached reply then.
            Outbound::Client(client, bytes) => {
                if let Some(outbox) = self.clients.get(&client)
                    && outbox.send(bytes) == Err(SendDropped::Closed)
                {
                    self.clients.remove(&client);
                }
            }
        }
    }
}

/// The node's world in the server, one per shard: sends go to the sockets
/// this shard holds or hop to the shard that holds them, hooks feed metrics.
struct World {
    shard: ShardId,
    process: Arc<Process>,
    /// The send queues of the sockets this shard holds.
    outboxes: Rc<RefCell<Outboxes>>,
    namespaces: Vec<u64>,
    /// When each storage action in flight began, by group, action and op
    /// (prepares and a checkpoint run beside the node, several at once).
    storage_started: BTreeMap<(usize, &'static str, u64), Instant>,
    /// The metadata group committed: its catalogue may name new partitions.
    metadata_committed: bool,
    last_encoded: LastEncoded,
}

impl World {
    /// Out on the sockets of shard `via`: directly when this is it, else a
    /// hop into its outbound inbox (a full one drops, counted).
    fn send_out(&mut self, via: ShardId, variant: FrameVariant, outbound: Outbound) {
        assert!(self.process.shard_count.contains(via), "shard {} is a shard of this process", via.0);
        if via == self.shard {
            return self.outboxes.borrow_mut().send(outbound);
        }
        if let Err(error) = self.process.outbound[via.index()].try_send(outbound) {
            self.process.drops[via.index()].bump(variant, drop_reason(&error));
        }
    }
}

/// Why a hop's `try_send` failed, as `frame_drops_total` names it: a full
/// inbox, or one whose shard has stopped (the process is shutting down).
fn drop_reason<T>(error: &TrySendError<T>) -> DropReason {
    match error {
        TrySendError::Full(_) => DropReason::InboxFull,
        TrySendError::Disconnected(_) => DropReason::Closed,
    }
}

impl NodeBus for World {
    fn send_to_replica(&mut self, via: ShardId, to: u8, message: Message) {
        let frame = self.last_encoded.frame(&message);
        self.send_out(via, FrameVariant::Consensus, Outbound::Replica(to, frame));
    }

    fn reply_to_client(&mut self, via: ShardId, client: u128, message: Message) {
        self.send_out(via, FrameVariant::ClientReply, Outbound::Client(client, OutFrame::new(message.encode())));
    }

    fn reply_frame_to_client(&mut self, via: ShardId, client: u128, frame: Vec<u8>) {
        self.send_out(via, FrameVariant::ClientReply, Outbound::Client(client, OutFrame::new(frame)));
    }

    fn client_shard(&self, client: u128) -> ShardId {
        self.process.connection_shard(Peer::Client(client))
    }
}

impl NodeHooks for World {
    fn before_storage(&mut self, group: usize, action: &Action) {
        if self.storage_started.len() >= STORAGE_TIMINGS_MAX {
            // Metrics only: a group that stopped may have left starts behind.
            self.storage_started.clear();
        }
        self.storage_started.insert(storage_timing_key(group, action), Instant::now());
    }

    fn after_storage(
        &mut self,
        group: usize,
        action: &Action,
        error: Option<&StorageError>,
    ) -> shoal_shard::node::Flow {
        if let (Some(started), None) = (self.storage_started.remove(&storage_timing_key(group, action)), error) {
            let labels = StorageLabels { action: action_name(action) };
            self.process
                .metrics
                .storage_latency_seconds
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
        }
        shoal_shard::node::Flow::Continue
    }

    fn on_compaction_installed(&mut self, _group: usize, window_ns: u64, prepares_released: usize) {
        let labels = StorageLabels { action: "compaction_window" };
        let seconds = window_ns as f64 / 1e9;
        self.process.metrics.storage_latency_seconds.get_or_create(&labels).observe(seconds);
        // Made durable by the window's flushes, which counted none of them.
        self.process.metrics.flushed_prepares.inc_by(prepares_released as u64);
    }

    fn on_committed(&mut self, group: usize, committed: &[Committed]) {
        // One commit per op: a packed op's requests follow its first (index 0).
        let ops = committed.iter().filter(|request| request.index == 0).count() as u64;
        let metrics = &self.process.metrics;
        metrics.commits.inc_by(ops);
        metrics.committed_requests.inc_by(committed.len() as u64);
        metrics.shard_commits.get_or_create(&ServerMetrics::shard_labels(self.shard)).inc_by(ops);
        if self.namespaces.get(group) == Some(&METADATA_NAMESPACE) {
            self.metadata_committed = true;
        }
    }

    fn on_journal_flushed(&mut self, _group: usize, prepares: usize) {
        self.process.metrics.journal_flushes.inc();
        self.process.metrics.flushed_prepares.inc_by(prepares as u64);
    }

    fn on_view(&mut self, group: usize, view: u64, status: Status) {
        self.process.metrics.view_changes.inc();
        let namespace = self.namespaces.get(group).copied().unwrap_or_default();
        tracing::info!(shard = self.shard.0, namespace = format_args!("{namespace:#x}"), view, ?status, "view change");
    }

    fn on_committed_conflict(&mut self, group: usize, why: &str) {
        tracing::error!(group, why, "a peer offered a log contradicting committed ops (refused)");
    }

    /// The real hops happen around the node: an inbound frame hopped into
    /// this shard's inbox before the node saw it (the connection's
    /// callback), an outbound one hops in `send_out`, which counts a full
    /// inbox. Any other hop would be a misroute.
    fn hop(&mut self, from: ShardId, to: ShardId, _variant: FrameVariant) -> Result<(), DropReason> {
        if to == self.shard || from == self.shard {
            return Ok(());
        }
        Err(DropReason::ConsensusMisroute)
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

/// The metadata group's pipeline depth: its requests (streams, topics,
/// sessions) are rare, so the default of partitions serves it.
const METADATA_PIPELINE_PREPARES_MAX: usize = crate::config::PIPELINE_PREPARES_DEFAULT;
const _: () = assert!(METADATA_PIPELINE_PREPARES_MAX <= PIPELINE_PREPARES_MAX);

fn replica_config(config: &HostConfig, namespace: u64, seed: u64) -> ReplicaConfig {
    let (journal_slot_count, message_size_max_bytes) = journal_geometry(config, namespace);
    ReplicaConfig {
        cluster: config.cluster,
        namespace,
        replica: config.replica,
        replica_count: config.replica_count,
        journal_slot_count,
        checkpoint_interval_ops: if namespace == METADATA_NAMESPACE {
            crate::config::checkpoint_interval_ops(journal_slot_count)
        } else {
            config.checkpoint_interval_ops
        },
        seed,
        client_sessions_max: config.client_sessions_max,
        message_size_max_bytes,
        pipeline_prepares_max: if namespace == METADATA_NAMESPACE {
            METADATA_PIPELINE_PREPARES_MAX
        } else {
            config.pipeline_prepares_max
        },
        checkpoint_chunks_per_answer_max: shoal_vsr::state_transfer::CHECKPOINT_CHUNKS_PER_ANSWER_MAX,
    }
}

/// Open a group from its files, or format it when it has none yet (a new
/// cluster, or a topic created since the last start), on shard `shard`:
/// rejoining when `rejoin_if_new` (`formats_rejoining`), else new.
async fn open_group(
    io: &RealIo,
    config: &HostConfig,
    namespace: u64,
    shard: ShardId,
    rejoin_if_new: bool,
) -> Result<Group<RealIo>, HostError> {
    let dir = config.data_dir.as_path();
    let storage_error = |error| HostError::Storage { namespace, dir: dir.to_path_buf(), error };
    // A salvage is logged by the open; the cut offsets come back from peers.
    let (machine, _salvage) =
        GroupMachine::open_in_cluster(io, dir, namespace, config.replica_count, PartitionLogConfig::default())
            .await
            .map_err(|error| HostError::Partition { namespace, error: error.to_string() })?;
    let seed = io.entropy_u64();
    let replica_config = replica_config(config, namespace, seed);
    // A group whose superblock or checkpoint lost both copies does not stop
    // the replica: it is formatted again and rejoins through its peers
    // (logged by the storage; `GroupStorage::open_or_rejoin`).
    match GroupStorage::open_or_rejoin(io, dir, storage_config(config, namespace), config.replica_count).await {
        Ok((storage, recovered, _damage)) => {
            let replica = Replica::open(replica_config, machine, recovered)
                .map_err(|error| HostError::Checkpoint { namespace, error: error.to_string() })?;
            Ok(Group::new(namespace, shard, storage, replica))
        }
        // In a dir formatted to rejoin, this group may have existed before
        // the disk was lost (this replica may have acknowledged its
        // prepares): it rejoins before it votes.
        Err(StorageError::Superblock(SuperblockError::Missing { .. })) if rejoin_if_new => {
            debug_assert!(config.rejoining, "only a dir formatted to rejoin formats groups rejoining");
            tracing::info!(shard = shard.0, namespace = format_args!("{namespace:#x}"), "formatting a rejoining group");
            let storage = GroupStorage::format_rejoining(io, dir, storage_config(config, namespace))
                .await
                .map_err(storage_error)?;
            Ok(Group::new(namespace, shard, storage, Replica::rejoin(replica_config, machine)))
        }
        Err(StorageError::Superblock(SuperblockError::Missing { .. })) => {
            tracing::info!(shard = shard.0, namespace = format_args!("{namespace:#x}"), "formatting a new group");
            let storage =
                GroupStorage::format(io, dir, storage_config(config, namespace)).await.map_err(storage_error)?;
            Ok(Group::new(namespace, shard, storage, Replica::new(replica_config, machine)))
        }
        Err(error) => Err(storage_error(error)),
    }
}

/// Before the start-up replay of a dir formatted to rejoin: format the
/// metadata group rejoining when it has no files yet (the replay would
/// otherwise format it as a new group, one that may vote with an empty
/// log). Returns whether it formatted.
pub async fn format_metadata_rejoining(
    io: &RealIo,
    data_dir: &std::path::Path,
    cluster: u128,
    replica: u8,
) -> Result<bool, HostError> {
    let journal = metadata_journal_config(cluster);
    let namespace = METADATA_NAMESPACE;
    let config = StorageConfig {
        cluster,
        namespace,
        replica,
        slot_count: journal.slot_count,
        message_size_max_bytes: journal.message_size_max_bytes,
    };
    let storage_error = |error| HostError::Storage { namespace, dir: data_dir.to_path_buf(), error };
    match GroupStorage::open(io, data_dir, config).await {
        Ok(_) => Ok(false),
        Err(StorageError::Superblock(SuperblockError::Missing { .. })) => {
            tracing::info!("formatting the metadata group rejoining (data dir formatted with --rejoin)");
            GroupStorage::format_rejoining(io, data_dir, config).await.map_err(storage_error)?;
            Ok(true)
        }
        Err(error) => Err(storage_error(error)),
    }
}

/// Whether a group this replica has no files for, of a topic the metadata
/// op `created_op` created, must be formatted rejoining. Only in a dir
/// formatted with `--rejoin`, and only for a topic that may have existed
/// before the disk was lost: while the metadata group still rejoins, any
/// topic; once it rejoined, a topic created at or below its `nack_floor`
/// (every op committed before the loss is at or below it, `Replica::nack_floor`).
/// A topic created above it was committed after the loss, so this
/// replica's lost disk never held its groups: new, as on every replica.
/// A creation op of 0 (unknown: an old snapshot) is at or below any floor.
fn formats_rejoining(dir_rejoining: bool, metadata_rejoining: bool, nack_floor: u64, created_op: u64) -> bool {
    dir_rejoining && (metadata_rejoining || created_op <= nack_floor)
}

/// Publish the partition groups the metadata group's catalogue names
/// (shard 0 only), at most `PARTITION_GROUPS_MAX` of them.
fn publish_catalogue(node: &Node<RealIo>, process: &Process) {
    let Some(metadata_group) = node.group_of(METADATA_NAMESPACE) else { return };
    let replica = node.group(metadata_group).replica();
    let Some(metadata) = replica.state_machine().metadata() else { return };
    let (metadata_rejoining, nack_floor) = (replica.is_rejoining(), replica.nack_floor());
    let mut namespaces: Vec<Hosted> = metadata
        .partitions_created()
        .into_iter()
        .map(|(namespace, created_op)| Hosted {
            namespace: namespace.raw(),
            rejoin_if_new: formats_rejoining(process.config.rejoining, metadata_rejoining, nack_floor, created_op),
        })
        .collect();
    namespaces.sort_unstable();
    if namespaces.len() > PARTITION_GROUPS_MAX {
        tracing::error!(
            partitions = namespaces.len(),
            "the catalogue names more partitions than a replica hosts ({PARTITION_GROUPS_MAX}); opening the first"
        );
        namespaces.truncate(PARTITION_GROUPS_MAX);
    }
    process.catalogue.publish(namespaces);
}

/// Run shard `shard` of this replica until shutdown or until its node stops
/// (a storage error: the process exits and its supervisor restarts it from
/// the disk). Every shard of the process runs this with the same `process`.
pub async fn run(io: RealIo, shard: ShardId, process: Arc<Process>, shutdown: ShutdownFlag) -> Result<(), HostError> {
    assert!(process.shard_count.contains(shard), "shard {} runs in this process", shard.0);
    // No blocking fsync on the shard's thread until the serving loop sees
    // how loaded the node is (`Serving::choose_inline_sync`).
    io.set_inline_sync(false);
    let config = process.config.clone();
    let inbound = process.take_receiver(shard);
    let mut groups = Vec::new();
    if shard == ShardId::METADATA {
        // Formatted rejoining before the start-up replay already, when the
        // dir asks (`format_metadata_rejoining`).
        groups.push(open_group(&io, &config, METADATA_NAMESPACE, shard, config.rejoining).await?);
    }
    let node_config = NodeConfig {
        cluster: config.cluster,
        replica: config.replica,
        replica_count: config.replica_count,
        shard_count: process.shard_count,
        data_dir: config.data_dir.clone(),
        scrub_bytes_per_tick: config.scrub_bytes_per_second.div_ceil(1_000_000_000 / TICK_NS),
    };
    let mut node =
        Node::new(io.clone(), node_config, groups, process.owners.clone(), process.drops[shard.index()].clone());
    // The catalogue recovered from disk names the partitions to open. Every
    // shard opens its own before the connections open: a client must not
    // be told a partition is missing because its shard was still starting.
    if shard == ShardId::METADATA {
        publish_catalogue(&node, &process);
    } else if !wait_until(&io, &shutdown, || process.catalogue.version.load(Ordering::Acquire) != 0).await {
        return Ok(());
    }
    let mut catalogue_seen = 0;
    open_new_partitions(&io, &process, shard, &mut node, &mut catalogue_seen).await?;
    process.shards_ready.fetch_add(1, Ordering::AcqRel);
    let shard_count = usize::from(process.shard_count.get());
    if !wait_until(&io, &shutdown, || process.shards_ready.load(Ordering::Acquire) == shard_count).await {
        return Ok(());
    }

    let outboxes = Rc::new(RefCell::new(Outboxes::default()));
    let _bus = start_bus(&process, shard, &outboxes).await?;
    let mut world = World {
        shard,
        process: process.clone(),
        outboxes,
        namespaces: namespaces(&node),
        storage_started: BTreeMap::new(),
        metadata_committed: false,
        last_encoded: LastEncoded::default(),
    };
    // A group's fsync runs beside the node: the loop takes frames, counts
    // votes and sends what is durable meanwhile (`Serving::serve`).
    node.start(&mut world).await?;
    tracing::info!(replica = config.replica, shard = shard.0, groups = node.group_count(), "shard serving");
    let mut serving = Serving { io: &io, shard, process: &process, catalogue_seen, calm_choices: 0 };
    serving.serve(&shutdown, &mut node, &mut world, &inbound).await
}

/// Poll `ready` every `READY_POLL_NS` until it holds (`true`) or shutdown
/// is requested (`false`): a shard that failed at start-up flips the flag,
/// so no other shard waits for it forever.
async fn wait_until(io: &RealIo, shutdown: &ShutdownFlag, ready: impl Fn() -> bool) -> bool {
    while !ready() {
        if shutdown.is_requested() {
            return false;
        }
        io.sleep(READY_POLL_NS).await;
    }
    true
}

fn namespaces(node: &Node<RealIo>) -> Vec<u64> {
    (0..node.group_count()).map(|group| node.group(group).namespace()).collect()
}

/// Open the groups of the published catalogue that hash to `shard` and
/// `node` does not host yet.
async fn open_new_partitions(
    io: &RealIo,
    process: &Process,
    shard: ShardId,
    node: &mut Node<RealIo>,
    catalogue_seen: &mut u64,
) -> Result<(), HostError> {
    let Some(namespaces) = process.catalogue.changed_since(catalogue_seen) else { return Ok(()) };
    for Hosted { namespace, rejoin_if_new } in namespaces {
        if process.shard_of(namespace) != shard || node.group_of(namespace).is_some() {
            continue;
        }
        let group = open_group(io, &process.config, namespace, shard, rejoin_if_new).await?;
        node.add_group(group);
    }
    Ok(())
}

/// What the inline-fsync choice knows of where the shard runs.
#[derive(Debug, Clone, Copy)]
struct SyncPlace {
    /// The cluster has one replica: no peer waits on this thread.
    alone: bool,
    /// The connection shard of a process with several shards.
    serves_other_shards: bool,
}

impl SyncPlace {
    /// From the calm choices so far and the requests the node holds now:
    /// the new count of calm choices in a row, and whether the flushes that
    /// start next may block the thread with their fsync.
    fn choose(self, calm_choices: u32, requests_held: u64) -> (u32, bool) {
        let calm_choices = match requests_held <= INLINE_SYNC_REQUESTS_HELD_MAX {
            true => calm_choices.saturating_add(1),
            false => 0,
        };
        let lightly_loaded = calm_choices >= INLINE_SYNC_CALM_CHOICES_MIN;
        (calm_choices, self.may_inline() && lightly_loaded)
    }

    /// Whether a flush here may ever block the thread with its fsync.
    fn may_inline(self) -> bool {
        self.alone && !self.serves_other_shards
    }
}

/// One shard's serving loop and what it remembers between turns.
struct Serving<'a> {
    io: &'a RealIo,
    shard: ShardId,
    process: &'a Process,
    catalogue_seen: u64,
    /// How many inline-fsync choices in a row found the node lightly
    /// loaded (`choose_inline_sync`), saturating.
    calm_choices: u32,
}

impl Serving<'_> {
    /// The loop: frames to the node as they come, the timer every `TICK_NS`,
    /// the catalogue checked every turn.
    async fn serve(
        &mut self,
        shutdown: &ShutdownFlag,
        node: &mut Node<RealIo>,
        world: &mut World,
        inbound: &AsyncRx<Array<Inbound>>,
    ) -> Result<(), HostError> {
        let mut next_tick_ns = self.io.now_ns() + TICK_NS;
        while !shutdown.is_requested() {
            let wait_ns = next_tick_ns.saturating_sub(self.io.now_ns());
            let woke = next_wake(node, inbound, wait_ns).await;
            if let Wake::FlushEnded = woke {
                // A group's fsync ended: what waited for it leaves, and the
                // next flush (what was staged meanwhile) starts.
                self.choose_inline_sync(node);
                node.complete_flushes(world).await?;
            }
            if let Wake::Frame(first) = woke {
                // A topic shard 0 just published may be what these frames
                // are for: open its groups first rather than refuse them.
                self.open_published(node, world).await?;
                // Group commit: the prepares of every frame read in this
                // turn are flushed together at its end (the node holds what
                // promises them until then).
                node.begin_turn();
                deliver(node, world, *first).await?;
                let mut frames = 1;
                while frames < FRAMES_PER_TURN_MAX {
                    let Ok(next) = inbound.try_recv() else { break };
                    deliver(node, world, next).await?;
                    frames += 1;
                }
                self.choose_inline_sync(node);
                node.end_turn(world).await?;
                self.process.metrics.turns.inc();
                self.process.metrics.turn_frames.inc_by(frames as u64);
            }
            if std::mem::take(&mut world.metadata_committed) {
                publish_catalogue(node, self.process);
            }
            self.open_published(node, world).await?;
            let now_ns = self.io.now_ns();
            if now_ns >= next_tick_ns {
                node.tick(now_ns, world).await?;
                record_status(node, self.shard, &self.process.metrics);
                next_tick_ns = now_ns + TICK_NS;
            }
        }
        tracing::info!(shard = self.shard.0, "shutdown: the shard stops serving");
        Ok(())
    }

    /// Let the flushes that start next block the thread with their fsync
    /// when nothing else waits on it (`INLINE_SYNC_REQUESTS_HELD_MAX`):
    /// never with peers, never on the connection shard of a process with
    /// several shards (its thread reads and writes every socket of the others).
    fn choose_inline_sync(&mut self, node: &Node<RealIo>) {
        let place = SyncPlace {
            alone: self.process.config.replica_count == 1,
            serves_other_shards: self.shard == ACCEPT_SHARD && self.process.shard_count.get() > 1,
        };
        if !place.may_inline() {
            // Never inline here: no need to walk every group for its load
            // on each turn (a replica hosts up to `PARTITION_GROUPS_MAX`).
            return;
        }
        let (calm_choices, inline) = place.choose(self.calm_choices, node.requests_held());
        self.calm_choices = calm_choices;
        self.io.set_inline_sync(inline);
    }

    /// Open the groups of a newer published catalogue that hash to this shard.
    async fn open_published(&mut self, node: &mut Node<RealIo>, world: &mut World) -> Result<(), HostError> {
        let groups_before = node.group_count();
        open_new_partitions(self.io, self.process, self.shard, node, &mut self.catalogue_seen).await?;
        if node.group_count() != groups_before {
            world.namespaces = namespaces(node);
        }
        Ok(())
    }
}

/// Storage actions in flight whose start a shard keeps for its latency
/// metric (a flush's prepares, a checkpoint beside the node, one more).
const STORAGE_TIMINGS_MAX: usize = 4096;

/// The key a storage action's start is kept under until it is durable.
fn storage_timing_key(group: usize, action: &Action) -> (usize, &'static str, u64) {
    let op = match action {
        Action::WritePrepare { message } => message.header.op,
        _ => 0,
    };
    (group, action_name(action), op)
}

/// What woke a shard's loop.
enum Wake {
    /// A group's fsync ended (polled first: a completion sends what waits).
    FlushEnded,
    /// The first frame of a turn (boxed: one allocation per turn keeps the
    /// wake small).
    Frame(Box<Inbound>),
    /// The timer is due, or the inbox closed.
    Timeout,
}

/// Wait for the first of: a running fsync of the node's groups ended, a
/// frame in the inbox, `wait_ns` passed.
async fn next_wake(node: &mut Node<RealIo>, inbound: &AsyncRx<Array<Inbound>>, wait_ns: u64) -> Wake {
    let received = compio::time::timeout(Duration::from_nanos(wait_ns), inbound.recv());
    let mut received = std::pin::pin!(received);
    std::future::poll_fn(|cx| {
        if node.poll_flushes(cx) {
            return std::task::Poll::Ready(Wake::FlushEnded);
        }
        match received.as_mut().poll(cx) {
            std::task::Poll::Ready(Ok(Ok(frame))) => std::task::Poll::Ready(Wake::Frame(Box::new(frame))),
            std::task::Poll::Ready(_) => std::task::Poll::Ready(Wake::Timeout),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await
}

/// A body this large stays in its frame's buffer when handed to the node
/// (`frame_body`); a smaller one is copied out, which costs less than
/// keeping the buffer's spare capacity alive with it.
const BODY_IN_FRAME_BYTES_MIN: usize = 16 * 1024;

/// A received frame's body as the node keeps it: a large one left in the
/// frame's buffer (no copy of up to a MiB on every replica's receive path)
/// unless that buffer holds more than a sixteenth of spare capacity (the
/// decoder's reads may have reserved past the frame, and a replica keeps
/// a prepare's body for as long as its log holds the op); anything else
/// copied into a body of its own.
fn frame_body(frame: Vec<u8>) -> Body {
    let body_bytes = frame.len() - HEADER_SIZE_BYTES;
    let spare_bytes = frame.capacity() - frame.len();
    if body_bytes >= BODY_IN_FRAME_BYTES_MIN && spare_bytes <= frame.len() / 16 {
        return Body::in_frame(frame, HEADER_SIZE_BYTES);
    }
    Body::from(&frame[HEADER_SIZE_BYTES..])
}

/// Hand one frame to the node. It was read on shard `arrival` and hopped
/// here (when this is another shard) in the connection's callback.
async fn deliver(node: &mut Node<RealIo>, world: &mut World, (peer, arrival, frame): Inbound) -> Result<(), HostError> {
    let source = match peer {
        Peer::Replica(index) => Source::Replica(index),
        Peer::Client(id) => Source::Client(id),
    };
    // The connection decoder verified the header and the body against it.
    let message = Message::from_verified_frame(frame.header, frame_body(frame.bytes));
    node.on_frame(source, arrival, message, world).await?;
    Ok(())
}

fn record_status(node: &Node<RealIo>, shard: ShardId, metrics: &ServerMetrics) {
    let mut drops: BTreeMap<&'static str, u64> = BTreeMap::new();
    for group in 0..node.group_count() {
        for (reason, count) in &node.group(group).replica().stats().drops {
            *drops.entry(reason).or_default() += count;
        }
    }
    for (reason, count) in drops {
        let labels = crate::metrics::DropLabels { reason, shard: shard.0 };
        metrics.replica_drops.get_or_create(&labels).set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    for group in 0..node.group_count() {
        let g = node.group(group);
        let labels = ServerMetrics::group_labels(g.namespace(), shard);
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

/// Shard `shard`'s bus: the dials to the peers whose connection it holds,
/// the connections handed to it, the task that writes what other shards
/// send out through its sockets, and on `ACCEPT_SHARD` the listeners.
async fn start_bus(process: &Arc<Process>, shard: ShardId, outboxes: &Rc<RefCell<Outboxes>>) -> Result<Bus, HostError> {
    let config = &process.config;
    let metrics = &process.bus_metrics;
    let bus_config = BusConfig {
        message_size_max_bytes: config.message_size_max_bytes,
        idle_timeout: config.idle_timeout,
        ..BusConfig::new(config.cluster, Peer::Replica(config.replica))
    };
    let ownership = Ownership { table: process.owners.clone(), shard };
    let on_event = on_event(shard, outboxes.clone(), process.clone());
    let mut tasks = Vec::new();
    if shard == ACCEPT_SHARD {
        tasks.extend(start_listeners(process, &bus_config, &ownership, &on_event).await?);
    }
    {
        // Connections the accept shard placed here. Each holds a place in
        // its listener's limit until it ends.
        let handoffs = process.take_handoff_receiver(shard);
        let (bus_config, metrics, ownership, on_event) =
            (bus_config.clone(), metrics.clone(), ownership.clone(), on_event.clone());
        tasks.push(compio::runtime::spawn(async move {
            while let Ok(accepted) = handoffs.recv().await {
                spawn_accepted(accepted, &bus_config, &metrics, &ownership, &on_event);
            }
        }));
    }
    let local = config.replica;
    for remote in replicas_to_dial(local, config.replica_count) {
        if process.connection_shard(Peer::Replica(remote)) != shard {
            continue;
        }
        let address = config.replica_addresses[usize::from(remote)];
        let (bus_config, metrics, ownership, on_event) =
            (bus_config.clone(), metrics.clone(), ownership.clone(), on_event.clone());
        let seed = (u64::from(local) << 8) | u64::from(remote);
        tasks.push(compio::runtime::spawn(async move {
            let mut backoff = Backoff::new(seed);
            dial_forever(address, remote, &bus_config, &metrics, Some(&ownership), &on_event, &mut backoff).await;
        }));
    }
    let outbound = process.take_outbound_receiver(shard);
    let outboxes = outboxes.clone();
    tasks.push(compio::runtime::spawn(async move {
        // Ends when every sender is gone (the process is stopping) or when
        // this task is dropped with the bus.
        while let Ok(frame) = outbound.recv().await {
            outboxes.borrow_mut().send(frame);
        }
    }));
    Ok(Bus { _tasks: tasks })
}

/// Run an accepted connection on this shard, as a task of its own.
fn spawn_accepted(
    accepted: Accepted,
    config: &BusConfig,
    metrics: &Arc<BusMetrics>,
    ownership: &Ownership,
    on_event: &OnEvent,
) {
    let (config, metrics, ownership, on_event) = (config.clone(), metrics.clone(), ownership.clone(), on_event.clone());
    // Every connection may claim the owner slot: only a hello the decoder
    // accepted as a replica's (on the replica listener) does.
    compio::runtime::spawn(async move { accepted.run(&config, &metrics, Some(&ownership), &on_event).await }).detach();
}

/// Bind the replica and client listeners on `ACCEPT_SHARD` and start
/// placing what they accept (`place_accepted`).
async fn start_listeners(
    process: &Arc<Process>,
    bus_config: &BusConfig,
    ownership: &Ownership,
    on_event: &OnEvent,
) -> Result<Vec<compio::runtime::JoinHandle<()>>, HostError> {
    let config = &process.config;
    let bind = |what, address, expect| {
        let (bus_config, metrics) = (bus_config.clone(), process.bus_metrics.clone());
        async move {
            Listener::bind(address, expect, bus_config, metrics).await.map_err(|source| HostError::Bind {
                what,
                address,
                source,
            })
        }
    };
    let replica_address = config.replica_addresses[usize::from(config.replica)];
    let replicas =
        bind("replica bus", replica_address, Expect::Inbound { local_replica: Some(config.replica), clients: false })
            .await?;
    let clients =
        bind("clients", config.client_address, Expect::Inbound { local_replica: None, clients: true }).await?;
    let place: Rc<dyn Fn(Accepted)> = {
        let (process, bus_config, ownership, on_event) =
            (process.clone(), bus_config.clone(), ownership.clone(), on_event.clone());
        Rc::new(move |accepted| place_accepted(&process, accepted, &bus_config, &ownership, &on_event))
    };
    let mut tasks = Vec::new();
    for listener in [replicas, clients] {
        let place = place.clone();
        tasks.push(compio::runtime::spawn(async move { listener.accept_hellos(place).await }));
    }
    Ok(tasks)
}

/// Run an accepted connection on the shard that holds its peer
/// (`connection_shard`), here or through that shard's bounded queue. A
/// hello that names no peer is run here, and its decoder closes it with
/// the reason counted.
fn place_accepted(
    process: &Process,
    accepted: Accepted,
    config: &BusConfig,
    ownership: &Ownership,
    on_event: &OnEvent,
) {
    let shard = accepted.peer.map_or(ownership.shard, |peer| process.connection_shard(peer));
    if shard == ownership.shard {
        return spawn_accepted(accepted, config, &process.bus_metrics, ownership, on_event);
    }
    if let Err(error) = process.handoffs[shard.index()].try_send(accepted) {
        // Dropping the socket closes it; the peer reconnects.
        BusMetrics::bump(&process.bus_metrics.handoffs_dropped);
        let why = match error {
            TrySendError::Full(_) => "full",
            TrySendError::Disconnected(_) => "stopped",
        };
        tracing::warn!(shard = shard.0, why, "closing an accepted connection: its shard's queue is {why}");
    }
}

/// Shard `shard`'s connections' callback: remember each peer's outbox,
/// count the connections, and hop each frame into the inbox of the shard
/// whose node handles it (the node's own route). A frame no route takes
/// goes to this shard's node, which counts it.
fn on_event(shard: ShardId, outboxes: Rc<RefCell<Outboxes>>, process: Arc<Process>) -> OnEvent {
    let metrics = process.metrics.clone();
    let connections = move |peer: Peer| {
        let kind = match peer {
            Peer::Replica(_) => "replica",
            Peer::Client(_) => "client",
        };
        metrics.shard_connections.get_or_create(&ConnectionLabels { shard: shard.0, peer: kind }).clone()
    };
    Rc::new(move |event| match event {
        BusEvent::Connected { peer, outbox } => {
            connections(peer).inc();
            let mut outboxes = outboxes.borrow_mut();
            match peer {
                Peer::Replica(index) => outboxes.replicas.insert(index, outbox.clone()),
                Peer::Client(id) => outboxes.clients.insert(id, outbox.clone()),
            };
        }
        BusEvent::Frame { peer, frame, .. } => {
            let source = match peer {
                Peer::Replica(index) => Source::Replica(index),
                Peer::Client(id) => Source::Client(id),
            };
            let (target, variant) = route_inbound(source, &frame.header, process.shard_count)
                .unwrap_or((shard, FrameVariant::ClientForward));
            if let Err(error) = process.inboxes[target.index()].try_send((peer, shard, frame)) {
                process.drops[shard.index()].bump(variant, drop_reason(&error));
            }
        }
        // Not forgotten here: a newer connection of the same peer may have
        // registered already, and this close must not remove it. A closed
        // outbox is dropped at the next send that fails on it.
        BusEvent::Closed { peer: Some(peer), .. } => {
            connections(peer).dec();
        }
        BusEvent::Closed { peer: None, .. } => {}
    })
}

#[cfg(test)]
mod tests {
    use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, Header};

    use super::*;
    use crate::bus::Hello;
    use crate::bus::net::OpenSlot;

    /// Choices in a row from `calm_choices` with `held` requests each.
    fn choose_times(place: SyncPlace, calm_choices: u32, held: u64, times: u32) -> (u32, bool) {
        (0..times).fold((calm_choices, false), |(calm, _), _| place.choose(calm, held))
    }

    #[test]
    fn a_lone_replica_fsyncs_inline_only_after_a_calm_stretch() {
        let lone = SyncPlace { alone: true, serves_other_shards: false };
        let (calm, inline) = choose_times(lone, 0, 1, INLINE_SYNC_CALM_CHOICES_MIN - 1);
        assert!(!inline, "one choice short of the calm stretch");
        let (calm, inline) = lone.choose(calm, 0);
        assert!(inline, "a calm stretch of one request at a time");
        let (calm, inline) = lone.choose(calm, 2);
        assert_eq!((calm, inline), (0, false), "two requests held end the stretch at once");
        let (_, inline) = choose_times(lone, calm, 1, INLINE_SYNC_CALM_CHOICES_MIN);
        assert!(inline, "a new stretch allows it again");
        let (calm, _) = choose_times(lone, u32::MAX - 1, 0, 4);
        assert_eq!(calm, u32::MAX, "the count saturates");
    }

    #[test]
    fn with_peers_or_on_a_connection_shard_no_fsync_blocks_the_thread() {
        for place in [
            SyncPlace { alone: false, serves_other_shards: false },
            SyncPlace { alone: true, serves_other_shards: true },
            SyncPlace { alone: false, serves_other_shards: true },
        ] {
            let (calm, inline) = choose_times(place, 0, 0, 4 * INLINE_SYNC_CALM_CHOICES_MIN);
            assert_eq!((calm, inline), (4 * INLINE_SYNC_CALM_CHOICES_MIN, false), "{place:?}");
        }
    }

    /// A message sent to several replicas in a row (a prepare's fan-out)
    /// is encoded once: every send shares that frame, whose bytes are the
    /// message's wire bytes; another message, or the same header over
    /// another body buffer, is encoded again.
    #[test]
    fn a_message_sent_to_several_replicas_is_encoded_once() {
        let mut last_encoded = LastEncoded::default();
        let mut header = Header::new(Command::Prepare, 7);
        header.op = 3;
        let prepare = Message::new(header, vec![5u8; 4096]);
        let to_first = last_encoded.frame(&prepare);
        let to_second = last_encoded.frame(&prepare.clone());
        assert!(Arc::ptr_eq(&to_first, &to_second), "the second backup's frame is the first's");
        assert_eq!(*to_first, prepare.encode());

        header.op = 4;
        let next = Message::new(header, vec![5u8; 4096]);
        let to_next = last_encoded.frame(&next);
        assert!(!Arc::ptr_eq(&to_first, &to_next), "another message has a frame of its own");
        assert_eq!(*to_next, next.encode());

        let same_bytes_elsewhere = Message::new(header, vec![5u8; 4096]);
        let again = last_encoded.frame(&same_bytes_elsewhere);
        assert!(!Arc::ptr_eq(&to_next, &again), "a body in another buffer is encoded again");
        assert_eq!(*again, next.encode());
        assert_eq!(*to_first, prepare.encode(), "a shared frame outlives the slot's next message");
    }

    /// A large body whose frame has little spare capacity stays in the
    /// frame; a small one, or one whose buffer reserved much more, is
    /// copied into a body of its own; either way the node reads the same
    /// bytes.
    #[test]
    fn a_large_body_stays_in_its_frame_unless_the_buffer_is_much_larger() {
        let frame_of = |body_bytes: usize, spare_bytes: usize| {
            let mut frame = Vec::with_capacity(HEADER_SIZE_BYTES + body_bytes + spare_bytes);
            frame.resize(HEADER_SIZE_BYTES, 0);
            frame.extend((0..body_bytes).map(|i| i as u8));
            frame
        };
        let kept_in_frame = |frame: Vec<u8>| {
            let (body_address, expected) =
                (frame.as_ptr() as usize + HEADER_SIZE_BYTES, frame[HEADER_SIZE_BYTES..].to_vec());
            let body = frame_body(frame);
            assert_eq!(&body[..], &expected[..]);
            body.as_ptr() as usize == body_address
        };
        assert!(kept_in_frame(frame_of(BODY_IN_FRAME_BYTES_MIN, 0)));
        assert!(kept_in_frame(frame_of(1 << 20, 64 * 1024)), "a read's reserve past a large frame is kept");
        assert!(!kept_in_frame(frame_of(BODY_IN_FRAME_BYTES_MIN - 1, 0)), "a small body is copied");
        assert!(!kept_in_frame(frame_of(BODY_IN_FRAME_BYTES_MIN, 1 << 20)), "a mostly empty buffer is not kept");
        assert!(frame_body(frame_of(0, 0)).is_empty());
    }

    fn process(shards: usize) -> Arc<Process> {
        let address: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let config = HostConfig {
            cluster: 7,
            replica: 0,
            replica_count: 3,
            replica_addresses: vec![address; 3],
            client_address: address,
            data_dir: PathBuf::from("/nonexistent"),
            journal_slot_count: 64,
            checkpoint_interval_ops: crate::config::checkpoint_interval_ops(64),
            message_size_max_bytes: 4096,
            pipeline_prepares_max: 4,
            client_sessions_max: 4,
            idle_timeout: Duration::from_secs(1),
            rejoining: false,
            scrub_bytes_per_second: 0,
        };
        let shard_count = ShardCount::new(shards).unwrap();
        let metrics = Arc::new(ServerMetrics::default());
        Arc::new(Process::new(config, shard_count, metrics, Arc::default()))
    }

    /// A peer's prepare for the first partition namespace that hashes to `shard`.
    fn prepare_for_shard(process: &Process, shard: ShardId) -> Frame {
        let namespace = (0..64)
            .map(|partition| Namespace::partition(1, 1, partition).unwrap().raw())
            .find(|&namespace| process.shard_of(namespace) == shard)
            .expect("some partition hashes to every shard");
        let mut header = Header::new(Command::Prepare, 7);
        header.namespace = namespace;
        Frame { header, bytes: vec![0; HEADER_SIZE_BYTES] }
    }

    #[test]
    fn a_frame_hops_to_its_shard_and_a_full_inbox_drops_it_counted() {
        let process = process(2);
        let outboxes = Rc::new(RefCell::new(Outboxes::default()));
        let callback = on_event(ShardId(0), outboxes, process.clone());
        let (outbox, _receiver) = crate::bus::outbox(4, 1 << 20, Arc::default());
        let frame = prepare_for_shard(&process, ShardId(1));
        for _ in 0..INBOUND_FRAMES_MAX + 3 {
            callback(BusEvent::Frame { peer: Peer::Replica(1), frame: frame.clone(), outbox: &outbox });
        }
        let shard_one = process.take_receiver(ShardId(1));
        let shard_zero = process.take_receiver(ShardId(0));
        assert_eq!(shard_one.len(), INBOUND_FRAMES_MAX, "shard 1's inbox holds its bound, no more");
        assert!(shard_zero.is_empty(), "nothing for shard 1 reaches shard 0");
        assert_eq!(process.drops[0].get(FrameVariant::Consensus, DropReason::InboxFull), 3);
    }

    #[test]
    fn only_a_topic_that_may_predate_the_lost_disk_formats_rejoining() {
        // A dir not formatted to rejoin never formats a group rejoining.
        assert!(!formats_rejoining(false, false, 40, 7));
        // While the metadata group rejoins, its floor is not final: every topic.
        assert!(formats_rejoining(true, true, 0, 90));
        // Once it rejoined at floor 40: a topic committed at or below it may
        // have had groups on the lost disk, one above it cannot have.
        assert!(formats_rejoining(true, false, 40, 40));
        assert!(formats_rejoining(true, false, 40, 12));
        assert!(!formats_rejoining(true, false, 40, 41));
        // An unknown creation op (an old snapshot) counts as old.
        assert!(formats_rejoining(true, false, 40, 0));
    }

    #[test]
    fn a_connection_accepted_for_a_shard_with_a_full_queue_is_closed_counted_and_frees_its_place() {
        let process = process(2);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let ownership = Ownership { table: process.owners.clone(), shard: ACCEPT_SHARD };
        let on_event = on_event(ACCEPT_SHARD, Rc::new(RefCell::new(Outboxes::default())), process.clone());
        let config = BusConfig::new(7, Peer::Replica(0));
        // Client 1 belongs to shard 1 (`id % 2`), which takes nothing yet.
        let mut dialed = Vec::new();
        for _ in 0..HANDOFFS_MAX + 1 {
            dialed.push(std::net::TcpStream::connect(address).unwrap());
            let (stream, _) = listener.accept().unwrap();
            let accepted = Accepted {
                stream,
                hello: Hello::new(7, Peer::Client(1)).encode(),
                peer: Some(Peer::Client(1)),
                expect: Expect::Inbound { local_replica: None, clients: true },
                slot: OpenSlot::take(&open),
            };
            place_accepted(&process, accepted, &config, &ownership, &on_event);
        }
        assert_eq!(process.take_handoff_receiver(ShardId(1)).len(), HANDOFFS_MAX, "shard 1's queue holds its bound");
        assert_eq!(process.bus_metrics.snapshot().handoffs_dropped, 1, "the one past it is closed and counted");
        assert_eq!(open.load(Ordering::Acquire), HANDOFFS_MAX, "the closed one gave its place back");
    }

    #[test]
    fn the_catalogue_reports_each_change_once() {
        let catalogue = Catalogue::default();
        let mut seen = 0;
        assert_eq!(catalogue.changed_since(&mut seen), None, "nothing published yet");
        catalogue.publish(Vec::new());
        assert_eq!(catalogue.changed_since(&mut seen), Some(Vec::new()), "the first publication counts, even empty");
        catalogue.publish(Vec::new());
        assert_eq!(catalogue.changed_since(&mut seen), None, "the same list is no change");
        let hosted = |namespace| Hosted { namespace, rejoin_if_new: false };
        catalogue.publish(vec![hosted(3), hosted(5)]);
        assert_eq!(catalogue.changed_since(&mut seen), Some(vec![hosted(3), hosted(5)]));
        assert_eq!(catalogue.changed_since(&mut seen), None);
    }
}
