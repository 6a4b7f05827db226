//! `shoal-bench-peers server` (run by `cargo xtask bench server`): issue 11's
//! numbers for shoal alone. 3 replicas on loopback (`shoal_cluster`), 1 KiB
//! appends with fsync on a quorum before every acknowledgement, one at a
//! time (1 client, 1 in flight) and with many in flight (N client threads,
//! each one append in flight: a session allows one request at a time), for
//! each shard count. Prints a table and writes `server.json` under
//! `target/bench/`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

use crate::error::BenchError;
use crate::shoal_cluster::{self, LoadResult, ShoalCluster, ShoalSettings};
use crate::workload::payload;

const REPORT_JSON_NAME: &str = "server.json";
const BYTES_PER_MB: f64 = 1e6;

/// Settings of `shoal-bench-peers server`.
#[derive(Debug, Parser)]
#[command(name = "shoal-bench-peers server", about = "shoal alone: 3 replicas on loopback, fsync before ack")]
pub struct ServerArgs {
    /// The shoal-server binary (`cargo xtask bench server` builds it) [default: $CARGO_TARGET_DIR/release/shoal-server].
    #[arg(long)]
    server_binary: Option<PathBuf>,
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Unmeasured seconds of appends before each shard count's phases.
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// Client threads of the many-in-flight phase (each one append in flight).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Partitions of the topic; the clients spread over them round-robin.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Shard counts per replica to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    shards: Vec<usize>,
    #[arg(long, default_value_t = 1024)]
    message_size_bytes: usize,
    /// Every replica's --message-size-max (journal slot size, header included).
    #[arg(long, default_value_t = shoal_cluster::MESSAGE_SIZE_MAX_BYTES_DEFAULT)]
    message_size_max: u32,
    /// Bound on the cluster accepting writes after start.
    #[arg(long, default_value_t = 30)]
    start_timeout_s: u64,
    /// Bound on any single append.
    #[arg(long, default_value_t = 10)]
    op_timeout_s: u64,
    /// Where the replicas keep their data (must be disk-backed) [default: the temp dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where server.json goes [default: $CARGO_TARGET_DIR/bench or target/bench].
    #[arg(long)]
    out_dir: Option<PathBuf>,
    #[arg(long)]
    keep_data: bool,
    /// The clients' tick in ms (how long a blocking client waits per poll
    /// round) [default: the client library's]; timeouts keep their length.
    #[arg(long)]
    client_tick_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Row {
    shards_per_replica: usize,
    partitions: u32,
    clients: usize,
    mode: String,
    messages: u64,
    elapsed_s: f64,
    msg_per_s: f64,
    mb_per_s: f64,
    latency_p50_us: u64,
    latency_p99_us: u64,
    latency_p999_us: u64,
    latency_max_us: u64,
}

impl Row {
    fn of(result: &LoadResult, shards: usize, partitions: u32, clients: usize, message_size_bytes: usize) -> Row {
        let elapsed_s = result.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let mode = if clients == 1 {
            "1 client, 1 in flight".to_owned()
        } else {
            format!("{clients} clients, 1 in flight each")
        };
        Row {
            shards_per_replica: shards,
            partitions,
            clients,
            mode,
            messages: result.messages_count,
            elapsed_s,
            msg_per_s: result.messages_count as f64 / elapsed_s,
            mb_per_s: (result.messages_count * message_size_bytes as u64) as f64 / BYTES_PER_MB / elapsed_s,
            latency_p50_us: result.latency_us.value_at_quantile(0.5),
            latency_p99_us: result.latency_us.value_at_quantile(0.99),
            latency_p999_us: result.latency_us.value_at_quantile(0.999),
            latency_max_us: result.latency_us.max(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    command: String,
    machine: String,
    data_dir: String,
    message_size_bytes: usize,
    durability: &'static str,
    note: &'static str,
    rows: Vec<Row>,
    /// Each replica's storage actions over the whole run (warm-up included).
    storage: Vec<StorageRow>,
}

#[derive(Debug, Serialize)]
struct StorageRow {
    shards_per_replica: usize,
    replica: usize,
    action: String,
    count: u64,
    mean_ms: f64,
}

const DURABILITY: &str = "fsync (fdatasync) of every prepare on a quorum before the ack";
/// Said beside every result, so nobody misreads what a shard does.
const SHARD_NOTE: &str = "each shard runs the partition groups its namespaces hash to (the metadata group on shard 0, \
                          which also holds every connection); with --no-pin the shards share the machine's cores";

pub fn main(args: &[String]) -> Result<(), BenchError> {
    let args = ServerArgs::parse_from(std::iter::once("server".to_owned()).chain(args.iter().cloned()));
    let server_binary = args.server_binary.clone().unwrap_or_else(shoal_cluster::default_server_binary);
    if !server_binary.exists() {
        return Err(BenchError::client(
            "shoal",
            "find shoal-server",
            format!(
                "{} is missing: run `cargo build --release -p shoal-runtime --bin shoal-server` (or `cargo xtask bench server`)",
                server_binary.display()
            ),
        ));
    }
    let data_root = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    crate::check_data_root(&data_root)?;
    let mut rows = Vec::new();
    let mut storage = Vec::new();
    for &shards in &args.shards {
        eprintln!("== shoal, 3 replicas x {shards} shard(s), {} partition(s)", args.partitions);
        let settings = ShoalSettings {
            server_binary: server_binary.clone(),
            dir: data_root.join(format!("shoal-bench-server-{}-{shards}", std::process::id())),
            shards_per_replica_count: shards,
            partitions_count: args.partitions,
            message_size_max_bytes: args.message_size_max,
            start_timeout: Duration::from_secs(args.start_timeout_s),
            append_timeout: Duration::from_secs(args.op_timeout_s),
            client_tick: args.client_tick_ms.map(Duration::from_millis),
            keep_dir: args.keep_data,
        };
        let starting = Instant::now();
        let shoal = ShoalCluster::start(settings)?;
        eprintln!("  writable after {:.1} s (pids {:?})", starting.elapsed().as_secs_f64(), shoal.pids());
        let size = args.message_size_bytes;
        let message = |index| payload(index, size);
        shoal_cluster::run_load(&shoal, args.clients.min(4), Duration::from_secs(args.warmup_s), &message)?;
        for clients in [1, args.clients] {
            let result = shoal_cluster::run_load(&shoal, clients, Duration::from_secs(args.duration_s), &message)?;
            let row = Row::of(&result, shards, args.partitions, clients, size);
            eprintln!("  {}: {:.0} msg/s, p99 {} us", row.mode, row.msg_per_s, row.latency_p99_us);
            rows.push(row);
        }
        for replica in 0..usize::from(shoal_cluster::REPLICA_COUNT) {
            for (action, count, mean_ms) in shoal.storage_latency(replica)? {
                eprintln!("  replica {replica}: {action} x{count}, mean {mean_ms:.2} ms until durable");
                storage.push(StorageRow { shards_per_replica: shards, replica, action, count, mean_ms });
            }
        }
    }
    let report = Report {
        command: crate::command_line("cargo xtask bench server"),
        machine: crate::machine_line(),
        data_dir: data_root.display().to_string(),
        message_size_bytes: args.message_size_bytes,
        durability: DURABILITY,
        note: SHARD_NOTE,
        rows,
        storage,
    };
    println!("{}", render_table(&report));
    let out_dir = args.out_dir.clone().unwrap_or_else(crate::default_out_dir);
    std::fs::create_dir_all(&out_dir).map_err(|source| BenchError::io("create", &out_dir, source))?;
    let path = out_dir.join(REPORT_JSON_NAME);
    let json = serde_json::to_string_pretty(&report).expect("the report serializes");
    std::fs::write(&path, json).map_err(|source| BenchError::io("write", &path, source))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn render_table(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!("{}\n{}; {}\n\n", report.command, report.machine, report.durability));
    out.push_str("| shards/replica | partitions | mode | msg/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms |\n");
    out.push_str("|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
    let ms = |us: u64| us as f64 / 1000.0;
    for row in &report.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            row.shards_per_replica,
            row.partitions,
            row.mode,
            row.msg_per_s,
            row.mb_per_s,
            ms(row.latency_p50_us),
            ms(row.latency_p99_us),
            ms(row.latency_p999_us),
            ms(row.latency_max_us),
        ));
    }
    out.push_str(&format!("\nNote: {}\n", report.note));
    out
}
