//! `shoal-server`: the process lifecycle of one replica, as a skeleton.
//!
//! Owns flag parsing, logging set-up, the signal handler, the shard bootstrap
//! and the start-up metadata handoff: shard 0 opens the metadata group's WAL
//! in `--data-dir` (superblock, checkpoint, journal; formatting an empty group
//! on first start), replays its committed prepares, and hands the encoded
//! catalogue to every other shard over single-shot channels; the others await
//! it and never open the WAL. Both sides poll the one shutdown flag, so a
//! shard 0 that fails first strands no peer. After the handoff each shard runs
//! until shutdown: no bus or replica is wired in yet.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use shoal_runtime::bootstrap::{
    BootstrapConfig, JOIN_TIMEOUT_DEFAULT, ShardContext, install_signal_handler, run_shards, wait_for_shutdown,
};
use shoal_runtime::pinning::{CpuAllocation, CpuTopology};
use shoal_runtime::{DriverChoice, RealIo};
use shoal_shard::handoff::{
    HandoffError, OneShotReceiver, OneShotSender, await_snapshot, broadcast_snapshot, oneshot, replay_metadata,
};
use shoal_shard::lifecycle::ShutdownFlag;
use shoal_shard::owner_table::ShardId;
use shoal_vsr::io::Io;

/// How long shard 0 runs before an injected `--test-fail-shard-zero` failure:
/// long enough for its peers to be waiting for the handoff.
const TEST_FAIL_DELAY_NS: u64 = 300_000_000;

/// shoal-server: one replica of a shoal cluster.
///
/// SKELETON: this binary implements only the process lifecycle — it parses
/// flags, reads the CPU topology, spawns one pinned thread per shard (each with
/// its own compio runtime, io_uring or the polling fallback), has shard 0
/// replay the metadata WAL in --data-dir and hand the catalogue to the other
/// shards, and exits cleanly on Ctrl-C (SIGINT/SIGTERM) or when any shard
/// fails. It does not yet accept connections or run VSR.
#[derive(Debug, Parser)]
#[command(
    name = "shoal-server",
    version,
    about = "shoal-server: one replica of a shoal cluster (SKELETON: process lifecycle, metadata WAL replay and handoff only, no network/VSR yet)",
    long_about
)]
struct Args {
    /// Directory for this replica's data (WAL, superblock, partitions). Created if missing.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,

    /// This replica's index in the cluster (0-based, less than --replica-count).
    #[arg(long, default_value_t = 0)]
    replica: u8,

    /// Cluster id (decimal u128): every WAL and superblock in --data-dir
    /// belongs to it, and one of another cluster is refused.
    #[arg(long, default_value_t = 0)]
    cluster: u128,

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

    /// Tests only: make shard 0 fail (`panic` or `error`) before the metadata
    /// handoff, to prove its peers are not stranded.
    #[arg(long, hide = true, value_parser = ["panic", "error"])]
    test_fail_shard_zero: Option<String>,

    /// Tests only: run this many shards on the selected CPUs (cycling through
    /// them), so a 2-core machine can test a 4-shard handoff. Needs --no-pin.
    #[arg(long, hide = true, requires = "no_pin")]
    test_shard_count: Option<usize>,
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
    let mut cpus = topology.resolve(&args.cpu_allocation).map_err(|error| error.to_string())?;
    if let Some(count) = args.test_shard_count {
        // Unpinned (clap enforces --no-pin), so a CPU may appear twice.
        cpus = (0..count).map(|index| cpus[index % cpus.len()]).collect();
    }

    let shutdown = ShutdownFlag::new();
    // Before any shard thread exists, so that every thread inherits the blocked mask.
    install_signal_handler(&shutdown).map_err(|error| error.to_string())?;

    tracing::info!(
        replica = args.replica,
        replica_count = args.replica_count,
        data_dir = %args.data_dir.display(),
        cpu_allocation = %args.cpu_allocation,
        shards = cpus.len(),
        ?driver,
        "starting shards (skeleton: metadata handoff, then idle until shutdown)"
    );
    let handoff = Arc::new(Handoff::new(cpus.len()));
    let data_dir = Arc::new(args.data_dir.clone());
    let group = MetadataGroup { cluster: args.cluster, replica: args.replica };
    let fail_shard_zero = args.test_fail_shard_zero.clone();
    let config = BootstrapConfig {
        pin: !args.no_pin,
        driver,
        join_timeout: Duration::from_secs_f64(args.shutdown_timeout_secs),
        ..BootstrapConfig::new(cpus)
    };
    let report = run_shards(config, shutdown, move |context| {
        let handoff = handoff.clone();
        let data_dir = data_dir.clone();
        let fail_shard_zero = fail_shard_zero.clone();
        async move {
            tracing::info!(
                shard_id = context.shard_id,
                cpu = ?context.cpu,
                driver = context.io.driver_name(),
                "shard running"
            );
            let started_ns = context.io.now_ns();
            let served = if context.shard_id == ShardId::METADATA.0 {
                let senders = handoff.take_senders();
                shard_zero_start(&context, &data_dir, group, senders, fail_shard_zero.as_deref()).await?
            } else {
                let receiver = handoff.take_receiver(context.shard_id);
                peer_start(&context, receiver).await?
            };
            if served {
                wait_for_shutdown(&context.io, &context.shutdown).await;
            }
            let ran_ms = (context.io.now_ns() - started_ns) / 1_000_000;
            tracing::info!(shard_id = context.shard_id, ran_ms, "shard stopped");
            Ok(())
        }
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

type Bundle = Vec<u8>;
/// Shard 0's ends of the handoff channels, one per peer.
type Peers = Vec<(ShardId, OneShotSender<Bundle>)>;

/// The single-shot channels of the start-up handoff, one per peer shard,
/// parked here until each shard thread takes its end.
#[derive(Debug)]
struct Handoff {
    senders: Mutex<Option<Peers>>,
    /// Indexed by shard id; shard 0's entry is always `None`.
    receivers: Mutex<Vec<Option<OneShotReceiver<Bundle>>>>,
}

impl Handoff {
    fn new(shards_count: usize) -> Handoff {
        let mut senders = Vec::with_capacity(shards_count.saturating_sub(1));
        let mut receivers = vec![None];
        for shard_id in 1..shards_count {
            let (sender, receiver) = oneshot();
            senders.push((ShardId(u16::try_from(shard_id).expect("bounded by check_shards_count")), sender));
            receivers.push(Some(receiver));
        }
        Handoff { senders: Mutex::new(Some(senders)), receivers: Mutex::new(receivers) }
    }

    /// Shard 0's senders; taken exactly once.
    fn take_senders(&self) -> Peers {
        let mut senders = self.senders.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        senders.take().expect("shard 0 takes the handoff senders once")
    }

    /// A peer's receiver; taken exactly once.
    fn take_receiver(&self, shard_id: u16) -> OneShotReceiver<Bundle> {
        assert_ne!(shard_id, ShardId::METADATA.0);
        let mut receivers = self.receivers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        receivers[usize::from(shard_id)].take().expect("each peer takes its handoff receiver once")
    }
}

/// Which metadata group shard 0 replays.
#[derive(Debug, Clone, Copy)]
struct MetadataGroup {
    cluster: u128,
    replica: u8,
}

/// Shard 0: open (or format) the metadata WAL, replay its committed prepares,
/// hand the catalogue to every peer. `Ok(false)`: shutdown came first, stop
/// without serving.
async fn shard_zero_start(
    context: &ShardContext,
    data_dir: &Path,
    group: MetadataGroup,
    senders: Peers,
    fail: Option<&str>,
) -> Result<bool, String> {
    if let Some(fail) = fail {
        context.io.sleep(TEST_FAIL_DELAY_NS).await;
        tracing::warn!(fail, "injected shard 0 failure before the metadata handoff (--test-fail-shard-zero)");
        if fail == "panic" {
            panic!("injected shard 0 panic before the metadata handoff");
        }
        return Err("injected shard 0 error before the metadata handoff".to_string());
    }
    let replay = replay_metadata(&context.io, data_dir, group.cluster, group.replica, ShardId::METADATA)
        .await
        .map_err(|error| format!("shard 0 cannot replay the metadata WAL: {error}"))?;
    let state = &replay.state;
    let bundle = state.encode();
    tracing::info!(
        dir = %data_dir.display(),
        created = replay.created,
        checkpoint_op = replay.checkpoint_op,
        commit = replay.commit,
        ops_replayed = replay.ops_replayed,
        requests_rejected = replay.requests_rejected,
        ops_uncommitted = replay.ops_uncommitted,
        streams = state.streams().len(),
        topics = state.streams().values().map(|stream| stream.topics.len()).sum::<usize>(),
        partitions = state.partition_namespaces().len(),
        bundle_bytes = bundle.len(),
        peers = senders.len(),
        "metadata WAL replayed; handing the catalogue to the other shards"
    );
    match broadcast_snapshot(&context.io, &bundle, &senders, &context.shutdown).await {
        Ok(()) => {
            tracing::info!(peers = senders.len(), "metadata handoff complete");
            Ok(true)
        }
        Err(HandoffError::ShutDown) => Ok(false),
        // A peer that saw the shutdown first and left is not a failure.
        Err(error) if context.shutdown.is_requested() => {
            tracing::info!("shutdown before the metadata handoff completed ({error}); stopping");
            Ok(false)
        }
        Err(error) => Err(format!("shard 0 metadata handoff failed: {error}")),
    }
}

/// A peer: wait for shard 0's bundle. `Ok(false)`: shutdown came first.
async fn peer_start(context: &ShardContext, receiver: OneShotReceiver<Bundle>) -> Result<bool, String> {
    tracing::info!(shard_id = context.shard_id, "awaiting the metadata snapshot from shard 0");
    match await_snapshot::<RealIo>(&context.io, &receiver, &context.shutdown).await {
        Ok(state) => {
            tracing::info!(
                shard_id = context.shard_id,
                streams = state.streams().len(),
                partitions = state.partition_namespaces().len(),
                "received the metadata snapshot"
            );
            Ok(true)
        }
        Err(HandoffError::ShutDown) => {
            tracing::info!(shard_id = context.shard_id, "shutdown before the metadata handoff; stopping");
            Ok(false)
        }
        Err(error) if context.shutdown.is_requested() => {
            tracing::info!(
                shard_id = context.shard_id,
                "shutdown before the metadata handoff completed ({error}); stopping"
            );
            Ok(false)
        }
        Err(error) => Err(format!("shard {} metadata handoff failed: {error}", context.shard_id)),
    }
}
