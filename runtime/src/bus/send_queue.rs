//! The per-connection send queue (`Outbox`): bounded in frames and bytes. A
//! slow peer loses frames (counted in `BusMetrics::send_frames_dropped`),
//! never the server's memory; VSR retransmits whatever mattered.
//!
//! Any thread may push (crossfire's `try_send` never blocks); the
//! connection's writer task drains it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossfire::AsyncRx;
use crossfire::MTx;
use crossfire::mpsc::{Array, bounded_blocking_async};

use super::metrics::BusMetrics;

/// One frame's wire bytes, shared: a prepare the primary sends to every
/// backup is encoded once and queued on each backup's connection.
pub type OutFrame = Arc<Vec<u8>>;

/// Frames queued per connection; past it, new frames are dropped.
pub const SEND_QUEUE_FRAMES_MAX: usize = 256;
/// Bytes queued per connection: eight maximal messages.
pub const SEND_QUEUE_BYTES_MAX: usize = 8 * shoal_vsr::header::MESSAGE_SIZE_MAX_BYTES as usize;
const _: () = assert!(SEND_QUEUE_BYTES_MAX >= shoal_vsr::header::MESSAGE_SIZE_MAX_BYTES as usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendDropped {
    #[error("send queue holds {frames_max} frames: the peer reads too slowly, frame dropped")]
    FramesFull { frames_max: usize },
    #[error("send queue would exceed {bytes_max} bytes: the peer reads too slowly, frame dropped")]
    BytesFull { bytes_max: usize },
    #[error("the connection is closed: frame dropped, the peer will reconnect")]
    Closed,
}

/// The sending end of one connection's queue. Cloneable; cheap.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: MTx<Array<OutFrame>>,
    queued_bytes: Arc<AtomicUsize>,
    bytes_max: usize,
    frames_max: usize,
    metrics: Arc<BusMetrics>,
}

/// The draining end, owned by the connection's writer.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: AsyncRx<Array<OutFrame>>,
    queued_bytes: Arc<AtomicUsize>,
}

pub fn outbox(frames_max: usize, bytes_max: usize, metrics: Arc<BusMetrics>) -> (Outbox, OutboxReceiver) {
    assert!(frames_max > 0 && bytes_max > 0);
    let (tx, rx) = bounded_blocking_async(frames_max);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        Outbox { tx, queued_bytes: queued_bytes.clone(), bytes_max, frames_max, metrics },
        OutboxReceiver { rx, queued_bytes },
    )
}

impl Outbox {
    /// Queue `frame` or drop it (counted). Never blocks.
    pub fn send(&self, frame: OutFrame) -> Result<(), SendDropped> {
        let size_bytes = frame.len();
        // Reserve the bytes first, so concurrent senders cannot both pass the check.
        let before = self.queued_bytes.fetch_add(size_bytes, Ordering::AcqRel);
        let result = if before + size_bytes > self.bytes_max {
            Err(SendDropped::BytesFull { bytes_max: self.bytes_max })
        } else {
            self.tx.try_send(frame).map_err(|error| match error {
                crossfire::TrySendError::Full(_) => SendDropped::FramesFull { frames_max: self.frames_max },
                crossfire::TrySendError::Disconnected(_) => SendDropped::Closed,
            })
        };
        if result.is_err() {
            self.queued_bytes.fetch_sub(size_bytes, Ordering::AcqRel);
            BusMetrics::bump(&self.metrics.send_frames_dropped);
        }
        result
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }
}

impl OutboxReceiver {
    /// The next frame to write; `None` once every `Outbox` is dropped.
    pub async fn recv(&self) -> Option<OutFrame> {
        let frame = self.rx.recv().await.ok()?;
        self.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_new_frames() {
        let metrics = Arc::new(BusMetrics::default());
        let (outbox, _receiver) = outbox(2, 10, metrics.clone());
        outbox.send(OutFrame::new(vec![1; 4])).unwrap();
        assert_eq!(outbox.send(OutFrame::new(vec![2; 7])), Err(SendDropped::BytesFull { bytes_max: 10 }));
        outbox.send(OutFrame::new(vec![3; 6])).unwrap();
        assert_eq!(outbox.queued_bytes(), 10);
        assert_eq!(outbox.send(OutFrame::default()), Err(SendDropped::FramesFull { frames_max: 2 }));
        assert_eq!(metrics.snapshot().send_frames_dropped, 2);
        assert_eq!(outbox.queued_bytes(), 10, "a dropped frame releases its reservation");
    }
}
