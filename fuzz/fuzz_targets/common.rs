//! Shared by the structure-aware decoder targets: an input reader, header
//! builders and the mutations (flips, overwrites, splices, truncation) applied
//! to a valid encoding. Not a target itself (no `[[bin]]` names it).
#![allow(dead_code)]

use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, Header, Operation, checksum};

/// The most mutations one input applies; more rarely finds more.
pub const MUTATIONS_MAX: usize = 4;
/// Header checksum covers bytes 16..256 and is stored in bytes 0..16.
const HEADER_CHECKSUM_SIZE_BYTES: usize = 16;

/// Reads the input front to back; zeros once it runs out.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    pub fn byte(&mut self) -> u8 {
        let Some((first, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        *first
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }
    /// The next `len` bytes, fewer if the input runs out first.
    pub fn take(&mut self, len: usize) -> Vec<u8> {
        let (head, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        head.to_vec()
    }
    /// Up to `size_max_bytes` bytes, length chosen by the input.
    pub fn bytes(&mut self, size_max_bytes: usize) -> Vec<u8> {
        let size_bytes = usize::from(self.u16()) % (size_max_bytes + 1);
        (0..size_bytes).map(|_| self.byte()).collect()
    }
}

/// A sealed header with fuzz-chosen fields over a fuzz-chosen body.
pub fn header(input: &mut Input<'_>, cluster: u128, body_size_max_bytes: usize) -> (Header, Vec<u8>) {
    let mut header = Header::new(Command::ALL[usize::from(input.byte()) % Command::ALL.len()], cluster);
    header.operation = Operation::ALL[usize::from(input.byte()) % Operation::ALL.len()];
    header.op = input.u64();
    header.view = u64::from(input.u16());
    header.commit = u64::from(input.u16());
    header.parent = u128::from(input.u64());
    header.client = u128::from(input.u16());
    header.request = u64::from(input.byte());
    header.namespace = input.u64();
    header.replica = input.byte();
    let body = input.bytes(body_size_max_bytes);
    header.set_checksums(&body);
    (header, body)
}

/// Rewrite the checksum of the 256-byte header at `at`, if it is in bounds.
pub fn reseal_header(bytes: &mut [u8], at: usize) {
    let Some(end) = at.checked_add(HEADER_SIZE_BYTES).filter(|end| *end <= bytes.len()) else { return };
    let sum = checksum(&bytes[at + HEADER_CHECKSUM_SIZE_BYTES..end]);
    bytes[at..at + HEADER_CHECKSUM_SIZE_BYTES].copy_from_slice(&sum.to_le_bytes());
}

/// Fuzz-chosen damage: bit flips, byte overwrites, little-endian integer
/// overwrites (lengths and counts), splices of one range over another,
/// truncation and appended bytes. Lengths never grow past `size_max_bytes`.
/// Returns whether any byte changed.
pub fn mutate(bytes: &mut Vec<u8>, input: &mut Input<'_>, size_max_bytes: usize) -> bool {
    let original = bytes.clone();
    for _ in 0..usize::from(input.byte()) % (MUTATIONS_MAX + 1) {
        if bytes.is_empty() {
            bytes.push(input.byte());
            continue;
        }
        let at = usize::from(input.u16()) % bytes.len();
        match input.byte() % 6 {
            0 => bytes[at] ^= 1 << (input.byte() % 8),
            1 => bytes[at] = input.byte(),
            2 => {
                // A length or count field: small values, all widths.
                let value = u64::from(input.u16()).to_le_bytes();
                let width = [1, 2, 4, 8][usize::from(input.byte()) % 4].min(bytes.len() - at);
                bytes[at..at + width].copy_from_slice(&value[..width]);
            }
            3 => {
                let from = usize::from(input.u16()) % bytes.len();
                let len = (usize::from(input.byte()) + 1).min(bytes.len() - from).min(bytes.len() - at);
                bytes.copy_within(from..from + len, at);
            }
            4 => bytes.truncate(at),
            _ => {
                let extra = input.bytes(64);
                bytes.extend_from_slice(&extra[..extra.len().min(size_max_bytes.saturating_sub(bytes.len()))]);
            }
        }
    }
    *bytes != original
}
