//! `shoal-bench-peers copies` (run by `cargo xtask bench copies`): what one
//! message costs each replica in heap allocations and in bytes allocated,
//! on the real path: frames read from the socket and decoded, the replica,
//! the journal write, the commit, the partition log append (write path), and
//! a read served from the partition log and encoded as a reply (read path).
//!
//! Each `shoal-server` counts its allocations (`shoal_runtime::alloc_count`,
//! `GET /metrics`); the benchmark scrapes every replica before and after
//! appending `--messages` messages in batches (one client, one batch in
//! flight), and before and after reading them all back from one replica. An
//! idle window first measures what timers and heartbeats allocate per second,
//! which is subtracted. Bytes allocated per message byte stand for user-space
//! copies: nearly every copy of a message in this code goes into a fresh
//! buffer, so a path that copies each byte k times allocates about k bytes
//! per message byte (the kernel's copies into and out of sockets and the
//! page cache are not counted).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use shoal_client::{Client, ReadAnswer};

use crate::error::BenchError;
use crate::shoal_cluster::{self, ShoalCluster, ShoalSettings, partition};
use crate::workload::payload;
use shoal_shard::message_batch::{BATCH_HEADER_SIZE_BYTES, BATCH_MESSAGE_OVERHEAD_BYTES};
use shoal_vsr::header::HEADER_SIZE_BYTES;

/// Journal slots per group (the server's least): each fits one batch.
const JOURNAL_SLOT_COUNT: u64 = 128;
/// Journal slots are sized in these steps.
const SLOT_ROUNDING_BYTES: usize = 64 * 1024;

#[derive(Debug, Parser)]
#[command(name = "shoal-bench-peers copies", about = "allocations and bytes allocated per message, per replica")]
pub struct CopiesArgs {
    /// The shoal-server binary [default: $CARGO_TARGET_DIR/release/shoal-server].
    #[arg(long)]
    server_binary: Option<PathBuf>,
    /// Replica counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    replica_counts: Vec<u8>,
    /// Messages appended (then read back).
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    #[arg(long, default_value_t = 1024)]
    message_size_bytes: usize,
    /// Messages per append request.
    #[arg(long, default_value_t = 1000)]
    batch_messages: usize,
    /// Milliseconds of the idle window that measures the background rate.
    #[arg(long, default_value_t = 2000)]
    idle_ms: u64,
    /// Where the clusters' data directories go [default: the temp dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Allocation counts of every replica at one moment.
struct Snapshot {
    at: Instant,
    counts: Vec<(u64, u64)>,
}

fn snapshot(shoal: &ShoalCluster) -> Result<Snapshot, BenchError> {
    let counts = (0..usize::from(shoal.replica_count())).map(|r| shoal.allocations(r)).collect::<Result<_, _>>()?;
    Ok(Snapshot { at: Instant::now(), counts })
}

/// Per replica: allocations and bytes per second while idle.
fn idle_rates(before: &Snapshot, after: &Snapshot) -> Vec<(f64, f64)> {
    let seconds = after.at.duration_since(before.at).as_secs_f64().max(f64::MIN_POSITIVE);
    before
        .counts
        .iter()
        .zip(&after.counts)
        .map(|(b, a)| ((a.0 - b.0) as f64 / seconds, (a.1 - b.1) as f64 / seconds))
        .collect()
}

/// One row: what a phase cost one replica, the idle rate taken out.
struct Row {
    replicas: u8,
    replica: usize,
    phase: &'static str,
    allocations_per_message: f64,
    bytes_per_message_byte: f64,
    idle_share: f64,
}

fn rows(
    replicas: u8,
    phase: &'static str,
    before: &Snapshot,
    after: &Snapshot,
    idle: &[(f64, f64)],
    messages: u64,
    payload_bytes: u64,
) -> Vec<Row> {
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    (0..before.counts.len())
        .map(|replica| {
            let (b, a) = (before.counts[replica], after.counts[replica]);
            let idle_allocations = idle[replica].0 * seconds;
            let idle_bytes = idle[replica].1 * seconds;
            let allocations = ((a.0 - b.0) as f64 - idle_allocations).max(0.0);
            let bytes = ((a.1 - b.1) as f64 - idle_bytes).max(0.0);
            Row {
                replicas,
                replica,
                phase,
                allocations_per_message: allocations / messages as f64,
                bytes_per_message_byte: bytes / payload_bytes as f64,
                idle_share: idle_bytes / ((a.1 - b.1) as f64).max(1.0),
            }
        })
        .collect()
}

pub fn main(args: &[String]) -> Result<(), BenchError> {
    let args = CopiesArgs::parse_from(std::iter::once("copies".to_owned()).chain(args.iter().cloned()));
    let server_binary = args.server_binary.clone().unwrap_or_else(shoal_cluster::default_server_binary);
    let data_root = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let needed_bytes = HEADER_SIZE_BYTES
        + BATCH_HEADER_SIZE_BYTES
        + args.batch_messages * (args.message_size_bytes + BATCH_MESSAGE_OVERHEAD_BYTES);
    let message_size_max = u32::try_from(needed_bytes.next_multiple_of(SLOT_ROUNDING_BYTES))
        .map_err(|_| BenchError::client("shoal", "size the slots", "a batch past 4 GiB: lower --batch-messages"))?;
    let mut all = Vec::new();
    for &replicas in &args.replica_counts {
        let settings = ShoalSettings {
            server_binary: server_binary.clone(),
            dir: data_root.join(format!("shoal-bench-copies-{}-{replicas}", std::process::id())),
            shards_per_replica_count: 1,
            partitions_count: 1,
            replica_count: replicas,
            message_size_max_bytes: message_size_max,
            journal_slot_count: Some(JOURNAL_SLOT_COUNT),
            pipeline_prepares_max: None,
            checkpoint_interval_ops: None,
            scrub_bytes_per_second: None,
            start_timeout: Duration::from_secs(60),
            append_timeout: Duration::from_secs(30),
            client_tick: None,
            keep_dir: false,
        };
        eprintln!("== shoal, {replicas} replica(s), 1 shard, batches of {}", args.batch_messages);
        let shoal = ShoalCluster::start(settings)?;
        all.extend(measure(&args, &shoal, replicas)?);
    }
    println!("{}", render(&args, &all));
    Ok(())
}

fn measure(args: &CopiesArgs, shoal: &ShoalCluster, replicas: u8) -> Result<Vec<Row>, BenchError> {
    let client_error = |operation, error: String| BenchError::client("shoal", operation, error);
    let mut client =
        Client::new(shoal.fresh_client_config()).map_err(|error| client_error("append", error.to_string()))?;
    // One unmeasured batch: sessions registered, buffers warm.
    let warm: Vec<Vec<u8>> = (0..args.batch_messages as u64).map(|i| payload(i, args.message_size_bytes)).collect();
    let first = client.append_batch(partition(0), &warm).map_err(|e| client_error("append", e.to_string()))?;
    let start_offset = first.first_offset + u64::from(first.count);
    let idle_before = snapshot(shoal)?;
    std::thread::sleep(Duration::from_millis(args.idle_ms));
    let idle = idle_rates(&idle_before, &snapshot(shoal)?);
    let mut out = Vec::new();
    // Write path.
    let before = snapshot(shoal)?;
    let mut appended = 0u64;
    while appended < args.messages {
        let count = (args.messages - appended).min(args.batch_messages as u64);
        let batch: Vec<Vec<u8>> = (0..count).map(|i| payload(appended + i, args.message_size_bytes)).collect();
        client.append_batch(partition(0), &batch).map_err(|e| client_error("append", e.to_string()))?;
        appended += count;
    }
    // Let every backup commit and apply what the primary acknowledged.
    std::thread::sleep(Duration::from_millis(500));
    let after = snapshot(shoal)?;
    let payload_bytes = appended * args.message_size_bytes as u64;
    out.extend(rows(replicas, "write", &before, &after, &idle, appended, payload_bytes));
    // Read path: every message back from replica 0, one read in flight.
    let before = snapshot(shoal)?;
    let mut offset = start_offset;
    let end = start_offset + appended;
    let (mut read_messages, mut read_bytes) = (0u64, 0u64);
    while offset < end {
        let count_max = u32::try_from(end - offset).unwrap_or(u32::MAX).min(shoal_client::READ_MESSAGES_MAX);
        let answer =
            client.read(partition(0), 0, offset, count_max).map_err(|e| client_error("read", e.to_string()))?;
        let ReadAnswer::Messages { messages, .. } = answer else {
            return Err(client_error("read", format!("offset {offset}: {answer:?}")));
        };
        offset += messages.len() as u64;
        read_messages += messages.len() as u64;
        read_bytes += messages.iter().map(|m| m.len() as u64).sum::<u64>();
    }
    let after = snapshot(shoal)?;
    let mut read_rows = rows(replicas, "read (served by replica 0)", &before, &after, &idle, read_messages, read_bytes);
    read_rows.truncate(1);
    out.extend(read_rows);
    for row in &out {
        eprintln!(
            "  {} replica {}: {:.2} allocations/message, {:.2} bytes allocated/message byte",
            row.phase, row.replica, row.allocations_per_message, row.bytes_per_message_byte
        );
    }
    Ok(out)
}

fn render(args: &CopiesArgs, rows: &[Row]) -> String {
    let mut out = format!(
        "{}\n{} messages of {} bytes, batches of {}, 1 shard per replica\n\n",
        crate::command_line("cargo xtask bench copies"),
        args.messages,
        args.message_size_bytes,
        args.batch_messages
    );
    out.push_str("| replicas | replica | path | allocations/message | bytes allocated/message byte | idle share |\n");
    out.push_str("|---:|---:|---|---:|---:|---:|\n");
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.2} | {:.1} % |\n",
            row.replicas,
            row.replica,
            row.phase,
            row.allocations_per_message,
            row.bytes_per_message_byte,
            row.idle_share * 100.0
        ));
    }
    out.push_str(
        "\nIdle share: the part of the phase's bytes the idle rate (timers, heartbeats) accounts for, \
         subtracted from the row.\n",
    );
    out
}
