//! The cluster driver: R replicas of one VSR group, their disks, the network
//! and the clients, advanced event by event in virtual time from one seed.
//!
//! A run has a safety phase (faults on, per the `FaultMix`) and a liveness
//! phase (faults off, every replica restarted and unpaused, the network
//! healed): by the end of it every replica must have committed the same ops.
//! Checkers run after every step; the first violation ends the run.
//!
//! Must not touch the wall clock, threads or OS entropy: every decision comes
//! from the seed, so a failing seed replays bit-for-bit.

use std::collections::BTreeMap;
use std::rc::Rc;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use shoal_vsr::header::{Command, Header, Operation};
use shoal_vsr::message::Message;
use shoal_vsr::replica::{Action, Replica, ReplicaConfig, Source, Status};
use shoal_vsr::state_machine::AppendLog;

use crate::checker::{Ack, Checkers};
use crate::io::SimIo;
use crate::network::{Fate, Network, NodeId, Partition, PartitionKind, PPM_MAX};
use crate::node::{NodeStorage, StorageConfig, DATA_DIR};
use crate::run::{Checker, RunConfig, RunOutcome, ScriptedFault, Target, TimelineEvent, TimelineKind, TraceEvent, Verdict};

pub const TICK_NS: u64 = 10_000_000;
pub const JOURNAL_SLOT_COUNT: u64 = 64;
pub const CHECKPOINT_INTERVAL_OPS: u64 = 16;
/// Prepares in the simulator carry small client payloads; a small slot keeps
/// every journal file small and every simulated fsync cheap.
pub const MESSAGE_SIZE_MAX_BYTES: u32 = 4 * 1024;
pub const CLUSTER_ID: u128 = 0x5348_4f41_4c00_0001;
/// The namespace of the group the simulator runs (partition 1 of topic 1 of stream 1).
pub const NAMESPACE: u64 = (1 << 40) | (1 << 20) | 1;
pub const CLIENT_ID_BASE: u128 = 1_000;
pub const CLIENT_RETRY_TICKS: u64 = 30;
pub const RESTART_DELAY_MAX_NS: u64 = 800_000_000;
pub const PAUSE_DURATION_MAX_NS: u64 = 300_000_000;
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

#[derive(Debug)]
struct Node {
    io: SimIo,
    storage: Option<NodeStorage>,
    replica: Option<Replica<AppendLog>>,
    paused_until_ns: Option<u64>,
    /// Prepares this replica wrote durably (and so may have acknowledged) and
    /// has not legitimately dropped since: they must survive a crash.
    acked: BTreeMap<u64, u128>,
    /// Corruption was injected into this replica's journal while it was down.
    corrupted: bool,
    last_view: u64,
}

#[derive(Debug)]
struct InFlight {
    request: u64,
    payload: Vec<u8>,
    invoked_ns: u64,
    sent_tick: u64,
}

#[derive(Debug)]
struct Client {
    id: u128,
    registered: bool,
    request: u64,
    in_flight: Option<InFlight>,
    view_guess: u64,
    ticks: u64,
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
    nodes: Vec<Node>,
    clients: Vec<Client>,
    network: Network,
    checkers: Checkers,
    phase: Phase,
    /// Faults that may still be injected (`None`: unlimited).
    fault_budget: Option<u64>,
    faults: BTreeMap<String, u64>,
    /// The one replica whose disk may rot: corrupting a slot on no more than
    /// one replica keeps every committed op on a majority.
    rot_replica: u8,
    trace_hash: u64,
    trace: Vec<TraceEvent>,
    timeline: Vec<TimelineEvent>,
    events_processed: u64,
    view_changes: u64,
    converged: bool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("seed", &self.config.seed).field("now_ns", &self.now_ns).finish()
    }
}

fn storage_config(replica: u8) -> StorageConfig {
    StorageConfig {
        cluster: CLUSTER_ID,
        namespace: NAMESPACE,
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
        let root_io = SimIo::new(rng.next_u64());
        let mut nodes = Vec::new();
        for replica in 0..config.replica_count {
            let io = root_io.with_new_disk(rng.next_u64());
            io.disk().faults.read_corruption_ppm = 0;
            io.disk().faults.misdirected_write_ppm = 0;
            let storage = NodeStorage::format(&io, storage_config(replica)).expect("formatting a fresh disk works");
            let replica_config = replica_config(config, replica, rng.next_u64());
            nodes.push(Node {
                io,
                storage: Some(storage),
                replica: Some(Replica::new(replica_config, AppendLog::default())),
                paused_until_ns: None,
                acked: BTreeMap::new(),
                corrupted: false,
                last_view: 0,
            });
        }
        let clients = (0..config.client_count)
            .map(|index| Client {
                id: CLIENT_ID_BASE + u128::from(index),
                registered: false,
                request: 0,
                in_flight: None,
                view_guess: 0,
                ticks: 0,
            })
            .collect();
        let network = Network::new(rng.next_u64(), u32::from(config.replica_count), config.faults.clone());
        let rot_replica = (rng.next_u64() % u64::from(config.replica_count)) as u8;
        let mut cluster = Cluster {
            config: config.clone(),
            rng,
            now_ns: 0,
            queue: BTreeMap::new(),
            sequence: 0,
            nodes,
            clients,
            network,
            checkers: Checkers::default(),
            phase: Phase::Safety,
            fault_budget: config.fault_budget,
            faults: BTreeMap::new(),
            rot_replica,
            trace_hash: config.seed,
            trace: Vec::new(),
            timeline: Vec::new(),
            events_processed: 0,
            view_changes: 0,
            converged: false,
        };
        for replica in 0..config.replica_count {
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
            self.trace.push(TraceEvent { time_ns: self.now_ns, replica, shard: None, kind: kind.to_string(), detail: detail() });
        }
    }

    fn timeline(&mut self, replica: u8, kind: TimelineKind, detail: String) {
        self.timeline.push(TimelineEvent { time_ns: self.now_ns, replica, kind, detail });
    }

    /// Roll for a fault: false in the liveness phase or once the budget is spent.
    fn roll(&mut self, ppm: u32, kind: &str) -> bool {
        if self.phase != Phase::Safety || ppm == 0 || self.fault_budget == Some(0) {
            return false;
        }
        if self.rng.next_u64() % PPM_MAX >= u64::from(ppm) {
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
            if self.checkers.violation().is_some() || self.converged {
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

    fn handle(&mut self, event: Event) {
        match event {
            Event::ReplicaTick(replica) => self.on_replica_tick(replica),
            Event::ClientTick(client) => self.on_client_tick(client),
            Event::NetworkTick => {
                let before = self.network.counters.clone();
                let changes = self.network.tick(self.now_ns);
                self.spend_network_faults(&before);
                for change in changes {
                    let kind = if change.starts_with("heal") { TimelineKind::PartitionEnd } else { TimelineKind::PartitionStart };
                    self.record(None, "network", 0, 0, || change.clone());
                    self.timeline(0, kind, change);
                }
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
        if self.nodes[index].replica.is_none() || self.nodes[index].paused_until_ns.is_some() {
            return;
        }
        if self.roll(self.config.faults.replica_crash_ppm, "replica_crash") {
            return self.crash(replica, "injected");
        }
        if self.roll(self.config.faults.replica_pause_ppm, "replica_pause") {
            let duration = 1 + self.rng.next_u64() % PAUSE_DURATION_MAX_NS;
            self.nodes[index].paused_until_ns = Some(self.now_ns + duration);
            self.schedule(duration, Event::Unpause(replica));
            self.record(Some(replica), "pause", duration, 0, String::new);
            return;
        }
        let now_ns = self.now_ns;
        self.step(replica, |r| r.tick(now_ns));
        if let Phase::Liveness { .. } = self.phase
            && replica == 0
            && (now_ns / TICK_NS).is_multiple_of(CONVERGENCE_CHECK_TICKS)
        {
            self.check_convergence();
        }
    }

    /// Run one replica event and carry out what it asks, in order.
    fn step(&mut self, replica: u8, event: impl FnOnce(&mut Replica<AppendLog>)) {
        let index = replica as usize;
        let Some(r) = self.nodes[index].replica.as_mut() else { return };
        event(r);
        let committed = r.take_committed();
        let actions = r.take_actions();
        let view = r.view();
        let status = r.status();
        if !committed.is_empty() {
            let last = committed.last().map(|c| c.op).unwrap_or(0);
            self.record(Some(replica), "commit", last, committed.len() as u64, || format!("through op {last}"));
            if last.is_multiple_of(25) {
                self.timeline(replica, TimelineKind::Commit, format!("op {last}"));
            }
            self.checkers.on_committed(replica, &committed);
        }
        if view > self.nodes[index].last_view {
            self.nodes[index].last_view = view;
            self.view_changes += 1;
            self.record(Some(replica), "view", view, status as u64, || format!("view {view} {status:?}"));
            self.timeline(replica, TimelineKind::ViewChange, format!("view {view}"));
        }
        for action in actions {
            if !self.execute(replica, action) {
                break;
            }
        }
    }

    /// Carry out one action. False when the replica stopped (storage failed).
    fn execute(&mut self, replica: u8, action: Action) -> bool {
        let index = replica as usize;
        match action {
            Action::Send { to, message } => {
                if message.header.command == Command::PrepareOk {
                    self.nodes[index].acked.insert(message.header.op, message.header.parent);
                }
                self.send(Endpoint::Replica(replica), Endpoint::Replica(to), message);
                true
            }
            Action::Reply { client, message } => {
                let client_index = (client - CLIENT_ID_BASE) as u32;
                self.send(Endpoint::Replica(replica), Endpoint::Client(client_index), message);
                true
            }
            storage_action => {
                if self.roll(self.config.faults.storage_write_error_ppm, "storage_write_error") {
                    self.nodes[index].io.disk().fail_next_write();
                } else if self.roll(self.config.faults.storage_torn_write_ppm, "storage_torn_write")
                    || self.roll(self.config.faults.storage_lost_write_ppm, "storage_lost_write")
                {
                    // The write lands in the page cache and the fsync fails:
                    // the crash that follows loses or tears it, as the seed says.
                    self.nodes[index].io.disk().fail_next_sync();
                }
                let storage = self.nodes[index].storage.as_mut().expect("running replica has storage");
                match storage.execute(&storage_action) {
                    Ok(()) => {
                        self.after_storage(replica, &storage_action, true);
                        true
                    }
                    Err(error) => {
                        // A failed action may still have reached the disk in
                        // part: what it meant to drop is no longer promised.
                        self.after_storage(replica, &storage_action, false);
                        let reason = error.to_string();
                        self.record(Some(replica), "storage_error", 0, 0, || reason.clone());
                        self.crash(replica, "storage error");
                        false
                    }
                }
            }
        }
    }

    /// Keep the recovery checker's list of promises in step with what the
    /// replica legitimately dropped.
    fn after_storage(&mut self, replica: u8, action: &Action, durable: bool) {
        let acked = &mut self.nodes[replica as usize].acked;
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

    /// The replica, while it runs (tests inspect it after a run).
    pub fn replica(&self, replica: u8) -> Option<&Replica<AppendLog>> {
        self.nodes[replica as usize].replica.as_ref()
    }

    fn resolve(&self, target: Target) -> Option<u8> {
        let running = || self.nodes.iter().enumerate().filter_map(|(i, n)| n.replica.as_ref().map(|r| (i as u8, r)));
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
                let busy = self.nodes[replica as usize].replica.as_ref().is_some_and(|r| r.pipeline_len() > 0);
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
        if self.nodes[index].replica.is_none() {
            return;
        }
        self.nodes[index].replica = None;
        self.nodes[index].storage = None;
        self.nodes[index].paused_until_ns = None;
        self.nodes[index].io.crash();
        let why = why.to_string();
        self.record(Some(replica), "crash", 0, 0, || why.clone());
        self.timeline(replica, TimelineKind::Crash, why);
        self.schedule(down_ns.max(1), Event::Restart(replica));
    }

    fn restart(&mut self, replica: u8) {
        let index = replica as usize;
        if self.nodes[index].replica.is_some() {
            return;
        }
        self.maybe_rot(replica);
        let io = self.nodes[index].io.clone();
        let (storage, recovered) = match NodeStorage::open(&io, storage_config(replica)) {
            Ok(opened) => opened,
            Err(error) => {
                return self.checkers.fail(Checker::Recovery, format!("replica {replica} cannot restart: {error}"));
            }
        };
        self.check_recovery(replica, &storage, &recovered);
        let faulty = recovered.journal_faulty;
        let seed = self.rng.next_u64();
        let config = replica_config(&self.config, replica, seed);
        match Replica::open(config, AppendLog::default(), recovered) {
            Ok(r) => {
                self.checkers.on_restart(replica, r.commit_min());
                self.nodes[index].last_view = r.view();
                self.nodes[index].replica = Some(r);
                self.nodes[index].storage = Some(storage);
                self.nodes[index].corrupted = false;
            }
            Err(error) => {
                return self.checkers.fail(Checker::Recovery, format!("replica {replica} checkpoint is unreadable: {error}"));
            }
        }
        self.record(Some(replica), "restart", u64::from(faulty), 0, String::new);
        self.timeline(replica, TimelineKind::Restart, if faulty { "journal faulty".into() } else { String::new() });
        // Drain the actions that recovery itself asked for.
        self.step(replica, |_| {});
    }

    /// Corrupt one journal slot below the head of the rot replica while it is
    /// down: recovery must notice and the cluster must repair it.
    fn maybe_rot(&mut self, replica: u8) {
        if replica != self.rot_replica || !self.roll(self.config.faults.storage_read_corruption_ppm, "storage_read_corruption") {
            return;
        }
        self.rot(replica);
    }

    fn rot(&mut self, replica: u8) {
        let index = replica as usize;
        let io = self.nodes[index].io.clone();
        let Ok((storage, _)) = NodeStorage::open(&io, storage_config(replica)) else { return };
        let journal = storage.journal();
        let Some(head) = journal.op_max() else { return };
        let low = journal.snapshot_op() + 1;
        if head <= low {
            return;
        }
        let op = low + self.rng.next_u64() % (head - low);
        // Placed so the cluster stays recoverable: every other running
        // replica holds this op (or checkpointed past it), so corrupting it
        // here never destroys the last copy.
        let held_elsewhere = self.nodes.iter().enumerate().filter(|(j, _)| *j != index).all(|(_, node)| {
            node.replica.as_ref().is_some_and(|r| r.has_body(op) || op <= r.checkpoint_op())
        });
        if !held_elsewhere {
            return;
        }
        let offset = journal.config().slot_offset(op);
        let path = shoal_vsr::journal::journal_path(std::path::Path::new(DATA_DIR), NAMESPACE);
        drop(storage);
        if io.disk().corrupt_sector(&path, offset).is_ok() {
            self.nodes[index].corrupted = true;
            self.record(Some(replica), "rot", op, 0, || format!("journal slot of op {op}"));
            self.timeline(replica, TimelineKind::Fault, format!("rot op {op}"));
        }
    }

    /// Every prepare this replica acknowledged is back after the crash, or the
    /// journal says it is faulty and the replica will not vouch for its log.
    fn check_recovery(&mut self, replica: u8, storage: &NodeStorage, recovered: &shoal_vsr::replica::Recovered) {
        let checkpoint_op = recovered.checkpoint.as_ref().map_or(0, |c| c.anchor.op);
        if storage.journal().snapshot_op() > checkpoint_op {
            self.checkers.fail(
                Checker::Recovery,
                format!(
                    "replica {replica}: journal snapshot_op {} is past the durable checkpoint {checkpoint_op}",
                    storage.journal().snapshot_op()
                ),
            );
        }
        let acked = self.nodes[replica as usize].acked.clone();
        for (op, checksum) in acked {
            if op <= checkpoint_op {
                continue;
            }
            let present = recovered.entries.iter().any(|(h, _)| h.op == op && h.checksum == checksum);
            if !present && !recovered.journal_faulty {
                self.checkers.fail(
                    Checker::Recovery,
                    format!("replica {replica} acknowledged op {op} before the crash and lost it"),
                );
                return;
            }
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
            self.network.heal();
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
            Fate::Deliver(times) => {
                for at in times {
                    self.sequence += 1;
                    self.queue.insert((at, self.sequence), Event::Deliver { from, to, message: Box::new(message.clone()) });
                }
            }
        }
    }

    fn deliver(&mut self, from: Endpoint, to: Endpoint, message: Message) {
        self.record(None, "deliver", message.header.command as u64, message.header.op, || {
            format!("{from:?}->{to:?} {:?} view {} op {}", message.header.command, message.header.view, message.header.op)
        });
        match to {
            Endpoint::Replica(replica) => {
                let index = replica as usize;
                if self.nodes[index].replica.is_none() {
                    return;
                }
                if let Some(until) = self.nodes[index].paused_until_ns {
                    // A paused process still has its socket buffer.
                    self.sequence += 1;
                    let message = Box::new(message);
                    self.queue.insert((until.max(self.now_ns) + 1, self.sequence), Event::Deliver { from, to, message });
                    return;
                }
                let source = match from {
                    Endpoint::Replica(r) => Source::Replica(r),
                    Endpoint::Client(c) => Source::Client(CLIENT_ID_BASE + u128::from(c)),
                };
                self.step(replica, |r| r.on_message(source, message));
            }
            Endpoint::Client(client) => self.on_client_message(client, message),
        }
    }

    // --- clients ----------------------------------------------------------------

    fn on_client_tick(&mut self, index: u32) {
        self.schedule(TICK_NS, Event::ClientTick(index));
        let now_ns = self.now_ns;
        let replica_count = self.config.replica_count;
        let safety = self.phase == Phase::Safety;
        let client = &mut self.clients[index as usize];
        client.ticks += 1;
        let mut sends: Vec<(Endpoint, Message)> = Vec::new();
        if let Some(in_flight) = &mut client.in_flight {
            if client.ticks - in_flight.sent_tick >= CLIENT_RETRY_TICKS {
                in_flight.sent_tick = client.ticks;
                let message = client_request(client.id, in_flight.request, &in_flight.payload, !client.registered);
                for replica in 0..replica_count {
                    sends.push((Endpoint::Replica(replica), message.clone()));
                }
            }
        } else if !client.registered || safety {
            let (request, payload) = if client.registered {
                client.request += 1;
                (client.request, format!("c{}-r{}", client.id, client.request).into_bytes())
            } else {
                (0, Vec::new())
            };
            let message = client_request(client.id, request, &payload, !client.registered);
            client.in_flight = Some(InFlight { request, payload, invoked_ns: now_ns, sent_tick: client.ticks });
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
        let client = &mut self.clients[index as usize];
        if header.command == Command::Eviction {
            let id = client.id;
            return self.checkers.fail(
                Checker::AckedWritesDurable,
                format!("client {id} was evicted: its session was lost (the session table holds every client)"),
            );
        }
        let Some(in_flight) = &client.in_flight else { return };
        if header.command != Command::Reply || header.request != in_flight.request {
            return;
        }
        let registering = !client.registered;
        if registering != (header.operation == Operation::Register) {
            return;
        }
        client.view_guess = header.view;
        let in_flight = client.in_flight.take().expect("checked above");
        if registering {
            client.registered = true;
            return;
        }
        let Some(offset) = message.body.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap())) else {
            let id = client.id;
            return self.checkers.fail(Checker::Linearizability, format!("client {id} got a reply without an offset"));
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
        self.checkers.on_ack(ack);
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
            if self.nodes[index].replica.is_none() {
                // Restart events for it are already queued; pull them in.
                self.schedule(TICK_NS, Event::Restart(replica));
            }
        }
    }

    /// Converged: every replica up, in normal status in one view, and every
    /// replica applied the same ops, with no client request left in flight.
    fn check_convergence(&mut self) {
        let mut views = Vec::new();
        let mut commits = Vec::new();
        for node in &self.nodes {
            let Some(r) = &node.replica else { return };
            if r.status() != Status::Normal {
                return;
            }
            views.push(r.view());
            commits.push((r.commit_min(), r.commit_max(), r.op()));
        }
        let same_view = views.windows(2).all(|w| w[0] == w[1]);
        let same_commit = commits.windows(2).all(|w| w[0].0 == w[1].0) && commits.iter().all(|c| c.0 == c.1 && c.0 == c.2);
        let clients_idle = self.clients.iter().all(|c| c.in_flight.is_none());
        if same_view && same_commit && clients_idle {
            self.converged = true;
        }
    }

    fn finish(&mut self) -> RunOutcome {
        let verdict = if let Some(violation) = self.checkers.violation() {
            Verdict::SafetyViolation {
                checker: violation.checker.clone(),
                message: violation.message.clone(),
                at_ns: self.now_ns,
            }
        } else if !self.converged {
            Verdict::LivenessViolation { message: self.liveness_report() }
        } else {
            for replica in 0..self.config.replica_count {
                let messages =
                    self.nodes[replica as usize].replica.as_ref().map(|r| r.state_machine().messages.clone()).unwrap_or_default();
                self.checkers.check_final_log(replica, &messages);
            }
            match self.checkers.violation() {
                Some(violation) => Verdict::SafetyViolation {
                    checker: violation.checker.clone(),
                    message: violation.message.clone(),
                    at_ns: self.now_ns,
                },
                None => Verdict::Pass,
            }
        };
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
        let faults_injected_total = self.faults.iter().filter(|(k, _)| !k.starts_with("disk_")).map(|(_, v)| v).sum();
        RunOutcome {
            config: self.config.clone(),
            verdict,
            ops_committed: self.checkers.ops_committed(),
            view_changes: self.view_changes,
            faults_injected: self.faults.clone(),
            faults_injected_total,
            trace_hash: self.trace_hash,
            events_processed: self.events_processed,
            virtual_time_ns: self.now_ns,
            trace: std::mem::take(&mut self.trace),
            timeline: std::mem::take(&mut self.timeline),
        }
    }

    fn liveness_report(&self) -> String {
        let replicas: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| match &node.replica {
                None => format!("r{index}: down"),
                Some(r) => format!(
                    "r{index}: {:?} view {} op {} commit {}/{} pipeline {:?} missing bodies {:?} drops {:?}",
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

fn replica_config(config: &RunConfig, replica: u8, seed: u64) -> ReplicaConfig {
    ReplicaConfig {
        cluster: CLUSTER_ID,
        namespace: NAMESPACE,
        replica,
        replica_count: config.replica_count,
        journal_slot_count: JOURNAL_SLOT_COUNT,
        checkpoint_interval_ops: CHECKPOINT_INTERVAL_OPS,
        seed,
    }
}

fn client_request(client: u128, request: u64, payload: &[u8], register: bool) -> Message {
    let mut header = Header::new(Command::Request, CLUSTER_ID);
    header.namespace = NAMESPACE;
    header.client = client;
    header.request = request;
    header.operation = if register { Operation::Register } else { Operation::SendMessages };
    Message::new(header, Rc::from(payload))
}

/// Run one seed to its verdict.
pub fn run(config: &RunConfig) -> RunOutcome {
    Cluster::new(config).run()
}
