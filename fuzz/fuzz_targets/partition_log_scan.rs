//! The partition log's recovery scan on a simulated disk: after damage, open
//! either refuses with an error or returns a prefix of what was appended that
//! keeps every record a `sync` (or a segment roll) promised. Never Ok with a
//! lost or altered promised record; never an error when only unpromised bytes
//! were damaged (a torn tail is truncated, not refused).
//!
//! Structure-aware, so the fuzzer gets past the checksums: the input first
//! builds a valid log through the real API (fuzz-chosen segment size,
//! batches, payloads, which batches are synced), crashes the simulated disk
//! (each pending write lost, torn or applied, by the seed), then applies
//! fuzz-chosen mutations. Each mutation is either confined to the unpromised
//! tail of the last segment (zeros, bytes, truncation, garbage appended: what
//! a crash can leave) or anywhere (a bit flip, as rot does; a latent sector
//! error, on a disk whose damage unit is a sector or, as through Linux's
//! page cache, a 4 KiB page).
//!
//! Where open refuses, the salvage a replica with peers runs must not: it
//! keeps a prefix of what was appended, and the log it leaves takes an
//! append and a sync and opens again without salvaging.
#![no_main]

#[path = "common.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::Input;
use libfuzzer_sys::fuzz_target;
use shoal_shard::partition_log::{PartitionLog, PartitionLogConfig, SEGMENT_HEADER_SIZE_BYTES, segment_file_name};
use shoal_sim::{SimIo, block_on_ready};
use shoal_vsr::Io;

/// Bound on the batches one input appends.
const BATCHES_MAX: u8 = 12;
/// Bound on the messages of one batch.
const BATCH_MESSAGES_MAX: u8 = 6;
/// Bound on one payload (small: many records per segment).
const PAYLOAD_SIZE_MAX_BYTES: u8 = 64;
/// Bound on the mutations applied after the build.
const MUTATIONS_MAX: u8 = 8;

const DIR: &str = "/data/fuzz-partition";

fn open(io: &SimIo, config: PartitionLogConfig) -> Result<PartitionLog<SimIo>, String> {
    block_on_ready(PartitionLog::open(io.clone(), Path::new(DIR), config)).map_err(|e| e.to_string())
}

fn read_all(log: &PartitionLog<SimIo>) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let batch = block_on_ready(log.read(out.len() as u64, usize::MAX)).expect("a recovered log reads back");
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

/// What the build promised: records below `offset` and bytes of the last
/// segment below `last_segment_bytes` (every byte of an earlier segment).
struct Promised {
    offset: u64,
    last_segment: PathBuf,
    last_segment_bytes: u64,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let io = SimIo::new(u64::from(input.u16()));
    let segment_size_max_bytes = match input.byte() {
        0 => 64 * 1024 * 1024,
        small => 40 + u64::from(small) * 4,
    };
    let config = PartitionLogConfig { segment_size_max_bytes };
    let mut log = open(&io, config).expect("a new log opens");
    let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut synced: Option<(u64, PathBuf, u64)> = None;
    for _ in 0..input.byte() % BATCHES_MAX + 1 {
        let count = input.byte() % BATCH_MESSAGES_MAX + 1;
        let batch: Vec<Vec<u8>> = (0..count)
            .map(|_| {
                let len = usize::from(input.byte() % PAYLOAD_SIZE_MAX_BYTES);
                input.take(len)
            })
            .collect();
        let first = block_on_ready(log.append(&batch)).expect("append on a healthy disk");
        model.extend(batch.into_iter().enumerate().map(|(i, m)| (first + i as u64, m)));
        if input.byte() & 1 == 1 {
            block_on_ready(log.sync()).expect("sync on a healthy disk");
            let last = segment_path(&log);
            let size = io.disk().contents(&last).expect("the active segment exists").len() as u64;
            synced = Some((log.next_offset(), last, size));
        }
    }
    // A roll seals (syncs and marks) the segment before it: everything below
    // the last segment was promised, whether or not a batch asked for sync.
    let last_segment = segment_path(&log);
    let last_base = log.active_base_offset();
    let promised = match synced {
        Some((offset, path, bytes)) if path == last_segment => {
            Promised { offset: offset.max(last_base), last_segment, last_segment_bytes: bytes }
        }
        _ => Promised { offset: last_base, last_segment, last_segment_bytes: SEGMENT_HEADER_SIZE_BYTES },
    };
    drop(log);
    // The process dies: each unsynced write is lost, torn or applied, as the
    // seed decides. (Also what lets the mutations below poke durable bytes:
    // the simulated disk keeps no pending write past a crash.)
    io.crash();

    let mut promised_damaged = false;
    let paths = block_on_ready(io.list_dir(Path::new(DIR))).expect("the log directory lists");
    for _ in 0..input.byte() % MUTATIONS_MAX {
        let tail_start = promised.last_segment_bytes;
        let last_len = io.disk().contents(&promised.last_segment).unwrap().len() as u64;
        match input.byte() % 6 {
            0 => {
                // Rot: one bit anywhere in any segment.
                let path = &paths[usize::from(input.byte()) % paths.len()];
                let bytes = io.disk().contents(path).unwrap();
                if bytes.is_empty() {
                    continue;
                }
                let at = u64::from(input.u16()) % bytes.len() as u64;
                let bit = input.byte() % 8;
                io.disk().poke(path, at, &[bytes[at as usize] ^ (1 << bit)]).unwrap();
                promised_damaged |= path != &promised.last_segment || at < tail_start;
            }
            1 if last_len > tail_start => {
                // A hole in the unsynced tail: a write that never landed.
                let at = tail_start + u64::from(input.u16()) % (last_len - tail_start);
                let len = u64::from(input.byte()).min(last_len - at);
                io.disk().poke(&promised.last_segment, at, &vec![0; len as usize]).unwrap();
            }
            2 if last_len > tail_start => {
                // Stale or garbage sectors in the unsynced tail.
                let at = tail_start + u64::from(input.u16()) % (last_len - tail_start);
                let len = usize::from(input.byte());
                let bytes = input.take(len);
                io.disk().poke(&promised.last_segment, at, &bytes).unwrap();
            }
            3 if last_len > tail_start => {
                // The tail cut short.
                let len = tail_start + u64::from(input.u16()) % (last_len - tail_start);
                io.disk().poke_len(&promised.last_segment, len).unwrap();
            }
            4 => {
                // Garbage past the end (a write extended the file, then tore).
                let len = usize::from(input.byte());
                let bytes = input.take(len);
                let at = io.disk().contents(&promised.last_segment).unwrap().len() as u64;
                io.disk().poke(&promised.last_segment, at, &bytes).unwrap();
            }
            5 => {
                // A latent sector error anywhere, its damage a sector or a page.
                let path = &paths[usize::from(input.byte()) % paths.len()];
                let len = io.disk().contents(path).unwrap().len() as u64;
                if len == 0 {
                    continue;
                }
                if input.byte() & 1 == 1 {
                    io.disk().latent_error_page_bytes = shoal_sim::disk::LINUX_PAGE_SIZE_BYTES;
                }
                io.disk().fail_sector_reads(path, u64::from(input.u16()) % len).unwrap();
                promised_damaged = true;
            }
            _ => {}
        }
    }

    match open(&io, config) {
        Ok(log) => {
            let recovered = read_all(&log);
            assert!(
                recovered.len() as u64 >= promised.offset,
                "Ok with {} records but {} were promised: silent loss",
                recovered.len(),
                promised.offset
            );
            assert!(recovered.len() <= model.len(), "Ok with records never appended");
            assert_eq!(recovered[..], model[..recovered.len()], "Ok with altered records");
            drop(log);
            // Recovery is idempotent: it made what it kept durable and promised.
            let again = open(&io, config).expect("a recovered log opens again");
            assert_eq!(read_all(&again), recovered);
        }
        Err(error) => {
            assert!(promised_damaged, "only unpromised bytes were damaged, yet open refused: {error}");
            check_salvage(&io, config, &model);
        }
    }
});

/// A salvage keeps a prefix of `model` and leaves a log that can be written.
fn check_salvage(io: &SimIo, config: PartitionLogConfig, model: &[(u64, Vec<u8>)]) {
    let (mut log, _) = block_on_ready(PartitionLog::open_salvaging(io.clone(), Path::new(DIR), config))
        .unwrap_or_else(|error| panic!("the salvage refused a damaged log: {error}"));
    let kept = read_all(&log);
    assert!(kept.len() <= model.len(), "the salvage kept records never appended");
    assert_eq!(kept[..], model[..kept.len()], "the salvage kept altered records");
    let next = block_on_ready(log.append(&[b"after the salvage".to_vec()])).expect("an append after the salvage");
    assert_eq!(next, kept.len() as u64);
    block_on_ready(log.sync()).expect("a sync after the salvage");
    drop(log);
    let again = open(io, config).expect("a salvaged log opens without salvaging");
    assert_eq!(again.next_offset(), kept.len() as u64 + 1);
}

fn segment_path(log: &PartitionLog<SimIo>) -> PathBuf {
    log.dir().join(segment_file_name(log.active_base_offset()))
}
