//! The TCP message bus: how replicas and clients exchange VSR frames.
//!
//! Owns, around the wire format of `shoal_shard::wire` (the handshake
//! `hello` and the pure connection `decoder`, re-exported here), bounded send
//! queues, the dial rule and reconnect backoff, counters, and a small compio
//! layer (`net`) that runs the decoder on real sockets. Knows nothing of VSR
//! state: a verified frame is handed to a callback, which routes it.
//!
//! Invariant: nothing a peer sends can panic the server or grow its memory
//! past one frame per connection (`message_size_max`; a replica's view
//! change frame may take `shoal_vsr::replica::VIEW_FRAME_SIZE_MAX_BYTES`)
//! plus the send queue bounds.

pub mod backoff;
// The hello and decoder are shared with the client library and the fuzz
// targets, so they live in `shoal_shard::wire`; re-exported for the bus.
pub use shoal_shard::wire::{decoder, hello};
pub mod metrics;
pub mod net;
pub mod send_queue;

#[cfg(test)]
mod tests;

pub use backoff::{Backoff, RECONNECT_DELAY_MAX_MS, RECONNECT_DELAY_MIN_MS, accepts_from, replicas_to_dial};
pub use decoder::{CloseReason, ConnectionDecoder, Decoded, DecoderConfig, Expect, Frame, client_may_send};
pub use hello::{BUS_PROTOCOL_VERSION, HELLO_SIZE_BYTES, Hello, Peer};
pub use metrics::{BusMetrics, BusMetricsSnapshot};
pub use send_queue::{OutFrame, Outbox, SEND_QUEUE_BYTES_MAX, SEND_QUEUE_FRAMES_MAX, SendDropped, outbox};
