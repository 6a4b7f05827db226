//! The handshake: the first 64 bytes each side sends on a bus connection.
//!
//! A hello is not a VSR `Header` (the header's command set belongs to the
//! protocol crate, which the bus must not extend): it is its own fixed-size
//! record with a magic, so a stray HTTP probe or a peer of another protocol is
//! recognised before a single frame is parsed, and its own checksum, so a
//! corrupt hello is never mistaken for a role.
//!
//! Layout (little endian):
//! `magic[0..8] version[8..10] role[10] replica[11] message_size_max[12..16]
//!  cluster[16..32] client[32..48] checksum[48..64]` where the checksum is
//! `shoal_vsr::header::checksum` over bytes `0..48`.
//!
//! `message_size_max` is the largest frame the sender accepts (header
//! included), 0 when it does not say: a replica states its limit, so a
//! client configured for larger requests learns it on the first
//! connection and refuses an oversized request itself, with an error that
//! says what to change, instead of resending one the replica closes the
//! connection on until the request times out. The bytes were reserved (and
//! ignored) before: a hello of an older sender reads as 0.

use shoal_vsr::header::checksum;

pub const HELLO_SIZE_BYTES: usize = 64;
/// "SHOALBUS": a connection that does not start with it is not ours.
pub const HELLO_MAGIC: [u8; 8] = *b"SHOALBUS";
/// The bus protocol version; bumped on any change to the hello or framing.
pub const BUS_PROTOCOL_VERSION: u16 = 1;

const OFFSET_VERSION: usize = 8;
const OFFSET_ROLE: usize = 10;
const OFFSET_REPLICA: usize = 11;
const OFFSET_MESSAGE_SIZE_MAX: usize = 12;
const OFFSET_CLUSTER: usize = 16;
const OFFSET_CLIENT: usize = 32;
const OFFSET_CHECKSUM: usize = 48;
const _: () = assert!(OFFSET_CHECKSUM + 16 == HELLO_SIZE_BYTES);

const ROLE_REPLICA: u8 = 1;
const ROLE_CLIENT: u8 = 2;

/// Who is on the other end of a connection, as its hello says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    Replica(u8),
    Client(u128),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub cluster: u128,
    pub peer: Peer,
    /// The largest frame the sender accepts, header included; 0: not said.
    pub message_size_max_bytes: u32,
}

/// Why 64 bytes are not a hello. Version and cluster are checked by the
/// decoder against its own settings, not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("the connection does not start with the shoal bus magic: the peer is not a shoal node or client")]
    BadMagic,
    #[error("hello checksum mismatch: the hello is corrupt; the peer will reconnect")]
    BadChecksum,
    #[error("hello names unknown role {value}: the peer runs a newer or foreign bus protocol")]
    UnknownRole { value: u8 },
}

impl Hello {
    pub fn new(cluster: u128, peer: Peer) -> Hello {
        Hello { version: BUS_PROTOCOL_VERSION, cluster, peer, message_size_max_bytes: 0 }
    }

    /// This hello, stating the largest frame its sender accepts.
    pub fn stating_message_size_max(self, message_size_max_bytes: u32) -> Hello {
        Hello { message_size_max_bytes, ..self }
    }

    pub fn encode(&self) -> [u8; HELLO_SIZE_BYTES] {
        let mut out = [0u8; HELLO_SIZE_BYTES];
        out[..8].copy_from_slice(&HELLO_MAGIC);
        out[OFFSET_VERSION..OFFSET_ROLE].copy_from_slice(&self.version.to_le_bytes());
        let (role, replica, client) = match self.peer {
            Peer::Replica(index) => (ROLE_REPLICA, index, 0u128),
            Peer::Client(id) => (ROLE_CLIENT, 0, id),
        };
        out[OFFSET_ROLE] = role;
        out[OFFSET_REPLICA] = replica;
        out[OFFSET_MESSAGE_SIZE_MAX..OFFSET_CLUSTER].copy_from_slice(&self.message_size_max_bytes.to_le_bytes());
        out[OFFSET_CLUSTER..OFFSET_CLIENT].copy_from_slice(&self.cluster.to_le_bytes());
        out[OFFSET_CLIENT..OFFSET_CHECKSUM].copy_from_slice(&client.to_le_bytes());
        let sum = checksum(&out[..OFFSET_CHECKSUM]);
        out[OFFSET_CHECKSUM..].copy_from_slice(&sum.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8; HELLO_SIZE_BYTES]) -> Result<Hello, HelloError> {
        if bytes[..8] != HELLO_MAGIC {
            return Err(HelloError::BadMagic);
        }
        let stored = u128::from_le_bytes(bytes[OFFSET_CHECKSUM..].try_into().expect("16 bytes"));
        if checksum(&bytes[..OFFSET_CHECKSUM]) != stored {
            return Err(HelloError::BadChecksum);
        }
        let version = u16::from_le_bytes([bytes[OFFSET_VERSION], bytes[OFFSET_VERSION + 1]]);
        let cluster = u128::from_le_bytes(bytes[OFFSET_CLUSTER..OFFSET_CLIENT].try_into().expect("16 bytes"));
        let client = u128::from_le_bytes(bytes[OFFSET_CLIENT..OFFSET_CHECKSUM].try_into().expect("16 bytes"));
        let message_size_max_bytes =
            u32::from_le_bytes(bytes[OFFSET_MESSAGE_SIZE_MAX..OFFSET_CLUSTER].try_into().expect("4 bytes"));
        let peer = match bytes[OFFSET_ROLE] {
            ROLE_REPLICA => Peer::Replica(bytes[OFFSET_REPLICA]),
            ROLE_CLIENT => Peer::Client(client),
            value => return Err(HelloError::UnknownRole { value }),
        };
        Ok(Hello { version, cluster, peer, message_size_max_bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_any_flipped_bit_is_refused() {
        for peer in [Peer::Replica(2), Peer::Client(0xfeed_beef)] {
            let hello = Hello::new(7, peer).stating_message_size_max(64 * 1024);
            let bytes = hello.encode();
            assert_eq!(Hello::decode(&bytes), Ok(hello));
            for index in 0..HELLO_SIZE_BYTES {
                let mut bad = bytes;
                bad[index] ^= 0x10;
                assert!(Hello::decode(&bad).is_err(), "flipped byte {index} accepted");
            }
        }
    }

    #[test]
    fn a_hello_with_the_limit_unsaid_reads_as_zero_as_the_reserved_bytes_of_before_did() {
        let bytes = Hello::new(7, Peer::Replica(1)).encode();
        assert_eq!(bytes[OFFSET_MESSAGE_SIZE_MAX..OFFSET_CLUSTER], [0; 4], "unsaid is what the reserved bytes held");
        assert_eq!(Hello::decode(&bytes).unwrap().message_size_max_bytes, 0);
        let stated = Hello::new(7, Peer::Replica(1)).stating_message_size_max(8192);
        assert_eq!(Hello::decode(&stated.encode()).unwrap().message_size_max_bytes, 8192);
    }
}
