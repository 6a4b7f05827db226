//! The data directory's identity: which cluster, replica and replica count a
//! directory was formatted for, so a server pointed at the wrong disk refuses
//! to start instead of joining a cluster with another replica's log.
//!
//! Owns one small file, `IDENTITY_FILE_NAME`, written once by
//! `shoal-server format` and checked by every start. Knows nothing of the WAL.
//!
//! Layout (48 bytes, little endian): `magic[0..8] format_version[8..12]
//! replica[12] replica_count[13] flags[14] reserved[15] cluster[16..32]
//! checksum[32..48]`, the checksum over bytes `0..32`. Flags: bit 0,
//! `rejoining` (`format --rejoin`: the dir replaces a lost one of a cluster
//! that exists, so every group this replica formats in it starts by
//! rejoining); the other bits must be zero.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use shoal_vsr::header::checksum;

pub const IDENTITY_FILE_NAME: &str = "shoal.identity";
const IDENTITY_TMP_FILE_NAME: &str = "shoal.identity.tmp";
pub const IDENTITY_SIZE_BYTES: usize = 48;
pub const IDENTITY_MAGIC: [u8; 8] = *b"SHOALDIR";
/// The data directory format this binary writes and reads; a newer one is refused.
pub const DATA_DIR_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub format_version: u32,
    pub cluster: u128,
    pub replica: u8,
    pub replica_count: u8,
    /// Formatted with `--rejoin`: this replica's disk was lost and the
    /// cluster exists, so a group it formats may have acknowledged prepares
    /// before the loss and must rejoin before it votes.
    pub rejoining: bool,
}

/// `flags` bit 0: the dir was formatted rejoining.
const FLAG_REJOINING: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "{dir} is not a formatted shoal data dir (no {IDENTITY_FILE_NAME}): run `shoal-server format --cluster ID \
         --replica I --replica-count R {dir}` first"
    )]
    NotFormatted { dir: PathBuf },
    #[error(
        "{dir} is already formatted for cluster {cluster}, replica {replica}: refusing to format over it; remove the \
         directory first only if you mean to wipe this replica"
    )]
    AlreadyFormatted { dir: PathBuf, cluster: u128, replica: u8 },
    #[error(
        "{path} is corrupt ({reason}): do not start this replica on it; restore the file or format a fresh dir and \
         let the replica recover from its peers"
    )]
    Corrupt { path: PathBuf, reason: &'static str },
    #[error(
        "{dir} has data dir format {found}, newer than this binary's {supported}: run a shoal-server release that \
         supports format {found}"
    )]
    NewerFormat { dir: PathBuf, found: u32, supported: u32 },
    #[error(
        "{dir} belongs to cluster {found}, not {expected}: point --data-dir at this cluster's dir, or fix cluster.id"
    )]
    WrongCluster { dir: PathBuf, found: u128, expected: u128 },
    #[error(
        "{dir} belongs to replica {found}, not {expected}: point --data-dir at replica {expected}'s dir, or fix \
         cluster.replica"
    )]
    WrongReplica { dir: PathBuf, found: u8, expected: u8 },
    #[error(
        "{dir} was formatted for {found} replicas, not {expected}: fix cluster.replica_count (a cluster's size \
         changes only by reconfiguration)"
    )]
    WrongReplicaCount { dir: PathBuf, found: u8, expected: u8 },
    #[error("cannot {action} {path}: {source}; check the path, its permissions and free space")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError {
    let path = path.to_path_buf();
    move |source| DataDirError::Io { action, path, source }
}

impl Identity {
    pub fn new(cluster: u128, replica: u8, replica_count: u8) -> Identity {
        assert!(replica < replica_count);
        Identity { format_version: DATA_DIR_FORMAT_VERSION, cluster, replica, replica_count, rejoining: false }
    }

    /// The identity of a dir formatted for a replica that rejoins an
    /// existing cluster after losing its disk.
    pub fn rejoining(self) -> Identity {
        Identity { rejoining: true, ..self }
    }

    pub fn encode(&self) -> [u8; IDENTITY_SIZE_BYTES] {
        let mut out = [0u8; IDENTITY_SIZE_BYTES];
        out[..8].copy_from_slice(&IDENTITY_MAGIC);
        out[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        out[12] = self.replica;
        out[13] = self.replica_count;
        out[14] = if self.rejoining { FLAG_REJOINING } else { 0 };
        out[16..32].copy_from_slice(&self.cluster.to_le_bytes());
        let sum = checksum(&out[..32]);
        out[32..].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// `Err(reason)` for bytes that are not an intact identity.
    pub fn decode(bytes: &[u8]) -> Result<Identity, &'static str> {
        let bytes: &[u8; IDENTITY_SIZE_BYTES] = bytes.try_into().map_err(|_| "wrong size")?;
        if bytes[..8] != IDENTITY_MAGIC {
            return Err("bad magic");
        }
        if checksum(&bytes[..32]) != u128::from_le_bytes(bytes[32..].try_into().expect("16 bytes")) {
            return Err("checksum mismatch");
        }
        if bytes[14] & !FLAG_REJOINING != 0 {
            return Err("unknown flags");
        }
        Ok(Identity {
            format_version: u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")),
            replica: bytes[12],
            replica_count: bytes[13],
            rejoining: bytes[14] & FLAG_REJOINING != 0,
            cluster: u128::from_le_bytes(bytes[16..32].try_into().expect("16 bytes")),
        })
    }
}

/// Read `dir`'s identity; `Ok(None)` when the dir or the file does not exist.
pub fn read_identity(dir: &Path) -> Result<Option<Identity>, DataDirError> {
    let path = dir.join(IDENTITY_FILE_NAME);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("open", &path)(error)),
    };
    // One byte more than the layout, so an overlong file is caught as corrupt.
    let mut bytes = Vec::with_capacity(IDENTITY_SIZE_BYTES + 1);
    (&mut file).take(IDENTITY_SIZE_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(io_error("read", &path))?;
    Identity::decode(&bytes).map(Some).map_err(|reason| DataDirError::Corrupt { path, reason })
}

/// Create `dir` (if needed) and durably write its identity. Refuses a dir that
/// already has one.
pub fn format(dir: &Path, identity: Identity) -> Result<(), DataDirError> {
    create_dir_durable(dir)?;
    if let Some(existing) = read_identity(dir)? {
        return Err(DataDirError::AlreadyFormatted {
            dir: dir.to_path_buf(),
            cluster: existing.cluster,
            replica: existing.replica,
        });
    }
    let tmp = dir.join(IDENTITY_TMP_FILE_NAME);
    let path = dir.join(IDENTITY_FILE_NAME);
    let mut file =
        OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io_error("create", &tmp))?;
    file.write_all(&identity.encode()).map_err(io_error("write", &tmp))?;
    // The bytes must be durable before the rename makes them the identity:
    // otherwise a crash can leave a renamed, empty file.
    file.sync_all().map_err(io_error("fsync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io_error("rename", &tmp))?;
    // The rename is durable only once the directory entry is.
    File::open(dir).and_then(|dir_file| dir_file.sync_all()).map_err(io_error("fsync", dir))?;
    Ok(())
}

/// Create `dir` (and its parents) and fsync the parent of every level: a new
/// directory's entry survives a power loss only once its parent is fsynced,
/// and every file in it (identity, superblocks, journals) vanishes with it.
/// `shoal_vsr::io::create_dir_durable` is the same rule (`parents_top_down`)
/// for the groups' own dirs; this one runs before any shard's `Io` exists.
pub fn create_dir_durable(dir: &Path) -> Result<(), DataDirError> {
    std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
    for parent in shoal_vsr::io::parents_top_down(dir) {
        File::open(parent).and_then(|parent_file| parent_file.sync_all()).map_err(io_error("fsync", parent))?;
    }
    Ok(())
}

/// What `check` requires of a dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Require {
    /// `shoal-server start`: the dir must be formatted.
    Formatted,
    /// The legacy start without a subcommand: an unformatted dir is accepted
    /// (the metadata WAL formats itself), a formatted one must match.
    MatchIfFormatted,
}

/// Check that `dir` belongs to `expected` (cluster, replica, replica count).
pub fn check(dir: &Path, expected: Identity, require: Require) -> Result<Option<Identity>, DataDirError> {
    let dir_buf = dir.to_path_buf();
    let Some(found) = read_identity(dir)? else {
        return match require {
            Require::Formatted => Err(DataDirError::NotFormatted { dir: dir_buf }),
            Require::MatchIfFormatted => Ok(None),
        };
    };
    if found.format_version > DATA_DIR_FORMAT_VERSION {
        return Err(DataDirError::NewerFormat {
            dir: dir_buf,
            found: found.format_version,
            supported: DATA_DIR_FORMAT_VERSION,
        });
    }
    if found.cluster != expected.cluster {
        return Err(DataDirError::WrongCluster { dir: dir_buf, found: found.cluster, expected: expected.cluster });
    }
    if found.replica != expected.replica {
        return Err(DataDirError::WrongReplica { dir: dir_buf, found: found.replica, expected: expected.replica });
    }
    if found.replica_count != expected.replica_count {
        return Err(DataDirError::WrongReplicaCount {
            dir: dir_buf,
            found: found.replica_count,
            expected: expected.replica_count,
        });
    }
    Ok(Some(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_any_flipped_byte_is_corrupt() {
        let identity = Identity::new(u128::MAX - 3, 2, 3);
        let bytes = identity.encode();
        assert_eq!(Identity::decode(&bytes), Ok(identity));
        for index in 0..IDENTITY_SIZE_BYTES {
            let mut bad = bytes;
            bad[index] ^= 1;
            assert!(Identity::decode(&bad).is_err(), "byte {index}");
        }
        assert_eq!(Identity::decode(&bytes[..40]), Err("wrong size"));
        let rejoining = identity.rejoining();
        assert_eq!(Identity::decode(&rejoining.encode()), Ok(rejoining));
        assert_ne!(rejoining.encode(), bytes, "the flag is on the disk");
    }
}
