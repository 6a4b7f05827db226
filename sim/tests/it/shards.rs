//! The shard world and the shard lifecycle under the simulator: routing
//! accounting over a swarm of seeds, determinism, the planted routing bug,
//! the metadata handoff after shutdown, and a panic shutting the process down.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;

use shoal_shard::handoff::{self, HANDOFF_POLL_INTERVAL_NS, HandoffError};
use shoal_shard::lifecycle::{ShardExit, ShutdownFlag, TaskSet};
use shoal_shard::{MetadataRequest, MetadataState, ShardCount, ShardId};
use shoal_sim::shards::{RUN_TIME_BOUND_NS, ShardWorldConfig, ViolationKind, check_determinism, run_shard_world};
use shoal_sim::{Checker, FaultMix, RunConfig, SimIo, Verdict, block_on_ready};
use shoal_vsr::Io;

const SHARD_COUNTS: [u16; 4] = [1, 2, 4, 8];
const SWEEP_SEEDS: u64 = 240;

#[test]
fn swarm_sweep_passes_every_routing_check_with_faults_on() {
    let mut totals = shoal_sim::ShardWorldCounters::default();
    let mut drop_reasons = std::collections::BTreeSet::new();
    for seed in 0..SWEEP_SEEDS {
        let shards = SHARD_COUNTS[(seed % 4) as usize];
        let config = ShardWorldConfig::swarm(seed, shards);
        let outcome = run_shard_world(&config);
        assert!(outcome.passed(), "seed {seed} N={shards}: {:?}\nfaults {:?}", outcome.violations, config.faults);
        let c = &outcome.counters;
        assert_eq!(c.frames_sent, c.frames_delivered + c.frame_drops_total, "seed {seed}");
        assert!(outcome.virtual_time_ns < RUN_TIME_BOUND_NS, "seed {seed} ran to the bound");
        totals.frames_sent += c.frames_sent;
        totals.reserved_frames_delivered += c.reserved_frames_delivered;
        totals.shard_panics += c.shard_panics;
        totals.spawn_failures += c.spawn_failures;
        totals.handoff_crashes += c.handoff_crashes;
        totals.handoffs_abandoned += c.handoffs_abandoned;
        totals.watchdog_reports += c.watchdog_reports;
        totals.connects += c.connects;
        totals.client_replies_returned += c.client_replies_returned;
        drop_reasons.extend(c.drops_by_reason.keys().cloned());
    }
    // The sweep must actually have exercised every fault it claims to.
    assert!(totals.shard_panics > 0, "{totals:?}");
    assert!(totals.spawn_failures > 0, "{totals:?}");
    assert!(totals.handoff_crashes > 0, "{totals:?}");
    assert!(totals.handoffs_abandoned > 0, "{totals:?}");
    assert!(totals.watchdog_reports > 0, "{totals:?}");
    assert!(totals.client_replies_returned > 0 && totals.connects > 0);
    for reason in ["inbox_full", "injected", "closed", "forward_failed"] {
        assert!(drop_reasons.contains(reason), "no {reason} drop in the sweep: {drop_reasons:?}");
    }
    for reason in ["namespace_miss", "consensus_misroute", "unknown_shard"] {
        assert!(!drop_reasons.contains(reason), "{reason} drops with the correct router");
    }
}

#[test]
fn same_seed_same_trace_hash() {
    for seed in [3u64, 17, 42, 1001] {
        for shards in SHARD_COUNTS {
            let config = ShardWorldConfig::swarm(seed, shards);
            assert!(check_determinism(&config).is_ok(), "seed {seed} N={shards}");
        }
    }
    let a = run_shard_world(&ShardWorldConfig::swarm(1, 4)).trace_hash;
    let b = run_shard_world(&ShardWorldConfig::swarm(2, 4)).trace_hash;
    assert_ne!(a, b, "the seed must matter");
}

#[test]
fn planted_bug_hashing_reserved_frames_by_namespace_fails_the_routing_checker() {
    for seed in 0..24u64 {
        let shards = [2u16, 4, 8][(seed % 3) as usize];
        let mut config = ShardWorldConfig::new(seed, shards);
        let correct = run_shard_world(&config);
        assert!(correct.passed(), "seed {seed}: {:?}", correct.violations);

        config.route_reserved_by_namespace_hash = true;
        let buggy = run_shard_world(&config);
        if seed < 3 {
            // Evidence for humans: `cargo test ... planted_bug -- --nocapture`.
            println!(
                "seed {seed} N={shards} bug off: {:?} sent={} delivered={} drops={:?}",
                correct.verdict,
                correct.counters.frames_sent,
                correct.counters.frames_delivered,
                correct.counters.drops_by_reason
            );
            println!(
                "seed {seed} N={shards} bug on:  {:?} sent={} delivered={} drops={:?}",
                buggy.verdict,
                buggy.counters.frames_sent,
                buggy.counters.frames_delivered,
                buggy.counters.drops_by_reason
            );
        }
        assert_eq!(buggy.verdict.checker(), Some(Checker::Routing), "seed {seed} N={shards}");
        assert!(matches!(buggy.verdict, Verdict::SafetyViolation { .. }));
        assert_eq!(buggy.violations[0].kind, ViolationKind::ReservedFrameDropped);
        assert!(buggy.counters.drops_by_reason.contains_key("namespace_miss"));
        // Exact accounting still holds: the wedge is counted, not silent.
        let c = &buggy.counters;
        assert_eq!(c.frames_sent, c.frames_delivered + c.frame_drops_total);
    }
    // With one shard there is nowhere to misroute to: the bug cannot show.
    let mut config = ShardWorldConfig::new(5, 1);
    config.route_reserved_by_namespace_hash = true;
    assert!(run_shard_world(&config).passed());
}

#[test]
fn run_config_adapter_takes_seed_shards_and_shard_faults() {
    let run = RunConfig {
        seed: 77,
        scenario: "shards".to_string(),
        replica_count: 3,
        shards_per_replica: 4,
        client_count: 3,
        safety_time_ns: 1,
        liveness_time_ns: 1,
        faults: FaultMix {
            shard_inbox_full_ppm: 20_000,
            shard_delivery_drop_ppm: 10_000,
            shard_panic_ppm: 500,
            ..FaultMix::none()
        },
        fault_budget: None,
        record_trace: false,
        record_history: false,
        script: Vec::new(),
        client_sessions_max: shoal_sim::CLIENT_SESSIONS_MAX,
        pipeline_prepares_max: shoal_sim::PIPELINE_PREPARES_MAX,
        large_append_ppm: 0,
        checkpoint_chunks_per_answer_max: shoal_sim::CHECKPOINT_CHUNKS_PER_ANSWER_MAX,
        checkpoint_interval_ops: shoal_sim::CHECKPOINT_INTERVAL_OPS,
        partition_segment_size_max_bytes: shoal_sim::PARTITION_SEGMENT_SIZE_MAX_BYTES,
        storage_latent_error_page_bytes: 0,
        partition_scrub_bytes_per_tick: 0,
        buggify_ppm: 0,
    };
    let config = ShardWorldConfig::from_run_config(&run);
    assert_eq!((config.seed, config.shard_count, config.replica_count), (77, 4, 3));
    assert_eq!(config.faults.inbox_full_ppm, 20_000);
    assert_eq!(config.faults.delivery_drop_ppm, 10_000);
    assert_eq!(config.faults.panic_ppm, 500);
    let outcome = run_shard_world(&config);
    assert!(outcome.passed(), "{:?}", outcome.violations);
    assert!(outcome.counters.drops_by_reason.contains_key("injected"));
}

#[test]
fn a_planted_shard_panic_shuts_the_whole_world_down_in_bound() {
    let mut panicked = 0;
    for seed in 0..16u64 {
        let mut config = ShardWorldConfig::new(seed, 4);
        config.faults.panic_ppm = 20_000;
        config.frames_total = 20_000;
        let outcome = run_shard_world(&config);
        assert!(outcome.passed(), "seed {seed}: {:?}", outcome.violations);
        if outcome.counters.shard_panics > 0 {
            panicked += 1;
            // The survivors stopped long before the workload could finish.
            assert!(outcome.counters.frames_sent < 20_000, "seed {seed}");
            assert_eq!(outcome.counters.stragglers, 0);
        }
    }
    assert!(panicked >= 12, "only {panicked} of 16 seeds panicked");
}

fn catalogue() -> MetadataState {
    let mut state = MetadataState::new();
    state.apply(&MetadataRequest::CreateStream { stream_id: 1, name: "orders".into() }).unwrap();
    state
        .apply(&MetadataRequest::CreateTopic { stream_id: 1, topic_id: 1, name: "eu".into(), partition_count: 3 })
        .unwrap();
    state
}

#[test]
fn metadata_snapshot_is_owned_by_shard_zero_and_survives_a_crash() {
    let io = SimIo::new(1);
    let path = Path::new("/data/metadata.snapshot");
    block_on_ready(shoal_vsr::io::create_dir_durable(&io, Path::new("/data"))).unwrap();
    let empty = block_on_ready(handoff::open_metadata(&io, path, ShardId(0))).unwrap();
    assert_eq!(empty, MetadataState::new(), "first start: an empty catalogue");
    block_on_ready(handoff::write_metadata(&io, path, ShardId(0), &catalogue())).unwrap();
    io.crash();
    let replayed = block_on_ready(handoff::open_metadata(&io, path, ShardId(0))).unwrap();
    assert_eq!(replayed, catalogue());
    for shard in [ShardId(1), ShardId(7)] {
        assert!(matches!(
            block_on_ready(handoff::open_metadata(&io, path, shard)),
            Err(HandoffError::NotMetadataShard { .. })
        ));
        assert!(matches!(
            block_on_ready(handoff::write_metadata(&io, path, shard, &catalogue())),
            Err(HandoffError::NotMetadataShard { .. })
        ));
    }
    // A corrupt file is a typed error, not a panic.
    let file = block_on_ready(io.open(path, shoal_vsr::OpenMode::ReadWrite)).unwrap();
    let (result, _) = block_on_ready(shoal_vsr::IoFile::write_all_at(&file, vec![0xFF; 4], 8));
    result.unwrap();
    assert!(matches!(block_on_ready(handoff::open_metadata(&io, path, ShardId(0))), Err(HandoffError::Codec(_))));
}

#[test]
fn handoff_delivers_the_bundle_to_every_peer() {
    let io = SimIo::new(2);
    let shutdown = ShutdownFlag::new();
    let bundle = catalogue().encode();
    let received = Rc::new(RefCell::new(Vec::new()));
    let mut peers = Vec::new();
    let mut handles = Vec::new();
    for shard in 1..4u16 {
        let (tx, rx) = handoff::oneshot();
        peers.push((ShardId(shard), tx));
        let (io2, flag, received) = (io.clone(), shutdown.clone(), received.clone());
        handles.push(io.spawn(async move {
            io2.sleep(u64::from(shard) * 3 * HANDOFF_POLL_INTERVAL_NS).await;
            let state = handoff::await_snapshot(&io2, &rx, &flag).await.unwrap();
            received.borrow_mut().push(state);
        }));
    }
    let done = Rc::new(Cell::new(None));
    let (io2, flag, done2) = (io.clone(), shutdown.clone(), done.clone());
    let _zero = io.spawn(async move {
        let result = handoff::broadcast_snapshot(&io2, &bundle, &peers, &flag).await;
        done2.set(Some((result.is_ok(), io2.now_ns())));
    });
    assert!(io.run_until_idle(10_000));
    assert_eq!(*received.borrow(), vec![catalogue(); 3]);
    let (ok, at_ns) = done.get().unwrap();
    assert!(ok);
    assert!(at_ns >= 9 * HANDOFF_POLL_INTERVAL_NS, "shard 0 waited for the slowest peer");
    assert!(handles.iter().all(|h| h.is_finished()));
}

#[test]
fn no_shard_waits_on_the_handoff_after_shutdown() {
    let io = SimIo::new(3);
    let shutdown = ShutdownFlag::new();
    // Shard 0 is alive but wedged: it holds its sender and never sends.
    let (stuck_tx, stuck_rx) = handoff::oneshot::<Vec<u8>>();
    // Shard 0 broadcasting to a peer that never takes the bundle.
    let (slow_tx, _slow_rx) = handoff::oneshot::<Vec<u8>>();
    let results = Rc::new(RefCell::new(Vec::new()));
    let (io2, flag, r) = (io.clone(), shutdown.clone(), results.clone());
    let _peer = io.spawn(async move {
        let result = handoff::await_snapshot(&io2, &stuck_rx, &flag).await;
        r.borrow_mut().push(("await", matches!(result, Err(HandoffError::ShutDown)), io2.now_ns()));
    });
    let (io2, flag, r) = (io.clone(), shutdown.clone(), results.clone());
    let _zero = io.spawn(async move {
        let peers = vec![(ShardId(1), slow_tx)];
        let result = handoff::broadcast_snapshot(&io2, b"bundle", &peers, &flag).await;
        r.borrow_mut().push(("broadcast", matches!(result, Err(HandoffError::ShutDown)), io2.now_ns()));
    });
    let shutdown_at_ns = 7 * HANDOFF_POLL_INTERVAL_NS + 300;
    let (io2, flag) = (io.clone(), shutdown.clone());
    let _ctrl_c = io.spawn(async move {
        io2.sleep(shutdown_at_ns).await;
        flag.request();
    });
    assert!(io.run_until_idle(10_000), "every waiter returned: nothing waits forever");
    let results = results.borrow();
    assert_eq!(results.len(), 2);
    for (side, shut_down, at_ns) in results.iter() {
        assert!(shut_down, "{side} must return ShutDown");
        assert!(*at_ns >= shutdown_at_ns && *at_ns <= shutdown_at_ns + HANDOFF_POLL_INTERVAL_NS, "{side} at {at_ns}");
    }
    drop(stuck_tx);

    // Shard 0 dies first (its sender is dropped): the peer returns at once.
    let (tx, rx) = handoff::oneshot::<Vec<u8>>();
    drop(tx);
    let io = SimIo::new(4);
    let result = Rc::new(RefCell::new(None));
    let (io2, r) = (io.clone(), result.clone());
    let _peer = io.spawn(async move {
        *r.borrow_mut() = Some(handoff::await_snapshot(&io2, &rx, &ShutdownFlag::new()).await);
    });
    assert!(io.run_until_idle(100));
    assert!(matches!(*result.borrow(), Some(Err(HandoffError::ShardZeroGone))));
}

/// A shard that runs until shutdown, polling the flag every `tick_ns`.
async fn shard_until_shutdown(io: SimIo, flag: ShutdownFlag, tick_ns: u64) {
    while !flag.is_requested() {
        io.sleep(tick_ns).await;
    }
}

#[test]
fn a_shard_panic_shuts_the_replica_down_and_the_join_waits_for_the_slowest() {
    let io = SimIo::new(5);
    let shutdown = ShutdownFlag::new();
    let mut tasks: TaskSet<SimIo> = TaskSet::new(shutdown.clone());
    for shard in 0..4u16 {
        let (io2, flag) = (io.clone(), shutdown.clone());
        if shard == 2 {
            tasks.spawn(&io, ShardId(shard), async move {
                io2.sleep(3_000_000).await;
                panic!("shard 2 hit an assertion");
            });
        } else {
            // Shard s notices shutdown within s+1 ms.
            tasks.spawn(&io, ShardId(shard), shard_until_shutdown(io2, flag, u64::from(shard + 1) * 1_000_000));
        }
    }
    let report = Rc::new(RefCell::new(None));
    let (io2, r) = (io.clone(), report.clone());
    let _supervisor = io.spawn(async move {
        *r.borrow_mut() = Some(tasks.join_all(&io2, 50_000_000).await);
    });
    assert!(io.run_until_idle(100_000));
    let report = report.borrow_mut().take().unwrap();
    assert!(shutdown.is_requested(), "the panic flipped the flag");
    assert_eq!(report.failed(), 1);
    assert!(matches!(&report.exits[2], (ShardId(2), ShardExit::Failed(f)) if f.reason.contains("assertion")));
    assert_eq!(report.stragglers(), 0);
    assert_eq!(report.shutdown_seen_at_ns, Some(3_000_000));
    // The slowest survivor (4 ms tick) bounds the join, not the grace.
    assert!(report.finished_at_ns <= 3_000_000 + 4_000_000, "{report:?}");
}

#[test]
fn the_join_deadline_is_one_for_all_shards_not_one_per_shard() {
    let io = SimIo::new(6);
    let shutdown = ShutdownFlag::new();
    let mut tasks: TaskSet<SimIo> = TaskSet::new(shutdown.clone());
    for shard in 0..8u16 {
        let io2 = io.clone();
        // Wedged shards: they never look at the flag.
        tasks.spawn(&io, ShardId(shard), async move { io2.sleep(u64::MAX / 2).await });
    }
    shutdown.request();
    let grace_ns = 10_000_000;
    let report = Rc::new(RefCell::new(None));
    let (io2, r) = (io.clone(), report.clone());
    let _supervisor = io.spawn(async move {
        *r.borrow_mut() = Some(tasks.join_all(&io2, grace_ns).await);
    });
    io.run_until(100 * grace_ns);
    let report = report.borrow_mut().take().expect("join_all returned");
    assert_eq!(report.stragglers(), 8);
    assert_eq!(report.finished_at_ns, grace_ns, "one grace for all 8, not 8 × grace");
}

#[test]
fn a_partial_spawn_failure_stops_the_shards_already_started() {
    let io = SimIo::new(7);
    let shutdown = ShutdownFlag::new();
    let mut tasks: TaskSet<SimIo> = TaskSet::new(shutdown.clone());
    let error = tasks
        .spawn_all(&io, ShardCount::new(4).unwrap(), |shard| {
            if shard == ShardId(2) {
                Err("CPU 2 is offline".to_string())
            } else {
                Ok(shard_until_shutdown(io.clone(), shutdown.clone(), 1_000_000))
            }
        })
        .unwrap_err();
    assert!(error.to_string().contains("CPU 2 is offline"));
    assert!(shutdown.is_requested());
    assert_eq!(tasks.len(), 2);
    let report = Rc::new(RefCell::new(None));
    let (io2, r) = (io.clone(), report.clone());
    let _supervisor = io.spawn(async move {
        *r.borrow_mut() = Some(tasks.join_all(&io2, 50_000_000).await);
    });
    assert!(io.run_until_idle(10_000));
    let report = report.borrow_mut().take().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.exits.len(), 2);
    assert!(report.finished_at_ns <= 1_000_000);
}

/// A peer reconnects on another shard before its old connection's close was
/// seen: the newer connection takes the owner slot over, and the old one's
/// later disconnect must leave the newer claim in place (the owner-table
/// checker runs after every connect and disconnect).
#[test]
fn a_replaced_connection_that_disconnects_later_leaves_the_newer_owner() {
    let mut takeovers = 0;
    let mut stale_disconnects = 0;
    for seed in 0..40 {
        let mut config = ShardWorldConfig::new(seed, 4);
        config.replica_count = 5;
        config.faults.connection_churn_ppm = 200_000;
        config.faults.connection_takeover_ppm = 600_000;
        let outcome = run_shard_world(&config);
        assert!(outcome.passed(), "seed {seed}: {:?}", outcome.violations);
        takeovers += outcome.counters.connection_takeovers;
        stale_disconnects += outcome.counters.stale_disconnects;
    }
    assert!(takeovers > 0 && stale_disconnects > 0, "takeovers {takeovers}, stale disconnects {stale_disconnects}");
}

/// SIGINT/SIGTERM during the metadata handoff (not a shard 0 panic): every
/// shard leaves the handoff within its bound and the process stops in time.
#[test]
fn a_signal_during_the_handoff_stops_every_shard_in_bound() {
    let mut signals = 0;
    for seed in 0..60 {
        let mut config = ShardWorldConfig::new(seed, 1 + (seed % 8) as u16);
        config.faults.handoff_signal_ppm = 1_000_000;
        let outcome = run_shard_world(&config);
        assert!(outcome.passed(), "seed {seed}: {:?}", outcome.violations);
        assert!(outcome.virtual_time_ns < RUN_TIME_BOUND_NS, "seed {seed} ran to the bound");
        signals += outcome.counters.handoff_signals;
    }
    assert!(signals > 0, "no signal arrived during a handoff");
}
