//! A 3-replica `shoal-server` cluster on loopback, and blocking load
//! generator threads that append to it through the client library.
//!
//! Shared by `shoal-bench-peers server` (issue 11's numbers) and shoal's row
//! in the peer table (`shoal.rs`). The servers run the production settings
//! (fsync before every acknowledgement, the default message and journal
//! limits); only pinning is off, because three replicas share two cores.
//! Every process is owned by a `cluster::Cluster` guard: dropped (error,
//! panic, Ctrl-C), it kills them and removes the data.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shoal_client::{Client, ClientConfig, ReadAnswer};
use shoal_shard::namespace::Namespace;
use shoal_vsr::sessions::CLIENT_SESSIONS_MAX;

use crate::cluster::{Cluster, free_ports};
use crate::error::BenchError;

/// Replicas of the comparison clusters (the peers run 3 nodes too).
pub const REPLICA_COUNT_DEFAULT: u8 = 3;
const CLUSTER: u128 = 0xbe7c_4a11;
const STREAM: u32 = 1;
const TOPIC: u32 = 1;
/// The first client id; every client after it gets the next (`fresh_client_config`).
const FIRST_CLIENT: u64 = 1;
/// Clients one partition group serves at once: half the session table, so a
/// re-registration never evicts a live load thread.
pub const CLIENTS_PER_PARTITION_MAX: usize = CLIENT_SESSIONS_MAX / 2;
/// Highest latency the histograms resolve; an append past it has failed.
pub const LATENCY_US_MAX: u64 = 120_000_000;
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// The slot size the benchmarks give replicas: 1 KiB messages fit many times over.
pub const MESSAGE_SIZE_MAX_BYTES_DEFAULT: u32 = 64 * 1024;
/// Bound on one metrics scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between health probes while the cluster starts.
const START_PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// The `shoal-server` a default build leaves: `$CARGO_TARGET_DIR/release`.
pub fn default_server_binary() -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench-peers lives in the workspace").join("target"),
        PathBuf::from,
    );
    target_dir.join("release").join("shoal-server")
}

#[derive(Debug, Clone)]
pub struct ShoalSettings {
    pub server_binary: PathBuf,
    pub dir: PathBuf,
    pub shards_per_replica_count: usize,
    pub partitions_count: u32,
    /// Replicas (1: no replication, the fsync of one replica before the ack).
    pub replica_count: u8,
    /// `--message-size-max` of every replica (the journal slot size).
    pub message_size_max_bytes: u32,
    /// `--journal-slot-count` of every replica; `None`: the server's default.
    pub journal_slot_count: Option<u64>,
    /// `--pipeline-prepares-max` of every replica; `None`: the server's default.
    pub pipeline_prepares_max: Option<usize>,
    /// `--checkpoint-interval-ops` of every replica; `None`: the server's default.
    pub checkpoint_interval_ops: Option<u64>,
    /// `--scrub-bytes-per-second` of every replica; `None`: the server's default.
    pub scrub_bytes_per_second: Option<u64>,
    pub start_timeout: Duration,
    /// Bound on one append (the client's request timeout).
    pub append_timeout: Duration,
    /// The clients' tick (`ClientConfig::tick`); `None`: the library default.
    /// Timeouts keep their wall-clock length whatever the tick.
    pub client_tick: Option<Duration>,
    pub keep_dir: bool,
}

#[derive(Debug)]
pub struct ShoalCluster {
    cluster: Cluster,
    client_addresses: Vec<SocketAddr>,
    metrics_addresses: Vec<SocketAddr>,
    settings: ShoalSettings,
    next_client: AtomicU64,
}

/// What the start-up probe appends to every partition (not a workload message).
pub const PROBE_PAYLOAD: &[u8] = b"probe";

pub fn partition(index: u32) -> Namespace {
    Namespace::partition(STREAM, TOPIC, index).expect("benchmark partitions are in range")
}

impl ShoalCluster {
    /// Format, start and wait until the metadata group created the topic
    /// and every partition acknowledged an append.
    pub fn start(settings: ShoalSettings) -> Result<ShoalCluster, BenchError> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        if settings.shards_per_replica_count == 0 || settings.shards_per_replica_count > cores {
            return Err(BenchError::client(
                "shoal",
                "start",
                format!("{} shards per replica on {cores} cores: pick 1..={cores}", settings.shards_per_replica_count),
            ));
        }
        let mut cluster = Cluster::create(settings.dir.clone(), settings.keep_dir)?;
        let replica_count = settings.replica_count;
        let count = usize::from(replica_count);
        let ports = free_ports(3 * count)?;
        let address = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let replica_addresses: Vec<SocketAddr> = ports[..count].iter().copied().map(address).collect();
        let client_addresses: Vec<SocketAddr> = ports[count..2 * count].iter().copied().map(address).collect();
        let metrics_addresses: Vec<SocketAddr> = ports[2 * count..].iter().copied().map(address).collect();
        let list = replica_addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        for replica in 0..replica_count {
            let data_dir = cluster.dir().join(format!("replica-{replica}"));
            format_data_dir(&settings.server_binary, &data_dir, replica, replica_count)?;
            let mut command = Command::new(&settings.server_binary);
            command
                .arg("start")
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--cluster", &CLUSTER.to_string(), "--replica", &replica.to_string()])
                .args(["--replica-count", &replica_count.to_string(), "--replica-addresses", &list])
                .args(["--client-address", &client_addresses[usize::from(replica)].to_string()])
                .args(["--metrics-address", &metrics_addresses[usize::from(replica)].to_string()])
                // Three replicas share the machine's cores: pinning each one's
                // shards to the same CPUs would only stack them.
                .args(["--cpu-allocation", &format!("0-{}", settings.shards_per_replica_count - 1), "--no-pin"])
                // The default journal geometry (1 MiB slots) preallocates and
                // zero-fills 1 GiB per partition group at format: too slow
                // and too large for a benchmark that creates clusters.
                .args(["--message-size-max", &settings.message_size_max_bytes.to_string()])
                .args(settings.journal_slot_count.map(|count| format!("--journal-slot-count={count}")))
                .args(settings.pipeline_prepares_max.map(|depth| format!("--pipeline-prepares-max={depth}")))
                .args(settings.checkpoint_interval_ops.map(|ops| format!("--checkpoint-interval-ops={ops}")))
                .args(settings.scrub_bytes_per_second.map(|bytes| format!("--scrub-bytes-per-second={bytes}")))
                .env("RUST_LOG", std::env::var("SHOAL_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()));
            cluster.spawn(&format!("replica-{replica}"), command)?;
        }
        let shoal = ShoalCluster {
            cluster,
            client_addresses,
            metrics_addresses,
            settings,
            next_client: AtomicU64::new(FIRST_CLIENT),
        };
        shoal.wait_until_writable()?;
        Ok(shoal)
    }

    /// Mean latency until durable of each storage action on `replica`, from
    /// its `GET /metrics` (`shoal_storage_latency_seconds` sums and counts):
    /// `(action, count, mean_ms)`.
    pub fn storage_latency(&self, replica: usize) -> Result<Vec<StorageLatency>, BenchError> {
        Ok(storage_latency_in(&self.scrape(replica)?))
    }

    /// `replica`'s work counters now (`GET /metrics`); the difference of two
    /// is what a phase cost it.
    pub fn counters(&self, replica: usize) -> Result<ServerCounters, BenchError> {
        Ok(ServerCounters::of_scrape(&self.scrape(replica)?))
    }

    /// `replica`'s messages dropped by its groups' replicas so far, by
    /// reason (`shoal_replica_drops`, summed over shards).
    pub fn replica_drops(&self, replica: usize) -> Result<Vec<(String, u64)>, BenchError> {
        let scrape = self.scrape(replica)?;
        let mut drops: Vec<(String, u64)> = Vec::new();
        for line in scrape.lines() {
            let Some(rest) = line.strip_prefix("shoal_replica_drops{reason=\"") else { continue };
            let Some((reason, rest)) = rest.split_once('"') else { continue };
            let Some(count) = rest.rsplit(' ').next().and_then(|value| value.parse::<f64>().ok()) else { continue };
            match drops.iter_mut().find(|(known, _)| known == reason) {
                Some((_, total)) => *total += count as u64,
                None => drops.push((reason.to_owned(), count as u64)),
            }
        }
        Ok(drops)
    }

    /// `replica`'s heap allocations and bytes allocated so far (its
    /// `shoal_process_allocations_total` and `_allocated_bytes_total`).
    pub fn allocations(&self, replica: usize) -> Result<(u64, u64), BenchError> {
        let text = self.scrape(replica)?;
        let value = |series: &str| {
            text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
        };
        match (value("shoal_process_allocations_total"), value("shoal_process_allocated_bytes_total")) {
            (Some(count), Some(bytes)) => Ok((count, bytes)),
            _ => {
                Err(BenchError::client("shoal", "scrape metrics", "no shoal_process_allocations_total: an old server?"))
            }
        }
    }

    /// The text of `replica`'s `GET /metrics`.
    fn scrape(&self, replica: usize) -> Result<String, BenchError> {
        let address = self.metrics_addresses[replica];
        let scrape_error = |error: std::io::Error| BenchError::client("shoal", "scrape metrics", error);
        let mut stream = TcpStream::connect_timeout(&address, SCRAPE_TIMEOUT).map_err(scrape_error)?;
        stream.set_read_timeout(Some(SCRAPE_TIMEOUT)).map_err(scrape_error)?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").map_err(scrape_error)?;
        let mut text = String::new();
        stream.read_to_string(&mut text).map_err(scrape_error)?;
        Ok(text)
    }

    pub fn replica_count(&self) -> u8 {
        self.settings.replica_count
    }

    pub fn pids(&self) -> Vec<u32> {
        self.cluster.pids()
    }

    pub fn client_config(&self, client: u128) -> ClientConfig {
        let mut config = ClientConfig::new(CLUSTER, self.client_addresses.clone()).with_client_id(client);
        let default_tick = config.tick;
        let retry_timeout = default_tick * u32::try_from(config.retry_timeout_ticks).unwrap_or(u32::MAX);
        config.tick = self.settings.client_tick.unwrap_or(default_tick);
        let ticks_in = |span: Duration| {
            u64::try_from(span.as_micros() / config.tick.as_micros().max(1)).unwrap_or(u64::MAX).max(1)
        };
        config.request_timeout_ticks = ticks_in(self.settings.append_timeout);
        config.retry_timeout_ticks = ticks_in(retry_timeout);
        config
    }

    /// A client with an id no earlier client of this cluster had: a new
    /// `Client` reusing an id would start its session over at request 0,
    /// which the group takes for an old, already answered request (it waits
    /// for no reply: ids must be unique per client instance).
    pub fn fresh_client_config(&self) -> ClientConfig {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        self.client_config(u128::from(id))
    }

    fn wait_until_writable(&self) -> Result<(), BenchError> {
        let started = Instant::now();
        let mut last_error = String::from("no attempt yet");
        while started.elapsed() < self.settings.start_timeout {
            match self.create_topic_and_probe() {
                Ok(()) => return Ok(()),
                Err(error) => last_error = error,
            }
            std::thread::sleep(START_PROBE_INTERVAL);
        }
        Err(BenchError::NotHealthy {
            system: "shoal".to_owned(),
            waited_s: self.settings.start_timeout.as_secs(),
            last_error,
        })
    }

    fn create_topic_and_probe(&self) -> Result<(), String> {
        let mut admin = Client::new(self.fresh_client_config()).map_err(|error| error.to_string())?;
        // A retried create after a lost reply is refused as a duplicate: fine.
        let _ = admin.create_stream(STREAM, "bench");
        let _ = admin.create_topic(STREAM, TOPIC, "appends", self.settings.partitions_count);
        for index in 0..self.settings.partitions_count {
            admin
                .append(partition(index), PROBE_PAYLOAD)
                .map_err(|error| format!("probe partition {index}: {error}"))?;
        }
        Ok(())
    }
}

/// One replica's work counters (`shoal_*_total` of its `GET /metrics`),
/// whole-process: what tells where a phase's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ServerCounters {
    /// Ops committed (a packed op once).
    pub ops: u64,
    /// Client requests committed (each request of a packed op).
    pub requests: u64,
    /// Journal flushes (one fdatasync each) and the prepares they made durable.
    pub journal_flushes: u64,
    pub flushed_prepares: u64,
    /// Serving-loop turns and the frames they handled.
    pub turns: u64,
    pub turn_frames: u64,
}

impl ServerCounters {
    fn of_scrape(scrape: &str) -> ServerCounters {
        let value = |name: &str| -> u64 {
            scrape
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
                .map_or(0, |value| value as u64)
        };
        ServerCounters {
            ops: value("shoal_commits_total"),
            requests: value("shoal_committed_requests_total"),
            journal_flushes: value("shoal_journal_flushes_total"),
            flushed_prepares: value("shoal_flushed_prepares_total"),
            turns: value("shoal_turns_total"),
            turn_frames: value("shoal_turn_frames_total"),
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &ServerCounters) -> ServerCounters {
        ServerCounters {
            ops: self.ops.saturating_sub(earlier.ops),
            requests: self.requests.saturating_sub(earlier.requests),
            journal_flushes: self.journal_flushes.saturating_sub(earlier.journal_flushes),
            flushed_prepares: self.flushed_prepares.saturating_sub(earlier.flushed_prepares),
            turns: self.turns.saturating_sub(earlier.turns),
            turn_frames: self.turn_frames.saturating_sub(earlier.turn_frames),
        }
    }

    /// One line for a phase of `seconds`: rates and ratios.
    pub fn describe(&self, seconds: f64) -> String {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let rate = |a: u64| a as f64 / seconds.max(f64::MIN_POSITIVE);
        format!(
            "{:.0} ops/s, {:.0} requests/s ({:.2} requests/op), {:.0} journal flushes/s ({:.2} prepares/flush), \
             {:.0} turns/s ({:.1} frames/turn)",
            rate(self.ops),
            rate(self.requests),
            ratio(self.requests, self.ops),
            rate(self.journal_flushes),
            ratio(self.flushed_prepares, self.journal_flushes),
            rate(self.turns),
            ratio(self.turn_frames, self.turns),
        )
    }

    pub fn requests_per_op(&self) -> f64 {
        if self.ops == 0 { 0.0 } else { self.requests as f64 / self.ops as f64 }
    }
}

/// `(action, count, mean_ms)` per `shoal_storage_latency_seconds{action}` in a scrape.
/// One storage action's latency on one replica, from start to durable
/// (`shoal_storage_latency_seconds`).
#[derive(Debug, Clone, PartialEq)]
pub struct StorageLatency {
    pub action: String,
    pub count: u64,
    pub mean_ms: f64,
    /// From the histogram's buckets (powers of two), so a bound, not a value.
    pub p99_ms: Option<f64>,
}

fn storage_latency_in(scrape: &str) -> Vec<StorageLatency> {
    let value = |series: &str| -> Option<f64> {
        scrape.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    };
    let mut out = Vec::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("shoal_storage_latency_seconds_count{action=\"") else { continue };
        let Some((action, _)) = rest.split_once('"') else { continue };
        let labels = format!("{{action=\"{action}\"}}");
        let count = value(&format!("shoal_storage_latency_seconds_count{labels}")).unwrap_or(0.0);
        let sum = value(&format!("shoal_storage_latency_seconds_sum{labels}")).unwrap_or(0.0);
        if count > 0.0 {
            let p99_ms = bucket_quantile_ms(scrape, action, count, 0.99);
            out.push(StorageLatency {
                action: action.to_owned(),
                count: count as u64,
                mean_ms: sum / count * 1e3,
                p99_ms,
            });
        }
    }
    out
}

/// The upper bound (ms) of the first bucket of `action`'s histogram whose
/// cumulative count reaches `quantile` of `count`: the quantile rounded up
/// to a bucket bound (the buckets double), `None` past the last finite one.
fn bucket_quantile_ms(scrape: &str, action: &str, count: f64, quantile: f64) -> Option<f64> {
    let action_label = format!("action=\"{action}\"");
    let mut buckets: Vec<(f64, f64)> = scrape
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("shoal_storage_latency_seconds_bucket{")?;
            let (labels, value) = rest.split_once('}')?;
            // The encoder puts `le` before or after the family's labels.
            let mut le = None;
            let mut ours = false;
            for label in labels.split(',') {
                ours |= label == action_label;
                le = le.or_else(|| label.strip_prefix("le=\"")?.strip_suffix('"')?.parse::<f64>().ok());
            }
            let cumulative: f64 = value.trim().parse().ok()?;
            ours.then_some((le?, cumulative))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let wanted = quantile * count;
    buckets.iter().find(|(le, cumulative)| *cumulative >= wanted && le.is_finite()).map(|(le, _)| le * 1e3)
}

fn format_data_dir(binary: &Path, data_dir: &Path, replica: u8, replica_count: u8) -> Result<(), BenchError> {
    let output = Command::new(binary)
        .args(["format", "--cluster", &CLUSTER.to_string(), "--replica", &replica.to_string()])
        .args(["--replica-count", &replica_count.to_string()])
        .arg(data_dir)
        .output()
        .map_err(|source| BenchError::Spawn { program: binary.display().to_string(), source })?;
    if !output.status.success() {
        return Err(BenchError::client("shoal", "format", String::from_utf8_lossy(&output.stderr).into_owned()));
    }
    Ok(())
}

pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("static histogram bounds are valid")
}

pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, LATENCY_US_MAX);
    histogram.record(latency_us).expect("clamped into the histogram's range");
}

/// `latency` once for each of `count` messages that waited it.
pub fn record_n(histogram: &mut Histogram<u64>, latency: Duration, count: u64) {
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, LATENCY_US_MAX);
    histogram.record_n(latency_us, count).expect("clamped into the histogram's range");
}

/// What `clients_count` threads, each one append in flight, achieved.
#[derive(Debug)]
pub struct LoadResult {
    pub messages_count: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

/// Run `clients_count` blocking clients, client `i` appending `payload(n)`
/// messages to partition `i % partitions` one at a time, until `duration`
/// ends. Latency is per append, issue to acknowledgement.
pub fn run_load(
    shoal: &ShoalCluster,
    clients_count: usize,
    duration: Duration,
    payload: &(dyn Fn(u64) -> Vec<u8> + Sync),
) -> Result<LoadResult, BenchError> {
    let partitions = shoal.settings.partitions_count;
    let per_partition = clients_count.div_ceil(partitions as usize);
    if per_partition > CLIENTS_PER_PARTITION_MAX {
        return Err(BenchError::client(
            "shoal",
            "load",
            format!(
                "{clients_count} clients on {partitions} partitions is {per_partition} sessions per group: \
                 at most {CLIENTS_PER_PARTITION_MAX}; raise --partitions"
            ),
        ));
    }
    drive_clients(shoal, clients_count, duration, "append", |index, client, target, count| {
        let message = payload((index as u64) << 40 | count);
        client.append(target, &message)?;
        Ok(1)
    })
}

/// `count` blocking clients (a session each, client `i` on partition
/// `i % partitions`), each calling `round(i, client, partition, sent)` until
/// `duration` ends; `round` returns how many messages its one request
/// carried, and each of them is counted with that request's latency.
fn drive_clients(
    shoal: &ShoalCluster,
    count: usize,
    duration: Duration,
    what: &'static str,
    round: impl Fn(usize, &mut Client, Namespace, u64) -> Result<u64, shoal_client::ClientError> + Sync,
) -> Result<LoadResult, BenchError> {
    let partitions = shoal.settings.partitions_count;
    let started = Instant::now();
    let round = &round;
    let results: Vec<Result<(u64, Histogram<u64>), String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..count)
            .map(|index| {
                let config = shoal.fresh_client_config();
                scope.spawn(move || {
                    let mut client = Client::new(config).map_err(|error| error.to_string())?;
                    let target = partition((index % partitions as usize) as u32);
                    let mut latency_us = latency_histogram();
                    let mut sent = 0u64;
                    while started.elapsed() < duration {
                        let issued = Instant::now();
                        let messages = round(index, &mut client, target, sent)
                            .map_err(|error| format!("client {index}: {error}"))?;
                        record_n(&mut latency_us, issued.elapsed(), messages);
                        sent += messages;
                    }
                    Ok((sent, latency_us))
                })
            })
            .collect();
        threads.into_iter().map(|thread| thread.join().unwrap_or_else(|_| Err("load thread panicked".into()))).collect()
    });
    let elapsed = started.elapsed();
    let mut total = LoadResult { messages_count: 0, elapsed, latency_us: latency_histogram() };
    for result in results {
        let (sent, latency_us) = result.map_err(|message| BenchError::client("shoal", what, message))?;
        total.messages_count += sent;
        total.latency_us.add(&latency_us).expect("histograms of equal bounds");
    }
    Ok(total)
}

/// Many in flight the way a Kafka producer keeps them: `producers` blocking
/// clients (a session each), producer `i` appending batches of
/// `batch_messages` messages to partition `i % partitions`, one batch in
/// flight each, until `duration` ends: `producers * batch_messages`
/// messages in flight reach the cluster as `producers` requests. Latency
/// is per message, issue of its batch to acknowledgement (each batch's
/// latency counted once per message).
pub fn run_producers(
    shoal: &ShoalCluster,
    producers: usize,
    batch_messages: usize,
    duration: Duration,
    payload: &(dyn Fn(u64) -> Vec<u8> + Sync),
) -> Result<LoadResult, BenchError> {
    drive_clients(shoal, producers, duration, "append batch", |index, client, target, sent| {
        let batch: Vec<Vec<u8>> =
            (0..batch_messages as u64).map(|i| payload((index as u64) << 40 | (sent + i))).collect();
        client.append_batch(target, &batch)?;
        Ok(batch_messages as u64)
    })
}

/// One blocking client appending batches of `batch_messages` messages to
/// partition 0 (one request each, one in flight) until `duration` ends.
/// Latency is per batch, issue to acknowledgement; `messages_count` counts
/// messages. Also returns the partition's end after the last batch.
pub fn run_batches(
    shoal: &ShoalCluster,
    batch_messages: usize,
    duration: Duration,
    payload: &(dyn Fn(u64) -> Vec<u8> + Sync),
) -> Result<(LoadResult, u64), BenchError> {
    let append_error = |error: String| BenchError::client("shoal", "append batch", error);
    let mut client = Client::new(shoal.fresh_client_config()).map_err(|error| append_error(error.to_string()))?;
    let mut latency_us = latency_histogram();
    let mut messages_count = 0u64;
    let mut end = 0;
    let started = Instant::now();
    for batch_index in 0u64.. {
        if started.elapsed() >= duration {
            break;
        }
        let batch: Vec<Vec<u8>> = (0..batch_messages as u64).map(|i| payload(messages_count + i)).collect();
        let issued = Instant::now();
        let reply = client
            .append_batch(partition(0), &batch)
            .map_err(|error| append_error(format!("batch {batch_index}: {error}")))?;
        record(&mut latency_us, issued.elapsed());
        messages_count += batch_messages as u64;
        end = reply.first_offset + u64::from(reply.count);
    }
    Ok((LoadResult { messages_count, elapsed: started.elapsed(), latency_us }, end))
}

/// What one reader achieved: messages and bytes of payload read, and the
/// latency of each read request.
#[derive(Debug)]
pub struct ReadResult {
    pub messages_count: u64,
    pub payload_bytes: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

/// How a reader reads: how many reads it keeps in flight, and when it stops.
#[derive(Debug, Clone, Copy)]
pub struct ReadPlan {
    /// Messages one read asks for at most (the reply bound may cut it).
    pub count_max: u32,
    /// Reads in flight at once (1: each waits for the last one's answer).
    pub in_flight: usize,
    pub duration: Duration,
    /// Stop after reading `[0, end)` once (a read that misses the page
    /// cache only the first time), even before `duration`.
    pub one_pass: bool,
}

/// One blocking client reading partition 0 from `replica` by offset, from
/// offset 0 to `end` and over again, until the plan ends. The first read
/// learns how many messages one reply holds; then the reader keeps
/// `in_flight` reads of that many going at consecutive offsets (a reply
/// that holds fewer is followed by a read of the rest). Every answer must be
/// the messages asked for.
pub fn run_reads(shoal: &ShoalCluster, replica: u8, end: u64, plan: ReadPlan) -> Result<ReadResult, BenchError> {
    let read_error = |error: String| BenchError::client("shoal", "read", error);
    assert!(end > 0 && plan.in_flight >= 1);
    let in_flight_max = plan.in_flight.min(shoal_client::READS_IN_FLIGHT_MAX);
    let mut client = Client::new(shoal.fresh_client_config()).map_err(|error| read_error(error.to_string()))?;
    let mut result =
        ReadResult { messages_count: 0, payload_bytes: 0, elapsed: Duration::ZERO, latency_us: latency_histogram() };
    // read id -> (offset, messages asked, sent at)
    let mut pending: std::collections::BTreeMap<u64, (u64, u32, Instant)> = std::collections::BTreeMap::new();
    let mut per_read = plan.count_max;
    let mut next_offset = 0u64;
    let mut passes = 0u64;
    let mut learned = false;
    let started = Instant::now();
    loop {
        let issuing = started.elapsed() < plan.duration && !(plan.one_pass && passes > 0);
        let window = if learned { in_flight_max } else { 1 };
        while issuing && pending.len() < window && !(plan.one_pass && passes > 0) {
            let count = u64::from(per_read).min(end - next_offset) as u32;
            let read_id = client
                .send_read(partition(0), replica, next_offset, count)
                .map_err(|error| read_error(error.to_string()))?;
            pending.insert(read_id, (next_offset, count, Instant::now()));
            next_offset += u64::from(count);
            if next_offset >= end {
                next_offset = 0;
                passes += 1;
            }
        }
        if pending.is_empty() {
            break;
        }
        let (read_id, answer) = client.next_read_answer().map_err(|error| read_error(error.to_string()))?;
        let (offset, asked, sent) = pending.remove(&read_id).expect("an answer names a read in flight");
        record(&mut result.latency_us, sent.elapsed());
        let ReadAnswer::Messages { first_offset, messages, .. } = answer else {
            return Err(read_error(format!("offset {offset} of {end} committed: {answer:?}")));
        };
        if first_offset != offset || messages.len() > asked as usize {
            return Err(read_error(format!(
                "asked {asked} from offset {offset}, answered {} from {first_offset}",
                messages.len()
            )));
        }
        result.messages_count += messages.len() as u64;
        result.payload_bytes += messages.iter().map(|m| m.len() as u64).sum::<u64>();
        if !learned {
            // One reply's worth: every later read asks for that many.
            per_read = messages.len() as u32;
            learned = true;
        }
        if messages.len() < asked as usize {
            let rest_offset = offset + messages.len() as u64;
            let rest = asked - messages.len() as u32;
            let read_id = client
                .send_read(partition(0), replica, rest_offset, rest)
                .map_err(|error| read_error(error.to_string()))?;
            pending.insert(read_id, (rest_offset, rest, Instant::now()));
        }
    }
    result.elapsed = started.elapsed();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_a_scrape_and_subtracted() {
        let before = ServerCounters::of_scrape("shoal_commits_total 10\nshoal_committed_requests_total 40\n");
        let after = ServerCounters::of_scrape(
            "# HELP shoal_commits Ops\nshoal_commits_total 20\nshoal_committed_requests_total 100\n\
             shoal_turns_total 4\nshoal_turn_frames_total 12\n",
        );
        let phase = after.since(&before);
        assert_eq!((phase.ops, phase.requests, phase.turns, phase.turn_frames), (10, 60, 4, 12));
        assert_eq!(phase.requests_per_op(), 6.0);
        let line = phase.describe(2.0);
        assert!(line.contains("6.00 requests/op") && line.contains("3.0 frames/turn"), "{line}");
    }

    #[test]
    fn storage_latency_is_the_mean_and_the_p99_bucket_of_each_action() {
        let scrape = "# HELP x\n\
            shoal_storage_latency_seconds_sum{action=\"write_prepare\"} 0.5\n\
            shoal_storage_latency_seconds_count{action=\"write_prepare\"} 100\n\
            shoal_storage_latency_seconds_bucket{action=\"write_prepare\",le=\"0.001\"} 3\n\
            shoal_storage_latency_seconds_bucket{le=\"0.004\",action=\"write_prepare\"} 99\n\
            shoal_storage_latency_seconds_bucket{action=\"write_prepare\",le=\"0.002\"} 98\n\
            shoal_storage_latency_seconds_bucket{action=\"write_prepare\",le=\"+Inf\"} 100\n\
            shoal_storage_latency_seconds_sum{action=\"checkpoint\"} 0\n\
            shoal_storage_latency_seconds_count{action=\"checkpoint\"} 0\n";
        let latency = storage_latency_in(scrape);
        assert_eq!(latency.len(), 1, "{latency:?}");
        assert_eq!(latency[0].action, "write_prepare");
        assert_eq!(latency[0].count, 100);
        assert!((latency[0].mean_ms - 5.0).abs() < 1e-9);
        assert_eq!(latency[0].p99_ms, Some(4.0), "the first bucket (in bound order) holding 99 of 100");
    }
}
