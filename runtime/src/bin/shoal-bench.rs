//! `shoal-bench`: micro-benchmarks of the real runtime on the real disk.
//!
//! Owns measurement only: it writes into a scratch directory it creates and
//! removes, and never touches a replica's data directory.
//!
//! `journal`: append throughput of `vsr::journal::PrepareJournal` on RealIo
//! with batches of 1, 8 and 64 prepares, side by side with a plain `pwrite` +
//! `fdatasync` loop (one fsync per batch) writing the same bytes at the same
//! offsets of an equally preallocated file. The journal runs as a replica
//! would: the production slot count, a compaction every checkpoint interval
//! (the server's default, `checkpoint_interval_ops_default`, or
//! `--interval-ops`) timed in, and an op counted only once it
//! is durable with its header-ring copy (acknowledgeable). Three journal
//! columns: `sync` (each batch acknowledged after its own two fsyncs, the
//! compaction in the loop), `flush+drain` (group commit: one fsync per
//! batch, each batch acknowledged after the next batch's fsync; the
//! compaction in the loop, as before session 19) and `flush` (the same
//! with the compaction staged and installed beside the appends, as a node
//! runs it: `stage_drain`, `StagedDrain::install` polled between batches,
//! `end_drain`).
//!
//! `open`: how long `PrepareJournal::open` takes on a journal holding some
//! synced prepares: read-only (one pass over the page cache), writable (the
//! fsync, the cache's pass, the eviction and the device's pass), and
//! writable after the file's pages were evicted (a start after a reboot).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::VecDeque;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use shoal_runtime::config::checkpoint_interval_ops_default;
use shoal_runtime::{DriverChoice, RealIo, build_runtime};
use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, Header, Operation};
use shoal_vsr::journal::{
    CHECKPOINT_RESERVED_SLOTS, InstalledDrain, JournalConfig, PrepareJournal, SLOT_COUNT_MAX, ZERO_FILL_CHUNK_BYTES,
};
use shoal_vsr::message::Message;

/// Bodies and slots above this are not what the journal bench is about.
const BODY_SIZE_MAX_BYTES: usize = 1 << 20;
/// Hard cap on prepares per run (bounds the prepared entries in memory).
const PREPARES_PER_RUN_MAX: usize = 1 << 20;
/// Batch latency histogram bounds, in microseconds (1 µs .. 60 s).
const LATENCY_MAX_US: u64 = 60_000_000;
const CLUSTER: u128 = 0x5809_0a1b;
/// Partition namespace: stream 1, topic 1, partition 0 (`stream << 40 | topic << 20 | partition`).
const NAMESPACE: u64 = (1 << 40) | (1 << 20);
const TOTAL_BUDGET_SECS_DEFAULT: f64 = 5.0;
/// Untimed write+fsync rounds on a scratch file before each run, so lazily
/// started kernel workers (io_uring's io-wq) and cold paths are not measured.
const WARMUP_ROUNDS: usize = 16;
/// Each implementation runs this many times per batch size, alternating.
const ROUNDS: usize = 3;

/// shoal-bench: measure the real runtime on this machine's disk.
#[derive(Debug, Parser)]
#[command(name = "shoal-bench", version, about)]
struct Args {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Journal append throughput with an fsync per batch, vs pwrite+fdatasync.
    Journal(JournalArgs),
    /// How long a journal takes to open: read-only, writable, and writable
    /// with the file's pages out of the page cache (a start after a reboot).
    Open(OpenArgs),
}

#[derive(Debug, clap::Args)]
struct OpenArgs {
    /// Scratch directory (a unique subdirectory is created and removed). Must be
    /// on the disk you want to measure: not tmpfs. Defaults to the system temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Journal slots (default: the metadata group's).
    #[arg(long, default_value_t = shoal_shard::handoff::METADATA_JOURNAL_SLOT_COUNT)]
    slots: u64,
    /// The journal's `message_size_max` (default: the metadata group's).
    #[arg(long, default_value_t = shoal_shard::handoff::METADATA_MESSAGE_SIZE_MAX_BYTES)]
    message_size_max_bytes: u32,
    /// Prepares written and synced before the opens, one journal per value, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,256")]
    prepares: Vec<usize>,
    /// Body size of each prepare, in bytes.
    #[arg(long, default_value_t = 256)]
    body_bytes: usize,
    /// Opens per mode and journal (alternating modes); the table shows the median and the slowest.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// compio driver: auto, io_uring or polling.
    #[arg(long, default_value = "auto")]
    io_driver: DriverChoice,
}

#[derive(Debug, clap::Args)]
struct JournalArgs {
    /// Scratch directory (a unique subdirectory is created and removed). Must be
    /// on the disk you want to measure: not tmpfs. Defaults to the system temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Body size of each prepare, in bytes (the 256-byte header comes on top).
    #[arg(long, default_value_t = 4096)]
    body_bytes: usize,
    /// Most prepares written per run (one run = one implementation × one batch size).
    #[arg(long, default_value_t = 65_536)]
    count: usize,
    /// The journal's `message_size_max` (what a slot must hold), in bytes;
    /// default: the entry (header and body). The server's partitions use
    /// 1 MiB (`MESSAGE_SIZE_MAX_BYTES`): its journal then is `--slots` MiB.
    #[arg(long)]
    message_size_max_bytes: Option<u32>,
    /// Journal slots (the server's default `limits.journal_slot_count`).
    #[arg(long, default_value_t = shoal_shard::handoff::METADATA_JOURNAL_SLOT_COUNT)]
    slots: u64,
    /// Prepares per fsync, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    batches: Vec<usize>,
    /// Time budget for the whole benchmark, split evenly across runs; a run
    /// stops at its share or at --count prepares, whichever comes first.
    #[arg(long, default_value_t = TOTAL_BUDGET_SECS_DEFAULT)]
    seconds: f64,
    /// Checkpoint interval: a compaction once this many ops are live
    /// (default: the server's, half the journal).
    #[arg(long)]
    interval_ops: Option<u64>,
    /// compio driver for the journal columns: auto, io_uring or polling.
    #[arg(long, default_value = "auto")]
    io_driver: DriverChoice,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let result = match args.command {
        BenchCommand::Journal(journal) => bench_journal(&journal),
        BenchCommand::Open(open) => bench_open(&open),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shoal-bench: {message}");
            ExitCode::from(1)
        }
    }
}

/// One line on a run's compactions: how long the appends stood still for
/// them, and for staged ones how long their windows lasted.
fn compactions_line(batch: usize, label: &str, result: &RunResult) -> String {
    let compactions = result.compactions;
    let share = |time: Duration| 100.0 * time.as_secs_f64() / result.elapsed.as_secs_f64();
    let mut line = format!(
        "batch {batch:>2} {label}: {} ops, {} compactions, appends stalled {:.1} ms by them ({:.1} % of the run)",
        result.ops,
        compactions.count,
        compactions.stall_time.as_secs_f64() * 1e3,
        share(compactions.stall_time)
    );
    if compactions.window_time > Duration::ZERO {
        line.push_str(&format!(
            "; windows {:.1} ms ({:.1} %), {} waits for an install",
            compactions.window_time.as_secs_f64() * 1e3,
            share(compactions.window_time),
            compactions.install_waits
        ));
    }
    line
}

/// What every run of one benchmark shares.
#[derive(Debug)]
struct Plan {
    dir: PathBuf,
    config: JournalConfig,
    /// File offset of entry `i` (op `i + 1`): the journal's slot of that op.
    offsets: Vec<u64>,
    /// Encoded `[header][body]` of ops 1..=count, hash-chained.
    entries: Vec<Vec<u8>>,
    headers: Vec<Header>,
    bodies: Vec<Vec<u8>>,
    /// The same prepares as the node hands them to the journal: messages
    /// whose bodies were verified when they were built (untimed).
    messages: Vec<Message>,
    run_budget: Duration,
    /// Ops live before a compaction (fewer with large batches).
    interval_ops: u64,
}

/// The result of one run.
#[derive(Debug)]
struct RunResult {
    ops: usize,
    bytes: u64,
    elapsed: Duration,
    batch_latency_us: Histogram<u64>,
    compactions: Compactions,
}

/// Compactions run inside the timed region.
#[derive(Debug, Default, Clone, Copy)]
struct Compactions {
    count: usize,
    /// The time the append loop stood still for them: the whole drain, or
    /// a staged one's stage and the waits for its install.
    stall_time: Duration,
    /// Staged: from the stage to `end_drain`, appends going on.
    window_time: Duration,
    /// Staged: the next batch would have passed the live window, so the
    /// loop waited for the install.
    install_waits: usize,
}

impl Compactions {
    fn merge(self, other: Compactions) -> Compactions {
        Compactions {
            count: self.count + other.count,
            stall_time: self.stall_time + other.stall_time,
            window_time: self.window_time + other.window_time,
            install_waits: self.install_waits + other.install_waits,
        }
    }
}

impl RunResult {
    fn empty() -> RunResult {
        RunResult {
            ops: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            batch_latency_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds"),
            compactions: Compactions::default(),
        }
    }

    /// Sum of two rounds: ops, bytes and time add up, latencies pool.
    fn merge(mut self, other: RunResult) -> RunResult {
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.elapsed += other.elapsed;
        self.batch_latency_us.add(&other.batch_latency_us).expect("same histogram bounds");
        self.compactions = self.compactions.merge(other.compactions);
        self
    }

    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

/// Measures batches until the count or the time budget runs out.
#[derive(Debug)]
struct Meter {
    started: Instant,
    budget: Duration,
    histogram: Histogram<u64>,
    ops: usize,
    bytes: u64,
    compactions: Compactions,
}

impl Meter {
    fn new(budget: Duration) -> Meter {
        Meter {
            started: Instant::now(),
            budget,
            histogram: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds"),
            ops: 0,
            bytes: 0,
            compactions: Compactions::default(),
        }
    }

    fn out_of_time(&self) -> bool {
        self.started.elapsed() >= self.budget
    }

    /// A batch is acknowledged: count its ops and its latency since it began.
    fn record_batch(&mut self, batch_started: Instant, ops: usize, bytes: u64) {
        let us = u64::try_from(batch_started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(us.clamp(1, LATENCY_MAX_US));
        self.ops += ops;
        self.bytes += bytes;
    }

    fn finish(self) -> RunResult {
        RunResult {
            ops: self.ops,
            bytes: self.bytes,
            elapsed: self.started.elapsed(),
            batch_latency_us: self.histogram,
            compactions: self.compactions,
        }
    }
}

/// How the journal column makes a batch durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// `sync` after each batch: acknowledged after its own two fsyncs.
    Sync,
    /// `flush` after each batch: one fsync per batch; a batch is acknowledged
    /// when a later flush reports its ops durable with their ring copies.
    /// The compaction runs in the loop (`drain`).
    FlushDrain,
    /// `FlushDrain`, with the compaction staged and installed beside the
    /// appends, as a node runs it.
    Flush,
}

impl Durability {
    fn label(self) -> &'static str {
        match self {
            Durability::Sync => "journal sync",
            Durability::FlushDrain => "journal flush+drain",
            Durability::Flush => "journal flush",
        }
    }
}

fn bench_journal(args: &JournalArgs) -> Result<(), String> {
    if args.body_bytes == 0 || args.body_bytes > BODY_SIZE_MAX_BYTES {
        return Err(format!("--body-bytes must be 1..={BODY_SIZE_MAX_BYTES}"));
    }
    if args.count == 0 || args.count > PREPARES_PER_RUN_MAX {
        return Err(format!("--count must be 1..={PREPARES_PER_RUN_MAX}"));
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err("--seconds must be positive".to_string());
    }
    let entry_size_bytes = HEADER_SIZE_BYTES + args.body_bytes;
    let entry_size = u32::try_from(entry_size_bytes).expect("bounded by BODY_SIZE_MAX_BYTES");
    let message_size_max_bytes = args.message_size_max_bytes.unwrap_or(entry_size);
    if !(entry_size..=shoal_vsr::header::MESSAGE_SIZE_MAX_BYTES).contains(&message_size_max_bytes) {
        return Err(format!(
            "--message-size-max-bytes must be {entry_size}..={} (the entry up to the protocol's largest message)",
            shoal_vsr::header::MESSAGE_SIZE_MAX_BYTES
        ));
    }
    let config =
        JournalConfig { slot_count: args.slots, message_size_max_bytes, cluster: CLUSTER, namespace: NAMESPACE };
    if args.slots <= CHECKPOINT_RESERVED_SLOTS || args.slots > SLOT_COUNT_MAX {
        return Err(format!("--slots must be {}..={SLOT_COUNT_MAX}", CHECKPOINT_RESERVED_SLOTS + 1));
    }
    let interval_ops = args.interval_ops.unwrap_or(checkpoint_interval_ops_default(args.slots));
    if interval_ops == 0 || interval_ops > config.checkpoint_interval_ops_max() {
        return Err(format!("--interval-ops must be 1..={}", config.checkpoint_interval_ops_max()));
    }
    if args.batches.is_empty() || args.batches.iter().any(|&b| b == 0 || b > args.count || 4 * b as u64 > args.slots) {
        return Err("--batches must be positive, at most --count and at most a quarter of --slots".to_string());
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("shoal-bench-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;

    let (headers, bodies) = prepares(args.count, args.body_bytes);
    let entries: Vec<Vec<u8>> = headers.iter().zip(&bodies).map(|(h, b)| h.encode_message(b)).collect();
    let offsets: Vec<u64> = headers.iter().map(|header| config.slot_offset(header.op)).collect();
    let messages: Vec<Message> = headers.iter().zip(&bodies).map(|(h, b)| Message::new(*h, Rc::from(&b[..]))).collect();
    let implementations = [Some(Durability::Sync), Some(Durability::FlushDrain), Some(Durability::Flush), None];
    let runs = args.batches.len() * implementations.len();
    let plan = Plan {
        dir: dir.clone(),
        config,
        offsets,
        entries,
        headers,
        bodies,
        messages,
        run_budget: Duration::from_secs_f64(args.seconds / (runs * ROUNDS) as f64),
        interval_ops,
    };

    let runtime = build_runtime(args.io_driver).map_err(|e| e.to_string())?;
    let driver = runtime.block_on(async { RealIo::new().driver_name() });
    println!(
        "shoal-bench journal: body {} B, entry {} B, slot {} B, {} slots, a drain every {interval_ops} ops \
         (fewer with batches over {}); \
         {ROUNDS} alternating rounds of up to {} prepares or {:.2} s per implementation and batch size; dir {}",
        args.body_bytes,
        entry_size_bytes,
        config.slot_size_bytes(),
        config.slot_count,
        (config.slot_count - interval_ops) / 2,
        args.count,
        plan.run_budget.as_secs_f64(),
        dir.display()
    );
    println!(
        "journal: vsr::journal::PrepareJournal on RealIo (compio driver {driver}), write_messages per batch \
         (the node's call: messages built verified, bodies not hashed again)"
    );
    println!("  sync:  then sync (two fsyncs: prepares, then their header-ring copies); acknowledged after it");
    println!("  flush+drain: then flush (one fsync); acknowledged when a later flush reports the batch durable;");
    println!("         the compaction (drain) in the append loop");
    println!("  flush: the same, the compaction staged in the loop and installed beside the appends (as a node)");
    println!("plain: std pwrite per entry + one fdatasync per batch, same bytes at the same offsets");
    println!("all files preallocated alike (zero-filled), untimed; drains inside the timed region");
    println!();
    let columns = ["journal sync", "journal flush+drain", "journal flush", "pwrite+fdatasync"];
    print!("{:>5} |", "batch");
    for column in columns {
        print!(" {column:^36} |");
    }
    println!(" {:>6} {:>6} {:>6}", "sync/", "f+d/", "flush/");
    print!("{:>5} |", "");
    for _ in columns {
        print!(" {:>10} {:>7} {:>8} {:>8} |", "ops/s", "MB/s", "p50 µs", "p99 µs");
    }
    println!(" {:>6} {:>6} {:>6}", "plain", "plain", "plain");
    println!("{}", "-".repeat(5 + 2 + 4 * 39 + 21));

    let mut failure = None;
    let mut drains = Vec::new();
    for &batch in &args.batches {
        // Alternate the implementations so that drift on a shared machine
        // (other builds, writeback) hits every column alike.
        let mut totals: Vec<Result<RunResult, String>> =
            implementations.iter().map(|_| Ok(RunResult::empty())).collect();
        for _ in 0..ROUNDS {
            for (total, implementation) in totals.iter_mut().zip(implementations) {
                let taken = std::mem::replace(total, Ok(RunResult::empty()));
                *total = taken.and_then(|sum| {
                    let run = match implementation {
                        Some(durability) => runtime.block_on(run_journal(&plan, batch, durability))?,
                        None => run_baseline(&plan, batch)?,
                    };
                    Ok(sum.merge(run))
                });
            }
        }
        let results: Result<Vec<RunResult>, String> = totals.into_iter().collect();
        match results {
            Ok(results) => {
                print!("{batch:>5} |");
                for result in &results {
                    print!(
                        " {:>10.0} {:>7.2} {:>8} {:>8} |",
                        result.ops_per_sec(),
                        result.mb_per_sec(),
                        result.batch_latency_us.value_at_quantile(0.5),
                        result.batch_latency_us.value_at_quantile(0.99)
                    );
                }
                let plain = results[3].ops_per_sec();
                for result in &results[..3] {
                    print!(" {:>6.2}", result.ops_per_sec() / plain);
                }
                println!();
                for (result, implementation) in results.iter().zip(implementations).take(3) {
                    let label = implementation.map_or("plain", Durability::label);
                    drains.push(compactions_line(batch, label, result));
                }
            }
            Err(error) => {
                failure = Some(format!("batch {batch}: {error}"));
                break;
            }
        }
    }
    println!();
    println!("p50/p99: per batch, from its first write to its acknowledgement; ratio: ops/s ÷ plain ops/s.");
    for line in drains {
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    match failure {
        Some(message) => Err(message),
        None => Ok(()),
    }
}

/// Hash-chained prepares for ops 1..=count with deterministic bodies.
fn prepares(count: usize, body_bytes: usize) -> (Vec<Header>, Vec<Vec<u8>>) {
    let mut headers = Vec::with_capacity(count);
    let mut bodies = Vec::with_capacity(count);
    let mut parent = 0u128;
    for op in 1..=count as u64 {
        let body: Vec<u8> = (0..body_bytes).map(|i| (op as usize).wrapping_mul(31).wrapping_add(i) as u8).collect();
        let mut header = Header::new(Command::Prepare, CLUSTER);
        header.namespace = NAMESPACE;
        header.op = op;
        header.parent = parent;
        header.operation = Operation::SendMessages;
        header.set_checksums(&body);
        parent = header.checksum;
        headers.push(header);
        bodies.push(body);
    }
    (headers, bodies)
}

/// The journal column: `write_messages` (as the node writes a turn's
/// prepares), then `sync` or `flush`, and a
/// compaction whenever a checkpoint interval of ops is live, as a replica
/// would: in the loop (`drain`), or staged in the loop and installed beside
/// the appends (`Durability::Flush`).
async fn run_journal(plan: &Plan, batch: usize, durability: Durability) -> Result<RunResult, String> {
    let io = RealIo::new();
    let dir = plan.dir.join(format!("journal-{batch}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    warm_up_realio(&io, plan).await?;
    // Untimed: create preallocates the journal and its spare.
    let mut journal =
        PrepareJournal::create(&io, &dir, plan.config).await.map_err(|e| format!("create journal: {e}"))?;
    let interval_ops = drain_interval_ops(plan, batch);
    let mut meter = Meter::new(plan.run_budget);
    // Batches written but not acknowledged yet: (started, end index, bytes).
    let mut unacknowledged: VecDeque<(Instant, usize, usize, u64)> = VecDeque::new();
    let mut acknowledged_op_max = 0u64;
    let mut install: Option<Install> = None;
    let mut next = 0;
    while next < plan.entries.len() && !meter.out_of_time() {
        let end = (next + batch).min(plan.entries.len());
        if let Some(pending) = install.as_mut()
            && pending.done.is_none()
            && plan.headers[end - 1].op > journal.snapshot_op() + plan.config.slot_count
        {
            // Past the old file's live window the batch waits for the install.
            let waited = Instant::now();
            pending.done = Some((&mut pending.future).await);
            meter.compactions.stall_time += waited.elapsed();
            meter.compactions.install_waits += 1;
        }
        end_install_if_done(&mut journal, &mut meter, &mut install)?;
        let batch_started = Instant::now();
        let messages: Vec<&Message> = plan.messages[next..end].iter().collect();
        beside(journal.write_messages(&messages), &mut install).await.map_err(|e| format!("write: {e}"))?;
        let bytes: u64 = (next..end).map(|index| plan.entries[index].len() as u64).sum();
        unacknowledged.push_back((batch_started, next, end, bytes));
        match durability {
            Durability::Sync => journal.sync().await.map_err(|e| format!("sync: {e}"))?,
            Durability::FlushDrain | Durability::Flush => {
                beside(journal.flush(), &mut install).await.map_err(|e| format!("flush: {e}"))?;
            }
        }
        acknowledge(&journal, plan, &mut unacknowledged, &mut meter, &mut acknowledged_op_max);
        end_install_if_done(&mut journal, &mut meter, &mut install)?;
        let head = journal.op_max().expect("ops were appended");
        let due = head - journal.snapshot_op() >= interval_ops && acknowledged_op_max > journal.snapshot_op();
        if due && install.is_none() {
            // The checkpoint covers what is committed (acknowledged here).
            let started = Instant::now();
            if durability == Durability::Flush {
                let staged = journal.stage_drain(acknowledged_op_max).await.map_err(|e| format!("stage: {e}"))?;
                if let Some(staged) = staged {
                    install = Some(Install { started, future: Box::pin(staged.install()), done: None });
                }
            } else {
                journal.drain(acknowledged_op_max).await.map_err(|e| format!("drain: {e}"))?;
                meter.compactions.count += 1;
            }
            meter.compactions.stall_time += started.elapsed();
            // A drain rewrites what it carries with its ring copies.
            acknowledge(&journal, plan, &mut unacknowledged, &mut meter, &mut acknowledged_op_max);
        }
        next = end;
    }
    if let Some(pending) = install.as_mut()
        && pending.done.is_none()
    {
        pending.done = Some((&mut pending.future).await);
    }
    end_install_if_done(&mut journal, &mut meter, &mut install)?;
    if !unacknowledged.is_empty() {
        journal.sync().await.map_err(|e| format!("sync: {e}"))?;
        acknowledge(&journal, plan, &mut unacknowledged, &mut meter, &mut acknowledged_op_max);
    }
    assert!(unacknowledged.is_empty(), "every batch is acknowledged at the end");
    let result = meter.finish();
    // Spot-check the last acknowledged op, unless the last drain took it.
    let last_op = plan.headers[result.ops - 1].op;
    if last_op > journal.snapshot_op() {
        let (header, body) = journal.read(last_op).await.map_err(|e| format!("read back op {last_op}: {e}"))?;
        assert_eq!((header, body.as_slice()), (plan.headers[result.ops - 1], plan.bodies[result.ops - 1].as_slice()));
    }
    drop(journal);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result)
}

/// A staged compaction's install, running beside the appends.
struct Install {
    started: Instant,
    future: Pin<Box<dyn Future<Output = InstalledDrain>>>,
    /// Its outcome, once it ended, for `end_drain`.
    done: Option<InstalledDrain>,
}

/// Run `work` (a journal call) and poll a running install with it, as a
/// node polls its storage futures whenever its task wakes.
async fn beside<T>(work: impl Future<Output = T>, install: &mut Option<Install>) -> T {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        if let Some(pending) = install.as_mut()
            && pending.done.is_none()
            && let Poll::Ready(installed) = pending.future.as_mut().poll(cx)
        {
            pending.done = Some(installed);
        }
        work.as_mut().poll(cx)
    })
    .await
}

fn end_install_if_done(
    journal: &mut PrepareJournal<RealIo>,
    meter: &mut Meter,
    install: &mut Option<Install>,
) -> Result<(), String> {
    if install.as_ref().is_none_or(|pending| pending.done.is_none()) {
        return Ok(());
    }
    let Install { started, done, .. } = install.take().expect("checked");
    // The ops it releases are acknowledged by the caller's next
    // `acknowledge` (the journal reports them durable from now on).
    journal.end_drain(done.expect("checked")).map_err(|e| format!("install: {e}"))?;
    meter.compactions.count += 1;
    meter.compactions.window_time += started.elapsed();
    Ok(())
}

/// The production checkpoint interval, shortened where the batch is larger
/// than a replica's pipeline: the unacknowledged batch and the next one
/// must fit between the checkpoint and the end of the ring.
fn drain_interval_ops(plan: &Plan, batch: usize) -> u64 {
    plan.interval_ops.min(plan.config.slot_count - 2 * batch as u64)
}

/// Record every leading batch whose ops are all durable with their copies.
fn acknowledge(
    journal: &PrepareJournal<RealIo>,
    plan: &Plan,
    unacknowledged: &mut VecDeque<(Instant, usize, usize, u64)>,
    meter: &mut Meter,
    acknowledged_op_max: &mut u64,
) {
    while let Some(&(started, first, end, bytes)) = unacknowledged.front() {
        let last_op = plan.headers[end - 1].op;
        if !(plan.headers[first].op..=last_op).all(|op| journal.is_durable(op)) {
            break;
        }
        meter.record_batch(started, end - first, bytes);
        *acknowledged_op_max = last_op;
        unacknowledged.pop_front();
    }
}

/// Untimed RealIo write+fsync rounds on a scratch file.
async fn warm_up_realio(io: &RealIo, plan: &Plan) -> Result<(), String> {
    use shoal_vsr::io::{Io, IoFile, OpenMode};

    let path = plan.dir.join("realio-warmup");
    let file = io.open(&path, OpenMode::ReadWriteCreate).await.map_err(|e| e.to_string())?;
    let mut scratch = plan.entries[0].clone();
    for round in 0..WARMUP_ROUNDS {
        let (result, back) = file.write_all_at(scratch, plan.offsets[round % plan.offsets.len()]).await;
        scratch = back;
        result.map_err(|e| format!("warm-up write: {e}"))?;
        file.sync_data().await.map_err(|e| format!("warm-up fsync: {e}"))?;
    }
    drop(file);
    io.remove(&path).await.map_err(|e| e.to_string())
}

/// Write zeros over the whole file and fsync it: the journal's own
/// preallocation, so both columns overwrite allocated blocks.
fn zero_fill(file: &std::fs::File, size_bytes: u64) -> Result<(), String> {
    file.set_len(size_bytes).map_err(|e| e.to_string())?;
    let chunk = vec![0u8; ZERO_FILL_CHUNK_BYTES as usize];
    let mut offset = 0;
    while offset < size_bytes {
        let length = ZERO_FILL_CHUNK_BYTES.min(size_bytes - offset) as usize;
        file.write_all_at(&chunk[..length], offset).map_err(|e| format!("preallocate: {e}"))?;
        offset += length as u64;
    }
    file.sync_data().map_err(|e| e.to_string())
}

/// The baseline: std positional writes and `fdatasync`, blocking, same bytes
/// at the same offsets of an equally preallocated file.
fn run_baseline(plan: &Plan, batch: usize) -> Result<RunResult, String> {
    let path = plan.dir.join(format!("pwrite-{batch}"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    zero_fill(&file, plan.config.file_size_bytes())?;
    sync_dir(&plan.dir)?;

    let warmup_path = plan.dir.join("pwrite-warmup");
    let warmup = std::fs::File::create(&warmup_path).map_err(|e| e.to_string())?;
    for round in 0..WARMUP_ROUNDS {
        let offset = plan.offsets[round % plan.offsets.len()];
        warmup.write_all_at(&plan.entries[0], offset).map_err(|e| format!("warm-up: {e}"))?;
        warmup.sync_data().map_err(|e| format!("warm-up fsync: {e}"))?;
    }
    drop(warmup);
    std::fs::remove_file(&warmup_path).map_err(|e| e.to_string())?;

    let mut meter = Meter::new(plan.run_budget);
    let mut next = 0;
    while next < plan.entries.len() && !meter.out_of_time() {
        let end = (next + batch).min(plan.entries.len());
        let batch_started = Instant::now();
        let mut bytes = 0u64;
        for index in next..end {
            let entry = &plan.entries[index];
            file.write_all_at(entry, plan.offsets[index]).map_err(|e| format!("pwrite: {e}"))?;
            bytes += entry.len() as u64;
        }
        file.sync_data().map_err(|e| format!("fdatasync: {e}"))?;
        meter.record_batch(batch_started, end - next, bytes);
        next = end;
    }
    let result = meter.finish();
    drop(file);
    std::fs::remove_file(&path).map_err(|e| e.to_string())?;
    Ok(result)
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("fsync {}: {e}", dir.display()))
}

/// Most opens per mode (bounds the bench's run time and its sample vectors).
const OPEN_ROUNDS_MAX: usize = 100;

/// How `bench_open` opens the journal.
#[derive(Debug, Clone, Copy)]
enum OpenKind {
    /// `OpenMode::ReadOnly`: one recovery pass over what reads see, no writes.
    ReadOnly,
    /// `OpenMode::ReadWrite` with the file's pages cached (a restart).
    Writable,
    /// `OpenMode::ReadWrite` after the file's clean pages were dropped from
    /// the page cache (a start after a reboot reads everything from the device).
    WritableCold,
}

impl OpenKind {
    const ALL: [OpenKind; 3] = [OpenKind::ReadOnly, OpenKind::Writable, OpenKind::WritableCold];

    fn label(self) -> &'static str {
        match self {
            OpenKind::ReadOnly => "read-only",
            OpenKind::Writable => "writable",
            OpenKind::WritableCold => "writable, cold cache",
        }
    }
}

fn bench_open(args: &OpenArgs) -> Result<(), String> {
    if args.slots <= CHECKPOINT_RESERVED_SLOTS || args.slots > SLOT_COUNT_MAX {
        return Err(format!("--slots must be {}..={SLOT_COUNT_MAX}", CHECKPOINT_RESERVED_SLOTS + 1));
    }
    let entry_size_bytes = HEADER_SIZE_BYTES + args.body_bytes;
    if args.body_bytes == 0 || entry_size_bytes > args.message_size_max_bytes as usize {
        return Err("--body-bytes must be positive and fit --message-size-max-bytes with the header".to_string());
    }
    let prepares_max = (args.slots - CHECKPOINT_RESERVED_SLOTS) as usize;
    if args.prepares.is_empty() || args.prepares.iter().any(|&count| count > prepares_max) {
        return Err(format!("--prepares must each be 0..={prepares_max} (the slots less the reserved ones)"));
    }
    if args.rounds == 0 || args.rounds > OPEN_ROUNDS_MAX {
        return Err(format!("--rounds must be 1..={OPEN_ROUNDS_MAX}"));
    }
    let config = JournalConfig {
        slot_count: args.slots,
        message_size_max_bytes: args.message_size_max_bytes,
        cluster: CLUSTER,
        namespace: NAMESPACE,
    };
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("shoal-bench-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let runtime = build_runtime(args.io_driver).map_err(|e| e.to_string())?;
    println!(
        "shoal-bench open: {} slots of {} B (file {} MiB), bodies {} B, {} opens per mode; dir {}",
        config.slot_count,
        config.slot_size_bytes(),
        config.file_size_bytes() >> 20,
        args.body_bytes,
        args.rounds,
        dir.display()
    );
    println!("{:>9} | {:<22} | {:>10} {:>10}", "prepares", "open", "median ms", "max ms");
    println!("{}", "-".repeat(60));
    let result = args.prepares.iter().try_for_each(|&count| {
        let journal_dir = dir.join(format!("prepares-{count}"));
        runtime.block_on(fill_journal(&journal_dir, config, count, args.body_bytes))?;
        let mut samples: Vec<Vec<Duration>> = OpenKind::ALL.iter().map(|_| Vec::new()).collect();
        for _ in 0..args.rounds {
            for (kind, times) in OpenKind::ALL.iter().zip(samples.iter_mut()) {
                times.push(runtime.block_on(time_open(&journal_dir, config, *kind, count))?);
            }
        }
        for (kind, mut times) in OpenKind::ALL.iter().zip(samples) {
            times.sort();
            let median = times[times.len() / 2];
            let max = *times.last().expect("rounds >= 1");
            println!(
                "{count:>9} | {:<22} | {:>10.1} {:>10.1}",
                kind.label(),
                median.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            );
        }
        Ok::<(), String>(())
    });
    let removed = std::fs::remove_dir_all(&dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()));
    result.and(removed)
}

/// A new journal in `dir` holding `count` synced prepares of `body_bytes`.
async fn fill_journal(dir: &Path, config: JournalConfig, count: usize, body_bytes: usize) -> Result<(), String> {
    /// Prepares per write and sync while filling (untimed).
    const FILL_BATCH: usize = 16;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let io = RealIo::new();
    let mut journal = PrepareJournal::create(&io, dir, config).await.map_err(|e| format!("create journal: {e}"))?;
    let (headers, bodies) = prepares(count, body_bytes);
    let messages: Vec<Message> = headers.iter().zip(&bodies).map(|(h, b)| Message::new(*h, Rc::from(&b[..]))).collect();
    for chunk in messages.chunks(FILL_BATCH) {
        let batch: Vec<&Message> = chunk.iter().collect();
        journal.write_messages(&batch).await.map_err(|e| format!("write: {e}"))?;
        journal.sync().await.map_err(|e| format!("sync: {e}"))?;
    }
    Ok(())
}

/// One timed open of the journal in `dir`, checked to recover every prepare.
async fn time_open(dir: &Path, config: JournalConfig, kind: OpenKind, count: usize) -> Result<Duration, String> {
    use shoal_vsr::io::{Io, IoFile, OpenMode};

    let io = RealIo::new();
    if matches!(kind, OpenKind::WritableCold) {
        // Untimed: the file's pages leave the cache, as after a reboot.
        let path = shoal_vsr::journal::journal_path(dir, config.namespace);
        let file = io.open(&path, OpenMode::ReadWrite).await.map_err(|e| e.to_string())?;
        file.sync_data().await.map_err(|e| e.to_string())?;
        file.evict_clean_pages().await.map_err(|e| format!("evict: {e}"))?;
    }
    let mode = match kind {
        OpenKind::ReadOnly => OpenMode::ReadOnly,
        OpenKind::Writable | OpenKind::WritableCold => OpenMode::ReadWrite,
    };
    let started = Instant::now();
    let (journal, recovery) =
        PrepareJournal::open(&io, dir, config, mode).await.map_err(|e| format!("open {}: {e}", kind.label()))?;
    let elapsed = started.elapsed();
    if recovery.ops_recovered.len() != count || journal.op_max() != (count > 0).then_some(count as u64) {
        return Err(format!(
            "open {}: recovered {} prepares up to {:?}, wrote {count}",
            kind.label(),
            recovery.ops_recovered.len(),
            journal.op_max()
        ));
    }
    Ok(elapsed)
}
