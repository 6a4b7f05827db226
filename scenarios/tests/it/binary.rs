//! The `shoal-sim` binary over `shoal_sim::run`.

use std::process::{Command, Output};

use crate::scratch_dir;

fn shoal_sim(args: &[&str]) -> (i32, String, String) {
    let Output { status, stdout, stderr } =
        Command::new(env!("CARGO_BIN_EXE_shoal-sim")).args(args).output().expect("run shoal-sim");
    let code = status.code().expect("shoal-sim exits, it is not killed");
    (code, String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap())
}

#[test]
fn list_names_every_scenario() {
    let (code, stdout, _) = shoal_sim(&["list"]);
    assert_eq!(code, 0);
    for name in ["steady", "partition-storm", "disk-rot", "crash-loop", "shard-chaos", "swarm"] {
        assert!(stdout.lines().any(|line| line.starts_with(name)), "{name} missing from:\n{stdout}");
    }
}

#[test]
fn run_prints_one_summary_line_with_every_field() {
    let (code, stdout, _) = shoal_sim(&["run", "--seed", "3", "--scenario", "steady"]);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let line = stdout.trim();
    for field in ["steady seed 3", "ops committed", "view changes", "faults injected", "trace ", "virtual "] {
        assert!(line.contains(field), "`{field}` missing from {line}");
    }
    // The exit code is the verdict's, whatever the simulator decides today.
    let expected = if line.starts_with("PASS") { 0 } else { 2 };
    assert!(code == expected || code == 3 || code == 4, "exit {code} for {line}");
}

#[test]
fn usage_and_config_errors_exit_1_with_a_hint() {
    let (code, _, stderr) = shoal_sim(&["run", "--seed", "1", "--scenario", "no-such"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("shoal-sim list"), "{stderr}");
    assert_eq!(shoal_sim(&["sweep", "--seeds", "10..2"]).0, 1);
    assert_eq!(shoal_sim(&["frobnicate"]).0, 1);
    assert_eq!(shoal_sim(&["replay", "--seed", "1", "--config", "x.json"]).0, 1, "--seed conflicts with --config");
}

#[test]
fn sweep_writes_junit_and_json_reports_and_prints_a_summary() {
    let dir = scratch_dir("sweep-reports");
    let junit = dir.join("sweep.xml");
    let args = ["sweep", "--seeds", "0..12", "--scenario", "steady", "--jobs", "2", "--report", "junit"];
    let (code, stdout, stderr) = shoal_sim(&[&args[..], &["--report-file", junit.to_str().unwrap()]].concat());
    assert!(stdout.contains("shoal-sim sweep summary") && stdout.contains("seeds run"), "{stdout}");
    assert!(stdout.contains("12 / 12"), "{stdout}");
    // Not a TTY: progress comes as lines on stderr, ending at 100%.
    assert!(stderr.contains("sweep: 12/12 seeds (100%)"), "{stderr}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 12);
    let json_file = dir.join("sweep.json");
    let args = ["sweep", "--seeds", "0..4", "--scenario", "swarm", "--no-progress", "--report", "json"];
    let (code_json, _, stderr) = shoal_sim(&[&args[..], &["--report-file", json_file.to_str().unwrap()]].concat());
    assert!(stderr.is_empty(), "--no-progress prints nothing: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    assert_eq!(report["seeds_run"], 4);
    assert_eq!(report["exit_code"], code_json);
    let _ = code;
}

#[test]
fn sweep_from_git_offsets_seeds_by_the_commit_hash() {
    let json_file = scratch_dir("sweep-git").join("git.json");
    let args = ["sweep", "--seeds", "0..2", "--scenario", "steady", "--seed-from-git", "--no-progress"];
    let (code, stdout, stderr) =
        shoal_sim(&[&args[..], &["--report", "json", "--report-file", json_file.to_str().unwrap()]].concat());
    assert_ne!(code, 1, "{stderr}");
    assert!(stdout.contains("base seed"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    let base = report["base_seed"].as_u64().unwrap();
    assert_eq!(report["runs"][1]["seed"].as_u64().unwrap(), base.wrapping_add(1));
}

#[test]
fn replay_is_deterministic_and_writes_a_json_lines_trace() {
    let trace = scratch_dir("replay-trace").join("trace.jsonl");
    let (code, stdout, _) = shoal_sim(&[
        "replay",
        "--seed",
        "5",
        "--scenario",
        "partition-storm",
        "--check-determinism",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_ne!(code, 5, "the simulator must be deterministic: {stdout}");
    assert!(stdout.contains("determinism: OK"), "{stdout}");
    assert!(stdout.contains("events written to"), "{stdout}");
    for line in std::fs::read_to_string(&trace).unwrap().lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(event.get("time_ns").is_some() && event.get("kind").is_some(), "{line}");
    }
}

#[test]
fn replay_of_a_saved_config_runs_that_config() {
    let dir = scratch_dir("replay-config");
    let mut config = shoal_scenarios::catalog::crash_loop(11);
    config.client_count = 1;
    config.fault_budget = Some(2);
    let path = dir.join("config.json");
    shoal_scenarios::replay::save_config(&path, &config).unwrap();
    let (_, by_file, _) = shoal_sim(&["replay", "--config", path.to_str().unwrap()]);
    assert!(by_file.contains("crash-loop seed 11"), "{by_file}");
    let expected = shoal_sim::run(&config);
    assert!(by_file.contains(&format!("trace {:016x}", expected.trace_hash)), "{by_file}");
}

#[test]
fn report_timeline_writes_an_svg_and_an_html_page() {
    let dir = scratch_dir("timeline");
    let svg = dir.join("run.svg");
    let (code, stdout, stderr) =
        shoal_sim(&["report", "timeline", "--seed", "2", "--scenario", "crash-loop", "--out", svg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"") && text.trim_end().ends_with("</svg>"));
    // One lane label per replica (crash spans also name their replica).
    for replica in 0..3 {
        assert_eq!(text.matches(&format!(">replica {replica}<")).count(), 1, "lane {replica}");
    }
    assert_eq!(text.matches(">replica 3<").count(), 0);
    let html = dir.join("run.html");
    let (code, _, _) =
        shoal_sim(&["report", "timeline", "--seed", "2", "--scenario", "crash-loop", "--out", html.to_str().unwrap()]);
    assert_eq!(code, 0);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("<svg"));
}

#[test]
fn bench_reports_throughput() {
    let (code, stdout, _) = shoal_sim(&["bench", "--seeds", "3"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("bench steady: 3 seeds"), "{stdout}");
    assert!(stdout.contains("seeds/min") && stdout.contains("events/s") && stdout.contains("virtual/wall"));
}

#[test]
fn replay_history_writes_json_lines_of_invokes_and_their_outcomes() {
    let path = scratch_dir("history").join("history.jsonl");
    let (code, stdout, _) =
        shoal_sim(&["replay", "--seed", "3", "--scenario", "steady", "--history", path.to_str().unwrap()]);
    let text = std::fs::read_to_string(&path).unwrap();
    let events: Vec<shoal_sim::HistoryEvent> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert!(stdout.contains(&format!("history: {} events written", events.len())), "{stdout}");
    let invokes = events.iter().filter(|e| e.kind == shoal_sim::HistoryKind::Invoke).count();
    assert!(invokes > 10, "{invokes} invokes");
    // Every invoke ends in exactly one outcome line (ok, fail or indeterminate).
    assert_eq!(events.len(), 2 * invokes, "{text}");
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for key in [
        "type",
        "client",
        "request",
        "group",
        "namespace",
        "operation",
        "payload",
        "offset",
        "invoke_ns",
        "complete_ns",
    ] {
        assert!(first.get(key).is_some(), "`{key}` missing from {first}");
    }
    assert_eq!(code, if stdout.starts_with("PASS") { 0 } else { code });
}
