//! Machine-readable reports of runs and sweeps: JSON (one document) and JUnit
//! XML (one test case per seed, for CI test tabs).
//!
//! Owns the report formats and XML escaping. Must not decide verdicts: it
//! prints what the outcomes say, and each failure carries its replay command.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use shoal_sim::{RunOutcome, Verdict};

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
    pub seeds_planned: u64,
    pub stopped_by_time_limit: bool,
    /// Seeds that ran twice and differed, with what differed.
    pub nondeterministic: Vec<(u64, String)>,
    pub wall: Duration,
}

#[derive(Debug, serde::Serialize)]
struct JsonReport<'a> {
    tool: &'static str,
    scenario: &'a str,
    base_seed: u64,
    seeds_planned: u64,
    seeds_run: usize,
    stopped_by_time_limit: bool,
    wall_time_s: f64,
    exit_code: i32,
    pass: usize,
    fail: usize,
    failures_by_checker: BTreeMap<String, u64>,
    nondeterministic: Vec<JsonNondeterministic<'a>>,
    runs: Vec<JsonRun<'a>>,
}

#[derive(Debug, serde::Serialize)]
struct JsonNondeterministic<'a> {
    seed: u64,
    mismatch: &'a str,
    replay: String,
}

#[derive(Debug, serde::Serialize)]
struct JsonRun<'a> {
    seed: u64,
    scenario: &'a str,
    verdict: &'a Verdict,
    exit_code: i32,
    ops_committed: u64,
    view_changes: u64,
    faults_injected_total: u64,
    faults_injected: &'a BTreeMap<String, u64>,
    trace_hash: String,
    events_processed: u64,
    virtual_time_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    replay: Option<String>,
}

fn exit_code(outcomes: &[RunOutcome], meta: &ReportMeta) -> i32 {
    let verdicts = outcomes.iter().map(|outcome| outcome.verdict.exit_code()).max().unwrap_or(0);
    if meta.nondeterministic.is_empty() { verdicts } else { verdicts.max(crate::sweep::EXIT_NONDETERMINISM) }
}

pub fn json(outcomes: &[RunOutcome], meta: &ReportMeta) -> String {
    let mut failures_by_checker = BTreeMap::new();
    for checker in outcomes.iter().filter_map(|outcome| outcome.verdict.checker()) {
        *failures_by_checker.entry(format!("{checker:?}")).or_insert(0) += 1;
    }
    let report = JsonReport {
        tool: "shoal-sim",
        scenario: &meta.scenario,
        base_seed: meta.base_seed,
        seeds_planned: meta.seeds_planned,
        seeds_run: outcomes.len(),
        stopped_by_time_limit: meta.stopped_by_time_limit,
        wall_time_s: meta.wall.as_secs_f64(),
        exit_code: exit_code(outcomes, meta),
        pass: outcomes.iter().filter(|outcome| outcome.verdict == Verdict::Pass).count(),
        fail: outcomes.iter().filter(|outcome| outcome.verdict != Verdict::Pass).count(),
        failures_by_checker,
        nondeterministic: meta
            .nondeterministic
            .iter()
            .map(|(seed, mismatch)| JsonNondeterministic {
                seed: *seed,
                mismatch,
                replay: format!("{} --check-determinism", crate::replay_command(*seed, &meta.scenario)),
            })
            .collect(),
        runs: outcomes
            .iter()
            .map(|outcome| JsonRun {
                seed: outcome.config.seed,
                scenario: &outcome.config.scenario,
                verdict: &outcome.verdict,
                exit_code: outcome.verdict.exit_code(),
                ops_committed: outcome.ops_committed,
                view_changes: outcome.view_changes,
                faults_injected_total: outcome.faults_injected_total,
                faults_injected: &outcome.faults_injected,
                trace_hash: format!("{:016x}", outcome.trace_hash),
                events_processed: outcome.events_processed,
                virtual_time_ns: outcome.virtual_time_ns,
                replay: (outcome.verdict != Verdict::Pass)
                    .then(|| crate::replay_command(outcome.config.seed, &outcome.config.scenario)),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&report).expect("report types serialize") + "\n"
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
    let suite = xml_escape(&format!("shoal-sim.{}", meta.scenario));
    let nondeterministic = |seed: u64| meta.nondeterministic.iter().find(|(s, _)| *s == seed).map(|(_, m)| m.as_str());
    let failures = outcomes
        .iter()
        .filter(|o| {
            matches!(o.verdict.exit_code(), 2 | 3)
                || (o.verdict == Verdict::Pass && nondeterministic(o.config.seed).is_some())
        })
        .count();
    let errors = outcomes.iter().filter(|o| matches!(o.verdict, Verdict::Panic { .. })).count();
    let time = meta.wall.as_secs_f64();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuites name=\"shoal-sim\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">\n",
        outcomes.len()
    ));
    xml.push_str(&format!(
        "  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{time:.3}\">\n",
        outcomes.len()
    ));
    xml.push_str("    <properties>\n");
    for (name, value) in [
        ("base_seed", meta.base_seed.to_string()),
        ("seeds_planned", meta.seeds_planned.to_string()),
        ("stopped_by_time_limit", meta.stopped_by_time_limit.to_string()),
    ] {
        xml.push_str(&format!("      <property name=\"{name}\" value=\"{value}\"/>\n"));
    }
    xml.push_str("    </properties>\n");
    for outcome in outcomes {
        let seed = outcome.config.seed;
        let replay = xml_escape(&crate::replay_command(seed, &outcome.config.scenario));
        xml.push_str(&format!("    <testcase classname=\"{suite}\" name=\"seed {seed}\""));
        let body = match &outcome.verdict {
            Verdict::Pass => nondeterministic(seed).map(|mismatch| ("failure", "Determinism".to_string(), mismatch)),
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
                    xml_escape(&crate::sweep::verdict_line(&outcome.verdict)),
                ));
                xml.push_str("    </testcase>\n");
            }
        }
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

pub fn write(format: ReportFormat, path: &Path, outcomes: &[RunOutcome], meta: &ReportMeta) -> Result<(), ReportError> {
    let text = match format {
        ReportFormat::Json => json(outcomes, meta),
        ReportFormat::Junit => junit(outcomes, meta),
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
