//! The contract between the simulator and its front ends (`shoal-sim`, tests,
//! benchmarks): a `RunConfig` in, a `RunOutcome` out, nothing else shared.
//!
//! One run is one seed, one thread, virtual time. Every knob a shrinker may
//! turn (fault budget, clients, time, fault kinds) lives in `RunConfig`, so a
//! shrunk case is just another config that replays bit-for-bit.

use std::collections::BTreeMap;

/// Fault probabilities of one run, in parts per million per opportunity
/// (per message for network faults, per write for storage faults, per tick
/// for process faults). Swarm testing picks these from the seed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FaultMix {
    pub network_drop_ppm: u32,
    pub network_duplicate_ppm: u32,
    /// Extra random delay spreads deliveries out, which reorders them.
    pub network_delay_max_ns: u64,
    pub network_partition_ppm: u32,
    pub network_clog_ppm: u32,
    pub replica_crash_ppm: u32,
    pub replica_pause_ppm: u32,
    pub storage_torn_write_ppm: u32,
    pub storage_lost_write_ppm: u32,
    pub storage_read_corruption_ppm: u32,
    pub storage_misdirected_write_ppm: u32,
    pub storage_write_error_ppm: u32,
    pub shard_inbox_full_ppm: u32,
    pub shard_delivery_drop_ppm: u32,
    pub shard_panic_ppm: u32,
    /// Per tick: crash a replica and wipe its disk; it is reformatted and
    /// must rejoin without voting until it learned the current view.
    #[serde(default)]
    pub replica_wipe_ppm: u32,
    /// Per protocol moment (a view-change vote, do_view_change, start_view or
    /// prepare_ok just sent; a storage action just completed): crash there.
    #[serde(default)]
    pub protocol_crash_ppm: u32,
    /// Per replica-to-replica message: also deliver a copy much later
    /// (`STALE_REDELIVERY_*_NS`), typically after view changes.
    #[serde(default)]
    pub network_stale_redelivery_ppm: u32,
    /// Per tick, on the one replica whose disk may rot: a journal sector
    /// below the head goes bad while the replica runs (a latent sector error).
    #[serde(default)]
    pub storage_rot_running_ppm: u32,
    /// Per rot of the rot replica's disk while it is down (see
    /// `storage_read_corruption_ppm`): the chance it lands on a partition
    /// segment file (sealed or open) instead of the journal.
    #[serde(default)]
    pub storage_partition_rot_ppm: u32,
    /// Per prepare a primary sends to the next view's primary: start the
    /// "wiped acker" plot (`cluster::plot`), a targeted schedule that
    /// starves that replica of the op, isolates the primary once it
    /// committed, wipes the one other acker right after its do_view_change,
    /// and lets the old primary reach only the rejoining acker.
    #[serde(default)]
    pub plot_wiped_acker_ppm: u32,
    /// Per prepare a primary sends a backup (5 replicas): start the
    /// deposed-primary plot (`cluster::deposed`): the primary reaches only
    /// that backup, which reaches every other replica but the next primary.
    #[serde(default)]
    pub plot_deposed_primary_ppm: u32,
    /// Per start of a process in the safety phase (and per process at a new
    /// cluster's first format): a crash lands among the start's own storage
    /// calls (settle, superblock repair, journal open and repair, a
    /// format's steps); the process restarts again later.
    #[serde(default)]
    pub restart_crash_ppm: u32,
    /// Per start in the safety phase: one of the start's calls that change
    /// the disk fails with EIO; the process stops with the typed error, as
    /// the server does, and is started again later.
    #[serde(default)]
    pub restart_storage_error_ppm: u32,
    /// Per storage read of every replica's disk: it fails with EIO and
    /// returns nothing (a transient device error). The node retries
    /// (`shoal_vsr::io::READ_EIO_ATTEMPTS_MAX`), so it must cost nothing but
    /// time; off in the liveness phase.
    #[serde(default)]
    pub storage_read_eio_ppm: u32,
    /// Per prepare a primary sends the rot replica (3+ replicas): start the
    /// lost-vote plot (`cluster::lost_vote`): the rot replica, cut off,
    /// votes for a view the others never reach, crashes, loses its
    /// checkpoint of the group and rejoins below its own vote.
    #[serde(default)]
    pub plot_lost_vote_ppm: u32,
    /// Per storage action: the fsync after the next one that succeeds, on
    /// the same file, fails with EIO (`SimDisk::fail_second_sync`): the
    /// second step of a two-step promise. Off, it draws nothing, so a run
    /// without it keeps the random path it had before it existed.
    #[serde(default)]
    pub storage_second_sync_error_ppm: u32,
    /// Per storage action: the next fsync of a partition's file fails with
    /// EIO (`SimDisk::fail_next_sync_under`). A partition log fsyncs only
    /// before a checkpoint, so the drawn failures above rarely land on one.
    /// Off, it draws nothing.
    #[serde(default)]
    pub storage_partition_sync_error_ppm: u32,
    /// Per misdirected write drawn (`storage_misdirected_write_ppm`): the
    /// chance it is armed on the active segment of a partition's log
    /// instead of a journal or superblock, placed like partition rot (3+
    /// replicas, every peer holding its partition log). Only writes within
    /// a file's length go astray (`SimDisk`), so it takes the segment's
    /// next marker write (or a salvage's rewrite): the promise stays on the
    /// device as it was, and records elsewhere in the segment are
    /// overwritten. Off, it draws nothing.
    #[serde(default)]
    pub storage_partition_misdirect_ppm: u32,
}

impl FaultMix {
    pub fn none() -> FaultMix {
        FaultMix {
            network_drop_ppm: 0,
            network_duplicate_ppm: 0,
            network_delay_max_ns: 0,
            network_partition_ppm: 0,
            network_clog_ppm: 0,
            replica_crash_ppm: 0,
            replica_pause_ppm: 0,
            storage_torn_write_ppm: 0,
            storage_lost_write_ppm: 0,
            storage_read_corruption_ppm: 0,
            storage_misdirected_write_ppm: 0,
            storage_write_error_ppm: 0,
            shard_inbox_full_ppm: 0,
            shard_delivery_drop_ppm: 0,
            shard_panic_ppm: 0,
            replica_wipe_ppm: 0,
            protocol_crash_ppm: 0,
            network_stale_redelivery_ppm: 0,
            storage_rot_running_ppm: 0,
            storage_read_eio_ppm: 0,
            plot_lost_vote_ppm: 0,
            storage_second_sync_error_ppm: 0,
            storage_partition_sync_error_ppm: 0,
            storage_partition_misdirect_ppm: 0,
            storage_partition_rot_ppm: 0,
            plot_wiped_acker_ppm: 0,
            plot_deposed_primary_ppm: 0,
            restart_crash_ppm: 0,
            restart_storage_error_ppm: 0,
        }
    }
}

/// Which replica a scripted fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    Replica(u8),
    /// Whoever is primary (in the highest view among running replicas) when
    /// the fault fires.
    Primary,
    /// A backup of the current primary.
    Backup,
}

/// A fault placed by hand, at a virtual time, on top of the random mix:
/// the scenario tests use these to tell a story.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ScriptedFault {
    /// Crash the target (it restarts after `down_ns`). `Primary` waits for the
    /// first moment its pipeline holds uncommitted prepares.
    Crash { at_ns: u64, target: Target, down_ns: u64 },
    /// Crash every replica at once; all restart after `down_ns`.
    CrashAll { at_ns: u64, down_ns: u64 },
    /// Cut the target off from every other replica until `until_ns`
    /// (clients still reach it).
    Isolate { at_ns: u64, target: Target, until_ns: u64 },
    /// Crash the target, flip bits in a journal slot below its head, restart.
    CorruptSlot { at_ns: u64, target: Target },
}

impl FaultMix {
    /// Every fault class at once, at rates a 3-replica cluster must survive:
    /// the mix of the developer sweep (`examples/sweep.rs`) and of the test
    /// suite's seed sweeps.
    pub fn stormy() -> FaultMix {
        FaultMix {
            network_drop_ppm: 20_000,
            network_duplicate_ppm: 10_000,
            network_delay_max_ns: 20_000_000,
            network_partition_ppm: 5_000,
            network_clog_ppm: 2_000,
            replica_crash_ppm: 1_000,
            replica_pause_ppm: 1_000,
            storage_torn_write_ppm: 1_000,
            storage_write_error_ppm: 500,
            storage_read_corruption_ppm: 300_000,
            restart_crash_ppm: crate::cluster::RESTART_CRASH_PPM,
            restart_storage_error_ppm: crate::cluster::RESTART_STORAGE_ERROR_PPM,
            ..FaultMix::none()
        }
    }
}

impl RunConfig {
    /// The developer configuration: 3 replicas, 1 shard, 4 clients, 4 s of
    /// faults then up to 4 s to converge.
    pub fn developer(seed: u64, faults: FaultMix) -> RunConfig {
        RunConfig {
            seed,
            scenario: "dev".into(),
            replica_count: 3,
            shards_per_replica: 1,
            client_count: 4,
            safety_time_ns: 4_000_000_000,
            liveness_time_ns: 4_000_000_000,
            faults,
            fault_budget: None,
            record_trace: false,
            record_history: false,
            script: Vec::new(),
            client_sessions_max: default_client_sessions_max(),
            pipeline_prepares_max: default_pipeline_prepares_max(),
            large_append_ppm: 0,
            checkpoint_chunks_per_answer_max: default_checkpoint_chunks_per_answer_max(),
            checkpoint_interval_ops: default_checkpoint_interval_ops(),
            partition_segment_size_max_bytes: default_partition_segment_size_max_bytes(),
            storage_latent_error_page_bytes: 0,
            partition_scrub_bytes_per_tick: 0,
            buggify_ppm: 0,
        }
    }
}

/// Everything that decides a run. Same config ⇒ same trace hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    pub seed: u64,
    /// Scenario name, for reports and replay commands.
    pub scenario: String,
    pub replica_count: u8,
    pub shards_per_replica: u16,
    pub client_count: u32,
    /// Virtual time of the safety phase (faults on).
    pub safety_time_ns: u64,
    /// Bound of the liveness phase (faults off, all up): every replica must
    /// reach the same commit within it.
    pub liveness_time_ns: u64,
    pub faults: FaultMix,
    /// Stop injecting after this many faults (`None`: no limit). The shrinker
    /// lowers it.
    pub fault_budget: Option<u64>,
    /// Keep every trace event in `RunOutcome::trace` (costs memory).
    pub record_trace: bool,
    /// Keep the client-visible history in `RunOutcome::history` (costs
    /// memory; `replay --history` sets it).
    #[serde(default)]
    pub record_history: bool,
    /// Faults placed by hand, on top of the random mix.
    #[serde(default)]
    pub script: Vec<ScriptedFault>,
    /// Every group's session table size. Below `client_count` clients evict
    /// each other, and the eviction path runs all the time.
    #[serde(default = "default_client_sessions_max")]
    pub client_sessions_max: usize,
    /// Every primary's pipeline depth (1..=`PIPELINE_PREPARES_MAX`, the
    /// server's). Shallower than the clients per group, requests queue and
    /// primaries pack several into one prepare.
    #[serde(default = "default_pipeline_prepares_max")]
    pub pipeline_prepares_max: usize,
    /// Per partition append: the chance (ppm) that it is one message padded
    /// so its prepare fills the last sector of its journal slot. Without
    /// them every prepare fits one sector: a rot or a tear never lands in a
    /// body sector, and the journal's joined writes of full slots never run.
    #[serde(default)]
    pub large_append_ppm: u32,
    /// Checkpoint chunks per answer to a catch-up request
    /// (`ReplicaConfig::checkpoint_chunks_per_answer_max`). The simulated
    /// snapshots take a few 4 KiB frames, so with the server's 4 they fit
    /// one answer; with 1 a state transfer takes several answers, and the
    /// path that asks for the next piece runs.
    #[serde(default = "default_checkpoint_chunks_per_answer_max")]
    pub checkpoint_chunks_per_answer_max: usize,
    /// Ops between a group's checkpoints (`ReplicaConfig::checkpoint_interval_ops`)
    /// in its journal of `JOURNAL_SLOT_COUNT` slots. At `CHECKPOINT_INTERVAL_OPS`
    /// (16 of 64) a replica never prepares past the window its journal still
    /// has while a checkpoint runs beside the node; at
    /// `CHECKPOINT_INTERVAL_OPS_LONGEST` (31, the most 64 slots allow) it does
    /// 33 ops after a checkpoint begins, as a server run with its longest
    /// interval (976 of 1,024) does after 48, and the node waits for the
    /// checkpoint's end.
    #[serde(default = "default_checkpoint_interval_ops")]
    pub checkpoint_interval_ops: u64,
    /// Bytes per partition log segment (`PartitionLogConfig`); the
    /// server's 64 MiB never rolls in a simulated run.
    #[serde(default = "default_partition_segment_size_max_bytes")]
    pub partition_segment_size_max_bytes: u64,
    /// The unit a latent sector error damages, as the kernel's page cache
    /// sees it (0: one sector). At 4096 (Linux, 4 KiB pages and blocks) a
    /// read of any byte of a page that holds an unreadable sector fails, and
    /// a write that does not cover that whole page fails with EIO too (the
    /// kernel must read the page first); a whole-page write remaps it.
    #[serde(default)]
    pub storage_latent_error_page_bytes: u64,
    /// Bytes of partition log each node reads back and checks per tick, a
    /// group per tick in turn (`NodeConfig::scrub_bytes_per_tick`); 0 (the default) is off, so
    /// runs that do not ask keep the schedule they had before it existed.
    #[serde(default)]
    pub partition_scrub_bytes_per_tick: u64,
    /// Buggify (`shoal_vsr::buggify`): 0 (the default) is off; otherwise
    /// half the sites, chosen from the seed, take their other path at this
    /// rate (per million calls).
    #[serde(default)]
    pub buggify_ppm: u32,
}

fn default_partition_segment_size_max_bytes() -> u64 {
    crate::cluster::PARTITION_SEGMENT_SIZE_MAX_BYTES
}

fn default_checkpoint_interval_ops() -> u64 {
    crate::cluster::CHECKPOINT_INTERVAL_OPS
}

fn default_checkpoint_chunks_per_answer_max() -> usize {
    shoal_vsr::state_transfer::CHECKPOINT_CHUNKS_PER_ANSWER_MAX
}

fn default_client_sessions_max() -> usize {
    shoal_vsr::sessions::CLIENT_SESSIONS_MAX
}

fn default_pipeline_prepares_max() -> usize {
    shoal_vsr::replica::PIPELINE_PREPARES_MAX
}

/// Which checker failed, so a shrinker can ask "does it still fail the same way".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Checker {
    Agreement,
    CommitMonotonic,
    AckedWritesDurable,
    Linearizability,
    Routing,
    Recovery,
    Liveness,
    Determinism,
    /// A replica sent a message whose promise (a view, a log view, a
    /// prepare) was not yet durable on its disk.
    Promises,
    /// An assertion inside the code under test fired (a panic).
    Assertion,
    /// A process opened more files than its groups may hold
    /// (`shoal_shard::node::files_open_max`, its `RLIMIT_NOFILE`).
    OpenFiles,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    Pass,
    /// Exit code 2.
    SafetyViolation {
        checker: Checker,
        message: String,
        at_ns: u64,
    },
    /// Exit code 3.
    LivenessViolation {
        message: String,
    },
    /// Exit code 4. Produced by the front end, which catches the unwind.
    Panic {
        message: String,
    },
}

impl Verdict {
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Pass => 0,
            Verdict::SafetyViolation { .. } => 2,
            Verdict::LivenessViolation { .. } => 3,
            Verdict::Panic { .. } => 4,
        }
    }

    pub fn checker(&self) -> Option<Checker> {
        match self {
            Verdict::Pass => None,
            Verdict::SafetyViolation { checker, .. } => Some(checker.clone()),
            Verdict::LivenessViolation { .. } => Some(Checker::Liveness),
            Verdict::Panic { .. } => Some(Checker::Assertion),
        }
    }
}

/// One event of the run, as recorded in the trace (JSON lines on request).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceEvent {
    pub time_ns: u64,
    pub replica: Option<u8>,
    pub shard: Option<u16>,
    /// Short machine-readable kind: `send`, `deliver`, `drop`, `commit`,
    /// `view_change`, `crash`, `restart`, `partition`, `heal`, `fault`, …
    pub kind: String,
    pub detail: String,
}

/// A notable moment for the timeline of a run (replicas as lanes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimelineEvent {
    pub time_ns: u64,
    pub replica: u8,
    pub kind: TimelineKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TimelineKind {
    ViewChange,
    Crash,
    Restart,
    PartitionStart,
    PartitionEnd,
    Commit,
    Fault,
    Violation,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunOutcome {
    pub config: RunConfig,
    pub verdict: Verdict,
    pub ops_committed: u64,
    pub view_changes: u64,
    /// Faults injected, by kind (`network_drop`, `replica_crash`, …).
    pub faults_injected: BTreeMap<String, u64>,
    pub faults_injected_total: u64,
    /// Hash over every trace event: equal for equal configs.
    pub trace_hash: u64,
    pub events_processed: u64,
    pub virtual_time_ns: u64,
    /// Every event, when `record_trace` was set.
    pub trace: Vec<TraceEvent>,
    pub timeline: Vec<TimelineEvent>,
    /// The longest stretch of virtual time in which a quorum of replicas was
    /// up, unpaused and connected, a client waited, and no new op committed.
    #[serde(default)]
    pub availability_window_max_ns: u64,
    /// Such stretches of at least `AVAILABILITY_WINDOW_LISTED_MIN_NS`, in the
    /// order they ended.
    #[serde(default)]
    pub availability_windows: Vec<AvailabilityWindow>,
    /// The client-visible history, when `record_history` was set.
    #[serde(default)]
    pub history: Vec<HistoryEvent>,
    /// Coverage marks hit in this run, by name (see `shoal_vsr::marks`).
    #[serde(default)]
    pub marks: BTreeMap<String, u64>,
}

/// A window with a quorum up and connected, a client waiting, no commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AvailabilityWindow {
    /// Index of the VSR group (partition) that did not commit.
    pub group: usize,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl AvailabilityWindow {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }
}

/// What happened to one client operation, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryKind {
    /// The client started the operation.
    Invoke,
    /// It took effect; `offset` (append) or `reply` (metadata) says how.
    Ok,
    /// It definitely did not take effect (a metadata change the log rejected).
    Fail,
    /// Unknown: it may or may not have taken effect (the run ended with it in
    /// flight, or the client's session was evicted).
    Indeterminate,
}

/// One line of `replay --history`: see scenarios/README.md for the format.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HistoryEvent {
    #[serde(rename = "type")]
    pub kind: HistoryKind,
    pub client: u64,
    /// The client's request number (1, 2, ...): unique per client.
    pub request: u64,
    /// Index of the VSR group, and its namespace (the partition or the
    /// metadata group).
    pub group: usize,
    pub namespace: u64,
    /// `append` for a partition write, else the metadata operation.
    pub operation: String,
    /// Names the value: the appended batch's messages (each unique per
    /// client, request and index) separated by spaces, or the metadata request.
    pub payload: String,
    /// An append's batch, in order: message `i` lands at `offset + i`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    /// The log offset an acknowledged append's first message landed at.
    pub offset: Option<u64>,
    /// A metadata reply, in words.
    pub reply: Option<String>,
    pub invoke_ns: u64,
    /// Virtual time of the completion (`None` on an invoke line, and on an
    /// indeterminate one when the run ended first).
    pub complete_ns: Option<u64>,
}
