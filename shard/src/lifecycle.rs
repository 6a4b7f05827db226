//! Shard lifecycle: the shutdown flag, the per-shard watchdog, and the task
//! set that spawns and joins every shard of one replica process.
//!
//! Owns how a process of N shards stops: a shard panic (its task resolves to
//! `TaskFailed`) or a partial spawn failure flips the one `ShutdownFlag`, and
//! `TaskSet::join_all` waits for the survivors under ONE deadline that starts
//! when shutdown is requested, so the join costs the slowest shard, not
//! N × timeout. Must not touch threads, signals or compio: tasks, time and
//! sleeps come from `shoal_vsr::Io`, so the simulator drives this same code.
//!
//! Invariant: no task handle is detached; every spawned task is either joined
//! or reported as a straggler by `join_all`.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;

use shoal_vsr::Io;
use shoal_vsr::io::TaskFailed;

use crate::owner_table::{ShardCount, ShardId};

/// How often `join_all` looks at the shutdown flag while no task finishes.
/// The flag is a plain atomic (a signal handler may flip it), so nothing wakes
/// the joiner; it polls.
pub const JOIN_POLL_INTERVAL_NS: u64 = 1_000_000;

/// How long the survivors get, in total, to return once shutdown is requested.
pub const SHUTDOWN_GRACE_NS_DEFAULT: u64 = 5_000_000_000;

/// A shard that makes no progress for this many watchdog ticks is reported.
pub const WATCHDOG_STALL_TICKS_DEFAULT: u64 = 32;

/// The process-wide stop signal, shared by every shard (and the signal handler).
#[derive(Debug, Clone, Default)]
pub struct ShutdownFlag(Arc<AtomicBool>);

impl ShutdownFlag {
    pub fn new() -> ShutdownFlag {
        ShutdownFlag::default()
    }

    /// Ask every shard to stop. Idempotent.
    pub fn request(&self) {
        // Release: a shard that sees the flag also sees what led to it.
        self.0.store(true, Ordering::Release);
    }

    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// One shard's heartbeat: the shard bumps it whenever it makes progress.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    pub fn beat(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A shard the watchdog found stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub shard: ShardId,
    pub stalled_ticks: u64,
}

/// Watches every shard's `Progress`; `tick` reports a shard once per stall
/// episode, when it has not beaten for `stall_ticks_max` ticks in a row.
#[derive(Debug)]
pub struct Watchdog {
    progress: Vec<Progress>,
    last_seen: Vec<u64>,
    stalled_ticks: Vec<u64>,
    stall_ticks_max: u64,
}

impl Watchdog {
    pub fn new(shard_count: ShardCount, stall_ticks_max: u64) -> Watchdog {
        assert!(stall_ticks_max > 0, "a zero stall bound reports every shard");
        let count = usize::from(shard_count.get());
        Watchdog {
            progress: (0..count).map(|_| Progress::default()).collect(),
            last_seen: vec![0; count],
            stalled_ticks: vec![0; count],
            stall_ticks_max,
        }
    }

    /// The heartbeat handle to give to `shard`.
    pub fn progress(&self, shard: ShardId) -> Progress {
        self.progress[shard.index()].clone()
    }

    /// One watchdog period. Returns the shards that just crossed the bound.
    pub fn tick(&mut self) -> Vec<Stall> {
        let mut stalls = Vec::new();
        for (index, progress) in self.progress.iter().enumerate() {
            let now = progress.get();
            if now != self.last_seen[index] {
                self.last_seen[index] = now;
                self.stalled_ticks[index] = 0;
                continue;
            }
            self.stalled_ticks[index] += 1;
            if self.stalled_ticks[index] == self.stall_ticks_max {
                let shard = ShardId(index as u16);
                tracing::warn!(?shard, ticks = self.stall_ticks_max, "shard stalled");
                stalls.push(Stall { shard, stalled_ticks: self.stalled_ticks[index] });
            }
        }
        stalls
    }
}

/// Why the process could not start or stop cleanly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error(
        "shard {shard:?} failed to start: {reason}; the process shut the started shards down, fix the cause (CPU list, memory) and restart"
    )]
    SpawnFailed { shard: ShardId, reason: String },
}

/// How one shard's task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardExit {
    Completed,
    /// The task panicked; the whole process was shut down because of it.
    Failed(TaskFailed),
    /// The task had not returned when the join deadline passed. Its handle was
    /// dropped, but it is reported here, never silently detached.
    Straggler,
}

/// What `join_all` saw, shard by shard, in shard order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReport {
    pub exits: Vec<(ShardId, ShardExit)>,
    /// When shutdown was first seen requested (None: every task returned first).
    pub shutdown_seen_at_ns: Option<u64>,
    pub finished_at_ns: u64,
}

impl JoinReport {
    pub fn failed(&self) -> usize {
        self.exits.iter().filter(|(_, e)| matches!(e, ShardExit::Failed(_))).count()
    }

    pub fn stragglers(&self) -> usize {
        self.exits.iter().filter(|(_, e)| matches!(e, ShardExit::Straggler)).count()
    }

    /// Every task returned and none failed.
    pub fn is_clean(&self) -> bool {
        self.exits.iter().all(|(_, e)| *e == ShardExit::Completed)
    }
}

/// Every shard task of one process, spawned through `Io` and joined together.
pub struct TaskSet<I: Io> {
    tasks: Vec<(ShardId, Pin<Box<I::Task>>)>,
    shutdown: ShutdownFlag,
}

impl<I: Io> std::fmt::Debug for TaskSet<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskSet")
            .field("tasks", &self.tasks.len())
            .field("shutdown", &self.shutdown.is_requested())
            .finish()
    }
}

impl<I: Io> TaskSet<I> {
    pub fn new(shutdown: ShutdownFlag) -> TaskSet<I> {
        TaskSet { tasks: Vec::new(), shutdown }
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub fn shutdown(&self) -> &ShutdownFlag {
        &self.shutdown
    }

    /// Spawn one shard's task and keep its handle.
    pub fn spawn<F>(&mut self, io: &I, shard: ShardId, task: F)
    where
        F: Future<Output = ()> + 'static,
    {
        assert!(self.tasks.iter().all(|(s, _)| *s != shard), "shard {shard:?} spawned twice");
        self.tasks.push((shard, Box::pin(io.spawn(task))));
    }

    /// Spawn a task for every shard in order. `make` builds shard `s`'s task
    /// or fails (a thread that could not start, a CPU that could not be
    /// pinned); on the first failure the shutdown flag is flipped, so the
    /// shards already started stop, and the error is returned. The started
    /// tasks stay in the set: call `join_all` either way.
    pub fn spawn_all<F, M>(&mut self, io: &I, shard_count: ShardCount, mut make: M) -> Result<(), LifecycleError>
    where
        F: Future<Output = ()> + 'static,
        M: FnMut(ShardId) -> Result<F, String>,
    {
        for shard in shard_count.shards() {
            match make(shard) {
                Ok(task) => self.spawn(io, shard, task),
                Err(reason) => {
                    tracing::error!(?shard, %reason, "shard spawn failed; shutting down");
                    self.shutdown.request();
                    return Err(LifecycleError::SpawnFailed { shard, reason });
                }
            }
        }
        Ok(())
    }

    /// Join every task. A task that fails flips the shutdown flag at once.
    /// From the moment shutdown is seen requested, all the survivors together
    /// get `grace_ns`; whoever has not returned by then is a straggler.
    pub async fn join_all(mut self, io: &I, grace_ns: u64) -> JoinReport {
        let mut tasks = std::mem::take(&mut self.tasks);
        let mut exits: Vec<(ShardId, ShardExit)> = Vec::with_capacity(tasks.len());
        let mut shutdown_seen_at_ns: Option<u64> = None;
        loop {
            if self.shutdown.is_requested() && shutdown_seen_at_ns.is_none() {
                shutdown_seen_at_ns = Some(io.now_ns());
            }
            // One deadline for all: how far the slowest survivor may run.
            let deadline_ns = shutdown_seen_at_ns.map(|at| at.saturating_add(grace_ns));
            if tasks.is_empty() || deadline_ns.is_some_and(|d| io.now_ns() >= d) {
                break;
            }
            let wait_ns = match deadline_ns {
                Some(deadline) => JOIN_POLL_INTERVAL_NS.min(deadline - io.now_ns()),
                None => JOIN_POLL_INTERVAL_NS,
            };
            let mut sleep = Box::pin(io.sleep(wait_ns));
            let shutdown = &self.shutdown;
            poll_fn(|cx| {
                let before = tasks.len();
                tasks.retain_mut(|(shard, task)| match task.as_mut().poll(cx) {
                    Poll::Pending => true,
                    Poll::Ready(result) => {
                        let exit = match result {
                            Ok(()) => ShardExit::Completed,
                            Err(failed) => {
                                tracing::error!(?shard, reason = %failed.reason, "shard failed; shutting down");
                                shutdown.request();
                                ShardExit::Failed(failed)
                            }
                        };
                        exits.push((*shard, exit));
                        false
                    }
                });
                if tasks.len() < before || sleep.as_mut().poll(cx).is_ready() { Poll::Ready(()) } else { Poll::Pending }
            })
            .await;
        }
        for (shard, _) in tasks.drain(..) {
            tracing::error!(?shard, "shard did not stop within the shutdown grace");
            exits.push((shard, ShardExit::Straggler));
        }
        exits.sort_by_key(|(shard, _)| *shard);
        JoinReport { exits, shutdown_seen_at_ns, finished_at_ns: io.now_ns() }
    }
}

impl<I: Io> Drop for TaskSet<I> {
    fn drop(&mut self) {
        // Dropping unjoined handles would detach shards; join_all takes them.
        if !std::thread::panicking() {
            debug_assert!(
                self.tasks.is_empty(),
                "TaskSet dropped with {} unjoined shard tasks: call join_all",
                self.tasks.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_flag_is_shared_and_sticky() {
        let flag = ShutdownFlag::new();
        let other = flag.clone();
        assert!(!other.is_requested());
        flag.request();
        flag.request();
        assert!(other.is_requested());
    }

    #[test]
    fn watchdog_reports_a_stalled_shard_once_per_episode() {
        let mut watchdog = Watchdog::new(ShardCount::new(2).unwrap(), 3);
        let busy = watchdog.progress(ShardId(0));
        let mut reports = Vec::new();
        for _ in 0..10 {
            busy.beat();
            reports.extend(watchdog.tick());
        }
        assert_eq!(reports, vec![Stall { shard: ShardId(1), stalled_ticks: 3 }]);
        // Progress ends the episode; a new stall is reported again.
        watchdog.progress(ShardId(1)).beat();
        assert!(watchdog.tick().is_empty());
        let again: Vec<_> = (0..3).flat_map(|_| watchdog.tick()).collect();
        assert_eq!(again.len(), 2, "both shards stall now: {again:?}");
    }
}
