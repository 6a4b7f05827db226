//! `shoal-server format` / `start` and the config file, through the real binary:
//! each refusal exits 1 with a message naming the fix.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_runtime::data_dir::{DATA_DIR_FORMAT_VERSION, IDENTITY_FILE_NAME, Identity};

use crate::support::TempDir;

const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

fn shoal_server(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal-server")).args(args).arg(dir).output().expect("run shoal-server")
}

fn format(dir: &Path, cluster: &str, replica: &str, replica_count: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_shoal-server"))
        .args(["format", "--cluster", cluster, "--replica", replica, "--replica-count", replica_count])
        .arg(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// Run `start` with `args` and expect a refusal containing `needle`.
fn start_refused(data: &Path, args: &[&str], needle: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_shoal-server"))
        .arg("start")
        .args(["--cpu-allocation", "0", "--data-dir"])
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(needle), "no {needle:?} in {stderr}");
    assert!(!stderr.contains("shard running"), "refused only after starting shards: {stderr}");
}

#[test]
fn format_writes_an_identity_and_refuses_to_format_twice() {
    let dir = TempDir::new("format");
    let data = dir.path().join("data");
    format(&data, "42", "1", "3");
    let bytes = std::fs::read(data.join(IDENTITY_FILE_NAME)).unwrap();
    assert_eq!(Identity::decode(&bytes), Ok(Identity::new(42, 1, 3)));
    assert!(!data.join("shoal.identity.tmp").exists());
    let again = shoal_server(&["format", "--cluster", "42", "--replica", "1", "--replica-count", "3"], &data);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already formatted"));
    let out_of_range =
        shoal_server(&["format", "--cluster", "42", "--replica", "3", "--replica-count", "3"], &dir.path().join("x"));
    assert!(String::from_utf8_lossy(&out_of_range.stderr).contains("use 0..3"));
}

#[test]
fn start_refuses_an_unformatted_dir() {
    let dir = TempDir::new("unformatted");
    start_refused(&dir.path().join("data"), &[], "shoal-server format");
}

#[test]
fn start_refuses_a_dir_of_another_cluster_replica_or_size() {
    let dir = TempDir::new("other");
    let data = dir.path().join("data");
    format(&data, "42", "1", "3");
    let addresses = "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002";
    let ours = ["--replica-count", "3", "--replica-addresses", addresses];
    start_refused(
        &data,
        &[&ours[..], &["--cluster", "43", "--replica", "1"]].concat(),
        "belongs to cluster 42, not 43",
    );
    start_refused(&data, &[&ours[..], &["--cluster", "42", "--replica", "2"]].concat(), "belongs to replica 1, not 2");
    let five = "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4,127.0.0.1:5";
    start_refused(
        &data,
        &["--cluster", "42", "--replica", "1", "--replica-count", "5", "--replica-addresses", five],
        "formatted for 3 replicas",
    );
}

#[test]
fn start_refuses_a_newer_format_and_a_corrupt_identity() {
    let dir = TempDir::new("newer");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let newer = Identity { format_version: DATA_DIR_FORMAT_VERSION + 1, ..Identity::new(0, 0, 1) };
    std::fs::write(data.join(IDENTITY_FILE_NAME), newer.encode()).unwrap();
    start_refused(&data, &[], "newer than this binary");
    let mut corrupt = Identity::new(0, 0, 1).encode();
    corrupt[20] ^= 1;
    std::fs::write(data.join(IDENTITY_FILE_NAME), corrupt).unwrap();
    start_refused(&data, &[], "corrupt");
}

#[test]
fn the_bare_invocation_also_refuses_a_dir_of_another_cluster() {
    let dir = TempDir::new("bare");
    let data = dir.path().join("data");
    format(&data, "42", "0", "1");
    let output = Command::new(env!("CARGO_BIN_EXE_shoal-server"))
        .args(["--cpu-allocation", "0", "--cluster", "7", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("belongs to cluster 42, not 7"));
}

#[test]
fn a_bad_config_file_is_refused_naming_the_key() {
    let dir = TempDir::new("badconfig");
    let config = dir.path().join("shoal.toml");
    std::fs::write(&config, "[cluster]\nreplica_count = 3\nreplica_addresses = [\"10.0.0.1:7000\"]\n").unwrap();
    start_refused(&dir.path().join("data"), &["--config", config.to_str().unwrap()], "cluster.replica_addresses");
    std::fs::write(&config, "[sharding]\ncpu_alocation = \"all\"\n").unwrap();
    start_refused(&dir.path().join("data"), &["--config", config.to_str().unwrap()], "cpu_alocation");
}

#[test]
fn a_formatted_replica_starts_from_the_deploy_config_with_flag_overrides() {
    let dir = TempDir::new("deploy");
    let data = dir.path().join("data");
    format(&data, "1", "1", "3");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/shoal-1.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-server"))
        .args(["start", "--config", config, "--cpu-allocation", "0", "--log-format", "json", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.by_ref().map_while(Result::ok).find(|line| line.contains("shard running")).expect("a shard runs");
    assert!(line.starts_with('{'), "--log-format json gives JSON lines: {line}");
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "shoal-server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
