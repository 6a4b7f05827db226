//! Shrinking a failing run to a smaller config that fails the same way.
//!
//! Owns the search: binary search on `fault_budget`, halving `client_count`,
//! dropping scripted faults and switching fault kinds off one at a time,
//! switching large appends off, and halving `safety_time_ns`, repeated
//! until nothing shrinks or `SHRINK_ATTEMPTS_MAX` runs are spent. A candidate
//! is kept only if it fails with the SAME checker, so a shrink never trades
//! the bug being chased for a different one. Never changes the seed: the
//! result replays with `shoal-sim replay --config FILE`.

use std::collections::BTreeSet;

use shoal_sim::{Checker, RunConfig, RunOutcome};

use crate::catalog::{FAULT_FIELDS, NS_PER_MS};
use crate::runner::{Runner, run_caught};

/// Runs a shrink may spend after the first one (which only confirms the failure).
pub const SHRINK_ATTEMPTS_MAX: u32 = 200;
/// Below this the safety phase is too short to commit anything worth seeing.
pub const SAFETY_TIME_MIN_NS: u64 = 10 * NS_PER_MS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShrinkStep {
    pub attempt: u32,
    pub knob: String,
    pub from: String,
    pub to: String,
    pub kept: bool,
    /// What the candidate did: `fails Agreement`, `passes`, ...
    pub result: String,
}

impl std::fmt::Display for ShrinkStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let decision = if self.kept { "kept" } else { "rejected" };
        write!(
            f,
            "attempt {:>3}: {} {} -> {}: {} ({decision})",
            self.attempt, self.knob, self.from, self.to, self.result
        )
    }
}

#[derive(Debug)]
pub struct Shrunk {
    pub original: RunOutcome,
    pub checker: Checker,
    pub minimal: RunConfig,
    pub minimal_outcome: RunOutcome,
    pub steps: Vec<ShrinkStep>,
    /// True when the search stopped at `SHRINK_ATTEMPTS_MAX`, not at a fixpoint.
    pub attempts_exhausted: bool,
}

#[derive(Debug)]
pub enum ShrinkResult {
    /// The starting config passes: there is nothing to shrink.
    Passes(Box<RunOutcome>),
    Shrunk(Box<Shrunk>),
}

struct Search<'a, 'r> {
    runner: Runner<'r>,
    checker: Checker,
    current: RunConfig,
    current_outcome: RunOutcome,
    attempts: u32,
    steps: Vec<ShrinkStep>,
    /// Candidates already run (as JSON), so a later pass does not spend
    /// attempts re-running what was rejected before: runs are deterministic.
    tried: BTreeSet<String>,
    on_step: &'a mut dyn FnMut(&ShrinkStep),
}

impl Search<'_, '_> {
    fn exhausted(&self) -> bool {
        self.attempts >= SHRINK_ATTEMPTS_MAX
    }

    /// Run `candidate`; keep it iff it fails with the same checker.
    fn attempt(&mut self, knob: &str, from: String, to: String, candidate: RunConfig) -> bool {
        if self.exhausted() {
            return false;
        }
        assert_eq!(candidate.seed, self.current.seed, "shrinking never changes the seed");
        if !self.tried.insert(serde_json::to_string(&candidate).expect("RunConfig serializes")) {
            return false;
        }
        self.attempts += 1;
        let outcome = run_caught(self.runner, &candidate);
        let result = match outcome.verdict.checker() {
            None => "passes".to_string(),
            Some(checker) if checker == self.checker => format!("still fails {checker:?}"),
            Some(checker) => format!("fails {checker:?} instead"),
        };
        let kept = outcome.verdict.checker().as_ref() == Some(&self.checker);
        let step = ShrinkStep { attempt: self.attempts, knob: knob.to_string(), from, to, kept, result };
        (self.on_step)(&step);
        self.steps.push(step);
        if kept {
            self.current = candidate;
            self.current_outcome = outcome;
        }
        kept
    }

    fn try_fault_budget(&mut self, budget: u64) -> bool {
        let mut candidate = self.current.clone();
        candidate.fault_budget = Some(budget);
        let from = self.current.fault_budget.map_or("none".to_string(), |b| b.to_string());
        self.attempt("fault_budget", from, budget.to_string(), candidate)
    }

    fn shrink_fault_budget(&mut self) {
        if self.current.fault_budget.is_none() {
            // The run injected this many faults without a cap, so capping
            // there should change nothing; if it does, the cap stays off.
            let injected = self.current_outcome.faults_injected_total;
            if !self.try_fault_budget(injected) {
                return;
            }
        }
        let mut high = self.current.fault_budget.expect("set above");
        let mut low = 0;
        // Invariant: `high` fails the same way; below `low` was not tried or passed.
        while low < high && !self.exhausted() {
            let middle = low + (high - low) / 2;
            if self.try_fault_budget(middle) {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
    }

    fn shrink_clients(&mut self) {
        while self.current.client_count > 1 {
            let mut candidate = self.current.clone();
            candidate.client_count /= 2;
            let (from, to) = (self.current.client_count.to_string(), candidate.client_count.to_string());
            if !self.attempt("client_count", from, to, candidate) {
                return;
            }
        }
    }

    fn shrink_safety_time(&mut self) {
        while self.current.safety_time_ns / 2 >= SAFETY_TIME_MIN_NS {
            let mut candidate = self.current.clone();
            candidate.safety_time_ns /= 2;
            let from = crate::format_seconds(self.current.safety_time_ns);
            let to = crate::format_seconds(candidate.safety_time_ns);
            if !self.attempt("safety_time", from, to, candidate) {
                return;
            }
        }
    }

    /// Drop scripted faults one at a time, last first (later faults often
    /// only matter after earlier ones).
    fn shrink_script(&mut self) {
        for index in (0..self.current.script.len()).rev() {
            if index < self.current.script.len() {
                let mut candidate = self.current.clone();
                let removed = candidate.script.remove(index);
                let from = format!("{} faults", self.current.script.len());
                self.attempt(&format!("script[{index}] {removed:?}"), from, "removed".to_string(), candidate);
            }
        }
    }

    /// Large appends off, and whole checkpoints in one answer: a failure
    /// that needs only small messages and one-answer state transfers is
    /// easier to read in a trace.
    fn shrink_workload(&mut self) {
        self.reset_knob("large_append_ppm", 0, |c| c.large_append_ppm, |c, v| c.large_append_ppm = v);
        self.reset_knob(
            "checkpoint_chunks_per_answer_max",
            shoal_sim::CHECKPOINT_CHUNKS_PER_ANSWER_MAX,
            |c| c.checkpoint_chunks_per_answer_max,
            |c, v| c.checkpoint_chunks_per_answer_max = v,
        );
        self.reset_knob(
            "checkpoint_interval_ops",
            shoal_sim::CHECKPOINT_INTERVAL_OPS,
            |c| c.checkpoint_interval_ops,
            |c, v| c.checkpoint_interval_ops = v,
        );
    }

    /// Try the run with one workload knob at its plain value.
    fn reset_knob<T: Copy + PartialEq + ToString>(
        &mut self,
        name: &'static str,
        plain: T,
        get: impl Fn(&RunConfig) -> T,
        set: impl Fn(&mut RunConfig, T),
    ) {
        let current = get(&self.current);
        if current != plain {
            let mut candidate = self.current.clone();
            set(&mut candidate, plain);
            self.attempt(name, current.to_string(), plain.to_string(), candidate);
        }
    }

    fn shrink_fault_kinds(&mut self) {
        for field in &FAULT_FIELDS {
            let value = (field.get)(&self.current.faults);
            if value != 0 {
                let mut candidate = self.current.clone();
                (field.set)(&mut candidate.faults, 0);
                self.attempt(&format!("faults.{}", field.name), value.to_string(), "0".to_string(), candidate);
            }
        }
    }
}

/// Shrink `config`, calling `on_step` after every attempt.
pub fn shrink(runner: Runner<'_>, config: &RunConfig, on_step: &mut dyn FnMut(&ShrinkStep)) -> ShrinkResult {
    let mut start = config.clone();
    start.record_trace = false;
    let original = run_caught(runner, &start);
    let Some(checker) = original.verdict.checker() else {
        return ShrinkResult::Passes(Box::new(original));
    };
    let mut search = Search {
        runner,
        checker: checker.clone(),
        current: start,
        current_outcome: original.clone(),
        attempts: 0,
        steps: Vec::new(),
        tried: BTreeSet::new(),
        on_step,
    };
    // Each knob can unlock another (fewer faults may allow a shorter run), so
    // go round until a whole pass keeps nothing.
    loop {
        let before = search.current.clone();
        search.shrink_fault_budget();
        search.shrink_clients();
        // Fault kinds before time: a mix with fewer kinds explains more than a
        // shorter run, and a shorter run leaves fewer faults to drop kinds from.
        search.shrink_script();
        search.shrink_fault_kinds();
        search.shrink_workload();
        search.shrink_safety_time();
        if search.current == before || search.exhausted() {
            break;
        }
    }
    assert_eq!(search.current_outcome.verdict.checker(), Some(checker.clone()), "the minimal config still fails");
    assert_eq!(search.current_outcome.config, search.current);
    Shrunk {
        original,
        checker,
        attempts_exhausted: search.exhausted(),
        minimal: search.current,
        minimal_outcome: search.current_outcome,
        steps: search.steps,
    }
    .into()
}

impl From<Shrunk> for ShrinkResult {
    fn from(shrunk: Shrunk) -> ShrinkResult {
        ShrinkResult::Shrunk(Box::new(shrunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{catalog, fake};
    use shoal_sim::{FaultMix, Verdict};
    use std::collections::BTreeSet;

    fn shrink_quietly(runner: Runner<'_>, config: &RunConfig) -> ShrinkResult {
        shrink(runner, config, &mut |_| {})
    }

    #[test]
    fn shrinks_the_fake_agreement_failure_to_its_documented_minimum() {
        // Fake rule: Agreement iff >= 3 faults, >= 2 clients, drops on, seed % 4 == 1.
        let mut config = catalog::partition_storm(1);
        config.client_count = 8;
        let ShrinkResult::Shrunk(shrunk) = shrink_quietly(&fake::run, &config) else { panic!("seed 1 fails") };
        assert_eq!(shrunk.checker, Checker::Agreement);
        assert_eq!(shrunk.minimal.fault_budget, Some(3));
        assert_eq!(shrunk.minimal.client_count, 2);
        let mut only_drops = FaultMix::none();
        only_drops.network_drop_ppm = config.faults.network_drop_ppm;
        assert_eq!(shrunk.minimal.faults, only_drops);
        assert!(shrunk.minimal.safety_time_ns < config.safety_time_ns);
        assert!(!shrunk.attempts_exhausted);

        assert!(shrunk.steps.iter().any(|step| !step.kept), "some candidates must have been rejected");
        assert_eq!(fake::run(&shrunk.minimal).verdict.checker(), Some(Checker::Agreement));
    }

    #[test]
    fn large_appends_are_switched_off_unless_the_failure_needs_them() {
        let mut config = catalog::partition_storm(1);
        config.large_append_ppm = 250_000;
        let ShrinkResult::Shrunk(shrunk) = shrink_quietly(&fake::run, &config) else { panic!("seed 1 fails") };
        assert_eq!(shrunk.minimal.large_append_ppm, 0, "the fake failure does not need them");

        let needs_large = |config: &RunConfig| {
            let mut outcome = fake::run(config);
            if config.large_append_ppm == 0 {
                outcome.verdict = Verdict::Pass;
            }
            outcome
        };
        let ShrinkResult::Shrunk(shrunk) = shrink_quietly(&needs_large, &config) else { panic!("seed 1 fails") };
        assert_eq!(shrunk.minimal.large_append_ppm, 250_000);
        let step = shrunk.steps.iter().find(|step| step.knob == "large_append_ppm").unwrap();
        assert!(!step.kept);
    }

    #[test]
    fn no_config_is_run_twice() {
        let runs = std::sync::Mutex::new(Vec::new());
        let recording = |config: &RunConfig| {
            runs.lock().unwrap().push(serde_json::to_string(config).unwrap());
            fake::run(config)
        };
        let ShrinkResult::Shrunk(shrunk) = shrink_quietly(&recording, &catalog::partition_storm(1)) else { panic!() };
        let runs = runs.into_inner().unwrap();
        assert_eq!(runs.len(), shrunk.steps.len() + 1, "one run per step plus the first");
        assert_eq!(runs.iter().collect::<BTreeSet<_>>().len(), runs.len(), "a config was run twice");
    }

    #[test]
    fn a_candidate_failing_another_checker_is_rejected() {
        // Agreement needs >= 2 clients; with 1 client this runner fails Liveness instead.
        let runner = |config: &RunConfig| {
            let mut outcome = fake::run(config);
            if config.client_count < 2 {
                outcome.verdict = Verdict::LivenessViolation { message: "other bug".into() };
            }
            outcome
        };
        let ShrinkResult::Shrunk(shrunk) = shrink_quietly(&runner, &catalog::partition_storm(1)) else { panic!() };
        assert_eq!(shrunk.minimal.client_count, 2);
        let step = shrunk.steps.iter().find(|step| step.knob == "client_count" && !step.kept).unwrap();
        assert_eq!(step.result, "fails Liveness instead");
    }

    #[test]
    fn scripted_faults_that_do_not_matter_are_dropped() {
        use shoal_sim::run::{ScriptedFault, Target};
        // Fails iff the script still crashes every replica at once.
        let runner = |config: &RunConfig| {
            let mut outcome = fake::run(config);
            if config.script.iter().any(|fault| matches!(fault, ScriptedFault::CrashAll { .. })) {
                outcome.verdict =
                    Verdict::SafetyViolation { checker: Checker::Recovery, message: "lost".into(), at_ns: 1 };
            }
            outcome
        };
        let mut config = catalog::steady(2);
        config.script = vec![
            ScriptedFault::Isolate { at_ns: 10, target: Target::Primary, until_ns: 20 },
            ScriptedFault::CrashAll { at_ns: 30, down_ns: 5 },
            ScriptedFault::CorruptSlot { at_ns: 40, target: Target::Backup },
        ];
        let ShrinkResult::Shrunk(shrunk) = shrink_quietly(&runner, &config) else { panic!("CrashAll fails") };
        assert_eq!(shrunk.minimal.script, [ScriptedFault::CrashAll { at_ns: 30, down_ns: 5 }]);
        assert_eq!(shrunk.checker, Checker::Recovery);
    }

    #[test]
    fn a_passing_seed_has_nothing_to_shrink() {
        assert!(matches!(shrink_quietly(&fake::run, &catalog::steady(1)), ShrinkResult::Passes(_)));
    }

    #[test]
    fn attempts_are_bounded_even_when_every_candidate_fails() {
        let always_fails = |config: &RunConfig| {
            let mut outcome = fake::run(config);
            outcome.faults_injected_total = u64::MAX / 2;
            outcome.verdict = Verdict::LivenessViolation { message: "always".into() };
            outcome
        };
        let mut steps = 0;
        let result = shrink(&always_fails, &catalog::swarm(3), &mut |_| steps += 1);
        let ShrinkResult::Shrunk(shrunk) = result else { panic!() };
        assert!(steps as u32 <= SHRINK_ATTEMPTS_MAX);
        assert_eq!(shrunk.minimal.client_count, 1);
        assert_eq!(shrunk.minimal.faults, FaultMix::none());
    }

    #[test]
    fn steps_print_as_one_readable_line() {
        let step = ShrinkStep {
            attempt: 4,
            knob: "client_count".into(),
            from: "4".into(),
            to: "2".into(),
            kept: true,
            result: "still fails Agreement".into(),
        };
        assert_eq!(step.to_string(), "attempt   4: client_count 4 -> 2: still fails Agreement (kept)");
    }
}
