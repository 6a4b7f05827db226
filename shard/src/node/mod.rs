//! The node: everything between a socket and the replica, generic over `Io`.
//!
//! A `Node` holds, per VSR group, the driver that executes the replica's
//! actions under the ordering contract (`driver`), the group's storage
//! (superblock, journal, checkpoint: `storage`) and state machine with its
//! partition log (`machine`), state-data serving and filling, and the
//! timers; and, shared by the process, the owner table and the hops between
//! shards. The server and the simulator both run one `Node` per shard
//! holding the groups hashed to that shard; a hop between shards is a real
//! bounded inbox around the node (crossfire in the server, the shard crate's
//! `LocalInbox` and pump in the simulator), and both route through
//! `route_inbound`.
//! `shoal-server` and `shoal-sim` run this same code: the simulator adds only
//! the world around it (fault policy, clients, checkers, event loop).
//!
//! The node knows neither which network it talks through (`NodeBus`: the
//! simulated network or the TCP bus) nor whether anyone injects faults or
//! watches it (`NodeHooks`: every method has a do-nothing default, which is
//! what the server uses).
//!
//! Ordering contract, asserted here and not in the simulator: a message that
//! promises something (a start_view_change, do_view_change, start_view,
//! prepare_ok, or a client reply) leaves only once what it promises is
//! durable; a message that depends on nothing (a prepare, a commit) leaves
//! at once, so a primary sends its prepare while it writes it. Prepares are
//! group-committed: staged as the replica asks, then written together (one
//! write per run of adjacent slots) and flushed together (one journal flush
//! for every prepare of an event, or of a turn: `begin_turn` / `end_turn`).
//!
//! Flushes run beside the node (its one mode: the server and the simulator
//! run this same code): a turn's end (or an event outside a turn) writes
//! the staged prepares and *starts* their fsync, one per group at a time,
//! and returns; the node keeps handling frames while it runs, staging new
//! prepares for the next flush, counting peers' votes, and sending what
//! promises nothing or only what is durable already; whoever runs the node
//! polls the fsync (`poll_flushes`) and completes it when it ends
//! (`complete_flushes`), which reports its prepares durable to the replica,
//! sends the messages they held, and starts the next flush. Durable is what
//! a *completed* fsync made durable (`GroupStorage::check_durable`), and
//! `execute` asserts it at every send. A prepare is durable once its ring
//! copy is, one journal flush after the prepare itself; the copy rides with
//! the prepares the next flush writes, so a loaded group pays one fdatasync
//! per flush. A checkpoint runs beside the node the same way
//! (`start_checkpoint`), and is polled and completed with the flushes.
//!
//! Every other storage action runs in order, durable before the next
//! action, and after the prepares written before it are flushed (a running
//! flush or checkpoint is finished first). An error stops the node
//! (fail-stop) and it restarts from what the disk kept.
//!
//! Must not touch the wall clock, threads or OS entropy: time and entropy
//! come from `Io`, so a simulated seed replays bit for bit.

pub mod driver;
pub mod join;
pub mod machine;
pub mod read;
pub mod storage;

use shoal_vsr::header::{Command, Header};
use shoal_vsr::message::Message;
use shoal_vsr::replica::{Action, Committed, Status};

use crate::frame::FrameVariant;
use crate::metrics::DropReason;
use crate::owner_table::ShardId;

pub use driver::{
    CHECKPOINT_BESIDE_APPENDS_SLOTS_MAX, Group, Node, NodeConfig, Routed, STATE_DATA_MESSAGES_MAX, route_inbound,
};
pub use machine::{GroupMachine, METADATA_NAMESPACE, partition_dir};
pub use storage::{GroupStorage, Promise, REJOIN_REPLICAS_MIN, StorageConfig, StorageDamage, StorageError};

/// Files one group holds open at once, at most: its journal, the journal a
/// compaction writes beside it and the spare it keeps (3), its superblock
/// and the copy being replaced (2), a checkpoint being written or read (1),
/// the partition log's active segment (1) and the sealed segments it keeps
/// open for reads (`SEALED_SEGMENT_FILES_OPEN_MAX`). Independent of how
/// much the group holds: a process's open-file limit is sized from it.
pub const GROUP_FILES_OPEN_MAX: u64 = 7 + crate::partition_log::SEALED_SEGMENT_FILES_OPEN_MAX as u64;

/// Files a node's process holds open beside its groups' (the data dir's
/// identity, the metadata handoff's files).
pub const PROCESS_FILES_OPEN_MAX: u64 = 4;

/// The open-file limit (`RLIMIT_NOFILE`, sockets left out) a process that
/// holds `group_count` groups needs.
pub fn files_open_max(group_count: usize) -> u64 {
    group_count as u64 * GROUP_FILES_OPEN_MAX + PROCESS_FILES_OPEN_MAX
}

/// The replica type every group of a node runs.
pub type GroupReplica<I> = shoal_vsr::replica::Replica<GroupMachine<I>>;

/// Where the node's outgoing frames go: the connection a shard holds to a
/// peer replica or a client. The simulated network and the TCP bus both fit.
pub trait NodeBus {
    /// Send `message` to replica `to` on the connection shard `via` holds.
    fn send_to_replica(&mut self, via: ShardId, to: u8, message: Message);
    /// Send `message` to `client` on the connection shard `via` holds.
    fn reply_to_client(&mut self, via: ShardId, client: u128, message: Message);
    /// Send `frame`, a whole encoded reply (a read's, built in place from
    /// the partition log), to `client` as `reply_to_client` would. A world
    /// whose sockets take bytes sends it as is; the default decodes it
    /// back into a `Message` (the simulator's network carries messages).
    fn reply_frame_to_client(&mut self, via: ShardId, client: u128, frame: Vec<u8>) {
        let message = Message::decode(&frame).expect("the node encodes whole, sealed frames");
        self.reply_to_client(via, client, message);
    }
    /// The shard that holds `client`'s connection (its replies hop there).
    fn client_shard(&self, client: u128) -> ShardId;
}

/// Whether the node goes on after a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop the node now, as a crash would (the simulator's crash at a
    /// protocol moment); the caller restarts it from its disk.
    Stop,
}

/// What the world around a node may observe and inject. The node calls these
/// at fixed points and never knows what they do; every default does nothing,
/// which is the server's world. `group` is the index of the group in the node.
pub trait NodeHooks {
    /// Before a storage action runs (the simulator arms a disk fault here).
    fn before_storage(&mut self, _group: usize, _action: &Action) {}
    /// After a storage action ran: `error` is `None` once it is durable. A
    /// `Stop` after success crashes the node right after the completion.
    fn after_storage(&mut self, _group: usize, _action: &Action, _error: Option<&StorageError>) -> Flow {
        Flow::Continue
    }
    /// Just before a message to a peer leaves (the simulator's promises
    /// checker reads the durable disk here).
    fn before_send(&mut self, _group: usize, _header: &Header) {}
    /// Right after a promise-bearing message left.
    fn after_promise_sent(&mut self, _group: usize, _command: Command) -> Flow {
        Flow::Continue
    }
    /// Ops the group just committed, before any reply announcing them leaves.
    fn on_committed(&mut self, _group: usize, _committed: &[Committed]) {}
    /// One journal flush of the group (a group commit) made `prepares`
    /// prepares durable (the server counts them for its metrics).
    fn on_journal_flushed(&mut self, _group: usize, _prepares: usize) {}
    /// A journal compaction was installed `window_ns` after it was staged
    /// (its writes went to the spare alone meanwhile), releasing
    /// `prepares_released` prepares its window's flushes made durable
    /// (`on_journal_flushed` counted those flushes, not these prepares).
    fn on_compaction_installed(&mut self, _group: usize, _window_ns: u64, _prepares_released: usize) {}
    /// The group's replica entered a newer view.
    fn on_view(&mut self, _group: usize, _view: u64, _status: Status) {}
    /// The replica was offered a canonical log contradicting ops it committed
    /// (counted by the replica, refused; a safety violation somewhere).
    fn on_committed_conflict(&mut self, _group: usize, _why: &str) {}
    /// A frame hops from shard `from` to shard `to` of this process; `Err`
    /// drops it with that reason (the node counts it in `frame_drops_total`).
    /// A world that runs one node per shard hops frames through its inboxes
    /// around the node, so a node only ever hops from or to its own shard.
    fn hop(&mut self, _from: ShardId, _to: ShardId, _variant: FrameVariant) -> Result<(), DropReason> {
        Ok(())
    }
    /// A draw in `0..bound` for a choice the node makes at random (which
    /// peer to ask for state data). `None` (the default): the node draws
    /// from `Io` entropy. The simulator answers from its world seed, so a
    /// seed's fault schedule and the node's choices stay one stream.
    fn draw(&mut self, _bound: u64) -> Option<u64> {
        None
    }
    /// A peer filled `count` partition messages from `offset` (state data).
    fn on_state_data_filled(&mut self, _group: usize, _offset: u64, _count: usize) {}
}

/// The server's world: nothing observes, nothing is injected.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl NodeHooks for NoHooks {}

/// Everything a node needs around it.
pub trait NodeWorld: NodeBus + NodeHooks {}
impl<W: NodeBus + NodeHooks> NodeWorld for W {}

/// Why a node stopped. It must restart from its disk.
#[derive(Debug, thiserror::Error)]
pub enum NodeStop {
    #[error("{action} failed, the replica stops and restarts from its disk: {error}")]
    Storage { action: &'static str, error: StorageError },
    #[error("partition log failed, the replica stops and restarts from its disk: {0}")]
    PartitionLog(#[from] crate::partition_sm::PartitionSmError),
    #[error("stopped by the world (a crash at a protocol moment)")]
    Halted,
}

/// The name of a storage action, for logs and errors.
pub fn action_name(action: &Action) -> &'static str {
    match action {
        Action::WritePrepare { .. } => "write_prepare",
        Action::TruncateLog { .. } => "truncate_log",
        Action::WriteSuperblock { .. } => "write_superblock",
        Action::Checkpoint { .. } => "checkpoint",
        Action::Send { .. } => "send",
        Action::Reply { .. } => "reply",
    }
}
