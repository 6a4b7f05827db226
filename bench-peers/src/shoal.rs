//! shoal's rows in the peer table: 3 `shoal-server` replicas
//! (`shoal_cluster`), appends through the blocking client library.
//!
//! The client allows one request in flight per session, so "N in flight" is
//! N worker threads, each with its own client (session), taking appends from
//! one queue; the workload's futures wait on a oneshot each. Workers spread
//! over `ceil(N / CLIENTS_PER_PARTITION_MAX)` partitions of one topic, since
//! one partition group's session table holds only so many clients: shoal's
//! rows are therefore appends to several partition logs, the peers' to one
//! stream or key range. Reads: there is no read-by-offset wire command yet,
//! so shoal's read row is "n/a".

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_client::Client;

use crate::error::{BenchError, Unavailable};
use crate::shoal_cluster::{
    CLIENTS_PER_PARTITION_MAX, MESSAGE_SIZE_MAX_BYTES_DEFAULT, ShoalCluster, ShoalSettings, partition,
};
use crate::system::{ReadBatch, StartSettings, System};

pub const READS_UNAVAILABLE: &str = "no read-by-offset wire command yet (the client library cannot read)";

type Reply = tokio::sync::oneshot::Sender<Result<(), String>>;
type Job = (Vec<u8>, Reply);

#[derive(Debug)]
pub struct Shoal {
    pub shards_per_replica_count: usize,
    pub server_binary: PathBuf,
    /// Client threads, so appends in flight at most.
    pub workers_count: usize,
    pub append_timeout: Duration,
    cluster: Option<ShoalCluster>,
    jobs: Option<Sender<Job>>,
}

impl Shoal {
    pub fn new(
        shards_per_replica_count: usize,
        server_binary: PathBuf,
        workers_count: usize,
        append_timeout: Duration,
    ) -> Shoal {
        Shoal { shards_per_replica_count, server_binary, workers_count, append_timeout, cluster: None, jobs: None }
    }

    fn partitions_count(&self) -> u32 {
        u32::try_from(self.workers_count.div_ceil(CLIENTS_PER_PARTITION_MAX).max(1)).unwrap_or(u32::MAX)
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
        for index in 0..self.workers_count {
            let config = cluster.fresh_client_config();
            let (receiver, ready_sender) = (receiver.clone(), ready_sender.clone());
            let target = partition((index % partitions as usize) as u32);
            // Detached: a worker ends when the queue closes (after its
            // current append returns or times out).
            std::thread::spawn(move || worker(config, target, &receiver, &ready_sender));
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
    target: shoal_shard::namespace::Namespace,
    jobs: &Mutex<Receiver<Job>>,
    ready: &Sender<Result<(), String>>,
) {
    let first = Client::new(config).map_err(|error| error.to_string()).and_then(|mut client| {
        client.append(target, b"worker warm-up").map_err(|error| error.to_string())?;
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
    loop {
        let job = jobs.lock().map(|receiver| receiver.recv());
        let Ok(Ok((payload, reply))) = job else { return };
        let result = client.append(target, &payload).map(|_| ()).map_err(|error| error.to_string());
        let _ = reply.send(result);
    }
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
            message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES_DEFAULT,
            start_timeout: settings.timeout,
            append_timeout: self.append_timeout,
            client_tick: None,
            keep_dir: settings.keep_dir,
        })?;
        self.cluster = Some(cluster);
        self.start_workers(settings.timeout)
    }

    fn version(&self) -> String {
        format!("shoal-server {} ({} partitions)", env!("CARGO_PKG_VERSION"), self.partitions_count())
    }

    fn server_pids(&self) -> Vec<u32> {
        self.cluster.as_ref().map(ShoalCluster::pids).unwrap_or_default()
    }

    fn supports_reads(&self) -> Result<(), String> {
        Err(READS_UNAVAILABLE.to_owned())
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

    async fn read(&mut self, _count: usize) -> Result<ReadBatch, BenchError> {
        Err(BenchError::client("shoal", "read", READS_UNAVAILABLE))
    }

    fn stop(&mut self) {
        // Closing the queue ends the workers; dropping the cluster kills the servers.
        self.jobs = None;
        self.cluster = None;
    }
}
