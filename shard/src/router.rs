//! Routers: which shard of this process handles a frame.
//!
//! Owns the routing rules and nothing else: pure functions from a header (or
//! a namespace) and the shard count to a `ShardId`. Knows nothing of inboxes
//! or metrics; the pump (`pump::deliver`) re-checks every delivery against
//! these rules and counts what it drops.
//!
//! Rules:
//! - The metadata group (streams, topics, client sessions) lives on shard 0.
//! - A partition group lives on `(murmur3_32(ns.to_le_bytes(), 0) >> 16) % N`.
//! - A frame that is not bound to a partition namespace goes to shard 0. That
//!   covers the metadata group, replica-level control (ping/pong), session
//!   control (register, eviction), and any header whose namespace is unset (0)
//!   or malformed.
//!
//! Why "not bound → shard 0" matters (a historical bug in peer systems): the
//! router hashed the namespace of *every* frame. A VSR-reserved frame — a
//! commit or start_view_change of the metadata group, a register, a ping —
//! carries the metadata namespace or none at all (0), so the hash picked an
//! arbitrary shard that runs no consensus for that group. That shard logged a
//! warning and dropped the frame; VSR retransmitted it, the retransmission
//! hashed to the same shard and was dropped again, and the view change never
//! completed: the cluster wedged with no error anywhere. Here such frames all
//! reach shard 0, which either runs the group or counts a `NamespaceMiss`;
//! nothing is dropped silently.

use shoal_vsr::{Command, Header, Operation};

use crate::frame::{FrameVariant, ShardFrame};
use crate::namespace::Namespace;
use crate::owner_table::{ShardCount, ShardId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "client request for {operation:?} names namespace {namespace:?}, which is not a partition; the client must set the partition's namespace"
    )]
    NamespaceNotPartition { namespace: Namespace, operation: Operation },
    #[error("a {variant:?} frame cannot carry command {command:?}; the sender built the wrong frame, drop it")]
    UnexpectedCommand { variant: FrameVariant, command: Command },
    #[error("shard {shard:?} is not one of the {shard_count} shards of this process; drop the reply")]
    UnknownShard { shard: ShardId, shard_count: u16 },
    #[error("lifecycle frames go to every shard: broadcast them instead of routing")]
    Broadcast,
}

/// The shard of the metadata group.
pub fn route_metadata(shard_count: ShardCount) -> ShardId {
    debug_assert!(shard_count.get() >= 1);
    ShardId::METADATA
}

/// The hash that places a partition group: the top 16 bits of murmur3_32 of
/// the namespace's little-endian bytes with seed 0. Public so tests and tools
/// can check placement without a shard count.
pub fn partition_hash(namespace: Namespace) -> u32 {
    let bytes = namespace.raw().to_le_bytes();
    // Reading from a byte slice cannot fail.
    murmur3::murmur3_32(&mut &bytes[..], 0).expect("murmur3 over a slice") >> 16
}

/// The shard of a partition group.
pub fn route_partition(namespace: Namespace, shard_count: ShardCount) -> ShardId {
    let shard = ShardId((partition_hash(namespace) % u32::from(shard_count.get())) as u16);
    debug_assert!(shard_count.contains(shard));
    shard
}

/// Whether `command` belongs to one VSR group (and so to the group's shard),
/// rather than to the replica as a whole or to client sessions.
fn command_is_per_group(command: Command) -> bool {
    match command {
        Command::Request
        | Command::Prepare
        | Command::PrepareOk
        | Command::Reply
        | Command::Commit
        | Command::StartViewChange
        | Command::DoViewChange
        | Command::StartView
        | Command::RequestStartView
        | Command::RequestHeaders
        | Command::Headers
        | Command::RequestPrepare
        | Command::RequestCheckpoint
        | Command::Checkpoint
        | Command::RequestStateData
        | Command::StateData
        | Command::RejoinView
        | Command::Read
        | Command::ReadReply
        | Command::Refused => true,
        // Heartbeats and clock samples are per replica pair, not per group;
        // evictions end a client session, and sessions live in metadata.
        Command::Ping | Command::Pong | Command::Eviction => false,
    }
}

/// Whether `operation` can appear in a partition group's log.
fn operation_is_partition_capable(operation: Operation) -> bool {
    match operation {
        // Root opens every group's log, noop starts a new view's log, and
        // reserved (0) is what control messages carry: all group-bound.
        Operation::Reserved | Operation::Root | Operation::Noop => true,
        // A prepare packing several clients' requests belongs to the group
        // whose log it is in, like each request it carries.
        Operation::Packed => true,
        Operation::SendMessages | Operation::PollMessages => true,
        // Every group keeps its own client sessions (a retry must be filtered
        // by the log that applies it), so a register names its group.
        Operation::Register => true,
        // The stream/topic catalogue is metadata only.
        Operation::CreateStream
        | Operation::DeleteStream
        | Operation::CreateTopic
        | Operation::DeleteTopic
        | Operation::LookupPartition => false,
    }
}

/// The partition namespace a VSR message is bound to, if any.
pub fn partition_binding(header: &Header) -> Option<Namespace> {
    let namespace = Namespace(header.namespace);
    let bound = namespace.is_partition()
        && command_is_per_group(header.command)
        && operation_is_partition_capable(header.operation);
    bound.then_some(namespace)
}

/// The shard for a VSR message from a peer replica. Total: every header has
/// a shard. Frames bound to a partition namespace go to its shard; everything
/// else — consensus control of the metadata group, VSR-reserved operations,
/// pings, and headers with an unset or malformed namespace — goes to shard 0.
pub fn route_consensus_control(header: &Header, shard_count: ShardCount) -> ShardId {
    match partition_binding(header) {
        Some(namespace) => route_partition(namespace, shard_count),
        None => route_metadata(shard_count),
    }
}

/// The shard for a client request received on any shard.
pub fn route_request(header: &Header, shard_count: ShardCount) -> Result<ShardId, RouteError> {
    if header.command == Command::Read {
        return Ok(route_read(header, shard_count));
    }
    if header.command != Command::Request {
        return Err(RouteError::UnexpectedCommand { variant: FrameVariant::ClientForward, command: header.command });
    }
    let namespace = Namespace(header.namespace);
    match header.operation {
        Operation::SendMessages | Operation::PollMessages => {
            if namespace.is_partition() {
                Ok(route_partition(namespace, shard_count))
            } else {
                Err(RouteError::NamespaceNotPartition { namespace, operation: header.operation })
            }
        }
        // A register for a partition belongs to that partition's group.
        Operation::Register if namespace.is_partition() => Ok(route_partition(namespace, shard_count)),
        // The catalogue, sessions of the metadata group, and reserved
        // operations: shard 0 answers (and rejects what a client may not
        // ask), so the client gets a reply.
        Operation::Register
        | Operation::CreateStream
        | Operation::DeleteStream
        | Operation::CreateTopic
        | Operation::DeleteTopic
        | Operation::LookupPartition
        | Operation::Reserved
        | Operation::Root
        | Operation::Noop
        | Operation::Packed => Ok(route_metadata(shard_count)),
    }
}

/// The shard for a client's read (`Command::Read`, outside consensus): the
/// partition's shard, which serves it from the partition log. A read of a
/// namespace that is not a partition goes to shard 0, which answers that no
/// such partition exists, so the client gets a typed answer, not a timeout.
pub fn route_read(header: &Header, shard_count: ShardCount) -> ShardId {
    debug_assert_eq!(header.command, Command::Read);
    let namespace = Namespace(header.namespace);
    if namespace.is_partition() { route_partition(namespace, shard_count) } else { route_metadata(shard_count) }
}

/// The one entry point: which shard must handle `frame`.
pub fn route(frame: &ShardFrame, shard_count: ShardCount) -> Result<ShardId, RouteError> {
    let shard = match frame {
        ShardFrame::Consensus { header, .. } => route_consensus_control(header, shard_count),
        ShardFrame::ClientForward { header, .. } => route_request(header, shard_count)?,
        ShardFrame::ClientReply { origin_shard, .. } => {
            if !shard_count.contains(*origin_shard) {
                return Err(RouteError::UnknownShard { shard: *origin_shard, shard_count: shard_count.get() });
            }
            *origin_shard
        }
        ShardFrame::Lifecycle(_) => return Err(RouteError::Broadcast),
    };
    debug_assert!(shard_count.contains(shard));
    Ok(shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(n: usize) -> ShardCount {
        ShardCount::new(n).unwrap()
    }

    fn header(command: Command, operation: Operation, namespace: Namespace) -> Header {
        let mut header = Header::new(command, 1);
        header.operation = operation;
        header.namespace = namespace.raw();
        header.set_checksums(&[]);
        header
    }

    fn namespaces() -> Vec<Namespace> {
        vec![
            Namespace::METADATA,
            Namespace::UNBOUND,
            Namespace((1 << 63) | 42),
            Namespace::partition(1, 0, 0).unwrap(),
            Namespace::partition(1, 1, 1).unwrap(),
            Namespace::partition(7, 3, 2).unwrap(),
            Namespace::partition(8_000_000, 1_000_000, 1_000_000).unwrap(),
        ]
    }

    #[test]
    fn murmur3_of_namespace_zero_matches_the_reference() {
        let bytes = 0u64.to_le_bytes();
        assert_eq!(murmur3::murmur3_32(&mut &bytes[..], 0).unwrap(), 0x63852afc);
        assert_eq!(partition_hash(Namespace(0)), 25477);
        assert_eq!(route_partition(Namespace(0), count(8)), ShardId(25477 % 8));
    }

    #[test]
    fn historical_wedge_reserved_frames_with_unset_namespace_go_to_shard_zero() {
        // Hashing namespace 0 would pick shard 5 of 8, which has no consensus
        // for the metadata group: the frame would be dropped forever.
        assert_eq!(route_partition(Namespace(0), count(8)), ShardId(5));
        for command in [Command::Commit, Command::StartViewChange, Command::DoViewChange, Command::StartView] {
            let unset = header(command, Operation::Reserved, Namespace::UNBOUND);
            assert_eq!(route_consensus_control(&unset, count(8)), ShardId(0), "{command:?}");
        }
        let register = header(Command::Prepare, Operation::Register, Namespace::UNBOUND);
        assert_eq!(route_consensus_control(&register, count(8)), ShardId(0));
    }

    #[test]
    fn metadata_group_consensus_goes_to_shard_zero() {
        for command in Command::ALL {
            let h = header(*command, Operation::Reserved, Namespace::METADATA);
            assert_eq!(route_consensus_control(&h, count(8)), ShardId(0));
        }
    }

    #[test]
    fn partition_prepares_go_to_the_partition_shard() {
        let shard_count = count(8);
        // Find a partition that does not hash to shard 0 so the test can fail.
        let namespace = (1..100)
            .map(|p| Namespace::partition(1, 1, p).unwrap())
            .find(|ns| route_partition(*ns, shard_count) != ShardId(0))
            .unwrap();
        let expected = route_partition(namespace, shard_count);
        for command in [Command::Prepare, Command::PrepareOk, Command::Commit, Command::StartView] {
            let h = header(command, Operation::SendMessages, namespace);
            assert_eq!(route_consensus_control(&h, shard_count), expected);
        }
        // A ping is replica-level even when a namespace is filled in.
        let ping = header(Command::Ping, Operation::Reserved, namespace);
        assert_eq!(route_consensus_control(&ping, shard_count), ShardId(0));
        // Each group keeps its own sessions: a register follows its namespace.
        let register = header(Command::Prepare, Operation::Register, namespace);
        assert_eq!(route_consensus_control(&register, shard_count), route_partition(namespace, shard_count));
    }

    #[test]
    fn exhaustive_commands_operations_namespaces() {
        for n in [1usize, 2, 3, 7, 8, 64] {
            let shard_count = count(n);
            for command in Command::ALL {
                for operation in Operation::ALL {
                    for namespace in namespaces() {
                        let h = header(*command, *operation, namespace);
                        let shard = route_consensus_control(&h, shard_count);
                        assert!(shard.index() < n);
                        let replica_level = matches!(command, Command::Ping | Command::Pong | Command::Eviction);
                        let metadata_only = matches!(
                            operation,
                            Operation::CreateStream
                                | Operation::DeleteStream
                                | Operation::CreateTopic
                                | Operation::DeleteTopic
                                | Operation::LookupPartition
                        );
                        let expected = if namespace.is_partition() && !replica_level && !metadata_only {
                            route_partition(namespace, shard_count)
                        } else {
                            ShardId(0)
                        };
                        assert_eq!(shard, expected, "{command:?} {operation:?} {namespace:?} n={n}");
                        // Consensus control with a VSR-reserved operation and no
                        // partition binding always lands on shard 0.
                        if operation.is_reserved() && !namespace.is_partition() {
                            assert_eq!(shard, ShardId(0));
                        }
                        let frame = ShardFrame::Consensus { peer: 1, header: h, body: vec![] };
                        assert_eq!(route(&frame, shard_count), Ok(shard));
                    }
                }
            }
        }
    }

    #[test]
    fn reads_route_to_the_partition_shard_and_anything_else_to_shard_zero() {
        let shard_count = count(8);
        for namespace in namespaces() {
            let read = header(Command::Read, Operation::Reserved, namespace);
            let expected = if namespace.is_partition() { route_partition(namespace, shard_count) } else { ShardId(0) };
            assert_eq!(route_request(&read, shard_count), Ok(expected), "{namespace:?}");
        }
    }

    #[test]
    fn client_requests_route_by_operation_and_namespace() {
        let shard_count = count(4);
        let partition = Namespace::partition(2, 1, 0).unwrap();
        let send = header(Command::Request, Operation::SendMessages, partition);
        assert_eq!(route_request(&send, shard_count), Ok(route_partition(partition, shard_count)));
        let create = header(Command::Request, Operation::CreateStream, Namespace::METADATA);
        assert_eq!(route_request(&create, shard_count), Ok(ShardId(0)));
        let register = header(Command::Request, Operation::Register, Namespace::UNBOUND);
        assert_eq!(route_request(&register, shard_count), Ok(ShardId(0)));
        let unbound_send = header(Command::Request, Operation::PollMessages, Namespace::UNBOUND);
        assert_eq!(
            route_request(&unbound_send, shard_count),
            Err(RouteError::NamespaceNotPartition {
                namespace: Namespace::UNBOUND,
                operation: Operation::PollMessages
            })
        );
        let prepare = header(Command::Prepare, Operation::SendMessages, partition);
        let frame =
            ShardFrame::ClientForward { connection_id: 1, origin_shard: ShardId(3), header: prepare, body: vec![] };
        assert_eq!(
            route(&frame, shard_count),
            Err(RouteError::UnexpectedCommand { variant: FrameVariant::ClientForward, command: Command::Prepare })
        );
    }

    #[test]
    fn replies_return_to_the_origin_shard_and_lifecycle_is_broadcast() {
        let shard_count = count(4);
        let reply = header(Command::Reply, Operation::SendMessages, Namespace::partition(1, 1, 1).unwrap());
        let frame = ShardFrame::ClientReply { connection_id: 9, origin_shard: ShardId(3), header: reply, body: vec![] };
        assert_eq!(route(&frame, shard_count), Ok(ShardId(3)));
        let frame = ShardFrame::ClientReply { connection_id: 9, origin_shard: ShardId(4), header: reply, body: vec![] };
        assert_eq!(route(&frame, shard_count), Err(RouteError::UnknownShard { shard: ShardId(4), shard_count: 4 }));
        let frame = ShardFrame::Lifecycle(crate::frame::Lifecycle::Shutdown);
        assert_eq!(route(&frame, shard_count), Err(RouteError::Broadcast));
    }

    #[test]
    fn partitions_spread_over_every_shard() {
        let shard_count = count(8);
        let mut per_shard = [0u32; 8];
        for stream in 1..=10 {
            for partition in 0..1000 {
                let ns = Namespace::partition(stream, 1, partition).unwrap();
                per_shard[route_partition(ns, shard_count).index()] += 1;
            }
        }
        // 10_000 partitions over 8 shards: 1250 each on average.
        for (shard, placed) in per_shard.iter().enumerate() {
            assert!((1000..1500).contains(placed), "shard {shard} got {placed}");
        }
    }

    proptest::proptest! {
        /// Any header, any shard count: a shard below the count; shard 0
        /// unless bound to a partition namespace.
        #[test]
        fn any_header_routes_inside_the_shard_count(
            namespace in proptest::prelude::any::<u64>(),
            command in proptest::sample::select(Command::ALL),
            operation in proptest::sample::select(Operation::ALL),
            n in 1usize..=1024,
        ) {
            let h = header(command, operation, Namespace(namespace));
            let shard = route_consensus_control(&h, count(n));
            proptest::prop_assert!(shard.index() < n);
            if partition_binding(&h).is_none() {
                proptest::prop_assert_eq!(shard, ShardId(0));
            }
        }
    }
}
