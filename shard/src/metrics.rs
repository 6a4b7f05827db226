//! `frame_drops_total{variant, reason}`: every frame a shard failed to deliver.
//!
//! Owns the drop counters. A fixed array of atomics indexed by
//! (variant, reason), so any shard can bump without a lock and a snapshot is
//! deterministic. The `shard_id` label is attached by whoever registers one
//! `FrameDrops` per shard; this module knows nothing of exporters.
//!
//! Invariant (checked by the simulator): every frame a router sent towards a
//! shard is either delivered to the owning shard or counted here.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::frame::FrameVariant;

/// Why a frame was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The target shard's inbox was full (`try_send` rejected it).
    InboxFull,
    /// The receiving shard runs no group for the frame's namespace.
    NamespaceMiss,
    /// A client forward or reply could not be sent on.
    ForwardFailed,
    /// The frame reached a shard the router does not map it to.
    ConsensusMisroute,
    /// The frame names a shard this process does not have.
    UnknownShard,
    /// The frame is for a replica no shard holds a connection to.
    UnknownReplica,
    /// The target shard's inbox is closed (shutting down).
    Closed,
    /// A fault injector dropped it on delivery (simulation only).
    Injected,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::InboxFull,
        DropReason::NamespaceMiss,
        DropReason::ForwardFailed,
        DropReason::ConsensusMisroute,
        DropReason::UnknownShard,
        DropReason::UnknownReplica,
        DropReason::Closed,
        DropReason::Injected,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            DropReason::InboxFull => "inbox_full",
            DropReason::NamespaceMiss => "namespace_miss",
            DropReason::ForwardFailed => "forward_failed",
            DropReason::ConsensusMisroute => "consensus_misroute",
            DropReason::UnknownShard => "unknown_shard",
            DropReason::UnknownReplica => "unknown_replica",
            DropReason::Closed => "closed",
            DropReason::Injected => "injected",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The counters of one shard.
#[derive(Debug, Default)]
pub struct FrameDrops {
    counters: [[AtomicU64; DropReason::COUNT]; FrameVariant::COUNT],
}

impl FrameDrops {
    pub fn new() -> FrameDrops {
        FrameDrops::default()
    }

    pub fn bump(&self, variant: FrameVariant, reason: DropReason) {
        tracing::debug!(variant = variant.name(), reason = reason.name(), "frame dropped");
        // Relaxed: a counter orders nothing else.
        self.counters[variant.index()][reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, variant: FrameVariant, reason: DropReason) -> u64 {
        self.counters[variant.index()][reason.index()].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.counters.iter().flatten().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Every (variant, reason) pair with its count, in a fixed order (zero
    /// counts included), so two runs of one seed compare equal.
    pub fn snapshot(&self) -> Vec<((FrameVariant, DropReason), u64)> {
        let mut out = Vec::with_capacity(FrameVariant::COUNT * DropReason::COUNT);
        for variant in FrameVariant::ALL {
            for reason in DropReason::ALL {
                out.push(((variant, reason), self.get(variant, reason)));
            }
        }
        debug_assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bump_counts_only_its_own_label_pair() {
        let drops = FrameDrops::new();
        drops.bump(FrameVariant::Consensus, DropReason::InboxFull);
        drops.bump(FrameVariant::Consensus, DropReason::InboxFull);
        drops.bump(FrameVariant::ClientReply, DropReason::Closed);
        assert_eq!(drops.get(FrameVariant::Consensus, DropReason::InboxFull), 2);
        assert_eq!(drops.get(FrameVariant::ClientReply, DropReason::Closed), 1);
        assert_eq!(drops.get(FrameVariant::Consensus, DropReason::Closed), 0);
        assert_eq!(drops.total(), 3);
    }

    #[test]
    fn snapshot_is_sorted_complete_and_stable() {
        let drops = FrameDrops::new();
        drops.bump(FrameVariant::Lifecycle, DropReason::UnknownReplica);
        let snapshot = drops.snapshot();
        assert_eq!(snapshot.len(), FrameVariant::COUNT * DropReason::COUNT);
        assert!(snapshot.windows(2).all(|w| w[0].0 < w[1].0));
        let nonzero: Vec<_> = snapshot.iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(nonzero, vec![&((FrameVariant::Lifecycle, DropReason::UnknownReplica), 1)]);
        assert_eq!(snapshot, drops.snapshot());
    }

    #[test]
    fn reason_names_are_distinct() {
        let names: std::collections::BTreeSet<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
