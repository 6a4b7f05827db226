//! `shoal-server`: one replica process of a shoal cluster.
//!
//! Owns flag parsing, logging set-up, the signal handler, the shard bootstrap
//! and the start-up metadata handoff: shard 0 opens the metadata group's WAL
//! in `--data-dir` (superblock, checkpoint, journal; formatting an empty group
//! on first start), replays its committed prepares, and hands the encoded
//! catalogue to every other shard over single-shot channels; the others await
//! it and never open the WAL. Both sides poll the one shutdown flag, so a
//! shard 0 that fails first strands no peer. After the handoff every shard
//! runs its own node (`shoal_runtime::host`): shard 0 the metadata group, the
//! TCP bus and `GET /metrics`, each shard the partition groups hashed to it,
//! frames hopping between them through bounded inboxes, until shutdown.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use shoal_runtime::bootstrap::{
    BootstrapConfig, JOIN_TIMEOUT_DEFAULT, ShardContext, install_signal_handler, run_shards, wait_for_shutdown,
};
use shoal_runtime::bus::BusMetrics;
use shoal_runtime::config::{ConfigError, FileConfig, LogFormat, Overrides, ServerConfig};
use shoal_runtime::data_dir::{self, Identity, Require};
use shoal_runtime::host::{self, HostConfig};
use shoal_runtime::metrics::ServerMetrics;
use shoal_runtime::pinning::CpuTopology;
use shoal_runtime::{DriverChoice, RealIo, limits};
use shoal_shard::handoff::{
    HandoffError, MetadataGroup, OneShotReceiver, OneShotSender, await_snapshot, broadcast_snapshot, oneshot,
    replay_metadata_group,
};
use shoal_shard::lifecycle::ShutdownFlag;
use shoal_shard::owner_table::{ShardCount, ShardId};
use shoal_vsr::io::Io;
use shoal_vsr::sessions::CLIENT_SESSIONS_MAX;

/// Counts every allocation (`GET /metrics`: `shoal_process_allocations`,
/// `shoal_process_allocated_bytes`) for `cargo xtask bench copies`.
#[global_allocator]
static ALLOCATOR: shoal_runtime::alloc_count::CountingAllocator = shoal_runtime::alloc_count::CountingAllocator;

/// How long shard 0 runs before an injected `--test-fail-shard-zero` failure:
/// long enough for its peers to be waiting for the handoff.
const TEST_FAIL_DELAY_NS: u64 = 300_000_000;

/// shoal-server: one replica of a shoal cluster.
///
/// It parses flags, reads the CPU topology, spawns one pinned thread per shard
/// (each with its own compio runtime, io_uring or the polling fallback), has
/// shard 0 replay the metadata WAL in --data-dir and hand the catalogue to the
/// other shards, then serve the replica: every VSR group (metadata and each
/// partition) over the TCP bus to its peers and clients. It exits cleanly on
/// Ctrl-C (SIGINT/SIGTERM) or when any shard fails (a storage error stops the
/// replica: restart it from its disk). Shard 0 runs the metadata group and
/// holds every connection; each partition group runs on the shard its
/// namespace hashes to.
///
/// `shoal-server format ... DIR` creates a data dir with its identity;
/// `shoal-server start ...` runs a replica on a formatted dir only. Without a
/// subcommand it starts as before: the data dir is created if missing, and
/// its identity, if it has one, must match.
#[derive(Debug, Parser)]
#[command(
    name = "shoal-server",
    version,
    about = "shoal-server: one replica of a shoal cluster (VSR over TCP, one node per shard)",
    long_about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Subcommand>,
    #[command(flatten)]
    start: StartArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Subcommand {
    /// Create a replica's data dir: writes its identity (cluster, replica,
    /// replica count, format version) durably. Refuses a dir already formatted.
    Format(FormatArgs),
    /// Run a replica on a data dir made by `format`; refuses an unformatted
    /// dir, one of another cluster or replica, or a newer format.
    Start(Box<StartArgs>),
}

#[derive(Debug, clap::Args)]
struct FormatArgs {
    /// Cluster id (decimal u128) every replica of the cluster shares.
    #[arg(long)]
    cluster: u128,
    /// This replica's index (0-based, less than --replica-count).
    #[arg(long)]
    replica: u8,
    /// Number of replicas in the cluster: 1, 3 or 5.
    #[arg(long)]
    replica_count: u8,
    /// The data directory to create.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// This replica lost its disk and the cluster already exists: every
    /// group it formats in DIR starts by rejoining (it learns the view from
    /// its peers before it votes, so it cannot deny prepares it acknowledged
    /// before the loss). Recorded in DIR, so no start can forget it. Never
    /// use it for a new cluster: a group whose replicas all rejoin waits
    /// forever.
    #[arg(long)]
    rejoin: bool,
}

/// Every setting can come from --config FILE; a flag given here wins over the file.
#[derive(Debug, Clone, clap::Args)]
struct StartArgs {
    /// TOML config file (see deploy/shoal-0.toml); flags override its keys.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// storage.data_dir: this replica's data (identity, WAL, superblock, partitions).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// cluster.replica: this replica's index (0-based, less than the replica count). Default 0.
    #[arg(long)]
    replica: Option<u8>,

    /// cluster.id: the cluster id (decimal u128); a data dir of another cluster is refused. Default 0.
    #[arg(long)]
    cluster: Option<u128>,

    /// cluster.replica_count: number of replicas in the cluster, 1, 3 or 5. Default 1.
    #[arg(long)]
    replica_count: Option<u8>,

    /// cluster.replica_addresses: host:port of every replica, in replica order, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "ADDR,...")]
    replica_addresses: Option<Vec<String>>,

    /// network.client_address: host:port clients connect to.
    #[arg(long, value_name = "ADDR")]
    client_address: Option<String>,

    /// network.metrics_address: host:port serving metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_address: Option<String>,

    /// network.idle_timeout_ms: milliseconds a connection may sit with an incomplete hello or frame
    /// before it is closed (counted as idle_timeout). Default 10000.
    #[arg(long, value_name = "MS")]
    idle_timeout_ms: Option<u64>,

    /// sharding.cpu_allocation: `all`, a CPU list `0,2,5`, a range `0-3`, or `numa:N`. Default `all`.
    #[arg(long)]
    cpu_allocation: Option<String>,

    /// limits.message_size_max: the largest message in bytes, header included; the same on every replica.
    #[arg(long, value_name = "BYTES")]
    message_size_max: Option<u32>,

    /// limits.journal_slot_count: prepare journal slots per VSR group (a power of two).
    #[arg(long, value_name = "SLOTS")]
    journal_slot_count: Option<u64>,

    /// limits.checkpoint_interval_ops: ops between a partition group's checkpoints (the same on every
    /// replica; default: half the journal's slots; maximum: the slots less a view change's headers and a
    /// pipeline).
    #[arg(long, value_name = "OPS")]
    checkpoint_interval_ops: Option<u64>,

    /// limits.pipeline_prepares_max: prepares a partition group keeps in flight (1..=16, default 4); past it
    /// requests queue and are packed several to a prepare.
    #[arg(long, value_name = "PREPARES")]
    pipeline_prepares_max: Option<usize>,

    /// limits.scrub_bytes_per_second: bytes of partition log each shard reads back and checks per second
    /// (default 1 MiB; 0 turns the scrubber off); damage it finds stops the replica, whose restart salvages
    /// the log and fetches the rest from peers.
    #[arg(long, value_name = "BYTES")]
    scrub_bytes_per_second: Option<u64>,

    /// logging.format: `text` (default) or `json`.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,

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

impl StartArgs {
    fn config(&self) -> Result<ServerConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let flags = Overrides {
            cluster: self.cluster,
            replica: self.replica,
            replica_count: self.replica_count,
            replica_addresses: self.replica_addresses.clone(),
            client_address: self.client_address.clone(),
            metrics_address: self.metrics_address.clone(),
            idle_timeout_ms: self.idle_timeout_ms,
            data_dir: self.data_dir.clone(),
            cpu_allocation: self.cpu_allocation.clone(),
            message_size_max: self.message_size_max,
            journal_slot_count: self.journal_slot_count,
            checkpoint_interval_ops: self.checkpoint_interval_ops,
            pipeline_prepares_max: self.pipeline_prepares_max,
            scrub_bytes_per_second: self.scrub_bytes_per_second,
            log_format: self.log_format.clone(),
        };
        ServerConfig::resolve(file, flags)
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_thread_names(true).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    tracing::error!("{message}");
    eprintln!("shoal-server: {message}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (args, require) = match cli.command {
        Some(Subcommand::Format(format)) => {
            init_logging(LogFormat::Text);
            return match run_format(&format) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => fail(message),
            };
        }
        Some(Subcommand::Start(args)) => (*args, Require::Formatted),
        None => (cli.start, Require::MatchIfFormatted),
    };
    let config = match args.config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("shoal-server: {error}");
            return ExitCode::from(1);
        }
    };
    init_logging(config.log_format);
    match run(args, config, require) {
        Ok(code) => code,
        Err(message) => fail(message),
    }
}

fn run_format(args: &FormatArgs) -> Result<(), String> {
    if !matches!(args.replica_count, 1 | 3 | 5) {
        return Err(format!("--replica-count {} is not a cluster size: use 1, 3 or 5", args.replica_count));
    }
    if args.replica >= args.replica_count {
        return Err(format!(
            "--replica {} is out of range for --replica-count {}: use 0..{}",
            args.replica, args.replica_count, args.replica_count
        ));
    }
    let mut identity = Identity::new(args.cluster, args.replica, args.replica_count);
    if args.rejoin {
        identity = identity.rejoining();
    }
    data_dir::format(&args.dir, identity).map_err(|error| error.to_string())?;
    tracing::info!(
        dir = %args.dir.display(),
        cluster = args.cluster,
        replica = args.replica,
        replica_count = args.replica_count,
        rejoin = args.rejoin,
        "data dir formatted"
    );
    Ok(())
}

fn run(args: StartArgs, config: ServerConfig, require: Require) -> Result<ExitCode, String> {
    if !(args.shutdown_timeout_secs.is_finite() && args.shutdown_timeout_secs > 0.0) {
        return Err("--shutdown-timeout-secs must be a positive number of seconds".to_string());
    }
    let driver = match args.io_driver {
        Some(driver) => driver,
        None => DriverChoice::from_env().map_err(|error| error.to_string())?,
    };
    let expected = Identity::new(config.cluster, config.replica, config.replica_count);
    if require == Require::MatchIfFormatted {
        data_dir::create_dir_durable(&config.data_dir).map_err(|error| error.to_string())?;
    }
    let identity = data_dir::check(&config.data_dir, expected, require).map_err(|error| error.to_string())?;
    let topology = CpuTopology::detect().map_err(|error| error.to_string())?;
    let mut cpus = topology.resolve(&config.cpu_allocation).map_err(|error| error.to_string())?;
    if let Some(count) = args.test_shard_count {
        // Unpinned (clap enforces --no-pin), so a CPU may appear twice.
        cpus = (0..count).map(|index| cpus[index % cpus.len()]).collect();
    }

    let limit = limits::raise_open_files_limit(limits::descriptors_needed(cpus.len())).map_err(|e| e.to_string())?;
    if limit.short() {
        tracing::warn!(
            needed = limit.needed,
            hard = limit.hard,
            "open-file hard limit is below what a full catalogue and every connection need: raise it (LimitNOFILE={} in the unit, or ulimit -Hn {})",
            limit.needed,
            limit.needed
        );
    }
    tracing::info!(before = limit.before, now = limit.now, "open-file soft limit");

    let shutdown = ShutdownFlag::new();
    // Before any shard thread exists, so that every thread inherits the blocked mask.
    install_signal_handler(&shutdown).map_err(|error| error.to_string())?;

    tracing::info!(
        cluster = config.cluster,
        replica = config.replica,
        replica_count = config.replica_count,
        data_dir = %config.data_dir.display(),
        formatted = identity.is_some(),
        cpu_allocation = %config.cpu_allocation,
        shards = cpus.len(),
        ?driver,
        "starting shards"
    );
    let handoff = Arc::new(Handoff::new(cpus.len()));
    let data_dir = Arc::new(config.data_dir.clone());
    let fail_shard_zero = args.test_fail_shard_zero.clone();
    let metrics_address = config.metrics_address;
    let rejoining = identity.is_some_and(|identity| identity.rejoining);
    let host = host_config(&config, rejoining)?;
    // The replay recovers the session table the running metadata replica
    // will hold, so both take its size from one place.
    let group = MetadataGroup {
        client_sessions_max: host.as_ref().map_or(CLIENT_SESSIONS_MAX, |host| host.client_sessions_max),
        ..MetadataGroup::new(config.cluster, config.replica, config.replica_count)
    };
    let process = match host {
        Some(host) => {
            let shard_count = ShardCount::new(cpus.len()).map_err(|error| error.to_string())?;
            let metrics = Arc::new(ServerMetrics::default());
            let bus_metrics = Arc::new(BusMetrics::default());
            Some(Arc::new(host::Process::new(host, shard_count, metrics, bus_metrics)))
        }
        None => None,
    };
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
        let process = process.clone();
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
                shard_zero_start(&context, &data_dir, group, senders, rejoining, fail_shard_zero.as_deref()).await?
            } else {
                let receiver = handoff.take_receiver(context.shard_id);
                peer_start(&context, receiver).await?
            };
            match (process, served) {
                // Every shard runs its node: the groups hashed to it (see `host`).
                (Some(process), true) => serve_replica(&context, process, metrics_address).await?,
                (None, true) => wait_for_shutdown(&context.io, &context.shutdown).await,
                (_, false) => {}
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

/// The replica's serving settings; `None` when the config names no client
/// address (the process then only replays the metadata WAL and idles).
fn host_config(config: &ServerConfig, rejoining: bool) -> Result<Option<HostConfig>, String> {
    let Some(client_address) = config.client_address else {
        tracing::warn!("network.client_address is not set: the replica does not serve (set it to run VSR)");
        return Ok(None);
    };
    if config.replica_addresses.len() != usize::from(config.replica_count) {
        return Err(format!(
            "cluster.replica_addresses lists {} addresses for {} replicas: list every replica's bus address",
            config.replica_addresses.len(),
            config.replica_count
        ));
    }
    Ok(Some(HostConfig {
        cluster: config.cluster,
        replica: config.replica,
        replica_count: config.replica_count,
        replica_addresses: config.replica_addresses.clone(),
        client_address,
        data_dir: config.data_dir.clone(),
        journal_slot_count: config.journal_slot_count,
        checkpoint_interval_ops: config.checkpoint_interval_ops,
        message_size_max_bytes: config.message_size_max_bytes,
        pipeline_prepares_max: config.pipeline_prepares_max,
        client_sessions_max: CLIENT_SESSIONS_MAX,
        idle_timeout: std::time::Duration::from_millis(config.idle_timeout_ms),
        rejoining,
        scrub_bytes_per_second: config.scrub_bytes_per_second,
    }))
}

/// Every shard after the handoff: run its node until shutdown; shard 0
/// also serves metrics (when configured) for the whole process. A node that
/// stops (storage error) fails the shard, and so the process: its supervisor
/// restarts it from the disk.
async fn serve_replica(
    context: &ShardContext,
    process: Arc<host::Process>,
    metrics_address: Option<std::net::SocketAddr>,
) -> Result<(), String> {
    let shard = ShardId(context.shard_id);
    let _metrics_task = match metrics_address {
        Some(address) if shard == ShardId::METADATA => {
            let listener = shoal_runtime::metrics::bind(address).await.map_err(|error| error.to_string())?;
            let registry = Arc::new(process.registry());
            tracing::info!(%address, "serving GET /metrics");
            Some(compio::runtime::spawn(shoal_runtime::metrics::serve(listener, registry)))
        }
        _ => None,
    };
    host::run(context.io.clone(), shard, process, context.shutdown.clone())
        .await
        .map_err(|error| format!("replica stopped on shard {}: {error}", shard.0))
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

/// Shard 0: open (or format) the metadata WAL, replay its committed prepares,
/// hand the catalogue to every peer. `Ok(false)`: shutdown came first, stop
/// without serving.
async fn shard_zero_start(
    context: &ShardContext,
    data_dir: &Path,
    group: MetadataGroup,
    senders: Peers,
    rejoining: bool,
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
    if rejoining {
        host::format_metadata_rejoining(&context.io, data_dir, group.cluster, group.replica)
            .await
            .map_err(|error| format!("shard 0 cannot format the rejoining metadata group: {error}"))?;
    }
    let replay = replay_metadata_group(&context.io, data_dir, group, ShardId::METADATA)
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
