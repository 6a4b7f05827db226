//! One blocking TCP connection from a client to one replica's client port.
//!
//! It speaks exactly the server's wire format (`shoal_shard::wire`): our
//! hello as `Peer::Client`, the replica's hello, then checksummed frames. The
//! same `ConnectionDecoder` the server runs verifies what comes back, so a
//! replica that is not the one dialed, of another cluster, or that sends a
//! corrupt frame is refused here as it would be there.

use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use shoal_shard::wire::{CloseReason, ConnectionDecoder, Decoded, DecoderConfig, Expect, Hello, Peer};
use shoal_vsr::message::Message;

/// The most bytes one socket read takes.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Frames one `poll` returns at most; the rest stay buffered for the next.
pub const FRAMES_PER_POLL_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("cannot connect to replica {replica} at {address}: {source}; is shoal-server running there?")]
    Connect { replica: u8, address: SocketAddr, source: std::io::Error },
    #[error("connection to replica {replica} failed: {source}; the client reconnects")]
    Io { replica: u8, source: std::io::Error },
    #[error("replica {replica} closed the connection")]
    ClosedByPeer { replica: u8 },
    #[error("replica {replica}'s connection was refused by the decoder ({reason}); check the cluster id and address")]
    Refused { replica: u8, reason: CloseReason },
}

#[derive(Debug)]
pub struct Connection {
    replica: u8,
    stream: TcpStream,
    decoder: ConnectionDecoder,
    read_buffer: Vec<u8>,
}

impl Connection {
    /// Dial `address`, which must be replica `replica`'s client port, and
    /// send our hello. The replica's hello is checked as frames arrive.
    pub fn connect(
        address: SocketAddr,
        replica: u8,
        cluster: u128,
        client: u128,
        message_size_max_bytes: u32,
        timeout: Duration,
    ) -> Result<Connection, ConnectionError> {
        let connect_error = |source| ConnectionError::Connect { replica, address, source };
        let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        stream.set_write_timeout(Some(timeout)).map_err(connect_error)?;
        stream.write_all(&Hello::new(cluster, Peer::Client(client)).encode()).map_err(connect_error)?;
        let decoder = ConnectionDecoder::new(DecoderConfig {
            cluster,
            expect: Expect::Outbound { remote_replica: replica },
            message_size_max_bytes,
        });
        Ok(Connection { replica, stream, decoder, read_buffer: vec![0; READ_CHUNK_BYTES] })
    }

    pub fn replica(&self) -> u8 {
        self.replica
    }

    /// The largest frame the replica accepts, header included, as its
    /// hello said (`None` until the hello is in, or from a replica that
    /// does not say).
    pub fn replica_message_size_max_bytes(&self) -> Option<u32> {
        self.decoder.peer_message_size_max_bytes()
    }

    /// The socket, for waiting on several connections at once.
    pub fn socket(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.stream.as_fd()
    }

    /// Bytes already read but not yet returned as frames: a wait on the
    /// socket alone could sleep while a whole frame sits here.
    pub fn has_buffered_bytes(&self) -> bool {
        self.decoder.buffered_bytes() > 0
    }

    /// Write `message`: its header and its body straight from where they
    /// are (a vectored write), not copied into one frame buffer first.
    pub fn send(&mut self, message: &Message) -> Result<(), ConnectionError> {
        let replica = self.replica;
        let header = message.header.encode();
        write_all_vectored(&mut self.stream, &mut [IoSlice::new(&header), IoSlice::new(&message.body)])
            .map_err(|source| ConnectionError::Io { replica, source })
    }

    /// Wait at most `wait` for bytes, then return every whole frame received
    /// (none when the wait ran out). The replica's hello is consumed here.
    pub fn poll(&mut self, wait: Duration) -> Result<Vec<Message>, ConnectionError> {
        let replica = self.replica;
        let mut messages = self.drain_decoder()?;
        if !messages.is_empty() {
            return Ok(messages);
        }
        // A zero read timeout means "block forever" to the OS: never pass it.
        let wait = wait.max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(wait)).map_err(|source| ConnectionError::Io { replica, source })?;
        let read = match self.stream.read(&mut self.read_buffer) {
            Ok(0) => {
                return match self.decoder.finish() {
                    Some(reason) => Err(ConnectionError::Refused { replica, reason }),
                    None => Err(ConnectionError::ClosedByPeer { replica }),
                };
            }
            Ok(read) => read,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Ok(messages),
            Err(error) if error.kind() == ErrorKind::Interrupted => return Ok(messages),
            Err(source) => return Err(ConnectionError::Io { replica, source }),
        };
        // Taken out for the loop, which feeds the decoder (a borrow of self).
        let buffer = std::mem::take(&mut self.read_buffer);
        let result = self.decode_read(&buffer[..read], &mut messages);
        self.read_buffer = buffer;
        result.map(|()| messages)
    }

    fn decode_read(&mut self, mut bytes: &[u8], messages: &mut Vec<Message>) -> Result<(), ConnectionError> {
        while !bytes.is_empty() {
            let taken = self.decoder.feed(bytes);
            bytes = &bytes[taken..];
            // Pull frames out to make room for the rest of the read; only a
            // frame larger than the bound could stall, and the decoder closes
            // on that before it buffers it.
            let frames = self.drain_decoder()?;
            if taken == 0 && frames.is_empty() {
                unreachable!("the decoder neither took bytes nor produced a frame");
            }
            messages.extend(frames);
        }
        Ok(())
    }

    fn drain_decoder(&mut self) -> Result<Vec<Message>, ConnectionError> {
        let replica = self.replica;
        let mut messages = Vec::new();
        while messages.len() < FRAMES_PER_POLL_MAX {
            match self.decoder.poll() {
                Decoded::NeedMore => break,
                Decoded::Hello(_) => {}
                Decoded::Frame(frame) => {
                    let body = Rc::from(frame.body());
                    messages.push(Message::from_verified_frame(frame.header, body));
                }
                Decoded::Closed(reason) => return Err(ConnectionError::Refused { replica, reason }),
            }
        }
        Ok(messages)
    }
}

/// Write every byte of `parts`, in order, resuming after partial writes.
fn write_all_vectored(writer: &mut impl Write, mut parts: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        match writer.write_vectored(parts) {
            Ok(0) => return Err(std::io::Error::new(ErrorKind::WriteZero, "the socket took no bytes")),
            Ok(written) => IoSlice::advance_slices(&mut parts, written),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `step` bytes per call, across buffer boundaries.
    struct Trickle {
        written: Vec<u8>,
        step: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let taken = bytes.len().min(self.step);
            self.written.extend_from_slice(&bytes[..taken]);
            Ok(taken)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_vectored_write_resumes_after_partial_writes_and_skips_empty_parts() {
        let (header, body) = ([7u8; 5], [9u8; 11]);
        for step in [1, 3, 5, 16] {
            let mut trickle = Trickle { written: Vec::new(), step };
            let mut parts = [IoSlice::new(&[]), IoSlice::new(&header), IoSlice::new(&body), IoSlice::new(&[])];
            write_all_vectored(&mut trickle, &mut parts).unwrap();
            assert_eq!(trickle.written, [&header[..], &body[..]].concat(), "step {step}");
        }
    }

    #[test]
    fn a_writer_that_takes_nothing_is_an_error() {
        let mut stuck = Trickle { written: Vec::new(), step: 0 };
        let error = write_all_vectored(&mut stuck, &mut [IoSlice::new(&[1, 2])]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::WriteZero);
    }
}
