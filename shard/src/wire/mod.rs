//! The wire format a connection carries, without the sockets: the 64-byte
//! hello and the pure connection decoder (bytes in, verified frames or a typed
//! close reason out).
//!
//! It lives here, not in the runtime's bus, so that the client library and
//! the fuzz targets decode exactly what the server decodes without linking
//! compio or hwloc. Must not touch sockets, threads or clocks.

pub mod decoder;
pub mod hello;

pub use decoder::{CloseReason, ConnectionDecoder, Decoded, DecoderConfig, Expect, Frame, client_may_send};
pub use hello::{BUS_PROTOCOL_VERSION, HELLO_SIZE_BYTES, Hello, HelloError, Peer};
