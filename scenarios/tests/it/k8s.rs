//! The command lines of `deploy/k8s/sim-sweep.yaml`, run here against the
//! built binary the way the Job controller and kubelet would run them: the
//! index in JOB_COMPLETION_INDEX, `$(VAR)` expanded in args, every slice's
//! report on one shared directory, then the merge step's shell line. No
//! container runtime is available to the tests; this checks the manifest's
//! commands, not the cluster.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::scratch_dir;

const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/k8s/sim-sweep.yaml");
/// Seeds for the test in place of the manifest's night-long range.
const TEST_SEEDS: &str = "0..24";

/// The `KEY: [...]` lines of the manifest (`args:`, `command:`), in order:
/// one-line JSON arrays, so a test can read them without a YAML parser.
fn manifest_arrays(key: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(MANIFEST).unwrap();
    text.lines()
        .filter_map(|line| line.trim().strip_prefix(key))
        .map(|json| serde_json::from_str(json.trim()).expect("a one-line JSON array"))
        .collect()
}

fn manifest_number(key: &str) -> u64 {
    let text = std::fs::read_to_string(MANIFEST).unwrap();
    let line = text.lines().find_map(|line| line.trim().strip_prefix(key)).unwrap_or_else(|| panic!("no {key}"));
    line.trim().parse().unwrap()
}

/// What the kubelet does to args: `$(VAR)` from the container's env, `$$` to `$`.
fn kubelet_expand(arg: &str, index: u64) -> String {
    arg.replace("$(JOB_COMPLETION_INDEX)", &index.to_string()).replace("$$", "$")
}

fn value_after<'a>(args: &'a [String], flag: &str) -> &'a str {
    let at = args.iter().position(|arg| arg == flag).unwrap_or_else(|| panic!("{flag} missing from {args:?}"));
    &args[at + 1]
}

#[test]
fn indexed_job_slices_write_reports_that_the_merge_step_joins() {
    let dir = scratch_dir("k8s");
    let reports = dir.join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    let all_args = manifest_arrays("args:");
    let [sweep, merge] = &all_args[..] else { panic!("expected a sweep and a merge args line: {all_args:?}") };
    let completions = manifest_number("completions:");
    assert_eq!(value_after(sweep, "--shard"), format!("env:JOB_COMPLETION_INDEX/{completions}"));
    assert_eq!(manifest_number("parallelism:"), completions);

    for index in 0..completions {
        let mut args: Vec<String> = sweep
            .iter()
            .map(|arg| kubelet_expand(arg, index).replace("/reports/", &format!("{}/", reports.display())))
            .collect();
        // The test's small range in place of the manifest's; every other flag as written.
        let at = args.iter().position(|arg| arg == "--seeds").unwrap();
        args[at + 1] = TEST_SEEDS.to_string();
        let output = Command::new(env!("CARGO_BIN_EXE_shoal-sim"))
            .args(&args)
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .output()
            .unwrap();
        let code = output.status.code().unwrap();
        assert_ne!(code, 1, "slice {index}: {}", String::from_utf8_lossy(&output.stderr));
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(reports.join(format!("slice-{index}.json"))).unwrap())
                .unwrap();
        assert_eq!(report["slice"]["index"], index, "the index came from JOB_COMPLETION_INDEX");
        assert_eq!(report["exit_code"], code);
    }

    // The merge step is a shell line; run it with this binary for `shoal-sim`.
    assert_eq!(manifest_arrays("command:"), [["/bin/sh", "-c"]], "the merge container runs a shell line");
    let line = kubelet_expand(&merge[0], 0)
        .replace("/reports/", &format!("{}/", reports.display()))
        .replace("exec shoal-sim ", &format!("exec {} ", env!("CARGO_BIN_EXE_shoal-sim")));
    let output = Command::new("/bin/sh").args(["-c", &line]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_ne!(output.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let merged: Value = serde_json::from_str(&std::fs::read_to_string(reports.join("all.json")).unwrap()).unwrap();
    assert_eq!(merged["merge"]["complete"], true, "{stdout}");
    assert_eq!(merged["seeds_run"], 24);
    assert!(Path::new(&reports.join("all.xml")).exists(), "the JUnit file the merge step publishes");
}
