//! shoal-scenarios: the named scenarios and the `shoal-sim` command line.
//!
//! Owns the scenario catalog, swarm parameters and the user-facing CLI (run,
//! sweep, replay, shrink, reports, bench). Runs on any machine: no system
//! libraries. Never looks inside a run: everything goes through
//! `shoal_sim::run(&RunConfig) -> RunOutcome`, passed in as a `Runner` so
//! tests can put a fake simulator in its place.

pub mod bench;
pub mod catalog;
pub mod cli;
pub mod fake;
pub mod merge;
pub mod replay;
pub mod report;
pub mod runner;
pub mod shrink;
pub mod slice;
pub mod sweep;
pub mod timeline;

/// 64-bit FNV-1a: stable across machines, platforms and Rust versions (unlike
/// `std`'s `DefaultHasher`), so a seed derived from it replays anywhere.
pub fn stable_hash64(bytes: &[u8]) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME))
}

/// Names the commit being swept when `git` is absent (a container image has
/// no checkout): the Dockerfile bakes it in from a build argument.
pub const GIT_COMMIT_ENV: &str = "SHOAL_SIM_GIT_COMMIT";

/// The commit under test: `git rev-parse HEAD` where git and a checkout are
/// at hand, else `$SHOAL_SIM_GIT_COMMIT`, else `None`. Sweep reports record
/// it so `report merge` joins only slices of one commit, and
/// `--seed-from-git` hashes it.
pub fn source_commit() -> Option<String> {
    let from_git = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|hex| !hex.is_empty());
    from_git
        .or_else(|| std::env::var(GIT_COMMIT_ENV).ok().map(|hex| hex.trim().to_string()).filter(|hex| !hex.is_empty()))
}

/// The one command that reproduces a seed of a named scenario.
pub fn replay_command(seed: u64, scenario: &str) -> String {
    format!("shoal-sim replay --seed {seed} --scenario {scenario}")
}

/// Virtual or wall nanoseconds as seconds with millisecond precision.
pub fn format_seconds(ns: u64) -> String {
    format!("{:.3} s", ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stable_hash64_matches_published_fnv1a_vectors() {
        assert_eq!(super::stable_hash64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::stable_hash64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
