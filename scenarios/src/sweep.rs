//! Sweeps: many seeds of one scenario on worker threads, with progress and a
//! summary.
//!
//! Owns seed-range parsing, the git-derived base seed, the worker pool, the
//! progress display and the summary table. Each seed still runs on one thread
//! from start to end; threads only spread seeds. Wall-clock time here measures
//! the sweep (seeds/s, `--time-limit`) and never reaches a run, which is why
//! this module may read the clock.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use shoal_sim::{Checker, RunConfig, RunOutcome, Verdict};

use crate::catalog::Scenario;
use crate::runner::{Runner, run_caught};
use crate::slice::SliceId;

/// More workers than this is a typo, not a machine.
pub const JOBS_MAX: usize = 1024;
/// Exit code of a sweep with a non-deterministic seed (as `replay --check-determinism`).
pub const EXIT_NONDETERMINISM: i32 = 5;
/// Without a TTY, print a progress line every this many percent.
pub const PROGRESS_LINE_PERCENT: u64 = 5;
/// The summary lists this many failing seeds; reports list them all.
pub const FAILURES_LISTED_MAX: usize = 50;
/// Exit code of a sweep whose seeds all passed but never hit a mark named
/// by `--require-marks`: the sweep no longer reaches a rare path it must
/// test. (A failing seed's own code wins: a verdict is worse news.)
pub const EXIT_MARKS_MISSING: i32 = 6;

/// How often one coverage mark was hit over a sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MarkTally {
    pub hits: u64,
    /// Seeds that hit it at least once.
    pub seeds: u64,
}

/// p50 / p99 / max of the seeds' longest availability windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AvailabilityStats {
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// The `p`-th percentile (nearest rank) of `sorted`, 0 when empty.
fn percentile(sorted: &[u64], p: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() as u64 * p).div_ceil(100).max(1);
    sorted[rank as usize - 1]
}

/// `a,b, c` as mark names; empty names are dropped.
pub fn parse_mark_list(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|name| !name.is_empty()).map(str::to_string).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("bad seed range `{text}`: write START..END (END exclusive, START < END), e.g. --seeds 0..1000")]
    BadSeedRange { text: String },
    #[error("bad duration `{text}`: write a number with a unit, e.g. 90s, 10m, 1h, 500ms")]
    BadDuration { text: String },
    #[error("--jobs {jobs} is out of range: use 1..={JOBS_MAX}")]
    BadJobs { jobs: usize },
    #[error(
        "--seed-from-git: `git rev-parse HEAD` failed ({reason}); run inside a git checkout, set SHOAL_SIM_GIT_COMMIT, or drop the flag"
    )]
    Git { reason: String },
}

pub fn parse_seed_range(text: &str) -> Result<Range<u64>, SweepError> {
    let bad = || SweepError::BadSeedRange { text: text.to_string() };
    let (start, end) = text.split_once("..").ok_or_else(bad)?;
    let start: u64 = start.trim().parse().map_err(|_| bad())?;
    let end: u64 = match end.strip_prefix('=') {
        Some(inclusive) => inclusive.trim().parse::<u64>().map_err(|_| bad())?.checked_add(1).ok_or_else(bad)?,
        None => end.trim().parse().map_err(|_| bad())?,
    };
    if start >= end {
        return Err(bad());
    }
    Ok(start..end)
}

pub fn parse_duration(text: &str) -> Result<Duration, SweepError> {
    let bad = || SweepError::BadDuration { text: text.to_string() };
    let text_trimmed = text.trim();
    let split = text_trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(text_trimmed.len());
    let (number, unit) = text_trimmed.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds_per_unit = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(number.checked_mul(seconds_per_unit).ok_or_else(bad)?))
}

/// Base seed from the current commit: each commit sweeps fresh seeds, and
/// the same commit always sweeps the same ones, in a checkout or in an image
/// that carries its commit in `SHOAL_SIM_GIT_COMMIT`.
pub fn git_base_seed() -> Result<u64, SweepError> {
    let hex = crate::source_commit().ok_or_else(|| SweepError::Git {
        reason: format!("no git checkout here and {} is unset", crate::GIT_COMMIT_ENV),
    })?;
    Ok(crate::stable_hash64(hex.as_bytes()))
}

/// Seeds running right now, by worker: (seed, wall-clock start). A watchdog
/// outside the sweep reads it to name a seed that never finishes; a sweep
/// cannot stop a run, but the process can exit and say which seed hung.
pub type InFlight = Arc<Mutex<BTreeMap<usize, (u64, Instant)>>>;

/// The seed that has run longest, if it has run longer than `limit`.
pub fn overdue(in_flight: &InFlight, limit: Duration) -> Option<(u64, Duration)> {
    let in_flight = in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    in_flight
        .values()
        .map(|(seed, started)| (*seed, started.elapsed()))
        .filter(|(_, elapsed)| *elapsed > limit)
        .max_by_key(|(_, elapsed)| *elapsed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live bar on a TTY, otherwise a line every `PROGRESS_LINE_PERCENT`.
    Auto,
    Off,
}

#[derive(Debug, Clone)]
pub struct SweepPlan {
    pub scenario: &'static Scenario,
    /// Seed indices to run (this slice's, with `--shard`); seed = `base.wrapping_add(index)`.
    pub range: Range<u64>,
    /// Which slice of the whole sweep `range` is (`SliceId::WHOLE` without `--shard`).
    pub slice: SliceId,
    pub base: u64,
    pub jobs: usize,
    pub time_limit: Option<Duration>,
    /// Run every seed twice and compare trace hashes and verdicts.
    pub check_determinism: bool,
    pub progress: ProgressMode,
    /// Where workers post the seed they are running, for a watchdog.
    pub in_flight: Option<InFlight>,
}

impl SweepPlan {
    pub fn seed_count(&self) -> u64 {
        self.range.end - self.range.start
    }
}

#[derive(Debug)]
pub struct SweepResult {
    pub plan: SweepPlan,
    /// One outcome per seed run, ordered by seed index, without traces or
    /// timelines (replay a seed to get those).
    pub outcomes: Vec<RunOutcome>,
    pub stopped_by_time_limit: bool,
    /// Seeds whose two runs differed (with `check_determinism`), by seed
    /// index order, with what differed.
    pub nondeterministic: Vec<(u64, String)>,
    pub wall: Duration,
}

impl SweepResult {
    pub fn passed(&self) -> u64 {
        self.outcomes.iter().filter(|outcome| outcome.verdict == Verdict::Pass).count() as u64
    }

    pub fn failures(&self) -> impl Iterator<Item = &RunOutcome> {
        self.outcomes.iter().filter(|outcome| outcome.verdict != Verdict::Pass)
    }

    pub fn failures_by_checker(&self) -> BTreeMap<Checker, u64> {
        let mut by_checker = BTreeMap::new();
        for checker in self.failures().filter_map(|outcome| outcome.verdict.checker()) {
            *by_checker.entry(checker).or_insert(0) += 1;
        }
        by_checker
    }

    pub fn panics(&self) -> u64 {
        self.failures().filter(|outcome| matches!(outcome.verdict, Verdict::Panic { .. })).count() as u64
    }

    /// The worst verdict: the highest exit code of any seed, and 5 if any
    /// seed was non-deterministic.
    pub fn exit_code(&self) -> i32 {
        let verdicts = self.outcomes.iter().map(|outcome| outcome.verdict.exit_code()).max().unwrap_or(0);
        if self.nondeterministic.is_empty() { verdicts } else { verdicts.max(EXIT_NONDETERMINISM) }
    }

    /// Every mark the code under test knows or a seed hit, with its tally
    /// (known marks never hit show as zero: they are the testbed's gaps).
    pub fn marks(&self) -> BTreeMap<String, MarkTally> {
        let mut marks: BTreeMap<String, MarkTally> =
            shoal_sim::MARKS_KNOWN.iter().map(|name| (name.to_string(), MarkTally::default())).collect();
        for outcome in &self.outcomes {
            for (name, hits) in &outcome.marks {
                let tally = marks.entry(name.clone()).or_default();
                tally.hits += hits;
                tally.seeds += u64::from(*hits > 0);
            }
        }
        marks
    }

    /// Required marks no seed hit.
    pub fn missing_marks(&self, required: &[String]) -> Vec<String> {
        let marks = self.marks();
        required.iter().filter(|name| marks.get(*name).is_none_or(|tally| tally.hits == 0)).cloned().collect()
    }

    /// Over the seeds that ran: each seed's longest availability window.
    pub fn availability(&self) -> AvailabilityStats {
        let mut windows: Vec<u64> = self.outcomes.iter().map(|outcome| outcome.availability_window_max_ns).collect();
        windows.sort_unstable();
        AvailabilityStats {
            p50_ns: percentile(&windows, 50),
            p99_ns: percentile(&windows, 99),
            max_ns: windows.last().copied().unwrap_or(0),
        }
    }

    /// The coverage table: each mark, its hits and the seeds that hit it.
    pub fn render_marks(&self) -> String {
        let mut text = String::from("coverage marks (hits, seeds that hit it):\n");
        for (name, tally) in self.marks() {
            let gap = if tally.hits == 0 { "    never hit" } else { "" };
            text.push_str(&format!("  {name:<28}{:>10}{:>8}{gap}\n", tally.hits, tally.seeds));
        }
        text
    }

    pub fn virtual_time_ns(&self) -> u64 {
        self.outcomes.iter().map(|outcome| outcome.virtual_time_ns).sum()
    }

    pub fn seeds_per_second(&self) -> f64 {
        self.outcomes.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The summary table and, for each failing seed, its replay command.
    pub fn render_summary(&self) -> String {
        let plan = &self.plan;
        let mut text = String::new();
        let mut line = |label: &str, value: String| text.push_str(&format!("  {label:<22}{value:>20}\n"));
        line("scenario", plan.scenario.name.to_string());
        if plan.slice != SliceId::WHOLE {
            line("slice (--shard)", plan.slice.to_string());
        }
        line("seed indices", format!("{}..{}", plan.range.start, plan.range.end));
        if plan.base != 0 {
            line("base seed", plan.base.to_string());
        }
        line("seeds run", format!("{} / {}", self.outcomes.len(), plan.seed_count()));
        line("pass", self.passed().to_string());
        line("fail", self.failures().count().to_string());
        for (checker, count) in self.failures_by_checker() {
            line(&format!("  {checker:?}"), count.to_string());
        }
        line("panics", self.panics().to_string());
        if plan.check_determinism {
            line("non-deterministic", self.nondeterministic.len().to_string());
        }
        line("seeds/s", format!("{:.1}", self.seeds_per_second()));
        line("wall time", format!("{:.2} s", self.wall.as_secs_f64()));
        line("virtual time", crate::format_seconds(self.virtual_time_ns()));
        let availability = self.availability();
        let ms = |ns: u64| format!("{:.0}", ns as f64 / 1e6);
        line(
            "no-commit window ms",
            format!("p50 {} p99 {} max {}", ms(availability.p50_ns), ms(availability.p99_ns), ms(availability.max_ns)),
        );
        line("exit code", self.exit_code().to_string());
        let mut text = format!("shoal-sim sweep summary\n{text}");
        if self.stopped_by_time_limit {
            let limit = plan.time_limit.map_or(0.0, |limit| limit.as_secs_f64());
            let skipped = plan.seed_count() - self.outcomes.len() as u64;
            text.push_str(&format!("  stopped by --time-limit ({limit:.0} s): {skipped} seeds not started\n"));
        }
        if !self.nondeterministic.is_empty() {
            text.push_str("non-deterministic seeds (each ran twice and differed):\n");
            for (seed, mismatch) in self.nondeterministic.iter().take(FAILURES_LISTED_MAX) {
                let command = crate::replay_command(*seed, plan.scenario.name);
                text.push_str(&format!("  {command} --check-determinism    # {mismatch}\n"));
            }
        }
        let failures: Vec<&RunOutcome> = self.failures().collect();
        if !failures.is_empty() {
            text.push_str("failing seeds (replay each with the command shown):\n");
            for outcome in failures.iter().take(FAILURES_LISTED_MAX) {
                text.push_str(&format!(
                    "  {}    # {}\n",
                    crate::replay_command(outcome.config.seed, &outcome.config.scenario),
                    verdict_line(&outcome.verdict)
                ));
            }
            if failures.len() > FAILURES_LISTED_MAX {
                let more = failures.len() - FAILURES_LISTED_MAX;
                text.push_str(&format!("  ... and {more} more: write them all with --report json --report-file F\n"));
            }
        }
        text
    }
}

/// A verdict on one line: `PASS`, `FAIL Agreement at 1.000 s: ...`, ...
pub fn verdict_line(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Pass => "PASS".to_string(),
        Verdict::SafetyViolation { checker, message, at_ns } => {
            format!("SAFETY {checker:?} at {}: {message}", crate::format_seconds(*at_ns))
        }
        Verdict::LivenessViolation { message } => format!("LIVENESS: {message}"),
        Verdict::Panic { message } => format!("PANIC: {message}"),
    }
}

struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    total: u64,
    next_line_at: u64,
    started: Instant,
}

impl Progress {
    fn new(mode: ProgressMode, total: u64) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = (mode == ProgressMode::Auto && tty).then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} seeds | fails {msg} | {per_sec} | ETA {eta} ",
            )
            .expect("static template is valid");
            bar.set_style(style);
            bar.set_message("0");
            bar
        });
        let step = (total * PROGRESS_LINE_PERCENT / 100).max(1);
        Progress { bar, lines: mode == ProgressMode::Auto && !tty, total, next_line_at: step, started: Instant::now() }
    }

    fn update(&mut self, done: u64, fails: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(fails.to_string());
        } else if self.lines && (done >= self.next_line_at || done == self.total) {
            let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "sweep: {done}/{} seeds ({}%), {fails} fails, {rate:.1} seeds/s",
                self.total,
                done * 100 / self.total
            );
            self.next_line_at = done + (self.total * PROGRESS_LINE_PERCENT / 100).max(1);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// One seed of a sweep: its outcome without trace or timeline (a sweep keeps
/// verdicts and counters; replay a seed for the rest) and, when checking
/// determinism, what differed between its two runs.
fn run_seed(plan: &SweepPlan, runner: Runner<'_>, config: &RunConfig) -> (RunOutcome, Option<String>) {
    let mut outcome = run_caught(runner, config);
    let mismatch = if plan.check_determinism {
        let again = run_caught(runner, config);
        (again.trace_hash != outcome.trace_hash || again.verdict != outcome.verdict).then(|| {
            format!(
                "trace hash {:016x} vs {:016x}, verdict {} vs {}",
                outcome.trace_hash,
                again.trace_hash,
                verdict_line(&outcome.verdict),
                verdict_line(&again.verdict)
            )
        })
    } else {
        None
    };
    outcome.trace = Vec::new();
    outcome.timeline = Vec::new();
    (outcome, mismatch)
}

pub fn sweep(plan: SweepPlan, runner: Runner<'_>) -> Result<SweepResult, SweepError> {
    if plan.jobs == 0 || plan.jobs > JOBS_MAX {
        return Err(SweepError::BadJobs { jobs: plan.jobs });
    }
    assert!(plan.range.start < plan.range.end, "parse_seed_range rejects empty ranges");
    let total = plan.seed_count();
    let started = Instant::now();
    let next_index = AtomicU64::new(plan.range.start);
    let stopped = AtomicBool::new(false);
    let mut progress = Progress::new(plan.progress, total);
    let mut outcomes: Vec<(u64, RunOutcome)> = Vec::new();
    let mut nondeterministic: Vec<(u64, String)> = Vec::new();
    let (sender, receiver) = mpsc::channel::<(u64, RunOutcome, Option<String>)>();
    std::thread::scope(|scope| {
        for worker in 0..plan.jobs.min(total as usize) {
            let sender = sender.clone();
            let (next_index, stopped, plan) = (&next_index, &stopped, &plan);
            scope.spawn(move || {
                loop {
                    if plan.time_limit.is_some_and(|limit| started.elapsed() >= limit) {
                        stopped.store(true, Ordering::Relaxed);
                        return;
                    }
                    let index = next_index.fetch_add(1, Ordering::Relaxed);
                    if index >= plan.range.end {
                        return;
                    }
                    let config = plan.scenario.config(plan.base.wrapping_add(index));
                    let post = |running: Option<u64>| {
                        if let Some(in_flight) = &plan.in_flight {
                            let mut in_flight = in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                            match running {
                                Some(seed) => in_flight.insert(worker, (seed, Instant::now())),
                                None => in_flight.remove(&worker),
                            };
                        }
                    };
                    post(Some(config.seed));
                    let (outcome, mismatch) = run_seed(plan, runner, &config);
                    post(None);
                    if sender.send((index, outcome, mismatch)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(sender);
        let mut fails = 0;
        for (index, outcome, mismatch) in receiver {
            fails += u64::from(outcome.verdict != Verdict::Pass || mismatch.is_some());
            if let Some(mismatch) = mismatch {
                nondeterministic.push((index, mismatch));
            }
            outcomes.push((index, outcome));
            progress.update(outcomes.len() as u64, fails);
        }
    });
    progress.finish();
    outcomes.sort_by_key(|(index, _)| *index);
    nondeterministic.sort_by_key(|(index, _)| *index);
    let nondeterministic =
        nondeterministic.into_iter().map(|(index, mismatch)| (plan.base.wrapping_add(index), mismatch)).collect();
    let stopped_by_time_limit = stopped.load(Ordering::Relaxed) && (outcomes.len() as u64) < total;
    assert!(stopped_by_time_limit || outcomes.len() as u64 == total, "every seed runs unless the time limit hits");
    Ok(SweepResult {
        plan,
        outcomes: outcomes.into_iter().map(|(_, outcome)| outcome).collect(),
        stopped_by_time_limit,
        nondeterministic,
        wall: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    fn plan(scenario: &str, range: Range<u64>, jobs: usize) -> SweepPlan {
        SweepPlan {
            scenario: catalog::find(scenario).unwrap(),
            range,
            slice: SliceId::WHOLE,
            base: 0,
            jobs,
            time_limit: None,
            check_determinism: false,
            progress: ProgressMode::Off,
            in_flight: None,
        }
    }

    #[test]
    fn seed_ranges_parse_exclusive_and_inclusive_and_reject_nonsense() {
        assert_eq!(parse_seed_range("0..1000").unwrap(), 0..1000);
        assert_eq!(parse_seed_range("5..=5").unwrap(), 5..6);
        for bad in ["", "5", "5..5", "9..3", "a..b", "0..-1", "1..=18446744073709551615"] {
            assert!(parse_seed_range(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("ten minutes").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn sweep_runs_every_seed_once_in_order_whatever_the_job_count() {
        let one = sweep(plan("partition-storm", 0..60, 1), &crate::fake::run).unwrap();
        let four = sweep(plan("partition-storm", 0..60, 4), &crate::fake::run).unwrap();
        let seeds: Vec<u64> = four.outcomes.iter().map(|outcome| outcome.config.seed).collect();
        assert_eq!(seeds, (0..60).collect::<Vec<_>>());
        assert_eq!(one.outcomes, four.outcomes);
    }

    #[test]
    fn sweep_counts_failures_by_checker_and_exits_with_the_worst_verdict() {
        // crash-loop has crashes but no drops: liveness fails at 7, 17, ..., panics at 13.
        let result = sweep(plan("crash-loop", 0..20, 3), &crate::fake::run).unwrap();
        assert_eq!(result.passed(), 17);
        assert_eq!(result.failures_by_checker(), BTreeMap::from([(Checker::Liveness, 2), (Checker::Assertion, 1)]));
        assert_eq!(result.panics(), 1);
        assert_eq!(result.exit_code(), 4);
        let summary = result.render_summary();
        assert!(summary.contains("shoal-sim replay --seed 13 --scenario crash-loop"), "{summary}");
        assert!(summary.contains("shoal-sim replay --seed 17 --scenario crash-loop"), "{summary}");
        assert!(!summary.contains("--seed 3 "), "{summary}");
    }

    #[test]
    fn marks_are_tallied_by_hits_and_seeds_and_missing_ones_named() {
        // The fake hits `fake_common` twice in every seed, `fake_rare` once
        // in every third (0, 3, 6, 9).
        let result = sweep(plan("steady", 0..10, 2), &crate::fake::run).unwrap();
        let marks = result.marks();
        assert_eq!(marks[crate::fake::FAKE_MARK_COMMON], MarkTally { hits: 20, seeds: 10 });
        assert_eq!(marks[crate::fake::FAKE_MARK_RARE], MarkTally { hits: 4, seeds: 4 });
        let known_never_hit = shoal_sim::MARKS_KNOWN[0];
        assert_eq!(marks[known_never_hit], MarkTally::default(), "known marks show even when never hit");
        let required = parse_mark_list("fake_rare, fake_common,,nope");
        assert_eq!(result.missing_marks(&required), ["nope"]);
        let table = result.render_marks();
        assert!(table.contains("fake_rare"), "{table}");
        assert!(table.contains("never hit"), "{table}");
        let one = sweep(plan("steady", 1..3, 1), &crate::fake::run).unwrap();
        assert_eq!(one.missing_marks(&required), ["fake_rare", "nope"]);
    }

    #[test]
    fn availability_percentiles_over_seeds() {
        // The fake's longest window is seed mod 7 ms.
        let result = sweep(plan("steady", 0..100, 2), &crate::fake::run).unwrap();
        let stats = result.availability();
        assert_eq!(stats.max_ns, 6_000_000);
        assert_eq!(stats.p50_ns, 3_000_000);
        assert_eq!(stats.p99_ns, 6_000_000);
        assert!(result.render_summary().contains("p50 3 p99 6 max 6"), "{}", result.render_summary());
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[1, 2, 3, 4], 50), 2);
    }

    #[test]
    fn base_seed_offsets_the_seeds() {
        let mut offset = plan("steady", 0..3, 2);
        offset.base = 1000;
        let result = sweep(offset, &crate::fake::run).unwrap();
        let seeds: Vec<u64> = result.outcomes.iter().map(|outcome| outcome.config.seed).collect();
        assert_eq!(seeds, [1000, 1001, 1002]);
        assert!(result.render_summary().contains("base seed"));
    }

    #[test]
    fn time_limit_stops_starting_seeds_and_says_so() {
        let slow = |config: &shoal_sim::RunConfig| {
            std::thread::sleep(Duration::from_millis(20));
            crate::fake::run(config)
        };
        let mut limited = plan("steady", 0..1000, 2);
        limited.time_limit = Some(Duration::from_millis(100));
        let result = sweep(limited, &slow).unwrap();
        assert!(result.stopped_by_time_limit);
        assert!(result.outcomes.len() < 1000 && !result.outcomes.is_empty());
        assert!(result.render_summary().contains("stopped by --time-limit"));
    }

    #[test]
    fn check_determinism_runs_each_seed_twice_and_flags_differences() {
        let mut checked = plan("steady", 0..6, 2);
        checked.check_determinism = true;
        let clean = sweep(checked.clone(), &crate::fake::run).unwrap();
        assert!(clean.nondeterministic.is_empty());
        assert_eq!(clean.exit_code(), 0);
        assert!(clean.render_summary().contains("non-deterministic"));
        let noisy = sweep(checked, &crate::fake::run_nondeterministic).unwrap();
        assert_eq!(noisy.nondeterministic.iter().map(|(seed, _)| *seed).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
        assert_eq!(noisy.exit_code(), EXIT_NONDETERMINISM);
        let summary = noisy.render_summary();
        assert!(summary.contains("shoal-sim replay --seed 3 --scenario steady --check-determinism"), "{summary}");
    }

    #[test]
    fn in_flight_names_the_running_seed_until_it_finishes() {
        let in_flight: InFlight = Arc::default();
        let watched = in_flight.clone();
        let slow_seed_2 = move |config: &shoal_sim::RunConfig| {
            if config.seed == 2 {
                std::thread::sleep(Duration::from_millis(120));
                assert_eq!(overdue(&watched, Duration::from_secs(60)), None, "not overdue for a long limit");
                let (seed, elapsed) = overdue(&watched, Duration::from_millis(100)).expect("seed 2 is overdue");
                assert_eq!(seed, 2);
                assert!(elapsed >= Duration::from_millis(100));
            }
            crate::fake::run(config)
        };
        let mut watched_plan = plan("steady", 0..4, 1);
        watched_plan.in_flight = Some(in_flight.clone());
        let result = sweep(watched_plan, &slow_seed_2).unwrap();
        assert_eq!(result.outcomes.len(), 4, "the asserts inside the runner passed (a panic would fail seed 2)");
        assert_eq!(result.exit_code(), 0);
        assert!(in_flight.lock().unwrap().is_empty(), "finished seeds leave the table");
    }

    #[test]
    fn zero_jobs_is_a_config_error() {
        assert!(matches!(sweep(plan("steady", 0..3, 0), &crate::fake::run), Err(SweepError::BadJobs { jobs: 0 })));
    }
}
