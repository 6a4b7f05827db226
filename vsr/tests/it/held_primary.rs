//! Story (swarm seed 10006): a primary whose shard loop is held by its disk
//! ticks once per hold. Its commit heartbeats must still leave as often as
//! its backups' timeouts expect them, or a healthy cluster changes its view.

use shoal_vsr::header::Command;
use shoal_vsr::replica::{
    Action, COMMIT_HEARTBEAT_NS, COMMIT_HEARTBEAT_TICKS, NORMAL_TIMEOUT_TICKS, Replica, Status, TICK_NS,
};
use shoal_vsr::state_machine::AppendLog;

use crate::harness::config;

fn primary() -> Replica<AppendLog> {
    let replica = Replica::new(config(0, 3, 1), AppendLog::default());
    assert!(replica.status() == Status::Normal && replica.is_primary(), "replica 0 leads view 0");
    replica
}

/// Tick at `times_ns`; per tick, the replicas a commit heartbeat went to.
fn heartbeats_per_tick(replica: &mut Replica<AppendLog>, times_ns: impl Iterator<Item = u64>) -> Vec<Vec<u8>> {
    times_ns
        .map(|now_ns| {
            replica.tick(now_ns);
            let mut to: Vec<u8> = replica
                .take_actions()
                .into_iter()
                .filter_map(|action| match action {
                    Action::Send { to, message } if message.header.command == Command::Commit => Some(to),
                    _ => None,
                })
                .collect();
            to.sort_unstable();
            to
        })
        .collect()
}

#[test]
fn a_primary_ticked_every_tick_sends_a_heartbeat_every_few_ticks_and_no_more() {
    let mut replica = primary();
    let per_tick = heartbeats_per_tick(&mut replica, (1..=40).map(|tick| tick * TICK_NS));
    let sent_at: Vec<usize> = (0..per_tick.len()).filter(|&index| !per_tick[index].is_empty()).collect();
    let expected: Vec<usize> = (1..=8).map(|k| k * COMMIT_HEARTBEAT_TICKS as usize - 1).collect();
    assert_eq!(sent_at, expected, "one heartbeat per COMMIT_HEARTBEAT_TICKS ticks, none added by the clock");
    assert!(sent_at.iter().all(|&index| per_tick[index] == vec![1, 2]), "each goes to both backups");
}

#[test]
fn a_primary_held_longer_than_a_heartbeat_interval_sends_one_at_every_tick() {
    // The seed's primary: held 76-184 ms per call, one tick between calls.
    let hold_ns = [85, 76, 88, 112, 173, 184].map(|ms| ms * 1_000_000);
    assert!(hold_ns.iter().all(|&hold| hold >= COMMIT_HEARTBEAT_NS));
    let mut now_ns = 0;
    let times = hold_ns.iter().map(|hold| {
        now_ns += hold;
        now_ns
    });
    let mut replica = primary();
    let per_tick = heartbeats_per_tick(&mut replica, times.collect::<Vec<_>>().into_iter());
    assert!(
        per_tick.iter().all(|to| *to == vec![1, 2]),
        "a heartbeat at every tick after a hold of a heartbeat interval or more: {per_tick:?}"
    );
}

/// What the backups see then: never longer without a heartbeat than the
/// longest hold, far inside their timeout.
const _: () = assert!(184 * 1_000_000 < NORMAL_TIMEOUT_TICKS * TICK_NS);
