//! The process's open-file limit (`RLIMIT_NOFILE`), raised at start to what
//! the server may hold: every group's files (`files_open_max`) and every
//! connection its listeners accept. Linux starts processes with a soft
//! limit of 1,024, which a server with a few hundred partitions passes.

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use shoal_shard::node::files_open_max;

use crate::bus::net::CONNECTIONS_PER_LISTENER_MAX;
use crate::host::PARTITION_GROUPS_MAX;

/// Descriptors beside files and accepted connections: listeners, outgoing
/// peer connections, io_uring and eventfds, the metrics endpoint.
pub const PROCESS_DESCRIPTORS_SPARE: u64 = 256;

/// What the soft limit was and became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFilesLimit {
    pub needed: u64,
    pub before: u64,
    pub now: u64,
    pub hard: u64,
}

impl OpenFilesLimit {
    /// The hard limit is below what the server may hold: it runs, but a
    /// full catalogue or a connection storm fails opens with EMFILE.
    pub fn short(&self) -> bool {
        self.now < self.needed
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("reading RLIMIT_NOFILE failed ({0}); the server cannot size its open-file limit")]
    OpenFilesLimitUnreadable(nix::Error),
    #[error(
        "raising the open-file soft limit to {wanted} failed ({source}); set it yourself (ulimit -n {wanted}, or LimitNOFILE={wanted} in the unit)"
    )]
    OpenFilesLimitNotRaised { wanted: u64, source: nix::Error },
}

/// Descriptors a process with `shard_count` shards may hold at once.
pub fn descriptors_needed(shard_count: usize) -> u64 {
    // Every partition group and the metadata group.
    files_open_max(PARTITION_GROUPS_MAX + 1)
        + (shard_count * CONNECTIONS_PER_LISTENER_MAX) as u64
        + PROCESS_DESCRIPTORS_SPARE
}

/// Raise the soft open-file limit to `needed`, or to the hard limit when
/// that is lower (never lowers it).
pub fn raise_open_files_limit(needed: u64) -> Result<OpenFilesLimit, LimitsError> {
    let (before, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(LimitsError::OpenFilesLimitUnreadable)?;
    let wanted = needed.min(hard).max(before);
    if wanted > before {
        setrlimit(Resource::RLIMIT_NOFILE, wanted, hard)
            .map_err(|source| LimitsError::OpenFilesLimitNotRaised { wanted, source })?;
    }
    Ok(OpenFilesLimit { needed, before, now: wanted, hard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_rises_to_what_is_needed_within_the_hard_limit() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let needed = descriptors_needed(2);
        assert!(needed > 1024, "a full catalogue needs more than Linux's default soft limit");
        let limit = raise_open_files_limit(needed).unwrap();
        assert_eq!(limit.now, needed.min(hard).max(limit.before));
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, limit.now);
        assert_eq!(limit.short(), limit.now < needed);
        // Asking for less never lowers it.
        assert_eq!(raise_open_files_limit(16).unwrap().now, limit.now);
    }
}
