//! What the quiet-period checker (`crate::quiet`) is shown: each group's
//! replicas once per network tick while the cluster is healthy (liveness
//! phase, every replica up and unpaused, no partition).

use super::*;
use crate::quiet::ReplicaSample;

impl Cluster {
    pub(super) fn sample_quiet(&mut self) {
        let healthy = matches!(self.phase, Phase::Liveness { .. })
            && self.network.partition().is_none()
            && self.nodes.iter().all(|n| n.up && n.paused_until_ns.is_none() && n.node.is_some());
        for group in 0..self.namespaces.len() {
            if !healthy {
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
