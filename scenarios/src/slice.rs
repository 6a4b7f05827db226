//! Slices of a sweep: `--shard I/N` picks the I-th of N disjoint parts of a
//! seed range, so N machines (a CI matrix, a Kubernetes Indexed Job) each run
//! one part and `report merge` joins their reports.
//!
//! Owns the `I/N` syntax (including `env:VAR/N`, for engines that hand the
//! index over in an environment variable) and the partition rule. Knows
//! nothing of threads: a slice is decided before any worker starts, so it is
//! the same seeds whatever `--jobs` is.
//!
//! "Slice" here, never "shard": in shoal a shard is a pinned thread of a
//! replica. The flag is `--shard` because that is what CI users type.
//!
//! Rule: contiguous blocks. Slice I of N over C seed indices starting at S is
//! `S + floor(I*C/N) .. S + floor((I+1)*C/N)`; sizes differ by at most one.
//! Blocks rather than striding because a slice is then itself an ordinary seed
//! range: its report, summary and JUnit read like any sweep's, and a slice
//! whose machine died is re-run with plain `--seeds A..B`, no new concept.
//! Striding would balance no better: a seed's cost does not depend on its
//! index, since the base seed and swarm draws hash it.

use std::ops::Range;

/// Slices a sweep may be cut into. Far above any matrix or Job (GitHub caps a
/// matrix at 256 jobs, Kubernetes an Indexed Job at 100 000 completions); a
/// larger count is a typo.
pub const SLICES_MAX: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SliceError {
    #[error(
        "bad --shard `{text}`: write I/N with 0 <= I < N, e.g. --shard 0/4, or take I from the environment with --shard env:JOB_COMPLETION_INDEX/4"
    )]
    Malformed { text: String },
    #[error("--shard {index}/0: the slice count N must be at least 1")]
    CountZero { index: u64 },
    #[error("--shard {index}/{count}: the slice count is above {SLICES_MAX}; use fewer, larger slices")]
    CountTooLarge { index: u64, count: u64 },
    #[error(
        "--shard {index}/{count}: slices are numbered 0..{count}, so the index must be below {count} (matrix and Job indexes start at 0)"
    )]
    IndexOutOfRange { index: u64, count: u64 },
    #[error(
        "--shard env:{var}/N: environment variable {var} is not set; set it to this slice's index (a Kubernetes Indexed Job sets JOB_COMPLETION_INDEX)"
    )]
    EnvUnset { var: String },
    #[error("--shard env:{var}/N: {var}=`{value}` is not a slice index; it must be a whole number from 0")]
    EnvNotAnIndex { var: String, value: String },
    #[error(
        "--shard I/{count} over {seed_count} seeds would leave slices empty: use at most {seed_count} slices or widen --seeds"
    )]
    Empty { count: u64, seed_count: u64 },
}

/// Where the slice index comes from: the command line or an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexSource {
    Literal(u64),
    Env(String),
}

/// `--shard` as written, before the index is read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceSpec {
    pub index: IndexSource,
    pub count: u64,
}

/// One slice, resolved: this is the `index`-th of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SliceId {
    pub index: u64,
    pub count: u64,
}

impl std::fmt::Display for SliceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl SliceId {
    /// The whole range as one slice: what a sweep without `--shard` runs.
    pub const WHOLE: SliceId = SliceId { index: 0, count: 1 };
}

/// Parse `I/N` or `env:VAR/N`. The index is checked against N only once it
/// is known (see `SliceSpec::resolve`).
pub fn parse_spec(text: &str) -> Result<SliceSpec, SliceError> {
    let malformed = || SliceError::Malformed { text: text.to_string() };
    let (index, count) = text.trim().rsplit_once('/').ok_or_else(malformed)?;
    let count: u64 = count.trim().parse().map_err(|_| malformed())?;
    let index = match index.trim().strip_prefix("env:") {
        Some(var) if !var.is_empty() && !var.contains(['=', '\0']) => IndexSource::Env(var.to_string()),
        Some(_) => return Err(malformed()),
        None => IndexSource::Literal(index.trim().parse().map_err(|_| malformed())?),
    };
    Ok(SliceSpec { index, count })
}

impl SliceSpec {
    /// Read the index (from `env` for `env:VAR`) and check it against the count.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<SliceId, SliceError> {
        let index = match &self.index {
            IndexSource::Literal(index) => *index,
            IndexSource::Env(var) => {
                let value = env(var).ok_or_else(|| SliceError::EnvUnset { var: var.clone() })?;
                value
                    .trim()
                    .parse()
                    .map_err(|_| SliceError::EnvNotAnIndex { var: var.clone(), value: value.clone() })?
            }
        };
        let count = self.count;
        if count == 0 {
            return Err(SliceError::CountZero { index });
        }
        if count > SLICES_MAX {
            return Err(SliceError::CountTooLarge { index, count });
        }
        if index >= count {
            return Err(SliceError::IndexOutOfRange { index, count });
        }
        Ok(SliceId { index, count })
    }
}

/// The seed indices of slice `id` of `range` (see the module docs for the
/// rule). Refuses whenever *any* slice would be empty, not only this one, so
/// every job of a matrix fails alike instead of one passing with no seeds.
pub fn slice_range(range: &Range<u64>, id: SliceId) -> Result<Range<u64>, SliceError> {
    assert!(id.count > 0 && id.index < id.count, "SliceSpec::resolve checks the id");
    assert!(range.start < range.end, "parse_seed_range rejects empty ranges");
    let seed_count = range.end - range.start;
    if id.count > seed_count {
        return Err(SliceError::Empty { count: id.count, seed_count });
    }
    // u128: index * seed_count overflows u64 for wide ranges.
    let offset = |index: u64| (u128::from(index) * u128::from(seed_count) / u128::from(id.count)) as u64;
    let slice = range.start + offset(id.index)..range.start + offset(id.index + 1);
    assert!(slice.start < slice.end, "count <= seed_count makes every slice non-empty");
    assert!(slice.end <= range.end);
    Ok(slice)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn specs_parse_literal_and_env_indexes() {
        assert_eq!(parse_spec("3/8").unwrap().resolve(no_env).unwrap(), SliceId { index: 3, count: 8 });
        assert_eq!(parse_spec(" 0 / 1 ").unwrap().resolve(no_env).unwrap(), SliceId::WHOLE);
        let spec = parse_spec("env:JOB_COMPLETION_INDEX/4").unwrap();
        assert_eq!(spec.index, IndexSource::Env("JOB_COMPLETION_INDEX".into()));
        let env = |var: &str| (var == "JOB_COMPLETION_INDEX").then(|| "2".to_string());
        assert_eq!(spec.resolve(env).unwrap(), SliceId { index: 2, count: 4 });
    }

    #[test]
    fn malformed_specs_are_refused_with_the_syntax() {
        for bad in ["", "3", "3/", "/4", "a/4", "3/b", "-1/4", "3/4/5", "env:/4", "1.5/4", "3:4"] {
            let error = parse_spec(bad).unwrap_err();
            assert_eq!(error, SliceError::Malformed { text: bad.into() }, "{bad}");
            assert!(error.to_string().contains("--shard 0/4"), "{error}");
        }
    }

    #[test]
    fn out_of_range_zero_and_huge_counts_are_distinct_errors() {
        let resolve = |text: &str| parse_spec(text).unwrap().resolve(no_env);
        assert_eq!(resolve("4/4"), Err(SliceError::IndexOutOfRange { index: 4, count: 4 }));
        assert_eq!(resolve("0/0"), Err(SliceError::CountZero { index: 0 }));
        assert!(matches!(resolve("0/1000001"), Err(SliceError::CountTooLarge { .. })));
    }

    #[test]
    fn env_index_must_be_set_and_numeric() {
        let spec = parse_spec("env:IDX/4").unwrap();
        assert_eq!(spec.resolve(no_env), Err(SliceError::EnvUnset { var: "IDX".into() }));
        let error = spec.resolve(|_| Some("two".into())).unwrap_err();
        assert_eq!(error, SliceError::EnvNotAnIndex { var: "IDX".into(), value: "two".into() });
        let out_of_range = spec.resolve(|_| Some("4".into()));
        assert_eq!(out_of_range, Err(SliceError::IndexOutOfRange { index: 4, count: 4 }));
    }

    #[test]
    fn more_slices_than_seeds_is_refused_on_every_slice() {
        for index in 0..5 {
            let error = slice_range(&(10..14), SliceId { index, count: 5 }).unwrap_err();
            assert_eq!(error, SliceError::Empty { count: 5, seed_count: 4 });
        }
        assert_eq!(slice_range(&(10..14), SliceId { index: 3, count: 4 }).unwrap(), 13..14);
    }

    #[test]
    fn blocks_are_contiguous_and_balanced() {
        let slices: Vec<Range<u64>> =
            (0..4).map(|index| slice_range(&(0..10), SliceId { index, count: 4 }).unwrap()).collect();
        assert_eq!(slices, [0..2, 2..5, 5..7, 7..10]);
        let wide = u64::MAX - 10..u64::MAX;
        assert_eq!(slice_range(&wide, SliceId { index: 9, count: 10 }).unwrap(), u64::MAX - 1..u64::MAX);
    }

    proptest! {
        #[test]
        fn slices_are_disjoint_ordered_and_cover_the_range(
            start in 0u64..u64::MAX / 2,
            seed_count in 1u64..5_000,
            count in 1u64..64,
        ) {
            let range = start..start + seed_count;
            let id = |index| SliceId { index, count };
            if count > seed_count {
                prop_assert!(slice_range(&range, id(0)).is_err());
                return Ok(());
            }
            let slices: Vec<Range<u64>> = (0..count).map(|index| slice_range(&range, id(index)).unwrap()).collect();
            // Each slice starts where the previous ends: disjoint, no gap, in order.
            prop_assert_eq!(slices[0].start, range.start);
            prop_assert_eq!(slices[slices.len() - 1].end, range.end);
            for pair in slices.windows(2) {
                prop_assert_eq!(pair[0].end, pair[1].start);
            }
            let sizes: Vec<u64> = slices.iter().map(|slice| slice.end - slice.start).collect();
            prop_assert!(sizes.iter().all(|size| *size >= 1));
            prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            prop_assert_eq!(sizes.iter().sum::<u64>(), seed_count);
        }

        #[test]
        fn printed_ids_parse_back(index in 0u64..1000, extra in 1u64..1000) {
            let id = SliceId { index, count: index + extra };
            prop_assert_eq!(parse_spec(&id.to_string()).unwrap().resolve(no_env).unwrap(), id);
        }
    }
}
