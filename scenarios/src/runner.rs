//! How the front end calls the simulator: a `Runner` is any
//! `Fn(&RunConfig) -> RunOutcome`, so tests inject a fake and the binary
//! passes `shoal_sim::run`.
//!
//! Owns panic capture: a panic inside a run becomes `Verdict::Panic` with the
//! message and location, instead of unwinding through a sweep worker. Must not
//! change the config or outcome otherwise.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use shoal_sim::{RunConfig, RunOutcome, Verdict};

/// The simulator entry point as the front end sees it. `Sync` because a sweep
/// shares one runner between its worker threads (each seed still runs on
/// one thread).
pub type Runner<'a> = &'a (dyn Fn(&RunConfig) -> RunOutcome + Sync);

thread_local! {
    /// Set while this thread is inside `run_caught`: the hook then records the
    /// panic instead of printing it, and the verdict carries it.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// Run one config; a panic becomes `Verdict::Panic` (exit code 4).
pub fn run_caught(runner: Runner<'_>, config: &RunConfig) -> RunOutcome {
    install_hook();
    CAPTURING.with(|capturing| capturing.set(true));
    LAST_PANIC.with(|last| last.borrow_mut().take());
    let result = panic::catch_unwind(AssertUnwindSafe(|| runner(config)));
    CAPTURING.with(|capturing| capturing.set(false));
    match result {
        Ok(outcome) => outcome,
        Err(payload) => {
            let message = LAST_PANIC.with(|last| last.borrow_mut().take()).unwrap_or_else(|| {
                payload
                    .downcast_ref::<&str>()
                    .map(|text| text.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic with a non-string payload".to_string())
            });
            panicked_outcome(config, message)
        }
    }
}

fn panicked_outcome(config: &RunConfig, message: String) -> RunOutcome {
    RunOutcome {
        config: config.clone(),
        verdict: Verdict::Panic { message: message.replace('\n', " ") },
        ops_committed: 0,
        view_changes: 0,
        faults_injected: Default::default(),
        faults_injected_total: 0,
        trace_hash: 0,
        events_processed: 0,
        virtual_time_ns: 0,
        trace: Vec::new(),
        timeline: Vec::new(),
        availability_window_max_ns: 0,
        availability_windows: Vec::new(),
        history: Vec::new(),
        // A panicked run reached no end, so it reports no coverage.
        marks: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn a_panicking_run_becomes_a_panic_verdict_with_its_location() {
        let runner = |_: &RunConfig| -> RunOutcome { panic!("replica 2 asserted commit <= op") };
        let outcome = run_caught(&runner, &catalog::steady(3));
        assert_eq!(outcome.verdict.exit_code(), 4);
        let Verdict::Panic { message } = &outcome.verdict else { panic!("expected a panic verdict") };
        assert!(message.contains("replica 2 asserted commit <= op"), "{message}");
        assert!(message.contains("runner.rs"), "location missing: {message}");
        assert_eq!(outcome.config.seed, 3);
    }

    #[test]
    fn a_passing_run_is_returned_unchanged() {
        let config = catalog::steady(9);
        let outcome = run_caught(&crate::fake::run, &config);
        assert_eq!(outcome, crate::fake::run(&config));
    }
}
