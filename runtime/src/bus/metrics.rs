//! Bus counters: atomics any shard bumps and a metrics endpoint reads.

use std::sync::atomic::{AtomicU64, Ordering};

use super::decoder::{CLOSE_REASON_LABELS, CloseReason};

const CLOSE_REASONS_COUNT: usize = CLOSE_REASON_LABELS.len();

#[derive(Debug, Default)]
pub struct BusMetrics {
    pub connections_accepted: AtomicU64,
    pub connections_dialed: AtomicU64,
    pub handshakes_completed: AtomicU64,
    pub frames_received: AtomicU64,
    pub frames_sent: AtomicU64,
    /// Frames refused by a full send queue: the peer reads too slowly, and
    /// VSR retransmits what matters.
    pub send_frames_dropped: AtomicU64,
    /// Owner-table conflicts: a connection to a replica whose slot another
    /// shard holds and which could not be taken over.
    pub owner_conflicts: AtomicU64,
    /// Accepted connections closed because the inbox of the shard they
    /// belong to was full of connections waiting to be taken.
    pub handoffs_dropped: AtomicU64,
    closed: [AtomicU64; CLOSE_REASONS_COUNT],
}

/// A point-in-time copy of `BusMetrics`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BusMetricsSnapshot {
    pub connections_accepted: u64,
    pub connections_dialed: u64,
    pub handshakes_completed: u64,
    pub frames_received: u64,
    pub frames_sent: u64,
    pub send_frames_dropped: u64,
    pub owner_conflicts: u64,
    pub handoffs_dropped: u64,
    /// `(CloseReason::label(), count)` for every reason, in label order.
    pub closed: Vec<(&'static str, u64)>,
}

impl BusMetricsSnapshot {
    pub fn closed_by(&self, label: &str) -> u64 {
        self.closed.iter().find(|(name, _)| *name == label).map_or(0, |(_, count)| *count)
    }

    pub fn closed_total(&self) -> u64 {
        self.closed.iter().map(|(_, count)| count).sum()
    }
}

impl BusMetrics {
    pub fn record_close(&self, reason: &CloseReason) {
        self.closed[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> BusMetricsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        BusMetricsSnapshot {
            connections_accepted: load(&self.connections_accepted),
            connections_dialed: load(&self.connections_dialed),
            handshakes_completed: load(&self.handshakes_completed),
            frames_received: load(&self.frames_received),
            frames_sent: load(&self.frames_sent),
            send_frames_dropped: load(&self.send_frames_dropped),
            owner_conflicts: load(&self.owner_conflicts),
            handoffs_dropped: load(&self.handoffs_dropped),
            closed: CLOSE_REASON_LABELS.iter().zip(&self.closed).map(|(label, count)| (*label, load(count))).collect(),
        }
    }
}
