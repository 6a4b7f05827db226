//! The shard world: one replica process of N shards, simulated from one seed.
//!
//! Owns a seeded run of the production shard code on the `SimIo` executor:
//! N shard tasks spawned through `shoal_shard::TaskSet`, each with a
//! `LocalInbox`; the real routers and `pump::dispatch` / `pump::deliver`; a
//! `ReplicaOwnerTable` stamped and cleared as seeded connections to peer
//! replicas come and go; client connections owned by one shard whose requests
//! for other shards' namespaces are forwarded and whose replies come back; the
//! metadata handoff (`shoal_shard::handoff`) at start-up; and a seeded workload
//! of consensus frames (partition groups, the metadata group, VSR-reserved
//! control with arbitrary or unset namespaces) and client requests.
//!
//! Faults (`ShardFaults`, ppm per opportunity): full inboxes, drops on
//! delivery, slow shards, shard panics, partial spawn failure, a crash of
//! shard 0 during the handoff, connection churn.
//!
//! Checkers, run after every step of a shard and every driver tick:
//! - accounting: frames sent = delivered to the owning shard + counted in
//!   `frame_drops_total` + still queued in an inbox (exactly; at the end no
//!   frame is queued);
//! - no VSR-reserved frame is dropped for lack of consensus (namespace miss,
//!   misroute, unknown shard); only full inbox, closed, or an injected drop;
//! - owner-table slots equal the live connections at every step;
//! - no shard waits on the handoff after shutdown, and the run ends in a bound;
//! - the trace hash is a function of the config (checked by running twice).
//!
//! Must not touch the wall clock, threads or OS entropy. Must not edit or
//! depend on the VSR cluster driver (`cluster.rs`): this world is separate.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use shoal_shard::handoff::{self, HandoffError, OneShotReceiver, OneShotSender};
use shoal_shard::lifecycle::{ShardExit, ShutdownFlag, TaskSet, Watchdog};
use shoal_shard::router::{partition_binding, route, route_partition};
use shoal_shard::{
    DropReason, FrameDrops, FrameVariant, LocalInbox, MetadataRequest, MetadataState, Namespace, OwnerError,
    ReplicaOwnerTable, ShardCount, ShardFrame, ShardId, ShardSender, TrySendError, pump,
};
use shoal_vsr::io::Io;
use shoal_vsr::{Command, Header, Operation};

use crate::io::{SimIo, block_on_ready};
use crate::run::{Checker, RunConfig, Verdict};

/// One iteration of a shard's loop (and of the driver's checks).
pub const SHARD_TICK_NS: u64 = 1_000_000;
/// How long an injected slow shard stalls: longer than the watchdog bound.
pub const SLOW_SHARD_SLEEP_NS: u64 = 48 * SHARD_TICK_NS;
/// The watchdog reports a shard silent for this many driver ticks.
pub const WATCHDOG_STALL_TICKS: u64 = 32;
/// Frames a shard reads from its inbox per tick.
pub const DRAIN_BATCH_MAX: usize = 32;
/// Frames a shard takes in from its connections per tick, at most.
pub const INGEST_PER_TICK_MAX: u64 = 6;
/// The workload phase ends here even if frames remain (virtual time).
pub const WORKLOAD_TIME_MAX_NS: u64 = 4_000_000_000;
/// The survivors' total grace after shutdown (one deadline for all).
pub const SHUTDOWN_GRACE_NS: u64 = 200 * SHARD_TICK_NS;
/// The whole run must be over by then, or it is a liveness failure.
pub const RUN_TIME_BOUND_NS: u64 = WORKLOAD_TIME_MAX_NS + 2 * SHUTDOWN_GRACE_NS;
/// A shard in the handoff must return this soon after shutdown is seen.
pub const HANDOFF_SHUTDOWN_BOUND_NS: u64 = 3 * handoff::HANDOFF_POLL_INTERVAL_NS;
pub const SHARDS_MAX: u16 = 64;
pub const FRAMES_TOTAL_MAX: u32 = 1_000_000;
pub const METADATA_SNAPSHOT_PATH: &str = "/data/metadata.snapshot";
const CLUSTER_ID: u128 = 0x5348_4152_4400_0001;
const PPM_MAX: u64 = 1_000_000;
/// Panic messages of injected faults carry this, so a real assertion in the
/// code under test is told apart from a planted panic.
const INJECTED: &str = "injected fault";
const SEED_STREAM_WORLD: u64 = 0x7368_6172_6473_0000;
const SEED_STREAM_SWARM: u64 = 0x7377_6172_6d00_0000;

/// Shard fault probabilities, in parts per million per opportunity.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ShardFaults {
    /// Per inter-shard send: the target inbox rejects it as full.
    pub inbox_full_ppm: u32,
    /// Per frame taken from an inbox: it is lost (and counted `injected`).
    pub delivery_drop_ppm: u32,
    /// Per shard tick: the shard stalls for `SLOW_SHARD_SLEEP_NS`.
    pub slow_shard_ppm: u32,
    /// Per shard tick: the shard panics.
    pub panic_ppm: u32,
    /// Per shard spawn: the spawn fails (and the process shuts down).
    pub spawn_failure_ppm: u32,
    /// Once per run: shard 0 panics after replaying metadata, before the handoff.
    pub handoff_crash_ppm: u32,
    /// Per shard tick: connect to or disconnect from a peer replica.
    pub connection_churn_ppm: u32,
    /// Per churn of a peer connected on another shard: the newer connection
    /// on this shard takes the owner slot over; the older one, left on its
    /// shard, disconnects later and must not clear the newer claim.
    #[serde(default)]
    pub connection_takeover_ppm: u32,
    /// Per driver tick while the metadata handoff runs: SIGINT/SIGTERM
    /// arrives (the shutdown flag is raised from outside every shard).
    #[serde(default)]
    pub handoff_signal_ppm: u32,
}

impl ShardFaults {
    pub fn none() -> ShardFaults {
        ShardFaults::default()
    }
}

/// Everything that decides one shard-world run. Same config ⇒ same trace hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardWorldConfig {
    pub seed: u64,
    pub shard_count: u16,
    /// Replicas in the cluster, this one (replica 0) included; its peers are
    /// 1..replica_count and each is connected through at most one shard.
    pub replica_count: u8,
    pub client_connections: u32,
    /// Frames the workload injects (consensus frames and client requests).
    pub frames_total: u32,
    pub streams: u32,
    pub topics_per_stream: u32,
    pub partitions_per_topic: u32,
    pub inbox_capacity: usize,
    pub faults: ShardFaults,
    /// THE HISTORICAL BUG, planted on purpose: route every consensus frame by
    /// the hash of its namespace, VSR-reserved control with an unset or
    /// metadata namespace included. Such frames land on shards with no
    /// consensus for them and are dropped. Off by default; the routing checker
    /// must fail when it is on.
    pub route_reserved_by_namespace_hash: bool,
}

impl ShardWorldConfig {
    /// A fault-free world of `shard_count` shards.
    pub fn new(seed: u64, shard_count: u16) -> ShardWorldConfig {
        ShardWorldConfig {
            seed,
            shard_count,
            replica_count: 3,
            client_connections: 4,
            frames_total: 600,
            streams: 3,
            topics_per_stream: 2,
            partitions_per_topic: 4,
            inbox_capacity: 64,
            faults: ShardFaults::none(),
            route_reserved_by_namespace_hash: false,
        }
    }

    /// Swarm testing: each fault kind is on or off, and how often, by the seed.
    pub fn swarm(seed: u64, shard_count: u16) -> ShardWorldConfig {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SEED_STREAM_SWARM);
        let mut pick = |on_ppm: u64, max_ppm: u64| -> u32 {
            if rng.next_u64() % PPM_MAX < on_ppm { (1 + rng.next_u64() % max_ppm) as u32 } else { 0 }
        };
        let faults = ShardFaults {
            inbox_full_ppm: pick(500_000, 100_000),
            delivery_drop_ppm: pick(500_000, 50_000),
            slow_shard_ppm: pick(400_000, 20_000),
            panic_ppm: pick(250_000, 3_000),
            spawn_failure_ppm: pick(150_000, 300_000),
            handoff_crash_ppm: pick(150_000, 1_000_000),
            connection_churn_ppm: pick(700_000, 100_000),
            connection_takeover_ppm: pick(500_000, 1_000_000),
            handoff_signal_ppm: pick(200_000, 200_000),
        };
        let mut config = ShardWorldConfig::new(seed, shard_count);
        config.faults = faults;
        config.replica_count = [1u8, 3, 5][(seed % 3) as usize];
        config
    }

    /// The shard world of a cluster run: its seed, shard count, replica
    /// count and `shard_*_ppm` faults. `FaultMix` has no slow-shard, spawn or
    /// handoff fields; they scale from the nearest field it has.
    pub fn from_run_config(run: &RunConfig) -> ShardWorldConfig {
        let mut config = ShardWorldConfig::new(run.seed, run.shards_per_replica.clamp(1, SHARDS_MAX));
        config.replica_count = run.replica_count.max(1);
        config.client_connections = run.client_count.clamp(1, 64);
        let mix = &run.faults;
        config.faults = ShardFaults {
            inbox_full_ppm: mix.shard_inbox_full_ppm,
            delivery_drop_ppm: mix.shard_delivery_drop_ppm,
            slow_shard_ppm: mix.shard_inbox_full_ppm / 4,
            panic_ppm: mix.shard_panic_ppm,
            spawn_failure_ppm: mix.shard_panic_ppm.saturating_mul(10).min(1_000_000),
            handoff_crash_ppm: mix.shard_panic_ppm.saturating_mul(10).min(1_000_000),
            connection_churn_ppm: mix.network_partition_ppm.max(20_000),
            connection_takeover_ppm: mix.network_partition_ppm.saturating_mul(50).min(1_000_000),
            handoff_signal_ppm: mix.shard_panic_ppm.saturating_mul(20).min(1_000_000),
        };
        config
    }

    fn validate(&self) {
        assert!((1..=SHARDS_MAX).contains(&self.shard_count), "shard count {}", self.shard_count);
        assert!(self.replica_count >= 1 && self.replica_count <= 32);
        assert!(self.frames_total <= FRAMES_TOTAL_MAX);
        assert!(self.streams >= 1 && self.topics_per_stream >= 1 && self.partitions_per_topic >= 1);
        assert!(self.client_connections >= 1);
    }
}

/// What a run did, for reports and for tests to assert on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardWorldCounters {
    pub frames_sent: u64,
    pub frames_delivered: u64,
    pub frame_drops_total: u64,
    /// `frame_drops_total` by reason name.
    pub drops_by_reason: BTreeMap<String, u64>,
    pub reserved_frames_sent: u64,
    pub reserved_frames_delivered: u64,
    pub client_requests: u64,
    pub client_replies_returned: u64,
    pub connects: u64,
    pub disconnects: u64,
    pub duplicate_connects_refused: u64,
    pub connection_takeovers: u64,
    /// Replaced connections that disconnected later without touching the slot.
    pub stale_disconnects: u64,
    pub handoff_signals: u64,
    pub slow_shard_stalls: u64,
    pub watchdog_reports: u64,
    pub shard_panics: u64,
    pub spawn_failures: u64,
    pub handoff_crashes: u64,
    pub handoffs_completed: u64,
    /// Shards that left the handoff because of shutdown or a dead shard 0.
    pub handoffs_abandoned: u64,
    pub stragglers: u64,
}

/// Which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ViolationKind {
    ReservedFrameDropped,
    Accounting,
    OwnerTable,
    Misdelivered,
    SnapshotMismatch,
    HandoffStranded,
    RunUnbounded,
    ShardAssertion,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardViolation {
    pub kind: ViolationKind,
    pub message: String,
    pub at_ns: u64,
}

impl ShardViolation {
    pub fn verdict(&self) -> Verdict {
        let checker = match self.kind {
            ViolationKind::HandoffStranded | ViolationKind::RunUnbounded => {
                return Verdict::LivenessViolation { message: self.message.clone() };
            }
            ViolationKind::ShardAssertion => Checker::Assertion,
            ViolationKind::ReservedFrameDropped
            | ViolationKind::Accounting
            | ViolationKind::OwnerTable
            | ViolationKind::Misdelivered
            | ViolationKind::SnapshotMismatch => Checker::Routing,
        };
        Verdict::SafetyViolation { checker, message: self.message.clone(), at_ns: self.at_ns }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardWorldOutcome {
    pub config: ShardWorldConfig,
    /// `Pass`, or the first violation as the cluster runs report it.
    pub verdict: Verdict,
    /// The first violation of each kind seen, in order.
    pub violations: Vec<ShardViolation>,
    pub counters: ShardWorldCounters,
    pub trace_hash: u64,
    pub virtual_time_ns: u64,
}

impl ShardWorldOutcome {
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }
}

pub const VIOLATIONS_KEPT_MAX: usize = 64;

/// The shared state of one run. Single-threaded: `Rc` and `RefCell`.
struct World {
    config: ShardWorldConfig,
    shard_count: ShardCount,
    io: SimIo,
    rng: RefCell<ChaCha8Rng>,
    inboxes: Vec<Rc<LocalInbox>>,
    senders: Vec<FaultySender>,
    drops: Vec<Arc<FrameDrops>>,
    owners: ReplicaOwnerTable,
    /// The model the owner table must match: peer replica → owning shard.
    connections: RefCell<BTreeMap<u8, ShardId>>,
    /// Connections replaced by a newer one and not yet closed: (peer, shard).
    replaced: RefCell<std::collections::BTreeSet<(u8, ShardId)>>,
    /// Client connection id → the shard that holds it.
    clients: Vec<ShardId>,
    namespaces: Vec<Namespace>,
    snapshot: MetadataState,
    shutdown: ShutdownFlag,
    shutdown_seen_at_ns: Cell<Option<u64>>,
    frames_remaining: Cell<u32>,
    supervisor_done: Cell<bool>,
    finished_at_ns: Cell<u64>,
    ledger: RefCell<Ledger>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").field("seed", &self.config.seed).finish()
    }
}

#[derive(Debug, Default)]
struct Ledger {
    counters: ShardWorldCounters,
    violations: Vec<ShardViolation>,
    frame_next: u64,
    hash: u64,
}

impl Ledger {
    /// FNV-1a over 64-bit words: every event feeds the trace hash.
    fn event(&mut self, words: &[u64]) {
        for word in words {
            self.hash ^= *word;
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn chance(rng: &RefCell<ChaCha8Rng>, ppm: u32) -> bool {
    ppm > 0 && rng.borrow_mut().next_u64() % PPM_MAX < u64::from(ppm)
}

fn below(rng: &RefCell<ChaCha8Rng>, n: u64) -> u64 {
    debug_assert!(n > 0);
    rng.borrow_mut().next_u64() % n
}

/// The shard channel as the simulator sees it: a `LocalInbox` that a seeded
/// fault can make reject a send as full.
#[derive(Debug, Clone)]
struct FaultySender {
    inbox: Rc<LocalInbox>,
    rng: Rc<RefCell<ChaCha8Rng>>,
    full_ppm: u32,
}

impl ShardSender for FaultySender {
    fn try_send(&self, frame: ShardFrame) -> Result<(), TrySendError> {
        let inject = chance(&self.rng, self.full_ppm);
        if inject {
            self.inbox.set_full(true);
        }
        let result = self.inbox.try_send(frame);
        if inject {
            self.inbox.set_full(false);
        }
        result
    }
}

// Event codes for the trace hash.
const EVENT_SEND: u64 = 1;
const EVENT_DELIVER: u64 = 2;
const EVENT_DROP: u64 = 3;
const EVENT_CONNECT: u64 = 4;
const EVENT_DISCONNECT: u64 = 5;
const EVENT_PANIC: u64 = 6;
const EVENT_HANDOFF: u64 = 7;
const EVENT_SHUTDOWN: u64 = 8;
const EVENT_STALL: u64 = 9;
const EVENT_SPAWN_FAILED: u64 = 10;

/// The frame id rides in `Header::context`, so accounting can follow it.
fn frame_id(frame: &ShardFrame) -> u64 {
    frame.header().map_or(0, |h| h.context)
}

/// A consensus frame that must go to shard 0: not bound to a partition group.
fn is_reserved_control(frame: &ShardFrame) -> bool {
    match frame {
        ShardFrame::Consensus { header, .. } => partition_binding(header).is_none(),
        _ => false,
    }
}

/// A drop that means "no consensus for this frame here": the wedge.
fn is_consensus_miss(reason: DropReason) -> bool {
    matches!(reason, DropReason::NamespaceMiss | DropReason::ConsensusMisroute | DropReason::UnknownShard)
}

impl World {
    fn now_ns(&self) -> u64 {
        self.io.now_ns()
    }

    fn violation(&self, kind: ViolationKind, message: String) {
        let mut ledger = self.ledger.borrow_mut();
        tracing::debug!(?kind, %message, "shard world violation");
        // Keep the first violation of each kind: a broken invariant stays
        // broken, and repeating it every tick says nothing new.
        let seen = ledger.violations.iter().any(|v| v.kind == kind);
        if !seen && ledger.violations.len() < VIOLATIONS_KEPT_MAX {
            let at_ns = self.now_ns();
            ledger.violations.push(ShardViolation { kind, message, at_ns });
        }
    }

    fn drops_total(&self) -> u64 {
        self.drops.iter().map(|d| d.total()).sum()
    }

    fn queued(&self) -> u64 {
        self.inboxes.iter().map(|i| i.len() as u64).sum()
    }

    /// sent = delivered + counted drops + still queued, exactly.
    fn check_accounting(&self) {
        let (sent, delivered) = {
            let ledger = self.ledger.borrow();
            (ledger.counters.frames_sent, ledger.counters.frames_delivered)
        };
        let drops = self.drops_total();
        let queued = self.queued();
        if sent != delivered + drops + queued {
            self.violation(
                ViolationKind::Accounting,
                format!(
                    "frames sent {sent} != delivered {delivered} + frame_drops_total {drops} + queued {queued}: a frame vanished without being counted"
                ),
            );
        }
    }

    fn check_owner_table(&self) {
        let snapshot = self.owners.snapshot();
        let connections = self.connections.borrow();
        for (replica, slot) in snapshot.iter().enumerate() {
            let live = connections.get(&(replica as u8)).copied();
            if *slot != live {
                let message =
                    format!("owner table slot of replica {replica} is {slot:?} but the live connection is on {live:?}");
                drop(connections);
                self.violation(ViolationKind::OwnerTable, message);
                return;
            }
        }
    }

    fn new_frame_id(&self) -> u64 {
        let mut ledger = self.ledger.borrow_mut();
        ledger.frame_next += 1;
        ledger.frame_next
    }

    /// Route `frame` from shard `from` and hand it to the target inbox.
    fn send(&self, from: ShardId, frame: ShardFrame) {
        let id = frame_id(&frame);
        let reserved = is_reserved_control(&frame);
        {
            let mut ledger = self.ledger.borrow_mut();
            ledger.counters.frames_sent += 1;
            ledger.counters.reserved_frames_sent += u64::from(reserved);
            let now = self.now_ns();
            ledger.event(&[EVENT_SEND, now, u64::from(from.0), id]);
        }
        let drops = &self.drops[from.index()];
        let result = match (&frame, self.config.route_reserved_by_namespace_hash) {
            (ShardFrame::Consensus { header, .. }, true) => {
                // The planted bug: the namespace hash decides, whatever the frame.
                let shard = route_partition(Namespace(header.namespace), self.shard_count);
                self.senders[shard.index()].try_send(frame).map(|()| shard).map_err(|e| e.reason())
            }
            _ => pump::dispatch(frame, &self.senders, self.shard_count, drops),
        };
        let mut ledger = self.ledger.borrow_mut();
        match result {
            Ok(shard) => ledger.event(&[EVENT_SEND, u64::from(shard.0)]),
            Err(reason) => ledger.event(&[EVENT_DROP, id, reason.index() as u64]),
        }
    }

    /// Shard `shard` takes `frame` from its inbox.
    fn receive(&self, shard: ShardId, frame: ShardFrame) {
        let id = frame_id(&frame);
        let variant = frame.variant();
        let reserved = is_reserved_control(&frame);
        let drops = &self.drops[shard.index()];
        let delivered = if chance(&self.rng, self.config.faults.delivery_drop_ppm) {
            drops.bump(variant, DropReason::Injected);
            Err(DropReason::Injected)
        } else if self.config.route_reserved_by_namespace_hash {
            // What a shard does with a frame for a group it does not run. The
            // pump's `deliver` asserts on a misroute, which the planted bug
            // makes routine; count it the way a release build does.
            match route(&frame, self.shard_count) {
                Ok(owner) if owner == shard => Ok(frame),
                Ok(_) => {
                    let reason = if variant == FrameVariant::Consensus {
                        DropReason::NamespaceMiss
                    } else {
                        DropReason::ConsensusMisroute
                    };
                    drops.bump(variant, reason);
                    Err(reason)
                }
                Err(_) => {
                    drops.bump(variant, DropReason::ForwardFailed);
                    Err(DropReason::ForwardFailed)
                }
            }
        } else {
            match pump::deliver(frame, shard, self.shard_count, drops) {
                pump::Delivery::Accepted(frame) => Ok(frame),
                pump::Delivery::Dropped(reason) => Err(reason),
            }
        };
        let frame = match delivered {
            Ok(frame) => frame,
            Err(reason) => {
                self.ledger.borrow_mut().event(&[EVENT_DROP, id, u64::from(shard.0), reason.index() as u64]);
                if reserved && is_consensus_miss(reason) {
                    self.violation(
                        ViolationKind::ReservedFrameDropped,
                        format!(
                            "VSR-reserved frame {id} dropped on shard {} for lack of consensus ({}); VSR retransmits it the same way and the cluster wedges",
                            shard.0,
                            reason.name()
                        ),
                    );
                }
                return;
            }
        };
        // Postcondition of routing: the frame reached the shard that owns it.
        let owner = route(&frame, self.shard_count);
        if owner != Ok(shard) {
            self.violation(
                ViolationKind::Misdelivered,
                format!("frame {id} accepted by shard {} but it belongs to {owner:?}", shard.0),
            );
        }
        {
            let mut ledger = self.ledger.borrow_mut();
            ledger.counters.frames_delivered += 1;
            ledger.counters.reserved_frames_delivered += u64::from(reserved);
            ledger.event(&[EVENT_DELIVER, id, u64::from(shard.0)]);
        }
        match frame {
            ShardFrame::ClientForward { connection_id, origin_shard, header, .. } => {
                let mut reply = header;
                reply.command = Command::Reply;
                reply.context = self.new_frame_id();
                self.send(
                    shard,
                    ShardFrame::ClientReply { connection_id, origin_shard, header: reply, body: Vec::new() },
                );
            }
            ShardFrame::ClientReply { connection_id, .. } => {
                let holder = self.clients.get(connection_id as usize).copied();
                if holder != Some(shard) {
                    self.violation(
                        ViolationKind::Misdelivered,
                        format!(
                            "reply {id} for connection {connection_id} reached shard {} but the connection is on {holder:?}",
                            shard.0
                        ),
                    );
                }
                self.ledger.borrow_mut().counters.client_replies_returned += 1;
            }
            ShardFrame::Consensus { .. } | ShardFrame::Lifecycle(_) => {}
        }
    }

    fn connect(&self, shard: ShardId, replica: u8) {
        let current = self.connections.borrow().get(&replica).copied();
        let result = self.owners.stamp(replica, shard);
        match (current, result) {
            (None, Ok(())) => {
                self.connections.borrow_mut().insert(replica, shard);
                let mut ledger = self.ledger.borrow_mut();
                ledger.counters.connects += 1;
                ledger.event(&[EVENT_CONNECT, u64::from(replica), u64::from(shard.0)]);
            }
            (Some(owner), Ok(())) if owner == shard => {}
            (Some(_), Err(OwnerError::AlreadyOwned { .. })) => {
                // The duplicate connection is closed; the slot keeps its owner.
                self.ledger.borrow_mut().counters.duplicate_connects_refused += 1;
            }
            (current, result) => self.violation(
                ViolationKind::OwnerTable,
                format!("stamp of replica {replica} by shard {} gave {result:?} with live owner {current:?}", shard.0),
            ),
        }
        self.check_owner_table();
    }

    fn disconnect(&self, shard: ShardId, replica: u8) {
        let result = self.owners.clear(replica, shard);
        if let Err(error) = result {
            self.violation(
                ViolationKind::OwnerTable,
                format!("clear of replica {replica} by its owner failed: {error}"),
            );
        }
        self.connections.borrow_mut().remove(&replica);
        let mut ledger = self.ledger.borrow_mut();
        ledger.counters.disconnects += 1;
        ledger.event(&[EVENT_DISCONNECT, u64::from(replica), u64::from(shard.0)]);
        drop(ledger);
        self.check_owner_table();
    }

    fn churn(&self, shard: ShardId) {
        if self.config.replica_count < 2 {
            return;
        }
        let replica = 1 + below(&self.rng, u64::from(self.config.replica_count) - 1) as u8;
        if self.replaced.borrow_mut().remove(&(replica, shard)) {
            return self.disconnect_replaced(shard, replica);
        }
        let owner = self.connections.borrow().get(&replica).copied();
        match owner {
            Some(owner) if owner == shard => self.disconnect(shard, replica),
            Some(owner) if chance(&self.rng, self.config.faults.connection_takeover_ppm) => {
                self.take_over(owner, shard, replica)
            }
            _ => self.connect(shard, replica),
        }
    }

    /// A newer connection of `replica` on `to` replaces the one `from` holds.
    fn take_over(&self, from: ShardId, to: ShardId, replica: u8) {
        match self.owners.take_over(replica, from, to) {
            Ok(()) => {
                self.connections.borrow_mut().insert(replica, to);
                self.replaced.borrow_mut().insert((replica, from));
                let mut ledger = self.ledger.borrow_mut();
                ledger.counters.connection_takeovers += 1;
                ledger.event(&[EVENT_CONNECT, u64::from(replica), u64::from(to.0), u64::from(from.0)]);
            }
            Err(error) => self.violation(
                ViolationKind::OwnerTable,
                format!("take-over of replica {replica} from shard {} by shard {} failed: {error}", from.0, to.0),
            ),
        }
        self.check_owner_table();
    }

    /// The replaced connection closes: its clear must fail and leave the
    /// newer owner in place.
    fn disconnect_replaced(&self, shard: ShardId, replica: u8) {
        let result = self.owners.clear(replica, shard);
        if !matches!(result, Err(OwnerError::NotOwner { .. })) {
            self.violation(
                ViolationKind::OwnerTable,
                format!(
                    "the replaced connection of replica {replica} on shard {} cleared the slot: {result:?}",
                    shard.0
                ),
            );
        }
        let mut ledger = self.ledger.borrow_mut();
        ledger.counters.stale_disconnects += 1;
        ledger.event(&[EVENT_DISCONNECT, u64::from(replica), u64::from(shard.0), 1]);
        drop(ledger);
        self.check_owner_table();
    }

    fn header(&self, command: Command, operation: Operation, namespace: u64, replica: u8) -> Header {
        let mut header = Header::new(command, CLUSTER_ID);
        header.operation = operation;
        header.namespace = namespace;
        header.replica = replica;
        header.context = self.new_frame_id();
        header
    }

    fn pick<T: Copy>(&self, items: &[T]) -> T {
        items[below(&self.rng, items.len() as u64) as usize]
    }

    fn partition(&self) -> u64 {
        self.pick(&self.namespaces).raw()
    }

    /// A frame from peer `replica`, as the shard holding its connection reads it.
    fn peer_frame(&self, replica: u8) -> ShardFrame {
        use Command::*;
        let header = match below(&self.rng, 10) {
            // Partition groups: prepares, acks, commits, view changes, repair.
            0..=3 => {
                let command = self.pick(&[
                    Prepare,
                    PrepareOk,
                    Commit,
                    StartViewChange,
                    DoViewChange,
                    StartView,
                    RequestPrepare,
                    Headers,
                ]);
                let operation = self.pick(&[Operation::SendMessages, Operation::Reserved]);
                self.header(command, operation, self.partition(), replica)
            }
            // The metadata group.
            4..=5 => {
                let command = self.pick(&[Prepare, PrepareOk, Commit, StartView, DoViewChange]);
                let operation = self.pick(&[
                    Operation::Reserved,
                    Operation::Register,
                    Operation::CreateStream,
                    Operation::CreateTopic,
                    Operation::Noop,
                ]);
                self.header(command, operation, Namespace::METADATA.raw(), replica)
            }
            // VSR-reserved control with an arbitrary or unset namespace.
            _ => {
                let command = self.pick(&[
                    Commit,
                    StartViewChange,
                    DoViewChange,
                    StartView,
                    RequestStartView,
                    Ping,
                    Pong,
                    Eviction,
                    Prepare,
                ]);
                let operation = if command == Prepare {
                    Operation::Register
                } else {
                    self.pick(&[Operation::Reserved, Operation::Root, Operation::Noop, Operation::Register])
                };
                let namespace = match below(&self.rng, 4) {
                    0 => Namespace::UNBOUND.raw(),
                    1 => Namespace::METADATA.raw(),
                    2 => self.rng.borrow_mut().next_u64() | (1 << 63),
                    // A partition namespace on a replica-level or register
                    // frame still belongs to shard 0.
                    _ => self.partition(),
                };
                self.header(command, operation, namespace, replica)
            }
        };
        ShardFrame::Consensus { peer: replica, header, body: Vec::new() }
    }

    /// A request on client connection `connection_id`, held by `shard`.
    fn client_frame(&self, shard: ShardId, connection_id: u64) -> ShardFrame {
        let (operation, namespace) = match below(&self.rng, 20) {
            0..=15 => (self.pick(&[Operation::SendMessages, Operation::PollMessages]), self.partition()),
            16..=17 => (Operation::CreateStream, Namespace::METADATA.raw()),
            18 => (Operation::Register, Namespace::UNBOUND.raw()),
            // A malformed request: data operation without a partition. The
            // router refuses it and the drop is counted.
            _ => (Operation::SendMessages, Namespace::UNBOUND.raw()),
        };
        let mut header = self.header(Command::Request, operation, namespace, 0);
        header.client = u128::from(connection_id) + 1;
        self.ledger.borrow_mut().counters.client_requests += 1;
        ShardFrame::ClientForward { connection_id, origin_shard: shard, header, body: Vec::new() }
    }

    /// The peer replicas whose connections `shard` holds.
    fn peers_owned_by(&self, shard: ShardId) -> Vec<u8> {
        self.connections.borrow().iter().filter(|(_, owner)| **owner == shard).map(|(replica, _)| *replica).collect()
    }

    /// Take in up to `INGEST_PER_TICK_MAX` frames from `shard`'s connections.
    fn ingest(&self, shard: ShardId) {
        let peers = self.peers_owned_by(shard);
        let clients: Vec<u64> = (0..self.clients.len() as u64).filter(|c| self.clients[*c as usize] == shard).collect();
        if peers.is_empty() && clients.is_empty() {
            return;
        }
        let count = below(&self.rng, INGEST_PER_TICK_MAX + 1);
        for _ in 0..count {
            let remaining = self.frames_remaining.get();
            if remaining == 0 {
                return;
            }
            self.frames_remaining.set(remaining - 1);
            let from_peer = !peers.is_empty() && (clients.is_empty() || below(&self.rng, 3) < 2);
            let frame = if from_peer {
                self.peer_frame(self.pick(&peers))
            } else {
                self.client_frame(shard, self.pick(&clients))
            };
            self.send(shard, frame);
        }
    }

    fn request_shutdown(&self, why: u64) {
        if !self.shutdown.is_requested() {
            self.ledger.borrow_mut().event(&[EVENT_SHUTDOWN, self.now_ns(), why]);
        }
        self.shutdown.request();
    }

    /// A shard (or its never-started slot) is gone: close its inbox, count
    /// what was queued as `closed`, and drop its connections.
    fn retire(&self, shard: ShardId) {
        let inbox = &self.inboxes[shard.index()];
        inbox.close();
        while let Some(frame) = inbox.try_recv() {
            self.drops[shard.index()].bump(frame.variant(), DropReason::Closed);
            self.ledger.borrow_mut().event(&[
                EVENT_DROP,
                frame_id(&frame),
                u64::from(shard.0),
                DropReason::Closed.index() as u64,
            ]);
        }
        let owned = self.peers_owned_by(shard);
        for replica in owned {
            self.disconnect(shard, replica);
        }
        let replaced: Vec<u8> =
            self.replaced.borrow().iter().filter(|(_, holder)| *holder == shard).map(|(replica, _)| *replica).collect();
        for replica in replaced {
            self.replaced.borrow_mut().remove(&(replica, shard));
            self.disconnect_replaced(shard, replica);
        }
    }
}

/// Runs `World::retire` however the shard task ends, panics included.
struct RetireOnExit {
    world: Rc<World>,
    shard: ShardId,
}

impl Drop for RetireOnExit {
    fn drop(&mut self) {
        self.world.retire(self.shard);
    }
}

enum HandoffRole {
    Zero(Vec<(ShardId, OneShotSender<Vec<u8>>)>),
    Peer(OneShotReceiver<Vec<u8>>),
}

/// Returns true when the handoff completed and the shard may serve.
async fn shard_handoff(world: &Rc<World>, shard: ShardId, role: HandoffRole) -> bool {
    let io = world.io.clone();
    let result = match role {
        HandoffRole::Zero(peers) => {
            let path = Path::new(METADATA_SNAPSHOT_PATH);
            match handoff::open_metadata(&io, path, shard).await {
                Err(error) => Err(error),
                Ok(state) => {
                    if state != world.snapshot {
                        world.violation(
                            ViolationKind::SnapshotMismatch,
                            "shard 0 replayed a catalogue other than the one written".to_string(),
                        );
                    }
                    if chance(&world.rng, world.config.faults.handoff_crash_ppm) {
                        world.ledger.borrow_mut().counters.handoff_crashes += 1;
                        world.ledger.borrow_mut().event(&[EVENT_PANIC, world.now_ns(), 0]);
                        panic!("{INJECTED}: shard 0 crashed during the metadata handoff");
                    }
                    handoff::broadcast_snapshot(&io, &state.encode(), &peers, &world.shutdown).await
                }
            }
        }
        HandoffRole::Peer(receiver) => match handoff::await_snapshot(&io, &receiver, &world.shutdown).await {
            Ok(state) => {
                if state != world.snapshot {
                    world.violation(
                        ViolationKind::SnapshotMismatch,
                        format!("shard {} received a different catalogue", shard.0),
                    );
                }
                Ok(())
            }
            Err(error) => Err(error),
        },
    };
    let now = world.now_ns();
    let code = match &result {
        Ok(()) => 0,
        Err(HandoffError::ShutDown) => 1,
        Err(HandoffError::ShardZeroGone) => 2,
        Err(HandoffError::PeerGone { .. }) => 3,
        Err(_) => 4,
    };
    world.ledger.borrow_mut().event(&[EVENT_HANDOFF, now, u64::from(shard.0), code]);
    if let Some(seen_at) = world.shutdown_seen_at_ns.get()
        && now > seen_at + HANDOFF_SHUTDOWN_BOUND_NS
    {
        world.violation(
            ViolationKind::HandoffStranded,
            format!(
                "shard {} left the handoff {} ns after shutdown was requested (bound {HANDOFF_SHUTDOWN_BOUND_NS} ns)",
                shard.0,
                now - seen_at
            ),
        );
    }
    match result {
        Ok(()) => {
            world.ledger.borrow_mut().counters.handoffs_completed += 1;
            true
        }
        Err(error) => {
            tracing::debug!(shard = shard.0, %error, "handoff abandoned");
            world.ledger.borrow_mut().counters.handoffs_abandoned += 1;
            // Without the catalogue the shard cannot serve: stop the process.
            world.request_shutdown(2);
            false
        }
    }
}

async fn shard_task(
    world: Rc<World>,
    shard: ShardId,
    role: HandoffRole,
    progress: shoal_shard::lifecycle::Progress,
    initial_peers: Vec<u8>,
) {
    let _retire = RetireOnExit { world: world.clone(), shard };
    if !shard_handoff(&world, shard, role).await {
        return;
    }
    for replica in initial_peers {
        world.connect(shard, replica);
    }
    let faults = world.config.faults.clone();
    loop {
        progress.beat();
        if world.shutdown.is_requested() {
            return;
        }
        if chance(&world.rng, faults.panic_ppm) {
            world.ledger.borrow_mut().counters.shard_panics += 1;
            world.ledger.borrow_mut().event(&[EVENT_PANIC, world.now_ns(), u64::from(shard.0)]);
            panic!("{INJECTED}: shard {} panicked", shard.0);
        }
        if chance(&world.rng, faults.slow_shard_ppm) {
            world.ledger.borrow_mut().counters.slow_shard_stalls += 1;
            world.io.sleep(SLOW_SHARD_SLEEP_NS).await;
        }
        if chance(&world.rng, faults.connection_churn_ppm) {
            world.churn(shard);
        }
        world.ingest(shard);
        for _ in 0..DRAIN_BATCH_MAX {
            let Some(frame) = world.inboxes[shard.index()].try_recv() else {
                break;
            };
            world.receive(shard, frame);
        }
        world.check_accounting();
        world.io.sleep(SHARD_TICK_NS).await;
    }
}

/// Spawns the shards, joins them under one deadline, then marks the run done.
async fn supervisor(world: Rc<World>, watchdog_progress: Vec<shoal_shard::lifecycle::Progress>) {
    let io = world.io.clone();
    let mut peers = Vec::new();
    let mut receivers = BTreeMap::new();
    for shard in world.shard_count.shards().skip(1) {
        let (tx, rx) = handoff::oneshot();
        peers.push((shard, tx));
        receivers.insert(shard, rx);
    }
    let mut initial: BTreeMap<ShardId, Vec<u8>> = BTreeMap::new();
    for replica in 1..world.config.replica_count {
        let shard = ShardId(below(&world.rng, u64::from(world.shard_count.get())) as u16);
        initial.entry(shard).or_default().push(replica);
    }
    let mut tasks = TaskSet::new(world.shutdown.clone());
    let mut zero_peers = Some(peers);
    let spawned = tasks.spawn_all(&io, world.shard_count, |shard| {
        if chance(&world.rng, world.config.faults.spawn_failure_ppm) {
            return Err(format!("{INJECTED}: shard {} could not start", shard.0));
        }
        let role = if shard == ShardId::METADATA {
            HandoffRole::Zero(zero_peers.take().expect("shard 0 is spawned once"))
        } else {
            HandoffRole::Peer(receivers.remove(&shard).expect("one receiver per peer"))
        };
        Ok(shard_task(
            world.clone(),
            shard,
            role,
            watchdog_progress[shard.index()].clone(),
            initial.remove(&shard).unwrap_or_default(),
        ))
    });
    if let Err(error) = spawned {
        let shoal_shard::LifecycleError::SpawnFailed { shard, .. } = &error;
        tracing::debug!(%error, "partial spawn");
        let mut ledger = world.ledger.borrow_mut();
        ledger.counters.spawn_failures += 1;
        ledger.event(&[EVENT_SPAWN_FAILED, u64::from(shard.0)]);
        drop(ledger);
        // The shards that never started: nothing may queue for them.
        for never in world.shard_count.shards().skip(shard.index()) {
            world.retire(never);
        }
    }
    // Handles of the handoff for shards that never started are dropped here,
    // which a waiting shard 0 sees as `PeerGone`.
    drop(zero_peers);
    drop(receivers);
    let report = tasks.join_all(&io, SHUTDOWN_GRACE_NS).await;
    for (shard, exit) in &report.exits {
        match exit {
            ShardExit::Completed => {}
            ShardExit::Failed(failed) if failed.reason.contains(INJECTED) => {}
            ShardExit::Failed(failed) => {
                world.violation(ViolationKind::ShardAssertion, format!("shard {} failed: {}", shard.0, failed.reason))
            }
            ShardExit::Straggler => {
                world.ledger.borrow_mut().counters.stragglers += 1;
                world.violation(
                    ViolationKind::RunUnbounded,
                    format!("shard {} did not stop within {SHUTDOWN_GRACE_NS} ns of shutdown", shard.0),
                );
            }
        }
    }
    world.finished_at_ns.set(io.now_ns());
    world.supervisor_done.set(true);
}

/// Checks between shard steps, the watchdog, and the end of the workload.
async fn driver(world: Rc<World>, mut watchdog: Watchdog) {
    loop {
        world.io.sleep(SHARD_TICK_NS).await;
        world.check_accounting();
        world.check_owner_table();
        if world.supervisor_done.get() {
            return;
        }
        if world.shutdown.is_requested() {
            if world.shutdown_seen_at_ns.get().is_none() {
                world.shutdown_seen_at_ns.set(Some(world.now_ns()));
            }
            continue;
        }
        let handoff_running = {
            let counters = &world.ledger.borrow().counters;
            counters.handoffs_completed + counters.handoffs_abandoned < u64::from(world.shard_count.get())
        };
        if handoff_running && chance(&world.rng, world.config.faults.handoff_signal_ppm) {
            // SIGINT/SIGTERM: the handler only flips the flag; every shard,
            // in the handoff or not, must notice it within its bound.
            world.ledger.borrow_mut().counters.handoff_signals += 1;
            world.request_shutdown(3);
            continue;
        }
        for stall in watchdog.tick() {
            let mut ledger = world.ledger.borrow_mut();
            ledger.counters.watchdog_reports += 1;
            ledger.event(&[EVENT_STALL, world.now_ns(), u64::from(stall.shard.0)]);
        }
        let workload_done = world.frames_remaining.get() == 0 && world.queued() == 0;
        if workload_done || world.now_ns() >= WORKLOAD_TIME_MAX_NS {
            world.request_shutdown(1);
        }
    }
}

fn catalogue(config: &ShardWorldConfig) -> MetadataState {
    let mut state = MetadataState::new();
    for stream_id in 1..=config.streams {
        state
            .apply(&MetadataRequest::CreateStream { stream_id, name: format!("stream-{stream_id}") })
            .expect("fresh stream");
        for topic_id in 1..=config.topics_per_stream {
            state
                .apply(&MetadataRequest::CreateTopic {
                    stream_id,
                    topic_id,
                    name: format!("topic-{topic_id}"),
                    partition_count: config.partitions_per_topic,
                })
                .expect("fresh topic");
        }
    }
    state
}

/// Run one shard world from `config` to its end and check it.
pub fn run_shard_world(config: &ShardWorldConfig) -> ShardWorldOutcome {
    config.validate();
    let shard_count = ShardCount::new(usize::from(config.shard_count)).expect("validated");
    let io = SimIo::new(config.seed);
    let rng = Rc::new(RefCell::new(ChaCha8Rng::seed_from_u64(config.seed ^ SEED_STREAM_WORLD)));
    let snapshot = catalogue(config);
    block_on_ready(shoal_vsr::io::create_dir_durable(&io, Path::new("/data"))).expect("sim disk");
    block_on_ready(handoff::write_metadata(&io, Path::new(METADATA_SNAPSHOT_PATH), ShardId::METADATA, &snapshot))
        .expect("sim disk has no faults configured");

    let drops: Vec<Arc<FrameDrops>> = shard_count.shards().map(|_| Arc::new(FrameDrops::new())).collect();
    let inboxes: Vec<Rc<LocalInbox>> =
        drops.iter().map(|d| Rc::new(LocalInbox::new(config.inbox_capacity, d.clone()))).collect();
    let senders = inboxes
        .iter()
        .map(|inbox| FaultySender { inbox: inbox.clone(), rng: rng.clone(), full_ppm: config.faults.inbox_full_ppm })
        .collect();
    let clients = (0..config.client_connections)
        .map(|_| ShardId((rng.borrow_mut().next_u64() % u64::from(shard_count.get())) as u16))
        .collect();
    let world_rng = RefCell::new(ChaCha8Rng::seed_from_u64(rng.borrow_mut().next_u64()));
    let world = Rc::new(World {
        config: config.clone(),
        shard_count,
        io: io.clone(),
        rng: world_rng,
        inboxes,
        senders,
        drops,
        owners: ReplicaOwnerTable::new(usize::from(config.replica_count), shard_count),
        connections: RefCell::new(BTreeMap::new()),
        replaced: RefCell::new(std::collections::BTreeSet::new()),
        clients,
        namespaces: snapshot.partition_namespaces(),
        snapshot,
        shutdown: ShutdownFlag::new(),
        shutdown_seen_at_ns: Cell::new(None),
        frames_remaining: Cell::new(config.frames_total),
        supervisor_done: Cell::new(false),
        finished_at_ns: Cell::new(RUN_TIME_BOUND_NS),
        ledger: RefCell::new(Ledger { hash: 0xcbf2_9ce4_8422_2325, ..Ledger::default() }),
    });
    assert!(!world.namespaces.is_empty());

    let watchdog = Watchdog::new(shard_count, WATCHDOG_STALL_TICKS);
    let progress = shard_count.shards().map(|s| watchdog.progress(s)).collect();
    // Both handles are awaited through `supervisor_done` and the idle check
    // below; the executor keeps running a task whose handle is dropped.
    let supervisor_task = io.spawn(supervisor(world.clone(), progress));
    let driver_task = io.spawn(driver(world.clone(), watchdog));
    io.run_until(RUN_TIME_BOUND_NS);
    let end_ns = world.finished_at_ns.get();
    let finished = supervisor_task.is_finished() && driver_task.is_finished();
    if !world.supervisor_done.get() || !finished {
        world.violation(
            ViolationKind::RunUnbounded,
            format!(
                "the shard world did not end within {RUN_TIME_BOUND_NS} ns ({} tasks still live)",
                io.executor().tasks_live()
            ),
        );
    }
    world.check_accounting();
    if world.queued() != 0 {
        world.violation(
            ViolationKind::Accounting,
            format!("{} frames still queued after every shard stopped", world.queued()),
        );
    }
    world.check_owner_table();
    if !world.connections.borrow().is_empty() {
        world.violation(ViolationKind::OwnerTable, "connections outlived the shards that held them".to_string());
    }

    let mut ledger = world.ledger.borrow_mut();
    let mut counters = std::mem::take(&mut ledger.counters);
    counters.frame_drops_total = world.drops_total();
    for reason in DropReason::ALL {
        let count: u64 =
            world.drops.iter().map(|d| FrameVariant::ALL.iter().map(|v| d.get(*v, reason)).sum::<u64>()).sum();
        if count > 0 {
            counters.drops_by_reason.insert(reason.name().to_string(), count);
        }
    }
    let violations = std::mem::take(&mut ledger.violations);
    let verdict = violations.first().map_or(Verdict::Pass, ShardViolation::verdict);
    let trace_hash = ledger.hash ^ counters.frames_sent.rotate_left(17) ^ end_ns;
    ShardWorldOutcome { config: config.clone(), verdict, violations, counters, trace_hash, virtual_time_ns: end_ns }
}

/// Run `config` twice; a different trace hash is a determinism violation.
pub fn check_determinism(config: &ShardWorldConfig) -> Result<u64, Verdict> {
    let first = run_shard_world(config);
    let second = run_shard_world(config);
    if first.trace_hash == second.trace_hash && first.counters == second.counters {
        Ok(first.trace_hash)
    } else {
        Err(Verdict::SafetyViolation {
            checker: Checker::Determinism,
            message: format!(
                "seed {} gave trace hashes {:#x} and {:#x}",
                config.seed, first.trace_hash, second.trace_hash
            ),
            at_ns: first.virtual_time_ns.min(second.virtual_time_ns),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_free_world_delivers_every_frame() {
        for shards in [1u16, 2, 4, 8] {
            let outcome = run_shard_world(&ShardWorldConfig::new(11, shards));
            assert!(outcome.passed(), "{:?}", outcome.violations);
            let c = &outcome.counters;
            assert_eq!(c.frames_sent, c.frames_delivered + c.frame_drops_total);
            assert!(c.frames_delivered > 300, "{c:?}");
            // Only malformed client requests are refused.
            assert_eq!(
                c.drops_by_reason.keys().collect::<Vec<_>>(),
                if c.frame_drops_total == 0 { vec![] } else { vec!["forward_failed"] }
            );
            assert_eq!(c.handoffs_completed, u64::from(shards));
        }
    }
}
