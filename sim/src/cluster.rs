//! The cluster driver: R replica processes, their disks, the network and the
//! clients, advanced event by event in virtual time from one seed.
//!
//! Each process runs one `shoal_shard::node::Node` per shard, the same
//! library code the server runs on each shard thread (action driver under
//! the ordering contract, group storage, partition persist, state data),
//! each holding the groups hashed to its shard, with the shard crate's
//! bounded inboxes, pump and owner table between them (`inboxes`). This
//! module is only the world around them: it delivers frames to a process's
//! connections and carries the nodes' sends through the simulated network
//! (`NodeBus`), and through `NodeHooks` it
//! rolls faults (storage errors before a storage action, crashes right after
//! a promise-bearing send or a storage completion), checks promises against
//! the durable disk and records commits, views and the trace.
//!
//! A run has a safety phase (faults on, per the `FaultMix`) and a liveness
//! phase (faults off, every replica restarted and unpaused, the network
//! healed): by the end of it every replica must have committed the same ops.
//! Checkers run after every step; the first violation ends the run.
//!
//! Here: the event loop, the network glue and the phases. Along the seams:
//! `world` (the node's `NodeBus`/`NodeHooks`), `inboxes` (a process's
//! shards: their nodes and inboxes), `faults` (fault policy),
//! `process` (crash, restart, wipe), `workload` (clients), `checks` (what the
//! checkers are shown), `history` (the client-visible history).
//!
//! Must not touch the wall clock, threads or OS entropy: every decision comes
//! from the seed, so a failing seed replays bit-for-bit.

mod checks;
mod deposed;
mod faults;
mod history;
mod inboxes;
mod loss;
mod lost_vote;
mod plot;
mod process;
mod quiet;
mod reads;
mod workload;
mod world;

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use shoal_shard::node::{
    Flow, Group, GroupMachine, GroupStorage, Node, NodeBus, NodeConfig, NodeHooks, NodeStop, Routed, StorageConfig,
    StorageDamage, StorageError, action_name, files_open_max,
};
use shoal_shard::router::route_metadata;
use shoal_shard::state_machine::{MetadataReply, MetadataRequest, decode_reply};
use shoal_shard::{PartitionLogConfig, Salvage, SalvageCut};

use shoal_vsr::checkpoint::checkpoint_path;
use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, Header, Operation};
use shoal_vsr::io::Io;
use shoal_vsr::journal::journal_path;
use shoal_vsr::message::Message;
use shoal_vsr::replica::{Action, Committed, Replica, ReplicaConfig, Source, Status, frame_size_max_bytes};
use shoal_vsr::superblock::superblock_path;

use shoal_shard::frame::{FrameVariant, ShardFrame};
use shoal_shard::metrics::{DropReason, FrameDrops};
use shoal_shard::namespace::Namespace;
use shoal_shard::owner_table::{ReplicaOwnerTable, ShardCount, ShardId};
use shoal_shard::router::route_partition;
use shoal_shard::wire::hello::Peer;

use crate::availability::{Availability, Role, connected_quorum};
use crate::checker::{Ack, Checkers};
use crate::choices::NodeChoices;
use crate::io::{DiskSpeed, Driven, IoInFlight, LatencyProfile, SimIo, block_on_io, block_on_ready, block_on_timed};
use crate::network::{Fate, Network, NodeId, PPM_MAX, Partition, PartitionKind};
use crate::node::DATA_DIR;
use crate::promises::{self, DurableFiles, Promise};
use inboxes::{Placement, ShardNodes};

use crate::run::{
    Checker, HistoryEvent, HistoryKind, RunConfig, RunOutcome, ScriptedFault, Target, TimelineEvent, TimelineKind,
    TraceEvent, Verdict,
};

/// The replicas' tick: the one their time-based timers assume.
pub const TICK_NS: u64 = shoal_vsr::replica::TICK_NS;
pub use shoal_shard::node::{METADATA_NAMESPACE, STATE_DATA_MESSAGES_MAX};

/// A simulated group replica: the partition state machine over a durable
/// partition log on the replica's simulated disk.
pub type GroupReplica = shoal_shard::node::GroupReplica<SimIo>;

/// The server's way of opening a group's machine (`open_in_cluster`), so the
/// simulator runs the same salvage path.
fn open_partition(
    io: &SimIo,
    namespace: u64,
    config: &RunConfig,
) -> Result<(GroupMachine<SimIo>, Option<Salvage>), String> {
    let log_config = PartitionLogConfig { segment_size_max_bytes: config.partition_segment_size_max_bytes };
    block_on_timed(
        io,
        GroupMachine::open_in_cluster(io, Path::new(DATA_DIR), namespace, config.replica_count, log_config),
    )
    .map_err(|error| format!("partition log: {error}"))
}

/// The machine of a group on a fresh disk, or `None` when an armed fault
/// halted the disk mid-format (the caller stops formatting). A salvage or
/// any other error on a fresh disk is a bug in the format, not a fault.
fn fresh_partition(io: &SimIo, namespace: u64, config: &RunConfig) -> Option<GroupMachine<SimIo>> {
    match open_partition(io, namespace, config) {
        Ok((machine, None)) => Some(machine),
        Ok((_, Some(salvage))) => panic!("a fresh disk's partition log {namespace:#x} came back salvaged: {salvage:?}"),
        Err(error) => {
            assert!(io.disk().is_halted(), "a fresh disk opens partition log {namespace:#x}: {error}");
            None
        }
    }
}

/// Bytes per partition log segment in simulated runs. The server's 64 MiB
/// would never roll in a run that writes tens of KiB per partition: small
/// segments make every run seal segments, read across them, salvage a
/// sealed one and hold the open files of many.
pub const PARTITION_SEGMENT_SIZE_MAX_BYTES: u64 = 16 * 1024;

pub const JOURNAL_SLOT_COUNT: u64 = 64;
pub const CHECKPOINT_INTERVAL_OPS: u64 = 16;
/// The longest interval the simulated journal allows (the interval plus a
/// view change's headers must fit in it: `Replica::new` asserts).
pub const CHECKPOINT_INTERVAL_OPS_LONGEST: u64 = JOURNAL_SLOT_COUNT - shoal_vsr::replica::VIEW_HEADERS_MAX as u64 - 1;
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
/// Group commit in virtual time: a frame delivered to a replica opens a turn
/// half the time (when none is open), and always when it finds the process
/// busy with a call (it waited in the inbox: the server reads such frames
/// in one go); the frames that arrive before the turn ends join it, and
/// their prepares are flushed together at its end, up to this long after
/// it opened (the batching window; the storage latency itself is
/// `SimIo`'s, in virtual time).
pub const STORAGE_FLUSH_LATENCY_MAX_NS: u64 = 2_000_000;
/// An armed crash (half of the injected process crashes, while the disk
/// has latency) lands at one of the next this-many waits of the node on
/// its storage, with the waited-on calls in flight.
pub const CRASH_IN_FLIGHT_WAITS_MAX: u64 = 4;
/// The named scenarios' `FaultMix::restart_crash_ppm` where they crash
/// processes: per start, the chance a crash lands among the start's own
/// storage calls (settle, superblock repair, journal open and repair, the
/// operator's format), which then restarts again later.
pub const RESTART_CRASH_PPM: u32 = 150_000;
/// The named scenarios' `FaultMix::restart_storage_error_ppm` where they
/// inject storage errors: per start, the chance one of the start's storage
/// calls fails with EIO. The process stops with the error, as the server
/// does, and the world (its supervisor, its operator) starts it again later.
pub const RESTART_STORAGE_ERROR_PPM: u32 = 150_000;
/// A start's fault lands at one of its first this-many calls that change
/// the disk per group it opens (few: settles, repairs, a format's steps).
pub const RESTART_FAULT_MUTATIONS_PER_GROUP_MAX: u64 = 6;
/// Starts of one process in a row that an injected fault may stop; the
/// next one meets none. The simulated disk's faults are one-shot, so the
/// fault model promises a disk that lets the replica start again: a start
/// that fails with nothing injected into it is a recovery bug.
pub const RESTART_FAULTS_IN_A_ROW_MAX: u32 = 3;
/// Times a running node may stop itself on a storage or partition log
/// error in the liveness phase, where nothing is injected any more: damage
/// left by the safety phase may stop it once or twice on its way to
/// repairing it. One more is a restart loop, and a liveness verdict, in
/// virtual time (disk-rot seed 44036 on tree 984de2e looped here for
/// 2,800 virtual seconds, each start moving the liveness deadline on,
/// until the sweep's wall-clock timeout killed it).
pub const LIVENESS_SELF_STOPS_MAX: u32 = 2;
/// Times one replica's start may move the liveness deadline on (it gets
/// the whole bound from when it serves): its start at the heal and one per
/// self stop the liveness phase allows.
pub const LIVENESS_EXTENSIONS_PER_REPLICA_MAX: u32 = 1 + LIVENESS_SELF_STOPS_MAX;
/// Bound on events in one run: a run that needs more is a bug in the driver.
pub const EVENTS_MAX: u64 = 50_000_000;
/// The liveness phase is checked this often.
const CONVERGENCE_CHECK_TICKS: u64 = 5;
/// Salt of the seed buggify draws its sites and firings from.
const SEED_STREAM_BUGGIFY: u64 = 0x6275_6767_6966_7900;

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
    Deliver {
        from: Endpoint,
        to: Endpoint,
        message: Box<Message>,
    },
    Restart(u8),
    Unpause(u8),
    /// The storage latency of a turn passed: the shard's node flushes its
    /// groups.
    EndTurn(u8, ShardId),
    /// The process is free again: the shard takes the frames that waited
    /// in its inbox.
    Drain(u8, ShardId),
    /// A flush's fsync of the replica's node may have ended (its latency
    /// passed on the process's clock): the node completes what ended.
    FlushPoll(u8),
    EndSafety,
    Scripted {
        index: usize,
        attempts: u32,
    },
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
    /// A journal sector went bad while this replica ran (`rot_running`);
    /// cleared by its next restart, whose open finds the damage (the
    /// replica is then `Recovering` until repaired). A plot must not wipe
    /// another replica meanwhile: two damaged replicas of three exceed the
    /// fault model (swarm seeds 1284 and 2953 wedged that way).
    rotted_while_running: bool,
    /// A misdirected write armed on a partition segment (the group, the
    /// segment) and not landed yet: it may land only while the fault
    /// model's placement rule still holds (`keep_partition_misdirect_placeable`).
    partition_misdirect_armed: Option<(usize, std::path::PathBuf)>,
    /// The disk is wiped when this (crashed) process restarts, and
    /// formatted to rejoin; stays set until that format finished.
    wipe_on_restart: bool,
    /// The wipe happened and its format did not finish (a crash or a
    /// storage error stopped it): the next start runs the operator's
    /// format again over what the last one left, without another wipe.
    wiped: bool,
    /// Starts in a row that a fault injected into the start itself stopped
    /// (`RESTART_FAULTS_IN_A_ROW_MAX`).
    restart_faults_in_a_row: u32,
    /// Times the running node stopped itself on a storage error in the
    /// liveness phase (`LIVENESS_SELF_STOPS_MAX`).
    liveness_self_stops: u32,
    /// Times a start moved the liveness deadline on
    /// (`LIVENESS_EXTENSIONS_PER_REPLICA_MAX`).
    liveness_extensions: u32,
    /// The bytes rot and latent sector errors took since the disk was
    /// last wiped (whole damage units: a sector, or a page), by path: a
    /// start may find damage only under these, a read that failed, or a
    /// misdirected write's ranges (`checks::check_journal_damage`,
    /// `check_salvage`, `check_group_damage`).
    sector_damage: BTreeMap<std::path::PathBuf, crate::disk::ByteRanges>,
    /// Files that lost a write (`SimDisk::take_lost_writes`) since a start
    /// last found their group's journal whole, with the bytes those writes
    /// covered.
    lost_write_files: BTreeMap<std::path::PathBuf, crate::disk::ByteRanges>,
    /// The running shards (a node per shard and their inboxes); `None`
    /// while down.
    node: Option<ShardNodes>,
    /// When the node's last call ended on the process's own clock (its
    /// storage took that long); events for it wait until then.
    busy_until_ns: u64,
    /// When a `FlushPoll` for the node's running fsyncs is queued (one at
    /// a time: every call would otherwise queue its own).
    flush_poll_at_ns: Option<u64>,
    /// A crash armed to land while the node waits on storage: at the
    /// count-th wait from now (`block_on_io`).
    crash_armed: Option<u32>,
    /// Per group: prepares this replica wrote durably (and so may have
    /// acknowledged) and has not legitimately dropped since: they must
    /// survive a crash. The recovery checker's bookkeeping, not the node's.
    acked: Vec<BTreeMap<u64, u128>>,
    /// Which of this process's shards holds the connection to each peer
    /// (shared with the node, which sends through it).
    owners: Arc<ReplicaOwnerTable>,
    /// `frame_drops_total` of each shard of this process, over all its lives.
    drops: Vec<Arc<FrameDrops>>,
}

#[derive(Debug)]
struct InFlight {
    request: u64,
    operation: Operation,
    /// The request's body (for an append, the encoded batch of `messages`).
    payload: Vec<u8>,
    /// An append's batch, in order; empty for other operations.
    messages: Vec<Vec<u8>>,
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
    /// The nodes' random choices (see `choices`), apart from `rng`.
    choices: NodeChoices,
    now_ns: u64,
    queue: BTreeMap<(u64, u64), Event>,
    sequence: u64,
    nodes: Vec<Process>,
    clients: Vec<Client>,
    network: Network,
    /// Namespace of each group; group g lives on shard `shard_of[g]`.
    namespaces: Vec<u64>,
    shard_of: Vec<ShardId>,
    /// Each group's shard and index in its shard's node.
    placement: Rc<Placement>,
    shard_count: ShardCount,
    /// One set of checkers per group.
    checkers: Vec<Checkers>,
    /// Frames offered to a shard's inbox, and how many it delivered (to its
    /// node, or out on its connection): `inboxes`' accounting.
    frames_offered: u64,
    frames_delivered: u64,
    /// Metadata changes an admin client was told were applied.
    metadata_applied: Vec<MetadataRequest>,
    phase: Phase,
    /// Faults that may still be injected (`None`: unlimited).
    fault_budget: Option<u64>,
    faults: BTreeMap<String, u64>,
    /// Checkpoint copies rotted since their replica last rewrote the file:
    /// (replica, group, copy). Rot takes the last good copy only when the
    /// cluster can spare the group's state on that replica
    /// (`group_loss_is_recoverable`): it must rebuild it from its peers.
    checkpoint_rot: std::collections::BTreeSet<(u8, usize, u64)>,
    /// Superblock copies rotted since the replica's last superblock write:
    /// `(replica, group, copy)`. The last good copy as for checkpoints.
    superblock_rot: std::collections::BTreeSet<(u8, usize, u64)>,
    /// Start-up replays of the metadata group that ran to their end at a
    /// restart (`replay_metadata_at_start`), over every replica.
    metadata_replays: u64,
    /// Test hook: the next start-up replay's catalogue gains a stream the
    /// metadata group never committed, so the recovery check must fail.
    tamper_next_metadata_replay: bool,
    /// The one replica whose disk may rot: corrupting a slot on no more than
    /// one replica keeps every committed op on a majority.
    rot_replica: u8,
    trace_hash: u64,
    trace: Vec<TraceEvent>,
    timeline: Vec<TimelineEvent>,
    events_processed: u64,
    view_changes: u64,
    converged: bool,
    /// With the scrubber on: the scrub passes each (replica, partition
    /// group) must have finished before the run may count as converged
    /// (`scrub_passes_needed_at_heal`): damage that landed just before the
    /// heal is found by a pass that began after it, not by the final read.
    scrub_passes_needed: BTreeMap<(u8, usize), u64>,
    availability: Availability,
    /// Set when a no-commit window outgrew its bound: the run ends there
    /// with a liveness verdict.
    availability_failure: Option<String>,
    /// The quiet-period checker (`crate::quiet`); a violation ends the run
    /// through `availability_failure`, as a liveness verdict.
    quiet: crate::quiet::Quiet,
    /// The client-visible history, when `record_history` is set.
    history: Vec<HistoryEvent>,
    /// Clients' reads through the node's read path (`reads`).
    reads: reads::Reads,
    /// The targeted schedule under way, if any (`plot`).
    plot: Option<plot::Plot>,
    plots_started: u32,
    /// The deposed-primary plot under way, if any (`deposed`).
    deposed: Option<deposed::Deposed>,
    deposed_started: u32,
    /// The lost-vote plot under way, if any (`lost_vote`).
    lost_vote: Option<lost_vote::LostVote>,
    lost_votes_started: u32,
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
        scrub_bytes_per_tick: config.partition_scrub_bytes_per_tick,
    }
}

/// The most calls that change the disk a start's fault is drawn among:
/// a few per group it opens or formats, and as many for the metadata
/// group's start-up replay, which changes the disk as an open does.
fn start_mutations_max(namespaces: &[u64]) -> u64 {
    let opens = namespaces.len() + usize::from(namespaces.contains(&METADATA_NAMESPACE));
    RESTART_FAULT_MUTATIONS_PER_GROUP_MAX * opens as u64
}

/// A first start's replay of the metadata group (`shard_zero_start`), on a
/// disk that takes no time yet. `None`: a fault stopped it.
fn first_start_replay(io: &SimIo, config: &RunConfig, replica: u8) -> Option<shoal_shard::handoff::MetadataReplay> {
    let metadata = metadata_group(config, replica);
    let dir = Path::new(DATA_DIR);
    block_on_ready(shoal_shard::handoff::replay_metadata_group(io, dir, metadata, ShardId::METADATA)).ok()
}

/// The metadata group as the start-up replay sees `replica` of this run.
/// The server's replay and its metadata replica share one session table
/// size (`CLIENT_SESSIONS_MAX`) and the server's fixed journal; the
/// simulator's replica takes the run's table and every group the
/// simulator's small journal, so its replay does too (a smaller table
/// evicts sessions, and so changes what is applied; the server's 1,024-slot
/// metadata journal made every seed with a metadata group 3.5 times slower
/// to simulate, and rarely wrapped).
fn metadata_group(config: &RunConfig, replica: u8) -> shoal_shard::handoff::MetadataGroup {
    shoal_shard::handoff::MetadataGroup {
        client_sessions_max: config.client_sessions_max,
        journal_slot_count: JOURNAL_SLOT_COUNT,
        message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES,
        ..shoal_shard::handoff::MetadataGroup::new(CLUSTER_ID, replica, config.replica_count)
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
        let placement = Rc::new(Placement::new(&shard_of, shard_count));
        // One disk speed for every process of a run (each with its own
        // draws and long tail): a lone slow backup behind a fast quorum lags
        // without bound, which VSR allows but the quiet-period checker's
        // commit-lag bound does not.
        let speed = DiskSpeed::ALL[(rng.next_u64() % DiskSpeed::ALL.len() as u64) as usize];
        let mut nodes = Vec::new();
        for replica in 0..config.replica_count {
            // Each process has its own clock: a call runs on it for as long
            // as its storage takes (`with_node`).
            let io = SimIo::new(rng.next_u64());
            io.disk().faults.read_corruption_ppm = 0;
            io.disk().faults.misdirected_write_ppm = 0;
            io.disk().faults.read_eio_ppm = config.faults.storage_read_eio_ppm;
            io.disk().open_files_max = Some(files_open_max(namespaces.len()));
            io.disk().latent_error_page_bytes = config.storage_latent_error_page_bytes;
            // Storage (issue 10): one crash in three keeps the page cache.
            io.disk().faults.process_crash_ppm = crate::disk::DiskFaults::cluster().process_crash_ppm;
            // A new cluster's first start formats every group (as the
            // server does), and a crash may land inside that format too:
            // the process is then down, and its next start must finish it
            // (`restart`, `format_new_group`).
            let (crash_draw, count_draw) = (rng.next_u64(), rng.next_u64());
            if crash_draw % PPM_MAX < u64::from(config.faults.restart_crash_ppm) {
                let count = 1 + count_draw % start_mutations_max(&namespaces);
                io.disk().arm_mutation_fault(count, crate::disk::MutationFault::Halt);
            }
            // As the server's first start (`shard_zero_start`): shard 0's
            // start-up replay formats the new metadata group (the replay's
            // own format, `created`), and that group then opens from what
            // the replay wrote instead of being formatted again.
            let first_replay =
                namespaces.contains(&METADATA_NAMESPACE).then(|| first_start_replay(&io, config, replica));
            let replay_stopped = matches!(first_replay, Some(None));
            assert!(!replay_stopped || io.disk().is_halted(), "replaying a fresh disk's metadata group works");
            let mut groups = Vec::new();
            for (namespace, shard) in namespaces.iter().zip(&shard_of).filter(|_| !replay_stopped) {
                let config_storage = storage_config(replica, *namespace);
                if *namespace == METADATA_NAMESPACE {
                    let Ok((storage, recovered)) =
                        block_on_ready(GroupStorage::open(&io, Path::new(DATA_DIR), config_storage))
                    else {
                        assert!(io.disk().is_halted(), "the metadata group the replay formatted opens");
                        break;
                    };
                    let replica_config = replica_config(config, replica, *namespace, rng.next_u64());
                    let Some(machine) = fresh_partition(&io, *namespace, config) else { break };
                    let opened =
                        Replica::open(replica_config, machine, recovered).expect("a new group has no checkpoint");
                    // The recovery check of a first start: the replay formatted
                    // the group and handed on the empty catalogue, which is the
                    // state its replica opens with.
                    let replay = first_replay.as_ref().and_then(Option::as_ref).expect("the replay ran to its end");
                    let GroupMachine::Metadata(state) = opened.state_machine() else {
                        unreachable!("the metadata group's machine is the catalogue")
                    };
                    assert!(replay.created, "a first start's replay formats the metadata group");
                    assert_eq!((replay.commit, replay.state.encode()), (opened.commit_min(), state.encode()));
                    assert_eq!(opened.commit_min(), 0, "a new metadata group has committed nothing");
                    groups.push(Group::new(*namespace, *shard, storage, opened));
                    continue;
                }
                let Ok(storage) = block_on_ready(GroupStorage::format(&io, Path::new(DATA_DIR), config_storage)) else {
                    assert!(io.disk().is_halted(), "formatting a fresh disk works");
                    break;
                };
                let replica_config = replica_config(config, replica, *namespace, rng.next_u64());
                let Some(machine) = fresh_partition(&io, *namespace, config) else { break };
                groups.push(Group::new(*namespace, *shard, storage, Replica::new(replica_config, machine)));
            }
            io.disk().disarm_mutation_fault();
            let format_crashed = io.disk().is_halted();
            if format_crashed {
                drop(groups);
                groups = Vec::new();
                io.crash();
            }
            // From here on the disk takes time.
            io.set_latency(Some(LatencyProfile::of(speed)));
            let owners = Arc::new(ReplicaOwnerTable::new(usize::from(config.replica_count), shard_count));
            let drops: Vec<_> = shard_count.shards().map(|_| Arc::new(FrameDrops::new())).collect();
            let node = (!format_crashed).then(|| {
                let config = node_config(config, replica, shard_count);
                ShardNodes::new(&io, &config, groups, placement.clone(), &owners, &drops)
            });
            nodes.push(Process {
                io,
                up: !format_crashed,
                paused_until_ns: None,
                corrupted: false,
                rotted_while_running: false,
                partition_misdirect_armed: None,
                sector_damage: BTreeMap::new(),
                lost_write_files: BTreeMap::new(),
                wipe_on_restart: false,
                wiped: false,
                restart_faults_in_a_row: 0,
                liveness_self_stops: 0,
                liveness_extensions: 0,
                node,
                busy_until_ns: 0,
                flush_poll_at_ns: None,
                crash_armed: None,
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
        // Buggify is this run's alone: on from its seed when asked, else
        // off (a run that panicked may have left it on).
        match config.buggify_ppm {
            0 => shoal_vsr::buggify::disable(),
            fire_ppm => shoal_vsr::buggify::enable(config.seed ^ SEED_STREAM_BUGGIFY, fire_ppm),
        }
        let mut cluster = Cluster {
            config: config.clone(),
            rng,
            choices: NodeChoices::from_seed(config.seed),
            now_ns: 0,
            queue: BTreeMap::new(),
            sequence: 0,
            nodes,
            clients,
            network,
            checkers: (0..group_count).map(|_| Checkers::default()).collect(),
            namespaces,
            shard_of,
            placement,
            shard_count,
            frames_offered: 0,
            frames_delivered: 0,
            metadata_applied: Vec::new(),
            phase: Phase::Safety,
            fault_budget: config.fault_budget,
            faults: BTreeMap::new(),
            checkpoint_rot: std::collections::BTreeSet::new(),
            superblock_rot: std::collections::BTreeSet::new(),
            metadata_replays: 0,
            tamper_next_metadata_replay: false,
            rot_replica,
            trace_hash: config.seed,
            trace: Vec::new(),
            timeline: Vec::new(),
            events_processed: 0,
            view_changes: 0,
            converged: false,
            scrub_passes_needed: BTreeMap::new(),
            availability: Availability::new(group_count),
            availability_failure: None,
            quiet: crate::quiet::Quiet::new(group_count),
            history: Vec::new(),
            reads: reads::Reads::new(config.seed, group_count),
            plot: None,
            plots_started: 0,
            deposed: None,
            deposed_started: 0,
            lost_vote: None,
            lost_votes_started: 0,
        };
        for replica in 0..config.replica_count {
            if cluster.nodes[replica as usize].up {
                cluster.connect(replica);
            } else {
                cluster.on_first_format_crashed(replica);
            }
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

    pub fn run(&mut self) -> RunOutcome {
        while self.step() {}
        self.finish()
    }

    /// Handle the next event. False once the run is over: no event left,
    /// a verdict reached, or the liveness deadline passed.
    fn step(&mut self) -> bool {
        let Some((&(time, sequence), _)) = self.queue.first_key_value() else { return false };
        let event = self.queue.remove(&(time, sequence)).expect("present");
        assert!(time >= self.now_ns, "virtual time never goes back");
        self.now_ns = time;
        self.events_processed += 1;
        assert!(self.events_processed < EVENTS_MAX, "event bound exceeded");
        self.handle(event);
        self.check_open_files();
        if self.violation().is_some() || self.converged || self.availability_failure.is_some() {
            return false;
        }
        match self.phase {
            Phase::Liveness { deadline_ns } => self.now_ns <= deadline_ns,
            Phase::Safety => true,
        }
    }

    /// The open-file checker: a process whose open was refused by its limit
    /// (`files_open_max` of its groups) holds files it should have closed.
    fn check_open_files(&mut self) {
        let refused = self.nodes.iter().enumerate().find_map(|(replica, node)| {
            let disk = node.io.disk();
            disk.open_files_refused().map(|path| (replica, path.display().to_string(), disk.open_files().1))
        });
        if let Some((replica, path, peak)) = refused {
            let limit = files_open_max(self.namespaces.len());
            let detail = format!(
                "replica {replica} opened {path} past its open-file limit of {limit} ({} groups; peak {peak} open)",
                self.namespaces.len()
            );
            self.fail(Checker::OpenFiles, detail);
        }
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
                self.plot_tick();
                self.deposed_tick();
                self.lost_vote_tick();
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
                self.sample_quiet();
                self.schedule(TICK_NS, Event::NetworkTick);
            }
            Event::Deliver { from, to, message } => self.deliver(from, to, *message),
            Event::Restart(replica) => self.restart(replica),
            Event::Unpause(replica) => {
                self.nodes[replica as usize].paused_until_ns = None;
                self.record(Some(replica), "unpause", 0, 0, String::new);
            }
            Event::EndTurn(replica, shard) => self.end_turn(replica, shard),
            Event::Drain(replica, shard) => self.on_drain(replica, shard),
            Event::FlushPoll(replica) => self.flush_poll(replica),
            Event::EndSafety => self.end_safety(),
            Event::Scripted { index, attempts } => self.scripted(index, attempts),
        }
    }

    // --- replicas ---------------------------------------------------------------

    fn on_replica_tick(&mut self, replica: u8) {
        if let Some(until) = self.busy_until(replica) {
            // The shard loop ticks once its storage call returns.
            return self.defer_until_idle(until, Event::ReplicaTick(replica));
        }
        self.schedule(TICK_NS, Event::ReplicaTick(replica));
        let index = replica as usize;
        if !self.nodes[index].up || self.nodes[index].paused_until_ns.is_some() {
            return;
        }
        if self.roll(self.config.faults.replica_crash_ppm, "replica_crash") {
            // Half of the crashes land while the node waits on its disk
            // (a write or fsync in flight), the rest at once.
            let draw = self.rng.next_u64();
            if self.nodes[index].io.latency().is_none() || draw.is_multiple_of(2) {
                return self.crash(replica, "injected");
            }
            let waits = 1 + (draw >> 1) % CRASH_IN_FLIGHT_WAITS_MAX;
            self.nodes[index].crash_armed = Some(waits as u32);
            self.record(Some(replica), "crash_armed", waits, 0, String::new);
        }
        if self.shard_count.get() > 1 && self.roll(self.config.faults.shard_panic_ppm, "shard_panic") {
            // A shard panic shuts the whole process down cleanly: its
            // inboxes close, and what waited in them is counted dropped.
            let shard = self.rng.next_u64() % u64::from(self.shard_count.get());
            return self.crash(replica, &format!("shard {shard} panic"));
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
        // Every shard's loop ticks its own node (one after another on the
        // process's clock).
        for shard in self.shard_count.shards() {
            self.with_node(replica, shard, |node, world, armed| {
                let io = node.io().clone();
                block_on_io(&io, node.tick(now_ns, world), armed)
            });
        }
        if let Phase::Liveness { .. } = self.phase
            && replica == 0
            && (now_ns / TICK_NS).is_multiple_of(CONVERGENCE_CHECK_TICKS)
        {
            self.check_convergence();
        }
    }

    /// The first group's replica on `replica`, while it runs (tests inspect
    /// it after a run).
    pub fn replica(&self, replica: u8) -> Option<&GroupReplica> {
        self.group_replica(replica, 0)
    }

    pub fn group_replica(&self, replica: u8, group: usize) -> Option<&GroupReplica> {
        self.nodes[replica as usize].node.as_ref().and_then(|shards| shards.try_group(group)).map(Group::replica)
    }

    pub fn group_count(&self) -> usize {
        self.namespaces.len()
    }

    /// Metadata changes admin clients were told were applied.
    pub fn metadata_applied(&self) -> usize {
        self.metadata_applied.len()
    }

    /// Start-up replays of the metadata group that ran to their end at a
    /// restart, as the server's shard 0 runs one before its groups open (a
    /// first start's, which formats the group, is not counted).
    pub fn metadata_replays(&self) -> u64 {
        self.metadata_replays
    }

    /// Test hook: the next start-up replay hands on a catalogue with one
    /// stream the metadata group never committed.
    #[doc(hidden)]
    pub fn tamper_next_metadata_replay(&mut self) {
        self.tamper_next_metadata_replay = true;
    }

    /// The shard of every process that owns client `index`'s connection
    /// (the server's rule, `connection_shard`).
    fn client_shard(&self, index: u32) -> ShardId {
        let client = Peer::Client(CLIENT_ID_BASE + u128::from(index));
        shoal_shard::owner_table::connection_shard(0, client, self.shard_count)
    }

    // --- network ----------------------------------------------------------------

    fn node_id(endpoint: Endpoint, replica_count: u8) -> NodeId {
        match endpoint {
            Endpoint::Replica(r) => NodeId::from(r),
            Endpoint::Client(c) => u32::from(replica_count) + c,
        }
    }

    fn send(&mut self, from: Endpoint, to: Endpoint, message: Message) {
        let replicas = self.config.replica_count;
        let frame_bytes = HEADER_SIZE_BYTES + message.body.len();
        // The server's connection decoder allows this much of this command
        // on the connection between these two (between replicas, a view
        // change frame may pass a small message size) and closes a
        // connection that announces more: nothing bigger ever arrives.
        let frame_limit_bytes = match (from, to) {
            (Endpoint::Replica(_), Endpoint::Replica(_)) => {
                frame_size_max_bytes(message.header.command, MESSAGE_SIZE_MAX_BYTES)
            }
            _ => MESSAGE_SIZE_MAX_BYTES,
        };
        if frame_bytes > frame_limit_bytes as usize {
            let command = message.header.command;
            return self.fail(
                Checker::Routing,
                format!(
                    "{from:?} sent {to:?} a {command:?} frame of {frame_bytes} bytes, over the frame limit of \
                     that connection ({frame_limit_bytes} bytes; message_size_max {MESSAGE_SIZE_MAX_BYTES}): \
                     every peer refuses it"
                ),
            );
        }
        if self.plot_on_send(from, to, &message) {
            return self.record(None, "drop", message.header.command as u64, message.header.op, || {
                format!("{from:?}->{to:?} plot")
            });
        }
        // A replica sends on its own clock: inside a call, after the storage
        // it waited on (`with_node`).
        let sent_ns = match from {
            Endpoint::Replica(replica) => self.nodes[replica as usize].io.now_ns().max(self.now_ns),
            Endpoint::Client(_) => self.now_ns,
        };
        let before = self.network.counters.clone();
        let fate = self.network.submit(sent_ns, Self::node_id(from, replicas), Self::node_id(to, replicas));
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
                    times.push(sent_ns + late);
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
        // The group in the detail only (not hashed): traces of a run with
        // several groups are read one group at a time.
        let group = self.namespaces.iter().position(|&ns| ns == message.header.namespace);
        let groups = self.namespaces.len();
        self.record(None, "deliver", message.header.command as u64, message.header.op, || {
            let label = group.filter(|_| groups > 1).map(|g| format!(" group {g}")).unwrap_or_default();
            format!(
                "{from:?}->{to:?} {:?} view {} op {}{label}",
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
                // It reaches the connection of one of the process's shards,
                // which hops it into the inbox of its group's shard; there it
                // waits while the process awaits its disk (`inboxes`).
                self.hop_in(replica, from, message);
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

    /// Half the time, a frame opens a turn on a shard that has none: its
    /// prepares (and those of the frames after it) are flushed together
    /// when the turn ends, a storage latency later.
    fn maybe_begin_turn(&mut self, replica: u8, shard: ShardId) {
        let draw = self.rng.next_u64();
        let Some(node) = self.nodes[replica as usize].node.as_mut().and_then(|s| s.node_mut(shard)) else { return };
        if node.turn_open() || draw.is_multiple_of(2) {
            return;
        }
        node.begin_turn();
        self.schedule(1 + (draw >> 1) % STORAGE_FLUSH_LATENCY_MAX_NS, Event::EndTurn(replica, shard));
    }

    /// Open a turn on `replica`'s shard `shard` (unless one is open) that
    /// ends a batching window after `at_ns`, when the frames waiting for it
    /// in its inbox have been taken.
    fn open_turn_at(&mut self, replica: u8, shard: ShardId, at_ns: u64) {
        let draw = self.rng.next_u64();
        let Some(node) = self.nodes[replica as usize].node.as_mut().and_then(|s| s.node_mut(shard)) else { return };
        if node.turn_open() {
            return;
        }
        node.begin_turn();
        // After the frames that wait for it (`Event::Drain` at `at_ns + 1`).
        let window_ns = 2 + draw % STORAGE_FLUSH_LATENCY_MAX_NS;
        self.schedule(at_ns - self.now_ns + window_ns, Event::EndTurn(replica, shard));
    }

    fn end_turn(&mut self, replica: u8, shard: ShardId) {
        let index = replica as usize;
        if let Some(until) = self.busy_until(replica) {
            return self.defer_until_idle(until, Event::EndTurn(replica, shard));
        }
        if let Some(until) = self.nodes[index].paused_until_ns {
            // A paused process flushes once it runs again.
            return self.schedule(until.saturating_sub(self.now_ns) + 1, Event::EndTurn(replica, shard));
        }
        // A turn of an earlier life died with it; this life's turn (if any)
        // ends now, which is only earlier than its own event.
        self.with_node(replica, shard, |node, world, armed| {
            if !node.turn_open() {
                return Driven::Done(Ok(()));
            }
            let io = node.io().clone();
            block_on_io(&io, node.end_turn(world), armed)
        });
    }

    /// Complete the flushes of `replica`'s node whose fsync ended (the
    /// server's loop does it when the fsync's completion wakes it).
    fn flush_poll(&mut self, replica: u8) {
        let index = replica as usize;
        self.nodes[index].flush_poll_at_ns = None;
        if let Some(until) = self.busy_until(replica) {
            return self.defer_until_idle(until, Event::FlushPoll(replica));
        }
        if let Some(until) = self.nodes[index].paused_until_ns {
            // A paused process completes once it runs again.
            return self.schedule(until.saturating_sub(self.now_ns) + 1, Event::FlushPoll(replica));
        }
        // Every shard whose node has a flush running completes what ended.
        for shard in self.shard_count.shards() {
            let flushing = self.nodes[index]
                .node
                .as_ref()
                .and_then(|s| s.node(shard))
                .is_some_and(|node| node.flushes_in_flight());
            if flushing {
                self.with_node(replica, shard, |node, world, armed| {
                    let io = node.io().clone();
                    block_on_io(&io, node.complete_flushes(world), armed)
                });
            }
        }
    }

    // --- clients ----------------------------------------------------------------

    // --- phases -----------------------------------------------------------------

    fn end_safety(&mut self) {
        if let Some(wait_ns) = self
            .plot_holds_safety_ns()
            .or_else(|| self.deposed_holds_safety_ns())
            .or_else(|| self.lost_vote_holds_safety_ns())
        {
            // A targeted schedule under way keeps its faults until it ends.
            return self.schedule(wait_ns, Event::EndSafety);
        }
        // A replica whose storage opens ran on its disk's clock past the
        // heal serves only from then (`busy_until`): the bound runs from
        // when every replica serves (swarm seed 62015: a wiped replica
        // restarted 130 ms before the heal and opened for 1.36 s, which
        // left it 0.77 s to transfer state for nine groups).
        let serving_from_ns =
            (0..self.config.replica_count).filter_map(|replica| self.busy_until(replica)).fold(self.now_ns, u64::max);
        self.phase = Phase::Liveness { deadline_ns: serving_from_ns + self.config.liveness_time_ns };
        self.network.heal();
        // Buggify's rare paths are legal but not quiet (a primary refusing
        // one request in four as busy kept a client backing off past the
        // liveness bound: swarm-buggify seed 3589, session 35): off with
        // the faults.
        shoal_vsr::buggify::disable();
        self.record(None, "heal", 0, 0, || "liveness phase: faults off".into());
        self.scrub_passes_needed_at_heal();
        for replica in 0..self.config.replica_count {
            let index = replica as usize;
            // No more crashes, and disks keep their speed but lose their tail.
            self.nodes[index].crash_armed = None;
            let io = &self.nodes[index].io;
            io.disk().faults.read_eio_ppm = 0;
            // A fault armed and not landed yet would land however late
            // (`SimDisk::disarm_faults`).
            io.disk().disarm_faults();
            io.set_latency(io.latency().map(LatencyProfile::without_tail));
            if self.nodes[index].paused_until_ns.is_some() {
                self.nodes[index].paused_until_ns = None;
            }
            if !self.nodes[index].up {
                // Restart events for it are already queued; pull them in.
                self.schedule(TICK_NS, Event::Restart(replica));
            }
        }
    }

    fn finish(&mut self) -> RunOutcome {
        self.check_frame_accounting();
        if !self.converged {
            self.check_no_committed_offset_held_nowhere();
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
        for drops in self.nodes.iter().flat_map(|node| &node.drops) {
            for ((variant, reason), count) in drops.snapshot() {
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
        // The run is over: no later run on this thread inherits its buggify.
        shoal_vsr::buggify::disable();
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
}

/// Every group, the metadata group too, checkpoints every
/// `config.checkpoint_interval_ops` in the simulator's small journal: often
/// enough that a restart's replay starts from a checkpoint and settles an
/// interrupted drain.
fn replica_config(config: &RunConfig, replica: u8, namespace: u64, seed: u64) -> ReplicaConfig {
    ReplicaConfig {
        cluster: CLUSTER_ID,
        namespace,
        replica,
        replica_count: config.replica_count,
        journal_slot_count: JOURNAL_SLOT_COUNT,
        checkpoint_interval_ops: config.checkpoint_interval_ops,
        seed,
        client_sessions_max: config.client_sessions_max,
        message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES,
        pipeline_prepares_max: config.pipeline_prepares_max,
        checkpoint_chunks_per_answer_max: config.checkpoint_chunks_per_answer_max,
    }
}

/// Run one seed to its verdict.
pub fn run(config: &RunConfig) -> RunOutcome {
    Cluster::new(config).run()
}
