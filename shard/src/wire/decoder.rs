//! The connection decoder: bytes in, a hello then checksummed frames out, or
//! the one reason the connection must close.
//!
//! Pure and synchronous (no socket, no clock), so the fuzzer and the unit
//! tests drive exactly the code the server runs. Memory is bounded: the
//! decoder takes at most `space_bytes()` more bytes, and a header announcing
//! a frame over `message_size_max_bytes` closes the connection before its
//! body is buffered. Once closed, the decoder stays closed and yields nothing.

use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, Header, HeaderError, MESSAGE_SIZE_MAX_BYTES};
use shoal_vsr::replica::{frame_size_max_bytes, replica_frame_size_max_bytes};

use super::hello::{BUS_PROTOCOL_VERSION, HELLO_SIZE_BYTES, Hello, HelloError, Peer};

/// Why the bus closed a connection. Every variant is counted in
/// `BusMetrics` under `label()`; none of them panics the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    #[error("the peer sent bytes that are not a shoal hello ({0}); check what is connecting to this port")]
    BadHello(HelloError),
    #[error("frame header checksum mismatch: the stream is garbage or corrupt; the peer must reconnect")]
    BadHeaderChecksum,
    #[error("frame header is malformed ({0}); the peer runs a newer or foreign protocol")]
    BadHeader(HeaderError),
    #[error("frame body checksum mismatch: the body is corrupt; the peer must reconnect")]
    BadBodyChecksum,
    #[error(
        "frame of {size_bytes} bytes exceeds message_size_max {max_bytes}: raise limits.message_size_max \
         on every node, or fix the sender"
    )]
    FrameTooLarge { size_bytes: u64, max_bytes: u32 },
    #[error("the peer closed the connection {buffered_bytes} bytes into a frame: it crashed or was cut off")]
    TruncatedAtEof { buffered_bytes: usize },
    #[error("peer belongs to cluster {peer}, this node to {local}: fix the peer's cluster id or its address list")]
    WrongCluster { peer: u128, local: u128 },
    #[error("peer speaks bus protocol version {peer}, this node {local}: upgrade the older side")]
    WrongProtocolVersion { peer: u16, local: u16 },
    #[error("a client sent replica-only command {command:?}: the client is broken or hostile")]
    ClientSentReplicaCommand { command: Command },
    #[error(
        "unexpected peer {peer:?} on this connection: replica i dials only replicas j > i, and a dialed \
         replica must answer as itself; check the replica addresses in the config"
    )]
    UnexpectedPeer { peer: Peer },
    #[error("the peer sent nothing for the idle timeout while a frame or hello was incomplete")]
    IdleTimeout,
    #[error("the listener already holds its connection limit: raise bus.connections_max or find the flood")]
    ListenerFull,
}

/// The counter index of each `CloseReason`, so `BusMetrics` keeps one
/// `AtomicU64` per reason without matching on payloads.
pub const CLOSE_REASON_LABELS: [&str; 12] = [
    "bad_hello",
    "bad_header_checksum",
    "bad_header",
    "bad_body_checksum",
    "frame_too_large",
    "truncated_at_eof",
    "wrong_cluster",
    "wrong_protocol_version",
    "client_sent_replica_command",
    "unexpected_peer",
    "idle_timeout",
    "listener_full",
];

impl CloseReason {
    pub fn index(&self) -> usize {
        match self {
            CloseReason::BadHello(_) => 0,
            CloseReason::BadHeaderChecksum => 1,
            CloseReason::BadHeader(_) => 2,
            CloseReason::BadBodyChecksum => 3,
            CloseReason::FrameTooLarge { .. } => 4,
            CloseReason::TruncatedAtEof { .. } => 5,
            CloseReason::WrongCluster { .. } => 6,
            CloseReason::WrongProtocolVersion { .. } => 7,
            CloseReason::ClientSentReplicaCommand { .. } => 8,
            CloseReason::UnexpectedPeer { .. } => 9,
            CloseReason::IdleTimeout => 10,
            CloseReason::ListenerFull => 11,
        }
    }

    pub fn label(&self) -> &'static str {
        CLOSE_REASON_LABELS[self.index()]
    }
}

/// Who may say hello on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Accepted by a listener. `local_replica`: this node's index, so only
    /// replicas with a lower index are accepted (replica i dials every j > i;
    /// `None` for a client-only listener, which accepts no replica).
    /// `clients`: whether clients may connect here.
    Inbound { local_replica: Option<u8>, clients: bool },
    /// We dialed replica `remote`: its hello must name it.
    Outbound { remote_replica: u8 },
}

impl Expect {
    fn admits(self, peer: Peer) -> bool {
        match (self, peer) {
            (Expect::Inbound { local_replica, .. }, Peer::Replica(index)) => {
                local_replica.is_some_and(|local| index < local)
            }
            (Expect::Inbound { clients, .. }, Peer::Client(_)) => clients,
            (Expect::Outbound { remote_replica }, Peer::Replica(index)) => index == remote_replica,
            (Expect::Outbound { .. }, Peer::Client(_)) => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    pub cluster: u128,
    pub expect: Expect,
    /// The largest frame (header included) accepted, but for a replica's
    /// view change frames (`shoal_vsr::replica::frame_size_max_bytes`); at
    /// most `MESSAGE_SIZE_MAX_BYTES`.
    pub message_size_max_bytes: u32,
}

/// A frame at least this large is read up to its end and no further
/// (`ConnectionDecoder::read_bytes_max`).
pub const FRAME_READ_EXACT_BYTES_MIN: usize = 16 * 1024;

/// A frame whose header and body checksums were verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    /// The whole frame as received: header then body.
    pub bytes: Vec<u8>,
}

impl Frame {
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_SIZE_BYTES..]
    }
}

/// What `ConnectionDecoder::poll` found.
// Frames are the common case; boxing one would add an allocation per frame
// only to shrink the rare variants.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The peer's hello was accepted; frames follow.
    Hello(Peer),
    Frame(Frame),
    /// Feed more bytes.
    NeedMore,
    Closed(CloseReason),
}

/// Commands a client may send. Everything else is consensus traffic or a
/// replica's answer, and a client sending it is refused: a client must never
/// be able to forge a prepare or a view change.
pub fn client_may_send(command: Command) -> bool {
    matches!(command, Command::Request | Command::Read | Command::Ping | Command::Pong)
}

#[derive(Debug)]
enum State {
    AwaitHello,
    Frames { peer: Peer },
    Closed(CloseReason),
}

#[derive(Debug)]
pub struct ConnectionDecoder {
    config: DecoderConfig,
    state: State,
    /// Never longer than `buffer_bytes_max()`.
    buffer: Vec<u8>,
    /// The verified header of the frame being buffered, so it is decoded once.
    pending: Option<Header>,
    /// While the buffer is lent for a read (`lend_buffer`): how many bytes
    /// it held then, and the most the read may append.
    lent: Option<(usize, usize)>,
    /// The largest frame the peer's hello said it accepts (`None`: no
    /// hello yet, or it did not say).
    peer_message_size_max_bytes: Option<u32>,
}

impl ConnectionDecoder {
    pub fn new(config: DecoderConfig) -> ConnectionDecoder {
        assert!(config.message_size_max_bytes as usize >= HEADER_SIZE_BYTES);
        assert!(config.message_size_max_bytes <= MESSAGE_SIZE_MAX_BYTES);
        ConnectionDecoder {
            config,
            state: State::AwaitHello,
            buffer: Vec::new(),
            pending: None,
            lent: None,
            peer_message_size_max_bytes: None,
        }
    }

    /// The largest frame the peer accepts, header included, as its hello
    /// said (`None` before the hello, or from a peer that does not say).
    pub fn peer_message_size_max_bytes(&self) -> Option<u32> {
        self.peer_message_size_max_bytes
    }

    /// The receive buffer bound: one whole frame, the largest unit that must
    /// be held. A replica's view change frames may pass the message size
    /// (`replica_frame_size_max_bytes`), so a replica connection holds
    /// that much once its hello is in; a client's holds `message_size_max`.
    pub fn buffer_bytes_max(&self) -> usize {
        let message_size_max_bytes = self.config.message_size_max_bytes;
        let frame_bytes_max = match self.state {
            State::Frames { peer: Peer::Replica(_) } => replica_frame_size_max_bytes(message_size_max_bytes),
            _ => message_size_max_bytes,
        };
        (frame_bytes_max as usize).max(HELLO_SIZE_BYTES)
    }

    /// The largest frame of `command` this connection takes.
    fn frame_size_max_bytes(&self, peer: Peer, command: Command) -> u32 {
        match peer {
            Peer::Replica(_) => frame_size_max_bytes(command, self.config.message_size_max_bytes),
            Peer::Client(_) => self.config.message_size_max_bytes,
        }
    }

    /// How many more bytes `feed` accepts now; 0 once closed.
    pub fn space_bytes(&self) -> usize {
        match self.state {
            State::Closed(_) => 0,
            _ => self.buffer_bytes_max() - self.buffer.len(),
        }
    }

    pub fn peer(&self) -> Option<Peer> {
        match self.state {
            State::Frames { peer } => Some(peer),
            _ => None,
        }
    }

    pub fn closed(&self) -> Option<CloseReason> {
        match &self.state {
            State::Closed(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Take up to `space_bytes()` of `bytes`; returns how many were taken.
    /// Call `poll` until `NeedMore` before feeding the rest.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        assert!(self.lent.is_none(), "feed while the buffer is lent");
        let taken = bytes.len().min(self.space_bytes());
        self.buffer.extend_from_slice(&bytes[..taken]);
        debug_assert!(self.buffer.len() <= self.buffer_bytes_max());
        taken
    }

    /// How many bytes the next read should ask for, at most `chunk_bytes`
    /// (and `space_bytes()`). While a frame of `FRAME_READ_EXACT_BYTES_MIN`
    /// or more is being buffered, its reads stop at its end: the buffer,
    /// reserved exactly for it, then becomes the frame with no spare
    /// capacity, and the node may keep it as the message's body (reading
    /// the next frame's first bytes with it would save one read per large
    /// frame, and cost a second megabyte of capacity).
    pub fn read_bytes_max(&self, chunk_bytes: usize) -> usize {
        let space_bytes = self.space_bytes().min(chunk_bytes);
        match self.pending {
            Some(header) if header.size as usize >= FRAME_READ_EXACT_BYTES_MIN => {
                space_bytes.min((header.size as usize).saturating_sub(self.buffer.len()))
            }
            _ => space_bytes,
        }
    }

    /// Lend the receive buffer, so a socket read lands in it directly
    /// instead of in a chunk that `feed` then copies. It holds the
    /// `buffered_bytes()` not decoded yet, with room reserved after them
    /// for `read_bytes_max` more (at most `space_bytes()`): the read must
    /// only append, at most that many. Give it back (`return_buffer`)
    /// before the next `poll` or `feed`.
    pub fn lend_buffer(&mut self, read_bytes_max: usize) -> Vec<u8> {
        assert!(self.lent.is_none(), "the buffer is lent once at a time");
        let read_bytes_max = read_bytes_max.min(self.space_bytes());
        // Exactly: doubling a buffer that holds most of a large frame would
        // leave it twice the frame's size.
        self.buffer.reserve_exact(read_bytes_max);
        self.lent = Some((self.buffer.len(), read_bytes_max));
        std::mem::take(&mut self.buffer)
    }

    /// Take back the buffer `lend_buffer` gave out, with what a read
    /// appended to it; returns how many bytes that was.
    pub fn return_buffer(&mut self, buffer: Vec<u8>) -> usize {
        let (held_bytes, read_bytes_max) = self.lent.take().expect("return_buffer after lend_buffer");
        assert!(self.buffer.is_empty(), "nothing was fed while the buffer was lent");
        assert!(
            (held_bytes..=held_bytes + read_bytes_max).contains(&buffer.len()),
            "a read appends at most what was asked: {} bytes held, {read_bytes_max} asked, {} returned",
            held_bytes,
            buffer.len()
        );
        self.buffer = buffer;
        debug_assert!(self.buffer.len() <= self.buffer_bytes_max());
        self.buffer.len() - held_bytes
    }

    /// The peer closed its side: anything buffered is a truncated frame.
    pub fn finish(&mut self) -> Option<CloseReason> {
        if let State::Closed(reason) = &self.state {
            return Some(reason.clone());
        }
        if self.buffer.is_empty() {
            return None;
        }
        Some(self.close(CloseReason::TruncatedAtEof { buffered_bytes: self.buffer.len() }))
    }

    fn close(&mut self, reason: CloseReason) -> CloseReason {
        self.state = State::Closed(reason.clone());
        self.pending = None;
        // Nothing more will be parsed; release the buffer now.
        self.buffer = Vec::new();
        reason
    }

    pub fn poll(&mut self) -> Decoded {
        assert!(self.lent.is_none(), "poll while the buffer is lent");
        match &self.state {
            State::Closed(reason) => Decoded::Closed(reason.clone()),
            State::AwaitHello => self.poll_hello(),
            State::Frames { peer } => self.poll_frame(*peer),
        }
    }

    fn poll_hello(&mut self) -> Decoded {
        let Some(bytes) = self.buffer.get(..HELLO_SIZE_BYTES) else {
            return Decoded::NeedMore;
        };
        let hello = match Hello::decode(bytes.try_into().expect("HELLO_SIZE_BYTES")) {
            Ok(hello) => hello,
            Err(error) => return Decoded::Closed(self.close(CloseReason::BadHello(error))),
        };
        if let Some(reason) = self.refuse_hello(&hello) {
            return Decoded::Closed(self.close(reason));
        }
        self.buffer.drain(..HELLO_SIZE_BYTES);
        self.state = State::Frames { peer: hello.peer };
        self.peer_message_size_max_bytes = (hello.message_size_max_bytes > 0).then_some(hello.message_size_max_bytes);
        Decoded::Hello(hello.peer)
    }

    fn refuse_hello(&self, hello: &Hello) -> Option<CloseReason> {
        if hello.version != BUS_PROTOCOL_VERSION {
            return Some(CloseReason::WrongProtocolVersion { peer: hello.version, local: BUS_PROTOCOL_VERSION });
        }
        if hello.cluster != self.config.cluster {
            return Some(CloseReason::WrongCluster { peer: hello.cluster, local: self.config.cluster });
        }
        if !self.config.expect.admits(hello.peer) {
            return Some(CloseReason::UnexpectedPeer { peer: hello.peer });
        }
        None
    }

    fn poll_frame(&mut self, peer: Peer) -> Decoded {
        let header = match self.pending {
            Some(header) => header,
            None => {
                if self.buffer.len() < HEADER_SIZE_BYTES {
                    return Decoded::NeedMore;
                }
                match self.verify_header(peer) {
                    Ok(header) => {
                        self.pending = Some(header);
                        // Room for the whole frame at once: growing by
                        // doubling would copy a large body several times.
                        let size_bytes = header.size as usize;
                        self.buffer.reserve_exact(size_bytes.saturating_sub(self.buffer.len()));
                        header
                    }
                    Err(reason) => return Decoded::Closed(self.close(reason)),
                }
            }
        };
        let size_bytes = header.size as usize;
        // verify_header bounded size by the buffer bound, so a frame always fits.
        debug_assert!(size_bytes <= self.buffer_bytes_max());
        if self.buffer.len() < size_bytes {
            return Decoded::NeedMore;
        }
        if header.valid_body(&self.buffer[HEADER_SIZE_BYTES..size_bytes]).is_err() {
            return Decoded::Closed(self.close(CloseReason::BadBodyChecksum));
        }
        let rest = self.buffer.split_off(size_bytes);
        let bytes = std::mem::replace(&mut self.buffer, rest);
        self.pending = None;
        Decoded::Frame(Frame { header, bytes })
    }

    fn verify_header(&self, peer: Peer) -> Result<Header, CloseReason> {
        let header = Header::decode(&self.buffer).map_err(|error| match error {
            HeaderError::BadChecksum => CloseReason::BadHeaderChecksum,
            HeaderError::WrongSize { size_bytes } if size_bytes > MESSAGE_SIZE_MAX_BYTES => {
                CloseReason::FrameTooLarge {
                    size_bytes: u64::from(size_bytes),
                    max_bytes: self.config.message_size_max_bytes,
                }
            }
            other => CloseReason::BadHeader(other),
        })?;
        let frame_size_max_bytes = self.frame_size_max_bytes(peer, header.command);
        if header.size > frame_size_max_bytes {
            return Err(CloseReason::FrameTooLarge {
                size_bytes: u64::from(header.size),
                max_bytes: frame_size_max_bytes,
            });
        }
        if header.cluster != self.config.cluster {
            return Err(CloseReason::WrongCluster { peer: header.cluster, local: self.config.cluster });
        }
        if matches!(peer, Peer::Client(_)) && !client_may_send(header.command) {
            return Err(CloseReason::ClientSentReplicaCommand { command: header.command });
        }
        Ok(header)
    }

    /// Feed all of `bytes`, polling as needed; frames and the hello go to
    /// `out`. Returns the close reason if the connection must close. For
    /// tests, the fuzzer and the socket loop alike.
    pub fn decode_all(&mut self, mut bytes: &[u8], out: &mut Vec<Decoded>) -> Result<(), CloseReason> {
        loop {
            match self.poll() {
                Decoded::NeedMore => {
                    if bytes.is_empty() {
                        return Ok(());
                    }
                    let taken = self.feed(bytes);
                    debug_assert!(taken > 0, "NeedMore with a full buffer");
                    bytes = &bytes[taken..];
                }
                Decoded::Closed(reason) => return Err(reason),
                decoded => out.push(decoded),
            }
        }
    }
}
