//! shoal-shard: one replica process is N shards, one per pinned thread.
//!
//! Owns `ShardFrame`, the routers (`route_metadata`, `route_partition`,
//! `route_consensus_control`), the replica owner table, the shard pump, the
//! metadata handoff, shutdown, `frame_drops_total`, the partition state
//! machine with its durable partition log, and the wire format of a bus
//! connection (`wire`: hello and frame decoder, no sockets).
//!
//! Must not touch compio, sockets or threads: it runs against `shoal_vsr::Io`,
//! so the simulator drives the very same code.

pub mod channel;
pub mod frame;
pub mod handoff;
pub mod lifecycle;
pub mod message_batch;
pub mod metrics;
pub mod namespace;
pub mod node;
pub mod owner_table;
pub mod partition_log;
pub mod partition_sm;
pub mod pump;
pub mod read;
pub mod router;
pub mod state_machine;
pub mod wire;

pub use channel::{LocalInbox, SHARD_INBOX_CAPACITY_MAX, ShardSender, TrySendError};
pub use frame::{FrameVariant, Lifecycle, ShardFrame};
pub use handoff::{
    HANDOFF_POLL_INTERVAL_NS, HANDOFF_TIMEOUT_NS, HandoffError, OneShotReceiver, OneShotSender, await_snapshot,
    broadcast_snapshot, oneshot, open_metadata, write_metadata,
};
pub use lifecycle::{JoinReport, LifecycleError, Progress, ShardExit, ShutdownFlag, Stall, TaskSet, Watchdog};
pub use message_batch::{BATCH_MESSAGES_MAX, BATCH_SIZE_MAX_BYTES, BatchError, BatchReply, decode_batch, encode_batch};
pub use metrics::{DropReason, FrameDrops};
pub use namespace::{Namespace, NamespaceError, NamespaceKind};
pub use owner_table::{OWNER_NONE, OwnerError, ReplicaOwnerTable, ShardCount, ShardCountError, ShardId};
pub use partition_log::{PartitionLog, PartitionLogConfig, PartitionLogError, Salvage, SalvageCut};
pub use partition_sm::{PARTITION_PENDING_MESSAGES_MAX, PartitionSmError, PartitionStateMachine};
pub use pump::{Delivery, deliver, dispatch};
pub use read::{READ_MESSAGES_MAX, READ_REPLY_SIZE_MAX_BYTES, ReadAnswer, ReadError, ReadRequest};
pub use router::{
    RouteError, route, route_consensus_control, route_metadata, route_partition, route_read, route_request,
};
pub use state_machine::{MetadataError, MetadataReply, MetadataRequest, MetadataState, decode_reply};
