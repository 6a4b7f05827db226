//! The `shoal-sim` command line: argument parsing and dispatch.
//!
//! Owns the commands, their output and their exit codes (0 pass, 1 usage or
//! config error, 2 safety, 3 liveness, 4 panic, 5 non-determinism, 6 a
//! required coverage mark never hit). The work
//! itself lives in the sibling modules; the simulator comes in as a `Runner`,
//! so tests drive every command with a fake.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use shoal_sim::{RunConfig, RunOutcome, Verdict};

use crate::catalog::{self, CatalogError, SCENARIOS};
use crate::merge::{self, MergeError};
use crate::replay::{self, ReplayError};
use crate::report::{self, ReportError, ReportFormat, ReportMeta};
use crate::runner::{Runner, run_caught};
use crate::shrink::{self, ShrinkResult};
use crate::slice::{self, SliceError, SliceId};
use crate::sweep::{self, InFlight, ProgressMode, SweepError, SweepPlan};

pub const EXIT_USAGE: i32 = 1;
pub const EXIT_NONDETERMINISM: i32 = sweep::EXIT_NONDETERMINISM;
const SCENARIO_DEFAULT: &str = "swarm";
const BENCH_SEEDS_DEFAULT: u64 = 20;
/// A sweep exits with this code when a seed never finishes: like a panic, the
/// run reached no verdict.
pub const EXIT_HUNG: i32 = 4;
const SEED_TIMEOUT_DEFAULT: &str = "10m";
const WATCHDOG_PERIOD_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Parser)]
#[command(
    name = "shoal-sim",
    version,
    about = "Deterministic simulation of shoal clusters: run, sweep, replay and shrink seeds",
    after_help = "Exit codes: 0 pass, 1 usage/config error, 2 safety violation, 3 liveness violation, 4 panic, 5 non-determinism, 6 every seed passed but a mark named by `sweep --require-marks` was never hit."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the named scenarios and their fault mixes.
    List,
    /// Run one seed and print a one-line summary.
    Run(RunArgs),
    /// Run a range of seeds on worker threads; exit with the worst verdict.
    Sweep(SweepArgs),
    /// Run one seed again, optionally writing its trace or checking determinism.
    Replay(ReplayArgs),
    /// Shrink a failing seed's config while it fails with the same checker.
    Shrink(ShrinkArgs),
    /// Print a seed's config as JSON (what `shrink` writes and `--config`
    /// reads), to edit and run, e.g. with a longer liveness phase.
    Config(Target),
    /// Render reports of a run.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Measure simulator throughput: seeds/min, events/s, virtual-to-wall ratio.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct Target {
    /// The seed to run.
    #[arg(long, required_unless_present = "config")]
    seed: Option<u64>,
    /// Scenario name (see `shoal-sim list`).
    #[arg(long, default_value = SCENARIO_DEFAULT)]
    scenario: String,
    /// Run a saved config (as written by `shrink`) instead of --seed/--scenario.
    #[arg(long, conflicts_with_all = ["seed", "scenario"])]
    config: Option<PathBuf>,
}

impl Target {
    fn resolve(&self) -> Result<RunConfig, CliError> {
        match (&self.config, self.seed) {
            (Some(path), _) => Ok(replay::load_config(path)?),
            (None, Some(seed)) => Ok(catalog::find(&self.scenario)?.config(seed)),
            (None, None) => unreachable!("clap requires --seed unless --config"),
        }
    }
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// Also write a machine-readable report.
    #[arg(long, value_enum, requires = "report_file")]
    report: Option<ReportFormat>,
    /// Where to write the report.
    #[arg(long, requires = "report")]
    report_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Debug, Args)]
struct SweepArgs {
    /// Seed range START..END (END exclusive) or START..=END.
    #[arg(long)]
    seeds: String,
    /// Worker threads (default: available cores).
    #[arg(long)]
    jobs: Option<usize>,
    #[arg(long, default_value = SCENARIO_DEFAULT)]
    scenario: String,
    /// Stop starting new seeds after this wall-clock time (e.g. 90s, 10m, 1h).
    #[arg(long)]
    time_limit: Option<String>,
    /// Offset the range by a base seed hashed from `git rev-parse HEAD`.
    #[arg(long)]
    seed_from_git: bool,
    /// Run only slice I of N of the range (0 <= I < N), in contiguous blocks;
    /// the same seeds whatever --jobs is. `env:VAR/N` reads I from $VAR (e.g.
    /// env:JOB_COMPLETION_INDEX/8 in a Kubernetes Indexed Job). Join the
    /// slices' JSON reports with `shoal-sim report merge`.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Run every seed twice and compare (exit 5 if any seed differs).
    #[arg(long)]
    check_determinism: bool,
    /// Wall-clock time one seed may take; past it the sweep names the seed and
    /// exits 4 (a run cannot be stopped from outside).
    #[arg(long, default_value = SEED_TIMEOUT_DEFAULT)]
    seed_timeout: String,
    /// No progress bar or progress lines.
    #[arg(long)]
    no_progress: bool,
    /// Coverage marks (comma-separated) the sweep must hit at least once; if
    /// every seed passed but one of these was never hit, exit 6. The mark
    /// table after the summary lists every mark and how often it was hit.
    #[arg(long, value_name = "A,B,C")]
    require_marks: Option<String>,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    #[command(flatten)]
    target: Target,
    /// Write the run's trace as JSON lines.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Write the client-visible history (invoke / ok / fail / indeterminate)
    /// as JSON lines, for external linearizability checkers (README).
    #[arg(long)]
    history: Option<PathBuf>,
    /// Run twice and compare trace hashes (exit 5 on a mismatch).
    #[arg(long)]
    check_determinism: bool,
}

#[derive(Debug, Args)]
struct ShrinkArgs {
    #[command(flatten)]
    target: Target,
    /// Where to write the shrunk config (default: shoal-sim-shrunk-SCENARIO-seedN.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Draw a run as an SVG timeline (or HTML page, by the --out extension).
    Timeline {
        #[command(flatten)]
        target: Target,
        /// Output file: .svg, or .html / .htm for a page.
        #[arg(long)]
        out: PathBuf,
    },
    /// Join the JSON reports of a sweep's slices (`sweep --shard I/N --report
    /// json`) into one; exit with the worst verdict, 1 if slices are missing.
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// JSON reports of the slices, in any order.
    #[arg(required = true, value_name = "REPORT.json")]
    reports: Vec<PathBuf>,
    /// Write the merged JSON report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the merged JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// How many seeds to run, one after another.
    #[arg(long, default_value_t = BENCH_SEEDS_DEFAULT)]
    seeds: u64,
    #[arg(long, default_value = "steady")]
    scenario: String,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Sweep(#[from] SweepError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Slice(#[from] SliceError),
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error("--seeds must be at least 1")]
    BenchSeedsZero,
}

/// Parse `args` (including the program name), run the command, and return the
/// process exit code. Human output goes to `out`; errors and progress to stderr.
pub fn execute<I, T>(args: I, runner: Runner<'_>, out: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = error.print();
            return code;
        }
    };
    match dispatch(cli.command, runner, out) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("shoal-sim: error: {error}");
            EXIT_USAGE
        }
    }
}

fn dispatch(command: Command, runner: Runner<'_>, out: &mut dyn Write) -> Result<i32, CliError> {
    match command {
        Command::List => list(out),
        Command::Run(args) => run(args, runner, out),
        Command::Sweep(args) => sweep_command(args, runner, out),
        Command::Replay(args) => replay_command(args, runner, out),
        Command::Shrink(args) => shrink_command(args, runner, out),
        Command::Config(target) => {
            write!(out, "{}", replay::config_json(&target.resolve()?))?;
            Ok(0)
        }
        Command::Report(ReportCommand::Timeline { target, out: path }) => timeline(&target, &path, runner, out),
        Command::Report(ReportCommand::Merge(args)) => merge_command(args, out),
        Command::Bench(args) => {
            if args.seeds == 0 {
                return Err(CliError::BenchSeedsZero);
            }
            let result = crate::bench::bench(catalog::find(&args.scenario)?, 0..args.seeds, runner);
            writeln!(out, "{}", result.render())?;
            Ok(0)
        }
    }
}

fn list(out: &mut dyn Write) -> Result<i32, CliError> {
    for scenario in &SCENARIOS {
        let example = scenario.config(0);
        writeln!(out, "{:<16} {}", scenario.name, scenario.summary)?;
        writeln!(
            out,
            "{:<16} replicas {} · shards {} · clients {} · safety {} + liveness {}",
            "",
            example.replica_count,
            example.shards_per_replica,
            example.client_count,
            crate::format_seconds(example.safety_time_ns),
            crate::format_seconds(example.liveness_time_ns)
        )?;
        let mix = catalog::fault_mix_summary(&example.faults);
        let label = if scenario.name == "swarm" { "seed 0 draws" } else { "faults" };
        writeln!(out, "{:<16} {label}: {mix}", "")?;
    }
    Ok(0)
}

/// `PASS  swarm seed 7 | ops 120 | view changes 2 | faults 40 | trace 1f.. | virtual 4.000 s`
pub fn summary_line(outcome: &RunOutcome) -> String {
    let verdict = match &outcome.verdict {
        Verdict::Pass => "PASS".to_string(),
        other => format!("FAIL {}", sweep::verdict_line(other)),
    };
    format!(
        "{verdict} | {} seed {} | ops committed {} | view changes {} | faults injected {} | trace {:016x} | virtual {}",
        outcome.config.scenario,
        outcome.config.seed,
        outcome.ops_committed,
        outcome.view_changes,
        outcome.faults_injected_total,
        outcome.trace_hash,
        crate::format_seconds(outcome.virtual_time_ns)
    )
}

/// The command that reproduces `config`: by seed and scenario when the
/// scenario would rebuild it, else by the saved config file.
fn reproduce_command(config: &RunConfig, config_file: Option<&Path>) -> String {
    match config_file {
        Some(path) => format!("shoal-sim replay --config {}", path.display()),
        None => crate::replay_command(config.seed, &config.scenario),
    }
}

fn print_outcome(out: &mut dyn Write, outcome: &RunOutcome, config_file: Option<&Path>) -> Result<(), CliError> {
    writeln!(out, "{}", summary_line(outcome))?;
    if outcome.verdict != Verdict::Pass {
        writeln!(out, "replay: {}", reproduce_command(&outcome.config, config_file))?;
    }
    Ok(())
}

fn write_report(
    args: &ReportArgs,
    outcomes: &[RunOutcome],
    meta: &ReportMeta,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if let (Some(format), Some(path)) = (args.report, &args.report_file) {
        report::write(format, path, outcomes, meta)?;
        writeln!(out, "report: {}", path.display())?;
    }
    Ok(())
}

fn run(args: RunArgs, runner: Runner<'_>, out: &mut dyn Write) -> Result<i32, CliError> {
    let config = args.target.resolve()?;
    let outcome = run_caught(runner, &config);
    print_outcome(out, &outcome, args.target.config.as_deref())?;
    let seeds = config.seed..config.seed.saturating_add(1);
    let meta = ReportMeta {
        scenario: config.scenario.clone(),
        base_seed: 0,
        seed_range: seeds.clone(),
        slice: SliceId::WHOLE,
        slice_range: seeds,
        seeds_planned: 1,
        stopped_by_time_limit: false,
        nondeterministic: Vec::new(),
        wall: std::time::Duration::ZERO,
    };
    write_report(&args.report, std::slice::from_ref(&outcome), &meta, out)?;
    Ok(outcome.verdict.exit_code())
}

fn sweep_command(args: SweepArgs, runner: Runner<'_>, out: &mut dyn Write) -> Result<i32, CliError> {
    let scenario = catalog::find(&args.scenario)?;
    let whole = sweep::parse_seed_range(&args.seeds)?;
    // Resolve the slice before any work, so a bad --shard fails every job of
    // a matrix at once, not after a long sweep.
    let slice = match &args.shard {
        Some(text) => slice::parse_spec(text)?.resolve(|var| std::env::var(var).ok())?,
        None => SliceId::WHOLE,
    };
    let range = slice::slice_range(&whole, slice)?;
    let time_limit = args.time_limit.as_deref().map(sweep::parse_duration).transpose()?;
    let base = if args.seed_from_git { sweep::git_base_seed()? } else { 0 };
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let progress = if args.no_progress { ProgressMode::Off } else { ProgressMode::Auto };
    let seed_timeout = sweep::parse_duration(&args.seed_timeout)?;
    let check_determinism = args.check_determinism;
    let in_flight = InFlight::default();
    spawn_watchdog(in_flight.clone(), seed_timeout, scenario.name);
    let in_flight = Some(in_flight);
    let plan = SweepPlan { scenario, range, slice, base, jobs, time_limit, check_determinism, progress, in_flight };
    let result = sweep::sweep(plan, runner)?;
    write!(out, "{}", result.render_summary())?;
    write!(out, "{}", result.render_marks())?;
    let required = args.require_marks.as_deref().map(sweep::parse_mark_list).unwrap_or_default();
    let missing = result.missing_marks(&required);
    if !missing.is_empty() {
        writeln!(out, "required marks never hit: {}", missing.join(", "))?;
    }
    let meta = ReportMeta {
        scenario: scenario.name.to_string(),
        base_seed: base,
        seed_range: whole,
        slice,
        slice_range: result.plan.range.clone(),
        seeds_planned: result.plan.seed_count(),
        stopped_by_time_limit: result.stopped_by_time_limit,
        nondeterministic: result.nondeterministic.clone(),
        wall: result.wall,
    };
    write_report(&args.report, &result.outcomes, &meta, out)?;
    let code = result.exit_code();
    Ok(if code == 0 && !missing.is_empty() { sweep::EXIT_MARKS_MISSING } else { code })
}

/// Watch a sweep's running seeds; if one outlives `limit`, name it with its
/// replay command and exit the process, since the run itself cannot be
/// stopped. Without this a hung seed hangs CI until its job is killed, with
/// no word of which seed it was.
#[allow(clippy::disallowed_methods)] // a wall-clock watchdog outside every simulated run
fn spawn_watchdog(in_flight: InFlight, limit: Duration, scenario: &'static str) {
    let period = WATCHDOG_PERIOD_MAX.min(limit / 4).max(Duration::from_millis(10));
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(period);
            if let Some((seed, elapsed)) = sweep::overdue(&in_flight, limit) {
                eprintln!(
                    "shoal-sim: seed {seed} still running after {:.1} s (--seed-timeout {:.1} s): the run hangs; exiting {EXIT_HUNG}\nreplay: {}",
                    elapsed.as_secs_f64(),
                    limit.as_secs_f64(),
                    crate::replay_command(seed, scenario)
                );
                std::process::exit(EXIT_HUNG);
            }
        }
    });
}

fn merge_command(args: MergeArgs, out: &mut dyn Write) -> Result<i32, CliError> {
    let inputs = args.reports.iter().map(|path| merge::load(path)).collect::<Result<Vec<_>, _>>()?;
    let merged = merge::merge(&inputs)?;
    write!(out, "{}", merge::render_summary(&merged))?;
    for (format, path) in [(ReportFormat::Json, &args.out), (ReportFormat::Junit, &args.junit)] {
        if let Some(path) = path {
            report::write_report(format, path, &merged)?;
            writeln!(out, "report: {}", path.display())?;
        }
    }
    Ok(merged.exit_code)
}

fn replay_command(args: ReplayArgs, runner: Runner<'_>, out: &mut dyn Write) -> Result<i32, CliError> {
    let mut config = args.target.resolve()?;
    config.record_trace = args.trace.is_some();
    config.record_history = args.history.is_some();
    let config_file = args.target.config.as_deref();
    let (outcome, code) = if args.check_determinism {
        let check = replay::check_determinism(runner, &config);
        print_outcome(out, &check.first, config_file)?;
        match &check.mismatch {
            None => {
                writeln!(out, "determinism: OK (two runs, trace hash {:016x})", check.first.trace_hash)?;
                let code = check.first.verdict.exit_code();
                (check.first, code)
            }
            Some(mismatch) => {
                writeln!(out, "determinism: MISMATCH: {mismatch}")?;
                writeln!(out, "replay: {} --check-determinism", reproduce_command(&config, config_file))?;
                (check.first, EXIT_NONDETERMINISM)
            }
        }
    } else {
        let outcome = run_caught(runner, &config);
        print_outcome(out, &outcome, config_file)?;
        let code = outcome.verdict.exit_code();
        (outcome, code)
    };
    if let Some(path) = &args.trace {
        replay::write_trace(path, &outcome.trace)?;
        writeln!(out, "trace: {} events written to {}", outcome.trace.len(), path.display())?;
    }
    if let Some(path) = &args.history {
        replay::write_history(path, &outcome.history)?;
        writeln!(out, "history: {} events written to {}", outcome.history.len(), path.display())?;
    }
    Ok(code)
}

fn shrink_command(args: ShrinkArgs, runner: Runner<'_>, out: &mut dyn Write) -> Result<i32, CliError> {
    let config = args.target.resolve()?;
    writeln!(
        out,
        "shrink: {} seed {} (at most {} attempts)",
        config.scenario,
        config.seed,
        shrink::SHRINK_ATTEMPTS_MAX
    )?;
    let mut step_error = None;
    let result = shrink::shrink(runner, &config, &mut |step| {
        if let Err(error) = writeln!(out, "  {step}") {
            step_error.get_or_insert(error);
        }
    });
    if let Some(error) = step_error {
        return Err(error.into());
    }
    let shrunk = match result {
        ShrinkResult::Passes(outcome) => {
            writeln!(out, "{}", summary_line(&outcome))?;
            writeln!(out, "shrink: the seed passes; nothing to shrink")?;
            return Ok(0);
        }
        ShrinkResult::Shrunk(shrunk) => shrunk,
    };
    let kept = shrunk.steps.iter().filter(|step| step.kept).count();
    writeln!(
        out,
        "shrink: {} attempts, {kept} kept{}",
        shrunk.steps.len(),
        if shrunk.attempts_exhausted {
            " (stopped at the attempt limit; shrink again from the file to go further)"
        } else {
            ""
        }
    )?;
    writeln!(out, "original: {}", summary_line(&shrunk.original))?;
    writeln!(out, "minimal:  {}", summary_line(&shrunk.minimal_outcome))?;
    let minimal = &shrunk.minimal;
    writeln!(
        out,
        "minimal config: fault_budget {} · clients {} · safety {} · {}",
        minimal.fault_budget.map_or("none".to_string(), |budget| budget.to_string()),
        minimal.client_count,
        crate::format_seconds(minimal.safety_time_ns),
        catalog::fault_mix_summary(&minimal.faults)
    )?;
    let path = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("shoal-sim-shrunk-{}-seed{}.json", minimal.scenario, minimal.seed)));
    replay::save_config(&path, minimal)?;
    writeln!(out, "replay: shoal-sim replay --config {}", path.display())?;
    Ok(shrunk.minimal_outcome.verdict.exit_code())
}

fn timeline(target: &Target, path: &Path, runner: Runner<'_>, out: &mut dyn Write) -> Result<i32, CliError> {
    let config = target.resolve()?;
    let outcome = run_caught(runner, &config);
    let html = path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("html") || ext.eq_ignore_ascii_case("htm"));
    let text = if html { crate::timeline::render_html(&outcome) } else { crate::timeline::render_svg(&outcome) };
    std::fs::write(path, text).map_err(|source| ReplayError::Write { path: path.display().to_string(), source })?;
    writeln!(out, "{}", summary_line(&outcome))?;
    writeln!(out, "timeline: {} ({} events)", path.display(), outcome.timeline.len())?;
    // Drawing a failing run is a success of this command.
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake;

    fn cli(args: &[&str]) -> (i32, String) {
        let mut out = Vec::new();
        let code = execute(std::iter::once("shoal-sim").chain(args.iter().copied()), &fake::run, &mut out);
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn run_prints_one_line_and_exits_with_the_verdict() {
        let (code, text) = cli(&["run", "--seed", "2", "--scenario", "partition-storm"]);
        assert_eq!(code, 0);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("PASS | partition-storm seed 2 | ops committed "), "{text}");
        let (code, text) = cli(&["run", "--seed", "1", "--scenario", "partition-storm"]);
        assert_eq!(code, 2);
        assert!(text.contains("FAIL SAFETY Agreement"), "{text}");
        assert!(text.contains("replay: shoal-sim replay --seed 1 --scenario partition-storm"), "{text}");
        assert_eq!(cli(&["run", "--seed", "7", "--scenario", "crash-loop"]).0, 3);
        assert_eq!(cli(&["run", "--seed", "13", "--scenario", "steady"]).0, 4);
    }

    #[test]
    fn usage_and_config_errors_exit_1() {
        assert_eq!(cli(&["run"]).0, 1);
        assert_eq!(cli(&["run", "--seed", "1", "--scenario", "nope"]).0, 1);
        assert_eq!(cli(&["sweep", "--seeds", "9..3"]).0, 1);
        assert_eq!(cli(&["sweep", "--seeds", "0..3", "--time-limit", "soon"]).0, 1);
        assert_eq!(cli(&["sweep", "--seeds", "0..3", "--report", "json"]).0, 1, "--report needs --report-file");
        assert_eq!(cli(&["replay", "--config", "/nonexistent/c.json"]).0, 1);
        assert_eq!(cli(&["bench", "--seeds", "0"]).0, 1);
        assert_eq!(cli(&["replay", "--config", "c.json", "--scenario", "steady"]).0, 1, "a config names its scenario");
        assert_eq!(cli(&["--help"]).0, 0);
    }

    #[test]
    fn list_shows_every_scenario_with_its_fault_mix() {
        let (code, text) = cli(&["list"]);
        assert_eq!(code, 0);
        for scenario in &SCENARIOS {
            assert!(text.contains(scenario.name), "{text}");
        }
        assert!(text.contains("faults: no faults"));
        assert!(text.contains("network_partition_ppm=3000"));
    }

    #[test]
    fn replay_check_determinism_exits_5_on_a_noisy_runner() {
        let mut out = Vec::new();
        let args = ["shoal-sim", "replay", "--seed", "2", "--scenario", "steady", "--check-determinism"];
        assert_eq!(execute(args, &fake::run_nondeterministic, &mut out), EXIT_NONDETERMINISM);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("determinism: MISMATCH") && text.contains("first differing event"), "{text}");
        let (code, text) = cli(&args[1..]);
        assert_eq!(code, 0);
        assert!(text.contains("determinism: OK"), "{text}");
    }
}
