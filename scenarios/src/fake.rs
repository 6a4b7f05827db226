//! A stand-in simulator for testing the front end (sweep, shrink, replay,
//! reports, timelines) on failures that are known in advance.
//!
//! Owns nothing the product relies on: the `shoal-sim` binary always runs
//! `shoal_sim::run`. The fake is deterministic in the config, has the shape of
//! a real outcome (timeline, trace, fault counts), and fails by fixed rules so
//! tests can assert what the front end does with each kind of failure:
//!
//! - panic iff `seed % 50 == 13`;
//! - `Agreement` violation iff at least 3 faults were injected, at least 2
//!   clients run, network drops are on, and `seed % 4 == 1`;
//! - liveness violation iff replica crashes are on and `seed % 10 == 7`.
//!
//! Faults injected = (fault kinds on) × (safety time / `FAULT_PERIOD_NS`),
//! capped by `fault_budget`, so shrinking any of those knobs can make a
//! failure go away, as in a real run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use shoal_sim::{Checker, RunConfig, RunOutcome, TimelineEvent, TimelineKind, TraceEvent, Verdict};

use crate::catalog::{FAULT_FIELDS, NS_PER_MS};

/// One fault per enabled kind per this much virtual safety time.
pub const FAULT_PERIOD_NS: u64 = 100 * NS_PER_MS;
const COMMIT_PERIOD_NS: u64 = 200 * NS_PER_MS;
const VIEW_CHANGE_PERIOD_NS: u64 = 700 * NS_PER_MS;
/// Only the first faults get a timeline marker, as a real run would thin them.
const FAULT_MARKERS_MAX: u64 = 64;

pub fn run(config: &RunConfig) -> RunOutcome {
    run_with_noise(config, None)
}

/// Like `run`, but one event early in the run differs between calls:
/// a non-deterministic simulator, for testing `--check-determinism`.
pub fn run_nondeterministic(config: &RunConfig) -> RunOutcome {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    run_with_noise(config, Some(CALLS.fetch_add(1, Ordering::Relaxed)))
}

fn run_with_noise(config: &RunConfig, noise: Option<u64>) -> RunOutcome {
    assert!(config.replica_count > 0, "fake: replica_count must be positive");
    let seed = config.seed;
    if seed % 50 == 13 {
        panic!("fake: assertion failed: commit_min <= commit_max (seed {seed})");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let replicas = u64::from(config.replica_count);
    let end_ns = config.safety_time_ns + config.liveness_time_ns;
    let mut timeline = Vec::new();
    let mut push = |time_ns: u64, replica: u64, kind: TimelineKind, detail: String| {
        timeline.push(TimelineEvent { time_ns, replica: replica as u8, kind, detail });
    };

    let faults = &config.faults;
    let kinds_on: Vec<&str> = FAULT_FIELDS.iter().filter(|f| (f.get)(faults) != 0).map(|f| f.name).collect();
    let faults_natural = kinds_on.len() as u64 * (config.safety_time_ns / FAULT_PERIOD_NS);
    let faults_total = config.fault_budget.map_or(faults_natural, |budget| faults_natural.min(budget));
    let mut faults_injected = BTreeMap::new();
    for index in 0..faults_total {
        let kind = kinds_on[(index % kinds_on.len() as u64) as usize];
        let kind = kind.trim_end_matches("_ppm").trim_end_matches("_max_ns");
        *faults_injected.entry(kind.to_string()).or_insert(0u64) += 1;
        if index < FAULT_MARKERS_MAX {
            let time_ns = rng.next_u64() % config.safety_time_ns.max(1);
            push(time_ns, rng.next_u64() % replicas, TimelineKind::Fault, kind.to_string());
        }
    }
    if faults.replica_crash_ppm != 0 && config.safety_time_ns > 0 {
        let down_ns = rng.next_u64() % config.safety_time_ns;
        let replica = rng.next_u64() % replicas;
        push(down_ns, replica, TimelineKind::Crash, "process crash".into());
        let up_ns = down_ns + (config.safety_time_ns - down_ns) / 2;
        push(up_ns, replica, TimelineKind::Restart, "restart from the crashed disk".into());
    }
    if faults.network_partition_ppm != 0 && config.safety_time_ns > 0 {
        let start_ns = rng.next_u64() % config.safety_time_ns;
        let replica = rng.next_u64() % replicas;
        push(start_ns, replica, TimelineKind::PartitionStart, "isolated".into());
        push(config.safety_time_ns, replica, TimelineKind::PartitionEnd, "healed".into());
    }
    let mut view_changes = 0;
    if !kinds_on.is_empty() {
        let mut time_ns = VIEW_CHANGE_PERIOD_NS;
        while time_ns < config.safety_time_ns {
            view_changes += 1;
            push(time_ns, view_changes % replicas, TimelineKind::ViewChange, format!("view {view_changes}"));
            time_ns += VIEW_CHANGE_PERIOD_NS;
        }
    }
    let mut ops_committed = 0;
    let mut time_ns = COMMIT_PERIOD_NS;
    while time_ns <= end_ns {
        ops_committed += u64::from(config.client_count);
        for replica in 0..replicas {
            push(time_ns, replica, TimelineKind::Commit, format!("commit {ops_committed}"));
        }
        time_ns += COMMIT_PERIOD_NS;
    }
    if let Some(noise) = noise {
        push(config.safety_time_ns / 4, 0, TimelineKind::Fault, format!("noise {noise}"));
    }

    let verdict = if faults_total >= 3 && config.client_count >= 2 && faults.network_drop_ppm != 0 && seed % 4 == 1 {
        let at_ns = config.safety_time_ns / 2;
        Verdict::SafetyViolation {
            checker: Checker::Agreement,
            message: format!("op 7 committed with two checksums (fake, {faults_total} faults)"),
            at_ns,
        }
    } else if faults.replica_crash_ppm != 0 && seed % 10 == 7 {
        Verdict::LivenessViolation { message: "replica 1 stuck at commit 3 after heal (fake)".into() }
    } else {
        Verdict::Pass
    };
    let virtual_time_ns = match &verdict {
        Verdict::SafetyViolation { at_ns, .. } => *at_ns,
        _ => end_ns,
    };
    timeline.retain(|event| event.time_ns <= virtual_time_ns);
    timeline.sort_by_key(|event| (event.time_ns, event.replica));
    if let Verdict::SafetyViolation { message, .. } | Verdict::LivenessViolation { message } = &verdict {
        timeline.push(TimelineEvent {
            time_ns: virtual_time_ns,
            replica: 0,
            kind: TimelineKind::Violation,
            detail: message.clone(),
        });
    }

    let trace: Vec<TraceEvent> = timeline
        .iter()
        .map(|event| TraceEvent {
            time_ns: event.time_ns,
            replica: Some(event.replica),
            shard: Some(0),
            kind: format!("{:?}", event.kind).to_lowercase(),
            detail: event.detail.clone(),
        })
        .collect();
    let mut trace_hash = crate::stable_hash64(&seed.to_le_bytes());
    for event in &trace {
        let line = format!("{} {:?} {} {}", event.time_ns, event.replica, event.kind, event.detail);
        trace_hash ^= crate::stable_hash64(line.as_bytes());
        trace_hash = trace_hash.rotate_left(5);
    }
    RunOutcome {
        config: config.clone(),
        verdict,
        ops_committed,
        view_changes,
        faults_injected,
        faults_injected_total: faults_total,
        trace_hash,
        events_processed: trace.len() as u64 * 10,
        virtual_time_ns,
        trace: if config.record_trace { trace } else { Vec::new() },
        timeline,
        // Seed-derived, so sweep statistics over the fake are predictable:
        // a window of seed mod 7 ms, `fake_common` in every run,
        // `fake_rare` in every third.
        availability_window_max_ns: (seed % 7) * 1_000_000,
        availability_windows: Vec::new(),
        history: Vec::new(),
        marks: fake_marks(seed),
    }
}

/// The coverage marks the fake reports for `seed`.
pub fn fake_marks(seed: u64) -> std::collections::BTreeMap<String, u64> {
    let mut marks = std::collections::BTreeMap::from([(FAKE_MARK_COMMON.to_string(), 2)]);
    if seed.is_multiple_of(3) {
        marks.insert(FAKE_MARK_RARE.to_string(), 1);
    }
    marks
}

pub const FAKE_MARK_COMMON: &str = "fake_common";
pub const FAKE_MARK_RARE: &str = "fake_rare";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn fake_fails_by_its_documented_rules() {
        assert_eq!(run(&catalog::partition_storm(1)).verdict.checker(), Some(Checker::Agreement));
        assert_eq!(run(&catalog::partition_storm(2)).verdict, Verdict::Pass);
        assert_eq!(run(&catalog::steady(1)).verdict, Verdict::Pass, "no faults, no agreement failure");
        assert_eq!(run(&catalog::crash_loop(7)).verdict.exit_code(), 3);
        let mut budget_two = catalog::partition_storm(1);
        budget_two.fault_budget = Some(2);
        assert_eq!(run(&budget_two).verdict, Verdict::Pass);
        assert_eq!(run(&budget_two).faults_injected_total, 2);
    }

    #[test]
    fn fake_is_deterministic_and_its_noisy_twin_is_not() {
        let mut config = catalog::partition_storm(5);
        config.record_trace = true;
        assert_eq!(run(&config), run(&config));
        assert!(!run(&config).trace.is_empty());
        assert_ne!(run_nondeterministic(&config).trace_hash, run_nondeterministic(&config).trace_hash);
    }
}
