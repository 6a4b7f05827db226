//! `sweep --shard I/N` and `report merge`, each slice in its own process as
//! on separate machines: the merge of the slices must say what one sweep of
//! the whole range says.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

use crate::scratch_dir;

/// A few hundred seeds: enough for each slice to hold many, quick in a debug build.
const SEEDS: &str = "0..240";
const SLICE_COUNT: u64 = 4;

fn shoal_sim(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal-sim"));
    command.args(args);
    command
}

fn finish(child: Child) -> (i32, String, String) {
    let Output { status, stdout, stderr } = child.wait_with_output().expect("wait for shoal-sim");
    (
        status.code().expect("shoal-sim exits, it is not killed"),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn run(args: &[&str]) -> (i32, String, String) {
    finish(shoal_sim(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start shoal-sim"))
}

/// The value of a `  label     value` line of a summary table.
fn summary_value(summary: &str, label: &str) -> String {
    let line = summary.lines().find(|line| line.trim_start().starts_with(&format!("{label}  ")));
    let line = line.unwrap_or_else(|| panic!("no `{label}` line in:\n{summary}"));
    line.trim_start()[label.len()..].trim().to_string()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// (seed, verdict, trace hash) of every run, in report order.
fn runs(report: &Value) -> Vec<(u64, Value, String)> {
    report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| (run["seed"].as_u64().unwrap(), run["verdict"].clone(), run["trace_hash"].as_str().unwrap().into()))
        .collect()
}

/// The flags every sweep of this test shares: --shard must compose with each.
const COMMON: [&str; 9] =
    ["sweep", "--seeds", SEEDS, "--scenario", "swarm", "--seed-from-git", "--time-limit", "10m", "--no-progress"];

#[test]
fn four_slices_in_separate_processes_merge_into_the_single_sweep() {
    let dir = scratch_dir("slices-merge");
    let whole_file = dir.join("whole.json");
    let whole_args = [&COMMON[..], &["--jobs", "2", "--report", "json", "--report-file", whole_file.to_str().unwrap()]];
    let (whole_code, whole_out, whole_err) = run(&whole_args.concat());
    assert_ne!(whole_code, 1, "{whole_out}{whole_err}");

    // All four at once, as four machines would; --jobs differs per slice and must not matter.
    let children: Vec<(u64, Child)> = (0..SLICE_COUNT)
        .map(|index| {
            let shard = format!("{index}/{SLICE_COUNT}");
            let jobs = (1 + index % 2).to_string();
            let file = dir.join(format!("slice-{index}.json"));
            let args =
                [&COMMON[..], &["--shard", &shard, "--jobs", &jobs, "--report", "json", "--report-file"]].concat();
            let child = shoal_sim(&args).arg(&file).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
            (index, child)
        })
        .collect();
    let mut slice_codes = Vec::new();
    for (index, child) in children {
        let (code, stdout, stderr) = finish(child);
        assert_ne!(code, 1, "slice {index}: {stdout}{stderr}");
        assert_eq!(summary_value(&stdout, "slice (--shard)"), format!("{index}/{SLICE_COUNT}"));
        slice_codes.push(code);
        let slice = read_json(&dir.join(format!("slice-{index}.json")));
        assert_eq!(slice["slice"]["index"], index);
        assert_eq!(slice["slice"]["count"], SLICE_COUNT);
        assert_eq!(slice["seed_range"]["start"], 0);
        assert_eq!(slice["seed_range"]["end"], 240);
        assert_eq!(slice["seeds_run"], 60, "240 seeds in 4 equal blocks");
        assert_eq!(slice["shoal_sim_version"], env!("CARGO_PKG_VERSION"));
        assert_ne!(slice["git_commit"], "unknown", "the test runs in a git checkout");
    }

    let merged_file = dir.join("all.json");
    let junit_file = dir.join("all.xml");
    // Reversed on purpose: the order of the files must not matter.
    let mut merge_args: Vec<String> = vec!["report".into(), "merge".into()];
    merge_args
        .extend((0..SLICE_COUNT).rev().map(|index| dir.join(format!("slice-{index}.json")).display().to_string()));
    merge_args.extend(["--out".into(), merged_file.display().to_string()]);
    merge_args.extend(["--junit".into(), junit_file.display().to_string()]);
    let merge_args: Vec<&str> = merge_args.iter().map(String::as_str).collect();
    let (merge_code, merge_out, merge_err) = run(&merge_args);

    let whole = read_json(&whole_file);
    let merged = read_json(&merged_file);
    assert_eq!(merge_code, whole_code, "{merge_out}{merge_err}");
    assert_eq!(merge_code, slice_codes.into_iter().max().unwrap(), "the worst slice's verdict");
    assert_eq!(runs(&merged), runs(&whole), "same seeds, verdicts and trace hashes, in the same order");
    for field in ["seeds_planned", "seeds_run", "pass", "fail", "failures_by_checker", "exit_code", "base_seed"] {
        assert_eq!(merged[field], whole[field], "{field}");
    }
    assert_eq!(merged["slice"], whole["slice"], "a complete merge stands for the whole range as 0/1");
    assert_eq!(merged["merge"]["complete"], true);
    assert_eq!(merged["merge"]["slices_missing"], serde_json::json!([]));
    assert_eq!(summary_value(&merge_out, "slices"), "4 / 4");
    let xml = std::fs::read_to_string(&junit_file).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 240);
    assert!(xml.contains("<property name=\"slices_missing\" value=\"none\"/>"), "{xml}");
}

#[test]
fn a_missing_slice_is_called_out_and_fails_the_merge() {
    let dir = scratch_dir("slices-missing");
    for index in [0, 2] {
        let file = dir.join(format!("slice-{index}.json"));
        let shard = format!("{index}/3");
        let args = ["sweep", "--seeds", "0..9", "--scenario", "steady", "--shard", &shard, "--no-progress"];
        let (code, stdout, stderr) =
            run(&[&args[..], &["--report", "json", "--report-file", file.to_str().unwrap()]].concat());
        assert_ne!(code, 1, "{stdout}{stderr}");
    }
    let merged_file = dir.join("all.json");
    let (code, stdout, _) = run(&[
        "report",
        "merge",
        dir.join("slice-0.json").to_str().unwrap(),
        dir.join("slice-2.json").to_str().unwrap(),
        dir.join("slice-2.json").to_str().unwrap(),
        "--out",
        merged_file.to_str().unwrap(),
    ]);
    assert!(code >= 1, "a merge without slice 1 cannot pass: {stdout}");
    assert_eq!(summary_value(&stdout, "missing slices"), "1");
    assert_eq!(summary_value(&stdout, "duplicated slices"), "2");
    assert!(stdout.contains("shoal-sim sweep --seeds 0..9 --scenario steady --shard 1/3"), "{stdout}");
    let merged = read_json(&merged_file);
    assert_eq!(merged["merge"]["slices_missing"], serde_json::json!([1]));
    assert_eq!(merged["merge"]["slices_duplicated"], serde_json::json!([2]));
    assert_eq!(merged["seeds_run"], 6, "slice 2 counted once");
    assert_eq!(merged["slice"], Value::Null, "an incomplete merge does not pass for the whole range");
}

#[test]
fn merging_slices_of_different_sweeps_is_refused() {
    let dir = scratch_dir("slices-refused");
    let slice = |name: &str, scenario: &str, seeds: &str, shard: &str| {
        let file = dir.join(name);
        let args = ["sweep", "--seeds", seeds, "--scenario", scenario, "--shard", shard, "--no-progress", "--report"];
        let (code, stdout, stderr) = run(&[&args[..], &["json", "--report-file", file.to_str().unwrap()]].concat());
        assert_ne!(code, 1, "{stdout}{stderr}");
        file.display().to_string()
    };
    let steady_0 = slice("steady-0.json", "steady", "0..8", "0/2");
    let swarm_1 = slice("swarm-1.json", "swarm", "0..8", "1/2");
    let wider_1 = slice("wider-1.json", "steady", "0..10", "1/2");
    let thirds_1 = slice("thirds-1.json", "steady", "0..8", "1/3");
    for (other, field) in [(&swarm_1, "scenario"), (&wider_1, "seed_range"), (&thirds_1, "slice count")] {
        let (code, stdout, stderr) = run(&["report", "merge", &steady_0, other]);
        assert_eq!(code, 1, "{stdout}{stderr}");
        assert!(stderr.contains(&format!("cannot merge: {other} has {field}")), "{stderr}");
        assert!(stdout.is_empty(), "a refused merge prints no totals: {stdout}");
    }
    // A different commit: the same report, rewritten as if swept elsewhere.
    let mut report = read_json(Path::new(&steady_0));
    report["git_commit"] = "0000000000000000000000000000000000000000".into();
    let elsewhere = dir.join("elsewhere.json");
    std::fs::write(&elsewhere, report.to_string()).unwrap();
    let (code, _, stderr) = run(&["report", "merge", &steady_0, elsewhere.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("has git_commit 0000000000000000000000000000000000000000"), "{stderr}");
    let (code, _, stderr) = run(&["report", "merge", "/nonexistent/slice-0.json"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read report /nonexistent/slice-0.json"), "{stderr}");
}

#[test]
fn bad_shards_exit_1_with_a_hint_before_running_anything() {
    let sweep = |shard: &str, seeds: &str| run(&["sweep", "--seeds", seeds, "--scenario", "steady", "--shard", shard]);
    for (shard, hint) in [
        ("4/4", "the index must be below 4"),
        ("0/0", "must be at least 1"),
        ("two/4", "write I/N"),
        ("1/5", "would leave slices empty: use at most 4 slices"),
        ("env:SHOAL_TEST_SURELY_UNSET/4", "SHOAL_TEST_SURELY_UNSET is not set"),
    ] {
        let (code, stdout, stderr) = sweep(shard, "0..4");
        assert_eq!(code, 1, "--shard {shard}");
        assert!(stderr.contains(hint), "--shard {shard}: {stderr}");
        assert!(!stdout.contains("summary"), "nothing ran for --shard {shard}: {stdout}");
    }
}
