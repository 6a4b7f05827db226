//! `report merge`: one report from the JSON reports of a sweep's slices
//! (`sweep --shard I/N --report json`), as if one machine had run them all.
//!
//! Owns the checks that make a merge safe (one commit, version, scenario,
//! base seed, seed range and slice count; each slice covering exactly the
//! seeds the slicing rule gives it), the bookkeeping of missing and
//! duplicated slices, and the merged totals. Must not re-decide verdicts: a
//! merged run is the slice's run, unchanged. Only a slice run twice whose
//! runs disagree adds something: a non-determinism finding, as
//! `--check-determinism` would.

use std::collections::BTreeMap;
use std::path::Path;

use shoal_sim::Verdict;

use crate::report::{self, NondeterministicRecord, SliceRecord, SweepReport};
use crate::slice::{self, SliceId};
use crate::sweep::{FAILURES_LISTED_MAX, verdict_line};

/// Exit code of a merge that lacks slices: the sweep is incomplete, which is
/// a configuration problem (a job was lost or a file not collected), unless a
/// worse verdict was found in the slices that came.
pub const EXIT_SLICES_MISSING: i32 = crate::cli::EXIT_USAGE;

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("cannot read report {path}: {source}; check the path (each slice writes its own --report-file)")]
    Read { path: String, source: std::io::Error },
    #[error(
        "{path} is not a shoal-sim JSON report ({reason}); merge the files written by `sweep --report json`, not JUnit"
    )]
    Parse { path: String, reason: String },
    #[error("{path} was written by `{tool}`, not shoal-sim; merge only shoal-sim sweep reports")]
    NotShoalSim { path: String, tool: String },
    #[error(
        "report {path} has no `{field}`: it was written by an older shoal-sim; re-run that slice with this one (sweep --shard I/N --report json)"
    )]
    NoProvenance { path: String, field: &'static str },
    #[error(
        "cannot merge: {path} has {field} {value} but {first_path} has {first}; merge only the slices of one sweep (same commit, version, scenario, base seed, seed range and slice count)"
    )]
    Mismatch { field: &'static str, first_path: String, first: String, path: String, value: String },
    #[error(
        "report {path} says it is slice {slice} but covers seed indices {found:?}, where that slice is {expected:?}; it was edited or written under another slicing rule: re-run the slice"
    )]
    SliceSeedsWrong { path: String, slice: SliceId, found: std::ops::Range<u64>, expected: std::ops::Range<u64> },
    #[error("report {path} is slice {slice}, which cannot be: re-run the slice with a valid --shard")]
    SliceInvalid { path: String, slice: SliceId },
}

/// What went into a merged report, and what did not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MergeRecord {
    pub slice_count: u64,
    /// Every slice index of 0..slice_count came, each counted once.
    pub complete: bool,
    pub slices_present: Vec<u64>,
    pub slices_missing: Vec<u64>,
    /// Slices given more than once; the copy that ran the most seeds is
    /// counted (the first given on a tie), the others only compared with it.
    pub slices_duplicated: Vec<u64>,
    /// Seeds planned in the slices that came but never started (`--time-limit`).
    pub seeds_not_run: u64,
    pub inputs: Vec<MergeInputRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MergeInputRecord {
    pub path: String,
    pub slice: SliceId,
    /// False for a duplicate of a slice given earlier.
    pub counted: bool,
}

/// One slice report as read from disk.
#[derive(Debug, Clone)]
pub struct MergeInput {
    pub path: String,
    pub report: SweepReport,
}

pub fn load(path: &Path) -> Result<MergeInput, MergeError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| MergeError::Read { path: display.clone(), source })?;
    let report: SweepReport = serde_json::from_str(&text)
        .map_err(|error| MergeError::Parse { path: display.clone(), reason: error.to_string() })?;
    Ok(MergeInput { path: display, report })
}

/// "none" or "0, 2, 5".
pub fn list_slices(indexes: &[u64]) -> String {
    if indexes.is_empty() {
        return "none".to_string();
    }
    indexes.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// The provenance a slice report must carry to be merged.
struct Provenance<'a> {
    version: &'a str,
    commit: &'a str,
    seed_range: std::ops::Range<u64>,
    slice: SliceRecord,
}

fn provenance(input: &MergeInput) -> Result<Provenance<'_>, MergeError> {
    let report = &input.report;
    if report.tool != report::TOOL {
        return Err(MergeError::NotShoalSim { path: input.path.clone(), tool: report.tool.clone() });
    }
    let missing = |field| MergeError::NoProvenance { path: input.path.clone(), field };
    let provenance = Provenance {
        version: report.shoal_sim_version.as_deref().ok_or_else(|| missing("shoal_sim_version"))?,
        commit: report.git_commit.as_deref().ok_or_else(|| missing("git_commit"))?,
        seed_range: report.seed_range.clone().ok_or_else(|| missing("seed_range"))?,
        slice: report.slice.clone().ok_or_else(|| missing("slice"))?,
    };
    let id = provenance.slice.id();
    let seed_range = &provenance.seed_range;
    if id.count == 0 || id.index >= id.count || seed_range.start >= seed_range.end {
        return Err(MergeError::SliceInvalid { path: input.path.clone(), slice: id });
    }
    let expected = slice::slice_range(seed_range, id)
        .map_err(|_| MergeError::SliceInvalid { path: input.path.clone(), slice: id })?;
    if provenance.slice.seeds != expected {
        return Err(MergeError::SliceSeedsWrong {
            path: input.path.clone(),
            slice: id,
            found: provenance.slice.seeds.clone(),
            expected,
        });
    }
    Ok(provenance)
}

/// Refuse unless every input is a slice of the same sweep as the first.
fn check_same_sweep(inputs: &[MergeInput]) -> Result<(), MergeError> {
    let first = &inputs[0];
    let first_provenance = provenance(first)?;
    for input in inputs {
        let provenance = provenance(input)?;
        let fields: [(&'static str, String, String); 6] = [
            ("git_commit", first_provenance.commit.to_string(), provenance.commit.to_string()),
            ("shoal_sim_version", first_provenance.version.to_string(), provenance.version.to_string()),
            ("scenario", first.report.scenario.clone(), input.report.scenario.clone()),
            ("base_seed", first.report.base_seed.to_string(), input.report.base_seed.to_string()),
            ("seed_range", format!("{:?}", first_provenance.seed_range), format!("{:?}", provenance.seed_range)),
            ("slice count", first_provenance.slice.count.to_string(), provenance.slice.count.to_string()),
        ];
        for (field, expected, found) in fields {
            if expected != found {
                return Err(MergeError::Mismatch {
                    field,
                    first_path: first.path.clone(),
                    first: expected,
                    path: input.path.clone(),
                    value: found,
                });
            }
        }
    }
    Ok(())
}

/// Runs of the same seed in two reports of one slice that disagree: the
/// simulator gave two answers for one (commit, seed), which is what
/// `--check-determinism` looks for.
fn disagreements(counted: &MergeInput, duplicate: &MergeInput) -> Vec<NondeterministicRecord> {
    let by_seed: BTreeMap<u64, &report::RunRecord> = counted.report.runs.iter().map(|run| (run.seed, run)).collect();
    duplicate
        .report
        .runs
        .iter()
        .filter_map(|again| {
            let first = by_seed.get(&again.seed)?;
            (first.trace_hash != again.trace_hash || first.verdict != again.verdict).then(|| NondeterministicRecord {
                seed: again.seed,
                mismatch: format!(
                    "ran in {} and {}: trace hash {} vs {}, verdict {} vs {}",
                    counted.path,
                    duplicate.path,
                    first.trace_hash,
                    again.trace_hash,
                    verdict_line(&first.verdict),
                    verdict_line(&again.verdict)
                ),
                replay: format!("{} --check-determinism", crate::replay_command(again.seed, &again.scenario)),
            })
        })
        .collect()
}

/// Join the slices into one report. Refuses (an error, exit 1) inputs that
/// are not slices of one sweep; accepts missing and duplicated slices and
/// says so in the report's `merge` record and exit code.
pub fn merge(inputs: &[MergeInput]) -> Result<SweepReport, MergeError> {
    assert!(!inputs.is_empty(), "the CLI requires at least one report");
    check_same_sweep(inputs)?;
    let first = &inputs[0].report;
    let seed_range = first.seed_range.clone().expect("checked by check_same_sweep");
    let slice_count = first.slice.as_ref().expect("checked by check_same_sweep").count;

    let mut by_slice: BTreeMap<u64, Vec<&MergeInput>> = BTreeMap::new();
    for input in inputs {
        by_slice.entry(input.report.slice.as_ref().expect("checked").index).or_default().push(input);
    }
    // Of the copies of one slice, count the one that ran the most seeds (a retry
    // may have got further before --time-limit), the first given on a tie.
    for copies in by_slice.values_mut() {
        let most = copies.iter().map(|input| input.report.seeds_run).max().expect("each slice has a copy");
        let kept = copies.iter().position(|input| input.report.seeds_run == most).expect("max is in the list");
        copies.swap(0, kept);
        copies[1..].sort_by_key(|input| inputs.iter().position(|given| std::ptr::eq(given, *input)));
    }
    let counted: Vec<&MergeInput> = by_slice.values().map(|copies| copies[0]).collect();
    let slices_present: Vec<u64> = by_slice.keys().copied().collect();
    let slices_missing: Vec<u64> = (0..slice_count).filter(|index| !by_slice.contains_key(index)).collect();
    let slices_duplicated: Vec<u64> =
        by_slice.iter().filter(|(_, copies)| copies.len() > 1).map(|(index, _)| *index).collect();
    assert_eq!(slices_present.len() + slices_missing.len(), slice_count as usize);

    // Slices are contiguous blocks in index order, so runs concatenated by
    // slice index are in seed-index order, as one sweep lists them.
    let runs: Vec<report::RunRecord> = counted.iter().flat_map(|input| input.report.runs.iter().cloned()).collect();
    let mut nondeterministic: Vec<NondeterministicRecord> =
        counted.iter().flat_map(|input| input.report.nondeterministic.iter().cloned()).collect();
    for copies in by_slice.values() {
        for duplicate in &copies[1..] {
            nondeterministic.extend(disagreements(copies[0], duplicate));
        }
    }
    let seeds_planned: u64 = counted.iter().map(|input| input.report.seeds_planned).sum();
    let seeds_not_run = seeds_planned - runs.len() as u64;
    let mut marks: BTreeMap<String, u64> = BTreeMap::new();
    for input in &counted {
        for (name, count) in &input.report.marks {
            *marks.entry(name.clone()).or_insert(0) += count;
        }
    }
    let complete = slices_missing.is_empty();
    let mut exit_code = report::worst_exit_code(&runs, &nondeterministic);
    if !complete {
        exit_code = exit_code.max(EXIT_SLICES_MISSING);
    }
    let inputs_record = inputs
        .iter()
        .map(|input| {
            let id = input.report.slice.as_ref().expect("checked").id();
            let counted = counted.iter().any(|kept| std::ptr::eq(*kept, input));
            MergeInputRecord { path: input.path.clone(), slice: id, counted }
        })
        .collect();
    Ok(SweepReport {
        tool: report::TOOL.to_string(),
        shoal_sim_version: first.shoal_sim_version.clone(),
        git_commit: first.git_commit.clone(),
        scenario: first.scenario.clone(),
        base_seed: first.base_seed,
        seed_range: Some(seed_range.clone()),
        slice: complete.then_some(SliceRecord { index: 0, count: 1, seeds: seed_range }),
        seeds_planned,
        seeds_run: runs.len(),
        stopped_by_time_limit: counted.iter().any(|input| input.report.stopped_by_time_limit),
        wall_time_s: counted.iter().map(|input| input.report.wall_time_s).sum(),
        exit_code,
        pass: runs.iter().filter(|run| run.verdict == Verdict::Pass).count(),
        fail: runs.iter().filter(|run| run.verdict != Verdict::Pass).count(),
        failures_by_checker: report::failures_by_checker(&runs),
        marks,
        nondeterministic,
        merge: Some(MergeRecord {
            slice_count,
            complete,
            slices_present,
            slices_missing,
            slices_duplicated,
            seeds_not_run,
            inputs: inputs_record,
        }),
        runs,
    })
}

/// The command that runs one slice of the merged sweep again.
fn slice_command(report: &SweepReport, index: u64, slice_count: u64) -> String {
    let range = report.seed_range.clone().expect("a merged report has its seed range");
    // A non-zero base seed comes from --seed-from-git, the only way to set one.
    let git = if report.base_seed != 0 { " --seed-from-git" } else { "" };
    format!(
        "shoal-sim sweep --seeds {}..{} --scenario {} --shard {index}/{slice_count}{git} --report json --report-file slice-{index}.json",
        range.start, range.end, report.scenario
    )
}

/// The merge summary: totals, slices missing or duplicated with the command
/// to run a missing one, and every failing seed's replay command (up to
/// `FAILURES_LISTED_MAX`; the JSON lists them all).
pub fn render_summary(report: &SweepReport) -> String {
    let merge = report.merge.as_ref().expect("render_summary takes a merged report");
    let mut text = String::new();
    let mut line = |label: &str, value: String| text.push_str(&format!("  {label:<22}{value:>20}\n"));
    line("scenario", report.scenario.clone());
    line("commit", report.git_commit.clone().unwrap_or_default());
    if let Some(range) = &report.seed_range {
        line("seed indices", format!("{}..{}", range.start, range.end));
    }
    if report.base_seed != 0 {
        line("base seed", report.base_seed.to_string());
    }
    line("slices", format!("{} / {}", merge.slices_present.len(), merge.slice_count));
    line("missing slices", list_slices(&merge.slices_missing));
    line("duplicated slices", list_slices(&merge.slices_duplicated));
    line("seeds run", format!("{} / {}", report.seeds_run, report.seeds_planned));
    line("pass", report.pass.to_string());
    line("fail", report.fail.to_string());
    for (checker, count) in &report.failures_by_checker {
        line(&format!("  {checker}"), count.to_string());
    }
    let panics = report.runs.iter().filter(|run| matches!(run.verdict, Verdict::Panic { .. })).count();
    line("panics", panics.to_string());
    line("non-deterministic", report.nondeterministic.len().to_string());
    for (name, count) in &report.marks {
        line(&format!("mark {name}"), count.to_string());
    }
    line("wall time (sum)", format!("{:.2} s", report.wall_time_s));
    line("exit code", report.exit_code.to_string());
    let mut text = format!("shoal-sim report merge\n{text}");
    if report.git_commit.as_deref() == Some(report::COMMIT_UNKNOWN) {
        text.push_str(
            "  warning: the slices name no commit (no git, no SHOAL_SIM_GIT_COMMIT): nothing proves they ran the same code\n",
        );
    }
    if merge.seeds_not_run > 0 {
        text.push_str(&format!("  {} seeds not started (--time-limit in some slices)\n", merge.seeds_not_run));
    }
    if !merge.slices_missing.is_empty() {
        text.push_str("missing slices (run each, then merge again):\n");
        for index in merge.slices_missing.iter().take(FAILURES_LISTED_MAX) {
            text.push_str(&format!("  {}\n", slice_command(report, *index, merge.slice_count)));
        }
    }
    for index in &merge.slices_duplicated {
        let copies = || merge.inputs.iter().filter(|input| input.slice.index == *index);
        let counted = copies().find(|input| input.counted).map_or("", |input| input.path.as_str());
        let compared: Vec<&str> = copies().filter(|input| !input.counted).map(|input| input.path.as_str()).collect();
        text.push_str(&format!("duplicated slice {index}: counted {counted}, compared {}\n", compared.join(", ")));
    }
    if !report.nondeterministic.is_empty() {
        text.push_str("non-deterministic seeds:\n");
        for record in report.nondeterministic.iter().take(FAILURES_LISTED_MAX) {
            text.push_str(&format!("  {}    # {}\n", record.replay, record.mismatch));
        }
    }
    let failures: Vec<&report::RunRecord> = report.runs.iter().filter(|run| run.verdict != Verdict::Pass).collect();
    if !failures.is_empty() {
        text.push_str("failing seeds (replay each with the command shown):\n");
        for run in failures.iter().take(FAILURES_LISTED_MAX) {
            let replay = crate::replay_command(run.seed, &run.scenario);
            text.push_str(&format!("  {replay}    # {}\n", verdict_line(&run.verdict)));
        }
        if failures.len() > FAILURES_LISTED_MAX {
            let more = failures.len() - FAILURES_LISTED_MAX;
            text.push_str(&format!("  ... and {more} more: every one is in the merged JSON (--out)\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::ReportMeta;
    use crate::{catalog, fake};

    /// Slice `index` of `count` over `range` of partition-storm, run by the fake
    /// simulator (Agreement fails at seed % 4 == 1, a panic at 13).
    fn slice_report(range: std::ops::Range<u64>, index: u64, count: u64) -> MergeInput {
        let id = SliceId { index, count };
        let seeds = slice::slice_range(&range, id).unwrap();
        let outcomes: Vec<_> =
            seeds.clone().map(|seed| crate::runner::run_caught(&fake::run, &catalog::partition_storm(seed))).collect();
        let meta = ReportMeta {
            scenario: "partition-storm".into(),
            base_seed: 0,
            seed_range: range,
            slice: id,
            slice_range: seeds.clone(),
            seeds_planned: seeds.end - seeds.start,
            stopped_by_time_limit: false,
            nondeterministic: Vec::new(),
            wall: Duration::from_millis(100),
        };
        MergeInput { path: format!("slice-{index}.json"), report: SweepReport::new(&outcomes, &meta) }
    }

    fn slices(range: std::ops::Range<u64>, count: u64) -> Vec<MergeInput> {
        (0..count).map(|index| slice_report(range.clone(), index, count)).collect()
    }

    fn refusal(inputs: &[MergeInput]) -> MergeError {
        merge(inputs).expect_err("the merge must be refused")
    }

    #[test]
    fn merging_every_slice_equals_the_whole_sweep() {
        let whole = slice_report(0..30, 0, 1).report;
        let merged = merge(&slices(0..30, 4)).unwrap();
        assert_eq!(merged.runs, whole.runs);
        assert_eq!((merged.pass, merged.fail, merged.seeds_run), (whole.pass, whole.fail, whole.seeds_run));
        assert_eq!(merged.failures_by_checker, whole.failures_by_checker);
        assert_eq!(merged.exit_code, 4, "seed 13 panics");
        assert_eq!(merged.slice, whole.slice, "a complete merge stands for the whole range");
        let record = merged.merge.as_ref().unwrap();
        assert!(record.complete && record.slices_missing.is_empty() && record.slices_duplicated.is_empty());
        // Merging in any file order gives the same report.
        let mut shuffled = slices(0..30, 4);
        shuffled.reverse();
        assert_eq!(merge(&shuffled).unwrap().runs, whole.runs);
    }

    #[test]
    fn a_missing_slice_is_named_with_its_command_and_fails_the_merge() {
        let mut inputs = slices(0..12, 3);
        inputs.remove(1);
        let merged = merge(&inputs).unwrap();
        let record = merged.merge.as_ref().unwrap();
        assert_eq!(record.slices_missing, [1]);
        assert!(!record.complete);
        assert_eq!(merged.slice, None, "an incomplete merge is no slice of anything");
        assert_eq!(merged.seeds_run, 8);
        // Seeds 1 and 9 fail Agreement (exit 2): worse than the missing slice's 1.
        assert_eq!(merged.exit_code, 2);
        let summary = render_summary(&merged);
        assert!(summary.contains("shoal-sim sweep --seeds 0..12 --scenario partition-storm --shard 1/3"), "{summary}");
    }

    #[test]
    fn a_missing_slice_alone_exits_1() {
        // steady has no drops, so the fake passes every seed below 13.
        let id = |index| SliceId { index, count: 2 };
        let inputs: Vec<MergeInput> = [0]
            .into_iter()
            .map(|index| {
                let seeds = slice::slice_range(&(0..10), id(index)).unwrap();
                let outcomes: Vec<_> = seeds.clone().map(|seed| fake::run(&catalog::steady(seed))).collect();
                let meta = ReportMeta {
                    scenario: "steady".into(),
                    base_seed: 0,
                    seed_range: 0..10,
                    slice: id(index),
                    slice_range: seeds,
                    seeds_planned: 5,
                    stopped_by_time_limit: false,
                    nondeterministic: Vec::new(),
                    wall: Duration::ZERO,
                };
                MergeInput { path: "a.json".into(), report: SweepReport::new(&outcomes, &meta) }
            })
            .collect();
        let merged = merge(&inputs).unwrap();
        assert_eq!(merged.fail, 0);
        assert_eq!(merged.exit_code, EXIT_SLICES_MISSING);
    }

    #[test]
    fn a_duplicated_slice_counts_once_and_is_named() {
        let mut inputs = slices(0..12, 3);
        let again = MergeInput { path: "retry-2.json".into(), ..inputs[2].clone() };
        inputs.push(again);
        let merged = merge(&inputs).unwrap();
        let record = merged.merge.as_ref().unwrap();
        assert_eq!(record.slices_duplicated, [2]);
        assert_eq!(merged.seeds_run, 12);
        assert!(merged.nondeterministic.is_empty(), "identical runs agree");
        assert!(!record.inputs[3].counted);
        assert!(render_summary(&merged).contains("duplicated slice 2: counted slice-2.json, compared retry-2.json"));
    }

    #[test]
    fn of_duplicated_slices_the_one_that_ran_furthest_counts() {
        let mut inputs = slices(0..12, 3);
        let mut cut = MergeInput { path: "cut-1.json".into(), ..inputs[1].clone() };
        cut.report.runs.truncate(1);
        cut.report.seeds_run = 1;
        cut.report.stopped_by_time_limit = true;
        inputs.insert(0, cut);
        let merged = merge(&inputs).unwrap();
        assert_eq!(merged.seeds_run, 12);
        assert!(!merged.stopped_by_time_limit);
        assert_eq!(
            merged.merge.as_ref().unwrap().inputs[0],
            MergeInputRecord { path: "cut-1.json".into(), slice: SliceId { index: 1, count: 3 }, counted: false }
        );
    }

    #[test]
    fn a_duplicated_slice_that_disagrees_is_non_determinism() {
        let mut inputs = slices(0..12, 3);
        let mut again = MergeInput { path: "retry-0.json".into(), ..inputs[0].clone() };
        again.report.runs[2].trace_hash = "0000000000000bad".into();
        inputs.push(again);
        let merged = merge(&inputs).unwrap();
        assert_eq!(merged.nondeterministic.len(), 1);
        assert_eq!(merged.nondeterministic[0].seed, 2);
        assert_eq!(merged.exit_code, crate::sweep::EXIT_NONDETERMINISM);
    }

    #[test]
    fn marks_are_summed_and_a_report_without_marks_counts_as_none() {
        let mut inputs = slices(0..12, 3);
        inputs[0].report.marks = BTreeMap::from([("view_change_during_drain".into(), 2), ("torn_header".into(), 1)]);
        inputs[2].report.marks = BTreeMap::from([("torn_header".into(), 5)]);
        // The fake's own marks would add to the sums: slice 1 stands for a
        // report that counted none.
        inputs[1].report.marks.clear();
        let merged = merge(&inputs).unwrap();
        assert_eq!(merged.marks, BTreeMap::from([("torn_header".into(), 6), ("view_change_during_drain".into(), 2)]));
        // A report written before marks existed has no `marks` key at all.
        let mut without = serde_json::to_value(&inputs[1].report).unwrap();
        assert!(without.as_object_mut().unwrap().remove("marks").is_none(), "empty marks are not written");
        let parsed: SweepReport = serde_json::from_value(without).unwrap();
        assert!(parsed.marks.is_empty());
    }

    #[test]
    fn slices_of_different_commits_scenarios_ranges_or_counts_are_refused() {
        let mut other_commit = slices(0..12, 3);
        other_commit[1].report.git_commit = Some("0123abcd".into());
        assert!(matches!(refusal(&other_commit), MergeError::Mismatch { field: "git_commit", .. }));

        let mut other_scenario = slices(0..12, 3);
        other_scenario[2].report.scenario = "swarm".into();
        let error = refusal(&other_scenario);
        assert!(matches!(error, MergeError::Mismatch { field: "scenario", .. }), "{error}");
        assert!(error.to_string().contains("slice-2.json has scenario swarm"), "{error}");

        let mixed_ranges = vec![slice_report(0..12, 0, 3), slice_report(0..15, 1, 3)];
        assert!(matches!(refusal(&mixed_ranges), MergeError::Mismatch { field: "seed_range", .. }));

        let mixed_counts = vec![slice_report(0..12, 0, 3), slice_report(0..12, 1, 4)];
        assert!(matches!(refusal(&mixed_counts), MergeError::Mismatch { field: "slice count", .. }));

        let mut other_base = slices(0..12, 3);
        other_base[0].report.base_seed = 77;
        assert!(matches!(refusal(&other_base), MergeError::Mismatch { field: "base_seed", .. }));

        let mut other_version = slices(0..12, 3);
        other_version[0].report.shoal_sim_version = Some("0.0.1".into());
        assert!(matches!(refusal(&other_version), MergeError::Mismatch { field: "shoal_sim_version", .. }));
    }

    #[test]
    fn reports_without_provenance_or_with_wrong_seeds_are_refused() {
        let mut old = slices(0..12, 3);
        old[1].report.slice = None;
        assert!(matches!(refusal(&old), MergeError::NoProvenance { field: "slice", .. }));

        let mut edited = slices(0..12, 3);
        edited[1].report.slice.as_mut().unwrap().seeds = 4..9;
        assert!(matches!(refusal(&edited), MergeError::SliceSeedsWrong { .. }));

        let mut impossible = slices(0..12, 3);
        impossible[0].report.slice.as_mut().unwrap().index = 3;
        assert!(matches!(refusal(&impossible), MergeError::SliceInvalid { .. }));

        let mut foreign = slices(0..12, 3);
        foreign[0].report.tool = "other".into();
        assert!(matches!(refusal(&foreign), MergeError::NotShoalSim { .. }));
    }
}
