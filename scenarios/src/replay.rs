//! Replaying one run: configs saved as JSON, traces written as JSON lines,
//! and the determinism check (run twice, compare).
//!
//! Owns the on-disk formats of a config and of a trace. Must not alter a
//! config it loads: `replay --config F` runs exactly what `shrink` saved.

use std::io::Write;
use std::path::Path;

use shoal_sim::{HistoryEvent, RunConfig, RunOutcome, TraceEvent};

use crate::runner::{Runner, run_caught};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read config {path}: {source}; pass the file `shoal-sim shrink` wrote")]
    ConfigRead { path: String, source: std::io::Error },
    #[error("config {path} is not a RunConfig in JSON: {source}; regenerate it with `shoal-sim shrink`")]
    ConfigParse { path: String, source: serde_json::Error },
    #[error("cannot write {path}: {source}; check the directory exists and is writable")]
    Write { path: String, source: std::io::Error },
}

pub fn load_config(path: &Path) -> Result<RunConfig, ReplayError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ReplayError::ConfigRead { path: path.display().to_string(), source })?;
    serde_json::from_str(&text).map_err(|source| ReplayError::ConfigParse { path: path.display().to_string(), source })
}

/// `config` as the JSON `save_config` writes and `load_config` reads.
pub fn config_json(config: &RunConfig) -> String {
    serde_json::to_string_pretty(config).expect("RunConfig serializes") + "\n"
}

pub fn save_config(path: &Path, config: &RunConfig) -> Result<(), ReplayError> {
    let text = config_json(config);
    std::fs::write(path, text).map_err(|source| ReplayError::Write { path: path.display().to_string(), source })
}

/// One JSON object per line, in trace order.
pub fn write_trace(path: &Path, trace: &[TraceEvent]) -> Result<(), ReplayError> {
    let error = |source| ReplayError::Write { path: path.display().to_string(), source };
    let file = std::fs::File::create(path).map_err(error)?;
    let mut writer = std::io::BufWriter::new(file);
    for event in trace {
        serde_json::to_writer(&mut writer, event).expect("TraceEvent serializes");
        writer.write_all(b"\n").map_err(error)?;
    }
    writer.flush().map_err(error)
}

/// The client-visible history, one JSON object per line in event order
/// (format: scenarios/README.md, "History export").
pub fn write_history(path: &Path, history: &[HistoryEvent]) -> Result<(), ReplayError> {
    let error = |source| ReplayError::Write { path: path.display().to_string(), source };
    let file = std::fs::File::create(path).map_err(error)?;
    let mut writer = std::io::BufWriter::new(file);
    for event in history {
        serde_json::to_writer(&mut writer, event).expect("HistoryEvent serializes");
        writer.write_all(b"\n").map_err(error)?;
    }
    writer.flush().map_err(error)
}

#[derive(Debug)]
pub struct DeterminismCheck {
    pub first: RunOutcome,
    pub second: RunOutcome,
    /// `None` when both runs agree; otherwise what differs, for the operator.
    pub mismatch: Option<String>,
}

/// Run the config twice with traces on and compare hashes, verdicts and, when
/// they differ, the traces event by event.
pub fn check_determinism(runner: Runner<'_>, config: &RunConfig) -> DeterminismCheck {
    let mut traced = config.clone();
    traced.record_trace = true;
    let first = run_caught(runner, &traced);
    let second = run_caught(runner, &traced);
    let mismatch = describe_mismatch(&first, &second);
    DeterminismCheck { first, second, mismatch }
}

fn describe_mismatch(first: &RunOutcome, second: &RunOutcome) -> Option<String> {
    if first.trace_hash == second.trace_hash && first.verdict == second.verdict {
        return None;
    }
    let mut text = format!("trace hash {:016x} vs {:016x}", first.trace_hash, second.trace_hash);
    if first.verdict != second.verdict {
        text.push_str(&format!("; verdict {:?} vs {:?}", first.verdict, second.verdict));
    }
    match first_difference(&first.trace, &second.trace) {
        Some((index, a, b)) => {
            let show = |event: Option<&TraceEvent>| match event {
                Some(event) => serde_json::to_string(event).expect("TraceEvent serializes"),
                None => "<end of trace>".to_string(),
            };
            text.push_str(&format!("; first differing event #{index}:\n  run 1: {}\n  run 2: {}", show(a), show(b)));
        }
        None => text.push_str("; the recorded traces are equal, so the difference is outside the trace"),
    }
    Some(text)
}

/// Index of the first event where two traces differ, with both sides
/// (`None` where one trace has ended).
pub fn first_difference<'a>(
    a: &'a [TraceEvent],
    b: &'a [TraceEvent],
) -> Option<(usize, Option<&'a TraceEvent>, Option<&'a TraceEvent>)> {
    let index = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    (index < a.len().max(b.len())).then(|| (index, a.get(index), b.get(index)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{catalog, fake};

    fn event(time_ns: u64, kind: &str) -> TraceEvent {
        TraceEvent { time_ns, replica: Some(0), shard: None, kind: kind.into(), detail: String::new() }
    }

    #[test]
    fn first_difference_finds_changed_and_truncated_events() {
        let a = [event(1, "send"), event(2, "deliver"), event(3, "commit")];
        let mut b = a.to_vec();
        assert_eq!(first_difference(&a, &b), None);
        b[1].kind = "drop".into();
        assert_eq!(first_difference(&a, &b).unwrap().0, 1);
        let shorter = &a[..2];
        assert_eq!(first_difference(&a, shorter), Some((2, Some(&a[2]), None)));
    }

    #[test]
    fn determinism_check_passes_the_fake_and_names_the_noisy_event() {
        let config = catalog::partition_storm(4);
        assert!(check_determinism(&fake::run, &config).mismatch.is_none());
        let check = check_determinism(&fake::run_nondeterministic, &config);
        let mismatch = check.mismatch.expect("noise must be caught");
        assert!(mismatch.contains("first differing event #"), "{mismatch}");
        assert!(mismatch.contains("noise"), "{mismatch}");
    }

    #[test]
    fn config_round_trips_through_a_file_and_trace_is_json_lines() {
        let dir = std::env::temp_dir().join(format!("shoal-replay-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = catalog::swarm(77);
        save_config(&dir.join("c.json"), &config).unwrap();
        assert_eq!(load_config(&dir.join("c.json")).unwrap(), config);
        let mut traced = config.clone();
        traced.record_trace = true;
        let outcome = fake::run(&traced);
        write_trace(&dir.join("t.jsonl"), &outcome.trace).unwrap();
        let text = std::fs::read_to_string(dir.join("t.jsonl")).unwrap();
        let parsed: Vec<TraceEvent> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(parsed, outcome.trace);
        assert!(load_config(&dir.join("t.jsonl")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
