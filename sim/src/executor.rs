//! The seeded cooperative executor and virtual clock of the simulator.
//!
//! Owns `!Send` tasks, timers ordered by `(deadline, sequence)` and virtual
//! time. Polls ready tasks in a seed-chosen order, so different seeds explore
//! different interleavings and the same seed always takes the same one, and
//! jumps virtual time straight to the next timer. Knows nothing of disks or
//! networks. Must not touch the wall clock or threads.
//!
//! A task that panics is caught with `catch_unwind` and its handle resolves to
//! `TaskFailed`, so the simulator can count a shard panic instead of dying.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use shoal_vsr::io::TaskFailed;

type TaskId = u64;
type BoxFuture = Pin<Box<dyn Future<Output = ()>>>;

/// Task ids woken since the last poll. A `Mutex` only because `Waker` must be
/// `Send + Sync`; the simulator itself is single-threaded.
#[derive(Debug, Default)]
struct WokenSet(Mutex<BTreeSet<TaskId>>);

struct TaskWaker {
    id: TaskId,
    woken: Arc<WokenSet>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.woken.0.lock().expect("single-threaded").insert(self.id);
    }
}

#[derive(Debug, Default)]
struct JoinSlot {
    result: Option<Result<(), TaskFailed>>,
    waker: Option<Waker>,
}

/// The handle of a spawned task; awaiting it joins the task.
#[derive(Debug)]
pub struct SimTask {
    slot: Rc<RefCell<JoinSlot>>,
}

impl SimTask {
    pub fn is_finished(&self) -> bool {
        self.slot.borrow().result.is_some()
    }
}

impl Future for SimTask {
    type Output = Result<(), TaskFailed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.slot.borrow_mut();
        match slot.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

struct TaskEntry {
    future: Option<BoxFuture>,
    slot: Rc<RefCell<JoinSlot>>,
}

/// The executor state; shared by every `SimIo` handle of one simulation.
pub struct Executor {
    now_ns: Cell<u64>,
    rng: RefCell<ChaCha8Rng>,
    tasks: RefCell<BTreeMap<TaskId, TaskEntry>>,
    task_next: Cell<TaskId>,
    woken: Arc<WokenSet>,
    timers: RefCell<BTreeMap<(u64, u64), Waker>>,
    timer_sequence: Cell<u64>,
    polls: Cell<u64>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("now_ns", &self.now_ns.get())
            .field("tasks", &self.tasks.borrow().len())
            .field("timers", &self.timers.borrow().len())
            .finish()
    }
}

fn panic_reason(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "task panicked".to_string()
    }
}

impl Executor {
    pub fn new(seed: u64) -> Executor {
        Executor {
            now_ns: Cell::new(0),
            rng: RefCell::new(ChaCha8Rng::seed_from_u64(seed)),
            tasks: RefCell::new(BTreeMap::new()),
            task_next: Cell::new(1),
            woken: Arc::new(WokenSet::default()),
            timers: RefCell::new(BTreeMap::new()),
            timer_sequence: Cell::new(0),
            polls: Cell::new(0),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.now_ns.get()
    }

    /// Move virtual time forward (never back).
    pub fn set_now_ns(&self, now_ns: u64) {
        assert!(now_ns >= self.now_ns.get(), "virtual time never goes back");
        self.now_ns.set(now_ns);
    }

    pub fn tasks_live(&self) -> usize {
        self.tasks.borrow().len()
    }

    /// The deadline of the earliest pending timer, if any.
    pub fn next_timer_ns(&self) -> Option<u64> {
        self.timers.borrow().first_key_value().map(|(key, _)| key.0)
    }

    pub fn timers_pending(&self) -> usize {
        self.timers.borrow().len()
    }

    /// Total task polls so far (a cheap progress measure for the driver).
    pub fn polls(&self) -> u64 {
        self.polls.get()
    }

    pub fn spawn<F: Future<Output = ()> + 'static>(&self, future: F) -> SimTask {
        let id = self.task_next.get();
        self.task_next.set(id + 1);
        let slot = Rc::new(RefCell::new(JoinSlot::default()));
        self.tasks.borrow_mut().insert(id, TaskEntry { future: Some(Box::pin(future)), slot: slot.clone() });
        self.woken.0.lock().expect("single-threaded").insert(id);
        SimTask { slot }
    }

    /// Register a timer; the waker is woken when virtual time reaches `deadline_ns`.
    pub(crate) fn timer_register(&self, deadline_ns: u64, key: Option<(u64, u64)>, waker: Waker) -> (u64, u64) {
        let key = key.unwrap_or_else(|| {
            let sequence = self.timer_sequence.get();
            self.timer_sequence.set(sequence + 1);
            (deadline_ns, sequence)
        });
        self.timers.borrow_mut().insert(key, waker);
        key
    }

    pub(crate) fn timer_cancel(&self, key: (u64, u64)) {
        self.timers.borrow_mut().remove(&key);
    }

    /// Poll one ready task, chosen by the seed. Returns false when none is ready.
    pub fn poll_one(&self) -> bool {
        let id = {
            let mut woken = self.woken.0.lock().expect("single-threaded");
            if woken.is_empty() {
                return false;
            }
            let index = (self.rng.borrow_mut().next_u64() % woken.len() as u64) as usize;
            let id = *woken.iter().nth(index).expect("index is in range");
            woken.remove(&id);
            id
        };
        // Take the future out so that the task may spawn or wake others while
        // it runs without a double borrow.
        let (future, slot) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(entry) = tasks.get_mut(&id) else { return true };
            let Some(future) = entry.future.take() else { return true };
            (future, entry.slot.clone())
        };
        let mut future = future;
        let waker = Waker::from(Arc::new(TaskWaker { id, woken: self.woken.clone() }));
        let mut cx = Context::from_waker(&waker);
        self.polls.set(self.polls.get() + 1);
        let outcome = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
        let result = match outcome {
            Ok(Poll::Pending) => {
                self.tasks.borrow_mut().get_mut(&id).expect("task is live").future = Some(future);
                return true;
            }
            Ok(Poll::Ready(())) => Ok(()),
            Err(payload) => Err(TaskFailed { reason: panic_reason(payload.as_ref()) }),
        };
        drop(future);
        self.tasks.borrow_mut().remove(&id);
        let mut slot = slot.borrow_mut();
        slot.result = Some(result);
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
        true
    }

    /// Poll ready tasks until none is ready, at the current virtual time.
    /// Returns the number of polls.
    pub fn run_ready(&self) -> u64 {
        let mut polls = 0;
        while self.poll_one() {
            polls += 1;
        }
        polls
    }

    /// Fire the earliest timer if its deadline is at or before `limit_ns`,
    /// jumping virtual time to it. Returns false when there is none.
    pub fn fire_next_timer(&self, limit_ns: u64) -> bool {
        let next = self.timers.borrow().first_key_value().map(|(key, _)| *key);
        match next {
            Some(key) if key.0 <= limit_ns => {
                let waker = self.timers.borrow_mut().remove(&key).expect("timer is registered");
                if key.0 > self.now_ns.get() {
                    self.now_ns.set(key.0);
                }
                waker.wake();
                true
            }
            _ => false,
        }
    }

    /// Run tasks and timers until virtual time reaches `deadline_ns`; time
    /// ends at `deadline_ns` (or later, if it already was).
    pub fn run_until(&self, deadline_ns: u64) {
        loop {
            self.run_ready();
            if !self.fire_next_timer(deadline_ns) {
                break;
            }
        }
        if self.now_ns.get() < deadline_ns {
            self.now_ns.set(deadline_ns);
        }
    }

    /// Run tasks and timers until no task is ready and no timer is pending,
    /// or `polls_max` polls were made. Returns true when idle.
    pub fn run_until_idle(&self, polls_max: u64) -> bool {
        let start = self.polls.get();
        loop {
            while self.polls.get() - start < polls_max {
                if !self.poll_one() {
                    break;
                }
            }
            if self.polls.get() - start >= polls_max {
                return false;
            }
            if !self.fire_next_timer(u64::MAX) {
                return true;
            }
        }
    }
}

/// A `sleep`: registers a timer on first poll, completes once virtual time
/// reaches its deadline.
#[derive(Debug)]
pub struct Sleep {
    executor: Rc<Executor>,
    duration_ns: u64,
    deadline_ns: Option<u64>,
    timer: Option<(u64, u64)>,
}

impl Sleep {
    pub(crate) fn new(executor: Rc<Executor>, duration_ns: u64) -> Sleep {
        Sleep { executor, duration_ns, deadline_ns: None, timer: None }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let now_ns = self.executor.now_ns();
        let duration_ns = self.duration_ns;
        let deadline_ns = *self.deadline_ns.get_or_insert(now_ns.saturating_add(duration_ns));
        if now_ns >= deadline_ns {
            if let Some(key) = self.timer.take() {
                self.executor.timer_cancel(key);
            }
            return Poll::Ready(());
        }
        let key = self.executor.timer_register(deadline_ns, self.timer, cx.waker().clone());
        self.timer = Some(key);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.timer.take() {
            self.executor.timer_cancel(key);
        }
    }
}
