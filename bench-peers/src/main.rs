//! `shoal-bench-peers`: the peer half of shoal's throughput table.
//!
//! Runs one workload (3-way replicated appends of 1 KiB messages one at a
//! time and pipelined, then reads) against each system, each a 3-node
//! cluster on loopback that this binary installs (as root), starts in a
//! temporary directory, measures and removes. Prints the table and writes it
//! as JSON and SVG under `target/bench/`.
//!
//! Owns the peer drivers (NATS JetStream, etcd) and shoal's slot in the
//! table. It is not a default workspace member and not run in CI: it needs
//! installs and minutes. Uses tokio and the peers' client crates, which
//! shoal's own crates must not.
// The real world the simulator stands in for: wall-clock time is the point.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod cluster;
mod copies_bench;
mod cpu;
mod error;
mod etcd;
mod install;
mod nats;
mod report;
mod server_bench;
mod shoal;
mod shoal_cluster;
mod system;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, ValueEnum};

use crate::error::{BenchError, Unavailable};
use crate::report::{Report, Row, Status, SystemRun};
use crate::system::{StartSettings, System};
use crate::workload::Workload;

/// Shard counts per replica of the shoal rows (the table has both).
const SHOAL_SHARDS_PER_REPLICA: [usize; 2] = [1, 2];
const REPORT_JSON_NAME: &str = "peers.json";
const REPORT_SVG_NAME: &str = "peers.svg";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SystemKey {
    /// shoal, 3 replicas with 1 and with 2 shards each (the shoal-server release build).
    Shoal,
    /// NATS JetStream, R=3, `sync_interval: always`.
    NatsFsync,
    /// NATS JetStream, R=3, default sync interval.
    NatsNoFsync,
    /// etcd, 3 members.
    Etcd,
}

impl SystemKey {
    fn as_str(self) -> &'static str {
        match self {
            SystemKey::Shoal => "shoal",
            SystemKey::NatsFsync => "nats-fsync",
            SystemKey::NatsNoFsync => "nats-no-fsync",
            SystemKey::Etcd => "etcd",
        }
    }
}

/// How every benchmark run starts, bounds and keeps its clusters (shared by
/// the peers table and `server`).
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Bound on a cluster becoming healthy after its processes start.
    #[arg(long, default_value_t = 30)]
    pub start_timeout_s: u64,
    /// Any single append or read failing to finish in this time fails the run.
    #[arg(long, default_value_t = 10)]
    pub op_timeout_s: u64,
    /// Where the clusters keep their data (must be disk-backed) [default: the temp dir].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the JSON report (and the peers plot) go [default: $CARGO_TARGET_DIR/bench or target/bench].
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Keep each cluster's data directory and server logs after its run.
    #[arg(long)]
    pub keep_data: bool,
}

/// Defaults keep a full run near 3 minutes on 2 cores (plus the build); raise the counts and
/// times for steadier numbers.
#[derive(Debug, Parser)]
#[command(
    name = "shoal-bench-peers",
    about = "Replicated-append table: shoal vs NATS JetStream vs etcd, 3 nodes on loopback"
)]
struct Args {
    /// Systems to run, in this order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "shoal,nats-fsync,nats-no-fsync,etcd")]
    systems: Vec<SystemKey>,
    #[arg(long, default_value_t = 1024)]
    message_size_bytes: usize,
    /// Unmeasured appends before the measured phases.
    #[arg(long, default_value_t = 200)]
    warmup_count: u64,
    /// One-at-a-time appends: stop after this many...
    #[arg(long, default_value_t = 50_000)]
    sequential_count: u64,
    /// ...or after this many seconds.
    #[arg(long, default_value_t = 20)]
    sequential_time_s: u64,
    /// Pipelined appends: stop after this many...
    #[arg(long, default_value_t = 500_000)]
    pipelined_count: u64,
    /// ...or after this many seconds.
    #[arg(long, default_value_t = 20)]
    pipelined_time_s: u64,
    /// Appends outstanding at once in the pipelined phase.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Messages per read request.
    #[arg(long, default_value_t = 1000)]
    read_batch: usize,
    /// Reads stop after this many seconds even if not everything was read.
    #[arg(long, default_value_t = 10)]
    read_time_s: u64,
    #[command(flatten)]
    run: RunArgs,
    /// The shoal-server binary (`cargo xtask bench peers` builds it) [default: $CARGO_TARGET_DIR/release/shoal-server].
    #[arg(long)]
    shoal_server: Option<PathBuf>,
    /// Load generator threads (1: a current-thread runtime, the least overhead per message).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

impl Args {
    fn workload(&self) -> Workload {
        Workload {
            message_size_bytes: self.message_size_bytes,
            warmup_count: self.warmup_count,
            sequential_count_max: self.sequential_count,
            sequential_duration_max: Duration::from_secs(self.sequential_time_s),
            pipelined_count_max: self.pipelined_count,
            pipelined_duration_max: Duration::from_secs(self.pipelined_time_s),
            in_flight_max: self.in_flight,
            read_batch_count: self.read_batch,
            read_duration_max: Duration::from_secs(self.read_time_s),
            append_timeout: Duration::from_secs(self.run.op_timeout_s),
            read_timeout: Duration::from_secs(self.run.op_timeout_s),
        }
    }
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some("copies") {
        return match copies_bench::main(&raw[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("shoal-bench-peers copies: {error}");
                ExitCode::from(1)
            }
        };
    }
    if raw.get(1).map(String::as_str) == Some("server") {
        return match server_bench::main(&raw[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("shoal-bench-peers server: {error}");
                ExitCode::from(1)
            }
        };
    }
    let args = Args::parse();
    let workload = args.workload();
    if let Err(message) = workload.validate() {
        eprintln!("shoal-bench-peers: {message}");
        return ExitCode::from(1);
    }
    let data_root = args.run.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let data_filesystem = match check_data_root(&data_root) {
        Ok(fs_type) => fs_type,
        Err(error) => {
            eprintln!("shoal-bench-peers: {error}");
            return ExitCode::from(1);
        }
    };
    let runtime = if args.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.client_threads).enable_all().build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("shoal-bench-peers: cannot build the tokio runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let load_average_1min_start = load_average_1min();
    let started = Instant::now();
    let started_unix_s = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let systems = runtime.block_on(async {
        tokio::select! {
            systems = run_all(&args, &workload, &data_root) => Some(systems),
            // Dropping `run_all` drops the running system, whose cluster guard
            // kills the servers and removes their data.
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    let Some(mut systems) = systems else {
        eprintln!("shoal-bench-peers: interrupted; servers stopped, data removed");
        return ExitCode::from(130);
    };
    report::fill_ratios_vs_shoal(&mut systems);
    let report = Report {
        machine: machine(&data_root, data_filesystem, load_average_1min_start),
        command: command_line("cargo xtask bench peers"),
        started_unix_s,
        duration_s: started.elapsed().as_secs_f64(),
        settings: report::Settings::of(&workload),
        systems,
    };
    println!("{}", report::render_table(&report));
    println!("{}", report::render_context(&report));
    let out_dir = args.run.out_dir.clone().unwrap_or_else(default_out_dir);
    match write_outputs(&report, &out_dir) {
        Ok(paths) => println!("wrote {}", paths.join(", ")),
        Err(error) => {
            eprintln!("shoal-bench-peers: {error}");
            return ExitCode::from(1);
        }
    }
    if report.systems.iter().any(|run| run.status == Status::Failed) { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

async fn run_all(args: &Args, workload: &Workload, data_root: &Path) -> Vec<SystemRun> {
    let mut runs = Vec::new();
    for &key in &args.systems {
        match key {
            SystemKey::Shoal => {
                for shards_per_replica_count in SHOAL_SHARDS_PER_REPLICA {
                    let mut shoal = shoal::Shoal::new(
                        shards_per_replica_count,
                        args.shoal_server.clone().unwrap_or_else(shoal_cluster::default_server_binary),
                        args.in_flight,
                        Duration::from_secs(args.run.op_timeout_s),
                    );
                    runs.push(run_system(&mut shoal, key, true, args, workload, data_root).await);
                }
            }
            SystemKey::NatsFsync | SystemKey::NatsNoFsync => {
                let sync = if key == SystemKey::NatsFsync { nats::NatsSync::Always } else { nats::NatsSync::Default };
                let mut nats = nats::Nats::new(sync);
                runs.push(run_system(&mut nats, key, false, args, workload, data_root).await);
            }
            SystemKey::Etcd => {
                let mut etcd = etcd::Etcd::default();
                runs.push(run_system(&mut etcd, key, false, args, workload, data_root).await);
            }
        }
    }
    runs
}

/// Install, start, measure and stop one system; every outcome is a row.
async fn run_system<S: System>(
    system: &mut S,
    key: SystemKey,
    is_reference: bool,
    args: &Args,
    workload: &Workload,
    data_root: &Path,
) -> SystemRun {
    let started = Instant::now();
    let mut run = SystemRun {
        system: system.name(),
        durability: system.durability(),
        is_reference,
        version: None,
        status: Status::Measured,
        reason: None,
        duration_s: 0.0,
        rows: Vec::new(),
    };
    eprintln!("== {} ({})", run.system, run.durability);
    match system.install() {
        Ok(found) => eprintln!("  {found}"),
        Err(unavailable) => {
            eprintln!("  {unavailable}");
            run.status = match unavailable {
                Unavailable::NotInstalled { .. } | Unavailable::NotBuilt { .. } => Status::Skipped,
                Unavailable::NotFoundAfterInstall { .. } | Unavailable::InstallFailed { .. } => Status::Failed,
            };
            run.reason = Some(unavailable.to_string());
            return run;
        }
    }
    let settings = StartSettings {
        dir: data_root.join(format!("shoal-bench-peers-{}-{}", std::process::id(), key.as_str())),
        timeout: Duration::from_secs(args.run.start_timeout_s),
        keep_dir: args.run.keep_data,
    };
    let measured = measure(system, key, workload, &settings).await;
    system.stop();
    run.version = Some(system.version());
    run.duration_s = started.elapsed().as_secs_f64();
    match measured {
        Ok(rows) => run.rows = rows,
        Err(error) => {
            eprintln!("  failed: {error}");
            run.status = Status::Failed;
            run.reason = Some(error.to_string());
        }
    }
    run
}

async fn measure<S: System>(
    system: &mut S,
    key: SystemKey,
    workload: &Workload,
    settings: &StartSettings,
) -> Result<Vec<Row>, BenchError> {
    let starting = Instant::now();
    system.start(settings).await?;
    eprintln!(
        "  healthy after {:.1} s: {} (pids {:?})",
        starting.elapsed().as_secs_f64(),
        system.version(),
        system.server_pids()
    );
    let clock_ticks_per_s = cpu::clock_ticks_per_s();
    let phases = workload::run(system, workload, key.as_str()).await?;
    Ok(phases.iter().map(|phase| Row::of(phase, workload, clock_ticks_per_s)).collect())
}

/// The data root must exist and sit on a disk: on tmpfs fsync is free and
/// the durability comparison would be void.
pub(crate) fn check_data_root(data_root: &Path) -> Result<String, BenchError> {
    std::fs::create_dir_all(data_root)
        .map_err(|source| BenchError::io("create the data directory", data_root, source))?;
    let fs_type = cluster::filesystem_type(data_root).unwrap_or_else(|| "unknown".to_owned());
    if cluster::fsync_is_free_on(&fs_type) {
        return Err(BenchError::DataDirWithoutDisk { path: data_root.display().to_string(), fs_type });
    }
    Ok(fs_type)
}

pub(crate) fn default_out_dir() -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench-peers lives in the workspace").join("target"),
        PathBuf::from,
    );
    target_dir.join("bench")
}

fn write_outputs(report: &Report, out_dir: &Path) -> Result<Vec<String>, BenchError> {
    std::fs::create_dir_all(out_dir)
        .map_err(|source| BenchError::io("create the output directory", out_dir, source))?;
    let mut written = Vec::new();
    for (name, contents) in
        [(REPORT_JSON_NAME, report::render_json(report)), (REPORT_SVG_NAME, report::render_svg(report))]
    {
        let path = out_dir.join(name);
        std::fs::write(&path, contents).map_err(|source| BenchError::io("write", &path, source))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

/// The command that reruns this measurement.
pub(crate) fn command_line(prefix: &str) -> String {
    rerun_command(prefix, std::env::args().skip(1))
}

/// `prefix` and `args`, without the `server` or `copies` mode word and the binary paths
/// xtask passes (the rerun command builds and passes them itself).
fn rerun_command(prefix: &str, args: impl IntoIterator<Item = String>) -> String {
    let mut command = prefix.to_owned();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) || arg == "server" || arg == "copies" {
            continue;
        }
        if arg == "--server-binary" || arg == "--shoal-server" {
            skip_value = true;
            continue;
        }
        command.push(' ');
        command.push_str(&arg);
    }
    command
}

/// First field of /proc/loadavg (0 if unreadable).
pub(crate) fn load_average_1min() -> f64 {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().next().and_then(|field| field.parse().ok()).unwrap_or(0.0)
}

fn machine(data_root: &Path, data_dir_filesystem: String, load_average_1min_start: f64) -> report::Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, model)| model.trim())
        })
        .unwrap_or("unknown")
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0);
    report::Machine {
        cpu_model,
        cores_count: std::thread::available_parallelism().map_or(0, usize::from),
        memory_gib: memory_kib as f64 / (1024.0 * 1024.0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        data_dir: data_root.display().to_string(),
        data_dir_filesystem,
        load_average_1min_start,
        load_average_1min_end: load_average_1min(),
    }
}

/// One line naming the machine, for reports that do not carry `report::Machine`.
pub(crate) fn machine_line() -> String {
    let machine = machine(&std::env::temp_dir(), String::new(), load_average_1min());
    format!(
        "{} ({} cores, {:.0} GiB, Linux {}), load average {:.1}",
        machine.cpu_model, machine.cores_count, machine.memory_gib, machine.kernel, machine.load_average_1min_start
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rerun_command_leaves_out_what_xtask_adds() {
        let args = ["server", "--server-binary", "/t/release/shoal-server", "--clients", "8"].map(String::from);
        assert_eq!(rerun_command("cargo xtask bench server", args), "cargo xtask bench server --clients 8");
        let args = ["--shoal-server", "/x", "--in-flight", "64"].map(String::from);
        assert_eq!(rerun_command("cargo xtask bench peers", args), "cargo xtask bench peers --in-flight 64");
    }
}
