//! Run several storage futures at once, deterministically.
//!
//! The node flushes every group's written prepares together: each group's
//! flush is its own future (its own files), and on the real disk their
//! writes and fsyncs overlap in the kernel instead of queueing behind one
//! another. `join_in_order` polls them in index order on every wake-up and
//! returns their outputs in index order, whichever finished first, so what
//! the node does next never depends on completion order: the simulator
//! (whose storage futures may yield to one another) replays it bit for bit.
//!
//! No executor of its own and no threads: it is one future that polls the
//! others with the caller's waker.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;

/// Futures one join runs at once: one per group of a node.
pub const JOIN_FUTURES_MAX: usize = 64 * 1024;

/// What `join_in_order` gives back.
#[derive(Debug)]
pub struct Joined<T> {
    /// Each future's output, in index order.
    pub outputs: Vec<T>,
    /// How often the join was polled: more than once when some future
    /// yielded, that is when the futures' steps interleaved.
    pub polls: usize,
}

/// Return `Pending` once (waking the caller at once), then `Ready`: lets a
/// joined future give the others a turn. The simulator's storage yields
/// with it, so `join_in_order` interleaves the flushes it runs.
pub use shoal_vsr::io::yield_once;

/// Drive every future to completion at once; their outputs in index order.
pub async fn join_in_order<F: Future>(futures: Vec<F>) -> Joined<F::Output> {
    assert!(futures.len() <= JOIN_FUTURES_MAX, "{} futures in one join", futures.len());
    // Boxed so each stays pinned while the vector is built; one allocation
    // per group per flush, next to an fsync.
    let mut running: Vec<Option<Pin<Box<F>>>> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = running.iter().map(|_| None).collect();
    let mut polls = 0;
    poll_fn(|cx| {
        polls += 1;
        let mut done = true;
        for (slot, output) in running.iter_mut().zip(outputs.iter_mut()) {
            let Some(future) = slot else { continue };
            match future.as_mut().poll(cx) {
                Poll::Ready(value) => {
                    *output = Some(value);
                    *slot = None;
                }
                Poll::Pending => done = false,
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    let outputs = outputs.into_iter().map(|output| output.expect("a joined future completed")).collect();
    Joined { outputs, polls }
}

/// Drive two futures of different types to completion at once, `a`
/// polled before `b` on every wake-up (deterministic, as
/// `join_in_order`); their outputs as a pair.
pub async fn join_pair<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut a_output, mut b_output) = (None, None);
    poll_fn(|cx| {
        if a_output.is_none()
            && let Poll::Ready(value) = a.as_mut().poll(cx)
        {
            a_output = Some(value);
        }
        if b_output.is_none()
            && let Poll::Ready(value) = b.as_mut().poll(cx)
        {
            b_output = Some(value);
        }
        if a_output.is_some() && b_output.is_some() { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    (a_output.expect("a completed"), b_output.expect("b completed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::task::{Context, Waker};

    /// Completes after `yields` polls, logging each poll.
    async fn yielding(id: usize, yields: usize, log: Rc<RefCell<Vec<usize>>>) -> usize {
        for _ in 0..yields {
            log.borrow_mut().push(id);
            yield_once().await;
        }
        log.borrow_mut().push(id);
        id * 10
    }

    fn run<F: Future>(future: F) -> (F::Output, usize) {
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        for polls in 1..=1000 {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return (output, polls);
            }
        }
        panic!("did not complete");
    }

    #[test]
    fn futures_interleave_and_outputs_keep_index_order() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let futures = vec![yielding(0, 2, log.clone()), yielding(1, 0, log.clone()), yielding(2, 1, log.clone())];
        let (joined, polls) = run(join_in_order(futures));
        assert_eq!(joined.outputs, vec![0, 10, 20], "outputs in index order, not completion order");
        assert_eq!(polls, 3, "the join waits for the slowest");
        assert_eq!(joined.polls, 3, "the join counts its own polls");
        // Every future progressed before any finished its second step.
        assert_eq!(*log.borrow(), vec![0, 1, 2, 0, 2, 0]);
    }

    #[test]
    fn a_pair_interleaves_and_returns_both_outputs() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let ((a, b), polls) = run(join_pair(yielding(1, 2, log.clone()), yielding(2, 0, log.clone())));
        assert_eq!((a, b), (10, 20));
        assert_eq!(polls, 3, "the pair waits for the slower");
        assert_eq!(*log.borrow(), vec![1, 2, 1, 1], "b finished while a still yielded");
    }

    #[test]
    fn an_empty_join_is_ready_at_once() {
        let (joined, polls) = run(join_in_order(Vec::<std::future::Ready<u8>>::new()));
        assert!(joined.outputs.is_empty());
        assert_eq!(polls, 1);
    }
}
