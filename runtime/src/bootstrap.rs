//! Process lifecycle: spawn one pinned OS thread per shard, each with its own
//! compio runtime, and shut them all down together.
//!
//! Owns the supervisor that watches the shards, the SIGINT/SIGTERM handler
//! and the bounded join. The shutdown flag itself is the shard crate's
//! `ShutdownFlag` (an `Arc<AtomicBool>`): one flag for signals, shard panics,
//! shard failures and failed spawns, shared with the shard-side code (the
//! metadata handoff polls the same flag). Must not know what a shard does: the
//! shard body is a closure the caller passes in, and it must poll the flag
//! (see `wait_for_shutdown`).
//!
//! Rules:
//! - A shard that panics, returns an error, whose runtime cannot be built, or
//!   whose thread cannot be pinned flips the flag: the whole process shuts
//!   down, never half of it.
//! - A thread that cannot be spawned flips the flag too; no further shard is
//!   spawned and the ones already running are told to stop.
//! - A shard that returns `Ok` does not stop the others.
//! - After the flag flips, survivors get one overall deadline (`join_timeout`),
//!   measured once: the wait is bounded by the slowest shard, not N × timeout.
//!   A shard still running at the deadline is reported `Stuck` and left behind;
//!   the process exits without it.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::pinning::{AllocationError, TopologyError, check_shards_count, pin_current_thread};
use crate::real_io::{DriverChoice, RealIo, build_runtime, panic_message};
use shoal_shard::lifecycle::ShutdownFlag;
use shoal_vsr::io::Io;

/// How long survivors get, in total, to stop after the flag flips.
pub const JOIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// How often the supervisor looks at the flag while no shard reports.
const SUPERVISOR_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How often `wait_for_shutdown` looks at the flag, in nanoseconds of `Io` time.
pub const SHUTDOWN_POLL_INTERVAL_NS: u64 = 10_000_000;

/// Flip `shutdown` and log why, once: only the call that finds the flag
/// still clear logs (a racing second caller may log too; harmless).
pub fn request_shutdown(shutdown: &ShutdownFlag, reason: &str) {
    if !shutdown.is_requested() {
        tracing::info!(reason, "shutdown requested");
    }
    shutdown.request();
}

/// Await until the flag flips, looking every `SHUTDOWN_POLL_INTERVAL_NS`.
pub async fn wait_for_shutdown<I: Io>(io: &I, shutdown: &ShutdownFlag) {
    while !shutdown.is_requested() {
        io.sleep(SHUTDOWN_POLL_INTERVAL_NS).await;
    }
}

/// What one shard's body receives.
#[derive(Debug, Clone)]
pub struct ShardContext {
    pub shard_id: u16,
    pub shards_count: u16,
    /// The CPU the thread is pinned to; `None` when pinning is off.
    pub cpu: Option<usize>,
    pub shutdown: ShutdownFlag,
    pub io: RealIo,
}

/// How to start the shards.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// One shard per entry, shard `i` on `cpus[i]` (from `CpuTopology::resolve`).
    pub cpus: Vec<usize>,
    /// Pin each thread to its CPU. Off only for tests on busy machines.
    pub pin: bool,
    pub driver: DriverChoice,
    pub join_timeout: Duration,
    /// Fault injection: pretend the thread of this shard cannot be spawned.
    /// `None` in production; the tests use it to prove partial spawn failure
    /// shuts the process down.
    pub fail_spawn_of_shard: Option<u16>,
}

impl BootstrapConfig {
    pub fn new(cpus: Vec<usize>) -> BootstrapConfig {
        BootstrapConfig {
            cpus,
            pin: true,
            driver: DriverChoice::Auto,
            join_timeout: JOIN_TIMEOUT_DEFAULT,
            fail_spawn_of_shard: None,
        }
    }
}

/// Start-up failed before any shard ran.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Allocation(#[from] AllocationError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(
        "cannot install the SIGINT/SIGTERM handler ({source}); refusing to start a server that \
         Ctrl-C could not stop cleanly"
    )]
    SignalHandler { source: std::io::Error },
}

/// How one shard ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardExit {
    /// The body returned `Ok`.
    Clean,
    /// The body returned an error (e.g. shard 0 could not open the metadata).
    Failed {
        message: String,
    },
    Panicked {
        message: String,
    },
    /// Its compio runtime could not be built.
    RuntimeFailed {
        message: String,
    },
    PinFailed {
        cpu: usize,
        message: String,
    },
    /// Its thread could not be started: its own spawn failed.
    NotSpawned {
        message: String,
    },
    /// Never started because shutdown was already requested: a signal during
    /// start-up, or an earlier shard's failure. Not a failure of its own; an
    /// earlier failure is reported by the shard that failed, so a SIGTERM
    /// during start-up still exits 0.
    SkippedByShutdown,
    /// Still running at the join deadline; left behind.
    Stuck,
}

impl ShardExit {
    pub fn is_clean(&self) -> bool {
        matches!(self, ShardExit::Clean | ShardExit::SkippedByShutdown)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardReport {
    pub shard_id: u16,
    pub cpu: usize,
    pub exit: ShardExit,
}

/// The outcome of `run_shards`, one report per shard in shard order.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub shards: Vec<ShardReport>,
    /// Time from the flag flipping to the last survivor joining (or the deadline).
    pub join_elapsed: Option<Duration>,
}

impl RunReport {
    pub fn all_clean(&self) -> bool {
        self.shards.iter().all(|shard| shard.exit.is_clean())
    }

    pub fn failures(&self) -> impl Iterator<Item = &ShardReport> {
        self.shards.iter().filter(|shard| !shard.exit.is_clean())
    }
}

/// Spawn one thread per CPU in `config.cpus`, run `body` on each inside its
/// own compio runtime, and return once every shard has ended or, after the
/// flag flipped, the join deadline has passed.
///
/// Call `install_signal_handler` first, from the main thread, so that the
/// shard threads inherit the blocked signal mask.
/// `body` returns `Err(message)` for a failure that is not a bug (a corrupt
/// file, a peer that never answered): like a panic, it stops the process.
pub fn run_shards<F, Fut>(config: BootstrapConfig, shutdown: ShutdownFlag, body: F) -> Result<RunReport, BootstrapError>
where
    F: Fn(ShardContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    let shards_count = check_shards_count(config.cpus.len())?;
    let body = Arc::new(body);
    let (report_tx, report_rx) = mpsc::channel::<(u16, ShardExit)>();
    let mut exits: Vec<Option<ShardExit>> = vec![None; config.cpus.len()];
    let mut threads: Vec<Option<std::thread::JoinHandle<()>>> = Vec::with_capacity(config.cpus.len());

    for (index, &cpu) in config.cpus.iter().enumerate() {
        let shard_id = u16::try_from(index).expect("bounded by check_shards_count");
        if shutdown.is_requested() {
            // An earlier shard already failed (or Ctrl-C arrived): start no more.
            exits[index] = Some(ShardExit::SkippedByShutdown);
            threads.push(None);
            continue;
        }
        let spawned = if config.fail_spawn_of_shard == Some(shard_id) {
            Err(std::io::Error::other("injected spawn failure"))
        } else {
            let context = ThreadStart {
                shard_id,
                shards_count,
                cpu,
                pin: config.pin,
                driver: config.driver,
                shutdown: shutdown.clone(),
            };
            let body = body.clone();
            let report_tx = report_tx.clone();
            std::thread::Builder::new().name(format!("shard-{shard_id}")).spawn(move || {
                let exit = run_one_shard(&context, &*body);
                if !exit.is_clean() {
                    request_shutdown(&context.shutdown, &format!("shard {shard_id} failed: {exit:?}"));
                }
                // The supervisor may already have given up on us; nothing to do then.
                let _ = report_tx.send((shard_id, exit));
            })
        };
        match spawned {
            Ok(handle) => threads.push(Some(handle)),
            Err(error) => {
                tracing::error!(shard_id, %error, "cannot spawn shard thread; shutting down");
                request_shutdown(&shutdown, &format!("spawn of shard {shard_id} failed: {error}"));
                exits[index] = Some(ShardExit::NotSpawned { message: error.to_string() });
                threads.push(None);
            }
        }
    }
    drop(report_tx);

    let mut pending = exits.iter().filter(|exit| exit.is_none()).count();
    let mut shutdown_at: Option<Instant> = None;
    while pending > 0 {
        if shutdown_at.is_none() && shutdown.is_requested() {
            shutdown_at = Some(Instant::now());
        }
        let Some(wait) = supervisor_wait(shutdown_at, Instant::now(), config.join_timeout) else {
            break;
        };
        match report_rx.recv_timeout(wait) {
            Ok((shard_id, exit)) => {
                let index = usize::from(shard_id);
                assert!(exits[index].is_none(), "shard {shard_id} reported twice");
                if !exit.is_clean() {
                    request_shutdown(&shutdown, &format!("shard {shard_id} failed"));
                }
                tracing::debug!(shard_id, ?exit, "shard ended");
                exits[index] = Some(exit);
                if let Some(handle) = threads[index].take() {
                    // It has sent its report, so it is returning; join is immediate.
                    let _ = handle.join();
                }
                pending -= 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let join_elapsed = shutdown_at.map(|at| at.elapsed());

    let shards: Vec<ShardReport> = exits
        .into_iter()
        .enumerate()
        .map(|(index, exit)| ShardReport {
            shard_id: u16::try_from(index).expect("bounded"),
            cpu: config.cpus[index],
            exit: exit.unwrap_or(ShardExit::Stuck),
        })
        .collect();
    for shard in shards.iter().filter(|shard| shard.exit == ShardExit::Stuck) {
        tracing::error!(shard_id = shard.shard_id, "shard did not stop before the join deadline; leaving it behind");
    }
    debug_assert_eq!(shards.len(), config.cpus.len());
    Ok(RunReport { shards, join_elapsed })
}

/// How long the supervisor may wait for the next shard report at `now`, or
/// `None` once the join deadline has passed. The deadline is one for all
/// survivors: it runs from the moment the flag flipped (`shutdown_at`), so
/// several stuck shards cost one `join_timeout`, not one each.
fn supervisor_wait(shutdown_at: Option<Instant>, now: Instant, join_timeout: Duration) -> Option<Duration> {
    let Some(at) = shutdown_at else {
        return Some(SUPERVISOR_POLL_INTERVAL);
    };
    let left = (at + join_timeout).saturating_duration_since(now);
    if left.is_zero() { None } else { Some(left.min(SUPERVISOR_POLL_INTERVAL)) }
}

/// Everything a shard thread needs before its runtime exists.
#[derive(Debug)]
struct ThreadStart {
    shard_id: u16,
    shards_count: u16,
    cpu: usize,
    pin: bool,
    driver: DriverChoice,
    shutdown: ShutdownFlag,
}

fn run_one_shard<F, Fut>(start: &ThreadStart, body: &F) -> ShardExit
where
    F: Fn(ShardContext) -> Fut,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    if start.pin
        && let Err(error) = pin_current_thread(start.cpu)
    {
        return ShardExit::PinFailed { cpu: start.cpu, message: error.to_string() };
    }
    let runtime = match build_runtime(start.driver) {
        Ok(runtime) => runtime,
        Err(error) => return ShardExit::RuntimeFailed { message: error.to_string() },
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async {
            let io = RealIo::new();
            tracing::debug!(shard_id = start.shard_id, cpu = start.cpu, driver = io.driver_name(), "shard started");
            let context = ShardContext {
                shard_id: start.shard_id,
                shards_count: start.shards_count,
                cpu: start.pin.then_some(start.cpu),
                shutdown: start.shutdown.clone(),
                io,
            };
            body(context).await
        })
    }));
    match outcome {
        Ok(Ok(())) => ShardExit::Clean,
        Ok(Err(message)) => ShardExit::Failed { message },
        Err(payload) => ShardExit::Panicked { message: panic_message(payload.as_ref()) },
    }
}

/// Block SIGINT and SIGTERM in the calling thread (and so in every thread it
/// spawns afterwards) and start a thread that waits for them with `sigwait`
/// and flips `shutdown`. A second signal while shutting down exits the
/// process at once with status 130, for an operator whose shutdown is stuck.
///
/// Call once, from the main thread, before `run_shards`. Safe Rust only:
/// `sigwait` in a dedicated thread needs no async-signal-safe handler.
pub fn install_signal_handler(shutdown: &ShutdownFlag) -> Result<(), BootstrapError> {
    use nix::sys::signal::{SigSet, Signal};

    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().map_err(|errno| BootstrapError::SignalHandler { source: errno.into() })?;
    let shutdown = shutdown.clone();
    std::thread::Builder::new()
        .name("shoal-signals".to_string())
        .spawn(move || {
            loop {
                match signals.wait() {
                    Ok(signal) => {
                        // This thread is the only one that reads signals, so
                        // "already requested" means a second signal or a
                        // shutdown already under way (a shard failed).
                        if shutdown.is_requested() {
                            tracing::warn!(%signal, "signal during shutdown; exiting now");
                            std::process::exit(130);
                        }
                        request_shutdown(&shutdown, &format!("received {signal}"));
                    }
                    Err(errno) => {
                        tracing::error!(%errno, "sigwait failed; signals are no longer handled");
                        return;
                    }
                }
            }
        })
        .map_err(|source| BootstrapError::SignalHandler { source })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn config(shards: usize) -> BootstrapConfig {
        // Unpinned: the tests must not depend on which CPUs the CI box offers,
        // and several shards may share this machine's 2 cores.
        BootstrapConfig {
            pin: false,
            join_timeout: Duration::from_secs(5),
            ..BootstrapConfig::new((0..shards).collect())
        }
    }

    /// A shard that spins until the flag flips, counting how many stopped.
    fn spin_until_shutdown(
        stopped: Arc<AtomicUsize>,
    ) -> impl Fn(ShardContext) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>>>> + Send + Sync + 'static
    {
        move |context: ShardContext| {
            let stopped = stopped.clone();
            Box::pin(async move {
                wait_for_shutdown(&context.io, &context.shutdown).await;
                stopped.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        }
    }

    #[test]
    fn a_panicking_shard_shuts_every_shard_down() {
        let stopped = Arc::new(AtomicUsize::new(0));
        let spin = spin_until_shutdown(stopped.clone());
        let shutdown = ShutdownFlag::new();
        let report = run_shards(config(4), shutdown.clone(), move |context: ShardContext| {
            let spinning = spin(context.clone());
            async move {
                if context.shard_id == 2 {
                    context.io.sleep(20_000_000).await;
                    panic!("shard 2 hit a bug");
                }
                spinning.await
            }
        })
        .unwrap();
        assert!(shutdown.is_requested());
        assert_eq!(stopped.load(Ordering::SeqCst), 3, "the three survivors saw the flag");
        assert_eq!(report.shards[2].exit, ShardExit::Panicked { message: "shard 2 hit a bug".into() });
        for id in [0, 1, 3] {
            assert_eq!(report.shards[id].exit, ShardExit::Clean, "shard {id}");
        }
    }

    #[test]
    fn a_shard_returning_an_error_shuts_every_shard_down() {
        let stopped = Arc::new(AtomicUsize::new(0));
        let spin = spin_until_shutdown(stopped.clone());
        let shutdown = ShutdownFlag::new();
        let report = run_shards(config(3), shutdown.clone(), move |context: ShardContext| {
            let spinning = spin(context.clone());
            async move {
                if context.shard_id == 0 {
                    context.io.sleep(20_000_000).await;
                    return Err("metadata snapshot is unreadable".to_string());
                }
                spinning.await
            }
        })
        .unwrap();
        assert!(shutdown.is_requested());
        assert_eq!(stopped.load(Ordering::SeqCst), 2, "both peers saw the flag");
        assert_eq!(report.shards[0].exit, ShardExit::Failed { message: "metadata snapshot is unreadable".into() });
        assert!(report.shards[1..].iter().all(|shard| shard.exit.is_clean()));
        assert!(!report.all_clean());
    }

    #[test]
    fn a_failed_spawn_stops_spawning_and_shuts_the_started_shards_down() {
        let stopped = Arc::new(AtomicUsize::new(0));
        let shutdown = ShutdownFlag::new();
        let report = run_shards(
            BootstrapConfig { fail_spawn_of_shard: Some(2), ..config(4) },
            shutdown.clone(),
            spin_until_shutdown(stopped.clone()),
        )
        .unwrap();
        assert!(shutdown.is_requested());
        assert_eq!(stopped.load(Ordering::SeqCst), 2, "shards 0 and 1 ran and stopped");
        let exits: Vec<&ShardExit> = report.shards.iter().map(|shard| &shard.exit).collect();
        assert_eq!(exits[0], &ShardExit::Clean);
        assert_eq!(exits[1], &ShardExit::Clean);
        assert!(matches!(exits[2], ShardExit::NotSpawned { message } if message.contains("injected")));
        assert_eq!(exits[3], &ShardExit::SkippedByShutdown);
        assert!(!report.all_clean(), "shard 2's failed spawn fails the run");
        assert_eq!(report.failures().count(), 1, "only the shard that failed is named");
    }

    #[test]
    fn a_shutdown_requested_during_start_up_skips_the_rest_and_is_clean() {
        // A SIGTERM arriving before the last shard spawned (the CI flake of
        // session 8's submission): the shards never started are not failures.
        let stopped = Arc::new(AtomicUsize::new(0));
        let shutdown = ShutdownFlag::new();
        request_shutdown(&shutdown, "received SIGTERM");
        let report = run_shards(config(3), shutdown, spin_until_shutdown(stopped.clone())).unwrap();
        assert_eq!(stopped.load(Ordering::SeqCst), 0);
        assert!(report.shards.iter().all(|shard| shard.exit == ShardExit::SkippedByShutdown));
        assert!(report.all_clean());
    }

    #[test]
    fn stuck_shards_share_one_deadline() {
        // Three shards ignore the flag; a fourth panics. The join must give up
        // after one join_timeout in total, not one per stuck shard.
        let join_timeout = Duration::from_millis(300);
        let release = Arc::new(AtomicBool::new(false));
        let released = release.clone();
        let report = run_shards(BootstrapConfig { join_timeout, ..config(4) }, ShutdownFlag::new(), move |context| {
            let released = released.clone();
            async move {
                if context.shard_id == 0 {
                    panic!("boom");
                }
                // Ignores shutdown on purpose; released at the end of the test.
                while !released.load(Ordering::SeqCst) {
                    context.io.sleep(5_000_000).await;
                }
                Ok(())
            }
        })
        .unwrap();
        release.store(true, Ordering::SeqCst);
        let stuck = report.shards.iter().filter(|shard| shard.exit == ShardExit::Stuck).count();
        assert_eq!(stuck, 3);
        // Only a lower bound here: an upper bound on wall-clock time fails
        // on a loaded machine. That the deadline is shared is checked
        // without a clock in `the_join_deadline_runs_from_the_flag_not_per_shard`.
        let join_elapsed = report.join_elapsed.expect("the panic flipped the flag");
        assert!(join_elapsed >= join_timeout, "gave up after {join_elapsed:?}, before the deadline");
    }

    #[test]
    fn the_join_deadline_runs_from_the_flag_not_per_shard() {
        let join_timeout = Duration::from_millis(300);
        let flipped = Instant::now();
        assert_eq!(supervisor_wait(None, flipped + join_timeout * 10, join_timeout), Some(SUPERVISOR_POLL_INTERVAL));
        assert_eq!(supervisor_wait(Some(flipped), flipped, join_timeout), Some(SUPERVISOR_POLL_INTERVAL));
        let near_end = flipped + join_timeout - Duration::from_millis(5);
        assert_eq!(supervisor_wait(Some(flipped), near_end, join_timeout), Some(Duration::from_millis(5)));
        // However many shards are still pending, nothing is waited past it.
        assert_eq!(supervisor_wait(Some(flipped), flipped + join_timeout, join_timeout), None);
        assert_eq!(supervisor_wait(Some(flipped), flipped + join_timeout * 2, join_timeout), None);
    }

    #[test]
    fn clean_shards_do_not_stop_each_other() {
        let stopped = Arc::new(AtomicUsize::new(0));
        let counted = stopped.clone();
        let shutdown = ShutdownFlag::new();
        let report = run_shards(config(3), shutdown.clone(), move |context| {
            let counted = counted.clone();
            async move {
                context.io.sleep(u64::from(context.shard_id) * 10_000_000).await;
                assert_eq!(context.shards_count, 3);
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .unwrap();
        assert!(report.all_clean());
        assert!(!shutdown.is_requested());
        assert_eq!(stopped.load(Ordering::SeqCst), 3);
        assert_eq!(report.join_elapsed, None);
    }

    #[test]
    fn external_request_stops_spinning_shards() {
        let stopped = Arc::new(AtomicUsize::new(0));
        let shutdown = ShutdownFlag::new();
        let trigger = shutdown.clone();
        let flipper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            request_shutdown(&trigger, "test");
        });
        let report = run_shards(config(2), shutdown, spin_until_shutdown(stopped.clone())).unwrap();
        flipper.join().unwrap();
        assert!(report.all_clean());
        assert_eq!(stopped.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn pinned_shards_run_on_their_cpu() {
        let topology = crate::pinning::CpuTopology::detect().unwrap();
        let cpus = topology.resolve(&crate::pinning::CpuAllocation::All).unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let report = run_shards(BootstrapConfig::new(cpus.clone()), ShutdownFlag::new(), move |context| {
            let record = record.clone();
            async move {
                let affinity = crate::pinning::current_thread_affinity().unwrap();
                record.lock().unwrap().push((context.cpu.unwrap(), affinity));
                Ok(())
            }
        })
        .unwrap();
        assert!(report.all_clean());
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        assert_eq!(seen.len(), cpus.len());
        for (cpu, affinity) in seen {
            assert_eq!(affinity, vec![cpu]);
        }
    }

    #[test]
    fn zero_shards_is_a_typed_error() {
        let error = run_shards(config(0), ShutdownFlag::new(), |_context| async { Ok(()) }).unwrap_err();
        assert!(matches!(error, BootstrapError::Allocation(AllocationError::ShardsCountZero)));
    }
}
