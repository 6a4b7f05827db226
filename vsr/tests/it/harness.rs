//! A step-by-step cluster for protocol stories: R `Replica`s, an in-memory
//! disk each, and a message queue the test drives by hand (`deliver_where`,
//! `drop_where`, `cut`, `crash`, `restart`, `wipe`, `tick`), so a story reads
//! line by line instead of hoping a seed loop reaches it.
//!
//! Storage actions are durable the moment they run (the disk here never
//! loses a write); the simulator owns the unkind disk. Every commit is
//! checked against every other replica's commit of the same op, and a
//! violation is recorded, not panicked, so a story can show the bug (on old
//! code) as well as its absence.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use shoal_vsr::header::MESSAGE_SIZE_MAX_BYTES;
use shoal_vsr::header::{Command, Header, Operation};
use shoal_vsr::message::Message;
use shoal_vsr::replica::{
    Action, Checkpoint, DurableState, Recovered, Replica, ReplicaConfig, Source, Status, frame_size_max_bytes,
};
use shoal_vsr::state_machine::AppendLog;

pub const CLUSTER: u128 = 0xC0FFEE;
pub const NAMESPACE: u64 = (1 << 40) | (1 << 20) | 1;
pub const TICK_NS: u64 = 10_000_000;
pub const JOURNAL_SLOT_COUNT: u64 = 64;
pub const CHECKPOINT_INTERVAL_OPS: u64 = 16;
/// A delivery loop that runs longer than this is a livelock in the story.
const DELIVERIES_MAX: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Replica(u8),
    Client(u128),
}

#[derive(Debug, Clone)]
pub struct Envelope {
    pub from: Sender,
    pub to: u8,
    pub message: Message,
}

impl Envelope {
    pub fn command(&self) -> Command {
        self.message.header.command
    }
    pub fn between(&self, from: u8, to: u8) -> bool {
        self.from == Sender::Replica(from) && self.to == to
    }
}

/// What one replica's disk holds: every write is durable at once.
#[derive(Debug, Clone)]
pub struct Disk {
    pub superblock: DurableState,
    pub checkpoint: Option<Checkpoint>,
    pub journal: BTreeMap<u64, (Header, Vec<u8>)>,
    /// Ops whose slot rotted (`Cluster::rot`): the journal lost them and
    /// reports itself faulty at the next start, as the real journal's scan
    /// does for a slot its header ring names but that no longer reads back.
    pub rotten: BTreeSet<u64>,
    /// Rotten ops whose header the journal still knows from its copy
    /// (`Cluster::rot_body`): a subset of `rotten`.
    pub rotten_named: BTreeMap<u64, Header>,
}

impl Disk {
    fn formatted(rejoining: bool) -> Disk {
        Disk {
            superblock: DurableState {
                view: 0,
                log_view: 0,
                commit: 0,
                view_headers: Vec::new(),
                rejoining,
                nack_floor: 0,
            },
            checkpoint: None,
            journal: BTreeMap::new(),
            rotten: BTreeSet::new(),
            rotten_named: BTreeMap::new(),
        }
    }
}

#[derive(Debug)]
pub struct Cluster {
    pub replica_count: u8,
    replicas: Vec<Option<Replica<AppendLog>>>,
    pub disks: Vec<Disk>,
    pub queue: Vec<Envelope>,
    /// Every message a replica sent, in order (delivered, lost or pending):
    /// stories pick stale messages from here to redeliver them later.
    pub sent: Vec<Envelope>,
    /// Directed links that lose every message.
    cuts: BTreeSet<(u8, u8)>,
    now_ns: u64,
    seed: u64,
    /// Replies clients received: (client, header).
    pub replies: Vec<(u128, Header)>,
    /// Each client's session (its register's op, from the register's reply).
    sessions: BTreeMap<u128, u64>,
    /// The first commit seen of every op, cluster-wide.
    committed: BTreeMap<u64, (u8, u128)>,
    /// Each replica's committed ops in this life (op, checksum).
    pub commits: Vec<BTreeMap<u64, u128>>,
    pub violations: Vec<String>,
    /// The replicas' settings, kept for restarts.
    client_sessions_max: usize,
    pipeline_prepares_max: usize,
    /// Every replica's frame limit (`ReplicaConfig::message_size_max_bytes`).
    message_size_max_bytes: u32,
    /// Replicas whose checkpoints the node is still writing (its partition
    /// log sync has not returned): `hold_checkpoints`.
    checkpoints_held_for: BTreeSet<u8>,
    /// Those checkpoints, in the order they were handed over, with their
    /// replica: on no disk yet.
    pub checkpoints_held: Vec<(u8, Checkpoint)>,
}

impl Cluster {
    pub fn new(replica_count: u8) -> Cluster {
        Cluster::with_sessions(replica_count, shoal_vsr::sessions::CLIENT_SESSIONS_MAX)
    }

    /// A cluster whose session tables hold `client_sessions_max` clients.
    pub fn with_sessions(replica_count: u8, client_sessions_max: usize) -> Cluster {
        Cluster::with_pipeline(replica_count, client_sessions_max, shoal_vsr::replica::PIPELINE_PREPARES_MAX)
    }

    /// A cluster whose primaries keep `pipeline_prepares_max` prepares in
    /// flight (and queue, then pack, the requests beyond).
    pub fn with_pipeline(replica_count: u8, client_sessions_max: usize, pipeline_prepares_max: usize) -> Cluster {
        Cluster::with_limits(replica_count, client_sessions_max, pipeline_prepares_max, MESSAGE_SIZE_MAX_BYTES)
    }

    /// A cluster whose frames (prepares and state transfer chunks) are at
    /// most `message_size_max_bytes` each; view change frames may be larger
    /// (`frame_size_max_bytes`). Every send is checked.
    pub fn with_message_size_max(replica_count: u8, message_size_max_bytes: u32) -> Cluster {
        Cluster::with_limits(
            replica_count,
            shoal_vsr::sessions::CLIENT_SESSIONS_MAX,
            shoal_vsr::replica::PIPELINE_PREPARES_MAX,
            message_size_max_bytes,
        )
    }

    fn with_limits(
        replica_count: u8,
        client_sessions_max: usize,
        pipeline_prepares_max: usize,
        message_size_max_bytes: u32,
    ) -> Cluster {
        let replicas = (0..replica_count)
            .map(|r| {
                let mut config = config(r, replica_count, 1);
                config.client_sessions_max = client_sessions_max;
                config.pipeline_prepares_max = pipeline_prepares_max;
                config.message_size_max_bytes = message_size_max_bytes;
                Some(Replica::new(config, AppendLog::default()))
            })
            .collect();
        Cluster {
            client_sessions_max,
            pipeline_prepares_max,
            message_size_max_bytes,
            replica_count,
            replicas,
            disks: (0..replica_count).map(|_| Disk::formatted(false)).collect(),
            queue: Vec::new(),
            sent: Vec::new(),
            cuts: BTreeSet::new(),
            now_ns: 0,
            seed: 1,
            replies: Vec::new(),
            sessions: BTreeMap::new(),
            committed: BTreeMap::new(),
            commits: (0..replica_count).map(|_| BTreeMap::new()).collect(),
            violations: Vec::new(),
            checkpoints_held_for: BTreeSet::new(),
            checkpoints_held: Vec::new(),
        }
    }

    pub fn replica(&self, r: u8) -> &Replica<AppendLog> {
        self.replicas[r as usize].as_ref().expect("replica is up")
    }

    pub fn is_up(&self, r: u8) -> bool {
        self.replicas[r as usize].is_some()
    }

    // --- network ---------------------------------------------------------------

    /// Cut both directions between every member of `a` and every member of `b`.
    pub fn cut(&mut self, a: &[u8], b: &[u8]) {
        for &x in a {
            for &y in b {
                self.cuts.insert((x, y));
                self.cuts.insert((y, x));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cuts.clear();
    }

    /// Deliver, in queue order, every message that matches (and every
    /// matching message their handling sends), until none is left. Messages
    /// on a cut link or to a crashed replica are lost. Returns deliveries.
    pub fn deliver_where(&mut self, mut matches: impl FnMut(&Envelope) -> bool) -> usize {
        let mut delivered = 0;
        for _ in 0..DELIVERIES_MAX {
            let Some(index) = self.queue.iter().position(&mut matches) else { return delivered };
            let envelope = self.queue.remove(index);
            if self.deliver(envelope) {
                delivered += 1;
            }
        }
        panic!("more than {DELIVERIES_MAX} deliveries: the story livelocks");
    }

    /// Queue `envelope` again, as a network that delays or duplicates a
    /// message delivers it long after it was sent.
    pub fn redeliver_later(&mut self, envelope: Envelope) {
        self.queue.push(envelope);
    }

    pub fn deliver_all(&mut self) -> usize {
        self.deliver_where(|_| true)
    }

    pub fn drop_where(&mut self, matches: impl FnMut(&Envelope) -> bool) -> usize {
        self.take_where(matches).len()
    }

    /// Remove every queued message that matches and hand them back, in
    /// queue order (to deliver later, in another order).
    pub fn take_where(&mut self, mut matches: impl FnMut(&Envelope) -> bool) -> Vec<Envelope> {
        let (taken, kept) = std::mem::take(&mut self.queue).into_iter().partition(|envelope| matches(envelope));
        self.queue = kept;
        taken
    }

    pub fn pending(&self, mut matches: impl FnMut(&Envelope) -> bool) -> usize {
        self.queue.iter().filter(|envelope| matches(envelope)).count()
    }

    fn deliver(&mut self, envelope: Envelope) -> bool {
        let to = envelope.to;
        let source = match envelope.from {
            Sender::Replica(from) => {
                if self.cuts.contains(&(from, to)) {
                    return false;
                }
                Source::Replica(from)
            }
            Sender::Client(client) => Source::Client(client),
        };
        if !self.is_up(to) {
            return false;
        }
        self.step(to, |replica| replica.on_message(source, envelope.message));
        true
    }

    // --- clients ---------------------------------------------------------------

    pub fn register(&mut self, client: u128, to: u8) {
        self.request_raw(client, to, 0, Operation::Register, Vec::new());
    }

    /// A `SendMessages` request of `client` (registered) with `payload`.
    pub fn append(&mut self, client: u128, to: u8, request: u64, payload: &[u8]) {
        self.request_raw(client, to, request, Operation::SendMessages, payload.to_vec());
    }

    fn request_raw(&mut self, client: u128, to: u8, request: u64, operation: Operation, body: Vec<u8>) {
        let mut header = Header::new(Command::Request, CLUSTER);
        if operation != Operation::Register {
            header.context = self.sessions.get(&client).copied().unwrap_or(0);
        }
        header.namespace = NAMESPACE;
        header.client = client;
        header.request = request;
        header.operation = operation;
        let message = Message::new(header, Rc::from(body));
        self.queue.push(Envelope { from: Sender::Client(client), to, message });
    }

    pub fn replied(&self, client: u128, request: u64) -> bool {
        self.replies.iter().any(|(c, h)| *c == client && h.request == request && h.command == Command::Reply)
    }

    // --- time and processes ------------------------------------------------------

    pub fn tick(&mut self, r: u8) {
        if !self.is_up(r) {
            return;
        }
        self.now_ns += TICK_NS;
        let now_ns = self.now_ns;
        self.step(r, |replica| replica.tick(now_ns));
    }

    /// `ticks` rounds: every running replica of `replicas` ticks, then every
    /// deliverable message is delivered.
    pub fn run(&mut self, replicas: &[u8], ticks: usize) {
        for _ in 0..ticks {
            for &r in replicas {
                self.tick(r);
            }
            self.deliver_all();
        }
    }

    /// Run until `done` holds, at most `ticks_max` rounds; false if it never did.
    pub fn run_until(&mut self, replicas: &[u8], ticks_max: usize, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        for _ in 0..ticks_max {
            if done(self) {
                return true;
            }
            self.run(replicas, 1);
        }
        done(self)
    }

    /// The next life's clock starts at zero (a reboot resets a monotonic clock).
    pub fn rewind_clock(&mut self) {
        self.now_ns = 0;
    }

    pub fn crash(&mut self, r: u8) {
        self.replicas[r as usize] = None;
        self.commits[r as usize].clear();
        // A checkpoint still being written is lost with the process.
        self.checkpoints_held.retain(|(replica, _)| *replica != r);
    }

    /// From now on `r`'s checkpoints stay in the node (neither on its disk
    /// nor reported durable) until `release_checkpoints`, as while its
    /// partition log's sync runs beside the node.
    pub fn hold_checkpoints(&mut self, r: u8) {
        self.checkpoints_held_for.insert(r);
    }

    /// `r`'s held checkpoints reach its disk, in order, and the replica
    /// learns each is durable; later ones run at once again.
    pub fn release_checkpoints(&mut self, r: u8) {
        self.checkpoints_held_for.remove(&r);
        let (mine, others) =
            std::mem::take(&mut self.checkpoints_held).into_iter().partition(|(replica, _)| *replica == r);
        self.checkpoints_held = others;
        assert!(self.is_up(r), "a crash loses the checkpoints it held");
        for (_, checkpoint) in mine {
            self.execute(r, Action::Checkpoint { checkpoint });
        }
        self.drain(r);
    }

    /// `r`'s state machine answers `checkpoint_ready` false while
    /// `withheld` (a partition log with a hole only peers can fill): it
    /// defers its checkpoints and serves none. A restart clears it.
    pub fn withhold_checkpoints(&mut self, r: u8, withheld: bool) {
        let replica = self.replicas[r as usize].as_mut().expect("replica is up");
        replica.state_machine_mut().checkpoint_withheld = withheld;
    }

    /// Start again from what the disk kept.
    pub fn restart(&mut self, r: u8) {
        assert!(!self.is_up(r));
        let disk = &self.disks[r as usize];
        let recovered = Recovered {
            durable: disk.superblock.clone(),
            checkpoint: disk.checkpoint.clone(),
            entries: disk.journal.values().cloned().collect(),
            faulty_ops: disk.rotten.iter().copied().collect(),
            faulty_headers: disk.rotten_named.values().copied().collect(),
        };
        self.seed += 1;
        let replica = Replica::open(self.config(r), AppendLog::default(), recovered)
            .expect("the harness disk holds a valid checkpoint");
        self.replicas[r as usize] = Some(replica);
        self.step(r, |_| {});
    }

    /// The journal slot of `op` rots on `r`'s disk (the replica is down):
    /// the prepare is gone and the next start finds the journal faulty.
    pub fn rot(&mut self, r: u8, op: u64) {
        assert!(!self.is_up(r), "rot a slot while the replica is down");
        let disk = &mut self.disks[r as usize];
        assert!(disk.journal.remove(&op).is_some(), "op {op} is in replica {r}'s journal");
        disk.rotten.insert(op);
    }

    /// The journal slot of `op` rots on `r`'s disk (down), its header copy
    /// intact: the body is gone, the header is known.
    pub fn rot_body(&mut self, r: u8, op: u64) {
        assert!(!self.is_up(r), "rot a slot while the replica is down");
        let disk = &mut self.disks[r as usize];
        let (header, _) = disk.journal.remove(&op).unwrap_or_else(|| panic!("op {op} is in replica {r}'s journal"));
        disk.rotten.insert(op);
        disk.rotten_named.insert(op, header);
    }

    /// `r` (down) lost its state but not its superblock (both checkpoint
    /// copies rotted): its disk becomes what the node's
    /// `GroupStorage::open_or_rejoin` formats then, the superblock's
    /// promises kept (view, log_view, commit, nack floor raised to the head
    /// its view headers named), `rejoining`, nothing else.
    pub fn lose_state_keeping_promises(&mut self, r: u8) {
        assert!(!self.is_up(r), "the state is lost while the replica is down");
        let old = self.disks[r as usize].superblock.clone();
        let named_op_max = old.view_headers.iter().map(|header| header.op).max().unwrap_or(0);
        let mut disk = Disk::formatted(true);
        disk.superblock = DurableState {
            view_headers: Vec::new(),
            rejoining: true,
            nack_floor: old.nack_floor.max(named_op_max),
            ..old
        };
        self.disks[r as usize] = disk;
    }

    /// The disk is lost; the operator formats a new one and starts the
    /// replica, which must rejoin.
    pub fn wipe_and_rejoin(&mut self, r: u8) {
        self.crash(r);
        self.disks[r as usize] = Disk::formatted(true);
        self.seed += 1;
        self.replicas[r as usize] = Some(Replica::rejoin(self.config(r), AppendLog::default()));
        self.step(r, |_| {});
    }

    /// Replica `r`'s configuration for its next life.
    fn config(&self, r: u8) -> ReplicaConfig {
        ReplicaConfig {
            client_sessions_max: self.client_sessions_max,
            pipeline_prepares_max: self.pipeline_prepares_max,
            message_size_max_bytes: self.message_size_max_bytes,
            ..config(r, self.replica_count, self.seed)
        }
    }

    /// Replica `r`'s driver starts a batch of events (the node's turn):
    /// requests wait in its queue until `end_turn`.
    pub fn begin_turn(&mut self, r: u8) {
        self.step(r, Replica::defer_requests);
    }

    /// The batch ends: the queued requests are prepared, packed.
    pub fn end_turn(&mut self, r: u8) {
        self.step(r, Replica::prepare_deferred);
    }

    // --- the driver ----------------------------------------------------------------

    fn step(&mut self, r: u8, event: impl FnOnce(&mut Replica<AppendLog>)) {
        let Some(replica) = self.replicas[r as usize].as_mut() else { return };
        event(replica);
        self.drain(r);
    }

    /// Execute the replica's actions in order until it asks for nothing.
    fn drain(&mut self, r: u8) {
        const ROUNDS_MAX: usize = 64;
        for _ in 0..ROUNDS_MAX {
            let replica = self.replicas[r as usize].as_mut().expect("draining a running replica");
            let actions = replica.take_actions();
            let committed = replica.take_committed();
            for record in committed {
                self.on_committed(r, record.op, record.checksum);
            }
            if actions.is_empty() {
                return;
            }
            for action in actions {
                self.execute(r, action);
            }
        }
        panic!("replica {r} kept asking for actions");
    }

    fn execute(&mut self, r: u8, action: Action) {
        let disk = &mut self.disks[r as usize];
        match action {
            Action::Send { to, message } => {
                let frame_limit = frame_size_max_bytes(message.header.command, self.message_size_max_bytes);
                if message.header.size > frame_limit {
                    // The peer's connection decoder closes the connection on
                    // such a frame: it never arrives.
                    self.violations.push(format!(
                        "replica {r} sent replica {to} a {:?} frame of {} bytes, over its frame limit {frame_limit}",
                        message.header.command, message.header.size
                    ));
                    return;
                }
                let envelope = Envelope { from: Sender::Replica(r), to, message };
                self.sent.push(envelope.clone());
                self.queue.push(envelope);
            }
            Action::Reply { client, message } => {
                if message.header.operation == Operation::Register {
                    self.sessions.insert(client, message.header.context);
                }
                self.replies.push((client, message.header));
            }
            Action::WritePrepare { message } => {
                let header = message.header;
                disk.journal.insert(header.op, (header, message.body.to_vec()));
                disk.rotten.remove(&header.op);
                disk.rotten_named.remove(&header.op);
                let replica = self.replicas[r as usize].as_mut().expect("running");
                replica.on_prepare_durable(header.op, header.checksum);
            }
            Action::TruncateLog { after_op } => {
                disk.journal.retain(|op, _| *op <= after_op);
                disk.rotten.retain(|op| *op <= after_op);
                disk.rotten_named.retain(|op, _| *op <= after_op);
            }
            Action::WriteSuperblock { state } => {
                assert!(state.view >= disk.superblock.view, "the superblock's view never goes back");
                disk.superblock = state;
            }
            Action::Checkpoint { checkpoint } if self.checkpoints_held_for.contains(&r) => {
                self.checkpoints_held.push((r, checkpoint));
            }
            Action::Checkpoint { checkpoint } => {
                let through = checkpoint.anchor.op;
                disk.checkpoint = Some(checkpoint);
                disk.journal.retain(|op, _| *op > through);
                disk.rotten.retain(|op| *op > through);
                disk.rotten_named.retain(|op, _| *op > through);
                let replica = self.replicas[r as usize].as_mut().expect("running");
                replica.on_checkpoint_durable(through);
            }
        }
    }

    fn on_committed(&mut self, r: u8, op: u64, checksum: u128) {
        self.commits[r as usize].insert(op, checksum);
        match self.committed.get(&op) {
            None => {
                self.committed.insert(op, (r, checksum));
            }
            Some(&(first, theirs)) if theirs != checksum => {
                self.violations.push(format!("replica {r} committed op {op} differently from replica {first}"));
            }
            Some(_) => {}
        }
    }

    pub fn status(&self, r: u8) -> Status {
        self.replica(r).status()
    }
}

pub fn config(replica: u8, replica_count: u8, seed: u64) -> ReplicaConfig {
    ReplicaConfig {
        cluster: CLUSTER,
        namespace: NAMESPACE,
        replica,
        replica_count,
        journal_slot_count: JOURNAL_SLOT_COUNT,
        checkpoint_interval_ops: CHECKPOINT_INTERVAL_OPS,
        seed,
        client_sessions_max: shoal_vsr::sessions::CLIENT_SESSIONS_MAX,
        message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES,
        pipeline_prepares_max: shoal_vsr::replica::PIPELINE_PREPARES_MAX,
        checkpoint_chunks_per_answer_max: shoal_vsr::state_transfer::CHECKPOINT_CHUNKS_PER_ANSWER_MAX,
    }
}

pub fn client(index: u32) -> u128 {
    1_000 + u128::from(index)
}

/// Register `count` clients through `primary`, one committed op each.
pub fn register_clients(cluster: &mut Cluster, primary: u8, count: u32) {
    for index in 0..count {
        cluster.register(client(index), primary);
        cluster.deliver_all();
    }
}

/// Replica `r` is up and in normal status in `view`.
/// View 1 (primary R1) starts without R0, cut off from both peers, then
/// R0 comes back and installs view 1's start_view: all three Normal in
/// view 1, R0's log of it from R1's start_view.
pub fn start_view_1_without_r0_then_heal(cluster: &mut Cluster) {
    let all = [0, 1, 2];
    cluster.cut(&[0], &[1, 2]);
    let started = cluster.run_until(&[1, 2], 1_000, |c| normal_in(c, 1, 1) && normal_in(c, 2, 1));
    assert!(started, "R1 starts view 1 with R2");
    cluster.heal();
    let joined = cluster.run_until(&all, 1_000, |c| all.iter().all(|&r| normal_in(c, r, 1)));
    assert!(joined, "R0 installs view 1's start_view");
}

pub fn normal_in(cluster: &Cluster, r: u8, view: u64) -> bool {
    cluster.is_up(r) && cluster.replica(r).view() == view && cluster.replica(r).status() == Status::Normal
}
