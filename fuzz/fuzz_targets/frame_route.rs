//! Frame routing through the real pump: `dispatch` to per-shard
//! `LocalInbox`es, then `deliver` on the receiving shard, for a fuzz-chosen
//! sequence of frames (every variant, structured namespaces, inboxes that
//! are small, forced full or closed) with 1..=8 shards.
//!
//! Checks, against a model written from the routing rules in `router.rs`'s
//! module comment and from the namespace bit layout (not from the router's
//! helpers):
//! - conservation: every frame is queued on exactly one inbox, or `dispatch`
//!   returns a drop reason and exactly one drop counter (that reason, that
//!   variant) goes up; a broadcast reaches every open inbox with room and
//!   counts every other one;
//! - an inbox drains in dispatch order, and `deliver` on the shard it was
//!   queued for accepts the frame unchanged, counting nothing;
//! - consensus frames not bound to a partition (metadata, unset or malformed
//!   namespace, replica-level commands, catalogue operations) go to shard 0;
//!   partition-bound frames and client requests go to the namespace's owner
//!   shard, which is the same for every frame of that namespace;
//! - replies go back to their origin shard, or are counted as unknown;
//! - determinism: a second run of the same input gives the same outcomes and
//!   the same drop counters.
#![no_main]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::Input;
use libfuzzer_sys::fuzz_target;
use shoal_shard::namespace::Namespace;
use shoal_shard::pump::{Delivery, broadcast, deliver, dispatch};
use shoal_shard::router::route_partition;
use shoal_shard::{DropReason, FrameDrops, FrameVariant, Lifecycle, LocalInbox, ShardCount, ShardFrame, ShardId};
use shoal_vsr::{Command, Header, Operation};

/// Shards of one process; 8 reaches every modulus the placement hash sees in
/// small deployments.
const SHARD_COUNT_MAX: usize = 8;
/// Frames one input dispatches.
const FRAMES_MAX: usize = 48;
/// A tiny inbox capacity so `InboxFull` happens without thousands of frames.
const INBOX_CAPACITY_MAX: usize = 6;
/// Namespaces an input draws from, so several frames share one namespace and
/// the owner-shard consistency check has something to compare.
const NAMESPACE_POOL_SIZE: usize = 4;
/// Frame bodies are not inspected by routing; a few bytes check that they
/// pass through unchanged.
const BODY_SIZE_MAX_BYTES: usize = 8;

/// Bits of a partition namespace (`namespace.rs`): top bit clear, stream id
/// (bits 40..63) at least 1.
const NAMESPACE_TOP_BIT: u64 = 1 << 63;
const NAMESPACE_STREAM_SHIFT: u32 = 40;

/// Finding of this target: `Namespace::kind` calls a namespace with stream
/// id 0 but a nonzero topic or partition id a partition, although
/// `namespace.rs` documents that a partition always has stream id >= 1 and
/// `router.rs` sends malformed namespaces to shard 0; such a frame is hashed
/// to a partition shard. The model follows the code for these values while
/// this is `true`, so the target keeps fuzzing everything else; set it to
/// `false` once `kind` checks the stream id (seed
/// `seeds/frame_route/bug-stream-zero-namespace` then passes again).
const STREAM_ZERO_ROUTES_AS_PARTITION: bool = false;

fn is_partition_namespace(raw: u64) -> bool {
    let stream_id_set = raw >> NAMESPACE_STREAM_SHIFT != 0;
    raw & NAMESPACE_TOP_BIT == 0 && (stream_id_set || STREAM_ZERO_ROUTES_AS_PARTITION && raw != 0)
}

/// Replica-level and session commands belong to no group.
fn command_is_replica_level(command: Command) -> bool {
    matches!(command, Command::Ping | Command::Pong | Command::Eviction)
}

/// The stream/topic catalogue lives in the metadata group only.
fn operation_is_catalogue(operation: Operation) -> bool {
    matches!(
        operation,
        Operation::CreateStream
            | Operation::DeleteStream
            | Operation::CreateTopic
            | Operation::DeleteTopic
            | Operation::LookupPartition
    )
}

/// What the model expects of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Shard 0 (control and metadata).
    ShardZero,
    /// The owner shard of this partition namespace.
    Owner(u64),
    /// This exact shard (a reply's origin).
    Shard(ShardId),
    /// Refused by the router with this reason.
    Refused(DropReason),
}

fn model(frame: &ShardFrame, shard_count: ShardCount) -> Expect {
    match frame {
        ShardFrame::Consensus { header, .. } => {
            let bound = is_partition_namespace(header.namespace)
                && !command_is_replica_level(header.command)
                && !operation_is_catalogue(header.operation);
            if bound { Expect::Owner(header.namespace) } else { Expect::ShardZero }
        }
        ShardFrame::ClientForward { header, .. } => {
            // A read by offset (outside consensus) goes to its partition's
            // shard; one of a namespace that is no partition to shard 0,
            // which answers "no such partition".
            if header.command == Command::Read {
                return if is_partition_namespace(header.namespace) {
                    Expect::Owner(header.namespace)
                } else {
                    Expect::ShardZero
                };
            }
            if header.command != Command::Request {
                return Expect::Refused(DropReason::ForwardFailed);
            }
            let partition = is_partition_namespace(header.namespace);
            match header.operation {
                // Data operations need a partition: a client that did not set
                // one gets a counted refusal, not a reply from the wrong group.
                Operation::SendMessages | Operation::PollMessages if !partition => {
                    Expect::Refused(DropReason::ForwardFailed)
                }
                Operation::SendMessages | Operation::PollMessages | Operation::Register if partition => {
                    Expect::Owner(header.namespace)
                }
                _ => Expect::ShardZero,
            }
        }
        ShardFrame::ClientReply { origin_shard, .. } => {
            if origin_shard.index() < usize::from(shard_count.get()) {
                Expect::Shard(*origin_shard)
            } else {
                Expect::Refused(DropReason::UnknownShard)
            }
        }
        // Lifecycle frames are broadcast; dispatching one is a counted refusal.
        ShardFrame::Lifecycle(_) => Expect::Refused(DropReason::ForwardFailed),
    }
}

fn namespace(input: &mut Input<'_>) -> u64 {
    match input.byte() % 6 {
        0 => Namespace::METADATA.raw(),
        1 => Namespace::UNBOUND.raw(),
        // Malformed: top bit set but not the metadata value.
        2 => NAMESPACE_TOP_BIT | u64::from(input.u32()).max(1),
        // Stream id 0 with a topic or partition: not a partition.
        3 => u64::from(input.u32()) & ((1 << NAMESPACE_STREAM_SHIFT) - 1),
        4 => {
            let stream_id = u32::from(input.u16()).max(1);
            let topic_id = u32::from(input.byte());
            let partition_id = u32::from(input.u16());
            Namespace::partition(stream_id, topic_id, partition_id).expect("ids within their bits").raw()
        }
        _ => input.u64(),
    }
}

fn header(input: &mut Input<'_>, namespaces: &[u64]) -> Header {
    let mut header = Header::new(Command::ALL[usize::from(input.byte()) % Command::ALL.len()], 1);
    header.operation = Operation::ALL[usize::from(input.byte()) % Operation::ALL.len()];
    header.namespace = namespaces[usize::from(input.byte()) % namespaces.len()];
    header.op = u64::from(input.byte());
    let body = input.bytes(BODY_SIZE_MAX_BYTES);
    header.set_checksums(&body);
    header
}

fn frame(input: &mut Input<'_>, namespaces: &[u64]) -> ShardFrame {
    let selector = input.byte();
    // Origins reach past the largest shard count, so unknown shards occur.
    let origin_shard = ShardId(u16::from(input.byte()) % (SHARD_COUNT_MAX as u16 + 2));
    let connection_id = u64::from(input.byte());
    let header = header(input, namespaces);
    let body = vec![selector; usize::from(selector >> 5)];
    match selector % 8 {
        0..=3 => ShardFrame::Consensus { peer: selector >> 5, header, body },
        4 | 5 => ShardFrame::ClientForward { connection_id, origin_shard, header, body },
        6 => ShardFrame::ClientReply { connection_id, origin_shard, header, body },
        _ if selector & 0x10 == 0 => ShardFrame::Lifecycle(Lifecycle::Shutdown),
        _ => ShardFrame::Lifecycle(Lifecycle::MetadataSnapshot(body)),
    }
}

/// What happened to one frame.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Dispatched(Result<ShardId, DropReason>),
    Broadcast { rejected: usize },
}

/// Everything one run observed; two runs of one input must be equal.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    steps: Vec<Step>,
    drops: Vec<Vec<((FrameVariant, DropReason), u64)>>,
}

fn total_drops(sender: &FrameDrops, inbox_drops: &[Arc<FrameDrops>]) -> u64 {
    sender.total() + inbox_drops.iter().map(|drops| drops.total()).sum::<u64>()
}

fn count_of(sender: &FrameDrops, inbox_drops: &[Arc<FrameDrops>], variant: FrameVariant, reason: DropReason) -> u64 {
    sender.get(variant, reason) + inbox_drops.iter().map(|drops| drops.get(variant, reason)).sum::<u64>()
}

fn run(data: &[u8]) -> Outcome {
    let mut input = Input(data);
    let shard_count_raw = usize::from(input.byte()) % SHARD_COUNT_MAX + 1;
    let shard_count = ShardCount::new(shard_count_raw).expect("1..=8 shards");
    let inbox_drops: Vec<Arc<FrameDrops>> = (0..shard_count_raw).map(|_| Arc::new(FrameDrops::new())).collect();
    // The inboxes, and for the model what each rejects everything with
    // (`LocalInbox` does not expose its forced-full flag).
    let mut rejects_all: Vec<Option<DropReason>> = Vec::new();
    let inboxes: Vec<LocalInbox> = inbox_drops
        .iter()
        .map(|drops| {
            let inbox = LocalInbox::new(usize::from(input.byte()) % INBOX_CAPACITY_MAX + 1, Arc::clone(drops));
            let state = input.byte() % 8;
            match state {
                0 => inbox.set_full(true),
                1 => inbox.close(),
                _ => {}
            }
            rejects_all.push(match state {
                0 => Some(DropReason::InboxFull),
                1 => Some(DropReason::Closed),
                _ => None,
            });
            inbox
        })
        .collect();
    let sender_drops = FrameDrops::new();
    let namespaces: Vec<u64> = (0..NAMESPACE_POOL_SIZE).map(|_| namespace(&mut input)).collect();

    let mut steps = Vec::new();
    // What each inbox must hold, in order.
    let mut expected_queues: Vec<Vec<ShardFrame>> = vec![Vec::new(); shard_count_raw];
    let mut owners: BTreeMap<u64, ShardId> = BTreeMap::new();
    let frame_count = usize::from(input.byte()) % FRAMES_MAX + 1;
    for _ in 0..frame_count {
        let frame = frame(&mut input, &namespaces);
        let variant = frame.variant();
        let expect = model(&frame, shard_count);
        let drops_before = total_drops(&sender_drops, &inbox_drops);

        if matches!(frame, ShardFrame::Lifecycle(_)) && input.bool() {
            // Broadcast: every inbox but the sender's gets a copy or counts one.
            let skip = ShardId(u16::from(input.byte()) % shard_count.get());
            let rejected = broadcast(&frame, &inboxes, Some(skip));
            let mut rejected_model = 0;
            for (index, inbox) in inboxes.iter().enumerate() {
                if index == skip.index() {
                    continue;
                }
                if rejects_all[index].is_some() || expected_queues[index].len() >= inbox.capacity() {
                    rejected_model += 1;
                } else {
                    expected_queues[index].push(frame.clone());
                }
            }
            assert_eq!(rejected, rejected_model, "broadcast rejections");
            assert_eq!(
                total_drops(&sender_drops, &inbox_drops),
                drops_before + rejected as u64,
                "broadcast drops uncounted"
            );
            steps.push(Step::Broadcast { rejected });
            continue;
        }

        let reason_count_before = |reason| count_of(&sender_drops, &inbox_drops, variant, reason);
        let counts_before: Vec<u64> = DropReason::ALL.iter().map(|reason| reason_count_before(*reason)).collect();
        // The shard the model routes to, and whether its inbox will refuse.
        let target = match expect {
            Expect::ShardZero => Some(ShardId(0)),
            Expect::Shard(origin) => Some(origin),
            // The owner is where the placement hash puts the namespace.
            Expect::Owner(raw) => Some(route_partition(Namespace(raw), shard_count)),
            Expect::Refused(_) => None,
        };
        let inbox_refusal = target.and_then(|shard| {
            let index = shard.index();
            rejects_all[index]
                .or((expected_queues[index].len() >= inboxes[index].capacity()).then_some(DropReason::InboxFull))
        });
        let result = dispatch(frame.clone(), &inboxes, shard_count, &sender_drops);
        let drops_after = total_drops(&sender_drops, &inbox_drops);
        match result {
            Ok(shard) => {
                assert!(shard.index() < shard_count_raw);
                assert_eq!(drops_after, drops_before, "a dispatched frame was also counted as dropped");
                assert_eq!(
                    inbox_refusal,
                    None,
                    "shard {shard:?}'s inbox accepted a frame it must refuse: {frame:?} expect {expect:?} queues {:?}",
                    expected_queues.iter().map(Vec::len).collect::<Vec<_>>()
                );
                match expect {
                    Expect::ShardZero => assert_eq!(shard, ShardId(0), "unbound frame off shard 0: {frame:?}"),
                    Expect::Shard(origin) => assert_eq!(shard, origin, "reply not sent to its origin"),
                    Expect::Owner(raw) => {
                        let owner = *owners.entry(raw).or_insert(shard);
                        assert_eq!(shard, owner, "two frames of namespace {raw:#x} on different shards");
                        assert_eq!(shard, route_partition(Namespace(raw), shard_count));
                        if shard_count_raw == 1 {
                            assert_eq!(shard, ShardId(0));
                        }
                    }
                    Expect::Refused(reason) => {
                        panic!("model expected a {reason:?} refusal, got shard {shard:?}: {frame:?}")
                    }
                }
                expected_queues[shard.index()].push(frame);
            }
            Err(reason) => {
                assert_eq!(drops_after, drops_before + 1, "a refused frame must be counted once: {reason:?}");
                let index = DropReason::ALL.iter().position(|r| *r == reason).unwrap();
                assert_eq!(count_of(&sender_drops, &inbox_drops, variant, reason), counts_before[index] + 1);
                match expect {
                    Expect::Refused(expected) => assert_eq!(reason, expected, "{frame:?}"),
                    // Routed, but the target inbox refused it.
                    _ => assert_eq!(Some(reason), inbox_refusal, "routable frame refused: {frame:?}"),
                }
            }
        }
        steps.push(Step::Dispatched(result));
    }

    // Drain: each inbox holds exactly what the model queued, in order, and
    // its shard accepts every frame unchanged.
    for (index, inbox) in inboxes.iter().enumerate() {
        let this_shard = ShardId(index as u16);
        let receiver_drops = FrameDrops::new();
        let mut drained = Vec::new();
        while let Some(frame) = inbox.try_recv() {
            drained.push(frame);
        }
        assert_eq!(drained, expected_queues[index], "inbox {index} lost, reordered or invented frames");
        for frame in drained {
            assert_eq!(
                deliver(frame.clone(), this_shard, shard_count, &receiver_drops),
                Delivery::Accepted(frame.clone())
            );
            // A non-lifecycle frame on any other shard is a misroute, dropped
            // and counted. With debug assertions (cargo fuzz's default build)
            // `deliver` fails an assertion there by design, so only a `-O`
            // build (`cargo fuzz run -O frame_route`) checks the count.
            if !cfg!(debug_assertions) && !matches!(frame, ShardFrame::Lifecycle(_)) && shard_count_raw > 1 {
                let other = ShardId(((index + 1) % shard_count_raw) as u16);
                let before = receiver_drops.get(frame.variant(), DropReason::ConsensusMisroute);
                assert_eq!(
                    deliver(frame.clone(), other, shard_count, &receiver_drops),
                    Delivery::Dropped(DropReason::ConsensusMisroute)
                );
                assert_eq!(receiver_drops.get(frame.variant(), DropReason::ConsensusMisroute), before + 1);
                continue;
            }
        }
        if cfg!(debug_assertions) || shard_count_raw == 1 {
            assert_eq!(receiver_drops.total(), 0, "an accepted frame was counted as dropped");
        }
    }

    let mut drops = vec![sender_drops.snapshot()];
    drops.extend(inbox_drops.iter().map(|drops| drops.snapshot()));
    Outcome { steps, drops }
}

fuzz_target!(|data: &[u8]| {
    let first = run(data);
    let second = run(data);
    assert_eq!(first, second, "routing is not deterministic");
});
