//! The per-process node and the per-group driver.
//!
//! `Group` is one VSR group on this replica: its replica, storage and the
//! view it last reported. `Node` owns the groups this process runs (each on
//! the shard its namespace hashes to), the owner table that says which shard
//! holds the connection to each peer, and the frame drop counters; it routes
//! incoming frames to their group, hops outgoing ones to the shard that owns
//! the connection, executes each replica's actions in order under the
//! ordering contract, persists the partition log, ticks the timers, and
//! serves and fills partition state data after a state transfer.

use std::future::{Future, poll_fn};
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, Header, Refusal};
use shoal_vsr::io::Io;
use shoal_vsr::journal::{FlushInFlight, InstalledDrain, JournalError, SpareCleared, StagedDrain};
use shoal_vsr::message::Message;
use shoal_vsr::replica::{Action, Source};
use shoal_vsr::state_machine::{SnapshotReader, put_bytes_with_len};

use super::join::join_in_order;
use super::storage::{GroupStorage, Promise, StorageError};
use super::{Flow, GroupReplica, NodeStop, NodeWorld, action_name};
use crate::frame::FrameVariant;
use crate::metrics::{DropReason, FrameDrops};
use crate::node::machine::GroupMachine;
use crate::owner_table::{ReplicaOwnerTable, ShardCount, ShardId};
use crate::partition_log::{BeginSync, SyncEnded};
use crate::partition_sm::PartitionSmError;
use crate::router::{route_consensus_control, route_request};

/// Messages one state-data answer carries (partition repair after a state
/// transfer); bounds the message size.
pub const STATE_DATA_MESSAGES_MAX: u64 = 64;
/// Applied partition messages a group keeps in memory inside a turn before
/// it writes them to the log without waiting for the turn's end: half of
/// what the partition state machine takes.
const PARTITION_DEFERRED_MESSAGES_MAX: usize = crate::partition_sm::PARTITION_PENDING_MESSAGES_MAX / 2;
/// Rounds of "run the actions, feed completions back" in one step. A
/// completion may commit and ask for replies, which ask for nothing more; a
/// replica that keeps asking past this is looping.
const DRAIN_ROUNDS_MAX: usize = 64;
/// Parts of a state-transfer fill appended per tick by the whole node
/// (`fill_next_parts`, the groups in turn), each at most
/// `FILL_APPEND_BYTES_PER_CALL_MAX` and one segment roll: a bound on what a
/// tick holds the shard's thread for (4 rolls: 8 fsyncs).
const FILL_CALLS_PER_TICK_MAX: usize = 4;
/// ... and once the tick's fill parts have held the node this long (on the
/// node's clock), no more this tick (one part always goes, so a fill never
/// stalls). On a slow disk a part (a segment's appends and its roll's two
/// fsyncs) takes 10-30 ms, and four parts for each of two groups held a
/// rejoined replica's process for 130 ms of every 10 ms tick: its journal
/// compactions beside the node took 0.4 s, and the acknowledgements they
/// held with them (swarm seed 7888, session 34).
const FILL_TICK_BUDGET_NS: u64 = shoal_vsr::replica::TICK_NS / 2;
/// Prepare bytes a group may stage while its checkpoint runs beside the
/// node, in units of its message size (a full slot each), before the next
/// prepare waits for the checkpoint's end: the journal's compaction at
/// that end copies every op above the checkpoint into the spare, on the
/// commit path. With 1 KiB messages the journal's window comes first; with
/// 1 MiB batches, unbounded, the copy of what a 50 ms checkpoint let in
/// cost more than the stall it took off (`bench server`, session 16:
/// batches of 1000 at 0.63-0.93x).
pub const CHECKPOINT_BESIDE_APPENDS_SLOTS_MAX: u64 = 4;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub cluster: u128,
    pub replica: u8,
    pub replica_count: u8,
    pub shard_count: ShardCount,
    pub data_dir: PathBuf,
    /// Bytes of partition log records the node reads back and checks per
    /// tick, one group per tick in turn (`Node::scrub`); 0 turns the
    /// scrubber off.
    pub scrub_bytes_per_tick: u64,
}

/// One VSR group on this replica.
pub struct Group<I: Io> {
    namespace: u64,
    /// The shard this group runs on (its namespace's route).
    shard: ShardId,
    storage: GroupStorage<I>,
    replica: GroupReplica<I>,
    /// The newest view reported to the hooks.
    view_reported: u64,
    /// Group commit: prepares staged (written when the group's next flush
    /// starts, each run of adjacent slots with one write) and not yet
    /// durable, in the order the replica asked, and the messages held until
    /// they are (see `Node::drain`).
    written: Vec<Action>,
    /// Prepares a completed flush made durable without their ring copies
    /// (a copy is written by the flush after its prepare's). The next flush
    /// writes the copies, beside the prepares staged meanwhile, and
    /// completes them; until then nothing may promise them and the messages
    /// that do stay held.
    awaiting_copy: Vec<Action>,
    /// Prepares a flush made durable with their copies during the group's
    /// compaction window, in its spare alone: nothing may promise them
    /// until the compaction's install ends (`Node::finish_compaction`
    /// reports them then).
    awaiting_install: Vec<Action>,
    /// The flush whose fsync runs while the node goes on handling frames
    /// (`Node::start_flush`), at most one per group.
    flushing: Option<GroupFlush<I>>,
    /// The checkpoint whose partition log sync and file run beside the
    /// node (`Node::start_checkpoint`), at most one.
    checkpointing: Option<GroupCheckpoint>,
    /// The journal's compaction to the group's last checkpoint, installed
    /// beside the node while the group appends to its spare
    /// (`Node::start_compaction`), at most one.
    compacting: Option<GroupCompaction>,
    held: Vec<Action>,
    /// The peer last asked for state data, the first missing offset then,
    /// and the end of the range asked: if nothing arrived since, that peer
    /// is skipped next time; once the range is filled, the next is asked
    /// at once.
    state_data_asked: Option<StateDataAsked>,
    /// The offset the scrubber reads next (`Node::scrub`).
    scrub_next_offset: u64,
    /// Passes the scrubber finished over this group's log (each from
    /// wherever it stood to the log's end, after a start from its first
    /// offset).
    scrub_passes_completed: u64,
}

impl<I: Io> std::fmt::Debug for Group<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("namespace", &self.namespace)
            .field("shard", &self.shard)
            .field("storage", &self.storage)
            .finish()
    }
}

impl<I: Io> Group<I> {
    /// Passes the scrubber finished over this group's partition log
    /// since the node started.
    pub fn scrub_passes_completed(&self) -> u64 {
        self.scrub_passes_completed
    }

    pub fn new(namespace: u64, shard: ShardId, storage: GroupStorage<I>, replica: GroupReplica<I>) -> Group<I> {
        assert_eq!(storage.config().namespace, namespace, "a group's storage is its own");
        let view_reported = replica.view();
        Group {
            namespace,
            shard,
            storage,
            replica,
            view_reported,
            written: Vec::new(),
            awaiting_copy: Vec::new(),
            awaiting_install: Vec::new(),
            flushing: None,
            checkpointing: None,
            compacting: None,
            held: Vec::new(),
            state_data_asked: None,
            scrub_next_offset: 0,
            scrub_passes_completed: 0,
        }
    }

    pub fn namespace(&self) -> u64 {
        self.namespace
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn replica(&self) -> &GroupReplica<I> {
        &self.replica
    }

    pub fn storage(&self) -> &GroupStorage<I> {
        &self.storage
    }

    /// Prepares written and waiting for the group's flush (with their
    /// ring copy).
    pub fn prepares_unflushed(&self) -> usize {
        self.written.len()
            + self.awaiting_copy.len()
            + self.awaiting_install.len()
            + self.flushing.as_ref().map_or(0, |f| f.prepares.len())
    }

    /// Prepares staged or written and not yet durable with their ring
    /// copy, or a flush in flight: a flush is due (or running) before what
    /// promises them may leave.
    fn flush_pending(&self) -> bool {
        !self.written.is_empty() || !self.awaiting_copy.is_empty() || self.flushing.is_some()
    }

    /// Something this group wrote is not durable yet: a flush to run or
    /// running, prepares waiting for the compaction's install, or a
    /// checkpoint running beside the node (a message that promises what it
    /// covers waits for its end).
    fn durability_pending(&self) -> bool {
        self.flush_pending() || !self.awaiting_install.is_empty() || self.checkpointing.is_some()
    }

    /// A checkpoint runs beside the node for this group
    /// (`Node::start_checkpoint`).
    pub fn checkpoint_in_flight(&self) -> bool {
        self.checkpointing.is_some()
    }

    /// A flush's fsync runs for this group.
    pub fn flush_in_flight(&self) -> bool {
        self.flushing.is_some()
    }

    /// The group's journal compaction is being installed beside the node
    /// (`Node::start_compaction`).
    pub fn compaction_in_flight(&self) -> bool {
        self.compacting.is_some()
    }

    /// Write the partition's applied messages to its log, without a sync:
    /// the commit path. The journal is the write-ahead log: it keeps every
    /// op above the durable checkpoint, and a restart replays them into the
    /// partition log, comparing what it holds and appending what it lost
    /// (`PartitionStateMachine::write_pending`). A gap left by a state
    /// transfer is not a failure: the messages wait in memory until a peer
    /// fills it.
    pub async fn write_partition(&mut self) -> Result<(), NodeStop> {
        let machine = self.replica.state_machine_mut();
        if machine.pending_count() == 0 {
            return Ok(());
        }
        partition_log_done(machine.write_pending().await)
    }

    /// Make the partition's applied messages durable: before a checkpoint
    /// lets the journal forget the ops that carry them. With a gap, what
    /// the log holds below it is synced.
    pub async fn sync_partition(&mut self) -> Result<(), NodeStop> {
        partition_log_done(self.replica.state_machine_mut().persist().await)
    }

    /// The ordering contract: what `header` promises is durable. A breach
    /// is a bug in the driver or the replica, never a condition to handle.
    fn assert_promise_durable(&self, header: &Header) {
        let Some(promise) = Promise::of(header) else { return };
        if let Err(why) = self.storage.check_durable(promise) {
            panic!(
                "ordering contract: replica {} group {:#x} would send {:?} (view {}, op {}) before what it promises \
                 is durable: {why}",
                self.replica.replica(),
                self.namespace,
                header.command,
                header.view,
                header.op
            );
        }
    }
}

/// A group's flush whose fdatasync runs while the node handles more
/// frames (`Node::start_flush`): the prepares it completes (those a flush
/// before made durable without their ring copy, then those it wrote), the
/// journal's half-done flush, and the fsync itself, a future that borrows
/// nothing of the node (it owns a handle of the journal file), polled by
/// whoever runs the node (`Node::poll_flushes`).
struct GroupFlush<I: Io> {
    prepares: Vec<Action>,
    journal: FlushInFlight<I::File>,
    sync: Pin<Box<dyn Future<Output = std::io::Result<()>>>>,
    /// The fsync's outcome once it ended, until the node completes it.
    synced: Option<std::io::Result<()>>,
}

/// A checkpoint running beside the node (`Node::start_checkpoint`): the
/// partition log's sync beside the checkpoint file's write and fsync, then
/// the file's install, from a future that borrows nothing of the node. The
/// group goes on committing meanwhile (its applied messages wait in memory
/// until the sync ends); the journal is compacted to the checkpoint when
/// the node completes it (`Node::finish_checkpoint`).
struct GroupCheckpoint {
    /// The replica's `Action::Checkpoint`, reported to the hooks at the end.
    action: Action,
    work: Pin<Box<dyn Future<Output = CheckpointWork>>>,
    /// The work's outcome once it ended, until the node completes it.
    done: Option<CheckpointWork>,
    /// Prepare bytes staged since it began (bounded: see
    /// `CHECKPOINT_BESIDE_APPENDS_SLOTS_MAX`).
    appended_bytes: u64,
}

/// A journal compaction whose spare is written and takes every journal
/// write (`GroupStorage::stage_compaction`), installed (the spare's fsync,
/// the exchange, the directory's fsync) by a future that borrows nothing of
/// the node, polled with the flushes. The group goes on appending meanwhile,
/// to the spare alone, and what it makes durable there waits for the
/// install (`Group::awaiting_install`); `Node::finish_compaction` takes the
/// outcome.
struct GroupCompaction {
    /// The replica's `Action::Checkpoint`, reported to the hooks at the end.
    action: Action,
    work: Pin<Box<dyn Future<Output = InstalledDrain>>>,
    /// The install's outcome once it ended, until the node completes it.
    done: Option<InstalledDrain>,
    /// When it was staged (`Io::now_ns`), for the hooks.
    staged_at_ns: u64,
}

/// How a checkpoint's work beside the node ended.
struct CheckpointWork {
    /// The partition log's sync, if it had records to promise.
    partition: Option<SyncEnded>,
    /// The checkpoint file's write and install; `None` when the partition
    /// log's sync failed first (the file may be installed only once the
    /// log holds every offset it counts).
    file: Option<Result<(), StorageError>>,
    /// The clear of the journal's spare, when it was untrusted
    /// (`GroupStorage::spare_clearer`).
    spare: Option<SpareCleared>,
}

/// One of the parts of a checkpoint's work that run at once: the
/// partition log's sync beside the file's write, and all of the checkpoint
/// (`Done`) beside the spare's clear.
enum CheckpointPart {
    Partition(Option<SyncEnded>),
    File(Result<(), StorageError>),
    Done { partition: Option<SyncEnded>, file: Option<Result<(), StorageError>> },
    Spare(SpareCleared),
}

/// The process-wide pieces a group sends through.
struct Links {
    replica: u8,
    owners: Arc<ReplicaOwnerTable>,
    drops: Arc<FrameDrops>,
}

impl Links {
    /// Hand a frame from shard `from` to shard `to` through its bounded
    /// inbox. `Err` when it was dropped; every drop is counted.
    fn hop<W: NodeWorld>(
        &self,
        from: ShardId,
        to: ShardId,
        variant: FrameVariant,
        world: &mut W,
    ) -> Result<(), DropReason> {
        if from == to {
            return Ok(());
        }
        let hopped = world.hop(from, to, variant);
        if let Err(reason) = hopped {
            self.drops.bump(variant, reason);
        }
        hopped
    }

    /// Out through the shard that holds the connection to peer `to`.
    fn send_to_replica<W: NodeWorld>(&self, from: ShardId, to: u8, message: Message, world: &mut W) {
        assert_ne!(to, self.replica, "a replica never sends to itself");
        let Some(owner) = self.owners.owner(to) else {
            // No connection: the frame is lost like any other, and counted;
            // VSR retransmits once a connection is back.
            self.drops.bump(FrameVariant::Consensus, DropReason::UnknownReplica);
            return;
        };
        if self.hop(from, owner, FrameVariant::Consensus, world).is_ok() {
            world.send_to_replica(owner, to, message);
        }
    }
}

/// Where an incoming frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Handed to its group (which may still ignore it).
    Delivered,
    /// Dropped on the way (counted in `frame_drops_total`).
    Dropped { variant: FrameVariant, reason: DropReason },
    /// It reached the shard its route names, which runs no group for its
    /// namespace (counted). For a VSR frame this would wedge the group.
    NamespaceMiss { shard: ShardId, consensus_control: bool },
}

/// The shard that handles a frame from `source`, and the variant it hops
/// as: a peer's frame goes where `route_consensus_control` says, a client's
/// where `route_request` says. `None`: a client frame no route takes (the
/// node counts it as a failed forward). A world whose connections live on
/// another thread than the target's group (the server) hops the frame
/// with this same answer before the node sees it.
pub fn route_inbound(source: Source, header: &Header, shard_count: ShardCount) -> Option<(ShardId, FrameVariant)> {
    match source {
        Source::Replica(_) => Some((route_consensus_control(header, shard_count), FrameVariant::Consensus)),
        Source::Client(_) => {
            route_request(header, shard_count).ok().map(|target| (target, FrameVariant::ClientForward))
        }
    }
}

/// One replica process: its groups, owner table and drop counters.
pub struct Node<I: Io> {
    io: I,
    config: NodeConfig,
    groups: Vec<Group<I>>,
    links: Links,
    /// Inside a turn (`begin_turn`..`end_turn`), prepares staged by one
    /// event wait for the turn's end to start their flush together with
    /// those of the events after it; outside one, every event starts its
    /// group's flush (if none runs) before it returns.
    turn_open: bool,
    /// The group the scrubber reads next (`scrub_next_group`).
    scrub_group_next: usize,
    /// The group whose state-transfer fill appends next (`fill_next_parts`).
    fill_group_next: usize,
    /// While fills append: when the node's clock began this stretch of
    /// appending, and how long its fill parts have held the node since
    /// (`fill_next_parts` keeps that at most half).
    fill_stretch: Option<FillStretch>,
}

/// A stretch of state-transfer fill appends (`Node::fill_stretch`).
#[derive(Debug, Clone, Copy)]
struct FillStretch {
    began_ns: u64,
    spent_ns: u64,
}

impl<I: Io> std::fmt::Debug for Node<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("config", &self.config).field("groups", &self.groups).finish()
    }
}

impl<I: Io> Node<I> {
    /// A node over groups already opened (formatted, recovered or rejoining).
    /// The owner table and the drop counters belong to the process and
    /// outlive one node's life, so they are handed in.
    pub fn new(
        io: I,
        config: NodeConfig,
        groups: Vec<Group<I>>,
        owners: Arc<ReplicaOwnerTable>,
        drops: Arc<FrameDrops>,
    ) -> Node<I> {
        assert!(config.replica < config.replica_count, "replica index within the cluster");
        assert_eq!(owners.replica_count(), usize::from(config.replica_count));
        for (index, group) in groups.iter().enumerate() {
            assert!(config.shard_count.contains(group.shard), "group {index} runs on a shard of this process");
            assert!(groups[..index].iter().all(|other| other.namespace != group.namespace), "one group per namespace");
        }
        let links = Links { replica: config.replica, owners, drops };
        Node {
            io,
            config,
            groups,
            links,
            turn_open: false,
            scrub_group_next: 0,
            fill_group_next: 0,
            fill_stretch: None,
        }
    }

    /// The process's `Io` (its disk, clock and entropy).
    pub fn io(&self) -> &I {
        &self.io
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Host one more group (a partition whose topic the metadata group just
    /// committed). Its actions run from the next event on.
    pub fn add_group(&mut self, group: Group<I>) {
        assert!(self.config.shard_count.contains(group.shard), "the group runs on a shard of this process");
        assert!(self.group_of(group.namespace).is_none(), "one group per namespace");
        self.groups.push(group);
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn group(&self, group: usize) -> &Group<I> {
        &self.groups[group]
    }

    pub fn group_mut(&mut self, group: usize) -> &mut Group<I> {
        &mut self.groups[group]
    }

    pub fn group_of(&self, namespace: u64) -> Option<usize> {
        self.groups.iter().position(|g| g.namespace == namespace)
    }

    /// Timers: tick every group's replica, and ask a peer for partition
    /// messages a state transfer left missing.
    /// Every group ticks inside one turn (the caller's, if one is open),
    /// so their prepares are flushed together.
    pub async fn tick<W: NodeWorld>(&mut self, now_ns: u64, world: &mut W) -> Result<(), NodeStop> {
        self.in_turn(world, async |node: &mut Node<I>, world: &mut W| {
            for group in 0..node.groups.len() {
                node.step(group, world, |r| r.tick(now_ns)).await?;
                node.request_state_data(group, world);
            }
            node.fill_next_parts().await?;
            node.scrub_next_group().await?;
            Ok(())
        })
        .await
    }

    /// Drain the actions recovery itself asked for, after a (re)start: every
    /// group inside one turn, like `tick`.
    pub async fn start<W: NodeWorld>(&mut self, world: &mut W) -> Result<(), NodeStop> {
        self.in_turn(world, async |node: &mut Node<I>, world: &mut W| {
            for group in 0..node.groups.len() {
                node.step(group, world, |_| {}).await?;
            }
            Ok(())
        })
        .await
    }

    /// Run `body` inside a turn: the caller's if one is open (it flushes at
    /// its end), else one opened and ended here.
    async fn in_turn<W: NodeWorld>(
        &mut self,
        world: &mut W,
        body: impl AsyncFnOnce(&mut Node<I>, &mut W) -> Result<(), NodeStop>,
    ) -> Result<(), NodeStop> {
        if self.turn_open {
            return body(self, world).await;
        }
        self.begin_turn();
        let ran = body(self, world).await;
        if ran.is_err() {
            self.turn_open = false;
            return ran;
        }
        self.end_turn(world).await
    }

    /// A frame arrived on shard `arrival` (the shard that owns the
    /// connection it came on). The router names the shard that must handle
    /// it; it hops there and that shard hands it to the group of its
    /// namespace.
    pub async fn on_frame<W: NodeWorld>(
        &mut self,
        source: Source,
        arrival: ShardId,
        message: Message,
        world: &mut W,
    ) -> Result<Routed, NodeStop> {
        let header = message.header;
        let Some((target, variant)) = route_inbound(source, &header, self.config.shard_count) else {
            let (variant, reason) = (FrameVariant::ClientForward, DropReason::ForwardFailed);
            self.links.drops.bump(variant, reason);
            return Ok(Routed::Dropped { variant, reason });
        };
        if let Err(reason) = self.links.hop(arrival, target, variant, world) {
            return Ok(Routed::Dropped { variant, reason });
        }
        let group = self.group_of(header.namespace).filter(|g| self.groups[*g].shard == target);
        if let (Source::Client(client), Command::Read) = (source, header.command) {
            self.serve_read(target, group, client, &message, world).await?;
            return Ok(Routed::Delivered);
        }
        if let (Source::Client(client), Command::Request, None) = (source, header.command, group) {
            // No such group here: told at once rather than left to time out.
            let refusal = Refusal::PartitionMissing.header(&header, self.config.replica, 0);
            self.reply_outside_consensus(target, client, Message::empty(refusal), world);
            return Ok(Routed::Delivered);
        }
        let Some(group) = group else {
            self.links.drops.bump(variant, DropReason::NamespaceMiss);
            let consensus_control = header.command.is_consensus_control();
            return Ok(Routed::NamespaceMiss { shard: target, consensus_control });
        };
        if let Some(flush) = &self.groups[group].flushing {
            shoal_vsr::marks::hit(shoal_vsr::marks::FRAME_DURING_FSYNC);
            let own_fsync_runs =
                |action: &Action| matches!(action, Action::WritePrepare { message } if message.header.op == header.op);
            if header.command == Command::PrepareOk && flush.prepares.iter().any(own_fsync_runs) {
                shoal_vsr::marks::hit(shoal_vsr::marks::PREPARE_OK_DURING_OWN_FSYNC);
            }
        }
        match (source, header.command) {
            (Source::Replica(peer), Command::RequestStateData) => {
                self.serve_state_data(group, peer, &header, world).await?
            }
            (Source::Replica(_), Command::StateData) => self.fill_state_data(group, &message, world).await?,
            _ => self.step(group, world, |r| r.on_message(source, message)).await?,
        }
        Ok(Routed::Delivered)
    }

    /// Answer a client's read from this replica's partition log, outside
    /// consensus (`super::read`), on shard `shard` (the partition's).
    async fn serve_read<W: NodeWorld>(
        &mut self,
        shard: ShardId,
        group: Option<usize>,
        client: u128,
        message: &Message,
        world: &mut W,
    ) -> Result<(), NodeStop> {
        let replica = self.config.replica;
        let served = if message.header.client == client {
            super::read::answer(group.map(|g| &mut self.groups[g]), replica, &message.header, &message.body).await?
        } else {
            super::read::Served::Answer(crate::read::ReadAnswer::Malformed)
        };
        match served {
            super::read::Served::Answer(answer) => {
                let reply = answer.reply(&message.header, replica);
                self.reply_outside_consensus(shard, client, reply, world);
            }
            super::read::Served::Frame(frame) => {
                // A read reply promises nothing durable (it is outside consensus).
                let owner = world.client_shard(client);
                if self.links.hop(shard, owner, FrameVariant::ClientReply, world).is_ok() {
                    world.reply_frame_to_client(owner, client, frame);
                }
            }
        }
        Ok(())
    }

    /// Send `client` an answer no replica event made (a read's, a
    /// refusal), from shard `from` through the shard that holds its
    /// connection. It promises nothing durable.
    fn reply_outside_consensus<W: NodeWorld>(&self, from: ShardId, client: u128, message: Message, world: &mut W) {
        debug_assert!(Promise::of(&message.header).is_none(), "an answer outside consensus promises nothing");
        let owner = world.client_shard(client);
        if self.links.hop(from, owner, FrameVariant::ClientReply, world).is_ok() {
            world.reply_to_client(owner, client, message);
        }
    }

    /// Run one replica event and carry out what it asks, in order.
    pub async fn step<W: NodeWorld>(
        &mut self,
        group: usize,
        world: &mut W,
        event: impl FnOnce(&mut GroupReplica<I>),
    ) -> Result<(), NodeStop> {
        let replica = &mut self.groups[group].replica;
        let conflicts_before = replica.stats().committed_conflicts;
        event(replica);
        if replica.stats().committed_conflicts > conflicts_before {
            let why = replica.stats().last_conflict.clone().unwrap_or_default();
            world.on_committed_conflict(group, &why);
        }
        self.drain(group, world).await
    }

    /// Start a turn: prepares staged from here on are flushed together from
    /// `end_turn` (one journal flush for all of a group's), and the
    /// messages that promise them wait until that flush is completed. The
    /// server opens a turn around the frames it reads in one go; the
    /// simulator around the events of a stretch of virtual time (the
    /// storage latency).
    ///
    /// Requests that arrive in the turn wait in their group's queue and are
    /// prepared at its end, packed several to a prepare
    /// (`Replica::defer_requests`): one op, one journal write and one
    /// quorum round for every request of a group in the turn, where each
    /// request that found room in the pipeline used to take an op of its own.
    pub fn begin_turn(&mut self) {
        assert!(!self.turn_open, "turns do not nest");
        self.turn_open = true;
        for group in &mut self.groups {
            group.replica.defer_requests();
        }
    }

    pub fn turn_open(&self) -> bool {
        self.turn_open
    }

    /// End the turn: pack the turn's requests into prepares, then write
    /// the staged prepares of every group that has prepares to make durable
    /// and no flush running, and start their fsync (`start_flush`, at most
    /// one per group), and return at once. While it runs the node goes on:
    /// it stages the prepares of new requests and of peers for the next
    /// flush, counts peers' prepare_oks, and sends what promises nothing or
    /// only what is durable already; a message that promises a prepare of
    /// the running flush is held. Whoever runs the node polls the fsyncs
    /// (`poll_flushes` / `flush_ended`) and completes those that ended
    /// (`complete_flushes`): the prepares become durable to the replica,
    /// the held messages leave, and the next flush starts with what was
    /// staged meanwhile (and the ring copies of what the last one made
    /// durable). So a primary's commit waits for the later of its own fsync
    /// and its peers' votes, not their sum. Any other storage action first
    /// waits for the running flush (storage runs in order).
    pub async fn end_turn<W: NodeWorld>(&mut self, world: &mut W) -> Result<(), NodeStop> {
        assert!(self.turn_open, "end_turn without begin_turn");
        let ended = self.start_turn_flushes(world).await;
        self.turn_open = false;
        ended
    }

    /// What this node's groups hold of their clients' requests, all groups
    /// together: ops prepared and not committed (a packed op counts once)
    /// and requests queued for a prepare. On a primary, about what its
    /// clients keep in flight here (1 with one request at a time).
    pub fn requests_held(&self) -> u64 {
        let held = |g: &Group<I>| {
            let uncommitted = g.replica.op().saturating_sub(g.replica.commit_min());
            uncommitted + g.replica.request_queue_len() as u64
        };
        self.groups.iter().map(held).sum()
    }

    /// Some group's flush has its fsync running, or its checkpoint runs
    /// beside the node (`start_checkpoint`): whoever runs the node polls
    /// both the same way.
    pub fn flushes_in_flight(&self) -> bool {
        self.groups.iter().any(|g| g.flushing.is_some() || g.checkpointing.is_some() || g.compacting.is_some())
    }

    /// Poll every running fsync once (with the caller's waker); true when
    /// one has ended and waits for `complete_flushes`.
    pub fn poll_flushes(&mut self, cx: &mut Context<'_>) -> bool {
        let mut ended = false;
        for g in &mut self.groups {
            if let Some(checkpoint) = &mut g.checkpointing {
                if checkpoint.done.is_none()
                    && let Poll::Ready(done) = checkpoint.work.as_mut().poll(cx)
                {
                    checkpoint.done = Some(done);
                }
                ended |= checkpoint.done.is_some();
            }
            if let Some(compaction) = &mut g.compacting {
                if compaction.done.is_none()
                    && let Poll::Ready(done) = compaction.work.as_mut().poll(cx)
                {
                    compaction.done = Some(done);
                }
                ended |= compaction.done.is_some();
            }
            let Some(flush) = &mut g.flushing else { continue };
            if flush.synced.is_none()
                && let Poll::Ready(synced) = flush.sync.as_mut().poll(cx)
            {
                flush.synced = Some(synced);
            }
            ended |= flush.synced.is_some();
        }
        ended
    }

    /// Wait until some running fsync ended (at once when none runs).
    pub async fn flush_ended(&mut self) {
        poll_fn(|cx| if !self.flushes_in_flight() || self.poll_flushes(cx) { Poll::Ready(()) } else { Poll::Pending })
            .await
    }

    /// Complete every flush whose fsync has ended (each polled once here
    /// first), inside a turn (the caller's, if one is open): report its
    /// prepares durable, send what waited for them, carry out what that
    /// asks for; the turn's end starts the next flushes.
    pub async fn complete_flushes<W: NodeWorld>(&mut self, world: &mut W) -> Result<(), NodeStop> {
        poll_fn(|cx| {
            self.poll_flushes(cx);
            Poll::Ready(())
        })
        .await;
        let flush_ended = |g: &Group<I>| g.flushing.as_ref().is_some_and(|flush| flush.synced.is_some());
        let checkpoint_ended = |g: &Group<I>| g.checkpointing.as_ref().is_some_and(|c| c.done.is_some());
        let compaction_ended = |g: &Group<I>| g.compacting.as_ref().is_some_and(|c| c.done.is_some());
        if !self.groups.iter().any(|g| flush_ended(g) || checkpoint_ended(g) || compaction_ended(g)) {
            return Ok(());
        }
        self.in_turn(world, async |node: &mut Node<I>, world: &mut W| {
            for group in 0..node.groups.len() {
                if flush_ended(&node.groups[group]) {
                    node.finish_flush(group, world).await?;
                    node.drain(group, world).await?;
                }
                if checkpoint_ended(&node.groups[group]) {
                    node.finish_checkpoint(group, world).await?;
                    node.drain(group, world).await?;
                }
                if compaction_ended(&node.groups[group]) {
                    node.finish_compaction(group, world).await?;
                    node.drain(group, world).await?;
                }
            }
            Ok(())
        })
        .await
    }

    /// The work of `end_turn`: pack the turn's requests into prepares, then
    /// start the flush of every group that has prepares (or ring copies) to
    /// make durable and no flush running (`start_flush`).
    async fn start_turn_flushes<W: NodeWorld>(&mut self, world: &mut W) -> Result<(), NodeStop> {
        for group in 0..self.groups.len() {
            if self.groups[group].replica.requests_deferred() {
                self.step(group, world, GroupReplica::prepare_deferred).await?;
            }
        }
        debug_assert!(self.groups.iter().all(|g| !g.replica.requests_deferred()), "no request waits past a turn");
        for group in 0..self.groups.len() {
            self.bound_pending_beside_checkpoint(group, world).await?;
            let g = &self.groups[group];
            if g.flushing.is_none() && g.flush_pending() {
                self.start_flush(group, world).await?;
            }
        }
        // Nothing waits idle: what a group staged, or left to a ring copy,
        // waits for its running flush, whose completion starts the next.
        assert!(
            self.groups.iter().all(|g| !g.flush_pending() || g.flushing.is_some()),
            "a turn ends with every group's unflushed prepares in a running flush"
        );
        self.write_partitions().await
    }

    /// Write the group's staged prepares and the ring copies of those the
    /// last flush made durable, and start the fsync that makes them
    /// durable, without waiting for it (see `end_turn`). Nothing else
    /// changes the journal until it is completed (`finish_flush`).
    async fn start_flush<W: NodeWorld>(&mut self, group: usize, world: &mut W) -> Result<(), NodeStop> {
        let g = &mut self.groups[group];
        assert!(g.flushing.is_none(), "one flush per group at a time");
        let written = std::mem::take(&mut g.written);
        let mut prepares = std::mem::take(&mut g.awaiting_copy);
        let begun = g.storage.begin_flush(&prepare_messages(&written)).await;
        prepares.extend(written);
        let journal = match begun {
            Ok(journal) => journal,
            Err(error) => {
                let mut stop = false;
                self.complete_flush(group, prepares, Err(error), &mut stop, world)?;
                unreachable!("a failed flush stops the node");
            }
        };
        if self.flushes_in_flight() {
            shoal_vsr::marks::hit(shoal_vsr::marks::GROUP_FLUSHES_OVERLAPPED);
        }
        let mut sync: Pin<Box<dyn Future<Output = std::io::Result<()>>>> = Box::pin(journal.syncer());
        // Its first poll issues it (to io_uring; in the simulator it draws
        // its latency), so the disk works while the node goes on.
        let synced = poll_fn(|cx| Poll::Ready(sync.as_mut().poll(cx))).await;
        let synced = match synced {
            Poll::Ready(synced) => Some(synced),
            Poll::Pending => None,
        };
        self.groups[group].flushing = Some(GroupFlush { prepares, journal, sync, synced });
        Ok(())
    }

    /// Complete the group's running flush, waiting for its fsync if it has
    /// not ended: report each prepare now durable (to the hooks and the
    /// replica), carry those durable without their ring copy to the next
    /// flush, and send the held messages whose promises now hold.
    async fn finish_flush<W: NodeWorld>(&mut self, group: usize, world: &mut W) -> Result<(), NodeStop> {
        let flush = self.groups[group].flushing.take().expect("a flush runs for the group");
        let GroupFlush { prepares, journal, sync, synced } = flush;
        let synced = match synced {
            Some(synced) => synced,
            None => sync.await,
        };
        let flushed = self.groups[group].storage.end_flush(journal, synced);
        let mut stop = false;
        self.complete_flush(group, prepares, flushed, &mut stop, world)?;
        if stop {
            return Err(NodeStop::Halted);
        }
        self.release_held(group, world).await
    }

    /// Write what every group applied in the turn to its partition log, all
    /// groups at once (no sync: the journal is the WAL); the node stops
    /// with the first failure, in group order.
    async fn write_partitions(&mut self) -> Result<(), NodeStop> {
        let writes: Vec<_> = self
            .groups
            .iter_mut()
            .filter(|g| g.replica.state_machine().pending_count() > 0)
            .map(|g| g.write_partition())
            .collect();
        join_in_order(writes).await.outputs.into_iter().collect()
    }

    /// Carry out the replica's actions until it asks for nothing more. A
    /// prepare is staged and joins the group's next flush; the messages
    /// that promise something not yet durable wait (with every message
    /// after them, so they leave in the order the replica asked). When the
    /// replica asks for nothing more, the group's flush starts unless one
    /// runs (`start_flush`; inside a turn, at `end_turn`); its completion
    /// (`complete_flushes`) reports each prepare back
    /// (`on_prepare_durable`), which may commit and ask for replies, and
    /// the held messages leave. Before any other storage action the group
    /// is flushed to the end first (`commit_group`). Commits are reported
    /// before the replies that announce them go out.
    async fn drain<W: NodeWorld>(&mut self, group: usize, world: &mut W) -> Result<(), NodeStop> {
        for _ in 0..DRAIN_ROUNDS_MAX {
            let g = &mut self.groups[group];
            let committed = g.replica.take_committed();
            let actions = g.replica.take_actions();
            let (view, status) = (g.replica.view(), g.replica.status());
            // The view first: commits are reported in the view they were
            // made in or an older one, never a newer one (the simulator's
            // view-logs checker relies on it).
            if view > g.view_reported {
                g.view_reported = view;
                world.on_view(group, view, status);
            }
            if !committed.is_empty() {
                world.on_committed(group, &committed);
            }
            if actions.is_empty() {
                self.bound_pending_beside_checkpoint(group, world).await?;
                let g = &mut self.groups[group];
                debug_assert!(
                    g.held.is_empty() || g.durability_pending(),
                    "held messages wait for a flush or a checkpoint"
                );
                if self.turn_open {
                    // The turn's end writes every group's partition at once
                    // (`write_partitions`), unless the queue grew large.
                    if g.replica.state_machine().pending_count() >= PARTITION_DEFERRED_MESSAGES_MAX {
                        return g.write_partition().await;
                    }
                    return Ok(());
                }
                if !g.flush_pending() {
                    return g.write_partition().await;
                }
                // The fsync runs beside what comes next; its completion
                // sends what waits for it.
                if g.flushing.is_none() {
                    self.start_flush(group, world).await?;
                }
                return self.groups[group].write_partition().await;
            }
            for action in actions {
                self.run_action(group, action, world).await?;
            }
        }
        panic!(
            "replica {} group {:#x} kept asking for actions after {DRAIN_ROUNDS_MAX} rounds",
            self.config.replica, self.groups[group].namespace
        );
    }

    /// One action under group commit (see `drain`).
    async fn run_action<W: NodeWorld>(&mut self, group: usize, action: Action, world: &mut W) -> Result<(), NodeStop> {
        let g = &mut self.groups[group];
        match action {
            Action::WritePrepare { ref message } => {
                // The replica counts from its new checkpoint; the journal's
                // window moves only with the compaction at the checkpoint's
                // end, so a prepare past the window the journal still has
                // waits for that end, and so does one past the bytes that
                // compaction may copy.
                let config = g.storage.config();
                let window_end = g.storage.journal().snapshot_op() + config.slot_count;
                let appended_bytes_max = CHECKPOINT_BESIDE_APPENDS_SLOTS_MAX * u64::from(config.message_size_max_bytes);
                let moves_window = g.checkpointing.is_some() || g.compacting.is_some();
                let waits_for = if message.header.op > window_end && moves_window {
                    Some(shoal_vsr::marks::CHECKPOINT_FINISHED_FOR_JOURNAL)
                } else if let Some(checkpoint) = g.checkpointing.as_mut() {
                    checkpoint.appended_bytes += u64::from(message.header.size);
                    if checkpoint.appended_bytes > appended_bytes_max
                        || shoal_vsr::buggify!(shoal_vsr::buggify::CHECKPOINT_FINISHED_EARLY)
                    {
                        Some(shoal_vsr::marks::CHECKPOINT_FINISHED_FOR_COPY)
                    } else {
                        shoal_vsr::marks::hit(shoal_vsr::marks::CHECKPOINT_BESIDE_APPENDS);
                        None
                    }
                } else {
                    None
                };
                if let Some(mark) = waits_for {
                    shoal_vsr::marks::hit(mark);
                    if self.groups[group].checkpointing.is_some() {
                        self.finish_checkpoint(group, world).await?;
                    }
                    // Past the window the journal still has, the prepare
                    // waits for the compaction that moves it too.
                    if mark == shoal_vsr::marks::CHECKPOINT_FINISHED_FOR_JOURNAL
                        && self.groups[group].compacting.is_some()
                    {
                        self.finish_compaction(group, world).await?;
                    }
                }
                if self.groups[group].compacting.is_some() {
                    shoal_vsr::marks::hit(shoal_vsr::marks::COMPACTION_BESIDE_APPENDS);
                }
                let g = &mut self.groups[group];
                // Staged, not written yet: the group's next flush writes
                // every prepare staged, each run of adjacent slots with one
                // write (`start_flush`, or `commit_group` before another
                // storage action). From here the prepare counts as written
                // and not durable.
                world.before_storage(group, &action);
                g.storage.stage_prepare(&message.header);
                g.written.push(action);
                Ok(())
            }
            Action::Send { ref message, .. } | Action::Reply { ref message, .. } => {
                // Held: behind an earlier held message, or promising a
                // prepare this group has written and not yet flushed, or an
                // op the checkpoint running beside the node covers. A
                // promise that neither can keep is sent (and the ordering
                // contract's assertion stops the node).
                let waits = Promise::of(&message.header).is_some_and(|p| g.storage.check_durable(p).is_err());
                if !g.held.is_empty() || (waits && g.durability_pending()) {
                    g.held.push(action);
                    return Ok(());
                }
                self.execute(group, action, world).await
            }
            storage_action => {
                // Storage runs in order: a checkpoint running beside the
                // node ends first, then its compaction, and what was written
                // before it is made durable (and what waited for that is
                // sent).
                if g.checkpointing.is_some() {
                    self.finish_checkpoint(group, world).await?;
                }
                if self.groups[group].compacting.is_some() {
                    shoal_vsr::marks::hit(shoal_vsr::marks::COMPACTION_FINISHED_FOR_STORAGE);
                    self.finish_compaction(group, world).await?;
                }
                if matches!(storage_action, Action::Checkpoint { .. }) {
                    // It runs beside the node; its journal part waits for
                    // its end: nothing to flush now.
                    world.before_storage(group, &storage_action);
                    return self.start_checkpoint(group, storage_action).await;
                }
                if self.groups[group].flush_pending() {
                    self.commit_group(group, world).await?;
                }
                self.execute(group, storage_action, world).await
            }
        }
    }

    /// Flush the group's staged prepares until every one is durable with
    /// its ring copy, after the running flush ends (a journal flush for all
    /// of them, and one more for their copies; copies a completed flush
    /// left ride with the first), report each durable one to the hooks and
    /// the replica, then send the messages that waited: before a storage
    /// action other than a prepare (storage runs in order). Ordering
    /// contract: every held message leaves only after the flush, and
    /// `execute` asserts its promise.
    async fn commit_group<W: NodeWorld>(&mut self, group: usize, world: &mut W) -> Result<(), NodeStop> {
        if self.groups[group].flushing.is_some() {
            // Storage runs in order: the running flush ends first.
            shoal_vsr::marks::hit(shoal_vsr::marks::FLUSH_FINISHED_FOR_STORAGE);
            self.finish_flush(group, world).await?;
            if !self.groups[group].flush_pending() {
                return Ok(());
            }
        }
        let g = &mut self.groups[group];
        assert!(g.flush_pending(), "a group commit has prepares to flush");
        let written = std::mem::take(&mut g.written);
        let flushed = g.storage.commit_prepares(&prepare_messages(&written)).await;
        let mut flushing = std::mem::take(&mut g.awaiting_copy);
        flushing.extend(written);
        let mut stop = false;
        self.complete_flush(group, flushing, flushed, &mut stop, world)?;
        assert!(self.groups[group].awaiting_copy.is_empty(), "a full group commit leaves no ring copy to write");
        if stop {
            return Err(NodeStop::Halted);
        }
        self.release_held(group, world).await
    }

    /// Report a finished flush of `group`'s `flushing` prepares (those the
    /// flush before made durable without their ring copy first, then those
    /// written now): each one now durable with its ring copy to the hooks
    /// and, unless a hook stopped the node (`stop`), to the replica, which
    /// may now count or vouch for it (`report_durable`). `Err` when the
    /// flush failed.
    fn complete_flush<W: NodeWorld>(
        &mut self,
        group: usize,
        flushing: Vec<Action>,
        flushed: Result<Vec<(u64, u128)>, StorageError>,
        stop: &mut bool,
        world: &mut W,
    ) -> Result<(), NodeStop> {
        let durable = match flushed {
            Ok(durable) => {
                world.on_journal_flushed(group, durable.len());
                durable
            }
            Err(error) => {
                // Any of them may have reached the disk in part.
                for action in &flushing {
                    let _ = world.after_storage(group, action, Some(&error));
                }
                return Err(NodeStop::Storage { action: "write_prepare", error });
            }
        };
        self.report_durable(group, flushing, &durable, stop, world);
        Ok(())
    }

    /// Report the prepares of `written` that the storage reports `durable`
    /// (ascending) to the hooks and, unless a hook stopped the node
    /// (`stop`), to the replica. One durable with its copy in a
    /// compaction's spare alone waits in `awaiting_install`, one durable
    /// without its copy in `awaiting_copy` for the next flush.
    fn report_durable<W: NodeWorld>(
        &mut self,
        group: usize,
        written: Vec<Action>,
        durable: &[(u64, u128)],
        stop: &mut bool,
        world: &mut W,
    ) {
        debug_assert!(durable.is_sorted(), "the storage reports durable prepares ascending");
        let mut awaiting = Vec::new();
        for action in written {
            let Action::WritePrepare { message } = &action else { unreachable!("only prepares are written") };
            let (op, checksum) = (message.header.op, message.header.checksum);
            if durable.binary_search(&(op, checksum)).is_err() {
                // Durable with its copy in a compaction's spare alone: the
                // install's end reports it. Else durable without its ring
                // copy: the next flush writes it. Otherwise a later write
                // of the op replaced this one (in this flush or the one
                // before) and this write is no longer on the disk.
                let storage = &self.groups[group].storage;
                if storage.unsynced_checksum(op) == Some(checksum) {
                    if storage.held_for_install(op) {
                        self.groups[group].awaiting_install.push(action);
                    } else {
                        awaiting.push(action);
                    }
                }
                continue;
            }
            // Every prepare of the group is on the disk now: the world learns
            // each one even when it stops the node at an earlier one (else it
            // would still count on what a later write replaced in the same
            // slot: session-churn seed 105, with a request queue, Recovery).
            *stop |= world.after_storage(group, &action, None) == Flow::Stop;
            if !*stop {
                // Only now, durable: the primary counts its own copy toward
                // the quorum, a backup may vouch for it.
                self.groups[group].replica.on_prepare_durable(op, checksum);
            }
        }
        let g = &mut self.groups[group];
        // A flush took every prepare awaiting a copy (`start_flush`); a
        // compaction's end leaves none to await one.
        debug_assert!(
            g.awaiting_copy.is_empty() || awaiting.is_empty(),
            "a flush completes or carries every prepare it was given"
        );
        g.awaiting_copy.extend(awaiting);
    }

    /// Send the messages the group held for its flush, in the order the
    /// replica asked, up to the first whose promise a flush still to come
    /// must keep (a prepare whose ring copy is not durable yet); the rest
    /// wait for that flush. Ordering contract: `execute` asserts each
    /// promise, so a promise no flush keeps stops the node.
    async fn release_held<W: NodeWorld>(&mut self, group: usize, world: &mut W) -> Result<(), NodeStop> {
        // Prepares staged while the fsync ran wait for the next flush, and
        // so do the messages that promise them.
        let g = &mut self.groups[group];
        let mut leaving = std::mem::take(&mut g.held);
        if g.durability_pending() {
            let storage = &g.storage;
            let waits = |action: &Action| match action {
                Action::Send { message, .. } | Action::Reply { message, .. } => {
                    Promise::of(&message.header).is_some_and(|p| storage.check_durable(p).is_err())
                }
                _ => unreachable!("only messages are held"),
            };
            if let Some(first_waiting) = leaving.iter().position(waits) {
                g.held = leaving.split_off(first_waiting);
            }
        }
        for action in leaving {
            self.execute(group, action, world).await?;
        }
        Ok(())
    }

    /// Carry out one action. `Err` when the node must stop.
    async fn execute<W: NodeWorld>(&mut self, group: usize, action: Action, world: &mut W) -> Result<(), NodeStop> {
        let g = &mut self.groups[group];
        match action {
            Action::Send { to, message } => {
                let command = message.header.command;
                world.before_send(group, &message.header);
                g.assert_promise_durable(&message.header);
                self.links.send_to_replica(g.shard, to, message, world);
                let promises = matches!(
                    command,
                    Command::StartViewChange | Command::DoViewChange | Command::StartView | Command::PrepareOk
                );
                if promises && world.after_promise_sent(group, command) == Flow::Stop {
                    return Err(NodeStop::Halted);
                }
                Ok(())
            }
            Action::Reply { client, message } => {
                g.assert_promise_durable(&message.header);
                let owner = world.client_shard(client);
                if self.links.hop(g.shard, owner, FrameVariant::ClientReply, world).is_ok() {
                    world.reply_to_client(owner, client, message);
                }
                Ok(())
            }
            storage_action => {
                assert!(
                    !matches!(storage_action, Action::Checkpoint { .. }),
                    "a checkpoint runs beside the node (start_checkpoint)"
                );
                world.before_storage(group, &storage_action);
                let done = g.storage.execute(&storage_action).await;
                storage_done(group, &storage_action, done, world)
            }
        }
    }

    /// Start a checkpoint beside the node: the applied
    /// messages are written to the partition log now, and its sync runs
    /// beside the checkpoint file's write and fsync; once both are durable
    /// the file is installed. None of it borrows the node, which goes on
    /// committing and appending meanwhile; whoever runs the node polls it
    /// with the flushes (`poll_flushes`), and `finish_checkpoint` compacts
    /// the journal to it. On the commit path, the partition log's two
    /// fsyncs, the file's and the directory's made every checkpoint a stall
    /// of the whole shard (`bench server`: 6-15 ms per checkpoint on a fast
    /// disk, 35-150 ms on a slow one).
    async fn start_checkpoint(&mut self, group: usize, action: Action) -> Result<(), NodeStop> {
        let g = &mut self.groups[group];
        assert!(g.checkpointing.is_none(), "one checkpoint per group at a time");
        let Action::Checkpoint { checkpoint } = &action else { unreachable!("only a checkpoint starts one") };
        let sync = match g.replica.state_machine_mut().begin_persist().await {
            Ok(BeginSync::Nothing) => None,
            Ok(BeginSync::Running(sync)) => Some(sync),
            Ok(BeginSync::InPlace) => {
                // After a failed fsync the records are written again first:
                // rare, done here as before.
                partition_log_done(g.replica.state_machine_mut().persist().await)?;
                None
            }
            Err(error) => return Err(NodeStop::PartitionLog(error)),
        };
        let stage = g.storage.checkpoint_file_stager(checkpoint);
        let install = g.storage.checkpoint_file_installer();
        // The compaction that follows the checkpoint writes the journal's
        // spare; one a new process has not cleared yet is cleared here,
        // beside the node, not inline in that compaction's stage.
        let spare_clear = g.storage.spare_clearer();
        let checkpoint_work: Pin<Box<dyn Future<Output = CheckpointPart>>> = Box::pin(async move {
            let partition: Pin<Box<dyn Future<Output = CheckpointPart>>> = Box::pin(async move {
                CheckpointPart::Partition(match sync {
                    Some(sync) => Some(sync.run().await),
                    None => None,
                })
            });
            let file: Pin<Box<dyn Future<Output = CheckpointPart>>> =
                Box::pin(async move { CheckpointPart::File(stage.await) });
            let joined = join_in_order(vec![partition, file]).await;
            if joined.polls > 1 {
                shoal_vsr::marks::hit(shoal_vsr::marks::CHECKPOINT_BESIDE_PARTITION_SYNC);
            }
            let (mut partition, mut staged) = (None, Ok(()));
            for part in joined.outputs {
                match part {
                    CheckpointPart::Partition(ended) => partition = ended,
                    CheckpointPart::File(result) => staged = result,
                    CheckpointPart::Spare(_) | CheckpointPart::Done { .. } => unreachable!("not joined here"),
                }
            }
            let file = match staged {
                Ok(()) if partition.as_ref().is_none_or(SyncEnded::succeeded) => Some(install.await),
                Ok(()) => None,
                Err(error) => Some(Err(error)),
            };
            CheckpointPart::Done { partition, file }
        });
        let mut work: Pin<Box<dyn Future<Output = CheckpointWork>>> = Box::pin(async move {
            let mut parts = vec![checkpoint_work];
            if let Some(clear) = spare_clear {
                parts.push(Box::pin(async move { CheckpointPart::Spare(clear.run().await) }));
            }
            let mut work = CheckpointWork { partition: None, file: None, spare: None };
            for part in join_in_order(parts).await.outputs {
                match part {
                    CheckpointPart::Done { partition, file } => (work.partition, work.file) = (partition, file),
                    CheckpointPart::Spare(cleared) => work.spare = Some(cleared),
                    CheckpointPart::Partition(_) | CheckpointPart::File(_) => unreachable!("joined above"),
                }
            }
            work
        });
        // Its first poll issues its writes, so the disk works while the
        // node goes on.
        let done = match poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await {
            Poll::Ready(done) => Some(done),
            Poll::Pending => None,
        };
        shoal_vsr::marks::hit(shoal_vsr::marks::CHECKPOINT_IN_BACKGROUND);
        self.groups[group].checkpointing = Some(GroupCheckpoint { action, work, done, appended_bytes: 0 });
        Ok(())
    }

    /// Complete the group's checkpoint running beside the node, waiting for
    /// it if it has not ended: its partition log sync becomes the log's
    /// promise, then the journal's compaction to it is staged (the spare
    /// written, from the page cache) and installed beside the node
    /// (`start_compaction`), and the messages applied meanwhile are written
    /// to the log. A flush may run throughout: the stage writes only the
    /// spare (the flush synced the retired file, whose writes the stage
    /// copied), and every journal write and fsync from the stage on goes to
    /// the spare alone.
    async fn finish_checkpoint<W: NodeWorld>(&mut self, group: usize, world: &mut W) -> Result<(), NodeStop> {
        let GroupCheckpoint { action, work, done, .. } =
            self.groups[group].checkpointing.take().expect("a checkpoint runs for the group");
        let CheckpointWork { partition, file, spare } = match done {
            Some(done) => done,
            None => work.await,
        };
        let g = &mut self.groups[group];
        if let Some(cleared) = spare {
            if let Some(error) = cleared.error() {
                tracing::warn!(group = format_args!("{:#x}", g.namespace), %error, "clearing the journal's spare failed; the compaction clears it inline");
            }
            g.storage.end_spare_clear(&cleared);
        }
        if let Some(ended) = partition {
            partition_log_done(g.replica.state_machine_mut().end_persist(ended))?;
        }
        let file = file.expect("the file is written when the partition log's sync succeeded");
        if let Err(error) = file {
            return storage_done(group, &action, Err(error), world);
        }
        let Action::Checkpoint { checkpoint } = &action else { unreachable!("a checkpoint's action") };
        // The checkpoint is durable from here (its file installed): the
        // hooks learn it now; the compaction's failure, if any, stops the
        // node later (`finish_compaction`).
        // The replica may serve it to lagging peers from now on, not before.
        self.groups[group].replica.on_checkpoint_durable(checkpoint.anchor.op);
        match self.groups[group].storage.stage_compaction(checkpoint).await {
            Ok(Some(staged)) => self.start_compaction(group, action.clone(), staged).await,
            Ok(None) => {}
            Err(error) => return storage_done(group, &action, Err(error), world),
        }
        storage_done(group, &action, Ok(()), world)?;
        self.groups[group].write_partition().await?;
        self.release_held(group, world).await
    }

    /// Install the group's staged compaction beside the node: its first
    /// poll issues the spare's fsync, so the disk works while the group goes
    /// on appending (to the spare alone) and committing. On the commit path the
    /// spare's fsync, the exchange and the directory's fsync stalled the
    /// group once per checkpoint interval.
    async fn start_compaction(&mut self, group: usize, action: Action, staged: StagedDrain<I>) {
        assert!(self.groups[group].compacting.is_none(), "one compaction per group at a time");
        let mut work: Pin<Box<dyn Future<Output = InstalledDrain>>> = Box::pin(staged.install());
        let done = match poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await {
            Poll::Ready(done) => Some(done),
            Poll::Pending => None,
        };
        let staged_at_ns = self.io.now_ns();
        self.groups[group].compacting = Some(GroupCompaction { action, work, done, staged_at_ns });
    }

    /// Complete the group's compaction, waiting for its install if it has
    /// not ended: the spare is the journal, which forgets the ops the
    /// checkpoint covers. A failure stops the node (reported to the hooks
    /// as the checkpoint's).
    async fn finish_compaction<W: NodeWorld>(&mut self, group: usize, world: &mut W) -> Result<(), NodeStop> {
        let GroupCompaction { action, work, done, staged_at_ns } =
            self.groups[group].compacting.take().expect("a compaction runs for the group");
        let installed = match done {
            Some(done) => done,
            None => work.await,
        };
        let Action::Checkpoint { checkpoint } = &action else { unreachable!("a checkpoint's action") };
        let released = match self.groups[group].storage.end_compaction(checkpoint, installed) {
            Ok(released) => released,
            Err(error) => return storage_done(group, &action, Err(error), world),
        };
        world.on_compaction_installed(group, self.io.now_ns().saturating_sub(staged_at_ns), released.len());
        // What the window's flushes made durable in the spare is durable
        // in the journal the directory names now (not a flush of its own:
        // the hooks counted those flushes).
        let waiting = std::mem::take(&mut self.groups[group].awaiting_install);
        let mut stop = false;
        self.report_durable(group, waiting, &released, &mut stop, world);
        if stop {
            return Err(NodeStop::Halted);
        }
        // What the group staged or awaits a copy for under the checkpoint
        // is no longer the journal's (`GroupStorage::end_compaction`); a
        // running flush's report leaves those out too.
        let covered = |action: &Action| match action {
            Action::WritePrepare { message } => message.header.op <= checkpoint.anchor.op,
            _ => unreachable!("only prepares are staged"),
        };
        let g = &mut self.groups[group];
        let before = g.written.len() + g.awaiting_copy.len();
        g.written.retain(|action| !covered(action));
        g.awaiting_copy.retain(|action| !covered(action));
        if g.written.len() + g.awaiting_copy.len() < before {
            shoal_vsr::marks::hit(shoal_vsr::marks::COMPACTION_COVERED_STAGED);
        }
        self.release_held(group, world).await
    }

    /// A checkpoint running beside the node keeps the group's applied
    /// messages in memory; past `PARTITION_DEFERRED_MESSAGES_MAX` of them
    /// it is finished now, so they can be written.
    async fn bound_pending_beside_checkpoint<W: NodeWorld>(
        &mut self,
        group: usize,
        world: &mut W,
    ) -> Result<(), NodeStop> {
        let g = &self.groups[group];
        if g.checkpointing.is_some() && g.replica.state_machine().pending_count() >= PARTITION_DEFERRED_MESSAGES_MAX {
            shoal_vsr::marks::hit(shoal_vsr::marks::CHECKPOINT_FINISHED_FOR_PENDING);
            self.finish_checkpoint(group, world).await?;
        }
        Ok(())
    }

    /// After a state transfer the partition may lack offsets the checkpoint
    /// counts: ask a random peer for them, a bounded batch per tick (and
    /// the next batch as soon as one is filled: `fill_state_data`).
    fn request_state_data<W: NodeWorld>(&mut self, group: usize, world: &mut W) {
        let replica = self.config.replica;
        let Some(missing) = self.groups[group].replica.state_machine().to_fetch() else {
            self.groups[group].state_data_asked = None;
            return;
        };
        if self.config.replica_count < 2 {
            return;
        }
        // A peer that answered nothing since it was last asked may hold
        // nothing there: ask one of the others (with two replicas there is
        // no other, so ask it again).
        let stalled =
            self.groups[group].state_data_asked.filter(|asked| asked.start == missing.start).map(|asked| asked.peer);
        let candidates: Vec<u8> = (0..self.config.replica_count)
            .filter(|&r| r != replica && (Some(r) != stalled || self.config.replica_count == 2))
            .collect();
        let bound = candidates.len() as u64;
        let draw = world.draw(bound).unwrap_or_else(|| self.io.entropy_u64() % bound);
        assert!(draw < bound, "a draw stays within its bound");
        self.ask_state_data(group, candidates[draw as usize], missing, world);
    }

    /// Ask `peer` for the first batch of `missing`.
    fn ask_state_data<W: NodeWorld>(&mut self, group: usize, peer: u8, missing: Range<u64>, world: &mut W) {
        assert!(peer != self.config.replica && missing.start < missing.end);
        let g = &mut self.groups[group];
        let count = (missing.end - missing.start).min(STATE_DATA_MESSAGES_MAX);
        g.state_data_asked = Some(StateDataAsked { peer, start: missing.start, end: missing.start + count });
        let mut header = Header::new(Command::RequestStateData, self.config.cluster);
        header.namespace = g.namespace;
        header.replica = self.config.replica;
        header.context = missing.start;
        header.request = count;
        self.links.send_to_replica(g.shard, peer, Message::empty(header), world);
    }

    /// Serve a peer's `RequestStateData` from this replica's durable
    /// partition log (nothing when it holds nothing there).
    async fn serve_state_data<W: NodeWorld>(
        &mut self,
        group: usize,
        from: u8,
        request: &Header,
        world: &mut W,
    ) -> Result<(), NodeStop> {
        let g = &mut self.groups[group];
        // Written (not synced): a committed message is served from what the
        // log holds; the asker proves it by the checksum chain.
        g.write_partition().await?;
        let mut count = request.request.min(STATE_DATA_MESSAGES_MAX) as usize;
        if shoal_vsr::buggify!(shoal_vsr::buggify::STATE_DATA_ANSWER_SHORT) {
            count = count.min(1);
        }
        let messages = g.replica.state_machine().read(request.context, count).await;
        // The answer is as many frames as the messages need, each within
        // the group's message size: one frame of 64 large messages would be
        // refused by every peer, and one frame per request would make a
        // long gap of large messages take a tick per message.
        let body_bytes_max = g.storage.config().message_size_max_bytes as usize - HEADER_SIZE_BYTES;
        let mut rest = &messages[..];
        while !rest.is_empty() {
            let fitting = state_data_messages_fitting(rest, body_bytes_max);
            if fitting == 0 {
                // Cannot happen for a message an append carried; never a
                // frame the asker's peers would refuse.
                tracing::warn!(offset = rest[0].0, "a partition message too large for a state data frame");
                break;
            }
            let (frame, after) = rest.split_at(fitting);
            let mut body = Vec::with_capacity(state_data_body_bytes(frame));
            body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            for (_, payload) in frame {
                put_bytes_with_len(&mut body, payload);
            }
            let mut answer = Header::new(Command::StateData, self.config.cluster);
            answer.namespace = request.namespace;
            answer.replica = self.config.replica;
            answer.context = frame[0].0;
            self.links.send_to_replica(g.shard, from, Message::new(answer, Rc::from(body)), world);
            rest = after;
        }
        Ok(())
    }

    /// Append the next parts of the checked state-transfer fills: one part
    /// per group in turn (`fill_more`), at most `FILL_CALLS_PER_TICK_MAX`
    /// parts and `FILL_TICK_BUDGET_NS` of the node's time per tick, for the
    /// whole node: a rejoined replica refills every group it lost at once,
    /// and what the refill takes is time the node's flushes, and its
    /// checkpoints and compactions beside it, wait for.
    async fn fill_next_parts(&mut self) -> Result<(), NodeStop> {
        let appending = |g: &Group<I>| g.replica.state_machine().fill_appending();
        if !self.groups.iter().any(appending) {
            self.fill_stretch = None;
            return Ok(());
        }
        if shoal_vsr::buggify!(shoal_vsr::buggify::FILL_PART_DEFERRED) {
            return Ok(());
        }
        let started_ns = self.io.now_ns();
        let stretch = *self.fill_stretch.get_or_insert(FillStretch { began_ns: started_ns, spent_ns: 0 });
        // At most half the node's time over the stretch (plus one tick's
        // budget to start with): on a slow disk one part takes longer than
        // a tick, and a part every tick kept the node busy from one tick
        // to the next, its flushes and frames waiting (swarm seed 29189).
        let allowed_ns = started_ns.saturating_sub(stretch.began_ns) / 2 + FILL_TICK_BUDGET_NS;
        if stretch.spent_ns >= allowed_ns {
            shoal_vsr::marks::hit(shoal_vsr::marks::FILL_TICK_BUDGET_SPENT);
            return Ok(());
        }
        let group_count = self.groups.len();
        let mut parts = 0;
        let mut idle_groups = 0;
        while parts < FILL_CALLS_PER_TICK_MAX && idle_groups < group_count {
            if parts > 0 && self.io.now_ns().saturating_sub(started_ns) >= FILL_TICK_BUDGET_NS {
                shoal_vsr::marks::hit(shoal_vsr::marks::FILL_TICK_BUDGET_SPENT);
                break;
            }
            let group = self.fill_group_next % group_count;
            self.fill_group_next = (group + 1) % group_count;
            if self.fill_more(group).await? {
                parts += 1;
                idle_groups = 0;
            } else {
                idle_groups += 1;
            }
        }
        let spent_ns = stretch.spent_ns + self.io.now_ns().saturating_sub(started_ns);
        self.fill_stretch = Some(FillStretch { spent_ns, ..stretch });
        Ok(())
    }

    /// Append the next part of the group's checked state-transfer fill
    /// (`FILL_APPEND_BYTES_PER_CALL_MAX`), and make the partition durable
    /// once the gap is filled; false when the group had nothing to append.
    /// Not while a checkpoint's sync of the partition log runs beside the
    /// node (nothing is appended under a sync's marker): a later tick goes
    /// on.
    ///
    /// Several parts per tick: a part also ends at a segment roll, and with
    /// the simulator's 16 KiB segments one part per 10 ms tick refilled
    /// about 1.6 MB/s; swarm seed 4088 (session 30) still lacked 1,900 of
    /// 5,500 offsets 2 s after the heal.
    async fn fill_more(&mut self, group: usize) -> Result<bool, NodeStop> {
        let g = &mut self.groups[group];
        if g.checkpointing.is_some() || !g.replica.state_machine().fill_appending() {
            return Ok(false);
        }
        if !g.replica.state_machine_mut().fill_more().await? {
            g.sync_partition().await?;
        }
        Ok(true)
    }

    /// Scrub one group per tick, in turn (`scrub`): what a tick reads stays
    /// `scrub_bytes_per_tick` however many groups the shard runs.
    async fn scrub_next_group(&mut self) -> Result<(), NodeStop> {
        if self.groups.is_empty() || self.config.scrub_bytes_per_tick == 0 {
            return Ok(());
        }
        if self.groups.iter().any(|g| g.replica.state_machine().missing().is_some()) {
            // A group refills its log from peers (after a state transfer or
            // a salvage): that repair goes first, and the scrub would only
            // take its disk time (swarm seed 90: a replica refilling
            // several groups lagged its primary past the simulator's bound
            // with the scrubber on, and kept up with it off).
            shoal_vsr::marks::hit(shoal_vsr::marks::PARTITION_SCRUB_PAUSED_FOR_FILL);
            return Ok(());
        }
        let group = self.scrub_group_next % self.groups.len();
        self.scrub_group_next = (group + 1) % self.groups.len();
        self.scrub(group).await
    }

    /// Read back and check the next `scrub_bytes_per_tick` of `group`'s
    /// partition log (at least one record), wrapping to its first offset
    /// at its end. A record that fails its check, or that every read of
    /// fails, stops the node (`NodeStop::PartitionLog`): its restart
    /// salvages the log to its intact prefix and fetches the rest from
    /// peers, proven by the checksum chain. Without it, damage to a running
    /// replica's log (a misdirected marker write that landed on its
    /// records, rot under a sealed segment) stays unseen until a read or a
    /// restart, and a second fault elsewhere may then take the last copy.
    /// Reads go through the page cache: a device's damage under a cached
    /// page shows only once the page was evicted (or the process restarted).
    async fn scrub(&mut self, group: usize) -> Result<(), NodeStop> {
        let size_max_bytes = self.config.scrub_bytes_per_tick;
        debug_assert!(size_max_bytes > 0, "scrub_next_group scrubs only when the scrubber is on");
        let g = &mut self.groups[group];
        if g.checkpointing.is_some() {
            return Ok(());
        }
        let GroupMachine::Partition(partition) = g.replica.state_machine() else { return Ok(()) };
        let log = partition.log();
        let (first, end) = (log.first_offset(), log.next_offset());
        if first == end {
            // Nothing to read: a pass over an empty log is done at once.
            g.scrub_passes_completed += 1;
            return Ok(());
        }
        let from = if (first..end).contains(&g.scrub_next_offset) { g.scrub_next_offset } else { first };
        match log.read_records(from, crate::partition_log::READ_COUNT_MAX, size_max_bytes).await {
            Ok(records) => {
                debug_assert!(!records.is_empty(), "a read below the log's end returns a record");
                g.scrub_next_offset = from + records.len() as u64;
                if g.scrub_next_offset >= end {
                    g.scrub_passes_completed += 1;
                    shoal_vsr::marks::hit(shoal_vsr::marks::PARTITION_SCRUB_PASS_COMPLETED);
                }
                Ok(())
            }
            Err(error) => {
                shoal_vsr::marks::hit(shoal_vsr::marks::PARTITION_SCRUB_FOUND_DAMAGE);
                tracing::error!(
                    namespace = format_args!("{:#x}", g.namespace),
                    offset = from,
                    %error,
                    "scrub: partition log damaged; stopping so the restart salvages it and fetches the rest from peers"
                );
                Err(NodeStop::PartitionLog(error.into()))
            }
        }
    }

    /// Take a peer's `StateData` into the partition log. A malformed answer
    /// is ignored (the request is repeated next tick).
    async fn fill_state_data<W: NodeWorld>(
        &mut self,
        group: usize,
        message: &Message,
        world: &mut W,
    ) -> Result<(), NodeStop> {
        let mut reader = SnapshotReader::new(&message.body);
        let Ok(count) = reader.u32() else { return Ok(()) };
        let mut messages = Vec::new();
        for _ in 0..count.min(STATE_DATA_MESSAGES_MAX as u32) {
            let Ok(payload) = reader.bytes_with_len() else { return Ok(()) };
            messages.push(payload.to_vec());
        }
        if self.groups[group].replica.state_machine().missing().is_none() {
            // Late (a second frame, a duplicate, a slower peer): the gap is
            // filled, so nothing is written, and nothing waits for the
            // group's checkpoint or syncs its log here.
            shoal_vsr::marks::hit(shoal_vsr::marks::STATE_DATA_AFTER_FILL_IGNORED);
            return Ok(());
        }
        if self.groups[group].checkpointing.is_some() {
            // The fill writes the partition log: the sync beside the node ends first.
            self.finish_checkpoint(group, world).await?;
        }
        let g = &mut self.groups[group];
        let offset = message.header.context;
        let filled = g.replica.state_machine_mut().fill(offset, &messages).await?;
        world.on_state_data_filled(group, offset, filled);
        if filled > 0 && g.replica.state_machine().missing().is_none() {
            // This batch ended the gap and its fill appended it whole at
            // once (a short one): made durable now. A batch that only
            // staged part of the gap wrote nothing to the log, and a longer
            // fill is appended and synced tick by tick (`fill_more`).
            g.sync_partition().await?;
        }
        // The range asked is filled: ask the same peer for the next one now,
        // not at the next tick. One batch per tick filled a gap of 9,000
        // offsets in more than the 2 s the simulator's liveness checker
        // allows after a heal (swarm seed 35226); one batch per round trip
        // is several times faster, and still one request in flight.
        let asked = self.groups[group].state_data_asked;
        let missing = self.groups[group].replica.state_machine().to_fetch();
        if let (Some(asked), Some(missing)) = (asked, missing)
            && filled > 0
            && missing.start >= asked.end
            && asked.peer == message.header.replica
        {
            shoal_vsr::marks::hit(shoal_vsr::marks::STATE_DATA_ASKED_ON_ARRIVAL);
            self.ask_state_data(group, asked.peer, missing, world);
        }
        Ok(())
    }
}

/// A `RequestStateData` sent: to whom, and the range `start..end` asked.
#[derive(Debug, Clone, Copy)]
struct StateDataAsked {
    peer: u8,
    start: u64,
    end: u64,
}

/// A storage action's outcome, reported to the hooks: `Err` when the node
/// must stop (the hooks asked for it, or the action failed).
fn storage_done<W: NodeWorld>(
    group: usize,
    action: &Action,
    done: Result<(), StorageError>,
    world: &mut W,
) -> Result<(), NodeStop> {
    match done {
        Ok(()) => match world.after_storage(group, action, None) {
            Flow::Continue => Ok(()),
            Flow::Stop => Err(NodeStop::Halted),
        },
        Err(error) => {
            if let (Action::Checkpoint { .. }, StorageError::Journal(JournalError::Corrupt { .. })) = (action, &error) {
                shoal_vsr::marks::hit(shoal_vsr::marks::DRAIN_CORRUPT);
            }
            // A failed action may still have reached the disk in part; the
            // world learns it before the node stops.
            let _ = world.after_storage(group, action, Some(&error));
            Err(NodeStop::Storage { action: action_name(action), error })
        }
    }
}

/// What a partition log's write or sync means to the node: a gap (offsets
/// a state transfer left to fetch from peers) writes or syncs what the log
/// holds below it and is no failure; any other error stops the node.
fn partition_log_done(done: Result<(), PartitionSmError>) -> Result<(), NodeStop> {
    match done {
        Ok(()) | Err(PartitionSmError::Gap { .. }) => Ok(()),
        Err(error) => Err(NodeStop::PartitionLog(error)),
    }
}

/// A `StateData` body's size: a message count, then each message with its
/// length.
fn state_data_body_bytes(messages: &[(u64, Vec<u8>)]) -> usize {
    STATE_DATA_COUNT_BYTES + messages.iter().map(|(_, payload)| STATE_DATA_LENGTH_BYTES + payload.len()).sum::<usize>()
}

/// How many of `messages` (a prefix) one `StateData` body of at most
/// `body_bytes_max` holds. A message that was appended fits alone: its
/// append carried it with more framing than this.
fn state_data_messages_fitting(messages: &[(u64, Vec<u8>)], body_bytes_max: usize) -> usize {
    let mut body_bytes = STATE_DATA_COUNT_BYTES;
    messages
        .iter()
        .take_while(|(_, payload)| {
            body_bytes += STATE_DATA_LENGTH_BYTES + payload.len();
            body_bytes <= body_bytes_max
        })
        .count()
}

/// A `StateData` body's message count (u32).
const STATE_DATA_COUNT_BYTES: usize = 4;
/// The length before each message of a `StateData` body (u32).
const STATE_DATA_LENGTH_BYTES: usize = 4;

/// The prepares a group staged (`written`), in the order it wrote them.
fn prepare_messages(written: &[Action]) -> Vec<&Message> {
    written
        .iter()
        .map(|action| match action {
            Action::WritePrepare { message } => message,
            _ => unreachable!("only prepares are staged"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(sizes: &[usize]) -> Vec<(u64, Vec<u8>)> {
        sizes.iter().enumerate().map(|(offset, &size)| (offset as u64, vec![7; size])).collect()
    }

    #[test]
    fn a_state_data_answer_holds_the_messages_that_fit_one_frame() {
        let body_bytes_max = 4096 - HEADER_SIZE_BYTES;
        // Three messages of 1,000 bytes fit (4 + 3 x 1,004), a fourth does not.
        assert_eq!(state_data_messages_fitting(&messages(&[1000; 8]), body_bytes_max), 3);
        assert_eq!(state_data_body_bytes(&messages(&[1000; 3])), 3016);
        // One message as large as an append allows fits alone.
        let largest = body_bytes_max - STATE_DATA_COUNT_BYTES - STATE_DATA_LENGTH_BYTES;
        assert_eq!(state_data_messages_fitting(&messages(&[largest, 1]), body_bytes_max), 1);
        assert_eq!(state_data_body_bytes(&messages(&[largest])), body_bytes_max);
        // Small messages: the count bound (the caller's) is what stops them.
        assert_eq!(state_data_messages_fitting(&messages(&[10; 64]), body_bytes_max), 64);
        assert_eq!(state_data_messages_fitting(&[], body_bytes_max), 0);
    }
}
