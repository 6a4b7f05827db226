//! The `shoal-server` process lifecycle, end to end: start, signal, clean exit.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::TempDir;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

fn server(dir: &TempDir, extra: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-server"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shoal-server");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(strip_ansi(&line));
        }
    });
    (child, rx)
}

/// The log line without terminal colour codes (`ESC [ ... m`), so tests can
/// match `field=value`.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Wait until `count` lines contain `needle`; returns every line read.
fn wait_for(lines: &mpsc::Receiver<String>, needle: &str, count: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut found = 0;
    while found < count {
        let line = lines.recv_timeout(READY_TIMEOUT).unwrap_or_else(|_| panic!("no {needle:?} in {seen:#?}"));
        if line.contains(needle) {
            found += 1;
        }
        seen.push(line);
    }
    seen
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + EXIT_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("shoal-server did not exit after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stops_cleanly_on(signal: Signal) {
    let dir = TempDir::new("server");
    let (mut child, lines) = server(&dir, &["--cpu-allocation", "0"]);
    wait_for(&lines, "shard running", 1);
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), signal).unwrap();
    let status = wait_exit(&mut child);
    let rest: Vec<String> = lines.try_iter().collect();
    assert_eq!(status.code(), Some(0), "{rest:#?}");
    assert!(rest.iter().any(|line| line.contains("shard stopped")), "{rest:#?}");
    assert!(dir.path().join("data").is_dir(), "data dir created");
}

#[test]
fn server_stops_cleanly_on_sigint() {
    stops_cleanly_on(Signal::SIGINT);
}

#[test]
fn server_stops_cleanly_on_sigterm_with_the_polling_driver() {
    let dir = TempDir::new("server-poll");
    let (mut child, lines) = server(&dir, &["--cpu-allocation", "all", "--io-driver", "polling"]);
    let seen = wait_for(&lines, "shard running", 1);
    assert!(seen.iter().any(|line| line.contains("polling")), "{seen:#?}");
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGTERM).unwrap();
    let status = wait_exit(&mut child);
    let rest: Vec<String> = lines.try_iter().collect();
    assert_eq!(status.code(), Some(0), "{rest:#?}");
}

#[test]
fn server_rejects_an_unknown_cpu_with_an_operator_message() {
    let dir = TempDir::new("server-bad");
    let output = Command::new(env!("CARGO_BIN_EXE_shoal-server"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--cpu-allocation", "0-100000"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not offer"), "{stderr}");
}

/// `scripts/without-io-uring.py`: runs a command under a seccomp filter that
/// makes the io_uring syscalls fail with EPERM, as Docker's default profile does.
/// `None` where it cannot run (not x86_64, no python3): the test says so and passes.
fn without_io_uring() -> Option<Command> {
    let python = Command::new("python3").arg("--version").output();
    if !cfg!(target_arch = "x86_64") || python.map(|out| !out.status.success()).unwrap_or(true) {
        eprintln!("skipping: the seccomp helper needs python3 on x86_64");
        return None;
    }
    let mut command = Command::new("python3");
    command.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/without-io-uring.py"));
    Some(command)
}

#[test]
fn without_io_uring_the_server_falls_back_to_polling() {
    let Some(mut command) = without_io_uring() else { return };
    let dir = TempDir::new("server-seccomp");
    let mut child = command
        .arg(env!("CARGO_BIN_EXE_shoal-server"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--cpu-allocation", "0"])
        .env("RUST_LOG", "info")
        .env_remove("SHOAL_IO_DRIVER")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let seen = wait_for(&lines, "shard running", 1);
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGINT).unwrap();
    assert_eq!(wait_exit(&mut child).code(), Some(0));
    let running = seen.iter().find(|line| line.contains("shard running")).unwrap();
    assert!(running.contains("polling"), "expected the polling fallback: {seen:#?}");
    assert!(seen.iter().any(|line| line.contains("io_uring is not permitted")), "{seen:#?}");
}

#[test]
fn without_io_uring_a_required_io_uring_fails_start_up_with_a_typed_error() {
    let Some(mut command) = without_io_uring() else { return };
    let dir = TempDir::new("server-seccomp-required");
    let output = command
        .arg(env!("CARGO_BIN_EXE_shoal-server"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--cpu-allocation", "0", "--io-driver", "io_uring"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a failed shard exits with 2");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("io_uring was required"), "{stderr}");
}

/// Shards in the handoff tests: more than this 2-core machine has CPUs, so
/// shard 0 hands the snapshot to three peers.
const HANDOFF_SHARDS: &str = "4";

fn position(lines: &[String], needle: &str) -> Option<usize> {
    lines.iter().position(|line| line.contains(needle))
}

#[test]
fn shard_zero_hands_the_metadata_snapshot_to_every_peer() {
    let dir = TempDir::new("server-handoff");
    let (mut child, lines) = server(&dir, &["--no-pin", "--test-shard-count", HANDOFF_SHARDS]);
    let mut seen = wait_for(&lines, "received the metadata snapshot", 3);
    if position(&seen, "metadata handoff complete").is_none() {
        seen.extend(wait_for(&lines, "metadata handoff complete", 1));
    }
    let data = dir.path().join("data");
    assert!(data.join(METADATA_JOURNAL).is_file(), "shard 0 formatted the metadata journal");
    assert!(data.join(METADATA_SUPERBLOCK).is_file(), "shard 0 formatted the metadata superblock");
    let replayed = &seen[position(&seen, "metadata WAL replayed").expect("shard 0 logs the replay")];
    assert!(replayed.contains("peers=3"), "{replayed}");
    assert!(replayed.contains("created=true") && replayed.contains("ops_replayed=0"), "{replayed}");
    assert!(replayed.contains("streams=0") && replayed.contains("topics=0"), "{replayed}");
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGINT).unwrap();
    let status = wait_exit(&mut child);
    let rest: Vec<String> = lines.try_iter().collect();
    assert_eq!(status.code(), Some(0), "{rest:#?}");
    let stopped = rest.iter().filter(|line| line.contains("shard stopped")).count();
    assert_eq!(stopped, 4, "{rest:#?}");
}

/// Shard 0 fails while its peers wait for the handoff: the process must not
/// hang on them; it exits with 2 and every peer stops before the join
/// deadline. The proof is the supervisor's own "did not stop before the join
/// deadline" line, not a wall-clock bound (a loaded CI machine is slow).
fn shard_zero_failure_strands_no_peer(mode: &str) {
    let dir = TempDir::new("server-shard0-fails");
    let (mut child, lines) = server(
        &dir,
        &[
            "--no-pin",
            "--test-shard-count",
            HANDOFF_SHARDS,
            // A stranded peer never stops, whatever the bound; a long one
            // keeps a slow machine's honest stop from looking stuck.
            "--shutdown-timeout-secs",
            "10",
            "--test-fail-shard-zero",
            mode,
        ],
    );
    let mut seen = wait_for(&lines, "awaiting the metadata snapshot", 3);
    seen.extend(wait_for(&lines, "injected shard 0 failure", 1));
    let status = wait_exit(&mut child);
    seen.extend(lines.try_iter());
    assert_eq!(status.code(), Some(2), "{seen:#?}");
    let awaiting_last = seen.iter().rposition(|line| line.contains("awaiting the metadata snapshot")).unwrap();
    let injected = position(&seen, "injected shard 0 failure").unwrap();
    assert!(awaiting_last < injected, "every peer was waiting when shard 0 failed: {seen:#?}");
    assert!(position(&seen, "did not stop before the join deadline").is_none(), "{seen:#?}");
    assert!(position(&seen, "received the metadata snapshot").is_none(), "{seen:#?}");
    // Each peer gave up on the handoff, one way or the other. A peer's
    // failure is logged more than once (the shutdown reason, the join
    // report), so match each peer by id rather than counting lines.
    for peer in 1..=3 {
        let stopped = format!("shard_id={peer}");
        let failed = format!("shard {peer} metadata handoff failed: shard 0 ended without sending");
        let ended = seen.iter().any(|line| {
            (line.contains("shutdown before the metadata handoff") && line.contains(&stopped)) || line.contains(&failed)
        });
        assert!(ended, "peer {peer} gave up on the handoff: {seen:#?}");
    }
}

#[test]
fn shard_zero_panicking_before_the_handoff_strands_no_peer() {
    shard_zero_failure_strands_no_peer("panic");
}

#[test]
fn shard_zero_erroring_before_the_handoff_strands_no_peer() {
    shard_zero_failure_strands_no_peer("error");
}

/// The metadata group's files inside `--data-dir` (namespace `1 << 63`).
const METADATA_JOURNAL: &str = "journal-8000000000000000.wal";
const METADATA_SUPERBLOCK: &str = "superblock-8000000000000000";

/// Start a server on `dir` whose metadata WAL is already formatted (a first
/// start, stopped), so a test can damage one file of the group.
fn formatted(dir: &TempDir) {
    let (mut child, lines) = server(dir, &["--cpu-allocation", "0"]);
    wait_for(&lines, "metadata WAL replayed", 1);
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGINT).unwrap();
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

/// Overwrite `len` bytes of a file at `offset` (the file keeps its size).
fn damage(path: &std::path::Path, offset: u64, len: usize) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&vec![0x5A; len], offset).unwrap();
    file.sync_all().unwrap();
}

/// A damaged metadata file stops start-up before the handoff: exit 2, the
/// operator is told to repair from peers, and no peer gets a catalogue.
fn corrupt_metadata_fails_start_up(file: &str, damage_file: impl Fn(&std::path::Path), message: &str) {
    let dir = TempDir::new("server-bad-metadata");
    formatted(&dir);
    damage_file(&dir.path().join("data").join(file));
    let (mut child, lines) = server(&dir, &["--no-pin", "--test-shard-count", HANDOFF_SHARDS]);
    let status = wait_exit(&mut child);
    let seen: Vec<String> = lines.iter().collect();
    assert_eq!(status.code(), Some(2), "{seen:#?}");
    assert!(position(&seen, message).is_some(), "{seen:#?}");
    assert!(position(&seen, "repair its metadata group from peers").is_some(), "{seen:#?}");
    assert!(position(&seen, "received the metadata snapshot").is_none(), "{seen:#?}");
}

#[test]
fn a_corrupt_metadata_superblock_fails_start_up_with_an_operator_message() {
    // Every copy overwritten (the whole file: copies and the gap between them).
    let size = shoal_vsr::superblock::superblock_file_size_bytes() as usize;
    corrupt_metadata_fails_start_up(METADATA_SUPERBLOCK, |path| damage(path, 0, size), "metadata superblock");
}

#[test]
fn a_corrupt_metadata_journal_header_fails_start_up_with_an_operator_message() {
    // Both copies of the file header: the first at the start of the file, the
    // second in its last `FILE_HEADER_SIZE_BYTES` (one damaged copy is repaired).
    let both_copies = |path: &std::path::Path| {
        let size_bytes = std::fs::metadata(path).unwrap().len();
        damage(path, 0, 64);
        damage(path, size_bytes - shoal_vsr::journal::FILE_HEADER_SIZE_BYTES, 64);
    };
    corrupt_metadata_fails_start_up(METADATA_JOURNAL, both_copies, "metadata journal");
}

#[test]
fn a_restart_replays_the_formatted_metadata_wal_instead_of_formatting_again() {
    let dir = TempDir::new("server-restart");
    formatted(&dir);
    let (mut child, lines) = server(&dir, &["--cpu-allocation", "0"]);
    let seen = wait_for(&lines, "metadata WAL replayed", 1);
    let replayed = &seen[position(&seen, "metadata WAL replayed").unwrap()];
    assert!(replayed.contains("created=false") && replayed.contains("commit=0"), "{replayed}");
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGINT).unwrap();
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

#[test]
fn test_only_flags_are_hidden_from_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_shoal-server")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(help.contains("--data-dir"), "{help}");
    assert!(!help.contains("test-fail-shard-zero") && !help.contains("test-shard-count"), "{help}");
}
