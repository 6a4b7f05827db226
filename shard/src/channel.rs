//! Shard inboxes: the bounded channel each shard's pump reads from.
//!
//! Owns the `ShardSender` contract and `LocalInbox`, the deterministic
//! in-process inbox the simulator uses (the real one, crossfire `MTx` /
//! `AsyncRx`, lives in the runtime crate). Knows nothing of routing.
//!
//! Contract: `try_send` never blocks. A full or closed inbox rejects the frame,
//! hands it back, and bumps `frame_drops_total{variant, reason}` itself, so a
//! caller cannot forget to count a drop.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use crate::frame::ShardFrame;
use crate::metrics::{DropReason, FrameDrops};

/// The most frames one shard inbox holds. A shard that falls this far behind
/// sheds load (VSR retransmits) instead of growing without bound.
pub const SHARD_INBOX_CAPACITY_MAX: usize = 4096;
/// Frames waiting in one shard's inbox for its node (read on a connection
/// of any shard, for a group of this one); past it, new frames are dropped
/// (counted) and VSR or the client retransmits. The server's crossfire
/// inbox and the simulator's `LocalInbox` both hold this many.
pub const INBOUND_FRAMES_MAX: usize = 4096;
/// Frames other shards hand one shard to write to the connections it
/// holds; past it they are dropped (counted), like a full socket send queue.
pub const OUTBOUND_FRAMES_MAX: usize = 4096;
const _: () = assert!(INBOUND_FRAMES_MAX <= SHARD_INBOX_CAPACITY_MAX);
const _: () = assert!(OUTBOUND_FRAMES_MAX <= SHARD_INBOX_CAPACITY_MAX);

/// Why `try_send` rejected a frame; the frame comes back to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError {
    #[error("shard inbox is full; the frame was dropped and counted (the shard is slow or wedged)")]
    Full(ShardFrame),
    #[error("shard inbox is closed; the shard is shutting down")]
    Closed(ShardFrame),
}

impl TrySendError {
    pub fn into_frame(self) -> ShardFrame {
        match self {
            TrySendError::Full(frame) | TrySendError::Closed(frame) => frame,
        }
    }

    pub fn reason(&self) -> DropReason {
        match self {
            TrySendError::Full(_) => DropReason::InboxFull,
            TrySendError::Closed(_) => DropReason::Closed,
        }
    }
}

/// The sending side of a shard inbox.
///
/// The rejected frame comes back by value (it is as large as the frame that
/// went in); boxing it would allocate on the hot path for nothing.
#[allow(clippy::result_large_err)]
pub trait ShardSender {
    /// Enqueue `frame` or reject it at once; never blocks. Implementations
    /// bump `FrameDrops` for every rejection.
    fn try_send(&self, frame: ShardFrame) -> Result<(), TrySendError>;
}

#[allow(clippy::result_large_err)]
impl<T: ShardSender + ?Sized> ShardSender for Rc<T> {
    fn try_send(&self, frame: ShardFrame) -> Result<(), TrySendError> {
        (**self).try_send(frame)
    }
}

#[allow(clippy::result_large_err)]
impl<T: ShardSender + ?Sized> ShardSender for &T {
    fn try_send(&self, frame: ShardFrame) -> Result<(), TrySendError> {
        (**self).try_send(frame)
    }
}

/// A single-threaded bounded FIFO inbox. Share it with `Rc` between the
/// senders and the pump that drains it. The simulator can force it full
/// (`set_full`) to inject `try_send` rejections.
#[derive(Debug)]
pub struct LocalInbox {
    queue: RefCell<VecDeque<ShardFrame>>,
    capacity: usize,
    forced_full: Cell<bool>,
    closed: Cell<bool>,
    drops: Arc<FrameDrops>,
}

impl LocalInbox {
    pub fn new(capacity: usize, drops: Arc<FrameDrops>) -> LocalInbox {
        assert!(capacity > 0 && capacity <= SHARD_INBOX_CAPACITY_MAX, "inbox capacity {capacity}");
        LocalInbox {
            queue: RefCell::new(VecDeque::with_capacity(capacity)),
            capacity,
            forced_full: Cell::new(false),
            closed: Cell::new(false),
            drops,
        }
    }

    pub fn try_recv(&self) -> Option<ShardFrame> {
        self.queue.borrow_mut().pop_front()
    }

    pub fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Reject every send as `Full` while `full` is set (fault injection).
    pub fn set_full(&self, full: bool) {
        self.forced_full.set(full);
    }

    /// Reject every later send as `Closed`; frames already queued stay readable.
    pub fn close(&self) {
        self.closed.set(true);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    pub fn drops(&self) -> &FrameDrops {
        &self.drops
    }
}

#[allow(clippy::result_large_err)]
impl ShardSender for LocalInbox {
    fn try_send(&self, frame: ShardFrame) -> Result<(), TrySendError> {
        let error = if self.closed.get() {
            TrySendError::Closed(frame)
        } else if self.forced_full.get() || self.len() >= self.capacity {
            TrySendError::Full(frame)
        } else {
            self.queue.borrow_mut().push_back(frame);
            debug_assert!(self.len() <= self.capacity);
            return Ok(());
        };
        let variant = match &error {
            TrySendError::Full(frame) | TrySendError::Closed(frame) => frame.variant(),
        };
        self.drops.bump(variant, error.reason());
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameVariant, Lifecycle};

    fn frame(n: u8) -> ShardFrame {
        ShardFrame::Lifecycle(Lifecycle::MetadataSnapshot(vec![n]))
    }

    #[test]
    fn fifo_up_to_capacity_then_full_is_counted() {
        let drops = Arc::new(FrameDrops::new());
        let inbox = LocalInbox::new(2, drops.clone());
        inbox.try_send(frame(1)).unwrap();
        inbox.try_send(frame(2)).unwrap();
        assert_eq!(inbox.try_send(frame(3)), Err(TrySendError::Full(frame(3))));
        assert_eq!(drops.get(FrameVariant::Lifecycle, DropReason::InboxFull), 1);
        assert_eq!(inbox.try_recv(), Some(frame(1)));
        inbox.try_send(frame(4)).unwrap();
        assert_eq!(inbox.try_recv(), Some(frame(2)));
        assert_eq!(inbox.try_recv(), Some(frame(4)));
        assert_eq!(inbox.try_recv(), None);
    }

    #[test]
    fn closed_and_forced_full_reject_with_their_own_reason() {
        let drops = Arc::new(FrameDrops::new());
        let inbox = Rc::new(LocalInbox::new(8, drops.clone()));
        inbox.set_full(true);
        assert!(matches!(inbox.try_send(frame(1)), Err(TrySendError::Full(_))));
        inbox.set_full(false);
        inbox.try_send(frame(2)).unwrap();
        inbox.close();
        let error = inbox.try_send(frame(3)).unwrap_err();
        assert_eq!(error.reason(), DropReason::Closed);
        assert_eq!(error.into_frame(), frame(3));
        assert_eq!(drops.get(FrameVariant::Lifecycle, DropReason::InboxFull), 1);
        assert_eq!(drops.get(FrameVariant::Lifecycle, DropReason::Closed), 1);
        // Already-queued frames survive the close.
        assert_eq!(inbox.try_recv(), Some(frame(2)));
    }

    #[test]
    #[should_panic(expected = "inbox capacity")]
    fn capacity_above_the_bound_is_refused() {
        let _ = LocalInbox::new(SHARD_INBOX_CAPACITY_MAX + 1, Arc::new(FrameDrops::new()));
    }
}
