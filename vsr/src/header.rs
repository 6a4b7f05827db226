//! The 256-byte message header and its codec.
//!
//! Every message on the wire and every prepare in the journal starts with one
//! `Header`. Three 128-bit checksums (xxh3-128) protect it: `checksum` covers
//! the header bytes after itself, `checksum_body` covers the body, and `parent`
//! is the `checksum` of the previous prepare, so the prepares of a group form a
//! hash chain and a replica can tell a gap from a fork.
//!
//! The layout is fixed and little-endian; `decode` never trusts its input: a
//! short buffer, a size out of range, a checksum mismatch or an unknown command
//! or operation each give their own `HeaderError`, never a panic.

use xxhash_rust::xxh3::xxh3_128;

pub const HEADER_SIZE_BYTES: usize = 256;
/// The largest message, header included. Bounds every buffer the network or
/// the journal allocates from a header's `size` field.
pub const MESSAGE_SIZE_MAX_BYTES: u32 = 1024 * 1024;
/// The wire and disk format version; bumped on any layout change.
pub const HEADER_VERSION: u8 = 1;

/// Checksum used for header, body and hash chain.
pub fn checksum(bytes: &[u8]) -> u128 {
    xxh3_128(bytes)
}

/// The `checksum_body` of an empty body.
pub fn checksum_empty() -> u128 {
    checksum(&[])
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $value:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[repr(u8)]
        pub enum $name { $($variant = $value,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn from_u8(value: u8) -> Option<$name> {
                match value {
                    $($value => Some($name::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

wire_enum! {
    /// What a message is, at the VSR level.
    Command {
        Ping = 1,
        Pong = 2,
        Request = 3,
        Prepare = 4,
        PrepareOk = 5,
        Reply = 6,
        Commit = 7,
        StartViewChange = 8,
        DoViewChange = 9,
        StartView = 10,
        RequestStartView = 11,
        RequestHeaders = 12,
        Headers = 13,
        RequestPrepare = 14,
        Eviction = 15,
        RequestCheckpoint = 16,
        Checkpoint = 17,
        // Committed state-machine data a replica lacks after a state
        // transfer (a partition's message bytes), served by the driver.
        RequestStateData = 18,
        StateData = 19,
        // A peer's answer to a rejoining replica's probe: its view, and the
        // probe's nonce echoed in `context` (VR Revisited's recovery response).
        RejoinView = 20,
        // A client's read of committed partition messages by offset, and its
        // answer: served by any replica from its partition log, outside
        // consensus (`shoal_shard::read` owns the bodies).
        Read = 21,
        ReadReply = 22,
        // A replica's typed refusal of a client frame it will not serve: the
        // group does not exist here, or its request queue is full (reason
        // in `context`, the refused request number in `request`).
        Refused = 23,
    }
}

wire_enum! {
    /// What a request or prepare asks the state machine to do. Values below
    /// `Operation::FIRST_USER` are VSR-reserved.
    Operation {
        Reserved = 0,
        Root = 1,
        Register = 2,
        Noop = 3,
        // Several clients' requests in one prepare (`crate::packed`): the
        // body says whose; the header's client, request and context are 0.
        Packed = 4,
        CreateStream = 16,
        DeleteStream = 17,
        CreateTopic = 18,
        DeleteTopic = 19,
        // A read of the committed catalogue through the metadata log: does
        // a partition exist? (A client's proof before it reports one missing.)
        LookupPartition = 20,
        SendMessages = 32,
        PollMessages = 33,
    }
}

impl Operation {
    pub const FIRST_USER: u8 = 16;

    /// VSR-reserved operations belong to the protocol, not to a state machine.
    pub fn is_reserved(self) -> bool {
        (self as u8) < Self::FIRST_USER
    }
}

impl Command {
    /// Commands that carry consensus control rather than a client's data.
    pub fn is_consensus_control(self) -> bool {
        !matches!(self, Command::Request | Command::Reply | Command::Read | Command::ReadReply | Command::Refused)
    }
}

/// Why a replica refused a client's frame (`Command::Refused`): the code
/// travels in the header's `context`, the refused request number in
/// `request`. A refusal promises nothing and is never cached in a session:
/// the same request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This replica runs no group for the namespace (no such partition, or
    /// not opened here yet).
    PartitionMissing,
    /// The primary's request queue is full (`REQUEST_QUEUE_MAX`): back off
    /// and send the same request again.
    Busy,
}

impl Refusal {
    pub fn code(self) -> u64 {
        match self {
            Refusal::PartitionMissing => 1,
            Refusal::Busy => 2,
        }
    }

    pub fn from_code(code: u64) -> Option<Refusal> {
        match code {
            1 => Some(Refusal::PartitionMissing),
            2 => Some(Refusal::Busy),
            _ => None,
        }
    }

    /// The refusal of `request` (a client's `Request` header) by `replica`
    /// in `view`, checksummed.
    pub fn header(self, request: &Header, replica: u8, view: u64) -> Header {
        let mut header = Header::new(Command::Refused, request.cluster);
        header.namespace = request.namespace;
        header.client = request.client;
        header.request = request.request;
        header.operation = request.operation;
        header.replica = replica;
        header.view = view;
        header.context = self.code();
        header.set_checksums(&[]);
        header
    }
}

/// Why a header could not be decoded. Each variant names what the receiver
/// should do: drop the message and count the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header is short: {size_bytes} of 256 bytes; the sender or disk sector is truncated, drop it")]
    Short { size_bytes: usize },
    #[error("header size field {size_bytes} is outside 256..={MESSAGE_SIZE_MAX_BYTES}; drop the message")]
    WrongSize { size_bytes: u32 },
    #[error("header checksum mismatch: the header is corrupt, drop it (or repair the slot)")]
    BadChecksum,
    #[error("body checksum mismatch: the body is corrupt, drop it (or repair the slot)")]
    BadBodyChecksum,
    #[error("body is {actual_bytes} bytes but the header says {expected_bytes}; drop it")]
    BodySizeMismatch { expected_bytes: usize, actual_bytes: usize },
    #[error("unknown command {value}: a newer or foreign peer sent it; drop it")]
    UnknownCommand { value: u8 },
    #[error("unknown operation {value}: a newer or foreign peer sent it; drop it")]
    UnknownOperation { value: u8 },
    #[error("header version {value} is not {HEADER_VERSION}: upgrade the peer or the disk format")]
    UnknownVersion { value: u8 },
}

/// The 256-byte header. `repr(C)` with explicit padding so that the in-memory
/// layout equals the wire layout on little-endian machines; the codec still
/// writes field by field so that no `unsafe` is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Header {
    /// Checksum of header bytes 16..256.
    pub checksum: u128,
    /// Checksum of the body that follows the header.
    pub checksum_body: u128,
    /// `checksum` of the previous prepare in this group (hash chain).
    pub parent: u128,
    /// Client id (0 for replica-originated messages).
    pub client: u128,
    /// Cluster id: a message from another cluster is dropped.
    pub cluster: u128,
    /// VSR group: `METADATA` or a partition namespace.
    pub namespace: u64,
    pub view: u64,
    pub op: u64,
    pub commit: u64,
    /// Primary-assigned time of a prepare (virtual ns in the simulator).
    pub timestamp: u64,
    /// Client request number (session-scoped).
    pub request: u64,
    /// Command-specific: `log_view` in a do_view_change, the checksum context
    /// of a reply, the op range count of request_headers, …
    pub context: u64,
    /// Total message size: header plus body.
    pub size: u32,
    pub replica: u8,
    pub command: Command,
    pub operation: Operation,
    pub version: u8,
    pub reserved: [u8; 112],
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_SIZE_BYTES);

// Byte offsets of every field; `encode` and `decode` share them.
const OFFSET_CHECKSUM: usize = 0;
const OFFSET_CHECKSUM_BODY: usize = 16;
const OFFSET_PARENT: usize = 32;
const OFFSET_CLIENT: usize = 48;
const OFFSET_CLUSTER: usize = 64;
const OFFSET_NAMESPACE: usize = 80;
const OFFSET_VIEW: usize = 88;
const OFFSET_OP: usize = 96;
const OFFSET_COMMIT: usize = 104;
const OFFSET_TIMESTAMP: usize = 112;
const OFFSET_REQUEST: usize = 120;
const OFFSET_CONTEXT: usize = 128;
const OFFSET_SIZE: usize = 136;
const OFFSET_REPLICA: usize = 140;
const OFFSET_COMMAND: usize = 141;
const OFFSET_OPERATION: usize = 142;
const OFFSET_VERSION: usize = 143;
const OFFSET_RESERVED: usize = 144;

/// What a do_view_change says about the prepares its sender never
/// acknowledged (nacks), kept in the header's `reserved` bytes (zero in
/// every other command). A do_view_change without them (the flag byte
/// zero) nacks nothing: the safe reading of a sender that stated nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoViewChangeNacks {
    /// The sender may have acknowledged prepares at or below this op that
    /// it no longer holds (its disk was wiped and it rejoined, or its
    /// journal was faulty): it nacks nothing there.
    pub floor: u64,
    /// Bit `i`: the sender holds the body of the `i`-th header of its
    /// do_view_change body (newest first).
    pub present: u64,
}

/// Headers a do_view_change's `present` bits can describe.
pub const DO_VIEW_CHANGE_PRESENT_BITS: usize = u64::BITS as usize;
const RESERVED_NACKS_FLAG: usize = 0;
const RESERVED_NACKS_FLOOR: usize = 8;
const RESERVED_NACKS_PRESENT: usize = 16;
const NACKS_STATED: u8 = 1;

impl Header {
    /// Record a do_view_change's nacks; call before `set_checksums`.
    pub fn set_do_view_change_nacks(&mut self, nacks: DoViewChangeNacks) {
        assert_eq!(self.command, Command::DoViewChange, "only a do_view_change carries nacks");
        self.reserved[RESERVED_NACKS_FLAG] = NACKS_STATED;
        self.reserved[RESERVED_NACKS_FLOOR..RESERVED_NACKS_FLOOR + 8].copy_from_slice(&nacks.floor.to_le_bytes());
        self.reserved[RESERVED_NACKS_PRESENT..RESERVED_NACKS_PRESENT + 8].copy_from_slice(&nacks.present.to_le_bytes());
    }

    /// A do_view_change's nacks, `None` when it states none (then it nacks nothing).
    pub fn do_view_change_nacks(&self) -> Option<DoViewChangeNacks> {
        if self.command != Command::DoViewChange || self.reserved[RESERVED_NACKS_FLAG] != NACKS_STATED {
            return None;
        }
        let word = |offset: usize| u64::from_le_bytes(self.reserved[offset..offset + 8].try_into().unwrap());
        Some(DoViewChangeNacks { floor: word(RESERVED_NACKS_FLOOR), present: word(RESERVED_NACKS_PRESENT) })
    }
}

impl Header {
    /// A header with every field zero but `command`, `size` and `version`.
    /// Call `set_checksums` once the fields and body are final.
    pub fn new(command: Command, cluster: u128) -> Header {
        Header {
            checksum: 0,
            checksum_body: checksum_empty(),
            parent: 0,
            client: 0,
            cluster,
            namespace: 0,
            view: 0,
            op: 0,
            commit: 0,
            timestamp: 0,
            request: 0,
            context: 0,
            size: HEADER_SIZE_BYTES as u32,
            replica: 0,
            command,
            operation: Operation::Reserved,
            version: HEADER_VERSION,
            reserved: [0; 112],
        }
    }

    pub fn body_size_bytes(&self) -> usize {
        debug_assert!(self.size as usize >= HEADER_SIZE_BYTES);
        self.size as usize - HEADER_SIZE_BYTES
    }

    /// Set `size` and `checksum_body` from `body`, then `checksum`.
    pub fn set_checksums(&mut self, body: &[u8]) {
        self.set_checksums_known_body(body.len(), checksum(body));
    }

    /// Seal the header over a body of `body_size_bytes` whose checksum is
    /// already known: the same bytes arrived verified under it, so hashing
    /// them again (up to a MiB) would only repeat that work.
    pub fn set_checksums_known_body(&mut self, body_size_bytes: usize, checksum_body: u128) {
        assert!(body_size_bytes + HEADER_SIZE_BYTES <= MESSAGE_SIZE_MAX_BYTES as usize);
        self.size = (HEADER_SIZE_BYTES + body_size_bytes) as u32;
        self.checksum_body = checksum_body;
        self.checksum = self.calculate_checksum();
        debug_assert!(self.valid_checksum());
    }

    pub fn calculate_checksum(&self) -> u128 {
        let bytes = self.encode();
        checksum(&bytes[OFFSET_CHECKSUM_BODY..])
    }

    pub fn valid_checksum(&self) -> bool {
        self.checksum == self.calculate_checksum()
    }

    pub fn valid_body(&self, body: &[u8]) -> Result<(), HeaderError> {
        if body.len() != self.body_size_bytes() {
            return Err(HeaderError::BodySizeMismatch {
                expected_bytes: self.body_size_bytes(),
                actual_bytes: body.len(),
            });
        }
        if checksum(body) != self.checksum_body {
            return Err(HeaderError::BadBodyChecksum);
        }
        Ok(())
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE_BYTES] {
        let mut out = [0u8; HEADER_SIZE_BYTES];
        put(&mut out, OFFSET_CHECKSUM, &self.checksum.to_le_bytes());
        put(&mut out, OFFSET_CHECKSUM_BODY, &self.checksum_body.to_le_bytes());
        put(&mut out, OFFSET_PARENT, &self.parent.to_le_bytes());
        put(&mut out, OFFSET_CLIENT, &self.client.to_le_bytes());
        put(&mut out, OFFSET_CLUSTER, &self.cluster.to_le_bytes());
        put(&mut out, OFFSET_NAMESPACE, &self.namespace.to_le_bytes());
        put(&mut out, OFFSET_VIEW, &self.view.to_le_bytes());
        put(&mut out, OFFSET_OP, &self.op.to_le_bytes());
        put(&mut out, OFFSET_COMMIT, &self.commit.to_le_bytes());
        put(&mut out, OFFSET_TIMESTAMP, &self.timestamp.to_le_bytes());
        put(&mut out, OFFSET_REQUEST, &self.request.to_le_bytes());
        put(&mut out, OFFSET_CONTEXT, &self.context.to_le_bytes());
        put(&mut out, OFFSET_SIZE, &self.size.to_le_bytes());
        out[OFFSET_REPLICA] = self.replica;
        out[OFFSET_COMMAND] = self.command as u8;
        out[OFFSET_OPERATION] = self.operation as u8;
        out[OFFSET_VERSION] = self.version;
        put(&mut out, OFFSET_RESERVED, &self.reserved);
        out
    }

    /// Decode and verify a header from the first 256 bytes of `bytes`.
    /// The body (if any) is checked separately with `valid_body`.
    pub fn decode(bytes: &[u8]) -> Result<Header, HeaderError> {
        let Some(bytes) = bytes.get(..HEADER_SIZE_BYTES) else {
            return Err(HeaderError::Short { size_bytes: bytes.len() });
        };
        let checksum_stored = u128_at(bytes, OFFSET_CHECKSUM);
        if checksum(&bytes[OFFSET_CHECKSUM_BODY..]) != checksum_stored {
            return Err(HeaderError::BadChecksum);
        }
        let size = u32::from_le_bytes(bytes[OFFSET_SIZE..OFFSET_SIZE + 4].try_into().unwrap());
        if (size as usize) < HEADER_SIZE_BYTES || size > MESSAGE_SIZE_MAX_BYTES {
            return Err(HeaderError::WrongSize { size_bytes: size });
        }
        let version = bytes[OFFSET_VERSION];
        if version != HEADER_VERSION {
            return Err(HeaderError::UnknownVersion { value: version });
        }
        let command = Command::from_u8(bytes[OFFSET_COMMAND])
            .ok_or(HeaderError::UnknownCommand { value: bytes[OFFSET_COMMAND] })?;
        let operation = Operation::from_u8(bytes[OFFSET_OPERATION])
            .ok_or(HeaderError::UnknownOperation { value: bytes[OFFSET_OPERATION] })?;
        let header = Header {
            checksum: checksum_stored,
            checksum_body: u128_at(bytes, OFFSET_CHECKSUM_BODY),
            parent: u128_at(bytes, OFFSET_PARENT),
            client: u128_at(bytes, OFFSET_CLIENT),
            cluster: u128_at(bytes, OFFSET_CLUSTER),
            namespace: u64_at(bytes, OFFSET_NAMESPACE),
            view: u64_at(bytes, OFFSET_VIEW),
            op: u64_at(bytes, OFFSET_OP),
            commit: u64_at(bytes, OFFSET_COMMIT),
            timestamp: u64_at(bytes, OFFSET_TIMESTAMP),
            request: u64_at(bytes, OFFSET_REQUEST),
            context: u64_at(bytes, OFFSET_CONTEXT),
            size,
            replica: bytes[OFFSET_REPLICA],
            command,
            operation,
            version,
            reserved: bytes[OFFSET_RESERVED..].try_into().unwrap(),
        };
        debug_assert_eq!(header.encode().as_slice(), bytes);
        Ok(header)
    }

    /// Decode a whole message (header and body) and verify both checksums.
    pub fn decode_message(bytes: &[u8]) -> Result<(Header, &[u8]), HeaderError> {
        let header = Header::decode(bytes)?;
        if bytes.len() != header.size as usize {
            return Err(HeaderError::BodySizeMismatch {
                expected_bytes: header.body_size_bytes(),
                actual_bytes: bytes.len().saturating_sub(HEADER_SIZE_BYTES),
            });
        }
        let body = &bytes[HEADER_SIZE_BYTES..];
        header.valid_body(body)?;
        Ok((header, body))
    }

    /// Encode header followed by body into one buffer.
    pub fn encode_message(&self, body: &[u8]) -> Vec<u8> {
        debug_assert_eq!(self.size as usize, HEADER_SIZE_BYTES + body.len());
        let mut out = Vec::with_capacity(HEADER_SIZE_BYTES + body.len());
        out.extend_from_slice(&self.encode());
        out.extend_from_slice(body);
        out
    }
}

fn put(out: &mut [u8], offset: usize, bytes: &[u8]) {
    out[offset..offset + bytes.len()].copy_from_slice(bytes);
}

fn u128_at(bytes: &[u8], offset: usize) -> u128 {
    u128::from_le_bytes(bytes[offset..offset + 16].try_into().unwrap())
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_header() -> impl Strategy<Value = (Header, Vec<u8>)> {
        (
            any::<[u128; 3]>(),
            any::<[u64; 7]>(),
            any::<u8>(),
            prop::sample::select(Command::ALL),
            prop::sample::select(Operation::ALL),
            prop::collection::vec(any::<u8>(), 0..512),
        )
            .prop_map(|(ids, words, replica, command, operation, body)| {
                let mut header = Header::new(command, ids[0]);
                header.parent = ids[1];
                header.client = ids[2];
                header.namespace = words[0];
                header.view = words[1];
                header.op = words[2];
                header.commit = words[3];
                header.timestamp = words[4];
                header.request = words[5];
                header.context = words[6];
                header.replica = replica;
                header.operation = operation;
                header.set_checksums(&body);
                (header, body)
            })
    }

    proptest! {
        #[test]
        fn round_trip((header, body) in arb_header()) {
            let message = header.encode_message(&body);
            let (decoded, decoded_body) = Header::decode_message(&message).unwrap();
            prop_assert_eq!(decoded, header);
            prop_assert_eq!(decoded_body, body.as_slice());
        }

        #[test]
        fn any_single_bit_flip_is_detected((header, body) in arb_header(), bit in 0usize..(HEADER_SIZE_BYTES * 8)) {
            let mut message = header.encode_message(&body);
            message[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Header::decode_message(&message).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = Header::decode(&bytes);
            let _ = Header::decode_message(&bytes);
        }
    }

    #[test]
    fn do_view_change_nacks_round_trip_and_default_to_none() {
        let mut dvc = Header::new(Command::DoViewChange, 1);
        assert_eq!(dvc.do_view_change_nacks(), None, "a do_view_change that states nothing nacks nothing");
        let nacks = DoViewChangeNacks { floor: 41, present: 0b1011 };
        dvc.set_do_view_change_nacks(nacks);
        dvc.set_checksums(&[]);
        let decoded = Header::decode(&dvc.encode()).unwrap();
        assert_eq!(decoded.do_view_change_nacks(), Some(nacks));
        let mut other = decoded;
        other.command = Command::StartView;
        assert_eq!(other.do_view_change_nacks(), None, "only a do_view_change carries nacks");
    }

    #[test]
    fn a_refusal_names_the_request_and_its_reason() {
        let mut request = Header::new(Command::Request, 7);
        (request.namespace, request.client, request.request) = (42, 99, 5);
        for reason in [Refusal::PartitionMissing, Refusal::Busy] {
            let refused = reason.header(&request, 2, 3);
            let decoded = Header::decode(&refused.encode()).unwrap();
            assert_eq!(
                (decoded.command, decoded.namespace, decoded.client, decoded.request),
                (Command::Refused, 42, 99, 5)
            );
            assert_eq!((decoded.replica, decoded.view), (2, 3));
            assert_eq!(Refusal::from_code(decoded.context), Some(reason));
        }
        assert_eq!(Refusal::from_code(0), None);
    }

    #[test]
    fn short_input_is_a_typed_error() {
        assert_eq!(Header::decode(&[0u8; 100]), Err(HeaderError::Short { size_bytes: 100 }));
    }

    #[test]
    fn zero_filled_sector_is_a_bad_checksum() {
        assert_eq!(Header::decode(&[0u8; 256]), Err(HeaderError::BadChecksum));
    }

    fn reseal(mut bytes: [u8; HEADER_SIZE_BYTES]) -> [u8; HEADER_SIZE_BYTES] {
        let sum = checksum(&bytes[OFFSET_CHECKSUM_BODY..]);
        bytes[..16].copy_from_slice(&sum.to_le_bytes());
        bytes
    }

    #[test]
    fn unknown_command_and_operation_are_typed_errors() {
        let header = Header::new(Command::Ping, 7);
        let mut bytes = header.encode();
        bytes[OFFSET_COMMAND] = 200;
        assert_eq!(Header::decode(&reseal(bytes)), Err(HeaderError::UnknownCommand { value: 200 }));
        let mut bytes = header.encode();
        bytes[OFFSET_OPERATION] = 250;
        assert_eq!(Header::decode(&reseal(bytes)), Err(HeaderError::UnknownOperation { value: 250 }));
    }

    #[test]
    fn size_out_of_range_is_a_typed_error() {
        let header = Header::new(Command::Ping, 7);
        let mut bytes = header.encode();
        bytes[OFFSET_SIZE..OFFSET_SIZE + 4].copy_from_slice(&10u32.to_le_bytes());
        assert_eq!(Header::decode(&reseal(bytes)), Err(HeaderError::WrongSize { size_bytes: 10 }));
    }

    #[test]
    fn body_corruption_is_detected() {
        let mut header = Header::new(Command::Prepare, 7);
        header.set_checksums(b"hello");
        let mut message = header.encode_message(b"hello");
        *message.last_mut().unwrap() ^= 1;
        assert_eq!(Header::decode_message(&message).unwrap_err(), HeaderError::BadBodyChecksum);
    }
}
