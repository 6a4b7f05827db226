//! Availability: how long a group went without committing while it could
//! have.
//!
//! A window is a stretch of virtual time in which a quorum of replicas was
//! up (a restarted process counts once its storage is open: it handled its
//! first tick), unpaused and mutually connected (no partition cuts any pair of them),
//! and could vote: a `Recovering` replica (wiped, or with a faulty journal)
//! votes for nothing, so it counts only beside a `Normal` primary (`Role`),
//! at least one client of the group had a request in flight, and no new op
//! committed (a replica replaying ops it had committed before is not new).
//! Faults outside the quorum may still slow it (drops, delays, clogs, a
//! crashed third replica), but with a connected quorum the protocol must
//! make progress within a bound that its own timeouts set, or a client
//! waits forever behind a healthy majority. Samples are taken once per
//! network tick, so windows are exact to `TICK_NS`.
//!
//! Owns the window bookkeeping; the cluster says what held when.

use shoal_vsr::replica::{
    NORMAL_TIMEOUT_JITTER_TICKS, NORMAL_TIMEOUT_TICKS, REPAIR_TICKS, VIEW_CHANGE_RETRY_TICKS, VIEW_CHANGE_TIMEOUT_TICKS,
};

use crate::cluster::{CLIENT_RETRY_TICKS, TICK_NS};
use crate::run::AvailabilityWindow;

/// View changes a connected quorum may need back to back before one
/// completes: the first may be doomed (started by a voter whose log is
/// stale, or whose candidate primary crashes or is cut off as the quorum
/// forms); the next one's primary is then part of the connected quorum.
pub const AVAILABILITY_VIEW_CHANGES_MAX: u64 = 2;
/// Repair rounds after a view change (missing bodies fetched, a state
/// transfer's checkpoint installed) before the new primary commits.
pub const AVAILABILITY_REPAIR_ROUNDS_MAX: u64 = 10;

/// The longest a connected quorum may keep a waiting client without a
/// commit: a backup notices the primary is gone (normal timeout, with its
/// jitter), up to `AVAILABILITY_VIEW_CHANGES_MAX` view changes each run to
/// their timeout, the surviving view repairs its log (`REPAIR_TICKS` per
/// round, a round trip each), and a client whose request was lost retries
/// it (`CLIENT_RETRY_TICKS`). Longer means a liveness bug: a primary that
/// stopped talking, a view change that never completes, a repair that asks
/// the wrong peer forever. With today's constants that is
/// 40 + 20 + 2 × (60 + 10) + 10 × 6 + 30 = 290 ticks = 2.9 s, against a
/// longest window of about 1.6 s over 2000 seeds of `swarm` and
/// `view-churn` (a primary crash: detection, one view change, a retry).
pub const AVAILABILITY_WINDOW_MAX_TICKS: u64 = NORMAL_TIMEOUT_TICKS
    + NORMAL_TIMEOUT_JITTER_TICKS
    + AVAILABILITY_VIEW_CHANGES_MAX * (VIEW_CHANGE_TIMEOUT_TICKS + VIEW_CHANGE_RETRY_TICKS)
    + AVAILABILITY_REPAIR_ROUNDS_MAX * REPAIR_TICKS
    + CLIENT_RETRY_TICKS;
pub const AVAILABILITY_WINDOW_MAX_NS: u64 = AVAILABILITY_WINDOW_MAX_TICKS * TICK_NS;
/// Windows at least this long are listed in `RunOutcome`; shorter ones (the
/// gaps between commits of a healthy run) only count toward the maximum.
pub const AVAILABILITY_WINDOW_LISTED_MIN_NS: u64 = 200_000_000;

#[derive(Debug, Default)]
pub struct Availability {
    /// Per group: since when the current window is open.
    open: Vec<Option<u64>>,
    windows: Vec<AvailabilityWindow>,
    max_ns: u64,
    /// The first window over the bound.
    violation: Option<AvailabilityWindow>,
}

impl Availability {
    pub fn new(group_count: usize) -> Availability {
        Availability { open: vec![None; group_count], ..Availability::default() }
    }

    /// A sample: whether `group` could and should commit now (quorum up and
    /// connected, a client waiting).
    pub fn sample(&mut self, now_ns: u64, group: usize, could_commit: bool) {
        match (self.open[group], could_commit) {
            (None, true) => self.open[group] = Some(now_ns),
            (Some(start_ns), false) => {
                self.open[group] = None;
                self.close(group, start_ns, now_ns);
            }
            _ => {}
        }
    }

    /// `group` committed a new op: the open window (if any) ends and, the
    /// conditions still holding, a new one starts.
    pub fn progress(&mut self, now_ns: u64, group: usize) {
        if let Some(start_ns) = self.open[group] {
            self.close(group, start_ns, now_ns);
            self.open[group] = Some(now_ns);
        }
    }

    /// The run ended: close every open window.
    pub fn finish(&mut self, now_ns: u64) {
        for group in 0..self.open.len() {
            if let Some(start_ns) = self.open[group].take() {
                self.close(group, start_ns, now_ns);
            }
        }
    }

    /// The first window longer than `AVAILABILITY_WINDOW_MAX_NS`, if any.
    /// An open window counts up to `now_ns`.
    pub fn violation(&self, now_ns: u64) -> Option<AvailabilityWindow> {
        self.violation.or_else(|| {
            self.open.iter().enumerate().find_map(|(group, open)| {
                let start_ns = (*open)?;
                (now_ns - start_ns > AVAILABILITY_WINDOW_MAX_NS).then_some(AvailabilityWindow {
                    group,
                    start_ns,
                    end_ns: now_ns,
                })
            })
        })
    }

    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    pub fn take_windows(&mut self) -> Vec<AvailabilityWindow> {
        std::mem::take(&mut self.windows)
    }

    fn close(&mut self, group: usize, start_ns: u64, end_ns: u64) {
        debug_assert!(start_ns <= end_ns);
        let window = AvailabilityWindow { group, start_ns, end_ns };
        self.max_ns = self.max_ns.max(window.duration_ns());
        if window.duration_ns() >= AVAILABILITY_WINDOW_LISTED_MIN_NS {
            self.windows.push(window);
        }
        if window.duration_ns() > AVAILABILITY_WINDOW_MAX_NS && self.violation.is_none() {
            self.violation = Some(window);
        }
    }
}

/// What an up replica can do toward a commit of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs with its state: votes in view changes, acknowledges prepares.
    Voter,
    /// `Recovering` (after a wipe or a faulty journal): it sends no vote and
    /// no prepare_ok until a `Normal` primary's start_view takes it back, so
    /// it helps a quorum only next to such a primary.
    Joiner,
    /// A `Normal` primary of the newest view any up replica of the group is
    /// in: its start_view takes a connected `Joiner` back.
    Leader,
}

/// Whether some `quorum` of `up` replicas (index and role) are pairwise
/// connected and could commit: every member votes, or a `Leader` among them
/// takes the `Joiner`s back with its start_view. A quorum that needs a
/// `Joiner`'s vote and has no leader cannot elect one: a recovering replica
/// forgot (or may not trust) the log and promises a vote stands on.
/// Replica counts are small (at most 6), so every subset is tried.
pub fn connected_quorum(up: &[(u32, Role)], quorum: usize, connected: impl Fn(u32, u32) -> bool) -> bool {
    if up.len() < quorum {
        return false;
    }
    assert!(up.len() <= 16, "subset search is for small clusters");
    (0u32..1 << up.len()).filter(|mask| mask.count_ones() as usize == quorum).any(|mask| {
        let members: Vec<(u32, Role)> = (0..up.len()).filter(|i| mask & (1 << i) != 0).map(|i| up[i]).collect();
        let led = members.iter().any(|(_, role)| *role == Role::Leader);
        let all_vote = members.iter().all(|(_, role)| *role != Role::Joiner);
        (led || all_vote)
            && members.iter().enumerate().all(|(i, (a, _))| members[i + 1..].iter().all(|(b, _)| connected(*a, *b)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_ends_the_window_and_a_long_one_is_a_violation() {
        let mut availability = Availability::new(1);
        availability.sample(0, 0, true);
        availability.progress(100, 0);
        availability.sample(200, 0, true);
        assert_eq!(availability.max_ns(), 100);
        assert!(availability.violation(AVAILABILITY_WINDOW_MAX_NS).is_none());
        assert!(availability.violation(AVAILABILITY_WINDOW_MAX_NS + 101).is_some(), "an open window counts");
        availability.sample(AVAILABILITY_WINDOW_MAX_NS + 200, 0, false);
        assert_eq!(availability.max_ns(), AVAILABILITY_WINDOW_MAX_NS + 100);
        assert_eq!(availability.take_windows().len(), 1);
        assert!(availability.violation(0).is_some());
    }

    #[test]
    fn no_window_without_a_waiting_client_or_a_quorum() {
        let mut availability = Availability::new(2);
        availability.sample(0, 1, false);
        availability.progress(50, 1);
        availability.finish(1_000);
        assert_eq!(availability.max_ns(), 0);
    }

    #[test]
    fn quorum_must_be_pairwise_connected() {
        // 0 and 1 cut apart; 2 talks to both: {0,2} is a connected quorum.
        let cut = |a: u32, b: u32| (a.min(b), a.max(b)) == (0, 1);
        let voters = |ids: &[u32]| ids.iter().map(|id| (*id, Role::Voter)).collect::<Vec<_>>();
        assert!(connected_quorum(&voters(&[0, 1, 2]), 2, |a, b| !cut(a, b)));
        assert!(!connected_quorum(&voters(&[0, 1]), 2, |a, b| !cut(a, b)));
        assert!(!connected_quorum(&voters(&[2]), 2, |_, _| true));
    }

    #[test]
    fn a_recovering_replica_counts_only_next_to_a_normal_primary() {
        // view-churn seed 3102: 4 rejoins after a wipe; 1-3 and 0-{1,2,4}
        // are cut. {1,2,4} and {2,3,4} are cliques, but each needs 4's vote.
        let cut = |a: u32, b: u32| matches!((a.min(b), a.max(b)), (1, 3) | (0, 1) | (0, 2) | (0, 4));
        let mut up = vec![(0, Role::Voter), (1, Role::Voter), (2, Role::Voter), (3, Role::Voter), (4, Role::Joiner)];
        assert!(!connected_quorum(&up, 3, |a, b| !cut(a, b)), "no quorum of voters is connected");
        up[1].1 = Role::Leader;
        assert!(connected_quorum(&up, 3, |a, b| !cut(a, b)), "primary 1 takes 4 back with its start_view");
    }
}
