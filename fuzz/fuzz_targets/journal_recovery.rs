//! Journal recovery from arbitrary bytes on a simulated disk: `open` and
//! `scan` never panic, and every op recovery reports reads back with valid
//! header and body checksums.
//!
//! The first input byte picks how the journal file is built, so the fuzzer
//! reaches past the file header's magic and checksum:
//! - raw: the rest of the input is the whole file;
//! - slots: a valid empty journal whose slot area is overwritten by the input,
//!   with every 256-byte slot header resealed (checksum recomputed) so decode
//!   reaches the command, group, op and window checks behind it;
//! - forged: prepares built from the input (fuzz-chosen op, parent, body,
//!   slot), so recovery sees forks, gaps, ops outside the window and ops in
//!   the wrong slot that all carry valid checksums;
//! - damaged: a valid journal (appends, an optional drain so `snapshot_op` is
//!   not 0, more appends) with fuzz-chosen byte flips and an optional
//!   truncation; every recovered op must then be one that was appended.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use shoal_sim::{SimIo, block_on_ready};
use shoal_vsr::header::{Command, Header, HEADER_SIZE_BYTES, Operation, checksum};
use shoal_vsr::io::{Io, OpenMode};
use shoal_vsr::journal::conformance::{CLUSTER, Chain, NAMESPACE, config};
use shoal_vsr::journal::{JournalConfig, PrepareJournal, journal_path};

/// Small journals keep each run fast; 1..=SLOT_COUNT_MAX slots are fuzzed.
const SLOT_COUNT_MAX: u64 = 8;
/// Bound on the prepares the damaged and forged modes build.
const PREPARES_MAX: u64 = 24;
/// Bound on the byte flips of the damaged mode.
const FLIPS_MAX: usize = 16;
/// Bound on a forged prepare's body (a slot holds 4096 bytes, header included).
const FORGED_BODY_MAX_BYTES: usize = 512;

/// Reads the input front to back; an exhausted input yields zeros.
struct Input<'a> {
    bytes: &'a [u8],
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&first, rest)) => {
                self.bytes = rest;
                first
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        let mut out = [0u8; 8];
        for byte in &mut out {
            *byte = self.u8();
        }
        u64::from_le_bytes(out)
    }

    fn take(&mut self, len: usize) -> &[u8] {
        let (head, rest) = self.bytes.split_at(len.min(self.bytes.len()));
        self.bytes = rest;
        head
    }

    fn rest(&mut self) -> &[u8] {
        self.take(self.bytes.len())
    }
}

const DIR: &str = "/data/fuzz";

/// What the file was built from: the headers that were legitimately
/// appended (damaged mode), or `None` when anything valid may be recovered.
type Appended = Option<Vec<Header>>;

fn build_raw(io: &SimIo, input: &mut Input<'_>) {
    let path = journal_path(Path::new(DIR), NAMESPACE);
    block_on_ready(io_create_empty(io, &path));
    let data = input.rest();
    io.disk().poke(&path, 0, data).unwrap();
}

async fn io_create_empty(io: &SimIo, path: &Path) {
    io.create_dir_all(Path::new(DIR)).await.unwrap();
    io.open(path, OpenMode::ReadWriteCreate).await.unwrap();
}

fn build_slots(io: &SimIo, config: JournalConfig, input: &mut Input<'_>) {
    let journal = block_on_ready(PrepareJournal::create(io, Path::new(DIR), config)).unwrap();
    drop(journal);
    let path = journal_path(Path::new(DIR), NAMESPACE);
    let slot_size_bytes = config.slot_size_bytes();
    for slot in 0..config.slot_count {
        let mut bytes = input.take(slot_size_bytes as usize).to_vec();
        if bytes.is_empty() {
            break;
        }
        if bytes.len() >= HEADER_SIZE_BYTES {
            let sum = checksum(&bytes[16..HEADER_SIZE_BYTES]);
            bytes[..16].copy_from_slice(&sum.to_le_bytes());
        }
        io.disk().poke(&path, config.slot_offset(slot), &bytes).unwrap();
    }
    // Whatever input is left lands on the header ring: recovery must judge
    // slots from arbitrary ring copies too.
    let ring = input.take((config.slot_count * HEADER_SIZE_BYTES as u64) as usize).to_vec();
    io.disk().poke(&path, config.header_copy_offset(0), &ring).unwrap();
}

fn build_forged(io: &SimIo, config: JournalConfig, input: &mut Input<'_>) {
    let journal = block_on_ready(PrepareJournal::create(io, Path::new(DIR), config)).unwrap();
    drop(journal);
    let path = journal_path(Path::new(DIR), NAMESPACE);
    let mut previous_checksum = 0xC0FFEE_u128;
    let count = u64::from(input.u8()) % PREPARES_MAX;
    for _ in 0..count {
        let op = u64::from(input.u8()) % (3 * SLOT_COUNT_MAX) + u64::from(input.u8() & 1) * (u64::MAX - 64);
        let flags = input.u8();
        let body_len = usize::from(input.u8()) * 2 % FORGED_BODY_MAX_BYTES;
        let body = input.take(body_len).to_vec();
        let mut header = Header::new(Command::Prepare, if flags & 1 == 0 { CLUSTER } else { CLUSTER ^ 1 });
        header.namespace = if flags & 2 == 0 { NAMESPACE } else { NAMESPACE + 1 };
        header.operation = Operation::SendMessages;
        header.op = op;
        header.view = 1;
        // Chain to the previous forged prepare, or fork.
        header.parent = if flags & 4 == 0 { previous_checksum } else { u128::from(flags) };
        header.set_checksums(&body);
        previous_checksum = header.checksum;
        // Usually the op's own slot, sometimes another one.
        let slot = if flags & 8 == 0 { op % config.slot_count } else { u64::from(flags >> 4) % config.slot_count };
        let mut message = header.encode_message(&body);
        if flags & 16 != 0 {
            // A torn write: only part of the message reached the disk.
            message.truncate(usize::from(input.u8()) * 4 % message.len().max(1));
        }
        io.disk().poke(&path, config.slot_offset(slot), &message).unwrap();
    }
}

fn build_damaged(io: &SimIo, config: JournalConfig, input: &mut Input<'_>) -> Vec<Header> {
    let dir = Path::new(DIR);
    let mut journal = block_on_ready(PrepareJournal::create(io, dir, config)).unwrap();
    let mut chain = Chain::new();
    let mut appended = Vec::new();
    let first = u64::from(input.u8()) % (config.slot_count + 1);
    for _ in 0..first {
        let (header, body) = chain.next_prepare();
        block_on_ready(journal.append(&header, &body)).unwrap();
        appended.push(header);
    }
    block_on_ready(journal.sync()).unwrap();
    let drain_through = u64::from(input.u8()) % (first + 1);
    if drain_through > 0 {
        block_on_ready(journal.drain(drain_through)).unwrap();
        let more = u64::from(input.u8()) % (drain_through + 1);
        for _ in 0..more {
            let (header, body) = chain.next_prepare();
            block_on_ready(journal.append(&header, &body)).unwrap();
            appended.push(header);
        }
        block_on_ready(journal.sync()).unwrap();
    }
    drop(journal);
    let path = journal_path(dir, NAMESPACE);
    let size_bytes = config.file_size_bytes();
    let flips = usize::from(input.u8()) % (FLIPS_MAX + 1);
    for _ in 0..flips {
        let offset = input.u64() % size_bytes;
        let xor = input.u8().max(1);
        let mut byte = io.disk().contents(&path).unwrap()[offset as usize];
        byte ^= xor;
        io.disk().poke(&path, offset, &[byte]).unwrap();
    }
    if input.u8() & 1 == 1 {
        io.disk().poke_len(&path, input.u64() % size_bytes).unwrap();
    }
    appended
}

fn check(io: &SimIo, config: JournalConfig, mode: OpenMode, appended: &Appended) {
    let dir = Path::new(DIR);
    let Ok((journal, recovery)) = block_on_ready(PrepareJournal::open(io, dir, config, mode)) else {
        // A typed error is a correct answer to bad input.
        return;
    };
    let snapshot_op = journal.snapshot_op();
    let window = snapshot_op + 1..=snapshot_op + config.slot_count;
    assert!(recovery.ops_recovered.is_sorted());
    for &op in &recovery.ops_recovered {
        assert!(window.contains(&op), "recovered op {op} outside the live window {window:?}");
        assert!(!recovery.repair_ops.contains(&op));
        let (header, body) = block_on_ready(journal.read(op)).expect("a recovered op reads back");
        assert_eq!(header.op, op);
        assert!(header.valid_checksum());
        assert_eq!(header.valid_body(&body), Ok(()));
        assert_eq!(journal.header(op), Some(&header));
        if let Some(appended) = appended {
            assert_eq!(Some(&header), appended.get(op as usize - 1), "op {op} was never appended");
        }
    }
    for &op in &recovery.repair_ops {
        assert!(window.contains(&op), "repair op {op} outside the live window {window:?}");
    }
    let Ok(scan) = block_on_ready(journal.scan()) else { return };
    for (header, body) in &scan.entries {
        assert!(window.contains(&header.op));
        assert!(header.valid_checksum());
        assert_eq!(header.valid_body(body), Ok(()));
    }
    let scanned: Vec<u64> = scan.entries.iter().map(|(header, _)| header.op).collect();
    for op in &recovery.ops_recovered {
        assert!(scanned.contains(op), "recovered op {op} missing from scan");
    }
    drop(journal);
    if mode.writable() {
        // Recovery wrote only torn-tail clears: a second recovery finds the
        // same log and nothing left to clear.
        let (_, again) = block_on_ready(PrepareJournal::open(io, dir, config, mode)).expect("reopen after recovery");
        assert_eq!(again.ops_recovered, recovery.ops_recovered);
        assert_eq!(again.repair_ops, recovery.repair_ops);
        assert!(again.torn_tail_truncated.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input { bytes: data };
    let selector = input.u8();
    let slot_count = u64::from(input.u8()) % SLOT_COUNT_MAX + 1;
    let config = config(slot_count);
    let mode = if selector & 0x80 == 0 { OpenMode::ReadWrite } else { OpenMode::ReadOnly };
    let io = SimIo::new(u64::from(selector));
    let appended = match selector % 4 {
        0 => {
            build_raw(&io, &mut input);
            None
        }
        1 => {
            build_slots(&io, config, &mut input);
            None
        }
        2 => {
            build_forged(&io, config, &mut input);
            None
        }
        _ => Some(build_damaged(&io, config, &mut input)),
    };
    check(&io, config, mode, &appended);
});
