//! What the quiet-period checker (`crate::quiet`) is shown: each group's
//! replicas once per network tick while the cluster is healthy (no fault
//! drawn since the last sample, every replica up and unpaused, no partition
//! or clog), in either phase.

use super::*;
use crate::quiet::ReplicaSample;

impl Cluster {
    pub(super) fn sample_quiet(&mut self) {
        // Any fault drawn since the last sample (a drop, a delay, a disk
        // error, a crash...) disturbs the cluster, in either phase.
        let faults_total: u64 = self.faults.values().sum();
        let no_new_fault = self.quiet.note_faults(faults_total);
        let healthy = no_new_fault
            && self.network.partition().is_none()
            && !self.network.clogged()
            && !self.network.cut_links()
            && self.nodes.iter().all(|n| n.up && n.paused_until_ns.is_none() && n.node.is_some());
        for group in 0..self.namespaces.len() {
            // The lag bound starts once every process runs (`still_opening`;
            // swarm 4351: replica 1's opens took 0.84 s, to 2.417 s; the lag
            // was counted from 2.180 s, and it caught up 0.42 s after its opens).
            let opening = (0..self.config.replica_count)
                .any(|r| self.group_replica(r, group).is_some_and(super::checks::still_opening));
            // A primary repairing a body its view's log names and it lacks
            // (lost to a fault before the heal) abdicates if no peer holds
            // it: the view change that follows is the protocol's repair of
            // that damage, not churn (disk-rot seed 3684: op 37, whose only
            // header came from a faulty slot, truncated by view 5).
            let repairing = (0..self.config.replica_count).any(|r| {
                self.group_replica(r, group).is_some_and(|replica| {
                    replica.is_primary() && replica.status() == Status::Normal && replica.pipeline_waits_on_body()
                })
            });
            if !healthy || opening || repairing {
                self.quiet.disturbed(group);
                continue;
            }
            let samples: Vec<ReplicaSample> = (0..self.config.replica_count)
                .filter_map(|r| {
                    let replica = self.group_replica(r, group)?;
                    Some(ReplicaSample {
                        replica: r,
                        view: replica.view(),
                        normal: replica.status() == Status::Normal,
                        primary: replica.is_primary(),
                        commit_min: replica.commit_min(),
                    })
                })
                .collect();
            if let Err(why) = self.quiet.sample(self.now_ns, group, &samples)
                && self.availability_failure.is_none()
            {
                self.availability_failure = Some(why);
            }
        }
    }
}
