//! `shoal-bench-peers server` (run by `cargo xtask bench server`): issue 11's
//! and issue 12's numbers for shoal alone. 3 replicas on loopback
//! (`shoal_cluster`; `--replica-counts 1,3` adds a single replica, no
//! replication), 1 KiB appends with fsync on a quorum before every
//! acknowledgement, one at a time (1 client, 1 in flight), with many in
//! flight (N client threads, each one append in flight: a session allows one
//! request at a time), as producers keep them (`--producers` clients, each
//! one batch of `--producer-batch-messages` in flight: many messages in
//! flight as a few batched requests), and in batches (1 client, `--batch-messages` messages
//! per request, one request in flight, on a cluster whose slots fit the
//! batch), then reads by offset of what the batches wrote (1 reader, the
//! primary and a backup), for each shard count. Prints a table and writes
//! `server.json` under `target/bench/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cpu;
use crate::error::BenchError;
use crate::shoal_cluster::{self, LoadResult, ReadPlan, ReadResult, ServerCounters, ShoalCluster, ShoalSettings};
use crate::workload::payload;
use shoal_shard::message_batch::{BATCH_HEADER_SIZE_BYTES, BATCH_MESSAGE_OVERHEAD_BYTES, BATCH_MESSAGES_MAX};
use shoal_vsr::header::{HEADER_SIZE_BYTES, MESSAGE_SIZE_MAX_BYTES};

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
    /// Producers of the producer phase (each its own session, one batch in
    /// flight; 0: no producer phase).
    #[arg(long, default_value_t = 8)]
    producers: usize,
    /// Messages per batch of the producer phase: `--producers` times this
    /// many messages are in flight.
    #[arg(long, default_value_t = 32)]
    producer_batch_messages: usize,
    /// More producer phases, each `PRODUCERSxBATCH` (e.g. `16x32,8x60`),
    /// run after the `--producers` one on the same cluster: the shape of
    /// in-flight work that reaches a throughput at a latency.
    #[arg(long, value_delimiter = ',', value_parser = parse_producer_shape)]
    producer_shapes: Vec<(usize, usize)>,
    /// Skip the 1-client and many-clients phases (their cluster still
    /// starts, for the producer phases; the warm-up runs producers).
    #[arg(long)]
    skip_client_phases: bool,
    /// Partitions of the topic; the clients spread over them round-robin.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Shard counts per replica to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    shards: Vec<usize>,
    /// Replica counts to measure, comma-separated (1: no replication).
    #[arg(long, value_delimiter = ',', default_value = "3")]
    replica_counts: Vec<u8>,
    /// Messages per request of the batch phase (0: no batch phase). Its
    /// cluster's slots are sized to fit one batch (`--message-size-max` is
    /// raised for it) with `--batch-journal-slot-count` slots.
    #[arg(long, default_value_t = 1000)]
    batch_messages: usize,
    /// Journal slots per group of the batch phase's cluster (each slot fits
    /// a whole batch: the journal file is this many times ~1 MiB, zero-filled
    /// when the topic is created). The batch cluster has one partition.
    #[arg(long, default_value_t = 128)]
    batch_journal_slot_count: u64,
    #[arg(long, default_value_t = 1024)]
    message_size_bytes: usize,
    /// Every replica's --message-size-max (journal slot size, header included).
    #[arg(long, default_value_t = shoal_cluster::MESSAGE_SIZE_MAX_BYTES_DEFAULT)]
    message_size_max: u32,
    /// Every replica's --pipeline-prepares-max (prepares in flight per
    /// partition group) [default: the server's].
    #[arg(long)]
    pipeline_prepares_max: Option<usize>,
    /// Every replica's --checkpoint-interval-ops (ops between a partition
    /// group's checkpoints) [default: the server's].
    #[arg(long)]
    checkpoint_interval_ops: Option<u64>,
    /// Every replica's --scrub-bytes-per-second (the partition log scrubber,
    /// per shard; 0 off) [default: the server's].
    #[arg(long)]
    scrub_bytes_per_second: Option<u64>,
    /// Reads each reader keeps in flight in the read phase, comma-separated
    /// (one row per value; at most `shoal_client::READS_IN_FLIGHT_MAX`).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    reads_in_flight: Vec<usize>,
    /// Also read once with the page cache dropped first (`sync`, then
    /// `echo 3 > /proc/sys/vm/drop_caches`: needs root): one pass over
    /// what the batches wrote, with the most reads in flight asked.
    #[arg(long)]
    drop_caches: bool,
    /// Skip the one-at-a-time and many-clients append phases (the batch
    /// phase still runs: the reads read what it wrote).
    #[arg(long)]
    skip_append_phases: bool,
    #[command(flatten)]
    run: crate::RunArgs,
    /// The clients' tick in ms (how long a blocking client waits per poll
    /// round) [default: the client library's]; timeouts keep their length.
    #[arg(long)]
    client_tick_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Row {
    replicas: u8,
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
    /// Each replica's work during the phase (`GET /metrics` before and
    /// after; empty for reads).
    server: Vec<ServerCounters>,
    /// CPU seconds (user + system, all threads) per million messages the
    /// servers burned in the phase, and the load generator itself (this
    /// process): on shared cores, throughput moves with the load of the
    /// machine, what a message costs much less. `None` where not measured.
    server_cpu_s_per_million_messages: Option<f64>,
    client_cpu_s_per_million_messages: Option<f64>,
}

impl Row {
    /// Client requests per committed op in the phase (the same on every
    /// replica: they commit the same ops); 0 without counters.
    fn requests_per_op(&self) -> f64 {
        self.server.first().map_or(0.0, ServerCounters::requests_per_op)
    }
}

/// Every replica's counters now.
fn counters(shoal: &ShoalCluster) -> Result<Vec<ServerCounters>, BenchError> {
    (0..usize::from(shoal.replica_count())).map(|replica| shoal.counters(replica)).collect()
}

/// What each replica did since `before`, printed one line per replica.
fn counters_since(
    shoal: &ShoalCluster,
    before: &[ServerCounters],
    seconds: f64,
) -> Result<Vec<ServerCounters>, BenchError> {
    let after = counters(shoal)?;
    let phase: Vec<ServerCounters> = after.iter().zip(before).map(|(after, before)| after.since(before)).collect();
    for (replica, counters) in phase.iter().enumerate() {
        eprintln!("    replica {replica}: {}", counters.describe(seconds));
    }
    Ok(phase)
}

/// Where a row was measured and how.
struct Phase {
    replicas: u8,
    shards: usize,
    partitions: u32,
    clients: usize,
    mode: String,
}

impl Phase {
    fn appends(replicas: u8, shards: usize, partitions: u32, clients: usize) -> Phase {
        let mode = if clients == 1 {
            "1 client, 1 in flight".to_owned()
        } else {
            format!("{clients} clients, 1 in flight each")
        };
        Phase { replicas, shards, partitions, clients, mode }
    }
}

/// Messages one read asks for (the protocol's most; the reply's size
/// bound cuts it to what fits one frame).
const READ_COUNT_MAX: u32 = shoal_client::READ_MESSAGES_MAX;

impl Row {
    fn of_reads(result: &ReadResult, phase: Phase) -> Row {
        Row::measured(phase, result.messages_count, result.payload_bytes, result.elapsed, &result.latency_us)
    }

    fn of(result: &LoadResult, phase: Phase, message_size_bytes: usize) -> Row {
        let payload_bytes = result.messages_count * message_size_bytes as u64;
        Row::measured(phase, result.messages_count, payload_bytes, result.elapsed, &result.latency_us)
    }

    fn measured(
        phase: Phase,
        messages: u64,
        payload_bytes: u64,
        elapsed: Duration,
        latency_us: &Histogram<u64>,
    ) -> Row {
        let elapsed_s = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let Phase { replicas, shards, partitions, clients, mode } = phase;
        Row {
            replicas,
            shards_per_replica: shards,
            partitions,
            clients,
            mode,
            messages,
            elapsed_s,
            msg_per_s: messages as f64 / elapsed_s,
            mb_per_s: payload_bytes as f64 / BYTES_PER_MB / elapsed_s,
            latency_p50_us: latency_us.value_at_quantile(0.5),
            latency_p99_us: latency_us.value_at_quantile(0.99),
            latency_p999_us: latency_us.value_at_quantile(0.999),
            latency_max_us: latency_us.max(),
            server: Vec::new(),
            server_cpu_s_per_million_messages: None,
            client_cpu_s_per_million_messages: None,
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
    replicas: u8,
    shards_per_replica: usize,
    replica: usize,
    action: String,
    count: u64,
    mean_ms: f64,
    /// The bucket bound holding 99 % (`StorageLatency::p99_ms`).
    p99_ms: Option<f64>,
}

impl StorageRow {
    /// Print the row's line and make it.
    fn of(
        replicas: u8,
        shards_per_replica: usize,
        replica: usize,
        latency: shoal_cluster::StorageLatency,
    ) -> StorageRow {
        let shoal_cluster::StorageLatency { action, count, mean_ms, p99_ms } = latency;
        let p99 = p99_ms.map_or_else(|| "beyond the buckets".to_owned(), |ms| format!("<= {ms:.2} ms"));
        eprintln!("  replica {replica}: {action} x{count}, mean {mean_ms:.2} ms until durable, p99 {p99}");
        StorageRow { replicas, shards_per_replica, replica, action, count, mean_ms, p99_ms }
    }
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
    let data_root = args.run.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    crate::check_data_root(&data_root)?;
    let batch_message_size_max = batch_message_size_max(&args)?;
    check_producer_batches_fit(&args)?;
    let mut rows = Vec::new();
    let mut storage = Vec::new();
    for &replicas in &args.replica_counts {
        for &shards in &args.shards {
            if args.skip_append_phases {
                break;
            }
            measure_appends(&args, &server_binary, &data_root, replicas, shards, &mut rows, &mut storage)?;
        }
        if let Some(message_size_max) = batch_message_size_max {
            for &shards in &args.shards {
                measure_batches(&args, &server_binary, &data_root, replicas, shards, message_size_max, &mut rows)?;
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
    let out_dir = args.run.out_dir.clone().unwrap_or_else(crate::default_out_dir);
    std::fs::create_dir_all(&out_dir).map_err(|source| BenchError::io("create", &out_dir, source))?;
    let path = out_dir.join(REPORT_JSON_NAME);
    let json = serde_json::to_string_pretty(&report).expect("the report serializes");
    std::fs::write(&path, json).map_err(|source| BenchError::io("write", &path, source))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn settings(args: &ServerArgs, server_binary: &Path, data_root: &Path, replicas: u8, shards: usize) -> ShoalSettings {
    ShoalSettings {
        server_binary: server_binary.to_path_buf(),
        dir: data_root.join(format!("shoal-bench-server-{}-{replicas}-{shards}", std::process::id())),
        shards_per_replica_count: shards,
        partitions_count: args.partitions,
        replica_count: replicas,
        message_size_max_bytes: args.message_size_max,
        journal_slot_count: None,
        pipeline_prepares_max: args.pipeline_prepares_max,
        checkpoint_interval_ops: args.checkpoint_interval_ops,
        scrub_bytes_per_second: args.scrub_bytes_per_second,
        start_timeout: Duration::from_secs(args.run.start_timeout_s),
        append_timeout: Duration::from_secs(args.run.op_timeout_s),
        client_tick: args.client_tick_ms.map(Duration::from_millis),
        keep_dir: args.run.keep_data,
    }
}

fn start(settings: ShoalSettings, what: &str) -> Result<ShoalCluster, BenchError> {
    eprintln!(
        "== shoal, {} replica(s) x {} shard(s), {} partition(s){what}",
        settings.replica_count, settings.shards_per_replica_count, settings.partitions_count
    );
    let starting = Instant::now();
    let shoal = ShoalCluster::start(settings)?;
    eprintln!("  writable after {:.1} s (pids {:?})", starting.elapsed().as_secs_f64(), shoal.pids());
    Ok(shoal)
}

/// One at a time, then many clients in flight, on one cluster.
fn measure_appends(
    args: &ServerArgs,
    server_binary: &Path,
    data_root: &Path,
    replicas: u8,
    shards: usize,
    rows: &mut Vec<Row>,
    storage: &mut Vec<StorageRow>,
) -> Result<(), BenchError> {
    let shoal = start(settings(args, server_binary, data_root, replicas, shards), "")?;
    let size = args.message_size_bytes;
    let message = |index| payload(index, size);
    if args.skip_client_phases {
        let warmup = Duration::from_secs(args.warmup_s);
        shoal_cluster::run_producers(&shoal, args.producers.max(1), args.producer_batch_messages, warmup, &message)?;
    } else {
        shoal_cluster::run_load(&shoal, args.clients.min(4), Duration::from_secs(args.warmup_s), &message)?;
    }
    let client_phases: &[usize] = if args.skip_client_phases { &[] } else { &[1, args.clients] };
    for &clients in client_phases {
        let before = counters(&shoal)?;
        let result = shoal_cluster::run_load(&shoal, clients, Duration::from_secs(args.duration_s), &message)?;
        let mut row = Row::of(&result, Phase::appends(replicas, shards, args.partitions, clients), size);
        eprintln!("  {}: {:.0} msg/s, p99 {} us", row.mode, row.msg_per_s, row.latency_p99_us);
        row.server = counters_since(&shoal, &before, row.elapsed_s)?;
        rows.push(row);
    }
    let first_shape = (args.producers > 0).then_some((args.producers, args.producer_batch_messages));
    for (producers, batch) in first_shape.into_iter().chain(args.producer_shapes.iter().copied()) {
        let before = counters(&shoal)?;
        let result =
            shoal_cluster::run_producers(&shoal, producers, batch, Duration::from_secs(args.duration_s), &message)?;
        let mode = format!("{producers} producers, batches of {batch}, {} in flight", producers * batch);
        let phase = Phase { replicas, shards, partitions: args.partitions, clients: producers, mode };
        let mut row = Row::of(&result, phase, size);
        eprintln!("  {}: {:.0} msg/s, p99 {} us", row.mode, row.msg_per_s, row.latency_p99_us);
        row.server = counters_since(&shoal, &before, row.elapsed_s)?;
        rows.push(row);
    }
    for replica in 0..usize::from(shoal.replica_count()) {
        let drops = shoal.replica_drops(replica)?;
        if !drops.is_empty() {
            eprintln!("  replica {replica}: messages dropped by its replicas (whole run): {drops:?}");
        }
        for latency in shoal.storage_latency(replica)? {
            storage.push(StorageRow::of(replicas, shards, replica, latency));
        }
    }
    Ok(())
}

/// One client, batches of `--batch-messages` to one partition, on a cluster
/// sized for them.
fn measure_batches(
    args: &ServerArgs,
    server_binary: &Path,
    data_root: &Path,
    replicas: u8,
    shards: usize,
    message_size_max: u32,
    rows: &mut Vec<Row>,
) -> Result<(), BenchError> {
    let mut settings = settings(args, server_binary, data_root, replicas, shards);
    settings.dir.set_extension("batches");
    settings.message_size_max_bytes = message_size_max;
    settings.journal_slot_count = Some(args.batch_journal_slot_count);
    // One client appends one batch at a time: one partition is all it uses,
    // and each more would zero-fill another ~`slot count` MiB journal.
    settings.partitions_count = 1;
    let what = format!(", batches of {}, {message_size_max}-byte slots", args.batch_messages);
    let shoal = start(settings, &what)?;
    let size = args.message_size_bytes;
    let message = |index| payload(index, size);
    shoal_cluster::run_batches(&shoal, args.batch_messages, Duration::from_secs(args.warmup_s), &message)?;
    let before = counters(&shoal)?;
    let cpu_before = CpuSpent::now(&shoal)?;
    let (result, end) =
        shoal_cluster::run_batches(&shoal, args.batch_messages, Duration::from_secs(args.duration_s), &message)?;
    let mode = format!("1 client, batches of {}, 1 in flight", args.batch_messages);
    let phase = Phase { replicas, shards, partitions: 1, clients: 1, mode };
    let mut row = Row::of(&result, phase, size);
    cpu_before.charge(&shoal, &mut row)?;
    eprintln!(
        "  {}: {:.0} msg/s, p99 {} us per batch; CPU s per million messages: servers {:.2}, client {:.2}",
        row.mode,
        row.msg_per_s,
        row.latency_p99_us,
        row.server_cpu_s_per_million_messages.unwrap_or(f64::NAN),
        row.client_cpu_s_per_million_messages.unwrap_or(f64::NAN),
    );
    row.server = counters_since(&shoal, &before, row.elapsed_s)?;
    rows.push(row);
    for replica in 0..usize::from(shoal.replica_count()) {
        for latency in shoal.storage_latency(replica)? {
            let p99 = latency.p99_ms.map_or_else(|| "beyond the buckets".to_owned(), |ms| format!("<= {ms:.2} ms"));
            eprintln!(
                "    replica {replica}: {} x{}, mean {:.2} ms until durable, p99 {p99} (warm-up and batches)",
                latency.action, latency.count, latency.mean_ms
            );
        }
    }
    // Reads of what the batches wrote, from the primary and from a backup.
    let readers: &[u8] = if replicas > 1 { &[0, 1] } else { &[0] };
    for &replica in readers {
        for &in_flight in &args.reads_in_flight {
            let plan = |duration_s| ReadPlan {
                count_max: READ_COUNT_MAX,
                in_flight,
                duration: Duration::from_secs(duration_s),
                one_pass: false,
            };
            shoal_cluster::run_reads(&shoal, replica, end, plan(args.warmup_s))?;
            let reads = shoal_cluster::run_reads(&shoal, replica, end, plan(args.duration_s))?;
            let mode = format!("1 reader, replica {replica}, {in_flight} in flight, {end} messages");
            push_read_row(rows, &reads, Phase { replicas, shards, partitions: 1, clients: 1, mode });
        }
    }
    if args.drop_caches {
        let in_flight = args.reads_in_flight.iter().copied().max().unwrap_or(1);
        for &replica in readers {
            drop_page_cache()?;
            let plan = ReadPlan {
                count_max: READ_COUNT_MAX,
                in_flight,
                duration: Duration::from_secs(args.duration_s.max(60)),
                one_pass: true,
            };
            let reads = shoal_cluster::run_reads(&shoal, replica, end, plan)?;
            let mode = format!(
                "1 reader, replica {replica}, {in_flight} in flight, {end} messages once, page cache dropped first"
            );
            push_read_row(rows, &reads, Phase { replicas, shards, partitions: 1, clients: 1, mode });
        }
    }
    Ok(())
}

/// CPU ticks the servers and this process had used at one moment.
struct CpuSpent {
    server_ticks: u64,
    client_ticks: u64,
}

impl CpuSpent {
    fn now(shoal: &ShoalCluster) -> Result<CpuSpent, BenchError> {
        Ok(CpuSpent {
            server_ticks: cpu::read_total_ticks(&shoal.pids())?,
            client_ticks: cpu::read_process_ticks(std::process::id())?.total_ticks(),
        })
    }

    /// Fill `row`'s CPU columns with what was spent since `self`.
    fn charge(self, shoal: &ShoalCluster, row: &mut Row) -> Result<(), BenchError> {
        let after = CpuSpent::now(shoal)?;
        let ticks_per_s = cpu::clock_ticks_per_s();
        let per_million =
            |before: u64, after: u64| cpu::cpu_s_per_million_messages(after - before, ticks_per_s, row.messages);
        row.server_cpu_s_per_million_messages = per_million(self.server_ticks, after.server_ticks);
        row.client_cpu_s_per_million_messages = per_million(self.client_ticks, after.client_ticks);
        Ok(())
    }
}

fn push_read_row(rows: &mut Vec<Row>, reads: &ReadResult, phase: Phase) {
    let row = Row::of_reads(reads, phase);
    eprintln!("  {}: {:.1} MB/s, p99 {} us per read", row.mode, row.mb_per_s, row.latency_p99_us);
    rows.push(row);
}

/// Write back every dirty page, then drop the page cache (clean pages,
/// dentries and inodes), so the next read comes from the disk.
fn drop_page_cache() -> Result<(), BenchError> {
    const DROP_CACHES_PATH: &str = "/proc/sys/vm/drop_caches";
    let status = std::process::Command::new("sync")
        .status()
        .map_err(|source| BenchError::io("run", Path::new("sync"), source))?;
    if !status.success() {
        return Err(BenchError::client("shoal", "drop the page cache", format!("sync exited with {status}")));
    }
    std::fs::write(DROP_CACHES_PATH, b"3\n")
        .map_err(|source| BenchError::io("write (needs root)", Path::new(DROP_CACHES_PATH), source))
}

/// `PRODUCERSxBATCH`, both at least 1.
fn parse_producer_shape(text: &str) -> Result<(usize, usize), String> {
    let shape_error = || format!("{text:?}: a producer shape is PRODUCERSxBATCH, e.g. 16x32");
    let (producers, batch) = text.split_once('x').ok_or_else(shape_error)?;
    let producers: usize = producers.trim().parse().map_err(|_| shape_error())?;
    let batch: usize = batch.trim().parse().map_err(|_| shape_error())?;
    if producers == 0 || batch == 0 {
        return Err(shape_error());
    }
    Ok((producers, batch))
}

/// The bytes of one append request carrying `messages` messages of
/// `message_size_bytes` each (header, batch header, per-message overhead).
fn batch_request_size_bytes(messages: usize, message_size_bytes: usize) -> usize {
    HEADER_SIZE_BYTES + BATCH_HEADER_SIZE_BYTES + messages * (message_size_bytes + BATCH_MESSAGE_OVERHEAD_BYTES)
}

/// Every producer phase's batch is one request of at most
/// `--message-size-max` (the replicas' limit): checked before any cluster
/// starts, so a shape that cannot fit fails at once with what to change.
fn check_producer_batches_fit(args: &ServerArgs) -> Result<(), BenchError> {
    let first_shape = (args.producers > 0).then_some((args.producers, args.producer_batch_messages));
    for (_, batch) in first_shape.into_iter().chain(args.producer_shapes.iter().copied()) {
        let needed_bytes = batch_request_size_bytes(batch, args.message_size_bytes);
        if needed_bytes > args.message_size_max as usize {
            return Err(BenchError::client(
                "shoal",
                "size the producer phases",
                format!(
                    "a producer batch of {batch} messages of {} bytes is a {needed_bytes}-byte request, past \
                     --message-size-max {}: raise it or lower the batch",
                    args.message_size_bytes, args.message_size_max
                ),
            ));
        }
    }
    Ok(())
}

/// The `--message-size-max` a batch phase needs (a whole batch in one
/// slot, rounded up to 64 KiB), or `None` without a batch phase.
fn batch_message_size_max(args: &ServerArgs) -> Result<Option<u32>, BenchError> {
    const SLOT_ROUNDING_BYTES: usize = 64 * 1024;
    if args.batch_messages == 0 {
        return Ok(None);
    }
    let batch_error = |detail: String| BenchError::client("shoal", "size the batch phase", detail);
    if args.batch_messages > BATCH_MESSAGES_MAX {
        return Err(batch_error(format!("--batch-messages {}: at most {BATCH_MESSAGES_MAX}", args.batch_messages)));
    }
    let needed_bytes = batch_request_size_bytes(args.batch_messages, args.message_size_bytes);
    let rounded_bytes = needed_bytes.next_multiple_of(SLOT_ROUNDING_BYTES).min(MESSAGE_SIZE_MAX_BYTES as usize);
    if needed_bytes > rounded_bytes {
        return Err(batch_error(format!(
            "a batch of {} messages of {} bytes is a {needed_bytes}-byte request, past the {MESSAGE_SIZE_MAX_BYTES}-byte \
             frame limit: lower --batch-messages",
            args.batch_messages, args.message_size_bytes
        )));
    }
    Ok(Some(u32::try_from(rounded_bytes.max(args.message_size_max as usize)).expect("at most the frame limit")))
}

fn render_table(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!("{}\n{}; {}\n\n", report.command, report.machine, report.durability));
    out.push_str(
        "| replicas | shards/replica | partitions | mode | msg/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms | req/op \
         | CPU s/M msg (servers, client) |\n",
    );
    out.push_str("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let ms = |us: u64| us as f64 / 1000.0;
    for row in &report.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
            row.replicas,
            row.shards_per_replica,
            row.partitions,
            row.mode,
            row.msg_per_s,
            row.mb_per_s,
            ms(row.latency_p50_us),
            ms(row.latency_p99_us),
            ms(row.latency_p999_us),
            ms(row.latency_max_us),
            if row.server.is_empty() { "".to_owned() } else { format!("{:.2}", row.requests_per_op()) },
            match (row.server_cpu_s_per_million_messages, row.client_cpu_s_per_million_messages) {
                (Some(server), Some(client)) => format!("{server:.2}, {client:.2}"),
                _ => String::new(),
            },
        ));
    }
    out.push_str(&format!("\nNote: {}\n", report.note));
    out.push_str("A batch row's latency is per batch (request to acknowledgement), its msg/s counts messages.\n");
    out.push_str("A read row's latency is per read request; its MB/s counts message payload bytes.\n");
    out.push_str("req/op: client requests per committed VSR op (packed prepares carry several).\n");
    out.push_str(
        "CPU s/M msg: CPU seconds (user + system) per million messages, all servers, then the load generator.\n",
    );
    out.push_str("A producer row's latency is per message: its batch's, issue to acknowledgement.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::parse_producer_shape;

    #[test]
    fn a_producer_shape_is_producers_x_batch() {
        assert_eq!(parse_producer_shape("16x32"), Ok((16, 32)));
        assert_eq!(parse_producer_shape(" 4 x 250 "), Ok((4, 250)));
        for bad in ["16", "x32", "0x32", "16x0", "16x-1", "axb"] {
            assert!(parse_producer_shape(bad).is_err(), "{bad} is refused");
        }
    }
}
