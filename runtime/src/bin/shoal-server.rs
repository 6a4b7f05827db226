//! `shoal-server`: the process lifecycle of one replica, as a skeleton.
//!
//! Owns flag parsing, logging set-up, the signal handler and the shard
//! bootstrap. Each shard currently only runs until shutdown: no WAL, bus or
//! replica is wired in yet.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shoal_runtime::DriverChoice;
use shoal_runtime::bootstrap::{
    BootstrapConfig, JOIN_TIMEOUT_DEFAULT, Shutdown, install_signal_handler, run_shards, wait_for_shutdown,
};
use shoal_runtime::pinning::{CpuAllocation, CpuTopology};
use shoal_vsr::io::Io;

/// shoal-server: one replica of a shoal cluster.
///
/// SKELETON: this binary implements only the process lifecycle — it parses
/// flags, reads the CPU topology, spawns one pinned thread per shard (each with
/// its own compio runtime, io_uring or the polling fallback), and exits cleanly
/// on Ctrl-C (SIGINT/SIGTERM) or when any shard fails. It does not yet open a
/// WAL, accept connections or run VSR.
#[derive(Debug, Parser)]
#[command(
    name = "shoal-server",
    version,
    about = "shoal-server: one replica of a shoal cluster (SKELETON: process lifecycle only, no WAL/network/VSR yet)",
    long_about
)]
struct Args {
    /// Directory for this replica's data (WAL, superblock, partitions). Created if missing.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,

    /// This replica's index in the cluster (0-based, less than --replica-count).
    #[arg(long, default_value_t = 0)]
    replica: u8,

    /// Number of replicas in the cluster: 1, 3 or 5.
    #[arg(long, default_value_t = 1, value_parser = parse_replica_count)]
    replica_count: u8,

    /// sharding.cpu_allocation: `all`, a CPU list `0,2,5`, a range `0-3`, or `numa:N`.
    #[arg(long, default_value = "all")]
    cpu_allocation: CpuAllocation,

    /// Do not pin shard threads to their CPUs (shards still count one per CPU).
    #[arg(long)]
    no_pin: bool,

    /// compio driver: `auto` (io_uring, else polling), `io_uring` or `polling`.
    /// Defaults to $SHOAL_IO_DRIVER, else `auto`.
    #[arg(long)]
    io_driver: Option<DriverChoice>,

    /// Seconds the shards get, in total, to stop after shutdown is requested.
    #[arg(long, default_value_t = JOIN_TIMEOUT_DEFAULT.as_secs_f64())]
    shutdown_timeout_secs: f64,
}

fn parse_replica_count(text: &str) -> Result<u8, String> {
    match text.parse::<u8>() {
        Ok(count @ (1 | 3 | 5)) => Ok(count),
        _ => Err(format!("replica count must be 1, 3 or 5, not {text:?}")),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_thread_names(true)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("shoal-server: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<ExitCode, String> {
    if args.replica >= args.replica_count {
        return Err(format!(
            "--replica {} is out of range for --replica-count {}: use 0..{}",
            args.replica, args.replica_count, args.replica_count
        ));
    }
    if !(args.shutdown_timeout_secs.is_finite() && args.shutdown_timeout_secs > 0.0) {
        return Err("--shutdown-timeout-secs must be a positive number of seconds".to_string());
    }
    let driver = match args.io_driver {
        Some(driver) => driver,
        None => DriverChoice::from_env().map_err(|error| error.to_string())?,
    };
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|error| format!("cannot create --data-dir {}: {error}", args.data_dir.display()))?;
    let topology = CpuTopology::detect().map_err(|error| error.to_string())?;
    let cpus = topology.resolve(&args.cpu_allocation).map_err(|error| error.to_string())?;

    let shutdown = Shutdown::new();
    // Before any shard thread exists, so that every thread inherits the blocked mask.
    install_signal_handler(&shutdown).map_err(|error| error.to_string())?;

    tracing::info!(
        replica = args.replica,
        replica_count = args.replica_count,
        data_dir = %args.data_dir.display(),
        cpu_allocation = %args.cpu_allocation,
        shards = cpus.len(),
        ?driver,
        "starting shards (skeleton: shards idle until shutdown)"
    );
    let config = BootstrapConfig {
        pin: !args.no_pin,
        driver,
        join_timeout: Duration::from_secs_f64(args.shutdown_timeout_secs),
        ..BootstrapConfig::new(cpus)
    };
    let report = run_shards(config, shutdown, |context| async move {
        tracing::info!(
            shard_id = context.shard_id,
            cpu = ?context.cpu,
            driver = context.io.driver_name(),
            "shard running"
        );
        let started_ns = context.io.now_ns();
        wait_for_shutdown(&context.io, &context.shutdown).await;
        let ran_ms = (context.io.now_ns() - started_ns) / 1_000_000;
        tracing::info!(shard_id = context.shard_id, ran_ms, "shard stopped");
    })
    .map_err(|error| error.to_string())?;

    for failure in report.failures() {
        tracing::error!(shard_id = failure.shard_id, cpu = failure.cpu, exit = ?failure.exit, "shard failed");
    }
    if report.all_clean() {
        tracing::info!(join_ms = report.join_elapsed.map(|d| d.as_millis()), "all shards stopped; exiting");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(2))
    }
}
