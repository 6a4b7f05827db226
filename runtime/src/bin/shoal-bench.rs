//! `shoal-bench`: micro-benchmarks of the real runtime on the real disk.
//!
//! Owns measurement only: it writes into a scratch directory it creates and
//! removes, and never touches a replica's data directory.
//!
//! `journal`: append throughput with one fsync per batch of 1, 8 and 64
//! prepares, side by side with a plain `pwrite` + `fdatasync` loop writing the
//! same bytes at the same offsets. Without the `journal-bench` cargo feature
//! the shoal column is `realio-raw` (RealIo `write_all_at` + `sync_data`, the
//! I/O floor the journal builds on); with it, `vsr::journal::PrepareJournal`.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use shoal_runtime::{DriverChoice, RealIo, build_runtime};
use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, Header, Operation};

/// Bodies and slots above this are not what the journal bench is about.
const BODY_SIZE_MAX_BYTES: usize = 1 << 20;
/// Hard cap on prepares per run, so a run's file stays bounded (64 Ki × slot).
const PREPARES_PER_RUN_MAX: usize = 65_536;
/// Slots are rounded up to this, so every write starts on a page boundary.
#[cfg(not(feature = "journal-bench"))]
const SLOT_ALIGNMENT_BYTES: usize = 4096;
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
    #[arg(long, default_value_t = 16_384)]
    count: usize,
    /// Prepares per fsync, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    batches: Vec<usize>,
    /// Time budget for the whole benchmark, split evenly across runs; a run
    /// stops at its share or at --count prepares, whichever comes first.
    #[arg(long, default_value_t = TOTAL_BUDGET_SECS_DEFAULT)]
    seconds: f64,
    /// compio driver for the shoal column: auto, io_uring or polling.
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shoal-bench: {message}");
            ExitCode::from(1)
        }
    }
}

/// What every run of one benchmark shares.
#[derive(Debug)]
struct Plan {
    dir: PathBuf,
    slot_size_bytes: u64,
    /// File offset of entry `i` (op `i + 1`); the journal's layout when it is built in.
    offsets: Vec<u64>,
    file_size_bytes: u64,
    /// Encoded `[header][body]` of ops 1..=count, hash-chained.
    entries: Vec<Vec<u8>>,
    headers: Vec<Header>,
    bodies: Vec<Vec<u8>>,
    run_budget: Duration,
}

/// The result of one run.
#[derive(Debug)]
struct RunResult {
    ops: usize,
    bytes: u64,
    elapsed: Duration,
    batch_latency_us: Histogram<u64>,
}

impl RunResult {
    fn empty() -> RunResult {
        RunResult {
            ops: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            batch_latency_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds"),
        }
    }

    /// Sum of two rounds: ops, bytes and time add up, latencies pool.
    fn merge(mut self, other: RunResult) -> RunResult {
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.elapsed += other.elapsed;
        self.batch_latency_us.add(&other.batch_latency_us).expect("same histogram bounds");
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
}

impl Meter {
    fn new(budget: Duration) -> Meter {
        Meter {
            started: Instant::now(),
            budget,
            histogram: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds"),
            ops: 0,
            bytes: 0,
        }
    }

    fn out_of_time(&self) -> bool {
        self.started.elapsed() >= self.budget
    }

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
    if args.batches.is_empty() || args.batches.iter().any(|&b| b == 0 || b > args.count) {
        return Err("--batches must be positive and at most --count".to_string());
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err("--seconds must be positive".to_string());
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("shoal-bench-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;

    let entry_size_bytes = HEADER_SIZE_BYTES + args.body_bytes;
    let layout = layout(args.count, entry_size_bytes);
    let (headers, bodies) = prepares(args.count, args.body_bytes);
    let entries: Vec<Vec<u8>> = headers.iter().zip(&bodies).map(|(h, b)| h.encode_message(b)).collect();
    let runs = args.batches.len() * 2;
    let plan = Plan {
        dir: dir.clone(),
        slot_size_bytes: layout.slot_size_bytes,
        offsets: layout.offsets,
        file_size_bytes: layout.file_size_bytes,
        entries,
        headers,
        bodies,
        run_budget: Duration::from_secs_f64(args.seconds / (runs * ROUNDS) as f64),
    };

    let runtime = build_runtime(args.io_driver).map_err(|e| e.to_string())?;
    let driver = runtime.block_on(async { RealIo::new().driver_name() });
    println!(
        "shoal-bench journal: body {} B, entry {} B, slot {} B, {ROUNDS} alternating rounds of up to {} prepares \
         or {:.2} s per implementation and batch size, dir {}",
        args.body_bytes,
        entry_size_bytes,
        plan.slot_size_bytes,
        args.count,
        plan.run_budget.as_secs_f64(),
        dir.display()
    );
    println!("shoal column: {SHOAL_LABEL} ({SHOAL_DESCRIPTION}), compio driver {driver}");
    println!("baseline: pwrite (std FileExt::write_all_at) + File::sync_data, same bytes at the same offsets");
    println!();
    println!(
        "{:>5} | {:>10} {:>8} {:>8} {:>8} {:>8} | {:>10} {:>8} {:>8} {:>8} {:>8} | {:>7}",
        "batch", "ops/s", "MB/s", "p50 µs", "p99 µs", "ops", "ops/s", "MB/s", "p50 µs", "p99 µs", "ops", "ratio"
    );
    println!("{:>5} | {:^46} | {:^46} | {:>7}", "", SHOAL_LABEL, "pwrite+fdatasync", "ops/s");
    println!("{}", "-".repeat(5 + 3 + 46 + 3 + 46 + 3 + 7));

    let mut failure = None;
    for &batch in &args.batches {
        // Alternate the two implementations so that drift on a shared machine
        // (other builds, writeback) hits both columns alike.
        let mut shoal: Result<RunResult, String> = Ok(RunResult::empty());
        let mut baseline: Result<RunResult, String> = Ok(RunResult::empty());
        for _ in 0..ROUNDS {
            shoal = shoal.and_then(|total| Ok(total.merge(runtime.block_on(run_shoal(&plan, batch))?)));
            baseline = baseline.and_then(|total| Ok(total.merge(run_baseline(&plan, batch)?)));
        }
        match (shoal, baseline) {
            (Ok(shoal), Ok(baseline)) => {
                let row = |r: &RunResult| {
                    format!(
                        "{:>10.0} {:>8.2} {:>8} {:>8} {:>8}",
                        r.ops_per_sec(),
                        r.mb_per_sec(),
                        r.batch_latency_us.value_at_quantile(0.5),
                        r.batch_latency_us.value_at_quantile(0.99),
                        r.ops
                    )
                };
                println!(
                    "{batch:>5} | {} | {} | {:>7.2}",
                    row(&shoal),
                    row(&baseline),
                    shoal.ops_per_sec() / baseline.ops_per_sec()
                );
            }
            (Err(error), _) | (_, Err(error)) => {
                failure = Some(format!("batch {batch}: {error}"));
                break;
            }
        }
    }
    println!();
    println!("p50/p99 are per-batch latencies (writes + one fsync); ratio = {SHOAL_LABEL} ops/s ÷ baseline ops/s.");
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

fn slot_offset(plan: &Plan, index: usize) -> u64 {
    plan.offsets[index]
}

fn file_size_bytes(plan: &Plan) -> u64 {
    plan.file_size_bytes
}

/// Where each entry goes in the file.
#[derive(Debug)]
struct Layout {
    slot_size_bytes: u64,
    offsets: Vec<u64>,
    file_size_bytes: u64,
}

/// Without the journal: page-aligned slots from offset 0.
#[cfg(not(feature = "journal-bench"))]
fn layout(count: usize, entry_size_bytes: usize) -> Layout {
    let slot_size_bytes = (entry_size_bytes.div_ceil(SLOT_ALIGNMENT_BYTES) * SLOT_ALIGNMENT_BYTES) as u64;
    let offsets: Vec<u64> = (0..count as u64).map(|index| index * slot_size_bytes).collect();
    Layout { slot_size_bytes, offsets, file_size_bytes: count as u64 * slot_size_bytes }
}

/// With the journal: the journal's own layout (file header, `op % slot_count`),
/// so the baseline writes the same bytes at the same offsets.
#[cfg(feature = "journal-bench")]
fn layout(count: usize, entry_size_bytes: usize) -> Layout {
    let config = journal_config(count, entry_size_bytes);
    let offsets: Vec<u64> = (1..=count as u64).map(|op| config.slot_offset(op)).collect();
    Layout { slot_size_bytes: config.slot_size_bytes(), offsets, file_size_bytes: config.file_size_bytes() }
}

#[cfg(feature = "journal-bench")]
fn journal_config(count: usize, entry_size_bytes: usize) -> shoal_vsr::journal::JournalConfig {
    shoal_vsr::journal::JournalConfig {
        slot_count: count as u64,
        message_size_max_bytes: u32::try_from(entry_size_bytes).expect("bounded by BODY_SIZE_MAX_BYTES"),
        cluster: CLUSTER,
        namespace: NAMESPACE,
    }
}

#[cfg(not(feature = "journal-bench"))]
const SHOAL_LABEL: &str = "realio-raw";
#[cfg(not(feature = "journal-bench"))]
const SHOAL_DESCRIPTION: &str =
    "RealIo write_all_at + sync_data; build with --features journal-bench for PrepareJournal";

/// The shoal column without the journal: RealIo positional writes and one
/// `sync_data` per batch, on a preallocated file like the baseline's.
#[cfg(not(feature = "journal-bench"))]
async fn run_shoal(plan: &Plan, batch: usize) -> Result<RunResult, String> {
    use shoal_vsr::io::{Io, IoFile, OpenMode};

    let io = RealIo::new();
    let path = plan.dir.join(format!("realio-raw-{batch}"));
    let file = io.open(&path, OpenMode::ReadWriteCreate).await.map_err(|e| format!("open {}: {e}", path.display()))?;
    file.set_len(file_size_bytes(plan)).await.map_err(|e| e.to_string())?;
    file.sync_data().await.map_err(|e| e.to_string())?;
    io.sync_dir(&plan.dir).await.map_err(|e| e.to_string())?;

    warm_up_realio(&io, plan).await?;

    // Own the entries so each write can hand its buffer to the kernel and get it back.
    let mut entries = plan.entries.clone();
    let mut meter = Meter::new(plan.run_budget);
    let mut next = 0;
    while next < entries.len() && !meter.out_of_time() {
        let end = (next + batch).min(entries.len());
        let batch_started = Instant::now();
        let mut bytes = 0u64;
        for (index, slot) in entries.iter_mut().enumerate().take(end).skip(next) {
            let entry = std::mem::take(slot);
            bytes += entry.len() as u64;
            let (result, entry) = file.write_all_at(entry, slot_offset(plan, index)).await;
            *slot = entry;
            result.map_err(|e| format!("write: {e}"))?;
        }
        file.sync_data().await.map_err(|e| format!("fsync: {e}"))?;
        meter.record_batch(batch_started, end - next, bytes);
        next = end;
    }
    let result = meter.finish();
    // Spot-check durability of the last op written: the same bytes come back.
    let last = result.ops - 1;
    let (read, back) = file.read_exact_at(vec![0; plan.entries[last].len()], slot_offset(plan, last)).await;
    read.map_err(|e| format!("read back: {e}"))?;
    assert_eq!(back, plan.entries[last], "read back differs from what was written");
    let decoded = Header::decode(&back[..HEADER_SIZE_BYTES]).map_err(|e| format!("read back header: {e}"))?;
    assert_eq!(decoded, plan.headers[last]);
    assert_eq!(&back[HEADER_SIZE_BYTES..], &plan.bodies[last][..]);
    drop(file);
    io.remove(&path).await.map_err(|e| e.to_string())?;
    Ok(result)
}

#[cfg(feature = "journal-bench")]
const SHOAL_LABEL: &str = "journal";
#[cfg(feature = "journal-bench")]
const SHOAL_DESCRIPTION: &str = "vsr::journal::PrepareJournal append_batch (one write per batch) + sync";

/// The shoal column with the journal: `append` each prepare, `sync` once per batch.
///
/// Written against the PrepareJournal API agreed with its author
/// (`create` / `append` / `sync` / `read`); compiled only with the
/// `journal-bench` feature until that code is merged.
#[cfg(feature = "journal-bench")]
async fn run_shoal(plan: &Plan, batch: usize) -> Result<RunResult, String> {
    use shoal_vsr::journal::PrepareJournal;

    let io = RealIo::new();
    let dir = plan.dir.join(format!("journal-{batch}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = journal_config(plan.entries.len(), plan.entries[0].len());
    debug_assert_eq!(config.slot_offset(1), plan.offsets[0], "baseline and journal share the layout");
    warm_up_realio(&io, plan).await?;
    let mut journal = PrepareJournal::create(&io, &dir, config).await.map_err(|e| format!("create journal: {e}"))?;
    let mut meter = Meter::new(plan.run_budget);
    let mut next = 0;
    while next < plan.entries.len() && !meter.out_of_time() {
        let end = (next + batch).min(plan.entries.len());
        let batch_started = Instant::now();
        let mut bytes = 0u64;
        let prepares: Vec<(shoal_vsr::Header, &[u8])> =
            (next..end).map(|index| (plan.headers[index], plan.bodies[index].as_slice())).collect();
        journal.append_batch(&prepares).await.map_err(|e| format!("append: {e}"))?;
        bytes += (next..end).map(|index| plan.entries[index].len() as u64).sum::<u64>();
        journal.sync().await.map_err(|e| format!("sync: {e}"))?;
        meter.record_batch(batch_started, end - next, bytes);
        next = end;
    }
    let result = meter.finish();
    let last_op = plan.headers[result.ops - 1].op;
    journal.read(last_op).await.map_err(|e| format!("read back op {last_op}: {e}"))?;
    drop(journal);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result)
}

/// Untimed RealIo write+fsync rounds on a scratch file.
async fn warm_up_realio(io: &RealIo, plan: &Plan) -> Result<(), String> {
    use shoal_vsr::io::{Io, IoFile, OpenMode};

    let path = plan.dir.join("realio-warmup");
    let file = io.open(&path, OpenMode::ReadWriteCreate).await.map_err(|e| e.to_string())?;
    let mut scratch = plan.entries[0].clone();
    for round in 0..WARMUP_ROUNDS {
        let (result, back) = file.write_all_at(scratch, slot_offset(plan, round)).await;
        scratch = back;
        result.map_err(|e| format!("warm-up write: {e}"))?;
        file.sync_data().await.map_err(|e| format!("warm-up fsync: {e}"))?;
    }
    drop(file);
    io.remove(&path).await.map_err(|e| e.to_string())
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
    file.set_len(file_size_bytes(plan)).map_err(|e| e.to_string())?;
    file.sync_data().map_err(|e| e.to_string())?;
    sync_dir(&plan.dir)?;

    let warmup_path = plan.dir.join("pwrite-warmup");
    let warmup = std::fs::File::create(&warmup_path).map_err(|e| e.to_string())?;
    for round in 0..WARMUP_ROUNDS {
        warmup.write_all_at(&plan.entries[0], slot_offset(plan, round)).map_err(|e| format!("warm-up: {e}"))?;
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
            file.write_all_at(entry, slot_offset(plan, index)).map_err(|e| format!("pwrite: {e}"))?;
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
