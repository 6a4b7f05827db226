//! Three real `shoal-server` processes on loopback, driven by the real client
//! through crashes (`kill -9`) and restarts, then checked from their data
//! dirs by a checker of this test's own: every acknowledged append is in
//! every replica's partition log, at its acknowledged offset, exactly once,
//! in acknowledgement order. (Not the simulator's checkers: this one reads
//! only the files the servers left.)

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_client::{Client, ClientConfig};
use shoal_runtime::DriverChoice;
use shoal_shard::namespace::Namespace;
use shoal_shard::node::partition_dir;
use shoal_shard::partition_log::{PartitionLog, PartitionLogConfig};

use crate::support::{TempDir, with_io};

const CLUSTER: u128 = 0x5eed_c1a5;
const REPLICA_COUNT: u8 = 3;
const PARTITIONS: u32 = 4;
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long replicas get to exchange what a restarted one missed before the
/// data dirs are read; checked again (bounded) if one still lags.
const SETTLE: Duration = Duration::from_secs(3);
const SETTLE_ROUNDS_MAX: usize = 4;

struct Replica {
    data_dir: PathBuf,
    child: Option<Child>,
}

struct Cluster {
    _temp: TempDir,
    replica_addresses: Vec<SocketAddr>,
    client_addresses: Vec<SocketAddr>,
    metrics_addresses: Vec<SocketAddr>,
    replicas: Vec<Replica>,
}

/// Ports the OS says are free now (all held until every one is chosen).
fn free_addresses(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..count).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

impl Cluster {
    fn format() -> Cluster {
        let temp = TempDir::new("cluster");
        let count = usize::from(REPLICA_COUNT);
        let mut addresses = free_addresses(3 * count);
        let metrics_addresses = addresses.split_off(2 * count);
        let client_addresses = addresses.split_off(count);
        let mut replicas = Vec::new();
        for index in 0..REPLICA_COUNT {
            let data_dir = temp.path().join(format!("replica-{index}"));
            let status = Command::new(env!("CARGO_BIN_EXE_shoal-server"))
                .args(["format", "--cluster", &CLUSTER.to_string(), "--replica", &index.to_string()])
                .args(["--replica-count", &REPLICA_COUNT.to_string()])
                .arg(&data_dir)
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "format replica {index}");
            replicas.push(Replica { data_dir, child: None });
        }
        Cluster { _temp: temp, replica_addresses: addresses, client_addresses, metrics_addresses, replicas }
    }

    fn start(&mut self, index: usize) {
        assert!(self.replicas[index].child.is_none(), "replica {index} is already running");
        let list = |addresses: &[SocketAddr]| addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-server"))
            .arg("start")
            .arg("--data-dir")
            .arg(&self.replicas[index].data_dir)
            .args(["--cluster", &CLUSTER.to_string(), "--replica", &index.to_string()])
            .args(["--replica-count", &REPLICA_COUNT.to_string()])
            .args(["--replica-addresses", &list(&self.replica_addresses)])
            .args(["--client-address", &self.client_addresses[index].to_string()])
            .args(["--metrics-address", &self.metrics_addresses[index].to_string()])
            // Small journals: 128 slots of 16 KiB, 2 MiB per group.
            .args(["--message-size-max", "16384", "--journal-slot-count", "128"])
            .arg("--no-pin")
            .env("RUST_LOG", std::env::var("SHOAL_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shoal-server");
        // Keep the pipe drained (and the log visible under --nocapture).
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[replica {index}] {line}");
            }
        });
        self.replicas[index].child = Some(child);
    }

    fn start_all(&mut self) {
        for index in 0..self.replicas.len() {
            self.start(index);
        }
    }

    /// `kill -9`: no flush, no goodbye.
    fn crash(&mut self, index: usize) {
        let mut child = self.replicas[index].child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait for the clean exit.
    fn stop(&mut self, index: usize) {
        let mut child = self.replicas[index].child.take().expect("running");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "replica {index} exited with {status} after SIGTERM");
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("replica {index} did not stop within {EXIT_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop_all(&mut self) {
        for index in 0..self.replicas.len() {
            self.stop(index);
        }
    }

    fn client(&self, id: u128) -> Client {
        let mut config = ClientConfig::new(CLUSTER, id, self.client_addresses.clone());
        // 30 s: a view change after a crash, and process start-up, fit well.
        config.request_timeout_ticks = 3_000;
        Client::new(config).unwrap()
    }

    fn scrape(&self, index: usize) -> String {
        let mut stream = TcpStream::connect_timeout(&self.metrics_addresses[index], EXIT_TIMEOUT).unwrap();
        stream.set_read_timeout(Some(EXIT_TIMEOUT)).unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for replica in &mut self.replicas {
            if let Some(mut child) = replica.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Acknowledged appends per partition, in acknowledgement order.
type Acks = BTreeMap<u32, Vec<(u64, Vec<u8>)>>;

fn append_round(client: &mut Client, acks: &mut Acks, round: &str, count: usize) {
    for i in 0..count {
        let partition = (i as u32) % PARTITIONS;
        let payload = format!("{round}-{i}").into_bytes();
        let offset = client
            .append(Namespace::partition(1, 1, partition).unwrap(), &payload)
            .unwrap_or_else(|error| panic!("append {round}-{i}: {error}"));
        acks.entry(partition).or_default().push((offset, payload));
    }
}

/// Every message of one partition log in a stopped replica's data dir.
fn read_log(data_dir: &Path, partition: u32) -> Vec<(u64, Vec<u8>)> {
    let namespace = Namespace::partition(1, 1, partition).unwrap().raw();
    let dir = partition_dir(data_dir, namespace);
    let messages = std::cell::RefCell::new(Vec::new());
    with_io(DriverChoice::Auto, |io| async {
        let log = PartitionLog::open(io, &dir, PartitionLogConfig::default()).await.unwrap();
        let mut read = Vec::new();
        loop {
            let batch = log.read(read.len() as u64, 1024).await.unwrap();
            if batch.is_empty() {
                break;
            }
            read.extend(batch);
        }
        *messages.borrow_mut() = read;
    });
    messages.into_inner()
}

/// What is wrong with one replica's logs against the acks (empty: nothing).
fn check_replica(index: usize, data_dir: &Path, acks: &Acks) -> Vec<String> {
    let mut problems = Vec::new();
    for (partition, acked) in acks {
        let log = read_log(data_dir, *partition);
        for window in acked.windows(2) {
            if window[0].0 >= window[1].0 {
                problems.push(format!("partition {partition}: acks out of order: {:?}", (window[0].0, window[1].0)));
            }
        }
        for (offset, payload) in acked {
            match log.get(*offset as usize) {
                Some((at, message)) if *at == *offset && message == payload => {}
                other => problems.push(format!(
                    "replica {index} partition {partition}: acked offset {offset} holds {:?}, not {:?}",
                    other.map(|(at, m)| (at, String::from_utf8_lossy(m).into_owned())),
                    String::from_utf8_lossy(payload)
                )),
            }
            let copies = log.iter().filter(|(_, message)| message == payload).count();
            if copies > 1 {
                problems.push(format!("replica {index} partition {partition}: {copies} copies of one append"));
            }
        }
    }
    problems
}

#[test]
fn three_replicas_keep_every_acknowledged_append_through_crashes_and_restarts() {
    let mut cluster = Cluster::format();
    cluster.start_all();
    let mut admin = cluster.client(1);
    admin.create_stream(1, "orders").unwrap();
    admin.create_topic(1, 1, "events", PARTITIONS).unwrap();

    let mut client = cluster.client(2);
    let mut acks = Acks::new();
    append_round(&mut client, &mut acks, "healthy", 16);
    let metrics = cluster.scrape(0);
    assert!(metrics.contains("shoal_commits_total"), "{metrics}");

    cluster.crash(2); // a backup of view 0
    append_round(&mut client, &mut acks, "backup-down", 16);
    cluster.start(2);
    cluster.crash(0); // the primary of view 0: a view change follows
    append_round(&mut client, &mut acks, "primary-down", 16);
    cluster.start(0);
    append_round(&mut client, &mut acks, "all-back", 16);

    cluster.stop_all();
    cluster.start_all();
    append_round(&mut client, &mut acks, "after-full-restart", 8);

    for round in 0..SETTLE_ROUNDS_MAX {
        std::thread::sleep(SETTLE);
        cluster.stop_all();
        let problems: Vec<String> = (0..usize::from(REPLICA_COUNT))
            .flat_map(|index| check_replica(index, &cluster.replicas[index].data_dir, &acks))
            .collect();
        if problems.is_empty() {
            return;
        }
        assert!(round + 1 < SETTLE_ROUNDS_MAX, "after {SETTLE_ROUNDS_MAX} rounds:\n{}", problems.join("\n"));
        cluster.start_all();
    }
}
