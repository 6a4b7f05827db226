//! The scenario catalog: named recipes that turn a seed into a `RunConfig`.
//!
//! Owns the cluster defaults (replicas, shards, clients, phase lengths), the
//! fault mix of each named scenario, and swarm testing (per-seed fault mixes
//! drawn from a seeded ChaCha8Rng). Must not run anything: a scenario is a
//! pure function of the seed, so `shoal-sim replay --seed N --scenario S`
//! rebuilds exactly the config a sweep ran.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use shoal_sim::cluster::{RESTART_CRASH_PPM, RESTART_STORAGE_ERROR_PPM};
use shoal_sim::{FaultMix, RunConfig};

pub const NS_PER_MS: u64 = 1_000_000;
pub const NS_PER_S: u64 = 1_000_000_000;

pub const REPLICA_COUNT_DEFAULT: u8 = 3;
pub const SHARDS_PER_REPLICA_DEFAULT: u16 = 1;
pub const CLIENT_COUNT_DEFAULT: u32 = 4;
pub const SAFETY_TIME_DEFAULT_NS: u64 = 2 * NS_PER_S;
pub const LIVENESS_TIME_DEFAULT_NS: u64 = 2 * NS_PER_S;

/// Swarm: clients per run are drawn from `1..=SWARM_CLIENT_COUNT_MAX`
/// (as many as any named scenario runs).
pub const SWARM_CLIENT_COUNT_MAX: u32 = 12;
/// Swarm: shards per replica, drawn uniformly from this list (4 is
/// shard-chaos's topology).
pub const SWARM_SHARDS_PER_REPLICA: [u16; 4] = [1, 1, 2, 4];
pub const SWARM_SHARDS_PER_REPLICA_MAX: u16 = 4;
/// Swarm: session table sizes, drawn uniformly: half the seeds run fewer
/// sessions than clients (session-churn's regime).
pub const SWARM_CLIENT_SESSIONS_MAX: [usize; 4] = [2, 4, 64, 64];
/// Swarm: replicas per cluster, drawn uniformly from this list (3 weighs double:
/// it is what most users run).
pub const SWARM_REPLICA_COUNTS: [u8; 4] = [1, 3, 3, 5];
/// Swarm: pipeline depths, drawn uniformly: below the clients of a group,
/// requests queue and primaries pack them (mark `prepare_packed_requests`);
/// 16 is the server's.
pub const SWARM_PIPELINE_PREPARES_MAX: [usize; 4] = [1, 2, 4, shoal_sim::PIPELINE_PREPARES_MAX];
/// disk-rot and crash-loop: one partition append in four fills its journal
/// slot, so rot, tears and lost writes land in body sectors and the
/// journal's joined writes of full slots run (mark `journal_prepares_joined`).
pub const LARGE_APPEND_PPM: u32 = 250_000;
/// Swarm: large appends are on in half the seeds, at 1..=this ppm.
pub const SWARM_LARGE_APPEND_PPM_MAX: u64 = 500_000;
/// view-churn and session-churn: a pipeline shallower than their clients
/// per group, so view changes, evictions and crashes meet packed prepares.
pub const CHURN_PIPELINE_PREPARES_MAX: usize = 2;
/// view-churn and session-churn: per prepare a primary sends the next
/// primary, the chance to start the wiped-acker plot (`sim::cluster::plot`).
pub const PLOT_WIPED_ACKER_PPM: u32 = 5_000;
/// view-churn: per prepare a primary sends a backup, the chance to start
/// the deposed-primary plot (`sim::cluster::deposed`).
pub const PLOT_DEPOSED_PRIMARY_PPM: u32 = 1_000;
/// Swarm: each fault kind is switched on with probability 1/2 per seed.
/// Mixing the seed with a salt keeps the swarm draw independent of the
/// simulator's own ChaCha stream for the same seed.
const SWARM_SEED_SALT: u64 = 0x5EED_5A1F_0F5A_A4D1;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("unknown scenario `{name}`: run `shoal-sim list` to see the names ({known})")]
    UnknownScenario { name: String, known: String },
}

/// One knob of `FaultMix`, reachable by name so that `list`, swarm and the
/// shrinker walk every fault kind without repeating the field list.
#[derive(Debug, Clone, Copy)]
pub struct FaultField {
    pub name: &'static str,
    pub get: fn(&FaultMix) -> u64,
    pub set: fn(&mut FaultMix, u64),
    /// Upper end of the swarm draw (ppm, or ns for the delay).
    pub swarm_max: u64,
}

macro_rules! ppm_field {
    ($field:ident, $swarm_max:expr) => {
        FaultField {
            name: stringify!($field),
            get: |mix| u64::from(mix.$field),
            set: |mix, value| mix.$field = u32::try_from(value).unwrap_or(u32::MAX),
            swarm_max: $swarm_max,
        }
    };
}

/// Every field of `FaultMix`. A unit test checks this against serde's view of
/// the struct, so a new fault kind cannot be forgotten here.
pub const FAULT_FIELDS: [FaultField; 29] = [
    ppm_field!(network_drop_ppm, 50_000),
    ppm_field!(network_duplicate_ppm, 20_000),
    FaultField {
        name: "network_delay_max_ns",
        get: |mix| mix.network_delay_max_ns,
        set: |mix, value| mix.network_delay_max_ns = value,
        swarm_max: 50 * NS_PER_MS,
    },
    ppm_field!(network_partition_ppm, 5_000),
    ppm_field!(network_clog_ppm, 5_000),
    ppm_field!(replica_crash_ppm, 2_000),
    ppm_field!(replica_pause_ppm, 2_000),
    ppm_field!(storage_torn_write_ppm, 10_000),
    ppm_field!(storage_lost_write_ppm, 50_000),
    // Per restart of the one replica whose disk may rot.
    ppm_field!(storage_read_corruption_ppm, 500_000),
    // Per storage action of the one replica whose disk may be damaged: the
    // next write to one of its journals lands elsewhere in the file.
    ppm_field!(storage_misdirected_write_ppm, 20_000),
    ppm_field!(storage_write_error_ppm, 5_000),
    ppm_field!(shard_inbox_full_ppm, 30_000),
    ppm_field!(shard_delivery_drop_ppm, 20_000),
    ppm_field!(shard_panic_ppm, 500),
    ppm_field!(replica_wipe_ppm, 300),
    ppm_field!(protocol_crash_ppm, 20_000),
    ppm_field!(network_stale_redelivery_ppm, 5_000),
    ppm_field!(storage_rot_running_ppm, 2_000),
    // Per rot while down: the share that lands on a partition segment.
    ppm_field!(storage_partition_rot_ppm, 300_000),
    // Per prepare a primary sends the next primary (drawn after the
    // topology, see `swarm`).
    ppm_field!(plot_wiped_acker_ppm, 20_000),
    // Per prepare a primary sends a backup, 5 replicas only (drawn after
    // the topology too).
    ppm_field!(plot_deposed_primary_ppm, 5_000),
    // Per start of a process (drawn last, see `swarm`): twice the named
    // scenarios' rate at the most.
    ppm_field!(restart_crash_ppm, 2 * RESTART_CRASH_PPM as u64),
    ppm_field!(restart_storage_error_ppm, 2 * RESTART_STORAGE_ERROR_PPM as u64),
    // Per storage read of every replica (drawn after everything, see
    // `swarm`): retried reads must make it harmless.
    ppm_field!(storage_read_eio_ppm, STORAGE_READ_EIO_PPM_SWARM_MAX),
    // Per prepare a primary sends the rot replica (drawn after everything,
    // see `swarm`).
    ppm_field!(plot_lost_vote_ppm, 20_000),
    // Per storage action (drawn after everything, see `swarm`).
    ppm_field!(storage_second_sync_error_ppm, 20_000),
    // Per storage action of the rot replica (drawn after everything, see
    // `swarm`).
    ppm_field!(storage_partition_sync_error_ppm, 20_000),
    // Per misdirected write drawn: the share armed on a partition's
    // active segment (drawn after everything, see `swarm`, which turns the
    // scrubber on with it).
    ppm_field!(storage_partition_misdirect_ppm, 500_000),
];

/// The transient read EIO rate swarm draws up to: one read in 500 fails.
const STORAGE_READ_EIO_PPM_SWARM_MAX: u64 = 2_000;

/// Fields swarm draws after the replica count and session table, so that
/// adding them left every older field's draw, and so every older seed's
/// config, as it was.
const SWARM_LATE_FIELDS: [&str; 2] = ["plot_wiped_acker_ppm", "plot_deposed_primary_ppm"];
/// Fields swarm draws after everything else (the pipeline depth too), for
/// the same reason: they were split off the crash and storage-error knobs
/// they used to ride on, so the shrinker can switch them off on their own.
const SWARM_LAST_FIELDS: [&str; 2] = ["restart_crash_ppm", "restart_storage_error_ppm"];
/// Fields swarm draws after the workload and the state-transfer knob: added
/// in session 11, so every older seed's config stays as it was.
const SWARM_FINAL_FIELDS: [&str; 1] = ["storage_read_eio_ppm"];
/// Fields swarm draws after the checkpoint interval, its last draw before
/// session 18: every older seed's config stays as it was.
const SWARM_SESSION_18_FIELDS: [&str; 1] = ["plot_lost_vote_ppm"];
/// Fields swarm draws after everything else, added in session 28: every
/// older seed's config stays as it was.
const SWARM_SESSION_28_FIELDS: [&str; 1] = ["storage_second_sync_error_ppm"];
/// Fields swarm draws after everything else, added in session 30: every
/// older field's draw stays as it was (the seeds that draw this one on run
/// differently). Not drawn for a while in session 30 after it found swarm
/// seed 9620 (a checkpoint served before it was durable); drawn again since
/// the fix (session 31).
const SWARM_SESSION_30_FIELDS: [&str; 1] = ["storage_partition_sync_error_ppm"];

/// Fields added in session 32, drawn after everything else (so every older
/// draw stays as it was per seed). Not drawn in session 32, while
/// partition-misdirect seed 1032 wedged; drawn since its fix (session 33).
/// A seed that draws it runs the scrubber too: without it nothing finds
/// the damage to a running replica's partition log.
const SWARM_SESSION_32_FIELDS: [&str; 1] = ["storage_partition_misdirect_ppm"];

/// The non-zero knobs of a mix, as `name=value` pairs, in field order.
pub fn fault_mix_summary(mix: &FaultMix) -> String {
    let parts: Vec<String> = FAULT_FIELDS
        .iter()
        .filter(|field| (field.get)(mix) != 0)
        .map(|field| format!("{}={}", field.name, (field.get)(mix)))
        .collect();
    if parts.is_empty() { "no faults".to_string() } else { parts.join(" ") }
}

#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub summary: &'static str,
    pub build: fn(u64) -> RunConfig,
}

impl Scenario {
    pub fn config(&self, seed: u64) -> RunConfig {
        let config = (self.build)(seed);
        debug_assert_eq!(config.seed, seed);
        debug_assert_eq!(config.scenario, self.name);
        config
    }
}

pub const SCENARIOS: [Scenario; 14] = [
    Scenario { name: "steady", summary: "no faults: the happy path must commit and converge", build: steady },
    Scenario {
        name: "partition-storm",
        summary: "network partitions, clogging, drops, duplicates and delay",
        build: partition_storm,
    },
    Scenario {
        name: "disk-rot",
        summary: "torn, lost and failed writes, sticky read corruption, occasional crashes",
        build: disk_rot,
    },
    Scenario {
        name: "disk-rot-pages",
        summary: "disk-rot where a latent sector error damages its whole 4 KiB page, as Linux's page cache sees it: reads of the page and writes that cover it in part fail with EIO",
        build: disk_rot_pages,
    },
    Scenario {
        name: "disk-rot-sharded",
        summary: "disk-rot with 2 shards per replica and a checkpoint every 4 ops: the metadata group's files rot too, every start replays them; the lost-vote plot",
        build: disk_rot_sharded,
    },
    Scenario {
        name: "crash-loop",
        summary: "replicas crash, restart from the crashed disk and pause, often",
        build: crash_loop,
    },
    Scenario {
        name: "fsync-steps",
        summary: "crash-loop where a failed fsync lands on the second step of a two-step promise (a partition marker, a journal copy, a superblock's second copy)",
        build: fsync_steps,
    },
    Scenario {
        name: "partition-fsync",
        summary: "disk-rot where the next fsync of a partition's file often fails: a partition log that crashed with records only in the page cache, then damage past them",
        build: partition_fsync,
    },
    Scenario {
        name: "partition-misdirect",
        summary: "disk-rot where half the misdirected writes take a partition's active segment: its next marker write lands on its records, and the promise stays on the device as it was",
        build: partition_misdirect,
    },
    Scenario {
        name: "shard-chaos",
        summary: "4 shards per replica; full inboxes, dropped deliveries, shard panics",
        build: shard_chaos,
    },
    Scenario {
        name: "view-churn",
        summary: "5 replicas: long and one-way partitions with crashes at protocol moments, stale redelivery, wipes",
        build: view_churn,
    },
    Scenario {
        name: "session-churn",
        summary: "10 clients share 4 sessions per group: evictions all the time, with crashes and partitions",
        build: session_churn,
    },
    Scenario {
        name: "swarm",
        summary: "per-seed mix: each fault kind on with p=1/2 at a rate drawn from the seed",
        build: swarm,
    },
    Scenario {
        name: "swarm-buggify",
        summary: "swarm's draw, with buggify on: half the code's buggify sites take their rare, legal path",
        build: swarm_buggify,
    },
];

pub fn find(name: &str) -> Result<&'static Scenario, CatalogError> {
    SCENARIOS.iter().find(|scenario| scenario.name == name).ok_or_else(|| CatalogError::UnknownScenario {
        name: name.to_string(),
        known: SCENARIOS.iter().map(|scenario| scenario.name).collect::<Vec<_>>().join(", "),
    })
}

fn base(seed: u64, scenario: &str) -> RunConfig {
    RunConfig {
        seed,
        scenario: scenario.to_string(),
        replica_count: REPLICA_COUNT_DEFAULT,
        shards_per_replica: SHARDS_PER_REPLICA_DEFAULT,
        client_count: CLIENT_COUNT_DEFAULT,
        safety_time_ns: SAFETY_TIME_DEFAULT_NS,
        liveness_time_ns: LIVENESS_TIME_DEFAULT_NS,
        faults: FaultMix::none(),
        fault_budget: None,
        record_trace: false,
        record_history: false,
        script: Vec::new(),
        client_sessions_max: shoal_sim::CLIENT_SESSIONS_MAX,
        pipeline_prepares_max: shoal_sim::PIPELINE_PREPARES_MAX,
        large_append_ppm: 0,
        checkpoint_chunks_per_answer_max: shoal_sim::CHECKPOINT_CHUNKS_PER_ANSWER_MAX,
        checkpoint_interval_ops: shoal_sim::CHECKPOINT_INTERVAL_OPS,
        partition_segment_size_max_bytes: shoal_sim::PARTITION_SEGMENT_SIZE_MAX_BYTES,
        storage_latent_error_page_bytes: 0,
        partition_scrub_bytes_per_tick: 0,
        buggify_ppm: 0,
    }
}

pub fn steady(seed: u64) -> RunConfig {
    base(seed, "steady")
}

pub fn partition_storm(seed: u64) -> RunConfig {
    let mut config = base(seed, "partition-storm");
    config.faults.network_partition_ppm = 3_000;
    config.faults.network_clog_ppm = 2_000;
    config.faults.network_drop_ppm = 10_000;
    config.faults.network_duplicate_ppm = 5_000;
    config.faults.network_delay_max_ns = 20 * NS_PER_MS;
    config
}

pub fn disk_rot(seed: u64) -> RunConfig {
    let mut config = base(seed, "disk-rot");
    config.faults.storage_torn_write_ppm = 5_000;
    config.faults.storage_lost_write_ppm = 20_000;
    config.faults.storage_read_corruption_ppm = 300_000;
    config.faults.storage_write_error_ppm = 2_000;
    // Latent sector errors while the replica runs: a checkpoint's drain or
    // a repair answer reads them.
    config.faults.storage_rot_running_ppm = 20_000;
    config.faults.storage_misdirected_write_ppm = 50_000;
    config.faults.storage_partition_rot_ppm = 250_000;
    config.faults.storage_read_eio_ppm = STORAGE_READ_EIO_PPM_SWARM_MAX as u32 / 2;
    config.large_append_ppm = LARGE_APPEND_PPM;
    // Crashes right after a storage action (a checkpoint's drain among
    // them) restart the replica from exactly what the drain left.
    config.faults.protocol_crash_ppm = 10_000;
    // Lost and torn pending writes only show after a crash.
    config.faults.replica_crash_ppm = 300;
    config.faults.restart_crash_ppm = RESTART_CRASH_PPM;
    config.faults.restart_storage_error_ppm = RESTART_STORAGE_ERROR_PPM;
    config
}

/// disk-rot on a disk whose latent sector errors damage their whole page.
pub fn disk_rot_pages(seed: u64) -> RunConfig {
    let mut config = disk_rot(seed);
    config.scenario = "disk-rot-pages".to_string();
    config.storage_latent_error_page_bytes = shoal_sim::disk::LINUX_PAGE_SIZE_BYTES;
    config
}

/// disk-rot-sharded: shards per replica, so each process runs the metadata
/// group on shard 0 beside four partition groups.
pub const DISK_ROT_SHARDED_SHARDS_PER_REPLICA: u16 = 2;
/// disk-rot-sharded: one client per partition group and two more (the
/// admin client that creates streams and topics comes on top).
pub const DISK_ROT_SHARDED_CLIENT_COUNT: u32 = 6;
/// disk-rot-sharded: checkpoints every few ops, so the metadata group
/// (which commits a few registers and creates) checkpoints too, and its
/// checkpoint can rot, and a partition group has a checkpoint to lose early.
pub const DISK_ROT_SHARDED_CHECKPOINT_INTERVAL_OPS: u64 = 4;
/// disk-rot-sharded: per prepare a primary sends the rot replica, the
/// chance to start the lost-vote plot (`sim::cluster::lost_vote`).
pub const PLOT_LOST_VOTE_PPM: u32 = 100_000;

/// disk-rot's damage on a process that also runs the metadata group: rot,
/// misdirected writes, lost writes and read errors reach the metadata
/// journal, superblock and checkpoint, which every process start replays
/// (`replay_metadata_group`) before any partition group opens.
pub fn disk_rot_sharded(seed: u64) -> RunConfig {
    let mut config = disk_rot(seed);
    config.scenario = "disk-rot-sharded".to_string();
    config.shards_per_replica = DISK_ROT_SHARDED_SHARDS_PER_REPLICA;
    config.client_count = DISK_ROT_SHARDED_CLIENT_COUNT;
    config.faults.plot_lost_vote_ppm = PLOT_LOST_VOTE_PPM;
    config.checkpoint_interval_ops = DISK_ROT_SHARDED_CHECKPOINT_INTERVAL_OPS;
    config
}

pub fn crash_loop(seed: u64) -> RunConfig {
    let mut config = base(seed, "crash-loop");
    config.faults.replica_crash_ppm = 2_000;
    config.faults.replica_pause_ppm = 1_000;
    config.faults.storage_lost_write_ppm = 30_000;
    // Every restart reads its whole journal: transient errors on the way.
    config.faults.storage_read_eio_ppm = STORAGE_READ_EIO_PPM_SWARM_MAX as u32 / 2;
    config.faults.restart_crash_ppm = RESTART_CRASH_PPM;
    config.faults.restart_storage_error_ppm = RESTART_STORAGE_ERROR_PPM;
    config.large_append_ppm = LARGE_APPEND_PPM;
    config
}

/// `crash_loop`, plus a failed fsync on the second step of a two-step
/// promise: the first step durable, the second in the page cache only,
/// which the restart after a process crash reads back (swarm seed 18237).
pub fn fsync_steps(seed: u64) -> RunConfig {
    let mut config = crash_loop(seed);
    config.scenario = "fsync-steps".to_string();
    config.faults.storage_second_sync_error_ppm = 10_000;
    config
}

/// disk-rot with partition fsyncs failing often: a segment's records read
/// back from the page cache at the restart that follows, and, with rot
/// drawn past them (`rot_partition`), a salvage that keeps them (disk-rot
/// seed 392, 1 in 12,000 of disk-rot before this scenario).
pub fn partition_fsync(seed: u64) -> RunConfig {
    let mut config = disk_rot(seed);
    config.scenario = "partition-fsync".to_string();
    config.faults.storage_partition_sync_error_ppm = PARTITION_SYNC_ERROR_PPM;
    // Every restart of the rot replica rots, and every rot that is not a
    // checkpoint's or a superblock's lands in a partition's segments.
    config.faults.storage_read_corruption_ppm = 1_000_000;
    config.faults.storage_partition_rot_ppm = 1_000_000;
    config
}

/// disk-rot where half the misdirected writes are armed on a partition's
/// active segment (`storage_partition_misdirect_ppm`).
pub fn partition_misdirect(seed: u64) -> RunConfig {
    let mut config = disk_rot(seed);
    config.scenario = "partition-misdirect".to_string();
    config.faults.storage_partition_misdirect_ppm = 500_000;
    config.partition_scrub_bytes_per_tick = SCRUB_BYTES_PER_TICK;
    config
}

/// What a node's scrubber checks per 10 ms tick (one group's log per tick)
/// where a running replica's partition log may be damaged
/// (`partition-misdirect`): one simulated segment, so a pass over a run's
/// logs takes a few ticks per group.
const SCRUB_BYTES_PER_TICK: u64 = shoal_sim::PARTITION_SEGMENT_SIZE_MAX_BYTES;

/// What the scrubber reads per tick in the swarm seeds that draw partition
/// misdirects: eight simulated segments. Swarm's large appends make logs of
/// several MB, and a run converges only once every group finished a pass
/// begun after the heal: at one segment per tick that took longer than
/// the liveness phase (swarm seeds 4088 and 4382, session 33).
const SWARM_SCRUB_BYTES_PER_TICK: u64 = 8 * shoal_sim::PARTITION_SEGMENT_SIZE_MAX_BYTES;

/// Storage actions that arm a failure of the next partition fsync, per
/// million (`partition-fsync`).
const PARTITION_SYNC_ERROR_PPM: u32 = 20_000;

pub fn shard_chaos(seed: u64) -> RunConfig {
    let mut config = base(seed, "shard-chaos");
    config.shards_per_replica = 4;
    // One client per partition group (GROUPS_PER_SHARD per shard).
    config.client_count = 8;
    config.faults.shard_inbox_full_ppm = 20_000;
    config.faults.shard_delivery_drop_ppm = 10_000;
    config.faults.shard_panic_ppm = 200;
    config.faults.network_delay_max_ns = 5 * NS_PER_MS;
    config.faults.restart_crash_ppm = RESTART_CRASH_PPM;
    config
}

/// The schedules that depose primaries: 5 replicas, partitions long enough
/// to force checkpoints and state transfer on the majority side while a
/// deposed primary keeps talking to a minority, crashes right after votes
/// and acks, messages redelivered after view changes, and disk wipes.
pub fn view_churn(seed: u64) -> RunConfig {
    let mut config = base(seed, "view-churn");
    config.replica_count = 5;
    // Three per group (metadata and two partitions) against a pipeline of
    // two: primaries pack queued requests.
    config.client_count = 9;
    config.pipeline_prepares_max = CHURN_PIPELINE_PREPARES_MAX;
    config.faults.network_partition_ppm = 4_000;
    config.faults.network_drop_ppm = 10_000;
    config.faults.network_delay_max_ns = 10 * NS_PER_MS;
    config.faults.replica_crash_ppm = 500;
    config.faults.protocol_crash_ppm = 5_000;
    config.faults.network_stale_redelivery_ppm = 3_000;
    // Four times the rate that first found the nack wedge (seed 1783 of
    // 0..2000): at 400 the CI range 0..1000 draws it by itself (seed 31).
    config.faults.replica_wipe_ppm = 400;
    config.faults.storage_rot_running_ppm = 1_000;
    config.faults.plot_wiped_acker_ppm = PLOT_WIPED_ACKER_PPM;
    config.faults.plot_deposed_primary_ppm = PLOT_DEPOSED_PRIMARY_PPM;
    config.faults.restart_crash_ppm = RESTART_CRASH_PPM;
    config
}

/// More clients than sessions: registers evict the least recently used
/// session, evicted clients give up their in-flight request and register
/// again, and every eviction must trace back to a committed register.
pub fn session_churn(seed: u64) -> RunConfig {
    let mut config = base(seed, "session-churn");
    config.client_count = 10;
    config.client_sessions_max = 4;
    config.pipeline_prepares_max = CHURN_PIPELINE_PREPARES_MAX;
    config.faults.replica_crash_ppm = 500;
    config.faults.network_partition_ppm = 1_000;
    config.faults.network_drop_ppm = 5_000;
    config.faults.protocol_crash_ppm = 2_000;
    config.faults.plot_wiped_acker_ppm = PLOT_WIPED_ACKER_PPM;
    config.faults.restart_crash_ppm = RESTART_CRASH_PPM;
    config
}

/// swarm-buggify: buggify sites that are on take their other path at this
/// rate (one call in four, as FoundationDB's BUGGIFY fires).
pub const BUGGIFY_FIRE_PPM: u32 = 250_000;

/// Swarm's config for the seed, with buggify on (`shoal_vsr::buggify`):
/// the same draw, so a seed's faults are swarm's; the schedule differs
/// wherever a site fires.
pub fn swarm_buggify(seed: u64) -> RunConfig {
    let mut config = swarm(seed);
    config.scenario = "swarm-buggify".to_string();
    config.buggify_ppm = BUGGIFY_FIRE_PPM;
    config
}

/// Swarm testing: every seed gets its own mix, so a sweep covers runs with
/// few fault kinds at high rates as well as many kinds at low rates.
pub fn swarm(seed: u64) -> RunConfig {
    let mut config = base(seed, "swarm");
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SWARM_SEED_SALT);
    config.client_count = 1 + (rng.next_u64() % u64::from(SWARM_CLIENT_COUNT_MAX)) as u32;
    config.shards_per_replica =
        SWARM_SHARDS_PER_REPLICA[(rng.next_u64() % SWARM_SHARDS_PER_REPLICA.len() as u64) as usize];
    let draw_field = |rng: &mut ChaCha8Rng, field: &FaultField, faults: &mut FaultMix| {
        // Draw both numbers for every field, so turning one field off does
        // not shift the draws of the fields after it.
        let enabled = rng.next_u64().is_multiple_of(2);
        let rate = 1 + rng.next_u64() % field.swarm_max.max(1);
        if enabled && field.swarm_max > 0 {
            (field.set)(faults, rate);
        }
    };
    let late = |field: &&FaultField| SWARM_LATE_FIELDS.contains(&field.name);
    let last = |field: &&FaultField| SWARM_LAST_FIELDS.contains(&field.name);
    let r#final = |field: &&FaultField| SWARM_FINAL_FIELDS.contains(&field.name);
    let newest = |field: &&FaultField| SWARM_SESSION_18_FIELDS.contains(&field.name);
    let session_28 = |field: &&FaultField| SWARM_SESSION_28_FIELDS.contains(&field.name);
    let session_30 = |field: &&FaultField| SWARM_SESSION_30_FIELDS.contains(&field.name);
    let session_32 = |field: &&FaultField| SWARM_SESSION_32_FIELDS.contains(&field.name);
    let early = |field: &&FaultField| {
        !late(field)
            && !last(field)
            && !r#final(field)
            && !newest(field)
            && !session_28(field)
            && !session_30(field)
            && !session_32(field)
    };
    for field in FAULT_FIELDS.iter().filter(early) {
        draw_field(&mut rng, field, &mut config.faults);
    }
    // Drawn after the faults, so the fault draws above stay what they were per seed.
    config.replica_count = SWARM_REPLICA_COUNTS[(rng.next_u64() % SWARM_REPLICA_COUNTS.len() as u64) as usize];
    config.client_sessions_max =
        SWARM_CLIENT_SESSIONS_MAX[(rng.next_u64() % SWARM_CLIENT_SESSIONS_MAX.len() as u64) as usize];
    for field in FAULT_FIELDS.iter().filter(late) {
        draw_field(&mut rng, field, &mut config.faults);
    }
    // Drawn last, so every draw above stays what it was per seed.
    config.pipeline_prepares_max =
        SWARM_PIPELINE_PREPARES_MAX[(rng.next_u64() % SWARM_PIPELINE_PREPARES_MAX.len() as u64) as usize];
    for field in FAULT_FIELDS.iter().filter(last) {
        draw_field(&mut rng, field, &mut config.faults);
    }
    // The workload's last knob, after every fault draw.
    let large_enabled = rng.next_u64().is_multiple_of(2);
    let large_rate = 1 + rng.next_u64() % SWARM_LARGE_APPEND_PPM_MAX;
    config.large_append_ppm = if large_enabled { large_rate as u32 } else { 0 };
    // After the workload: every draw above stays what it was per seed.
    config.checkpoint_chunks_per_answer_max =
        if rng.next_u64().is_multiple_of(2) { 1 } else { shoal_sim::CHECKPOINT_CHUNKS_PER_ANSWER_MAX };
    for field in FAULT_FIELDS.iter().filter(r#final) {
        draw_field(&mut rng, field, &mut config.faults);
    }
    // Last of all: one seed in four checkpoints as seldom as the journal
    // allows, so a prepare meets the window of a journal whose checkpoint
    // still runs beside the node, as the server's groups do.
    if rng.next_u64().is_multiple_of(4) {
        config.checkpoint_interval_ops = shoal_sim::CHECKPOINT_INTERVAL_OPS_LONGEST;
    }
    for field in FAULT_FIELDS.iter().filter(newest) {
        draw_field(&mut rng, field, &mut config.faults);
    }
    for field in FAULT_FIELDS.iter().filter(session_28) {
        draw_field(&mut rng, field, &mut config.faults);
    }
    for field in FAULT_FIELDS.iter().filter(session_30) {
        draw_field(&mut rng, field, &mut config.faults);
    }
    for field in FAULT_FIELDS.iter().filter(session_32) {
        draw_field(&mut rng, field, &mut config.faults);
    }
    if config.faults.storage_partition_misdirect_ppm > 0 {
        config.partition_scrub_bytes_per_tick = SWARM_SCRUB_BYTES_PER_TICK;
    }
    assert!(config.client_count >= 1 && config.client_count <= SWARM_CLIENT_COUNT_MAX);
    assert!(config.shards_per_replica >= 1 && config.shards_per_replica <= SWARM_SHARDS_PER_REPLICA_MAX);
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_fields_cover_every_fault_mix_field_in_order() {
        let json = serde_json::to_value(FaultMix::none()).unwrap();
        let names: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let mut ours: Vec<&str> = FAULT_FIELDS.iter().map(|field| field.name).collect();
        let mut theirs = names.clone();
        ours.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn fault_field_set_then_get_round_trips_each_field_alone() {
        for field in &FAULT_FIELDS {
            let mut mix = FaultMix::none();
            (field.set)(&mut mix, 1234);
            assert_eq!((field.get)(&mix), 1234, "{}", field.name);
            let others = FAULT_FIELDS.iter().filter(|other| other.name != field.name);
            assert!(others.clone().all(|other| (other.get)(&mix) == 0), "{} leaks into another field", field.name);
        }
    }

    #[test]
    fn every_scenario_builds_its_own_name_and_seed() {
        for scenario in &SCENARIOS {
            let config = scenario.config(42);
            assert_eq!(config.scenario, scenario.name);
            assert_eq!(config.seed, 42);
            if scenario.name.starts_with("swarm") {
                assert!(SWARM_REPLICA_COUNTS.contains(&config.replica_count));
            } else if scenario.name == "view-churn" {
                assert_eq!(config.replica_count, 5, "view-churn needs minorities that reach one member");
            } else {
                assert_eq!(config.replica_count, 3);
            }
            assert!(!config.record_trace);
            assert_eq!(config.buggify_ppm > 0, scenario.name == "swarm-buggify", "only swarm-buggify buggifies");
            assert_eq!(find(scenario.name).unwrap().name, scenario.name);
        }
        let (plain, buggified) = (swarm(42), swarm_buggify(42));
        assert_eq!(buggified.faults, plain.faults, "swarm-buggify draws swarm's faults");
        assert_eq!(buggified.replica_count, plain.replica_count);
        assert_eq!(steady(1).faults, FaultMix::none());
        assert_ne!(partition_storm(1).faults, FaultMix::none());
    }

    #[test]
    fn unknown_scenario_error_lists_the_known_names() {
        let error = find("nope").unwrap_err().to_string();
        assert!(error.contains("shoal-sim list") && error.contains("partition-storm"), "{error}");
    }

    #[test]
    fn swarm_is_a_function_of_the_seed_and_varies_across_seeds() {
        assert_eq!(swarm(7), swarm(7));
        let mixes: std::collections::BTreeSet<String> =
            (0..32).map(|seed| fault_mix_summary(&swarm(seed).faults)).collect();
        assert!(mixes.len() > 16, "swarm should give most seeds their own mix, got {}", mixes.len());
        // With p=1/2 per kind, 32 seeds all off (or all on) for one kind is ~1e-9.
        for field in &FAULT_FIELDS {
            let on = (0..32).filter(|seed| (field.get)(&swarm(*seed).faults) != 0).count();
            if field.swarm_max == 0 {
                assert_eq!(on, 0, "{} is not drawn", field.name);
                continue;
            }
            assert!(on > 0 && on < 32, "{} on in {on}/32 seeds", field.name);
            assert!((0..32).all(|seed| (field.get)(&swarm(seed).faults) <= field.swarm_max));
        }
    }

    #[test]
    fn swarm_scrubs_exactly_the_seeds_whose_partition_logs_take_misdirected_writes() {
        for seed in 0..64 {
            let config = swarm(seed);
            let misdirected = config.faults.storage_partition_misdirect_ppm > 0;
            assert_eq!(config.partition_scrub_bytes_per_tick > 0, misdirected, "swarm seed {seed}");
        }
    }

    #[test]
    fn fault_mix_summary_names_only_non_zero_knobs() {
        assert_eq!(fault_mix_summary(&FaultMix::none()), "no faults");
        let mut mix = FaultMix::none();
        mix.shard_panic_ppm = 5;
        assert_eq!(fault_mix_summary(&mix), "shard_panic_ppm=5");
    }
}
