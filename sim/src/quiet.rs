//! The quiet-period checker: a healthy cluster left alone stays in its view
//! and keeps every backup's commit point close behind the primary's.
//!
//! A group is *settled* once every replica has been up, unpaused and
//! Normal in one view v for `QUIET_SETTLE_NS`, with no fault drawn and no
//! partition or clog in place all that time (any phase; the liveness phase
//! is one such stretch). From then on nothing disturbs it (no fault is drawn,
//! the network is healed), so:
//!
//! - no replica may enter a view newer than v: a backup that still times
//!   out hears too little from a healthy primary (heartbeats missing, a
//!   timeout shorter than the heartbeat period), and the view churns for no
//!   reason. No replica promised a view above v (views never go back, and
//!   one Normal in v never voted past it), so no stale vote can explain it;
//! - every backup reaches the primary's commit point within
//!   `QUIET_COMMIT_LAG_MAX_NS` of the primary applying it: a commit
//!   heartbeat, then repair rounds for whatever bodies it lacks.
//!
//! Agreement and the availability windows miss both: nothing diverges, and
//! a view change that completes quickly (or a backup that lags while the
//! primary commits on) leaves no long no-commit window. The planted bug
//! "the primary never sends commit heartbeats" passed every checker before
//! this one: with no request in flight, the backups time out and change
//! the view.
//!
//! Pure bookkeeping: the cluster samples each group once per network tick.

use std::collections::BTreeMap;

use shoal_vsr::replica::{COMMIT_HEARTBEAT_TICKS, NORMAL_TIMEOUT_JITTER_TICKS, NORMAL_TIMEOUT_TICKS, REPAIR_TICKS};

use crate::availability::AVAILABILITY_REPAIR_ROUNDS_MAX;
use crate::cluster::TICK_NS;

/// How long the group must stay Normal in one view, faults off, before it
/// counts as settled: a backup's normal timeout armed while it was cut off
/// from the primary may fire right after the heal (view-churn seed 48:
/// 14 ms after it), before any heartbeat reached it. After the longest
/// timeout the previous period could have left running, every timer was
/// either reset by the primary or has fired. 40 + 20 ticks = 0.6 s.
pub const QUIET_SETTLE_TICKS: u64 = NORMAL_TIMEOUT_TICKS + NORMAL_TIMEOUT_JITTER_TICKS;
pub const QUIET_SETTLE_NS: u64 = QUIET_SETTLE_TICKS * TICK_NS;

/// How long a backup of a settled group may stay below a commit point the
/// primary applied: the next commit heartbeat tells it, then up to
/// `AVAILABILITY_REPAIR_ROUNDS_MAX` repair rounds fetch what it lacks.
/// With today's constants 5 + 10 × 6 = 65 ticks = 0.65 s.
pub const QUIET_COMMIT_LAG_MAX_TICKS: u64 = COMMIT_HEARTBEAT_TICKS + AVAILABILITY_REPAIR_ROUNDS_MAX * REPAIR_TICKS;
pub const QUIET_COMMIT_LAG_MAX_NS: u64 = QUIET_COMMIT_LAG_MAX_TICKS * TICK_NS;

/// One replica of a group as sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaSample {
    pub replica: u8,
    pub view: u64,
    pub normal: bool,
    pub primary: bool,
    pub commit_min: u64,
}

#[derive(Debug, Default, Clone)]
struct GroupWatch {
    /// The view every replica was Normal in, and since when.
    settled: Option<(u64, u64)>,
    /// Backups below the primary's commit point: since when, and the
    /// primary's commit point then.
    behind: BTreeMap<u8, (u64, u64)>,
}

#[derive(Debug, Default)]
pub struct Quiet {
    groups: Vec<GroupWatch>,
    /// Faults drawn so far in the run, as of the last sample.
    faults_seen: u64,
}

impl Quiet {
    pub fn new(group_count: usize) -> Quiet {
        Quiet { groups: vec![GroupWatch::default(); group_count], faults_seen: 0 }
    }

    /// The run has drawn `faults_total` faults so far: true when none was
    /// drawn since the last call.
    pub fn note_faults(&mut self, faults_total: u64) -> bool {
        let unchanged = faults_total == self.faults_seen;
        self.faults_seen = faults_total;
        unchanged
    }

    /// The cluster is disturbed (a fault, a crash, faults still on): the
    /// watch starts over once it settles again.
    pub fn disturbed(&mut self, group: usize) {
        self.groups[group] = GroupWatch::default();
    }

    /// A sample of `group` at `now_ns` with every replica up and unpaused
    /// and faults off. `Err` names the violation.
    pub fn sample(&mut self, now_ns: u64, group: usize, replicas: &[ReplicaSample]) -> Result<(), String> {
        let watch = &mut self.groups[group];
        let first = replicas.first().map(|r| r.view);
        let all_normal_in_one_view = replicas.iter().all(|r| r.normal && Some(r.view) == first);
        let Some((view, since_ns)) = watch.settled else {
            if all_normal_in_one_view && let Some(view) = first {
                watch.settled = Some((view, now_ns));
            }
            return Ok(());
        };
        if now_ns - since_ns < QUIET_SETTLE_NS {
            // Still settling: a view change now is a leftover of the
            // disturbed period; wait for the next stable view.
            if !all_normal_in_one_view || first != Some(view) {
                *watch = GroupWatch::default();
            }
            return Ok(());
        }
        if let Some(moved) = replicas.iter().find(|r| r.view > view) {
            return Err(format!(
                "quiet period: group {group} settled in view {view} at {:.3} s (every replica up, Normal, \
                 connected, no fault drawn since), yet replica {} entered view {} at {:.3} s: a healthy cluster changed \
                 its view",
                since_ns as f64 / 1e9,
                moved.replica,
                moved.view,
                now_ns as f64 / 1e9
            ));
        }
        let Some(primary) = replicas.iter().find(|r| r.primary && r.normal && r.view == view) else {
            return Ok(());
        };
        for backup in replicas.iter().filter(|r| r.replica != primary.replica) {
            if backup.commit_min >= primary.commit_min {
                watch.behind.remove(&backup.replica);
                continue;
            }
            let entry = watch.behind.entry(backup.replica).or_insert((now_ns, primary.commit_min));
            if backup.commit_min >= entry.1 {
                // Caught up with the old target; the primary moved on.
                *entry = (now_ns, primary.commit_min);
            }
            if now_ns - entry.0 > QUIET_COMMIT_LAG_MAX_NS {
                return Err(format!(
                    "quiet period: group {group} settled in view {view}; replica {} stayed below commit {} \
                     (the primary's since {:.3} s) until {:.3} s, at commit {}: over the bound of {:.3} s \
                     (QUIET_COMMIT_LAG_MAX_NS)",
                    backup.replica,
                    entry.1,
                    entry.0 as f64 / 1e9,
                    now_ns as f64 / 1e9,
                    backup.commit_min,
                    QUIET_COMMIT_LAG_MAX_NS as f64 / 1e9
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(replica: u8, view: u64, commit_min: u64) -> ReplicaSample {
        ReplicaSample { replica, view, normal: true, primary: view % 3 == u64::from(replica), commit_min }
    }

    #[test]
    fn a_view_change_after_settling_is_a_violation() {
        let mut quiet = Quiet::new(1);
        quiet.sample(0, 0, &[replica(0, 3, 5), replica(1, 3, 5), replica(2, 3, 5)]).unwrap();
        // A view change while settling is a leftover of the disturbance.
        quiet.sample(10, 0, &[replica(0, 3, 5), replica(1, 4, 5), replica(2, 3, 5)]).unwrap();
        quiet.sample(20, 0, &[replica(0, 4, 5), replica(1, 4, 5), replica(2, 4, 5)]).unwrap();
        quiet.sample(20 + QUIET_SETTLE_NS, 0, &[replica(0, 4, 5), replica(1, 4, 5), replica(2, 4, 5)]).unwrap();
        let error =
            quiet.sample(30 + QUIET_SETTLE_NS, 0, &[replica(0, 4, 5), replica(1, 5, 5), replica(2, 4, 5)]).unwrap_err();
        assert!(error.contains("changed its view"), "{error}");
    }

    #[test]
    fn a_view_change_before_settling_or_after_a_disturbance_is_not() {
        let mut quiet = Quiet::new(1);
        let mut changing = replica(1, 4, 5);
        changing.normal = false;
        quiet.sample(0, 0, &[replica(0, 3, 5), changing, replica(2, 3, 5)]).unwrap();
        quiet.sample(10, 0, &[replica(0, 3, 5), replica(1, 3, 5), replica(2, 3, 5)]).unwrap();
        quiet.sample(20 + QUIET_SETTLE_NS, 0, &[replica(0, 3, 5), replica(1, 3, 5), replica(2, 3, 5)]).unwrap();
        quiet.disturbed(0);
        quiet.sample(30 + QUIET_SETTLE_NS, 0, &[replica(0, 3, 5), changing, replica(2, 3, 5)]).unwrap();
    }

    #[test]
    fn a_backup_lagging_past_the_bound_is_a_violation_one_catching_up_is_not() {
        let mut quiet = Quiet::new(1);
        quiet.sample(0, 0, &[replica(0, 3, 5), replica(1, 3, 5), replica(2, 3, 5)]).unwrap();
        quiet.sample(QUIET_SETTLE_NS, 0, &[replica(0, 3, 5), replica(1, 3, 5), replica(2, 3, 5)]).unwrap();
        // R1 keeps up with a moving primary; R2 stays at 5.
        for step in 1..=100u64 {
            let now = QUIET_SETTLE_NS + step * TICK_NS;
            let result = quiet.sample(now, 0, &[replica(0, 3, 5 + step), replica(1, 3, 4 + step), replica(2, 3, 5)]);
            if now > QUIET_SETTLE_NS + QUIET_COMMIT_LAG_MAX_NS + TICK_NS {
                let error = result.unwrap_err();
                assert!(error.contains("replica 2"), "{error}");
                return;
            }
            result.unwrap();
        }
        panic!("the lagging backup was never reported");
    }
}
