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
//! The bound allows one primary failure and `AVAILABILITY_VIEW_CHANGES_MAX`
//! view changes. A view entered during the window whose primary is down
//! (crashed, reopening its storage, paused) was doomed by a fault, not by
//! the protocol: no protocol can finish a view change whose primary does
//! not run, and VSR has no failure detector that could skip it sooner than
//! its view-change timeout. Each such view extends the window's bound by
//! one view change (`AVAILABILITY_DOOMED_VIEW_TICKS`), up to
//! `AVAILABILITY_DOOMED_VIEWS_MAX` (swarm seed 2222: the primaries of three
//! views in a row crashed on injected storage errors).
//!
//! Owns the window bookkeeping; the cluster says what held when.

use shoal_vsr::replica::{
    NORMAL_TIMEOUT_JITTER_TICKS, NORMAL_TIMEOUT_TICKS, REPAIR_TICKS, VIEW_CHANGE_RETRY_TICKS, VIEW_CHANGE_TIMEOUT_TICKS,
};

use std::collections::BTreeSet;

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
/// What a view doomed by its primary being down costs: its view change runs
/// to its timeout, and the next one starts after a retry.
pub const AVAILABILITY_DOOMED_VIEW_TICKS: u64 = VIEW_CHANGE_TIMEOUT_TICKS + VIEW_CHANGE_RETRY_TICKS;
pub const AVAILABILITY_DOOMED_VIEW_NS: u64 = AVAILABILITY_DOOMED_VIEW_TICKS * TICK_NS;
/// Doomed views one window may be granted at most; more, and the window is
/// judged by the bound they reached (a fault schedule that downs every
/// candidate primary for long is not one the checker excuses forever).
pub const AVAILABILITY_DOOMED_VIEWS_MAX: usize = 4;
/// Windows at least this long are listed in `RunOutcome`; shorter ones (the
/// gaps between commits of a healthy run) only count toward the maximum.
pub const AVAILABILITY_WINDOW_LISTED_MIN_NS: u64 = 200_000_000;

/// A group's open window.
#[derive(Debug, Clone)]
struct OpenWindow {
    start_ns: u64,
    /// The group's newest view when the window opened: views above it were
    /// entered during the window.
    opened_in_view: u64,
    /// Views entered during the window whose primary was seen down (at most
    /// `AVAILABILITY_DOOMED_VIEWS_MAX`).
    doomed_views: BTreeSet<u64>,
}

impl OpenWindow {
    fn bound_ns(&self) -> u64 {
        AVAILABILITY_WINDOW_MAX_NS + self.doomed_views.len() as u64 * AVAILABILITY_DOOMED_VIEW_NS
    }
}

#[derive(Debug, Default)]
pub struct Availability {
    /// Per group: the current window, if one is open.
    open: Vec<Option<OpenWindow>>,
    /// Per group: its newest view at the last sample.
    newest_view: Vec<u64>,
    windows: Vec<AvailabilityWindow>,
    max_ns: u64,
    /// The first window over the bound.
    violation: Option<AvailabilityViolation>,
}

impl Availability {
    pub fn new(group_count: usize) -> Availability {
        Availability { open: vec![None; group_count], newest_view: vec![0; group_count], ..Availability::default() }
    }

    /// A sample: whether `group` could and should commit now (quorum up and
    /// connected, a client waiting), and the newest view any of its up
    /// replicas is in.
    pub fn sample(&mut self, now_ns: u64, group: usize, could_commit: bool, newest_view: u64) {
        self.newest_view[group] = newest_view;
        match (self.open[group].is_some(), could_commit) {
            (false, true) => self.open[group] = Some(self.window_from(group, now_ns)),
            (true, false) => {
                let window = self.open[group].take().expect("matched open");
                self.close(group, &window, now_ns);
            }
            _ => {}
        }
    }

    /// The primary of `view` (the newest view of `group`'s up replicas) is
    /// down: if the view was entered during the open window, that view
    /// change is doomed and the window's bound grows by one view change.
    pub fn primary_down(&mut self, group: usize, view: u64) {
        if let Some(window) = self.open[group].as_mut()
            && view > window.opened_in_view
            && window.doomed_views.len() < AVAILABILITY_DOOMED_VIEWS_MAX
        {
            window.doomed_views.insert(view);
        }
    }

    /// `group` committed a new op: the open window (if any) ends and, the
    /// conditions still holding, a new one starts.
    pub fn progress(&mut self, now_ns: u64, group: usize) {
        if let Some(window) = self.open[group].take() {
            self.close(group, &window, now_ns);
            self.open[group] = Some(self.window_from(group, now_ns));
        }
    }

    /// The run ended: close every open window.
    pub fn finish(&mut self, now_ns: u64) {
        for group in 0..self.open.len() {
            if let Some(window) = self.open[group].take() {
                self.close(group, &window, now_ns);
            }
        }
    }

    /// The first window longer than its bound (`AVAILABILITY_WINDOW_MAX_NS`
    /// and its doomed views), if any. An open window counts up to `now_ns`.
    pub fn violation(&self, now_ns: u64) -> Option<AvailabilityViolation> {
        self.violation.clone().or_else(|| {
            self.open.iter().enumerate().find_map(|(group, open)| {
                let open = open.as_ref()?;
                (now_ns - open.start_ns > open.bound_ns()).then(|| AvailabilityViolation::of(group, open, now_ns))
            })
        })
    }

    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    pub fn take_windows(&mut self) -> Vec<AvailabilityWindow> {
        std::mem::take(&mut self.windows)
    }

    fn window_from(&self, group: usize, now_ns: u64) -> OpenWindow {
        OpenWindow { start_ns: now_ns, opened_in_view: self.newest_view[group], doomed_views: BTreeSet::new() }
    }

    fn close(&mut self, group: usize, open: &OpenWindow, end_ns: u64) {
        debug_assert!(open.start_ns <= end_ns);
        let window = AvailabilityWindow { group, start_ns: open.start_ns, end_ns };
        self.max_ns = self.max_ns.max(window.duration_ns());
        if window.duration_ns() >= AVAILABILITY_WINDOW_LISTED_MIN_NS {
            self.windows.push(window);
        }
        if window.duration_ns() > open.bound_ns() && self.violation.is_none() {
            self.violation = Some(AvailabilityViolation::of(group, open, end_ns));
        }
    }
}

/// A window over its bound, with what the bound was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvailabilityViolation {
    pub window: AvailabilityWindow,
    pub bound_ns: u64,
    /// The views doomed by a down primary that the bound allowed for.
    pub doomed_views: Vec<u64>,
}

impl AvailabilityViolation {
    fn of(group: usize, open: &OpenWindow, end_ns: u64) -> AvailabilityViolation {
        AvailabilityViolation {
            window: AvailabilityWindow { group, start_ns: open.start_ns, end_ns },
            bound_ns: open.bound_ns(),
            doomed_views: open.doomed_views.iter().copied().collect(),
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
        availability.sample(0, 0, true, 0);
        availability.progress(100, 0);
        availability.sample(200, 0, true, 0);
        assert_eq!(availability.max_ns(), 100);
        assert!(availability.violation(AVAILABILITY_WINDOW_MAX_NS).is_none());
        assert!(availability.violation(AVAILABILITY_WINDOW_MAX_NS + 101).is_some(), "an open window counts");
        availability.sample(AVAILABILITY_WINDOW_MAX_NS + 200, 0, false, 0);
        assert_eq!(availability.max_ns(), AVAILABILITY_WINDOW_MAX_NS + 100);
        assert_eq!(availability.take_windows().len(), 1);
        assert!(availability.violation(0).is_some());
    }

    #[test]
    fn a_view_entered_with_its_primary_down_extends_the_bound_by_one_view_change() {
        let mut availability = Availability::new(1);
        availability.sample(0, 0, true, 3);
        // View 3's primary going down is the failure the base bound allows.
        availability.primary_down(0, 3);
        let end_ns = AVAILABILITY_WINDOW_MAX_NS + 1;
        assert!(availability.violation(end_ns).is_some(), "the view the window opened in is not doomed");
        // Views 4 and 5 were entered during the window with their primary down;
        // seen twice, view 4 counts once.
        availability.primary_down(0, 4);
        availability.primary_down(0, 4);
        availability.primary_down(0, 5);
        let bound_ns = AVAILABILITY_WINDOW_MAX_NS + 2 * AVAILABILITY_DOOMED_VIEW_NS;
        assert!(availability.violation(bound_ns).is_none());
        let violation = availability.violation(bound_ns + 1).expect("over two doomed views' allowance");
        assert_eq!((violation.bound_ns, violation.doomed_views), (bound_ns, vec![4, 5]));
    }

    #[test]
    fn doomed_views_are_granted_up_to_a_bound_and_forgotten_by_a_commit() {
        let mut availability = Availability::new(1);
        availability.sample(0, 0, true, 0);
        for view in 1..=20 {
            availability.primary_down(0, view);
        }
        let bound_ns = AVAILABILITY_WINDOW_MAX_NS + AVAILABILITY_DOOMED_VIEWS_MAX as u64 * AVAILABILITY_DOOMED_VIEW_NS;
        assert!(availability.violation(bound_ns).is_none());
        assert!(availability.violation(bound_ns + 1).is_some());
        // A commit opens a new window in the newest view: its allowance starts over.
        availability.sample(100, 0, true, 20);
        availability.progress(200, 0);
        availability.primary_down(0, 20);
        assert!(availability.violation(200 + AVAILABILITY_WINDOW_MAX_NS + 1).is_some());
    }

    #[test]
    fn no_window_without_a_waiting_client_or_a_quorum() {
        let mut availability = Availability::new(2);
        availability.sample(0, 1, false, 0);
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
