//! The shard pump's routing checks: sending a frame to its shard, and
//! accepting a frame on arrival.
//!
//! Owns the rule that a shard only ever processes frames the router maps to
//! it, and that every frame that goes nowhere is counted. Knows nothing of
//! what a shard does with an accepted frame.

use crate::channel::ShardSender;
use crate::frame::ShardFrame;
use crate::metrics::{DropReason, FrameDrops};
use crate::owner_table::{ShardCount, ShardId};
use crate::router::{RouteError, route};

/// What `deliver` decided for one frame. The accepted frame moves through
/// by value, as it arrived; boxing it would add an allocation per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// This shard owns the frame: process it.
    Accepted(ShardFrame),
    /// Not for this shard, or unroutable; already counted in `FrameDrops`.
    Dropped(DropReason),
}

fn route_error_reason(error: &RouteError) -> DropReason {
    match error {
        RouteError::UnknownShard { .. } => DropReason::UnknownShard,
        RouteError::NamespaceNotPartition { .. } | RouteError::UnexpectedCommand { .. } => DropReason::ForwardFailed,
        RouteError::Broadcast => unreachable!("lifecycle frames are handled before routing"),
    }
}

/// Receiver side: re-route `frame` and accept it only if `this_shard` owns it.
/// A frame that reached the wrong shard is a routing bug: it fails a
/// `debug_assert!` (a failed seed in the simulator) and is counted as
/// `ConsensusMisroute` in release builds.
pub fn deliver(frame: ShardFrame, this_shard: ShardId, shard_count: ShardCount, drops: &FrameDrops) -> Delivery {
    assert!(shard_count.contains(this_shard), "shard {this_shard:?} outside {shard_count:?}");
    let variant = frame.variant();
    let reason = match route(&frame, shard_count) {
        Ok(owner) if owner == this_shard => return Delivery::Accepted(frame),
        Err(RouteError::Broadcast) => return Delivery::Accepted(frame),
        Ok(owner) => {
            debug_assert!(
                false,
                "misroute: {variant:?} frame for shard {owner:?} delivered to shard {this_shard:?}: {frame:?}"
            );
            tracing::error!(?owner, ?this_shard, variant = variant.name(), "frame delivered to the wrong shard");
            DropReason::ConsensusMisroute
        }
        Err(error) => route_error_reason(&error),
    };
    drops.bump(variant, reason);
    Delivery::Dropped(reason)
}

/// Sender side: route `frame` and `try_send` it to its shard's inbox
/// (`inboxes[shard]`). A route error is counted here; an inbox rejection is
/// counted by the inbox.
pub fn dispatch<S: ShardSender>(
    frame: ShardFrame,
    inboxes: &[S],
    shard_count: ShardCount,
    drops: &FrameDrops,
) -> Result<ShardId, DropReason> {
    assert_eq!(inboxes.len(), usize::from(shard_count.get()));
    let variant = frame.variant();
    let shard = match route(&frame, shard_count) {
        Ok(shard) => shard,
        Err(RouteError::Broadcast) => {
            // Lifecycle frames are for every shard; see `broadcast`.
            drops.bump(variant, DropReason::ForwardFailed);
            return Err(DropReason::ForwardFailed);
        }
        Err(error) => {
            let reason = route_error_reason(&error);
            drops.bump(variant, reason);
            return Err(reason);
        }
    };
    inboxes[shard.index()].try_send(frame).map(|()| shard).map_err(|error| error.reason())
}

/// Send a copy of `frame` to every inbox but `skip` (the sender's own shard).
/// Returns how many inboxes rejected it (each counted by its inbox).
pub fn broadcast<S: ShardSender>(frame: &ShardFrame, inboxes: &[S], skip: Option<ShardId>) -> usize {
    let mut rejected = 0;
    for (index, inbox) in inboxes.iter().enumerate() {
        if skip.is_some_and(|s| s.index() == index) {
            continue;
        }
        if inbox.try_send(frame.clone()).is_err() {
            rejected += 1;
        }
    }
    rejected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::LocalInbox;
    use crate::frame::{FrameVariant, Lifecycle};
    use crate::namespace::Namespace;
    use crate::router::route_partition;
    use shoal_vsr::{Command, Header, Operation};
    use std::sync::Arc;

    fn consensus(command: Command, namespace: Namespace) -> ShardFrame {
        let mut header = Header::new(command, 1);
        header.namespace = namespace.raw();
        header.operation = Operation::SendMessages;
        header.set_checksums(&[]);
        ShardFrame::Consensus { peer: 1, header, body: vec![] }
    }

    fn partition_off_shard_zero(shard_count: ShardCount) -> Namespace {
        (0..100)
            .map(|p| Namespace::partition(3, 2, p).unwrap())
            .find(|ns| route_partition(*ns, shard_count) != ShardId(0))
            .unwrap()
    }

    #[test]
    fn owner_accepts_and_lifecycle_is_accepted_everywhere() {
        let shard_count = ShardCount::new(4).unwrap();
        let drops = FrameDrops::new();
        let ns = partition_off_shard_zero(shard_count);
        let owner = route_partition(ns, shard_count);
        let frame = consensus(Command::Prepare, ns);
        assert_eq!(deliver(frame.clone(), owner, shard_count, &drops), Delivery::Accepted(frame));
        for shard in shard_count.shards() {
            let shutdown = ShardFrame::Lifecycle(Lifecycle::Shutdown);
            assert!(matches!(deliver(shutdown, shard, shard_count, &drops), Delivery::Accepted(_)));
        }
        assert_eq!(drops.total(), 0);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "misroute")]
    fn misrouted_frame_fails_the_debug_assertion() {
        let shard_count = ShardCount::new(4).unwrap();
        let ns = partition_off_shard_zero(shard_count);
        let _ = deliver(consensus(Command::Commit, ns), ShardId(0), shard_count, &FrameDrops::new());
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn misrouted_frame_is_counted_in_release() {
        let shard_count = ShardCount::new(4).unwrap();
        let drops = FrameDrops::new();
        let ns = partition_off_shard_zero(shard_count);
        let delivery = deliver(consensus(Command::Commit, ns), ShardId(0), shard_count, &drops);
        assert_eq!(delivery, Delivery::Dropped(DropReason::ConsensusMisroute));
        assert_eq!(drops.get(FrameVariant::Consensus, DropReason::ConsensusMisroute), 1);
    }

    #[test]
    fn reply_to_a_missing_shard_is_counted() {
        let shard_count = ShardCount::new(2).unwrap();
        let drops = FrameDrops::new();
        let header = Header::new(Command::Reply, 1);
        let frame = ShardFrame::ClientReply { connection_id: 1, origin_shard: ShardId(9), header, body: vec![] };
        assert_eq!(deliver(frame, ShardId(1), shard_count, &drops), Delivery::Dropped(DropReason::UnknownShard));
        assert_eq!(drops.get(FrameVariant::ClientReply, DropReason::UnknownShard), 1);
    }

    #[test]
    fn dispatch_reaches_the_owner_inbox_or_counts_the_rejection() {
        let shard_count = ShardCount::new(4).unwrap();
        let drops = Arc::new(FrameDrops::new());
        let inboxes: Vec<LocalInbox> = shard_count.shards().map(|_| LocalInbox::new(1, drops.clone())).collect();
        let ns = partition_off_shard_zero(shard_count);
        let owner = route_partition(ns, shard_count);
        assert_eq!(dispatch(consensus(Command::Prepare, ns), &inboxes, shard_count, &drops), Ok(owner));
        assert_eq!(inboxes[owner.index()].len(), 1);
        // The owner's inbox (capacity 1) is now full.
        assert_eq!(
            dispatch(consensus(Command::PrepareOk, ns), &inboxes, shard_count, &drops),
            Err(DropReason::InboxFull)
        );
        assert_eq!(drops.get(FrameVariant::Consensus, DropReason::InboxFull), 1);
        // Metadata-group control goes to shard 0.
        assert_eq!(
            dispatch(consensus(Command::StartViewChange, Namespace::METADATA), &inboxes, shard_count, &drops),
            Ok(ShardId(0))
        );
        assert_eq!(drops.total(), 1);
    }

    #[test]
    fn broadcast_skips_the_sender_and_counts_rejections() {
        let drops = Arc::new(FrameDrops::new());
        let inboxes: Vec<LocalInbox> = (0..3).map(|_| LocalInbox::new(4, drops.clone())).collect();
        inboxes[2].close();
        let frame = ShardFrame::Lifecycle(Lifecycle::MetadataSnapshot(vec![1, 2]));
        assert_eq!(broadcast(&frame, &inboxes, Some(ShardId(0))), 1);
        assert_eq!(inboxes[0].len(), 0);
        assert_eq!(inboxes[1].try_recv(), Some(frame));
        assert_eq!(drops.get(FrameVariant::Lifecycle, DropReason::Closed), 1);
    }
}
