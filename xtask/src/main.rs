//! `cargo xtask`: setup, test, sim, ci, bench for the shoal workspace.
//!
//! Owns the developer and CI entry points, so `.ci/run` and the GitHub
//! workflow stay one line each and a developer runs exactly what CI runs.
//! Std only: it must build before anything is installed. Prints every command
//! before running it and exits with the first failing command's code.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Debian packages the runtime crate needs (hwlocality builds against hwloc).
const SYSTEM_PACKAGES: [&str; 3] = ["libhwloc-dev", "libudev-dev", "pkg-config"];
/// `cargo xtask sim` with no arguments: the fixed regression range...
const SIM_FIXED_SEEDS: &str = "0..1000";
/// ...plus this many seeds offset by the commit hash, new on every commit.
const SIM_GIT_SEEDS: &str = "0..200";
const SIM_SCENARIO: &str = "swarm";
/// `cargo xtask ci` bounds each sweep by wall-clock time so CI finishes in
/// its budget whatever the simulator's speed.
const CI_FIXED_TIME_LIMIT: &str = "10m";
const CI_GIT_TIME_LIMIT: &str = "5m";
/// Coverage marks the fixed-seed CI sweep (swarm, seeds 0..1000) must hit:
/// every vsr mark that sweep reached when this list was measured (the
/// rarest, `checkpoint_from_newer_view` and `rejoin_completed`, in 7 to 9
/// seeds; `primary_abdicated` in 7 and `view_change_nack_truncation` in 25
/// when they were added; `group_flushes_overlapped`, the node's concurrent
/// flush of several groups, in 209 of seeds 0..500; `prepare_packed_requests`:
/// a primary packed queued requests into one prepare, in 231 of swarm seeds
/// 0..1000; `fsyncs_overlapped`, two fsyncs of one disk in flight at once in
/// virtual time, in 442, and `crash_write_in_flight` / `crash_fsync_in_flight`,
/// a crash landing while the node waited on a write / an fsync, in 51 and 19
/// of those seeds, when storage latency moved into `SimIo`;
/// `crash_during_restart` / `storage_error_during_restart`, a crash or an
/// EIO inside a replica's own start, in 545 and 371 of those seeds when
/// faults moved into restarts; `view_change_skipped_rejoining_primary`, a
/// view change moved past a view whose primary was rejoining, in 54 of seeds
/// 0..1000; `frame_during_fsync` / `prepare_ok_during_own_fsync` /
/// `flush_finished_for_storage`, the node handling a frame (a peer's vote
/// for the op whose own fsync runs) beside a running fsync, and a storage
/// action finishing the running flush first, in 890, 475 and 249 of swarm
/// seeds 0..1000 when flushes began to run beside the node;
/// `ring_copies_carried_to_next_turn` left the list then: the simulator no
/// longer runs turns that carry copies; `shard_frame_crossed_in` /
/// `shard_frame_crossed_out` / `shard_frame_waited_in_inbox`, frames through
/// another shard's real inbox and frames that waited in one, in 1002, 1002
/// and 1983 of swarm seeds 0..2000 when the simulator began to run one node
/// per shard; `checkpoint_beside_partition_sync`, a checkpoint's staged file
/// written and fsynced while the partition log synced, in 217 of swarm
/// seeds 0..300 when the two began to overlap; `faulty_header_kept_in_log`,
/// a lost body whose copy names its header kept in the log, and
/// `stale_heartbeat_ignored`, a backup ignoring a late heartbeat, in 35 and
/// 337 of swarm seeds 0..1000 in session 15; the gap rule's
/// `journal_unknown_beyond_gap_torn` hit only 8 of them, too few to require;
/// `checkpoint_in_background` / `checkpoint_beside_appends`, a checkpoint
/// running beside the node and a prepare staged meanwhile, in 1426 and 996
/// of swarm seeds 0..2500, and `checkpoint_other_snapshot`, a chunk of
/// another replica's snapshot of the checkpoint being assembled, in 19 of
/// swarm seeds 0..3000, in session 16, when `drain_staged_beside_checkpoint`
/// left the list: overlapped nodes compact the journal after the checkpoint
/// is durable, not beside it; `metadata_replayed_at_start`, the server's
/// start-up replay of the metadata group run at a simulated start, in 938 of
/// swarm seeds 0..2000 in session 17; `rejoin_above_cluster_view`, a
/// replica rejoining after a lost checkpoint whose kept vote is above every
/// view a quorum of peers reports, reached only by the lost-vote plot, in 20
/// of swarm seeds 0..1000 in session 18; the compaction beside the appends
/// of session 19: `compaction_beside_appends`, its window's writes to the
/// spare alone and the acknowledgements they wait for (session 24:
/// `journal_window_write`, `journal_window_ack_held`), a storage action
/// waiting for its install
/// (`compaction_finished_for_storage`, 90 of swarm 0..1000) and its end
/// dropping staged prepares the checkpoint covers
/// (`compaction_covered_staged`, 19 of swarm 0..1000); of session 20:
/// `compaction_ring_copy_rebuilt`, a compaction writing a durable op's ring
/// copy from the index, in 477 of swarm seeds 0..3000; of session 21:
/// `partition_sealed_segment_reopened`, a read of a sealed partition segment
/// whose file was closed, in 2,003 of swarm seeds 500..5500; of session 31:
/// a catch-up request a replica leaves unanswered because its checkpoint is
/// not durable yet (`checkpoint_not_durable_unserved`, 242 of swarm 0..2000)
/// or its state has a gap (`checkpoint_with_gap_unserved`, 65). A change that stops
/// the sweep reaching one of these rare paths fails CI (`shoal-sim` exit 6) instead of silently testing less. Marks no
/// sweep hits yet (`drain_corrupt`, `refuse_conflicting_log`,
/// `session_evicted`) are testbed gaps, not listed until a scenario reaches
/// them.
const CI_REQUIRED_MARKS: &str = "checkpoint_from_newer_view,rejoin_completed,rejoin_probe_answered,session_evicted,\
repair_by_checksum,state_transfer,view_change_truncate,view_change_nack_truncation,primary_abdicated,\
group_flushes_overlapped,prepare_packed_requests,fsyncs_overlapped,crash_write_in_flight,crash_fsync_in_flight,\
crash_during_restart,storage_error_during_restart,view_change_skipped_rejoining_primary,\
frame_during_fsync,prepare_ok_during_own_fsync,flush_finished_for_storage,copy_unreadable,journal_copies_carried,\
journal_prepares_joined,checkpoint_in_chunks,checkpoint_next_piece_asked,faulty_journal_votes,read_eio_retried,\
rot_only_copy,shard_frame_crossed_in,shard_frame_crossed_out,shard_frame_waited_in_inbox,\
checkpoint_beside_partition_sync,state_data_asked_on_arrival,faulty_header_kept_in_log,stale_heartbeat_ignored,\
checkpoint_in_background,checkpoint_beside_appends,checkpoint_other_snapshot,metadata_replayed_at_start,\
rejoin_above_cluster_view,compaction_beside_appends,journal_window_write,journal_window_ack_held,\
compaction_finished_for_storage,compaction_covered_staged,compaction_ring_copy_rebuilt,\
partition_sealed_segment_reopened,compaction_spare_cleared_beside,checkpoint_not_durable_unserved,\
checkpoint_with_gap_unserved";
/// Scenarios whose seed 0 CI runs twice to check determinism.
const CI_DETERMINISM_SCENARIOS: [&str; 12] = [
    "steady",
    "partition-storm",
    "disk-rot",
    "disk-rot-sharded",
    "crash-loop",
    "fsync-steps",
    "partition-fsync",
    "shard-chaos",
    "view-churn",
    "session-churn",
    "swarm",
    "swarm-buggify",
];
/// Targeted scenarios CI sweeps beside swarm: the schedules that found the
/// safety holes (deposed primaries, wiped disks, session eviction, and
/// disk-rot's misdirected writes and rot, where every storage hole of
/// sessions 12-15 was found), at their full rates; and disk-rot-sharded,
/// the same damage on the metadata group's files and its start-up replay;
/// and disk-rot-pages, damage the size of the page cache's page (session 22);
/// and fsync-steps, a failed fsync on the second step of a promise, which
/// found the page-cache marker (session 28); and partition-fsync, failed
/// partition fsyncs then damage past them, which finds the salvage that
/// promised page-cache records 1 seed in 250 without its fix (session 30);
/// and partition-misdirect, a segment's marker written elsewhere in the
/// segment (session 32); and swarm-buggify, swarm with the code's buggify
/// sites taking their rare paths (session 35).
const CI_TARGETED_SCENARIOS: [&str; 9] = [
    "view-churn",
    "session-churn",
    "disk-rot",
    "disk-rot-sharded",
    "disk-rot-pages",
    "fsync-steps",
    "partition-fsync",
    "partition-misdirect",
    "swarm-buggify",
];
const CI_TARGETED_SEEDS: &str = "0..1000";
/// Rare paths a targeted sweep must reach (`--require-marks`), by scenario:
/// disk-rot-pages exists to drive a write into an unreadable page, so its
/// sweep fails when none of its seeds does any more (7 and 3 of seeds
/// 0..1000 in session 22: the journal's whole-page fallback and the
/// partition salvage that empties an unreadable segment).
/// partition-fsync must reach the salvage that rewrites records past the
/// old marker (9 of seeds 0..1000 in session 30; 6 of 0..700 once session
/// 31's checkpoint fix moved the schedules).
/// partition-misdirect must reach the scrubber finding a running replica's
/// damage (299 of seeds 0..4000 in session 32), the scrubber pausing for a
/// refill and a start_view's unvouched entries kept aside (3,518 and 1,676
/// of seeds 0..4000 in session 33).
/// view-churn must reach a backup keeping repair answers that arrive ahead
/// of their parent and adopting them (1,489 and 1,486 of seeds 0..1500 in
/// session 34).
/// swarm-buggify must fire every buggify site (the rarest, a deferred fill
/// part, in 4 of seeds 0..400 in session 35).
const CI_TARGETED_REQUIRED_MARKS: [(&str, &str); 5] = [
    ("view-churn", "prepare_kept_ahead_of_parent,prepare_ahead_adopted"),
    ("disk-rot-pages", "journal_write_page_completed,partition_salvage_emptied_segment"),
    ("partition-fsync", "partition_salvage_rewrote_unpromised"),
    (
        "partition-misdirect",
        "partition_scrub_found_damage,partition_scrub_paused_for_fill,unvouched_prepare_kept_aside",
    ),
    (
        "swarm-buggify",
        "buggify_ahead_not_kept,buggify_checkpoint_answer_one_chunk,buggify_checkpoint_finished_early,\
         buggify_fill_part_deferred,\
         buggify_fill_part_one_message,buggify_journal_copies_not_carried,buggify_pack_of_one,\
         buggify_read_answer_short,buggify_read_unavailable,buggify_request_refused_busy,\
         buggify_state_data_answer_short",
    ),
];
const CI_TARGETED_TIME_LIMIT: &str = "3m";

const USAGE: &str = "\
usage: cargo xtask <command>

  setup                 install system packages (as root; else print the command) and cargo-nextest
  test                  setup, then nextest (workspace), doctests, clippy -D warnings
  sim [shoal-sim args]  release-build shoal-sim; with no args sweep swarm seeds 0..1000
                        and 200 commit-derived seeds, reports in sim-reports/
  ci                    test, then time-bounded sweeps (commit-derived seeds run twice
                        to check determinism) and a determinism replay per scenario
  bench <journal|open|sim|router|server|copies|peers> [args]
                        journal: shoal-bench journal (shoal-runtime)
                        open:    shoal-bench open: how long a journal takes to open
                                 (read-only, writable, writable from a cold cache)
                        server:  3 shoal-server replicas on loopback (release, fsync on), 1 KiB
                                 appends, 1 in flight and N clients; --help for settings
                        copies:  heap allocations and bytes allocated per message on each
                                 replica's write and read paths (1 and 3 replicas); --help
                        sim:     shoal-sim bench (steady scenario)
                        router:  router_bench example (shoal-shard)
                        peers:   shoal-bench-peers: shoal vs NATS JetStream vs etcd, 3 nodes on
                                 loopback; installs them as root (pip, apt); --help for settings";

/// Failure of one step: the exit code to leave with.
type Step = Result<(), u8>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("test") => test(),
        Some("sim") => sim(rest),
        Some("ci") => ci(),
        Some("bench") => bench(rest),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            Err(1)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => {
            eprintln!("xtask: failed (exit code {code})");
            ExitCode::from(code)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn show(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Print the command, run it, and turn a failure into its exit code.
fn run(command: &mut Command) -> Step {
    eprintln!("$ {}", show(command));
    match command.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => {
            let code = status.code().map_or(1, |code| u8::try_from(code).unwrap_or(1).max(1));
            eprintln!("xtask: `{}` exited with {code}", show(command));
            Err(code)
        }
        Err(error) => {
            eprintln!("xtask: cannot start `{}`: {error}", show(command));
            Err(1)
        }
    }
}

/// Run every step even after a failure, then report the first failure, so
/// one run shows everything that is wrong.
fn all(steps: Vec<Step>) -> Step {
    steps.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

/// Worst verdict of several simulator runs (exit codes order by severity).
fn worst(steps: Vec<Step>) -> Step {
    match steps.into_iter().filter_map(Result::err).max() {
        Some(code) => Err(code),
        None => Ok(()),
    }
}

fn succeeds_quietly(command: &mut Command) -> bool {
    command.output().is_ok_and(|output| output.status.success())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn setup() -> Step {
    let missing: Vec<&str> = SYSTEM_PACKAGES
        .iter()
        .copied()
        .filter(|package| !succeeds_quietly(Command::new("dpkg").args(["-s", package])))
        .collect();
    if missing.is_empty() {
        eprintln!("xtask: system packages present: {}", SYSTEM_PACKAGES.join(" "));
    } else if is_root() {
        run(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))?;
        run(Command::new("apt-get").args(["install", "-y"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))?;
    } else {
        eprintln!(
            "xtask: missing system packages {}; install them with:\n  sudo apt-get update && sudo apt-get install -y {}\n\
             (not Debian? install hwloc 2.x headers, libudev headers and pkg-config with your package manager)",
            missing.join(" "),
            missing.join(" ")
        );
        return Err(1);
    }
    // A minimal rustup profile has neither; `test` needs both.
    let lints_present =
        succeeds_quietly(cargo().args(["clippy", "--version"])) && succeeds_quietly(cargo().args(["fmt", "--version"]));
    if !lints_present {
        run(Command::new("rustup").args(["component", "add", "clippy", "rustfmt"]))?;
    }
    if succeeds_quietly(cargo().args(["nextest", "--version"])) {
        eprintln!("xtask: cargo-nextest present");
        Ok(())
    } else {
        run(cargo().args(["install", "cargo-nextest", "--locked"]))
    }
}

/// The peer benchmark's drivers (tokio, NATS and etcd clients) build in
/// minutes and test nothing of shoal: `cargo xtask bench peers` builds them.
const NOT_IN_TEST: [&str; 2] = ["--exclude", "shoal-bench-peers"];

fn test() -> Step {
    setup()?;
    all(vec![
        run(cargo().args(["nextest", "run", "--workspace", "--no-fail-fast"]).args(NOT_IN_TEST)),
        run(cargo().args(["test", "--workspace", "--doc"]).args(NOT_IN_TEST)),
        run(cargo().args(["clippy", "--workspace", "--all-targets"]).args(NOT_IN_TEST).args(["--", "-D", "warnings"])),
        run(cargo().args(["fmt", "--all", "--", "--check"])),
        // The fuzz crate is outside the workspace: `--all` skips it.
        run(cargo()
            .args(["fmt", "--manifest-path"])
            .arg(workspace_root().join("fuzz/Cargo.toml"))
            .args(["--", "--check"])),
        check_fuzz_targets(),
    ])
}

/// The fuzz targets live outside the workspace (libFuzzer needs nightly to
/// fuzz), so nothing else builds them: one went a session broken by a
/// changed struct, and two more (`superblock_decode`, `identity_decode`)
/// compiled but failed on their own seeds for sessions after a format
/// change. Build them on stable (no sanitizer, no coverage) and run every
/// target once over each of its tracked seeds (`fuzz/seeds/<target>/`);
/// libFuzzer's build script compiles C++, so without a C++ compiler say so
/// and skip.
fn check_fuzz_targets() -> Step {
    if !succeeds_quietly(Command::new("c++").arg("--version")) {
        eprintln!("xtask: SKIPPED the fuzz targets' build and seed replay: no C++ compiler (`apt-get install g++`)");
        return Ok(());
    }
    let fuzz = workspace_root().join("fuzz");
    run(cargo()
        .arg("build")
        .arg("--manifest-path")
        .arg(fuzz.join("Cargo.toml"))
        .arg("--bins")
        .arg("--target-dir")
        .arg(target_dir()))?;
    let targets = fuzz_target_names(&fuzz.join("fuzz_targets"))?;
    all(targets.iter().map(|target| replay_fuzz_seeds(&fuzz, target)).collect())
}

/// Every fuzz target: a file of `fuzz_targets/` but the shared `common.rs`.
fn fuzz_target_names(dir: &Path) -> Result<Vec<String>, u8> {
    let entries = std::fs::read_dir(dir).map_err(|error| {
        eprintln!("xtask: cannot list {}: {error}", dir.display());
        1
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.path().file_stem()?.to_str().map(str::to_owned))
        .filter(|name| name != "common")
        .collect();
    names.sort();
    Ok(names)
}

/// Run `target` once over each of its seeds (a libFuzzer binary given
/// files runs each and exits non-zero on the first failure).
fn replay_fuzz_seeds(fuzz: &Path, target: &str) -> Step {
    let seeds_dir = fuzz.join("seeds").join(target);
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&seeds_dir)
        .map_err(|error| {
            eprintln!("xtask: fuzz target {target} has no seeds in {}: {error}", seeds_dir.display());
            1
        })?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.is_file())
        .collect();
    seeds.sort();
    if seeds.is_empty() {
        eprintln!("xtask: fuzz target {target} has no seeds in {}", seeds_dir.display());
        return Err(1);
    }
    let binary = target_dir().join("debug").join(format!("{target}{}", std::env::consts::EXE_SUFFIX));
    run(Command::new(binary).args(&seeds))
}

/// Release-build shoal-sim and return its path.
fn build_shoal_sim() -> Result<PathBuf, u8> {
    run(cargo().args(["build", "--release", "-p", "shoal-scenarios", "--bin", "shoal-sim"]))?;
    Ok(target_dir().join("release").join(format!("shoal-sim{}", std::env::consts::EXE_SUFFIX)))
}

fn shoal_sim(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    command.current_dir(workspace_root());
    command
}

fn reports_dir() -> Result<PathBuf, u8> {
    let dir = workspace_root().join("sim-reports");
    std::fs::create_dir_all(&dir).map_err(|error| {
        eprintln!("xtask: cannot create {}: {error}", dir.display());
        1
    })?;
    Ok(dir)
}

/// A swarm sweep writing a JUnit report; `extra` adds flags.
fn sweep(binary: &Path, seeds: &str, report: &Path, extra: &[&str]) -> Step {
    run(shoal_sim(binary)
        .args(["sweep", "--seeds", seeds, "--scenario", SIM_SCENARIO, "--report", "junit", "--report-file"])
        .arg(report)
        .args(extra))
}

fn sim(args: &[String]) -> Step {
    let binary = build_shoal_sim()?;
    if !args.is_empty() {
        return run(shoal_sim(&binary).args(args));
    }
    let reports = reports_dir()?;
    worst(vec![
        sweep(&binary, SIM_FIXED_SEEDS, &reports.join("sweep-fixed.xml"), &[]),
        sweep(&binary, SIM_GIT_SEEDS, &reports.join("sweep-git.xml"), &["--seed-from-git"]),
    ])
}

fn ci() -> Step {
    let tested = test();
    // The sweeps run even when a test failed: their verdicts are news too.
    let simulated = (|| {
        let binary = build_shoal_sim()?;
        let reports = reports_dir()?;
        let mut steps = vec![
            sweep(
                &binary,
                SIM_FIXED_SEEDS,
                &reports.join("ci-sweep-fixed.xml"),
                &["--time-limit", CI_FIXED_TIME_LIMIT, "--require-marks", CI_REQUIRED_MARKS],
            ),
            sweep(
                &binary,
                SIM_GIT_SEEDS,
                &reports.join("ci-sweep-git.xml"),
                // New seeds each commit, each run twice: catches non-determinism
                // on paths the fixed seeds never take.
                &["--seed-from-git", "--check-determinism", "--time-limit", CI_GIT_TIME_LIMIT],
            ),
        ];
        for scenario in CI_TARGETED_SCENARIOS {
            let report = reports.join(format!("ci-sweep-{scenario}.xml"));
            let mut sweep = shoal_sim(&binary);
            sweep
                .args(["sweep", "--seeds", CI_TARGETED_SEEDS, "--scenario", scenario, "--report", "junit"])
                .arg("--report-file")
                .arg(&report)
                .args(["--time-limit", CI_TARGETED_TIME_LIMIT]);
            if let Some((_, marks)) = CI_TARGETED_REQUIRED_MARKS.iter().find(|(name, _)| *name == scenario) {
                sweep.args(["--require-marks", marks]);
            }
            steps.push(run(&mut sweep));
        }
        for scenario in CI_DETERMINISM_SCENARIOS {
            steps.push(run(shoal_sim(&binary).args([
                "replay",
                "--seed",
                "0",
                "--scenario",
                scenario,
                "--check-determinism",
            ])));
        }
        worst(steps)
    })();
    all(vec![tested, simulated])
}

fn bench(args: &[String]) -> Step {
    let (Some(what), rest) = (args.first(), args.get(1..).unwrap_or_default()) else {
        eprintln!("{USAGE}");
        return Err(1);
    };
    match what.as_str() {
        "journal" => run(cargo()
            .args(["run", "--release", "-p", "shoal-runtime", "--bin", "shoal-bench", "--", "journal"])
            .args(rest)),
        "open" => run(cargo()
            .args(["run", "--release", "-p", "shoal-runtime", "--bin", "shoal-bench", "--", "open"])
            .args(rest)),
        "sim" => {
            let binary = build_shoal_sim()?;
            run(shoal_sim(&binary).arg("bench").args(rest))
        }
        "router" => {
            run(cargo().args(["run", "--release", "-p", "shoal-shard", "--example", "router_bench", "--"]).args(rest))
        }
        "server" => {
            let server = build_shoal_server()?;
            run(cargo()
                .args(["run", "--release", "-p", "shoal-bench-peers", "--", "server", "--server-binary"])
                .arg(&server)
                .args(rest))
        }
        "copies" => {
            let server = build_shoal_server()?;
            run(cargo()
                .args(["run", "--release", "-p", "shoal-bench-peers", "--", "copies", "--server-binary"])
                .arg(&server)
                .args(rest))
        }
        "peers" => {
            let server = build_shoal_server()?;
            // etcd-client's build script compiles etcd's protobuf files with protoc.
            // Without it (and without root to install it) the benchmark still runs,
            // built without its `etcd` feature, and its etcd row says why.
            let mut protoc_present = succeeds_quietly(Command::new("protoc").arg("--version"));
            if !protoc_present && is_root() {
                let install = || {
                    run(Command::new("apt-get")
                        .args(["install", "-y", "protobuf-compiler"])
                        .env("DEBIAN_FRONTEND", "noninteractive"))
                };
                protoc_present = install().is_ok()
                    || (run(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive")).is_ok()
                        && install().is_ok());
            } else if !protoc_present {
                eprintln!(
                    "xtask: protoc missing, so the etcd driver is left out; for it run:\n  \
                     sudo apt-get install -y protobuf-compiler"
                );
            }
            let mut command = cargo();
            command.args(["run", "--release", "-p", "shoal-bench-peers"]);
            if protoc_present {
                command.args(["--features", "etcd"]);
            }
            run(command.arg("--").arg("--shoal-server").arg(&server).args(rest))
        }
        other => {
            eprintln!("xtask: unknown bench `{other}`: use journal, sim, router, server or peers");
            Err(1)
        }
    }
}

/// Build the release `shoal-server` the server and peer benchmarks start.
fn build_shoal_server() -> Result<PathBuf, u8> {
    run(cargo().args(["build", "--release", "-p", "shoal-runtime", "--bin", "shoal-server"]))?;
    Ok(target_dir().join("release").join("shoal-server"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_reports_the_first_failure_and_worst_the_highest_code() {
        assert_eq!(all(vec![Ok(()), Err(3), Err(2)]), Err(3));
        assert_eq!(all(vec![Ok(()), Ok(())]), Ok(()));
        assert_eq!(worst(vec![Err(2), Ok(()), Err(4), Err(3)]), Err(4));
        assert_eq!(worst(vec![Ok(())]), Ok(()));
    }

    #[test]
    fn run_propagates_the_exit_code() {
        assert_eq!(run(Command::new("sh").args(["-c", "exit 3"])), Err(3));
        assert_eq!(run(&mut Command::new("true")), Ok(()));
        assert_eq!(run(&mut Command::new("/nonexistent/xtask-test")), Err(1));
    }

    #[test]
    fn show_prints_program_and_arguments() {
        let mut command = Command::new("cargo");
        command.args(["nextest", "run", "--workspace"]);
        assert_eq!(show(&command), "cargo nextest run --workspace");
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
