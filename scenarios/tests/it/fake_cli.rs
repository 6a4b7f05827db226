//! The CLI over the fake simulator (`shoal_scenarios::fake`), whose failures
//! are known: exit codes, summaries and the shrink → replay round trip.

use shoal_scenarios::cli::execute;
use shoal_scenarios::fake;
use shoal_scenarios::runner::Runner;

use crate::scratch_dir;

fn cli(runner: Runner<'_>, args: &[&str]) -> (i32, String) {
    let mut out = Vec::new();
    let code = execute(std::iter::once("shoal-sim").chain(args.iter().copied()), runner, &mut out);
    (code, String::from_utf8(out).unwrap())
}

#[test]
fn sweep_with_failures_lists_each_replay_command_and_exits_with_the_worst_verdict() {
    // partition-storm under the fake: Agreement fails at seed % 4 == 1, panics at 13.
    let (code, summary) =
        cli(&fake::run, &["sweep", "--seeds", "0..20", "--scenario", "partition-storm", "--jobs", "3"]);
    assert_eq!(code, 4, "a panic is the worst verdict here:\n{summary}");
    assert!(summary.contains("Agreement"), "{summary}");
    assert!(summary.contains("Assertion"), "{summary}");
    for seed in [1, 5, 9, 13, 17] {
        let command = format!("shoal-sim replay --seed {seed} --scenario partition-storm");
        assert!(summary.contains(&command), "missing `{command}`:\n{summary}");
    }
    assert_eq!(summary.matches("shoal-sim replay").count(), 5, "{summary}");
    let (code, _) = cli(&fake::run, &["sweep", "--seeds", "0..12", "--scenario", "crash-loop"]);
    assert_eq!(code, 3, "crash-loop seed 7 fails liveness, nothing worse before 12");
}

#[test]
fn shrink_writes_a_config_that_replay_reproduces_with_the_same_checker() {
    let out = scratch_dir("shrink").join("min.json");
    let (code, text) =
        cli(&fake::run, &["shrink", "--seed", "9", "--scenario", "partition-storm", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("attempt   1: fault_budget none -> "), "{text}");
    assert!(text.contains("(rejected)") && text.contains("(kept)"), "{text}");
    assert!(text.contains("minimal config: fault_budget 3 · clients 2"), "{text}");
    let replay = format!("replay: shoal-sim replay --config {}", out.display());
    assert!(text.contains(&replay), "{text}");
    let (code, replayed) = cli(&fake::run, &["replay", "--config", out.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(replayed.contains("FAIL SAFETY Agreement"), "{replayed}");
    assert!(replayed.contains(&format!("replay: shoal-sim replay --config {}", out.display())), "{replayed}");
}

#[test]
fn run_report_junit_marks_the_panic_as_an_error() {
    let file = scratch_dir("run-junit").join("run.xml");
    let (code, _) = cli(
        &fake::run,
        &["run", "--seed", "63", "--scenario", "steady", "--report", "junit", "--report-file", file.to_str().unwrap()],
    );
    assert_eq!(code, 4);
    let xml = std::fs::read_to_string(&file).unwrap();
    assert!(xml.contains("errors=\"1\"") && xml.contains("<error type=\"Panic\""), "{xml}");
    assert!(xml.contains("fake: assertion failed"), "{xml}");
}

#[test]
fn timeline_of_a_violation_marks_it() {
    let file = scratch_dir("fake-timeline").join("violation.svg");
    let (code, text) = cli(
        &fake::run,
        &["report", "timeline", "--seed", "1", "--scenario", "partition-storm", "--out", file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{text}");
    let svg = std::fs::read_to_string(&file).unwrap();
    assert!(svg.contains("violation: op 7 committed with two checksums"));
}

#[test]
fn sweep_check_determinism_exits_5_and_names_the_replay_for_a_noisy_simulator() {
    let args = ["sweep", "--seeds", "0..4", "--scenario", "steady", "--check-determinism"];
    let (code, summary) = cli(&fake::run_nondeterministic, &args);
    assert_eq!(code, 5, "{summary}");
    assert!(summary.contains("non-deterministic seeds"), "{summary}");
    assert!(summary.contains("shoal-sim replay --seed 2 --scenario steady --check-determinism"), "{summary}");
    let (code, summary) = cli(&fake::run, &args);
    assert_eq!(code, 0, "{summary}");
}

/// The `fake_sim` example: the `shoal-sim` CLI over the fake, as a process
/// (cargo builds examples before running tests).
fn fake_sim_binary() -> std::path::PathBuf {
    let shoal_sim = std::path::Path::new(env!("CARGO_BIN_EXE_shoal-sim"));
    let path = shoal_sim.parent().unwrap().join("examples").join(format!("fake_sim{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} missing: build it with `cargo build -p shoal-scenarios --examples`", path.display());
    path
}

#[test]
fn a_hung_seed_is_named_with_its_replay_command_and_the_sweep_exits_4() {
    let output = std::process::Command::new(fake_sim_binary())
        .args(["sweep", "--seeds", "0..8", "--scenario", "steady", "--jobs", "2", "--seed-timeout", "500ms"])
        .env("FAKE_SIM_HANG_SEED", "3")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("seed 3 still running after"), "{stderr}");
    assert!(stderr.contains("replay: shoal-sim replay --seed 3 --scenario steady"), "{stderr}");
}

#[test]
fn sweep_prints_the_mark_table_and_require_marks_exits_6_only_when_all_seeds_pass() {
    // steady under the fake passes seeds 0..12; `fake_rare` is hit in seeds 0, 3, 6, 9.
    let (code, text) = cli(&fake::run, &["sweep", "--seeds", "0..12", "--scenario", "steady"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("coverage marks"), "{text}");
    let rare = text.lines().find(|line| line.trim_start().starts_with(fake::FAKE_MARK_RARE)).expect("rare mark listed");
    assert_eq!(rare.split_whitespace().skip(1).collect::<Vec<_>>(), ["4", "4"], "{rare}");
    assert!(text.contains("no-commit window ms"), "{text}");
    let (code, text) =
        cli(&fake::run, &["sweep", "--seeds", "0..12", "--scenario", "steady", "--require-marks", "fake_rare"]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = cli(
        &fake::run,
        &["sweep", "--seeds", "1..3", "--scenario", "steady", "--require-marks", "fake_common,fake_rare"],
    );
    assert_eq!(code, 6, "{text}");
    assert!(text.contains("required marks never hit: fake_rare"), "{text}");
    // A failing seed's verdict wins over a coverage gap.
    let (code, _) =
        cli(&fake::run, &["sweep", "--seeds", "0..12", "--scenario", "crash-loop", "--require-marks", "no_such_mark"]);
    assert_eq!(code, 3);
}

#[test]
fn json_report_carries_summed_marks_in_the_shape_merge_reads() {
    let path = scratch_dir("marks-report").join("report.json");
    let (code, _) = cli(
        &fake::run,
        &[
            "sweep",
            "--seeds",
            "0..6",
            "--scenario",
            "steady",
            "--report",
            "json",
            "--report-file",
            path.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0);
    let report = shoal_scenarios::merge::load(&path).expect("merge reads what sweep writes");
    let expected = std::collections::BTreeMap::from([
        (fake::FAKE_MARK_COMMON.to_string(), 12),
        (fake::FAKE_MARK_RARE.to_string(), 2),
    ]);
    assert_eq!(report.report.marks, expected);
}

#[test]
fn config_prints_a_seeds_config_that_run_takes_back_as_it_is() {
    let (code, json) = cli(&fake::run, &["config", "--seed", "9", "--scenario", "partition-storm"]);
    assert_eq!(code, 0, "{json}");
    let config: shoal_sim::RunConfig = serde_json::from_str(&json).expect("the printed config parses");
    assert_eq!(config, shoal_scenarios::catalog::partition_storm(9), "the printed config is the seed's");
    let path = scratch_dir("config").join("seed9.json");
    std::fs::write(&path, &json).unwrap();
    let (code, summary) = cli(&fake::run, &["run", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "the fake fails partition-storm seed 9 the same way from the file:\n{summary}");
}
