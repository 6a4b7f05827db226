//! The server's start-up replay of the metadata group in the simulator:
//! every start of a process with a metadata group runs
//! `replay_metadata_group` before its groups open, and the catalogue it
//! hands on is held to the state the metadata replica recovers.

use shoal_sim::cluster::Cluster;
use shoal_sim::{Checker, FaultMix, RunConfig, ScriptedFault, Verdict};

const SECOND_NS: u64 = 1_000_000_000;
const REPLICA_COUNT: u8 = 3;

/// Two shards per replica (so a metadata group with an admin client), no
/// random faults, and every replica crashed at once after two seconds of
/// work: each restarts once.
fn every_replica_restarts_once(seed: u64) -> RunConfig {
    RunConfig {
        seed,
        scenario: "metadata-replay-story".into(),
        replica_count: REPLICA_COUNT,
        shards_per_replica: 2,
        client_count: 5,
        safety_time_ns: 4 * SECOND_NS,
        liveness_time_ns: 4 * SECOND_NS,
        faults: FaultMix::none(),
        fault_budget: None,
        record_trace: true,
        record_history: false,
        script: vec![ScriptedFault::CrashAll { at_ns: 2 * SECOND_NS, down_ns: SECOND_NS / 2 }],
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

/// The commit a `metadata_replay` trace event reports.
fn replayed_commit(detail: &str) -> u64 {
    let commit = detail.strip_prefix("commit ").and_then(|rest| rest.split(',').next());
    commit.and_then(|commit| commit.parse().ok()).unwrap_or_else(|| panic!("no commit in {detail:?}"))
}

#[test]
fn every_restart_replays_the_metadata_group_and_hands_on_what_its_replica_recovers() {
    let config = every_replica_restarts_once(3);
    let mut cluster = Cluster::new(&config);
    let outcome = cluster.run();
    assert_eq!(outcome.verdict, Verdict::Pass);
    assert!(cluster.metadata_applied() > 0, "the admin client changed the catalogue before the crash");
    assert_eq!(cluster.metadata_replays(), u64::from(REPLICA_COUNT), "one replay per restart");
    assert_eq!(outcome.marks.get("metadata_replayed_at_start"), Some(&u64::from(REPLICA_COUNT)));
    let replays: Vec<_> = outcome.trace.iter().filter(|event| event.kind == "metadata_replay").collect();
    assert_eq!(replays.len(), usize::from(REPLICA_COUNT));
    // The replays started from what two seconds of admin requests left,
    // and the recovery check held each catalogue to its replica's.
    assert!(replays.iter().all(|event| replayed_commit(&event.detail) > 0), "{replays:?}");
}

#[test]
fn a_catalogue_the_replay_did_not_recover_fails_the_recovery_check() {
    let config = every_replica_restarts_once(3);
    let mut cluster = Cluster::new(&config);
    cluster.tamper_next_metadata_replay();
    let outcome = cluster.run();
    let Verdict::SafetyViolation { checker, message, .. } = &outcome.verdict else {
        panic!("expected the recovery check to fail, got {:?}", outcome.verdict)
    };
    assert_eq!(*checker, Checker::Recovery);
    assert!(message.contains("the start-up replay hands on the catalogue"), "{message}");
    assert_eq!(cluster.metadata_replays(), 1, "the first restart's replay failed the run");
}

#[test]
fn a_run_without_a_metadata_group_replays_nothing() {
    let config = RunConfig { shards_per_replica: 1, ..every_replica_restarts_once(3) };
    let mut cluster = Cluster::new(&config);
    let outcome = cluster.run();
    assert_eq!(outcome.verdict, Verdict::Pass);
    assert_eq!(cluster.metadata_replays(), 0);
}
