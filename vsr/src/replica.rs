//! The VSR replica of one group: a synchronous state machine driven by events.
//!
//! Events in: a message received (`on_message`), a timer tick (`tick`).
//! Effects out: `Action`s, taken with `take_actions`, which the driver (a shard
//! task on the real server, the cluster driver in the simulator) executes **in
//! order**. Storage actions (`WritePrepare`, `TruncateLog`, `WriteSuperblock`,
//! `Checkpoint`) must be durable before any later action runs; if one fails,
//! the driver runs nothing after it and stops the replica (fail-stop), so a
//! message that depends on a write is never sent without it.
//!
//! Protocol: normal operation (request → prepare → prepare_ok → commit, with a
//! bounded pipeline and commit heartbeats), view change (start_view_change /
//! do_view_change / start_view, the canonical log chosen by `(log_view, op)`
//! and cut below any uncommitted prepare a nack quorum never acknowledged:
//! `DoViewChange::nacks`, `Replica::nacked_head`, `Replica::nack_floor`),
//! repair of missing headers and bodies through the hash chain, state transfer
//! from a checkpoint, and client sessions that apply each request once.
//!
//! Packed prepares (`crate::packed`): a request that finds the pipeline full
//! (`ReplicaConfig::pipeline_prepares_max`) waits in the request queue (one
//! per client); when a slot frees, the primary screens the queued requests
//! again (`screen_request`: sessions, one op per client in the pipeline) and
//! packs those that pass, in queue order, into one prepare (`take_pack`: at
//! most `PREPARE_REQUESTS_MAX`, within the group's message size). A prepare
//! of one request keeps the plain encoding. Commit applies a packed op's
//! requests one by one through the session table (`apply_request`), each
//! with its own reply and `Committed` record (`index` in the op), so a
//! register early in an op can evict a client whose request comes later in
//! it, exactly as across two ops. A client is in at most one prepare of the
//! pipeline and once per prepare, so `(op, client)` names a request; a
//! malformed packed body is refused where a prepare enters the log (`admit`,
//! `recover_log`), never met by `apply`.
//!
//! Must not touch I/O, time or entropy itself: time comes in with `tick`,
//! jitter from a seed given at construction.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use crate::header::{
    Command, DO_VIEW_CHANGE_PRESENT_BITS, DoViewChangeNacks, HEADER_SIZE_BYTES, Header, Operation, Refusal,
};
use crate::message::{Body, CheckpointChunk, Message, decode_headers, encode_headers};
use crate::packed::{
    self, PACKED_ENTRY_HEADER_SIZE_BYTES, PACKED_PREFIX_SIZE_BYTES, PREPARE_REQUESTS_MAX, PackedRequest,
};
use crate::sessions::{ClientSessions, RequestVerdict};
use crate::state_machine::{SnapshotError, SnapshotReader, StateMachine};
use crate::state_transfer::{CHECKPOINT_OTHER_SNAPSHOT_REFUSED_MAX, CheckpointAssembly, chunks_from};
use crate::timeout::Timeout;

/// The deepest pipeline a group may run (`ReplicaConfig::pipeline_prepares_max`
/// picks the depth; the journal reserves room for this many).
pub const PIPELINE_PREPARES_MAX: usize = 16;
/// Requests a primary holds while its pipeline is full, prepared in arrival
/// order as the pipeline drains (one per client: a retry replaces its queued
/// copy), packed several to a prepare (`crate::packed`). Past this bound a
/// request is refused with `Refusal::Busy` (counted as
/// `request_queue_full`): the client backs off and sends the same request
/// again.
pub const REQUEST_QUEUE_MAX: usize = 64;
/// Headers carried by do_view_change / start_view, and persisted as the view
/// headers of the superblock. Must cover every uncommitted op.
pub const VIEW_HEADERS_MAX: usize = 32;
pub const COMMIT_HEARTBEAT_TICKS: u64 = 5;
/// One tick of the clock `tick(now_ns)` is given: the server's shard loop
/// and the simulator both tick every 10 ms (their `TICK_NS` is this one).
pub const TICK_NS: u64 = 10_000_000;
/// A primary's commit heartbeat is also due once this much time passed
/// since its last one, however few ticks it got meanwhile. A shard whose
/// loop is held by its disk (a state transfer's fill of a partition log
/// appends and syncs inline) ticks once per hold, not once per 10 ms, so
/// counting ticks alone spread its heartbeats over five holds, while its
/// backups' timeouts ran on their own clocks: swarm seed 10006, a primary
/// held 76-184 ms at a time sent none for 430 ms and a healthy cluster
/// changed its view. Backups keep counting ticks: a held backup that
/// counted time would time out on the heartbeats still in its inbox.
pub const COMMIT_HEARTBEAT_NS: u64 = COMMIT_HEARTBEAT_TICKS * TICK_NS;
pub const PREPARE_RETRY_TICKS: u64 = 8;
pub const NORMAL_TIMEOUT_TICKS: u64 = 40;
pub const NORMAL_TIMEOUT_JITTER_TICKS: u64 = 20;
pub const VIEW_CHANGE_RETRY_TICKS: u64 = 10;
pub const VIEW_CHANGE_TIMEOUT_TICKS: u64 = 60;
/// The first view-change attempt's jitter window; it doubles per failed
/// attempt (`timeout::BACKOFF_EXPONENT_MAX` times at most).
pub const VIEW_CHANGE_JITTER_TICKS: u64 = 20;
pub const REPAIR_TICKS: u64 = 6;
/// Repair requests sent per repair round; bounds the burst a lagging replica makes.
pub const REPAIR_REQUESTS_MAX: usize = 8;
/// Valid journal prepares a restarted replica could not chain into its log
/// (typically: a rotten slot below them broke the hash chain), kept aside
/// by checksum until a canonical header claims them. They may be the only
/// copies of uncommitted ops the next view's log names (disk-rot seed
/// 32984). Every uncommitted op of a log fits in the view headers, so as
/// many as those cover is enough for the ops that matter; this bounds the
/// memory of bodies held outside the log.
pub const UNCHAINED_PREPARES_MAX: usize = VIEW_HEADERS_MAX;
/// Prepares of the current view a backup keeps when they arrive ahead of
/// the op they chain to (`Replica::ahead`): one repair round's requests,
/// which go to several peers and come back in any order. Bounds the bodies
/// held outside the log.
pub const AHEAD_PREPARES_MAX: usize = REPAIR_REQUESTS_MAX;
/// A primary whose pipeline waits this long on a body it cannot repair
/// (its only copies may be gone with a wiped disk) starts a view change,
/// so the do_view_changes' nacks can truncate what no quorum acknowledged.
pub const PRIMARY_ABDICATE_TICKS: u64 = 2 * NORMAL_TIMEOUT_TICKS;

/// The largest view-change frame: a do_view_change or start_view carries
/// up to `VIEW_HEADERS_MAX` headers after its own. It does not shrink with a
/// group's `message_size_max` (the view headers must cover every
/// uncommitted op), so replica connections accept at least this much.
pub const VIEW_FRAME_SIZE_MAX_BYTES: u32 = (HEADER_SIZE_BYTES * (1 + VIEW_HEADERS_MAX)) as u32;

/// The frame limit of a connection between replicas of groups whose
/// `message_size_max` is `message_size_max_bytes`: a prepare, a repair
/// answer or a state transfer chunk is within that size, a view change
/// frame within `VIEW_FRAME_SIZE_MAX_BYTES`. Clients keep the plain limit.
pub const fn replica_frame_size_max_bytes(message_size_max_bytes: u32) -> u32 {
    if message_size_max_bytes > VIEW_FRAME_SIZE_MAX_BYTES { message_size_max_bytes } else { VIEW_FRAME_SIZE_MAX_BYTES }
}

/// The largest frame of `command` between replicas of groups whose
/// `message_size_max` is `message_size_max_bytes`: only a view change frame
/// may be larger (`replica_frame_size_max_bytes`); a prepare, a repair
/// answer and a state transfer chunk are within the message size. The
/// connection decoder refuses more, and the simulator fails a seed that
/// sends more.
pub const fn frame_size_max_bytes(command: Command, message_size_max_bytes: u32) -> u32 {
    match command {
        Command::DoViewChange | Command::StartView => replica_frame_size_max_bytes(message_size_max_bytes),
        _ => message_size_max_bytes,
    }
}

// Every replica frame fits the protocol's own frame bound.
const _: () = assert!(VIEW_FRAME_SIZE_MAX_BYTES <= crate::header::MESSAGE_SIZE_MAX_BYTES);

// One packed prepare can take every queued request.
const _: () = assert!(PREPARE_REQUESTS_MAX >= REQUEST_QUEUE_MAX);

// A do_view_change says which of its headers' bodies its sender holds.
const _: () = assert!(VIEW_HEADERS_MAX < DO_VIEW_CHANGE_PRESENT_BITS);

/// Where a message came from, as the transport knows it (not as the header
/// claims it): a client cannot pose as a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Replica(u8),
    Client(u128),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Normal,
    ViewChange,
    /// Takes no part in view changes until a start_view brings it up to
    /// date: formatted after the group was created (`rejoining`), or
    /// restarted with a journal that lost an op above its log's head, so it
    /// cannot say how far it acknowledged (`lost_prepares_op_max`). A
    /// journal whose lost ops all lie at or below the head votes (see
    /// `Replica::start`).
    Recovering,
}

/// What survives a restart: read back by the driver from the superblock, the
/// checkpoint file and the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableState {
    pub view: u64,
    pub log_view: u64,
    /// Ops up to here were applied before the superblock was written.
    pub commit: u64,
    /// The headers of `log_view`'s log as installed (see `VIEW_HEADERS_MAX`).
    pub view_headers: Vec<Header>,
    /// Formatted after the cluster was created (a lost disk, a new machine):
    /// every promise the old disk held is forgotten, so the replica may not
    /// vote or acknowledge until it installed a start_view of a view at
    /// least as new as a quorum of peers reports. Cleared by that install.
    pub rejoining: bool,
    /// This replica may have acknowledged prepares at or below this op that
    /// its disk no longer holds: its do_view_changes nack nothing there
    /// (see `Replica::nack_floor`). Never goes down.
    pub nack_floor: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub anchor: Header,
    pub snapshot: Vec<u8>,
}

/// Checkpoints a replica keeps in memory while the node makes them durable
/// (`Replica::on_checkpoint_durable`): one runs per group at a time, so a
/// few cover a node whose checkpoints queue behind a slow disk.
pub const CHECKPOINTS_NOT_DURABLE_MAX: usize = 4;

/// A checkpoint as a lagging peer receives it: the anchor and the snapshot
/// with its checksum (sent with every chunk).
#[derive(Debug, Clone)]
struct ServableCheckpoint {
    anchor: Header,
    snapshot: Rc<[u8]>,
    snapshot_checksum: u128,
}

impl ServableCheckpoint {
    fn new(checkpoint: &Checkpoint) -> Self {
        let snapshot = &checkpoint.snapshot;
        assert!(
            snapshot.len() as u64 <= crate::state_transfer::CHECKPOINT_SNAPSHOT_SIZE_MAX_BYTES,
            "a snapshot of {} bytes could never be sent to a lagging peer",
            snapshot.len()
        );
        Self {
            anchor: checkpoint.anchor,
            snapshot: Rc::from(snapshot.as_slice()),
            snapshot_checksum: crate::header::checksum(snapshot),
        }
    }
}

/// Everything the driver read back at start-up.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub durable: DurableState,
    pub checkpoint: Option<Checkpoint>,
    /// Valid journal entries, any order.
    pub entries: Vec<(Header, Vec<u8>)>,
    /// Ops the journal found written and then damaged (corrupt in their
    /// slot, or left out of a settled drain), ascending: this replica may
    /// have acknowledged them and holds no body for them. Empty: intact.
    pub faulty_ops: Vec<u64>,
    /// The headers of faulty ops the journal still knows (their copy names
    /// them and the slot does not contradict it), any order: kept in the
    /// log without a body, under the same rules as `entries`, so one lost
    /// body does not cut the log short below valid prepares.
    pub faulty_headers: Vec<Header>,
}

impl Recovered {
    /// The journal lost prepares it may have acknowledged.
    pub fn journal_faulty(&self) -> bool {
        !self.faulty_ops.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send to a peer replica.
    Send {
        to: u8,
        message: Message,
    },
    /// Send to a client.
    Reply {
        client: u128,
        message: Message,
    },
    /// Append the prepare to the journal and fsync it.
    WritePrepare {
        message: Message,
    },
    /// Drop every journal entry above `after_op`.
    TruncateLog {
        after_op: u64,
    },
    WriteSuperblock {
        state: DurableState,
    },
    /// Persist the checkpoint, then drain the journal through `checkpoint.anchor.op`.
    Checkpoint {
        checkpoint: Checkpoint,
    },
}

/// A committed request, reported to the driver (and the simulator's
/// checkers): one per request a committed op carries, in apply order, so a
/// packed op reports several with the same `op` and `checksum`, and
/// `(op, index)` or `(op, client)` names one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub op: u64,
    pub checksum: u128,
    /// The request's place in its op: 0 for the only request of a plain
    /// prepare, 0.. for the requests of a packed one.
    pub index: u32,
    pub operation: Operation,
    pub client: u128,
    pub request: u64,
    /// False when a duplicate was filtered by the session table.
    pub applied: bool,
    pub reply: Vec<u8>,
    /// The op that registered the client's session as of this op (0: none):
    /// request numbers count within one session.
    pub session: u64,
    /// A register that found the table full evicted this client.
    pub evicted: Option<u128>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaConfig {
    pub cluster: u128,
    pub namespace: u64,
    pub replica: u8,
    pub replica_count: u8,
    /// The journal's slot count: no more than this many ops may live past
    /// the checkpoint.
    pub journal_slot_count: u64,
    /// Checkpoint every this many commits.
    pub checkpoint_interval_ops: u64,
    /// Seeds the timeout jitter.
    pub seed: u64,
    /// The session table's size; the same on every replica of the cluster
    /// (a checkpoint with more sessions is refused).
    pub client_sessions_max: usize,
    /// The group's journal slot size, header included: a packed prepare
    /// never grows past it.
    pub message_size_max_bytes: u32,
    /// Prepares a primary keeps in flight before it queues requests (and
    /// then packs them): `PIPELINE_PREPARES_MAX` on a server; the simulator
    /// draws shallower pipelines so a few clients fill them.
    pub pipeline_prepares_max: usize,
    /// Checkpoint chunks one answer to a catch-up request carries:
    /// `CHECKPOINT_CHUNKS_PER_ANSWER_MAX` on a server; the simulator also
    /// draws 1, so its small snapshots take several answers too.
    pub checkpoint_chunks_per_answer_max: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    header: Header,
    /// Present once the prepare is durable in this replica's journal.
    body: Option<Body>,
}

#[derive(Debug, Clone)]
struct Pipelined {
    op: u64,
    checksum: u128,
    oks: BTreeSet<u8>,
    /// The clients whose requests the prepare carries, when known (the
    /// primary made it); `None` after a view change: read from the log.
    clients: Option<Vec<u128>>,
}

#[derive(Debug, Clone)]
struct DoViewChange {
    log_view: u64,
    op: u64,
    commit_max: u64,
    headers: Vec<Header>,
    /// `None`: the sender stated no nacks, and so nacks nothing.
    nacks: Option<DoViewChangeNacks>,
}

impl DoViewChange {
    /// The sender is certain it never acknowledged `prepare`, so a quorum
    /// that acknowledged it cannot have included the sender.
    ///
    /// A prepare_ok leaves only once the prepare is durable here, and a
    /// durable prepare leaves this replica's log only when a view change or
    /// the hash chain shows it is not part of the canonical history (then
    /// it was never committed, and nacking it is harmless), or with a
    /// checkpoint (at or below a commit). The two ways to lose a prepare
    /// that may have counted toward a quorum, a wiped disk and a faulty
    /// slot, raise the sender's `floor`: nothing at or below it is nacked.
    /// Ops below the lowest header sent are not described, so not nacked.
    fn nacks(&self, prepare: &Header) -> bool {
        let Some(nacks) = self.nacks else { return false };
        let op = prepare.op;
        if op <= nacks.floor || op <= self.commit_max {
            return false;
        }
        if self.headers.last().is_some_and(|lowest| op < lowest.op) {
            return false;
        }
        match self.headers.iter().position(|h| h.op == op) {
            // Another prepare at `op`, or this one without its body.
            Some(index) => self.headers[index].checksum != prepare.checksum || nacks.present & (1 << index) == 0,
            // Nothing at `op`: a gap in the sender's log, or above its head.
            None => true,
        }
    }

    /// The sender holds `prepare`'s body (or stated nothing, so may).
    fn holds(&self, prepare: &Header) -> bool {
        let Some(nacks) = self.nacks else { return true };
        self.headers
            .iter()
            .position(|h| h.op == prepare.op)
            .is_some_and(|index| self.headers[index].checksum == prepare.checksum && nacks.present & (1 << index) != 0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    pub view_changes: u64,
    pub prepares_sent: u64,
    pub repairs_requested: u64,
    pub state_transfers: u64,
    /// Canonical logs (from a view change or start_view) refused because they
    /// contradict ops this replica committed. Never happens in a correct
    /// cluster: the simulator treats it as an agreement violation, the server
    /// survives it.
    pub committed_conflicts: u64,
    /// Why the last canonical log was refused (for reports).
    pub last_conflict: Option<String>,
    /// Messages dropped, by reason.
    pub drops: BTreeMap<&'static str, u64>,
}

#[derive(Debug)]
pub struct Replica<S: StateMachine> {
    config: ReplicaConfig,
    /// Votes that decide anything: `replica_count / 2 + 1`.
    quorum: usize,
    /// `Recovering` while `rejoining` or after a journal lost an op above
    /// its log's head (`lost_prepares_op_max`): sends no vote, no
    /// prepare_ok, no reply.
    status: Status,
    /// The view this replica promised: it never goes back, and is durable
    /// (superblock) before any message that claims it leaves.
    view: u64,
    /// The view whose log this replica holds. Invariant: `log_view <= view`.
    log_view: u64,
    /// The head of the log. Invariant: `checkpoint_op <= op` and
    /// `op - checkpoint_op <= journal_slot_count`.
    op: u64,
    /// Applied through here. Invariant: `checkpoint_op <= commit_min <= commit_max`.
    commit_min: u64,
    /// Known committed through here (by a quorum of some view).
    commit_max: u64,
    /// Ops up to here live only in the checkpoint, not in `log`.
    checkpoint_op: u64,
    /// The commit the superblock last recorded: it never goes back, even
    /// while a restarted replica has not yet replayed that far.
    superblock_commit: u64,
    /// The header of `checkpoint_op`: the hash chain's anchor below `log`.
    checkpoint_anchor: Header,
    /// The newest checkpoint the node reported durable on this replica's
    /// disk (or the one recovered at open): the only one served to lagging
    /// peers. A checkpoint still being written may never reach the disk
    /// (its partition log sync can fail), and a peer that installed it
    /// would drop its own journal's copy of the ops it covers (swarm seed
    /// 9620: every replica lost committed offset 32 that way).
    checkpoint_served: Option<ServableCheckpoint>,
    /// Checkpoints handed to the node (`Action::Checkpoint`) and not yet
    /// reported durable (`on_checkpoint_durable`), oldest first. Bounded by
    /// `CHECKPOINTS_NOT_DURABLE_MAX`: the oldest is forgotten past it (a
    /// newer one will be served once durable).
    checkpoints_not_durable: VecDeque<ServableCheckpoint>,
    /// The chunks of a newer checkpoint a peer is sending, until every
    /// byte is here (`state_transfer`). Invariant: its anchor is above
    /// `commit_min` whenever it is kept.
    checkpoint_assembly: Option<CheckpointAssembly>,
    /// Chunks of another snapshot of the assembling checkpoint refused
    /// since the assembly last took one (bounded by
    /// `CHECKPOINT_OTHER_SNAPSHOT_REFUSED_MAX`).
    checkpoint_other_snapshot_refused: u32,
    /// Ops above `checkpoint_op`. Invariant: no key above `op`; a body is
    /// present only once durable in this replica's journal.
    log: BTreeMap<u64, Entry>,
    /// Valid prepares read back from the journal at restart that the log
    /// could not vouch for, by checksum (see `UNCHAINED_PREPARES_MAX`).
    /// Invariants: at most `UNCHAINED_PREPARES_MAX` entries, each keyed by
    /// its own header's checksum. Never vouched for: no prepare_ok, view
    /// headers or do_view_change names them while they sit here. One enters
    /// the log only through `insert_prepare`, as a peer's repair answer
    /// would, once the log holds a header with its checksum (a canonical
    /// header from a view change, start_view or repair) or a child naming
    /// it as parent; it is then written to the journal again before any
    /// prepare_ok for it leaves. Filled by `recover_log` (at most
    /// `UNCHAINED_PREPARES_MAX`) and by `install_log` (the unvouched
    /// entries it drops from the log); at most `unchained_max()` in all.
    unchained: BTreeMap<u128, Message>,
    /// Backup in Normal: prepares of the current view that arrived ahead of
    /// their parent (above `op + 1`), by op. A repair round asks its peers
    /// in turn for the ops after the head, so the answers come back from
    /// several peers in any order; dropped, every answer but the next op's
    /// was asked again a repair round later, and a backup that was behind
    /// by a few ops gained one or two per round (the shrunk config of swarm
    /// seed 90: 0.66 s behind its primary in a quiet period). They enter
    /// the log only through `insert_prepare` once the op below chains
    /// (`adopt_ahead`), under the same rule as any prepare of the view:
    /// never vouched for, acknowledged or written while here. Invariants:
    /// at most `AHEAD_PREPARES_MAX`, each keyed by its own op.
    ahead: BTreeMap<u64, Message>,
    /// Primary in Normal: the prepares above `commit_max` awaiting a quorum,
    /// in op order. Invariant: at most `VIEW_HEADERS_MAX` entries.
    pipeline: VecDeque<Pipelined>,
    /// Requests waiting for room in the pipeline (primary only; every one is
    /// checked again by `on_request` when it leaves the queue).
    request_queue: VecDeque<Message>,
    /// Set by the driver for a batch of events it handles together (the
    /// node's turn, whose prepares share one journal flush): requests wait
    /// in the queue even with room in the pipeline, and leave packed at
    /// the batch's end (`prepare_deferred`), so those that arrive together
    /// share one op instead of taking one op each.
    requests_deferred: bool,
    /// View change: replicas that voted for `view` (start_view_change).
    svc_from: BTreeSet<u8>,
    /// View change, new primary: the do_view_changes received for `view`.
    dvc_from: BTreeMap<u8, DoViewChange>,
    /// This replica sent its do_view_change for `view`.
    dvc_sent: bool,
    /// Ticks since this replica started (statistics and jitter only).
    ticks: u64,
    /// The clock as of the last tick; never goes back within one life.
    now_ns: u64,
    /// The newest prepare timestamp this replica made or holds: the next
    /// prepare's timestamp is above it, across restarts too.
    last_timestamp: u64,
    /// Backup: fires when the primary was silent too long (reset on contact).
    normal_timeout: Timeout,
    /// View change: fires when the view did not start in time; backs off.
    view_change_timeout: Timeout,
    /// Periodic: commit heartbeats (primary).
    commit_heartbeat_timeout: Timeout,
    /// When the last commit heartbeat was sent (`COMMIT_HEARTBEAT_NS`).
    commit_heartbeat_sent_ns: u64,
    /// Periodic: resend unacknowledged prepares (primary).
    prepare_retry_timeout: Timeout,
    /// Periodic: resend view-change votes; recovering replicas' probes.
    view_change_retry_timeout: Timeout,
    /// Periodic: ask peers for missing headers and bodies.
    repair_timeout: Timeout,
    /// Repair rounds sent in this life: each round asks the next peer in
    /// turn (`repair_target`).
    repair_rounds: u64,
    /// The primary's op as last heard (commit heartbeats, prepares).
    primary_op: u64,
    /// The highest op this view's primary has shown this backup, in its
    /// own prepares and heartbeats (not `primary_op`, which any late
    /// prepare may raise): only a frame above it, or a heartbeat at it,
    /// says the primary is alive now and resets the normal timeout.
    primary_shown_op: u64,
    /// See `DurableState::rejoining`. Invariant: implies `Status::Recovering`.
    rejoining: bool,
    /// Echoed by peers' answers to this rejoin, so an answer to an older
    /// rejoin (a stale redelivery) cannot vouch for the current view.
    rejoin_nonce: u64,
    /// The view each peer reported for `rejoin_nonce`.
    rejoin_views: BTreeMap<u8, u64>,
    /// The highest head any peer reported for `rejoin_nonce`: a committed
    /// op the lost disk acknowledged is held by a quorum, which shares a
    /// replica with any quorum of answers, so it is at or below this.
    rejoin_op_max: u64,
    /// Durable (superblock): this replica may have acknowledged prepares at
    /// or below this op that it no longer holds, so it may not nack them.
    /// A wiped disk forgot every prepare_ok its earlier incarnation sent;
    /// only the committed ones matter (nacking an op that was never
    /// committed truncates nothing committed), and each of those is at or
    /// below the head of the start_view it rejoined through (a committed
    /// op is in every later view's log) and at or below the highest head
    /// its rejoin probe's answers reported (`rejoin_op_max`; this one holds
    /// even if that start_view was a stale redelivery). A faulty slot
    /// likewise: the floor covers every op the journal named at restart,
    /// faulty ones included (at restart when they all lie at or below the
    /// log's head, else with the start_view that ends the `Recovering`
    /// they caused). Never goes down.
    nack_floor: u64,
    /// Restarted with a journal that lost an op above its log's head: a
    /// prepare it acknowledged may be lost, and its log cannot say which.
    /// The highest op its disk named at restart; the start_view that ends
    /// its `Recovering` raises the floor to it (and to its own head).
    /// Invariant: `Some` only while `Recovering`.
    lost_prepares_op_max: Option<u64>,
    /// Restarted with faulty slots at or below its log's head, voting
    /// despite them: the highest faulty op (0: none). Only says when its
    /// disk is whole again (`repairing_faulty_slots`).
    faulty_op_max: u64,
    /// Primary in Normal: runs while a pipeline op's body is missing here.
    primary_abdicate_timeout: Timeout,
    sessions: ClientSessions,
    state_machine: S,
    prng: u64,
    actions: Vec<Action>,
    committed: Vec<Committed>,
    stats: ReplicaStats,
}

/// The header of op 0: the same on every replica of a group.
pub fn root_header(cluster: u128, namespace: u64) -> Header {
    let mut header = Header::new(Command::Prepare, cluster);
    header.namespace = namespace;
    header.operation = Operation::Root;
    header.set_checksums(&[]);
    header
}

impl<S: StateMachine> Replica<S> {
    /// A replica of a new group (empty disk).
    pub fn new(config: ReplicaConfig, state_machine: S) -> Replica<S> {
        let recovered = Recovered {
            durable: DurableState {
                view: 0,
                log_view: 0,
                commit: 0,
                view_headers: Vec::new(),
                rejoining: false,
                nack_floor: 0,
            },
            checkpoint: None,
            entries: Vec::new(),
            faulty_ops: Vec::new(),
            faulty_headers: Vec::new(),
        };
        let replica = Replica::start(config, state_machine, recovered, false).expect("an empty disk recovers");
        assert!(replica.view == 0 && replica.status == Status::Normal, "a new group starts in view 0");
        assert!(replica.actions.is_empty());
        replica
    }

    /// A replica whose disk was formatted after the group was created (VR
    /// Revisited's recovery problem): it starts `Recovering` and takes part
    /// in nothing until it learned the current view from a quorum of peers
    /// and installed that view's start_view. The caller persists
    /// `rejoining` in the superblock first, so a crash before the rejoin
    /// completes restarts it rejoining again.
    pub fn rejoin(config: ReplicaConfig, state_machine: S) -> Replica<S> {
        let recovered = Recovered {
            durable: DurableState {
                view: 0,
                log_view: 0,
                commit: 0,
                view_headers: Vec::new(),
                rejoining: true,
                nack_floor: 0,
            },
            checkpoint: None,
            entries: Vec::new(),
            faulty_ops: Vec::new(),
            faulty_headers: Vec::new(),
        };
        let replica = Replica::start(config, state_machine, recovered, true).expect("an empty disk recovers");
        assert!(replica.status == Status::Recovering && replica.rejoining);
        replica
    }

    /// A replica restarted from what its disk kept. Even an empty disk is a
    /// restart here: the cluster may have moved on while this replica was
    /// down, so a restarted primary never resumes its old view.
    pub fn open(config: ReplicaConfig, state_machine: S, recovered: Recovered) -> Result<Replica<S>, SnapshotError> {
        Replica::start(config, state_machine, recovered, true)
    }

    fn start(
        config: ReplicaConfig,
        state_machine: S,
        recovered: Recovered,
        restarted: bool,
    ) -> Result<Replica<S>, SnapshotError> {
        assert!(config.replica < config.replica_count);
        assert!(config.journal_slot_count as usize > VIEW_HEADERS_MAX + PIPELINE_PREPARES_MAX);
        assert!((1..=PIPELINE_PREPARES_MAX).contains(&config.pipeline_prepares_max));
        assert!(config.checkpoint_interval_ops > 0);
        assert!(config.checkpoint_interval_ops + (VIEW_HEADERS_MAX as u64) < config.journal_slot_count);
        let root = root_header(config.cluster, config.namespace);
        let mut replica = Replica {
            config,
            quorum: config.replica_count as usize / 2 + 1,
            status: Status::Normal,
            view: recovered.durable.view,
            log_view: recovered.durable.log_view,
            op: 0,
            commit_min: 0,
            commit_max: 0,
            checkpoint_op: 0,
            superblock_commit: recovered.durable.commit,
            checkpoint_anchor: root,
            checkpoint_served: None,
            checkpoints_not_durable: VecDeque::new(),
            checkpoint_assembly: None,
            checkpoint_other_snapshot_refused: 0,
            log: BTreeMap::new(),
            unchained: BTreeMap::new(),
            ahead: BTreeMap::new(),
            pipeline: VecDeque::new(),
            request_queue: VecDeque::new(),
            requests_deferred: false,
            svc_from: BTreeSet::new(),
            dvc_from: BTreeMap::new(),
            dvc_sent: false,
            ticks: 0,
            now_ns: 0,
            last_timestamp: 0,
            normal_timeout: Timeout::new("normal", NORMAL_TIMEOUT_TICKS, NORMAL_TIMEOUT_JITTER_TICKS),
            view_change_timeout: Timeout::new("view_change", VIEW_CHANGE_TIMEOUT_TICKS, VIEW_CHANGE_JITTER_TICKS),
            commit_heartbeat_timeout: Timeout::new("commit_heartbeat", COMMIT_HEARTBEAT_TICKS, 0),
            commit_heartbeat_sent_ns: 0,
            prepare_retry_timeout: Timeout::new("prepare_retry", PREPARE_RETRY_TICKS, 0),
            view_change_retry_timeout: Timeout::new("view_change_retry", VIEW_CHANGE_RETRY_TICKS, 0),
            repair_timeout: Timeout::new("repair", REPAIR_TICKS, 0),
            repair_rounds: 0,
            primary_op: 0,
            primary_shown_op: 0,
            rejoining: recovered.durable.rejoining,
            rejoin_nonce: 0,
            rejoin_views: BTreeMap::new(),
            rejoin_op_max: 0,
            nack_floor: recovered.durable.nack_floor,
            lost_prepares_op_max: None,
            faulty_op_max: 0,
            primary_abdicate_timeout: Timeout::new("primary_abdicate", PRIMARY_ABDICATE_TICKS, 0),
            sessions: ClientSessions::with_capacity(config.client_sessions_max),
            state_machine,
            prng: config.seed ^ 0x9E37_79B9_7F4A_7C15 ^ u64::from(config.replica),
            actions: Vec::new(),
            committed: Vec::new(),
            stats: ReplicaStats::default(),
        };
        for timeout in [
            &mut replica.commit_heartbeat_timeout,
            &mut replica.prepare_retry_timeout,
            &mut replica.view_change_retry_timeout,
            &mut replica.repair_timeout,
        ] {
            timeout.start(0);
        }
        let random = replica.next_random();
        replica.normal_timeout.start(random);
        // Never zero: zero marks a request_start_view that is no rejoin probe.
        replica.rejoin_nonce = replica.next_random() | 1;
        if let Some(checkpoint) = recovered.checkpoint {
            replica.restore_checkpoint(&checkpoint)?;
            // Read back from this replica's disk: durable.
            replica.checkpoint_served = Some(ServableCheckpoint::new(&checkpoint));
        }
        let journal_faulty = !recovered.faulty_ops.is_empty();
        // The journal's head: the highest op it names, valid or faulty (a
        // faulty op may be the very one it acknowledged last).
        let journal_op_max = recovered
            .entries
            .iter()
            .map(|(header, _)| header.op)
            .chain(recovered.faulty_ops.iter().copied())
            .max()
            .unwrap_or(0);
        assert!(
            recovered.faulty_headers.iter().all(|header| recovered.faulty_ops.contains(&header.op)),
            "a faulty header names a faulty op"
        );
        replica.recover_log(&recovered.durable, recovered.entries, &recovered.faulty_headers);
        // A faulty journal whose head the log reaches (every op it names,
        // faulty ones included, is at or below the log's head) lost bodies,
        // not the knowledge of how far it acknowledged: a prepare_ok left
        // only once its prepare was durable, and a durable prepare's damage
        // reads faulty, never as a torn tail (see `journal`), so no op it
        // acknowledged in `log_view` lies above the head, and the log's
        // headers up to it are `log_view`'s, as after any restart. It votes
        // (TigerBeetle's replicas with faulty WAL slots below a certain head
        // do): its do_view_changes name that log, mark the lost bodies as
        // not held (`do_view_change_nacks`), and nack nothing through the
        // head (the floor, durable before any vote). A lost op above the
        // head may have been acknowledged and no header here names it: that
        // replica waits in `Recovering` for a start_view (swarm seed 6194
        // wedged with two replicas of three parked there although both
        // heads were certain).
        // (A rejoining replica votes for nothing anyway, and a single
        // replica has no peer to repair from: both keep waiting.)
        let head_certain = journal_op_max <= replica.op;
        let faulty_voter = journal_faulty && head_certain && !replica.rejoining && replica.config.replica_count > 1;
        if journal_faulty && !faulty_voter {
            replica.lost_prepares_op_max = Some(journal_op_max.max(replica.op));
        }
        if faulty_voter {
            replica.nack_floor = replica.nack_floor.max(replica.op);
            replica.faulty_op_max = journal_op_max.min(replica.op);
        }
        // Timestamps never go back, across restarts too: the clock of the
        // next life may start lower than the last prepare's timestamp.
        replica.last_timestamp = replica.newest_timestamp();
        replica.status = if replica.lost_prepares_op_max.is_some() || replica.rejoining {
            Status::Recovering
        } else if replica.view > replica.log_view {
            Status::ViewChange
        } else {
            Status::Normal
        };
        if replica.status == Status::ViewChange {
            replica.svc_from.insert(config.replica);
            let random = replica.next_random();
            replica.view_change_timeout.start(random);
        }
        if faulty_voter {
            crate::marks::hit(crate::marks::FAULTY_JOURNAL_VOTES);
            assert!(replica.status != Status::Recovering);
            assert!(replica.nack_floor >= journal_op_max, "nacks nothing the lost slots may have held");
            // The raised floor is durable before any vote that relies on it.
            replica.write_superblock();
        }
        if replica.config.replica_count == 1 {
            // A single replica is its own quorum: every prepare it made
            // durable was committed, whether or not the superblock says so.
            replica.commit_max = replica.commit_max.max(replica.op);
            replica.commit_journal();
        }
        if restarted && replica.status == Status::Normal && replica.is_primary() && replica.config.replica_count > 1 {
            // A restarted primary lost its pipeline's prepare_oks; let a view
            // change rebuild them rather than guess.
            replica.start_view_change(replica.view + 1);
        }
        replica.check_invariants();
        Ok(replica)
    }

    // --- accessors -------------------------------------------------------------

    pub fn replica(&self) -> u8 {
        self.config.replica
    }
    pub fn status(&self) -> Status {
        self.status
    }
    /// Formatted after the group was created and not yet rejoined.
    pub fn is_rejoining(&self) -> bool {
        self.rejoining
    }
    /// Every committed op this replica may have acknowledged and lost (a
    /// wiped disk, a faulty journal) is at or below this (`nack_floor`);
    /// 0 for a replica that never lost any. Once a rejoin completed, an op
    /// above it was committed after the disk was lost.
    pub fn nack_floor(&self) -> u64 {
        self.nack_floor
    }
    pub fn view(&self) -> u64 {
        self.view
    }
    pub fn log_view(&self) -> u64 {
        self.log_view
    }
    pub fn op(&self) -> u64 {
        self.op
    }
    pub fn commit_min(&self) -> u64 {
        self.commit_min
    }
    pub fn commit_max(&self) -> u64 {
        self.commit_max
    }
    pub fn checkpoint_op(&self) -> u64 {
        self.checkpoint_op
    }
    pub fn is_primary(&self) -> bool {
        self.primary_index(self.view) == self.config.replica
    }
    pub fn primary_index(&self, view: u64) -> u8 {
        (view % u64::from(self.config.replica_count)) as u8
    }
    /// The primary's pipeline holds an op whose body this replica lacks (a
    /// view change installed its header; the body was lost with a faulty
    /// slot or a wiped disk): it repairs, and abdicates after
    /// `PRIMARY_ABDICATE_TICKS` if no peer has the body.
    pub fn pipeline_waits_on_body(&self) -> bool {
        self.pipeline.iter().any(|p| !self.has_body(p.op))
    }

    /// Prepares awaiting a quorum (primary only).
    pub fn pipeline_len(&self) -> usize {
        self.pipeline.len()
    }
    /// The pipeline as (op, prepare_oks), for reports.
    pub fn pipeline_summary(&self) -> Vec<(u64, usize)> {
        self.pipeline.iter().map(|p| (p.op, p.oks.len())).collect()
    }
    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }
    pub fn state_machine(&self) -> &S {
        &self.state_machine
    }
    /// For the driver's I/O on the state machine (persisting, reads, repair);
    /// never to change what it applied.
    pub fn state_machine_mut(&mut self) -> &mut S {
        &mut self.state_machine
    }
    pub fn sessions(&self) -> &ClientSessions {
        &self.sessions
    }
    /// The header at `op`, if this replica holds it.
    pub fn header(&self, op: u64) -> Option<&Header> {
        if op == self.checkpoint_op {
            return Some(&self.checkpoint_anchor);
        }
        self.log.get(&op).map(|entry| &entry.header)
    }
    pub fn has_body(&self, op: u64) -> bool {
        self.log.get(&op).is_some_and(|entry| entry.body.is_some())
    }
    /// Timer ticks handled in this life. 0: the replica has handled no
    /// event yet (a restarted process still opening its storage).
    pub fn ticks(&self) -> u64 {
        self.ticks
    }
    /// The floor this replica's next do_view_change states: it nacks no op
    /// at or below it (`nack_floor`, raised by the prepares kept aside that
    /// its log did not replace). The simulator's fault model reads it to
    /// place disk losses the nack protocol can still recover from.
    pub fn do_view_change_nack_floor(&self) -> u64 {
        self.do_view_change_nacks(&self.view_headers()).floor
    }
    /// Restarted with faulty journal slots it votes despite (`start`), and
    /// still lacks the body of an op at or below the highest of them that it
    /// has not applied: its disk is not whole again until repair brings
    /// them back. The simulator's fault model counts it as impaired, as it
    /// counts a `Recovering` replica.
    pub fn repairing_faulty_slots(&self) -> bool {
        let top = self.faulty_op_max.min(self.op);
        (self.commit_min + 1..=top).any(|op| !self.has_body(op))
    }
    /// How many do_view_changes must nack a prepare before a view change
    /// may truncate it (see `nack_quorum`).
    pub fn nack_quorum_count(&self) -> usize {
        self.nack_quorum()
    }
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }
    pub fn take_committed(&mut self) -> Vec<Committed> {
        std::mem::take(&mut self.committed)
    }

    // --- events ----------------------------------------------------------------

    pub fn tick(&mut self, now_ns: u64) {
        assert!(now_ns >= self.now_ns, "time goes forward");
        self.now_ns = now_ns;
        self.ticks += 1;
        for timeout in [
            &mut self.normal_timeout,
            &mut self.view_change_timeout,
            &mut self.commit_heartbeat_timeout,
            &mut self.prepare_retry_timeout,
            &mut self.view_change_retry_timeout,
            &mut self.repair_timeout,
            &mut self.primary_abdicate_timeout,
        ] {
            timeout.tick();
        }
        match self.status {
            Status::Normal if self.is_primary() => self.tick_primary(),
            Status::Normal => self.tick_backup(),
            Status::ViewChange => self.tick_view_change(),
            Status::Recovering if self.rejoining => {
                if Self::periodic(&mut self.view_change_retry_timeout) {
                    // A probe: every peer answers with its view, the primary
                    // also with start_view.
                    let mut probe = self.new_header(Command::RequestStartView);
                    probe.context = self.rejoin_nonce;
                    probe.set_checksums(&[]);
                    self.broadcast(&Message::empty(probe));
                    if self.rejoin_view().is_some_and(|reported| reported < self.view) {
                        // Rejoining with promises kept (its checkpoint was
                        // lost, its superblock was not): it voted for a view
                        // the cluster never reached and may not go below it.
                        // Move the cluster up to it, as a `Recovering`
                        // replica does; the vote is durable, and it sends no
                        // do_view_change (`Recovering`), so it vouches for
                        // no log.
                        crate::marks::hit(crate::marks::REJOIN_ABOVE_CLUSTER_VIEW);
                        self.broadcast_empty(Command::StartViewChange);
                    }
                }
            }
            Status::Recovering => {
                if Self::periodic(&mut self.view_change_retry_timeout) {
                    self.broadcast_empty(Command::RequestStartView);
                    // If the cluster is behind our view (we had joined a view
                    // change that never finished), move it up to our view; a
                    // primary already there answers with start_view.
                    self.broadcast_empty(Command::StartViewChange);
                }
            }
        }
        if Self::periodic(&mut self.repair_timeout) && self.status != Status::ViewChange {
            self.repair();
        }
        // A deferred checkpoint (`maybe_checkpoint`) is retried here too: a
        // primary whose journal is full commits nothing more to retry it on
        // (disk-rot seed 5174 stalled with every replica Normal).
        self.maybe_checkpoint();
        self.check_invariants();
    }

    /// A periodic timeout fired: true once per period.
    fn periodic(timeout: &mut Timeout) -> bool {
        let fired = timeout.fired();
        if fired {
            timeout.reset();
        }
        fired
    }

    pub fn on_message(&mut self, source: Source, message: Message) {
        if let Err(reason) = self.admit(source, &message) {
            self.drop_message(reason);
            return;
        }
        let header = message.header;
        match header.command {
            Command::Request => self.on_request(message),
            Command::Prepare => self.on_prepare(message),
            Command::PrepareOk => self.on_prepare_ok(&header),
            Command::Commit => self.on_commit(&header),
            Command::StartViewChange => self.on_start_view_change(&header),
            Command::DoViewChange => self.on_do_view_change(&message),
            Command::StartView => self.on_start_view(&message),
            Command::RequestStartView => self.on_request_start_view(&header),
            Command::RequestPrepare => self.on_request_prepare(&header),
            Command::Checkpoint => self.on_checkpoint(&message),
            Command::RejoinView => self.on_rejoin_view(&header),
            Command::Ping | Command::Pong | Command::Reply | Command::Eviction => {
                self.drop_message("unexpected_command")
            }
            // State data moves beside the protocol: the driver serves it.
            Command::RequestStateData | Command::StateData => self.drop_message("state_data_for_driver"),
            // Reads are served by the node from the partition log, outside
            // consensus; a refusal is the node's answer to a client.
            Command::Read | Command::ReadReply | Command::Refused => self.drop_message("read_for_driver"),
            Command::Headers => self.on_checkpoint_anchor(&message),
            Command::RequestHeaders | Command::RequestCheckpoint => self.drop_message("unsupported_command"),
        }
        self.check_invariants();
    }

    /// Reject what no correct peer sends: another cluster or group, a client
    /// posing as a replica, a replica index out of range.
    fn admit(&self, source: Source, message: &Message) -> Result<(), &'static str> {
        let header = &message.header;
        if header.cluster != self.config.cluster {
            return Err("wrong_cluster");
        }
        if header.namespace != self.config.namespace {
            return Err("wrong_namespace");
        }
        // A body the bus decoder verified is not hashed again (see
        // `Message::valid_body`): only the header's own checksum is.
        if !header.valid_checksum() || !message.valid_body() {
            return Err("bad_checksum");
        }
        match source {
            Source::Client(client) => {
                if header.command != Command::Request {
                    return Err("client_posing_as_replica");
                }
                if header.client != client || client == 0 {
                    return Err("client_id_mismatch");
                }
            }
            Source::Replica(replica) => {
                // A prepare names the primary that made it, whoever relays it
                // (repair): its checksum and the hash chain vouch for it.
                let relayed = header.command == Command::Prepare;
                if replica >= self.config.replica_count || (header.replica != replica && !relayed) {
                    return Err("replica_id_mismatch");
                }
                if replica == self.config.replica {
                    return Err("message_from_self");
                }
                if header.command == Command::Request {
                    return Err("request_from_replica");
                }
            }
        }
        if header.command == Command::Prepare && header.op == 0 {
            return Err("impossible_op");
        }
        if header.command == Command::Prepare && header.operation == Operation::Packed {
            // Checked once, here, so a logged prepare always applies
            // (`apply`); the checksum says only that some primary wrote it.
            if let Err(error) = packed::decode(&message.body) {
                tracing::warn!(replica = self.config.replica, op = header.op, %error, "malformed packed prepare");
                return Err("malformed_packed_prepare");
            }
        }
        Ok(())
    }

    fn drop_message(&mut self, reason: &'static str) {
        *self.stats.drops.entry(reason).or_default() += 1;
    }

    // --- normal operation: primary ----------------------------------------------

    fn on_request(&mut self, message: Message) {
        if !self.screen_request(&message) {
            return;
        }
        let client = message.header.client;
        if self.requests_deferred
            || self.pipeline.len() >= self.config.pipeline_prepares_max
            || !self.request_queue.is_empty()
        {
            // Behind the queue, in arrival order: packed with the others when
            // the driver's batch of events ends or the pipeline drains.
            self.enqueue_request(message);
            return self.prepare_queued();
        }
        if let Some(reason) = self.cannot_prepare() {
            return self.drop_message(reason);
        }
        assert!(!self.request_queue.iter().any(|queued| queued.header.client == client));
        self.prepare(vec![message]);
    }

    /// Everything a request must pass before it may be prepared; answers
    /// what it can (a cached reply, an eviction) and counts what it drops.
    /// True: new work for the pipeline.
    fn screen_request(&mut self, message: &Message) -> bool {
        if self.status != Status::Normal || !self.is_primary() {
            // Queued requests are a primary's; the clients retry elsewhere.
            self.request_queue.clear();
            self.drop_message("not_primary");
            return false;
        }
        if self.commit_min < self.commit_max {
            // The session table is only as fresh as the ops applied: answering
            // from a stale one would evict live sessions or resend old replies.
            self.drop_message("primary_catching_up");
            return false;
        }
        let header = message.header;
        let registering = header.operation == Operation::Register;
        if header.operation.is_reserved() && !registering {
            self.drop_message("reserved_operation");
            return false;
        }
        // An op of this client still in the pipeline (perhaps from before a
        // view change) decides what its session looks like: wait for it.
        if self.pipeline_holds_client(header.client) {
            self.drop_message("request_in_flight");
            return false;
        }
        let verdict = if registering {
            self.sessions.classify(header.client, header.request, true)
        } else {
            self.sessions.classify_request(header.client, header.context, header.request)
        };
        match verdict {
            RequestVerdict::Drop => self.drop_message("stale_request"),
            RequestVerdict::Evicted => {
                let mut eviction = self.new_header(Command::Eviction);
                eviction.client = header.client;
                eviction.request = header.request;
                // The session that is gone: a client in a newer one ignores it.
                eviction.context = header.context;
                self.actions.push(Action::Reply { client: header.client, message: Message::empty(eviction) });
            }
            RequestVerdict::ResendReply => {
                let session = self.sessions.get(header.client).expect("resend has a session");
                let reply = Message::from_parts(session.reply_header, Rc::from(session.reply_body.as_slice()));
                self.actions.push(Action::Reply { client: header.client, message: reply });
            }
            RequestVerdict::Prepare => return true,
        }
        false
    }

    /// Some prepare in the pipeline may carry a request of `client`. A
    /// prepare whose body this replica lacks (after a view change) might.
    fn pipeline_holds_client(&self, client: u128) -> bool {
        self.pipeline.iter().any(|pipelined| match &pipelined.clients {
            Some(clients) => clients.contains(&client),
            None => self.log.get(&pipelined.op).is_none_or(|entry| Self::entry_may_hold_client(entry, client)),
        })
    }

    fn entry_may_hold_client(entry: &Entry, client: u128) -> bool {
        if entry.header.operation != Operation::Packed {
            return entry.header.client == client;
        }
        let Some(body) = &entry.body else { return true };
        packed::decode(body).map_or(true, |requests| requests.iter().any(|request| request.client == client))
    }

    /// Why the primary cannot prepare now, though its pipeline has room.
    fn cannot_prepare(&self) -> Option<&'static str> {
        if self.op + 1 > self.checkpoint_op + self.journal_ops_max() {
            Some("journal_full")
        } else if !self.has_body(self.op) && self.op != self.checkpoint_op {
            // Still repairing the head of the log installed by the view change.
            Some("primary_repairing")
        } else {
            None
        }
    }

    /// Hold a request until the pipeline packs it (see `REQUEST_QUEUE_MAX`).
    fn enqueue_request(&mut self, message: Message) {
        let client = message.header.client;
        if let Some(queued) = self.request_queue.iter_mut().find(|queued| queued.header.client == client) {
            *queued = message;
        } else if self.request_queue.len() >= REQUEST_QUEUE_MAX || crate::buggify!(crate::buggify::REQUEST_REFUSED_BUSY)
        {
            self.drop_message("request_queue_full");
            // Told at once, not left to its retry timeout: the client backs
            // off and sends the same request (same number) again.
            let refusal = Refusal::Busy.header(&message.header, self.config.replica, self.view);
            self.actions.push(Action::Reply { client, message: Message::empty(refusal) });
        } else {
            self.request_queue.push_back(message);
        }
        assert!(self.request_queue.len() <= REQUEST_QUEUE_MAX);
    }

    /// The pipeline has room: prepare queued requests, in arrival order,
    /// as many to a prepare as fit (`take_pack`), each screened again
    /// (its session may have moved on while it waited).
    fn prepare_queued(&mut self) {
        while !self.requests_deferred
            && self.pipeline.len() < self.config.pipeline_prepares_max
            && self.status == Status::Normal
            && self.is_primary()
            && !self.request_queue.is_empty()
        {
            if let Some(reason) = self.cannot_prepare() {
                // Nothing can be prepared: answer or drop the queue as a
                // request arriving now would be.
                let message = self.request_queue.pop_front().expect("queue is not empty");
                if self.screen_request(&message) {
                    self.drop_message(reason);
                }
                continue;
            }
            let pack = self.take_pack();
            if !pack.is_empty() {
                self.prepare(pack);
            }
        }
    }

    /// The driver starts a batch of events it handles together (the node's
    /// turn: the frames read in one go, whose prepares share one journal
    /// flush at its end). Until `prepare_deferred`, requests wait in the
    /// queue even with room in the pipeline, so requests that arrive in one
    /// batch leave packed in one prepare (one journal write, one quorum
    /// round) rather than one op each. Deterministic: the batch's bounds
    /// are the driver's events, never time.
    pub fn defer_requests(&mut self) {
        self.requests_deferred = true;
    }

    /// The driver's batch of events ended: prepare what the queue holds,
    /// packed (`take_pack`), as far as the pipeline has room; the rest
    /// waits for room as before.
    pub fn prepare_deferred(&mut self) {
        self.requests_deferred = false;
        self.prepare_queued();
        debug_assert!(
            self.request_queue.is_empty()
                || self.pipeline.len() >= self.config.pipeline_prepares_max
                || self.status != Status::Normal
                || !self.is_primary(),
            "a primary with room in its pipeline leaves nothing queued at a batch's end"
        );
    }

    /// Whether requests wait for the driver's batch to end (`defer_requests`).
    pub fn requests_deferred(&self) -> bool {
        self.requests_deferred
    }

    /// Requests waiting in the queue (for reports and tests).
    pub fn request_queue_len(&self) -> usize {
        self.request_queue.len()
    }

    /// Queued requests for one prepare, from the front: at most
    /// `PREPARE_REQUESTS_MAX`, and (when two or more) a packed body that
    /// fits the group's message size with the prepare's header.
    fn take_pack(&mut self) -> Vec<Message> {
        let message_size_max_bytes = self.config.message_size_max_bytes as usize;
        let mut pack: Vec<Message> = Vec::new();
        let mut packed_size_bytes = HEADER_SIZE_BYTES + PACKED_PREFIX_SIZE_BYTES;
        let requests_max = if crate::buggify!(crate::buggify::PACK_OF_ONE) { 1 } else { PREPARE_REQUESTS_MAX };
        while pack.len() < requests_max {
            let Some(front) = self.request_queue.front() else { break };
            let entry_size_bytes = PACKED_ENTRY_HEADER_SIZE_BYTES + front.body.len();
            if !pack.is_empty() && packed_size_bytes + entry_size_bytes > message_size_max_bytes {
                break;
            }
            let message = self.request_queue.pop_front().expect("front exists");
            if self.screen_request(&message) {
                packed_size_bytes += entry_size_bytes;
                pack.push(message);
            }
        }
        pack
    }

    fn journal_ops_max(&self) -> u64 {
        self.config.journal_slot_count - PIPELINE_PREPARES_MAX as u64
    }

    /// Prepare the next op with `requests`: one keeps the plain encoding,
    /// two or more are packed (`crate::packed`).
    fn prepare(&mut self, requests: Vec<Message>) {
        assert!(self.is_primary() && self.status == Status::Normal);
        assert!(self.pipeline.len() < self.config.pipeline_prepares_max);
        assert!((1..=PREPARE_REQUESTS_MAX).contains(&requests.len()));
        let clients: Vec<u128> = requests.iter().map(|request| request.header.client).collect();
        assert_eq!(clients.iter().collect::<BTreeSet<_>>().len(), clients.len(), "a client once per prepare");
        assert!(!clients.iter().any(|&client| self.pipeline_holds_client(client)), "a request in two prepares");
        let parent = self.header(self.op).expect("primary holds its head").checksum;
        let timestamp = self.now_ns.max(self.last_timestamp + 1);
        self.last_timestamp = timestamp;
        let mut header = self.new_header(Command::Prepare);
        header.op = self.op + 1;
        header.commit = self.commit_max;
        header.parent = parent;
        header.timestamp = timestamp;
        let message = if let [request] = requests.as_slice() {
            header.client = request.header.client;
            header.request = request.header.request;
            header.operation = request.header.operation;
            // The client's session: applied only while it is still the client's.
            header.context = request.header.context;
            // `admit` verified the request's body against its checksum, and
            // the prepare carries the same bytes: no second hash of them.
            Message::with_verified_body(header, request.body.clone(), request.header.checksum_body)
        } else {
            crate::marks::hit(crate::marks::PREPARE_PACKED_REQUESTS);
            header.operation = Operation::Packed;
            let packed: Vec<PackedRequest<'_>> =
                requests.iter().map(|request| PackedRequest::of_plain(&request.header, &request.body)).collect();
            let body = packed::encode(&packed);
            assert!(HEADER_SIZE_BYTES + body.len() <= self.config.message_size_max_bytes as usize);
            Message::new(header, Rc::from(body))
        };
        self.op = message.header.op;
        self.log.insert(self.op, Entry { header: message.header, body: Some(message.body.clone()) });
        self.actions.push(Action::WritePrepare { message: message.clone() });
        self.pipeline.push_back(Pipelined {
            op: self.op,
            checksum: message.header.checksum,
            // The primary counts itself once its own write is durable
            // (`on_prepare_durable`); the prepare goes out in parallel.
            oks: BTreeSet::new(),
            clients: Some(clients),
        });
        self.stats.prepares_sent += 1;
        self.broadcast(&message);
        self.commit_pipeline();
    }

    fn on_prepare_ok(&mut self, header: &Header) {
        if self.status != Status::Normal || !self.is_primary() || header.view != self.view {
            return self.drop_message("prepare_ok_not_for_us");
        }
        // A backup applies only committed ops: its commit point is a fact the
        // primary may adopt (it matters after a view change, when the backups
        // may know of commits the new primary never heard of). But only where
        // its log provably equals ours: the ok names the checksum it holds at
        // `op`, and the hash chain makes every op below it equal too. A
        // backup whose log diverged (a stale view, a checkpoint of another
        // history) must never make us commit our own ops.
        let same_log = self.header(header.op).is_some_and(|mine| mine.checksum == header.parent);
        let adoptable = header.commit.min(header.op);
        if same_log && adoptable > self.commit_max && adoptable <= self.op {
            self.advance_commit_max(adoptable);
            self.commit_journal();
        }
        let Some(entry) = self.pipeline.iter_mut().find(|p| p.op == header.op) else {
            return self.drop_message("prepare_ok_not_in_pipeline");
        };
        if entry.checksum != header.parent {
            return self.drop_message("prepare_ok_wrong_checksum");
        }
        entry.oks.insert(header.replica);
        self.commit_pipeline();
        self.prepare_queued();
    }

    /// Commit the pipeline's head while it has a quorum of durable copies.
    fn commit_pipeline(&mut self) {
        while let Some(head) = self.pipeline.front() {
            if head.oks.len() < self.quorum {
                break;
            }
            assert!(head.op == self.commit_max + 1 || head.op <= self.commit_max);
            self.commit_max = self.commit_max.max(head.op);
            self.pipeline.pop_front();
        }
        self.commit_journal();
    }

    fn tick_primary(&mut self) {
        if self.abdicates() {
            return;
        }
        let overdue = self.now_ns.saturating_sub(self.commit_heartbeat_sent_ns) >= COMMIT_HEARTBEAT_NS;
        if self.commit_heartbeat_timeout.fired() || overdue {
            self.commit_heartbeat_timeout.reset();
            self.commit_heartbeat_sent_ns = self.now_ns;
            let mut commit = self.new_header(Command::Commit);
            commit.commit = self.commit_max;
            commit.op = self.op;
            self.broadcast(&Message::empty(commit));
        }
        if Self::periodic(&mut self.prepare_retry_timeout) {
            let mut resend = Vec::new();
            for pipelined in &self.pipeline {
                let Some(entry) = self.log.get(&pipelined.op) else { continue };
                let Some(body) = &entry.body else { continue };
                let message = Message::from_parts(entry.header, body.clone());
                for replica in 0..self.config.replica_count {
                    if !pipelined.oks.contains(&replica) && replica != self.config.replica {
                        resend.push((replica, message.clone()));
                    }
                }
            }
            for (to, message) in resend {
                self.actions.push(Action::Send { to, message });
            }
        }
    }

    /// A primary whose pipeline waits on a body it does not hold, for
    /// `PRIMARY_ABDICATE_TICKS`, starts the next view: its commit
    /// heartbeats keep the backups from ever timing out, and if the only
    /// copies were lost, only a view change's nacks can truncate the op.
    fn abdicates(&mut self) -> bool {
        if !self.pipeline_waits_on_body() {
            self.primary_abdicate_timeout.stop();
            return false;
        }
        if !self.primary_abdicate_timeout.is_ticking() {
            self.primary_abdicate_timeout.start(0);
            return false;
        }
        if !self.primary_abdicate_timeout.fired() {
            return false;
        }
        crate::marks::hit(crate::marks::PRIMARY_ABDICATED);
        tracing::info!(
            replica = self.config.replica,
            view = self.view,
            "primary abdicates: a pipeline body is missing"
        );
        self.primary_abdicate_timeout.stop();
        self.start_view_change(self.view + 1);
        true
    }

    // --- normal operation: backup -----------------------------------------------

    fn on_prepare(&mut self, message: Message) {
        let header = message.header;
        if header.view > self.view || (header.view == self.view && self.status == Status::Recovering) {
            self.request_start_view(self.primary_index(header.view));
            return self.drop_message("prepare_from_newer_view");
        }
        if self.status == Status::ViewChange {
            return self.drop_message("prepare_during_view_change");
        }
        if header.view == self.view && !self.is_primary() && header.replica == self.primary_index(self.view) {
            // Only a prepare the primary has not shown before says it is
            // alive now: a late copy of an old one (a delayed or duplicated
            // frame) kept a dead primary's backups waiting for seconds
            // (swarm seed 43244).
            if header.op > self.primary_shown_op {
                self.normal_timeout.reset();
                self.primary_shown_op = header.op;
            }
            self.primary_op = self.primary_op.max(header.op);
            self.advance_commit_max(header.commit);
        }
        // Prepares from older views still serve as repair answers: they are
        // accepted only where the hash chain vouches for them.
        self.insert_prepare(message);
        self.adopt_ahead();
        self.commit_journal();
    }

    /// Keep a prepare of the current view that arrived ahead of its parent
    /// (`ahead`), when this replica is a backup in Normal and the journal
    /// has room for it; false when it is not kept. A full `ahead` gives up
    /// its highest op for a lower one (the lower chains sooner).
    fn keep_ahead(&mut self, message: &Message) -> bool {
        let header = &message.header;
        debug_assert!(header.op > self.op + 1, "only a prepare above the next op waits");
        let keepable = self.status == Status::Normal
            && !self.is_primary()
            && header.view == self.view
            && header.op < self.checkpoint_op + self.config.journal_slot_count;
        if !keepable || crate::buggify!(crate::buggify::AHEAD_NOT_KEPT) {
            return false;
        }
        if let Some(kept) = self.ahead.get(&header.op) {
            // One primary per view: a second prepare of this view for the
            // op is a duplicate, or input no honest peer sends.
            return kept.header.checksum == header.checksum;
        }
        if self.ahead.len() >= AHEAD_PREPARES_MAX {
            let highest = *self.ahead.keys().next_back().expect("full, so not empty");
            if highest < header.op {
                return false;
            }
            self.ahead.remove(&highest);
        }
        self.ahead.insert(header.op, message.clone());
        crate::mark!("prepare_kept_ahead_of_parent");
        true
    }

    /// Insert the prepares kept `ahead` that now chain to the head, in op
    /// order, each as if it arrived now; then forget those that can no
    /// longer chain (at or below the head, or of another view).
    fn adopt_ahead(&mut self) {
        for _ in 0..AHEAD_PREPARES_MAX {
            let Some(message) = self.ahead.remove(&(self.op + 1)) else { break };
            let head_before = self.op;
            self.insert_prepare(message);
            if self.op == head_before {
                break;
            }
            crate::mark!("prepare_ahead_adopted");
        }
        let (head, view) = (self.op, self.view);
        self.ahead.retain(|&op, message| op > head + 1 && message.header.view == view);
    }

    fn on_commit(&mut self, header: &Header) {
        if header.view > self.view {
            self.request_start_view(header.replica);
            return;
        }
        if header.view < self.view || self.status != Status::Normal || self.is_primary() {
            return self.drop_message("commit_not_for_us");
        }
        if header.replica != self.primary_index(self.view) {
            return self.drop_message("commit_not_from_primary");
        }
        // A heartbeat naming an op below one the primary already showed is
        // a late copy, not a sign of life (as for prepares, `on_prepare`).
        // Not the commit number: a backup may know commits the view's new
        // primary has yet to learn.
        if header.op >= self.primary_shown_op {
            self.normal_timeout.reset();
            self.primary_shown_op = header.op;
        } else {
            crate::marks::hit(crate::marks::STALE_HEARTBEAT_IGNORED);
        }
        self.primary_op = self.primary_op.max(header.op);
        self.advance_commit_max(header.commit);
        self.commit_journal();
    }

    fn advance_commit_max(&mut self, commit: u64) {
        self.commit_max = self.commit_max.max(commit);
        // Ops committed by other means (a state transfer) leave the pipeline.
        while self.pipeline.front().is_some_and(|p| p.op <= self.commit_max) {
            self.pipeline.pop_front();
        }
    }

    /// Store a prepare where the log or the hash chain vouches for it.
    fn insert_prepare(&mut self, message: Message) {
        let header = message.header;
        let op = header.op;
        if op <= self.commit_min || op <= self.checkpoint_op {
            // A new primary may not know this op is committed yet: tell it,
            // with our commit point, so its pipeline does not wait forever.
            // Only for the very prepare we hold: echoing a checksum we cannot
            // check would vouch for an op of another history.
            if self.header(op).is_some_and(|ours| ours.checksum == header.checksum) {
                self.send_committed_ok(op, header.checksum);
            }
            return self.drop_message("prepare_already_committed");
        }
        if let Some(entry) = self.log.get(&op) {
            if entry.header.checksum != header.checksum {
                return self.drop_message("prepare_conflicts");
            }
            if entry.body.is_none() {
                self.store_body(message);
            } else {
                self.send_prepare_ok(op);
            }
            return;
        }
        let vouched_by_parent = op == self.op + 1
            && self.status == Status::Normal
            && header.view == self.view
            && self.header(self.op).is_some_and(|parent| parent.checksum == header.parent);
        let vouched_by_child = self.log.get(&(op + 1)).is_some_and(|child| child.header.parent == header.checksum);
        if !vouched_by_parent && !vouched_by_child {
            if op > self.op + 1 {
                self.primary_op = self.primary_op.max(op);
                if self.keep_ahead(&message) {
                    return;
                }
            }
            return self.drop_message("prepare_not_vouched");
        }
        if op > self.checkpoint_op + self.config.journal_slot_count - 1 {
            return self.drop_message("prepare_past_journal");
        }
        if vouched_by_parent {
            self.op = op;
        }
        self.log.insert(op, Entry { header, body: None });
        self.store_body(message);
        self.prune_unchained_below(op);
    }

    /// A new header at `op` may expose that the entry below it is stale (from
    /// an older view): drop it so repair fetches the right one.
    fn prune_unchained_below(&mut self, op: u64) {
        let parent = self.log[&op].header.parent;
        if let Some(below) = self.log.get(&(op - 1))
            && below.header.checksum != parent
        {
            assert!(op - 1 > self.commit_min, "a committed op never changes");
            self.log.remove(&(op - 1));
        }
    }

    fn store_body(&mut self, message: Message) {
        let op = message.header.op;
        let entry = self.log.get_mut(&op).expect("store_body of a known header");
        assert_eq!(entry.header.checksum, message.header.checksum);
        assert!(entry.body.is_none());
        entry.body = Some(message.body.clone());
        self.actions.push(Action::WritePrepare { message });
        self.send_prepare_ok(op);
        if self.is_primary() && self.status == Status::Normal {
            self.on_primary_body_repaired(op);
        }
    }

    /// A backup acknowledges op only when every op from the checkpoint up to
    /// it is durable here: a prepare_ok promises the whole prefix.
    fn send_prepare_ok(&mut self, op: u64) {
        if self.status != Status::Normal || self.is_primary() || op <= self.commit_min {
            return;
        }
        let durable_prefix = (self.commit_min + 1..=op).all(|k| self.has_body(k));
        if !durable_prefix {
            return;
        }
        // This op, and the ops above it that were waiting on it.
        let mut next = op;
        while next <= self.op && self.has_body(next) {
            let checksum = self.log[&next].header.checksum;
            self.send_committed_ok(next, checksum);
            next += 1;
        }
        debug_assert!(next > op, "a durable prefix ends at or after op");
    }

    /// A prepare_ok for `op` to the primary, carrying this replica's commit
    /// point (which the primary may adopt).
    fn send_committed_ok(&mut self, op: u64, checksum: u128) {
        if self.status != Status::Normal || self.is_primary() {
            return;
        }
        let mut ok = self.new_header(Command::PrepareOk);
        ok.op = op;
        ok.parent = checksum;
        ok.commit = self.commit_min;
        let to = self.primary_index(self.view);
        self.actions.push(Action::Send { to, message: Message::empty(ok) });
    }

    fn on_primary_body_repaired(&mut self, op: u64) {
        let entry = &self.log[&op];
        let checksum = entry.header.checksum;
        let Some(pipelined) = self.pipeline.iter_mut().find(|p| p.op == op) else { return };
        pipelined.checksum = checksum;
        let entry = &self.log[&op];
        let message = Message::from_parts(entry.header, entry.body.clone().expect("just stored"));
        self.broadcast(&message);
    }

    /// The driver made the `WritePrepare` of `op` durable. Only now may the
    /// primary count its own copy toward the quorum: with one replica, or
    /// with a quorum reached by backups first, counting it earlier would
    /// apply an op before any copy of it is on this disk.
    pub fn on_prepare_durable(&mut self, op: u64, checksum: u128) {
        if self.status != Status::Normal || !self.is_primary() {
            return;
        }
        let mine = self.log.get(&op).is_some_and(|e| e.header.checksum == checksum && e.body.is_some());
        let Some(pipelined) = self.pipeline.iter_mut().find(|p| p.op == op && p.checksum == checksum) else { return };
        if mine {
            pipelined.oks.insert(self.config.replica);
            self.commit_pipeline();
            self.prepare_queued();
        }
        self.check_invariants();
    }

    fn tick_backup(&mut self) {
        if self.normal_timeout.fired() {
            self.start_view_change(self.view + 1);
        }
    }

    // --- commit ----------------------------------------------------------------

    /// Apply committed ops in order while their bodies are here and the hash
    /// chain from the head vouches for them.
    fn commit_journal(&mut self) {
        if self.status == Status::ViewChange {
            return;
        }
        while self.commit_min < self.commit_max {
            let op = self.commit_min + 1;
            if !self.chain_verified(op) {
                break;
            }
            let Some(entry) = self.log.get(&op) else { break };
            let Some(body) = entry.body.clone() else { break };
            let header = entry.header;
            if self.header(op - 1).is_some_and(|below| below.checksum != header.parent) {
                // Of another history than the committed prefix: never apply.
                self.log.remove(&op);
                self.drop_message("stale_entry_above_commit");
                break;
            }
            self.apply(&header, &body);
        }
        self.maybe_checkpoint();
    }

    /// `op`'s header is linked to the head of the log by present, chained headers.
    fn chain_verified(&self, op: u64) -> bool {
        let mut child = op;
        while child < self.op {
            let (Some(lower), Some(upper)) = (self.log.get(&child), self.log.get(&(child + 1))) else {
                return false;
            };
            if upper.header.parent != lower.header.checksum {
                return false;
            }
            child += 1;
        }
        self.log.contains_key(&op)
    }

    fn apply(&mut self, header: &Header, body: &[u8]) {
        assert_eq!(header.op, self.commit_min + 1, "ops apply in order");
        assert!(header.op <= self.commit_max, "only committed ops apply");
        let parent = self.header(header.op - 1).map(|h| h.checksum);
        assert!(parent.is_none_or(|parent| parent == header.parent), "applied ops form a hash chain");
        // Checked where the prepare entered the log (`admit`, `recover_log`):
        // a malformed packed body never gets this far.
        let requests = packed::requests_of(header, body).expect("a logged prepare's packed body is valid");
        for (index, request) in requests.iter().enumerate() {
            self.apply_request(header, index as u32, request);
        }
        self.commit_min = header.op;
    }

    /// Apply one request of the committed prepare `header`, exactly as a
    /// prepare of that request alone would be: through the session table,
    /// with its own reply.
    fn apply_request(&mut self, header: &Header, index: u32, request: &PackedRequest<'_>) {
        let mut reply = self.new_header(Command::Reply);
        reply.op = header.op;
        reply.commit = header.op;
        reply.client = request.client;
        reply.request = request.request;
        reply.operation = request.operation;
        reply.timestamp = header.timestamp;
        // The reply names the session it answers: request numbers restart
        // in a new session, so a late reply to an evicted session's request
        // must not pass for the reply to the new session's request.
        reply.context = if request.operation == Operation::Register {
            header.op
        } else {
            self.sessions.get(request.client).map_or(0, |session| session.session_op)
        };
        let mut evicted = None;
        let (applied, reply_body) = match request.operation {
            Operation::Register => {
                let registering = self.sessions.classify(request.client, 0, true) == RequestVerdict::Prepare;
                let reply_body = header.op.to_le_bytes().to_vec();
                if registering {
                    reply.set_checksums(&reply_body);
                    evicted = self.sessions.register(request.client, header.op, reply, reply_body.clone());
                    if evicted.is_some() {
                        crate::marks::hit(crate::marks::SESSION_EVICTED);
                    }
                }
                (registering, reply_body)
            }
            Operation::Root | Operation::Noop | Operation::Reserved => (true, Vec::new()),
            Operation::Packed => unreachable!("a packed prepare carries no packed request (packed::decode)"),
            operation => {
                let fresh = self.sessions.classify_request(request.client, request.session, request.request)
                    == RequestVerdict::Prepare;
                if fresh {
                    let reply_body = self.state_machine.apply(header.op, operation, request.body, header.timestamp);
                    reply.set_checksums(&reply_body);
                    self.sessions.record(request.client, request.request, header.op, reply, reply_body.clone());
                    (true, reply_body)
                } else {
                    (false, Vec::new())
                }
            }
        };
        reply.set_checksums(&reply_body);
        self.committed.push(Committed {
            op: header.op,
            checksum: header.checksum,
            index,
            operation: request.operation,
            client: request.client,
            request: request.request,
            applied,
            reply: reply_body.clone(),
            session: self.sessions.get(request.client).map_or(0, |session| session.session_op),
            evicted,
        });
        if applied && request.client != 0 && self.is_primary() && self.status == Status::Normal {
            let message = Message::from_parts(reply, Rc::from(reply_body));
            self.actions.push(Action::Reply { client: request.client, message });
        }
    }

    fn maybe_checkpoint(&mut self) {
        if self.commit_min < self.checkpoint_op + self.config.checkpoint_interval_ops {
            return;
        }
        if !self.state_machine.checkpoint_ready() {
            // The journal is the only durable copy of the ops past the last
            // checkpoint on this replica: it keeps them until the state can
            // hold them (disk-rot seed 3788: two replicas with state-transfer
            // gaps checkpointed over messages kept only in memory, crashed,
            // and the cluster lost acknowledged messages).
            crate::marks::hit(crate::marks::CHECKPOINT_DEFERRED);
            return;
        }
        let op = self.commit_min;
        let anchor = self.log[&op].header;
        let checkpoint = Checkpoint { anchor, snapshot: self.snapshot() };
        self.hand_checkpoint_to_node(checkpoint);
        self.checkpoint_op = op;
        self.checkpoint_anchor = anchor;
        self.log = self.log.split_off(&(op + 1));
        assert!(self.op >= self.checkpoint_op);
    }

    fn snapshot(&self) -> Vec<u8> {
        let state = self.state_machine.snapshot();
        let mut out = Vec::with_capacity(state.len() + 64);
        out.extend_from_slice(&(state.len() as u32).to_le_bytes());
        out.extend_from_slice(&state);
        self.sessions.encode(&mut out);
        out
    }

    /// The node makes `checkpoint` durable (`Action::Checkpoint`); it is
    /// served once the node says it is (`on_checkpoint_durable`).
    fn hand_checkpoint_to_node(&mut self, checkpoint: Checkpoint) {
        if self.checkpoints_not_durable.len() == CHECKPOINTS_NOT_DURABLE_MAX {
            self.checkpoints_not_durable.pop_front();
        }
        self.checkpoints_not_durable.push_back(ServableCheckpoint::new(&checkpoint));
        self.actions.push(Action::Checkpoint { checkpoint });
    }

    /// The node made the checkpoint at `op` durable (its partition log
    /// synced, its file installed): from now on it may be served.
    pub fn on_checkpoint_durable(&mut self, op: u64) {
        assert!(
            self.checkpoint_served.as_ref().is_none_or(|served| op > served.anchor.op),
            "checkpoint {op} reported durable twice"
        );
        while let Some(oldest) = self.checkpoints_not_durable.pop_front() {
            assert!(oldest.anchor.op <= op, "checkpoint {op} reported durable before the older {}", oldest.anchor.op);
            if oldest.anchor.op == op {
                self.checkpoint_served = Some(oldest);
                return;
            }
        }
        // Forgotten past the bound: a newer one will be served.
        crate::marks::hit(crate::marks::CHECKPOINT_DURABLE_FORGOTTEN);
    }

    fn restore_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), SnapshotError> {
        let mut reader = SnapshotReader::new(&checkpoint.snapshot);
        let state = reader.bytes_with_len()?;
        let sessions = ClientSessions::decode(&mut reader, self.config.client_sessions_max)?;
        self.state_machine.restore(state)?;
        self.sessions = sessions;
        let op = checkpoint.anchor.op;
        self.checkpoint_op = op;
        self.checkpoint_anchor = checkpoint.anchor;
        self.commit_min = op;
        self.commit_max = self.commit_max.max(op);
        self.op = self.op.max(op);
        self.log = self.log.split_off(&(op + 1));
        self.drop_suffix_of_another_history(op);
        Ok(())
    }

    /// After a checkpoint restore the entries above it may belong to another
    /// history (this replica's own stale suffix): from the first that does
    /// not chain onto its neighbour below, drop them all; repair refills.
    fn drop_suffix_of_another_history(&mut self, op: u64) {
        let mut below = self.header(op).map(|h| h.checksum);
        let mut next = op + 1;
        while let Some(entry) = self.log.get(&next) {
            if below.is_some_and(|checksum| checksum != entry.header.parent) {
                let _stale = self.log.split_off(&next);
                self.op = self.op.min(next - 1).max(op);
                return;
            }
            below = Some(entry.header.checksum);
            next += 1;
        }
    }

    fn newest_timestamp(&self) -> u64 {
        let logged = self.log.values().map(|e| e.header.timestamp).max().unwrap_or(0);
        logged.max(self.checkpoint_anchor.timestamp).max(self.last_timestamp)
    }

    // --- recovery after restart --------------------------------------------------

    /// Rebuild the log from the journal and the superblock's view headers,
    /// then replay the ops the superblock says were committed.
    fn recover_log(&mut self, durable: &DurableState, entries: Vec<(Header, Vec<u8>)>, faulty_headers: &[Header]) {
        let mut journal: BTreeMap<u64, (Header, Vec<u8>)> = BTreeMap::new();
        for (header, body) in entries {
            if header.operation == Operation::Packed
                && let Err(error) = packed::decode(&body)
            {
                // As if the slot were lost: repair brings the committed
                // prepare back from a peer (`admit` refuses this one).
                tracing::warn!(replica = self.config.replica, op = header.op, %error, "malformed packed prepare in the journal");
                self.drop_message("malformed_packed_prepare");
                continue;
            }
            if header.op > self.checkpoint_op {
                journal.insert(header.op, (header, body));
            }
        }
        // The view headers are the log of log_view as installed: they win
        // over a stale journal entry at the same op.
        for header in &durable.view_headers {
            if header.op > self.checkpoint_op {
                self.log.insert(header.op, Entry { header: *header, body: None });
            }
        }
        let view_top = durable.view_headers.iter().map(|h| h.op).max().unwrap_or(0);
        // Above the view headers, only prepares of log_view itself can be
        // part of its log: a backup appends there only in its current
        // view. A prepare of an older view that this replica had dropped
        // (without truncating the journal) can chain onto the same parent
        // and would otherwise come back to life here.
        let stale = |header: &Header| header.op > view_top && header.view < durable.log_view;
        for (op, (header, body)) in &journal {
            if stale(header) {
                continue;
            }
            match self.log.get_mut(op) {
                Some(entry) if entry.header.checksum == header.checksum => {
                    entry.body = Some(Body::from(body.as_slice()))
                }
                Some(_) => {}
                None => {
                    self.log.insert(*op, Entry { header: *header, body: Some(Body::from(body.as_slice())) });
                }
            }
        }
        // A faulty op's header from its copy: a prepare this replica wrote
        // durably, as trustworthy as a valid entry (and as possibly stale),
        // so the same rules, without a body. The chain then reaches the
        // valid prepares above it, and the head stays certain.
        for header in faulty_headers {
            if header.op > self.checkpoint_op && !stale(header) && !self.log.contains_key(&header.op) {
                crate::marks::hit(crate::marks::FAULTY_HEADER_KEPT_IN_LOG);
                self.log.insert(header.op, Entry { header: *header, body: None });
            }
        }
        // Above the view headers, keep only what chains onto them; below
        // the trusted commit, keep everything (committed ops never change).
        let trusted = durable.commit.max(self.checkpoint_op);
        let mut top = self.log.keys().next_back().copied().unwrap_or(self.checkpoint_op);
        while top > view_top.max(trusted) && !self.chained_down_to(top, view_top.max(trusted)) {
            self.log.remove(&top);
            top = self.log.keys().next_back().copied().unwrap_or(self.checkpoint_op);
        }
        self.op = top.max(self.checkpoint_op).max(view_top);
        // Below the head, keep only what the view headers name or the entry
        // right above chains to; the trusted committed prefix stays. The
        // same rule as `install_log`: a journal entry below a gap cannot be
        // vouched for. It may be a stale prepare of an older view that
        // `install_log` dropped from memory but nothing truncated from the
        // journal (it sat below the new head); kept here, it would come back
        // as part of log_view's log and go out in this replica's view
        // headers (view-churn seed 588). Repair refills the gap by checksum.
        let named: BTreeSet<u64> = durable.view_headers.iter().map(|h| h.op).collect();
        let mut upper = self.op;
        while upper > trusted + 1 {
            let lower = upper - 1;
            let vouched = named.contains(&lower)
                || match (self.log.get(&upper), self.log.get(&lower)) {
                    (Some(above), Some(entry)) => above.header.parent == entry.header.checksum,
                    _ => false,
                };
            if !vouched {
                self.log.remove(&lower);
            }
            upper -= 1;
        }
        self.keep_unchained_aside(trusted, journal);
        self.commit_max = self.commit_max.max(durable.commit);
        // Replay the trusted committed prefix; repair brings whatever is missing.
        self.apply_held_through(trusted);
    }

    /// Apply the ops after the commit point up to `op` (committed, by the
    /// caller's proof) while the log holds each with its body.
    fn apply_held_through(&mut self, op: u64) {
        while self.commit_min < op {
            let Some(entry) = self.log.get(&(self.commit_min + 1)) else { break };
            let Some(body) = entry.body.clone() else { break };
            let header = entry.header;
            self.apply(&header, &body);
        }
    }

    /// The journal's valid prepares above the trusted commit that the log
    /// did not take are not forgotten: a broken chain (a rotten slot below
    /// them) says only that this replica cannot vouch for them, not that
    /// they are wrong, and they may be the only copies of ops the next
    /// view's log names. Keep the newest views' (then ops') first: those
    /// are the uncommitted ones no peer may hold.
    fn keep_unchained_aside(&mut self, trusted: u64, journal: BTreeMap<u64, (Header, Vec<u8>)>) {
        assert!(self.unchained.is_empty(), "filled once, at restart");
        let mut aside: Vec<Message> = journal
            .into_values()
            .filter(|(header, _)| {
                header.op > trusted
                    && !self
                        .log
                        .get(&header.op)
                        .is_some_and(|e| e.header.checksum == header.checksum && e.body.is_some())
            })
            .map(|(header, body)| Message::from_parts(header, Rc::from(body)))
            .collect();
        aside.sort_by_key(|m| std::cmp::Reverse((m.header.view, m.header.op)));
        aside.truncate(UNCHAINED_PREPARES_MAX);
        self.unchained = aside.into_iter().map(|m| (m.header.checksum, m)).collect();
    }

    /// Feed the kept-aside prepares that the log now vouches for through
    /// `insert_prepare`, exactly as a peer's repair answer: a header the log
    /// holds with their checksum, or a held child that names them as parent.
    /// Only in Normal: then the log is the view's canonical log (a view
    /// change replaces it anyway, and a recovering replica's log is not yet
    /// trusted).
    fn adopt_unchained(&mut self) {
        if self.unchained.is_empty() || self.status != Status::Normal {
            return;
        }
        // At or below the commit point they can no longer be needed.
        let floor = self.commit_min.max(self.checkpoint_op);
        self.unchained.retain(|_, message| message.header.op > floor);
        // Each pass may expose a parent for the next (a child adopted below
        // a gap); every pass adopts at least one, or stops.
        for _ in 0..=UNCHAINED_PREPARES_MAX {
            let vouched: Vec<u128> = self
                .unchained
                .iter()
                .filter(|(checksum, message)| {
                    let op = message.header.op;
                    let claimed =
                        self.log.get(&op).is_some_and(|e| e.header.checksum == **checksum && e.body.is_none());
                    let child_names_it = !self.log.contains_key(&op)
                        && self.log.get(&(op + 1)).is_some_and(|child| child.header.parent == **checksum);
                    claimed || child_names_it
                })
                .map(|(checksum, _)| *checksum)
                .collect();
            if vouched.is_empty() {
                break;
            }
            for checksum in vouched {
                let message = self.unchained.remove(&checksum).expect("listed above");
                crate::mark!("unchained_prepare_adopted");
                self.insert_prepare(message);
            }
        }
        // Held now with a body (adopted, or repaired from a peer): drop.
        let log = &self.log;
        self.unchained.retain(|checksum, message| {
            !log.get(&message.header.op).is_some_and(|e| e.header.checksum == *checksum && e.body.is_some())
        });
    }

    fn chained_down_to(&self, top: u64, floor: u64) -> bool {
        let mut op = top;
        while op > floor {
            let Some(entry) = self.log.get(&op) else { return false };
            match self.header(op - 1) {
                Some(below) if below.checksum == entry.header.parent => op -= 1,
                _ => return false,
            }
        }
        true
    }

    // --- view change ------------------------------------------------------------

    fn start_view_change(&mut self, new_view: u64) {
        assert!(new_view > self.view, "views only go up");
        self.view = new_view;
        // Consecutive view changes back off: their candidates spread out.
        let random = self.next_random();
        if self.status == Status::ViewChange && self.view_change_timeout.is_ticking() {
            self.view_change_timeout.backoff(random);
        } else {
            self.view_change_timeout.start(random);
        }
        self.status = if self.status == Status::Recovering { Status::Recovering } else { Status::ViewChange };
        self.svc_from = BTreeSet::from([self.config.replica]);
        self.dvc_from.clear();
        self.dvc_sent = false;
        self.pipeline.clear();
        self.stats.view_changes += 1;
        self.write_superblock();
        let mut svc = self.new_header(Command::StartViewChange);
        svc.view = new_view;
        self.broadcast(&Message::empty(svc));
        self.maybe_send_do_view_change();
    }

    fn tick_view_change(&mut self) {
        if self.view_change_timeout.fired() {
            let next = self.view + 1;
            self.start_view_change(next);
            return;
        }
        if Self::periodic(&mut self.view_change_retry_timeout) {
            let svc = self.new_header(Command::StartViewChange);
            self.broadcast(&Message::empty(svc));
            if self.dvc_sent {
                self.dvc_sent = false;
                self.maybe_send_do_view_change();
            }
        }
    }

    fn on_start_view_change(&mut self, header: &Header) {
        if header.view < self.view {
            return self.drop_message("stale_view");
        }
        if header.view == self.view && self.status == Status::Normal {
            // A lagging peer: the primary tells it how the view started.
            if self.is_primary() {
                self.send_start_view(header.replica);
            }
            return;
        }
        if self.status == Status::Recovering {
            return self.drop_message("recovering");
        }
        if header.view > self.view {
            self.start_view_change(header.view);
        }
        self.svc_from.insert(header.replica);
        self.maybe_send_do_view_change();
    }

    fn maybe_send_do_view_change(&mut self) {
        if self.status != Status::ViewChange || self.dvc_sent || self.svc_from.len() < self.quorum {
            return;
        }
        assert!(
            self.lost_prepares_op_max.is_none(),
            "a vote needs a log that reaches every op this replica acknowledged"
        );
        self.dvc_sent = true;
        let headers = self.view_headers();
        let nacks = self.do_view_change_nacks(&headers);
        let mut dvc = self.new_header(Command::DoViewChange);
        dvc.op = self.op;
        dvc.commit = self.commit_max;
        dvc.context = self.log_view;
        dvc.set_do_view_change_nacks(nacks);
        let primary = self.primary_index(self.view);
        if primary == self.config.replica {
            let own = DoViewChange {
                log_view: self.log_view,
                op: self.op,
                commit_max: self.commit_max,
                headers,
                nacks: Some(nacks),
            };
            self.dvc_from.insert(self.config.replica, own);
            self.maybe_start_view();
        } else {
            let message = Message::new(dvc, Rc::from(encode_headers(&headers)));
            self.actions.push(Action::Send { to: primary, message });
        }
    }

    /// What this replica's do_view_change says of `headers` (its view
    /// headers): which bodies it holds, and below which op it nacks nothing.
    /// Prepares kept aside at restart are held too, though outside the log:
    /// the floor covers them, unless the log replaced them: `headers` (the
    /// log of `log_view`) name another prepare at that op, and the kept
    /// prepare's view is older than `log_view`, so that view's log did not
    /// take it. Such a prepare is a leftover (a start_view replaces a
    /// header in memory, not its slot, until repair brings the new body),
    /// and says no more about what this replica acknowledged than a
    /// replaced entry of a log that never restarted: that log nacks the
    /// prepare it names without a body, so the restart must too. Counted,
    /// it kept the last replica able to nack a lost, never-committed op
    /// from nacking it (disk-rot-sharded seed 6429, story
    /// `aside_superseded`). Which view made the replacing prepare does not
    /// matter: a later view's log may name an older view's prepare (its
    /// view change chose a log that never held the kept one), and counting
    /// only newer ones wedged disk-rot-sharded seeds 14011 and 19898 (story
    /// `aside_replaced_older`).
    fn do_view_change_nacks(&self, headers: &[Header]) -> DoViewChangeNacks {
        assert!(headers.len() <= DO_VIEW_CHANGE_PRESENT_BITS);
        let mut present = 0u64;
        for (index, header) in headers.iter().enumerate() {
            let held = header.op == self.checkpoint_op
                || self.log.get(&header.op).is_some_and(|e| e.header.checksum == header.checksum && e.body.is_some());
            if held {
                present |= 1 << index;
            }
        }
        let replaced = |kept: &Header| {
            kept.view < self.log_view && headers.iter().any(|h| h.op == kept.op && h.checksum != kept.checksum)
        };
        let aside = self.unchained.values().map(|m| &m.header).filter(|kept| !replaced(kept)).map(|kept| kept.op);
        DoViewChangeNacks { floor: self.nack_floor.max(aside.max().unwrap_or(0)), present }
    }

    /// The top headers of this replica's log, newest first: what a view
    /// change needs to rebuild the log of `log_view`.
    fn view_headers(&self) -> Vec<Header> {
        let mut headers = Vec::new();
        let mut op = self.op;
        while headers.len() < VIEW_HEADERS_MAX && op > self.checkpoint_op {
            if let Some(entry) = self.log.get(&op) {
                headers.push(entry.header);
            }
            op -= 1;
        }
        if headers.len() < VIEW_HEADERS_MAX {
            headers.push(self.checkpoint_anchor);
        }
        headers
    }

    fn on_do_view_change(&mut self, message: &Message) {
        let header = message.header;
        if header.view < self.view || self.status == Status::Recovering {
            return self.drop_message("stale_view");
        }
        if self.primary_index(header.view) != self.config.replica {
            return self.drop_message("dvc_not_for_us");
        }
        let Ok(headers) = decode_headers(&message.body) else {
            return self.drop_message("bad_dvc_body");
        };
        if !self.valid_view_headers(header.op, &headers) {
            return self.drop_message("bad_dvc_body");
        }
        if header.view > self.view {
            self.start_view_change(header.view);
        }
        if self.status != Status::ViewChange {
            return self.drop_message("view_already_started");
        }
        let dvc = DoViewChange {
            log_view: header.context,
            op: header.op,
            commit_max: header.commit,
            headers,
            nacks: header.do_view_change_nacks(),
        };
        self.dvc_from.insert(header.replica, dvc);
        self.svc_from.insert(header.replica);
        self.maybe_send_do_view_change();
        self.maybe_start_view();
    }

    fn maybe_start_view(&mut self) {
        if self.status != Status::ViewChange || self.dvc_from.len() < self.quorum {
            return;
        }
        if !self.dvc_from.contains_key(&self.config.replica) {
            return;
        }
        // The canonical log: highest log_view, then highest op.
        let mut canonical =
            self.dvc_from.values().max_by_key(|dvc| (dvc.log_view, dvc.op)).expect("quorum is not empty").clone();
        // Every prepare carries its primary's commit point, so the canonical
        // head also tells how far the log was committed when it was made.
        let head_commit = canonical.headers.first().map(|h| h.commit).unwrap_or(0);
        let commit_max = self.dvc_from.values().map(|dvc| dvc.commit_max).max().unwrap_or(0).max(head_commit);
        if let Some(head) = self.nacked_head(&canonical, commit_max) {
            assert!(head >= commit_max && head < canonical.op, "a nack truncation keeps every known commit");
            crate::marks::hit(crate::marks::VIEW_CHANGE_NACK_TRUNCATION);
            tracing::info!(
                replica = self.config.replica,
                view = self.view,
                from = canonical.op,
                to = head,
                "view change truncates ops a nack quorum never acknowledged"
            );
            canonical.op = head;
            canonical.headers.retain(|h| h.op <= head);
        }
        if self.awaits_more_do_view_changes(&canonical, commit_max) {
            return;
        }
        if canonical.op > self.checkpoint_op + self.config.journal_slot_count - 1 {
            // Too far behind to hold the canonical log: catch up by state
            // transfer first; until then the view change times out and the
            // next view has another primary.
            self.request_catch_up();
            return;
        }
        self.advance_commit_max(commit_max.min(canonical.op));
        if let Some(why) = self.conflicts_with_commits(canonical.op, &canonical.headers) {
            // The view change then times out and the next view tries again.
            return self.refuse_conflicting_log(why);
        }
        let truncate_after = self.install_log(canonical.op, &canonical.headers);
        self.status = Status::Normal;
        self.view_change_timeout.stop();
        self.log_view = self.view;
        self.write_superblock();
        self.truncate_journal(truncate_after);
        self.pipeline.clear();
        for op in self.commit_max + 1..=self.op {
            let entry = self.log.get(&op);
            let mut oks = BTreeSet::new();
            if entry.is_some_and(|e| e.body.is_some()) {
                oks.insert(self.config.replica);
            }
            let checksum = entry.map(|e| e.header.checksum).unwrap_or(0);
            self.pipeline.push_back(Pipelined { op, checksum, oks, clients: None });
        }
        assert!(self.pipeline.len() <= VIEW_HEADERS_MAX);
        self.last_timestamp = self.newest_timestamp();
        for replica in 0..self.config.replica_count {
            if replica != self.config.replica {
                self.send_start_view(replica);
            }
        }
        self.commit_pipeline();
        // After the pipeline exists: an adopted body is rewritten to the
        // journal and counts toward the quorum only once durable again
        // (`on_prepare_durable`), like any repaired body of the primary.
        self.adopt_unchained();
    }

    /// Replicas whose nacks prove that no replication quorum acknowledged a
    /// prepare: if `nack_quorum` replicas never acknowledged it, at most
    /// `replica_count - nack_quorum = quorum - 1` did, one short of a
    /// commit. 3 replicas: quorum 2, nack quorum 2; 5 replicas: quorum 3,
    /// nack quorum 3. Never more than a quorum, so the do_view_changes a
    /// view change waits for can always hold enough of them.
    fn nack_quorum(&self) -> usize {
        let replicas = self.config.replica_count as usize;
        let nack_quorum = replicas - self.quorum + 1;
        assert!(nack_quorum + self.quorum == replicas + 1, "a nack quorum and a quorum share one replica");
        assert!(nack_quorum >= 1 && nack_quorum <= self.quorum);
        nack_quorum
    }

    /// Where the canonical log must end because a nack quorum never
    /// acknowledged one of its uncommitted prepares (TigerBeetle's nacks in
    /// the view change): that prepare was never committed, and no prepare
    /// above it was either (commits are a prefix, the hash chain ties
    /// each op to the one below). Without this, a prepare whose only copies
    /// were lost (a wiped disk held them) wedges the new view: its header is
    /// in the canonical log, and no replica can repair its body.
    ///
    /// The lowest nacked op above every known commit wins, provided the
    /// canonical log holds the header the new head needs.
    fn nacked_head(&self, canonical: &DoViewChange, commit_max: u64) -> Option<u64> {
        let nack_quorum = self.nack_quorum();
        let lowest_first = canonical.headers.iter().rev().filter(|h| h.op > commit_max);
        for prepare in lowest_first {
            let nacks = self.dvc_from.values().filter(|dvc| dvc.nacks(prepare)).count();
            let head = prepare.op - 1;
            if nacks >= nack_quorum && canonical.headers.iter().any(|h| h.op == head) {
                return Some(head);
            }
        }
        None
    }

    /// An uncommitted op of the canonical log whose body no do_view_change
    /// in hand holds, and that too few of them nack to truncate: the view
    /// would start and then wait on a repair no replica may be able to
    /// answer. The do_view_changes still to come may hold it or nack it, so
    /// the first attempt out of normal status waits for every replica; a
    /// view change that already timed out does not (a replica that never
    /// sends one, down or recovering, may hold the body, and can serve its
    /// repair only once a view has started).
    fn awaits_more_do_view_changes(&self, canonical: &DoViewChange, commit_max: u64) -> bool {
        if self.dvc_from.len() >= self.config.replica_count as usize || self.view_change_timeout.attempts() > 0 {
            return false;
        }
        canonical
            .headers
            .iter()
            .filter(|h| h.op > commit_max)
            .any(|prepare| !self.dvc_from.values().any(|dvc| dvc.holds(prepare)))
    }

    fn send_start_view(&mut self, to: u8) {
        let mut sv = self.new_header(Command::StartView);
        sv.op = self.op;
        sv.commit = self.commit_max;
        let message = Message::new(sv, Rc::from(encode_headers(&self.view_headers())));
        self.actions.push(Action::Send { to, message });
    }

    fn on_request_start_view(&mut self, header: &Header) {
        if header.context != 0 && !self.rejoining {
            // A rejoin probe: our view is a lower bound of every view we
            // voted for, which is what the rejoining replica must respect.
            crate::marks::hit(crate::marks::REJOIN_PROBE_ANSWERED);
            let mut answer = self.new_header(Command::RejoinView);
            answer.context = header.context;
            // Our head: bounds the committed ops the lost disk acknowledged.
            answer.op = self.op;
            answer.set_checksums(&[]);
            self.actions.push(Action::Send { to: header.replica, message: Message::empty(answer) });
            if self.status == Status::ViewChange
                && header.replica == self.primary_index(self.view)
                && header.replica != self.config.replica
            {
                // The primary of the view we are changing to lost its disk:
                // rejoining, it takes no start_view_change and sends no
                // do_view_change, so this view never starts. Move on now, as
                // the view-change timeout would after up to 1.4 s (swarm 116
                // before the repair rotation: two replicas sat in view 5,
                // whose primary was rejoining, past the liveness bound).
                // Safe: a replica may start a view change at any moment.
                crate::marks::hit(crate::marks::VIEW_CHANGE_SKIPPED_REJOINING_PRIMARY);
                self.start_view_change(self.view + 1);
            }
        }
        if self.status == Status::Normal && self.is_primary() && header.view <= self.view {
            self.send_start_view(header.replica);
        }
    }

    fn on_rejoin_view(&mut self, header: &Header) {
        if !self.rejoining || header.context != self.rejoin_nonce {
            return self.drop_message("rejoin_view_not_for_this_rejoin");
        }
        let view = self.rejoin_views.entry(header.replica).or_default();
        *view = (*view).max(header.view);
        self.rejoin_op_max = self.rejoin_op_max.max(header.op);
    }

    /// The view a rejoining replica may join at the earliest: the newest
    /// view among a quorum of peers (not counting itself, which forgot its
    /// votes). Any view a quorum voted for, with or without this replica's
    /// lost vote, is reported by at least one of them.
    fn rejoin_view(&self) -> Option<u64> {
        if self.rejoin_views.len() < self.quorum {
            return None;
        }
        self.rejoin_views.values().max().copied()
    }

    fn request_start_view(&mut self, to: u8) {
        if to == self.config.replica {
            return;
        }
        let rsv = self.new_header(Command::RequestStartView);
        self.actions.push(Action::Send { to, message: Message::empty(rsv) });
    }

    fn on_start_view(&mut self, message: &Message) {
        let header = message.header;
        if header.view < self.view || (header.view == self.view && self.status == Status::Normal) {
            return self.drop_message("stale_view");
        }
        if header.replica != self.primary_index(header.view) {
            return self.drop_message("start_view_not_from_primary");
        }
        if self.rejoining && self.rejoin_view().is_none_or(|current| header.view < current) {
            // Possibly a stale start_view of a view this replica's lost disk
            // had already voted past: wait until a quorum told the view.
            return self.drop_message("rejoin_view_unknown");
        }
        let Ok(headers) = decode_headers(&message.body) else {
            return self.drop_message("bad_start_view_body");
        };
        if header.op > self.checkpoint_op + self.config.journal_slot_count - 1 {
            self.request_catch_up_from(header.replica);
            return self.drop_message("start_view_past_journal");
        }
        if !self.valid_view_headers(header.op, &headers) {
            return self.drop_message("bad_start_view_body");
        }
        if self.start_view_predates_commits(header.view, header.op) {
            crate::marks::hit(crate::marks::START_VIEW_PREDATES_COMMITS);
            return self.drop_message("start_view_predates_commits");
        }
        if let Some(why) = self.conflicts_with_commits(header.op, &headers) {
            return self.refuse_conflicting_log(why);
        }
        self.view = header.view;
        self.log_view = header.view;
        self.status = Status::Normal;
        self.pipeline.clear();
        self.svc_from.clear();
        self.dvc_from.clear();
        self.view_change_timeout.stop();
        let random = self.next_random();
        self.normal_timeout.start(random);
        self.primary_op = header.op;
        self.primary_shown_op = header.op;
        self.advance_commit_max(header.commit.min(header.op));
        let truncate_after = self.install_log(header.op, &headers);
        self.last_timestamp = self.newest_timestamp();
        if self.rejoining || self.lost_prepares_op_max.is_some() {
            // What this replica lost may have been acknowledged, and every
            // committed op of those is at or below this floor (`nack_floor`);
            // durable with the superblock below, before anything of this
            // view is sent.
            let lost = self.lost_prepares_op_max.take().unwrap_or(0);
            let reported = if self.rejoining { self.rejoin_op_max } else { 0 };
            self.nack_floor = self.nack_floor.max(self.op).max(lost).max(reported);
        }
        if self.rejoining {
            crate::marks::hit(crate::marks::REJOIN_COMPLETED);
            self.rejoining = false;
            self.rejoin_views.clear();
            self.rejoin_op_max = 0;
            tracing::info!(replica = self.config.replica, view = self.view, "rejoined the cluster after a format");
        }
        self.write_superblock();
        self.truncate_journal(truncate_after);
        for op in self.commit_min + 1..=self.op {
            if self.has_body(op) {
                self.send_prepare_ok(op);
                break;
            }
        }
        self.commit_journal();
        self.repair();
    }

    /// Make this replica's log end at `op` with the canonical `headers`
    /// (newest first, chained). Entries the chain contradicts are dropped.
    /// View headers as a peer must send them: prepares of this group, newest
    /// first, strictly descending, none above the claimed head, the first one
    /// the head itself (unless the log is empty past a checkpoint).
    fn valid_view_headers(&self, op: u64, headers: &[Header]) -> bool {
        let group = headers.iter().all(|h| {
            h.command == Command::Prepare && h.cluster == self.config.cluster && h.namespace == self.config.namespace
        });
        let descending = headers.windows(2).all(|w| w[0].op > w[1].op);
        let bounded = headers.len() <= VIEW_HEADERS_MAX + 1 && headers.iter().all(|h| h.op <= op);
        let headed = headers.first().is_some_and(|h| h.op == op);
        group && descending && bounded && headed
    }

    /// Whether a start_view of `view` whose log ends at `op` was sent before
    /// ops this replica knows are committed were prepared: the op at its
    /// commit point was prepared in `view` or a later view, so after `view`
    /// began, and the start_view's log is a prefix of that view's log (a
    /// late or repeated frame), not a contradiction. Swarm seed 11322: a
    /// replica rejoining after both checkpoint copies rotted installed
    /// view 1's checkpoint at op 32 (prepared in view 1) from a peer, then a
    /// clogged link delivered view 1's start_view of op 25, which it
    /// refused as a conflict: the simulator's Agreement checker counts
    /// every refusal as a safety violation somewhere. A committed op
    /// prepared in an earlier view is in every later view's log, so a
    /// start_view without it does contradict it (`conflicts_with_commits`).
    fn start_view_predates_commits(&self, view: u64, op: u64) -> bool {
        op < self.commit_min && self.header(self.commit_min).is_some_and(|committed| committed.view >= view)
    }

    /// Why a canonical log cannot be installed here: it ends below ops this
    /// replica committed, or names a different op where this one committed.
    fn conflicts_with_commits(&self, op: u64, headers: &[Header]) -> Option<String> {
        if op < self.commit_min {
            return Some(format!("canonical log ends at op {op} below commit_min {}", self.commit_min));
        }
        headers
            .iter()
            .filter(|h| h.op <= self.commit_min || h.op <= self.checkpoint_op)
            .find(|h| self.header(h.op).is_some_and(|mine| mine.checksum != h.checksum))
            .map(|h| format!("committed op {} differs from the canonical log", h.op))
    }

    fn refuse_conflicting_log(&mut self, why: String) {
        tracing::error!(replica = self.config.replica, view = self.view, "refusing a canonical log: {why}");
        crate::marks::hit(crate::marks::REFUSE_CONFLICTING_LOG);
        self.stats.committed_conflicts += 1;
        self.stats.last_conflict = Some(format!("view {}: {why}", self.view));
        self.drop_message("log_conflicts_with_commits");
    }

    /// Returns where the journal must be truncated: the caller asks for it
    /// only after the superblock with the new view headers is durable. The
    /// other order loses data: truncate, then a failed superblock write and
    /// a power loss bring back the old view headers naming ops the journal
    /// no longer holds (disk-rot seed 322 wedged a group that way).
    #[must_use = "the truncation must follow the superblock write"]
    fn install_log(&mut self, op: u64, headers: &[Header]) -> Option<u64> {
        debug_assert!(self.conflicts_with_commits(op, headers).is_none());
        let mut truncate_after = None;
        if self.op > op {
            crate::marks::hit(crate::marks::VIEW_CHANGE_TRUNCATE);
            let after = op.max(self.checkpoint_op);
            self.log = {
                let mut log = std::mem::take(&mut self.log);
                let _above = log.split_off(&(after + 1));
                log
            };
            truncate_after = Some(after);
        }
        for header in headers {
            if header.op <= self.commit_min || header.op <= self.checkpoint_op {
                continue;
            }
            match self.log.get(&header.op) {
                Some(entry) if entry.header.checksum == header.checksum => {}
                _ => {
                    self.log.insert(header.op, Entry { header: *header, body: None });
                }
            }
        }
        self.op = op.max(self.checkpoint_op);
        // Walk down from the head. A canonical header stays; any other
        // uncommitted entry stays only if the entry above it is present and
        // names it as parent. An entry below a gap cannot be vouched for: it
        // may be a stale prepare of an older view (this replica's history
        // in a minority), and kept it would go out in this replica's view
        // headers as part of the new view's log. Repair refills the gaps by
        // checksum.
        let canonical: BTreeSet<u64> = headers.iter().map(|h| h.op).collect();
        let mut upper = self.op;
        while upper > self.commit_min + 1 {
            let lower = upper - 1;
            let vouched = canonical.contains(&lower)
                || match (self.log.get(&upper), self.log.get(&lower)) {
                    (Some(above), Some(entry)) => above.header.parent == entry.header.checksum,
                    _ => false,
                };
            if !vouched
                && lower > self.checkpoint_op
                && let Some(entry) = self.log.remove(&lower)
            {
                self.keep_unvouched_aside(entry);
                self.drop_message("unvouched_entry_below_canonical_log");
            }
            upper -= 1;
        }
        truncate_after
    }

    /// An entry `install_log` could not vouch for leaves the log, but its
    /// body is kept aside with the prepares a restart could not chain: it
    /// is durable in this replica's journal and may be the last copy of a
    /// committed op (partition-misdirect seed 1032: a replica held ops
    /// 17..33 in its journal, a start_view's headers began above a gap over
    /// them, and the peers had checkpointed past them with a partition gap
    /// they could not serve; dropped, nothing could bring them back). Repair
    /// adopts it once a canonical child names it, as after a restart. Kept
    /// aside it also raises this replica's nack floor, as a restart's do
    /// (`do_view_change_nacks`): it is durable here and may have been
    /// acknowledged. (A restart would read it back from the journal and keep
    /// it aside anyway: a running replica now holds what its restart would.)
    fn keep_unvouched_aside(&mut self, entry: Entry) {
        let Some(body) = entry.body else { return };
        crate::marks::hit(crate::marks::UNVOUCHED_PREPARE_KEPT_ASIDE);
        self.unchained.insert(entry.header.checksum, Message::from_parts(entry.header, body));
        // Past the bound the oldest go first: repair walks down from the
        // gap, so the highest ops are adopted first.
        while self.unchained.len() > self.unchained_max() {
            let oldest = self
                .unchained
                .iter()
                .min_by_key(|(_, message)| (message.header.view, message.header.op))
                .map(|(checksum, _)| *checksum)
                .expect("over the bound, so not empty");
            self.unchained.remove(&oldest);
        }
    }

    /// How many prepares `unchained` holds at most: what one journal holds
    /// (the entries `install_log` puts aside left the log, which that
    /// bounds too), and never fewer than a restart keeps.
    fn unchained_max(&self) -> usize {
        UNCHAINED_PREPARES_MAX.max(usize::try_from(self.config.journal_slot_count).unwrap_or(usize::MAX))
    }

    fn truncate_journal(&mut self, truncate_after: Option<u64>) {
        if let Some(after_op) = truncate_after {
            // The truncation takes the disk copies of the prepares kept
            // aside above it too, and no canonical log of this view or a
            // later one names them (this view's ends below). Kept in memory
            // they would raise the do_view_change's nack floor past what the
            // disk holds (disk-rot seed 397, story `aside_truncated`).
            self.unchained.retain(|_, message| message.header.op <= after_op);
            self.actions.push(Action::TruncateLog { after_op });
        }
    }

    fn write_superblock(&mut self) {
        let state = DurableState {
            view: self.view,
            log_view: self.log_view,
            commit: self.commit_min.max(self.superblock_commit),
            view_headers: self.view_headers(),
            rejoining: self.rejoining,
            nack_floor: self.nack_floor,
        };
        self.superblock_commit = state.commit;
        self.actions.push(Action::WriteSuperblock { state });
    }

    // --- repair and state transfer ---------------------------------------------

    fn repair(&mut self) {
        // What this replica kept aside at restart comes before any peer.
        self.adopt_unchained();
        let mut requests: Vec<(u64, u128)> = Vec::new();
        // Missing headers and bodies between the commit point and the head.
        let mut op = self.op;
        while op > self.commit_min && requests.len() < REPAIR_REQUESTS_MAX {
            match self.log.get(&op) {
                Some(entry) if entry.body.is_none() => requests.push((op, entry.header.checksum)),
                Some(_) => {}
                None => {
                    if let Some(child) = self.log.get(&(op + 1)) {
                        requests.push((op, child.header.parent));
                    }
                }
            }
            op -= 1;
        }
        // A backup behind the primary asks for what follows its head.
        if self.status == Status::Normal && !self.is_primary() {
            let mut next = self.op + 1;
            while next <= self.primary_op && requests.len() < REPAIR_REQUESTS_MAX {
                requests.push((next, 0));
                next += 1;
            }
        }
        // Committed but not applied, and not held at all: ask anyway.
        if self.commit_min < self.commit_max
            && !self.log.contains_key(&(self.commit_min + 1))
            && !requests.iter().any(|&(op, _)| op == self.commit_min + 1)
        {
            requests.push((self.commit_min + 1, 0));
        }
        self.repair_rounds += 1;
        for (op, checksum) in requests {
            self.stats.repairs_requested += 1;
            let to = self.repair_target(op);
            let mut request = self.new_header(Command::RequestPrepare);
            request.op = op;
            request.parent = checksum;
            request.context = self.checkpoint_offset_wanted();
            self.actions.push(Action::Send { to, message: Message::empty(request) });
        }
    }

    /// The peer a repair request for `op` goes to: peers in turn, one step
    /// per repair round, so a body only one peer holds is asked of it
    /// within `replica_count - 1` rounds; `op` spreads one round's requests
    /// over the peers. A random pick could ask the wrong peer for long
    /// (swarm seed 837: a new primary asked the one backup without op 7's
    /// body 14 rounds in a row, while the other held it, and abdicated in
    /// a healthy cluster).
    fn repair_target(&self, op: u64) -> u8 {
        let others = u64::from(self.config.replica_count - 1).max(1);
        let mut replica = ((self.repair_rounds + op) % others) as u8;
        if replica >= self.config.replica {
            replica += 1;
        }
        assert!(replica < self.config.replica_count || self.config.replica_count == 1);
        replica.min(self.config.replica_count - 1)
    }

    fn on_request_prepare(&mut self, header: &Header) {
        let op = header.op;
        if op <= self.checkpoint_op && op > 0 {
            return self.send_checkpoint(header.replica, op, header.context);
        }
        let held = self.log.get(&op).is_some_and(|e| e.body.is_some() && e.header.checksum == header.parent);
        if header.parent != 0
            && !held
            && let Some(message) = self.unchained.get(&header.parent).filter(|m| m.header.op == op)
        {
            // Asked for by checksum: the requester's header vouches for it,
            // not this replica, so a prepare kept aside may answer.
            crate::marks::hit(crate::marks::REPAIR_BY_CHECKSUM);
            let message = message.clone();
            self.actions.push(Action::Send { to: header.replica, message });
            return;
        }
        let Some(entry) = self.log.get(&op) else { return };
        let Some(body) = entry.body.clone() else { return };
        // Without a checksum, only an op this replica vouches for in the
        // current view may go out (the requester chains it to its head).
        let matches = if header.parent == 0 {
            self.status == Status::Normal && (op <= self.commit_min || self.is_primary())
        } else {
            crate::marks::hit(crate::marks::REPAIR_BY_CHECKSUM);
            entry.header.checksum == header.parent
        };
        if matches {
            let message = Message::from_parts(entry.header, body);
            self.actions.push(Action::Send { to: header.replica, message });
        }
    }

    /// Ask peers for the op after the commit point: one whose journal no
    /// longer holds it answers with its checkpoint (state transfer).
    fn request_catch_up(&mut self) {
        for replica in 0..self.config.replica_count {
            if replica != self.config.replica {
                self.request_catch_up_from(replica);
            }
        }
    }

    fn request_catch_up_from(&mut self, to: u8) {
        let mut request = self.new_header(Command::RequestPrepare);
        request.op = self.commit_min + 1;
        request.context = self.checkpoint_offset_wanted();
        self.actions.push(Action::Send { to, message: Message::empty(request) });
    }

    /// What a request that a peer may answer with its checkpoint asks for:
    /// the first snapshot byte this replica's assembly lacks (0 when it
    /// assembles none; a peer whose snapshot is another one starts over).
    fn checkpoint_offset_wanted(&self) -> u64 {
        self.checkpoint_assembly.as_ref().map_or(0, CheckpointAssembly::first_missing_offset)
    }

    /// Answer a catch-up request with the chunks of the checkpoint from
    /// `from_offset_bytes` on (`state_transfer::chunks_from`): each a frame
    /// within the group's message size, however large the snapshot.
    ///
    /// Only a checkpoint durable here, and only while this replica's state
    /// holds every message it applied (no gap a state transfer left): the
    /// receiver drops its own journal's copy of the ops it covers, so what
    /// it installs must be on this disk. Otherwise nothing: the requester
    /// asks again, or another peer answers.
    fn send_checkpoint(&mut self, to: u8, op_wanted: u64, from_offset_bytes: u64) {
        let Some(served) = self.checkpoint_served.as_ref().filter(|served| served.anchor.op >= op_wanted) else {
            crate::marks::hit(crate::marks::CHECKPOINT_NOT_DURABLE_UNSERVED);
            return;
        };
        if !self.state_machine.checkpoint_ready() {
            crate::marks::hit(crate::marks::CHECKPOINT_WITH_GAP_UNSERVED);
            self.send_checkpoint_anchor(to);
            return;
        }
        // The snapshot as of the checkpoint, not the current state: the
        // anchor names the checkpoint op, and the receiver applies from there.
        let anchor = served.anchor;
        let chunks = chunks_from(
            anchor,
            &served.snapshot,
            served.snapshot_checksum,
            from_offset_bytes,
            self.config.message_size_max_bytes,
            if crate::buggify!(crate::buggify::CHECKPOINT_ANSWER_ONE_CHUNK) {
                1
            } else {
                self.config.checkpoint_chunks_per_answer_max
            },
        );
        for chunk in chunks {
            let mut header = self.new_header(Command::Checkpoint);
            header.op = anchor.op;
            header.commit = self.commit_max;
            // The newest view this sender holds the log of, i.e. the newest
            // view it knows started: its own view may be a view change that
            // never completes (see `on_checkpoint`).
            header.context = self.log_view;
            let message = Message::new(header, Rc::from(chunk.encode()));
            assert!(message.header.size <= self.config.message_size_max_bytes, "a chunk fits one frame");
            self.actions.push(Action::Send { to, message });
        }
    }

    fn on_checkpoint(&mut self, message: &Message) {
        let Ok(chunk) = CheckpointChunk::decode(&message.body) else {
            return self.drop_message("bad_checkpoint_body");
        };
        let op = chunk.anchor.op;
        if op <= self.commit_min || op != message.header.op || !chunk.anchor.valid_checksum() {
            return self.drop_message("checkpoint_not_needed");
        }
        // The checkpoint must sit on this replica's chain when it has the
        // header, or be committed per the sender.
        if let Some(mine) = self.header(op)
            && mine.checksum != chunk.anchor.checksum
        {
            return self.drop_message("checkpoint_conflicts");
        }
        if op > message.header.commit {
            return self.drop_message("checkpoint_not_committed");
        }
        let (anchor, last_of_answer) = (chunk.anchor, chunk.last_of_answer);
        let Some(snapshot) = self.assemble_checkpoint(chunk) else {
            if last_of_answer && self.checkpoint_assembly.is_some() {
                // The sender's answer is over and bytes are missing: ask it
                // for the next piece now, not a repair round later.
                crate::marks::hit(crate::marks::CHECKPOINT_NEXT_PIECE_ASKED);
                self.request_catch_up_from(message.header.replica);
            }
            return;
        };
        let checkpoint = Checkpoint { anchor, snapshot };
        if self.restore_checkpoint(&checkpoint).is_err() {
            return self.drop_message("bad_checkpoint_body");
        }
        self.stats.state_transfers += 1;
        crate::marks::hit(crate::marks::STATE_TRANSFER);
        // Newer only if a newer view started: a sender that is merely in a
        // view change (its log_view older than its view) says nothing about
        // this replica's log, and parking this replica in `Recovering` for a
        // view that may never start leaves no quorum to start any view
        // (disk-rot seeds 2262, 4199, 5559: one replica in ViewChange, one
        // Recovering with a faulty journal, one Recovering from such a
        // checkpoint). `log_view <= view`, so this never claims a view the
        // sender has not voted for.
        let started_view = message.header.context.min(message.header.view);
        let newer_view = started_view > self.view && self.status == Status::Normal;
        if newer_view {
            // The cluster moved on: this replica's log past the checkpoint
            // may be a deposed primary's, and in its old view it would keep
            // acknowledging (or, as that primary, preparing) on top of
            // another history's checkpoint. It acknowledges nothing until
            // the new view's start_view installs the canonical log. (It
            // still restores: refusing would loop with a start_view that is
            // past its journal and asks for this very checkpoint.)
            // It is in that view's change, as it would be after a restart
            // (view past log_view): a lagging voter whose older log_view
            // never wins a view change against the quorum that started the
            // newer view. `Recovering` instead took its vote away: with the
            // new view's primary down and another replica's journal faulty,
            // no view could start (disk-rot seeds 1963, 5559).
            crate::marks::hit(crate::marks::CHECKPOINT_FROM_NEWER_VIEW);
            self.status = Status::ViewChange;
            self.svc_from = BTreeSet::from([self.config.replica]);
            self.dvc_from.clear();
            self.dvc_sent = false;
            let random = self.next_random();
            self.view_change_timeout.start(random);
            self.pipeline.clear();
            // Its old view is over: a start_view of it (from the deposed
            // primary, answering this replica's own probes) may end below
            // the checkpoint just restored (view-churn seed 16828). The view
            // is a promise, durable before any probe claims it.
            self.view = started_view;
        }
        // Only the checkpoint itself is vouched for. The sender's commit
        // number says nothing about this replica's own suffix, which may be a
        // stale one from an older view: applying it up to that number would
        // commit ops the cluster never chose.
        self.advance_commit_max(op);
        self.hand_checkpoint_to_node(checkpoint);
        if newer_view {
            // After the checkpoint: a superblock naming ops past the durable
            // checkpoint would restart into a log the journal cannot hold
            // (session-churn seed 10322: "log outgrew the journal").
            self.write_superblock();
            self.request_start_view(self.primary_index(self.view));
        }
        self.commit_journal();
    }

    /// A checkpoint this replica cannot serve (its state has a gap only
    /// peers can fill) still names a committed op: its anchor. Sent to a
    /// peer that asked to catch up, it lets that peer commit the ops its
    /// own journal holds up to it (`on_checkpoint_anchor`). Without it,
    /// partition-misdirect seed 1032 wedged: the only copies of the
    /// messages the peers' gap lacked were in the asking replica's journal,
    /// never applied, and it could apply them only after a checkpoint the
    /// peers could serve only once those messages were back.
    fn send_checkpoint_anchor(&mut self, to: u8) {
        let anchor = self.checkpoint_anchor;
        if anchor.op == 0 {
            return;
        }
        debug_assert!(anchor.op <= self.commit_min, "a checkpoint is of applied ops");
        let mut header = self.new_header(Command::Headers);
        header.op = anchor.op;
        header.commit = self.commit_min;
        let message = Message::new(header, Rc::from(encode_headers(&[anchor])));
        self.actions.push(Action::Send { to, message });
    }

    /// A peer's checkpoint anchor (`send_checkpoint_anchor`): a committed
    /// op's header. When this replica's log holds every op from its commit
    /// point up to it, bodies included, and they chain by checksum from
    /// its own committed op to the anchor, they are the committed ops
    /// (each header's checksum covers its body and its parent's checksum):
    /// it applies them, whatever its status. Otherwise nothing.
    fn on_checkpoint_anchor(&mut self, message: &Message) {
        let Ok(headers) = decode_headers(&message.body) else {
            return self.drop_message("bad_headers_body");
        };
        let [anchor] = headers.as_slice() else {
            return self.drop_message("bad_headers_body");
        };
        if anchor.op != message.header.op || anchor.op > message.header.commit || !anchor.valid_checksum() {
            return self.drop_message("bad_headers_body");
        }
        if anchor.op <= self.commit_min {
            return self.drop_message("checkpoint_anchor_not_needed");
        }
        let mut expected = anchor.checksum;
        for op in (self.commit_min + 1..=anchor.op).rev() {
            let Some(entry) = self.log.get(&op).filter(|e| e.header.checksum == expected && e.body.is_some()) else {
                return self.drop_message("checkpoint_anchor_not_in_log");
            };
            expected = entry.header.parent;
        }
        if self.header(self.commit_min).is_none_or(|committed| committed.checksum != expected) {
            return self.drop_message("checkpoint_anchor_not_in_log");
        }
        crate::marks::hit(crate::marks::CHECKPOINT_ANCHOR_COMMITTED_OWN_JOURNAL);
        self.advance_commit_max(anchor.op);
        self.apply_held_through(anchor.op);
        assert_eq!(self.commit_min, anchor.op, "every op up to the anchor was checked held");
        self.maybe_checkpoint();
    }

    /// Take `chunk` into the assembly of its snapshot; the whole snapshot
    /// once the last byte is in and matches its checksum. A chunk of a newer
    /// checkpoint than the one assembling replaces it (the older is of no
    /// use once the newer is restored); one of an older is dropped.
    fn assemble_checkpoint(&mut self, chunk: CheckpointChunk) -> Option<Vec<u8>> {
        let commit_min = self.commit_min;
        self.checkpoint_assembly.take_if(|assembly| assembly.anchor.op <= commit_min);
        let replaces = match &self.checkpoint_assembly {
            None => true,
            Some(assembly) if assembly.holds_pieces_of(&chunk) => false,
            Some(assembly) if assembly.anchor.op < chunk.anchor.op => true,
            // Another replica's snapshot of the same checkpoint: its session
            // table keeps the reply headers that replica made (they name it
            // and its view), so snapshots of one checkpoint differ between
            // replicas, and one replica's may change when it makes the
            // checkpoint again after a crash. Each is as good as the one
            // assembling, but the sender of that one may be gone: past a
            // bound of such refusals with no progress, the assembly starts
            // over (swarm 1407: a replica asked four peers 490,000 times for
            // the rest of a snapshot none of them held).
            Some(assembly) if assembly.anchor.checksum == chunk.anchor.checksum => {
                crate::marks::hit(crate::marks::CHECKPOINT_OTHER_SNAPSHOT);
                self.checkpoint_other_snapshot_refused += 1;
                if self.checkpoint_other_snapshot_refused < CHECKPOINT_OTHER_SNAPSHOT_REFUSED_MAX {
                    self.drop_message("checkpoint_other_snapshot");
                    return None;
                }
                crate::marks::hit(crate::marks::CHECKPOINT_ASSEMBLY_RESTARTED);
                self.checkpoint_other_snapshot_refused = 0;
                self.checkpoint_assembly = None;
                if chunk.offset_bytes != 0 {
                    // The next request asks from the start.
                    self.drop_message("checkpoint_other_snapshot");
                    return None;
                }
                true
            }
            Some(_) => {
                self.drop_message("checkpoint_older_than_assembly");
                return None;
            }
        };
        if replaces {
            match CheckpointAssembly::of(&chunk) {
                Ok(assembly) => self.checkpoint_assembly = Some(assembly),
                Err(_) => {
                    self.drop_message("checkpoint_too_large");
                    return None;
                }
            }
        }
        let assembly = self.checkpoint_assembly.as_mut().expect("set above");
        if assembly.take(chunk).is_err() {
            self.drop_message("checkpoint_chunk_overlaps");
            return None;
        }
        self.checkpoint_other_snapshot_refused = 0;
        if !assembly.is_complete() {
            return None;
        }
        let assembly = self.checkpoint_assembly.take().expect("complete above");
        if assembly.chunks_taken() > 1 {
            crate::marks::hit(crate::marks::CHECKPOINT_IN_CHUNKS);
        }
        let snapshot = assembly.into_snapshot();
        if snapshot.is_none() {
            self.drop_message("checkpoint_snapshot_checksum");
        }
        snapshot
    }

    // --- helpers ----------------------------------------------------------------

    fn new_header(&self, command: Command) -> Header {
        let mut header = Header::new(command, self.config.cluster);
        header.namespace = self.config.namespace;
        header.view = self.view;
        header.replica = self.config.replica;
        header.set_checksums(&[]);
        header
    }

    fn broadcast(&mut self, message: &Message) {
        for replica in 0..self.config.replica_count {
            if replica != self.config.replica {
                self.actions.push(Action::Send { to: replica, message: message.clone() });
            }
        }
    }

    fn broadcast_empty(&mut self, command: Command) {
        let header = self.new_header(command);
        self.broadcast(&Message::empty(header));
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: jitter only, never reaches safety.
        self.prng = self.prng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.prng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn check_invariants(&self) {
        assert!(self.commit_min <= self.commit_max, "applied past the known commit");
        assert!(self.checkpoint_op <= self.commit_min, "checkpoint of an unapplied op");
        assert!(self.log_view <= self.view, "log_view ahead of view");
        assert!(self.op >= self.checkpoint_op);
        assert!(self.op - self.checkpoint_op <= self.config.journal_slot_count, "log outgrew the journal");
        assert!(self.pipeline.len() <= VIEW_HEADERS_MAX);
        assert!(self.unchained.len() <= self.unchained_max());
        assert!(self.ahead.len() <= AHEAD_PREPARES_MAX);
        debug_assert!(self.ahead.iter().all(|(&op, message)| op == message.header.op));
        debug_assert!(self.unchained.iter().all(|(checksum, message)| *checksum == message.header.checksum));
        assert!(!self.rejoining || self.status == Status::Recovering, "a rejoining replica takes part in nothing");
        assert!(
            self.lost_prepares_op_max.is_none() || self.status == Status::Recovering,
            "a replica that cannot say what it acknowledged takes part in nothing"
        );
        assert!(
            self.status != Status::ViewChange || self.view_change_timeout.is_ticking(),
            "a view change always has a timeout running"
        );
        debug_assert!(self.log.keys().next_back().is_none_or(|top| *top <= self.op));
        if self.status == Status::Normal && self.is_primary() {
            debug_assert!(self.pipeline.iter().all(|p| p.op > self.commit_max));
        }
    }
}
