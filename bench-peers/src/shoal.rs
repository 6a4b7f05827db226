//! shoal's rows in the peer table: 3 `shoal-server` replicas
//! (`shoal_cluster`), appends through the blocking client library.
//!
//! The client allows one request in flight per session, so "N in flight" is
//! N worker threads, each with its own client (session), taking appends from
//! one queue, and each sends what it takes as one batch (`take_batch`: the
//! next append and all queued behind it, as a producer with no linger
//! does), so many appends in flight reach the cluster as a few requests;
//! the workload's futures wait on a oneshot each. Workers spread
//! over `ceil(N / CLIENTS_PER_PARTITION_MAX)` partitions of one topic, since
//! one partition group's session table holds only so many clients: shoal's
//! rows are therefore appends to several partition logs, the peers' to one
//! stream or key range. Reads: one more client reads every partition in
//! turn, from offset 0, from one replica (`READ_REPLICA`, a backup in view
//! 0: any replica serves committed offsets, outside consensus), with
//! `Client::read` (one request in flight, each answer up to a megabyte).
//! The warm-up and probe appends the driver made itself are skipped.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};

use shoal_client::{Client, ReadAnswer};

use crate::error::{BenchError, Unavailable};
use crate::shoal_cluster::{
    CLIENTS_PER_PARTITION_MAX, MESSAGE_SIZE_MAX_BYTES_DEFAULT, PROBE_PAYLOAD, REPLICA_COUNT_DEFAULT, ShoalCluster,
    ShoalSettings, partition,
};
use crate::system::{ReadBatch, StartSettings, System};
use crate::workload::payload_index;
use shoal_shard::message_batch::{BATCH_HEADER_SIZE_BYTES, BATCH_MESSAGE_OVERHEAD_BYTES, BATCH_MESSAGES_MAX};
use shoal_vsr::header::HEADER_SIZE_BYTES;

/// The replica the read phase reads from.
pub const READ_REPLICA: u8 = 1;
/// What each worker appends once before measuring (not a workload message).
const WARM_UP_PAYLOAD: &[u8] = b"worker warm-up";
/// A lagging replica (its commit heartbeat not yet in) is asked again after this.
const READ_RETRY_WAIT: Duration = Duration::from_millis(1);

type Reply = tokio::sync::oneshot::Sender<Result<(), String>>;
type Job = (Vec<u8>, Reply);

/// Per partition: one past the highest offset acknowledged to a worker.
type AckedEnds = Arc<Vec<AtomicU64>>;

/// Where the read phase stands.
#[derive(Debug)]
struct Reader {
    client: Client,
    partition: u32,
    offset: u64,
}

#[derive(Debug)]
pub struct Shoal {
    pub shards_per_replica_count: usize,
    pub server_binary: PathBuf,
    /// Client threads, so appends in flight at most.
    pub workers_count: usize,
    pub append_timeout: Duration,
    cluster: Option<ShoalCluster>,
    jobs: Option<Sender<Job>>,
    acked_ends: AckedEnds,
    reader: Option<Reader>,
    /// The client of the one-at-a-time phase, called on the caller's
    /// thread (`append_alone`), registered by `start`.
    alone: Option<Client>,
}

impl Shoal {
    pub fn new(
        shards_per_replica_count: usize,
        server_binary: PathBuf,
        workers_count: usize,
        append_timeout: Duration,
    ) -> Shoal {
        Shoal {
            shards_per_replica_count,
            server_binary,
            workers_count,
            append_timeout,
            cluster: None,
            jobs: None,
            acked_ends: Arc::new(Vec::new()),
            reader: None,
            alone: None,
        }
    }

    fn partitions_count(&self) -> u32 {
        u32::try_from(self.workers_count.div_ceil(CLIENTS_PER_PARTITION_MAX).max(1)).unwrap_or(u32::MAX)
    }

    /// Register the one-at-a-time phase's client with one warm-up append
    /// (as each worker does), so no measured append pays for it.
    fn start_alone(&mut self) -> Result<(), BenchError> {
        let cluster = self.cluster.as_ref().expect("started");
        let register_error =
            |message: String| BenchError::client("shoal", "register the one-at-a-time client", message);
        let mut client =
            Client::new(cluster.fresh_client_config()).map_err(|error| register_error(error.to_string()))?;
        let offset = client.append(partition(0), WARM_UP_PAYLOAD).map_err(|error| register_error(error.to_string()))?;
        self.acked_ends[0].fetch_max(offset + 1, Ordering::Relaxed);
        self.alone = Some(client);
        Ok(())
    }

    /// Start the worker threads and wait (bounded) until each has appended
    /// once: its session is registered and it knows its group's primary, so
    /// no measured append pays for a registration or a stale primary guess.
    fn start_workers(&mut self, timeout: Duration) -> Result<(), BenchError> {
        let cluster = self.cluster.as_ref().expect("started");
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let (ready_sender, ready) = channel::<Result<(), String>>();
        let partitions = self.partitions_count();
        self.acked_ends = Arc::new((0..partitions).map(|_| AtomicU64::new(0)).collect());
        for index in 0..self.workers_count {
            let config = cluster.fresh_client_config();
            let (receiver, ready_sender) = (receiver.clone(), ready_sender.clone());
            let target_index = (index % partitions as usize) as u32;
            let acked_ends = self.acked_ends.clone();
            // Detached: a worker ends when the queue closes (after its
            // current append returns or times out).
            std::thread::spawn(move || worker(config, target_index, &acked_ends, &receiver, &ready_sender));
        }
        self.jobs = Some(sender);
        let deadline = Instant::now() + timeout;
        for _ in 0..self.workers_count {
            let left = deadline.saturating_duration_since(Instant::now());
            match ready.recv_timeout(left) {
                Ok(Ok(())) => {}
                Ok(Err(message)) => return Err(BenchError::client("shoal", "register a worker", message)),
                Err(_) => {
                    return Err(BenchError::NotHealthy {
                        system: "shoal".to_owned(),
                        waited_s: timeout.as_secs(),
                        last_error: "not every client worker completed its first append".to_owned(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn worker(
    config: shoal_client::ClientConfig,
    target_index: u32,
    acked_ends: &AckedEnds,
    jobs: &Mutex<Receiver<Job>>,
    ready: &Sender<Result<(), String>>,
) {
    let target = partition(target_index);
    let acked = |offset: u64| acked_ends[target_index as usize].fetch_max(offset + 1, Ordering::Relaxed);
    let first = Client::new(config).map_err(|error| error.to_string()).and_then(|mut client| {
        acked(client.append(target, WARM_UP_PAYLOAD).map_err(|error| error.to_string())?);
        Ok(client)
    });
    let mut client = match first {
        Ok(client) => {
            let _ = ready.send(Ok(()));
            client
        }
        Err(message) => {
            let _ = ready.send(Err(message));
            return;
        }
    };
    let mut carried = None;
    loop {
        let Some(batch) = take_batch(jobs, &mut carried) else { return };
        let payloads: Vec<&[u8]> = batch.iter().map(|(payload, _)| payload.as_slice()).collect();
        let result = client.append_batch(target, &payloads).map(|reply| {
            acked(reply.first_offset + u64::from(reply.count) - 1);
        });
        let result = result.map_err(|error| error.to_string());
        for (_, reply) in batch {
            let _ = reply.send(result.clone());
        }
    }
}

/// The appends one worker sends as one request: the job carried over from
/// the last batch or the next one (waiting for it), and every job already
/// queued behind it, as many as one batch holds (a producer with no linger:
/// under load the queue fills while a batch is in flight, so many appends
/// in flight reach the cluster as a few batched requests, each one op;
/// alone, an append goes by itself). A job that would overflow the batch is
/// carried to the next. `None`: the queue closed.
///
/// A worker with a carried job must not wait for the queue's lock: another
/// worker may hold it while it blocks in `recv` on an empty queue, and when
/// no new job comes (the end of a phase, whose last appends include the
/// carried one) the carried job would never be sent. So it only tries the
/// lock, and goes alone when the lock is taken (the queue is empty then).
fn take_batch(jobs: &Mutex<Receiver<Job>>, carried: &mut Option<Job>) -> Option<Vec<Job>> {
    let (first, receiver) = match carried.take() {
        Some(job) => (job, jobs.try_lock().ok()),
        None => {
            let receiver = jobs.lock().ok()?;
            let job = receiver.recv().ok()?;
            (job, Some(receiver))
        }
    };
    let mut batch = vec![first];
    let Some(receiver) = receiver else { return Some(batch) };
    let budget_bytes = MESSAGE_SIZE_MAX_BYTES_DEFAULT as usize - HEADER_SIZE_BYTES - BATCH_HEADER_SIZE_BYTES;
    let mut size_bytes = BATCH_MESSAGE_OVERHEAD_BYTES + batch[0].0.len();
    while batch.len() < BATCH_MESSAGES_MAX {
        let Ok(next) = receiver.try_recv() else { break };
        size_bytes += BATCH_MESSAGE_OVERHEAD_BYTES + next.0.len();
        if size_bytes > budget_bytes {
            *carried = Some(next);
            break;
        }
        batch.push(next);
    }
    Some(batch)
}

impl System for Shoal {
    fn name(&self) -> String {
        let plural = if self.shards_per_replica_count == 1 { "" } else { "s" };
        format!("shoal (3 replicas, {} shard{plural} each)", self.shards_per_replica_count)
    }

    fn durability(&self) -> String {
        "fsync on a quorum before ack".to_owned()
    }

    fn install(&mut self) -> Result<String, Unavailable> {
        if self.server_binary.exists() {
            Ok(format!("shoal-server at {}", self.server_binary.display()))
        } else {
            Err(Unavailable::NotBuilt {
                reason: format!(
                    "{} is missing: run `cargo build --release -p shoal-runtime --bin shoal-server` \
                     (`cargo xtask bench peers` does)",
                    self.server_binary.display()
                ),
            })
        }
    }

    async fn start(&mut self, settings: &StartSettings) -> Result<(), BenchError> {
        let cluster = ShoalCluster::start(ShoalSettings {
            server_binary: self.server_binary.clone(),
            dir: settings.dir.clone(),
            shards_per_replica_count: self.shards_per_replica_count,
            partitions_count: self.partitions_count(),
            replica_count: REPLICA_COUNT_DEFAULT,
            message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES_DEFAULT,
            journal_slot_count: None,
            pipeline_prepares_max: None,
            checkpoint_interval_ops: None,
            scrub_bytes_per_second: None,
            start_timeout: settings.timeout,
            append_timeout: self.append_timeout,
            client_tick: None,
            keep_dir: settings.keep_dir,
        })?;
        self.cluster = Some(cluster);
        self.start_workers(settings.timeout)?;
        self.start_alone()
    }

    /// The worker threads' queue costs a message two hand-offs between
    /// threads (to a worker, and its acknowledgement back), each a wake-up
    /// that waits for a core on a busy machine: in the one-at-a-time phase
    /// (session 35, a sweep on the other core) p50 0.83 ms and p99 3.3 ms
    /// against 0.63 / 1.8 ms for the same cluster driven by one client on
    /// its own thread (`bench server`). So the phase calls a client on the
    /// caller's thread, as the peers' async clients run on the caller's
    /// runtime. It blocks that thread for the append: nothing else is in
    /// flight in that phase.
    async fn append_alone(&mut self, payload: Vec<u8>) -> Result<(), BenchError> {
        let append_error = |message: String| BenchError::client("shoal", "append", message);
        let client = self.alone.as_mut().ok_or_else(|| append_error("the cluster is not started".into()))?;
        let offset = client.append(partition(0), &payload).map_err(|error| append_error(error.to_string()))?;
        self.acked_ends[0].fetch_max(offset + 1, Ordering::Relaxed);
        Ok(())
    }

    fn version(&self) -> String {
        format!("shoal-server {} ({} partitions)", env!("CARGO_PKG_VERSION"), self.partitions_count())
    }

    fn server_pids(&self) -> Vec<u32> {
        self.cluster.as_ref().map(ShoalCluster::pids).unwrap_or_default()
    }

    fn append(&self, payload: Vec<u8>) -> impl Future<Output = Result<(), BenchError>> + Send + 'static {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queued = self.jobs.as_ref().is_some_and(|jobs| jobs.send((payload, reply)).is_ok());
        async move {
            if !queued {
                return Err(BenchError::client("shoal", "append", "the cluster is not started"));
            }
            match answer.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(BenchError::client("shoal", "append", message)),
                Err(_) => Err(BenchError::client("shoal", "append", "the client worker exited")),
            }
        }
    }

    /// Up to `count` messages after the ones already read: the rest of the
    /// current partition, then the next. Blocks the caller's thread (the
    /// client library is blocking; nothing else runs during the read phase).
    async fn read(&mut self, count: usize) -> Result<ReadBatch, BenchError> {
        let read_error = |message: String| BenchError::client("shoal", "read", message);
        if self.reader.is_none() {
            let cluster = self.cluster.as_ref().ok_or_else(|| read_error("the cluster is not started".into()))?;
            let client = Client::new(cluster.fresh_client_config()).map_err(|error| read_error(error.to_string()))?;
            self.reader = Some(Reader { client, partition: 0, offset: 0 });
        }
        let reader = self.reader.as_mut().expect("just set");
        let mut batch = ReadBatch::default();
        while batch.indices.is_empty() {
            let Some(acked_end) = self.acked_ends.get(reader.partition as usize) else {
                return Ok(batch); // every partition read: nothing follows
            };
            let acked_end = acked_end.load(Ordering::Relaxed);
            if reader.offset >= acked_end {
                (reader.partition, reader.offset) = (reader.partition + 1, 0);
                continue;
            }
            let count_max = u32::try_from(count).unwrap_or(u32::MAX).min(shoal_client::READ_MESSAGES_MAX);
            let answer = reader
                .client
                .read(partition(reader.partition), READ_REPLICA, reader.offset, count_max)
                .map_err(|error| read_error(error.to_string()))?;
            match answer {
                ReadAnswer::Messages { first_offset, messages, .. } => {
                    if first_offset != reader.offset {
                        return Err(read_error(format!("asked offset {}, answered {first_offset}", reader.offset)));
                    }
                    reader.offset += messages.len() as u64;
                    for message in messages {
                        if message == WARM_UP_PAYLOAD || message == PROBE_PAYLOAD {
                            continue;
                        }
                        let index = payload_index(&message).ok_or_else(|| read_error("a message too short".into()))?;
                        batch.indices.push(index);
                        batch.payload_bytes += message.len() as u64;
                    }
                }
                // The replica has not heard of the commit yet: ask again.
                ReadAnswer::OffsetBeyondEnd { .. } => std::thread::sleep(READ_RETRY_WAIT),
                other => return Err(read_error(format!("partition {} answered {other:?}", reader.partition))),
            }
        }
        Ok(batch)
    }

    fn stop(&mut self) {
        // Closing the queue ends the workers; dropping the cluster kills the servers.
        self.jobs = None;
        self.reader = None;
        self.alone = None;
        self.cluster = None;
    }
}
