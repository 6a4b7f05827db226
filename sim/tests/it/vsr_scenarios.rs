//! VSR scenario tests: each tells one story of faults and checks that every
//! checker holds and the cluster converges.

use shoal_sim::cluster::Cluster;
use shoal_sim::{FaultMix, RunConfig, ScriptedFault, Target, Verdict};

const SECOND_NS: u64 = 1_000_000_000;

fn story(seed: u64, script: Vec<ScriptedFault>) -> RunConfig {
    RunConfig {
        seed,
        scenario: "story".into(),
        replica_count: 3,
        shards_per_replica: 1,
        client_count: 4,
        safety_time_ns: 4 * SECOND_NS,
        liveness_time_ns: 4 * SECOND_NS,
        faults: FaultMix::none(),
        fault_budget: None,
        record_trace: false,
        record_history: false,
        script,
        client_sessions_max: shoal_sim::CLIENT_SESSIONS_MAX,
        pipeline_prepares_max: shoal_sim::PIPELINE_PREPARES_MAX,
        large_append_ppm: 0,
        checkpoint_chunks_per_answer_max: shoal_sim::CHECKPOINT_CHUNKS_PER_ANSWER_MAX,
        checkpoint_interval_ops: shoal_sim::CHECKPOINT_INTERVAL_OPS,
        partition_segment_size_max_bytes: shoal_sim::PARTITION_SEGMENT_SIZE_MAX_BYTES,
        storage_latent_error_page_bytes: 0,
        partition_scrub_bytes_per_tick: 0,
        buggify_ppm: 0,
    }
}

fn assert_pass(outcome: &shoal_sim::RunOutcome) {
    assert!(outcome.verdict == Verdict::Pass, "{}", failure(outcome));
}

/// A failed run, told as a sweep tells it: the verdict and the one command
/// that replays it. These tests run configs of their own (not catalog
/// scenarios), so the config is saved where `shoal-sim replay --config`
/// finds it.
fn failure(outcome: &shoal_sim::RunOutcome) -> String {
    let config = &outcome.config;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sim-failures");
    let path = dir.join(format!("{}-seed-{}-{:016x}.json", config.scenario, config.seed, outcome.trace_hash));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, serde_json::to_string_pretty(config).expect("RunConfig serializes")));
    let replay = match saved {
        Ok(()) => {
            format!("cargo run --release -p shoal-scenarios --bin shoal-sim -- replay --config {}", path.display())
        }
        Err(error) => format!("(could not save the config to {}: {error})", path.display()),
    };
    format!("seed {}: {:?}\n  replay: {replay}", config.seed, outcome.verdict)
}

#[test]
fn primary_crash_mid_pipeline() {
    for seed in 0..8 {
        let config = story(
            seed,
            vec![ScriptedFault::Crash { at_ns: SECOND_NS, target: Target::Primary, down_ns: SECOND_NS / 2 }],
        );
        let outcome = shoal_sim::run(&config);
        assert_pass(&outcome);
        assert_eq!(outcome.faults_injected.get("scripted_crash"), Some(&1));
        assert!(outcome.view_changes >= 2, "a new primary took over (seed {seed})");
        assert!(outcome.ops_committed > 50, "work went on after the crash (seed {seed})");
    }
}

#[test]
fn minority_partition_holding_the_old_primary() {
    for seed in 0..8 {
        let script =
            vec![ScriptedFault::Isolate { at_ns: SECOND_NS, target: Target::Primary, until_ns: 5 * SECOND_NS / 2 }];
        let mut cluster = Cluster::new(&story(seed, script));
        let outcome = cluster.run();
        assert_pass(&outcome);
        assert!(outcome.view_changes >= 2, "the majority elected a new primary (seed {seed})");
        let views: Vec<u64> = (0..3).map(|r| cluster.replica(r).unwrap().view()).collect();
        assert!(views.iter().all(|v| *v == views[0] && *v >= 1), "all rejoined one view: {views:?}");
    }
}

#[test]
fn all_replicas_crash_and_restart() {
    for seed in 0..8 {
        let script = vec![ScriptedFault::CrashAll { at_ns: 3 * SECOND_NS / 2, down_ns: SECOND_NS / 4 }];
        let mut cluster = Cluster::new(&story(seed, script));
        let outcome = cluster.run();
        assert_pass(&outcome);
        let commit = cluster.replica(0).unwrap().commit_min();
        assert!(commit > 50, "the cluster committed after the restart (seed {seed}: {commit})");
    }
}

#[test]
fn corrupt_slot_is_repaired_from_a_peer() {
    // The rot declines to land where it could destroy the last copy of an
    // op (or finds no slot above the checkpoint), so not every seed rots.
    let mut rotted_seeds = 0;
    for seed in 0..8 {
        let script = vec![ScriptedFault::CorruptSlot { at_ns: 2 * SECOND_NS, target: Target::Backup }];
        let config = RunConfig { record_trace: true, ..story(seed, script) };
        let mut cluster = Cluster::new(&config);
        let outcome = cluster.run();
        assert_pass(&outcome);
        let Some(rotted) = outcome.trace.iter().find(|e| e.kind == "rot") else { continue };
        rotted_seeds += 1;
        let replica = rotted.replica.unwrap();
        let restart = outcome
            .trace
            .iter()
            .find(|e| e.kind == "restart" && e.replica == Some(replica) && e.time_ns >= rotted.time_ns);
        assert!(restart.is_some(), "the corrupted replica restarted");
        let commits: Vec<u64> = (0..3).map(|r| cluster.replica(r).unwrap().commit_min()).collect();
        assert!(commits.iter().all(|c| *c == commits[0]), "the repaired replica caught up: {commits:?}");
    }
    assert!(rotted_seeds >= 6, "only {rotted_seeds} of 8 seeds corrupted a slot");
}

#[test]
fn replica_lagging_past_the_journal_catches_up_by_state_transfer() {
    for seed in 0..4 {
        let script =
            vec![ScriptedFault::Isolate { at_ns: SECOND_NS / 2, target: Target::Backup, until_ns: 7 * SECOND_NS / 2 }];
        let mut cluster = Cluster::new(&RunConfig { record_trace: true, ..story(seed, script) });
        let outcome = cluster.run();
        assert_pass(&outcome);
        let transfers: u64 = (0..3).map(|r| cluster.replica(r).unwrap().stats().state_transfers).sum();
        assert!(transfers >= 1, "the lagging replica needed a checkpoint (seed {seed})");
        // The checkpoint counts partition offsets the lagging disk never got:
        // their bytes came from a peer, and the final check read them back.
        let filled: u64 = outcome.trace.iter().filter(|e| e.kind == "state_data").count() as u64;
        assert!(filled >= 1, "the partition gap was filled from a peer (seed {seed})");
        assert!(outcome.ops_committed > shoal_sim::cluster::JOURNAL_SLOT_COUNT * 2);
    }
}

#[test]
fn same_seed_same_trace_hash() {
    let mut faults = FaultMix::none();
    faults.network_drop_ppm = 50_000;
    faults.replica_crash_ppm = 2_000;
    faults.storage_torn_write_ppm = 2_000;
    let config = RunConfig { faults, ..story(42, Vec::new()) };
    let first = shoal_sim::run(&config);
    let second = shoal_sim::run(&config);
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.events_processed, second.events_processed);
    let other = shoal_sim::run(&RunConfig { seed: 43, ..config });
    assert_ne!(first.trace_hash, other.trace_hash);
}

/// An old primary cut off mid-pipeline keeps a longer log of an older view;
/// when it returns and the next view change hears it, the canonical log must
/// be the one with the highest log_view, not the highest op.
#[test]
fn returning_old_primary_with_a_longer_stale_log_does_not_win_the_view_change() {
    for seed in 0..20 {
        let cut_ns = SECOND_NS;
        let heal_ns = cut_ns + 450_000_000 + seed * 24_000_000;
        let script = vec![
            ScriptedFault::Isolate { at_ns: cut_ns, target: Target::Primary, until_ns: heal_ns },
            ScriptedFault::Crash { at_ns: heal_ns + 1, target: Target::Primary, down_ns: SECOND_NS },
        ];
        let mut config = story(seed, script);
        config.client_count = 8;
        let outcome = shoal_sim::run(&config);
        assert_pass(&outcome);
    }
}

/// The mixed fault load of the developer sweep: every fault class at once.
fn stormy(seed: u64) -> RunConfig {
    RunConfig { faults: FaultMix::stormy(), ..story(seed, Vec::new()) }
}

fn sweep(seeds: std::ops::Range<u64>) {
    let mut failures = Vec::new();
    for seed in seeds {
        let outcome = shoal_sim::run(&stormy(seed));
        if outcome.verdict != Verdict::Pass {
            failures.push(failure(&outcome));
        }
    }
    assert!(failures.is_empty(), "{} seeds failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn seed_sweep_0_to_250() {
    sweep(0..250);
}

#[test]
fn seed_sweep_250_to_500() {
    sweep(250..500);
}

#[test]
fn seed_sweep_500_to_750() {
    sweep(500..750);
}

#[test]
fn seed_sweep_750_to_1000() {
    sweep(750..1000);
}

#[test]
fn five_replicas_sweep() {
    let mut failures = Vec::new();
    for seed in (0..150).chain([1750]) {
        // Seed 1750 once brought back an older view's prepare above the view
        // headers after a restart (it chained onto the same parent).
        let config = RunConfig { replica_count: 5, ..stormy(seed) };
        let outcome = shoal_sim::run(&config);
        if outcome.verdict != Verdict::Pass {
            failures.push(failure(&outcome));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn single_replica_sweep() {
    let mut failures = Vec::new();
    for seed in 0..200 {
        // One replica is its own quorum: it must survive its own crashes,
        // failed writes and lost pending writes without losing a reply.
        let config = RunConfig { replica_count: 1, ..stormy(seed) };
        let outcome = shoal_sim::run(&config);
        if outcome.verdict != Verdict::Pass {
            failures.push(failure(&outcome));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A run capped at exactly the faults it injected is the same run: the
/// budget only suppresses faults, it never shifts a random draw. This is
/// what lets `shrink` lower the budget and keep the failure.
#[test]
fn a_budget_equal_to_the_faults_injected_replays_the_same_run() {
    for seed in 0..20 {
        let unlimited = shoal_sim::run(&stormy(seed));
        let capped = shoal_sim::run(&RunConfig { fault_budget: Some(unlimited.faults_injected_total), ..stormy(seed) });
        assert_eq!(capped.trace_hash, unlimited.trace_hash, "seed {seed}");
        assert_eq!(capped.faults_injected_total, unlimited.faults_injected_total);
        let fewer =
            shoal_sim::run(&RunConfig { fault_budget: Some(unlimited.faults_injected_total / 2), ..stormy(seed) });
        assert!(fewer.faults_injected_total <= unlimited.faults_injected_total / 2 + 2, "seed {seed}");
    }
}

/// Four shards per replica: eight partition groups on the shards their
/// namespaces hash to, and the metadata group on shard 0 with an admin
/// client creating streams and topics, all under shard faults.
#[test]
fn sharded_replicas_run_partition_groups_and_the_metadata_group() {
    for seed in 0..6 {
        let mut faults = FaultMix::stormy();
        faults.shard_inbox_full_ppm = 20_000;
        faults.shard_delivery_drop_ppm = 10_000;
        faults.shard_panic_ppm = 200;
        let config = RunConfig { shards_per_replica: 4, client_count: 9, faults, ..story(seed, Vec::new()) };
        let mut cluster = Cluster::new(&config);
        let outcome = cluster.run();
        assert_pass(&outcome);
        assert_eq!(cluster.group_count(), 9);
        assert!(cluster.metadata_applied() > 0, "the admin client's changes were applied (seed {seed})");
        let drops: u64 =
            outcome.faults_injected.iter().filter(|(k, _)| k.starts_with("frame_drops_total")).map(|(_, v)| v).sum();
        assert!(drops > 0, "frames were dropped between shards and counted (seed {seed})");
    }
}

#[test]
fn four_shards_sweep() {
    let mut failures = Vec::new();
    for seed in (0..100).chain([137]) {
        // Seed 137 once lost a durable prepare in a checkpoint's drain: the
        // journal's index had left it out because its on-disk neighbour was
        // a stale prepare the replica had already replaced in memory.
        let config = RunConfig { shards_per_replica: 4, ..stormy(seed) };
        let outcome = shoal_sim::run(&config);
        if outcome.verdict != Verdict::Pass {
            failures.push(failure(&outcome));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
