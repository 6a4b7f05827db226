//! The lost-vote plot (3 or more replicas; mark `rejoin_above_cluster_view`).
//! The rot replica R, a backup of group g in view v, is cut off from every
//! peer. Alone, it times out and votes for a view above v: its superblock
//! keeps the vote, a view the others never reach while they go on
//! committing in v. R crashes, and while it is down both copies of its
//! checkpoint of g rot, so it restarts with its promises (the superblock)
//! kept and its state of g lost, and rejoins g. The newest view a quorum of
//! peers reports is then below its own vote: it may not join below it, and
//! must move the cluster up to it without vouching for a log (it is
//! `Recovering`). The checkers hold the cluster to agreement and liveness
//! through it.
//!
//! Random faults almost never line this up: the isolation must outlast a
//! view-change timeout without the cluster following, and the damage must
//! take the last checkpoint copy exactly while that vote is the newest.
//! Shares `Network::set_cuts` with the other plots: one plot at a time.

use std::collections::BTreeSet;

use super::*;

/// R must vote above the cluster's view within this long of its isolation,
/// or the plot ends (a view change timeout is well inside it, and so are
/// several when the others change views too).
pub const LOST_VOTE_VOTE_BY_NS: u64 = 2_500_000_000;
/// How long after R's vote it crashes: its superblock write must be durable.
pub const LOST_VOTE_DURABLE_WAIT_NS: u64 = 100_000_000;
/// How long R stays down.
pub const LOST_VOTE_DOWN_NS: u64 = 50_000_000;
/// The plot ends this long after it started at the latest; the safety phase
/// is held open until then. Long enough for the rejoin and its view change.
pub const LOST_VOTE_SPAN_MAX_NS: u64 = 4_000_000_000;
/// While the cluster cannot spare the voter's state, its restart waits
/// `LOST_VOTE_DOWN_NS` more, at most this many times.
pub const LOST_VOTE_RESTARTS_DEFERRED_MAX: u32 = 20;
/// Lost-vote plots per run at most: each holds the safety phase open.
pub const LOST_VOTE_PLOTS_PER_RUN_MAX: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LostVoteStage {
    /// R is cut off; waiting for its vote above the others' view.
    Isolated,
    /// R voted above the cluster (at this time): it crashes once the vote
    /// is durable.
    Voted { at_ns: u64 },
    /// R is down; its checkpoint of g rots before it restarts.
    Down,
    /// R restarted without its state of g, its cuts lifted.
    Rejoining,
}

#[derive(Debug, Clone)]
pub(super) struct LostVote {
    group: usize,
    voter: u8,
    /// The view the others run in g when the plot starts.
    cluster_view: u64,
    stage: LostVoteStage,
    started_ns: u64,
    restarts_deferred: u32,
}

/// What the plot made of the voter's restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LostVoteRestart {
    /// Not the plot's voter, or the plot ended: the restart goes on as usual.
    NotPlotted,
    /// The voter's checkpoint rotted: nothing else rots this down time.
    Rotted,
    /// The voter stays down `LOST_VOTE_DOWN_NS` more.
    Deferred,
}

impl Cluster {
    /// Maybe start the plot on a prepare from `from` (the primary of `group`)
    /// to `to`, the rot replica.
    pub(super) fn maybe_isolate_voter(&mut self, group: usize, from: u8, to: u8, message: &Message) {
        let ppm = self.config.faults.plot_lost_vote_ppm;
        let header = &message.header;
        let replicas = self.config.replica_count;
        // Off (or impossible), it draws nothing.
        if ppm == 0
            || replicas < 3
            || self.phase != Phase::Safety
            || self.lost_vote.is_some()
            || self.plot.is_some()
            || self.deposed.is_some()
            || self.lost_votes_started >= LOST_VOTE_PLOTS_PER_RUN_MAX
            || to != self.rot_replica
            || header.command != Command::Prepare
            || header.view % u64::from(replicas) != u64::from(from)
        {
            return;
        }
        let view = header.view;
        // The voter runs normally in the view with its state, and has a
        // checkpoint to lose. The others may come and go: whether the
        // cluster can spare the voter's state is judged at the rot.
        let ready = self.nodes[to as usize].up
            && self.group_replica(to, group).is_some_and(|replica| {
                replica.status() == Status::Normal
                    && replica.view() == view
                    && !faults::impaired(replica)
                    && replica.checkpoint_op() > 0
            });
        if !ready || !self.roll(ppm, "plot_lost_vote") {
            return;
        }
        self.lost_votes_started += 1;
        self.lost_vote = Some(LostVote {
            group,
            voter: to,
            cluster_view: view,
            stage: LostVoteStage::Isolated,
            started_ns: self.now_ns,
            restarts_deferred: 0,
        });
        let detail = format!("lost vote: replica {to} cut off in view {view}{}", self.group_label(group));
        self.record(Some(to), "plot", view, group as u64, || detail.clone());
        self.timeline(to, TimelineKind::Fault, detail);
        self.lost_vote_apply_cuts();
    }

    fn lost_vote_apply_cuts(&mut self) {
        let Some(plot) = &self.lost_vote else { return self.network.set_cuts(BTreeSet::new()) };
        let mut cuts = BTreeSet::new();
        if matches!(plot.stage, LostVoteStage::Isolated | LostVoteStage::Voted { .. } | LostVoteStage::Down) {
            let voter = NodeId::from(plot.voter);
            for peer in (0..NodeId::from(self.config.replica_count)).filter(|peer| *peer != voter) {
                cuts.insert((voter, peer));
                cuts.insert((peer, voter));
            }
        }
        self.network.set_cuts(cuts);
    }

    fn lost_vote_stage(&mut self, stage: LostVoteStage, why: String) {
        let Some(plot) = &mut self.lost_vote else { return };
        plot.stage = stage;
        let voter = plot.voter;
        let detail = format!("lost vote: {stage:?}: {why}");
        self.record(Some(voter), "plot", 0, 0, || detail.clone());
        self.timeline(voter, TimelineKind::Fault, detail);
        self.lost_vote_apply_cuts();
    }

    /// The newest view any replica but `voter` runs in `group`.
    fn others_view(&self, voter: u8, group: usize) -> Option<u64> {
        (0..self.config.replica_count)
            .filter(|r| *r != voter)
            .filter_map(|r| self.group_replica(r, group).map(|replica| replica.view()))
            .max()
    }

    /// Once per network tick: move the plot on (the vote, then the crash),
    /// or end it.
    pub(super) fn lost_vote_tick(&mut self) {
        let Some(plot) = self.lost_vote.clone() else { return };
        let age = self.now_ns - plot.started_ns;
        if age >= LOST_VOTE_SPAN_MAX_NS {
            return self.lost_vote_end("span over");
        }
        let voter_view = self.group_replica(plot.voter, plot.group).map(|replica| replica.view());
        let others_view = self.others_view(plot.voter, plot.group);
        let above = matches!((voter_view, others_view), (Some(mine), Some(theirs)) if mine > theirs);
        match plot.stage {
            LostVoteStage::Isolated if above => {
                let why = format!("voted for view {} above the others' {:?}", voter_view.unwrap_or(0), others_view);
                self.lost_vote_stage(LostVoteStage::Voted { at_ns: self.now_ns }, why);
            }
            LostVoteStage::Isolated if age >= LOST_VOTE_VOTE_BY_NS => self.lost_vote_end("no vote above the cluster"),
            // The others moved up too (their own view change): wait for the
            // voter's next timeout to take it above them again.
            LostVoteStage::Voted { .. } if !above => {
                self.lost_vote_stage(LostVoteStage::Isolated, "the others reached the vote's view".into());
            }
            LostVoteStage::Rejoining
                if self.group_replica(plot.voter, plot.group).is_some_and(|r| r.status() == Status::Normal) =>
            {
                self.lost_vote_end("the voter rejoined");
            }
            LostVoteStage::Voted { at_ns } if self.now_ns >= at_ns + LOST_VOTE_DURABLE_WAIT_NS => {
                self.lost_vote_stage(LostVoteStage::Down, format!("replica {} crashes", plot.voter));
                self.crash_for(plot.voter, "lost-vote plot: after its vote above the cluster", LOST_VOTE_DOWN_NS);
                self.spend_fault("plot_lost_vote_crash");
            }
            _ => {}
        }
    }

    /// At the voter's restart, before anything else rots: both copies of
    /// its checkpoint of the plot's group rot, when the cluster can spare
    /// that state here; then its cuts lift. While it cannot (a peer is down
    /// or changing views, as often in disk-rot), the voter stays down a
    /// little longer, a bounded number of times.
    pub(super) fn lost_vote_on_restart(&mut self, replica: u8) -> LostVoteRestart {
        let Some(plot) = self.lost_vote.clone() else { return LostVoteRestart::NotPlotted };
        if plot.stage != LostVoteStage::Down || plot.voter != replica {
            return LostVoteRestart::NotPlotted;
        }
        let Some(held) = self.disk_holding(replica, plot.group) else {
            self.lost_vote_end("its group's files cannot be inspected");
            return LostVoteRestart::NotPlotted;
        };
        if held.view <= plot.cluster_view {
            self.lost_vote_end("its vote did not reach the disk");
            return LostVoteRestart::NotPlotted;
        }
        if !self.group_loss_is_recoverable(replica, plot.group, &held.holding) {
            if plot.restarts_deferred < LOST_VOTE_RESTARTS_DEFERRED_MAX {
                if let Some(plot) = &mut self.lost_vote {
                    plot.restarts_deferred += 1;
                }
                return LostVoteRestart::Deferred;
            }
            self.lost_vote_end("the cluster cannot spare its state of the group");
            return LostVoteRestart::NotPlotted;
        }
        if !self.rot_checkpoint(replica, plot.group, &held.holding, true) {
            self.lost_vote_end("its checkpoint did not rot");
            return LostVoteRestart::NotPlotted;
        }
        self.spend_fault("plot_lost_vote_rot");
        self.lost_vote_stage(LostVoteStage::Rejoining, format!("replica {replica} restarts without its checkpoint"));
        LostVoteRestart::Rotted
    }

    fn lost_vote_end(&mut self, why: &str) {
        let Some(plot) = self.lost_vote.take() else { return };
        let detail = format!("lost vote ends: {why}");
        self.record(Some(plot.voter), "plot_end", 0, 0, || detail.clone());
        self.timeline(plot.voter, TimelineKind::PartitionEnd, detail);
        self.network.set_cuts(BTreeSet::new());
    }

    /// The safety phase may end only once the plot ended: how much longer.
    pub(super) fn lost_vote_holds_safety_ns(&self) -> Option<u64> {
        let plot = self.lost_vote.as_ref()?;
        Some((plot.started_ns + LOST_VOTE_SPAN_MAX_NS).saturating_sub(self.now_ns).max(TICK_NS))
    }
}

#[cfg(test)]
mod tests {
    use crate::run::{FaultMix, RunConfig, Verdict};

    /// With no other fault, the plot reaches its rot in most seeds and the
    /// cluster survives the rejoin above its view: the sweeps rely on it to
    /// draw the schedule, and a plot that silently stopped reaching its rot
    /// would test nothing.
    #[test]
    fn the_lost_vote_plot_alone_reaches_its_rot_and_the_cluster_survives_it() {
        let faults = FaultMix { plot_lost_vote_ppm: 100_000, ..FaultMix::none() };
        let (mut rotted, mut above) = (0, 0);
        for seed in 0..8 {
            let config = RunConfig::developer(seed, faults.clone());
            let outcome = super::super::run(&config);
            assert!(matches!(outcome.verdict, Verdict::Pass), "seed {seed}: {:?}", outcome.verdict);
            rotted += outcome.faults_injected.get("plot_lost_vote_rot").copied().unwrap_or(0);
            above += outcome.marks.get(shoal_vsr::marks::REJOIN_ABOVE_CLUSTER_VIEW).copied().unwrap_or(0);
        }
        assert!(rotted >= 4, "the plot rotted its voter's checkpoint {rotted} times in 8 seeds");
        assert!(above >= 4, "a rejoin moved the cluster up to its vote {above} times in 8 seeds");
    }
}
