//! Machine-readable reports of runs and sweeps: JSON (one document) and JUnit
//! XML (one test case per seed, for CI test tabs).
//!
//! Owns the report formats, their provenance fields (version, commit, seed
//! range, slice: what `report merge` checks before joining reports) and XML
//! escaping. Must not decide verdicts: it prints what the outcomes say, and
//! each failure carries its replay command.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use shoal_sim::{RunOutcome, Verdict};

use crate::slice::SliceId;

/// `tool` of every report shoal-sim writes; `report merge` reads no other.
pub const TOOL: &str = "shoal-sim";
/// The shoal-sim version, written into every report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// `git_commit` when neither git nor `SHOAL_SIM_GIT_COMMIT` names the commit.
pub const COMMIT_UNKNOWN: &str = "unknown";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Json,
    Junit,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write report {path}: {source}; check the directory exists and is writable")]
    Write { path: String, source: std::io::Error },
}

/// What a report says about the whole batch, besides the outcomes.
#[derive(Debug, Clone)]
pub struct ReportMeta {
    pub scenario: String,
    pub base_seed: u64,
    /// Seed indices of the whole sweep, every slice included.
    pub seed_range: Range<u64>,
    /// Which slice of `seed_range` this batch is (`SliceId::WHOLE` without `--shard`).
    pub slice: SliceId,
    /// Seed indices of this slice.
    pub slice_range: Range<u64>,
    pub seeds_planned: u64,
    pub stopped_by_time_limit: bool,
    /// Seeds that ran twice and differed, with what differed.
    pub nondeterministic: Vec<(u64, String)>,
    pub wall: Duration,
}

/// The JSON report: one document per sweep, run or merge. Deserializable so
/// `report merge` reads what sweeps wrote; the provenance fields are `Option`
/// so a report from an older shoal-sim still parses and is refused by name.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SweepReport {
    pub tool: String,
    #[serde(default)]
    pub shoal_sim_version: Option<String>,
    /// `git rev-parse HEAD` where the sweep ran, or "unknown".
    #[serde(default)]
    pub git_commit: Option<String>,
    pub scenario: String,
    pub base_seed: u64,
    /// Seed indices of the whole sweep (seed = base_seed + index, wrapping).
    #[serde(default)]
    pub seed_range: Option<Range<u64>>,
    /// Which slice of `seed_range` this report covers; `null` in a merge that
    /// is missing slices, so it cannot pass for the whole range.
    #[serde(default)]
    pub slice: Option<SliceRecord>,
    pub seeds_planned: u64,
    pub seeds_run: usize,
    pub stopped_by_time_limit: bool,
    pub wall_time_s: f64,
    pub exit_code: i32,
    pub pass: usize,
    pub fail: usize,
    pub failures_by_checker: BTreeMap<String, u64>,
    /// Coverage marks hit, by name. Absent means "not counted", read as empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub marks: BTreeMap<String, u64>,
    pub nondeterministic: Vec<NondeterministicRecord>,
    /// Only in a merged report: which slices went in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<crate::merge::MergeRecord>,
    pub runs: Vec<RunRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SliceRecord {
    pub index: u64,
    pub count: u64,
    /// Seed indices of this slice.
    pub seeds: Range<u64>,
}

impl SliceRecord {
    pub fn id(&self) -> SliceId {
        SliceId { index: self.index, count: self.count }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NondeterministicRecord {
    pub seed: u64,
    pub mismatch: String,
    pub replay: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    pub seed: u64,
    pub scenario: String,
    pub verdict: Verdict,
    pub exit_code: i32,
    pub ops_committed: u64,
    pub view_changes: u64,
    pub faults_injected_total: u64,
    pub faults_injected: BTreeMap<String, u64>,
    pub trace_hash: String,
    pub events_processed: u64,
    pub virtual_time_ns: u64,
    /// The run's longest stretch with a connected quorum, a waiting client
    /// and no commit (0 in reports older than the measure).
    #[serde(default)]
    pub availability_window_max_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<String>,
}

/// The worst verdict of `runs` as an exit code, 5 if any seed was non-deterministic.
pub fn worst_exit_code(runs: &[RunRecord], nondeterministic: &[NondeterministicRecord]) -> i32 {
    let verdicts = runs.iter().map(|run| run.exit_code).max().unwrap_or(0);
    if nondeterministic.is_empty() { verdicts } else { verdicts.max(crate::sweep::EXIT_NONDETERMINISM) }
}

/// Failures counted by the checker that caught them.
pub fn failures_by_checker(runs: &[RunRecord]) -> BTreeMap<String, u64> {
    let mut by_checker = BTreeMap::new();
    for checker in runs.iter().filter_map(|run| run.verdict.checker()) {
        *by_checker.entry(format!("{checker:?}")).or_insert(0) += 1;
    }
    by_checker
}

/// Hits of each coverage mark over `outcomes` (the shape `report merge` sums).
pub fn sum_marks(outcomes: &[RunOutcome]) -> BTreeMap<String, u64> {
    let mut marks = BTreeMap::new();
    for outcome in outcomes {
        for (name, hits) in &outcome.marks {
            *marks.entry(name.clone()).or_insert(0) += hits;
        }
    }
    marks
}

impl SweepReport {
    pub fn new(outcomes: &[RunOutcome], meta: &ReportMeta) -> SweepReport {
        let runs: Vec<RunRecord> = outcomes
            .iter()
            .map(|outcome| RunRecord {
                seed: outcome.config.seed,
                scenario: outcome.config.scenario.clone(),
                verdict: outcome.verdict.clone(),
                exit_code: outcome.verdict.exit_code(),
                ops_committed: outcome.ops_committed,
                view_changes: outcome.view_changes,
                faults_injected_total: outcome.faults_injected_total,
                faults_injected: outcome.faults_injected.clone(),
                trace_hash: format!("{:016x}", outcome.trace_hash),
                events_processed: outcome.events_processed,
                virtual_time_ns: outcome.virtual_time_ns,
                availability_window_max_ns: outcome.availability_window_max_ns,
                replay: (outcome.verdict != Verdict::Pass)
                    .then(|| crate::replay_command(outcome.config.seed, &outcome.config.scenario)),
            })
            .collect();
        let nondeterministic: Vec<NondeterministicRecord> = meta
            .nondeterministic
            .iter()
            .map(|(seed, mismatch)| NondeterministicRecord {
                seed: *seed,
                mismatch: mismatch.clone(),
                replay: format!("{} --check-determinism", crate::replay_command(*seed, &meta.scenario)),
            })
            .collect();
        SweepReport {
            tool: TOOL.to_string(),
            shoal_sim_version: Some(VERSION.to_string()),
            git_commit: Some(crate::source_commit().unwrap_or_else(|| COMMIT_UNKNOWN.to_string())),
            scenario: meta.scenario.clone(),
            base_seed: meta.base_seed,
            seed_range: Some(meta.seed_range.clone()),
            slice: Some(SliceRecord {
                index: meta.slice.index,
                count: meta.slice.count,
                seeds: meta.slice_range.clone(),
            }),
            seeds_planned: meta.seeds_planned,
            seeds_run: runs.len(),
            stopped_by_time_limit: meta.stopped_by_time_limit,
            wall_time_s: meta.wall.as_secs_f64(),
            exit_code: worst_exit_code(&runs, &nondeterministic),
            pass: runs.iter().filter(|run| run.verdict == Verdict::Pass).count(),
            fail: runs.iter().filter(|run| run.verdict != Verdict::Pass).count(),
            failures_by_checker: failures_by_checker(&runs),
            marks: sum_marks(outcomes),
            nondeterministic,
            merge: None,
            runs,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report types serialize") + "\n"
    }

    /// JUnit XML: one test case per seed, for CI test tabs.
    pub fn to_junit(&self) -> String {
        let suite = xml_escape(&format!("shoal-sim.{}", self.scenario));
        let nondeterministic = |seed: u64| {
            self.nondeterministic.iter().find(|record| record.seed == seed).map(|record| record.mismatch.as_str())
        };
        let failures = self
            .runs
            .iter()
            .filter(|run| {
                matches!(run.exit_code, 2 | 3) || (run.verdict == Verdict::Pass && nondeterministic(run.seed).is_some())
            })
            .count();
        let errors = self.runs.iter().filter(|run| matches!(run.verdict, Verdict::Panic { .. })).count();
        let tests = self.runs.len();
        let time = self.wall_time_s;
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        xml.push_str(&format!(
            "<testsuites name=\"shoal-sim\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">\n"
        ));
        xml.push_str(&format!(
            "  <testsuite name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{time:.3}\">\n"
        ));
        xml.push_str("    <properties>\n");
        let mut properties = vec![
            ("base_seed", self.base_seed.to_string()),
            ("seeds_planned", self.seeds_planned.to_string()),
            ("stopped_by_time_limit", self.stopped_by_time_limit.to_string()),
        ];
        if let Some(range) = &self.seed_range {
            properties.push(("seed_range", format!("{}..{}", range.start, range.end)));
        }
        if let Some(slice) = &self.slice {
            properties.push(("slice", slice.id().to_string()));
        }
        if let Some(commit) = &self.git_commit {
            properties.push(("git_commit", commit.clone()));
        }
        if let Some(merge) = &self.merge {
            properties.push(("slices_missing", crate::merge::list_slices(&merge.slices_missing)));
            properties.push(("slices_duplicated", crate::merge::list_slices(&merge.slices_duplicated)));
        }
        for (name, value) in properties {
            xml.push_str(&format!("      <property name=\"{name}\" value=\"{}\"/>\n", xml_escape(&value)));
        }
        xml.push_str("    </properties>\n");
        for run in &self.runs {
            let seed = run.seed;
            let replay = xml_escape(&crate::replay_command(seed, &run.scenario));
            xml.push_str(&format!("    <testcase classname=\"{suite}\" name=\"seed {seed}\""));
            let body = match &run.verdict {
                Verdict::Pass => {
                    nondeterministic(seed).map(|mismatch| ("failure", "Determinism".to_string(), mismatch))
                }
                Verdict::SafetyViolation { checker, message, .. } => {
                    Some(("failure", format!("{checker:?}"), message.as_str()))
                }
                Verdict::LivenessViolation { message } => Some(("failure", "Liveness".to_string(), message.as_str())),
                Verdict::Panic { message } => Some(("error", "Panic".to_string(), message.as_str())),
            };
            match body {
                None => xml.push_str("/>\n"),
                Some((element, kind, message)) => {
                    xml.push_str(">\n");
                    xml.push_str(&format!(
                        "      <{element} type=\"{kind}\" message=\"{}\">{}\nreplay: {replay}</{element}>\n",
                        xml_escape(message),
                        xml_escape(&crate::sweep::verdict_line(&run.verdict)),
                    ));
                    xml.push_str("    </testcase>\n");
                }
            }
        }
        xml.push_str("  </testsuite>\n</testsuites>\n");
        xml
    }
}

pub fn json(outcomes: &[RunOutcome], meta: &ReportMeta) -> String {
    SweepReport::new(outcomes, meta).to_json()
}

pub fn xml_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            // XML 1.0 forbids most control characters even when escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

pub fn junit(outcomes: &[RunOutcome], meta: &ReportMeta) -> String {
    SweepReport::new(outcomes, meta).to_junit()
}

pub fn write(format: ReportFormat, path: &Path, outcomes: &[RunOutcome], meta: &ReportMeta) -> Result<(), ReportError> {
    let report = SweepReport::new(outcomes, meta);
    write_report(format, path, &report)
}

pub fn write_report(format: ReportFormat, path: &Path, report: &SweepReport) -> Result<(), ReportError> {
    let text = match format {
        ReportFormat::Json => report.to_json(),
        ReportFormat::Junit => report.to_junit(),
    };
    std::fs::write(path, text).map_err(|source| ReportError::Write { path: path.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{catalog, fake};

    fn meta() -> ReportMeta {
        ReportMeta {
            scenario: "partition-storm".into(),
            base_seed: 0,
            seed_range: 0..3,
            slice: SliceId::WHOLE,
            slice_range: 0..3,
            seeds_planned: 3,
            stopped_by_time_limit: false,
            nondeterministic: Vec::new(),
            wall: Duration::from_millis(1500),
        }
    }

    fn outcomes() -> Vec<RunOutcome> {
        // Seed 1 fails Agreement, 2 passes; seed 13 panics.
        let mut outcomes: Vec<RunOutcome> = [1, 2].map(|seed| fake::run(&catalog::partition_storm(seed))).into();
        outcomes.push(crate::runner::run_caught(&fake::run, &catalog::partition_storm(13)));
        outcomes
    }

    #[test]
    fn json_report_counts_and_names_replay_commands_for_failures_only() {
        let value: serde_json::Value = serde_json::from_str(&json(&outcomes(), &meta())).unwrap();
        assert_eq!(value["seeds_run"], 3);
        assert_eq!(value["pass"], 1);
        assert_eq!(value["exit_code"], 4);
        assert_eq!(value["failures_by_checker"]["Agreement"], 1);
        assert_eq!(value["runs"][0]["replay"], "shoal-sim replay --seed 1 --scenario partition-storm");
        assert!(value["runs"][1].get("replay").is_none());
        assert_eq!(value["nondeterministic"].as_array().unwrap().len(), 0);
        assert_eq!(value["runs"][0]["verdict"]["SafetyViolation"]["checker"], "Agreement");
    }

    #[test]
    fn junit_report_has_one_case_per_seed_with_failures_and_errors() {
        let xml = junit(&outcomes(), &meta());
        assert!(xml.contains("tests=\"3\" failures=\"1\" errors=\"1\""), "{xml}");
        assert_eq!(xml.matches("<testcase ").count(), 3);
        assert!(xml.contains("<failure type=\"Agreement\""));
        assert!(xml.contains("<error type=\"Panic\""));
        assert!(xml.contains("replay: shoal-sim replay --seed 13 --scenario partition-storm"));
        assert_eq!(xml.matches("<testcase").count(), xml.matches("name=\"seed ").count());
    }

    #[test]
    fn nondeterministic_seeds_fail_in_both_reports_with_exit_5() {
        let mut meta = meta();
        meta.nondeterministic = vec![(2, "trace hash 1 vs 2".into())];
        let xml = junit(&outcomes(), &meta);
        assert!(xml.contains("<failure type=\"Determinism\" message=\"trace hash 1 vs 2\""), "{xml}");
        assert!(xml.contains("failures=\"2\""), "{xml}");
        let value: serde_json::Value = serde_json::from_str(&json(&outcomes(), &meta)).unwrap();
        assert_eq!(value["exit_code"], 5);
        assert_eq!(
            value["nondeterministic"][0]["replay"],
            "shoal-sim replay --seed 2 --scenario partition-storm --check-determinism"
        );
    }

    #[test]
    fn xml_escape_neutralises_markup_and_control_characters() {
        assert_eq!(xml_escape("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot; ");
    }
}
