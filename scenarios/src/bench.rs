//! `shoal-sim bench`: simulator throughput on one scenario, one thread.
//!
//! Owns the measurement and its one-line report (seeds/min, events/s,
//! virtual-to-wall ratio). Reads the wall clock only to time whole runs,
//! never inside one.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::ops::Range;
use std::time::{Duration, Instant};

use shoal_sim::Verdict;

use crate::catalog::Scenario;
use crate::runner::{Runner, run_caught};

#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    pub scenario: &'static str,
    pub seeds: u64,
    pub failures: u64,
    pub events: u64,
    pub virtual_time_ns: u64,
    pub wall: Duration,
}

impl BenchResult {
    pub fn seeds_per_minute(&self) -> f64 {
        self.seeds as f64 * 60.0 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Virtual seconds simulated per wall second.
    pub fn virtual_to_wall(&self) -> f64 {
        self.virtual_time_ns as f64 / 1e9 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn render(&self) -> String {
        let mut text = format!(
            "bench {}: {} seeds in {:.2} s: {:.1} seeds/min, {:.0} events/s, virtual/wall {:.1}x",
            self.scenario,
            self.seeds,
            self.wall.as_secs_f64(),
            self.seeds_per_minute(),
            self.events_per_second(),
            self.virtual_to_wall()
        );
        if self.failures > 0 {
            text.push_str(&format!(" ({} seeds failed: the numbers include them)", self.failures));
        }
        text
    }
}

/// Run the seeds one after another on this thread.
pub fn bench(scenario: &'static Scenario, seeds: Range<u64>, runner: Runner<'_>) -> BenchResult {
    assert!(seeds.start < seeds.end, "bench needs at least one seed");
    let started = Instant::now();
    let mut result = BenchResult {
        scenario: scenario.name,
        seeds: 0,
        failures: 0,
        events: 0,
        virtual_time_ns: 0,
        wall: Duration::ZERO,
    };
    for seed in seeds {
        let outcome = run_caught(runner, &scenario.config(seed));
        result.seeds += 1;
        result.failures += u64::from(outcome.verdict != Verdict::Pass);
        result.events += outcome.events_processed;
        result.virtual_time_ns += outcome.virtual_time_ns;
    }
    result.wall = started.elapsed();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{catalog, fake};

    #[test]
    fn bench_sums_events_and_virtual_time_over_seeds() {
        let result = bench(catalog::find("steady").unwrap(), 0..5, &fake::run);
        assert_eq!(result.seeds, 5);
        assert_eq!(result.failures, 0);
        assert_eq!(result.virtual_time_ns, 5 * 4_000_000_000);
        let expected_events: u64 = (0..5).map(|seed| fake::run(&catalog::steady(seed)).events_processed).sum();
        assert_eq!(result.events, expected_events);
        let text = result.render();
        assert!(text.contains("seeds/min") && text.contains("events/s") && text.contains("virtual/wall"), "{text}");
    }
}
