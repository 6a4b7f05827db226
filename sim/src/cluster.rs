//! The cluster driver: R replica processes, their disks, the network and the
//! clients, advanced event by event in virtual time from one seed.
//!
//! Each process runs a `shoal_shard::node::Node`, the same library code the
//! server runs (action driver under the ordering contract, group storage,
//! partition persist, state data, hops). This module is only the world
//! around it: it delivers frames to the node and carries the node's sends
//! through the simulated network (`NodeBus`), and through `NodeHooks` it
//! rolls faults (storage errors before a storage action, crashes right after
//! a promise-bearing send or a storage completion), checks promises against
//! the durable disk and records commits, views and the trace.
//!
//! A run has a safety phase (faults on, per the `FaultMix`) and a liveness
//! phase (faults off, every replica restarted and unpaused, the network
//! healed): by the end of it every replica must have committed the same ops.
//! Checkers run after every step; the first violation ends the run.
//!
//! Must not touch the wall clock, threads or OS entropy: every decision comes
//! from the seed, so a failing seed replays bit-for-bit.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use shoal_shard::node::{
    Flow, Group, GroupMachine, GroupStorage, Node, NodeBus, NodeConfig, NodeHooks, NodeStop, Routed, StorageConfig,
    StorageError, action_name,
};
use shoal_shard::router::route_metadata;
use shoal_shard::state_machine::{MetadataReply, MetadataRequest, decode_reply};

use shoal_vsr::checkpoint::checkpoint_path;
use shoal_vsr::header::{Command, Header, Operation};
use shoal_vsr::journal::{JournalConfig, journal_path};
use shoal_vsr::message::Message;
use shoal_vsr::replica::{Action, Committed, Replica, ReplicaConfig, Source, Status};
use shoal_vsr::superblock::superblock_path;

use shoal_shard::frame::FrameVariant;
use shoal_shard::metrics::{DropReason, FrameDrops};
use shoal_shard::namespace::Namespace;
use shoal_shard::owner_table::{ReplicaOwnerTable, ShardCount, ShardId};
use shoal_shard::router::route_partition;

use crate::availability::{Availability, connected_quorum};
use crate::checker::{Ack, Checkers};
use crate::io::{SimIo, block_on_ready};
use crate::network::{Fate, Network, NodeId, PPM_MAX, Partition, PartitionKind};
use crate::node::DATA_DIR;
use crate::promises::{Promise, check_prepare, check_view};
use crate::run::{
    Checker, HistoryEvent, HistoryKind, RunConfig, RunOutcome, ScriptedFault, Target, TimelineEvent, TimelineKind,
    TraceEvent, Verdict,
};

pub const TICK_NS: u64 = 10_000_000;
pub use shoal_shard::node::{METADATA_NAMESPACE, STATE_DATA_MESSAGES_MAX};

/// A simulated group replica: the partition state machine over a durable
/// partition log on the replica's simulated disk.
pub type GroupReplica = shoal_shard::node::GroupReplica<SimIo>;

fn open_partition(io: &SimIo, namespace: u64) -> Result<GroupMachine<SimIo>, String> {
    block_on_ready(GroupMachine::open(io, Path::new(DATA_DIR), namespace))
        .map_err(|error| format!("partition log: {error}"))
}

/// What admin client `client` asks the metadata group for its `request`-th
/// request: a stream, then a topic in it, and so on. Deterministic, so a
/// retry carries the same body.
fn metadata_request(client: u32, request: u64) -> MetadataRequest {
    let stream_id = 1 + client * 1_000 + (request as u32).div_ceil(2);
    if request % 2 == 1 {
        MetadataRequest::CreateStream { stream_id, name: format!("stream-{stream_id}") }
    } else {
        MetadataRequest::CreateTopic { stream_id, topic_id: 1, name: "events".into(), partition_count: 2 }
    }
}
pub const JOURNAL_SLOT_COUNT: u64 = 64;
pub const CHECKPOINT_INTERVAL_OPS: u64 = 16;
/// Prepares in the simulator carry small client payloads; a small slot keeps
/// every journal file small and every simulated fsync cheap.
pub const MESSAGE_SIZE_MAX_BYTES: u32 = 4 * 1024;
pub const CLUSTER_ID: u128 = 0x5348_4f41_4c00_0001;
/// The namespace of the first group the simulator runs (partition 1 of
/// topic 1 of stream 1); group g is partition g + 1.
pub const NAMESPACE: u64 = (1 << 40) | (1 << 20) | 1;
/// With more than one shard per replica, this many partition groups per shard
/// (spread by the partition hash, so some shards hold more than others).
pub const GROUPS_PER_SHARD: usize = 2;
pub const CLIENT_ID_BASE: u128 = 1_000;
pub const CLIENT_RETRY_TICKS: u64 = 30;
pub const RESTART_DELAY_MAX_NS: u64 = 800_000_000;
pub const PAUSE_DURATION_MAX_NS: u64 = 300_000_000;
/// A stale redelivery arrives this long after the original at the least...
pub const STALE_REDELIVERY_MIN_NS: u64 = 300_000_000;
/// ...and at the most: long enough to cross one or more view changes.
pub const STALE_REDELIVERY_MAX_NS: u64 = 3_000_000_000;
/// Bound on events in one run: a run that needs more is a bug in the driver.
pub const EVENTS_MAX: u64 = 50_000_000;
/// The liveness phase is checked this often.
const CONVERGENCE_CHECK_TICKS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Endpoint {
    Replica(u8),
    Client(u32),
}

#[derive(Debug)]
enum Event {
    ReplicaTick(u8),
    ClientTick(u32),
    NetworkTick,
    Deliver { from: Endpoint, to: Endpoint, message: Box<Message> },
    Restart(u8),
    Unpause(u8),
    EndSafety,
    Scripted { index: usize, attempts: u32 },
}

/// One replica process as the world sees it: its disk, whether it runs,
/// and the node (the library code the server runs) while it does.
#[derive(Debug)]
struct Process {
    io: SimIo,
    up: bool,
    paused_until_ns: Option<u64>,
    /// Corruption was injected into this replica's journal while it was down.
    corrupted: bool,
    /// The disk is wiped when this (crashed) process restarts.
    wipe_on_restart: bool,
    /// The running node; `None` while down (and while a step borrows it).
    node: Option<Node<SimIo>>,
    /// Per group: prepares this replica wrote durably (and so may have
    /// acknowledged) and has not legitimately dropped since: they must
    /// survive a crash. The recovery checker's bookkeeping, not the node's.
    acked: Vec<BTreeMap<u64, u128>>,
    /// Which of this process's shards holds the connection to each peer
    /// (shared with the node, which sends through it).
    owners: Arc<ReplicaOwnerTable>,
    /// `frame_drops_total` of this process, over all its lives.
    drops: Arc<FrameDrops>,
}

#[derive(Debug)]
struct InFlight {
    request: u64,
    operation: Operation,
    payload: Vec<u8>,
    invoked_ns: u64,
    sent_tick: u64,
}

#[derive(Debug)]
struct Client {
    id: u128,
    /// The group (partition) this client writes to.
    group: usize,
    registered: bool,
    /// Sessions this client had before the current one (each eviction
    /// starts a new one); payloads name it, so they stay unique.
    session_epoch: u64,
    /// The op that registered the current session (from the register's
    /// reply); every reply must name it.
    session: u64,
    request: u64,
    in_flight: Option<InFlight>,
    view_guess: u64,
    ticks: u64,
}

/// A client's request as it stood before a message reached the client.
struct ClientSnapshot {
    in_flight: Option<(u64, Operation, Vec<u8>, u64)>,
    acks: usize,
    metadata_applied: usize,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Phase {
    Safety,
    Liveness { deadline_ns: u64 },
}

pub struct Cluster {
    config: RunConfig,
    rng: ChaCha8Rng,
    now_ns: u64,
    queue: BTreeMap<(u64, u64), Event>,
    sequence: u64,
    nodes: Vec<Process>,
    clients: Vec<Client>,
    network: Network,
    /// Namespace of each group; group g lives on shard `shard_of[g]`.
    namespaces: Vec<u64>,
    shard_of: Vec<ShardId>,
    shard_count: ShardCount,
    /// One set of checkers per group.
    checkers: Vec<Checkers>,
    /// Frames handed from one shard to another, and how many arrived.
    hops_attempted: u64,
    hops_delivered: u64,
    /// Metadata changes an admin client was told were applied.
    metadata_applied: Vec<MetadataRequest>,
    phase: Phase,
    /// Faults that may still be injected (`None`: unlimited).
    fault_budget: Option<u64>,
    faults: BTreeMap<String, u64>,
    /// Checkpoint copies rotted since their replica last rewrote the file:
    /// (replica, group, copy). Rot never takes the last good copy, since a
    /// replica cannot yet fetch a checkpoint it lost from its peers.
    checkpoint_rot: std::collections::BTreeSet<(u8, usize, u64)>,
    /// The one replica whose disk may rot: corrupting a slot on no more than
    /// one replica keeps every committed op on a majority.
    rot_replica: u8,
    trace_hash: u64,
    trace: Vec<TraceEvent>,
    timeline: Vec<TimelineEvent>,
    events_processed: u64,
    view_changes: u64,
    converged: bool,
    availability: Availability,
    /// Set when a no-commit window outgrew its bound: the run ends there
    /// with a liveness verdict.
    availability_failure: Option<String>,
    /// The client-visible history, when `record_history` is set.
    history: Vec<HistoryEvent>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("seed", &self.config.seed).field("now_ns", &self.now_ns).finish()
    }
}

fn node_config(config: &RunConfig, replica: u8, shard_count: ShardCount) -> NodeConfig {
    NodeConfig {
        cluster: CLUSTER_ID,
        replica,
        replica_count: config.replica_count,
        shard_count,
        data_dir: DATA_DIR.into(),
    }
}

fn storage_config(replica: u8, namespace: u64) -> StorageConfig {
    StorageConfig {
        cluster: CLUSTER_ID,
        namespace,
        replica,
        slot_count: JOURNAL_SLOT_COUNT,
        message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES,
    }
}

fn mix(hash: u64, value: u64) -> u64 {
    let mut z = hash ^ value.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Cluster {
    pub fn new(config: &RunConfig) -> Cluster {
        assert!(config.replica_count >= 1 && config.replica_count <= 6, "1 to 6 replicas");
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let shard_count = ShardCount::new(usize::from(config.shards_per_replica)).expect("1 ..= u16::MAX - 1 shards");
        let group_count =
            if config.shards_per_replica > 1 { usize::from(config.shards_per_replica) * GROUPS_PER_SHARD } else { 1 };
        let mut namespaces: Vec<u64> =
            (0..group_count).map(|g| Namespace::partition(1, 1, g as u32 + 1).expect("small ids fit").raw()).collect();
        if config.shards_per_replica > 1 {
            // The metadata group too, on shard 0, with admin clients.
            namespaces.push(METADATA_NAMESPACE);
        }
        assert_eq!(namespaces[0], NAMESPACE);
        let group_count = namespaces.len();
        let shard_of: Vec<ShardId> = namespaces
            .iter()
            .map(|ns| {
                if *ns == METADATA_NAMESPACE {
                    route_metadata(shard_count)
                } else {
                    route_partition(Namespace(*ns), shard_count)
                }
            })
            .collect();
        let root_io = SimIo::new(rng.next_u64());
        let mut nodes = Vec::new();
        for replica in 0..config.replica_count {
            let io = root_io.with_new_disk(rng.next_u64());
            io.disk().faults.read_corruption_ppm = 0;
            io.disk().faults.misdirected_write_ppm = 0;
            // Storage (issue 10): one crash in three keeps the page cache.
            io.disk().faults.process_crash_ppm = crate::disk::DiskFaults::cluster().process_crash_ppm;
            let mut groups = Vec::new();
            for (namespace, shard) in namespaces.iter().zip(&shard_of) {
                let storage =
                    block_on_ready(GroupStorage::format(&io, Path::new(DATA_DIR), storage_config(replica, *namespace)))
                        .expect("formatting a fresh disk works");
                let replica_config = replica_config(config, replica, *namespace, rng.next_u64());
                let machine = open_partition(&io, *namespace).expect("a fresh disk opens a partition log");
                groups.push(Group::new(*namespace, *shard, storage, Replica::new(replica_config, machine)));
            }
            let owners = Arc::new(ReplicaOwnerTable::new(usize::from(config.replica_count), shard_count));
            let drops = Arc::new(FrameDrops::new());
            let node =
                Node::new(io.clone(), node_config(config, replica, shard_count), groups, owners.clone(), drops.clone());
            nodes.push(Process {
                io,
                up: true,
                paused_until_ns: None,
                corrupted: false,
                wipe_on_restart: false,
                node: Some(node),
                acked: vec![BTreeMap::new(); namespaces.len()],
                owners,
                drops,
            });
        }
        let clients = (0..config.client_count)
            .map(|index| Client {
                id: CLIENT_ID_BASE + u128::from(index),
                group: index as usize % group_count,
                registered: false,
                session_epoch: 0,
                session: 0,
                request: 0,
                in_flight: None,
                view_guess: 0,
                ticks: 0,
            })
            .collect();
        let network = Network::new(rng.next_u64(), u32::from(config.replica_count), config.faults.clone());
        let rot_replica = (rng.next_u64() % u64::from(config.replica_count)) as u8;
        // Marks a previous run on this thread left (one that panicked) are
        // not this run's.
        let _ = shoal_vsr::marks::take();
        let mut cluster = Cluster {
            config: config.clone(),
            rng,
            now_ns: 0,
            queue: BTreeMap::new(),
            sequence: 0,
            nodes,
            clients,
            network,
            checkers: (0..group_count).map(|_| Checkers::default()).collect(),
            namespaces,
            shard_of,
            shard_count,
            hops_attempted: 0,
            hops_delivered: 0,
            metadata_applied: Vec::new(),
            phase: Phase::Safety,
            fault_budget: config.fault_budget,
            faults: BTreeMap::new(),
            checkpoint_rot: std::collections::BTreeSet::new(),
            rot_replica,
            trace_hash: config.seed,
            trace: Vec::new(),
            timeline: Vec::new(),
            events_processed: 0,
            view_changes: 0,
            converged: false,
            availability: Availability::new(group_count),
            availability_failure: None,
            history: Vec::new(),
        };
        for replica in 0..config.replica_count {
            cluster.connect(replica);
            let offset = cluster.rng.next_u64() % TICK_NS;
            cluster.schedule(offset, Event::ReplicaTick(replica));
        }
        for client in 0..config.client_count {
            let offset = TICK_NS + cluster.rng.next_u64() % TICK_NS;
            cluster.schedule(offset, Event::ClientTick(client));
        }
        cluster.schedule(TICK_NS, Event::NetworkTick);
        cluster.schedule(config.safety_time_ns, Event::EndSafety);
        for (index, fault) in config.script.iter().enumerate() {
            let at_ns = match fault {
                ScriptedFault::Crash { at_ns, .. }
                | ScriptedFault::CrashAll { at_ns, .. }
                | ScriptedFault::Isolate { at_ns, .. }
                | ScriptedFault::CorruptSlot { at_ns, .. } => *at_ns,
            };
            cluster.schedule(at_ns, Event::Scripted { index, attempts: 0 });
        }
        cluster
    }

    fn schedule(&mut self, delay_ns: u64, event: Event) {
        self.sequence += 1;
        self.queue.insert((self.now_ns + delay_ns, self.sequence), event);
    }

    fn record(&mut self, replica: Option<u8>, kind: &'static str, a: u64, b: u64, detail: impl FnOnce() -> String) {
        let mut hash = mix(self.trace_hash, self.now_ns);
        hash = mix(hash, replica.map_or(u64::MAX, u64::from));
        for byte in kind.bytes() {
            hash = mix(hash, u64::from(byte));
        }
        hash = mix(hash, a);
        self.trace_hash = mix(hash, b);
        if self.config.record_trace {
            self.trace.push(TraceEvent {
                time_ns: self.now_ns,
                replica,
                shard: None,
                kind: kind.to_string(),
                detail: detail(),
            });
        }
    }

    fn timeline(&mut self, replica: u8, kind: TimelineKind, detail: String) {
        self.timeline.push(TimelineEvent { time_ns: self.now_ns, replica, kind, detail });
    }

    /// Roll for a fault: false in the liveness phase or once the budget is spent.
    /// Roll for a fault: false in the liveness phase or once the budget is
    /// spent. The draw happens either way, so a budget-limited run follows
    /// the same random path as the unlimited one up to where it stops.
    fn roll(&mut self, ppm: u32, kind: &str) -> bool {
        if self.phase != Phase::Safety {
            return false;
        }
        // Drawn even for a fault kind that is off, so that switching one off
        // (as the shrinker does) does not shift every later draw.
        let draw = self.rng.next_u64() % PPM_MAX;
        if draw >= u64::from(ppm) || self.fault_budget == Some(0) {
            return false;
        }
        self.spend_fault(kind);
        true
    }

    fn spend_fault(&mut self, kind: &str) {
        if let Some(budget) = &mut self.fault_budget {
            *budget = budget.saturating_sub(1);
        }
        *self.faults.entry(kind.to_string()).or_default() += 1;
    }

    pub fn run(&mut self) -> RunOutcome {
        while let Some((&(time, sequence), _)) = self.queue.first_key_value() {
            let event = self.queue.remove(&(time, sequence)).expect("present");
            assert!(time >= self.now_ns, "virtual time never goes back");
            self.now_ns = time;
            self.events_processed += 1;
            assert!(self.events_processed < EVENTS_MAX, "event bound exceeded");
            self.handle(event);
            if self.violation().is_some() || self.converged || self.availability_failure.is_some() {
                break;
            }
            if let Phase::Liveness { deadline_ns } = self.phase
                && self.now_ns > deadline_ns
            {
                break;
            }
        }
        self.finish()
    }

    fn violation(&self) -> Option<&crate::checker::Violation> {
        self.checkers.iter().find_map(|c| c.violation())
    }

    /// A violation that is not about one group's history (routing, recovery).
    fn fail(&mut self, checker: Checker, message: String) {
        self.checkers[0].fail(checker, message);
    }

    fn group_label(&self, group: usize) -> String {
        if self.namespaces.len() == 1 { String::new() } else { format!(" group {group}") }
    }

    /// Stamp fresh connections from `replica` to every peer, each owned by a
    /// seeded shard of `replica`.
    fn connect(&mut self, replica: u8) {
        for peer in 0..self.config.replica_count {
            if peer == replica {
                continue;
            }
            let shard = ShardId((self.rng.next_u64() % u64::from(self.shard_count.get())) as u16);
            let owners = &self.nodes[replica as usize].owners;
            if let Some(old) = owners.owner(peer) {
                owners.clear(peer, old).expect("the owner clears its own slot");
            }
            owners.stamp(peer, shard).expect("a cleared slot takes a stamp");
        }
    }

    /// The owner table must name a shard for exactly the live connections:
    /// every peer while the process runs, none once it is down.
    fn check_owner_table(&mut self, replica: u8) {
        let up = self.nodes[replica as usize].up;
        let slots = self.nodes[replica as usize].owners.snapshot();
        for (peer, slot) in slots.iter().enumerate() {
            let live = up && peer != replica as usize;
            if live != slot.is_some() {
                let detail =
                    format!("replica {replica}: owner slot of peer {peer} is {slot:?}, connection live: {live}");
                self.fail(Checker::Routing, detail);
            }
        }
    }

    /// The world's side of a hop between two shards of `replica` (the node
    /// calls it through `NodeHooks::hop` and counts what it drops): the
    /// fault injector may find the inbox full or drop the frame on delivery.
    fn hop(&mut self, replica: u8, from: ShardId, to: ShardId) -> Result<(), DropReason> {
        assert_ne!(from, to, "a frame for the same shard does not hop");
        self.hops_attempted += 1;
        let reason = if self.roll(self.config.faults.shard_inbox_full_ppm, "shard_inbox_full") {
            Some(DropReason::InboxFull)
        } else if self.roll(self.config.faults.shard_delivery_drop_ppm, "shard_delivery_drop") {
            Some(DropReason::Injected)
        } else {
            None
        };
        match reason {
            Some(reason) => {
                self.record(Some(replica), "frame_drop", u64::from(to.0), reason as u64, || {
                    format!("shard {} -> shard {}: {}", from.0, to.0, reason.name())
                });
                Err(reason)
            }
            None => {
                self.hops_delivered += 1;
                Ok(())
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::ReplicaTick(replica) => self.on_replica_tick(replica),
            Event::ClientTick(client) => {
                self.on_client_tick(client);
                self.observe_invoke(client);
            }
            Event::NetworkTick => {
                let before = self.network.counters.clone();
                let changes = self.network.tick(self.now_ns);
                self.spend_network_faults(&before);
                for change in changes {
                    let kind = if change.starts_with("heal") {
                        TimelineKind::PartitionEnd
                    } else {
                        TimelineKind::PartitionStart
                    };
                    self.record(None, "network", 0, 0, || change.clone());
                    self.timeline(0, kind, change);
                }
                self.sample_availability();
                self.schedule(TICK_NS, Event::NetworkTick);
            }
            Event::Deliver { from, to, message } => self.deliver(from, to, *message),
            Event::Restart(replica) => self.restart(replica),
            Event::Unpause(replica) => {
                self.nodes[replica as usize].paused_until_ns = None;
                self.record(Some(replica), "unpause", 0, 0, String::new);
            }
            Event::EndSafety => self.end_safety(),
            Event::Scripted { index, attempts } => self.scripted(index, attempts),
        }
    }

    // --- replicas ---------------------------------------------------------------

    fn on_replica_tick(&mut self, replica: u8) {
        self.schedule(TICK_NS, Event::ReplicaTick(replica));
        let index = replica as usize;
        if !self.nodes[index].up || self.nodes[index].paused_until_ns.is_some() {
            return;
        }
        if self.roll(self.config.faults.replica_crash_ppm, "replica_crash") {
            return self.crash(replica, "injected");
        }
        if self.shard_count.get() > 1 && self.roll(self.config.faults.shard_panic_ppm, "shard_panic") {
            // A shard panic shuts the whole process down cleanly.
            return self.crash(replica, "shard panic");
        }
        if self.config.replica_count >= 3
            && self.roll(self.config.faults.replica_wipe_ppm, "replica_wipe")
            && self.wipe_is_recoverable(replica)
        {
            self.nodes[index].wipe_on_restart = true;
            return self.crash(replica, "disk wipe");
        }
        if replica == self.rot_replica && self.roll(self.config.faults.storage_rot_running_ppm, "storage_rot_running") {
            self.rot_running(replica);
        }
        if self.roll(self.config.faults.replica_pause_ppm, "replica_pause") {
            let duration = 1 + self.rng.next_u64() % PAUSE_DURATION_MAX_NS;
            self.nodes[index].paused_until_ns = Some(self.now_ns + duration);
            self.schedule(duration, Event::Unpause(replica));
            self.record(Some(replica), "pause", duration, 0, String::new);
            return;
        }
        let now_ns = self.now_ns;
        self.with_node(replica, |node, world| block_on_ready(node.tick(now_ns, world)));
        if let Phase::Liveness { .. } = self.phase
            && replica == 0
            && (now_ns / TICK_NS).is_multiple_of(CONVERGENCE_CHECK_TICKS)
        {
            self.check_convergence();
        }
    }

    /// Run `f` on `replica`'s node with this cluster as its world. The node
    /// is taken out for the call, so the world's hooks may touch everything
    /// else; a node that stops is crashed here, once it is back. `None` when
    /// the process is down or the node stopped.
    fn with_node<R>(
        &mut self,
        replica: u8,
        f: impl FnOnce(&mut Node<SimIo>, &mut SimWorld<'_>) -> Result<R, NodeStop>,
    ) -> Option<R> {
        let index = replica as usize;
        if !self.nodes[index].up {
            return None;
        }
        let mut node = self.nodes[index].node.take()?;
        let mut world = SimWorld { cluster: self, replica, crash: None };
        let result = f(&mut node, &mut world);
        let crash = world.crash.take();
        self.nodes[index].node = Some(node);
        match result {
            Ok(value) => Some(value),
            Err(stop) => {
                self.on_node_stop(replica, stop, crash);
                None
            }
        }
    }

    /// The node stopped: a storage or partition log error (fail-stop), or a
    /// crash the fault injector asked for at a protocol moment.
    fn on_node_stop(&mut self, replica: u8, stop: NodeStop, crash: Option<String>) {
        match stop {
            NodeStop::Halted => {
                let why = crash.expect("only the simulator's hooks halt a node, and they say why");
                self.crash(replica, &why);
            }
            NodeStop::Storage { error, .. } => {
                let reason = error.to_string();
                self.record(Some(replica), "storage_error", 0, 0, || reason.clone());
                self.crash(replica, "storage error");
            }
            NodeStop::PartitionLog(error) => {
                let reason = error.to_string();
                self.record(Some(replica), "storage_error", 0, 0, || reason.clone());
                self.crash(replica, "partition log error");
            }
        }
    }

    /// Commits of `group` on `replica`, checked before the replies that
    /// announce them go out.
    fn observe_committed(&mut self, replica: u8, group: usize, committed: &[Committed]) {
        let last = committed.last().map(|c| c.op).unwrap_or(0);
        self.record(Some(replica), "commit", last, committed.len() as u64, || format!("through op {last}"));
        if last.is_multiple_of(25) {
            self.timeline(replica, TimelineKind::Commit, format!("op {last}"));
        }
        let before = self.checkers[group].ops_committed();
        self.checkers[group].on_committed(replica, committed);
        if self.checkers[group].ops_committed() > before {
            self.availability.progress(self.now_ns, group);
        }
    }

    fn observe_view(&mut self, replica: u8, group: usize, view: u64, status: Status) {
        self.view_changes += 1;
        let label = self.group_label(group);
        self.record(Some(replica), "view", view, status as u64, || format!("view {view} {status:?}{label}"));
        self.timeline(replica, TimelineKind::ViewChange, format!("view {view}{label}"));
    }

    /// Before a storage action: maybe make it fail.
    fn arm_storage_fault(&mut self, replica: u8) {
        let index = replica as usize;
        if self.roll(self.config.faults.storage_write_error_ppm, "storage_write_error") {
            self.nodes[index].io.disk().fail_next_write();
        } else if self.roll(self.config.faults.storage_torn_write_ppm, "storage_torn_write")
            || self.roll(self.config.faults.storage_lost_write_ppm, "storage_lost_write")
        {
            // The write lands in the page cache and the fsync fails:
            // the crash that follows loses or tears it, as the seed says.
            self.nodes[index].io.disk().fail_next_sync();
        }
    }

    /// Keep the recovery checker's list of promises in step with what the
    /// replica legitimately dropped.
    fn after_storage(&mut self, replica: u8, group: usize, action: &Action, durable: bool) {
        if matches!(action, Action::Checkpoint { .. }) && durable {
            // Both copies were written whole again.
            self.checkpoint_rot.retain(|(r, g, _)| (*r, *g) != (replica, group));
        }
        let acked = &mut self.nodes[replica as usize].acked[group];
        match action {
            // Every prepare written and fsynced is a promise, acknowledged or
            // not (a primary acknowledges to itself): it must survive a crash.
            Action::WritePrepare { message } if durable => {
                acked.insert(message.header.op, message.header.checksum);
            }
            // A rewrite that failed may have torn the slot it replaced.
            Action::WritePrepare { message } => {
                acked.remove(&message.header.op);
            }
            Action::TruncateLog { after_op } => acked.retain(|op, _| op <= after_op),
            Action::Checkpoint { checkpoint } if durable => acked.retain(|op, _| *op > checkpoint.anchor.op),
            _ => {}
        }
    }

    /// Make the partition's applied messages durable (the node's own
    /// persist; a failure stops the node like any other).
    fn persist_partition(&mut self, replica: u8, group: usize) {
        self.with_node(replica, |node, _| block_on_ready(node.group_mut(group).persist_partition()));
    }

    /// Every message of the group's partition log on `replica`, by offset.
    fn read_partition(&mut self, replica: u8, group: usize) -> Vec<Vec<u8>> {
        self.persist_partition(replica, group);
        let mut messages = Vec::new();
        let Some(r) = self.group_replica(replica, group) else { return messages };
        loop {
            let chunk = block_on_ready(r.state_machine().read(messages.len() as u64, 1024));
            if chunk.is_empty() {
                break;
            }
            messages.extend(chunk.into_iter().map(|(_, message)| message));
        }
        messages
    }

    /// The first group's replica on `replica`, while it runs (tests inspect
    /// it after a run).
    pub fn replica(&self, replica: u8) -> Option<&GroupReplica> {
        self.group_replica(replica, 0)
    }

    pub fn group_replica(&self, replica: u8, group: usize) -> Option<&GroupReplica> {
        self.nodes[replica as usize].node.as_ref().map(|node| node.group(group).replica())
    }

    pub fn group_count(&self) -> usize {
        self.namespaces.len()
    }

    /// Metadata changes admin clients were told were applied.
    pub fn metadata_applied(&self) -> usize {
        self.metadata_applied.len()
    }

    /// The shard of every process that owns client `index`'s connection.
    fn client_shard(&self, index: u32) -> ShardId {
        ShardId((index % u32::from(self.shard_count.get())) as u16)
    }

    /// Scripted targets are resolved in the first group.
    fn resolve(&self, target: Target) -> Option<u8> {
        let running = || (0..self.config.replica_count).filter_map(|i| self.group_replica(i, 0).map(|r| (i, r)));
        let primary = running()
            .filter(|(_, r)| r.status() == Status::Normal && r.is_primary())
            .max_by_key(|(_, r)| r.view())
            .map(|(i, _)| i);
        match target {
            Target::Replica(replica) => Some(replica),
            Target::Primary => primary,
            Target::Backup => running().map(|(i, _)| i).find(|i| Some(*i) != primary),
        }
    }

    fn scripted(&mut self, index: usize, attempts: u32) {
        const ATTEMPTS_MAX: u32 = 2_000;
        let fault = self.config.script[index].clone();
        let retry = |cluster: &mut Cluster| {
            if attempts < ATTEMPTS_MAX {
                // Jittered, so the retry does not stay in phase with the clients.
                let delay = 1 + cluster.rng.next_u64() % 1_000_000;
                cluster.schedule(delay, Event::Scripted { index, attempts: attempts + 1 });
            }
        };
        match fault {
            ScriptedFault::Crash { target, down_ns, .. } => {
                let Some(replica) = self.resolve(target) else { return retry(self) };
                let busy = self.group_replica(replica, 0).is_some_and(|r| r.pipeline_len() > 0);
                if target == Target::Primary && !busy {
                    return retry(self);
                }
                self.spend_fault("scripted_crash");
                self.crash_for(replica, "scripted", down_ns);
            }
            ScriptedFault::CrashAll { down_ns, .. } => {
                self.spend_fault("scripted_crash_all");
                for replica in 0..self.config.replica_count {
                    self.crash_for(replica, "scripted (all)", down_ns);
                }
            }
            ScriptedFault::Isolate { target, until_ns, .. } => {
                let Some(replica) = self.resolve(target) else { return retry(self) };
                self.spend_fault("scripted_isolate");
                let kind = PartitionKind::Isolate { node: NodeId::from(replica) };
                let detail = format!("isolate replica {replica}");
                self.record(Some(replica), "network", 0, 0, || detail.clone());
                self.timeline(replica, TimelineKind::PartitionStart, detail);
                self.network.force_partition(Partition { kind, until_ns });
            }
            ScriptedFault::CorruptSlot { target, .. } => {
                let Some(replica) = self.resolve(target) else { return retry(self) };
                self.spend_fault("scripted_corrupt_slot");
                self.crash_for(replica, "scripted (corrupt slot)", TICK_NS);
                self.rot(replica);
            }
        }
    }

    fn crash(&mut self, replica: u8, why: &str) {
        let delay = if self.phase == Phase::Safety { 1 + self.rng.next_u64() % RESTART_DELAY_MAX_NS } else { TICK_NS };
        self.crash_for(replica, why, delay);
    }

    fn crash_for(&mut self, replica: u8, why: &str, down_ns: u64) {
        let index = replica as usize;
        if !self.nodes[index].up {
            return;
        }
        self.nodes[index].up = false;
        // Everything the process held in memory is gone; its disk stays.
        self.nodes[index].node = None;
        // Its connections die with it: every owner slot is cleared.
        let owners = &self.nodes[index].owners;
        for peer in 0..self.config.replica_count {
            if let Some(shard) = owners.owner(peer) {
                owners.clear(peer, shard).expect("the owner clears its own slot");
            }
        }
        self.nodes[index].paused_until_ns = None;
        self.nodes[index].io.crash();
        let why = why.to_string();
        self.record(Some(replica), "crash", 0, 0, || why.clone());
        self.timeline(replica, TimelineKind::Crash, why);
        self.check_owner_table(replica);
        self.schedule(down_ns.max(1), Event::Restart(replica));
    }

    fn restart(&mut self, replica: u8) {
        let index = replica as usize;
        if self.nodes[index].up {
            return;
        }
        if std::mem::take(&mut self.nodes[index].wipe_on_restart) {
            return self.restart_wiped(replica);
        }
        self.maybe_rot(replica);
        let io = self.nodes[index].io.clone();
        let mut faulty_groups = 0;
        let mut groups = Vec::new();
        for group in 0..self.namespaces.len() {
            let namespace = self.namespaces[group];
            let opened =
                block_on_ready(GroupStorage::open(&io, Path::new(DATA_DIR), storage_config(replica, namespace)));
            let (storage, recovered) = match opened {
                Ok(opened) => opened,
                Err(error) => {
                    let label = self.group_label(group);
                    return self.fail(Checker::Recovery, format!("replica {replica}{label} cannot restart: {error}"));
                }
            };
            self.check_recovery(replica, group, &storage, &recovered);
            faulty_groups += u64::from(recovered.journal_faulty);
            let seed = self.rng.next_u64();
            let config = replica_config(&self.config, replica, namespace, seed);
            let replay_from = recovered.checkpoint.as_ref().map_or(0, |c| c.anchor.op);
            let partition = match open_partition(&io, namespace) {
                Ok(partition) => partition,
                Err(error) => {
                    let label = self.group_label(group);
                    return self.fail(Checker::Recovery, format!("replica {replica}{label} cannot restart: {error}"));
                }
            };
            match Replica::open(config, partition, recovered) {
                Ok(r) => {
                    // Replay re-commits from the checkpoint on: the checkers
                    // see those commits again and hold them to agreement.
                    self.checkers[group].on_restart(replica, replay_from);
                    groups.push(Group::new(namespace, self.shard_of[group], storage, r));
                }
                Err(error) => {
                    let label = self.group_label(group);
                    return self.fail(
                        Checker::Recovery,
                        format!("replica {replica}{label} checkpoint is unreadable: {error}"),
                    );
                }
            }
        }
        let detail = if faulty_groups > 0 { format!("{faulty_groups} faulty journal(s)") } else { String::new() };
        self.finish_restart(replica, groups, faulty_groups, detail);
    }

    fn finish_restart(&mut self, replica: u8, groups: Vec<Group<SimIo>>, faulty_groups: u64, detail: String) {
        let index = replica as usize;
        let process = &mut self.nodes[index];
        let config = node_config(&self.config, replica, self.shard_count);
        process.node =
            Some(Node::new(process.io.clone(), config, groups, process.owners.clone(), process.drops.clone()));
        self.nodes[index].up = true;
        self.nodes[index].corrupted = false;
        self.connect(replica);
        self.check_owner_table(replica);
        self.record(Some(replica), "restart", faulty_groups, 0, String::new);
        self.timeline(replica, TimelineKind::Restart, detail);
        // Drain the actions that recovery itself asked for.
        self.with_node(replica, |node, world| block_on_ready(node.start(world)));
    }

    /// A wipe is drawn only while every other replica runs in normal status,
    /// so the wiped one is the only replica without its state: losing one
    /// replica's whole disk must never lose a committed op.
    ///
    /// And never the only copy of an uncommitted prepare: a view change may
    /// already have made it part of the canonical log, and without a nack
    /// protocol (truncating ops a quorum never held) the group would wait
    /// for that body forever. The simulator found exactly that wedge
    /// (view-churn seed 1783): this rule is a testbed restriction until the
    /// protocol can truncate such ops.
    fn wipe_is_recoverable(&self, replica: u8) -> bool {
        let others_up = self.nodes.iter().enumerate().all(|(j, node)| {
            j == replica as usize
                || (node.up
                    && !node.wipe_on_restart
                    && node
                        .node
                        .as_ref()
                        .is_some_and(|n| (0..n.group_count()).all(|g| n.group(g).replica().status() == Status::Normal)))
        });
        others_up && (0..self.namespaces.len()).all(|group| self.holds_no_only_copy(replica, group))
    }

    fn holds_no_only_copy(&self, replica: u8, group: usize) -> bool {
        let Some(victim) = self.group_replica(replica, group) else { return true };
        (victim.commit_min() + 1..=victim.op()).all(|op| {
            !victim.has_body(op)
                || (0..self.config.replica_count).any(|j| {
                    j != replica && self.group_replica(j, group).is_some_and(|r| r.has_body(op) || op <= r.commit_min())
                })
        })
    }

    /// The operator's answer to a lost disk: format it again and start the
    /// replica, which must rejoin the cluster before it may vote or ack.
    fn restart_wiped(&mut self, replica: u8) {
        let index = replica as usize;
        let io = self.nodes[index].io.clone();
        io.disk().wipe();
        self.checkpoint_rot.retain(|(r, _, _)| *r != replica);
        let mut groups = Vec::new();
        for group in 0..self.namespaces.len() {
            let namespace = self.namespaces[group];
            let config = storage_config(replica, namespace);
            let storage = block_on_ready(GroupStorage::format_rejoining(&io, Path::new(DATA_DIR), config))
                .expect("formatting a wiped disk works");
            let partition = open_partition(&io, namespace).expect("a wiped disk opens an empty partition log");
            let seed = self.rng.next_u64();
            let config = replica_config(&self.config, replica, namespace, seed);
            let replica_state = Replica::rejoin(config, partition);
            // Every promise of the old disk is gone with it.
            self.checkers[group].on_restart(replica, 0);
            self.nodes[index].acked[group].clear();
            groups.push(Group::new(namespace, self.shard_of[group], storage, replica_state));
        }
        self.finish_restart(replica, groups, 0, "disk wiped, reformatted".to_string());
    }

    /// Corrupt one journal slot below the head of the rot replica while it is
    /// down: recovery must notice and the cluster must repair it.
    fn maybe_rot(&mut self, replica: u8) {
        if replica != self.rot_replica
            || !self.roll(self.config.faults.storage_read_corruption_ppm, "storage_read_corruption")
        {
            return;
        }
        self.rot(replica);
    }

    /// A journal sector of a running replica goes bad (a latent sector
    /// error): the next read of that slot, by a checkpoint's drain or a
    /// repair answer, sees corruption. Placed like `rot`: never on the only
    /// copy of an op.
    fn rot_running(&mut self, replica: u8) {
        let index = replica as usize;
        let group = (self.rng.next_u64() % self.namespaces.len() as u64) as usize;
        let draw = self.rng.next_u64();
        let Some(node) = self.nodes[index].node.as_ref() else { return };
        let journal = node.group(group).storage().journal();
        let Some(head) = journal.op_max() else { return };
        let low = journal.snapshot_op() + 1;
        if head < low {
            return;
        }
        // The head included: a rotten head slot must not pass for a torn one.
        let op = low + draw % (head - low + 1);
        let offset = Self::rot_offset(journal, op, self.rng.next_u64(), false);
        if !self.held_elsewhere(index, group, op) {
            return;
        }
        let path = shoal_vsr::journal::journal_path(std::path::Path::new(DATA_DIR), self.namespaces[group]);
        if self.nodes[index].io.disk().corrupt_sector(&path, offset).is_ok() {
            let label = self.group_label(group);
            self.record(Some(replica), "rot_running", op, group as u64, || format!("journal slot of op {op}{label}"));
            self.timeline(replica, TimelineKind::Fault, format!("rot op {op} (running)"));
        }
    }

    /// Every other replica runs and holds `op` of `group` (or checkpointed
    /// past it), so damaging it on `index` never destroys the last copy.
    fn held_elsewhere(&self, index: usize, group: usize, op: u64) -> bool {
        self.nodes.len() > 1
            && (0..self.config.replica_count)
                .filter(|j| usize::from(*j) != index)
                .all(|j| self.group_replica(j, group).is_some_and(|r| r.has_body(op) || op <= r.checkpoint_op()))
    }

    /// A byte anywhere in what `op` uses on disk: header and body sectors
    /// alike (a journal that skipped the body checksum must fail), or its
    /// header ring copy.
    fn rot_offset(journal: &shoal_vsr::journal::PrepareJournal<SimIo>, op: u64, draw: u64, ring: bool) -> u64 {
        let config = journal.config();
        if ring {
            return config.header_copy_offset(op) + (draw >> 2) % shoal_vsr::header::HEADER_SIZE_BYTES as u64;
        }
        let used_bytes = journal.header(op).map_or(shoal_vsr::header::HEADER_SIZE_BYTES as u64, |h| u64::from(h.size));
        config.slot_offset(op) + (draw >> 2) % used_bytes
    }

    fn rot(&mut self, replica: u8) {
        let index = replica as usize;
        let group = (self.rng.next_u64() % self.namespaces.len() as u64) as usize;
        let namespace = self.namespaces[group];
        let io = self.nodes[index].io.clone();
        let config = storage_config(replica, namespace);
        let Ok((storage, _)) = block_on_ready(GroupStorage::open_to_inspect(&io, Path::new(DATA_DIR), config)) else {
            return;
        };
        // One rot in eight lands on the checkpoint file instead, unless this
        // down time already rotted something (never both of its copies).
        if self.rng.next_u64().is_multiple_of(8) && !self.nodes[index].corrupted {
            drop(storage);
            return self.rot_checkpoint(replica, group);
        }
        let journal = storage.journal();
        let Some(head) = journal.op_max() else { return };
        let low = journal.snapshot_op() + 1;
        if head < low {
            return;
        }
        // The head included: a rotten head slot must not pass for a torn one.
        let op = low + self.rng.next_u64() % (head - low + 1);
        // Placed so the cluster stays recoverable: every other running
        // replica holds this op (or checkpointed past it), so corrupting it
        // here never destroys the last copy.
        if !self.held_elsewhere(index, group, op) {
            return;
        }
        // While down, one rot in four lands on the op's header ring copy
        // (recovery must rewrite it from the valid prepare); at most one rot
        // per slot per down time, so never both copies of one op.
        let draw = self.rng.next_u64();
        let offset = Self::rot_offset(journal, op, draw, draw.is_multiple_of(4));
        let path = shoal_vsr::journal::journal_path(std::path::Path::new(DATA_DIR), namespace);
        drop(storage);
        if io.disk().corrupt_sector(&path, offset).is_ok() {
            self.nodes[index].corrupted = true;
            let label = self.group_label(group);
            self.record(Some(replica), "rot", op, group as u64, || format!("journal slot of op {op}{label}"));
            self.timeline(replica, TimelineKind::Fault, format!("rot op {op}"));
        }
    }

    /// Rot a byte anywhere in the checkpoint file of `group` on a replica
    /// that is down: the replica must still restart (it keeps two copies).
    fn rot_checkpoint(&mut self, replica: u8, group: usize) {
        let index = replica as usize;
        let path = shoal_vsr::checkpoint::checkpoint_path(std::path::Path::new(DATA_DIR), self.namespaces[group]);
        let Some(size_bytes) = self.nodes[index].io.disk().contents(&path).map(|bytes| bytes.len() as u64) else {
            return;
        };
        if size_bytes == 0 {
            return;
        }
        let offset = self.rng.next_u64() % size_bytes;
        let copy_size_bytes = (size_bytes / shoal_vsr::checkpoint::COPIES_COUNT).max(1);
        let copy = offset / copy_size_bytes;
        let others_rotten = (0..shoal_vsr::checkpoint::COPIES_COUNT)
            .filter(|other| *other != copy)
            .all(|other| self.checkpoint_rot.contains(&(replica, group, other)));
        if others_rotten {
            // The last good copy (swarm seed 37515 rotted both between two
            // checkpoint writes, and the replica could not restart).
            return;
        }
        if self.nodes[index].io.disk().corrupt_sector(&path, offset).is_ok() {
            self.checkpoint_rot.insert((replica, group, copy));
            self.nodes[index].corrupted = true;
            let label = self.group_label(group);
            self.record(Some(replica), "rot", offset, group as u64, || format!("checkpoint byte {offset}{label}"));
            self.timeline(replica, TimelineKind::Fault, format!("rot checkpoint byte {offset}"));
        }
    }

    /// Every prepare this replica acknowledged is back after the crash, or the
    /// journal says it is faulty and the replica will not vouch for its log.
    fn check_recovery(
        &mut self,
        replica: u8,
        group: usize,
        storage: &GroupStorage<SimIo>,
        recovered: &shoal_vsr::replica::Recovered,
    ) {
        let checkpoint_op = recovered.checkpoint.as_ref().map_or(0, |c| c.anchor.op);
        if storage.journal().snapshot_op() > checkpoint_op {
            self.fail(
                Checker::Recovery,
                format!(
                    "replica {replica}: journal snapshot_op {} is past the durable checkpoint {checkpoint_op}",
                    storage.journal().snapshot_op()
                ),
            );
        }
        let acked = self.nodes[replica as usize].acked[group].clone();
        for (op, checksum) in acked {
            if op <= checkpoint_op {
                continue;
            }
            let present = recovered.entries.iter().any(|(h, _)| h.op == op && h.checksum == checksum);
            if !present && !recovered.journal_faulty {
                let label = self.group_label(group);
                self.fail(
                    Checker::Recovery,
                    format!("replica {replica}{label} acknowledged op {op} before the crash and lost it"),
                );
                return;
            }
        }
        if recovered.journal_faulty {
            // A replica whose journal came back corrupt restarts Recovering and
            // vouches for nothing it lost: those promises are void from here
            // on (peers hold the ops; the cluster repairs them).
            let entries = &recovered.entries;
            self.nodes[replica as usize].acked[group]
                .retain(|op, checksum| entries.iter().any(|(h, _)| h.op == *op && h.checksum == *checksum));
        }
    }

    // --- network ----------------------------------------------------------------

    fn node_id(endpoint: Endpoint, replica_count: u8) -> NodeId {
        match endpoint {
            Endpoint::Replica(r) => NodeId::from(r),
            Endpoint::Client(c) => u32::from(replica_count) + c,
        }
    }

    /// Charge the faults the network model just injected to the budget; once
    /// it is spent the network heals for good. Messages lost to a partition
    /// are its consequence, not faults of their own.
    fn spend_network_faults(&mut self, before: &BTreeMap<&'static str, u64>) {
        if self.network.counters == *before {
            return;
        }
        let increased: Vec<(&'static str, u64)> = self
            .network
            .counters
            .iter()
            .map(|(kind, count)| (*kind, count - before.get(kind).copied().unwrap_or(0)))
            .filter(|(kind, delta)| *delta > 0 && *kind != "network_partition_drop")
            .collect();
        for (kind, delta) in increased {
            for _ in 0..delta {
                self.spend_fault(kind);
            }
        }
        if self.fault_budget == Some(0) {
            self.network.suppress();
        }
    }

    fn send(&mut self, from: Endpoint, to: Endpoint, message: Message) {
        let replicas = self.config.replica_count;
        let before = self.network.counters.clone();
        let fate = self.network.submit(self.now_ns, Self::node_id(from, replicas), Self::node_id(to, replicas));
        self.spend_network_faults(&before);
        let command = message.header.command as u64;
        match fate {
            Fate::Dropped { reason } => {
                self.record(None, "drop", command, message.header.op, || format!("{from:?}->{to:?} {reason}"));
            }
            Fate::Deliver(mut times) => {
                let between_replicas = matches!((from, to), (Endpoint::Replica(_), Endpoint::Replica(_)));
                if between_replicas
                    && self.roll(self.config.faults.network_stale_redelivery_ppm, "network_stale_redelivery")
                {
                    let late = STALE_REDELIVERY_MIN_NS
                        + self.rng.next_u64() % (STALE_REDELIVERY_MAX_NS - STALE_REDELIVERY_MIN_NS);
                    times.push(self.now_ns + late);
                }
                for at in times {
                    self.sequence += 1;
                    self.queue
                        .insert((at, self.sequence), Event::Deliver { from, to, message: Box::new(message.clone()) });
                }
            }
        }
    }

    fn deliver(&mut self, from: Endpoint, to: Endpoint, message: Message) {
        self.record(None, "deliver", message.header.command as u64, message.header.op, || {
            format!(
                "{from:?}->{to:?} {:?} view {} op {}",
                message.header.command, message.header.view, message.header.op
            )
        });
        match to {
            Endpoint::Replica(replica) => {
                let index = replica as usize;
                if !self.nodes[index].up {
                    return;
                }
                if let Some(until) = self.nodes[index].paused_until_ns {
                    // A paused process still has its socket buffer.
                    self.sequence += 1;
                    let message = Box::new(message);
                    self.queue
                        .insert((until.max(self.now_ns) + 1, self.sequence), Event::Deliver { from, to, message });
                    return;
                }
                self.deliver_to_replica(replica, from, message);
            }
            Endpoint::Client(client) => {
                let before = self.config.record_history.then(|| self.client_snapshot(client));
                let eviction = message.header.command == Command::Eviction;
                self.on_client_message(client, message);
                if let Some(before) = before {
                    self.observe_completion(client, before, eviction);
                }
            }
        }
    }

    /// A frame arrives on the shard that owns its connection; the router
    /// names the shard that must handle it, and it hops there through that
    /// shard's inbox; that shard hands it to the group of its namespace.
    fn deliver_to_replica(&mut self, replica: u8, from: Endpoint, message: Message) {
        let index = replica as usize;
        let header = message.header;
        let (source, arrival) = match from {
            Endpoint::Replica(peer) => {
                let arrival =
                    self.nodes[index].owners.owner(peer).expect("a running process is connected to every peer");
                (Source::Replica(peer), arrival)
            }
            Endpoint::Client(client) => {
                (Source::Client(CLIENT_ID_BASE + u128::from(client)), self.client_shard(client))
            }
        };
        let routed =
            self.with_node(replica, |node, world| block_on_ready(node.on_frame(source, arrival, message, world)));
        if let Some(Routed::NamespaceMiss { shard, consensus_control: true }) = routed {
            let detail = format!(
                "replica {replica}: VSR frame {:?} for namespace {:#x} reached shard {}, which runs no group for it; \
                 VSR would retransmit it the same way and the group would wedge",
                header.command, header.namespace, shard.0
            );
            self.fail(Checker::Routing, detail);
        }
    }

    // --- clients ----------------------------------------------------------------

    fn on_client_tick(&mut self, index: u32) {
        self.schedule(TICK_NS, Event::ClientTick(index));
        let group = self.clients[index as usize].group;
        let id = self.clients[index as usize].id;
        // Reads later in the run, after crashes, state transfers and view
        // changes, must still return what was acknowledged.
        let last_ack = self.checkers[group].acks().iter().rev().find(|a| a.client == id);
        if let Some((offset, payload)) = last_ack.map(|a| (a.offset, a.payload.clone())) {
            self.check_reads(group, offset, &payload);
        }
        let now_ns = self.now_ns;
        let replica_count = self.config.replica_count;
        let safety = self.phase == Phase::Safety;
        let namespace = self.namespaces[self.clients[index as usize].group];
        let client = &mut self.clients[index as usize];
        client.ticks += 1;
        let mut sends: Vec<(Endpoint, Message)> = Vec::new();
        if let Some(in_flight) = &mut client.in_flight {
            if client.ticks - in_flight.sent_tick >= CLIENT_RETRY_TICKS {
                in_flight.sent_tick = client.ticks;
                let mut message =
                    client_request(client.id, namespace, in_flight.request, &in_flight.payload, in_flight.operation);
                if client.registered {
                    message = in_session(message, client.session);
                }
                for replica in 0..replica_count {
                    sends.push((Endpoint::Replica(replica), message.clone()));
                }
            }
        } else if !client.registered || safety {
            let (request, operation, payload) = if !client.registered {
                (0, Operation::Register, Vec::new())
            } else if namespace == METADATA_NAMESPACE {
                client.request += 1;
                let admin = metadata_request(index, client.request);
                (client.request, admin.operation(), admin.encode_body())
            } else {
                client.request += 1;
                let payload = format!("c{}-s{}-r{}", client.id, client.session_epoch, client.request);
                (client.request, Operation::SendMessages, payload.into_bytes())
            };
            let mut message = client_request(client.id, namespace, request, &payload, operation);
            if client.registered {
                message = in_session(message, client.session);
            }
            client.in_flight =
                Some(InFlight { request, operation, payload, invoked_ns: now_ns, sent_tick: client.ticks });
            let primary = (client.view_guess % u64::from(replica_count)) as u8;
            sends.push((Endpoint::Replica(primary), message));
        }
        for (to, message) in sends {
            self.send(Endpoint::Client(index), to, message);
        }
    }

    fn on_client_message(&mut self, index: u32, message: Message) {
        let header = message.header;
        let now_ns = self.now_ns;
        let group = self.clients[index as usize].group;
        let client = &mut self.clients[index as usize];
        if header.command == Command::Eviction {
            return self.on_eviction(index, group, &header);
        }
        let Some(in_flight) = &client.in_flight else { return };
        if header.command != Command::Reply || header.request != in_flight.request {
            return;
        }
        let registering = !client.registered;
        if registering != (header.operation == Operation::Register) {
            return;
        }
        if !registering && header.context != client.session {
            // A reply to an older session's request of the same number.
            return;
        }
        if registering && header.context <= client.session {
            // A late reply to an earlier register: that session is gone.
            return;
        }
        client.view_guess = client.view_guess.max(header.view);
        let in_flight = client.in_flight.take().expect("checked above");
        if registering {
            client.registered = true;
            client.session = header.context;
            return;
        }
        if self.namespaces[group] == METADATA_NAMESPACE {
            return self.on_metadata_reply(index, group, &message);
        }
        let client = &self.clients[index as usize];
        let Some(offset) = message.body.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap())) else {
            let id = client.id;
            return self.checkers[group]
                .fail(Checker::Linearizability, format!("client {id} got a reply without an offset"));
        };
        let ack = Ack {
            client: client.id,
            request: in_flight.request,
            op: header.op,
            offset,
            payload: in_flight.payload,
            invoked_ns: in_flight.invoked_ns,
            acked_ns: now_ns,
        };
        self.record(None, "ack", header.op, offset, String::new);
        let (offset, payload) = (ack.offset, ack.payload.clone());
        self.checkers[group].on_ack(ack);
        self.check_reads(group, offset, &payload);
    }

    /// A read of an acknowledged offset returns the acknowledged message on
    /// every replica that serves it (one that has not applied that far yet
    /// serves nothing there, which is no answer at all, not a wrong one).
    fn check_reads(&mut self, group: usize, offset: u64, payload: &[u8]) {
        // Observation only: no persist here, so checking changes nothing
        // the run does; what a replica serves is what it made durable.
        for replica in 0..self.config.replica_count {
            let Some(r) = self.group_replica(replica, group) else { continue };
            let read = block_on_ready(r.state_machine().read(offset, 1));
            let Some((at, message)) = read.first() else { continue };
            if *at != offset || message.as_slice() != payload {
                let label = self.group_label(group);
                let detail = format!(
                    "replica {replica}{label}: a read of acknowledged offset {offset} returned offset {at} with another message"
                );
                self.checkers[group].fail(Checker::Linearizability, detail);
                return;
            }
        }
    }

    /// The session is gone: the in-flight request's outcome is unknown (it
    /// may have committed before the eviction). The client never sends it
    /// again under a new session (that could apply it twice); it registers
    /// anew and goes on with new requests. The checker holds the eviction
    /// to having happened: some committed register must have evicted it.
    fn on_eviction(&mut self, index: u32, group: usize, header: &Header) {
        let client = &mut self.clients[index as usize];
        let current = client.registered && client.in_flight.as_ref().is_some_and(|f| f.request == header.request);
        // From a view older than one this client already had a reply from:
        // a deposed primary answering from its stale session table (view-churn
        // seed 16672, swarm seed 11155). Only the current view may evict.
        if !current || header.view < client.view_guess {
            return;
        }
        let id = client.id;
        client.in_flight = None;
        client.registered = false;
        client.request = 0;
        client.session_epoch += 1;
        self.record(None, "evicted", index.into(), header.request, String::new);
        self.checkers[group].on_eviction(id);
    }

    /// An admin client's reply: applied, or rejected with a typed error; both
    /// are outcomes the log chose (agreement already compares them across
    /// replicas). What was applied must be in every replica's catalogue at
    /// the end.
    fn on_metadata_reply(&mut self, index: u32, group: usize, message: &Message) {
        let header = message.header;
        match decode_reply(&message.body) {
            Ok(MetadataReply::Ok) => self.metadata_applied.push(metadata_request(index, header.request)),
            Ok(MetadataReply::Rejected(_)) => {}
            Ok(MetadataReply::Malformed) | Err(_) => {
                let detail = format!("admin client {index} got a malformed reply to request {}", header.request);
                self.checkers[group].fail(Checker::AckedWritesDurable, detail);
            }
        }
        self.record(None, "ack", header.op, 0, String::new);
    }

    /// Every replica ended with the same catalogue, holding everything an
    /// admin client was told was applied.
    fn check_final_metadata(&mut self, group: usize) {
        let mut catalogues = Vec::new();
        for replica in 0..self.config.replica_count {
            let Some(metadata) = self.group_replica(replica, group).and_then(|r| r.state_machine().metadata()) else {
                return;
            };
            catalogues.push(metadata.encode());
            for applied in &self.metadata_applied {
                let present = match applied {
                    MetadataRequest::CreateStream { stream_id, .. } => metadata.stream(*stream_id).is_some(),
                    MetadataRequest::CreateTopic { stream_id, topic_id, .. } => {
                        metadata.topic(*stream_id, *topic_id).is_some()
                    }
                    MetadataRequest::DeleteStream { .. } | MetadataRequest::DeleteTopic { .. } => true,
                };
                if !present {
                    let detail = format!("replica {replica} lost the acknowledged metadata change {applied:?}");
                    return self.checkers[group].fail(Checker::AckedWritesDurable, detail);
                }
            }
        }
        if catalogues.windows(2).any(|w| w[0] != w[1]) {
            self.checkers[group].fail(Checker::Agreement, "replicas ended with different catalogues".into());
        }
    }

    // --- phases -----------------------------------------------------------------

    fn end_safety(&mut self) {
        self.phase = Phase::Liveness { deadline_ns: self.now_ns + self.config.liveness_time_ns };
        self.network.heal();
        self.record(None, "heal", 0, 0, || "liveness phase: faults off".into());
        for replica in 0..self.config.replica_count {
            let index = replica as usize;
            if self.nodes[index].paused_until_ns.is_some() {
                self.nodes[index].paused_until_ns = None;
            }
            if !self.nodes[index].up {
                // Restart events for it are already queued; pull them in.
                self.schedule(TICK_NS, Event::Restart(replica));
            }
        }
    }

    /// Converged: every replica up, in normal status in one view, and every
    /// replica applied the same ops, with no client request left in flight.
    fn check_convergence(&mut self) {
        for group in 0..self.namespaces.len() {
            let mut views = Vec::new();
            let mut commits = Vec::new();
            for replica in 0..self.config.replica_count {
                let Some(r) = self.group_replica(replica, group) else { return };
                if r.status() != Status::Normal || r.state_machine().missing().is_some() {
                    return;
                }
                views.push(r.view());
                commits.push((r.commit_min(), r.commit_max(), r.op()));
            }
            let same_view = views.windows(2).all(|w| w[0] == w[1]);
            let same_commit =
                commits.windows(2).all(|w| w[0].0 == w[1].0) && commits.iter().all(|c| c.0 == c.1 && c.0 == c.2);
            if !same_view || !same_commit {
                return;
            }
        }
        if self.clients.iter().all(|c| c.in_flight.is_none()) {
            self.converged = true;
        }
    }

    fn finish(&mut self) -> RunOutcome {
        let drops: u64 = self.nodes.iter().map(|n| n.drops.total()).sum();
        let hop_drops = self.hops_attempted - self.hops_delivered;
        let misses: u64 = self
            .nodes
            .iter()
            .flat_map(|n| n.drops.snapshot())
            .filter(|((_, reason), _)| !matches!(reason, DropReason::InboxFull | DropReason::Injected))
            .map(|(_, count)| count)
            .sum();
        if drops != hop_drops + misses {
            let detail = format!(
                "frame accounting: {} hops, {} delivered, {hop_drops} lost, but frame_drops_total counts {}",
                self.hops_attempted,
                self.hops_delivered,
                drops - misses
            );
            self.fail(Checker::Routing, detail);
        }
        let verdict = if let Some(violation) = self.violation() {
            Verdict::SafetyViolation {
                checker: violation.checker.clone(),
                message: violation.message.clone(),
                at_ns: self.now_ns,
            }
        } else if let Some(message) = &self.availability_failure {
            Verdict::LivenessViolation { message: message.clone() }
        } else if !self.converged {
            Verdict::LivenessViolation { message: self.liveness_report() }
        } else {
            for group in 0..self.namespaces.len() {
                if self.namespaces[group] == METADATA_NAMESPACE {
                    self.check_final_metadata(group);
                    continue;
                }
                for replica in 0..self.config.replica_count {
                    let messages = self.read_partition(replica, group);
                    self.checkers[group].check_final_log(replica, &messages);
                }
            }
            match self.violation() {
                Some(violation) => Verdict::SafetyViolation {
                    checker: violation.checker.clone(),
                    message: violation.message.clone(),
                    at_ns: self.now_ns,
                },
                None => Verdict::Pass,
            }
        };
        self.availability.finish(self.now_ns);
        self.history_indeterminate_at_end();
        if !matches!(verdict, Verdict::Pass) {
            let detail = format!("{verdict:?}");
            self.timeline(0, TimelineKind::Violation, detail);
        }
        for (index, node) in self.nodes.iter().enumerate() {
            for (kind, count) in node.io.disk().counters() {
                *self.faults.entry(format!("disk_{kind}")).or_default() += count;
                let _ = index;
            }
        }
        for node in &self.nodes {
            for ((variant, reason), count) in node.drops.snapshot() {
                if count > 0 {
                    *self
                        .faults
                        .entry(format!("frame_drops_total{{{},{}}}", variant.name(), reason.name()))
                        .or_default() += count;
                }
            }
        }
        let faults_injected_total = self
            .faults
            .iter()
            .filter(|(k, _)| !k.starts_with("frame_drops_total"))
            .filter(|(k, _)| !k.starts_with("disk_"))
            .map(|(_, v)| v)
            .sum();
        RunOutcome {
            config: self.config.clone(),
            verdict,
            ops_committed: self.checkers.iter().map(Checkers::ops_committed).sum(),
            view_changes: self.view_changes,
            faults_injected: self.faults.clone(),
            faults_injected_total,
            trace_hash: self.trace_hash,
            events_processed: self.events_processed,
            virtual_time_ns: self.now_ns,
            trace: std::mem::take(&mut self.trace),
            timeline: std::mem::take(&mut self.timeline),
            availability_window_max_ns: self.availability.max_ns(),
            availability_windows: self.availability.take_windows(),
            history: std::mem::take(&mut self.history),
            marks: shoal_vsr::marks::take().into_iter().map(|(name, count)| (name.to_string(), count)).collect(),
        }
    }

    // --- observers: promises, availability, history -------------------------------

    /// The promises checker: what this message promises must already be on
    /// the replica's disk in durable bytes, not only in its memory.
    fn check_promise(&mut self, replica: u8, group: usize, header: &Header) {
        let Some(promise) = Promise::of(header) else { return };
        let namespace = self.namespaces[group];
        let dir = std::path::Path::new(DATA_DIR);
        let result = {
            let disk = self.nodes[replica as usize].io.disk();
            match promise {
                Promise::Prepare { op, checksum } => {
                    let config = JournalConfig {
                        slot_count: JOURNAL_SLOT_COUNT,
                        message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES,
                        cluster: CLUSTER_ID,
                        namespace,
                    };
                    let journal = journal_path(dir, namespace);
                    let read = |offset, len| disk.contents_durable_range(&journal, offset, len);
                    check_prepare(op, checksum, &config, read, || {
                        disk.contents_durable(&checkpoint_path(dir, namespace))
                    })
                }
                _ => check_view(promise, disk.contents_durable(&superblock_path(dir, namespace)).as_deref()),
            }
        };
        if let Err(why) = result {
            let label = self.group_label(group);
            let detail = format!(
                "replica {replica}{label} sent {:?} (view {}, op {}) before its promise was durable: {why}",
                header.command, header.view, header.op
            );
            self.checkers[group].fail(Checker::Promises, detail);
        }
    }

    /// Once per network tick: for each group, could it commit now (a quorum
    /// up, unpaused and pairwise connected) and should it (a client waits)?
    fn sample_availability(&mut self) {
        let quorum = usize::from(self.config.replica_count) / 2 + 1;
        for group in 0..self.namespaces.len() {
            let waiting = self.clients.iter().any(|c| c.group == group && c.in_flight.is_some());
            let up: Vec<u32> = (0..self.config.replica_count)
                .filter(|r| {
                    let node = &self.nodes[*r as usize];
                    node.up && node.paused_until_ns.is_none() && node.node.is_some()
                })
                .map(NodeId::from)
                .collect();
            let could = waiting && connected_quorum(&up, quorum, |a, b| self.network.connected(a, b));
            self.availability.sample(self.now_ns, group, could);
        }
        if self.availability_failure.is_none()
            && let Some(window) = self.availability.violation(self.now_ns)
        {
            self.availability_failure = Some(format!(
                "availability: group {} had a connected quorum and a waiting client but committed nothing from \
                 {:.3} s to {:.3} s, over the bound of {:.3} s (AVAILABILITY_WINDOW_MAX_NS)",
                window.group,
                window.start_ns as f64 / 1e9,
                window.end_ns as f64 / 1e9,
                crate::availability::AVAILABILITY_WINDOW_MAX_NS as f64 / 1e9
            ));
        }
    }

    /// After a client tick: a request just created is an invoke. (A retry
    /// keeps its invoke time, so `invoked_ns == now` only on the tick that
    /// invoked it.)
    fn observe_invoke(&mut self, index: u32) {
        let client = &self.clients[index as usize];
        let Some(in_flight) = &client.in_flight else { return };
        if in_flight.invoked_ns != self.now_ns || in_flight.operation == Operation::Register {
            return;
        }
        let (id, group, request, payload) = (client.id, client.group, in_flight.request, in_flight.payload.clone());
        let operation = in_flight.operation;
        if operation == Operation::SendMessages {
            self.checkers[group].on_invoke(id, request, payload.clone());
        }
        if self.config.record_history {
            let event = self.history_event(HistoryKind::Invoke, index, request, operation, &payload);
            self.history.push(HistoryEvent { invoke_ns: self.now_ns, ..event });
        }
    }

    /// What a client waits for, to tell afterwards how a reply ended it.
    fn client_snapshot(&self, index: u32) -> ClientSnapshot {
        let client = &self.clients[index as usize];
        ClientSnapshot {
            in_flight: client.in_flight.as_ref().map(|f| (f.request, f.operation, f.payload.clone(), f.invoked_ns)),
            acks: self.checkers[client.group].acks().len(),
            metadata_applied: self.metadata_applied.len(),
        }
    }

    /// After a message reached a client: did it complete the request?
    fn observe_completion(&mut self, index: u32, before: ClientSnapshot, eviction: bool) {
        let Some((request, operation, payload, invoked_ns)) = before.in_flight else { return };
        if operation == Operation::Register {
            return;
        }
        let client = &self.clients[index as usize];
        let group = client.group;
        let still_waiting = client.in_flight.as_ref().is_some_and(|f| f.request == request);
        let mut event = self.history_event(HistoryKind::Ok, index, request, operation, &payload);
        event.invoke_ns = invoked_ns;
        event.complete_ns = Some(self.now_ns);
        if eviction {
            // The session is gone: whether the request took effect is unknown.
            event.kind = HistoryKind::Indeterminate;
        } else if still_waiting {
            return;
        } else if operation == Operation::SendMessages {
            let acks = self.checkers[group].acks();
            if acks.len() == before.acks {
                return;
            }
            event.offset = acks.last().map(|ack| ack.offset);
        } else if self.metadata_applied.len() > before.metadata_applied {
            event.reply = Some("applied".to_string());
        } else {
            event.kind = HistoryKind::Fail;
            event.reply = Some("rejected".to_string());
        }
        self.history.push(event);
    }

    /// The run ended with these requests in flight: they may or may not have
    /// taken effect.
    fn history_indeterminate_at_end(&mut self) {
        if !self.config.record_history {
            return;
        }
        for index in 0..self.clients.len() as u32 {
            let Some(in_flight) = &self.clients[index as usize].in_flight else { continue };
            if in_flight.operation == Operation::Register {
                continue;
            }
            let (request, operation, payload, invoked_ns) =
                (in_flight.request, in_flight.operation, in_flight.payload.clone(), in_flight.invoked_ns);
            let event = self.history_event(HistoryKind::Indeterminate, index, request, operation, &payload);
            self.history.push(HistoryEvent { invoke_ns: invoked_ns, ..event });
        }
    }

    fn history_event(
        &self,
        kind: HistoryKind,
        index: u32,
        request: u64,
        operation: Operation,
        payload: &[u8],
    ) -> HistoryEvent {
        let client = &self.clients[index as usize];
        let (operation, payload) = if operation == Operation::SendMessages {
            ("append".to_string(), String::from_utf8_lossy(payload).into_owned())
        } else {
            (format!("{operation:?}").to_lowercase(), format!("{:?}", metadata_request(index, request)))
        };
        HistoryEvent {
            kind,
            client: u64::try_from(client.id).expect("simulated client ids are small"),
            request,
            group: client.group,
            namespace: self.namespaces[client.group],
            operation,
            payload,
            offset: None,
            reply: None,
            invoke_ns: 0,
            complete_ns: None,
        }
    }

    fn liveness_report(&self) -> String {
        let replicas: Vec<String> = (0..self.config.replica_count)
            .flat_map(|index| (0..self.namespaces.len()).map(move |group| (index, group)))
            .map(|(index, group)| match self.group_replica(index, group) {
                None => format!("r{index}/g{group}: down"),
                Some(r) => format!(
                    "r{index}/g{group}: {:?} view {} op {} commit {}/{} pipeline {:?} missing bodies {:?} drops {:?}",
                    r.status(),
                    r.view(),
                    r.op(),
                    r.commit_min(),
                    r.commit_max(),
                    r.pipeline_summary(),
                    (r.commit_min() + 1..=r.op()).filter(|op| !r.has_body(*op)).collect::<Vec<_>>(),
                    r.stats().drops
                ),
            })
            .collect();
        let in_flight = self.clients.iter().filter(|c| c.in_flight.is_some()).count();
        format!(
            "no convergence within {} ms after heal: {}; {in_flight} client requests in flight",
            self.config.liveness_time_ns / 1_000_000,
            replicas.join(", ")
        )
    }
}

fn replica_config(config: &RunConfig, replica: u8, namespace: u64, seed: u64) -> ReplicaConfig {
    ReplicaConfig {
        cluster: CLUSTER_ID,
        namespace,
        replica,
        replica_count: config.replica_count,
        journal_slot_count: JOURNAL_SLOT_COUNT,
        checkpoint_interval_ops: CHECKPOINT_INTERVAL_OPS,
        seed,
        client_sessions_max: config.client_sessions_max,
    }
}

fn client_request(client: u128, namespace: u64, request: u64, payload: &[u8], operation: Operation) -> Message {
    let mut header = Header::new(Command::Request, CLUSTER_ID);
    header.namespace = namespace;
    header.client = client;
    header.request = request;
    header.operation = operation;
    Message::new(header, Rc::from(payload))
}

/// Run one seed to its verdict.
pub fn run(config: &RunConfig) -> RunOutcome {
    Cluster::new(config).run()
}

/// A request sent in the session its register opened (`Header::context`).
fn in_session(message: Message, session: u64) -> Message {
    let mut header = message.header;
    header.context = session;
    Message::new(header, message.body)
}

/// The world one node runs in during one call: this cluster's network,
/// fault policy and checkers, seen through the node's two narrow traits.
struct SimWorld<'a> {
    cluster: &'a mut Cluster,
    replica: u8,
    /// Why a hook stopped the node (a crash at a protocol moment); the
    /// cluster crashes the process once the node is back in its slot.
    crash: Option<String>,
}

impl NodeBus for SimWorld<'_> {
    fn send_to_replica(&mut self, _via: ShardId, to: u8, message: Message) {
        self.cluster.send(Endpoint::Replica(self.replica), Endpoint::Replica(to), message);
    }

    fn reply_to_client(&mut self, _via: ShardId, client: u128, message: Message) {
        let index = u32::try_from(client - CLIENT_ID_BASE).expect("simulated client ids are small");
        self.cluster.send(Endpoint::Replica(self.replica), Endpoint::Client(index), message);
    }

    fn client_shard(&self, client: u128) -> ShardId {
        let index = u32::try_from(client - CLIENT_ID_BASE).expect("simulated client ids are small");
        self.cluster.client_shard(index)
    }
}

impl NodeHooks for SimWorld<'_> {
    fn before_storage(&mut self, _group: usize, _action: &Action) {
        self.cluster.arm_storage_fault(self.replica);
    }

    fn after_storage(&mut self, group: usize, action: &Action, error: Option<&StorageError>) -> Flow {
        self.cluster.after_storage(self.replica, group, action, error.is_none());
        if error.is_none() && self.cluster.roll(self.cluster.config.faults.protocol_crash_ppm, "protocol_crash") {
            self.crash = Some(format!("right after {} completed", action_name(action)));
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn before_send(&mut self, group: usize, header: &Header) {
        self.cluster.check_promise(self.replica, group, header);
    }

    fn after_promise_sent(&mut self, _group: usize, command: Command) -> Flow {
        if self.cluster.roll(self.cluster.config.faults.protocol_crash_ppm, "protocol_crash") {
            self.crash = Some(format!("right after sending {command:?}"));
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn on_committed(&mut self, group: usize, committed: &[Committed]) {
        self.cluster.observe_committed(self.replica, group, committed);
    }

    fn on_view(&mut self, group: usize, view: u64, status: Status) {
        self.cluster.observe_view(self.replica, group, view, status);
    }

    fn on_committed_conflict(&mut self, group: usize, why: &str) {
        let label = self.cluster.group_label(group);
        let detail = format!(
            "replica {}{label} was offered a canonical log that contradicts ops it committed ({why})",
            self.replica
        );
        self.cluster.checkers[group].fail(Checker::Agreement, detail);
    }

    fn hop(&mut self, from: ShardId, to: ShardId, _variant: FrameVariant) -> Result<(), DropReason> {
        self.cluster.hop(self.replica, from, to)
    }

    fn draw(&mut self, bound: u64) -> Option<u64> {
        Some(self.cluster.rng.next_u64() % bound)
    }

    fn on_state_data_filled(&mut self, _group: usize, offset: u64, count: usize) {
        self.cluster.record(Some(self.replica), "state_data", offset, count as u64, String::new);
    }
}
