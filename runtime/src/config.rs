//! `shoal-server`'s settings: a TOML file, overridden by flags, checked into
//! one `ServerConfig`.
//!
//! Owns the file schema, the defaults and the validation; every refusal is a
//! `ConfigError` naming the key and the fix. Knows nothing of clap: the binary
//! maps its flags onto `Overrides`, so the merge is testable without a process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use shoal_shard::handoff::METADATA_JOURNAL_SLOT_COUNT;
use shoal_vsr::header::{HEADER_SIZE_BYTES, MESSAGE_SIZE_MAX_BYTES};
use shoal_vsr::journal::{CHECKPOINT_RESERVED_SLOTS, SLOT_COUNT_MAX};
use shoal_vsr::replica::{PIPELINE_PREPARES_MAX, VIEW_HEADERS_MAX};

use crate::bus::net::IDLE_TIMEOUT_MS;
use crate::pinning::CpuAllocation;

/// The smallest journal: a checkpoint interval (`checkpoint_interval_ops`)
/// plus the view headers a view change carries must fit in it, and so must
/// the pipeline (`Replica::open` asserts both). 64 passed this check once
/// and then panicked the server when it opened a partition group (32 + 32
/// is not below 64): every power of two from 128 up fits.
pub const JOURNAL_SLOT_COUNT_MIN: u64 = 128;
const _: () =
    assert!(checkpoint_interval_ops(JOURNAL_SLOT_COUNT_MIN) + (VIEW_HEADERS_MAX as u64) < JOURNAL_SLOT_COUNT_MIN);
const _: () = assert!(checkpoint_interval_ops(JOURNAL_SLOT_COUNT_MIN) > 0);
const _: () = assert!(CHECKPOINT_RESERVED_SLOTS < JOURNAL_SLOT_COUNT_MIN);

/// The longest checkpoint interval a journal of `journal_slot_count` slots
/// allows (`JournalConfig::checkpoint_interval_ops_max`: the ring less a
/// view change's headers and a pipeline), the most `limits.checkpoint_interval_ops`
/// accepts, and the metadata group's interval. Past it the primary waits for
/// the drain (`journal_ops_max`). For a `slot_count` of at least
/// `JOURNAL_SLOT_COUNT_MIN` the interval plus `VIEW_HEADERS_MAX` fits.
pub const fn checkpoint_interval_ops(journal_slot_count: u64) -> u64 {
    journal_slot_count - CHECKPOINT_RESERVED_SLOTS
}
/// A partition group's checkpoint interval by default: half the journal.
/// A checkpoint runs beside the node, and the group appends into the
/// journal's slots past the interval until it ends; with the longest
/// interval (976 of 1,024 slots) that was 48 ops, so under load every
/// checkpoint ended with the group waiting for it. Half the journal leaves
/// it as many ops as the interval, at the price of a compaction twice as
/// often. Measured (`cargo xtask bench server`, README, session 17), 512
/// against 976 with 1,024 slots, 3 replicas, 6 alternated pairs: 8
/// producers +13-33 % msg/s and a better p99.9 in all 6; 64 clients better
/// in 5 of 6; one at a time even.
pub const fn checkpoint_interval_ops_default(journal_slot_count: u64) -> u64 {
    journal_slot_count / 2
}
const _: () =
    assert!(checkpoint_interval_ops_default(JOURNAL_SLOT_COUNT_MIN) <= checkpoint_interval_ops(JOURNAL_SLOT_COUNT_MIN));

/// `network.idle_timeout_ms` bounds: a connection may sit this long with an
/// incomplete hello or frame before it is closed. Below the minimum a slow
/// but healthy peer on a loaded machine would be cut off; past the maximum
/// a stalled half-frame would pin its receive buffer for too long.
pub const IDLE_TIMEOUT_MS_MIN: u64 = 100;
pub const IDLE_TIMEOUT_MS_MAX: u64 = 3_600_000;
const _: () = assert!(IDLE_TIMEOUT_MS_MIN <= IDLE_TIMEOUT_MS && IDLE_TIMEOUT_MS <= IDLE_TIMEOUT_MS_MAX);
/// The smallest `limits.message_size_max`: a header and a small body.
pub const MESSAGE_SIZE_MIN_BYTES: u32 = 4096;
/// `limits.pipeline_prepares_max` by default: shallower than the deepest the
/// journal allows (`PIPELINE_PREPARES_MAX`), because a prepare, not a
/// request, costs a journal write and a quorum round: past this many in
/// flight, requests queue and leave packed several to a prepare
/// (`shoal_vsr::packed`). One client at a time is unaffected (its request
/// finds the pipeline empty). Measured with `cargo xtask bench server`
/// (README, Benchmarks).
pub const PIPELINE_PREPARES_DEFAULT: usize = 4;
/// `limits.scrub_bytes_per_second` by default, per shard: a pass over a
/// 64 MiB segment takes about a minute, a small share of a disk's reads
/// (and reads of recent records come from the page cache).
pub const SCRUB_BYTES_PER_SECOND_DEFAULT: u64 = 1024 * 1024;
/// The most `limits.scrub_bytes_per_second` (a tick's read stays bounded:
/// 10 MiB per 10 ms tick).
pub const SCRUB_BYTES_PER_SECOND_MAX: u64 = 1024 * 1024 * 1024;
const _: () = assert!(PIPELINE_PREPARES_DEFAULT >= 1 && PIPELINE_PREPARES_DEFAULT <= PIPELINE_PREPARES_MAX);
const _: () = assert!(MESSAGE_SIZE_MIN_BYTES as usize > HEADER_SIZE_BYTES);
const _: () = assert!(JOURNAL_SLOT_COUNT_MIN <= METADATA_JOURNAL_SLOT_COUNT);

/// The config file. Every key is optional; unknown keys are refused so a
/// misspelt setting is not silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub network: NetworkSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub sharding: ShardingSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub logging: LoggingSection,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// A u128 does not fit TOML's i64: a small id may be an integer, any id a
    /// decimal string.
    pub id: Option<ClusterId>,
    pub replica: Option<u8>,
    pub replica_count: Option<u8>,
    pub replica_addresses: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ClusterId {
    Integer(u64),
    Text(String),
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    pub client_address: Option<String>,
    pub metrics_address: Option<String>,
    pub idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardingSection {
    pub cpu_allocation: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub message_size_max: Option<u32>,
    pub journal_slot_count: Option<u64>,
    pub checkpoint_interval_ops: Option<u64>,
    pub pipeline_prepares_max: Option<usize>,
    pub scrub_bytes_per_second: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    pub format: Option<String>,
}

/// Flags given on the command line; each, when set, wins over the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub cluster: Option<u128>,
    pub replica: Option<u8>,
    pub replica_count: Option<u8>,
    pub replica_addresses: Option<Vec<String>>,
    pub client_address: Option<String>,
    pub metrics_address: Option<String>,
    pub idle_timeout_ms: Option<u64>,
    pub data_dir: Option<PathBuf>,
    pub cpu_allocation: Option<String>,
    pub message_size_max: Option<u32>,
    pub journal_slot_count: Option<u64>,
    pub checkpoint_interval_ops: Option<u64>,
    pub pipeline_prepares_max: Option<usize>,
    pub scrub_bytes_per_second: Option<u64>,
    pub log_format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub cluster: u128,
    pub replica: u8,
    pub replica_count: u8,
    /// Empty, or one address per replica, indexed by replica.
    pub replica_addresses: Vec<SocketAddr>,
    pub client_address: Option<SocketAddr>,
    pub metrics_address: Option<SocketAddr>,
    /// How long a connection may sit with an incomplete hello or frame.
    pub idle_timeout_ms: u64,
    pub data_dir: PathBuf,
    pub cpu_allocation: CpuAllocation,
    pub message_size_max_bytes: u32,
    pub journal_slot_count: u64,
    /// Ops between a partition group's checkpoints (the same on every
    /// replica); at most `checkpoint_interval_ops(journal_slot_count)`, by
    /// default `checkpoint_interval_ops_default`.
    pub checkpoint_interval_ops: u64,
    /// Prepares a partition group's primary keeps in flight before it
    /// queues requests (and packs them several to a prepare).
    pub pipeline_prepares_max: usize,
    /// Bytes of partition log each shard reads back and checks per second,
    /// a group per tick in turn (the node's scrubber); 0 turns it off.
    pub scrub_bytes_per_second: u64,
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; check the --config path and its permissions")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("storage.data_dir is not set: set it in the config file or pass --data-dir DIR")]
    DataDirMissing,
    #[error(
        "cluster.id {given:?} is not a decimal u128: write it as an integer or a quoted decimal string, e.g. id = \"1\""
    )]
    ClusterId { given: String },
    #[error("cluster.replica_count is {count}: a cluster has 1, 3 or 5 replicas")]
    ReplicaCount { count: u8 },
    #[error("cluster.replica is {replica}, out of range for cluster.replica_count {count}: use 0..{count}")]
    ReplicaOutOfRange { replica: u8, count: u8 },
    #[error(
        "cluster.replica_addresses lists {listed} addresses for cluster.replica_count {count}: list one \
         host:port per replica, in replica order"
    )]
    ReplicaAddresses { listed: usize, count: u8 },
    #[error("{key} = {given:?} is not an address: write host:port with a numeric IP, e.g. \"10.0.0.1:7000\"")]
    Address { key: &'static str, given: String },
    #[error(
        "network.idle_timeout_ms is {given}: set it within {IDLE_TIMEOUT_MS_MIN}..={IDLE_TIMEOUT_MS_MAX} \
         (milliseconds a connection may stall mid-frame before it is closed)"
    )]
    IdleTimeout { given: u64 },
    #[error("sharding.cpu_allocation {given:?}: {reason}")]
    CpuAllocation { given: String, reason: String },
    #[error("limits.message_size_max is {given} bytes: set it within {min}..={max} (the same on every replica)")]
    MessageSize { given: u32, min: u32, max: u32 },
    #[error("limits.journal_slot_count is {given}: set a power of two within {min}..={max}")]
    JournalSlotCount { given: u64, min: u64, max: u64 },
    #[error(
        "limits.checkpoint_interval_ops is {given}: set it within 1..={max} for limits.journal_slot_count {slots} \
         (the same on every replica; a shorter interval leaves a running checkpoint more of the journal to append \
         into, at the price of more compactions)"
    )]
    CheckpointIntervalOps { given: u64, max: u64, slots: u64 },
    #[error(
        "limits.pipeline_prepares_max is {given}: set it within 1..={max} (prepares in flight per group; a shallower \
         pipeline packs more requests into each prepare)"
    )]
    PipelinePreparesMax { given: usize, max: usize },
    #[error(
        "limits.scrub_bytes_per_second is {given}: set it within 0..={max} (0 turns the partition log scrubber off; \
         each shard reads this much of its groups' logs back per second to find damage before a second fault does)"
    )]
    ScrubBytesPerSecond { given: u64, max: u64 },
    #[error("logging.format {given:?} is unknown: use \"text\" or \"json\"")]
    LogFormat { given: String },
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        FileConfig::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })
    }

    /// The TOML error names the line and the key (an unknown or mistyped one).
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|error| error.to_string().trim_end().to_string())
    }
}

fn address(key: &'static str, given: &str) -> Result<SocketAddr, ConfigError> {
    given.parse().map_err(|_| ConfigError::Address { key, given: given.to_string() })
}

impl ServerConfig {
    /// Merge `file` (if any) under `flags` and check the result.
    pub fn resolve(file: FileConfig, flags: Overrides) -> Result<ServerConfig, ConfigError> {
        let cluster = match (flags.cluster, file.cluster.id) {
            (Some(id), _) => id,
            (None, Some(ClusterId::Integer(id))) => u128::from(id),
            (None, Some(ClusterId::Text(text))) => {
                text.trim().parse().map_err(|_| ConfigError::ClusterId { given: text })?
            }
            (None, None) => 0,
        };
        let replica_count = flags.replica_count.or(file.cluster.replica_count).unwrap_or(1);
        if !matches!(replica_count, 1 | 3 | 5) {
            return Err(ConfigError::ReplicaCount { count: replica_count });
        }
        let replica = flags.replica.or(file.cluster.replica).unwrap_or(0);
        if replica >= replica_count {
            return Err(ConfigError::ReplicaOutOfRange { replica, count: replica_count });
        }
        let listed = flags.replica_addresses.or(file.cluster.replica_addresses).unwrap_or_default();
        // One replica needs no peers; a cluster needs every peer's address.
        if (replica_count > 1 || !listed.is_empty()) && listed.len() != usize::from(replica_count) {
            return Err(ConfigError::ReplicaAddresses { listed: listed.len(), count: replica_count });
        }
        let replica_addresses =
            listed.iter().map(|given| address("cluster.replica_addresses", given)).collect::<Result<Vec<_>, _>>()?;
        let client_address = flags
            .client_address
            .or(file.network.client_address)
            .map(|given| address("network.client_address", &given))
            .transpose()?;
        let metrics_address = flags
            .metrics_address
            .or(file.network.metrics_address)
            .map(|given| address("network.metrics_address", &given))
            .transpose()?;
        let idle_timeout_ms = flags.idle_timeout_ms.or(file.network.idle_timeout_ms).unwrap_or(IDLE_TIMEOUT_MS);
        if !(IDLE_TIMEOUT_MS_MIN..=IDLE_TIMEOUT_MS_MAX).contains(&idle_timeout_ms) {
            return Err(ConfigError::IdleTimeout { given: idle_timeout_ms });
        }
        let data_dir = flags.data_dir.or(file.storage.data_dir).ok_or(ConfigError::DataDirMissing)?;
        let allocation_text =
            flags.cpu_allocation.or(file.sharding.cpu_allocation).unwrap_or_else(|| "all".to_string());
        let cpu_allocation = allocation_text.parse::<CpuAllocation>().map_err(|error| ConfigError::CpuAllocation {
            given: allocation_text.clone(),
            reason: error.to_string(),
        })?;
        let message_size_max_bytes =
            flags.message_size_max.or(file.limits.message_size_max).unwrap_or(MESSAGE_SIZE_MAX_BYTES);
        if !(MESSAGE_SIZE_MIN_BYTES..=MESSAGE_SIZE_MAX_BYTES).contains(&message_size_max_bytes) {
            return Err(ConfigError::MessageSize {
                given: message_size_max_bytes,
                min: MESSAGE_SIZE_MIN_BYTES,
                max: MESSAGE_SIZE_MAX_BYTES,
            });
        }
        let journal_slot_count =
            flags.journal_slot_count.or(file.limits.journal_slot_count).unwrap_or(METADATA_JOURNAL_SLOT_COUNT);
        if !(JOURNAL_SLOT_COUNT_MIN..=SLOT_COUNT_MAX).contains(&journal_slot_count)
            || !journal_slot_count.is_power_of_two()
        {
            return Err(ConfigError::JournalSlotCount {
                given: journal_slot_count,
                min: JOURNAL_SLOT_COUNT_MIN,
                max: SLOT_COUNT_MAX,
            });
        }
        let checkpoint_interval_ops_max = checkpoint_interval_ops(journal_slot_count);
        let checkpoint_interval_ops = flags
            .checkpoint_interval_ops
            .or(file.limits.checkpoint_interval_ops)
            .unwrap_or(checkpoint_interval_ops_default(journal_slot_count));
        if !(1..=checkpoint_interval_ops_max).contains(&checkpoint_interval_ops) {
            return Err(ConfigError::CheckpointIntervalOps {
                given: checkpoint_interval_ops,
                max: checkpoint_interval_ops_max,
                slots: journal_slot_count,
            });
        }
        let pipeline_prepares_max =
            flags.pipeline_prepares_max.or(file.limits.pipeline_prepares_max).unwrap_or(PIPELINE_PREPARES_DEFAULT);
        if !(1..=PIPELINE_PREPARES_MAX).contains(&pipeline_prepares_max) {
            return Err(ConfigError::PipelinePreparesMax { given: pipeline_prepares_max, max: PIPELINE_PREPARES_MAX });
        }
        let scrub_bytes_per_second = flags
            .scrub_bytes_per_second
            .or(file.limits.scrub_bytes_per_second)
            .unwrap_or(SCRUB_BYTES_PER_SECOND_DEFAULT);
        if scrub_bytes_per_second > SCRUB_BYTES_PER_SECOND_MAX {
            return Err(ConfigError::ScrubBytesPerSecond {
                given: scrub_bytes_per_second,
                max: SCRUB_BYTES_PER_SECOND_MAX,
            });
        }
        let log_format = match flags.log_format.or(file.logging.format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(ConfigError::LogFormat { given: other.to_string() }),
        };
        Ok(ServerConfig {
            cluster,
            replica,
            replica_count,
            replica_addresses,
            client_address,
            metrics_address,
            idle_timeout_ms,
            data_dir,
            cpu_allocation,
            message_size_max_bytes,
            journal_slot_count,
            checkpoint_interval_ops,
            pipeline_prepares_max,
            scrub_bytes_per_second,
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE_NODES: &str = r#"
[cluster]
id = "340282366920938463463374607431768211455"
replica = 1
replica_count = 3
replica_addresses = ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]

[network]
client_address = "0.0.0.0:8000"
metrics_address = "127.0.0.1:9100"
idle_timeout_ms = 2500

[storage]
data_dir = "/var/lib/shoal"

[sharding]
cpu_allocation = "0-1"

[limits]
message_size_max = 65536
journal_slot_count = 4096
checkpoint_interval_ops = 2048
pipeline_prepares_max = 8

[logging]
format = "json"
"#;

    #[test]
    fn a_full_file_resolves_and_flags_override_it() {
        let file = FileConfig::parse(THREE_NODES).unwrap();
        let config = ServerConfig::resolve(file.clone(), Overrides::default()).unwrap();
        assert_eq!(config.cluster, u128::MAX);
        assert_eq!((config.replica, config.replica_count), (1, 3));
        assert_eq!(config.replica_addresses[2], "10.0.0.3:7000".parse().unwrap());
        assert_eq!(config.message_size_max_bytes, 65536);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.idle_timeout_ms, 2500);
        assert_eq!(config.pipeline_prepares_max, 8);
        assert_eq!(config.checkpoint_interval_ops, 2048);
        let flags = Overrides {
            replica: Some(2),
            idle_timeout_ms: Some(700),
            data_dir: Some("/tmp/x".into()),
            log_format: Some("text".into()),
            pipeline_prepares_max: Some(2),
            ..Overrides::default()
        };
        let config = ServerConfig::resolve(file, flags).unwrap();
        assert_eq!(config.replica, 2);
        assert_eq!(config.idle_timeout_ms, 700);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.pipeline_prepares_max, 2);
    }

    #[test]
    fn the_deploy_examples_parse() {
        for replica in 0..3 {
            let path = format!("{}/../deploy/shoal-{replica}.toml", env!("CARGO_MANIFEST_DIR"));
            let config =
                ServerConfig::resolve(FileConfig::load(Path::new(&path)).unwrap(), Overrides::default()).unwrap();
            assert_eq!(config.replica, replica);
            assert_eq!(config.replica_addresses.len(), 3);
        }
    }

    fn refusal(text: &str) -> String {
        match FileConfig::parse(text) {
            Err(message) => message,
            Ok(file) => ServerConfig::resolve(file, Overrides { data_dir: Some("/d".into()), ..Overrides::default() })
                .unwrap_err()
                .to_string(),
        }
    }

    #[test]
    fn each_bad_setting_is_refused_naming_its_key() {
        assert!(refusal("[cluster]\nreplcia = 1\n").contains("replcia"));
        assert!(refusal("[cluster]\nid = \"0x5\"\n").contains("cluster.id"));
        assert!(refusal("[cluster]\nid = -1\n").contains("id"));
        assert!(refusal("[cluster]\nreplica_count = 2\n").contains("cluster.replica_count"));
        assert!(refusal("[cluster]\nreplica = 3\nreplica_count = 3\nreplica_addresses = [\"1.1.1.1:1\",\"1.1.1.1:2\",\"1.1.1.1:3\"]\n")
            .contains("use 0..3"));
        assert!(
            refusal("[cluster]\nreplica_count = 3\nreplica_addresses = [\"1.1.1.1:1\"]\n")
                .contains("one host:port per replica")
        );
        assert!(refusal("[network]\nclient_address = \"localhost\"\n").contains("network.client_address"));
        assert!(refusal("[sharding]\ncpu_allocation = \"numa:x\"\n").contains("sharding.cpu_allocation"));
        assert!(refusal("[limits]\nmessage_size_max = 100\n").contains("limits.message_size_max"));
        assert!(refusal("[limits]\njournal_slot_count = 1000\n").contains("power of two"));
        assert!(refusal("[limits]\njournal_slot_count = 64\n").contains("128.."));
        assert!(refusal("[logging]\nformat = \"xml\"\n").contains("logging.format"));
        assert!(refusal("[limits]\npipeline_prepares_max = 0\n").contains("limits.pipeline_prepares_max"));
        assert!(refusal("[limits]\npipeline_prepares_max = 17\n").contains("1..=16"));
        assert!(refusal("[limits]\ncheckpoint_interval_ops = 0\n").contains("limits.checkpoint_interval_ops"));
        let too_long = refusal("[limits]\njournal_slot_count = 1024\ncheckpoint_interval_ops = 1000\n");
        assert!(too_long.contains(&format!("1..={}", checkpoint_interval_ops(1024))), "{too_long}");
        assert!(refusal("[network]\nidle_timeout_ms = 5\n").contains("network.idle_timeout_ms"));
        assert!(refusal("[network]\nidle_timeout_ms = 3600001\n").contains("network.idle_timeout_ms"));
        let default = ServerConfig::resolve(
            FileConfig::default(),
            Overrides { data_dir: Some("/d".into()), ..Overrides::default() },
        );
        let default = default.unwrap();
        assert_eq!(default.idle_timeout_ms, IDLE_TIMEOUT_MS);
        assert_eq!(default.pipeline_prepares_max, PIPELINE_PREPARES_DEFAULT);
        assert_eq!(default.scrub_bytes_per_second, SCRUB_BYTES_PER_SECOND_DEFAULT);
        let too_fast = format!("[limits]\nscrub_bytes_per_second = {}\n", SCRUB_BYTES_PER_SECOND_MAX + 1);
        assert!(refusal(&too_fast).contains("limits.scrub_bytes_per_second"));
        let off = ServerConfig::resolve(
            FileConfig::default(),
            Overrides { data_dir: Some("/d".into()), scrub_bytes_per_second: Some(0), ..Overrides::default() },
        );
        assert_eq!(off.unwrap().scrub_bytes_per_second, 0, "0 turns the scrubber off");
        assert_eq!(default.checkpoint_interval_ops, default.journal_slot_count / 2);
        let missing = ServerConfig::resolve(FileConfig::default(), Overrides::default()).unwrap_err();
        assert!(missing.to_string().contains("--data-dir"));
    }
}
