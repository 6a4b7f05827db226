//! The deposed-primary plot (5 replicas; issue 9's targeted asymmetric
//! schedules, finding 1's shape). When view v's primary P sends a backup B
//! a prepare, that prepare is lost and, for a span long enough for the
//! majority to checkpoint (`DEPOSED_SPAN_*`):
//!
//! - P reaches B alone: a minority {P, B} in which P keeps preparing and
//!   retransmitting to B;
//! - B reaches every majority replica but the next primary N (a minority
//!   that reaches exactly one side's members, blind to the one that would
//!   tell it of the new view): a stale-view backup that keeps talking to
//!   newer-view backups (repair requests, their checkpoints) for as long
//!   as the span lasts.
//!
//! The majority elects a new view and commits other ops at the numbers P
//! prepared. B, missing the dropped op, asks majority backups for it and
//! may be answered with a newer view's prepare or checkpoint, while P's
//! retransmissions keep arriving: whatever B does must never let P commit
//! its own ops. Shares `Network::set_cuts` with the wiped-acker plot, so
//! only one of them runs at a time.

use std::collections::BTreeSet;

use super::*;

/// How long the cuts last: at least long enough for a view change and a
/// checkpoint interval of commits on the majority side...
pub const DEPOSED_SPAN_MIN_NS: u64 = 1_500_000_000;
/// ...and at most this long (the safety phase is held open until then).
pub const DEPOSED_SPAN_MAX_NS: u64 = 3_000_000_000;
/// Deposed-primary plots per run at most.
pub const DEPOSED_PLOTS_PER_RUN_MAX: u32 = 2;

#[derive(Debug, Clone)]
pub(super) struct Deposed {
    primary: u8,
    bridge: u8,
    next_primary: u8,
    until_ns: u64,
}

impl Cluster {
    /// Maybe start the plot on a prepare from `from` to `to`; true: this
    /// very prepare is lost (the op the bridge will miss).
    pub(super) fn maybe_depose(&mut self, from: u8, to: u8, message: &Message) -> bool {
        let ppm = self.config.faults.plot_deposed_primary_ppm;
        let header = &message.header;
        let replicas = self.config.replica_count;
        // Off (or impossible), it draws nothing.
        if ppm == 0
            || replicas < 5
            || self.phase != Phase::Safety
            || self.deposed.is_some()
            || self.plot.is_some()
            || self.deposed_started >= DEPOSED_PLOTS_PER_RUN_MAX
            || header.command != Command::Prepare
            || header.view % u64::from(replicas) != u64::from(from)
        {
            return false;
        }
        let next_primary = ((header.view + 1) % u64::from(replicas)) as u8;
        if to == next_primary || to == from || !self.roll(ppm, "plot_deposed_primary") {
            return false;
        }
        let span = DEPOSED_SPAN_MIN_NS + self.rng.next_u64() % (DEPOSED_SPAN_MAX_NS - DEPOSED_SPAN_MIN_NS);
        self.deposed_started += 1;
        self.deposed = Some(Deposed { primary: from, bridge: to, next_primary, until_ns: self.now_ns + span });
        let detail = format!(
            "deposed primary: primary {from} reaches only {to}, which is blind to next primary {next_primary}, for {} ms",
            span / 1_000_000
        );
        self.record(Some(from), "plot", header.op, u64::from(to), || detail.clone());
        self.timeline(from, TimelineKind::Fault, detail);
        self.deposed_apply_cuts();
        true
    }

    fn deposed_apply_cuts(&mut self) {
        let Some(plot) = &self.deposed else { return self.network.set_cuts(BTreeSet::new()) };
        let (primary, bridge, next) =
            (NodeId::from(plot.primary), NodeId::from(plot.bridge), NodeId::from(plot.next_primary));
        let mut cuts = BTreeSet::new();
        for other in (0..NodeId::from(self.config.replica_count)).filter(|r| *r != primary && *r != bridge) {
            cuts.insert((primary, other));
            cuts.insert((other, primary));
        }
        cuts.insert((bridge, next));
        cuts.insert((next, bridge));
        self.network.set_cuts(cuts);
    }

    /// Once per network tick: lift the cuts when the span is over.
    pub(super) fn deposed_tick(&mut self) {
        if let Some(plot) = &self.deposed
            && self.now_ns >= plot.until_ns
        {
            let primary = plot.primary;
            self.deposed = None;
            self.record(Some(primary), "plot_end", 0, 0, || "deposed primary ends".into());
            self.timeline(primary, TimelineKind::PartitionEnd, "deposed primary ends".into());
            self.network.set_cuts(BTreeSet::new());
        }
    }

    pub(super) fn deposed_holds_safety_ns(&self) -> Option<u64> {
        let plot = self.deposed.as_ref()?;
        Some(plot.until_ns.saturating_sub(self.now_ns).max(TICK_NS))
    }
}

#[cfg(test)]
mod tests {
    use crate::run::{FaultMix, RunConfig, Verdict};

    /// With no other fault, the plot starts in most 5-replica runs and the
    /// cluster survives it (the sweeps rely on it to draw the schedule).
    #[test]
    fn the_deposed_primary_plot_alone_starts_and_the_cluster_survives_it() {
        let faults = FaultMix { plot_deposed_primary_ppm: 50_000, ..FaultMix::none() };
        let mut started = 0;
        for seed in 0..6 {
            let config = RunConfig { replica_count: 5, ..RunConfig::developer(seed, faults.clone()) };
            let outcome = super::super::run(&config);
            assert!(matches!(outcome.verdict, Verdict::Pass), "seed {seed}: {:?}", outcome.verdict);
            started += outcome.faults_injected.get("plot_deposed_primary").copied().unwrap_or(0);
        }
        assert!(started >= 6, "the plot started {started} times in 6 seeds");
    }
}
